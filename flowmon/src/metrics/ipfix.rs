//! What the IPFIX exporter reports, per collector (its URL as given).

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CollectorLabel {
    pub collector: String,
}

#[derive(Default)]
pub struct IpfixMetrics {
    /// CPU seconds the flow monitor's thread spent encoding records.
    pub encode_seconds: Counter<f64, AtomicU64>,
    records_sent: Family<CollectorLabel, Counter>,
    messages_sent: Family<CollectorLabel, Counter>,
    bytes_sent: Family<CollectorLabel, Counter>,
    records_dropped: Family<CollectorLabel, Counter>,
    collector_up: Family<CollectorLabel, Gauge>,
}

/// One collector's series, at zero from the start.
#[derive(Clone, Default)]
pub struct CollectorMetrics {
    pub records_sent: Counter,
    pub messages_sent: Counter,
    pub bytes_sent: Counter,
    pub records_dropped: Counter,
    /// 1 while the collector is reachable (TCP: connected; UDP: no error came back), else 0.
    pub up: Gauge,
}

impl IpfixMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "ipfix_encode_seconds",
            "CPU seconds the flow monitor's thread spent encoding records for IPFIX",
            self.encode_seconds.clone(),
        );
        r.register(
            "ipfix_records_sent",
            "Flow records sent to an IPFIX collector: acknowledged by its TCP, or handed to the \
             kernel over UDP",
            self.records_sent.clone(),
        );
        r.register(
            "ipfix_messages_sent",
            "IPFIX messages sent to a collector, template messages included",
            self.messages_sent.clone(),
        );
        r.register(
            "ipfix_bytes_sent",
            "Bytes of the IPFIX messages sent to a collector",
            self.bytes_sent.clone(),
        );
        r.register(
            "ipfix_records_dropped",
            "Flow records that will not reach an IPFIX collector: refused by its full queue, \
             not sent while it was unreachable, or sent over UDP and reported lost by an ICMP \
             error",
            self.records_dropped.clone(),
        );
        r.register(
            "ipfix_collector_up",
            "1 while an IPFIX collector is reachable (TCP connected; over UDP, no ICMP error \
             since the last probe), else 0",
            self.collector_up.clone(),
        );
    }

    /// The series of `collector`, shown from now on.
    pub fn collector(&self, collector: &str) -> CollectorMetrics {
        let label = CollectorLabel {
            collector: collector.to_owned(),
        };
        CollectorMetrics {
            records_sent: self.records_sent.get_or_create(&label).clone(),
            messages_sent: self.messages_sent.get_or_create(&label).clone(),
            bytes_sent: self.bytes_sent.get_or_create(&label).clone(),
            records_dropped: self.records_dropped.get_or_create(&label).clone(),
            up: self.collector_up.get_or_create(&label).clone(),
        }
    }
}
