//! The console's routes against fake sources: what each page shows, what filters keep, what a
//! bad request gets, and who is let in.

use std::{collections::HashMap, sync::Arc};

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use flowmon_common::{FlowBlock, FlowKey, FlowSide, ip_proto, marks, tcp_flags};
use serde_json::Value;
use tower::ServiceExt as _;
use uuid::Uuid;

use super::*;
use crate::{
    analyzer::{
        Analysis, Dorks,
        analysis::tests::tanner_fixture,
        geoip::Location,
        network::{FlowOrigin, Network},
        owners,
    },
    flow::query::{FlowRef, address_of},
    flow::record::{RecordType, sample::record},
    snare::{AttackType, PathEntry, Session},
};
use sources::fake;

const SENSOR: &str = "78e51180-bf0d-4757-8a04-f000e5efa179";
const LIVE_SESSION: &str = "5a0b0f5e8c1f4a4e9a7e2b1c3d4e5f60";

fn tcp_flow(
    client: [u8; 4],
    client_port: u16,
    sent: (u64, u64),
    got: (u64, u64),
) -> (FlowKey, FlowBlock) {
    let key = FlowKey {
        addr_lo: address_of([10, 0, 0, 1].into()),
        addr_hi: address_of(client.into()),
        port_lo: 80,
        port_hi: client_port,
        protocol: ip_proto::TCP,
        ..FlowKey::default()
    };
    let side = |(packets, bytes), flags: u8, mark| FlowSide {
        packets,
        bytes,
        last_seen: 1_200,
        marks: flags as u64 | mark,
        ttl: 64,
        mac: [2, 0, 0, 0, 0, client[3]],
        ..FlowSide::default()
    };
    let block = FlowBlock {
        hi: side(sent, tcp_flags::SYN | tcp_flags::ACK, marks::OPENED),
        lo: side(got, tcp_flags::SYN | tcp_flags::ACK, marks::ANSWERED),
        first_seen: 1_000,
        ifindex: 2,
        ..FlowBlock::default()
    };
    (key, block)
}

fn flows() -> fake::Flows {
    fake::Flows {
        table: vec![
            tcp_flow([203, 0, 113, 7], 40000, (11, 1074), (9, 6060)),
            tcp_flow([198, 51, 100, 9], 41000, (3, 180), (2, 120)),
            tcp_flow([203, 0, 113, 7], 40001, (1, 74), (1, 54)),
        ],
        ifaces: HashMap::from([(2, "eth0".to_owned())]),
    }
}

fn live_session() -> Session {
    Session {
        ip: Some("203.0.113.7".into()),
        port: Some(40000),
        user_agent: Some("curl/8.0".into()),
        snare_uuid: Some(SENSOR.into()),
        paths: vec![
            PathEntry {
                path: Some("/".into()),
                timestamp: 1000.0,
                response_status: 200,
                attack_type: AttackType::Index,
            },
            PathEntry {
                path: Some("/q?x=<script>alert(1)</script>".into()),
                timestamp: 1001.0,
                response_status: 200,
                attack_type: AttackType::Xss,
            },
        ],
        sess_uuid: Uuid::parse_str(LIVE_SESSION).unwrap(),
        start_timestamp: 1000.0,
        timestamp: 1001.0,
        count: 2,
        cookies: Default::default(),
        referer: None,
        emulation: Default::default(),
    }
}

/// Tanner's fixture analysed, with a scan in its network.
fn stored_session() -> Value {
    let network = Network {
        flows: 6,
        server_port_count: 6,
        server_ports: vec![22, 80, 443, 3306, 5432, 8080],
        ..Network::none_from(FlowOrigin::Local)
    };
    let mut analysis = Analysis::new(
        tanner_fixture(),
        &Dorks::new(),
        Location::NotAvailable,
        Some(network),
    );
    analysis.possible_owners = owners::possible_owners(&analysis, None);
    let mut stored = serde_json::to_value(&analysis).unwrap();
    stored["emulation"] = serde_json::json!({
        "commands": [{"input": ";id", "output": "uid=33(www-data) gid=33(www-data)\n"}],
        "urls": ["http://198.51.100.9/<x>.sh"],
    });
    stored
}

fn stored() -> fake::Stored {
    let peer_record = |flow: &str, first_seen: f64, last_seen: f64| {
        let mut record = record(flow, 2, RecordType::Interim);
        record.client_ip = "74.217.37.84".parse().unwrap();
        (record.first_seen, record.last_seen) = (first_seen, last_seen);
        record
    };
    let now = crate::snare::tanner_time::now();
    fake::Stored {
        sensors: [(SENSOR.to_owned(), vec![stored_session()])].into(),
        records: vec![
            // During the stored session, and of today.
            peer_record("then", 1466091800.0, 1466091850.0),
            peer_record("today", now - 60.0, now - 10.0),
        ],
        ..fake::Stored::default()
    }
}

