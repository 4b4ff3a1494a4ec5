//! IPFIX export over real traffic: flowmon on the server end of a veth pair exports to nfdump's
//! `nfcapd` over UDP and to a TCP collector, both on the server's loopback, while `tshark`
//! captures the export stream. What nfdump lists and what tshark's IPFIX dissector decodes is
//! held, record by record, against flowmon's own JSON records of the same flows.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use flowmon_tests::{
    agent::Agent,
    ipfix::{Capture, Message, Nfcapd, NfdumpFlow, TcpCollector},
    netns::{Netns, VethPair},
    traffic::{tcp_exchange, udp_round_trip, udp_sockets},
    wait::wait_until,
};
use serde_json::Value;

const UDP_PORT: u16 = 4739;
const TCP_PORT: u16 = 4740;
const UDP_COLLECTOR: &str = "udp://127.0.0.1:4739";
const TCP_COLLECTOR: &str = "tcp://127.0.0.1:4740";
const SENSOR: &str = "ipfix-test-sensor";
/// The export ports tshark reads as IPFIX.
const DECODE_AS: [&str; 2] = ["udp.port==4739", "tcp.port==4740"];

/// Both collectors and a capture of what reaches them, then flowmon exporting to both.
struct Exporting {
    pair: VethPair,
    nfcapd: Nfcapd,
    tcp: TcpCollector,
    capture: Capture,
    agent: Agent,
}

impl Exporting {
    fn start(pair: VethPair, args: &[&str]) -> Self {
        let capture = Capture::start(
            &pair.server,
            &format!("udp port {UDP_PORT} or tcp port {TCP_PORT}"),
        );
        let nfcapd = Nfcapd::start(&pair.server, UDP_PORT);
        let tcp = TcpCollector::start(&pair.server, TCP_PORT);
        let mut all = vec![
            "--no-redis",
            "--sensor-id",
            SENSOR,
            "--ipfix",
            UDP_COLLECTOR,
            "--ipfix",
            TCP_COLLECTOR,
        ];
        all.extend(args);
        // It serves metrics once attached.
        let agent = Agent::start(&pair.server, VethPair::SERVER_IF, &all);
        Self {
            pair,
            nfcapd,
            tcp,
            capture,
            agent,
        }
    }

    /// Stops flowmon (a final record of every live flow), then the collectors once they took
    /// everything; returns flowmon's JSON records.
    fn stop(&mut self) -> Vec<Value> {
        self.agent.stop();
        self.nfcapd.stop(&self.pair.server);
        self.tcp.stop();
        self.agent.records()
    }

    fn metric(&self, name: &str, collector: &str) -> f64 {
        let line = format!("flowmon_ipfix_{name}{{collector=\"{collector}\"}}");
        self.agent.metric(&self.pair.server, &line)
    }
}

fn protocol_number(name: &str) -> u64 {
    match name {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" => 58,
        number => number.parse().unwrap(),
    }
}

fn millis(secs: &Value) -> u64 {
    (secs.as_f64().unwrap() * 1000.0).round() as u64
}

/// The IPFIX flowEndReason of a JSON record.
fn end_reason(record: &Value) -> u8 {
    match record["end_reason"].as_str() {
        None => 2,
        Some("idle") => 1,
        Some("end") => 3,
        Some("forced") => 4,
        Some("evicted") => 5,
        Some(other) => panic!("end reason {other}"),
    }
}

fn is_icmp(record: &Value) -> bool {
    matches!(record["protocol"].as_str(), Some("icmp" | "icmpv6"))
}

/// Whether nfdump's `flow` is `record`'s: protocol, addresses, ports (ICMP: type and code)
/// and first packet.
fn same_flow(flow: &NfdumpFlow, record: &Value) -> bool {
    let json = &flow.json;
    let address = |v4: &str, v6: &str| json[v4].as_str().or(json[v6].as_str()).map(str::to_owned);
    let ports = if is_icmp(record) {
        let code = if record["icmp_id"].is_u64() {
            0
        } else {
            record["server_port"].as_u64().unwrap()
        };
        (json["icmp_type"].as_u64(), json["icmp_code"].as_u64())
            == (record["client_port"].as_u64(), Some(code))
    } else {
        (json["src_port"].as_u64(), json["dst_port"].as_u64())
            == (
                record["client_port"].as_u64(),
                record["server_port"].as_u64(),
            )
    };
    json["proto"].as_u64() == Some(protocol_number(record["protocol"].as_str().unwrap()))
        && address("src4_addr", "src6_addr").as_deref() == record["client_ip"].as_str()
        && address("dst4_addr", "dst6_addr").as_deref() == record["server_ip"].as_str()
        && ports
        && flow.first_ms == millis(&record["first_seen"])
}

