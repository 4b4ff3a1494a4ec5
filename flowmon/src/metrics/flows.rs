//! What the flow monitor reports. Counters that the kernel keeps are carried over by their
//! increase since the previous poll, so they stay monotonic here even when the agent restarts.

use flowmon_common::DatapathCounters;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use super::counters_of;
use crate::flow::record::EndReason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndReasonLabel {
    pub end_reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabel {
    pub iface: String,
    pub hook: &'static str,
}

/// Seconds from 10 ms to about 20 s.
pub struct Lateness(Histogram);

impl Default for Lateness {
    fn default() -> Self {
        Self(Histogram::new(exponential_buckets(0.01, 2.0, 12)))
    }
}

impl Lateness {
    pub fn observe(&self, seconds: f64) {
        self.0.observe(seconds);
    }
}

/// What the flow monitor reports.
#[derive(Default)]
pub struct FlowMetrics {
    pub packets: Counter,
    pub bytes: Counter,
    pub parse_failures: Family<ReasonLabel, Counter>,
    pub non_ip_frames: Counter,
    pub flows_created: Counter,
    pub flow_create_failures: Counter,
    pub fragments: Counter,
    pub flows_live: Gauge,
    pub flows_finalised: Family<EndReasonLabel, Counter>,
    pub flows_evicted: Counter,
    pub map_utilisation: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub polls: Counter,
    pub poll_duration_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub records_written: Family<SinkLabel, Counter>,
    pub hook_info: Family<HookLabel, Gauge>,
    pub record_lateness_seconds: Lateness,
    /// The kernel counters at the previous poll.
    last_kernel: std::sync::Mutex<DatapathCounters>,
}

impl FlowMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register("packets", "Frames the datapath saw", self.packets.clone());
        r.register(
            "bytes",
            "Layer-2 bytes the datapath saw",
            self.bytes.clone(),
        );
        r.register(
            "parse_failures",
            "Frames the parser could not read, by reason",
            self.parse_failures.clone(),
        );
        r.register(
            "non_ip_frames",
            "Frames without IP (ARP...)",
            self.non_ip_frames.clone(),
        );
        r.register(
            "flows_created",
            "Flows the kernel created",
            self.flows_created.clone(),
        );
        r.register(
            "flow_create_failures",
            "Flow creations the kernel refused",
            self.flow_create_failures.clone(),
        );
        r.register(
            "fragments",
            "Non-first IP fragments",
            self.fragments.clone(),
        );
        r.register(
            "flows_live",
            "Flows in the kernel map",
            self.flows_live.clone(),
        );
        r.register(
            "flows_finalised",
            "Final flow records, by end reason",
            self.flows_finalised.clone(),
        );
        r.register(
            "flows_evicted",
            "Flows the LRU map dropped before the agent ended them",
            self.flows_evicted.clone(),
        );
        r.register(
            "flow_map_utilisation",
            "Live flows over the map's capacity",
            self.map_utilisation.clone(),
        );
        r.register(
            "polls",
            "Polls of the flow map completed (waiting for the next one waits for its records)",
            self.polls.clone(),
        );
        r.register(
            "poll_duration_seconds",
            "Duration of the last poll of the flow map",
            self.poll_duration_seconds.clone(),
        );
        r.register(
            "records_written",
            "Flow records written to the log or handed to the Redis store, by sink",
            self.records_written.clone(),
        );
        r.register(
            "record_lateness_seconds",
            "How long after it was due each interim and final record was made",
            self.record_lateness_seconds.0.clone(),
        );
        r.register(
            "hook_info",
            "The hook (xdp or tc) that counts what each interface receives; always 1",
            self.hook_info.clone(),
        );
        counters_of(
            &self.flows_finalised,
            EndReason::ALL.map(|reason| EndReasonLabel {
                end_reason: reason.as_str(),
            }),
        );
    }

    /// Carries the kernel's counters over by their increase since the last call.
    pub fn observe_kernel(&self, now: &DatapathCounters) {
        let mut last = self.last_kernel.lock().expect("metrics lock");
        let inc = |counter: &Counter, new: u64, old: u64| {
            // A recreated map starts from zero again: count from there.
            counter.inc_by(if new >= old { new - old } else { new });
        };
        inc(&self.packets, now.packets, last.packets);
        inc(&self.bytes, now.bytes, last.bytes);
        inc(
            &self.parse_failures.get_or_create(&ReasonLabel {
                reason: "truncated",
            }),
            now.truncated,
            last.truncated,
        );
        inc(
            &self.parse_failures.get_or_create(&ReasonLabel {
                reason: "unsupported",
            }),
            now.unsupported,
            last.unsupported,
        );
        inc(&self.non_ip_frames, now.non_ip, last.non_ip);
        inc(&self.flows_created, now.flows_created, last.flows_created);
        inc(
            &self.flow_create_failures,
            now.create_failures,
            last.create_failures,
        );
        inc(&self.fragments, now.fragments, last.fragments);
        *last = *now;
    }

    /// Notes the ingress hook of `iface`.
    pub fn hook(&self, iface: &str, hook: &'static str) {
        self.hook_info
            .get_or_create(&HookLabel {
                iface: iface.to_owned(),
                hook,
            })
            .set(1);
    }

    pub fn finalised(&self, reason: EndReason) {
        self.flows_finalised
            .get_or_create(&EndReasonLabel {
                end_reason: reason.as_str(),
            })
            .inc();
    }
}
