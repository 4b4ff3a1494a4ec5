//! `flowmon replay FILE`: an event log fed through the SNARE pipeline on its logged times
//! ([`crate::snare::replay`]); every session it ends is printed as a JSON line, then analysed
//! and stored in Redis (not with `--no-redis`).

use std::{io::Write as _, path::Path};

use anyhow::{Context as _, Result};
use tokio::{io::BufReader, sync::mpsc};

use crate::{
    analyzer,
    config::Config,
    snare::{HANDOFF_CAPACITY, Session, replay::replay},
};

pub async fn run(config: Config, file: &Path) -> Result<()> {
    let input = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let (analyse, analyzer) = match config.store {
        Some(store) => Some(analyzer::for_replay(config.analyzer, store).await?),
        None => None,
    }
    .unzip();
    let (ended, mut sessions) = mpsc::channel::<Session>(HANDOFF_CAPACITY);
    let printer = tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        while let Some(session) = sessions.blocking_recv() {
            serde_json::to_writer(&mut out, &session)?;
            out.write_all(b"\n")?;
            if let Some(analyse) = &analyse {
                analyse.blocking_send(session)?;
            }
        }
        out.flush()?;
        anyhow::Ok(())
    });
    let report = replay(BufReader::new(input), &config.snare, ended).await?;
    printer.await??;
    if let Some(analyzer) = analyzer {
        analyzer.finish().await;
    }
    tracing::info!(
        events = report.events,
        skipped = report.skipped,
        sessions = report.sessions,
        "replayed {}",
        file.display()
    );
    Ok(())
}
