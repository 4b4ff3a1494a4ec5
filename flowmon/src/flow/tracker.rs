//! The flow lifecycle: which flows are idle, closed or due an interim record at each poll, and
//! the records that say so. Pure logic over snapshots of the kernel map, so it is tested without
//! a kernel.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use uuid::Uuid;

use flowmon_common::{FlowBlock, FlowKey, TcpState, ip_proto, marks::TCP_FLAGS};

use super::{
    Flow,
    clock::WallClock,
    journal::LastRecord,
    record::{Deltas, EndReason, FlowRecord, Origin, RecordType},
};
use crate::datapath::{FlowTable, KernelClock};

/// Idle timeouts per protocol and the interim interval, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp: u64,
    pub tcp_close: u64,
    pub udp: u64,
    pub icmp: u64,
    pub other: u64,
    pub interim: u64,
}

impl Timeouts {
    fn idle(&self, protocol: u8, closing: bool) -> u64 {
        match protocol {
            ip_proto::TCP if closing => self.tcp_close,
            ip_proto::TCP => self.tcp,
            ip_proto::UDP => self.udp,
            ip_proto::ICMP | ip_proto::ICMPV6 => self.icmp,
            _ => self.other,
        }
    }
}

/// The `poll` of a flow no poll has read (polls count from 1).
const NOT_READ: u64 = 0;

/// What the agent knows of a flow between polls: small, because a poll looks up every flow.
#[derive(Clone, Debug)]
struct Tracked {
    flow_id: Uuid,
    /// Records made so far; the next record's sequence number.
    records: u64,
    /// The last record, for the next one's deltas (boxed: most flows never get one).
    last_record: Option<Box<FlowRecord>>,
    last_record_ns: u64,
    /// The poll that last read it, and where in that poll's table: reported from there if the
    /// kernel evicts it (`None` for a flow taken over from a previous run and not read since).
    poll: u64,
    slot: Option<u32>,
}

impl Tracked {
    /// A flow no poll has read yet.
    fn new(first_seen_ns: u64) -> Self {
        Self {
            flow_id: Uuid::new_v4(),
            records: 0,
            last_record: None,
            last_record_ns: first_seen_ns,
            poll: NOT_READ,
            slot: None,
        }
    }
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

pub struct FlowTracker<N> {
    /// FxHash: keys come from the kernel's own flows, and a poll hashes every one of them.
    flows: FxHashMap<FlowKey, Tracked>,
    /// Number of the current poll, and how many of the followed flows it has read: when that
    /// is all of them, none is missing and the search for evicted flows is skipped.
    poll: u64,
    read_this_poll: usize,
    timeouts: Timeouts,
    clock: WallClock,
    sensor_id: String,
    ifaces: N,
}

impl<N: IfaceNames> FlowTracker<N> {
    pub fn new(timeouts: Timeouts, clock: WallClock, sensor_id: String, ifaces: N) -> Self {
        Self {
            flows: FxHashMap::default(),
            poll: 0,
            read_this_poll: 0,
            timeouts,
            clock,
            sensor_id,
            ifaces,
        }
    }

    /// Flows the agent currently follows.
    pub fn live(&self) -> usize {
        self.flows.len()
    }

    /// Starts a poll: flows not stepped until the next call are missing from the map.
    pub fn begin_poll(&mut self) {
        self.poll += 1;
        self.read_this_poll = 0;
    }

