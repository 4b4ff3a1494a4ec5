//! Emulation's settings, validated: which emulators run, the host profile, the bounds, and
//! whether remote files named in RFI attacks are fetched.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Result, bail};

use super::{Kind, host::Profile};

/// `--emulate`: every emulator.
pub const DEFAULT_EMULATE: &str = "all";
/// Time one event's emulation may take (wall clock, which bounds its CPU time).
pub const DEFAULT_EVENT_TIME: Duration = Duration::from_millis(10);
/// The largest answer an emulator gives.
pub const DEFAULT_MAX_OUTPUT: usize = 64 * 1024;
/// What one session's emulation may hold: its files, its database copy, its evidence.
pub const DEFAULT_MAX_SESSION_STATE: usize = 1 << 20;
/// How long one fetch of a remote file may take (`--rfi-fetch`).
pub const DEFAULT_RFI_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest remote file fetched; a larger one is dropped, not cut.
pub const DEFAULT_RFI_MAX_BYTES: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq)]
pub struct EmulationConfig {
    /// The attack types answered with an emulated result; the others get type 1.
    pub enabled: BTreeSet<Kind>,
    pub profile: Profile,
    pub event_time: Duration,
    pub max_output: usize,
    pub max_session_state: usize,
    /// `None`: remote files are never fetched (the default).
    pub rfi_fetch: Option<RfiFetchConfig>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RfiFetchConfig {
    /// Where fetched files are kept, each once, named by its SHA-256.
    pub samples_dir: PathBuf,
    pub timeout: Duration,
    pub max_bytes: usize,
    /// Fetch from loopback, private and other non-public addresses too. Off but in tests: an
    /// attacker's URL must not reach the sensor's own network.
    pub allow_private: bool,
}

impl RfiFetchConfig {
    /// Fetching into `<state_dir>/samples`, with the default bounds.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            samples_dir: state_dir.join("samples"),
            timeout: DEFAULT_RFI_TIMEOUT,
            max_bytes: DEFAULT_RFI_MAX_BYTES,
            allow_private: false,
        }
    }
}

impl Default for EmulationConfig {
    fn default() -> Self {
        Self {
            enabled: Kind::ALL.into_iter().collect(),
            profile: Profile::default(),
            event_time: DEFAULT_EVENT_TIME,
            max_output: DEFAULT_MAX_OUTPUT,
            max_session_state: DEFAULT_MAX_SESSION_STATE,
            rfi_fetch: None,
        }
    }
}

impl EmulationConfig {
    /// Every emulator off: each detection gets type 1, as before emulation existed.
    pub fn none() -> Self {
        Self {
            enabled: BTreeSet::new(),
            ..Self::default()
        }
    }
}

/// `all`, `none`, or a comma-separated list of attack types.
pub fn parse_kinds(list: &str) -> Result<BTreeSet<Kind>> {
    match list.trim() {
        "all" => return Ok(Kind::ALL.into_iter().collect()),
        "none" | "" => return Ok(BTreeSet::new()),
        _ => {}
    }
    list.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| match Kind::from_name(name) {
            Some(kind) => Ok(kind),
            None => bail!(
                "{name:?} is no attack type; use all, none or some of {}",
                Kind::ALL.map(Kind::name).join(",")
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulate_takes_all_none_or_a_list() {
        assert_eq!(parse_kinds("all").unwrap().len(), 10);
        assert!(parse_kinds("none").unwrap().is_empty());
        assert_eq!(
            parse_kinds("sqli, lfi,sqli").unwrap(),
            BTreeSet::from([Kind::Sqli, Kind::Lfi])
        );
        let err = parse_kinds("sqli,sql").unwrap_err().to_string();
        assert!(
            err.contains("\"sql\"") && err.contains("template_injection"),
            "{err}"
        );
    }
}
