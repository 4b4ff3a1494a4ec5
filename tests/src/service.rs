//! flowmon as `dist/flowmon.service` runs it, without systemd as PID 1. The unit's settings are
//! read from the file; its user is created by `systemd-sysusers` from `dist/flowmon.sysusers`,
//! in a scratch copy of the host's account files (so the host's stay as they are, and no id
//! the host uses is picked); the agent is started by `setpriv` as that user with the unit's
//! capabilities and nothing else, with no new privileges and the unit's umask, in a mount
//! namespace of its own where bpffs is mounted for root alone (as systemd mounts it) and the
//! unit's pin directory is made and bound where the user reaches it, as the unit's
//! `ExecStartPre=` and `BindPaths=` do. Its system calls can be traced (strace) to hold them
//! to the unit's filters. Everything goes when dropped: the namespace with the process, the
//! directories with their guards.

use std::{
    collections::BTreeSet,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{
    netns::Netns,
    process::{TempDir, flowmon_binary},
};

/// A file of the repository's `dist/` directory.
pub fn dist_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dist")
        .join(name)
}

/// The `[Service]` section of a unit file: its settings in order, a key once per line.
pub struct ServiceUnit {
    settings: Vec<(String, String)>,
}

impl ServiceUnit {
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
        let mut section = "";
        let mut settings = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
            } else if section == "[Service]" && !line.is_empty() && !line.starts_with('#') {
                let (key, value) = line.split_once('=').expect("key=value");
                settings.push((key.to_owned(), value.to_owned()));
            }
        }
        Self { settings }
    }

    /// Every value of `key`, one per line that sets it.
    pub fn values(&self, key: &str) -> Vec<&str> {
        self.settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// The value of `key`, which one line sets.
    pub fn value(&self, key: &str) -> &str {
        match self.values(key)[..] {
            [value] => value,
            ref values => panic!("{key} set {} times in the unit", values.len()),
        }
    }

    /// The unit's capabilities, checked to be both its ambient set and its bounding set.
    pub fn capabilities(&self) -> Vec<String> {
        let set = |key| {
            let mut names: Vec<String> = self
                .value(key)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            names.sort();
            names
        };
        let ambient = set("AmbientCapabilities");
        assert_eq!(ambient, set("CapabilityBoundingSet"));
        ambient
    }
}

/// A system user made by `systemd-sysusers` from a sysusers.d file.
pub struct ServiceUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    _root: TempDir,
}

impl ServiceUser {
    /// Creates the first user `sysusers` declares in a scratch root holding copies of the
    /// host's account files, and reads its ids from there.
    pub fn create(sysusers: &Path) -> Self {
        let name = std::fs::read_to_string(sysusers)
            .unwrap()
            .lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next() == Some("u")).then(|| fields.next().unwrap().to_owned())
            })
            .expect("a user in the sysusers file");
        let root = TempDir::new("sysusers");
        let etc = root.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        for file in ["passwd", "group", "shadow", "gshadow"] {
            let host = Path::new("/etc").join(file);
            if host.exists() {
                std::fs::copy(&host, etc.join(file)).unwrap();
            }
        }
        let output = Command::new("systemd-sysusers")
            .arg("--root")
            .arg(root.path())
            .arg(sysusers)
            .output()
            .expect("run systemd-sysusers");
        assert!(
            output.status.success(),
            "systemd-sysusers: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let passwd = std::fs::read_to_string(etc.join("passwd")).unwrap();
        let entry: Vec<&str> = passwd
            .lines()
            .map(|line| line.split(':').collect::<Vec<_>>())
            .find(|fields| fields[0] == name)
            .unwrap_or_else(|| panic!("systemd-sysusers made no user {name}"));
        Self {
            uid: entry[2].parse().unwrap(),
            gid: entry[3].parse().unwrap(),
            name,
            _root: root,
        }
    }
}

