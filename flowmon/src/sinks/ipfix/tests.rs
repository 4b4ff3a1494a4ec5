//! The sink end to end over loopback: records in, what a collector reads out, decoded from the
//! templates it was sent (not from flowmon's own description of them).

use std::{
    collections::HashMap,
    io::Read as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket},
    time::{Duration, Instant},
};

use flowmon_common::TcpState;
use uuid::Uuid;

use super::*;
use crate::{
    flow::record::{EndReason, FlowId, MacAddr, Protocol, RecordType, sample},
    metrics::{CollectorMetrics, Metrics},
};

const PEN: u32 = config::DEFAULT_ENTERPRISE_NUMBER;
const REVERSE: u32 = template::REVERSE_ENTERPRISE;

/// Record `i`: a TCP flow from its own client (IPv4 or IPv6), counts that depend on `i`.
fn record(i: u32, v6: bool) -> FlowRecord {
    let flow_id = FlowId::Uuid(Uuid::from_u128(i as u128 + 1));
    let (client_ip, server_ip): (IpAddr, IpAddr) = if v6 {
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16 + 1).into(),
            "2001:db8:ffff::1".parse().unwrap(),
        )
    } else {
        (
            Ipv4Addr::from(0x0a00_0001 + i).into(),
            "192.0.2.1".parse().unwrap(),
        )
    };
    let n = i as u64;
    FlowRecord {
        record_id: format!("{flow_id}:2"),
        flow_id,
        sequence: 2,
        iface: "eth0".into(),
        record_type: RecordType::Final,
        end_reason: Some(EndReason::Idle),
        protocol: Protocol::TCP,
        community_id: format!("1:{i:0>28}").parse().unwrap(),
        client_ip,
        client_port: 40000 + (i % 1000) as u16,
        server_ip,
        server_port: 443,
        vlan: 5,
        client_packets: n + 10,
        client_bytes: 1000 * n + 1,
        server_packets: n + 7,
        server_bytes: 2000 * n + 3,
        client_packets_delta: n + 1,
        client_bytes_delta: 100 * n + 1,
        server_packets_delta: n + 2,
        server_bytes_delta: 200 * n + 3,
        client_tcp_flags: 0x1b,
        server_tcp_flags: 0x13,
        tcp_state: TcpState::Closed,
        client_ttl: 64,
        server_ttl: 63,
        client_mac: MacAddr([2, 0, 0, 0, 0, 0x0a]),
        server_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        first_seen: 1_700_000_000.0 + i as f64 * 0.004,
        last_seen: 1_700_000_100.0 + i as f64 * 0.004,
        ..sample::record("f", 2, RecordType::Final)
    }
}

/// The UUID of a record made by [`record`].
fn uuid(record: &FlowRecord) -> Uuid {
    match record.flow_id {
        FlowId::Uuid(id) => id,
        FlowId::Other(_) => panic!("records of the tests have UUIDs"),
    }
}

fn records(range: std::ops::Range<u32>, v6: bool) -> Vec<FlowRecord> {
    range.map(|i| record(i, v6)).collect()
}

/// A data record as a collector decodes it: each element's bytes by (enterprise, id).
type Decoded = HashMap<(u32, u16), Vec<u8>>;

/// What a collector made of the messages of one transport session.
#[derive(Default)]
struct Collected {
    templates: HashMap<u16, Vec<(u32, u16, u16)>>,
    /// Each message, in order: `None` for templates, else its template and data records.
    messages: Vec<Option<(u16, usize)>>,
    records: Vec<Decoded>,
}

