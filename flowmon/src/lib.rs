//! flowmon: a kernel-accelerated flow monitor and honeypot session analyzer.
//!
//! - [`datapath`]: the kernel half as seen from userspace (load, attach, read the maps).
//! - [`flow`]: flows merged from the kernel's control blocks, their lifecycle and records.
//! - [`sinks`]: where flow records go; [`store`]: Redis, its connections and the spool.
//! - [`snare`]: Tanner's protocol for SNARE sensors, sessions and detection.
//! - [`analyzer`]: ended sessions analysed, joined with flows and stored; [`api`]: Tanner's
//!   read API over them.
//! - [`metrics`]: the Prometheus endpoint.
//! - [`config`]: settings checked into each part's configuration; [`agent`] and [`replay`]:
//!   the commands that run the parts, each a [`lifecycle::Part`].

pub mod agent;
pub mod analyzer;
pub mod api;
pub mod config;
pub mod console;
pub mod datapath;
pub mod emulation;
pub mod flow;
pub mod lifecycle;
pub mod metrics;
pub mod replay;
pub mod sinks;
pub mod snare;
pub mod store;
