//! A real redis-server on a free loopback port, stopped when dropped.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use crate::process::{ChildGuard, TempDir, free_port, wait_for_port};

pub struct RedisServer {
    pub port: u16,
    process: Option<ChildGuard>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts redis-server (no persistence) on a free port and waits until it accepts.
    pub fn start() -> Self {
        let dir = TempDir::new("redis");
        let mut server = Self {
            port: free_port(),
            process: None,
            dir,
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

    /// Stops the server (its data is lost: tests of outages restart an empty Redis unless they
    /// saved it).
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let process = ChildGuard::spawn(
            "redis-server",
            Command::new("redis-server")
                .args(["--port", &self.port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(self.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_for_port(self.addr(), Duration::from_secs(10));
        self.process = Some(process);
    }

    /// Runs `redis-cli` against the server and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(output.status.success(), "redis-cli {args:?} failed");
        String::from_utf8(output.stdout).expect("utf-8 from redis-cli")
    }
}
