//! The replicated state tables.
//!
//! Every manager holds the same [`State`]: the cluster object (its id, root CA, join-token
//! secrets and settings) and the node table. It changes only by applying a [`Command`]
//! that Raft has committed, so [`State::apply`] is a pure, deterministic function: time
//! comes inside the command (`now_ms`, stamped by the proposer), never from the clock.
//!
//! Ownership of fields, as in SwarmKit: the control API writes a node's *spec*
//! (`role`, `availability`, `labels`), the dispatcher writes its *status* (`status`,
//! `description`, `last_seen_ms`). Each has its own command, so neither can clobber the
//! other's fields.
//!
//! Persistence: [`State::apply`] returns the keys it changed; the Raft state machine
//! (`crate::raft::state_machine`) writes exactly those keys to sled in the same atomic
//! batch as `last_applied`. Key layout of the `sm` tree:
//!
//! | key             | value                          |
//! |-----------------|--------------------------------|
//! | `cluster`       | JSON [`Cluster`]               |
//! | `node/<id hex>` | JSON [`Node`]                  |
//! | `service/<id>`  | JSON [`Service`]               |
//! | `task/<id>`     | JSON [`Task`]                  |
//! | `update/<id>`   | JSON [`UpdateStatus`] of the service `<id>` |
//! | `request/<id>`  | JSON [`AppliedRequest`]: a control write applied, and its reply |
//! | `ca_rotation`   | JSON [`rotation::CaRotation`]: a root CA rotation in progress |
//! | `pin/<id>`      | JSON [`ImagePin`] of the service `<id>` ([`image`]) |
//!
//! A service's update status lives beside it rather than in it: the control API starts
//! an update in the same command that changes the spec ([`Command::UpdateService`] whose
//! task spec or ports differ, [`Command::RollbackService`]), and the orchestrator
//! records progress with [`Command::SetUpdateStatus`], each applied only if the service
//! still has the version it was computed for.
//!
//! Exactly once: a control write is proposed inside [`Command::Once`], which records its
//! request id (and reply) under `request/<id>` in the same entry, and applies nothing
//! when the id is already there (see [`request`]).

pub mod constraint;
pub mod image;
pub mod request;
pub mod rotation;
pub mod sealed;
pub mod service;
pub mod task;
pub mod vip;

use std::collections::BTreeMap;
use std::fmt;

pub use constraint::Constraint;
pub use image::ImagePin;
pub use request::{AppliedRequest, RequestId};
pub use sealed::Sealed;
pub use service::{Service, ServiceId, ServiceSpec, UpdateStatus};
pub use task::{Task, TaskId, TaskState, TaskStatus};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A node's identity, also its Raft node id. Shown as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for NodeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        u64::from_str_radix(s, 16)
            .map(NodeId)
            .map_err(|_| Error::InvalidInput(format!("{s:?} is not a node id")))
    }
}

/// Whether a node takes part in Raft (manager) or only runs tasks (worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A Raft voter that can lead the cluster.
    Manager,
    /// Runs tasks only.
    Worker,
}

impl Role {
    /// The lower-case name used on the command line, in JSON and in certificates.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "manager" => Ok(Role::Manager),
            "worker" => Ok(Role::Worker),
            _ => Err(Error::InvalidInput(format!(
                "role: expected manager or worker, found {s:?}"
            ))),
        }
    }
}

/// Whether the scheduler may place tasks on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// New tasks may be placed here.
    #[default]
    Active,
    /// No new tasks; running ones stay.
    Pause,
    /// No tasks at all: running ones move away.
    Drain,
}

impl Availability {
    /// The lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        }
    }
}

impl std::str::FromStr for Availability {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "active" => Ok(Availability::Active),
            "pause" => Ok(Availability::Pause),
            "drain" => Ok(Availability::Drain),
            _ => Err(Error::InvalidInput(format!(
                "--availability: expected active, pause or drain, found {s:?}"
            ))),
        }
    }
}

/// Liveness of a node as seen by the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Not heard from since the current leader took over.
    #[default]
    Unknown,
    /// Heartbeats arrive.
    Ready,
    /// Missed its heartbeats.
    Down,
}

impl NodeStatus {
    /// The lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeStatus::Unknown => "unknown",
            NodeStatus::Ready => "ready",
            NodeStatus::Down => "down",
        }
    }
}

/// What a node reports about itself with each session.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeDescription {
    /// The host name.
    pub hostname: String,
    /// Logical CPUs.
    pub cpus: u32,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Operating system (`linux`).
    pub os: String,
    /// Architecture (`x86_64`).
    pub arch: String,
    /// Docker engine version, empty when no engine answered.
    pub engine_version: String,
    /// Docker engine labels.
    pub engine_labels: BTreeMap<String, String>,
}

