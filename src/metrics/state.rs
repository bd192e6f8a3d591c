//! What the state gauges show, counted from a snapshot of the state tables: pure
//! functions, so that the counting is tested without a cluster.

use std::collections::BTreeMap;

use super::NodeLabel;
use crate::store::{State, TaskState};

/// The reasons an unplaceable task is labelled with: the scheduler's first (commonest)
/// reason, bucketed so that the label's values are this fixed set whatever the message
/// says (a constraint's text or a resource kind never becomes a label value).
pub const REASONS: &[&str] = &[
    "no_nodes",
    "nodes_down",
    "nodes_drained",
    "nodes_paused",
    "lacked_memory",
    "lacked_cpu",
    "lacked_generic_resource",
    "failed_constraint",
    "max_replicas_per_node",
    "host_port_in_use",
    "service_not_found",
    "invalid_spec",
    "other",
];

/// The bucket of a pending task's status message (the scheduler writes `no suitable
/// node: 2 lacked memory, 1 down`, commonest first; see `scheduler::filter`).
pub fn reason_bucket(message: &str) -> &'static str {
    let Some(list) = message.strip_prefix("no suitable node: ") else {
        if message.starts_with("service ") && message.ends_with(" not found") {
            return "service_not_found";
        }
        if message.starts_with("task.") {
            return "invalid_spec";
        }
        return "other";
    };
    if list == "no nodes" {
        return "no_nodes";
    }
    // The first reason: "2 lacked memory" → "lacked memory".
    let first = list.split(", ").next().unwrap_or("");
    let why = first.split_once(' ').map(|(_, w)| w).unwrap_or("");
    match why {
        "down" => "nodes_down",
        "drained" => "nodes_drained",
        "paused" => "nodes_paused",
        "lacked memory" => "lacked_memory",
        "lacked cpu" => "lacked_cpu",
        "at max replicas per node" => "max_replicas_per_node",
        w if w.starts_with("failed constraint ") => "failed_constraint",
        w if w.starts_with("host port ") && w.ends_with(" in use") => "host_port_in_use",
        w if w.starts_with("lacked ") => "lacked_generic_resource",
        _ => "other",
    }
}

/// The state gauges' values.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Nodes by status, availability and role.
    pub nodes: BTreeMap<NodeLabel, u64>,
    /// Services.
    pub services: u64,
    /// Tasks by observed state (every state, zeros included, so a rate of change can be
    /// read from the first scrape).
    pub tasks: BTreeMap<&'static str, u64>,
    /// Pending tasks by reason (every reason of [`REASONS`], zeros included).
    pub unplaceable: BTreeMap<&'static str, u64>,
    /// Addresses of the VIP range no service or task holds (0 without a cluster).
    pub vips_free: u64,
    /// Tasks to run (desired running or less) that hold no virtual IP.
    pub without_vip: u64,
}

/// The message of a task the scheduler has not looked at yet (`orchestrator::plan`).
const CREATED: &str = "created";

/// Every task state, for the zeros.
const TASK_STATES: &[TaskState] = &[
    TaskState::New,
    TaskState::Pending,
    TaskState::Assigned,
    TaskState::Accepted,
    TaskState::Preparing,
    TaskState::Starting,
    TaskState::Running,
    TaskState::Complete,
    TaskState::Shutdown,
    TaskState::Failed,
    TaskState::Rejected,
    TaskState::Orphaned,
    TaskState::Remove,
];

/// Counts the state tables.
pub fn count(s: &State) -> Counts {
    let mut c = Counts {
        services: s.services.len() as u64,
        ..Default::default()
    };
    for n in s.nodes.values() {
        let label = NodeLabel {
            status: n.status.as_str(),
            availability: n.availability.as_str(),
            role: n.role.as_str(),
        };
        *c.nodes.entry(label).or_default() += 1;
    }
    for st in TASK_STATES {
        c.tasks.insert(st.as_str(), 0);
    }
    for r in REASONS {
        c.unplaceable.insert(r, 0);
    }
    let free = s.vips_free();
    c.vips_free = free.unwrap_or(0) as u64;
    for t in s.tasks.values() {
        if free.is_some() && t.vip.is_empty() && t.desired_state <= TaskState::Running {
            c.without_vip += 1;
        }
        *c.tasks.entry(t.status.state.as_str()).or_default() += 1;
        // Pending with the scheduler's reason: no node could take it (a task just
        // created is pending with "created" until the scheduler has looked at it).
        if t.status.state == TaskState::Pending
            && t.desired_state <= TaskState::Running
            && !t.status.message.is_empty()
            && t.status.message != CREATED
        {
            *c.unplaceable
                .entry(reason_bucket(&t.status.message))
                .or_default() += 1;
        }
    }
    c
}

