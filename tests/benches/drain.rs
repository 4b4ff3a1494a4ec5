//! `cargo xtask bench drain`: what keeping live flows costs at default settings, at 10k, 100k,
//! 1M and 4M live flows, each flow made by a packet through the XDP program.
//!
//! The flows are created over one interim interval (60 s), so that their deadlines spread as in
//! a steady state; then, each second, 1 % of them change, by real packets through the program
//! (BPF_PROG_TEST_RUN), in three equal parts: new flows, RSTs that end live flows (final records
//! after the 5 s close timeout), and data on live flows (interim records at the end of their
//! interval). The flow monitor polls at the start of every second as it does in the agent. For
//! each size: the CPU time of its polls per second (its thread's, so the kernel's work in its
//! syscalls included, the packets' own cost not), the latest a record came after it was due, the
//! kernel's memory per flow (the maps' `memlock`) and the agent's resident memory per live flow.
//! Then what the previous design cost on the same map: a full read of the map, which it did at
//! every poll, and a single lookup, which this one does per flow due.

use std::{collections::HashMap, sync::Arc, time::Duration};

use aya::programs::{TestRun as _, TestRunOptions};
use flowmon::{
    datapath::Datapath,
    flow::{
        monitor::{DEFAULT_POLL_INTERVAL, FlowMonitor, MonitorConfig, PollStats},
        tracker::DEFAULT_TIMEOUTS,
        wall_clock::monotonic_ns,
    },
    metrics::Metrics,
    sinks::{FlowSinks, SinksConfig},
};
use flowmon_common::FlowKey;
use flowmon_tests::{
    cpu::thread_cpu,
    frames::{ACK, Frame, PSH, RST},
    process::TempDir,
};

const SIZES: [u32; 4] = [10_000, 100_000, 1_000_000, 4_000_000];
const SECOND: u64 = 1_000_000_000;
/// Slices of a second over which a second's packets are spread.
const SLICES: u64 = 10;

/// The defaults of `flowmon --help`.
fn default_config(state_dir: &std::path::Path) -> MonitorConfig {
    MonitorConfig {
        timeouts: DEFAULT_TIMEOUTS,
        sensor_id: "bench".into(),
        state_dir: state_dir.to_owned(),
        poll_interval: DEFAULT_POLL_INTERVAL,
        keep_attached: true,
        sinks: SinksConfig::default(),
    }
}

