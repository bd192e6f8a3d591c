//! Services: what the operator asked for.
//!
//! A [`ServiceSpec`] is validated at the control API's door ([`ServiceSpec::validate`])
//! and never changes inside the store except through a whole new spec (`service
//! update`), which bumps [`Service::version`]. Tasks carry a copy of the spec they were
//! made from, so an update is visible as tasks whose `spec_version` is behind. How a
//! rolling update stands is an [`UpdateStatus`], kept beside the service (see
//! [`crate::store`]) and driven by the orchestrator.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An enum written as one of a few words, the same in flags, compose files and JSON:
/// `FromStr` reads a word, `as_str` (and `Display`) writes it back, and [`Words::EXPECTED`]
/// lists the words for messages, so the CLI (`--restart-condition: expected ...`) and
/// the compose loader (`services.web...: expected ...`) name them alike.
pub trait Words: std::str::FromStr<Err = Error> + Sized {
    /// The words, for a message: `any, on-failure or none`.
    const EXPECTED: &'static str;

    /// The error for a word that names no value: `expected WORDS, found "x"`.
    fn unknown(found: &str) -> Error {
        Error::InvalidInput(format!("expected {}, found {found:?}", Self::EXPECTED))
    }
}

/// A service's identity: 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceId(pub String);

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ServiceId {
    /// A fresh random id.
    pub fn random() -> Self {
        ServiceId(format!("{:016x}", rand::random::<u64>()))
    }
}

/// How many tasks a service runs, and for how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ServiceMode {
    /// `replicas` long-running tasks, each in its own slot 1..=replicas.
    Replicated {
        /// How many.
        replicas: u64,
    },
    /// One long-running task on every eligible node.
    Global,
    /// Tasks that run to completion: `total_completions` successes, at most
    /// `max_concurrent` at a time.
    ReplicatedJob {
        /// Tasks running at once.
        max_concurrent: u64,
        /// Successful completions wanted.
        total_completions: u64,
    },
    /// One run-to-completion task on every eligible node.
    GlobalJob,
}

impl Words for ServiceMode {
    const EXPECTED: &'static str = "replicated, global, replicated-job or global-job";
}

/// A mode's word, with the counts of a bare word: 1 replica; a job of 1 completion,
/// 1 at a time.
impl std::str::FromStr for ServiceMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "replicated" => Ok(ServiceMode::Replicated { replicas: 1 }),
            "global" => Ok(ServiceMode::Global),
            "replicated-job" => Ok(ServiceMode::ReplicatedJob {
                max_concurrent: 1,
                total_completions: 1,
            }),
            "global-job" => Ok(ServiceMode::GlobalJob),
            _ => Err(Self::unknown(s)),
        }
    }
}

impl fmt::Display for ServiceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl ServiceMode {
    /// The name used by the CLI and in JSON (`replicated`, `global`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            ServiceMode::Replicated { .. } => "replicated",
            ServiceMode::Global => "global",
            ServiceMode::ReplicatedJob { .. } => "replicated-job",
            ServiceMode::GlobalJob => "global-job",
        }
    }

    /// True for jobs (tasks that complete are not restarted).
    pub fn is_job(&self) -> bool {
        matches!(
            self,
            ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob
        )
    }
}

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

/// Transport protocol of a port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl Words for Protocol {
    const EXPECTED: &'static str = "tcp or udp";
}

impl std::str::FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => Err(Self::unknown(s)),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a port is published.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// On every node, through the routing mesh.
    #[default]
    Ingress,
    /// On the task's own node only.
    Host,
}

impl PublishMode {
    /// `ingress` or `host`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PublishMode::Ingress => "ingress",
            PublishMode::Host => "host",
        }
    }
}

impl Words for PublishMode {
    const EXPECTED: &'static str = "ingress or host";
}

impl std::str::FromStr for PublishMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ingress" => Ok(PublishMode::Ingress),
            "host" => Ok(PublishMode::Host),
            _ => Err(Self::unknown(s)),
        }
    }
}

