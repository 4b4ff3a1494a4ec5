//! The flow record: what flowmon exports for a flow, as JSON. The schema is documented in
//! `docs/flow-records.md`.
//!
//! Values are kept typed (addresses, MACs, ids, names shared between records) and written as
//! text only when a record is serialised: records are made by the million, and the IPFIX
//! encoder reads their values as they are.

use std::{fmt, net::IpAddr, str::FromStr, sync::Arc};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use flowmon_common::{TcpState, ip_proto};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use uuid::Uuid;

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

/// A flow's id: a UUID for every flow flowmon follows. Records read back keep any other text
/// as it was (other writers', the tests'), so that they still group by flow.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowId {
    Uuid(Uuid),
    Other(Box<str>),
}

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uuid(id) => id.hyphenated().fmt(f),
            Self::Other(text) => f.write_str(text),
        }
    }
}

impl FromStr for FlowId {
    type Err = std::convert::Infallible;

    /// A UUID only as flowmon writes them (hyphenated, lower case), so that the text reads
    /// back byte for byte.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match Uuid::try_parse(text) {
            Ok(id) if id.hyphenated().encode_lower(&mut Uuid::encode_buffer()) == text => {
                Self::Uuid(id)
            }
            _ => Self::Other(text.into()),
        })
    }
}

/// The length of a Community ID v1 as text: "1:" and the base64 of a SHA-1 digest.
pub const COMMUNITY_ID_TEXT_LEN: usize = 30;

/// A flow's Community ID v1 (seed 0), the key Zeek, Suricata and others join on. It is kept as
/// the text records carry ("1:" and the base64 of its SHA-1 digest), made once per flow: the
/// JSON and the IPFIX records of every record of the flow copy it. Text read back that is no
/// such id is kept as it was, and a flow whose id cannot be computed has the empty one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CommunityId(CommunityText);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum CommunityText {
    /// Checked when made: "1:" and canonical base64 of 20 bytes, all ASCII.
    V1([u8; COMMUNITY_ID_TEXT_LEN]),
    Other(Box<str>),
}

impl CommunityId {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            CommunityText::V1(text) => std::str::from_utf8(text).expect("checked ASCII"),
            CommunityText::Other(text) => text,
        }
    }

    /// Whether it is a Community ID v1, rather than other text read back.
    pub fn is_v1(&self) -> bool {
        matches!(self.0, CommunityText::V1(_))
    }
}

impl fmt::Display for CommunityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CommunityId {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut digest = [0; 20];
        // The engine refuses non-canonical base64: only the text of a digest is a v1 id.
        let v1 = text.len() == COMMUNITY_ID_TEXT_LEN
            && text.starts_with("1:")
            && BASE64.decode_slice(&text[2..], &mut digest) == Ok(digest.len());
        Ok(Self(match text.as_bytes().try_into() {
            Ok(bytes) if v1 => CommunityText::V1(bytes),
            _ => CommunityText::Other(text.into()),
        }))
    }
}

/// An IP protocol number, written by name where it has one in records ("tcp", "udp", "icmp",
/// "icmpv6"), else as the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Protocol(pub u8);

impl Protocol {
    pub const TCP: Self = Self(ip_proto::TCP);
    pub const UDP: Self = Self(ip_proto::UDP);
    pub const ICMP: Self = Self(ip_proto::ICMP);
    pub const ICMPV6: Self = Self(ip_proto::ICMPV6);
    /// The protocols records write by name; every other by number.
    pub const NAMED: [Self; 4] = [Self::TCP, Self::UDP, Self::ICMP, Self::ICMPV6];

    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::TCP => Some("tcp"),
            Self::UDP => Some("udp"),
            Self::ICMP => Some("icmp"),
            Self::ICMPV6 => Some("icmpv6"),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => self.0.fmt(f),
        }
    }
}

/// Neither a protocol name of records nor a protocol number.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is no IP protocol")]
pub struct UnknownProtocol(String);

impl FromStr for Protocol {
    type Err = UnknownProtocol;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::NAMED
            .into_iter()
            .find(|protocol| protocol.name() == Some(text))
            .or_else(|| text.parse().ok().map(Self))
            .ok_or_else(|| UnknownProtocol(text.to_owned()))
    }
}

