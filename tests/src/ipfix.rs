//! IPFIX collectors inside a test's network namespace: nfdump's `nfcapd` over UDP, a TCP
//! collector, and `tshark` capturing the export stream and decoding it with its own IPFIX
//! dissector. Each is stopped when dropped.

use std::{
    io::{ErrorKind, Read as _},
    net::TcpListener,
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use serde_json::Value;

use crate::{
    netns::Netns,
    process::{ChildGuard, TempDir},
    wait::wait_until,
};

/// nfdump's collector, listening on 127.0.0.1:`port` of a namespace, writing its files in a
/// directory of its own.
pub struct Nfcapd {
    netns: String,
    port: u16,
    dir: TempDir,
    process: Option<ChildGuard>,
}

/// A flow as `nfdump` lists it: its JSON object (`-o json`), and what only its raw output
/// (`-o raw`) gives: the times in epoch milliseconds and the end reason.
#[derive(Debug)]
pub struct NfdumpFlow {
    pub json: Value,
    pub first_ms: u64,
    pub last_ms: u64,
    pub end_reason: u8,
}

impl Nfcapd {
    pub fn start(netns: &Netns, port: u16) -> Self {
        let mut nfcapd = Self {
            netns: netns.name.clone(),
            port,
            dir: TempDir::new("nfcapd"),
            process: None,
        };
        nfcapd.restart(netns);
        nfcapd
    }

    /// Starts it (again): a burst of a million records needs a large socket buffer.
    pub fn restart(&mut self, netns: &Netns) {
        assert!(self.process.is_none(), "nfcapd is running");
        let mut command = netns.command("nfcapd");
        command
            .args(["-w", self.dir.path().to_str().unwrap()])
            .args(["-b", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-B", "8388608"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.process = Some(ChildGuard::spawn("nfcapd", &mut command));
        wait_until(Duration::from_secs(10), "nfcapd listens", || {
            self.receive_queue(netns).is_some()
        });
    }

    /// Bytes waiting in its socket, `None` while nothing listens on the port.
    fn receive_queue(&self, netns: &Netns) -> Option<u64> {
        let output = netns.exec(&["ss", "-Hlun", &format!("sport = :{}", self.port)]);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let line = text.lines().next()?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Stops it once it has read every datagram that reached it, so that it writes them all.
    pub fn stop(&mut self, netns: &Netns) {
        assert_eq!(netns.name, self.netns);
        wait_until(
            Duration::from_secs(10),
            "nfcapd read every datagram",
            || self.receive_queue(netns) == Some(0),
        );
        let mut process = self.process.take().expect("nfcapd running");
        let status = process.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
        assert!(status.success(), "nfcapd exited with {status}");
    }

    /// Every flow of every file it wrote, in order.
    pub fn flows(&self) -> Vec<NfdumpFlow> {
        assert!(
            self.process.is_none(),
            "stop nfcapd first: it writes at exit"
        );
        let dir = self.dir.path().to_str().unwrap();
        let json: Vec<Value> =
            serde_json::from_str(&nfdump(&["-R", dir, "-o", "json"])).unwrap_or_default();
        let raw = nfdump(&["-R", dir, "-o", "raw"]);
        let blocks: Vec<&str> = raw.split("Flow Record:").skip(1).collect();
        assert_eq!(
            json.len(),
            blocks.len(),
            "nfdump's json and raw outputs agree"
        );
        json.into_iter()
            .zip(blocks)
            .map(|(json, block)| {
                let field = |name: &str| -> u64 {
                    let line = block
                        .lines()
                        .find(|line| line.trim_start().starts_with(name))
                        .unwrap_or_else(|| panic!("no {name} in {block}"));
                    let value = line.split('=').nth(1).unwrap().split_whitespace().next();
                    let value = value.unwrap();
                    match value.strip_prefix("0x") {
                        Some(hex) => u64::from_str_radix(hex, 16).unwrap(),
                        None => value.parse().unwrap(),
                    }
                };
                // The raw and JSON outputs are the same flows in the same order.
                assert_eq!(json["in_packets"].as_u64(), Some(field("in packets")));
                NfdumpFlow {
                    first_ms: field("first "),
                    last_ms: field("last "),
                    end_reason: field("end reason") as u8,
                    json,
                }
            })
            .collect()
    }
}

fn nfdump(args: &[&str]) -> String {
    output_of(Command::new("nfdump").args(args))
}

/// What `command` printed; panics with its standard error when it fails.
fn output_of(command: &mut Command) -> String {
    let output = command.output().expect("run the command");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// A TCP collector on 127.0.0.1:`port` of a namespace that reads whatever comes, one
/// connection after the other.
pub struct TcpCollector {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpCollector {
    pub fn start(netns: &Netns, port: u16) -> Self {
        let listener = netns.run(|| TcpListener::bind(("127.0.0.1", port)).expect("listen"));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || serve(&listener, &stop)
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the listener and the connection, once it has read all that arrived: like a
    /// collector that stops cleanly, it takes everything its host acknowledged.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("TCP collector thread");
        }
    }
}

impl Drop for TcpCollector {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(listener: &TcpListener, stop: &AtomicBool) {
    let mut buf = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(err) => panic!("accept: {err}"),
        };
        stream
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if stop.load(Ordering::Relaxed) && unread(&stream) == 0 {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
    }
}

/// Bytes the socket holds unread (FIONREAD).
fn unread(stream: &std::net::TcpStream) -> i32 {
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `unread`.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::FIONREAD, &mut unread) };
    assert_eq!(rc, 0, "FIONREAD");
    unread
}

/// `tshark` capturing the loopback of a namespace into a file.
pub struct Capture {
    process: Option<ChildGuard>,
    file: PathBuf,
    _dir: TempDir,
}

impl Capture {
    /// Starts capturing what `filter` (a capture filter) selects on the namespace's loopback,
    /// once capture has begun. UDP segmentation offload is turned off on that loopback: the
    /// kernel then cuts a burst into its datagrams before the capture sees it (as a NIC puts
    /// them on the wire), instead of showing one large datagram.
    pub fn start(netns: &Netns, filter: &str) -> Self {
        netns.exec(&["ip", "link", "set", "dev", "lo", "gso_max_segs", "1"]);
        let dir = TempDir::new("capture");
        let file = dir.path().join("export.pcapng");
        let log = dir.path().join("tshark.log");
        let mut command = netns.command("tshark");
        command
            .args(["-i", "lo", "-f", filter, "-w", file.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let process = ChildGuard::spawn("tshark", &mut command);
        wait_until(Duration::from_secs(30), "tshark captures", || {
            std::fs::read_to_string(&log).is_ok_and(|text| text.contains("Capturing on"))
        });
        Self {
            process: Some(process),
            file,
            _dir: dir,
        }
    }

    /// Stops capturing once the file holds `records` IPFIX data records (read as `decode_as`
    /// says): the kernel hands captured packets over in blocks, up to a second late, and what
    /// it has not handed over when the capture stops is lost.
    pub fn stop_with(&mut self, decode_as: &[&str], records: usize) {
        wait_until(
            Duration::from_secs(30),
            &format!("the capture holds {records} IPFIX records"),
            || self.records_so_far(decode_as) >= records,
        );
        if let Some(mut process) = self.process.take() {
            let status = process.signal_and_wait(libc::SIGINT, Duration::from_secs(30));
            assert!(status.success(), "tshark exited with {status}");
        }
    }

    /// Data records in the file as written so far (its last packet may be cut short).
    fn records_so_far(&self, decode_as: &[&str]) -> usize {
        let output = self
            .reader(decode_as)
            .args(["-T", "fields", "-e", "cflow.flow_end_reason"])
            .stderr(Stdio::null())
            .output()
            .expect("run tshark");
        String::from_utf8_lossy(&output.stdout)
            .split([',', '\n'])
            .filter(|value| !value.trim().is_empty())
            .count()
    }

    /// The IPFIX messages of the capture as tshark's dissector reads them, `decode_as` (e.g.
    /// `udp.port==4739`) being the ports to read as IPFIX; each with its transport stream.
    pub fn messages(&self, decode_as: &[&str]) -> Vec<Message> {
        let json = self.tshark(decode_as, &["-T", "json", "--no-duplicate-keys"]);
        let packets: Vec<Value> = serde_json::from_str(&json).expect("tshark's JSON");
        let mut messages = Vec::new();
        for packet in packets {
            let layers = &packet["_source"]["layers"];
            let stream = layers["tcp"]["tcp.stream"]
                .as_str()
                .map(|s| format!("tcp {s}"))
                .unwrap_or_else(|| "udp".into());
            let pdus = match &layers["cflow"] {
                Value::Array(pdus) => pdus.clone(),
                Value::Null => continue,
                pdu => vec![pdu.clone()],
            };
            for pdu in pdus {
                messages.push(Message {
                    stream: stream.clone(),
                    pdu,
                });
            }
        }
        messages
    }

    /// What tshark has to say about the capture's IPFIX: malformed packets and the IPFIX
    /// dissector's expert notes (none expected).
    pub fn complaints(&self, decode_as: &[&str]) -> Vec<String> {
        let expert = self.tshark(decode_as, &["-q", "-z", "expert,note"]);
        let mut complaints: Vec<String> = expert
            .lines()
            .filter(|line| line.contains("CFLOW") || line.contains("Malformed"))
            .map(str::to_owned)
            .collect();
        let malformed = self.tshark(decode_as, &["-Y", "_ws.malformed"]);
        complaints.extend(malformed.lines().map(str::to_owned));
        complaints
    }

    fn tshark(&self, decode_as: &[&str], args: &[&str]) -> String {
        assert!(self.process.is_none(), "stop the capture first");
        output_of(self.reader(decode_as).args(args))
    }

    /// tshark reading the capture file, `decode_as` ports read as IPFIX.
    fn reader(&self, decode_as: &[&str]) -> Command {
        let mut command = Command::new("tshark");
        command.args(["-r", self.file.to_str().unwrap()]);
        for port in decode_as {
            command.args(["-d", &format!("{port},cflow")]);
        }
        command
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.signal_and_wait(libc::SIGINT, Duration::from_secs(30));
        }
    }
}

/// One IPFIX message as tshark decoded it.
pub struct Message {
    /// `udp`, or `tcp <n>` for the n-th TCP connection of the capture.
    pub stream: String,
    pub pdu: Value,
}

impl Message {
    /// Whether it holds a template set.
    pub fn has_templates(&self) -> bool {
        self.sets().any(|(name, _)| name.contains("Template"))
    }

    /// Its data records ("Flow n" of each set).
    pub fn records(&self) -> Vec<&Value> {
        self.sets()
            .flat_map(|(_, set)| set.as_object().into_iter().flatten())
            .filter(|(name, _)| name.starts_with("Flow "))
            .map(|(_, record)| record)
            .collect()
    }

    fn sets(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.pdu
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(name, _)| name.starts_with("Set "))
    }
}
