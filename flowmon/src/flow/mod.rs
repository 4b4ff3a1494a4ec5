//! Flows in userspace: a flow as read from its kernel control block, oriented client to server,
//! and the records made of it.

pub mod journal;
pub mod monitor;
pub mod peers;
pub mod query;
pub mod record;
pub mod tracker;
pub mod wall_clock;

use std::net::{IpAddr, Ipv6Addr};

use self::record::{CommunityId, Protocol};
use crate::datapath::{FlowTable, KernelClock};
use flowmon_common::{
    Address, FlowBlock, FlowKey, SIDE_LO, TcpState, address_bytes, ip_proto, key_kind,
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

/// A flow as the kernel saw it at one read, oriented client to server, its times in
/// CLOCK_MONOTONIC nanoseconds.
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
    /// Every flow of `table`.
    pub fn all(table: &FlowTable) -> Vec<Flow> {
        table
            .iter()
            .map(|(key, block)| Self::from_block(key, block, table.clock()))
            .collect()
    }

    /// The flow of `key` as `block` holds it, oriented as [`FlowBlock::client_side`] decides.
    pub fn from_block(key: FlowKey, block: &FlowBlock, clock: &KernelClock) -> Self {
        let client_side = block.client_side(&key);
        let endpoint = |index: usize| {
            let side = block.side(index);
            Endpoint {
                ip: ip_of(if index == SIDE_LO {
                    &key.addr_lo
                } else {
                    &key.addr_hi
                }),
                port: 0,
                packets: side.packets,
                bytes: side.bytes,
                tcp_flags: side.tcp_flags(),
                ttl: side.ttl,
                mac: side.mac,
            }
        };
        let mut client = endpoint(client_side);
        let mut server = endpoint(client_side ^ 1);
        (client.port, server.port) = ports(&key, client_side);
        Self {
            key,
            first_seen_ns: clock.monotonic_ns(block.first_seen),
            last_seen_ns: clock.monotonic_ns(block.last_seen()),
            ifindex: block.ifindex,
            client,
            server,
        }
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

    pub fn protocol(&self) -> Protocol {
        Protocol(self.key.protocol)
    }

    /// The protocol's name as records write it.
    pub fn protocol_name(&self) -> String {
        self.protocol().to_string()
    }

    /// Community ID v1 of the flow, the key Zeek, Suricata and others join on; the empty one
    /// where the crate computes none (ICMPv6 over IPv4).
    pub fn community_id(&self) -> CommunityId {
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
        .parse()
        .unwrap_or_else(|never| match never {})
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
    use flowmon_common::{
        FlowSide, marks,
        tcp_flags::{ACK, SYN},
    };

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

    fn clock() -> KernelClock {
        KernelClock::test_clock()
    }

    #[test]
    fn a_block_becomes_a_flow_oriented_by_its_handshake() {
        // The hi side sent the SYN; the lo side created the entry (its SYN-ACK came first).
        let block = FlowBlock {
            lo: FlowSide {
                packets: 4,
                bytes: 360,
                last_seen: 1_900,
                marks: (SYN | ACK) as u64 | marks::ANSWERED,
                ttl: 64,
                mac: [2, 0, 0, 0, 0, 1],
                ..FlowSide::default()
            },
            hi: FlowSide {
                packets: 6,
                bytes: 520,
                last_seen: 1_800,
                marks: (SYN | ACK) as u64 | marks::OPENED,
                ttl: 63,
                ..FlowSide::default()
            },
            first_seen: 1_100,
            first_sender: SIDE_LO as u8,
            ifindex: 3,
            ..FlowBlock::default()
        };
        let flow = Flow::from_block(key(), &block, &clock());
        assert_eq!(flow.client.ip.to_string(), "10.0.0.2");
        assert_eq!(flow.client.port, 40000);
        assert_eq!(flow.server.port, 80);
        assert_eq!((flow.client.packets, flow.client.bytes), (6, 520));
        assert_eq!((flow.server.packets, flow.server.bytes), (4, 360));
        assert_eq!(flow.client.tcp_flags, SYN | ACK);
        assert_eq!((flow.client.ttl, flow.server.ttl), (63, 64));
        assert_eq!(flow.server.mac, [2, 0, 0, 0, 0, 1]);
        // The test clock: jiffy 1000 is 5 s, 4 ms a tick.
        assert_eq!(
            (flow.first_seen_ns, flow.last_seen_ns),
            (5_400_000_000, 8_600_000_000)
        );
        assert_eq!(flow.ifindex, 3);
        assert_eq!(flow.tcp_state(), TcpState::Established);
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
            first_seen: 1,
            hi: FlowSide {
                packets: 1,
                marks: SYN as u64 | marks::OPENED,
                ..FlowSide::default()
            },
            ..FlowBlock::default()
        };
        let flow = Flow::from_block(key, &block, &clock());
        assert_eq!(
            flow.community_id().to_string(),
            "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
        );
        assert!(flow.community_id().is_v1());
    }
}
