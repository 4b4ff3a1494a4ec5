//! Real traffic over a veth pair between two network namespaces, flowmon attached to the server
//! end (XDP ingress, TC egress), offloads in their default state. Each flow's per-direction
//! packets and bytes are checked against exact expected values: frame sizes for ping and UDP,
//! and for TCP the kernel's own segment and byte counts (TCP_INFO) of each side.

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use flowmon_tests::{
    agent::Agent,
    netns::VethPair,
    tcp::{Sent, tcp_sent, wait_until_closed},
};
use serde_json::Value;

struct Monitored {
    pair: VethPair,
    agent: Agent,
}

impl Monitored {
    fn start() -> Self {
        let pair = VethPair::new();
        let agent = Agent::start(&pair.server, VethPair::SERVER_IF, &["--no-redis"]);
        pair.wait_for_xdp(Duration::from_secs(20));
        Self { pair, agent }
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
    let monitored = Monitored::start();
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

/// One TCP connection: the client sends `upload` bytes, the server `download` bytes, then
/// both close in order. Returns what each side sent, read once the connection is closed.
fn tcp_exchange(pair: &VethPair, port: u16, upload: usize, download: usize) -> (Sent, Sent) {
    let listener = pair
        .server
        .run(|| TcpListener::bind((VethPair::SERVER_IP, port)).expect("listen"));
    std::thread::scope(|scope| {
        let server = scope.spawn(|| {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(&vec![7u8; download]).unwrap();
            let mut received = Vec::new();
            stream.read_to_end(&mut received).unwrap();
            assert_eq!(received.len(), upload);
            stream.shutdown(Shutdown::Write).unwrap();
            wait_until_closed(&stream);
            // The listener's request socket sent the SYN-ACK: the accepted socket's count
            // starts after it.
            let mut sent = tcp_sent(&stream);
            sent.segments += 1;
            sent
        });
        let addr: SocketAddr = format!("{}:{port}", VethPair::SERVER_IP).parse().unwrap();
        let mut stream = pair
            .client
            .run(|| TcpStream::connect(addr).expect("connect"));
        let writer = stream.try_clone().unwrap();
        let upload_thread = scope.spawn(move || {
            let mut writer = writer;
            writer.write_all(&vec![9u8; upload]).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut received = Vec::new();
        stream.read_to_end(&mut received).unwrap();
        upload_thread.join().unwrap();
        assert_eq!(received.len(), download);
        wait_until_closed(&stream);
        let client = tcp_sent(&stream);
        (client, server.join().unwrap())
    })
}

#[test]
fn tcp_transfers_are_counted_as_the_segments_on_the_wire() {
    let monitored = Monitored::start();
    monitored.pair.disable_tcp_sack();
    // Upload: the client's segments arrive through XDP. Download: the server's leave through
    // TC egress as offloaded super-packets, counted as the segments they become.
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
    let monitored = Monitored::start();
    let sizes = [1usize, 100, 1000, 1472];
    let server = monitored
        .pair
        .server
        .run(|| UdpSocket::bind((VethPair::SERVER_IP, 5353)).unwrap());
    let client = monitored
        .pair
        .client
        .run(|| UdpSocket::bind((VethPair::CLIENT_IP, 40053)).unwrap());
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for size in sizes {
        client
            .send_to(&vec![1u8; size], (VethPair::SERVER_IP, 5353))
            .unwrap();
        let (n, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(n, size);
        // Echo twice the size, or as much as fits one frame.
        let answer = (2 * size).min(1472);
        server.send_to(&vec![2u8; answer], from).unwrap();
        assert_eq!(client.recv(&mut buf).unwrap(), answer);
    }
    let records = monitored.stop();
    let frame = |payload: usize| (14 + 20 + 8 + payload) as u64;
    let record = find(&records, "udp", VethPair::CLIENT_IP, 5353);
    assert_eq!(record["client_port"], 40053);
    assert_counts(
        record,
        (4, sizes.iter().map(|&s| frame(s)).sum()),
        (4, sizes.iter().map(|&s| frame((2 * s).min(1472))).sum()),
    );
}
