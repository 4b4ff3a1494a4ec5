//! Questions about the flows alive in the kernel map now, for the console: the top flows by
//! bytes, packets or rate that pass a filter, and one flow by its key, asked through a
//! [`LiveFlowTable`] handle. The flow monitor answers them on its own thread: it ranks the flows
//! it tracks by what it last read of each ([`Known`]: at most an interim interval old, since it
//! looks at every flow that sent something in an interval when the interval ends), then looks
//! the best up in the map for their counts of this moment.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    fmt,
    net::IpAddr,
    os::{fd::AsRawFd as _, unix::net::UnixDatagram},
    str::FromStr,
    sync::{
        Arc,
        mpsc::{Receiver, SyncSender, TrySendError},
    },
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};
use flowmon_common::{
    Address, FlowBlock, FlowKey, TcpState, address_from_bytes, ip_proto, key_kind,
};
use tokio::sync::oneshot;

use super::{Flow, wall_clock::WallClock};
use crate::datapath::KernelClock;

/// Most flows one query returns.
pub const MAX_LIMIT: usize = 1000;
/// How long a caller waits for the monitor, which answers between two polls.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Questions waiting for the monitor at most; askers beyond are told it is busy.
const WAITING_QUESTIONS: usize = 16;

/// Which flows a query keeps; every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// Either end's address.
    pub addr: Option<IpAddr>,
    /// Either end's transport port (TCP, UDP).
    pub port: Option<u16>,
    /// IP protocol number.
    pub protocol: Option<u8>,
    /// TCP state (so TCP flows only).
    pub state: Option<TcpState>,
    /// Interface name.
    pub iface: Option<String>,
}

/// What "top" means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlowOrder {
    /// Bytes both ways.
    #[default]
    Bytes,
    /// Packets both ways.
    Packets,
    /// Bytes both ways per second of the flow's life (a flow younger than a second counts one).
    Rate,
}

impl FlowOrder {
    pub const ALL: [FlowOrder; 3] = [Self::Bytes, Self::Packets, Self::Rate];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bytes => "bytes",
            Self::Packets => "packets",
            Self::Rate => "rate",
        }
    }
}

impl FromStr for FlowOrder {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|order| order.as_str() == text)
            .ok_or_else(|| format!("unknown order {text:?} (bytes, packets or rate)"))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowQuery {
    pub filter: FlowFilter,
    pub order: FlowOrder,
    /// At most [`MAX_LIMIT`].
    pub limit: usize,
}

/// A live flow as the console shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowView {
    pub flow: Flow,
    pub iface: String,
    /// Epoch seconds.
    pub first_seen: f64,
    pub last_seen: f64,
    /// The id its records carry, once it has had one.
    pub flow_id: Option<String>,
}

impl FlowView {
    pub fn bytes(&self) -> u64 {
        self.flow.client.bytes + self.flow.server.bytes
    }

    pub fn packets(&self) -> u64 {
        self.flow.client.packets + self.flow.server.packets
    }

    /// Bytes per second over the flow's life, as [`FlowOrder::Rate`] ranks it.
    pub fn rate(&self) -> f64 {
        self.bytes() as f64 / (self.last_seen - self.first_seen).max(1.0)
    }
}

/// The answer to a [`FlowQuery`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlowPage {
    /// The top flows, best first, with their counts of `read_at`.
    pub flows: Vec<FlowView>,
    /// Flows that passed the filter.
    pub matched: usize,
    /// Live flows the monitor knows.
    pub live: usize,
    /// When the counts were read, epoch seconds.
    pub read_at: f64,
}

/// A flow's key in a form fit for a URL path segment:
/// `<protocol>_<kind>_<vlan>_<address>_<port>_<address>_<port>` with the key's lower side first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowRef(pub FlowKey);

impl fmt::Display for FlowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.0;
        write!(
            f,
            "{}_{}_{}_{}_{}_{}_{}",
            key.protocol,
            key.kind,
            key.vlan,
            super::ip_of(&key.addr_lo),
            key.port_lo,
            super::ip_of(&key.addr_hi),
            key.port_hi
        )
    }
}

