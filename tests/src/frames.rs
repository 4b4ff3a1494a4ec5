//! Crafted Ethernet frames for BPF_PROG_TEST_RUN: every header flowmon parses, with the byte
//! offsets where each ends, so tests can cut a frame at every truncation point.

use std::net::IpAddr;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x05];

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

#[derive(Clone, Debug)]
pub enum Transport {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Icmp {
        icmp_type: u8,
        code: u8,
        id: u16,
    },
    /// Any other protocol number: no transport header.
    Other(u8),
}

/// An IPv6 extension header to put before the transport header.
#[derive(Clone, Debug)]
pub enum Ipv6Ext {
    HopByHop,
    Routing,
    DestinationOptions,
}

#[derive(Clone, Debug)]
pub struct Frame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// Outer tag first; an 802.1ad (0x88a8) outer tag when there are two.
    pub vlans: Vec<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub ipv4_options: Vec<u8>,
    pub ipv6_ext: Vec<Ipv6Ext>,
    /// (identification, offset in 8-byte units, more fragments)
    pub fragment: Option<(u32, u16, bool)>,
    pub transport: Transport,
    pub tcp_options: usize,
    pub payload: usize,
}

impl Frame {
    fn new(src: &str, dst: &str, transport: Transport) -> Self {
        Self {
            src_mac: CLIENT_MAC,
            dst_mac: SERVER_MAC,
            vlans: Vec::new(),
            src: src.parse().expect("source address"),
            dst: dst.parse().expect("destination address"),
            ttl: 64,
            ipv4_options: Vec::new(),
            ipv6_ext: Vec::new(),
            fragment: None,
            transport,
            tcp_options: 0,
            payload: 0,
        }
    }

    pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Self {
        Self::new(
            src,
            dst,
            Transport::Tcp {
                sport,
                dport,
                flags,
            },
        )
    }

    pub fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Self {
        Self::new(src, dst, Transport::Udp { sport, dport })
    }

    /// An ICMP (IPv4) or ICMPv6 message, by the address family.
    pub fn icmp(src: &str, dst: &str, icmp_type: u8, code: u8, id: u16) -> Self {
        Self::new(
            src,
            dst,
            Transport::Icmp {
                icmp_type,
                code,
                id,
            },
        )
    }

    pub fn echo_request(src: &str, dst: &str, id: u16) -> Self {
        let frame = Self::icmp(src, dst, 0, 0, id);
        let icmp_type = if frame.src.is_ipv4() { 8 } else { 128 };
        Self::icmp(src, dst, icmp_type, 0, id)
    }

    pub fn echo_reply(src: &str, dst: &str, id: u16) -> Self {
        let frame = Self::icmp(src, dst, 0, 0, id);
        let icmp_type = if frame.src.is_ipv4() { 0 } else { 129 };
        Self::icmp(src, dst, icmp_type, 0, id)
    }

    pub fn other(src: &str, dst: &str, protocol: u8) -> Self {
        Self::new(src, dst, Transport::Other(protocol))
    }

