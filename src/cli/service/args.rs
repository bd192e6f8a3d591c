//! The flags of `service create` and `service update`, and the parsers of their
//! values (`--publish`, `--mount`, sizes, durations, `K=V`). Each error names the flag.

use clap::Args;

use super::super::parse_duration;
use crate::error::{Error, Result};
use crate::store::service::*;

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
    /// Docker's container options shared by create and update.
    #[command(flatten)]
    pub options: super::options::OptionFlags,
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
    /// follow: named local volumes move with their task to another node (follow,keep:
    /// the old node keeps its copy); none: they stay behind, as in Swarm.
    #[arg(long = "mount-policy")]
    pub mount_policy: Option<String>,
    /// Placement constraint, e.g. node.labels.zone==a or node.facts.load1<2.
    #[arg(long)]
    pub constraint: Vec<String>,
    /// Placement preference spread=node.labels.NAME, spread=engine.labels.NAME, or
    /// spread=node.id (node.hostname, node.role, node.platform.os, node.platform.arch).
    #[arg(long = "placement-pref")]
    pub placement_pref: Vec<String>,
    /// A network to join: NAME or name=NAME,alias=ALIAS[,alias=...]; repeatable
    /// (none: the cluster's built-in `default` network).
    #[arg(long = "network")]
    pub network: Vec<String>,
    #[command(flatten)]
    pub common: CommonFlags,
    /// Docker's container options of create.
    #[command(flatten)]
    pub options: super::options::CreateOptionFlags,
    /// Image.
    pub image: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
    /// A secret at /run/secrets/TARGET: NAME or
    /// source=NAME[,target=T,uid=U,gid=G,mode=0400]; repeatable.
    #[arg(long = "secret")]
    pub secret: Vec<String>,
    /// A config at its target (default /NAME): NAME or
    /// source=NAME[,target=/PATH,uid=U,gid=G,mode=0444]; repeatable.
    #[arg(long = "config")]
    pub config: Vec<String>,
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
    /// follow, follow,keep or none: for every named local volume of the service.
    #[arg(long = "mount-policy")]
    pub mount_policy: Option<String>,
    /// Add a constraint.
    #[arg(long = "constraint-add")]
    pub constraint_add: Vec<String>,
    /// Remove a constraint.
    #[arg(long = "constraint-rm")]
    pub constraint_rm: Vec<String>,
    /// Join a network: NAME or name=NAME,alias=ALIAS; repeatable (a service on the
    /// built-in `default` network alone stays on it).
    #[arg(long = "network-add")]
    pub network_add: Vec<String>,
    /// Leave a network (name); repeatable.
    #[arg(long = "network-rm")]
    pub network_rm: Vec<String>,
    /// Replace the tasks even if nothing changed.
    #[arg(long)]
    pub force: bool,
    /// Let a task whose following volume is on a node that is down start with an empty
    /// volume (the old node keeps its copy).
    #[arg(long = "force-new-volume")]
    pub force_new_volume: bool,
    #[command(flatten)]
    pub common: CommonFlags,
    /// Docker's container options of update.
    #[command(flatten)]
    pub options: super::options::UpdateOptionFlags,
    /// Service name or id.
    pub service: String,
    /// Add (or replace, by name) a secret: NAME or source=NAME,target=...; repeatable.
    #[arg(long = "secret-add")]
    pub secret_add: Vec<String>,
    /// Remove a secret (name); repeatable.
    #[arg(long = "secret-rm")]
    pub secret_rm: Vec<String>,
    /// Add (or replace, by name) a config: NAME or source=NAME,target=...; repeatable.
    #[arg(long = "config-add")]
    pub config_add: Vec<String>,
    /// Remove a config (name); repeatable.
    #[arg(long = "config-rm")]
    pub config_rm: Vec<String>,
}

pub(super) fn kv(flag: &str, s: &str) -> Result<(String, String)> {
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

pub(super) fn parse_cpus(flag: &str, s: &str) -> Result<u64> {
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

pub(super) fn port_num(flag: &str, s: &str) -> Result<u16> {
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
pub(super) fn word<T: Words>(flag: &str, s: &str) -> Result<T> {
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

pub(super) fn protocol(flag: &str, s: &str) -> Result<Protocol> {
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
    let mut m = Mount::new(MountKind::Volume, "", "");
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
pub(super) fn failure_action(flag: &str, s: &str) -> Result<FailureAction> {
    match word(flag, s) {
        Ok(FailureAction::Rollback) | Err(_) if !flag.starts_with("--update") => Err(
            Error::InvalidInput(format!("{flag}: expected pause or continue, found {s:?}")),
        ),
        r => r,
    }
}

pub(super) fn order(flag: &str, s: &str) -> Result<UpdateOrder> {
    word(flag, s)
}

pub(super) fn ms(flag: &str, s: &str) -> Result<u64> {
    Ok(parse_duration(flag, s)?.as_millis() as u64)
}

pub(super) fn read_env_file(path: &str) -> Result<Vec<String>> {
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
