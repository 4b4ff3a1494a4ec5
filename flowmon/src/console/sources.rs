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
    api::{
        filters::Filter,
        reads::{self, ReadError, SensorStats},
    },
    flow::{
        query::{FlowPage, FlowQuery, FlowView, LiveFlowTable},
        record::FlowRecord,
    },
    snare::{LiveSessionTable, Session},
    store::Connection,
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

/// A sensor's stored sessions: how many, and Tanner's `/snare-stats` of the newest.
#[derive(Debug, PartialEq)]
pub struct StoredSensor {
    pub total_sessions: u64,
    /// Over the newest sessions, at most a bound (its `total_sessions` says how many).
    pub stats: SensorStats,
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
    fn sensor_stats<'a>(&'a self, sensor: &'a str) -> Answer<'a, Option<StoredSensor>>;
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

impl LiveFlows for LiveFlowTable {
    fn top(&self, query: FlowQuery) -> Answer<'_, FlowPage> {
        Box::pin(LiveFlowTable::top(self, query))
    }

    fn one(&self, key: FlowKey) -> Answer<'_, Option<FlowView>> {
        Box::pin(LiveFlowTable::one(self, key))
    }
}

impl LiveSessions for LiveSessionTable {
    fn recent(&self, filters: &[Filter], limit: usize) -> (Vec<Session>, usize) {
        LiveSessionTable::recent(
            self,
            |session| filters.iter().all(|filter| filter.matches(session)),
            limit,
        )
    }

    fn get(&self, sess_uuid: Uuid) -> Option<Session> {
        LiveSessionTable::get(self, &sess_uuid)
    }

    fn by_sensor(&self) -> BTreeMap<Option<String>, usize> {
        LiveSessionTable::by_sensor(self)
    }
}

/// Sessions read from Redis at a time, newest first.
const PAGE: isize = 500;
/// Sessions a sensor's stats are made of at most: the newest.
const STATS_READ: isize = 10_000;

/// What Redis holds, read as Tanner's read API reads it.
pub struct RedisStorage {
    connection: Connection,
}

impl RedisStorage {
    pub fn new(connection: Connection) -> Self {
        Self { connection }
    }

    /// The newest sessions of `sensor` that pass `filters`, at most `limit`, reading at most
    /// `budget`; how many were read, and whether all were searched or `limit` found.
    async fn search(
        &self,
        sensor: &str,
        filters: &[Filter],
        limit: usize,
        budget: u64,
    ) -> Result<(Vec<Value>, u64, bool)> {
        let mut connection = self.connection.clone();
        let (mut found, mut read) = (Vec::new(), 0);
        loop {
            let page = match reads::sensor_page(&mut connection, sensor, read as isize, PAGE).await
            {
                Ok(page) => page,
                Err(ReadError::UnknownSensor) => return Ok((found, read, true)),
                Err(ReadError::Redis(err)) => return Err(err.into()),
            };
            read += page.read;
            found.extend(
                page.sessions
                    .into_iter()
                    .filter(|session| filters.iter().all(|filter| filter.matches(session))),
            );
            if found.len() >= limit {
                found.truncate(limit);
                return Ok((found, read, true));
            }
            let end = (page.read as isize) < PAGE;
            if end || read >= budget {
                return Ok((found, read, end));
            }
        }
    }
}

impl Storage for RedisStorage {
    fn ping(&self) -> Answer<'_, ()> {
        let mut connection = self.connection.clone();
        Box::pin(async move {
            redis::cmd("PING")
                .query_async::<()>(&mut connection)
                .await?;
            Ok(())
        })
    }

    fn sensors(&self) -> Answer<'_, Vec<String>> {
        let mut connection = self.connection.clone();
        Box::pin(async move { Ok(reads::sensors(&mut connection).await?) })
    }

    fn sensor_stats<'a>(&'a self, sensor: &'a str) -> Answer<'a, Option<StoredSensor>> {
        let mut connection = self.connection.clone();
        Box::pin(async move {
            let newest = match reads::sensor_page(&mut connection, sensor, 0, STATS_READ).await {
                Ok(page) => page,
                Err(ReadError::UnknownSensor) => return Ok(None),
                Err(ReadError::Redis(err)) => return Err(err.into()),
            };
            Ok(Some(StoredSensor {
                total_sessions: newest.total,
                stats: SensorStats::of(&newest.sessions),
            }))
        })
    }

    fn sessions<'a>(
        &'a self,
        sensor: Option<&'a str>,
        filters: &'a [Filter],
        limit: usize,
        budget: u64,
    ) -> Answer<'a, StoredSessions> {
        Box::pin(async move {
            let sensors = match sensor {
                Some(sensor) => vec![sensor.to_owned()],
                None => reads::sensors(&mut self.connection.clone()).await?,
            };
            // Each sensor's newest matches, merged: the newest of all.
            let share = (budget / sensors.len().max(1) as u64).max(PAGE as u64);
            let mut all = StoredSessions {
                complete: true,
                ..StoredSessions::default()
            };
            for sensor in sensors {
                let (found, read, complete) = self.search(&sensor, filters, limit, share).await?;
                all.sessions.extend(found);
                all.read += read;
                all.complete &= complete;
            }
            let start = |session: &Value| session["start_time"].as_f64().unwrap_or(0.0);
            all.sessions.sort_by(|a, b| start(b).total_cmp(&start(a)));
            all.sessions.truncate(limit);
            Ok(all)
        })
    }

    fn session(&self, sess_uuid: Uuid) -> Answer<'_, Option<Value>> {
        let mut connection = self.connection.clone();
        Box::pin(async move {
            let sess_uuid = sess_uuid.simple().to_string();
            Ok(reads::session(&mut connection, &sess_uuid).await?)
        })
    }

    fn peer_records(&self, peer: IpAddr, from: f64, to: f64) -> Answer<'_, Vec<FlowRecord>> {
        let mut connection = self.connection.clone();
        Box::pin(async move {
            let records = reads::peer_flows(&mut connection, peer, from, to).await?;
            // Anything not a record (not written by a flowmon) is left out.
            Ok(records
                .into_iter()
                .filter_map(|record| serde_json::from_value(record).ok())
                .collect())
        })
    }
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

        fn sensor_stats<'a>(&'a self, sensor: &'a str) -> Answer<'a, Option<StoredSensor>> {
            let result = self.check().map(|()| {
                self.sensors.get(sensor).map(|sessions| StoredSensor {
                    total_sessions: sessions.len() as u64,
                    stats: SensorStats::of(sessions),
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
