//! The two templates flowmon exports, one for IPv4 and one for IPv6 flows, and the template set
//! that announces them. Each is a biflow (RFC 5103): the client's direction in the IANA
//! elements, the server's in their reverse elements (enterprise 29305), flowmon's own fields
//! in enterprise elements under its enterprise number. Every element has a fixed length, so
//! all records of a template are the same size (docs/ipfix.md says why).
//!
//! The order is chosen for collectors that keep the last of two elements they store in one
//! place: nfdump 1.7 stores a total and a delta counter in one column, and maps a reverse
//! element it does not know onto its forward element. Totals therefore come before deltas
//! (the collector keeps the delta, which adds up), reverse elements before forward ones (it
//! keeps the client's). flowmon's own elements are numbered from 1001, away from IANA's
//! numbers: pmacct 1.7 takes an enterprise element for the IANA one of the same number.
//! tcpControlBits takes one octet (RFC 7011's reduced-size encoding; flowmon records the eight
//! classic flags), as collectors that read only one octet of it expect.

use super::message::{HEADER_LEN, SET_HEADER_LEN};
use crate::flow::record::COMMUNITY_ID_TEXT_LEN;

/// The enterprise number of RFC 5103's reverse information elements.
pub const REVERSE_ENTERPRISE: u32 = 29305;
/// Template ids: data sets carry these as their set id.
pub const IPV4_TEMPLATE_ID: u16 = 256;
pub const IPV6_TEMPLATE_ID: u16 = 257;
/// The set id of a template set (RFC 7011, section 3.3.2).
pub const TEMPLATE_SET_ID: u16 = 2;

/// Community ID v1 is "1:" and the base64 of a SHA-1 hash: always 30 characters.
pub const COMMUNITY_ID_LEN: u16 = COMMUNITY_ID_TEXT_LEN as u16;

/// The IP version a template is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

/// Whose definition an element is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// IANA's registry.
    Iana,
    /// RFC 5103's reverse of the IANA element with the same id: the server's direction.
    Reverse,
    /// flowmon's own, under its enterprise number.
    Flowmon,
}

/// One field of a data record, in template order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    ClientAddress,
    ServerAddress,
    ClientPort,
    ServerPort,
    Protocol,
    IcmpTypeCode,
    Vlan,
    IngressInterface,
    FlowStart,
    FlowEnd,
    EndReason,
    ServerOctetTotal,
    ServerPacketTotal,
    ServerOctetDelta,
    ServerPacketDelta,
    ClientOctetTotal,
    ClientPacketTotal,
    ClientOctetDelta,
    ClientPacketDelta,
    ServerTcpFlags,
    ClientTcpFlags,
    ServerMac,
    ClientMac,
    ServerTtl,
    ClientTtl,
    CommunityId,
    TcpState,
    FlowUuid,
    RecordSequence,
    SensorId,
}

/// An element as a template announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Element {
    pub id: u16,
    pub space: Space,
    pub length: u16,
    /// The registry's name (a reverse element's name is `reverse` and the forward name).
    pub name: &'static str,
}

impl Field {
    /// Every field, in the order of the templates.
    pub const ALL: [Field; 30] = [
        Self::ClientAddress,
        Self::ServerAddress,
        Self::ClientPort,
        Self::ServerPort,
        Self::Protocol,
        Self::IcmpTypeCode,
        Self::Vlan,
        Self::IngressInterface,
        Self::FlowStart,
        Self::FlowEnd,
        Self::EndReason,
        Self::ServerOctetTotal,
        Self::ServerPacketTotal,
        Self::ServerOctetDelta,
        Self::ServerPacketDelta,
        Self::ClientOctetTotal,
        Self::ClientPacketTotal,
        Self::ClientOctetDelta,
        Self::ClientPacketDelta,
        Self::ServerTcpFlags,
        Self::ClientTcpFlags,
        Self::ServerMac,
        Self::ClientMac,
        Self::ServerTtl,
        Self::ClientTtl,
        Self::CommunityId,
        Self::TcpState,
        Self::FlowUuid,
        Self::RecordSequence,
        Self::SensorId,
    ];

