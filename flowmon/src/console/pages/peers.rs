//! One address across everything flowmon sees: its live flows in the kernel map, its flow
//! records from every sensor, and its SNARE sessions, live and stored.

use std::net::IpAddr;

use axum::{
    extract::{Path, RawQuery, State},
    response::{IntoResponse, Redirect, Response},
};
use maud::{Markup, html};

use super::{RECORDS_WINDOW, Section, bad_request, page, param, params, segment, sessions};
use crate::console::Ctx;

/// Live flows listed.
const LIVE_FLOWS: usize = 100;

fn form(value: &str) -> Markup {
    html! {
        form.filters method="get" action="/peers" {
            label.wide { "Address" input name="ip" value=(value) placeholder="203.0.113.7 or 2001:db8::1"; }
            button type="submit" { "Show" }
        }
    }
}

pub async fn search(State(ctx): State<Ctx>, RawQuery(raw): RawQuery) -> Response {
    let params = params(raw.as_deref());
    let ip = param(&params, "ip");
    if ip.is_empty() {
        let body = html! {
            (form(""))
            p.hint { "Everything flowmon knows of one address: its flows in the kernel now, its flow records from every sensor that shares this Redis, and its honeypot sessions." }
        };
        return page(&ctx, "Peers", Section::Peers, &[], body).into_response();
    }
    match ip.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(ip) => Redirect::to(&format!("/peers/{}", segment(&ip.to_string()))).into_response(),
        Err(_) => {
            let why = format!("{ip:?} is no IP address");
            bad_request(&ctx, "Peers", Section::Peers, &why, form(ip))
        }
    }
}

pub async fn one(State(ctx): State<Ctx>, Path(ip): Path<String>) -> Response {
    let Ok(peer) = ip.parse::<IpAddr>().map(|ip| ip.to_canonical()) else {
        let why = format!("{ip:?} is no IP address");
        return bad_request(&ctx, "Peer", Section::Peers, &why, form(&ip));
    };
    let mut notices = Vec::new();
    let live = super::flows::of_peer(&ctx, peer, LIVE_FLOWS, &mut notices).await;
    let now = crate::snare::tanner_time::now();
    let mut records =
        sessions::peer_records(&ctx, peer, now - RECORDS_WINDOW, now, &mut notices).await;
    records.sort_by(|a, b| b.time.total_cmp(&a.time));
    let sensors = {
        let mut sensors: Vec<&str> = records.iter().map(|r| &*r.sensor_id).collect();
        sensors.sort_unstable();
        sensors.dedup();
        sensors.join(", ")
    };
    let sessions = sessions::of_peers(&ctx, &[peer], &mut notices).await;
    let body = html! {
        (form(&peer.to_string()))
        @if let Some(live) = &live {
            section {
                h2 { "Live flows (" (live.matched) ")" }
                (super::flows::table(&live.flows))
            }
        }
        section {
            h2 { "Flow records of the last day (" (records.len()) ")" }
            @if !sensors.is_empty() { p.hint { "From sensors: " (sensors) } }
            (super::flows::records_table(&records))
        }
        (sessions)
    };
    page(
        &ctx,
        &format!("Peer {peer}"),
        Section::Peers,
        &notices,
        body,
    )
    .into_response()
}
