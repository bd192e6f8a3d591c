//! The scheduler: gives each pending task a node.
//!
//! # What it decides
//!
//! The orchestrator creates tasks without a node (replicated services) or with the node
//! already chosen (global services: one task per node). The scheduler owns the step
//! between: it reads a snapshot of the state tables plus the live facts of each node and
//! returns a [`Plan`]: which task goes where, and for each task it could not place, a
//! sentence saying why. The leader proposes the plan as one `AssignTasks` command, so a
//! whole batch of placements commits at once. [`schedule`] is a pure function: no
//! async, no clock, no randomness, and every map it walks is a `BTreeMap`, so the same
//! snapshot always gives the same plan, and the tests need nothing but a `State`.
//!
//! # How a task is placed
//!
//! As in SwarmKit and Nomad, placement is feasibility, then ranking.
//!
//! 1. **Filters** (`filter.rs`) decide whether a node *can* take the task: it is ready,
//!    it is active, the task's reservations fit in what it has left, the placement
//!    constraints hold (`constraint.rs`: `node.labels.zone==a`, `node.facts.load1<2`),
//!    the service is below its maximum of replicas there, and no host-mode port the task
//!    publishes is already bound there. The first filter a node fails is its reason.
//! 2. **Spread** (`spread.rs`) picks, among the nodes that can, the one with the fewest
//!    tasks of the service, then the fewest tasks overall, then the lowest node id.
//!    Placement preferences (`spread=node.labels.zone`) first balance the service
//!    across the values of a label, then spread within the chosen group.
//!
//! Tasks are handled one at a time in a fixed order (service id, slot, task id), and
//! each placement is counted (`nodeinfo.rs`) before the next task is considered: its
//! reservations, its host ports, its place in the service's spread. So six replicas on
//! three equal nodes land two per node, and two tasks that each need most of a node's
//! memory never land on the same node in one plan.
//!
//! A global task already names its node: the filters run on that node alone and the
//! task is either assigned there or stays pending with the reason.
//!
//! A task whose volumes follow it ([`crate::store::volume`]) goes back to the node that
//! holds its slot's data whenever that node passes the filters; elsewhere (by the rules
//! above) when it does not but is up, the agent then copying the data; and nowhere
//! while that node is down: it stays pending with `volume V is on NODE, which is down`.
//!
//! # Explaining
//!
//! A task that fits nowhere stays pending, and its status message counts the nodes by
//! the filter that rejected them: `no suitable node: 2 lacked memory, 1 drained, 1
//! down`, or `no suitable node: no nodes` in an empty cluster. `orc service ps` shows it
//! as it is, so the operator sees what to change.

mod constraint;
mod filter;
mod nodeinfo;
mod spread;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::store::constraint::{Condition, Constraint, ConstraintKey, Operator};

use crate::store::{volume, NodeId, ServiceId, State, Task, TaskId};
use filter::{Explanation, Request};
use nodeinfo::{bound_host_ports, occupies_node, wanted_host_ports, NodeInfo};

/// Live facts a node reports with each heartbeat (kept in the leader's memory, not in
/// Raft); the `node.facts.*` constraints compare against them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeFacts {
    /// The 1-minute load average.
    pub load1: f64,
    /// Memory available for new work, bytes.
    pub mem_free_bytes: u64,
    /// Logical CPUs.
    pub cpus: u32,
}

/// What one scheduling pass decided; proposed as `Command::AssignTasks`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Tasks placed, and their node, in the order they were placed.
    pub assign: Vec<(TaskId, NodeId)>,
    /// Tasks left pending, and why (`no suitable node: ...`).
    pub pending: Vec<(TaskId, String)>,
}

impl Plan {
    /// Leaves `task` pending with `why`, unless that is what it already says.
    fn explain(&mut self, task: &Task, why: String) {
        if task.status.message != why {
            self.pending.push((task.id.clone(), why));
        }
    }

    /// True if the plan neither places a task nor explains one.
    pub fn is_empty(&self) -> bool {
        self.assign.is_empty() && self.pending.is_empty()
    }
}

