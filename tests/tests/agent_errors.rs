//! The agent's start-up errors: one clear line on stderr, a failure exit, nothing left behind.

use std::process::Command;

use flowmon_tests::{
    netns::Netns,
    process::{PinDir, TempDir, flowmon_binary},
};

/// Runs flowmon with `args` (in `netns` if given, as `user` if given) and returns its stderr;
/// asserts that it failed and left its pin directory empty.
fn failing_start(netns: Option<&Netns>, user: Option<&str>, args: &[&str]) -> String {
    let state = TempDir::new("errors");
    let pins = PinDir::new("errors");
    let binary = flowmon_binary();
    let mut command = match (netns, user) {
        (Some(netns), _) => netns.command(binary.to_str().unwrap()),
        (None, Some(user)) => {
            let mut command = Command::new("setpriv");
            command
                .args(["--reuid", user, "--regid", "nogroup", "--clear-groups"])
                .args(["--inh-caps=-all", "--"])
                .arg(&binary);
            command
        }
        (None, None) => Command::new(&binary),
    };
    let output = command
        .args(args)
        .args(["--no-redis", "--metrics-listen", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(state.path())
        .arg("--pin-dir")
        .arg(pins.path())
        .output()
        .expect("run flowmon");
    assert!(!output.status.success(), "flowmon should have failed");
    let leftovers = std::fs::read_dir(pins.path()).map_or(0, |dir| dir.count());
    assert_eq!(leftovers, 0, "a failed start leaves no pins");
    let stderr = String::from_utf8(output.stderr).unwrap();
    stderr.lines().last().unwrap_or_default().to_owned()
}

#[test]
fn a_missing_interface_is_named() {
    let line = failing_start(None, None, &["--iface", "nosuchif0"]);
    assert_eq!(line, "flowmon: interface nosuchif0 does not exist");
}

#[test]
fn a_missing_privilege_says_what_is_needed() {
    let line = failing_start(None, Some("nobody"), &["--iface", "lo"]);
    assert!(line.starts_with("flowmon: permission denied"), "{line}");
    assert!(
        line.contains("needs root (CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"),
        "{line}"
    );
}

#[test]
fn a_kernel_refusal_is_reported_and_undone() {
    // Loopback has no native XDP: the kernel refuses, and nothing stays attached or pinned.
    let netns = Netns::new("err");
    let line = failing_start(
        Some(&netns),
        None,
        &["--iface", "lo", "--xdp-mode", "native"],
    );
    assert!(
        line.starts_with("flowmon: the kernel refused to attach XDP to lo:"),
        "{line}"
    );
    let link = netns.exec(&["ip", "-d", "link", "show", "lo"]);
    assert!(!String::from_utf8_lossy(&link.stdout).contains("prog/xdp"));
}
