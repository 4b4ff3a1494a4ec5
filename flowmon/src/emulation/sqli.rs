//! `sqli`: the query Tanner builds from the parameter (a parameter named like a column selects
//! from that column's table, its value spliced in with quotes blanked), run on SQLite
//! (rusqlite, bundled) over each sensor's generated database: `users(id, username, email,
//! password)` and `comments(comment_id, comment)`. The rows come back as Tanner's Python
//! printed them (`[1, 'admin', ...] [2, ...]`), an error as SQLite's message, a parameter that
//! names no column as Tanner's syntax error; `page` is true.
//!
//! Sessions read one shared, read-only copy of the database; a session's first write
//! (stacked `INSERT`, `UPDATE`, `CREATE`...) gives it its own in-memory copy, which only it
//! sees and which counts against its state cap (`max_page_count`). Every connection refuses
//! `ATTACH` (and so `VACUUM INTO`), pragmas that change anything and extension loading, runs
//! in defensive mode with small limits, and is interrupted by a progress handler at the event's
//! deadline: a query that would run for seconds is cut and counted as an overrun.

use std::{
    fmt::Write as _,
    sync::{Mutex, PoisonError},
    time::Instant,
};

use anyhow::Result;
use fallible_iterator::FallibleIterator as _;
use rusqlite::{
    Batch, Connection, ErrorCode, MAIN_DB,
    config::DbConfig,
    hooks::{AuthAction, AuthContext, Authorization},
    limits::Limit,
    types::ValueRef,
};

use super::{Answer, Failure, Machine, Param, budget::Overrun, host::Host};

struct Table {
    name: &'static str,
    /// Column names, and whether each is an INTEGER (spliced without quotes).
    columns: &'static [(&'static str, bool)],
    create: &'static str,
}

/// Tanner's schema (`db_config.json`).
const SCHEMA: &[Table] = &[
    Table {
        name: "users",
        columns: &[
            ("id", true),
            ("username", false),
            ("email", false),
            ("password", false),
        ],
        create: "CREATE TABLE users (id INTEGER PRIMARY KEY, username text, email text, password text);",
    },
    Table {
        name: "comments",
        columns: &[("comment_id", true), ("comment", false)],
        create: "CREATE TABLE comments (comment_id INTEGER PRIMARY KEY, comment text);",
    },
];

/// Statements of one stacked query run at most.
const MAX_STATEMENTS: usize = 16;
/// Read-only connections kept for reuse per database.
const POOL: usize = 8;
/// SQLite virtual-machine steps between two looks at the clock.
const PROGRESS_STEPS: i32 = 1000;
const PAGE_SIZE: usize = 4096;
/// Pragmas that only read.
const READ_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "foreign_key_list",
    "database_list",
    "page_count",
    "page_size",
];
const DENIED_FUNCTIONS: &[&str] = &[
    "load_extension",
    "readfile",
    "writefile",
    "edit",
    "fts3_tokenizer",
];

/// Tanner's query for `param`, or `None` when its name is no column.
pub fn tanner_query(param: &Param) -> Option<String> {
    let value = param.value.replace('\'', " ");
    SCHEMA.iter().find_map(|table| {
        let &(column, integer) = table.columns.iter().find(|(c, _)| *c == param.name)?;
        Some(if integer {
            format!("SELECT * from {} WHERE {column}={value};", table.name)
        } else {
            format!("SELECT * from {} WHERE {column}=\"{value}\";", table.name)
        })
    })
}

pub fn emulate(
    machine: &mut Machine<'_>,
    database: &mut Option<SessionDatabase>,
    param: &Param,
    room: usize,
) -> Result<Answer, Failure> {
    let Some(query) = tanner_query(param) else {
        let error = format!("SQL ERROR: near {}: syntax error", param.name);
        machine.evidence.sql(&param.value, &error);
        return Ok(Answer::text(error, true));
    };
    let template = machine.sim.database()?;
    let deadline = machine.budget.deadline();
    let cap = machine.max_output;
    let result = match database {
        Some(own) => {
            let result = execute(&mut own.connection, &query, deadline, cap, false);
            own.measure();
            result
        }
        None => {
            let mut reader = template.reader().map_err(internal)?;
            let result = execute(&mut reader, &query, deadline, cap, true);
            template.give_back(reader);
            match result {
                Ok(Run::NeedsWrite) => {
                    let mut own = template.copy(room).map_err(internal)?;
                    let result = execute(&mut own.connection, &query, deadline, cap, false);
                    own.measure();
                    *database = Some(own);
                    result
                }
                other => other,
            }
        }
    }?;
    let text = match result {
        Run::Rows(text) | Run::Error(text) => text,
        Run::NeedsWrite => unreachable!("a session's own copy takes writes"),
    };
    machine.evidence.sql(&query, &text);
    Ok(Answer::text(text, true))
}

