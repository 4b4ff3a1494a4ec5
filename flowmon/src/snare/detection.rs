//! Attack detection as Tanner 0.6.0 does it (spec section 4): one detection per request, the
//! highest order found in the values Tanner scans, ties going to the first value and, within a
//! value, to the earliest scanner.
//!
//! Tanner's patterns are Python `re.match` patterns: anchored at the start, `.` stopping at a
//! newline. They are kept as written (Rust's `.` also stops at `\n`), with a `^` for the anchor,
//! except where the spec words a rule differently: `cmd_exec` excludes letters (Python's `A-z`
//! also took ``[\]^_` ``), and `php_object_injection` finds `O:<n>:` after any `;`, `{` or `}`.
//!
//! A detection carries the parameters that triggered it, for the emulator (Tanner's
//! `attack_params` of the winning scanner): the first one, or every one for `xss`.
//!
//! Where Tanner's rules find no attack (the request would be `index`, `wp-content` or
//! `unknown`), flowmon's additions look at the same values for what scanners send most and
//! Tanner misses: commands after a shell separator (`;id`, `|whoami`, `$(id)`, backticks,
//! `${IFS}`) and template expressions (`${7*7}`, `#{7*7}`, `{% ... %}`). Whatever Tanner's rules
//! detect stays detected the same (`docs/snare.md`).

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::event::Event;
use crate::emulation::{Kind, Param};

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

    /// The attack type SNARE and Tanner's readers know by `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        use serde::{
            Deserialize as _,
            de::value::{Error, StrDeserializer},
        };
        Self::deserialize(StrDeserializer::<Error>::new(name)).ok()
    }

    /// The emulator that answers this attack type, if it is an attack.
    pub const fn emulator(self) -> Option<Kind> {
        use AttackType::*;
        Some(match self {
            Unknown | Index | WpContent => return None,
            Sqli => Kind::Sqli,
            Rfi => Kind::Rfi,
            Lfi => Kind::Lfi,
            Crlf => Kind::Crlf,
            Xss => Kind::Xss,
            PhpCodeInjection => Kind::PhpCodeInjection,
            PhpObjectInjection => Kind::PhpObjectInjection,
            CmdExec => Kind::CmdExec,
            XxeInjection => Kind::XxeInjection,
            TemplateInjection => Kind::TemplateInjection,
        })
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

/// The shell words flowmon's `cmd_exec` addition looks for after a separator.
const SHELL_WORDS: &str = "id|whoami|uname|cat|ls|pwd|echo|printf|ps|ifconfig|ip|netstat|ss|\
    wget|curl|nc|ncat|netcat|telnet|bash|sh|dash|busybox|ping|sleep|nslookup|dig|host|python3?|\
    perl|php|ruby|chmod|rm|touch|mkdir|cd|find|grep|head|tail|env|printenv|hostname|w|who|\
    uptime|date|expr|timeout|tftp|ftpget|base64|crontab|sudo|su|kill|type|dir|ver|systeminfo|\
    powershell|cmd";

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

/// The detection of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detection {
    pub attack: AttackType,
    /// The parameters that triggered it, in request order (empty for no attack): the first
    /// to reach the winning order, or, for `xss`, every one the `xss` scanner fires on. For
    /// `template_injection`, values are percent-decoded once more, as Tanner's emulator did.
    pub params: Vec<Param>,
}

impl Detection {
    fn none(attack: AttackType) -> Self {
        Self {
            attack,
            params: Vec::new(),
        }
    }
}

