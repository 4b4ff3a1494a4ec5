//! Types shared by flowmon's kernel program and its agent.
//!
//! Everything here is `#[repr(C)]` and `no_std` so that the kernel half writes exactly the bytes
//! the agent reads. The flow map is one LRU hash shared by all CPUs: a flow has one
//! [`FlowBlock`], whose two [`FlowSide`]s lie on different cache lines, so the two directions of
//! a flow counted on two CPUs at once never contend; counters are atomic adds, and everything
//! else a packet writes is either idempotent or written once (see [`marks`]).
#![no_std]

/// Name of the flow map (`BPF_MAP_TYPE_LRU_HASH`, [`FlowKey`] to [`FlowBlock`]).
pub const FLOWS_MAP: &str = "FLOWS";
/// Name of the per-CPU array holding one [`DatapathCounters`].
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the per-CPU array counting failed flow creations, indexed by errno.
pub const CREATE_ERRORS_MAP: &str = "CREATE_ERRORS";
/// Name of the LRU map that remembers the ports of fragmented datagrams.
pub const FRAGMENTS_MAP: &str = "FRAGMENTS";
/// Name of the ring buffer of [`FlowEvent`]s: what the kernel tells the agent about flows.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the array holding one [`KernelSettings`], written by the agent after loading.
pub const SETTINGS_MAP: &str = "SETTINGS";
/// Names of the two programs in the object. The TC program counts at ingress (where XDP would
/// be dear) as well as at egress.
pub const XDP_PROGRAM: &str = "flowmon_xdp";
pub const TC_PROGRAM: &str = "flowmon_tc";
/// An XDP program that only passes packets: the baseline of the datapath benchmark.
pub const BASELINE_PROGRAM: &str = "flowmon_baseline";
/// A TC program that only lets packets go on: the baseline of the egress figures.
pub const TC_BASELINE_PROGRAM: &str = "flowmon_tc_baseline";
/// An XDP program, never attached, that writes the kernel's clocks into the frame it is run on
/// (see [`ClockSample`]): how the agent converts the kernel's jiffies into time.
pub const CLOCK_PROGRAM: &str = "flowmon_clock";

/// Default capacity of the flow map; the agent overrides it at load time (`--max-flows`).
pub const DEFAULT_MAX_FLOWS: u32 = 262_144;
/// Capacity of the fragment map: datagrams in reassembly at once.
pub const MAX_FRAGMENTED_DATAGRAMS: u32 = 4_096;
/// Entries of [`CREATE_ERRORS_MAP`]; larger errnos land in the last slot.
pub const CREATE_ERROR_SLOTS: u32 = 256;
/// Bytes of the [`EVENTS_MAP`] ring: 65,536 events. The agent drains it at least every poll,
/// and at once when it is half full.
pub const EVENTS_BYTES: u32 = 4 << 20;

/// TCP flag bits as they appear in the TCP header's flags byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// IP protocol numbers the datapath understands.
pub mod ip_proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// What the two port fields of a [`FlowKey`] hold.
pub mod key_kind {
    /// Transport ports (TCP, UDP) or zeros (any other protocol).
    pub const PORTS: u8 = 0;
    /// ICMP/ICMPv6 echo: both port fields hold the echo identifier, so request and reply meet.
    pub const ICMP_ECHO: u8 = 1;
    /// Any other ICMP message: `port_lo` holds the type and `port_hi` the code.
    pub const ICMP_MESSAGE: u8 = 2;
}

/// An IPv6 (or IPv4-mapped) address as the kernel copies it out of the packet: four 32-bit
/// loads, so each word holds its bytes in network order. See [`address_bytes`].
pub type Address = [u32; 4];

/// The 16 bytes of an [`Address`].
pub fn address_bytes(address: &Address) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    for (chunk, word) in bytes.chunks_exact_mut(4).zip(address) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    bytes
}

/// The [`Address`] of 16 address bytes.
pub fn address_from_bytes(bytes: [u8; 16]) -> Address {
    let word = |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    [word(0), word(4), word(8), word(12)]
}

/// What the kernel says about a flow in a [`FlowEvent`]: bits of [`FlowEvent::what`].
pub mod event {
    /// The packet created the flow's block (told only when it also closes the flow: the agent
    /// finds the others by reading the map in slices).
    pub const CREATED: u8 = 1;
    /// A side sent its first FIN or RST: the flow may be closing.
    pub const CLOSING: u8 = 2;
    /// The flow's first packet of a new interim interval (or, in the first interval, its first
    /// packet after the tick it was created in): an interim record may be due at the interval's
    /// end.
    pub const ACTIVE: u8 = 4;
}

