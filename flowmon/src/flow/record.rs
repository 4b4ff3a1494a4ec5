//! The flow record: what flowmon exports for a flow, as JSON. The schema is documented in
//! `docs/flow-records.md`.

use serde::{Deserialize, Serialize};

use super::{Flow, wall_clock::WallClock};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordType {
    /// A snapshot of a flow that is still alive.
    Interim,
    /// The flow's last record.
    Final,
}

impl RecordType {
    /// As in the record's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Interim => "interim",
            Self::Final => "final",
        }
    }
}

/// Why a flow ended (the IPFIX flowEndReason codes 1, 3, 4 and 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndReason {
    /// No packet for the protocol's idle timeout.
    Idle,
    /// TCP FIN from both sides or RST, then the close timeout.
    End,
    /// flowmon shut down.
    Forced,
    /// The kernel's LRU map dropped the flow before flowmon could report it.
    Evicted,
}

impl EndReason {
    pub const ALL: [EndReason; 4] = [Self::Idle, Self::End, Self::Forced, Self::Evicted];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::End => "end",
            Self::Forced => "forced",
            Self::Evicted => "evicted",
        }
    }
}

/// Counters since the flow's previous record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deltas {
    pub client_packets: u64,
    pub client_bytes: u64,
    pub server_packets: u64,
    pub server_bytes: u64,
}

impl Deltas {
    /// What `flow` adds to the totals of a previous record (`None`: the first record).
    pub fn since(flow: &Flow, previous: Option<&FlowRecord>) -> Self {
        let (cp, cb, sp, sb) = previous.map_or((0, 0, 0, 0), |r| {
            (
                r.client_packets,
                r.client_bytes,
                r.server_packets,
                r.server_bytes,
            )
        });
        Self {
            client_packets: flow.client.packets.saturating_sub(cp),
            client_bytes: flow.client.bytes.saturating_sub(cb),
            server_packets: flow.server.packets.saturating_sub(sp),
            server_bytes: flow.server.bytes.saturating_sub(sb),
        }
    }
}

/// Who and where a record comes from.
#[derive(Clone, Debug)]
pub struct Origin<'a> {
    pub sensor_id: &'a str,
    pub iface: &'a str,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// Stable across a flow's records.
    pub flow_id: String,
    /// `<flow_id>:<sequence>`: unique per record, the key consumers de-duplicate on.
    pub record_id: String,
    pub sequence: u64,
    pub sensor_id: String,
    pub iface: String,
    pub record_type: RecordType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// When the record was made, epoch seconds.
    pub time: f64,
    pub protocol: String,
    pub community_id: String,
    pub client_ip: String,
    pub client_port: u16,
    pub server_ip: String,
    pub server_port: u16,
    pub vlan: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_id: Option<u16>,
    pub client_packets: u64,
    pub client_bytes: u64,
    pub server_packets: u64,
    pub server_bytes: u64,
    pub client_packets_delta: u64,
    pub client_bytes_delta: u64,
    pub server_packets_delta: u64,
    pub server_bytes_delta: u64,
    pub client_tcp_flags: u8,
    pub server_tcp_flags: u8,
    pub tcp_state: String,
    pub client_ttl: u8,
    pub server_ttl: u8,
    pub client_mac: String,
    pub server_mac: String,
    pub first_seen: f64,
    pub last_seen: f64,
}

impl FlowRecord {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        flow: &Flow,
        flow_id: &str,
        sequence: u64,
        origin: &Origin<'_>,
        record_type: RecordType,
        end_reason: Option<EndReason>,
        deltas: Deltas,
        clock: &WallClock,
        now_ns: u64,
    ) -> Self {
        Self {
            flow_id: flow_id.to_owned(),
            record_id: format!("{flow_id}:{sequence}"),
            sequence,
            sensor_id: origin.sensor_id.to_owned(),
            iface: origin.iface.to_owned(),
            record_type,
            end_reason,
            time: clock.epoch_secs(now_ns),
            protocol: flow.protocol_name(),
            community_id: flow.community_id(),
            client_ip: flow.client.ip.to_string(),
            client_port: flow.client.port,
            server_ip: flow.server.ip.to_string(),
            server_port: flow.server.port,
            vlan: flow.key.vlan,
            icmp_id: flow.icmp_id(),
            client_packets: flow.client.packets,
            client_bytes: flow.client.bytes,
            server_packets: flow.server.packets,
            server_bytes: flow.server.bytes,
            client_packets_delta: deltas.client_packets,
            client_bytes_delta: deltas.client_bytes,
            server_packets_delta: deltas.server_packets,
            server_bytes_delta: deltas.server_bytes,
            client_tcp_flags: flow.client.tcp_flags,
            server_tcp_flags: flow.server.tcp_flags,
            tcp_state: flow.tcp_state().as_str().to_owned(),
            client_ttl: flow.client.ttl,
            server_ttl: flow.server.ttl,
            client_mac: mac_string(&flow.client.mac),
            server_mac: mac_string(&flow.server.mac),
            first_seen: clock.epoch_secs(flow.first_seen_ns),
            last_seen: clock.epoch_secs(flow.last_seen_ns),
        }
    }
}

impl FlowRecord {
    /// The final record of a flow the kernel evicted, known only by this, its last record:
    /// same totals, nothing added.
    pub fn evicted(&self, sequence: u64, clock: &WallClock, now_ns: u64) -> Self {
        let flow_id = &self.flow_id;
        Self {
            record_id: format!("{flow_id}:{sequence}"),
            sequence,
            record_type: RecordType::Final,
            end_reason: Some(EndReason::Evicted),
            time: clock.epoch_secs(now_ns),
            client_packets_delta: 0,
            client_bytes_delta: 0,
            server_packets_delta: 0,
            server_bytes_delta: 0,
            ..self.clone()
        }
    }
}

fn mac_string(mac: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_json_ones() {
        for record_type in [RecordType::Interim, RecordType::Final] {
            assert_eq!(
                serde_json::to_value(record_type).unwrap(),
                record_type.as_str()
            );
        }
        for reason in EndReason::ALL {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
    }
}

/// Records for the tests of the modules that keep them.
#[cfg(test)]
pub(crate) mod sample {
    use super::{FlowRecord, RecordType};

    /// A UDP record 10.0.0.2:1 -> 10.0.0.1:2 of flow `flow`, `sequence` packets so far.
    pub fn record(flow: &str, sequence: u64, record_type: RecordType) -> FlowRecord {
        let json = serde_json::json!({
            "flow_id": flow, "record_id": format!("{flow}:{sequence}"), "sequence": sequence,
            "sensor_id": "s", "iface": "eth0", "record_type": record_type, "time": 1.0,
            "protocol": "udp", "community_id": "1:x", "client_ip": "10.0.0.2", "client_port": 1,
            "server_ip": "10.0.0.1", "server_port": 2, "vlan": 0, "client_packets": sequence,
            "client_bytes": 0, "server_packets": 0, "server_bytes": 0,
            "client_packets_delta": 1, "client_bytes_delta": 0, "server_packets_delta": 0,
            "server_bytes_delta": 0, "client_tcp_flags": 0, "server_tcp_flags": 0,
            "tcp_state": "none", "client_ttl": 64, "server_ttl": 0,
            "client_mac": "00:00:00:00:00:00", "server_mac": "00:00:00:00:00:00",
            "first_seen": 1.0, "last_seen": 1.0
        });
        serde_json::from_value(json).unwrap()
    }
}
