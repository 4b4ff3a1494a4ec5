//! What the analyzer's system tests share: sessions, a resolver that needs no network, a
//! MaxMind-format city database, and the analyzer storing into a real redis-server.

use std::{
    collections::HashSet,
    net::IpAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering::Relaxed},
    },
    time::Duration,
};

use flowmon::{
    analyzer::{
        Analyzer, Dorks, FlowOrigin, FlowSource, FlowsFuture, GeoIp, ReverseDns, SessionWrites,
    },
    flow::record::FlowRecord,
    metrics::AnalyzerMetrics,
    snare::{HANDOFF_CAPACITY, Session},
    store::{RedisTarget, Store, StoreConfig},
};
use maxminddb_writer::{Database, metadata::IpVersion, paths::IpAddrWithMask};
use serde_json::{Value, json};

pub const SENSOR: &str = "78e51180-bf0d-4757-8a04-f000e5efa179";
pub const OTHER_SENSOR: &str = "9c10172f-7ce2-4fb4-b1c6-abc70141db56";
/// Googlebot's address, named `crawl-66-249-66-1.googlebot.com` by [`resolve`].
pub const GOOGLEBOT_IP: &str = "66.249.66.1";
pub const GOOGLEBOT: &str =
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
pub const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
/// The hidden link the analyzer knows.
pub const DORK: &str = "/wp-admin/backup.zip";

/// Reverse DNS without a network: a name for Googlebot's address only.
pub fn resolve(ip: IpAddr) -> Option<String> {
    (ip == GOOGLEBOT_IP.parse::<IpAddr>().unwrap())
        .then(|| "crawl-66-249-66-1.googlebot.com".into())
}

/// The analyzer with the 75 s default timeout, [`resolve`], the dork [`DORK`], `flows` and
/// `geoip`.
pub fn analyzer(flows: Option<Arc<dyn FlowSource>>, geoip: GeoIp) -> Analyzer {
    Analyzer::new(
        Duration::from_secs(75),
        geoip,
        ReverseDns::with_lookup(resolve, Duration::from_secs(1)),
        flows,
        Dorks::from([DORK.to_owned()]),
    )
}

/// A distinct session uuid each call.
fn next_uuid() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!(
        "00000000-0000-4000-8000-{:012x}",
        NEXT.fetch_add(1, Relaxed)
    )
}

/// A session of sensor `sensor` from `ip` with one request per (path, epoch seconds,
/// detection name), all answered 200.
pub fn session(
    sensor: &str,
    ip: &str,
    user_agent: Option<&str>,
    requests: &[(&str, f64, &str)],
) -> Session {
    let paths: Vec<Value> = requests
        .iter()
        .map(|(path, timestamp, attack)| {
            json!({"path": path, "timestamp": timestamp, "response_status": 200,
                   "attack_type": attack})
        })
        .collect();
    serde_json::from_value(json!({
        "ip": ip, "port": 40000, "user_agent": user_agent, "snare_uuid": sensor,
        "paths": paths, "sess_uuid": next_uuid(),
        "start_timestamp": requests.first().map_or(0.0, |r| r.1),
        "timestamp": requests.last().map_or(0.0, |r| r.1),
        "count": requests.len(), "cookies": {"sess_uuid": null}, "referer": null,
    }))
    .expect("a valid session")
}

/// The 32-hex id the analysis of `session` has.
pub fn hex_id(session: &Session) -> String {
    session.sess_uuid.simple().to_string()
}

/// A store on `redis_url` spooling under `state_dir`.
pub fn store(redis_url: &str, state_dir: &Path) -> Store {
    Store::start(StoreConfig {
        redis: RedisTarget::new(redis_url, false).expect("a Redis URL"),
        spool_dir: state_dir.join("spool"),
        spool_max_bytes: 1 << 30,
    })
    .expect("start the store")
}

/// Hands `sessions` to `analyzer` as the SNARE service would, stores them through `store` and
/// returns once every analysis is submitted.
pub async fn analyse_into(
    analyzer: Analyzer,
    store: &Store,
    writes: SessionWrites,
    sessions: Vec<Session>,
) -> u64 {
    let (ended, sessions_rx) = tokio::sync::mpsc::channel(HANDOFF_CAPACITY);
    let consumer = analyzer.spawn(
        sessions_rx,
        Some(store.clone()),
        writes,
        AnalyzerMetrics::default(),
    );
    for session in sessions {
        ended
            .send(session)
            .await
            .expect("the analyzer takes sessions");
    }
    drop(ended);
    consumer.await.expect("the analyzer ends")
}

