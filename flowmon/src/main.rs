use flowmon::config::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::from_command_line();
    // Every setting is checked before anything is opened, bound, connected or pinned.
    let result = cli.config().and_then(|config| {
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(async {
            match cli.command {
                None => flowmon::agent::run(config).await,
                Some(Command::Replay { file }) => flowmon::replay::run(config, &file).await,
            }
        })
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("flowmon: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
