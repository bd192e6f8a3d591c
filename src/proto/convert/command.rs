//! The store's [`Command`] (and the node and cluster records it carries) ↔ the
//! messages of `proto/commands.proto`: what a Raft entry carries.
//!
//! Same rules as the parent module: store → wire cannot fail; wire → store names the
//! field it refuses. [`encode`] and [`decode`] are the entry payload's bytes.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;

use super::{enum_of, invalid};
use crate::error::{Error, Result};
use crate::proto as pb;
use crate::store::request::{AppliedRequest, RequestId};
use crate::store::rotation::CaRotation;
use crate::store::service::ServiceId;
use crate::store::task::{TaskId, TaskState, TaskStatus};
use crate::store::volume::VolumeHome;
use crate::store::Sealed;
use crate::store::{
    Availability, Cluster, Command, NetworkId, Node, NodeDescription, NodeId, NodeStatus, Role,
    Settings, State,
};

enum_pairs!(Role, Role { Manager => Manager, Worker => Worker });
enum_pairs!(Availability, Availability { Active => Active, Pause => Pause, Drain => Drain });
enum_pairs!(NodeStatus, NodeStatus { Unknown => Unknown, Ready => Ready, Down => Down });

/// The bytes of a command as a Raft entry carries it.
pub fn encode(cmd: &Command) -> Vec<u8> {
    pb::Command::from(cmd.clone()).encode_to_vec()
}

/// The size of [`encode`]'s bytes.
pub fn encoded_len(cmd: &Command) -> usize {
    pb::Command::from(cmd.clone()).encoded_len()
}

/// A command from the bytes of a Raft entry.
pub fn decode(bytes: &[u8]) -> Result<Command> {
    let cmd = pb::Command::decode(bytes)
        .map_err(|e| Error::InvalidInput(format!("command: not a command message: {e}")))?;
    cmd.try_into()
}

impl From<NodeDescription> for pb::NodeDescription {
    fn from(d: NodeDescription) -> Self {
        pb::NodeDescription {
            hostname: d.hostname,
            cpus: d.cpus,
            memory_bytes: d.memory_bytes,
            os: d.os,
            arch: d.arch,
            engine_version: d.engine_version,
            engine_labels: d.engine_labels.into_iter().collect(),
            data_port: d.data_port.into(),
            generic_resources: d.generic_resources.into_iter().collect(),
        }
    }
}

impl From<pb::NodeDescription> for NodeDescription {
    fn from(d: pb::NodeDescription) -> Self {
        NodeDescription {
            hostname: d.hostname,
            cpus: d.cpus,
            memory_bytes: d.memory_bytes,
            os: d.os,
            arch: d.arch,
            engine_version: d.engine_version,
            engine_labels: d.engine_labels.into_iter().collect(),
            // A number that is no port reads as none: the node serves no data path.
            data_port: u16::try_from(d.data_port).unwrap_or(0),
            generic_resources: d.generic_resources.into_iter().collect(),
        }
    }
}

impl From<Node> for pb::Node {
    fn from(n: Node) -> Self {
        pb::Node {
            id: n.id.0,
            addr: n.addr,
            role: n.role.into(),
            availability: n.availability.into(),
            labels: n.labels.into_iter().collect(),
            status: n.status.into(),
            description: Some(n.description.into()),
            status_changed_ms: n.status_changed_ms,
            created_ms: n.created_ms,
        }
    }
}

impl TryFrom<pb::Node> for Node {
    type Error = Error;
    fn try_from(n: pb::Node) -> Result<Self> {
        Ok(Node {
            id: NodeId(n.id),
            addr: n.addr,
            role: enum_of::<pb::Role, _>("node.role", n.role)?,
            availability: enum_of::<pb::Availability, _>("node.availability", n.availability)?,
            labels: n.labels.into_iter().collect(),
            status: enum_of::<pb::NodeStatus, _>("node.status", n.status)?,
            description: n.description.map(Into::into).unwrap_or_default(),
            status_changed_ms: n.status_changed_ms,
            created_ms: n.created_ms,
        })
    }
}

impl From<Settings> for pb::Settings {
    fn from(s: Settings) -> Self {
        pb::Settings {
            heartbeat_period_ms: s.heartbeat_period_ms,
            heartbeat_misses: s.heartbeat_misses,
            cert_validity_secs: s.cert_validity_secs,
            vip_range: s.vip_range,
        }
    }
}

impl From<pb::Settings> for Settings {
    fn from(s: pb::Settings) -> Self {
        Settings {
            heartbeat_period_ms: s.heartbeat_period_ms,
            heartbeat_misses: s.heartbeat_misses,
            cert_validity_secs: s.cert_validity_secs,
            vip_range: s.vip_range,
        }
    }
}

fn sealed(s: Sealed) -> String {
    s.as_str().to_string()
}

fn unseal_text(s: String) -> Sealed {
    Sealed::from_stored(s)
}

