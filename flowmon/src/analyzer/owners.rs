//! `possible_owners`: who is likely behind a session. Tanner's rules (spec section 5) with its
//! faults fixed, then flowmon's network rules on the session's flows (`docs/analyzer.md`).

use serde::Serialize;

use super::{analysis::Analysis, crawlers};
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

/// What the rules look at in a session: taken from an analysis as it is made, or read back
/// from a stored one (the console shows the rule behind each score).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evidence<'a> {
    pub peer_ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub requests_in_second: f64,
    pub has_referer: bool,
    pub asked_robots_txt: bool,
    /// The first of its paths' detections that makes an attacker.
    pub attack: Option<AttackType>,
    pub hidden_links: u64,
    /// From `network`, when the session has one.
    pub server_port_count: u64,
    pub half_open: u64,
}

impl<'a> Evidence<'a> {
    pub fn of(analysis: &'a Analysis) -> Self {
        let network = analysis.network.as_ref();
        Self {
            peer_ip: analysis.peer_ip.as_deref(),
            user_agent: analysis.user_agent.as_deref(),
            requests_in_second: analysis.requests_in_second,
            has_referer: analysis.referer.is_some(),
            asked_robots_txt: analysis
                .paths
                .iter()
                .any(|entry| entry.path.as_deref() == Some("/robots.txt")),
            attack: first_attack(analysis.attack_types.iter().copied()),
            hidden_links: analysis.hidden_links,
            server_port_count: network.map_or(0, |network| network.server_port_count),
            half_open: network.map_or(0, |network| network.half_open),
        }
    }

    /// From a stored analysis, as far as it has the keys (Tanner's lack `network`).
    pub fn of_json(analysis: &'a serde_json::Value) -> Self {
        let count = |value: &serde_json::Value| value.as_u64().unwrap_or(0);
        let attacks = analysis["attack_types"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .filter_map(AttackType::from_name);
        Self {
            peer_ip: analysis["peer_ip"].as_str(),
            user_agent: analysis["user_agent"].as_str(),
            requests_in_second: analysis["requests_in_second"].as_f64().unwrap_or(0.0),
            has_referer: !analysis["referer"].is_null(),
            asked_robots_txt: analysis["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|entry| entry["path"] == "/robots.txt"),
            attack: first_attack(attacks),
            hidden_links: count(&analysis["hidden_links"]),
            server_port_count: count(&analysis["network"]["server_port_count"]),
            half_open: count(&analysis["network"]["half_open"]),
        }
    }

    fn is_bot(&self) -> bool {
        self.user_agent.is_some_and(crawlers::is_crawler)
    }
}

fn first_attack(mut attacks: impl Iterator<Item = AttackType>) -> Option<AttackType> {
    attacks.find(|attack| ATTACKS.contains(attack))
}

/// The rule behind a score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    RobotsTxt,
    FastWithReferer,
    FastCrawler,
    Fast,
    /// A crawler's user agent at a slower pace, with a search engine's reverse DNS name or not.
    SlowCrawler {
        trusted: bool,
    },
    Attack(AttackType),
    HiddenLinks(u64),
    PortScan(u64),
    HalfOpen(u64),
    Loopback,
    /// `user`: what no other owner took.
    Remainder,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RobotsTxt => write!(f, "asked for /robots.txt"),
            Self::FastWithReferer => {
                write!(f, "over {FAST_RPS} requests a second, with a referer")
            }
            Self::FastCrawler => write!(
                f,
                "over {FAST_RPS} requests a second, with a crawler's user agent"
            ),
            Self::Fast => write!(f, "over {FAST_RPS} requests a second"),
            Self::SlowCrawler { trusted: true } => write!(
                f,
                "a crawler's user agent, from a search engine's reverse DNS name"
            ),
            Self::SlowCrawler { trusted: false } => write!(
                f,
                "a crawler's user agent, without a search engine's reverse DNS name"
            ),
            Self::Attack(attack) => write!(f, "a request detected as {}", attack.name()),
            Self::HiddenLinks(links) => write!(f, "followed {links} hidden link(s)"),
            Self::PortScan(ports) => {
                write!(f, "connected to {ports} ports of the sensor: a port scan")
            }
            Self::HalfOpen(flows) => write!(
                f,
                "left {flows} TCP handshakes unfinished: probing or a flood"
            ),
            Self::Loopback => write!(f, "the peer is this host (loopback)"),
            Self::Remainder => write!(f, "1 minus the highest of tool, crawler and attacker"),
        }
    }
}

