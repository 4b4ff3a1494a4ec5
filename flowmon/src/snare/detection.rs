//! Attack detection as Tanner 0.6.0 does it (spec section 4): one detection per request, the
//! highest order found in the values Tanner scans, ties going to the first value and, within a
//! value, to the earliest scanner.
//!
//! Tanner's patterns are Python `re.match` patterns: anchored at the start, `.` stopping at a
//! newline. They are kept as written (Rust's `.` also stops at `\n`), with a `^` for the anchor,
//! except where the spec words a rule differently: `cmd_exec` excludes letters (Python's `A-z`
//! also took ``[\]^_` ``), and `php_object_injection` finds `O:<n>:` after any `;`, `{` or `}`.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::event::Event;

/// A detection's name, as SNARE and Tanner's readers know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AttackType {
    #[serde(rename = "unknown")]
    Unknown,
    #[serde(rename = "index")]
    Index,
    #[serde(rename = "wp-content")]
    WpContent,
    #[serde(rename = "sqli")]
    Sqli,
    #[serde(rename = "rfi")]
    Rfi,
    #[serde(rename = "lfi")]
    Lfi,
    #[serde(rename = "crlf")]
    Crlf,
    #[serde(rename = "xss")]
    Xss,
    #[serde(rename = "php_code_injection")]
    PhpCodeInjection,
    #[serde(rename = "php_object_injection")]
    PhpObjectInjection,
    #[serde(rename = "cmd_exec")]
    CmdExec,
    #[serde(rename = "xxe_injection")]
    XxeInjection,
    #[serde(rename = "template_injection")]
    TemplateInjection,
}

impl AttackType {
    pub const ALL: [AttackType; 13] = [
        AttackType::Unknown,
        AttackType::Index,
        AttackType::WpContent,
        AttackType::Sqli,
        AttackType::Rfi,
        AttackType::Lfi,
        AttackType::Crlf,
        AttackType::Xss,
        AttackType::PhpCodeInjection,
        AttackType::PhpObjectInjection,
        AttackType::CmdExec,
        AttackType::XxeInjection,
        AttackType::TemplateInjection,
    ];

    /// The name SNARE and Tanner's readers know (its serialised form).
    pub fn name(self) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(name)) => name,
            _ => unreachable!("an attack type serialises to its name"),
        }
    }

    /// Tanner's order: a higher order wins over a lower one.
    pub const fn order(self) -> u8 {
        use AttackType::*;
        match self {
            Unknown => 0,
            Index | WpContent => 1,
            Sqli | Rfi | Lfi | Crlf => 2,
            Xss | PhpCodeInjection | PhpObjectInjection | CmdExec | XxeInjection => 3,
            TemplateInjection => 4,
        }
    }
}

/// Cookies are scanned only for these.
const COOKIE_SCANNERS: [AttackType; 2] = [AttackType::Sqli, AttackType::PhpObjectInjection];

enum Check {
    /// libinjection's verdict.
    Sqli,
    Pattern(Regex),
    /// The pattern, on the value percent-decoded once more.
    DecodedPattern(Regex),
}

struct Scanner {
    attack: AttackType,
    check: Check,
}

/// The ten scanners, compiled once.
pub struct Detector {
    /// In Tanner's order, which breaks ties within a value.
    scanners: [Scanner; 10],
}

impl Default for Detector {
    fn default() -> Self {
        Self::new()
    }
}

impl Detector {
    pub fn new() -> Self {
        use AttackType::*;
        let pattern = |re: &str| Regex::new(re).expect("the detection patterns are valid");
        let scanner = |attack, check| Scanner { attack, check };
        Self {
            scanners: [
                scanner(Sqli, Check::Sqli),
                scanner(Rfi, Check::Pattern(pattern(r"(?i)^.*(?:https?|ftps?):"))),
                scanner(Lfi, Check::Pattern(pattern(r"^.*(?:home|proc|usr|etc)/"))),
                scanner(Xss, Check::Pattern(pattern(r"^.*<(?s:.*)>"))),
                scanner(
                    PhpCodeInjection,
                    Check::Pattern(pattern(r"^.*(?:echo|system|print|phpinfo)\(.*\)")),
                ),
                scanner(
                    PhpObjectInjection,
                    Check::Pattern(pattern(r"(?:^|[;{}])O:[0-9]+:")),
                ),
                scanner(
                    CmdExec,
                    Check::Pattern(pattern(concat!(
                        r"^.*[^A-Za-z:./]",
                        r"(?:alias|cat|cd|cp|echo|exec|find|for|grep|ifconfig|ls|man|mkdir|netstat",
                        r"|ping|ps|pwd|uname|wget|touch|while)",
                        // An ASCII boundary keeps the fast engine; after a shell word it is the
                        // same as Unicode's, since any non-letter already matched the class.
                        r"(?:[^A-Za-z:./]|(?-u:\b))",
                    ))),
                ),
                scanner(Crlf, Check::Pattern(pattern(r"^.*\r\n"))),
                scanner(
                    XxeInjection,
                    Check::Pattern(pattern(r"^.*<(?:\?xml|!DOCTYPE).*>")),
                ),
                scanner(
                    TemplateInjection,
                    Check::DecodedPattern(pattern(r"^.*(?:\{\{.*\}\}|<%|\s%>)")),
                ),
            ],
        }
    }

