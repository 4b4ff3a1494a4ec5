//! Sessions (spec section 3) over real HTTP: identity with the cookie fix, the attributes of an
//! ended session, expiry, the live-session cap, and the hand-off of every session at shutdown.

use std::time::{Duration, Instant};

use flowmon::snare::{AttackType, SessionLimits, SnareConfig};
use flowmon_tests::snare_service::{TestService, config};
use flowmon_tests::wait::wait_until;
use serde_json::{Value, json};

const SENSOR: &str = "9c10172f-7ce2-4fb4-b1c6-abc70141db56";

/// A request as SNARE reports it, with `cookie` as the session cookie it returns.
fn request(ip: &str, port: u16, user_agent: &str, path: &str, cookie: Option<&str>) -> Value {
    let mut event = json!({
        "method": "GET",
        "path": path,
        "headers": {"Host": "shop.example", "User-Agent": user_agent},
        "uuid": SENSOR,
        "peer": {"ip": ip, "port": port},
        "status": 200,
    });
    if let Some(cookie) = cookie {
        event["headers"]["Cookie"] = json!(format!("sess_uuid={cookie}"));
        event["cookies"] = json!({"sess_uuid": cookie});
    }
    event
}

fn sess_uuid(service: &TestService, event: &Value) -> String {
    service.post_event(event)["sess_uuid"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn with_limits(limits: SessionLimits) -> SnareConfig {
    SnareConfig { limits, ..config() }
}

#[test]
fn cookieless_clients_share_a_session_per_ip_and_user_agent() {
    let service = TestService::start(config());
    let a = sess_uuid(
        &service,
        &request("203.0.113.7", 50001, "curl/8.0", "/", None),
    );
    // Another source port of the same client: the port is no part of identity.
    assert_eq!(
        sess_uuid(
            &service,
            &request("203.0.113.7", 50002, "curl/8.0", "/a", None)
        ),
        a
    );
    assert_eq!(
        sess_uuid(
            &service,
            &request("203.0.113.7", 50003, "curl/8.0", "/b", None)
        ),
        a
    );
    let new_agent = sess_uuid(
        &service,
        &request("203.0.113.7", 50004, "Wget/1.21", "/", None),
    );
    let new_ip = sess_uuid(
        &service,
        &request("203.0.113.8", 50001, "curl/8.0", "/", None),
    );
    assert_ne!(new_agent, a);
    assert_ne!(new_ip, a);
    assert_ne!(new_ip, new_agent);
    // No user agent at all is an identity of its own too.
    let mut anonymous = request("203.0.113.7", 50005, "", "/", None);
    anonymous["headers"] = json!({"Host": "shop.example"});
    let none = sess_uuid(&service, &anonymous);
    assert_eq!(sess_uuid(&service, &anonymous), none);
    assert!(![&a, &new_agent, &new_ip].contains(&&none));

    let (stats, ended) = service.shutdown();
    assert_eq!((stats.events, stats.shut_down), (7, 4));
    let mut counts: Vec<_> = ended
        .iter()
        .map(|s| (s.sess_uuid.to_string(), s.count))
        .collect();
    counts.sort();
    let mut expected = vec![(a, 3), (new_agent, 1), (new_ip, 1), (none, 2)];
    expected.sort();
    assert_eq!(counts, expected);
}

#[test]
fn a_client_returning_its_cookie_continues_its_session() {
    let service = TestService::start(config());
    let first = service.post_event(&request("203.0.113.7", 50001, "Mozilla/5.0", "/", None));
    let a = first["sess_uuid"].as_str().unwrap().to_owned();
    // Tanner would start a new session here: the cookie is never the key it files under.
    let second = request("203.0.113.7", 50002, "Mozilla/5.0", "/shop.html", Some(&a));
    assert_eq!(sess_uuid(&service, &second), a);
    // The cookie decides even when the address and user agent change.
    let roaming = request(
        "198.51.100.20",
        41000,
        "Mozilla/5.0 (Android)",
        "/cart.html",
        Some(&a),
    );
    assert_eq!(sess_uuid(&service, &roaming), a);
    // A cookie naming no live session falls back to the client.
    let stale = "0b9ab2a4-6f3e-4c55-9a3b-2f4a0c6e1d11";
    assert_eq!(
        sess_uuid(
            &service,
            &request("203.0.113.7", 50003, "Mozilla/5.0", "/", Some(stale))
        ),
        a
    );
    let (stats, ended) = service.shutdown();
    assert_eq!(stats.shut_down, 1);
    assert_eq!(ended.len(), 1);
    let paths: Vec<_> = ended[0]
        .paths
        .iter()
        .map(|p| p.path.as_deref().unwrap())
        .collect();
    assert_eq!(paths, ["/", "/shop.html", "/cart.html", "/"]);
    assert_eq!(ended[0].count, 4);
}

#[test]
fn an_ended_session_holds_exactly_the_spec_attributes() {
    let service = TestService::start(config());
    let mut first = request("203.0.113.7", 51234, "Mozilla/5.0", "/index.html", None);
    first["headers"]["Referer"] = json!("https://www.example.org/search?q=shop#top");
    first["cookies"] = json!({" theme": "dark", "sess_uuid": null});
    first["timestamp"] = json!(1714564800.25);
    let a = sess_uuid(&service, &first);
    let mut xss = request(
        "203.0.113.7",
        51240,
        "Mozilla/5.0",
        "/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        Some(&a),
    );
    xss["cookies"]["theme"] = json!("light");
    xss["status"] = json!(404);
    xss["timestamp"] = json!(1714564801.5);
    assert_eq!(sess_uuid(&service, &xss), a);
    let mut post = request("203.0.113.7", 51241, "Mozilla/5.0", "/login.php", Some(&a));
    post["method"] = json!("POST");
    post["post_data"] = json!({"user": "admin'--", "pass": "x"});
    post["timestamp"] = json!(1714564803.0);
    assert_eq!(sess_uuid(&service, &post), a);

    let (_, ended) = service.shutdown();
    assert_eq!(
        serde_json::to_value(&ended).unwrap(),
        json!([{
            "ip": "203.0.113.7",
            "port": 51234,
            "user_agent": "Mozilla/5.0",
            "snare_uuid": SENSOR,
            "paths": [
                {"path": "/index.html", "timestamp": 1714564800.25, "response_status": 200, "attack_type": "index"},
                {"path": "/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", "timestamp": 1714564801.5, "response_status": 404, "attack_type": "xss"},
                {"path": "/login.php", "timestamp": 1714564803.0, "response_status": 200, "attack_type": "sqli"},
            ],
            "sess_uuid": a,
            "start_timestamp": 1714564800.25,
            "timestamp": 1714564803.0,
            "count": 3,
            "cookies": {"theme": "light", "sess_uuid": a},
            "referer": "/search",
            // What the emulators answered: `user` names no column, Tanner's syntax error.
            "emulation": {"sql": [{"input": "admin'--", "output": "SQL ERROR: near user: syntax error"}]},
        }])
    );
    assert_eq!(ended[0].paths[1].attack_type, AttackType::Xss);
}

#[test]
fn sessions_expire_after_a_short_timeout() {
    let service = TestService::start(with_limits(SessionLimits::new(
        Duration::from_secs_f64(0.5),
        1000,
    )));
    let started = Instant::now();
    let a = sess_uuid(
        &service,
        &request("203.0.113.7", 50001, "curl/8.0", "/", None),
    );
    assert_eq!(
        sess_uuid(
            &service,
            &request("203.0.113.7", 50001, "curl/8.0", "/a", None)
        ),
        a
    );
    // Idle 0.5 s, swept within the next second.
    let ended = service.wait_for_ended(1, Duration::from_secs(5));
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "ended after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "ended after {:?}",
        started.elapsed()
    );
    assert_eq!(
        (ended[0].sess_uuid.to_string(), ended[0].count),
        (a.clone(), 2)
    );
    assert_eq!(service.stats().expired, 1);
    assert_eq!(service.stats().live_sessions, 0);
    // The client's next request starts a new session, even with the old cookie.
    let b = sess_uuid(
        &service,
        &request("203.0.113.7", 50001, "curl/8.0", "/", Some(&a)),
    );
    assert_ne!(b, a);
    let (stats, ended) = service.shutdown();
    assert_eq!((stats.expired, stats.shut_down), (1, 1));
    assert_eq!(ended[1].sess_uuid.to_string(), b);
}

#[test]
fn beyond_max_sessions_the_least_recently_active_ends_early() {
    let service = TestService::start(with_limits(SessionLimits::new(
        Duration::from_secs_f64(75.0),
        3,
    )));
    let ip = |n: u8| format!("192.0.2.{n}");
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(sess_uuid(
            &service,
            &request(&ip(n), 40000, "curl/8.0", "/", None),
        ));
    }
    // Client 1 is active again: client 2 is now the least recently active.
    assert_eq!(
        sess_uuid(
            &service,
            &request(&ip(1), 40000, "curl/8.0", "/again", None)
        ),
        ids[0]
    );
    for n in 4..=5 {
        ids.push(sess_uuid(
            &service,
            &request(&ip(n), 40000, "curl/8.0", "/", None),
        ));
    }
    // Handed on before the answer; collected a moment later.
    let evicted: Vec<_> = service
        .wait_for_ended(2, Duration::from_secs(5))
        .iter()
        .map(|s| s.sess_uuid.to_string())
        .collect();
    assert_eq!(evicted, [ids[1].clone(), ids[2].clone()]);
    let stats = service.stats();
    assert_eq!((stats.evicted, stats.live_sessions), (2, 3));
    let (stats, ended) = service.shutdown();
    assert_eq!((stats.evicted, stats.shut_down), (2, 3));
    let at_shutdown: Vec<_> = ended[2..].iter().map(|s| s.sess_uuid.to_string()).collect();
    assert_eq!(
        at_shutdown,
        [ids[0].clone(), ids[3].clone(), ids[4].clone()]
    );
}

