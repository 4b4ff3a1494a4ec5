//! Replay of a Tanner/T-Pot event log on its logged times: in-process and as `flowmon replay`.

use std::process::Command;

use flowmon::snare::{AttackType, Session, replay};
use flowmon_tests::{
    process::{TempDir, flowmon_binary, flowmon_replay},
    snare_service::config,
};
use serde_json::{Value, json};

const SENSOR: &str = "9c10172f-7ce2-4fb4-b1c6-abc70141db56";
/// 2024-05-01T12:00:00 UTC.
const T0: f64 = 1714564800.0;

/// A line of Tanner's event log: the validated event, Tanner's answer and the time.
fn logged(ip: &str, user_agent: &str, method: &str, path: &str, time: &str) -> Value {
    let mut line = json!({
        "method": method,
        "path": path,
        "headers": {"host": "shop.example", "user-agent": user_agent},
        "uuid": SENSOR,
        "peer": {"ip": ip, "port": 41000},
        "status": 200,
        "cookies": {"sess_uuid": null},
        "response_msg": {"version": "0.6.0", "response": {"message": {
            "detection": {"name": "index", "order": 1, "type": 1, "version": "0.6.0"},
            "sess_uuid": "0b9ab2a4-6f3e-4c55-9a3b-2f4a0c6e1d11"}}},
        "timestamp": time,
    });
    if method == "POST" {
        line["post_data"] = json!({"user": "<script>alert(1)</script>", "pass": "x"});
    }
    line
}

/// Two clients; the gap before 12:01:40 is longer than the 75 s timeout for both.
fn event_log() -> String {
    let a = ("203.0.113.7", "curl/8.0");
    let b = ("198.51.100.2", "Mozilla/5.0");
    let mut no_time = logged(a.0, a.1, "GET", "/untimed", "");
    no_time.as_object_mut().unwrap().remove("timestamp");
    [
        logged(a.0, a.1, "GET", "/", "2024-05-01T12:00:00.000000").to_string(),
        logged(
            a.0,
            a.1,
            "GET",
            "/item?id=1%20UNION%20SELECT%201,2,3,4",
            "2024-05-01T12:00:10.500000",
        )
        .to_string(),
        logged(b.0, b.1, "POST", "/login", "2024-05-01T12:00:20.000000").to_string(),
        no_time.to_string(),
        "not an event".to_owned(),
        logged(
            a.0,
            a.1,
            "GET",
            "/wp-content/x.css",
            "2024-05-01T12:01:40.000000",
        )
        .to_string(),
        String::new(),
        logged(b.0, b.1, "GET", "/", "2024-05-01T12:01:50.250000").to_string(),
    ]
    .join("\n")
}

/// (ip, [(path, seconds after T0, attack type)], start, end) of each session, in order.
type Summary = (String, Vec<(String, f64, AttackType)>, f64, f64);

fn summarise(sessions: &[Session]) -> Vec<Summary> {
    sessions
        .iter()
        .map(|s| {
            assert_eq!(s.count as usize, s.paths.len());
            assert_eq!(s.snare_uuid.as_deref(), Some(SENSOR));
            let paths = s
                .paths
                .iter()
                .map(|p| (p.path.clone().unwrap(), p.timestamp - T0, p.attack_type))
                .collect();
            (
                s.ip.clone().unwrap(),
                paths,
                s.start_timestamp - T0,
                s.timestamp - T0,
            )
        })
        .collect()
}

fn entry(path: &str, at: f64, attack: AttackType) -> (String, f64, AttackType) {
    (path.to_owned(), at, attack)
}

#[tokio::test]
async fn a_log_replays_on_its_own_times() {
    let (ended, mut sessions) = tokio::sync::mpsc::channel(16);
    let report = replay::replay(event_log().as_bytes(), &config(), ended)
        .await
        .unwrap();
    assert_eq!(
        report,
        replay::ReplayReport {
            events: 5,
            skipped: 2,
            sessions: 4
        }
    );
    let mut ended = Vec::new();
    while let Some(session) = sessions.recv().await {
        ended.push(session);
    }
    use AttackType::*;
    let a = "203.0.113.7".to_owned();
    let b = "198.51.100.2".to_owned();
    assert_eq!(
        summarise(&ended),
        [
            // Expired when the event at +100 s came.
            (
                a.clone(),
                vec![
                    entry("/", 0.0, Index),
                    entry("/item?id=1%20UNION%20SELECT%201,2,3,4", 10.5, Sqli)
                ],
                0.0,
                10.5
            ),
            (b.clone(), vec![entry("/login", 20.0, Xss)], 20.0, 20.0),
            // Ended by the end of the log.
            (
                a,
                vec![entry("/wp-content/x.css", 100.0, WpContent)],
                100.0,
                100.0
            ),
            (b, vec![entry("/", 110.25, Index)], 110.25, 110.25),
        ]
    );
}

#[test]
fn flowmon_replay_prints_the_sessions_and_writes_the_event_log() {
    let dir = TempDir::new("snare-replay");
    let input = dir.path().join("tanner_report.json");
    std::fs::write(&input, event_log()).unwrap();
    let log = dir.path().join("replayed.json");
    let printed = flowmon_replay(
        &[
            "--no-redis",
            "--session-timeout",
            "200",
            "--event-log",
            log.to_str().unwrap(),
        ],
        &input,
    );
    let sessions: Vec<Session> = printed
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    use AttackType::*;
    assert_eq!(
        summarise(&sessions),
        [
            (
                "203.0.113.7".to_owned(),
                vec![
                    entry("/", 0.0, Index),
                    entry("/item?id=1%20UNION%20SELECT%201,2,3,4", 10.5, Sqli),
                    entry("/wp-content/x.css", 100.0, WpContent),
                ],
                0.0,
                100.0
            ),
            (
                "198.51.100.2".to_owned(),
                vec![entry("/login", 20.0, Xss), entry("/", 110.25, Index)],
                20.0,
                110.25
            ),
        ]
    );
    let logged: Vec<(String, String)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|line| {
            let line: Value = serde_json::from_str(line).unwrap();
            let detection = &line["response_msg"]["response"]["message"]["detection"];
            (
                line["timestamp"].as_str().unwrap().to_owned(),
                detection["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("2024-05-01T12:00:00.000000", "index"),
        ("2024-05-01T12:00:10.500000", "sqli"),
        ("2024-05-01T12:00:20.000000", "xss"),
        ("2024-05-01T12:01:40.000000", "wp-content"),
        ("2024-05-01T12:01:50.250000", "index"),
    ];
    assert_eq!(logged, expected.map(|(t, n)| (t.to_owned(), n.to_owned())));
}

#[test]
fn replaying_a_missing_file_fails_with_its_name() {
    let output = Command::new(flowmon_binary())
        .args(["--no-redis", "replay", "/nonexistent/tanner_report.json"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot open /nonexistent/tanner_report.json"),
        "{stderr}"
    );
}

/// Settings may follow the subcommand: here the session timeout that joins each client's
/// requests into one session (with the default 75 s they make four).
#[test]
fn settings_after_the_subcommand_apply() {
    let dir = TempDir::new("snare-replay-order");
    let input = dir.path().join("tanner_report.json");
    std::fs::write(&input, event_log()).unwrap();
    let output = Command::new(flowmon_binary())
        .arg("replay")
        .arg(&input)
        .args(["--no-redis", "--session-timeout", "200"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8(output.stdout).unwrap().lines().count(), 2);
}
