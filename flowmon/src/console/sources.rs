//! What the console reads, each behind a small trait so that the pages are tested against
//! fakes: the live flow table (the flow monitor), the live sessions (the SNARE service), what
//! Redis stores (sessions of every sensor, flow records of every peer), and the flow records
//! this agent keeps in memory.

use std::{collections::BTreeMap, net::IpAddr, pin::Pin};

use anyhow::Result;
use flowmon_common::FlowKey;
use serde_json::Value;
use uuid::Uuid;

use crate::{
    api::filters::Filter,
    flow::{
        query::{FlowPage, FlowQuery, FlowView},
        record::FlowRecord,
    },
    snare::Session,
};

pub type Answer<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// The flows alive in the kernel map.
pub trait LiveFlows: Send + Sync {
    fn top(&self, query: FlowQuery) -> Answer<'_, FlowPage>;
    /// The flow of `key`, with its counts of this moment, if it is live.
    fn one(&self, key: FlowKey) -> Answer<'_, Option<FlowView>>;
}

/// The SNARE sessions not ended yet.
pub trait LiveSessions: Send + Sync {
    /// Those that pass every filter, the most recently active first, at most `limit`; and the
    /// number of live sessions.
    fn recent(&self, filters: &[Filter], limit: usize) -> (Vec<Session>, usize);
    fn get(&self, sess_uuid: Uuid) -> Option<Session>;
    /// Live sessions by sensor uuid (`None`: events without one).
    fn by_sensor(&self) -> BTreeMap<Option<String>, usize>;
}

/// Tanner's `/snare-stats` of a sensor, over the sessions read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SensorStats {
    /// Sessions the sensor has stored.
    pub total_sessions: u64,
    /// Sessions the figures below are over: the newest, at most a bound.
    pub read: u64,
    pub total_duration: f64,
    /// Paths by attack type, every type seen.
    pub attack_frequency: BTreeMap<String, u64>,
}

/// Stored sessions that passed the filters, newest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredSessions {
    /// Analyses as Tanner's readers read them.
    pub sessions: Vec<Value>,
    /// Sessions read to find them.
    pub read: u64,
    /// Whether every stored session was read (else older ones were not searched).
    pub complete: bool,
}

/// What Redis holds.
pub trait Storage: Send + Sync {
    /// Whether Redis answers.
    fn ping(&self) -> Answer<'_, ()>;
    /// Sensor uuids (`snare_ids`), sorted.
    fn sensors(&self) -> Answer<'_, Vec<String>>;
    /// `None`: no such sensor.
    fn sensor_stats<'a>(&'a self, sensor: &'a str) -> Answer<'a, Option<SensorStats>>;
    /// The newest sessions of `sensor` (of every sensor when `None`) that pass every filter,
    /// at most `limit`, reading at most `budget` sessions.
    fn sessions<'a>(
        &'a self,
        sensor: Option<&'a str>,
        filters: &'a [Filter],
        limit: usize,
        budget: u64,
    ) -> Answer<'a, StoredSessions>;
    fn session(&self, sess_uuid: Uuid) -> Answer<'_, Option<Value>>;
    /// Flow records of `peer`, from every sensor, last seen between `from` and `to` (epoch
    /// seconds), oldest first, at most a bound.
    fn peer_records(&self, peer: IpAddr, from: f64, to: f64) -> Answer<'_, Vec<FlowRecord>>;
}

#[cfg(test)]
pub mod fake {
    //! Sources made of fixed data, for the console's unit tests.

    use std::{collections::HashMap, sync::Mutex};

    use anyhow::anyhow;
    use flowmon_common::FlowBlock;

    use super::*;
    use crate::{
        datapath::KernelClock,
        flow::{
            query::{Known, ViewMaker},
            wall_clock::WallClock,
        },
    };

    /// A map's keys and blocks, on the test clock, known as they are and answered by the
    /// same code as the flow monitor's.
    #[derive(Default)]
    pub struct Flows {
        pub table: Vec<(FlowKey, FlowBlock)>,
        pub ifaces: HashMap<u32, String>,
    }

    impl Flows {
        fn answer<T>(&self, ask: impl FnOnce(&ViewMaker<'_>) -> T) -> T {
            let clock = KernelClock::test_clock();
            let wall = WallClock::new();
            let no_id = |_: &FlowKey| None;
            ask(&ViewMaker {
                clock: &clock,
                wall: &wall,
                ifaces: &self.ifaces,
                flow_id: &no_id,
            })
        }
    }

    impl LiveFlows for Flows {
        fn top(&self, query: FlowQuery) -> Answer<'_, FlowPage> {
            let clock = KernelClock::test_clock();
            let known = self
                .table
                .iter()
                .map(|(key, block)| Known::of_block(*key, block, &clock));
            let lookup = |key: &FlowKey| {
                Ok(self
                    .table
                    .iter()
                    .find(|(known, _)| known == key)
                    .map(|(_, block)| *block))
            };
            let page = self.answer(|views| views.top(known, self.table.len(), &query, lookup, 0));
            Box::pin(async move { page })
        }

