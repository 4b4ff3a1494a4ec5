//! What the Redis store reports, whoever writes through it (flow records, sessions). The store
//! keeps its own counters; they are carried into the metrics at each scrape.

use std::sync::Mutex;

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

use crate::store::{Store, StoreStats};

#[derive(Default)]
pub struct StoreMetrics {
    writes: Counter,
    redis_errors: Counter,
    dropped: Counter,
    spool_backlog: Gauge,
    spool_bytes: Gauge,
    /// The store read at each scrape, and its counters at the previous one.
    watched: Mutex<Option<(Store, StoreStats)>>,
}

impl StoreMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "redis_writes",
            "Writes Redis acknowledged, one per flow record or session with its index updates \
             (one applied again after an unknown outcome counts again)",
            self.writes.clone(),
        );
        r.register(
            "redis_errors",
            "Failed Redis batches, whose writes went to the spool",
            self.redis_errors.clone(),
        );
        r.register(
            "redis_writes_dropped",
            "Writes lost: refused by a full or failing spool, or unreadable in it",
            self.dropped.clone(),
        );
        r.register(
            "spool_backlog",
            "Redis writes waiting in the on-disk spool",
            self.spool_backlog.clone(),
        );
        r.register(
            "spool_bytes",
            "Bytes of the on-disk spool",
            self.spool_bytes.clone(),
        );
    }

    /// Reads `store` at every scrape from now on ([`StoreMetrics::refresh`]).
    pub(super) fn watch(&self, store: Store) {
        *self.watched.lock().expect("store metrics lock") = Some((store, StoreStats::default()));
    }

    /// Carries the store's counters over by their increase since the last scrape.
    pub(super) fn refresh(&self) {
        let mut watched = self.watched.lock().expect("store metrics lock");
        let Some((store, last)) = watched.as_mut() else {
            return;
        };
        let now = store.stats();
        self.writes.inc_by(now.written.saturating_sub(last.written));
        self.redis_errors
            .inc_by(now.redis_errors.saturating_sub(last.redis_errors));
        self.dropped
            .inc_by(now.dropped.saturating_sub(last.dropped));
        self.spool_backlog.set(now.spool_items as i64);
        self.spool_bytes.set(now.spool_bytes as i64);
        *last = now;
    }
}