/// Each owner's score with the rule that gave it, in [`PossibleOwners::NAMES`]' order; owners
/// with no score are left out.
pub type Reasons = Vec<(&'static str, f64, Rule)>;

/// Whether the rules need the peer's reverse DNS name: only a slow crawler's session does.
pub fn wants_host_name(analysis: &Analysis) -> bool {
    let evidence = Evidence::of(analysis);
    evidence.requests_in_second <= FAST_RPS && evidence.is_bot()
}

/// The scores of `analysis`, whose peer's reverse DNS name is `host` (if it was needed and
/// found).
pub fn possible_owners(analysis: &Analysis, host: Option<&str>) -> PossibleOwners {
    let trusted_host =
        host.is_some_and(|host| CRAWLER_HOSTS.iter().any(|known| host.contains(known)));
    explain(&Evidence::of(analysis), trusted_host).0
}

/// The scores of `evidence` and the rule behind each; `trusted_host`: the peer's reverse DNS
/// name is a search engine's.
pub fn explain(evidence: &Evidence<'_>, trusted_host: bool) -> (PossibleOwners, Reasons) {
    let (crawler, tool) = crawler_and_tool(evidence, trusted_host);
    let tool =
        [tool, network_tool(evidence)]
            .into_iter()
            .fold((0.0, None), |best, (score, rule)| {
                if score > best.0 { (score, rule) } else { best }
            });
    let attacker = attacker(evidence, trusted_host);
    let admin = if matches!(evidence.peer_ip, Some("127.0.0.1" | "::1")) {
        (1.0, Some(Rule::Loopback))
    } else {
        (0.0, None)
    };
    let user = round2(1.0 - crawler.0.max(attacker.0).max(tool.0));
    let owners = PossibleOwners {
        user,
        tool: tool.0,
        crawler: crawler.0,
        attacker: attacker.0,
        admin: admin.0,
    };
    let reasons = PossibleOwners::NAMES
        .into_iter()
        .zip([
            (user, Some(Rule::Remainder)),
            tool,
            crawler,
            attacker,
            admin,
        ])
        .filter_map(|(owner, (score, rule))| Some((owner, score, rule?)))
        .filter(|(_, score, _)| *score > 0.0)
        .collect();
    (owners, reasons)
}

type Scored = (f64, Option<Rule>);

/// (crawler, tool).
fn crawler_and_tool(evidence: &Evidence<'_>, trusted_host: bool) -> (Scored, Scored) {
    let both = |crawler: f64, tool: f64, rule: Rule| ((crawler, Some(rule)), (tool, Some(rule)));
    if evidence.asked_robots_txt {
        both(1.0, 0.0, Rule::RobotsTxt)
    } else if evidence.requests_in_second > FAST_RPS {
        if evidence.has_referer {
            both(0.0, 0.5, Rule::FastWithReferer)
        } else if evidence.is_bot() {
            both(0.85, 0.15, Rule::FastCrawler)
        } else {
            both(0.5, 0.85, Rule::Fast)
        }
    } else if evidence.is_bot() {
        let crawler = if trusted_host { 0.75 } else { 0.25 };
        both(
            crawler,
            0.15,
            Rule::SlowCrawler {
                trusted: trusted_host,
            },
        )
    } else {
        ((0.0, None), (0.0, None))
    }
}

fn attacker(evidence: &Evidence<'_>, trusted_host: bool) -> Scored {
    if let Some(attack) = evidence.attack {
        (1.0, Some(Rule::Attack(attack)))
    } else if evidence.requests_in_second > FAST_RPS {
        (0.0, None)
    } else if evidence.is_bot() {
        let score = if trusted_host { 0.25 } else { 0.75 };
        (
            score,
            Some(Rule::SlowCrawler {
                trusted: trusted_host,
            }),
        )
    } else if evidence.hidden_links > 0 {
        (0.5, Some(Rule::HiddenLinks(evidence.hidden_links)))
    } else {
        (0.0, None)
    }
}

/// flowmon's network rules: scanning and half-open connections are a tool's doing.
fn network_tool(evidence: &Evidence<'_>) -> Scored {
    let scan = (evidence.server_port_count >= SCAN_PORTS)
        .then_some((SCAN_TOOL, Rule::PortScan(evidence.server_port_count)));
    let half_open = (evidence.half_open >= HALF_OPEN_FLOWS)
        .then_some((HALF_OPEN_TOOL, Rule::HalfOpen(evidence.half_open)));
    match (scan, half_open) {
        (Some(a), Some(b)) => {
            let (score, rule) = if b.0 > a.0 { b } else { a };
            (score, Some(rule))
        }
        (Some((score, rule)), None) | (None, Some((score, rule))) => (score, Some(rule)),
        (None, None) => (0.0, None),
    }
}

/// Python's `round(x, 2)` for the scores there are.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::analyzer::{
        geoip::Location,
        network::{FlowOrigin, Network},
    };
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

    #[test]
    fn each_score_comes_with_its_rule_also_read_back_from_json() {
        let mut session = analysis(&[("/", Index), ("/x", Lfi)], 2.0, Some("curl/8.0"));
        session.network = Some(Network {
            server_port_count: 6,
            half_open: 4,
            ..Network::none_from(FlowOrigin::Local)
        });
        let (owners, reasons) = explain(&Evidence::of(&session), false);
        assert_eq!(owners, possible_owners(&session, None));
        assert_eq!(
            reasons,
            [
                ("tool", 0.85, Rule::PortScan(6)),
                ("attacker", 1.0, Rule::Attack(Lfi)),
            ]
        );
        assert_eq!(
            Rule::PortScan(6).to_string(),
            "connected to 6 ports of the sensor: a port scan"
        );
        let json = serde_json::to_value(&session).unwrap();
        assert_eq!(Evidence::of_json(&json), Evidence::of(&session));

        let crawler = analysis(&[("/", Index)], 2.0, Some(GOOGLEBOT));
        let (_, reasons) = explain(&Evidence::of(&crawler), true);
        let trusted = Rule::SlowCrawler { trusted: true };
        assert_eq!(
            reasons,
            [
                ("user", 0.25, Rule::Remainder),
                ("tool", 0.15, trusted),
                ("crawler", 0.75, trusted),
                ("attacker", 0.25, trusted),
            ]
        );
        // What a stored analysis lacks counts as nothing.
        assert_eq!(
            Evidence::of_json(&json!({"sess_uuid": 1})),
            Evidence::default()
        );
    }
}