impl Collected {
    /// Decodes one message: header checked (version, length, domain, the sequence number
    /// counting the data records before it), then its sets.
    fn take(&mut self, message: &[u8]) {
        let be16 = |at: usize| u16::from_be_bytes([message[at], message[at + 1]]);
        let be32 = |at: usize| u32::from_be_bytes(message[at..at + 4].try_into().unwrap());
        assert_eq!(be16(0), 10, "version");
        assert_eq!(be16(2) as usize, message.len(), "message length");
        assert_eq!(be32(12), 1, "observation domain");
        assert_eq!(be32(8) as usize, self.records.len(), "sequence number");
        let mut at = 16;
        while at < message.len() {
            let (set_id, set_len) = (be16(at), be16(at + 2) as usize);
            let set = &message[at + 4..at + set_len];
            if set_id == 2 {
                self.take_templates(set);
                self.messages.push(None);
            } else {
                let fields = &self.templates[&set_id];
                let record_len: usize = fields.iter().map(|f| f.2 as usize).sum();
                assert_eq!(set.len() % record_len, 0, "whole records, no padding");
                for bytes in set.chunks(record_len) {
                    let mut offset = 0;
                    let mut decoded = Decoded::new();
                    for &(pen, id, len) in fields {
                        decoded.insert((pen, id), bytes[offset..offset + len as usize].to_vec());
                        offset += len as usize;
                    }
                    self.records.push(decoded);
                }
                self.messages.push(Some((set_id, set.len() / record_len)));
            }
            at += set_len;
        }
    }

    fn take_templates(&mut self, mut set: &[u8]) {
        while !set.is_empty() {
            let be16 = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
            let (id, count) = (be16(set, 0), be16(set, 2));
            let mut fields = Vec::new();
            let mut at = 4;
            for _ in 0..count {
                let (element, len) = (be16(set, at), be16(set, at + 2));
                if element & 0x8000 != 0 {
                    let pen = u32::from_be_bytes(set[at + 4..at + 8].try_into().unwrap());
                    fields.push((pen, element & 0x7fff, len));
                    at += 8;
                } else {
                    fields.push((0, element, len));
                    at += 4;
                }
            }
            self.templates.insert(id, fields);
            set = &set[at..];
        }
    }

    /// Every record by its flow's uuid and sequence; each must come once.
    fn by_record_id(&self) -> HashMap<(Uuid, u32), &Decoded> {
        let mut by_id = HashMap::new();
        for record in &self.records {
            let uuid = Uuid::from_slice(&record[&(PEN, 1003)]).unwrap();
            let sequence = u32::from_be_bytes(record[&(PEN, 1004)][..].try_into().unwrap());
            assert!(
                by_id.insert((uuid, sequence), record).is_none(),
                "record {uuid}:{sequence} came twice"
            );
        }
        by_id
    }
}

fn number(decoded: &Decoded, pen: u32, id: u16) -> u64 {
    decoded[&(pen, id)]
        .iter()
        .fold(0, |value, &byte| value << 8 | byte as u64)
}

/// `record` as the collector decoded it, field by field.
fn assert_decoded(record: &FlowRecord, decoded: &Decoded) {
    let v6 = record.client_ip.is_ipv6();
    let address = |ip: IpAddr| match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let (source, destination) = if v6 { (27, 28) } else { (8, 12) };
    assert_eq!(decoded[&(0, source)], address(record.client_ip));
    assert_eq!(decoded[&(0, destination)], address(record.server_ip));
    let numbers = [
        (0, 7, record.client_port as u64),
        (0, 11, record.server_port as u64),
        (0, 4, 6),
        (0, if v6 { 139 } else { 32 }, 0),
        (0, 58, record.vlan as u64),
        (0, 10, 3),
        (0, 152, (record.first_seen * 1000.0).round() as u64),
        (0, 153, (record.last_seen * 1000.0).round() as u64),
        (0, 136, 1),
        (0, 1, record.client_bytes_delta),
        (0, 2, record.client_packets_delta),
        (0, 85, record.client_bytes),
        (0, 86, record.client_packets),
        (REVERSE, 1, record.server_bytes_delta),
        (REVERSE, 2, record.server_packets_delta),
        (REVERSE, 85, record.server_bytes),
        (REVERSE, 86, record.server_packets),
        (0, 6, record.client_tcp_flags as u64),
        (REVERSE, 6, record.server_tcp_flags as u64),
        (0, 192, record.client_ttl as u64),
        (REVERSE, 192, record.server_ttl as u64),
        (PEN, 1002, 6),
        (PEN, 1004, record.sequence),
    ];
    for (pen, id, value) in numbers {
        assert_eq!(
            number(decoded, pen, id),
            value,
            "element {pen}/{id} of {record:?}"
        );
    }
    assert_eq!(decoded[&(0, 56)], [2, 0, 0, 0, 0, 0x0a]);
    assert_eq!(decoded[&(REVERSE, 56)], [2, 0, 0, 0, 0, 1]);
    assert_eq!(
        decoded[&(PEN, 1001)],
        record.community_id.to_string().as_bytes()
    );
    assert_eq!(
        FlowId::Uuid(Uuid::from_slice(&decoded[&(PEN, 1003)]).unwrap()),
        record.flow_id
    );
    assert_eq!(decoded[&(PEN, 1005)], b"sensor-1");
}

