//! Where records go: JSON-lines files and Redis.

pub mod json_lines;
pub mod redis;

use std::sync::Arc;

use anyhow::Result;

use crate::{
    flow::{peers::PeerFlows, record::FlowRecord},
    metrics::{Metrics, SinkLabel},
    store::StoreStats,
};

/// Every sink of flow records.
pub struct FlowSinks {
    pub log: Option<json_lines::JsonLines>,
    pub redis: Option<redis::RedisFlowSink>,
    /// This host's index of each peer's flows, for the session analyzer.
    pub peers: Option<Arc<PeerFlows>>,
    pub metrics: Arc<Metrics>,
    /// The store's counters when last carried into the metrics.
    last_store: StoreStats,
}

impl FlowSinks {
    pub fn new(
        log: Option<json_lines::JsonLines>,
        redis: Option<redis::RedisFlowSink>,
        peers: Option<Arc<PeerFlows>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            log,
            redis,
            peers,
            metrics,
            last_store: StoreStats::default(),
        }
    }

    /// Hands `records` to every sink. Redis comes first: its submission never fails, so a
    /// file error cannot keep records from it.
    pub fn write(&mut self, records: &[FlowRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if let Some(redis) = &self.redis {
            redis.write_all(records);
        }
        if let Some(peers) = &self.peers {
            peers.record(records);
        }
        if let Some(log) = &mut self.log {
            log.write_all(records)?;
            self.metrics
                .flows
                .records_written
                .get_or_create(&SinkLabel { sink: "flow_log" })
                .inc_by(records.len() as u64);
        }
        self.observe_store();
        Ok(())
    }

    /// Carries the Redis store's counters into the metrics.
    pub fn observe_store(&mut self) {
        let Some(redis) = &self.redis else { return };
        let stats = redis.stats();
        let flows = &self.metrics.flows;
        flows
            .records_written
            .get_or_create(&SinkLabel { sink: "redis" })
            .inc_by(stats.written.saturating_sub(self.last_store.written));
        flows.redis_errors.inc_by(
            stats
                .redis_errors
                .saturating_sub(self.last_store.redis_errors),
        );
        flows.spool_backlog.set(stats.spool_items as i64);
        self.last_store = stats;
    }
}
