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

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const MAX_VLAN_TAGS: usize = 2;

const IPV6_HLEN: usize = 40;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;
/// Extension headers skipped before giving up; real traffic carries one or two.
const MAX_IPV6_EXT_HEADERS: usize = 6;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

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
    match Header::<ETH_HLEN>::at(start, end, 0) {
        Ok(eth) => [
            eth.u8(6),
            eth.u8(7),
            eth.u8(8),
            eth.u8(9),
            eth.u8(10),
            eth.u8(11),
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
    let eth = Header::<ETH_HLEN>::at(start, end, 0)?;
    let mut ethertype = eth.be16(12);
    let mut offset = ETH_HLEN;
    let mut vlan = outer_vlan;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        // The innermost tag names the network the addresses belong to.
        let tag = Header::<4>::at(start, end, offset)?;
        vlan = tag.be16(0) & 0x0fff;
        ethertype = tag.be16(2);
        offset += 4;
    }
    packet.vlan = vlan;
    match ethertype {
        ETH_P_IP => parse_ipv4(start, end, offset, packet),
        ETH_P_IPV6 => parse_ipv6(start, end, offset, packet),
        ETH_P_8021Q | ETH_P_8021AD => Err(ParseError::Unsupported),
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
    const IP: usize = ETH_HLEN;
    const L4: usize = ETH_HLEN + 20;
    let Ok(frame) = Header::<{ L4 + 20 }>::at(start, end, 0) else {
        return false;
    };
    // Version 4 and a 20-byte header; neither a later fragment nor more to come.
    if frame.be16(12) != ETH_P_IP || frame.u8(IP) != 0x45 || frame.be16(IP + 6) & 0x3fff != 0 {
        return false;
    }
    let protocol = frame.u8(IP + 9);
    match protocol {
        TCP => {
            let header_len = ((frame.u8(L4 + 12) >> 4) as usize) * 4;
            if header_len < 20 || start + L4 + header_len > end {
                return false;
            }
            packet.headers_len = L4 + header_len;
            packet.marks = tcp_marks(frame.u8(L4 + 13));
        }
        UDP => packet.headers_len = L4 + 8,
        _ => return false,
    }
    (packet.frame_start, packet.frame_end) = (start, end);
    packet.protocol = protocol;
    packet.ttl = frame.u8(IP + 8);
    packet.src = ipv4_mapped(frame.raw32(IP + 12));
    packet.dst = ipv4_mapped(frame.raw32(IP + 16));
    packet.src_port = frame.be16(L4);
    packet.dst_port = frame.be16(L4 + 2);
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
    let ip = Header::<20>::at(start, end, offset)?;
    let version_ihl = ip.u8(0);
    if version_ihl >> 4 != 4 {
        return Err(ParseError::Unsupported);
    }
    let header_len = ((version_ihl & 0x0f) as usize) * 4;
    if header_len < 20 {
        return Err(ParseError::Unsupported);
    }
    packet.ttl = ip.u8(8);
    packet.protocol = ip.u8(9);
    packet.src = ipv4_mapped(ip.raw32(12));
    packet.dst = ipv4_mapped(ip.raw32(16));
    let id = ip.be16(4) as u32;
    let frag = ip.be16(6);
    // The whole header, options included, must be present.
    require(start, end, offset + header_len)?;
    if frag & 0x1fff != 0 {
        packet.fragment = Fragment::Later;
        packet.fragment_id = id;
        return Ok(());
    }
    if frag & 0x2000 != 0 {
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
    let ip = Header::<IPV6_HLEN>::at(start, end, offset)?;
    if ip.u8(0) >> 4 != 6 {
        return Err(ParseError::Unsupported);
    }
    let mut next_header = ip.u8(6);
    packet.ttl = ip.u8(7);
    packet.src = ip.raw128(8);
    packet.dst = ip.raw128(24);
    let mut offset = offset + IPV6_HLEN;
    let mut done = false;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next_header {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                let ext = Header::<8>::at(start, end, offset)?;
                next_header = ext.u8(0);
                offset += (ext.u8(1) as usize + 1) * 8;
                require(start, end, offset)?;
            }
            NEXTHDR_FRAGMENT => {
                let ext = Header::<8>::at(start, end, offset)?;
                next_header = ext.u8(0);
                let frag = ext.be16(2);
                let id = u32::from_be(ext.raw32(4));
                offset += 8;
                if frag >> 3 != 0 {
                    packet.protocol = next_header;
                    packet.fragment = Fragment::Later;
                    packet.fragment_id = id;
                    return Ok(());
                }
                if frag & 1 != 0 {
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
            let tcp = Header::<20>::at(start, end, offset)?;
            let header_len = ((tcp.u8(12) >> 4) as usize) * 4;
            packet.src_port = tcp.be16(0);
            packet.dst_port = tcp.be16(2);
            packet.marks = tcp_marks(tcp.u8(13));
            if header_len < 20 {
                return Err(ParseError::Unsupported);
            }
            // Options included: every segment of an offloaded super-packet repeats them.
            packet.headers_len = offset + header_len;
            require(start, end, packet.headers_len)?;
        }
        UDP => {
            let udp = Header::<8>::at(start, end, offset)?;
            packet.src_port = udp.be16(0);
            packet.dst_port = udp.be16(2);
            packet.headers_len = offset + 8;
        }
        ICMP | ICMPV6 => {
            let icmp = Header::<8>::at(start, end, offset)?;
            let (icmp_type, code) = (icmp.u8(0), icmp.u8(1));
            packet.headers_len = offset + 8;
            let (request, reply) = if packet.protocol == ICMP {
                (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY)
            } else {
                (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY)
            };
            if icmp_type == request || icmp_type == reply {
                let id = icmp.be16(4);
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
