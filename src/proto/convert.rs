//! Conversions between the store's types and their wire messages, in one place.
//!
//! Store → wire is `From` and cannot fail. Wire → store is `TryFrom<message>` with
//! [`Error::InvalidInput`] naming the field when the message cannot be a valid value:
//! an enum number the store has no variant for (or a `*_UNSPECIFIED` zero), a port
//! above 65535, a service without a mode, a task without a status, a node id that is
//! not 16 hex digits. A message field left unset reads as the store type's default
//! where it has one (as serde's `#[serde(default)]` reads stored data from before).
//! Whether a value makes sense as a whole (a name, a ratio) is not checked here: that
//! is [`ServiceSpec::validate`], at the control API's door.
//!
//! Round trip: store → wire → store is the identity for every value (a property test
//! below checks it, every enum variant and `Option` included).

use crate::error::{Error, Result};
use crate::proto as pb;
use crate::store::image::ImagePin;
use crate::store::network::NetworkDriver;
use crate::store::service::{
    ContainerOptions, ContainerSpec, DependCondition, Dependency, EndpointMode, FailureAction,
    HealthCheck, Mount, MountKind, Placement, PortConfig, Protocol, ProxyProtocol, PublishMode,
    Resources, RestartCondition, RestartPolicy, Service, ServiceId, ServiceMode, ServiceSpec,
    TaskSpec, Ulimit, UpdateConfig, UpdateFailure, UpdateOrder, UpdateState, UpdateStatus,
};
use crate::store::task::{HostPort, Task, TaskEndpoint, TaskId, TaskState, TaskStatus};
use crate::store::{Network, NetworkAttachment, NetworkId, NetworkSpec, NodeId, TaskAddress};

fn invalid(field: &str, what: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("{field}: {what}"))
}

/// A wire enum number as the store's enum: unknown numbers and an unspecified zero are
/// refused, naming `field`.
pub fn enum_of<W, S>(field: &str, v: i32) -> Result<S>
where
    W: TryFrom<i32>,
    S: TryFrom<W, Error = ()>,
{
    let w = W::try_from(v).map_err(|_| invalid(field, format!("unknown value {v}")))?;
    S::try_from(w).map_err(|()| invalid(field, "must be set"))
}

/// A port number (0-65535) from its wire `uint32`.
pub fn port(field: &str, v: u32) -> Result<u16> {
    u16::try_from(v).map_err(|_| invalid(field, format!("{v} is not a port (0-65535)")))
}

/// Each variant of a store enum paired with its wire variant; the wire's other
/// variants (an `Unspecified` zero) convert to `Err(())`, which [`enum_of`] names.
macro_rules! enum_pairs {
    ($store:ident, $wire:ident { $($s:ident => $w:ident),+ $(,)? }) => {
        impl From<$store> for pb::$wire {
            fn from(v: $store) -> Self {
                match v {
                    $($store::$s => pb::$wire::$w,)+
                }
            }
        }
        impl From<$store> for i32 {
            fn from(v: $store) -> Self {
                pb::$wire::from(v) as i32
            }
        }
        impl TryFrom<pb::$wire> for $store {
            type Error = ();
            #[allow(unreachable_patterns)]
            fn try_from(w: pb::$wire) -> std::result::Result<Self, ()> {
                match w {
                    $(pb::$wire::$w => Ok($store::$s),)+
                    _ => Err(()),
                }
            }
        }
    };
}

