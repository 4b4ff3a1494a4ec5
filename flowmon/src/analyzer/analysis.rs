//! The analysis of an ended session: the JSON object of spec section 5 that Tanner's readers
//! parse, key for key and type for type, plus flowmon's `network` and `emulation` (which
//! Tanner's readers ignore).

use std::collections::HashSet;

use indexmap::IndexMap;
use serde::Serialize;

use super::{geoip::Location, network::Network, owners::PossibleOwners};
use crate::{
    emulation::Evidence,
    snare::{AttackType, PathEntry, Session, event::Fields},
};

/// Hidden-link paths planted in the sensors' pages.
pub type Dorks = HashSet<String>;

/// The attack types `attack_count` counts, in Tanner's order.
const COUNTED: [AttackType; 8] = [
    AttackType::Sqli,
    AttackType::Rfi,
    AttackType::Lfi,
    AttackType::Xss,
    AttackType::PhpCodeInjection,
    AttackType::CmdExec,
    AttackType::Crlf,
    AttackType::Index,
];

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Analysis {
    /// 32 hex digits.
    pub sess_uuid: String,
    pub peer_ip: Option<String>,
    pub peer_port: Option<u16>,
    pub location: Location,
    pub user_agent: Option<String>,
    pub snare_uuid: Option<String>,
    /// First and latest request, epoch seconds.
    pub start_time: f64,
    pub end_time: f64,
    pub requests_in_second: f64,
    pub approx_time_between_requests: f64,
    pub accepted_paths: u64,
    pub errors: u64,
    pub hidden_links: u64,
    pub attack_types: Vec<AttackType>,
    pub attack_count: IndexMap<AttackType, u64>,
    pub paths: Vec<PathEntry>,
    pub cookies: Fields,
    pub referer: Option<String>,
    pub possible_owners: PossibleOwners,
    /// `null` when the flows are unknown: no flow source, no peer address, or the source
    /// failed.
    pub network: Option<Network>,
    /// What the attacker tried, as the emulators answered it: commands, code, SQL, files read
    /// and written, URLs named, samples fetched (`{}` when nothing was emulated).
    pub emulation: Evidence,
}

