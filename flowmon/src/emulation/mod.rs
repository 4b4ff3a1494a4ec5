//! Attack emulation (`docs/emulation.md`): every detected attack gets an answer that looks as
//! if it worked, computed by simulation; nothing of the attacker's input is ever executed, no
//! process is started and nothing is fetched (but remote files named by an RFI attack, when
//! the operator enables `--rfi-fetch`).
//!
//! - [`host`]: the simulated host of each sensor, made from a profile and a seed; [`fs`] its
//!   files under each session's overlay.
//! - One module per emulator: [`lfi`], [`sqli`], [`xss`], [`shell`] (for `cmd_exec`),
//!   [`php`] (`php_code_injection`), [`php_object`] (`php_object_injection`), [`template`],
//!   [`xxe`], [`crlf`], [`rfi`].
//! - [`state`]: what a session keeps between its requests (its writes, its database copy, the
//!   evidence of what it tried).
//! - [`budget`]: the bounds of one event: a deadline, interpreter fuel, an output cap.
//!
//! This module knows nothing of HTTP, SNARE or Redis: it takes an [`Attack`] (the attack type,
//! the parameters that triggered it, the script they were sent to) and gives an [`Answer`].

mod budget;
mod config;
mod crlf;
mod fs;
pub mod host;
mod lfi;
mod php;
mod php_object;
mod phpinfo;
mod rfi;
mod shell;
mod sqli;
mod state;
mod template;
mod xss;
mod xxe;

use std::{
    collections::HashMap,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::Duration,
};

use anyhow::Result;
use serde::{Deserialize, Serialize};

pub use budget::Overrun;
pub use config::{
    DEFAULT_EMULATE, DEFAULT_EVENT_TIME, DEFAULT_MAX_OUTPUT, DEFAULT_MAX_SESSION_STATE,
    DEFAULT_RFI_MAX_BYTES, DEFAULT_RFI_TIMEOUT, EmulationConfig, RfiFetchConfig, parse_kinds,
};
pub use host::Profile;
pub use state::{Evidence, Exchange, MAX_EVIDENCE_BYTES, Sample, SessionState};

use budget::Budget;
use fs::Files;
use host::Host;

/// The attack types that have an emulator, named as SNARE and Tanner name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Sqli,
    Rfi,
    Lfi,
    Xss,
    PhpCodeInjection,
    PhpObjectInjection,
    CmdExec,
    Crlf,
    XxeInjection,
    TemplateInjection,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Sqli,
        Kind::Rfi,
        Kind::Lfi,
        Kind::Xss,
        Kind::PhpCodeInjection,
        Kind::PhpObjectInjection,
        Kind::CmdExec,
        Kind::Crlf,
        Kind::XxeInjection,
        Kind::TemplateInjection,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Kind::Sqli => "sqli",
            Kind::Rfi => "rfi",
            Kind::Lfi => "lfi",
            Kind::Xss => "xss",
            Kind::PhpCodeInjection => "php_code_injection",
            Kind::PhpObjectInjection => "php_object_injection",
            Kind::CmdExec => "cmd_exec",
            Kind::Crlf => "crlf",
            Kind::XxeInjection => "xxe_injection",
            Kind::TemplateInjection => "template_injection",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// A request parameter (query, form field or cookie) as the vulnerable script receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: String,
}

/// One attack to answer.
#[derive(Clone, Copy, Debug)]
pub struct Attack<'a> {
    pub kind: Kind,
    /// The parameters whose values triggered the detection, in request order: emulators use
    /// the first, `xss` all of them.
    pub params: &'a [Param],
    /// The request's path (no query): the script the parameters were sent to.
    pub path: &'a str,
    /// The sensor: whose simulated host answers.
    pub sensor: &'a str,
    /// Epoch seconds of the request.
    pub now: f64,
}

/// What the attacker is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `value` in the site's latest page (`page`) or alone as text, with `headers` added
    /// (`None` but for the crlf answer, which always has them, even none).
    Content {
        value: String,
        page: bool,
        headers: Option<Vec<(String, String)>>,
    },
    /// Only this HTTP status.
    Status(u16),
}

impl Answer {
    fn text(value: String, page: bool) -> Self {
        Answer::Content {
            value,
            page,
            headers: None,
        }
    }
}

/// An answer and how long to hold it back (a `sleep` the attacker ran, so that timing probes
/// see their delay; the wait costs no thread).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emulated {
    pub answer: Answer,
    pub delay: Duration,
}

