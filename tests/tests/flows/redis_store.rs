//! The Redis store and the flow sink against a real redis-server (and a 3-node Redis Cluster):
//! every record once, in order, through outages, a slow Redis, restarts and a full spool.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use flowmon::{
    flow::record::FlowRecord,
    sinks::redis::{
        DEFAULT_FLOW_STREAM_MAXLEN, FLOW_STREAM, FlowWrites, RedisFlowSink, peer_index,
    },
    store::{RedisTarget, Store, StoreConfig, StoreStats, spool::Spool},
};
use flowmon_tests::wait::{wait_for_async, wait_until};
use flowmon_tests::{
    process::{ChildGuard, TempDir, free_port, wait_for_port},
    redis_server::RedisServer,
};
use redis::{Commands as _, ConnectionLike, streams::StreamRangeReply};

const BASE_TIME: f64 = 1_700_000_000.0;
const RETENTION_SECS: i64 = 3600;
const SERVER_IP: &str = "192.0.2.1";

/// Record `i`: flow `i / 3`, sequence `i % 3`, from one of four clients to [`SERVER_IP`],
/// last seen `i` seconds after [`BASE_TIME`]. Every record serialises to the same length, so
/// that a full spool holds a prefix of them.
fn record(i: u32) -> FlowRecord {
    let flow_id = format!("flow{:05}", i / 3);
    let sequence = i % 3;
    let last_seen = BASE_TIME + f64::from(i);
    serde_json::from_value(serde_json::json!({
        "flow_id": flow_id, "record_id": format!("{flow_id}:{sequence}"), "sequence": sequence,
        "sensor_id": "sensor", "iface": "eth0",
        "record_type": if sequence == 2 { "final" } else { "interim" },
        "time": last_seen + 0.5, "protocol": "tcp", "community_id": "1:test",
        "client_ip": client_ip(i), "client_port": 40000, "server_ip": SERVER_IP,
        "server_port": 22, "vlan": 0, "client_packets": 1, "client_bytes": 60,
        "server_packets": 1, "server_bytes": 60, "client_packets_delta": 1,
        "client_bytes_delta": 60, "server_packets_delta": 1, "server_bytes_delta": 60,
        "client_tcp_flags": 2, "server_tcp_flags": 18, "tcp_state": "established",
        "client_ttl": 64, "server_ttl": 64, "client_mac": "02:00:00:00:00:01",
        "server_mac": "02:00:00:00:00:02", "first_seen": BASE_TIME, "last_seen": last_seen
    }))
    .expect("a valid flow record")
}

fn client_ip(i: u32) -> String {
    format!("198.51.100.{}", i % 4)
}

fn records(range: std::ops::Range<u32>) -> Vec<FlowRecord> {
    range.map(record).collect()
}

fn record_ids(records: &[FlowRecord]) -> Vec<String> {
    records.iter().map(|r| r.record_id.clone()).collect()
}

fn config(url: &str, state_dir: &Path, spool_max_bytes: u64) -> StoreConfig {
    StoreConfig {
        redis: RedisTarget::new(url, false).expect("a Redis URL"),
        spool_dir: state_dir.join("spool"),
        spool_max_bytes,
    }
}

const WRITES: FlowWrites = FlowWrites {
    maxlen: DEFAULT_FLOW_STREAM_MAXLEN,
    retention: Duration::from_secs(RETENTION_SECS as u64),
};

/// A store on `config` and the flow sink in front of it.
fn start(config: StoreConfig) -> (Store, RedisFlowSink) {
    let store = Store::start(config).expect("start the store");
    let sink = RedisFlowSink::new(store.clone(), WRITES);
    (store, sink)
}

/// Waits up to 30 s for `done` to hold of the store's stats.
async fn wait_for(store: &Store, what: &str, done: impl Fn(&StoreStats) -> bool) {
    wait_for_async(Duration::from_secs(30), what, || async {
        done(&store.stats()).then_some(())
    })
    .await
}

/// The record ids of the stream's entries, in stream order.
fn stream_record_ids(con: &mut impl ConnectionLike) -> Vec<String> {
    let reply: StreamRangeReply = con.xrange_all(FLOW_STREAM).expect("XRANGE");
    reply
        .ids
        .iter()
        .map(|entry| {
            let json: String = entry.get("record").expect("a record field");
            let record: FlowRecord = serde_json::from_str(&json).expect("a record");
            assert_eq!(
                entry.get::<String>("flow_id"),
                Some(record.flow_id.to_string())
            );
            record.record_id
        })
        .collect()
}

fn connect(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .and_then(|client| client.get_connection())
        .expect("connect to redis-server")
}