fn internal(err: impl std::fmt::Display) -> Failure {
    Failure::Internal(format!("database: {err}"))
}

/// A sensor's generated database, serialised, with read-only connections to it.
pub struct Template {
    image: Vec<u8>,
    pool: Mutex<Vec<Connection>>,
}

impl Template {
    pub fn build(host: &Host) -> Result<Self> {
        let mut connection = Connection::open_in_memory()?;
        let mut rng = host.rng("database-rows");
        let transaction = connection.transaction()?;
        for table in SCHEMA {
            transaction.execute_batch(table.create)?;
        }
        let users = 120 + rng.usize(..280);
        for id in 1..=users {
            let (username, email, password) = person(&mut rng, id, &host.profile.domain);
            transaction.execute(
                "INSERT INTO users VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![id as i64, username, email, password],
            )?;
        }
        let comments = 150 + rng.usize(..350);
        for id in 1..=comments {
            let comment = sentence(&mut rng);
            transaction.execute(
                "INSERT INTO comments VALUES (?1, ?2)",
                rusqlite::params![id as i64, comment],
            )?;
        }
        transaction.commit()?;
        let image = connection.serialize(MAIN_DB)?.to_vec();
        Ok(Self {
            image,
            pool: Mutex::new(Vec::new()),
        })
    }

    fn reader(&self) -> Result<Connection> {
        if let Some(connection) = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
        {
            return Ok(connection);
        }
        let mut connection = Connection::open_in_memory()?;
        connection.deserialize_read_exact(
            MAIN_DB,
            self.image.as_slice(),
            self.image.len(),
            true,
        )?;
        connection.execute_batch("PRAGMA temp_store = MEMORY; PRAGMA query_only = ON;")?;
        harden(&mut connection)?;
        Ok(connection)
    }

    fn give_back(&self, connection: Connection) {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < POOL {
            pool.push(connection);
        }
    }

    /// A copy of its own for a session with `room` bytes left.
    fn copy(&self, room: usize) -> Result<SessionDatabase> {
        let mut connection = Connection::open_in_memory()?;
        connection.deserialize_read_exact(
            MAIN_DB,
            self.image.as_slice(),
            self.image.len(),
            false,
        )?;
        let pages = (room / PAGE_SIZE).max(self.image.len() / PAGE_SIZE);
        connection.execute_batch(&format!(
            "PRAGMA temp_store = MEMORY; PRAGMA max_page_count = {pages};"
        ))?;
        harden(&mut connection)?;
        let mut own = SessionDatabase {
            connection,
            bytes: 0,
        };
        own.measure();
        Ok(own)
    }
}

/// A session's own copy of its sensor's database.
pub struct SessionDatabase {
    connection: Connection,
    bytes: usize,
}

impl std::fmt::Debug for SessionDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionDatabase({} bytes)", self.bytes)
    }
}

impl SessionDatabase {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn measure(&mut self) {
        let pages: i64 = self
            .connection
            .query_row("PRAGMA page_count", [], |row| row.get(0))
            .unwrap_or(0);
        self.bytes = pages.max(0) as usize * PAGE_SIZE;
    }
}