/// A sink exporting to `collector` (the configuration as `tune` leaves it), and its series.
fn sink(collector: &str, tune: impl FnOnce(&mut IpfixConfig)) -> (IpfixSink, CollectorMetrics) {
    let mut config = IpfixConfig::new(vec![collector.parse().unwrap()], "sensor-1".into());
    tune(&mut config);
    let interfaces = HashMap::from([("eth0".to_owned(), 3)]);
    let metrics = Metrics::new();
    let sink = IpfixSink::start(&config, interfaces, &metrics.ipfix).unwrap();
    (sink, metrics.ipfix.collector(collector))
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A UDP collector with room for a burst: what overflows a socket's receive buffer is lost
/// without a trace (no ICMP error reports it).
fn udp_collector(addr: &str) -> UdpSocket {
    let socket = UdpSocket::bind(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // As root, past the system's limit on receive buffers.
    let bytes: libc::c_int = 8 << 20;
    set_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &bytes)
        .expect("SO_RCVBUFFORCE (the tests run as root)");
    socket
}

/// Reads datagrams until `collected` holds `records` data records.
fn receive_udp(socket: &UdpSocket, collected: &mut Collected, records: usize) {
    let mut buf = [0u8; 65536];
    while collected.records.len() < records {
        let len = socket.recv(&mut buf).expect("a message before the timeout");
        assert!(len <= super::udp::MAX_SEND_BYTES, "message of {len} bytes");
        collected.take(&buf[..len]);
    }
}

/// Accepts the exporter's connection and reads `records` data records from it, the templates
/// first (on every connection).
fn accept_and_collect(listener: &TcpListener, records: usize) -> (std::net::TcpStream, Collected) {
    let (mut stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut collected = Collected::default();
    receive_tcp(&mut stream, &mut collected, records);
    assert_eq!(collected.messages[0], None, "templates first");
    (stream, collected)
}

/// Reads the stream until `collected` holds `records` data records.
fn receive_tcp(stream: &mut std::net::TcpStream, collected: &mut Collected, records: usize) {
    while collected.records.len() < records {
        let mut header = [0u8; 4];
        stream.read_exact(&mut header).expect("a message header");
        let len = u16::from_be_bytes([header[2], header[3]]) as usize;
        let mut message = header.to_vec();
        message.resize(len, 0);
        stream.read_exact(&mut message[4..]).expect("the message");
        collected.take(&message);
    }
}

#[test]
fn by_default_messages_fill_what_a_datagram_carries_on_the_route() {
    let collector = udp_collector("127.0.0.1:0");
    let url = format!("udp://{}", collector.local_addr().unwrap());
    let (mut sink, _) = sink(&url, |_| {});
    sink.write(&records(0..1000, false));
    let mut collected = Collected::default();
    receive_udp(&collector, &mut collected, 1000);
    // Loopback carries 65,507 bytes in a datagram: 369 IPv4 records of 177 bytes a message,
    // after the header (16) and the set's (4).
    let data: Vec<_> = collected.messages.iter().flatten().collect();
    assert_eq!(data, [&(256, 369), &(256, 369), &(256, 262)]);
}

#[test]
fn udp_sends_the_templates_first_and_every_record_as_it_was() {
    let collector = udp_collector("127.0.0.1:0");
    let url = format!("udp://{}", collector.local_addr().unwrap());
    let (mut sink, series) = sink(&url, |c| {
        c.template_refresh = Duration::from_millis(300);
        c.udp_message_size = Some(1400);
    });
    let mut sent = records(0..1000, false);
    sent.extend(records(1000..1300, true));
    sink.write(&sent);

    let mut collected = Collected::default();
    receive_udp(&collector, &mut collected, sent.len());
    assert_eq!(collected.messages[0], None, "templates first");
    let by_id = collected.by_record_id();
    for record in &sent {
        assert_decoded(record, by_id[&(uuid(record), 2)]);
    }
    // Full messages: 7 IPv4 records of 177 bytes, 6 IPv6 of 201, in 1,400 bytes.
    let full = collected
        .messages
        .iter()
        .filter(|m| matches!(m, Some((256, 7) | (257, 6))));
    assert_eq!(full.count(), 1000 / 7 + 300 / 6);

    // The templates again after the refresh interval.
    let mut buf = [0u8; 2048];
    let len = collector.recv(&mut buf).expect("a template refresh");
    collected.take(&buf[..len]);
    assert_eq!(collected.messages.last(), Some(&None));

    assert_eq!(series.records_sent.get(), 1300);
    assert_eq!(series.records_dropped.get(), 0);
    assert_eq!(series.up.get(), 1);
    drop(sink);
    assert_eq!(
        series.messages_sent.get() as usize,
        collected.messages.len(),
        "every message sent was received"
    );
}

/// A loopback port nothing listens on (it was free a moment ago).
fn unused_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("an ephemeral port")
        .port()
}

#[test]
fn udp_loss_to_a_closed_port_is_counted_and_the_collector_probed_back() {
    let port = unused_port();
    let url = format!("udp://127.0.0.1:{port}");
    let (mut sink, series) = sink(&url, |_| {});
    sink.write(&records(0..100, false));
    wait_until("the records are counted as dropped", || {
        series.records_dropped.get() == 100
    });
    assert_eq!(series.up.get(), 0);

    // The collector comes back: a probe brings the templates, then records flow again.
    let collector = udp_collector(&format!("127.0.0.1:{port}"));
    let mut collected = Collected::default();
    let mut buf = [0u8; 2048];
    let len = collector.recv(&mut buf).expect("a probe");
    // A probe carries the sequence number of the records dropped before it.
    assert_eq!(u32::from_be_bytes(buf[8..12].try_into().unwrap()), 100);
    collected.records = vec![Decoded::new(); 100];
    collected.take(&buf[..len]);
    assert_eq!(collected.messages, [None]);
    wait_until("the collector is up again", || series.up.get() == 1);
    sink.write(&records(100..150, false));
    receive_udp(&collector, &mut collected, 150);
    wait_until("the records are counted as sent", || {
        series.records_sent.get() == 50
    });

    // It goes away again: the next records leave, and the port's errors report their loss.
    drop(collector);
    sink.write(&records(150..210, false));
    wait_until("the errors are counted", || {
        series.records_dropped.get() == 160
    });
    assert_eq!(series.up.get(), 0);
    assert_eq!(series.records_sent.get(), 110, "sent, then reported lost");
    drop(sink);
    assert_eq!(series.records_dropped.get(), 160);
}

#[test]
fn tcp_keeps_records_while_the_collector_is_away_and_sends_each_once() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("tcp://{addr}");
    let (mut sink, series) = sink(&url, |_| {});
    let first = records(0..500, false);
    sink.write(&first);
    let (stream, before) = accept_and_collect(&listener, 500);

    // The collector goes away; records come meanwhile.
    drop((stream, listener));
    wait_until("the exporter sees the collector gone", || {
        series.up.get() == 0
    });
    let second = records(500..1200, true);
    sink.write(&second);
    let listener = TcpListener::bind(addr).unwrap();
    let (_stream, after) = accept_and_collect(&listener, 700);

    let mut by_id = before.by_record_id();
    let after_ids = after.by_record_id();
    for (id, decoded) in after_ids {
        assert!(by_id.insert(id, decoded).is_none(), "{id:?} came twice");
    }
    for record in first.iter().chain(&second) {
        assert_decoded(record, by_id[&(uuid(record), 2)]);
    }
    drop(sink);
    assert_eq!(series.records_sent.get(), 1200);
    assert_eq!(series.records_dropped.get(), 0);
}

