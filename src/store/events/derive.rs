//! Events from applied commands: a pure function of the objects as they were before,
//! the state after, the command and its response.

use std::collections::{BTreeMap, BTreeSet};

use super::EventBody;
use crate::store::service::{ServiceMode, UpdateState};
use crate::store::{
    secret, Command, Node, NodeId, Response, Service, ServiceId, State, Task, TaskId, TaskState,
    UpdateStatus,
};

/// The objects a command may change, as they were before it was applied.
///
/// A task command (the orchestrator's, the scheduler's, the dispatcher's: by far the
/// most frequent) names its tasks, and only those are kept. Any other command is a
/// control write, a node's status or an update's progress, rare enough to keep the
/// small tables whole (nodes, services, update statuses, network and secret names).
#[derive(Debug, Clone, Default)]
pub struct Before {
    /// Nodes, when captured.
    nodes: BTreeMap<NodeId, Node>,
    /// Services, when captured.
    services: BTreeMap<ServiceId, Service>,
    /// Update statuses, when captured.
    updates: BTreeMap<ServiceId, UpdateStatus>,
    /// The tasks the command names, as they were (absent: new).
    tasks: BTreeMap<TaskId, TaskWas>,
    /// Network names by id.
    networks: BTreeMap<String, String>,
    /// Secret and config names and current version numbers by kind and id.
    secrets: BTreeMap<(secret::Kind, String), (String, u64)>,
}

/// What the events of a task's change read of the task as it was: its states, or the
/// whole task where the command may delete it (its `remove` event names it). A copy of
/// each task that a status batch named (up to 2,000) was a third of the events' cost.
#[derive(Debug, Clone)]
enum TaskWas {
    States {
        state: TaskState,
        desired: TaskState,
    },
    Whole(Box<Task>),
}

impl TaskWas {
    /// Its observed and desired states.
    fn state(&self) -> (TaskState, TaskState) {
        match self {
            TaskWas::States { state, desired } => (*state, *desired),
            TaskWas::Whole(t) => (t.status.state, t.desired_state),
        }
    }
}

fn secrets_of(s: &State) -> BTreeMap<(secret::Kind, String), (String, u64)> {
    let mut out = BTreeMap::new();
    for kind in [secret::Kind::Secret, secret::Kind::Config] {
        for sec in s.table(kind).values() {
            out.insert(
                (kind, sec.id.0.clone()),
                (sec.name.clone(), sec.current().version),
            );
        }
    }
    out
}

impl Before {
    /// Keeps, from `s`, what `cmd` may change (see the type's doc).
    pub fn capture(s: &State, cmd: &Command) -> Before {
        // Each task named, as its events read it: whole where the command deletes it.
        let kept = |ids: &mut dyn Iterator<Item = &TaskId>, whole: bool| {
            ids.filter_map(|id| {
                let t = s.tasks.get(id)?;
                let was = if whole {
                    TaskWas::Whole(Box::new(t.clone()))
                } else {
                    TaskWas::States {
                        state: t.status.state,
                        desired: t.desired_state,
                    }
                };
                Some((id.clone(), was))
            })
            .collect::<BTreeMap<TaskId, TaskWas>>()
        };
        let tasks = |ids: &mut dyn Iterator<Item = &TaskId>| kept(ids, false);
        match cmd {
            Command::Once { cmd, .. } => Before::capture(s, cmd),
            // A new service has nothing before it (its VIP moves the cluster's cursor,
            // which makes no event).
            Command::Noop | Command::CaNodeMoved { .. } | Command::CreateService { .. } => {
                Before::default()
            }
            // A status changes only its node: not a copy of every node and service
            // for each heartbeat that turns a node ready or down.
            Command::UpdateNodeStatus { id, .. } => Before {
                nodes: s
                    .nodes
                    .get(id)
                    .map(|n| (*id, n.clone()))
                    .into_iter()
                    .collect(),
                ..Default::default()
            },
            Command::CreateTasks { tasks: t } => Before {
                tasks: tasks(&mut t.iter().map(|t| &t.id)),
                ..Default::default()
            },
            Command::SetTaskDesired { updates } => Before {
                tasks: tasks(&mut updates.iter().map(|(id, _)| id)),
                ..Default::default()
            },
            Command::DeleteTasks { ids } => Before {
                tasks: kept(&mut ids.iter(), true),
                ..Default::default()
            },
            Command::AssignTasks {
                assign, pending, ..
            } => Before {
                tasks: tasks(
                    &mut assign
                        .iter()
                        .map(|(id, _)| id)
                        .chain(pending.iter().map(|(id, _)| id)),
                ),
                ..Default::default()
            },
            Command::UpdateTaskStatus { updates } => Before {
                tasks: tasks(&mut updates.iter().map(|(id, _)| id)),
                ..Default::default()
            },
            Command::SetUpdateStatus { .. } => Before {
                updates: s.update_status.clone(),
                ..Default::default()
            },
            _ => Before::everything(s),
        }
    }

