//! The join of a session with the kernel's flows: what its peer did on the network while the
//! session lasted, from the records of the flows between the peer and this sensor.

use std::{
    net::IpAddr,
    pin::Pin,
    sync::atomic::{AtomicBool, Ordering::Relaxed},
};

use anyhow::Result;
use flowmon_common::tcp_flags::{ACK, SYN};
use redis::AsyncCommands as _;
use serde::Serialize;

use crate::{
    flow::record::{FlowRecord, Protocol, latest_per_flow},
    sinks::redis::{FLOW_STREAM, peer_index},
    store::Connection,
};

/// Records of a peer's flows, or `None` when nobody counts flows there.
pub type FlowsFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Vec<FlowRecord>>>> + Send + 'a>>;

/// Where a session's `network` comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowOrigin {
    /// This host's flow monitor.
    Local,
    /// The records the flow monitors of the sensors write to Redis.
    Redis,
}

/// Where the analyzer finds flow records.
pub trait FlowSource: Send + Sync {
    fn origin(&self) -> FlowOrigin;

    /// Records of the flows `peer` took part in (client or server side) last seen at or after
    /// `from`, epoch seconds. Any number per flow; flows first seen after `to` may be among
    /// them: [`Network::of`] keeps the latest record of each flow active in the range. `None`
    /// when no flow monitor reports to the source: then nothing says the peer sent nothing.
    fn flows_of(&self, peer: IpAddr, from: f64, to: f64) -> FlowsFuture<'_>;
}

/// Records read per session at most: a flood of flows costs one bounded read.
const MAX_RECORDS: isize = 10_000;

/// The flow records in Redis: the `flowmon:peer:<ip>` sorted sets the flow monitors write,
/// those of this sensor only (Redis may be shared by many). A Redis where no flow monitor has
/// ever written a record (no `flowmon:flows` stream) is no source of flows.
pub struct RedisFlowSource {
    connection: Connection,
    sensor_id: String,
    /// A flow record was seen written: no need to ask again.
    flows_written: AtomicBool,
}

impl RedisFlowSource {
    /// `sensor_id`: the flow monitor's `--sensor-id`.
    pub fn new(connection: Connection, sensor_id: String) -> Self {
        Self {
            connection,
            sensor_id,
            flows_written: AtomicBool::new(false),
        }
    }
}

impl FlowSource for RedisFlowSource {
    fn origin(&self) -> FlowOrigin {
        FlowOrigin::Redis
    }

    fn flows_of(&self, peer: IpAddr, from: f64, _to: f64) -> FlowsFuture<'_> {
        let mut connection = self.connection.clone();
        Box::pin(async move {
            if !self.flows_written.load(Relaxed) {
                if !connection.exists::<_, bool>(FLOW_STREAM).await? {
                    return Ok(None);
                }
                self.flows_written.store(true, Relaxed);
            }
            let members: Vec<String> = connection
                .zrangebyscore_limit(peer_index(&peer.to_string()), from, "+inf", 0, MAX_RECORDS)
                .await?;
            Ok(members
                .iter()
                .filter_map(|member| match serde_json::from_str::<FlowRecord>(member) {
                    Ok(record) => Some(record),
                    Err(err) => {
                        tracing::debug!(%peer, %err, "unreadable flow record in Redis");
                        None
                    }
                })
                .filter(|record| *record.sensor_id == *self.sensor_id)
                .collect::<Vec<_>>()
                .into())
        })
    }
}

/// Server ports and Community IDs listed at most; the counts stay exact.
const MAX_LISTED: usize = 64;

/// A session's `network`: the flows between its peer and this sensor that were active from
/// its first request minus the session timeout to its last request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Network {
    pub source: FlowOrigin,
    pub flows: u64,
    pub packets_from_peer: u64,
    pub bytes_from_peer: u64,
    pub packets_to_peer: u64,
    pub bytes_to_peer: u64,
    /// Distinct TCP and UDP ports of this sensor the peer connected to, ascending (the lowest
    /// [`MAX_LISTED`]).
    pub server_ports: Vec<u16>,
    pub server_port_count: u64,
    /// TCP flows the peer began whose handshake it never completed (it sent no ACK): SYN
    /// scans, probes of closed ports, floods.
    pub half_open: u64,
    /// Of the flows, by first packet (the first [`MAX_LISTED`]).
    pub community_ids: Vec<String>,
    /// TTL (hop limit) of the peer's first packet in its earliest flow.
    pub first_ttl: Option<u8>,
}

