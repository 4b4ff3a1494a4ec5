//! Network namespaces joined by a veth pair: a client host and a server host on one machine.
//! Dropping the pair deletes both namespaces (and so the veth pair and every socket in them),
//! also when the test panics.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

/// One network namespace, deleted when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "fm-{label}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let netns = Self { name };
        netns.exec(&["ip", "link", "set", "lo", "up"]);
        netns
    }

    /// A command that runs inside the namespace. Only the network namespace changes (unlike
    /// `ip netns exec`, which also remounts /sys): the host's bpffs stays visible, so pins
    /// outlive the process that made them.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/var/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        command
    }

    /// Runs `args` inside the namespace; panics with its output if it fails.
    pub fn exec(&self, args: &[&str]) -> Output {
        let output = self
            .command(args[0])
            .args(&args[1..])
            .output()
            .expect("run ip netns exec");
        assert!(
            output.status.success(),
            "{args:?} in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Pings three times, 0.2 s apart, with `args` (the address; `-6`...) and returns (requests
    /// sent, replies received), from ping's summary line.
    pub fn ping(&self, args: &[&str]) -> (u64, u64) {
        let output = self
            .command("ping")
            .args(["-c", "3", "-i", "0.2", "-W", "2"])
            .args(args)
            .output()
            .unwrap();
        let summary = String::from_utf8_lossy(&output.stdout).into_owned();
        let count = |word: &str| -> u64 {
            let line = summary
                .lines()
                .find(|l| l.contains(word))
                .expect("ping summary");
            let before = line.split(word).next().unwrap();
            before
                .trim_end()
                .rsplit([' ', ','])
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        (count(" packets transmitted"), count(" received"))
    }

    /// Runs `f` on a thread that has joined the namespace: sockets it opens live there.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = File::open(&path).expect("open the namespace");
                    // SAFETY: setns on a namespace fd; only this thread moves.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns into {path}");
                    f()
                })
                .join()
                .expect("namespace thread panicked")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Two namespaces, `client` and `server`, joined by a veth pair with IPv4 and IPv6 addresses.
pub struct VethPair {
    pub client: Netns,
    pub server: Netns,
}

impl VethPair {
    pub const CLIENT_IF: &str = "cli0";
    pub const SERVER_IF: &str = "srv0";
    pub const CLIENT_IP: &str = "10.199.0.2";
    pub const SERVER_IP: &str = "10.199.0.1";
    pub const CLIENT_IP6: &str = "fd00:199::2";
    pub const SERVER_IP6: &str = "fd00:199::1";

    pub fn new() -> Self {
        let client = Netns::new("c");
        let server = Netns::new("s");
        ip(&[
            "link",
            "add",
            Self::CLIENT_IF,
            "netns",
            &client.name,
            "type",
            "veth",
            "peer",
            "name",
            Self::SERVER_IF,
            "netns",
            &server.name,
        ]);
        for (netns, iface, v4, v6) in [
            (&client, Self::CLIENT_IF, Self::CLIENT_IP, Self::CLIENT_IP6),
            (&server, Self::SERVER_IF, Self::SERVER_IP, Self::SERVER_IP6),
        ] {
            netns.exec(&["ip", "addr", "add", &format!("{v4}/24"), "dev", iface]);
            // No duplicate address detection: the address is usable at once.
            netns.exec(&[
                "ip",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                iface,
                "nodad",
            ]);
            netns.exec(&["ip", "link", "set", iface, "up"]);
        }
        Self { client, server }
    }

    /// Turns TCP's SACK off on both hosts: every segment but the SYNs then carries exactly the
    /// timestamp option, also when a loss under load makes TCP retransmit, so the headers on
    /// the wire are known exactly (see `tcp::TCP_FRAME_OVERHEAD`).
    pub fn disable_tcp_sack(&self) {
        for netns in [&self.client, &self.server] {
            netns.exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_sack=0"]);
        }
    }

    /// Moves the server's address `ip/24` to a macvlan device `name` on the server end: a device
    /// without native XDP, through which the server's IPv4 traffic then goes both ways (the
    /// server end keeps no address, and only the device an address is on answers ARP for it).
    pub fn add_server_macvlan(&self, name: &str, ip: &str) {
        self.server
            .exec(&["ip", "-4", "addr", "flush", "dev", Self::SERVER_IF]);
        self.server
            .exec(&["sysctl", "-q", "-w", "net.ipv4.conf.all.arp_ignore=1"]);
        self.server.exec(&[
            "ip",
            "link",
            "add",
            name,
            "link",
            Self::SERVER_IF,
            "type",
            "macvlan",
            "mode",
            "bridge",
        ]);
        self.server
            .exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", name]);
        self.server.exec(&["ip", "link", "set", name, "up"]);
    }
}

impl Default for VethPair {
    fn default() -> Self {
        Self::new()
    }
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
