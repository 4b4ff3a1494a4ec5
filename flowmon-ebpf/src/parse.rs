//! Frame parsing: Ethernet, up to two VLAN tags, IPv4 (options), IPv6 (extension headers),
//! TCP, UDP, ICMP and ICMPv6, into the few facts a flow update needs.
//!
//! Every read is bounds-checked against the end of the linear packet data, which is what the
//! verifier wants to see; a frame that ends early is `Truncated`, never an out-of-bounds read.

use flowmon_common::{
    ip_proto::{ICMP, ICMPV6, TCP, UDP},
    key_kind, orientation,
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

/// Below this a port is taken for a server's when a TCP flow is picked up mid-stream.
const WELL_KNOWN_PORT_LIMIT: u16 = 1024;

pub enum ParseError {
    /// The frame ends inside a header.
    Truncated,
    /// An IP header the parser does not understand.
    Unsupported,
    /// Not an IP frame: nothing to account.
    NonIp,
}

/// Where in a fragmented datagram a packet belongs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented.
    Whole,
    /// The first fragment: it carries the transport header.
    First { id: u32 },
    /// A later fragment: no transport header; its ports come from the first.
    Later { id: u32 },
}

/// The facts of one packet that a flow update needs.
pub struct Packet {
    /// Source and destination, IPv4 as IPv4-mapped IPv6.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Transport ports in the sender's order, or the ICMP fields of [`key_kind`].
    pub src_port: u16,
    pub dst_port: u16,
    pub vlan: u16,
    pub protocol: u8,
    pub kind: u8,
    pub ttl: u8,
    pub tcp_flags: u8,
    pub src_mac: [u8; 6],
    /// Who this packet says the client is: [`orientation`] strength, and whether it is the
    /// sender.
    pub evidence: u8,
    pub sender_is_client: bool,
    /// Bytes from the start of the frame to the transport payload: what every segment of a
    /// segmentation-offload super-packet repeats.
    pub headers_len: usize,
    pub fragment: Fragment,
}

/// Copies the fixed-size header at `offset` out of the packet, after one bounds check.
///
/// One check per header and reads from the copy keep the verifier's view simple: with variable
/// offsets (IP options, extension headers) separate checks per field get merged or dropped by
/// the compiler in ways the verifier cannot follow.
#[inline(always)]
fn header<const N: usize>(start: usize, end: usize, offset: usize) -> Result<[u8; N], ParseError> {
    let at = start + offset;
    if at + N > end {
        return Err(ParseError::Truncated);
    }
    // SAFETY: the N bytes at `at` lie inside the packet, checked just above.
    Ok(unsafe { (at as *const [u8; N]).read_unaligned() })
}

/// Fails unless the first `len` bytes of the frame are present.
#[inline(always)]
fn require(start: usize, end: usize, len: usize) -> Result<(), ParseError> {
    if start + len > end {
        return Err(ParseError::Truncated);
    }
    Ok(())
}

#[inline(always)]
fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
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
    let ethernet: [u8; ETH_HLEN] = header(start, end, 0)?;
    let mut ethertype = be16(&ethernet, 12);
    let mut offset = ETH_HLEN;
    let mut vlan = outer_vlan;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        // The innermost tag names the network the addresses belong to.
        let tag: [u8; 4] = header(start, end, offset)?;
        vlan = be16(&tag, 0) & 0x0fff;
        ethertype = be16(&tag, 2);
        offset += 4;
    }
    packet.vlan = vlan;
    packet.src_mac = [
        ethernet[6],
        ethernet[7],
        ethernet[8],
        ethernet[9],
        ethernet[10],
        ethernet[11],
    ];
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
            src: [0; 16],
            dst: [0; 16],
            src_port: 0,
            dst_port: 0,
            vlan: 0,
            protocol: 0,
            kind: key_kind::PORTS,
            ttl: 0,
            tcp_flags: 0,
            src_mac: [0; 6],
            evidence: orientation::FIRST_PACKET,
            sender_is_client: true,
            headers_len: 0,
            fragment: Fragment::Whole,
        }
    }
}

#[inline(always)]
fn ipv4_mapped(ip: &[u8; 20], at: usize) -> [u8; 16] {
    let mut mapped = [0u8; 16];
    mapped[10] = 0xff;
    mapped[11] = 0xff;
    mapped[12] = ip[at];
    mapped[13] = ip[at + 1];
    mapped[14] = ip[at + 2];
    mapped[15] = ip[at + 3];
    mapped
}