struct Setup {
    flows: bool,
    storage: Option<Arc<fake::Stored>>,
    token: Option<&'static str>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            flows: true,
            storage: Some(Arc::new(stored())),
            token: None,
        }
    }
}

impl Setup {
    fn app(self) -> Router {
        let metrics = Metrics::new();
        metrics.flows.packets.inc_by(42);
        let history = SharedHistory::default();
        let counters = Counters {
            metrics: metrics.clone(),
            store: None,
        };
        let (totals, gauges) = counters.read();
        history.lock().observe(100.0, totals, gauges);
        let sources = Sources {
            metrics,
            store: None,
            flows: self.flows.then(|| Arc::new(flows()) as Arc<dyn LiveFlows>),
            sessions: Arc::new(fake::Sessions(vec![live_session()])),
            storage: self.storage.map(|storage| storage as Arc<dyn Storage>),
            records: None,
        };
        let auth = Auth::new(self.token.map(str::to_owned));
        let ctx = Ctx(Arc::new(Inner {
            sources,
            history,
            about: About {
                sensor_id: "sensor-1".into(),
                ifaces: vec!["eth0".into()],
                records: "records to Redis".into(),
            },
            auth_required: auth.required(),
            session_timeout: 75.0,
            redis_health: Mutex::new(None),
        }));
        router(ctx, auth)
    }
}

async fn send(
    app: &Router,
    request: Request<Body>,
) -> (StatusCode, HashMap<String, String>, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
    let (status, _, body) = send(app, Request::get(uri).body(Body::empty()).unwrap()).await;
    (status, body)
}

/// Rows of the first table with class `class`.
fn rows(body: &str, class: &str) -> usize {
    let Some(start) = body.find(&format!("<table class=\"{class}\">")) else {
        return 0;
    };
    let table = &body[start..start + body[start..].find("</table>").unwrap()];
    table.matches("<tr>").count() - 1
}

#[tokio::test]
async fn the_overview_shows_figures_top_flows_and_live_sessions() {
    let app = Setup::default().app();
    let (status, body) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for part in [
        "data-figure=\"packets_per_s\"",
        "chart-traffic",
        "chart-attacks",
        "chart-owners",
        "203.0.113.7",
        "curl/8.0",
    ] {
        assert!(body.contains(part), "{part} missing");
    }
    assert_eq!(rows(&body, "flows"), 3);
    let (status, json) = get(&app, "/api/overview?since=0").await;
    assert_eq!(status, StatusCode::OK);
    let update: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(update["figures"]["time"], 100.0);
    assert_eq!(update["made"], 0);
    assert_eq!(update["redis"]["state"], "reachable");
}

