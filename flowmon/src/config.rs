//! Settings: every flag is also a key of the config file (`--config`, TOML, the flag's name
//! without the dashes, e.g. `tcp-timeout = 300`). A flag given on the command line wins over
//! the file; what neither sets takes its default, a named constant of the module it configures
//! that the help text shows too. Flags may come before or after a subcommand.
//!
//! [`Settings::validate`] checks every setting once, at start, before anything else happens,
//! and makes the typed configuration of each part ([`Config`]); no other module sees
//! [`Settings`]. Documented in `docs/configuration.md`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{
    analyzer::{AnalyzerConfig, GeoIp},
    api::{self, ApiConfig},
    console::{self, ConsoleConfig},
    datapath::{self, DatapathConfig, IngressHookChoice, XdpModeChoice},
    emulation::{self, EmulationConfig, Profile, RfiFetchConfig},
    flow::{
        monitor::{self, MonitorConfig},
        tracker::{DEFAULT_TIMEOUTS, Timeouts},
    },
    metrics,
    sinks::{
        SinksConfig,
        ipfix::{self, IpfixConfig, IpfixConfigError},
        redis::{self as redis_sink, FlowWrites},
    },
    snare::{self, SessionLimits, SnareConfig, session},
    store::{self, RedisTarget, StoreConfig, local_redis::LocalRedisConfig},
};

#[derive(Debug, Parser)]
#[command(
    name = "flowmon",
    version,
    about,
    after_help = "Every setting may also be given in the --config file, and before or after \
                  a subcommand (`flowmon replay FILE --redis-url URL`)."
)]
pub struct Cli {
    /// TOML file with any of the settings below; flags override it.
    #[arg(long, global = true, value_name = "PATH")]
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

impl Cli {
    /// The command line of this process; exits with clap's message when it does not parse.
    pub fn from_command_line() -> Self {
        Self::try_parse_args(std::env::args_os()).unwrap_or_else(|err| err.exit())
    }

    /// Parses `args`: once as the help shows them, which checks them, and once without the
    /// defaults, so that only what the command line gave overrides the config file.
    pub fn try_parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        Self::command().try_get_matches_from(&args)?;
        let given = Self::command()
            .mut_args(|arg| {
                if arg.get_action().takes_values() {
                    arg.default_value(None)
                } else {
                    arg
                }
            })
            .try_get_matches_from(&args)?;
        Self::from_arg_matches(&given)
    }

    /// The settings of the command line laid over those of `--config`, validated.
    pub fn config(&self) -> Result<Config> {
        self.settings
            .clone()
            .merged_with_file(self.config.as_deref())?
            .validate()
            .map_err(Into::into)
    }
}

