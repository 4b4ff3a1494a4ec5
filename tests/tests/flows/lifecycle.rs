//! The flow lifecycle with real traffic over veth: every end reason, interim records with exact
//! deltas, the kernel LRU evicting flows, Redis going away and coming back, and the agent
//! killed with SIGKILL and restarted. flowmon runs in the server's namespace.

use std::{
    collections::{BTreeMap, HashSet},
    io::{Read as _, Write as _},
    net::{Shutdown, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use flowmon_tests::{
    agent::{Agent, scrape_metrics},
    netns::VethPair,
    redis_server::RedisServer,
};
use serde_json::Value;

/// Ethernet, IPv4 and UDP headers around a datagram.
const UDP_OVERHEAD: u64 = 14 + 20 + 8;

/// A UDP client in the client namespace and a receiving socket in the server's.
struct UdpFlow {
    client: UdpSocket,
    server: UdpSocket,
    server_port: u16,
}

impl UdpFlow {
    fn new(pair: &VethPair, client_port: u16, server_port: u16) -> Self {
        let server = pair
            .server
            .run(|| UdpSocket::bind((VethPair::SERVER_IP, server_port)).unwrap());
        let client = pair
            .client
            .run(|| UdpSocket::bind((VethPair::CLIENT_IP, client_port)).unwrap());
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Self {
            client,
            server,
            server_port,
        }
    }

    /// Sends a datagram of `size` bytes and waits until it arrived.
    fn send(&self, size: usize) {
        self.client
            .send_to(&vec![0u8; size], (VethPair::SERVER_IP, self.server_port))
            .unwrap();
        let mut buf = [0u8; 2048];
        assert_eq!(self.server.recv(&mut buf).unwrap(), size);
    }
}

fn records_of<'a>(records: &'a [Value], protocol: &str, server_port: u64) -> Vec<&'a Value> {
    let mut unique = HashSet::new();
    records
        .iter()
        .filter(|r| r["protocol"] == protocol && r["server_port"] == server_port)
        // A record handed on again after a restart is the same line twice.
        .filter(|r| unique.insert(r["record_id"].as_str().unwrap().to_owned()))
        .collect()
}

fn u64_of(record: &Value, key: &str) -> u64 {
    record[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {record}"))
}

const COUNTERS: [&str; 4] = [
    "client_packets",
    "client_bytes",
    "server_packets",
    "server_bytes",
];

/// One flow's records: one flow_id, sequences 0..n, interim then one final, each record's
/// deltas the difference of its totals from the previous record's. Returns the final record.
fn assert_consistent<'a>(records: &[&'a Value]) -> &'a Value {
    assert!(!records.is_empty());
    let flow_id = &records[0]["flow_id"];
    let mut previous: Option<&Value> = None;
    for (sequence, record) in records.iter().enumerate() {
        assert_eq!(&record["flow_id"], flow_id, "one flow_id: {records:#?}");
        assert_eq!(u64_of(record, "sequence"), sequence as u64, "{records:#?}");
        let last = sequence == records.len() - 1;
        assert_eq!(
            record["record_type"],
            if last { "final" } else { "interim" },
            "{records:#?}"
        );
        for counter in COUNTERS {
            let before = previous.map_or(0, |p| u64_of(p, counter));
            assert_eq!(
                u64_of(record, &format!("{counter}_delta")),
                u64_of(record, counter) - before,
                "{counter} delta of {record}"
            );
        }
        previous = Some(record);
    }
    let last = records.last().unwrap();
    for counter in COUNTERS {
        let sum: u64 = records
            .iter()
            .map(|r| u64_of(r, &format!("{counter}_delta")))
            .sum();
        assert_eq!(sum, u64_of(last, counter), "deltas of {counter} add up");
    }
    last
}

