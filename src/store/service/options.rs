//! Container options Docker honours on a service's containers: host name,
//! capabilities, sysctls, ulimits, init, stop signal, extra hosts, tty, stdin, read-only
//! root, DNS servers and search domains, extra groups.
//!
//! They are one group, [`ContainerOptions`], at the end of [`ContainerSpec`], so a spec
//! stored before they existed reads back with none of them (serde defaults). A change
//! of any of them is a change of the task spec, so the service rolls.
//!
//! Their meaning is Docker's, as `docker service create` and `docker stack deploy`
//! give it: the parsers here read the forms the CLI flags and compose keys take
//! (`nofile=1024:2048`, `host:ip` or `host=ip`, `gpu=2`), and
//! [`ContainerOptions::validate`] refuses at the control API's door what the engine
//! would refuse at container creation, naming the field
//! (`task.container.options.sysctls: ...`).
//!
//! How each option reaches Docker is in [`crate::agent::container_opts`]; `dns` is the
//! exception: orc's own cluster DNS stays the container's resolver, and forwards the
//! names it does not own to the service's `dns` servers instead of the node's (see
//! [`crate::mesh::clients`]).

use super::*;

/// At most this many entries in any one option list or map.
pub const MAX_OPTION_ENTRIES: usize = 64;
/// At most this many bytes in any one entry (a name, a value, a `host:ip`).
pub const MAX_OPTION_LEN: usize = 255;

/// One resource limit of the container's processes (`ulimit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// The soft limit (-1: unlimited).
    pub soft: i64,
    /// The hard limit (-1: unlimited).
    pub hard: i64,
}

/// Docker's container options; every field empty or false means Docker's default.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerOptions {
    /// The container's host name (empty: Docker's, the container id's start).
    pub hostname: String,
    /// Capabilities added (`NET_ADMIN` or `CAP_NET_ADMIN`, or `ALL`).
    pub cap_add: Vec<String>,
    /// Capabilities dropped.
    pub cap_drop: Vec<String>,
    /// Namespaced kernel parameters (`net.core.somaxconn` → `1024`).
    pub sysctls: BTreeMap<String, String>,
    /// Resource limits by name (`nofile`, `nproc`, ...).
    pub ulimits: BTreeMap<String, Ulimit>,
    /// Runs an init process (Docker's `tini`) as PID 1.
    pub init: bool,
    /// The signal that stops the container (empty: the image's, else SIGTERM).
    pub stop_signal: String,
    /// Extra `/etc/hosts` lines, each `host:ip`.
    pub extra_hosts: Vec<String>,
    /// Allocates a pseudo-TTY.
    pub tty: bool,
    /// Keeps stdin open.
    pub stdin_open: bool,
    /// Mounts the root file system read-only.
    pub read_only: bool,
    /// Name servers for names outside the cluster (IP addresses; empty: the node's).
    pub dns: Vec<String>,
    /// Search domains, after the cluster's own.
    pub dns_search: Vec<String>,
    /// Supplementary groups of the container's user (names or gids).
    pub group_add: Vec<String>,
}

impl ContainerOptions {
    /// True when no option is set.
    pub fn is_empty(&self) -> bool {
        *self == ContainerOptions::default()
    }

    /// Checks every option; the error names `task.container.options.FIELD`.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| {
            Error::InvalidInput(format!("task.container.options.{field}: {why}"))
        };
        for (field, n) in [
            ("cap_add", self.cap_add.len()),
            ("cap_drop", self.cap_drop.len()),
            ("sysctls", self.sysctls.len()),
            ("ulimits", self.ulimits.len()),
            ("extra_hosts", self.extra_hosts.len()),
            ("dns", self.dns.len()),
            ("dns_search", self.dns_search.len()),
            ("group_add", self.group_add.len()),
        ] {
            if n > MAX_OPTION_ENTRIES {
                return Err(bad(field, format!("at most {MAX_OPTION_ENTRIES} entries")));
            }
        }
        check_hostname(&self.hostname).map_err(|w| bad("hostname", w))?;
        for (field, caps) in [("cap_add", &self.cap_add), ("cap_drop", &self.cap_drop)] {
            for c in caps {
                check_capability(c).map_err(|w| bad(field, w))?;
            }
        }
        for (k, v) in &self.sysctls {
            check_sysctl(k, v).map_err(|w| bad("sysctls", w))?;
        }
        for (k, u) in &self.ulimits {
            check_ulimit(k, u).map_err(|w| bad("ulimits", w))?;
        }
        if !self.stop_signal.is_empty() {
            check_signal(&self.stop_signal).map_err(|w| bad("stop_signal", w))?;
        }
        for h in &self.extra_hosts {
            parse_extra_host(h).map_err(|w| bad("extra_hosts", w))?;
        }
        for d in &self.dns {
            check_dns_server(d).map_err(|w| bad("dns", w))?;
        }
        for d in &self.dns_search {
            check_domain(d).map_err(|w| bad("dns_search", w))?;
        }
        for g in &self.group_add {
            check_group(g).map_err(|w| bad("group_add", w))?;
        }
        Ok(())
    }

    /// The name servers as socket addresses (port 53), for the cluster DNS's
    /// forwarding; entries that are no address (refused at the door) are skipped.
    pub fn dns_servers(&self) -> Vec<std::net::SocketAddr> {
        self.dns
            .iter()
            .filter_map(|d| d.parse::<std::net::IpAddr>().ok())
            .map(|ip| std::net::SocketAddr::new(ip, 53))
            .collect()
    }
}

