//! flowmon: a kernel-accelerated flow monitor and honeypot session analyzer.
//!
//! - [`datapath`]: the kernel half as seen from userspace (load, attach, read the maps).
//! - [`flow`]: flows merged from the kernel's control blocks, their lifecycle and records.
//! - [`sinks`]: where records go.
//! - [`agent`]: the daemon that wires them together.

pub mod agent;
pub mod analyzer;
pub mod config;
pub mod datapath;
pub mod flow;
pub mod metrics;
pub mod sinks;
pub mod snare;
pub mod store;
