//! The flow lifecycle: what the agent knows of every live flow, when each one next needs a look
//! (its idle or close deadline, the end of an interim interval in which it was active), and the
//! records those looks make. The kernel's events and the blocks the monitor reads are its only
//! inputs, so it is pure logic, tested without a kernel.
//!
//! A flow costs nothing between its deadlines: the kernel tells the agent when a side first
//! sends FIN or RST and when a flow sends its first packet of a new interim interval (the monitor
//! finds new flows by reading the map in slices); the agent keeps each flow's next deadline in
//! buckets of one poll interval and looks at a flow only when its deadline has come.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use rustc_hash::{FxHashMap, FxHashSet};
use uuid::Uuid;

use flowmon_common::{FlowBlock, FlowKey, TcpState, event, ip_proto};

use super::{
    Flow,
    journal::LastRecord,
    query::Known,
    record::{Deltas, EndReason, FlowId, FlowRecord, Labels, RecordType},
    wall_clock::WallClock,
};
use crate::datapath::KernelClock;

/// Idle timeouts per protocol and the interim interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// An established TCP flow.
    pub tcp: Duration,
    /// A TCP flow after FIN from both sides or an RST.
    pub tcp_close: Duration,
    pub udp: Duration,
    /// ICMP and ICMPv6.
    pub icmp: Duration,
    pub other: Duration,
    /// Between two interim records of a live flow that sends something.
    pub interim: Duration,
}

/// Zeek's idle timeouts and close delay, and Snort's interim interval.
pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    tcp: Duration::from_secs(300),
    tcp_close: Duration::from_secs(5),
    udp: Duration::from_secs(60),
    icmp: Duration::from_secs(30),
    other: Duration::from_secs(60),
    interim: Duration::from_secs(60),
};

impl Timeouts {
    /// The shortest idle timeout: how soon a flow that sends one packet may be due.
    pub fn shortest_idle(&self) -> Duration {
        self.tcp.min(self.udp).min(self.icmp).min(self.other)
    }

    /// The idle timeout of a flow, in nanoseconds.
    fn idle_ns(&self, protocol: u8, closing: bool) -> u64 {
        let timeout = match protocol {
            ip_proto::TCP if closing => self.tcp_close,
            ip_proto::TCP => self.tcp,
            ip_proto::UDP => self.udp,
            ip_proto::ICMP | ip_proto::ICMPV6 => self.icmp,
            _ => self.other,
        };
        nanos(timeout)
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// What the agent keeps of a flow that has had a record: what the next one continues.
#[derive(Clone, Debug)]
struct Reported {
    flow_id: Uuid,
    /// Records made so far; the next record's sequence number.
    records: u64,
    /// The last record (its totals give the next one's deltas) and when it was made.
    last_record: Box<FlowRecord>,
    last_record_ns: u64,
}

/// What the agent knows of a live flow. Times are the kernel's jiffies.
#[derive(Clone, Debug)]
struct Live {
    first_seen: u64,
    /// The latest packet the agent knows of: from the last read of the block, or an event since.
    last_seen: u64,
    /// A side sent FIN or RST (an event, or the last read): the close timeout may apply.
    closing: bool,
    /// A packet came after the last read, in the interval that ends at `next_interim`.
    active: bool,
    /// End of the interim interval the flow is in.
    next_interim: u64,
    /// The bucket of the wheel that holds this flow's look, 0 when none.
    bucket: u64,
    /// The full read that last found the flow.
    read: u32,
    reported: Option<Reported>,
    /// What the latest look read, for the console's top flows.
    ifindex: u32,
    state: TcpState,
    bytes: u64,
    packets: u64,
}

/// The decision for one flow at one look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Interim,
    Expire(EndReason),
}

/// A verdict and how late the look came after the moment that made it due (0 for `Keep`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Look {
    pub verdict: Verdict,
    pub lateness_ns: u64,
}

/// Resolves an interface index to the name records carry.
pub trait IfaceNames {
    fn name(&self, ifindex: u32) -> String;
}

