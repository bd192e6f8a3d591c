//! What each task of a service runs: the container (image, command, mounts, health
//! check), its resources, placement and restart policy.

use super::*;

/// When a task that stopped is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    /// Always (the default for services).
    #[default]
    Any,
    /// Only when it failed (non-zero exit, unhealthy, could not start).
    OnFailure,
    /// Never.
    None,
}

impl RestartCondition {
    /// `any`, `on-failure` or `none`, as in flags, compose files and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            RestartCondition::Any => "any",
            RestartCondition::OnFailure => "on-failure",
            RestartCondition::None => "none",
        }
    }
}

impl Words for RestartCondition {
    const EXPECTED: &'static str = "any, on-failure or none";
}

impl std::str::FromStr for RestartCondition {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "any" => Ok(RestartCondition::Any),
            "on-failure" => Ok(RestartCondition::OnFailure),
            "none" => Ok(RestartCondition::None),
            _ => Err(Self::unknown(s)),
        }
    }
}

impl fmt::Display for RestartCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The restart policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// When to restart.
    pub condition: RestartCondition,
    /// Wait between a task's end and its replacement's start, ms (default 5000).
    pub delay_ms: u64,
    /// Restarts allowed within `window_ms` (0 = unlimited).
    pub max_attempts: u64,
    /// The window over which attempts are counted, ms (0 = the whole life).
    pub window_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            condition: RestartCondition::Any,
            delay_ms: 5000,
            max_attempts: 0,
            window_ms: 0,
        }
    }
}

/// Kind of a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host path.
    Bind,
    /// A named Docker volume.
    Volume,
    /// A tmpfs.
    Tmpfs,
}

impl MountKind {
    /// `bind`, `volume` or `tmpfs`.
    pub fn as_str(&self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

impl Words for MountKind {
    const EXPECTED: &'static str = "bind, volume or tmpfs";
}

impl std::str::FromStr for MountKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bind" => Ok(MountKind::Bind),
            "volume" => Ok(MountKind::Volume),
            "tmpfs" => Ok(MountKind::Tmpfs),
            _ => Err(Self::unknown(s)),
        }
    }
}

impl fmt::Display for MountKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mount into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// bind, volume or tmpfs.
    pub kind: MountKind,
    /// Host path or volume name (empty for tmpfs or an anonymous volume).
    pub source: String,
    /// Path in the container.
    pub target: String,
    /// Read-only.
    pub readonly: bool,
    /// Volume driver (volume only; empty = local).
    #[serde(default)]
    pub driver: String,
    /// Volume driver options.
    #[serde(default)]
    pub driver_opts: BTreeMap<String, String>,
    /// A named local volume that follows the task when orc moves it to another node
    /// (`--mount-policy follow`; see [`crate::store::volume`]).
    #[serde(default)]
    pub follow: bool,
    /// With `follow`: the old node keeps its copy after a move (`follow,keep`).
    #[serde(default)]
    pub keep: bool,
}

impl Mount {
    /// A mount of `kind` from `source` at `target`: writable, the local driver, staying
    /// on its node.
    pub fn new(kind: MountKind, source: impl Into<String>, target: impl Into<String>) -> Mount {
        Mount {
            kind,
            source: source.into(),
            target: target.into(),
            readonly: false,
            driver: String::new(),
            driver_opts: BTreeMap::new(),
            follow: false,
            keep: false,
        }
    }

    /// A named local volume that follows its task (`--mount-policy follow`).
    pub fn following(source: impl Into<String>, target: impl Into<String>) -> Mount {
        Mount {
            follow: true,
            ..Mount::new(MountKind::Volume, source, target)
        }
    }

    /// True for a named volume of the local driver (the only kind that can follow).
    pub fn is_named_local_volume(&self) -> bool {
        self.kind == MountKind::Volume
            && !self.source.is_empty()
            && (self.driver.is_empty() || self.driver == "local")
            && self.driver_opts.is_empty()
    }
}