impl fmt::Display for PublishMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the mesh tells the backend who the client is (HAProxy's PROXY protocol).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// Nothing is added: the backend sees the mesh's address.
    #[default]
    None,
    /// A text header (`PROXY TCP4 …\r\n`) before the client's bytes.
    V1,
    /// The binary header.
    V2,
}

impl ProxyProtocol {
    /// `none`, `v1` or `v2`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProxyProtocol::None => "none",
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
        }
    }
}

impl Words for ProxyProtocol {
    const EXPECTED: &'static str = "v1, v2 or none";
}

impl std::str::FromStr for ProxyProtocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(ProxyProtocol::None),
            "v1" | "1" => Ok(ProxyProtocol::V1),
            "v2" | "2" => Ok(ProxyProtocol::V2),
            _ => Err(Self::unknown(s)),
        }
    }
}

impl fmt::Display for ProxyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The label that names a service's stack (as `docker stack deploy` sets it).
pub const STACK_LABEL: &str = "com.docker.stack.namespace";

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortConfig {
    /// tcp or udp.
    pub protocol: Protocol,
    /// The container's port.
    pub target: u16,
    /// The port on the nodes (0 = none: the mesh or an ephemeral port).
    pub published: u16,
    /// ingress or host.
    pub mode: PublishMode,
    /// PROXY protocol header sent to the backend (ingress TCP ports only).
    #[serde(default)]
    pub proxy_protocol: ProxyProtocol,
}

impl PortConfig {
    /// Published on every node through the routing mesh: a published port in ingress
    /// mode. Such a port is cluster-wide: one service at a time holds it.
    pub fn is_ingress(&self) -> bool {
        self.published != 0 && self.mode == PublishMode::Ingress
    }

    /// Published on the task's own node at a fixed port: a published port in host mode.
    /// Such a port is node-wide: one task per node holds it (the scheduler's filter).
    pub fn is_host_published(&self) -> bool {
        self.published != 0 && self.mode == PublishMode::Host
    }
}

/// An ingress port a spec asks for that another service already publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortConflict<'a> {
    /// The port asked for.
    pub port: &'a PortConfig,
    /// The service that holds it.
    pub holder: &'a Service,
}

/// The cluster-wide port rule, in one place: the first ingress port of `spec` (in the
/// spec's order) that one of `others` already publishes in ingress mode, with the first
/// such service. Host-mode ports never conflict here: they are node-wide, and the
/// scheduler places their tasks apart.
pub fn ingress_port_conflict<'a>(
    spec: &'a ServiceSpec,
    others: &[&'a Service],
) -> Option<PortConflict<'a>> {
    spec.ports.iter().filter(|p| p.is_ingress()).find_map(|p| {
        others
            .iter()
            .find(|o| {
                o.spec.ports.iter().any(|q| {
                    q.is_ingress() && q.published == p.published && q.protocol == p.protocol
                })
            })
            .map(|holder| PortConflict { port: p, holder })
    })
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
}

/// Reservations (used for placement) and limits (enforced by Docker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// CPUs reserved, in 1e-9 CPUs.
    pub reserve_nano_cpus: u64,
    /// Memory reserved, bytes.
    pub reserve_memory_bytes: u64,
    /// CPU limit, 1e-9 CPUs (0 = none).
    pub limit_nano_cpus: u64,
    /// Memory limit, bytes (0 = none).
    pub limit_memory_bytes: u64,
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
}

/// What a failed update (or rollback) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    /// Stop updating.
    #[default]
    Pause,
    /// Carry on.
    Continue,
    /// Go back to the previous spec.
    Rollback,
}

impl FailureAction {
    /// `pause`, `continue` or `rollback`.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureAction::Pause => "pause",
            FailureAction::Continue => "continue",
            FailureAction::Rollback => "rollback",
        }
    }
}

impl Words for FailureAction {
    const EXPECTED: &'static str = "pause, continue or rollback";
}

impl std::str::FromStr for FailureAction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "pause" => Ok(FailureAction::Pause),
            "continue" => Ok(FailureAction::Continue),
            "rollback" => Ok(FailureAction::Rollback),
            _ => Err(Self::unknown(s)),
        }
    }
}

