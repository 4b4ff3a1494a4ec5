//! `cargo xtask bench analyzer`: the session analyzer against a local redis-server.
//!
//! - Throughput: ended sessions handed to the analyzer as fast as it takes them, each joined
//!   with its peer's flow records in Redis and stored; timed until the last is in Redis.
//! - Latency: sessions made over HTTP through the SNARE service, with a short session timeout;
//!   for each, the time from its last request until its analysis is in Redis.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use flowmon::{
    analyzer::{Analyzer, GeoIp, RedisFlowSource, ReverseDns, SessionWrites},
    metrics::{AnalyzerMetrics, SnareMetrics},
    sinks::redis::FlowWrites,
    snare::{HANDOFF_CAPACITY, Service, Session, SessionLimits, SnareConfig},
    store::{Connection, Patience, RedisTarget},
};
use flowmon_tests::{
    analyzer_support::{analyse_into, store},
    process::TempDir,
    redis_server::RedisServer,
    snare_service,
};
use redis::Commands as _;
use serde_json::{Value, json};

const SESSIONS: u32 = 50_000;
const REQUESTS_PER_SESSION: u32 = 5;
const SENSORS: [&str; 4] = [
    "78e51180-bf0d-4757-8a04-f000e5efa179",
    "9c10172f-7ce2-4fb4-b1c6-abc70141db56",
    "3f1c8a0e-52d4-4b6e-9a7d-0c2b4e6f8a10",
    "0b9ab2a4-6f3e-4c55-9a3b-2f4a0c6e1d11",
];
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const T: f64 = 1_700_000_000.0;
/// The latency run: its session timeout and its number of sessions.
const LATENCY_TIMEOUT: f64 = 1.0;
const LATENCY_SESSIONS: u32 = 200;
const TARGET_PER_SECOND: f64 = 5_000.0;
/// Beyond the session timeout: a sweep every second, then the analysis and the write.
const TARGET_SLACK: f64 = 2.0;

/// Peer `i`, in the benchmarking range 198.18.0.0/15.
fn peer(i: u32) -> String {
    Ipv4Addr::from(0xc612_0000 + i).to_string()
}

fn analyzer(redis: &RedisServer, session_timeout: f64) -> Analyzer {
    let flows = RedisFlowSource::new(
        Connection::open(
            &RedisTarget::new(redis.url(), false).expect("Redis URL"),
            Patience::READ,
        )
        .expect("Redis URL"),
        "sensor".into(),
    );
    Analyzer::new(
        Duration::from_secs_f64(session_timeout),
        GeoIp::default(),
        ReverseDns::system(Duration::from_secs(2)),
        Some(Arc::new(flows)),
        Default::default(),
    )
}

/// Session `i`: [`REQUESTS_PER_SESSION`] requests, one of them an lfi.
fn session(i: u32) -> Session {
    let start = T + f64::from(i) * 0.01;
    let paths: Vec<Value> = (0..REQUESTS_PER_SESSION)
        .map(|n| {
            let (path, attack) = if n == 2 {
                ("/?f=/etc/passwd", "lfi")
            } else {
                ("/index.html", "index")
            };
            json!({"path": path, "timestamp": start + f64::from(n), "response_status": 200,
                   "attack_type": attack})
        })
        .collect();
    serde_json::from_value(json!({
        "ip": peer(i), "port": 40000, "user_agent": BROWSER,
        "snare_uuid": SENSORS[i as usize % SENSORS.len()], "paths": paths,
        "sess_uuid": format!("00000000-0000-4000-8000-{i:012x}"),
        "start_timestamp": start, "timestamp": start + f64::from(REQUESTS_PER_SESSION - 1),
        "count": REQUESTS_PER_SESSION, "cookies": {"sess_uuid": null}, "referer": null,
    }))
    .expect("a valid session")
}

/// One flow record of each peer, written as the flow monitor writes them.
fn seed_flows(runtime: &tokio::runtime::Runtime, redis: &RedisServer, state: &TempDir) {
    let writes = FlowWrites::default();
    runtime.block_on(async {
        let store = store(&redis.url(), state.path());
        for i in 0..SESSIONS {
            let first_seen = T + f64::from(i) * 0.01 - 1.0;
            let record = serde_json::from_value(json!({
                "flow_id": format!("flow{i}"), "record_id": format!("flow{i}:0"), "sequence": 0,
                "sensor_id": "sensor", "iface": "eth0", "record_type": "final",
                "end_reason": "end", "time": first_seen + 10.0, "protocol": "tcp",
                "community_id": "1:bench", "client_ip": peer(i), "client_port": 41000,
                "server_ip": "192.0.2.10", "server_port": 80, "vlan": 0, "client_packets": 12,
                "client_bytes": 1500, "server_packets": 10, "server_bytes": 9000,
                "client_packets_delta": 12, "client_bytes_delta": 1500,
                "server_packets_delta": 10, "server_bytes_delta": 9000,
                "client_tcp_flags": 0x1b, "server_tcp_flags": 0x1b, "tcp_state": "closed",
                "client_ttl": 52, "server_ttl": 64, "client_mac": "02:00:00:00:00:01",
                "server_mac": "02:00:00:00:00:02", "first_seen": first_seen,
                "last_seen": first_seen + 9.0,
            }))
            .expect("a valid flow record");
            store.submit(writes.write(&record));
        }
        store.close().await;
    });
}

