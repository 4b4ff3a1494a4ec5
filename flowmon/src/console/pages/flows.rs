//! The live flow table (the top flows of the kernel map that pass a filter) and a flow's page:
//! both directions, its records, and the sessions of its peer.

use std::net::IpAddr;

use axum::{
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use flowmon_common::{TcpState, ip_proto};
use maud::{Markup, html};

use super::{
    Notice, RECORDS_WINDOW, Section, bad_request, bytes, count, page, param, params, per_second,
    segment, select, sessions, span, tcp_flags, time,
};
use crate::{
    console::Ctx,
    flow::{
        Endpoint,
        query::{FlowFilter, FlowOrder, FlowPage, FlowQuery, FlowRef, FlowView, MAX_LIMIT},
        record::{FlowRecord, Protocol},
    },
};

const DEFAULT_LIMIT: usize = 100;

/// `None` for an empty field.
fn optional(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// The flows page's form, as given.
#[derive(Default)]
struct Form {
    addr: String,
    port: String,
    proto: String,
    state: String,
    iface: String,
    order: String,
    limit: String,
}

impl Form {
    fn read(query: Option<&str>) -> Self {
        let params = params(query);
        let field = |name| param(&params, name).to_owned();
        Self {
            addr: field("addr"),
            port: field("port"),
            proto: field("proto"),
            state: field("state"),
            iface: field("iface"),
            order: field("order"),
            limit: field("limit"),
        }
    }

    fn query(&self) -> Result<FlowQuery, String> {
        let filter = FlowFilter {
            addr: optional(&self.addr)
                .map(|addr| {
                    addr.parse::<IpAddr>()
                        .map_err(|_| format!("address: {addr:?} is no IP address"))
                })
                .transpose()?,
            port: optional(&self.port)
                .map(|port| {
                    port.parse()
                        .map_err(|_| format!("port: {port:?} is no port"))
                })
                .transpose()?,
            protocol: optional(&self.proto)
                .map(|proto| {
                    proto
                        .to_ascii_lowercase()
                        .parse::<Protocol>()
                        .map(|protocol| protocol.0)
                        .map_err(|_| format!("protocol: {proto:?} is no IP protocol"))
                })
                .transpose()?,
            state: optional(&self.state)
                .map(|state| {
                    TcpState::ALL
                        .into_iter()
                        .find(|known| known.as_str() == state)
                        .ok_or_else(|| format!("state: {state:?} is no TCP state"))
                })
                .transpose()?,
            iface: optional(&self.iface).map(str::to_owned),
        };
        let order = optional(&self.order)
            .map(str::parse)
            .transpose()?
            .unwrap_or_default();
        let limit = match optional(&self.limit) {
            None => DEFAULT_LIMIT,
            Some(limit) => limit
                .parse()
                .ok()
                .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                .ok_or_else(|| format!("limit: {limit:?} is not between 1 and {MAX_LIMIT}"))?,
        };
        Ok(FlowQuery {
            filter,
            order,
            limit,
        })
    }

    fn render(&self, ifaces: &[String]) -> Markup {
        let states: Vec<(&str, &str)> = std::iter::once(("", "any"))
            .chain(
                TcpState::ALL
                    .iter()
                    .map(|state| (state.as_str(), state.as_str())),
            )
            .collect();
        let protocols: Vec<(&str, &str)> = std::iter::once(("", "any"))
            .chain(
                Protocol::NAMED
                    .iter()
                    .filter_map(|protocol| protocol.name())
                    .map(|name| (name, name)),
            )
            .collect();
        let iface_options: Vec<(&str, &str)> = std::iter::once(("", "any"))
            .chain(ifaces.iter().map(|iface| (iface.as_str(), iface.as_str())))
            .collect();
        let orders: Vec<(&str, &str)> = FlowOrder::ALL
            .iter()
            .map(|order| (order.as_str(), order.as_str()))
            .collect();
        html! {
            form.filters method="get" action="/flows" {
                label { "Address" input name="addr" value=(self.addr) placeholder="either end" inputmode="text"; }
                label { "Port" input name="port" value=(self.port) inputmode="numeric" size="6"; }
                label { "Protocol" (select("proto", &protocols, &self.proto)) }
                label { "TCP state" (select("state", &states, &self.state)) }
                label { "Interface" (select("iface", &iface_options, &self.iface)) }
                label { "Top by" (select("order", &orders, if self.order.is_empty() { "bytes" } else { &self.order })) }
                label { "Rows" input name="limit" value=(if self.limit.is_empty() { DEFAULT_LIMIT.to_string() } else { self.limit.clone() }) inputmode="numeric" size="5"; }
                button type="submit" { "Show" }
                a.reset href="/flows" { "reset" }
            }
        }
    }
}

pub async fn list(State(ctx): State<Ctx>, RawQuery(raw): RawQuery) -> Response {
    let form = Form::read(raw.as_deref());
    let title = "Flows";
    let query = match form.query() {
        Ok(query) => query,
        Err(why) => {
            return bad_request(
                &ctx,
                title,
                Section::Flows,
                &why,
                form.render(&ctx.about.ifaces),
            );
        }
    };
    let Some(flows) = &ctx.sources.flows else {
        let body = form.render(&ctx.about.ifaces);
        return page(&ctx, title, Section::Flows, &[Notice::no_flows()], body).into_response();
    };
    let (notices, body) = match flows.top(query.clone()).await {
        Ok(found) => (
            vec![],
            html! {
                p.summary {
                    (count(found.matched as u64)) " of " (count(found.live as u64)) " live flows match; the top "
                    (found.flows.len()) " by " (query.order.as_str()) ", as read at " (time(found.read_at)) " UTC."
                }
                div #flow-table data-refresh="5" { (table(&found.flows)) }
            },
        ),
        Err(err) => (vec![Notice::flows_failed(&err)], html! {}),
    };
    let body = html! { (form.render(&ctx.about.ifaces)) (body) };
    page(&ctx, title, Section::Flows, &notices, body).into_response()
}

/// `ip:port` as a link to the address's page, or the address alone for ICMP.
fn endpoint(endpoint: &Endpoint, ports: bool) -> Markup {
    let ip = endpoint.ip.to_string();
    html! {
        a.addr href=(format!("/peers/{}", segment(&ip))) { (ip) }
        @if ports { ":" (endpoint.port) }
    }
}

/// The live flows as a table, each linked to its page.
pub fn table(flows: &[FlowView]) -> Markup {
    if flows.is_empty() {
        return html! { p.empty { "No flow." } };
    }
    html! {
        div.scroll {
            table.flows {
                thead { tr {
                    th { "Client" } th { "Server" } th { "Proto" } th { "State" } th { "If" }
                    th.num { "Packets →" } th.num { "← Packets" } th.num { "Bytes →" } th.num { "← Bytes" }
                    th.num { "Rate" } th.num { "Duration" } th { "" }
                } }
                tbody {
                    @for view in flows {
                        @let flow = &view.flow;
                        @let ports = flow.key.kind == flowmon_common::key_kind::PORTS && matches!(flow.key.protocol, ip_proto::TCP | ip_proto::UDP);
                        tr {
                            td { (endpoint(&flow.client, ports)) }
                            td { (endpoint(&flow.server, ports)) }
                            td { (flow.protocol_name()) }
                            td { (flow.tcp_state().as_str()) }
                            td { (view.iface) }
                            td.num { (count(flow.client.packets)) }
                            td.num { (count(flow.server.packets)) }
                            td.num { (bytes(flow.client.bytes as f64)) }
                            td.num { (bytes(flow.server.bytes as f64)) }
                            td.num { (per_second(view.rate(), "B")) }
                            td.num { (span(view.last_seen - view.first_seen)) }
                            td { a href=(format!("/flows/{}", FlowRef(flow.key))) { "details" } }
                        }
                    }
                }
            }
        }
    }
}

pub async fn one(State(ctx): State<Ctx>, Path(flow_ref): Path<String>) -> Response {
    let title = "Flow";
    let Ok(FlowRef(key)) = flow_ref.parse::<FlowRef>() else {
        let why = format!("{flow_ref:?} is no flow key");
        return bad_request(&ctx, title, Section::Flows, &why, html! {});
    };
    let mut notices = Vec::new();
    let live = match &ctx.sources.flows {
        None => {
            notices.push(Notice::no_flows());
            None
        }
        Some(flows) => flows.one(key).await.unwrap_or_else(|err| {
            notices.push(Notice::flows_failed(&err));
            None
        }),
    };
    let (lo, hi) = (
        crate::flow::ip_of(&key.addr_lo),
        crate::flow::ip_of(&key.addr_hi),
    );
    let now = crate::snare::tanner_time::now();
    // The records of this key: both ends and ports match, either way round.
    let ends = |record: &FlowRecord| {
        let client = (record.client_ip, record.client_port);
        let server = (record.server_ip, record.server_port);
        let (a, b) = ((lo, key.port_lo), (hi, key.port_hi));
        let icmp = !matches!(key.protocol, ip_proto::TCP | ip_proto::UDP);
        let same = |x: (IpAddr, u16), y: (IpAddr, u16)| x.0 == y.0 && (icmp || x.1 == y.1);
        (same(client, a) && same(server, b)) || (same(client, b) && same(server, a))
    };
    let mut records =
        sessions::peer_records(&ctx, lo, now - RECORDS_WINDOW, now, &mut notices).await;
    records.retain(|record| ends(record) && record.protocol == Protocol(key.protocol));
    records.sort_by(|a, b| b.time.total_cmp(&a.time));
    // The sessions of the flow's client (either end when it is not live).
    let peers: Vec<IpAddr> = match &live {
        Some(view) => vec![view.flow.client.ip],
        None => vec![lo, hi],
    };
    let sessions = sessions::of_peers(&ctx, &peers, &mut notices).await;
    let name = format!(
        "{} {}:{} ↔ {}:{}",
        Protocol(key.protocol),
        lo,
        key.port_lo,
        hi,
        key.port_hi
    );
    let body = html! {
        p.summary { (name) }
        @match &live {
            Some(view) => div #flow-live data-refresh="2" { (detail(view)) },
            None => p.notice { "This flow is not in the kernel map now: it ended, or was evicted. Its records follow." },
        }
        section {
            h2 { "Records (" (records.len()) ")" }
            (records_table(&records))
        }
        (sessions)
    };
    let status = if live.is_none() && records.is_empty() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    (status, page(&ctx, title, Section::Flows, &notices, body)).into_response()
}

/// The live flows of `peer`, the largest first, at most `limit`; `None`, with a notice, when
/// they cannot be read.
pub async fn of_peer(
    ctx: &Ctx,
    peer: IpAddr,
    limit: usize,
    notices: &mut Vec<Notice>,
) -> Option<FlowPage> {
    let Some(flows) = &ctx.sources.flows else {
        notices.push(Notice::no_flows());
        return None;
    };
    let query = FlowQuery {
        filter: FlowFilter {
            addr: Some(peer),
            ..FlowFilter::default()
        },
        order: FlowOrder::Bytes,
        limit,
    };
    match flows.top(query).await {
        Ok(found) => Some(found),
        Err(err) => {
            notices.push(Notice::flows_failed(&err));
            None
        }
    }
}

/// Both directions of a live flow, side by side.
fn detail(view: &FlowView) -> Markup {
    let flow = &view.flow;
    let side = |end: &Endpoint| {
        html! {
            td { a.addr href=(format!("/peers/{}", segment(&end.ip.to_string()))) { (end.ip) } }
        }
    };
    html! {
        div.scroll {
            table.detail {
                thead { tr { th {} th { "Client" } th { "Server" } } }
                tbody {
                    tr { th { "Address" } (side(&flow.client)) (side(&flow.server)) }
                    tr { th { "Port" } td { (flow.client.port) } td { (flow.server.port) } }
                    tr { th { "Packets sent" } td.num data-exact="client-packets" { (flow.client.packets) } td.num data-exact="server-packets" { (flow.server.packets) } }
                    tr { th { "Bytes sent" } td.num data-exact="client-bytes" { (flow.client.bytes) } td.num data-exact="server-bytes" { (flow.server.bytes) } }
                    tr { th { "TCP flags" } td { (tcp_flags(flow.client.tcp_flags)) } td { (tcp_flags(flow.server.tcp_flags)) } }
                    tr { th { "First TTL" } td { (flow.client.ttl) } td { (flow.server.ttl) } }
                    tr { th { "MAC" } td { (super::mac(&flow.client.mac)) } td { (super::mac(&flow.server.mac)) } }
                }
            }
        }
        dl.facts {
            dt { "Protocol" } dd { (flow.protocol_name()) }
            dt { "TCP state" } dd { (flow.tcp_state().as_str()) }
            dt { "Interface" } dd { (view.iface) }
            dt { "VLAN" } dd { (flow.key.vlan) }
            dt { "First seen" } dd { (time(view.first_seen)) " UTC" }
            dt { "Last seen" } dd { (time(view.last_seen)) " UTC" }
            dt { "Duration" } dd { (span(view.last_seen - view.first_seen)) }
            dt { "Community ID" } dd { code { (flow.community_id()) } }
            dt { "Flow id" } dd { @match &view.flow_id { Some(id) => code { (id) }, None => "none yet (no record made)" } }
        }
    }
}

/// Flow records, newest first.
pub fn records_table(records: &[FlowRecord]) -> Markup {
    if records.is_empty() {
        return html! { p.empty { "No record." } };
    }
    html! {
        div.scroll {
            table.records {
                thead { tr {
                    th { "Time" } th { "Sensor" } th { "Record" } th { "Client" } th { "Server" } th { "Proto" } th { "State" }
                    th.num { "Packets →" } th.num { "← Packets" } th.num { "Bytes →" } th.num { "← Bytes" } th { "End" }
                } }
                tbody {
                    @for record in records {
                        tr {
                            td { (time(record.time)) }
                            td { (record.sensor_id) }
                            td { code { (record.record_id) } " " (record.record_type.as_str()) }
                            td { (record.client_ip) ":" (record.client_port) }
                            td { (record.server_ip) ":" (record.server_port) }
                            td { (record.protocol) }
                            td { (record.tcp_state.as_str()) }
                            td.num { (count(record.client_packets)) }
                            td.num { (count(record.server_packets)) }
                            td.num { (bytes(record.client_bytes as f64)) }
                            td.num { (bytes(record.server_bytes as f64)) }
                            td { @if let Some(reason) = record.end_reason { (reason.as_str()) } }
                        }
                    }
                }
            }
        }
    }
}
