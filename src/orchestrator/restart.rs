//! The restart policy: whether, and when, a task that ended is replaced.
//!
//! The decision is a function of the snapshot alone, so a pass that runs again decides
//! the same: the delay counts from the task's terminal timestamp, and `max_attempts` is
//! checked against the restarts made in the window that *ends at that timestamp* (as
//! Swarm checks them when the task fails). A task that was given up on stays given up,
//! whatever time it is later; a new service version gives its slot a new start.
//!
//! A task has no field saying why it was created, so a restart is recognised from the
//! slot's history: a task is a restart when the task before it in its slot, made from
//! the same spec, had ended (Complete, Failed or Rejected) by the time it was created.
//! Replacements for lost nodes (made while the old task still ran, or Orphaned),
//! rolling updates (a new spec) and scaling do not count. History pruning keeps at
//! least `max_attempts + 1` tasks per slot so that the count stays exact.

use crate::store::service::RestartCondition;
use crate::store::{Service, Task, TaskState};

/// What to do with a task observed terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Restart {
    /// Replace it now.
    Now,
    /// Replace it at this time, unix ms.
    At(u64),
    /// Leave the slot as it is.
    Never,
}

/// The restart decision for `t`, observed terminal, among the tasks of its slot
/// (`slot`, oldest first).
pub(super) fn decide(svc: &Service, t: &Task, slot: &[&Task], now_ms: u64) -> Restart {
    let policy = &svc.spec.task.restart;
    let state = t.status.state;
    if state == TaskState::Complete && svc.spec.mode.is_job() {
        return Restart::Never;
    }
    match policy.condition {
        RestartCondition::None => return Restart::Never,
        RestartCondition::OnFailure if state == TaskState::Complete => return Restart::Never,
        RestartCondition::Any | RestartCondition::OnFailure => {}
    }
    let ended_ms = t.status.timestamp_ms;
    if policy.max_attempts > 0 && attempts(slot, ended_ms, policy.window_ms) >= policy.max_attempts
    {
        return Restart::Never;
    }
    let due_ms = ended_ms.saturating_add(policy.delay_ms);
    if now_ms >= due_ms {
        Restart::Now
    } else {
        Restart::At(due_ms)
    }
}

/// Restarts among `slot` (oldest first) created at or before `until_ms` and within
/// `window_ms` of it (0: at any time).
pub(super) fn attempts(slot: &[&Task], until_ms: u64, window_ms: u64) -> u64 {
    let in_window = |t: &Task| {
        t.created_ms <= until_ms
            && (window_ms == 0 || t.created_ms.saturating_add(window_ms) > until_ms)
    };
    let n = slot
        .windows(2)
        .filter(|w| is_restart(w[0], w[1]) && in_window(w[1]))
        .count();
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// True when `next`, the task made after `prev` in the same slot, restarted it.
fn is_restart(prev: &Task, next: &Task) -> bool {
    matches!(
        prev.status.state,
        TaskState::Complete | TaskState::Failed | TaskState::Rejected
    ) && prev.status.timestamp_ms <= next.created_ms
        && prev.spec == next.spec
}
