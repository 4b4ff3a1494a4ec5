//! Export to a collector over UDP (RFC 7011, section 10.3): the templates first and again every
//! `--ipfix-template-refresh`, each message within `--ipfix-message-size`, by default within
//! what one datagram carries on the route to the collector (its MTU less the IP and UDP
//! headers: 1,472 bytes over Ethernet, 64 KiB to a collector on this host, which then takes
//! some 50 times fewer datagrams).
//!
//! A burst of records leaves in few system calls: full messages of a template are all the same
//! size (records are fixed-size), so up to 64 of them go in one send with UDP segmentation
//! offload (UDP_SEGMENT), which the kernel or the NIC cuts into one datagram each. Without it,
//! each message is sent alone. The records are not copied into messages: a send is a scatter
//! list of each message's headers and its records where the chunk holds them, which the kernel
//! reads once.
//!
//! Loss: UDP says nothing of delivery, but a collector port that is closed or a host that is
//! unreachable answers with ICMP errors. The socket asks for them (IP_RECVERR), each quoting the
//! start of the message it reports; its sequence number names the send it was part of, whose
//! records are all counted as dropped (its messages went the same way to the same port: one
//! error may stand for all, as it does when a send crosses the host's loopback or a veth
//! unsegmented). The collector is then held unreachable: records are counted as dropped
//! unsent, and every second a template message probes it; a probe that no error answers within
//! half a second brings it back (and it has its templates). The kernel rate-limits ICMP errors
//! from other hosts, so loss on the way to a remote collector is a lower bound.