impl Network {
    /// Sums up the latest record of each of `peer`'s flows active between `from` and `to`,
    /// records from `source`.
    pub fn of(
        source: FlowOrigin,
        peer: IpAddr,
        records: &[FlowRecord],
        from: f64,
        to: f64,
    ) -> Self {
        let active = records
            .iter()
            .filter(|record| record.last_seen >= from && record.first_seen <= to);
        let flows: Vec<(&FlowRecord, bool)> = latest_per_flow(active)
            .into_iter()
            .filter_map(|record| Some((record, peer_is_client(peer, record)?)))
            .collect();

        let mut network = Self::none_from(source);
        let mut ports = Vec::new();
        for &(record, peer_is_client) in &flows {
            let (from_peer, to_peer) = if peer_is_client {
                (
                    (record.client_packets, record.client_bytes),
                    (record.server_packets, record.server_bytes),
                )
            } else {
                (
                    (record.server_packets, record.server_bytes),
                    (record.client_packets, record.client_bytes),
                )
            };
            network.flows += 1;
            network.packets_from_peer += from_peer.0;
            network.bytes_from_peer += from_peer.1;
            network.packets_to_peer += to_peer.0;
            network.bytes_to_peer += to_peer.1;
            let tcp = record.protocol == Protocol::TCP;
            if peer_is_client && (tcp || record.protocol == Protocol::UDP) {
                ports.push(record.server_port);
            }
            if peer_is_client && tcp && record.client_tcp_flags & (SYN | ACK) == SYN {
                network.half_open += 1;
            }
            if network.community_ids.len() < MAX_LISTED {
                network.community_ids.push(record.community_id.to_string());
            }
            let ttl = if peer_is_client {
                record.client_ttl
            } else {
                record.server_ttl
            };
            if network.first_ttl.is_none() && ttl != 0 {
                network.first_ttl = Some(ttl);
            }
        }
        ports.sort_unstable();
        ports.dedup();
        network.server_port_count = ports.len() as u64;
        ports.truncate(MAX_LISTED);
        network.server_ports = ports;
        network
    }
}

impl Network {
    /// No flow at all, from `source`.
    pub(crate) fn none_from(source: FlowOrigin) -> Self {
        Self {
            source,
            flows: 0,
            packets_from_peer: 0,
            bytes_from_peer: 0,
            packets_to_peer: 0,
            bytes_to_peer: 0,
            server_ports: Vec::new(),
            server_port_count: 0,
            half_open: 0,
            community_ids: Vec::new(),
            first_ttl: None,
        }
    }
}