impl IfaceNames for HashMap<u32, String> {
    fn name(&self, ifindex: u32) -> String {
        self.get(&ifindex)
            .cloned()
            .unwrap_or_else(|| ifindex.to_string())
    }
}

/// Every live flow the agent knows of, and when each needs a look.
pub struct FlowTracker<N> {
    /// FxHash: keys come from the kernel's own flows.
    flows: FxHashMap<FlowKey, Live>,
    /// Looks by bucket (a poll interval each, numbered from the clock's zero): the flows whose
    /// deadline falls in it. A flow whose deadline moved later stays in its old bucket and is
    /// put into the new one when the old comes; one that moved earlier is put into the earlier
    /// one, and its entry in the later one is passed over.
    wheel: BTreeMap<u64, Vec<FlowKey>>,
    /// Flows an event named before the agent knew them (events of one flow from two CPUs may
    /// come out of order): looked at in the next poll.
    unknown: FxHashSet<FlowKey>,
    /// Flows a previous run reported that no read of this run has found yet.
    restored: FxHashMap<FlowKey, Reported>,
    /// The number of the latest full read.
    reads: u32,
    bucket_ns: u64,
    timeouts: Timeouts,
    /// The interim interval, a whole number of the kernel clock's ticks.
    interim_ticks: u64,
    clock: KernelClock,
    wall: WallClock,
    sensor_id: Arc<str>,
    ifaces: N,
    /// The names `ifaces` gave, shared by the records.
    iface_names: FxHashMap<u32, Arc<str>>,
}

impl<N: IfaceNames> FlowTracker<N> {
    /// A tracker with looks in buckets of `bucket_ns` (the poll interval), the interim
    /// interval a whole number of the kernel clock's ticks (as the kernel counts it).
    pub fn new(
        timeouts: Timeouts,
        bucket: Duration,
        clock: KernelClock,
        wall: WallClock,
        sensor_id: String,
        ifaces: N,
    ) -> Self {
        Self {
            flows: FxHashMap::default(),
            wheel: BTreeMap::new(),
            unknown: FxHashSet::default(),
            restored: FxHashMap::default(),
            reads: 0,
            bucket_ns: nanos(bucket).max(1),
            timeouts,
            interim_ticks: (nanos(timeouts.interim) / clock.tick_ns()).max(1),
            clock,
            wall,
            sensor_id: sensor_id.into(),
            ifaces,
            iface_names: FxHashMap::default(),
        }
    }

    /// The interim interval in the kernel's ticks, as the programs must count it.
    pub fn interim_ticks(&self) -> u64 {
        self.interim_ticks
    }

    /// Whether the agent knows the flow of `key` that began at jiffy `first_seen`.
    pub fn knows(&self, key: &FlowKey, first_seen: u64) -> bool {
        self.flows
            .get(key)
            .is_some_and(|live| live.first_seen == first_seen)
    }

    /// The clock of the kernel the blocks come from.
    pub fn clock(&self) -> &KernelClock {
        &self.clock
    }

    /// Live flows the agent knows of.
    pub fn live(&self) -> usize {
        self.flows.len()
    }

