//! The `flowmon` binary serving SNARE sensors on loopback, without `--iface`: for what only the
//! real process shows (its memory, its start, its event log, its Redis), stopped when dropped.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use crate::process::{ChildGuard, TempDir, flowmon_binary, free_port, wait_for_port};

pub struct SnareAgent {
    pub process: ChildGuard,
    /// Where SNARE sensors send events.
    pub addr: SocketAddr,
    /// The read API, and the metrics endpoint.
    pub api: SocketAddr,
    pub metrics: SocketAddr,
    /// Its state directory.
    pub dir: TempDir,
}

impl SnareAgent {
    /// Starts flowmon with `args` on free loopback ports and its own state directory, and
    /// waits until it serves SNARE sensors.
    pub fn start(args: &[&str]) -> Self {
        let dir = TempDir::new("snare-agent");
        let loopback = || -> SocketAddr { format!("127.0.0.1:{}", free_port()).parse().unwrap() };
        let (addr, api, metrics) = (loopback(), loopback(), loopback());
        let process = ChildGuard::spawn(
            "flowmon",
            Command::new(flowmon_binary())
                .args(["--snare-listen", &addr.to_string()])
                .args(["--api-listen", &api.to_string()])
                .args(["--metrics-listen", &metrics.to_string()])
                .args(["--web-listen", "127.0.0.1:0"])
                .arg("--state-dir")
                .arg(dir.path())
                .args(args)
                .stdout(Stdio::null()),
        );
        wait_for_port(metrics, Duration::from_secs(10));
        Self {
            process,
            addr,
            api,
            metrics,
            dir,
        }
    }

    /// Its resident memory, bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.pid()))
            .expect("the agent runs");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches(" kB").parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib * 1024
    }

    /// Stops it with SIGTERM; panics unless it exits cleanly within 20 s.
    pub fn stop(&mut self) {
        let status = self
            .process
            .signal_and_wait(libc::SIGTERM, Duration::from_secs(20));
        assert!(status.success(), "flowmon exited with {status}");
    }
}