    /// The detection for one event: POST fields for a POST, else the path, its query values
    /// and the cookies.
    pub fn detect(&self, event: &Event) -> AttackType {
        let mut best = AttackType::Unknown;
        if event.method.as_deref() == Some("POST") {
            let fields = event.post_data.iter().flat_map(|fields| fields.values());
            for value in fields.flatten() {
                self.scan(value, |_| true, &mut best);
            }
            return best;
        }
        if let Some(path) = &event.path {
            if path.starts_with("/wp-content/") {
                best = AttackType::WpContent;
            } else if path.starts_with('/') {
                best = AttackType::Index;
            }
            for value in query_values(path) {
                self.scan(&value, |_| true, &mut best);
            }
        }
        for value in event.cookies.values().flatten() {
            self.scan(value, |attack| COOKIE_SCANNERS.contains(&attack), &mut best);
        }
        best
    }

    /// Raises `best` to what `value` shows; a scanner that cannot beat `best` is not run.
    fn scan(&self, value: &str, wanted: impl Fn(AttackType) -> bool, best: &mut AttackType) {
        if value.is_empty() {
            return;
        }
        for scanner in &self.scanners {
            if scanner.attack.order() > best.order()
                && wanted(scanner.attack)
                && scanner.fires(value)
            {
                *best = scanner.attack;
            }
        }
    }
}

impl Scanner {
    fn fires(&self, value: &str) -> bool {
        match &self.check {
            Check::Sqli => is_sqli(value),
            Check::Pattern(re) => re.is_match(value),
            Check::DecodedPattern(re) => {
                re.is_match(&percent_decode_str(value).decode_utf8_lossy())
            }
        }
    }
}

/// libinjection's verdict. libinjectionrs is a machine translation that its authors say may
/// still index out of bounds on odd input: a panic there costs this one verdict, not the request.
fn is_sqli(value: &str) -> bool {
    std::panic::catch_unwind(|| libinjectionrs::detect_sqli(value.as_bytes()).is_injection())
        .unwrap_or(false)
}

