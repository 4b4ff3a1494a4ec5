//! A command interpreter over the simulated host: dash's grammar ([`parse`]) and the commands
//! scanners use ([`commands`]), answered from the host's files, users, processes and network,
//! with writes going to the session's own overlay. No process is started and nothing is
//! fetched: `wget`, `curl`, `nc` and `/dev/tcp` are recorded and fail as on a host whose
//! outbound traffic is blocked.

mod commands;
mod parse;

use std::collections::BTreeMap;

use parse::{
    Command, Connector, List, ParseError, Part, Pipeline, RedirectKind, Redirection, Word,
};

use super::{Machine, budget::Overrun, fs};

/// Nested shells (`sh -c`, scripts, `system()` from PHP) at most.
const MAX_NESTING: u32 = 4;

/// What a command line printed and its exit status. PHP's `system()` shows the standard
/// output only; the errors went to Apache's log (unless the attacker wrote `2>&1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub output: String,
    pub errors: String,
    pub status: i32,
}

/// Runs `line` as the web application's `system($line)` would, with `sh -c`. A leading
/// operator (`;id`, `|id`, `&&id`) ends the application's own command: the rest runs.
pub fn run(machine: &mut Machine<'_>, line: &str) -> Result<Outcome, Overrun> {
    run_with_input(machine, line, "")
}

fn run_with_input(machine: &mut Machine<'_>, line: &str, stdin: &str) -> Result<Outcome, Overrun> {
    let line = after_leading_operator(line);
    let mut shell = Shell::new(machine, line);
    let mut io = Io::default();
    let status = match parse::parse(line, &mut shell.machine.budget) {
        Ok(list) => shell.run_list(&list, stdin, &mut io)?,
        Err(ParseError::Syntax(err)) => {
            io.err.push_str(&format!("sh: 1: {err}\n"));
            2
        }
        Err(ParseError::Overrun(overrun)) => return Err(overrun),
    };
    let cap = shell.machine.max_output;
    Ok(Outcome {
        output: super::budget::cut(io.out, cap),
        errors: super::budget::cut(io.err, cap),
        status,
    })
}

fn after_leading_operator(line: &str) -> &str {
    let trimmed = line.trim_start_matches([' ', '\t', '\n', '\r']);
    for op in ["&&", "||", ";", "|", "&", "\n"] {
        if let Some(rest) = trimmed.strip_prefix(op) {
            return rest;
        }
    }
    trimmed
}

/// What a command wrote to its standard output and its errors.
#[derive(Debug, Default)]
pub(super) struct Io {
    pub out: String,
    pub err: String,
}

/// Where a descriptor goes.
#[derive(Clone, Debug, PartialEq)]
enum Sink {
    Out,
    Err,
    Null,
    File(String),
}

pub(super) struct Shell<'m, 'a> {
    pub machine: &'m mut Machine<'a>,
    pub cwd: String,
    pub vars: BTreeMap<String, String>,
    pub status: i32,
    /// `exit` ran: nothing more runs.
    pub exited: bool,
    pub next_pid: u32,
    /// The command line this shell runs, as `ps` shows it.
    pub line: String,
}

impl<'m, 'a> Shell<'m, 'a> {
    fn new(machine: &'m mut Machine<'a>, line: &str) -> Self {
        let host = &machine.sim.host;
        let mut vars: BTreeMap<String, String> = host.environment().into_iter().collect();
        vars.insert("IFS".into(), " \t\n".into());
        vars.insert("PPID".into(), "1".into());
        let cwd = fs::normalise("/", &host.profile.web_root);
        vars.insert("PWD".into(), cwd.clone());
        let up = machine.now - host.boot_time(machine.now);
        let next_pid = 20_000 + (up / 7.0) as u32 % 30_000 + machine.depth * 3;
        Self {
            machine,
            cwd,
            vars,
            status: 0,
            exited: false,
            next_pid,
            line: line.to_owned(),
        }
    }

