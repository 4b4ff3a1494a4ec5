//! The SNARE service in-process on a loopback port, with a real HTTP client: shut down (every
//! live session ended) when dropped, also when a test fails.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use flowmon::{
    config::Settings,
    metrics::SnareMetrics,
    snare::{HANDOFF_CAPACITY, Service, Session, SnareConfig, Stats},
};
use serde_json::Value;

use crate::wait::wait_for;

/// The event SNARE sends for a scanner's GET of `path` (its uuid, a peer, a user agent).
pub fn scanner_get(path: &str) -> Value {
    serde_json::json!({
        "method": "GET",
        "path": path,
        "headers": {"User-Agent": "scanner"},
        "uuid": "9c10172f-7ce2-4fb4-b1c6-abc70141db56",
        "peer": {"ip": "203.0.113.7", "port": 50000},
        "status": 200,
    })
}

/// The event SNARE sends for a scanner's POST of the form `fields` to `path`.
pub fn scanner_post(path: &str, fields: Value) -> Value {
    let mut event = scanner_get(path);
    event["method"] = serde_json::json!("POST");
    event["post_data"] = fields;
    event
}

/// The defaults of the settings, without an event log and without Redis (no dorks written
/// anywhere).
pub fn config() -> SnareConfig {
    Settings {
        no_redis: true,
        ..Settings::default()
    }
    .validate()
    .expect("the defaults are valid")
    .snare
}

pub struct TestService {
    runtime: tokio::runtime::Runtime,
    service: Option<Service>,
    ended: Arc<Mutex<Vec<Session>>>,
    metrics: SnareMetrics,
    /// Takes ended sessions into `ended` until the service has stopped.
    collector: tokio::task::JoinHandle<()>,
    client: reqwest::blocking::Client,
}

impl TestService {
    /// Serves on an ephemeral port of 127.0.0.1.
    pub fn start(config: SnareConfig) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let ended = Arc::new(Mutex::new(Vec::new()));
        let metrics = SnareMetrics::default();
        let (service, collector) = runtime.block_on(async {
            let (sender, mut receiver) = tokio::sync::mpsc::channel(HANDOFF_CAPACITY);
            let collected = ended.clone();
            let collector = tokio::spawn(async move {
                while let Some(session) = receiver.recv().await {
                    collected.lock().unwrap().push(session);
                }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1:0");
            let service = Service::serve(listener, &config, sender, None, metrics.clone())
                .expect("start the SNARE service");
            (service, collector)
        });
        Self {
            runtime,
            service: Some(service),
            ended,
            metrics,
            collector,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.service().local_addr()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    pub fn client(&self) -> &reqwest::blocking::Client {
        &self.client
    }

    /// What the service counts into its metrics.
    pub fn metrics(&self) -> &SnareMetrics {
        &self.metrics
    }

    pub fn stats(&self) -> Stats {
        self.service().stats()
    }

    /// POSTs `body` to `/event`: the status and the body, which must be JSON.
    pub fn post_raw(&self, body: impl Into<reqwest::blocking::Body>) -> (u16, Value) {
        let response = self
            .client
            .post(self.url("/event"))
            .body(body)
            .send()
            .expect("POST /event");
        let status = response.status().as_u16();
        let text = response.text().expect("answer body");
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("answer {text:?} is not JSON: {err}"));
        (status, json)
    }

    /// POSTs an event that must be answered 200 with a detection: the answer's `message`.
    pub fn post_event(&self, event: &Value) -> Value {
        let (status, answer) = self.post_raw(event.to_string());
        assert_eq!(status, 200, "{answer}");
        let message = answer["response"]["message"].clone();
        assert!(message["detection"].is_object(), "no detection in {answer}");
        message
    }

    /// Sessions ended so far.
    pub fn ended(&self) -> Vec<Session> {
        self.ended.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for at least `count` sessions to have ended.
    pub fn wait_for_ended(&self, count: usize, timeout: Duration) -> Vec<Session> {
        wait_for(timeout, &format!("{count} sessions ended"), || {
            let ended = self.ended();
            (ended.len() >= count).then_some(ended)
        })
    }

    /// Stops the service: its final counts and every session ended over its life.
    pub fn shutdown(mut self) -> (Stats, Vec<Session>) {
        let stats = self.stop();
        (stats, self.ended())
    }

    /// Shuts the service down and waits until the collector has taken every ended session.
    fn stop(&mut self) -> Stats {
        let service = self.service.take().expect("the service runs");
        self.runtime.block_on(async {
            let stats = service.shutdown().await;
            (&mut self.collector)
                .await
                .expect("the collector ends with the service");
            stats
        })
    }

    fn service(&self) -> &Service {
        self.service.as_ref().expect("the service runs")
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        if self.service.is_some() {
            self.stop();
        }
    }
}
