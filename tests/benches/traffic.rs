//! `cargo xtask bench traffic`: real traffic over a veth pair, the same packets seen by flowmon
//! (its XDP or its TC ingress program in the kernel, the agent following the map) and by
//! softflowd (libpcap capture, flows kept in userspace), the flow exporter Debian ships. For each monitor: the CPU it adds per
//! packet to what the machine spends without it, and how many of the packets it counted.
//!
//! The client end sends 64-byte UDP frames in turn over 1,000 flows, then over 200,000 (as a
//! scan or a flood makes them), as fast as one thread can (a packet socket that bypasses the
//! qdisc, `sendmmsg` batches) to a server socket that never reads them (the kernel drops them
//! at its full buffer, whatever watches the link). The monitors watch the server end. CPU is the
//! whole machine's busy time (`/proc/stat`) over the same window for every monitor: the frames,
//! a flush of pings, until softflowd has caught up, then 1.5 s in which flowmon's agent polls.
//! So the kernel's share (XDP, packet capture) and the monitor's process are both in. Each
//! monitor is measured in several rounds interleaved with the others; the table gives each
//! one's median.
//!
//! An empty XDP program and an empty TC ingress program are measured too: on veth, the XDP hook
//! itself is dear (veth copies each socket-made packet into a page with XDP's headroom), where a
//! NIC driver runs XDP on its own receive buffer before any socket buffer exists; TC ingress runs
//! on the socket buffer the stack makes anyway, which is why `--ingress-hook auto` takes it on
//! veth. flowmon's own work is what it adds to its hook.

use std::{
    net::UdpSocket,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TcAttachType, XdpMode};
use flowmon_common::TC_BASELINE_PROGRAM;
use flowmon_tests::{
    agent::Agent,
    frames::{CLIENT_MAC, Frame, SERVER_MAC},
    kernel::{empty_program, load_empty_program, pin_to_cpu},
    netns::VethPair,
    process::{ChildGuard, TempDir},
};

const PACKETS: u64 = 2_000_000;
/// Flows the packets are spread over, in turn: a few long conversations, then many short ones
/// (as a scan or a flood makes).
const SCENARIOS: [u32; 2] = [1_000, 200_000];
/// Client ports per client address; flows beyond take the next address.
const PORTS_PER_ADDRESS: u32 = 1_000;
const FIRST_CLIENT_PORT: u16 = 20_000;
const SERVER_PORT: u16 = 9_000;
/// UDP payload that makes a 64-byte frame (Ethernet 14, IPv4 20, UDP 8).
const PAYLOAD_BYTES: usize = 22;
const ROUNDS: usize = 5;
/// The end of every measurement window: long enough for a poll of flowmon's agent.
const SETTLE: Duration = Duration::from_millis(1500);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Monitor {
    Nothing,
    EmptyXdp,
    EmptyTc,
    Flowmon,
    FlowmonTc,
    Softflowd,
}

impl Monitor {
    const ALL: [Monitor; 6] = [
        Monitor::Nothing,
        Monitor::EmptyXdp,
        Monitor::EmptyTc,
        Monitor::Flowmon,
        Monitor::FlowmonTc,
        Monitor::Softflowd,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Nothing => "nothing (baseline)",
            Self::EmptyXdp => "empty XDP program",
            Self::EmptyTc => "empty TC ingress program",
            Self::Flowmon => "flowmon (XDP + agent)",
            Self::FlowmonTc => "flowmon (TC ingress + agent)",
            Self::Softflowd => "softflowd (libpcap)",
        }
    }

    /// The empty program a flowmon hook is measured over.
    fn hook(self) -> Monitor {
        match self {
            Self::FlowmonTc => Self::EmptyTc,
            _ => Self::EmptyXdp,
        }
    }
}

