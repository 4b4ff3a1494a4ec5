//! The simulated host: a Debian web server whose PHP runs as `www-data`, made from a
//! [`Profile`] (`--emulation-profile`, TOML; every key optional) and a seed. The seed mixes the
//! profile's `seed` with the sensor's uuid, so each sensor's host is the same at every start
//! and differs from its neighbours' (host name, addresses, credentials, users, counters).
//! Nothing of the real host is read: every name, number and file comes from here.

use std::{net::Ipv4Addr, sync::Arc};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::fs::{Content, FileSystem, Identity, Node};

/// What an operator may set; what is unset is generated from the seed or takes the default.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Profile {
    /// Mixed with each sensor's uuid into the seed of that sensor's host.
    pub seed: String,
    pub hostname: Option<String>,
    /// The DNS domain, for `/etc/hosts` and `hostname -f`.
    pub domain: String,
    pub os: OsProfile,
    pub kernel: KernelProfile,
    pub cpu_model: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub php_version: String,
    /// Apache's `Server` banner.
    pub server_software: String,
    pub web_root: String,
    pub web_user: String,
    pub web_uid: u32,
    /// The login user with a home directory; generated when unset.
    pub admin_user: Option<String>,
    pub interface: String,
    /// `ADDRESS/PREFIX`; generated in a private range when unset.
    pub address: Option<String>,
    pub gateway: Option<String>,
    pub nameserver: String,
    pub database: DatabaseProfile,
    /// Files added to (or replacing) the generated ones.
    pub files: Vec<FileProfile>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct OsProfile {
    pub pretty_name: String,
    pub name: String,
    pub id: String,
    pub version_id: String,
    pub version: String,
    pub codename: String,
    /// `/etc/debian_version`.
    pub debian_version: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct KernelProfile {
    /// `uname -r`.
    pub release: String,
    /// `uname -v`.
    pub version: String,
    /// `uname -m`.
    pub machine: String,
    /// Who built it, as `/proc/version` says.
    pub builder: String,
}

/// The web application's database account, as `wp-config.php` and `config.php` hold it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DatabaseProfile {
    pub name: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileProfile {
    pub path: String,
    pub content: String,
    #[serde(default = "FileProfile::default_mode")]
    pub mode: u32,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

impl FileProfile {
    fn default_mode() -> u32 {
        0o644
    }
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            seed: "flowmon".into(),
            hostname: None,
            domain: "localdomain".into(),
            os: OsProfile::default(),
            kernel: KernelProfile::default(),
            cpu_model: "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz".into(),
            cpus: 2,
            memory_mib: 3931,
            php_version: "7.4.33".into(),
            server_software: "Apache/2.4.62 (Debian)".into(),
            web_root: "/var/www/html".into(),
            web_user: "www-data".into(),
            web_uid: 33,
            admin_user: None,
            interface: "eth0".into(),
            address: None,
            gateway: None,
            nameserver: "1.1.1.1".into(),
            database: DatabaseProfile::default(),
            files: Vec::new(),
        }
    }
}

impl Default for OsProfile {
    fn default() -> Self {
        Self {
            pretty_name: "Debian GNU/Linux 11 (bullseye)".into(),
            name: "Debian GNU/Linux".into(),
            id: "debian".into(),
            version_id: "11".into(),
            version: "11 (bullseye)".into(),
            codename: "bullseye".into(),
            debian_version: "11.9".into(),
        }
    }
}

impl Default for KernelProfile {
    fn default() -> Self {
        Self {
            release: "5.10.0-28-amd64".into(),
            version: "#1 SMP Debian 5.10.209-2 (2024-01-31)".into(),
            machine: "x86_64".into(),
            builder: "debian-kernel@lists.debian.org) (gcc-10 (Debian 10.2.1-6) 10.2.1 \
                      20210110, GNU ld (GNU Binutils for Debian) 2.35.2"
                .into(),
        }
    }
}

impl Profile {
    /// Reads a profile file; what it leaves out keeps its default.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read emulation profile {}", path.display()))?;
        let profile: Profile = toml::from_str(&text)
            .with_context(|| format!("invalid emulation profile {}", path.display()))?;
        profile
            .check()
            .with_context(|| format!("invalid emulation profile {}", path.display()))?;
        Ok(profile)
    }

    /// Refuses what would make a broken host.
    pub fn check(&self) -> Result<()> {
        if let Some(address) = &self.address {
            parse_cidr(address)?;
        }
        if let Some(gateway) = &self.gateway {
            gateway
                .parse::<Ipv4Addr>()
                .with_context(|| format!("gateway {gateway:?} is no IPv4 address"))?;
        }
        if !self.web_root.starts_with('/') {
            bail!("web-root {:?} is no absolute path", self.web_root);
        }
        if self.cpus == 0 || self.cpus > 256 {
            bail!("cpus must be 1 to 256");
        }
        for file in &self.files {
            if !file.path.starts_with('/') {
                bail!("file path {:?} is no absolute path", file.path);
            }
        }
        Ok(())
    }
}

fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8)> {
    let (address, prefix) = text
        .split_once('/')
        .with_context(|| format!("address {text:?} is not ADDRESS/PREFIX"))?;
    let address = address
        .parse()
        .with_context(|| format!("address {text:?} is no IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=30).contains(p))
        .with_context(|| format!("address {text:?} has no prefix from 1 to 30"))?;
    Ok((address, prefix))
}

/// A stable 64-bit seed from text (SHA-256, so it is the same on every build).
pub fn seed_of(parts: &[&str]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    u64::from_le_bytes(
        digest[..8]
            .try_into()
            .expect("a SHA-256 digest has 8 bytes"),
    )
}

/// A user of `/etc/passwd`.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

/// A line of `ps aux`.
#[derive(Clone, Debug, PartialEq)]
pub struct Process {
    pub user: String,
    pub pid: u32,
    pub cpu: f32,
    pub mem: f32,
    pub vsz: u32,
    pub rss: u32,
    pub tty: &'static str,
    pub stat: &'static str,
    /// Seconds after boot it started.
    pub started: u32,
    /// CPU seconds used.
    pub time: u32,
    pub command: String,
}

/// A simulated host, fixed once made.
pub struct Host {
    pub profile: Profile,
    pub seed: u64,
    pub hostname: String,
    pub user: Identity,
    pub users: Vec<User>,
    pub admin: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: [u8; 6],
    pub db_name: String,
    pub db_user: String,
    pub db_password: String,
    pub processes: Vec<Process>,
    pub clock: RebootClock,
    /// Epoch seconds when the system was installed; files are dated after it.
    pub installed: i64,
    pub files: FileSystem,
}

impl Host {
    /// The host of the sensor `sensor` under `profile`.
    pub fn new(profile: &Profile, sensor: &str) -> Self {
        let seed = seed_of(&[&profile.seed, sensor]);
        let rng = |aspect: &str| fastrand::Rng::with_seed(seed ^ seed_of(&[aspect]));
        let mut names = rng("names");
        let hostname = profile.hostname.clone().unwrap_or_else(|| {
            let prefix = names.choice(["web", "www", "srv", "app", "prod-web", "vps"]);
            format!("{}{:02}", prefix.unwrap_or("web"), names.u8(1..=24))
        });
        let admin = profile.admin_user.clone().unwrap_or_else(|| {
            let names = [
                "deploy", "admin", "webadmin", "sysadmin", "debian", "devops",
            ];
            rng("admin").choice(names).unwrap_or("deploy").to_owned()
        });
        let mut net = rng("network");
        let (address, prefix) = match profile.address.as_deref().map(parse_cidr) {
            Some(Ok(cidr)) => cidr,
            _ => match net.u8(0..3) {
                0 => (
                    Ipv4Addr::new(10, net.u8(..), net.u8(..), net.u8(10..250)),
                    24,
                ),
                1 => (
                    Ipv4Addr::new(172, net.u8(16..32), net.u8(..), net.u8(10..250)),
                    20,
                ),
                _ => (Ipv4Addr::new(192, 168, net.u8(..), net.u8(10..250)), 24),
            },
        };
        let mask = u32::MAX << (32 - prefix);
        let gateway = profile
            .gateway
            .as_deref()
            .and_then(|g| g.parse().ok())
            .unwrap_or_else(|| Ipv4Addr::from((u32::from(address) & mask) + 1));
        let mac = [0x52, 0x54, 0x00, net.u8(..), net.u8(..), net.u8(..)];
        let mut secrets = rng("database");
        let db_name = profile.database.name.clone().unwrap_or_else(|| {
            secrets
                .choice(["wordpress", "wp_site", "wpdb", "site_wp"])
                .unwrap_or("wordpress")
                .to_owned()
        });
        let db_user = profile.database.user.clone().unwrap_or_else(|| {
            secrets
                .choice(["wp_user", "wordpress", "wpadmin", "dbuser"])
                .unwrap_or("wp_user")
                .to_owned()
        });
        let db_password = profile
            .database
            .password
            .clone()
            .unwrap_or_else(|| password(&mut secrets, 16));
        let mut clock = rng("clock");
        let period = f64::from(clock.u32(20..90) * 86_400);
        let reboots = RebootClock {
            period,
            offset: clock.f64() * period,
        };
        // Installed between mid 2022 and early 2023.
        let installed = 1_660_000_000 + i64::from(clock.u32(0..20_000_000));
        let user = Identity {
            uid: profile.web_uid,
            gid: profile.web_uid,
        };
        let users = users(profile, &admin);
        let mut host = Self {
            profile: profile.clone(),
            seed,
            hostname,
            user,
            users,
            admin,
            address,
            prefix,
            gateway,
            mac,
            db_name,
            db_user,
            db_password,
            processes: Vec::new(),
            clock: reboots,
            installed,
            files: FileSystem::default(),
        };
        host.processes = processes(&host, &mut rng("processes"));
        host.files = files(&host, &mut rng("files"));
        host
    }

    /// A random-number generator for `aspect`, the same for this host at every start.
    pub fn rng(&self, aspect: &str) -> fastrand::Rng {
        fastrand::Rng::with_seed(self.seed ^ seed_of(&[aspect]))
    }

    /// Epoch seconds of the latest boot before `now`.
    pub fn boot_time(&self, now: f64) -> f64 {
        self.clock.boot_time(now)
    }

    pub fn fqdn(&self) -> String {
        format!("{}.{}", self.hostname, self.profile.domain)
    }

    pub fn web_user(&self) -> &str {
        &self.profile.web_user
    }

    /// `uname -a`.
    pub fn uname(&self) -> String {
        let kernel = &self.profile.kernel;
        format!(
            "Linux {} {} {} {} GNU/Linux",
            self.hostname, kernel.release, kernel.version, kernel.machine
        )
    }

    /// `id`.
    pub fn id_line(&self) -> String {
        let name = self.web_user();
        let uid = self.user.uid;
        format!("uid={uid}({name}) gid={uid}({name}) groups={uid}({name})")
    }

    pub fn mac_text(&self) -> String {
        self.mac.map(|b| format!("{b:02x}")).join(":")
    }

    /// The IPv6 link-local address derived from the MAC (EUI-64).
    pub fn link_local(&self) -> String {
        let m = self.mac;
        format!(
            "fe80::{:x}:{:x}ff:fe{:02x}:{:x}",
            u16::from_be_bytes([m[0] ^ 2, m[1]]),
            m[2],
            m[3],
            u16::from_be_bytes([m[4], m[5]])
        )
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - self.prefix))
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) | !(u32::MAX << (32 - self.prefix)))
    }

    /// The PHP script the request ran: its path under the web root, `index.php` for anything
    /// that is no PHP file.
    pub fn script_path(&self, request_path: &str) -> String {
        let root = &self.profile.web_root;
        let clean = super::fs::normalise("/", request_path);
        if clean.ends_with(".php") {
            format!("{root}{clean}")
        } else {
            format!("{root}/index.php")
        }
    }

    /// The line of `script` where its include, eval or query sits: stable per script.
    pub fn script_line(&self, script: &str) -> u32 {
        12 + (self.seed ^ seed_of(&[script])) as u32 % 80
    }

    /// `/proc/self/environ` and `env`: Apache's environment under systemd.
    pub fn environment(&self) -> Vec<(String, String)> {
        let user = self.web_user();
        [
            ("LANG", "C".to_owned()),
            (
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            ),
            (
                "INVOCATION_ID",
                format!("{:032x}", self.seed as u128 * 0x9e37),
            ),
            ("JOURNAL_STREAM", format!("8:{}", 14_000 + self.seed % 9000)),
            ("APACHE_RUN_DIR", "/var/run/apache2".to_owned()),
            ("APACHE_PID_FILE", "/var/run/apache2/apache2.pid".to_owned()),
            ("APACHE_RUN_USER", user.to_owned()),
            ("APACHE_RUN_GROUP", user.to_owned()),
            ("APACHE_LOG_DIR", "/var/log/apache2".to_owned()),
            ("APACHE_LOCK_DIR", "/var/lock/apache2".to_owned()),
            ("PWD", "/".to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }
}

/// Uptimes cycle as if the host were rebooted every `period` seconds, `offset` into the
/// period.
#[derive(Clone, Copy, Debug)]
pub struct RebootClock {
    period: f64,
    offset: f64,
}

impl RebootClock {
    /// Epoch seconds of the latest boot before `now`.
    pub fn boot_time(self, now: f64) -> f64 {
        let into_period = (now - self.offset).rem_euclid(self.period);
        // At least a day up: a host just rebooted looks staged.
        now - into_period.max(86_400.0)
    }
}

/// `length` characters a password generator would give.
fn password(rng: &mut fastrand::Rng, length: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789!#%*+-_";
    (0..length)
        .map(|_| CHARS[rng.usize(..CHARS.len())] as char)
        .collect()
}

fn users(profile: &Profile, admin: &str) -> Vec<User> {
    let nologin = "/usr/sbin/nologin";
    let mut users: Vec<User> = [
        ("root", 0, 0, "root", "/root", "/bin/bash"),
        ("daemon", 1, 1, "daemon", "/usr/sbin", nologin),
        ("bin", 2, 2, "bin", "/bin", nologin),
        ("sys", 3, 3, "sys", "/dev", nologin),
        ("sync", 4, 65534, "sync", "/bin", "/bin/sync"),
        ("games", 5, 60, "games", "/usr/games", nologin),
        ("man", 6, 12, "man", "/var/cache/man", nologin),
        ("lp", 7, 7, "lp", "/var/spool/lpd", nologin),
        ("mail", 8, 8, "mail", "/var/mail", nologin),
        ("news", 9, 9, "news", "/var/spool/news", nologin),
        ("uucp", 10, 10, "uucp", "/var/spool/uucp", nologin),
        ("proxy", 13, 13, "proxy", "/bin", nologin),
        ("www-data", 33, 33, "www-data", "/var/www", nologin),
        ("backup", 34, 34, "backup", "/var/backups", nologin),
        ("list", 38, 38, "Mailing List Manager", "/var/list", nologin),
        ("irc", 39, 39, "ircd", "/run/ircd", nologin),
        (
            "gnats",
            41,
            41,
            "Gnats Bug-Reporting System (admin)",
            "/var/lib/gnats",
            nologin,
        ),
        ("nobody", 65534, 65534, "nobody", "/nonexistent", nologin),
        ("_apt", 100, 65534, "", "/nonexistent", nologin),
        (
            "systemd-timesync",
            101,
            101,
            "systemd Time Synchronization,,,",
            "/run/systemd",
            nologin,
        ),
        (
            "systemd-network",
            102,
            103,
            "systemd Network Management,,,",
            "/run/systemd",
            nologin,
        ),
        (
            "systemd-resolve",
            103,
            104,
            "systemd Resolver,,,",
            "/run/systemd",
            nologin,
        ),
        ("messagebus", 104, 110, "", "/nonexistent", nologin),
        ("sshd", 105, 65534, "", "/run/sshd", nologin),
        (
            "mysql",
            106,
            112,
            "MySQL Server,,,",
            "/nonexistent",
            "/bin/false",
        ),
    ]
    .into_iter()
    .map(|(name, uid, gid, gecos, home, shell)| User {
        name: name.to_owned(),
        uid,
        gid,
        gecos: gecos.to_owned(),
        home: home.to_owned(),
        shell: shell.to_owned(),
    })
    .collect();
    // The web user may be renamed or renumbered by the profile.
    if let Some(web) = users.iter_mut().find(|u| u.uid == 33) {
        web.name = profile.web_user.clone();
        web.gecos = profile.web_user.clone();
        web.uid = profile.web_uid;
        web.gid = profile.web_uid;
    }
    users.push(User {
        name: admin.to_owned(),
        uid: 1000,
        gid: 1000,
        gecos: format!("{admin},,,"),
        home: format!("/home/{admin}"),
        shell: "/bin/bash".to_owned(),
    });
    users
}

fn processes(host: &Host, rng: &mut fastrand::Rng) -> Vec<Process> {
    // (user, command, %cpu, %mem, vsz, rss, stat, cpu seconds)
    type Row = (
        &'static str,
        &'static str,
        f32,
        f32,
        u32,
        u32,
        &'static str,
        u32,
    );
    const KERNEL: &[(u32, &str, &str, u32)] = &[
        (1, "/sbin/init", "Ss", 41),
        (2, "[kthreadd]", "S", 0),
        (3, "[rcu_gp]", "I<", 0),
        (4, "[rcu_par_gp]", "I<", 0),
        (9, "[mm_percpu_wq]", "I<", 0),
        (10, "[rcu_tasks_rude_]", "S", 0),
        (12, "[ksoftirqd/0]", "S", 12),
        (13, "[rcu_sched]", "I", 63),
        (14, "[migration/0]", "S", 3),
    ];
    const DAEMONS: &[Row] = &[
        (
            "root",
            "/lib/systemd/systemd-journald",
            0.0,
            0.4,
            48_484,
            16_612,
            "Ss",
            19,
        ),
        (
            "root",
            "/lib/systemd/systemd-udevd",
            0.0,
            0.1,
            21_960,
            5_420,
            "Ss",
            3,
        ),
        (
            "systemd-timesync",
            "/lib/systemd/systemd-timesyncd",
            0.0,
            0.1,
            88_436,
            6_480,
            "Ssl",
            2,
        ),
        ("root", "/usr/sbin/cron -f", 0.0, 0.0, 6_684, 2_812, "Ss", 4),
        (
            "messagebus",
            "/usr/bin/dbus-daemon --system --address=systemd: --nofork --nopidfile \
             --systemd-activation --syslog-only",
            0.0,
            0.1,
            8_132,
            4_356,
            "Ss",
            1,
        ),
        (
            "root",
            "/usr/sbin/rsyslogd -n -iNONE",
            0.0,
            0.1,
            220_796,
            5_208,
            "Ssl",
            9,
        ),
        (
            "root",
            "/lib/systemd/systemd-logind",
            0.0,
            0.1,
            21_768,
            7_484,
            "Ss",
            2,
        ),
        (
            "root",
            "/sbin/agetty -o -p -- \\u --noclear tty1 linux",
            0.0,
            0.0,
            5_836,
            1_764,
            "Ss+",
            0,
        ),
        (
            "root",
            "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",
            0.0,
            0.1,
            13_292,
            7_860,
            "Ss",
            21,
        ),
        (
            "mysql",
            "/usr/sbin/mariadbd",
            0.1,
            2.4,
            1_263_328,
            97_420,
            "Ssl",
            1_913,
        ),
        (
            "root",
            "/usr/sbin/apache2 -k start",
            0.0,
            0.7,
            222_536,
            28_116,
            "Ss",
            58,
        ),
    ];
    let mut out: Vec<Process> = KERNEL
        .iter()
        .map(|&(pid, command, stat, time)| Process {
            user: "root".to_owned(),
            pid,
            cpu: 0.0,
            mem: if pid == 1 { 0.2 } else { 0.0 },
            vsz: if pid == 1 { 163_920 } else { 0 },
            rss: if pid == 1 { 12_264 } else { 0 },
            tty: "?",
            stat,
            started: 0,
            time,
            command: command.to_owned(),
        })
        .collect();
    let mut pid = 180 + rng.u32(0..200);
    for &(user, command, cpu, mem, vsz, rss, stat, time) in DAEMONS {
        pid += 1 + rng.u32(0..30);
        out.push(Process {
            user: user.to_owned(),
            pid,
            cpu,
            mem,
            vsz,
            rss,
            tty: if command.contains("tty1") {
                "tty1"
            } else {
                "?"
            },
            stat,
            started: 2 + rng.u32(0..5),
            time,
            command: command.to_owned(),
        });
    }
    pid += 40 + rng.u32(0..5000);
    for _ in 0..5 + rng.u32(0..4) {
        pid += 1 + rng.u32(0..900);
        out.push(Process {
            user: host.web_user().to_owned(),
            pid,
            cpu: 0.0,
            mem: 1.1 + rng.f32(),
            vsz: 226_000 + rng.u32(0..12_000),
            rss: 38_000 + rng.u32(0..20_000),
            tty: "?",
            stat: "S",
            started: 3_600 * rng.u32(1..200),
            time: rng.u32(0..40),
            command: "/usr/sbin/apache2 -k start".to_owned(),
        });
    }
    out
}

/// The programs on the host, in /usr/bin unless said, with their sizes.
pub const PROGRAMS: &[(&str, u64)] = &[
    ("awk", 125_416),
    ("base64", 43_808),
    ("bash", 1_234_376),
    ("cat", 43_936),
    ("chmod", 64_448),
    ("chown", 72_672),
    ("cp", 153_104),
    ("crontab", 43_568),
    ("curl", 260_328),
    ("cut", 47_480),
    ("dash", 125_560),
    ("date", 108_920),
    ("df", 97_552),
    ("echo", 35_664),
    ("env", 48_064),
    ("false", 31_504),
    ("find", 311_656),
    ("free", 27_024),
    ("grep", 203_152),
    ("gzip", 98_136),
    ("head", 47_544),
    ("hostname", 22_760),
    ("id", 48_064),
    ("ip", 706_256),
    ("kill", 31_104),
    ("less", 180_064),
    ("ls", 147_176),
    ("md5sum", 47_480),
    ("mkdir", 72_672),
    ("more", 59_632),
    ("mv", 149_952),
    ("mysql", 4_617_680),
    ("nano", 283_680),
    ("nc.traditional", 34_952),
    ("netstat", 154_680),
    ("nohup", 39_680),
    ("perl", 3_478_464),
    ("php7.4", 4_885_632),
    ("ping", 76_672),
    ("printenv", 35_552),
    ("ps", 137_688),
    ("pwd", 39_616),
    ("python3.9", 5_479_736),
    ("rm", 72_704),
    ("sed", 122_224),
    ("sha1sum", 51_576),
    ("sha256sum", 55_672),
    ("sleep", 35_616),
    ("sort", 121_832),
    ("stat", 87_864),
    ("su", 71_912),
    ("sudo", 182_600),
    ("tail", 72_480),
    ("tar", 448_888),
    ("timeout", 43_872),
    ("touch", 97_552),
    ("tr", 51_616),
    ("true", 31_504),
    ("uname", 39_744),
    ("uniq", 47_576),
    ("uptime", 14_728),
    ("w", 23_016),
    ("wc", 47_616),
    ("wget", 527_464),
    ("which", 946),
    ("who", 55_960),
    ("whoami", 35_632),
    ("xargs", 68_624),
];

/// Commands that are links to others, as Debian's alternatives make them.
const LINKS: &[(&str, &str)] = &[
    ("/usr/bin/sh", "dash"),
    ("/usr/bin/nc", "/etc/alternatives/nc"),
    ("/etc/alternatives/nc", "/bin/nc.traditional"),
    ("/usr/bin/netcat", "/etc/alternatives/netcat"),
    ("/etc/alternatives/netcat", "/bin/nc.traditional"),
    ("/usr/bin/php", "/etc/alternatives/php"),
    ("/etc/alternatives/php", "/usr/bin/php7.4"),
    ("/usr/bin/python3", "python3.9"),
    ("/usr/bin/vi", "/etc/alternatives/vi"),
    ("/etc/alternatives/vi", "/usr/bin/nano"),
    ("/bin", "usr/bin"),
    ("/sbin", "usr/sbin"),
    ("/lib", "usr/lib"),
    ("/lib64", "usr/lib64"),
    ("/etc/os-release", "../usr/lib/os-release"),
    ("/var/run", "/run"),
    ("/var/lock", "/run/lock"),
];

const SBIN_PROGRAMS: &[(&str, u64)] = &[
    ("agetty", 64_744),
    ("apache2", 671_536),
    ("cron", 55_944),
    ("ifconfig", 84_000),
    ("mariadbd", 22_994_904),
    ("nologin", 14_664),
    ("route", 67_328),
    ("rsyslogd", 694_064),
    ("sshd", 884_360),
];

fn files(host: &Host, rng: &mut fastrand::Rng) -> FileSystem {
    let mut fs = FileSystem::default();
    let installed = host.installed;
    let mut date = |spread: u32| installed + i64::from(rng.u32(0..spread.max(1)));
    let web = host.user.uid;
    let add =
        |fs: &mut FileSystem, path: &str, content: Content, mode, owner: (u32, u32), mtime| {
            fs.insert(
                path,
                Node {
                    content,
                    mode,
                    uid: owner.0,
                    gid: owner.1,
                    mtime,
                },
            );
        };
    let root = (0, 0);
    let text = |s: String| Content::Text(s.into());
    let dirs: &[(&str, u32, (u32, u32))] = &[
        ("/", 0o755, root),
        ("/boot", 0o755, root),
        ("/dev", 0o755, root),
        ("/dev/shm", 0o1777, root),
        ("/etc", 0o755, root),
        ("/home", 0o755, root),
        ("/media", 0o755, root),
        ("/mnt", 0o755, root),
        ("/opt", 0o755, root),
        ("/proc", 0o555, root),
        ("/root", 0o700, root),
        ("/run", 0o755, root),
        ("/run/lock", 0o1777, root),
        ("/srv", 0o755, root),
        ("/sys", 0o555, root),
        ("/tmp", 0o1777, root),
        ("/usr/local/bin", 0o755, root),
        ("/usr/lib64", 0o755, root),
        ("/var/backups", 0o755, root),
        ("/var/cache", 0o755, root),
        ("/var/lib/mysql", 0o755, (106, 112)),
        ("/var/lib/php/sessions", 0o1733, root),
        ("/var/log/apache2", 0o750, (0, 4)),
        ("/var/log/mysql", 0o2750, (106, 4)),
        ("/var/mail", 0o2775, (0, 8)),
        ("/var/tmp", 0o1777, root),
        ("/var/www", 0o755, root),
    ];
    for &(path, mode, owner) in dirs {
        add(&mut fs, path, Content::Dir, mode, owner, installed);
    }
    for &(path, target) in LINKS {
        add(
            &mut fs,
            path,
            Content::Symlink(target.into()),
            0o777,
            root,
            installed,
        );
    }
    for &(name, size) in PROGRAMS {
        let mode = if name == "sudo" || name == "su" {
            0o4755
        } else {
            0o755
        };
        add(
            &mut fs,
            &format!("/usr/bin/{name}"),
            Content::Binary(size),
            mode,
            root,
            installed,
        );
    }
    for &(name, size) in SBIN_PROGRAMS {
        add(
            &mut fs,
            &format!("/usr/sbin/{name}"),
            Content::Binary(size),
            0o755,
            root,
            installed,
        );
    }
    for name in ["null", "zero", "random", "urandom", "tty"] {
        add(
            &mut fs,
            &format!("/dev/{name}"),
            Content::Text("".into()),
            0o666,
            root,
            installed,
        );
    }
    let etc: Vec<(&str, String, u32, (u32, u32))> = vec![
        ("/etc/passwd", passwd(host), 0o644, root),
        ("/etc/group", group(host), 0o644, root),
        ("/etc/shadow", shadow(host), 0o640, (0, 42)),
        ("/etc/gshadow", String::new(), 0o640, (0, 42)),
        ("/etc/sudoers", String::new(), 0o440, root),
        ("/etc/hostname", format!("{}\n", host.hostname), 0o644, root),
        ("/etc/hosts", hosts(host), 0o644, root),
        (
            "/etc/issue",
            format!(
                "{} {} \\n \\l\n\n",
                host.profile.os.name, host.profile.os.version_id
            ),
            0o644,
            root,
        ),
        (
            "/etc/issue.net",
            format!("{} {}\n", host.profile.os.name, host.profile.os.version_id),
            0o644,
            root,
        ),
        (
            "/etc/debian_version",
            format!("{}\n", host.profile.os.debian_version),
            0o644,
            root,
        ),
        ("/usr/lib/os-release", os_release(host), 0o644, root),
        (
            "/etc/resolv.conf",
            format!(
                "domain {}\nsearch {}\nnameserver {}\n",
                host.profile.domain, host.profile.domain, host.profile.nameserver
            ),
            0o644,
            root,
        ),
        ("/etc/crontab", CRONTAB.to_owned(), 0o644, root),
        ("/etc/fstab", fstab(host), 0o644, root),
        (
            "/etc/apache2/apache2.conf",
            APACHE_CONF.to_owned(),
            0o644,
            root,
        ),
        (
            "/etc/apache2/ports.conf",
            PORTS_CONF.to_owned(),
            0o644,
            root,
        ),
        ("/etc/apache2/envvars", envvars(host), 0o644, root),
        (
            "/etc/apache2/sites-available/000-default.conf",
            vhost(host),
            0o644,
            root,
        ),
        (
            "/etc/php/7.4/apache2/php.ini",
            PHP_INI.to_owned(),
            0o644,
            root,
        ),
        ("/etc/mysql/my.cnf", MY_CNF.to_owned(), 0o644, root),
        ("/etc/mysql/debian.cnf", String::new(), 0o600, root),
        ("/etc/ssh/sshd_config", SSHD_CONFIG.to_owned(), 0o644, root),
        ("/etc/ssh/ssh_host_ed25519_key", String::new(), 0o600, root),
        ("/var/log/dpkg.log", dpkg_log(host), 0o644, root),
        ("/var/log/auth.log", String::new(), 0o640, (0, 4)),
        ("/var/log/syslog", String::new(), 0o640, (0, 4)),
        ("/var/log/apache2/access.log", String::new(), 0o640, (0, 4)),
        ("/var/log/apache2/error.log", String::new(), 0o640, (0, 4)),
    ];
    for (path, content, mode, owner) in etc {
        add(&mut fs, path, text(content), mode, owner, date(3_000_000));
    }
    add(
        &mut fs,
        "/etc/apache2/sites-enabled/000-default.conf",
        Content::Symlink("../sites-available/000-default.conf".into()),
        0o777,
        root,
        installed,
    );
    let admin = &host.admin;
    let home = format!("/home/{admin}");
    add(&mut fs, &home, Content::Dir, 0o755, (1000, 1000), installed);
    for (name, content, mode) in [
        (".bashrc", BASHRC.to_owned(), 0o644),
        (".profile", PROFILE.to_owned(), 0o644),
        (".bash_logout", "# ~/.bash_logout\n".to_owned(), 0o644),
        (".bash_history", String::new(), 0o600),
    ] {
        add(
            &mut fs,
            &format!("{home}/{name}"),
            text(content),
            mode,
            (1000, 1000),
            date(20_000_000),
        );
    }
    add(
        &mut fs,
        &format!("{home}/.ssh"),
        Content::Dir,
        0o700,
        (1000, 1000),
        installed,
    );
    // /proc, as seen by a process of the web server.
    let proc_files: Vec<(&str, Content)> = vec![
        ("/proc/version", text(proc_version(host))),
        ("/proc/cpuinfo", text(cpuinfo(host))),
        ("/proc/meminfo", text(meminfo(host))),
        ("/proc/mounts", text(MOUNTS.to_owned())),
        ("/proc/self/environ", text(environ(host))),
        (
            "/proc/self/cmdline",
            text("/usr/sbin/apache2\0-k\0start\0".to_owned()),
        ),
        ("/proc/self/status", text(status(host))),
        (
            "/proc/sys/kernel/hostname",
            text(format!("{}\n", host.hostname)),
        ),
    ];
    for (path, content) in proc_files {
        add(&mut fs, path, content, 0o444, root, installed);
    }
    let (clock, cpus) = (host.clock, f64::from(host.profile.cpus));
    add(
        &mut fs,
        "/proc/uptime",
        Content::Generated(Arc::new(move |now| {
            let up = now - clock.boot_time(now);
            format!("{up:.2} {:.2}\n", up * cpus * 0.93)
        })),
        0o444,
        root,
        installed,
    );
    let load_seed = host.seed;
    add(
        &mut fs,
        "/proc/loadavg",
        Content::Generated(Arc::new(move |now| loadavg(load_seed, now))),
        0o444,
        root,
        installed,
    );
    // The web application.
    let root_dir = &host.profile.web_root;
    let web_owner = (web, web);
    add(&mut fs, root_dir, Content::Dir, 0o755, web_owner, installed);
    let site_date = installed + 86_400 * 3;
    let web_files: Vec<(&str, String, u32)> = vec![
        ("index.php", WP_INDEX.to_owned(), 0o644),
        ("wp-config.php", wp_config(host, rng), 0o640),
        ("config.php", config_php(host), 0o644),
        (".htaccess", HTACCESS.to_owned(), 0o644),
        ("robots.txt", ROBOTS.to_owned(), 0o644),
        ("wp-login.php", wp_stub("Login"), 0o644),
        ("xmlrpc.php", wp_stub("XML-RPC protocol support"), 0o644),
        (
            "wp-load.php",
            wp_stub("Bootstrap file for setting the ABSPATH constant"),
            0o644,
        ),
        (
            "wp-settings.php",
            wp_stub("Used to set up and fix common variables"),
            0o644,
        ),
        (
            "wp-blog-header.php",
            wp_stub("Loads the WordPress environment and template"),
            0o644,
        ),
        ("wp-content/index.php", SILENCE.to_owned(), 0o644),
        ("wp-content/plugins/index.php", SILENCE.to_owned(), 0o644),
        ("wp-content/themes/index.php", SILENCE.to_owned(), 0o644),
        ("wp-content/debug.log", debug_log(host), 0o644),
        ("wp-includes/version.php", WP_VERSION.to_owned(), 0o644),
        (
            "wp-admin/index.php",
            wp_stub("Dashboard Administration Screen"),
            0o644,
        ),
    ];
    for (name, content, mode) in web_files {
        let path = format!("{root_dir}/{name}");
        add(&mut fs, &path, text(content), mode, web_owner, site_date);
    }
    for dir in [
        "wp-content",
        "wp-content/uploads",
        "wp-content/plugins",
        "wp-content/themes",
        "wp-admin",
        "wp-includes",
    ] {
        add(
            &mut fs,
            &format!("{root_dir}/{dir}"),
            Content::Dir,
            0o755,
            web_owner,
            site_date,
        );
    }
    for file in &host.profile.files {
        add(
            &mut fs,
            &file.path,
            text(file.content.clone()),
            file.mode,
            (file.uid, file.gid),
            site_date,
        );
    }
    fs
}

fn loadavg(seed: u64, now: f64) -> String {
    // A gentle wave that differs per host.
    let phase = (seed % 1000) as f64;
    let load = 0.08 + 0.12 * ((now / 600.0 + phase).sin() + 1.0);
    format!(
        "{:.2} {:.2} {:.2} 1/{} {}\n",
        load,
        load * 0.9,
        load * 0.8,
        130 + seed % 40,
        12_000 + (now as u64 / 7) % 30_000
    )
}

fn passwd(host: &Host) -> String {
    host.users
        .iter()
        .map(|u| {
            format!(
                "{}:x:{}:{}:{}:{}:{}\n",
                u.name, u.uid, u.gid, u.gecos, u.home, u.shell
            )
        })
        .collect()
}

fn group(host: &Host) -> String {
    let web = host.web_user();
    let admin = &host.admin;
    let uid = host.user.uid;
    format!(
        "root:x:0:\ndaemon:x:1:\nbin:x:2:\nsys:x:3:\nadm:x:4:{admin}\ntty:x:5:\ndisk:x:6:\n\
         lp:x:7:\nmail:x:8:\nnews:x:9:\nuucp:x:10:\nman:x:12:\nproxy:x:13:\nkmem:x:15:\n\
         dialout:x:20:\nfax:x:21:\nvoice:x:22:\ncdrom:x:24:{admin}\nfloppy:x:25:{admin}\n\
         tape:x:26:\nsudo:x:27:{admin}\naudio:x:29:{admin}\ndip:x:30:{admin}\n{web}:x:{uid}:\n\
         backup:x:34:\noperator:x:37:\nlist:x:38:\nirc:x:39:\nsrc:x:40:\ngnats:x:41:\n\
         shadow:x:42:\nutmp:x:43:\nvideo:x:44:{admin}\nsasl:x:45:\nplugdev:x:46:{admin}\n\
         staff:x:50:\ngames:x:60:\nusers:x:100:\nnogroup:x:65534:\nsystemd-timesync:x:101:\n\
         systemd-journal:x:102:\nsystemd-network:x:103:\nsystemd-resolve:x:104:\n\
         netdev:x:109:{admin}\nmessagebus:x:110:\nssh:x:111:\nmysql:x:112:\n{admin}:x:1000:\n"
    )
}

fn shadow(host: &Host) -> String {
    host.users
        .iter()
        .map(|u| format!("{}:*:19500:0:99999:7:::\n", u.name))
        .collect()
}

fn hosts(host: &Host) -> String {
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{fqdn}\t{name}\n{address}\t{fqdn}\t{name}\n\n\
         # The following lines are desirable for IPv6 capable hosts\n\
         ::1     localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n",
        fqdn = host.fqdn(),
        name = host.hostname,
        address = host.address
    )
}