/// A member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Identity; also the Raft node id.
    pub id: NodeId,
    /// Cluster address other nodes dial (`IP:PORT`). Written at join.
    pub addr: String,
    /// Spec (control API): the role this node should have.
    pub role: Role,
    /// Spec (control API): whether tasks may be placed here.
    pub availability: Availability,
    /// Spec (control API): operator labels.
    pub labels: BTreeMap<String, String>,
    /// Status (dispatcher): liveness.
    pub status: NodeStatus,
    /// Status (dispatcher): what the node last reported.
    pub description: NodeDescription,
    /// Status (dispatcher): unix ms of the last heartbeat that changed the status.
    pub status_changed_ms: u64,
    /// When the node joined, unix ms.
    pub created_ms: u64,
}

impl Node {
    /// A node as it joins: active, no labels, status unknown until its first heartbeat,
    /// created and changed at `now_ms`.
    pub fn new(
        id: NodeId,
        addr: impl Into<String>,
        role: Role,
        description: NodeDescription,
        now_ms: u64,
    ) -> Node {
        Node {
            id,
            addr: addr.into(),
            role,
            availability: Availability::Active,
            labels: BTreeMap::new(),
            status: NodeStatus::Unknown,
            description,
            status_changed_ms: now_ms,
            created_ms: now_ms,
        }
    }
}

/// Cluster-wide settings, changeable later through the control API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Worker heartbeat period in milliseconds.
    pub heartbeat_period_ms: u64,
    /// Missed heartbeats after which a node is down.
    pub heartbeat_misses: u32,
    /// Validity of node certificates, in seconds.
    pub cert_validity_secs: u64,
    /// Where service and task virtual IPs come from (see [`vip`]).
    #[serde(default = "default_vip_range")]
    pub vip_range: String,
}

fn default_vip_range() -> String {
    vip::DEFAULT_VIP_RANGE.to_string()
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            heartbeat_period_ms: 500,
            heartbeat_misses: 3,
            cert_validity_secs: 90 * 24 * 3600,
            vip_range: default_vip_range(),
        }
    }
}

/// The cluster object: identity, CA and join-token secrets. The CA key, the secrets and
/// the unlock key are sealed with the cluster's data key ([`crate::keys`]): Raft, the
/// snapshots and the `sm` tree only ever hold their ciphertext. The leader opens them
/// through `Manager::root_ca` and `Manager::join_secret`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// Random id, carried in every node certificate.
    pub id: String,
    /// Root CA certificate, PEM.
    pub ca_cert_pem: String,
    /// Root CA private key, PEM, sealed as [`Purpose::CaKey`](crate::keys::Purpose).
    pub ca_key: Sealed,
    /// Secret part of the worker join token, sealed as `WorkerSecret`.
    pub worker_secret: Sealed,
    /// Secret part of the manager join token, sealed as `ManagerSecret`.
    pub manager_secret: Sealed,
    /// With autolock, the unlock key, sealed as `UnlockKey`; `None` without autolock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock_key: Option<Sealed>,
    /// Settings.
    pub settings: Settings,
    /// Unix ms of `init`.
    pub created_ms: u64,
    /// The offset in the VIP range of the last address handed out.
    #[serde(default)]
    pub vip_cursor: u32,
}

