//! A flowmon agent process inside a test's network namespace, with its own state directory,
//! flow log and bpffs pins, all removed when dropped.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;

use crate::{
    netns::Netns,
    process::{ChildGuard, PinDir, TempDir, flowmon_binary},
    wait::wait_until,
};

pub struct Agent {
    process: Option<ChildGuard>,
    args: Vec<String>,
    netns_name: String,
    pub dir: TempDir,
    pub pins: PinDir,
}

impl Agent {
    /// Starts flowmon in `netns` on `iface` with `args` (on top of its own state dir, pin dir
    /// and flow log) and waits until it serves metrics.
    pub fn start(netns: &Netns, iface: &str, args: &[&str]) -> Self {
        let dir = TempDir::new("agent");
        let pins = PinDir::new("agent");
        let mut all: Vec<String> = vec!["--iface".into(), iface.into()];
        all.extend(["--state-dir".into(), dir.path().display().to_string()]);
        all.extend(["--pin-dir".into(), pins.path().display().to_string()]);
        all.extend([
            "--flow-log".into(),
            dir.path().join("flows.jsonl").display().to_string(),
        ]);
        all.extend(args.iter().map(|a| a.to_string()));
        let mut agent = Self {
            process: None,
            args: all,
            netns_name: netns.name.clone(),
            dir,
            pins,
        };
        agent.restart(netns);
        agent
    }

    /// Starts the process again with the same arguments, directories and pins.
    pub fn restart(&mut self, netns: &Netns) {
        assert!(self.process.is_none(), "flowmon is still running");
        let binary = flowmon_binary();
        let mut command = netns.command(binary.to_str().unwrap());
        command.args(&self.args);
        let mut process = ChildGuard::spawn("flowmon", &mut command);
        wait_until_serving(netns, &mut process);
        self.process = Some(process);
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("flowmon running").pid()
    }

    /// SIGTERM, and the exit must be clean.
    pub fn stop(&mut self) {
        let mut process = self.process.take().expect("flowmon running");
        let status = process.signal_and_wait(libc::SIGTERM, Duration::from_secs(30));
        assert!(status.success(), "flowmon exited with {status}");
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        let mut process = self.process.take().expect("flowmon running");
        process.signal_and_wait(libc::SIGKILL, Duration::from_secs(10));
    }

    pub fn flow_log(&self) -> PathBuf {
        self.dir.path().join("flows.jsonl")
    }

    /// Every record in the flow log, in order.
    pub fn records(&self) -> Vec<Value> {
        read_records(&self.flow_log())
    }

    /// The value of the metric line that starts with `name` (labels included).
    pub fn metric(&self, netns: &Netns, name: &str) -> f64 {
        metric(&self.scrape(netns), name)
    }

    /// Waits until the agent has completed `polls` polls of the flow map that started after
    /// this call: what the kernel saw before it is then in the records.
    pub fn wait_for_polls(&self, netns: &Netns, polls: u64) {
        let start = self.metric(netns, "flowmon_polls_total") as u64;
        // The poll under way may have started before the call.
        let target = start + polls + 1;
        wait_until(
            Duration::from_secs(30),
            &format!("{polls} polls after poll {start}"),
            || self.metric(netns, "flowmon_polls_total") as u64 >= target,
        );
    }

    /// The whole Prometheus exposition.
    pub fn scrape(&self, netns: &Netns) -> String {
        assert_eq!(netns.name, self.netns_name);
        scrape_metrics(netns).expect("metrics endpoint")
    }
}

/// Waits until the flowmon of `process` serves metrics in `netns`; panics if it exits first.
pub fn wait_until_serving(netns: &Netns, process: &mut ChildGuard) {
    wait_until(Duration::from_secs(20), "flowmon serves metrics", || {
        if let Some(status) = process.child.try_wait().unwrap() {
            panic!("flowmon exited at start-up: {status}");
        }
        scrape_metrics(netns).is_some()
    });
}

/// The metrics page of the flowmon in `netns` (on its default 127.0.0.1:9108), if it answers.
pub fn scrape_metrics(netns: &Netns) -> Option<String> {
    netns.run(|| {
        let mut stream = TcpStream::connect("127.0.0.1:9108").ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
    })
}

/// Every record of the flow log at `path`, in order; none when there is no file.
pub fn read_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON record per line"))
        .collect()
}

/// The value of the line of a Prometheus text exposition that starts with `name` (labels
/// included); panics, showing the exposition, when there is none.
pub fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{body}"))
}

/// Posts a SNARE event to the agent in `netns` (on the default `--snare-listen`) and returns
/// the answer's body; panics unless it is 200.
pub fn post_snare_event(netns: &Netns, event: &Value) -> String {
    let event = event.to_string();
    let answer = netns.run(|| {
        let mut stream = TcpStream::connect("127.0.0.1:8090").unwrap();
        write!(
            stream,
            "POST /event HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{event}",
            event.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    });
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
    body.to_owned()
}