/// Analyses and stores `sessions` into the Redis at `redis_url`, then closes the store.
pub async fn analyse_and_store(
    analyzer: Analyzer,
    redis_url: &str,
    state_dir: &Path,
    sessions: Vec<Session>,
) -> u64 {
    let store = store(redis_url, state_dir);
    let analysed = analyse_into(analyzer, &store, SessionWrites::new(None), sessions).await;
    store.close().await;
    analysed
}

/// A GeoIP2-City-shaped database at `path`: 74.217.37.0/24 is Smyrna, US; 81.2.69.0/24 is
/// London, GB, without a postal code.
pub fn write_city_db(path: &Path) {
    let mut db = Database::default();
    db.metadata.ip_version = IpVersion::V4;
    db.metadata.database_type = "GeoIP2-City".into();
    db.metadata.languages = vec!["en".into()];
    db.metadata.binary_format_major_version = 2;
    for (network, city) in [
        (
            "74.217.37.0/24",
            json!({
                "city": {"names": {"en": "Smyrna", "de": "Smyrna"}},
                "country": {"iso_code": "US", "names": {"en": "United States", "de": "USA"}},
                "postal": {"code": "30080"},
            }),
        ),
        (
            "81.2.69.0/24",
            json!({
                "city": {"names": {"en": "London"}},
                "country": {"iso_code": "GB", "names": {"en": "United Kingdom"}},
            }),
        ),
    ] {
        let data = db.insert_value(city).expect("a city record");
        db.insert_node(network.parse::<IpAddrWithMask>().unwrap(), data);
    }
    let file = std::fs::File::create(path).expect("create the database file");
    db.write_to(std::io::BufWriter::new(file))
        .expect("write the database");
}

/// A final TCP flow record of sensor `sensor` with `overrides` laid over its defaults: flow
/// `f`, from 203.0.113.50:41000 to 192.0.2.10:80, handshake completed, 10 packets (1000
/// bytes) from the client and 8 (6000 bytes) from the server.
pub fn flow_record(overrides: Value) -> FlowRecord {
    let mut record = json!({
        "flow_id": "f", "sequence": 0, "sensor_id": "sensor", "iface": "eth0",
        "record_type": "final", "end_reason": "end", "time": 0.0, "protocol": "tcp",
        "community_id": "1:f", "client_ip": "203.0.113.50", "client_port": 41000,
        "server_ip": "192.0.2.10", "server_port": 80, "vlan": 0, "client_packets": 10,
        "client_bytes": 1000, "server_packets": 8, "server_bytes": 6000,
        "client_packets_delta": 10, "client_bytes_delta": 1000, "server_packets_delta": 8,
        "server_bytes_delta": 6000, "client_tcp_flags": 0x1b, "server_tcp_flags": 0x1b,
        "tcp_state": "closed", "client_ttl": 52, "server_ttl": 64,
        "client_mac": "02:00:00:00:00:01", "server_mac": "02:00:00:00:00:02",
        "first_seen": 0.0, "last_seen": 0.0,
    });
    let fields = record.as_object_mut().unwrap();
    fields.extend(
        overrides
            .as_object()
            .expect("overrides are an object")
            .clone(),
    );
    let id = format!(
        "{}:{}",
        fields["flow_id"].as_str().unwrap(),
        fields["sequence"]
    );
    fields.insert("record_id".into(), id.into());
    fields.insert("time".into(), fields["last_seen"].clone());
    serde_json::from_value(record).expect("a valid flow record")
}

/// Flow records in memory, as the flow monitor's in-process source would hold them.
pub struct RecordedFlows(pub Vec<FlowRecord>);

impl FlowSource for RecordedFlows {
    fn origin(&self) -> FlowOrigin {
        FlowOrigin::Local
    }

    fn flows_of(&self, peer: IpAddr, _from: f64, _to: f64) -> FlowsFuture<'_> {
        let records = self
            .0
            .iter()
            .filter(|r| r.client_ip == peer || r.server_ip == peer)
            .cloned()
            .collect();
        Box::pin(async move { Ok(Some(records)) })
    }
}

/// The members of sensor `sensor`'s sorted set, oldest first, parsed as Tanner's readers parse
/// them, with their scores.
pub fn stored_sessions(redis: &mut redis::Connection, sensor: &str) -> Vec<(Value, f64)> {
    let members: Vec<(String, f64)> =
        redis::Commands::zrange_withscores(redis, sensor, 0, -1).expect("ZRANGE");
    members
        .into_iter()
        .map(|(member, score)| (serde_json::from_str(&member).expect("JSON member"), score))
        .collect()
}

pub fn keys(redis: &mut redis::Connection) -> HashSet<String> {
    redis::Commands::keys(redis, "*").expect("KEYS")
}