    pub fn vlan(mut self, id: u16) -> Self {
        self.vlans.push(id);
        self
    }

    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        (self.src_mac, self.dst_mac) = (src, dst);
        self
    }

    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn payload(mut self, bytes: usize) -> Self {
        self.payload = bytes;
        self
    }

    pub fn ipv4_options(mut self, options: &[u8]) -> Self {
        assert_eq!(options.len() % 4, 0, "IPv4 options come in 4-byte words");
        self.ipv4_options = options.to_vec();
        self
    }

    pub fn tcp_options(mut self, bytes: usize) -> Self {
        assert_eq!(bytes % 4, 0, "TCP options come in 4-byte words");
        self.tcp_options = bytes;
        self
    }

    pub fn ipv6_ext(mut self, ext: Ipv6Ext) -> Self {
        self.ipv6_ext.push(ext);
        self
    }

    pub fn fragment(mut self, id: u32, offset_units: u16, more: bool) -> Self {
        self.fragment = Some((id, offset_units, more));
        self
    }

    fn is_later_fragment(&self) -> bool {
        matches!(self.fragment, Some((_, offset, _)) if offset != 0)
    }

    fn protocol(&self) -> u8 {
        match self.transport {
            Transport::Tcp { .. } => 6,
            Transport::Udp { .. } => 17,
            Transport::Icmp { .. } if self.src.is_ipv4() => 1,
            Transport::Icmp { .. } => 58,
            Transport::Other(protocol) => protocol,
        }
    }

    fn transport_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.is_later_fragment() {
            // A later fragment carries only the datagram's continuation.
            out.resize(self.payload, 0x5a);
            return out;
        }
        match self.transport {
            Transport::Tcp {
                sport,
                dport,
                flags,
            } => {
                out.extend(sport.to_be_bytes());
                out.extend(dport.to_be_bytes());
                out.extend(1000u32.to_be_bytes()); // sequence
                out.extend(if flags & ACK != 0 { 2000u32 } else { 0 }.to_be_bytes());
                out.push((((20 + self.tcp_options) / 4) as u8) << 4);
                out.push(flags);
                out.extend(65535u16.to_be_bytes()); // window
                out.extend([0, 0, 0, 0]); // checksum, urgent pointer
                out.extend(std::iter::repeat_n(1u8, self.tcp_options)); // NOPs
            }
            Transport::Udp { sport, dport } => {
                out.extend(sport.to_be_bytes());
                out.extend(dport.to_be_bytes());
                out.extend(((8 + self.payload) as u16).to_be_bytes());
                out.extend([0, 0]);
            }
            Transport::Icmp {
                icmp_type,
                code,
                id,
            } => {
                out.extend([icmp_type, code, 0, 0]);
                out.extend(id.to_be_bytes());
                out.extend(1u16.to_be_bytes()); // sequence
            }
            Transport::Other(_) => {}
        }
        out.resize(out.len() + self.payload, 0x5a);
        out
    }

    /// Offsets at which each header ends, in order: Ethernet, each VLAN tag, IP (with options),
    /// each extension header, transport. A frame cut before any of them is truncated.
    pub fn header_ends(&self) -> Vec<usize> {
        let mut ends = vec![14];
        for _ in &self.vlans {
            ends.push(ends.last().unwrap() + 4);
        }
        let ip_len = if self.src.is_ipv4() {
            20 + self.ipv4_options.len()
        } else {
            40
        };
        ends.push(ends.last().unwrap() + ip_len);
        for _ in &self.ipv6_ext {
            ends.push(ends.last().unwrap() + 8);
        }
        if self.src.is_ipv6() && self.fragment.is_some() {
            ends.push(ends.last().unwrap() + 8);
        }
        if !self.is_later_fragment() {
            let transport = match self.transport {
                Transport::Tcp { .. } => 20 + self.tcp_options,
                Transport::Udp { .. } | Transport::Icmp { .. } => 8,
                Transport::Other(_) => 0,
            };
            if transport > 0 {
                ends.push(ends.last().unwrap() + transport);
            }
        }
        ends
    }

    pub fn build(&self) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend(self.dst_mac);
        frame.extend(self.src_mac);
        // Each tag's TPID stands where the ethertype would; the innermost is followed by it.
        let ethertype: u16 = if self.src.is_ipv4() { 0x0800 } else { 0x86dd };
        let mut tpids: Vec<u16> = self
            .vlans
            .iter()
            .enumerate()
            .map(|(i, _)| {
                if i == 0 && self.vlans.len() > 1 {
                    0x88a8
                } else {
                    0x8100
                }
            })
            .collect();
        tpids.push(ethertype);
        frame.extend(tpids[0].to_be_bytes());
        for (i, vlan) in self.vlans.iter().enumerate() {
            frame.extend(vlan.to_be_bytes());
            frame.extend(tpids[i + 1].to_be_bytes());
        }
        let transport = self.transport_bytes();
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let header_len = 20 + self.ipv4_options.len();
                let (id, offset, more) = self.fragment.unwrap_or((0, 0, false));
                frame.push(0x40 | (header_len / 4) as u8);
                frame.push(0);
                frame.extend(((header_len + transport.len()) as u16).to_be_bytes());
                frame.extend((id as u16).to_be_bytes());
                frame.extend((offset | if more { 0x2000 } else { 0 }).to_be_bytes());
                frame.extend([self.ttl, self.protocol(), 0, 0]);
                frame.extend(src.octets());
                frame.extend(dst.octets());
                frame.extend(&self.ipv4_options);
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let mut chain: Vec<u8> = self
                    .ipv6_ext
                    .iter()
                    .map(|ext| match ext {
                        Ipv6Ext::HopByHop => 0,
                        Ipv6Ext::Routing => 43,
                        Ipv6Ext::DestinationOptions => 60,
                    })
                    .collect();
                if self.fragment.is_some() {
                    chain.push(44);
                }
                let ext_len = chain.len() * 8;
                frame.extend([0x60, 0, 0, 0]);
                frame.extend(((ext_len + transport.len()) as u16).to_be_bytes());
                frame.push(chain.first().copied().unwrap_or(self.protocol()));
                frame.push(self.ttl);
                frame.extend(src.octets());
                frame.extend(dst.octets());
                for (i, kind) in chain.iter().enumerate() {
                    let next = chain.get(i + 1).copied().unwrap_or(self.protocol());
                    if *kind == 44 {
                        let (id, offset, more) = self.fragment.unwrap();
                        frame.extend([next, 0]);
                        frame.extend(((offset << 3) | more as u16).to_be_bytes());
                        frame.extend(id.to_be_bytes());
                    } else {
                        // Length 0: 8 bytes, padded with a PadN option.
                        frame.extend([next, 0, 1, 4, 0, 0, 0, 0]);
                    }
                }
            }
            _ => panic!("source and destination of different families"),
        }
        frame.extend(transport);
        frame
    }
}
