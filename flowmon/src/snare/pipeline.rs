//! What happens to each event, whether it came over HTTP or from a replayed log: detection, the
//! session table, the event log, and the hand-off of ended sessions.

use std::sync::{
    Mutex, MutexGuard, PoisonError,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use anyhow::Result;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{
    SnareConfig,
    detection::Detector,
    event::Event,
    event_log::{EventLog, EventLogWriter},
    session::{EndReason, Session, SessionTable},
    wire::Answer,
};

/// Counts since the pipeline started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Events answered with a detection.
    pub events: u64,
    /// Bodies that were not JSON (or not UTF-8).
    pub rejected: u64,
    pub live_sessions: u64,
    /// Sessions ended, by [`EndReason`].
    pub expired: u64,
    pub evicted: u64,
    pub full: u64,
    pub shut_down: u64,
}

#[derive(Default)]
struct Counters {
    events: AtomicU64,
    rejected: AtomicU64,
    expired: AtomicU64,
    evicted: AtomicU64,
    full: AtomicU64,
    shut_down: AtomicU64,
}

impl Counters {
    fn ended(&self, reason: EndReason) -> &AtomicU64 {
        match reason {
            EndReason::Expired => &self.expired,
            EndReason::Evicted => &self.evicted,
            EndReason::Full => &self.full,
            EndReason::Shutdown => &self.shut_down,
        }
    }
}

pub struct Pipeline {
    detector: Detector,
    sessions: Mutex<SessionTable>,
    event_log: Option<EventLog>,
    ended: mpsc::Sender<Session>,
    counters: Counters,
}

impl Pipeline {
    /// A pipeline handing ended sessions to `ended`, with the writer of its event log if it
    /// has one.
    pub fn open(
        config: &SnareConfig,
        ended: mpsc::Sender<Session>,
    ) -> Result<(Pipeline, Option<EventLogWriter>)> {
        let (event_log, writer) = match &config.event_log {
            Some(path) => {
                let (log, writer) = EventLog::open(path)?;
                (Some(log), Some(writer))
            }
            None => (None, None),
        };
        let pipeline = Pipeline {
            detector: Detector::new(),
            sessions: Mutex::new(SessionTable::new(config.limits)),
            event_log,
            ended,
            counters: Counters::default(),
        };
        Ok((pipeline, writer))
    }

    /// Detects, files and logs one event; `now` is flowmon's clock (epoch seconds).
    pub async fn handle(&self, event: Event, now: f64) -> Answer {
        let attack = self.detector.detect(&event);
        let recorded = self.table().record(&event, attack, now);
        let answer = Answer {
            attack,
            sess_uuid: recorded.sess_uuid,
        };
        self.counters.events.fetch_add(1, Relaxed);
        if let Some(log) = &self.event_log {
            let time = event.time(now);
            log.write(event, answer, time).await;
        }
        self.hand_on(recorded.ended).await;
        answer
    }

    /// Counts a body that was no event.
    pub fn reject(&self) {
        self.counters.rejected.fetch_add(1, Relaxed);
    }

    /// Ends the sessions idle too long at `now`.
    pub async fn sweep(&self, now: f64) {
        let expired = self.table().sweep(now);
        self.hand_on(expired.into_iter().map(|s| (s, EndReason::Expired)))
            .await;
    }

    /// Ends every live session.
    pub async fn end_all(&self) {
        let sessions = self.table().end_all();
        self.hand_on(sessions.into_iter().map(|s| (s, EndReason::Shutdown)))
            .await;
    }

    pub fn stats(&self) -> Stats {
        let count = |counter: &AtomicU64| counter.load(Relaxed);
        let c = &self.counters;
        Stats {
            events: count(&c.events),
            rejected: count(&c.rejected),
            live_sessions: self.table().len() as u64,
            expired: count(&c.expired),
            evicted: count(&c.evicted),
            full: count(&c.full),
            shut_down: count(&c.shut_down),
        }
    }

    /// Input cannot make the table panic; were it to anyway, later events still get answers
    /// instead of a poisoned lock.
    fn table(&self) -> MutexGuard<'_, SessionTable> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn hand_on(&self, ended: impl IntoIterator<Item = (Session, EndReason)>) {
        for (session, reason) in ended {
            self.counters.ended(reason).fetch_add(1, Relaxed);
            if self.ended.send(session).await.is_err() {
                tracing::debug!("no one takes ended sessions any more");
            }
        }
    }
}
