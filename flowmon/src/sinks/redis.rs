//! Flow records into Redis, through the [`Store`]. Each record becomes one [`Write`]:
//!
//! - an entry of the stream [`FLOW_STREAM`] (approximate MAXLEN `--flow-stream-maxlen`), added
//!   once per `record_id`, with the fields `record` (the record's JSON, as in the flow log),
//!   `flow_id` and `record_type` (`interim` or `final`), which consumers can filter on without
//!   parsing the record;
//! - the record's JSON in the [`peer_index`] of its client and of its server address: a sorted
//!   set scored by `last_seen`, trimmed to `--peer-index-retention` and expiring after it.
//!
//! The whole layout is documented in `docs/redis-schema.md`.

use std::time::Duration;

use crate::{
    flow::record::FlowRecord,
    store::{Op, Store, Write},
};

/// About as many records as the stream keeps.
pub const DEFAULT_FLOW_STREAM_MAXLEN: u64 = 1_000_000;
/// How long a peer's index lives after its last record.
pub const DEFAULT_PEER_INDEX_RETENTION: Duration = Duration::from_secs(86_400);

/// The stream of every flow record.
pub const FLOW_STREAM: &str = "flowmon:flows";

/// The sorted set of the records of `ip`'s flows, client or server side.
pub fn peer_index(ip: &str) -> String {
    format!("flowmon:peer:{ip}")
}

/// Hands flow records to the store.
pub struct RedisFlowSink {
    store: Store,
    writes: FlowWrites,
}

impl RedisFlowSink {
    pub fn new(store: Store, writes: FlowWrites) -> Self {
        Self { store, writes }
    }

    /// Submits `records`; never blocks.
    pub fn write_all<'a>(&self, records: impl IntoIterator<Item = &'a FlowRecord>) {
        for record in records {
            self.store.submit(self.writes.write(record));
        }
    }
}

/// Makes the [`Write`] of a flow record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowWrites {
    /// The stream's approximate MAXLEN (`--flow-stream-maxlen`).
    pub maxlen: u64,
    /// How long a peer index keeps records (`--peer-index-retention`).
    pub retention: Duration,
}

impl Default for FlowWrites {
    fn default() -> Self {
        Self {
            maxlen: DEFAULT_FLOW_STREAM_MAXLEN,
            retention: DEFAULT_PEER_INDEX_RETENTION,
        }
    }
}

impl FlowWrites {
    pub fn write(&self, record: &FlowRecord) -> Write {
        let json = serde_json::to_string(record).expect("a flow record serialises");
        let retention_secs = self.retention.as_secs_f64().ceil() as u64;
        let mut ops = vec![Op::XAddOnce {
            stream: FLOW_STREAM.to_owned(),
            dedupe_key: record.record_id.clone(),
            // A record applied again later than this (an outage or a stopped flowmon longer
            // than the retention) could be added twice; it is of no more use to the analyzer.
            dedupe_secs: retention_secs,
            maxlen: self.maxlen,
            fields: vec![
                ("record".to_owned(), json.clone()),
                ("flow_id".to_owned(), record.flow_id.to_string()),
                (
                    "record_type".to_owned(),
                    record.record_type.as_str().to_owned(),
                ),
            ],
        }];
        let mut peers = vec![record.client_ip, record.server_ip];
        peers.dedup();
        for ip in peers {
            let key = peer_index(&ip.to_string());
            ops.extend([
                Op::ZAdd {
                    key: key.clone(),
                    score: record.last_seen,
                    member: json.clone(),
                },
                Op::ZRemRangeByScore {
                    key: key.clone(),
                    below: record.time - self.retention.as_secs_f64(),
                },
                Op::Expire {
                    key,
                    secs: retention_secs,
                },
            ]);
        }
        Write {
            id: record.record_id.clone(),
            ops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::record::{RecordType, sample};

    fn record(client_ip: &str, server_ip: &str) -> FlowRecord {
        FlowRecord {
            record_id: "f1:2".into(),
            client_ip: client_ip.parse().unwrap(),
            server_ip: server_ip.parse().unwrap(),
            last_seen: 1700000090.25,
            time: 1700000100.5,
            ..sample::record("f1", 2, RecordType::Final)
        }
    }

    const WRITES: FlowWrites = FlowWrites {
        maxlen: 1000,
        retention: Duration::from_millis(3_600_500),
    };

    #[test]
    fn a_record_is_one_stream_entry_and_an_index_entry_per_peer() {
        let record = record("192.0.2.1", "2001:db8::1");
        let json = serde_json::to_string(&record).unwrap();
        let index = |key: &str| {
            [
                Op::ZAdd {
                    key: key.into(),
                    score: 1700000090.25,
                    member: json.clone(),
                },
                Op::ZRemRangeByScore {
                    key: key.into(),
                    below: 1700000100.5 - 3600.5,
                },
                Op::Expire {
                    key: key.into(),
                    secs: 3601,
                },
            ]
        };
        let mut ops = vec![Op::XAddOnce {
            stream: "flowmon:flows".into(),
            dedupe_key: "f1:2".into(),
            dedupe_secs: 3601,
            maxlen: 1000,
            fields: vec![
                ("record".into(), json.clone()),
                ("flow_id".into(), "f1".into()),
                ("record_type".into(), "final".into()),
            ],
        }];
        ops.extend(index("flowmon:peer:192.0.2.1"));
        ops.extend(index("flowmon:peer:2001:db8::1"));
        assert_eq!(
            WRITES.write(&record),
            Write {
                id: "f1:2".into(),
                ops
            }
        );
    }

    #[test]
    fn a_flow_between_one_address_is_indexed_once() {
        let write = WRITES.write(&record("127.0.0.1", "127.0.0.1"));
        let zadds = write
            .ops
            .iter()
            .filter(|op| matches!(op, Op::ZAdd { .. }))
            .count();
        assert_eq!(zadds, 1);
    }
}
