//! The flow lifecycle: which flows are idle, closed or due an interim record at each poll, and
//! the records that say so. Pure logic over snapshots of the kernel map, so it is tested without
//! a kernel.

use std::{collections::HashMap, time::Duration};

use rustc_hash::{FxHashMap, FxHashSet};
use uuid::Uuid;

use flowmon_common::{FlowBlock, FlowKey, TcpState, ip_proto};

use super::{
    Flow,
    journal::LastRecord,
    record::{Deltas, EndReason, FlowRecord, Origin, RecordType},
    wall_clock::WallClock,
};
use crate::datapath::{FlowTable, KernelClock};

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
    /// Between two interim records of a live flow.
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
struct Tracked {
    flow_id: Uuid,
    /// Records made so far; the next record's sequence number.
    records: u64,
    /// The last record (its totals give the next one's deltas) and when it was made.
    last_record: Box<FlowRecord>,
    last_record_ns: u64,
}

/// The decision for one flow at one poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Interim,
    Expire(EndReason),
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

/// Decides each flow's fate from its block alone, and keeps state only for flows that have
/// had a record: a poll of a million flows that are due nothing touches nothing but the table
/// it read.
pub struct FlowTracker<N> {
    /// FxHash: keys come from the kernel's own flows.
    flows: FxHashMap<FlowKey, Tracked>,
    /// Flows a previous run reported that no poll of this run has read yet.
    unread_restored: FxHashSet<FlowKey>,
    /// Monotonic time of the previous poll: an interim record is due when a flow's age
    /// crosses a multiple of the interval between that poll and this one.
    last_poll_ns: u64,
    timeouts: Timeouts,
    clock: WallClock,
    sensor_id: String,
    ifaces: N,
}

impl<N: IfaceNames> FlowTracker<N> {
    pub fn new(timeouts: Timeouts, clock: WallClock, sensor_id: String, ifaces: N) -> Self {
        Self {
            flows: FxHashMap::default(),
            unread_restored: FxHashSet::default(),
            last_poll_ns: 0,
            timeouts,
            clock,
            sensor_id,
            ifaces,
        }
    }

    /// Flows that have had a record and have not ended.
    pub fn reported(&self) -> usize {
        self.flows.len()
    }

    /// What to do with the flow of `key` now, from its block alone.
    pub fn verdict(
        &self,
        key: &FlowKey,
        block: &FlowBlock,
        clock: &KernelClock,
        now_ns: u64,
    ) -> Verdict {
        let last_seen = clock.monotonic_ns(block.last_seen());
        // Closing (both FINs, or an RST) does not depend on which side is the client.
        let closing = key.protocol == ip_proto::TCP
            && TcpState::from_flags(block.lo.tcp_flags(), block.hi.tcp_flags()).is_closing();
        if now_ns.saturating_sub(last_seen) >= self.timeouts.idle_ns(key.protocol, closing) {
            return Verdict::Expire(if closing {
                EndReason::End
            } else {
                EndReason::Idle
            });
        }
        // Interim records at every multiple of the interval after the first packet.
        let first_seen = clock.monotonic_ns(block.first_seen);
        let interval = nanos(self.timeouts.interim).max(1);
        let intervals = |at: u64| at.saturating_sub(first_seen) / interval;
        if intervals(now_ns) > intervals(self.last_poll_ns) {
            Verdict::Interim
        } else {
            Verdict::Keep
        }
    }

    /// Ends a poll made at `now_ns`.
    pub fn end_poll(&mut self, now_ns: u64) {
        self.last_poll_ns = now_ns;
    }

    pub fn last_poll_ns(&self) -> u64 {
        self.last_poll_ns
    }

    /// Continues the flows a previous run reported (from the journal), whose last poll was
    /// at `polled_ns` (monotonic; a time ahead of now is from before a reboot).
    pub fn restore(&mut self, flows: HashMap<FlowKey, LastRecord>, polled_ns: u64, now_ns: u64) {
        self.last_poll_ns = polled_ns.min(now_ns);
        for (key, last) in flows {
            self.unread_restored.insert(key);
            self.flows.insert(
                key,
                Tracked {
                    // Ids this agent made are uuids; anything else starts the flow anew.
                    flow_id: Uuid::parse_str(&last.record.flow_id)
                        .unwrap_or_else(|_| Uuid::new_v4()),
                    records: last.record.sequence + 1,
                    last_record_ns: last.made_ns,
                    last_record: Box::new(last.record),
                },
            );
        }
    }

    /// Final "evicted" records for the flows a previous run reported that are not in
    /// `table`, this run's first read of the map: the kernel dropped them while no agent
    /// watched. They carry their last record's totals.
    pub fn finish_unread_restored(
        &mut self,
        table: &FlowTable,
        now_ns: u64,
    ) -> Vec<(FlowKey, FlowRecord)> {
        if self.unread_restored.is_empty() {
            return Vec::new();
        }
        for (key, _) in table.iter() {
            self.unread_restored.remove(&key);
        }
        let unread = std::mem::take(&mut self.unread_restored);
        unread
            .into_iter()
            .filter_map(|key| {
                let tracked = self.flows.remove(&key)?;
                let record = tracked
                    .last_record
                    .evicted(tracked.records, &self.clock, now_ns);
                Some((key, record))
            })
            .collect()
    }

