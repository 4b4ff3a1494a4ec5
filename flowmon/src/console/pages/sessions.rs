//! SNARE sensors and sessions, as Tanner's web UI showed them (sensors with their stats,
//! sessions with Tanner's filters, a page per session) and beyond: sessions still live, the
//! rule behind each owner score, and the session's kernel flows on a timeline beside its
//! requests.

use std::net::IpAddr;

use axum::{
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use maud::{Markup, html};
use serde_json::Value;
use uuid::Uuid;

use super::{
    Notice, Section, attack_chip, bad_request, bytes, count, json_block, page, param, params,
    query, raw_text, segment, select, span, time,
    timeline::{self, Bar, Tick},
};
use crate::{
    analyzer::owners::{self, Evidence, PossibleOwners},
    api::filters::Filter,
    console::{
        Ctx,
        sources::{StoredSensor, StoredSessions},
    },
    flow::{
        query::{FlowRef, FlowView},
        record::{CommunityId, FlowRecord, latest_per_flow},
    },
    snare::{AttackType, Session},
};

/// Sessions listed at most, live and stored.
const LISTED: usize = 100;
/// Stored sessions read at most to answer one page.
const READ_BUDGET: u64 = 5_000;
/// Live flows of a live session's peer shown on its timeline.
const LIVE_FLOWS: usize = 50;

/// The sessions page's form: Tanner's filters, one field each, plus Tanner's own syntax.
#[derive(Default)]
struct Form {
    sensor: String,
    peer_ip: String,
    user_agent: String,
    attack_type: String,
    owner: String,
    location: String,
    /// `name:value ...`, as Tanner's API takes them.
    filters: String,
}

impl Form {
    fn read(query: Option<&str>) -> Self {
        let params = params(query);
        let field = |name| param(&params, name).to_owned();
        Self {
            sensor: field("sensor"),
            peer_ip: field("peer_ip"),
            user_agent: field("user_agent"),
            attack_type: field("attack_types"),
            owner: field("possible_owners"),
            location: field("location"),
            filters: field("filters"),
        }
    }

    fn filters(&self) -> Result<Vec<Filter>, String> {
        let mut filters = Filter::parse_all(&self.filters)?;
        for (value, filter) in [
            (&self.peer_ip, Filter::PeerIp as fn(String) -> Filter),
            (&self.user_agent, Filter::UserAgent),
            (&self.attack_type, Filter::AttackType),
            (&self.owner, Filter::PossibleOwner),
            (&self.location, Filter::Location),
        ] {
            if !value.is_empty() {
                filters.push(filter(value.clone()));
            }
        }
        Ok(filters)
    }

    fn render(&self, sensors: &[String]) -> Markup {
        let sensor_options: Vec<(&str, &str)> = std::iter::once(("", "every sensor"))
            .chain(sensors.iter().map(|s| (s.as_str(), s.as_str())))
            .collect();
        let names: Vec<String> = AttackType::ALL.map(AttackType::name).to_vec();
        let attacks: Vec<(&str, &str)> = std::iter::once(("", "any"))
            .chain(names.iter().map(|name| (name.as_str(), name.as_str())))
            .collect();
        let owners: Vec<(&str, &str)> = std::iter::once(("", "any"))
            .chain(PossibleOwners::NAMES.iter().map(|name| (*name, *name)))
            .collect();
        html! {
            form.filters method="get" action="/sessions" {
                label { "Sensor" (select("sensor", &sensor_options, &self.sensor)) }
                label { "Peer" input name="peer_ip" value=(self.peer_ip) placeholder="address"; }
                label { "User agent" input name="user_agent" value=(self.user_agent) placeholder="contains"; }
                label { "Attack type" (select("attack_types", &attacks, &self.attack_type)) }
                label { "Owner" (select("possible_owners", &owners, &self.owner)) }
                label { "Location" input name="location" value=(self.location) placeholder="US, London" size="10"; }
                label.wide { "Tanner filters" input name="filters" value=(self.filters) placeholder="start_time:1700000000 end_time:..."; }
                button type="submit" { "Show" }
                a.reset href="/sessions" { "reset" }
            }
        }
    }
}

pub async fn list(State(ctx): State<Ctx>, RawQuery(raw): RawQuery) -> Response {
    let title = "Sessions";
    let form = Form::read(raw.as_deref());
    let mut notices = Vec::new();
    let sensors = known_sensors(&ctx, &mut notices).await;
    let filters = match form.filters() {
        Ok(filters) => filters,
        Err(why) => {
            return bad_request(&ctx, title, Section::Sessions, &why, form.render(&sensors));
        }
    };
    let sensor = (!form.sensor.is_empty()).then_some(form.sensor.as_str());
    let mut live_filters = filters.clone();
    if let Some(sensor) = sensor {
        live_filters.push(Filter::SnareUuid(sensor.to_owned()));
    }
    let (live, live_count) = ctx.sources.sessions.recent(&live_filters, LISTED);
    let stored = match &ctx.sources.storage {
        None => {
            notices.push(Notice::no_redis());
            None
        }
        Some(storage) => match storage
            .sessions(sensor, &filters, LISTED, READ_BUDGET)
            .await
        {
            Ok(stored) => Some(stored),
            Err(err) => {
                notices.push(Notice::redis_failed(&err));
                None
            }
        },
    };
    let body = html! {
        (form.render(&sensors))
        section #live-sessions data-refresh="5" {
            h2 { "Live (" (live.len()) " shown of " (live_count) " live)" }
            p.hint { "A session is analysed and stored once it has been idle for the session timeout." }
            (live_table(&live))
        }
        @if let Some(stored) = &stored {
            section #stored-sessions {
                h2 { "Stored (" (stored.sessions.len()) ")" }
                (read_note(stored))
                (stored_table(&stored.sessions))
            }
        }
    };
    page(&ctx, title, Section::Sessions, &notices, body).into_response()
}