/// Every setting, optional so that the file and the flags can be merged; [`Settings::validate`]
/// applies the defaults.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Interface to monitor (XDP or TC on ingress, TC on egress); repeat for several. Without
    /// one, flowmon only serves SNARE sensors.
    #[arg(long = "iface", value_name = "IF", global = true)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iface: Vec<String>,
    /// Hook that counts what an interface receives: auto (native XDP where the driver runs it on
    /// its own receive buffers, TC ingress elsewhere: veth, drivers without native XDP), xdp or
    /// tc.
    #[arg(long, value_enum, global = true,
          default_value = shown_choice(IngressHookChoice::default()))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_hook: Option<IngressHookChoice>,
    /// XDP attach mode with --ingress-hook xdp: auto (native, else generic), native or generic;
    /// native or generic alone implies --ingress-hook xdp.
    #[arg(long, value_enum, global = true, default_value = shown_choice(XdpModeChoice::default()))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp_mode: Option<XdpModeChoice>,
    /// Capacity of the kernel flow map.
    #[arg(long, global = true, default_value = shown(flowmon_common::DEFAULT_MAX_FLOWS))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_flows: Option<u32>,
    /// JSON-lines file that receives every flow record.
    #[arg(long, value_name = "PATH", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_log: Option<PathBuf>,
    /// Name of this sensor in records. [default: the host name]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensor_id: Option<String>,
    /// Seconds between polls: the kernel's events, a slice of the flow map, the flows whose
    /// deadline came; a record comes at most this (and the poll) after it is due.
    #[arg(long, value_name = "SECONDS", global = true,
          default_value = shown(monitor::DEFAULT_POLL_INTERVAL.as_secs_f64()))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<f64>,
    /// Idle timeout of an established TCP flow, seconds.
    #[arg(long, value_name = "SECONDS", global = true,
          default_value = shown(DEFAULT_TIMEOUTS.tcp.as_secs_f64()))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_timeout: Option<f64>,
    /// Seconds a TCP flow is kept after FIN from both sides or an RST.
    #[arg(long, value_name = "SECONDS", global = true,
          default_value = shown(DEFAULT_TIMEOUTS.tcp_close.as_secs_f64()))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_close_timeout: Option<f64>,
    /// Idle timeout of a UDP flow, seconds.
    #[arg(long, value_name = "SECONDS", global = true,
          default_value = shown(DEFAULT_TIMEOUTS.udp.as_secs_f64()))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_timeout: Option<f64>,
    /// Idle timeout of an ICMP/ICMPv6 flow, seconds.
    #[arg(long, value_name = "SECONDS", global = true,
          default_value = shown(DEFAULT_TIMEOUTS.icmp.as_secs_f64()))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_timeout: Option<f64>,
    /// Idle timeout of any other protocol's flow, seconds.
    #[arg(long, value_name = "SECONDS", global = true,
          default_value = shown(DEFAULT_TIMEOUTS.other.as_secs_f64()))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_timeout: Option<f64>,
    /// Seconds between interim records of a flow that is still alive and sends something.
    #[arg(long, value_name = "SECONDS", global = true,
          default_value = shown(DEFAULT_TIMEOUTS.interim.as_secs_f64()))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interim_interval: Option<f64>,
    /// Directory for the agent's bookkeeping and the Redis spool.
    #[arg(long, value_name = "DIR", global = true, default_value = DEFAULT_STATE_DIR)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// bpffs directory where the flow map and programs are pinned.
    #[arg(long, value_name = "DIR", global = true, default_value = datapath::DEFAULT_PIN_DIR)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_dir: Option<PathBuf>,
    /// Leave the programs attached (and pinned) at shutdown, for a restart without a gap.
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_attached: bool,
    /// Redis (or Redis Cluster) URL; `rediss://` and passwords accepted.
    #[arg(long, value_name = "URL", global = true, default_value = store::DEFAULT_REDIS_URL)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// Treat --redis-url as a Redis Cluster seed node.
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redis_cluster: bool,
    /// Do not write to Redis at all.
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_redis: bool,
    /// Approximate MAXLEN of the `flowmon:flows` stream.
    #[arg(long, value_name = "N", global = true,
          default_value = shown(redis_sink::DEFAULT_FLOW_STREAM_MAXLEN))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_stream_maxlen: Option<u64>,
    /// Seconds a peer's `flowmon:peer:<ip>` index lives after its last flow.
    #[arg(long, value_name = "SECONDS", global = true,
          default_value = shown(redis_sink::DEFAULT_PEER_INDEX_RETENTION.as_secs_f64()))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_index_retention: Option<f64>,
    /// Largest on-disk spool for Redis writes while Redis is away, bytes.
    #[arg(long, value_name = "BYTES", global = true,
          default_value = shown(store::DEFAULT_SPOOL_MAX_BYTES))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_max_bytes: Option<u64>,
    /// IPFIX collector that receives every flow record: udp://host[:port] or
    /// tcp://host[:port], port 4739 when none is given; repeat for several.
    #[arg(long = "ipfix", value_name = "URL", global = true)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipfix: Vec<String>,
    /// Observation domain id of the IPFIX messages.
    #[arg(long, value_name = "ID", global = true,
          default_value = shown(ipfix::config::DEFAULT_OBSERVATION_DOMAIN))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipfix_domain: Option<u32>,
    /// Seconds between two sends of the IPFIX templates over UDP.
    #[arg(long, value_name = "SECONDS", global = true,
          default_value = shown(ipfix::config::DEFAULT_TEMPLATE_REFRESH.as_secs_f64()))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipfix_template_refresh: Option<f64>,
    /// Largest IPFIX message over UDP, bytes [default: what a datagram carries on the route to
    /// each collector, its MTU less the IP and UDP headers]. Lower it behind a tunnel.
    #[arg(long, value_name = "BYTES", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipfix_message_size: Option<usize>,
    /// Private enterprise number of flowmon's own IPFIX elements (docs/ipfix.md).
    #[arg(long, value_name = "PEN", global = true,
          default_value = shown(ipfix::config::DEFAULT_ENTERPRISE_NUMBER))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipfix_enterprise_number: Option<u32>,
    /// Bytes of encoded records each IPFIX collector may hold back while it is away or slow;
    /// beyond, records are dropped and counted.
    #[arg(long, value_name = "BYTES", global = true,
          default_value = shown(ipfix::config::DEFAULT_QUEUE_BYTES))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipfix_queue_bytes: Option<usize>,
    /// Prometheus metrics endpoint.
    #[arg(long, value_name = "ADDR:PORT", global = true, default_value = metrics::DEFAULT_LISTEN)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// Where SNARE sensors send their events (Tanner's protocol).
    #[arg(long, value_name = "ADDR:PORT", global = true, default_value = snare::DEFAULT_LISTEN)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snare_listen: Option<String>,
    /// Most SNARE connections open at once; beyond, the least recently active one is closed
    /// to make room for a new one.
    #[arg(long, value_name = "N", global = true,
          default_value = shown(snare::DEFAULT_MAX_CONNECTIONS))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snare_max_connections: Option<usize>,
    /// Seconds a SNARE request may take from its first byte to its answer; a slower one's
    /// connection is closed.
    #[arg(long, value_name = "SECONDS", global = true,
          default_value = shown(snare::DEFAULT_REQUEST_TIMEOUT.as_secs_f64()))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snare_request_timeout: Option<f64>,
    /// Largest accepted event body, bytes; larger ones get 413.
    #[arg(long, value_name = "BYTES", global = true,
          default_value = shown(snare::DEFAULT_MAX_EVENT_BYTES))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_event_bytes: Option<usize>,
    /// Seconds after its last request that a session ends.
    #[arg(long, value_name = "SECONDS", global = true,
          default_value = shown(session::DEFAULT_TIMEOUT.as_secs_f64()))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_timeout: Option<f64>,
    /// Most sessions kept live; beyond it the least recently active ends early.
    #[arg(long, value_name = "N", global = true, default_value = shown(session::DEFAULT_MAX_SESSIONS))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<usize>,
    /// JSON-lines file that receives every SNARE event (Tanner's event log format).
    #[arg(long, value_name = "PATH", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_log: Option<PathBuf>,
    /// Tanner's read API.
    #[arg(long, value_name = "ADDR:PORT", global = true, default_value = api::DEFAULT_LISTEN)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_listen: Option<String>,
    /// Bearer token the read API requires; none when unset.
    #[arg(long, value_name = "TOKEN", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_token: Option<String>,
    /// MaxMind-format city database for session locations.
    #[arg(long, value_name = "PATH", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geoip_db: Option<PathBuf>,
    /// Seconds an analysed session is kept in Redis; forever when unset.
    #[arg(long, value_name = "SECONDS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_retention: Option<f64>,
    /// Attack types answered with an emulated result (the others as Tanner's type 1): all,
    /// none, or a comma-separated list of sqli, rfi, lfi, xss, php_code_injection,
    /// php_object_injection, cmd_exec, crlf, xxe_injection, template_injection.
    #[arg(long, value_name = "TYPES", global = true, default_value = emulation::DEFAULT_EMULATE)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emulate: Option<String>,
    /// TOML file describing the simulated host the emulators answer from; a built-in Debian
    /// web server when unset.
    #[arg(long, value_name = "PATH", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emulation_profile: Option<PathBuf>,
    /// Fetch the files RFI attacks name (public addresses only, 5 s and 1 MiB at most) into
    /// <state-dir>/samples and evaluate their PHP; off, they are only recorded.
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rfi_fetch: bool,
    /// The web console (asks for --api-token when one is set).
    #[arg(long, value_name = "ADDR:PORT", global = true, default_value = console::DEFAULT_WEB_LISTEN)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_listen: Option<String>,
    /// Do not serve the web console.
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_console: bool,
    /// Never start a redis-server of flowmon's own (by default one is started, with its data
    /// in --state-dir, when --redis-url is the default and nothing answers there).
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_local_redis: bool,
}

