//! Task history: each slot keeps its newest few tasks.
//!
//! Per slot (a replica number, or a node for global services), tasks are ordered by
//! creation time, then id; the newest [`HISTORY`] stay (counting the ones this pass
//! creates), and older ones are deleted once they are done: desired Shutdown or later
//! *and* observed terminal, or never given a node, or on a node that left the cluster
//! (nobody will ever report on those two). A restart policy with `max_attempts` keeps
//! `max_attempts + 1` tasks if that is more, so that restarts are counted exactly.

use std::collections::BTreeMap;

use super::plan::Plan;
use super::SlotKey;
use crate::store::{Service, State, Task, TaskState};

/// Tasks kept per slot.
pub const HISTORY: usize = 5;

/// True when nothing more will happen to `t`.
fn done(state: &State, t: &Task) -> bool {
    t.status.state.is_terminal() || t.node_id.is_none_or(|n| !state.nodes.contains_key(&n))
}

/// Deletes the done tasks of `svc` beyond each slot's history.
pub(super) fn prune(plan: &mut Plan<'_>, svc: &Service, slots: &BTreeMap<SlotKey, Vec<&Task>>) {
    let attempts = svc.spec.task.restart.max_attempts;
    let limit = if attempts == 0 {
        HISTORY
    } else {
        HISTORY.max(usize::try_from(attempts.saturating_add(1)).unwrap_or(usize::MAX))
    };
    for (key, tasks) in slots {
        let keep = limit.saturating_sub(plan.created_in(&svc.id, *key));
        let old = tasks.len().saturating_sub(keep);
        for t in &tasks[..old] {
            if plan.desired_of(t) >= TaskState::Shutdown && done(plan.state, t) {
                plan.delete(t);
            }
        }
    }
}
