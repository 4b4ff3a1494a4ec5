//! A flow record as an IPFIX data record of its family's template: the JSON record's fields,
//! read back into their wire types, written in template order.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use rustc_hash::FxHashMap;

use super::template::{COMMUNITY_ID_LEN, Family, Field, Template, Templates};
use crate::flow::record::{CommunityId, EndReason, FlowId, FlowRecord, Protocol};

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

/// Writes flow records as data records.
pub struct Encoder {
    templates: Arc<Templates>,
    sensor_id: Vec<u8>,
    /// Interface names to their indexes, for ingressInterface.
    interfaces: FxHashMap<Arc<str>, u32>,
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
            interfaces: interfaces
                .into_iter()
                .map(|(name, index)| (name.into(), index))
                .collect(),
        }
    }

    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// Appends `record` to `v4` or `v6` as a data record of the template of its addresses'
    /// family (exactly its `record_len` bytes). A record with an address of each family (none
    /// flowmon makes) goes as IPv6, its IPv4 address mapped.
    pub fn encode(&self, record: &FlowRecord, v4: &mut Vec<u8>, v6: &mut Vec<u8>) -> Family {
        let (family, out) = match (record.client_ip, record.server_ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) => (Family::V4, v4),
            _ => (Family::V6, v6),
        };
        let template = self.templates.get(family);
        let start = out.len();
        out.resize(start + template.record_len, 0);
        self.write(template, family, record, &mut Cursor(&mut out[start..]));
        family
    }

    fn write(&self, template: &Template, family: Family, record: &FlowRecord, out: &mut Cursor) {
        // ICMP "ports" are the client's message type and, for other messages than echo, the
        // code (docs/flow-records.md): IPFIX has an element for them, and no ports.
        let (client_port, server_port, icmp_type_code) = match record.protocol {
            Protocol::ICMP | Protocol::ICMPV6 => {
                let code = if record.icmp_id.is_some() {
                    0
                } else {
                    record.server_port & 0xff
                };
                (0, 0, (record.client_port & 0xff) << 8 | code)
            }
            _ => (record.client_port, record.server_port, 0),
        };
        for field in &template.fields {
            match field {
                Field::ClientAddress => write_address(out, family, record.client_ip),
                Field::ServerAddress => write_address(out, family, record.server_ip),
                Field::ClientPort => out.put(client_port.to_be_bytes()),
                Field::ServerPort => out.put(server_port.to_be_bytes()),
                Field::Protocol => out.put_byte(record.protocol.0),
                Field::IcmpTypeCode => out.put(icmp_type_code.to_be_bytes()),
                Field::Vlan => out.put(record.vlan.to_be_bytes()),
                Field::IngressInterface => {
                    let index = self.interfaces.get(&record.iface).copied().unwrap_or(0);
                    out.put(index.to_be_bytes())
                }
                Field::FlowStart => out.put(millis(record.first_seen).to_be_bytes()),
                Field::FlowEnd => out.put(millis(record.last_seen).to_be_bytes()),
                Field::EndReason => {
                    out.put_byte(record.end_reason.map_or(ACTIVE_TIMEOUT, end_reason_code))
                }
                Field::ServerOctetTotal => out.put(record.server_bytes.to_be_bytes()),
                Field::ServerPacketTotal => out.put(record.server_packets.to_be_bytes()),
                Field::ServerOctetDelta => out.put(record.server_bytes_delta.to_be_bytes()),
                Field::ServerPacketDelta => out.put(record.server_packets_delta.to_be_bytes()),
                Field::ClientOctetTotal => out.put(record.client_bytes.to_be_bytes()),
                Field::ClientPacketTotal => out.put(record.client_packets.to_be_bytes()),
                Field::ClientOctetDelta => out.put(record.client_bytes_delta.to_be_bytes()),
                Field::ClientPacketDelta => out.put(record.client_packets_delta.to_be_bytes()),
                Field::ServerTcpFlags => out.put_byte(record.server_tcp_flags),
                Field::ClientTcpFlags => out.put_byte(record.client_tcp_flags),
                Field::ServerMac => out.put(record.server_mac.0),
                Field::ClientMac => out.put(record.client_mac.0),
                Field::ServerTtl => out.put_byte(record.server_ttl),
                Field::ClientTtl => out.put_byte(record.client_ttl),
                Field::CommunityId => write_community_id(out, &record.community_id),
                // The code of a state is its place in `TcpState::ALL` (docs/ipfix.md lists them).
                Field::TcpState => out.put_byte(record.tcp_state as u8),
                Field::FlowUuid => out.put(match &record.flow_id {
                    FlowId::Uuid(id) => id.into_bytes(),
                    // Only records read back from elsewhere: the nil UUID.
                    FlowId::Other(_) => [0; 16],
                }),
                Field::RecordSequence => {
                    let sequence = u32::try_from(record.sequence).unwrap_or(u32::MAX);
                    out.put(sequence.to_be_bytes())
                }
                Field::SensorId => out.put_slice(&self.sensor_id),
            }
        }
    }
}

