//! From a merged compose document to service specs.
//!
//! Every key is either honoured, named in a warning (a compose key orc does not
//! honour), or refused (not a compose key: most likely a typo). Every error names
//! the file, line and column, the path of the field, and what was expected.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::interpolate::{parse_env_file, Vars};
use super::yaml::{Node, Pos, Value};
use super::Loader;
use crate::error::{Error, Result};
use crate::store::service::{
    ContainerSpec, DependCondition, Dependency, EndpointMode, FailureAction, HealthCheck, Mount,
    MountKind, Placement, PortConfig, Protocol, PublishMode, Resources, RestartCondition,
    RestartPolicy, ServiceMode, ServiceSpec, TaskSpec, UpdateConfig, UpdateOrder, STACK_LABEL,
};

/// An error at `pos`, about the field at `path`.
pub fn err(pos: &Pos, path: &str, msg: impl std::fmt::Display) -> Error {
    if path.is_empty() {
        Error::InvalidInput(format!("{pos}: {msg}"))
    } else {
        Error::InvalidInput(format!("{pos}: {path}: {msg}"))
    }
}

fn show(n: &Node) -> String {
    match &n.value {
        Value::Str(s) => format!("{s:?}"),
        Value::Null => "nothing".into(),
        Value::Seq(_) => "a list".into(),
        Value::Map(_) => "a mapping".into(),
        _ => n.scalar_text().unwrap_or_default(),
    }
}

fn expected(n: &Node, path: &str, what: &str) -> Error {
    err(&n.pos, path, format!("expected {what}, found {}", show(n)))
}

/// The entries of a mapping (an empty mapping for null).
pub fn entries<'a>(n: &'a Node, path: &str) -> Result<&'a [(super::yaml::Key, Node)]> {
    match &n.value {
        Value::Map(m) => Ok(m),
        Value::Null => Ok(&[]),
        _ => Err(expected(n, path, "a mapping")),
    }
}

fn string(n: &Node, path: &str) -> Result<String> {
    match &n.value {
        Value::Str(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
            Ok(n.scalar_text().unwrap_or_default())
        }
        _ => Err(expected(n, path, "a string")),
    }
}

fn uint(n: &Node, path: &str) -> Result<u64> {
    match &n.value {
        Value::Int(i) if *i >= 0 && *i <= u64::MAX as i128 => Ok(*i as u64),
        Value::Str(s) if s.trim().parse::<u64>().is_ok() => Ok(s.trim().parse().unwrap_or(0)),
        _ => Err(expected(n, path, "a whole number of at least 0")),
    }
}

fn float(n: &Node, path: &str) -> Result<f64> {
    let v = match &n.value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Str(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match v {
        Some(f) if f.is_finite() && f >= 0.0 => Ok(f),
        _ => Err(expected(n, path, "a number")),
    }
}

fn boolean(n: &Node, path: &str) -> Result<bool> {
    match &n.value {
        Value::Bool(b) => Ok(*b),
        Value::Str(s) if s == "true" || s == "True" || s == "TRUE" => Ok(true),
        Value::Str(s) if s == "false" || s == "False" || s == "FALSE" => Ok(false),
        _ => Err(expected(n, path, "true or false")),
    }
}

/// A Go duration (`1m30s`, `500ms`, `2h`), or a number of seconds; in ms
/// ([`crate::units::duration`]).
fn duration_ms(n: &Node, path: &str) -> Result<u64> {
    let bad = || expected(n, path, "a duration such as 10s, 1m30s or 500ms");
    match &n.value {
        Value::Int(i) if *i >= 0 => Ok((*i as u64).saturating_mul(1000)),
        Value::Float(f) if *f >= 0.0 && f.is_finite() => Ok((f * 1000.0) as u64),
        Value::Str(s) => crate::units::duration(s)
            .map(|d| (d.as_secs_f64() * 1000.0).round() as u64)
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// A size: `512M`, `1g`, `100mb`, or a number of bytes.
fn bytes(n: &Node, path: &str) -> Result<u64> {
    let text = match &n.value {
        Value::Int(i) if *i >= 0 => return Ok(*i as u64),
        Value::Str(s) => s.clone(),
        _ => return Err(expected(n, path, "a size such as 512M or 1G")),
    };
    crate::units::bytes(&text)
        .map(|b| b as u64)
        .ok_or_else(|| expected(n, path, "a size such as 512M or 1G"))
}

/// A list of strings, or one string split like a shell would.
fn command(n: &Node, path: &str) -> Result<Vec<String>> {
    match &n.value {
        Value::Null => Ok(vec![]),
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, x)| string(x, &format!("{path}[{i}]")))
            .collect(),
        Value::Str(s) => {
            shell_split(s).ok_or_else(|| err(&n.pos, path, format!("unbalanced quotes in {s:?}")))
        }
        _ => Err(expected(n, path, "a string or a list of strings")),
    }
}

/// Splits like a POSIX shell (quotes and backslashes; no expansion). `None` when a
/// quote is not closed.
pub fn shell_split(s: &str) -> Option<Vec<String>> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        x => cur.push(x),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            x @ ('"' | '\\' | '$' | '`') => cur.push(x),
                            x => {
                                cur.push('\\');
                                cur.push(x);
                            }
                        },
                        x => cur.push(x),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(x) = chars.next() {
                    cur.push(x);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Some(out)
}

fn strings(n: &Node, path: &str) -> Result<Vec<String>> {
    match &n.value {
        Value::Null => Ok(vec![]),
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, x)| string(x, &format!("{path}[{i}]")))
            .collect(),
        Value::Str(_) => Ok(vec![string(n, path)?]),
        _ => Err(expected(n, path, "a list of strings")),
    }
}

