//! One service of a compose file: its keys, read into a draft spec (names of other
//! services are resolved later, once every service is read).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::deploy::{restart_key, Deploy};
use super::fields::*;
use super::keys::*;
use super::ports::expose;
use super::volumes::VolumeDef;
use super::Draft;
use crate::error::{Error, Result};
use crate::stack::interpolate::{parse_env_file, Vars};
use crate::stack::yaml::{Key, Node, Pos, Value};
use crate::stack::Loader;
use crate::store::service::{
    ContainerSpec, DependCondition, HealthCheck, PortConfig, Protocol, Resources, RestartPolicy,
    ServiceSpec, TaskSpec, STACK_LABEL,
};
use crate::store::NetworkAttachment;

impl Loader<'_> {
    /// One service: its keys read in file order, then `deploy:` over the keys it
    /// overrides (`scale`, `restart`, `cpus`, `mem_limit`, `mem_reservation`).
    pub(super) fn service(
        &mut self,
        short: &str,
        n: &Node,
        path: &str,
        volumes: &BTreeMap<String, VolumeDef>,
    ) -> Result<Draft> {
        let mut f = Fields::default();
        for (k, v) in entries(n, path)? {
            self.service_key(&mut f, k, v, path, volumes)?;
        }
        let Some(image) = f.image.take() else {
            return Err(err(
                &n.pos,
                &format!("{path}.image"),
                "missing: every service needs an image",
            ));
        };
        f.container.image = image;
        let d = match f.deploy {
            Some(d) => self.deploy(d, &format!("{path}.deploy"))?,
            None => Deploy::default(),
        };
        let mode = d.mode_with_replicas(f.scale, f.deploy, path)?;
        let restart = match (d.restart, f.restart) {
            (Some(r), _) => r,
            // restart: (outside deploy) maps to a restart policy unless deploy has one
            (None, Some(r)) => restart_key(r, &format!("{path}.restart"))?,
            (None, None) => RestartPolicy::default(),
        };
        if let Some((policy, p)) = &f.volume_policy {
            crate::store::volume::apply_policy(&mut f.container.mounts, *policy, p)?;
        } else if let Some(policy) = crate::store::volume::policy_of_labels(&d.labels) {
            let p = format!(
                "{path}.deploy.labels.{}",
                crate::store::volume::POLICY_LABEL
            );
            let policy = policy.map_err(|e| Error::InvalidInput(format!("{p}: {e}")))?;
            crate::store::volume::apply_policy(&mut f.container.mounts, policy, &p)?;
        }
        let stack = self.name.to_string();
        let mut c = f.container;
        c.env = self.environment(f.env_files, f.environment);
        c.labels.insert(STACK_LABEL.into(), stack.clone());
        let mut labels = d.labels;
        labels.insert(STACK_LABEL.into(), stack.clone());
        let spec = ServiceSpec {
            name: format!("{stack}_{short}"),
            labels,
            mode,
            task: TaskSpec {
                container: c,
                resources: d.resources.unwrap_or(f.loose_limits),
                restart,
                placement: d.placement,
                force_update: 0,
                force_new_volume: 0,
                secrets: vec![],
                configs: vec![],
            },
            ports: f.ports,
            expose: f.expose.into_iter().collect(),
            update: d.update,
            rollback: d.rollback,
            depends_on: vec![],
            endpoint_mode: d.endpoint_mode,
            networks: Default::default(),
        };
        Ok(Draft {
            short: short.to_string(),
            spec,
            depends: f.depends,
            published: f.published,
            networks: f.networks,
        })
    }

    /// One key of a service (`deploy:` and the keys it overrides are kept for later).
    fn service_key<'n>(
        &mut self,
        f: &mut Fields<'n>,
        k: &Key,
        v: &'n Node,
        path: &str,
        volumes: &BTreeMap<String, VolumeDef>,
    ) -> Result<()> {
        let p = format!("{path}.{}", k.name);
        if matches!(k.name.as_str(), "environment" | "labels" | "volumes") {
            check_templates(v, &p)?;
        }
        let c = &mut f.container;
        match k.name.as_str() {
            "image" => {
                let s = string(v, &p)?;
                if s.trim().is_empty() {
                    return Err(err(&v.pos, &p, "must not be empty"));
                }
                if let Some(why) = crate::store::image::reference_problem(&s) {
                    return Err(err(
                        &v.pos,
                        &p,
                        format!("{s:?} is not a valid image reference: {why} (Docker: invalid reference format)"),
                    ));
                }
                f.image = Some(s)
            }
            "command" => c.args = command(v, &p)?,
            "entrypoint" => c.entrypoint = command(v, &p)?,
            "environment" => f.environment = kv_map(v, &p)?,
            "env_file" => f.env_files = self.env_files(v, &p)?,
            "labels" => {
                for (lk, lv) in kv_map(v, &p)? {
                    c.labels.insert(lk, lv.unwrap_or_default());
                }
            }
            "ports" => {
                for (port, it, pp) in self.ports(v, &p)? {
                    if port.is_ingress() {
                        f.published
                            .push((port.published, port.protocol, it.pos.clone(), pp));
                    }
                    f.ports.push(port);
                }
            }
            "expose" => f.expose.extend(expose(v, &p)?),
            "secrets" => self.use_secrets(crate::store::secret::Kind::Secret, v, path, &p)?,
            "configs" => self.use_secrets(crate::store::secret::Kind::Config, v, path, &p)?,
            "volumes" => c.mounts.extend(self.mounts(v, &p, volumes)?),
            "tmpfs" => c.mounts.extend(self.tmpfs(v, &p)?),
            "healthcheck" => c.healthcheck = Some(self.healthcheck(v, &p)?),
            "stop_grace_period" => c.stop_grace_period_ms = duration_ms(v, &p)?,
            "user" => c.user = string(v, &p)?,
            "working_dir" => c.workdir = string(v, &p)?,
            "logging" => logging(c, v, &p)?,
            "depends_on" => f.depends = self.depends_on(v, &p)?,
            "networks" => f.networks = self.service_networks(v, &p)?,
            "deploy" => f.deploy = Some(v),
            "restart" => f.restart = Some(v),
            "scale" => f.scale = Some(uint(v, &p)?),
            "cpus" => f.loose_limits.limit_nano_cpus = (float(v, &p)? * 1e9) as u64,
            "mem_limit" => f.loose_limits.limit_memory_bytes = bytes(v, &p)?,
            "mem_reservation" => f.loose_limits.reserve_memory_bytes = bytes(v, &p)?,
            x if super::options::OPTION_KEYS.contains(&x) => {
                self.container_option(c, k, v, &p)?;
            }
            "x-orc-volume" => f.volume_policy = Some((self.volume_policy(v, &p)?, p)),
            x if x.starts_with("x-") => {}
            x if IGNORED_SERVICE_KEYS.contains(&x) => {
                let why = match x {
                    "build" => "orc does not build images (build the image and push or load it; image: is used)",
                    "container_name" => "orc names containers after their tasks",
                    _ => "not supported by orc",
                };
                self.warn(&k.pos, &p, format!("{why}, ignored"));
            }
            _ => {
                let known: Vec<&str> = SERVICE_KEYS
                    .iter()
                    .chain(super::options::OPTION_KEYS)
                    .copied()
                    .collect();
                return Err(unknown_key(k, path, &known));
            }
        }
        Ok(())
    }

    /// `depends_on:`: the services that must be ready first, with the condition and
    /// where each was named (optional ones are warned about and left out).
    fn depends_on(&mut self, v: &Node, p: &str) -> Result<Vec<(String, DependCondition, Pos)>> {
        let mut depends = vec![];
        for (dk, dv) in entries(v, p)? {
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
                    _ => return Err(unknown_key(ck, &dp, &["condition", "required", "restart"])),
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
        Ok(depends)
    }

    /// The container's environment: env_file entries first, environment over them; a
    /// key without a value takes the variable of the deploying shell, or is left out.
    fn environment(
        &self,
        env_files: Vec<(String, Vars)>,
        environment: Vec<(String, Option<String>)>,
    ) -> Vec<String> {
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
        env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
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

/// What the keys of one service give as they are read; `deploy:` and the keys it
/// overrides are applied once every key is read.
#[derive(Default)]
struct Fields<'n> {
    container: ContainerSpec,
    image: Option<String>,
    ports: Vec<PortConfig>,
    /// Published ingress ports and where each was written.
    published: Vec<(u16, Protocol, Pos, String)>,
    expose: BTreeSet<u16>,
    depends: Vec<(String, DependCondition, Pos)>,
    env_files: Vec<(String, Vars)>,
    environment: Vec<(String, Option<String>)>,
    deploy: Option<&'n Node>,
    // keys outside deploy that deploy overrides
    restart: Option<&'n Node>,
    scale: Option<u64>,
    loose_limits: Resources,
    /// `networks:` as written (keys of the top-level `networks:`), and where.
    networks: Vec<(NetworkAttachment, Pos)>,
    /// `x-orc-volume:` for every named local volume of the service, and its path.
    volume_policy: Option<(crate::store::volume::MountPolicy, String)>,
}

/// `logging:`: the driver and its options.
fn logging(c: &mut ContainerSpec, v: &Node, p: &str) -> Result<()> {
    for (lk, lv) in entries(v, p)? {
        let lp = format!("{p}.{}", lk.name);
        match lk.name.as_str() {
            "driver" => c.log_driver = string(lv, &lp)?,
            "options" => {
                for (ok, ov) in kv_map(lv, &lp)? {
                    c.log_opts.insert(ok, ov.unwrap_or_default());
                }
            }
            _ => return Err(unknown_key(lk, p, &["driver", "options"])),
        }
    }
    Ok(())
}

/// Refuses a bad Swarm template (`{{.Node.Hostnme}}`) in any string under `n`, naming
/// where it is; [`crate::store::service::template`] says what a good one is.
fn check_templates(n: &Node, path: &str) -> Result<()> {
    match &n.value {
        Value::Str(s) => match crate::store::service::template::problem(s) {
            Some(why) => Err(err(&n.pos, path, format!("{s:?}: bad template: {why}"))),
            None => Ok(()),
        },
        Value::Seq(items) => {
            for (i, it) in items.iter().enumerate() {
                check_templates(it, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        Value::Map(m) => {
            for (k, v) in m {
                check_templates(v, &format!("{path}.{}", k.name))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