/// The bytes `stream` holds unread, left where they are.
fn peek_all(stream: &std::net::TcpStream) -> Vec<u8> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(stream);
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `unread`.
    assert_eq!(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut unread) }, 0);
    let mut buf = vec![0u8; unread as usize];
    // SAFETY: recv writes at most buf.len() bytes into buf.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK) };
    assert_eq!(n, unread as isize);
    buf
}

#[test]
fn tcp_sends_again_what_a_dead_connection_left_unacknowledged_and_only_that() {
    // A collector that takes the connection but never reads, with a small receive buffer:
    // it acknowledges a few 64 KiB messages, the rest wait in the exporter's socket or queue.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let bytes: libc::c_int = 65536;
    set_option(&listener, libc::SOL_SOCKET, libc::SO_RCVBUF, &bytes).unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("tcp://{addr}");
    let (mut sink, series) = sink(&url, |_| {});
    let all = records(0..3000, false);
    sink.write(&all);
    let (stream, _) = listener.accept().unwrap();
    // The templates (364 bytes) and a whole message of 364 records (64,448 bytes).
    wait_until("the collector holds a whole message unread", || {
        peek_all(&stream).len() >= 364 + 64_448
    });
    // It dies with what it acknowledged unread: a reset, those messages lost with it.
    let acknowledged = peek_all(&stream);
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    set_option(&stream, libc::SOL_SOCKET, libc::SO_LINGER, &linger).unwrap();
    drop((stream, listener));

    let mut lost = Collected::default();
    let mut rest = &acknowledged[..];
    while rest.len() >= 4 {
        let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        if rest.len() < len {
            break;
        }
        lost.take(&rest[..len]);
        rest = &rest[len..];
    }
    assert!(
        !lost.records.is_empty() && lost.records.len() < 3000,
        "{}",
        lost.records.len()
    );

    let listener = TcpListener::bind(addr).unwrap();
    let (_stream, after) = accept_and_collect(&listener, 3000 - lost.records.len());
    let mut ids = lost.by_record_id();
    for (id, record) in after.by_record_id() {
        assert!(
            ids.insert(id, record).is_none(),
            "{id:?} sent again though acknowledged"
        );
    }
    assert_eq!(ids.len(), 3000, "the others all sent again");
    drop(sink);
    assert_eq!(
        series.records_sent.get() as usize,
        3000,
        "acknowledged by the first connection or the second"
    );
}

#[test]
fn a_full_queue_refuses_records_and_a_shutdown_drops_what_no_collector_took() {
    let port = unused_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let (mut sink, series) = sink(&url, |c| {
        c.queue_bytes = 120_000;
        c.shutdown_grace = Duration::from_millis(200);
        c.udp_message_size = Some(1400);
    });
    sink.write(&records(0..1000, false));
    // Chunks of one send's worth, 52 messages of 7 records of 177 bytes: 364 records (64,428
    // bytes), 364, and 272 (48,144 bytes). The second does not fit beside the first.
    wait_until("the refused records are counted", || {
        series.records_dropped.get() == 364
    });
    drop(sink);
    assert_eq!(series.records_dropped.get(), 1000);
    assert_eq!(series.records_sent.get(), 0);
}
