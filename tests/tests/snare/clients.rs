//! Clients that are slow, stalled, many or that reuse their connection, against the SNARE
//! port: bounded memory and time per request, and keep-alive that stays honest.

use std::{
    io::Write as _,
    net::TcpStream,
    time::{Duration, Instant},
};

use flowmon_tests::{
    raw_http::{Answer, closed_within, receive, send},
    snare_agent::SnareAgent,
    snare_service::{TestService, config},
};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// An event of exactly `len` bytes.
fn event_of(len: usize) -> Vec<u8> {
    let head = r#"{"method": "GET", "path": "/", "pad": ""#;
    format!("{head}{}\"}}", "x".repeat(len - head.len() - 2)).into_bytes()
}

fn detection(answer: &Answer) -> String {
    let body: Value = serde_json::from_slice(&answer.body).expect("a JSON answer");
    body["response"]["message"]["detection"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Answers given without reading the body (404, 405, the liveness page) leave the connection
/// usable: the next request on it is answered.
#[test]
fn answers_that_ignore_the_body_keep_the_connection_usable() {
    let service = TestService::start(config());
    let mut stream = TcpStream::connect(service.addr()).unwrap();
    for (method, path, status) in [
        ("POST", "/api/stats", 404),
        ("GET", "/event", 405),
        ("POST", "/version", 405),
        ("PUT", "/", 200),
        ("GET", "/version", 200),
    ] {
        send(&mut stream, method, path, b"{\"path\": \"/unread\"}");
        let answer = receive(&mut stream);
        assert_eq!(answer.status(), status, "{method} {path}: {answer:?}");
        assert_eq!(answer.header("connection"), None, "{method} {path}");
    }
    send(&mut stream, "POST", "/event", br#"{"path": "/"}"#);
    assert_eq!(detection(&receive(&mut stream)), "index");
    assert_eq!(service.stats().events, 1);
}

/// A body over the limit is answered 413 with `Connection: close`, and the connection is
/// closed: its unread rest is never taken for a request.
#[test]
fn a_body_over_the_limit_closes_the_connection_it_came_on() {
    let service = TestService::start(flowmon::snare::SnareConfig {
        max_event_bytes: 1024,
        ..config()
    });
    for path in ["/event", "/nowhere"] {
        let mut stream = TcpStream::connect(service.addr()).unwrap();
        send(&mut stream, "POST", path, &event_of(1025));
        let answer = receive(&mut stream);
        assert_eq!(answer.status(), 413, "{path}");
        assert_eq!(answer.header("connection"), Some("close"), "{path}");
        assert!(closed_within(&mut stream, Duration::from_secs(5)), "{path}");
    }
    let mut stream = TcpStream::connect(service.addr()).unwrap();
    send(&mut stream, "POST", "/event", &event_of(1024));
    assert_eq!(detection(&receive(&mut stream)), "index");
}

/// At the cap, a new connection takes the place of the least recently active one.
#[test]
fn at_the_cap_the_least_recently_active_connection_makes_room() {
    let service = TestService::start(flowmon::snare::SnareConfig {
        max_connections: 2,
        ..config()
    });
    let mut oldest = TcpStream::connect(service.addr()).unwrap();
    send(&mut oldest, "GET", "/version", b"");
    receive(&mut oldest);
    let mut recent = TcpStream::connect(service.addr()).unwrap();
    send(&mut recent, "GET", "/version", b"");
    receive(&mut recent);
    let mut newest = TcpStream::connect(service.addr()).unwrap();
    send(&mut newest, "POST", "/event", br#"{"path": "/"}"#);
    assert_eq!(detection(&receive(&mut newest)), "index");
    assert!(closed_within(&mut oldest, Duration::from_secs(5)));
    send(&mut recent, "GET", "/version", b"");
    assert_eq!(receive(&mut recent).status(), 200);
}

/// Ten connections trickling 5,000-byte events at a byte per 10 ms cost the agent less than
/// 5 MB of resident memory (each byte a frame of its own once cost a 4 KiB buffer).
#[test]
fn trickled_bodies_cost_their_length_not_a_buffer_a_byte() {
    const CONNECTIONS: usize = 10;
    const BYTES: usize = 5_000;
    // Slower than the default request timeout allows: memory is the point here.
    let agent = SnareAgent::start(&["--no-redis", "--snare-request-timeout", "120"]);
    let warm_up = |agent: &SnareAgent| {
        let mut stream = TcpStream::connect(agent.addr).unwrap();
        send(&mut stream, "POST", "/event", &event_of(BYTES));
        assert_eq!(detection(&receive(&mut stream)), "index");
    };
    warm_up(&agent);
    let idle = agent.rss();
    let addr = agent.addr;
    let trickling: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.set_nodelay(true).unwrap();
                write!(
                    stream,
                    "POST /event HTTP/1.1\r\nHost: flowmon\r\nContent-Length: {BYTES}\r\n\r\n"
                )
                .unwrap();
                for byte in event_of(BYTES) {
                    stream.write_all(&[byte]).unwrap();
                    std::thread::sleep(Duration::from_millis(10));
                }
                receive(&mut stream)
            })
        })
        .collect();
    let mut peak = idle;
    while !trickling.iter().all(|thread| thread.is_finished()) {
        peak = peak.max(agent.rss());
        std::thread::sleep(Duration::from_millis(200));
    }
    for thread in trickling {
        assert_eq!(detection(&thread.join().unwrap()), "index");
    }
    let grown = peak.saturating_sub(idle);
    assert!(
        grown < 5 << 20,
        "RSS grew by {} KiB over the idle {} KiB",
        grown >> 10,
        idle >> 10
    );
}

