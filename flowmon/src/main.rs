use clap::Parser as _;
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
    let cli = Cli::parse();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(async {
                let settings = cli.settings.merged_with_file(cli.config.as_deref())?;
                match cli.command {
                    None => flowmon::agent::run(settings).await,
                    Some(Command::Replay { file }) => {
                        flowmon::snare::replay::run(&settings, &file).await
                    }
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
