//! Where records go: JSON-lines files, Redis and IPFIX collectors.

pub mod ipfix;
pub mod json_lines;
pub mod redis;

use std::{path::PathBuf, sync::Arc};

use anyhow::Result;

use crate::{
    flow::{peers::PeerFlows, record::FlowRecord},
    metrics::{Metrics, SinkLabel},
};

/// Where the flow monitor's records go besides this host's own index of peers.
#[derive(Clone, Debug, Default)]
pub struct SinksConfig {
    /// The JSON-lines file (`--flow-log`).
    pub flow_log: Option<PathBuf>,
    /// How records are written to Redis; `None` with `--no-redis`.
    pub redis: Option<redis::FlowWrites>,
    /// IPFIX collectors (`--ipfix`); `None` without.
    pub ipfix: Option<ipfix::IpfixConfig>,
}

/// Every sink of flow records.
pub struct FlowSinks {
    pub log: Option<json_lines::JsonLines>,
    pub redis: Option<redis::RedisFlowSink>,
    /// This host's index of each peer's flows, for the session analyzer.
    pub peers: Option<Arc<PeerFlows>>,
    pub ipfix: Option<ipfix::IpfixSink>,
    pub metrics: Arc<Metrics>,
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
            ipfix: None,
            metrics,
        }
    }

    /// The same sinks, and IPFIX export too.
    pub fn with_ipfix(self, ipfix: ipfix::IpfixSink) -> Self {
        Self {
            ipfix: Some(ipfix),
            ..self
        }
    }

    /// Hands `records` to every sink. Redis and IPFIX come first: their submission never
    /// fails, so a file error cannot keep records from them.
    pub fn write(&mut self, records: &[FlowRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let count = records.len();
        if let Some(redis) = &self.redis {
            redis.write_all(records);
            self.written("redis", count);
        }
        if let Some(ipfix) = &mut self.ipfix {
            ipfix.write(records);
            self.written("ipfix", count);
        }
        if let Some(peers) = &self.peers {
            peers.record(records);
        }
        if let Some(log) = &mut self.log {
            log.write_all(records)?;
            self.written("flow_log", count);
        }
        Ok(())
    }

    fn written(&self, sink: &'static str, records: usize) {
        self.metrics
            .flows
            .records_written
            .get_or_create(&SinkLabel { sink })
            .inc_by(records as u64);
    }
}