/// The directories systemd would make for the unit, and the command that starts flowmon the way
/// the unit does.
pub struct Sandbox {
    pub user: ServiceUser,
    /// The unit's capabilities: `CAP_BPF`...
    pub capabilities: Vec<String>,
    umask: String,
    /// `BindPaths=`'s source, on bpffs, and its target (given the runtime directory below).
    pin_source: PathBuf,
    pin_target: PathBuf,
    /// `StateDirectory=`, `LogsDirectory=` and `RuntimeDirectory=`, owned by the user.
    pub state: TempDir,
    pub logs: TempDir,
    _runtime: TempDir,
}

impl Sandbox {
    pub fn new(unit: &ServiceUnit, user: ServiceUser) -> Self {
        assert_eq!(unit.value("User"), user.name);
        assert_eq!(unit.value("Group"), user.name);
        assert_eq!(unit.value("NoNewPrivileges"), "yes");
        let (pin_source, pin_target) = unit
            .value("BindPaths")
            .split_once(':')
            .expect("BindPaths=source:target");
        assert!(
            pin_source.starts_with("/sys/fs/bpf/"),
            "the pins live on the host's bpffs"
        );
        assert!(
            unit.values("ExecStartPre").iter().any(|command| {
                command.starts_with('+')
                    && command.contains(&format!("-o {}", user.name))
                    && command.ends_with(pin_source)
            }),
            "an ExecStartPre= makes {pin_source} for the user"
        );
        assert!(
            unit.value("ExecStart")
                .contains(&format!("--pin-dir {pin_target}")),
            "flowmon pins at the bind's target"
        );
        let runtime_dir = Path::new("/run").join(unit.value("RuntimeDirectory"));
        let in_runtime = Path::new(pin_target)
            .strip_prefix(&runtime_dir)
            .expect("the bind's target is in the runtime directory");
        let directory = |label: &str, mode_key: &str| {
            let dir = TempDir::new(label);
            let mode = u32::from_str_radix(unit.value(mode_key), 8).unwrap();
            std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            dir
        };
        let runtime = directory("run", "RuntimeDirectoryMode");
        let pin_target = runtime.path().join(in_runtime);
        std::fs::create_dir(&pin_target).unwrap();
        Self {
            capabilities: unit.capabilities(),
            umask: unit.value("UMask").to_owned(),
            pin_source: pin_source.into(),
            pin_target,
            state: directory("state", "StateDirectoryMode"),
            logs: directory("logs", "LogsDirectoryMode"),
            _runtime: runtime,
            user,
        }
    }

    /// `flowmon <args>` in `netns`, as the unit starts it but with `capabilities` (`CAP_BPF`...),
    /// its state and pins in this sandbox's directories. The process is flowmon's.
    pub fn command(&self, netns: &Netns, capabilities: &[String], args: &[&str]) -> Command {
        self.launch(netns, capabilities, None, args)
    }

    /// [`Sandbox::command`] with the unit's capabilities under `strace -f`, which writes every
    /// system call to `trace`. The process is the init of a PID namespace of its own, so that
    /// flowmon dies with it; [`descendant`] finds flowmon.
    pub fn traced_command(&self, netns: &Netns, trace: &Path, args: &[&str]) -> Command {
        self.launch(netns, &self.capabilities, Some(trace), args)
    }