/// The first 40 characters of a value, for messages.
fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

fn check_len(s: &str) -> std::result::Result<(), String> {
    if s.len() > MAX_OPTION_LEN {
        return Err(format!(
            "{:?}... is longer than {MAX_OPTION_LEN} bytes",
            short(s)
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{:?} contains a control character", short(s)));
    }
    Ok(())
}

/// A host name: at most 255 bytes, no spaces or control characters. Loose on purpose:
/// a Swarm template (`{{.Task.Slot}}`) is expanded per task before Docker sees it.
fn check_hostname(h: &str) -> std::result::Result<(), String> {
    check_len(h)?;
    if h.starts_with('-') || (h.contains(char::is_whitespace) && !h.contains("{{")) {
        return Err(format!("{h:?} is not a host name"));
    }
    Ok(())
}

/// The Linux capabilities Docker knows, without their `CAP_` prefix.
const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// A capability as Docker's engine takes it: `ALL`, or `CAP_NAME` in capitals; `None`
/// for a name that is no capability. Accepts either case and the prefix or not, as
/// Docker does.
pub fn normalize_capability(c: &str) -> Option<String> {
    let up = c.trim().to_ascii_uppercase();
    if up == "ALL" {
        return Some(up);
    }
    let bare = up.strip_prefix("CAP_").unwrap_or(&up);
    CAPABILITIES.contains(&bare).then(|| format!("CAP_{bare}"))
}

fn check_capability(c: &str) -> std::result::Result<(), String> {
    check_len(c)?;
    normalize_capability(c).map(|_| ()).ok_or_else(|| {
        format!(
            "{:?} is not a Linux capability (e.g. NET_ADMIN, CAP_SYS_PTRACE, ALL)",
            short(c)
        )
    })
}

/// The sysctls a container may set: those of the namespaces it has its own of (IPC,
/// network, UTS), as Docker's runtime allows them.
fn namespaced_sysctl(name: &str) -> bool {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
        "kernel.domainname",
    ];
    IPC.contains(&name) || name.starts_with("fs.mqueue.") || name.starts_with("net.")
}

fn check_sysctl(name: &str, value: &str) -> std::result::Result<(), String> {
    check_len(name)?;
    check_len(value)?;
    let well_formed = !name.is_empty()
        && name.split(['.', '/']).all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '+')
        });
    if !well_formed {
        return Err(format!("{:?} is not a sysctl name", short(name)));
    }
    if !namespaced_sysctl(name) {
        return Err(format!(
            "{name} is not namespaced: a container may set only net.*, fs.mqueue.*, kernel.msg*, kernel.sem, kernel.shm* and kernel.domainname"
        ));
    }
    if value.is_empty() {
        return Err(format!("{name}: a value is needed"));
    }
    Ok(())
}

/// The resource limits Docker knows.
const ULIMITS: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

fn check_ulimit(name: &str, u: &Ulimit) -> std::result::Result<(), String> {
    if !ULIMITS.contains(&name) {
        return Err(format!(
            "{:?} is not a ulimit (expected one of {})",
            short(name),
            ULIMITS.join(", ")
        ));
    }
    if u.soft < -1 || u.hard < -1 {
        return Err(format!(
            "{name}: a limit is a number of at least -1 (unlimited)"
        ));
    }
    let unlimited = |v: i64| if v == -1 { i64::MAX } else { v };
    if unlimited(u.soft) > unlimited(u.hard) {
        return Err(format!(
            "{name}: the soft limit {} is above the hard limit {}",
            u.soft, u.hard
        ));
    }
    Ok(())
}