#[test]
fn every_end_reason_and_interim_records_with_exact_deltas() {
    let pair = VethPair::new();
    let mut agent = Agent::start(
        &pair.server,
        VethPair::SERVER_IF,
        &[
            "--no-redis",
            "--poll-interval",
            "0.1",
            "--udp-timeout",
            "1",
            "--tcp-close-timeout",
            "0.5",
            "--interim-interval",
            "0.5",
        ],
    );
    // Idle: two datagrams, then silence longer than the UDP timeout.
    let idle = UdpFlow::new(&pair, 41000, 7000);
    idle.send(100);
    idle.send(200);
    // End: a TCP connection that closes from both sides.
    let listener = pair
        .server
        .run(|| TcpListener::bind((VethPair::SERVER_IP, 7001)).unwrap());
    let mut client = pair
        .client
        .run(|| TcpStream::connect((VethPair::SERVER_IP, 7001)).unwrap());
    let (mut accepted, _) = listener.accept().unwrap();
    client.write_all(b"hello").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    accepted.read_to_end(&mut got).unwrap();
    accepted.shutdown(Shutdown::Write).unwrap();
    client.read_to_end(&mut got).unwrap();
    // Interim, then forced at shutdown: a datagram every 100 ms for 2.2 s.
    let long = UdpFlow::new(&pair, 41002, 7002);
    for _ in 0..22 {
        long.send(10);
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.stop();
    let records = agent.records();

    let idle_records = records_of(&records, "udp", 7000);
    let idle_final = assert_consistent(&idle_records);
    assert_eq!(idle_final["end_reason"], "idle");
    assert_eq!(
        (
            u64_of(idle_final, "client_packets"),
            u64_of(idle_final, "client_bytes")
        ),
        (2, 2 * UDP_OVERHEAD + 300)
    );

    let tcp_final = assert_consistent(&records_of(&records, "tcp", 7001));
    assert_eq!(tcp_final["end_reason"], "end");
    assert_eq!(tcp_final["tcp_state"], "closed");

    let long_records = records_of(&records, "udp", 7002);
    assert!(
        long_records.len() >= 4,
        "at least three interim records and the final: {long_records:#?}"
    );
    let long_final = assert_consistent(&long_records);
    assert_eq!(long_final["end_reason"], "forced");
    assert_eq!(
        (
            u64_of(long_final, "client_packets"),
            u64_of(long_final, "client_bytes")
        ),
        (22, 22 * (UDP_OVERHEAD + 10))
    );
}

#[test]
fn evicted_flows_are_accounted_within_one_percent() {
    const FLOWS: u16 = 1000;
    let pair = VethPair::new();
    // IPv4 only: no neighbour discovery or MLD flows besides the test's own.
    for netns in [&pair.client, &pair.server] {
        netns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]);
    }
    let mut agent = Agent::start(
        &pair.server,
        VethPair::SERVER_IF,
        &["--no-redis", "--poll-interval", "0.1", "--max-flows", "64"],
    );
    let server = pair
        .server
        .run(|| UdpSocket::bind((VethPair::SERVER_IP, 7100)).unwrap());
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    for port in 0..FLOWS {
        let client = pair
            .client
            .run(|| UdpSocket::bind((VethPair::CLIENT_IP, 42000 + port)).unwrap());
        client.send_to(b"x", (VethPair::SERVER_IP, 7100)).unwrap();
        server.recv(&mut buf).unwrap();
    }
    agent.wait_for_polls(&pair.server, 3);
    let evicted = agent.metric(&pair.server, "flowmon_flows_evicted_total");
    agent.stop();
    let records = agent.records();
    let ended_live: usize = records
        .iter()
        .filter(|r| r["server_port"] == 7100 && r["end_reason"] == "forced")
        .count();
    // Every flow not live at the end was evicted: that is the truth the estimate must meet.
    let truth = (FLOWS as usize - ended_live) as f64;
    assert!(
        truth > 900.0,
        "the map holds at most 64 flows: {ended_live} were live"
    );
    assert!(
        (evicted - truth).abs() <= truth * 0.01,
        "evicted estimate {evicted}, truth {truth}"
    );
}

