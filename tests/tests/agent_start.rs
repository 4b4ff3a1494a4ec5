//! What the agent sets up for itself at start, seen from outside the process.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use flowmon_tests::process::{ChildGuard, TempDir, flowmon_binary, free_port, wait_for_port};

#[test]
fn the_binary_raises_its_open_file_limit_to_the_hard_one() {
    let dir = TempDir::new("snare-nofile");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let port = |p: u16| format!("127.0.0.1:{p}");
    // A soft limit of 256 would not even cover the default connection cap.
    let mut flowmon = ChildGuard::spawn(
        "flowmon",
        Command::new("prlimit")
            .args(["--nofile=256:8192", "--"])
            .arg(flowmon_binary())
            .arg("--no-redis")
            .args(["--snare-listen", &port(free_port())])
            .args(["--metrics-listen", &metrics.to_string()])
            .args(["--api-listen", &port(free_port())])
            .arg("--state-dir")
            .arg(dir.path())
            .stdout(Stdio::null()),
    );
    wait_for_port(metrics, Duration::from_secs(10));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", flowmon.pid())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .expect("the open-file limit")
        .split_whitespace()
        .take(2)
        .collect();
    assert_eq!(open_files, ["8192", "8192"], "{limits}");
    let status = flowmon.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "flowmon exited with {status}");
}
