//! `cargo xtask setup`: everything a fresh Debian 12 machine lacks to build, run and test
//! flowmon. Each step checks first and only acts when something is missing, so running it
//! again costs a few process starts.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Debian packages: LLVM 22 and the libraries bpf-linker links against, the Redis server and
/// the tools the system tests drive (ip, ping, openssl for a TLS Redis's certificates,
/// systemd-analyze, systemd-sysusers and strace for the service unit's sandbox, Chromium with
/// its WebDriver and Firefox for the console's, nfdump's nfcapd and tshark as IPFIX collectors; tshark's
/// debconf question takes its default, no setuid dumpcap, since packages install
/// noninteractively).
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "redis-server",
    "redis-tools",
    "iproute2",
    "iputils-ping",
    "openssl",
    "systemd",
    "strace",
    "chromium",
    "chromium-driver",
    "firefox-esr",
    "nfdump",
    "tshark",
];

/// The peer flow exporter the traffic benchmark compares against. Its Debian service does
/// nothing until an instance is configured.
const PEER_TOOLS: &[&str] = &["softflowd"];

/// The nightly toolchain aya-build compiles the kernel crate with; LLVM 22 like bpf-linker.
const NIGHTLY: &str = "nightly";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn run() -> Result<()> {
    install_packages(PACKAGES)?;
    install_rust_src()?;
    install_bpf_linker()?;
    install_geckodriver()?;
    mount_bpffs()?;
    Ok(())
}

/// What the traffic benchmark needs besides: the peer it compares against.
pub fn install_peer_tools() -> Result<()> {
    install_packages(PEER_TOOLS)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn run_checked(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

/// A command as root: sudo when we are not.
fn privileged(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut command = Command::new("sudo");
        command.arg(program);
        command
    }
}

fn install_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| {
            // `dpkg -s` also lists removed packages; ask for the install status itself.
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", package])
                .output()
                .is_ok_and(|out| out.stdout.starts_with(b"install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    run_checked(privileged("apt-get").args(["update", "-q"]))?;
    run_checked(
        privileged("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
}

fn install_rust_src() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", NIGHTLY])
        .output()
        .context("rustup is needed to build the kernel crate")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.starts_with("rust-src"))
    {
        return Ok(());
    }
    eprintln!("setup: adding rust-src to the {NIGHTLY} toolchain");
    run_checked(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        NIGHTLY,
    ]))
}

fn cargo_bin(name: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    home.join("bin").join(name)
}

fn install_bpf_linker() -> Result<()> {
    // A linker built against another LLVM than the nightly's cannot link its bitcode.
    cargo_install(
        "bpf-linker",
        &["--no-default-features", "--features", "llvm-22"],
        |command| command.env("LLVM_PREFIX", LLVM_PREFIX),
    )
}

/// Firefox's WebDriver, which Debian 12 does not package, from crates.io.
fn install_geckodriver() -> Result<()> {
    cargo_install("geckodriver", &["--version", "0.37.1"], |command| command)
}

/// `cargo install --locked` of `tool` (about two minutes each), unless it is there.
fn cargo_install(
    tool: &str,
    args: &[&str],
    prepare: impl FnOnce(&mut Command) -> &mut Command,
) -> Result<()> {
    if succeeds(tool, &["--version"]) || cargo_bin(tool).exists() {
        return Ok(());
    }
    eprintln!("setup: building {tool} (about two minutes)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["install", tool, "--locked"]).args(args);
    run_checked(prepare(&mut command))
}

fn mount_bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("read /proc/mounts")?;
    if mounts
        .lines()
        .any(|line| line.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        return Ok(());
    }
    eprintln!("setup: mounting bpffs on /sys/fs/bpf");
    run_checked(privileged("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}