    /// What the agent knows of each live flow, as of its latest look.
    pub fn known(&self) -> impl Iterator<Item = Known> + '_ {
        self.flows.iter().map(|(key, live)| Known {
            key: *key,
            ifindex: live.ifindex,
            state: live.state,
            bytes: live.bytes,
            packets: live.packets,
            first_seen_ns: self.clock.monotonic_ns(live.first_seen),
            last_seen_ns: self.clock.monotonic_ns(live.last_seen),
        })
    }

    /// The id of the flow of `key`, if it has had a record.
    pub fn flow_id(&self, key: &FlowKey) -> Option<Uuid> {
        let live = self.flows.get(key)?;
        live.reported.as_ref().map(|reported| reported.flow_id)
    }

    /// The clock records are dated with.
    pub fn wall_clock(&self) -> &WallClock {
        &self.wall
    }

    /// Notes an event of the kernel about the flow of `key` at jiffy `at`.
    pub fn heard(&mut self, key: FlowKey, at: u64, what: u8) {
        let Some(live) = self.flows.get_mut(&key) else {
            if what & event::CREATED != 0 {
                let live = Live::new(at, at, what & event::CLOSING != 0, self.interim_ticks());
                self.flows.insert(key, live);
                self.schedule(key);
            } else {
                self.unknown.insert(key);
            }
            return;
        };
        if what & event::CREATED != 0 && at != live.first_seen {
            // A new flow under the key of one the LRU map dropped, or an old event: the next
            // look at the block tells which.
            self.unknown.insert(key);
            return;
        }
        live.last_seen = live.last_seen.max(at);
        live.closing |= what & event::CLOSING != 0;
        if what & event::ACTIVE != 0 && !live.active {
            // The record is due at the end of the interval the packet came in.
            live.active = true;
            live.next_interim = next_boundary(live.first_seen, at, self.interim_ticks);
        }
        self.schedule(key);
    }

    /// The flows whose look is due at `now_ns`: deadlines passed, and flows events named that
    /// the agent did not know. Flows whose deadline moved later are put back, unlooked at.
    pub fn due(&mut self, now_ns: u64) -> Vec<FlowKey> {
        let now_bucket = now_ns / self.bucket_ns;
        let mut due: Vec<FlowKey> = self.unknown.drain().collect();
        while let Some(entry) = self.wheel.first_entry() {
            if *entry.key() > now_bucket {
                break;
            }
            let (bucket, keys) = entry.remove_entry();
            for key in keys {
                let deadline = match self.flows.get(&key) {
                    Some(live) if live.bucket == bucket => self.deadline_ns(&key, live),
                    _ => continue,
                };
                self.flows.get_mut(&key).expect("present").bucket = 0;
                if deadline <= now_ns {
                    due.push(key);
                } else {
                    self.schedule(key);
                }
            }
        }
        due
    }

    /// The earliest moment the flow of `key` may need a look.
    fn deadline_ns(&self, key: &FlowKey, live: &Live) -> u64 {
        let idle = self.clock.monotonic_ns(live.last_seen)
            + self.timeouts.idle_ns(key.protocol, live.closing);
        if live.active {
            idle.min(self.clock.monotonic_ns(live.next_interim))
        } else {
            idle
        }
    }

    /// Puts the flow's look into the bucket of its deadline, unless an earlier one holds it.
    fn schedule(&mut self, key: FlowKey) {
        let Some(live) = self.flows.get(&key) else {
            return;
        };
        // The first bucket that starts at or after the deadline: a look is never early.
        let bucket = self.deadline_ns(&key, live).div_ceil(self.bucket_ns).max(1);
        let live = self.flows.get_mut(&key).expect("present");
        if live.bucket == 0 || bucket < live.bucket {
            live.bucket = bucket;
            self.wheel.entry(bucket).or_default().push(key);
        }
    }

    /// Decides the fate of the flow of `key` from its block as read at `now_ns`. A flow the
    /// agent did not know is learnt; one the LRU map replaced by a new flow of the same key
    /// ends as evicted first (its record, if it had reported, is returned).
    pub fn look(
        &mut self,
        key: FlowKey,
        block: &FlowBlock,
        now_ns: u64,
    ) -> (Look, Option<FlowRecord>) {
        let mut evicted = None;
        match self.flows.get(&key) {
            Some(live) if live.first_seen == block.first_seen => {}
            known => {
                if known.is_some() {
                    evicted = self.vanished(&key, now_ns);
                }
                let mut live = Live::new(
                    block.first_seen,
                    block.last_seen(),
                    false,
                    self.interim_ticks(),
                );
                live.reported = self.restored.remove(&key);
                if let Some(reported) = &live.reported {
                    // A previous run's record covered the intervals up to when it was made.
                    let made = self.clock.jiffies(reported.last_record_ns);
                    live.next_interim = next_boundary(live.first_seen, made, self.interim_ticks());
                }
                self.flows.insert(key, live);
            }
        }
        let look = self.verdict(&key, block, now_ns);
        if !matches!(look.verdict, Verdict::Expire(_)) {
            self.schedule(key);
        }
        (look, evicted)
    }

    /// The verdict on a known flow, its facts brought up to `block`.
    fn verdict(&mut self, key: &FlowKey, block: &FlowBlock, now_ns: u64) -> Look {
        let clock = self.clock;
        let interim_ticks = self.interim_ticks();
        let idle_timeouts = self.timeouts;
        let reads = self.reads;
        let live = self.flows.get_mut(key).expect("looked at flows are known");
        live.read = reads;
        let seen = Known::of_block(*key, block, &clock);
        // Closing (both FINs, or an RST) does not depend on which side is the client.
        let closing = seen.state.is_closing();
        let changed = match &live.reported {
            Some(reported) => {
                let record = &reported.last_record;
                let (lo, hi) = (&block.lo, &block.hi);
                lo.packets + hi.packets != record.client_packets + record.server_packets
                    || lo.bytes + hi.bytes != record.client_bytes + record.server_bytes
            }
            None => block.last_seen() > block.first_seen,
        };
        live.last_seen = block.last_seen();
        live.closing = closing;
        live.active = false;
        (live.ifindex, live.state) = (seen.ifindex, seen.state);
        (live.bytes, live.packets) = (seen.bytes, seen.packets);
        let idle_deadline =
            clock.monotonic_ns(live.last_seen) + idle_timeouts.idle_ns(key.protocol, closing);
        if now_ns >= idle_deadline {
            let reason = if closing {
                EndReason::End
            } else {
                EndReason::Idle
            };
            return Look {
                verdict: Verdict::Expire(reason),
                lateness_ns: now_ns - idle_deadline,
            };
        }
        // Interim records at the end of each interval (counted from the first packet) in which
        // the flow sent something.
        let passed = clock.monotonic_ns(live.next_interim);
        if now_ns < passed {
            // Read before its interval ended: what it sent counts for this interval.
            live.active = changed;
            return Look {
                verdict: Verdict::Keep,
                lateness_ns: 0,
            };
        }
        // What it sent since the interval's end is in this look's record; it tells that the
        // flow is active in the next interval too (the kernel said so once, before this look).
        live.active = live.last_seen >= live.next_interim;
        live.next_interim = next_boundary(live.first_seen, clock.jiffies(now_ns), interim_ticks);
        if changed {
            Look {
                verdict: Verdict::Interim,
                lateness_ns: now_ns - passed,
            }
        } else {
            Look {
                verdict: Verdict::Keep,
                lateness_ns: 0,
            }
        }
    }

    /// A known flow that the map no longer holds: the LRU map dropped it. Its final
    /// "evicted" record, if it had reported (with its last record's totals).
    pub fn vanished(&mut self, key: &FlowKey, now_ns: u64) -> Option<FlowRecord> {
        let live = self.flows.remove(key)?;
        let reported = live.reported?;
        Some(
            reported
                .last_record
                .evicted(reported.records, &self.wall, now_ns),
        )
    }

    /// Starts a full read of the map (after [`FlowTracker::look`] at each of its flows, ask
    /// [`FlowTracker::unread`] for the ones it lacked).
    pub fn begin_read(&mut self) {
        self.reads = self.reads.wrapping_add(1).max(1);
    }

    /// Known flows the latest full read lacked, and the flows a previous run reported that no
    /// read of this run has found: the LRU map dropped them. Their keys, and the "evicted"
    /// records of those that had reported.
    pub fn unread(&mut self, now_ns: u64) -> (Vec<FlowKey>, Vec<(FlowKey, FlowRecord)>) {
        let reads = self.reads;
        let gone: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, live)| live.read != reads)
            .map(|(key, _)| *key)
            .collect();
        let mut records = Vec::new();
        for key in &gone {
            if let Some(record) = self.vanished(key, now_ns) {
                records.push((*key, record));
            }
        }
        for (key, reported) in std::mem::take(&mut self.restored) {
            let record = reported
                .last_record
                .evicted(reported.records, &self.wall, now_ns);
            records.push((key, record));
        }
        (gone, records)
    }

    /// Continues the flows a previous run reported (from the journal); the first full read
    /// finds them.
    pub fn restore(&mut self, flows: HashMap<FlowKey, LastRecord>) {
        for (key, last) in flows {
            self.restored.insert(
                key,
                Reported {
                    // Ids this agent made are uuids; anything else starts the flow anew.
                    flow_id: match last.record.flow_id {
                        FlowId::Uuid(id) => id,
                        FlowId::Other(_) => Uuid::new_v4(),
                    },
                    records: last.record.sequence + 1,
                    last_record_ns: last.made_ns,
                    last_record: Box::new(last.record),
                },
            );
        }
    }

    /// The last record of every followed flow: what the journal must keep.
    pub fn last_records(&self) -> HashMap<FlowKey, LastRecord> {
        let live = self
            .flows
            .iter()
            .filter_map(|(key, live)| Some((key, live.reported.as_ref()?)));
        live.chain(&self.restored)
            .map(|(key, reported)| {
                (
                    *key,
                    LastRecord {
                        record: (*reported.last_record).clone(),
                        made_ns: reported.last_record_ns,
                    },
                )
            })
            .collect()
    }

    /// An interim record of a live flow.
    pub fn interim(&mut self, flow: &Flow, now_ns: u64) -> FlowRecord {
        self.record(flow, RecordType::Interim, None, now_ns)
    }

    /// The final record of `flow`; the agent forgets it.
    pub fn finish(&mut self, flow: &Flow, reason: EndReason, now_ns: u64) -> FlowRecord {
        let record = self.record(flow, RecordType::Final, Some(reason), now_ns);
        self.flows.remove(&flow.key);
        self.restored.remove(&flow.key);
        record
    }

    fn record(
        &mut self,
        flow: &Flow,
        record_type: RecordType,
        end_reason: Option<EndReason>,
        now_ns: u64,
    ) -> FlowRecord {
        let previous = match self.flows.get(&flow.key) {
            Some(live) => live.reported.as_ref(),
            None => self.restored.get(&flow.key),
        };
        let sequence = previous.map_or(0, |t| t.records);
        let deltas = Deltas::since(flow, previous.map(|t| &*t.last_record));
        let labels = Labels {
            flow_id: previous.map_or_else(Uuid::new_v4, |t| t.flow_id),
            // The flow's endpoints do not change, nor does its id: it is hashed once.
            community_id: previous.map_or_else(
                || flow.community_id(),
                |t| t.last_record.community_id.clone(),
            ),
            sensor_id: self.sensor_id.clone(),
            iface: self
                .iface_names
                .entry(flow.ifindex)
                .or_insert_with(|| self.ifaces.name(flow.ifindex).into())
                .clone(),
        };
        let flow_id = labels.flow_id;
        let record = FlowRecord::new(
            flow,
            labels,
            sequence,
            record_type,
            end_reason,
            deltas,
            &self.wall,
            now_ns,
        );
        if let Some(live) = self.flows.get_mut(&flow.key) {
            live.reported = Some(Reported {
                flow_id,
                records: sequence + 1,
                last_record: Box::new(record.clone()),
                last_record_ns: now_ns,
            });
        }
        record
    }
}

