//! What one session's emulation keeps between its requests: the files it wrote, its own copy of
//! the database once it changed it, and the evidence of what it tried. Another session never
//! sees any of it.

use serde::{Deserialize, Serialize};

use super::{budget::cut, fs::Overlay, sqli::SessionDatabase};

/// Evidence kept per session at most; what comes later is counted in `omitted`.
pub const MAX_EVIDENCE_BYTES: usize = 64 * 1024;
/// An input kept in the evidence at most (a command, a query, code).
const MAX_INPUT: usize = 2048;
/// An answer kept in the evidence at most.
const MAX_OUTPUT: usize = 1024;
/// Bookkeeping counted per evidence entry beyond its text.
const ENTRY_OVERHEAD: usize = 32;

/// An input and what the simulation answered to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    pub input: String,
    pub output: String,
}

/// A file fetched for a remote file inclusion (`--rfi-fetch`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub url: String,
    pub sha256: String,
    pub bytes: u64,
}

/// What a session's attacker tried, stored with its analysis under `emulation`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Evidence {
    /// Shell commands, with what they printed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<Exchange>,
    /// PHP and template code, with what it printed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub code: Vec<Exchange>,
    /// SQL run, with the rows or the error it gave.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sql: Vec<Exchange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files_read: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files_written: Vec<String>,
    /// URLs the attacker named: included, downloaded, entities, callbacks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<Sample>,
    /// Entries left out once the evidence reached its cap.
    #[serde(skip_serializing_if = "is_zero")]
    pub omitted: u64,
    #[serde(skip)]
    bytes: usize,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Evidence {
    pub fn is_empty(&self) -> bool {
        self == &Evidence::default()
    }

    /// Approximate memory held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn command(&mut self, input: &str, output: &str) {
        let entry = exchange(input, output);
        if self.room_for(entry.input.len() + entry.output.len()) {
            self.commands.push(entry);
        }
    }

    pub fn code(&mut self, input: &str, output: &str) {
        let entry = exchange(input, output);
        if self.room_for(entry.input.len() + entry.output.len()) {
            self.code.push(entry);
        }
    }

    pub fn sql(&mut self, input: &str, output: &str) {
        let entry = exchange(input, output);
        if self.room_for(entry.input.len() + entry.output.len()) {
            self.sql.push(entry);
        }
    }

    pub fn file_read(&mut self, path: &str) {
        if !self.files_read.iter().any(|p| p == path) && self.room_for(path.len()) {
            self.files_read.push(cut(path.to_owned(), MAX_INPUT));
        }
    }

    pub fn file_written(&mut self, path: &str) {
        if !self.files_written.iter().any(|p| p == path) && self.room_for(path.len()) {
            self.files_written.push(cut(path.to_owned(), MAX_INPUT));
        }
    }

    pub fn url(&mut self, url: &str) {
        let url = cut(url.to_owned(), MAX_INPUT);
        if !self.urls.contains(&url) && self.room_for(url.len()) {
            self.urls.push(url);
        }
    }

    pub fn sample(&mut self, sample: Sample) {
        if !self.samples.contains(&sample) && self.room_for(sample.url.len() + 80) {
            self.samples.push(sample);
        }
    }

    /// Takes `text` bytes of room, or counts the entry as omitted.
    fn room_for(&mut self, text: usize) -> bool {
        let cost = ENTRY_OVERHEAD + text.min(MAX_INPUT + MAX_OUTPUT);
        if self.bytes + cost > MAX_EVIDENCE_BYTES {
            self.omitted += 1;
            return false;
        }
        self.bytes += cost;
        true
    }
}

fn exchange(input: &str, output: &str) -> Exchange {
    Exchange {
        input: cut(input.to_owned(), MAX_INPUT),
        output: cut(output.to_owned(), MAX_OUTPUT),
    }
}

/// One session's emulation state.
#[derive(Debug, Default)]
pub struct SessionState {
    pub(super) overlay: Overlay,
    /// The session's own copy of the database, made at its first write.
    pub(super) database: Option<SessionDatabase>,
    pub(super) evidence: Evidence,
}

impl SessionState {
    /// Approximate memory held: what counts against the per-session cap.
    pub fn bytes(&self) -> usize {
        self.overlay.bytes()
            + self.database.as_ref().map_or(0, SessionDatabase::bytes)
            + self.evidence.bytes()
    }

    pub fn evidence(&self) -> &Evidence {
        &self.evidence
    }

    /// The evidence, leaving none behind.
    pub fn take_evidence(&mut self) -> Evidence {
        std::mem::take(&mut self.evidence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_is_capped_and_counts_what_it_left_out() {
        let mut evidence = Evidence::default();
        assert!(evidence.is_empty());
        evidence.command("id", "uid=33(www-data)");
        evidence.file_read("/etc/passwd");
        evidence.file_read("/etc/passwd");
        evidence.url("http://203.0.113.9/x.sh");
        assert_eq!(
            serde_json::to_value(&evidence).unwrap(),
            serde_json::json!({
                "commands": [{"input": "id", "output": "uid=33(www-data)"}],
                "files_read": ["/etc/passwd"],
                "urls": ["http://203.0.113.9/x.sh"],
            })
        );
        let long = "x".repeat(10_000);
        for _ in 0..100 {
            evidence.command(&long, &long);
        }
        assert!(evidence.bytes() <= MAX_EVIDENCE_BYTES);
        assert!(evidence.omitted > 0);
        assert!(evidence.commands.iter().all(|c| c.input.len() <= MAX_INPUT));
        assert_eq!(
            evidence.commands.len() as u64 + evidence.omitted,
            101,
            "every command kept or counted"
        );
        let round_trip: Evidence =
            serde_json::from_value(serde_json::to_value(&evidence).unwrap()).unwrap();
        assert_eq!(round_trip.commands, evidence.commands);
    }
}
