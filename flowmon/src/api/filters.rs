//! Tanner's session filters (`/<uuid>/sessions?filters=name:value name:value`), with its
//! faults fixed: null fields match nothing, and sensor uuids compare in any spelling.

use serde_json::Value;

use super::{finite, reads::attack_types};
use crate::{
    analyzer::storage::sensor_key,
    snare::{AttackType, Session},
};

/// One of Tanner's session filters, `name:value`; several are separated by spaces.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// The user agent contains the value (a null one contains nothing).
    UserAgent(String),
    PeerIp(String),
    /// One of the attack types is the value.
    AttackType(String),
    /// The value is one of the possible owners (one with a score).
    PossibleOwner(String),
    /// The session started at or after the value.
    StartTime(f64),
    /// The session ended at or before the value.
    EndTime(f64),
    SnareUuid(String),
    /// The value is the country code, country or city, in any case.
    Location(String),
}

impl Filter {
    /// Filters separated by white space, as Tanner reads them; the error is Tanner's message.
    pub fn parse_all(filters: &str) -> Result<Vec<Self>, String> {
        filters.split_whitespace().map(Self::parse).collect()
    }

    fn parse(filter: &str) -> Result<Self, String> {
        // At the first colon only, so that IPv6 addresses are values.
        let (name, value) = filter
            .split_once(':')
            .ok_or_else(|| "Invalid filter definition".to_owned())?;
        let time = || finite(value).ok_or_else(|| "Invalid filter definition".to_owned());
        let value = value.to_owned();
        Ok(match name {
            "user_agent" => Self::UserAgent(value),
            "peer_ip" => Self::PeerIp(value),
            "attack_types" => Self::AttackType(value),
            "possible_owners" => Self::PossibleOwner(value),
            "start_time" => Self::StartTime(time()?),
            "end_time" => Self::EndTime(time()?),
            "snare_uuid" => Self::SnareUuid(value),
            "location" => Self::Location(value),
            _ => return Err(format!("Invalid filter : {name}")),
        })
    }

    pub fn matches(&self, session: &impl Filterable) -> bool {
        match self {
            Self::UserAgent(part) => session
                .user_agent()
                .is_some_and(|ua| ua.contains(part.as_str())),
            Self::PeerIp(ip) => session.peer_ip() == Some(ip.as_str()),
            Self::AttackType(attack) => session.has_attack_type(attack),
            Self::PossibleOwner(owner) => session.has_possible_owner(owner),
            Self::StartTime(since) => session.start_time().is_some_and(|t| *since <= t),
            Self::EndTime(by) => session.end_time().is_some_and(|t| *by >= t),
            Self::SnareUuid(uuid) => session
                .snare_uuid()
                .and_then(sensor_key)
                .is_some_and(|s| Some(s) == sensor_key(uuid)),
            Self::Location(place) => session.is_located_in(place),
        }
    }
}

/// What Tanner's filters look at in a session: a stored analysis, or a live session.
pub trait Filterable {
    fn user_agent(&self) -> Option<&str>;
    fn peer_ip(&self) -> Option<&str>;
    fn has_attack_type(&self, name: &str) -> bool;
    fn has_possible_owner(&self, owner: &str) -> bool;
    fn start_time(&self) -> Option<f64>;
    /// `None` while the session lasts.
    fn end_time(&self) -> Option<f64>;
    fn snare_uuid(&self) -> Option<&str>;
    /// Whether its country code, country or city is `place`, in any case.
    fn is_located_in(&self, place: &str) -> bool;
}

/// An analysis as JSON.
impl Filterable for Value {
    fn user_agent(&self) -> Option<&str> {
        self["user_agent"].as_str()
    }

    fn peer_ip(&self) -> Option<&str> {
        self["peer_ip"].as_str()
    }

    fn has_attack_type(&self, name: &str) -> bool {
        attack_types(self).any(|attack| attack == name)
    }

    fn has_possible_owner(&self, owner: &str) -> bool {
        self["possible_owners"].get(owner).is_some()
    }

    fn start_time(&self) -> Option<f64> {
        self["start_time"].as_f64()
    }

    fn end_time(&self) -> Option<f64> {
        self["end_time"].as_f64()
    }

    fn snare_uuid(&self) -> Option<&str> {
        self["snare_uuid"].as_str()
    }

    fn is_located_in(&self, place: &str) -> bool {
        ["country_code", "country", "city"].iter().any(|key| {
            self["location"][key]
                .as_str()
                .is_some_and(|name| name.eq_ignore_ascii_case(place))
        })
    }
}