    /// The last record of every followed flow: what the journal must keep.
    pub fn last_records(&self) -> HashMap<FlowKey, LastRecord> {
        self.flows
            .iter()
            .map(|(key, tracked)| {
                (
                    *key,
                    LastRecord {
                        record: (*tracked.last_record).clone(),
                        made_ns: tracked.last_record_ns,
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
        record
    }

    fn record(
        &mut self,
        flow: &Flow,
        record_type: RecordType,
        end_reason: Option<EndReason>,
        now_ns: u64,
    ) -> FlowRecord {
        let previous = self.flows.get(&flow.key);
        let flow_id = previous.map_or_else(Uuid::new_v4, |t| t.flow_id);
        let sequence = previous.map_or(0, |t| t.records);
        let deltas = Deltas::since(flow, previous.map(|t| &*t.last_record));
        let iface = self.ifaces.name(flow.ifindex);
        let origin = Origin {
            sensor_id: &self.sensor_id,
            iface: &iface,
        };
        let record = FlowRecord::new(
            flow,
            &flow_id.to_string(),
            sequence,
            &origin,
            record_type,
            end_reason,
            deltas,
            &self.clock,
            now_ns,
        );
        self.flows.insert(
            flow.key,
            Tracked {
                flow_id,
                records: sequence + 1,
                last_record: Box::new(record.clone()),
                last_record_ns: now_ns,
            },
        );
        record
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
        FlowTracker::new(timeouts, WallClock::new(), "test".into(), HashMap::new())
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

    /// The verdicts of one poll at `now` seconds; interim records are made as the monitor
    /// makes them.
    fn poll(
        tracker: &mut FlowTracker<HashMap<u32, String>>,
        flows: &[(FlowKey, FlowBlock)],
        now: u64,
    ) -> Vec<Verdict> {
        let clock = KernelClock::test_clock();
        let verdicts = flows
            .iter()
            .map(|(key, block)| {
                let verdict = tracker.verdict(key, block, &clock, now * SECOND);
                let flow = Flow::from_block(*key, block, &clock);
                match verdict {
                    Verdict::Interim => {
                        tracker.interim(&flow, now * SECOND);
                    }
                    Verdict::Expire(reason) => {
                        tracker.finish(&flow, reason, now * SECOND);
                    }
                    Verdict::Keep => {}
                }
                verdict
            })
            .collect();
        tracker.end_poll(now * SECOND);
        verdicts
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
        assert_eq!(poll(&mut t, &flows, 15), [Verdict::Keep; 4]);
        // 9 s idle: past the close timeout for the RST flow and the one with FIN from both
        // sides, not for the others.
        let verdicts = poll(&mut t, &flows, 20);
        assert_eq!(
            verdicts,
            [
                Verdict::Keep,
                Verdict::Expire(EndReason::End),
                Verdict::Keep,
                Verdict::Expire(EndReason::End),
            ]
        );
        // UDP idle for 30 s ends idle; the TCP flow is not idle for a minute yet.
        let verdicts = poll(&mut t, &[flows[0], flows[2]], 41);
        assert_eq!(
            verdicts,
            [Verdict::Interim, Verdict::Expire(EndReason::Idle)]
        );
    }

    #[test]
    fn interim_records_come_once_per_interval_with_exact_deltas() {
        let mut t = tracker();
        let k = key(1, ip_proto::TCP);
        let mut interims = Vec::new();
        // Polls every second from 11 s to 75 s; the flow grows by one packet a second.
        for now in 11..=75 {
            let flows = [(k, block(now - 10, now, ACK))];
            if poll(&mut t, &flows, now) == [Verdict::Interim] {
                interims.push(now);
            }
        }
        // Its first packet was at 10 s: intervals end at 30, 50 and 70 s.
        assert_eq!(interims, [30, 50, 70]);
        let last = t.last_records().remove(&k).unwrap().record;
        assert_eq!(last.sequence, 2);
        assert_eq!((last.client_packets, last.client_packets_delta), (60, 20));
        // A record only for flows that had one: nothing is kept for the others.
        assert_eq!(t.reported(), 1);
    }

    #[test]
    fn a_restarted_tracker_continues_ids_and_reports_what_the_map_lost() {
        let mut first = tracker();
        let (kept, lost) = (key(1, ip_proto::TCP), key(2, ip_proto::TCP));
        let flows = [(kept, block(20, 30, ACK)), (lost, block(5, 30, ACK))];
        poll(&mut first, &flows, 30);
        let journal = first.last_records();

        let mut second = tracker();
        second.restore(journal, 30 * SECOND, 31 * SECOND);
        let table = FlowTable::from_blocks(KernelClock::test_clock(), &flows[..1]);
        let evicted = second.finish_unread_restored(&table, 31 * SECOND);
        assert_eq!(evicted.len(), 1);
        let (evicted_key, record) = &evicted[0];
        assert_eq!(*evicted_key, lost);
        assert_eq!(record.end_reason, Some(EndReason::Evicted));
        assert_eq!((record.sequence, record.client_packets), (1, 5));
        // The other one goes on with its id and the next sequence number.
        let interim = second.interim(
            &Flow::from_block(kept, &block(25, 31, ACK), &KernelClock::test_clock()),
            31 * SECOND,
        );
        let before = &first.last_records()[&kept].record;
        assert_eq!(interim.flow_id, before.flow_id);
        assert_eq!((interim.sequence, interim.client_packets_delta), (1, 5));
    }
}
