//! The flow monitor: follows the kernel's events, looks at each flow when its deadline comes,
//! journals and hands the records to the sinks, and accounts for flows the LRU map dropped. It
//! runs on a thread of its own: its syscalls must not stall the async side.
//!
//! Its cost follows what flows do, not how many there are: a poll drains the events the programs
//! wrote (a side's first FIN or RST, a flow's first packet of an interim interval), reads one
//! slice of the map's buckets to find the flows created since (the whole map once in a little
//! less than the shortest idle timeout: a flow of one packet is known before it is due), then
//! reads the block of each flow whose deadline has come, one lookup each. The whole map is read
//! at once only when a read must settle what events cannot: at start, after the ring overflowed,
//! and while the map is so full that the LRU may drop flows (it does so silently; a flow a read
//! lacks was dropped).

use std::{
    collections::HashMap,
    os::fd::AsRawFd as _,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use flowmon_common::{DatapathCounters, FlowBlock, FlowEvent, FlowKey};
use rustc_hash::FxHashMap;
use tokio_util::sync::CancellationToken;

use super::{
    Flow,
    journal::Journal,
    query::{Asked, LiveFlowTable, Question, ViewMaker},
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
/// Longest wait between two checks for shutdown and for events.
const WAKE_UP: Duration = Duration::from_millis(100);
/// Free elements the kernel's common LRU may hold back per CPU (`LOCAL_FREE_TARGET`) before it
/// evicts: with fewer free than this per CPU, plus one, a new flow may evict another.
const LRU_LOCAL_FREE: u64 = 128;

/// How often the monitor polls.
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
    tracker: FlowTracker<HashMap<u32, String>>,
    /// Names of the monitored interfaces by index.
    ifaces: HashMap<u32, String>,
    /// Where questions about the live flows come from, once a [`LiveFlowTable`] was made.
    asked: Option<Asked>,
    /// Full reads of the map: the buffers of the latest and the one before, kept only while
    /// reads follow each other (the LRU may evict), so that a flow one read has and the next
    /// lacks ends with the counts read.
    reads: Option<Reads>,
    /// The whole map must be read at the next poll (at start).
    read_next: bool,
    sweep: Sweep,
    journal: Journal,
    sinks: FlowSinks,
    metrics: Arc<Metrics>,
    config: MonitorConfig,
    /// Flows the agent removed from the map, over every run (from the journal).
    deleted: u64,
    /// Events the ring had no room for, as last seen.
    events_lost: u64,
    capacity: u32,
    /// Live flows from which the LRU may evict.
    evicting_from: u64,
    warned_full: bool,
}

/// The slices in which the map is read to find new flows.
struct Sweep {
    /// The bucket the next slice starts at.
    next: u32,
    buckets: u32,
    /// Buckets a poll reads.
    per_poll: u32,
    table: FlowTable,
}

/// The reads of the whole map, kept while consecutive polls read it.
struct Reads {
    table: FlowTable,
    previous: FlowTable,
}

/// What one poll did, for logs, metrics and the benchmarks.
#[derive(Debug, Default)]
pub struct PollStats {
    pub live: usize,
    pub records: usize,
    pub ended: usize,
    pub evicted_seen: usize,
    /// Flows whose block was read one by one, and whether the whole map was read.
    pub looked_up: usize,
    pub full_read: bool,
    /// The latest a record came after it was due.
    pub worst_lateness: Duration,
    pub duration: Duration,
}

/// What a poll's looks decided.
#[derive(Default)]
struct Verdicts {
    records: Vec<(FlowKey, FlowRecord)>,
    expired: FxHashMap<FlowKey, (EndReason, Flow)>,
    evicted: Vec<(FlowKey, FlowRecord)>,
    /// Flows the LRU dropped, with or without a record.
    evicted_count: usize,
    worst_lateness_ns: u64,
}

impl FlowMonitor {
    /// A monitor over `datapath`, continuing what a previous run journaled in the state dir.
    pub fn new(
        mut datapath: Datapath,
        ifaces: HashMap<u32, String>,
        config: MonitorConfig,
        mut sinks: FlowSinks,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let (journal, recovered) = Journal::open(&config.state_dir)?;
        let mut tracker = FlowTracker::new(
            config.timeouts,
            config.poll_interval,
            *datapath.clock(),
            WallClock::new(),
            config.sensor_id.clone(),
            ifaces.clone(),
        );
        datapath.set_interim_ticks(tracker.interim_ticks())?;
        if !recovered.flows.is_empty() || !recovered.unexported.is_empty() {
            tracing::info!(
                flows = recovered.flows.len(),
                resent = recovered.unexported.len(),
                "continuing the flows of the previous run"
            );
        }
        tracker.restore(recovered.flows);
        let resend: Vec<FlowRecord> = recovered
            .unexported
            .into_iter()
            .map(|(_, _, r)| r)
            .collect();
        sinks.write(&resend)?;
        let map = datapath.flow_map()?;
        let capacity = map.capacity()?;
        let buckets = map.buckets()?;
        // A flow created just after a slice passed its bucket is found a whole sweep later:
        // before its idle deadline, with a poll to spare.
        let poll_ns = config.poll_interval.as_nanos().max(1) as u64;
        let sweep_ns = (config.timeouts.shortest_idle().as_nanos() as u64)
            .saturating_sub(2 * poll_ns)
            .max(poll_ns);
        let sweep = Sweep {
            next: 0,
            buckets,
            per_poll: (u64::from(buckets) * poll_ns)
                .div_ceil(sweep_ns)
                .min(u64::from(buckets)) as u32,
            table: map.new_table(),
        };
        let cpus = aya::util::nr_cpus().unwrap_or(1) as u64;
        let mut monitor = Self {
            datapath,
            tracker,
            ifaces,
            asked: None,
            reads: None,
            read_next: true,
            sweep,
            journal,
            sinks,
            metrics,
            config,
            deleted: recovered.deleted,
            events_lost: 0,
            capacity,
            evicting_from: (capacity as u64).saturating_sub(2 * LRU_LOCAL_FREE * (cpus + 1)),
            warned_full: false,
        };
        monitor.mark_exported(recovered.polled_ns)?;
        Ok(monitor)
    }

    /// A handle for asking this monitor about its live flows while it runs.
    pub fn live_flows(&mut self) -> Result<LiveFlowTable> {
        let (table, asked) = LiveFlowTable::new()?;
        self.asked = Some(asked);
        Ok(table)
    }

    /// The datapath the monitor reads (for benchmarks that run packets through its programs).
    pub fn datapath(&self) -> &Datapath {
        &self.datapath
    }

    /// Polls at the start of every poll interval (draining events in between when the ring
    /// fills) until `stop` is cancelled, then ends every live flow. Runs on a thread of its own
    /// (`spawn_blocking`): it waits on the ring's descriptor.
    pub fn run(mut self, stop: CancellationToken) -> Result<()> {
        let interval = self.config.poll_interval.as_nanos().max(1) as u64;
        loop {
            let stats = self.poll()?;
            tracing::debug!(?stats, "poll");
            let next = (monotonic_ns() / interval + 1) * interval;
            loop {
                let now = monotonic_ns();
                if now >= next {
                    break;
                }
                let wait = Duration::from_nanos(next - now).min(WAKE_UP);
                if self.wait_for_events(wait) {
                    self.drain_events();
                }
                self.answer_questions();
                if stop.is_cancelled() {
                    return self.shutdown();
                }
            }
        }
    }

    /// Waits up to `wait` for the programs to wake the agent (a ring half full), or for a
    /// question; whether events came.
    fn wait_for_events(&mut self, wait: Duration) -> bool {
        let watch = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut fds = [watch(self.datapath.events().as_raw_fd()), watch(-1)];
        if let Some(asked) = &self.asked {
            fds[1] = watch(asked.fd());
        }
        // SAFETY: two pollfds we own (a negative descriptor is ignored), for descriptors that
        // outlive the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, wait.as_millis() as libc::c_int) };
        ready > 0 && fds[0].revents != 0
    }

    /// Answers the questions about the live flows that came: the top ones ranked by what the
    /// tracker last read of each, then looked up for their counts of this moment; one flow
    /// looked up.
    fn answer_questions(&self) {
        let Some(asked) = &self.asked else {
            return;
        };
        for question in asked.take() {
            let flow_id = |key: &FlowKey| self.tracker.flow_id(key).map(|id| id.to_string());
            let views = ViewMaker {
                clock: self.tracker.clock(),
                wall: self.tracker.wall_clock(),
                ifaces: &self.ifaces,
                flow_id: &flow_id,
            };
            let lookup = |key: &FlowKey| self.datapath.flow_map()?.lookup(key);
            match question {
                Question::Top(query, answer) => {
                    let known = self.tracker.known();
                    let live = self.tracker.live();
                    let _ = answer.send(views.top(known, live, &query, lookup, monotonic_ns()));
                }
                Question::One(key, answer) => {
                    let _ = answer.send(match lookup(&key) {
                        Ok(block) => block.map(|block| views.view(key, &block)),
                        Err(err) => {
                            tracing::warn!("cannot look a flow up: {err:#}");
                            None
                        }
                    });
                }
            }
        }
    }

    /// Hands every event in the ring to the tracker.
    fn drain_events(&mut self) -> usize {
        let (events, tracker) = (self.datapath.events(), &mut self.tracker);
        let mut drained = 0;
        while let Some(item) = events.next() {
            if item.len() < size_of::<FlowEvent>() {
                continue;
            }
            // SAFETY: the programs write whole `FlowEvent`s, plain integers; the item holds at
            // least one, possibly unaligned.
            let event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowEvent>()) };
            tracker.heard(event.key, event.at, event.what);
            drained += 1;
        }
        drained
    }

    /// One poll: the events since the last, then a look at every flow whose deadline came
    /// (interim records for flows active in the interval that ended, final records for idle and
    /// closed flows, taken out of the map with their exact last counts), final records for flows
    /// the kernel evicted, loss accounting.
    pub fn poll(&mut self) -> Result<PollStats> {
        let started = Instant::now();
        // The counters first: every flow they count created has its event in the ring by the
        // time it is drained.
        let counters = self.datapath.counters()?;
        self.drain_events();
        self.datapath.flush_log();
        let lost = counters.events_lost > self.events_lost;
        self.events_lost = counters.events_lost;
        let evicted_so_far = self.metrics.flows.flows_evicted.get();
        let may_hold = counters
            .flows_created
            .saturating_sub(self.deleted + evicted_so_far);
        let full_read =
            std::mem::take(&mut self.read_next) || lost || may_hold >= self.evicting_from;
        let now = monotonic_ns();
        let mut verdicts = Verdicts::default();
        let looked_up = if full_read {
            self.read_all(now, counters.flows_created, &mut verdicts)?
        } else {
            self.reads = None;
            self.sweep(now, &mut verdicts)?;
            self.look_at_due(now, &mut verdicts)?
        };
        let expired = std::mem::take(&mut verdicts.expired);
        let ended = self.take_and_finish(&expired, now, &mut verdicts.evicted_count)?;
        let stats = PollStats {
            live: self.tracker.live(),
            records: verdicts.records.len() + ended.len() + verdicts.evicted.len(),
            ended: ended.len(),
            evicted_seen: verdicts.evicted_count,
            looked_up,
            full_read,
            worst_lateness: Duration::from_nanos(verdicts.worst_lateness_ns),
            duration: Duration::ZERO,
        };
        let mut records = verdicts.records;
        records.extend(ended);
        records.extend(verdicts.evicted);
        self.publish(records, now)?;
        self.metrics
            .flows
            .flows_evicted
            .inc_by(verdicts.evicted_count as u64);
        self.account(stats.live, &counters);
        let duration = started.elapsed();
        self.metrics
            .flows
            .poll_duration_seconds
            .set(duration.as_secs_f64());
        self.metrics.flows.polls.inc();
        Ok(PollStats { duration, ..stats })
    }

    /// Reads the next slice of the map's buckets and looks at the flows in it the tracker does
    /// not know yet.
    fn sweep(&mut self, now: u64, verdicts: &mut Verdicts) -> Result<()> {
        let map = self.datapath.flow_map()?;
        let sweep = &mut self.sweep;
        let expected = self.tracker.live() as u64 * u64::from(sweep.per_poll)
            / u64::from(sweep.buckets).max(1);
        let to = sweep.next.saturating_add(sweep.per_poll);
        let next = map.read_buckets(&mut sweep.table, sweep.next, to, expected as usize + 64)?;
        sweep.next = next.filter(|&bucket| bucket < sweep.buckets).unwrap_or(0);
        for (key, block) in sweep.table.iter() {
            if !self.tracker.knows(&key, block.first_seen) {
                judge(&mut self.tracker, &self.metrics, key, block, now, verdicts);
            }
        }
        Ok(())
    }

    /// Looks at the flows whose deadline came, one lookup each. Returns how many.
    fn look_at_due(&mut self, now: u64, verdicts: &mut Verdicts) -> Result<usize> {
        let due = self.tracker.due(now);
        let map = self.datapath.flow_map()?;
        for key in &due {
            match map.lookup(key)? {
                Some(block) => judge(
                    &mut self.tracker,
                    &self.metrics,
                    *key,
                    &block,
                    now,
                    verdicts,
                ),
                None => {
                    verdicts.evicted_count += 1;
                    if let Some(record) = self.tracker.vanished(key, now) {
                        verdicts.evicted.push((*key, record));
                    }
                }
            }
        }
        Ok(due.len())
    }

    /// Reads the whole map and looks at every flow in it; flows the tracker knew that the read
    /// lacks were dropped by the LRU. Returns how many flows were read.
    fn read_all(&mut self, now: u64, created: u64, verdicts: &mut Verdicts) -> Result<usize> {
        let map = self.datapath.flow_map()?;
        // `previous` is the read of the poll before this one.
        let consecutive = self.reads.is_some();
        let reads = match &mut self.reads {
            Some(reads) => {
                std::mem::swap(&mut reads.table, &mut reads.previous);
                reads
            }
            None => self.reads.insert(Reads {
                table: map.empty_table()?,
                previous: map.empty_table()?,
            }),
        };
        map.read_into(&mut reads.table)?;
        // Dropped since the last read, which has their blocks: they end with the counts read.
        if consecutive {
            for slot in reads.previous.missing_from(&reads.table) {
                let (key, block) = reads.previous.get(slot);
                if self.tracker.knows(&key, block.first_seen) {
                    let flow = Flow::from_block(key, block, reads.previous.clock());
                    verdicts.evicted_count += 1;
                    let record = self.tracker.finish(&flow, EndReason::Evicted, now);
                    verdicts.evicted.push((key, record));
                }
            }
        }
        self.tracker.begin_read();
        for (key, block) in reads.table.iter() {
            judge(&mut self.tracker, &self.metrics, key, block, now, verdicts);
        }
        let (gone, records) = self.tracker.unread(now);
        verdicts.evicted_count += gone.len();
        verdicts.evicted.extend(records);
        // Flows created and dropped unseen (events lost): the rest of what the kernel created.
        let read = reads.table.len();
        let accounted = self.deleted
            + self.metrics.flows.flows_evicted.get()
            + verdicts.evicted_count as u64
            + read as u64;
        verdicts.evicted_count += created.saturating_sub(accounted) as usize;
        Ok(read)
    }
    /// Removes the `expired` flows from the map and makes their final records from the counts
    /// removed. A flow the kernel evicted in the meantime ends as evicted, with the counts read
    /// (and counts in `evicted`).
    fn take_and_finish(
        &mut self,
        expired: &FxHashMap<FlowKey, (EndReason, Flow)>,
        now: u64,
        evicted: &mut usize,
    ) -> Result<Vec<(FlowKey, FlowRecord)>> {
        let keys: Vec<FlowKey> = expired.keys().copied().collect();
        let taken = self.datapath.flow_map()?.take(&keys)?;
        self.deleted += taken.len() as u64;
        let mut finals: FxHashMap<FlowKey, Flow> = Flow::all(&taken)
            .into_iter()
            .map(|flow| (flow.key, flow))
            .collect();
        Ok(expired
            .iter()
            .map(|(key, (reason, read))| {
                let record = match finals.remove(key) {
                    Some(flow) => self.tracker.finish(&flow, *reason, now),
                    None => {
                        *evicted += 1;
                        self.tracker.finish(read, EndReason::Evicted, now)
                    }
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
        self.mark_exported(now)
    }

    fn mark_exported(&mut self, polled_ns: u64) -> Result<()> {
        self.journal.exported(self.deleted, polled_ns)?;
        if self.journal.needs_compaction(self.tracker.live()) {
            self.journal
                .compact(self.tracker.last_records(), self.deleted, polled_ns)?;
        }
        Ok(())
    }

    /// Reports the kernel's counters and how full the map is.
    fn account(&mut self, live: usize, counters: &DatapathCounters) {
        let metrics = &self.metrics.flows;
        metrics.observe_kernel(counters);
        metrics.flows_live.set(live as i64);
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
    }

    /// Final "forced" records for every flow, taken out of the map with its exact counts;
    /// then the programs are detached and the pins removed, unless they are to stay attached
    /// (the next run then starts from an empty map, nothing counted twice).
    fn shutdown(mut self) -> Result<()> {
        if !self.config.keep_attached {
            self.datapath.detach_programs()?;
        }
        let forced: FxHashMap<FlowKey, (EndReason, Flow)> = self
            .read_flows()?
            .into_iter()
            .map(|flow| (flow.key, (EndReason::Forced, flow)))
            .collect();
        let now = monotonic_ns();
        let records = self.take_and_finish(&forced, now, &mut 0)?;
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

/// Looks at one flow with its block as read at `now` and notes what that decided.
fn judge(
    tracker: &mut FlowTracker<HashMap<u32, String>>,
    metrics: &Metrics,
    key: FlowKey,
    block: &FlowBlock,
    now: u64,
    verdicts: &mut Verdicts,
) {
    let (look, replaced) = tracker.look(key, block, now);
    if let Some(record) = replaced {
        verdicts.evicted_count += 1;
        verdicts.evicted.push((key, record));
    }
    let make_flow = || Flow::from_block(key, block, tracker.clock());
    match look.verdict {
        Verdict::Keep => return,
        Verdict::Interim => {
            let flow = make_flow();
            verdicts.records.push((key, tracker.interim(&flow, now)));
        }
        Verdict::Expire(reason) => {
            verdicts.expired.insert(key, (reason, make_flow()));
        }
    }
    metrics
        .flows
        .record_lateness_seconds
        .observe(look.lateness_ns as f64 / 1e9);
    verdicts.worst_lateness_ns = verdicts.worst_lateness_ns.max(look.lateness_ns);
}
