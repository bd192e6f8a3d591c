//! The flags of Docker's container options and generic resources, under Docker's names:
//! `--hostname`, `--cap-add`, `--cap-drop`, `--init`, `--stop-signal`, `--tty`,
//! `--read-only` on both `create` and `update`; `--sysctl`, `--ulimit`, `--add-host`,
//! `--dns`, `--dns-search`, `--group`, `--generic-resource` on `create`, and their
//! `-add` / `-rm` forms on `update`. Each error names the flag.

use std::collections::BTreeMap;

use clap::Args;

use super::args::kv;
use crate::error::{Error, Result};
use crate::store::service::{
    parse_extra_host, parse_generic_resource, parse_ulimit, ContainerOptions, TaskSpec, Ulimit,
};

/// Container option flags shared by `create` and `update`.
#[derive(Debug, Args, Default)]
pub struct OptionFlags {
    /// The container's host name.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Add a Linux capability (NET_ADMIN, CAP_SYS_PTRACE, ALL); repeatable.
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability; repeatable.
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Run an init inside the container (`--init=false` to stop).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub init: Option<bool>,
    /// Signal that stops the container (SIGTERM, SIGQUIT, 15, ...).
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Allocate a pseudo-TTY (`--tty=false` to stop).
    #[arg(short = 't', long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub tty: Option<bool>,
    /// Mount the root file system read-only (`--read-only=false` to stop).
    #[arg(long = "read-only", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub read_only: Option<bool>,
}

/// Flags of `service create` only.
#[derive(Debug, Args, Default)]
pub struct CreateOptionFlags {
    /// A namespaced kernel parameter NAME=VALUE; repeatable.
    #[arg(long = "sysctl")]
    pub sysctl: Vec<String>,
    /// A resource limit NAME=LIMIT or NAME=SOFT:HARD (nofile=1024:2048); repeatable.
    #[arg(long = "ulimit")]
    pub ulimit: Vec<String>,
    /// An /etc/hosts entry HOST:IP; repeatable. (Docker's `service create --host`:
    /// orc's `--host` is the global `-H`, so this is `docker run`'s name.)
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// A name server for names outside the cluster; repeatable.
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// A DNS search domain; repeatable.
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// A supplementary group (name or gid); repeatable.
    #[arg(long = "group")]
    pub group: Vec<String>,
    /// Reserve a generic resource KIND=N (gpu=1); repeatable.
    #[arg(long = "generic-resource")]
    pub generic_resource: Vec<String>,
}

/// Flags of `service update` only.
#[derive(Debug, Args, Default)]
pub struct UpdateOptionFlags {
    /// Add or set a sysctl NAME=VALUE.
    #[arg(long = "sysctl-add")]
    pub sysctl_add: Vec<String>,
    /// Remove a sysctl (NAME).
    #[arg(long = "sysctl-rm")]
    pub sysctl_rm: Vec<String>,
    /// Add or set a ulimit NAME=LIMIT or NAME=SOFT:HARD.
    #[arg(long = "ulimit-add")]
    pub ulimit_add: Vec<String>,
    /// Remove a ulimit (NAME).
    #[arg(long = "ulimit-rm")]
    pub ulimit_rm: Vec<String>,
    /// Add an /etc/hosts entry HOST:IP.
    #[arg(long = "host-add")]
    pub host_add: Vec<String>,
    /// Remove /etc/hosts entries: HOST (all its entries) or HOST:IP.
    #[arg(long = "host-rm")]
    pub host_rm: Vec<String>,
    /// Add a name server.
    #[arg(long = "dns-add")]
    pub dns_add: Vec<String>,
    /// Remove a name server.
    #[arg(long = "dns-rm")]
    pub dns_rm: Vec<String>,
    /// Add a DNS search domain.
    #[arg(long = "dns-search-add")]
    pub dns_search_add: Vec<String>,
    /// Remove a DNS search domain.
    #[arg(long = "dns-search-rm")]
    pub dns_search_rm: Vec<String>,
    /// Add a supplementary group.
    #[arg(long = "group-add")]
    pub group_add: Vec<String>,
    /// Remove a supplementary group.
    #[arg(long = "group-rm")]
    pub group_rm: Vec<String>,
    /// Add or set a generic resource reservation KIND=N.
    #[arg(long = "generic-resource-add")]
    pub generic_resource_add: Vec<String>,
    /// Remove a generic resource reservation (KIND, or KIND=N).
    #[arg(long = "generic-resource-rm")]
    pub generic_resource_rm: Vec<String>,
}

fn flag_err(flag: &str) -> impl Fn(String) -> Error + '_ {
    move |w| Error::InvalidInput(format!("{flag}: {w}"))
}

fn push_unique(list: &mut Vec<String>, v: &str) {
    if !list.iter().any(|x| x == v) {
        list.push(v.to_string());
    }
}

fn same_cap(a: &str, b: &str) -> bool {
    let norm = |c: &str| crate::store::service::normalize_capability(c).unwrap_or(c.to_string());
    norm(a) == norm(b)
}