pub use crate::store::tasks::is_schedulable;

/// Places every task of `state` whose status is New or Pending and whose desired state
/// is at most Running. A task without a node goes to the best feasible node (filters,
/// then spread); a task that already names its node (global services) is assigned there
/// if that node passes the filters. Every other task is left pending, with the reason.
/// `facts` are the nodes' live facts; a node missing from it fails every `node.facts.*`
/// constraint.
///
/// The work is proportional to the tasks waiting ([`crate::store::Tasks::schedulable`]):
/// with none, nothing else is read. A task left pending with the reason it already
/// shows is not in the plan again, so a cluster that stays full writes nothing.
pub fn schedule(state: &State, facts: &BTreeMap<NodeId, NodeFacts>) -> Plan {
    schedule_with(state, facts, true)
}

/// [`schedule`], with or without ranking the feasible nodes once per run of tasks that
/// ask the same ([`Ranked`]); both give the same plan (the tests check it).
fn schedule_with(state: &State, facts: &BTreeMap<NodeId, NodeFacts>, runs: bool) -> Plan {
    let mut queue: Vec<&Task> = state.tasks.schedulable().collect();
    if queue.is_empty() {
        return Plan::default();
    }
    queue.sort_by(|a, b| (&a.service_id, a.slot, &a.id).cmp(&(&b.service_id, b.slot, &b.id)));

    // What occupies each node comes from the task table's index; the host ports its
    // tasks hold are read from the tasks, and only when a task waiting asks for one.
    let occupancy = state.tasks.occupancy();
    let mut infos: BTreeMap<NodeId, NodeInfo<'_>> = state
        .nodes
        .values()
        .map(|n| {
            let info = NodeInfo::occupied(n, facts.get(&n.id), occupancy.get(&n.id));
            (n.id, info)
        })
        .collect();
    let ports_asked = queue.iter().any(|t| {
        state
            .services
            .get(&t.service_id)
            .is_some_and(|s| !wanted_host_ports(&s.spec).is_empty())
    });
    if ports_asked {
        for task in state.tasks.values().filter(|t| occupies_node(t)) {
            let Some(info) = task.node_id.and_then(|id| infos.get_mut(&id)) else {
                continue;
            };
            info.hold_ports(&bound_host_ports(
                state.services.get(&task.service_id),
                task,
            ));
        }
    }

    let mut plan = Plan::default();
    let mut ranked: Option<Ranked<'_>> = None;
    for task in queue {
        let Some(service) = state.services.get(&task.service_id) else {
            let why = format!("service {} not found", task.service_id);
            plan.explain(task, why);
            continue;
        };
        let req = match Request::new(task, service) {
            Ok(req) => req,
            Err(why) => {
                plan.explain(task, why);
                continue;
            }
        };
        let placement = crate::store::volume::placement(state, task);
        let in_run = runs
            && task.node_id.is_none()
            && task.spec.placement.preferences.is_empty()
            && placement == volume::Placement::Anywhere;
        if !in_run {
            ranked = None;
        } else if !ranked.as_ref().is_some_and(|r| r.asks_as(task)) {
            ranked = Some(Ranked::new(&req, task, &infos));
        }
        let placed = match placement {
            volume::Placement::Wait(why) => Err(why),
            volume::Placement::Prefer(home)
                if task.node_id.is_none()
                    && infos
                        .get(&home)
                        .is_some_and(|info| filter::check(&req, info).is_ok()) =>
            {
                Ok(home)
            }
            _ => match ranked.as_ref().and_then(Ranked::best) {
                Some(id) => Ok(id),
                None => place(&req, task, &infos),
            },
        };
        match placed {
            Ok(id) => {
                if let Some(info) = infos.get_mut(&id) {
                    let before = (info.service_tasks(&task.service_id), info.tasks);
                    info.add(&task.service_id, &req.resources, &req.host_ports);
                    if let Some(r) = ranked.as_mut() {
                        r.took(id, before, &req, info);
                    }
                }
                plan.assign.push((task.id.clone(), id));
            }
            Err(why) => plan.explain(task, why),
        }
    }
    plan
}