impl FromStr for FlowRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || format!("{text:?} is no flow key");
        let parts: Vec<&str> = text.split('_').collect();
        let [protocol, kind, vlan, addr_lo, port_lo, addr_hi, port_hi] = parts[..] else {
            return Err(invalid());
        };
        let number = |part: &str| part.parse::<u16>().map_err(|_| invalid());
        let address = |part: &str| {
            part.parse::<IpAddr>()
                .map(address_of)
                .map_err(|_| invalid())
        };
        Ok(Self(FlowKey {
            addr_lo: address(addr_lo)?,
            addr_hi: address(addr_hi)?,
            port_lo: number(port_lo)?,
            port_hi: number(port_hi)?,
            vlan: number(vlan)?,
            protocol: protocol.parse().map_err(|_| invalid())?,
            kind: kind.parse().map_err(|_| invalid())?,
        }))
    }
}

/// An address as keys hold it (IPv4 mapped into IPv6).
pub fn address_of(ip: IpAddr) -> Address {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    address_from_bytes(v6.octets())
}

/// What the flow monitor knows of a live flow from its latest look at the flow's block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known {
    pub key: FlowKey,
    /// 0 before its first look.
    pub ifindex: u32,
    pub state: TcpState,
    /// Both ways.
    pub bytes: u64,
    pub packets: u64,
    /// CLOCK_MONOTONIC nanoseconds.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
}

impl Known {
    /// What `block` says of the flow of `key`.
    pub fn of_block(key: FlowKey, block: &FlowBlock, clock: &KernelClock) -> Self {
        let client = block.client_side(&key);
        let flags = |side: usize| block.side(side).tcp_flags();
        Self {
            key,
            ifindex: block.ifindex,
            state: if key.protocol == ip_proto::TCP {
                TcpState::from_flags(flags(client), flags(client ^ 1))
            } else {
                TcpState::None
            },
            bytes: block.lo.bytes + block.hi.bytes,
            packets: block.lo.packets + block.hi.packets,
            first_seen_ns: clock.monotonic_ns(block.first_seen),
            last_seen_ns: clock.monotonic_ns(block.last_seen()),
        }
    }

    /// Its rank under `order`: larger is better. Rates are non-negative floats, whose bits
    /// order as integers do.
    fn rank(&self, order: FlowOrder) -> u64 {
        match order {
            FlowOrder::Bytes => self.bytes,
            FlowOrder::Packets => self.packets,
            FlowOrder::Rate => {
                let life_ns = self.last_seen_ns.saturating_sub(self.first_seen_ns);
                (self.bytes as f64 / (life_ns as f64 / 1e9).max(1.0)).to_bits()
            }
        }
    }
}

/// A [`FlowFilter`] made ready for a walk over what is known of many flows.
struct Matcher {
    addr: Option<Address>,
    port: Option<u16>,
    protocol: Option<u8>,
    state: Option<TcpState>,
    /// `Some(None)`: an interface that is not monitored, which no flow is on.
    ifindex: Option<Option<u32>>,
}

impl Matcher {
    fn new(filter: &FlowFilter, ifaces: &HashMap<u32, String>) -> Self {
        Self {
            addr: filter.addr.map(|ip| address_of(ip.to_canonical())),
            port: filter.port,
            protocol: filter.protocol,
            state: filter.state,
            ifindex: filter.iface.as_ref().map(|name| {
                ifaces
                    .iter()
                    .find(|(_, known)| *known == name)
                    .map(|(&index, _)| index)
            }),
        }
    }

    fn matches(&self, flow: &Known) -> bool {
        let key = &flow.key;
        self.addr
            .is_none_or(|addr| key.addr_lo == addr || key.addr_hi == addr)
            && self.port.is_none_or(|port| {
                key.kind == key_kind::PORTS && (key.port_lo == port || key.port_hi == port)
            })
            && self
                .protocol
                .is_none_or(|protocol| key.protocol == protocol)
            && self.ifindex.is_none_or(|index| index == Some(flow.ifindex))
            && self
                .state
                .is_none_or(|state| key.protocol == ip_proto::TCP && flow.state == state)
    }
}

