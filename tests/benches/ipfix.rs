//! `cargo xtask bench ipfix`: what IPFIX export costs. Records encoded and sent per second to a
//! collector on loopback, over UDP and TCP, with the CPU of encoding (on the caller's thread,
//! the flow monitor's) and of the exporter's thread; then the CPU IPFIX adds to a poll of the
//! flow monitor, at 100k and 1M live flows, every one of them due an interim record at once:
//! the encoding the poll's thread does (flowmon_ipfix_encode_seconds_total) and the exporter's
//! thread.
//!
//! CPU is counted per thread (the collector's own thread is left out). On loopback the sender
//! also pays for the kernel's delivery to the collector's socket, which a remote collector's
//! host would pay instead; so UDP export is measured to a collector on loopback and over a
//! "wire" too: a veth pair into a namespace that drops the datagrams on arrival, where the
//! sender pays its whole send path and nothing of a receiver's.

use std::{
    collections::HashMap,
    io::Read as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use flowmon_common::TcpState;

use flowmon::{
    flow::{
        monitor::{FlowMonitor, MonitorConfig},
        record::{CommunityId, FlowId, FlowRecord, MacAddr, Protocol, RecordType},
        tracker::Timeouts,
    },
    metrics::{CollectorMetrics, Metrics},
    sinks::{
        FlowSinks, SinksConfig,
        ipfix::{IpfixConfig, IpfixSink},
    },
};
use flowmon_tests::{
    cpu::{thread_cpu, threads_cpu, threads_system_cpu},
    kernel::{filled, touch},
    netns::VethPair,
    process::TempDir,
};

/// Records of the throughput runs: one burst, as a poll of a million flows makes.
const BURST: usize = 1_000_000;
const LIVE_FLOWS: [u32; 2] = [100_000, 1_000_000];
/// Polls measured per case; the table gives the median.
const POLLS: usize = 5;

/// The name of the sink's exporter threads.
const EXPORTER: &str = "ipfix-export";

/// An address on the wire's subnet that no host has: the far end drops what is sent to it.
const NOWHERE: &str = "10.199.0.9";

/// Where the sink exports to: a collector on loopback that reads and counts whatever comes, on
/// a thread of its own, or the wire.
struct Collector {
    url: String,
    /// Bytes read (none over the wire).
    bytes: Option<Arc<AtomicU64>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The wire's two hosts: the sink's socket is opened in the client's.
    wire: Option<VethPair>,
}

impl Collector {
    fn udp() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let size: libc::c_int = 256 << 20;
        // SAFETY: setsockopt reads an int from the pointer we pass, with its size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let url = format!("udp://{}", socket.local_addr().unwrap());
        Self::spawn(url, move |bytes, stop| {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        })
    }

    fn tcp() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("tcp://{}", listener.local_addr().unwrap());
        Self::spawn(url, move |bytes, stop| {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut buf = vec![0u8; 1 << 20];
            while !stop.load(Ordering::Relaxed) {
                match stream.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
            }
        })
    }

    /// A collector elsewhere, in effect: the datagrams leave through a veth pair into the
    /// server's namespace, which drops each on arrival (addressed to no host there and not
    /// forwarded: the first route lookup drops it, without an ICMP error), as a wire takes them
    /// off the host. Nothing reads them.
    fn wire() -> Self {
        let hosts = VethPair::new();
        let link = hosts
            .server
            .exec(&["ip", "-br", "link", "show", VethPair::SERVER_IF]);
        let link = String::from_utf8(link.stdout).unwrap();
        let mac = link.split_whitespace().nth(2).expect("the server's MAC");
        hosts.client.exec(&[
            "ip",
            "neigh",
            "replace",
            NOWHERE,
            "lladdr",
            mac,
            "dev",
            VethPair::CLIENT_IF,
            "nud",
            "permanent",
        ]);
        Self {
            url: format!("udp://{NOWHERE}:4739"),
            bytes: None,
            stop: Arc::new(AtomicBool::new(true)),
            thread: None,
            wire: Some(hosts),
        }
    }

    fn spawn(
        url: String,
        serve: impl FnOnce(Arc<AtomicU64>, Arc<AtomicBool>) + Send + 'static,
    ) -> Self {
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (bytes, stop) = (bytes.clone(), stop.clone());
            move || serve(bytes, stop)
        });
        Self {
            url,
            bytes: Some(bytes),
            stop,
            thread: Some(thread),
            wire: None,
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `count` records of distinct flows, one in ten IPv6, as a poll makes them.
fn records(count: usize) -> Vec<FlowRecord> {
    let (sensor_id, iface): (Arc<str>, Arc<str>) = ("bench-sensor".into(), "eth0".into());
    let community_id: CommunityId = "1:LQU9qZlK+B5F3KDmev6m5PMibrg=".parse().unwrap();
    (0..count)
        .map(|i| {
            let n = i as u64;
            let (client_ip, server_ip): (IpAddr, IpAddr) = if i % 10 == 9 {
                (
                    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16).into(),
                    "2001:db8:ffff::1".parse().unwrap(),
                )
            } else {
                (
                    Ipv4Addr::from(0x0a00_0000 + i as u32).into(),
                    "192.0.2.1".parse().unwrap(),
                )
            };
            let flow_id: FlowId = format!("{:08x}-0000-4000-8000-{:012x}", i, n * 7919)
                .parse()
                .unwrap();
            FlowRecord {
                record_id: format!("{flow_id}:1"),
                flow_id,
                sequence: 1,
                sensor_id: sensor_id.clone(),
                iface: iface.clone(),
                record_type: RecordType::Interim,
                end_reason: None,
                time: 1_700_000_100.0,
                protocol: Protocol::TCP,
                community_id: community_id.clone(),
                client_ip,
                client_port: 1024 + (i % 60000) as u16,
                server_ip,
                server_port: 443,
                vlan: 0,
                icmp_id: None,
                client_packets: n % 1000 + 1,
                client_bytes: (n % 1000 + 1) * 700,
                server_packets: n % 900,
                server_bytes: (n % 900) * 1200,
                client_packets_delta: n % 100,
                client_bytes_delta: (n % 100) * 700,
                server_packets_delta: n % 90,
                server_bytes_delta: (n % 90) * 1200,
                client_tcp_flags: 0x1b,
                server_tcp_flags: 0x12,
                tcp_state: TcpState::Established,
                client_ttl: 64,
                server_ttl: 57,
                client_mac: MacAddr([2, 0, 0, 0, 0, 0x0a]),
                server_mac: MacAddr([2, 0, 0, 0, 0, 1]),
                first_seen: 1_700_000_000.004 + (n % 1000) as f64 * 0.004,
                last_seen: 1_700_000_099.996,
            }
        })
        .collect()
}