    /// The element of this field in `family`'s template; `sensor_id_len` is the length of the
    /// sensor id, a fixed-length string.
    pub fn element(self, family: Family, sensor_id_len: u16) -> Element {
        use Space::{Flowmon, Iana, Reverse};
        let v4 = family == Family::V4;
        let (id, space, length, name) = match self {
            Self::ClientAddress if v4 => (8, Iana, 4, "sourceIPv4Address"),
            Self::ServerAddress if v4 => (12, Iana, 4, "destinationIPv4Address"),
            Self::ClientAddress => (27, Iana, 16, "sourceIPv6Address"),
            Self::ServerAddress => (28, Iana, 16, "destinationIPv6Address"),
            Self::ClientPort => (7, Iana, 2, "sourceTransportPort"),
            Self::ServerPort => (11, Iana, 2, "destinationTransportPort"),
            Self::Protocol => (4, Iana, 1, "protocolIdentifier"),
            Self::IcmpTypeCode if v4 => (32, Iana, 2, "icmpTypeCodeIPv4"),
            Self::IcmpTypeCode => (139, Iana, 2, "icmpTypeCodeIPv6"),
            Self::Vlan => (58, Iana, 2, "vlanId"),
            Self::IngressInterface => (10, Iana, 4, "ingressInterface"),
            Self::FlowStart => (152, Iana, 8, "flowStartMilliseconds"),
            Self::FlowEnd => (153, Iana, 8, "flowEndMilliseconds"),
            Self::EndReason => (136, Iana, 1, "flowEndReason"),
            Self::ServerOctetTotal => (85, Reverse, 8, "reverseOctetTotalCount"),
            Self::ServerPacketTotal => (86, Reverse, 8, "reversePacketTotalCount"),
            Self::ServerOctetDelta => (1, Reverse, 8, "reverseOctetDeltaCount"),
            Self::ServerPacketDelta => (2, Reverse, 8, "reversePacketDeltaCount"),
            Self::ClientOctetTotal => (85, Iana, 8, "octetTotalCount"),
            Self::ClientPacketTotal => (86, Iana, 8, "packetTotalCount"),
            Self::ClientOctetDelta => (1, Iana, 8, "octetDeltaCount"),
            Self::ClientPacketDelta => (2, Iana, 8, "packetDeltaCount"),
            Self::ServerTcpFlags => (6, Reverse, 1, "reverseTcpControlBits"),
            Self::ClientTcpFlags => (6, Iana, 1, "tcpControlBits"),
            Self::ServerMac => (56, Reverse, 6, "reverseSourceMacAddress"),
            Self::ClientMac => (56, Iana, 6, "sourceMacAddress"),
            Self::ServerTtl => (192, Reverse, 1, "reverseIpTTL"),
            Self::ClientTtl => (192, Iana, 1, "ipTTL"),
            Self::CommunityId => (1001, Flowmon, COMMUNITY_ID_LEN, "communityId"),
            Self::TcpState => (1002, Flowmon, 1, "tcpState"),
            Self::FlowUuid => (1003, Flowmon, 16, "flowUuid"),
            Self::RecordSequence => (1004, Flowmon, 4, "recordSequence"),
            Self::SensorId => (1005, Flowmon, sensor_id_len, "sensorId"),
        };
        Element {
            id,
            space,
            length,
            name,
        }
    }
}

/// One template: its id, its fields and the size of each of its records.
#[derive(Clone, Debug)]
pub struct Template {
    pub id: u16,
    pub family: Family,
    pub fields: Vec<Field>,
    pub elements: Vec<Element>,
    pub record_len: usize,
}

impl Template {
    /// `family`'s template; without the sensor id when it is empty (a field of no length).
    pub fn new(family: Family, sensor_id_len: u16) -> Self {
        let fields: Vec<Field> = Field::ALL
            .into_iter()
            .filter(|&field| field != Field::SensorId || sensor_id_len > 0)
            .collect();
        let elements: Vec<Element> = fields
            .iter()
            .map(|field| field.element(family, sensor_id_len))
            .collect();
        Self {
            id: match family {
                Family::V4 => IPV4_TEMPLATE_ID,
                Family::V6 => IPV6_TEMPLATE_ID,
            },
            family,
            record_len: elements.iter().map(|e| e.length as usize).sum(),
            fields,
            elements,
        }
    }

