//! The JSON that Python's `json.loads` reads, made into JSON that serde_json reads.
//!
//! SNARE is Python: it serialises whatever its aiohttp request gives it, so an event may hold
//! what strict JSON has no room for. Python reads `NaN`, `Infinity` and `-Infinity`, numbers
//! beyond an f64 (`1e400` is infinity to it), lone UTF-16 surrogate escapes (a header byte that
//! is no UTF-8 reaches flowmon as `"\udcff"`) and containers nested up to its recursion limit.
//! [`to_strict`] rewrites such a text, in one pass and without recursion, so that every body
//! Python accepts is an event:
//!
//! - `NaN`, `Infinity`, `-Infinity` and numbers that overflow become strings of their text;
//! - a lone surrogate escape becomes `\ufffd`, the replacement character;
//! - containers nested deeper than [`KEPT_DEPTH`] become `null` (no field of an event lies
//!   that deep) and deeper than [`MAX_DEPTH`] make the text no JSON, as they make Python fail.
//!
//! Whatever else is not JSON for Python (a stray byte, a control character in a string, a
//! missing quote) is not JSON here either.

/// Containers kept: an event's fields lie at most three deep (the body, `headers`, a value).
pub const KEPT_DEPTH: usize = 32;
/// Python's default recursion limit, which bounds how deep `json.loads` reads.
pub const MAX_DEPTH: usize = 1000;

/// `text` rewritten as strict JSON, or `None` when Python would not read it either.
pub fn to_strict(text: &str) -> Option<String> {
    let mut scanner = Scanner {
        text: text.as_bytes(),
        at: 0,
        out: String::with_capacity(text.len() + 16),
    };
    scanner.document()?;
    Some(scanner.out)
}

/// What the scanner is inside of.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Container {
    Array,
    Object,
}

struct Scanner<'a> {
    text: &'a [u8],
    at: usize,
    out: String,
}

impl<'a> Scanner<'a> {
    fn document(&mut self) -> Option<()> {
        self.skip_space();
        self.value()?;
        self.skip_space();
        (self.at == self.text.len()).then_some(())
    }

    /// One value, containers included, with an explicit stack of the containers it is in.
    fn value(&mut self) -> Option<()> {
        let mut stack: Vec<Container> = Vec::new();
        // Depth from which containers are read but not written; `None` while writing.
        let mut dropped_from: Option<usize> = None;
        loop {
            let writing = dropped_from.is_none();
            match self.peek()? {
                open @ (b'[' | b'{') => {
                    if stack.len() == MAX_DEPTH {
                        return None;
                    }
                    self.at += 1;
                    if writing && stack.len() == KEPT_DEPTH {
                        self.out.push_str("null");
                        dropped_from = Some(stack.len());
                    } else if writing {
                        self.out.push(open as char);
                    }
                    let container = if open == b'[' {
                        Container::Array
                    } else {
                        Container::Object
                    };
                    stack.push(container);
                    self.skip_space();
                    let close = if open == b'[' { b']' } else { b'}' };
                    if self.peek()? == close {
                        self.at += 1;
                        self.close(&mut stack, &mut dropped_from, close);
                    } else {
                        if container == Container::Object {
                            self.key(dropped_from.is_none())?;
                        }
                        continue;
                    }
                }
                b'"' => self.string(writing)?,
                _ => self.scalar(writing)?,
            }
            // After a value: a comma and the next one, or the end of containers.
            loop {
                let Some(&container) = stack.last() else {
                    return Some(());
                };
                self.skip_space();
                let writing = dropped_from.is_none();
                match self.next()? {
                    b',' => {
                        if writing {
                            self.out.push(',');
                        }
                        self.skip_space();
                        if container == Container::Object {
                            self.key(writing)?;
                        }
                        break;
                    }
                    b']' if container == Container::Array => {
                        self.close(&mut stack, &mut dropped_from, b']')
                    }
                    b'}' if container == Container::Object => {
                        self.close(&mut stack, &mut dropped_from, b'}')
                    }
                    _ => return None,
                }
            }
        }
    }

    fn close(&mut self, stack: &mut Vec<Container>, dropped_from: &mut Option<usize>, close: u8) {
        stack.pop();
        match *dropped_from {
            Some(depth) if depth == stack.len() => *dropped_from = None,
            Some(_) => {}
            None => self.out.push(close as char),
        }
    }

    /// An object's key and its colon.
    fn key(&mut self, writing: bool) -> Option<()> {
        if self.peek()? != b'"' {
            return None;
        }
        self.string(writing)?;
        self.skip_space();
        (self.next()? == b':').then_some(())?;
        if writing {
            self.out.push(':');
        }
        self.skip_space();
        Some(())
    }

