//! The flow monitor: polls the kernel's flow map, applies the lifecycle, journals and hands
//! the records to the sinks, and accounts for flows the LRU map dropped. It runs on a thread of
//! its own: a poll of a large map is a long run of syscalls that must not stall the async side.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use flowmon_common::FlowKey;
use rustc_hash::FxHashSet;
use tokio_util::sync::CancellationToken;

use super::{
    Flow,
    journal::Journal,
    record::{EndReason, FlowRecord},
    tracker::{FlowTracker, Timeouts, Verdict},
    wall_clock::{WallClock, monotonic_ns},
};
use crate::{
    datapath::{Datapath, FlowTable},
    metrics::Metrics,
    sinks::{FlowSinks, SinksConfig},
};

/// Map utilisation above which flowmon warns that flows are about to be evicted.
const UTILISATION_WARNING: f64 = 0.8;

/// How often the flow map is read.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How the monitor runs.
#[derive(Clone, Debug)]
pub struct MonitorConfig {
    pub timeouts: Timeouts,
    pub sensor_id: String,
    /// Where the journal is kept.
    pub state_dir: PathBuf,
    pub poll_interval: Duration,
    /// Leave the programs attached and pinned at shutdown.
    pub keep_attached: bool,
    pub sinks: SinksConfig,
}

pub struct FlowMonitor {
    datapath: Datapath,
    /// This poll's read of the map and the one before (for flows the kernel evicted since):
    /// two buffers used in turn, so a poll allocates nothing.
    table: FlowTable,
    previous: FlowTable,
    /// Slots of `table` whose flows the agent ended: gone from the next read, not evicted.
    ended_slots: FxHashSet<usize>,
    tracker: FlowTracker<HashMap<u32, String>>,
    journal: Journal,
    sinks: FlowSinks,
    metrics: Arc<Metrics>,
    config: MonitorConfig,
    /// Flows the agent removed from the map, over every run (from the journal).
    deleted: u64,
    capacity: u32,
    warned_full: bool,
}

/// What one poll did, for logs and metrics.
#[derive(Debug, Default)]
pub struct PollStats {
    pub live: usize,
    pub records: usize,
    pub ended: usize,
    pub evicted_seen: usize,
    pub duration: Duration,
}

impl FlowMonitor {
    /// A monitor over `datapath`, continuing what a previous run journaled in the state dir.
    pub fn new(
        datapath: Datapath,
        ifaces: HashMap<u32, String>,
        config: MonitorConfig,
        mut sinks: FlowSinks,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let (journal, recovered) = Journal::open(&config.state_dir)?;
        let mut tracker = FlowTracker::new(
            config.timeouts,
            WallClock::new(),
            config.sensor_id.clone(),
            ifaces,
        );
        if !recovered.flows.is_empty() || !recovered.unexported.is_empty() {
            tracing::info!(
                flows = recovered.flows.len(),
                resent = recovered.unexported.len(),
                "continuing the flows of the previous run"
            );
        }
        tracker.restore(recovered.flows, recovered.polled_ns, monotonic_ns());
        let resend: Vec<FlowRecord> = recovered
            .unexported
            .into_iter()
            .map(|(_, _, r)| r)
            .collect();
        sinks.write(&resend)?;
        let flow_map = datapath.flow_map()?;
        let capacity = flow_map.capacity()?;
        let (table, previous) = (flow_map.empty_table()?, flow_map.empty_table()?);
        let mut monitor = Self {
            datapath,
            table,
            previous,
            ended_slots: FxHashSet::default(),
            tracker,
            journal,
            sinks,
            metrics,
            config,
            deleted: recovered.deleted,
            capacity,
            warned_full: false,
        };
        monitor.mark_exported()?;
        Ok(monitor)
    }

    /// Polls until `stop` is cancelled, then ends every live flow. Runs on a thread of its
    /// own inside the tokio runtime (`spawn_blocking`), whose clock times the pauses.
    pub fn run(mut self, stop: CancellationToken) -> Result<()> {
        let runtime = tokio::runtime::Handle::current();
        loop {
            let stats = self.poll()?;
            tracing::debug!(?stats, "poll");
            let pause = self.config.poll_interval.saturating_sub(stats.duration);
            let stopped = runtime.block_on(tokio::time::timeout(pause, stop.cancelled()));
            if stopped.is_ok() {
                break;
            }
        }
        self.shutdown()
    }

    /// One read of the map: interim records for flows due one; final records for idle and
    /// closed flows, taken out of the map with their exact last counts; final records for
    /// flows the kernel evicted; loss accounting.
    pub fn poll(&mut self) -> Result<PollStats> {
        let started = Instant::now();
        std::mem::swap(&mut self.table, &mut self.previous);
        let ended_before = std::mem::take(&mut self.ended_slots);
        self.datapath.flow_map()?.read_into(&mut self.table)?;
        let now = monotonic_ns();
        let mut records = Vec::new();
        let mut expired = HashMap::new();
        let table = &self.table;
        let clock = table.clock();
        for (slot, (key, block)) in table.iter().enumerate() {
            // A flow only becomes a `Flow` when it gets a record.
            match self.tracker.verdict(&key, block, clock, now) {
                Verdict::Keep => {}
                Verdict::Interim => {
                    let flow = Flow::from_block(key, block, clock);
                    records.push((key, self.tracker.interim(&flow, now)));
                }
                Verdict::Expire(reason) => {
                    self.ended_slots.insert(slot);
                    expired.insert(key, (reason, Flow::from_block(key, block, clock)));
                }
            }
        }
        let ended = self.take_and_finish(&expired, now)?;
        let evicted = self.finish_evicted(&ended_before, now);
        let stats = PollStats {
            live: self.table.len() - ended.len(),
            records: records.len() + ended.len() + evicted.len(),
            ended: ended.len(),
            evicted_seen: evicted.len(),
            duration: Duration::ZERO,
        };
        records.extend(ended);
        records.extend(evicted);
        self.tracker.end_poll(now);
        self.publish(records, now)?;
        self.account(stats.live)?;
        let duration = started.elapsed();
        self.metrics
            .flows
            .poll_duration_seconds
            .set(duration.as_secs_f64());
        Ok(PollStats { duration, ..stats })
    }