    /// Notes the flow of `key`, read into `slot` of this poll's table, and says what to do
    /// with it now. Works on the block as the kernel wrote it, one hash lookup per flow and no
    /// copies: a poll of a million flows is bound by this.
    pub fn step(
        &mut self,
        key: &FlowKey,
        block: &FlowBlock,
        slot: usize,
        clock: &KernelClock,
        now_ns: u64,
    ) -> Verdict {
        let tracked = self
            .flows
            .entry(*key)
            .or_insert_with(|| Tracked::new(clock.monotonic_ns(block.first_seen)));
        if tracked.poll != self.poll {
            tracked.poll = self.poll;
            self.read_this_poll += 1;
        }
        tracked.slot = Some(slot as u32);
        let since_record = now_ns.saturating_sub(tracked.last_record_ns);
        let last_seen = block.lo.last_seen.max(block.hi.last_seen);
        let idle_for = now_ns.saturating_sub(clock.monotonic_ns(last_seen));
        // Closing (both FINs, or an RST) does not depend on which side is the client.
        let flags = |marks: u64| (marks & TCP_FLAGS) as u8;
        let closing = key.protocol == ip_proto::TCP
            && TcpState::from_flags(flags(block.lo.marks), flags(block.hi.marks)).is_closing();
        if idle_for >= self.timeouts.idle(key.protocol, closing) {
            Verdict::Expire(if closing {
                EndReason::End
            } else {
                EndReason::Idle
            })
        } else if since_record >= self.timeouts.interim {
            Verdict::Interim
        } else {
            Verdict::Keep
        }
    }

    /// Continues the flows a previous run reported (from the journal).
    pub fn restore(&mut self, flows: HashMap<FlowKey, LastRecord>) {
        for (key, last) in flows {
            self.flows.insert(
                key,
                Tracked {
                    // Ids this agent made are uuids; anything else starts the flow anew.
                    flow_id: Uuid::parse_str(&last.record.flow_id)
                        .unwrap_or_else(|_| Uuid::new_v4()),
                    records: last.record.sequence + 1,
                    last_record_ns: last.made_ns,
                    last_record: Some(Box::new(last.record)),
                    poll: NOT_READ,
                    slot: None,
                },
            );
        }
    }

    /// The last record of every followed flow that has one: what the journal must keep.
    pub fn last_records(&self) -> HashMap<FlowKey, LastRecord> {
        self.flows
            .iter()
            .filter_map(|(key, tracked)| {
                let record = tracked.last_record.as_deref()?.clone();
                Some((
                    *key,
                    LastRecord {
                        record,
                        made_ns: tracked.last_record_ns,
                    },
                ))
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
        self.forget(&flow.key);
        record
    }

    fn forget(&mut self, key: &FlowKey) {
        if self.flows.remove(key).is_some_and(|t| t.poll == self.poll) {
            self.read_this_poll -= 1;
        }
    }

    /// Final "evicted" records for flows this poll did not read although the agent never
    /// removed them: the kernel's LRU dropped them. Each carries the counts the agent last
    /// read, in `previous`, the table of the poll before.
    pub fn finish_missing(
        &mut self,
        previous: &FlowTable,
        now_ns: u64,
    ) -> Vec<(FlowKey, FlowRecord)> {
        if self.read_this_poll >= self.flows.len() {
            return Vec::new();
        }
        let missing: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, tracked)| tracked.poll != self.poll)
            .map(|(key, _)| *key)
            .collect();
        missing
            .into_iter()
            .filter_map(|key| {
                let tracked = &self.flows[&key];
                let record = match (tracked.slot, &tracked.last_record) {
                    (Some(slot), _) => {
                        let (key, block) = previous.get(slot as usize);
                        let flow = Flow::from_block(key, block, previous.clock());
                        self.finish(&flow, EndReason::Evicted, now_ns)
                    }
                    (None, Some(last)) => {
                        let record = last.evicted(tracked.records, &self.clock, now_ns);
                        self.forget(&key);
                        record
                    }
                    (None, None) => {
                        self.forget(&key);
                        return None;
                    }
                };
                Some((key, record))
            })
            .collect()
    }