    /// The template record (RFC 7011, section 3.4.1): id, field count, field specifiers.
    fn write_record(&self, enterprise_number: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&(self.elements.len() as u16).to_be_bytes());
        for element in &self.elements {
            let enterprise = match element.space {
                Space::Iana => None,
                Space::Reverse => Some(REVERSE_ENTERPRISE),
                Space::Flowmon => Some(enterprise_number),
            };
            let id = element.id | if enterprise.is_some() { 0x8000 } else { 0 };
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&element.length.to_be_bytes());
            if let Some(number) = enterprise {
                out.extend_from_slice(&number.to_be_bytes());
            }
        }
    }
}

/// Both templates, and the template set that announces them.
#[derive(Clone, Debug)]
pub struct Templates {
    pub v4: Template,
    pub v6: Template,
    /// The template set, header included.
    pub set: Vec<u8>,
}

impl Templates {
    pub fn new(sensor_id_len: u16, enterprise_number: u32) -> Self {
        let (v4, v6) = (
            Template::new(Family::V4, sensor_id_len),
            Template::new(Family::V6, sensor_id_len),
        );
        let mut set = Vec::new();
        set.extend_from_slice(&TEMPLATE_SET_ID.to_be_bytes());
        set.extend_from_slice(&[0, 0]);
        v4.write_record(enterprise_number, &mut set);
        v6.write_record(enterprise_number, &mut set);
        let len = set.len() as u16;
        set[2..4].copy_from_slice(&len.to_be_bytes());
        Self { v4, v6, set }
    }

    pub fn get(&self, family: Family) -> &Template {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// The template of a data set id.
    pub fn by_id(&self, id: u16) -> Option<&Template> {
        [&self.v4, &self.v6].into_iter().find(|t| t.id == id)
    }

    /// The smallest message that holds the templates, and a record of either.
    pub fn smallest_message(&self) -> usize {
        (HEADER_LEN + self.set.len()).max(HEADER_LEN + SET_HEADER_LEN + self.v6.record_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_the_size_of_their_elements() {
        let templates = Templates::new(8, 32473);
        // Addresses, ports, protocol, ICMP, VLAN, interface, times, end reason: 38 (IPv4);
        // eight counters: 64; flags, MACs, TTLs: 16; flowmon's: 30 + 1 + 16 + 4 + 8.
        assert_eq!(templates.v4.record_len, 38 + 64 + 16 + 59);
        assert_eq!(templates.v6.record_len, templates.v4.record_len + 24);
        assert_eq!(
            Templates::new(0, 32473).v4.fields.len(),
            Field::ALL.len() - 1
        );
    }

    #[test]
    fn the_template_set_announces_both_templates_with_enterprise_bits() {
        let templates = Templates::new(3, 32473);
        let set = &templates.set;
        assert_eq!(&set[..2], &[0, 2]);
        assert_eq!(u16::from_be_bytes([set[2], set[3]]) as usize, set.len());
        // IPv4 template: id 256, 30 fields; the first one sourceIPv4Address, length 4.
        assert_eq!(&set[4..12], &[1, 0, 0, 30, 0, 8, 0, 4]);
        // Eleven IANA fields, then reverse octetTotalCount: 0x8000 | 85, length 8, 29305.
        let reverse = 8 + 11 * 4;
        assert_eq!(
            &set[reverse..reverse + 8],
            &[0x80, 85, 0, 8, 0, 0, 0x72, 0x79]
        );
        // 18 IANA and 12 enterprise elements per template.
        assert_eq!(set.len(), 4 + 2 * (4 + 18 * 4 + 12 * 8));
        // The last field of the IPv6 template: flowmon's sensorId (1005), length 3.
        assert_eq!(&set[set.len() - 8..], &[0x83, 0xed, 0, 3, 0, 0, 0x7e, 0xd9]);
    }
}