use std::{
    collections::VecDeque,
    io,
    mem::MaybeUninit,
    net::{SocketAddr, ToSocketAddrs as _, UdpSocket},
    os::fd::AsRawFd as _,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{
    config::CollectorUrl,
    message::{self, Chunk, DATA_HEAD_LEN, Framer, Quoted},
    queue::{ChunkQueue, Next},
    set_option,
    template::{Template, Templates},
};
use crate::metrics::CollectorMetrics;

/// Most messages in one send (the kernel's UDP_MAX_SEGMENTS is 64 or more).
const MAX_SEGMENTS: usize = 64;
/// Largest payload of one send: a UDP datagram's.
pub const MAX_SEND_BYTES: usize = 65507;
/// How often the exporter looks for ICMP errors and due templates when no records come.
const TICK: Duration = Duration::from_millis(100);
/// Between two probes of an unreachable collector.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a probe waits for an error before the collector counts as reachable.
const PROBE_WAIT: Duration = Duration::from_millis(500);
/// How long a send waits for the host's full queues before its records are dropped.
const CONGESTION_WAIT: Duration = Duration::from_millis(200);
/// Sends remembered for the errors that may come back about them.
const RECENT_SENDS: usize = 4096;

/// Records of `template` in one send of full messages of `message_size` bytes.
pub fn records_per_send(template: &Template, message_size: usize) -> usize {
    let per_message = (message_size - DATA_HEAD_LEN) / template.record_len;
    let message_len = DATA_HEAD_LEN + per_message * template.record_len;
    per_message * MAX_SEGMENTS.min(MAX_SEND_BYTES / message_len)
}

/// The records of one send: those numbered from `first` on.
struct Send {
    first: u32,
    records: u32,
    /// Counted as dropped already (an error came about one of its messages).
    lost: bool,
}

/// Whether the collector is known reachable.
enum Reach {
    Up,
    Unreachable {
        /// When the next probe may go.
        next_probe: Instant,
        /// A probe sent and not yet answered by an error.
        probe: Option<Instant>,
    },
}

pub struct UdpExporter {
    label: String,
    socket: UdpSocket,
    /// Sends of several messages with UDP segmentation offload, until the path refuses them.
    gso: bool,
    templates: Arc<Templates>,
    framer: Framer,
    queue: Arc<ChunkQueue>,
    metrics: CollectorMetrics,
    refresh: Duration,
    templates_sent: Option<Instant>,
    reach: Reach,
    /// The headers of one send's messages, and the records of each.
    heads: Vec<u8>,
    segments: Vec<usize>,
    /// The template message, framed anew for each send.
    template_message: Vec<u8>,
    /// The latest sends, oldest first.
    recent: VecDeque<Send>,
}

impl UdpExporter {
    /// A socket connected to `url` (resolved now) asking for ICMP errors.
    pub fn new(
        url: &CollectorUrl,
        templates: Arc<Templates>,
        domain: u32,
        message_size: Option<usize>,
        refresh: Duration,
        queue: Arc<ChunkQueue>,
        metrics: CollectorMetrics,
    ) -> Result<Self> {
        let addr = url
            .authority()
            .to_socket_addrs()
            .with_context(|| format!("IPFIX collector {url}: cannot resolve"))?
            .next()
            .with_context(|| format!("IPFIX collector {url}: no address"))?;
        let socket = connected_socket(addr).with_context(|| format!("IPFIX collector {url}"))?;
        let message_size = match message_size {
            Some(size) => size,
            None => {
                let size = route_payload(&socket, addr)
                    .with_context(|| format!("IPFIX collector {url}: the route's MTU"))?
                    .clamp(templates.smallest_message(), MAX_SEND_BYTES);
                tracing::info!(
                    collector = %url,
                    message_size = size,
                    "IPFIX messages up to what a datagram carries on the route"
                );
                size
            }
        };
        metrics.up.set(1);
        Ok(Self {
            label: url.to_string(),
            socket,
            gso: true,
            templates,
            framer: Framer::new(domain, message_size),
            queue,
            metrics,
            refresh,
            templates_sent: None,
            reach: Reach::Up,
            heads: Vec::with_capacity(MAX_SEGMENTS * DATA_HEAD_LEN),
            segments: Vec::with_capacity(MAX_SEGMENTS),
            template_message: Vec::new(),
            recent: VecDeque::with_capacity(RECENT_SENDS),
        })
    }

    /// Exports what the queue brings until it is closed and empty.
    pub fn run(mut self) {
        loop {
            match self.queue.next(TICK) {
                Next::Chunk(chunk) => self.export(&chunk),
                Next::Idle => {}
                Next::Closed => break,
            }
            self.read_errors();
            self.tick();
        }
        self.read_errors();
    }

    /// Sends `chunk`'s records, or counts them as dropped while the collector is unreachable.
    fn export(&mut self, chunk: &Chunk) {
        if let Reach::Unreachable { .. } = self.reach {
            self.drop_unsent(chunk.count());
            return;
        }
        if self.templates_due() {
            self.send_templates();
        }
        let records = &chunk.records[..];
        let mut offset = 0;
        while offset < records.len() {
            if let Reach::Unreachable { .. } = self.reach {
                self.drop_unsent((records.len() - offset) / chunk.record_len);
                return;
            }
            self.heads.clear();
            self.segments.clear();
            let (first, start) = (self.framer.sequence(), offset);
            let mut segment_len = 0;
            loop {
                let count = self
                    .framer
                    .data_head(chunk, &records[offset..], &mut self.heads);
                offset += count * chunk.record_len;
                self.segments.push(count);
                let len = DATA_HEAD_LEN + count * chunk.record_len;
                if self.segments.len() == 1 {
                    segment_len = len;
                }
                // Only the last segment of a send may be shorter.
                if offset == records.len()
                    || len < segment_len
                    || self.segments.len() == MAX_SEGMENTS
                    || self.heads.len() + offset - start + segment_len > MAX_SEND_BYTES
                {
                    break;
                }
            }
            self.send_out(
                &records[start..offset],
                chunk.record_len,
                segment_len,
                first,
            );
        }
    }

    /// Sends the messages whose headers `heads` holds, of `records` (`record_len` bytes each;
    /// `segments` says how many in each message): messages of `segment_len` bytes, the last
    /// one maybe shorter, the records numbered from `first` on.
    fn send_out(&mut self, records: &[u8], record_len: usize, segment_len: usize, first: u32) {
        // Each message's headers, then its records.
        let mut iov = [EMPTY_IOVEC; 2 * MAX_SEGMENTS];
        let mut rest = records;
        let heads = self.heads.chunks(DATA_HEAD_LEN);
        for (index, (head, &count)) in heads.zip(&self.segments).enumerate() {
            let (message_records, after) = rest.split_at(count * record_len);
            iov[2 * index] = iovec(head);
            iov[2 * index + 1] = iovec(message_records);
            rest = after;
        }
        let iov = &iov[..2 * self.segments.len()];
        let count: usize = self.segments.iter().sum();
        if self.segments.len() > 1 && self.gso {
            let bytes = self.heads.len() + records.len();
            // SAFETY: `iov` points into `self.heads` and `records`, untouched until it is sent.
            match patiently(|| unsafe { send_iov(&self.socket, iov, Some(segment_len)) }) {
                Ok(()) => {
                    self.remember(first, count);
                    return self.sent(self.segments.len(), bytes, count);
                }
                Err(err) if !refused_segmentation(&err) => {
                    return self.failed(&err, count);
                }
                Err(err) => {
                    tracing::info!(
                        collector = %self.label,
                        "UDP segmentation offload refused ({err}): one send per IPFIX message"
                    );
                    self.gso = false;
                }
            }
        }
        let mut first = first;
        for (index, message) in iov.chunks(2).enumerate() {
            let records = self.segments[index];
            // SAFETY: as above.
            match patiently(|| unsafe { send_iov(&self.socket, message, None) }) {
                Ok(()) => {
                    self.remember(first, records);
                    self.sent(1, message[0].iov_len + message[1].iov_len, records);
                }
                Err(err) => {
                    let unsent: usize = self.segments[index..].iter().sum();
                    return self.failed(&err, unsent);
                }
            }
            first = first.wrapping_add(records as u32);
        }
    }

    fn remember(&mut self, first: u32, records: usize) {
        if self.recent.len() == RECENT_SENDS {
            self.recent.pop_front();
        }
        self.recent.push_back(Send {
            first,
            records: records as u32,
            lost: false,
        });
    }

    /// The records an error about the message numbered `sequence` (holding `records`) reports
    /// lost: its whole send, unless an earlier error counted it.
    fn lost(&mut self, sequence: u32, records: usize) -> usize {
        let send = self
            .recent
            .iter_mut()
            .rev()
            .find(|send| sequence.wrapping_sub(send.first) < send.records);
        match send {
            Some(send) if send.lost => 0,
            Some(send) => {
                send.lost = true;
                send.records as usize
            }
            None => records,
        }
    }

    fn sent(&self, messages: usize, bytes: usize, records: usize) {
        self.metrics.messages_sent.inc_by(messages as u64);
        self.metrics.bytes_sent.inc_by(bytes as u64);
        self.metrics.records_sent.inc_by(records as u64);
    }

    /// A send failed: its records are lost; an unreachable collector is probed from now on.
    fn failed(&mut self, err: &io::Error, records: usize) {
        self.metrics.records_dropped.inc_by(records as u64);
        if unreachable(err) {
            self.unreachable(err);
        } else {
            tracing::warn!(collector = %self.label, records, "IPFIX send failed: {err}");
        }
    }

    fn drop_unsent(&mut self, records: usize) {
        self.framer.skip(records);
        self.metrics.records_dropped.inc_by(records as u64);
    }

    fn unreachable(&mut self, err: &io::Error) {
        if let Reach::Up = self.reach {
            tracing::warn!(
                collector = %self.label,
                "IPFIX collector unreachable ({err}): its records are dropped until a probe \
                 gets through"
            );
            self.metrics.up.set(0);
        }
        self.reach = Reach::Unreachable {
            next_probe: Instant::now() + PROBE_INTERVAL,
            probe: None,
        };
    }

    fn templates_due(&self) -> bool {
        self.templates_sent
            .is_none_or(|sent| sent.elapsed() >= self.refresh)
    }

    /// Sends the template message; true when the kernel took it.
    fn send_templates(&mut self) -> bool {
        self.template_message.clear();
        self.framer
            .templates(&self.templates, &mut self.template_message);
        match patiently(|| self.socket.send(&self.template_message)) {
            Ok(_) => {
                self.templates_sent = Some(Instant::now());
                self.sent(1, self.template_message.len(), 0);
                true
            }
            Err(err) => {
                self.failed(&err, 0);
                false
            }
        }
    }

    /// Template refresh while up; probes while unreachable.
    fn tick(&mut self) {
        match self.reach {
            Reach::Up => {
                if self.templates_due() {
                    self.send_templates();
                }
            }
            Reach::Unreachable {
                probe: Some(sent), ..
            } if sent.elapsed() >= PROBE_WAIT => {
                tracing::info!(collector = %self.label, "IPFIX collector reachable again");
                self.reach = Reach::Up;
                self.templates_sent = Some(sent);
                self.metrics.up.set(1);
            }
            Reach::Unreachable {
                next_probe,
                probe: None,
            } if Instant::now() >= next_probe => {
                let now = Instant::now();
                let probe = self.send_templates().then_some(now);
                self.reach = Reach::Unreachable {
                    next_probe: now + PROBE_INTERVAL,
                    probe,
                };
            }
            Reach::Unreachable { .. } => {}
        }
    }

    /// Reads the ICMP errors the socket queued: each reports a message lost on its way.
    fn read_errors(&mut self) {
        while let Some(error) = next_error(&self.socket) {
            let quoted = message::quoted(&error.quoted, &self.templates);
            if let Some(Quoted {
                sequence,
                records: Some(records),
            }) = quoted
            {
                let lost = self.lost(sequence, records);
                self.metrics.records_dropped.inc_by(lost as u64);
            }
            if unreachable(&error.error) {
                self.unreachable(&error.error);
            }
        }
    }
}

fn connected_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("an address"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("an address"),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(addr)?;
    let (level, option) = match addr {
        SocketAddr::V4(_) => (libc::SOL_IP, libc::IP_RECVERR),
        SocketAddr::V6(_) => (libc::SOL_IPV6, libc::IPV6_RECVERR),
    };
    set_option(&socket, level, option, &(1 as libc::c_int))?;
    Ok(socket)
}

/// What one datagram to `addr` carries on the route `socket` is connected by: its MTU less the
/// IP and UDP headers.
fn route_payload(socket: &UdpSocket, addr: SocketAddr) -> io::Result<usize> {
    const UDP_HEADER: usize = 8;
    let (level, option, ip_header) = match addr {
        SocketAddr::V4(_) => (libc::SOL_IP, libc::IP_MTU, 20),
        SocketAddr::V6(_) => (libc::SOL_IPV6, libc::IPV6_MTU, 40),
    };
    let mut mtu: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes, the size of `mtu`, and sets `len`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&raw mut mtu).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((mtu as usize).saturating_sub(ip_header + UDP_HEADER))
}