    /// Every node, service, update status, network and secret name of `s` (no task).
    pub(crate) fn everything(s: &State) -> Before {
        Before {
            nodes: s.nodes.clone(),
            services: s.services.clone(),
            updates: s.update_status.clone(),
            tasks: BTreeMap::new(),
            networks: s
                .networks
                .values()
                .map(|n| (n.id.0.clone(), n.spec.name.clone()))
                .collect(),
            secrets: secrets_of(s),
        }
    }
}

/// The replica count of a replicated service, `None` for other modes.
fn replicas(s: &Service) -> Option<u64> {
    match s.spec.mode {
        ServiceMode::Replicated { replicas } => Some(replicas),
        _ => None,
    }
}

/// A task's name: `service.slot`, or `service.node` for a global task.
fn task_name(t: &Task) -> String {
    if t.slot > 0 {
        format!("{}.{}", t.service_name, t.slot)
    } else {
        let node = t.node_id.map(|n| n.to_string()).unwrap_or_default();
        format!("{}.{}", t.service_name, node)
    }
}

fn node_event(action: &str, n: &Node) -> EventBody {
    EventBody::new(
        "node",
        action,
        n.id.to_string(),
        n.description.hostname.clone(),
    )
}

fn node_events(old: Option<&Node>, new: Option<&Node>, out: &mut Vec<EventBody>) {
    match (old, new) {
        (None, Some(n)) => out.push(
            node_event("create", n)
                .attr("role", n.role.as_str())
                .attr("addr", n.addr.clone()),
        ),
        (Some(o), None) => out.push(node_event("remove", o).attr("role", o.role.as_str())),
        (Some(o), Some(n)) => {
            if o.status != n.status {
                out.push(
                    node_event("status", n)
                        .attr("status", n.status.as_str())
                        .attr("previous", o.status.as_str()),
                );
            }
            if o.availability != n.availability {
                out.push(
                    node_event("availability", n)
                        .attr("availability", n.availability.as_str())
                        .attr("previous", o.availability.as_str()),
                );
            }
            if o.role != n.role {
                out.push(
                    node_event("role", n)
                        .attr("role", n.role.as_str())
                        .attr("previous", o.role.as_str()),
                );
            }
            if o.labels != n.labels {
                let labels: Vec<String> =
                    n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push(node_event("labels", n).attr("labels", labels.join(",")));
            }
            if o.addr != n.addr {
                out.push(node_event("addr", n).attr("addr", n.addr.clone()));
            }
        }
        (None, None) => {}
    }
}

fn service_event(action: &str, s: &Service) -> EventBody {
    EventBody::new("service", action, s.id.0.clone(), s.spec.name.clone())
}

