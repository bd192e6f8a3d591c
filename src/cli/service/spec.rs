//! A service spec built from the flags: `create` starts from the defaults, `update`
//! from the spec in force (as the leader answered it) and changes only what a flag
//! names.

use std::collections::BTreeMap;

use super::args::*;
use crate::error::{Error, Result};
use crate::store::service::*;
use crate::store::ServiceSpec;

impl CommonFlags {
    /// Applies the flags given to `spec`.
    pub fn apply(&self, spec: &mut ServiceSpec) -> Result<()> {
        if let Some(n) = self.replicas {
            match &mut spec.mode {
                ServiceMode::Replicated { replicas } => *replicas = n,
                ServiceMode::ReplicatedJob {
                    total_completions, ..
                } => *total_completions = n,
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "--replicas: a {} service has no replica count",
                        spec.mode.name()
                    )))
                }
            }
        }
        for f in &self.env_file {
            for e in read_env_file(f)? {
                set_env(&mut spec.task.container.env, &e);
            }
        }
        self.apply_task(&mut spec.task)?;
        self.apply_health(&mut spec.task.container)?;
        self.apply_container(&mut spec.task)?;
        self.apply_updates(spec)
    }

    /// Resources and the restart policy.
    fn apply_task(&self, t: &mut TaskSpec) -> Result<()> {
        if let Some(v) = &self.reserve_cpu {
            t.resources.reserve_nano_cpus = parse_cpus("--reserve-cpu", v)?;
        }
        if let Some(v) = &self.reserve_memory {
            t.resources.reserve_memory_bytes = parse_bytes("--reserve-memory", v)?;
        }
        if let Some(v) = &self.limit_cpu {
            t.resources.limit_nano_cpus = parse_cpus("--limit-cpu", v)?;
        }
        if let Some(v) = &self.limit_memory {
            t.resources.limit_memory_bytes = parse_bytes("--limit-memory", v)?;
        }
        if let Some(v) = &self.restart_condition {
            t.restart.condition = word("--restart-condition", v)?;
        }
        if let Some(v) = &self.restart_delay {
            t.restart.delay_ms = ms("--restart-delay", v)?;
        }
        if let Some(v) = self.restart_max_attempts {
            t.restart.max_attempts = v;
        }
        if let Some(v) = &self.restart_window {
            t.restart.window_ms = ms("--restart-window", v)?;
        }
        Ok(())
    }

    /// The health check: disabled, or the image's changed by the flags given.
    fn apply_health(&self, c: &mut ContainerSpec) -> Result<()> {
        if self.no_healthcheck {
            if self.health_cmd.is_some() {
                return Err(Error::InvalidInput(
                    "--no-healthcheck conflicts with --health-cmd".into(),
                ));
            }
            c.healthcheck = Some(HealthCheck {
                test: vec!["NONE".into()],
                ..Default::default()
            });
        }
        let any_health = self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some();
        if any_health {
            let mut h = c
                .healthcheck
                .clone()
                .filter(|h| h.test != ["NONE"])
                .unwrap_or_default();
            if let Some(cmd) = &self.health_cmd {
                h.test = vec!["CMD-SHELL".into(), cmd.clone()];
            }
            if let Some(v) = &self.health_interval {
                h.interval_ms = ms("--health-interval", v)?;
            }
            if let Some(v) = &self.health_timeout {
                h.timeout_ms = ms("--health-timeout", v)?;
            }
            if let Some(v) = self.health_retries {
                h.retries = v;
            }
            if let Some(v) = &self.health_start_period {
                h.start_period_ms = ms("--health-start-period", v)?;
            }
            c.healthcheck = Some(h);
        }
        Ok(())
    }

    /// The container's user, directory, entrypoint and stop period, and the placement.
    fn apply_container(&self, t: &mut TaskSpec) -> Result<()> {
        let c = &mut t.container;
        if let Some(v) = &self.stop_grace_period {
            c.stop_grace_period_ms = ms("--stop-grace-period", v)?;
        }
        if let Some(v) = &self.user {
            c.user = v.clone();
        }
        if let Some(v) = &self.workdir {
            c.workdir = v.clone();
        }
        if let Some(v) = &self.entrypoint {
            c.entrypoint = v.split_whitespace().map(str::to_string).collect();
        }
        if let Some(v) = self.max_replicas_per_node {
            t.placement.max_replicas_per_node = v;
        }
        Ok(())
    }

    /// The update and rollback settings.
    fn apply_updates(&self, spec: &mut ServiceSpec) -> Result<()> {
        let u = &mut spec.update;
        if let Some(v) = self.update_parallelism {
            u.parallelism = v;
        }
        if let Some(v) = &self.update_delay {
            u.delay_ms = ms("--update-delay", v)?;
        }
        if let Some(v) = &self.update_failure_action {
            u.failure_action = failure_action("--update-failure-action", v)?;
        }
        if let Some(v) = &self.update_monitor {
            u.monitor_ms = ms("--update-monitor", v)?;
        }
        if let Some(v) = self.update_max_failure_ratio {
            u.max_failure_ratio = v;
        }
        if let Some(v) = &self.update_order {
            u.order = order("--update-order", v)?;
        }
        let r = &mut spec.rollback;
        if let Some(v) = self.rollback_parallelism {
            r.parallelism = v;
        }
        if let Some(v) = &self.rollback_delay {
            r.delay_ms = ms("--rollback-delay", v)?;
        }
        if let Some(v) = &self.rollback_failure_action {
            r.failure_action = failure_action("--rollback-failure-action", v)?;
        }
        if let Some(v) = &self.rollback_monitor {
            r.monitor_ms = ms("--rollback-monitor", v)?;
        }
        if let Some(v) = self.rollback_max_failure_ratio {
            r.max_failure_ratio = v;
        }
        if let Some(v) = &self.rollback_order {
            r.order = order("--rollback-order", v)?;
        }
        Ok(())
    }
}

