//! `cargo xtask bench datapath`: nanoseconds per packet of flowmon's XDP program under
//! BPF_PROG_TEST_RUN, against an XDP program that only passes packets, and of its TC egress
//! program against a TC program that only lets packets go on, measured in one run.
//!
//! The kernel times `repeat` runs of the program on one frame and reports the mean, so the
//! figures leave out the syscall and measure the program alone. With `DATAPATH_BASELINE_OBJECT`
//! naming another build's object file (`target/release/build/flowmon-*/out/flowmon`), its XDP
//! program is measured in the same rounds too, for a before-and-after in one run. Every case is measured in
//! several rounds, interleaved with the others, and the table gives each one's median: a VM's
//! neighbours move single figures by 10-20 %, the median of interleaved rounds much less.

use std::net::Ipv4Addr;

use aya::programs::{TestRun, TestRunOptions, TestRunResult, Xdp};
use flowmon::datapath::Datapath;
use flowmon_common::XDP_PROGRAM;
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

/// Mean nanoseconds per run of `repeat` runs of `program` (XDP or TC) on `frame`.
fn program_ns<P>(program: &P, frame: &[u8], repeat: u32) -> f64
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::new()
        })
        .expect("run a program");
    result.duration.as_nanos() as f64
}

/// Mean nanoseconds per run of `repeat` runs of the flowmon program `program` on `frame`, the
/// flow created beforehand.
fn existing_flow_ns<P>(program: &P, frame: &[u8]) -> f64
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    program_ns(program, frame, 1);
    program_ns(program, frame, REPEAT)
}

/// Mean nanoseconds of a packet that creates its flow: one run each on `NEW_FLOWS` frames of
/// distinct flows (the per-run figure includes the kernel's timer reads, about the same for
/// the baseline measured the same way), for flowmon's program and each of `others`. The ring
/// of events is drained every thousand flows, as the agent drains it.
fn new_flow_ns(datapath: &mut Datapath, others: &[&Xdp]) -> Vec<f64> {
    let mut totals = vec![0.0; others.len() + 1];
    for i in 0..NEW_FLOWS {
        let client = Ipv4Addr::from(0x0a80_0000 + i).to_string();
        let frame = Frame::tcp(&client, 40000, "10.0.0.1", 80, ACK)
            .payload(10)
            .build();
        totals[0] += program_ns(datapath.xdp_program().unwrap(), &frame, 1);
        for (total, program) in totals[1..].iter_mut().zip(others) {
            *total += program_ns(*program, &frame, 1);
        }
        if i % 1000 == 999 {
            let events = datapath.events();
            while events.next().is_some() {}
        }
    }
    totals.iter().map(|t| t / NEW_FLOWS as f64).collect()
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

/// The XDP program of another build's object, if `DATAPATH_BASELINE_OBJECT` names one.
fn other_build() -> Option<aya::Ebpf> {
    let path = std::env::var_os("DATAPATH_BASELINE_OBJECT")?;
    let mut object = aya::EbpfLoader::new()
        .load_file(&path)
        .expect("load the other build's object");
    let program: &mut Xdp = object
        .program_mut(XDP_PROGRAM)
        .expect("its XDP program")
        .try_into()
        .expect("an XDP program");
    program.load().expect("load its XDP program");
    Some(object)
}

fn main() {
    pin_to_cpu(0);
    let mut datapath = Datapath::load(262_144, None).expect("load flowmon (run as root)");
    let object = load_empty_program();
    let (baseline, tc_baseline) = empty_programs(&object);
    let other = other_build();
    let other_xdp: Option<&Xdp> = other
        .as_ref()
        .map(|o| o.program(XDP_PROGRAM).unwrap().try_into().unwrap());

    let tcp = tcp_frame();
    let ipv6 = Frame::tcp("2001:db8::2", 40000, "2001:db8::1", 80, ACK)
        .payload(10)
        .build();
    let vlan = Frame::tcp("10.0.0.2", 40000, "10.0.0.1", 80, ACK)
        .vlan(42)
        .payload(10)
        .build();
    let mut rounds: [Vec<f64>; 9] = Default::default();
    for _ in 0..ROUNDS {
        let figures = [
            program_ns(baseline, &tcp, REPEAT),
            existing_flow_ns(datapath.xdp_program().unwrap(), &tcp),
            existing_flow_ns(datapath.xdp_program().unwrap(), &ipv6),
            existing_flow_ns(datapath.xdp_program().unwrap(), &vlan),
            two_threads_ns(&datapath),
            program_ns(tc_baseline, &tcp, REPEAT),
            existing_flow_ns(datapath.tc_program().unwrap(), &tcp),
            existing_flow_ns(datapath.tc_program().unwrap(), &ipv6),
            other_xdp.map_or(0.0, |other| existing_flow_ns(other, &tcp)),
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
        other_existing,
    ] = rounds.map(median);
    let mut others = vec![baseline];
    others.extend(other_xdp);
    let new_flows = new_flow_ns(&mut datapath, &others);
    let (new_flow, new_flow_empty) = (new_flows[0], new_flows[1]);

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
    if let Some(&other_new_flow) = new_flows.get(2) {
        println!(
            "\nThe other build's XDP program (`DATAPATH_BASELINE_OBJECT`), in the same rounds: \
             existing IPv4 TCP flow {other_existing:.1} ns (this build {:.2}x of it), new flow \
             {other_new_flow:.1} ns (this build {:.2}x of it).",
            existing / other_existing,
            new_flow / other_new_flow
        );
    }
    println!(
        "\nTC, at ingress and at egress (one program), against a TC program that only lets \
         packets go on:\n"
    );
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
