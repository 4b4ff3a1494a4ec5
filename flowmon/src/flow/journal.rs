//! The flow journal: what the agent has reported, kept on disk so that a restarted agent (also
//! after SIGKILL) continues every flow with the same `flow_id`, the next sequence number and
//! deltas from the last record it really made.
//!
//! Each poll appends its records *before* handing them to the sinks, then an `exported` mark.
//! Records after the last mark may not have reached the sinks: a restart hands them on again,
//! byte for byte the same, and the sinks de-duplicate on `record_id` (Redis) or see the same
//! line twice (a file). The journal is rewritten compactly at start-up and when it has grown.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{BufReader, BufWriter, Write as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use flowmon_common::FlowKey;
use serde::{Deserialize, Serialize};

use super::record::{FlowRecord, RecordType};

/// Rewrite the journal when it holds this many lines more than the live flows need.
const COMPACT_AFTER_LINES: u64 = 1_000_000;

/// A line of the journal; written with the record borrowed, read with it owned.
#[derive(Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "lowercase")]
enum Entry<R = Box<FlowRecord>> {
    Record {
        key: FlowKey,
        /// Monotonic time the record was made.
        made_ns: u64,
        record: R,
    },
    /// Everything above reached the sinks; `deleted` is the running count of flows the agent
    /// removed from the kernel map (for loss accounting), `polled_ns` the monotonic time of the
    /// poll that made them (interim records are due by the time between two polls).
    Exported {
        deleted: u64,
        #[serde(default)]
        polled_ns: u64,
    },
}

/// The last record of a flow that has not ended, as the journal remembers it.
#[derive(Clone, Debug, PartialEq)]
pub struct LastRecord {
    pub record: FlowRecord,
    pub made_ns: u64,
}

/// What a previous run left.
#[derive(Debug, Default)]
pub struct Recovered {
    pub flows: HashMap<FlowKey, LastRecord>,
    /// Records made but maybe not exported, with their flow and time: to hand to the sinks
    /// again.
    pub unexported: Vec<(FlowKey, u64, FlowRecord)>,
    pub deleted: u64,
    /// Monotonic time of the last poll whose records were exported (0: none).
    pub polled_ns: u64,
}

pub struct Journal {
    path: PathBuf,
    out: BufWriter<File>,
    lines: u64,
}

impl Journal {
    /// Opens the journal in `state_dir`, returning what the previous run left, and rewrites
    /// it compactly.
    pub fn open(state_dir: &Path) -> Result<(Self, Recovered)> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create {}", state_dir.display()))?;
        let path = state_dir.join("flow-journal.jsonl");
        let recovered = match File::open(&path) {
            Ok(file) => replay(BufReader::new(file))
                .with_context(|| format!("cannot read {}", path.display()))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Recovered::default(),
            Err(err) => return Err(err).with_context(|| format!("cannot open {}", path.display())),
        };
        let journal = Self::rewrite(&path, &recovered)?;
        Ok((journal, recovered))
    }

    /// Writes `state` afresh: the last record of every live flow, the export mark, then the
    /// records still waiting to be exported (so a crash before they are keeps them pending).
    fn rewrite(path: &Path, state: &Recovered) -> Result<Self> {
        let tmp = path.with_extension("jsonl.tmp");
        let mut out = BufWriter::new(
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
        );
        for (key, last) in &state.flows {
            write_entry(&mut out, &record_entry(*key, last.made_ns, &last.record))?;
        }
        write_entry::<&FlowRecord>(
            &mut out,
            &Entry::Exported {
                deleted: state.deleted,
                polled_ns: state.polled_ns,
            },
        )?;
        for (key, made_ns, record) in &state.unexported {
            write_entry(&mut out, &record_entry(*key, *made_ns, record))?;
        }
        out.into_inner()?.sync_all()?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Self {
            path: path.to_owned(),
            out: BufWriter::new(file),
            lines: (state.flows.len() + 1 + state.unexported.len()) as u64,
        })
    }

    /// Notes records about to be handed to the sinks.
    pub fn append(&mut self, records: &[(FlowKey, u64, FlowRecord)]) -> Result<()> {
        for (key, made_ns, record) in records {
            write_entry(&mut self.out, &record_entry(*key, *made_ns, record))?;
        }
        self.lines += records.len() as u64;
        self.out.flush().context("cannot write the flow journal")
    }

    /// Notes that everything appended so far, up to the poll at `polled_ns`, reached the sinks.
    pub fn exported(&mut self, deleted: u64, polled_ns: u64) -> Result<()> {
        write_entry::<&FlowRecord>(&mut self.out, &Entry::Exported { deleted, polled_ns })?;
        self.lines += 1;
        self.out.flush().context("cannot write the flow journal")
    }

    /// Whether the journal has grown well past what `live` flows need.
    pub fn needs_compaction(&self, live: usize) -> bool {
        self.lines > live as u64 + COMPACT_AFTER_LINES
    }

    /// Rewrites the journal with only the last records of the `live` flows.
    pub fn compact(
        &mut self,
        live: HashMap<FlowKey, LastRecord>,
        deleted: u64,
        polled_ns: u64,
    ) -> Result<()> {
        let state = Recovered {
            flows: live,
            unexported: Vec::new(),
            deleted,
            polled_ns,
        };
        *self = Self::rewrite(&self.path, &state)?;
        Ok(())
    }
}