impl From<Cluster> for pb::Cluster {
    fn from(c: Cluster) -> Self {
        pb::Cluster {
            id: c.id,
            ca_cert_pem: c.ca_cert_pem,
            ca_key: sealed(c.ca_key),
            worker_secret: sealed(c.worker_secret),
            manager_secret: sealed(c.manager_secret),
            unlock_key: c.unlock_key.map(sealed),
            settings: Some(c.settings.into()),
            created_ms: c.created_ms,
            vip_cursor: c.vip_cursor,
        }
    }
}

impl TryFrom<pb::Cluster> for Cluster {
    type Error = Error;
    fn try_from(c: pb::Cluster) -> Result<Self> {
        Ok(Cluster {
            id: c.id,
            ca_cert_pem: c.ca_cert_pem,
            ca_key: unseal_text(c.ca_key),
            worker_secret: unseal_text(c.worker_secret),
            manager_secret: unseal_text(c.manager_secret),
            unlock_key: c.unlock_key.map(unseal_text),
            settings: c
                .settings
                .ok_or_else(|| invalid("cluster.settings", "must be set"))?
                .into(),
            created_ms: c.created_ms,
            vip_cursor: c.vip_cursor,
        })
    }
}

impl From<CaRotation> for pb::CaRotation {
    fn from(r: CaRotation) -> Self {
        pb::CaRotation {
            new_cert_pem: r.new_cert_pem,
            new_key: sealed(r.new_key),
            cross_pem: r.cross_pem,
            new_digest: r.new_digest,
            cert_validity_secs: r.cert_validity_secs,
            moved: r.moved.into_iter().map(|n| n.0).collect(),
            started_ms: r.started_ms,
        }
    }
}

impl From<pb::CaRotation> for CaRotation {
    fn from(r: pb::CaRotation) -> Self {
        CaRotation {
            new_cert_pem: r.new_cert_pem,
            new_key: unseal_text(r.new_key),
            cross_pem: r.cross_pem,
            new_digest: r.new_digest,
            cert_validity_secs: r.cert_validity_secs,
            moved: r.moved.into_iter().map(NodeId).collect::<BTreeSet<_>>(),
            started_ms: r.started_ms,
        }
    }
}

/// The member table a worker is sent ([`pb::Members`]).
pub fn members_out(members: &BTreeMap<NodeId, Role>) -> pb::Members {
    pb::Members {
        roles: members
            .iter()
            .map(|(id, role)| (id.0, i32::from(*role)))
            .collect(),
        partial: false,
        removed: vec![],
    }
}

/// A digest of a member table, the same wherever it is: the first 16 bytes of the
/// SHA-256 of each member's id and role in id order (see [`crate::mesh::wire::Digest`]).
pub fn members_digest(members: &BTreeMap<NodeId, Role>) -> u128 {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for (id, role) in members {
        h.update(id.0.to_be_bytes());
        h.update(i32::from(*role).to_be_bytes());
    }
    u128::from_be_bytes(h.finalize()[..16].try_into().expect("16 bytes"))
}

/// What changed from member table `old` to `new`, as its message: the members new or
/// with another role, and those gone. Pure.
pub fn member_changes(old: &BTreeMap<NodeId, Role>, new: &BTreeMap<NodeId, Role>) -> pb::Members {
    pb::Members {
        roles: new
            .iter()
            .filter(|(id, role)| old.get(id) != Some(role))
            .map(|(id, role)| (id.0, i32::from(*role)))
            .collect(),
        partial: true,
        removed: old
            .keys()
            .filter(|id| !new.contains_key(id))
            .map(|id| id.0)
            .collect(),
    }
}

/// The member table from its message, applied to the table held: a whole table
/// replaces it, changes go onto it. `None` when changes come with no table held (the
/// leader sends the whole table first in every session).
pub fn members_in(
    held: Option<BTreeMap<NodeId, Role>>,
    m: pb::Members,
) -> Result<Option<BTreeMap<NodeId, Role>>> {
    let roles: BTreeMap<NodeId, Role> = m
        .roles
        .into_iter()
        .map(|(id, role)| Ok((NodeId(id), enum_of::<pb::Role, _>("members.roles", role)?)))
        .collect::<Result<_>>()?;
    if !m.partial {
        return Ok(Some(roles));
    }
    Ok(held.map(|mut h| {
        for id in m.removed {
            h.remove(&NodeId(id));
        }
        h.extend(roles);
        h
    }))
}

impl From<(TaskId, TaskStatus)> for pb::TaskStatusUpdate {
    fn from((id, status): (TaskId, TaskStatus)) -> Self {
        pb::TaskStatusUpdate {
            task_id: id.0,
            status: Some(status.into()),
        }
    }
}

impl TryFrom<pb::TaskStatusUpdate> for (TaskId, TaskStatus) {
    type Error = Error;
    fn try_from(u: pb::TaskStatusUpdate) -> Result<Self> {
        Ok((
            TaskId(u.task_id),
            need(u.status, "update_task_status.status")?.try_into()?,
        ))
    }
}

