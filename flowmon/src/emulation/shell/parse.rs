//! The command lines scanners send, parsed as dash (Debian's `/bin/sh`) parses them: lists
//! (`;`, `&`, newlines), `&&` and `||`, pipelines, subshells and groups, redirections, and
//! words with quotes, escapes, parameters (`$X`, `${X}`, `${X:-y}`), command substitutions
//! (`$(...)`, backticks) and globs. Compound commands (`if`, `for`, `while`, `case`) and
//! functions are refused as a syntax error. Parsing costs a step per token, so hostile input
//! cannot make it run long.

use crate::emulation::budget::{Budget, Overrun};

/// A command line: and-or lists, each to run in turn.
pub type List = Vec<AndOr>;

#[derive(Debug, Clone, PartialEq)]
pub struct AndOr {
    pub first: Pipeline,
    pub rest: Vec<(Connector, Pipeline)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connector {
    And,
    Or,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub negated: bool,
    pub commands: Vec<Command>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Simple {
        assignments: Vec<(String, Word)>,
        words: Vec<Word>,
        redirections: Vec<Redirection>,
    },
    /// `( list )` or `{ list; }`: the same to a simulation with no processes.
    Group {
        list: List,
        redirections: Vec<Redirection>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Redirection {
    /// The descriptor redirected: 1 for `>`, 0 for `<`, unless written.
    pub fd: u32,
    pub kind: RedirectKind,
    pub target: Word,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    /// `>` or `>|`
    Write,
    /// `>>`
    Append,
    /// `<`
    Read,
    /// `>&N` or `<&N`: the target is a descriptor.
    Duplicate,
    /// `&>`: both output and errors (bash; dash reads it as `&` then `>`).
    WriteBoth,
}

/// A word before expansion: the parts written next to each other.
pub type Word = Vec<Part>;

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Text as written; `quoted` text is neither split nor globbed.
    Literal { text: String, quoted: bool },
    /// `$NAME`, `${NAME}`, `${NAME:-default}`...
    Parameter {
        name: String,
        default: Option<Word>,
        quoted: bool,
    },
    /// `$(list)` or `` `list` ``.
    Substitution { list: List, quoted: bool },
}

/// Why a line is no command, in dash's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    #[error("Syntax error: {0} unexpected")]
    Unexpected(String),
    #[error("Syntax error: Unterminated quoted string")]
    Unterminated,
    #[error("Syntax error: end of file unexpected (expecting \"{0}\")")]
    Expecting(&'static str),
    #[error("Syntax error: {0}")]
    Unsupported(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
    #[error(transparent)]
    Overrun(#[from] Overrun),
}

/// Substitutions nested deeper than this are a syntax error.
const MAX_DEPTH: u32 = 16;

/// Parses `text` as a whole command line.
pub fn parse(text: &str, budget: &mut Budget) -> Result<List, ParseError> {
    let mut parser = Parser {
        text,
        pos: 0,
        budget,
        depth: 0,
    };
    let list = parser.list(None)?;
    if parser.pos < text.len() {
        let token = parser.peek_operator().unwrap_or(")").to_owned();
        return Err(SyntaxError::Unexpected(format!("\"{token}\"")).into());
    }
    Ok(list)
}

struct Parser<'t, 'b> {
    text: &'t str,
    pos: usize,
    budget: &'b mut Budget,
    depth: u32,
}

const RESERVED: &[&str] = &[
    "if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac",
    "function",
];

impl Parser<'_, '_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// Skips blanks and a comment (a `#` that starts a word runs to the end of the line).
    fn blanks(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' => self.pos += 1,
                '\\' if self.rest().starts_with("\\\n") => self.pos += 2,
                '#' => {
                    let end = self.rest().find('\n').unwrap_or(self.rest().len());
                    self.pos += end;
                }
                _ => break,
            }
        }
    }

    fn peek_operator(&self) -> Option<&'static str> {
        const OPERATORS: &[&str] = &[
            "&&", "||", ";;", ">>", ">|", ">&", "<&", "&>", "<<", ";", "&", "|", "(", ")", "<",
            ">", "\n",
        ];
        OPERATORS
            .iter()
            .find(|op| self.rest().starts_with(**op))
            .copied()
    }

