//! The wire (spec section 1), validation (section 2), the event log (section 6.2) and bad input
//! (section 7), over real HTTP against the service in-process, and the T-Pot smoke test against
//! the real `flowmon` binary.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use flowmon_tests::wait::wait_until;
use flowmon_tests::{
    process::TempDir,
    redis_server::RedisServer,
    snare_agent::SnareAgent,
    snare_service::{TestService, config},
};
use serde_json::{Value, json};

const SENSOR: &str = "9c10172f-7ce2-4fb4-b1c6-abc70141db56";

/// SNARE's event of spec 1.1.
fn snare_event() -> Value {
    json!({
        "method": "GET",
        "path": "/index.html?id=1%20UNION%20SELECT%201",
        "headers": {"Host": "example.com", "User-Agent": "curl/8.0", "Cookie": "sess_uuid=2c7b...; foo=bar"},
        "uuid": SENSOR,
        "peer": {"ip": "203.0.113.7", "port": 51234},
        "status": 200,
        "cookies": {"sess_uuid": "2c7b...", " foo": "bar"},
    })
}

fn assert_uuid4(text: &str) {
    let groups: Vec<_> = text.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "{text} is no hyphenated uuid");
    assert!(
        text.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
        "{text}"
    );
    assert_eq!(&text[14..15], "4", "{text} is no uuid4");
}

/// Tanner's rule: no payload is type 1, a payload without `status_code` 2, else 3; and a
/// content payload's value is always a string.
fn assert_type_fits_payload(detection: &Value) {
    let expected = match detection.get("payload") {
        None => 1,
        Some(payload) if payload.get("status_code").is_some() => 3,
        Some(payload) => {
            assert!(payload["value"].is_string(), "{detection}");
            2
        }
    };
    assert_eq!(detection["type"], expected, "{detection}");
}