/// The ten scanners, compiled once, and flowmon's additions.
pub struct Detector {
    /// In Tanner's order, which breaks ties within a value.
    scanners: [Scanner; 10],
    /// Looked at only where the ten find no attack.
    additions: [Scanner; 2],
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
            additions: [
                scanner(
                    TemplateInjection,
                    // An expression, not a plain name such as `${IFS}`.
                    Check::DecodedPattern(pattern(
                        r"[$#*]\{[^{}]*[^A-Za-z0-9_{}\s][^{}]*\}|\{%.*%\}",
                    )),
                ),
                scanner(
                    CmdExec,
                    Check::Pattern(pattern(&format!(
                        r"(?:[;|&\n\r`]|\$\()\s*(?:/(?:usr/)?s?bin/)?(?:{SHELL_WORDS})(?:$|[\s;|&`)<>'\x22])|\$\{{IFS\}}"
                    ))),
                ),
            ],
        }
    }

    /// The detection for one event: POST fields for a POST, else the path, its query values
    /// and the cookies.
    pub fn detect(&self, event: &Event) -> Detection {
        let query;
        let (baseline, scanned) = if event.method.as_deref() == Some("POST") {
            let posted = event.post_data.as_ref().map(present).unwrap_or_default();
            let found = self.scan(&self.scanners, &posted, |_| true);
            (
                found.unwrap_or(Detection::none(AttackType::Unknown)),
                posted,
            )
        } else {
            let path = event.path.as_deref().unwrap_or_default();
            let mut best = Detection::none(if path.starts_with("/wp-content/") {
                AttackType::WpContent
            } else if path.starts_with('/') {
                AttackType::Index
            } else {
                AttackType::Unknown
            });
            query = query_params(path);
            let query: Vec<(&str, &str)> = query
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            if let Some(found) = self.scan(&self.scanners, &query, |_| true)
                && found.attack.order() > best.attack.order()
            {
                best = found;
            }
            let cookies = present(&event.cookies);
            if let Some(found) =
                self.scan(&self.scanners, &cookies, |a| COOKIE_SCANNERS.contains(&a))
                && found.attack.order() > best.attack.order()
            {
                best = found;
            }
            (best, query)
        };
        if baseline.attack.order() > AttackType::Index.order() {
            return baseline;
        }
        self.scan(&self.additions, &scanned, |_| true)
            .unwrap_or(baseline)
    }

    /// The winner among `params` (name, value) of the `wanted` scanners, with the parameters
    /// that triggered it; `None` when nothing fires.
    fn scan(
        &self,
        scanners: &[Scanner],
        params: &[(&str, &str)],
        wanted: impl Fn(AttackType) -> bool,
    ) -> Option<Detection> {
        let mut best: Option<(&Scanner, usize)> = None;
        for (at, (_, value)) in params.iter().enumerate() {
            if value.is_empty() {
                continue;
            }
            for scanner in scanners {
                // A scanner that cannot beat the best so far is not run.
                let order = best.map_or(0, |(best, _)| best.attack.order());
                if scanner.attack.order() > order && wanted(scanner.attack) && scanner.fires(value)
                {
                    best = Some((scanner, at));
                }
            }
        }
        let (scanner, at) = best?;
        let triggered = |&(name, value): &(&str, &str)| Param {
            name: name.to_owned(),
            value: match scanner.check {
                Check::DecodedPattern(_) => {
                    percent_decode_str(value).decode_utf8_lossy().into_owned()
                }
                _ => value.to_owned(),
            },
        };
        let params = if scanner.attack == AttackType::Xss {
            params
                .iter()
                .filter(|(_, value)| !value.is_empty() && scanner.fires(value))
                .map(triggered)
                .collect()
        } else {
            vec![triggered(&params[at])]
        };
        Some(Detection {
            attack: scanner.attack,
            params,
        })
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

/// The query parameters Tanner scans, in query order: it percent-decodes the whole path,
/// protects `&&` and `;` from splitting, and lets yarl cut off a fragment and the query and
/// form-decode each `&`-separated name and value (so `%2527` reaches the scanners as `'`).
/// The fields that have a value, as (name, value).
fn present(fields: &super::event::Fields) -> Vec<(&str, &str)> {
    fields
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.as_deref()?)))
        .collect()
}

