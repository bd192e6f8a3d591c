//! `orc service create|update|scale|rm|ls|ps|inspect|logs|rollback`.
//!
//! `create`, `update` and `scale` wait for the service to converge, showing one line
//! per replica (redrawn in place on a terminal, printed on change otherwise), as
//! `docker service create` does; `-d` returns at once. An `update` that replaces tasks,
//! and a `rollback`, follow the service's update status instead: `overall progress: K
//! out of N tasks` counts the tasks the orchestrator counted as updated (running,
//! healthy, monitored), and the command ends when the update completes, pauses or is
//! rolled back — with one `error: ...` line naming the state and its message, and a
//! non-zero exit, unless it completed (for `rollback`: unless the rollback completed).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;
use tonic::transport::Channel;

use super::{connect, parse_duration, print_table, Format};
use crate::error::{Error, Result};
use crate::proto::{self, control_client::ControlClient};
use crate::store::service::*;
use crate::store::ServiceSpec;

/// `orc service ...`.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service.
    Create(Box<CreateArgs>),
    /// Change a service; its tasks are replaced per its update settings.
    Update(Box<UpdateArgs>),
    /// Set the replica count of services: NAME=N ...
    Scale {
        /// Return at once instead of waiting for convergence.
        #[arg(short, long)]
        detach: bool,
        /// NAME=REPLICAS, one or more.
        #[arg(required = true)]
        pairs: Vec<String>,
    },
    /// Put a service's previous spec back, under its rollback settings.
    Rollback {
        /// Return at once instead of following the rollback.
        #[arg(short, long)]
        detach: bool,
        /// Service name or id.
        service: String,
    },
    /// Remove services.
    #[command(alias = "remove")]
    Rm {
        /// Services.
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// List services.
    #[command(alias = "list")]
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List a service's tasks, with their history.
    Ps {
        /// Service name or id.
        service: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show a service's spec and status (JSON; `--pretty`: a short text).
    Inspect {
        /// Service names or ids.
        #[arg(required = true)]
        services: Vec<String>,
        /// Output format (`table` is the same as `--pretty`).
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// A short text for people: name, mode, image and its pinned digest, ports.
        #[arg(long)]
        pretty: bool,
    },
    /// Print a service's logs.
    Logs {
        /// Follow new lines.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines of each task (`all` or a number).
        #[arg(long, default_value = "all")]
        tail: String,
        /// Show timestamps.
        #[arg(short, long)]
        timestamps: bool,
        /// Service name or id.
        service: String,
    },
}

/// Flags shared by `create` and `update`.
#[derive(Debug, Args, Default)]
pub struct CommonFlags {
    /// Return at once instead of waiting for convergence.
    #[arg(short, long)]
    pub detach: bool,
    /// Replicas (replicated services) or completions (replicated jobs).
    #[arg(long)]
    pub replicas: Option<u64>,
    /// Environment file(s): K=V lines.
    #[arg(long = "env-file")]
    pub env_file: Vec<String>,
    /// Reserved CPUs (placement), e.g. 0.5.
    #[arg(long)]
    pub reserve_cpu: Option<String>,
    /// Reserved memory (placement), e.g. 64M.
    #[arg(long)]
    pub reserve_memory: Option<String>,
    /// CPU limit.
    #[arg(long)]
    pub limit_cpu: Option<String>,
    /// Memory limit.
    #[arg(long)]
    pub limit_memory: Option<String>,
    /// any, on-failure or none.
    #[arg(long)]
    pub restart_condition: Option<String>,
    /// Delay before a failed task is replaced.
    #[arg(long)]
    pub restart_delay: Option<String>,
    /// Restarts allowed in the window (0 = unlimited).
    #[arg(long)]
    pub restart_max_attempts: Option<u64>,
    /// Window over which restarts are counted.
    #[arg(long)]
    pub restart_window: Option<String>,
    /// Health check command (run with sh -c).
    #[arg(long)]
    pub health_cmd: Option<String>,
    /// Time between health checks.
    #[arg(long)]
    pub health_interval: Option<String>,
    /// Time a health check may take.
    #[arg(long)]
    pub health_timeout: Option<String>,
    /// Failures in a row before unhealthy.
    #[arg(long)]
    pub health_retries: Option<u64>,
    /// Start period during which failures do not count.
    #[arg(long)]
    pub health_start_period: Option<String>,
    /// Disable the image's health check.
    #[arg(long)]
    pub no_healthcheck: bool,
    /// Time to wait after SIGTERM before SIGKILL.
    #[arg(long)]
    pub stop_grace_period: Option<String>,
    /// User (name or uid[:gid]).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Entrypoint (split on spaces).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// At most this many tasks per node.
    #[arg(long)]
    pub max_replicas_per_node: Option<u64>,
    /// Tasks replaced at once in an update (0 = all).
    #[arg(long)]
    pub update_parallelism: Option<u64>,
    /// Delay between update batches.
    #[arg(long)]
    pub update_delay: Option<String>,
    /// pause, continue or rollback.
    #[arg(long)]
    pub update_failure_action: Option<String>,
    /// How long each new task is watched.
    #[arg(long)]
    pub update_monitor: Option<String>,
    /// Failures tolerated (0 to 1).
    #[arg(long)]
    pub update_max_failure_ratio: Option<f64>,
    /// stop-first or start-first.
    #[arg(long)]
    pub update_order: Option<String>,
    /// Tasks rolled back at once.
    #[arg(long)]
    pub rollback_parallelism: Option<u64>,
    /// Delay between rollback batches.
    #[arg(long)]
    pub rollback_delay: Option<String>,
    /// pause or continue.
    #[arg(long)]
    pub rollback_failure_action: Option<String>,
    /// How long each rolled-back task is watched.
    #[arg(long)]
    pub rollback_monitor: Option<String>,
    /// Failures tolerated during rollback.
    #[arg(long)]
    pub rollback_max_failure_ratio: Option<f64>,
    /// stop-first or start-first.
    #[arg(long)]
    pub rollback_order: Option<String>,
}

/// `orc service create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Service name.
    #[arg(long)]
    pub name: String,
    /// replicated, global, replicated-job or global-job.
    #[arg(long, default_value = "replicated")]
    pub mode: String,
    /// Jobs: tasks running at once.
    #[arg(long)]
    pub max_concurrent: Option<u64>,
    /// Publish a port: [PUBLISHED:]TARGET[/udp] or mode=host,published=8080,target=80[,protocol=udp];
    /// `proxy-protocol=v1|v2` makes the mesh send the client's address to the task first.
    #[arg(short, long = "publish")]
    pub publish: Vec<String>,
    /// A port reachable inside the cluster only.
    #[arg(long)]
    pub expose: Vec<String>,
    /// Environment: K=V.
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Service label k=v.
    #[arg(short, long = "label")]
    pub label: Vec<String>,
    /// Container label k=v.
    #[arg(long = "container-label")]
    pub container_label: Vec<String>,
    /// type=bind|volume|tmpfs,source=..,target=..[,readonly].
    #[arg(long)]
    pub mount: Vec<String>,
    /// Placement constraint, e.g. node.labels.zone==a or node.facts.load1<2.
    #[arg(long)]
    pub constraint: Vec<String>,
    /// Placement preference spread=node.labels.NAME.
    #[arg(long = "placement-pref")]
    pub placement_pref: Vec<String>,
    #[command(flatten)]
    pub common: CommonFlags,
    /// Image.
    pub image: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `orc service update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// New image.
    #[arg(long)]
    pub image: Option<String>,
    /// New arguments (split on spaces).
    #[arg(long)]
    pub args: Option<String>,
    /// Add or set environment K=V.
    #[arg(long = "env-add")]
    pub env_add: Vec<String>,
    /// Remove environment K.
    #[arg(long = "env-rm")]
    pub env_rm: Vec<String>,
    /// Add or set a service label.
    #[arg(long = "label-add")]
    pub label_add: Vec<String>,
    /// Remove a service label.
    #[arg(long = "label-rm")]
    pub label_rm: Vec<String>,
    /// Add or set a container label.
    #[arg(long = "container-label-add")]
    pub container_label_add: Vec<String>,
    /// Remove a container label.
    #[arg(long = "container-label-rm")]
    pub container_label_rm: Vec<String>,
    /// Publish another port.
    #[arg(long = "publish-add")]
    pub publish_add: Vec<String>,
    /// Stop publishing a published port (PUBLISHED[/udp]).
    #[arg(long = "publish-rm")]
    pub publish_rm: Vec<String>,
    /// Add a mount.
    #[arg(long = "mount-add")]
    pub mount_add: Vec<String>,
    /// Remove the mount at this target.
    #[arg(long = "mount-rm")]
    pub mount_rm: Vec<String>,
    /// Add a constraint.
    #[arg(long = "constraint-add")]
    pub constraint_add: Vec<String>,
    /// Remove a constraint.
    #[arg(long = "constraint-rm")]
    pub constraint_rm: Vec<String>,
    /// Replace the tasks even if nothing changed.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub common: CommonFlags,
    /// Service name or id.
    pub service: String,
}

fn kv(flag: &str, s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        None if !s.is_empty() => Ok((s.to_string(), String::new())),
        _ => Err(Error::InvalidInput(format!(
            "{flag}: expected key=value, found {s:?}"
        ))),
    }
}

/// Parses a size flag: `64M`, `1G`, `512k`, `1024` (bytes: [`crate::units::bytes`]).
pub fn parse_bytes(flag: &str, s: &str) -> Result<u64> {
    crate::units::bytes(s).map(|b| b as u64).ok_or_else(|| {
        Error::InvalidInput(format!(
            "{flag}: expected a size such as 64M or 1G, found {s:?}"
        ))
    })
}

fn parse_cpus(flag: &str, s: &str) -> Result<u64> {
    let n: f64 = s.trim().parse().map_err(|_| {
        Error::InvalidInput(format!(
            "{flag}: expected a number of CPUs such as 0.5, found {s:?}"
        ))
    })?;
    if n < 0.0 || !n.is_finite() {
        return Err(Error::InvalidInput(format!("{flag}: must not be negative")));
    }
    Ok((n * 1e9) as u64)
}

fn port_num(flag: &str, s: &str) -> Result<u16> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| Error::InvalidInput(format!("{flag}: {s:?} is not a port number")))?;
    if n == 0 || n > 65535 {
        return Err(Error::InvalidInput(format!(
            "{flag}: port {n} is out of range 1-65535"
        )));
    }
    Ok(n as u16)
}

/// A flag's word for an enum (`--restart-condition on-failure`): the enum's `FromStr`,
/// with the flag named in the message.
fn word<T: Words>(flag: &str, s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| Error::InvalidInput(format!("{flag}: expected {}, found {s:?}", T::EXPECTED)))
}

/// An option's word inside a flag (`--publish mode=host`): `{flag}: KEY must be ...`.
fn option_word<T: Words>(flag: &str, key: &str, s: &str) -> Result<T> {
    s.parse().map_err(|_| {
        Error::InvalidInput(format!(
            "{flag}: {key} must be {}, found {s:?}",
            T::EXPECTED
        ))
    })
}

fn protocol(flag: &str, s: &str) -> Result<Protocol> {
    match s {
        "" => Ok(Protocol::Tcp),
        _ => option_word(flag, "protocol", s),
    }
}

/// Parses `-p`: `8080:80`, `8080:80/udp`, `80`, or
/// `mode=host,published=8080,target=80,protocol=udp,proxy-protocol=v2`.
pub fn parse_publish(s: &str) -> Result<PortConfig> {
    let flag = "--publish";
    if s.contains('=') {
        let mut p = PortConfig {
            protocol: Protocol::Tcp,
            target: 0,
            published: 0,
            mode: PublishMode::Ingress,
            proxy_protocol: Default::default(),
        };
        for part in s.split(',') {
            let (k, v) = kv(flag, part)?;
            match k.as_str() {
                "mode" => p.mode = option_word(flag, "mode", &v)?,
                "published" => p.published = port_num(flag, &v)?,
                "target" => p.target = port_num(flag, &v)?,
                "protocol" => p.protocol = protocol(flag, &v)?,
                "proxy-protocol" | "proxy_protocol" => {
                    p.proxy_protocol = match v.as_str() {
                        "" => ProxyProtocol::None,
                        _ => option_word(flag, "proxy-protocol", &v)?,
                    }
                }
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "{flag}: unknown option {k:?} in {s:?}"
                    )))
                }
            }
        }
        if p.target == 0 {
            return Err(Error::InvalidInput(format!(
                "{flag}: target= is required in {s:?}"
            )));
        }
        return Ok(p);
    }
    let (ports, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let protocol = protocol(flag, proto)?;
    let (published, target) = match ports.split_once(':') {
        Some((p, t)) => (port_num(flag, p)?, port_num(flag, t)?),
        None => (0, port_num(flag, ports)?),
    };
    Ok(PortConfig {
        protocol,
        target,
        published,
        mode: PublishMode::Ingress,
        proxy_protocol: Default::default(),
    })
}

/// Parses `--mount type=bind,source=/a,target=/b,readonly`.
pub fn parse_mount(s: &str) -> Result<Mount> {
    let flag = "--mount";
    let mut m = Mount {
        kind: MountKind::Volume,
        source: String::new(),
        target: String::new(),
        readonly: false,
        driver: String::new(),
        driver_opts: BTreeMap::new(),
    };
    for part in s.split(',') {
        let (k, v) = kv(flag, part)?;
        match k.as_str() {
            "type" => m.kind = option_word(flag, "type", &v)?,
            "source" | "src" => m.source = v,
            "target" | "dst" | "destination" => m.target = v,
            "readonly" | "ro" => m.readonly = v.is_empty() || v == "true" || v == "1",
            "volume-driver" => m.driver = v,
            k if k.starts_with("volume-opt") => {
                let (ok, ov) = kv(flag, &v)?;
                m.driver_opts.insert(ok, ov);
            }
            _ => {
                return Err(Error::InvalidInput(format!(
                    "{flag}: unknown option {k:?} in {s:?}"
                )))
            }
        }
    }
    if m.target.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{flag}: target= is required in {s:?}"
        )));
    }
    Ok(m)
}

/// `--update-failure-action` takes rollback; `--rollback-failure-action` does not.
fn failure_action(flag: &str, s: &str) -> Result<FailureAction> {
    match word(flag, s) {
        Ok(FailureAction::Rollback) | Err(_) if !flag.starts_with("--update") => Err(
            Error::InvalidInput(format!("{flag}: expected pause or continue, found {s:?}")),
        ),
        r => r,
    }
}

fn order(flag: &str, s: &str) -> Result<UpdateOrder> {
    word(flag, s)
}

fn ms(flag: &str, s: &str) -> Result<u64> {
    Ok(parse_duration(flag, s)?.as_millis() as u64)
}

fn read_env_file(path: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::InvalidInput(format!("--env-file {path}: {e}")))?;
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if !l.contains('=') || l.starts_with('=') {
            return Err(Error::InvalidInput(format!(
                "--env-file {path}: line {}: expected K=V, found {l:?}",
                i + 1
            )));
        }
        out.push(l.to_string());
    }
    Ok(out)
}

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
        let t = &mut spec.task;
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
        let c = &mut t.container;
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

/// Builds the spec of `service create` from its flags.
pub fn create_spec(a: &CreateArgs) -> Result<ServiceSpec> {
    let mut mode: ServiceMode = word("--mode", &a.mode)?;
    if let ServiceMode::ReplicatedJob { max_concurrent, .. } = &mut mode {
        *max_concurrent = a.max_concurrent.unwrap_or(1);
    }
    if a.max_concurrent.is_some() && a.mode != "replicated-job" {
        return Err(Error::InvalidInput(
            "--max-concurrent: only for --mode replicated-job".into(),
        ));
    }
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
    spec.task.placement.constraints = a.constraint.clone();
    for p in &a.placement_pref {
        let Some(v) = p.strip_prefix("spread=") else {
            return Err(Error::InvalidInput(format!(
                "--placement-pref: expected spread=node.labels.NAME, found {p:?}"
            )));
        };
        spec.task.placement.preferences.push(v.to_string());
    }
    a.common.apply(&mut spec)?;
    spec.validate()?;
    Ok(spec)
}

/// Applies `service update` flags to the current spec.
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
    for c in &a.constraint_rm {
        spec.task.placement.constraints.retain(|x| x != c);
    }
    for c in &a.constraint_add {
        if !spec.task.placement.constraints.contains(c) {
            spec.task.placement.constraints.push(c.clone());
        }
    }
    if a.force {
        spec.task.force_update += 1;
    }
    a.common.apply(&mut spec)?;
    spec.validate()?;
    Ok(spec)
}

pub async fn client(socket: &Path) -> Result<ControlClient<Channel>> {
    Ok(ControlClient::new(connect(socket).await?).max_decoding_message_size(64 * 1024 * 1024))
}

pub async fn tasks_json(c: &mut ControlClient<Channel>, service: &str) -> Result<Vec<Value>> {
    let r = c
        .service_tasks(proto::ServiceRef {
            service: service.to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(serde_json::from_str(&r.json)?)
}

pub async fn inspect_json(c: &mut ControlClient<Channel>, service: &str) -> Result<Value> {
    let r = c
        .inspect_service(proto::ServiceRef {
            service: service.to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(serde_json::from_str(&r.json)?)
}

/// Whether the service has converged, and the lines to show.
pub fn progress(service: &Value, tasks: &[Value]) -> (bool, Vec<String>) {
    let current_spec = |t: &Value| t["up_to_date"].as_bool().unwrap_or(false);
    let mode = service["spec"]["mode"]["kind"]
        .as_str()
        .unwrap_or("replicated");
    let job = mode.ends_with("-job");
    let current: Vec<&Value> = tasks
        .iter()
        .filter(|t| current_spec(t) || !job && t["desired_state"] == "running")
        .collect();
    // The newest task of each slot (replicated) or node (global).
    let mut newest: BTreeMap<String, &Value> = BTreeMap::new();
    for t in &current {
        let key = if mode.starts_with("global") {
            t["node_id"].as_str().unwrap_or("").to_string()
        } else {
            format!("{:08}", t["slot"].as_u64().unwrap_or(0))
        };
        let newer = newest
            .get(&key)
            .map(|o| t["created_ms"].as_u64() > o["created_ms"].as_u64())
            .unwrap_or(true);
        if newer {
            newest.insert(key, t);
        }
    }
    let done_state = if job { "complete" } else { "running" };
    let desired = match mode {
        "replicated" => service["spec"]["mode"]["replicas"].as_u64().unwrap_or(0) as usize,
        "replicated-job" => service["spec"]["mode"]["total_completions"]
            .as_u64()
            .unwrap_or(0) as usize,
        // Global: a task per eligible node, counted by the manager before the
        // orchestrator has created them (`status.desired`).
        _ => newest
            .len()
            .max(service["status"]["desired"].as_u64().unwrap_or(0) as usize),
    };
    let done = if job {
        tasks
            .iter()
            .filter(|t| current_spec(t) && t["state"] == "complete")
            .count()
    } else {
        newest
            .values()
            .filter(|t| {
                t["state"] == done_state && t["desired_state"] == "running" && current_spec(t)
            })
            .count()
    };
    let old_running = !job
        && tasks.iter().any(|t| {
            !current_spec(t) && t["state"] == "running" && t["desired_state"] == "running"
        });
    let mut lines = vec![format!("overall progress: {done} out of {desired} tasks")];
    for w in service["waiting_on"].as_array().into_iter().flatten() {
        lines.push(format!("waiting for {}", w.as_str().unwrap_or("")));
    }
    let n = newest.len();
    for t in newest.values() {
        let label = if mode.starts_with("global") {
            let node = t["node"].as_str().unwrap_or("");
            let id = t["node_id"].as_str().unwrap_or("");
            if node.is_empty() { id } else { node }.to_string()
        } else {
            format!("{}/{}", t["slot"], desired.max(n))
        };
        let state = t["state"].as_str().unwrap_or("");
        let note = [
            t["error"].as_str().unwrap_or(""),
            t["message"].as_str().unwrap_or(""),
        ]
        .into_iter()
        .find(|s| {
            !s.is_empty()
                && (state == "pending"
                    || state == "failed"
                    || state == "rejected"
                    || state == "starting")
        })
        .unwrap_or("");
        lines.push(
            format!("{label}: {state:<10} {note}")
                .trim_end()
                .to_string(),
        );
    }
    let converged = done >= desired && !old_running && (desired > 0 || n == 0);
    (converged, lines)
}

/// Progress lines on stdout: redrawn in place on a terminal, printed when they change
/// otherwise.
#[derive(Default)]
struct Screen {
    drawn: usize,
    last: Vec<String>,
}

impl Screen {
    fn show(&mut self, lines: Vec<String>) {
        if lines == self.last {
            return;
        }
        let mut out = std::io::stdout().lock();
        if self.drawn > 0 && std::io::stdout().is_terminal() {
            let _ = write!(out, "\x1b[{}A\x1b[J", self.drawn);
        }
        for l in &lines {
            let _ = writeln!(out, "{l}");
        }
        let _ = out.flush();
        self.drawn = lines.len();
        self.last = lines;
    }
}

/// Waits for convergence, drawing progress.
pub async fn wait_converged(socket: &Path, service: &str) -> Result<()> {
    let mut c = client(socket).await?;
    let mut screen = Screen::default();
    loop {
        let svc = inspect_json(&mut c, service).await?;
        let tasks = tasks_json(&mut c, service).await?;
        let (converged, lines) = progress(&svc, &tasks);
        screen.show(lines);
        if converged {
            let name = svc["name"].as_str().unwrap_or(service);
            println!("verify: Service {name} converged");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How an update (or rollback) being followed stands: `None` while it goes on, `Some`
/// with the outcome once it completed, paused or was rolled back (an error for
/// anything but the outcome the command asked for).
fn update_outcome(service: &Value, rollback: bool) -> Option<Result<String>> {
    let status = &service["update_status"];
    let state = status["state"].as_str().unwrap_or("");
    let message = status["message"].as_str().unwrap_or("");
    let name = service["name"].as_str().unwrap_or("");
    let wanted = if rollback {
        "rollback_completed"
    } else {
        "completed"
    };
    match state {
        "completed" | "rollback_completed" | "paused" | "rollback_paused" if state == wanted => {
            Some(Ok(format!("{state}: {message}")))
        }
        "completed" | "rollback_completed" | "paused" | "rollback_paused" => {
            let what = if rollback { "rollback" } else { "update" };
            Some(Err(Error::Conflict(format!(
                "service {name}: {what} {state}: {message}"
            ))))
        }
        _ => None,
    }
}

/// The lines shown while an update is followed: overall progress from the update
/// status, one line per slot, then the update's state.
pub fn update_progress(service: &Value, tasks: &[Value]) -> Vec<String> {
    let (_, mut lines) = progress(service, tasks);
    let status = &service["update_status"];
    let mode = service["spec"]["mode"]["kind"]
        .as_str()
        .unwrap_or("replicated");
    let updated: Vec<u64> = status["updated"]
        .as_object()
        .map(|m| m.keys().filter_map(|k| k.parse().ok()).collect())
        .unwrap_or_default();
    let total = match mode {
        "replicated" => service["spec"]["mode"]["replicas"].as_u64().unwrap_or(0) as usize,
        _ => lines.len().saturating_sub(1),
    };
    let done = if mode == "replicated" {
        updated
            .iter()
            .filter(|k| (1..=total as u64).contains(*k))
            .count()
    } else {
        updated.len().min(total)
    };
    if let Some(first) = lines.first_mut() {
        *first = format!("overall progress: {done} out of {total} tasks");
    }
    let failed = status["failures"].as_array().map_or(0, Vec::len);
    let mut last = format!(
        "update {}: {}",
        status["state"].as_str().unwrap_or(""),
        status["message"].as_str().unwrap_or("")
    );
    if failed > 0 {
        last.push_str(&format!(" [{failed} failed]"));
    }
    lines.push(last);
    lines
}

/// Follows the update (or, `rollback`, the rollback) that made `version` of `service`,
/// or the one still under way or paused, drawing progress until it completes, pauses or
/// is rolled back. A change that started no update (a scale, a label) while none is
/// under way is followed to convergence instead.
pub async fn wait_update(socket: &Path, service: &str, version: u64, rollback: bool) -> Result<()> {
    let mut c = client(socket).await?;
    let svc = inspect_json(&mut c, service).await?;
    let status = &svc["update_status"];
    let under_way = !matches!(
        status["state"].as_str(),
        None | Some("completed" | "rollback_completed")
    );
    let tracked = under_way || status["version"].as_u64().is_some_and(|v| v >= version);
    if !tracked {
        return wait_converged(socket, service).await;
    }
    let mut screen = Screen::default();
    loop {
        let svc = inspect_json(&mut c, service).await?;
        let tasks = tasks_json(&mut c, service).await?;
        screen.show(update_progress(&svc, &tasks));
        if let Some(outcome) = update_outcome(&svc, rollback) {
            outcome?;
            let name = svc["name"].as_str().unwrap_or(service);
            println!("verify: Service {name} converged");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn id_prefix(s: &str) -> &str {
    &s[..s.len().min(12)]
}

/// Prints services (`service ls` JSON objects) as a table.
pub fn print_services(v: &[Value]) {
    let rows: Vec<Vec<String>> = v
        .iter()
        .map(|s| {
            ["id", "name", "mode", "replicas", "image", "ports"]
                .iter()
                .map(|k| {
                    let x = s[*k].as_str().unwrap_or("").to_string();
                    if *k == "id" {
                        id_prefix(&x).to_string()
                    } else {
                        x
                    }
                })
                .collect()
        })
        .collect();
    print_table(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"], &rows);
}

/// `service inspect --pretty`: one service's JSON (from `InspectService`) as text.
pub fn inspect_text(v: &Value) -> String {
    let str_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let spec = &v["spec"];
    let mode = &spec["mode"];
    let mode_text = match mode["kind"].as_str().unwrap_or_default() {
        "replicated" => format!("replicated, {} replicas", mode["replicas"]),
        "replicated-job" => format!(
            "replicated job, {} completions, {} at a time",
            mode["total_completions"], mode["max_concurrent"]
        ),
        other => other.to_string(),
    };
    let pin = &v["image_digest"];
    let digest = if pin.is_null() {
        "not pinned yet (pinned when the first task runs)".to_string()
    } else {
        str_of(&pin["id"])
    };
    let mut rows = vec![
        ("ID", str_of(&v["id"])),
        ("Name", str_of(&v["name"])),
        ("Mode", mode_text),
        (
            "Tasks",
            format!(
                "{} running of {} desired",
                v["status"]["running"], v["status"]["desired"]
            ),
        ),
        ("Image", str_of(&spec["task"]["container"]["image"])),
        ("Image digest", digest),
    ];
    if !str_of(&pin["repo_digest"]).is_empty() {
        rows.push(("Registry digest", str_of(&pin["repo_digest"])));
    }
    rows.push(("Version", v["version"].to_string()));
    if !str_of(&v["vip"]).is_empty() {
        rows.push(("VIP", str_of(&v["vip"])));
    }
    let ports = str_of(&v["status"]["ports"]);
    if !ports.is_empty() {
        rows.push(("Ports", ports));
    }
    if let Some(u) = v["update_status"].as_object() {
        let state = u.get("state").and_then(Value::as_str).unwrap_or_default();
        let message = u.get("message").and_then(Value::as_str).unwrap_or_default();
        rows.push(("Update status", format!("{state}: {message}")));
    }
    rows.iter()
        .map(|(k, v)| format!("{:<17}{v}\n", format!("{k}:")))
        .collect()
}

/// Prints tasks (`service ps` JSON objects) as a table.
pub fn print_tasks(tasks: &[Value]) {
    let mut prev_slot = String::new();
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let slot_key = format!("{}/{}/{}", t["service"], t["slot"], t["node_id"]);
            let name = if t["slot"].as_u64().unwrap_or(0) > 0 {
                format!("{}.{}", t["service"].as_str().unwrap_or(""), t["slot"])
            } else {
                format!(
                    "{}.{}",
                    t["service"].as_str().unwrap_or(""),
                    id_prefix(t["node_id"].as_str().unwrap_or(""))
                )
            };
            let name = if slot_key == prev_slot {
                format!(" \\_ {name}")
            } else {
                name
            };
            prev_slot = slot_key;
            let err = t["error"].as_str().unwrap_or("");
            let msg = t["message"].as_str().unwrap_or("");
            vec![
                id_prefix(t["id"].as_str().unwrap_or("")).to_string(),
                name,
                t["image"].as_str().unwrap_or("").to_string(),
                t["node"].as_str().unwrap_or("").to_string(),
                t["desired_state"].as_str().unwrap_or("").to_string(),
                t["state"].as_str().unwrap_or("").to_string(),
                if err.is_empty() && t["state"] == "pending" {
                    msg.to_string()
                } else {
                    err.to_string()
                },
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "NAME",
            "IMAGE",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
        ],
        &rows,
    );
}

/// Runs a service command.
pub async fn run(socket: &Path, c: ServiceCommand) -> Result<()> {
    match c {
        ServiceCommand::Create(a) => {
            let spec = create_spec(&a)?;
            let r = client(socket)
                .await?
                .create_service(proto::ServiceSpecRequest {
                    service: String::new(),
                    spec_json: serde_json::to_string(&spec)?,
                })
                .await?
                .into_inner();
            println!("{}", r.id);
            if !a.common.detach {
                wait_converged(socket, &r.id).await?;
            }
        }
        ServiceCommand::Update(a) => {
            let mut c = client(socket).await?;
            let current = inspect_json(&mut c, &a.service).await?;
            let spec: ServiceSpec = serde_json::from_value(current["spec"].clone())?;
            let spec = update_spec(spec, &a)?;
            let r = c
                .update_service(proto::ServiceSpecRequest {
                    service: a.service.clone(),
                    spec_json: serde_json::to_string(&spec)?,
                })
                .await?
                .into_inner();
            println!("{}", r.service);
            if !a.common.detach {
                wait_update(socket, &r.id, r.version, false).await?;
            }
        }
        ServiceCommand::Rollback { detach, service } => {
            let r = client(socket)
                .await?
                .rollback_service(proto::ServiceRef {
                    service,
                    ..Default::default()
                })
                .await?
                .into_inner();
            println!("{}", r.service);
            if !detach {
                wait_update(socket, &r.id, r.version, true).await?;
            }
        }
        ServiceCommand::Scale { detach, pairs } => {
            let mut c = client(socket).await?;
            let mut ids = vec![];
            for p in &pairs {
                let Some((name, n)) = p.split_once('=') else {
                    return Err(Error::InvalidInput(format!(
                        "scale: expected SERVICE=REPLICAS, found {p:?}"
                    )));
                };
                let n: u64 = n.parse().map_err(|_| {
                    Error::InvalidInput(format!("scale: {n:?} is not a number of replicas"))
                })?;
                let r = c
                    .scale_service(proto::ScaleRequest {
                        service: name.to_string(),
                        replicas: n,
                    })
                    .await?
                    .into_inner();
                println!("{} scaled to {n}", r.service);
                ids.push(r.id);
            }
            if !detach {
                for id in ids {
                    wait_converged(socket, &id).await?;
                }
            }
        }
        ServiceCommand::Rm { services } => {
            let mut c = client(socket).await?;
            for s in services {
                c.remove_service(proto::ServiceRef {
                    service: s.clone(),
                    ..Default::default()
                })
                .await?;
                println!("{s}");
            }
        }
        ServiceCommand::Ls { format } => {
            let r = client(socket)
                .await?
                .list_services(proto::Empty {})
                .await?
                .into_inner();
            let v: Vec<Value> = serde_json::from_str(&r.json)?;
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            print_services(&v);
        }
        ServiceCommand::Ps { service, format } => {
            let tasks = tasks_json(&mut client(socket).await?, &service).await?;
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&tasks)?);
                return Ok(());
            }
            print_tasks(&tasks);
        }
        ServiceCommand::Inspect {
            services,
            format,
            pretty,
        } => {
            let mut c = client(socket).await?;
            let mut out = vec![];
            for s in services {
                out.push(inspect_json(&mut c, &s).await?);
            }
            if pretty || format == Format::Table {
                let texts: Vec<String> = out.iter().map(inspect_text).collect();
                print!("{}", texts.join("\n"));
            } else {
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
        }
        ServiceCommand::Logs {
            follow,
            tail,
            timestamps,
            service,
        } => {
            let tail: i64 = if tail == "all" {
                -1
            } else {
                tail.parse().map_err(|_| {
                    Error::InvalidInput(format!("--tail: expected all or a number, found {tail:?}"))
                })?
            };
            let mut stream = client(socket)
                .await?
                .service_logs(proto::LogsRequest {
                    service,
                    follow,
                    tail,
                    timestamps,
                    task_ids: vec![],
                })
                .await?
                .into_inner();
            while let Some(line) = stream.message().await? {
                let text = format!("{}    | {}", line.source, line.line.trim_end_matches('\n'));
                if line.stderr {
                    eprintln!("{text}");
                } else {
                    println!("{text}");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_text_shows_the_pinned_digest() {
        let id = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let mut v = serde_json::json!({
            "id": "abc",
            "name": "web",
            "version": 3,
            "vip": "10.233.0.2",
            "spec": {"mode": {"kind": "replicated", "replicas": 2},
                     "task": {"container": {"image": "app:1"}}},
            "status": {"running": 2, "desired": 2, "ports": "*:8080->80/tcp"},
            "update_status": null,
            "image_digest": {"image": "app:1", "id": id, "repo_digest": ""},
        });
        assert_eq!(
            inspect_text(&v),
            format!(
                "ID:              abc\n\
                 Name:            web\n\
                 Mode:            replicated, 2 replicas\n\
                 Tasks:           2 running of 2 desired\n\
                 Image:           app:1\n\
                 Image digest:    {id}\n\
                 Version:         3\n\
                 VIP:             10.233.0.2\n\
                 Ports:           *:8080->80/tcp\n"
            )
        );
        v["image_digest"] = Value::Null;
        assert!(inspect_text(&v)
            .contains("Image digest:    not pinned yet (pinned when the first task runs)\n"));
    }

    #[test]
    fn publish_forms() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(
            (p.published, p.target, p.protocol, p.mode),
            (8080, 80, Protocol::Tcp, PublishMode::Ingress)
        );
        let p = parse_publish("53:53/udp").unwrap();
        assert_eq!(p.protocol, Protocol::Udp);
        let p = parse_publish("mode=host,published=8080,target=80").unwrap();
        assert_eq!((p.published, p.mode), (8080, PublishMode::Host));
        assert_eq!(parse_publish("80").unwrap().published, 0);
        let e = parse_publish("70000:80").unwrap_err().to_string();
        assert_eq!(e, "--publish: port 70000 is out of range 1-65535");
        let e = parse_publish("8080:80/sctp").unwrap_err().to_string();
        assert!(e.contains("tcp or udp"), "{e}");
    }

    #[test]
    fn mounts_and_sizes() {
        let m = parse_mount("type=bind,source=/a,target=/b,readonly").unwrap();
        assert_eq!(
            (m.kind, m.readonly, m.source.as_str()),
            (MountKind::Bind, true, "/a")
        );
        assert!(parse_mount("type=nfs,target=/b").is_err());
        assert_eq!(parse_bytes("f", "64M").unwrap(), 64 * 1024 * 1024);
        assert_eq!(parse_bytes("f", "1g").unwrap(), 1 << 30);
        assert!(parse_bytes("f", "lots").is_err());
    }

    #[test]
    fn an_update_is_followed_by_its_status_and_ends_in_error_unless_it_completed() {
        let task = |slot: u64, state: &str, version: u64| {
            serde_json::json!({
                "slot": slot, "state": state, "desired_state": "running",
                "up_to_date": true, "created_ms": 1, "error": "", "message": "",
                "spec_version": version,
            })
        };
        let svc = |state: &str, message: &str| {
            serde_json::json!({
                "name": "web",
                "spec": {"mode": {"kind": "replicated", "replicas": 3}},
                "update_status": {
                    "state": state, "message": message, "version": 2,
                    "updated": {"1": 10, "2": 0, "7": 3}, "failures": [],
                },
            })
        };
        let tasks = [
            task(1, "running", 2),
            task(2, "running", 1),
            task(3, "starting", 2),
        ];
        let lines = update_progress(&svc("updating", "update in progress"), &tasks);
        assert_eq!(
            lines,
            [
                "overall progress: 2 out of 3 tasks",
                "1/3: running",
                "2/3: running",
                "3/3: starting",
                "update updating: update in progress",
            ]
        );
        assert!(update_outcome(&svc("updating", ""), false).is_none());
        assert!(update_outcome(&svc("rollback_started", ""), false).is_none());
        assert!(matches!(
            update_outcome(&svc("completed", "update completed"), false),
            Some(Ok(_))
        ));
        assert!(matches!(
            update_outcome(&svc("rollback_completed", "x"), true),
            Some(Ok(_))
        ));
        for (state, rollback) in [
            ("paused", false),
            ("rollback_completed", false),
            ("rollback_paused", false),
            ("rollback_paused", true),
        ] {
            let e = update_outcome(
                &svc(state, "task t1 (slot 1) failed: exited with code 3"),
                rollback,
            )
            .expect("ended")
            .unwrap_err()
            .to_string();
            let what = if rollback { "rollback" } else { "update" };
            assert_eq!(
                e,
                format!("service web: {what} {state}: task t1 (slot 1) failed: exited with code 3")
            );
        }
    }

    #[test]
    fn a_global_service_converges_once_every_eligible_node_runs_its_task() {
        let svc = serde_json::json!({
            "name": "agent",
            "spec": {"mode": {"kind": "global"}},
            "status": {"desired": 2},
        });
        let task = |node: &str, state: &str| {
            serde_json::json!({
                "node_id": node, "node": node, "state": state, "desired_state": "running",
                "up_to_date": true, "created_ms": 1, "error": "", "message": "",
            })
        };
        // Before the orchestrator's first pass there is no task: not converged.
        let (done, lines) = progress(&svc, &[]);
        assert!(!done);
        assert_eq!(lines, ["overall progress: 0 out of 2 tasks"]);
        let (done, _) = progress(&svc, &[task("a", "running")]);
        assert!(!done);
        let (done, lines) = progress(&svc, &[task("a", "running"), task("b", "running")]);
        assert!(done);
        assert_eq!(lines[0], "overall progress: 2 out of 2 tasks");
        // No eligible node at all: nothing to wait for.
        let none = serde_json::json!({
            "name": "agent",
            "spec": {"mode": {"kind": "global"}},
            "status": {"desired": 0},
        });
        assert!(progress(&none, &[]).0);
    }
}
