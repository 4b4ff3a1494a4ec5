//! A flow record as an IPFIX data record of its family's template: the JSON record's fields,
//! read back into their wire types, written in template order.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use flowmon_common::TcpState;
use rustc_hash::FxHashMap;
use uuid::Uuid;

use super::template::{COMMUNITY_ID_LEN, Family, Field, Template, Templates};
use crate::flow::record::{EndReason, FlowRecord};

/// flowEndReason of an interim record: "active timeout".
const ACTIVE_TIMEOUT: u8 = 2;

/// The flowEndReason code of a final record (RFC 7012's registry).
fn end_reason_code(reason: EndReason) -> u8 {
    match reason {
        EndReason::Idle => 1,
        EndReason::End => 3,
        EndReason::Forced => 4,
        EndReason::Evicted => 5,
    }
}

/// tcpState values, by code: the position in this list (docs/ipfix.md lists them).
const TCP_STATES: [TcpState; 8] = [
    TcpState::None,
    TcpState::Syn,
    TcpState::SynAck,
    TcpState::Established,
    TcpState::FinClient,
    TcpState::FinServer,
    TcpState::Closed,
    TcpState::Rst,
];

const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// A record flowmon made that does not read back (never expected: flowmon wrote it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("record {record_id}: unreadable {field}")]
pub struct UnreadableRecord {
    pub record_id: String,
    pub field: &'static str,
}

/// Writes flow records as data records.
pub struct Encoder {
    templates: Arc<Templates>,
    sensor_id: Vec<u8>,
    /// Interface names to their indexes, for ingressInterface.
    interfaces: FxHashMap<String, u32>,
}

impl Encoder {
    /// `sensor_id` must be as long as the templates' sensorId element.
    pub fn new(
        templates: Arc<Templates>,
        sensor_id: &str,
        interfaces: HashMap<String, u32>,
    ) -> Self {
        Self {
            templates,
            sensor_id: sensor_id.as_bytes().to_vec(),
            interfaces: interfaces.into_iter().collect(),
        }
    }

    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// Appends `record` to `v4` or `v6`, by its family, as a data record of that family's
    /// template (exactly its `record_len` bytes); on error nothing is written.
    pub fn encode(
        &self,
        record: &FlowRecord,
        v4: &mut Vec<u8>,
        v6: &mut Vec<u8>,
    ) -> Result<Family, UnreadableRecord> {
        let values = Values::read(record, &self.interfaces)?;
        let (family, out) = match values.client {
            IpAddr::V4(_) => (Family::V4, v4),
            IpAddr::V6(_) => (Family::V6, v6),
        };
        let template = self.templates.get(family);
        out.reserve(template.record_len);
        self.write(template, record, &values, out);
        Ok(family)
    }

    /// Asks the CPU to fetch the text `encode` will read of `record`: a poll's records lie
    /// scattered in memory, and waiting for each of their strings in turn costs more than
    /// encoding them (twice as much, measured).
    pub fn prefetch(record: &FlowRecord) {
        #[cfg(target_arch = "x86_64")]
        for text in [
            &record.client_ip,
            &record.server_ip,
            &record.client_mac,
            &record.server_mac,
            &record.flow_id,
            &record.community_id,
            &record.protocol,
            &record.tcp_state,
            &record.iface,
        ] {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            // SAFETY: a prefetch only hints at an address; it reads nothing and cannot fault.
            unsafe { _mm_prefetch(text.as_ptr().cast(), _MM_HINT_T0) };
        }
    }