/// Sensors stored in Redis and those with live sessions, sorted.
async fn known_sensors(ctx: &Ctx, notices: &mut Vec<Notice>) -> Vec<String> {
    let mut sensors: Vec<String> = ctx
        .sources
        .sessions
        .by_sensor()
        .into_keys()
        .flatten()
        .collect();
    if let Some(storage) = &ctx.sources.storage {
        match storage.sensors().await {
            Ok(stored) => sensors.extend(stored),
            Err(err) => notices.push(Notice::redis_failed(&err)),
        }
    }
    sensors.sort_unstable();
    sensors.dedup();
    sensors
}

fn read_note(stored: &StoredSessions) -> Markup {
    html! {
        @if !stored.complete {
            p.hint { "The newest " (count(stored.read)) " stored sessions were searched; narrow the filters (start_time, end_time) to reach older ones." }
        }
    }
}

fn sensor_link(sensor: Option<&str>) -> Markup {
    match sensor {
        Some(sensor) => {
            html! { a href=(format!("/sessions{}", query(&[("sensor", sensor)]))) { (short(sensor)) } }
        }
        None => html! { "-" },
    }
}

fn peer_link(ip: Option<&str>) -> Markup {
    match ip {
        Some(ip) => html! { a.addr href=(format!("/peers/{}", segment(ip))) { (ip) } },
        None => html! { "-" },
    }
}

/// The first 8 digits of a uuid, with the whole as a tooltip.
fn short(uuid: &str) -> Markup {
    let head: String = uuid.chars().take(8).collect();
    html! { span title=(uuid) { (head) } }
}

/// Distinct attack types, in order of appearance, without the benign ones.
fn attacks<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = Vec::new();
    for name in names {
        if !matches!(name, "index" | "unknown" | "wp-content") && !seen.contains(&name) {
            seen.push(name);
        }
    }
    seen
}