/// One entry of the [`EVENTS_MAP`] ring: the flow, when, and what happened (bits of [`event`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    pub key: FlowKey,
    /// Jiffies of the packet.
    pub at: u64,
    pub what: u8,
    pub _pad: [u8; 7],
}

/// What the agent tells the kernel, in the one slot of [`SETTINGS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelSettings {
    /// `--interim-interval` in jiffies; 0 before the agent writes it (then a flow's first
    /// packet of each tick is news).
    pub interim_jiffies: u64,
}

/// The flow key, the same for both directions: addresses in ascending order (IPv4 as
/// IPv4-mapped IPv6), each address's port beside it, then protocol and VLAN id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct FlowKey {
    pub addr_lo: Address,
    pub addr_hi: Address,
    /// Port of `addr_lo` (host byte order), or see [`key_kind`].
    pub port_lo: u16,
    /// Port of `addr_hi` (host byte order), or see [`key_kind`].
    pub port_hi: u16,
    /// Inner VLAN id (12 bits), 0 when untagged.
    pub vlan: u16,
    pub protocol: u8,
    /// One of [`key_kind`].
    pub kind: u8,
}

/// Index of the side that sent a packet: the side holding `addr_lo`/`port_lo`, or the other.
pub const SIDE_LO: usize = 0;
pub const SIDE_HI: usize = 1;

/// Bits of [`FlowSide::marks`]: the TCP flags a side sent (as in the TCP header's flags byte)
/// and what its packets said about who opened the flow.
pub mod marks {
    /// The TCP flag bits.
    pub const TCP_FLAGS: u64 = 0xff;
    /// The side sent a SYN without ACK or an ICMP echo request: it is the client.
    pub const OPENED: u64 = 1 << 8;
    /// The side sent a SYN-ACK or an ICMP echo reply: the other side is the client.
    pub const ANSWERED: u64 = 1 << 9;
}

/// What one side of a flow sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSide {
    /// Packets and layer-2 bytes, as they crossed the wire (atomic adds).
    pub packets: u64,
    pub bytes: u64,
    /// Jiffies of the side's latest packet.
    pub last_seen: u64,
    /// See [`marks`]. A packet ORs in its bits (atomically) only when it brings a new one.
    pub marks: u64,
    /// Source MAC address and TTL (or hop limit) of the side's first frame.
    pub mac: [u8; 6],
    pub ttl: u8,
    pub _pad: u8,
}

/// The control block of a flow.
///
/// The kernel's clock here is jiffies (`bpf_jiffies64`, inlined by the verifier: a load where
/// `bpf_ktime_get_coarse_ns` is a helper call that doubled the cost of an update), with the
/// resolution of the coarse clock (one tick); the agent converts them with a [`ClockSample`].
///
/// Each side is only written by packets of that side. The kernel's hash element is a 48-byte
/// header, the 40-byte key, then this block: 256 bytes, so in a preallocated map every element
/// starts on a cache line, and each side gets a line of its own, apart from the key that every
/// lookup reads and from the other side. Two CPUs counting the two directions of a flow then
/// never write a line the other reads. The fields beside the key are written once, when the
/// block is created.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowBlock {
    /// Jiffies of the flow's first packet.
    pub first_seen: u64,
    /// Interface of the flow's first packet.
    pub ifindex: u32,
    /// The side that sent the first packet ([`SIDE_LO`] or [`SIDE_HI`]).
    pub first_sender: u8,
    pub _pad: [u8; 3],
    /// Jiffies from which a packet is the flow's first of a new interim interval (see
    /// [`event::ACTIVE`]); written by the packet that finds it passed, once an interval.
    pub active_from: u64,
    pub _key_line: [u64; 2],
    pub lo: FlowSide,
    pub _lo_line: [u64; 3],
    pub hi: FlowSide,
    pub _hi_line: [u64; 3],
}

/// Below this a port is taken for a server's when a TCP flow is picked up mid-stream.
pub const WELL_KNOWN_PORT_LIMIT: u16 = 1024;

impl FlowSide {
    /// The union of the TCP flags this side sent.
    pub fn tcp_flags(&self) -> u8 {
        (self.marks & marks::TCP_FLAGS) as u8
    }
}

impl FlowBlock {
    /// Jiffies of the flow's latest packet, from either side.
    pub fn last_seen(&self) -> u64 {
        self.lo.last_seen.max(self.hi.last_seen)
    }

    pub fn side(&self, side: usize) -> &FlowSide {
        if side == SIDE_LO { &self.lo } else { &self.hi }
    }

