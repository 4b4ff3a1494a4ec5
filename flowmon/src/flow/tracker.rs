//! The flow lifecycle: which flows are idle, closed or due an interim record at each poll, and
//! the records that say so. Pure logic over snapshots of the kernel map, so it is tested without
//! a kernel.

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use flowmon_common::{FlowKey, ip_proto};

use super::{
    Flow,
    clock::WallClock,
    journal::LastRecord,
    record::{Deltas, EndReason, FlowRecord, Origin, RecordType},
};

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
    fn idle(&self, flow: &Flow) -> u64 {
        match flow.key.protocol {
            ip_proto::TCP if flow.tcp_state().is_closing() => self.tcp_close,
            ip_proto::TCP => self.tcp,
            ip_proto::UDP => self.udp,
            ip_proto::ICMP | ip_proto::ICMPV6 => self.icmp,
            _ => self.other,
        }
    }
}

/// What the agent knows of a flow between polls.
#[derive(Clone, Debug)]
struct Tracked {
    flow_id: String,
    /// Records made so far; the next record's sequence number.
    records: u64,
    /// The last record, for the next one's deltas.
    last_record: Option<FlowRecord>,
    last_record_ns: u64,
    /// The flow as last read, reported if the kernel evicts it (none for a flow taken over
    /// from a previous run and not read since).
    last_seen: Option<Flow>,
    /// The poll that last read it.
    poll: u64,
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
    /// Number of the current poll.
    poll: u64,
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

    /// Notes `flow` as read at this poll and says what to do with it now. One lookup per
    /// flow: a poll of a million flows is bound by these lookups.
    pub fn step(&mut self, flow: &Flow, now_ns: u64) -> Verdict {
        let tracked = self.observe(flow);
        let since_record = now_ns.saturating_sub(tracked.last_record_ns);
        let idle_for = now_ns.saturating_sub(flow.last_seen_ns);
        if idle_for >= self.timeouts.idle(flow) {
            let reason = if flow.tcp_state().is_closing() {
                EndReason::End
            } else {
                EndReason::Idle
            };
            Verdict::Expire(reason)
        } else if since_record >= self.timeouts.interim {
            Verdict::Interim
        } else {
            Verdict::Keep
        }
    }

    /// Starts a poll: flows not observed until the next call are missing from the map.
    pub fn begin_poll(&mut self) {
        self.poll += 1;
    }

    /// Notes `flow` as read at this poll.
    fn observe(&mut self, flow: &Flow) -> &mut Tracked {
        let poll = self.poll;
        self.flows
            .entry(flow.key)
            .and_modify(|tracked| {
                tracked.last_seen = Some(flow.clone());
                tracked.poll = poll;
            })
            .or_insert_with(|| Tracked {
                flow_id: uuid::Uuid::new_v4().to_string(),
                records: 0,
                last_record: None,
                last_record_ns: flow.first_seen_ns,
                last_seen: Some(flow.clone()),
                poll,
            })
    }

    /// Continues the flows a previous run reported (from the journal).
    pub fn restore(&mut self, flows: HashMap<FlowKey, LastRecord>) {
        for (key, last) in flows {
            self.flows.insert(
                key,
                Tracked {
                    flow_id: last.record.flow_id.clone(),
                    records: last.record.sequence + 1,
                    last_record_ns: last.made_ns,
                    last_record: Some(last.record),
                    last_seen: None,
                    poll: self.poll,
                },
            );
        }
    }

    /// The last record of every followed flow that has one: what the journal must keep.
    pub fn last_records(&self) -> HashMap<FlowKey, LastRecord> {
        self.flows
            .iter()
            .filter_map(|(key, tracked)| {
                let record = tracked.last_record.clone()?;
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
        self.flows.remove(&flow.key);
        record
    }

    /// Final "evicted" records for flows this poll did not read although the agent never
    /// removed them: the kernel's LRU dropped them. Each carries the counts the agent last
    /// read.
    pub fn finish_missing(&mut self, now_ns: u64) -> Vec<(FlowKey, FlowRecord)> {
        let missing: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, tracked)| tracked.poll != self.poll)
            .map(|(key, _)| *key)
            .collect();
        missing
            .into_iter()
            .filter_map(|key| {
                let tracked = self.flows.remove(&key)?;
                let record = match (&tracked.last_seen, &tracked.last_record) {
                    (Some(flow), _) => {
                        let flow = flow.clone();
                        self.flows.insert(key, tracked);
                        self.finish(&flow, EndReason::Evicted, now_ns)
                    }
                    (None, Some(last)) => last.evicted(tracked.records, &self.clock, now_ns),
                    (None, None) => return None,
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
        self.observe(flow);
        let iface = self.ifaces.name(flow.ifindex);
        let tracked = self.flows.get_mut(&flow.key).expect("observed above");
        let origin = Origin {
            sensor_id: &self.sensor_id,
            iface: &iface,
        };
        let record = FlowRecord::new(
            flow,
            &tracked.flow_id,
            tracked.records,
            &origin,
            record_type,
            end_reason,
            Deltas::since(flow, tracked.last_record.as_ref()),
            &self.clock,
            now_ns,
        );
        tracked.records += 1;
        tracked.last_record = Some(record.clone());
        tracked.last_record_ns = now_ns;
        record
    }
}
