//! A real redis-server on a free loopback port, on the host or inside a test's network
//! namespace, stopped when dropped.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    netns::Netns,
    process::{ChildGuard, TempDir, free_port},
};

pub struct RedisServer {
    pub port: u16,
    /// The network namespace it runs in; the host's when `None`.
    netns: Option<String>,
    /// Keeps its data across `stop` and `restart` (append-only file, fsync on every write).
    persistent: bool,
    process: Option<ChildGuard>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts redis-server (no persistence) on a free loopback port and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(None, false)
    }

    /// The same inside `netns`, where only processes of that namespace reach it.
    pub fn start_in(netns: &Netns) -> Self {
        Self::start_with(Some(netns.name.clone()), false)
    }

    /// Inside `netns`, keeping its data across a stop and a restart, as a production Redis
    /// with an append-only file does.
    pub fn start_persistent_in(netns: &Netns) -> Self {
        Self::start_with(Some(netns.name.clone()), true)
    }

    fn start_with(netns: Option<String>, persistent: bool) -> Self {
        let mut server = Self {
            port: free_port(),
            netns,
            persistent,
            process: None,
            dir: TempDir::new("redis"),
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn command(&self, program: &str) -> Command {
        match &self.netns {
            None => Command::new(program),
            Some(name) => {
                let mut command = Command::new("nsenter");
                command
                    .arg(format!("--net=/var/run/netns/{name}"))
                    .arg("--")
                    .arg(program);
                command
            }
        }
    }

    /// Stops the server (SIGKILL): an outage. Its data is lost unless it is persistent.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let appendonly: &[&str] = if self.persistent {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let process = ChildGuard::spawn(
            "redis-server",
            self.command("redis-server")
                .args(["--port", &self.port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", ""])
                .args(appendonly)
                .arg("--dir")
                .arg(self.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        self.process = Some(process);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .try_cli(&["ping"])
            .is_none_or(|out| out.trim() != "PONG")
        {
            assert!(Instant::now() < deadline, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let output = self
            .command("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs `redis-cli` against the server and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }
}