impl OptionFlags {
    /// Applies the flags given. On `update` (`update` true), `--cap-add` and
    /// `--cap-drop` add to the lists in force (a capability added is no longer dropped,
    /// and the reverse), as Docker's `service update` does; on `create` they set them.
    pub fn apply(&self, o: &mut ContainerOptions, update: bool) {
        if let Some(h) = &self.hostname {
            o.hostname = h.clone();
        }
        if update {
            for c in &self.cap_add {
                o.cap_drop.retain(|x| !same_cap(x, c));
                if !o.cap_add.iter().any(|x| same_cap(x, c)) {
                    o.cap_add.push(c.clone());
                }
            }
            for c in &self.cap_drop {
                o.cap_add.retain(|x| !same_cap(x, c));
                if !o.cap_drop.iter().any(|x| same_cap(x, c)) {
                    o.cap_drop.push(c.clone());
                }
            }
        } else {
            o.cap_add = self.cap_add.clone();
            o.cap_drop = self.cap_drop.clone();
        }
        if let Some(v) = self.init {
            o.init = v;
        }
        if let Some(s) = &self.stop_signal {
            o.stop_signal = s.clone();
        }
        if let Some(v) = self.tty {
            o.tty = v;
        }
        if let Some(v) = self.read_only {
            o.read_only = v;
        }
    }
}

fn sysctl(flag: &str, s: &str) -> Result<(String, String)> {
    kv(flag, s)
}

fn ulimit(flag: &str, s: &str) -> Result<(String, Ulimit)> {
    parse_ulimit(s).map_err(flag_err(flag))
}

fn host(flag: &str, s: &str) -> Result<String> {
    parse_extra_host(s).map_err(flag_err(flag))
}

fn generic(flag: &str, s: &str) -> Result<(String, u64)> {
    parse_generic_resource(s).map_err(flag_err(flag))
}

impl CreateOptionFlags {
    /// Sets the options and reservations the flags give.
    pub fn apply(&self, t: &mut TaskSpec) -> Result<()> {
        let o = &mut t.container.options;
        for s in &self.sysctl {
            let (k, v) = sysctl("--sysctl", s)?;
            o.sysctls.insert(k, v);
        }
        for s in &self.ulimit {
            let (k, u) = ulimit("--ulimit", s)?;
            o.ulimits.insert(k, u);
        }
        for s in &self.add_host {
            let h = host("--add-host", s)?;
            push_unique(&mut o.extra_hosts, &h);
        }
        for s in &self.dns {
            push_unique(&mut o.dns, s);
        }
        for s in &self.dns_search {
            push_unique(&mut o.dns_search, s);
        }
        for s in &self.group {
            push_unique(&mut o.group_add, s);
        }
        let mut reserved = BTreeMap::new();
        for s in &self.generic_resource {
            let (k, n) = generic("--generic-resource", s)?;
            *reserved.entry(k).or_insert(0u64) += n;
        }
        t.resources.generic_resources = reserved;
        Ok(())
    }
}

impl UpdateOptionFlags {
    /// Removes, then adds, what the flags name.
    pub fn apply(&self, t: &mut TaskSpec) -> Result<()> {
        let o = &mut t.container.options;
        for k in &self.sysctl_rm {
            o.sysctls.remove(k.split('=').next().unwrap_or(k));
        }
        for s in &self.sysctl_add {
            let (k, v) = sysctl("--sysctl-add", s)?;
            o.sysctls.insert(k, v);
        }
        for k in &self.ulimit_rm {
            o.ulimits.remove(k.split('=').next().unwrap_or(k));
        }
        for s in &self.ulimit_add {
            let (k, u) = ulimit("--ulimit-add", s)?;
            o.ulimits.insert(k, u);
        }
        for h in &self.host_rm {
            if h.contains(':') || h.contains('=') {
                let h = host("--host-rm", h)?;
                o.extra_hosts.retain(|x| *x != h);
            } else {
                o.extra_hosts
                    .retain(|x| x.split(':').next() != Some(h.as_str()));
            }
        }
        for s in &self.host_add {
            let h = host("--host-add", s)?;
            push_unique(&mut o.extra_hosts, &h);
        }
        for (rm, add, list) in [
            (&self.dns_rm, &self.dns_add, &mut o.dns),
            (&self.dns_search_rm, &self.dns_search_add, &mut o.dns_search),
            (&self.group_rm, &self.group_add, &mut o.group_add),
        ] {
            list.retain(|x| !rm.contains(x));
            for s in add {
                push_unique(list, s);
            }
        }
        let g = &mut t.resources.generic_resources;
        for k in &self.generic_resource_rm {
            g.remove(k.split('=').next().unwrap_or(k));
        }
        for s in &self.generic_resource_add {
            let (k, n) = generic("--generic-resource-add", s)?;
            g.insert(k, n);
        }
        Ok(())
    }
}