/// Why an emulator gave no answer; the caller answers type 1 and counts it.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Overrun(#[from] Overrun),
    #[error("{0}")]
    Internal(String),
}

/// Sensors whose hosts are kept made; beyond, the map starts afresh (a sender can name any
/// number of sensors).
const MAX_HOSTS: usize = 1024;
/// Interpreter steps one event may take.
const FUEL: u64 = 200_000;
/// The longest `sleep` honoured per event, as a delay of the answer (never of a thread).
pub const MAX_SLEEP: Duration = Duration::from_secs(5);

/// A sensor's simulated host, with what is derived from it when first needed.
pub(crate) struct Simulation {
    pub host: Host,
    database: OnceLock<Result<sqli::Template, String>>,
    phpinfo: OnceLock<String>,
}

impl Simulation {
    fn new(host: Host) -> Self {
        Self {
            host,
            database: OnceLock::new(),
            phpinfo: OnceLock::new(),
        }
    }

    /// The page `phpinfo()` prints, made once.
    pub fn phpinfo(&self, script: &str) -> String {
        self.phpinfo
            .get_or_init(|| phpinfo::page(&self.host))
            .replace(phpinfo::SCRIPT_PLACEHOLDER, script)
    }

    fn database(&self) -> Result<&sqli::Template, Failure> {
        self.database
            .get_or_init(|| sqli::Template::build(&self.host).map_err(|err| format!("{err:#}")))
            .as_ref()
            .map_err(|err| Failure::Internal(err.clone()))
    }
}

/// What an emulator works with: the host, the session's files and evidence, the bounds.
pub(crate) struct Machine<'a> {
    pub sim: &'a Simulation,
    pub files: Files<'a>,
    pub evidence: &'a mut Evidence,
    pub budget: Budget,
    pub now: f64,
    /// The script the request ran, e.g. `/var/www/html/index.php`.
    pub script: String,
    pub max_output: usize,
    /// Interpreters nested in each other (PHP calling the shell calling PHP...).
    pub depth: u32,
    pub delay: Duration,
}

/// The emulators of every sensor.
pub struct Emulation {
    config: EmulationConfig,
    simulations: Mutex<HashMap<String, Arc<Simulation>>>,
    fetcher: Option<rfi::Fetcher>,
}

impl Emulation {
    pub fn new(config: EmulationConfig) -> Result<Self> {
        let fetcher = config
            .rfi_fetch
            .as_ref()
            .map(rfi::Fetcher::new)
            .transpose()?;
        Ok(Self {
            config,
            simulations: Mutex::new(HashMap::new()),
            fetcher,
        })
    }

    pub fn enabled(&self, kind: Kind) -> bool {
        self.config.enabled.contains(&kind)
    }

    pub fn config(&self) -> &EmulationConfig {
        &self.config
    }