impl From<State> for pb::State {
    fn from(s: State) -> Self {
        pb::State {
            cluster: s.cluster.map(Into::into),
            nodes: s.nodes.into_values().map(Into::into).collect(),
            services: s.services.into_values().map(Into::into).collect(),
            tasks: s.tasks.into_values().map(Into::into).collect(),
            update_status: s
                .update_status
                .into_iter()
                .map(|(id, status)| pb::UpdateStatusEntry {
                    service_id: id.0,
                    status: Some(status.into()),
                })
                .collect(),
            requests: s
                .requests
                .into_iter()
                .map(|(id, r)| pb::AppliedRequestEntry {
                    request: id.0,
                    at_ms: r.at_ms,
                    reply: r.reply,
                })
                .collect(),
            ca_rotation: s.ca_rotation.map(Into::into),
            image_pins: s
                .image_pins
                .into_iter()
                .map(|(id, pin)| pb::ImagePinEntry {
                    service_id: id.0,
                    pin: Some(pin.into()),
                })
                .collect(),
            networks: s.networks.into_values().map(Into::into).collect(),
            secrets: s.secrets.into_values().map(Into::into).collect(),
            configs: s.configs.into_values().map(Into::into).collect(),
            volume_homes: s.volume_homes.into_values().map(Into::into).collect(),
        }
    }
}

impl From<VolumeHome> for pb::VolumeHome {
    fn from(h: VolumeHome) -> Self {
        pb::VolumeHome {
            service_id: h.service_id.0,
            slot: h.slot,
            node: h.node.0,
            task: h.task.0,
            generation: h.generation,
            stale: h.stale.into_iter().map(|n| n.0).collect(),
            since_ms: h.since_ms,
        }
    }
}

impl From<pb::VolumeHome> for VolumeHome {
    fn from(h: pb::VolumeHome) -> Self {
        VolumeHome {
            service_id: ServiceId(h.service_id),
            slot: h.slot,
            node: NodeId(h.node),
            task: TaskId(h.task),
            generation: h.generation,
            stale: h.stale.into_iter().map(NodeId).collect(),
            since_ms: h.since_ms,
        }
    }
}

impl TryFrom<pb::State> for State {
    type Error = Error;
    fn try_from(s: pb::State) -> Result<Self> {
        let mut state = State {
            cluster: s.cluster.map(TryInto::try_into).transpose()?,
            ca_rotation: s.ca_rotation.map(Into::into),
            ..State::default()
        };
        for n in s.nodes {
            let n: Node = n.try_into()?;
            state.nodes.insert(n.id, n);
        }
        for svc in s.services {
            let svc: crate::store::Service = svc.try_into()?;
            state.services.insert(svc.id.clone(), svc);
        }
        for t in s.tasks {
            let t: crate::store::Task = t.try_into()?;
            state.tasks.insert(t.id.clone(), t);
        }
        for u in s.update_status {
            let status = need(u.status, "state.update_status.status")?.try_into()?;
            state.update_status.insert(ServiceId(u.service_id), status);
        }
        for r in s.requests {
            state.requests.insert(
                RequestId(r.request),
                AppliedRequest {
                    at_ms: r.at_ms,
                    reply: r.reply,
                },
            );
        }
        for p in s.image_pins {
            let pin = need(p.pin, "state.image_pins.pin")?.into();
            state.image_pins.insert(ServiceId(p.service_id), pin);
        }
        for n in s.networks {
            let n: crate::store::Network = n.try_into()?;
            state.networks.insert(n.id.clone(), n);
        }
        for h in s.volume_homes {
            let h: VolumeHome = h.into();
            state.volume_homes.insert((h.service_id.clone(), h.slot), h);
        }
        for sec in s.secrets.into_iter().chain(s.configs) {
            let sec: crate::store::Secret = sec.try_into()?;
            state.table_mut(sec.kind).insert(sec.id.clone(), sec);
        }
        Ok(state)
    }
}

fn services(v: Vec<crate::store::Service>) -> Vec<pb::Service> {
    v.into_iter().map(Into::into).collect()
}

fn services_in(field: &str, v: Vec<pb::Service>) -> Result<Vec<crate::store::Service>> {
    v.into_iter()
        .map(|s| {
            s.try_into()
                .map_err(|e: Error| invalid(field, e.to_string()))
        })
        .collect()
}

fn ids(v: Vec<TaskId>) -> Vec<String> {
    v.into_iter().map(|t| t.0).collect()
}

