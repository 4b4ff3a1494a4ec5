//! The commands of the simulated host: dash's builtins and the programs scanners run, each
//! answering as its Debian 11 version does, from the host's data. A program the host has but
//! that is not simulated here runs silently; one it lacks is `not found`.

use std::{fmt::Write as _, time::Duration};

use base64::Engine as _;

use super::{Io, Shell, wildcard};
use crate::emulation::{
    MAX_SLEEP,
    budget::Overrun,
    fs::{self, Content, FsError, Node},
    hex_digest,
    host::Process,
};

type Status = Result<i32, Overrun>;

/// Runs `argv` with `stdin`, writing to `io`.
pub(super) fn execute(
    shell: &mut Shell<'_, '_>,
    argv: &[String],
    stdin: &str,
    io: &mut Io,
) -> Status {
    let name = argv[0].as_str();
    let args = &argv[1..];
    if let Some(status) = builtin(shell, name, args, stdin, io)? {
        return Ok(status);
    }
    let (path, node) = match locate(shell, name) {
        Ok(found) => found,
        Err(FsError::PermissionDenied) => {
            io.err
                .push_str(&format!("sh: 1: {name}: Permission denied\n"));
            return Ok(126);
        }
        Err(_) => {
            io.err.push_str(&format!("sh: 1: {name}: not found\n"));
            return Ok(127);
        }
    };
    if let Content::Text(script) = &node.content {
        // A script the session wrote: what it says runs, as `sh script`.
        let script = script.to_string();
        return shell.nested(&script, stdin, io);
    }
    let program = fs::base_name(&path);
    let host = &shell.machine.sim.host;
    let now = shell.machine.now;
    match program {
        "id" => Ok(id(shell, args, io)),
        "whoami" => {
            io.out.push_str(&format!("{}\n", host.web_user()));
            Ok(0)
        }
        "uname" => Ok(uname(shell, args, io)),
        "hostname" => {
            let text = match args.first().map(String::as_str) {
                Some("-f" | "--fqdn" | "--long") => host.fqdn(),
                Some("-i" | "--ip-address") => "127.0.1.1".to_owned(),
                Some("-I" | "--all-ip-addresses") => format!("{} ", host.address),
                Some("-d" | "--domain") => host.profile.domain.clone(),
                _ => host.hostname.clone(),
            };
            io.out.push_str(&text);
            io.out.push('\n');
            Ok(0)
        }
        "cat" => cat(shell, args, stdin, io),
        "ls" => ls(shell, args, io),
        "ps" => Ok(ps(shell, args, io)),
        "ifconfig" => {
            io.out.push_str(&ifconfig(shell));
            Ok(0)
        }
        "ip" => Ok(ip(shell, args, io)),
        "netstat" => Ok(netstat(args, io)),
        "wget" => Ok(wget(shell, args, io)),
        "curl" => Ok(curl(shell, args, io)),
        "nc.traditional" => Ok(netcat(shell, args, io)),
        "ping" => Ok(ping(shell, args, io)),
        "head" | "tail" => text_filter(shell, program, args, stdin, io),
        "grep" => grep(shell, args, stdin, io),
        "wc" => wc(shell, args, stdin, io),
        "base64" => base64(shell, args, stdin, io),
        "md5sum" | "sha1sum" | "sha256sum" => digest(shell, program, args, stdin, io),
        "env" | "printenv" => Ok(env(shell, program, args, io)),
        "uptime" => {
            io.out.push_str(&uptime_line(shell));
            io.out.push('\n');
            Ok(0)
        }
        "w" => {
            io.out.push_str(&format!(
                "{}\nUSER     TTY      FROM             LOGIN@   IDLE   JCPU   PCPU WHAT\n",
                uptime_line(shell)
            ));
            Ok(0)
        }
        "date" => Ok(date(now, args, io)),
        "sleep" => {
            let seconds: f64 = args
                .iter()
                .filter_map(|a| a.trim_end_matches('s').parse::<f64>().ok())
                .sum();
            let wanted = Duration::try_from_secs_f64(seconds).unwrap_or(MAX_SLEEP);
            shell.machine.delay = (shell.machine.delay + wanted).min(MAX_SLEEP);
            Ok(0)
        }
        "true" => Ok(0),
        "false" => Ok(1),
        "which" => Ok(which(shell, args, io)),
        "touch" | "mkdir" | "rm" | "chmod" | "cp" | "mv" => files(shell, program, args, io),
        "dash" | "bash" => sh(shell, args, stdin, io),
        "php7.4" => php(shell, args, io),
        "find" => find(shell, args, io),
        "df" => {
            io.out.push_str(DF);
            Ok(0)
        }
        "free" => {
            io.out.push_str(&free(shell));
            Ok(0)
        }
        "crontab" => {
            io.err
                .push_str(&format!("no crontab for {}\n", host.web_user()));
            Ok(1)
        }
        "sudo" => {
            if !args.iter().any(|a| a == "-n") {
                io.err.push_str(
                    "sudo: a terminal is required to read the password; either use the -S \
                     option to read from standard input or configure an askpass helper\n",
                );
            }
            io.err.push_str("sudo: a password is required\n");
            Ok(1)
        }
        "su" => {
            io.err.push_str("su: must be run from a terminal\n");
            Ok(1)
        }
        "mysql" => {
            let with_password = args
                .iter()
                .any(|a| a.starts_with("-p") || a.starts_with("--password"));
            io.err.push_str(&format!(
                "ERROR 1045 (28000): Access denied for user '{}'@'localhost' (using password: {})\n",
                host.web_user(),
                if with_password { "YES" } else { "NO" }
            ));
            Ok(1)
        }
        "cut" => cut(shell, args, stdin, io),
        "sort" | "uniq" | "tr" => text_tool(shell, program, args, stdin, io),
        "awk" => awk(shell, args, stdin, io),
        "sed" => sed(shell, args, stdin, io),
        "nohup" | "timeout" | "xargs" => wrapper(shell, program, args, stdin, io),
        // What the host has and this does not simulate runs without a word.
        _ => Ok(0),
    }
}

/// dash's builtins: `None` for what is no builtin.
fn builtin(
    shell: &mut Shell<'_, '_>,
    name: &str,
    args: &[String],
    stdin: &str,
    io: &mut Io,
) -> Result<Option<i32>, Overrun> {
    let status = match name {
        ":" | "true" | "wait" | "trap" | "umask" | "ulimit" | "alias" | "read" | "shift"
        | "hash" | "local" | "getopts" => 0,
        "false" => 1,
        "cd" => cd(shell, args, io),
        "pwd" => {
            io.out.push_str(&format!("{}\n", shell.cwd));
            0
        }
        "echo" => {
            let (newline, words) = match args.first().map(String::as_str) {
                Some("-n") => (false, &args[1..]),
                _ => (true, args),
            };
            let (text, stop) = backslash_escapes(&words.join(" "));
            io.out.push_str(&text);
            if newline && !stop {
                io.out.push('\n');
            }
            0
        }
        "printf" => printf(args, io),
        "export" | "readonly" => {
            for arg in args {
                if let Some((name, value)) = arg.split_once('=') {
                    shell.vars.insert(name.to_owned(), value.to_owned());
                }
            }
            0
        }
        "unset" => {
            for arg in args {
                shell.vars.remove(arg);
            }
            0
        }
        "set" => {
            for (name, value) in &shell.vars {
                io.out.push_str(&format!("{name}='{value}'\n"));
            }
            0
        }
        "exit" => {
            shell.exited = true;
            args.first()
                .and_then(|a| a.parse::<i32>().ok())
                .map_or(shell.status, |s| s & 0xff)
        }
        "kill" => 0,
        "type" | "command" => {
            let names: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
            let mut status = 0;
            for name in names {
                match locate(shell, name) {
                    Ok((path, _)) if name == "command" || args.iter().any(|a| a == "-v") => {
                        io.out.push_str(&format!("{path}\n"));
                    }
                    Ok((path, _)) => io.out.push_str(&format!("{name} is {path}\n")),
                    Err(_) => {
                        status = 127;
                        if name != "command" {
                            io.out.push_str(&format!("{name}: not found\n"));
                        }
                    }
                }
            }
            status
        }
        "test" | "[" => test(shell, name, args, io),
        "eval" => return shell.nested(&args.join(" "), stdin, io).map(Some),
        "exec" if !args.is_empty() => return execute(shell, args, stdin, io).map(Some),
        "." | "source" => match args.first() {
            Some(file) => match shell.read_file(file) {
                Ok(script) => return shell.nested(&script, stdin, io).map(Some),
                Err(err) => {
                    io.err
                        .push_str(&format!("sh: 1: .: cannot open {file}: {err}\n"));
                    2
                }
            },
            None => 0,
        },
        _ => return Ok(None),
    };
    Ok(Some(status))
}

