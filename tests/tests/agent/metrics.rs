//! The agent's Prometheus endpoint, scraped over HTTP while SNARE events arrive over HTTP and
//! the session analyzer stores into a real redis-server: the SNARE, analyzer and store figures
//! this traffic moves are checked exactly, and some it leaves at zero.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use flowmon_tests::wait::wait_for;
use flowmon_tests::{
    agent::{Agent, metric},
    netns::VethPair,
    process::{ChildGuard, TempDir, flowmon_binary, free_port, wait_for_port},
    redis_server::RedisServer,
};
use serde_json::{Value, json};

const SENSOR: &str = "9c10172f-7ce2-4fb4-b1c6-abc70141db56";

fn scrape(client: &reqwest::blocking::Client, addr: SocketAddr) -> String {
    client
        .get(format!("http://{addr}/metrics"))
        .send()
        .and_then(|response| response.text())
        .expect("scrape /metrics")
}

#[test]
fn snare_analyzer_and_store_figures_are_exact() {
    let redis = RedisServer::start();
    let dir = TempDir::new("agent-metrics");
    let snare: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut flowmon = ChildGuard::spawn(
        "flowmon",
        Command::new(flowmon_binary())
            .args(["--redis-url", &redis.url()])
            .args(["--snare-listen", &snare.to_string()])
            .args(["--metrics-listen", &metrics.to_string()])
            .args(["--api-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--web-listen", "127.0.0.1:0"])
            // Long enough that the three events join one session even on a loaded machine.
            .args(["--session-timeout", "3"])
            .arg("--state-dir")
            .arg(dir.path())
            .stdout(Stdio::null()),
    );
    wait_for_port(metrics, Duration::from_secs(20));
    let client = reqwest::blocking::Client::new();

    // Nothing yet: every series is there, at zero.
    let body = scrape(&client, metrics);
    assert_eq!(metric(&body, "flowmon_snare_events_total"), 0.0);
    assert_eq!(
        metric(
            &body,
            "flowmon_snare_detections_total{attack_type=\"sqli\"}"
        ),
        0.0
    );
    assert_eq!(
        metric(&body, "flowmon_sessions_analysed_total{owner=\"attacker\"}"),
        0.0
    );

    // One visitor: a page, an SQL injection, a cross-site script; and a body that is no event.
    for path in [
        "/index.html",
        "/item?id=1%20UNION%20SELECT%201,2,3,4",
        "/?q=%3Cscript%3Ealert(1)%3C/script%3E",
    ] {
        let event = json!({
            "method": "GET",
            "path": path,
            "headers": {"Host": "honeypot", "User-Agent": "Mozilla/5.0"},
            "uuid": SENSOR,
            "peer": {"ip": "198.51.100.7", "port": 40404},
            "status": 200,
        });
        let answer = client
            .post(format!("http://{snare}/event"))
            .body(event.to_string())
            .send()
            .unwrap();
        assert!(answer.status().is_success());
    }
    let answer = client
        .post(format!("http://{snare}/event"))
        .body("{not json")
        .send()
        .unwrap();
    // Tanner answers a bad body with an error message, not an HTTP error.
    let answer: serde_json::Value = answer.json().unwrap();
    assert!(
        answer["response"]["message"]["detection"].is_null(),
        "{answer}"
    );
    let body = scrape(&client, metrics);
    assert_eq!(metric(&body, "flowmon_snare_events_total"), 3.0);
    assert_eq!(metric(&body, "flowmon_snare_rejected_total"), 1.0);
    assert_eq!(metric(&body, "flowmon_snare_live_sessions"), 1.0);
    for (attack_type, events) in [("index", 1.0), ("sqli", 1.0), ("xss", 1.0), ("lfi", 0.0)] {
        let name = format!("flowmon_snare_detections_total{{attack_type=\"{attack_type}\"}}");
        assert_eq!(metric(&body, &name), events, "{name}");
    }

    // The session expires three seconds after its last request, is analysed and stored: two
    // writes, its sensor (at its first event) and the session.
    let body = wait_for(Duration::from_secs(15), "the session stored", || {
        let body = scrape(&client, metrics);
        (metric(&body, "flowmon_redis_writes_total") >= 2.0).then_some(body)
    });
    assert_eq!(metric(&body, "flowmon_snare_live_sessions"), 0.0);
    assert_eq!(
        metric(
            &body,
            "flowmon_snare_sessions_ended_total{reason=\"expired\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&body, "flowmon_sessions_analysed_total{owner=\"attacker\"}"),
        1.0
    );
    assert_eq!(
        metric(&body, "flowmon_sessions_analysed_total{owner=\"user\"}"),
        0.0
    );
    assert_eq!(
        metric(&body, "flowmon_session_analysis_failures_total"),
        0.0
    );
    assert_eq!(metric(&body, "flowmon_redis_writes_total"), 2.0);
    assert_eq!(metric(&body, "flowmon_redis_errors_total"), 0.0);
    assert_eq!(metric(&body, "flowmon_spool_backlog"), 0.0);
    assert_eq!(
        redis.cli(&["ZCARD", SENSOR]).trim(),
        "1",
        "the session is in Redis"
    );

    let status = flowmon.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "flowmon exited with {status}");
}