/// The flows of `flows` that pass the query's filter, the best `limit` of them first, and how
/// many passed. One pass, and a heap of `limit` entries.
pub fn top(
    flows: impl Iterator<Item = Known>,
    ifaces: &HashMap<u32, String>,
    query: &FlowQuery,
) -> (Vec<Known>, usize) {
    let matcher = Matcher::new(&query.filter, ifaces);
    let limit = query.limit.min(MAX_LIMIT);
    // The worst of the best so far on top.
    let mut best: BinaryHeap<Reverse<Ranked>> = BinaryHeap::with_capacity(limit + 1);
    let mut matched = 0;
    for flow in flows {
        if !matcher.matches(&flow) {
            continue;
        }
        matched += 1;
        if limit == 0 {
            continue;
        }
        let score = flow.rank(query.order);
        if best.len() == limit && best.peek().is_some_and(|worst| worst.0.score >= score) {
            continue;
        }
        best.push(Reverse(Ranked { score, flow }));
        if best.len() > limit {
            best.pop();
        }
    }
    let flows = best
        .into_sorted_vec()
        .into_iter()
        .map(|Reverse(ranked)| ranked.flow)
        .collect();
    (flows, matched)
}

/// A flow and its rank, ordered by the rank, then by the key's fields so that ties between
/// flows rank the same way every time.
struct Ranked {
    score: u64,
    flow: Known,
}

impl Ranked {
    fn order(&self) -> (u64, Address, Address, u16, u16, u16, u8, u8) {
        let key = &self.flow.key;
        (
            self.score,
            key.addr_lo,
            key.addr_hi,
            key.port_lo,
            key.port_hi,
            key.vlan,
            key.protocol,
            key.kind,
        )
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}

impl Eq for Ranked {}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// How a flow of the map becomes a [`FlowView`].
pub struct ViewMaker<'a> {
    pub clock: &'a KernelClock,
    pub wall: &'a WallClock,
    pub ifaces: &'a HashMap<u32, String>,
    /// The id of a flow that has had a record.
    pub flow_id: &'a dyn Fn(&FlowKey) -> Option<String>,
}

impl ViewMaker<'_> {
    pub fn view(&self, key: FlowKey, block: &FlowBlock) -> FlowView {
        let flow = Flow::from_block(key, block, self.clock);
        FlowView {
            iface: self
                .ifaces
                .get(&flow.ifindex)
                .cloned()
                .unwrap_or_else(|| flow.ifindex.to_string()),
            first_seen: self.wall.epoch_secs(flow.first_seen_ns),
            last_seen: self.wall.epoch_secs(flow.last_seen_ns),
            flow_id: (self.flow_id)(&key),
            flow,
        }
    }

    /// The answer to `query` over what is known of the `live` flows: the best ranked, each
    /// looked up in the map (a flow gone since its last look is left out) and shown with its
    /// counts of `now_ns`, best first by those.
    pub fn top(
        &self,
        known: impl Iterator<Item = Known>,
        live: usize,
        query: &FlowQuery,
        mut lookup: impl FnMut(&FlowKey) -> Result<Option<FlowBlock>>,
        now_ns: u64,
    ) -> Result<FlowPage> {
        let (best, matched) = top(known, self.ifaces, query);
        let mut flows = Vec::with_capacity(best.len());
        for candidate in best {
            if let Some(block) = lookup(&candidate.key)? {
                let now = Known::of_block(candidate.key, &block, self.clock);
                flows.push((now.rank(query.order), self.view(candidate.key, &block)));
            }
        }
        flows.sort_by_key(|(rank, _)| Reverse(*rank));
        Ok(FlowPage {
            flows: flows.into_iter().map(|(_, view)| view).collect(),
            matched,
            live,
            read_at: self.wall.epoch_secs(now_ns),
        })
    }
}

/// A question for the flow monitor, with where its answer goes.
pub enum Question {
    Top(FlowQuery, oneshot::Sender<Result<FlowPage>>),
    One(FlowKey, oneshot::Sender<Option<FlowView>>),
}

/// Asks the running flow monitor about its live flows; clones ask the same monitor.
#[derive(Clone)]
pub struct LiveFlowTable {
    questions: SyncSender<Question>,
    /// A datagram after each question wakes the monitor from its wait for the kernel's events.
    wake: Arc<UnixDatagram>,
}

