//! Frame parsing: Ethernet, up to two VLAN tags, IPv4 (options), IPv6 (extension headers),
//! TCP, UDP, ICMP and ICMPv6, into the few facts a flow update needs.
//!
//! Every read is bounds-checked against the end of the linear packet data, which is what the
//! verifier wants to see; a frame that ends early is `Truncated`, never an out-of-bounds read.

use flowmon_common::{
    ip_proto::{ICMP, ICMPV6, TCP, UDP},
    key_kind, marks,
    tcp_flags::{ACK, SYN},
};

/// Header layouts: each module names the offsets (from the header's start) and the bits the
/// parser reads, as the RFCs and the kernel's uapi headers define them.
mod eth {
    pub const LEN: usize = 14;
    pub const SOURCE: usize = 6;
    pub const ETHERTYPE: usize = 12;
    pub const P_IP: u16 = 0x0800;
    pub const P_IPV6: u16 = 0x86dd;
    pub const P_8021Q: u16 = 0x8100;
    pub const P_8021AD: u16 = 0x88a8;
}

/// An 802.1Q/802.1ad tag after the source address.
pub mod vlan {
    pub const LEN: usize = 4;
    pub const TCI: usize = 0;
    pub const ETHERTYPE: usize = 2;
    pub const VID_MASK: u16 = 0x0fff;
    /// Tags followed before giving up.
    pub const MAX_TAGS: usize = 2;
}

mod ipv4 {
    pub const MIN_LEN: usize = 20;
    pub const VERSION_IHL: usize = 0;
    /// Version 4 and a header of five words: no options.
    pub const PLAIN_VERSION_IHL: u8 = 0x45;
    pub const ID: usize = 4;
    pub const FRAGMENT: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const SOURCE: usize = 12;
    pub const DESTINATION: usize = 16;
    /// Bits of the flags and fragment offset field.
    pub const MORE_FRAGMENTS: u16 = 0x2000;
    pub const OFFSET_MASK: u16 = 0x1fff;
}

mod ipv6 {
    pub const LEN: usize = 40;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SOURCE: usize = 8;
    pub const DESTINATION: usize = 24;
    /// Extension headers skipped before giving up; real traffic carries one or two.
    pub const MAX_EXT_HEADERS: usize = 6;
    pub const NEXTHDR_HOP: u8 = 0;
    pub const NEXTHDR_ROUTING: u8 = 43;
    pub const NEXTHDR_FRAGMENT: u8 = 44;
    pub const NEXTHDR_DEST: u8 = 60;
    /// An extension header: its next header, its length in 8-byte units past the first 8.
    pub const EXT_MIN_LEN: usize = 8;
    pub const EXT_NEXT_HEADER: usize = 0;
    pub const EXT_LEN: usize = 1;
    /// The fragment header: offset (13 bits) and M flag, then the identification.
    pub const FRAG_OFFSET_FLAGS: usize = 2;
    pub const FRAG_ID: usize = 4;
    pub const FRAG_OFFSET_SHIFT: u16 = 3;
    pub const FRAG_MORE: u16 = 1;
}

mod tcp {
    pub const MIN_LEN: usize = 20;
    pub const SOURCE_PORT: usize = 0;
    pub const DESTINATION_PORT: usize = 2;
    /// Data offset (header length in words) in the high nibble.
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
}

mod udp {
    pub const LEN: usize = 8;
    pub const SOURCE_PORT: usize = 0;
    pub const DESTINATION_PORT: usize = 2;
}

mod icmp {
    pub const LEN: usize = 8;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    /// The echo identifier.
    pub const ECHO_ID: usize = 4;
    pub const ECHO_REPLY: u8 = 0;
    pub const ECHO_REQUEST: u8 = 8;
    pub const V6_ECHO_REQUEST: u8 = 128;
    pub const V6_ECHO_REPLY: u8 = 129;
}

pub enum ParseError {
    /// The frame ends inside a header.
    Truncated,
    /// An IP header the parser does not understand.
    Unsupported,
    /// Not an IP frame: nothing to account.
    NonIp,
}

/// Where in a fragmented datagram a packet belongs. The datagram's id is a field of its own
/// ([`Packet::fragment_id`]): an enum payload is undefined when absent, and LLVM then spills
/// an uninitialised register, which the verifier refuses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented.
    Whole,
    /// The first fragment: it carries the transport header.
    First,
    /// A later fragment: no transport header; its ports come from the first.
    Later,
}

