//! What happens to each event, whether it came over HTTP or from a replayed log: detection, the
//! session table, the event log, and the hand-off of ended sessions.

use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::Result;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::{metrics::SnareMetrics, store::Store};

use super::{
    SnareConfig,
    detection::Detector,
    event::Event,
    event_log::{EventLog, EventLogWriter},
    sensors::Sensors,
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

pub struct Pipeline {
    detector: Detector,
    sessions: Mutex<SessionTable>,
    event_log: Option<EventLog>,
    /// Where sensors are added to `snare_ids` from their first event, if anywhere.
    sensors: Option<Sensors>,
    ended: mpsc::Sender<Session>,
    metrics: SnareMetrics,
}

impl Pipeline {
    /// A pipeline handing ended sessions to `ended`, adding sensors through `store` (if any)
    /// and counting into `metrics`, with the writer of its event log if it has one.
    pub fn open(
        config: &SnareConfig,
        ended: mpsc::Sender<Session>,
        store: Option<Store>,
        metrics: SnareMetrics,
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
            sensors: store.map(Sensors::new),
            ended,
            metrics,
        };
        Ok((pipeline, writer))
    }

    /// Detects, files and logs one event; `now` is flowmon's clock (epoch seconds).
    pub async fn handle(&self, event: Event, now: f64) -> Answer {
        let attack = self.detector.detect(&event).attack;
        if let Some(sensors) = &self.sensors {
            sensors.saw(event.uuid.as_deref());
        }
        let recorded = {
            let mut table = self.table();
            let recorded = table.record(&event, attack, now);
            self.metrics.live_sessions(table.len());
            recorded
        };
        let answer = Answer {
            attack,
            sess_uuid: recorded.sess_uuid,
        };
        self.metrics.event(attack);
        if let Some(log) = &self.event_log {
            let time = event.time(now);
            log.write(event, answer, time).await;
        }
        self.hand_on(recorded.ended).await;
        answer
    }

    /// Counts a body that was no event.
    pub fn reject(&self) {
        self.metrics.rejected();
    }

    /// Ends the sessions idle too long at `now`.
    pub async fn sweep(&self, now: f64) {
        let expired = {
            let mut table = self.table();
            let expired = table.sweep(now);
            self.metrics.live_sessions(table.len());
            expired
        };
        self.hand_on(expired.into_iter().map(|s| (s, EndReason::Expired)))
            .await;
    }

    /// Ends every live session.
    pub async fn end_all(&self) {
        let sessions = self.table().end_all();
        self.metrics.live_sessions(0);
        self.hand_on(sessions.into_iter().map(|s| (s, EndReason::Shutdown)))
            .await;
    }

    pub fn stats(&self) -> Stats {
        let ended = |reason| self.metrics.ended_count(reason);
        Stats {
            events: self.metrics.events_count(),
            rejected: self.metrics.rejected_count(),
            live_sessions: self.table().len() as u64,
            expired: ended(EndReason::Expired),
            evicted: ended(EndReason::Evicted),
            full: ended(EndReason::Full),
            shut_down: ended(EndReason::Shutdown),
        }
    }

    /// Input cannot make the table panic; were it to anyway, later events still get answers
    /// instead of a poisoned lock.
    fn table(&self) -> MutexGuard<'_, SessionTable> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn hand_on(&self, ended: impl IntoIterator<Item = (Session, EndReason)>) {
        for (session, reason) in ended {
            self.metrics.ended(reason);
            if self.ended.send(session).await.is_err() {
                tracing::debug!("no one takes ended sessions any more");
            }
        }
    }
}
