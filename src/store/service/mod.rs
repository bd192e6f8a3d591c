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

mod options;
mod ports;
mod task;
pub mod template;
mod update;
mod validate;

pub use options::*;
pub use ports::*;
pub use task::*;
pub use update::*;

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
    /// The networks it is on, by id (empty: the built-in default network; see
    /// [`ServiceSpec::attachments`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<super::NetworkAttachment>,
}

impl ServiceSpec {
    /// The stack the service belongs to (empty: none), as [`super::NetworkSpec::stack`].
    pub fn stack(&self) -> &str {
        self.labels
            .get(STACK_LABEL)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The networks the service is on: those it names, or the built-in default network
    /// when it names none.
    pub fn attachments(&self) -> Vec<super::NetworkAttachment> {
        if self.networks.is_empty() {
            vec![super::NetworkAttachment::to(
                super::NetworkId::default_network(),
            )]
        } else {
            self.networks.clone()
        }
    }
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
                networks: Default::default(),
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
