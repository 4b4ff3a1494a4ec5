//! Tanner's read API over sessions the analyzer stored in a real redis-server, through real
//! HTTP: every route, the filters, the token, unknown uuids, a sensor without sessions, and
//! Redis away.

use std::{net::SocketAddr, time::Duration};

use flowmon::{
    analyzer::{GeoIp, SessionWrites},
    api::ApiServer,
    sinks::redis::FlowWrites,
    store::{Connection, Patience, RedisTarget},
};
use flowmon_tests::analyzer_support::*;
use flowmon_tests::{
    process::{TempDir, free_port},
    redis_server::RedisServer,
};
use redis::Commands as _;
use serde_json::{Value, json};

/// 2023-11-14T22:13:20Z.
const T: f64 = 1_700_000_000.0;
/// In `snare_ids` with no session left.
const EMPTY_SENSOR: &str = "3f1c8a0e-52d4-4b6e-9a7d-0c2b4e6f8a10";
const TOKEN: &str = "s3cret-token";

/// Sessions of [`SENSOR`], newest first, and what the test needs of them.
struct Stored {
    /// s1: curl with an SQL injection; s2: IPv6, no user agent; s3: a browser in Smyrna, US,
    /// with lfi and xss; s4: robots.txt from London.
    ids: [String; 4],
    /// [`OTHER_SENSOR`]'s 55 sessions, oldest first.
    others: Vec<String>,
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    redis: RedisServer,
    _state: TempDir,
    stored: Stored,
    client: reqwest::blocking::Client,
}

impl Fixture {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let redis = RedisServer::start();
        let state = TempDir::new("analyzer-api");
        let geoip_dir = TempDir::new("analyzer-api-geoip");
        let db = geoip_dir.path().join("city.mmdb");
        write_city_db(&db);

        let s1 = session(
            SENSOR,
            "203.0.113.7",
            Some("curl/8.0"),
            &[
                ("/", T, "index"),
                ("/?id=1'%20OR%20'1'='1", T + 10.0, "sqli"),
            ],
        );
        let s2 = session(SENSOR, "2001:db8::7", None, &[("/", T + 100.0, "index")]);
        let s3 = session(
            SENSOR,
            "74.217.37.84",
            Some(BROWSER),
            &[
                ("/", T + 200.0, "index"),
                ("/?f=/etc/passwd", T + 215.0, "lfi"),
                ("/?q=<b>", T + 230.0, "xss"),
            ],
        );
        let s4 = session(
            SENSOR,
            "81.2.69.160",
            Some(BROWSER),
            &[("/robots.txt", T + 300.0, "index")],
        );
        let others: Vec<_> = (0..55)
            .map(|i| {
                let ip = format!("198.51.100.{i}");
                session(
                    OTHER_SENSOR,
                    &ip,
                    Some(BROWSER),
                    &[("/", T + 1000.0 + f64::from(i), "index")],
                )
            })
            .collect();
        let stored = Stored {
            ids: [&s1, &s2, &s3, &s4].map(hex_id),
            others: others.iter().map(hex_id).collect(),
        };
        let mut sessions = vec![s1, s2, s3, s4];
        sessions.extend(others);

        let flow_writes = FlowWrites::default();
        runtime.block_on(async {
            let store = store(&redis.url(), state.path());
            for (flow, first_seen) in [("a", T - 5.0), ("b", T + 20.0)] {
                let record = flow_record(json!({"flow_id": flow, "client_ip": "203.0.113.7",
                                                "first_seen": first_seen,
                                                "last_seen": first_seen + 1.0}));
                store.submit(flow_writes.write(&record));
            }
            let analyzer = analyzer(None, GeoIp::open(Some(&db)).unwrap());
            assert_eq!(
                analyse_into(analyzer, &store, SessionWrites::new(None), sessions).await,
                59
            );
            store.close().await;
        });
        let mut connection = redis::Client::open(redis.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let _: () = connection.sadd("snare_ids", EMPTY_SENSOR).unwrap();
        Self {
            runtime,
            redis,
            _state: state,
            stored,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// An API on an ephemeral port reading `redis_url`, behind `token` if any.
    fn serve(&self, redis_url: &str, token: Option<&str>) -> ApiServer {
        self.runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            ApiServer::serve(
                listener,
                Connection::open(&RedisTarget::new(redis_url, false).unwrap(), Patience::READ)
                    .unwrap(),
                token.map(str::to_owned),
            )
        })
    }