pub fn live_table(sessions: &[Session]) -> Markup {
    if sessions.is_empty() {
        return html! { p.empty { "No live session." } };
    }
    html! {
        div.scroll {
            table.sessions {
                thead { tr {
                    th { "Session" } th { "Sensor" } th { "Peer" } th { "User agent" } th { "Started" }
                    th.num { "Requests" } th.num { "Idle" } th { "Attacks" }
                } }
                tbody {
                    @for session in sessions {
                        @let names: Vec<String> = session.paths.iter().map(|p| p.attack_type.name()).collect();
                        tr {
                            td { a href=(format!("/sessions/{}", session.sess_uuid.simple())) { (short(&session.sess_uuid.simple().to_string())) } }
                            td { (sensor_link(session.snare_uuid.as_deref())) }
                            td { (peer_link(session.ip.as_deref())) }
                            td.ua { (raw_text(session.user_agent.as_deref().unwrap_or("-"))) }
                            td { (time(session.start_timestamp)) }
                            td.num { (count(session.count)) }
                            td.num { (span(crate::snare::tanner_time::now() - session.timestamp)) }
                            td { @for name in attacks(names.iter().map(String::as_str)) { (attack_chip(name)) " " } }
                        }
                    }
                }
            }
        }
    }
}

pub fn stored_table(sessions: &[Value]) -> Markup {
    if sessions.is_empty() {
        return html! { p.empty { "No stored session." } };
    }
    html! {
        div.scroll {
            table.sessions {
                thead { tr {
                    th { "Session" } th { "Sensor" } th { "Peer" } th { "User agent" } th { "Started" }
                    th.num { "Duration" } th.num { "Requests" } th { "Owner" } th { "Attacks" } th { "Flows" }
                } }
                tbody {
                    @for session in sessions {
                        @let sess_uuid = session["sess_uuid"].as_str().unwrap_or("?");
                        @let start = session["start_time"].as_f64().unwrap_or(0.0);
                        @let end = session["end_time"].as_f64().unwrap_or(start);
                        @let names = session["attack_types"].as_array().into_iter().flatten().filter_map(Value::as_str);
                        tr {
                            td { a href=(format!("/sessions/{}", segment(sess_uuid))) { (short(sess_uuid)) } }
                            td { (sensor_link(session["snare_uuid"].as_str())) }
                            td { (peer_link(session["peer_ip"].as_str())) }
                            td.ua { (raw_text(session["user_agent"].as_str().unwrap_or("-"))) }
                            td { (time(start)) }
                            td.num { (span(end - start)) }
                            td.num { (session["accepted_paths"].as_u64().map_or_else(|| "?".into(), count)) }
                            td { (likeliest(&session["possible_owners"])) }
                            td { @for name in attacks(names) { (attack_chip(name)) " " } }
                            td.num { (session["network"]["flows"].as_u64().map_or_else(|| "-".into(), count)) }
                        }
                    }
                }
            }
        }
    }
}

/// The owner with the highest stored score, and the score.
fn likeliest(owners: &Value) -> Markup {
    let best = PossibleOwners::NAMES
        .iter()
        .filter_map(|name| Some((*name, owners[*name].as_f64()?)))
        .fold(
            None,
            |best: Option<(&str, f64)>, (name, score)| match best {
                Some((_, top)) if top >= score => best,
                _ => Some((name, score)),
            },
        );
    match best {
        Some((name, score)) => {
            html! { span class=(format!("chip o-{name}")) { (name) " " (score) } }
        }
        None => html! { "-" },
    }
}

