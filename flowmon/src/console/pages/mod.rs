//! The console's pages, rendered on the server (maud escapes every value it splices, and
//! attackers write much of what is shown: paths, user agents, cookies). Each page module
//! reads its sources and renders; this one holds the layout and the formatting they share.

pub mod flows;
pub mod overview;
pub mod peers;
pub mod sessions;
mod timeline;

use std::fmt::Write as _;

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use maud::{DOCTYPE, Markup, html};

use super::{Ctx, assets};

/// How far back a peer's flow records are read, seconds: the peer index's default retention.
const RECORDS_WINDOW: f64 = crate::sinks::redis::DEFAULT_PEER_INDEX_RETENTION.as_secs_f64();

/// The sections of the navigation bar.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Flows,
    Sessions,
    Sensors,
    Peers,
}

impl Section {
    const ALL: [(Section, &str, &str); 5] = [
        (Section::Overview, "/", "Overview"),
        (Section::Flows, "/flows", "Flows"),
        (Section::Sessions, "/sessions", "Sessions"),
        (Section::Sensors, "/sensors", "Sensors"),
        (Section::Peers, "/peers", "Peers"),
    ];
}

/// What a page cannot show, and why.
pub struct Notice(pub String);

impl Notice {
    pub fn no_flows() -> Self {
        Self(
            "Flows are not monitored: flowmon was started without --iface, so there is no \
             kernel flow table to show."
                .into(),
        )
    }

    pub fn no_redis() -> Self {
        Self(
            "No Redis (--no-redis): stored sessions, and the flow records of other sensors, \
             are not shown."
                .into(),
        )
    }

    pub fn redis_failed(err: &anyhow::Error) -> Self {
        Self(format!(
            "Redis does not answer ({err:#}): stored sessions and flow records are not shown; \
             analyses and records wait in the spool until it is back."
        ))
    }

    pub fn flows_failed(err: &anyhow::Error) -> Self {
        Self(format!("The flow table cannot be read: {err:#}"))
    }
}

/// A page's head: its title, the stylesheet and, unless `script` is false, the script.
fn head(title: &str, script: bool) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · flowmon" }
            link rel="stylesheet" href=(assets::url(assets::CSS));
            @if script {
                script src=(assets::url(assets::JS)) defer {}
            }
        }
    }
}

/// A whole page: the navigation, what it cannot show, and its body.
pub fn page(ctx: &Ctx, title: &str, section: Section, notices: &[Notice], body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, true))
            body {
                header.top {
                    a.brand href="/" { "flowmon" }
                    span.sensor title="--sensor-id" { (ctx.about.sensor_id) }
                    nav {
                        @for (which, href, name) in Section::ALL {
                            a href=(href) class=[(which == section).then_some("active")] { (name) }
                        }
                    }
                    @if ctx.auth_required {
                        form.logout method="post" action="/logout" { button { "Log out" } }
                    }
                }
                main {
                    h1 { (title) }
                    @for notice in notices {
                        p.notice role="note" { (notice.0) }
                    }
                    (body)
                }
                footer { "flowmon " (env!("CARGO_PKG_VERSION")) " · " (ctx.about.records) }
            }
        }
    }
}

/// A page whose request was wrong: the message, with status 400.
pub fn bad_request(ctx: &Ctx, title: &str, section: Section, why: &str, body: Markup) -> Response {
    let notice = Notice(why.to_owned());
    (
        StatusCode::BAD_REQUEST,
        page(ctx, title, section, &[notice], body),
    )
        .into_response()
}