    /// GET `path` with `token` as bearer: the status and the JSON body.
    fn get(&self, api: SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.client.get(format!("http://{api}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap())
    }
}

/// Tanner's envelope around `message`.
fn envelope(message: Value) -> Value {
    json!({"version": 1, "response": {"message": message}})
}

#[test]
fn every_route_answers_as_tanner_without_its_faults() {
    let fixture = Fixture::start();
    let api = fixture.serve(&fixture.redis.url(), None);
    let addr = api.local_addr();
    let get = |path: &str| fixture.get(addr, path, None);
    let [s1, s2, s3, s4] = &fixture.stored.ids;
    let ids = |ids: &[&String]| json!(ids);

    assert_eq!(get("/"), (200, envelope(json!("tanner api"))));
    assert_eq!(
        get("/snares"),
        (200, envelope(json!([EMPTY_SENSOR, SENSOR, OTHER_SENSOR])))
    );

    // /snare/<uuid>: the newest 50, whole.
    let (status, body) = get(&format!("/snare/{SENSOR}"));
    assert_eq!(status, 200);
    let sessions = body["response"]["message"].as_array().unwrap();
    let listed: Vec<&Value> = sessions.iter().map(|s| &s["sess_uuid"]).collect();
    assert_eq!(json!(listed), ids(&[s4, s3, s2, s1]));
    assert_eq!(
        sessions[1]["location"],
        json!({"country": "United States", "country_code": "US", "city": "Smyrna",
               "zip_code": "30080"})
    );
    assert_eq!(sessions[2]["user_agent"], Value::Null);
    assert_eq!(sessions[3]["attack_types"], json!(["index", "sqli"]));
    let (_, body) = get(&format!("/snare/{OTHER_SENSOR}"));
    let listed: Vec<&str> = body["response"]["message"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sess_uuid"].as_str().unwrap())
        .collect();
    let newest: Vec<&str> = fixture.stored.others[5..]
        .iter()
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(listed, newest);
    assert_eq!(
        get(&format!("/snare/{EMPTY_SENSOR}")),
        (200, envelope(json!([])))
    );
    let unknown = (404, envelope(json!("Invalid SNARE UUID")));
    assert_eq!(get("/snare/00000000-0000-4000-8000-00000000dead"), unknown);
    assert_eq!(get("/snare/snare_ids"), unknown);

    // /snare-stats/<uuid>: attacks counted per path.
    assert_eq!(
        get(&format!("/snare-stats/{SENSOR}")),
        (
            200,
            envelope(json!({
                "total_sessions": 4, "total_duration": 40.0,
                "attack_frequency": {"sqli": 1, "lfi": 1, "xss": 1, "rfi": 0, "cmd_exec": 0},
            }))
        )
    );
    assert_eq!(
        get(&format!("/snare-stats/{EMPTY_SENSOR}")),
        (
            200,
            envelope(json!({
                "total_sessions": 0, "total_duration": 0.0,
                "attack_frequency": {"sqli": 0, "lfi": 0, "xss": 0, "rfi": 0, "cmd_exec": 0},
            }))
        )
    );
    assert_eq!(
        get("/snare-stats/00000000-0000-4000-8000-00000000dead"),
        unknown
    );

    // /<uuid>/sessions: the matching sessions' uuids, newest first.
    let filtered = |filters: &str| {
        let path = if filters.is_empty() {
            format!("/{SENSOR}/sessions")
        } else {
            format!("/{SENSOR}/sessions?filters={filters}")
        };
        get(&path)
    };
    let found = |expected: &[&String]| (200, envelope(ids(expected)));
    assert_eq!(filtered(""), found(&[s4, s3, s2, s1]));
    // A null user agent neither matches nor fails (Tanner answered 500 for the whole query).
    assert_eq!(filtered("user_agent:curl"), found(&[s1]));
    assert_eq!(filtered("user_agent:Firefox"), found(&[s4, s3]));
    // IPv6: Tanner cut the value at its second colon.
    assert_eq!(filtered("peer_ip:2001:db8::7"), found(&[s2]));
    assert_eq!(filtered("attack_types:lfi"), found(&[s3]));
    assert_eq!(filtered("possible_owners:crawler"), found(&[s4]));
    assert_eq!(filtered("possible_owners:attacker"), found(&[s3, s1]));
    assert_eq!(filtered("start_time:1700000100"), found(&[s4, s3, s2]));
    assert_eq!(filtered("end_time:1700000100"), found(&[s2, s1]));
    assert_eq!(
        filtered("start_time:1700000100+end_time:1700000230"),
        found(&[s3, s2])
    );
    assert_eq!(
        filtered("user_agent:curl%20attack_types:sqli"),
        found(&[s1])
    );
    // Tanner compared with the location's keys; flowmon with its names and code.
    assert_eq!(filtered("location:US"), found(&[s3]));
    assert_eq!(filtered("location:london"), found(&[s4]));
    assert_eq!(filtered("location:country"), found(&[]));
    assert_eq!(
        filtered(&format!("snare_uuid:{SENSOR}")),
        found(&[s4, s3, s2, s1])
    );
    assert_eq!(filtered(&format!("snare_uuid:{OTHER_SENSOR}")), found(&[]));
    let invalid = (400, envelope(json!("Invalid filter definition")));
    assert_eq!(filtered("user_agent"), invalid);
    assert_eq!(filtered("start_time:soon"), invalid);
    assert_eq!(
        filtered("colour:red"),
        (400, envelope(json!("Invalid filter : colour")))
    );
    // A sensor without sessions has none (Tanner failed every query while one existed).
    assert_eq!(get(&format!("/{EMPTY_SENSOR}/sessions")), found(&[]));
    assert_eq!(
        get("/00000000-0000-4000-8000-00000000dead/sessions"),
        unknown
    );

    // /session/<uuid>: 32 hex digits as stored, or hyphenated.
    let (status, body) = get(&format!("/session/{s3}"));
    assert_eq!(status, 200);
    assert_eq!(body["response"]["message"]["sess_uuid"], json!(s3));
    assert_eq!(body["response"]["message"]["accepted_paths"], 3);
    let hyphenated = format!(
        "{}-{}-{}-{}-{}",
        &s2[..8],
        &s2[8..12],
        &s2[12..16],
        &s2[16..20],
        &s2[20..]
    );
    let (status, body) = get(&format!("/session/{hyphenated}"));
    assert_eq!(
        (status, &body["response"]["message"]["peer_ip"]),
        (200, &json!("2001:db8::7"))
    );
    let other = &fixture.stored.others[0];
    let (status, body) = get(&format!("/session/{other}"));
    assert_eq!(
        (status, &body["response"]["message"]["snare_uuid"]),
        (200, &json!(OTHER_SENSOR))
    );
    let missing = (404, envelope(Value::Null));
    assert_eq!(get("/session/00000000000040008000000000000000"), missing);
    assert_eq!(get("/session/*"), missing);

    // /flows?peer=<ip>: the peer's records, oldest first.
    let (status, body) = get("/flows?peer=203.0.113.7");
    assert_eq!(status, 200);
    let flows: Vec<&Value> = body["response"]["message"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| &record["record_id"])
        .collect();
    assert_eq!(json!(flows), json!(["a:0", "b:0"]));
    assert_eq!(body["response"]["message"][0]["server_port"], 80);
    let (_, body) = get("/flows?peer=203.0.113.7&from=1700000010&to=1700000100");
    assert_eq!(body["response"]["message"].as_array().unwrap().len(), 1);
    assert_eq!(
        get("/flows?peer=198.51.100.200"),
        (200, envelope(json!([])))
    );
    let bad_peer = (400, envelope(json!("Invalid peer")));
    assert_eq!(get("/flows?peer=flowmon:flows"), bad_peer);
    assert_eq!(get("/flows"), bad_peer);
    assert_eq!(
        get("/flows?peer=203.0.113.7&from=yesterday"),
        (400, envelope(json!("Invalid from")))
    );
    fixture.runtime.block_on(api.shutdown());
}

/// Numbers in a query are finite or the request is refused with 400, naming the parameter:
/// a NaN or an infinity never reaches Redis (which refused it, and the API blamed Redis).
#[test]
fn numbers_that_are_not_finite_are_a_400_naming_the_parameter() {
    let fixture = Fixture::start();
    let api = fixture.serve(&fixture.redis.url(), None);
    let get = |path: &str| fixture.get(api.local_addr(), path, None);
    for (query, name) in [
        ("from=nan", "from"),
        ("from=NaN", "from"),
        ("to=-NaN", "to"),
        ("to=inf", "to"),
        ("from=-inf", "from"),
        ("from=1&to=1e400", "to"),
    ] {
        assert_eq!(
            get(&format!("/flows?peer=203.0.113.7&{query}")),
            (400, envelope(json!(format!("Invalid {name}")))),
            "{query}"
        );
    }
    for filter in ["start_time:nan", "end_time:inf", "start_time:-Infinity"] {
        assert_eq!(
            get(&format!("/{SENSOR}/sessions?filters={filter}")),
            (400, envelope(json!("Invalid filter definition"))),
            "{filter}"
        );
    }
    fixture.runtime.block_on(api.shutdown());
}

/// An error Redis answers to a well-formed request is a 502; Redis out of reach is a 503.
#[test]
fn redis_errors_are_502_and_an_unreachable_redis_503() {
    let fixture = Fixture::start();
    let api = fixture.serve(&fixture.redis.url(), None);
    // `snare_ids` made a string: SMEMBERS answers WRONGTYPE.
    fixture.redis.cli(&["DEL", "snare_ids"]);
    fixture.redis.cli(&["SET", "snare_ids", "not a set"]);
    assert_eq!(
        fixture.get(api.local_addr(), "/snares", None),
        (502, envelope(json!("Redis error")))
    );
    fixture.runtime.block_on(api.shutdown());
}

/// After Redis was away and came back, the first request is answered.
#[test]
fn the_first_request_after_redis_is_back_is_answered() {
    let mut fixture = Fixture::start();
    let api = fixture.serve(&fixture.redis.url(), None);
    let snares = (200, envelope(json!([EMPTY_SENSOR, SENSOR, OTHER_SENSOR])));
    assert_eq!(fixture.get(api.local_addr(), "/snares", None), snares);
    fixture.redis.stop();
    assert_eq!(
        fixture.get(api.local_addr(), "/snares", None),
        (503, envelope(json!("Redis unavailable")))
    );
    fixture.redis.restart();
    // The data went with the server, which keeps none.
    fixture.redis.cli(&["SADD", "snare_ids", SENSOR]);
    let snares = (200, envelope(json!([SENSOR])));
    assert_eq!(fixture.get(api.local_addr(), "/snares", None), snares);
    // Restarted while nobody asked: the connection the API holds is broken.
    fixture.redis.restart();
    fixture.redis.cli(&["SADD", "snare_ids", SENSOR]);
    assert_eq!(fixture.get(api.local_addr(), "/snares", None), snares);
    fixture.runtime.block_on(api.shutdown());
}

#[test]
fn a_token_guards_every_route() {
    let fixture = Fixture::start();
    let api = fixture.serve(&fixture.redis.url(), Some(TOKEN));
    let addr = api.local_addr();
    let denied = (401, envelope(json!("Unauthorized")));
    for path in [
        "/",
        "/snares",
        &format!("/snare/{SENSOR}"),
        "/nowhere/at/all",
    ] {
        assert_eq!(fixture.get(addr, path, None), denied, "{path}");
        assert_eq!(fixture.get(addr, path, Some("guess")), denied, "{path}");
    }
    let response = fixture
        .client
        .get(format!("http://{addr}/snares"))
        .send()
        .unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        fixture.get(addr, "/snares", Some(TOKEN)),
        (200, envelope(json!([EMPTY_SENSOR, SENSOR, OTHER_SENSOR])))
    );
    fixture.runtime.block_on(api.shutdown());
}

#[test]
fn redis_away_is_a_503_not_a_crash() {
    let fixture = Fixture::start();
    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    let api = fixture.serve(&nowhere, None);
    let unavailable = (503, envelope(json!("Redis unavailable")));
    assert_eq!(fixture.get(api.local_addr(), "/snares", None), unavailable);
    assert_eq!(
        fixture.get(api.local_addr(), &format!("/{SENSOR}/sessions"), None),
        unavailable
    );
    fixture.runtime.block_on(api.shutdown());
}
