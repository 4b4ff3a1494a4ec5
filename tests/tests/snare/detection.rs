//! Attack detection (spec section 4) over real HTTP: every attack type with its order, the
//! tie rules, what is scanned for GET and for POST, cookies, percent-encoding, and libinjection's
//! verdicts on the spec's vectors.

use flowmon::{emulation::EmulationConfig, snare::SnareConfig};
use flowmon_tests::snare_service::{TestService, config, scanner_get as get, scanner_post as post};
use serde_json::{Value, json};

fn with_cookies(mut event: Value, cookies: Value) -> Value {
    event["cookies"] = cookies;
    event
}

/// Posts each event and checks its detection: name, order, type 1 and the version. Emulation
/// is off: these are Tanner's detections alone (`emulation_*.rs` test the answers).
fn assert_detections(cases: &[(Value, &str, u64)]) {
    let service = TestService::start(SnareConfig {
        emulation: EmulationConfig::none(),
        ..config()
    });
    for (event, name, order) in cases {
        let detection = &service.post_event(event)["detection"];
        assert_eq!(
            detection,
            &json!({"name": name, "order": order, "type": 1, "version": "0.6.0"}),
            "{event}"
        );
    }
}

#[test]
fn each_attack_type_is_detected_with_its_order() {
    assert_detections(&[
        (get("/index.html"), "index", 1),
        (get("/"), "index", 1),
        (get("/wp-content/plugins/x/readme.txt"), "wp-content", 1),
        (get("index.html"), "unknown", 0),
        (
            post("/login", json!({"user": "alice", "pass": "secret"})),
            "unknown",
            0,
        ),
        (get("/item?id=1%20UNION%20SELECT%201,2,3,4"), "sqli", 2),
        (get("/?page=http://203.0.113.9/shell.txt"), "rfi", 2),
        (get("/?page=FTPS:host/x"), "rfi", 2),
        (get("/?file=../../../../etc/passwd"), "lfi", 2),
        (get("/?file=/proc/self/environ"), "lfi", 2),
        (get("/?next=%0D%0ASet-Cookie:%20admin=1"), "crlf", 2),
        (get("/?q=%3Cscript%3Ealert(1)%3C/script%3E"), "xss", 3),
        (get("/?code=phpinfo()"), "php_code_injection", 3),
        (get("/?code=system('ls')"), "php_code_injection", 3),
        (
            get("/?data=O:8:%22stdClass%22:0:%7B%7D"),
            "php_object_injection",
            3,
        ),
        (
            get("/?data=a:1:%7Bi:0%3BO:3:%22Foo%22:0:%7B%7D%7D"),
            "php_object_injection",
            3,
        ),
        (get("/?host=127.0.0.1|uname"), "cmd_exec", 3),
        (get("/?host=id%3B%20uname%20-a"), "cmd_exec", 3),
        (get("/?name={{7*7}}"), "template_injection", 4),
        (
            get("/?name=%257B%257B7*7%257D%257D"),
            "template_injection",
            4,
        ),
        (get("/?name=x%20%25%3E"), "template_injection", 4),
    ]);
}

#[test]
fn the_rows_rules_hold_at_their_edges() {
    assert_detections(&[
        // A bare shell word, or one after a letter or `:./`, is no command.
        (get("/?cmd=ls"), "index", 1),
        (get("/?cmd=als"), "index", 1),
        (get("/?cmd=x.ls"), "index", 1),
        (get("/?cmd=a%20lsof"), "index", 1),
        (get("/?cmd=a%20ls"), "cmd_exec", 3),
        // `.` stops at a newline in Tanner's patterns.
        (get("/?q=a%0A%3Cb%3E"), "index", 1),
        (get("/?q=%3C%0Ab%3E"), "xss", 3),
        (get("/?q=a%0Ab%0D%0Ac"), "index", 1),
        (get("/?q=echo(1"), "index", 1),
        (get("/?q=x%20O:1:"), "index", 1),
        (get("/?q=%7B%7Bx"), "index", 1),
        (get("/?q=x%25%3E"), "index", 1),
    ]);
}

