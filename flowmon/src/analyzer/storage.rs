//! Analysed sessions into Redis as Tanner keeps them (spec section 6.1), through the
//! [`Store`](crate::store::Store): `snare_ids`, the set of sensor uuids, and one sorted set per
//! sensor, named by its uuid, of its sessions' analyses scored by `start_time`. Documented in
//! `docs/redis-schema.md`.

use std::time::Duration;

use uuid::Uuid;

use super::analysis::Analysis;
use crate::store::{Op, Write};

/// The set of every sensor uuid with stored sessions.
pub const SNARE_IDS: &str = "snare_ids";

/// The sorted set of a sensor's sessions: its uuid, hyphenated, lower case. Anything else a
/// sender calls a sensor is no key: it could name another key (`snare_ids`, `flowmon:flows`),
/// whose type a write would then clash with forever.
pub fn sensor_key(snare_uuid: &str) -> Option<String> {
    Uuid::try_parse(snare_uuid)
        .ok()
        .map(|uuid| uuid.hyphenated().to_string())
}

/// The [`Write`] that adds sensor `snare_uuid` to `snare_ids` (Tanner adds a sensor at each of
/// its events, before any session of it is stored); `None` for a sensor id that is no uuid.
pub fn sensor_added(snare_uuid: &str) -> Option<Write> {
    let sensor = sensor_key(snare_uuid)?;
    Some(Write {
        id: format!("sensor:{sensor}"),
        ops: vec![Op::SAdd {
            key: SNARE_IDS.to_owned(),
            member: sensor,
        }],
    })
}

/// Makes the [`Write`] of an analysed session.
pub struct SessionWrites {
    retention: Option<Duration>,
}

impl SessionWrites {
    pub fn new(retention: Option<Duration>) -> Self {
        Self { retention }
    }

    /// `None` when the session has no sensor uuid to file it under.
    pub fn write(&self, analysis: &Analysis) -> Option<Write> {
        let sensor = sensor_key(analysis.snare_uuid.as_deref()?)?;
        let member = serde_json::to_string(analysis).expect("an analysis serialises");
        // The session before its sensor, as when Tanner stores one.
        let mut ops = vec![Op::ZAdd {
            key: sensor.clone(),
            score: analysis.start_time,
            member,
        }];
        if let Some(retention) = self.retention {
            // Measured from this session, which therefore stays: the set never empties and
            // vanishes while `snare_ids` names it.
            ops.push(Op::ZRemRangeByScore {
                key: sensor.clone(),
                below: analysis.start_time - retention.as_secs_f64(),
            });
        }
        ops.push(Op::SAdd {
            key: SNARE_IDS.to_owned(),
            member: sensor,
        });
        Some(Write {
            id: analysis.sess_uuid.clone(),
            ops,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyzer::{
        analysis::{Dorks, tests::tanner_fixture},
        geoip::Location,
    };

    const SENSOR: &str = "78e51180-bf0d-4757-8a04-f000e5efa179";

    fn analysis(snare_uuid: Option<&str>) -> Analysis {
        let mut session = tanner_fixture();
        session.snare_uuid = snare_uuid.map(str::to_owned);
        Analysis::new(session, &Dorks::new(), Location::NotAvailable, None)
    }

    #[test]
    fn a_session_is_a_member_of_its_sensor_set_then_its_sensor_of_snare_ids() {
        let analysis = analysis(Some(SENSOR));
        let write = SessionWrites::new(None).write(&analysis).unwrap();
        assert_eq!(
            write,
            Write {
                id: "c546114f97f548f982756495f963e280".into(),
                ops: vec![
                    Op::ZAdd {
                        key: SENSOR.into(),
                        score: 1466091813.4780173,
                        member: serde_json::to_string(&analysis).unwrap(),
                    },
                    Op::SAdd {
                        key: "snare_ids".into(),
                        member: SENSOR.into(),
                    },
                ]
            }
        );
    }

    #[test]
    fn a_sensor_is_added_by_its_uuid_alone() {
        assert_eq!(
            sensor_added(&SENSOR.to_uppercase()),
            Some(Write {
                id: format!("sensor:{SENSOR}"),
                ops: vec![Op::SAdd {
                    key: "snare_ids".into(),
                    member: SENSOR.into(),
                }],
            })
        );
        assert_eq!(sensor_added("snare_ids"), None);
    }

    #[test]
    fn retention_trims_what_began_that_long_before_this_session() {
        let write = SessionWrites::new(Some(Duration::from_secs(86_400)))
            .write(&analysis(Some(SENSOR)))
            .unwrap();
        assert_eq!(
            write.ops[1],
            Op::ZRemRangeByScore {
                key: SENSOR.into(),
                below: 1466091813.4780173 - 86_400.0,
            }
        );
        assert_eq!(write.ops.len(), 3);
    }

    #[test]
    fn only_uuids_name_sensor_sets() {
        let writes = SessionWrites::new(None);
        assert!(writes.write(&analysis(None)).is_none());
        for not_a_uuid in ["snare_ids", "flowmon:flows", "", "{x}"] {
            assert!(writes.write(&analysis(Some(not_a_uuid))).is_none());
        }
        let upper = SENSOR.to_uppercase();
        let write = writes.write(&analysis(Some(&upper))).unwrap();
        assert_eq!(write.ops[0].key(), SENSOR);
        assert_eq!(
            sensor_key("78e51180bf0d47578a04f000e5efa179").unwrap(),
            SENSOR
        );
    }
}