#[tokio::test]
async fn the_flow_table_is_filtered_ranked_and_each_flow_has_its_page() {
    let app = Setup::default().app();
    let (_, body) = get(&app, "/flows").await;
    assert_eq!(rows(&body, "flows"), 3);
    assert!(body.contains("3 of 3 live flows match"), "{body}");
    let (_, body) = get(&app, "/flows?addr=203.0.113.7&order=packets&limit=1").await;
    assert_eq!(rows(&body, "flows"), 1);
    assert!(
        body.contains("2 of 3 live flows match") && body.contains(":40000"),
        "{body}"
    );
    let (_, body) = get(
        &app,
        "/flows?port=41000&proto=tcp&state=established&iface=eth0",
    )
    .await;
    assert!(body.contains("1 of 3 live flows match"), "{body}");
    for (bad, why) in [
        ("port=http", "port: &quot;http&quot; is no port"),
        ("addr=nowhere", "is no IP address"),
        ("state=open", "is no TCP state"),
        ("limit=5000", "is not between 1 and 1000"),
        ("order=size", "unknown order"),
    ] {
        let (status, body) = get(&app, &format!("/flows?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(body.contains(why), "{bad}: {body}");
    }

    let (key, _) = tcp_flow([203, 0, 113, 7], 40000, (0, 0), (0, 0));
    let (status, body) = get(&app, &format!("/flows/{}", FlowRef(key))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for exact in [
        "data-exact=\"client-packets\">11<",
        "data-exact=\"server-packets\">9<",
        "data-exact=\"client-bytes\">1074<",
        "data-exact=\"server-bytes\">6060<",
        "02:00:00:00:00:07",
        "SYN ACK",
    ] {
        assert!(body.contains(exact), "{exact} missing: {body}");
    }
    // The sessions of its client: the live one.
    assert!(body.contains(&LIVE_SESSION[..8]), "{body}");

    let (gone, _) = tcp_flow([192, 0, 2, 1], 1, (0, 0), (0, 0));
    let (status, body) = get(&app, &format!("/flows/{}", FlowRef(gone))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("not in the kernel map now"));
    let (status, _) = get(&app, "/flows/not_a_key").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sessions_are_listed_live_and_stored_and_filters_narrow_them() {
    let app = Setup::default().app();
    let (status, body) = get(&app, "/sessions").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows(&body, "sessions"), 1, "one live session");
    assert!(body.contains("c546114f"), "the stored one: {body}");
    let (_, body) = get(&app, "/sessions?attack_types=xss").await;
    assert!(
        body.contains(&LIVE_SESSION[..8]) && !body.contains("c546114f"),
        "{body}"
    );
    let (_, body) = get(
        &app,
        "/sessions?filters=attack_types:lfi+possible_owners:attacker",
    )
    .await;
    assert!(
        !body.contains(&LIVE_SESSION[..8]) && body.contains("c546114f"),
        "{body}"
    );
    let (_, body) = get(
        &app,
        &format!("/sessions?sensor={SENSOR}&peer_ip=192.0.2.1"),
    )
    .await;
    assert!(body.contains("No live session") && body.contains("No stored session"));
    let (status, body) = get(&app, "/sessions?filters=colour:red").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("Invalid filter : colour"));

    let (_, body) = get(&app, "/sensors").await;
    assert!(body.contains(SENSOR) && body.contains("a-lfi"), "{body}");
}

#[tokio::test]
async fn a_session_page_shows_requests_owners_with_their_rules_and_a_timeline() {
    let app = Setup::default().app();
    let (status, body) = get(&app, &format!("/sessions/{LIVE_SESSION}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Live: analysed and stored once idle"));
    // What attackers write is escaped.
    assert!(
        body.contains("/q?x=&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{body}"
    );
    assert!(!body.contains("<script>alert"));

    let (status, body) = get(&app, "/sessions/c546114f-97f5-48f9-8275-6495f963e280").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for part in [
        "a request detected as lfi",
        "connected to 6 ports of the sensor: a port scan",
        "Timeline",
        "6 requests above, 1 flows below",
        "/wow-movie.html?exec=/etc/passwd",
        "Emulation",
        "uid=33(www-data) gid=33(www-data)",
        "http://198.51.100.9/&lt;x&gt;.sh",
    ] {
        assert!(body.contains(part), "{part} missing: {body}");
    }
    assert!(!body.contains("differ from what flowmon"), "{body}");

    let (status, _) = get(&app, &format!("/sessions/{}", Uuid::new_v4())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&app, "/sessions/x%3Cy").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_peer_page_joins_its_flows_records_and_sessions() {
    let app = Setup::default().app();
    let (status, body) = get(&app, "/peers/203.0.113.7").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows(&body, "flows"), 2);
    assert!(body.contains(&LIVE_SESSION[..8]));
    let (_, body) = get(&app, "/peers/74.217.37.84").await;
    assert!(
        body.contains("today:2") && !body.contains("then:2"),
        "{body}"
    );
    assert!(body.contains("c546114f"));
    let (status, headers, _) = send(
        &app,
        Request::get("/peers?ip=::ffff:10.0.0.1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/peers/10.0.0.1");
    let (status, _) = get(&app, "/peers/not-an-ip").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn pages_say_what_they_cannot_show() {
    let app = Setup {
        flows: false,
        storage: None,
        token: None,
    }
    .app();
    let (_, body) = get(&app, "/").await;
    assert!(
        body.contains("started without --iface") && body.contains("--no-redis"),
        "{body}"
    );
    let (_, body) = get(&app, "/flows").await;
    assert!(body.contains("started without --iface"));

    let storage = Arc::new(stored());
    *storage.away.lock().unwrap() = true;
    let app = Setup {
        storage: Some(storage),
        ..Setup::default()
    }
    .app();
    let (status, body) = get(&app, "/sessions").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("Redis does not answer (Connection refused"),
        "{body}"
    );
    let (_, json) = get(&app, "/api/overview").await;
    let update: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(update["redis"]["state"], "unreachable");
}

#[tokio::test]
async fn with_a_token_only_a_login_or_the_bearer_header_lets_in() {
    let app = Setup {
        token: Some("s3cret"),
        ..Setup::default()
    }
    .app();
    let (status, headers, body) = send(
        &app,
        Request::get("/flows?port=80").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/login?next=%2Fflows%3Fport%3D80");
    assert!(!body.contains("live flows"));
    let (status, _) = get(&app, "/api/overview").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = get(&app, "/login?next=/flows").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("type=\"password\""));
    // The assets are public: the login page needs its stylesheet.
    let (status, _) = get(&app, assets::url(assets::CSS)).await;
    assert_eq!(status, StatusCode::OK);

    let bearer = Request::get("/flows")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, bearer).await.0, StatusCode::OK);

    let login = |token: &str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}&next=%2Fsessions")))
            .unwrap()
    };
    let (status, headers, body) = send(&app, login("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!headers.contains_key("set-cookie") && body.contains("not the token"));
    let (status, headers, _) = send(&app, login("s3cret")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/sessions");
    let cookie = &headers["set-cookie"];
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("s3cret"));
    let with_cookie = Request::get("/sessions")
        .header(header::COOKIE, cookie.split(';').next().unwrap())
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = send(&app, with_cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-security-policy"].contains("script-src 'self'"));
}
