//! flowmon's developer commands: `cargo xtask setup | run | test | bench`.
//!
//! xtask depends on nothing of flowmon's, so it builds on a machine that has none of what
//! flowmon needs yet; `setup` then installs that, idempotently.

mod setup;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing flowmon needs (Debian packages, the nightly's
    /// rust-src, bpf-linker for LLVM 22) and mount bpffs; does nothing that is already done.
    Setup,
    /// Build flowmon in release mode and run it as root: `cargo xtask run -- --iface eth0`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run every test of the workspace (unit, kernel, veth, Redis, HTTP).
    Test {
        /// Extra arguments for `cargo test` (a test name filter, `--nocapture`...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a benchmark and print its figures (see BENCHMARKS.md).
    Bench {
        #[arg(value_enum)]
        which: Vec<Bench>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Bench {
    /// Nanoseconds per packet under BPF_PROG_TEST_RUN against empty XDP and TC programs.
    Datapath,
    /// CPU, record lateness and memory of keeping 10k to 4M live flows at default settings.
    Drain,
    /// SNARE events per second and latency over loopback HTTP.
    Events,
    /// Sessions analysed and stored per second, and time to Redis.
    Analyzer,
    /// Real traffic over veth: CPU per packet and packets counted, flowmon (XDP or TC ingress)
    /// against softflowd.
    Traffic,
    /// The web console at 1M live flows: the flows page's latency, an open overview's CPU.
    Console,
    /// IPFIX records encoded and sent per second, and the CPU a poll adds with IPFIX on.
    Ipfix,
}

impl Bench {
    fn target(self) -> &'static str {
        match self {
            Self::Datapath => "datapath",
            Self::Drain => "drain",
            Self::Events => "events",
            Self::Analyzer => "analyzer",
            Self::Traffic => "traffic",
            Self::Console => "console",
            Self::Ipfix => "ipfix",
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let root = workspace_root();
    match cli.command {
        Task::Setup => setup::run(),
        Task::Run { args } => {
            setup::run()?;
            cargo(&root, &["build", "--release", "--package", "flowmon"])?;
            let binary = root.join("target/release/flowmon");
            let status = as_root(&binary).args(&args).status()?;
            if !status.success() {
                bail!("flowmon exited with {status}");
            }
            Ok(())
        }
        Task::Test { args } => {
            setup::run()?;
            // The system tests start the agent binary itself.
            cargo(&root, &["build", "--package", "flowmon"])?;
            let mut test = vec!["test", "--workspace", "--exclude", "flowmon-ebpf"];
            test.extend(args.iter().map(String::as_str));
            cargo(&root, &test)
        }
        Task::Bench { which } => {
            setup::run()?;
            cargo(&root, &["build", "--release", "--package", "flowmon"])?;
            let all = [
                Bench::Datapath,
                Bench::Drain,
                Bench::Events,
                Bench::Analyzer,
                Bench::Traffic,
                Bench::Console,
                Bench::Ipfix,
            ];
            let which = if which.is_empty() {
                &all[..]
            } else {
                &which[..]
            };
            if which.iter().any(|bench| matches!(bench, Bench::Traffic)) {
                setup::install_peer_tools()?;
            }
            for bench in which {
                cargo(
                    &root,
                    &[
                        "bench",
                        "--package",
                        "flowmon-tests",
                        "--bench",
                        bench.target(),
                    ],
                )?;
            }
            Ok(())
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// Runs cargo in the workspace with `args`, failing on a non-zero exit. The kernel programs
/// and the tests need root; cargo runs as the caller, who must be root (or use sudo).
fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// `program` run as root: directly when we are root, else through sudo.
fn as_root(program: &Path) -> Command {
    if setup::is_root() {
        Command::new(program)
    } else {
        let mut command = Command::new("sudo");
        command.arg(program);
        command
    }
}
