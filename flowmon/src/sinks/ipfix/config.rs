//! What the IPFIX exporter is told: its collectors (`--ipfix udp://host:port`), the observation
//! domain, the template refresh, the UDP message size, flowmon's enterprise number and the
//! bound of each collector's queue.

use std::{fmt, str::FromStr, time::Duration};

use anyhow::{Context as _, Result, bail};

use super::template::Templates;

/// The IANA port of IPFIX over UDP and TCP (RFC 7011, section 10).
pub const DEFAULT_PORT: u16 = 4739;
/// Observation domain id of every message (`--ipfix-domain`).
pub const DEFAULT_OBSERVATION_DOMAIN: u32 = 1;
/// Seconds between two sends of the templates over UDP (`--ipfix-template-refresh`), as RFC
/// 7011 suggests for UDP.
pub const DEFAULT_TEMPLATE_REFRESH: Duration = Duration::from_secs(60);
/// The enterprise number of flowmon's own information elements
/// (`--ipfix-enterprise-number`): RFC 5612's number for documentation, which IANA never
/// assigns, so it cannot collide with a vendor's elements. flowmon has no registered number;
/// docs/ipfix.md says why this one and how to change it.
pub const DEFAULT_ENTERPRISE_NUMBER: u32 = 32473;
/// Bytes of encoded records each collector may hold back (`--ipfix-queue-bytes`), while a TCP
/// collector is away or any collector is slower than the records come: a burst of a million
/// interim records fits.
pub const DEFAULT_QUEUE_BYTES: usize = 256 << 20;

/// How long a shutdown waits for TCP collectors to take what is queued.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The largest IPFIX message (its length field is 16 bits).
pub const MAX_MESSAGE_SIZE: usize = 65535;

/// The longest sensor id a record carries (a fixed-length field of its length).
pub const MAX_SENSOR_ID_LEN: usize = 255;

/// A configuration the sink cannot run with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpfixConfigError {
    #[error("{len} bytes long; IPFIX records hold at most {MAX_SENSOR_ID_LEN}")]
    SensorIdTooLong { len: usize },
    #[error(
        "{size} bytes: must be between {needed} (the templates, or a record) and {MAX_MESSAGE_SIZE}"
    )]
    MessageSize { size: usize, needed: usize },
    #[error("{bytes} bytes: must be at least {MAX_MESSAGE_SIZE}, room for one send")]
    QueueBytes { bytes: usize },
}

/// How the IPFIX sink runs.
#[derive(Clone, Debug, PartialEq)]
pub struct IpfixConfig {
    pub collectors: Vec<CollectorUrl>,
    pub observation_domain: u32,
    pub template_refresh: Duration,
    /// Largest message over UDP, bytes (`--ipfix-message-size`); `None`: what one datagram
    /// carries on the route to each collector, its MTU less the IP and UDP headers (RFC 7011,
    /// section 10.3.3), so that a collector on this host takes messages of 64 KiB.
    pub udp_message_size: Option<usize>,
    pub enterprise_number: u32,
    pub queue_bytes: usize,
    pub shutdown_grace: Duration,
    /// `--sensor-id`, in every record.
    pub sensor_id: String,
}

impl IpfixConfig {
    /// A configuration with every default, for `collectors`.
    pub fn new(collectors: Vec<CollectorUrl>, sensor_id: String) -> Self {
        Self {
            collectors,
            observation_domain: DEFAULT_OBSERVATION_DOMAIN,
            template_refresh: DEFAULT_TEMPLATE_REFRESH,
            udp_message_size: None,
            enterprise_number: DEFAULT_ENTERPRISE_NUMBER,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            sensor_id,
        }
    }

    /// Checks what each value alone cannot tell: the sensor id fits a record, a UDP message
    /// holds the templates and a record, the queue one send.
    pub fn check(&self) -> Result<(), IpfixConfigError> {
        let len = self.sensor_id.len();
        if len > MAX_SENSOR_ID_LEN {
            return Err(IpfixConfigError::SensorIdTooLong { len });
        }
        if let Some(size) = self.udp_message_size {
            let needed = self.templates().smallest_message();
            if !(needed..=MAX_MESSAGE_SIZE).contains(&size) {
                return Err(IpfixConfigError::MessageSize { size, needed });
            }
        }
        if self.queue_bytes < MAX_MESSAGE_SIZE {
            return Err(IpfixConfigError::QueueBytes {
                bytes: self.queue_bytes,
            });
        }
        Ok(())
    }

    /// The templates of this configuration's records.
    pub fn templates(&self) -> Templates {
        let sensor_id_len = self.sensor_id.len().min(MAX_SENSOR_ID_LEN) as u16;
        Templates::new(sensor_id_len, self.enterprise_number)
    }
}

