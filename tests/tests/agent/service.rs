//! `dist/flowmon.service`'s sandbox: rated by systemd's own analysis, and flowmon run the way
//! the unit runs it (tests/src/service.rs), as the unit's user with its capabilities and no
//! others, counting a ping exactly and answering SNARE. Each of those capabilities is needed on
//! this kernel: without any one of them the programs do not load.

use std::{
    collections::BTreeSet,
    net::TcpStream,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use aya::{
    EbpfLoader,
    programs::{SchedClassifier, Xdp},
};
use flowmon::datapath::EBPF_OBJECT;
use flowmon_common::{CLOCK_PROGRAM, FLOWS_MAP, TC_PROGRAM, XDP_PROGRAM};
use flowmon_tests::{
    agent::{read_records, wait_until_serving},
    netns::{Netns, VethPair},
    process::{ChildGuard, TempDir, flowmon_binary},
    raw_http,
    redis_server::RedisServer,
    service::{
        Sandbox, ServiceUnit, ServiceUser, allowed_system_calls, capability_number, descendant,
        dist_file, traced_calls,
    },
};
use serde_json::{Value, json};

const HIGHEST_EXPOSURE: f64 = 2.5;
const SNARE_PORT: u16 = 8090;
const SENSOR: &str = "0d6f3a0e-5c1b-4f57-9d2e-7f4b8a1c2e3d";

fn unit() -> ServiceUnit {
    ServiceUnit::read(&dist_file("flowmon.service"))
}

fn sandbox() -> Sandbox {
    Sandbox::new(&unit(), ServiceUser::create(&dist_file("flowmon.sysusers")))
}

#[test]
fn systemd_rates_the_unit_at_most_2_5() {
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(dist_file("flowmon.service"))
        .output()
        .expect("run systemd-analyze");
    let report = String::from_utf8_lossy(&output.stdout);
    let level: f64 = report
        .lines()
        .find_map(|line| line.split_once("Overall exposure level for flowmon.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no overall exposure level in\n{report}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    assert!(level <= HIGHEST_EXPOSURE, "exposure {level}:\n{report}");
}

/// One request to flowmon's SNARE port from `netns`, over the veth; returns the status and
/// the JSON body of the answer.
fn snare(netns: &Netns, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let answer = netns.run(|| {
        let mut stream = TcpStream::connect((VethPair::SERVER_IP, SNARE_PORT)).unwrap();
        raw_http::send(&mut stream, method, path, body);
        raw_http::receive(&mut stream)
    });
    let json = serde_json::from_slice(&answer.body).expect("a JSON body");
    (answer.status(), json)
}

/// The line of `/proc/<pid>/status` for `key`, without the key.
fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
        .to_owned()
}

fn mode_and_owner(path: &Path) -> (u32, u32, u32) {
    let metadata = std::fs::metadata(path).unwrap();
    (
        metadata.permissions().mode() & 0o777,
        metadata.uid(),
        metadata.gid(),
    )
}

/// flowmon on the server end of a veth pair, run as the unit runs it, with a Redis of its own.
struct Sensor {
    sandbox: Sandbox,
    pair: VethPair,
    redis: RedisServer,
    flow_log: PathBuf,
    event_log: PathBuf,
}

impl Sensor {
    fn new() -> Self {
        let sandbox = sandbox();
        let pair = VethPair::new();
        let redis = RedisServer::start_in(&pair.server);
        Self {
            flow_log: sandbox.logs.path().join("flows.jsonl"),
            event_log: sandbox.logs.path().join("events.json"),
            sandbox,
            pair,
            redis,
        }
    }

    /// flowmon's settings: the interface, Redis, SNARE on every address, both logs.
    fn args(&self) -> Vec<String> {
        [
            "--iface",
            VethPair::SERVER_IF,
            "--redis-url",
            &self.redis.url(),
            "--snare-listen",
            &format!("0.0.0.0:{SNARE_PORT}"),
            "--flow-log",
            self.flow_log.to_str().unwrap(),
            "--event-log",
            self.event_log.to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// What a sensor host sees: a ping through the interface, and SNARE's version check and an
    /// event from the other end of the veth, both answered. Returns ping's (requests sent,
    /// replies received).
    fn exercise(&self) -> (u64, u64) {
        let client = &self.pair.client;
        let (sent, received) = client.ping(&[VethPair::SERVER_IP]);
        assert_eq!(sent, 3);
        assert!(received > 0, "ping got no answer");
        let (status, version) = snare(client, "GET", "/version", b"");
        assert_eq!(status, 200);
        assert!(version["version"].is_string(), "{version}");
        let event = json!({
            "method": "GET", "path": "/index.php?id=1' OR '1'='1", "uuid": SENSOR, "status": 200,
            "headers": {"Host": "sensor", "User-Agent": "sandbox-test/1.0"},
            "peer": {"ip": VethPair::CLIENT_IP, "port": 40000},
        });
        let (status, answer) = snare(client, "POST", "/event", event.to_string().as_bytes());
        assert_eq!(status, 200);
        assert_eq!(
            answer["response"]["message"]["detection"]["name"], "sqli",
            "{answer}"
        );
        (sent, received)
    }
}

#[test]
fn flowmon_as_the_units_user_with_its_capabilities_counts_a_ping_and_answers_snare() {
    let sensor = Sensor::new();
    let (sandbox, pair) = (&sensor.sandbox, &sensor.pair);
    let (uid, gid) = (sandbox.user.uid, sandbox.user.gid);
    let args = sensor.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut command = sandbox.command(&pair.server, &sandbox.capabilities, &args);
    let mut process = ChildGuard::spawn("flowmon", &mut command);
    // Serving metrics: everything is attached.
    wait_until_serving(&pair.server, &mut process);

    // The process: the user's ids, no supplementary groups, no new privileges, and in every
    // capability set the unit's capabilities, nothing else.
    let status = std::fs::read_to_string(format!("/proc/{}/status", process.pid())).unwrap();
    assert_eq!(status_field(&status, "Name"), "flowmon");
    assert_eq!(
        status_field(&status, "Uid"),
        format!("{uid}\t{uid}\t{uid}\t{uid}")
    );
    assert_eq!(
        status_field(&status, "Gid"),
        format!("{gid}\t{gid}\t{gid}\t{gid}")
    );
    assert_eq!(status_field(&status, "Groups"), "");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    let expected: u64 = sandbox
        .capabilities
        .iter()
        .map(|name| 1 << capability_number(name))
        .sum();
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let mask = u64::from_str_radix(&status_field(&status, set), 16).unwrap();
        assert_eq!(mask, expected, "{set}: {mask:x}, not {expected:x}");
    }

    let (sent, received) = sensor.exercise();
    let exit = process.signal_and_wait(libc::SIGTERM, Duration::from_secs(30));
    assert!(exit.success(), "flowmon exited with {exit}");

    // 56 data bytes + 8 ICMP + 20 IPv4 + 14 Ethernet.
    let records = read_records(&sensor.flow_log);
    let ping: Vec<&Value> = records
        .iter()
        .filter(|r| r["protocol"] == "icmp" && r["client_ip"] == VethPair::CLIENT_IP)
        .collect();
    assert_eq!(ping.len(), 1, "one ping flow: {records:#?}");
    let count = |key: &str| ping[0][key].as_u64().unwrap();
    assert_eq!(
        [
            count("client_packets"),
            count("client_bytes"),
            count("server_packets"),
            count("server_bytes")
        ],
        [sent, sent * 98, received, received * 98],
        "{}",
        ping[0]
    );
    let stream = sensor.redis.cli(&["XRANGE", "flowmon:flows", "-", "+"]);
    let record_id = ping[0]["record_id"].as_str().unwrap();
    assert!(
        stream.contains(&format!("\"record_id\":\"{record_id}\"")),
        "{record_id} not in Redis:\n{stream}"
    );
    let events = std::fs::read_to_string(&sensor.event_log).unwrap();
    assert_eq!(events.lines().count(), 1, "{events}");

    // What it wrote is the user's: the logs readable by its group whatever the umask, its state
    // its own (the unit's umask).
    for log in [&sensor.flow_log, &sensor.event_log] {
        assert_eq!(mode_and_owner(log), (0o640, uid, gid), "{}", log.display());
    }
    let journal = sandbox.state.path().join("flow-journal.jsonl");
    assert_eq!(mode_and_owner(&journal), (0o600, uid, gid));
}

/// The filters strace cannot break: every system call flowmon makes, from its start through
/// the same work to its exit, is one `SystemCallFilter=` allows, and every socket of a family
/// `RestrictAddressFamilies=` allows.
#[test]
fn flowmon_keeps_to_the_units_system_calls_and_address_families() {
    let sensor = Sensor::new();
    let unit = unit();
    let trace_dir = TempDir::new("strace");
    let trace = trace_dir.path().join("flowmon.trace");
    let args = sensor.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut command = sensor
        .sandbox
        .traced_command(&sensor.pair.server, &trace, &args);
    let mut process = ChildGuard::spawn("traced flowmon", &mut command);
    wait_until_serving(&sensor.pair.server, &mut process);
    sensor.exercise();
    let flowmon = descendant(process.pid(), "flowmon").expect("flowmon under strace");
    // SAFETY: kill(2) on a process of this test's.
    unsafe { libc::kill(flowmon as i32, libc::SIGTERM) };
    let exit = process.wait(Duration::from_secs(60));
    assert!(exit.success(), "flowmon exited with {exit}");

    let (calls, families) = traced_calls(&trace, &flowmon_binary());
    let allowed = allowed_system_calls(&unit);
    let refused: Vec<&String> = calls.difference(&allowed).collect();
    assert!(
        refused.is_empty(),
        "system calls outside SystemCallFilter=: {refused:?}"
    );
    assert!(calls.contains("bpf"), "{calls:?}");
    let allowed_families: BTreeSet<String> = unit
        .value("RestrictAddressFamilies")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert!(
        families.is_subset(&allowed_families),
        "sockets of {families:?}, not all in {allowed_families:?}"
    );
}

#[test]
fn a_missing_capability_is_named() {
    let sandbox = sandbox();
    let netns = Netns::new("sandbox");
    let without_perfmon: Vec<String> = sandbox
        .capabilities
        .iter()
        .filter(|name| *name != "CAP_PERFMON")
        .cloned()
        .collect();
    let output = sandbox
        .command(&netns, &without_perfmon, &["--iface", "lo", "--no-redis"])
        .output()
        .expect("run flowmon");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.lines().last(),
        Some(
            "flowmon: permission denied: flowmon needs root (CAP_BPF, CAP_NET_ADMIN and \
             CAP_PERFMON), and this process lacks CAP_PERFMON"
        ),
        "{stderr}"
    );
}

/// Capability sets as `capget`/`capset` take them (`_LINUX_CAPABILITY_VERSION_3`: two words).
#[repr(C)]
struct CapabilityHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapabilityWord {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Runs `f` on a thread whose effective capabilities are `effective` alone (capabilities are
/// a thread's, so the test's other threads keep theirs).
fn with_effective_capabilities<T: Send>(effective: u64, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let header = CapabilityHeader {
                    version: 0x2008_0522,
                    pid: 0,
                };
                let mut words = [CapabilityWord::default(); 2];
                // SAFETY: capget and capset on the calling thread (pid 0) with a version-3
                // header and the two words that version reads and writes.
                unsafe {
                    assert_eq!(
                        libc::syscall(libc::SYS_capget, &header, words.as_mut_ptr()),
                        0
                    );
                    words[0].effective = effective as u32;
                    words[1].effective = (effective >> 32) as u32;
                    assert_eq!(libc::syscall(libc::SYS_capset, &header, words.as_ptr()), 0);
                }
                f()
            })
            .join()
            .expect("the thread panicked")
    })
}