#[test]
fn shutdown_hands_on_every_live_session() {
    let service = TestService::start(config());
    for n in 0..250u16 {
        let ip = format!("198.51.100.{}", n % 250);
        service.post_event(&request(
            &ip,
            30000 + n,
            &format!("agent/{}", n / 125),
            "/",
            None,
        ));
    }
    assert_eq!(service.stats().live_sessions, 250);
    let (stats, ended) = service.shutdown();
    assert_eq!(
        (stats.events, stats.shut_down, stats.live_sessions),
        (250, 250, 0)
    );
    assert_eq!(ended.len(), 250);
    assert!(
        ended
            .iter()
            .all(|s| s.count == 1 && s.paths[0].attack_type == AttackType::Index)
    );
}

#[test]
fn a_stalled_request_delays_shutdown_only_by_the_grace_period() {
    use std::io::Write as _;
    let dir = flowmon_tests::process::TempDir::new("snare-stalled");
    let service = TestService::start(SnareConfig {
        event_log: Some(dir.path().join("events.json")),
        ..config()
    });
    let a = sess_uuid(
        &service,
        &request("203.0.113.7", 50001, "curl/8.0", "/", None),
    );
    let mut stalled = std::net::TcpStream::connect(service.addr()).unwrap();
    stalled
        .write_all(b"POST /event HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pa")
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the handler waits for the rest of the body",
        || service.metrics().events_in_flight_count() == 1,
    );
    let started = Instant::now();
    let (stats, ended) = service.shutdown();
    // Five seconds for the request in flight, then it is cut off.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(4900) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_eq!((stats.events, stats.shut_down), (1, 1));
    assert_eq!(ended[0].sess_uuid.to_string(), a);
    let log = std::fs::read_to_string(dir.path().join("events.json")).unwrap();
    assert_eq!(log.lines().count(), 1);
    drop(stalled);
}
