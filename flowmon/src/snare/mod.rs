//! SNARE sensors report to flowmon as they did to Tanner 0.6.0 (`docs/snare.md`, the spec in
//! `shared/spec/snare-sessions.md`).
//!
//! - [`event`]: validation, lenient and bounded: every body that parses as JSON is an event.
//! - [`detection`]: the ten attack scanners and their orders.
//! - [`session`]: the session table: identity with the cookie fix, expiry, limits.
//! - [`Service`]: the HTTP service SNARE calls; [`replay`]: the same on a logged event stream.
//!
//! Ended sessions are handed on whole, as [`Session`]s, through a `tokio::sync::mpsc` channel
//! that the caller owns: for the session analyzer.

mod clock;
pub mod detection;
pub mod event;
mod event_log;
mod pipeline;
pub mod replay;
mod service;
pub mod session;
mod wire;

use std::path::PathBuf;

use anyhow::Result;

pub use detection::AttackType;
pub use pipeline::Stats;
pub use service::Service;
pub use session::{PathEntry, Session, SessionLimits};
pub use wire::TANNER_VERSION;

use crate::config::Settings;

/// A good capacity for the channel of ended sessions.
pub const HANDOFF_CAPACITY: usize = 1024;

/// The settings of the SNARE service and of replay.
#[derive(Clone, Debug, PartialEq)]
pub struct SnareConfig {
    /// Connections served at once (the service only); more wait in the listen backlog.
    pub max_connections: usize,
    /// Larger event bodies get 413; longer replayed lines are skipped.
    pub max_event_bytes: usize,
    pub limits: SessionLimits,
    /// The JSON-lines event log, if any.
    pub event_log: Option<PathBuf>,
}

impl SnareConfig {
    pub fn from_settings(settings: &Settings) -> Result<Self> {
        Ok(Self {
            max_connections: settings.snare_max_connections()?,
            max_event_bytes: settings.max_event_bytes()?,
            limits: SessionLimits::new(
                settings.session_timeout()?.as_secs_f64(),
                settings.max_sessions()?,
            ),
            event_log: settings.event_log.clone(),
        })
    }
}
