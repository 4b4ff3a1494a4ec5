//! What happens to each event, whether it came over HTTP or from a replayed log: detection,
//! the session table, emulation of the attack, the event log, dorks, and the hand-off of ended
//! sessions.

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use anyhow::Result;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::{
    emulation::{self, Emulation, Kind},
    metrics::SnareMetrics,
    store::{Connection, Patience, Store},
};

use super::{
    SnareConfig,
    detection::{Detection, Detector},
    dorks::DorkPool,
    event::Event,
    event_log::{EventLog, EventLogWriter},
    sensors::Sensors,
    session::{EmulationContext, EndReason, Session, SessionTable},
    wire::{Answer, Payload},
};

/// The page an answer is shown in when the session has asked for none (Tanner's default).
const DEFAULT_PAGE: &str = "/index.html";

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
    emulation: Emulation,
    /// An emulated answer is held back at most this long (a `sleep` the attacker ran), well
    /// within the request's own timeout.
    max_delay: Duration,
    dorks: Arc<DorkPool>,
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
        let redis = config
            .redis
            .as_ref()
            .map(|redis| Connection::open(redis, Patience::READ))
            .transpose()?;
        let dorks = Arc::new(DorkPool::new(redis));
        if config.redis.is_some() {
            DorkPool::keep_loading(&dorks);
        }
        let pipeline = Pipeline {
            detector: Detector::new(),
            sessions: Mutex::new(SessionTable::new(config.limits)),
            emulation: Emulation::new(config.emulation.clone())?,
            max_delay: (config.request_timeout / 2).min(emulation::MAX_SLEEP),
            dorks,
            event_log,
            sensors: store.map(Sensors::new),
            ended,
            metrics,
        };
        Ok((pipeline, writer))
    }

    /// Detects, files, answers and logs one event; `now` is flowmon's clock (epoch seconds).
    pub async fn handle(&self, event: Event, now: f64) -> Answer {
        let detection = self.detector.detect(&event);
        let attack = detection.attack;
        if let Some(sensors) = &self.sensors {
            sensors.saw(event.uuid.as_deref());
        }
        if let Some(path) = &event.path {
            self.dorks.learn(path);
        }
        let emulator = attack
            .emulator()
            .filter(|&kind| self.emulation.enabled(kind) && !detection.params.is_empty());
        let (recorded, context) = {
            let mut table = self.table();
            let recorded = table.record(&event, attack, now);
            let context = emulator.and_then(|_| table.emulation(recorded.sess_uuid));
            self.metrics.live_sessions(table.len());
            (recorded, context)
        };
        let payload = match (emulator, context) {
            (Some(kind), Some(context)) => {
                self.emulate(kind, &detection, &event, now, recorded.sess_uuid, context)
                    .await
            }
            _ => None,
        };
        let answer = Answer {
            attack,
            payload,
            sess_uuid: recorded.sess_uuid,
        };
        self.metrics.event(attack);
        if let Some(log) = &self.event_log {
            let time = event.time(now);
            log.write(event, answer.clone(), time).await;
        }
        self.hand_on(recorded.ended).await;
        answer
    }

    /// The emulated result of the attack `detection` found, or `None` (type 1) when its
    /// emulator fails or overruns, which is counted.
    async fn emulate(
        &self,
        kind: Kind,
        detection: &Detection,
        event: &Event,
        now: f64,
        sess_uuid: uuid::Uuid,
        context: EmulationContext,
    ) -> Option<Payload> {
        let path = event.path.as_deref().unwrap_or("/");
        let attack = emulation::Attack {
            kind,
            params: &detection.params,
            path: path.split(['?', '#']).next().unwrap_or("/"),
            sensor: event.uuid.as_deref().unwrap_or_default(),
            now: event.time(now),
        };
        let result = self.emulation.emulate(&attack, &context.state).await;
        let held = context
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes();
        self.table().emulation_grew(sess_uuid, held);
        let emulated = match result {
            Ok(emulated) => emulated,
            Err(failure) => {
                self.metrics.emulation_failed(kind);
                tracing::debug!(attack = kind.name(), "no emulated answer: {failure}");
                return None;
            }
        };
        if !emulated.delay.is_zero() {
            tokio::time::sleep(emulated.delay.min(self.max_delay)).await;
        }
        Some(match emulated.answer {
            emulation::Answer::Content {
                value,
                page,
                headers,
            } => Payload::Content {
                value,
                page: page.then(|| context.page.unwrap_or_else(|| DEFAULT_PAGE.to_owned())),
                headers,
            },
            emulation::Answer::Status(status) => Payload::Status(status),
        })
    }

    /// The hidden links `/dorks` answers.
    pub fn dorks(&self) -> Vec<String> {
        self.dorks.choose(&mut fastrand::Rng::new())
    }

    /// The service's counts.
    pub fn metrics(&self) -> &SnareMetrics {
        &self.metrics
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

    /// Copies of the live sessions `keep` accepts, the most recently active first, at most
    /// `limit`; and the number of live sessions.
    pub fn recent(
        &self,
        keep: impl FnMut(&Session) -> bool,
        limit: usize,
    ) -> (Vec<Session>, usize) {
        let table = self.table();
        (table.recent(keep, limit), table.len())
    }

    /// A copy of the live session `sess_uuid` with the evidence of its emulation so far.
    pub fn live_session(&self, sess_uuid: &uuid::Uuid) -> Option<Session> {
        let (mut session, state) = {
            let table = self.table();
            let (session, state) = table.get(sess_uuid)?;
            (session.clone(), state)
        };
        // Not under the table's lock: an emulation may hold its state for milliseconds.
        if let Some(state) = state {
            let state = state.lock().unwrap_or_else(PoisonError::into_inner);
            session.emulation = state.evidence().clone();
        }
        Some(session)
    }

    pub fn live_by_sensor(&self) -> std::collections::BTreeMap<Option<String>, usize> {
        self.table().by_sensor()
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