#[inline(always)]
fn parse_ipv4(
    start: usize,
    end: usize,
    offset: usize,
    packet: &mut Packet,
) -> Result<(), ParseError> {
    let ip: [u8; 20] = header(start, end, offset)?;
    if ip[0] >> 4 != 4 {
        return Err(ParseError::Unsupported);
    }
    let header_len = ((ip[0] & 0x0f) as usize) * 4;
    if header_len < 20 {
        return Err(ParseError::Unsupported);
    }
    // The whole header, options included, must be present.
    require(start, end, offset + header_len)?;
    packet.ttl = ip[8];
    packet.protocol = ip[9];
    packet.src = ipv4_mapped(&ip, 12);
    packet.dst = ipv4_mapped(&ip, 16);
    let id = be16(&ip, 4) as u32;
    let frag = be16(&ip, 6);
    if frag & 0x1fff != 0 {
        packet.fragment = Fragment::Later { id };
        return Ok(());
    }
    if frag & 0x2000 != 0 {
        packet.fragment = Fragment::First { id };
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
    let ip: [u8; IPV6_HLEN] = header(start, end, offset)?;
    if ip[0] >> 4 != 6 {
        return Err(ParseError::Unsupported);
    }
    let mut next_header = ip[6];
    packet.ttl = ip[7];
    packet.src.copy_from_slice(&ip[8..24]);
    packet.dst.copy_from_slice(&ip[24..40]);
    let mut offset = offset + IPV6_HLEN;
    let mut done = false;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next_header {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                let ext: [u8; 8] = header(start, end, offset)?;
                next_header = ext[0];
                offset += (ext[1] as usize + 1) * 8;
                require(start, end, offset)?;
            }
            NEXTHDR_FRAGMENT => {
                let ext: [u8; 8] = header(start, end, offset)?;
                next_header = ext[0];
                offset += 8;
                let frag = be16(&ext, 2);
                let id = u32::from_be_bytes([ext[4], ext[5], ext[6], ext[7]]);
                if frag >> 3 != 0 {
                    packet.protocol = next_header;
                    packet.fragment = Fragment::Later { id };
                    return Ok(());
                }
                if frag & 1 != 0 {
                    packet.fragment = Fragment::First { id };
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
            let tcp: [u8; 20] = header(start, end, offset)?;
            let header_len = ((tcp[12] >> 4) as usize) * 4;
            if header_len < 20 {
                return Err(ParseError::Unsupported);
            }
            // Options included: every segment of an offloaded super-packet repeats them.
            require(start, end, offset + header_len)?;
            packet.src_port = be16(&tcp, 0);
            packet.dst_port = be16(&tcp, 2);
            packet.tcp_flags = tcp[13];
            packet.headers_len = offset + header_len;
            (packet.sender_is_client, packet.evidence) =
                tcp_orientation(packet.tcp_flags, packet.src_port, packet.dst_port);
        }
        UDP => {
            let udp: [u8; 8] = header(start, end, offset)?;
            packet.src_port = be16(&udp, 0);
            packet.dst_port = be16(&udp, 2);
            packet.headers_len = offset + 8;
        }
        ICMP | ICMPV6 => {
            let icmp: [u8; 8] = header(start, end, offset)?;
            let (icmp_type, code) = (icmp[0], icmp[1]);
            packet.headers_len = offset + 8;
            let (request, reply) = if packet.protocol == ICMP {
                (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY)
            } else {
                (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY)
            };
            if icmp_type == request || icmp_type == reply {
                let id = be16(&icmp, 4);
                packet.kind = key_kind::ICMP_ECHO;
                packet.src_port = id;
                packet.dst_port = id;
                packet.evidence = orientation::HANDSHAKE;
                packet.sender_is_client = icmp_type == request;
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

/// Who the client of a TCP flow is, as far as this one segment tells.
#[inline(always)]
fn tcp_orientation(flags: u8, src_port: u16, dst_port: u16) -> (bool, u8) {
    use flowmon_common::tcp_flags::{ACK, SYN};
    if flags & SYN != 0 {
        // SYN: the sender opens; SYN-ACK: the sender answers.
        return (flags & ACK == 0, orientation::HANDSHAKE);
    }
    let src_well_known = src_port < WELL_KNOWN_PORT_LIMIT;
    let dst_well_known = dst_port < WELL_KNOWN_PORT_LIMIT;
    if src_well_known != dst_well_known {
        (dst_well_known, orientation::PORT_HEURISTIC)
    } else {
        (true, orientation::FIRST_PACKET)
    }
}
