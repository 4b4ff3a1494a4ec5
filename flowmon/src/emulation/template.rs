//! `template_injection`: the value rendered as a Python template engine (Jinja2, Tornado,
//! Mako, the engines Tanner's images ran) would render it, with the expressions probes use
//! evaluated: `{{7*7}}`, `${7*7}`, `#{7*7}`, `<%= 7*7 %>` give `49`, `{{7*'7'}}` gives
//! `7777777`, `<% x = 7*7 %>${x}` gives `49`. Names the engine does not know render empty, as
//! Jinja's undefined does; `config`, `self` and `request` render as a Flask app's would;
//! `os.popen('id').read()` and the like run their command through the command interpreter.
//! What an engine would raise on (syntax, type, division by zero) is answered with status 500,
//! as the application's error handler would. `${jndi:...}` lookups are recorded and render
//! empty. The rest of the text is kept as written; `page` is true.

use std::collections::HashMap;

use super::{Answer, Machine, budget::Overrun, shell};

/// The longest string an expression may make.
const MAX_STRING: usize = 1 << 20;

pub fn emulate(machine: &mut Machine<'_>, value: &str) -> Result<Answer, Overrun> {
    let mut renderer = Renderer {
        machine,
        vars: HashMap::new(),
    };
    let rendered = renderer.render(value)?;
    let output = match &rendered {
        Ok(text) => text.clone(),
        Err(error) => format!("500 Internal Server Error ({error})"),
    };
    renderer.machine.evidence.code(value, &output);
    Ok(match rendered {
        Ok(text) => Answer::text(text, true),
        Err(_) => Answer::Status(500),
    })
}

/// Why a template does not render (the exception the engine would raise).
type Error = String;

#[derive(Clone, Debug, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    /// A name or attribute the engine does not have: renders empty.
    Undefined(String),
    /// An object that renders as a fixed text (`config`, `self`...).
    Object(String),
    /// A method bound to its receiver, waiting for its call.
    Method(Box<Value>, String),
    /// A process started by `popen`: its output.
    Process(String),
}

impl Value {
    fn render(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => if *b { "True" } else { "False" }.into(),
            Value::Int(n) => n.to_string(),
            Value::Float(f) => python_float(*f),
            Value::Str(s) => s.clone(),
            Value::List(items) => format!(
                "[{}]",
                items.iter().map(Value::repr).collect::<Vec<_>>().join(", ")
            ),
            Value::Undefined(_) => String::new(),
            Value::Object(text) => text.clone(),
            Value::Method(receiver, name) => {
                format!(
                    "<built-in method {name} of {} object>",
                    receiver.type_name()
                )
            }
            Value::Process(_) => "<os._wrap_close object at 0x7f3a2c1e4d90>".into(),
        }
    }

    fn repr(&self) -> String {
        match self {
            Value::Str(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
            other => other.render(),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::List(_) => "list",
            _ => "object",
        }
    }

    fn truthy(&self) -> bool {
        match self {
            Value::None | Value::Undefined(_) => false,
            Value::Bool(b) => *b,
            Value::Int(n) => *n != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) | Value::Process(s) => !s.is_empty(),
            Value::List(items) => !items.is_empty(),
            _ => true,
        }
    }
}