fn service_events(old: Option<&Service>, new: Option<&Service>, out: &mut Vec<EventBody>) {
    match (old, new) {
        (None, Some(s)) => {
            let mut e = service_event("create", s)
                .attr("mode", s.spec.mode.name())
                .attr("image", s.spec.task.container.image.clone());
            if let Some(r) = replicas(s) {
                e = e.attr("replicas", r.to_string());
            }
            out.push(e)
        }
        (Some(o), None) => out.push(service_event("remove", o)),
        (Some(o), Some(n)) if o.version != n.version || o.spec != n.spec => {
            // Only the replica count changed: a scale.
            let mut without_mode = o.spec.clone();
            without_mode.mode = n.spec.mode.clone();
            if without_mode == n.spec && replicas(o) != replicas(n) {
                out.push(
                    service_event("scale", n)
                        .attr("replicas", replicas(n).unwrap_or(0).to_string())
                        .attr("previous", replicas(o).unwrap_or(0).to_string()),
                );
            } else {
                out.push(service_event("update", n).attr("version", n.version.to_string()));
            }
        }
        _ => {}
    }
}

/// The action of an update status's state (`update start`, `update rollback-complete`).
fn update_action(s: &UpdateState) -> &'static str {
    match s {
        UpdateState::Updating => "start",
        UpdateState::Paused => "pause",
        UpdateState::Completed => "complete",
        UpdateState::RollbackStarted => "rollback-start",
        UpdateState::RollbackPaused => "rollback-pause",
        UpdateState::RollbackCompleted => "rollback-complete",
    }
}

fn update_events(
    id: &ServiceId,
    name: &str,
    old: Option<&UpdateStatus>,
    new: Option<&UpdateStatus>,
    out: &mut Vec<EventBody>,
) {
    let Some(n) = new else { return };
    // A new update (another version, or started again) or a new state of the same one.
    let changed = old.is_none_or(|o| {
        o.state != n.state || o.version != n.version || o.started_ms != n.started_ms
    });
    if changed {
        out.push(
            EventBody::new("update", update_action(&n.state), id.0.clone(), name)
                .attr("version", n.version.to_string())
                .attr("message", n.message.clone()),
        );
    }
}

fn task_event(action: &str, t: &Task) -> EventBody {
    EventBody::new("task", action, t.id.0.clone(), task_name(t))
        .attr("service", t.service_name.clone())
        .attr("node", t.node_id.map(|n| n.to_string()).unwrap_or_default())
}

fn task_events(old: Option<&TaskWas>, new: Option<&Task>, out: &mut Vec<EventBody>) {
    match (old, new) {
        (None, Some(t)) => out.push(
            task_event("create", t)
                .attr("state", t.status.state.as_str())
                .attr("desired_state", t.desired_state.as_str()),
        ),
        (Some(TaskWas::Whole(o)), None) => out.push(task_event("remove", o)),
        // Its states only were kept: the command deletes no task.
        (Some(TaskWas::States { .. }), None) => {}
        (Some(o), Some(n)) => {
            let (state, desired) = o.state();
            if state != n.status.state {
                let mut e = task_event(n.status.state.as_str(), n)
                    .attr("previous", state.as_str())
                    .attr("message", n.status.message.clone())
                    .attr("error", n.status.err.clone())
                    .attr("container", n.status.container_id.clone());
                if let Some(code) = n.status.exit_code {
                    e = e.attr("exit_code", code.to_string());
                }
                out.push(e);
            }
            if desired != n.desired_state {
                out.push(task_event("desired", n).attr("desired_state", n.desired_state.as_str()));
            }
        }
        (None, None) => {}
    }
}

