//! The JSON-lines event log (spec section 6.2), what T-Pot's pipeline reads: per event, the
//! validated event, the answer as `response_msg` and the event's time as `timestamp`.
//!
//! Requests hand their records to a writer thread through a bounded channel, so no request waits
//! on the disk unless the writer falls a whole channel behind.

use std::{path::Path, thread::JoinHandle};

use anyhow::{Context as _, Result};
use serde::{Serialize, Serializer};
use tokio::sync::mpsc;

use super::{event::Event, tanner_time, wire::Answer};
use crate::sinks::json_lines::JsonLines;

/// Records waiting for the writer.
const BACKLOG: usize = 16 * 1024;
/// Records written (and flushed) together at most.
const BATCH: usize = 1024;

#[derive(Serialize)]
struct Record {
    #[serde(flatten)]
    event: Event,
    response_msg: Answer,
    #[serde(serialize_with = "tanner_time")]
    timestamp: f64,
}

fn tanner_time<S: Serializer>(seconds: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&tanner_time::format(*seconds))
}

/// Where events are logged; the log is complete once every handle is dropped and
/// [`EventLogWriter::finish`] has returned.
pub struct EventLog {
    records: mpsc::Sender<Record>,
}

pub struct EventLogWriter {
    thread: JoinHandle<()>,
}

impl EventLog {
    /// Appends to `path`.
    pub fn open(path: &Path) -> Result<(EventLog, EventLogWriter)> {
        let mut file = JsonLines::open(path)?;
        let (records, mut incoming) = mpsc::channel(BACKLOG);
        let path = path.to_owned();
        let thread = std::thread::Builder::new()
            .name("snare-event-log".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(BATCH);
                let mut failing = false;
                while incoming.blocking_recv_many(&mut batch, BATCH) > 0 {
                    match file.write_all(&batch) {
                        // Once per failing stretch, not once per event.
                        Err(err) if !failing => {
                            tracing::error!(path = %path.display(), "event log: {err:#}");
                            failing = true;
                        }
                        Err(_) => {}
                        Ok(()) => failing = false,
                    }
                    batch.clear();
                }
            })
            .context("cannot start the event log thread")?;
        Ok((EventLog { records }, EventLogWriter { thread }))
    }

    pub async fn write(&self, event: Event, answer: Answer, time: f64) {
        let record = Record {
            event,
            response_msg: answer,
            timestamp: time,
        };
        // The writer stops only after every handle is gone, so the channel is open.
        let _ = self.records.send(record).await;
    }
}

impl EventLogWriter {
    /// Waits until everything logged is written out.
    pub async fn finish(self) {
        let joined = tokio::task::spawn_blocking(move || self.thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!("the event log writer panicked");
        }
    }
}