/// The facts of one packet that a flow update needs.
pub struct Packet {
    /// Source and destination, IPv4 as IPv4-mapped IPv6, bytes in network order.
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Transport ports in the sender's order, or the ICMP fields of [`key_kind`].
    pub src_port: u16,
    pub dst_port: u16,
    pub vlan: u16,
    pub protocol: u8,
    pub kind: u8,
    pub ttl: u8,
    /// The TCP flags and what the packet says about who opened the flow: see [`marks`].
    pub marks: u64,
    /// Bytes from the start of the frame to the transport payload: what every segment of a
    /// segmentation-offload super-packet repeats.
    pub headers_len: usize,
    pub fragment: Fragment,
    /// The IP identification of a fragmented datagram, 0 when whole.
    pub fragment_id: u32,
    /// The frame, for the rare reads beyond these facts (a side's first MAC address).
    pub frame_start: usize,
    pub frame_end: usize,
}

/// A header of `N` bytes whose bounds were checked once, read field by field in place.
///
/// One check per header, with reads at constant offsets from the checked pointer, is the shape
/// the verifier follows; loads of the fields' natural width (misaligned packet loads are fine
/// on the architectures with a BPF JIT flowmon targets) keep the hot path short.
#[derive(Clone, Copy)]
struct Header<const N: usize> {
    at: usize,
}

impl<const N: usize> Header<N> {
    #[inline(always)]
    fn at(start: usize, end: usize, offset: usize) -> Result<Self, ParseError> {
        let at = start + offset;
        if at + N > end {
            return Err(ParseError::Truncated);
        }
        Ok(Self { at })
    }

    #[inline(always)]
    fn u8(self, offset: usize) -> u8 {
        // SAFETY: callers read inside the N checked bytes.
        unsafe { *((self.at + offset) as *const u8) }
    }

    #[inline(always)]
    fn be16(self, offset: usize) -> u16 {
        // SAFETY: as in `u8`.
        u16::from_be(unsafe { *((self.at + offset) as *const u16) })
    }

    /// Four bytes as they lie in the packet (network order).
    #[inline(always)]
    fn raw32(self, offset: usize) -> u32 {
        // SAFETY: as in `u8`.
        unsafe { *((self.at + offset) as *const u32) }
    }

    #[inline(always)]
    fn raw128(self, offset: usize) -> [u32; 4] {
        [
            self.raw32(offset),
            self.raw32(offset + 4),
            self.raw32(offset + 8),
            self.raw32(offset + 12),
        ]
    }
}

/// Fails unless the first `len` bytes of the frame are present.
#[inline(always)]
fn require(start: usize, end: usize, len: usize) -> Result<(), ParseError> {
    if start + len > end {
        return Err(ParseError::Truncated);
    }
    Ok(())
}

/// The source MAC of a frame that [`parse`] accepted.
#[inline(always)]
pub fn source_mac(start: usize, end: usize) -> [u8; 6] {
    match Header::<{ eth::LEN }>::at(start, end, 0) {
        Ok(frame) => [
            frame.u8(eth::SOURCE),
            frame.u8(eth::SOURCE + 1),
            frame.u8(eth::SOURCE + 2),
            frame.u8(eth::SOURCE + 3),
            frame.u8(eth::SOURCE + 4),
            frame.u8(eth::SOURCE + 5),
        ],
        Err(_) => [0; 6],
    }
}

/// Parses the frame in `[start, end)`. `outer_vlan` is a tag the NIC or the stack keeps out of
/// band (TC egress with VLAN offload), used when the frame itself carries none.
#[inline(always)]
pub fn parse(
    start: usize,
    end: usize,
    outer_vlan: u16,
    packet: &mut Packet,
) -> Result<(), ParseError> {
    (packet.frame_start, packet.frame_end) = (start, end);
    let frame = Header::<{ eth::LEN }>::at(start, end, 0)?;
    let mut ethertype = frame.be16(eth::ETHERTYPE);
    let mut offset = eth::LEN;
    let mut vlan = outer_vlan;
    for _ in 0..vlan::MAX_TAGS {
        if ethertype != eth::P_8021Q && ethertype != eth::P_8021AD {
            break;
        }
        // The innermost tag names the network the addresses belong to.
        let tag = Header::<{ vlan::LEN }>::at(start, end, offset)?;
        vlan = tag.be16(vlan::TCI) & vlan::VID_MASK;
        ethertype = tag.be16(vlan::ETHERTYPE);
        offset += vlan::LEN;
    }
    packet.vlan = vlan;
    match ethertype {
        eth::P_IP => parse_ipv4(start, end, offset, packet),
        eth::P_IPV6 => parse_ipv6(start, end, offset, packet),
        eth::P_8021Q | eth::P_8021AD => Err(ParseError::Unsupported),
        _ => Err(ParseError::NonIp),
    }
}