fn python_float(f: f64) -> String {
    if f.is_finite() && f == f.trunc() && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

struct Renderer<'m, 'a> {
    machine: &'m mut Machine<'a>,
    vars: HashMap<String, Value>,
}

/// Template tags: opener, closer, what they hold.
const TAGS: &[(&str, &str, Tag)] = &[
    ("{{", "}}", Tag::Expression),
    ("{%", "%}", Tag::Statement),
    ("{#", "#}", Tag::Comment),
    ("${", "}", Tag::Expression),
    ("#{", "}", Tag::Expression),
    ("<%=", "%>", Tag::Expression),
    ("<%!", "%>", Tag::Comment),
    ("<%", "%>", Tag::Code),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tag {
    Expression,
    Statement,
    Comment,
    Code,
}

impl Renderer<'_, '_> {
    fn render(&mut self, template: &str) -> Result<Result<String, Error>, Overrun> {
        let mut out = String::new();
        let mut rest = template;
        loop {
            self.machine.budget.step()?;
            let next = TAGS
                .iter()
                .filter_map(|&(open, close, tag)| rest.find(open).map(|at| (at, open, close, tag)))
                .min_by_key(|&(at, open, _, _)| (at, usize::MAX - open.len()));
            let Some((at, open, close, tag)) = next else {
                out.push_str(rest);
                return Ok(Ok(out));
            };
            out.push_str(&rest[..at]);
            let inner_start = at + open.len();
            let Some(length) = closing(&rest[inner_start..], close) else {
                return Ok(Err(format!(
                    "TemplateSyntaxError: unexpected end of template, expected '{close}'"
                )));
            };
            let inner = rest[inner_start..inner_start + length].trim();
            rest = &rest[inner_start + length + close.len()..];
            let result = match tag {
                Tag::Comment => Ok(String::new()),
                Tag::Expression => self.expression(inner)?,
                Tag::Statement => self.statement(inner)?,
                Tag::Code => self.code(inner)?,
            };
            match result {
                Ok(text) => out.push_str(&text),
                Err(error) => return Ok(Err(error)),
            }
            if out.len() > self.machine.max_output {
                return Ok(Ok(out));
            }
        }
    }

    fn expression(&mut self, text: &str) -> Result<Result<String, Error>, Overrun> {
        let text = text.trim_start_matches('{').trim_end_matches('}').trim();
        if let Some(lookup) = text.strip_prefix("jndi:") {
            self.machine.evidence.url(lookup);
            return Ok(Ok(String::new()));
        }
        let text = text.split('|').next().unwrap_or(text).trim();
        Ok(self.evaluate(text)?.map(|value| value.render()))
    }

    fn evaluate(&mut self, text: &str) -> Result<Result<Value, Error>, Overrun> {
        let tokens = match tokens(text) {
            Ok(tokens) => tokens,
            Err(error) => return Ok(Err(error)),
        };
        let mut parser = Eval {
            renderer: self,
            tokens,
            pos: 0,
        };
        let value = match parser.expression() {
            Ok(value) => value,
            Err(Stop::Error(error)) => return Ok(Err(error)),
            Err(Stop::Overrun(overrun)) => return Err(overrun),
        };
        if parser.pos < parser.tokens.len() {
            return Ok(Err(format!(
                "TemplateSyntaxError: unexpected '{}'",
                parser.tokens[parser.pos].text()
            )));
        }
        Ok(Ok(value))
    }

    /// `{% set x = ... %}` and `{% print ... %}`; other statements render nothing.
    fn statement(&mut self, text: &str) -> Result<Result<String, Error>, Overrun> {
        if let Some(assignment) = text.strip_prefix("set ") {
            return self.assign(assignment);
        }
        if let Some(expression) = text.strip_prefix("print ") {
            return self.expression(expression);
        }
        Ok(Ok(String::new()))
    }

    /// Mako's `<% ... %>`: Python lines, assignments kept for later `${}`.
    fn code(&mut self, text: &str) -> Result<Result<String, Error>, Overrun> {
        for line in text
            .split(['\n', ';'])
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            let result = if line.contains('=') && !line.contains("==") {
                self.assign(line)?
            } else {
                self.evaluate(line)?.map(|_| String::new())
            };
            if let Err(error) = result {
                return Ok(Err(error));
            }
        }
        Ok(Ok(String::new()))
    }

    fn assign(&mut self, text: &str) -> Result<Result<String, Error>, Overrun> {
        let Some((name, expression)) = text.split_once('=') else {
            return Ok(Err("TemplateSyntaxError: expected '='".into()));
        };
        let name = name.trim();
        if !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Ok(Err(format!("SyntaxError: cannot assign to {name}")));
        }
        Ok(self.evaluate(expression.trim())?.map(|value| {
            self.vars.insert(name.to_owned(), value);
            String::new()
        }))
    }
}

/// Where `close` ends the tag opened just before `text`, braces inside counted.
fn closing(text: &str, close: &str) -> Option<usize> {
    if close != "}" {
        return text.find(close);
    }
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '{') => depth += 1,
            (None, '}') if depth == 0 => return Some(i),
            (None, '}') => depth -= 1,
            _ => {}
        }
    }
    None
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Number(Value),
    Str(String),
    Name(String),
    Op(&'static str),
}

impl Token {
    fn text(&self) -> String {
        match self {
            Token::Number(value) => value.render(),
            Token::Str(s) => format!("'{s}'"),
            Token::Name(name) => name.clone(),
            Token::Op(op) => (*op).to_owned(),
        }
    }
}