impl fmt::Display for FailureAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Order of replacement in an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Stop the old task, then start the new one.
    #[default]
    StopFirst,
    /// Start the new task, then stop the old one.
    StartFirst,
}

impl UpdateOrder {
    /// `stop-first` or `start-first`.
    pub fn as_str(&self) -> &'static str {
        match self {
            UpdateOrder::StopFirst => "stop-first",
            UpdateOrder::StartFirst => "start-first",
        }
    }
}

impl Words for UpdateOrder {
    const EXPECTED: &'static str = "stop-first or start-first";
}

impl std::str::FromStr for UpdateOrder {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "stop-first" => Ok(UpdateOrder::StopFirst),
            "start-first" => Ok(UpdateOrder::StartFirst),
            _ => Err(Self::unknown(s)),
        }
    }
}

impl fmt::Display for UpdateOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How updates (or rollbacks) proceed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Tasks replaced at once (0 = all).
    pub parallelism: u64,
    /// Pause between batches, ms.
    pub delay_ms: u64,
    /// On failure.
    pub failure_action: FailureAction,
    /// How long a new task is watched after it starts, ms.
    pub monitor_ms: u64,
    /// Fraction of failed tasks tolerated.
    pub max_failure_ratio: f64,
    /// Order.
    pub order: UpdateOrder,
}

impl Eq for UpdateConfig {}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay_ms: 0,
            failure_action: FailureAction::Pause,
            monitor_ms: 5000,
            max_failure_ratio: 0.0,
            order: UpdateOrder::StopFirst,
        }
    }
}

/// When a dependency counts as ready (compose's `depends_on` conditions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DependCondition {
    /// A task of the dependency is running.
    #[default]
    ServiceStarted,
    /// A task of the dependency is running and healthy (or running, if it has no
    /// health check).
    ServiceHealthy,
    /// The dependency ran to completion: a job whose completions are all done, or a
    /// service with a task that exited 0.
    ServiceCompletedSuccessfully,
}

impl DependCondition {
    /// The compose name (`service_started`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            DependCondition::ServiceStarted => "service_started",
            DependCondition::ServiceHealthy => "service_healthy",
            DependCondition::ServiceCompletedSuccessfully => "service_completed_successfully",
        }
    }
}

impl Words for DependCondition {
    const EXPECTED: &'static str =
        "service_started, service_healthy or service_completed_successfully";
}

impl std::str::FromStr for DependCondition {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "service_started" => Ok(DependCondition::ServiceStarted),
            "service_healthy" => Ok(DependCondition::ServiceHealthy),
            "service_completed_successfully" => Ok(DependCondition::ServiceCompletedSuccessfully),
            _ => Err(Self::unknown(s)),
        }
    }
}

impl fmt::Display for DependCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A service that must be ready before this one's first tasks start.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dependency {
    /// The full name of the service depended on (`STACK_db`).
    pub service: String,
    /// When it counts as ready.
    pub condition: DependCondition,
}

/// How a service's name resolves inside the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// The name resolves to the service's VIP, balanced by the mesh.
    #[default]
    Vip,
    /// The name resolves to the VIPs of its tasks (DNS round robin).
    Dnsrr,
}

impl EndpointMode {
    /// `vip` or `dnsrr`.
    pub fn as_str(&self) -> &'static str {
        match self {
            EndpointMode::Vip => "vip",
            EndpointMode::Dnsrr => "dnsrr",
        }
    }
}

impl Words for EndpointMode {
    const EXPECTED: &'static str = "vip or dnsrr";
}

impl std::str::FromStr for EndpointMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "vip" => Ok(EndpointMode::Vip),
            "dnsrr" => Ok(EndpointMode::Dnsrr),
            _ => Err(Self::unknown(s)),
        }
    }
}

