//! What the agent sets up for itself at start, seen from outside the process.

use std::{
    fs::File,
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use flowmon_tests::wait::{wait_for, wait_until};
use flowmon_tests::{
    netns::{Netns, VethPair},
    process::{ChildGuard, PinDir, TempDir, flowmon_binary, free_port, wait_for_port},
};

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
            .args(["--web-listen", "127.0.0.1:0"])
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

/// Starts flowmon in `netns` with `args`, its standard error in `<state>/stderr.log`, and
/// returns it with the line it logs once ready.
fn start_logged(netns: &Netns, state: &Path, args: &[&str]) -> (ChildGuard, String) {
    let log = state.join("stderr.log");
    let flowmon = ChildGuard::spawn(
        "flowmon",
        netns
            .command(flowmon_binary().to_str().unwrap())
            .args(args)
            .arg("--state-dir")
            .arg(state)
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap()),
    );
    let ready = wait_for(
        Duration::from_secs(30),
        "flowmon logs its ready line",
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let line = text.lines().find(|line| line.contains(" ready: "))?;
            Some(line.to_owned())
        },
    );
    (flowmon, ready)
}

/// Pids of the children of process `pid` (of any of its threads) whose name is `name`.
fn children_named(pid: u32, name: &str) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .filter_map(|child| child.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .collect()
}

/// The README's first run, on a machine where nothing answers at the default Redis URL (a
/// fresh network namespace): flowmon starts a redis-server of its own with its data under the
/// state directory, says so in its ready line with where the console is, its records reach
/// that server, and the server stops with flowmon.
#[test]
fn a_first_run_without_redis_starts_a_redis_of_its_own() {
    let pair = VethPair::new();
    let state = TempDir::new("first-run");
    let pins = PinDir::new("first-run");
    let (mut flowmon, ready) = start_logged(
        &pair.server,
        state.path(),
        &[
            "--iface",
            VethPair::SERVER_IF,
            "--pin-dir",
            pins.path().to_str().unwrap(),
            "--icmp-timeout",
            "0.3",
            "--poll-interval",
            "0.1",
        ],
    );
    let data = state.path().join("redis");
    let expected = format!(
        "ready: flow records and sessions to Redis redis://127.0.0.1:6379 (flowmon's own \
         redis-server, data in {}), no flow log; console http://127.0.0.1:8091/",
        data.display()
    );
    assert!(ready.ends_with(&expected), "{ready}");
    let servers = children_named(flowmon.pid(), "redis-server");
    assert_eq!(servers.len(), 1, "one redis-server");

    // A ping's flow ends at once; its final record reaches the started server.
    pair.client
        .exec(&["ping", "-c", "1", "-W", "5", VethPair::SERVER_IP]);
    let redis = |args: &[&str]| -> String {
        let output = pair
            .server
            .exec(&[&["redis-cli", "-p", "6379"][..], args].concat());
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    // The interface's own IPv6 neighbour solicitations may make records first.
    wait_until(
        Duration::from_secs(20),
        "the ping's record is in Redis",
        || redis(&["XRANGE", "flowmon:flows", "-", "+"]).contains(VethPair::CLIENT_IP),
    );
    assert!(
        data.join("appendonlydir").is_dir(),
        "its data in the state directory"
    );

    let status = flowmon.signal_and_wait(libc::SIGTERM, Duration::from_secs(30));
    assert!(status.success(), "flowmon exited with {status}");
    assert!(
        !Path::new(&format!("/proc/{}", servers[0])).exists(),
        "the redis-server stopped with flowmon"
    );
}

/// Where nothing answers and flowmon may not start a server, the ready line says where records
/// wait.
#[test]
fn without_redis_the_ready_line_names_the_spool() {
    let netns = Netns::new("spool");
    let state = TempDir::new("spool-line");
    let (mut flowmon, ready) = start_logged(&netns, state.path(), &["--no-local-redis"]);
    let expected = format!(
        "ready: sessions (no --iface: no flows) spooled to {} until Redis \
         redis://127.0.0.1:6379 answers",
        state.path().join("spool").display()
    );
    assert!(ready.contains(&expected), "{ready}");
    assert!(
        ready.ends_with("; console http://127.0.0.1:8091/"),
        "{ready}"
    );
    let status = flowmon.signal_and_wait(libc::SIGTERM, Duration::from_secs(30));
    assert!(status.success(), "flowmon exited with {status}");
}