/// Reads a ulimit as the CLI takes it: `NAME=LIMIT` or `NAME=SOFT:HARD`.
pub fn parse_ulimit(s: &str) -> std::result::Result<(String, Ulimit), String> {
    let (name, limits) = s.split_once('=').ok_or_else(|| {
        format!(
            "expected NAME=LIMIT or NAME=SOFT:HARD, found {:?}",
            short(s)
        )
    })?;
    let num = |v: &str| {
        v.trim()
            .parse::<i64>()
            .map_err(|_| format!("{name}: expected a number, found {:?}", short(v)))
    };
    let u = match limits.split_once(':') {
        Some((soft, hard)) => Ulimit {
            soft: num(soft)?,
            hard: num(hard)?,
        },
        None => {
            let v = num(limits)?;
            Ulimit { soft: v, hard: v }
        }
    };
    check_ulimit(name, &u)?;
    Ok((name.to_string(), u))
}

/// The signal names Linux has, without `SIG`.
const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX",
];

/// A signal as Docker reads it: a number (1-64) or a name, with `SIG` or not, in
/// either case; real-time ones as `RTMIN+N` or `RTMAX-N`.
fn check_signal(s: &str) -> std::result::Result<(), String> {
    check_len(s)?;
    if let Ok(n) = s.parse::<u32>() {
        return if (1..=64).contains(&n) {
            Ok(())
        } else {
            Err(format!("signal {n} is out of 1-64"))
        };
    }
    let up = s.to_ascii_uppercase();
    let bare = up.strip_prefix("SIG").unwrap_or(&up);
    let realtime = |base: &str, sep: char| {
        bare.strip_prefix(base)
            .and_then(|r| r.strip_prefix(sep))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=15).contains(&n))
    };
    if SIGNALS.contains(&bare) || realtime("RTMIN", '+') || realtime("RTMAX", '-') {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a signal (e.g. SIGTERM, SIGQUIT, 15)",
            short(s)
        ))
    }
}

/// Reads an extra host as the CLI and compose files give it, `host:ip` or `host=ip`
/// (`ip` may be an IPv6 address, or Docker's `host-gateway`), into Docker's `host:ip`.
pub fn parse_extra_host(s: &str) -> std::result::Result<String, String> {
    check_len(s)?;
    let (host, ip) = s
        .split_once('=')
        .or_else(|| s.split_once(':'))
        .ok_or_else(|| format!("expected HOST:IP, found {:?}", short(s)))?;
    let (host, ip) = (host.trim(), ip.trim());
    let ip_ok = ip == "host-gateway"
        || ip
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok();
    if !ip_ok {
        return Err(format!("{:?}: {ip:?} is not an IP address", short(s)));
    }
    check_domain(host).map_err(|_| format!("{:?}: {host:?} is not a host name", short(s)))?;
    Ok(format!(
        "{host}:{}",
        ip.trim_start_matches('[').trim_end_matches(']')
    ))
}

/// A name server: an IP address that is not loopback or unspecified (the cluster DNS
/// forwards from the node, where a loopback address would mean the node itself, not
/// the container as in Docker).
fn check_dns_server(d: &str) -> std::result::Result<(), String> {
    check_len(d)?;
    let ip: std::net::IpAddr = d
        .parse()
        .map_err(|_| format!("{:?} is not an IP address", short(d)))?;
    if ip.is_loopback() || ip.is_unspecified() {
        return Err(format!(
            "{ip}: a loopback or unspecified name server cannot be reached from the cluster DNS"
        ));
    }
    Ok(())
}

/// A domain: letters, digits, `-`, `_` and dots, 1-253 bytes.
fn check_domain(d: &str) -> std::result::Result<(), String> {
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.trim_end_matches('.').split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{:?} is not a domain name", short(d)))
    }
}

/// A group: a gid or a name (no `:`, spaces or control characters, at most 32 bytes).
fn check_group(g: &str) -> std::result::Result<(), String> {
    let ok = !g.is_empty()
        && g.len() <= 32
        && g.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' || c == '$');
    if ok {
        Ok(())
    } else {
        Err(format!("{:?} is not a group name or id", short(g)))
    }
}

/// At most this many kinds of generic resources on a node or in a reservation.
pub const MAX_GENERIC_KINDS: usize = 32;

/// Checks a generic resource's kind: letters, digits, `_` and `-`, 1-63 bytes (it
/// becomes part of an environment variable's name, `DOCKER_RESOURCE_<KIND>`).
pub fn check_resource_kind(kind: &str) -> std::result::Result<(), String> {
    let ok = !kind.is_empty()
        && kind.len() <= 63
        && kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a resource kind (letters, digits, '_', '-'; at most 63)",
            short(kind)
        ))
    }
}