/// Where `name` runs from: its path and node, found on PATH or as written.
fn locate(shell: &mut Shell<'_, '_>, name: &str) -> Result<(String, Node), FsError> {
    let user = shell.machine.sim.host.user.clone();
    let executable = |node: &Node| {
        let shift = if node.uid == user.uid {
            6
        } else if node.gid == user.gid {
            3
        } else {
            0
        };
        (node.mode >> shift) & 1 != 0
    };
    let candidates: Vec<String> = if name.contains('/') {
        vec![shell.absolute(name)]
    } else {
        let path = shell.vars.get("PATH").cloned().unwrap_or_default();
        path.split(':')
            .filter(|dir| !dir.is_empty())
            .map(|dir| format!("{dir}/{name}"))
            .collect()
    };
    let mut denied = false;
    for candidate in candidates {
        match shell.files().stat(&candidate) {
            Ok((real, node)) if !node.is_dir() => {
                if executable(&node) {
                    return Ok((real, node));
                }
                denied = true;
            }
            Ok(_) => denied |= name.contains('/'),
            Err(FsError::PermissionDenied) => denied = true,
            Err(_) => {}
        }
    }
    Err(if denied {
        FsError::PermissionDenied
    } else {
        FsError::NotFound
    })
}

/// Short flags (`-la`, `-l -a`) and the other arguments, in order.
fn flags(args: &[String]) -> (String, Vec<&str>) {
    let mut flags = String::new();
    let mut rest = Vec::new();
    let mut only_operands = false;
    for arg in args {
        if only_operands {
            rest.push(arg.as_str());
        } else if arg == "--" {
            only_operands = true;
        } else if let Some(cluster) = arg
            .strip_prefix('-')
            .filter(|c| !c.is_empty() && !c.starts_with('-'))
        {
            flags.push_str(cluster);
        } else if arg.starts_with("--") {
            // Long options are accepted and ignored.
        } else {
            rest.push(arg.as_str());
        }
    }
    (flags, rest)
}

/// The text of each operand (or `stdin` when there is none), errors written as `program`.
fn inputs(
    shell: &mut Shell<'_, '_>,
    program: &str,
    operands: &[&str],
    stdin: &str,
    io: &mut Io,
) -> Result<(Vec<(String, String)>, i32), Overrun> {
    if operands.is_empty() {
        return Ok((vec![("-".into(), stdin.to_owned())], 0));
    }
    let mut texts = Vec::new();
    let mut status = 0;
    for operand in operands {
        shell.machine.budget.step()?;
        if *operand == "-" {
            texts.push(("-".into(), stdin.to_owned()));
            continue;
        }
        match shell.read_file(operand) {
            Ok(text) => {
                shell.machine.budget.spend(text.len() as u64 / 4096)?;
                texts.push(((*operand).to_owned(), text));
            }
            Err(err) => {
                io.err.push_str(&format!("{program}: {operand}: {err}\n"));
                status = 1;
            }
        }
    }
    Ok((texts, status))
}

fn id(shell: &mut Shell<'_, '_>, args: &[String], io: &mut Io) -> i32 {
    let host = &shell.machine.sim.host;
    let (flags, operands) = flags(args);
    let user = match operands.first() {
        None => host.users.iter().find(|u| u.uid == host.user.uid),
        Some(name) => match host.users.iter().find(|u| u.name == *name) {
            Some(user) => Some(user),
            None => {
                io.err.push_str(&format!("id: '{name}': no such user\n"));
                return 1;
            }
        },
    };
    let Some(user) = user else { return 1 };
    let group = group_name(&shell.machine.sim.host.users, user.gid);
    let by_name = flags.contains('n');
    let line = if flags.contains('u') {
        if by_name {
            user.name.clone()
        } else {
            user.uid.to_string()
        }
    } else if flags.contains('g') || flags.contains('G') {
        if by_name { group } else { user.gid.to_string() }
    } else {
        format!(
            "uid={}({}) gid={}({group}) groups={}({group})",
            user.uid, user.name, user.gid, user.gid
        )
    };
    io.out.push_str(&line);
    io.out.push('\n');
    0
}

fn group_name(users: &[crate::emulation::host::User], gid: u32) -> String {
    match gid {
        0 => "root".into(),
        4 => "adm".into(),
        8 => "mail".into(),
        42 => "shadow".into(),
        112 => "mysql".into(),
        65534 => "nogroup".into(),
        gid => users
            .iter()
            .find(|u| u.uid == gid)
            .map_or_else(|| gid.to_string(), |u| u.name.clone()),
    }
}

fn user_name(users: &[crate::emulation::host::User], uid: u32) -> String {
    users
        .iter()
        .find(|u| u.uid == uid)
        .map_or_else(|| uid.to_string(), |u| u.name.clone())
}

fn uname(shell: &mut Shell<'_, '_>, args: &[String], io: &mut Io) -> i32 {
    let host = &shell.machine.sim.host;
    let kernel = &host.profile.kernel;
    let (mut flags, _) = flags(args);
    for arg in args {
        flags.push(match arg.as_str() {
            "--all" => 'a',
            "--kernel-name" => 's',
            "--nodename" => 'n',
            "--kernel-release" => 'r',
            "--kernel-version" => 'v',
            "--machine" => 'm',
            "--operating-system" => 'o',
            _ => continue,
        });
    }
    if let Some(bad) = flags.chars().find(|c| !"asnrvmpio".contains(*c)) {
        io.err.push_str(&format!(
            "uname: invalid option -- '{bad}'\nTry 'uname --help' for more information.\n"
        ));
        return 1;
    }
    if flags.contains('a') {
        io.out.push_str(&host.uname());
        io.out.push('\n');
        return 0;
    }
    if flags.is_empty() {
        flags.push('s');
    }
    let fields: Vec<&str> = [
        ('s', "Linux"),
        ('n', host.hostname.as_str()),
        ('r', kernel.release.as_str()),
        ('v', kernel.version.as_str()),
        ('m', kernel.machine.as_str()),
        ('p', "unknown"),
        ('i', "unknown"),
        ('o', "GNU/Linux"),
    ]
    .into_iter()
    .filter(|(flag, _)| flags.contains(*flag))
    .map(|(_, text)| text)
    .collect();
    io.out.push_str(&fields.join(" "));
    io.out.push('\n');
    0
}

fn cd(shell: &mut Shell<'_, '_>, args: &[String], io: &mut Io) -> i32 {
    let target = match args.first() {
        Some(dir) if dir != "-" => dir.clone(),
        _ => match shell.vars.get("HOME") {
            Some(home) => home.clone(),
            None => {
                io.err.push_str("sh: 1: cd: HOME not set\n");
                return 2;
            }
        },
    };
    let path = shell.absolute(&target);
    match shell.files().stat(&path) {
        Ok((real, _)) if shell.files().may_enter(&real) => {
            shell.cwd = real;
            shell.vars.insert("PWD".into(), shell.cwd.clone());
            0
        }
        _ => {
            io.err
                .push_str(&format!("sh: 1: cd: can't cd to {target}\n"));
            2
        }
    }
}