    /// Final "evicted" records for the flows of the previous read that this one lacks and the
    /// agent did not end itself (`ended_before`, slots of the previous read): the kernel's LRU
    /// dropped them. Each carries the counts last read. On a first poll, also for the flows a
    /// previous run reported that the map no longer holds.
    fn finish_evicted(
        &mut self,
        ended_before: &FxHashSet<usize>,
        now: u64,
    ) -> Vec<(FlowKey, FlowRecord)> {
        let mut evicted = self.tracker.finish_unread_restored(&self.table, now);
        let previous = &self.previous;
        for slot in previous.missing_from(&self.table) {
            if ended_before.contains(&slot) {
                continue;
            }
            let (key, block) = previous.get(slot);
            let flow = Flow::from_block(key, block, previous.clock());
            evicted.push((key, self.tracker.finish(&flow, EndReason::Evicted, now)));
        }
        evicted
    }

    /// Removes the `expired` flows from the map and makes their final records from the counts
    /// removed. A flow the kernel evicted in the meantime ends as evicted, with the counts read.
    fn take_and_finish(
        &mut self,
        expired: &HashMap<FlowKey, (EndReason, Flow)>,
        now: u64,
    ) -> Result<Vec<(FlowKey, FlowRecord)>> {
        let keys: Vec<FlowKey> = expired.keys().copied().collect();
        let taken = self.datapath.flow_map()?.take(&keys)?;
        self.deleted += taken.len() as u64;
        let mut finals: HashMap<FlowKey, Flow> = Flow::all(&taken)
            .into_iter()
            .map(|flow| (flow.key, flow))
            .collect();
        Ok(expired
            .iter()
            .map(|(key, (reason, read))| {
                let record = match finals.remove(key) {
                    Some(flow) => self.tracker.finish(&flow, *reason, now),
                    None => self.tracker.finish(read, EndReason::Evicted, now),
                };
                (*key, record)
            })
            .collect())
    }

    /// Journals `records`, hands them to the sinks, marks them exported.
    fn publish(&mut self, records: Vec<(FlowKey, FlowRecord)>, now: u64) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let journaled: Vec<(FlowKey, u64, FlowRecord)> = records
            .into_iter()
            .map(|(key, record)| (key, now, record))
            .collect();
        self.journal.append(&journaled)?;
        let records: Vec<FlowRecord> = journaled.into_iter().map(|(_, _, r)| r).collect();
        for record in &records {
            if let Some(reason) = record.end_reason {
                self.metrics.flows.finalised(reason);
            }
        }
        self.sinks.write(&records)?;
        self.mark_exported()
    }

    fn mark_exported(&mut self) -> Result<()> {
        let polled_ns = self.tracker.last_poll_ns();
        self.journal.exported(self.deleted, polled_ns)?;
        if self.journal.needs_compaction(self.tracker.reported()) {
            self.journal
                .compact(self.tracker.last_records(), self.deleted, polled_ns)?;
        }
        Ok(())
    }

    /// Every flow the kernel created is live, was ended by the agent, or was evicted: the
    /// evicted count follows from the other three.
    fn account(&mut self, live: usize) -> Result<()> {
        let counters = self.datapath.counters()?;
        let metrics = &self.metrics.flows;
        metrics.observe_kernel(&counters);
        metrics.flows_live.set(live as i64);
        let evicted = counters
            .flows_created
            .saturating_sub(live as u64 + self.deleted);
        let reported = metrics.flows_evicted.get();
        metrics
            .flows_evicted
            .inc_by(evicted.saturating_sub(reported));
        let utilisation = live as f64 / self.capacity as f64;
        metrics.map_utilisation.set(utilisation);
        if utilisation > UTILISATION_WARNING && !self.warned_full {
            tracing::warn!(
                live,
                capacity = self.capacity,
                "flow map over {:.0} % full: flows will be evicted before they end; raise \
                 --max-flows or lower the timeouts",
                UTILISATION_WARNING * 100.0
            );
        }
        self.warned_full = utilisation > UTILISATION_WARNING;
        Ok(())
    }

    /// Final "forced" records for every flow, taken out of the map with its exact counts;
    /// then the programs are detached and the pins removed, unless they are to stay attached
    /// (the next run then starts from an empty map, nothing counted twice).
    fn shutdown(mut self) -> Result<()> {
        if !self.config.keep_attached {
            self.datapath.detach_programs()?;
        }
        let forced: HashMap<FlowKey, (EndReason, Flow)> = self
            .read_flows()?
            .into_iter()
            .map(|flow| (flow.key, (EndReason::Forced, flow)))
            .collect();
        let now = monotonic_ns();
        let records = self.take_and_finish(&forced, now)?;
        let ended = records.len();
        self.publish(records, now)?;
        tracing::info!(flows = ended, "final records written for every live flow");
        if !self.config.keep_attached {
            self.datapath.unpin_maps();
        }
        Ok(())
    }

    fn read_flows(&self) -> Result<Vec<Flow>> {
        Ok(Flow::all(&self.datapath.flow_map()?.read_all()?))
    }
}