/// A change to the state tables, replicated through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create the cluster (the first entry of a new cluster's log).
    InitCluster {
        /// The cluster object.
        cluster: Cluster,
        /// The first manager.
        node: Node,
    },
    /// Add a node that presented a valid join token.
    AddNode {
        /// The node, with status unknown.
        node: Node,
    },
    /// Control API: change a node's spec. `None` leaves a field alone.
    UpdateNodeSpec {
        /// Which node.
        id: NodeId,
        /// New role.
        role: Option<Role>,
        /// New availability.
        availability: Option<Availability>,
        /// Labels to set.
        labels_add: BTreeMap<String, String>,
        /// Labels to remove.
        labels_rm: Vec<String>,
    },
    /// Dispatcher: change a node's observed status.
    UpdateNodeStatus {
        /// Which node.
        id: NodeId,
        /// New status.
        status: NodeStatus,
        /// New description, when it changed.
        description: Option<NodeDescription>,
        /// Address the node reports (it may change after a restart).
        addr: Option<String>,
        /// Time of the change, unix ms.
        now_ms: u64,
    },
    /// Remove a node from the tables.
    RemoveNode {
        /// Which node.
        id: NodeId,
    },
    /// Replace a join-token secret (`join-token --rotate`).
    RotateSecret {
        /// Which token.
        role: Role,
        /// The new secret, sealed with the data key.
        secret: Sealed,
    },
    /// Turn autolock on or rotate its key (`Some`: the new unlock key sealed with the
    /// data key), or turn it off (`None`). Every manager re-wraps its data key file.
    SetUnlockKey {
        /// The new unlock key, sealed.
        unlock_key: Option<Sealed>,
    },
    /// Control API: create a service.
    CreateService {
        /// The service, validated.
        service: Service,
    },
    /// Control API: replace a service's spec (the service carries its new version).
    UpdateService {
        /// The service, validated.
        service: Service,
    },
    /// Control API (`service rollback`) or orchestrator (failure action rollback): put
    /// the previous spec back (the spec rolled back from becomes the previous one, the
    /// version is bumped) and start a rollback. Rejected if the service no longer has
    /// `version` or has no previous spec.
    RollbackService {
        /// Which.
        id: ServiceId,
        /// The version the rollback was decided on.
        version: u64,
        /// Why, for the update status.
        message: String,
        /// Unix ms.
        now_ms: u64,
    },
    /// Orchestrator: where services' updates stand. Each entry is applied only if its
    /// service still has the version it names; the others are skipped.
    SetUpdateStatus {
        /// Service, its version, its new update status.
        updates: Vec<(ServiceId, u64, UpdateStatus)>,
    },
    /// Control API: remove a service (the orchestrator then removes its tasks).
    RemoveService {
        /// Which.
        id: ServiceId,
    },
    /// Control API (`stack deploy`, `stack rm`): a stack's services created, updated and
    /// removed in one entry. Rejected whole, changing nothing, if any part no longer
    /// applies (a name taken meanwhile, a service changed or gone).
    DeployStack {
        /// New services.
        create: Vec<Service>,
        /// New specs (each with its new version).
        update: Vec<Service>,
        /// Services removed.
        remove: Vec<ServiceId>,
    },
    /// Orchestrator: new tasks.
    CreateTasks {
        /// The tasks.
        tasks: Vec<Task>,
    },
    /// Orchestrator: change desired states (only ever forward).
    SetTaskDesired {
        /// Task and its new desired state.
        updates: Vec<(TaskId, TaskState)>,
    },
    /// Orchestrator: forget tasks (history pruning, removed services).
    DeleteTasks {
        /// The tasks.
        ids: Vec<TaskId>,
    },
    /// Scheduler: place pending tasks, and say why the others stay pending.
    AssignTasks {
        /// Task and its node.
        assign: Vec<(TaskId, NodeId)>,
        /// Task and why it could not be placed.
        pending: Vec<(TaskId, String)>,
        /// Unix ms.
        now_ms: u64,
    },
    /// Dispatcher: observed statuses from agents, batched (only ever forward).
    UpdateTaskStatus {
        /// Task and its status.
        updates: Vec<(TaskId, TaskStatus)>,
    },
    /// Control API (`ca rotate`): start a root CA rotation. Rejected while one is in
    /// progress.
    StartCaRotation {
        /// The new root and its cross-signed certificate.
        rotation: rotation::CaRotation,
    },
    /// CA: `id` was issued a certificate of the rotation's new root (`new_digest`).
    CaNodeMoved {
        /// Which node.
        id: NodeId,
        /// The rotation it belongs to.
        new_digest: String,
    },
    /// Leader: every node has a certificate of the new root: it becomes the only root.
    /// Rejected unless the rotation `new_digest` is in progress and every node moved.
    FinishCaRotation {
        /// The rotation to finish.
        new_digest: String,
    },
    /// Does nothing; used as a read barrier and by benchmarks.
    Noop,
    /// Control API: `cmd` on behalf of a request that must apply once (see [`request`]).
    /// Applies `cmd` and records `request` with `reply`, unless `request` is already
    /// recorded: then nothing changes and the answer is [`Response::Duplicate`]. Prunes
    /// the table by `now_ms` first.
    Once {
        /// The request's id.
        request: RequestId,
        /// Unix ms, stamped by the proposer.
        now_ms: u64,
        /// The reply the caller gets, to give again to a retry (protobuf bytes);
        /// `None` when the reply is a read made after the write.
        reply: Option<Vec<u8>>,
        /// The write itself (not a `Once`).
        cmd: Box<Command>,
    },
}

/// What applying a command returned to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Response {
    /// Applied.
    #[default]
    Ok,
    /// The command was valid when proposed but not when applied (e.g. the node was
    /// removed meanwhile); nothing changed.
    Rejected(String),
    /// A [`Command::Once`] whose request was applied before: nothing changed; the reply
    /// recorded then.
    Duplicate(Option<Vec<u8>>),
}