impl Packet {
    pub const fn new() -> Self {
        Packet {
            src: [0; 4],
            dst: [0; 4],
            src_port: 0,
            dst_port: 0,
            vlan: 0,
            protocol: 0,
            kind: key_kind::PORTS,
            ttl: 0,
            marks: 0,
            headers_len: 0,
            fragment: Fragment::Whole,
            fragment_id: 0,
            frame_start: 0,
            frame_end: 0,
        }
    }
}

/// The frame most traffic is, read after one bounds check: untagged Ethernet, IPv4 without
/// options and not a fragment, TCP or UDP. Gives exactly what [`parse`] gives for such a frame,
/// in a third of the instructions, and false for anything else (writing nothing).
#[inline(always)]
pub fn parse_common(start: usize, end: usize, packet: &mut Packet) -> bool {
    const IP: usize = eth::LEN;
    const L4: usize = eth::LEN + ipv4::MIN_LEN;
    let Ok(frame) = Header::<{ L4 + tcp::MIN_LEN }>::at(start, end, 0) else {
        return false;
    };
    // Version 4 and a 20-byte header; neither a later fragment nor more to come.
    if frame.be16(eth::ETHERTYPE) != eth::P_IP
        || frame.u8(IP + ipv4::VERSION_IHL) != ipv4::PLAIN_VERSION_IHL
        || frame.be16(IP + ipv4::FRAGMENT) & (ipv4::MORE_FRAGMENTS | ipv4::OFFSET_MASK) != 0
    {
        return false;
    }
    let protocol = frame.u8(IP + ipv4::PROTOCOL);
    match protocol {
        TCP => {
            let header_len = ((frame.u8(L4 + tcp::DATA_OFFSET) >> 4) as usize) * 4;
            if header_len < tcp::MIN_LEN || start + L4 + header_len > end {
                return false;
            }
            packet.headers_len = L4 + header_len;
            packet.marks = tcp_marks(frame.u8(L4 + tcp::FLAGS));
        }
        UDP => packet.headers_len = L4 + udp::LEN,
        _ => return false,
    }
    (packet.frame_start, packet.frame_end) = (start, end);
    packet.protocol = protocol;
    packet.ttl = frame.u8(IP + ipv4::TTL);
    packet.src = ipv4_mapped(frame.raw32(IP + ipv4::SOURCE));
    packet.dst = ipv4_mapped(frame.raw32(IP + ipv4::DESTINATION));
    // The same offsets in TCP and UDP.
    packet.src_port = frame.be16(L4 + tcp::SOURCE_PORT);
    packet.dst_port = frame.be16(L4 + tcp::DESTINATION_PORT);
    true
}

/// `::ffff:a.b.c.d` for an IPv4 address as it lies in the packet.
#[inline(always)]
pub fn ipv4_mapped(addr: u32) -> [u32; 4] {
    [0, 0, u32::from_be(0x0000_ffff), addr]
}

#[inline(always)]
fn parse_ipv4(
    start: usize,
    end: usize,
    offset: usize,
    packet: &mut Packet,
) -> Result<(), ParseError> {
    let ip = Header::<{ ipv4::MIN_LEN }>::at(start, end, offset)?;
    let version_ihl = ip.u8(ipv4::VERSION_IHL);
    if version_ihl >> 4 != 4 {
        return Err(ParseError::Unsupported);
    }
    let header_len = ((version_ihl & 0x0f) as usize) * 4;
    if header_len < ipv4::MIN_LEN {
        return Err(ParseError::Unsupported);
    }
    packet.ttl = ip.u8(ipv4::TTL);
    packet.protocol = ip.u8(ipv4::PROTOCOL);
    packet.src = ipv4_mapped(ip.raw32(ipv4::SOURCE));
    packet.dst = ipv4_mapped(ip.raw32(ipv4::DESTINATION));
    let id = ip.be16(ipv4::ID) as u32;
    let frag = ip.be16(ipv4::FRAGMENT);
    // The whole header, options included, must be present.
    require(start, end, offset + header_len)?;
    if frag & ipv4::OFFSET_MASK != 0 {
        packet.fragment = Fragment::Later;
        packet.fragment_id = id;
        return Ok(());
    }
    if frag & ipv4::MORE_FRAGMENTS != 0 {
        packet.fragment = Fragment::First;
        packet.fragment_id = id;
    }
    parse_transport(start, end, offset + header_len, packet)
}

