//! The overview's figures: the agent's counters read every second, their rates over the last
//! second for the live figures, and an hour of ten-second points for the charts, in a ring.
//! A read is a few dozen atomic loads, so the sampler runs whether or not anyone looks.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use serde::Serialize;

use crate::{analyzer::owners::PossibleOwners, metrics::Metrics, snare::AttackType, store::Store};

/// How often the counters are read.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Seconds one chart point covers...
pub const POINT_SECONDS: u64 = 10;
/// ...and points kept: an hour.
pub const POINTS: usize = 360;

const ATTACK_TYPES: usize = AttackType::ALL.len();
const OWNERS: usize = PossibleOwners::NAMES.len();

/// Counters: they only grow (but for a restart of their source, counted from zero again).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
    pub flows_created: u64,
    pub flows_evicted: u64,
    pub events: u64,
    /// Events by [`AttackType::ALL`]'s order.
    pub detections: [u64; ATTACK_TYPES],
    /// Analysed sessions by likeliest owner, in [`PossibleOwners::NAMES`]' order.
    pub analysed: [u64; OWNERS],
}

/// Values of the moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Gauges {
    pub flows_live: u64,
    pub map_utilisation: f64,
    pub live_sessions: u64,
    /// `None`: no Redis store.
    pub spool_writes: Option<u64>,
    pub spool_bytes: Option<u64>,
    pub redis_errors: Option<u64>,
    pub writes_dropped: Option<u64>,
}

/// The live figures: rates over the last sample interval, totals and gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Epoch seconds of the read.
    pub time: f64,
    pub packets_per_s: f64,
    pub bytes_per_s: f64,
    pub flows_created_per_s: f64,
    pub events_per_s: f64,
    pub flows_evicted: u64,
    pub events: u64,
    #[serde(flatten)]
    pub gauges: Gauges,
}

/// One chart point: what happened in its ten seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Point {
    /// Epoch seconds of the point's end.
    pub time: f64,
    pub packets_per_s: f64,
    pub bytes_per_s: f64,
    pub flows_created_per_s: f64,
    pub flows_live: u64,
    pub live_sessions: u64,
    /// Events in the point by attack type, in [`AttackType::ALL`]'s order.
    pub detections: [u64; ATTACK_TYPES],
    /// Sessions analysed in the point by likeliest owner.
    pub analysed: [u64; OWNERS],
}

/// The ring of points and the live figures.
#[derive(Debug, Default)]
pub struct History {
    points: VecDeque<Point>,
    /// Number of points ever made: the newest has number `made - 1`.
    made: u64,
    figures: Figures,
    /// The previous read, and the read that began the point being made.
    last: Option<(f64, Totals)>,
    point_start: Option<(f64, Totals)>,
}

/// What a client asks for: the points after those it has (`since`, a point count), and the
/// figures.
#[derive(Debug, Serialize)]
pub struct Update {
    /// Points made so far; the client's next `since`.
    pub made: u64,
    pub figures: Figures,
    /// The points it lacks, oldest first (at most an hour's).
    pub points: Vec<Point>,
}

/// `new - old`, or `new` when the counter started again from zero.
fn increase(new: u64, old: u64) -> u64 {
    new.checked_sub(old).unwrap_or(new)
}

fn increases<const N: usize>(new: &[u64; N], old: &[u64; N]) -> [u64; N] {
    std::array::from_fn(|i| increase(new[i], old[i]))
}

impl History {
    /// Notes a read of the counters at `time` (epoch seconds).
    pub fn observe(&mut self, time: f64, totals: Totals, gauges: Gauges) {
        let rate = |new: u64, old: u64, seconds: f64| {
            if seconds > 0.0 {
                increase(new, old) as f64 / seconds
            } else {
                0.0
            }
        };
        let mut figures = Figures {
            time,
            flows_evicted: totals.flows_evicted,
            events: totals.events,
            gauges,
            ..Figures::default()
        };
        if let Some((then, last)) = self.last {
            let seconds = time - then;
            figures.packets_per_s = rate(totals.packets, last.packets, seconds);
            figures.bytes_per_s = rate(totals.bytes, last.bytes, seconds);
            figures.flows_created_per_s = rate(totals.flows_created, last.flows_created, seconds);
            figures.events_per_s = rate(totals.events, last.events, seconds);
        }
        self.figures = figures;
        self.last = Some((time, totals));
        let Some((start, first)) = self.point_start else {
            self.point_start = Some((time, totals));
            return;
        };
        let seconds = time - start;
        if seconds + 0.5 < POINT_SECONDS as f64 {
            return;
        }
        self.push(Point {
            time,
            packets_per_s: rate(totals.packets, first.packets, seconds),
            bytes_per_s: rate(totals.bytes, first.bytes, seconds),
            flows_created_per_s: rate(totals.flows_created, first.flows_created, seconds),
            flows_live: gauges.flows_live,
            live_sessions: gauges.live_sessions,
            detections: increases(&totals.detections, &first.detections),
            analysed: increases(&totals.analysed, &first.analysed),
        });
        self.point_start = Some((time, totals));
    }