impl fmt::Display for EndpointMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Unique name.
    pub name: String,
    /// Service labels.
    pub labels: BTreeMap<String, String>,
    /// Mode.
    pub mode: ServiceMode,
    /// The tasks.
    pub task: TaskSpec,
    /// Published ports.
    pub ports: Vec<PortConfig>,
    /// Ports reachable inside the cluster only (`--expose`).
    pub expose: Vec<u16>,
    /// Rolling updates.
    pub update: UpdateConfig,
    /// Rollbacks.
    pub rollback: UpdateConfig,
    /// Services that must be ready before this one's first tasks start.
    #[serde(default)]
    pub depends_on: Vec<Dependency>,
    /// How the name resolves: the VIP, or the tasks' addresses.
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
}

/// A service in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Identity.
    pub id: ServiceId,
    /// The spec in force.
    pub spec: ServiceSpec,
    /// The spec before the last update (for rollback).
    pub previous_spec: Option<ServiceSpec>,
    /// Bumped by every spec change; tasks record the version they were made from.
    pub version: u64,
    /// Its virtual IP (empty: none), allocated when the creation is applied.
    #[serde(default)]
    pub vip: String,
    /// Unix ms.
    pub created_ms: u64,
    /// Unix ms.
    pub updated_ms: u64,
}

/// Where a service's rolling update (or rollback) stands. JSON: the lower-case names
/// `updating`, `paused`, `completed`, `rollback_started`, `rollback_paused`,
/// `rollback_completed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    /// Tasks are being replaced with the new spec.
    Updating,
    /// Failures went past the ratio with failure action pause: no new replacement starts.
    Paused,
    /// Every task runs the new spec (or failed within the tolerated ratio).
    Completed,
    /// The previous spec was put back; tasks are being replaced with it.
    RollbackStarted,
    /// The rollback failed past its ratio: no new replacement starts.
    RollbackPaused,
    /// Every task runs the previous spec again.
    RollbackCompleted,
}

impl UpdateState {
    /// The lower-case name, as in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            UpdateState::Updating => "updating",
            UpdateState::Paused => "paused",
            UpdateState::Completed => "completed",
            UpdateState::RollbackStarted => "rollback_started",
            UpdateState::RollbackPaused => "rollback_paused",
            UpdateState::RollbackCompleted => "rollback_completed",
        }
    }

    /// True while tasks are being replaced (`updating`, `rollback_started`).
    pub fn is_active(&self) -> bool {
        matches!(self, UpdateState::Updating | UpdateState::RollbackStarted)
    }

    /// True once nothing more happens (`completed`, `rollback_completed`).
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            UpdateState::Completed | UpdateState::RollbackCompleted
        )
    }

    /// True for the states of a rollback.
    pub fn is_rollback(&self) -> bool {
        matches!(
            self,
            UpdateState::RollbackStarted
                | UpdateState::RollbackPaused
                | UpdateState::RollbackCompleted
        )
    }
}

impl fmt::Display for UpdateState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A unit of an update whose new task failed before it counted as updated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateFailure {
    /// The unit: a replica slot, or a node id for global services.
    pub unit: u64,
    /// The task that failed.
    pub task_id: super::TaskId,
    /// Why (`exited with code 3`, `unhealthy`, the rejection).
    pub reason: String,
    /// When it was counted, unix ms (the orchestrator's clock).
    pub at_ms: u64,
}

/// A service's update (or rollback) and its progress, written by the control API when
/// an update starts (with the spec change) and by the orchestrator as it goes. Stored
/// beside the service (`update/<id>`, see [`crate::store`]), so a new leader resumes
/// where the last one was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// The state.
    pub state: UpdateState,
    /// What happened, for the operator (names the failing task and why).
    pub message: String,
    /// When the update (or rollback) started, unix ms.
    pub started_ms: u64,
    /// When it completed, unix ms.
    pub completed_ms: Option<u64>,
    /// The service version the update rolls out: tasks of the service's spec made from
    /// this version on were made by it, and their failures count.
    pub version: u64,
    /// Units counted as updated: unit (replica slot, or node id for global services) →
    /// when, unix ms; 0 for a unit that needed no new task.
    #[serde(default)]
    pub updated: BTreeMap<u64, u64>,
    /// Units whose new task failed, in order.
    #[serde(default)]
    pub failures: Vec<UpdateFailure>,
}