    pub fn files(&mut self) -> &mut fs::Files<'a> {
        &mut self.machine.files
    }

    /// `path` made absolute against the working directory.
    pub fn absolute(&self, path: &str) -> String {
        fs::normalise(&self.cwd, path)
    }

    fn run_list(&mut self, list: &List, stdin: &str, io: &mut Io) -> Result<i32, Overrun> {
        for and_or in list {
            if self.exited {
                break;
            }
            let mut status = self.run_pipeline(&and_or.first, stdin, io)?;
            for (connector, pipeline) in &and_or.rest {
                if self.exited {
                    break;
                }
                let runs = match connector {
                    Connector::And => status == 0,
                    Connector::Or => status != 0,
                };
                if runs {
                    status = self.run_pipeline(pipeline, stdin, io)?;
                }
            }
            self.status = status;
        }
        Ok(self.status)
    }

    fn run_pipeline(
        &mut self,
        pipeline: &Pipeline,
        stdin: &str,
        io: &mut Io,
    ) -> Result<i32, Overrun> {
        let mut input = stdin.to_owned();
        let mut status = 0;
        let last = pipeline.commands.len() - 1;
        for (i, command) in pipeline.commands.iter().enumerate() {
            let mut stage = Io::default();
            status = self.run_command(command, &input, &mut stage)?;
            io.err.push_str(&stage.err);
            if i == last {
                io.out.push_str(&stage.out);
            } else {
                input = stage.out;
            }
            // Every stage of a pipeline runs, even after an `exit` in one of them.
            if i != last {
                self.exited = false;
            }
        }
        let status = if pipeline.negated {
            i32::from(status == 0)
        } else {
            status
        };
        self.status = status;
        Ok(status)
    }

    fn run_command(&mut self, command: &Command, stdin: &str, io: &mut Io) -> Result<i32, Overrun> {
        self.machine.budget.step()?;
        let mut errors = String::new();
        let (words, assignments, redirections) = match command {
            Command::Simple {
                assignments,
                words,
                redirections,
            } => (words.as_slice(), assignments.as_slice(), redirections),
            Command::Group { redirections, .. } => (&[][..], &[][..], redirections),
        };
        let Some((sinks, input)) = self.open(redirections, stdin, &mut errors)? else {
            io.err.push_str(&errors);
            return Ok(2);
        };
        let mut own = Io::default();
        let status = match command {
            Command::Group { list, .. } => {
                let cwd = self.cwd.clone();
                let status = self.run_list(list, &input, &mut own)?;
                self.cwd = cwd;
                status
            }
            Command::Simple { .. } => {
                let mut argv = Vec::new();
                for word in words {
                    argv.extend(self.expand(word, &mut errors)?);
                }
                let mut values = Vec::new();
                for (name, value) in assignments {
                    values.push((name.clone(), self.expand_joined(value, &mut errors)?));
                }
                own.err.push_str(&errors);
                if argv.is_empty() {
                    self.vars.extend(values);
                    0
                } else {
                    let saved: Vec<(String, Option<String>)> = values
                        .iter()
                        .map(|(name, _)| (name.clone(), self.vars.get(name).cloned()))
                        .collect();
                    self.vars.extend(values);
                    let status = commands::execute(self, &argv, &input, &mut own)?;
                    for (name, old) in saved {
                        match old {
                            Some(value) => self.vars.insert(name, value),
                            None => self.vars.remove(&name),
                        };
                    }
                    status
                }
            }
        };
        self.deliver(&sinks[1], own.out, io);
        self.deliver(&sinks[2], own.err, io);
        Ok(status)
    }

    /// Sends what a command wrote to `sink`.
    fn deliver(&mut self, sink: &Sink, text: String, io: &mut Io) {
        if text.is_empty() {
            return;
        }
        match sink {
            Sink::Out => push_capped(&mut io.out, &text, self.machine.max_output),
            Sink::Err => push_capped(&mut io.err, &text, self.machine.max_output),
            Sink::Null => {}
            Sink::File(path) => {
                if let Err(err) = self.machine.files.write(path, &text, true) {
                    io.err
                        .push_str(&format!("sh: 1: cannot create {path}: {err}\n"));
                }
            }
        }
    }

    /// Applies `redirections` in order, as dash opens them before the command runs: the
    /// sinks of descriptors 0 to 2 and the standard input, or `None` after an error.
    fn open(
        &mut self,
        redirections: &[Redirection],
        stdin: &str,
        errors: &mut String,
    ) -> Result<Option<([Sink; 3], String)>, Overrun> {
        let mut sinks = [Sink::Null, Sink::Out, Sink::Err];
        let mut input = stdin.to_owned();
        for redirection in redirections {
            let target = self.expand_joined(&redirection.target, errors)?;
            let fd = redirection.fd as usize;
            if fd > 2 {
                continue;
            }
            match redirection.kind {
                RedirectKind::Duplicate => match target.as_str() {
                    "0" | "1" | "2" => {
                        let from: usize = target.parse().unwrap_or(1);
                        sinks[fd] = sinks[from].clone();
                    }
                    "-" => sinks[fd] = Sink::Null,
                    _ => {
                        errors.push_str("sh: 1: Syntax error: Bad fd number\n");
                        return Ok(None);
                    }
                },
                RedirectKind::Read => match self.read_file(&target) {
                    Ok(text) => input = text,
                    Err(err) => {
                        errors.push_str(&format!("sh: 1: cannot open {target}: {err}\n"));
                        return Ok(None);
                    }
                },
                RedirectKind::Write | RedirectKind::Append | RedirectKind::WriteBoth => {
                    let sink = match self
                        .output_sink(&target, redirection.kind == RedirectKind::Append)
                    {
                        Ok(sink) => sink,
                        Err(message) => {
                            errors.push_str(&format!("sh: 1: cannot create {target}: {message}\n"));
                            return Ok(None);
                        }
                    };
                    if redirection.kind == RedirectKind::WriteBoth {
                        sinks[2] = sink.clone();
                        sinks[1] = sink;
                    } else {
                        sinks[fd] = sink;
                    }
                }
            }
        }
        Ok(Some((sinks, input)))
    }

    /// The sink for `> target`, the file emptied unless appended to.
    fn output_sink(&mut self, target: &str, append: bool) -> Result<Sink, String> {
        match target {
            "/dev/null" => return Ok(Sink::Null),
            "/dev/stdout" => return Ok(Sink::Out),
            "/dev/stderr" => return Ok(Sink::Err),
            _ => {}
        }
        if let Some(endpoint) = target
            .strip_prefix("/dev/tcp/")
            .or_else(|| target.strip_prefix("/dev/udp/"))
        {
            let scheme = if target.starts_with("/dev/tcp/") {
                "tcp"
            } else {
                "udp"
            };
            let url = match endpoint.split_once('/') {
                Some((host, port)) => format!("{scheme}://{host}:{port}"),
                None => format!("{scheme}://{endpoint}"),
            };
            self.machine.evidence.url(&url);
            return Err("Directory nonexistent".into());
        }
        let path = self.absolute(target);
        self.machine
            .files
            .write(&path, "", append)
            .map_err(|err| match err {
                fs::FsError::NotFound => "Directory nonexistent".to_owned(),
                err => err.to_string(),
            })?;
        self.machine.evidence.file_written(&path);
        Ok(Sink::File(path))
    }

    /// The text of the file at `path`, recorded as read.
    pub fn read_file(&mut self, path: &str) -> Result<String, fs::FsError> {
        let path = self.absolute(path);
        let text = self.machine.files.read(&path)?;
        self.machine.evidence.file_read(&path);
        Ok(text)
    }

    /// The fields `word` expands to: parameters and substitutions, then field splitting of
    /// what was unquoted, then globs.
    fn expand(&mut self, word: &Word, errors: &mut String) -> Result<Vec<String>, Overrun> {
        let mut fields: Vec<Field> = Vec::new();
        let mut current = Field::default();
        for part in word {
            self.machine.budget.step()?;
            match part {
                Part::Literal { text, quoted } => {
                    current.text.push_str(text);
                    current.kept |= *quoted;
                    current.glob |= !quoted && text.contains(['*', '?', '[']);
                }
                Part::Parameter { quoted, .. } | Part::Substitution { quoted, .. } => {
                    let value = self.expand_part(part, errors)?;
                    if *quoted {
                        current.text.push_str(&value);
                        current.kept = true;
                        continue;
                    }
                    let ifs = self.vars.get("IFS").cloned().unwrap_or_default();
                    let is_ifs = |c: char| ifs.contains(c);
                    let pieces: Vec<&str> = value.split(is_ifs).filter(|p| !p.is_empty()).collect();
                    if value.starts_with(is_ifs) && (!current.text.is_empty() || current.kept) {
                        fields.push(std::mem::take(&mut current));
                    }
                    for (i, piece) in pieces.iter().enumerate() {
                        if i > 0 {
                            fields.push(std::mem::take(&mut current));
                        }
                        current.text.push_str(piece);
                    }
                    if value.ends_with(is_ifs) && !pieces.is_empty() {
                        fields.push(std::mem::take(&mut current));
                    }
                }
            }
        }
        if !current.text.is_empty() || current.kept {
            fields.push(current);
        }
        let mut out = Vec::new();
        for field in fields {
            if field.glob
                && let Some(matches) = self.glob(&field.text)?
            {
                out.extend(matches);
                continue;
            }
            out.push(field.text);
        }
        Ok(out)
    }

    /// `word` expanded to one string, as for a redirection target or an assignment.
    fn expand_joined(&mut self, word: &Word, errors: &mut String) -> Result<String, Overrun> {
        let mut text = String::new();
        for part in word {
            match part {
                Part::Literal { text: literal, .. } => text.push_str(literal),
                _ => text.push_str(&self.expand_part(part, errors)?),
            }
        }
        Ok(text)
    }

    fn expand_part(&mut self, part: &Part, errors: &mut String) -> Result<String, Overrun> {
        Ok(match part {
            Part::Literal { text, .. } => text.clone(),
            Part::Parameter { name, default, .. } => {
                let value = self.parameter(name);
                match default {
                    Some(default) if value.is_empty() => self.expand_joined(default, errors)?,
                    _ => value,
                }
            }
            Part::Substitution { list, .. } => {
                let mut io = Io::default();
                let cwd = self.cwd.clone();
                self.run_list(list, "", &mut io)?;
                self.cwd = cwd;
                self.exited = false;
                errors.push_str(&io.err);
                io.out.trim_end_matches('\n').to_owned()
            }
        })
    }

    fn parameter(&mut self, name: &str) -> String {
        match name {
            "?" => self.status.to_string(),
            "$" => (self.next_pid - 1).to_string(),
            "0" => "sh".into(),
            "#" => "0".into(),
            _ => self.vars.get(name).cloned().unwrap_or_default(),
        }
    }

    /// The paths a pattern in its last component matches, sorted; `None` when nothing does
    /// (the pattern then stays as written).
    fn glob(&mut self, pattern: &str) -> Result<Option<Vec<String>>, Overrun> {
        let (dir, name_pattern) = match pattern.rfind('/') {
            Some(at) => (&pattern[..=at], &pattern[at + 1..]),
            None => ("", pattern),
        };
        if dir.contains(['*', '?', '[']) {
            return Ok(None);
        }
        let listing =
            match self
                .machine
                .files
                .list(&self.absolute(if dir.is_empty() { "." } else { dir }))
            {
                Ok(listing) => listing,
                Err(_) => return Ok(None),
            };
        let mut matches = Vec::new();
        for (name, _) in listing {
            self.machine.budget.step()?;
            if name.starts_with('.') && !name_pattern.starts_with('.') {
                continue;
            }
            if wildcard(name_pattern, &name) {
                matches.push(format!("{dir}{name}"));
            }
        }
        Ok((!matches.is_empty()).then_some(matches))
    }

    /// Runs `line` in a nested shell (`sh -c`, a script) that shares this one's machine.
    pub fn nested(&mut self, line: &str, stdin: &str, io: &mut Io) -> Result<i32, Overrun> {
        if self.machine.depth >= MAX_NESTING {
            io.err.push_str("sh: 1: Cannot fork\n");
            return Ok(2);
        }
        self.machine.depth += 1;
        let outcome = run_with_input(self.machine, line, stdin);
        self.machine.depth -= 1;
        let outcome = outcome?;
        io.out.push_str(&outcome.output);
        io.err.push_str(&outcome.errors);
        Ok(outcome.status)
    }
}

