//! Child processes that die with the test: killed and reaped when dropped, also on panic.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use crate::wait::{wait_for, wait_until};

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct ChildGuard {
    pub child: Child,
    name: String,
}

impl ChildGuard {
    pub fn spawn(name: &str, command: &mut Command) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {name} ({command:?}): {err}"));
        Self {
            child,
            name: name.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) and waits up to `timeout` for the exit status.
    pub fn signal_and_wait(&mut self, signal: i32, timeout: Duration) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        self.wait(timeout)
    }

    /// Waits up to `timeout` for the exit status.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let what = format!("{} exits", self.name);
        wait_for(timeout, &what, || {
            self.child.try_wait().expect("wait for child")
        })
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind an ephemeral loopback port")
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) {
    wait_until(timeout, &format!("something listens on {addr}"), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
    });
}

/// The `flowmon` binary of this build (`cargo xtask test` builds it before the tests run).
pub fn flowmon_binary() -> PathBuf {
    // Test executables live in target/<profile>/deps; the binary in target/<profile>.
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable inside target/<profile>/deps");
    let binary = profile_dir.join("flowmon");
    assert!(
        binary.exists(),
        "{} missing: build it first (`cargo build -p flowmon`, which `cargo xtask test` does)",
        binary.display()
    );
    binary
}

/// A temporary directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("flowmon-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A directory on the host's bpffs for one flowmon's pins, removed (with whatever a killed
/// flowmon left pinned) when dropped.
pub struct PinDir(pub PathBuf);

impl PinDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(PathBuf::from(format!(
            "/sys/fs/bpf/flowmon-test-{label}-{}-{n}",
            std::process::id()
        )))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        // Unpinning the links detaches the programs; the namespaces go with the test anyway.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `flowmon <args> replay <input>` to the end and returns what it printed (one session a
/// line); panics with its standard error when it fails.
pub fn flowmon_replay(args: &[&str], input: &Path) -> String {
    flowmon_replay_with_env(&[], args, input)
}

/// [`flowmon_replay`] with `env` added to flowmon's environment.
pub fn flowmon_replay_with_env(env: &[(&str, &Path)], args: &[&str], input: &Path) -> String {
    let output = Command::new(flowmon_binary())
        .envs(env.iter().copied())
        .args(args)
        .arg("replay")
        .arg(input)
        .output()
        .expect("run flowmon replay");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("replay prints UTF-8")
}
