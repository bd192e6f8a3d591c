//! The commands that change the state tables (replicated through Raft), and what
//! applying one answers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

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
    /// Control API (`stack deploy`, `stack rm`): a stack's networks and services created,
    /// updated and removed in one entry, in this order: networks created, services
    /// removed, updated, created, networks removed. Rejected whole, changing nothing, if
    /// any part no longer applies (a name taken meanwhile, a service changed or gone, a
    /// network missing or still in use).
    DeployStack {
        /// New services.
        create: Vec<Service>,
        /// New specs (each with its new version).
        update: Vec<Service>,
        /// Services removed.
        remove: Vec<ServiceId>,
        /// New networks (created before the services that use them).
        create_networks: Vec<Network>,
        /// Networks removed (after the services that used them).
        remove_networks: Vec<NetworkId>,
        /// New secrets and configs (created first, with the networks).
        #[serde(default)]
        create_secrets: Vec<Secret>,
        /// New contents of secrets and configs (after the creations, before the
        /// services: each moves the services that use it and that this entry does not
        /// update itself, as [`Command::UpdateSecret`] does).
        #[serde(default)]
        update_secrets: Vec<SecretUpdate>,
        /// Secrets and configs removed (last).
        #[serde(default)]
        remove_secrets: Vec<(secret::Kind, SecretId)>,
    },
    /// Control API: create a network. Rejected if its name or id is taken, or the
    /// cluster holds [`network::MAX_NETWORKS`] already.
    CreateNetwork {
        /// The network, validated.
        network: Network,
    },
    /// Control API: remove a network. Rejected if it is missing, the built-in one, or
    /// any service is on it (the message names them).
    RemoveNetwork {
        /// Which.
        id: NetworkId,
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
    /// Orchestrator: where slots' following volumes live now ([`volume`]).
    SetVolumeHomes {
        /// The homes, each replacing its slot's.
        homes: Vec<volume::VolumeHome>,
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
    /// Control API: create a secret or config (its content sealed). Rejected if its
    /// name or id is taken in its table, or the table is full.
    CreateSecret {
        /// The secret, validated, with its one version.
        secret: Secret,
    },
    /// Control API: a new content for a secret or config (a rotation). Rejected unless
    /// the version is the next one; every service that uses it moves to it (see
    /// [`secret`]).
    UpdateSecret {
        /// Which, and the new version.
        update: SecretUpdate,
        /// Unix ms.
        now_ms: u64,
    },
    /// Control API: remove a secret or config. Rejected if missing or in use (the
    /// message names the services).
    RemoveSecret {
        /// Secret or config.
        kind: secret::Kind,
        /// Which.
        id: SecretId,
    },
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
    /// Commands proposed at the same time, in one Raft entry (group commit: see
    /// [`crate::manager::propose`]). Each is applied in order as if it were an entry of
    /// its own, with its own response ([`Response::Batch`]); one rejected changes
    /// nothing of the others. Never nested.
    Batch {
        /// The commands, none of them a `Batch`.
        cmds: Vec<Command>,
    },
}

/// A new content of a secret or config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretUpdate {
    /// Secret or config.
    pub kind: secret::Kind,
    /// Which.
    pub id: SecretId,
    /// The new version (its number one more than the current one's).
    pub version: secret::Version,
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
    /// The responses of a [`Command::Batch`]'s commands, in their order.
    Batch(Vec<Response>),
}
