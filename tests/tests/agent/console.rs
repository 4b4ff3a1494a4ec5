//! The web console in a real browser (headless Chromium over WebDriver), against an agent on
//! a veth pair with real traffic, SNARE events posted to it and a real redis-server: the live
//! figures move with the traffic, a known flow shows its exact counts, a session shows while
//! live and then with its analysis, filters narrow the lists, the pages fit a phone, and
//! without the token nothing is shown. Every test saves screenshots under
//! `target/console-screenshots/`.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::Stdio,
};

use fantoccini::Locator;
use flowmon_tests::{
    agent::{Agent, post_snare_event},
    browser::{Browser, Engine},
    netns::VethPair,
    process::ChildGuard,
    redis_server::RedisServer,
    tcp::http_get,
};
use serde_json::{Value, json};

const SENSOR: &str = "5f0c0d6e-8a1b-4c2d-9e3f-0a1b2c3d4e5f";
const WEB_PORT: u16 = 8080;
const CONSOLE: &str = "http://127.0.0.1:8091";
const USER_AGENT: &str = "console-test/1.0";

/// The leading number of a figure as the console writes it (`12 /s`, `1.5 k/s`, `3,201`).
fn leading_number(text: &str) -> f64 {
    let number: String = text
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
        .filter(|c| *c != ',')
        .collect();
    number.parse().unwrap_or(0.0)
}

fn rows(browser: &Browser, css: &str) -> usize {
    browser
        .run(browser.client().find_all(Locator::Css(css)))
        .map_or(0, |rows| rows.len())
}

/// Posts one request of the test's client to the agent, as SNARE would; returns the session.
fn post_request(pair: &VethPair, path: &str, client_port: u16) -> String {
    let event = json!({
        "method": "GET", "path": path, "uuid": SENSOR, "status": 200,
        "headers": {"Host": "sensor", "User-Agent": USER_AGENT},
        "peer": {"ip": VethPair::CLIENT_IP, "port": client_port},
    });
    let answer: Value = serde_json::from_str(&post_snare_event(&pair.server, &event)).unwrap();
    let sess_uuid = answer["response"]["message"]["sess_uuid"].as_str().unwrap();
    sess_uuid.replace('-', "")
}

#[test]
fn the_console_shows_traffic_flows_and_sessions_live_in_chromium() {
    the_console_shows_traffic_flows_and_sessions_live(Engine::Chromium);
}

#[test]
fn the_console_shows_traffic_flows_and_sessions_live_in_firefox() {
    the_console_shows_traffic_flows_and_sessions_live(Engine::Firefox);
}

