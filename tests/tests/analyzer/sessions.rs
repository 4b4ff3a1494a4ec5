//! The session analyzer end to end: Tanner's worked example, every owner rule, the join with
//! flows in Redis, locations, and storage in a real redis-server read back as Tanner's readers
//! parse it, through outages and from `flowmon replay`.

use std::{collections::HashSet, path::Path, sync::Arc, time::Duration};

use flowmon::{
    analyzer::{GeoIp, RedisFlowSource, SessionWrites},
    sinks::redis::FlowWrites,
    snare::Session,
    store::{Connection, Patience, RedisTarget},
};
use flowmon_tests::analyzer_support::*;
use flowmon_tests::wait::wait_for_async;
use flowmon_tests::{
    process::{TempDir, flowmon_replay_with_env},
    redis_server::RedisServer,
};
use redis::Commands as _;
use serde_json::{Value, json};

/// 2023-11-14T22:13:20Z.
const T: f64 = 1_700_000_000.0;

/// Tanner's fixture (`tanner/tests/test_session_analyzer.py`), byte for byte: 24 requests of
/// which 6 were kept, and their times.
const TANNER_SESSION: &str = concat!(
    r#"{"sess_uuid": "c546114f97f548f982756495f963e280", "start_time": 1466091813.4780173, "#,
    r#""referer": "/","#,
    r#""user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "#,
    r#"Chrome/53.0.2767.4 Safari/537.36", "end_time": 1466091899.9854035, "#,
    r#""snare_uuid": "78e51180-bf0d-4757-8a04-f000e5efa179", "count": 24, "#,
    r#""paths": [{"timestamp": 1466091813.4779778, "path": "/", "attack_type": "index", "response_status": 200},"#,
    r#"{"timestamp": 1466091842.7088752, "path": "/fluent-python.html", "attack_type": "index", "#,
    r#""response_status": 200}, {"timestamp": 1466091858.214475, "path": "/wow-movie.html?exec=/bin/bash", "#,
    r#""attack_type": "index", "response_status": 200}, {"timestamp": 1466091871.9076045, "#,
    r#""path": "/wow-movie.html?exec=/etc/passwd", "attack_type": "lfi", "response_status": 200},"#,
    r#"{"timestamp": 1466091885.1003792, "path": "/wow-movie.html?exec=/bin/bash", "attack_type": "index", "#,
    r#""response_status": 200}, {"timestamp": 1466091899.9854052, "#,
    r#""path": "/wow-movie.html?exec=/../../../..///././././.../../../etc/passwd","#,
    r#" "attack_type": "lfi", "response_status": 200}], "#,
    r#""peer": {"port": 56970, "ip": "74.217.37.84"}, "#,
    r#""cookies": {"sess_uuid": "c546114f97f548f982756495f963e280"}}"#,
);

