//! `php_code_injection`: an evaluator for the PHP that probes and droppers use, as PHP 7.4
//! runs it, over the simulated host. Values, strings (with interpolation), arithmetic and
//! comparison, variables, `if`/`while`/`foreach`, `echo`/`print`, and the functions probes
//! call (hashes, encodings, string functions, `phpinfo()`, files through the simulated file
//! system, `system()` and its kin through the command interpreter). What it cannot parse gets
//! PHP's parse error; a function it does not know, PHP's fatal error. Nothing is executed.
//!
//! The injected value is evaluated as Tanner's sandbox did: inside `eval('$a = VALUE;')`.

use std::collections::HashMap;

use base64::Engine as _;

use super::{Answer, Machine, budget::Overrun, fs, shell};

/// Nested evaluations (`eval`, `assert`, included files, `php -r` from the shell) at most.
const MAX_NESTING: u32 = 4;
/// The longest string a value may grow to: beyond, PHP's memory limit error.
const MAX_STRING: usize = 1 << 20;
/// PHP's `memory_limit` as its error states it.
const MEMORY_LIMIT: u64 = 134_217_728;

/// The answer to an injected value: run as the statements it is (`echo(md5(1));`), else as
/// the expression Tanner's sandbox made of it (`eval('$a = VALUE;')`); what parses as neither
/// gets the parse error of the first.
pub fn emulate(machine: &mut Machine<'_>, value: &str) -> Result<Answer, Overrun> {
    let candidates = [format!("{value};"), format!("$a = {value};")];
    let mut php = Php::new(machine, Origin::Eval);
    let mut first_error = None;
    for code in &candidates {
        match php.parse(code)? {
            Ok(program) => {
                php.execute(&program)?;
                first_error = None;
                break;
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        php.parse_error(&error);
    }
    let output = php.out;
    machine.evidence.code(value, &output);
    Ok(Answer::text(output, false))
}

/// Runs `code` (no PHP tags) as `php -r` does: what it printed.
pub fn run_code(machine: &mut Machine<'_>, code: &str) -> Result<String, Overrun> {
    run(machine, code, Origin::CommandLine)
}

/// A PHP file: the text outside `<?php ... ?>` and `<?= ... ?>` printed, the code run.
pub fn render(machine: &mut Machine<'_>, source: &str) -> Result<String, Overrun> {
    run_source(machine, source, Origin::File(machine.script.clone()))
}

/// Whether `text` holds PHP code in tags.
pub fn has_php_tags(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("<?php") || lower.contains("<?=")
}

#[derive(Clone, Debug)]
enum Origin {
    /// `eval()`'d code of the request's script.
    Eval,
    CommandLine,
    File(String),
}

fn run(machine: &mut Machine<'_>, code: &str, origin: Origin) -> Result<String, Overrun> {
    let mut php = Php::new(machine, origin);
    php.execute_code(code)?;
    Ok(php.out)
}

fn run_source(machine: &mut Machine<'_>, source: &str, origin: Origin) -> Result<String, Overrun> {
    let mut php = Php::new(machine, origin);
    php.execute_source(source)?;
    Ok(php.out)
}

/// A PHP value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<(Value, Value)>),
    /// A file opened with `fopen`: its path.
    Resource(u32, String),
}

impl Value {
    fn to_text(&self) -> String {
        match self {
            Value::Null | Value::Bool(false) => String::new(),
            Value::Bool(true) => "1".into(),
            Value::Int(n) => n.to_string(),
            Value::Float(f) => float_text(*f),
            Value::Str(s) => s.clone(),
            Value::Array(_) => "Array".into(),
            Value::Resource(id, _) => format!("Resource id #{id}"),
        }
    }

    fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(n) => *n != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !(s.is_empty() || s == "0"),
            Value::Array(items) => !items.is_empty(),
            Value::Resource(..) => true,
        }
    }

    /// The number a value is in arithmetic, and whether it was numeric.
    fn number(&self) -> (Number, bool) {
        match self {
            Value::Null | Value::Bool(false) => (Number::Int(0), true),
            Value::Bool(true) => (Number::Int(1), true),
            Value::Int(n) => (Number::Int(*n), true),
            Value::Float(f) => (Number::Float(*f), true),
            Value::Str(s) => numeric_prefix(s),
            Value::Array(items) => (Number::Int(i64::from(!items.is_empty())), true),
            Value::Resource(id, _) => (Number::Int(i64::from(*id)), true),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
            Value::Resource(..) => "resource",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    fn value(self) -> Value {
        match self {
            Number::Int(n) => Value::Int(n),
            Number::Float(f) => Value::Float(f),
        }
    }

    fn float(self) -> f64 {
        match self {
            Number::Int(n) => n as f64,
            Number::Float(f) => f,
        }
    }
}

/// The number at the start of `s` (PHP 7: `"12abc"` is 12 with a notice), and whether all of
/// `s` was that number.
fn numeric_prefix(s: &str) -> (Number, bool) {
    let trimmed = s.trim_start();
    let bytes = trimmed.as_bytes();
    let mut end = 0;
    if matches!(bytes.first(), Some(b'+' | b'-')) {
        end = 1;
    }
    let digits_start = end;
    while end < bytes.len() && bytes[end].is_ascii_digit() {
        end += 1;
    }
    let mut is_float = false;
    if end < bytes.len() && bytes[end] == b'.' {
        let mut after = end + 1;
        while after < bytes.len() && bytes[after].is_ascii_digit() {
            after += 1;
        }
        if after > end + 1 || end > digits_start {
            is_float = true;
            end = after;
        }
    }
    if end > digits_start && end < bytes.len() && matches!(bytes[end], b'e' | b'E') {
        let mut after = end + 1;
        if matches!(bytes.get(after), Some(b'+' | b'-')) {
            after += 1;
        }
        let exponent_digits = bytes[after..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if exponent_digits > 0 {
            is_float = true;
            end = after + exponent_digits;
        }
    }
    let text = &trimmed[..end];
    let whole = end == trimmed.len() && end > digits_start;
    if end == digits_start {
        return (Number::Int(0), false);
    }
    let number = if is_float {
        Number::Float(text.parse().unwrap_or(0.0))
    } else {
        match text.parse::<i64>() {
            Ok(n) => Number::Int(n),
            Err(_) => Number::Float(text.parse().unwrap_or(0.0)),
        }
    };
    (number, whole)
}

/// A float as PHP 7.4 prints it (`precision = 14`).
fn float_text(f: f64) -> String {
    if f.is_nan() {
        return "NAN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "INF".into() } else { "-INF".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let exponent = f.abs().log10().floor() as i32;
    if !(-4..15).contains(&exponent) {
        let mantissa = format!("{:.13e}", f);
        let (digits, exp) = mantissa.split_once('e').unwrap_or((&mantissa, "0"));
        let digits = digits.trim_end_matches('0').trim_end_matches('.');
        let digits = if digits.contains('.') {
            digits.to_owned()
        } else {
            format!("{digits}.0")
        };
        let exp: i32 = exp.parse().unwrap_or(0);
        return format!("{digits}E{}{}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    let decimals = (13 - exponent).max(0) as usize;
    let text = format!("{f:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

// ---------------------------------------------------------------------------------------
// Lexer

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Var(String),
    Ident(String),
    Int(i64),
    Float(f64),
    Str(String),
    /// A double-quoted string with variables in it.
    Interpolated(Vec<Piece>),
    /// `` `command` ``
    Backtick(Vec<Piece>),
    Cast(&'static str),
    Op(&'static str),
    /// `?>`: the end of the code.
    CloseTag,
    End,
}

#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(String),
    Var(String),
}

const OPERATORS: &[&str] = &[
    "===", "!==", "<=>", "**=", "...", "<<=", ">>=", "??=", "==", "!=", "<>", "<=", ">=", "&&",
    "||", "??", "->", "=>", "::", "++", "--", "+=", "-=", "*=", "/=", ".=", "%=", "**", "<<", ">>",
    "+", "-", "*", "/", "%", ".", "=", "<", ">", "!", "?", ":", "(", ")", "[", "]", "{", "}", ",",
    ";", "@", "&", "|", "^", "~", "$",
];

fn token_name(tok: &Tok) -> String {
    match tok {
        Tok::Var(name) => format!("'${name}' (T_VARIABLE)"),
        Tok::Ident(name) => format!("'{name}' (T_STRING)"),
        Tok::Int(n) => format!("'{n}' (T_LNUMBER)"),
        Tok::Float(f) => format!("'{}' (T_DNUMBER)", float_text(*f)),
        Tok::Str(s) => format!("'\"{s}\"' (T_CONSTANT_ENCAPSED_STRING)"),
        Tok::Interpolated(_) => "'\"' ".into(),
        Tok::Backtick(_) => "'`'".into(),
        Tok::Cast(kind) => format!("'({kind})' (T_{}_CAST)", kind.to_uppercase()),
        Tok::Op(op) => format!("'{op}'"),
        Tok::CloseTag => "'?>'".into(),
        Tok::End => "end of file".into(),
    }
}

struct Lexer<'t> {
    text: &'t str,
    pos: usize,
}

#[derive(Debug)]
enum LexError {
    Unterminated,
    Unexpected(char),
}

impl<'t> Lexer<'t> {
    fn tokens(text: &'t str) -> Result<Vec<Tok>, LexError> {
        let mut lexer = Lexer { text, pos: 0 };
        let mut tokens = Vec::new();
        loop {
            let tok = lexer.next()?;
            let done = matches!(tok, Tok::End | Tok::CloseTag);
            tokens.push(tok);
            if done {
                return Ok(tokens);
            }
        }
    }

    fn rest(&self) -> &'t str {
        &self.text[self.pos..]
    }

    fn skip_blank(&mut self) {
        loop {
            let rest = self.rest();
            let trimmed = rest.trim_start();
            self.pos += rest.len() - trimmed.len();
            if trimmed.starts_with("//") || trimmed.starts_with('#') {
                let end = trimmed
                    .find(['\n'])
                    .into_iter()
                    .chain(trimmed.find("?>"))
                    .min()
                    .unwrap_or(trimmed.len());
                self.pos += end;
            } else if trimmed.starts_with("/*") {
                let end = trimmed.find("*/").map_or(trimmed.len(), |at| at + 2);
                self.pos += end;
            } else {
                return;
            }
        }
    }

    fn next(&mut self) -> Result<Tok, LexError> {
        self.skip_blank();
        let rest = self.rest();
        let Some(c) = rest.chars().next() else {
            return Ok(Tok::End);
        };
        if rest.starts_with("?>") {
            self.pos += 2;
            return Ok(Tok::CloseTag);
        }
        if c == '$' {
            let name: String = rest[1..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) {
                self.pos += 1 + name.len();
                return Ok(Tok::Var(name));
            }
        }
        if c.is_ascii_digit() || (c == '.' && rest[1..].starts_with(|c: char| c.is_ascii_digit())) {
            return Ok(self.number());
        }
        if c.is_alphabetic() || c == '_' || c == '\\' {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '\\')
                .collect();
            self.pos += word.len();
            return Ok(Tok::Ident(word.trim_start_matches('\\').to_owned()));
        }
        match c {
            '\'' => return self.single_quoted(),
            '"' => {
                return self
                    .double_quoted('"')
                    .map(|pieces| interpolated(pieces, false));
            }
            '`' => {
                return self
                    .double_quoted('`')
                    .map(|pieces| interpolated(pieces, true));
            }
            '(' => {
                for kind in [
                    "int", "integer", "string", "bool", "boolean", "float", "double", "array",
                ] {
                    let inner = rest[1..].trim_start();
                    if inner.len() >= kind.len()
                        && inner[..kind.len()].eq_ignore_ascii_case(kind)
                        && inner[kind.len()..].trim_start().starts_with(')')
                    {
                        let after = inner[kind.len()..].trim_start();
                        self.pos = self.text.len() - after.len() + 1;
                        let kind = match kind {
                            "integer" => "int",
                            "boolean" => "bool",
                            "double" => "float",
                            other => other,
                        };
                        return Ok(Tok::Cast(kind));
                    }
                }
            }
            _ => {}
        }
        for op in OPERATORS {
            if rest.starts_with(op) {
                self.pos += op.len();
                return Ok(Tok::Op(op));
            }
        }
        Err(LexError::Unexpected(c))
    }

    fn number(&mut self) -> Tok {
        let rest = self.rest();
        if let Some(hex) = rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X")) {
            let digits: String = hex.chars().take_while(char::is_ascii_hexdigit).collect();
            self.pos += 2 + digits.len();
            return match i64::from_str_radix(&digits, 16) {
                Ok(n) => Tok::Int(n),
                Err(_) => {
                    Tok::Float(u128::from_str_radix(&digits, 16).map_or(f64::MAX, |n| n as f64))
                }
            };
        }
        let len = rest
            .char_indices()
            .take_while(|&(i, c)| {
                c.is_ascii_digit()
                    || c == '.'
                    || c == '_'
                    || ((c == 'e' || c == 'E') && i > 0)
                    || ((c == '+' || c == '-')
                        && matches!(rest.as_bytes().get(i.wrapping_sub(1)), Some(b'e' | b'E')))
            })
            .count();
        let text: String = rest[..len].chars().filter(|c| *c != '_').collect();
        self.pos += len;
        if text.contains(['.', 'e', 'E']) {
            Tok::Float(text.parse().unwrap_or(0.0))
        } else {
            match text.parse::<i64>() {
                Ok(n) => Tok::Int(n),
                Err(_) => Tok::Float(text.parse().unwrap_or(f64::MAX)),
            }
        }
    }

    fn single_quoted(&mut self) -> Result<Tok, LexError> {
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\'' => {
                    self.pos += i + 1;
                    return Ok(Tok::Str(out));
                }
                '\\' => match chars.next() {
                    Some((_, c @ ('\'' | '\\'))) => out.push(c),
                    Some((_, c)) => {
                        out.push('\\');
                        out.push(c);
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err(LexError::Unterminated)
    }

    fn double_quoted(&mut self, quote: char) -> Result<Vec<Piece>, LexError> {
        self.pos += 1;
        let mut pieces = Vec::new();
        let mut text = String::new();
        let rest = self.rest();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == quote {
                self.pos += i + 1;
                if !text.is_empty() || pieces.is_empty() {
                    pieces.push(Piece::Text(text));
                }
                return Ok(pieces);
            }
            match c {
                '\\' => {
                    let Some((_, escaped)) = chars.next() else {
                        break;
                    };
                    match escaped {
                        'n' => text.push('\n'),
                        't' => text.push('\t'),
                        'r' => text.push('\r'),
                        'v' => text.push('\u{b}'),
                        'e' => text.push('\u{1b}'),
                        'f' => text.push('\u{c}'),
                        '0'..='7' => {
                            let mut value = escaped.to_digit(8).unwrap_or(0);
                            for _ in 0..2 {
                                match chars.peek().and_then(|(_, c)| c.to_digit(8)) {
                                    Some(d) => {
                                        value = value * 8 + d;
                                        chars.next();
                                    }
                                    None => break,
                                }
                            }
                            text.push(char::from_u32(value & 0xff).unwrap_or('?'));
                        }
                        'x' => {
                            let mut value = 0;
                            let mut digits = 0;
                            while digits < 2 {
                                match chars.peek().and_then(|(_, c)| c.to_digit(16)) {
                                    Some(d) => {
                                        value = value * 16 + d;
                                        chars.next();
                                        digits += 1;
                                    }
                                    None => break,
                                }
                            }
                            if digits == 0 {
                                text.push_str("\\x");
                            } else {
                                text.push(char::from_u32(value).unwrap_or('?'));
                            }
                        }
                        c if c == quote || c == '\\' || c == '$' => text.push(c),
                        other => {
                            text.push('\\');
                            text.push(other);
                        }
                    }
                }
                '$' | '{' => {
                    let start = if c == '{' {
                        match chars.peek() {
                            Some((_, '$')) => {
                                chars.next();
                                true
                            }
                            _ => {
                                text.push(c);
                                continue;
                            }
                        }
                    } else {
                        false
                    };
                    let name: String = rest[i + 1 + usize::from(start)..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                        text.push(c);
                        if start {
                            text.push('$');
                        }
                        continue;
                    }
                    for _ in 0..name.chars().count() {
                        chars.next();
                    }
                    if start && matches!(chars.peek(), Some((_, '}'))) {
                        chars.next();
                    }
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Var(name));
                }
                c => text.push(c),
            }
        }
        Err(LexError::Unterminated)
    }
}

fn interpolated(pieces: Vec<Piece>, backtick: bool) -> Tok {
    if backtick {
        return Tok::Backtick(pieces);
    }
    match pieces.as_slice() {
        [Piece::Text(text)] => Tok::Str(text.clone()),
        _ => Tok::Interpolated(pieces),
    }
}

// ---------------------------------------------------------------------------------------
// Syntax

#[derive(Clone, Debug)]
enum Stmt {
    Echo(Vec<Expr>),
    Expr(Expr),
    If(Vec<(Expr, Vec<Stmt>)>, Vec<Stmt>),
    While(Expr, Vec<Stmt>),
    Foreach(Expr, Option<String>, String, Vec<Stmt>),
    Return(Option<Expr>),
    Block(Vec<Stmt>),
}

#[derive(Clone, Debug)]
enum Expr {
    Literal(Value),
    Interpolated(Vec<Piece>),
    Backtick(Vec<Piece>),
    Var(String),
    /// `${expr}`: the variable named by the value.
    VarVar(Box<Expr>),
    Const(String),
    Call(String, Vec<Expr>),
    Index(Box<Expr>, Option<Box<Expr>>),
    Array(Vec<(Option<Expr>, Expr)>),
    Binary(&'static str, Box<Expr>, Box<Expr>),
    Unary(&'static str, Box<Expr>),
    Cast(&'static str, Box<Expr>),
    Assign(Box<Expr>, &'static str, Box<Expr>),
    Ternary(Box<Expr>, Option<Box<Expr>>, Box<Expr>),
    Print(Box<Expr>),
    Exit(Option<Box<Expr>>),
    Include(&'static str, Box<Expr>),
    Isset(Vec<Expr>),
    Empty(Box<Expr>),
}

struct Parser<'b> {
    tokens: Vec<Tok>,
    pos: usize,
    budget: &'b mut super::budget::Budget,
}

#[derive(Debug)]
enum ParseFailure {
    Syntax(String),
    Overrun(Overrun),
}

impl From<Overrun> for ParseFailure {
    fn from(overrun: Overrun) -> Self {
        ParseFailure::Overrun(overrun)
    }
}

type Parsed<T> = Result<T, ParseFailure>;

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.pos).unwrap_or(&Tok::End)
    }

    fn next(&mut self) -> Tok {
        let tok = self.peek().clone();
        self.pos += 1;
        tok
    }

    fn at_op(&self, op: &str) -> bool {
        matches!(self.peek(), Tok::Op(o) if *o == op)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if self.at_op(op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn at_word(&self, word: &str) -> bool {
        matches!(self.peek(), Tok::Ident(w) if w.eq_ignore_ascii_case(word))
    }

    fn unexpected<T>(&self) -> Parsed<T> {
        Err(ParseFailure::Syntax(format!(
            "syntax error, unexpected {}",
            token_name(self.peek())
        )))
    }

    fn expect_op(&mut self, op: &str) -> Parsed<()> {
        if self.eat_op(op) {
            Ok(())
        } else {
            let found = token_name(self.peek());
            Err(ParseFailure::Syntax(format!(
                "syntax error, unexpected {found}, expecting '{op}'"
            )))
        }
    }

    fn program(&mut self) -> Parsed<Vec<Stmt>> {
        let mut statements = Vec::new();
        while !matches!(self.peek(), Tok::End | Tok::CloseTag) {
            statements.push(self.statement()?);
        }
        Ok(statements)
    }

    fn statement(&mut self) -> Parsed<Stmt> {
        self.budget.step()?;
        if self.eat_op(";") {
            return Ok(Stmt::Block(Vec::new()));
        }
        if self.eat_op("{") {
            return Ok(Stmt::Block(self.block_rest()?));
        }
        if let Tok::Ident(word) = self.peek().clone() {
            match word.to_ascii_lowercase().as_str() {
                "echo" => {
                    self.pos += 1;
                    let mut items = vec![self.expression()?];
                    while self.eat_op(",") {
                        items.push(self.expression()?);
                    }
                    self.end_statement()?;
                    return Ok(Stmt::Echo(items));
                }
                "if" => return self.if_statement(),
                "while" => {
                    self.pos += 1;
                    self.expect_op("(")?;
                    let condition = self.expression()?;
                    self.expect_op(")")?;
                    let body = self.body()?;
                    return Ok(Stmt::While(condition, body));
                }
                "foreach" => {
                    self.pos += 1;
                    self.expect_op("(")?;
                    let subject = self.expression()?;
                    if !self.at_word("as") {
                        return self.unexpected();
                    }
                    self.pos += 1;
                    let first = self.variable_name()?;
                    let (key, value) = if self.eat_op("=>") {
                        (Some(first), self.variable_name()?)
                    } else {
                        (None, first)
                    };
                    self.expect_op(")")?;
                    let body = self.body()?;
                    return Ok(Stmt::Foreach(subject, key, value, body));
                }
                "return" => {
                    self.pos += 1;
                    let value =
                        if self.at_op(";") || matches!(self.peek(), Tok::End | Tok::CloseTag) {
                            None
                        } else {
                            Some(self.expression()?)
                        };
                    self.end_statement()?;
                    return Ok(Stmt::Return(value));
                }
                "function" | "class" | "for" | "do" | "switch" | "try" | "interface" | "trait"
                | "namespace" | "use" | "goto" | "declare" => {
                    // Valid PHP this evaluator does not follow: PHP would run it, so this says
                    // the least it can.
                    return self.unexpected();
                }
                _ => {}
            }
        }
        let expr = self.expression()?;
        self.end_statement()?;
        Ok(Stmt::Expr(expr))
    }

    /// A `;`, or the end of the code, which ends a statement too.
    fn end_statement(&mut self) -> Parsed<()> {
        if self.eat_op(";") || matches!(self.peek(), Tok::CloseTag) {
            return Ok(());
        }
        if matches!(self.peek(), Tok::End) {
            return Err(ParseFailure::Syntax(
                "syntax error, unexpected end of file".into(),
            ));
        }
        let found = token_name(self.peek());
        Err(ParseFailure::Syntax(format!(
            "syntax error, unexpected {found}, expecting ';' or ','"
        )))
    }

    fn variable_name(&mut self) -> Parsed<String> {
        match self.next() {
            Tok::Var(name) => Ok(name),
            _ => {
                self.pos -= 1;
                self.unexpected()
            }
        }
    }

    fn block_rest(&mut self) -> Parsed<Vec<Stmt>> {
        let mut statements = Vec::new();
        while !self.eat_op("}") {
            if matches!(self.peek(), Tok::End | Tok::CloseTag) {
                return Err(ParseFailure::Syntax(
                    "syntax error, unexpected end of file".into(),
                ));
            }
            statements.push(self.statement()?);
        }
        Ok(statements)
    }

    fn body(&mut self) -> Parsed<Vec<Stmt>> {
        if self.eat_op("{") {
            self.block_rest()
        } else {
            Ok(vec![self.statement()?])
        }
    }

    fn if_statement(&mut self) -> Parsed<Stmt> {
        self.pos += 1;
        let mut branches = Vec::new();
        let mut otherwise = Vec::new();
        self.expect_op("(")?;
        let condition = self.expression()?;
        self.expect_op(")")?;
        branches.push((condition, self.body()?));
        loop {
            if self.at_word("elseif") {
                self.pos += 1;
            } else if self.at_word("else") {
                self.pos += 1;
                if self.at_word("if") {
                    self.pos += 1;
                } else {
                    otherwise = self.body()?;
                    break;
                }
            } else {
                break;
            }
            self.expect_op("(")?;
            let condition = self.expression()?;
            self.expect_op(")")?;
            branches.push((condition, self.body()?));
        }
        Ok(Stmt::If(branches, otherwise))
    }

    fn expression(&mut self) -> Parsed<Expr> {
        self.binary(0)
    }

    fn binary(&mut self, min: u8) -> Parsed<Expr> {
        self.budget.step()?;
        let mut left = self.assignment()?;
        loop {
            let (op, precedence, right_assoc) = match self.peek() {
                Tok::Ident(word) => match word.to_ascii_lowercase().as_str() {
                    "or" => ("||", 1, false),
                    "xor" => ("xor", 2, false),
                    "and" => ("&&", 3, false),
                    _ => break,
                },
                Tok::Op(op) => match *op {
                    "?" => ("?", 4, true),
                    "??" => ("??", 5, true),
                    "||" => ("||", 6, false),
                    "&&" => ("&&", 7, false),
                    "|" => ("|", 8, false),
                    "^" => ("^", 9, false),
                    "&" => ("&", 10, false),
                    "==" | "!=" | "===" | "!==" | "<>" | "<=>" => (*op, 11, false),
                    "<" | "<=" | ">" | ">=" => (*op, 12, false),
                    "<<" | ">>" => (*op, 13, false),
                    "+" | "-" | "." => (*op, 14, false),
                    "*" | "/" | "%" => (*op, 15, false),
                    _ => break,
                },
                _ => break,
            };
            if precedence < min {
                break;
            }
            self.pos += 1;
            if op == "?" {
                let then = if self.at_op(":") {
                    None
                } else {
                    Some(Box::new(self.binary(0)?))
                };
                self.expect_op(":")?;
                let otherwise = self.binary(precedence)?;
                left = Expr::Ternary(Box::new(left), then, Box::new(otherwise));
                continue;
            }
            let next = if right_assoc {
                precedence
            } else {
                precedence + 1
            };
            let right = self.binary(next)?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn assignment(&mut self) -> Parsed<Expr> {
        let target = self.unary()?;
        if matches!(target, Expr::Var(_) | Expr::VarVar(_) | Expr::Index(..))
            && let Tok::Op(op @ ("=" | ".=" | "+=" | "-=" | "*=" | "/=" | "%=" | "??=")) =
                *self.peek()
        {
            self.pos += 1;
            if op == "=" && self.eat_op("&") {
                // `$a = &$b`: a reference; a copy does for what probes do.
            }
            let value = self.binary(4)?;
            return Ok(Expr::Assign(Box::new(target), op, Box::new(value)));
        }
        Ok(target)
    }

    fn unary(&mut self) -> Parsed<Expr> {
        self.budget.step()?;
        match self.peek().clone() {
            Tok::Op(op @ ("!" | "-" | "+" | "~" | "@")) => {
                self.pos += 1;
                let operand = self.unary()?;
                Ok(Expr::Unary(op, Box::new(operand)))
            }
            Tok::Op(op @ ("++" | "--")) => {
                self.pos += 1;
                let target = self.unary()?;
                let one = Expr::Literal(Value::Int(1));
                let op = if op == "++" { "+=" } else { "-=" };
                Ok(Expr::Assign(Box::new(target), op, Box::new(one)))
            }
            Tok::Cast(kind) => {
                self.pos += 1;
                let operand = self.unary()?;
                Ok(Expr::Cast(kind, Box::new(operand)))
            }
            Tok::Ident(word) if word.eq_ignore_ascii_case("print") => {
                self.pos += 1;
                let operand = self.binary(4)?;
                Ok(Expr::Print(Box::new(operand)))
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Parsed<Expr> {
        let base = self.postfix()?;
        if self.eat_op("**") {
            let exponent = self.unary()?;
            return Ok(Expr::Binary("**", Box::new(base), Box::new(exponent)));
        }
        Ok(base)
    }

    fn postfix(&mut self) -> Parsed<Expr> {
        let mut expr = self.primary()?;
        loop {
            self.budget.step()?;
            if self.eat_op("[") {
                if self.eat_op("]") {
                    expr = Expr::Index(Box::new(expr), None);
                    continue;
                }
                let index = self.expression()?;
                self.expect_op("]")?;
                expr = Expr::Index(Box::new(expr), Some(Box::new(index)));
            } else if self.at_op("{") && matches!(expr, Expr::Var(_)) {
                // `$s{0}`: the old string offset.
                self.pos += 1;
                let index = self.expression()?;
                self.expect_op("}")?;
                expr = Expr::Index(Box::new(expr), Some(Box::new(index)));
            } else if matches!(self.peek(), Tok::Op("++" | "--")) {
                let op = if self.eat_op("++") {
                    "+="
                } else {
                    self.pos += 1;
                    "-="
                };
                expr = Expr::Assign(Box::new(expr), op, Box::new(Expr::Literal(Value::Int(1))));
            } else if self.at_op("(") && matches!(expr, Expr::Var(_) | Expr::Literal(Value::Str(_)))
            {
                // `$f('id')`: a call through a variable holding a function's name.
                let args = self.arguments()?;
                expr = Expr::Call(String::new(), [vec![expr], args].concat());
            } else {
                return Ok(expr);
            }
        }
    }

    fn arguments(&mut self) -> Parsed<Vec<Expr>> {
        self.expect_op("(")?;
        let mut args = Vec::new();
        if self.eat_op(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expression()?);
            if self.eat_op(")") {
                return Ok(args);
            }
            self.expect_op(",")?;
            if self.eat_op(")") {
                return Ok(args);
            }
        }
    }

    fn primary(&mut self) -> Parsed<Expr> {
        self.budget.step()?;
        match self.next() {
            Tok::Var(name) => Ok(Expr::Var(name)),
            Tok::Int(n) => Ok(Expr::Literal(Value::Int(n))),
            Tok::Float(f) => Ok(Expr::Literal(Value::Float(f))),
            Tok::Str(s) => Ok(Expr::Literal(Value::Str(s))),
            Tok::Interpolated(pieces) => Ok(Expr::Interpolated(pieces)),
            Tok::Backtick(pieces) => Ok(Expr::Backtick(pieces)),
            Tok::Op("(") => {
                let inner = self.expression()?;
                self.expect_op(")")?;
                Ok(inner)
            }
            Tok::Op("[") => {
                let items = self.array_items("]")?;
                Ok(Expr::Array(items))
            }
            Tok::Op("$") => {
                if self.eat_op("{") {
                    let inner = self.expression()?;
                    self.expect_op("}")?;
                    return Ok(Expr::VarVar(Box::new(inner)));
                }
                match self.next() {
                    Tok::Var(name) => Ok(Expr::VarVar(Box::new(Expr::Var(name)))),
                    _ => {
                        self.pos -= 1;
                        self.unexpected()
                    }
                }
            }
            Tok::Ident(word) => self.word(word),
            _ => {
                self.pos -= 1;
                self.unexpected()
            }
        }
    }

    fn array_items(&mut self, close: &str) -> Parsed<Vec<(Option<Expr>, Expr)>> {
        let mut items = Vec::new();
        while !self.eat_op(close) {
            let first = self.expression()?;
            if self.eat_op("=>") {
                items.push((Some(first), self.expression()?));
            } else {
                items.push((None, first));
            }
            if !self.eat_op(",") {
                self.expect_op(close)?;
                break;
            }
        }
        Ok(items)
    }

    fn word(&mut self, word: String) -> Parsed<Expr> {
        let lower = word.to_ascii_lowercase();
        match lower.as_str() {
            "true" => return Ok(Expr::Literal(Value::Bool(true))),
            "false" => return Ok(Expr::Literal(Value::Bool(false))),
            "null" => return Ok(Expr::Literal(Value::Null)),
            "array" if self.at_op("(") => {
                self.pos += 1;
                return Ok(Expr::Array(self.array_items(")")?));
            }
            "exit" | "die" => {
                let value = if self.at_op("(") {
                    let mut args = self.arguments()?;
                    args.pop().map(Box::new)
                } else {
                    None
                };
                return Ok(Expr::Exit(value));
            }
            "include" | "include_once" | "require" | "require_once" => {
                let kind = match lower.as_str() {
                    "include" => "include",
                    "include_once" => "include_once",
                    "require" => "require",
                    _ => "require_once",
                };
                let path = self.binary(4)?;
                return Ok(Expr::Include(kind, Box::new(path)));
            }
            "isset" => {
                let args = self.arguments()?;
                return Ok(Expr::Isset(args));
            }
            "empty" => {
                let mut args = self.arguments()?;
                let Some(arg) = args.pop() else {
                    return self.unexpected();
                };
                return Ok(Expr::Empty(Box::new(arg)));
            }
            "new" | "function" | "fn" | "static" | "clone" | "list" => {
                return {
                    self.pos -= 1;
                    self.unexpected()
                };
            }
            _ => {}
        }
        if self.at_op("(") {
            let args = self.arguments()?;
            return Ok(Expr::Call(lower, args));
        }
        if self.at_op("::") || self.at_op("->") {
            return self.unexpected();
        }
        Ok(Expr::Const(word))
    }
}

// ---------------------------------------------------------------------------------------
// Evaluation

/// Why evaluation stopped early.
enum Stop {
    /// `exit`, `die`, or a fatal error already printed.
    Exit,
    /// `return` at the top of eval'd code.
    Return,
    Overrun(Overrun),
}

impl From<Overrun> for Stop {
    fn from(overrun: Overrun) -> Self {
        Stop::Overrun(overrun)
    }
}

type Eval<T> = Result<T, Stop>;

struct Php<'m, 'a> {
    machine: &'m mut Machine<'a>,
    origin: Origin,
    vars: HashMap<String, Value>,
    constants: HashMap<String, Value>,
    out: String,
    silenced: u32,
    handles: Vec<String>,
}

impl<'m, 'a> Php<'m, 'a> {
    fn new(machine: &'m mut Machine<'a>, origin: Origin) -> Self {
        Self {
            machine,
            origin,
            vars: HashMap::new(),
            constants: HashMap::new(),
            out: String::new(),
            silenced: 0,
            handles: Vec::new(),
        }
    }

    fn echo(&mut self, text: &str) {
        let room = self.machine.max_output.saturating_sub(self.out.len());
        self.out.push_str(&text[..text.floor_char_boundary(room)]);
    }

    /// Where messages say the code is.
    fn location(&self) -> (String, String) {
        let script = &self.machine.script;
        let line = self.machine.sim.host.script_line(script);
        match &self.origin {
            Origin::Eval => (format!("{script}({line}) : eval()'d code"), "1".into()),
            Origin::CommandLine => ("Command line code".into(), "1".into()),
            Origin::File(file) => (file.clone(), "1".into()),
        }
    }

    fn message(&mut self, level: &str, text: &str) {
        if self.silenced > 0 {
            return;
        }
        let (file, line) = self.location();
        let message = format!("\n{level}: {text} in {file} on line {line}\n");
        self.echo(&message);
    }

    fn warning(&mut self, text: &str) {
        self.message("Warning", text);
    }

    fn notice(&mut self, text: &str) {
        self.message("Notice", text);
    }

    /// An uncaught `Error`, as PHP 7.4 prints it; evaluation ends.
    fn fatal<T>(&mut self, text: &str) -> Eval<T> {
        let (file, line) = self.location();
        let script = self.machine.script.clone();
        let trace = match &self.origin {
            Origin::Eval => {
                let script_line = self.machine.sim.host.script_line(&script);
                format!("#0 {script}({script_line}): eval()\n#1 {{main}}")
            }
            _ => "#0 {main}".into(),
        };
        let message = format!(
            "PHP Fatal error:  Uncaught Error: {text} in {file}:{line}\nStack trace:\n{trace}\n  thrown in {file} on line {line}\n"
        );
        self.echo(&message.replacen("PHP Fatal error:  ", "\nFatal error: ", 1));
        Err(Stop::Exit)
    }

    fn parse_error(&mut self, text: &str) {
        let (file, line) = self.location();
        let message = format!("\nParse error: {text} in {file} on line {line}\n");
        self.echo(&message);
    }

    fn execute_code(&mut self, code: &str) -> Result<(), Overrun> {
        match self.parse(code)? {
            Ok(program) => self.execute(&program),
            Err(error) => {
                self.parse_error(&error);
                Ok(())
            }
        }
    }

    /// The statements of `code`, or PHP's parse error.
    fn parse(&mut self, code: &str) -> Result<Result<Vec<Stmt>, String>, Overrun> {
        let tokens = match Lexer::tokens(code) {
            Ok(tokens) => tokens,
            Err(LexError::Unterminated) => {
                return Ok(Err("syntax error, unexpected end of file".into()));
            }
            Err(LexError::Unexpected(c)) => {
                return Ok(Err(format!("syntax error, unexpected '{c}'")));
            }
        };
        let mut parser = Parser {
            tokens,
            pos: 0,
            budget: &mut self.machine.budget,
        };
        match parser.program() {
            Ok(program) => Ok(Ok(program)),
            Err(ParseFailure::Syntax(text)) => Ok(Err(text)),
            Err(ParseFailure::Overrun(overrun)) => Err(overrun),
        }
    }

    fn execute(&mut self, program: &[Stmt]) -> Result<(), Overrun> {
        match self.statements(program) {
            Ok(()) | Err(Stop::Exit | Stop::Return) => Ok(()),
            Err(Stop::Overrun(overrun)) => Err(overrun),
        }
    }

    /// Text and code in PHP tags, in turn.
    fn execute_source(&mut self, source: &str) -> Result<(), Overrun> {
        let mut rest = source;
        loop {
            self.machine.budget.step()?;
            let lower = rest.to_ascii_lowercase();
            let Some(open) = lower.find("<?php").or_else(|| lower.find("<?=")) else {
                self.echo(rest);
                return Ok(());
            };
            let open = [lower.find("<?php"), lower.find("<?=")]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(open);
            self.echo(&rest[..open]);
            let short_echo = lower[open..].starts_with("<?=");
            let code_start = open + if short_echo { 3 } else { 5 };
            let code_end = rest[code_start..].find("?>").map(|at| code_start + at);
            let code = &rest[code_start..code_end.unwrap_or(rest.len())];
            let code = if short_echo {
                format!("echo {code};")
            } else {
                code.to_owned()
            };
            let out_before = self.out.len();
            self.execute_code(&code)?;
            // A parse error or `exit` ends the page, as PHP stops there.
            if self.out[out_before..].contains("\nParse error: ") {
                return Ok(());
            }
            match code_end {
                Some(end) => {
                    let after = &rest[end + 2..];
                    // PHP eats the newline right after `?>`.
                    rest = after.strip_prefix('\n').unwrap_or(after);
                }
                None => return Ok(()),
            }
        }
    }

    fn statements(&mut self, statements: &[Stmt]) -> Eval<()> {
        for statement in statements {
            self.statement(statement)?;
        }
        Ok(())
    }

    fn statement(&mut self, statement: &Stmt) -> Eval<()> {
        self.machine.budget.step()?;
        match statement {
            Stmt::Echo(items) => {
                for item in items {
                    let value = self.eval(item)?;
                    let text = self.text_of(&value);
                    self.echo(&text);
                }
            }
            Stmt::Expr(expr) => {
                self.eval(expr)?;
            }
            Stmt::If(branches, otherwise) => {
                for (condition, body) in branches {
                    if self.eval(condition)?.truthy() {
                        return self.statements(body);
                    }
                }
                self.statements(otherwise)?;
            }
            Stmt::While(condition, body) => {
                while self.eval(condition)?.truthy() {
                    self.statements(body)?;
                }
            }
            Stmt::Foreach(subject, key, value, body) => {
                let Value::Array(items) = self.eval(subject)? else {
                    self.warning("Invalid argument supplied for foreach()");
                    return Ok(());
                };
                for (k, v) in items {
                    if let Some(key) = key {
                        self.vars.insert(key.clone(), k);
                    }
                    self.vars.insert(value.clone(), v);
                    self.statements(body)?;
                }
            }
            Stmt::Return(value) => {
                if let Some(expr) = value {
                    self.eval(expr)?;
                }
                return Err(Stop::Return);
            }
            Stmt::Block(body) => self.statements(body)?,
        }
        Ok(())
    }

    /// A value as `echo` prints it (an array says `Array` with a notice).
    fn text_of(&mut self, value: &Value) -> String {
        if matches!(value, Value::Array(_)) {
            self.notice("Array to string conversion");
        }
        value.to_text()
    }

    fn string_value(&mut self, text: String) -> Eval<Value> {
        if text.len() > MAX_STRING {
            let (file, line) = self.location();
            let message = format!(
                "\nFatal error: Allowed memory size of {MEMORY_LIMIT} bytes exhausted (tried to allocate {} bytes) in {file} on line {line}\n",
                text.len().next_power_of_two()
            );
            self.echo(&message);
            return Err(Stop::Exit);
        }
        Ok(Value::Str(text))
    }

    fn variable(&mut self, name: &str) -> Value {
        if let Some(value) = self.vars.get(name) {
            return value.clone();
        }
        if let Some(value) = self.superglobal(name) {
            return value;
        }
        self.notice(&format!("Undefined variable: {name}"));
        Value::Null
    }

    fn superglobal(&self, name: &str) -> Option<Value> {
        let host = &self.machine.sim.host;
        let entries: Vec<(&str, String)> = match name {
            "_SERVER" => vec![
                ("SERVER_SOFTWARE", host.profile.server_software.clone()),
                ("SERVER_NAME", host.fqdn()),
                ("SERVER_ADDR", host.address.to_string()),
                ("SERVER_PORT", "80".into()),
                ("DOCUMENT_ROOT", host.profile.web_root.clone()),
                ("SCRIPT_FILENAME", self.machine.script.clone()),
                (
                    "PHP_SELF",
                    self.machine
                        .script
                        .trim_start_matches(&host.profile.web_root)
                        .to_owned(),
                ),
                ("GATEWAY_INTERFACE", "CGI/1.1".into()),
                ("SERVER_PROTOCOL", "HTTP/1.1".into()),
                ("REQUEST_METHOD", "GET".into()),
            ],
            "_GET" | "_POST" | "_REQUEST" | "_COOKIE" | "_FILES" | "_SESSION" => Vec::new(),
            "_ENV" => Vec::new(),
            _ => return None,
        };
        Some(Value::Array(
            entries
                .into_iter()
                .map(|(k, v)| (Value::Str(k.into()), Value::Str(v)))
                .collect(),
        ))
    }

    fn constant(&mut self, name: &str) -> Value {
        let host = &self.machine.sim.host;
        let script = self.machine.script.clone();
        match name.to_ascii_uppercase().as_str() {
            "PHP_VERSION" => Value::Str(host.profile.php_version.clone()),
            "PHP_OS" | "PHP_OS_FAMILY" => Value::Str("Linux".into()),
            "PHP_EOL" => Value::Str("\n".into()),
            "DIRECTORY_SEPARATOR" => Value::Str("/".into()),
            "PATH_SEPARATOR" => Value::Str(":".into()),
            "PHP_INT_MAX" => Value::Int(i64::MAX),
            "PHP_INT_SIZE" => Value::Int(8),
            "__FILE__" => Value::Str(script),
            "__DIR__" => Value::Str(script.rsplit_once('/').map_or("/", |(d, _)| d).to_owned()),
            "__LINE__" => Value::Int(1),
            "E_ALL" => Value::Int(32767),
            "PHP_BINARY" => Value::Str("/usr/bin/php7.4".into()),
            _ => match self.constants.get(name) {
                Some(value) => value.clone(),
                None => {
                    self.warning(&format!(
                        "Use of undefined constant {name} - assumed '{name}' (this will throw an Error in a future version of PHP)"
                    ));
                    Value::Str(name.to_owned())
                }
            },
        }
    }

    fn interpolate(&mut self, pieces: &[Piece]) -> Eval<String> {
        let mut text = String::new();
        for piece in pieces {
            match piece {
                Piece::Text(t) => text.push_str(t),
                Piece::Var(name) => {
                    let value = self.variable(name);
                    text.push_str(&self.text_of(&value));
                }
            }
        }
        Ok(text)
    }

    fn eval(&mut self, expr: &Expr) -> Eval<Value> {
        self.machine.budget.step()?;
        match expr {
            Expr::Literal(value) => Ok(value.clone()),
            Expr::Interpolated(pieces) => {
                let text = self.interpolate(pieces)?;
                self.string_value(text)
            }
            Expr::Backtick(pieces) => {
                let command = self.interpolate(pieces)?;
                let output = self.shell(&command)?;
                Ok(if output.is_empty() {
                    Value::Null
                } else {
                    Value::Str(output)
                })
            }
            Expr::Var(name) => Ok(self.variable(name)),
            Expr::VarVar(inner) => {
                let name = self.eval(inner)?.to_text();
                Ok(self.vars.get(&name).cloned().unwrap_or_else(|| {
                    self.notice(&format!("Undefined variable: {name}"));
                    Value::Null
                }))
            }
            Expr::Const(name) => Ok(self.constant(name)),
            Expr::Call(name, args) => self.call(name, args),
            Expr::Index(base, index) => {
                let base = self.eval(base)?;
                let Some(index) = index else {
                    return self.fatal("Cannot use [] for reading");
                };
                let index = self.eval(index)?;
                Ok(self.index(&base, &index))
            }
            Expr::Array(items) => {
                let mut array = Vec::new();
                let mut next = 0;
                for (key, value) in items {
                    let value = self.eval(value)?;
                    let key = match key {
                        Some(key) => self.eval(key)?,
                        None => {
                            next += 1;
                            Value::Int(next - 1)
                        }
                    };
                    if let Value::Int(n) = key {
                        next = next.max(n + 1);
                    }
                    array_set(&mut array, key, value);
                }
                Ok(Value::Array(array))
            }
            Expr::Unary(op, operand) => {
                if *op == "@" {
                    self.silenced += 1;
                    let value = self.eval(operand);
                    self.silenced -= 1;
                    return value;
                }
                let value = self.eval(operand)?;
                Ok(match *op {
                    "!" => Value::Bool(!value.truthy()),
                    "-" => match self.number_of(&value) {
                        Number::Int(n) => n
                            .checked_neg()
                            .map_or(Value::Float(-(n as f64)), Value::Int),
                        Number::Float(f) => Value::Float(-f),
                    },
                    "~" => Value::Int(!as_int(self.number_of(&value))),
                    _ => self.number_of(&value).value(),
                })
            }
            Expr::Cast(kind, operand) => {
                let value = self.eval(operand)?;
                Ok(match *kind {
                    "int" => Value::Int(as_int(value.number().0)),
                    "float" => Value::Float(value.number().0.float()),
                    "bool" => Value::Bool(value.truthy()),
                    "array" => match value {
                        Value::Array(_) => value,
                        Value::Null => Value::Array(Vec::new()),
                        other => Value::Array(vec![(Value::Int(0), other)]),
                    },
                    _ => Value::Str(self.text_of(&value)),
                })
            }
            Expr::Binary(op, left, right) => self.binary(op, left, right),
            Expr::Assign(target, op, value) => {
                let value = match *op {
                    "=" => self.eval(value)?,
                    "??=" => match self.peek_target(target) {
                        Some(current) if current != Value::Null => return Ok(current),
                        _ => self.eval(value)?,
                    },
                    op => {
                        let binary = &op[..op.len() - 1];
                        let operator = OPERATORS
                            .iter()
                            .find(|o| **o == binary)
                            .copied()
                            .unwrap_or("+");
                        self.binary(operator, target, value)?
                    }
                };
                self.assign(target, value.clone())?;
                Ok(value)
            }
            Expr::Ternary(condition, then, otherwise) => {
                let condition = self.eval(condition)?;
                if condition.truthy() {
                    match then {
                        Some(then) => self.eval(then),
                        None => Ok(condition),
                    }
                } else {
                    self.eval(otherwise)
                }
            }
            Expr::Print(operand) => {
                let value = self.eval(operand)?;
                let text = self.text_of(&value);
                self.echo(&text);
                Ok(Value::Int(1))
            }
            Expr::Exit(value) => {
                if let Some(value) = value {
                    let value = self.eval(value)?;
                    if !matches!(value, Value::Int(_)) {
                        let text = self.text_of(&value);
                        self.echo(&text);
                    }
                }
                Err(Stop::Exit)
            }
            Expr::Include(kind, path) => {
                let path = self.eval(path)?.to_text();
                self.include(kind, &path)
            }
            Expr::Isset(args) => {
                for arg in args {
                    match self.peek_target(arg) {
                        Some(Value::Null) | None => return Ok(Value::Bool(false)),
                        Some(_) => {}
                    }
                }
                Ok(Value::Bool(true))
            }
            Expr::Empty(arg) => Ok(Value::Bool(
                !self.peek_target(arg).is_some_and(|v| v.truthy()),
            )),
        }
    }

    /// The value of a variable or element without notices, `None` when it does not exist.
    fn peek_target(&mut self, target: &Expr) -> Option<Value> {
        match target {
            Expr::Var(name) => self
                .vars
                .get(name)
                .cloned()
                .or_else(|| self.superglobal(name)),
            Expr::Index(base, Some(index)) => {
                let base = self.peek_target(base)?;
                self.silenced += 1;
                let index = self.eval(index).ok();
                self.silenced -= 1;
                let Value::Array(items) = base else {
                    return None;
                };
                let index = index?;
                items
                    .into_iter()
                    .find(|(k, _)| keys_equal(k, &index))
                    .map(|(_, v)| v)
            }
            other => {
                self.silenced += 1;
                let value = self.eval(other).ok();
                self.silenced -= 1;
                value
            }
        }
    }

    fn assign(&mut self, target: &Expr, value: Value) -> Eval<()> {
        match target {
            Expr::Var(name) => {
                self.vars.insert(name.clone(), value);
            }
            Expr::VarVar(inner) => {
                let name = self.eval(inner)?.to_text();
                self.vars.insert(name, value);
            }
            Expr::Index(base, index) => {
                let Expr::Var(name) = base.as_ref() else {
                    return self.fatal("Cannot use temporary expression in write context");
                };
                let key = match index {
                    Some(index) => Some(self.eval(index)?),
                    None => None,
                };
                let entry = self
                    .vars
                    .entry(name.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if !matches!(entry, Value::Array(_)) {
                    *entry = Value::Array(Vec::new());
                }
                if let Value::Array(items) = entry {
                    let key = key.unwrap_or_else(|| {
                        let next = items
                            .iter()
                            .filter_map(|(k, _)| match k {
                                Value::Int(n) => Some(n + 1),
                                _ => None,
                            })
                            .max()
                            .unwrap_or(0);
                        Value::Int(next)
                    });
                    array_set(items, key, value);
                }
            }
            _ => return self.fatal("Cannot use temporary expression in write context"),
        }
        Ok(())
    }

    fn index(&mut self, base: &Value, index: &Value) -> Value {
        match base {
            Value::Array(items) => match items.iter().find(|(k, _)| keys_equal(k, index)) {
                Some((_, value)) => value.clone(),
                None => {
                    self.notice(&format!("Undefined index: {}", index.to_text()));
                    Value::Null
                }
            },
            Value::Str(s) => {
                let at = as_int(index.number().0);
                let at = if at < 0 { s.len() as i64 + at } else { at };
                match s.as_bytes().get(at as usize) {
                    Some(byte) if at >= 0 => Value::Str((*byte as char).to_string()),
                    _ => {
                        self.notice(&format!("Uninitialized string offset: {at}"));
                        Value::Str(String::new())
                    }
                }
            }
            _ => Value::Null,
        }
    }

    /// A value as a number in arithmetic, with PHP 7's notice or warning for what is not
    /// wholly numeric.
    fn number_of(&mut self, value: &Value) -> Number {
        let (number, whole) = value.number();
        if let Value::Str(s) = value
            && !whole
        {
            if s.trim_start()
                .starts_with(|c: char| c.is_ascii_digit() || c == '.')
            {
                self.notice("A non well formed numeric value encountered");
            } else {
                self.warning("A non-numeric value encountered");
            }
        }
        number
    }

    fn binary(&mut self, op: &str, left: &Expr, right: &Expr) -> Eval<Value> {
        match op {
            "&&" => {
                let l = self.eval(left)?.truthy();
                return Ok(Value::Bool(l && self.eval(right)?.truthy()));
            }
            "||" => {
                let l = self.eval(left)?.truthy();
                return Ok(Value::Bool(l || self.eval(right)?.truthy()));
            }
            "??" => {
                return match self.peek_target(left) {
                    Some(value) if value != Value::Null => Ok(value),
                    _ => self.eval(right),
                };
            }
            _ => {}
        }
        let l = self.eval(left)?;
        let r = self.eval(right)?;
        self.apply(op, &l, &r)
    }

    fn apply(&mut self, op: &str, l: &Value, r: &Value) -> Eval<Value> {
        Ok(match op {
            "." => {
                let mut text = self.text_of(l);
                text.push_str(&self.text_of(r));
                return self.string_value(text);
            }
            "xor" => Value::Bool(l.truthy() != r.truthy()),
            "==" | "!=" | "<>" => Value::Bool(loose_equal(l, r) == (op == "==")),
            "===" => Value::Bool(l == r),
            "!==" => Value::Bool(l != r),
            "<" | "<=" | ">" | ">=" | "<=>" => {
                let ordering = compare(l, r);
                match op {
                    "<" => Value::Bool(ordering.is_lt()),
                    "<=" => Value::Bool(ordering.is_le()),
                    ">" => Value::Bool(ordering.is_gt()),
                    ">=" => Value::Bool(ordering.is_ge()),
                    _ => Value::Int(ordering as i64),
                }
            }
            "+" if matches!((l, r), (Value::Array(_), Value::Array(_))) => {
                let (Value::Array(a), Value::Array(b)) = (l, r) else {
                    unreachable!("both are arrays")
                };
                let mut merged = a.clone();
                for (k, v) in b {
                    if !merged.iter().any(|(mk, _)| keys_equal(mk, k)) {
                        merged.push((k.clone(), v.clone()));
                    }
                }
                Value::Array(merged)
            }
            _ => {
                let a = self.number_of(l);
                let b = self.number_of(r);
                match arithmetic(op, a, b) {
                    Some(value) => value,
                    None if op == "%" => return self.fatal("Modulo by zero"),
                    None => return self.fatal("Division by zero"),
                }
            }
        })
    }

    /// Runs `command` through the command interpreter: its standard output.
    fn shell(&mut self, command: &str) -> Eval<String> {
        if self.machine.depth >= MAX_NESTING {
            return Ok(String::new());
        }
        self.machine.depth += 1;
        let outcome = shell::run(self.machine, command);
        self.machine.depth -= 1;
        let outcome = outcome?;
        self.machine.evidence.command(command, &outcome.output);
        Ok(outcome.output)
    }

    fn nested(&mut self, code: &str, origin: Origin, source: bool) -> Eval<String> {
        if self.machine.depth >= MAX_NESTING {
            return self.fatal("Maximum function nesting level reached");
        }
        self.machine.depth += 1;
        let output = if source {
            run_source(self.machine, code, origin)
        } else {
            run(self.machine, code, origin)
        };
        self.machine.depth -= 1;
        Ok(output?)
    }

    /// The directory of the running script, which relative paths start from.
    fn script_dir(&self) -> String {
        self.machine
            .script
            .rsplit_once('/')
            .map_or("/", |(dir, _)| dir)
            .to_owned()
    }

    fn include(&mut self, kind: &str, path: &str) -> Eval<Value> {
        if path.contains("://") && !path.starts_with("file://") {
            self.machine.evidence.url(path);
            if path.starts_with("php://") || path.starts_with("data:") {
                return Ok(Value::Bool(false));
            }
            let reason = unreachable_reason(path);
            self.warning(&format!("{kind}({path}): failed to open stream: {reason}"));
            self.warning(&format!(
                "{kind}(): Failed opening '{path}' for inclusion (include_path='.:/usr/share/php')"
            ));
            return if kind.starts_with("require") {
                Err(Stop::Exit)
            } else {
                Ok(Value::Bool(false))
            };
        }
        let absolute = fs::normalise(&self.script_dir(), path.trim_start_matches("file://"));
        match self.machine.files.read(&absolute) {
            Ok(source) => {
                self.machine.evidence.file_read(&absolute);
                // The application's own files run without a word; what the session wrote
                // (an uploaded shell) runs as written.
                let written = self.machine.files.is_overlaid(&absolute);
                if source.trim_start().starts_with("<?php") && !written {
                    return Ok(Value::Int(1));
                }
                let output = self.nested(&source, Origin::File(absolute), true)?;
                self.echo(&output);
                Ok(Value::Int(1))
            }
            Err(err) => {
                self.warning(&format!("{kind}({path}): failed to open stream: {err}"));
                self.warning(&format!(
                    "{kind}(): Failed opening '{path}' for inclusion (include_path='.:/usr/share/php')"
                ));
                if kind.starts_with("require") {
                    return self.fatal(&format!("Failed opening required '{path}'"));
                }
                Ok(Value::Bool(false))
            }
        }
    }

    fn read_path(&mut self, function: &str, path: &str) -> Option<String> {
        if path.contains("://") && !path.starts_with("file://") {
            self.machine.evidence.url(path);
            let reason = unreachable_reason(path);
            self.warning(&format!(
                "{function}({path}): failed to open stream: {reason}"
            ));
            return None;
        }
        let absolute = fs::normalise(&self.script_dir(), path.trim_start_matches("file://"));
        match self.machine.files.read(&absolute) {
            Ok(text) => {
                self.machine.evidence.file_read(&absolute);
                Some(text)
            }
            Err(err) => {
                self.warning(&format!("{function}({path}): failed to open stream: {err}"));
                None
            }
        }
    }

    fn write_path(&mut self, function: &str, path: &str, text: &str, append: bool) -> bool {
        let absolute = fs::normalise(&self.script_dir(), path);
        match self.machine.files.write(&absolute, text, append) {
            Ok(()) => {
                self.machine.evidence.file_written(&absolute);
                true
            }
            Err(err) => {
                self.warning(&format!("{function}({path}): failed to open stream: {err}"));
                false
            }
        }
    }

    fn call(&mut self, name: &str, args: &[Expr]) -> Eval<Value> {
        // `$f(...)`: the function named by the first argument's value.
        if name.is_empty() {
            let Some((callee, rest)) = args.split_first() else {
                return Ok(Value::Null);
            };
            let callee = self.eval(callee)?.to_text().to_ascii_lowercase();
            return self.call(&callee, rest);
        }
        let mut values = Vec::with_capacity(args.len());
        for arg in args {
            values.push(self.eval(arg)?);
        }
        self.function(name, values)
    }

    fn function(&mut self, name: &str, args: Vec<Value>) -> Eval<Value> {
        let simulation = self.machine.sim;
        let host = &simulation.host;
        let text = |i: usize| args.get(i).map(Value::to_text).unwrap_or_default();
        let int = |i: usize| args.get(i).map_or(0, |v| as_int(v.number().0));
        let string = Value::Str;
        Ok(match name {
            "phpinfo" => {
                let page = simulation.phpinfo(&self.machine.script);
                self.echo(&page);
                Value::Bool(true)
            }
            "phpversion" => string(host.profile.php_version.clone()),
            "php_uname" => {
                let kernel = &host.profile.kernel;
                string(match text(0).as_str() {
                    "s" => "Linux".into(),
                    "n" => host.hostname.clone(),
                    "r" => kernel.release.clone(),
                    "v" => kernel.version.clone(),
                    "m" => kernel.machine.clone(),
                    _ => format!(
                        "Linux {} {} {} {}",
                        host.hostname, kernel.release, kernel.version, kernel.machine
                    ),
                })
            }
            "php_sapi_name" => string("apache2handler".into()),
            "get_current_user" => string(host.web_user().to_owned()),
            "getmyuid" | "getmygid" | "posix_getuid" | "posix_geteuid" => {
                Value::Int(i64::from(host.user.uid))
            }
            "getmypid" => Value::Int(i64::from(host.processes.last().map_or(1000, |p| p.pid))),
            "gethostname" => string(host.hostname.clone()),
            "getcwd" => string(self.script_dir()),
            "sys_get_temp_dir" => string("/tmp".into()),
            "getenv" => {
                let wanted = text(0);
                match host.environment().into_iter().find(|(k, _)| *k == wanted) {
                    Some((_, v)) => string(v),
                    None => Value::Bool(false),
                }
            }
            "ini_get" => match text(0).as_str() {
                "disable_functions" | "open_basedir" | "disable_classes" => string(String::new()),
                "allow_url_include" | "allow_url_fopen" | "display_errors" | "file_uploads" => {
                    string("1".into())
                }
                "memory_limit" => string("128M".into()),
                "max_execution_time" => string("30".into()),
                "upload_max_filesize" => string("2M".into()),
                _ => Value::Bool(false),
            },
            "ini_set" => string(String::new()),
            "function_exists" | "is_callable" => {
                Value::Bool(FUNCTIONS.contains(&text(0).to_ascii_lowercase().as_str()))
            }
            "extension_loaded" => Value::Bool(
                ["curl", "mysqli", "json", "mbstring", "openssl", "pdo_mysql"]
                    .contains(&text(0).as_str()),
            ),
            "error_reporting" | "set_time_limit" | "ignore_user_abort" | "ob_start"
            | "ob_end_clean" | "ob_end_flush" | "flush" | "session_start" | "header"
            | "error_log" | "srand" | "mt_srand" => Value::Null,
            "define" => {
                self.constants
                    .insert(text(0), args.get(1).cloned().unwrap_or(Value::Null));
                Value::Bool(true)
            }
            "defined" => Value::Bool(self.constants.contains_key(&text(0))),
            "constant" => self.constant(&text(0)),
            "system" | "passthru" => {
                let output = self.shell(&text(0))?;
                self.echo(&output);
                match output.lines().last() {
                    Some(last) if name == "system" => string(last.to_owned()),
                    _ => Value::Null,
                }
            }
            "exec" => {
                let output = self.shell(&text(0))?;
                string(output.lines().last().unwrap_or("").to_owned())
            }
            "shell_exec" => {
                let output = self.shell(&text(0))?;
                if output.is_empty() {
                    Value::Null
                } else {
                    string(output)
                }
            }
            "popen" | "proc_open" => {
                let output = self.shell(&text(0))?;
                self.handles.push(format!("pipe:{output}"));
                Value::Resource(self.handles.len() as u32 + 3, "pipe".into())
            }
            "pcntl_exec" => Value::Bool(false),
            "eval" | "assert" => {
                let code = text(0);
                let code = if name == "assert" {
                    format!("return {code};")
                } else {
                    code
                };
                let output = self.nested(&code, Origin::Eval, false)?;
                self.echo(&output);
                Value::Null
            }
            "md5" | "sha1" => string(super::hex_digest(name, text(0).as_bytes())),
            "hash" => {
                let algorithm = text(0).to_ascii_lowercase();
                if !["md5", "sha1", "sha256"].contains(&algorithm.as_str()) {
                    self.warning(&format!("hash(): Unknown hashing algorithm: {algorithm}"));
                    return Ok(Value::Bool(false));
                }
                string(super::hex_digest(&algorithm, text(1).as_bytes()))
            }
            "crc32" => Value::Int(i64::from(crc32(text(0).as_bytes()))),
            "base64_encode" => {
                string(base64::engine::general_purpose::STANDARD.encode(text(0).as_bytes()))
            }
            "base64_decode" => {
                let cleaned: String = text(0)
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || "+/".contains(*c))
                    .collect();
                let engine = base64::engine::GeneralPurpose::new(
                    &base64::alphabet::STANDARD,
                    base64::engine::GeneralPurposeConfig::new()
                        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
                        .with_decode_allow_trailing_bits(true),
                );
                // PHP drops a lone last character, which no byte can come from.
                let usable = cleaned.len() - usize::from(cleaned.len() % 4 == 1);
                match engine.decode(&cleaned[..usable]) {
                    Ok(bytes) => self.string_value(String::from_utf8_lossy(&bytes).into_owned())?,
                    Err(_) => Value::Bool(false),
                }
            }
            "str_rot13" => string(text(0).chars().map(rot13).collect()),
            "strrev" => string(text(0).chars().rev().collect()),
            "strtoupper" => string(text(0).to_uppercase()),
            "strtolower" => string(text(0).to_lowercase()),
            "ucfirst" => {
                let s = text(0);
                let mut chars = s.chars();
                string(
                    chars
                        .next()
                        .map(|c| c.to_uppercase().chain(chars).collect())
                        .unwrap_or_default(),
                )
            }
            "strlen" => Value::Int(text(0).len() as i64),
            "trim" | "ltrim" | "rtrim" | "chop" => {
                let s = text(0);
                string(
                    match name {
                        "trim" => s.trim(),
                        "ltrim" => s.trim_start(),
                        _ => s.trim_end(),
                    }
                    .to_owned(),
                )
            }
            "substr" => {
                let s = text(0);
                let len = s.len() as i64;
                let start = int(1);
                let start = if start < 0 {
                    (len + start).max(0)
                } else {
                    start.min(len)
                } as usize;
                let end = match args.get(2) {
                    Some(_) => {
                        let l = int(2);
                        if l < 0 {
                            (len + l).max(start as i64) as usize
                        } else {
                            (start + l as usize).min(len as usize)
                        }
                    }
                    None => len as usize,
                };
                let bytes = &s.as_bytes()[start..end.max(start)];
                string(String::from_utf8_lossy(bytes).into_owned())
            }
            "str_repeat" => {
                let s = text(0);
                let times = int(1).max(0) as usize;
                if s.len().saturating_mul(times) > MAX_STRING {
                    return self.string_value("x".repeat(MAX_STRING + 1));
                }
                string(s.repeat(times))
            }
            "str_replace" | "str_ireplace" => {
                let subject = text(2);
                let search = text(0);
                if search.is_empty() {
                    string(subject)
                } else {
                    let replaced = subject.replace(&search, &text(1));
                    self.string_value(replaced)?
                }
            }
            "strpos" | "stripos" => match text(0).find(&text(1)) {
                Some(at) => Value::Int(at as i64),
                None => Value::Bool(false),
            },
            "chr" => string(
                char::from_u32(int(0).rem_euclid(256) as u32)
                    .unwrap_or('?')
                    .to_string(),
            ),
            "ord" => Value::Int(text(0).bytes().next().map_or(0, i64::from)),
            "bin2hex" => string(text(0).bytes().map(|b| format!("{b:02x}")).collect()),
            "hex2bin" => {
                let hex = text(0);
                let bytes: Option<Vec<u8>> = (0..hex.len() / 2)
                    .map(|i| u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok())
                    .collect();
                match bytes {
                    Some(bytes) if hex.len() % 2 == 0 => {
                        string(String::from_utf8_lossy(&bytes).into_owned())
                    }
                    _ => {
                        self.warning("hex2bin(): Input string must be hexadecimal string");
                        Value::Bool(false)
                    }
                }
            }
            "dechex" => string(format!("{:x}", int(0))),
            "hexdec" => Value::Int(i64::from_str_radix(text(0).trim(), 16).unwrap_or(0)),
            "intval" => Value::Int(int(0)),
            "strval" => string(text(0)),
            "floatval" => Value::Float(args.first().map_or(0.0, |v| v.number().0.float())),
            "abs" => match args.first().map(|v| v.number().0) {
                Some(Number::Int(n)) => Value::Int(n.saturating_abs()),
                Some(Number::Float(f)) => Value::Float(f.abs()),
                None => Value::Null,
            },
            "urlencode" | "rawurlencode" => {
                let encoded: String = form_urlencoded::byte_serialize(text(0).as_bytes()).collect();
                string(if name == "rawurlencode" {
                    encoded.replace('+', "%20")
                } else {
                    encoded
                })
            }
            "urldecode" | "rawurldecode" => {
                let s = if name == "urldecode" {
                    text(0).replace('+', " ")
                } else {
                    text(0)
                };
                string(
                    percent_encoding::percent_decode_str(&s)
                        .decode_utf8_lossy()
                        .into_owned(),
                )
            }
            "htmlspecialchars" | "htmlentities" => string(
                text(0)
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
                    .replace('"', "&quot;"),
            ),
            "implode" | "join" => {
                let (glue, array) = match (args.first(), args.get(1)) {
                    (Some(Value::Array(items)), glue) => {
                        (glue.map(Value::to_text).unwrap_or_default(), items.clone())
                    }
                    (Some(glue), Some(Value::Array(items))) => (glue.to_text(), items.clone()),
                    _ => (String::new(), Vec::new()),
                };
                let joined = array
                    .iter()
                    .map(|(_, v)| v.to_text())
                    .collect::<Vec<_>>()
                    .join(&glue);
                self.string_value(joined)?
            }
            "explode" => {
                let separator = text(0);
                if separator.is_empty() {
                    self.warning("explode(): Empty delimiter");
                    return Ok(Value::Bool(false));
                }
                Value::Array(
                    text(1)
                        .split(separator.as_str())
                        .enumerate()
                        .map(|(i, part)| (Value::Int(i as i64), Value::Str(part.to_owned())))
                        .collect(),
                )
            }
            "count" | "sizeof" => Value::Int(match args.first() {
                Some(Value::Array(items)) => items.len() as i64,
                _ => 1,
            }),
            "in_array" => Value::Bool(match args.get(1) {
                Some(Value::Array(items)) => items.iter().any(|(_, v)| loose_equal(v, &args[0])),
                _ => false,
            }),
            "array_keys" | "array_values" => match args.first() {
                Some(Value::Array(items)) => Value::Array(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, (k, v))| {
                            let item = if name == "array_keys" { k } else { v };
                            (Value::Int(i as i64), item.clone())
                        })
                        .collect(),
                ),
                _ => Value::Null,
            },
            "sprintf" | "printf" | "vsprintf" => {
                let formatted = sprintf(&text(0), &args[1.min(args.len())..]);
                if name == "printf" {
                    self.echo(&formatted);
                    Value::Int(formatted.len() as i64)
                } else {
                    string(formatted)
                }
            }
            "var_dump" => {
                for arg in &args {
                    let dump = var_dump(arg, 0);
                    self.echo(&dump);
                }
                Value::Null
            }
            "print_r" | "var_export" => {
                let rendered = match args.first() {
                    Some(value) if name == "print_r" => print_r(value, 0),
                    Some(value) => var_export(value),
                    None => String::new(),
                };
                if args.get(1).is_some_and(Value::truthy) {
                    string(rendered)
                } else {
                    self.echo(&rendered);
                    Value::Bool(true)
                }
            }
            "gettype" => string(match args.first() {
                Some(Value::Int(_)) => "integer".into(),
                Some(Value::Float(_)) => "double".into(),
                Some(Value::Bool(_)) => "boolean".into(),
                Some(v) => v.type_name().into(),
                None => "NULL".into(),
            }),
            "is_numeric" => Value::Bool(args.first().is_some_and(|v| match v {
                Value::Int(_) | Value::Float(_) => true,
                Value::Str(s) => numeric_prefix(s).1,
                _ => false,
            })),
            "time" => Value::Int(self.machine.now as i64),
            "microtime" => {
                let now = self.machine.now;
                if args.first().is_some_and(Value::truthy) {
                    Value::Float(now)
                } else {
                    string(format!("{:.8} {}", now.fract(), now.trunc() as i64))
                }
            }
            "date" => {
                let stamp = if args.len() > 1 {
                    int(1)
                } else {
                    self.machine.now as i64
                };
                string(php_date(&text(0), stamp))
            }
            "rand" | "mt_rand" | "random_int" => {
                let mut rng = fastrand::Rng::with_seed(self.machine.now.to_bits() ^ host.seed);
                let (low, high) = if args.len() >= 2 {
                    (int(0), int(1))
                } else {
                    (0, 2_147_483_647)
                };
                Value::Int(if low <= high {
                    rng.i64(low..=high)
                } else {
                    low
                })
            }
            "uniqid" => string(format!(
                "{:x}{:05x}",
                self.machine.now as i64,
                (self.machine.now.fract() * 1e6) as i64
            )),
            "sleep" | "usleep" => {
                let seconds = if name == "sleep" {
                    int(0) as f64
                } else {
                    int(0) as f64 / 1e6
                };
                let wanted = std::time::Duration::try_from_secs_f64(seconds.max(0.0))
                    .unwrap_or(super::MAX_SLEEP);
                self.machine.delay = (self.machine.delay + wanted).min(super::MAX_SLEEP);
                Value::Int(0)
            }
            "gethostbyname" => {
                let name = text(0);
                self.machine.evidence.url(&format!("dns://{name}"));
                string(name)
            }
            "file_get_contents" | "file" | "readfile" | "highlight_file" | "show_source" => {
                let path = text(0);
                let Some(content) = self.read_path(name, &path) else {
                    return Ok(Value::Bool(false));
                };
                match name {
                    "file_get_contents" => self.string_value(content)?,
                    "file" => Value::Array(
                        content
                            .split_inclusive('\n')
                            .enumerate()
                            .map(|(i, line)| (Value::Int(i as i64), Value::Str(line.to_owned())))
                            .collect(),
                    ),
                    _ => {
                        self.echo(&content);
                        Value::Int(content.len() as i64)
                    }
                }
            }
            "file_put_contents" => {
                let data = match args.get(1) {
                    Some(Value::Array(items)) => items.iter().map(|(_, v)| v.to_text()).collect(),
                    _ => text(1),
                };
                let append = int(2) & 8 != 0;
                if self.write_path(name, &text(0), &data, append) {
                    Value::Int(data.len() as i64)
                } else {
                    Value::Bool(false)
                }
            }
            "fopen" => {
                let path = text(0);
                let mode = text(1);
                if mode.starts_with('r') {
                    if self.read_path(name, &path).is_none() {
                        return Ok(Value::Bool(false));
                    }
                } else if !self.write_path(name, &path, "", mode.starts_with('a')) {
                    return Ok(Value::Bool(false));
                }
                self.handles.push(path.clone());
                Value::Resource(self.handles.len() as u32 + 3, path)
            }
            "fwrite" | "fputs" => match args.first() {
                Some(Value::Resource(_, path)) => {
                    let data = text(1);
                    let path = path.clone();
                    if self.write_path(name, &path, &data, true) {
                        Value::Int(data.len() as i64)
                    } else {
                        Value::Bool(false)
                    }
                }
                _ => Value::Bool(false),
            },
            "fread" | "fgets" | "stream_get_contents" => match args.first() {
                Some(Value::Resource(id, path)) => {
                    let pipe = self
                        .handles
                        .get(*id as usize - 4)
                        .and_then(|h| h.strip_prefix("pipe:"))
                        .map(str::to_owned);
                    match pipe {
                        Some(output) => string(output),
                        None => {
                            let path = path.clone();
                            self.read_path(name, &path)
                                .map_or(Value::Bool(false), string)
                        }
                    }
                }
                _ => Value::Bool(false),
            },
            "fclose" | "pclose" | "proc_close" => Value::Bool(true),
            "file_exists" | "is_file" | "is_dir" | "is_readable" | "is_writable"
            | "is_writeable" => {
                let path = fs::normalise(&self.script_dir(), &text(0));
                let found = self.machine.files.stat(&path);
                Value::Bool(match (name, found) {
                    ("file_exists", Ok(_)) => true,
                    ("is_file", Ok((_, node))) => !node.is_dir(),
                    ("is_dir", Ok((_, node))) => node.is_dir(),
                    ("is_readable", Ok(_)) => {
                        self.machine.files.read(&path).is_ok()
                            || self.machine.files.list(&path).is_ok()
                    }
                    (_, Ok((_, node))) => node.uid == host.user.uid || node.mode & 0o002 != 0,
                    _ => false,
                })
            }
            "scandir" => {
                let path = fs::normalise(&self.script_dir(), &text(0));
                match self.machine.files.list(&path) {
                    Ok(entries) => Value::Array(
                        [".".to_owned(), "..".to_owned()]
                            .into_iter()
                            .chain(entries.into_iter().map(|(n, _)| n))
                            .enumerate()
                            .map(|(i, n)| (Value::Int(i as i64), Value::Str(n)))
                            .collect(),
                    ),
                    Err(err) => {
                        self.warning(&format!("scandir({}): failed to open dir: {err}", text(0)));
                        Value::Bool(false)
                    }
                }
            }
            "unlink" | "mkdir" | "rmdir" | "chmod" | "touch" | "copy" | "rename" => {
                let dir = self.script_dir();
                let path = fs::normalise(&dir, &text(0));
                let files = &mut self.machine.files;
                let result = match name {
                    "unlink" => files.remove(&path, false),
                    "rmdir" => files.remove(&path, true),
                    "mkdir" => files.mkdir(&path),
                    "chmod" => files.chmod(&path, int(1) as u32),
                    "touch" => files.touch(&path),
                    _ => {
                        let target = fs::normalise(&dir, &text(1));
                        let copied = files
                            .read(&path)
                            .and_then(|data| files.write(&target, &data, false));
                        if copied.is_ok() && name == "rename" {
                            files.remove(&path, false)
                        } else {
                            copied
                        }
                    }
                };
                match result {
                    Ok(()) => {
                        self.machine.evidence.file_written(&path);
                        Value::Bool(true)
                    }
                    Err(err) => {
                        self.warning(&format!("{name}({}): {err}", text(0)));
                        Value::Bool(false)
                    }
                }
            }
            "move_uploaded_file" | "is_uploaded_file" | "mail" | "curl_init" | "socket_create" => {
                Value::Bool(false)
            }
            "fsockopen" => {
                let target = format!("tcp://{}:{}", text(0), int(1));
                self.machine.evidence.url(&target);
                self.warning(&format!(
                    "fsockopen(): unable to connect to {}:{} (Connection refused)",
                    text(0),
                    int(1)
                ));
                Value::Bool(false)
            }
            _ => return self.fatal(&format!("Call to undefined function {name}()")),
        })
    }
}

/// The functions this evaluator knows, for `function_exists`.
const FUNCTIONS: &[&str] = &[
    "phpinfo",
    "phpversion",
    "php_uname",
    "system",
    "exec",
    "shell_exec",
    "passthru",
    "popen",
    "proc_open",
    "eval",
    "assert",
    "md5",
    "sha1",
    "hash",
    "crc32",
    "base64_encode",
    "base64_decode",
    "file_get_contents",
    "file_put_contents",
    "fopen",
    "fwrite",
    "readfile",
    "str_rot13",
    "strrev",
    "curl_init",
    "fsockopen",
    "mail",
    "move_uploaded_file",
];

/// A message of the request's script, as PHP prints it there (`display_errors`, no HTML).
pub fn script_message(machine: &Machine<'_>, level: &str, text: &str) -> String {
    let script = &machine.script;
    let line = machine.sim.host.script_line(script);
    format!("\n{level}: {text} in {script} on line {line}\n")
}

/// What PHP prints when the script's `include` of `target` fails with `reason`.
pub fn include_failure(machine: &Machine<'_>, target: &str, reason: &str) -> String {
    script_message(
        machine,
        "Warning",
        &format!("include({target}): failed to open stream: {reason}"),
    ) + &script_message(
        machine,
        "Warning",
        &format!(
            "include(): Failed opening '{target}' for inclusion (include_path='.:/usr/share/php')"
        ),
    )
}

/// Why an include of `url` fails on a host whose outbound traffic is blocked.
pub fn unreachable_reason(url: &str) -> String {
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    if host
        .trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .is_ok()
    {
        "Connection refused".into()
    } else {
        "php_network_getaddresses: getaddrinfo failed: Temporary failure in name resolution".into()
    }
}

/// ROT13 of a letter (`str_rot13`, the `string.rot13` filter).
pub fn rot13(c: char) -> char {
    match c {
        'a'..='z' => (((c as u8 - b'a') + 13) % 26 + b'a') as char,
        'A'..='Z' => (((c as u8 - b'A') + 13) % 26 + b'A') as char,
        c => c,
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// PHP's arithmetic on two numbers; `None` for a division by zero.
fn arithmetic(op: &str, a: Number, b: Number) -> Option<Value> {
    use Number::Int;
    if let (Int(x), Int(y)) = (a, b)
        && let Some(result) = super::integer_arithmetic(op, x, y)
    {
        return Some(result.map_or_else(Value::Float, Value::Int));
    }
    Some(match (op, a, b) {
        ("/", _, b) if b.float() == 0.0 => return None,
        ("/", Int(x), Int(y)) if x % y == 0 => Value::Int(x / y),
        ("/", a, b) => Value::Float(a.float() / b.float()),
        ("%", a, b) => {
            let (x, y) = (as_int(a), as_int(b));
            if y == 0 {
                return None;
            }
            Value::Int(x.wrapping_rem(y))
        }
        ("**", Int(x), Int(y)) if y >= 0 => {
            match u32::try_from(y).ok().and_then(|y| x.checked_pow(y)) {
                Some(n) => Value::Int(n),
                None => Value::Float((x as f64).powf(y as f64)),
            }
        }
        ("**", a, b) => Value::Float(a.float().powf(b.float())),
        ("&", a, b) => Value::Int(as_int(a) & as_int(b)),
        ("|", a, b) => Value::Int(as_int(a) | as_int(b)),
        ("^", a, b) => Value::Int(as_int(a) ^ as_int(b)),
        ("<<", a, b) => Value::Int(as_int(a).wrapping_shl(as_int(b) as u32)),
        (">>", a, b) => Value::Int(as_int(a).wrapping_shr(as_int(b) as u32)),
        ("+", a, b) => Value::Float(a.float() + b.float()),
        ("-", a, b) => Value::Float(a.float() - b.float()),
        (_, a, b) => Value::Float(a.float() * b.float()),
    })
}

fn as_int(n: Number) -> i64 {
    match n {
        Number::Int(n) => n,
        Number::Float(f) => f as i64,
    }
}

/// PHP 7's `==`.
fn loose_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => {
            let (nx, wx) = numeric_prefix(x);
            let (ny, wy) = numeric_prefix(y);
            if wx && wy {
                nx.float() == ny.float()
            } else {
                x == y
            }
        }
        (Value::Null, Value::Str(s)) | (Value::Str(s), Value::Null) => s.is_empty(),
        (Value::Bool(_), _) | (_, Value::Bool(_)) | (Value::Null, _) | (_, Value::Null) => {
            a.truthy() == b.truthy()
        }
        (Value::Array(x), Value::Array(y)) => x == y,
        (Value::Str(s), n) | (n, Value::Str(s)) => {
            let (number, whole) = numeric_prefix(s);
            whole && number.float() == n.number().0.float()
        }
        _ => a.number().0.float() == b.number().0.float(),
    }
}

fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) if !(numeric_prefix(x).1 && numeric_prefix(y).1) => x.cmp(y),
        _ => a
            .number()
            .0
            .float()
            .partial_cmp(&b.number().0.float())
            .unwrap_or(std::cmp::Ordering::Equal),
    }
}

fn keys_equal(a: &Value, b: &Value) -> bool {
    let key = |v: &Value| match v {
        Value::Int(n) => n.to_string(),
        Value::Bool(b) => i64::from(*b).to_string(),
        Value::Float(f) => (*f as i64).to_string(),
        other => other.to_text(),
    };
    key(a) == key(b)
}

fn array_set(items: &mut Vec<(Value, Value)>, key: Value, value: Value) {
    match items.iter_mut().find(|(k, _)| keys_equal(k, &key)) {
        Some(entry) => entry.1 = value,
        None => items.push((key, value)),
    }
}

/// `sprintf` for the conversions probes use.
fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars().peekable();
    let number = |value: Option<&Value>| value.map_or(0, |v| as_int(v.number().0));
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&next) = chars.peek() {
            spec.push(next);
            chars.next();
            if next.is_ascii_alphabetic() || next == '%' {
                break;
            }
        }
        let conversion = spec.chars().last().unwrap_or('s');
        let flags = &spec[..spec.len().saturating_sub(1)];
        let precision = flags
            .split_once('.')
            .and_then(|(_, p)| p.parse::<usize>().ok());
        let width = flags
            .split('.')
            .next()
            .and_then(|w| {
                w.trim_start_matches(['-', '0', '+', ' '])
                    .parse::<usize>()
                    .ok()
            })
            .unwrap_or(0);
        let zero = flags.starts_with('0');
        let value = match conversion {
            '%' => {
                out.push('%');
                continue;
            }
            's' => args.next().map(Value::to_text).unwrap_or_default(),
            'd' | 'u' => number(args.next()).to_string(),
            'x' => format!("{:x}", number(args.next())),
            'X' => format!("{:X}", number(args.next())),
            'o' => format!("{:o}", number(args.next())),
            'b' => format!("{:b}", number(args.next())),
            'c' => char::from_u32(number(args.next()) as u32)
                .map(String::from)
                .unwrap_or_default(),
            'f' | 'F' => format!(
                "{:.*}",
                precision.unwrap_or(6),
                args.next().map_or(0.0, |v| v.number().0.float())
            ),
            _ => String::new(),
        };
        let pad = width.saturating_sub(value.chars().count());
        if flags.starts_with('-') {
            out.push_str(&value);
            out.push_str(&" ".repeat(pad));
        } else {
            out.push_str(&(if zero { "0" } else { " " }).repeat(pad));
            out.push_str(&value);
        }
    }
    out
}

fn var_dump(value: &Value, indent: usize) -> String {
    let pad = " ".repeat(indent);
    match value {
        Value::Null => format!("{pad}NULL\n"),
        Value::Bool(b) => format!("{pad}bool({b})\n"),
        Value::Int(n) => format!("{pad}int({n})\n"),
        Value::Float(f) => format!("{pad}float({})\n", float_text(*f)),
        Value::Str(s) => format!("{pad}string({}) \"{s}\"\n", s.len()),
        Value::Resource(id, _) => format!("{pad}resource({id}) of type (stream)\n"),
        Value::Array(items) => {
            let mut out = format!("{pad}array({}) {{\n", items.len());
            for (k, v) in items {
                let key = match k {
                    Value::Int(n) => n.to_string(),
                    other => format!("\"{}\"", other.to_text()),
                };
                out.push_str(&format!("{pad}  [{key}]=>\n"));
                out.push_str(&var_dump(v, indent + 2));
            }
            out.push_str(&format!("{pad}}}\n"));
            out
        }
    }
}

fn print_r(value: &Value, indent: usize) -> String {
    match value {
        Value::Array(items) => {
            let pad = " ".repeat(indent);
            let mut out = format!("Array\n{pad}(\n");
            for (k, v) in items {
                out.push_str(&format!(
                    "{pad}    [{}] => {}\n",
                    k.to_text(),
                    print_r(v, indent + 8)
                ));
            }
            out.push_str(&format!("{pad})\n"));
            out
        }
        other => other.to_text(),
    }
}

fn var_export(value: &Value) -> String {
    match value {
        Value::Null | Value::Resource(..) => "NULL".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(n) => n.to_string(),
        Value::Float(f) => float_text(*f),
        Value::Str(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(items) => {
            let mut out = "array (\n".to_owned();
            for (k, v) in items {
                out.push_str(&format!("  {} => {},\n", var_export(k), var_export(v)));
            }
            out.push(')');
            out
        }
    }
}

/// PHP's `date()` for the format characters probes use.
fn php_date(format: &str, stamp: i64) -> String {
    let time = chrono::DateTime::from_timestamp(stamp, 0).unwrap_or_default();
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        let part = match c {
            'Y' => time.format("%Y").to_string(),
            'y' => time.format("%y").to_string(),
            'm' => time.format("%m").to_string(),
            'n' => time.format("%-m").to_string(),
            'd' => time.format("%d").to_string(),
            'j' => time.format("%-d").to_string(),
            'H' => time.format("%H").to_string(),
            'G' => time.format("%-H").to_string(),
            'i' => time.format("%M").to_string(),
            's' => time.format("%S").to_string(),
            'D' => time.format("%a").to_string(),
            'l' => time.format("%A").to_string(),
            'M' => time.format("%b").to_string(),
            'F' => time.format("%B").to_string(),
            'U' => stamp.to_string(),
            'e' | 'T' => "UTC".into(),
            '\\' => chars.next().map(String::from).unwrap_or_default(),
            other => other.to_string(),
        };
        out.push_str(&part);
    }
    out
}

#[cfg(test)]
mod tests;
