//! `rfi`: the URL a remote file inclusion names is recorded. By default nothing is fetched and
//! the answer is what PHP prints when its include cannot reach the URL (the host's outbound
//! traffic is blocked). With `--rfi-fetch` the file is fetched (HTTP or HTTPS, `reqwest`,
//! within the timeout and size cap, never from a loopback, private or otherwise non-public
//! address, redirects included), stored once under `samples/<sha256>`, and its PHP evaluated by
//! the PHP evaluator, never run.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
};

use anyhow::{Context as _, Result};

use super::{Answer, Machine, RfiFetchConfig, Sample, budget::Overrun, php};

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 3;

/// The URL in an RFI value: from its scheme (`http:`, `https:`, `ftp:`, `ftps:`) on.
pub fn url_in(value: &str) -> Option<String> {
    let lower = value.to_ascii_lowercase();
    ["http:", "https:", "ftp:", "ftps:"]
        .iter()
        .filter_map(|scheme| lower.find(scheme))
        .min()
        .map(|at| value[at..].trim().to_owned())
}

/// What a fetch gave.
#[derive(Debug)]
pub enum Fetched {
    File {
        text: String,
        sample: Sample,
    },
    /// Why the include fails, as PHP words it.
    Failed(String),
}

pub fn emulate(
    machine: &mut Machine<'_>,
    value: &str,
    fetched: Option<Fetched>,
) -> Result<Answer, Overrun> {
    let url = url_in(value).unwrap_or_else(|| value.to_owned());
    machine.evidence.url(&url);
    let output = match fetched {
        None => php::include_failure(machine, &url, &php::unreachable_reason(&url)),
        Some(Fetched::Failed(reason)) => php::include_failure(machine, &url, &reason),
        Some(Fetched::File { text, sample }) => {
            machine.evidence.sample(sample);
            let output = php::render(machine, &text)?;
            machine
                .evidence
                .code(&super::budget::cut(text, 4096), &output);
            output
        }
    };
    Ok(Answer::text(output, false))
}

/// Fetches remote files for `--rfi-fetch`.
pub struct Fetcher {
    client: reqwest::Client,
    samples: PathBuf,
    max_bytes: usize,
    allow_private: bool,
}

impl Fetcher {
    pub fn new(config: &RfiFetchConfig) -> Result<Self> {
        // rustls needs its process-wide crypto provider; the store may have installed it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let allow_private = config.allow_private;
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            let literal = attempt
                .url()
                .host_str()
                .and_then(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().ok());
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if literal.is_some_and(|ip| !allow_private && !is_public(ip)) {
                attempt.error("redirected to a non-public address")
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(policy)
            .no_proxy()
            .dns_resolver(Arc::new(PublicResolver { allow_private }))
            .build()
            .context("cannot make the RFI fetcher's HTTP client")?;
        Ok(Self {
            client,
            samples: config.samples_dir.clone(),
            max_bytes: config.max_bytes,
            allow_private,
        })
    }

    pub async fn fetch(&self, url: &str) -> Fetched {
        let parsed = match reqwest::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => parsed,
            // FTP is recorded, not fetched: no well-kept async client, and few RFI payloads.
            _ => return Fetched::Failed(php::unreachable_reason(url)),
        };
        if let Some(ip) = parsed
            .host_str()
            .and_then(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().ok())
            && !self.allow_private
            && !is_public(ip)
        {
            return Fetched::Failed("Connection refused".into());
        }
        let mut response = match self.client.get(parsed).send().await {
            Ok(response) => response,
            Err(err) => return Fetched::Failed(reason(&err)),
        };
        let status = response.status();
        if !status.is_success() {
            return Fetched::Failed(format!(
                "HTTP request failed! HTTP/1.1 {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > self.max_bytes {
                        tracing::info!(
                            url,
                            max = self.max_bytes,
                            "RFI file larger than the cap: dropped"
                        );
                        return Fetched::Failed("HTTP request failed! file too large".into());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(err) => return Fetched::Failed(reason(&err)),
            }
        }
        let sha256 = super::hex_digest("sha256", &body);
        if let Err(err) = self.store(&sha256, &body).await {
            tracing::warn!(url, "cannot store the RFI sample: {err:#}");
        }
        Fetched::File {
            text: String::from_utf8_lossy(&body).into_owned(),
            sample: Sample {
                url: url.to_owned(),
                sha256,
                bytes: body.len() as u64,
            },
        }
    }

    /// Keeps `body` once, as `samples/<sha256>`, written whole or not at all.
    async fn store(&self, sha256: &str, body: &[u8]) -> Result<()> {
        let path = self.samples.join(sha256);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(());
        }
        tokio::fs::create_dir_all(&self.samples)
            .await
            .with_context(|| format!("cannot create {}", self.samples.display()))?;
        let partial = self
            .samples
            .join(format!(".{sha256}.{}", std::process::id()));
        tokio::fs::write(&partial, body)
            .await
            .with_context(|| format!("cannot write {}", partial.display()))?;
        tokio::fs::rename(&partial, &path)
            .await
            .with_context(|| format!("cannot rename {}", partial.display()))?;
        Ok(())
    }
}

fn reason(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "Connection timed out".into()
    } else if err.is_redirect() {
        "Redirection limit reached, aborting".into()
    } else {
        let text = format!("{err:?}");
        if text.contains("dns error")
            || text.contains("failed to lookup")
            || text.contains("non-public")
        {
            "php_network_getaddresses: getaddrinfo failed: Name or service not known".into()
        } else {
            "Connection refused".into()
        }
    }
}

/// Resolves names to their public addresses only, so that a name cannot lead a fetch into the
/// sensor's own network.
struct PublicResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|address| allow_private || is_public(address.ip()))
                .collect();
            if addresses.is_empty() {
                return Err(
                    "the name has no public address (non-public addresses are refused)".into(),
                );
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether `ip` is a public unicast address: not loopback, private, link-local, shared,
/// documentation, benchmarking, multicast or reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || first == 0x0064)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_starts_at_its_scheme() {
        assert_eq!(
            url_in("http://evil.example/x.txt?").as_deref(),
            Some("http://evil.example/x.txt?")
        );
        assert_eq!(url_in("../HTTPS://x/y").as_deref(), Some("HTTPS://x/y"));
        assert_eq!(
            url_in("ftp://10.0.0.1/a").as_deref(),
            Some("ftp://10.0.0.1/a")
        );
        assert_eq!(url_in("/etc/passwd"), None);
    }

    #[test]
    fn only_public_addresses_are_fetched_from() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "203.0.113.5",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