impl From<Command> for pb::Command {
    // Long by design: one arm per `Command` variant, read side by side with the enum
    // and with `try_from` below; cutting it would only scatter the table.
    fn from(c: Command) -> Self {
        use pb::command::Kind as K;
        let kind = match c {
            Command::InitCluster { cluster, node } => K::InitCluster(pb::InitCluster {
                cluster: Some(cluster.into()),
                node: Some(node.into()),
            }),
            Command::AddNode { node } => K::AddNode(node.into()),
            Command::UpdateNodeSpec {
                id,
                role,
                availability,
                labels_add,
                labels_rm,
            } => K::UpdateNodeSpec(pb::UpdateNodeSpec {
                id: id.0,
                role: role.map(Into::into),
                availability: availability.map(Into::into),
                labels_add: labels_add.into_iter().collect(),
                labels_rm,
            }),
            Command::UpdateNodeStatus {
                id,
                status,
                description,
                addr,
                now_ms,
            } => K::UpdateNodeStatus(pb::UpdateNodeStatus {
                id: id.0,
                status: status.into(),
                description: description.map(Into::into),
                addr,
                now_ms,
            }),
            Command::RemoveNode { id } => K::RemoveNode(id.0),
            Command::RotateSecret { role, secret } => K::RotateSecret(pb::RotateSecret {
                role: role.into(),
                secret: sealed(secret),
            }),
            Command::SetUnlockKey { unlock_key } => K::SetUnlockKey(pb::SetUnlockKey {
                unlock_key: unlock_key.map(sealed),
            }),
            Command::CreateService { service } => K::CreateService(service.into()),
            Command::UpdateService { service } => K::UpdateService(service.into()),
            Command::RollbackService {
                id,
                version,
                message,
                now_ms,
            } => K::RollbackService(pb::RollbackService {
                id: id.0,
                version,
                message,
                now_ms,
            }),
            Command::SetVolumeHomes { homes } => K::SetVolumeHomes(pb::VolumeHomes {
                homes: homes.into_iter().map(Into::into).collect(),
            }),
            Command::SetUpdateStatus { updates } => K::SetUpdateStatus(pb::SetUpdateStatus {
                updates: updates
                    .into_iter()
                    .map(|(id, version, status)| pb::ServiceUpdateStatus {
                        service_id: id.0,
                        version,
                        status: Some(status.into()),
                    })
                    .collect(),
            }),
            Command::RemoveService { id } => K::RemoveService(id.0),
            Command::DeployStack {
                create,
                update,
                remove,
                create_networks,
                remove_networks,
                create_secrets,
                update_secrets,
                remove_secrets,
            } => K::DeployStack(pb::DeployStack {
                create: services(create),
                update: services(update),
                remove: remove.into_iter().map(|s| s.0).collect(),
                create_networks: create_networks.into_iter().map(Into::into).collect(),
                remove_networks: remove_networks.into_iter().map(|n| n.0).collect(),
                create_secrets: create_secrets.into_iter().map(Into::into).collect(),
                update_secrets: update_secrets.into_iter().map(Into::into).collect(),
                remove_secrets: remove_secrets
                    .into_iter()
                    .map(|(k, id)| super::secret::key_out(k, id))
                    .collect(),
            }),
            Command::CreateSecret { secret } => K::CreateSecret(secret.into()),
            Command::UpdateSecret { update, now_ms } => K::UpdateSecret(pb::UpdateSecret {
                update: Some(update.into()),
                now_ms,
            }),
            Command::RemoveSecret { kind, id } => K::RemoveSecret(super::secret::key_out(kind, id)),
            Command::CreateNetwork { network } => K::CreateNetwork(network.into()),
            Command::RemoveNetwork { id } => K::RemoveNetwork(id.0),
            Command::CreateTasks { tasks } => K::CreateTasks(pb::Tasks {
                tasks: tasks.into_iter().map(Into::into).collect(),
            }),
            Command::SetTaskDesired { updates } => K::SetTaskDesired(pb::SetTaskDesired {
                updates: updates
                    .into_iter()
                    .map(|(id, state)| pb::TaskDesired {
                        task_id: id.0,
                        state: state.into(),
                    })
                    .collect(),
            }),
            Command::DeleteTasks { ids: gone } => K::DeleteTasks(pb::TaskIds { ids: ids(gone) }),
            Command::AssignTasks {
                assign,
                pending,
                now_ms,
            } => K::AssignTasks(pb::AssignTasks {
                assign: assign
                    .into_iter()
                    .map(|(t, n)| pb::TaskPlacement {
                        task_id: t.0,
                        node_id: n.0,
                    })
                    .collect(),
                pending: pending
                    .into_iter()
                    .map(|(t, reason)| pb::PendingTask {
                        task_id: t.0,
                        reason,
                    })
                    .collect(),
                now_ms,
            }),
            Command::UpdateTaskStatus { updates } => K::UpdateTaskStatus(pb::TaskStatusUpdates {
                updates: updates.into_iter().map(Into::into).collect(),
            }),
            Command::StartCaRotation { rotation } => K::StartCaRotation(rotation.into()),
            Command::CaNodeMoved { id, new_digest } => K::CaNodeMoved(pb::CaNodeMoved {
                id: id.0,
                new_digest,
            }),
            Command::FinishCaRotation { new_digest } => K::FinishCaRotation(new_digest),
            Command::Noop => K::Noop(true),
            Command::Once {
                request,
                now_ms,
                reply,
                cmd,
            } => K::Once(Box::new(pb::Once {
                request: request.0,
                now_ms,
                reply,
                cmd: Some(Box::new((*cmd).into())),
            })),
            Command::Batch { cmds } => K::Batch(pb::Batch {
                cmds: cmds.into_iter().map(Into::into).collect(),
            }),
        };
        pb::Command { kind: Some(kind) }
    }
}

