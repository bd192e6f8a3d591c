//! Global services and global jobs: one task per eligible node.
//!
//! A global task is tied to its node from creation (`node_id` set, slot 0), so a slot
//! here is a node. For every node known to the node table or to the service's tasks:
//!
//! | the node | its tasks |
//! |---|---|
//! | gone, down or drained | current tasks get desired Shutdown (not replaced: the task belongs to that node) |
//! | eligible (the caller's filters: ready, active, constraints) | lifecycle, restarts, updates, one task kept live |
//! | paused, or not yet heard from by this leader | left alone, no new task |
//! | ready and active but not eligible (constraints no longer hold) | current tasks get desired Shutdown |
//!
//! Tasks of a global service that sit in a replica slot (the mode was changed) are
//! stopped. A global job runs on each eligible node until one task of its spec version
//! has completed there ([`super::job`]).

use std::collections::{BTreeMap, BTreeSet};

use super::plan::Plan;
use super::slot::lifecycle;
use super::update::{converge, Unit};
use super::{job, SlotKey};
use crate::store::{Availability, Node, NodeId, NodeStatus, Service, Task};

/// Whether a node should run a global task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    /// Yes.
    Run,
    /// No, and its tasks stop.
    Stop,
    /// No new task; the ones there stay.
    Keep,
}

fn fit(svc: &Service, node: Option<&Node>, eligible: &dyn Fn(&Service, &Node) -> bool) -> Fit {
    let Some(node) = node else {
        return Fit::Stop;
    };
    if node.status == NodeStatus::Down || node.availability == Availability::Drain {
        Fit::Stop
    } else if eligible(svc, node) {
        Fit::Run
    } else if node.availability == Availability::Pause || node.status != NodeStatus::Ready {
        Fit::Keep
    } else {
        Fit::Stop
    }
}

/// Plans a global service (`run_once`: a global job); `slots` holds its tasks.
pub(super) fn reconcile<'a>(
    plan: &mut Plan<'_>,
    svc: &Service,
    slots: &'a BTreeMap<SlotKey, Vec<&'a Task>>,
    eligible: &dyn Fn(&Service, &Node) -> bool,
    run_once: bool,
) {
    if run_once {
        job::retire_old_iterations(plan, svc, slots);
    }
    let mut nodes: BTreeSet<NodeId> = plan.state.nodes.keys().copied().collect();
    for (key, tasks) in slots {
        match key {
            SlotKey::Node(n) => {
                nodes.insert(*n);
            }
            SlotKey::Replica(_) => plan.shutdown_all(tasks),
        }
    }
    let mut units = vec![];
    for n in nodes {
        let tasks = slots.get(&SlotKey::Node(n)).map_or(&[][..], Vec::as_slice);
        match fit(svc, plan.state.nodes.get(&n), eligible) {
            Fit::Stop => plan.shutdown_all(tasks),
            Fit::Keep => {}
            Fit::Run if run_once => job::run_once_on(plan, svc, n, tasks),
            Fit::Run => units.push(Unit {
                slot: 0,
                node: Some(n),
                tasks,
                view: lifecycle(plan, svc, tasks, false),
            }),
        }
    }
    converge(plan, svc, &units);
}
