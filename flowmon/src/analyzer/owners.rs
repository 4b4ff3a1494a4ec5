//! `possible_owners`: who is likely behind a session. Tanner's rules (spec section 5) with its
//! faults fixed, then flowmon's network rules on the session's flows (`docs/analyzer.md`).

use serde::Serialize;

use super::{analysis::Analysis, crawlers, network::Network};
use crate::snare::AttackType;

/// Scores in Tanner's key order; zero scores are left out of the JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PossibleOwners {
    #[serde(skip_serializing_if = "is_zero")]
    pub user: f64,
    #[serde(skip_serializing_if = "is_zero")]
    pub tool: f64,
    #[serde(skip_serializing_if = "is_zero")]
    pub crawler: f64,
    #[serde(skip_serializing_if = "is_zero")]
    pub attacker: f64,
    #[serde(skip_serializing_if = "is_zero")]
    pub admin: f64,
}

impl PossibleOwners {
    /// The owners' names, in the order [`PossibleOwners::likeliest`] breaks ties.
    pub const NAMES: [&str; 5] = ["user", "tool", "crawler", "attacker", "admin"];

    /// The owner with the highest score (the first of [`Self::NAMES`] on a tie).
    pub fn likeliest(&self) -> &'static str {
        let scores = [
            self.user,
            self.tool,
            self.crawler,
            self.attacker,
            self.admin,
        ];
        let mut best = 0;
        for (index, score) in scores.iter().enumerate() {
            if *score > scores[best] {
                best = index;
            }
        }
        Self::NAMES[best]
    }
}

fn is_zero(score: &f64) -> bool {
    *score == 0.0
}

/// Attack types that make the peer an attacker. Tanner left php_object_injection,
/// xxe_injection and template_injection out.
const ATTACKS: [AttackType; 10] = [
    AttackType::Sqli,
    AttackType::Rfi,
    AttackType::Lfi,
    AttackType::Xss,
    AttackType::PhpCodeInjection,
    AttackType::CmdExec,
    AttackType::Crlf,
    AttackType::PhpObjectInjection,
    AttackType::XxeInjection,
    AttackType::TemplateInjection,
];

/// Above this many requests per second, a client is automated.
const FAST_RPS: f64 = 10.0;

/// Reverse DNS names of the search engines whose crawlers Tanner trusts.
const CRAWLER_HOSTS: [&str; 5] = [
    "googlebot.com",
    "baiduspider",
    "search.msn.com",
    "spider.yandex.com",
    "crawl.sogou.com",
];

/// A peer that connected to at least this many ports of the sensor was scanning it...
const SCAN_PORTS: u64 = 5;
const SCAN_TOOL: f64 = 0.85;
/// ...and one that left at least this many TCP handshakes unfinished was probing or flooding.
const HALF_OPEN_FLOWS: u64 = 3;
const HALF_OPEN_TOOL: f64 = 0.75;

/// Whether the rules need the peer's reverse DNS name: only a slow crawler's session does.
pub fn wants_host_name(analysis: &Analysis) -> bool {
    analysis.requests_in_second <= FAST_RPS && is_bot(analysis)
}

/// The scores of `analysis`, whose peer's reverse DNS name is `host` (if it was needed and
/// found).
pub fn possible_owners(analysis: &Analysis, host: Option<&str>) -> PossibleOwners {
    let trusted_host =
        host.is_some_and(|host| CRAWLER_HOSTS.iter().any(|known| host.contains(known)));
    let (crawler, tool) = crawler_and_tool(analysis, trusted_host);
    let tool = analysis
        .network
        .as_ref()
        .map_or(tool, |network| tool.max(network_tool(network)));
    let attacker = attacker(analysis, trusted_host);
    let admin = if matches!(analysis.peer_ip.as_deref(), Some("127.0.0.1" | "::1")) {
        1.0
    } else {
        0.0
    };
    PossibleOwners {
        user: round2(1.0 - crawler.max(attacker).max(tool)),
        tool,
        crawler,
        attacker,
        admin,
    }
}

fn is_bot(analysis: &Analysis) -> bool {
    analysis
        .user_agent
        .as_deref()
        .is_some_and(crawlers::is_crawler)
}