impl UpdateStatus {
    /// A fresh update (or rollback) of `version`, started at `now_ms`.
    pub fn new(state: UpdateState, version: u64, now_ms: u64, message: impl Into<String>) -> Self {
        UpdateStatus {
            state,
            message: message.into(),
            started_ms: now_ms,
            completed_ms: None,
            version,
            updated: BTreeMap::new(),
            failures: vec![],
        }
    }
}

/// True when going from `old` to `new` replaces tasks: the task spec or the published
/// ports changed (a scale or a label does not), and the service is not a job.
pub fn starts_update(old: &ServiceSpec, new: &ServiceSpec) -> bool {
    !new.mode.is_job() && (old.task != new.task || old.ports != new.ports)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
}

impl ServiceSpec {
    /// Checks the spec at the control API's door; the error names the field at fault
    /// (`ports: ...`, `mode.replicas: ...`), which the CLI shows as its flag
    /// ([`crate::cli::fields`]) and a compose file under its service.
    pub fn validate(&self) -> Result<()> {
        if !valid_name(&self.name) {
            return Err(Error::InvalidInput(format!(
                "name: {:?} is not a valid service name (letters, digits, '-', '_', '.'; at most 63; starting with a letter or digit)",
                self.name
            )));
        }
        if self.task.container.image.trim().is_empty() {
            return Err(Error::InvalidInput("image: must not be empty".into()));
        }
        self.validate_mode()?;
        self.validate_ports()?;
        self.validate_task()?;
        self.validate_depends_on()?;
        if self.endpoint_mode == EndpointMode::Dnsrr
            && self.ports.iter().any(PortConfig::is_ingress)
        {
            return Err(Error::InvalidInput(
                "endpoint_mode: dnsrr cannot publish a port through the mesh (use mode: host)"
                    .into(),
            ));
        }
        for (field, u) in [("update", &self.update), ("rollback", &self.rollback)] {
            if !(0.0..=1.0).contains(&u.max_failure_ratio) {
                return Err(Error::InvalidInput(format!(
                    "{field}.max_failure_ratio: expected a number from 0 to 1"
                )));
            }
        }
        Ok(())
    }

    /// `mode`: counts within bounds, a job at least 1.
    fn validate_mode(&self) -> Result<()> {
        const MAX_REPLICAS: u64 = 100_000;
        match self.mode {
            ServiceMode::Replicated { replicas } if replicas > MAX_REPLICAS => {
                return Err(Error::InvalidInput(format!(
                    "mode.replicas: at most {MAX_REPLICAS}, found {replicas}"
                )))
            }
            ServiceMode::ReplicatedJob {
                total_completions, ..
            } if total_completions > MAX_REPLICAS => {
                return Err(Error::InvalidInput(format!(
                    "mode.total_completions: at most {MAX_REPLICAS}, found {total_completions}"
                )))
            }
            _ => {}
        }
        if let ServiceMode::ReplicatedJob {
            max_concurrent,
            total_completions,
        } = self.mode
        {
            if total_completions == 0 {
                return Err(Error::InvalidInput(
                    "mode.total_completions: a job runs at least 1".into(),
                ));
            }
            if max_concurrent == 0 {
                return Err(Error::InvalidInput(
                    "mode.max_concurrent: a job runs at least 1 task at a time".into(),
                ));
            }
        }
        Ok(())
    }