/// Which side of `record` `peer` is: `Some(true)` the client, `Some(false)` the server, `None`
/// neither.
fn peer_is_client(peer: IpAddr, record: &FlowRecord) -> Option<bool> {
    let is_peer = |ip: IpAddr| ip.to_canonical() == peer;
    if is_peer(record.client_ip) {
        Some(true)
    } else if is_peer(record.server_ip) {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A record of flow `flow_id` from `client` to `server`.
    pub(crate) fn record(
        flow_id: &str,
        sequence: u64,
        (client, client_port): (&str, u16),
        (server, server_port): (&str, u16),
        (first_seen, last_seen): (f64, f64),
    ) -> FlowRecord {
        serde_json::from_value(json!({
            "flow_id": flow_id, "record_id": format!("{flow_id}:{sequence}"),
            "sequence": sequence, "sensor_id": "sensor", "iface": "eth0",
            "record_type": "interim", "time": last_seen, "protocol": "tcp",
            "community_id": format!("1:{flow_id}"), "client_ip": client,
            "client_port": client_port, "server_ip": server, "server_port": server_port,
            "vlan": 0, "client_packets": 10 * (sequence + 1), "client_bytes": 1000 * (sequence + 1),
            "server_packets": 8, "server_bytes": 6000, "client_packets_delta": 0,
            "client_bytes_delta": 0, "server_packets_delta": 0, "server_bytes_delta": 0,
            "client_tcp_flags": SYN | ACK, "server_tcp_flags": SYN | ACK,
            "tcp_state": "established", "client_ttl": 52, "server_ttl": 64,
            "client_mac": "00:00:00:00:00:01", "server_mac": "00:00:00:00:00:02",
            "first_seen": first_seen, "last_seen": last_seen,
        }))
        .unwrap()
    }

    const PEER: &str = "203.0.113.7";
    const SENSOR: &str = "192.0.2.10";

    #[test]
    fn the_latest_record_of_each_flow_in_range_counts_each_way() {
        let peer = PEER.parse().unwrap();
        let mut syn_only = record("c", 0, (PEER, 40002), (SENSOR, 22), (105.0, 106.0));
        syn_only.client_tcp_flags = SYN;
        syn_only.client_ttl = 0;
        let mut udp = record("d", 0, (PEER, 40003), (SENSOR, 53), (108.0, 108.5));
        udp.protocol = Protocol::UDP;
        let mut outbound = record("e", 0, (SENSOR, 5000), (PEER, 443), (109.0, 109.5));
        outbound.server_ttl = 50;
        let records = [
            record("a", 0, (PEER, 40000), (SENSOR, 80), (100.0, 160.0)),
            record("a", 1, (PEER, 40000), (SENSOR, 80), (100.0, 200.0)),
            record("b", 0, (PEER, 40001), (SENSOR, 80), (101.0, 102.0)),
            syn_only,
            udp,
            outbound,
            // Outside the range: ended before it, began after it, not the peer's.
            record("f", 0, (PEER, 40004), (SENSOR, 8080), (10.0, 20.0)),
            record("g", 0, (PEER, 40005), (SENSOR, 8081), (300.0, 301.0)),
            record(
                "h",
                0,
                ("198.51.100.1", 40006),
                (SENSOR, 8082),
                (100.0, 101.0),
            ),
        ];
        let network = Network::of(FlowOrigin::Local, peer, &records, 50.0, 250.0);
        assert_eq!(
            network,
            Network {
                source: FlowOrigin::Local,
                flows: 5,
                // a's latest record (20, 2000) + b, c, d (10, 1000 each) + e's server side.
                packets_from_peer: 20 + 10 + 10 + 10 + 8,
                bytes_from_peer: 2000 + 1000 + 1000 + 1000 + 6000,
                packets_to_peer: 8 * 4 + 10,
                bytes_to_peer: 6000 * 4 + 1000,
                server_ports: vec![22, 53, 80],
                server_port_count: 3,
                half_open: 1,
                community_ids: ["1:a", "1:b", "1:c", "1:d", "1:e"]
                    .map(String::from)
                    .to_vec(),
                first_ttl: Some(52),
            }
        );
        assert_eq!(
            serde_json::to_value(&network).unwrap()["server_ports"],
            json!([22, 53, 80])
        );
    }

    #[test]
    fn no_flows_is_an_empty_summary() {
        let network = Network::of(FlowOrigin::Redis, PEER.parse().unwrap(), &[], 0.0, 1.0);
        assert_eq!(network, Network::none_from(FlowOrigin::Redis));
        assert_eq!(
            serde_json::to_value(network).unwrap(),
            json!({
                "source": "redis", "flows": 0, "packets_from_peer": 0, "bytes_from_peer": 0, "packets_to_peer": 0,
                "bytes_to_peer": 0, "server_ports": [], "server_port_count": 0, "half_open": 0,
                "community_ids": [], "first_ttl": null,
            })
        );
    }

    #[test]
    fn long_lists_are_cut_and_counts_stay_exact() {
        let peer: IpAddr = PEER.parse().unwrap();
        let records: Vec<_> = (0..200u16)
            .map(|port| {
                let mut scan = record(
                    &format!("s{port}"),
                    0,
                    (PEER, 40000),
                    (SENSOR, 1000 + port),
                    (100.0 + f64::from(port), 100.5 + f64::from(port)),
                );
                scan.client_tcp_flags = SYN;
                scan
            })
            .collect();
        let network = Network::of(FlowOrigin::Local, peer, &records, 0.0, 1000.0);
        assert_eq!(network.flows, 200);
        assert_eq!(network.half_open, 200);
        assert_eq!(network.server_port_count, 200);
        assert_eq!(network.server_ports, (1000..1064).collect::<Vec<u16>>());
        assert_eq!(network.community_ids.len(), MAX_LISTED);
        assert_eq!(network.community_ids[0], "1:s0");
    }

    #[test]
    fn ipv4_mapped_addresses_are_the_ipv4_peer() {
        let peer: IpAddr = "::ffff:203.0.113.7"
            .parse::<IpAddr>()
            .unwrap()
            .to_canonical();
        let records = [record("a", 0, (PEER, 1), (SENSOR, 80), (1.0, 2.0))];
        assert_eq!(
            Network::of(FlowOrigin::Local, peer, &records, 0.0, 3.0).flows,
            1
        );
    }
}