fn spool_dir(state_dir: &TempDir) -> PathBuf {
    state_dir.path().join("spool")
}

#[tokio::test]
async fn records_reach_the_stream_once_in_order_and_their_peer_indexes() {
    let server = RedisServer::start();
    let state = TempDir::new("store");
    let (store, sink) = start(config(&server.url(), state.path(), 1 << 30));
    let sent = records(0..1200);
    sink.write_all(&sent);
    wait_for(&store, "all written", |s| s.written == 1200).await;
    store.clone().close().await;

    assert_eq!(
        store.stats(),
        StoreStats {
            written: 1200,
            ..StoreStats::default()
        }
    );
    let mut con = connect(&server);
    assert_eq!(stream_record_ids(&mut con), record_ids(&sent));
    let first: StreamRangeReply = con.xrange_count(FLOW_STREAM, "-", "+", 1).unwrap();
    assert_eq!(
        first.ids[0].get::<String>("record_type").as_deref(),
        Some("interim")
    );

    for client in 0..4 {
        let key = peer_index(&client_ip(client));
        let expected: Vec<(String, f64)> = sent
            .iter()
            .filter(|r| r.client_ip.to_string() == client_ip(client))
            .map(|r| (serde_json::to_string(r).unwrap(), r.last_seen))
            .collect();
        let indexed: Vec<(String, f64)> = con.zrange_withscores(&key, 0, -1).unwrap();
        assert_eq!(indexed, expected, "{key}");
    }
    let server_index = peer_index(SERVER_IP);
    assert_eq!(con.zcard::<_, usize>(&server_index).unwrap(), 1200);
    let dedupe_set = "{flowmon:flows}:seen";
    assert_eq!(con.zcard::<_, usize>(dedupe_set).unwrap(), 1200);
    for key in [peer_index(&client_ip(0)), server_index, dedupe_set.into()] {
        let ttl: i64 = con.ttl(&key).unwrap();
        assert!(0 < ttl && ttl <= RETENTION_SECS, "TTL of {key}: {ttl}");
    }
    assert_eq!(
        std::fs::read_dir(spool_dir(&state)).unwrap().count(),
        0,
        "nothing was spooled"
    );
}

#[tokio::test]
async fn records_sent_while_redis_is_down_are_spooled_then_replayed_once_in_order() {
    let mut server = RedisServer::start();
    let state = TempDir::new("store-outage");
    let (store, sink) = start(config(&server.url(), state.path(), 1 << 30));
    let sent = records(0..700);
    sink.write_all(&sent[..300]);
    wait_for(&store, "first records written", |s| s.written == 300).await;
    server.cli(&["SAVE"]);
    server.stop();

    sink.write_all(&sent[300..]);
    wait_for(&store, "the rest spooled", |s| s.spool_items == 400).await;
    let stats = store.stats();
    assert_eq!((stats.written, stats.dropped), (300, 0));
    assert!(
        stats.redis_errors >= 1 && stats.spool_bytes > 0,
        "{stats:?}"
    );

    server.restart();
    wait_for(&store, "the spool replayed", |s| {
        s.written == 700 && s.spool_items == 0
    })
    .await;
    store.close().await;
    assert_eq!(stream_record_ids(&mut connect(&server)), record_ids(&sent));
    assert_eq!(std::fs::read_dir(spool_dir(&state)).unwrap().count(), 0);
}

#[tokio::test]
async fn records_redis_refuses_are_spooled_until_it_takes_them() {
    let server = RedisServer::start();
    let state = TempDir::new("store-refused");
    let (store, sink) = start(config(&server.url(), state.path(), 1 << 30));
    let sent = records(0..200);
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    server.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    sink.write_all(&sent);
    wait_for(&store, "everything spooled", |s| s.spool_items == 200).await;
    assert_eq!(store.stats().written, 0);

    server.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    wait_for(&store, "the spool replayed", |s| {
        s.written == 200 && s.spool_items == 0
    })
    .await;
    store.close().await;
    assert_eq!(stream_record_ids(&mut connect(&server)), record_ids(&sent));
}