    /// `ports`: a target, PROXY protocol only where the mesh forwards TCP, no port twice.
    fn validate_ports(&self) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.ports {
            if p.target == 0 {
                return Err(Error::InvalidInput(
                    "ports: the target port must be 1-65535".into(),
                ));
            }
            if p.proxy_protocol != ProxyProtocol::None
                && (p.protocol != Protocol::Tcp || !p.is_ingress())
            {
                return Err(Error::InvalidInput(format!(
                    "ports: proxy-protocol={} needs a published TCP port in ingress mode",
                    p.proxy_protocol.as_str()
                )));
            }
            if p.published != 0 && !seen.insert((p.published, p.protocol)) {
                return Err(Error::InvalidInput(format!(
                    "ports: port {}/{} is published twice",
                    p.published,
                    p.protocol.as_str()
                )));
            }
        }
        Ok(())
    }

    /// `task`: the environment, mounts and placement.
    fn validate_task(&self) -> Result<()> {
        for e in &self.task.container.env {
            if e.is_empty() || e.starts_with('=') {
                return Err(Error::InvalidInput(format!(
                    "task.container.env: expected K=V, found {e:?}"
                )));
            }
        }
        for m in &self.task.container.mounts {
            if !m.target.starts_with('/') {
                return Err(Error::InvalidInput(format!(
                    "task.container.mounts: target must be an absolute path, found {:?}",
                    m.target
                )));
            }
            if m.kind == MountKind::Bind && !m.source.starts_with('/') {
                return Err(Error::InvalidInput(format!(
                    "task.container.mounts: a bind source must be an absolute path, found {:?}",
                    m.source
                )));
            }
        }
        for (i, c) in self.task.placement.constraints.iter().enumerate() {
            c.check(&format!("task.placement.constraints[{i}]"))?;
        }
        for p in &self.task.placement.preferences {
            if !p.is_valid() {
                return Err(Error::InvalidInput(format!(
                    "task.placement.preferences: expected spread=node.labels.NAME, found spread={p}"
                )));
            }
        }
        Ok(())
    }

    /// `depends_on`: other services, by valid names.
    fn validate_depends_on(&self) -> Result<()> {
        for d in &self.depends_on {
            if d.service == self.name {
                return Err(Error::InvalidInput(format!(
                    "depends_on: service {} cannot depend on itself",
                    self.name
                )));
            }
            if !valid_name(&d.service) {
                return Err(Error::InvalidInput(format!(
                    "depends_on: {:?} is not a valid service name",
                    d.service
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(published: u16, protocol: Protocol, mode: PublishMode) -> PortConfig {
        PortConfig {
            protocol,
            target: 80,
            published,
            mode,
            proxy_protocol: ProxyProtocol::None,
        }
    }

    fn service(name: &str, ports: Vec<PortConfig>) -> Service {
        Service {
            id: ServiceId(name.into()),
            spec: ServiceSpec {
                name: name.into(),
                labels: Default::default(),
                mode: ServiceMode::Replicated { replicas: 1 },
                task: Default::default(),
                ports,
                expose: vec![],
                update: Default::default(),
                rollback: Default::default(),
                depends_on: vec![],
                endpoint_mode: Default::default(),
            },
            previous_spec: None,
            version: 1,
            vip: String::new(),
            created_ms: 0,
            updated_ms: 0,
        }
    }

    /// The name of the service `ports` conflicts with among `others`, if any.
    fn conflict(ports: Vec<PortConfig>, others: &[Service]) -> Option<String> {
        let new = service("new", ports);
        let others: Vec<&Service> = others.iter().collect();
        ingress_port_conflict(&new.spec, &others).map(|c| c.holder.spec.name.clone())
    }

    use Protocol::{Tcp, Udp};
    use PublishMode::{Host, Ingress};

    #[test]
    fn the_predicates_need_a_published_port() {
        assert!(port(8080, Tcp, Ingress).is_ingress());
        assert!(!port(0, Tcp, Ingress).is_ingress());
        assert!(!port(8080, Tcp, Host).is_ingress());
        assert!(port(8080, Tcp, Host).is_host_published());
        assert!(!port(0, Tcp, Host).is_host_published());
        assert!(!port(8080, Tcp, Ingress).is_host_published());
    }

    #[test]
    fn the_same_ingress_port_and_protocol_conflicts() {
        let others = [
            service("a", vec![port(9000, Tcp, Ingress)]),
            service("web", vec![port(8080, Tcp, Ingress)]),
        ];
        assert_eq!(
            conflict(vec![port(8080, Tcp, Ingress)], &others).as_deref(),
            Some("web")
        );
        let udp = [service("dns", vec![port(53, Udp, Ingress)])];
        assert_eq!(
            conflict(vec![port(53, Udp, Ingress)], &udp).as_deref(),
            Some("dns")
        );
    }

    #[test]
    fn the_first_port_in_the_spec_and_the_first_holder_are_named() {
        let others = [
            service("a", vec![port(9000, Tcp, Ingress)]),
            service("b", vec![port(8080, Tcp, Ingress)]),
            service("c", vec![port(8080, Tcp, Ingress)]),
        ];
        let new = service(
            "new",
            vec![port(8080, Tcp, Ingress), port(9000, Tcp, Ingress)],
        );
        let refs: Vec<&Service> = others.iter().collect();
        let c = ingress_port_conflict(&new.spec, &refs).expect("a conflict");
        assert_eq!((c.port.published, c.holder.spec.name.as_str()), (8080, "b"));
    }

    #[test]
    fn other_protocols_host_mode_and_unpublished_ports_do_not_conflict() {
        let others = [
            service("udp", vec![port(8080, Udp, Ingress)]),
            service("host", vec![port(8081, Tcp, Host)]),
            service("ephemeral", vec![port(0, Tcp, Ingress)]),
            service("other", vec![port(9999, Tcp, Ingress)]),
        ];
        // same number, other protocol
        assert_eq!(conflict(vec![port(8080, Tcp, Ingress)], &others), None);
        // an ingress port where another service publishes in host mode, and the reverse
        assert_eq!(conflict(vec![port(8081, Tcp, Ingress)], &others), None);
        assert_eq!(conflict(vec![port(9999, Tcp, Host)], &others), None);
        // no published port at all
        assert_eq!(conflict(vec![port(0, Tcp, Ingress)], &others), None);
        assert_eq!(conflict(vec![], &others), None);
    }

    /// Every value's word parses back to it, and is the word serde writes in JSON.
    fn round_trip<T>(values: &[T])
    where
        T: Words + Copy + PartialEq + fmt::Debug + fmt::Display + Serialize,
    {
        for v in values {
            let word = v.to_string();
            assert_eq!(word.parse::<T>().ok(), Some(*v), "{word}");
            assert_eq!(serde_json::to_value(v).ok(), Some(serde_json::json!(word)));
            for w in T::EXPECTED
                .split([',', ' '])
                .filter(|w| !w.is_empty() && *w != "or")
            {
                assert!(w.parse::<T>().is_ok(), "{w} in {}", T::EXPECTED);
            }
        }
    }

    #[test]
    fn enum_words_parse_and_print_alike() {
        use RestartCondition as R;
        round_trip(&[R::Any, R::OnFailure, R::None]);
        round_trip(&[Tcp, Udp]);
        round_trip(&[Ingress, Host]);
        use ProxyProtocol as P;
        round_trip(&[P::None, P::V1, P::V2]);
        round_trip(&[MountKind::Bind, MountKind::Volume, MountKind::Tmpfs]);
        use FailureAction as F;
        round_trip(&[F::Pause, F::Continue, F::Rollback]);
        round_trip(&[UpdateOrder::StopFirst, UpdateOrder::StartFirst]);
        use DependCondition as D;
        round_trip(&[
            D::ServiceStarted,
            D::ServiceHealthy,
            D::ServiceCompletedSuccessfully,
        ]);
        round_trip(&[EndpointMode::Vip, EndpointMode::Dnsrr]);
        for w in ["replicated", "global", "replicated-job", "global-job"] {
            let mode: Option<ServiceMode> = w.parse().ok();
            assert_eq!(mode.map(|m| m.to_string()).as_deref(), Some(w));
        }
        assert_eq!("2".parse::<ProxyProtocol>().ok(), Some(ProxyProtocol::V2));
        let e = "sometimes"
            .parse::<RestartCondition>()
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(
                |e| e.ends_with("expected any, on-failure or none, found \"sometimes\"")
            ),
            "{e:?}"
        );
    }
}