    fn launch(
        &self,
        netns: &Netns,
        capabilities: &[String],
        trace: Option<&Path>,
        args: &[&str],
    ) -> Command {
        // Runs as root in the new mount namespace, then becomes the user; positional
        // parameters: uid, gid, bind source, bind target, umask, capabilities, trace file (or
        // nothing), flowmon and its arguments.
        const SETUP: &str = r#"
            uid=$1 gid=$2 source=$3 target=$4 mask=$5 caps=$6 trace=$7
            shift 7
            mount -t bpf -o mode=0700 bpf /sys/fs/bpf
            install -d -o "$uid" -g "$gid" -m 0700 "$source"
            mount --bind "$source" "$target"
            umask "$mask"
            set -- setpriv --reuid "$uid" --regid "$gid" --clear-groups --nnp \
                --inh-caps "$caps" --ambient-caps "$caps" --bounding-set "$caps" -- "$@"
            if [ -n "$trace" ]; then set -- strace -f -qq -o "$trace" -- "$@"; fi
            exec "$@"
        "#;
        let caps: String = std::iter::once("-all".to_owned())
            .chain(capabilities.iter().map(|name| {
                let name = name.strip_prefix("CAP_").expect("a capability name");
                format!("+{}", name.to_ascii_lowercase())
            }))
            .collect::<Vec<_>>()
            .join(",");
        let mut command = netns.command("unshare");
        command.args(["--mount", "--propagation", "private"]);
        if trace.is_some() {
            command.args(["--pid", "--fork", "--kill-child"]);
        }
        command
            .args(["--", "sh", "-euc", SETUP, "sandbox"])
            .arg(self.user.uid.to_string())
            .arg(self.user.gid.to_string())
            .arg(&self.pin_source)
            .arg(&self.pin_target)
            .arg(&self.umask)
            .arg(caps)
            .arg(trace.unwrap_or(Path::new("")))
            .arg(flowmon_binary())
            .arg("--state-dir")
            .arg(self.state.path())
            .arg("--pin-dir")
            .arg(&self.pin_target)
            .args(args);
        command
    }
}

/// The process named `name` among the descendants of `pid`, if there is one.
pub fn descendant(pid: u32, name: &str) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .find_map(|child: u32| {
            let comm = std::fs::read_to_string(format!("/proc/{child}/comm")).ok()?;
            if comm.trim() == name {
                Some(child)
            } else {
                descendant(child, name)
            }
        })
}

/// The system calls the unit's `SystemCallFilter=` lines allow: the first line's list, then
/// each further line's added, or removed when it starts with `~`; groups expanded by
/// `systemd-analyze syscall-filter`.
pub fn allowed_system_calls(unit: &ServiceUnit) -> BTreeSet<String> {
    let mut allowed = BTreeSet::new();
    for (index, line) in unit.values("SystemCallFilter").into_iter().enumerate() {
        let (deny, names) = match line.strip_prefix('~') {
            Some(names) => (true, names),
            None => (false, line),
        };
        assert!(
            index > 0 || !deny,
            "the first SystemCallFilter= is an allow list"
        );
        for call in names.split_whitespace().flat_map(system_call_group) {
            if deny {
                allowed.remove(&call);
            } else {
                allowed.insert(call);
            }
        }
    }
    allowed
}

/// The system calls of `name`: a group (`@system-service`, expanded) or a call.
fn system_call_group(name: &str) -> Vec<String> {
    if !name.starts_with('@') {
        return vec![name.to_owned()];
    }
    let output = Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager", name])
        .output()
        .expect("run systemd-analyze");
    assert!(
        output.status.success(),
        "systemd-analyze syscall-filter {name}"
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .flat_map(system_call_group)
        .collect()
}

/// What `strace -f` wrote of a program's run from its `execve` of `binary` on: the system
/// calls made and the address families of the sockets opened (`AF_INET`...).
pub fn traced_calls(trace: &Path, binary: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let text = std::fs::read_to_string(trace).unwrap();
    let exec = format!("execve(\"{}\"", binary.display());
    let lines = text.lines().skip_while(|line| !line.contains(&exec));
    let (mut calls, mut families) = (BTreeSet::new(), BTreeSet::new());
    for line in lines {
        // "<pid> <call>(<arguments>) = <result>"; resumptions, signals and exits skipped.
        let Some((_, event)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let event = event.trim_start();
        let Some((call, arguments)) = event.split_once('(') else {
            continue;
        };
        if call.is_empty() || !call.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if call == "socket" {
            families.insert(arguments.split(',').next().unwrap().to_owned());
        }
        calls.insert(call.to_owned());
    }
    assert!(calls.contains("execve"), "no execve of {exec} in the trace");
    (calls, families)
}

/// The number of a capability (`linux/capability.h`).
pub fn capability_number(name: &str) -> u32 {
    match name {
        "CAP_NET_ADMIN" => 12,
        "CAP_SYS_ADMIN" => 21,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        _ => panic!("capability {name} unknown to the tests"),
    }
}