fn sink(collector: &Collector, metrics: &Metrics) -> (IpfixSink, CollectorMetrics) {
    let config = IpfixConfig::new(vec![collector.url.parse().unwrap()], "bench-sensor".into());
    let interfaces = HashMap::from([("eth0".to_owned(), 2)]);
    let start = || IpfixSink::start(&config, interfaces, &metrics.ipfix).unwrap();
    let sink = match &collector.wire {
        Some(hosts) => hosts.client.run(start),
        None => start(),
    };
    (sink, metrics.ipfix.collector(&collector.url))
}

fn wait_until_sent(series: &CollectorMetrics, records: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while series.records_sent.get() + series.records_dropped.get() < records {
        assert!(Instant::now() < deadline, "records not sent in time");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(series.records_dropped.get(), 0, "no record dropped");
}

/// Two bursts of `BURST` records through one sink to `collector`: the first one writes into
/// fresh memory, the next into the buffers the first one left.
fn throughput(transport: &str, collector: &Collector) {
    let metrics = Metrics::new();
    let (mut sink, series) = sink(collector, &metrics);
    for (burst_name, round) in [("first", 1), ("next", 2)] {
        let burst = records(BURST);
        let (encoder, exporter) = (thread_cpu(), threads_cpu(EXPORTER));
        let system = threads_system_cpu(EXPORTER);
        let started = Instant::now();
        sink.write(&burst);
        let encoder = thread_cpu() - encoder;
        wait_until_sent(&series, round * BURST as u64);
        let wall = started.elapsed().as_secs_f64();
        let exporter = threads_cpu(EXPORTER) - exporter;
        let system = threads_system_cpu(EXPORTER) - system;
        println!(
            "| {transport}, {burst_name} burst | {:.2} | {encoder:.3} | {:.2} | {exporter:.3} | {system:.2} | {:.0} |",
            BURST as f64 / wall / 1e6,
            BURST as f64 / encoder / 1e6,
            exporter * 1e9 / BURST as f64,
        );
    }
    let sent = series.bytes_sent.get();
    drop(sink);
    let Some(bytes) = &collector.bytes else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while bytes.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        bytes.load(Ordering::Relaxed),
        sent,
        "the collector read every byte sent"
    );
}

