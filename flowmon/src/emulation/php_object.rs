//! `php_object_injection`: the value unserialized as PHP's `unserialize()` reads it, and the
//! command the object carries run through the command interpreter, as Tanner's sandbox class
//! (whose destructor passes its `insert` property to `system()`) or a gadget chain ending in
//! `system()` would run it. The command is the `insert` property, else the string after one
//! naming an exec function (`system`, `passthru`...), else the first string that reads as a
//! command. A malformed value gets PHP's notice.

use super::{Answer, Machine, budget::Overrun, php, shell};

/// Arrays and objects nested in each other at most.
const MAX_DEPTH: usize = 64;

/// Functions a gadget chain calls with the attacker's command.
const EXEC_FUNCTIONS: &[&str] = &[
    "system",
    "exec",
    "passthru",
    "shell_exec",
    "popen",
    "proc_open",
    "assert",
    "call_user_func",
    "pcntl_exec",
];

/// Words a command starts with.
const COMMAND_WORDS: &[&str] = &[
    "id", "whoami", "uname", "cat", "ls", "pwd", "echo", "wget", "curl", "ping", "nc", "bash",
    "sh", "rm", "touch", "ps", "ifconfig", "ip", "netstat", "hostname", "python", "python3",
    "perl", "php", "cd", "mkdir", "chmod", "find", "head", "tail", "sleep", "nslookup",
];

pub fn emulate(machine: &mut Machine<'_>, value: &str) -> Result<Answer, Overrun> {
    let mut reader = Reader {
        bytes: value.as_bytes(),
        pos: 0,
        strings: Vec::new(),
        budget_steps: 0,
    };
    let parsed = reader.value(0);
    machine.budget.spend(reader.budget_steps)?;
    if parsed.is_none() {
        let notice = php::script_message(
            machine,
            "Notice",
            &format!(
                "unserialize(): Error at offset {} of {} bytes",
                reader.pos.min(value.len()),
                value.len()
            ),
        );
        machine.evidence.code(value, &notice);
        return Ok(Answer::text(notice, false));
    }
    let Some(command) = command_in(&reader.strings) else {
        machine.evidence.code(value, "");
        return Ok(Answer::text(String::new(), false));
    };
    let outcome = shell::run(machine, &command)?;
    machine.evidence.command(&command, &outcome.output);
    Ok(Answer::text(outcome.output, false))
}

/// The command among the strings of the object: (property name, value) pairs in order, names
/// `None` for array items and values.
fn command_in(strings: &[(Option<String>, String)]) -> Option<String> {
    if let Some((_, value)) = strings
        .iter()
        .find(|(name, _)| name.as_deref().is_some_and(|n| n.ends_with("insert")))
    {
        return Some(value.clone());
    }
    let values: Vec<&str> = strings.iter().map(|(_, v)| v.as_str()).collect();
    if let Some(at) = values
        .iter()
        .position(|v| EXEC_FUNCTIONS.contains(&v.to_ascii_lowercase().as_str()))
        && let Some(next) = values[at + 1..].iter().find(|v| !v.is_empty())
    {
        return Some((*next).to_owned());
    }
    values
        .iter()
        .find(|v| {
            let first = v.split([' ', ';', '|', '&']).next().unwrap_or("");
            COMMAND_WORDS.contains(&first.rsplit('/').next().unwrap_or(first))
        })
        .map(|v| (*v).to_owned())
}

/// PHP's serialization format, read strictly as `unserialize()` reads it, collecting the
/// strings.
struct Reader<'v> {
    bytes: &'v [u8],
    pos: usize,
    strings: Vec<(Option<String>, String)>,
    budget_steps: u64,
}

