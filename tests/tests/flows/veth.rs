//! Real traffic over a veth pair between two network namespaces, flowmon attached to the server
//! end (TC egress, and each ingress hook in turn: XDP, TC), offloads in their default state.
//! Each flow's per-direction packets and bytes are checked against exact expected values: frame
//! sizes for ping and UDP, and for TCP the kernel's own segment and byte counts (TCP_INFO) of
//! each side. `--ingress-hook auto` is checked to pick TC on veth and on a device without native
//! XDP (macvlan), where it counts as exactly.

use flowmon_tests::{
    agent::{Agent, scrape_metrics},
    netns::VethPair,
    traffic::{tcp_exchange, udp_round_trip, udp_sockets},
};
use serde_json::Value;

/// The ingress hooks every count is checked with.
const HOOKS: [&str; 2] = ["xdp", "tc"];

struct Monitored {
    pair: VethPair,
    agent: Agent,
}

impl Monitored {
    /// flowmon on the server end with `--ingress-hook hook`; it serves metrics once attached.
    fn start(hook: &str) -> Self {
        let pair = VethPair::new();
        let agent = Agent::start(
            &pair.server,
            VethPair::SERVER_IF,
            &["--no-redis", "--ingress-hook", hook],
        );
        let monitored = Self { pair, agent };
        let expected = if hook == "auto" { "tc" } else { hook };
        assert_eq!(monitored.hook(VethPair::SERVER_IF), expected);
        monitored
    }

    /// The ingress hook the agent reports for `iface`.
    fn hook(&self, iface: &str) -> &'static str {
        let info = |hook| format!("flowmon_hook_info{{iface=\"{iface}\",hook=\"{hook}\"}}");
        let body = scrape_metrics(&self.pair.server).expect("metrics endpoint");
        match (body.contains(&info("xdp")), body.contains(&info("tc"))) {
            (true, false) => "xdp",
            (false, true) => "tc",
            other => panic!("one hook for {iface}, got {other:?} in\n{body}"),
        }
    }

    /// Stops flowmon with SIGTERM and returns the records it wrote.
    fn stop(mut self) -> Vec<Value> {
        self.agent.stop();
        self.agent.records()
    }
}

fn find<'a>(records: &'a [Value], protocol: &str, client_ip: &str, server_port: u64) -> &'a Value {
    let matching: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["protocol"] == protocol
                && r["client_ip"] == client_ip
                && r["server_port"] == server_port
        })
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "one {protocol} record from {client_ip} to port {server_port}: {records:#?}"
    );
    matching[0]
}

fn assert_counts(record: &Value, client: (u64, u64), server: (u64, u64)) {
    let got = |key: &str| record[key].as_u64().unwrap();
    assert_eq!(
        (got("client_packets"), got("client_bytes")),
        client,
        "client side of {record}"
    );
    assert_eq!(
        (got("server_packets"), got("server_bytes")),
        server,
        "server side of {record}"
    );
    assert_eq!(record["record_type"], "final");
    assert_eq!(record["end_reason"], "forced");
}

#[test]
fn ping_and_ping6_are_counted_exactly() {
    for hook in HOOKS {
        ping_and_ping6_are_counted_exactly_with(hook);
    }
}

fn ping_and_ping6_are_counted_exactly_with(hook: &str) {
    let monitored = Monitored::start(hook);
    let client = &monitored.pair.client;
    // What crossed the wire by ping's own count: a reply the kernel did not send (ICMP rate
    // limits) is not on the wire either.
    let (sent4, received4) = client.ping(&[VethPair::SERVER_IP]);
    let (sent6, received6) = client.ping(&["-6", VethPair::SERVER_IP6]);
    let records = monitored.stop();
    assert_eq!((sent4, sent6), (3, 3));
    assert!(received4 > 0 && received6 > 0, "ping got no answer");

    // 56 data bytes + 8 ICMP + 20 IPv4 / 40 IPv6 + 14 Ethernet.
    let v4 = find(&records, "icmp", VethPair::CLIENT_IP, 0);
    assert_counts(v4, (sent4, sent4 * 98), (received4, received4 * 98));
    assert_eq!(
        (v4["client_port"].as_u64(), v4["server_ip"].as_str()),
        (Some(8), Some(VethPair::SERVER_IP))
    );
    let v6 = find(&records, "icmpv6", VethPair::CLIENT_IP6, 129);
    assert_counts(v6, (sent6, sent6 * 118), (received6, received6 * 118));
    assert_eq!(v6["client_port"], 128);
    assert!(v4["icmp_id"].is_u64(), "echo flows carry their identifier");
    assert_eq!(v4["community_id"].as_str().unwrap().len(), "1:".len() + 28);
}