    /// A list up to `end` (a closing `)`, `}` or backtick) or the end of the text.
    fn list(&mut self, end: Option<char>) -> Result<List, ParseError> {
        let mut list = Vec::new();
        loop {
            self.budget.step()?;
            self.linebreak();
            match self.peek() {
                None => break,
                Some(c) if Some(c) == end => break,
                _ => {}
            }
            list.push(self.and_or(end)?);
            self.blanks();
            if !(self.eat(";") || self.eat("\n") || self.eat_single_ampersand()) {
                break;
            }
        }
        Ok(list)
    }

    fn eat_single_ampersand(&mut self) -> bool {
        if self.rest().starts_with('&')
            && !self.rest().starts_with("&&")
            && !self.rest().starts_with("&>")
        {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Whether the next word is exactly `word`.
    fn at_word(&self, word: &str) -> bool {
        self.rest().strip_prefix(word).is_some_and(|after| {
            after.is_empty() || after.starts_with([' ', '\t', '\n', ';', '&', '|', ')'])
        })
    }

    fn and_or(&mut self, end: Option<char>) -> Result<AndOr, ParseError> {
        let first = self.pipeline(end)?;
        let mut rest = Vec::new();
        loop {
            self.blanks();
            let connector = if self.eat("&&") {
                Connector::And
            } else if self.eat("||") {
                Connector::Or
            } else {
                break;
            };
            self.linebreak();
            rest.push((connector, self.pipeline(end)?));
        }
        Ok(AndOr { first, rest })
    }

    fn linebreak(&mut self) {
        loop {
            self.blanks();
            if !self.eat("\n") {
                break;
            }
        }
    }

    fn pipeline(&mut self, end: Option<char>) -> Result<Pipeline, ParseError> {
        self.blanks();
        let negated = self.at_word("!") && self.eat("!");
        let mut commands = vec![self.command(end)?];
        loop {
            self.blanks();
            if self.rest().starts_with("||") || !self.eat("|") {
                break;
            }
            self.linebreak();
            commands.push(self.command(end)?);
        }
        Ok(Pipeline { negated, commands })
    }

    fn command(&mut self, end: Option<char>) -> Result<Command, ParseError> {
        self.budget.step()?;
        self.blanks();
        if self.eat("(") {
            let list = self.nested(|p| p.list(Some(')')))?;
            if !self.eat(")") {
                return Err(SyntaxError::Expecting(")").into());
            }
            return self.group(list);
        }
        if self.at_word("{") {
            self.pos += 1;
            let list = self.nested(|p| p.list(Some('}')))?;
            self.blanks();
            if !self.eat("}") {
                return Err(SyntaxError::Expecting("}").into());
            }
            return self.group(list);
        }
        let mut assignments = Vec::new();
        let mut words = Vec::new();
        let mut redirections = Vec::new();
        loop {
            self.budget.step()?;
            self.blanks();
            if let Some(redirection) = self.redirection()? {
                redirections.push(redirection);
                continue;
            }
            match self.peek() {
                None => break,
                Some(c) if Some(c) == end && c != '}' => break,
                Some(c) if is_meta(c) => break,
                _ => {}
            }
            if end == Some('}') && words.is_empty() && self.at_word("}") {
                break;
            }
            let start = self.pos;
            let word = self.word(end)?;
            if words.is_empty() {
                let written = &self.text[start..self.pos];
                if let Some(keyword) = RESERVED.iter().find(|k| **k == written) {
                    return Err(SyntaxError::Unsupported(format!(
                        "\"{keyword}\" is not supported here"
                    ))
                    .into());
                }
                if let Some((name, value)) = assignment(written)
                    && let Some(Part::Literal { .. }) = word.first()
                {
                    let mut parser = Parser {
                        text: value,
                        pos: 0,
                        budget: self.budget,
                        depth: self.depth,
                    };
                    let value = parser.word(None)?;
                    assignments.push((name.to_owned(), value));
                    continue;
                }
            }
            words.push(word);
        }
        if words.is_empty() && assignments.is_empty() && redirections.is_empty() {
            let token = match self.peek_operator() {
                Some("\n") | None => return Err(SyntaxError::Expecting("command").into()),
                Some(op) => op,
            };
            return Err(SyntaxError::Unexpected(format!("\"{token}\"")).into());
        }
        Ok(Command::Simple {
            assignments,
            words,
            redirections,
        })
    }

    fn group(&mut self, list: List) -> Result<Command, ParseError> {
        let mut redirections = Vec::new();
        loop {
            self.blanks();
            match self.redirection()? {
                Some(redirection) => redirections.push(redirection),
                None => break,
            }
        }
        Ok(Command::Group { list, redirections })
    }

    fn nested<T>(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<T, ParseError>,
    ) -> Result<T, ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(SyntaxError::Unsupported("nested too deeply".into()).into());
        }
        self.depth += 1;
        let parsed = parse(self);
        self.depth -= 1;
        parsed
    }