#[tokio::test]
async fn a_close_leaves_what_a_hung_redis_did_not_take_to_the_next_start() {
    let server = RedisServer::start();
    let state = TempDir::new("store-close");
    let (store, sink) = start(config(&server.url(), state.path(), 1 << 30));
    let sent = records(0..300);
    sink.write_all(&sent[..1]);
    wait_for(&store, "connected", |s| s.written == 1).await;
    server.cli(&["CLIENT", "PAUSE", "60000", "WRITE"]);
    sink.write_all(&sent[1..]);
    let closing = Instant::now();
    store.clone().close().await;
    assert!(
        closing.elapsed() < Duration::from_secs(7),
        "close took {:?}",
        closing.elapsed()
    );
    let stats = store.stats();
    assert_eq!((stats.written, stats.spool_items), (1, 299), "{stats:?}");

    // The batch in flight at close went to the spool too (Redis dropped it with the
    // connection; had it been applied, its replay would be deduplicated).
    server.cli(&["CLIENT", "UNPAUSE"]);
    let (store, _sink) = start(config(&server.url(), state.path(), 1 << 30));
    wait_for(&store, "the spool replayed", |s| {
        s.written == 299 && s.spool_items == 0
    })
    .await;
    store.close().await;
    assert_eq!(stream_record_ids(&mut connect(&server)), record_ids(&sent));
}

#[tokio::test]
async fn a_write_applied_twice_is_one_stream_entry() {
    let server = RedisServer::start();
    let state = TempDir::new("store-twice");
    let (store, sink) = start(config(&server.url(), state.path(), 1 << 30));
    let sent = records(0..2);
    sink.write_all(&sent[..1]);
    wait_for(&store, "first write", |s| s.written == 1).await;
    // As after a restart of Redis: the script must be sent again.
    server.cli(&["SCRIPT", "FLUSH"]);
    // Its reply lost, the first record is written again.
    sink.write_all(&sent);
    store.clone().close().await;

    let stats = store.stats();
    assert_eq!((stats.written, stats.redis_errors), (3, 0));
    let mut con = connect(&server);
    assert_eq!(stream_record_ids(&mut con), record_ids(&sent));
    let indexed: usize = con.zcard(peer_index(&client_ip(0))).unwrap();
    assert_eq!(indexed, 1);
}

#[tokio::test]
async fn a_slow_redis_sends_the_backlog_to_the_spool() {
    let server = RedisServer::start();
    let state = TempDir::new("store-slow");
    let (store, sink) = start(config(&server.url(), state.path(), 1 << 30));
    let sent = records(0..12_000);
    sink.write_all(&sent[..1]);
    wait_for(&store, "connected", |s| s.written == 1).await;
    server.cli(&["CLIENT", "PAUSE", "3000", "WRITE"]);
    // The next batch hangs, sent; more than the 10,000 writes allowed in memory queue behind
    // it. It is abandoned to the spool, applied by Redis after the pause, and replayed.
    sink.write_all(&sent[1..]);
    wait_for(&store, "every record written", |s| {
        s.written == 12_000 && s.spool_items == 0
    })
    .await;
    store.clone().close().await;

    assert!(store.stats().redis_errors >= 1, "{:?}", store.stats());
    assert_eq!(stream_record_ids(&mut connect(&server)), record_ids(&sent));
}

#[tokio::test]
async fn a_spool_left_by_a_crashed_run_is_replayed_at_start() {
    let server = RedisServer::start();
    let state = TempDir::new("store-crash");
    let writes = WRITES;
    let sent = records(0..50);
    {
        let mut spool = Spool::open(&spool_dir(&state), 1 << 30).unwrap();
        for record in &sent {
            assert!(spool.push(&writes.write(record)).is_ok());
        }
        // The crashed run had replayed the first 20...
        let replayed = spool.peek(20).unwrap();
        spool.commit(&replayed).unwrap();
    }
    // ...and was killed in the middle of spooling one more.
    let segment = std::fs::read_dir(spool_dir(&state))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .max()
        .unwrap();
    let mut torn = std::fs::read(&segment).unwrap();
    torn.extend_from_slice(br#"{"id":"flow00016:2","ops":[{"op":"#);
    std::fs::write(&segment, torn).unwrap();

    let (store, _sink) = start(config(&server.url(), state.path(), 1 << 30));
    wait_for(&store, "the spool replayed", |s| {
        s.written == 30 && s.spool_items == 0
    })
    .await;
    store.close().await;
    assert_eq!(
        stream_record_ids(&mut connect(&server)),
        record_ids(&sent[20..])
    );
}

#[tokio::test]
async fn a_full_spool_drops_what_it_cannot_take_without_blocking_the_producer() {
    const SPOOL_MAX: u64 = 64 << 10;
    let mut server = RedisServer::start();
    server.stop();
    let state = TempDir::new("store-full");
    let (store, sink) = start(config(&server.url(), state.path(), SPOOL_MAX));
    let sent = records(0..2000);
    let started = Instant::now();
    sink.write_all(&sent);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "submitting took {:?}",
        started.elapsed()
    );
    wait_for(&store, "every record spooled or dropped", |s| {
        s.spool_items + s.dropped == 2000
    })
    .await;
    let stats = store.stats();
    assert!(stats.dropped > 0 && stats.spool_items > 0, "{stats:?}");
    assert!(stats.spool_bytes <= SPOOL_MAX, "{stats:?}");

    // What the spool took is the oldest records, and reaches Redis once it is back.
    let kept = stats.spool_items as usize;
    server.restart();
    wait_for(&store, "the spool replayed", |s| {
        s.written == kept as u64 && s.spool_items == 0
    })
    .await;
    store.close().await;
    assert_eq!(
        stream_record_ids(&mut connect(&server)),
        record_ids(&sent[..kept])
    );
}