impl Analysis {
    /// Everything but `possible_owners`, which may need a reverse DNS look-up first.
    pub fn new(
        session: Session,
        dorks: &Dorks,
        location: Location,
        network: Option<Network>,
    ) -> Self {
        let duration = session.timestamp - session.start_timestamp;
        // A one-request session lasts no time (Tanner's two clock reads gave it millions).
        let requests_in_second = if duration > 0.0 {
            session.count as f64 / duration
        } else {
            0.0
        };
        let approx_time_between_requests = match (session.paths.first(), session.paths.last()) {
            (Some(first), Some(last)) => {
                (last.timestamp - first.timestamp) / session.paths.len() as f64
            }
            _ => 0.0,
        };
        let attack_types: Vec<AttackType> = session
            .paths
            .iter()
            .map(|entry| entry.attack_type)
            .collect();
        let attack_count = COUNTED
            .into_iter()
            .map(|counted| {
                let n = attack_types.iter().filter(|&&a| a == counted).count();
                (counted, n as u64)
            })
            .filter(|&(_, n)| n > 0)
            .collect();
        let count_paths = |keep: &dyn Fn(&PathEntry) -> bool| {
            session.paths.iter().filter(|entry| keep(entry)).count() as u64
        };
        Self {
            sess_uuid: session.sess_uuid.simple().to_string(),
            peer_ip: session.ip,
            peer_port: session.port,
            location,
            user_agent: session.user_agent,
            snare_uuid: session.snare_uuid,
            start_time: session.start_timestamp,
            end_time: session.timestamp,
            requests_in_second,
            approx_time_between_requests,
            accepted_paths: session.count,
            errors: count_paths(&|entry| entry.response_status != 200),
            hidden_links: count_paths(&|entry| {
                entry.path.as_ref().is_some_and(|path| dorks.contains(path))
            }),
            attack_types,
            attack_count,
            paths: session.paths,
            cookies: session.cookies,
            referer: session.referer,
            possible_owners: PossibleOwners::default(),
            network,
            emulation: session.emulation,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::{Value, json};
    use uuid::Uuid;

    use super::*;

    /// Tanner's own fixture (`test_session_analyzer.py`): 24 requests, 6 of them kept.
    pub(crate) fn tanner_fixture() -> Session {
        let paths = [
            (1466091813.4779778, "/", AttackType::Index),
            (1466091842.7088752, "/fluent-python.html", AttackType::Index),
            (
                1466091858.214475,
                "/wow-movie.html?exec=/bin/bash",
                AttackType::Index,
            ),
            (
                1466091871.9076045,
                "/wow-movie.html?exec=/etc/passwd",
                AttackType::Lfi,
            ),
            (
                1466091885.1003792,
                "/wow-movie.html?exec=/bin/bash",
                AttackType::Index,
            ),
            (
                1466091899.9854052,
                "/wow-movie.html?exec=/../../../..///././././.../../../etc/passwd",
                AttackType::Lfi,
            ),
        ];
        Session {
            ip: Some("74.217.37.84".into()),
            port: Some(56970),
            user_agent: Some(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/53.0.2767.4 Safari/537.36"
                    .into(),
            ),
            snare_uuid: Some("78e51180-bf0d-4757-8a04-f000e5efa179".into()),
            paths: paths
                .into_iter()
                .map(|(timestamp, path, attack_type)| PathEntry {
                    path: Some(path.into()),
                    timestamp,
                    response_status: 200,
                    attack_type,
                })
                .collect(),
            sess_uuid: Uuid::parse_str("c546114f97f548f982756495f963e280").unwrap(),
            start_timestamp: 1466091813.4780173,
            timestamp: 1466091899.9854035,
            count: 24,
            cookies: [(
                "sess_uuid".to_owned(),
                Some("c546114f97f548f982756495f963e280".to_owned()),
            )]
            .into_iter()
            .collect(),
            referer: Some("/".into()),
            emulation: Evidence::default(),
        }
    }

    #[test]
    fn tanners_fixture_gives_tanners_figures() {
        let analysis = Analysis::new(
            tanner_fixture(),
            &Dorks::new(),
            Location::NotAvailable,
            None,
        );
        let value = serde_json::to_value(&analysis).unwrap();
        assert_eq!(value["sess_uuid"], "c546114f97f548f982756495f963e280");
        assert_eq!(value["requests_in_second"], json!(0.277432957486547));
        assert_eq!(
            value["approx_time_between_requests"],
            json!(14.417904575665792)
        );
        assert_eq!(value["accepted_paths"], 24);
        assert_eq!(
            value["attack_types"],
            json!(["index", "index", "index", "lfi", "index", "lfi"])
        );
        assert_eq!(
            serde_json::to_string(&analysis.attack_count).unwrap(),
            r#"{"lfi":2,"index":4}"#
        );
        assert_eq!(value["errors"], 0);
        assert_eq!(value["hidden_links"], 0);
        assert_eq!(value["location"], "NA");
        assert_eq!(value["network"], Value::Null);
        assert_eq!(value["emulation"], json!({}));
    }

    #[test]
    fn every_key_in_tanners_order_with_its_type() {
        let mut session = tanner_fixture();
        session.paths[1].response_status = 404;
        let dorks = Dorks::from(["/fluent-python.html".to_owned()]);
        let analysis = Analysis::new(session, &dorks, Location::NotAvailable, None);
        let text = serde_json::to_string(&analysis).unwrap();
        let value: IndexMap<String, Value> = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = value.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "sess_uuid",
                "peer_ip",
                "peer_port",
                "location",
                "user_agent",
                "snare_uuid",
                "start_time",
                "end_time",
                "requests_in_second",
                "approx_time_between_requests",
                "accepted_paths",
                "errors",
                "hidden_links",
                "attack_types",
                "attack_count",
                "paths",
                "cookies",
                "referer",
                "possible_owners",
                "network",
                "emulation",
            ]
        );
        assert_eq!(value["errors"], 1);
        assert_eq!(value["hidden_links"], 1);
        assert_eq!(value["start_time"], json!(1466091813.4780173));
        assert_eq!(value["end_time"], json!(1466091899.9854035));
        assert_eq!(value["peer_port"], 56970);
        assert_eq!(
            value["paths"][1],
            json!({"path": "/fluent-python.html", "timestamp": 1466091842.7088752,
                   "response_status": 404, "attack_type": "index"})
        );
        assert_eq!(
            value["cookies"],
            json!({"sess_uuid": "c546114f97f548f982756495f963e280"})
        );
        assert_eq!(value["referer"], "/");
    }

    #[test]
    fn a_one_request_session_has_no_rate() {
        let mut session = tanner_fixture();
        session.paths.truncate(1);
        session.count = 1;
        session.timestamp = session.start_timestamp;
        let analysis = Analysis::new(session, &Dorks::new(), Location::NotAvailable, None);
        assert_eq!(analysis.requests_in_second, 0.0);
        assert_eq!(analysis.approx_time_between_requests, 0.0);
        assert_eq!(
            serde_json::to_value(&analysis).unwrap()["requests_in_second"],
            json!(0.0)
        );
    }
}
