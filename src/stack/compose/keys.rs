//! The key-support table: which compose keys orc honours, which it names in a warning
//! and ignores, and the "did you mean" for a key that is neither (most likely a typo).

use super::fields::err;
use crate::error::Error;
use crate::stack::yaml::Key;

/// Levenshtein distance, for "did you mean".
pub(super) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

pub(super) fn unknown_key(k: &Key, path: &str, known: &[&str]) -> Error {
    let near = known
        .iter()
        .map(|c| (distance(&k.name, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min();
    let hint = match near {
        Some((_, c)) => format!(" (did you mean {c}?)"),
        None => format!("; expected one of: {}", known.join(", ")),
    };
    err(
        &k.pos,
        &format!("{path}.{}", k.name),
        format!("unknown key{hint}"),
    )
}

/// Compose service keys orc does not honour: named in a warning, then ignored.
pub(super) const IGNORED_SERVICE_KEYS: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "build",
    "cgroup",
    "cgroup_parent",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpuset",
    "credential_spec",
    "develop",
    "device_cgroup_rules",
    "devices",
    "dns_opt",
    "domainname",
    "driver_opts",
    "extends",
    "external_links",
    "gpus",
    "ipc",
    "isolation",
    "label_file",
    "links",
    "mac_address",
    "mem_swappiness",
    "memswap_limit",
    "models",
    "network_mode",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "pids_limit",
    "platform",
    "post_start",
    "pre_stop",
    "privileged",
    "profiles",
    "provider",
    "pull_policy",
    "pull_refresh_after",
    "runtime",
    "security_opt",
    "shm_size",
    "storage_opt",
    "use_api_socket",
    "userns_mode",
    "uts",
    "volumes_from",
];

pub(super) const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "labels",
    "ports",
    "expose",
    "volumes",
    "tmpfs",
    "healthcheck",
    "stop_grace_period",
    "user",
    "working_dir",
    "logging",
    "depends_on",
    "networks",
    "deploy",
    "restart",
    "scale",
    "cpus",
    "mem_limit",
    "mem_reservation",
    // and the container options: `super::options::OPTION_KEYS`
    "secrets",
    "configs",
];

pub(super) trait TrimDot {
    fn trim_leading_dot(self) -> Self;
}

impl TrimDot for Error {
    /// `file:1:1: .key: ...` → `file:1:1: key: ...` for top-level keys.
    fn trim_leading_dot(self) -> Self {
        match self {
            Error::InvalidInput(m) => Error::InvalidInput(m.replacen(": .", ": ", 1)),
            e => e,
        }
    }
}