/// Three masters on loopback, each with every slot range it was given; killed when dropped.
struct RedisCluster {
    ports: Vec<u16>,
    _nodes: Vec<ChildGuard>,
    _dir: TempDir,
}

impl RedisCluster {
    fn start() -> Self {
        let dir = TempDir::new("redis-cluster");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let nodes = ports
            .iter()
            .map(|port| {
                let node_dir = dir.path().join(port.to_string());
                std::fs::create_dir_all(&node_dir).unwrap();
                let node = ChildGuard::spawn(
                    "redis-server",
                    Command::new("redis-server")
                        .args(["--port", &port.to_string()])
                        // The default bus port, port + 10000, may be out of range or taken.
                        .args(["--cluster-port", &free_port().to_string()])
                        .args(["--cluster-enabled", "yes", "--bind", "127.0.0.1"])
                        .args(["--save", "", "--appendonly", "no"])
                        .arg("--dir")
                        .arg(&node_dir)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null()),
                );
                wait_for_port(([127, 0, 0, 1], *port).into(), Duration::from_secs(10));
                node
            })
            .collect();
        let cluster = Self {
            ports,
            _nodes: nodes,
            _dir: dir,
        };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        create.args(cluster.ports.iter().map(|port| format!("127.0.0.1:{port}")));
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let output = create.output().expect("run redis-cli --cluster create");
        assert!(output.status.success(), "{output:?}");
        cluster.wait_until_ok();
        cluster
    }

    fn wait_until_ok(&self) {
        wait_until(
            Duration::from_secs(20),
            "every node's cluster_state:ok",
            || {
                self.ports.iter().all(|port| {
                    let info = Command::new("redis-cli")
                        .args(["-p", &port.to_string(), "CLUSTER", "INFO"])
                        .output()
                        .expect("run redis-cli");
                    String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok")
                })
            },
        );
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.ports[0])
    }
}

#[tokio::test]
async fn a_redis_cluster_gets_every_record() {
    let cluster = RedisCluster::start();
    let state = TempDir::new("store-cluster");
    let config = StoreConfig {
        redis: RedisTarget::new(cluster.url(), true).expect("a Redis URL"),
        ..config(&cluster.url(), state.path(), 1 << 30)
    };
    let (store, sink) = start(config);
    let sent = records(0..900);
    sink.write_all(&sent);
    wait_for(&store, "all written", |s| s.written == 900).await;
    store.clone().close().await;
    assert_eq!(store.stats().redis_errors, 0);

    let mut con = redis::cluster::ClusterClient::new(vec![cluster.url()])
        .and_then(|client| client.get_connection())
        .expect("connect to the cluster");
    assert_eq!(stream_record_ids(&mut con), record_ids(&sent));
    for client in 0..4 {
        let indexed: usize = con.zcard(peer_index(&client_ip(client))).unwrap();
        assert_eq!(indexed, 225);
    }
    let indexed: usize = con.zcard(peer_index(SERVER_IP)).unwrap();
    assert_eq!(indexed, 900);
}

#[tokio::test]
async fn a_bad_url_fails_the_start_and_a_tls_one_is_tried() {
    let state = TempDir::new("store-urls");
    let err = RedisTarget::new("redis://:secret@[", false).unwrap_err();
    assert!(!format!("{err:#}").contains("secret"), "{err:#}");

    // A plain server fails the TLS handshake: the write is spooled, nothing panics.
    let server = RedisServer::start();
    let tls = format!("rediss://127.0.0.1:{}", server.port);
    let store = Store::start(config(&tls, state.path(), 1 << 20)).expect("start with rediss://");
    store.submit(FlowWrites::default().write(&record(0)));
    store.clone().close().await;
    let stats = store.stats();
    assert_eq!((stats.spool_items, stats.redis_errors), (1, 1), "{stats:?}");
}
