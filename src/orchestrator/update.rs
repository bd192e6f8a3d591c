//! Filling slots and rolling updates, for replicated and global services.
//!
//! After [`super::slot::lifecycle`] every slot of a service is a [`Unit`]. A unit with
//! no current task gets a new one at once (missing, restarted, or lost its node): that
//! is never held back. A unit whose live (or finished) task is out of date
//! ([`super::slot::is_outdated`]) is replaced under the update policy:
//!
//! - At most `update.parallelism` units (0: all) are *in transition* at any moment: a
//!   unit is in transition while it holds an up-to-date task not yet observed Running
//!   (or one that failed and waits for, or was refused, a restart: a bad new spec stalls
//!   the update instead of spreading), or a task being stopped (desired Shutdown, not
//!   yet observed terminal, on a node that can still report). The pass counts the units
//!   already in transition and starts at most the difference, lowest slots first.
//! - Stop-first (the default): the old task gets desired Shutdown and its replacement is
//!   created in the same pass.
//! - Start-first: the replacement is created first; the old task gets desired Shutdown
//!   in the pass that sees the new one observed Running. If the new one fails, the old
//!   one keeps serving.
//!
//! The health-gated monitor, `delay_ms` between batches, failure actions and rollback
//! are not here yet.

use super::plan::Plan;
use super::slot::{is_outdated, node_lost, SlotView};
use crate::store::service::UpdateOrder;
use crate::store::{NodeId, Service, Task, TaskState};

/// One slot of a service, ready to be filled or updated.
#[derive(Debug)]
pub(super) struct Unit<'a> {
    /// The slot number (0 for global).
    pub slot: u64,
    /// The node, for global services.
    pub node: Option<NodeId>,
    /// Every task of the slot, oldest first.
    pub tasks: &'a [&'a Task],
    /// Its current tasks, sorted.
    pub view: SlotView<'a>,
}

/// Fills empty units and rolls out-of-date ones forward.
pub(super) fn converge(plan: &mut Plan<'_>, svc: &Service, units: &[Unit<'_>]) {
    for u in units {
        if u.view.is_empty() {
            plan.create(svc, u.slot, u.node);
        } else {
            finish(plan, svc, u);
        }
    }
    // Counted after the swaps above: an old task they stop keeps its slot busy.
    let busy = units.iter().filter(|u| in_transition(plan, svc, u)).count();
    let busy = u64::try_from(busy).unwrap_or(u64::MAX);
    let mut budget = match svc.spec.update.parallelism {
        0 => u64::MAX,
        p => p.saturating_sub(busy),
    };
    for u in units {
        if budget == 0 {
            break;
        }
        if !u.view.is_empty() && start(plan, svc, u) {
            budget -= 1;
        }
    }
}

/// True when `u` counts against the update's parallelism.
fn in_transition(plan: &Plan<'_>, svc: &Service, u: &Unit<'_>) -> bool {
    if u.view.is_empty() {
        return true;
    }
    let starting = u
        .view
        .live
        .iter()
        .any(|t| !is_outdated(svc, t) && t.status.state != TaskState::Running);
    let failing = u.view.waiting.iter().any(|t| !is_outdated(svc, t))
        || u.view
            .finished
            .iter()
            .any(|t| !is_outdated(svc, t) && t.status.state != TaskState::Complete);
    let stopping = u.tasks.iter().any(|t| {
        let desired = plan.desired_of(t);
        desired >= TaskState::Shutdown
            && desired < TaskState::Remove
            && !t.status.state.is_terminal()
            && t.node_id.is_some()
            && !node_lost(plan.state, t)
    });
    starting || failing || stopping
}

/// The out-of-date tasks of a unit: live ones and finished ones.
fn outdated<'a>(svc: &Service, u: &Unit<'a>) -> (Vec<&'a Task>, Vec<&'a Task>) {
    let pick = |tasks: &[&'a Task]| -> Vec<&'a Task> {
        tasks
            .iter()
            .copied()
            .filter(|t| is_outdated(svc, t))
            .collect()
    };
    (pick(&u.view.live), pick(&u.view.finished))
}

/// Completes a replacement already under way in `u`: once its new task exists, the
/// old ones stop (start-first: once the new one is observed Running).
fn finish(plan: &mut Plan<'_>, svc: &Service, u: &Unit<'_>) {
    let (old_live, old_finished) = outdated(svc, u);
    if old_live.is_empty() && old_finished.is_empty() {
        return;
    }
    let fresh: Vec<&Task> = u.view.all().filter(|t| !is_outdated(svc, t)).collect();
    if fresh.is_empty() {
        return;
    }
    plan.shutdown_all(&old_finished);
    let start_first = svc.spec.update.order == UpdateOrder::StartFirst;
    if !start_first || fresh.iter().any(|t| t.status.state == TaskState::Running) {
        plan.shutdown_all(&old_live);
    }
}

/// Starts replacing the out-of-date tasks of `u` if it has no new task yet; true when
/// it did.
fn start(plan: &mut Plan<'_>, svc: &Service, u: &Unit<'_>) -> bool {
    let (old_live, old_finished) = outdated(svc, u);
    if old_live.is_empty() && old_finished.is_empty() {
        return false;
    }
    if u.view.all().any(|t| !is_outdated(svc, t)) {
        return false;
    }
    plan.shutdown_all(&old_finished);
    if svc.spec.update.order == UpdateOrder::StopFirst {
        plan.shutdown_all(&old_live);
    }
    plan.create(svc, u.slot, u.node);
    true
}
