//! `cargo xtask bench drain`: the cost of reading the whole flow map, batch syscalls against
//! aya's get_next_key iterator, and the CPU time of one full poll cycle of the flow monitor
//! (read, decide every flow's fate from its block, find the flows the kernel evicted), at 10k,
//! 100k and 1M live flows.

use std::{collections::HashMap, net::Ipv4Addr, sync::Arc, time::Instant};

use flowmon::{
    datapath::Datapath,
    flow::monitor::{FlowMonitor, MonitorConfig},
    flow::tracker::Timeouts,
    metrics::Metrics,
    sinks::{FlowSinks, SinksConfig},
};
use flowmon_tests::{
    frames::{ACK, Frame},
    kernel::run_xdp,
    process::TempDir,
};

const SIZES: [u32; 3] = [10_000, 100_000, 1_000_000];
/// Steady-state polls measured per size, and batch reads; the table gives the medians. The
/// iterator, at 3 us a flow, reads once.
const POLLS: usize = 5;
const READS: usize = 5;

/// CPU time this thread has used.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Microseconds per flow of `read`, which reads the whole map of `flows` flows: the median of
/// `times` reads.
fn per_entry_us(flows: u32, times: usize, mut read: impl FnMut() -> usize) -> f64 {
    let mut us: Vec<f64> = (0..times)
        .map(|_| {
            let started = Instant::now();
            assert_eq!(read(), flows as usize, "every flow read");
            started.elapsed().as_secs_f64() * 1e6 / flows as f64
        })
        .collect();
    us.sort_by(f64::total_cmp);
    us[times / 2]
}

/// A datapath holding `flows` live TCP flows, each made by the XDP program from a packet.
fn filled(flows: u32) -> Datapath {
    let datapath = Datapath::load(flows * 2, None).expect("load flowmon (run as root)");
    for i in 0..flows {
        let client = Ipv4Addr::from(0x0a00_0000 + i).to_string();
        let frame = Frame::tcp(&client, 40000, "192.0.2.1", 80, ACK).build();
        run_xdp(&datapath, &frame, None, 1);
    }
    let live = datapath.flow_map().unwrap().read_all().unwrap().len();
    assert_eq!(live, flows as usize, "every flow in the map");
    datapath
}

fn main() {
    println!("## drain (per entry of a full read of the flow map)\n");
    println!(
        "| live flows | batch us/entry | iterator us/entry | iterator / batch | poll cycle CPU s | poll cycle wall s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for flows in SIZES {
        let datapath = filled(flows);
        let map = datapath.flow_map().unwrap();
        // As a poll reads: into the buffers of an earlier read.
        let mut table = map.read_all().unwrap();
        let batch_us = per_entry_us(flows, READS, || {
            map.read_into(&mut table).unwrap();
            table.len()
        });
        drop(table);
        let iterator_us = per_entry_us(flows, 1, || map.read_by_iteration().unwrap().len());

        // One poll of the monitor itself: long timeouts, so every flow is kept.
        let state = TempDir::new("drain");
        let metrics = Metrics::new();
        let minute = std::time::Duration::from_secs(60);
        let config = MonitorConfig {
            timeouts: Timeouts {
                tcp: minute,
                tcp_close: minute,
                udp: minute,
                icmp: minute,
                other: minute,
                interim: minute,
            },
            sensor_id: "bench".into(),
            state_dir: state.path().to_owned(),
            poll_interval: std::time::Duration::from_secs(1),
            keep_attached: true,
            sinks: SinksConfig::default(),
        };
        let sinks = FlowSinks::new(None, None, None, Arc::clone(&metrics));
        let mut monitor =
            FlowMonitor::new(datapath, HashMap::new(), config, sinks, metrics).unwrap();
        // The first poll meets every flow and the second fills the second table buffer; the
        // ones after are the steady state: the median of five.
        monitor.poll().unwrap();
        monitor.poll().unwrap();
        let mut polls: Vec<(f64, f64)> = (0..POLLS)
            .map(|_| {
                let (cpu, wall) = (thread_cpu(), Instant::now());
                monitor.poll().unwrap();
                (thread_cpu() - cpu, wall.elapsed().as_secs_f64())
            })
            .collect();
        polls.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (poll_cpu, poll_wall) = polls[POLLS / 2];
        println!(
            "| {flows} | {batch_us:.2} | {iterator_us:.2} | {:.1}x | {poll_cpu:.3} | {poll_wall:.3} |",
            iterator_us / batch_us
        );
    }
    println!("\nTargets: batch <= 0.6 us/entry; a 1M-flow map polled every second < 0.5 core.");
}