/// A `K: V` mapping (list forms are already mappings, see `merge::normalize`); null
/// values stay `None`.
fn kv_map(n: &Node, path: &str) -> Result<Vec<(String, Option<String>)>> {
    let mut out = vec![];
    for (k, v) in entries(n, path)? {
        let p = format!("{path}.{}", k.name);
        let val = match &v.value {
            Value::Null => None,
            Value::Seq(_) | Value::Map(_) => return Err(expected(v, &p, "a string")),
            _ => Some(string(v, &p)?),
        };
        out.push((k.name.clone(), val));
    }
    Ok(out)
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
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

fn unknown_key(k: &super::yaml::Key, path: &str, known: &[&str]) -> Error {
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
const IGNORED_SERVICE_KEYS: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "build",
    "cap_add",
    "cap_drop",
    "cgroup",
    "cgroup_parent",
    "configs",
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
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "driver_opts",
    "extends",
    "external_links",
    "extra_hosts",
    "gpus",
    "group_add",
    "hostname",
    "init",
    "ipc",
    "isolation",
    "label_file",
    "links",
    "mac_address",
    "mem_swappiness",
    "memswap_limit",
    "models",
    "network_mode",
    "networks",
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
    "read_only",
    "runtime",
    "secrets",
    "security_opt",
    "shm_size",
    "stdin_open",
    "stop_signal",
    "storage_opt",
    "sysctls",
    "tty",
    "ulimits",
    "use_api_socket",
    "userns_mode",
    "uts",
    "volumes_from",
];

const SERVICE_KEYS: &[&str] = &[
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
    "deploy",
    "restart",
    "scale",
    "cpus",
    "mem_limit",
    "mem_reservation",
];

/// What one service of the file gives, before names are resolved.
struct Draft {
    short: String,
    spec: ServiceSpec,
    depends: Vec<(String, DependCondition, Pos)>,
    /// Published ingress ports and where each was written.
    published: Vec<(u16, Protocol, Pos, String)>,
}

/// A top-level volume.
struct VolumeDef {
    /// The Docker volume name.
    name: String,
    driver: String,
    driver_opts: BTreeMap<String, String>,
}

impl Loader<'_> {
    /// The stack from a merged document.
    pub(super) fn convert(&mut self, doc: &Node) -> Result<Vec<ServiceSpec>> {
        let top = entries(doc, "")?;
        let mut services_node = None;
        let mut volumes = BTreeMap::new();
        for (k, v) in top {
            match k.name.as_str() {
                "services" => services_node = Some(v),
                "volumes" => volumes = self.volumes(v)?,
                "version" => self.warn(&k.pos, "version", "obsolete, ignored"),
                "name" => self.warn(
                    &k.pos,
                    "name",
                    "ignored: the stack is named on the command line",
                ),
                "networks" => {
                    if !matches!(v.value, Value::Null)
                        && !entries(v, "networks").is_ok_and(|e| e.is_empty())
                    {
                        self.warn(
                            &k.pos,
                            "networks",
                            "ignored: every service of the stack is on orc's mesh and reaches the others by name",
                        )
                    }
                }
                "configs" | "secrets" | "include" | "models" => {
                    self.warn(&k.pos, &k.name, "not supported by orc, ignored")
                }
                x if x.starts_with("x-") => {}
                _ => {
                    return Err(unknown_key(
                        k,
                        "",
                        &[
                            "services", "volumes", "networks", "configs", "secrets", "version",
                            "name",
                        ],
                    )
                    .trim_leading_dot())
                }
            }
        }
        let Some(services_node) = services_node else {
            return Err(err(
                &doc.pos,
                "services",
                "missing: a stack file lists its services under services:",
            ));
        };
        let svc_entries = entries(services_node, "services")?;
        if svc_entries.is_empty() {
            return Err(err(&services_node.pos, "services", "no service is defined"));
        }
        let names: BTreeSet<String> = svc_entries.iter().map(|(k, _)| k.name.clone()).collect();
        let mut drafts = vec![];
        for (k, v) in svc_entries {
            let path = format!("services.{}", k.name);
            if !valid_short_name(&k.name) {
                return Err(err(
                    &k.pos,
                    &path,
                    "a service name has letters, digits, '-', '_' or '.', starting with a letter or digit",
                ));
            }
            drafts.push(self.service(&k.name, v, &path, &volumes)?);
        }
        // depends_on: known services, no cycle
        for d in &drafts {
            for (dep, _, pos) in &d.depends {
                if !names.contains(dep) {
                    return Err(err(
                        pos,
                        &format!("services.{}.depends_on.{dep}", d.short),
                        format!(
                            "unknown service {dep:?} (the stack has: {})",
                            names.iter().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                if dep == &d.short {
                    return Err(err(
                        pos,
                        &format!("services.{}.depends_on", d.short),
                        "a service cannot depend on itself",
                    ));
                }
            }
        }
        if let Some(cycle) = find_cycle(&drafts) {
            let d = drafts
                .iter()
                .find(|d| d.short == cycle[0])
                .map(|d| &d.depends);
            let pos = d
                .and_then(|d| d.iter().find(|(n, _, _)| *n == cycle[1]))
                .map(|(_, _, p)| p.clone())
                .unwrap_or_default();
            return Err(err(
                &pos,
                &format!("services.{}.depends_on", cycle[0]),
                format!("dependency cycle: {}", cycle.join(" -> ")),
            ));
        }
        // two services publishing one port
        let mut seen: BTreeMap<(u16, Protocol), &str> = BTreeMap::new();
        for d in &drafts {
            for (port, proto, pos, path) in &d.published {
                if let Some(other) = seen.get(&(*port, *proto)) {
                    if *other != d.short {
                        return Err(err(
                            pos,
                            path,
                            format!(
                                "port {port}/{} is already published by service {other}",
                                proto.as_str()
                            ),
                        ));
                    }
                }
                seen.insert((*port, *proto), &d.short);
            }
        }
        let stack = self.name.to_string();
        let mut specs = vec![];
        for d in drafts {
            let mut spec = d.spec;
            spec.depends_on = d
                .depends
                .into_iter()
                .map(|(dep, condition, _)| Dependency {
                    service: format!("{stack}_{dep}"),
                    condition,
                })
                .collect();
            spec.depends_on.sort();
            spec.validate()
                .map_err(|e| Error::InvalidInput(format!("services.{}: {e}", d.short)))?;
            specs.push(spec);
        }
        Ok(specs)
    }

    fn volumes(&mut self, n: &Node) -> Result<BTreeMap<String, VolumeDef>> {
        let mut out = BTreeMap::new();
        for (k, v) in entries(n, "volumes")? {
            let path = format!("volumes.{}", k.name);
            let mut def = VolumeDef {
                name: format!("{}_{}", self.name, k.name),
                driver: String::new(),
                driver_opts: BTreeMap::new(),
            };
            let mut external = false;
            let mut explicit_name = None;
            for (fk, fv) in entries(v, &path)? {
                let p = format!("{path}.{}", fk.name);
                match fk.name.as_str() {
                    "driver" => def.driver = string(fv, &p)?,
                    "driver_opts" => {
                        for (ok, ov) in kv_map(fv, &p)? {
                            def.driver_opts.insert(ok, ov.unwrap_or_default());
                        }
                    }
                    "external" => external = boolean(fv, &p)?,
                    "name" => explicit_name = Some(string(fv, &p)?),
                    "labels" => self.warn(
                        &fk.pos,
                        &p,
                        "volume labels are not supported by orc, ignored",
                    ),
                    x if x.starts_with("x-") => {}
                    _ => {
                        return Err(unknown_key(
                            fk,
                            &path,
                            &["driver", "driver_opts", "external", "name", "labels"],
                        ))
                    }
                }
            }
            if let Some(n) = explicit_name {
                def.name = n;
            } else if external {
                def.name = k.name.clone();
            }
            out.insert(k.name.clone(), def);
        }
        Ok(out)
    }

    fn service(
        &mut self,
        short: &str,
        n: &Node,
        path: &str,
        volumes: &BTreeMap<String, VolumeDef>,
    ) -> Result<Draft> {
        let fields = entries(n, path)?;
        let stack = self.name.to_string();
        let mut c = ContainerSpec::default();
        let mut resources = Resources::default();
        let mut restart = RestartPolicy::default();
        let mut placement = Placement::default();
        let mut mode = ServiceMode::Replicated { replicas: 1 };
        let mut labels = BTreeMap::new();
        let mut ports = vec![];
        let mut published = vec![];
        let mut expose = BTreeSet::new();
        let mut update = UpdateConfig::default();
        let mut rollback = UpdateConfig::default();
        let mut endpoint_mode = EndpointMode::Vip;
        let mut depends = vec![];
        let mut env_files: Vec<(String, Vars)> = vec![];
        let mut environment: Vec<(String, Option<String>)> = vec![];
        let mut image = None;
        // keys outside deploy that deploy overrides
        let mut restart_key = None;
        let mut scale = None;
        let mut loose_limits = Resources::default();
        let mut deploy = None;
        for (k, v) in fields {
            let p = format!("{path}.{}", k.name);
            match k.name.as_str() {
                "image" => {
                    let s = string(v, &p)?;
                    if s.trim().is_empty() {
                        return Err(err(&v.pos, &p, "must not be empty"));
                    }
                    image = Some(s)
                }
                "command" => c.args = command(v, &p)?,
                "entrypoint" => c.entrypoint = command(v, &p)?,
                "environment" => environment = kv_map(v, &p)?,
                "env_file" => env_files = self.env_files(v, &p)?,
                "labels" => {
                    for (lk, lv) in kv_map(v, &p)? {
                        c.labels.insert(lk, lv.unwrap_or_default());
                    }
                }
                "ports" => {
                    let Value::Seq(items) = &v.value else {
                        return Err(expected(v, &p, "a list of ports"));
                    };
                    for (i, it) in items.iter().enumerate() {
                        let pp = format!("{p}[{i}]");
                        for port in self.port(it, &pp)? {
                            if port.published != 0 && port.mode == PublishMode::Ingress {
                                published.push((
                                    port.published,
                                    port.protocol,
                                    it.pos.clone(),
                                    pp.clone(),
                                ));
                            }
                            ports.push(port);
                        }
                    }
                }
                "expose" => {
                    let Value::Seq(items) = &v.value else {
                        return Err(expected(v, &p, "a list of ports"));
                    };
                    for (i, it) in items.iter().enumerate() {
                        let pp = format!("{p}[{i}]");
                        let text = string(it, &pp)?;
                        let num = text.split('/').next().unwrap_or("");
                        let (lo, hi) = port_range(num).ok_or_else(|| {
                            expected(it, &pp, "a port (1-65535) or a range such as 8000-8010")
                        })?;
                        if lo == 0 {
                            return Err(expected(it, &pp, "a port (1-65535)"));
                        }
                        for port in lo..=hi {
                            expose.insert(port);
                        }
                    }
                }
                "volumes" => {
                    let Value::Seq(items) = &v.value else {
                        return Err(expected(v, &p, "a list of volumes"));
                    };
                    for (i, it) in items.iter().enumerate() {
                        let m = self.mount(it, &format!("{p}[{i}]"), volumes)?;
                        c.mounts.push(m);
                    }
                }
                "tmpfs" => {
                    for (i, t) in strings(v, &p)?.into_iter().enumerate() {
                        let target = t.split(':').next().unwrap_or("").to_string();
                        if !target.starts_with('/') {
                            return Err(err(
                                &v.pos,
                                &format!("{p}[{i}]"),
                                format!("expected an absolute path, found {t:?}"),
                            ));
                        }
                        if t.contains(':') {
                            self.warn(
                                &v.pos,
                                &format!("{p}[{i}]"),
                                "tmpfs options are not supported by orc, ignored",
                            );
                        }
                        c.mounts.push(Mount {
                            kind: MountKind::Tmpfs,
                            source: String::new(),
                            target,
                            readonly: false,
                            driver: String::new(),
                            driver_opts: BTreeMap::new(),
                        });
                    }
                }
                "healthcheck" => c.healthcheck = Some(self.healthcheck(v, &p)?),
                "stop_grace_period" => c.stop_grace_period_ms = duration_ms(v, &p)?,
                "user" => c.user = string(v, &p)?,
                "working_dir" => c.workdir = string(v, &p)?,
                "logging" => {
                    for (lk, lv) in entries(v, &p)? {
                        let lp = format!("{p}.{}", lk.name);
                        match lk.name.as_str() {
                            "driver" => c.log_driver = string(lv, &lp)?,
                            "options" => {
                                for (ok, ov) in kv_map(lv, &lp)? {
                                    c.log_opts.insert(ok, ov.unwrap_or_default());
                                }
                            }
                            _ => return Err(unknown_key(lk, &p, &["driver", "options"])),
                        }
                    }
                }
                "depends_on" => {
                    for (dk, dv) in entries(v, &p)? {
                        let dp = format!("{p}.{}", dk.name);
                        let mut cond = DependCondition::ServiceStarted;
                        let mut required = true;
                        for (ck, cv) in entries(dv, &dp)? {
                            let cp = format!("{dp}.{}", ck.name);
                            match ck.name.as_str() {
                                "condition" => {
                                    cond = match string(cv, &cp)?.as_str() {
                                        "service_started" => DependCondition::ServiceStarted,
                                        "service_healthy" => DependCondition::ServiceHealthy,
                                        "service_completed_successfully" => {
                                            DependCondition::ServiceCompletedSuccessfully
                                        }
                                        _ => {
                                            return Err(expected(
                                                cv,
                                                &cp,
                                                "service_started, service_healthy or service_completed_successfully",
                                            ))
                                        }
                                    }
                                }
                                "required" => required = boolean(cv, &cp)?,
                                "restart" => {
                                    if boolean(cv, &cp)? {
                                        self.warn(&ck.pos, &cp, "not supported by orc (a dependent is not restarted with its dependency), ignored")
                                    }
                                }
                                _ => {
                                    return Err(unknown_key(ck, &dp, &["condition", "required", "restart"]))
                                }
                            }
                        }
                        if required {
                            depends.push((dk.name.clone(), cond, dk.pos.clone()));
                        } else {
                            self.warn(
                                &dk.pos,
                                &dp,
                                "required: false: orc does not wait for an optional dependency",
                            );
                        }
                    }
                }
                "deploy" => deploy = Some(v),
                "restart" => restart_key = Some(v),
                "scale" => scale = Some(uint(v, &p)?),
                "cpus" => loose_limits.limit_nano_cpus = (float(v, &p)? * 1e9) as u64,
                "mem_limit" => loose_limits.limit_memory_bytes = bytes(v, &p)?,
                "mem_reservation" => loose_limits.reserve_memory_bytes = bytes(v, &p)?,
                x if x.starts_with("x-") => {}
                x if IGNORED_SERVICE_KEYS.contains(&x) => {
                    let why = match x {
                        "build" => "orc does not build images (build the image and push or load it; image: is used)",
                        "networks" => "every service of the stack is on orc's mesh and reaches the others by name",
                        "container_name" => "orc names containers after their tasks",
                        _ => "not supported by orc",
                    };
                    self.warn(&k.pos, &p, format!("{why}, ignored"));
                }
                _ => return Err(unknown_key(k, path, SERVICE_KEYS)),
            }
        }
        let Some(image) = image else {
            return Err(err(
                &n.pos,
                &format!("{path}.image"),
                "missing: every service needs an image",
            ));
        };
        c.image = image;
        // restart: (outside deploy) maps to a restart policy unless deploy has one
        let mut have_restart_policy = false;
        let mut have_replicas = false;
        let mut have_resources = false;
        if let Some(d) = deploy {
            let dp = format!("{path}.deploy");
            for (k, v) in entries(d, &dp)? {
                let p = format!("{dp}.{}", k.name);
                match k.name.as_str() {
                    "mode" => {
                        mode = match string(v, &p)?.as_str() {
                            "replicated" => match mode {
                                ServiceMode::Replicated { .. } => mode,
                                _ => ServiceMode::Replicated { replicas: 1 },
                            },
                            "global" => ServiceMode::Global,
                            "replicated-job" => ServiceMode::ReplicatedJob {
                                max_concurrent: 1,
                                total_completions: 1,
                            },
                            "global-job" => ServiceMode::GlobalJob,
                            _ => {
                                return Err(expected(
                                    v,
                                    &p,
                                    "replicated, global, replicated-job or global-job",
                                ))
                            }
                        }
                    }
                    "replicas" => {
                        have_replicas = true;
                        let r = uint(v, &p)?;
                        if r > 100_000 {
                            return Err(err(&v.pos, &p, format!("at most 100000, found {r}")));
                        }
                        scale = Some(r);
                    }
                    "labels" => {
                        for (lk, lv) in kv_map(v, &p)? {
                            labels.insert(lk, lv.unwrap_or_default());
                        }
                    }
                    "resources" => {
                        have_resources = true;
                        resources = self.resources(v, &p)?
                    }
                    "restart_policy" => {
                        have_restart_policy = true;
                        restart = self.restart_policy(v, &p)?
                    }
                    "placement" => placement = self.placement(v, &p)?,
                    "update_config" => update = self.update_config(v, &p, true)?,
                    "rollback_config" => rollback = self.update_config(v, &p, false)?,
                    "endpoint_mode" => {
                        endpoint_mode = match string(v, &p)?.as_str() {
                            "vip" => EndpointMode::Vip,
                            "dnsrr" => EndpointMode::Dnsrr,
                            _ => return Err(expected(v, &p, "vip or dnsrr")),
                        }
                    }
                    x if x.starts_with("x-") => {}
                    _ => {
                        return Err(unknown_key(
                            k,
                            &dp,
                            &[
                                "mode",
                                "replicas",
                                "labels",
                                "resources",
                                "restart_policy",
                                "placement",
                                "update_config",
                                "rollback_config",
                                "endpoint_mode",
                            ],
                        ))
                    }
                }
            }
        }
        match &mut mode {
            ServiceMode::Replicated { replicas } => *replicas = scale.unwrap_or(1),
            ServiceMode::ReplicatedJob {
                max_concurrent,
                total_completions,
            } => {
                let r = scale.unwrap_or(1).max(1);
                *max_concurrent = r;
                *total_completions = r;
            }
            _ => {
                if have_replicas {
                    let d = deploy.and_then(|d| d.get("replicas"));
                    if let Some(d) = d {
                        return Err(err(
                            &d.pos,
                            &format!("{path}.deploy.replicas"),
                            format!("a {} service has no replica count", mode.name()),
                        ));
                    }
                }
            }
        }
        if !have_resources {
            resources = loose_limits;
        }
        if let (Some(r), false) = (restart_key, have_restart_policy) {
            let p = format!("{path}.restart");
            let text = string(r, &p)?;
            let (cond, max) = text.split_once(':').unwrap_or((&text, ""));
            restart.condition = match cond {
                "no" => RestartCondition::None,
                "always" | "unless-stopped" => RestartCondition::Any,
                "on-failure" => RestartCondition::OnFailure,
                _ => {
                    return Err(expected(
                        r,
                        &p,
                        "no, always, on-failure[:N] or unless-stopped",
                    ))
                }
            };
            if !max.is_empty() {
                restart.max_attempts = max
                    .parse()
                    .map_err(|_| expected(r, &p, "on-failure:N with N a number"))?;
            }
        }
        // environment: env_file entries first, environment over them; a key without a
        // value takes the variable of the deploying shell, or is left out
        let mut env: Vec<(String, String)> = vec![];
        let mut set = |k: String, v: String| match env.iter_mut().find(|(x, _)| *x == k) {
            Some(slot) => slot.1 = v,
            None => env.push((k, v)),
        };
        for (_, vars) in env_files {
            for (k, v) in vars {
                set(k, v);
            }
        }
        for (k, v) in environment {
            match v {
                Some(v) => set(k, v),
                None => {
                    if let Some(v) = self.vars.get(&k) {
                        set(k, v.clone())
                    }
                }
            }
        }
        c.env = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        c.labels.insert(STACK_LABEL.into(), stack.clone());
        labels.insert(STACK_LABEL.into(), stack.clone());
        let spec = ServiceSpec {
            name: format!("{stack}_{short}"),
            labels,
            mode,
            task: TaskSpec {
                container: c,
                resources,
                restart,
                placement,
                force_update: 0,
            },
            ports,
            expose: expose.into_iter().collect(),
            update,
            rollback,
            depends_on: vec![],
            endpoint_mode,
        };
        Ok(Draft {
            short: short.to_string(),
            spec,
            depends,
            published,
        })
    }

    fn env_files(&mut self, n: &Node, path: &str) -> Result<Vec<(String, Vars)>> {
        let mut list: Vec<(String, bool, Pos)> = vec![];
        match &n.value {
            Value::Str(s) => list.push((s.clone(), true, n.pos.clone())),
            Value::Seq(items) => {
                for (i, it) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    match &it.value {
                        Value::Map(_) => {
                            let mut file = None;
                            let mut required = true;
                            for (k, v) in entries(it, &p)? {
                                let kp = format!("{p}.{}", k.name);
                                match k.name.as_str() {
                                    "path" => file = Some(string(v, &kp)?),
                                    "required" => required = boolean(v, &kp)?,
                                    "format" => {}
                                    _ => {
                                        return Err(unknown_key(
                                            k,
                                            &p,
                                            &["path", "required", "format"],
                                        ))
                                    }
                                }
                            }
                            let Some(file) = file else {
                                return Err(err(&it.pos, &p, "path: is required"));
                            };
                            list.push((file, required, it.pos.clone()));
                        }
                        _ => list.push((string(it, &p)?, true, it.pos.clone())),
                    }
                }
            }
            _ => return Err(expected(n, path, "a file name or a list of them")),
        }
        let mut out = vec![];
        for (file, required, pos) in list {
            let full = self.relative_to(&pos, &file);
            match (self.read)(&full) {
                Ok(text) => {
                    let vars = parse_env_file(&text).map_err(|(line, m)| {
                        Error::InvalidInput(format!("{}:{line}: {m}", full.display()))
                    })?;
                    out.push((file, vars));
                }
                Err(_) if !required => {}
                Err(e) => {
                    return Err(err(
                        &pos,
                        path,
                        format!("cannot read {}: {e}", full.display()),
                    ))
                }
            }
        }
        Ok(out)
    }

    /// `file` relative to the directory of the stack file `pos` is in.
    fn relative_to(&self, pos: &Pos, file: &str) -> PathBuf {
        let f = Path::new(file);
        if f.is_absolute() {
            return f.to_path_buf();
        }
        if let Some(rest) = file.strip_prefix("~/") {
            if let Some(home) = self.vars.get("HOME") {
                return Path::new(home).join(rest);
            }
        }
        let dir = Path::new(&*pos.file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let joined = std::path::absolute(dir.join(f)).unwrap_or_else(|_| dir.join(f));
        // lexically drop `.` components
        joined
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect()
    }

    fn port(&mut self, n: &Node, path: &str) -> Result<Vec<PortConfig>> {
        let bad_port = |what: &str| expected(n, path, what);
        match &n.value {
            Value::Map(_) => {
                let mut target = None;
                let mut published = (0u16, 0u16);
                let mut protocol = Protocol::Tcp;
                let mut mode = PublishMode::Ingress;
                for (k, v) in entries(n, path)? {
                    let p = format!("{path}.{}", k.name);
                    match k.name.as_str() {
                        "target" => {
                            let t = uint(v, &p)?;
                            if t == 0 || t > 65535 {
                                return Err(err(
                                    &v.pos,
                                    &p,
                                    format!("expected a port from 1 to 65535, found {t}"),
                                ));
                            }
                            target = Some(t as u16)
                        }
                        "published" => {
                            let text = string(v, &p)?;
                            published = port_range(&text).ok_or_else(|| {
                                expected(
                                    v,
                                    &p,
                                    "a port from 1 to 65535 or a range such as 8000-8010",
                                )
                            })?;
                        }
                        "protocol" => protocol = self.protocol(v, &p)?,
                        "mode" => {
                            mode = match string(v, &p)?.as_str() {
                                "ingress" => PublishMode::Ingress,
                                "host" => PublishMode::Host,
                                _ => return Err(expected(v, &p, "ingress or host")),
                            }
                        }
                        "host_ip" => self.warn(
                            &k.pos,
                            &p,
                            "ignored: the mesh listens on every address of every node",
                        ),
                        "name" | "app_protocol" => {
                            self.warn(&k.pos, &p, "not supported by orc, ignored")
                        }
                        x if x.starts_with("x-") => {}
                        _ => {
                            return Err(unknown_key(
                                k,
                                path,
                                &[
                                    "target",
                                    "published",
                                    "protocol",
                                    "mode",
                                    "host_ip",
                                    "name",
                                    "app_protocol",
                                ],
                            ))
                        }
                    }
                }
                let Some(target) = target else {
                    return Err(err(
                        &n.pos,
                        &format!("{path}.target"),
                        "missing: the container's port",
                    ));
                };
                let count = published.1 - published.0;
                Ok((0..=count)
                    .map(|i| PortConfig {
                        protocol,
                        target: target.saturating_add(i),
                        published: if published.0 == 0 { 0 } else { published.0 + i },
                        mode,
                        proxy_protocol: Default::default(),
                    })
                    .collect())
            }
            Value::Int(_) | Value::Str(_) => {
                let text = string(n, path)?;
                let (ports, proto) = text.rsplit_once('/').unwrap_or((&text, "tcp"));
                let protocol = match proto {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    _ => return Err(bad_port("a protocol tcp or udp after /")),
                };
                let parts: Vec<&str> = ports.split(':').collect();
                let (pub_text, target_text) = match parts.as_slice() {
                    [t] => ("", *t),
                    [p, t] => (*p, *t),
                    [_ip, p, t] => {
                        self.warn(&n.pos, path, "the host address is ignored: the mesh listens on every address of every node");
                        (*p, *t)
                    }
                    _ => return Err(bad_port("a port such as 80, 8080:80 or 8080:80/udp")),
                };
                let range_err = |t: &str| {
                    let big = t
                        .split('-')
                        .filter_map(|x| x.trim().parse::<u64>().ok())
                        .find(|x| *x > 65535);
                    match big {
                        Some(b) => err(&n.pos, path, format!("port {b} is above 65535")),
                        None => bad_port("a port such as 80, 8080:80 or 8080:80/udp"),
                    }
                };
                let target = port_range(target_text).ok_or_else(|| range_err(target_text))?;
                if target.0 == 0 {
                    return Err(bad_port("a container port from 1 to 65535"));
                }
                let published = if pub_text.is_empty() {
                    (0, 0)
                } else {
                    port_range(pub_text).ok_or_else(|| range_err(pub_text))?
                };
                let tn = target.1 - target.0;
                let pn = published.1 - published.0;
                if published.0 != 0 && tn != pn {
                    return Err(err(
                        &n.pos,
                        path,
                        "the published and target ranges differ in length",
                    ));
                }
                Ok((0..=tn)
                    .map(|i| PortConfig {
                        protocol,
                        target: target.0 + i,
                        published: if published.0 == 0 { 0 } else { published.0 + i },
                        mode: PublishMode::Ingress,
                        proxy_protocol: Default::default(),
                    })
                    .collect())
            }
            _ => Err(bad_port(
                "a port such as \"8080:80\" or a mapping with target:",
            )),
        }
    }

    fn protocol(&mut self, n: &Node, path: &str) -> Result<Protocol> {
        match string(n, path)?.as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => Err(expected(n, path, "tcp or udp")),
        }
    }

    fn mount(
        &mut self,
        n: &Node,
        path: &str,
        volumes: &BTreeMap<String, VolumeDef>,
    ) -> Result<Mount> {
        let mut m = Mount {
            kind: MountKind::Volume,
            source: String::new(),
            target: String::new(),
            readonly: false,
            driver: String::new(),
            driver_opts: BTreeMap::new(),
        };
        match &n.value {
            Value::Str(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                let (src, target, opts) = match parts.as_slice() {
                    [t] => ("", *t, ""),
                    [s, t] => (*s, *t, ""),
                    [s, t, o] => (*s, *t, *o),
                    _ => return Err(expected(n, path, "SOURCE:TARGET[:MODE] or TARGET")),
                };
                m.target = target.to_string();
                for o in opts.split(',').filter(|o| !o.is_empty()) {
                    match o {
                        "ro" => m.readonly = true,
                        "rw" => m.readonly = false,
                        "z" | "Z" | "nocopy" | "cached" | "delegated" | "consistent" => self.warn(
                            &n.pos,
                            path,
                            format!("the mode {o:?} is not supported by orc, ignored"),
                        ),
                        _ => {
                            return Err(err(
                                &n.pos,
                                path,
                                format!("unknown mode {o:?} (expected ro or rw)"),
                            ))
                        }
                    }
                }
                if src.starts_with('/') || src.starts_with('.') || src.starts_with('~') {
                    m.kind = MountKind::Bind;
                    m.source = self.relative_to(&n.pos, src).display().to_string();
                } else {
                    m.source = src.to_string();
                }
            }
            Value::Map(_) => {
                let mut kind = None;
                for (k, v) in entries(n, path)? {
                    let p = format!("{path}.{}", k.name);
                    match k.name.as_str() {
                        "type" => {
                            kind = Some(match string(v, &p)?.as_str() {
                                "bind" => MountKind::Bind,
                                "volume" => MountKind::Volume,
                                "tmpfs" => MountKind::Tmpfs,
                                _ => return Err(expected(v, &p, "bind, volume or tmpfs")),
                            })
                        }
                        "source" => m.source = string(v, &p)?,
                        "target" => m.target = string(v, &p)?,
                        "read_only" => m.readonly = boolean(v, &p)?,
                        "bind" | "volume" | "tmpfs" | "image" => {
                            for (ok, _) in entries(v, &p)? {
                                self.warn(
                                    &ok.pos,
                                    &format!("{p}.{}", ok.name),
                                    "not supported by orc, ignored",
                                );
                            }
                        }
                        "consistency" => self.warn(&k.pos, &p, "not supported by orc, ignored"),
                        x if x.starts_with("x-") => {}
                        _ => {
                            return Err(unknown_key(
                                k,
                                path,
                                &[
                                    "type",
                                    "source",
                                    "target",
                                    "read_only",
                                    "bind",
                                    "volume",
                                    "tmpfs",
                                    "consistency",
                                ],
                            ))
                        }
                    }
                }
                let Some(kind) = kind else {
                    return Err(err(
                        &n.pos,
                        &format!("{path}.type"),
                        "missing: bind, volume or tmpfs",
                    ));
                };
                m.kind = kind;
                if kind == MountKind::Bind {
                    if m.source.is_empty() {
                        return Err(err(
                            &n.pos,
                            &format!("{path}.source"),
                            "missing: a bind mount needs a host path",
                        ));
                    }
                    m.source = self
                        .relative_to(&n.pos, &m.source.clone())
                        .display()
                        .to_string();
                }
            }
            _ => return Err(expected(n, path, "a volume such as data:/var/lib/data")),
        }
        if !m.target.starts_with('/') {
            return Err(err(
                &n.pos,
                path,
                format!("the target must be an absolute path, found {:?}", m.target),
            ));
        }
        if m.kind == MountKind::Volume && !m.source.is_empty() {
            let Some(def) = volumes.get(&m.source) else {
                return Err(err(
                    &n.pos,
                    path,
                    format!(
                        "volume {:?} is not declared under the top-level volumes:",
                        m.source
                    ),
                ));
            };
            m.source = def.name.clone();
            m.driver = def.driver.clone();
            m.driver_opts = def.driver_opts.clone();
        }
        Ok(m)
    }

    fn healthcheck(&mut self, n: &Node, path: &str) -> Result<HealthCheck> {
        let mut h = HealthCheck::default();
        for (k, v) in entries(n, path)? {
            let p = format!("{path}.{}", k.name);
            match k.name.as_str() {
                "test" => {
                    h.test = match &v.value {
                        Value::Str(s) => vec!["CMD-SHELL".into(), s.clone()],
                        Value::Seq(_) => {
                            let t = strings(v, &p)?;
                            match t.first().map(String::as_str) {
                                Some("CMD" | "CMD-SHELL" | "NONE") => t,
                                first => {
                                    return Err(err(
                                        &v.pos,
                                        &p,
                                        format!(
                                            "expected a list starting with CMD, CMD-SHELL or NONE, found {:?} first",
                                            first.unwrap_or("nothing")
                                        ),
                                    ))
                                }
                            }
                        }
                        _ => return Err(expected(v, &p, "a command string or a list")),
                    }
                }
                "interval" => h.interval_ms = duration_ms(v, &p)?,
                "timeout" => h.timeout_ms = duration_ms(v, &p)?,
                "retries" => h.retries = uint(v, &p)?,
                "start_period" => h.start_period_ms = duration_ms(v, &p)?,
                "start_interval" => self.warn(&k.pos, &p, "not supported by orc, ignored"),
                "disable" => {
                    if boolean(v, &p)? {
                        h.test = vec!["NONE".into()];
                    }
                }
                x if x.starts_with("x-") => {}
                _ => {
                    return Err(unknown_key(
                        k,
                        path,
                        &[
                            "test",
                            "interval",
                            "timeout",
                            "retries",
                            "start_period",
                            "start_interval",
                            "disable",
                        ],
                    ))
                }
            }
        }
        Ok(h)
    }

    fn resources(&mut self, n: &Node, path: &str) -> Result<Resources> {
        let mut r = Resources::default();
        for (k, v) in entries(n, path)? {
            let p = format!("{path}.{}", k.name);
            let limits = match k.name.as_str() {
                "limits" => true,
                "reservations" => false,
                _ => return Err(unknown_key(k, path, &["limits", "reservations"])),
            };
            for (rk, rv) in entries(v, &p)? {
                let rp = format!("{p}.{}", rk.name);
                match (rk.name.as_str(), limits) {
                    ("cpus", true) => r.limit_nano_cpus = (float(rv, &rp)? * 1e9) as u64,
                    ("cpus", false) => r.reserve_nano_cpus = (float(rv, &rp)? * 1e9) as u64,
                    ("memory", true) => r.limit_memory_bytes = bytes(rv, &rp)?,
                    ("memory", false) => r.reserve_memory_bytes = bytes(rv, &rp)?,
                    ("pids", true) | ("devices", false) | ("generic_resources", false) => {
                        self.warn(&rk.pos, &rp, "not supported by orc, ignored")
                    }
                    _ => {
                        return Err(unknown_key(
                            rk,
                            &p,
                            if limits {
                                &["cpus", "memory", "pids"]
                            } else {
                                &["cpus", "memory", "devices", "generic_resources"]
                            },
                        ))
                    }
                }
            }
        }
        Ok(r)
    }

    fn restart_policy(&mut self, n: &Node, path: &str) -> Result<RestartPolicy> {
        let mut r = RestartPolicy::default();
        for (k, v) in entries(n, path)? {
            let p = format!("{path}.{}", k.name);
            match k.name.as_str() {
                "condition" => {
                    r.condition = match string(v, &p)?.as_str() {
                        "any" => RestartCondition::Any,
                        "on-failure" => RestartCondition::OnFailure,
                        "none" => RestartCondition::None,
                        _ => return Err(expected(v, &p, "any, on-failure or none")),
                    }
                }
                "delay" => r.delay_ms = duration_ms(v, &p)?,
                "max_attempts" => r.max_attempts = uint(v, &p)?,
                "window" => r.window_ms = duration_ms(v, &p)?,
                _ => {
                    return Err(unknown_key(
                        k,
                        path,
                        &["condition", "delay", "max_attempts", "window"],
                    ))
                }
            }
        }
        Ok(r)
    }

    fn placement(&mut self, n: &Node, path: &str) -> Result<Placement> {
        let mut pl = Placement::default();
        for (k, v) in entries(n, path)? {
            let p = format!("{path}.{}", k.name);
            match k.name.as_str() {
                "constraints" => {
                    pl.constraints = strings(v, &p)?;
                    for (i, c) in pl.constraints.iter().enumerate() {
                        crate::store::Constraint::parse(c).map_err(|e| {
                            err(&v.pos, &format!("{p}[{i}]"), {
                                let m = e.to_string();
                                let m = m
                                    .split_once("\": ")
                                    .map(|(_, r)| r.to_string())
                                    .unwrap_or(m);
                                format!("{c:?}: {m}")
                            })
                        })?;
                    }
                }
                "preferences" => {
                    let Value::Seq(items) = &v.value else {
                        return Err(expected(v, &p, "a list of {spread: node.labels.NAME}"));
                    };
                    for (i, it) in items.iter().enumerate() {
                        let ip = format!("{p}[{i}]");
                        let Some(spread) = it.get("spread") else {
                            return Err(expected(it, &ip, "{spread: node.labels.NAME}"));
                        };
                        let s = string(spread, &format!("{ip}.spread"))?;
                        if !s.starts_with("node.labels.") && !s.starts_with("engine.labels.") {
                            return Err(expected(
                                spread,
                                &format!("{ip}.spread"),
                                "node.labels.NAME",
                            ));
                        }
                        pl.preferences.push(s);
                    }
                }
                "max_replicas_per_node" => pl.max_replicas_per_node = uint(v, &p)?,
                _ => {
                    return Err(unknown_key(
                        k,
                        path,
                        &["constraints", "preferences", "max_replicas_per_node"],
                    ))
                }
            }
        }
        Ok(pl)
    }

    fn update_config(&mut self, n: &Node, path: &str, update: bool) -> Result<UpdateConfig> {
        let mut u = UpdateConfig::default();
        for (k, v) in entries(n, path)? {
            let p = format!("{path}.{}", k.name);
            match k.name.as_str() {
                "parallelism" => u.parallelism = uint(v, &p)?,
                "delay" => u.delay_ms = duration_ms(v, &p)?,
                "monitor" => u.monitor_ms = duration_ms(v, &p)?,
                "max_failure_ratio" => {
                    let r = float(v, &p)?;
                    if r > 1.0 {
                        return Err(expected(v, &p, "a ratio from 0 to 1"));
                    }
                    u.max_failure_ratio = r;
                }
                "failure_action" => {
                    u.failure_action = match string(v, &p)?.as_str() {
                        "pause" => FailureAction::Pause,
                        "continue" => FailureAction::Continue,
                        "rollback" if update => FailureAction::Rollback,
                        _ if update => return Err(expected(v, &p, "pause, continue or rollback")),
                        _ => return Err(expected(v, &p, "pause or continue")),
                    }
                }
                "order" => {
                    u.order = match string(v, &p)?.as_str() {
                        "stop-first" => UpdateOrder::StopFirst,
                        "start-first" => UpdateOrder::StartFirst,
                        _ => return Err(expected(v, &p, "stop-first or start-first")),
                    }
                }
                _ => {
                    return Err(unknown_key(
                        k,
                        path,
                        &[
                            "parallelism",
                            "delay",
                            "failure_action",
                            "monitor",
                            "max_failure_ratio",
                            "order",
                        ],
                    ))
                }
            }
        }
        Ok(u)
    }
}

trait TrimDot {
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

fn valid_short_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 48
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// `80` → (80, 80); `8000-8010` → (8000, 8010); `None` when not ports (or above 65535).
fn port_range(s: &str) -> Option<(u16, u16)> {
    let s = s.trim();
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.trim().parse().ok()?;
    let b: u16 = b.trim().parse().ok()?;
    (a <= b).then_some((a, b))
}

/// A cycle among the drafts' dependencies, as names from the first back to it.
fn find_cycle(drafts: &[Draft]) -> Option<Vec<String>> {
    let deps: BTreeMap<&str, Vec<&str>> = drafts
        .iter()
        .map(|d| {
            (
                d.short.as_str(),
                d.depends.iter().map(|(n, _, _)| n.as_str()).collect(),
            )
        })
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done
    let mut mark: BTreeMap<&str, u8> = BTreeMap::new();
    fn visit<'a>(
        n: &'a str,
        deps: &BTreeMap<&'a str, Vec<&'a str>>,
        mark: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match mark.get(n) {
            Some(2) => return None,
            Some(1) => {
                let i = stack.iter().position(|x| *x == n).unwrap_or(0);
                let mut c: Vec<String> = stack[i..].iter().map(|s| s.to_string()).collect();
                c.push(n.to_string());
                return Some(c);
            }
            _ => {}
        }
        mark.insert(n, 1);
        stack.push(n);
        for d in deps.get(n).map(Vec::as_slice).unwrap_or(&[]) {
            if let Some(c) = visit(d, deps, mark, stack) {
                return Some(c);
            }
        }
        stack.pop();
        mark.insert(n, 2);
        None
    }
    for d in drafts {
        let mut stack = vec![];
        if let Some(c) = visit(&d.short, &deps, &mut mark, &mut stack) {
            return Some(c);
        }
    }
    None
}
