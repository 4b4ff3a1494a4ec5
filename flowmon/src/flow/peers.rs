//! The flows of each peer, in memory: the session analyzer of this host joins a session with
//! its peer's flows from here, without a round trip to Redis (other hosts read the same from
//! `flowmon:peer:<ip>`). Fed with every record the flow monitor makes; keeps the latest record
//! of each flow, for a bounded time and a bounded number of flows.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Mutex,
};

use super::record::{FlowId, FlowRecord};

/// Records of the flows of each address, the latest per flow.
pub struct PeerFlows {
    inner: Mutex<Index>,
    /// Seconds a flow is kept after its last packet.
    retention: f64,
    /// Most flows kept; beyond, those whose last packet is oldest go first.
    max_flows: usize,
}

#[derive(Default)]
struct Index {
    /// Address -> flow_id -> the flow's latest record.
    by_peer: HashMap<IpAddr, HashMap<FlowId, FlowRecord>>,
    /// (last_seen, flow_id) of every flow held, oldest first, for pruning.
    by_age: BTreeMap<(OrderedSecs, FlowId), [IpAddr; 2]>,
}

/// Epoch seconds, ordered (records never carry NaN).
#[derive(Clone, Copy, Debug)]
struct OrderedSecs(f64);

impl PartialEq for OrderedSecs {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for OrderedSecs {}

impl PartialOrd for OrderedSecs {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedSecs {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl PeerFlows {
    pub fn new(retention: f64, max_flows: usize) -> Self {
        Self {
            inner: Mutex::new(Index::default()),
            retention,
            max_flows,
        }
    }

    /// Notes `records` (in order: a later record of a flow replaces an earlier one).
    pub fn record(&self, records: &[FlowRecord]) {
        let mut index = self.inner.lock().expect("peer index lock");
        for record in records {
            let (client, server) = (record.client_ip, record.server_ip);
            if let Some(previous) = index
                .by_peer
                .get(&client)
                .and_then(|f| f.get(&record.flow_id))
            {
                let age = (OrderedSecs(previous.last_seen), record.flow_id.clone());
                index.by_age.remove(&age);
            }
            for peer in [client, server] {
                index
                    .by_peer
                    .entry(peer)
                    .or_default()
                    .insert(record.flow_id.clone(), record.clone());
            }
            index.by_age.insert(
                (OrderedSecs(record.last_seen), record.flow_id.clone()),
                [client, server],
            );
        }
        let newest = records.iter().map(|r| r.last_seen).fold(0.0, f64::max);
        index.prune(newest - self.retention, self.max_flows);
    }

    /// The latest record of every flow of `peer` active between `from` and `to` (epoch s).
    pub fn flows_of(&self, peer: IpAddr, from: f64, to: f64) -> Vec<FlowRecord> {
        let index = self.inner.lock().expect("peer index lock");
        let mut flows: Vec<FlowRecord> = index
            .by_peer
            .get(&peer)
            .into_iter()
            .flat_map(HashMap::values)
            .filter(|r| r.last_seen >= from && r.first_seen <= to)
            .cloned()
            .collect();
        flows.sort_by(|a, b| a.first_seen.total_cmp(&b.first_seen));
        flows
    }
}

impl crate::analyzer::FlowSource for PeerFlows {
    fn origin(&self) -> crate::analyzer::FlowOrigin {
        crate::analyzer::FlowOrigin::Local
    }

    fn flows_of(&self, peer: IpAddr, from: f64, to: f64) -> crate::analyzer::FlowsFuture<'_> {
        Box::pin(std::future::ready(Ok(Some(PeerFlows::flows_of(
            self, peer, from, to,
        )))))
    }
}

impl Index {
    /// Drops flows last seen before `oldest`, then the oldest beyond `max_flows`.
    fn prune(&mut self, oldest: f64, max_flows: usize) {
        loop {
            let over = self.by_age.len() > max_flows;
            let Some(entry) = self.by_age.first_entry() else {
                break;
            };
            if entry.key().0.0 >= oldest && !over {
                break;
            }
            let ((_, flow_id), peers) = entry.remove_entry();
            for peer in peers {
                if let Some(flows) = self.by_peer.get_mut(&peer) {
                    flows.remove(&flow_id);
                    if flows.is_empty() {
                        self.by_peer.remove(&peer);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::record::{RecordType, sample::record};

    fn at(flow: &str, sequence: u64, last_seen: f64) -> FlowRecord {
        FlowRecord {
            first_seen: 100.0,
            last_seen,
            ..record(flow, sequence, RecordType::Interim)
        }
    }

    #[test]
    fn keeps_the_latest_record_of_each_flow_of_both_addresses() {
        let peers = PeerFlows::new(1000.0, 10);
        peers.record(&[at("a", 0, 110.0), at("b", 0, 120.0)]);
        peers.record(&[at("a", 1, 130.0)]);
        let client: IpAddr = "10.0.0.2".parse().unwrap();
        let flows = peers.flows_of(client, 0.0, 200.0);
        let ids: Vec<&str> = flows.iter().map(|r| r.record_id.as_str()).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&"a:1") && ids.contains(&"b:0"), "{ids:?}");
        assert_eq!(
            peers
                .flows_of("10.0.0.1".parse().unwrap(), 0.0, 200.0)
                .len(),
            2
        );
        // Outside the window: none.
        assert!(peers.flows_of(client, 140.0, 200.0).is_empty());
    }

    #[test]
    fn forgets_flows_past_the_retention_and_beyond_the_cap() {
        let peers = PeerFlows::new(50.0, 2);
        peers.record(&[at("old", 0, 100.0)]);
        peers.record(&[at("x", 0, 160.0), at("y", 0, 170.0)]);
        let client: IpAddr = "10.0.0.2".parse().unwrap();
        let kept: Vec<FlowId> = peers
            .flows_of(client, 0.0, 1000.0)
            .into_iter()
            .map(|r| r.flow_id)
            .collect();
        assert_eq!(kept.len(), 2);
        assert!(!kept.contains(&"old".parse().unwrap()));
        peers.record(&[at("z", 0, 175.0)]);
        assert_eq!(
            peers.flows_of(client, 0.0, 1000.0).len(),
            2,
            "capped at two flows"
        );
    }
}
