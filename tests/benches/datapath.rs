//! `cargo xtask bench datapath`: nanoseconds per packet of flowmon's XDP program under
//! BPF_PROG_TEST_RUN, against an XDP program that only passes packets, and of its TC egress
//! program against a TC program that only lets packets go on, measured in one run.
//!
//! The kernel times `repeat` runs of the program on one frame and reports the mean, so the
//! figures leave out the syscall and measure the program alone. Every case is measured in
//! several rounds, interleaved with the others, and the table gives each one's median: a VM's
//! neighbours move single figures by 10-20 %, the median of interleaved rounds much less.

use std::net::Ipv4Addr;

use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions, Xdp};
use flowmon::datapath::Datapath;
use flowmon_tests::{
    frames::{ACK, Frame},
    kernel::{empty_programs, load_empty_program, pin_to_cpu, run_xdp},
};

const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 5;
const NEW_FLOWS: u32 = 50_000;

fn tcp_frame() -> Vec<u8> {
    // 64 bytes on the wire before the FCS: Ethernet, IPv4, TCP and 10 bytes of payload.
    Frame::tcp("10.0.0.2", 40000, "10.0.0.1", 80, ACK)
        .payload(10)
        .build()
}

/// Mean nanoseconds per run of `repeat` runs of the flowmon program on `frame`, the flow
/// created beforehand.
fn existing_flow_ns(datapath: &Datapath, frame: &[u8]) -> f64 {
    run_xdp(datapath, frame, None, 1);
    run_xdp(datapath, frame, None, REPEAT).duration.as_nanos() as f64
}

/// [`existing_flow_ns`] for the TC egress program.
fn existing_flow_tc_ns(datapath: &Datapath, frame: &[u8]) -> f64 {
    let tc = datapath.tc_program().unwrap();
    tc_ns(tc, frame, 1);
    tc_ns(tc, frame, REPEAT)
}

/// Mean nanoseconds per run of `repeat` runs of the TC program `program` on `frame`.
fn tc_ns(program: &SchedClassifier, frame: &[u8], repeat: u32) -> f64 {
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::new()
        })
        .expect("run a TC program");
    result.duration.as_nanos() as f64
}

fn baseline_ns(baseline: &Xdp, frame: &[u8]) -> f64 {
    let result = baseline
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: REPEAT,
            ..TestRunOptions::new()
        })
        .expect("run the baseline program");
    result.duration.as_nanos() as f64
}

/// Mean nanoseconds of a packet that creates its flow: one run each on `NEW_FLOWS` frames of
/// distinct flows (the per-run figure includes the kernel's timer reads, about the same for
/// the baseline measured the same way).
fn new_flow_ns(datapath: &Datapath, baseline: &Xdp) -> (f64, f64) {
    let (mut flowmon, mut empty) = (0u128, 0u128);
    for i in 0..NEW_FLOWS {
        let client = Ipv4Addr::from(0x0a80_0000 + i).to_string();
        let frame = Frame::tcp(&client, 40000, "10.0.0.1", 80, ACK)
            .payload(10)
            .build();
        flowmon += run_xdp(datapath, &frame, None, 1).duration.as_nanos();
        empty += baseline
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                ..TestRunOptions::new()
            })
            .unwrap()
            .duration
            .as_nanos();
    }
    (
        flowmon as f64 / NEW_FLOWS as f64,
        empty as f64 / NEW_FLOWS as f64,
    )
}

/// Mean nanoseconds per packet with two threads, on CPUs 0 and 1, hitting one flow at once
/// (one per direction, as a flow's two directions arriving on two RX queues would).
fn two_threads_ns(datapath: &Datapath) -> f64 {
    let forward = tcp_frame();
    let reverse = Frame::tcp("10.0.0.1", 80, "10.0.0.2", 40000, ACK)
        .payload(10)
        .build();
    run_xdp(datapath, &forward, None, 1);
    let start = std::sync::Barrier::new(2);
    let times: Vec<f64> = std::thread::scope(|scope| {
        let handles: Vec<_> = [(0, &forward), (1, &reverse)]
            .into_iter()
            .map(|(cpu, frame)| {
                let start = &start;
                scope.spawn(move || {
                    pin_to_cpu(cpu);
                    start.wait();
                    run_xdp(datapath, frame, None, REPEAT).duration.as_nanos() as f64
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    times.iter().sum::<f64>() / times.len() as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    pin_to_cpu(0);
    let datapath = Datapath::load(262_144, None).expect("load flowmon (run as root)");
    let object = load_empty_program();
    let (baseline, tc_baseline) = empty_programs(&object);

    let tcp = tcp_frame();
    let ipv6 = Frame::tcp("2001:db8::2", 40000, "2001:db8::1", 80, ACK)
        .payload(10)
        .build();
    let vlan = Frame::tcp("10.0.0.2", 40000, "10.0.0.1", 80, ACK)
        .vlan(42)
        .payload(10)
        .build();
    let mut rounds: [Vec<f64>; 8] = Default::default();
    for _ in 0..ROUNDS {
        let figures = [
            baseline_ns(baseline, &tcp),
            existing_flow_ns(&datapath, &tcp),
            existing_flow_ns(&datapath, &ipv6),
            existing_flow_ns(&datapath, &vlan),
            two_threads_ns(&datapath),
            tc_ns(tc_baseline, &tcp, REPEAT),
            existing_flow_tc_ns(&datapath, &tcp),
            existing_flow_tc_ns(&datapath, &ipv6),
        ];
        for (round, figure) in rounds.iter_mut().zip(figures) {
            round.push(figure);
        }
    }
    let [
        empty,
        existing,
        ipv6,
        vlan,
        shared,
        tc_empty,
        tc_existing,
        tc_ipv6,
    ] = rounds.map(median);
    let (new_flow, new_flow_empty) = new_flow_ns(&datapath, baseline);

    println!(
        "## datapath (BPF_PROG_TEST_RUN, ns per packet, median of {ROUNDS} interleaved rounds of {REPEAT} runs)\n"
    );
    println!("| case | flowmon ns | empty XDP ns | ratio | target |");
    println!("|---|---:|---:|---:|---|");
    let row = |case: &str, ns: f64, base: f64, target: &str| {
        println!(
            "| {case} | {ns:.1} | {base:.1} | {:.2}x | {target} |",
            ns / base
        );
    };
    row("existing IPv4 TCP flow", existing, empty, "<= 3x empty");
    row("existing IPv6 TCP flow", ipv6, empty, "");
    row("existing VLAN-tagged flow", vlan, empty, "");
    row(
        &format!("new flow (mean of {NEW_FLOWS}, one run each)"),
        new_flow,
        new_flow_empty,
        "< 700 ns",
    );
    println!(
        "| two threads on one flow (per thread) | {shared:.1} | {existing:.1} (one thread) | {:.2}x | <= 1.3x one thread |",
        shared / existing
    );
    println!("\nTC egress (against a TC program that only lets packets go on):\n");
    println!("| case | flowmon ns | empty TC ns | ratio |");
    println!("|---|---:|---:|---:|");
    for (case, ns) in [
        ("existing IPv4 TCP flow", tc_existing),
        ("existing IPv6 TCP flow", tc_ipv6),
    ] {
        println!(
            "| {case} | {ns:.1} | {tc_empty:.1} | {:.2}x |",
            ns / tc_empty
        );
    }
}
