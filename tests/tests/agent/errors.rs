//! The agent's start-up errors: one clear line on stderr, a failure exit, nothing left behind.

use std::{net::TcpListener, process::Command};

use flowmon_tests::{
    netns::Netns,
    process::{PinDir, TempDir, flowmon_binary, free_port},
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
        .args(["--web-listen", "127.0.0.1:0"])
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
    assert_eq!(
        line,
        "flowmon: invalid setting iface: interface nosuchif0 does not exist"
    );
}

/// A bad setting, on the command line or in the config file, fails the start before anything
/// happens: no Redis connection, no spool, no listener, nothing pinned.
#[test]
fn a_bad_setting_fails_before_any_side_effect() {
    let redis = TcpListener::bind("127.0.0.1:0").unwrap();
    redis.set_nonblocking(true).unwrap();
    let redis_url = format!("redis://{}", redis.local_addr().unwrap());
    let snare_port = free_port();
    let state = TempDir::new("bad-setting");
    let file = state.path().join("flowmon.toml");
    std::fs::write(&file, "max-sessions = 0\n").unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--session-timeout", "0"], "session-timeout"),
        (&["--api-listen", "nowhere"], "api-listen"),
        (&["--config", file.to_str().unwrap()], "max-sessions"),
    ];
    for (args, name) in cases {
        let pins = PinDir::new("bad-setting");
        let output = Command::new(flowmon_binary())
            .args(["--iface", "lo", "--redis-url", &redis_url])
            .args(["--snare-listen", &format!("127.0.0.1:{snare_port}")])
            .arg("--state-dir")
            .arg(state.path())
            .arg("--pin-dir")
            .arg(pins.path())
            .args(*args)
            .output()
            .expect("run flowmon");
        assert!(!output.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!("flowmon: invalid setting {name}: ")),
            "{stderr}"
        );
        let redis_contacted = redis.accept();
        assert!(redis_contacted.is_err(), "{args:?} connected to Redis");
        assert!(!pins.path().exists() || std::fs::read_dir(pins.path()).unwrap().count() == 0);
        assert!(
            !state.path().join("spool").exists(),
            "{args:?} opened the spool"
        );
        TcpListener::bind(("127.0.0.1", snare_port)).expect("the SNARE port is free");
    }
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

/// Maps pinned by another version, laid out otherwise, are refused with one line that says
/// what to do, before the programs are loaded against them.
#[test]
fn maps_pinned_by_another_version_are_named() {
    let pins = PinDir::new("old-version");
    std::fs::create_dir_all(pins.path()).unwrap();
    // A flow map whose blocks are 8 bytes shorter than this build's.
    let block = std::mem::size_of::<flowmon_common::FlowBlock>() as u32;
    let key = std::mem::size_of::<flowmon_common::FlowKey>() as u32;
    pin_map(&pins.path().join("FLOWS"), LRU_HASH, key, block - 8);
    let netns = Netns::new("old-version");
    let output = netns
        .command(flowmon_binary().to_str().unwrap())
        .args([
            "--iface",
            "lo",
            "--no-redis",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--pin-dir")
        .arg(pins.path())
        .output()
        .expect("run flowmon");
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    let line = stderr.lines().last().unwrap_or_default();
    assert_eq!(
        line,
        format!(
            "flowmon: the maps pinned in {} are another flowmon version's (FLOWS: {key}-byte \
             keys and {}-byte values, this one's {key} and {block}): stop the programs they \
             belong to and remove the directory",
            pins.path().display(),
            block - 8
        )
    );
}

const LRU_HASH: u32 = 9;

/// Creates a map of `map_type` and pins it at `path`, with the bpf(2) system call itself.
fn pin_map(path: &std::path::Path, map_type: u32, key_size: u32, value_size: u32) {
    // The leading members of `union bpf_attr` for BPF_MAP_CREATE (include/uapi/linux/bpf.h),
    // the rest zero.
    let mut create = [0u32; 32];
    create[..4].copy_from_slice(&[map_type, key_size, value_size, 16]);
    // SAFETY: bpf(BPF_MAP_CREATE) reads the attribute we own, of the size we give.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0, // BPF_MAP_CREATE
            create.as_ptr(),
            std::mem::size_of_val(&create),
        )
    };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // BPF_OBJ_PIN's attribute: the path (a pointer) and the descriptor.
    let mut pin = [0u64; 4];
    pin[0] = c_path.as_ptr() as u64;
    pin[1] = fd as u64;
    // SAFETY: bpf(BPF_OBJ_PIN) reads the attribute we own and the NUL-terminated path.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, 6, pin.as_ptr(), std::mem::size_of_val(&pin)) };
    assert_eq!(rc, 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
    // SAFETY: the descriptor is ours; the pin keeps the map.
    unsafe { libc::close(fd as i32) };
}