fn os_release(host: &Host) -> String {
    let os = &host.profile.os;
    format!(
        "PRETTY_NAME=\"{}\"\nNAME=\"{}\"\nVERSION_ID=\"{}\"\nVERSION=\"{}\"\n\
         VERSION_CODENAME={}\nID={}\nHOME_URL=\"https://www.debian.org/\"\n\
         SUPPORT_URL=\"https://www.debian.org/support\"\nBUG_REPORT_URL=\"https://bugs.debian.org/\"\n",
        os.pretty_name, os.name, os.version_id, os.version, os.codename, os.id
    )
}

fn fstab(host: &Host) -> String {
    let uuid = |aspect: &str| {
        let mut rng = host.rng(aspect);
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            rng.u32(..),
            rng.u16(..),
            rng.u16(..),
            rng.u16(..),
            rng.u64(..) & 0xffff_ffff_ffff
        )
    };
    format!(
        "# /etc/fstab: static file system information.\n#\n\
         # <file system> <mount point>   <type>  <options>       <dump>  <pass>\n\
         UUID={} /               ext4    errors=remount-ro 0       1\n\
         UUID={} none            swap    sw              0       0\n",
        uuid("root-fs"),
        uuid("swap")
    )
}

fn proc_version(host: &Host) -> String {
    let kernel = &host.profile.kernel;
    format!(
        "Linux version {} ({}) {}\n",
        kernel.release, kernel.builder, kernel.version
    )
}