/// A session not analysed yet: it has no owners and no location.
impl Filterable for Session {
    fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }

    fn peer_ip(&self) -> Option<&str> {
        self.ip.as_deref()
    }

    fn has_attack_type(&self, name: &str) -> bool {
        AttackType::from_name(name)
            .is_some_and(|wanted| self.paths.iter().any(|entry| entry.attack_type == wanted))
    }

    fn has_possible_owner(&self, _: &str) -> bool {
        false
    }

    fn start_time(&self) -> Option<f64> {
        Some(self.start_timestamp)
    }

    fn end_time(&self) -> Option<f64> {
        None
    }

    fn snare_uuid(&self) -> Option<&str> {
        self.snare_uuid.as_deref()
    }

    fn is_located_in(&self, _: &str) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn filters_parse_as_tanner_reads_them_with_its_faults_fixed() {
        assert_eq!(
            Filter::parse_all("user_agent:curl peer_ip:2001:db8::1 start_time:1.5 location:US"),
            Ok(vec![
                Filter::UserAgent("curl".into()),
                Filter::PeerIp("2001:db8::1".into()),
                Filter::StartTime(1.5),
                Filter::Location("US".into()),
            ])
        );
        assert_eq!(Filter::parse_all(""), Ok(vec![]));
        assert_eq!(
            Filter::parse_all("user_agent"),
            Err("Invalid filter definition".into())
        );
        for bad in ["end_time:soon", "start_time:nan", "end_time:inf"] {
            assert_eq!(
                Filter::parse_all(bad),
                Err("Invalid filter definition".into()),
                "{bad}"
            );
        }
        assert_eq!(
            Filter::parse_all("colour:red"),
            Err("Invalid filter : colour".into())
        );
    }

    #[test]
    fn filters_match_sessions_and_null_fields_match_nothing() {
        let session = json!({
            "sess_uuid": "c546114f97f548f982756495f963e280", "peer_ip": "74.217.37.84",
            "user_agent": null, "snare_uuid": "78e51180-bf0d-4757-8a04-f000e5efa179",
            "start_time": 10.0, "end_time": 20.0, "attack_types": ["index", "lfi"],
            "possible_owners": {"attacker": 1.0},
            "location": {"country": "United States", "country_code": "US", "city": "Smyrna",
                         "zip_code": "30080"},
        });
        let matches = |filter: &str| Filter::parse(filter).unwrap().matches(&session);
        assert!(!matches("user_agent:Mozilla"));
        assert!(matches("peer_ip:74.217.37.84") && !matches("peer_ip:74.217.37.8"));
        assert!(matches("attack_types:lfi") && !matches("attack_types:sqli"));
        assert!(matches("possible_owners:attacker") && !matches("possible_owners:user"));
        assert!(matches("start_time:10") && !matches("start_time:10.5"));
        assert!(matches("end_time:20") && !matches("end_time:19.9"));
        assert!(matches("snare_uuid:78E51180-BF0D-4757-8A04-F000E5EFA179"));
        assert!(!matches("snare_uuid:snare_ids"));
        assert!(matches("location:us") && matches("location:Smyrna"));
        assert!(!matches("location:country") && !matches("location:U"));
        let unlocated = json!({"location": "NA", "user_agent": "curl/8.0"});
        assert!(!Filter::parse("location:NA").unwrap().matches(&unlocated));
        assert!(
            Filter::parse("user_agent:curl")
                .unwrap()
                .matches(&unlocated)
        );
    }

    #[test]
    fn live_sessions_match_what_they_have_so_far() {
        let mut session = crate::analyzer::analysis::tests::tanner_fixture();
        let matches =
            |session: &Session, filter: &str| Filter::parse(filter).unwrap().matches(session);
        assert!(matches(&session, "attack_types:lfi") && !matches(&session, "attack_types:xss"));
        assert!(!matches(&session, "attack_types:no_such_attack"));
        assert!(matches(&session, "peer_ip:74.217.37.84"));
        assert!(matches(&session, "user_agent:Chrome/53"));
        assert!(matches(&session, "start_time:1466091813"));
        assert!(matches(
            &session,
            "snare_uuid:78e51180bf0d47578a04f000e5efa179"
        ));
        // Not known before the session ends and is analysed.
        for later in [
            "end_time:9999999999",
            "possible_owners:attacker",
            "location:US",
        ] {
            assert!(!matches(&session, later), "{later}");
        }
        session.user_agent = None;
        assert!(!matches(&session, "user_agent:Chrome"));
    }
}