fn harden(connection: &mut Connection) -> rusqlite::Result<()> {
    for (limit, value) in [
        (Limit::SQLITE_LIMIT_ATTACHED, 0),
        (Limit::SQLITE_LIMIT_LENGTH, 1 << 20),
        (Limit::SQLITE_LIMIT_SQL_LENGTH, 100_000),
        (Limit::SQLITE_LIMIT_COLUMN, 100),
        (Limit::SQLITE_LIMIT_EXPR_DEPTH, 100),
        (Limit::SQLITE_LIMIT_COMPOUND_SELECT, 64),
        (Limit::SQLITE_LIMIT_FUNCTION_ARG, 16),
        (Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 1000),
        (Limit::SQLITE_LIMIT_VARIABLE_NUMBER, 16),
        (Limit::SQLITE_LIMIT_TRIGGER_DEPTH, 4),
    ] {
        connection.set_limit(limit, value)?;
    }
    connection.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    connection.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    connection.authorizer(Some(|context: AuthContext<'_>| match context.action {
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => Authorization::Deny,
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } if pragma_value.is_some()
            || !READ_PRAGMAS.contains(&pragma_name.to_ascii_lowercase().as_str()) =>
        {
            Authorization::Deny
        }
        AuthAction::Function { function_name }
            if DENIED_FUNCTIONS.contains(&function_name.to_ascii_lowercase().as_str()) =>
        {
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }))
}

enum Run {
    /// The rows of every statement, as Tanner printed them.
    Rows(String),
    /// SQLite's message.
    Error(String),
    /// A statement would write: the session needs its own copy.
    NeedsWrite,
}

fn execute(
    connection: &mut Connection,
    query: &str,
    deadline: Instant,
    cap: usize,
    read_only: bool,
) -> Result<Run, Failure> {
    // No query runs without its deadline.
    connection
        .progress_handler(PROGRESS_STEPS, Some(move || Instant::now() >= deadline))
        .map_err(internal)?;
    let result = statements(connection, query, cap, read_only);
    connection
        .progress_handler(0, None::<fn() -> bool>)
        .map_err(internal)?;
    match result {
        Ok(run) => Ok(run),
        Err(err) if err.sqlite_error_code() == Some(ErrorCode::OperationInterrupted) => {
            Err(Overrun.into())
        }
        // SQLite's own words, as Python's sqlite3 gave them to Tanner.
        Err(err) => Ok(Run::Error(match err {
            rusqlite::Error::SqliteFailure(_, Some(message))
            | rusqlite::Error::SqlInputError { msg: message, .. } => message,
            other => other.to_string(),
        })),
    }
}

