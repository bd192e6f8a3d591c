//! Volumes that follow their task: where each slot's data lives.
//!
//! A named local volume marked `follow` (`--mount-policy follow[,keep]`, a stack's
//! `x-orc-volume: {follow: true}`) moves with its task when orc places the slot on
//! another node (a drain, a constraint change, an update), instead of being left behind
//! as Swarm leaves it. The state tables record, per slot of such a service, the node
//! that holds the data ([`VolumeHome`], key `volume/<service id>/<slot>`).
//!
//! | who | what |
//! |---|---|
//! | the orchestrator ([`homes_to_record`]) | records the first node a slot ran on; records a move once the new task has run (healthy, if it has a check) for the update monitor period, and marks the old node's copy for removal unless `keep` |
//! | the scheduler | places the slot on its home node while that node can take it; elsewhere when it cannot but is up (the agent then copies the data from it); and not at all while the home node is down, saying `volume V is on NODE, which is down`, unless `--force-new-volume` was given since |
//! | the dispatcher | names the home node in the assignment of a task placed elsewhere (the copy's source), and tells a node to drop its stale copies |
//! | the agents | copy the volume over the cluster's mTLS before the container starts (`NodeApi.VolumeSave`, [`crate::agent::volumes`]) |
//!
//! Until the move is recorded the old node's copy is the one that counts: a new task
//! that fails on the new node (a failed update rolls back, a restart) goes back to the
//! old node with its data untouched, or copies it afresh. Follow services stop the old
//! task before the new one starts (stop-first updates only), so a copy is taken of a
//! volume no container writes to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::service::{Mount, ServiceMode};
use super::{NodeId, NodeStatus, Service, ServiceId, State, Task, TaskId, TaskState};
use crate::error::{Error, Result};

/// Where the data of one slot of a service with following volumes lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeHome {
    /// The service.
    pub service_id: ServiceId,
    /// The slot (replica number).
    pub slot: u64,
    /// The node that holds the data.
    pub node: NodeId,
    /// The task that last ran there with it.
    pub task: TaskId,
    /// The service's `force_new_volume` when this was recorded.
    pub generation: u64,
    /// Nodes that still hold an older copy, to be removed there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale: Vec<NodeId>,
    /// Unix ms of the record.
    pub since_ms: u64,
}

/// The key of a slot's home (what [`crate::store::State::apply`] reports changed).
pub fn home_key(service: &ServiceId, slot: u64) -> String {
    format!("volume/{service}/{slot}")
}

/// The following volumes of a spec's mounts.
pub fn following(mounts: &[Mount]) -> impl Iterator<Item = &Mount> {
    mounts
        .iter()
        .filter(|m| m.follow && m.is_named_local_volume())
}

/// True if the service has a volume that follows its tasks.
pub fn follows(svc: &Service) -> bool {
    following(&svc.spec.task.container.mounts).next().is_some()
}

/// What `--mount-policy` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountPolicy {
    /// The volumes follow the task.
    pub follow: bool,
    /// The old node keeps its copy.
    pub keep: bool,
}

impl std::str::FromStr for MountPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "follow" => Ok(MountPolicy {
                follow: true,
                keep: false,
            }),
            "follow,keep" | "keep,follow" => Ok(MountPolicy {
                follow: true,
                keep: true,
            }),
            "none" | "" => Ok(MountPolicy {
                follow: false,
                keep: false,
            }),
            _ => Err(Error::InvalidInput(format!(
                "--mount-policy: expected follow, follow,keep or none, found {s:?}"
            ))),
        }
    }
}

/// The service label that sets the policy too (`--label orc.mount-policy=follow`, a
/// stack's `deploy.labels`), for files that must read the same to Docker.
pub const POLICY_LABEL: &str = "orc.mount-policy";

/// The policy a service's labels ask for ([`POLICY_LABEL`]), if any.
pub fn policy_of_labels(
    labels: &std::collections::BTreeMap<String, String>,
) -> Option<Result<MountPolicy>> {
    labels.get(POLICY_LABEL).map(|v| {
        v.parse().map_err(|_| {
            Error::InvalidInput(format!(
                "label {POLICY_LABEL}: expected follow, follow,keep or none, found {v:?}"
            ))
        })
    })
}