fn set_env(env: &mut Vec<String>, kv: &str) {
    let key = kv.split('=').next().unwrap_or(kv);
    env.retain(|e| e.split('=').next() != Some(key));
    env.push(kv.to_string());
}

fn parse_expose(s: &str) -> Result<u16> {
    let p = s.split('/').next().unwrap_or(s);
    port_num("--expose", p)
}

/// The mode of `--mode` (and `--max-concurrent`).
fn mode_of(a: &CreateArgs) -> Result<ServiceMode> {
    let mut mode: ServiceMode = word("--mode", &a.mode)?;
    if let ServiceMode::ReplicatedJob { max_concurrent, .. } = &mut mode {
        *max_concurrent = a.max_concurrent.unwrap_or(1);
    }
    if a.max_concurrent.is_some() && a.mode != "replicated-job" {
        return Err(Error::InvalidInput(
            "--max-concurrent: only for --mode replicated-job".into(),
        ));
    }
    Ok(mode)
}

/// Builds the spec of `service create` from its flags.
pub fn create_spec(a: &CreateArgs) -> Result<ServiceSpec> {
    let mode = mode_of(a)?;
    let mut spec = ServiceSpec {
        name: a.name.clone(),
        labels: BTreeMap::new(),
        mode,
        task: TaskSpec {
            container: ContainerSpec {
                image: a.image.clone(),
                args: a.command.clone(),
                stop_grace_period_ms: 10_000,
                ..Default::default()
            },
            ..Default::default()
        },
        ports: a
            .publish
            .iter()
            .map(|p| parse_publish(p))
            .collect::<Result<_>>()?,
        expose: a
            .expose
            .iter()
            .map(|p| parse_expose(p))
            .collect::<Result<_>>()?,
        update: UpdateConfig::default(),
        rollback: UpdateConfig::default(),
        depends_on: vec![],
        endpoint_mode: Default::default(),
        networks: a
            .network
            .iter()
            .map(|n| crate::cli::network::parse_attachment("--network", n))
            .collect::<Result<_>>()?,
    };
    for e in &a.env {
        if !e.contains('=') {
            // `-e KEY` passes the client's own value, as docker does.
            match std::env::var(e) {
                Ok(v) => set_env(&mut spec.task.container.env, &format!("{e}={v}")),
                Err(_) => {
                    return Err(Error::InvalidInput(format!(
                        "--env: {e} has no value here; give {e}=VALUE"
                    )))
                }
            }
        } else {
            set_env(&mut spec.task.container.env, e);
        }
    }
    for l in &a.label {
        let (k, v) = kv("--label", l)?;
        spec.labels.insert(k, v);
    }
    for l in &a.container_label {
        let (k, v) = kv("--container-label", l)?;
        spec.task.container.labels.insert(k, v);
    }
    spec.task.container.mounts = a
        .mount
        .iter()
        .map(|m| parse_mount(m))
        .collect::<Result<_>>()?;
    mount_policy(&mut spec, a.mount_policy.as_deref(), true)?;
    spec.task.placement.constraints = a.constraint.iter().map(|c| c.as_str().into()).collect();
    for p in &a.placement_pref {
        let Some(v) = p.strip_prefix("spread=") else {
            return Err(Error::InvalidInput(format!(
                "--placement-pref: expected spread=node.labels.NAME (or spread=node.id, ...), found {p:?}"
            )));
        };
        spec.task.placement.preferences.push(v.into());
    }
    for s in &a.secret {
        let r = crate::cli::secret::parse_ref("--secret", s)?;
        spec.task.secrets.push(r);
    }
    for c in &a.config {
        let r = crate::cli::secret::parse_ref("--config", c)?;
        spec.task.configs.push(r);
    }
    a.common.apply(&mut spec)?;
    a.common
        .options
        .apply(&mut spec.task.container.options, false);
    a.options.apply(&mut spec.task)?;
    spec.validate()?;
    Ok(spec)
}

