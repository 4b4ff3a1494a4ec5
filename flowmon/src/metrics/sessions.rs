//! What the SNARE service and the session analyzer report. The counters are shared handles:
//! the service and the analyzer count into them, the registry reads them at each scrape.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::counters_of;
use crate::{
    analyzer::owners::PossibleOwners,
    emulation::Kind,
    snare::{AttackType, session::EndReason as SessionEndReason},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttackTypeLabel {
    attack_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EmulatorLabel {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionEndLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CutLabel {
    reason: &'static str,
}

/// Why the SNARE service closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionCut {
    /// A request took longer than `--snare-request-timeout`.
    RequestTimeout,
    /// The least recently active, closed at the cap for a new connection.
    Evicted,
}

impl ConnectionCut {
    pub const ALL: [ConnectionCut; 2] = [ConnectionCut::RequestTimeout, ConnectionCut::Evicted];

    pub const fn as_str(self) -> &'static str {
        match self {
            ConnectionCut::RequestTimeout => "request_timeout",
            ConnectionCut::Evicted => "evicted",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OwnerLabel {
    owner: &'static str,
}

/// The SNARE service's counts. Clones count into the same metrics.
#[derive(Clone)]
pub struct SnareMetrics {
    events: Counter,
    detections: Family<AttackTypeLabel, Counter>,
    /// `detections`' counters by attack type, in [`AttackType::ALL`]'s order (the declaration
    /// order): no label hashing per event.
    by_attack_type: Vec<Counter>,
    rejected: Counter,
    events_in_flight: Gauge,
    live_sessions: Gauge,
    sessions_ended: Family<SessionEndLabel, Counter>,
    /// `sessions_ended`' counters by reason, in [`SessionEndReason::ALL`]'s order.
    by_end_reason: Vec<Counter>,
    connections_cut: Family<CutLabel, Counter>,
    /// `connections_cut`' counters in [`ConnectionCut::ALL`]'s order.
    by_cut: Vec<Counter>,
    emulation_failures: Family<EmulatorLabel, Counter>,
    /// `emulation_failures`' counters by attack type, in [`Kind::ALL`]'s order.
    by_emulator: Vec<Counter>,
}

impl Default for SnareMetrics {
    fn default() -> Self {
        let detections = Family::default();
        let by_attack_type = counters_of(
            &detections,
            AttackType::ALL.map(|attack| AttackTypeLabel {
                attack_type: attack.name(),
            }),
        );
        let sessions_ended = Family::default();
        let by_end_reason = counters_of(
            &sessions_ended,
            SessionEndReason::ALL.map(|reason| SessionEndLabel {
                reason: reason.as_str(),
            }),
        );
        let connections_cut = Family::default();
        let by_cut = counters_of(
            &connections_cut,
            ConnectionCut::ALL.map(|cut| CutLabel {
                reason: cut.as_str(),
            }),
        );
        let emulation_failures = Family::default();
        let by_emulator = counters_of(
            &emulation_failures,
            Kind::ALL.map(|kind| EmulatorLabel {
                r#type: kind.name(),
            }),
        );
        Self {
            events: Counter::default(),
            detections,
            by_attack_type,
            rejected: Counter::default(),
            events_in_flight: Gauge::default(),
            live_sessions: Gauge::default(),
            sessions_ended,
            by_end_reason,
            connections_cut,
            by_cut,
            emulation_failures,
            by_emulator,
        }
    }
}

impl SnareMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register("snare_events", "SNARE events answered", self.events.clone());
        r.register(
            "snare_detections",
            "SNARE events by the attack type detected",
            self.detections.clone(),
        );
        r.register(
            "snare_rejected",
            "SNARE bodies that were no event (not JSON, not UTF-8)",
            self.rejected.clone(),
        );
        r.register(
            "snare_events_in_flight",
            "SNARE event requests being received or answered now",
            self.events_in_flight.clone(),
        );
        r.register(
            "snare_live_sessions",
            "SNARE sessions open",
            self.live_sessions.clone(),
        );
        r.register(
            "snare_sessions_ended",
            "SNARE sessions ended, by reason",
            self.sessions_ended.clone(),
        );
        r.register(
            "emulation_failures",
            "Attacks answered without an emulated result (type 1) because their emulator \
             failed or overran its time, steps or output, by attack type",
            self.emulation_failures.clone(),
        );
        r.register(
            "snare_connections_cut",
            "SNARE connections closed by flowmon: a request over the request timeout, or the \
             least recently active at the connection cap",
            self.connections_cut.clone(),
        );
    }

    pub fn event(&self, attack: AttackType) {
        self.events.inc();
        self.by_attack_type[attack as usize].inc();
    }

    pub fn emulation_failed(&self, kind: Kind) {
        self.by_emulator[kind as usize].inc();
    }

    pub fn rejected(&self) {
        self.rejected.inc();
    }

    /// Counts an event request from its head until the returned guard is dropped.
    pub fn event_in_flight(&self) -> InFlight<'_> {
        self.events_in_flight.inc();
        InFlight(&self.events_in_flight)
    }

    pub fn events_in_flight_count(&self) -> u64 {
        self.events_in_flight.get().max(0) as u64
    }

    pub fn connection_cut(&self, cut: ConnectionCut) {
        self.by_cut[cut as usize].inc();
    }

    pub fn live_sessions(&self, live: usize) {
        self.live_sessions.set(live as i64);
    }

    pub fn ended(&self, reason: SessionEndReason) {
        self.by_end_reason[reason as usize].inc();
    }

    pub fn events_count(&self) -> u64 {
        self.events.get()
    }

    pub fn rejected_count(&self) -> u64 {
        self.rejected.get()
    }

    pub fn detections_count(&self, attack: AttackType) -> u64 {
        self.by_attack_type[attack as usize].get()
    }

    pub fn live_sessions_count(&self) -> u64 {
        self.live_sessions.get().max(0) as u64
    }

    pub fn ended_count(&self, reason: SessionEndReason) -> u64 {
        self.by_end_reason[reason as usize].get()
    }
}

/// An event request counted in flight until dropped (also when its client goes away).
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The session analyzer's counts. Clones count into the same metrics.
#[derive(Clone, Default)]
pub struct AnalyzerMetrics {
    analysed: Family<OwnerLabel, Counter>,
    failures: Counter,
    unstored: Counter,
}

impl AnalyzerMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        counters_of(
            &self.analysed,
            PossibleOwners::NAMES.map(|owner| OwnerLabel { owner }),
        );
        r.register(
            "sessions_analysed",
            "Sessions analysed, by their likeliest owner",
            self.analysed.clone(),
        );
        r.register(
            "session_analysis_failures",
            "Session analyses that failed",
            self.failures.clone(),
        );
        r.register(
            "sessions_unstored",
            "Sessions analysed but not stored (their sensor id is no uuid)",
            self.unstored.clone(),
        );
    }

    pub fn analysed(&self, owners: &PossibleOwners) {
        self.analysed
            .get_or_create(&OwnerLabel {
                owner: owners.likeliest(),
            })
            .inc();
    }

    pub fn failed(&self) {
        self.failures.inc();
    }

    /// Sessions analysed whose likeliest owner is `owner` (one of [`PossibleOwners::NAMES`]).
    pub fn analysed_count(&self, owner: &'static str) -> u64 {
        self.analysed.get_or_create(&OwnerLabel { owner }).get()
    }

    pub fn unstored(&self) {
        self.unstored.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_follow_the_declaration_order() {
        for (index, attack) in AttackType::ALL.into_iter().enumerate() {
            assert_eq!(attack as usize, index);
        }
        for (index, reason) in SessionEndReason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, index);
        }
        for (index, kind) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, index);
        }
    }
}