    fn record(
        &mut self,
        flow: &Flow,
        record_type: RecordType,
        end_reason: Option<EndReason>,
        now_ns: u64,
    ) -> FlowRecord {
        let tracked = self
            .flows
            .entry(flow.key)
            .or_insert_with(|| Tracked::new(flow.first_seen_ns));
        let iface = self.ifaces.name(flow.ifindex);
        let origin = Origin {
            sensor_id: &self.sensor_id,
            iface: &iface,
        };
        let record = FlowRecord::new(
            flow,
            &tracked.flow_id.to_string(),
            tracked.records,
            &origin,
            record_type,
            end_reason,
            Deltas::since(flow, tracked.last_record.as_deref()),
            &self.clock,
            now_ns,
        );
        tracked.records += 1;
        tracked.last_record = Some(Box::new(record.clone()));
        tracked.last_record_ns = now_ns;
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
        let minute = 60 * SECOND;
        let timeouts = Timeouts {
            tcp: minute,
            tcp_close: 5 * SECOND,
            udp: 30 * SECOND,
            icmp: minute,
            other: minute,
            interim: 20 * SECOND,
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

    /// A flow whose client (hi) sent `packets` packets, first at 10 s, last at `last` s.
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

    fn table(flows: &[(FlowKey, FlowBlock)]) -> FlowTable {
        FlowTable::from_blocks(KernelClock::test_clock(), flows)
    }

    /// One poll at `now` seconds over `flows`: the verdicts, then the evicted records.
    fn poll(
        tracker: &mut FlowTracker<HashMap<u32, String>>,
        flows: &[(FlowKey, FlowBlock)],
        previous: &FlowTable,
        now: u64,
    ) -> (Vec<Verdict>, Vec<(FlowKey, FlowRecord)>) {
        let current = table(flows);
        tracker.begin_poll();
        let clock = KernelClock::test_clock();
        let mut verdicts = Vec::new();
        for (slot, (key, block)) in current.iter().enumerate() {
            let verdict = tracker.step(&key, block, slot, &clock, now * SECOND);
            if let Verdict::Expire(reason) = verdict {
                tracker.finish(&Flow::from_block(key, block, &clock), reason, now * SECOND);
            }
            verdicts.push(verdict);
        }
        (verdicts, tracker.finish_missing(previous, now * SECOND))
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
        let (verdicts, _) = poll(&mut t, &flows, &table(&[]), 15);
        assert_eq!(
            verdicts,
            [Verdict::Keep, Verdict::Keep, Verdict::Keep, Verdict::Keep]
        );
        // 9 s idle: past the close timeout for the RST flow and the one with FIN from both
        // sides, not for the others.
        let (verdicts, _) = poll(&mut t, &flows, &table(&flows), 20);
        assert_eq!(
            verdicts,
            [
                Verdict::Keep,
                Verdict::Expire(EndReason::End),
                Verdict::Keep,
                Verdict::Expire(EndReason::End),
            ]
        );
        // 20 s after the first packet, the interim interval.
        let (verdicts, _) = poll(&mut t, &[flows[0], flows[2]], &table(&flows), 30);
        assert_eq!(verdicts, [Verdict::Interim, Verdict::Interim]);
        // UDP idle for 30 s ends idle.
        let udp = [flows[2]];
        let (verdicts, evicted) = poll(&mut t, &udp, &table(&[flows[0], flows[2]]), 41);
        assert_eq!(verdicts, [Verdict::Expire(EndReason::Idle)]);
        assert_eq!(evicted.len(), 1, "the TCP flow this poll did not read");
    }

    #[test]
    fn a_flow_missing_from_a_poll_ends_evicted_with_the_counts_last_read() {
        let mut t = tracker();
        let (stays, goes, ends) = (key(1, 6), key(2, 6), key(3, 6));
        let first = [
            (stays, block(1, 11, ACK)),
            (goes, block(7, 11, ACK)),
            (ends, block(2, 11, RST)),
        ];
        let (_, evicted) = poll(&mut t, &first, &table(&[]), 12);
        assert!(evicted.is_empty());
        // The RST flow ends at this poll (its slot is freed) while another vanished: the
        // count of flows read must not hide the missing one.
        let second = [(stays, block(2, 19, ACK)), (ends, block(2, 11, RST))];
        let (verdicts, evicted) = poll(&mut t, &second, &table(&first), 19);
        assert_eq!(verdicts[1], Verdict::Expire(EndReason::End));
        assert_eq!(evicted.len(), 1);
        let (evicted_key, record) = &evicted[0];
        assert_eq!(*evicted_key, goes);
        assert_eq!(record.end_reason, Some(EndReason::Evicted));
        assert_eq!((record.client_packets, record.client_bytes), (7, 700));
        assert_eq!(t.live(), 1);
        // Nothing else goes missing after.
        let (_, evicted) = poll(&mut t, &[(stays, block(3, 25, ACK))], &table(&second), 25);
        assert!(evicted.is_empty());
    }
}