#[derive(Default)]
struct Field {
    text: String,
    /// Partly quoted: kept even when empty.
    kept: bool,
    glob: bool,
}

fn push_capped(out: &mut String, text: &str, cap: usize) {
    let room = cap.saturating_sub(out.len());
    out.push_str(&text[..text.floor_char_boundary(room)]);
}

/// Whether `name` matches the shell pattern `pattern` (`*`, `?`, `[...]`).
pub(super) fn wildcard(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    // Iterative matching with one backtrack point for `*`: linear in practice.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() {
            match pattern[p] {
                '*' => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                '?' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                '[' => {
                    if let Some(close) = pattern[p + 1..].iter().position(|&c| c == ']') {
                        let class = &pattern[p + 1..p + 1 + close];
                        let (negated, class) = match class.first() {
                            Some('!' | '^') => (true, &class[1..]),
                            _ => (false, class),
                        };
                        let mut hit = false;
                        let mut i = 0;
                        while i < class.len() {
                            if i + 2 < class.len() && class[i + 1] == '-' {
                                hit |= (class[i]..=class[i + 2]).contains(&name[n]);
                                i += 3;
                            } else {
                                hit |= class[i] == name[n];
                                i += 1;
                            }
                        }
                        if hit != negated {
                            p += close + 2;
                            n += 1;
                            continue;
                        }
                    } else if name[n] == '[' {
                        p += 1;
                        n += 1;
                        continue;
                    }
                }
                c if c == name[n] => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests;