/// 1,100 connections that stall part-way through their body (more than the 1,024 the agent
/// serves at once) are all cut off within the request timeout plus a second, after which a
/// new connection's event is answered within 100 ms.
#[test]
fn stalled_bodies_are_cut_off_and_new_clients_served() {
    const STALLED: usize = 1_100;
    const TIMEOUT: Duration = Duration::from_secs(3);
    raise_open_file_limit();
    let agent = SnareAgent::start(&["--no-redis", "--snare-request-timeout", "3"]);
    let addr = agent.addr;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (sent, cut_off) = runtime.block_on(async move {
        let mut connections = Vec::with_capacity(STALLED);
        for _ in 0..STALLED {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"POST /event HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"pa")
                .await
                .unwrap();
            connections.push(stream);
        }
        let sent = Instant::now();
        let mut waiting = tokio::task::JoinSet::new();
        for mut stream in connections {
            waiting.spawn(async move {
                let mut buffer = [0; 1024];
                loop {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return Instant::now(),
                        Ok(_) => {}
                    }
                }
            });
        }
        let deadline = sent + TIMEOUT + Duration::from_secs(1);
        let closed = tokio::time::timeout_at(deadline.into(), async {
            let mut closed = Vec::with_capacity(STALLED);
            while let Some(at) = waiting.join_next().await {
                closed.push(at.unwrap());
            }
            closed
        })
        .await
        .expect("every stalled connection is cut off within the timeout and a second");
        (sent, closed)
    });
    let last = cut_off.iter().max().unwrap().duration_since(sent);
    assert!(
        last <= TIMEOUT + Duration::from_secs(1),
        "the last was cut off after {last:?}"
    );
    let started = Instant::now();
    let mut stream = TcpStream::connect(agent.addr).unwrap();
    send(&mut stream, "POST", "/event", br#"{"path": "/"}"#);
    assert_eq!(detection(&receive(&mut stream)), "index");
    let answered = started.elapsed();
    assert!(
        answered < Duration::from_millis(100),
        "answered after {answered:?}"
    );
    let metrics = reqwest::blocking::get(format!("http://{}/metrics", agent.metrics))
        .unwrap()
        .text()
        .unwrap();
    let cut = |reason: &str| -> f64 {
        let series = format!("flowmon_snare_connections_cut_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series.as_str()))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing"))
    };
    assert_eq!(
        cut("request_timeout") + cut("evicted"),
        STALLED as f64,
        "{metrics}"
    );
}

/// The soft open-file limit raised to the hard one: 1,100 connections and their files.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the rlimit we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}