/// dash's echo escapes; the flag says `\c` stopped the output.
fn backslash_escapes(text: &str) -> (String, bool) {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('a') => out.push('\u{7}'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('v') => out.push('\u{b}'),
            Some('\\') => out.push('\\'),
            Some('c') => return (out, true),
            Some('0') => {
                let mut value = 0u32;
                for _ in 0..3 {
                    match chars.peek().and_then(|c| c.to_digit(8)) {
                        Some(digit) => {
                            value = value * 8 + digit;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(value).unwrap_or('\u{fffd}'));
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    (out, false)
}

fn printf(args: &[String], io: &mut Io) -> i32 {
    let Some(format) = args.first() else {
        io.err.push_str("printf: usage: printf format [arg ...]\n");
        return 2;
    };
    let mut values = args[1..].iter();
    let mut out = String::new();
    // The format is reused while arguments remain, as printf(1) does.
    loop {
        let mut chars = format.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '%' => match chars.next() {
                    Some('%') => out.push('%'),
                    Some('s') => out.push_str(values.next().map_or("", String::as_str)),
                    Some('b') => {
                        out.push_str(&backslash_escapes(values.next().map_or("", String::as_str)).0)
                    }
                    Some('d' | 'i') => {
                        let value = values
                            .next()
                            .and_then(|v| v.trim().parse::<i64>().ok())
                            .unwrap_or(0);
                        out.push_str(&value.to_string());
                    }
                    Some('x') => {
                        let value = values
                            .next()
                            .and_then(|v| v.trim().parse::<i64>().ok())
                            .unwrap_or(0);
                        out.push_str(&format!("{value:x}"));
                    }
                    Some(other) => {
                        out.push('%');
                        out.push(other);
                    }
                    None => out.push('%'),
                },
                '\\' => {
                    let escape: String = ['\\'].into_iter().chain(chars.next()).collect();
                    out.push_str(&backslash_escapes(&escape).0);
                }
                c => out.push(c),
            }
        }
        if values.len() == 0 || !format.contains('%') {
            break;
        }
    }
    io.out.push_str(&out);
    0
}

fn test(shell: &mut Shell<'_, '_>, name: &str, args: &[String], io: &mut Io) -> i32 {
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    if name == "[" {
        if args.last() != Some(&"]") {
            io.err.push_str("sh: 1: [: missing ]\n");
            return 2;
        }
        args.pop();
    }
    let (negated, args) = match args.split_first() {
        Some((&"!", rest)) => (true, rest.to_vec()),
        _ => (false, args),
    };
    let truth = match args.as_slice() {
        [] => false,
        [word] => !word.is_empty(),
        ["-n", word] => !word.is_empty(),
        ["-z", word] => word.is_empty(),
        [op @ ("-e" | "-f" | "-d" | "-r" | "-w" | "-x" | "-s"), path] => {
            let path = shell.absolute(path);
            match shell.files().stat(&path) {
                Ok((_, node)) => match *op {
                    "-f" => !node.is_dir(),
                    "-d" => node.is_dir(),
                    "-s" => node.size() > 0,
                    "-r" => shell.files().read(&path).is_ok(),
                    _ => true,
                },
                Err(_) => false,
            }
        }
        [a, "=", b] => a == b,
        [a, "!=", b] => a != b,
        [a, op @ ("-eq" | "-ne" | "-lt" | "-gt" | "-le" | "-ge"), b] => {
            let (a, b) = (a.parse::<i64>().unwrap_or(0), b.parse::<i64>().unwrap_or(0));
            match *op {
                "-eq" => a == b,
                "-ne" => a != b,
                "-lt" => a < b,
                "-gt" => a > b,
                "-le" => a <= b,
                _ => a >= b,
            }
        }
        _ => false,
    };
    i32::from(truth == negated)
}

fn cat(shell: &mut Shell<'_, '_>, args: &[String], stdin: &str, io: &mut Io) -> Status {
    let (_, operands) = flags(args);
    let (texts, status) = inputs(shell, "cat", &operands, stdin, io)?;
    for (_, text) in texts {
        io.out.push_str(&text);
    }
    Ok(status)
}

fn mode_string(node: &Node) -> String {
    let kind = match node.content {
        Content::Dir => 'd',
        Content::Symlink(_) => 'l',
        _ => '-',
    };
    let mut out = String::from(kind);
    for (shift, special, special_char) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (node.mode >> shift) & 7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        let exec = bits & 1 != 0;
        out.push(match (node.mode & special != 0, exec) {
            (true, true) => special_char,
            (true, false) => special_char.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    out
}

/// `ls -l`'s date: the time for files of the last six months, else the year.
fn ls_date(mtime: i64, now: f64) -> String {
    let time = chrono::DateTime::from_timestamp(mtime, 0).unwrap_or_default();
    if (now as i64 - mtime).abs() < 182 * 86_400 {
        time.format("%b %e %H:%M").to_string()
    } else {
        time.format("%b %e  %Y").to_string()
    }
}

fn ls(shell: &mut Shell<'_, '_>, args: &[String], io: &mut Io) -> Status {
    let (flags, mut operands) = flags(args);
    let long = flags.contains('l') || flags.contains('n');
    let all = flags.contains('a');
    let almost_all = flags.contains('A');
    let directory_itself = flags.contains('d');
    if operands.is_empty() {
        operands.push(".");
    }
    let mut status = 0;
    let mut listings: Vec<(String, Vec<(String, Node)>)> = Vec::new();
    let mut plain_files: Vec<(String, Node)> = Vec::new();
    for operand in &operands {
        shell.machine.budget.step()?;
        let path = shell.absolute(operand);
        let stat = if long {
            shell.files().resolve(&path, false)
        } else {
            shell.files().stat(&path)
        };
        match stat {
            Ok((_, node)) if node.is_dir() && !directory_itself => {
                match shell.files().list(&path) {
                    Ok(mut entries) => {
                        entries.retain(|(name, _)| all || almost_all || !name.starts_with('.'));
                        if all {
                            let here = node.clone();
                            let parent = shell
                                .files()
                                .stat(&fs::normalise(&path, ".."))
                                .map(|(_, n)| n)
                                .unwrap_or_else(|_| here.clone());
                            entries.insert(0, ("..".into(), parent));
                            entries.insert(0, (".".into(), here));
                        }
                        listings.push(((*operand).to_owned(), entries));
                    }
                    Err(err) => {
                        io.err
                            .push_str(&format!("ls: cannot open directory '{operand}': {err}\n"));
                        status = 2;
                    }
                }
            }
            Ok((_, node)) => plain_files.push(((*operand).to_owned(), node)),
            Err(err) => {
                io.err
                    .push_str(&format!("ls: cannot access '{operand}': {err}\n"));
                status = 2;
            }
        }
    }
    let several = operands.len() > 1;
    let host_users = shell.machine.sim.host.users.clone();
    let now = shell.machine.now;
    let render = |entries: &[(String, Node)], with_total: bool| -> String {
        if !long {
            return entries
                .iter()
                .map(|(name, _)| format!("{name}\n"))
                .collect();
        }
        let numeric = flags.contains('n');
        let rows: Vec<[String; 6]> = entries
            .iter()
            .map(|(name, node)| {
                let links = if node.is_dir() { 2 } else { 1 };
                let owner = if numeric {
                    node.uid.to_string()
                } else {
                    user_name(&host_users, node.uid)
                };
                let group = if numeric {
                    node.gid.to_string()
                } else {
                    group_name(&host_users, node.gid)
                };
                let name = match &node.content {
                    Content::Symlink(target) => format!("{name} -> {target}"),
                    _ => name.clone(),
                };
                [
                    mode_string(node),
                    links.to_string(),
                    owner,
                    group,
                    node.size().to_string(),
                    format!("{} {name}", ls_date(node.mtime, now)),
                ]
            })
            .collect();
        let width = |column: usize| rows.iter().map(|r| r[column].len()).max().unwrap_or(0);
        let widths = [width(1), width(2), width(3), width(4)];
        let mut out = String::new();
        if with_total {
            let blocks: u64 = entries
                .iter()
                .map(|(_, n)| n.size().div_ceil(4096) * 4)
                .sum();
            out.push_str(&format!("total {blocks}\n"));
        }
        for row in rows {
            out.push_str(&format!(
                "{} {:>w1$} {:<w2$} {:<w3$} {:>w4$} {}\n",
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                row[5],
                w1 = widths[0],
                w2 = widths[1],
                w3 = widths[2],
                w4 = widths[3]
            ));
        }
        out
    };
    io.out.push_str(&render(&plain_files, false));
    for (i, (operand, entries)) in listings.iter().enumerate() {
        if several {
            if i > 0 || !plain_files.is_empty() {
                io.out.push('\n');
            }
            io.out.push_str(&format!("{operand}:\n"));
        }
        io.out.push_str(&render(entries, true));
    }
    Ok(status)
}

fn start_of(shell: &Shell<'_, '_>, process: &Process) -> chrono::DateTime<chrono::Utc> {
    let boot = shell.machine.sim.host.boot_time(shell.machine.now);
    chrono::DateTime::from_timestamp((boot + f64::from(process.started)) as i64, 0)
        .unwrap_or_default()
}

fn ps(shell: &mut Shell<'_, '_>, args: &[String], io: &mut Io) -> i32 {
    let host = &shell.machine.sim.host;
    let user = host.web_user().to_owned();
    let now = shell.machine.now;
    let boot = host.boot_time(now);
    let own_start = (now - boot) as u32;
    let sh_pid = shell.next_pid.saturating_sub(1).max(2);
    let ps_pid = shell.next_pid + 1;
    let line = shell.line.clone();
    let mut processes = host.processes.clone();
    for (pid, command, stat) in [
        (sh_pid, format!("sh -c {line}"), "S"),
        (ps_pid, format!("ps {}", args.join(" ")), "R"),
    ] {
        processes.push(Process {
            user: user.clone(),
            pid,
            cpu: 0.0,
            mem: 0.0,
            vsz: 2_484,
            rss: 520,
            tty: "?",
            stat,
            started: own_start,
            time: 0,
            command: command.trim_end().to_owned(),
        });
    }
    let all = args
        .iter()
        .any(|a| a.contains('a') || a.contains('e') || a.contains('A') || a.contains('x'));
    let full = args.iter().any(|a| a.contains('f'));
    let bsd = args.iter().any(|a| a.contains('u') && !a.starts_with('-'));
    let short_user = |name: &str| {
        if name.len() > 8 {
            format!("{}+", &name[..7])
        } else {
            name.to_owned()
        }
    };
    let root_apache = processes
        .iter()
        .find(|p| p.user == "root" && p.command.starts_with("/usr/sbin/apache2"))
        .map_or(1, |p| p.pid);
    let ppid = |p: &Process| match p.pid {
        1 | 2 => 0,
        _ if p.command.starts_with('[') => 2,
        _ if p.user == user && p.command.starts_with("/usr/sbin/apache2") => root_apache,
        _ if p.pid == sh_pid => root_apache,
        _ if p.pid == ps_pid => sh_pid,
        _ => 1,
    };
    if bsd {
        io.out.push_str(
            "USER         PID %CPU %MEM    VSZ   RSS TTY      STAT START   TIME COMMAND\n",
        );
        for p in &processes {
            let start = start_of(shell, p);
            let start = if now - start.timestamp() as f64 > 86_400.0 {
                start.format("%b%d").to_string()
            } else {
                start.format("%H:%M").to_string()
            };
            io.out.push_str(&format!(
                "{:<8} {:>7} {:>4.1} {:>4.1} {:>6} {:>5} {:<8} {:<4} {:>5} {:>6} {}\n",
                short_user(&p.user),
                p.pid,
                p.cpu,
                p.mem,
                p.vsz,
                p.rss,
                p.tty,
                p.stat,
                start,
                format!("{}:{:02}", p.time / 60, p.time % 60),
                p.command
            ));
        }
    } else if all || full {
        io.out
            .push_str("UID          PID    PPID  C STIME TTY          TIME CMD\n");
        for p in &processes {
            let start = start_of(shell, p);
            let stime = if now - start.timestamp() as f64 > 86_400.0 {
                start.format("%b%d").to_string()
            } else {
                start.format("%H:%M").to_string()
            };
            io.out.push_str(&format!(
                "{:<8} {:>7} {:>7}  0 {:>5} {:<8} {:02}:{:02}:{:02} {}\n",
                short_user(&p.user),
                p.pid,
                ppid(p),
                stime,
                p.tty,
                p.time / 3600,
                p.time / 60 % 60,
                p.time % 60,
                p.command
            ));
        }
    } else {
        io.out.push_str(&format!(
            "    PID TTY          TIME CMD\n{sh_pid:>7} ?        00:00:00 sh\n{ps_pid:>7} ?        00:00:00 ps\n"
        ));
    }
    0
}

fn counters(shell: &Shell<'_, '_>) -> (u64, u64, u64, u64) {
    let host = &shell.machine.sim.host;
    let up = (shell.machine.now - host.boot_time(shell.machine.now)) as u64;
    let mut rng = host.rng("traffic");
    let rx_rate = 2_000 + rng.u64(0..20_000);
    let tx_rate = rx_rate * 3 + rng.u64(0..20_000);
    let rx_bytes = up * rx_rate;
    let tx_bytes = up * tx_rate;
    (rx_bytes / 700, rx_bytes, tx_bytes / 1100, tx_bytes)
}

fn human_bytes(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", units[unit])
}

fn ifconfig(shell: &Shell<'_, '_>) -> String {
    let host = &shell.machine.sim.host;
    let (rx_packets, rx_bytes, tx_packets, tx_bytes) = counters(shell);
    let lo_bytes = rx_bytes / 40;
    format!(
        "{iface}: flags=4163<UP,BROADCAST,RUNNING,MULTICAST>  mtu 1500\n\
         \x20       inet {addr}  netmask {mask}  broadcast {bcast}\n\
         \x20       inet6 {ll}  prefixlen 64  scopeid 0x20<link>\n\
         \x20       ether {mac}  txqueuelen 1000  (Ethernet)\n\
         \x20       RX packets {rx_packets}  bytes {rx_bytes} ({})\n\
         \x20       RX errors 0  dropped {}  overruns 0  frame 0\n\
         \x20       TX packets {tx_packets}  bytes {tx_bytes} ({})\n\
         \x20       TX errors 0  dropped 0 overruns 0  carrier 0  collisions 0\n\n\
         lo: flags=73<UP,LOOPBACK,RUNNING>  mtu 65536\n\
         \x20       inet 127.0.0.1  netmask 255.0.0.0\n\
         \x20       inet6 ::1  prefixlen 128  scopeid 0x10<host>\n\
         \x20       loop  txqueuelen 1000  (Local Loopback)\n\
         \x20       RX packets {lo_packets}  bytes {lo_bytes} ({})\n\
         \x20       RX errors 0  dropped 0  overruns 0  frame 0\n\
         \x20       TX packets {lo_packets}  bytes {lo_bytes} ({})\n\
         \x20       TX errors 0  dropped 0 overruns 0  carrier 0  collisions 0\n\n",
        human_bytes(rx_bytes),
        rx_packets / 90_000,
        human_bytes(tx_bytes),
        human_bytes(lo_bytes),
        human_bytes(lo_bytes),
        iface = host.profile.interface,
        addr = host.address,
        mask = host.netmask(),
        bcast = host.broadcast(),
        ll = host.link_local(),
        mac = host.mac_text(),
        lo_packets = lo_bytes / 300,
    )
}

fn ip(shell: &mut Shell<'_, '_>, args: &[String], io: &mut Io) -> i32 {
    let host = &shell.machine.sim.host;
    let words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let iface = &host.profile.interface;
    let object = words.first().copied().unwrap_or("");
    let addresses = format!(
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN group default qlen 1000\n\
         \x20   link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n\
         \x20   inet 127.0.0.1/8 scope host lo\n       valid_lft forever preferred_lft forever\n\
         \x20   inet6 ::1/128 scope host \n       valid_lft forever preferred_lft forever\n\
         2: {iface}: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state UP group default qlen 1000\n\
         \x20   link/ether {mac} brd ff:ff:ff:ff:ff:ff\n\
         \x20   inet {addr}/{prefix} brd {bcast} scope global {iface}\n       valid_lft forever preferred_lft forever\n\
         \x20   inet6 {ll}/64 scope link \n       valid_lft forever preferred_lft forever\n",
        mac = host.mac_text(),
        addr = host.address,
        prefix = host.prefix,
        bcast = host.broadcast(),
        ll = host.link_local(),
    );
    let text = match object {
        "a" | "addr" | "address" => addresses,
        "r" | "ro" | "route" => {
            let network =
                std::net::Ipv4Addr::from(u32::from(host.address) & u32::from(host.netmask()));
            format!(
                "default via {gw} dev {iface} onlink \n{network}/{prefix} dev {iface} proto kernel scope link src {addr} \n",
                gw = host.gateway,
                prefix = host.prefix,
                addr = host.address
            )
        }
        "l" | "link" => format!(
            "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\n\
             \x20   link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n\
             2: {iface}: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state UP mode DEFAULT group default qlen 1000\n\
             \x20   link/ether {} brd ff:ff:ff:ff:ff:ff\n",
            host.mac_text()
        ),
        _ => {
            io.err.push_str(
                "Usage: ip [ OPTIONS ] OBJECT { COMMAND | help }\n       ip [ -force ] -batch filename\n\
                 where  OBJECT := { link | address | addrlabel | route | rule | neigh | ntable |\n\
                 \x20                  tunnel | tuntap | maddress | mroute | mrule | monitor | xfrm |\n\
                 \x20                  netns | l2tp | fou | macsec | tcp_metrics | token | netconf | ila |\n\
                 \x20                  vrf | sr | nexthop | mptcp }\n",
            );
            return if object.is_empty() { 255 } else { 1 };
        }
    };
    io.out.push_str(&text);
    0
}

fn netstat(args: &[String], io: &mut Io) -> i32 {
    let (flags, _) = flags(args);
    let programs = flags.contains('p');
    if programs {
        io.err.push_str(
            "(Not all processes could be identified, non-owned process info\n \
             will not be shown, you would have to be root to see it all.)\n",
        );
    }
    let listening_only = flags.contains('l');
    io.out.push_str(if listening_only {
        "Active Internet connections (only servers)\n"
    } else {
        "Active Internet connections (servers and established)\n"
    });
    let program = if programs { "-                   " } else { "" };
    let header = if programs { "PID/Program name    " } else { "" };
    io.out.push_str(&format!(
        "Proto Recv-Q Send-Q Local Address           Foreign Address         State       {header}\n"
    ));
    let mut rows = vec![
        ("tcp", "0.0.0.0:22", "0.0.0.0:*", "LISTEN"),
        ("tcp", "127.0.0.1:3306", "0.0.0.0:*", "LISTEN"),
        ("tcp6", ":::80", ":::*", "LISTEN"),
        ("tcp6", ":::22", ":::*", "LISTEN"),
    ];
    if !flags.contains('t') || flags.contains('u') {
        rows.push(("udp", "0.0.0.0:68", "0.0.0.0:*", ""));
    }
    for (proto, local, foreign, state) in rows {
        io.out.push_str(&format!(
            "{proto:<5} {:>6} {:>6} {local:<23} {foreign:<23} {state:<11} {program}\n",
            0, 0
        ));
    }
    0
}

/// The host and port a URL names, `http` assumed without a scheme.
fn endpoint(url: &str) -> Option<(String, u16, String)> {
    let with_scheme = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    let parsed = url::Url::parse(&with_scheme).ok()?;
    let host = parsed.host_str()?.trim_matches(['[', ']']).to_owned();
    let port = parsed.port_or_known_default().unwrap_or(80);
    Some((host, port, parsed.to_string()))
}

fn is_ip(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
}

fn wget(shell: &mut Shell<'_, '_>, args: &[String], io: &mut Io) -> i32 {
    let quiet = args
        .iter()
        .any(|a| a == "-q" || a == "--quiet" || a == "-nv");
    let mut urls = Vec::new();
    let mut skip_next = false;
    for arg in args {
        if skip_next {
            skip_next = false;
        } else if ["-O", "-o", "-P", "-U", "-T", "-t", "--header"].contains(&arg.as_str()) {
            skip_next = true;
        } else if !arg.starts_with('-') {
            urls.push(arg.clone());
        }
    }
    if urls.is_empty() {
        io.err.push_str("wget: missing URL\nUsage: wget [OPTION]... [URL]...\n\nTry `wget --help' for more options.\n");
        return 1;
    }
    let stamp = chrono::DateTime::from_timestamp(shell.machine.now as i64, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S");
    let mut status = 0;
    for url in urls {
        shell.machine.evidence.url(&url);
        let Some((host, port, full)) = endpoint(&url) else {
            io.err.push_str(&format!("{url}: Invalid URL.\n"));
            status = 1;
            continue;
        };
        if quiet {
            status = 4;
            continue;
        }
        io.err.push_str(&format!("--{stamp}--  {full}\n"));
        if is_ip(&host) {
            io.err.push_str(&format!(
                "Connecting to {host}:{port}... failed: Connection refused.\n"
            ));
        } else {
            io.err.push_str(&format!(
                "Resolving {host} ({host})... failed: Temporary failure in name resolution.\n\
                 wget: unable to resolve host address '{host}'\n"
            ));
        }
        status = 4;
    }
    status
}

fn curl(shell: &mut Shell<'_, '_>, args: &[String], io: &mut Io) -> i32 {
    let (flags, _) = flags(args);
    let silent = flags.contains('s') && !flags.contains('S');
    let mut skip_next = false;
    let mut status = 0;
    let mut named = false;
    for arg in args {
        if skip_next {
            skip_next = false;
            continue;
        }
        if [
            "-o",
            "-d",
            "-H",
            "-A",
            "-X",
            "-u",
            "-e",
            "-F",
            "--data",
            "--output",
            "--user-agent",
        ]
        .contains(&arg.as_str())
        {
            skip_next = true;
            continue;
        }
        if arg.starts_with('-') {
            continue;
        }
        named = true;
        shell.machine.evidence.url(arg);
        let Some((host, port, _)) = endpoint(arg) else {
            if !silent {
                io.err
                    .push_str("curl: (3) URL using bad/illegal format or missing URL\n");
            }
            status = 3;
            continue;
        };
        if is_ip(&host) {
            if !silent {
                io.err.push_str(&format!(
                    "curl: (7) Failed to connect to {host} port {port}: Connection refused\n"
                ));
            }
            status = 7;
        } else {
            if !silent {
                io.err
                    .push_str(&format!("curl: (6) Could not resolve host: {host}\n"));
            }
            status = 6;
        }
    }
    if !named {
        io.err
            .push_str("curl: try 'curl --help' or 'curl --manual' for more information\n");
        return 2;
    }
    status
}

fn netcat(shell: &mut Shell<'_, '_>, args: &[String], io: &mut Io) -> i32 {
    let (flags, operands) = flags(args);
    if flags.contains('l') {
        // Listening: the request would hang until the client gave up; answer nothing.
        return 0;
    }
    let (Some(host), Some(port)) = (operands.first(), operands.get(1)) else {
        io.err.push_str("no destination\n");
        return 1;
    };
    shell.machine.evidence.url(&format!("tcp://{host}:{port}"));
    if is_ip(host) {
        io.err.push_str(&format!(
            "({host}) [{host}] {port} (?) : Connection refused\n"
        ));
    } else {
        io.err.push_str(&format!(
            "{host}: forward host lookup failed: Unknown host\n"
        ));
    }
    1
}

fn ping(shell: &mut Shell<'_, '_>, args: &[String], io: &mut Io) -> i32 {
    let mut target = None;
    let mut count = 4u32;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "-c" => count = iter.next().and_then(|n| n.parse().ok()).unwrap_or(count),
            "-i" | "-W" | "-w" | "-s" | "-t" | "-I" => {
                iter.next();
            }
            _ if !arg.starts_with('-') => target = Some(arg.clone()),
            _ => {}
        }
    }
    let Some(target) = target else {
        io.err
            .push_str("ping: usage error: Destination address required\n");
        return 1;
    };
    shell.machine.evidence.url(&format!("icmp://{target}"));
    if !is_ip(&target) {
        io.err.push_str(&format!(
            "ping: {target}: Temporary failure in name resolution\n"
        ));
        return 2;
    }
    let count = count.clamp(1, 10);
    io.out.push_str(&format!(
        "PING {target} ({target}) 56(84) bytes of data.\n\n--- {target} ping statistics ---\n\
         {count} packets transmitted, 0 received, 100% packet loss, time {}ms\n\n",
        (count - 1) * 1000 + 3
    ));
    1
}

/// `head` and `tail`: lines (`-n N`, `-N`) or bytes (`-c N`).
fn text_filter(
    shell: &mut Shell<'_, '_>,
    program: &str,
    args: &[String],
    stdin: &str,
    io: &mut Io,
) -> Status {
    let mut count: i64 = 10;
    let mut bytes = false;
    let mut operands = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "-n" || arg == "-c" {
            bytes = arg == "-c";
            count = iter
                .next()
                .and_then(|n| n.trim_start_matches('+').parse().ok())
                .unwrap_or(10);
        } else if let Some(n) = arg
            .strip_prefix("-n")
            .or_else(|| arg.strip_prefix('-'))
            .and_then(|n| n.parse().ok())
        {
            count = n;
        } else if !arg.starts_with('-') || arg == "-" {
            operands.push(arg.as_str());
        }
    }
    let count = count.max(0) as usize;
    let (texts, status) = inputs(shell, program, &operands, stdin, io)?;
    let several = texts.len() > 1;
    for (i, (name, text)) in texts.iter().enumerate() {
        if several {
            io.out.push_str(&format!(
                "{}==> {name} <==\n",
                if i > 0 { "\n" } else { "" }
            ));
        }
        if bytes {
            let part = if program == "head" {
                &text[..text.floor_char_boundary(count.min(text.len()))]
            } else {
                &text[text.ceil_char_boundary(text.len().saturating_sub(count))..]
            };
            io.out.push_str(part);
            continue;
        }
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let chosen = if program == "head" {
            &lines[..count.min(lines.len())]
        } else {
            &lines[lines.len().saturating_sub(count)..]
        };
        io.out.push_str(&chosen.concat());
    }
    Ok(status)
}

fn grep(shell: &mut Shell<'_, '_>, args: &[String], stdin: &str, io: &mut Io) -> Status {
    let mut flags = String::new();
    let mut patterns = Vec::new();
    let mut operands = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "-e" {
            patterns.extend(iter.next().cloned());
        } else if let Some(cluster) = arg
            .strip_prefix('-')
            .filter(|c| !c.is_empty() && !c.starts_with('-'))
        {
            flags.push_str(cluster);
        } else if arg.starts_with("--") {
        } else {
            operands.push(arg.as_str());
        }
    }
    if patterns.is_empty() {
        let Some(first) = (!operands.is_empty()).then(|| operands.remove(0)) else {
            io.err.push_str("Usage: grep [OPTION]... PATTERNS [FILE]...\nTry 'grep --help' for more information.\n");
            return Ok(2);
        };
        patterns.push(first.to_owned());
    }
    let pattern = patterns
        .iter()
        .map(|p| {
            if flags.contains('F') {
                regex::escape(p)
            } else if flags.contains('E') {
                p.clone()
            } else {
                basic_to_extended(p)
            }
        })
        .collect::<Vec<_>>()
        .join("|");
    let pattern = if flags.contains('w') {
        format!(r"\b(?:{pattern})\b")
    } else {
        pattern
    };
    let regex = match regex::RegexBuilder::new(&pattern)
        .case_insensitive(flags.contains('i'))
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
    {
        Ok(regex) => regex,
        Err(_) => {
            io.err.push_str("grep: Unmatched ( or \\(\n");
            return Ok(2);
        }
    };
    let (texts, mut status) = inputs(shell, "grep", &operands, stdin, io)?;
    let prefix_names = texts.len() > 1;
    let mut matched_any = false;
    for (name, text) in texts {
        let mut count = 0;
        for (number, line) in text.lines().enumerate() {
            shell.machine.budget.step()?;
            if regex.is_match(line) == flags.contains('v') {
                continue;
            }
            count += 1;
            matched_any = true;
            if flags.contains('c') || flags.contains('l') || flags.contains('q') {
                continue;
            }
            if prefix_names {
                io.out.push_str(&format!("{name}:"));
            }
            if flags.contains('n') {
                io.out.push_str(&format!("{}:", number + 1));
            }
            if flags.contains('o') {
                for found in regex.find_iter(line) {
                    io.out.push_str(found.as_str());
                    io.out.push('\n');
                }
            } else {
                io.out.push_str(line);
                io.out.push('\n');
            }
        }
        if flags.contains('c') {
            if prefix_names {
                io.out.push_str(&format!("{name}:"));
            }
            io.out.push_str(&format!("{count}\n"));
        } else if flags.contains('l') && count > 0 {
            io.out.push_str(&format!(
                "{}\n",
                if name == "-" {
                    "(standard input)"
                } else {
                    &name
                }
            ));
        }
    }
    if status == 0 && !matched_any {
        status = 1;
    }
    Ok(status)
}

/// A POSIX basic regular expression as the regex crate reads extended ones.
fn basic_to_extended(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(special @ ('(' | ')' | '|' | '{' | '}' | '+' | '?')) => out.push(special),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push_str("\\\\"),
            },
            '(' | ')' | '|' | '{' | '}' | '+' | '?' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

fn wc(shell: &mut Shell<'_, '_>, args: &[String], stdin: &str, io: &mut Io) -> Status {
    let (mut flags, operands) = flags(args);
    if flags.is_empty() {
        flags = "lwc".into();
    }
    let (texts, status) = inputs(shell, "wc", &operands, stdin, io)?;
    let counts: Vec<(String, [usize; 3])> = texts
        .iter()
        .map(|(name, text)| {
            (
                name.clone(),
                [
                    text.matches('\n').count(),
                    text.split_whitespace().count(),
                    text.len(),
                ],
            )
        })
        .collect();
    let chosen = |c: &[usize; 3]| -> Vec<usize> {
        [('l', c[0]), ('w', c[1]), ('c', c[2])]
            .into_iter()
            .filter(|(flag, _)| flags.contains(*flag) || (*flag == 'c' && flags.contains('m')))
            .map(|(_, n)| n)
            .collect()
    };
    let from_stdin = operands.is_empty();
    let largest = counts
        .iter()
        .flat_map(|(_, c)| chosen(c))
        .max()
        .unwrap_or(0);
    let width = if from_stdin && chosen(&[0, 0, 0]).len() > 1 {
        7
    } else {
        largest.to_string().len()
    };
    let mut total = [0usize; 3];
    for (name, count) in &counts {
        for i in 0..3 {
            total[i] += count[i];
        }
        let numbers: Vec<String> = chosen(count)
            .iter()
            .map(|n| format!("{n:>width$}"))
            .collect();
        let name = if from_stdin {
            String::new()
        } else {
            format!(" {name}")
        };
        io.out.push_str(&format!("{}{name}\n", numbers.join(" ")));
    }
    if counts.len() > 1 {
        let numbers: Vec<String> = chosen(&total)
            .iter()
            .map(|n| format!("{n:>width$}"))
            .collect();
        io.out.push_str(&format!("{} total\n", numbers.join(" ")));
    }
    Ok(status)
}

fn base64(shell: &mut Shell<'_, '_>, args: &[String], stdin: &str, io: &mut Io) -> Status {
    let (flags, operands) = flags(args);
    let decode = flags.contains('d') || args.iter().any(|a| a == "--decode");
    let unwrapped = args.windows(2).any(|w| w[0] == "-w" && w[1] == "0") || flags.contains("w0");
    let operands: Vec<&str> = operands.into_iter().filter(|o| *o != "0").collect();
    let (texts, status) = inputs(shell, "base64", &operands, stdin, io)?;
    let text: String = texts.into_iter().map(|(_, t)| t).collect();
    let engine = base64::engine::general_purpose::STANDARD;
    if decode {
        let cleaned: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        match engine.decode(cleaned.as_bytes()) {
            Ok(bytes) => io.out.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => {
                io.err.push_str("base64: invalid input\n");
                return Ok(1);
            }
        }
        return Ok(status);
    }
    let encoded = engine.encode(text.as_bytes());
    if unwrapped {
        io.out.push_str(&encoded);
        io.out.push('\n');
    } else {
        for chunk in encoded.as_bytes().chunks(76) {
            io.out.push_str(&String::from_utf8_lossy(chunk));
            io.out.push('\n');
        }
    }
    Ok(status)
}

fn digest(
    shell: &mut Shell<'_, '_>,
    program: &str,
    args: &[String],
    stdin: &str,
    io: &mut Io,
) -> Status {
    let (_, operands) = flags(args);
    let (texts, status) = inputs(shell, program, &operands, stdin, io)?;
    let algorithm = program.trim_end_matches("sum");
    for (name, text) in texts {
        io.out.push_str(&format!(
            "{}  {name}\n",
            hex_digest(algorithm, text.as_bytes())
        ));
    }
    Ok(status)
}

fn env(shell: &mut Shell<'_, '_>, program: &str, args: &[String], io: &mut Io) -> i32 {
    let hidden = ["IFS", "PPID", "OPTIND", "PS1", "PS2", "PS4"];
    if program == "printenv" && !args.is_empty() {
        let mut status = 0;
        for name in args {
            match shell.vars.get(name) {
                Some(value) if !hidden.contains(&name.as_str()) => {
                    io.out.push_str(&format!("{value}\n"))
                }
                _ => status = 1,
            }
        }
        return status;
    }
    for (name, value) in &shell.vars {
        if !hidden.contains(&name.as_str()) {
            io.out.push_str(&format!("{name}={value}\n"));
        }
    }
    0
}

fn uptime_line(shell: &Shell<'_, '_>) -> String {
    let now = shell.machine.now;
    let host = &shell.machine.sim.host;
    let up = (now - host.boot_time(now)) as u64;
    let clock = chrono::DateTime::from_timestamp(now as i64, 0)
        .unwrap_or_default()
        .format("%H:%M:%S");
    let days = up / 86_400;
    let hours = up % 86_400 / 3600;
    let minutes = up % 3600 / 60;
    let load = host
        .files
        .get("/proc/loadavg")
        .and_then(|node| match &node.content {
            Content::Generated(generate) => Some(generate(now)),
            _ => None,
        })
        .unwrap_or_default();
    let loads: Vec<&str> = load.split(' ').take(3).collect();
    format!(
        " {clock} up {days} day{}, {hours:>2}:{minutes:02},  0 users,  load average: {}",
        if days == 1 { "" } else { "s" },
        loads.join(", ")
    )
}

fn date(now: f64, args: &[String], io: &mut Io) -> i32 {
    let time = chrono::DateTime::from_timestamp(now as i64, 0).unwrap_or_default();
    let format = args
        .iter()
        .find_map(|a| a.strip_prefix('+'))
        .unwrap_or("%a %b %e %H:%M:%S UTC %Y");
    let mut text = String::new();
    if write!(text, "{}", time.format(format)).is_err() {
        text = format.to_owned();
    }
    io.out.push_str(&text);
    io.out.push('\n');
    0
}

fn which(shell: &mut Shell<'_, '_>, args: &[String], io: &mut Io) -> i32 {
    let mut status = 0;
    for name in args.iter().filter(|a| !a.starts_with('-')) {
        let path = shell.vars.get("PATH").cloned().unwrap_or_default();
        let found = path.split(':').find_map(|dir| {
            let candidate = format!("{dir}/{name}");
            shell
                .files()
                .stat(&candidate)
                .ok()
                .filter(|(_, n)| !n.is_dir())
                .map(|_| candidate)
        });
        match found {
            Some(path) => io.out.push_str(&format!("{path}\n")),
            None => status = 1,
        }
    }
    status
}

fn files(shell: &mut Shell<'_, '_>, program: &str, args: &[String], io: &mut Io) -> Status {
    let (flags, operands) = flags(args);
    if operands.is_empty() {
        io.err.push_str(&format!(
            "{program}: missing operand\nTry '{program} --help' for more information.\n"
        ));
        return Ok(1);
    }
    let mut status = 0;
    let mut fail = |io: &mut Io, text: String| {
        io.err.push_str(&text);
        status = 1;
    };
    match program {
        "touch" | "mkdir" | "rm" => {
            for operand in &operands {
                shell.machine.budget.step()?;
                let path = shell.absolute(operand);
                let result = match program {
                    "touch" => shell.files().touch(&path),
                    "mkdir" => match shell.files().mkdir(&path) {
                        Err(FsError::AlreadyExists) if flags.contains('p') => Ok(()),
                        other => other,
                    },
                    _ => match shell
                        .files()
                        .remove(&path, flags.contains('r') || flags.contains('R'))
                    {
                        Err(FsError::NotFound) if flags.contains('f') => Ok(()),
                        other => other,
                    },
                };
                match result {
                    Ok(()) if program != "rm" => shell.machine.evidence.file_written(&path),
                    Ok(()) => {}
                    Err(err) => {
                        let text = match program {
                            "touch" => format!("touch: cannot touch '{operand}': {err}\n"),
                            "mkdir" => {
                                format!("mkdir: cannot create directory '{operand}': {err}\n")
                            }
                            _ => format!("rm: cannot remove '{operand}': {err}\n"),
                        };
                        fail(io, text);
                    }
                }
            }
        }
        "chmod" => {
            let Some((mode, paths)) = operands.split_first() else {
                return Ok(1);
            };
            if paths.is_empty() {
                io.err
                    .push_str(&format!("chmod: missing operand after '{mode}'\n"));
                return Ok(1);
            }
            for operand in paths {
                let path = shell.absolute(operand);
                let current = match shell.files().stat(&path) {
                    Ok((_, node)) => node.mode,
                    Err(err) => {
                        fail(io, format!("chmod: cannot access '{operand}': {err}\n"));
                        continue;
                    }
                };
                let Some(new) = chmod_mode(mode, current) else {
                    fail(io, format!("chmod: invalid mode: '{mode}'\n"));
                    break;
                };
                if let Err(err) = shell.files().chmod(&path, new) {
                    fail(
                        io,
                        format!("chmod: changing permissions of '{operand}': {err}\n"),
                    );
                }
            }
        }
        _ => {
            // cp and mv: a file to a file or into a directory.
            let Some((target, sources)) = operands.split_last().filter(|(_, s)| !s.is_empty())
            else {
                io.err.push_str(&format!(
                    "{program}: missing destination file operand after '{}'\n",
                    operands[0]
                ));
                return Ok(1);
            };
            let target_path = shell.absolute(target);
            let into_dir = shell
                .files()
                .stat(&target_path)
                .is_ok_and(|(_, n)| n.is_dir());
            for source in sources {
                let text = match shell.read_file(source) {
                    Ok(text) => text,
                    Err(FsError::IsDirectory) => {
                        fail(
                            io,
                            format!("{program}: -r not specified; omitting directory '{source}'\n"),
                        );
                        continue;
                    }
                    Err(err) => {
                        fail(io, format!("{program}: cannot stat '{source}': {err}\n"));
                        continue;
                    }
                };
                let destination = if into_dir {
                    format!("{target_path}/{}", fs::base_name(source))
                } else {
                    target_path.clone()
                };
                match shell.files().write(&destination, &text, false) {
                    Ok(()) => shell.machine.evidence.file_written(&destination),
                    Err(err) => {
                        fail(
                            io,
                            format!("{program}: cannot create regular file '{target}': {err}\n"),
                        );
                        continue;
                    }
                }
                let source_path = shell.absolute(source);
                if program == "mv"
                    && let Err(err) = shell.files().remove(&source_path, false)
                {
                    fail(io, format!("mv: cannot remove '{source}': {err}\n"));
                }
            }
        }
    }
    Ok(status)
}

/// The permission bits `mode` (octal or symbolic) makes of `current`.
fn chmod_mode(mode: &str, current: u32) -> Option<u32> {
    if let Ok(octal) = u32::from_str_radix(mode, 8) {
        return (octal <= 0o7777).then_some(octal);
    }
    let mut result = current;
    for clause in mode.split(',') {
        let op_at = clause.find(['+', '-', '='])?;
        let (who, rest) = clause.split_at(op_at);
        let who = if who.is_empty() || who.contains('a') {
            "ugo"
        } else {
            who
        };
        let op = rest.chars().next()?;
        let mut bits = 0;
        for perm in rest[1..].chars() {
            bits |= match perm {
                'r' => 4,
                'w' => 2,
                'x' => 1,
                _ => return None,
            };
        }
        for (class, shift) in [('u', 6), ('g', 3), ('o', 0)] {
            if !who.contains(class) {
                continue;
            }
            match op {
                '+' => result |= bits << shift,
                '-' => result &= !(bits << shift),
                _ => result = (result & !(7 << shift)) | (bits << shift),
            }
        }
    }
    Some(result)
}

fn sh(shell: &mut Shell<'_, '_>, args: &[String], stdin: &str, io: &mut Io) -> Status {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "-c" {
            let Some(command) = iter.next() else {
                io.err.push_str("sh: 0: -c requires an argument\n");
                return Ok(2);
            };
            return shell.nested(command, "", io);
        }
        if arg.starts_with('-') {
            continue;
        }
        return match shell.read_file(arg) {
            Ok(script) => shell.nested(&script, stdin, io),
            Err(_) => {
                io.err
                    .push_str(&format!("sh: 0: cannot open {arg}: No such file\n"));
                Ok(2)
            }
        };
    }
    // A shell reading its commands from the pipe: `curl ... | sh`.
    shell.nested(stdin, "", io)
}