#[test]
fn version_dorks_and_liveness_answer_as_tanner_does() {
    let service = TestService::start(config());
    let get = |path: &str| service.client().get(service.url(path)).send().unwrap();

    let version = get("/version");
    assert_eq!(version.status(), 200);
    assert_eq!(
        version.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(version.text().unwrap(), r#"{"version": "0.6.0"}"#);

    // Never an empty list: SNARE answers 500 for every HTML page on one.
    let shipped: Vec<&str> = flowmon::snare::dorks::shipped().collect();
    for _ in 0..5 {
        let dorks = get("/dorks");
        assert_eq!(dorks.status(), 200);
        let text = dorks.text().unwrap();
        assert!(
            text.starts_with(r#"{"version": "0.6.0", "response": {"dorks": [""#),
            "{text}"
        );
        let answer: Value = serde_json::from_str(&text).unwrap();
        let list = answer["response"]["dorks"].as_array().unwrap();
        assert!((25..=50).contains(&list.len()), "{text}");
        assert!(
            list.iter()
                .all(|dork| shipped.contains(&dork.as_str().unwrap()))
        );
    }

    for method in [
        reqwest::Method::GET,
        reqwest::Method::POST,
        reqwest::Method::DELETE,
    ] {
        let root = service
            .client()
            .request(method, service.url("/"))
            .send()
            .unwrap();
        assert_eq!(root.status(), 200);
        assert_eq!(root.text().unwrap(), "Tanner server");
    }
}

#[test]
fn an_event_gets_the_detection_envelope_byte_for_byte() {
    let service = TestService::start(config());
    let response = service
        .client()
        .post(service.url("/event"))
        .body(snare_event().to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let body = response.text().unwrap();
    let answer: Value = serde_json::from_str(&body).unwrap();
    let sess_uuid = answer["response"]["message"]["sess_uuid"].as_str().unwrap();
    assert_uuid4(sess_uuid);
    // `id` names a column: Tanner's query runs, and SQLite's error is the answer, in the page
    // the request asked for.
    assert_eq!(
        body,
        format!(
            r#"{{"version": "0.6.0", "response": {{"message": {{"detection": {{"name": "sqli", "order": 2, "payload": {{"value": "SELECTs to the left and right of UNION do not have the same number of result columns", "page": "/index.html"}}, "type": 2, "version": "0.6.0"}}, "sess_uuid": "{sess_uuid}"}}}}}}"#
        )
    );
}

#[test]
fn the_event_log_holds_each_validated_event_with_its_answer() {
    let dir = TempDir::new("snare-event-log");
    let log = dir.path().join("tanner_report.json");
    let service = TestService::start(flowmon::snare::SnareConfig {
        event_log: Some(log.clone()),
        ..config()
    });
    let mut event = snare_event();
    event["timestamp"] = json!("2024-05-01T12:00:00.250000");
    event["unknown"] = json!({"dropped": true});
    let first = service.post_event(&event);
    let second = service.post_event(&json!({"error": "boom", "timestamp": 1714564800.5}));
    let (stats, _) = service.shutdown();
    assert_eq!((stats.events, stats.rejected), (2, 0));

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let envelope = |message: &Value| json!({"version": "0.6.0", "response": {"message": message}});
    assert_eq!(
        lines,
        [
            json!({
                "method": "GET",
                "path": "/index.html?id=1%20UNION%20SELECT%201",
                "headers": {"host": "example.com", "user-agent": "curl/8.0", "cookie": "sess_uuid=2c7b...; foo=bar"},
                "uuid": SENSOR,
                "peer": {"ip": "203.0.113.7", "port": 51234},
                "status": 200,
                "cookies": {"sess_uuid": "2c7b...", "foo": "bar"},
                "response_msg": envelope(&first),
                "timestamp": "2024-05-01T12:00:00.250000",
            }),
            json!({
                "method": null, "path": null, "headers": {"user-agent": null}, "uuid": null,
                "peer": {"ip": null, "port": null}, "status": 500, "cookies": {"sess_uuid": null},
                "response_msg": envelope(&second),
                "timestamp": "2024-05-01T12:00:00.500000",
            }),
        ]
    );
    assert_eq!(second["detection"]["name"], "unknown");
}

/// Every body that parses as JSON is an event with a detection, whatever it lacks.
#[test]
fn bad_events_still_get_a_detection() {
    let service = TestService::start(config());
    let cases: Vec<(Value, &str)> = vec![
        // Tanner answers 500 for each of these five (spec 7).
        (
            json!({"method": "GET", "path": "/", "uuid": SENSOR}),
            "index",
        ),
        (
            json!({"method": "GET", "path": "/", "headers": {}, "peer": null}),
            "index",
        ),
        (
            json!({"method": "POST", "path": "/login", "headers": {}}),
            "unknown",
        ),
        (
            json!({"method": "GET", "path": "/", "headers": {}, "uuid": null}),
            "index",
        ),
        (
            json!({"method": "GET", "path": "/?x=O:8:%22stdClass%22:0:%7B%7D"}),
            "php_object_injection",
        ),
        // xss and xxe share an order and xss comes first.
        (
            json!({"method": "GET", "path": "/?x=%3C!DOCTYPE%20x%3E"}),
            "xss",
        ),
        (json!({}), "unknown"),
        (json!([]), "unknown"),
        (json!("GET /"), "unknown"),
        (json!(null), "unknown"),
        (json!(42), "unknown"),
        (
            json!({"method": "GET", "path": null, "headers": null, "cookies": null}),
            "unknown",
        ),
        // Numbers where text belongs, text where numbers belong, containers anywhere.
        (
            json!({"method": 1, "path": 2, "uuid": 3, "headers": {"User-Agent": 4}, "peer": {"ip": 5, "port": "x"}}),
            "unknown",
        ),
        (
            json!({"method": "GET", "path": "/", "status": "teapot", "cookies": [1, 2]}),
            "index",
        ),
        (
            json!({"method": "POST", "post_data": {"a": {"b": "c"}, "q": 7, "r": "<b>x</b>"}}),
            "xss",
        ),
        (
            json!({"method": "GET", "path": {"/": "/"}, "headers": [["User-Agent", "x"]]}),
            "unknown",
        ),
        (
            json!({"method": "GET", "path": "/?q=%FF%FE'%20OR%20'1'='1"}),
            "sqli",
        ),
        (
            json!({"method": "GET", "path": "/\u{0}\u{1f}?\u{2028}=\u{feff}"}),
            "index",
        ),
    ];
    for (event, name) in &cases {
        let message = service.post_event(event);
        assert_eq!(message["detection"]["name"], *name, "{event}");
        assert_type_fits_payload(&message["detection"]);
        assert_uuid4(message["sess_uuid"].as_str().unwrap());
    }
    let many_headers: serde_json::Map<_, _> =
        (0..10_000).map(|i| (format!("X-{i}"), json!(i))).collect();
    let message =
        service.post_event(&json!({"method": "GET", "path": "/", "headers": many_headers}));
    assert_eq!(message["detection"]["name"], "index");
    let stats = service.stats();
    assert_eq!((stats.events, stats.rejected), (cases.len() as u64 + 1, 0));
}

/// What Python's `json.loads` reads beyond strict JSON (and SNARE can send: a header byte that
/// is no UTF-8 reaches flowmon as a lone surrogate escape) is an event with a detection.
#[test]
fn bodies_python_reads_are_events() {
    let service = TestService::start(config());
    let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
    let cases: Vec<(String, &str)> = vec![
        (
            r#"{"method": "GET", "path": "/", "headers": {"User-Agent": "bad\udcffagent"}}"#.into(),
            "index",
        ),
        (
            r#"{"method": "GET", "path": "/\ud800?q=%3Cb%3E"}"#.into(),
            "xss",
        ),
        (
            r#"{"method": "GET", "path": "/", "cookies": {"c": "\udc80"}}"#.into(),
            "index",
        ),
        (
            r#"{"method": "GET", "path": "/", "status": NaN}"#.into(),
            "index",
        ),
        (
            r#"{"method": "GET", "path": "/", "peer": {"ip": "1.2.3.4", "port": Infinity}}"#.into(),
            "index",
        ),
        (
            r#"{"method": "GET", "path": "/", "status": -Infinity}"#.into(),
            "index",
        ),
        (
            r#"{"method": "GET", "path": "/", "peer": {"port": 1e400}}"#.into(),
            "index",
        ),
        (
            r#"{"method": "GET", "path": "/", "status": 123456789012345678901234567890}"#.into(),
            "index",
        ),
        (
            r#"{"method": "POST", "post_data": {"a": NaN, "b": "x' OR '1'='1"}}"#.into(),
            "sqli",
        ),
        (
            format!(r#"{{"method": "GET", "path": "/", "extra": {deep}}}"#),
            "index",
        ),
    ];
    for (body, name) in &cases {
        let (status, answer) = service.post_raw(body.clone());
        assert_eq!(status, 200, "{body}");
        let detection = &answer["response"]["message"]["detection"];
        assert_eq!(detection["name"], *name, "{body}: {answer}");
        assert_type_fits_payload(detection);
    }
    let stats = service.stats();
    assert_eq!((stats.events, stats.rejected), (cases.len() as u64, 0));
}

#[test]
fn bodies_that_are_not_json_get_tanners_error_envelope() {
    let service = TestService::start(config());
    let deep_array = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_inside = format!(
        r#"{{"path": "/", "x": {}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            br#"{"method": "GET", "path": "/ind"#.to_vec(),
            "JSONDecodeError",
        ),
        (b"".to_vec(), "JSONDecodeError"),
        (b"method=GET&path=/".to_vec(), "JSONDecodeError"),
        (b"{\"path\": \"/\"} trailing".to_vec(), "JSONDecodeError"),
        (b"{'path': '/'}".to_vec(), "JSONDecodeError"),
        (b"{\"path\": nan}".to_vec(), "JSONDecodeError"),
        (deep_array.into_bytes(), "JSONDecodeError"),
        (deep_inside.into_bytes(), "JSONDecodeError"),
        (b"{\"path\": \"/\xff\xfe\"}".to_vec(), "UnicodeDecodeError"),
        (b"\xc3\x28".to_vec(), "UnicodeDecodeError"),
    ];
    for (body, name) in &cases {
        let (status, answer) = service.post_raw(body.clone());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(body));
        assert_eq!(
            answer,
            json!({"version": "0.6.0", "response": {"message": name}})
        );
    }
    let stats = service.stats();
    assert_eq!(
        (stats.events, stats.rejected, stats.live_sessions),
        (0, cases.len() as u64, 0)
    );
}

#[test]
fn bodies_over_the_limit_get_413_and_the_limit_itself_is_accepted() {
    let service = TestService::start(flowmon::snare::SnareConfig {
        max_event_bytes: 4096,
        ..config()
    });
    let padded = |len: usize| {
        let head = r#"{"method": "GET", "path": "/", "pad": ""#;
        format!("{head}{}\"}}", "x".repeat(len - head.len() - 2))
    };
    let (status, answer) = service.post_raw(padded(4096));
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["message"]["detection"]["name"], "index");
    assert_eq!(
        raw_status(service.addr(), &padded(4097), Framing::Length),
        "HTTP/1.1 413 Payload Too Large"
    );
    assert_eq!(
        raw_status(service.addr(), &padded(4097), Framing::Chunked),
        "HTTP/1.1 413 Payload Too Large"
    );
    assert_eq!(service.stats().events, 1);
}

#[test]
fn a_100_mib_body_is_refused_without_being_read() {
    let service = TestService::start(config());
    let body = "x".repeat(100 << 20);
    for framing in [Framing::Length, Framing::Chunked] {
        assert_eq!(
            raw_status(service.addr(), &body, framing),
            "HTTP/1.1 413 Payload Too Large"
        );
    }
    // A head announcing 100 MiB is refused before any of it is sent.
    let mut stream = TcpStream::connect(service.addr()).unwrap();
    stream
        .write_all(
            format!(
                "POST /event HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                100 << 20
            )
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(status_line(stream), "HTTP/1.1 413 Payload Too Large");
    // And the service carries on.
    assert_eq!(
        service.post_event(&json!({"path": "/"}))["detection"]["name"],
        "index"
    );
}

#[test]
fn what_is_not_an_event_request_gets_4xx_never_5xx() {
    let service = TestService::start(config());
    let client = service.client();
    assert_eq!(
        client.get(service.url("/event")).send().unwrap().status(),
        405
    );
    assert_eq!(
        client
            .get(service.url("/api/stats"))
            .send()
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        client
            .post(service.url("/version"))
            .send()
            .unwrap()
            .status(),
        405
    );
    let mut stream = TcpStream::connect(service.addr()).unwrap();
    stream
        .write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not HTTP\r\n\r\n")
        .unwrap();
    assert_eq!(status_line(stream), "HTTP/1.1 400 Bad Request");
    assert_eq!(
        service.post_event(&json!({"path": "/"}))["detection"]["name"],
        "index"
    );
}

/// T-Pot's smoke test (spec 6.2) against the real binary, with Redis and the default session
/// timeout: within 5 s of the request through SNARE, the event log holds it, `snare_ids` holds
/// the sensor and the API's `/snares` lists it (its routes answer, though no session of it is
/// stored yet). Then a header that was no UTF-8 goes through the event log into a stored
/// session.
#[test]
fn the_binary_passes_tpots_smoke_test() {
    let redis = RedisServer::start();
    let log_dir = TempDir::new("snare-tpot");
    let log = log_dir.path().join("tanner_report.json");
    let mut flowmon = SnareAgent::start(&[
        "--redis-url",
        &redis.url(),
        "--event-log",
        log.to_str().unwrap(),
    ]);
    let client = reqwest::blocking::Client::new();
    let version: Value = client
        .get(format!("http://{}/version", flowmon.addr))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(version, json!({"version": "0.6.0"}));

    let token = format!("smoke{}", std::process::id());
    let event = json!({
        "method": "GET",
        "path": format!("/?tpot_smoke={token}"),
        "headers": {"Host": "tpot", "User-Agent": format!("tpot-tanner-smoke/{token}"), "Accept": "*/*"},
        "uuid": SENSOR,
        "peer": {"ip": "172.17.0.1", "port": 40404},
        "status": 200,
    });
    let sent = Instant::now();
    let answer: Value = client
        .post(format!("http://{}/event", flowmon.addr))
        .body(event.to_string())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["response"]["message"]["detection"]["name"], "index");

    let smoke_lines = || -> Vec<Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| {
                line["path"]
                    .as_str()
                    .is_some_and(|path| path.contains(&token))
            })
            .collect()
    };
    let api = |path: &str| -> Value {
        client
            .get(format!("http://{}{path}", flowmon.api))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    wait_until(
        Duration::from_secs(5).saturating_sub(sent.elapsed()),
        "the event logged, its sensor in snare_ids and in /snares",
        || {
            smoke_lines().len() == 1
                && redis.cli(&["SMEMBERS", "snare_ids"]).trim() == SENSOR
                && api("/snares")["response"]["message"] == json!([SENSOR])
        },
    );
    // The sensor has no stored session yet: its routes answer empty, not 404.
    assert_eq!(
        api(&format!("/snare/{SENSOR}")),
        json!({"version": 1, "response": {"message": []}})
    );
    assert_eq!(
        api(&format!("/snare-stats/{SENSOR}"))["response"]["message"],
        json!({"total_sessions": 0, "total_duration": 0.0,
               "attack_frequency": {"sqli": 0, "lfi": 0, "xss": 0, "rfi": 0, "cmd_exec": 0}})
    );
    let line = &smoke_lines()[0];
    assert_eq!(line["uuid"], SENSOR);
    assert_eq!(
        line["headers"]["user-agent"],
        format!("tpot-tanner-smoke/{token}")
    );
    assert_eq!(line["cookies"], json!({"sess_uuid": null}));
    assert_eq!(line["response_msg"], answer);
    let timestamp = line["timestamp"].as_str().unwrap();
    assert_eq!(
        (timestamp.len(), &timestamp[10..11], &timestamp[19..20]),
        (26, "T", "."),
        "{timestamp}"
    );

    // `User-Agent: bad\xffagent` as SNARE (Python) reports it.
    let bad_agent = format!(
        r#"{{"method": "GET", "path": "/bad", "uuid": "{SENSOR}", "peer": {{"ip": "192.0.2.99"}},
            "headers": {{"User-Agent": "bad\udcffagent"}}}}"#
    );
    let answer: Value = client
        .post(format!("http://{}/event", flowmon.addr))
        .body(bad_agent)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["response"]["message"]["detection"]["name"], "index");
    // Stopping ends, analyses and stores every live session.
    flowmon.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    let logged: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(logged["headers"]["user-agent"], "bad\u{fffd}agent");
    let stored: Vec<Value> = redis
        .cli(&["ZRANGE", SENSOR, "0", "-1"])
        .lines()
        .map(|member| serde_json::from_str(member).unwrap())
        .collect();
    let agents: Vec<&Value> = stored.iter().map(|s| &s["user_agent"]).collect();
    assert_eq!(
        agents,
        [
            &json!(format!("tpot-tanner-smoke/{token}")),
            &json!("bad\u{fffd}agent")
        ]
    );
}