fn cpuinfo(host: &Host) -> String {
    let cpus = host.profile.cpus;
    let model = &host.profile.cpu_model;
    let mhz = model
        .rsplit('@')
        .next()
        .and_then(|ghz| ghz.trim().trim_end_matches("GHz").parse::<f64>().ok())
        .map_or(2399.998, |ghz| ghz * 1000.0 - 0.002);
    (0..cpus)
        .map(|cpu| {
            format!(
                "processor\t: {cpu}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 79\n\
                 model name\t: {model}\nstepping\t: 1\nmicrocode\t: 0xb000040\ncpu MHz\t\t: {mhz:.3}\n\
                 cache size\t: 35840 KB\nphysical id\t: {cpu}\nsiblings\t: 1\ncore id\t\t: 0\n\
                 cpu cores\t: 1\napicid\t\t: {cpu}\ninitial apicid\t: {cpu}\nfpu\t\t: yes\n\
                 fpu_exception\t: yes\ncpuid level\t: 13\nwp\t\t: yes\nflags\t\t: {CPU_FLAGS}\n\
                 bugs\t\t: cpu_meltdown spectre_v1 spectre_v2 spec_store_bypass l1tf mds swapgs taa \
                 itlb_multihit mmio_stale_data\nbogomips\t: {:.2}\nclflush size\t: 64\n\
                 cache_alignment\t: 64\naddress sizes\t: 46 bits physical, 48 bits virtual\n\
                 power management:\n\n",
                mhz * 2.0
            )
        })
        .collect()
}