fn php(shell: &mut Shell<'_, '_>, args: &[String], io: &mut Io) -> Status {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "-r" {
            let code = iter.next().cloned().unwrap_or_default();
            let output = crate::emulation::php::run_code(shell.machine, &code)?;
            io.out.push_str(&output);
            return Ok(0);
        }
        if arg == "-v" {
            let version = &shell.machine.sim.host.profile.php_version;
            io.out.push_str(&format!(
                "PHP {version} (cli) (built: Nov  4 2024 12:25:21) ( NTS )\nCopyright (c) The PHP Group\n\
                 Zend Engine v3.4.0, Copyright (c) Zend Technologies\n    with Zend OPcache v{version}, \
                 Copyright (c), by Zend Technologies\n"
            ));
            return Ok(0);
        }
        if !arg.starts_with('-') {
            return match shell.read_file(arg) {
                Ok(source) => {
                    let output = crate::emulation::php::render(shell.machine, &source)?;
                    io.out.push_str(&output);
                    Ok(0)
                }
                Err(_) => {
                    io.out
                        .push_str(&format!("Could not open input file: {arg}\n"));
                    Ok(1)
                }
            };
        }
    }
    Ok(0)
}

fn find(shell: &mut Shell<'_, '_>, args: &[String], io: &mut Io) -> Status {
    let split = args
        .iter()
        .position(|a| a.starts_with('-'))
        .unwrap_or(args.len());
    let mut roots: Vec<String> = args[..split].to_vec();
    if roots.is_empty() {
        roots.push(".".into());
    }
    let mut name = None;
    let mut kind = None;
    let mut setuid = false;
    let mut writable = false;
    let mut max_depth = usize::MAX;
    let mut iter = args[split..].iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "-name" | "-iname" => name = iter.next().map(|n| (n.clone(), arg == "-iname")),
            "-type" => kind = iter.next().cloned(),
            "-perm" => {
                setuid = iter
                    .next()
                    .is_some_and(|p| p.contains("4000") || p.contains("u=s"))
            }
            "-writable" => writable = true,
            "-maxdepth" => {
                max_depth = iter
                    .next()
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(usize::MAX)
            }
            "-exec" | "-execdir" => {
                // What would run on each hit is recorded with the command line: skip to `;`.
                for rest in iter.by_ref() {
                    if rest == ";" || rest == "+" {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    let web_uid = shell.machine.sim.host.user.uid;
    for root in roots {
        let mut stack = vec![(root.clone(), 0usize)];
        while let Some((path, depth)) = stack.pop() {
            shell.machine.budget.step()?;
            let absolute = shell.absolute(&path);
            let Ok((_, node)) = shell.files().resolve(&absolute, false) else {
                io.err
                    .push_str(&format!("find: '{path}': No such file or directory\n"));
                continue;
            };
            let base = fs::base_name(&path);
            let matches = name.as_ref().is_none_or(|(pattern, insensitive)| {
                if *insensitive {
                    wildcard(&pattern.to_lowercase(), &base.to_lowercase())
                } else {
                    wildcard(pattern, base)
                }
            }) && kind.as_deref().is_none_or(|k| match k {
                "d" => node.is_dir(),
                "l" => matches!(node.content, Content::Symlink(_)),
                _ => !node.is_dir() && !matches!(node.content, Content::Symlink(_)),
            }) && (!setuid || node.mode & 0o4000 != 0)
                && (!writable || node.uid == web_uid || node.mode & 0o002 != 0);
            if matches {
                push_capped(&mut io.out, &format!("{path}\n"), shell.machine.max_output);
            }
            if node.is_dir() && depth < max_depth {
                match shell.files().list(&absolute) {
                    Ok(entries) => {
                        for (child, _) in entries.into_iter().rev() {
                            let child_path = if path.ends_with('/') {
                                format!("{path}{child}")
                            } else {
                                format!("{path}/{child}")
                            };
                            stack.push((child_path, depth + 1));
                        }
                    }
                    Err(err) => io.err.push_str(&format!("find: '{path}': {err}\n")),
                }
            }
        }
    }
    Ok(if io.err.is_empty() { 0 } else { 1 })
}

fn push_capped(out: &mut String, text: &str, cap: usize) {
    super::push_capped(out, text, cap);
}

const DF: &str = "Filesystem      Size  Used Avail Use% Mounted on\n\
udev            1.9G     0  1.9G   0% /dev\n\
tmpfs           394M  532K  393M   1% /run\n\
/dev/vda1        25G  6.1G   18G  26% /\n\
tmpfs           2.0G     0  2.0G   0% /dev/shm\n\
tmpfs           5.0M     0  5.0M   0% /run/lock\n";

fn free(shell: &Shell<'_, '_>) -> String {
    let total = shell.machine.sim.host.profile.memory_mib;
    format!(
        "               total        used        free      shared  buff/cache   available\n\
         Mem:      {total:>10} {:>11} {:>11} {:>11} {:>11} {:>11}\n\
         Swap:            976           8         968\n",
        total / 5,
        total / 8,
        12,
        total - total / 5 - total / 8,
        total * 3 / 4
    )
}

fn cut(shell: &mut Shell<'_, '_>, args: &[String], stdin: &str, io: &mut Io) -> Status {
    let mut delimiter = '\t';
    let mut fields: Option<String> = None;
    let mut characters: Option<String> = None;
    let mut operands = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if let Some(d) = arg.strip_prefix("-d") {
            let value = if d.is_empty() {
                iter.next().cloned().unwrap_or_default()
            } else {
                d.to_owned()
            };
            delimiter = value.chars().next().unwrap_or('\t');
        } else if let Some(f) = arg.strip_prefix("-f") {
            fields = Some(if f.is_empty() {
                iter.next().cloned().unwrap_or_default()
            } else {
                f.to_owned()
            });
        } else if let Some(c) = arg.strip_prefix("-c") {
            characters = Some(if c.is_empty() {
                iter.next().cloned().unwrap_or_default()
            } else {
                c.to_owned()
            });
        } else {
            operands.push(arg.as_str());
        }
    }
    let Some(list) = fields.as_ref().or(characters.as_ref()) else {
        io.err
            .push_str("cut: you must specify a list of bytes, characters, or fields\n");
        return Ok(1);
    };
    let wanted = |i: usize| {
        list.split(',').any(|range| match range.split_once('-') {
            Some((a, b)) => {
                let a = a.parse().unwrap_or(1);
                let b = b.parse().unwrap_or(usize::MAX);
                (a..=b).contains(&i)
            }
            None => range.parse() == Ok(i),
        })
    };
    let (texts, status) = inputs(shell, "cut", &operands, stdin, io)?;
    for (_, text) in texts {
        for line in text.lines() {
            shell.machine.budget.step()?;
            let picked: String = if fields.is_some() {
                if !line.contains(delimiter) {
                    line.to_owned()
                } else {
                    line.split(delimiter)
                        .enumerate()
                        .filter(|(i, _)| wanted(i + 1))
                        .map(|(_, f)| f)
                        .collect::<Vec<_>>()
                        .join(&delimiter.to_string())
                }
            } else {
                line.chars()
                    .enumerate()
                    .filter(|(i, _)| wanted(i + 1))
                    .map(|(_, c)| c)
                    .collect()
            };
            io.out.push_str(&picked);
            io.out.push('\n');
        }
    }
    Ok(status)
}

fn text_tool(
    shell: &mut Shell<'_, '_>,
    program: &str,
    args: &[String],
    stdin: &str,
    io: &mut Io,
) -> Status {
    let (flags, operands) = flags(args);
    if program == "tr" {
        let expand = |set: &str| -> Vec<char> {
            let chars: Vec<char> = backslash_escapes(set).0.chars().collect();
            let mut out = Vec::new();
            let mut i = 0;
            while i < chars.len() {
                if i + 2 < chars.len() && chars[i + 1] == '-' {
                    out.extend(chars[i]..=chars[i + 2]);
                    i += 3;
                } else {
                    out.push(chars[i]);
                    i += 1;
                }
            }
            out
        };
        let from = expand(operands.first().copied().unwrap_or(""));
        let to = expand(operands.get(1).copied().unwrap_or(""));
        let out: String = stdin
            .chars()
            .filter_map(|c| match from.iter().position(|&f| f == c) {
                Some(_) if flags.contains('d') => None,
                Some(at) => Some(*to.get(at).or(to.last()).unwrap_or(&c)),
                None => Some(c),
            })
            .collect();
        io.out.push_str(&out);
        return Ok(0);
    }
    let (texts, status) = inputs(shell, program, &operands, stdin, io)?;
    let text: String = texts.into_iter().map(|(_, t)| t).collect();
    shell.machine.budget.spend(text.len() as u64 / 256)?;
    let mut lines: Vec<&str> = text.lines().collect();
    if program == "sort" {
        if flags.contains('n') {
            lines.sort_by_key(|l| {
                l.trim()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse::<i64>().ok())
                    .unwrap_or(0)
            });
        } else {
            lines.sort_unstable();
        }
        if flags.contains('r') {
            lines.reverse();
        }
        if flags.contains('u') {
            lines.dedup();
        }
        for line in lines {
            io.out.push_str(line);
            io.out.push('\n');
        }
    } else {
        let mut groups: Vec<(&str, usize)> = Vec::new();
        for line in lines {
            match groups.last_mut() {
                Some((last, count)) if *last == line => *count += 1,
                _ => groups.push((line, 1)),
            }
        }
        for (line, count) in groups {
            if flags.contains('c') {
                io.out.push_str(&format!("{count:>7} {line}\n"));
            } else {
                io.out.push_str(line);
                io.out.push('\n');
            }
        }
    }
    Ok(status)
}

/// The awk programs scanners use: `{print $1, $3}`, `-F:`, `NR==N`, `/re/`.
fn awk(shell: &mut Shell<'_, '_>, args: &[String], stdin: &str, io: &mut Io) -> Status {
    let mut separator: Option<String> = None;
    let mut rest = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if let Some(sep) = arg.strip_prefix("-F") {
            separator = Some(if sep.is_empty() {
                iter.next().cloned().unwrap_or_default()
            } else {
                sep.to_owned()
            });
        } else {
            rest.push(arg.as_str());
        }
    }
    let Some((program, operands)) = rest.split_first() else {
        io.err
            .push_str("usage: mawk [-F value] [-v var=value] [--] 'program text' [file ...]\n");
        return Ok(2);
    };
    let Some((pattern, action)) = awk_parse(program) else {
        io.err.push_str(&format!(
            "mawk: line 1: syntax error at or near {}\n",
            program.chars().next().unwrap_or(' ')
        ));
        return Ok(2);
    };
    let (texts, status) = inputs(shell, "mawk", operands, stdin, io)?;
    let mut number = 0;
    for (_, text) in texts {
        for line in text.lines() {
            shell.machine.budget.step()?;
            number += 1;
            let fields: Vec<&str> = match separator.as_deref() {
                Some(sep) if sep != " " => line.split(sep).collect(),
                _ => line.split_whitespace().collect(),
            };
            let selected = match &pattern {
                AwkPattern::All => true,
                AwkPattern::Line(n) => number == *n,
                AwkPattern::Regex(re) => re.is_match(line),
            };
            if !selected {
                continue;
            }
            let printed: Vec<String> = action
                .iter()
                .map(|item| match item {
                    AwkItem::Field(0) => line.to_owned(),
                    AwkItem::Field(n) => fields.get(n - 1).copied().unwrap_or("").to_owned(),
                    AwkItem::FieldCount => fields.len().to_string(),
                    AwkItem::Text(text) => text.clone(),
                })
                .collect();
            io.out.push_str(&printed.join(" "));
            io.out.push('\n');
        }
    }
    Ok(status)
}