/// A health check; `test` empty means "use the image's".
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HealthCheck {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]` (disabled).
    pub test: Vec<String>,
    /// Between checks, ms (0 = Docker's default).
    pub interval_ms: u64,
    /// One check's limit, ms.
    pub timeout_ms: u64,
    /// Failures in a row before unhealthy.
    pub retries: u64,
    /// Failures during this start period do not count, ms.
    pub start_period_ms: u64,
}

/// The container a task runs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Image reference.
    pub image: String,
    /// Entrypoint override (empty = the image's).
    pub entrypoint: Vec<String>,
    /// Command / arguments (empty = the image's).
    pub args: Vec<String>,
    /// `K=V` environment.
    pub env: Vec<String>,
    /// Labels on the container itself.
    pub labels: BTreeMap<String, String>,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// User (empty = the image's).
    pub user: String,
    /// Working directory (empty = the image's).
    pub workdir: String,
    /// Health check: `None` = the image's; `Some(test = ["NONE"])` = disabled.
    pub healthcheck: Option<HealthCheck>,
    /// SIGTERM, then SIGKILL after this, ms.
    pub stop_grace_period_ms: u64,
    /// Logging driver (empty = the engine's default).
    #[serde(default)]
    pub log_driver: String,
    /// Logging driver options.
    #[serde(default)]
    pub log_opts: BTreeMap<String, String>,
    /// Docker's container options (host name, capabilities, sysctls, ...).
    #[serde(default)]
    pub options: ContainerOptions,
}

/// Reservations (used for placement) and limits (enforced by Docker).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// CPUs reserved, in 1e-9 CPUs.
    pub reserve_nano_cpus: u64,
    /// Memory reserved, bytes.
    pub reserve_memory_bytes: u64,
    /// CPU limit, 1e-9 CPUs (0 = none).
    pub limit_nano_cpus: u64,
    /// Memory limit, bytes (0 = none).
    pub limit_memory_bytes: u64,
    /// Discrete generic resources reserved (`gpu` → 1), counted against what each node
    /// declares (`orc daemon --node-generic-resource`) and passed to the container as
    /// `DOCKER_RESOURCE_<KIND>=<N>`.
    #[serde(default)]
    pub generic_resources: BTreeMap<String, u64>,
}

/// Where tasks may run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Placement {
    /// Constraints such as `node.labels.zone==a` or `node.facts.load1<2`, parsed
    /// (stored as their text; see [`crate::store::constraint`]).
    pub constraints: Vec<crate::store::Constraint>,
    /// Spread preferences: the label path after `spread=` (`node.labels.zone`), parsed
    /// (stored as their text).
    pub preferences: Vec<crate::store::Preference>,
    /// At most this many tasks of the service per node (0 = no limit).
    pub max_replicas_per_node: u64,
}

/// Everything a task needs to run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The container.
    pub container: ContainerSpec,
    /// Resources.
    pub resources: Resources,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Placement.
    pub placement: Placement,
    /// Bumped by `service update --force` to replace tasks with an unchanged spec.
    pub force_update: u64,
    /// Bumped by `service update --force-new-volume`: a task whose following volume is
    /// on a node that is down may start with an empty one ([`crate::store::volume`]).
    #[serde(default)]
    pub force_new_volume: u64,
    /// Secrets its container gets, under `/run/secrets/` ([`crate::store::secret`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::store::secret::SecretRef>,
    /// Configs its container gets, read-only at their target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<crate::store::secret::SecretRef>,
}

impl TaskSpec {
    /// The references of `kind`.
    pub fn refs(&self, kind: crate::store::secret::Kind) -> &[crate::store::secret::SecretRef] {
        match kind {
            crate::store::secret::Kind::Secret => &self.secrets,
            crate::store::secret::Kind::Config => &self.configs,
        }
    }

    /// The references of `kind`, to change.
    pub fn refs_mut(
        &mut self,
        kind: crate::store::secret::Kind,
    ) -> &mut Vec<crate::store::secret::SecretRef> {
        match kind {
            crate::store::secret::Kind::Secret => &mut self.secrets,
            crate::store::secret::Kind::Config => &mut self.configs,
        }
    }
}
