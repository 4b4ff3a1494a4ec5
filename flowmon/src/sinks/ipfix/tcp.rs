//! Export to a collector over TCP (RFC 7011, section 10.4): the templates first on every
//! connection, then the records in order.
//!
//! While the collector is away, records wait in the collector's bounded queue (what does not
//! fit is counted as dropped) and the exporter reconnects with a growing back-off. Written is
//! not delivered: when a connection dies, the messages its peer had not acknowledged (what the
//! socket still holds, SIOCOUTQ) are sent again, first, on the next connection. A message the
//! collector's host acknowledged is never sent twice; one its process had not read when it
//! died is lost with it (IPFIX over TCP has no acknowledgement of its own).

use std::{
    collections::VecDeque,
    io::{self, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    os::fd::AsRawFd as _,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    config::{CollectorUrl, MAX_MESSAGE_SIZE},
    message::{Chunk, Framer},
    queue::{ChunkQueue, Next},
    set_option,
    template::Templates,
};
use crate::metrics::CollectorMetrics;

/// How often the exporter checks its connection when no records come.
const TICK: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A write that cannot progress for this long is retried after a look at the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Unacknowledged data older than this ends the connection (TCP_USER_TIMEOUT): a collector
/// host that vanished without a reset.
const USER_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A framed message and the data records it holds.
struct Framed {
    bytes: Vec<u8>,
    records: usize,
}

/// One connection: what was written on it, and the messages not yet acknowledged with the
/// stream offset at which each ends.
struct Session {
    stream: TcpStream,
    framer: Framer,
    written: u64,
    unacknowledged: VecDeque<(u64, Framed)>,
}

pub struct TcpExporter {
    url: CollectorUrl,
    label: String,
    templates: Arc<Templates>,
    domain: u32,
    queue: Arc<ChunkQueue>,
    metrics: CollectorMetrics,
    session: Option<Session>,
    /// Messages a lost connection did not deliver, sent first on the next one.
    resend: VecDeque<Framed>,
    backoff: Duration,
    next_attempt: Instant,
    /// How long a shutdown waits for the collector to take what is queued.
    grace: Duration,
    /// Set once the queue is closed: the end of the grace.
    deadline: Option<Instant>,
}

impl TcpExporter {
    pub fn new(
        url: &CollectorUrl,
        templates: Arc<Templates>,
        domain: u32,
        queue: Arc<ChunkQueue>,
        metrics: CollectorMetrics,
        grace: Duration,
    ) -> Self {
        Self {
            url: url.clone(),
            label: url.to_string(),
            templates,
            domain,
            queue,
            metrics,
            session: None,
            resend: VecDeque::new(),
            backoff: FIRST_BACKOFF,
            next_attempt: Instant::now(),
            grace,
            deadline: None,
        }
    }

    /// Exports what the queue brings until it is closed and the collector acknowledged
    /// everything, or the grace after the close ran out.
    pub fn run(mut self) {
        loop {
            if self.deadline.is_none() && self.queue.is_closed() {
                self.deadline = Some(Instant::now() + self.grace);
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                return self.give_up();
            }
            if self.session.is_none() {
                let wait = self.next_attempt.saturating_duration_since(Instant::now());
                if wait.is_zero() {
                    self.connect();
                } else {
                    std::thread::sleep(wait.min(TICK));
                }
                continue;
            }
            if !self.alive() {
                self.lose_session(&io::Error::from(io::ErrorKind::ConnectionReset));
                continue;
            }
            self.acknowledged();
            match self.queue.next(TICK) {
                Next::Chunk(chunk) => self.send(&chunk),
                Next::Idle => {}
                Next::Closed => {
                    let session = self.session.as_ref().expect("a session");
                    if session.unacknowledged.is_empty() {
                        return;
                    }
                    std::thread::sleep(TICK);
                }
            }
        }
    }

    /// Connects, then sends the templates and what the last connection did not deliver.
    fn connect(&mut self) {
        let stream = match self.open() {
            Ok(stream) => stream,
            Err(err) => {
                tracing::debug!(collector = %self.label, "IPFIX collector not reachable: {err}");
                self.next_attempt = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                return;
            }
        };
        tracing::info!(collector = %self.label, "IPFIX collector connected");
        self.metrics.up.set(1);
        self.backoff = FIRST_BACKOFF;
        let mut framer = Framer::new(self.domain, MAX_MESSAGE_SIZE);
        let mut templates = Vec::new();
        framer.templates(&self.templates, &mut templates);
        let mut messages = VecDeque::from([Framed {
            bytes: templates,
            records: 0,
        }]);
        for mut message in std::mem::take(&mut self.resend) {
            framer.restamp(&mut message.bytes, message.records);
            messages.push_back(message);
        }
        self.session = Some(Session {
            stream,
            framer,
            written: 0,
            unacknowledged: VecDeque::new(),
        });
        self.write_all(messages);
    }

    fn open(&self) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in self.url.authority().to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
                    set_user_timeout(&stream, USER_TIMEOUT)?;
                    return Ok(stream);
                }
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    /// Frames `chunk`'s records and writes them.
    fn send(&mut self, chunk: &Chunk) {
        let session = self.session.as_mut().expect("a session");
        let mut messages = VecDeque::new();
        let mut rest = &chunk.records[..];
        while !rest.is_empty() {
            let mut bytes = Vec::new();
            let records = session.framer.data(chunk, rest, &mut bytes);
            rest = &rest[records * chunk.record_len..];
            messages.push_back(Framed { bytes, records });
        }
        self.write_all(messages);
    }

    /// Writes `messages`, framed for this session, in order; when the connection dies, what
    /// it did not deliver waits for the next one.
    fn write_all(&mut self, messages: VecDeque<Framed>) {
        let deadline = self.deadline;
        let session = self.session.as_mut().expect("a session");
        let first = session.unacknowledged.len();
        let mut end = session.written;
        for message in messages {
            end += message.bytes.len() as u64;
            session.unacknowledged.push_back((end, message));
        }
        if let Err(err) = write_from(session, first, deadline) {
            self.lose_session(&err);
        }
    }

    /// Counts what the collector's host acknowledged as sent, and forgets it.
    fn acknowledged(&mut self) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let Some(acked) = acknowledged_bytes(session) else {
            return;
        };
        while let Some((end, _)) = session.unacknowledged.front() {
            if *end > acked {
                break;
            }
            let (_, message) = session.unacknowledged.pop_front().expect("a message");
            self.metrics.messages_sent.inc();
            self.metrics.bytes_sent.inc_by(message.bytes.len() as u64);
            self.metrics.records_sent.inc_by(message.records as u64);
        }
    }

    /// Whether the collector still holds its end: it never sends, so anything readable is
    /// its close or a reset.
    fn alive(&self) -> bool {
        let session = self.session.as_ref().expect("a session");
        let mut poll = libc::pollfd {
            fd: session.stream.as_raw_fd(),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: poll reads and writes the one pollfd we own.
        if unsafe { libc::poll(&mut poll, 1, 0) } <= 0 {
            return true;
        }
        if poll.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLRDHUP) != 0 {
            return false;
        }
        let mut buf = [0u8; 512];
        // SAFETY: recv writes at most buf.len() bytes into buf.
        let n = unsafe {
            libc::recv(
                poll.fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        n > 0 || (n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock)
    }

    /// The connection is gone: what its peer did not acknowledge is sent again on the next.
    fn lose_session(&mut self, err: &io::Error) {
        self.acknowledged();
        let Some(session) = self.session.take() else {
            return;
        };
        let records: usize = session.unacknowledged.iter().map(|(_, m)| m.records).sum();
        tracing::warn!(
            collector = %self.label,
            records,
            "IPFIX collector connection lost ({err}): reconnecting; unacknowledged records \
             will be sent again"
        );
        self.metrics.up.set(0);
        // The template message of the dead session is not resent: every connection starts
        // with its own.
        let mut resend: VecDeque<Framed> = session
            .unacknowledged
            .into_iter()
            .map(|(_, message)| message)
            .filter(|message| message.records > 0)
            .collect();
        resend.extend(std::mem::take(&mut self.resend));
        self.resend = resend;
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// The shutdown's grace ran out: what is left is dropped, and counted.
    fn give_up(&mut self) {
        self.acknowledged();
        let mut records: usize = self.resend.iter().map(|m| m.records).sum();
        if let Some(session) = &self.session {
            records += session
                .unacknowledged
                .iter()
                .map(|(_, m)| m.records)
                .sum::<usize>();
        }
        records += self.queue.drain().iter().map(|c| c.count()).sum::<usize>();
        if records > 0 {
            tracing::warn!(
                collector = %self.label,
                records,
                "IPFIX collector did not take every record before shutdown"
            );
            self.metrics.records_dropped.inc_by(records as u64);
        }
    }
}

/// Writes the session's messages from the `first` unacknowledged one on, all of them; a write
/// that cannot progress is retried until `deadline`.
fn write_from(session: &mut Session, first: usize, deadline: Option<Instant>) -> io::Result<()> {
    let mut offset = 0;
    for index in first..session.unacknowledged.len() {
        let bytes = &session.unacknowledged[index].1.bytes;
        while offset < bytes.len() {
            match session.stream.write(&bytes[offset..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    session.written += n as u64;
                    offset += n;
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(err);
                    }
                }
                Err(err) => return Err(err),
            }
        }
        offset = 0;
    }
    Ok(())
}

/// Bytes of the session the peer acknowledged: written, less what the socket still holds.
fn acknowledged_bytes(session: &Session) -> Option<u64> {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int into `queued`.
    let rc = unsafe { libc::ioctl(session.stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    (rc == 0).then(|| session.written.saturating_sub(queued as u64))
}

fn set_user_timeout(stream: &TcpStream, timeout: Duration) -> io::Result<()> {
    let ms = timeout.as_millis() as libc::c_uint;
    set_option(stream, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, &ms)
}