/// A MAC address, written "aa:bb:cc:dd:ee:ff" (lower case: the crates that have a MAC type
/// write upper case).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Not six pairs of hex digits between colons.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is no MAC address")]
pub struct BadMac(String);

impl FromStr for MacAddr {
    type Err = BadMac;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadMac(text.to_owned());
        let mut mac = [0; 6];
        let mut octets = text.split(':');
        for octet in &mut mac {
            let digits = octets.next().ok_or_else(bad)?;
            if digits.len() != 2 || !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *octet = u8::from_str_radix(digits, 16).map_err(|_| bad())?;
        }
        match octets.next() {
            None => Ok(Self(mac)),
            Some(_) => Err(bad()),
        }
    }
}

/// Serialises and deserialises a type as the text of its `Display` and `FromStr`.
macro_rules! as_text {
    ($($type:ty: $expecting:literal),* $(,)?) => {$(
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                from_text(deserializer, $expecting, str::parse)
            }
        }
    )*};
}

as_text!(
    FlowId: "a flow id",
    CommunityId: "a Community ID",
    Protocol: "a protocol name or number",
    MacAddr: "a MAC address",
);

/// Reads a string with `parse`, borrowed or not (the journal's entries hand over owned ones).
fn from_text<'de, D, T, E>(
    deserializer: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    E: fmt::Display,
{
    struct Text<T, E> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, E>,
    }

    impl<T, E: fmt::Display> de::Visitor<'_> for Text<T, E> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<Er: de::Error>(self, text: &str) -> Result<T, Er> {
            (self.parse)(text).map_err(Er::custom)
        }
    }

    deserializer.deserialize_str(Text { expecting, parse })
}

/// `tcp_state` by the names of [`TcpState::as_str`].
mod tcp_state_text {
    use super::*;