/// The query values Tanner scans, in query order: it percent-decodes the whole path, protects
/// `&&` and `;` from splitting, and lets yarl cut off a fragment and the query and form-decode
/// each `&`-separated value (so `%2527` reaches the scanners as `'`).
fn query_values(path: &str) -> Vec<String> {
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    let protected: Cow<str> = if decoded.contains([';', '&']) {
        decoded.replace("&&", "%26%26").replace(';', "%3B").into()
    } else {
        decoded
    };
    let without_fragment = protected.split('#').next().unwrap_or_default();
    let Some((_, query)) = without_fragment.split_once('?') else {
        return Vec::new();
    };
    form_urlencoded::parse(query.as_bytes())
        .map(|(_, value)| value.into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snare::event::Event;

    fn get(path: &str) -> Event {
        Event::parse(
            serde_json::json!({ "method": "GET", "path": path })
                .to_string()
                .as_bytes(),
        )
        .unwrap()
    }

    fn detect(path: &str) -> AttackType {
        Detector::new().detect(&get(path))
    }

    /// Every scanner that fires on `value`, in Tanner's order.
    fn scanners_firing(value: &str) -> Vec<AttackType> {
        let detector = Detector::new();
        detector
            .scanners
            .iter()
            .filter(|scanner| scanner.fires(value))
            .map(|scanner| scanner.attack)
            .collect()
    }

    #[test]
    fn libinjection_verdicts_match_the_spec() {
        for sqli in [
            "1 UNION SELECT 1,2,3,4",
            "1' OR '1'='1",
            "bar'UNION SELECT 1,2",
            "admin'--",
        ] {
            assert!(is_sqli(sqli), "{sqli} should be sqli");
        }
        for benign in [
            "1 UNION 1,2,3,4",
            "hello world",
            "/etc/passwd",
            "9c10172f-7ce2-4fb4-b1c6-abc70141db56",
        ] {
            assert!(!is_sqli(benign), "{benign} should not be sqli");
        }
    }

    #[test]
    fn each_pattern_accepts_what_its_spec_row_states() {
        use AttackType::*;
        let cases: &[(&str, &[AttackType])] = &[
            ("http://evil.example/shell.txt", &[Rfi]),
            ("HTTPS:x", &[Rfi]),
            ("ftps:host", &[Rfi]),
            ("../../etc/passwd", &[Lfi]),
            ("/proc/self/environ", &[Lfi]),
            ("a\r\nSet-Cookie: x=1", &[Crlf]),
            ("<script>alert(1)</script>", &[Xss]),
            ("<\n>", &[Xss]),
            ("phpinfo()", &[PhpCodeInjection]),
            ("x;system('id')", &[PhpCodeInjection]),
            ("O:8:\"stdClass\":0:{}", &[PhpObjectInjection]),
            ("a:1:{i:0;O:3:\"Foo\":0:{}}", &[PhpObjectInjection]),
            ("}O:1:", &[PhpObjectInjection]),
            ("id; uname -a", &[CmdExec]),
            ("x|cat", &[CmdExec]),
            ("1 ls.", &[CmdExec]),
            ("{{7*7}}", &[TemplateInjection]),
            ("%7B%7B7*7%7D%7D", &[TemplateInjection]),
            ("<%= 7*7", &[TemplateInjection]),
            ("a ls", &[CmdExec]),
            ("<% x %>", &[Xss, TemplateInjection]),
            ("x %>", &[TemplateInjection]),
            ("<?xml version=\"1.0\"?>", &[Xss, XxeInjection]),
            (
                "<!DOCTYPE foo [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>",
                &[Lfi, Xss, XxeInjection],
            ),
            // Not attacks: the row's rule is not met.
            ("ls", &[]),
            ("cat", &[]),
            ("a lsx", &[]),
            ("a:ls", &[]),
            ("x O:1:", &[]),
            ("O:x:", &[]),
            ("echo(", &[]),
            ("a\nb\r\nc", &[]),
            ("a\n<b>", &[]),
            ("a\nhttp://x", &[]),
            ("{{ x", &[]),
            ("x%>", &[]),
            ("hello world", &[]),
            ("/etc", &[]),
        ];
        for (value, expected) in cases {
            assert_eq!(&scanners_firing(value), expected, "{value:?}");
        }
    }

    #[test]
    fn the_path_gives_the_baseline() {
        assert_eq!(detect("/index.html"), AttackType::Index);
        assert_eq!(detect("/"), AttackType::Index);
        assert_eq!(detect("/wp-content/themes/x.css"), AttackType::WpContent);
        assert_eq!(detect("/wp-content"), AttackType::Index);
        assert_eq!(detect("index.html"), AttackType::Unknown);
        assert_eq!(detect("/?q=hello"), AttackType::Index);
    }

    #[test]
    fn the_highest_order_wins_and_ties_go_to_the_first() {
        assert_eq!(
            detect("/index.html?id=1%20UNION%20SELECT%201"),
            AttackType::Sqli
        );
        assert_eq!(detect("/?a=/etc/passwd&b=http://x"), AttackType::Lfi);
        assert_eq!(detect("/?b=http://x&a=/etc/passwd"), AttackType::Rfi);
        // Within one value rfi (listed first) beats lfi.
        assert_eq!(detect("/?a=http://x/etc/passwd"), AttackType::Rfi);
        assert_eq!(detect("/?a=/etc/passwd&b=<script>"), AttackType::Xss);
        assert_eq!(detect("/?a=<?xml%20x>"), AttackType::Xss);
        assert_eq!(detect("/?a=<%25%20x%20%25>"), AttackType::TemplateInjection);
        assert_eq!(
            detect("/?a=%3Cscript%3E&b={{x}}"),
            AttackType::TemplateInjection
        );
    }

    #[test]
    fn query_values_are_split_as_tanner_splits_them() {
        assert_eq!(query_values("/p?a=1&b=x+y&c"), ["1", "x y", ""]);
        assert_eq!(query_values("/p?cmd=ls&&id;uname"), ["ls&&id;uname"]);
        assert_eq!(query_values("/p?a=%2527&b=2"), ["'", "2"]);
        assert_eq!(query_values("/p?a=1%23frag&b=2"), ["1"]);
        assert_eq!(query_values("/p%3Fa=%FF"), ["\u{fffd}"]);
        assert_eq!(query_values("/p"), Vec::<String>::new());
    }

    #[test]
    fn posts_scan_fields_only_and_cookies_only_for_sqli_and_objects() {
        let event = |json: serde_json::Value| Event::parse(json.to_string().as_bytes()).unwrap();
        let detector = Detector::new();
        let post = event(serde_json::json!({
            "method": "POST", "path": "/?a=<script>",
            "post_data": {"user": "admin'--", "pass": "<b>"}
        }));
        assert_eq!(detector.detect(&post), AttackType::Xss);
        let benign_post = event(serde_json::json!({"method": "POST", "path": "/login"}));
        assert_eq!(detector.detect(&benign_post), AttackType::Unknown);
        let cookie = |value: &str| {
            detector.detect(&event(serde_json::json!({
                "method": "GET", "path": "/", "cookies": {"sess_uuid": null, "c": value}
            })))
        };
        assert_eq!(cookie("1' OR '1'='1"), AttackType::Sqli);
        assert_eq!(
            cookie("O:8:\"stdClass\":0:{}"),
            AttackType::PhpObjectInjection
        );
        assert_eq!(cookie("<script>"), AttackType::Index);
    }
}