fn query_params(path: &str) -> Vec<(String, String)> {
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
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
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
        Detector::new().detect(&get(path)).attack
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
        let values = |path| -> Vec<String> {
            query_params(path)
                .into_iter()
                .map(|(_, value)| value)
                .collect()
        };
        assert_eq!(values("/p?a=1&b=x+y&c"), ["1", "x y", ""]);
        assert_eq!(values("/p?cmd=ls&&id;uname"), ["ls&&id;uname"]);
        assert_eq!(values("/p?a=%2527&b=2"), ["'", "2"]);
        assert_eq!(values("/p?a=1%23frag&b=2"), ["1"]);
        assert_eq!(values("/p%3Fa=%FF"), ["\u{fffd}"]);
        assert_eq!(values("/p"), Vec::<String>::new());
        assert_eq!(
            query_params("/p?na%2Bme=v&x+y=1"),
            [
                ("na me".to_owned(), "v".to_owned()),
                ("x y".to_owned(), "1".to_owned())
            ]
        );
    }

    fn param(name: &str, value: &str) -> Param {
        Param {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn a_detection_names_the_parameters_that_triggered_it() {
        let detector = Detector::new();
        let detected = |path| detector.detect(&get(path));
        assert_eq!(
            detected("/index.php?a=1&id=1%20UNION%20SELECT%201&b=2'--"),
            Detection {
                attack: AttackType::Sqli,
                params: vec![param("id", "1 UNION SELECT 1")],
            }
        );
        // xss joins every value its scanner fires on, even one that another scanner won.
        assert_eq!(
            detected("/s?q=%3Cb%3E&x=1&r=%3C%3Fxml%20a%3E&t=plain").params,
            [param("q", "<b>"), param("r", "<?xml a>")]
        );
        assert_eq!(
            detected("/t?n=%257B%257B7*7%257D%257D").params,
            [param("n", "{{7*7}}")]
        );
        assert_eq!(detected("/").params, []);
        let cookie = detector.detect(&Event::parse(
            serde_json::json!({
                "method": "GET", "path": "/", "cookies": {"sess_uuid": null, "c": "1' OR '1'='1"}
            })
            .to_string()
            .as_bytes(),
        ).unwrap());
        assert_eq!(
            (cookie.attack, cookie.params),
            (AttackType::Sqli, vec![param("c", "1' OR '1'='1")])
        );
    }

    #[test]
    fn flowmons_additions_find_what_tanners_rules_miss() {
        for (value, attack) in [
            (";id", AttackType::CmdExec),
            ("|whoami", AttackType::CmdExec),
            ("127.0.0.1||id", AttackType::CmdExec),
            ("$(id)", AttackType::CmdExec),
            ("`id`", AttackType::CmdExec),
            ("x%0Aid", AttackType::CmdExec),
            (";/bin/sh -c id", AttackType::CmdExec),
            ("cat${IFS}x", AttackType::CmdExec),
            ("${7*7}", AttackType::TemplateInjection),
            ("#{7*7}", AttackType::TemplateInjection),
            ("{%25 print 7*7 %25}", AttackType::TemplateInjection),
            (
                "${jndi:ldap://198.51.100.7/a}",
                AttackType::TemplateInjection,
            ),
            // Not attacks.
            ("id", AttackType::Index),
            ("ls", AttackType::Index),
            ("cat", AttackType::Index),
            ("a;b", AttackType::Index),
            ("rock|shore", AttackType::Index),
            ("price: ${price}", AttackType::Index),
        ] {
            // A `#` reaches a value only encoded twice: Tanner decodes the whole path first, and
            // a bare `#` starts the fragment.
            let path = format!(
                "/p?v={}",
                value
                    .replace(' ', "%20")
                    .replace('#', "%2523")
                    .replace('`', "%60")
            );
            assert_eq!(detect(&path), attack, "{value}");
        }
        // What Tanner detects stays as Tanner detects it.
        assert_eq!(detect("/p?f=/etc/passwd&c=;id"), AttackType::Lfi);
        assert_eq!(detect("/p?c=http://x/;id"), AttackType::Rfi);
        let post = Event::parse(
            serde_json::json!({"method": "POST", "path": "/", "post_data": {"host": "1;whoami"}})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(Detector::new().detect(&post).attack, AttackType::CmdExec);
    }

    #[test]
    fn posts_scan_fields_only_and_cookies_only_for_sqli_and_objects() {
        let event = |json: serde_json::Value| Event::parse(json.to_string().as_bytes()).unwrap();
        let detector = Detector::new();
        let post = event(serde_json::json!({
            "method": "POST", "path": "/?a=<script>",
            "post_data": {"user": "admin'--", "pass": "<b>"}
        }));
        assert_eq!(detector.detect(&post).attack, AttackType::Xss);
        let benign_post = event(serde_json::json!({"method": "POST", "path": "/login"}));
        assert_eq!(detector.detect(&benign_post).attack, AttackType::Unknown);
        let cookie = |value: &str| {
            detector
                .detect(&event(serde_json::json!({
                    "method": "GET", "path": "/", "cookies": {"sess_uuid": null, "c": value}
                })))
                .attack
        };
        assert_eq!(cookie("1' OR '1'='1"), AttackType::Sqli);
        assert_eq!(
            cookie("O:8:\"stdClass\":0:{}"),
            AttackType::PhpObjectInjection
        );
        assert_eq!(cookie("<script>"), AttackType::Index);
    }
}