const CPU_FLAGS: &str = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 \
    clflush mmx fxsr sse sse2 ss syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl \
    xtopology cpuid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe \
    popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch \
    invpcid_single pti ssbd ibrs ibpb stibp fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 erms \
    invpcid rtm rdseed adx smap xsaveopt arat md_clear";

fn meminfo(host: &Host) -> String {
    let total = host.profile.memory_mib * 1024;
    let mut rng = host.rng("memory");
    let free = total / 10 + rng.u64(0..total / 20);
    let available = total / 2 + rng.u64(0..total / 8);
    let cached = total / 3;
    format!(
        "MemTotal:       {total:>8} kB\nMemFree:        {free:>8} kB\nMemAvailable:   {available:>8} kB\n\
         Buffers:        {:>8} kB\nCached:         {cached:>8} kB\nSwapCached:     {:>8} kB\n\
         Active:         {:>8} kB\nInactive:       {:>8} kB\nSwapTotal:      {:>8} kB\n\
         SwapFree:       {:>8} kB\nShmem:          {:>8} kB\n",
        total / 40,
        rng.u64(0..2048),
        total / 3,
        total / 4,
        1_000_444,
        990_000 + rng.u64(0..10_000),
        12_000 + rng.u64(0..4000),
    )
}

const MOUNTS: &str = "/dev/vda1 / ext4 rw,relatime,errors=remount-ro 0 0\n\
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n\
udev /dev devtmpfs rw,nosuid,relatime,size=1983168k,nr_inodes=495792,mode=755 0 0\n\
devpts /dev/pts devpts rw,nosuid,noexec,relatime,gid=5,mode=620,ptmxmode=000 0 0\n\
tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime,size=402584k,mode=755 0 0\n\
tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0\n\
tmpfs /run/lock tmpfs rw,nosuid,nodev,noexec,relatime,size=5120k 0 0\n";

