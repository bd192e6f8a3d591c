//! Rebalancing: when a node comes back (or joins), a replicated service spreads onto
//! it again, a few tasks at a time. Swarm leaves such a node empty until the next
//! update.
//!
//! Only a settled service moves: every slot holds one task of the current spec,
//! running, and nothing else of the service is on its way (no update under way or
//! paused, no restart pending, nothing decided for it earlier in this pass). Then, if
//! the busiest eligible node holds at least two more of its tasks than the least busy
//! one, up to `update.parallelism` tasks (0: as many as needed) move: each is stopped
//! and its slot gets a new task placed on the least busy node. The next batch waits
//! until the moved tasks run, then `update.delay` after the last of them started.
//! Services with placement preferences are left to their spread rules.

use std::collections::BTreeMap;

use super::plan::Plan;
use super::slot::is_outdated;
use super::SlotKey;
use crate::store::service::ServiceMode;
use crate::store::{Availability, Node, NodeId, NodeStatus, Service, Task, TaskState};

/// Plans the moves of one replicated service; `slots` holds its tasks.
pub(super) fn reconcile(
    plan: &mut Plan<'_>,
    svc: &Service,
    slots: &BTreeMap<SlotKey, Vec<&Task>>,
    eligible: &dyn Fn(&Service, &Node) -> bool,
) {
    let ServiceMode::Replicated { replicas } = svc.spec.mode else {
        return;
    };
    if replicas < 2 || !svc.spec.task.placement.preferences.is_empty() {
        return;
    }
    let Some(running) = settled(plan, svc, slots, replicas) else {
        return;
    };
    let last_start = running
        .iter()
        .map(|t| t.status.timestamp_ms)
        .max()
        .unwrap_or(0);
    let due = last_start.saturating_add(svc.spec.update.delay_ms);
    let mut count = load(plan, svc, &running, eligible);
    if count.len() < 2 {
        return;
    }
    let limit = match svc.spec.update.parallelism {
        0 => usize::MAX,
        p => p as usize,
    };
    let mut moves = 0;
    while moves < limit {
        let (&busiest, most) = count
            .iter()
            .max_by_key(|(id, ts)| (ts.len(), std::cmp::Reverse(**id)))
            .expect("two nodes");
        let (&idlest, least) = count
            .iter()
            .min_by_key(|(id, ts)| (ts.len(), **id))
            .expect("two nodes");
        if most.len() < least.len() + 2 {
            break;
        }
        if plan.now_ms < due {
            plan.wake(due);
            return;
        }
        // the newest task of the busiest node moves
        let Some(t) = count.get_mut(&busiest).and_then(|ts| {
            ts.sort_by_key(|t| (t.created_ms, t.slot));
            ts.pop()
        }) else {
            break;
        };
        plan.shutdown(t);
        plan.create(svc, t.slot, Some(idlest));
        count.get_mut(&idlest).expect("idlest").push(t);
        moves += 1;
    }
}

/// The service's running tasks if it is settled (see the module doc): no update under
/// way or paused, and in each slot `1..=replicas` one current task, running, up to
/// date, placed and untouched by this pass, and nothing current in any other slot;
/// `None` otherwise.
fn settled<'t>(
    plan: &Plan<'_>,
    svc: &Service,
    slots: &BTreeMap<SlotKey, Vec<&'t Task>>,
    replicas: u64,
) -> Option<Vec<&'t Task>> {
    if plan
        .state
        .update_status
        .get(&svc.id)
        .is_some_and(|u| !u.state.is_done())
    {
        return None;
    }
    // Settled: one current task per slot, running, up to date, untouched by this pass.
    let mut running: Vec<&Task> = vec![];
    for (key, tasks) in slots {
        let current: Vec<&&Task> = tasks
            .iter()
            .filter(|t| t.desired_state <= TaskState::Running)
            .collect();
        let in_range = matches!(key, SlotKey::Replica(k) if (1..=replicas).contains(k));
        if !in_range {
            if !current.is_empty() {
                return None;
            }
            continue;
        }
        if plan.created_in(&svc.id, *key) > 0 {
            return None;
        }
        match current.as_slice() {
            [t] if t.status.state == TaskState::Running
                && plan.is_current(t)
                && !is_outdated(svc, t)
                && t.node_id.is_some() =>
            {
                running.push(t)
            }
            _ => return None,
        }
    }
    (running.len() as u64 == replicas).then_some(running)
}

/// The nodes that may take the service's tasks (ready, active, eligible), each with
/// the `running` tasks it holds.
fn load<'t>(
    plan: &Plan<'_>,
    svc: &Service,
    running: &[&'t Task],
    eligible: &dyn Fn(&Service, &Node) -> bool,
) -> BTreeMap<NodeId, Vec<&'t Task>> {
    // Nodes that may take the service's tasks, and how many each holds.
    let mut count: BTreeMap<NodeId, Vec<&Task>> = plan
        .state
        .nodes
        .values()
        .filter(|n| {
            n.status == NodeStatus::Ready
                && n.availability == Availability::Active
                && eligible(svc, n)
        })
        .map(|n| (n.id, vec![]))
        .collect();
    for t in running {
        if let Some(list) = t.node_id.and_then(|id| count.get_mut(&id)) {
            list.push(t);
        }
    }
    count
}