#[derive(Clone, Copy)]
enum Framing {
    Length,
    Chunked,
}

/// POSTs `body` to `/event` over a raw connection, from a second thread that stops writing
/// once the server hangs up: the status line of the answer.
fn raw_status(addr: SocketAddr, body: &str, framing: Framing) -> String {
    let stream = TcpStream::connect(addr).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let body = body.to_owned();
    let sending = std::thread::spawn(move || -> std::io::Result<()> {
        match framing {
            Framing::Length => {
                write!(
                    writer,
                    "POST /event HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )?;
                writer.write_all(body.as_bytes())
            }
            Framing::Chunked => {
                writer.write_all(
                    b"POST /event HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                )?;
                for chunk in body.as_bytes().chunks(64 << 10) {
                    write!(writer, "{:x}\r\n", chunk.len())?;
                    writer.write_all(chunk)?;
                    writer.write_all(b"\r\n")?;
                }
                writer.write_all(b"0\r\n\r\n")
            }
        }
    });
    let status = status_line(stream);
    // Whether the whole body went out depends on when the server hung up.
    let _ = sending.join().unwrap();
    status
}

/// Reads an answer's status line.
fn status_line(mut stream: TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    while !received.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(err) => panic!(
                "no answer ({err}) after {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
    let text = String::from_utf8_lossy(&received);
    text.lines().next().unwrap_or_default().to_owned()
}