/// The events of one applied command. `before` is [`Before::capture`] of the state
/// just before `cmd` was applied, `after` the state after, `keys` the keys
/// [`State::apply`] reported changed. A command that was rejected, or a duplicate
/// request, gives none.
pub fn derive(
    before: &Before,
    after: &State,
    cmd: &Command,
    response: &Response,
    keys: &[String],
) -> Vec<EventBody> {
    if *response != Response::Ok {
        return vec![];
    }
    let mut out = vec![];
    let cmd = match cmd {
        Command::Once { cmd, .. } => cmd.as_ref(),
        c => c,
    };
    match cmd {
        Command::InitCluster { cluster, .. } => {
            out.push(EventBody::new("cluster", "init", cluster.id.clone(), ""))
        }
        Command::RotateSecret { role, .. } => out.push(
            EventBody::new("cluster", "join-token-rotate", "", "").attr("role", role.as_str()),
        ),
        Command::SetUnlockKey { unlock_key } => out.push(
            EventBody::new("cluster", "autolock", "", "")
                .attr("enabled", unlock_key.is_some().to_string()),
        ),
        Command::StartCaRotation { rotation } => out.push(
            EventBody::new("certificate", "ca-rotation-start", "", "")
                .attr("new_root", rotation.new_digest.clone()),
        ),
        Command::FinishCaRotation { new_digest } => out.push(
            EventBody::new("certificate", "ca-rotation-complete", "", "")
                .attr("new_root", new_digest.clone()),
        ),
        // Where a slot's following volumes live: first recorded, or moved.
        Command::SetVolumeHomes { homes } => {
            for h in homes {
                let Some(svc) = after.services.get(&h.service_id) else {
                    continue;
                };
                out.push(
                    EventBody::new(
                        "service",
                        "volume-home",
                        h.service_id.0.clone(),
                        svc.spec.name.clone(),
                    )
                    .attr("slot", h.slot.to_string())
                    .attr("node", h.node.to_string())
                    .attr("task", h.task.0.clone()),
                );
            }
        }
        _ => {}
    }
    // Keys in the order apply reported them; each object once.
    let mut seen = BTreeSet::new();
    for key in keys {
        if !seen.insert(key.as_str()) {
            continue;
        }
        let Some((table, id)) = key.split_once('/') else {
            continue;
        };
        match table {
            "node" => {
                let Ok(id) = id.parse::<NodeId>() else {
                    continue;
                };
                node_events(before.nodes.get(&id), after.nodes.get(&id), &mut out)
            }
            "service" => {
                let id = ServiceId(id.to_string());
                service_events(before.services.get(&id), after.services.get(&id), &mut out)
            }
            "update" => {
                let id = ServiceId(id.to_string());
                let name = after
                    .services
                    .get(&id)
                    .map(|s| s.spec.name.clone())
                    .unwrap_or_default();
                update_events(
                    &id,
                    &name,
                    before.updates.get(&id),
                    after.update_status.get(&id),
                    &mut out,
                )
            }
            "task" => {
                let id = TaskId(id.to_string());
                task_events(before.tasks.get(&id), after.tasks.get(&id), &mut out)
            }
            "network" => {
                let old = before.networks.get(id);
                let new = after.networks.get(&crate::store::NetworkId(id.to_string()));
                match (old, new) {
                    (None, Some(n)) => {
                        out.push(EventBody::new("network", "create", id, n.spec.name.clone()))
                    }
                    (Some(name), None) => {
                        out.push(EventBody::new("network", "remove", id, name.clone()))
                    }
                    _ => {}
                }
            }
            "secret" | "config" => {
                let kind = if table == "secret" {
                    secret::Kind::Secret
                } else {
                    secret::Kind::Config
                };
                let kind_name: &'static str = if table == "secret" {
                    "secret"
                } else {
                    "config"
                };
                let old = before.secrets.get(&(kind, id.to_string()));
                let new = after.table(kind).get(&secret::SecretId(id.to_string()));
                // Names and version numbers only: never the content.
                match (old, new) {
                    (None, Some(s)) => {
                        out.push(EventBody::new(kind_name, "create", id, s.name.clone()))
                    }
                    (Some((name, _)), None) => {
                        out.push(EventBody::new(kind_name, "remove", id, name.clone()))
                    }
                    (Some((_, v)), Some(s)) if *v != s.current().version => out.push(
                        EventBody::new(kind_name, "update", id, s.name.clone())
                            .attr("version", s.current().version.to_string()),
                    ),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    out
}

/// The `membership` events of a change of Raft voters: one `add` per new voter, one
/// `remove` per voter gone, in id order.
pub fn membership_events(old: &BTreeSet<u64>, new: &BTreeSet<u64>) -> Vec<EventBody> {
    let id = |v: &u64| NodeId(*v).to_string();
    new.difference(old)
        .map(|v| EventBody::new("membership", "add", id(v), ""))
        .chain(
            old.difference(new)
                .map(|v| EventBody::new("membership", "remove", id(v), "")),
        )
        .collect()
}