/// The monitor's end of a [`LiveFlowTable`].
pub struct Asked {
    questions: Receiver<Question>,
    wake: UnixDatagram,
}

impl LiveFlowTable {
    /// A table and the monitor's end of it.
    pub fn new() -> Result<(Self, Asked)> {
        let (questions, asked) = std::sync::mpsc::sync_channel(WAITING_QUESTIONS);
        let (wake, woken) =
            UnixDatagram::pair().context("cannot make the flow monitor's wake-up")?;
        wake.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        let table = Self {
            questions,
            wake: Arc::new(wake),
        };
        Ok((
            table,
            Asked {
                questions: asked,
                wake: woken,
            },
        ))
    }

    /// The top flows that pass the query's filter.
    pub async fn top(&self, query: FlowQuery) -> Result<FlowPage> {
        self.ask(|answer| Question::Top(query, answer)).await?
    }

    /// The flow of `key` as the kernel holds it now, if it is live.
    pub async fn one(&self, key: FlowKey) -> Result<Option<FlowView>> {
        self.ask(|answer| Question::One(key, answer)).await
    }

    async fn ask<T>(&self, question: impl FnOnce(oneshot::Sender<T>) -> Question) -> Result<T> {
        let (answer, answered) = oneshot::channel();
        match self.questions.try_send(question(answer)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(anyhow!("the flow monitor is busy")),
            Err(TrySendError::Disconnected(_)) => {
                return Err(anyhow!("the flow monitor has stopped"));
            }
        }
        // A full socket already holds a wake-up.
        let _ = self.wake.send(&[0]);
        tokio::time::timeout(ANSWER_TIMEOUT, answered)
            .await
            .with_context(|| format!("the flow monitor did not answer within {ANSWER_TIMEOUT:?}"))?
            .context("the flow monitor has stopped")
    }
}

