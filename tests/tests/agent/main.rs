//! The agent as operators run it: start-up and its errors, metrics, the systemd sandbox and
//! the web console in a real browser.

mod console;
mod errors;
mod metrics;
mod service;
mod start;