#[inline(always)]
fn parse_ipv6(
    start: usize,
    end: usize,
    offset: usize,
    packet: &mut Packet,
) -> Result<(), ParseError> {
    let ip = Header::<{ ipv6::LEN }>::at(start, end, offset)?;
    if ip.u8(0) >> 4 != 6 {
        return Err(ParseError::Unsupported);
    }
    let mut next_header = ip.u8(ipv6::NEXT_HEADER);
    packet.ttl = ip.u8(ipv6::HOP_LIMIT);
    packet.src = ip.raw128(ipv6::SOURCE);
    packet.dst = ip.raw128(ipv6::DESTINATION);
    let mut offset = offset + ipv6::LEN;
    let mut done = false;
    for _ in 0..ipv6::MAX_EXT_HEADERS {
        match next_header {
            ipv6::NEXTHDR_HOP | ipv6::NEXTHDR_ROUTING | ipv6::NEXTHDR_DEST => {
                let ext = Header::<{ ipv6::EXT_MIN_LEN }>::at(start, end, offset)?;
                next_header = ext.u8(ipv6::EXT_NEXT_HEADER);
                offset += (ext.u8(ipv6::EXT_LEN) as usize + 1) * ipv6::EXT_MIN_LEN;
                require(start, end, offset)?;
            }
            ipv6::NEXTHDR_FRAGMENT => {
                let ext = Header::<{ ipv6::EXT_MIN_LEN }>::at(start, end, offset)?;
                next_header = ext.u8(ipv6::EXT_NEXT_HEADER);
                let frag = ext.be16(ipv6::FRAG_OFFSET_FLAGS);
                let id = u32::from_be(ext.raw32(ipv6::FRAG_ID));
                offset += ipv6::EXT_MIN_LEN;
                if frag >> ipv6::FRAG_OFFSET_SHIFT != 0 {
                    packet.protocol = next_header;
                    packet.fragment = Fragment::Later;
                    packet.fragment_id = id;
                    return Ok(());
                }
                if frag & ipv6::FRAG_MORE != 0 {
                    packet.fragment = Fragment::First;
                    packet.fragment_id = id;
                }
            }
            _ => {
                done = true;
                break;
            }
        }
    }
    if !done {
        return Err(ParseError::Unsupported);
    }
    packet.protocol = next_header;
    parse_transport(start, end, offset, packet)
}

#[inline(always)]
fn parse_transport(
    start: usize,
    end: usize,
    offset: usize,
    packet: &mut Packet,
) -> Result<(), ParseError> {
    match packet.protocol {
        TCP => {
            let segment = Header::<{ tcp::MIN_LEN }>::at(start, end, offset)?;
            let header_len = ((segment.u8(tcp::DATA_OFFSET) >> 4) as usize) * 4;
            packet.src_port = segment.be16(tcp::SOURCE_PORT);
            packet.dst_port = segment.be16(tcp::DESTINATION_PORT);
            packet.marks = tcp_marks(segment.u8(tcp::FLAGS));
            if header_len < tcp::MIN_LEN {
                return Err(ParseError::Unsupported);
            }
            // Options included: every segment of an offloaded super-packet repeats them.
            packet.headers_len = offset + header_len;
            require(start, end, packet.headers_len)?;
        }
        UDP => {
            let datagram = Header::<{ udp::LEN }>::at(start, end, offset)?;
            packet.src_port = datagram.be16(udp::SOURCE_PORT);
            packet.dst_port = datagram.be16(udp::DESTINATION_PORT);
            packet.headers_len = offset + udp::LEN;
        }
        ICMP | ICMPV6 => {
            let message = Header::<{ icmp::LEN }>::at(start, end, offset)?;
            let (icmp_type, code) = (message.u8(icmp::TYPE), message.u8(icmp::CODE));
            packet.headers_len = offset + icmp::LEN;
            let (request, reply) = if packet.protocol == ICMP {
                (icmp::ECHO_REQUEST, icmp::ECHO_REPLY)
            } else {
                (icmp::V6_ECHO_REQUEST, icmp::V6_ECHO_REPLY)
            };
            if icmp_type == request || icmp_type == reply {
                let id = message.be16(icmp::ECHO_ID);
                packet.kind = key_kind::ICMP_ECHO;
                packet.src_port = id;
                packet.dst_port = id;
                packet.marks = if icmp_type == request {
                    marks::OPENED
                } else {
                    marks::ANSWERED
                };
            } else {
                packet.kind = key_kind::ICMP_MESSAGE;
                packet.src_port = icmp_type as u16;
                packet.dst_port = code as u16;
            }
        }
        _ => packet.headers_len = offset,
    }
    Ok(())
}

/// The marks of a TCP segment: its flags, and whether it opens (SYN) or answers (SYN-ACK).
#[inline(always)]
fn tcp_marks(flags: u8) -> u64 {
    let opening = match flags & (SYN | ACK) {
        SYN => marks::OPENED,
        f if f == SYN | ACK => marks::ANSWERED,
        _ => 0,
    };
    flags as u64 | opening
}