/// How records travel to a collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A collector: `udp://host[:port]` or `tcp://host[:port]`; an IPv6 address in brackets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectorUrl {
    pub transport: Transport,
    pub host: String,
    pub port: u16,
}

impl CollectorUrl {
    /// `host:port` as the resolver takes it (IPv6 addresses in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for CollectorUrl {
    type Err = anyhow::Error;

    fn from_str(url: &str) -> Result<Self> {
        let (scheme, rest) = url.split_once("://").with_context(|| {
            format!("IPFIX collector {url:?} is not udp://host:port or tcp://host:port")
        })?;
        let transport = match scheme {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            other => bail!("IPFIX collector {url:?}: unknown transport {other:?} (udp or tcp)"),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .with_context(|| format!("IPFIX collector {url:?}: unclosed [ in the address"))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => bail!("IPFIX collector {url:?}: expected :port after the address"),
                },
            }
        } else {
            match rest.split_once(':') {
                Some((_, port)) if port.contains(':') => {
                    bail!("IPFIX collector {url:?}: put an IPv6 address in brackets, [::1]:4739")
                }
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() || host.contains(['/', '?', '#', '@']) {
            bail!("IPFIX collector {url:?}: expected host or host:port after {scheme}://");
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(port) => match port.parse() {
                Ok(port) if port != 0 => port,
                _ => bail!("IPFIX collector {url:?}: {port:?} is not a port"),
            },
        };
        Ok(Self {
            transport,
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for CollectorUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        };
        write!(f, "{scheme}://{}", self.authority())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(transport: Transport, host: &str, port: u16) -> CollectorUrl {
        CollectorUrl {
            transport,
            host: host.into(),
            port,
        }
    }

    #[test]
    fn collectors_take_the_default_port_and_bracketed_ipv6() {
        let cases = [
            ("udp://127.0.0.1", url(Transport::Udp, "127.0.0.1", 4739)),
            (
                "tcp://collector.example:2055",
                url(Transport::Tcp, "collector.example", 2055),
            ),
            (
                "udp://[2001:db8::1]:9995",
                url(Transport::Udp, "2001:db8::1", 9995),
            ),
            ("tcp://[::1]", url(Transport::Tcp, "::1", 4739)),
            (
                "udp://localhost:4739/",
                url(Transport::Udp, "localhost", 4739),
            ),
        ];
        for (text, expected) in &cases {
            let parsed: CollectorUrl = text.parse().unwrap();
            assert_eq!(&parsed, expected, "{text}");
            assert_eq!(
                &parsed.to_string().parse::<CollectorUrl>().unwrap(),
                expected
            );
        }
        assert_eq!(cases[2].1.to_string(), "udp://[2001:db8::1]:9995");
    }

    #[test]
    fn sizes_that_cannot_work_are_refused() {
        let url = "udp://127.0.0.1".parse().unwrap();
        let config = IpfixConfig::new(vec![url], "sensor".into());
        assert_eq!(config.check(), Ok(()));
        let check = |change: fn(&mut IpfixConfig)| {
            let mut changed = config.clone();
            change(&mut changed);
            changed.check().unwrap_err()
        };
        assert_eq!(
            check(|c| c.sensor_id = "s".repeat(256)),
            IpfixConfigError::SensorIdTooLong { len: 256 }
        );
        // The template set: 4 + 2 * (4 + 18 * 4 + 12 * 8) bytes, and the message header.
        let needed = 16 + 4 + 2 * (4 + 18 * 4 + 12 * 8);
        assert_eq!(
            check(|c| c.udp_message_size = Some(363)),
            IpfixConfigError::MessageSize { size: 363, needed }
        );
        assert!(matches!(
            check(|c| c.udp_message_size = Some(65536)),
            IpfixConfigError::MessageSize { .. }
        ));
        assert_eq!(
            check(|c| c.queue_bytes = 65534),
            IpfixConfigError::QueueBytes { bytes: 65534 }
        );
    }

    #[test]
    fn malformed_collectors_are_refused_with_the_reason() {
        for (text, reason) in [
            ("127.0.0.1:4739", "is not udp://"),
            ("sctp://127.0.0.1", "unknown transport"),
            ("udp://", "expected host"),
            ("udp://::1", "brackets"),
            ("udp://[::1", "unclosed"),
            ("udp://[::1]4739", "expected :port"),
            ("tcp://host:0", "is not a port"),
            ("tcp://host:70000", "is not a port"),
            ("tcp://host:99/path", "is not a port"),
            ("udp://user@host", "expected host"),
        ] {
            let err = text.parse::<CollectorUrl>().unwrap_err().to_string();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }
}
