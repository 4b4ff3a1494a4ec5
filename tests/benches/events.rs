//! `cargo xtask bench events`: SNARE events per second and answer latency of the release agent
//! (no --iface, no Redis) under load from keep-alive clients on loopback: benign pages and
//! every kind of attack from many peers, sessions expiring all along (2 s session timeout).
//! The same load twice in one run: with emulation off (`--emulate none`, every answer type 1)
//! and on (the default: every attack answered by its emulator); then, in process, the time each
//! attack of the load takes its emulator alone.

use std::{
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use flowmon::{
    emulation::{Attack, Emulation, EmulationConfig, SessionState},
    snare::{detection::Detector, event::Event},
};
use flowmon_tests::{
    process::{ChildGuard, TempDir, flowmon_binary, free_port, wait_for_port},
    snare_load::{ATTACKS, LoadReport, run_event_load},
};

/// Emulations of each attack timed in process.
const RUNS: usize = 2000;
/// Requests of one session before the next starts afresh, as in the load.
const SESSION_REQUESTS: usize = 8;

const SECONDS: u64 = 10;
const CLIENTS: usize = 16;

/// The load against a fresh agent started with `--emulate emulate`.
fn measure(emulate: &str) -> LoadReport {
    let state = TempDir::new("bench-events");
    let snare = free_port();
    let _agent = ChildGuard::spawn(
        "flowmon",
        Command::new(flowmon_binary())
            .args(["--no-redis", "--session-timeout", "2", "--emulate", emulate])
            .args(["--snare-listen", &format!("127.0.0.1:{snare}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--api-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--web-listen", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(state.path())
            .env("RUST_LOG", "warn"),
    );
    let addr = ([127, 0, 0, 1], snare).into();
    wait_for_port(addr, Duration::from_secs(20));
    // A short warm-up, then the measured run.
    run_event_load(addr, Duration::from_secs(1), CLIENTS).expect("warm-up load");
    run_event_load(addr, Duration::from_secs(SECONDS), CLIENTS).expect("measured load")
}

fn main() {
    let off = measure("none");
    let on = measure("all");
    println!("## events ({CLIENTS} keep-alive clients on loopback, {SECONDS} s each)\n");
    println!(
        "| emulation | events | emulated | errors | events/s | p50 ms | p99 ms | max ms | sessions | target |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (label, report) in [("off (`--emulate none`)", &off), ("on (all ten)", &on)] {
        println!(
            "| {label} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {} | >= 20000 events/s, p99 < 5 ms |",
            report.events,
            report.emulated,
            report.errors,
            report.events_per_sec,
            ms(report.p50),
            ms(report.p99),
            ms(report.max),
            report.sessions
        );
    }
    println!(
        "\nemulation on / off: {:.2}x the events per second, {:.2}x the p99",
        on.events_per_sec / off.events_per_sec,
        on.p99.as_secs_f64() / off.p99.as_secs_f64()
    );
    println!("\ndetections (on): {:?}", on.detections);
    emulation_cost();
}

/// The time each attack of the load takes its emulator, in process (no HTTP, no session
/// table): the median and the 99th percentile of [`RUNS`] runs.
fn emulation_cost() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let emulation = Emulation::new(EmulationConfig::default()).expect("emulation");
    let detector = Detector::new();
    println!("\n| attack (emulator alone, in process) | p50 us | p99 us |");
    println!("|---|---:|---:|");
    for path in ATTACKS {
        let body = serde_json::json!({"method": "GET", "path": path, "uuid": "bench-sensor"});
        let event = Event::parse(body.to_string().as_bytes()).expect("an event");
        let detection = detector.detect(&event);
        let kind = detection.attack.emulator().expect("an attack");
        let attack = Attack {
            kind,
            params: &detection.params,
            path: path.split('?').next().unwrap_or("/"),
            sensor: "bench-sensor",
            now: 1.7e9,
        };
        let mut state = Mutex::new(SessionState::default());
        let mut times: Vec<Duration> = (0..RUNS)
            .map(|run| {
                if run % SESSION_REQUESTS == 0 {
                    state = Mutex::new(SessionState::default());
                }
                let started = Instant::now();
                let answered = runtime.block_on(emulation.emulate(&attack, &state));
                let took = started.elapsed();
                answered.expect("an emulated answer");
                took
            })
            .collect();
        times.sort_unstable();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "| `{}` {path} | {:.1} | {:.1} |",
            kind.name(),
            us(times[RUNS / 2]),
            us(times[RUNS * 99 / 100])
        );
    }
}