const OPS: &[&str] = &[
    "**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "(", ")", "[", "]", ".", ",", "<",
    ">", ":",
];

fn tokens(text: &str) -> Result<Vec<Token>, Error> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c.is_ascii_digit() {
            let mut end = i;
            while let Some(&(j, d)) = chars.peek() {
                if d.is_ascii_digit() || d == '.' || d == '_' {
                    end = j + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let literal: String = text[i..end].chars().filter(|c| *c != '_').collect();
            out.push(Token::Number(if literal.contains('.') {
                Value::Float(
                    literal
                        .parse()
                        .map_err(|_| format!("SyntaxError: invalid number {literal}"))?,
                )
            } else {
                literal
                    .parse()
                    .map(Value::Int)
                    .unwrap_or(Value::Float(f64::INFINITY))
            }));
            continue;
        }
        if c == '\'' || c == '"' {
            chars.next();
            let mut s = String::new();
            let mut closed = false;
            while let Some((_, d)) = chars.next() {
                match d {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                other => other,
                            });
                        }
                    }
                    d if d == c => {
                        closed = true;
                        break;
                    }
                    d => s.push(d),
                }
            }
            if !closed {
                return Err("SyntaxError: EOL while scanning string literal".into());
            }
            out.push(Token::Str(s));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let mut end = i;
            while let Some(&(j, d)) = chars.peek() {
                if d.is_alphanumeric() || d == '_' {
                    end = j + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(Token::Name(text[i..end].to_owned()));
            continue;
        }
        let rest = &text[i..];
        let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) else {
            return Err(format!("TemplateSyntaxError: unexpected char '{c}'"));
        };
        for _ in 0..op.len() {
            chars.next();
        }
        out.push(Token::Op(op));
    }
    Ok(out)
}

enum Stop {
    Error(Error),
    Overrun(Overrun),
}

impl From<Overrun> for Stop {
    fn from(overrun: Overrun) -> Self {
        Stop::Overrun(overrun)
    }
}

type Evaluated = Result<Value, Stop>;

struct Eval<'r, 'm, 'a> {
    renderer: &'r mut Renderer<'m, 'a>,
    tokens: Vec<Token>,
    pos: usize,
}