    /// The answer to `attack`, in the session whose emulation state is `state`.
    pub async fn emulate(
        &self,
        attack: &Attack<'_>,
        state: &Mutex<SessionState>,
    ) -> Result<Emulated, Failure> {
        let simulation = self.simulation(attack.sensor);
        let first = attack.params.first().map_or("", |p| p.value.as_str());
        let fetched = match (attack.kind, &self.fetcher) {
            (Kind::Rfi, Some(fetcher)) => match rfi::url_in(first) {
                Some(url) => Some(fetcher.fetch(&url).await),
                None => None,
            },
            _ => None,
        };
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        // A fault in an emulator costs this one answer, never the request.
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.run(&simulation, attack, &mut state, fetched)
        }))
        .unwrap_or_else(|_| Err(Failure::Internal("the emulator panicked".into())))
    }

    fn run(
        &self,
        simulation: &Simulation,
        attack: &Attack<'_>,
        state: &mut SessionState,
        fetched: Option<rfi::Fetched>,
    ) -> Result<Emulated, Failure> {
        let host = &simulation.host;
        if attack.kind == Kind::Sqli {
            // The sensor's database is made at its first SQL injection, before the event's
            // deadline starts: making it is no part of answering.
            simulation.database()?;
        }
        let SessionState {
            overlay,
            database,
            evidence,
        } = state;
        let max_state = self.config.max_session_state;
        // The evidence may grow to its cap: its room is kept for it.
        let held = database.as_ref().map_or(0, sqli::SessionDatabase::bytes) + MAX_EVIDENCE_BYTES;
        let files = Files::new(
            &host.files,
            overlay,
            &host.user,
            attack.now,
            max_state.saturating_sub(held),
        );
        let mut machine = Machine {
            sim: simulation,
            files,
            evidence,
            budget: Budget::new(self.config.event_time, FUEL),
            now: attack.now,
            script: host.script_path(attack.path),
            max_output: self.config.max_output,
            depth: 0,
            delay: Duration::ZERO,
        };
        let Some(param) = attack.params.first() else {
            return Err(Failure::Internal(
                "no parameter triggered the attack".into(),
            ));
        };
        let value = param.value.as_str();
        let answer = match attack.kind {
            Kind::Lfi => lfi::emulate(&mut machine, value)?,
            Kind::Sqli => {
                let room =
                    max_state.saturating_sub(machine.files.overlay_bytes() + MAX_EVIDENCE_BYTES);
                sqli::emulate(&mut machine, database, param, room)?
            }
            Kind::Xss => xss::emulate(&mut machine, attack.params)?,
            Kind::CmdExec => {
                let outcome = shell::run(&mut machine, value)?;
                machine.evidence.command(value, &outcome.output);
                Answer::text(outcome.output, true)
            }
            Kind::PhpCodeInjection => php::emulate(&mut machine, value)?,
            Kind::PhpObjectInjection => php_object::emulate(&mut machine, value)?,
            Kind::Crlf => crlf::emulate(param),
            Kind::XxeInjection => xxe::emulate(&mut machine, value)?,
            Kind::TemplateInjection => template::emulate(&mut machine, value)?,
            Kind::Rfi => rfi::emulate(&mut machine, value, fetched)?,
        };
        let answer = match answer {
            Answer::Content {
                value,
                page,
                headers,
            } => Answer::Content {
                value: budget::cut(value, self.config.max_output),
                page,
                headers,
            },
            status => status,
        };
        Ok(Emulated {
            answer,
            delay: machine.delay,
        })
    }

    fn simulation(&self, sensor: &str) -> Arc<Simulation> {
        let mut simulations = self
            .simulations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(simulation) = simulations.get(sensor) {
            return simulation.clone();
        }
        if simulations.len() >= MAX_HOSTS {
            simulations.clear();
        }
        let simulation = Arc::new(Simulation::new(Host::new(&self.config.profile, sensor)));
        simulations.insert(sensor.to_owned(), simulation.clone());
        simulation
    }
}

/// `x op y` for `+`, `-` and `*` on integers: the integer, or the float it overflows into, as
/// PHP makes it (Python's integers do not overflow, but 64 bits are more than probes need);
/// `None` for another operator.
pub(crate) fn integer_arithmetic(op: &str, x: i64, y: i64) -> Option<Result<i64, f64>> {
    let (exact, float) = match op {
        "+" => (x.checked_add(y), x as f64 + y as f64),
        "-" => (x.checked_sub(y), x as f64 - y as f64),
        "*" => (x.checked_mul(y), x as f64 * y as f64),
        _ => return None,
    };
    Some(exact.ok_or(float))
}

/// Hex digest of `data` with the named algorithm (`md5`, `sha1`, `sha256`).
pub(crate) fn hex_digest(algorithm: &str, data: &[u8]) -> String {
    use sha2::Digest as _;
    let bytes: Vec<u8> = match algorithm {
        "md5" => md5::Md5::digest(data).to_vec(),
        "sha1" => sha1::Sha1::digest(data).to_vec(),
        _ => sha2::Sha256::digest(data).to_vec(),
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `f` with a machine on a fresh session of a default host, as the interpreters' tests
/// need one.
#[cfg(test)]
fn with_machine<T>(f: impl FnOnce(&mut Machine<'_>) -> T) -> T {
    let simulation = Simulation::new(Host::new(&Profile::default(), "test-sensor"));
    let mut state = SessionState::default();
    let files = Files::new(
        &simulation.host.files,
        &mut state.overlay,
        &simulation.host.user,
        1_714_564_800.0,
        DEFAULT_MAX_SESSION_STATE,
    );
    let mut machine = Machine {
        sim: &simulation,
        files,
        evidence: &mut state.evidence,
        budget: Budget::new(Duration::from_secs(5), FUEL),
        now: 1_714_564_800.0,
        script: "/var/www/html/index.php".into(),
        max_output: DEFAULT_MAX_OUTPUT,
        depth: 0,
        delay: Duration::ZERO,
    };
    f(&mut machine)
}

#[cfg(test)]
mod tests;