    fn redirection(&mut self) -> Result<Option<Redirection>, ParseError> {
        let start = self.pos;
        let digits = self.rest().chars().take_while(char::is_ascii_digit).count();
        let fd: Option<u32> = self.text[start..start + digits].parse().ok();
        self.pos += digits;
        let (kind, default_fd) = if self.eat(">>") {
            (RedirectKind::Append, 1)
        } else if self.eat(">&") {
            (RedirectKind::Duplicate, 1)
        } else if self.eat("<&") {
            (RedirectKind::Duplicate, 0)
        } else if self.eat(">|") || self.eat(">") {
            (RedirectKind::Write, 1)
        } else if digits == 0 && self.eat("&>") {
            (RedirectKind::WriteBoth, 1)
        } else if self.rest().starts_with("<<") {
            return Err(SyntaxError::Unsupported("here-documents are not supported".into()).into());
        } else if self.eat("<") {
            (RedirectKind::Read, 0)
        } else {
            self.pos = start;
            return Ok(None);
        };
        self.blanks();
        match self.peek() {
            Some(c) if !is_meta(c) => {}
            _ => {
                let token = self.peek_operator().unwrap_or("newline");
                let token = if token == "\n" { "newline" } else { token };
                return Err(SyntaxError::Unexpected(format!("\"{token}\"")).into());
            }
        }
        let target = self.word(None)?;
        Ok(Some(Redirection {
            fd: fd.unwrap_or(default_fd),
            kind,
            target,
        }))
    }

    /// A word, up to an unquoted blank or operator (or `end`).
    fn word(&mut self, end: Option<char>) -> Result<Word, ParseError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let flush = |parts: &mut Word, literal: &mut String, quoted| {
            if !literal.is_empty() {
                parts.push(Part::Literal {
                    text: std::mem::take(literal),
                    quoted,
                });
            }
        };
        while let Some(c) = self.peek() {
            if is_meta(c) || c == ' ' || c == '\t' || (Some(c) == end && c != '}') {
                break;
            }
            match c {
                '\'' => {
                    self.pos += 1;
                    flush(&mut parts, &mut literal, false);
                    let close = self.rest().find('\'').ok_or(SyntaxError::Unterminated)?;
                    parts.push(Part::Literal {
                        text: self.rest()[..close].to_owned(),
                        quoted: true,
                    });
                    self.pos += close + 1;
                }
                '"' => {
                    self.pos += 1;
                    flush(&mut parts, &mut literal, false);
                    self.double_quoted(&mut parts)?;
                }
                '\\' => {
                    self.pos += 1;
                    match self.bump() {
                        Some('\n') => {}
                        Some(escaped) => {
                            flush(&mut parts, &mut literal, false);
                            parts.push(Part::Literal {
                                text: escaped.to_string(),
                                quoted: true,
                            });
                        }
                        None => literal.push('\\'),
                    }
                }
                '$' => {
                    self.budget.step()?;
                    flush(&mut parts, &mut literal, false);
                    self.dollar(&mut parts, false)?;
                }
                '`' => {
                    flush(&mut parts, &mut literal, false);
                    self.pos += 1;
                    let list = self.backticks()?;
                    parts.push(Part::Substitution {
                        list,
                        quoted: false,
                    });
                }
                c => {
                    literal.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
        flush(&mut parts, &mut literal, false);
        Ok(parts)
    }

    fn double_quoted(&mut self, parts: &mut Word) -> Result<(), ParseError> {
        let mut literal = String::new();
        let flush = |parts: &mut Word, literal: &mut String| {
            if !literal.is_empty() {
                parts.push(Part::Literal {
                    text: std::mem::take(literal),
                    quoted: true,
                });
            }
        };
        // "" is an empty field, not none.
        parts.push(Part::Literal {
            text: String::new(),
            quoted: true,
        });
        loop {
            match self.bump().ok_or(SyntaxError::Unterminated)? {
                '"' => break,
                '\\' => match self.peek() {
                    Some(c @ ('$' | '`' | '"' | '\\')) => {
                        literal.push(c);
                        self.pos += 1;
                    }
                    Some('\n') => self.pos += 1,
                    _ => literal.push('\\'),
                },
                '$' => {
                    self.pos -= 1;
                    flush(parts, &mut literal);
                    self.dollar(parts, true)?;
                }
                '`' => {
                    flush(parts, &mut literal);
                    let list = self.backticks()?;
                    parts.push(Part::Substitution { list, quoted: true });
                }
                c => literal.push(c),
            }
        }
        flush(parts, &mut literal);
        Ok(())
    }

    /// After a `$`: a parameter, a substitution, or a plain `$`.
    fn dollar(&mut self, parts: &mut Word, quoted: bool) -> Result<(), ParseError> {
        self.pos += 1;
        if self.rest().starts_with("((") {
            return Err(SyntaxError::Unsupported("arithmetic is not supported".into()).into());
        }
        if self.eat("(") {
            let list = self.nested(|p| p.list(Some(')')))?;
            if !self.eat(")") {
                return Err(SyntaxError::Expecting(")").into());
            }
            parts.push(Part::Substitution { list, quoted });
            return Ok(());
        }
        if self.eat("{") {
            let close = self.rest().find('}').ok_or(SyntaxError::Expecting("}"))?;
            let text = self.text;
            let inside = &text[self.pos..self.pos + close];
            self.pos += close + 1;
            let (name, default) = match inside
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || "?$#@!*".contains(c)))
            {
                None => (inside, None),
                Some(at) => {
                    let operator = inside[at..].trim_start_matches(':');
                    let value = operator.get(1..).unwrap_or_default();
                    let mut parser = Parser {
                        text: value,
                        pos: 0,
                        budget: self.budget,
                        depth: self.depth + 1,
                    };
                    let word = parser.word(None)?;
                    // `${X:+y}` and `${X#y}` would need more: the default is what a scanner
                    // means by all of them.
                    (&inside[..at], Some(word))
                }
            };
            parts.push(Part::Parameter {
                name: name.to_owned(),
                default,
                quoted,
            });
            return Ok(());
        }
        let name_len = match self.peek() {
            Some(c) if "?$#@!*-0123456789".contains(c) => 1,
            _ => self
                .rest()
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(self.rest().len()),
        };
        if name_len == 0 {
            parts.push(Part::Literal {
                text: "$".into(),
                quoted,
            });
            return Ok(());
        }
        let name = self.rest()[..name_len].to_owned();
        self.pos += name_len;
        parts.push(Part::Parameter {
            name,
            default: None,
            quoted,
        });
        Ok(())
    }