/// The commit index the leader can vouch for: the highest index a majority of the
/// voters hold. `matched` holds each voter's highest replicated index (the leader's
/// own last index included; `None`: nothing replicated yet).
pub fn quorum_index(matched: &[Option<u64>]) -> Option<u64> {
    if matched.is_empty() {
        return None;
    }
    let mut m: Vec<Option<u64>> = matched.to_vec();
    // descending: the majority-th highest is held by a majority
    m.sort_by(|a, b| b.cmp(a));
    m[matched.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Availability, Node, NodeStatus, Role};

    #[test]
    fn reasons_are_bucketed_by_the_first_one() {
        let cases = [
            ("no suitable node: 2 lacked memory, 1 down", "lacked_memory"),
            ("no suitable node: 3 down", "nodes_down"),
            ("no suitable node: 1 drained", "nodes_drained"),
            ("no suitable node: 1 paused, 1 down", "nodes_paused"),
            ("no suitable node: 1 lacked cpu", "lacked_cpu"),
            ("no suitable node: 1 lacked gpu", "lacked_generic_resource"),
            (
                "no suitable node: 2 failed constraint node.labels.zone==a, 1 down",
                "failed_constraint",
            ),
            (
                "no suitable node: 1 at max replicas per node",
                "max_replicas_per_node",
            ),
            (
                "no suitable node: 1 host port 80/tcp in use",
                "host_port_in_use",
            ),
            ("no suitable node: no nodes", "no_nodes"),
            ("service abc not found", "service_not_found"),
            ("task.placement.constraints[0]: bad", "invalid_spec"),
            ("no suitable node: 1 something new", "other"),
            ("whatever", "other"),
            ("", "other"),
        ];
        for (msg, want) in cases {
            assert_eq!(reason_bucket(msg), want, "{msg}");
            assert!(REASONS.contains(&want));
        }
    }

    #[test]
    fn an_attacker_chosen_constraint_never_becomes_a_label() {
        let msg = "no suitable node: 1 failed constraint node.labels.x==\"}\nevil 1";
        assert_eq!(reason_bucket(msg), "failed_constraint");
    }

    fn node(id: u64, status: NodeStatus, availability: Availability, role: Role) -> Node {
        let mut n = Node::new(
            crate::store::NodeId(id),
            format!("10.0.0.{id}:4242"),
            role,
            Default::default(),
            0,
        );
        n.status = status;
        n.availability = availability;
        n
    }

    #[test]
    fn nodes_and_tasks_are_counted_with_zeros_for_the_rest() {
        let mut s = State::default();
        for (id, st, av, role) in [
            (1, NodeStatus::Ready, Availability::Active, Role::Manager),
            (2, NodeStatus::Ready, Availability::Active, Role::Worker),
            (3, NodeStatus::Ready, Availability::Active, Role::Worker),
            (4, NodeStatus::Down, Availability::Drain, Role::Worker),
        ] {
            s.nodes
                .insert(crate::store::NodeId(id), node(id, st, av, role));
        }
        let c = count(&s);
        let get = |status, availability, role| {
            c.nodes
                .get(&NodeLabel {
                    status,
                    availability,
                    role,
                })
                .copied()
        };
        assert_eq!(get("ready", "active", "worker"), Some(2));
        assert_eq!(get("ready", "active", "manager"), Some(1));
        assert_eq!(get("down", "drain", "worker"), Some(1));
        assert_eq!(c.nodes.len(), 3);
        assert_eq!(c.tasks.len(), TASK_STATES.len());
        assert!(c.tasks.values().all(|n| *n == 0));
        assert_eq!(c.unplaceable.len(), REASONS.len());
    }

    #[test]
    fn quorum_index_is_what_a_majority_holds() {
        assert_eq!(quorum_index(&[]), None);
        assert_eq!(quorum_index(&[Some(7)]), Some(7));
        assert_eq!(quorum_index(&[Some(9), Some(5), Some(3)]), Some(5));
        assert_eq!(quorum_index(&[Some(9), None, None]), None);
        assert_eq!(quorum_index(&[Some(9), Some(8), Some(1), None]), Some(1));
        assert_eq!(
            quorum_index(&[Some(9), Some(8), Some(8), Some(2), None]),
            Some(8)
        );
    }
}
