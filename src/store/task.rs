//! Tasks: one container's life, in a slot of a service.
//!
//! Ownership, as in SwarmKit:
//!
//! | field | written by |
//! |---|---|
//! | the task's creation, `desired_state` | orchestrator |
//! | `node_id`, `status` Pending → Assigned, `status.message` while pending | scheduler |
//! | `status` from Accepted on | the agent on the task's node, through the dispatcher |
//! | `status.image_id`, `status.image_digest` | the agent (what it resolved the image to); the dispatcher's status command pins the service's image from them ([`super::image`]) |
//!
//! Observed states only move forward ([`TaskState`] is ordered); an update that would
//! move a task back is ignored at apply time. A replicated task keeps its `slot` across
//! restarts; a global task is identified by its `node_id` (slot 0).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::service::{PortConfig, Protocol, Service, ServiceId, TaskSpec};
use super::NodeId;

/// A task's identity: 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId(pub String);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TaskId {
    /// A fresh random id.
    pub fn random() -> Self {
        TaskId(format!("{:016x}", rand::random::<u64>()))
    }
}

/// The life of a task, in order. Observed states only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Just created by the orchestrator.
    New,
    /// Waiting for the scheduler.
    Pending,
    /// Given a node.
    Assigned,
    /// The node's agent took it.
    Accepted,
    /// Image and mounts being prepared.
    Preparing,
    /// Container created, starting.
    Starting,
    /// Running (and healthy, if it has a health check).
    Running,
    /// Exited with status 0.
    Complete,
    /// Stopped on purpose.
    Shutdown,
    /// Exited non-zero, unhealthy, or could not start.
    Failed,
    /// The node refused it.
    Rejected,
    /// Its node is down; the task was replaced.
    Orphaned,
    /// Desired state only: remove the task's container and forget it.
    Remove,
}

impl TaskState {
    /// The lower-case name (`running`, `complete`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Orphaned => "orphaned",
            TaskState::Remove => "remove",
        }
    }

    /// True once the task can no longer run (Complete and after).
    pub fn is_terminal(&self) -> bool {
        *self >= TaskState::Complete
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A container port published on the task's node by Docker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostPort {
    /// tcp or udp.
    pub protocol: Protocol,
    /// The container's port.
    pub target: u16,
    /// The node's port that reaches it.
    pub host_port: u16,
}

/// The longest `message` and `err` a status keeps, in bytes; longer ones are cut to it,
/// ending in `…` (see [`TaskStatus::cut_to_limits`]).
pub const STATUS_TEXT_MAX: usize = 1024;
/// The longest `container_id` and `health` a status keeps, in bytes.
pub const STATUS_WORD_MAX: usize = 128;
/// The most host ports a status lists.
pub const STATUS_PORTS_MAX: usize = 1024;

/// What is observed of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The state.
    pub state: TaskState,
    /// Unix ms of the last change.
    pub timestamp_ms: u64,
    /// A short note (`started`, `no suitable node: ...`).
    pub message: String,
    /// An error, for failed or rejected tasks.
    pub err: String,
    /// The container, once created.
    pub container_id: String,
    /// The exit code, once exited.
    pub exit_code: Option<i64>,
    /// Ports Docker published on the node.
    pub ports: Vec<HostPort>,
    /// `healthy`, `unhealthy`, `starting`, or empty without a health check.
    pub health: String,
    /// The engine's id of the image the container was created from (`sha256:...`),
    /// once the image is prepared; it pins the service's image ([`super::image`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_id: String,
    /// A registry digest of that image (`repo@sha256:...`), if the engine knows one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_digest: String,
    /// The container's address on each of its networks, on its node (that node's mesh
    /// reaches the task there).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<super::TaskAddress>,
}

impl TaskStatus {
    /// A status in `state` with a message.
    pub fn new(state: TaskState, message: impl Into<String>, now_ms: u64) -> Self {
        TaskStatus {
            state,
            timestamp_ms: now_ms,
            message: message.into(),
            err: String::new(),
            container_id: String::new(),
            exit_code: None,
            ports: vec![],
            health: String::new(),
            image_id: String::new(),
            image_digest: String::new(),
            addresses: vec![],
        }
    }