/// Runs `send` again while the host's own queues are full (ENOBUFS, which IP_RECVERR reports
/// instead of dropping silently): a burst waits for them to drain, up to [`CONGESTION_WAIT`].
fn patiently<T>(mut send: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let started = Instant::now();
    let mut pause = Duration::from_micros(100);
    loop {
        match send() {
            Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => {
                if started.elapsed() >= CONGESTION_WAIT {
                    return Err(err);
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// Errors that say the collector cannot be reached (as opposed to a local failure).
fn unreachable(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN)
    )
}

/// Errors with which a path or kernel refuses segmentation offload (no checksum offload on the
/// device, segments larger than its MTU, no UDP_SEGMENT at all).
fn refused_segmentation(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

const EMPTY_IOVEC: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

fn iovec(bytes: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    }
}

/// One send of the bytes `iov` lists, back to back; with `segment_len`, the kernel cuts them
/// into datagrams of that many bytes.
///
/// # Safety
///
/// Every iovec of `iov` points at `iov_len` readable bytes.
unsafe fn send_iov(
    socket: &UdpSocket,
    iov: &[libc::iovec],
    segment_len: Option<usize>,
) -> io::Result<()> {
    // SAFETY: CMSG_SPACE only computes a size.
    const SPACE: usize = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
    let mut control = [0u64; SPACE.div_ceil(8)];
    // SAFETY: msghdr is plain data; zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr().cast_mut();
    msg.msg_iovlen = iov.len() as _;
    if let Some(segment_len) = segment_len {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = SPACE as _;
        // SAFETY: the control buffer holds one cmsg of a u16 (CMSG_SPACE above), aligned for
        // cmsghdr; CMSG_FIRSTHDR and CMSG_DATA point inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = libc::UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
            libc::CMSG_DATA(cmsg)
                .cast::<u16>()
                .write_unaligned(segment_len as u16);
        }
    }
    // SAFETY: msg points at `iov` (readable, by the caller's word) and the control buffer
    // above, alive for the call; sendmsg only reads them.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, 0) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An error the socket queued, and the start of the datagram it is about.
struct QueuedError {
    error: io::Error,
    quoted: Vec<u8>,
}

/// The next error queued on `socket`, without waiting.
fn next_error(socket: &UdpSocket) -> Option<QueuedError> {
    // The message header and a data set header are all that is read of the quote.
    let mut quoted = [0u8; DATA_HEAD_LEN];
    let mut iov = libc::iovec {
        iov_base: quoted.as_mut_ptr().cast(),
        iov_len: quoted.len(),
    };
    let mut control = [MaybeUninit::<u64>::uninit(); 64];
    // SAFETY: msghdr is plain data; zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control) as _;
    // SAFETY: recvmsg writes at most iov_len bytes into `quoted` and msg_controllen bytes into
    // `control`, both ours and alive for the call.
    let len = unsafe {
        libc::recvmsg(
            socket.as_raw_fd(),
            &mut msg,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        )
    };
    if len < 0 {
        return None;
    }
    let mut errno = 0;
    // SAFETY: the kernel filled msg_controllen bytes of `control` with cmsgs; CMSG_FIRSTHDR
    // and CMSG_NXTHDR stay within them, and an IP(V6)_RECVERR cmsg carries a
    // sock_extended_err.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let (level, kind) = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            if (level, kind) == (libc::SOL_IP, libc::IP_RECVERR)
                || (level, kind) == (libc::SOL_IPV6, libc::IPV6_RECVERR)
            {
                let err = libc::CMSG_DATA(cmsg)
                    .cast::<libc::sock_extended_err>()
                    .read_unaligned();
                errno = err.ee_errno as i32;
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Some(QueuedError {
        error: io::Error::from_raw_os_error(errno),
        quoted: quoted[..(len as usize).min(quoted.len())].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    /// The datagrams a collector on loopback gets when an exporter sends `chunk`, with
    /// segmentation offload or one send a message; the export times zeroed.
    fn datagrams(gso: bool, chunk: &Chunk, templates: Arc<Templates>) -> Vec<Vec<u8>> {
        let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
        collector
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let url = format!("udp://{}", collector.local_addr().unwrap());
        let metrics = Metrics::new().ipfix.collector(&url);
        let queue = Arc::new(ChunkQueue::new(1 << 20));
        let mut exporter = UdpExporter::new(
            &url.parse().unwrap(),
            templates,
            7,
            Some(1400),
            Duration::from_secs(60),
            queue,
            metrics.clone(),
        )
        .unwrap();
        exporter.gso = gso;
        exporter.export(chunk);
        let mut received = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..metrics.messages_sent.get() {
            let len = collector.recv(&mut buf).expect("every message sent");
            buf[4..8].fill(0);
            received.push(buf[..len].to_vec());
        }
        assert_eq!(metrics.records_sent.get() as usize, chunk.count());
        received
    }

    #[test]
    fn a_datagram_carries_the_routes_mtu_less_the_headers() {
        let mtu: usize = std::fs::read_to_string("/sys/class/net/lo/mtu")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // An IPv4 packet holds at most 65,535 bytes, headers included.
        for (addr, expected) in [
            ("127.0.0.1:4739", mtu.min(65535) - 28),
            ("[::1]:4739", mtu - 48),
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let socket = connected_socket(addr).unwrap();
            assert_eq!(route_payload(&socket, addr).unwrap(), expected);
        }
    }

    #[test]
    fn messages_leave_as_framed_with_segmentation_offload_or_one_send_each() {
        let templates = Arc::new(Templates::new(4, 32473));
        let template = &templates.v4;
        // A full send, then a shorter one ending in a short message (within what the
        // collector's socket buffer holds).
        let count = records_per_send(template, 1400) + 10;
        let chunk = Chunk {
            template_id: template.id,
            record_len: template.record_len,
            records: (0..count * template.record_len)
                .map(|i| (i / 7) as u8)
                .collect(),
            pool: None,
        };
        // What the framer makes of the chunk, message by message, after the templates.
        let mut framer = Framer::new(7, 1400);
        let mut expected = vec![Vec::new()];
        framer.templates(&templates, &mut expected[0]);
        let mut rest = &chunk.records[..];
        while !rest.is_empty() {
            let mut message = Vec::new();
            let records = framer.data(&chunk, rest, &mut message);
            rest = &rest[records * chunk.record_len..];
            expected.push(message);
        }
        for message in &mut expected {
            message[4..8].fill(0);
        }
        assert_eq!(datagrams(true, &chunk, templates.clone()), expected);
        assert_eq!(datagrams(false, &chunk, templates), expected);
    }
}