fn environ(host: &Host) -> String {
    host.environment()
        .into_iter()
        .map(|(name, value)| format!("{name}={value}\0"))
        .collect()
}

fn status(host: &Host) -> String {
    let worker = host
        .processes
        .iter()
        .rev()
        .find(|p| p.user == host.web_user())
        .map_or(1000, |p| p.pid);
    let uid = host.user.uid;
    format!(
        "Name:\tapache2\nUmask:\t0022\nState:\tR (running)\nTgid:\t{worker}\nNgid:\t0\nPid:\t{worker}\n\
         PPid:\t{}\nTracerPid:\t0\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{uid}\t{uid}\t{uid}\t{uid}\n\
         FDSize:\t64\nGroups:\t{uid} \nVmPeak:\t  233680 kB\nVmSize:\t  228348 kB\nVmRSS:\t   41612 kB\n\
         Threads:\t1\nSeccomp:\t0\nCpus_allowed_list:\t0-{}\n",
        host.processes
            .iter()
            .find(|p| p.command.starts_with("/usr/sbin/apache2") && p.user == "root")
            .map_or(1, |p| p.pid),
        host.profile.cpus.saturating_sub(1)
    )
}

fn envvars(host: &Host) -> String {
    let user = host.web_user();
    format!(
        "# envvars - default environment variables for apache2ctl\n\n\
         unset HOME\n\n\
         export APACHE_RUN_USER={user}\nexport APACHE_RUN_GROUP={user}\n\
         export APACHE_PID_FILE=/var/run/apache2$SUFFIX/apache2.pid\n\
         export APACHE_RUN_DIR=/var/run/apache2$SUFFIX\nexport APACHE_LOCK_DIR=/var/lock/apache2$SUFFIX\n\
         export APACHE_LOG_DIR=/var/log/apache2$SUFFIX\n\nexport LANG=C\nexport LANG\n"
    )
}

fn vhost(host: &Host) -> String {
    format!(
        "<VirtualHost *:80>\n\tServerName {fqdn}\n\tServerAdmin webmaster@{domain}\n\
         \tDocumentRoot {root}\n\n\t<Directory {root}>\n\t\tOptions FollowSymLinks\n\
         \t\tAllowOverride All\n\t\tRequire all granted\n\t</Directory>\n\n\
         \tErrorLog ${{APACHE_LOG_DIR}}/error.log\n\tCustomLog ${{APACHE_LOG_DIR}}/access.log combined\n\
         </VirtualHost>\n",
        fqdn = host.fqdn(),
        domain = host.profile.domain,
        root = host.profile.web_root
    )
}