/// The applied state tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The cluster object, once initialised.
    pub cluster: Option<Cluster>,
    /// Nodes by id.
    pub nodes: BTreeMap<NodeId, Node>,
    /// Services by id.
    #[serde(default)]
    pub services: BTreeMap<ServiceId, Service>,
    /// Tasks by id.
    #[serde(default)]
    pub tasks: BTreeMap<TaskId, Task>,
    /// Update statuses by service (a service that was never updated has none).
    #[serde(default)]
    pub update_status: BTreeMap<ServiceId, UpdateStatus>,
    /// Control writes applied recently, by request id (see [`request`]).
    #[serde(default)]
    pub requests: BTreeMap<RequestId, AppliedRequest>,
    /// A root CA rotation in progress (see [`rotation`]).
    #[serde(default)]
    pub ca_rotation: Option<rotation::CaRotation>,
    /// Image pins by service ([`image`]; written by the dispatcher's status command,
    /// dropped when the service's image changes or the service goes).
    #[serde(default)]
    pub image_pins: BTreeMap<ServiceId, ImagePin>,
}

/// The key of the cluster object in the `sm` tree.
pub const CLUSTER_KEY: &str = "cluster";

/// The key of a node in the `sm` tree.
pub fn node_key(id: NodeId) -> String {
    format!("node/{id}")
}

/// The key of a service in the `sm` tree.
pub fn service_key(id: &ServiceId) -> String {
    format!("service/{id}")
}

/// The key of a service's image pin in the `sm` tree.
pub fn pin_key(id: &ServiceId) -> String {
    format!("pin/{id}")
}

/// The key of a service's update status in the `sm` tree.
pub fn update_key(id: &ServiceId) -> String {
    format!("update/{id}")
}

/// The key of a task in the `sm` tree.
pub fn task_key(id: &TaskId) -> String {
    format!("task/{id}")
}

impl State {
    /// The next free virtual IP of the cluster's range, or empty when the range is
    /// full; moves the cursor (and adds the cluster's key to `keys` when it does).
    fn allocate_vip(&mut self, keys: &mut Vec<String>) -> String {
        let Some(c) = self.cluster.as_ref() else {
            return String::new();
        };
        let Ok(range) = vip::VipRange::parse(&c.settings.vip_range) else {
            return String::new();
        };
        let used: std::collections::BTreeSet<std::net::Ipv4Addr> = self
            .services
            .values()
            .map(|s| s.vip.as_str())
            .chain(self.tasks.values().map(|t| t.vip.as_str()))
            .filter_map(|v| v.parse().ok())
            .collect();
        let Some((ip, cursor)) = range.allocate(c.vip_cursor, &used) else {
            return String::new();
        };
        if let Some(c) = self.cluster.as_mut() {
            c.vip_cursor = cursor;
        }
        if !keys.iter().any(|k| k == CLUSTER_KEY) {
            keys.push(CLUSTER_KEY.into());
        }
        ip.to_string()
    }

