//! Flows in userspace: one flow merged from the kernel's per-CPU control blocks, and the records
//! made of it.

pub mod clock;
pub mod journal;
pub mod monitor;
pub mod peers;
pub mod record;
pub mod tracker;

use std::net::{IpAddr, Ipv6Addr};

use crate::datapath::FlowTable;
use flowmon_common::{
    Address, FlowBlock, FlowKey, SIDE_HI, SIDE_LO, TcpState, address_bytes, ip_proto, key_kind,
    orientation,
};

/// One side of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    pub packets: u64,
    pub bytes: u64,
    pub tcp_flags: u8,
    pub ttl: u8,
    pub mac: [u8; 6],
}

/// A flow as the kernel saw it at one read: the per-CPU blocks merged, oriented client to
/// server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub key: FlowKey,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub ifindex: u32,
    pub client: Endpoint,
    pub server: Endpoint,
}

impl Flow {
    /// Every flow of `table` that some CPU has seen, merged.
    pub fn all(table: &FlowTable) -> Vec<Flow> {
        table
            .iter()
            .filter_map(|(key, blocks)| Self::merge(key, blocks))
            .collect()
    }

    /// Merges the per-CPU blocks of `key`. Counters add up; the orientation comes from the CPU
    /// with the strongest evidence, the earliest first packet breaking ties. `None` when no CPU
    /// has seen the flow (an entry the kernel is still creating).
    pub fn merge(key: FlowKey, blocks: &[FlowBlock]) -> Option<Self> {
        let seen = || blocks.iter().filter(|b| b.orientation != 0);
        let earliest = seen().min_by_key(|b| b.first_seen_ns)?;
        let decisive = seen()
            .max_by_key(|b| {
                (
                    b.orientation & orientation::STRENGTH,
                    std::cmp::Reverse(b.first_seen_ns),
                )
            })
            .unwrap_or(earliest);
        let client_side = if decisive.orientation & orientation::CLIENT_IS_HI != 0 {
            SIDE_HI
        } else {
            SIDE_LO
        };
        let side = |index: usize| {
            let mut endpoint = Endpoint {
                ip: ip_of(if index == SIDE_LO {
                    &key.addr_lo
                } else {
                    &key.addr_hi
                }),
                port: 0,
                packets: 0,
                bytes: 0,
                tcp_flags: 0,
                ttl: 0,
                mac: [0; 6],
            };
            for block in seen() {
                endpoint.packets += block.packets[index];
                endpoint.bytes += block.bytes[index];
                endpoint.tcp_flags |= block.tcp_flags[index];
            }
            // TTL and MAC of the side's first packet: from the CPU that saw it first.
            if let Some(first) = seen()
                .filter(|b| b.packets[index] > 0)
                .min_by_key(|b| b.first_seen_ns)
            {
                endpoint.ttl = first.ttl[index];
                endpoint.mac = first.mac[index];
            }
            endpoint
        };
        let mut client = side(client_side);
        let mut server = side(client_side ^ 1);
        (client.port, server.port) = ports(&key, client_side);
        Some(Self {
            key,
            first_seen_ns: earliest.first_seen_ns,
            last_seen_ns: seen().map(|b| b.last_seen_ns).max().unwrap_or(0),
            ifindex: earliest.ifindex,
            client,
            server,
        })
    }

    pub fn tcp_state(&self) -> TcpState {
        if self.key.protocol == ip_proto::TCP {
            TcpState::from_flags(self.client.tcp_flags, self.server.tcp_flags)
        } else {
            TcpState::None
        }
    }

    /// The echo identifier of an ICMP echo flow.
    pub fn icmp_id(&self) -> Option<u16> {
        (self.key.kind == key_kind::ICMP_ECHO).then_some(self.key.port_lo)
    }

    pub fn protocol_name(&self) -> String {
        match self.key.protocol {
            ip_proto::TCP => "tcp".into(),
            ip_proto::UDP => "udp".into(),
            ip_proto::ICMP => "icmp".into(),
            ip_proto::ICMPV6 => "icmpv6".into(),
            other => other.to_string(),
        }
    }

    /// Community ID v1 of the flow, the key Zeek, Suricata and others join on.
    pub fn community_id(&self) -> String {
        let has_ports = matches!(
            self.key.protocol,
            ip_proto::TCP | ip_proto::UDP | ip_proto::ICMP | ip_proto::ICMPV6 | SCTP
        );
        let (sport, dport) = match self.key.kind {
            // ICMP is hashed on the client's message type and its code (0 for echo).
            key_kind::ICMP_ECHO => (self.client.port, 0),
            _ => (self.client.port, self.server.port),
        };
        community_id::calculate_community_id(
            0,
            self.client.ip,
            self.server.ip,
            has_ports.then_some(sport),
            has_ports.then_some(dport),
            self.key.protocol,
            false,
        )
        .unwrap_or_default()
    }
}