fn the_console_shows_traffic_flows_and_sessions_live(engine: Engine) {
    let pair = VethPair::new();
    pair.disable_tcp_sack();
    let redis = RedisServer::start_in(&pair.server);
    let _agent = Agent::start(
        &pair.server,
        VethPair::SERVER_IF,
        &[
            "--redis-url",
            &redis.url(),
            "--poll-interval",
            "0.2",
            "--interim-interval",
            "1",
            // The known flow stays in the map while the test looks at it.
            "--tcp-close-timeout",
            "300",
            "--session-timeout",
            "4",
        ],
    );
    let listener = pair
        .server
        .run(|| TcpListener::bind((VethPair::SERVER_IP, WEB_PORT)).unwrap());

    pair.server.run(|| {
        let browser = Browser::start(&pair.server, engine);

        // The overview's figures move as traffic flows.
        browser.goto(CONSOLE);
        browser.wait_until("the script updates the overview", |b| {
            b.source().contains("data-updated=")
        });
        // A ping every 0.05 s: forty packets a second, both ways, far above what a new link
        // carries by itself (neighbour discovery, a few a second at most).
        let packets = || leading_number(&browser.text(r#"[data-figure="packets_per_s"]"#));
        let _ping = ChildGuard::spawn(
            "ping",
            pair.client
                .command("ping")
                .args(["-i", "0.05", "-c", "600", VethPair::SERVER_IP])
                .stdout(Stdio::null()),
        );
        browser.wait_until("the ping's packets per second", |_| packets() >= 30.0);
        browser.wait_until("a live flow", |b| {
            leading_number(&b.text(r#"[data-figure="flows_live"]"#)) >= 1.0
        });
        browser.screenshot("overview");

        // A known flow, with the exact counts each side's kernel sent.
        let (client, server, client_port) = http_get(&pair, &listener, "/index.html");
        let (client, server) = (client.frames(), server.frames());
        browser.goto(&format!("{CONSOLE}/flows?port={WEB_PORT}"));
        let row = format!(r#"//table[@class="flows"]//tr[td[contains(., ":{client_port}")]]"#);
        browser.wait_until("the known flow in the table", |b| {
            b.goto(&format!("{CONSOLE}/flows?port={WEB_PORT}"));
            rows(b, "table.flows tbody tr") == 1
                && b.run(b.client().find(Locator::XPath(&row))).is_ok()
        });
        browser.screenshot("flows-filtered");
        browser.goto(&format!("{CONSOLE}/flows"));
        assert!(
            rows(&browser, "table.flows tbody tr") >= 2,
            "the ping's flow too"
        );
        browser.screenshot("flows");
        browser.goto(&format!("{CONSOLE}/flows?port={WEB_PORT}"));
        browser.click(&format!("{row}//a[text()='details']"));
        let exact = |b: &Browser, which: &str| {
            b.text(&format!(r#"[data-exact="{which}"]"#))
                .parse::<u64>()
                .unwrap()
        };
        browser.wait_until("the flow's exact counts", |b| {
            (exact(b, "client-packets"), exact(b, "client-bytes")) == client
                && (exact(b, "server-packets"), exact(b, "server-bytes")) == server
        });
        let detail = browser.source();
        assert!(
            detail.contains("fin_client") || detail.contains("closed"),
            "its state"
        );
        browser.screenshot("flow");

        // A session, live: two requests of the same client, one of them an attack.
        let sess_uuid = post_request(&pair, "/index.html", client_port);
        let attack = "/search?q=1%27%20OR%20%271%27%3D%271";
        assert_eq!(post_request(&pair, attack, client_port), sess_uuid);
        browser.goto(&format!("{CONSOLE}/sessions"));
        browser.wait_until("the session among the live ones", |b| {
            b.text("#live-sessions").contains(USER_AGENT)
        });
        browser.screenshot("sessions-live");
        let session_url = format!("{CONSOLE}/sessions/{sess_uuid}");
        browser.goto(&session_url);
        assert!(
            browser
                .text("main")
                .contains("Live: analysed and stored once idle")
        );
        browser.screenshot("session-live");

        // Then, once idle for the session timeout, with its analysis.
        browser.wait_until("the session analysed and stored", |b| {
            b.goto(&session_url);
            b.source().contains("Possible owners")
        });
        let page = browser.text("main");
        for part in [
            "a request detected as sqli",
            "attacker",
            "2 requests above",
            attack,
        ] {
            assert!(page.contains(part), "{part} missing from:\n{page}");
        }
        let caption = browser.text("figure.timeline figcaption");
        let flows_below = caption
            .split(" requests above, ")
            .nth(1)
            .map(leading_number)
            .unwrap_or(0.0);
        assert!(
            flows_below >= 1.0,
            "the session's flows on its timeline: {caption}"
        );
        browser.screenshot("session");

        // Filters narrow the lists.
        browser.goto(&format!("{CONSOLE}/sessions?attack_types=sqli"));
        assert!(browser.text("#stored-sessions").contains(&sess_uuid[..8]));
        browser.goto(&format!("{CONSOLE}/sessions?attack_types=xss"));
        assert!(
            browser
                .text("#stored-sessions")
                .contains("No stored session")
        );
        browser.goto(&format!(
            "{CONSOLE}/sessions?user_agent=console-test&sensor={SENSOR}"
        ));
        assert!(browser.text("#stored-sessions").contains(&sess_uuid[..8]));
        browser.screenshot("sessions");

        // The peer: its flows and its sessions together.
        browser.goto(&format!("{CONSOLE}/peers/{}", VethPair::CLIENT_IP));
        assert!(rows(&browser, "table.flows tbody tr") >= 2);
        assert!(browser.text("main").contains(&sess_uuid[..8]));
        browser.screenshot("peer");

        browser.goto(&format!("{CONSOLE}/sensors"));
        assert!(browser.text("table.sensors").contains(SENSOR));
        browser.screenshot("sensors");

        // At a phone's width nothing runs off the side.
        browser.set_window_size(390, 844);
        for (path, name) in [("/", "overview-phone"), ("/flows", "flows-phone")] {
            browser.goto(&format!("{CONSOLE}{path}"));
            let fits = browser
                .run(browser.client().execute(
                    "return document.documentElement.scrollWidth <= window.innerWidth;",
                    vec![],
                ))
                .unwrap();
            assert_eq!(fits, json!(true), "{path} is wider than a phone");
            browser.screenshot(name);
        }
    });
}

/// A request of the console's, from inside `pair`'s server namespace: the status line and the
/// headers.
fn head(pair: &VethPair, path: &str) -> String {
    pair.server.run(|| {
        let mut stream = TcpStream::connect("127.0.0.1:8091").unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .to_owned()
    })
}

#[test]
fn with_a_token_the_console_asks_for_it() {
    let pair = VethPair::new();
    let _agent = Agent::start(
        &pair.server,
        VethPair::SERVER_IF,
        &["--no-redis", "--api-token", "s3cret"],
    );
    let refused = head(&pair, "/flows");
    assert!(refused.starts_with("HTTP/1.1 303"), "{refused}");
    assert!(
        refused.contains("location: /login?next=%2Fflows"),
        "{refused}"
    );
    assert!(head(&pair, "/api/overview").starts_with("HTTP/1.1 401"));

    pair.server.run(|| {
        let browser = Browser::start(&pair.server, Engine::Chromium);
        browser.goto(&format!("{CONSOLE}/flows"));
        assert_eq!(browser.path(), "/login");
        assert!(!browser.source().contains("live flows match"));
        browser.screenshot("login");
        let log_in = |token: &str| {
            browser
                .run(async {
                    let field = browser.client().find(Locator::Css("#token")).await?;
                    field.clear().await?;
                    field.send_keys(token).await?;
                    browser
                        .client()
                        .find(Locator::Css("button[type=submit]"))
                        .await?
                        .click()
                        .await
                })
                .expect("the login form");
        };
        log_in("wrong");
        browser.wait_until("a refusal", |b| {
            b.source().contains("That is not the token.")
        });
        assert_eq!(browser.path(), "/login");
        log_in("s3cret");
        browser.wait_until("the page asked for", |b| b.path() == "/flows");
        assert!(browser.source().contains("live flows match"));
        browser.screenshot("after-login");
    });
}

/// A web server in the server's namespace until `stop`: every connection gets one answer,
/// its body as long as the number in the path (`/page/5000`), else 512 bytes.
fn serve_pages(listener: TcpListener, stop: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering::Relaxed;
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Relaxed) {
        let Ok((mut stream, _)) = listener.accept() else {
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        };
        stream.set_nonblocking(false).unwrap();
        let mut request = [0u8; 2048];
        let read = stream.read(&mut request).unwrap_or(0);
        let request = String::from_utf8_lossy(&request[..read]);
        let size: usize = request
            .split_whitespace()
            .nth(1)
            .and_then(|path| path.rsplit('/').next()?.parse().ok())
            .unwrap_or(512);
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n{}",
            "x".repeat(size)
        );
    }
}

/// Not a check but the pictures of `docs/console.md`: a busier scene than the tests', over
/// two minutes (traffic of several kinds, sessions of every kind of owner on two sensors),
/// shot page by page into `docs/console/`. Run by hand:
/// `cargo test -p flowmon-tests --test agent console:: -- --ignored`.
#[test]
#[ignore]
fn screenshots_for_the_docs() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    const SENSORS: [&str; 2] = [SENSOR, "0b7e5a52-3c1d-4e8f-9a60-7d2c4b1e9f03"];
    let pair = VethPair::new();
    let redis = RedisServer::start_in(&pair.server);
    let _agent = Agent::start(
        &pair.server,
        VethPair::SERVER_IF,
        &[
            "--redis-url",
            &redis.url(),
            "--poll-interval",
            "0.5",
            "--interim-interval",
            "5",
            "--session-timeout",
            "8",
            // The pages' connections stay in the flow table for the pictures.
            "--tcp-close-timeout",
            "300",
            "--sensor-id",
            "honeypot-eu-1",
            "--api-token",
            "s3cret",
        ],
    );
    let listener = pair
        .server
        .run(|| TcpListener::bind((VethPair::SERVER_IP, WEB_PORT)).unwrap());
    let stop = AtomicBool::new(false);
    /// Stops the web server, also when the scene fails: the scope below waits for it.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Relaxed);
        }
    }
    let event = |sensor: &str, ip: &str, agent: &str, path: &str| {
        let event = json!({
            "method": "GET", "path": path, "uuid": sensor, "status": 200,
            "headers": {"Host": "shop.example", "User-Agent": agent},
            "peer": {"ip": ip, "port": 40000},
        });
        post_snare_event(&pair.server, &event);
    };
    std::thread::scope(|scope| {
        scope.spawn(|| pair.server.run(|| serve_pages(listener, &stop)));
        let _stop = Stop(&stop);
        let _ping = ChildGuard::spawn(
            "ping",
            pair.client
                .command("ping")
                .args(["-i", "0.5", VethPair::SERVER_IP])
                .stdout(Stdio::null()),
        );
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        let googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
        for round in 0..24u32 {
            // Pages fetched for real from the client, and the sessions SNARE would report.
            pair.client.run(|| {
                let mut stream = TcpStream::connect((VethPair::SERVER_IP, WEB_PORT)).unwrap();
                write!(
                    stream,
                    "GET /page/{} HTTP/1.1\r\n\r\n",
                    2_000 + round * 7_000
                )
                .unwrap();
                let mut page = Vec::new();
                let _ = stream.read_to_end(&mut page);
            });
            let paths = [
                "/",
                "/products.html",
                "/cart?item=3",
                "/download.php?file=../../../../etc/passwd",
            ];
            event(
                SENSORS[0],
                VethPair::CLIENT_IP,
                firefox,
                paths[round as usize % 4],
            );
            match round % 6 {
                0 => {
                    for i in 0..15 {
                        let path = format!("/item.php?id={i}%27%20UNION%20SELECT%201,2,3--");
                        event(SENSORS[0], "203.0.113.7", "sqlmap/1.7.2#stable", &path);
                    }
                }
                1 => event(SENSORS[1], "198.51.100.23", googlebot, "/robots.txt"),
                2 => event(
                    SENSORS[1],
                    "192.0.2.44",
                    "curl/8.5.0",
                    "/cgi-bin/test?cmd=;id;uname%20-a",
                ),
                3 => event(SENSORS[0], "198.51.100.80", firefox, "/about.html"),
                4 => event(
                    SENSORS[1],
                    "203.0.113.99",
                    "python-requests/2.31",
                    "/search?q=%3Cscript%3Ealert(1)%3C/script%3E",
                ),
                _ => event(
                    SENSORS[0],
                    "192.0.2.200",
                    "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
                    "/wp-content/plugins/x/readme.txt",
                ),
            }
            std::thread::sleep(std::time::Duration::from_secs(5));
        }
        pair.server.run(|| {
            let browser = Browser::start(&pair.server, Engine::Chromium);
            browser.goto(&format!("{CONSOLE}/"));
            browser.screenshot("docs-login");
            browser
                .run(async {
                    let field = browser.client().find(Locator::Css("#token")).await?;
                    field.send_keys("s3cret").await?;
                    browser
                        .client()
                        .find(Locator::Css("button[type=submit]"))
                        .await?
                        .click()
                        .await
                })
                .unwrap();
            browser.wait_until("the overview's charts", |b| {
                b.source().contains("data-updated=") && b.source().contains("class=\"c0\"")
            });
            browser.screenshot("docs-overview");
            browser.goto(&format!("{CONSOLE}/flows"));
            browser.screenshot("docs-flows");
            browser.click(
                r#"//table[@class="flows"]//tr[td[contains(., ":8080")]]//a[text()='details']"#,
            );
            browser.screenshot("docs-flow");
            browser.goto(&format!("{CONSOLE}/sessions"));
            browser.screenshot("docs-sessions");
            let attackers = format!("{CONSOLE}/sessions?possible_owners=attacker&sensor={SENSOR}");
            browser.wait_until("the Firefox session stored", |b| {
                b.goto(&attackers);
                b.text("#stored-sessions").contains("Firefox")
            });
            browser.click(r#"//section[@id="stored-sessions"]//tr[td[contains(., "Firefox")]]//a"#);
            browser.screenshot("docs-session");
            // A session still live when its picture is taken.
            event(
                SENSORS[0],
                VethPair::CLIENT_IP,
                "Wget/1.21.4",
                "/backup.zip",
            );
            event(SENSORS[0], VethPair::CLIENT_IP, "Wget/1.21.4", "/db.sql");
            browser.goto(&format!("{CONSOLE}/sessions"));
            browser.click(r#"//section[@id="live-sessions"]//tr[td[contains(., "Wget")]]//a"#);
            browser.screenshot("docs-session-live");
            browser.goto(&format!("{CONSOLE}/sensors"));
            browser.screenshot("docs-sensors");
            browser.goto(&format!("{CONSOLE}/peers/{}", VethPair::CLIENT_IP));
            browser.screenshot("docs-peer");
            browser.set_window_size(390, 844);
            browser.goto(&format!("{CONSOLE}/"));
            browser.screenshot("docs-overview-phone");
        });
    });
    let shots = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/console-screenshots"
    ));
    let docs = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/console"));
    std::fs::create_dir_all(docs).unwrap();
    for entry in std::fs::read_dir(shots).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(name) = name.strip_prefix("docs-") {
            std::fs::copy(entry.path(), docs.join(name)).unwrap();
        }
    }
}