    /// Which side is the client ([`SIDE_LO`] or [`SIDE_HI`]): the side that opened the flow (a
    /// SYN without ACK, an echo request); else the other one of a side that answered (SYN-ACK,
    /// echo reply); else, for TCP picked up mid-stream, the side that is not on a well-known
    /// port; else the first packet's sender.
    pub fn client_side(&self, key: &FlowKey) -> usize {
        let said = |mark: u64| (self.lo.marks & mark != 0, self.hi.marks & mark != 0);
        match said(marks::OPENED) {
            (true, false) => return SIDE_LO,
            (false, true) => return SIDE_HI,
            _ => {}
        }
        match said(marks::ANSWERED) {
            (true, false) => return SIDE_HI,
            (false, true) => return SIDE_LO,
            _ => {}
        }
        if key.protocol == ip_proto::TCP && key.kind == key_kind::PORTS {
            match (
                key.port_lo < WELL_KNOWN_PORT_LIMIT,
                key.port_hi < WELL_KNOWN_PORT_LIMIT,
            ) {
                (true, false) => return SIDE_HI,
                (false, true) => return SIDE_LO,
                _ => {}
            }
        }
        self.first_sender as usize & 1
    }
}

/// The kernel's clocks read at one instant by [`CLOCK_PROGRAM`], in the order it writes them
/// into the frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockSample {
    pub jiffies: u64,
    /// CLOCK_MONOTONIC, coarse: it advances with jiffies, at the same tick.
    pub coarse_ns: u64,
}

/// Per-CPU datapath counters, one array slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathCounters {
    /// Every frame the programs saw, and its layer-2 bytes.
    pub packets: u64,
    pub bytes: u64,
    /// Frames whose headers end before the parser could read them.
    pub truncated: u64,
    /// IP frames the parser does not understand (bad version or header length, too many
    /// extension headers or VLAN tags).
    pub unsupported: u64,
    /// Frames that carry no IP (ARP, LLDP...): passed on, not a flow.
    pub non_ip: u64,
    /// Flow blocks created, and creations the kernel refused (detail in [`CREATE_ERRORS_MAP`]).
    pub flows_created: u64,
    pub create_failures: u64,
    /// Non-first IP fragments, and those whose first fragment was not seen (counted to the
    /// flow of their addresses with ports 0).
    pub fragments: u64,
    pub fragments_unmatched: u64,
    /// Events the [`EVENTS_MAP`] ring had no room for: the agent then reads the whole map.
    pub events_lost: u64,
}

/// Key of the fragment map: one fragmented datagram.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragmentKey {
    pub src: Address,
    pub dst: Address,
    pub id: u32,
    pub vlan: u16,
    pub protocol: u8,
    pub _pad: u8,
}

/// The port fields of a fragmented datagram's first fragment, in the sender's order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragmentPorts {
    pub src_port: u16,
    pub dst_port: u16,
    /// The first fragment's [`key_kind`]: ICMP keys carry other things in their port fields.
    pub kind: u8,
    pub _pad: u8,
}

/// A TCP connection's state, derived from the flags each side has sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpState {
    /// No TCP flags seen (not TCP, or only flagless segments).
    None,
    /// The client sent SYN, nothing answered yet.
    Syn,
    /// The server answered SYN-ACK; the client has not acknowledged it.
    SynAck,
    /// Handshake completed, or a connection picked up mid-stream.
    Established,
    /// Only the client has sent FIN.
    FinClient,
    /// Only the server has sent FIN.
    FinServer,
    /// Both sides have sent FIN.
    Closed,
    /// Either side sent RST.
    Rst,
}

impl TcpState {
    pub const ALL: [TcpState; 8] = [
        Self::None,
        Self::Syn,
        Self::SynAck,
        Self::Established,
        Self::FinClient,
        Self::FinServer,
        Self::Closed,
        Self::Rst,
    ];

    pub fn from_flags(client: u8, server: u8) -> Self {
        use tcp_flags::{ACK, FIN, RST, SYN};
        let both = client | server;
        if both & RST != 0 {
            Self::Rst
        } else if client & FIN != 0 && server & FIN != 0 {
            Self::Closed
        } else if client & FIN != 0 {
            Self::FinClient
        } else if server & FIN != 0 {
            Self::FinServer
        } else if server & (SYN | ACK) == SYN | ACK && client & ACK == 0 {
            Self::SynAck
        } else if both & ACK != 0 {
            Self::Established
        } else if client & SYN != 0 {
            Self::Syn
        } else {
            Self::None
        }
    }