impl Asked {
    /// The descriptor that becomes readable when a question comes.
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.wake.as_raw_fd()
    }

    /// The questions waiting.
    pub fn take(&self) -> Vec<Question> {
        let mut datagram = [0u8; 64];
        while self.wake.recv(&mut datagram).is_ok() {}
        self.questions.try_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use flowmon_common::{FlowSide, marks, tcp_flags};

    use super::*;

    fn flow(client: [u8; 4], port: u16, bytes: u64, packets: u64) -> (FlowKey, FlowBlock) {
        let key = FlowKey {
            addr_lo: address_of(IpAddr::from([10, 0, 0, 1])),
            addr_hi: address_of(IpAddr::from(client)),
            port_lo: 80,
            port_hi: port,
            protocol: ip_proto::TCP,
            ..FlowKey::default()
        };
        let block = FlowBlock {
            hi: FlowSide {
                packets,
                bytes,
                last_seen: 1_250,
                marks: tcp_flags::SYN as u64 | marks::OPENED,
                ..FlowSide::default()
            },
            first_seen: 1_000,
            ifindex: 2,
            ..FlowBlock::default()
        };
        (key, block)
    }

    fn query(filter: FlowFilter, order: FlowOrder, limit: usize) -> FlowQuery {
        FlowQuery {
            filter,
            order,
            limit,
        }
    }

    fn ports(flows: &[Known]) -> Vec<u16> {
        flows.iter().map(|flow| flow.key.port_hi).collect()
    }

    #[test]
    fn the_top_flows_pass_the_filter_best_first() {
        let flows = [
            flow([10, 0, 0, 2], 40001, 500, 1),
            flow([10, 0, 0, 2], 40002, 9000, 3),
            flow([10, 0, 0, 3], 40003, 7000, 20),
            flow([10, 0, 0, 2], 40004, 100, 2),
        ];
        let ifaces = HashMap::from([(2, "eth0".to_owned())]);
        let clock = KernelClock::test_clock();
        let run = |query: &FlowQuery| {
            let known = flows
                .iter()
                .map(|(key, block)| Known::of_block(*key, block, &clock));
            top(known, &ifaces, query)
        };
        let (best, matched) = run(&query(FlowFilter::default(), FlowOrder::Bytes, 2));
        assert_eq!((ports(&best), matched), (vec![40002, 40003], 4));
        let (best, _) = run(&query(FlowFilter::default(), FlowOrder::Packets, 10));
        assert_eq!(ports(&best), [40003, 40002, 40004, 40001]);
        let by_client = FlowFilter {
            addr: Some("10.0.0.2".parse().unwrap()),
            ..FlowFilter::default()
        };
        let (best, matched) = run(&query(by_client, FlowOrder::Bytes, 10));
        assert_eq!((ports(&best), matched), (vec![40002, 40001, 40004], 3));
        let by_port = FlowFilter {
            port: Some(40003),
            state: Some(TcpState::Syn),
            iface: Some("eth0".into()),
            protocol: Some(ip_proto::TCP),
            ..FlowFilter::default()
        };
        let (best, matched) = run(&query(by_port, FlowOrder::Rate, 10));
        assert_eq!((ports(&best), matched), (vec![40003], 1));
        for nothing in [
            FlowFilter {
                state: Some(TcpState::Established),
                ..FlowFilter::default()
            },
            FlowFilter {
                iface: Some("eth9".into()),
                ..FlowFilter::default()
            },
            FlowFilter {
                protocol: Some(ip_proto::UDP),
                ..FlowFilter::default()
            },
        ] {
            assert_eq!(run(&query(nothing, FlowOrder::Bytes, 10)).1, 0);
        }
        // Only counted.
        let (best, matched) = run(&query(FlowFilter::default(), FlowOrder::Bytes, 0));
        assert_eq!((best.len(), matched), (0, 4));
    }

    #[test]
    fn the_best_known_are_shown_with_their_counts_of_the_moment() {
        let clock = KernelClock::test_clock();
        let wall = WallClock::new();
        let ifaces = HashMap::from([(2, "eth0".to_owned())]);
        let no_id = |_: &FlowKey| None;
        let views = ViewMaker {
            clock: &clock,
            wall: &wall,
            ifaces: &ifaces,
            flow_id: &no_id,
        };
        // As last looked at: 40001 the largest, then 40002, then 40003.
        let then = [
            flow([10, 0, 0, 2], 40001, 9000, 9),
            flow([10, 0, 0, 2], 40002, 5000, 5),
            flow([10, 0, 0, 2], 40003, 100, 1),
        ];
        // Now: 40002 has grown past 40001, and 40001 has ended.
        let now = [flow([10, 0, 0, 2], 40002, 20_000, 20), then[2]];
        let known = then
            .iter()
            .map(|(key, block)| Known::of_block(*key, block, &clock));
        let lookup = |key: &FlowKey| {
            Ok(now
                .iter()
                .find(|(known, _)| known == key)
                .map(|(_, block)| *block))
        };
        let page = views
            .top(
                known,
                3,
                &query(FlowFilter::default(), FlowOrder::Bytes, 2),
                lookup,
                0,
            )
            .unwrap();
        let shown: Vec<(u16, u64)> = page
            .flows
            .iter()
            .map(|view| (view.flow.client.port, view.bytes()))
            .collect();
        assert_eq!(
            shown,
            [(40002, 20_000)],
            "the best two known, one gone since"
        );
        assert_eq!(
            (page.matched, page.live, page.flows[0].iface.as_str()),
            (3, 3, "eth0")
        );
    }

    #[test]
    fn flow_refs_name_keys_both_ways() {
        let (key, _) = flow([10, 0, 0, 2], 40001, 1, 1);
        let text = FlowRef(key).to_string();
        assert_eq!(text, "6_0_0_10.0.0.1_80_10.0.0.2_40001");
        assert_eq!(text.parse::<FlowRef>(), Ok(FlowRef(key)));
        let v6 = FlowKey {
            addr_lo: address_of("fd00::1".parse().unwrap()),
            ..key
        };
        assert_eq!(FlowRef(v6).to_string().parse::<FlowRef>(), Ok(FlowRef(v6)));
        for bad in [
            "",
            "6_0_0_x_80_10.0.0.2_1",
            "6_0_0_10.0.0.1_80_10.0.0.2",
            "<script>",
        ] {
            assert!(bad.parse::<FlowRef>().is_err(), "{bad}");
        }
    }
}