/// Seconds of a phase, from the environment (to shorten a trial run) or the default.
fn seconds(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of this process, bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// Kernel memory of every BPF map this process holds (`memlock` in their fdinfo), bytes.
fn maps_memlock() -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/fdinfo").expect("fdinfo") {
        let Ok(info) = std::fs::read_to_string(entry.expect("an fd").path()) else {
            continue;
        };
        if !info.contains("map_type:") {
            continue;
        }
        total += info
            .lines()
            .find_map(|line| line.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

/// Packets of flows numbered from 0: TCP from 10.0.0.0 + number to 192.0.2.1:80, made by
/// patching one frame.
struct Packets {
    template: Vec<u8>,
}

impl Packets {
    fn new() -> Self {
        Self {
            template: Frame::tcp("10.0.0.0", 40000, "192.0.2.1", 80, ACK)
                .payload(10)
                .build(),
        }
    }

    /// A packet of flow `flow` from its client with `flags`.
    fn of(&mut self, flow: u32, flags: u8) -> &[u8] {
        let client = 0x0a00_0000u32 + flow;
        self.template[26..30].copy_from_slice(&client.to_be_bytes());
        self.template[14 + 20 + 13] = flags;
        &self.template
    }
}

/// xorshift64: which live flows the churn touches.
struct Random(u64);

impl Random {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// The monitor and the traffic through its programs.
struct Bench {
    monitor: FlowMonitor,
    packets: Packets,
    live: Vec<u32>,
    next_flow: u32,
    random: Random,
    /// What the polls measured so far.
    polls: Vec<(PollStats, f64)>,
}

impl Bench {
    fn send(&mut self, flow: u32, flags: u8) {
        let frame = self.packets.of(flow, flags);
        self.monitor
            .datapath()
            .xdp_program()
            .unwrap()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::new()
            })
            .expect("run the XDP program");
    }

    fn new_flow(&mut self) {
        let flow = self.next_flow;
        self.next_flow += 1;
        self.send(flow, ACK);
        self.live.push(flow);
    }

    /// One change: a new flow, an RST that ends a live flow, or data on a live flow.
    fn change(&mut self, kind: u64) {
        match kind % 3 {
            0 => self.new_flow(),
            1 => {
                let flow = self.live.swap_remove(self.random.below(self.live.len()));
                self.send(flow, RST | ACK);
            }
            _ => {
                let flow = self.live[self.random.below(self.live.len())];
                self.send(flow, ACK | PSH);
            }
        }
    }

    /// Runs for `secs` seconds: `per_second` calls of `each` spread over every second, a poll
    /// at the start of every second, as the agent polls.
    fn run(&mut self, secs: u64, per_second: u64, mut each: impl FnMut(&mut Self, u64)) {
        let mut done = 0;
        let start = (monotonic_ns() / SECOND + 1) * SECOND;
        while monotonic_ns() < start {
            std::thread::sleep(Duration::from_millis(1));
        }
        for second in 0..secs {
            let cpu = thread_cpu();
            let stats = self.monitor.poll().expect("poll");
            self.polls.push((stats, thread_cpu() - cpu));
            for slice in 0..SLICES {
                let until = per_second * (second * SLICES + slice + 1) / SLICES;
                while done < until {
                    each(self, done);
                    done += 1;
                }
                let slice_end = start + second * SECOND + (slice + 1) * SECOND / SLICES;
                let now = monotonic_ns();
                if now < slice_end {
                    std::thread::sleep(Duration::from_nanos(slice_end - now));
                }
            }
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let (fill_secs, window_secs) = (seconds("DRAIN_FILL_SECS", 60), seconds("DRAIN_SECS", 60));
    let sizes: Vec<u32> = std::env::var("DRAIN_SIZES")
        .map(|v| v.split(',').map(|n| n.parse().expect("a size")).collect())
        .unwrap_or(SIZES.to_vec());
    println!(
        "## drain (default settings; {fill_secs} s to create the flows, then {window_secs} s of 1 % change a second)\n"
    );
    println!(
        "| live flows | CPU per second | records/s | lookups/s | full reads | worst lateness s | kernel bytes/flow | agent bytes/live flow | full read s (previous design, every poll) | lookup us |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for flows in sizes {
        let datapath = Datapath::load(flows * 2, None).expect("load flowmon (run as root)");
        let resident_before = resident_bytes();
        let state = TempDir::new("drain");
        let metrics = Metrics::new();
        let sinks = FlowSinks::new(None, None, None, Arc::clone(&metrics));
        let monitor = FlowMonitor::new(
            datapath,
            HashMap::new(),
            default_config(state.path()),
            sinks,
            metrics,
        )
        .unwrap();
        let mut bench = Bench {
            monitor,
            packets: Packets::new(),
            live: Vec::with_capacity(flows as usize * 2),
            next_flow: 0,
            random: Random(0x9e37_79b9_7f4a_7c15),
            polls: Vec::new(),
        };
        bench.run(fill_secs, u64::from(flows).div_ceil(fill_secs), |b, _| {
            if b.live.len() < flows as usize {
                b.new_flow();
            }
        });
        bench.polls.clear();
        let churn = (u64::from(flows) / 100).max(3);
        bench.run(window_secs, churn, Bench::change);
        let resident = resident_bytes().saturating_sub(resident_before);
        let kernel = maps_memlock();
        let polls = &bench.polls;
        let cpu: f64 = polls.iter().map(|(_, cpu)| cpu).sum::<f64>() / window_secs as f64;
        let per_second = |f: fn(&PollStats) -> usize| {
            polls.iter().map(|(s, _)| f(s)).sum::<usize>() as f64 / window_secs as f64
        };
        let worst = polls
            .iter()
            .map(|(s, _)| s.worst_lateness)
            .max()
            .unwrap_or_default();
        let full_reads = polls.iter().filter(|(s, _)| s.full_read).count();
        let live = bench.live.len();
        let last = &polls.last().expect("polls").0;
        // The monitor knows every flow the map holds but those created within a sweep of the
        // map (28 s at defaults) that said nothing since, and none that the map lacks (nothing
        // is evicted here).
        let in_map = bench
            .monitor
            .datapath()
            .flow_map()
            .unwrap()
            .read_all()
            .unwrap()
            .len();
        let sweep_secs = 28;
        assert!(
            last.live <= in_map && in_map - last.live <= (churn * sweep_secs) as usize,
            "the monitor knows {} flows, the map holds {in_map}, {live} not ended",
            last.live
        );
        // The previous design, on the same map: a full read at every poll.
        let map = bench.monitor.datapath().flow_map().unwrap();
        let mut table = map.read_all().unwrap();
        let full_read = median(
            (0..3)
                .map(|_| {
                    let cpu = thread_cpu();
                    map.read_into(&mut table).unwrap();
                    thread_cpu() - cpu
                })
                .collect(),
        );
        let keys: Vec<FlowKey> = table.iter().map(|(key, _)| key).take(10_000).collect();
        drop(table);
        let cpu_before = thread_cpu();
        for key in &keys {
            assert!(map.lookup(key).unwrap().is_some());
        }
        let lookup_us = (thread_cpu() - cpu_before) * 1e6 / keys.len() as f64;
        println!(
            "| {flows} | {:.2} % | {:.0} | {:.0} | {full_reads} | {:.2} | {:.0} | {:.0} | {full_read:.3} | {lookup_us:.2} |",
            cpu * 100.0,
            per_second(|s| s.records),
            per_second(|s| s.looked_up),
            worst.as_secs_f64(),
            kernel as f64 / live as f64,
            resident as f64 / live as f64,
        );
    }
    println!(
        "\nTarget: 1,000,000 live flows at most 10 % of a core, every record within --poll-interval + 1 s (2 s) of its due time."
    );
}