enum_pairs!(MountKind, MountKind { Bind => Bind, Volume => Volume, Tmpfs => Tmpfs });
enum_pairs!(RestartCondition, RestartCondition { Any => Any, OnFailure => OnFailure, None => None });
enum_pairs!(Protocol, Protocol { Tcp => Tcp, Udp => Udp });
enum_pairs!(PublishMode, PublishMode { Ingress => Ingress, Host => Host });
enum_pairs!(ProxyProtocol, ProxyProtocol { None => None, V1 => V1, V2 => V2 });
enum_pairs!(FailureAction, FailureAction { Pause => Pause, Continue => Continue, Rollback => Rollback });
enum_pairs!(UpdateOrder, UpdateOrder { StopFirst => StopFirst, StartFirst => StartFirst });
enum_pairs!(DependCondition, DependCondition {
    ServiceStarted => ServiceStarted,
    ServiceHealthy => ServiceHealthy,
    ServiceCompletedSuccessfully => ServiceCompletedSuccessfully,
});
enum_pairs!(EndpointMode, EndpointMode { Vip => Vip, Dnsrr => Dnsrr });
enum_pairs!(NetworkDriver, NetworkDriver { Overlay => Overlay, Bridge => Bridge });
enum_pairs!(UpdateState, UpdateState {
    Updating => Updating,
    Paused => Paused,
    Completed => Completed,
    RollbackStarted => RollbackStarted,
    RollbackPaused => RollbackPaused,
    RollbackCompleted => RollbackCompleted,
});
enum_pairs!(TaskState, TaskState {
    New => New,
    Pending => Pending,
    Assigned => Assigned,
    Accepted => Accepted,
    Preparing => Preparing,
    Starting => Starting,
    Running => Running,
    Complete => Complete,
    Shutdown => Shutdown,
    Failed => Failed,
    Rejected => Rejected,
    Orphaned => Orphaned,
    Remove => Remove,
});

// ---- Services ----

impl From<ServiceMode> for pb::ServiceMode {
    fn from(m: ServiceMode) -> Self {
        use pb::service_mode::{self as w, Kind};
        let kind = match m {
            ServiceMode::Replicated { replicas } => Kind::Replicated(w::Replicated { replicas }),
            ServiceMode::Global => Kind::Global(w::Global {}),
            ServiceMode::ReplicatedJob {
                max_concurrent,
                total_completions,
            } => Kind::ReplicatedJob(w::ReplicatedJob {
                max_concurrent,
                total_completions,
            }),
            ServiceMode::GlobalJob => Kind::GlobalJob(w::GlobalJob {}),
        };
        pb::ServiceMode { kind: Some(kind) }
    }
}

impl TryFrom<pb::ServiceMode> for ServiceMode {
    type Error = Error;
    fn try_from(m: pb::ServiceMode) -> Result<Self> {
        use pb::service_mode::Kind;
        Ok(
            match m.kind.ok_or_else(|| invalid("mode", "must be set"))? {
                Kind::Replicated(r) => ServiceMode::Replicated {
                    replicas: r.replicas,
                },
                Kind::Global(_) => ServiceMode::Global,
                Kind::ReplicatedJob(j) => ServiceMode::ReplicatedJob {
                    max_concurrent: j.max_concurrent,
                    total_completions: j.total_completions,
                },
                Kind::GlobalJob(_) => ServiceMode::GlobalJob,
            },
        )
    }
}

impl From<Mount> for pb::Mount {
    fn from(m: Mount) -> Self {
        pb::Mount {
            kind: m.kind.into(),
            source: m.source,
            target: m.target,
            readonly: m.readonly,
            driver: m.driver,
            driver_opts: m.driver_opts,
            follow: m.follow,
            keep: m.keep,
        }
    }
}

impl TryFrom<pb::Mount> for Mount {
    type Error = Error;
    fn try_from(m: pb::Mount) -> Result<Self> {
        Ok(Mount {
            kind: enum_of::<pb::MountKind, _>("mounts.kind", m.kind)?,
            source: m.source,
            target: m.target,
            readonly: m.readonly,
            driver: m.driver,
            driver_opts: m.driver_opts,
            follow: m.follow,
            keep: m.keep,
        })
    }
}

impl From<HealthCheck> for pb::HealthCheck {
    fn from(h: HealthCheck) -> Self {
        pb::HealthCheck {
            test: h.test,
            interval_ms: h.interval_ms,
            timeout_ms: h.timeout_ms,
            retries: h.retries,
            start_period_ms: h.start_period_ms,
        }
    }
}

impl From<pb::HealthCheck> for HealthCheck {
    fn from(h: pb::HealthCheck) -> Self {
        HealthCheck {
            test: h.test,
            interval_ms: h.interval_ms,
            timeout_ms: h.timeout_ms,
            retries: h.retries,
            start_period_ms: h.start_period_ms,
        }
    }
}