/// nfdump's `flow` carries `record`'s numbers exactly: each direction's packets and bytes of
/// the record (the deltas), times to the millisecond, end reason, interface, MAC, VLAN.
fn assert_same_numbers(flow: &NfdumpFlow, record: &Value, ifindex: u64) {
    let json = &flow.json;
    let pairs = [
        ("in_packets", "client_packets_delta"),
        ("in_bytes", "client_bytes_delta"),
        ("out_packets", "server_packets_delta"),
        ("out_bytes", "server_bytes_delta"),
        ("src_vlan", "vlan"),
    ];
    for (nfdump_key, json_key) in pairs {
        assert_eq!(
            json[nfdump_key], record[json_key],
            "{nfdump_key} of {flow:?} for {record}"
        );
    }
    assert_eq!(
        flow.last_ms,
        millis(&record["last_seen"]),
        "{flow:?} for {record}"
    );
    assert_eq!(flow.end_reason, end_reason(record), "{flow:?} for {record}");
    assert_eq!(json["input_snmp"].as_u64(), Some(ifindex), "{flow:?}");
    assert_eq!(json["in_src_mac"], record["client_mac"], "{flow:?}");
}

/// Each nfdump flow is a JSON record's, with its numbers, and no record is two flows; returns
/// the records matched. (Interim records of a flow that saw no packet in between are alike
/// but for their sequence: any of them is the flow's.)
fn match_nfdump<'a>(flows: &[NfdumpFlow], records: &'a [Value], ifindex: u64) -> Vec<&'a Value> {
    let mut matched = HashSet::new();
    for flow in flows {
        let record = (0..records.len())
            .filter(|i| !matched.contains(i))
            .find(|&i| {
                let record = &records[i];
                same_flow(flow, record)
                    && end_reason(record) == flow.end_reason
                    && millis(&record["last_seen"]) == flow.last_ms
                    && flow.json["in_packets"] == record["client_packets_delta"]
                    && flow.json["out_packets"] == record["server_packets_delta"]
            })
            .unwrap_or_else(|| panic!("no JSON record, or no other one, for {flow:?}"));
        matched.insert(record);
        assert_same_numbers(flow, &records[record], ifindex);
    }
    matched.into_iter().map(|i| &records[i]).collect()
}