    pub fn serialize<S: Serializer>(state: &TcpState, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(state.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<TcpState, D::Error> {
        from_text(deserializer, "a TCP state", |text| {
            TcpState::ALL
                .into_iter()
                .find(|state| state.as_str() == text)
                .ok_or_else(|| format!("{text:?} is no TCP state"))
        })
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

/// What a record of a flow says besides what the kernel counted: the flow's ids, who made the
/// record and where the flow was seen. The names are shared by every record.
#[derive(Clone, Debug)]
pub struct Labels {
    pub flow_id: Uuid,
    pub community_id: CommunityId,
    pub sensor_id: Arc<str>,
    pub iface: Arc<str>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// Stable across a flow's records.
    pub flow_id: FlowId,
    /// `<flow_id>:<sequence>`: unique per record, the key consumers de-duplicate on.
    pub record_id: String,
    pub sequence: u64,
    pub sensor_id: Arc<str>,
    pub iface: Arc<str>,
    pub record_type: RecordType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// When the record was made, epoch seconds.
    pub time: f64,
    pub protocol: Protocol,
    pub community_id: CommunityId,
    pub client_ip: IpAddr,
    pub client_port: u16,
    pub server_ip: IpAddr,
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
    #[serde(with = "tcp_state_text")]
    pub tcp_state: TcpState,
    pub client_ttl: u8,
    pub server_ttl: u8,
    pub client_mac: MacAddr,
    pub server_mac: MacAddr,
    pub first_seen: f64,
    pub last_seen: f64,
}

impl FlowRecord {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        flow: &Flow,
        labels: Labels,
        sequence: u64,
        record_type: RecordType,
        end_reason: Option<EndReason>,
        deltas: Deltas,
        clock: &WallClock,
        now_ns: u64,
    ) -> Self {
        let flow_id = FlowId::Uuid(labels.flow_id);
        Self {
            record_id: format!("{flow_id}:{sequence}"),
            flow_id,
            sequence,
            sensor_id: labels.sensor_id,
            iface: labels.iface,
            record_type,
            end_reason,
            time: clock.epoch_secs(now_ns),
            protocol: flow.protocol(),
            community_id: labels.community_id,
            client_ip: flow.client.ip,
            client_port: flow.client.port,
            server_ip: flow.server.ip,
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
            tcp_state: flow.tcp_state(),
            client_ttl: flow.client.ttl,
            server_ttl: flow.server.ttl,
            client_mac: MacAddr(flow.client.mac),
            server_mac: MacAddr(flow.server.mac),
            first_seen: clock.epoch_secs(flow.first_seen_ns),
            last_seen: clock.epoch_secs(flow.last_seen_ns),
        }
    }
}

/// The latest record (highest sequence) of each flow among `records`, earliest flow first.
pub fn latest_per_flow<'a>(
    records: impl IntoIterator<Item = &'a FlowRecord>,
) -> Vec<&'a FlowRecord> {
    let mut latest: std::collections::BTreeMap<&FlowId, &FlowRecord> = Default::default();
    for record in records {
        let kept = latest.entry(&record.flow_id).or_insert(record);
        if record.sequence > kept.sequence {
            *kept = record;
        }
    }
    let mut flows: Vec<&FlowRecord> = latest.into_values().collect();
    flows.sort_by(|a, b| a.first_seen.total_cmp(&b.first_seen));
    flows
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Endpoint;
    use flowmon_common::{FlowKey, key_kind};

    /// A final record of a TCP flow as flowmon writes it, and one of an ICMPv6 echo flow.
    const TCP_JSON: &str = concat!(
        r#"{"flow_id":"0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0","#,
        r#""record_id":"0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0:3","sequence":3,"#,
        r#""sensor_id":"sensor-1","iface":"eth0","record_type":"final","end_reason":"end","#,
        r#""time":1700000061.25,"protocol":"tcp","#,
        r#""community_id":"1:LQU9qZlK+B5F3KDmev6m5PMibrg=","client_ip":"128.232.110.120","#,
        r#""client_port":34855,"server_ip":"66.35.250.204","server_port":80,"vlan":12,"#,
        r#""client_packets":10,"client_bytes":1000,"server_packets":8,"server_bytes":9000,"#,
        r#""client_packets_delta":4,"client_bytes_delta":400,"server_packets_delta":3,"#,
        r#""server_bytes_delta":3000,"client_tcp_flags":27,"server_tcp_flags":18,"#,
        r#""tcp_state":"fin_client","client_ttl":64,"server_ttl":57,"#,
        r#""client_mac":"02:00:5e:10:00:0a","server_mac":"0a:1b:2c:3d:4e:ff","#,
        r#""first_seen":1700000000.124,"last_seen":1700000060.5}"#
    );
    const ICMP_JSON: &str = concat!(
        r#"{"flow_id":"a","record_id":"a:0","sequence":0,"sensor_id":"s","iface":"7","#,
        r#""record_type":"interim","time":1.5,"protocol":"icmpv6","community_id":"1:x","#,
        r#""client_ip":"2001:db8::2","client_port":128,"server_ip":"::ffff:10.0.0.1","#,
        r#""server_port":129,"vlan":0,"icmp_id":77,"client_packets":1,"client_bytes":98,"#,
        r#""server_packets":0,"server_bytes":0,"client_packets_delta":1,"#,
        r#""client_bytes_delta":98,"server_packets_delta":0,"server_bytes_delta":0,"#,
        r#""client_tcp_flags":0,"server_tcp_flags":0,"tcp_state":"none","client_ttl":64,"#,
        r#""server_ttl":0,"client_mac":"00:00:00:00:00:00","server_mac":"00:00:00:00:00:00","#,
        r#""first_seen":1.0,"last_seen":1.004}"#
    );

    #[test]
    fn records_read_back_and_write_again_byte_for_byte() {
        for json in [TCP_JSON, ICMP_JSON] {
            let record: FlowRecord = serde_json::from_str(json).unwrap();
            assert_eq!(serde_json::to_string(&record).unwrap(), json);
        }
        let tcp: FlowRecord = serde_json::from_str(TCP_JSON).unwrap();
        assert!(matches!(tcp.flow_id, FlowId::Uuid(_)));
        assert!(tcp.community_id.is_v1());
        assert_eq!(tcp.client_mac, MacAddr([2, 0, 0x5e, 0x10, 0, 0x0a]));
        assert_eq!(tcp.tcp_state, TcpState::FinClient);
        let icmp: FlowRecord = serde_json::from_str(ICMP_JSON).unwrap();
        assert_eq!(icmp.flow_id, FlowId::Other("a".into()));
        assert!(!icmp.community_id.is_v1());
        assert_eq!(icmp.protocol, Protocol::ICMPV6);
    }

    #[test]
    fn a_record_of_a_flow_writes_its_values_as_text() {
        let mut key = FlowKey {
            protocol: ip_proto::TCP,
            kind: key_kind::PORTS,
            vlan: 12,
            ..FlowKey::default()
        };
        key.port_lo = 80;
        let endpoint = |ip: &str, port, packets, mac| Endpoint {
            ip: ip.parse().unwrap(),
            port,
            packets,
            bytes: packets * 100,
            tcp_flags: 0x1b,
            ttl: 64,
            mac,
        };
        let flow = Flow {
            key,
            first_seen_ns: 0,
            last_seen_ns: 0,
            ifindex: 2,
            client: endpoint("128.232.110.120", 34855, 10, [2, 0, 0x5e, 0x10, 0, 0x0a]),
            server: endpoint("66.35.250.204", 80, 8, [0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0xff]),
        };
        let labels = Labels {
            flow_id: "0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0".parse().unwrap(),
            community_id: flow.community_id(),
            sensor_id: "sensor-1".into(),
            iface: "eth0".into(),
        };
        let deltas = Deltas::since(&flow, None);
        let clock = WallClock::new();
        let record = FlowRecord {
            time: 1.5,
            first_seen: 1.0,
            last_seen: 1.25,
            ..FlowRecord::new(
                &flow,
                labels,
                0,
                RecordType::Interim,
                None,
                deltas,
                &clock,
                0,
            )
        };
        let json = serde_json::to_value(&record).unwrap();
        let text = |field: &str| json[field].as_str().unwrap().to_owned();
        assert_eq!(text("flow_id"), "0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0");
        assert_eq!(text("record_id"), "0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0:0");
        assert_eq!(text("protocol"), "tcp");
        assert_eq!(text("community_id"), "1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
        assert_eq!(text("client_ip"), "128.232.110.120");
        assert_eq!(text("tcp_state"), "closed");
        assert_eq!(text("client_mac"), "02:00:5e:10:00:0a");
        assert_eq!(text("server_mac"), "0a:1b:2c:3d:4e:ff");
        assert_eq!(text("iface"), "eth0");
    }

    #[test]
    fn values_that_are_not_what_records_write_are_refused() {
        let with = |field: &str, value: serde_json::Value| {
            let mut json: serde_json::Value = serde_json::from_str(TCP_JSON).unwrap();
            json[field] = value;
            serde_json::from_value::<FlowRecord>(json)
                .map_err(|err| err.to_string())
                .err()
        };
        for (field, value) in [
            ("client_ip", "10.0.0.300"),
            ("server_ip", "example.com"),
            ("client_mac", "02:00:00:00:00"),
            ("client_mac", "02:00:00:00:00:0g"),
            ("client_mac", "02-00-00-00-00-0a"),
            ("server_mac", "+2:00:00:00:00:0a"),
            ("server_mac", "02:00:00:00:00:0a:0b"),
            ("protocol", "sctp"),
            ("protocol", "256"),
            ("tcp_state", "listen"),
        ] {
            assert!(with(field, value.into()).is_some(), "{field}: {value}");
        }
        assert!(with("flow_id", 7.into()).is_some());
        // A number for a protocol without a name in records reads as that protocol.
        let mut json: serde_json::Value = serde_json::from_str(TCP_JSON).unwrap();
        json["protocol"] = "47".into();
        let record: FlowRecord = serde_json::from_value(json).unwrap();
        assert_eq!(record.protocol, Protocol(47));
    }

    #[test]
    fn ids_read_as_uuids_and_digests_only_in_the_form_flowmon_writes() {
        for text in [
            "0F1E2D3C-4B5A-4978-8796-A5B4C3D2E1F0",
            "0f1e2d3c4b5a49788796a5b4c3d2e1f0",
            "{0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0}",
        ] {
            let id: FlowId = text.parse().unwrap();
            assert_eq!(id, FlowId::Other(text.into()));
            assert_eq!(id.to_string(), text);
        }
        for text in [
            "",
            "1:LQU9qZlK+B5F3KDmev6m5PMibrg",
            "1:LQU9qZlK+B5F3KDmev6m5PMibrh=",
            "2:LQU9qZlK+B5F3KDmev6m5PMibrg=",
        ] {
            let id: CommunityId = text.parse().unwrap();
            assert!(!id.is_v1(), "{text}");
            assert_eq!(id.as_str(), text);
        }
    }

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