    fn write(&self, template: &Template, record: &FlowRecord, v: &Values, out: &mut Vec<u8>) {
        for field in &template.fields {
            match field {
                Field::ClientAddress => write_address(out, v.client),
                Field::ServerAddress => write_address(out, v.server),
                Field::ClientPort => out.extend_from_slice(&v.client_port.to_be_bytes()),
                Field::ServerPort => out.extend_from_slice(&v.server_port.to_be_bytes()),
                Field::Protocol => out.push(v.protocol),
                Field::IcmpTypeCode => out.extend_from_slice(&v.icmp_type_code.to_be_bytes()),
                Field::Vlan => out.extend_from_slice(&record.vlan.to_be_bytes()),
                Field::IngressInterface => out.extend_from_slice(&v.ingress.to_be_bytes()),
                Field::FlowStart => out.extend_from_slice(&millis(record.first_seen).to_be_bytes()),
                Field::FlowEnd => out.extend_from_slice(&millis(record.last_seen).to_be_bytes()),
                Field::EndReason => out.push(v.end_reason),
                Field::ServerOctetTotal => {
                    out.extend_from_slice(&record.server_bytes.to_be_bytes())
                }
                Field::ServerPacketTotal => {
                    out.extend_from_slice(&record.server_packets.to_be_bytes())
                }
                Field::ServerOctetDelta => {
                    out.extend_from_slice(&record.server_bytes_delta.to_be_bytes())
                }
                Field::ServerPacketDelta => {
                    out.extend_from_slice(&record.server_packets_delta.to_be_bytes())
                }
                Field::ClientOctetTotal => {
                    out.extend_from_slice(&record.client_bytes.to_be_bytes())
                }
                Field::ClientPacketTotal => {
                    out.extend_from_slice(&record.client_packets.to_be_bytes())
                }
                Field::ClientOctetDelta => {
                    out.extend_from_slice(&record.client_bytes_delta.to_be_bytes())
                }
                Field::ClientPacketDelta => {
                    out.extend_from_slice(&record.client_packets_delta.to_be_bytes())
                }
                Field::ServerTcpFlags => out.push(record.server_tcp_flags),
                Field::ClientTcpFlags => out.push(record.client_tcp_flags),
                Field::ServerMac => out.extend_from_slice(&v.server_mac),
                Field::ClientMac => out.extend_from_slice(&v.client_mac),
                Field::ServerTtl => out.push(record.server_ttl),
                Field::ClientTtl => out.push(record.client_ttl),
                Field::CommunityId => {
                    write_fixed(out, record.community_id.as_bytes(), COMMUNITY_ID_LEN)
                }
                Field::TcpState => out.push(v.tcp_state),
                Field::FlowUuid => out.extend_from_slice(&v.flow_uuid),
                Field::RecordSequence => out.extend_from_slice(&v.sequence.to_be_bytes()),
                Field::SensorId => out.extend_from_slice(&self.sensor_id),
            }
        }
    }
}

/// What a record holds as text or in other units than the wire's.
struct Values {
    client: IpAddr,
    server: IpAddr,
    client_port: u16,
    server_port: u16,
    protocol: u8,
    icmp_type_code: u16,
    ingress: u32,
    end_reason: u8,
    client_mac: [u8; 6],
    server_mac: [u8; 6],
    tcp_state: u8,
    flow_uuid: [u8; 16],
    sequence: u32,
}

impl Values {
    fn read(
        record: &FlowRecord,
        interfaces: &FxHashMap<String, u32>,
    ) -> Result<Self, UnreadableRecord> {
        let address =
            |text: &str, field| parse_address(text).ok_or_else(|| unreadable(record, field));
        let (client, server) = (
            address(&record.client_ip, "client_ip")?,
            address(&record.server_ip, "server_ip")?,
        );
        if client.is_ipv4() != server.is_ipv4() {
            return Err(unreadable(record, "server_ip"));
        }
        let protocol =
            protocol_number(&record.protocol).ok_or_else(|| unreadable(record, "protocol"))?;
        // ICMP "ports" are the client's message type and, for other messages than echo, the
        // code (docs/flow-records.md): IPFIX has an element for them, and no ports.
        let (client_port, server_port, icmp_type_code) = match protocol {
            ICMP | ICMPV6 => {
                let code = if record.icmp_id.is_some() {
                    0
                } else {
                    record.server_port & 0xff
                };
                (0, 0, (record.client_port & 0xff) << 8 | code)
            }
            _ => (record.client_port, record.server_port, 0),
        };
        let mac = |text: &str, field| parse_mac(text).ok_or_else(|| unreadable(record, field));
        Ok(Self {
            client,
            server,
            client_port,
            server_port,
            protocol,
            icmp_type_code,
            ingress: interfaces.get(&record.iface).copied().unwrap_or(0),
            end_reason: record.end_reason.map_or(ACTIVE_TIMEOUT, end_reason_code),
            client_mac: mac(&record.client_mac, "client_mac")?,
            server_mac: mac(&record.server_mac, "server_mac")?,
            tcp_state: TCP_STATES
                .iter()
                .position(|state| state.as_str() == record.tcp_state)
                .ok_or_else(|| unreadable(record, "tcp_state"))? as u8,
            flow_uuid: Uuid::parse_str(&record.flow_id)
                .map_err(|_| unreadable(record, "flow_id"))?
                .into_bytes(),
            sequence: u32::try_from(record.sequence).unwrap_or(u32::MAX),
        })
    }
}

fn unreadable(record: &FlowRecord, field: &'static str) -> UnreadableRecord {
    UnreadableRecord {
        record_id: record.record_id.clone(),
        field,
    }
}

/// The protocol number of a record's `protocol`: a name flowmon gives, or the number.
fn protocol_number(name: &str) -> Option<u8> {
    match name {
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(ICMP),
        "icmpv6" => Some(ICMPV6),
        number => number.parse().ok(),
    }
}