/// The ingress hook: an XDP mode other than auto asks for XDP, and cannot go with another hook.
fn ingress_hook(
    hook: Option<IngressHookChoice>,
    xdp_mode: Option<XdpModeChoice>,
) -> Result<IngressHookChoice, InvalidSetting> {
    match (hook, xdp_mode.unwrap_or_default()) {
        (None, XdpModeChoice::Auto) => Ok(IngressHookChoice::Auto),
        (None, _) => Ok(IngressHookChoice::Xdp),
        (Some(hook), XdpModeChoice::Auto) => Ok(hook),
        (Some(IngressHookChoice::Xdp), _) => Ok(IngressHookChoice::Xdp),
        (Some(hook), mode) => Err(invalid(
            "xdp-mode",
            format!(
                "{} applies to ingress-hook xdp, not {}",
                shown_choice(mode),
                shown_choice(hook)
            ),
        )),
    }
}

/// A default as the help text shows it.
fn shown(default: impl std::fmt::Display) -> String {
    default.to_string()
}

/// A choice's default as the help text shows it.
fn shown_choice(default: impl ValueEnum) -> String {
    default
        .to_possible_value()
        .map(|value| value.get_name().to_owned())
        .unwrap_or_default()
}

/// Where the agent keeps its bookkeeping and the Redis spool.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/flowmon";

