//! The interpreter's expansion, redirections and commands, against the default host.

use super::run;
use crate::emulation::with_machine;

/// What `line` prints (standard output, then errors) and its status, all in one session.
fn shell(lines: &[&str]) -> Vec<(String, String, i32)> {
    with_machine(|machine| {
        lines
            .iter()
            .map(|line| {
                let outcome = run(machine, line).unwrap();
                (outcome.output, outcome.errors, outcome.status)
            })
            .collect()
    })
}

fn out(line: &str) -> String {
    shell(&[line]).remove(0).0
}

#[test]
fn words_expand_as_dash_expands_them() {
    assert_eq!(out("X='a  b'; echo $X \"$X\" '$X'"), "a b a  b $X\n");
    assert_eq!(out("echo ${NOPE:-default} ${IFS}x"), "default x\n");
    assert_eq!(out("echo \"$(echo one; echo two)\""), "one\ntwo\n");
    assert_eq!(out("echo $(echo one; echo two)"), "one two\n");
    assert_eq!(out("echo a\\ b \"\" c"), "a b  c\n");
    assert_eq!(out("echo /etc/host*"), "/etc/hostname /etc/hosts\n");
    assert_eq!(out("echo /etc/nomatch*"), "/etc/nomatch*\n");
    assert_eq!(
        out("false || echo or; true && echo and; ! true || echo not"),
        "or\nand\nnot\n"
    );
    assert_eq!(out("exit 3; echo never"), "");
    assert_eq!(shell(&["sh -c 'exit 7'; echo $?"])[0].0, "7\n");
}

#[test]
fn redirections_route_output_and_errors_in_order() {
    let results = shell(&[
        "echo a > /tmp/r; echo b >> /tmp/r; cat < /tmp/r",
        "cat /nope 2>&1 >/dev/null",
        "cat /nope >/dev/null 2>&1",
        "ls /root",
        "echo x >&3",
    ]);
    assert_eq!(results[0].0, "a\nb\n");
    assert_eq!(results[1].0, "cat: /nope: No such file or directory\n");
    assert_eq!(results[2].0, "");
    assert_eq!(
        (results[3].1.as_str(), results[3].2),
        ("ls: cannot open directory '/root': Permission denied\n", 2)
    );
    assert_eq!(results[4].1, "sh: 1: Syntax error: Bad fd number\n");
}

#[test]
fn pipelines_feed_the_text_tools() {
    assert_eq!(out("cat /etc/passwd | grep -c nologin"), "22\n");
    assert_eq!(
        out("head -n 2 /etc/passwd | cut -d: -f1,7"),
        "root:/bin/bash\ndaemon:/usr/sbin/nologin\n"
    );
    assert_eq!(
        out("awk -F: 'NR==1 {print $1, $3}' /etc/passwd"),
        "root 0\n"
    );
    assert_eq!(out("echo flowmon | base64"), "Zmxvd21vbgo=\n");
    assert_eq!(out("echo Zmxvd21vbg== | base64 -d"), "flowmon");
    assert_eq!(
        out("printf flowmon | md5sum"),
        "a4e1b6b2603987a83a8056b70842eee5  -\n"
    );
    assert_eq!(
        out("echo b a c | tr ' ' '\\n' | sort | uniq -c | wc -l"),
        "3\n"
    );
    assert_eq!(out("echo hello | sed 's/l/L/g'"), "heLLo\n");
    assert_eq!(out("echo abc | tr a-z A-Z"), "ABC\n");
}

#[test]
fn commands_answer_from_the_host() {
    assert_eq!(out("id -un; id -u; whoami"), "www-data\n33\nwww-data\n");
    assert_eq!(out("id root"), "uid=0(root) gid=0(root) groups=0(root)\n");
    assert_eq!(out("uname -sr"), "Linux 5.10.0-28-amd64\n");
    assert_eq!(out("cd /tmp && pwd; cd /root; pwd"), "/tmp\n/tmp\n");
    assert_eq!(
        out("find /usr/bin -perm -4000 -type f"),
        "/usr/bin/su\n/usr/bin/sudo\n"
    );
    assert_eq!(
        out("which wget nc python"),
        "/usr/local/sbin/wget\n".replace("/usr/local/sbin", "/usr/bin") + "/usr/bin/nc\n"
    );
    assert!(out("cat /proc/version").starts_with("Linux version 5.10.0-28-amd64"));
    assert_eq!(
        shell(&["sudo -n id"])[0].1,
        "sudo: a password is required\n"
    );
    assert_eq!(shell(&["python -c 1"])[0].2, 127);
    assert_eq!(
        out("php -r 'echo md5(\"flowmon\");'"),
        "a4e1b6b2603987a83a8056b70842eee5"
    );
}

#[test]
fn scripts_written_by_the_session_run_when_made_executable() {
    let results = shell(&[
        "printf 'id\\n' > /tmp/s.sh; /tmp/s.sh",
        "chmod +x /tmp/s.sh; /tmp/s.sh; sh /tmp/s.sh",
    ]);
    assert_eq!(
        (results[0].1.as_str(), results[0].2),
        ("sh: 1: /tmp/s.sh: Permission denied\n", 126)
    );
    let id = "uid=33(www-data) gid=33(www-data) groups=33(www-data)\n";
    assert_eq!(results[1].0, format!("{id}{id}"));
}

#[test]
fn nesting_stops_at_its_limit() {
    let deep = "sh -c 'sh -c \"sh -c \\\"sh -c \\\\\\\"sh -c id\\\\\\\"\\\"\"'";
    let (output, errors, _) = shell(&[deep]).remove(0);
    assert_eq!(output, "");
    assert_eq!(errors, "sh: 1: Cannot fork\n");
}