impl From<ContainerSpec> for pb::ContainerSpec {
    fn from(c: ContainerSpec) -> Self {
        pb::ContainerSpec {
            image: c.image,
            entrypoint: c.entrypoint,
            args: c.args,
            env: c.env,
            labels: c.labels,
            mounts: c.mounts.into_iter().map(Into::into).collect(),
            user: c.user,
            workdir: c.workdir,
            healthcheck: c.healthcheck.map(Into::into),
            stop_grace_period_ms: c.stop_grace_period_ms,
            log_driver: c.log_driver,
            log_opts: c.log_opts,
            options: (!c.options.is_empty()).then(|| c.options.into()),
        }
    }
}

impl TryFrom<pb::ContainerSpec> for ContainerSpec {
    type Error = Error;
    fn try_from(c: pb::ContainerSpec) -> Result<Self> {
        Ok(ContainerSpec {
            image: c.image,
            entrypoint: c.entrypoint,
            args: c.args,
            env: c.env,
            labels: c.labels,
            mounts: c
                .mounts
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
            user: c.user,
            workdir: c.workdir,
            healthcheck: c.healthcheck.map(Into::into),
            stop_grace_period_ms: c.stop_grace_period_ms,
            log_driver: c.log_driver,
            log_opts: c.log_opts,
            options: c.options.map(Into::into).unwrap_or_default(),
        })
    }
}

impl From<ContainerOptions> for pb::ContainerOptions {
    fn from(o: ContainerOptions) -> Self {
        pb::ContainerOptions {
            hostname: o.hostname,
            cap_add: o.cap_add,
            cap_drop: o.cap_drop,
            sysctls: o.sysctls.into_iter().collect(),
            ulimits: o.ulimits.into_iter().map(|(k, u)| (k, u.into())).collect(),
            init: o.init,
            stop_signal: o.stop_signal,
            extra_hosts: o.extra_hosts,
            tty: o.tty,
            stdin_open: o.stdin_open,
            read_only: o.read_only,
            dns: o.dns,
            dns_search: o.dns_search,
            group_add: o.group_add,
        }
    }
}

impl From<Ulimit> for pb::Ulimit {
    fn from(u: Ulimit) -> Self {
        pb::Ulimit {
            soft: u.soft,
            hard: u.hard,
        }
    }
}

impl From<pb::Ulimit> for Ulimit {
    fn from(u: pb::Ulimit) -> Self {
        Ulimit {
            soft: u.soft,
            hard: u.hard,
        }
    }
}

impl From<pb::ContainerOptions> for ContainerOptions {
    fn from(o: pb::ContainerOptions) -> Self {
        ContainerOptions {
            hostname: o.hostname,
            cap_add: o.cap_add,
            cap_drop: o.cap_drop,
            sysctls: o.sysctls.into_iter().collect(),
            ulimits: o.ulimits.into_iter().map(|(k, u)| (k, u.into())).collect(),
            init: o.init,
            stop_signal: o.stop_signal,
            extra_hosts: o.extra_hosts,
            tty: o.tty,
            stdin_open: o.stdin_open,
            read_only: o.read_only,
            dns: o.dns,
            dns_search: o.dns_search,
            group_add: o.group_add,
        }
    }
}

impl From<Resources> for pb::Resources {
    fn from(r: Resources) -> Self {
        pb::Resources {
            reserve_nano_cpus: r.reserve_nano_cpus,
            reserve_memory_bytes: r.reserve_memory_bytes,
            limit_nano_cpus: r.limit_nano_cpus,
            limit_memory_bytes: r.limit_memory_bytes,
            generic_resources: r.generic_resources.into_iter().collect(),
        }
    }
}

impl From<pb::Resources> for Resources {
    fn from(r: pb::Resources) -> Self {
        Resources {
            reserve_nano_cpus: r.reserve_nano_cpus,
            reserve_memory_bytes: r.reserve_memory_bytes,
            limit_nano_cpus: r.limit_nano_cpus,
            limit_memory_bytes: r.limit_memory_bytes,
            generic_resources: r.generic_resources.into_iter().collect(),
        }
    }
}

