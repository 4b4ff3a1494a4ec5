//! SNARE sensors report to flowmon as they did to Tanner 0.6.0 (`docs/snare.md`, the spec in
//! `shared/spec/snare-sessions.md`).
//!
//! - [`event`]: validation, lenient and bounded: every body that parses as JSON is an event.
//! - [`detection`]: the ten attack scanners and their orders; the answer's payload comes from
//!   [`crate::emulation`].
//! - [`dorks`]: the hidden links SNARE plants.
//! - [`session`]: the session table: identity with the cookie fix, expiry, limits.
//! - [`Service`]: the HTTP service SNARE calls; [`replay`]: the same on a logged event stream.
//!
//! Ended sessions are handed on whole, as [`Session`]s, through a `tokio::sync::mpsc` channel
//! that the caller owns: for the session analyzer.

mod connections;
pub mod detection;
pub mod dorks;
pub mod event;
mod event_log;
mod pipeline;
pub mod python_json;
pub mod replay;
mod sensors;
mod service;
pub mod session;
pub mod tanner_time;
mod wire;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

pub use detection::AttackType;
pub use pipeline::Stats;
pub use service::{LiveSessionTable, Service};
pub use session::{PathEntry, Session, SessionLimits};
pub use wire::{Payload, TANNER_VERSION};

use crate::{emulation::EmulationConfig, store::RedisTarget};

/// A good capacity for the channel of ended sessions.
pub const HANDOFF_CAPACITY: usize = 1024;

/// Every address, on the port SNARE hard-codes for Tanner.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8090";
/// As many as systemd's default soft limit of open files, before flowmon raises it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Far beyond any event SNARE sends (a request's headers, cookies and form fields).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;
/// How long SNARE itself waits for an answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings of the SNARE service and of replay.
#[derive(Clone, Debug, PartialEq)]
pub struct SnareConfig {
    /// Where the service listens (the service only).
    pub listen: SocketAddr,
    /// Connections open at once (the service only); beyond, the least recently active one
    /// is closed for a new one.
    pub max_connections: usize,
    /// Longest a request may take, from its first byte to its answer (the service only).
    pub request_timeout: Duration,
    /// Larger event bodies get 413; longer replayed lines are skipped.
    pub max_event_bytes: usize,
    pub limits: SessionLimits,
    /// The JSON-lines event log, if any.
    pub event_log: Option<PathBuf>,
    /// How attacks are answered.
    pub emulation: EmulationConfig,
    /// Where the dorks sets are (the service only); `None` with `--no-redis`.
    pub redis: Option<RedisTarget>,
}