/// The feasible nodes for a run of tasks of one service that ask the same (resources
/// and placement; no preferences, no node chosen, no following volume), ranked as
/// [`spread::choose`] ranks them: fewest tasks of the service, then fewest tasks, then
/// lowest id. Built once per run, in one pass over the nodes; each placement then
/// re-checks only the node that took the task. That is exact because a plan only adds
/// to nodes: a node that failed a filter cannot pass it later in the same plan. So
/// placing a service's 100 tasks on 1,000 nodes checks 1,000 nodes once, not 100 times.
struct Ranked<'t> {
    service: &'t ServiceId,
    resources: &'t crate::store::service::Resources,
    placement: &'t crate::store::service::Placement,
    nodes: std::collections::BTreeSet<(usize, usize, NodeId)>,
}

impl<'t> Ranked<'t> {
    fn new(req: &Request<'_>, task: &'t Task, infos: &BTreeMap<NodeId, NodeInfo<'_>>) -> Self {
        let nodes = infos
            .iter()
            .filter(|(_, info)| filter::check(req, info).is_ok())
            .map(|(id, info)| (info.service_tasks(&task.service_id), info.tasks, *id))
            .collect();
        Ranked {
            service: &task.service_id,
            resources: &task.spec.resources,
            placement: &task.spec.placement,
            nodes,
        }
    }

    /// True if `task` asks what the run's tasks ask.
    fn asks_as(&self, task: &Task) -> bool {
        *self.service == task.service_id
            && *self.resources == task.spec.resources
            && *self.placement == task.spec.placement
    }

    fn best(&self) -> Option<NodeId> {
        self.nodes.first().map(|(_, _, id)| *id)
    }

    /// Node `id` took a task: it was ranked by `before`, and `info` is what it holds now.
    fn took(&mut self, id: NodeId, before: (usize, usize), req: &Request<'_>, info: &NodeInfo<'_>) {
        if self.nodes.remove(&(before.0, before.1, id)) && filter::check(req, info).is_ok() {
            self.nodes
                .insert((info.service_tasks(self.service), info.tasks, id));
        }
    }
}

/// The node for one task, or why there is none.
fn place(
    req: &Request<'_>,
    task: &Task,
    infos: &BTreeMap<NodeId, NodeInfo<'_>>,
) -> Result<NodeId, String> {
    let mut why = Explanation::default();
    if let Some(id) = task.node_id {
        let Some(info) = infos.get(&id) else {
            return Err(format!("no suitable node: node {id} is not in the cluster"));
        };
        return match filter::check(req, info) {
            Ok(()) => Ok(id),
            Err(r) => {
                why.add(r);
                Err(why.to_string())
            }
        };
    }
    let mut feasible = vec![];
    for (id, info) in infos {
        match filter::check(req, info) {
            Ok(()) => feasible.push(*id),
            Err(r) => why.add(r),
        }
    }
    spread::choose(
        infos,
        &feasible,
        &task.service_id,
        &task.spec.placement.preferences,
    )
    .ok_or_else(|| why.to_string())
}

/// The live facts the dispatcher heard, in the scheduler's terms.
pub fn live_facts(m: &crate::manager::Manager) -> BTreeMap<NodeId, NodeFacts> {
    m.sessions
        .facts()
        .into_iter()
        .map(|(id, f)| {
            (
                id,
                NodeFacts {
                    load1: f.load1,
                    mem_free_bytes: f.mem_free_bytes,
                    cpus: f.cpus,
                },
            )
        })
        .collect()
}

/// Whether a global service may run on a node: ready, active and every constraint
/// holds (an invalid one, from an older version, never does).
pub fn eligible(
    service: &crate::store::Service,
    node: &crate::store::Node,
    facts: Option<&NodeFacts>,
) -> bool {
    node.status == crate::store::NodeStatus::Ready
        && node.availability == crate::store::Availability::Active
        && service
            .spec
            .task
            .placement
            .constraints
            .iter()
            .all(|c| c.matches(node, facts))
}

#[cfg(test)]
mod tests;