/// What one round measured.
struct Round {
    cpu_seconds: f64,
    /// Of `cpu_seconds`, what the monitor's own process used (flowmon's agent, softflowd).
    process_seconds: f64,
    window_seconds: f64,
    /// Time the sender took.
    send_seconds: f64,
    /// Packets of the measured flows the monitor counted, if it counts.
    counted: Option<u64>,
    /// Packets the capture library reported dropped (softflowd only).
    dropped: Option<u64>,
}

/// Busy time of the whole machine so far, in seconds (user, nice, system, irq, softirq).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .expect("the cpu line")
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().expect("a number of ticks"))
        .collect();
    let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6];
    busy / clock_ticks_per_second()
}

/// The unit of the CPU times in `/proc`.
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// The frames of `flows` flows, one per flow: UDP from client ports (of addresses of the
/// client's subnet) to the server's socket, 64 bytes, with a valid IPv4 header checksum (the
/// UDP checksum is left out, as IPv4 allows) so that the server's stack takes them.
fn flow_frames(flows: u32) -> Vec<Vec<u8>> {
    // Client addresses from .2 up, short of the subnet's broadcast address.
    assert!(
        flows <= 253 * PORTS_PER_ADDRESS,
        "{flows} flows need more addresses"
    );
    (0..flows)
        .map(|i| {
            let client = format!("10.199.0.{}", 2 + i / PORTS_PER_ADDRESS);
            let port = FIRST_CLIENT_PORT + (i % PORTS_PER_ADDRESS) as u16;
            let mut frame = Frame::udp(&client, port, VethPair::SERVER_IP, SERVER_PORT)
                .payload(PAYLOAD_BYTES)
                .build();
            let header = &frame[14..34];
            let sum = header
                .chunks(2)
                .map(|word| u32::from(u16::from_be_bytes([word[0], word[1]])))
                .sum::<u32>();
            let folded = (sum & 0xffff) + (sum >> 16);
            let checksum = !(((folded & 0xffff) + (folded >> 16)) as u16);
            frame[24..26].copy_from_slice(&checksum.to_be_bytes());
            assert_eq!(frame.len(), 64);
            frame
        })
        .collect()
}

/// CPU time process `pid` has used so far, user and system, in seconds.
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read the stat");
    // After the command name (in parentheses, which may hold spaces): utime and stime are the
    // 12th and 13th fields.
    let fields: Vec<f64> = stat[stat.rfind(')').expect("a stat line") + 2..]
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().expect("a number of ticks"))
        .collect();
    (fields[0] + fields[1]) / clock_ticks_per_second()
}

/// Sends `PACKETS` frames round-robin over the flows from the client end, through a packet
/// socket that bypasses the qdisc, in batches of `sendmmsg`: the cheapest way to put packets
/// on the link from userspace, so that what the monitors add stands out.
fn send(pair: &VethPair, frames: &[Vec<u8>]) {
    pair.client.run(|| {
        pin_to_cpu(0);
        // SAFETY: plain socket calls on a socket this function owns, with structures it
        // initialises; every pointer handed to sendmmsg points into `frames`, `iovecs` or
        // `messages`, which outlive the call.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "packet socket");
            let name = std::ffi::CString::new(VethPair::CLIENT_IF).unwrap();
            let mut address: libc::sockaddr_ll = std::mem::zeroed();
            address.sll_family = libc::AF_PACKET as u16;
            address.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            let rc = libc::bind(
                fd,
                (&raw const address).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(rc, 0, "bind the packet socket");
            let on: libc::c_int = 1;
            let rc = libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            );
            assert_eq!(rc, 0, "bypass the qdisc");
            let mut iovecs: Vec<libc::iovec> = frames
                .iter()
                .map(|frame| libc::iovec {
                    iov_base: frame.as_ptr() as *mut libc::c_void,
                    iov_len: frame.len(),
                })
                .collect();
            let mut messages: Vec<libc::mmsghdr> = iovecs
                .iter_mut()
                .map(|iovec| {
                    let mut message: libc::mmsghdr = std::mem::zeroed();
                    message.msg_hdr.msg_iov = iovec;
                    message.msg_hdr.msg_iovlen = 1;
                    message
                })
                .collect();
            let mut sent = 0u64;
            while sent < PACKETS {
                let at = (sent % frames.len() as u64) as usize;
                let batch = (messages.len() - at).min((PACKETS - sent) as usize);
                let rc = libc::sendmmsg(fd, messages[at..].as_mut_ptr(), batch as u32, 0);
                if rc < 0 {
                    // The receiving end's queue is full: the frame was dropped before anything
                    // saw it. Let the receive side catch up and send it again.
                    let err = std::io::Error::last_os_error();
                    assert_eq!(err.raw_os_error(), Some(libc::ENOBUFS), "sendmmsg: {err}");
                    std::thread::yield_now();
                    continue;
                }
                sent += rc as u64;
            }
            libc::close(fd);
        }
    });
}