/// "aa:bb:cc:dd:ee:ff", as records write MACs (read byte by byte: a split and a radix parse per
/// octet cost ten times as much, at a million records a poll).
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let text = text.as_bytes();
    if text.len() != 17 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, octet) in mac.iter_mut().enumerate() {
        let at = 3 * i;
        if i > 0 && text[at - 1] != b':' {
            return None;
        }
        *octet = hex_digit(text[at])? << 4 | hex_digit(text[at + 1])?;
    }
    Some(mac)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// An address as records write it: IPv4 dotted quads read byte by byte (most records, and
/// several times faster than the general parser), anything else by the standard library.
fn parse_address(text: &str) -> Option<IpAddr> {
    parse_ipv4(text.as_bytes())
        .map(IpAddr::V4)
        .or_else(|| text.parse().ok())
}

fn parse_ipv4(text: &[u8]) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split(|&c| c == b'.');
    for octet in &mut octets {
        let part = parts.next()?;
        // No empty parts, no leading zeros (as the standard parser), at most three digits.
        if part.is_empty() || part.len() > 3 || (part.len() > 1 && part[0] == b'0') {
            return None;
        }
        let mut value = 0u16;
        for &c in part {
            if !c.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u16::from(c - b'0');
        }
        *octet = u8::try_from(value).ok()?;
    }
    parts.next().is_none().then_some(octets.into())
}

/// Epoch seconds to epoch milliseconds, to the nearest: the record's times are whole kernel
/// ticks, which a float of seconds holds to well under a millisecond.
fn millis(secs: f64) -> u64 {
    (secs * 1000.0).round() as u64
}

fn write_address(out: &mut Vec<u8>, address: IpAddr) {
    match address {
        IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
    }
}