fn crawler_and_tool(analysis: &Analysis, trusted_host: bool) -> (f64, f64) {
    if analysis
        .paths
        .iter()
        .any(|entry| entry.path.as_deref() == Some("/robots.txt"))
    {
        (1.0, 0.0)
    } else if analysis.requests_in_second > FAST_RPS {
        if analysis.referer.is_some() {
            (0.0, 0.5)
        } else if is_bot(analysis) {
            (0.85, 0.15)
        } else {
            (0.5, 0.85)
        }
    } else if is_bot(analysis) {
        (if trusted_host { 0.75 } else { 0.25 }, 0.15)
    } else {
        (0.0, 0.0)
    }
}

fn attacker(analysis: &Analysis, trusted_host: bool) -> f64 {
    if analysis
        .attack_types
        .iter()
        .any(|attack| ATTACKS.contains(attack))
    {
        1.0
    } else if analysis.requests_in_second > FAST_RPS {
        0.0
    } else if is_bot(analysis) {
        if trusted_host { 0.25 } else { 0.75 }
    } else if analysis.hidden_links > 0 {
        0.5
    } else {
        0.0
    }
}

/// flowmon's network rules: scanning and half-open connections are a tool's doing.
fn network_tool(network: &Network) -> f64 {
    let mut tool: f64 = 0.0;
    if network.server_port_count >= SCAN_PORTS {
        tool = tool.max(SCAN_TOOL);
    }
    if network.half_open >= HALF_OPEN_FLOWS {
        tool = tool.max(HALF_OPEN_TOOL);
    }
    tool
}