#[test]
fn ties_go_to_the_first_value_and_the_earliest_scanner() {
    assert_detections(&[
        // xss is listed before xxe_injection; template_injection has the higher order.
        (get("/?x=%3C?xml%20version=%221.0%22?%3E"), "xss", 3),
        (get("/?x=%3C!DOCTYPE%20foo%3E"), "xss", 3),
        (get("/?x=%3C%25%20x%20%25%3E"), "template_injection", 4),
        // Two order-2 values: the first wins.
        (get("/?a=/etc/passwd&b=http://x"), "lfi", 2),
        (get("/?b=http://x&a=/etc/passwd"), "rfi", 2),
        // One value that is both: rfi is scanned before lfi.
        (get("/?a=http://x/etc/passwd"), "rfi", 2),
        // A later value of a higher order wins.
        (
            get("/?a=/etc/passwd&b=%3Cb%3E&c={{x}}"),
            "template_injection",
            4,
        ),
        (
            get("/wp-content/x?a=1%20UNION%20SELECT%201,2,3,4"),
            "sqli",
            2,
        ),
    ]);
}

#[test]
fn what_is_scanned_depends_on_the_method() {
    let attack_path = "/?q=%3Cscript%3E";
    assert_detections(&[
        // POST: only the fields, no path baseline, and every scanner.
        (post(attack_path, json!({"a": "hello"})), "unknown", 0),
        (
            post("/login", json!({"user": "admin'--", "pass": "x"})),
            "sqli",
            2,
        ),
        (
            post("/login", json!({"a": "/etc/passwd", "b": "<b>"})),
            "xss",
            3,
        ),
        (
            post("/login", json!({"a": "", "b": "{{7*7}}"})),
            "template_injection",
            4,
        ),
        (
            post("/upload", json!({"f": "phpinfo()"})),
            "php_code_injection",
            3,
        ),
        // Any method but POST is scanned as a GET.
        (with_method(get(attack_path), "HEAD"), "xss", 3),
        (with_method(get(attack_path), "post"), "xss", 3),
        // Cookies: sqli and php_object_injection only.
        (
            with_cookies(get("/"), json!({"sess_uuid": null, "id": "1' OR '1'='1"})),
            "sqli",
            2,
        ),
        (
            with_cookies(get("/"), json!({" cart": "O:4:\"Cart\":0:{}"})),
            "php_object_injection",
            3,
        ),
        (
            with_cookies(get("/"), json!({"q": "<script>", "f": "/etc/passwd"})),
            "index",
            1,
        ),
        (
            with_cookies(
                post("/login", json!({"a": "b"})),
                json!({"id": "1' OR '1'='1"}),
            ),
            "unknown",
            0,
        ),
    ]);
}

fn with_method(mut event: Value, method: &str) -> Value {
    event["method"] = json!(method);
    event
}

#[test]
fn percent_encoded_attacks_are_detected() {
    assert_detections(&[
        (get("/?id=1%27%20OR%20%271%27%3D%271"), "sqli", 2),
        (
            get("/?id=1%2527%2520OR%2520%25271%2527%253D%25271"),
            "sqli",
            2,
        ),
        (get("/?f=%2E%2E%2F%2E%2E%2Fetc%2Fpasswd"), "lfi", 2),
        (get("/?u=http%3A%2F%2Fevil.example%2Fx"), "rfi", 2),
        (get("/%3Fq=%3Cimg%20src=x%3E"), "xss", 3),
        (get("/?q=a+ls+-la"), "cmd_exec", 3),
        (
            post("/", json!({"q": "%7B%7B7*7%7D%7D"})),
            "template_injection",
            4,
        ),
    ]);
}

#[test]
fn libinjection_verdicts_match_the_spec_over_http() {
    let query = |value: &str| {
        get(&format!(
            "/?q={}",
            value.replace(' ', "%20").replace('\'', "%27")
        ))
    };
    assert_detections(&[
        (query("1 UNION SELECT 1,2,3,4"), "sqli", 2),
        (query("1' OR '1'='1"), "sqli", 2),
        (query("bar'UNION SELECT 1,2"), "sqli", 2),
        (query("admin'--"), "sqli", 2),
        (query("1 UNION 1,2,3,4"), "index", 1),
        (query("hello world"), "index", 1),
        // Not sqli, but lfi.
        (query("/etc/passwd"), "lfi", 2),
        (query("9c10172f-7ce2-4fb4-b1c6-abc70141db56"), "index", 1),
    ]);
}
