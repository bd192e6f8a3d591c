//! A slot's life: sorting its current tasks into live, waiting and finished.
//!
//! A slot (a replica number, or a node for global services) holds the tasks made for
//! it, oldest first. Its *current* tasks are those wanted running (desired state Running
//! or before). [`lifecycle`] looks at each one:
//!
//! - on a node that is down, gone or drained (when the task may move), or observed
//!   Orphaned: stopped (desired Shutdown) and replaced at once, no restart counted;
//! - not terminal: *live*;
//! - terminal: the restart policy decides ([`super::restart`]): replaced now (the old
//!   task gets desired Shutdown), *waiting* for its delay, or *finished* (kept as the
//!   slot's last word, desired Running, so the slot is not refilled).
//!
//! A slot left with no current task gets a new one (by the caller). Two live tasks of
//! the current spec in one slot (a race of two passes) are cut back to the most
//! advanced one.

use std::cmp::Reverse;

use super::plan::Plan;
use super::restart::{self, Restart};
use crate::store::{Availability, NodeStatus, Service, State, Task, TaskState};

/// What a slot holds after [`lifecycle`].
#[derive(Debug, Default)]
pub(super) struct SlotView<'a> {
    /// Current tasks not observed terminal.
    pub live: Vec<&'a Task>,
    /// Terminal tasks whose restart is due later.
    pub waiting: Vec<&'a Task>,
    /// Terminal tasks that are not restarted.
    pub finished: Vec<&'a Task>,
}

impl<'a> SlotView<'a> {
    /// True when the slot needs a new task.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.waiting.is_empty() && self.finished.is_empty()
    }

    /// Every current task left in the slot.
    pub fn all(&self) -> impl Iterator<Item = &'a Task> + '_ {
        self.live
            .iter()
            .chain(&self.waiting)
            .chain(&self.finished)
            .copied()
    }
}

/// True when a task must leave its node: the node is down, gone or drained.
pub(super) fn must_move(state: &State, t: &Task) -> bool {
    t.node_id.is_some_and(|id| match state.nodes.get(&id) {
        None => true,
        Some(n) => n.status == NodeStatus::Down || n.availability == Availability::Drain,
    })
}

/// True when a task's node is down or gone: nobody will report on it.
pub(super) fn node_lost(state: &State, t: &Task) -> bool {
    t.node_id.is_some_and(|id| {
        state
            .nodes
            .get(&id)
            .is_none_or(|n| n.status == NodeStatus::Down)
    })
}

/// True when `t` was made from an older spec than `svc`'s and must be replaced by an
/// update. A version bump that left the task spec alone (a scale, a label) and kept
/// the published ports and the networks (the task's own, [`Task::endpoint`]) does not
/// make a task out of date.
pub fn is_outdated(svc: &Service, t: &Task) -> bool {
    if t.spec_version >= svc.version {
        return false;
    }
    let endpoint = t.endpoint(Some(svc));
    let ports_changed = endpoint.ports != svc.spec.ports;
    let networks_changed = endpoint.attachments() != svc.spec.attachments();
    *t.spec != svc.spec.task || ports_changed || networks_changed
}

/// Sorts the current tasks of one slot (`tasks`, oldest first) and plans what the
/// lost, ended and duplicate ones need. `movable`: tasks leave nodes that are down or
/// drained (replicated); global callers decide per node themselves.
pub(super) fn lifecycle<'a>(
    plan: &mut Plan<'_>,
    svc: &Service,
    tasks: &[&'a Task],
    movable: bool,
) -> SlotView<'a> {
    let mut view = SlotView::default();
    for &t in tasks {
        if !plan.is_current(t) {
            continue;
        }
        let observed = t.status.state;
        let lost = observed == TaskState::Orphaned
            || (movable && !observed.is_terminal() && must_move(plan.state, t));
        if lost {
            if observed != TaskState::Orphaned && node_lost(plan.state, t) {
                // Its node is down or gone: the container there is stale. The task is
                // forgotten (see removal), so a returning node removes the container.
                plan.raise(t, TaskState::Remove);
            } else {
                plan.shutdown(t);
            }
        } else if !observed.is_terminal() {
            view.live.push(t);
        } else {
            match restart::decide(svc, t, tasks, plan.now_ms) {
                Restart::Now => plan.shutdown(t),
                Restart::At(due_ms) => {
                    plan.wake(due_ms);
                    view.waiting.push(t);
                }
                Restart::Never => view.finished.push(t),
            }
        }
    }
    let (fresh, old): (Vec<&Task>, Vec<&Task>) =
        view.live.iter().partition(|t| !is_outdated(svc, t));
    if fresh.len() > 1 {
        let keep = fresh
            .iter()
            .max_by_key(|t| (t.status.state, Reverse(t.created_ms), Reverse(&t.id)))
            .map(|t| t.id.clone());
        for t in &fresh {
            if Some(&t.id) != keep.as_ref() {
                plan.shutdown(t);
            }
        }
        view.live = old
            .into_iter()
            .chain(fresh.into_iter().filter(|t| Some(&t.id) == keep.as_ref()))
            .collect();
    }
    view
}