/// Flows held in memory for the session analyzer's join at most (a record's worth each).
const MAX_PEER_FLOWS: usize = 1_000_000;

/// A setting that cannot be used, named as in the config file (the flag without its dashes).
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid setting {name}: {reason}")]
pub struct InvalidSetting {
    pub name: &'static str,
    pub reason: String,
}

fn invalid(name: &'static str, reason: impl Into<String>) -> InvalidSetting {
    InvalidSetting {
        name,
        reason: reason.into(),
    }
}

/// Flow monitoring: the kernel half and the monitor that reads it.
#[derive(Clone, Debug)]
pub struct FlowsConfig {
    pub datapath: DatapathConfig,
    pub monitor: MonitorConfig,
}

/// The configuration of every part, checked.
#[derive(Debug)]
pub struct Config {
    pub sensor_id: String,
    /// `None` without `--iface`.
    pub flows: Option<FlowsConfig>,
    /// `None` with `--no-redis`.
    pub store: Option<StoreConfig>,
    pub snare: SnareConfig,
    pub analyzer: AnalyzerConfig,
    /// `None` with `--no-redis`: the API reads Redis.
    pub api: Option<ApiConfig>,
    pub metrics_listen: SocketAddr,
    /// `None` with `--no-console`.
    pub console: Option<ConsoleConfig>,
    /// The redis-server flowmon starts when nothing answers at the default URL; `None` when
    /// the URL is another, with `--no-redis` or `--no-local-redis`.
    pub local_redis: Option<LocalRedisConfig>,
    /// How long this host keeps each peer's flows for the analyzer's join.
    pub peer_flows_retention: Duration,
    pub max_peer_flows: usize,
}

impl Settings {
    /// Reads `path` (if any) and lays `self` (the flags) over it.
    pub fn merged_with_file(self, path: Option<&Path>) -> Result<Settings> {
        let Some(path) = path else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut merged: toml::Table = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        // As TOML, which keeps what JSON could not (NaN, infinities), for validation to see.
        merged.extend(toml::Table::try_from(&self)?);
        Settings::deserialize(merged)
            .with_context(|| format!("invalid setting in config file {}", path.display()))
    }

