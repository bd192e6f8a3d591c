//! Feasibility: the filters a node must pass to take a task, and why it did not.
//!
//! The filters run in a fixed order and the first one that fails is the node's
//! [`Rejection`]:
//!
//! 1. ready: the dispatcher hears the node's heartbeats (`down` otherwise);
//! 2. availability: the node is active (`drained`, `paused`);
//! 3. resources: the task's reservations fit in what the node has left (`lacked
//!    memory`, `lacked cpu`, `lacked gpu` for a generic resource);
//! 4. constraints: every placement constraint holds (`failed constraint TEXT`);
//! 5. max replicas per node: the service has fewer tasks there than its limit (`at max
//!    replicas per node`);
//! 6. host ports: no task there already binds a host-mode port the task publishes
//!    (`host port 8080/tcp in use`).
//!
//! An [`Explanation`] counts the rejections of every node into the message a pending
//! task shows: `no suitable node: 2 lacked memory, 1 drained, 1 down`.

use std::collections::BTreeMap;
use std::fmt;

use super::nodeinfo::{wanted_host_ports, HostPort, NodeInfo};
use crate::store::service::{Protocol, Resources};
use crate::store::Constraint;
use crate::store::{Availability, NodeStatus, Service, ServiceId, Task};

/// What a task asks of the node it goes to.
#[derive(Debug, Clone)]
pub(crate) struct Request<'a> {
    /// Its service.
    pub service_id: &'a ServiceId,
    /// Its reservations.
    pub resources: Resources,
    /// Its placement constraints, all valid.
    pub constraints: &'a [Constraint],
    /// At most this many tasks of the service per node (0 = no limit).
    pub max_replicas_per_node: u64,
    /// The host-mode ports it publishes.
    pub host_ports: Vec<HostPort>,
}

impl<'a> Request<'a> {
    /// What `task` of `service` asks. Fails, with the message the task will show, when a
    /// constraint is invalid (the control API refuses those, so only a spec written by
    /// an older version can have one; it would match no node).
    pub fn new(task: &'a Task, service: &'a Service) -> Result<Request<'a>, String> {
        let constraints = &task.spec.placement.constraints;
        for (i, c) in constraints.iter().enumerate() {
            c.check(&format!("task.placement.constraints[{i}]"))
                .map_err(|e| e.to_string())?;
        }
        Ok(Request {
            service_id: &task.service_id,
            resources: task.spec.resources.clone(),
            constraints,
            max_replicas_per_node: task.spec.placement.max_replicas_per_node,
            host_ports: wanted_host_ports(&service.spec),
        })
    }
}

/// Why a node cannot take a task: the first filter it failed. Ordered as the filters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rejection {
    /// The node is not ready (down, or not heard from since this leader took over).
    Down,
    /// The node is drained.
    Drained,
    /// The node is paused.
    Paused,
    /// Not enough unreserved memory.
    LackedMemory,
    /// Not enough unreserved CPU.
    LackedCpu,
    /// Not enough of a generic resource (its kind) left unreserved.
    LackedGeneric(String),
    /// A constraint does not hold (its canonical text).
    FailedConstraint(String),
    /// The service already has its maximum of tasks there.
    AtMaxReplicas,
    /// A host port the task publishes is already bound there.
    HostPortInUse(u16, Protocol),
}

impl Rejection {
    /// The filter that rejected, 0 for the first.
    fn stage(&self) -> u8 {
        match self {
            Rejection::Down => 0,
            Rejection::Drained | Rejection::Paused => 1,
            Rejection::LackedMemory | Rejection::LackedCpu | Rejection::LackedGeneric(_) => 2,
            Rejection::FailedConstraint(_) => 3,
            Rejection::AtMaxReplicas => 4,
            Rejection::HostPortInUse(..) => 5,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Down => f.write_str("down"),
            Rejection::Drained => f.write_str("drained"),
            Rejection::Paused => f.write_str("paused"),
            Rejection::LackedMemory => f.write_str("lacked memory"),
            Rejection::LackedCpu => f.write_str("lacked cpu"),
            Rejection::LackedGeneric(kind) => write!(f, "lacked {kind}"),
            Rejection::FailedConstraint(c) => write!(f, "failed constraint {c}"),
            Rejection::AtMaxReplicas => f.write_str("at max replicas per node"),
            Rejection::HostPortInUse(port, proto) => {
                write!(f, "host port {port}/{} in use", proto.as_str())
            }
        }
    }
}

/// Runs the filters, in order; `Err` names the first that failed.
pub(crate) fn check(req: &Request<'_>, info: &NodeInfo<'_>) -> Result<(), Rejection> {
    let node = info.node;
    if node.status != NodeStatus::Ready {
        return Err(Rejection::Down);
    }
    match node.availability {
        Availability::Active => {}
        Availability::Drain => return Err(Rejection::Drained),
        Availability::Pause => return Err(Rejection::Paused),
    }
    if req.resources.reserve_memory_bytes > info.free_memory_bytes() {
        return Err(Rejection::LackedMemory);
    }
    if req.resources.reserve_nano_cpus > info.free_nano_cpus() {
        return Err(Rejection::LackedCpu);
    }
    if let Some((kind, _)) = req
        .resources
        .generic_resources
        .iter()
        .find(|(kind, n)| **n > info.free_generic(kind))
    {
        return Err(Rejection::LackedGeneric(kind.clone()));
    }
    if let Some(c) = req
        .constraints
        .iter()
        .find(|c| !c.matches(node, info.facts))
    {
        return Err(Rejection::FailedConstraint(c.to_string()));
    }
    let max = req.max_replicas_per_node;
    if max > 0 && info.service_tasks(req.service_id) as u64 >= max {
        return Err(Rejection::AtMaxReplicas);
    }
    if let Some(&(port, proto)) = req.host_ports.iter().find(|p| info.host_ports.contains(p)) {
        return Err(Rejection::HostPortInUse(port, proto));
    }
    Ok(())
}

/// Why a task found no node: how many nodes each filter rejected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Explanation {
    counts: BTreeMap<Rejection, usize>,
}

impl Explanation {
    /// Counts one node's rejection.
    pub fn add(&mut self, why: Rejection) {
        *self.counts.entry(why).or_default() += 1;
    }
}

/// `no suitable node: 2 lacked memory, 1 drained, 1 down`: the commonest reason first;
/// between equal counts, the reason of the filter a node got furthest in first.
impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no suitable node: ")?;
        if self.counts.is_empty() {
            return f.write_str("no nodes");
        }
        let mut reasons: Vec<(&Rejection, usize)> =
            self.counts.iter().map(|(r, n)| (r, *n)).collect();
        reasons.sort_by(|(ra, na), (rb, nb)| {
            nb.cmp(na)
                .then(rb.stage().cmp(&ra.stage()))
                .then(ra.cmp(rb))
        });
        for (i, (why, n)) in reasons.into_iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n} {why}")?;
        }
        Ok(())
    }
}
