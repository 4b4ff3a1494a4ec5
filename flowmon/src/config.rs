//! Settings: every flag is also a key of the config file (`--config`, TOML, the flag's name
//! without the dashes, e.g. `tcp-timeout = 300`). A flag given on the command line wins over the
//! file; what neither sets takes the default named in its help. Documented in
//! `docs/configuration.md`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

use crate::datapath::XdpModeChoice;

#[derive(Debug, Parser)]
#[command(name = "flowmon", version, about)]
pub struct Cli {
    /// TOML file with any of the settings below; flags override it.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Feed a Tanner/T-Pot event log (JSON lines) through validation, sessions, detection and
    /// the analyzer, on the logged times.
    Replay {
        /// The event log.
        file: PathBuf,
    },
}

/// Every setting, optional so that the file and the flags can be merged; the accessors apply
/// the defaults.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Interface to monitor (XDP on ingress, TC on egress); repeat for several. Without one,
    /// flowmon only serves SNARE sensors.
    #[arg(long = "iface", value_name = "IF")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iface: Vec<String>,
    /// XDP attach mode: auto (native, else generic), native or generic. [default: auto]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp_mode: Option<XdpModeChoice>,
    /// Capacity of the kernel flow map. [default: 262144]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_flows: Option<u32>,
    /// JSON-lines file that receives every flow record.
    #[arg(long, value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_log: Option<PathBuf>,
    /// Name of this sensor in records. [default: the host name]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensor_id: Option<String>,
    /// Seconds between two reads of the flow map. [default: 1]
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<f64>,
    /// Idle timeout of an established TCP flow, seconds. [default: 300]
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_timeout: Option<f64>,
    /// Seconds a TCP flow is kept after FIN from both sides or an RST. [default: 5]
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_close_timeout: Option<f64>,
    /// Idle timeout of a UDP flow, seconds. [default: 60]
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_timeout: Option<f64>,
    /// Idle timeout of an ICMP/ICMPv6 flow, seconds. [default: 30]
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_timeout: Option<f64>,
    /// Idle timeout of any other protocol's flow, seconds. [default: 60]
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_timeout: Option<f64>,
    /// Seconds between interim records of a flow that is still alive. [default: 60]
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interim_interval: Option<f64>,
    /// Directory for pinned-state bookkeeping and the Redis spool. [default: /var/lib/flowmon]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// bpffs directory where the flow map and programs are pinned. [default: /sys/fs/bpf/flowmon]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_dir: Option<PathBuf>,
    /// Leave the programs attached (and pinned) at shutdown, for a restart without a gap.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_attached: bool,
    /// Redis (or Redis Cluster) URL; `rediss://` and passwords accepted. [default:
    /// redis://127.0.0.1:6379]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// Treat --redis-url as a Redis Cluster seed node.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redis_cluster: bool,
    /// Do not write to Redis at all.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_redis: bool,
    /// Approximate MAXLEN of the `flowmon:flows` stream. [default: 1000000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_stream_maxlen: Option<u64>,
    /// Seconds a peer's `flowmon:peer:<ip>` index lives after its last flow. [default: 86400]
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_index_retention: Option<f64>,
    /// Largest on-disk spool for Redis writes while Redis is away, bytes. [default: 1 GiB]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_max_bytes: Option<u64>,
    /// Prometheus metrics endpoint. [default: 127.0.0.1:9108]
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// Where SNARE sensors send their events (Tanner's protocol). [default: 0.0.0.0:8090]
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snare_listen: Option<String>,
    /// Most SNARE connections served at once; more wait in the listen backlog until one
    /// closes. [default: 1024]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snare_max_connections: Option<usize>,
    /// Largest accepted event body, bytes; larger ones get 413. [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_event_bytes: Option<usize>,
    /// Seconds after its last request that a session ends. [default: 75]
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_timeout: Option<f64>,
    /// Most sessions kept live; beyond it the least recently active ends early. [default: 100000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<usize>,
    /// JSON-lines file that receives every SNARE event (Tanner's event log format).
    #[arg(long, value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_log: Option<PathBuf>,
    /// Tanner's read API. [default: 127.0.0.1:8092]
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_listen: Option<String>,
    /// Bearer token the read API requires; none when unset.
    #[arg(long, value_name = "TOKEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_token: Option<String>,
    /// MaxMind-format city database for session locations.
    #[arg(long, value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geoip_db: Option<PathBuf>,
    /// Seconds an analysed session is kept in Redis; forever when unset.
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_retention: Option<f64>,
}

impl Settings {
    /// Reads `path` (if any) and lays `self` (the flags) over it.
    pub fn merged_with_file(self, path: Option<&std::path::Path>) -> Result<Settings> {
        let Some(path) = path else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let file: toml::Value = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        let mut merged = serde_json::to_value(file)?;
        let flags = serde_json::to_value(&self)?;
        if let (Some(merged), serde_json::Value::Object(flags)) = (merged.as_object_mut(), flags) {
            merged.extend(flags);
        }
        serde_json::from_value(merged)
            .with_context(|| format!("invalid setting in config file {}", path.display()))
    }

    pub fn xdp_mode(&self) -> XdpModeChoice {
        self.xdp_mode.unwrap_or_default()
    }

    pub fn max_flows(&self) -> u32 {
        self.max_flows.unwrap_or(flowmon_common::DEFAULT_MAX_FLOWS)
    }

