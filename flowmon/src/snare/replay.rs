//! `flowmon replay FILE`: a Tanner or T-Pot event log (JSON lines) fed through validation,
//! sessions and detection on the logged times. Before each event, the sessions idle for longer
//! than the timeout at that event's time end; at the end of the log, every session ends.
//!
//! A line that is no event, or whose `timestamp` is missing or unreadable, is skipped and
//! counted; so is a line longer than `--max-event-bytes`.
//!
//! The command that prints, analyses and stores what a replay ends is `crate::replay`.

use anyhow::Result;
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt as _},
    sync::mpsc,
};

use super::{SnareConfig, event::Event, pipeline::Pipeline, session::Session};
use crate::{emulation::EmulationConfig, metrics::SnareMetrics};

/// What a replay did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub events: u64,
    pub skipped: u64,
    pub sessions: u64,
}

/// Replays the event log `input`; ended sessions go to `ended`.
pub async fn replay(
    mut input: impl AsyncBufRead + Unpin,
    config: &SnareConfig,
    ended: mpsc::Sender<Session>,
) -> Result<ReplayReport> {
    // A replay serves no metrics: its report says what it did. Its sensors are added to
    // `snare_ids` with their sessions. It answers nobody, so it emulates nothing (an RFI fetch
    // of a months-old URL least of all) and plants no dorks.
    let replaying = SnareConfig {
        emulation: EmulationConfig::none(),
        redis: None,
        ..config.clone()
    };
    let (pipeline, event_log) = Pipeline::open(&replaying, ended, None, SnareMetrics::default())?;
    let mut report = ReplayReport::default();
    let mut line = Vec::new();
    while let Some(whole) = read_line(&mut input, config.max_event_bytes, &mut line).await? {
        if whole && line.trim_ascii().is_empty() {
            continue;
        }
        let timed = whole
            .then(|| Event::parse(&line).ok())
            .flatten()
            .and_then(|event| Some((event.timestamp?, event)));
        let Some((time, event)) = timed else {
            report.skipped += 1;
            continue;
        };
        pipeline.sweep(time).await;
        pipeline.handle(event, time).await;
        report.events += 1;
    }
    pipeline.end_all().await;
    let stats = pipeline.stats();
    report.sessions = stats.expired + stats.evicted + stats.full + stats.shut_down;
    drop(pipeline);
    if let Some(event_log) = event_log {
        event_log.finish().await;
    }
    Ok(report)
}

/// Reads the next line (without its newline) into `line`, keeping at most `max` bytes: `None`
/// at the end of the input, else whether the line was whole.
async fn read_line(
    input: &mut (impl AsyncBufRead + Unpin),
    max: usize,
    line: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    line.clear();
    let mut whole = true;
    let mut started = false;
    loop {
        let buffer = input.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(started.then_some(whole));
        }
        started = true;
        let newline = buffer.iter().position(|&b| b == b'\n');
        let part = &buffer[..newline.unwrap_or(buffer.len())];
        if whole && line.len() + part.len() <= max {
            line.extend_from_slice(part);
        } else {
            whole = false;
        }
        let used = newline.map_or(buffer.len(), |at| at + 1);
        input.consume(used);
        if newline.is_some() {
            return Ok(Some(whole));
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::BufReader;

    use super::*;

    #[tokio::test]
    async fn lines_are_read_within_the_limit() {
        let input = b"short\n0123456789abcdef\n\nlast".as_slice();
        let mut reader = BufReader::with_capacity(4, input);
        let mut line = Vec::new();
        let mut lines = Vec::new();
        while let Some(whole) = read_line(&mut reader, 10, &mut line).await.unwrap() {
            lines.push(whole.then(|| String::from_utf8(line.clone()).unwrap()));
        }
        let expected = [Some("short"), None, Some(""), Some("last")];
        assert_eq!(lines, expected.map(|line| line.map(str::to_owned)));
    }
}