    /// After an opening backtick: the list up to the closing one, with its escapes undone.
    fn backticks(&mut self) -> Result<List, ParseError> {
        let mut inner = String::new();
        loop {
            match self.bump().ok_or(SyntaxError::Expecting("`"))? {
                '`' => break,
                '\\' => match self.bump() {
                    Some(c @ ('`' | '\\' | '$')) => inner.push(c),
                    Some(c) => {
                        inner.push('\\');
                        inner.push(c);
                    }
                    None => return Err(SyntaxError::Expecting("`").into()),
                },
                c => inner.push(c),
            }
        }
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            return Err(SyntaxError::Unsupported("nested too deeply".into()).into());
        }
        let mut parser = Parser {
            text: &inner,
            pos: 0,
            budget: self.budget,
            depth,
        };
        let list = parser.list(None)?;
        if parser.pos < inner.len() {
            return Err(SyntaxError::Unexpected("\")\"".into()).into());
        }
        Ok(list)
    }
}

/// Characters that end a word unquoted.
fn is_meta(c: char) -> bool {
    matches!(c, ';' | '&' | '|' | '(' | ')' | '<' | '>' | '\n')
}

/// `NAME=value` as written.
fn assignment(written: &str) -> Option<(&str, &str)> {
    let (name, value) = written.split_once('=')?;
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some((name, value))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse_ok(text: &str) -> List {
        parse(text, &mut Budget::new(Duration::from_secs(1), 100_000))
            .unwrap_or_else(|err| panic!("{text:?}: {err}"))
    }

    fn syntax(text: &str) -> String {
        match parse(text, &mut Budget::new(Duration::from_secs(1), 100_000)) {
            Err(ParseError::Syntax(err)) => err.to_string(),
            other => panic!("{text:?} parsed: {other:?}"),
        }
    }

    fn lit(text: &str) -> Part {
        Part::Literal {
            text: text.into(),
            quoted: false,
        }
    }

    fn simple(words: &[&str]) -> Command {
        Command::Simple {
            assignments: vec![],
            words: words.iter().map(|w| vec![lit(w)]).collect(),
            redirections: vec![],
        }
    }

    #[test]
    fn lists_pipelines_and_connectors() {
        let list = parse_ok("id; uname -a && cat /etc/passwd | head -n 1 || echo x &\nls");
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].first.commands, [simple(&["id"])]);
        assert_eq!(list[1].first.commands, [simple(&["uname", "-a"])]);
        assert_eq!(list[1].rest[0].0, Connector::And);
        assert_eq!(
            list[1].rest[0].1.commands,
            [
                simple(&["cat", "/etc/passwd"]),
                simple(&["head", "-n", "1"])
            ]
        );
        assert_eq!(list[1].rest[1].0, Connector::Or);
        assert_eq!(list[2].first.commands, [simple(&["ls"])]);
    }

    #[test]
    fn quotes_escapes_parameters_and_substitutions() {
        let list = parse_ok(r#"echo 'a b' "c $HOME ${X:-d}" \; $(id -u) `whoami`"#);
        let Command::Simple { words, .. } = &list[0].first.commands[0] else {
            panic!()
        };
        assert_eq!(words.len(), 6);
        assert_eq!(
            words[1],
            [Part::Literal {
                text: "a b".into(),
                quoted: true
            }]
        );
        assert!(
            matches!(&words[2][2], Part::Parameter { name, quoted: true, .. } if name == "HOME")
        );
        assert!(
            matches!(&words[2][4], Part::Parameter { name, default: Some(_), .. } if name == "X")
        );
        assert_eq!(
            words[3],
            [Part::Literal {
                text: ";".into(),
                quoted: true
            }]
        );
        assert!(
            matches!(&words[4][0], Part::Substitution { list, .. } if list[0].first.commands == [simple(&["id", "-u"])])
        );
        assert!(
            matches!(&words[5][0], Part::Substitution { list, .. } if list[0].first.commands == [simple(&["whoami"])])
        );
        let list = parse_ok("cat${IFS}/etc/passwd");
        let Command::Simple { words, .. } = &list[0].first.commands[0] else {
            panic!()
        };
        assert_eq!(words.len(), 1);
    }

    #[test]
    fn redirections_and_assignments() {
        let list = parse_ok("X=1 echo hi >/tmp/a 2>&1 2>>/tmp/e </dev/null");
        let Command::Simple {
            assignments,
            redirections,
            ..
        } = &list[0].first.commands[0]
        else {
            panic!()
        };
        assert_eq!(assignments[0].0, "X");
        let kinds: Vec<(u32, RedirectKind)> = redirections.iter().map(|r| (r.fd, r.kind)).collect();
        assert_eq!(
            kinds,
            [
                (1, RedirectKind::Write),
                (2, RedirectKind::Duplicate),
                (2, RedirectKind::Append),
                (0, RedirectKind::Read)
            ]
        );
        let list = parse_ok("(cd /tmp; ls) > /tmp/l; { id; }");
        assert!(
            matches!(&list[0].first.commands[0], Command::Group { list, redirections } if list.len() == 2 && redirections.len() == 1)
        );
        assert!(
            matches!(&list[1].first.commands[0], Command::Group { list, .. } if list.len() == 1)
        );
    }

    #[test]
    fn errors_read_as_dash_words_them() {
        assert_eq!(syntax(";id"), "Syntax error: \";\" unexpected");
        assert_eq!(
            syntax("echo 'x"),
            "Syntax error: Unterminated quoted string"
        );
        assert_eq!(
            syntax("echo $(id"),
            "Syntax error: end of file unexpected (expecting \")\")"
        );
        assert_eq!(syntax("ls >"), "Syntax error: \"newline\" unexpected");
        assert_eq!(
            syntax("id |"),
            "Syntax error: end of file unexpected (expecting \"command\")"
        );
        assert!(syntax("for i in 1; do id; done").contains("\"for\""));
        let deep = format!("{}id{}", "$(".repeat(40), ")".repeat(40));
        assert!(syntax(&deep).contains("nested too deeply"));
    }

    #[test]
    fn hostile_input_runs_out_of_budget_not_of_time() {
        let text = "a|".repeat(100_000) + "b";
        let mut budget = Budget::new(Duration::from_secs(5), 10_000);
        assert!(matches!(
            parse(&text, &mut budget),
            Err(ParseError::Overrun(_))
        ));
    }
}