/// Epoch seconds to epoch milliseconds, to the nearest: the record's times are whole kernel
/// ticks, which a float of seconds holds to well under a millisecond.
fn millis(secs: f64) -> u64 {
    (secs * 1000.0).round() as u64
}

/// An address as `family`'s templates carry it.
fn write_address(out: &mut Cursor, family: Family, address: IpAddr) {
    match (family, address) {
        (Family::V4, IpAddr::V4(v4)) => out.put(v4.octets()),
        (Family::V6, IpAddr::V4(v4)) => out.put(v4.to_ipv6_mapped().octets()),
        (_, IpAddr::V6(v6)) => out.put(v6.octets()),
    }
}

/// The id's text in its fixed-size field, zero-padded (a text read back from elsewhere is cut
/// to fit).
fn write_community_id(out: &mut Cursor, id: &CommunityId) {
    let mut field = [0; COMMUNITY_ID_LEN as usize];
    let text = id.as_str().as_bytes();
    let len = text.len().min(field.len());
    field[..len].copy_from_slice(&text[..len]);
    out.put(field);
}

/// Where the rest of a data record goes: its bytes, made ready beforehand, written field by
/// field (no capacity to check at each).
struct Cursor<'a>(&'a mut [u8]);

impl Cursor<'_> {
    fn put<const N: usize>(&mut self, bytes: [u8; N]) {
        self.put_slice(&bytes);
    }

    fn put_byte(&mut self, byte: u8) {
        self.put([byte]);
    }

    fn put_slice(&mut self, bytes: &[u8]) {
        let (field, rest) = std::mem::take(&mut self.0).split_at_mut(bytes.len());
        field.copy_from_slice(bytes);
        self.0 = rest;
    }
}

#[cfg(test)]
mod tests {
    use flowmon_common::TcpState;

    use super::*;
    use crate::flow::record::{MacAddr, RecordType, sample};

    fn encoder() -> Encoder {
        let interfaces = HashMap::from([("eth0".to_owned(), 7)]);
        Encoder::new(Arc::new(Templates::new(6, 32473)), "sensor", interfaces)
    }

    fn tcp_record() -> FlowRecord {
        FlowRecord {
            flow_id: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".parse().unwrap(),
            sequence: 3,
            protocol: Protocol::TCP,
            community_id: "1:LQU9qZlK+B5F3KDmev6m5PMibrg=".parse().unwrap(),
            client_ip: "192.0.2.10".parse().unwrap(),
            client_port: 40000,
            server_ip: "198.51.100.1".parse().unwrap(),
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
            tcp_state: TcpState::FinClient,
            client_ttl: 64,
            server_ttl: 57,
            client_mac: MacAddr([2, 0, 0, 0, 0, 0x0a]),
            server_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            first_seen: 1_700_000_000.123_999_9,
            last_seen: 1_700_000_060.5,
            end_reason: Some(EndReason::End),
            ..sample::record("f", 3, RecordType::Final)
        }
    }