/// Loads flowmon's object and verifies its programs, as `Datapath::load` does, without its
/// check of the capabilities: what the kernel itself says.
fn load_programs() -> Result<(), String> {
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(FLOWS_MAP, 1024)
        .load(EBPF_OBJECT)
        .map_err(|err| format!("load the object: {err}"))?;
    for name in [XDP_PROGRAM, CLOCK_PROGRAM] {
        let program: &mut Xdp = ebpf.program_mut(name).unwrap().try_into().unwrap();
        program
            .load()
            .map_err(|err| format!("load {name}: {err:?}"))?;
    }
    let tc: &mut SchedClassifier = ebpf.program_mut(TC_PROGRAM).unwrap().try_into().unwrap();
    tc.load()
        .map_err(|err| format!("load {TC_PROGRAM}: {err:?}"))
}

#[test]
fn each_of_the_units_capabilities_is_needed_to_load_the_programs() {
    let capabilities = unit().capabilities();
    let mask =
        |names: &[&String]| -> u64 { names.iter().map(|name| 1 << capability_number(name)).sum() };
    let all: Vec<&String> = capabilities.iter().collect();
    // The unit's set alone is enough (no CAP_SYS_ADMIN): first, so that aya probes the kernel's
    // features with them.
    with_effective_capabilities(mask(&all), load_programs)
        .unwrap_or_else(|err| panic!("with {capabilities:?}: {err}"));
    for missing in &capabilities {
        let others: Vec<&String> = all.iter().copied().filter(|c| *c != missing).collect();
        let result = with_effective_capabilities(mask(&others), load_programs);
        assert!(result.is_err(), "loaded without {missing}");
    }
}