impl From<Placement> for pb::Placement {
    fn from(p: Placement) -> Self {
        pb::Placement {
            constraints: p.constraints.into_iter().map(String::from).collect(),
            preferences: p.preferences.into_iter().map(String::from).collect(),
            max_replicas_per_node: p.max_replicas_per_node,
        }
    }
}

/// Each constraint is parsed here, once; text that does not parse is kept as
/// [`Constraint::Invalid`](crate::store::Constraint::Invalid) rather than refused, since
/// this conversion also reads back what the store holds (a Raft entry, a service the API
/// answers with), which an older version may have written under a looser grammar.
/// [`ServiceSpec::validate`] refuses it in a new spec, naming
/// `task.placement.constraints[i]`. Preferences likewise.
impl From<pb::Placement> for Placement {
    fn from(p: pb::Placement) -> Self {
        Placement {
            constraints: p.constraints.into_iter().map(Into::into).collect(),
            preferences: p.preferences.into_iter().map(Into::into).collect(),
            max_replicas_per_node: p.max_replicas_per_node,
        }
    }
}

impl From<RestartPolicy> for pb::RestartPolicy {
    fn from(r: RestartPolicy) -> Self {
        pb::RestartPolicy {
            condition: r.condition.into(),
            delay_ms: r.delay_ms,
            max_attempts: r.max_attempts,
            window_ms: r.window_ms,
        }
    }
}

impl TryFrom<pb::RestartPolicy> for RestartPolicy {
    type Error = Error;
    fn try_from(r: pb::RestartPolicy) -> Result<Self> {
        Ok(RestartPolicy {
            condition: enum_of::<pb::RestartCondition, _>("restart.condition", r.condition)?,
            delay_ms: r.delay_ms,
            max_attempts: r.max_attempts,
            window_ms: r.window_ms,
        })
    }
}