fn record_entry(key: FlowKey, made_ns: u64, record: &FlowRecord) -> Entry<&FlowRecord> {
    Entry::Record {
        key,
        made_ns,
        record,
    }
}

fn write_entry<R: Serialize>(out: &mut impl std::io::Write, entry: &Entry<R>) -> Result<()> {
    serde_json::to_writer(&mut *out, entry)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Reads a journal: the last record of each flow not yet ended, and the records after the last
/// export mark. A torn last line (a crash mid-write) is ignored.
fn replay(reader: impl std::io::BufRead) -> Result<Recovered> {
    let mut recovered = Recovered::default();
    for line in reader.lines() {
        let line = line?;
        let Ok(entry) = serde_json::from_str::<Entry>(&line) else {
            tracing::warn!("ignoring a torn line at the end of the flow journal");
            continue;
        };
        match entry {
            Entry::Record {
                key,
                made_ns,
                record,
            } => {
                if record.record_type == RecordType::Final {
                    recovered.flows.remove(&key);
                } else {
                    recovered.flows.insert(
                        key,
                        LastRecord {
                            record: (*record).clone(),
                            made_ns,
                        },
                    );
                }
                recovered.unexported.push((key, made_ns, *record));
            }
            Entry::Exported { deleted, polled_ns } => {
                recovered.unexported.clear();
                recovered.deleted = deleted;
                recovered.polled_ns = polled_ns;
            }
        }
    }
    Ok(recovered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::record::sample::record;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            port_lo: port,
            ..FlowKey::default()
        }
    }

    #[test]
    fn a_restart_continues_live_flows_and_resends_what_was_not_exported() {
        let dir = std::env::temp_dir().join(format!("flowmon-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let (mut journal, recovered) = Journal::open(&dir).unwrap();
            assert!(recovered.flows.is_empty() && recovered.unexported.is_empty());
            journal
                .append(&[
                    (key(1), 10, record("a", 0, RecordType::Interim)),
                    (key(2), 10, record("b", 0, RecordType::Interim)),
                ])
                .unwrap();
            journal.exported(3, 15).unwrap();
            journal
                .append(&[
                    (key(1), 20, record("a", 1, RecordType::Interim)),
                    (key(2), 20, record("b", 1, RecordType::Final)),
                ])
                .unwrap();
            // Killed here: the second batch may not have reached the sinks.
        }
        for _ in 0..2 {
            // Twice: a restart that dies before exporting keeps the same pending records.
            let (_journal, recovered) = Journal::open(&dir).unwrap();
            assert_eq!((recovered.deleted, recovered.polled_ns), (3, 15));
            assert_eq!(recovered.flows.len(), 1);
            assert_eq!(recovered.flows[&key(1)].record.sequence, 1);
            assert_eq!(recovered.flows[&key(1)].made_ns, 20);
            let pending: Vec<&str> = recovered
                .unexported
                .iter()
                .map(|(_, _, r)| r.record_id.as_str())
                .collect();
            assert_eq!(pending, ["a:1", "b:1"]);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