/// The end of the interim interval (of `interval` jiffies, from `first_seen`) that jiffy `at`
/// falls in.
fn next_boundary(first_seen: u64, at: u64, interval: u64) -> u64 {
    first_seen + (at.saturating_sub(first_seen) / interval + 1) * interval
}

impl Live {
    fn new(first_seen: u64, last_seen: u64, closing: bool, interim_ticks: u64) -> Self {
        Self {
            first_seen,
            last_seen,
            closing,
            active: false,
            next_interim: first_seen + interim_ticks,
            bucket: 0,
            read: 0,
            reported: None,
            ifindex: 0,
            state: TcpState::None,
            bytes: 0,
            packets: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowmon_common::{FlowSide, tcp_flags::*};

    const SECOND: u64 = 1_000_000_000;

    /// Jiffies of the test clock at `secs` seconds of CLOCK_MONOTONIC (4 ms ticks, jiffy
    /// 1000 at 5 s).
    fn jiffies(secs: u64) -> u64 {
        1_000 + (secs * SECOND - 5 * SECOND) / 4_000_000
    }

    fn tracker() -> FlowTracker<HashMap<u32, String>> {
        let minute = Duration::from_secs(60);
        let timeouts = Timeouts {
            tcp: minute,
            tcp_close: Duration::from_secs(5),
            udp: Duration::from_secs(30),
            icmp: minute,
            other: minute,
            interim: Duration::from_secs(20),
        };
        FlowTracker::new(
            timeouts,
            Duration::from_secs(1),
            KernelClock::test_clock(),
            WallClock::new(),
            "test".into(),
            HashMap::new(),
        )
    }

    fn key(port: u16, protocol: u8) -> FlowKey {
        FlowKey {
            port_lo: 80,
            port_hi: 40_000 + port,
            protocol,
            ..FlowKey::default()
        }
    }

    /// A flow whose client (hi, on the high port) sent `packets` packets, first at 10 s, last
    /// at `last` s.
    fn block(packets: u64, last: u64, flags: u8) -> FlowBlock {
        FlowBlock {
            first_seen: jiffies(10),
            hi: FlowSide {
                packets,
                bytes: packets * 100,
                last_seen: jiffies(last),
                marks: flags as u64,
                ..FlowSide::default()
            },
            lo: FlowSide {
                marks: flags as u64,
                ..FlowSide::default()
            },
            ..FlowBlock::default()
        }
    }

    /// Looks at `flows` at `now` seconds as the monitor does, making the records it makes.
    fn look(
        tracker: &mut FlowTracker<HashMap<u32, String>>,
        flows: &[(FlowKey, FlowBlock)],
        now: u64,
    ) -> Vec<Verdict> {
        flows
            .iter()
            .map(|(key, block)| {
                let (look, _) = tracker.look(*key, block, now * SECOND);
                let flow = Flow::from_block(*key, block, tracker.clock());
                match look.verdict {
                    Verdict::Interim => {
                        tracker.interim(&flow, now * SECOND);
                    }
                    Verdict::Expire(reason) => {
                        tracker.finish(&flow, reason, now * SECOND);
                    }
                    Verdict::Keep => {}
                }
                look.verdict
            })
            .collect()
    }

    #[test]
    fn verdicts_follow_the_timeouts_of_each_protocol_and_state() {
        let mut t = tracker();
        let flows = [
            (key(1, ip_proto::TCP), block(3, 11, ACK)),
            (key(2, ip_proto::TCP), block(3, 11, FIN | ACK)),
            (key(3, ip_proto::UDP), block(3, 11, 0)),
            (key(4, ip_proto::TCP), block(3, 11, RST)),
        ];
        assert_eq!(look(&mut t, &flows, 15), [Verdict::Keep; 4]);
        // 9 s idle: past the close timeout for the RST flow and the one with FIN from both
        // sides, not for the others.
        let verdicts = look(&mut t, &flows, 20);
        assert_eq!(
            verdicts,
            [
                Verdict::Keep,
                Verdict::Expire(EndReason::End),
                Verdict::Keep,
                Verdict::Expire(EndReason::End),
            ]
        );
        // UDP idle for 30 s ends idle; the TCP flow's first interval (10-30 s) saw packets
        // after its first one: an interim record.
        let verdicts = look(&mut t, &[flows[0], flows[2]], 41);
        assert_eq!(
            verdicts,
            [Verdict::Interim, Verdict::Expire(EndReason::Idle)]
        );
        assert_eq!(t.live(), 1);
    }

    #[test]
    fn interim_records_come_once_per_interval_in_which_the_flow_sent_something() {
        let mut t = tracker();
        let k = key(1, ip_proto::TCP);
        let mut interims = Vec::new();
        // Looks every second from 11 s to 95 s; the flow sends a packet a second, except from
        // 50 s to 72 s.
        let mut sent = 0;
        for now in 11..=95 {
            if !(50..=72).contains(&now) {
                sent += 1;
            }
            let last = if (50..=72).contains(&now) { 49 } else { now };
            if look(&mut t, &[(k, block(sent, last, ACK))], now) == [Verdict::Interim] {
                interims.push(now);
            }
        }
        // Its first packet was at 10 s: intervals end at 30, 50, 70 and 90 s; the one from 50
        // to 70 s was silent.
        assert_eq!(interims, [30, 50, 90]);
        let last = t.last_records().remove(&k).unwrap().record;
        assert_eq!(last.sequence, 2);
        // 39 packets by 49 s, 18 more from 73 to 90 s.
        assert_eq!((last.client_packets, last.client_packets_delta), (57, 18));
    }

    #[test]
    fn a_flow_is_looked_at_only_when_a_deadline_comes() {
        let mut t = tracker();
        let (udp, tcp) = (key(1, ip_proto::UDP), key(2, ip_proto::TCP));
        t.heard(udp, jiffies(10), event::CREATED);
        t.heard(tcp, jiffies(10), event::CREATED);
        // Nothing is due before the UDP idle deadline at 40 s.
        for now in 11..40 {
            assert!(t.due(now * SECOND).is_empty(), "{now}");
        }
        assert_eq!(t.due(40 * SECOND), [udp]);
        // The TCP flow said it is closing at 12 s: a look at the close deadline, 17 s later.
        t.heard(tcp, jiffies(12), event::CLOSING);
        assert_eq!(t.due(16 * SECOND), []);
        assert_eq!(t.due(17 * SECOND), [tcp]);
        // It had sent more since: the look finds it not idle and it waits again.
        let (look, _) = t.look(tcp, &block(5, 16, FIN | ACK), 17 * SECOND);
        assert_eq!(look.verdict, Verdict::Keep);
        assert_eq!(t.due(20 * SECOND), []);
        assert_eq!(t.due(21 * SECOND), [tcp]);
    }

    #[test]
    fn activity_brings_a_look_at_the_end_of_its_interval_and_then_is_spent() {
        let mut t = tracker();
        let k = key(1, ip_proto::TCP);
        t.heard(k, jiffies(10), event::CREATED);
        t.heard(k, jiffies(12), event::ACTIVE);
        assert!(t.due(29 * SECOND).is_empty());
        assert_eq!(t.due(30 * SECOND), [k]);
        let (look, _) = t.look(k, &block(2, 12, ACK), 30 * SECOND + 300_000_000);
        assert_eq!(look.verdict, Verdict::Interim);
        assert_eq!(look.lateness_ns, 300_000_000);
        t.interim(
            &Flow::from_block(k, &block(2, 12, ACK), t.clock()),
            30 * SECOND,
        );
        // Silent since: the next look is the idle deadline, a minute after 12 s.
        assert!(t.due(71 * SECOND).is_empty());
        assert_eq!(t.due(72 * SECOND), [k]);
    }

    #[test]
    fn activity_in_a_later_interval_is_due_at_its_end() {
        let mut t = tracker();
        let k = key(1, ip_proto::TCP);
        t.heard(k, jiffies(10), event::CREATED);
        // Silent through the first interval (10-30 s); a packet at 41 s.
        t.heard(k, jiffies(41), event::ACTIVE);
        assert!(t.due(49 * SECOND).is_empty());
        assert_eq!(t.due(50 * SECOND), [k]);
        let (look, _) = t.look(k, &block(2, 41, ACK), 50 * SECOND);
        assert_eq!(
            look,
            Look {
                verdict: Verdict::Interim,
                lateness_ns: 0
            }
        );
    }

    #[test]
    fn activity_heard_before_the_look_at_an_intervals_end_counts_for_the_next() {
        let mut t = tracker();
        let k = key(1, ip_proto::TCP);
        t.heard(k, jiffies(10), event::CREATED);
        t.heard(k, jiffies(12), event::ACTIVE);
        // The kernel's news of the next interval comes before the poll that looks at the end of
        // the first: it is in the look's record, and the next interval still needs a look.
        t.heard(k, jiffies(30), event::ACTIVE);
        assert_eq!(t.due(31 * SECOND), [k]);
        let (look, _) = t.look(k, &block(3, 30, ACK), 31 * SECOND);
        assert_eq!(look.verdict, Verdict::Interim);
        t.interim(
            &Flow::from_block(k, &block(3, 30, ACK), t.clock()),
            31 * SECOND,
        );
        assert!(t.due(49 * SECOND).is_empty());
        assert_eq!(t.due(50 * SECOND), [k]);
    }

    #[test]
    fn an_event_of_a_flow_not_known_yet_brings_a_look() {
        let mut t = tracker();
        let k = key(1, ip_proto::UDP);
        // Another CPU's event came before the one of the packet that created the flow.
        t.heard(k, jiffies(11), event::CLOSING);
        assert_eq!(t.due(11 * SECOND), [k]);
        let (look, _) = t.look(k, &block(2, 11, 0), 11 * SECOND);
        assert_eq!(look.verdict, Verdict::Keep);
        t.heard(k, jiffies(10), event::CREATED);
        assert!(t.due(12 * SECOND).is_empty(), "its creation is no news");
        assert_eq!(t.live(), 1);
    }

    #[test]
    fn flows_a_read_lacks_were_evicted_and_those_that_reported_get_a_record() {
        let mut t = tracker();
        let (kept, lost, unreported) = (
            key(1, ip_proto::TCP),
            key(2, ip_proto::TCP),
            key(3, ip_proto::TCP),
        );
        look(
            &mut t,
            &[(kept, block(20, 29, ACK)), (lost, block(5, 29, ACK))],
            30,
        );
        t.heard(unreported, jiffies(30), event::CREATED);
        t.begin_read();
        t.look(kept, &block(21, 31, ACK), 31 * SECOND);
        let (mut gone, records) = t.unread(31 * SECOND);
        gone.sort();
        assert_eq!(gone, [lost, unreported]);
        assert_eq!(records.len(), 1);
        let (evicted_key, record) = &records[0];
        assert_eq!(*evicted_key, lost);
        assert_eq!(record.end_reason, Some(EndReason::Evicted));
        assert_eq!((record.sequence, record.client_packets), (1, 5));
        assert_eq!(t.live(), 1);
    }

    #[test]
    fn a_restarted_tracker_continues_ids_and_reports_what_the_map_lost() {
        let mut first = tracker();
        let (kept, lost) = (key(1, ip_proto::TCP), key(2, ip_proto::TCP));
        let flows = [(kept, block(20, 29, ACK)), (lost, block(5, 29, ACK))];
        look(&mut first, &flows, 30);
        let journal = first.last_records();

        let mut second = tracker();
        second.restore(journal);
        second.begin_read();
        let (look_kept, _) = second.look(kept, &block(25, 31, ACK), 31 * SECOND);
        assert_eq!(look_kept.verdict, Verdict::Keep);
        let (gone, evicted) = second.unread(31 * SECOND);
        assert!(gone.is_empty(), "the restored flow was not live yet");
        assert_eq!(evicted.len(), 1);
        let (evicted_key, record) = &evicted[0];
        assert_eq!(*evicted_key, lost);
        assert_eq!(record.end_reason, Some(EndReason::Evicted));
        assert_eq!((record.sequence, record.client_packets), (1, 5));
        // The other one goes on with its id and the next sequence number.
        let interim = second.interim(
            &Flow::from_block(kept, &block(25, 31, ACK), second.clock()),
            31 * SECOND,
        );
        let before = &first.last_records()[&kept].record;
        assert_eq!(interim.flow_id, before.flow_id);
        assert_eq!((interim.sequence, interim.client_packets_delta), (1, 5));
    }
}