/// Reads a discrete generic resource, `KIND=N` (N at least 1), as
/// `--generic-resource` and `--node-generic-resource` take it.
pub fn parse_generic_resource(s: &str) -> std::result::Result<(String, u64), String> {
    let (kind, n) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KIND=N, found {:?}", short(s)))?;
    check_resource_kind(kind)?;
    let n: u64 = n.trim().parse().map_err(|_| {
        format!(
            "{kind}: expected a count, found {:?} (named resources are not supported)",
            short(n)
        )
    })?;
    if n == 0 {
        return Err(format!("{kind}: a count of at least 1 is needed"));
    }
    Ok((kind.to_string(), n))
}

/// Checks a map of generic resources (a reservation or a node's): bounded, kinds
/// well-formed, counts at least 1.
pub fn check_generic_resources(r: &BTreeMap<String, u64>) -> std::result::Result<(), String> {
    if r.len() > MAX_GENERIC_KINDS {
        return Err(format!("at most {MAX_GENERIC_KINDS} kinds"));
    }
    for (kind, n) in r {
        check_resource_kind(kind)?;
        if *n == 0 {
            return Err(format!("{kind}: a count of at least 1 is needed"));
        }
    }
    Ok(())
}

/// The environment Swarm gives a task for its discrete generic resources:
/// `DOCKER_RESOURCE_<KIND>=<N>`, the kind in capitals.
pub fn generic_resource_env(r: &BTreeMap<String, u64>) -> Vec<String> {
    r.iter()
        .map(|(kind, n)| format!("DOCKER_RESOURCE_{}={n}", kind.to_ascii_uppercase()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(o: ContainerOptions) -> String {
        o.validate().expect_err("refused").to_string()
    }

    #[test]
    fn every_option_in_its_docker_form_is_accepted() {
        let o = ContainerOptions {
            hostname: "web-{{.Task.Slot}}".into(),
            cap_add: vec!["NET_ADMIN".into(), "cap_sys_ptrace".into()],
            cap_drop: vec!["ALL".into()],
            sysctls: [
                ("net.core.somaxconn".to_string(), "1024".to_string()),
                ("kernel.shmmax".to_string(), "65536".to_string()),
            ]
            .into(),
            ulimits: [(
                "nofile".to_string(),
                Ulimit {
                    soft: 1024,
                    hard: 2048,
                },
            )]
            .into(),
            init: true,
            stop_signal: "SIGQUIT".into(),
            extra_hosts: vec!["db:10.0.0.5".into(), "v6:::1".into()],
            tty: true,
            stdin_open: true,
            read_only: true,
            dns: vec!["9.9.9.9".into(), "2001:db8::1".into()],
            dns_search: vec!["example.com".into()],
            group_add: vec!["audio".into(), "1001".into()],
        };
        assert_eq!(o.validate(), Ok(()));
        assert!(!o.is_empty());
        assert!(ContainerOptions::default().is_empty());
    }

    #[test]
    fn each_bad_option_is_refused_naming_its_field() {
        let cases: Vec<(ContainerOptions, &str)> = vec![
            (
                ContainerOptions {
                    cap_add: vec!["NET_ADMIN".into(), "FLY".into()],
                    ..Default::default()
                },
                "task.container.options.cap_add: \"FLY\" is not a Linux capability",
            ),
            (
                ContainerOptions {
                    cap_drop: vec!["CAP_".into()],
                    ..Default::default()
                },
                "task.container.options.cap_drop:",
            ),
            (
                ContainerOptions {
                    sysctls: [("kernel.panic".to_string(), "1".to_string())].into(),
                    ..Default::default()
                },
                "task.container.options.sysctls: kernel.panic is not namespaced",
            ),
            (
                ContainerOptions {
                    sysctls: [("net..x".to_string(), "1".to_string())].into(),
                    ..Default::default()
                },
                "task.container.options.sysctls: \"net..x\" is not a sysctl name",
            ),
            (
                ContainerOptions {
                    ulimits: [("files".to_string(), Ulimit { soft: 1, hard: 1 })].into(),
                    ..Default::default()
                },
                "task.container.options.ulimits: \"files\" is not a ulimit",
            ),
            (
                ContainerOptions {
                    ulimits: [("nofile".to_string(), Ulimit { soft: 10, hard: 5 })].into(),
                    ..Default::default()
                },
                "task.container.options.ulimits: nofile: the soft limit 10 is above the hard limit 5",
            ),
            (
                ContainerOptions {
                    stop_signal: "SIGNOPE".into(),
                    ..Default::default()
                },
                "task.container.options.stop_signal: \"SIGNOPE\" is not a signal",
            ),
            (
                ContainerOptions {
                    extra_hosts: vec!["db".into()],
                    ..Default::default()
                },
                "task.container.options.extra_hosts: expected HOST:IP",
            ),
            (
                ContainerOptions {
                    extra_hosts: vec!["db:10.0.0".into()],
                    ..Default::default()
                },
                "task.container.options.extra_hosts: \"db:10.0.0\": \"10.0.0\" is not an IP address",
            ),
            (
                ContainerOptions {
                    dns: vec!["dns.google".into()],
                    ..Default::default()
                },
                "task.container.options.dns: \"dns.google\" is not an IP address",
            ),
            (
                ContainerOptions {
                    dns: vec!["127.0.0.1".into()],
                    ..Default::default()
                },
                "task.container.options.dns: 127.0.0.1: a loopback",
            ),
            (
                ContainerOptions {
                    dns_search: vec!["a b".into()],
                    ..Default::default()
                },
                "task.container.options.dns_search:",
            ),
            (
                ContainerOptions {
                    group_add: vec!["wheel:x".into()],
                    ..Default::default()
                },
                "task.container.options.group_add:",
            ),
            (
                ContainerOptions {
                    hostname: "a\nb".into(),
                    ..Default::default()
                },
                "task.container.options.hostname:",
            ),
            (
                ContainerOptions {
                    group_add: (0..65).map(|i| i.to_string()).collect(),
                    ..Default::default()
                },
                "task.container.options.group_add: at most 64 entries",
            ),
        ];
        for (o, want) in cases {
            let got = field_of(o);
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
    }

    #[test]
    fn capabilities_normalize_as_docker_does() {
        assert_eq!(
            normalize_capability("net_admin").as_deref(),
            Some("CAP_NET_ADMIN")
        );
        assert_eq!(
            normalize_capability("CAP_CHOWN").as_deref(),
            Some("CAP_CHOWN")
        );
        assert_eq!(normalize_capability("all").as_deref(), Some("ALL"));
        assert_eq!(normalize_capability("CAP_ALL"), None);
        assert_eq!(normalize_capability("ROOT"), None);
    }

    #[test]
    fn signals_read_as_docker_reads_them() {
        for ok in [
            "SIGTERM",
            "term",
            "sigusr1",
            "9",
            "64",
            "SIGRTMIN+3",
            "RTMAX-1",
        ] {
            assert_eq!(check_signal(ok), Ok(()), "{ok}");
        }
        for bad in ["0", "65", "SIGFOO", "RTMIN+16", "", "SIG"] {
            assert!(check_signal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ulimits_extra_hosts_and_generic_resources_parse() {
        assert_eq!(
            parse_ulimit("nofile=1024:2048"),
            Ok((
                "nofile".into(),
                Ulimit {
                    soft: 1024,
                    hard: 2048
                }
            ))
        );
        assert_eq!(
            parse_ulimit("nproc=65535"),
            Ok((
                "nproc".into(),
                Ulimit {
                    soft: 65535,
                    hard: 65535
                }
            ))
        );
        assert_eq!(
            parse_ulimit("core=-1"),
            Ok(("core".into(), Ulimit { soft: -1, hard: -1 }))
        );
        assert!(parse_ulimit("nofile").is_err());
        assert!(parse_ulimit("nofile=x").is_err());
        assert!(
            parse_ulimit("nofile=-1:10").is_err(),
            "unlimited soft above hard"
        );

        assert_eq!(parse_extra_host("db:10.0.0.5"), Ok("db:10.0.0.5".into()));
        assert_eq!(parse_extra_host("db=10.0.0.5"), Ok("db:10.0.0.5".into()));
        assert_eq!(parse_extra_host("v6=[::1]"), Ok("v6:::1".into()));
        assert_eq!(parse_extra_host("v6:::1"), Ok("v6:::1".into()));
        assert_eq!(
            parse_extra_host("gw:host-gateway"),
            Ok("gw:host-gateway".into())
        );
        assert!(parse_extra_host("bad host:1.2.3.4").is_err());

        assert_eq!(parse_generic_resource("gpu=2"), Ok(("gpu".into(), 2)));
        assert!(parse_generic_resource("gpu=0").is_err());
        assert!(parse_generic_resource("gpu=UUID1").is_err());
        assert!(parse_generic_resource("g pu=1").is_err());
        assert!(parse_generic_resource("gpu").is_err());
        assert_eq!(
            generic_resource_env(&[("gpu".to_string(), 2), ("fpga-x".to_string(), 1)].into()),
            vec!["DOCKER_RESOURCE_FPGA-X=1", "DOCKER_RESOURCE_GPU=2"]
        );
    }
}
