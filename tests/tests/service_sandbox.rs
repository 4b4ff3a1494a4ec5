//! `dist/flowmon.service`'s sandbox: rated by systemd's own analysis, and flowmon run the way
//! the unit runs it (tests/src/service.rs), as the unit's user with its capabilities and no
//! others, counting a ping exactly and answering SNARE. Each of those capabilities is needed on
//! this kernel: without any one of them the programs do not load.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
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
    process::ChildGuard,
    redis_server::RedisServer,
    service::{Sandbox, ServiceUnit, ServiceUser, capability_number, dist_file},
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

/// One HTTP/1.1 exchange with flowmon's SNARE port from `netns`, over the veth; returns the
/// status line and the JSON body.
fn snare(netns: &Netns, request: &str) -> (String, Value) {
    let response = netns.run(|| {
        let mut stream = TcpStream::connect((VethPair::SERVER_IP, SNARE_PORT)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    });
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    let status = head.lines().next().unwrap().to_owned();
    (status, serde_json::from_str(body).expect("a JSON body"))
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

#[test]
fn flowmon_as_the_units_user_with_its_capabilities_counts_a_ping_and_answers_snare() {
    let sandbox = sandbox();
    let (uid, gid) = (sandbox.user.uid, sandbox.user.gid);
    let pair = VethPair::new();
    let redis = RedisServer::start_in(&pair.server);
    let flow_log = sandbox.logs.path().join("flows.jsonl");
    let event_log = sandbox.logs.path().join("events.json");
    let mut command = sandbox.command(
        &pair.server,
        &sandbox.capabilities,
        &[
            "--iface",
            VethPair::SERVER_IF,
            "--redis-url",
            &redis.url(),
            "--snare-listen",
            &format!("0.0.0.0:{SNARE_PORT}"),
            "--flow-log",
            flow_log.to_str().unwrap(),
            "--event-log",
            event_log.to_str().unwrap(),
        ],
    );
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

    let (sent, received) = pair.client.ping(&[VethPair::SERVER_IP]);
    assert_eq!(sent, 3);
    assert!(received > 0, "ping got no answer");

    let (line, version) = snare(
        &pair.client,
        "GET /version HTTP/1.1\r\nHost: flowmon\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(line, "HTTP/1.1 200 OK");
    assert!(version["version"].is_string(), "{version}");
    let event = json!({
        "method": "GET", "path": "/index.php?id=1' OR '1'='1", "uuid": SENSOR, "status": 200,
        "headers": {"Host": "sensor", "User-Agent": "sandbox-test/1.0"},
        "peer": {"ip": VethPair::CLIENT_IP, "port": 40000},
    })
    .to_string();
    let (line, answer) = snare(
        &pair.client,
        &format!(
            "POST /event HTTP/1.1\r\nHost: flowmon\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{event}",
            event.len()
        ),
    );
    assert_eq!(line, "HTTP/1.1 200 OK");
    assert_eq!(
        answer["response"]["message"]["detection"]["name"], "sqli",
        "{answer}"
    );

    let exit = process.signal_and_wait(libc::SIGTERM, Duration::from_secs(30));
    assert!(exit.success(), "flowmon exited with {exit}");

    // 56 data bytes + 8 ICMP + 20 IPv4 + 14 Ethernet.
    let records = read_records(&flow_log);
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
    let stream = redis.cli(&["XRANGE", "flowmon:flows", "-", "+"]);
    let record_id = ping[0]["record_id"].as_str().unwrap();
    assert!(
        stream.contains(&format!("\"record_id\":\"{record_id}\"")),
        "{record_id} not in Redis:\n{stream}"
    );
    let events = std::fs::read_to_string(&event_log).unwrap();
    assert_eq!(events.lines().count(), 1, "{events}");

    // What it wrote is the user's: the logs readable by its group whatever the umask, its state
    // its own (the unit's umask).
    for log in [&flow_log, &event_log] {
        assert_eq!(mode_and_owner(log), (0o640, uid, gid), "{}", log.display());
    }
    let journal = sandbox.state.path().join("flow-journal.jsonl");
    assert_eq!(mode_and_owner(&journal), (0o600, uid, gid));
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