/// Sets `policy` on every named local volume of `mounts`; fails, naming `flag`, when
/// the policy follows and there is none.
pub fn apply_policy(mounts: &mut [Mount], policy: MountPolicy, flag: &str) -> Result<()> {
    let mut any = false;
    for m in mounts.iter_mut().filter(|m| m.is_named_local_volume()) {
        m.follow = policy.follow;
        m.keep = policy.keep;
        any = true;
    }
    if policy.follow && !any {
        return Err(Error::InvalidInput(format!(
            "{flag}: the service has no named volume of the local driver to follow \
             (--mount type=volume,source=NAME,target=PATH)"
        )));
    }
    Ok(())
}

/// Why a spec with following volumes cannot be run, naming `field`: only replicated
/// services move (a global task belongs to its node), and only stop-first updates (a
/// start-first one would copy a volume its old task still writes to).
pub fn check_spec(spec: &super::ServiceSpec, field: &str) -> Result<()> {
    if following(&spec.task.container.mounts).next().is_none() {
        return Ok(());
    }
    if let Some(m) = following(&spec.task.container.mounts).find(|m| m.source.contains("{{")) {
        return Err(Error::InvalidInput(format!(
            "{field}: the following volume {:?} cannot be a template (its name must be the same on every node)",
            m.source
        )));
    }
    if !matches!(spec.mode, ServiceMode::Replicated { .. }) {
        return Err(Error::InvalidInput(format!(
            "{field}: a following volume needs a replicated service (a global task stays on its node)"
        )));
    }
    for (name, cfg) in [("update", &spec.update), ("rollback", &spec.rollback)] {
        if cfg.order == super::service::UpdateOrder::StartFirst {
            return Err(Error::InvalidInput(format!(
                "{field}: a following volume needs stop-first {name}s (start-first would copy \
                 the volume while the old task still writes to it)"
            )));
        }
    }
    Ok(())
}

/// Where the scheduler may put a task of a slot with following volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Anywhere (no home yet, or the operator allowed a new volume).
    Anywhere,
    /// Its home node if that node can take it, else anywhere (the data is copied).
    Prefer(NodeId),
    /// Nowhere: the data is on a node that is down (the reason).
    Wait(String),
}

/// Where `task` may go, given its slot's home.
pub fn placement(state: &State, task: &Task) -> Placement {
    let Some(first) = following(&task.spec.container.mounts).next() else {
        return Placement::Anywhere;
    };
    let Some(home) = state
        .volume_homes
        .get(&(task.service_id.clone(), task.slot))
    else {
        return Placement::Anywhere;
    };
    let up = state
        .nodes
        .get(&home.node)
        .is_some_and(|n| n.status == NodeStatus::Ready);
    if up {
        return Placement::Prefer(home.node);
    }
    if task.spec.force_new_volume > home.generation {
        return Placement::Anywhere;
    }
    let node = state
        .nodes
        .get(&home.node)
        .map(|n| n.description.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| home.node.to_string());
    let status = state
        .nodes
        .get(&home.node)
        .map(|n| n.status.as_str().to_string())
        .unwrap_or_else(|| "gone".into());
    Placement::Wait(format!(
        "volume {} is on {node}, which is {status} (service update --force-new-volume starts it empty)",
        first.source
    ))
}

/// The node a task placed on `node` must copy its following volumes from, if any: the
/// slot's home, when that is another node that is up.
pub fn copy_source(state: &State, task: &Task, node: NodeId) -> Option<NodeId> {
    match placement(state, task) {
        Placement::Prefer(home) if home != node => Some(home),
        _ => None,
    }
}

/// The homes to record now (pure): the first node each slot of a service with
/// following volumes runs on, and moves, once the task on the new node has run (and,
/// with a health check, been healthy) for the service's update monitor period.
pub fn homes_to_record(state: &State, now_ms: u64) -> Vec<VolumeHome> {
    homes_among(state, state.tasks.values(), now_ms)
}