enum AwkPattern {
    All,
    Line(usize),
    Regex(regex::Regex),
}

enum AwkItem {
    Field(usize),
    FieldCount,
    Text(String),
}

fn awk_parse(program: &str) -> Option<(AwkPattern, Vec<AwkItem>)> {
    let program = program.trim();
    let (pattern_text, action_text) = match program.find('{') {
        Some(at) => (program[..at].trim(), program[at..].trim()),
        None => (program, "{print}"),
    };
    let pattern = if pattern_text.is_empty() {
        AwkPattern::All
    } else if let Some(n) = pattern_text.strip_prefix("NR==") {
        AwkPattern::Line(n.trim().parse().ok()?)
    } else if let Some(re) = pattern_text
        .strip_prefix('/')
        .and_then(|p| p.strip_suffix('/'))
    {
        AwkPattern::Regex(
            regex::RegexBuilder::new(re)
                .size_limit(1 << 20)
                .build()
                .ok()?,
        )
    } else {
        return None;
    };
    let inner = action_text
        .strip_prefix('{')?
        .strip_suffix('}')?
        .trim()
        .trim_end_matches(';');
    let items = inner.strip_prefix("print")?.trim();
    let items = if items.is_empty() {
        vec![AwkItem::Field(0)]
    } else {
        items
            .split(',')
            .map(|item| {
                let item = item.trim();
                if item == "NF" {
                    Some(AwkItem::FieldCount)
                } else if let Some(n) = item.strip_prefix('$') {
                    n.parse().ok().map(AwkItem::Field)
                } else {
                    item.strip_prefix('"')
                        .and_then(|t| t.strip_suffix('"'))
                        .map(|t| AwkItem::Text(t.to_owned()))
                }
            })
            .collect::<Option<Vec<_>>>()?
    };
    Some((pattern, items))
}