    /// Applies one committed command. Returns the response for the proposer and the
    /// keys (see the module doc) whose value changed; [`State::value_of`] gives their
    /// new value, or `None` when deleted.
    pub fn apply(&mut self, cmd: &Command) -> (Response, Vec<String>) {
        match cmd {
            Command::InitCluster { cluster, node } => {
                if self.cluster.is_some() {
                    return (
                        Response::Rejected("the cluster already exists".into()),
                        vec![],
                    );
                }
                self.cluster = Some(cluster.clone());
                self.nodes.insert(node.id, node.clone());
                (Response::Ok, vec![CLUSTER_KEY.into(), node_key(node.id)])
            }
            Command::AddNode { node } => {
                self.nodes.insert(node.id, node.clone());
                (Response::Ok, vec![node_key(node.id)])
            }
            Command::UpdateNodeSpec {
                id,
                role,
                availability,
                labels_add,
                labels_rm,
            } => {
                let Some(n) = self.nodes.get_mut(id) else {
                    return (Response::Rejected(format!("node {id} not found")), vec![]);
                };
                if let Some(r) = role {
                    n.role = *r;
                }
                if let Some(a) = availability {
                    n.availability = *a;
                }
                for k in labels_rm {
                    n.labels.remove(k);
                }
                for (k, v) in labels_add {
                    n.labels.insert(k.clone(), v.clone());
                }
                (Response::Ok, vec![node_key(*id)])
            }
            Command::UpdateNodeStatus {
                id,
                status,
                description,
                addr,
                now_ms,
            } => {
                let Some(n) = self.nodes.get_mut(id) else {
                    return (Response::Rejected(format!("node {id} not found")), vec![]);
                };
                if n.status != *status {
                    n.status = *status;
                    n.status_changed_ms = *now_ms;
                }
                if let Some(d) = description {
                    n.description = d.clone();
                }
                if let Some(a) = addr {
                    n.addr = a.clone();
                }
                (Response::Ok, vec![node_key(*id)])
            }
            Command::RemoveNode { id } => {
                if self.nodes.remove(id).is_none() {
                    return (Response::Rejected(format!("node {id} not found")), vec![]);
                }
                (Response::Ok, vec![node_key(*id)])
            }
            Command::RotateSecret { role, secret } => {
                let Some(c) = self.cluster.as_mut() else {
                    return (Response::Rejected("no cluster".into()), vec![]);
                };
                match role {
                    Role::Manager => c.manager_secret = secret.clone(),
                    Role::Worker => c.worker_secret = secret.clone(),
                }
                (Response::Ok, vec![CLUSTER_KEY.into()])
            }
            Command::SetUnlockKey { unlock_key } => {
                let Some(c) = self.cluster.as_mut() else {
                    return (Response::Rejected("no cluster".into()), vec![]);
                };
                c.unlock_key = unlock_key.clone();
                (Response::Ok, vec![CLUSTER_KEY.into()])
            }
            Command::CreateService { service } => {
                if self
                    .services
                    .values()
                    .any(|s| s.spec.name == service.spec.name)
                {
                    return (
                        Response::Rejected(format!("service {} already exists", service.spec.name)),
                        vec![],
                    );
                }
                let mut service = service.clone();
                let mut keys = vec![service_key(&service.id)];
                service.vip = self.allocate_vip(&mut keys);
                self.services.insert(service.id.clone(), service);
                (Response::Ok, keys)
            }
            Command::UpdateService { service } => {
                match self.services.get(&service.id) {
                    Some(old) if old.version < service.version => {}
                    Some(_) => {
                        return (
                            Response::Rejected(format!(
                                "service {} was changed meanwhile: retry",
                                service.spec.name
                            )),
                            vec![],
                        )
                    }
                    None => {
                        return (
                            Response::Rejected(format!("service {} not found", service.spec.name)),
                            vec![],
                        )
                    }
                }
                let mut service = service.clone();
                let old = &self.services[&service.id];
                service.vip = old.vip.clone();
                let mut keys = vec![service_key(&service.id)];
                let paused = self
                    .update_status
                    .get_mut(&service.id)
                    .filter(|u| u.state == service::UpdateState::Paused);
                if service::starts_update(&old.spec, &service.spec) {
                    let status = UpdateStatus::new(
                        service::UpdateState::Updating,
                        service.version,
                        service.updated_ms,
                        "update in progress",
                    );
                    self.update_status.insert(service.id.clone(), status);
                    keys.push(update_key(&service.id));
                } else if let Some(u) = paused.filter(|_| old.spec.update != service.spec.update) {
                    // New update settings resume a paused update where it stopped.
                    u.state = service::UpdateState::Updating;
                    u.message = "update resumed".into();
                    keys.push(update_key(&service.id));
                }
                let id = service.id.clone();
                self.services.insert(id.clone(), service);
                self.drop_stale_pin(&id, &mut keys);
                (Response::Ok, keys)
            }
            Command::RollbackService {
                id,
                version,
                message,
                now_ms,
            } => {
                let Some(svc) = self.services.get_mut(id) else {
                    return (
                        Response::Rejected(format!("service {id} not found")),
                        vec![],
                    );
                };
                if svc.version != *version {
                    return (
                        Response::Rejected(format!(
                            "service {} was changed meanwhile: retry",
                            svc.spec.name
                        )),
                        vec![],
                    );
                }
                let Some(previous) = svc.previous_spec.take() else {
                    return (
                        Response::Rejected(format!(
                            "service {} has no previous spec to roll back to",
                            svc.spec.name
                        )),
                        vec![],
                    );
                };
                let current = std::mem::replace(&mut svc.spec, previous);
                svc.previous_spec = Some(current);
                svc.version += 1;
                svc.updated_ms = *now_ms;
                let mut keys = vec![service_key(id)];
                if !svc.spec.mode.is_job() {
                    let status = UpdateStatus::new(
                        service::UpdateState::RollbackStarted,
                        svc.version,
                        *now_ms,
                        message.clone(),
                    );
                    self.update_status.insert(id.clone(), status);
                    keys.push(update_key(id));
                }
                self.drop_stale_pin(id, &mut keys);
                (Response::Ok, keys)
            }
            Command::SetUpdateStatus { updates } => {
                let mut keys = vec![];
                for (id, version, status) in updates {
                    if self.services.get(id).is_some_and(|s| s.version == *version) {
                        self.update_status.insert(id.clone(), status.clone());
                        keys.push(update_key(id));
                    }
                }
                (Response::Ok, keys)
            }
            Command::RemoveService { id } => {
                if self.services.remove(id).is_none() {
                    return (
                        Response::Rejected(format!("service {id} not found")),
                        vec![],
                    );
                }
                let mut keys = vec![service_key(id)];
                if self.update_status.remove(id).is_some() {
                    keys.push(update_key(id));
                }
                if self.image_pins.remove(id).is_some() {
                    keys.push(pin_key(id));
                }
                (Response::Ok, keys)
            }
            Command::DeployStack {
                create,
                update,
                remove,
            } => {
                for svc in create {
                    let taken = self
                        .services
                        .values()
                        .any(|s| s.spec.name == svc.spec.name && !remove.contains(&s.id));
                    let twice = create
                        .iter()
                        .filter(|c| c.spec.name == svc.spec.name)
                        .count()
                        > 1;
                    if taken || twice {
                        return (
                            Response::Rejected(format!("service {} already exists", svc.spec.name)),
                            vec![],
                        );
                    }
                }
                for svc in update {
                    match self.services.get(&svc.id) {
                        Some(old) if old.version < svc.version && !remove.contains(&svc.id) => {}
                        _ => {
                            return (
                                Response::Rejected(format!(
                                    "service {} was changed meanwhile: retry",
                                    svc.spec.name
                                )),
                                vec![],
                            )
                        }
                    }
                }
                if let Some(id) = remove.iter().find(|id| !self.services.contains_key(id)) {
                    return (
                        Response::Rejected(format!("service {id} was removed meanwhile: retry")),
                        vec![],
                    );
                }
                let mut keys = vec![];
                let parts = remove
                    .iter()
                    .map(|id| Command::RemoveService { id: id.clone() })
                    .chain(
                        update
                            .iter()
                            .map(|s| Command::UpdateService { service: s.clone() }),
                    )
                    .chain(
                        create
                            .iter()
                            .map(|s| Command::CreateService { service: s.clone() }),
                    );
                for c in parts {
                    let (r, k) = self.apply(&c);
                    debug_assert_eq!(r, Response::Ok, "checked above");
                    keys.extend(k);
                }
                (Response::Ok, keys)
            }
            Command::CreateTasks { tasks } => {
                let mut keys = vec![];
                for t in tasks {
                    if self.tasks.contains_key(&t.id) {
                        continue;
                    }
                    let mut t = t.clone();
                    t.vip = self.allocate_vip(&mut keys);
                    keys.push(task_key(&t.id));
                    self.tasks.insert(t.id.clone(), t);
                }
                (Response::Ok, keys)
            }
            Command::SetTaskDesired { updates } => {
                let mut keys = vec![];
                for (id, desired) in updates {
                    if let Some(t) = self.tasks.get_mut(id) {
                        if *desired > t.desired_state {
                            t.desired_state = *desired;
                            keys.push(task_key(id));
                        }
                    }
                }
                (Response::Ok, keys)
            }
            Command::DeleteTasks { ids } => {
                let mut keys = vec![];
                for id in ids {
                    if self.tasks.remove(id).is_some() {
                        keys.push(task_key(id));
                    }
                }
                (Response::Ok, keys)
            }
            Command::AssignTasks {
                assign,
                pending,
                now_ms,
            } => {
                let mut keys = vec![];
                for (id, node) in assign {
                    if let Some(t) = self.tasks.get_mut(id) {
                        if t.status.state <= TaskState::Pending
                            && t.desired_state <= TaskState::Running
                        {
                            t.node_id = Some(*node);
                            t.status = TaskStatus::new(TaskState::Assigned, "scheduled", *now_ms);
                            keys.push(task_key(id));
                        }
                    }
                }
                for (id, why) in pending {
                    if let Some(t) = self.tasks.get_mut(id) {
                        if t.status.state <= TaskState::Pending && t.status.message != *why {
                            t.status = TaskStatus::new(TaskState::Pending, why.clone(), *now_ms);
                            keys.push(task_key(id));
                        }
                    }
                }
                (Response::Ok, keys)
            }
            Command::UpdateTaskStatus { updates } => {
                let mut keys = vec![];
                for (id, status) in updates {
                    if let Some(t) = self.tasks.get_mut(id) {
                        if status.state >= t.status.state && *status != t.status {
                            t.status = status.clone();
                            keys.push(task_key(id));
                        }
                    }
                    // The dispatcher's pin (see `image`): the first task of a service
                    // to start pins its image.
                    // Only from a report that was applied (not one that moved back).
                    let Some(t) = self.tasks.get(id).filter(|t| t.status == *status) else {
                        continue;
                    };
                    let Some(svc) = self.services.get(&t.service_id) else {
                        continue;
                    };
                    let current = self.image_pins.get(&svc.id);
                    if let Some(pin) = image::pin_from_report(svc, current, t, status) {
                        let sid = svc.id.clone();
                        keys.push(pin_key(&sid));
                        self.image_pins.insert(sid, pin);
                    }
                }
                (Response::Ok, keys)
            }
            Command::StartCaRotation { rotation } => {
                if self.cluster.is_none() {
                    return (Response::Rejected("no cluster".into()), vec![]);
                }
                if let Some(r) = &self.ca_rotation {
                    return (
                        Response::Rejected(format!(
                            "a CA rotation (to root {}) is already in progress",
                            &r.new_digest[..12.min(r.new_digest.len())]
                        )),
                        vec![],
                    );
                }
                self.ca_rotation = Some(rotation.clone());
                (Response::Ok, vec![rotation::ROTATION_KEY.into()])
            }
            Command::CaNodeMoved { id, new_digest } => match self.ca_rotation.as_mut() {
                Some(r) if r.new_digest == *new_digest => {
                    if r.moved.insert(*id) {
                        (Response::Ok, vec![rotation::ROTATION_KEY.into()])
                    } else {
                        (Response::Ok, vec![])
                    }
                }
                _ => (
                    Response::Rejected("that CA rotation is not in progress".into()),
                    vec![],
                ),
            },
            Command::FinishCaRotation { new_digest } => {
                let (Some(r), Some(c)) = (self.ca_rotation.as_ref(), self.cluster.as_mut()) else {
                    return (
                        Response::Rejected("no CA rotation is in progress".into()),
                        vec![],
                    );
                };
                if r.new_digest != *new_digest {
                    return (
                        Response::Rejected("that CA rotation is not in progress".into()),
                        vec![],
                    );
                }
                let pending = r.pending(self.nodes.keys());
                if !pending.is_empty() {
                    return (
                        Response::Rejected(format!(
                            "{} nodes have no certificate of the new root yet",
                            pending.len()
                        )),
                        vec![],
                    );
                }
                c.ca_cert_pem = r.new_cert_pem.clone();
                c.ca_key = r.new_key.clone();
                c.settings.cert_validity_secs = r.cert_validity_secs;
                self.ca_rotation = None;
                (
                    Response::Ok,
                    vec![CLUSTER_KEY.into(), rotation::ROTATION_KEY.into()],
                )
            }
            Command::Noop => (Response::Ok, vec![]),
            Command::Once {
                request,
                now_ms,
                reply,
                cmd,
            } => {
                if matches!(**cmd, Command::Once { .. }) {
                    return (
                        Response::Rejected("a request within a request".into()),
                        vec![],
                    );
                }
                let pruned = request::prune(&mut self.requests, *now_ms, None);
                let mut keys: Vec<String> = pruned.iter().map(request::request_key).collect();
                if let Some(first) = self.requests.get(request) {
                    return (Response::Duplicate(first.reply.clone()), keys);
                }
                let (response, changed) = self.apply(cmd);
                keys.extend(changed);
                if response == Response::Ok {
                    let applied = AppliedRequest {
                        at_ms: *now_ms,
                        reply: reply.clone(),
                    };
                    let pruned = request::prune(&mut self.requests, *now_ms, Some(&applied));
                    keys.extend(pruned.iter().map(request::request_key));
                    self.requests.insert(request.clone(), applied);
                    keys.push(request::request_key(request));
                }
                (response, keys)
            }
        }
    }