pub async fn one(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    let title = "Session";
    let Ok(sess_uuid) = Uuid::try_parse(&id) else {
        let why = format!("{id:?} is no session uuid");
        return bad_request(&ctx, title, Section::Sessions, &why, html! {});
    };
    let mut notices = Vec::new();
    if let Some(session) = ctx.sources.sessions.get(sess_uuid) {
        let body = live_session(&ctx, &session, &mut notices).await;
        return page(&ctx, title, Section::Sessions, &notices, body).into_response();
    }
    let stored = match &ctx.sources.storage {
        None => {
            notices.push(Notice::no_redis());
            None
        }
        Some(storage) => storage.session(sess_uuid).await.unwrap_or_else(|err| {
            notices.push(Notice::redis_failed(&err));
            None
        }),
    };
    match stored {
        Some(analysis) => {
            let body = stored_session(&ctx, &analysis, &mut notices).await;
            page(&ctx, title, Section::Sessions, &notices, body).into_response()
        }
        None => {
            notices.push(Notice(format!(
                "No session {} is live or stored.",
                sess_uuid.simple()
            )));
            let body = html! {};
            (
                StatusCode::NOT_FOUND,
                page(&ctx, title, Section::Sessions, &notices, body),
            )
                .into_response()
        }
    }
}

/// One request of a session, live or stored.
struct Request<'a> {
    time: f64,
    path: Option<&'a str>,
    status: Option<i64>,
    attack: String,
}