/// The login form.
pub fn login(next: &str, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Log in", false))
            body.login {
                main {
                    h1 { "flowmon" }
                    form method="post" action="/login" {
                        input type="hidden" name="next" value=(next);
                        label for="token" { "Token (--api-token)" }
                        input #token type="password" name="token" autocomplete="current-password" autofocus;
                        @if let Some(error) = error {
                            p.notice role="alert" { (error) }
                        }
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    }
}

/// `1234567` as `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Bytes with a decimal unit: `1.5 MB`.
pub fn bytes(n: f64) -> String {
    scaled(n, "B")
}

/// `n` with k, M, G... and `unit`.
fn scaled(n: f64, unit: &str) -> String {
    const PREFIXES: [&str; 6] = ["", "k", "M", "G", "T", "P"];
    let mut value = n;
    let mut prefix = 0;
    while value.abs() >= 1000.0 && prefix < PREFIXES.len() - 1 {
        value /= 1000.0;
        prefix += 1;
    }
    if prefix == 0 {
        format!("{value:.0} {unit}")
    } else {
        format!("{value:.1} {}{unit}", PREFIXES[prefix])
    }
}

/// A rate per second: `1.5 MB/s`, `20 /s`.
pub fn per_second(n: f64, unit: &str) -> String {
    scaled(n, &format!("{unit}/s"))
}

/// Epoch seconds as UTC: `2026-12-06 03:16:13`.
pub fn time(epoch: f64) -> String {
    chrono::DateTime::from_timestamp_millis((epoch * 1000.0) as i64)
        .map_or_else(|| "?".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// A span of seconds: `850 ms`, `42 s`, `3 min 5 s`, `2 h 10 min`.
pub fn span(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{} min {} s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{} h {} min",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

/// TCP flags as names: `SYN ACK FIN`.
pub fn tcp_flags(flags: u8) -> String {
    const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
    let mut out = String::new();
    for (bit, name) in NAMES.iter().enumerate() {
        if flags & (1 << bit) != 0 {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(name);
        }
    }
    if out.is_empty() { "-".into() } else { out }
}

pub fn mac(mac: &[u8; 6]) -> String {
    let mut out = String::with_capacity(17);
    for (i, byte) in mac.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// A URL query made of `pairs` (empty values left out), with a leading `?` if any.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if !value.is_empty() {
            serializer.append_pair(name, value);
        }
    }
    let query = serializer.finish();
    if query.is_empty() {
        query
    } else {
        format!("?{query}")
    }
}

/// A URL path segment: what would end or escape it encoded.
pub fn segment(text: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'/')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'\\')
        .add(b'`')
        .add(b'{')
        .add(b'}');
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

/// The parameters of a request's query, in order.
pub fn params(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// The last value of parameter `name`, trimmed; empty when absent.
pub fn param<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
    params
        .iter()
        .rev()
        .find(|(key, _)| key == name)
        .map_or("", |(_, value)| value.trim())
}

/// A label with the attack type's colour.
pub fn attack_chip(name: &str) -> Markup {
    html! { span class=(format!("chip a-{}", css_name(name))) { (name) } }
}

/// An attack type or owner name as a CSS class suffix (only letters, digits, `-` and `_`).
fn css_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A `<select>` of `options` (value, label), `selected` chosen.
pub fn select(name: &str, options: &[(&str, &str)], selected: &str) -> Markup {
    html! {
        select name=(name) id=(name) {
            @for (value, label) in options {
                option value=(value) selected[*value == selected] { (label) }
            }
        }
    }
}

/// Text that may be long or hostile, shown in full but wrapped; control characters visible.
pub fn raw_text(text: &str) -> Markup {
    let visible: String = text
        .chars()
        .map(|c| match c {
            '\r' => '␍',
            '\n' => '␊',
            c if c.is_control() => '�',
            c => c,
        })
        .collect();
    html! { span.raw { (visible) } }
}

/// A JSON value, pretty and escaped.
pub fn json_block(value: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre.json { (text) } }
}

/// No script needed to read what a page shows; the charts need it.
pub fn needs_script() -> Markup {
    html! { noscript { p.notice { "The charts and live figures need JavaScript." } } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_people_write_them() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(bytes(999.0), "999 B");
        assert_eq!(bytes(1_500_000.0), "1.5 MB");
        assert_eq!(per_second(2500.0, "B"), "2.5 kB/s");
        assert_eq!(span(0.25), "250 ms");
        assert_eq!(span(185.0), "3 min 5 s");
        assert_eq!(tcp_flags(0x12), "SYN ACK");
        assert_eq!(tcp_flags(0), "-");
        assert_eq!(mac(&[2, 0, 0, 0, 0, 0xab]), "02:00:00:00:00:ab");
        assert_eq!(time(0.0), "1970-01-01 00:00:00");
        assert_eq!(query(&[("a", "1 2"), ("b", "")]), "?a=1+2");
        assert_eq!(segment("fd00::1"), "fd00::1");
        assert_eq!(segment("a/b?c#d%"), "a%2Fb%3Fc%23d%25");
        assert_eq!(css_name("php_code_injection"), "php_code_injection");
        assert_eq!(css_name("x\"y"), "x-y");
    }
}