#[test]
fn tcp_transfers_are_counted_as_the_segments_on_the_wire() {
    for hook in HOOKS {
        tcp_transfers_are_counted_with(hook);
    }
}

fn tcp_transfers_are_counted_with(hook: &str) {
    let monitored = Monitored::start(hook);
    monitored.pair.disable_tcp_sack();
    // Upload: the client's segments arrive through the ingress hook (at TC as the client's
    // offloaded super-packets). Download: the server's leave through TC egress as offloaded
    // super-packets. Either way they count as the segments they are on the wire.
    let (up_client, up_server) = tcp_exchange(&monitored.pair, 5001, 1 << 20, 0);
    let (down_client, down_server) = tcp_exchange(&monitored.pair, 5002, 0, 1 << 20);
    let records = monitored.stop();

    // Retransmissions, if any, are on the wire too: in both the counts and the expectation.
    assert!(up_client.payload >= 1 << 20 && down_server.payload >= 1 << 20);
    let upload = find(&records, "tcp", VethPair::CLIENT_IP, 5001);
    assert_counts(upload, up_client.frames(), up_server.frames());
    assert_eq!(upload["tcp_state"], "closed");
    let download = find(&records, "tcp", VethPair::CLIENT_IP, 5002);
    assert_counts(download, down_client.frames(), down_server.frames());
    assert!(down_server.segments > 700, "1 MiB is hundreds of segments");
}

#[test]
fn udp_datagrams_of_known_sizes_are_counted_exactly() {
    for hook in HOOKS {
        let monitored = Monitored::start(hook);
        udp_exchange(&monitored.pair, VethPair::SERVER_IP);
        assert_udp_exchange(&monitored.stop(), VethPair::SERVER_IP);
    }
}

#[test]
fn auto_picks_tc_on_veth_and_on_a_device_without_native_xdp() {
    let monitored = Monitored::start("auto");
    udp_exchange(&monitored.pair, VethPair::SERVER_IP);
    assert_udp_exchange(&monitored.stop(), VethPair::SERVER_IP);

    // A macvlan device on the server end: no native XDP at all (today flowmon fell back to
    // generic XDP there).
    const MACVLAN_IF: &str = "mv0";
    const MACVLAN_IP: &str = "10.199.0.3";
    let pair = VethPair::new();
    pair.add_server_macvlan(MACVLAN_IF, MACVLAN_IP);
    let agent = Agent::start(&pair.server, MACVLAN_IF, &["--no-redis"]);
    let mut monitored = Monitored { pair, agent };
    assert_eq!(monitored.hook(MACVLAN_IF), "tc");
    udp_exchange(&monitored.pair, MACVLAN_IP);
    monitored.agent.stop();
    assert_udp_exchange(&monitored.agent.records(), MACVLAN_IP);
}

const UDP_SIZES: [usize; 4] = [1, 100, 1000, 1472];

/// Datagrams of every size in `UDP_SIZES` from the client to `server_ip`:5353, each answered
/// with twice its size (or as much as fits one frame).
fn udp_exchange(pair: &VethPair, server_ip: &str) {
    let (client, server) = udp_sockets(pair, 40053, (server_ip, 5353));
    for size in UDP_SIZES {
        udp_round_trip(&client, &server, size);
    }
}

fn assert_udp_exchange(records: &[Value], server_ip: &str) {
    let sizes = UDP_SIZES;
    let frame = |payload: usize| (14 + 20 + 8 + payload) as u64;
    let record = find(records, "udp", VethPair::CLIENT_IP, 5353);
    assert_eq!(record["server_ip"], server_ip);
    assert_eq!(record["client_port"], 40053);
    assert_counts(
        record,
        (4, sizes.iter().map(|&s| frame(s)).sum()),
        (4, sizes.iter().map(|&s| frame((2 * s).min(1472))).sum()),
    );
}
