//! A SNARE 0.3.0 front end, for the end-to-end tests of emulation: it serves an attacker's
//! HTTP requests the way SNARE's `tanner_handler.py` does (no unmodified SNARE is available
//! here). For each request it posts the event SNARE would send to `/event`, then serves the
//! answer as `parse_tanner_response` does:
//!
//! - type 1: the cloned page for the path (or for the path without its query), else 404; an
//!   HTML page gets a hidden link to a dork (SNARE with dorks enabled takes a list from
//!   `/dorks` when it has none, pops one per page, and fails with 500 on an empty list);
//! - type 2: with `page`, that cloned page (or `<html><body></body></html>`) with a `<div>`
//!   holding `value` appended to its `<body>`; without, `value` alone as text/plain; then the
//!   payload's `headers` override the page's;
//! - type 3: the status alone, no body;
//! - and `Set-Cookie: sess_uuid=...` whenever the session differs from the request's cookie.
//!
//! One request per connection (`Connection: close`), a thread per connection; stopped when
//! dropped.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use serde_json::{Value, json};

/// The sensor's uuid in the events it sends.
pub const SENSOR: &str = "9c10172f-7ce2-4fb4-b1c6-abc70141db56";

/// A cloned site: path to (body, Content-Type), as SNARE's `meta.json` keys its pages.
pub type Site = BTreeMap<String, (String, String)>;

/// A small shop with two HTML pages and a stylesheet.
pub fn shop() -> Site {
    let page = |title: &str| {
        (
            format!(
                "<html><head><title>{title}</title></head><body><h1>{title}</h1><p>Welcome.</p></body></html>"
            ),
            "text/html".to_owned(),
        )
    };
    Site::from([
        ("/index.html".to_owned(), page("Shop")),
        ("/about.html".to_owned(), page("About us")),
        (
            "/style.css".to_owned(),
            ("body { color: #222; }".to_owned(), "text/css".to_owned()),
        ),
    ])
}

pub struct FakeSnare {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What SNARE keeps between requests.
struct Shared {
    tanner: SocketAddr,
    site: Site,
    dorks: Mutex<Vec<String>>,
    client: reqwest::blocking::Client,
}

impl FakeSnare {
    /// Serves `site` on an ephemeral loopback port, reporting to the Tanner at `tanner`.
    pub fn start(tanner: SocketAddr, site: Site) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("its address");
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            tanner,
            site,
            dorks: Mutex::new(Vec::new()),
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
        });
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || serve(&shared, stream));
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for FakeSnare {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(found, _)| found.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

/// SNARE's `create_data`: the event for `request` from `peer`.
fn event(request: &Request, peer: SocketAddr) -> Value {
    let headers: serde_json::Map<String, Value> = request
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), json!(value)))
        .collect();
    let mut event = json!({
        "method": request.method,
        "path": request.target,
        "headers": headers,
        "uuid": SENSOR,
        "peer": {"ip": peer.ip().to_string(), "port": peer.port()},
        "status": 200,
    });
    if let Some(cookie) = request.header("Cookie") {
        // SNARE splits on ';' and '=' without trimming.
        let cookies: serde_json::Map<String, Value> = cookie
            .split(';')
            .filter_map(|pair| {
                let mut parts = pair.split('=');
                Some((parts.next()?.to_owned(), json!(parts.next()?)))
            })
            .collect();
        event["cookies"] = Value::Object(cookies);
    }
    if request.method == "POST" {
        let fields: serde_json::Map<String, Value> = form_urlencoded::parse(&request.body)
            .map(|(name, value)| (name.into_owned(), json!(value)))
            .collect();
        event["post_data"] = Value::Object(fields);
    }
    event
}

/// What SNARE serves: status, headers, body.
type Served = (u16, Vec<(String, String)>, Vec<u8>);