/// Applies `--secret-add`/`--secret-rm` (or the config flags) to `refs`: removals by
/// name first, then additions, each replacing a reference of the same name.
fn update_refs(
    refs: &mut Vec<crate::store::SecretRef>,
    (add_flag, add): (&str, &[String]),
    rm: &[String],
) -> Result<()> {
    refs.retain(|r| !rm.contains(&r.name));
    for s in add {
        let r = crate::cli::secret::parse_ref(add_flag, s)?;
        refs.retain(|x| x.name != r.name);
        refs.push(r);
    }
    Ok(())
}

/// Applies `service update` flags to the current spec (its networks named by name: see
/// [`super::update`]).
pub fn update_spec(mut spec: ServiceSpec, a: &UpdateArgs) -> Result<ServiceSpec> {
    if let Some(i) = &a.image {
        spec.task.container.image = i.clone();
    }
    if let Some(args) = &a.args {
        spec.task.container.args = args.split_whitespace().map(str::to_string).collect();
    }
    for k in &a.env_rm {
        spec.task
            .container
            .env
            .retain(|e| e.split('=').next() != Some(k.as_str()));
    }
    for e in &a.env_add {
        if !e.contains('=') {
            return Err(Error::InvalidInput(format!(
                "--env-add: expected K=V, found {e:?}"
            )));
        }
        set_env(&mut spec.task.container.env, e);
    }
    for k in &a.label_rm {
        spec.labels.remove(k);
    }
    for l in &a.label_add {
        let (k, v) = kv("--label-add", l)?;
        spec.labels.insert(k, v);
    }
    for k in &a.container_label_rm {
        spec.task.container.labels.remove(k);
    }
    for l in &a.container_label_add {
        let (k, v) = kv("--container-label-add", l)?;
        spec.task.container.labels.insert(k, v);
    }
    for p in &a.publish_rm {
        let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
        let (port, proto) = (
            port_num("--publish-rm", port)?,
            protocol("--publish-rm", proto)?,
        );
        spec.ports
            .retain(|q| !(q.published == port && q.protocol == proto));
    }
    for p in &a.publish_add {
        let p = parse_publish(p)?;
        spec.ports.retain(|q| {
            !(q.published == p.published && p.published != 0 && q.protocol == p.protocol)
        });
        spec.ports.push(p);
    }
    for t in &a.mount_rm {
        spec.task.container.mounts.retain(|m| &m.target != t);
    }
    for m in &a.mount_add {
        let m = parse_mount(m)?;
        spec.task.container.mounts.retain(|x| x.target != m.target);
        spec.task.container.mounts.push(m);
    }
    mount_policy(&mut spec, a.mount_policy.as_deref(), false)?;
    for c in &a.constraint_rm {
        spec.task.placement.constraints.retain(|x| x.text() != c);
    }
    for c in &a.constraint_add {
        if !spec
            .task
            .placement
            .constraints
            .iter()
            .any(|x| x.text() == c)
        {
            spec.task.placement.constraints.push(c.as_str().into());
        }
    }
    if !a.network_add.is_empty() || !a.network_rm.is_empty() {
        spec.networks =
            crate::cli::network::update_networks(&spec.networks, &a.network_add, &a.network_rm)?;
    }
    if a.force {
        spec.task.force_update += 1;
    }
    if a.force_new_volume {
        spec.task.force_new_volume += 1;
    }
    update_refs(
        &mut spec.task.secrets,
        ("--secret-add", &a.secret_add),
        &a.secret_rm,
    )?;
    update_refs(
        &mut spec.task.configs,
        ("--config-add", &a.config_add),
        &a.config_rm,
    )?;
    a.common.apply(&mut spec)?;
    a.common
        .options
        .apply(&mut spec.task.container.options, true);
    a.options.apply(&mut spec.task)?;
    spec.validate()?;
    Ok(spec)
}

/// Applies `--mount-policy` to the spec's named local volumes; without the flag, on
/// `create` (`from_label`), the service label `orc.mount-policy`.
fn mount_policy(spec: &mut ServiceSpec, flag: Option<&str>, from_label: bool) -> Result<()> {
    let (policy, named) = match flag {
        Some(p) => (p.parse()?, "--mount-policy"),
        None if from_label => match crate::store::volume::policy_of_labels(&spec.labels) {
            Some(p) => (p?, "--label"),
            None => return Ok(()),
        },
        None => return Ok(()),
    };
    crate::store::volume::apply_policy(&mut spec.task.container.mounts, policy, named)
}
