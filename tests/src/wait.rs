//! Waiting for a condition with a deadline: the tests wait for what they need to see, never
//! for a fixed time.

use std::{
    future::Future,
    time::{Duration, Instant},
};

/// How often a condition is checked again.
const RECHECK: Duration = Duration::from_millis(20);

/// Checks `condition` until it holds; panics after `timeout`, naming `what`.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    wait_for(timeout, what, || condition().then_some(()))
}

/// Calls `probe` until it gives a value, and returns that; panics after `timeout`, naming
/// `what`.
#[track_caller]
pub fn wait_for<T>(timeout: Duration, what: &str, probe: impl FnMut() -> Option<T>) -> T {
    probe_within(timeout, probe)
        .unwrap_or_else(|| panic!("waited {timeout:?} in vain until {what}"))
}

/// Calls `probe` until it gives a value or `timeout` has passed, for callers that explain a
/// timeout themselves.
pub fn probe_within<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(RECHECK);
    }
}

/// [`wait_for`] for a probe that must be awaited, on a tokio runtime.
pub async fn wait_for_async<T, F>(timeout: Duration, what: &str, mut probe: impl FnMut() -> F) -> T
where
    F: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "waited {timeout:?} in vain until {what}"
        );
        tokio::time::sleep(RECHECK).await;
    }
}