impl Eval<'_, '_, '_> {
    fn peek_op(&self, op: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token::Op(o)) if *o == op)
    }

    fn peek_word(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token::Name(n)) if n == word)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        let found = self.peek_op(op);
        self.pos += usize::from(found);
        found
    }

    fn fail<T>(&self, text: String) -> Result<T, Stop> {
        Err(Stop::Error(text))
    }

    fn expression(&mut self) -> Evaluated {
        self.renderer.machine.budget.step()?;
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            let right = self.and()?;
            left = if left.truthy() { left } else { right };
        }
        Ok(left)
    }

    fn and(&mut self) -> Evaluated {
        let mut left = self.not()?;
        while self.peek_word("and") {
            self.pos += 1;
            let right = self.not()?;
            left = if left.truthy() { right } else { left };
        }
        Ok(left)
    }

    fn not(&mut self) -> Evaluated {
        if self.peek_word("not") {
            self.pos += 1;
            return Ok(Value::Bool(!self.not()?.truthy()));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Evaluated {
        let left = self.sum()?;
        for op in ["==", "!=", "<=", ">=", "<", ">"] {
            if self.eat_op(op) {
                let right = self.sum()?;
                let ordering = match (&left, &right) {
                    (Value::Str(a), Value::Str(b)) => a.partial_cmp(b),
                    (a, b) => match (number(a), number(b)) {
                        (Some(x), Some(y)) => x.partial_cmp(&y),
                        _ => None,
                    },
                };
                return Ok(Value::Bool(match op {
                    "==" => left == right || ordering == Some(std::cmp::Ordering::Equal),
                    "!=" => !(left == right || ordering == Some(std::cmp::Ordering::Equal)),
                    "<" => ordering.is_some_and(|o| o.is_lt()),
                    ">" => ordering.is_some_and(|o| o.is_gt()),
                    "<=" => ordering.is_some_and(|o| o.is_le()),
                    _ => ordering.is_some_and(|o| o.is_ge()),
                }));
            }
        }
        Ok(left)
    }

    fn sum(&mut self) -> Evaluated {
        let mut left = self.term()?;
        loop {
            let op = if self.eat_op("+") {
                "+"
            } else if self.eat_op("-") {
                "-"
            } else {
                return Ok(left);
            };
            let right = self.term()?;
            left = self.arithmetic(op, left, right)?;
        }
    }

    fn term(&mut self) -> Evaluated {
        let mut left = self.unary()?;
        loop {
            let op = ["*", "//", "/", "%"]
                .into_iter()
                .find(|op| self.peek_op(op));
            let Some(op) = op else { return Ok(left) };
            self.pos += 1;
            let right = self.unary()?;
            left = self.arithmetic(op, left, right)?;
        }
    }

    fn unary(&mut self) -> Evaluated {
        if self.eat_op("-") {
            let value = self.unary()?;
            return self.arithmetic("-", Value::Int(0), value);
        }
        if self.eat_op("+") {
            return self.unary();
        }
        let base = self.postfix()?;
        if self.eat_op("**") {
            let exponent = self.unary()?;
            return self.arithmetic("**", base, exponent);
        }
        Ok(base)
    }

    fn postfix(&mut self) -> Evaluated {
        let mut value = self.primary()?;
        loop {
            self.renderer.machine.budget.step()?;
            if self.eat_op(".") {
                let Some(Token::Name(name)) = self.tokens.get(self.pos).cloned() else {
                    return self.fail("TemplateSyntaxError: expected name".into());
                };
                self.pos += 1;
                value = attribute(value, &name);
            } else if self.eat_op("(") {
                let mut args = Vec::new();
                while !self.eat_op(")") {
                    args.push(self.expression()?);
                    if !self.eat_op(",") && !self.peek_op(")") {
                        return self.fail("TemplateSyntaxError: expected ')'".into());
                    }
                }
                value = self.call(value, args)?;
            } else if self.eat_op("[") {
                let index = self.expression()?;
                while self.eat_op(":") || self.eat_op(",") {
                    if !self.peek_op("]") {
                        self.expression()?;
                    }
                }
                if !self.eat_op("]") {
                    return self.fail("TemplateSyntaxError: expected ']'".into());
                }
                value = match (&value, &index) {
                    (Value::List(items), Value::Int(i)) => {
                        let at = if *i < 0 { items.len() as i64 + i } else { *i };
                        items
                            .get(at as usize)
                            .cloned()
                            .unwrap_or(Value::Undefined("item".into()))
                    }
                    (Value::Str(s), Value::Int(i)) => {
                        let chars: Vec<char> = s.chars().collect();
                        let at = if *i < 0 { chars.len() as i64 + i } else { *i };
                        chars
                            .get(at as usize)
                            .map_or(Value::Undefined("item".into()), |c| {
                                Value::Str(c.to_string())
                            })
                    }
                    _ => Value::Undefined("item".into()),
                };
            } else {
                return Ok(value);
            }
        }
    }

    fn primary(&mut self) -> Evaluated {
        let Some(token) = self.tokens.get(self.pos).cloned() else {
            return self.fail("TemplateSyntaxError: unexpected end of expression".into());
        };
        self.pos += 1;
        Ok(match token {
            Token::Number(value) => value,
            Token::Str(s) => Value::Str(s),
            Token::Op("(") => {
                let value = self.expression()?;
                if !self.eat_op(")") {
                    return self.fail("TemplateSyntaxError: expected ')'".into());
                }
                value
            }
            Token::Op("[") => {
                let mut items = Vec::new();
                while !self.eat_op("]") {
                    items.push(self.expression()?);
                    if !self.eat_op(",") && !self.peek_op("]") {
                        return self.fail("TemplateSyntaxError: expected ']'".into());
                    }
                }
                Value::List(items)
            }
            Token::Name(name) => match name.as_str() {
                "True" | "true" => Value::Bool(true),
                "False" | "false" => Value::Bool(false),
                "None" | "none" => Value::None,
                "config" => Value::Object(self.config()),
                "self" => Value::Object("<TemplateReference None>".into()),
                "request" => Value::Object(format!(
                    "<Request 'http://{}/' [GET]>",
                    self.renderer.machine.sim.host.fqdn()
                )),
                _ => self
                    .renderer
                    .vars
                    .get(&name)
                    .cloned()
                    .unwrap_or(Value::Undefined(name)),
            },
            Token::Op(op) => return self.fail(format!("TemplateSyntaxError: unexpected '{op}'")),
        })
    }

    fn config(&self) -> String {
        let host = &self.renderer.machine.sim.host;
        let secret = super::hex_digest("sha1", format!("{}-secret", host.seed).as_bytes());
        format!(
            "<Config {{'ENV': 'production', 'DEBUG': False, 'TESTING': False, \
             'PROPAGATE_EXCEPTIONS': None, 'SECRET_KEY': '{}', 'SERVER_NAME': None, \
             'APPLICATION_ROOT': '/', 'SESSION_COOKIE_NAME': 'session', \
             'SQLALCHEMY_DATABASE_URI': 'mysql://{}:{}@localhost/{}', 'JSON_AS_ASCII': True}}>",
            &secret[..32],
            host.db_user,
            host.db_password,
            host.db_name
        )
    }

    fn call(&mut self, callee: Value, args: Vec<Value>) -> Evaluated {
        let text = |i: usize| match args.get(i) {
            Some(Value::Str(s)) => Some(s.clone()),
            _ => None,
        };
        Ok(match callee {
            Value::Method(receiver, name) => match (*receiver, name.as_str()) {
                (Value::Str(s), "upper") => Value::Str(s.to_uppercase()),
                (Value::Str(s), "lower") => Value::Str(s.to_lowercase()),
                (Value::Str(s), "strip") => Value::Str(s.trim().to_owned()),
                (Value::Str(s), "title" | "capitalize") => {
                    let mut chars = s.chars();
                    Value::Str(
                        chars
                            .next()
                            .map(|c| c.to_uppercase().chain(chars).collect())
                            .unwrap_or_default(),
                    )
                }
                (Value::Str(s), "replace") => match (text(0), text(1)) {
                    (Some(from), Some(to)) if !from.is_empty() => Value::Str(s.replace(&from, &to)),
                    _ => Value::Str(s),
                },
                (Value::Str(s), "join") => match args.first() {
                    Some(Value::List(items)) => {
                        Value::Str(items.iter().map(Value::render).collect::<Vec<_>>().join(&s))
                    }
                    _ => return self.fail("TypeError: can only join an iterable".into()),
                },
                (Value::Process(output), "read" | "communicate" | "decode" | "strip") => {
                    Value::Str(output)
                }
                (receiver, name) => Value::Undefined(format!("{}.{name}", receiver.type_name())),
            },
            Value::Undefined(path) => {
                let name = path.rsplit('.').next().unwrap_or(&path).to_owned();
                match name.as_str() {
                    "popen" | "check_output" | "getoutput" | "getstatusoutput" | "Popen"
                    | "run" => {
                        let command = match args.first() {
                            Some(Value::Str(s)) => s.clone(),
                            Some(Value::List(items)) => items
                                .iter()
                                .map(Value::render)
                                .collect::<Vec<_>>()
                                .join(" "),
                            _ => return Ok(Value::Undefined(path)),
                        };
                        let output = self.shell(&command)?;
                        if name == "popen" || name == "Popen" || name == "run" {
                            Value::Process(output)
                        } else {
                            Value::Str(output)
                        }
                    }
                    "system" => match text(0) {
                        Some(command) => {
                            self.shell(&command)?;
                            Value::Int(0)
                        }
                        None => Value::Undefined(path),
                    },
                    "range" => match args.first() {
                        Some(Value::Int(n)) if *n <= 1000 => {
                            Value::List((0..*n).map(Value::Int).collect())
                        }
                        _ => Value::List(Vec::new()),
                    },
                    "len" => match args.first() {
                        Some(Value::Str(s)) => Value::Int(s.chars().count() as i64),
                        Some(Value::List(items)) => Value::Int(items.len() as i64),
                        _ => return self.fail("TypeError: object has no len()".into()),
                    },
                    "str" => Value::Str(args.first().map(Value::render).unwrap_or_default()),
                    "int" => match args.first() {
                        Some(Value::Str(s)) => match s.trim().parse() {
                            Ok(n) => Value::Int(n),
                            Err(_) => {
                                return self.fail(format!(
                                    "ValueError: invalid literal for int() with base 10: '{s}'"
                                ));
                            }
                        },
                        Some(value) => {
                            number(value).map_or(Value::Int(0), |n| Value::Int(n as i64))
                        }
                        None => Value::Int(0),
                    },
                    _ => Value::Undefined(path),
                }
            }
            _ => Value::Undefined("call".into()),
        })
    }

    fn shell(&mut self, command: &str) -> Result<String, Stop> {
        let machine = &mut *self.renderer.machine;
        machine.depth += 1;
        let outcome = shell::run(machine, command);
        machine.depth -= 1;
        let outcome = outcome?;
        machine.evidence.command(command, &outcome.output);
        Ok(outcome.output)
    }

    fn arithmetic(&self, op: &str, left: Value, right: Value) -> Evaluated {
        let type_error = |l: &Value, r: &Value| {
            Err(Stop::Error(format!(
                "TypeError: unsupported operand type(s) for {op}: '{}' and '{}'",
                l.type_name(),
                r.type_name()
            )))
        };
        match (op, &left, &right) {
            ("+", Value::Str(a), Value::Str(b)) => return string(format!("{a}{b}")),
            ("+", Value::List(a), Value::List(b)) => {
                return Ok(Value::List([a.clone(), b.clone()].concat()));
            }
            ("*", Value::Str(s), Value::Int(n)) | ("*", Value::Int(n), Value::Str(s)) => {
                let times = (*n).max(0) as usize;
                if s.len().saturating_mul(times) > MAX_STRING {
                    return self.fail("MemoryError".into());
                }
                return string(s.repeat(times));
            }
            ("%", Value::Str(s), _) => return string(s.replacen("%s", &right.render(), 1)),
            _ => {}
        }
        if matches!(left, Value::Undefined(_)) || matches!(right, Value::Undefined(_)) {
            return Ok(Value::Undefined("operation".into()));
        }
        let (Some(a), Some(b)) = (int_or_float(&left), int_or_float(&right)) else {
            return type_error(&left, &right);
        };
        use Num::I;
        if let (I(x), I(y)) = (a, b)
            && let Some(result) = super::integer_arithmetic(op, x, y)
        {
            return Ok(result.map_or_else(Value::Float, Value::Int));
        }
        Ok(match (op, a, b) {
            ("**", I(x), I(y)) if y >= 0 => {
                match u32::try_from(y).ok().and_then(|y| x.checked_pow(y)) {
                    Some(n) => Value::Int(n),
                    None => return self.fail("OverflowError: integer too large".into()),
                }
            }
            ("/" | "//" | "%", _, b) if b.float() == 0.0 => {
                return self.fail("ZeroDivisionError: division by zero".into());
            }
            ("/", a, b) => Value::Float(a.float() / b.float()),
            ("//", I(x), I(y)) => {
                Value::Int(x.div_euclid(y) - i64::from(x.rem_euclid(y) != 0 && y < 0))
            }
            ("//", a, b) => Value::Float((a.float() / b.float()).floor()),
            ("%", I(x), I(y)) => Value::Int(((x % y) + y) % y),
            ("%", a, b) => Value::Float(a.float().rem_euclid(b.float())),
            ("+", a, b) => Value::Float(a.float() + b.float()),
            ("-", a, b) => Value::Float(a.float() - b.float()),
            ("*", a, b) => Value::Float(a.float() * b.float()),
            (_, a, b) => Value::Float(a.float().powf(b.float())),
        })
    }
}

fn string(text: String) -> Evaluated {
    if text.len() > MAX_STRING {
        return Err(Stop::Error("MemoryError".into()));
    }
    Ok(Value::Str(text))
}

#[derive(Clone, Copy)]
enum Num {
    I(i64),
    F(f64),
}

impl Num {
    fn float(self) -> f64 {
        match self {
            Num::I(n) => n as f64,
            Num::F(f) => f,
        }
    }
}

fn int_or_float(value: &Value) -> Option<Num> {
    match value {
        Value::Int(n) => Some(Num::I(*n)),
        Value::Bool(b) => Some(Num::I(i64::from(*b))),
        Value::Float(f) => Some(Num::F(*f)),
        _ => None,
    }
}

fn number(value: &Value) -> Option<f64> {
    int_or_float(value).map(Num::float)
}

/// `value.name`: string methods bind; everything else is undefined, keeping its path so a
/// later call can see what was meant (`os.popen`).
fn attribute(value: Value, name: &str) -> Value {
    match value {
        Value::Str(_) | Value::Process(_)
            if matches!(
                name,
                "upper"
                    | "lower"
                    | "strip"
                    | "title"
                    | "capitalize"
                    | "replace"
                    | "join"
                    | "read"
                    | "communicate"
                    | "decode"
            ) =>
        {
            Value::Method(Box::new(value), name.to_owned())
        }
        Value::Undefined(path) => Value::Undefined(format!("{path}.{name}")),
        other => Value::Undefined(format!("{}.{name}", other.type_name())),
    }
}