/// Tanner's session as the SNARE service ends it.
fn tanner_session() -> (Value, Session) {
    let tanner: Value = serde_json::from_str(TANNER_SESSION).unwrap();
    let session = serde_json::from_value(json!({
        "ip": tanner["peer"]["ip"], "port": tanner["peer"]["port"],
        "user_agent": tanner["user_agent"], "snare_uuid": tanner["snare_uuid"],
        "paths": tanner["paths"], "sess_uuid": tanner["sess_uuid"],
        "start_timestamp": tanner["start_time"], "timestamp": tanner["end_time"],
        "count": tanner["count"], "cookies": tanner["cookies"], "referer": tanner["referer"],
    }))
    .unwrap();
    (tanner, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tanners_worked_example_is_stored_with_tanners_figures_and_types() {
    let redis = RedisServer::start();
    let state = TempDir::new("analyzer-tanner");
    let (tanner, session) = tanner_session();
    let analysed = analyse_and_store(
        analyzer(None, GeoIp::default()),
        &redis.url(),
        state.path(),
        vec![session],
    )
    .await;
    assert_eq!(analysed, 1);

    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let [(stored, score)] = &stored_sessions(&mut connection, SENSOR)[..] else {
        panic!("one session stored");
    };
    assert_eq!(*score, 1466091813.4780173);
    // serde_json's numbers keep JSON's kind: 24 is an integer, 1.0 a float, as json.loads
    // makes them int and float.
    assert_eq!(
        *stored,
        json!({
            "sess_uuid": "c546114f97f548f982756495f963e280",
            "peer_ip": "74.217.37.84",
            "peer_port": 56970,
            "location": "NA",
            "user_agent": tanner["user_agent"],
            "snare_uuid": SENSOR,
            "start_time": 1466091813.4780173,
            "end_time": 1466091899.9854035,
            "requests_in_second": 0.277432957486547,
            "approx_time_between_requests": 14.417904575665792,
            "accepted_paths": 24,
            "errors": 0,
            "hidden_links": 0,
            "attack_types": ["index", "index", "index", "lfi", "index", "lfi"],
            "attack_count": {"lfi": 2, "index": 4},
            "paths": tanner["paths"],
            "cookies": {"sess_uuid": "c546114f97f548f982756495f963e280"},
            "referer": "/",
            "possible_owners": {"attacker": 1.0},
            "network": null,
            "emulation": {},
        })
    );
    assert!(stored["possible_owners"]["attacker"].is_f64());
    assert!(stored["accepted_paths"].is_u64());
    let ids: Vec<String> = connection.smembers("snare_ids").unwrap();
    assert_eq!(ids, [SENSOR]);
    // Only Tanner's two keys: no raw session copy left behind.
    assert_eq!(
        keys(&mut connection),
        HashSet::from([SENSOR, "snare_ids"].map(String::from))
    );
}

#[tokio::test]
async fn every_owner_rule_applies() {
    let fast = |ip, user_agent| {
        let requests: Vec<(&str, f64, &str)> = (0..30)
            .map(|i| ("/", T + f64::from(i) * 0.03, "index"))
            .collect();
        session(SENSOR, ip, user_agent, &requests)
    };
    let slow = |ip, user_agent, path: &'static str, attack: &'static str| {
        session(
            SENSOR,
            ip,
            user_agent,
            &[("/", T, "index"), (path, T + 5.0, attack)],
        )
    };
    let mut referred = fast("203.0.113.3", Some("curl/8.0"));
    referred.referer = Some("/".into());
    let scanner = "203.0.113.20";
    let prober = "203.0.113.21";
    let mut flows: Vec<_> = [21, 22, 23, 25, 80, 443]
        .into_iter()
        .map(|port: u16| {
            flow_record(
                json!({"flow_id": format!("scan{port}"), "client_ip": scanner,
                               "server_port": port, "first_seen": T - 10.0, "last_seen": T - 9.0}),
            )
        })
        .collect();
    flows.extend((0..3).map(|i| {
        flow_record(json!({"flow_id": format!("syn{i}"), "client_ip": prober,
                           "client_tcp_flags": 0x02, "server_tcp_flags": 0x14,
                           "tcp_state": "rst", "first_seen": T - 5.0, "last_seen": T - 5.0}))
    }));
    let cases = [
        (
            "robots.txt",
            slow("203.0.113.1", Some(BROWSER), "/robots.txt", "index"),
            json!({"crawler": 1.0}),
        ),
        (
            "fast tool",
            fast("203.0.113.2", Some("curl/8.0")),
            json!({"user": 0.15, "tool": 0.85, "crawler": 0.5}),
        ),
        (
            "fast crawler",
            fast("203.0.113.2", Some(GOOGLEBOT)),
            json!({"user": 0.15, "tool": 0.15, "crawler": 0.85}),
        ),
        (
            "fast with a referer",
            referred,
            json!({"user": 0.5, "tool": 0.5}),
        ),
        (
            "Googlebot named by reverse DNS",
            slow(GOOGLEBOT_IP, Some(GOOGLEBOT), "/a", "index"),
            json!({"user": 0.25, "tool": 0.15, "crawler": 0.75, "attacker": 0.25}),
        ),
        (
            "Googlebot's user agent elsewhere",
            slow("203.0.113.4", Some(GOOGLEBOT), "/a", "index"),
            json!({"user": 0.25, "tool": 0.15, "crawler": 0.25, "attacker": 0.75}),
        ),
        (
            "template injection",
            slow(
                "203.0.113.5",
                Some(BROWSER),
                "/?q={{7*7}}",
                "template_injection",
            ),
            json!({"attacker": 1.0}),
        ),
        (
            "lfi from a crawler",
            slow("203.0.113.6", Some(GOOGLEBOT), "/?f=/etc/passwd", "lfi"),
            json!({"tool": 0.15, "crawler": 0.25, "attacker": 1.0}),
        ),
        (
            "hidden link",
            slow("203.0.113.7", Some(BROWSER), DORK, "index"),
            json!({"user": 0.5, "attacker": 0.5}),
        ),
        (
            "loopback",
            slow("127.0.0.1", Some(BROWSER), "/a", "index"),
            json!({"user": 1.0, "admin": 1.0}),
        ),
        (
            "a user",
            slow("203.0.113.8", None, "/a", "index"),
            json!({"user": 1.0}),
        ),
        (
            "port scan",
            slow(scanner, Some(BROWSER), "/a", "index"),
            json!({"user": 0.15, "tool": 0.85}),
        ),
        (
            "half-open connections",
            slow(prober, Some(BROWSER), "/a", "index"),
            json!({"user": 0.25, "tool": 0.75}),
        ),
    ];
    let analyzer = analyzer(Some(Arc::new(RecordedFlows(flows))), GeoIp::default());
    for (rule, session, owners) in cases {
        let analysis = serde_json::to_value(analyzer.analyse(session).await).unwrap();
        assert_eq!(analysis["possible_owners"], owners, "{rule}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_carry_their_peers_flows_from_redis() {
    let redis = RedisServer::start();
    let state = TempDir::new("analyzer-join");
    // The flow monitor's writes, as it makes them.
    let flow_writes = FlowWrites::default();
    let records = [
        // The HTTP connection: an interim record, then the final one.
        flow_record(
            json!({"flow_id": "http", "sequence": 0, "record_type": "interim",
                           "client_packets": 4, "client_bytes": 400, "server_packets": 3,
                           "server_bytes": 2000, "first_seen": T + 99.0, "last_seen": T + 105.0}),
        ),
        flow_record(
            json!({"flow_id": "http", "sequence": 1, "first_seen": T + 99.0,
                           "last_seen": T + 112.0}),
        ),
        // A SYN to port 22 that got an RST, within the timeout before the first request.
        flow_record(
            json!({"flow_id": "ssh", "server_port": 22, "client_tcp_flags": 0x02,
                           "server_tcp_flags": 0x14, "client_packets": 1, "client_bytes": 74,
                           "server_packets": 1, "server_bytes": 60, "client_ttl": 49,
                           "community_id": "1:ssh", "first_seen": T + 30.0,
                           "last_seen": T + 30.5}),
        ),
        // Ended before that, began after the session, or seen by another sensor.
        flow_record(
            json!({"flow_id": "old", "server_port": 8080, "first_seen": T,
                           "last_seen": T + 10.0}),
        ),
        flow_record(
            json!({"flow_id": "later", "server_port": 8081, "first_seen": T + 200.0,
                           "last_seen": T + 201.0}),
        ),
        flow_record(
            json!({"flow_id": "elsewhere", "sensor_id": "other", "server_port": 8082,
                           "first_seen": T + 100.0, "last_seen": T + 101.0}),
        ),
    ];
    let store = store(&redis.url(), state.path());
    for record in &records {
        store.submit(flow_writes.write(record));
    }
    let session = session(
        SENSOR,
        "203.0.113.50",
        Some(BROWSER),
        &[("/", T + 100.0, "index"), ("/about", T + 110.0, "index")],
    );
    let id = hex_id(&session);
    let flows = RedisFlowSource::new(read_connection(&redis.url()), "sensor".into());
    // The flows are in Redis before the session ends, as its timeout guarantees.
    store.close().await;
    let analyzer = analyzer(Some(Arc::new(flows)), GeoIp::default());
    analyse_and_store(analyzer, &redis.url(), state.path(), vec![session]).await;

    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let [(stored, _)] = &stored_sessions(&mut connection, SENSOR)[..] else {
        panic!("one session stored");
    };
    assert_eq!(stored["sess_uuid"], id);
    assert_eq!(
        stored["network"],
        json!({
            "source": "redis", "flows": 2,
            "packets_from_peer": 11, "bytes_from_peer": 1074,
            "packets_to_peer": 9, "bytes_to_peer": 6060,
            "server_ports": [22, 80], "server_port_count": 2,
            "half_open": 1,
            "community_ids": ["1:ssh", "1:f"],
            "first_ttl": 49,
        })
    );
}

/// A Redis to which no flow monitor has written a record counts no flows: the session's
/// `network` is null, never zeros that would say the peer sent nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_flow_records_in_redis_network_is_null() {
    let redis = RedisServer::start();
    let state = TempDir::new("analyzer-no-flows");
    let session = session(SENSOR, "203.0.113.51", Some(BROWSER), &[("/", T, "index")]);
    let flows = RedisFlowSource::new(read_connection(&redis.url()), "sensor".into());
    let analyzer = analyzer(Some(Arc::new(flows)), GeoIp::default());
    analyse_and_store(analyzer, &redis.url(), state.path(), vec![session]).await;
    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let [(stored, _)] = &stored_sessions(&mut connection, SENSOR)[..] else {
        panic!("one session stored");
    };
    assert_eq!(stored["network"], Value::Null);
}

#[tokio::test]
async fn locations_come_from_a_maxmind_city_database() {
    let dir = TempDir::new("analyzer-geoip");
    let db = dir.path().join("city.mmdb");
    write_city_db(&db);
    let analyzer = analyzer(None, GeoIp::open(Some(&db)).unwrap());
    let location = async |ip| {
        let session = session(SENSOR, ip, None, &[("/", T, "index")]);
        serde_json::to_value(analyzer.analyse(session).await).unwrap()["location"].clone()
    };
    assert_eq!(
        location("74.217.37.84").await,
        json!({"country": "United States", "country_code": "US", "city": "Smyrna",
               "zip_code": "30080"})
    );
    assert_eq!(
        location("81.2.69.160").await,
        json!({"country": "United Kingdom", "country_code": "GB", "city": "London",
               "zip_code": null})
    );
    assert_eq!(location("10.1.2.3").await, "NA");
    assert_eq!(location("2001:db8::1").await, "NA");
    assert_eq!(location("not an address").await, "NA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_analysed_while_redis_is_away_are_stored_once_it_is_back() {
    let mut redis = RedisServer::start();
    let state = TempDir::new("analyzer-outage");
    redis.stop();
    let store = store(&redis.url(), state.path());
    let sessions: Vec<Session> = (0..20)
        .map(|i| {
            let ip = format!("198.51.100.{i}");
            session(
                SENSOR,
                &ip,
                Some(BROWSER),
                &[("/", T + f64::from(i), "index")],
            )
        })
        .collect();
    let mut ids: Vec<String> = sessions.iter().map(hex_id).collect();
    let analysed = analyse_into(
        analyzer(None, GeoIp::default()),
        &store,
        SessionWrites::new(None),
        sessions,
    )
    .await;
    assert_eq!(analysed, 20);
    wait_for_async(Duration::from_secs(10), "sessions spooled", || async {
        (store.stats().spool_items > 0).then_some(())
    })
    .await;
    redis.restart();

    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    wait_for_async(
        Duration::from_secs(30),
        "the spooled sessions stored",
        || {
            let stored = connection.zcard::<_, usize>(SENSOR).unwrap();
            async move { (stored >= 20).then_some(()) }
        },
    )
    .await;
    store.close().await;
    let mut stored: Vec<String> = stored_sessions(&mut connection, SENSOR)
        .iter()
        .map(|(session, _)| session["sess_uuid"].as_str().unwrap().to_owned())
        .collect();
    stored.sort();
    ids.sort();
    assert_eq!(stored, ids);
    let sensors: Vec<String> = connection.smembers("snare_ids").unwrap();
    assert_eq!(sensors, [SENSOR]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_a_sensors_old_sessions_and_keeps_its_newest() {
    let redis = RedisServer::start();
    let state = TempDir::new("analyzer-retention");
    let store = store(&redis.url(), state.path());
    let writes = SessionWrites::new(Some(Duration::from_secs(100)));
    let analyzer = analyzer(None, GeoIp::default());
    let mut newest = Vec::new();
    // In order, as sessions end: each write trims what began 100 s before it.
    for (sensor, start) in [
        (SENSOR, T),
        (SENSOR, T + 10.0),
        (OTHER_SENSOR, T),
        (SENSOR, T + 120.0),
        (SENSOR, T + 130.0),
    ] {
        let session = session(sensor, "203.0.113.9", None, &[("/", start, "index")]);
        if start > T + 100.0 {
            newest.push(hex_id(&session));
        }
        let analysis = analyzer.analyse(session).await;
        store.submit(writes.write(&analysis).unwrap());
    }
    store.close().await;

    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let kept: Vec<(String, f64)> = stored_sessions(&mut connection, SENSOR)
        .into_iter()
        .map(|(session, score)| (session["sess_uuid"].as_str().unwrap().to_owned(), score))
        .collect();
    assert_eq!(
        kept,
        [
            (newest[0].clone(), T + 120.0),
            (newest[1].clone(), T + 130.0)
        ]
    );
    assert_eq!(stored_sessions(&mut connection, OTHER_SENSOR).len(), 1);
    // No key expires: a sensor's set never vanishes while snare_ids names it.
    assert_eq!(connection.ttl::<_, i64>(SENSOR).unwrap(), -1);
}

/// A line of Tanner's event log.
fn logged(ip: &str, user_agent: &str, path: &str, attack: &str, time: &str) -> String {
    json!({
        "method": "GET", "path": path,
        "headers": {"host": "shop.example", "user-agent": user_agent},
        "uuid": SENSOR, "peer": {"ip": ip, "port": 41000}, "status": 200,
        "cookies": {"sess_uuid": null},
        "response_msg": {"version": "0.6.0", "response": {"message": {
            "detection": {"name": attack, "order": 1, "type": 1, "version": "0.6.0"},
            "sess_uuid": "0b9ab2a4-6f3e-4c55-9a3b-2f4a0c6e1d11"}}},
        "timestamp": time,
    })
    .to_string()
}

/// Runs `flowmon replay` on `log` (lines of Tanner's event log), storing into `redis`, with `env`
/// added to flowmon's environment; what it printed.
fn replay_into(redis: &RedisServer, env: &[(&str, &Path)], log: &[String]) -> String {
    let dir = TempDir::new("analyzer-replay");
    let input = dir.path().join("tanner_report.json");
    std::fs::write(&input, log.join("\n")).unwrap();
    let state_dir = dir.path().to_str().unwrap();
    flowmon_replay_with_env(
        env,
        &["--redis-url", &redis.url(), "--state-dir", state_dir],
        &input,
    )
}

#[test]
fn flowmon_replay_analyses_and_stores_every_session() {
    let redis = RedisServer::start();
    let log = [
        logged(
            "203.0.113.7",
            "curl/8.0",
            "/",
            "index",
            "2024-05-01T12:00:00.000000",
        ),
        logged(
            "203.0.113.7",
            "curl/8.0",
            "/item?id=1%20UNION%20SELECT%201,2,3,4",
            "sqli",
            "2024-05-01T12:00:10.500000",
        ),
        logged(
            "198.51.100.9",
            BROWSER,
            "/robots.txt",
            "index",
            "2024-05-01T12:00:20.000000",
        ),
    ];
    let printed = replay_into(&redis, &[], &log);
    // Still printed, as without Redis.
    assert_eq!(printed.lines().count(), 2);

    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let summary: Vec<(String, Value, Value, f64)> = stored_sessions(&mut connection, SENSOR)
        .into_iter()
        .map(|(session, score)| {
            assert_eq!(session["sess_uuid"].as_str().unwrap().len(), 32);
            (
                session["peer_ip"].as_str().unwrap().to_owned(),
                session["attack_types"].clone(),
                session["possible_owners"].clone(),
                score,
            )
        })
        .collect();
    // 2024-05-01T12:00:00Z is 1714564800.
    assert_eq!(
        summary,
        [
            (
                "203.0.113.7".to_owned(),
                json!(["index", "sqli"]),
                json!({"attacker": 1.0}),
                1714564800.0
            ),
            (
                "198.51.100.9".to_owned(),
                json!(["index"]),
                json!({"crawler": 1.0}),
                1714564820.0
            ),
        ]
    );
    let sensors: Vec<String> = connection.smembers("snare_ids").unwrap();
    assert_eq!(sensors, [SENSOR]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dorks_come_from_tanners_set_in_redis() {
    let redis = RedisServer::start();
    let mut connection = read_connection(&redis.url());
    let shipped: HashSet<String> = flowmon::snare::dorks::shipped()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        flowmon::analyzer::load_dorks(&mut connection).await,
        shipped
    );
    redis.cli(&[
        "SADD",
        flowmon::snare::dorks::DORKS_KEY,
        "/hidden-a.html",
        "/hidden-b?x=",
    ]);
    let dorks = flowmon::analyzer::load_dorks(&mut connection).await;
    let mut expected: HashSet<String> = ["/hidden-a.html", "/hidden-b?x="]
        .into_iter()
        .map(str::to_owned)
        .collect();
    expected.extend(shipped);
    assert_eq!(dorks, expected);
}

/// `rediss://` with a password, the way a shared Redis is reached: the server's certificate is
/// checked against the CA named by `SSL_CERT_FILE` (the system's store otherwise).
#[test]
fn flowmon_replay_stores_through_tls_with_a_password() {
    let redis = RedisServer::start_tls();
    let log = [
        logged(
            "203.0.113.7",
            "curl/8.0",
            "/",
            "index",
            "2024-05-01T12:00:00.000000",
        ),
        logged(
            "198.51.100.9",
            BROWSER,
            "/",
            "index",
            "2024-05-01T12:00:20.000000",
        ),
    ];
    replay_into(&redis, &[("SSL_CERT_FILE", &redis.ca_file())], &log);
    // Both sessions are in: had the certificate or the password been refused, they would be
    // waiting in the spool instead.
    assert_eq!(redis.cli(&["ZCARD", SENSOR]).trim(), "2");
}

fn read_connection(url: &str) -> Connection {
    Connection::open(&RedisTarget::new(url, false).unwrap(), Patience::READ).unwrap()
}
