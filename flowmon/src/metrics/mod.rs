//! The Prometheus endpoint (`--metrics-listen`, text format at `/metrics`) and what each part
//! of flowmon reports there: the flow monitor, the SNARE service and the session analyzer, the
//! Redis store, the IPFIX exporter.

mod flows;
mod ipfix;
mod sessions;
mod store;

use std::{hash::Hash, net::SocketAddr, sync::Arc};

use anyhow::{Context as _, Result};
use axum::{Router, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

pub use flows::{EndReasonLabel, FlowMetrics, ReasonLabel, SinkLabel};
pub use ipfix::{CollectorMetrics, IpfixMetrics};
pub use sessions::{AnalyzerMetrics, ConnectionCut, SnareMetrics};

use crate::{lifecycle::Part, store::Store};
use store::StoreMetrics;

/// Where Prometheus scrapes flowmon.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9108";

/// Every metric flowmon exposes.
pub struct Metrics {
    pub flows: FlowMetrics,
    pub snare: SnareMetrics,
    pub analyzer: AnalyzerMetrics,
    pub ipfix: IpfixMetrics,
    store: StoreMetrics,
    registry: Registry,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let (flows, snare, analyzer, ipfix, store) = (
            FlowMetrics::default(),
            SnareMetrics::default(),
            AnalyzerMetrics::default(),
            IpfixMetrics::default(),
            StoreMetrics::default(),
        );
        let mut registry = Registry::default();
        let r = registry.sub_registry_with_prefix("flowmon");
        flows.register(r);
        snare.register(r);
        analyzer.register(r);
        ipfix.register(r);
        store.register(r);
        Arc::new(Self {
            flows,
            snare,
            analyzer,
            ipfix,
            store,
            registry,
        })
    }

    /// Reports `store`'s writes, errors and spool from now on.
    pub fn watch_store(&self, store: Store) {
        self.store.watch(store);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.store.refresh();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The counters of `labels` in `family`, in order: they show from the start, at zero.
fn counters_of<L: Clone + Hash + Eq>(
    family: &Family<L, Counter>,
    labels: impl IntoIterator<Item = L>,
) -> Vec<Counter> {
    labels
        .into_iter()
        .map(|label| family.get_or_create(&label).clone())
        .collect()
}

/// Serves `/metrics` on `addr` until stopped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<Part> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(),
                )
                    .into_response()
            }
        }),
    );
    Ok(Part::spawn("metrics endpoint", |stop| async move {
        let serving = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(err) = serving.await {
            tracing::error!("metrics endpoint failed: {err}");
        }
    }))
}