/// Python's `round(x, 2)` for the scores there are.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::analyzer::{geoip::Location, network::FlowOrigin};
    use crate::snare::PathEntry;

    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

    /// A session of requests for `paths` (path, attack) at `rps`.
    fn analysis(paths: &[(&str, AttackType)], rps: f64, user_agent: Option<&str>) -> Analysis {
        Analysis {
            sess_uuid: "c546114f97f548f982756495f963e280".into(),
            peer_ip: Some("74.217.37.84".into()),
            peer_port: Some(56970),
            location: Location::NotAvailable,
            user_agent: user_agent.map(str::to_owned),
            snare_uuid: None,
            start_time: 1.0,
            end_time: 2.0,
            requests_in_second: rps,
            approx_time_between_requests: 0.5,
            accepted_paths: paths.len() as u64,
            errors: 0,
            hidden_links: 0,
            attack_types: paths.iter().map(|(_, attack)| *attack).collect(),
            attack_count: Default::default(),
            paths: paths
                .iter()
                .map(|(path, attack)| PathEntry {
                    path: Some((*path).to_owned()),
                    timestamp: 1.0,
                    response_status: 200,
                    attack_type: *attack,
                })
                .collect(),
            cookies: Default::default(),
            referer: None,
            possible_owners: PossibleOwners::default(),
            network: None,
            emulation: Default::default(),
        }
    }

    fn owners(analysis: &Analysis, host: Option<&str>) -> Value {
        serde_json::to_value(possible_owners(analysis, host)).unwrap()
    }

    use AttackType::*;

    #[test]
    fn robots_txt_is_a_crawler() {
        let session = analysis(&[("/robots.txt", Index)], 11.1, None);
        assert_eq!(owners(&session, None), json!({"crawler": 1.0}));
    }

    #[test]
    fn an_attack_is_an_attacker_even_the_ones_tanner_missed() {
        for attack in [
            Rfi,
            Sqli,
            PhpObjectInjection,
            XxeInjection,
            TemplateInjection,
        ] {
            let session = analysis(&[("/", Index), ("/x", attack)], 2.0, Some("user"));
            assert_eq!(
                owners(&session, None),
                json!({"attacker": 1.0}),
                "{attack:?}"
            );
        }
    }

    #[test]
    fn a_slow_crawler_is_trusted_by_its_reverse_dns_name() {
        let session = analysis(&[("/", Index)], 2.0, Some(GOOGLEBOT));
        assert!(wants_host_name(&session));
        // Tanner's test_choose_owner_mixed: no name, or one of no search engine.
        let untrusted = json!({"user": 0.25, "tool": 0.15, "crawler": 0.25, "attacker": 0.75});
        assert_eq!(owners(&session, None), untrusted);
        assert_eq!(owners(&session, Some("host.example.net")), untrusted);
        assert_eq!(
            owners(&session, Some("crawl-66-249-66-1.googlebot.com")),
            json!({"user": 0.25, "tool": 0.15, "crawler": 0.75, "attacker": 0.25})
        );
    }

    #[test]
    fn fast_sessions_are_tools_or_crawlers() {
        let mut session = analysis(&[("/", Index)], 11.0, Some("curl/8.0"));
        assert!(!wants_host_name(&session));
        assert_eq!(
            owners(&session, None),
            json!({"user": 0.15, "tool": 0.85, "crawler": 0.5})
        );
        session.user_agent = Some(GOOGLEBOT.into());
        assert!(!wants_host_name(&session));
        assert_eq!(
            owners(&session, None),
            json!({"user": 0.15, "tool": 0.15, "crawler": 0.85})
        );
        session.referer = Some("/".into());
        assert_eq!(owners(&session, None), json!({"user": 0.5, "tool": 0.5}));
    }

    #[test]
    fn hidden_links_lean_attacker_and_the_rest_is_a_user() {
        let mut session = analysis(&[("/", Index)], 2.0, Some("test_user_agent"));
        assert!(!wants_host_name(&session));
        assert_eq!(owners(&session, None), json!({"user": 1.0}));
        session.hidden_links = 1;
        assert_eq!(
            owners(&session, None),
            json!({"user": 0.5, "attacker": 0.5})
        );
    }

    #[test]
    fn loopback_peers_are_the_admin() {
        for ip in ["127.0.0.1", "::1"] {
            let mut session = analysis(&[("/", Index)], 2.0, None);
            session.peer_ip = Some(ip.into());
            assert_eq!(owners(&session, None), json!({"user": 1.0, "admin": 1.0}));
        }
    }

    #[test]
    fn scans_and_half_open_connections_lean_tool() {
        let mut session = analysis(&[("/", Index)], 2.0, Some("Mozilla/5.0"));
        session.network = Some(Network {
            server_port_count: SCAN_PORTS - 1,
            half_open: HALF_OPEN_FLOWS - 1,
            ..Network::none_from(FlowOrigin::Local)
        });
        assert_eq!(owners(&session, None), json!({"user": 1.0}));
        session.network = Some(Network {
            half_open: HALF_OPEN_FLOWS,
            ..Network::none_from(FlowOrigin::Local)
        });
        assert_eq!(owners(&session, None), json!({"user": 0.25, "tool": 0.75}));
        session.network = Some(Network {
            server_port_count: SCAN_PORTS,
            half_open: HALF_OPEN_FLOWS,
            ..Network::none_from(FlowOrigin::Local)
        });
        assert_eq!(owners(&session, None), json!({"user": 0.15, "tool": 0.85}));
        // An attack still wins.
        session.attack_types.push(Lfi);
        assert_eq!(
            owners(&session, None),
            json!({"tool": 0.85, "attacker": 1.0})
        );
    }

    #[test]
    fn the_likeliest_owner_has_the_highest_score_and_the_first_name_on_a_tie() {
        let owners = |user, tool, crawler, attacker, admin| PossibleOwners {
            user,
            tool,
            crawler,
            attacker,
            admin,
        };
        assert_eq!(owners(1.0, 0.0, 0.0, 0.0, 0.0).likeliest(), "user");
        assert_eq!(owners(0.15, 0.85, 0.0, 0.0, 0.0).likeliest(), "tool");
        assert_eq!(owners(0.0, 0.85, 0.0, 1.0, 0.0).likeliest(), "attacker");
        assert_eq!(owners(0.25, 0.0, 0.75, 0.0, 0.0).likeliest(), "crawler");
        assert_eq!(owners(0.0, 0.0, 0.0, 1.0, 1.0).likeliest(), "attacker");
        assert_eq!(owners(0.0, 0.0, 0.0, 0.0, 1.0).likeliest(), "admin");
    }
}