fn stored(connection: &mut redis::Connection) -> usize {
    SENSORS
        .iter()
        .map(|sensor| connection.zcard::<_, usize>(*sensor).expect("ZCARD"))
        .sum()
}

/// Sessions analysed and stored per second.
fn throughput(runtime: &tokio::runtime::Runtime) -> f64 {
    let redis = RedisServer::start();
    let state = TempDir::new("bench-analyzer");
    seed_flows(runtime, &redis, &state);
    let sessions: Vec<Session> = (0..SESSIONS).map(session).collect();
    let mut connection = redis::Client::open(redis.url())
        .and_then(|client| client.get_connection())
        .expect("connect to Redis");

    let store = store(&redis.url(), state.path());
    let started = Instant::now();
    // The analyzer's Redis connection is made inside the runtime.
    let analysed = runtime.block_on(async {
        analyse_into(
            analyzer(&redis, 75.0),
            &store,
            SessionWrites::new(None),
            sessions,
        )
        .await
    });
    assert_eq!(analysed, u64::from(SESSIONS));
    while stored(&mut connection) < SESSIONS as usize {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "sessions missing: {:?}",
            store.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed().as_secs_f64();
    runtime.block_on(store.close());
    // What was measured did join: each peer has one flow.
    let sample: Vec<String> = connection.zrange(SENSORS[0], 0, 0).expect("ZRANGE");
    let sample: Value = serde_json::from_str(&sample[0]).expect("JSON member");
    assert_eq!(sample["network"]["flows"], 1, "{sample}");
    f64::from(SESSIONS) / elapsed
}

/// Seconds from each session's last request until it is in Redis, sorted.
fn latencies(runtime: &tokio::runtime::Runtime) -> Vec<f64> {
    let redis = RedisServer::start();
    let state = TempDir::new("bench-analyzer-latency");
    let store = store(&redis.url(), state.path());
    let config = SnareConfig {
        limits: SessionLimits::new(Duration::from_secs_f64(LATENCY_TIMEOUT), 100_000),
        ..snare_service::config()
    };
    let (service, consumer) = runtime.block_on(async {
        let (ended, ended_rx) = tokio::sync::mpsc::channel(HANDOFF_CAPACITY);
        let consumer = analyzer(&redis, LATENCY_TIMEOUT).spawn(
            ended_rx,
            Some(store.clone()),
            SessionWrites::new(None),
            AnalyzerMetrics::default(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let service = Service::serve(listener, &config, ended, None, SnareMetrics::default())
            .expect("start the SNARE service");
        (service, consumer)
    });
    let client = reqwest::blocking::Client::new();
    let url = format!("http://{}/event", service.local_addr());
    // Session uuid (32 hex digits) -> when its last request was answered.
    let mut last_request = HashMap::new();
    for i in 0..LATENCY_SESSIONS {
        for n in 0..3 {
            let event = json!({
                "method": "GET", "path": format!("/page{n}"), "uuid": SENSORS[0],
                "headers": {"User-Agent": BROWSER}, "peer": {"ip": peer(i), "port": 40000},
                "status": 200,
            });
            let answer: Value = client
                .post(&url)
                .body(event.to_string())
                .send()
                .and_then(|response| response.json())
                .expect("an answer to the event");
            let sess_uuid = answer["response"]["message"]["sess_uuid"]
                .as_str()
                .expect("a session uuid")
                .replace('-', "");
            last_request.insert(sess_uuid, Instant::now());
        }
        // Spread over about two sweeps.
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut connection = redis::Client::open(redis.url())
        .and_then(|client| client.get_connection())
        .expect("connect to Redis");
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !last_request.is_empty() {
        assert!(Instant::now() < deadline, "sessions never stored");
        let members: Vec<String> = connection.zrange(SENSORS[0], 0, -1).expect("ZRANGE");
        let now = Instant::now();
        for member in members {
            let analysis: Value = serde_json::from_str(&member).expect("JSON member");
            if let Some(at) = last_request.remove(analysis["sess_uuid"].as_str().unwrap_or("")) {
                latencies.push((now - at).as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    runtime.block_on(async {
        service.shutdown().await;
        consumer.await.expect("the analyzer ends");
        store.close().await;
    });
    latencies.sort_by(f64::total_cmp);
    latencies
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let per_second = throughput(&runtime);
    let latencies = latencies(&runtime);
    let quantile = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let limit = LATENCY_TIMEOUT + TARGET_SLACK;
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!("## Session analyzer");
    println!();
    println!(
        "{SESSIONS} sessions of {REQUESTS_PER_SESSION} requests, each joined with its peer's \
         flows in Redis; latency over {LATENCY_SESSIONS} sessions made over HTTP with \
         --session-timeout {LATENCY_TIMEOUT}."
    );
    println!();
    println!("| measure | value | target | |");
    println!("|---|---|---|---|");
    println!(
        "| sessions analysed and stored per second | {per_second:.0} | >= {TARGET_PER_SECOND:.0} | {} |",
        verdict(per_second >= TARGET_PER_SECOND)
    );
    for (name, q) in [("median", 0.5), ("p99", 0.99), ("max", 1.0)] {
        let seconds = quantile(q);
        println!(
            "| last request to stored, {name} | {seconds:.2} s | <= timeout + {TARGET_SLACK} s = {limit} s | {} |",
            verdict(seconds <= limit)
        );
    }
}