    /// Checks every setting and makes the configuration of each part; nothing is opened,
    /// connected, bound or pinned yet, except that the GeoIP database is read.
    pub fn validate(self) -> Result<Config, InvalidSetting> {
        let sensor_id = match self.sensor_id {
            Some(id) if id.trim().is_empty() => return Err(invalid("sensor-id", "is empty")),
            Some(id) => id,
            None => host_name(),
        };
        let state_dir = self
            .state_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let timeouts = Timeouts {
            tcp: seconds("tcp-timeout", self.tcp_timeout, DEFAULT_TIMEOUTS.tcp)?,
            tcp_close: seconds(
                "tcp-close-timeout",
                self.tcp_close_timeout,
                DEFAULT_TIMEOUTS.tcp_close,
            )?,
            udp: seconds("udp-timeout", self.udp_timeout, DEFAULT_TIMEOUTS.udp)?,
            icmp: seconds("icmp-timeout", self.icmp_timeout, DEFAULT_TIMEOUTS.icmp)?,
            other: seconds("other-timeout", self.other_timeout, DEFAULT_TIMEOUTS.other)?,
            interim: seconds(
                "interim-interval",
                self.interim_interval,
                DEFAULT_TIMEOUTS.interim,
            )?,
        };
        let poll_interval = seconds(
            "poll-interval",
            self.poll_interval,
            monitor::DEFAULT_POLL_INTERVAL,
        )?;
        let max_flows = at_least_one(
            "max-flows",
            self.max_flows.unwrap_or(flowmon_common::DEFAULT_MAX_FLOWS),
        )?;
        let pin_dir = self
            .pin_dir
            .unwrap_or_else(|| PathBuf::from(datapath::DEFAULT_PIN_DIR));
        let default_redis = self
            .redis_url
            .as_deref()
            .is_none_or(|url| url == store::DEFAULT_REDIS_URL);
        let redis = if self.no_redis {
            None
        } else {
            let url = self
                .redis_url
                .unwrap_or_else(|| store::DEFAULT_REDIS_URL.to_owned());
            Some(
                RedisTarget::new(url, self.redis_cluster)
                    .map_err(|err| invalid("redis-url", err.to_string()))?,
            )
        };
        let flow_writes = FlowWrites {
            maxlen: at_least_one(
                "flow-stream-maxlen",
                self.flow_stream_maxlen
                    .unwrap_or(redis_sink::DEFAULT_FLOW_STREAM_MAXLEN),
            )?,
            retention: seconds(
                "peer-index-retention",
                self.peer_index_retention,
                redis_sink::DEFAULT_PEER_INDEX_RETENTION,
            )?,
        };
        let ipfix = if self.ipfix.is_empty() {
            None
        } else {
            let collectors = self
                .ipfix
                .iter()
                .map(|url| {
                    url.parse()
                        .map_err(|err| invalid("ipfix", format!("{err}")))
                })
                .collect::<Result<_, _>>()?;
            let config = IpfixConfig {
                collectors,
                observation_domain: self
                    .ipfix_domain
                    .unwrap_or(ipfix::config::DEFAULT_OBSERVATION_DOMAIN),
                template_refresh: seconds(
                    "ipfix-template-refresh",
                    self.ipfix_template_refresh,
                    ipfix::config::DEFAULT_TEMPLATE_REFRESH,
                )?,
                udp_message_size: self.ipfix_message_size,
                enterprise_number: at_least_one(
                    "ipfix-enterprise-number",
                    self.ipfix_enterprise_number
                        .unwrap_or(ipfix::config::DEFAULT_ENTERPRISE_NUMBER),
                )?,
                queue_bytes: self
                    .ipfix_queue_bytes
                    .unwrap_or(ipfix::config::DEFAULT_QUEUE_BYTES),
                ..IpfixConfig::new(Vec::new(), sensor_id.clone())
            };
            config.check().map_err(|err| {
                let name = match err {
                    IpfixConfigError::SensorIdTooLong { .. } => "sensor-id",
                    IpfixConfigError::MessageSize { .. } => "ipfix-message-size",
                    IpfixConfigError::QueueBytes { .. } => "ipfix-queue-bytes",
                };
                invalid(name, err.to_string())
            })?;
            Some(config)
        };
        let flows = if self.iface.is_empty() {
            None
        } else {
            for iface in &self.iface {
                datapath::ifindex(iface).map_err(|err| invalid("iface", err.to_string()))?;
            }
            Some(FlowsConfig {
                datapath: DatapathConfig {
                    ifaces: self.iface,
                    ingress_hook: ingress_hook(self.ingress_hook, self.xdp_mode)?,
                    xdp_mode: self.xdp_mode.unwrap_or_default(),
                    max_flows,
                    pin_dir,
                },
                monitor: MonitorConfig {
                    timeouts,
                    sensor_id: sensor_id.clone(),
                    state_dir: state_dir.clone(),
                    poll_interval,
                    keep_attached: self.keep_attached,
                    sinks: SinksConfig {
                        flow_log: self.flow_log,
                        redis: redis.is_some().then_some(flow_writes),
                        ipfix,
                    },
                },
            })
        };
        let store = redis.clone().map(|redis| StoreConfig {
            redis,
            spool_dir: state_dir.join("spool"),
            spool_max_bytes: self
                .spool_max_bytes
                .unwrap_or(store::DEFAULT_SPOOL_MAX_BYTES),
        });
        let session_timeout = seconds(
            "session-timeout",
            self.session_timeout,
            session::DEFAULT_TIMEOUT,
        )?;
        let snare = SnareConfig {
            listen: socket_addr(
                "snare-listen",
                self.snare_listen.as_deref(),
                snare::DEFAULT_LISTEN,
            )?,
            max_connections: at_least_one(
                "snare-max-connections",
                self.snare_max_connections
                    .unwrap_or(snare::DEFAULT_MAX_CONNECTIONS),
            )?,
            request_timeout: seconds(
                "snare-request-timeout",
                self.snare_request_timeout,
                snare::DEFAULT_REQUEST_TIMEOUT,
            )?,
            max_event_bytes: at_least_one(
                "max-event-bytes",
                self.max_event_bytes
                    .unwrap_or(snare::DEFAULT_MAX_EVENT_BYTES),
            )?,
            limits: SessionLimits::new(
                session_timeout,
                at_least_one(
                    "max-sessions",
                    self.max_sessions.unwrap_or(session::DEFAULT_MAX_SESSIONS),
                )?,
            ),
            event_log: self.event_log,
            emulation: EmulationConfig {
                enabled: emulation::parse_kinds(
                    self.emulate
                        .as_deref()
                        .unwrap_or(emulation::DEFAULT_EMULATE),
                )
                .map_err(|err| invalid("emulate", err.to_string()))?,
                profile: self
                    .emulation_profile
                    .as_deref()
                    .map(Profile::load)
                    .transpose()
                    .map_err(|err| invalid("emulation-profile", one_line(&format!("{err:#}"))))?
                    .unwrap_or_default(),
                rfi_fetch: self.rfi_fetch.then(|| RfiFetchConfig::new(&state_dir)),
                ..EmulationConfig::default()
            },
            redis: redis.clone(),
        };
        let session_retention = self
            .session_retention
            .map(|retention| seconds("session-retention", Some(retention), Duration::ZERO))
            .transpose()?;
        let geoip = GeoIp::open(self.geoip_db.as_deref())
            .map_err(|err| invalid("geoip-db", format!("{err:#}")))?;
        let analyzer = AnalyzerConfig {
            session_timeout,
            geoip,
            session_retention,
            redis: redis.clone(),
            sensor_id: sensor_id.clone(),
        };
        let console = (!self.no_console)
            .then(|| -> Result<ConsoleConfig, InvalidSetting> {
                Ok(ConsoleConfig {
                    listen: socket_addr(
                        "web-listen",
                        self.web_listen.as_deref(),
                        console::DEFAULT_WEB_LISTEN,
                    )?,
                    token: self.api_token.clone().filter(|token| !token.is_empty()),
                    session_timeout,
                    redis: redis.clone(),
                })
            })
            .transpose()?;
        let local_redis =
            (redis.is_some() && default_redis && !self.redis_cluster && !self.no_local_redis).then(
                || LocalRedisConfig {
                    addr: store::DEFAULT_REDIS_ADDR,
                    dir: state_dir.join("redis"),
                },
            );
        let api = redis
            .map(|redis| -> Result<ApiConfig, InvalidSetting> {
                Ok(ApiConfig {
                    listen: socket_addr(
                        "api-listen",
                        self.api_listen.as_deref(),
                        api::DEFAULT_LISTEN,
                    )?,
                    token: self.api_token.filter(|token| !token.is_empty()),
                    redis,
                })
            })
            .transpose()?;
        let metrics_listen = socket_addr(
            "metrics-listen",
            self.metrics_listen.as_deref(),
            metrics::DEFAULT_LISTEN,
        )?;
        // A session's join reaches back a session timeout before its first request, and
        // flows that had no record yet when it began get one within an interim interval.
        let peer_flows_retention = session_timeout + timeouts.interim + Duration::from_secs(60);
        Ok(Config {
            sensor_id,
            flows,
            store,
            snare,
            analyzer,
            api,
            metrics_listen,
            console,
            local_redis,
            peer_flows_retention,
            max_peer_flows: MAX_PEER_FLOWS,
        })
    }
}