impl Reader<'_> {
    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.bytes.get(self.pos) == Some(&byte)).then(|| self.pos += 1)
    }

    fn number_until(&mut self, end: u8) -> Option<i64> {
        let start = self.pos;
        while self.bytes.get(self.pos).is_some_and(|&b| b != end) {
            self.pos += 1;
        }
        let text = std::str::from_utf8(&self.bytes[start..self.pos]).ok()?;
        let number = text.parse().ok()?;
        self.eat(end)?;
        Some(number)
    }

    /// `LEN:"bytes"`
    fn quoted(&mut self) -> Option<String> {
        let length = usize::try_from(self.number_until(b':')?).ok()?;
        self.eat(b'"')?;
        let end = self.pos.checked_add(length)?;
        let text = self.bytes.get(self.pos..end)?;
        self.pos = end;
        self.eat(b'"')?;
        Some(String::from_utf8_lossy(text).into_owned())
    }

    /// One value; `Some` holds the string it was, if it was one.
    fn value(&mut self, depth: usize) -> Option<Option<String>> {
        self.budget_steps += 1;
        if depth > MAX_DEPTH {
            return None;
        }
        let kind = *self.bytes.get(self.pos)?;
        self.pos += 1;
        if kind == b'N' {
            self.eat(b';')?;
            return Some(None);
        }
        self.eat(b':')?;
        match kind {
            b'b' | b'i' | b'r' | b'R' => {
                self.number_until(b';')?;
                Some(None)
            }
            b'd' => {
                while self.bytes.get(self.pos).is_some_and(|&b| b != b';') {
                    self.pos += 1;
                }
                self.eat(b';')?;
                Some(None)
            }
            b's' => {
                let text = self.quoted()?;
                self.eat(b';')?;
                Some(Some(text))
            }
            b'a' => {
                let count = self.number_until(b':')?;
                self.members(count, depth, false)?;
                Some(None)
            }
            b'O' => {
                self.quoted()?;
                self.eat(b':')?;
                let count = self.number_until(b':')?;
                self.members(count, depth, true)?;
                Some(None)
            }
            b'C' => {
                self.quoted()?;
                self.eat(b':')?;
                let text = self.quoted_braces()?;
                self.strings.push((None, text));
                Some(None)
            }
            _ => None,
        }
    }

    /// `C:...:LEN:{bytes}`
    fn quoted_braces(&mut self) -> Option<String> {
        let length = usize::try_from(self.number_until(b':')?).ok()?;
        self.eat(b'{')?;
        let end = self.pos.checked_add(length)?;
        let text = self.bytes.get(self.pos..end)?;
        self.pos = end;
        self.eat(b'}')?;
        Some(String::from_utf8_lossy(text).into_owned())
    }

    /// `{key;value...}` of an array or object.
    fn members(&mut self, count: i64, depth: usize, object: bool) -> Option<()> {
        if count < 0 || count as usize > self.bytes.len() {
            return None;
        }
        self.eat(b'{')?;
        for _ in 0..count {
            let key = self.value(depth + 1)?;
            if let Some(value) = self.value(depth + 1)? {
                // Private and protected properties carry NUL-framed class names.
                let name = key
                    .filter(|_| object)
                    .map(|k| k.rsplit('\0').next().unwrap_or(&k).to_owned());
                self.strings.push((name, value));
            }
        }
        self.eat(b'}')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(value: &str) -> Option<Vec<(Option<String>, String)>> {
        let mut reader = Reader {
            bytes: value.as_bytes(),
            pos: 0,
            strings: Vec::new(),
            budget_steps: 0,
        };
        reader.value(0)?;
        Some(reader.strings)
    }

    #[test]
    fn the_command_is_found_where_gadgets_put_it() {
        let tanner = r#"O:15:"ObjectInjection":1:{s:6:"insert";s:2:"id";}"#;
        assert_eq!(command_in(&strings(tanner).unwrap()).as_deref(), Some("id"));
        let chain = "O:17:\"Monolog\\Handler\\X\":2:{s:9:\"\0*\0method\";s:6:\"system\";\
                     s:4:\"args\";a:1:{i:0;s:6:\"whoami\";}}";
        assert_eq!(
            command_in(&strings(chain).unwrap()).as_deref(),
            Some("whoami")
        );
        let plain = r#"a:2:{i:0;s:5:"hello";i:1;s:10:"uname -a;x";}"#;
        assert_eq!(
            command_in(&strings(plain).unwrap()).as_deref(),
            Some("uname -a;x")
        );
        assert_eq!(
            command_in(&strings(r#"O:8:"stdClass":0:{}"#).unwrap()),
            None
        );
    }

    #[test]
    fn malformed_values_are_refused_as_php_refuses_them() {
        for bad in [
            r#"O:8:"stdClass":1:{s:3:"abc";}"#,
            r#"s:5:"abc";"#,
            "x O:1:",
            r#"O:8:"stdClass":99999999999:{"#,
        ] {
            assert!(strings(bad).is_none(), "{bad}");
        }
        let deep = "a:1:{i:0;".repeat(100) + "N;" + &"}".repeat(100);
        assert!(strings(&deep).is_none());
    }
}
