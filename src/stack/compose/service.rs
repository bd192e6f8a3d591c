//! One service of a compose file: its keys, read into a draft spec (names of other
//! services are resolved later, once every service is read).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::fields::*;
use super::keys::*;
use super::ports::port_range;
use super::volumes::VolumeDef;
use super::Draft;
use crate::error::{Error, Result};
use crate::stack::interpolate::{parse_env_file, Vars};
use crate::stack::yaml::{Node, Pos, Value};
use crate::stack::Loader;
use crate::store::service::{
    ContainerSpec, DependCondition, EndpointMode, HealthCheck, Mount, MountKind, Placement,
    Resources, RestartCondition, RestartPolicy, ServiceMode, ServiceSpec, TaskSpec, UpdateConfig,
    STACK_LABEL,
};

impl Loader<'_> {
    pub(super) fn service(
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
                            if port.is_ingress() {
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
                                "condition" => cond = word(cv, &cp)?,
                                "required" => required = boolean(cv, &cp)?,
                                "restart" => {
                                    if boolean(cv, &cp)? {
                                        self.warn(&ck.pos, &cp, "not supported by orc (a dependent is not restarted with its dependency), ignored")
                                    }
                                }
                                _ => {
                                    return Err(unknown_key(
                                        ck,
                                        &dp,
                                        &["condition", "required", "restart"],
                                    ))
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
                    "endpoint_mode" => endpoint_mode = word(v, &p)?,
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

    pub(super) fn env_files(&mut self, n: &Node, path: &str) -> Result<Vec<(String, Vars)>> {
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
    pub(super) fn relative_to(&self, pos: &Pos, file: &str) -> PathBuf {
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

    pub(super) fn healthcheck(&mut self, n: &Node, path: &str) -> Result<HealthCheck> {
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
}