        fn one(&self, key: FlowKey) -> Answer<'_, Option<FlowView>> {
            let found = self
                .table
                .iter()
                .find(|(known, _)| *known == key)
                .map(|(key, block)| self.answer(|views| views.view(*key, block)));
            Box::pin(async move { Ok(found) })
        }
    }

    #[derive(Default)]
    pub struct Sessions(pub Vec<Session>);

    impl LiveSessions for Sessions {
        fn recent(&self, filters: &[Filter], limit: usize) -> (Vec<Session>, usize) {
            let mut found: Vec<Session> = self
                .0
                .iter()
                .filter(|session| filters.iter().all(|filter| filter.matches(*session)))
                .cloned()
                .collect();
            found.sort_by(|a, b| b.timestamp.total_cmp(&a.timestamp));
            found.truncate(limit);
            (found, self.0.len())
        }

        fn get(&self, sess_uuid: Uuid) -> Option<Session> {
            self.0.iter().find(|s| s.sess_uuid == sess_uuid).cloned()
        }

        fn by_sensor(&self) -> BTreeMap<Option<String>, usize> {
            let mut sensors = BTreeMap::new();
            for session in &self.0 {
                *sensors.entry(session.snare_uuid.clone()).or_default() += 1;
            }
            sensors
        }
    }

    /// Sessions by sensor, and flow records; `away` makes every call fail as a Redis that
    /// does not answer.
    #[derive(Default)]
    pub struct Stored {
        pub sensors: BTreeMap<String, Vec<Value>>,
        pub records: Vec<FlowRecord>,
        pub away: Mutex<bool>,
    }

    impl Stored {
        fn check(&self) -> Result<()> {
            if *self.away.lock().unwrap() {
                Err(anyhow!("Connection refused (os error 111)"))
            } else {
                Ok(())
            }
        }
    }

    impl Storage for Stored {
        fn ping(&self) -> Answer<'_, ()> {
            let result = self.check();
            Box::pin(async move { result })
        }

        fn sensors(&self) -> Answer<'_, Vec<String>> {
            let result = self
                .check()
                .map(|()| self.sensors.keys().cloned().collect());
            Box::pin(async move { result })
        }

        fn sensor_stats<'a>(&'a self, sensor: &'a str) -> Answer<'a, Option<SensorStats>> {
            let result = self.check().map(|()| {
                self.sensors.get(sensor).map(|sessions| {
                    let mut stats = SensorStats {
                        total_sessions: sessions.len() as u64,
                        read: sessions.len() as u64,
                        ..SensorStats::default()
                    };
                    for session in sessions {
                        stats.total_duration += session["end_time"].as_f64().unwrap_or(0.0)
                            - session["start_time"].as_f64().unwrap_or(0.0);
                        for attack in session["attack_types"].as_array().into_iter().flatten() {
                            *stats
                                .attack_frequency
                                .entry(attack.as_str().unwrap_or("?").to_owned())
                                .or_default() += 1;
                        }
                    }
                    stats
                })
            });
            Box::pin(async move { result })
        }

        fn sessions<'a>(
            &'a self,
            sensor: Option<&'a str>,
            filters: &'a [Filter],
            limit: usize,
            _budget: u64,
        ) -> Answer<'a, StoredSessions> {
            let result = self.check().map(|()| {
                let mut sessions: Vec<Value> = self
                    .sensors
                    .iter()
                    .filter(|(uuid, _)| sensor.is_none_or(|wanted| wanted == uuid.as_str()))
                    .flat_map(|(_, sessions)| sessions.iter())
                    .filter(|session| filters.iter().all(|filter| filter.matches(*session)))
                    .cloned()
                    .collect();
                sessions.sort_by(|a, b| {
                    let start = |s: &Value| s["start_time"].as_f64().unwrap_or(0.0);
                    start(b).total_cmp(&start(a))
                });
                let read = sessions.len() as u64;
                sessions.truncate(limit);
                StoredSessions {
                    sessions,
                    read,
                    complete: true,
                }
            });
            Box::pin(async move { result })
        }

        fn session(&self, sess_uuid: Uuid) -> Answer<'_, Option<Value>> {
            let wanted = sess_uuid.simple().to_string();
            let result = self.check().map(|()| {
                self.sensors
                    .values()
                    .flatten()
                    .find(|session| session["sess_uuid"] == wanted.as_str())
                    .cloned()
            });
            Box::pin(async move { result })
        }

        fn peer_records(&self, peer: IpAddr, from: f64, to: f64) -> Answer<'_, Vec<FlowRecord>> {
            let peer = peer.to_string();
            let result = self.check().map(|()| {
                self.records
                    .iter()
                    .filter(|r| r.client_ip == peer || r.server_ip == peer)
                    .filter(|r| r.last_seen >= from && r.last_seen <= to)
                    .cloned()
                    .collect()
            });
            Box::pin(async move { result })
        }
    }
}