/// `sed 's/a/b/g'` and `sed -n 'Np'`.
fn sed(shell: &mut Shell<'_, '_>, args: &[String], stdin: &str, io: &mut Io) -> Status {
    let quiet = args.iter().any(|a| a == "-n");
    let mut rest: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if args.iter().any(|a| a == "-e")
        && let Some(at) = args.iter().position(|a| a == "-e")
    {
        rest = args[at + 1..]
            .iter()
            .map(String::as_str)
            .filter(|a| !a.starts_with('-'))
            .collect();
    }
    let Some((script, operands)) = rest.split_first() else {
        io.err
            .push_str("Usage: sed [OPTION]... {script-only-if-no-other-script} [input-file]...\n");
        return Ok(1);
    };
    let (texts, status) = inputs(shell, "sed", operands, stdin, io)?;
    let text: String = texts.into_iter().map(|(_, t)| t).collect();
    if let Some(n) = script
        .strip_suffix('p')
        .and_then(|n| n.parse::<usize>().ok())
    {
        for (i, line) in text.lines().enumerate() {
            if i + 1 == n || !quiet {
                io.out.push_str(line);
                io.out.push('\n');
            }
            if i + 1 == n && !quiet {
                io.out.push_str(line);
                io.out.push('\n');
            }
        }
        return Ok(status);
    }
    let substitution = script.strip_prefix('s').and_then(|body| {
        let separator = body.chars().next()?;
        let parts: Vec<&str> = body[separator.len_utf8()..].split(separator).collect();
        (parts.len() == 3).then(|| (parts[0], parts[1], parts[2]))
    });
    let Some((pattern, replacement, options)) = substitution else {
        io.err.push_str(&format!(
            "sed: -e expression #1, char {}: unknown command: `{}'\n",
            script.len().min(1),
            script.chars().next().unwrap_or(' ')
        ));
        return Ok(1);
    };
    let Ok(regex) = regex::RegexBuilder::new(&basic_to_extended(pattern))
        .size_limit(1 << 20)
        .build()
    else {
        io.err
            .push_str("sed: -e expression #1, char 0: Invalid preceding regular expression\n");
        return Ok(1);
    };
    let replacement = replacement.replace('&', "${0}");
    for line in text.lines() {
        shell.machine.budget.step()?;
        let replaced = if options.contains('g') {
            regex.replace_all(line, replacement.as_str())
        } else {
            regex.replace(line, replacement.as_str())
        };
        if !quiet {
            io.out.push_str(&replaced);
            io.out.push('\n');
        }
    }
    Ok(status)
}

/// `nohup CMD`, `timeout N CMD`, `xargs CMD`: the command runs.
fn wrapper(
    shell: &mut Shell<'_, '_>,
    program: &str,
    args: &[String],
    stdin: &str,
    io: &mut Io,
) -> Status {
    let skip = match program {
        "timeout" => args
            .iter()
            .position(|a| !a.starts_with('-'))
            .map_or(args.len(), |at| at + 1),
        _ => args
            .iter()
            .position(|a| !a.starts_with('-'))
            .unwrap_or(args.len()),
    };
    let mut command: Vec<String> = args[skip.min(args.len())..].to_vec();
    if program == "xargs" {
        if command.is_empty() {
            command.push("echo".into());
        }
        command.extend(stdin.split_whitespace().map(str::to_owned));
    }
    if command.is_empty() {
        return Ok(0);
    }
    execute(
        shell,
        &command,
        if program == "xargs" { "" } else { stdin },
        io,
    )
}