fn requests_table(requests: &[Request<'_>], start: f64) -> Markup {
    html! {
        div.scroll {
            table.requests {
                thead { tr { th.num { "#" } th.num { "At" } th { "Path" } th.num { "Status" } th { "Detection" } } }
                tbody {
                    @for (index, request) in requests.iter().enumerate() {
                        tr {
                            td.num { (index + 1) }
                            td.num { "+" (span(request.time - start)) }
                            td.path { (raw_text(request.path.unwrap_or("-"))) }
                            td.num { @if let Some(status) = request.status { (status) } }
                            td { (attack_chip(&request.attack)) }
                        }
                    }
                }
            }
        }
    }
}

/// The records of `peer`'s flows between `from` and `to`: from Redis (every sensor's) when
/// there is one, else those this agent keeps.
pub async fn peer_records(
    ctx: &Ctx,
    peer: IpAddr,
    from: f64,
    to: f64,
    notices: &mut Vec<Notice>,
) -> Vec<FlowRecord> {
    if let Some(storage) = &ctx.sources.storage {
        match storage.peer_records(peer, from, to).await {
            Ok(records) => return records,
            Err(err) => notices.push(Notice::redis_failed(&err)),
        }
    }
    let Some(records) = &ctx.sources.records else {
        return Vec::new();
    };
    match records.flows_of(peer, from, to).await {
        Ok(records) => records.unwrap_or_default(),
        Err(err) => {
            notices.push(Notice(format!("The flow records cannot be read: {err:#}")));
            Vec::new()
        }
    }
}

fn record_bar(record: &FlowRecord) -> Bar {
    Bar {
        start: record.first_seen,
        end: record.last_seen,
        label: format!(
            "{} {}:{} → {} · {} / {}",
            record.protocol,
            record.client_ip,
            record.client_port,
            record.server_port,
            bytes(record.client_bytes as f64),
            bytes(record.server_bytes as f64)
        ),
        link: None,
    }
}

async fn live_session(ctx: &Ctx, session: &Session, notices: &mut Vec<Notice>) -> Markup {
    let start = session.start_timestamp;
    let peer = session
        .ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    let from = start - ctx.session_timeout;
    let now = crate::snare::tanner_time::now();
    let mut bars = Vec::new();
    if let Some(peer) = peer {
        let records = peer_records(ctx, peer, from, now, notices).await;
        let live = super::flows::of_peer(ctx, peer, LIVE_FLOWS, notices).await;
        let live: Vec<&FlowView> = live
            .iter()
            .flat_map(|found| &found.flows)
            .filter(|view| view.last_seen >= from)
            .collect();
        // A live flow is drawn from the map, not from its last record.
        let live_ids: Vec<CommunityId> = live.iter().map(|view| view.flow.community_id()).collect();
        bars.extend(
            latest_per_flow(&records)
                .into_iter()
                .filter(|record| !live_ids.contains(&record.community_id))
                .map(record_bar),
        );
        bars.extend(live.into_iter().map(|view| Bar {
            start: view.first_seen,
            end: view.last_seen,
            label: format!(
                "live {} {}:{} → {} · {} / {}",
                view.flow.protocol_name(),
                view.flow.client.ip,
                view.flow.client.port,
                view.flow.server.port,
                bytes(view.flow.client.bytes as f64),
                bytes(view.flow.server.bytes as f64)
            ),
            link: Some(format!("/flows/{}", FlowRef(view.flow.key))),
        }));
    }
    let requests: Vec<Request<'_>> = session
        .paths
        .iter()
        .map(|entry| Request {
            time: entry.timestamp,
            path: entry.path.as_deref(),
            status: Some(entry.response_status),
            attack: entry.attack_type.name(),
        })
        .collect();
    let idle = now - session.timestamp;
    let body = html! {
        p.live { "Live: analysed and stored once idle for " (span(ctx.session_timeout)) " (idle " (span(idle)) " now)." }
        dl.facts {
            dt { "Session" } dd { code { (session.sess_uuid.simple()) } }
            dt { "Sensor" } dd { (sensor_link(session.snare_uuid.as_deref())) }
            dt { "Peer" } dd { (peer_link(session.ip.as_deref())) @if let Some(port) = session.port { " port " (port) } }
            dt { "User agent" } dd { (raw_text(session.user_agent.as_deref().unwrap_or("-"))) }
            dt { "Started" } dd { (time(start)) " UTC" }
            dt { "Last request" } dd { (time(session.timestamp)) " UTC" }
            dt { "Requests" } dd { (count(session.count)) }
            dt { "Referer" } dd { (raw_text(session.referer.as_deref().unwrap_or("-"))) }
        }
        (timeline_section(&requests, bars, from.min(start), now))
        section {
            h2 { "Requests" }
            (requests_table(&requests, start))
        }
        (emulation(&serde_json::to_value(&session.emulation).unwrap_or_default()))
        (cookies(&serde_json::to_value(&session.cookies).unwrap_or_default()))
    };
    html! { div #live-session data-refresh="3" { (body) } }
}

fn timeline_section(requests: &[Request<'_>], bars: Vec<Bar>, from: f64, to: f64) -> Markup {
    let ticks: Vec<Tick> = requests
        .iter()
        .map(|request| Tick {
            time: request.time,
            class: request.attack.clone(),
        })
        .collect();
    html! {
        section {
            h2 { "Timeline: requests and the peer's flows" }
            (timeline::render(&ticks, &bars, from, to))
        }
    }
}

/// What the session's attacker tried and what the emulated host answered (the `emulation`
/// evidence, `docs/emulation.md`): nothing when nothing was emulated.
fn emulation(evidence: &Value) -> Markup {
    let Some(kinds) = evidence.as_object().filter(|kinds| !kinds.is_empty()) else {
        return html! {};
    };
    let items = |key: &str| {
        evidence[key]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
    };
    let exchanges = [
        ("commands", "Commands"),
        ("code", "Code evaluated"),
        ("sql", "SQL"),
    ];
    let lists = [
        ("files_read", "Files read"),
        ("files_written", "Files written"),
        ("urls", "URLs named"),
    ];
    html! {
        section.emulation {
            h2 { "Emulation" }
            p.hint { "What the attacker tried, and what the emulated host answered: nothing of it ran." }
            @for (key, title) in exchanges {
                @if !items(key).is_empty() {
                    h3 { (title) }
                    div.scroll { table.exchanges {
                        thead { tr { th { "Input" } th { "Answer" } } }
                        tbody {
                            @for exchange in items(key) {
                                tr {
                                    td { (raw_text(exchange["input"].as_str().unwrap_or_default())) }
                                    td { pre.answer { (exchange["output"].as_str().unwrap_or_default()) } }
                                }
                            }
                        }
                    } }
                }
            }
            @for (key, title) in lists {
                @if !items(key).is_empty() {
                    h3 { (title) }
                    ul.evidence {
                        @for item in items(key) { li { (raw_text(item.as_str().unwrap_or_default())) } }
                    }
                }
            }
            @if !items("samples").is_empty() {
                h3 { "Samples fetched" }
                div.scroll { table.samples {
                    thead { tr { th { "URL" } th { "SHA-256" } th.num { "Bytes" } } }
                    tbody {
                        @for sample in items("samples") {
                            tr {
                                td { (raw_text(sample["url"].as_str().unwrap_or_default())) }
                                td { code { (sample["sha256"].as_str().unwrap_or_default()) } }
                                td.num { (sample["bytes"].as_u64().map_or_else(|| "-".into(), count)) }
                            }
                        }
                    }
                } }
            }
            @if let Some(omitted) = evidence["omitted"].as_u64().filter(|n| *n > 0) {
                p.hint { (count(omitted)) " more left out once the evidence reached its cap." }
            }
            @if kinds.keys().any(|key| !KNOWN_EVIDENCE.contains(&key.as_str())) {
                p.hint { "More in the analysis as stored, below." }
            }
        }
    }
}

/// The keys of the `emulation` evidence the page shows.
const KNOWN_EVIDENCE: [&str; 8] = [
    "commands",
    "code",
    "sql",
    "files_read",
    "files_written",
    "urls",
    "samples",
    "omitted",
];

fn cookies(cookies: &Value) -> Markup {
    let Some(cookies) = cookies.as_object().filter(|cookies| !cookies.is_empty()) else {
        return html! {};
    };
    html! {
        section {
            h2 { "Cookies" }
            div.scroll { table.cookies { tbody {
                @for (name, value) in cookies {
                    tr { th { (raw_text(name)) } td { (raw_text(value.as_str().unwrap_or("null"))) } }
                }
            } } }
        }
    }
}

async fn stored_session(ctx: &Ctx, analysis: &Value, notices: &mut Vec<Notice>) -> Markup {
    let start = analysis["start_time"].as_f64().unwrap_or(0.0);
    let end = analysis["end_time"].as_f64().unwrap_or(start);
    let from = start - ctx.session_timeout;
    let peer = analysis["peer_ip"]
        .as_str()
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    let mut bars = Vec::new();
    if let Some(peer) = peer {
        let records = peer_records(ctx, peer, from, end + 1.0, notices).await;
        bars.extend(
            latest_per_flow(&records)
                .into_iter()
                .filter(|record| record.first_seen <= end)
                .map(record_bar),
        );
    }
    let requests: Vec<Request<'_>> = analysis["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| Request {
            time: entry["timestamp"].as_f64().unwrap_or(start),
            path: entry["path"].as_str(),
            status: entry["response_status"].as_i64(),
            attack: entry["attack_type"]
                .as_str()
                .unwrap_or("unknown")
                .to_owned(),
        })
        .collect();
    let text = |key: &str| analysis[key].as_str().unwrap_or("-").to_owned();
    let number = |key: &str| {
        analysis[key]
            .as_f64()
            .map_or_else(|| "-".into(), |n| format!("{n:.3}"))
    };
    html! {
        dl.facts {
            dt { "Session" } dd { code { (text("sess_uuid")) } }
            dt { "Sensor" } dd { (sensor_link(analysis["snare_uuid"].as_str())) }
            dt { "Peer" } dd { (peer_link(analysis["peer_ip"].as_str())) @if let Some(port) = analysis["peer_port"].as_u64() { " port " (port) } }
            dt { "Location" } dd { (location(&analysis["location"])) }
            dt { "User agent" } dd { (raw_text(analysis["user_agent"].as_str().unwrap_or("-"))) }
            dt { "Started" } dd { (time(start)) " UTC" }
            dt { "Ended" } dd { (time(end)) " UTC (" (span(end - start)) ")" }
            dt { "Requests" } dd { (analysis["accepted_paths"].as_u64().map_or_else(|| "-".into(), count)) }
            dt { "Requests a second" } dd { (number("requests_in_second")) }
            dt { "Between requests" } dd { (number("approx_time_between_requests")) " s" }
            dt { "Errors" } dd { (analysis["errors"].as_u64().unwrap_or(0)) }
            dt { "Hidden links" } dd { (analysis["hidden_links"].as_u64().unwrap_or(0)) }
            dt { "Referer" } dd { (raw_text(analysis["referer"].as_str().unwrap_or("-"))) }
        }
        (owners_section(analysis))
        (network_section(&analysis["network"]))
        (timeline_section(&requests, bars, from.min(start), end.max(start) + 1.0))
        section {
            h2 { "Requests" }
            (requests_table(&requests, start))
        }
        (emulation(&analysis["emulation"]))
        (cookies(&analysis["cookies"]))
        details {
            summary { "The analysis as stored" }
            (json_block(analysis))
        }
    }
}

fn location(location: &Value) -> Markup {
    match location.as_object() {
        None => html! { "not located" },
        Some(place) => {
            let part = |key: &str| place.get(key).and_then(Value::as_str).unwrap_or("");
            html! { (part("city")) " " (part("country")) " (" (part("country_code")) ")" }
        }
    }
}

/// The stored scores, each with the rule of flowmon's that gives it.
fn owners_section(analysis: &Value) -> Markup {
    let stored = &analysis["possible_owners"];
    // The reverse DNS name is not stored: a slow crawler's 0.75 says it was a search engine's.
    let trusted = stored["crawler"].as_f64() == Some(0.75);
    let (owners, reasons) = owners::explain(&Evidence::of_json(analysis), trusted);
    let agrees = serde_json::to_value(owners).ok().as_ref() == Some(stored);
    html! {
        section {
            h2 { "Possible owners" }
            div.scroll { table.owners {
                thead { tr { th { "Owner" } th.num { "Score" } th { "Rule" } } }
                tbody {
                    @for name in PossibleOwners::NAMES {
                        @if let Some(score) = stored[name].as_f64() {
                            tr {
                                td { span class=(format!("chip o-{name}")) { (name) } }
                                td.num { (score) }
                                td { @if let Some((_, _, rule)) = reasons.iter().find(|(owner, _, _)| *owner == name) { (rule.to_string()) } }
                            }
                        }
                    }
                }
            } }
            @if !agrees {
                p.hint { "These scores differ from what flowmon's rules give now (stored by another analyzer, or by an older flowmon): the rules shown are flowmon's." }
            }
        }
    }
}

fn network_section(network: &Value) -> Markup {
    if network.is_null() {
        return html! {
            section { h2 { "Network" } p.empty { "No flows were joined: flows not monitored, or their source did not answer." } }
        };
    }
    let number = |key: &str| network[key].as_u64().unwrap_or(0);
    let ports: Vec<String> = network["server_ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .map(|port| port.to_string())
        .collect();
    html! {
        section {
            h2 { "Network" }
            dl.facts {
                dt { "Flows" } dd { (count(number("flows"))) }
                dt { "From the peer" } dd { (count(number("packets_from_peer"))) " packets, " (bytes(number("bytes_from_peer") as f64)) }
                dt { "To the peer" } dd { (count(number("packets_to_peer"))) " packets, " (bytes(number("bytes_to_peer") as f64)) }
                dt { "Ports of the sensor" } dd { (count(number("server_port_count"))) ": " (ports.join(", ")) }
                dt { "Unfinished handshakes" } dd { (count(number("half_open"))) }
                dt { "First TTL" } dd { (network["first_ttl"].as_u64().map_or_else(|| "-".into(), |ttl| ttl.to_string())) }
            }
        }
    }
}

/// The live and stored sessions of `peers`, for the flow and peer pages.
pub async fn of_peers(ctx: &Ctx, peers: &[IpAddr], notices: &mut Vec<Notice>) -> Markup {
    let mut live = Vec::new();
    let mut stored = StoredSessions {
        complete: true,
        ..StoredSessions::default()
    };
    for peer in peers {
        let filters = [Filter::PeerIp(peer.to_string())];
        live.extend(ctx.sources.sessions.recent(&filters, LISTED).0);
        if let Some(storage) = &ctx.sources.storage {
            match storage.sessions(None, &filters, LISTED, READ_BUDGET).await {
                Ok(found) => {
                    stored.sessions.extend(found.sessions);
                    stored.read = stored.read.max(found.read);
                    stored.complete &= found.complete;
                }
                Err(err) => notices.push(Notice::redis_failed(&err)),
            }
        }
    }
    html! {
        section {
            h2 { "Live sessions of the peer (" (live.len()) ")" }
            (live_table(&live))
        }
        @if ctx.sources.storage.is_some() {
            section {
                h2 { "Stored sessions of the peer (" (stored.sessions.len()) ")" }
                (read_note(&stored))
                (stored_table(&stored.sessions))
            }
        }
    }
}

/// Tanner's attack frequency as (attack type, paths) pairs.
fn attack_frequency(stored: &StoredSensor) -> Vec<(String, u64)> {
    match serde_json::to_value(&stored.stats.attack_frequency) {
        Ok(Value::Object(counts)) => counts
            .into_iter()
            .map(|(attack, n)| (attack, n.as_u64().unwrap_or(0)))
            .collect(),
        _ => Vec::new(),
    }
}

pub async fn sensors(State(ctx): State<Ctx>) -> Response {
    let mut notices = Vec::new();
    let live = ctx.sources.sessions.by_sensor();
    let mut stored = Vec::new();
    match &ctx.sources.storage {
        None => notices.push(Notice::no_redis()),
        Some(storage) => match storage.sensors().await {
            Err(err) => notices.push(Notice::redis_failed(&err)),
            Ok(sensors) => {
                for sensor in sensors {
                    match storage.sensor_stats(&sensor).await {
                        Ok(stats) => stored.push((sensor, stats)),
                        Err(err) => {
                            notices.push(Notice::redis_failed(&err));
                            break;
                        }
                    }
                }
            }
        },
    }
    let mut sensors: Vec<Option<String>> = live.keys().cloned().collect();
    sensors.extend(stored.iter().map(|(sensor, _)| Some(sensor.clone())));
    sensors.sort_unstable();
    sensors.dedup();
    let body = html! {
        @if sensors.is_empty() {
            p.empty { "No sensor has reported yet. Start SNARE with --tanner <this host>." }
        } @else {
            div.scroll { table.sensors {
                thead { tr {
                    th { "Sensor" } th.num { "Live sessions" } th.num { "Stored sessions" } th.num { "Total duration" } th { "Attacks (paths)" }
                } }
                tbody {
                    @for sensor in &sensors {
                        @let stats = stored.iter().find(|(known, _)| Some(known) == sensor.as_ref()).and_then(|(_, stats)| stats.as_ref());
                        tr {
                            td { @match sensor { Some(sensor) => a href=(format!("/sessions{}", query(&[("sensor", sensor)]))) { code { (sensor) } }, None => "(no sensor id)" } }
                            td.num { (count(live.get(sensor).copied().unwrap_or(0) as u64)) }
                            td.num { @match stats { Some(stats) => (count(stats.total_sessions)), None => "-" } }
                            td.num { @if let Some(stored) = stats { (span(stored.stats.total_duration)) } }
                            td {
                                @if let Some(stored) = stats {
                                    @for (attack, n) in attack_frequency(stored) {
                                        (attack_chip(&attack)) " " (count(n)) " "
                                    }
                                    @if stored.stats.total_sessions < stored.total_sessions as usize {
                                        span.hint { "(of the newest " (count(stored.stats.total_sessions as u64)) ")" }
                                    }
                                }
                            }
                        }
                    }
                }
            } }
        }
    };
    page(&ctx, "Sensors", Section::Sensors, &notices, body).into_response()
}