    fn push(&mut self, point: Point) {
        if self.points.len() == POINTS {
            self.points.pop_front();
        }
        self.points.push_back(point);
        self.made += 1;
    }

    /// The figures, and the points made after the first `since`.
    pub fn update(&self, since: u64) -> Update {
        let missing = self
            .made
            .saturating_sub(since)
            .min(self.points.len() as u64) as usize;
        Update {
            made: self.made,
            figures: self.figures,
            points: self
                .points
                .iter()
                .skip(self.points.len() - missing)
                .copied()
                .collect(),
        }
    }

    pub fn figures(&self) -> Figures {
        self.figures
    }
}

/// Where the counters are read from.
pub struct Counters {
    pub metrics: Arc<Metrics>,
    pub store: Option<Store>,
}

impl Counters {
    pub fn read(&self) -> (Totals, Gauges) {
        let flows = &self.metrics.flows;
        let snare = &self.metrics.snare;
        let analyzer = &self.metrics.analyzer;
        let totals = Totals {
            packets: flows.packets.get(),
            bytes: flows.bytes.get(),
            flows_created: flows.flows_created.get(),
            flows_evicted: flows.flows_evicted.get(),
            events: snare.events_count(),
            detections: AttackType::ALL.map(|attack| snare.detections_count(attack)),
            analysed: PossibleOwners::NAMES.map(|owner| analyzer.analysed_count(owner)),
        };
        let store = self.store.as_ref().map(Store::stats);
        let gauges = Gauges {
            flows_live: flows.flows_live.get().max(0) as u64,
            map_utilisation: flows.map_utilisation.get(),
            live_sessions: snare.live_sessions_count(),
            spool_writes: store.map(|stats| stats.spool_items),
            spool_bytes: store.map(|stats| stats.spool_bytes),
            redis_errors: store.map(|stats| stats.redis_errors),
            writes_dropped: store.map(|stats| stats.dropped),
        };
        (totals, gauges)
    }
}

/// The history, shared by the sampler and the pages.
#[derive(Clone, Default)]
pub struct SharedHistory(Arc<Mutex<History>>);

impl SharedHistory {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads `counters` every [`SAMPLE_INTERVAL`] until the task is aborted.
    pub async fn sample(self, counters: Counters) {
        let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let (totals, gauges) = counters.read();
            self.lock()
                .observe(crate::snare::tanner_time::now(), totals, gauges);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(packets: u64, events: u64, sqli: u64, attacker: u64) -> Totals {
        let mut totals = Totals {
            packets,
            bytes: packets * 100,
            events,
            ..Totals::default()
        };
        totals.detections[AttackType::Sqli as usize] = sqli;
        totals.analysed[3] = attacker;
        totals
    }

    #[test]
    fn figures_are_rates_of_the_last_second_and_points_cover_ten() {
        let mut history = History::default();
        let gauges = Gauges {
            flows_live: 7,
            ..Gauges::default()
        };
        history.observe(100.0, totals(1000, 0, 0, 0), gauges);
        assert_eq!(
            history.figures().packets_per_s,
            0.0,
            "no rate from one read"
        );
        for second in 1..=10 {
            let t = 100.0 + second as f64;
            history.observe(
                t,
                totals(1000 + 50 * second, 2 * second, second / 2, 1),
                gauges,
            );
        }
        let figures = history.figures();
        assert_eq!((figures.packets_per_s, figures.bytes_per_s), (50.0, 5000.0));
        assert_eq!((figures.events_per_s, figures.events), (2.0, 20));
        let update = history.update(0);
        assert_eq!(update.made, 1);
        let [point] = &update.points[..] else {
            panic!("one point: {:?}", update.points)
        };
        assert_eq!(
            (point.time, point.packets_per_s, point.flows_live),
            (110.0, 50.0, 7)
        );
        assert_eq!(point.detections[AttackType::Sqli as usize], 5);
        assert_eq!(point.analysed, [0, 0, 0, 1, 0]);
        assert!(history.update(1).points.is_empty());
    }

    #[test]
    fn the_ring_keeps_an_hour_and_a_restarted_counter_counts_from_zero() {
        let mut history = History::default();
        let mut packets = 0;
        for step in 0..=(POINTS as u64 + 5) {
            packets += 10 * POINT_SECONDS;
            history.observe(
                (step * POINT_SECONDS) as f64,
                totals(packets, 0, 0, 0),
                Gauges::default(),
            );
        }
        let update = history.update(0);
        assert_eq!(update.made, POINTS as u64 + 5);
        assert_eq!(update.points.len(), POINTS);
        assert_eq!(history.update(update.made - 2).points.len(), 2);
        history.observe(10_000.0, totals(30, 0, 0, 0), Gauges::default());
        assert_eq!(history.figures().packets_per_s, 30.0 / (10_000.0 - 3650.0));
    }
}
