//! The flow monitor: polls the kernel's flow map, applies the lifecycle and hands the records
//! to the sinks. It runs on a thread of its own, since a poll of a large map is seconds of
//! syscalls that must not stall the async side.

use std::{
    collections::{HashMap, HashSet},
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use super::{
    Flow,
    clock::{WallClock, monotonic_ns},
    record::{EndReason, FlowRecord},
    tracker::{FlowTracker, Timeouts, Verdict},
};
use crate::{datapath::Datapath, sinks::json_lines::JsonLines};
use anyhow::Result;

pub struct FlowMonitor {
    datapath: Datapath,
    tracker: FlowTracker<HashMap<u32, String>>,
    flow_log: Option<JsonLines>,
    poll_interval: Duration,
}

/// What one poll did, for logs and metrics.
#[derive(Debug, Default)]
pub struct PollStats {
    pub live: usize,
    pub interim: usize,
    pub finished: usize,
    pub evicted: usize,
    pub duration: Duration,
}

impl FlowMonitor {
    pub fn new(
        datapath: Datapath,
        ifaces: HashMap<u32, String>,
        timeouts: Timeouts,
        sensor_id: String,
        flow_log: Option<JsonLines>,
        poll_interval: Duration,
    ) -> Self {
        Self {
            datapath,
            tracker: FlowTracker::new(timeouts, WallClock::new(), sensor_id, ifaces),
            flow_log,
            poll_interval,
        }
    }

    /// Polls until `shutdown` says so (or its sender is gone), then ends every live flow.
    pub fn run(mut self, shutdown: Receiver<()>) -> Result<()> {
        loop {
            let stats = self.poll()?;
            tracing::debug!(?stats, "poll");
            match shutdown.recv_timeout(self.poll_interval.saturating_sub(stats.duration)) {
                Err(RecvTimeoutError::Timeout) => continue,
                Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let ended = self.shutdown()?;
        tracing::info!(flows = ended, "final records written for every live flow");
        Ok(())
    }

    /// One read of the map: interim records for flows due one, final records (and removal from
    /// the map) for idle and closed flows, and for flows the kernel evicted.
    pub fn poll(&mut self) -> Result<PollStats> {
        let started = Instant::now();
        let flows = self.read_flows()?;
        let now = monotonic_ns();
        let mut records = Vec::new();
        let mut expired = Vec::new();
        let mut present = HashSet::with_capacity(flows.len());
        for flow in &flows {
            present.insert(flow.key);
            match self.tracker.verdict(flow, now) {
                Verdict::Keep => self.tracker.observe(flow),
                Verdict::Interim => records.push(self.tracker.interim(flow, now)),
                Verdict::Expire(reason) => {
                    records.push(self.tracker.finish(flow, reason, now));
                    expired.push(flow.key);
                }
            }
        }
        let evicted = self.tracker.finish_missing(&present, now);
        let mut stats = PollStats {
            interim: records.len() - expired.len(),
            finished: expired.len(),
            evicted: evicted.len(),
            ..PollStats::default()
        };
        records.extend(evicted);
        self.datapath.flow_map()?.delete(&expired)?;
        self.export(&records)?;
        stats.live = self.tracker.live();
        stats.duration = started.elapsed();
        Ok(stats)
    }

    /// Final "forced" records for every flow still in the map.
    fn shutdown(&mut self) -> Result<usize> {
        let flows = self.read_flows()?;
        let now = monotonic_ns();
        let records: Vec<FlowRecord> = flows
            .iter()
            .map(|flow| self.tracker.finish(flow, EndReason::Forced, now))
            .collect();
        self.export(&records)?;
        Ok(records.len())
    }

    fn read_flows(&self) -> Result<Vec<Flow>> {
        let entries = self.datapath.flow_map()?.read_all()?;
        Ok(entries
            .into_iter()
            .filter_map(|entry| Flow::merge(entry.key, &entry.blocks))
            .collect())
    }

    fn export(&mut self, records: &[FlowRecord]) -> Result<()> {
        if let Some(log) = &mut self.flow_log {
            log.write_all(records)?;
        }
        Ok(())
    }
}