fn serve(shared: &Shared, mut stream: TcpStream) {
    let Some(request) = read_request(&stream) else {
        return;
    };
    let peer = stream.peer_addr().expect("a peer");
    let (status, mut headers, body) = match answer(shared, &request, peer) {
        Ok(served) => served,
        Err(err) => (500, Vec::new(), err.into_bytes()),
    };
    headers.push(("Content-Length".into(), body.len().to_string()));
    headers.push(("Connection".into(), "close".into()));
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

fn answer(shared: &Shared, request: &Request, peer: SocketAddr) -> Result<Served, String> {
    let tanner = format!("http://{}/event", shared.tanner);
    let reply: Value = shared
        .client
        .post(tanner)
        .json(&event(request, peer))
        .send()
        .and_then(|response| response.json())
        .map_err(|err| format!("no answer from Tanner: {err}"))?;
    let message = &reply["response"]["message"];
    let detection = &message["detection"];
    let mut served = match detection["type"].as_u64() {
        Some(1) => page(shared, &request.target)?,
        Some(2) => emulated(shared, &detection["payload"])?,
        Some(3) => {
            let status = detection["payload"]["status_code"]
                .as_u64()
                .ok_or("a type 3 answer without status_code")?;
            (status as u16, Vec::new(), Vec::new())
        }
        _ => return Err(format!("no detection type in {reply}")),
    };
    let sess_uuid = message["sess_uuid"].as_str().unwrap_or_default();
    let returned = request.header("Cookie").and_then(|cookie| {
        cookie
            .split(';')
            .find_map(|c| c.trim().strip_prefix("sess_uuid="))
    });
    if returned != Some(sess_uuid) {
        served
            .1
            .push(("Set-Cookie".into(), format!("sess_uuid={sess_uuid}")));
    }
    Ok(served)
}

/// Type 1: the cloned page, or 404.
fn page(shared: &Shared, target: &str) -> Result<Served, String> {
    let mut collapsed = target.to_owned();
    while collapsed.contains("//") {
        collapsed = collapsed.replace("//", "/");
    }
    let mut candidates = vec![collapsed.clone()];
    if let Some((path, _)) = collapsed.split_once('?') {
        candidates.push(path.to_owned());
    }
    for candidate in candidates {
        let mut name = if candidate == "/" {
            "/index.html".to_owned()
        } else {
            candidate
        };
        if name.len() > 1 && name.ends_with('/') {
            name.pop();
        }
        let name = percent_encoding::percent_decode_str(&name)
            .decode_utf8_lossy()
            .into_owned();
        if let Some((content, content_type)) = shared.site.get(&name) {
            let body = if content_type.starts_with("text/html") {
                with_dork(shared, content)?
            } else {
                content.clone()
            };
            return Ok((
                200,
                vec![("Content-Type".into(), content_type.clone())],
                body.into_bytes(),
            ));
        }
    }
    Ok((404, Vec::new(), Vec::new()))
}

/// SNARE's `handle_html_content` with dorks enabled.
fn with_dork(shared: &Shared, content: &str) -> Result<String, String> {
    let mut dorks = shared.dorks.lock().unwrap();
    if dorks.is_empty() {
        let reply: Value = shared
            .client
            .get(format!("http://{}/dorks", shared.tanner))
            .send()
            .and_then(|response| response.json())
            .map_err(|err| format!("no dorks from Tanner: {err}"))?;
        *dorks = reply["response"]["dorks"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|d| d.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
    }
    // Python's list.pop() on an empty list: IndexError, which SNARE answers with 500.
    let dork = dorks.pop().ok_or("IndexError: pop from empty list")?;
    let link = format!("<a href=\"{dork}\" style=\"color:white;font-size:1px;\">Hidden link</a>");
    Ok(append_to_body(content, &link))
}

/// Type 2: the value in the page, or as text.
fn emulated(shared: &Shared, payload: &Value) -> Result<Served, String> {
    let value = payload["value"]
        .as_str()
        .ok_or_else(|| format!("a type 2 value that is no string: {payload}"))?;
    let (mut headers, body) = match payload["page"].as_str() {
        Some(page) => {
            let (content, content_type) = shared
                .site
                .get(page)
                .cloned()
                .unwrap_or_else(|| ("<html><body></body></html>".into(), "text/html".into()));
            let html = append_to_body(&content, &format!("<div>{value}</div>"));
            (vec![("Content-Type".to_owned(), content_type)], html)
        }
        None => (
            vec![("Content-Type".to_owned(), "text/plain".to_owned())],
            value.to_owned(),
        ),
    };
    if let Some(overrides) = payload["headers"].as_object() {
        for (name, value) in overrides {
            headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
            headers.push((name.clone(), value.as_str().unwrap_or_default().to_owned()));
        }
    }
    Ok((200, headers, body.into_bytes()))
}

/// `element` as the last child of `<body>`, as BeautifulSoup's `soup.body.append` leaves it.
fn append_to_body(html: &str, element: &str) -> String {
    match html.rfind("</body>") {
        Some(at) => format!("{}{element}{}", &html[..at], &html[at..]),
        None => format!("{html}{element}"),
    }
}
