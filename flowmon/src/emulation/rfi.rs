//! `rfi`: the URL a remote file inclusion names is recorded. By default nothing is fetched and
//! the answer is what PHP prints when its include cannot reach the URL (the host's outbound
//! traffic is blocked). With `--rfi-fetch` the file is fetched (HTTP or HTTPS, within the
//! timeout and size cap, never from a loopback, private or otherwise non-public address,
//! redirects included), stored once under `samples/<sha256>`, and its PHP evaluated by the PHP
//! evaluator, never run.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result};
use http_body_util::{BodyExt as _, Empty};
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{CONNECTION, HOST, LOCATION},
};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

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

/// Fetches remote files for `--rfi-fetch`: HTTP/1.1 through hyper's client connection, over
/// tokio-rustls for HTTPS (roots from the system's store), to an address checked first.
pub struct Fetcher {
    tls: tokio_rustls::TlsConnector,
    samples: PathBuf,
    timeout: Duration,
    max_bytes: usize,
    allow_private: bool,
}

/// Why a fetch failed, as PHP words it for an include.
type Reason = String;

impl Fetcher {
    pub fn new(config: &RfiFetchConfig) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in rustls_native_certs::load_native_certs().certs {
            // A certificate the store cannot use is one root fewer, not a failure.
            let _ = roots.add(certificate);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("cannot set up TLS for the RFI fetcher")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            samples: config.samples_dir.clone(),
            timeout: config.timeout,
            max_bytes: config.max_bytes,
            allow_private: config.allow_private,
        })
    }

    pub async fn fetch(&self, url: &str) -> Fetched {
        let body = match tokio::time::timeout(self.timeout, self.get(url)).await {
            Ok(Ok(body)) => body,
            Ok(Err(reason)) => return Fetched::Failed(reason),
            Err(_) => return Fetched::Failed("Connection timed out".into()),
        };
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

    /// The body at `url`, redirects followed (each checked as the first).
    async fn get(&self, url: &str) -> Result<Vec<u8>, Reason> {
        let mut url = url::Url::parse(url).map_err(|_| php::unreachable_reason(url))?;
        for _ in 0..=MAX_REDIRECTS {
            let (status, location, body) = self.exchange(&url).await?;
            if status.is_redirection()
                && let Some(next) = location.and_then(|l| url.join(&l).ok())
            {
                url = next;
                continue;
            }
            if !status.is_success() {
                return Err(format!(
                    "HTTP request failed! HTTP/1.1 {} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                ));
            }
            return self.read(body).await;
        }
        Err("Redirection limit reached, aborting".into())
    }

    /// One request: the status, the `Location` and the body to read.
    async fn exchange(
        &self,
        url: &url::Url,
    ) -> Result<(StatusCode, Option<String>, Incoming), Reason> {
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            // FTP is recorded, not fetched: few RFI payloads use it.
            _ => return Err(php::unreachable_reason(url.as_str())),
        };
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let tcp = self.connect(&host, port).await?;
        let mut target = url.path().to_owned();
        if let Some(query) = url.query() {
            target = format!("{target}?{query}");
        }
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        let request = Request::get(target)
            .header(HOST, authority)
            .header(CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|_| php::unreachable_reason(url.as_str()))?;
        let response = if https {
            let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                .map_err(|_| php::unreachable_reason(url.as_str()))?;
            let stream = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|_| "SSL operation failed with code 1".to_owned())?;
            send(stream, request).await
        } else {
            send(tcp, request).await
        }
        .map_err(|_| "Connection reset by peer".to_owned())?;
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        Ok((response.status(), location, response.into_body()))
    }

    /// A connection to `host`, only ever to a public address (unless allowed otherwise).
    async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, Reason> {
        let literal = host.trim_matches(['[', ']']).parse::<IpAddr>().ok();
        let addresses: Vec<SocketAddr> = match literal {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| {
                    "php_network_getaddresses: getaddrinfo failed: Name or service not known"
                        .to_owned()
                })?
                .collect(),
        };
        let allowed = addresses
            .into_iter()
            .filter(|address| self.allow_private || is_public(address.ip()));
        for address in allowed {
            if let Ok(tcp) = TcpStream::connect(address).await {
                return Ok(tcp);
            }
        }
        Err("Connection refused".into())
    }

    /// The body, unless it is larger than the cap (then it is dropped, not cut: a cut file's
    /// hash names no sample).
    async fn read(&self, mut body: Incoming) -> Result<Vec<u8>, Reason> {
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| "Connection reset by peer".to_owned())?;
            if let Some(data) = frame.data_ref() {
                if bytes.len() + data.len() > self.max_bytes {
                    return Err(format!(
                        "HTTP request failed! more than {} bytes",
                        self.max_bytes
                    ));
                }
                bytes.extend_from_slice(data);
            }
        }
        Ok(bytes)
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

/// Sends `request` on a new HTTP/1.1 connection over `stream`.
async fn send<S>(stream: S, request: Request<Empty<Bytes>>) -> hyper::Result<Response<Incoming>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    sender.send_request(request).await
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
