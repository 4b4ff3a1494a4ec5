//! The overview: live figures (updated by the script from `/api/overview`), an hour of charts,
//! the top flows and the newest live sessions.

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use maud::{Markup, html};

use super::{Notice, Section, bytes, count, page, per_second, sessions::live_table};
use crate::{
    analyzer::owners::PossibleOwners,
    console::{Ctx, history::Figures},
    flow::query::{FlowFilter, FlowOrder, FlowQuery},
    snare::AttackType,
};

/// Flows and live sessions listed under the charts.
const LISTED: usize = 5;

pub async fn show(State(ctx): State<Ctx>) -> Response {
    let figures = ctx.history.lock().figures();
    let mut notices = Vec::new();
    let top = match &ctx.sources.flows {
        None => {
            notices.push(Notice::no_flows());
            None
        }
        Some(flows) => match flows
            .top(FlowQuery {
                filter: FlowFilter::default(),
                order: FlowOrder::Bytes,
                limit: LISTED,
            })
            .await
        {
            Ok(page) => Some(page),
            Err(err) => {
                notices.push(Notice::flows_failed(&err));
                None
            }
        },
    };
    if ctx.sources.storage.is_none() {
        notices.push(Notice::no_redis());
    }
    let (live, _) = ctx.sources.sessions.recent(&[], LISTED);
    let attack_names: Vec<String> = AttackType::ALL.map(AttackType::name).to_vec();
    let body = html! {
        section #overview data-points=(super::super::history::POINTS) {
            (figure_cards(&figures, ctx.sources.flows.is_some(), ctx.sources.store.is_some()))
            (super::needs_script())
            div.charts {
                (chart("traffic", "Traffic", &["bytes/s", "packets/s"]))
                (chart("attacks", "Events by attack type", &attack_names.iter().map(String::as_str).collect::<Vec<_>>()))
                (chart("owners", "Sessions analysed, by likeliest owner", &PossibleOwners::NAMES))
            }
        }
        @if let Some(top) = top {
            section {
                h2 { "Top flows now " a.more href="/flows" { "all flows" } }
                (super::flows::table(&top.flows))
            }
        }
        section {
            h2 { "Live sessions " a.more href="/sessions" { "all sessions" } }
            (live_table(&live))
        }
    };
    page(&ctx, "Overview", Section::Overview, &notices, body).into_response()
}

/// One figure: a label, the value the script keeps current, and a line below.
fn card(label: &str, key: &str, format: &str, value: String, sub: Markup) -> Markup {
    html! {
        div.figure {
            span.label { (label) }
            span.value data-figure=(key) data-format=(format) { (value) }
            span.sub { (sub) }
        }
    }
}

fn figure_cards(figures: &Figures, flows: bool, redis: bool) -> Markup {
    let gauges = &figures.gauges;
    let spool = match (gauges.spool_writes, gauges.spool_bytes) {
        (Some(writes), Some(bytes_)) => {
            format!("spool {} writes, {}", count(writes), bytes(bytes_ as f64))
        }
        _ => String::new(),
    };
    html! {
        div.figures {
            @if flows {
                (card("Packets", "packets_per_s", "rate", per_second(figures.packets_per_s, ""), html!{}))
                (card("Traffic", "bytes_per_s", "byte-rate", per_second(figures.bytes_per_s, "B"), html!{}))
                (card("Flows live", "flows_live", "count", count(gauges.flows_live), html! {
                    span data-figure="flows_created_per_s" data-format="rate" { (per_second(figures.flows_created_per_s, "")) } " created"
                }))
                (card("Flow map", "map_utilisation", "percent", format!("{:.1} %", gauges.map_utilisation * 100.0), html! {
                    span data-figure="flows_evicted" data-format="count" { (count(figures.flows_evicted)) } " evicted"
                }))
            }
            (card("SNARE events", "events_per_s", "rate", per_second(figures.events_per_s, ""), html! {
                span data-figure="events" data-format="count" { (count(figures.events)) } " in all"
            }))
            (card("Live sessions", "live_sessions", "count", count(gauges.live_sessions), html!{}))
            div.figure {
                span.label { "Redis" }
                span.value data-figure="redis" data-format="text" { (if redis { "…" } else { "none" }) }
                span.sub data-figure="spool" data-format="text" { (spool) }
            }
        }
    }
}

/// A chart the script draws, with its legend (series `names`, coloured `c0`, `c1`...).
fn chart(id: &str, title: &str, names: &[&str]) -> Markup {
    html! {
        figure.chart {
            figcaption {
                span.title { (title) }
                span.max data-max=(id) {}
            }
            svg id=(format!("chart-{id}")) viewBox="0 0 720 160" preserveAspectRatio="none" role="img" aria-label=(title) {}
            ul.legend {
                @for (index, name) in names.iter().enumerate() {
                    li { span class=(format!("swatch c{index}")) {} (name) }
                }
            }
        }
    }
}