/// `value` in a field of `len` bytes, zero-padded (never longer: a Community ID v1 is 30).
fn write_fixed(out: &mut Vec<u8>, value: &[u8], len: u16) {
    let len = len as usize;
    let value = &value[..value.len().min(len)];
    out.extend_from_slice(value);
    out.resize(out.len() + len - value.len(), 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::record::{RecordType, sample};

    fn encoder() -> Encoder {
        let interfaces = HashMap::from([("eth0".to_owned(), 7)]);
        Encoder::new(Arc::new(Templates::new(6, 32473)), "sensor", interfaces)
    }

    fn tcp_record() -> FlowRecord {
        FlowRecord {
            flow_id: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into(),
            sequence: 3,
            protocol: "tcp".into(),
            community_id: "1:LQU9qZlK+B5F3KDmev6m5PMibrg=".into(),
            client_ip: "192.0.2.10".into(),
            client_port: 40000,
            server_ip: "198.51.100.1".into(),
            server_port: 443,
            vlan: 12,
            client_packets: 10,
            client_bytes: 1000,
            server_packets: 8,
            server_bytes: 9000,
            client_packets_delta: 4,
            client_bytes_delta: 400,
            server_packets_delta: 3,
            server_bytes_delta: 3000,
            client_tcp_flags: 0x1b,
            server_tcp_flags: 0x12,
            tcp_state: "fin_client".into(),
            client_ttl: 64,
            server_ttl: 57,
            client_mac: "02:00:00:00:00:0a".into(),
            server_mac: "02:00:00:00:00:01".into(),
            first_seen: 1_700_000_000.123_999_9,
            last_seen: 1_700_000_060.5,
            end_reason: Some(EndReason::End),
            ..sample::record("f", 3, RecordType::Final)
        }
    }

    #[test]
    fn a_record_is_written_field_by_field_in_template_order() {
        let encoder = encoder();
        let mut out = Vec::new();
        assert_eq!(
            encoder.encode(&tcp_record(), &mut out, &mut Vec::new()),
            Ok(Family::V4)
        );
        let mut expected: Vec<u8> = Vec::new();
        expected.extend([192, 0, 2, 10, 198, 51, 100, 1]);
        expected.extend(40000u16.to_be_bytes());
        expected.extend(443u16.to_be_bytes());
        expected.push(6);
        expected.extend([0, 0]); // no ICMP type and code
        expected.extend(12u16.to_be_bytes());
        expected.extend(7u32.to_be_bytes());
        expected.extend(1_700_000_000_124u64.to_be_bytes());
        expected.extend(1_700_000_060_500u64.to_be_bytes());
        expected.push(3); // end of flow
        for counter in [9000u64, 8, 3000, 3, 1000, 10, 400, 4] {
            expected.extend(counter.to_be_bytes());
        }
        expected.extend([0x12, 0x1b]);
        expected.extend([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 10]);
        expected.extend([57, 64]);
        expected.extend(b"1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
        expected.push(4); // fin_client
        expected.extend([
            0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2,
            0xe1, 0xf0,
        ]);
        expected.extend(3u32.to_be_bytes());
        expected.extend(b"sensor");
        assert_eq!(out, expected);
        assert_eq!(out.len(), encoder.templates().v4.record_len);
    }

    #[test]
    fn icmp_flows_carry_type_and_code_and_no_ports() {
        let encoder = encoder();
        let icmp_type_code = |record: FlowRecord| {
            let (mut v4, mut v6) = (Vec::new(), Vec::new());
            let family = encoder.encode(&record, &mut v4, &mut v6).unwrap();
            let out = if family == Family::V4 { v4 } else { v6 };
            let template = encoder.templates().get(family);
            assert_eq!(out.len(), template.record_len);
            let offset = if family == Family::V4 { 8 } else { 32 };
            let ports = u32::from_be_bytes(out[offset..offset + 4].try_into().unwrap());
            assert_eq!(ports, 0, "ICMP has no ports");
            u16::from_be_bytes([out[offset + 5], out[offset + 6]])
        };
        let echo = FlowRecord {
            protocol: "icmp".into(),
            client_port: 8,
            server_port: 0,
            icmp_id: Some(77),
            ..tcp_record()
        };
        assert_eq!(icmp_type_code(echo), 0x0800);
        let echo6 = FlowRecord {
            protocol: "icmpv6".into(),
            client_ip: "2001:db8::2".into(),
            server_ip: "2001:db8::1".into(),
            client_port: 128,
            server_port: 129,
            icmp_id: Some(77),
            ..tcp_record()
        };
        assert_eq!(icmp_type_code(echo6), 0x8000);
        // Destination unreachable, port unreachable.
        let unreachable = FlowRecord {
            protocol: "icmp".into(),
            client_port: 3,
            server_port: 3,
            ..tcp_record()
        };
        assert_eq!(icmp_type_code(unreachable), 0x0303);
    }

    #[test]
    fn interim_records_end_by_active_timeout_and_unknown_interfaces_are_zero() {
        let encoder = encoder();
        let record = FlowRecord {
            record_type: RecordType::Interim,
            end_reason: None,
            iface: "lo".into(),
            protocol: "47".into(),
            ..tcp_record()
        };
        let mut out = Vec::new();
        encoder.encode(&record, &mut out, &mut Vec::new()).unwrap();
        assert_eq!(out[12], 47);
        assert_eq!(&out[17..21], &[0, 0, 0, 0]);
        assert_eq!(out[37], ACTIVE_TIMEOUT);
    }

    #[test]
    fn unreadable_records_are_refused_and_leave_nothing_behind() {
        let encoder = encoder();
        for (record, field) in [
            (
                FlowRecord {
                    client_ip: "10.0.0.300".into(),
                    ..tcp_record()
                },
                "client_ip",
            ),
            (
                FlowRecord {
                    server_ip: "2001:db8::1".into(),
                    ..tcp_record()
                },
                "server_ip",
            ),
            (
                FlowRecord {
                    client_mac: "02:00:00:00:00".into(),
                    ..tcp_record()
                },
                "client_mac",
            ),
            (
                FlowRecord {
                    server_mac: "02:00:00:00:00:0g".into(),
                    ..tcp_record()
                },
                "server_mac",
            ),
            (
                FlowRecord {
                    protocol: "sctp".into(),
                    ..tcp_record()
                },
                "protocol",
            ),
            (
                FlowRecord {
                    tcp_state: "listen".into(),
                    ..tcp_record()
                },
                "tcp_state",
            ),
            (
                FlowRecord {
                    flow_id: "f".into(),
                    ..tcp_record()
                },
                "flow_id",
            ),
        ] {
            let (mut v4, mut v6) = (vec![1, 2, 3], vec![4]);
            let err = encoder.encode(&record, &mut v4, &mut v6).unwrap_err();
            assert_eq!(err.field, field);
            assert_eq!((v4, v6), (vec![1, 2, 3], vec![4]));
        }
    }

    #[test]
    fn addresses_read_as_the_standard_parser_reads_them() {
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "192.168.100.200",
            "256.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1..2.3",
            "1.2.3.4 ",
            "+1.2.3.4",
            "1.2.3.1000",
            "",
            "::",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "fe80::1%2",
        ] {
            assert_eq!(parse_address(text), text.parse().ok(), "{text:?}");
        }
    }

    #[test]
    fn macs_read_back_exactly() {
        assert_eq!(
            parse_mac("00:1b:2C:ff:00:09"),
            Some([0, 0x1b, 0x2c, 0xff, 0, 9])
        );
        for bad in [
            "",
            "00:1b:2c:ff:00",
            "00:1b:2c:ff:00:09:10",
            "0:1b:2c:ff:00:09",
            "+1:1b:2c:ff:00:09",
            "00-1b-2c-ff-00-09",
            "00:1b:2c:ff:00:0é",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