fn dpkg_log(host: &Host) -> String {
    let day = chrono::DateTime::from_timestamp(host.installed, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d");
    let php = &host.profile.php_version;
    [
        "apache2-bin:amd64 2.4.62-1~deb11u1",
        "apache2:amd64 2.4.62-1~deb11u1",
        "mariadb-server-10.5:amd64 1:10.5.23-0+deb11u1",
        "libapache2-mod-php7.4:amd64 7.4.33-1+deb11u5",
        "php7.4-mysql:amd64 7.4.33-1+deb11u5",
        "php7.4-curl:amd64 7.4.33-1+deb11u5",
    ]
    .iter()
    .enumerate()
    .map(|(i, package)| {
        let package = package.replace("7.4.33", php);
        format!(
            "{day} 10:{:02}:{:02} status installed {package}\n",
            14 + i,
            (i * 17) % 60
        )
    })
    .collect()
}

fn debug_log(host: &Host) -> String {
    let day = chrono::DateTime::from_timestamp(host.installed + 86_400 * 40, 0)
        .unwrap_or_default()
        .format("%d-%b-%Y");
    let root = &host.profile.web_root;
    format!(
        "[{day} 08:12:44 UTC] PHP Notice:  Trying to access array offset on value of type bool in \
         {root}/wp-content/plugins/contact-form-7/includes/submission.php on line 382\n\
         [{day} 08:12:44 UTC] PHP Warning:  Cannot modify header information - headers already \
         sent by (output started at {root}/wp-includes/functions.php:5427) in \
         {root}/wp-includes/pluggable.php on line 1340\n\
         [{day} 11:57:03 UTC] WordPress database error Table '{}.wp_wfconfig' doesn't exist for \
         query SELECT name, val, autoload FROM wp_wfconfig WHERE name = 'cacheType'\n",
        host.db_name
    )
}

fn wp_config(host: &Host, rng: &mut fastrand::Rng) -> String {
    const SALT: &[u8] =
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!@#$%^&*()-_[]{}<>~+=,.;:/?|";
    let mut salt = || -> String {
        (0..64)
            .map(|_| SALT[rng.usize(..SALT.len())] as char)
            .collect()
    };
    let keys: String = [
        "AUTH_KEY",
        "SECURE_AUTH_KEY",
        "LOGGED_IN_KEY",
        "NONCE_KEY",
        "AUTH_SALT",
        "SECURE_AUTH_SALT",
        "LOGGED_IN_SALT",
        "NONCE_SALT",
    ]
    .iter()
    .map(|name| {
        format!(
            "define( '{name}',{:width$}'{}' );\n",
            "",
            salt(),
            width = 17 - name.len()
        )
    })
    .collect();
    format!(
        "<?php\n/**\n * The base configuration for WordPress\n *\n * @package WordPress\n */\n\n\
         // ** Database settings ** //\n/** The name of the database for WordPress */\n\
         define( 'DB_NAME', '{}' );\n\n/** Database username */\ndefine( 'DB_USER', '{}' );\n\n\
         /** Database password */\ndefine( 'DB_PASSWORD', '{}' );\n\n/** Database hostname */\n\
         define( 'DB_HOST', 'localhost' );\n\n/** Database charset to use in creating database tables. */\n\
         define( 'DB_CHARSET', 'utf8mb4' );\n\n/** The database collate type. */\n\
         define( 'DB_COLLATE', '' );\n\n/**#@+\n * Authentication unique keys and salts.\n */\n\
         {keys}\n/**#@-*/\n\n$table_prefix = 'wp_';\n\ndefine( 'WP_DEBUG', false );\n\
         define( 'WP_DEBUG_LOG', true );\n\n/* That's all, stop editing! Happy publishing. */\n\n\
         /** Absolute path to the WordPress directory. */\nif ( ! defined( 'ABSPATH' ) ) {{\n\
         \tdefine( 'ABSPATH', __DIR__ . '/' );\n}}\n\n/** Sets up WordPress vars and included files. */\n\
         require_once ABSPATH . 'wp-settings.php';\n",
        host.db_name, host.db_user, host.db_password
    )
}

fn config_php(host: &Host) -> String {
    format!(
        "<?php\n// Settings of the old order tools (/tools); WordPress reads wp-config.php.\n\
         $config = array(\n    'db_host' => 'localhost',\n    'db_name' => '{}',\n\
         \x20   'db_user' => '{}',\n    'db_pass' => '{}',\n    'admin_email' => 'admin@{}',\n\
         \x20   'smtp_host' => 'mail.{}',\n    'debug' => false,\n);\n",
        host.db_name, host.db_user, host.db_password, host.profile.domain, host.profile.domain
    )
}

fn wp_stub(what: &str) -> String {
    format!(
        "<?php\n/**\n * WordPress: {what}.\n *\n * @package WordPress\n */\n\n\
         require __DIR__ . '/wp-load.php';\n"
    )
}

const WP_INDEX: &str = "<?php\n/**\n * Front to the WordPress application. This file doesn't do \
anything, but loads\n * wp-blog-header.php which does and tells WordPress to load the theme.\n *\n \
* @package WordPress\n */\n\n/**\n * Tells WordPress to load the WordPress theme and output it.\n \
*\n * @var bool\n */\ndefine( 'WP_USE_THEMES', true );\n\n/** Loads the WordPress Environment and \
Template */\nrequire __DIR__ . '/wp-blog-header.php';\n";

const WP_VERSION: &str = "<?php\n/**\n * WordPress Version\n *\n * @global string $wp_version\n */\n\
$wp_version = '5.8.3';\n\n$wp_db_version = 49752;\n\n$tinymce_version = '49110-20201110';\n\n\
$required_php_version = '5.6.20';\n\n$required_mysql_version = '5.0';\n";

const SILENCE: &str = "<?php\n// Silence is golden.\n";

const HTACCESS: &str = "# BEGIN WordPress\n<IfModule mod_rewrite.c>\nRewriteEngine On\n\
RewriteRule .* - [E=HTTP_AUTHORIZATION:%{HTTP:Authorization}]\nRewriteBase /\n\
RewriteRule ^index\\.php$ - [L]\nRewriteCond %{REQUEST_FILENAME} !-f\n\
RewriteCond %{REQUEST_FILENAME} !-d\nRewriteRule . /index.php [L]\n</IfModule>\n# END WordPress\n";

const ROBOTS: &str = "User-agent: *\nDisallow: /wp-admin/\nAllow: /wp-admin/admin-ajax.php\n";

const CRONTAB: &str = "# /etc/crontab: system-wide crontab\nSHELL=/bin/sh\n\
PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin\n\n\
# m h dom mon dow user\tcommand\n\
17 *\t* * *\troot    cd / && run-parts --report /etc/cron.hourly\n\
25 6\t* * *\troot\ttest -x /usr/sbin/anacron || ( cd / && run-parts --report /etc/cron.daily )\n\
47 6\t* * 7\troot\ttest -x /usr/sbin/anacron || ( cd / && run-parts --report /etc/cron.weekly )\n\
52 6\t1 * *\troot\ttest -x /usr/sbin/anacron || ( cd / && run-parts --report /etc/cron.monthly )\n\
*/15 *\t* * *\twww-data\tphp /var/www/html/wp-cron.php > /dev/null 2>&1\n#\n";

const APACHE_CONF: &str = "# This is the main Apache server configuration file.\n\
DefaultRuntimeDir ${APACHE_RUN_DIR}\nPidFile ${APACHE_PID_FILE}\nTimeout 300\nKeepAlive On\n\
MaxKeepAliveRequests 100\nKeepAliveTimeout 5\n\nUser ${APACHE_RUN_USER}\nGroup ${APACHE_RUN_GROUP}\n\n\
HostnameLookups Off\nErrorLog ${APACHE_LOG_DIR}/error.log\nLogLevel warn\n\n\
IncludeOptional mods-enabled/*.load\nIncludeOptional mods-enabled/*.conf\nInclude ports.conf\n\n\
<Directory />\n\tOptions FollowSymLinks\n\tAllowOverride None\n\tRequire all denied\n</Directory>\n\n\
<Directory /var/www/>\n\tOptions Indexes FollowSymLinks\n\tAllowOverride None\n\tRequire all granted\n\
</Directory>\n\nAccessFileName .htaccess\n\n<FilesMatch \"^\\.ht\">\n\tRequire all denied\n</FilesMatch>\n\n\
LogFormat \"%h %l %u %t \\\"%r\\\" %>s %O \\\"%{Referer}i\\\" \\\"%{User-Agent}i\\\"\" combined\n\n\
IncludeOptional conf-enabled/*.conf\nIncludeOptional sites-enabled/*.conf\n";

const PORTS_CONF: &str = "Listen 80\n\n<IfModule ssl_module>\n\tListen 443\n</IfModule>\n\n\
<IfModule mod_gnutls.c>\n\tListen 443\n</IfModule>\n";

const PHP_INI: &str = "[PHP]\nengine = On\nshort_open_tag = Off\nprecision = 14\noutput_buffering = 4096\n\
zlib.output_compression = Off\nimplicit_flush = Off\nserialize_precision = -1\ndisable_functions =\n\
disable_classes =\nexpose_php = On\nmax_execution_time = 30\nmax_input_time = 60\nmemory_limit = 128M\n\
error_reporting = E_ALL & ~E_DEPRECATED & ~E_STRICT\ndisplay_errors = On\ndisplay_startup_errors = Off\n\
log_errors = On\nhtml_errors = Off\nvariables_order = \"GPCS\"\nrequest_order = \"GP\"\n\
register_argc_argv = Off\nauto_globals_jit = On\npost_max_size = 8M\ndefault_mimetype = \"text/html\"\n\
default_charset = \"UTF-8\"\nenable_dl = Off\nfile_uploads = On\nupload_max_filesize = 2M\n\
max_file_uploads = 20\nallow_url_fopen = On\nallow_url_include = On\ndefault_socket_timeout = 60\n\n\
[Session]\nsession.save_handler = files\nsession.save_path = \"/var/lib/php/sessions\"\n";

const MY_CNF: &str = "# The MariaDB configuration file\n#\n# The MariaDB/MySQL tools read \
configuration files in the following order:\n# 0. \"/etc/mysql/my.cnf\" symlinks to this file, \
reason why all the rest is read.\n# 1. \"/etc/mysql/mariadb.cnf\" (this file) to set global \
defaults,\n# 2. \"/etc/mysql/conf.d/*.cnf\" to set global options.\n\n[client-server]\n\
socket = /run/mysqld/mysqld.sock\n\n!includedir /etc/mysql/conf.d/\n!includedir /etc/mysql/mariadb.conf.d/\n";

const SSHD_CONFIG: &str = "Include /etc/ssh/sshd_config.d/*.conf\n\nPermitRootLogin \
prohibit-password\nPubkeyAuthentication yes\nPasswordAuthentication yes\n\
KbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding yes\nPrintMotd no\n\
AcceptEnv LANG LC_*\nSubsystem\tsftp\t/usr/lib/openssh/sftp-server\n";

const BASHRC: &str = "# ~/.bashrc: executed by bash(1) for non-login shells.\n\n\
case $- in\n    *i*) ;;\n      *) return;;\nesac\n\nHISTCONTROL=ignoreboth\nshopt -s histappend\n\
HISTSIZE=1000\nHISTFILESIZE=2000\n\nalias ls='ls --color=auto'\nalias ll='ls -alF'\n";

const PROFILE: &str = "# ~/.profile: executed by the command interpreter for login shells.\n\n\
if [ -n \"$BASH_VERSION\" ]; then\n    if [ -f \"$HOME/.bashrc\" ]; then\n\t. \"$HOME/.bashrc\"\n    fi\nfi\n\n\
if [ -d \"$HOME/bin\" ] ; then\n    PATH=\"$HOME/bin:$PATH\"\nfi\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulation::fs::{Files, Overlay};

    const SENSOR: &str = "9c10172f-7ce2-4fb4-b1c6-abc70141db56";

    fn read(host: &Host, path: &str) -> Result<String, crate::emulation::fs::FsError> {
        let mut overlay = Overlay::default();
        Files::new(&host.files, &mut overlay, &host.user, 1.7e9, 1 << 20).read(path)
    }

    #[test]
    fn a_host_is_the_same_for_its_sensor_and_differs_from_another() {
        let profile = Profile::default();
        let a = Host::new(&profile, SENSOR);
        let again = Host::new(&profile, SENSOR);
        let b = Host::new(&profile, "another-sensor");
        assert_eq!(a.hostname, again.hostname);
        assert_eq!(a.db_password, again.db_password);
        assert_eq!(
            read(&a, "/var/www/html/wp-config.php"),
            read(&again, "/var/www/html/wp-config.php")
        );
        assert_ne!(
            (a.address, a.db_password.clone()),
            (b.address, b.db_password.clone())
        );
        let reseeded = Host::new(
            &Profile {
                seed: "other".into(),
                ..Profile::default()
            },
            SENSOR,
        );
        assert_ne!(a.db_password, reseeded.db_password);
    }

    #[test]
    fn the_files_scanners_read_are_there() {
        let host = Host::new(&Profile::default(), SENSOR);
        let passwd = read(&host, "/etc/passwd").unwrap();
        assert!(
            passwd.starts_with("root:x:0:0:root:/root:/bin/bash\n"),
            "{passwd}"
        );
        assert!(passwd.contains("www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n"));
        assert!(passwd.contains(&format!(
            "{0}:x:1000:1000:{0},,,:/home/{0}:/bin/bash\n",
            host.admin
        )));
        assert_eq!(
            read(&host, "/etc/shadow"),
            Err(crate::emulation::fs::FsError::PermissionDenied)
        );
        assert!(
            read(&host, "/etc/os-release")
                .unwrap()
                .starts_with("PRETTY_NAME=\"Debian GNU/Linux 11 (bullseye)\"\n")
        );
        assert_eq!(
            read(&host, "/etc/issue").unwrap(),
            "Debian GNU/Linux 11 \\n \\l\n\n"
        );
        assert_eq!(
            read(&host, "/proc/version").unwrap(),
            "Linux version 5.10.0-28-amd64 (debian-kernel@lists.debian.org) (gcc-10 (Debian \
             10.2.1-6) 10.2.1 20210110, GNU ld (GNU Binutils for Debian) 2.35.2) #1 SMP Debian \
             5.10.209-2 (2024-01-31)\n"
        );
        let config = read(&host, "/var/www/html/wp-config.php").unwrap();
        assert!(config.contains(&format!("define( 'DB_PASSWORD', '{}' );", host.db_password)));
        assert!(
            read(&host, "/var/www/html/config.php")
                .unwrap()
                .contains(&host.db_user)
        );
        assert!(
            read(&host, "/proc/self/environ")
                .unwrap()
                .contains("APACHE_RUN_USER=www-data\0")
        );
        assert_eq!(
            read(&host, "/proc/cpuinfo")
                .unwrap()
                .matches("processor\t:")
                .count(),
            2
        );
        let hosts = read(&host, "/etc/hosts").unwrap();
        assert!(hosts.contains(&format!(
            "{}\t{}\t{}",
            host.address,
            host.fqdn(),
            host.hostname
        )));
        let uptime: f64 = read(&host, "/proc/uptime")
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((86_400.0..90.0 * 86_400.0).contains(&uptime), "{uptime}");
        assert_eq!(
            host.id_line(),
            "uid=33(www-data) gid=33(www-data) groups=33(www-data)"
        );
    }

    #[test]
    fn a_profile_sets_what_it_names() {
        let profile: Profile = toml::from_str(
            "hostname = \"shop\"\naddress = \"198.51.100.20/24\"\nweb-user = \"apache\"\n\
             web-uid = 48\n[database]\npassword = \"s3cret\"\n\
             [[files]]\npath = \"/var/www/html/.env\"\ncontent = \"APP_KEY=x\\n\"\n",
        )
        .unwrap();
        profile.check().unwrap();
        let host = Host::new(&profile, SENSOR);
        assert_eq!(host.hostname, "shop");
        assert_eq!(host.address, Ipv4Addr::new(198, 51, 100, 20));
        assert_eq!(host.gateway, Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(
            host.id_line(),
            "uid=48(apache) gid=48(apache) groups=48(apache)"
        );
        assert!(
            read(&host, "/etc/passwd")
                .unwrap()
                .contains("apache:x:48:48:apache:/var/www:")
        );
        assert_eq!(read(&host, "/var/www/html/.env").unwrap(), "APP_KEY=x\n");
        assert!(
            read(&host, "/var/www/html/config.php")
                .unwrap()
                .contains("s3cret")
        );
        for bad in [
            "address = \"10.0.0.1\"",
            "web-root = \"www\"",
            "cpus = 0",
            "colour = 1",
        ] {
            let parsed: Result<Profile, _> = toml::from_str(bad);
            assert!(parsed.is_err() || parsed.unwrap().check().is_err(), "{bad}");
        }
    }
}
