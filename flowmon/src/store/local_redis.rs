//! A redis-server of flowmon's own, for a first run on a machine where nothing answers at the
//! default Redis URL: started with its data under flowmon's state directory, and stopped when
//! flowmon stops. A thread of its own starts it, so that the kernel ends it too if flowmon is
//! killed (a parent-death signal follows the thread that made the child).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::{fs::DirBuilderExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use thiserror::Error;

/// The server's program, found on the PATH (`cargo xtask setup` installs Debian's).
const PROGRAM: &str = "redis-server";
/// How long the server may take to answer after it starts, and to exit when told to.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a check of the address may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRedisConfig {
    /// A loopback address: the default URL's.
    pub addr: SocketAddr,
    /// Its data: `<--state-dir>/redis`.
    pub dir: PathBuf,
}

#[derive(Debug, Error)]
pub enum LocalRedisError {
    #[error("{PROGRAM} is not installed (cargo xtask setup installs it)")]
    NotInstalled,
    #[error("cannot start {PROGRAM}: {0}")]
    Start(std::io::Error),
    #[error("{PROGRAM} did not answer on {addr} within {START_TIMEOUT:?}; see {}", log.display())]
    NoAnswer { addr: SocketAddr, log: PathBuf },
    #[error("{PROGRAM} exited at start ({status}); see {}", log.display())]
    Exited {
        status: std::process::ExitStatus,
        log: PathBuf,
    },
}

/// The running server.
pub struct LocalRedis {
    config: LocalRedisConfig,
    stop: mpsc::Sender<()>,
    supervisor: JoinHandle<()>,
}

/// Whether anything accepts connections at `addr`.
pub async fn answers(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(CHECK_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

impl LocalRedis {
    /// Starts the server and waits until it answers PING.
    pub async fn start(config: LocalRedisConfig) -> Result<Self, LocalRedisError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.dir)
            .map_err(LocalRedisError::Start)?;
        let (ready, started) = mpsc::sync_channel(1);
        let (stop, stopped) = mpsc::channel();
        let supervised = config.clone();
        let supervisor = std::thread::Builder::new()
            .name("local-redis".into())
            .spawn(move || supervise(&supervised, &ready, &stopped))
            .map_err(LocalRedisError::Start)?;
        let outcome = tokio::task::spawn_blocking(move || started.recv())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| {
                Err(LocalRedisError::NoAnswer {
                    addr: config.addr,
                    log: log_file(&config.dir),
                })
            });
        match outcome {
            Ok(()) => Ok(Self {
                config,
                stop,
                supervisor,
            }),
            Err(err) => {
                let _ = supervisor.join();
                Err(err)
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Stops the server: SIGTERM, on which Redis writes its data and exits; SIGKILL if it has
    /// not within [`STOP_TIMEOUT`].
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::task::spawn_blocking(move || self.supervisor.join()).await;
    }
}

fn log_file(dir: &Path) -> PathBuf {
    dir.join("redis-server.log")
}

/// Runs on the supervisor thread: starts the server, says when it answers, and ends it when
/// told to (or when the sender is gone).
fn supervise(
    config: &LocalRedisConfig,
    ready: &mpsc::SyncSender<Result<(), LocalRedisError>>,
    stop: &mpsc::Receiver<()>,
) {
    let mut child = match spawn(config) {
        Ok(child) => child,
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    let deadline = Instant::now() + START_TIMEOUT;
    let started = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Err(LocalRedisError::Exited {
                status,
                log: log_file(&config.dir),
            });
        }
        if pong(config.addr) {
            break Ok(());
        }
        if Instant::now() >= deadline {
            break Err(LocalRedisError::NoAnswer {
                addr: config.addr,
                log: log_file(&config.dir),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let failed = started.is_err();
    let _ = ready.send(started);
    if !failed {
        let _ = stop.recv();
    }
    terminate(&mut child);
}

fn spawn(config: &LocalRedisConfig) -> Result<Child, LocalRedisError> {
    let mut command = Command::new(PROGRAM);
    command
        .arg("--bind")
        .arg(config.addr.ip().to_string())
        .arg("--port")
        .arg(config.addr.port().to_string())
        .arg("--dir")
        .arg(&config.dir)
        .arg("--logfile")
        .arg(log_file(&config.dir))
        // Every write in the append-only file, flushed each second; no snapshots besides.
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ])
        .args(["--daemonize", "no", "--protected-mode", "yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: runs in the child between fork and exec and only calls prctl, which is
    // async-signal-safe; it touches no memory of the parent's.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => LocalRedisError::NotInstalled,
        _ => LocalRedisError::Start(err),
    })
}

/// Whether a Redis answers PING at `addr`.
fn pong(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, CHECK_TIMEOUT) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(CHECK_TIMEOUT));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}

fn terminate(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::warn!("{PROGRAM} did not stop within {STOP_TIMEOUT:?}: killed");
    let _ = child.kill();
    let _ = child.wait();
}