    /// The JSON value now stored under `key`, `None` if the key is absent.
    pub fn value_of(&self, key: &str) -> Option<Vec<u8>> {
        if key == CLUSTER_KEY {
            return self
                .cluster
                .as_ref()
                .map(|c| serde_json::to_vec(c).expect("cluster encodes"));
        }
        if let Some(id) = key.strip_prefix("service/") {
            return self
                .services
                .get(&ServiceId(id.to_string()))
                .map(|s| serde_json::to_vec(s).expect("service encodes"));
        }
        if let Some(id) = key.strip_prefix("task/") {
            return self
                .tasks
                .get(&TaskId(id.to_string()))
                .map(|t| serde_json::to_vec(t).expect("task encodes"));
        }
        if let Some(id) = key.strip_prefix("update/") {
            return self
                .update_status
                .get(&ServiceId(id.to_string()))
                .map(|u| serde_json::to_vec(u).expect("update status encodes"));
        }
        if key == rotation::ROTATION_KEY {
            return self
                .ca_rotation
                .as_ref()
                .map(|r| serde_json::to_vec(r).expect("rotation encodes"));
        }
        if let Some(id) = key.strip_prefix("request/") {
            return self
                .requests
                .get(&RequestId(id.to_string()))
                .map(|r| serde_json::to_vec(r).expect("applied request encodes"));
        }
        if let Some(id) = key.strip_prefix("pin/") {
            return self
                .image_pins
                .get(&ServiceId(id.to_string()))
                .map(|p| serde_json::to_vec(p).expect("image pin encodes"));
        }
        let id = key.strip_prefix("node/")?.parse::<NodeId>().ok()?;
        self.nodes
            .get(&id)
            .map(|n| serde_json::to_vec(n).expect("node encodes"))
    }

