//! A real redis-server on a free loopback port, on the host or inside a test's network
//! namespace, stopped when dropped.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    netns::Netns,
    process::{ChildGuard, TempDir, free_port},
    wait::wait_until,
};

/// The password a TLS server wants.
const TLS_PASSWORD: &str = "flowmon-test-secret";

pub struct RedisServer {
    pub port: u16,
    /// The network namespace it runs in; the host's when `None`.
    netns: Option<String>,
    /// Keeps its data across `stop` and `restart` (append-only file, fsync on every write).
    persistent: bool,
    /// Serves TLS only, with a certificate of a CA of its own, and wants [`TLS_PASSWORD`].
    tls: bool,
    process: Option<ChildGuard>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts redis-server (no persistence) on a free loopback port and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(None, false, false)
    }

    /// The same inside `netns`, where only processes of that namespace reach it.
    pub fn start_in(netns: &Netns) -> Self {
        Self::start_with(Some(netns.name.clone()), false, false)
    }

    /// Inside `netns`, keeping its data across a stop and a restart, as a production Redis
    /// with an append-only file does.
    pub fn start_persistent_in(netns: &Netns) -> Self {
        Self::start_with(Some(netns.name.clone()), true, false)
    }

    /// Serving TLS only (a certificate for 127.0.0.1 from a CA made for it, see
    /// [`RedisServer::ca_file`]) and asking for a password, which [`RedisServer::url`] holds.
    pub fn start_tls() -> Self {
        Self::start_with(None, false, true)
    }

    fn start_with(netns: Option<String>, persistent: bool, tls: bool) -> Self {
        let dir = TempDir::new("redis");
        if tls {
            make_certificates(dir.path());
        }
        let mut server = Self {
            port: free_port(),
            netns,
            persistent,
            tls,
            process: None,
            dir,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        if self.tls {
            format!("rediss://:{TLS_PASSWORD}@127.0.0.1:{}", self.port)
        } else {
            format!("redis://127.0.0.1:{}", self.port)
        }
    }

    /// The certificate of the CA that signed a TLS server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
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
        let port = self.port.to_string();
        let file = |name: &str| self.dir.path().join(name).display().to_string();
        let listen: Vec<String> = if self.tls {
            [
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-cert-file",
                &file("server.crt"),
                "--tls-key-file",
                &file("server.key"),
                "--tls-ca-cert-file",
                &file("ca.crt"),
                "--tls-auth-clients",
                "no",
                "--requirepass",
                TLS_PASSWORD,
            ]
            .map(String::from)
            .to_vec()
        } else {
            vec!["--port".into(), port.clone()]
        };
        let process = ChildGuard::spawn(
            "redis-server",
            self.command("redis-server")
                .args(&listen)
                .args(["--bind", "127.0.0.1", "--save", ""])
                .args(appendonly)
                .arg("--dir")
                .arg(self.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        self.process = Some(process);
        wait_until(Duration::from_secs(10), "redis-server answers PING", || {
            self.try_cli(&["ping"])
                .is_some_and(|out| out.trim() == "PONG")
        });
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let mut command = self.command("redis-cli");
        command.args(["-p", &self.port.to_string()]);
        if self.tls {
            command
                .arg("--tls")
                .arg("--cacert")
                .arg(self.ca_file())
                .args(["-a", TLS_PASSWORD, "--no-auth-warning"]);
        }
        let output = command.args(args).output().ok()?;
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

/// A CA, and a certificate for 127.0.0.1 that it signed, in `dir` (`ca.crt`, `server.crt`,
/// `server.key`), made with openssl.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let key = ["-newkey", "rsa:2048", "-nodes"];
    openssl(
        &[
            &["req", "-x509", "-days", "1", "-subj", "/CN=flowmon test CA"][..],
            &key,
            &["-keyout", "ca.key", "-out", "ca.crt"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-subj", "/CN=127.0.0.1"][..],
            &key,
            &["-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        "server.crt",
        "-extfile",
        "server.ext",
    ]);
}