    pub fn sensor_id(&self) -> String {
        self.sensor_id.clone().unwrap_or_else(host_name)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/flowmon"))
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.pin_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf/flowmon"))
    }

    pub fn metrics_listen(&self) -> Result<SocketAddr> {
        let addr = self.metrics_listen.as_deref().unwrap_or("127.0.0.1:9108");
        socket_addr("metrics-listen", addr)
    }

    pub fn poll_interval(&self) -> Result<Duration> {
        seconds("poll-interval", self.poll_interval, 1.0)
    }

    pub fn snare_listen(&self) -> Result<SocketAddr> {
        socket_addr(
            "snare-listen",
            self.snare_listen.as_deref().unwrap_or("0.0.0.0:8090"),
        )
    }

    pub fn snare_max_connections(&self) -> Result<usize> {
        match self.snare_max_connections.unwrap_or(1024) {
            0 => bail!("--snare-max-connections must be at least 1"),
            connections => Ok(connections),
        }
    }

    pub fn max_event_bytes(&self) -> Result<usize> {
        match self.max_event_bytes.unwrap_or(1 << 20) {
            0 => bail!("--max-event-bytes must be at least 1"),
            bytes => Ok(bytes),
        }
    }

    pub fn session_timeout(&self) -> Result<Duration> {
        seconds("session-timeout", self.session_timeout, 75.0)
    }

    pub fn max_sessions(&self) -> Result<usize> {
        match self.max_sessions.unwrap_or(100_000) {
            0 => bail!("--max-sessions must be at least 1"),
            sessions => Ok(sessions),
        }
    }

    pub fn api_listen(&self) -> Result<SocketAddr> {
        socket_addr(
            "api-listen",
            self.api_listen.as_deref().unwrap_or("127.0.0.1:8092"),
        )
    }

    /// `None`: analysed sessions are kept forever.
    pub fn session_retention(&self) -> Result<Option<Duration>> {
        self.session_retention
            .map(|secs| seconds("session-retention", Some(secs), secs))
            .transpose()
    }

    pub fn timeouts(&self) -> Result<crate::flow::tracker::Timeouts> {
        let ns = |name, value, default| -> Result<u64> {
            Ok(seconds(name, value, default)?.as_nanos() as u64)
        };
        Ok(crate::flow::tracker::Timeouts {
            tcp: ns("tcp-timeout", self.tcp_timeout, 300.0)?,
            tcp_close: ns("tcp-close-timeout", self.tcp_close_timeout, 5.0)?,
            udp: ns("udp-timeout", self.udp_timeout, 60.0)?,
            icmp: ns("icmp-timeout", self.icmp_timeout, 30.0)?,
            other: ns("other-timeout", self.other_timeout, 60.0)?,
            interim: ns("interim-interval", self.interim_interval, 60.0)?,
        })
    }

    pub fn redis_url(&self) -> &str {
        self.redis_url
            .as_deref()
            .unwrap_or("redis://127.0.0.1:6379")
    }

    pub fn flow_stream_maxlen(&self) -> u64 {
        self.flow_stream_maxlen.unwrap_or(1_000_000)
    }

    pub fn peer_index_retention(&self) -> Result<Duration> {
        seconds("peer-index-retention", self.peer_index_retention, 86_400.0)
    }

    pub fn spool_max_bytes(&self) -> u64 {
        self.spool_max_bytes.unwrap_or(1 << 30)
    }
}

/// A positive number of seconds, fractions allowed.
fn seconds(name: &str, value: Option<f64>, default: f64) -> Result<Duration> {
    let value = value.unwrap_or(default);
    if !(value.is_finite() && value > 0.0) {
        bail!("--{name} must be a positive number of seconds, not {value}");
    }
    Ok(Duration::from_secs_f64(value))
}

pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return "flowmon".into();
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// Parses a listen address flag.
pub fn socket_addr(name: &str, value: &str) -> Result<SocketAddr> {
    value
        .parse()
        .with_context(|| format!("--{name}: {value:?} is not an address:port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let dir = std::env::temp_dir().join(format!("flowmon-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flowmon.toml");
        std::fs::write(
            &path,
            "iface = [\"eth1\"]\ntcp-timeout = 120\nudp-timeout = 0.5\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from(["flowmon", "--udp-timeout", "7"]).unwrap();
        let settings = cli.settings.merged_with_file(Some(&path)).unwrap();
        assert_eq!(settings.iface, ["eth1"]);
        let timeouts = settings.timeouts().unwrap();
        assert_eq!(timeouts.tcp, 120_000_000_000);
        assert_eq!(timeouts.udp, 7_000_000_000);
        assert_eq!(timeouts.icmp, 30_000_000_000);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_settings_are_refused_with_their_name() {
        let cli = Cli::try_parse_from(["flowmon", "--tcp-timeout", "0"]).unwrap();
        let err = cli.settings.timeouts().unwrap_err().to_string();
        assert!(err.contains("--tcp-timeout"), "{err}");
        let dir = std::env::temp_dir().join(format!("flowmon-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flowmon.toml");
        std::fs::write(&path, "tcp-timout = 3\n").unwrap();
        let err = Settings::default()
            .merged_with_file(Some(&path))
            .unwrap_err();
        assert!(format!("{err:#}").contains("tcp-timout"), "{err:#}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
