//! `cargo xtask bench events`: SNARE events per second and answer latency of the release agent
//! (no --iface, no Redis) under load from keep-alive clients on loopback: benign pages and
//! every kind of attack from many peers, sessions expiring all along (2 s session timeout).

use std::{process::Command, time::Duration};

use flowmon_tests::{
    process::{ChildGuard, TempDir, flowmon_binary, free_port, wait_for_port},
    snare_load::run_event_load,
};

const SECONDS: u64 = 10;
const CLIENTS: usize = 16;

fn main() {
    let state = TempDir::new("bench-events");
    let snare = free_port();
    let binary = flowmon_binary();
    let _agent = ChildGuard::spawn(
        "flowmon",
        Command::new(&binary)
            .args(["--no-redis", "--session-timeout", "2"])
            .args(["--snare-listen", &format!("127.0.0.1:{snare}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--api-listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--state-dir")
            .arg(state.path())
            .env("RUST_LOG", "warn"),
    );
    let addr = ([127, 0, 0, 1], snare).into();
    wait_for_port(addr, Duration::from_secs(20));
    // A short warm-up, then the measured run.
    run_event_load(addr, Duration::from_secs(1), CLIENTS).expect("warm-up load");
    let report =
        run_event_load(addr, Duration::from_secs(SECONDS), CLIENTS).expect("measured load");
    println!("## events ({CLIENTS} keep-alive clients on loopback, {SECONDS} s)\n");
    println!("| events | errors | events/s | p50 ms | p99 ms | max ms | sessions | target |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---|");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "| {} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {} | >= 20000 events/s, p99 < 5 ms |",
        report.events,
        report.errors,
        report.events_per_sec,
        ms(report.p50),
        ms(report.p99),
        ms(report.max),
        report.sessions
    );
    println!("\ndetections: {:?}", report.detections);
}