impl From<TaskSpec> for pb::TaskSpec {
    fn from(t: TaskSpec) -> Self {
        pb::TaskSpec {
            container: Some(t.container.into()),
            resources: Some(t.resources.into()),
            restart: Some(t.restart.into()),
            placement: Some(t.placement.into()),
            force_update: t.force_update,
            force_new_volume: t.force_new_volume,
            secrets: t.secrets.into_iter().map(Into::into).collect(),
            configs: t.configs.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::TaskSpec> for TaskSpec {
    type Error = Error;
    fn try_from(t: pb::TaskSpec) -> Result<Self> {
        Ok(TaskSpec {
            container: t
                .container
                .map(TryInto::try_into)
                .transpose()?
                .unwrap_or_default(),
            resources: t.resources.map(Into::into).unwrap_or_default(),
            restart: t
                .restart
                .map(TryInto::try_into)
                .transpose()?
                .unwrap_or_default(),
            placement: t.placement.map(Into::into).unwrap_or_default(),
            force_update: t.force_update,
            force_new_volume: t.force_new_volume,
            secrets: t.secrets.into_iter().map(Into::into).collect(),
            configs: t.configs.into_iter().map(Into::into).collect(),
        })
    }
}

impl From<PortConfig> for pb::PortConfig {
    fn from(p: PortConfig) -> Self {
        pb::PortConfig {
            protocol: p.protocol.into(),
            target: p.target.into(),
            published: p.published.into(),
            mode: p.mode.into(),
            proxy_protocol: p.proxy_protocol.into(),
        }
    }
}

impl TryFrom<pb::PortConfig> for PortConfig {
    type Error = Error;
    fn try_from(p: pb::PortConfig) -> Result<Self> {
        Ok(PortConfig {
            protocol: enum_of::<pb::Protocol, _>("ports.protocol", p.protocol)?,
            target: port("ports.target", p.target)?,
            published: port("ports.published", p.published)?,
            mode: enum_of::<pb::PublishMode, _>("ports.mode", p.mode)?,
            proxy_protocol: enum_of::<pb::ProxyProtocol, _>(
                "ports.proxy_protocol",
                p.proxy_protocol,
            )?,
        })
    }
}

impl From<UpdateConfig> for pb::UpdateConfig {
    fn from(u: UpdateConfig) -> Self {
        pb::UpdateConfig {
            parallelism: u.parallelism,
            delay_ms: u.delay_ms,
            failure_action: u.failure_action.into(),
            monitor_ms: u.monitor_ms,
            max_failure_ratio: u.max_failure_ratio,
            order: u.order.into(),
        }
    }
}

/// An update (or, `field` = `rollback`, rollback) config from the wire.
fn update_config(field: &str, u: Option<pb::UpdateConfig>) -> Result<UpdateConfig> {
    let Some(u) = u else {
        return Ok(UpdateConfig::default());
    };
    Ok(UpdateConfig {
        parallelism: u.parallelism,
        delay_ms: u.delay_ms,
        failure_action: enum_of::<pb::FailureAction, _>(
            &format!("{field}.failure_action"),
            u.failure_action,
        )?,
        monitor_ms: u.monitor_ms,
        max_failure_ratio: u.max_failure_ratio,
        order: enum_of::<pb::UpdateOrder, _>(&format!("{field}.order"), u.order)?,
    })
}

impl From<Dependency> for pb::Dependency {
    fn from(d: Dependency) -> Self {
        pb::Dependency {
            service: d.service,
            condition: d.condition.into(),
        }
    }
}

impl TryFrom<pb::Dependency> for Dependency {
    type Error = Error;
    fn try_from(d: pb::Dependency) -> Result<Self> {
        Ok(Dependency {
            service: d.service,
            condition: enum_of::<pb::DependCondition, _>("depends_on.condition", d.condition)?,
        })
    }
}

impl From<ServiceSpec> for pb::ServiceSpec {
    fn from(s: ServiceSpec) -> Self {
        pb::ServiceSpec {
            name: s.name,
            labels: s.labels,
            mode: Some(s.mode.into()),
            task: Some(s.task.into()),
            ports: s.ports.into_iter().map(Into::into).collect(),
            expose: s.expose.into_iter().map(u32::from).collect(),
            update: Some(s.update.into()),
            rollback: Some(s.rollback.into()),
            depends_on: s.depends_on.into_iter().map(Into::into).collect(),
            endpoint_mode: s.endpoint_mode.into(),
            networks: s.networks.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::ServiceSpec> for ServiceSpec {
    type Error = Error;
    fn try_from(s: pb::ServiceSpec) -> Result<Self> {
        Ok(ServiceSpec {
            name: s.name,
            labels: s.labels,
            mode: s
                .mode
                .ok_or_else(|| invalid("mode", "must be set"))?
                .try_into()?,
            task: s
                .task
                .map(TryInto::try_into)
                .transpose()?
                .unwrap_or_default(),
            ports: s
                .ports
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
            expose: s
                .expose
                .into_iter()
                .map(|p| port("expose", p))
                .collect::<Result<_>>()?,
            update: update_config("update", s.update)?,
            rollback: update_config("rollback", s.rollback)?,
            depends_on: s
                .depends_on
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
            endpoint_mode: enum_of::<pb::EndpointMode, _>("endpoint_mode", s.endpoint_mode)?,
            networks: s.networks.into_iter().map(Into::into).collect(),
        })
    }
}

impl From<Service> for pb::Service {
    fn from(s: Service) -> Self {
        pb::Service {
            id: s.id.0,
            spec: Some(s.spec.into()),
            previous_spec: s.previous_spec.map(Into::into),
            version: s.version,
            vip: s.vip,
            created_ms: s.created_ms,
            updated_ms: s.updated_ms,
        }
    }
}

impl TryFrom<pb::Service> for Service {
    type Error = Error;
    fn try_from(s: pb::Service) -> Result<Self> {
        Ok(Service {
            id: ServiceId(s.id),
            spec: s
                .spec
                .ok_or_else(|| invalid("spec", "must be set"))?
                .try_into()?,
            previous_spec: s.previous_spec.map(TryInto::try_into).transpose()?,
            version: s.version,
            vip: s.vip,
            created_ms: s.created_ms,
            updated_ms: s.updated_ms,
        })
    }
}

impl From<UpdateFailure> for pb::UpdateFailure {
    fn from(f: UpdateFailure) -> Self {
        pb::UpdateFailure {
            unit: f.unit,
            task_id: f.task_id.0,
            reason: f.reason,
            at_ms: f.at_ms,
        }
    }
}

impl From<pb::UpdateFailure> for UpdateFailure {
    fn from(f: pb::UpdateFailure) -> Self {
        UpdateFailure {
            unit: f.unit,
            task_id: TaskId(f.task_id),
            reason: f.reason,
            at_ms: f.at_ms,
        }
    }
}

impl From<UpdateStatus> for pb::UpdateStatus {
    fn from(u: UpdateStatus) -> Self {
        pb::UpdateStatus {
            state: u.state.into(),
            message: u.message,
            started_ms: u.started_ms,
            completed_ms: u.completed_ms,
            version: u.version,
            updated: u.updated,
            failures: u.failures.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::UpdateStatus> for UpdateStatus {
    type Error = Error;
    fn try_from(u: pb::UpdateStatus) -> Result<Self> {
        Ok(UpdateStatus {
            state: enum_of::<pb::UpdateState, _>("update_status.state", u.state)?,
            message: u.message,
            started_ms: u.started_ms,
            completed_ms: u.completed_ms,
            version: u.version,
            updated: u.updated,
            failures: u.failures.into_iter().map(Into::into).collect(),
        })
    }
}

impl From<ImagePin> for pb::ImagePin {
    fn from(p: ImagePin) -> Self {
        pb::ImagePin {
            image: p.image,
            id: p.id,
            repo_digest: p.repo_digest,
        }
    }
}

impl From<pb::ImagePin> for ImagePin {
    fn from(p: pb::ImagePin) -> Self {
        ImagePin {
            image: p.image,
            id: p.id,
            repo_digest: p.repo_digest,
        }
    }
}

// ---- Tasks ----

impl From<HostPort> for pb::HostPort {
    fn from(h: HostPort) -> Self {
        pb::HostPort {
            protocol: h.protocol.into(),
            target: h.target.into(),
            host_port: h.host_port.into(),
        }
    }
}

impl TryFrom<pb::HostPort> for HostPort {
    type Error = Error;
    fn try_from(h: pb::HostPort) -> Result<Self> {
        Ok(HostPort {
            protocol: enum_of::<pb::Protocol, _>("status.ports.protocol", h.protocol)?,
            target: port("status.ports.target", h.target)?,
            host_port: port("status.ports.host_port", h.host_port)?,
        })
    }
}

impl From<TaskStatus> for pb::TaskStatus {
    fn from(s: TaskStatus) -> Self {
        pb::TaskStatus {
            state: s.state.into(),
            timestamp_ms: s.timestamp_ms,
            message: s.message,
            err: s.err,
            container_id: s.container_id,
            exit_code: s.exit_code,
            ports: s.ports.into_iter().map(Into::into).collect(),
            health: s.health,
            image_id: s.image_id,
            image_digest: s.image_digest,
            addresses: s.addresses.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::TaskStatus> for TaskStatus {
    type Error = Error;
    fn try_from(s: pb::TaskStatus) -> Result<Self> {
        Ok(TaskStatus {
            state: enum_of::<pb::TaskState, _>("status.state", s.state)?,
            timestamp_ms: s.timestamp_ms,
            message: s.message,
            err: s.err,
            container_id: s.container_id,
            exit_code: s.exit_code,
            ports: s
                .ports
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
            health: s.health,
            image_id: s.image_id,
            image_digest: s.image_digest,
            addresses: s.addresses.into_iter().map(Into::into).collect(),
        })
    }
}

impl From<Task> for pb::Task {
    fn from(t: Task) -> Self {
        pb::Task {
            id: t.id.0,
            service_id: t.service_id.0,
            service_name: t.service_name,
            slot: t.slot,
            node_id: t.node_id.map(|n| n.to_string()).unwrap_or_default(),
            spec_version: t.spec_version,
            spec: Some(std::sync::Arc::unwrap_or_clone(t.spec).into()),
            desired_state: t.desired_state.into(),
            status: Some(t.status.into()),
            created_ms: t.created_ms,
            vip: t.vip,
            endpoint: t.endpoint.map(Into::into),
        }
    }
}

impl From<TaskEndpoint> for pb::TaskEndpoint {
    fn from(e: TaskEndpoint) -> Self {
        pb::TaskEndpoint {
            ports: e.ports.into_iter().map(Into::into).collect(),
            expose: e.expose.into_iter().map(u32::from).collect(),
            networks: e.networks.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::TaskEndpoint> for TaskEndpoint {
    type Error = Error;
    fn try_from(e: pb::TaskEndpoint) -> Result<Self> {
        Ok(TaskEndpoint {
            ports: e
                .ports
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
            expose: e
                .expose
                .into_iter()
                .map(|p| port("endpoint.expose", p))
                .collect::<Result<_>>()?,
            networks: e.networks.into_iter().map(Into::into).collect(),
        })
    }
}

impl TryFrom<pb::Task> for Task {
    type Error = Error;
    fn try_from(t: pb::Task) -> Result<Self> {
        let node_id = if t.node_id.is_empty() {
            None
        } else {
            Some(
                t.node_id
                    .parse::<NodeId>()
                    .map_err(|_| invalid("node_id", format!("{:?} is not a node id", t.node_id)))?,
            )
        };
        Ok(Task {
            id: TaskId(t.id),
            service_id: ServiceId(t.service_id),
            service_name: t.service_name,
            slot: t.slot,
            node_id,
            spec_version: t.spec_version,
            spec: std::sync::Arc::new(
                t.spec
                    .map(TryInto::try_into)
                    .transpose()?
                    .unwrap_or_default(),
            ),
            desired_state: enum_of::<pb::TaskState, _>("desired_state", t.desired_state)?,
            status: t
                .status
                .ok_or_else(|| invalid("status", "must be set"))?
                .try_into()?,
            created_ms: t.created_ms,
            vip: t.vip,
            endpoint: t.endpoint.map(TryInto::try_into).transpose()?,
        })
    }
}

pub mod command;
pub mod event;
pub mod secret;

#[cfg(test)]
mod tests;

impl From<NetworkAttachment> for pb::NetworkAttachment {
    fn from(a: NetworkAttachment) -> Self {
        pb::NetworkAttachment {
            network: a.network.0,
            aliases: a.aliases,
        }
    }
}

impl From<pb::NetworkAttachment> for NetworkAttachment {
    fn from(a: pb::NetworkAttachment) -> Self {
        NetworkAttachment {
            network: NetworkId(a.network),
            aliases: a.aliases,
        }
    }
}

impl From<TaskAddress> for pb::TaskAddress {
    fn from(a: TaskAddress) -> Self {
        pb::TaskAddress {
            network: a.network.0,
            ip: a.ip,
        }
    }
}

impl From<pb::TaskAddress> for TaskAddress {
    fn from(a: pb::TaskAddress) -> Self {
        TaskAddress {
            network: NetworkId(a.network),
            ip: a.ip,
        }
    }
}

impl From<NetworkSpec> for pb::NetworkSpec {
    fn from(s: NetworkSpec) -> Self {
        pb::NetworkSpec {
            name: s.name,
            labels: s.labels,
            driver: pb::NetworkDriver::from(s.driver).into(),
            internal: s.internal,
            attachable: s.attachable,
            encrypted: s.encrypted,
        }
    }
}

impl TryFrom<pb::NetworkSpec> for NetworkSpec {
    type Error = Error;
    fn try_from(s: pb::NetworkSpec) -> Result<Self> {
        Ok(NetworkSpec {
            name: s.name,
            labels: s.labels,
            driver: enum_of::<pb::NetworkDriver, _>("driver", s.driver)?,
            internal: s.internal,
            attachable: s.attachable,
            encrypted: s.encrypted,
        })
    }
}

impl From<Network> for pb::Network {
    fn from(n: Network) -> Self {
        pb::Network {
            id: n.id.0,
            spec: Some(n.spec.into()),
            created_ms: n.created_ms,
        }
    }
}

impl TryFrom<pb::Network> for Network {
    type Error = Error;
    fn try_from(n: pb::Network) -> Result<Self> {
        Ok(Network {
            id: NetworkId(n.id),
            spec: n
                .spec
                .ok_or_else(|| invalid("network.spec", "must be set"))?
                .try_into()?,
            created_ms: n.created_ms,
        })
    }
}