#[test]
fn a_redis_outage_loses_no_record_and_duplicates_none() {
    let pair = VethPair::new();
    let mut redis = RedisServer::start_persistent_in(&pair.server);
    let mut agent = Agent::start(
        &pair.server,
        VethPair::SERVER_IF,
        &[
            "--redis-url",
            &redis.url(),
            "--poll-interval",
            "0.1",
            "--interim-interval",
            "0.2",
        ],
    );
    let flow = UdpFlow::new(&pair, 43000, 7200);
    let started = Instant::now();
    let mut outage = [false, false];
    while started.elapsed() < Duration::from_secs(3) {
        flow.send(50);
        std::thread::sleep(Duration::from_millis(50));
        if started.elapsed() > Duration::from_secs(1) && !outage[0] {
            redis.stop();
            outage[0] = true;
        }
        if started.elapsed() > Duration::from_secs(2) && !outage[1] {
            redis.restart();
            outage[1] = true;
        }
    }
    agent.stop();
    let logged: Vec<String> = records_of(&agent.records(), "udp", 7200)
        .iter()
        .map(|r| r["record_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        logged.len() >= 10,
        "interim records through the outage: {logged:?}"
    );
    let streamed: Vec<String> = pair.server.run(|| {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut connection = client.get_connection().unwrap();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg("flowmon:flows")
            .arg("-")
            .arg("+")
            .query(&mut connection)
            .unwrap();
        reply
            .ids
            .iter()
            .map(|entry| entry.get::<String>("record").expect("record field"))
            .map(|json| serde_json::from_str::<Value>(&json).unwrap())
            .filter(|record| record["server_port"] == 7200)
            .map(|record| record["record_id"].as_str().unwrap().to_owned())
            .collect()
    });
    // Exactly the flow log's records, each once, in the same order.
    assert_eq!(streamed, logged);
}

#[test]
fn a_killed_agent_restarts_with_exact_totals_and_deltas() {
    // The pinned links of either ingress hook are taken over.
    for hook in ["xdp", "tc"] {
        a_killed_agent_restarts_with(hook);
    }
}

fn a_killed_agent_restarts_with(hook: &str) {
    let pair = VethPair::new();
    let args = [
        "--no-redis",
        "--poll-interval",
        "0.1",
        "--interim-interval",
        "0.3",
        "--ingress-hook",
        hook,
    ];
    let mut agent = Agent::start(&pair.server, VethPair::SERVER_IF, &args);
    let flow = UdpFlow::new(&pair, 44000, 7300);
    for _ in 0..10 {
        flow.send(20);
    }
    // Polls enough for an interim record (every third) to be out before the kill.
    agent.wait_for_polls(&pair.server, 5);
    agent.kill();
    // The programs stay attached through their pinned links and keep counting.
    for _ in 0..5 {
        flow.send(20);
    }
    agent.restart(&pair.server);
    let kept = format!(
        "flowmon_hook_info{{iface=\"{}\",hook=\"{hook}\"}} 1",
        VethPair::SERVER_IF
    );
    assert!(
        scrape_metrics(&pair.server)
            .expect("metrics endpoint")
            .contains(&kept),
        "the restarted agent keeps the {hook} hook"
    );
    for _ in 0..7 {
        flow.send(20);
    }
    agent.wait_for_polls(&pair.server, 5);
    agent.stop();
    let records = agent.records();
    let flow_records = records_of(&records, "udp", 7300);
    let last = assert_consistent(&flow_records);
    assert_eq!(last["end_reason"], "forced");
    assert_eq!(
        (u64_of(last, "client_packets"), u64_of(last, "client_bytes")),
        (22, 22 * (UDP_OVERHEAD + 20))
    );
    let kinds: BTreeMap<&str, usize> =
        flow_records
            .iter()
            .fold(BTreeMap::new(), |mut kinds, record| {
                *kinds
                    .entry(record["record_type"].as_str().unwrap())
                    .or_default() += 1;
                kinds
            });
    assert_eq!(kinds.get("final"), Some(&1));
}