/// Every string under `key` anywhere in `value`.
fn strings_under<'a>(value: &'a Value, key: &str, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (name, inner) in map {
                match inner.as_str() {
                    Some(text) if name == key => found.push(text),
                    _ => strings_under(inner, key, found),
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| strings_under(item, key, found)),
        _ => {}
    }
}

/// The metric names a PromQL expression reads, and the labels it groups by.
fn names_and_labels(expr: &str) -> (Vec<String>, Vec<String>) {
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| !word.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let names = words(expr)
        .into_iter()
        .filter(|word| word.starts_with("flowmon_"))
        .collect();
    let labels = expr
        .split("by (")
        .skip(1)
        .flat_map(|rest| words(rest.split(')').next().unwrap_or_default()))
        .collect();
    (names, labels)
}

/// The Grafana dashboard imports as is (a datasource input, a current schema) and queries only
/// what the agent exposes: every metric name, and every label it groups by on series that
/// have labels.
#[test]
fn the_grafana_dashboard_queries_what_the_agent_exposes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/grafana/flowmon.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .expect("the dashboard is JSON");
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(dashboard["__inputs"][0]["type"], "datasource");
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 39);
    assert_eq!(
        dashboard["id"],
        Value::Null,
        "an importable dashboard has no id"
    );
    let mut uids = Vec::new();
    strings_under(&dashboard["panels"], "uid", &mut uids);
    assert!(
        !uids.is_empty() && uids.iter().all(|uid| *uid == "${DS_PROMETHEUS}"),
        "{uids:?}"
    );

    // An agent with a flow that ends at once, so that the labelled series of the kernel's
    // counters and of the records written exist too.
    let pair = VethPair::new();
    let agent = Agent::start(
        &pair.server,
        VethPair::SERVER_IF,
        &[
            "--no-redis",
            "--icmp-timeout",
            "0.3",
            "--poll-interval",
            "0.1",
        ],
    );
    pair.client
        .exec(&["ping", "-c", "1", "-W", "5", VethPair::SERVER_IP]);
    let body = wait_for(Duration::from_secs(20), "a record written", || {
        let body = agent.scrape(&pair.server);
        body.contains("flowmon_records_written_total{")
            .then_some(body)
    });
    let series = |name: &str| -> Vec<&str> {
        body.lines()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .collect()
    };
    let mut exprs = Vec::new();
    strings_under(&dashboard["panels"], "expr", &mut exprs);
    assert!(exprs.len() >= 25, "{} queries", exprs.len());
    let mut checked_labels = 0;
    for expr in exprs {
        let (names, labels) = names_and_labels(expr);
        assert!(!names.is_empty(), "{expr} reads no flowmon metric");
        for name in &names {
            let lines = series(name);
            assert!(
                !lines.is_empty(),
                "{name} (in {expr}) is not exposed:\n{body}"
            );
            for label in labels.iter().filter(|label| *label != "instance") {
                if lines.iter().any(|line| line.contains('{')) {
                    assert!(
                        lines
                            .iter()
                            .any(|line| line.contains(&format!("{label}=\""))),
                        "{name} has no label {label} (in {expr})"
                    );
                    checked_labels += 1;
                }
            }
        }
    }
    assert!(checked_labels >= 5, "labels checked: {checked_labels}");
}