/// One poll's CPU, in seconds: the whole poll on its thread, the part of it spent encoding
/// for IPFIX, and the exporter's thread until every record is sent, and the part of that in
/// the kernel.
struct PollCpu {
    poll: f64,
    encoding: f64,
    exporter: f64,
    exporter_system: f64,
}

/// Polls that make an interim record of each of `flows` live flows, with IPFIX on, exporting
/// to `collector`: the median by what IPFIX added.
fn poll_cpu(flows: u32, collector: &Collector) -> PollCpu {
    let datapath = filled(flows);
    let state = TempDir::new("ipfix-bench");
    let metrics = Metrics::new();
    let hour = Duration::from_secs(3600);
    let config = MonitorConfig {
        timeouts: Timeouts {
            tcp: hour,
            tcp_close: hour,
            udp: hour,
            icmp: hour,
            other: hour,
            // Every poll is a new interval for every flow.
            interim: Duration::from_millis(1),
        },
        sensor_id: "bench-sensor".into(),
        state_dir: state.path().to_owned(),
        poll_interval: Duration::from_secs(1),
        keep_attached: true,
        sinks: SinksConfig::default(),
    };
    let (sink, series) = sink(collector, &metrics);
    let sinks = FlowSinks::new(None, None, None, Arc::clone(&metrics)).with_ipfix(sink);
    let mut monitor = FlowMonitor::new(
        datapath,
        HashMap::new(),
        config,
        sinks,
        Arc::clone(&metrics),
    )
    .unwrap();
    let mut exported = 0;
    let mut poll = || {
        // Activity in the interval: the monitor makes interim records of active flows only.
        touch(monitor.datapath(), flows);
        let (poll, exporter) = (thread_cpu(), threads_cpu(EXPORTER));
        let system = threads_system_cpu(EXPORTER);
        let encoding = metrics.ipfix.encode_seconds.get();
        let stats = monitor.poll().unwrap();
        let poll = thread_cpu() - poll;
        let encoding = metrics.ipfix.encode_seconds.get() - encoding;
        assert_eq!(
            stats.records, flows as usize,
            "an interim record of every flow"
        );
        exported += flows as u64;
        wait_until_sent(&series, exported);
        PollCpu {
            poll,
            encoding,
            exporter: threads_cpu(EXPORTER) - exporter,
            exporter_system: threads_system_cpu(EXPORTER) - system,
        }
    };
    // The first poll meets every flow.
    poll();
    let mut polls: Vec<PollCpu> = (0..POLLS).map(|_| poll()).collect();
    polls.sort_by(|a, b| (a.encoding + a.exporter).total_cmp(&(b.encoding + b.exporter)));
    polls.swap_remove(POLLS / 2)
}

fn main() {
    println!("## ipfix: a burst of {BURST} records to a collector on loopback, or over the wire\n");
    println!(
        "| transport | M records/s (wall) | encoding CPU s | M records encoded/s a core | exporter CPU s | of which system s | exporter ns/record |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    throughput("UDP, loopback", &Collector::udp());
    throughput("UDP, wire", &Collector::wire());
    throughput("TCP, loopback", &Collector::tcp());

    println!("\n## ipfix: a poll with an interim record of every live flow\n");
    println!(
        "| live flows | collector | poll CPU s | of which encoding s | exporter CPU s | of which system s | IPFIX added CPU s | added / poll |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for flows in LIVE_FLOWS {
        for (collector, make) in [
            ("UDP, loopback", Collector::udp as fn() -> Collector),
            ("UDP, wire", Collector::wire),
        ] {
            let cpu = poll_cpu(flows, &make());
            let added = cpu.encoding + cpu.exporter;
            println!(
                "| {flows} | {collector} | {:.3} | {:.3} | {:.3} | {:.2} | {added:.3} | {:.1} % |",
                cpu.poll,
                cpu.encoding,
                cpu.exporter,
                cpu.exporter_system,
                added / cpu.poll * 100.0
            );
        }
    }
    println!(
        "\nTargets: at least 1 M records encoded a second on one core; the 1M-flow interim burst adds under 0.2 s of CPU."
    );
}