/// Runs one round: starts the monitor, sends, waits for the monitor to have counted, measures.
fn round(monitor: Monitor, frames: &[Vec<u8>]) -> Round {
    let pair = VethPair::new();
    // The addresses the frames carry.
    for (netns, iface, mac) in [
        (&pair.client, VethPair::CLIENT_IF, CLIENT_MAC),
        (&pair.server, VethPair::SERVER_IF, SERVER_MAC),
    ] {
        let mac = mac.map(|b| format!("{b:02x}")).join(":");
        netns.exec(&["ip", "link", "set", "dev", iface, "address", &mac]);
    }
    // The server's socket exists so that datagrams are dropped at its full buffer, not
    // answered with ICMP errors; it is never read.
    let _receiver = pair.server.run(|| {
        UdpSocket::bind((VethPair::SERVER_IP, SERVER_PORT)).expect("bind the server socket")
    });
    // One packet each way first, so that neighbour resolution is not measured.
    pair.client
        .exec(&["ping", "-c", "1", "-W", "2", VethPair::SERVER_IP]);
    match monitor {
        Monitor::Nothing => measure(&pair, frames, None, None),
        Monitor::EmptyXdp => {
            let _object = pair.server.run(attach_empty_xdp);
            measure(&pair, frames, None, None)
        }
        Monitor::EmptyTc => {
            let _object = pair.server.run(attach_empty_tc);
            measure(&pair, frames, None, None)
        }
        Monitor::Flowmon | Monitor::FlowmonTc => {
            let hook = if monitor == Monitor::Flowmon {
                "xdp"
            } else {
                "tc"
            };
            let mut agent = Agent::start(
                &pair.server,
                VethPair::SERVER_IF,
                &["--no-redis", "--ingress-hook", hook],
            );
            let mut measured = measure(&pair, frames, Some(agent.pid()), None);
            // Every flow gets its final record at SIGTERM.
            agent.stop();
            let counted = agent
                .records()
                .iter()
                .filter(|r| r["protocol"] == "udp" && r["server_port"] == SERVER_PORT)
                .map(|r| {
                    r["client_packets"].as_u64().unwrap() + r["server_packets"].as_u64().unwrap()
                })
                .sum();
            measured.counted = Some(counted);
            measured
        }
        Monitor::Softflowd => {
            let dir = TempDir::new("softflowd");
            let control = dir.path().join("softflowd.ctl");
            let softflowd = ChildGuard::spawn(
                "softflowd",
                pair.server
                    .command("softflowd")
                    // Room for as many flows as flowmon's default map.
                    .args(["-d", "-i", VethPair::SERVER_IF, "-m", "262144"])
                    // Records go to a port nobody listens on; the flows are read off its
                    // control socket instead.
                    .args(["-n", "127.0.0.1:2055"])
                    .arg("-c")
                    .arg(&control)
                    .arg("-p")
                    .arg(dir.path().join("softflowd.pid"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
            wait_for_control_socket(&control);
            measure(&pair, frames, Some(softflowd.pid()), Some(&control))
        }
    }
}

/// Sends and measures, over the same window for every monitor: the frames, a flush, then
/// until softflowd (its control socket given) has caught up, and a pause in which flowmon's
/// agent polls. `process` is the monitor's process, if it has one. What a monitor counted is
/// read after the window.
fn measure(
    pair: &VethPair,
    frames: &[Vec<u8>],
    process: Option<u32>,
    softflowd: Option<&Path>,
) -> Round {
    let process_cpu = || process.map_or(0.0, process_cpu_seconds);
    let (cpu, process_start, started) = (machine_busy_seconds(), process_cpu(), Instant::now());
    send(pair, frames);
    let send_seconds = started.elapsed().as_secs_f64();
    // libpcap hands packets over in blocks, and a block that is not full waits for more: a
    // few pings on another flow push the last one through.
    pair.client
        .exec(&["ping", "-f", "-c", "2000", "-q", VethPair::SERVER_IP]);
    if let Some(control) = softflowd {
        wait_until_caught_up(control);
    }
    std::thread::sleep(SETTLE);
    let cpu_seconds = machine_busy_seconds() - cpu;
    Round {
        cpu_seconds,
        process_seconds: process_cpu() - process_start,
        window_seconds: started.elapsed().as_secs_f64(),
        send_seconds,
        counted: softflowd.map(softflowd_count),
        dropped: softflowd.map(softflowd_dropped),
    }
}

fn attach_empty_xdp() -> aya::Ebpf {
    let mut object = load_empty_program();
    empty_program(&mut object)
        .attach(VethPair::SERVER_IF, XdpMode::Driver)
        .expect("attach the empty program");
    object
}

fn attach_empty_tc() -> aya::Ebpf {
    let mut object = load_empty_program();
    let program: &mut SchedClassifier = object
        .program_mut(TC_BASELINE_PROGRAM)
        .expect("the empty TC program")
        .try_into()
        .expect("a TC program");
    program
        .attach(VethPair::SERVER_IF, TcAttachType::Ingress)
        .expect("attach the empty TC program");
    object
}

fn softflowctl(control: &Path, command: &str) -> String {
    let output = Command::new("softflowctl")
        .arg("-c")
        .arg(control)
        .arg(command)
        .output()
        .expect("run softflowctl");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn wait_for_control_socket(control: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !softflowctl(control, "statistics").contains("Packets processed") {
        assert!(Instant::now() < deadline, "softflowd did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until softflowd's count of the packets it processed stops moving (its statistics,
/// cheap to ask for, unlike the flows).
fn wait_until_caught_up(control: &Path) {
    let processed = || {
        softflowctl(control, "statistics")
            .lines()
            .find_map(|line| line.strip_prefix("Packets processed: "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .expect("softflowd's count of packets processed")
    };
    let mut last = processed();
    let mut unchanged = 0;
    while unchanged < 3 {
        std::thread::sleep(Duration::from_millis(100));
        let now = processed();
        unchanged = if now == last { unchanged + 1 } else { 0 };
        last = now;
    }
}

/// Packets of the measured flows (both directions) in softflowd's flow table, from lines like
/// `ACTIVE seq:1 [10.199.0.1]:9000 <> [10.199.0.2]:20000 proto:17 octets>:.. packets>:N ...`.
fn softflowd_count(control: &Path) -> u64 {
    let server = format!("[{}]:{SERVER_PORT} ", VethPair::SERVER_IP);
    softflowctl(control, "dump-flows")
        .lines()
        .filter(|line| line.contains(&server) && line.contains("proto:17"))
        .flat_map(|line| line.split_whitespace())
        .filter_map(|field| {
            field
                .strip_prefix("packets>:")
                .or_else(|| field.strip_prefix("packets<:"))
        })
        .map(|n| n.parse::<u64>().expect("a packet count"))
        .sum()
}

/// What softflowd's statistics report as dropped by libpcap.
fn softflowd_dropped(control: &Path) -> u64 {
    softflowctl(control, "statistics")
        .lines()
        .find_map(|line| line.strip_prefix("Packets dropped by libpcap: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("softflowd's libpcap drop count")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    for flows in SCENARIOS {
        let frames = flow_frames(flows);
        let mut rounds: Vec<(Monitor, Round)> = Vec::new();
        for _ in 0..ROUNDS {
            for monitor in Monitor::ALL {
                rounds.push((monitor, round(monitor, &frames)));
            }
        }
        report(flows, &rounds);
    }
}

fn report(flows: u32, rounds: &[(Monitor, Round)]) {
    let of = |monitor: Monitor| rounds.iter().filter(move |(m, _)| *m == monitor);
    let median_of = |monitor, value: fn(&Round) -> f64| {
        median(of(monitor).map(|(_, round)| value(round)).collect())
    };
    fn per_packet(seconds: f64) -> f64 {
        seconds * 1e9 / PACKETS as f64
    }
    let machine = |monitor| median_of(monitor, |r| per_packet(r.cpu_seconds));
    let process = |monitor| median_of(monitor, |r| per_packet(r.process_seconds));
    let nothing = machine(Monitor::Nothing);
    let added = |monitor| machine(monitor) - nothing;
    // What the kernel spends on the monitor's behalf as packets pass.
    let path = |monitor| added(monitor) - process(monitor);
    let listed = |values: Vec<u64>| match values.is_empty() {
        true => "-".to_owned(),
        false => values
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    };

    println!(
        "## traffic ({PACKETS} UDP frames of 64 bytes over {flows} flows on a veth pair, medians of {ROUNDS} rounds)\n"
    );
    println!(
        "| monitor | machine CPU ns/packet | added to nothing | of which in the packet path | of which in its process | process, share of a core | sender Mpps | packets counted (of {PACKETS}) | libpcap drops |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|---|");
    for monitor in Monitor::ALL {
        let share = median_of(monitor, |r| r.process_seconds / r.window_seconds);
        let mpps = median_of(monitor, |r| PACKETS as f64 / r.send_seconds / 1e6);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} % | {mpps:.2} | {} | {} |",
            monitor.name(),
            machine(monitor),
            added(monitor),
            path(monitor),
            process(monitor),
            share * 100.0,
            listed(of(monitor).filter_map(|(_, r)| r.counted).collect()),
            listed(of(monitor).filter_map(|(_, r)| r.dropped).collect()),
        );
    }
    let softflowd = Monitor::Softflowd;
    for flowmon in [Monitor::Flowmon, Monitor::FlowmonTc] {
        let hook = flowmon.hook();
        let program = path(flowmon) - path(hook);
        println!(
            "{}: its program {program:.0} ns a packet over the {}; its agent {:.0} ns; all of \
             it, the hook included, {:.0} ns: {:.2} of softflowd's {:.0} ns.",
            flowmon.name(),
            hook.name(),
            process(flowmon),
            added(flowmon),
            added(flowmon) / added(softflowd),
            added(softflowd),
        );
    }
    println!("\nEvery round, machine CPU added to nothing, ns a packet:\n");
    println!("| monitor | rounds |");
    println!("|---|---|");
    let nothing_rounds: Vec<f64> = of(Monitor::Nothing)
        .map(|(_, r)| per_packet(r.cpu_seconds))
        .collect();
    for monitor in Monitor::ALL {
        let rounds: Vec<String> = of(monitor)
            .zip(&nothing_rounds)
            .map(|((_, r), nothing)| format!("{:.0}", per_packet(r.cpu_seconds) - nothing))
            .collect();
        println!("| {} | {} |", monitor.name(), rounds.join(", "));
    }
    println!();
}