/// A positive number of seconds, fractions allowed.
fn seconds(
    name: &'static str,
    value: Option<f64>,
    default: Duration,
) -> Result<Duration, InvalidSetting> {
    let Some(value) = value else {
        return Ok(default);
    };
    if !(value.is_finite() && value > 0.0) {
        return Err(invalid(
            name,
            format!("must be a positive number of seconds, not {value}"),
        ));
    }
    Duration::try_from_secs_f64(value).map_err(|_| invalid(name, "is too long a time"))
}

/// An error that spans lines (a TOML parser's, with its excerpt) on one.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn at_least_one<T: PartialOrd + From<u8>>(
    name: &'static str,
    value: T,
) -> Result<T, InvalidSetting> {
    if value < T::from(1) {
        return Err(invalid(name, "must be at least 1"));
    }
    Ok(value)
}

fn socket_addr(
    name: &'static str,
    value: Option<&str>,
    default: &str,
) -> Result<SocketAddr, InvalidSetting> {
    let value = value.unwrap_or(default);
    value
        .parse()
        .map_err(|_| invalid(name, format!("{value:?} is not an address:port")))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_args(std::iter::once("flowmon").chain(args.iter().copied())).unwrap()
    }

    /// The error of `args`, which must fail validation.
    fn refused(args: &[&str]) -> InvalidSetting {
        match parse(args).settings.validate() {
            Ok(_) => panic!("{args:?} accepted"),
            Err(err) => err,
        }
    }

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let dir = std::env::temp_dir().join(format!("flowmon-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flowmon.toml");
        std::fs::write(
            &path,
            "iface = [\"lo\"]\ntcp-timeout = 120\nudp-timeout = 0.5\nsnare-listen = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let cli = parse(&["--udp-timeout", "7", "--config", path.to_str().unwrap()]);
        let config = cli.config().unwrap();
        let flows = config.flows.unwrap();
        assert_eq!(flows.datapath.ifaces, ["lo"]);
        let monitor = flows.monitor;
        assert_eq!(monitor.timeouts.tcp, Duration::from_secs(120));
        assert_eq!(monitor.timeouts.udp, Duration::from_secs(7));
        assert_eq!(monitor.timeouts.icmp, DEFAULT_TIMEOUTS.icmp);
        // A default of the command line does not override the file.
        assert_eq!(config.snare.listen, "127.0.0.1:1".parse().unwrap());
        assert_eq!(
            config.api.unwrap().listen,
            api::DEFAULT_LISTEN.parse().unwrap()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn settings_may_follow_the_subcommand() {
        let cli = parse(&[
            "replay",
            "log.json",
            "--redis-url",
            "redis://h:6380",
            "--no-redis",
        ]);
        assert!(matches!(cli.command, Some(Command::Replay { .. })));
        assert_eq!(cli.settings.redis_url.as_deref(), Some("redis://h:6380"));
        assert!(cli.settings.no_redis);
        let cli = parse(&["--session-timeout", "5", "replay", "log.json"]);
        assert_eq!(cli.settings.session_timeout, Some(5.0));
    }

    #[test]
    fn the_help_shows_the_defaults_the_code_uses() {
        let help = Cli::command().render_long_help().to_string();
        for default in [
            "[default: 75]",
            "[default: 0.0.0.0:8090]",
            "[default: redis://127.0.0.1:6379]",
            "[default: /var/lib/flowmon]",
        ] {
            assert!(help.contains(default), "{default} missing from:\n{help}");
        }
        let config = Settings::default().validate().unwrap();
        assert_eq!(config.snare.limits.timeout, Duration::from_secs(75));
        assert_eq!(config.snare.listen, "0.0.0.0:8090".parse().unwrap());
    }

    #[test]
    fn ipfix_collectors_take_the_defaults_the_help_shows() {
        let help = Cli::command().render_long_help().to_string();
        for shown in [
            "port 4739 when none",
            "[default: what a datagram carries on the route",
            "[default: 32473]",
        ] {
            assert!(help.contains(shown), "{shown} missing from:\n{help}");
        }
        let cli = parse(&[
            "--iface",
            "lo",
            "--sensor-id",
            "s1",
            "--ipfix",
            "udp://127.0.0.1",
            "--ipfix",
            "tcp://[::1]:2055",
            "--ipfix-domain",
            "7",
        ]);
        let config = cli.config().unwrap();
        let ipfix = config.flows.unwrap().monitor.sinks.ipfix.unwrap();
        let urls: Vec<String> = ipfix.collectors.iter().map(ToString::to_string).collect();
        assert_eq!(urls, ["udp://127.0.0.1:4739", "tcp://[::1]:2055"]);
        assert_eq!(ipfix.observation_domain, 7);
        assert_eq!(ipfix.template_refresh, Duration::from_secs(60));
        assert_eq!(ipfix.udp_message_size, None);
        assert_eq!(ipfix.sensor_id, "s1");

        // In the file, a list.
        let dir = std::env::temp_dir().join(format!("flowmon-config-ipfix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flowmon.toml");
        std::fs::write(
            &path,
            "iface = [\"lo\"]\nipfix = [\"tcp://10.0.0.9\"]\nipfix-template-refresh = 5\n",
        )
        .unwrap();
        let config = parse(&["--config", path.to_str().unwrap()])
            .config()
            .unwrap();
        let ipfix = config.flows.unwrap().monitor.sinks.ipfix.unwrap();
        assert_eq!(ipfix.collectors[0].to_string(), "tcp://10.0.0.9:4739");
        assert_eq!(ipfix.template_refresh, Duration::from_secs(5));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn every_bad_setting_is_refused_with_its_name() {
        let cases: &[(&[&str], &str)] = &[
            (&["--iface", "no-such-if0"], "iface"),
            (&["--iface", "lo", "--max-flows", "0"], "max-flows"),
            (
                &[
                    "--iface",
                    "lo",
                    "--ingress-hook",
                    "tc",
                    "--xdp-mode",
                    "native",
                ],
                "xdp-mode",
            ),
            (&["--sensor-id", " "], "sensor-id"),
            (&["--poll-interval", "0"], "poll-interval"),
            (&["--tcp-timeout=-1"], "tcp-timeout"),
            (&["--tcp-close-timeout", "NaN"], "tcp-close-timeout"),
            (&["--udp-timeout", "inf"], "udp-timeout"),
            (&["--icmp-timeout", "0"], "icmp-timeout"),
            (&["--other-timeout", "0"], "other-timeout"),
            (&["--interim-interval", "1e300"], "interim-interval"),
            (&["--redis-url", "http://x"], "redis-url"),
            (&["--flow-stream-maxlen", "0"], "flow-stream-maxlen"),
            (&["--peer-index-retention", "0"], "peer-index-retention"),
            (&["--metrics-listen", "localhost"], "metrics-listen"),
            (&["--snare-listen", "8090"], "snare-listen"),
            (&["--snare-max-connections", "0"], "snare-max-connections"),
            (&["--max-event-bytes", "0"], "max-event-bytes"),
            (&["--snare-request-timeout", "0"], "snare-request-timeout"),
            (&["--session-timeout", "0"], "session-timeout"),
            (&["--max-sessions", "0"], "max-sessions"),
            (&["--api-listen", "x:y"], "api-listen"),
            (&["--geoip-db", "/nonexistent/city.mmdb"], "geoip-db"),
            (&["--session-retention", "0"], "session-retention"),
            (&["--emulate", "sqli,nosuch"], "emulate"),
            (
                &["--emulation-profile", "/nonexistent/host.toml"],
                "emulation-profile",
            ),
            (&["--web-listen", "8091"], "web-listen"),
            (&["--ipfix", "udp://[::1"], "ipfix"),
            (&["--ipfix", "http://collector"], "ipfix"),
            (
                &["--ipfix", "udp://h", "--ipfix-template-refresh", "0"],
                "ipfix-template-refresh",
            ),
            (
                &["--ipfix", "udp://h", "--ipfix-message-size", "200"],
                "ipfix-message-size",
            ),
            (
                &["--ipfix", "udp://h", "--ipfix-enterprise-number", "0"],
                "ipfix-enterprise-number",
            ),
            (
                &["--ipfix", "udp://h", "--ipfix-queue-bytes", "10"],
                "ipfix-queue-bytes",
            ),
            (
                &["--ipfix", "udp://h", "--sensor-id", &"s".repeat(300)],
                "sensor-id",
            ),
        ];
        for (args, name) in cases {
            let err = refused(args);
            assert_eq!(err.name, *name, "{args:?}: {err}");
            let line = err.to_string();
            assert!(
                line.starts_with(&format!("invalid setting {name}: ")) && !line.contains('\n'),
                "{line}"
            );
        }
    }

    #[test]
    fn a_bad_setting_in_the_file_is_named_too() {
        let dir = std::env::temp_dir().join(format!("flowmon-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flowmon.toml");
        std::fs::write(&path, "tcp-timout = 3\n").unwrap();
        let err = Settings::default()
            .merged_with_file(Some(&path))
            .unwrap_err();
        assert!(format!("{err:#}").contains("tcp-timout"), "{err:#}");
        std::fs::write(&path, "udp-timeout = 5\n").unwrap();
        let err = parse(&["--tcp-timeout", "NaN", "--config", path.to_str().unwrap()])
            .config()
            .unwrap_err();
        assert!(err.to_string().contains("tcp-timeout"), "{err}");
        std::fs::write(&path, "tcp-timeout = 0\n").unwrap();
        let err = parse(&["--config", path.to_str().unwrap()])
            .config()
            .unwrap_err();
        assert!(
            err.to_string().starts_with("invalid setting tcp-timeout"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_local_redis_only_stands_in_for_the_default_url() {
        let local = |args: &[&str]| parse(args).settings.validate().unwrap().local_redis;
        let config = local(&["--state-dir", "/tmp/fm"]).expect("at the default URL");
        assert_eq!(config.addr, "127.0.0.1:6379".parse().unwrap());
        assert_eq!(config.dir, Path::new("/tmp/fm/redis"));
        assert!(local(&["--redis-url", store::DEFAULT_REDIS_URL]).is_some());
        assert!(local(&["--redis-url", "redis://127.0.0.1:6380"]).is_none());
        assert!(local(&["--no-local-redis"]).is_none());
        assert!(local(&["--no-redis"]).is_none());
        assert!(local(&["--redis-cluster"]).is_none());
        let config = parse(&["--api-token", "t"]).settings.validate().unwrap();
        let console = config.console.unwrap();
        assert_eq!(console.listen, "127.0.0.1:8091".parse().unwrap());
        assert_eq!(console.token.as_deref(), Some("t"));
        assert!(
            parse(&["--no-console"])
                .settings
                .validate()
                .unwrap()
                .console
                .is_none()
        );
    }

    #[test]
    fn the_redis_password_stays_out_of_the_error() {
        let err = refused(&["--redis-url", "redis://:hunter2@host:notaport"]);
        assert_eq!(err.name, "redis-url");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
