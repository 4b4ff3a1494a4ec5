//! The load generator of `cargo xtask bench events`, briefly against the service in-process.

use std::time::Duration;

use flowmon::snare::{SessionLimits, SnareConfig};
use flowmon_tests::{
    snare_load::run_event_load,
    snare_service::{TestService, config},
};

#[test]
fn the_event_load_mixes_every_kind_of_request_and_sessions_expire_meanwhile() {
    let service = TestService::start(SnareConfig {
        limits: SessionLimits::new(Duration::from_secs_f64(0.2), 100_000),
        ..config()
    });
    let report = run_event_load(service.addr(), Duration::from_millis(2500), 16).unwrap();
    assert_eq!(report.errors, 0, "{report}");
    assert!(report.events > 100, "{report}");
    let names: Vec<&str> = report.detections.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "cmd_exec",
            "crlf",
            "index",
            "lfi",
            "php_code_injection",
            "php_object_injection",
            "rfi",
            "sqli",
            "template_injection",
            "unknown",
            "wp-content",
            "xss",
        ],
        "{report}"
    );
    assert_eq!(report.detections.values().sum::<u64>(), report.events);
    assert!(
        report.p50 <= report.p99 && report.p99 <= report.max,
        "{report}"
    );
    let stats = service.stats();
    assert_eq!(stats.events, report.events);
    assert!(
        stats.expired > 0,
        "no session expired during the load: {stats:?}"
    );
    // Visitors who return the cookie keep one session; the others share theirs by address.
    assert!(
        report.sessions as u64 <= stats.expired + stats.live_sessions,
        "{report} {stats:?}"
    );
}