    /// Loads one `sm` key/value pair (the inverse of [`State::value_of`]); other keys are
    /// ignored.
    pub fn load(&mut self, key: &str, value: &[u8]) -> Result<()> {
        if key == CLUSTER_KEY {
            self.cluster = Some(serde_json::from_slice(value)?);
        } else if key.starts_with("node/") {
            let n: Node = serde_json::from_slice(value)?;
            self.nodes.insert(n.id, n);
        } else if key.starts_with("service/") {
            let sv: Service = serde_json::from_slice(value)?;
            self.services.insert(sv.id.clone(), sv);
        } else if key.starts_with("task/") {
            let t: Task = serde_json::from_slice(value)?;
            self.tasks.insert(t.id.clone(), t);
        } else if let Some(id) = key.strip_prefix("update/") {
            let u: UpdateStatus = serde_json::from_slice(value)?;
            self.update_status.insert(ServiceId(id.to_string()), u);
        } else if key == rotation::ROTATION_KEY {
            self.ca_rotation = Some(serde_json::from_slice(value)?);
        } else if let Some(id) = key.strip_prefix("request/") {
            let r: AppliedRequest = serde_json::from_slice(value)?;
            self.requests.insert(RequestId(id.to_string()), r);
        } else if let Some(id) = key.strip_prefix("pin/") {
            let p: ImagePin = serde_json::from_slice(value)?;
            self.image_pins.insert(ServiceId(id.to_string()), p);
        }
        Ok(())
    }