    /// Cuts a status a worker reported to [`STATUS_TEXT_MAX`], [`STATUS_WORD_MAX`] and
    /// [`STATUS_PORTS_MAX`], so that what the store and Raft keep of one task is
    /// bounded whatever the worker sends.
    pub fn cut_to_limits(&mut self) {
        cut(&mut self.message, STATUS_TEXT_MAX);
        cut(&mut self.err, STATUS_TEXT_MAX);
        cut(&mut self.container_id, STATUS_WORD_MAX);
        cut(&mut self.health, STATUS_WORD_MAX);
        self.ports.truncate(STATUS_PORTS_MAX);
        self.addresses.truncate(super::network::MAX_ATTACHMENTS);
        for a in &mut self.addresses {
            cut(&mut a.network.0, STATUS_WORD_MAX);
            cut(&mut a.ip, STATUS_WORD_MAX);
        }
    }
}

/// Cuts `text` to at most `max` bytes (at least 3) at a character boundary, ending in `…`.
fn cut(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
}

/// One run of a service's container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Identity.
    pub id: TaskId,
    /// The service.
    pub service_id: ServiceId,
    /// The service's name, for display and container names.
    pub service_name: String,
    /// Replicated: 1..=replicas; global: 0.
    pub slot: u64,
    /// The node, once scheduled (global tasks have it from creation).
    pub node_id: Option<NodeId>,
    /// The service version this task was made from.
    pub spec_version: u64,
    /// The spec it was made from: shared by the tasks of a service made from one
    /// version ([`crate::store::tasks::Tasks::insert`]); change it with
    /// `Arc::make_mut`.
    pub spec: std::sync::Arc<TaskSpec>,
    /// What the managers want.
    pub desired_state: TaskState,
    /// What is observed.
    pub status: TaskStatus,
    /// Unix ms.
    pub created_ms: u64,
    /// Its own virtual IP (`tasks.NAME` resolves to these), allocated when the
    /// creation is applied; empty: none.
    #[serde(default)]
    pub vip: String,
    /// What it publishes, copied from the service's spec when the orchestrator created
    /// it; `None` for a task stored before tasks carried it (read it through
    /// [`Task::endpoint`]).
    #[serde(default)]
    pub endpoint: Option<TaskEndpoint>,
}

/// A task's endpoint: the ports it publishes and exposes, copied from its service's
/// spec at creation, as SwarmKit does, so that the task, not a guess over the service's
/// current and previous specs, says what its container was made to publish.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEndpoint {
    /// Published ports.
    pub ports: Vec<PortConfig>,
    /// Ports reachable inside the cluster only (`--expose`).
    #[serde(default)]
    pub expose: Vec<u16>,
    /// The networks it is on (empty: the built-in default network, as for a task stored
    /// before tasks carried networks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<super::NetworkAttachment>,
}

impl TaskEndpoint {
    /// The endpoint a new task of `svc` gets: that of the service's current spec.
    pub fn of(svc: &Service) -> TaskEndpoint {
        TaskEndpoint {
            ports: svc.spec.ports.clone(),
            expose: svc.spec.expose.clone(),
            networks: svc.spec.attachments(),
        }
    }

    /// The networks the task is on (the built-in one when none is named).
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

impl Task {
    /// The task's endpoint. A task stored before tasks carried one gets it derived as
    /// before: from the spec it was made from (the service's previous spec while the
    /// task is older than the service's version, else the current one); none without
    /// its service.
    pub fn endpoint(&self, service: Option<&Service>) -> TaskEndpoint {
        if let Some(e) = &self.endpoint {
            return e.clone();
        }
        let Some(svc) = service else {
            return TaskEndpoint::default();
        };
        let spec = match &svc.previous_spec {
            Some(previous) if self.spec_version < svc.version => previous,
            _ => &svc.spec,
        };
        TaskEndpoint {
            ports: spec.ports.clone(),
            expose: spec.expose.clone(),
            networks: spec.attachments(),
        }
    }
}