/// The index of `iface` in `netns`.
fn ifindex(netns: &Netns, iface: &str) -> u64 {
    let output = netns.exec(&["ip", "-o", "link", "show", iface]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.split(':').next().unwrap().trim().parse().unwrap()
}

/// A record's identity in IPFIX: flowmon's flowUuid and recordSequence elements, as tshark
/// shows them (hex bytes); in JSON: flow_id without dashes, and sequence.
fn tshark_id(record: &Value) -> (String, u64) {
    let entries = record["cflow.enterprise_private_entry"].as_array().unwrap();
    let hex = |i: usize| entries[i].as_str().unwrap().replace(':', "");
    (hex(2), u64::from_str_radix(&hex(3), 16).unwrap())
}

fn json_id(record: &Value) -> (String, u64) {
    (
        record["flow_id"].as_str().unwrap().replace('-', ""),
        record["sequence"].as_u64().unwrap(),
    )
}

/// tshark's decoding of a record matches its JSON record: addresses, protocol, both
/// directions' deltas and totals (reverse elements first), end reason, duration, MACs,
/// flowmon's Community ID and sensor id.
fn assert_tshark_record(decoded: &Value, record: &Value) {
    let address = |v4: &str, v6: &str| decoded[v4].as_str().or(decoded[v6].as_str());
    assert_eq!(
        address("cflow.srcaddr", "cflow.srcaddrv6"),
        record["client_ip"].as_str()
    );
    assert_eq!(
        address("cflow.dstaddr", "cflow.dstaddrv6"),
        record["server_ip"].as_str()
    );
    let number = |key: &str| decoded[key].as_str().unwrap().parse::<u64>().unwrap();
    let pair = |key: &str| -> Vec<u64> {
        decoded[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} twice in {decoded}"))
            .iter()
            .map(|v| v.as_str().unwrap().parse().unwrap())
            .collect()
    };
    let json = |key: &str| record[key].as_u64().unwrap();
    assert_eq!(
        number("cflow.protocol"),
        protocol_number(record["protocol"].as_str().unwrap())
    );
    assert_eq!(
        pair("cflow.octets"),
        [json("server_bytes_delta"), json("client_bytes_delta")],
        "{decoded} for {record}"
    );
    assert_eq!(
        pair("cflow.packets"),
        [json("server_packets_delta"), json("client_packets_delta")]
    );
    assert_eq!(
        pair("cflow.permanent_octets"),
        [json("server_bytes"), json("client_bytes")]
    );
    assert_eq!(
        pair("cflow.permanent_packets"),
        [json("server_packets"), json("client_packets")]
    );
    assert_eq!(number("cflow.flow_end_reason"), end_reason(record) as u64);
    let duration: f64 = decoded["cflow.timedelta"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        (duration * 1000.0).round() as u64,
        millis(&record["last_seen"]) - millis(&record["first_seen"])
    );
    assert_eq!(decoded["cflow.srcmac"][0], record["server_mac"]);
    assert_eq!(decoded["cflow.srcmac"][1], record["client_mac"]);
    let entries = decoded["cflow.enterprise_private_entry"]
        .as_array()
        .unwrap();
    let text = |i: usize| -> String {
        let hex = entries[i].as_str().unwrap();
        hex.split(':')
            .map(|b| u8::from_str_radix(b, 16).unwrap() as char)
            .collect()
    };
    assert_eq!(text(0), record["community_id"].as_str().unwrap());
    assert_eq!(text(4), SENSOR);
}

/// Every message of each transport session: the session starts with the templates; its
/// data records by identity, each once.
fn tshark_records(messages: &[Message]) -> HashMap<String, HashMap<(String, u64), &Value>> {
    let mut sessions: HashMap<String, HashMap<(String, u64), &Value>> = HashMap::new();
    for message in messages {
        let records = sessions.entry(message.stream.clone()).or_insert_with(|| {
            assert!(
                message.has_templates(),
                "{} starts with the templates",
                message.stream
            );
            HashMap::new()
        });
        for record in message.records() {
            let id = tshark_id(record);
            assert!(records.insert(id.clone(), record).is_none(), "{id:?} twice");
        }
    }
    sessions
}

#[test]
fn real_traffic_reaches_nfcapd_and_tshark_with_the_json_records_numbers() {
    let mut exporting = Exporting::start(VethPair::new(), &["--ipfix-template-refresh", "1"]);
    let pair = &exporting.pair;
    exporting.pair.disable_tcp_sack();
    let (sent4, _) = pair.client.ping(&[VethPair::SERVER_IP]);
    let (sent6, _) = pair.client.ping(&["-6", VethPair::SERVER_IP6]);
    assert_eq!((sent4, sent6), (3, 3));
    tcp_exchange(pair, 5001, 1 << 20, 1 << 18);
    let (client, server) = udp_sockets(pair, 40053, (VethPair::SERVER_IP, 5353));
    for size in [1, 100, 1000, 1472] {
        udp_round_trip(&client, &server, size);
    }
    let ifindex = ifindex(&pair.server, VethPair::SERVER_IF);
    let records = exporting.stop();

    // The traffic is there: each kind of flow, with packets both ways.
    for (protocol, client_port) in [("icmp", 8), ("icmpv6", 128), ("tcp", 0), ("udp", 40053)] {
        let found = records.iter().any(|r| {
            r["protocol"] == protocol
                && r["client_ip"]
                    .as_str()
                    .unwrap()
                    .starts_with(if protocol == "icmpv6" { "fd00" } else { "10." })
                && (client_port == 0 || r["client_port"] == client_port)
                && r["server_packets"].as_u64() > Some(0)
        });
        assert!(found, "a {protocol} flow with answers in {records:#?}");
    }

    // nfdump lists every record, each with its numbers.
    let flows = exporting.nfcapd.flows();
    let matched = match_nfdump(&flows, &records, ifindex);
    assert_eq!(matched.len(), records.len(), "every record reached nfcapd");

    // tshark decodes both export streams: templates first, then every record with both
    // directions' counts, nothing malformed.
    exporting.capture.stop_with(&DECODE_AS, 2 * records.len());
    let messages = exporting.capture.messages(&DECODE_AS);
    let complaints = exporting.capture.complaints(&DECODE_AS);
    assert!(complaints.is_empty(), "tshark: {complaints:#?}");
    let sessions = tshark_records(&messages);
    let udp_templates = messages
        .iter()
        .filter(|m| m.stream == "udp" && m.has_templates());
    assert!(udp_templates.count() >= 2, "templates again after a second");
    let by_id: HashMap<(String, u64), &Value> = records.iter().map(|r| (json_id(r), r)).collect();
    assert_eq!(sessions.len(), 2, "one UDP stream and one TCP connection");
    for (stream, decoded) in &sessions {
        let ids: HashSet<&(String, u64)> = decoded.keys().collect();
        assert_eq!(
            ids,
            by_id.keys().collect(),
            "every record once over {stream}"
        );
        for (id, record) in decoded {
            assert_tshark_record(record, by_id[id]);
        }
    }
}

/// A UDP flow that goes on, a datagram answered every 50 ms, until stopped.
struct SteadyFlow {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SteadyFlow {
    fn start(pair: &VethPair, client_port: u16, server_port: u16) -> Self {
        let (client, server) = udp_sockets(pair, client_port, (VethPair::SERVER_IP, server_port));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut size = 10;
                while !stop.load(Ordering::Relaxed) {
                    udp_round_trip(&client, &server, size);
                    size = size % 500 + 7;
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
        .into();
        Self { stop, thread }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the flow's thread");
        }
    }
}

impl Drop for SteadyFlow {
    fn drop(&mut self) {
        self.stop();
    }
}

/// flowmon exporting with an interim record of every flow each second, `--udp-timeout`
/// `udp_timeout`, and a steady UDP flow from the client's `client_port` to `server_port`.
fn exporting_interims(
    pair: VethPair,
    udp_timeout: &str,
    ports: (u16, u16),
) -> (Exporting, SteadyFlow) {
    let args = [
        "--interim-interval",
        "1",
        "--poll-interval",
        "0.2",
        "--udp-timeout",
        udp_timeout,
    ];
    let exporting = Exporting::start(pair, &args);
    let flow = SteadyFlow::start(&exporting.pair, ports.0, ports.1);
    (exporting, flow)
}

/// The JSON records of the flow to `server_port`.
fn records_to(agent: &Agent, server_port: u64) -> Vec<Value> {
    agent
        .records()
        .into_iter()
        .filter(|r| r["server_port"] == server_port && r["protocol"] == "udp")
        .collect()
}

#[test]
fn interim_deltas_at_the_collector_add_up_to_the_final_totals() {
    let (mut exporting, mut traffic) = exporting_interims(VethPair::new(), "1", (40600, 6000));
    wait_until(Duration::from_secs(30), "three interim records", || {
        records_to(&exporting.agent, 6000).len() >= 3
    });
    traffic.stop();
    wait_until(
        Duration::from_secs(30),
        "the flow's idle final record",
        || {
            records_to(&exporting.agent, 6000)
                .iter()
                .any(|r| r["record_type"] == "final")
        },
    );
    let ifindex = ifindex(&exporting.pair.server, VethPair::SERVER_IF);
    let records = exporting.stop();
    exporting.capture.stop_with(&DECODE_AS, 2 * records.len());
    let flow: Vec<Value> = records
        .iter()
        .filter(|r| r["server_port"] == 6000 && r["protocol"] == "udp")
        .cloned()
        .collect();
    assert!(flow.len() >= 4, "three interims and the final: {flow:#?}");
    let last = flow.last().unwrap();
    assert_eq!(
        (last["record_type"].as_str(), end_reason(last)),
        (Some("final"), 1)
    );

    let flows = exporting.nfcapd.flows();
    let mut collected: Vec<&NfdumpFlow> = flows
        .iter()
        .filter(|f| f.json["dst_port"] == 6000 && f.json["proto"] == 17)
        .collect();
    collected.sort_by_key(|f| f.last_ms);
    assert_eq!(
        collected.len(),
        flow.len(),
        "one collector record per JSON record"
    );
    let matched = match_nfdump(&flows, &records, ifindex);
    assert_eq!(matched.len(), records.len());
    let reasons: Vec<u8> = collected.iter().map(|f| f.end_reason).collect();
    let mut expected = vec![2; flow.len() - 1];
    expected.push(1);
    assert_eq!(reasons, expected, "active timeouts, then idle");
    let sum = |key: &str| {
        collected
            .iter()
            .map(|f| f.json[key].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(sum("in_packets"), last["client_packets"].as_u64().unwrap());
    assert_eq!(sum("in_bytes"), last["client_bytes"].as_u64().unwrap());
    assert_eq!(sum("out_packets"), last["server_packets"].as_u64().unwrap());
    assert_eq!(sum("out_bytes"), last["server_bytes"].as_u64().unwrap());
}

#[test]
fn collectors_away_for_ten_seconds_tcp_gets_every_record_once_udp_counts_its_loss() {
    // No IPv6 here: its neighbour discovery would make flows, and records, at any moment.
    let pair = VethPair::new();
    for netns in [&pair.client, &pair.server] {
        netns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]);
    }
    let (mut exporting, mut traffic) = exporting_interims(pair, "300", (40601, 6001));
    let made = |exporting: &Exporting| exporting.agent.records().len() as f64;
    let exported = |exporting: &Exporting| {
        let records = made(exporting);
        exporting.metric("records_sent_total", UDP_COLLECTOR) == records
            && exporting.metric("records_sent_total", TCP_COLLECTOR) == records
    };
    // The flow's one interim record a second is the only export: the collectors stop just
    // after one, when both have it, so that none comes while they stop.
    wait_until(Duration::from_secs(30), "records exported", || {
        made(&exporting) >= 2.0 && exported(&exporting)
    });
    let before = made(&exporting);
    wait_until(Duration::from_secs(30), "the next record exported", || {
        made(&exporting) > before && exported(&exporting)
    });
    exporting.nfcapd.stop(&exporting.pair.server);
    exporting.tcp.stop();
    let away = Instant::now();
    let at_stop = made(&exporting);
    wait_until(
        Duration::from_secs(30),
        "the exporters see the collectors gone",
        || {
            exporting.metric("collector_up", UDP_COLLECTOR) == 0.0
                && exporting.metric("collector_up", TCP_COLLECTOR) == 0.0
        },
    );
    wait_until(Duration::from_secs(30), "ten seconds away", || {
        away.elapsed() >= Duration::from_secs(10)
    });
    assert!(
        made(&exporting) >= at_stop + 5.0,
        "records came while the collectors were away"
    );

    exporting.nfcapd.restart(&exporting.pair.server);
    exporting.tcp = TcpCollector::start(&exporting.pair.server, TCP_PORT);
    wait_until(Duration::from_secs(30), "both collectors up again", || {
        exporting.metric("collector_up", UDP_COLLECTOR) == 1.0
            && exporting.metric("collector_up", TCP_COLLECTOR) == 1.0
    });
    let after = made(&exporting);
    wait_until(Duration::from_secs(30), "records flow again", || {
        exporting.metric("records_sent_total", UDP_COLLECTOR)
            + exporting.metric("records_dropped_total", UDP_COLLECTOR)
            > after
    });
    let udp_dropped = exporting.metric("records_dropped_total", UDP_COLLECTOR);
    assert!(
        udp_dropped >= 5.0,
        "records lost over UDP are counted: {udp_dropped}"
    );
    assert_eq!(
        exporting.metric("records_dropped_total", TCP_COLLECTOR),
        0.0
    );
    traffic.stop();
    let ifindex = ifindex(&exporting.pair.server, VethPair::SERVER_IF);
    let records = exporting.stop();

    // UDP: what nfcapd has and what was counted lost are every record.
    let flows = exporting.nfcapd.flows();
    let matched = match_nfdump(&flows, &records, ifindex);
    assert_eq!(matched.len() + udp_dropped as usize, records.len());

    // TCP: every record once, over two connections that each began with the templates.
    exporting
        .capture
        .stop_with(&DECODE_AS, matched.len() + records.len());
    let messages = exporting.capture.messages(&DECODE_AS);
    let sessions = tshark_records(&messages);
    let tcp: Vec<&HashMap<(String, u64), &Value>> = sessions
        .iter()
        .filter(|(stream, _)| stream.starts_with("tcp"))
        .map(|(_, records)| records)
        .collect();
    assert_eq!(tcp.len(), 2, "a connection before and one after");
    let mut ids = HashSet::new();
    for records in tcp {
        for id in records.keys() {
            assert!(ids.insert(id.clone()), "{id:?} came twice over TCP");
        }
    }
    let json_ids: HashSet<(String, u64)> = records.iter().map(json_id).collect();
    assert_eq!(ids, json_ids, "every record over TCP");
}