    /// Whether the connection has ended (both FINs or an RST): the agent's close timeout runs.
    pub fn is_closing(self) -> bool {
        matches!(self, Self::Closed | Self::Rst)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Syn => "syn",
            Self::SynAck => "syn_ack",
            Self::Established => "established",
            Self::FinClient => "fin_client",
            Self::FinServer => "fin_server",
            Self::Closed => "closed",
            Self::Rst => "rst",
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // Each of these is a repr(C) struct of integers and byte arrays with no padding the kernel
    // could leave uninitialised (explicit `_pad` fields fill every gap): any bytes are a value.
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowBlock {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowSide {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DatapathCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FragmentKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FragmentPorts {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelSettings {}
}

/// The kernel's `struct htab_elem`, the header of a hash map element (5.x to 6.18).
pub const HASH_ELEMENT_HEADER: usize = 48;

// The layout both halves rely on, checked wherever this crate is built, the BPF target
// included: a flow map element is four whole cache lines, and each side has a line of its own,
// apart from the key that every lookup reads.
const _: () = {
    use core::mem::{offset_of, size_of};
    /// The cache line of the element that holds the block's byte at `offset`.
    const fn line(offset: usize) -> usize {
        (HASH_ELEMENT_HEADER + size_of::<FlowKey>() + offset) / 64
    }
    assert!(size_of::<FlowKey>() == 40);
    assert!(size_of::<FlowSide>() == 40);
    assert!(size_of::<FlowEvent>() == 56);
    assert!(size_of::<FragmentKey>() == 40);
    assert!(HASH_ELEMENT_HEADER + size_of::<FlowKey>() + size_of::<FlowBlock>() == 256);
    let (lo, hi, side) = (
        offset_of!(FlowBlock, lo),
        offset_of!(FlowBlock, hi),
        size_of::<FlowSide>(),
    );
    assert!(line(lo) == 2 && line(lo + side - 1) == 2);
    assert!(line(hi) == 3 && line(hi + side - 1) == 3);
    // The fields a packet reads beside the key share the key's line.
    assert!(line(offset_of!(FlowBlock, active_from) + 7) == 1);
};

#[cfg(test)]
mod tests {
    use super::*;
    use tcp_flags::*;

    #[test]
    fn addresses_round_trip_through_their_words() {
        let bytes = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1];
        assert_eq!(address_bytes(&address_from_bytes(bytes)), bytes);
    }

    #[test]
    fn the_client_is_named_by_the_strongest_evidence() {
        let key = |port_lo, port_hi, protocol| FlowKey {
            port_lo,
            port_hi,
            protocol,
            ..FlowKey::default()
        };
        let block = |lo: u64, hi: u64, first_sender: usize| FlowBlock {
            lo: FlowSide {
                marks: lo,
                ..FlowSide::default()
            },
            hi: FlowSide {
                marks: hi,
                ..FlowSide::default()
            },
            first_sender: first_sender as u8,
            ..FlowBlock::default()
        };
        let tcp = key(80, 40000, ip_proto::TCP);
        // Opening beats answering, answering beats ports, ports beat the first sender.
        let opened_hi = block(marks::ANSWERED, marks::OPENED, SIDE_LO);
        assert_eq!(opened_hi.client_side(&tcp), SIDE_HI);
        assert_eq!(
            block(marks::ANSWERED, 0, SIDE_LO).client_side(&tcp),
            SIDE_HI
        );
        assert_eq!(
            block(0, marks::ANSWERED, SIDE_HI).client_side(&tcp),
            SIDE_LO
        );
        assert_eq!(block(0, 0, SIDE_LO).client_side(&tcp), SIDE_HI);
        // Both or neither on a well-known port, or not TCP: the first sender.
        assert_eq!(block(0, 0, SIDE_HI).client_side(&key(80, 443, 6)), SIDE_HI);
        assert_eq!(
            block(0, 0, SIDE_LO).client_side(&key(80, 40000, 17)),
            SIDE_LO
        );
        // Both opened (simultaneous open): the answers decide, then as above.
        let both = block(marks::OPENED, marks::OPENED | marks::ANSWERED, SIDE_HI);
        assert_eq!(both.client_side(&tcp), SIDE_LO);
    }

    #[test]
    fn tcp_state_follows_the_handshake_and_teardown() {
        let steps = [
            (0, 0, TcpState::None),
            (SYN, 0, TcpState::Syn),
            (SYN, SYN | ACK, TcpState::SynAck),
            (SYN | ACK, SYN | ACK, TcpState::Established),
            (SYN | ACK | FIN, SYN | ACK, TcpState::FinClient),
            (SYN | ACK, SYN | ACK | FIN, TcpState::FinServer),
            (SYN | ACK | FIN, SYN | ACK | FIN, TcpState::Closed),
            (SYN, RST | ACK, TcpState::Rst),
            (ACK | PSH, 0, TcpState::Established),
            (0, SYN | ACK, TcpState::SynAck),
        ];
        for (client, server, state) in steps {
            assert_eq!(
                TcpState::from_flags(client, server),
                state,
                "{client:#x} {server:#x}"
            );
        }
        assert!(TcpState::Closed.is_closing() && TcpState::Rst.is_closing());
        assert!(!TcpState::FinClient.is_closing());
    }
}