fn need<T>(v: Option<T>, field: &str) -> Result<T> {
    v.ok_or_else(|| invalid(field, "must be set"))
}

impl TryFrom<pb::Command> for Command {
    type Error = Error;
    // Long by design, as `from` above: one arm per variant.
    fn try_from(c: pb::Command) -> Result<Self> {
        use pb::command::Kind as K;
        Ok(match need(c.kind, "command")? {
            K::InitCluster(i) => Command::InitCluster {
                cluster: need(i.cluster, "init_cluster.cluster")?.try_into()?,
                node: need(i.node, "init_cluster.node")?.try_into()?,
            },
            K::AddNode(n) => Command::AddNode {
                node: n.try_into()?,
            },
            K::UpdateNodeSpec(u) => Command::UpdateNodeSpec {
                id: NodeId(u.id),
                role: u
                    .role
                    .map(|r| enum_of::<pb::Role, _>("update_node_spec.role", r))
                    .transpose()?,
                availability: u
                    .availability
                    .map(|a| enum_of::<pb::Availability, _>("update_node_spec.availability", a))
                    .transpose()?,
                labels_add: u.labels_add.into_iter().collect(),
                labels_rm: u.labels_rm,
            },
            K::UpdateNodeStatus(u) => Command::UpdateNodeStatus {
                id: NodeId(u.id),
                status: enum_of::<pb::NodeStatus, _>("update_node_status.status", u.status)?,
                description: u.description.map(Into::into),
                addr: u.addr,
                now_ms: u.now_ms,
            },
            K::RemoveNode(id) => Command::RemoveNode { id: NodeId(id) },
            K::RotateSecret(r) => Command::RotateSecret {
                role: enum_of::<pb::Role, _>("rotate_secret.role", r.role)?,
                secret: unseal_text(r.secret),
            },
            K::SetUnlockKey(s) => Command::SetUnlockKey {
                unlock_key: s.unlock_key.map(unseal_text),
            },
            K::CreateService(s) => Command::CreateService {
                service: s.try_into()?,
            },
            K::UpdateService(s) => Command::UpdateService {
                service: s.try_into()?,
            },
            K::RollbackService(r) => Command::RollbackService {
                id: ServiceId(r.id),
                version: r.version,
                message: r.message,
                now_ms: r.now_ms,
            },
            K::SetUpdateStatus(s) => Command::SetUpdateStatus {
                updates: s
                    .updates
                    .into_iter()
                    .map(|u| -> Result<_> {
                        Ok((
                            ServiceId(u.service_id),
                            u.version,
                            need(u.status, "set_update_status.status")?.try_into()?,
                        ))
                    })
                    .collect::<Result<_>>()?,
            },
            K::RemoveService(id) => Command::RemoveService { id: ServiceId(id) },
            K::SetVolumeHomes(h) => Command::SetVolumeHomes {
                homes: h.homes.into_iter().map(Into::into).collect(),
            },
            K::DeployStack(d) => Command::DeployStack {
                create: services_in("deploy_stack.create", d.create)?,
                update: services_in("deploy_stack.update", d.update)?,
                remove: d.remove.into_iter().map(ServiceId).collect(),
                create_networks: d
                    .create_networks
                    .into_iter()
                    .map(|n| {
                        n.try_into().map_err(|e: Error| {
                            invalid("deploy_stack.create_networks", e.to_string())
                        })
                    })
                    .collect::<Result<_>>()?,
                remove_networks: d.remove_networks.into_iter().map(NetworkId).collect(),
                create_secrets: d
                    .create_secrets
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<Result<_>>()?,
                update_secrets: d
                    .update_secrets
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<Result<_>>()?,
                remove_secrets: d
                    .remove_secrets
                    .into_iter()
                    .map(|k| super::secret::key_in("deploy_stack.remove_secrets", k))
                    .collect::<Result<_>>()?,
            },
            K::CreateSecret(s) => Command::CreateSecret {
                secret: s.try_into()?,
            },
            K::UpdateSecret(u) => Command::UpdateSecret {
                update: need(u.update, "update_secret.update")?.try_into()?,
                now_ms: u.now_ms,
            },
            K::RemoveSecret(k) => {
                let (kind, id) = super::secret::key_in("remove_secret", k)?;
                Command::RemoveSecret { kind, id }
            }
            K::CreateNetwork(n) => Command::CreateNetwork {
                network: n
                    .try_into()
                    .map_err(|e: Error| invalid("create_network", e.to_string()))?,
            },
            K::RemoveNetwork(id) => Command::RemoveNetwork { id: NetworkId(id) },
            K::CreateTasks(t) => Command::CreateTasks {
                tasks: t
                    .tasks
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<Result<_>>()?,
            },
            K::SetTaskDesired(s) => Command::SetTaskDesired {
                updates: s
                    .updates
                    .into_iter()
                    .map(|u| -> Result<(TaskId, TaskState)> {
                        Ok((
                            TaskId(u.task_id),
                            enum_of::<pb::TaskState, _>("set_task_desired.state", u.state)?,
                        ))
                    })
                    .collect::<Result<_>>()?,
            },
            K::DeleteTasks(d) => Command::DeleteTasks {
                ids: d.ids.into_iter().map(TaskId).collect(),
            },
            K::AssignTasks(a) => Command::AssignTasks {
                assign: a
                    .assign
                    .into_iter()
                    .map(|p| (TaskId(p.task_id), NodeId(p.node_id)))
                    .collect(),
                pending: a
                    .pending
                    .into_iter()
                    .map(|p| (TaskId(p.task_id), p.reason))
                    .collect(),
                now_ms: a.now_ms,
            },
            K::UpdateTaskStatus(u) => Command::UpdateTaskStatus {
                updates: u
                    .updates
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<Result<_>>()?,
            },
            K::StartCaRotation(r) => Command::StartCaRotation { rotation: r.into() },
            K::CaNodeMoved(m) => Command::CaNodeMoved {
                id: NodeId(m.id),
                new_digest: m.new_digest,
            },
            K::FinishCaRotation(new_digest) => Command::FinishCaRotation { new_digest },
            K::Noop(_) => Command::Noop,
            K::Once(o) => Command::Once {
                request: RequestId(o.request),
                now_ms: o.now_ms,
                reply: o.reply,
                cmd: Box::new((*need(o.cmd, "once.cmd")?).try_into()?),
            },
            K::Batch(b) => Command::Batch {
                cmds: b
                    .cmds
                    .into_iter()
                    .map(|c| match c.kind {
                        Some(K::Batch(_)) => Err(invalid("batch.cmds", "a batch inside a batch")),
                        _ => c.try_into(),
                    })
                    .collect::<Result<_>>()?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    use super::super::tests::{
        labels, network, network_id, service, task, task_state, task_status, text, update_status,
    };
    use super::*;
    use crate::store::Service;

    fn node_id() -> impl Strategy<Value = NodeId> {
        any::<u64>().prop_map(NodeId)
    }

    fn role() -> impl Strategy<Value = Role> {
        prop_oneof![Just(Role::Manager), Just(Role::Worker)]
    }

    proptest! {
        #[test]
        fn member_changes_from_any_table_rebuild_the_new_one_through_the_wire(
            old in proptest::collection::btree_map((0u64..8).prop_map(NodeId), role(), 0..8),
            new in proptest::collection::btree_map((0u64..8).prop_map(NodeId), role(), 0..8),
        ) {
            let c = member_changes(&old, &new);
            let wire = pb::Members::decode(c.encode_to_vec().as_slice()).unwrap();
            prop_assert_eq!(members_in(Some(old.clone()), wire.clone()).unwrap(), Some(new.clone()));
            // Only what changed travels.
            let same = old.iter().filter(|(id, r)| new.get(id) == Some(r)).count();
            prop_assert_eq!(c.roles.len(), new.len() - same);
            // Changes with no table held are refused; a whole table is taken.
            prop_assert_eq!(members_in(None, wire).unwrap(), None);
            prop_assert_eq!(members_in(None, members_out(&new)).unwrap(), Some(new));
        }
    }

    fn availability() -> impl Strategy<Value = Availability> {
        prop_oneof![
            Just(Availability::Active),
            Just(Availability::Pause),
            Just(Availability::Drain)
        ]
    }

    fn node_status() -> impl Strategy<Value = NodeStatus> {
        prop_oneof![
            Just(NodeStatus::Unknown),
            Just(NodeStatus::Ready),
            Just(NodeStatus::Down)
        ]
    }

    fn description() -> impl Strategy<Value = NodeDescription> {
        (text(), any::<u32>(), any::<u64>(), text(), labels()).prop_map(
            |(hostname, cpus, memory_bytes, os, engine_labels)| NodeDescription {
                hostname,
                cpus,
                memory_bytes,
                os: os.clone(),
                arch: os,
                engine_version: "27.0".into(),
                engine_labels,
                data_port: Default::default(),
                generic_resources: [("gpu".to_string(), u64::from(cpus % 4))].into(),
            },
        )
    }

    fn node() -> impl Strategy<Value = Node> {
        (
            node_id(),
            text(),
            role(),
            availability(),
            labels(),
            node_status(),
            description(),
            any::<u64>(),
        )
            .prop_map(
                |(id, addr, role, availability, labels, status, description, ms)| Node {
                    id,
                    addr,
                    role,
                    availability,
                    labels,
                    status,
                    description,
                    status_changed_ms: ms,
                    created_ms: ms / 2,
                },
            )
    }

    fn sealed_text() -> impl Strategy<Value = Sealed> {
        "[0-9a-f]{0,40}".prop_map(Sealed::from_stored)
    }

    fn cluster() -> impl Strategy<Value = Cluster> {
        (
            text(),
            sealed_text(),
            sealed_text(),
            option::of(sealed_text()),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(
                |(id, key, secret, unlock_key, ms, misses, cursor)| Cluster {
                    id: id.clone(),
                    ca_cert_pem: id,
                    ca_key: key,
                    worker_secret: secret.clone(),
                    manager_secret: secret,
                    unlock_key,
                    settings: Settings {
                        heartbeat_period_ms: ms % 10_000,
                        heartbeat_misses: misses,
                        cert_validity_secs: ms,
                        vip_range: "10.200.0.0/16".into(),
                    },
                    created_ms: ms,
                    vip_cursor: cursor,
                },
            )
    }

    fn task_id() -> impl Strategy<Value = TaskId> {
        "[0-9a-f]{1,16}".prop_map(TaskId)
    }

    fn services() -> impl Strategy<Value = Vec<Service>> {
        vec(service(), 0..3)
    }

    /// One command of any kind but `Once`.
    fn plain() -> impl Strategy<Value = Command> {
        prop_oneof![
            (cluster(), node()).prop_map(|(cluster, node)| Command::InitCluster { cluster, node }),
            node().prop_map(|node| Command::AddNode { node }),
            (
                node_id(),
                option::of(role()),
                option::of(availability()),
                labels(),
                vec(text(), 0..3)
            )
                .prop_map(|(id, role, availability, labels_add, labels_rm)| {
                    Command::UpdateNodeSpec {
                        id,
                        role,
                        availability,
                        labels_add,
                        labels_rm,
                    }
                }),
            (
                node_id(),
                node_status(),
                option::of(description()),
                option::of(text()),
                any::<u64>()
            )
                .prop_map(|(id, status, description, addr, now_ms)| {
                    Command::UpdateNodeStatus {
                        id,
                        status,
                        description,
                        addr,
                        now_ms,
                    }
                }),
            node_id().prop_map(|id| Command::RemoveNode { id }),
            (role(), sealed_text())
                .prop_map(|(role, secret)| Command::RotateSecret { role, secret }),
            option::of(sealed_text()).prop_map(|unlock_key| Command::SetUnlockKey { unlock_key }),
            service().prop_map(|service| Command::CreateService { service }),
            service().prop_map(|service| Command::UpdateService { service }),
            (text(), any::<u64>(), text(), any::<u64>()).prop_map(
                |(id, version, message, now_ms)| Command::RollbackService {
                    id: ServiceId(id),
                    version,
                    message,
                    now_ms,
                }
            ),
            vec((text(), any::<u64>(), update_status()), 0..3).prop_map(|u| {
                Command::SetUpdateStatus {
                    updates: u
                        .into_iter()
                        .map(|(id, v, s)| (ServiceId(id), v, s))
                        .collect(),
                }
            }),
            text().prop_map(|id| Command::RemoveService { id: ServiceId(id) }),
            vec(
                (
                    text(),
                    any::<u64>(),
                    node_id(),
                    text(),
                    any::<u64>(),
                    vec(node_id(), 0..3),
                    any::<u64>()
                ),
                0..3
            )
            .prop_map(|hs| Command::SetVolumeHomes {
                homes: hs
                    .into_iter()
                    .map(
                        |(s, slot, node, task, generation, stale, since_ms)| VolumeHome {
                            service_id: ServiceId(s),
                            slot,
                            node,
                            task: TaskId(task),
                            generation,
                            stale,
                            since_ms,
                        }
                    )
                    .collect(),
            }),
            (
                services(),
                services(),
                vec(text(), 0..3),
                vec(network(), 0..3),
                vec(network_id(), 0..3)
            )
                .prop_map(
                    |(create, update, remove, create_networks, remove_networks)| {
                        Command::DeployStack {
                            create,
                            update,
                            remove: remove.into_iter().map(ServiceId).collect(),
                            create_networks,
                            remove_networks,
                            create_secrets: vec![],
                            update_secrets: vec![],
                            remove_secrets: vec![],
                        }
                    }
                ),
            network().prop_map(|network| Command::CreateNetwork { network }),
            network_id().prop_map(|id| Command::RemoveNetwork { id }),
            vec(task(), 0..3).prop_map(|tasks| Command::CreateTasks { tasks }),
            vec((task_id(), task_state()), 0..4)
                .prop_map(|updates| Command::SetTaskDesired { updates }),
            vec(task_id(), 0..4).prop_map(|ids| Command::DeleteTasks { ids }),
            (
                vec((task_id(), node_id()), 0..4),
                vec((task_id(), text()), 0..4),
                any::<u64>()
            )
                .prop_map(|(assign, pending, now_ms)| Command::AssignTasks {
                    assign,
                    pending,
                    now_ms
                }),
            vec((task_id(), task_status()), 0..3)
                .prop_map(|updates| Command::UpdateTaskStatus { updates }),
            (text(), sealed_text(), vec(node_id(), 0..4), any::<u64>()).prop_map(
                |(pem, key, moved, ms)| Command::StartCaRotation {
                    rotation: CaRotation {
                        new_cert_pem: pem.clone(),
                        new_key: key,
                        cross_pem: pem.clone(),
                        new_digest: pem,
                        cert_validity_secs: ms,
                        moved: moved.into_iter().collect(),
                        started_ms: ms,
                    },
                }
            ),
            (node_id(), text())
                .prop_map(|(id, new_digest)| Command::CaNodeMoved { id, new_digest }),
            text().prop_map(|new_digest| Command::FinishCaRotation { new_digest }),
            Just(Command::Noop),
        ]
    }

    /// Any command, `Once` around another one and batches included.
    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            3 => plain(),
            1 => vec(plain(), 0..4).prop_map(|cmds| Command::Batch { cmds }),
            1 => (plain(), any::<u64>(), option::of(vec(any::<u8>(), 0..16))).prop_map(
                |(cmd, now_ms, reply)| Command::Once {
                    request: RequestId("ab".repeat(16)),
                    now_ms,
                    reply,
                    cmd: Box::new(cmd),
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn a_command_goes_through_a_raft_entry_unchanged(cmd in command()) {
            let bytes = encode(&cmd);
            prop_assert_eq!(bytes.len(), encoded_len(&cmd));
            prop_assert_eq!(decode(&bytes).expect("decodes"), cmd);
        }

        #[test]
        fn damaged_bytes_decode_to_an_error_or_a_command(
            cmd in command(),
            edits in crate::fuzz::edits(crate::fuzz::PROTOBUF_BYTES, 6),
        ) {
            let bytes = crate::fuzz::apply(encode(&cmd), &edits);
            if let Ok(c) = decode(&bytes) {
                // What decodes encodes again and reads back the same.
                prop_assert_eq!(decode(&encode(&c)).expect("re-decodes"), c);
            }
        }
    }

    #[test]
    fn a_command_without_its_parts_is_refused_naming_them() {
        let e = decode(&pb::Command { kind: None }.encode_to_vec()).unwrap_err();
        assert!(e.to_string().contains("command"), "{e}");
        let once = pb::Command {
            kind: Some(pb::command::Kind::Once(Box::new(pb::Once {
                request: "r".into(),
                now_ms: 1,
                reply: None,
                cmd: None,
            }))),
        };
        let e = decode(&once.encode_to_vec()).unwrap_err();
        assert!(e.to_string().contains("once.cmd"), "{e}");
        let bad_role = pb::Command {
            kind: Some(pb::command::Kind::RotateSecret(pb::RotateSecret {
                role: 0,
                secret: String::new(),
            })),
        };
        let e = decode(&bad_role.encode_to_vec()).unwrap_err();
        assert!(e.to_string().contains("rotate_secret.role"), "{e}");
    }

    #[test]
    fn a_batch_inside_a_batch_is_refused() {
        let inner = Command::Batch {
            cmds: vec![Command::Noop],
        };
        let outer = pb::Command {
            kind: Some(pb::command::Kind::Batch(pb::Batch {
                cmds: vec![Command::Noop.into(), inner.into()],
            })),
        };
        let e = decode(&outer.encode_to_vec()).unwrap_err();
        assert!(e.to_string().contains("batch inside a batch"), "{e}");
        // The control: the same batch without the nested one decodes.
        let flat = pb::Command {
            kind: Some(pb::command::Kind::Batch(pb::Batch {
                cmds: vec![Command::Noop.into(), Command::Noop.into()],
            })),
        };
        assert_eq!(
            decode(&flat.encode_to_vec()).expect("decodes"),
            Command::Batch {
                cmds: vec![Command::Noop, Command::Noop]
            }
        );
    }

    #[test]
    fn a_service_command_is_smaller_than_its_json() {
        // The reason for the change, checked: the same command, protobuf against JSON.
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut pb_bytes, mut json_bytes) = (0, 0);
        for _ in 0..50 {
            let s = service()
                .new_tree(&mut runner)
                .expect("a service")
                .current();
            let cmd = Command::CreateService { service: s };
            pb_bytes += encode(&cmd).len();
            json_bytes += serde_json::to_vec(&cmd).expect("json").len();
        }
        assert!(pb_bytes < json_bytes, "{pb_bytes} >= {json_bytes}");
    }
}