fn statements(
    connection: &Connection,
    query: &str,
    cap: usize,
    read_only: bool,
) -> rusqlite::Result<Run> {
    let mut out = String::new();
    let mut batch = Batch::new(connection, query);
    let mut count = 0;
    while let Some(mut statement) = batch.next()? {
        count += 1;
        if count > MAX_STATEMENTS {
            break;
        }
        if read_only && !statement.readonly() {
            return Ok(Run::NeedsWrite);
        }
        let columns = statement.column_count();
        let mut rows = statement.raw_query();
        while let Some(row) = rows.next()? {
            if out.len() >= cap {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push('[');
            for i in 0..columns {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(row.get_ref(i)?, &mut out);
            }
            out.push(']');
        }
    }
    Ok(Run::Rows(out))
}

/// A column's value as Python's `str()` of a list shows it.
fn python_repr(value: ValueRef<'_>, out: &mut String) {
    match value {
        ValueRef::Null => out.push_str("None"),
        ValueRef::Integer(n) => {
            let _ = write!(out, "{n}");
        }
        ValueRef::Real(f) => out.push_str(&python_float(f)),
        ValueRef::Text(bytes) => python_str(&String::from_utf8_lossy(bytes), out),
        ValueRef::Blob(bytes) => {
            out.push_str("b'");
            for &b in bytes {
                match b {
                    b'\\' => out.push_str("\\\\"),
                    b'\'' => out.push_str("\\'"),
                    b'\n' => out.push_str("\\n"),
                    b'\r' => out.push_str("\\r"),
                    b'\t' => out.push_str("\\t"),
                    0x20..=0x7e => out.push(b as char),
                    _ => {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
            }
            out.push('\'');
        }
    }
}

fn python_str(text: &str, out: &mut String) {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let magnitude = f.abs();
    if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
        let text = format!("{f:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let exponent: i32 = exponent.parse().unwrap_or(0);
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exponent.abs());
    }
    format!("{f:?}")
}

const FIRST: &[&str] = &[
    "james", "mary", "john", "linda", "robert", "susan", "michael", "karen", "david", "lisa",
    "william", "nancy", "richard", "betty", "thomas", "sandra", "mark", "ashley", "paul", "emily",
    "steven", "donna", "andrew", "carol", "kevin", "michelle", "brian", "amanda", "jason", "laura",
];
const LAST: &[&str] = &[
    "smith", "johnson", "brown", "taylor", "miller", "wilson", "moore", "anderson", "thomas",
    "jackson", "white", "harris", "martin", "garcia", "clark", "lewis", "walker", "hall", "young",
    "king", "wright", "scott", "green", "baker", "adams", "nelson", "hill", "campbell",
];
const MAIL: &[&str] = &[
    "gmail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "aol.com",
    "gmx.net",
];
const WORDS: &[&str] = &[
    "great",
    "post",
    "thanks",
    "for",
    "sharing",
    "this",
    "really",
    "helped",
    "me",
    "with",
    "my",
    "order",
    "shipping",
    "was",
    "fast",
    "the",
    "product",
    "works",
    "well",
    "but",
    "price",
    "is",
    "a",
    "bit",
    "high",
    "will",
    "buy",
    "again",
    "support",
    "answered",
    "quickly",
    "love",
    "new",
    "design",
    "page",
    "loads",
    "slow",
    "on",
    "mobile",
    "please",
    "add",
    "more",
    "colors",
    "size",
    "fits",
    "perfectly",
    "recommend",
    "store",
    "friends",
    "delivery",
    "took",
    "two",
    "weeks",
];

/// A generated user: username, email and the MD5 of a password.
fn person(rng: &mut fastrand::Rng, id: usize, domain: &str) -> (String, String, String) {
    if id == 1 {
        let password = format!(
            "{}{}",
            rng.choice(["admin", "Welcome", "shop"]).unwrap_or("admin"),
            rng.u16(10..9999)
        );
        return (
            "admin".into(),
            format!("admin@{domain}"),
            super::hex_digest("md5", password.as_bytes()),
        );
    }
    let first = FIRST[rng.usize(..FIRST.len())];
    let last = LAST[rng.usize(..LAST.len())];
    let username = match rng.u8(0..4) {
        0 => format!("{first}.{last}"),
        1 => format!("{}{last}", &first[..1]),
        2 => format!("{first}{}", rng.u16(1..99)),
        _ => format!("{last}_{first}"),
    };
    let email = format!("{username}@{}", MAIL[rng.usize(..MAIL.len())]);
    let password = format!("{}{}", WORDS[rng.usize(..WORDS.len())], rng.u16(1..9999));
    (
        username,
        email,
        super::hex_digest("md5", password.as_bytes()),
    )
}

fn sentence(rng: &mut fastrand::Rng) -> String {
    let length = 4 + rng.usize(..14);
    let mut words: Vec<&str> = (0..length)
        .map(|_| WORDS[rng.usize(..WORDS.len())])
        .collect();
    let mut text = String::new();
    if let Some(first) = words.first_mut() {
        let mut chars = first.chars();
        text = chars
            .next()
            .map(|c| c.to_uppercase().chain(chars).collect())
            .unwrap_or_default();
        words.remove(0);
    }
    for word in words {
        text.push(' ');
        text.push_str(word);
    }
    text.push('.');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(name: &str, value: &str) -> Param {
        Param {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn the_query_is_tanners() {
        assert_eq!(
            tanner_query(&param("id", "1 UNION SELECT 1,2,3,4")).unwrap(),
            "SELECT * from users WHERE id=1 UNION SELECT 1,2,3,4;"
        );
        assert_eq!(
            tanner_query(&param("username", "admin' OR '1'='1")).unwrap(),
            "SELECT * from users WHERE username=\"admin  OR  1 = 1\";"
        );
        assert_eq!(
            tanner_query(&param("comment_id", "2")).unwrap(),
            "SELECT * from comments WHERE comment_id=2;"
        );
        assert_eq!(tanner_query(&param("q", "1")), None);
    }

    #[test]
    fn values_print_as_python_prints_them() {
        let mut out = String::new();
        for value in [
            ValueRef::Integer(1),
            ValueRef::Text(b"it's"),
            ValueRef::Text(b"a\\b\n"),
            ValueRef::Null,
            ValueRef::Real(0.5),
            ValueRef::Real(1e16),
            ValueRef::Real(2.0),
            ValueRef::Blob(b"\x00a'"),
        ] {
            python_repr(value, &mut out);
            out.push('|');
        }
        assert_eq!(out, r#"1|"it's"|'a\\b\n'|None|0.5|1e+16|2.0|b'\x00a\''|"#);
    }
}