const SCTP: u8 = 132;

/// Client and server "ports": transport ports, or for ICMP the fields Zeek reports there (echo:
/// request and reply type; other messages: type and code).
fn ports(key: &FlowKey, client_side: usize) -> (u16, u16) {
    match key.kind {
        key_kind::ICMP_ECHO if key.protocol == ip_proto::ICMPV6 => (128, 129),
        key_kind::ICMP_ECHO => (8, 0),
        key_kind::ICMP_MESSAGE => (key.port_lo, key.port_hi),
        _ if client_side == SIDE_LO => (key.port_lo, key.port_hi),
        _ => (key.port_hi, key.port_lo),
    }
}

/// An address of the key; IPv4-mapped addresses are IPv4.
pub fn ip_of(address: &Address) -> IpAddr {
    let v6 = Ipv6Addr::from(address_bytes(address));
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowmon_common::tcp_flags::{ACK, SYN};

    fn v4(octets: [u8; 4]) -> Address {
        let mapped = std::net::Ipv4Addr::from(octets).to_ipv6_mapped();
        flowmon_common::address_from_bytes(mapped.octets())
    }

    fn key() -> FlowKey {
        let mut key = FlowKey {
            protocol: ip_proto::TCP,
            port_lo: 80,
            port_hi: 40000,
            ..FlowKey::default()
        };
        key.addr_lo = v4([10, 0, 0, 1]);
        key.addr_hi = v4([10, 0, 0, 2]);
        key
    }

    #[test]
    fn merge_adds_cpus_and_takes_the_strongest_orientation() {
        // CPU 0 picked the flow up mid-stream; CPU 1 saw the SYN from the hi side.
        let cpu0 = FlowBlock {
            first_seen_ns: 100,
            last_seen_ns: 500,
            packets: [3, 4],
            bytes: [300, 400],
            tcp_flags: [ACK, ACK],
            ttl: [64, 63],
            orientation: orientation::encode(false, orientation::FIRST_PACKET),
            ..FlowBlock::default()
        };
        let cpu1 = FlowBlock {
            first_seen_ns: 200,
            last_seen_ns: 900,
            packets: [1, 2],
            bytes: [60, 120],
            tcp_flags: [SYN | ACK, SYN],
            ttl: [62, 61],
            orientation: orientation::encode(true, orientation::HANDSHAKE),
            ..FlowBlock::default()
        };
        let flow = Flow::merge(key(), &[cpu0, cpu1, FlowBlock::default()]).unwrap();
        assert_eq!(flow.client.ip.to_string(), "10.0.0.2");
        assert_eq!(flow.client.port, 40000);
        assert_eq!(flow.server.port, 80);
        assert_eq!((flow.client.packets, flow.client.bytes), (6, 520));
        assert_eq!((flow.server.packets, flow.server.bytes), (4, 360));
        assert_eq!(flow.client.tcp_flags, SYN | ACK);
        // First TTL of each side comes from the CPU that saw the flow first.
        assert_eq!((flow.client.ttl, flow.server.ttl), (63, 64));
        assert_eq!((flow.first_seen_ns, flow.last_seen_ns), (100, 900));
        assert_eq!(flow.tcp_state(), TcpState::Established);
    }

    #[test]
    fn an_entry_no_cpu_has_seen_is_not_a_flow() {
        assert!(Flow::merge(key(), &[FlowBlock::default(); 2]).is_none());
    }

    #[test]
    fn community_id_matches_the_published_test_vector() {
        // Community ID spec baseline: 128.232.110.120:34855 -> 66.35.250.204:80 TCP, seed 0.
        let mut key = FlowKey {
            protocol: ip_proto::TCP,
            port_lo: 80,
            port_hi: 34855,
            ..FlowKey::default()
        };
        key.addr_lo = v4([66, 35, 250, 204]);
        key.addr_hi = v4([128, 232, 110, 120]);
        let block = FlowBlock {
            first_seen_ns: 1,
            packets: [0, 1],
            orientation: orientation::encode(true, orientation::HANDSHAKE),
            ..FlowBlock::default()
        };
        let flow = Flow::merge(key, &[block]).unwrap();
        assert_eq!(flow.community_id(), "1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
    }
}