    /// A string, its escapes checked; lone surrogate escapes become `\ufffd`.
    fn string(&mut self, writing: bool) -> Option<()> {
        self.at += 1;
        let start = self.at;
        let mut copied = start;
        if writing {
            self.out.push('"');
        }
        loop {
            match self.next()? {
                b'"' => break,
                // Python's strict mode refuses control characters in strings, as JSON does.
                0x00..=0x1f => return None,
                b'\\' => match self.next()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        let unit = self.hex4()?;
                        if (0xd800..0xdc00).contains(&unit) && self.low_surrogate_follows() {
                            self.at += 6;
                        } else if (0xd800..0xe000).contains(&unit) {
                            if writing {
                                self.out.push_str(self.slice(copied, self.at - 6));
                                self.out.push_str("\\ufffd");
                            }
                            copied = self.at;
                        }
                    }
                    _ => return None,
                },
                _ => {}
            }
        }
        if writing {
            self.out.push_str(self.slice(copied, self.at));
        }
        Some(())
    }

    /// Whether `\uDC00`-`\uDFFF` comes next.
    fn low_surrogate_follows(&self) -> bool {
        let rest = &self.text[self.at..];
        rest.len() >= 6
            && rest.starts_with(b"\\u")
            && std::str::from_utf8(&rest[2..6])
                .ok()
                .and_then(|hex| u16::from_str_radix(hex, 16).ok())
                .is_some_and(|unit| (0xdc00..0xe000).contains(&unit))
    }

    fn hex4(&mut self) -> Option<u16> {
        let digits = self.text.get(self.at..self.at + 4)?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        self.at += 4;
        u16::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    }

    /// A number or a literal; Python's non-finite literals and overflowing numbers become
    /// strings of their text.
    fn scalar(&mut self, writing: bool) -> Option<()> {
        let start = self.at;
        for literal in ["true", "false", "null", "NaN", "Infinity", "-Infinity"] {
            if self.text[start..].starts_with(literal.as_bytes()) {
                self.at += literal.len();
                if writing {
                    match literal {
                        "true" | "false" | "null" => self.out.push_str(literal),
                        _ => self.quoted(literal),
                    }
                }
                return Some(());
            }
        }
        self.number()?;
        if writing {
            let number = self.slice(start, self.at);
            let finite = number.parse::<f64>().is_ok_and(f64::is_finite);
            if finite {
                self.out.push_str(number);
            } else {
                self.quoted(number);
            }
        }
        Some(())
    }

    /// JSON's number grammar (Python's too): `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][-+]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        self.eat(b'-');
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.') {
            self.peek().filter(u8::is_ascii_digit)?;
            self.digits();
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _ = self.eat(b'+') || self.eat(b'-');
            self.peek().filter(u8::is_ascii_digit)?;
            self.digits();
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn quoted(&mut self, text: &str) {
        self.out.push('"');
        self.out.push_str(text);
        self.out.push('"');
    }

    fn slice(&self, from: usize, to: usize) -> &'a str {
        // The scanner only cuts at ASCII bytes, which are character boundaries.
        let text: &'a [u8] = self.text;
        std::str::from_utf8(&text[from..to]).expect("cut at ASCII bytes")
    }

    fn skip_space(&mut self) {
        while self
            .peek()
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict(text: &str) -> String {
        let strict = to_strict(text).unwrap_or_else(|| panic!("{text:?} refused"));
        serde_json::from_str::<serde_json::Value>(&strict)
            .unwrap_or_else(|err| panic!("{strict:?} is no strict JSON: {err}"));
        strict
    }

    #[test]
    fn strict_json_is_unchanged_but_for_white_space() {
        let text = r#" {"a": [1, -2.5e3, true, false, null, "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"], "b": {}} "#;
        assert_eq!(
            strict(text),
            r#"{"a":[1,-2.5e3,true,false,null,"x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"],"b":{}}"#
        );
    }

    #[test]
    fn what_python_reads_beyond_json_becomes_strict() {
        assert_eq!(
            strict(r#"{"u": "bad\udcffagent", "h": "\ud800", "l": "\udc80x\ud83d"}"#),
            r#"{"u":"bad\ufffdagent","h":"\ufffd","l":"\ufffdx\ufffd"}"#
        );
        assert_eq!(
            strict(r#"[NaN, Infinity, -Infinity, 1e400, -1e400, 12345678901234567890123]"#),
            r#"["NaN","Infinity","-Infinity","1e400","-1e400",12345678901234567890123]"#
        );
    }

    #[test]
    fn deep_containers_are_read_through_up_to_pythons_limit() {
        let deep = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let kept = strict(&format!(r#"{{"a": {}, "b": 1}}"#, deep(200)));
        assert_eq!(
            kept,
            format!(
                r#"{{"a":{}null{},"b":1}}"#,
                "[".repeat(KEPT_DEPTH - 1),
                "]".repeat(KEPT_DEPTH - 1)
            )
        );
        assert!(to_strict(&deep(MAX_DEPTH)).is_some());
        assert_eq!(to_strict(&deep(MAX_DEPTH + 1)), None);
        // Dropped containers are still checked.
        let broken = format!("{}1 2{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(to_strict(&broken), None);
    }

    #[test]
    fn what_python_refuses_is_refused() {
        for text in [
            "",
            "{",
            "nope",
            "{} {}",
            r#"{"a" 1}"#,
            r#"{"a": 1,}"#,
            "[1,]",
            "01",
            "1.",
            "-",
            "1e",
            r#""\x""#,
            r#""\u12g4""#,
            "\"a\u{1}b\"",
            "nan",
            "infinity",
            "[-NaN]",
            r#"{1: 2}"#,
            "'a'",
        ] {
            assert_eq!(to_strict(text), None, "{text:?}");
        }
    }
}