    fn encoded(encoder: &Encoder, record: &FlowRecord) -> (Family, Vec<u8>) {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        let family = encoder.encode(record, &mut v4, &mut v6);
        let out = if family == Family::V4 { v4 } else { v6 };
        assert_eq!(out.len(), encoder.templates().get(family).record_len);
        (family, out)
    }

    #[test]
    fn a_record_is_written_field_by_field_in_template_order() {
        let encoder = encoder();
        let (family, out) = encoded(&encoder, &tcp_record());
        assert_eq!(family, Family::V4);
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
    }

    #[test]
    fn icmp_flows_carry_type_and_code_and_no_ports() {
        let encoder = encoder();
        let icmp_type_code = |record: FlowRecord| {
            let (family, out) = encoded(&encoder, &record);
            let offset = if family == Family::V4 { 8 } else { 32 };
            let ports = u32::from_be_bytes(out[offset..offset + 4].try_into().unwrap());
            assert_eq!(ports, 0, "ICMP has no ports");
            u16::from_be_bytes([out[offset + 5], out[offset + 6]])
        };
        let echo = FlowRecord {
            protocol: Protocol::ICMP,
            client_port: 8,
            server_port: 0,
            icmp_id: Some(77),
            ..tcp_record()
        };
        assert_eq!(icmp_type_code(echo), 0x0800);
        let echo6 = FlowRecord {
            protocol: Protocol::ICMPV6,
            client_ip: "2001:db8::2".parse().unwrap(),
            server_ip: "2001:db8::1".parse().unwrap(),
            client_port: 128,
            server_port: 129,
            icmp_id: Some(77),
            ..tcp_record()
        };
        assert_eq!(icmp_type_code(echo6), 0x8000);
        // Destination unreachable, port unreachable.
        let unreachable = FlowRecord {
            protocol: Protocol::ICMP,
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
            protocol: Protocol(47),
            ..tcp_record()
        };
        let (_, out) = encoded(&encoder, &record);
        assert_eq!(out[12], 47);
        assert_eq!(&out[17..21], &[0, 0, 0, 0]);
        assert_eq!(out[37], ACTIVE_TIMEOUT);
    }

    #[test]
    fn tcp_states_are_coded_by_their_place_in_the_list() {
        let encoder = encoder();
        let state_at = encoder.templates().v4.record_len - 6 - 4 - 16 - 1;
        for (code, state) in TcpState::ALL.into_iter().enumerate() {
            let record = FlowRecord {
                tcp_state: state,
                ..tcp_record()
            };
            assert_eq!(
                encoded(&encoder, &record).1[state_at],
                code as u8,
                "{state:?}"
            );
        }
    }

    #[test]
    fn records_read_back_from_elsewhere_still_make_whole_records() {
        let encoder = encoder();
        // An address of each family: IPv6, the IPv4 address mapped.
        let mixed = FlowRecord {
            server_ip: "2001:db8::1".parse().unwrap(),
            ..tcp_record()
        };
        let (family, out) = encoded(&encoder, &mixed);
        assert_eq!(family, Family::V6);
        let mapped: std::net::Ipv6Addr = "::ffff:192.0.2.10".parse().unwrap();
        assert_eq!(out[..16], mapped.octets());
        // Ids that are no UUID, a Community ID that is none and one too long.
        let uuid_at = encoder.templates().v4.record_len - 6 - 4 - 16;
        let community_at = uuid_at - 1 - 30;
        for (community_id, written) in [
            ("", [0u8; 30].to_vec()),
            ("1:x", [b"1:x".as_slice(), &[0; 27]].concat()),
            (
                "2:LQU9qZlK+B5F3KDmev6m5PMibrg=xyz",
                b"2:LQU9qZlK+B5F3KDmev6m5PMibrg=".to_vec(),
            ),
        ] {
            let record = FlowRecord {
                flow_id: "f".parse().unwrap(),
                community_id: community_id.parse().unwrap(),
                ..tcp_record()
            };
            let (_, out) = encoded(&encoder, &record);
            assert_eq!(out[community_at..community_at + 30], written[..]);
            assert_eq!(out[uuid_at..uuid_at + 16], [0; 16], "the nil UUID");
        }
    }
}