    /// Drops the image pin of service `id` if it is for another image than the
    /// service's spec now names (an update, rollback or stack deploy changed it).
    fn drop_stale_pin(&mut self, id: &ServiceId, keys: &mut Vec<String>) {
        let image = self.services.get(id).map(|s| &s.spec.task.container.image);
        if self
            .image_pins
            .get(id)
            .is_some_and(|p| Some(&p.image) != image)
        {
            self.image_pins.remove(id);
            keys.push(pin_key(id));
        }
    }

    /// The pin of `t`'s service if it is for `t`'s image (a task of an older spec,
    /// with another image, has none).
    pub fn pin_for(&self, t: &Task) -> Option<&ImagePin> {
        self.image_pins
            .get(&t.service_id)
            .filter(|p| p.image == t.spec.container.image)
    }

    /// The managers, in id order.
    pub fn managers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values().filter(|n| n.role == Role::Manager)
    }

    /// Every key that [`State::value_of`] would give a value for (for snapshots).
    pub fn keys(&self) -> Vec<String> {
        let mut keys = vec![];
        if self.cluster.is_some() {
            keys.push(CLUSTER_KEY.to_string());
        }
        keys.extend(self.nodes.keys().map(|id| node_key(*id)));
        keys.extend(self.services.keys().map(service_key));
        keys.extend(self.tasks.keys().map(task_key));
        keys.extend(self.update_status.keys().map(update_key));
        keys.extend(self.requests.keys().map(request::request_key));
        if self.ca_rotation.is_some() {
            keys.push(rotation::ROTATION_KEY.into());
        }
        keys.extend(self.image_pins.keys().map(pin_key));
        keys
    }

    /// Finds a service by id, unique id prefix or name.
    pub fn find_service(&self, what: &str) -> Result<&Service> {
        if let Some(s) = self.services.values().find(|s| s.spec.name == what) {
            return Ok(s);
        }
        let by_prefix: Vec<&Service> = self
            .services
            .values()
            .filter(|s| !what.is_empty() && s.id.0.starts_with(what))
            .collect();
        match by_prefix.len() {
            1 => Ok(by_prefix[0]),
            0 => Err(Error::NotFound(format!("service {what} not found"))),
            _ => Err(Error::InvalidInput(format!(
                "service {what} is ambiguous: give more of its id"
            ))),
        }
    }

    /// The tasks of a service.
    pub fn tasks_of<'a>(&'a self, id: &'a ServiceId) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks.values().filter(move |t| &t.service_id == id)
    }

    /// Finds a node by full id, unique id prefix or hostname.
    pub fn find_node(&self, what: &str) -> Result<&Node> {
        if let Ok(id) = what.parse::<NodeId>() {
            if what.len() == 16 {
                if let Some(n) = self.nodes.get(&id) {
                    return Ok(n);
                }
            }
        }
        let by_prefix: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| n.id.to_string().starts_with(what))
            .collect();
        if by_prefix.len() == 1 {
            return Ok(by_prefix[0]);
        }
        let by_name: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| n.description.hostname == what)
            .collect();
        match (by_prefix.len(), by_name.len()) {
            (_, 1) => Ok(by_name[0]),
            (0, 0) => Err(Error::NotFound(format!("node {what} not found"))),
            _ => Err(Error::InvalidInput(format!(
                "node {what} is ambiguous: give more of its id"
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