/// [`homes_to_record`] among `tasks` only (the orchestrator's pass over what changed).
pub fn homes_among<'a>(
    state: &State,
    tasks: impl Iterator<Item = &'a Task>,
    now_ms: u64,
) -> Vec<VolumeHome> {
    let mut out = vec![];
    for t in tasks {
        if t.status.state != TaskState::Running || t.desired_state > TaskState::Running {
            continue;
        }
        let Some(node) = t.node_id else { continue };
        let Some(svc) = state.services.get(&t.service_id) else {
            continue;
        };
        if following(&t.spec.container.mounts).next().is_none() {
            continue;
        }
        let key = (t.service_id.clone(), t.slot);
        let generation = t.spec.force_new_volume;
        match state.volume_homes.get(&key) {
            None => out.push(VolumeHome {
                service_id: t.service_id.clone(),
                slot: t.slot,
                node,
                task: t.id.clone(),
                generation,
                stale: vec![],
                since_ms: now_ms,
            }),
            Some(h) if h.node == node => {}
            Some(h) => {
                let healthy = matches!(t.status.health.as_str(), "" | "healthy");
                let monitor = svc.spec.update.monitor_ms;
                if !healthy || now_ms < t.status.timestamp_ms.saturating_add(monitor) {
                    continue;
                }
                let keep = following(&t.spec.container.mounts).all(|m| m.keep);
                // A copy replaced by --force-new-volume is kept: it may be all there is.
                let forced = generation > h.generation;
                let mut stale: Vec<NodeId> =
                    h.stale.iter().copied().filter(|n| *n != node).collect();
                if !keep && !forced && !stale.contains(&h.node) {
                    stale.push(h.node);
                }
                out.push(VolumeHome {
                    service_id: t.service_id.clone(),
                    slot: t.slot,
                    node,
                    task: t.id.clone(),
                    generation,
                    stale,
                    since_ms: now_ms,
                });
            }
        }
    }
    out
}

/// When [`homes_to_record`] will have a move to record (the earliest monitor period
/// running out), for the orchestrator's wake-up.
pub fn next_due_ms(state: &State) -> Option<u64> {
    next_due_among(state, state.tasks.values())
}

/// [`next_due_ms`] among `tasks` only.
pub fn next_due_among<'a>(state: &State, tasks: impl Iterator<Item = &'a Task>) -> Option<u64> {
    tasks
        .filter(|t| t.status.state == TaskState::Running && t.desired_state <= TaskState::Running)
        .filter_map(|t| {
            let node = t.node_id?;
            let h = state.volume_homes.get(&(t.service_id.clone(), t.slot))?;
            if h.node == node
                || following(&t.spec.container.mounts).next().is_none()
                || !matches!(t.status.health.as_str(), "" | "healthy")
            {
                return None;
            }
            let svc = state.services.get(&t.service_id)?;
            Some(
                t.status
                    .timestamp_ms
                    .saturating_add(svc.spec.update.monitor_ms),
            )
        })
        .min()
}

/// The names of the volumes node `node` must drop: stale copies of slots whose data
/// has moved elsewhere, and that no task of the slot meant to run there uses.
pub fn to_drop(state: &State, node: NodeId) -> Vec<DropVolume> {
    let mut out = vec![];
    for h in state.volume_homes.values() {
        if h.node == node || !h.stale.contains(&node) {
            continue;
        }
        let busy = state.tasks.values().any(|t| {
            t.service_id == h.service_id
                && t.slot == h.slot
                && t.node_id == Some(node)
                && t.desired_state <= TaskState::Running
        });
        if busy {
            continue;
        }
        let Some(svc) = state.services.get(&h.service_id) else {
            continue;
        };
        for m in following(&svc.spec.task.container.mounts) {
            out.push(DropVolume {
                name: m.source.clone(),
                service_id: h.service_id.clone(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup();
    out
}

/// A stale copy of a following volume a node must remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropVolume {
    /// The volume's name on the node.
    pub name: String,
    /// The service it belongs to (the agent removes only a volume labelled with it).
    pub service_id: ServiceId,
}

impl State {
    /// Applies [`super::Command::SetVolumeHomes`]: each home whose service still exists is
    /// recorded; the keys changed.
    pub(super) fn set_volume_homes(&mut self, homes: &[VolumeHome]) -> super::apply::Applied {
        let mut keys = vec![];
        for h in homes {
            if !self.services.contains_key(&h.service_id) {
                continue;
            }
            keys.push(home_key(&h.service_id, h.slot));
            self.volume_homes
                .insert((h.service_id.clone(), h.slot), h.clone());
        }
        (super::Response::Ok, keys)
    }

    /// Drops the homes of service `id` (it was removed), adding their keys.
    pub(super) fn drop_volume_homes(&mut self, id: &ServiceId, keys: &mut Vec<String>) {
        let gone: Vec<(ServiceId, u64)> = self
            .volume_homes
            .range((id.clone(), 0)..=(id.clone(), u64::MAX))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            keys.push(home_key(&k.0, k.1));
            self.volume_homes.remove(&k);
        }
    }
}

/// The homes as a map, by service and slot.
pub type Homes = BTreeMap<(ServiceId, u64), VolumeHome>;

#[cfg(test)]
mod tests;
