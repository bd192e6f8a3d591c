//! Filling slots and rolling updates, health-gated, with failure actions and rollback.
//!
//! After [`super::slot::lifecycle`] every slot of a service is a [`Unit`] (a replica
//! slot, or a node for global services). A unit with no current task gets a new one at
//! once (missing, restarted, or lost its node): that is never held back. A unit whose
//! live (or finished) task is out of date ([`super::slot::is_outdated`]) is replaced
//! under the update policy, which follows the service's [`UpdateStatus`] in the store:
//!
//! | state | what a pass does |
//! |---|---|
//! | none, `completed`, `rollback_completed` | fills units; if a unit it has not counted is out of date (a returning node, an old service), the update is opened again |
//! | `updating`, `rollback_started` | counts progress, applies the failure action, starts replacements, completes |
//! | `paused`, `rollback_paused` | counts progress, starts no replacement (replacements under way finish) |
//!
//! The control API opens an update in the same command that changes the task spec (a
//! scale or a label does not), and a rollback in the command that puts the previous spec
//! back; the orchestrator records everything else with `SetUpdateStatus`. The status
//! remembers what a pass cannot see again in the tasks: which units were counted as
//! updated or failed, and when. So a new leader's first pass gives what the last
//! leader's next pass would have.
//!
//! # Counting a unit
//!
//! The settings are the service's `update` config, or, during a rollback, the `rollback`
//! config of the spec rolled back from (the one given with the update that failed).
//!
//! - *Updated*: a task of the current spec is observed Running (its agent reports
//!   Running only once a health check, if any, says healthy) and has been for
//!   `monitor_ms` (its status time stamp; 0: at once). A unit whose current task
//!   predates the update (nothing to replace, or the old task a rollback keeps) counts
//!   once that task runs, without a monitor period, at time 0: it holds no place in
//!   the delay and is not one of the units the update replaces.
//! - *Failed*: a task made by this update (its spec, `spec_version` at or after the
//!   status's version) was observed Failed (exited non-zero, unhealthy, could not
//!   start), Rejected or Complete (a service task that exits) before its unit counted
//!   as updated. A unit fails once per update; its restarts are the restart policy's
//!   business and count no more (start-first: a restart is made beside the old task,
//!   which stops once a task of the new spec has run through a monitor period).
//! - *Started*: a new task is on its way or in its monitor period (the pass asks to be
//!   woken when the period ends).
//! - *Waiting*: out-of-date tasks only.
//!
//! # Batches
//!
//! At most `parallelism` units (0: all) are *in transition*: started, or counted less
//! than `delay_ms` ago (the pass asks to be woken then), or stopping a task (desired
//! Shutdown, not yet observed terminal, on a node that can still report). The pass
//! starts at most the difference, lowest units first. Stop-first (the default): the old
//! task gets desired Shutdown and its replacement is created in the same pass.
//! Start-first: the replacement is created first; the old task gets desired Shutdown in
//! the pass that counts the unit as updated, so it serves until the new one is healthy
//! and monitored, and keeps serving if the new one fails.
//!
//! # Failures
//!
//! When failed units / units the update replaces exceed `max_failure_ratio` (0: the
//! first failure), the failure action runs: `pause` → `paused` (`rollback_paused` in a
//! rollback) with a message naming the failing task and why; `continue` → nothing;
//! `rollback` → the previous spec is put back (`RollbackService`, which starts
//! `rollback_started`) and nothing of the failed spec starts in that pass. Tasks of the
//! spec rolled back to are current again: `is_outdated` compares task specs, so the old
//! tasks a rollback finds (start-first, or units the update had not reached) stay. When
//! every unit is updated or failed: `completed` (`rollback_completed`) with its time.

use std::collections::{BTreeMap, BTreeSet};

use super::plan::Plan;
use super::slot::{is_outdated, node_lost, SlotView};
use crate::store::service::{
    FailureAction, ServiceMode, UpdateConfig, UpdateFailure, UpdateOrder, UpdateState, UpdateStatus,
};
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

impl Unit<'_> {
    /// The unit's key in an update status: its slot, or its node's id (global).
    fn key(&self) -> u64 {
        match self.node {
            Some(n) if self.slot == 0 => n.0,
            _ => self.slot,
        }
    }

    /// True when one of its current tasks is out of date.
    fn is_outdated(&self, svc: &Service) -> bool {
        self.view.all().any(|t| is_outdated(svc, t))
    }
}

/// Where one unit stands in an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Counted as updated at this time, unix ms (0: it needed no new task).
    Updated(u64),
    /// Its new task failed; counted at this time.
    Failed(u64),
    /// A new task is on its way, or in its monitor period.
    Started,
    /// Out-of-date tasks only: waits for its turn.
    Waiting,
}

impl Progress {
    fn is_settled(&self) -> bool {
        matches!(self, Progress::Updated(_) | Progress::Failed(_))
    }
}

/// Fills empty units and rolls out-of-date ones forward under the update status.
pub(super) fn converge(plan: &mut Plan<'_>, svc: &Service, units: &[Unit<'_>]) {
    let stored = plan.state.update_status.get(&svc.id);
    let Some(mut status) = open(plan, svc, units, stored) else {
        let config = config(svc, stored.map_or(UpdateState::Completed, |s| s.state));
        let failed: BTreeSet<u64> = stored
            .map(|s| s.failures.iter().map(|f| f.unit).collect())
            .unwrap_or_default();
        for u in units {
            if u.view.is_empty() {
                plan.create(svc, u.slot, u.node);
            } else {
                if failed.contains(&u.key()) {
                    retry(plan, svc, config, u);
                }
                finish(plan, svc, config, u, None);
            }
        }
        return;
    };
    let config = config(svc, status.state);
    let mut failed_at: BTreeMap<u64, u64> = BTreeMap::new();
    for f in &status.failures {
        failed_at.entry(f.unit).or_insert(f.at_ms);
    }
    let progress: Vec<Progress> = units
        .iter()
        .map(|u| assess(plan, svc, &mut status, &failed_at, config, u))
        .collect();
    if fail(plan, svc, &mut status, config, &progress) {
        // Rolled back: nothing of the failed spec starts; the next pass (on the
        // previous spec) fills and replaces.
        for (u, p) in units.iter().zip(&progress) {
            finish(plan, svc, config, u, Some(*p));
        }
        return;
    }
    for (u, p) in units.iter().zip(&progress) {
        if u.view.is_empty() {
            plan.create(svc, u.slot, u.node);
        } else {
            if matches!(p, Progress::Failed(_)) {
                retry(plan, svc, config, u);
            }
            finish(plan, svc, config, u, Some(*p));
        }
    }
    if status.state.is_active() {
        start_next(plan, svc, config, units, &progress);
        if progress.iter().all(Progress::is_settled) {
            complete(plan, &mut status, &progress);
        }
    }
    if stored != Some(&status) {
        plan.set_update_status(svc, status);
    }
}

/// The update status a pass works with: the stored one while an update is under way;
/// the stored one opened again, with its progress, when a unit it has not counted is
/// out of date (a node that returns with an old task; a unit whose new task failed
/// keeps its old one, start-first, and counts as done); a new one when a unit is out
/// of date and there is no status (a service from before update statuses); none
/// otherwise.
fn open(
    plan: &Plan<'_>,
    svc: &Service,
    units: &[Unit<'_>],
    stored: Option<&UpdateStatus>,
) -> Option<UpdateStatus> {
    if let Some(s) = stored.filter(|s| !s.state.is_done()) {
        return Some(s.clone());
    }
    let outdated: Vec<u64> = units
        .iter()
        .filter(|u| u.is_outdated(svc))
        .map(Unit::key)
        .collect();
    let counted = |key: &u64| {
        stored.is_some_and(|s| {
            s.updated.contains_key(key) || s.failures.iter().any(|f| f.unit == *key)
        })
    };
    if outdated.iter().all(counted) {
        return None;
    }
    Some(match stored {
        Some(s) if s.state.is_rollback() => UpdateStatus {
            state: UpdateState::RollbackStarted,
            completed_ms: None,
            ..s.clone()
        },
        Some(s) => UpdateStatus {
            state: UpdateState::Updating,
            message: "update in progress".into(),
            completed_ms: None,
            ..s.clone()
        },
        None => UpdateStatus::new(
            UpdateState::Updating,
            svc.version,
            plan.now_ms,
            "update in progress",
        ),
    })
}

/// The settings in force: the service's update config, or during a rollback the
/// rollback config of the spec rolled back from.
fn config(svc: &Service, state: UpdateState) -> &UpdateConfig {
    if state.is_rollback() {
        svc.previous_spec
            .as_ref()
            .map_or(&svc.spec.rollback, |p| &p.rollback)
    } else {
        &svc.spec.update
    }
}

/// True when `t` ended in a way that fails an update.
fn has_failed(t: &Task) -> bool {
    matches!(
        t.status.state,
        TaskState::Failed | TaskState::Rejected | TaskState::Complete
    )
}

/// What happened to `t`, in a few words: `failed: exited with code 3`.
fn why(t: &Task) -> String {
    let detail = if t.status.err.is_empty() {
        &t.status.message
    } else {
        &t.status.err
    };
    match t.status.state {
        TaskState::Complete => "exited with code 0 before it counted as updated".to_string(),
        TaskState::Rejected => format!("was rejected: {detail}"),
        _ => format!("failed: {detail}"),
    }
}

/// True when a running task's health check (if any) does not object.
fn healthy(t: &Task) -> bool {
    !matches!(t.status.health.as_str(), "unhealthy" | "starting")
}

/// A live task of the current spec in `u` observed Running and healthy, and the end of
/// its monitor period, unix ms.
fn running<'a>(svc: &Service, config: &UpdateConfig, u: &Unit<'a>) -> Option<(&'a Task, u64)> {
    u.view
        .live
        .iter()
        .find(|t| !is_outdated(svc, t) && t.status.state == TaskState::Running && healthy(t))
        .map(|t| (*t, t.status.timestamp_ms.saturating_add(config.monitor_ms)))
}

/// Where `u` stands; records in `status` what this pass counts for the first time.
/// `failed_at` gives when each unit in `status.failures` failed.
fn assess(
    plan: &mut Plan<'_>,
    svc: &Service,
    status: &mut UpdateStatus,
    failed_at: &BTreeMap<u64, u64>,
    config: &UpdateConfig,
    u: &Unit<'_>,
) -> Progress {
    let key = u.key();
    if let Some(&at) = status.updated.get(&key) {
        return Progress::Updated(at);
    }
    if let Some(&at) = failed_at.get(&key) {
        return Progress::Failed(at);
    }
    let now = plan.now_ms;
    let failed = u
        .tasks
        .iter()
        .find(|t| !is_outdated(svc, t) && t.spec_version >= status.version && has_failed(t));
    if let Some(t) = failed {
        status.failures.push(UpdateFailure {
            unit: key,
            task_id: t.id.clone(),
            reason: why(t),
            at_ms: now,
        });
        return Progress::Failed(now);
    }
    let fresh = |t: &&&Task| !is_outdated(svc, t);
    if let Some((t, ready_ms)) = running(svc, config, u) {
        // A task from before the update is not watched: it is not the update's.
        let at = if t.spec_version < status.version {
            0
        } else if now < ready_ms {
            plan.wake(ready_ms);
            return Progress::Started;
        } else {
            now
        };
        status.updated.insert(key, at);
        return Progress::Updated(at);
    }
    if u.view.is_empty()
        || u.view.live.iter().any(|t| fresh(&t))
        || u.view.waiting.iter().any(|t| fresh(&t))
    {
        return Progress::Started;
    }
    if u.view.finished.iter().any(|t| fresh(&t)) {
        // Ended before the update and not restarted: nothing to replace.
        status.updated.insert(key, 0);
        return Progress::Updated(0);
    }
    Progress::Waiting
}

/// Runs the failure action if failures went past the ratio; true when the service is
/// rolled back.
fn fail(
    plan: &mut Plan<'_>,
    svc: &Service,
    status: &mut UpdateStatus,
    config: &UpdateConfig,
    progress: &[Progress],
) -> bool {
    if !status.state.is_active() || config.failure_action == FailureAction::Continue {
        return false;
    }
    let failed = progress
        .iter()
        .filter(|p| matches!(p, Progress::Failed(_)))
        .count();
    // Units the update replaces (a unit that needed no new task is not one).
    let replaced = progress
        .iter()
        .filter(|p| **p != Progress::Updated(0))
        .count();
    if failed == 0 || failed as f64 <= config.max_failure_ratio * replaced as f64 {
        return false;
    }
    let what = match status.failures.last() {
        Some(f) if svc.spec.mode == ServiceMode::Global => {
            format!("task {} (node {}) {}", f.task_id, NodeId(f.unit), f.reason)
        }
        Some(f) => format!("task {} (slot {}) {}", f.task_id, f.unit, f.reason),
        None => "a task failed".to_string(),
    };
    let tally = format!(
        "{failed} of {replaced} tasks failed, max failure ratio {}",
        config.max_failure_ratio
    );
    match (status.state, config.failure_action) {
        (UpdateState::Updating, FailureAction::Rollback) if svc.previous_spec.is_some() => {
            plan.rollback(svc, format!("{what} ({tally})"));
            true
        }
        (UpdateState::Updating, _) => {
            status.state = UpdateState::Paused;
            status.message = format!("{what} ({tally})");
            false
        }
        _ => {
            status.state = UpdateState::RollbackPaused;
            status.message = format!("{what} ({tally})");
            false
        }
    }
}

/// Marks the update completed: every unit is updated or failed.
fn complete(plan: &Plan<'_>, status: &mut UpdateStatus, progress: &[Progress]) {
    let failed = progress
        .iter()
        .filter(|p| matches!(p, Progress::Failed(_)))
        .count();
    status.completed_ms = Some(plan.now_ms);
    if status.state == UpdateState::RollbackStarted {
        // The message still says why the rollback happened.
        status.state = UpdateState::RollbackCompleted;
        return;
    }
    status.state = UpdateState::Completed;
    status.message = if failed == 0 {
        "update completed".to_string()
    } else {
        format!(
            "update completed; {failed} of {} tasks failed",
            progress.len()
        )
    };
}

/// True when `u` stops a task whose stop is not yet observed.
fn stopping(plan: &Plan<'_>, u: &Unit<'_>) -> bool {
    u.tasks.iter().any(|t| {
        let desired = plan.desired_of(t);
        desired >= TaskState::Shutdown
            && desired < TaskState::Remove
            && !t.status.state.is_terminal()
            && t.node_id.is_some()
            && !node_lost(plan.state, t)
    })
}

/// Starts replacing waiting units, as many as the parallelism leaves room for.
fn start_next(
    plan: &mut Plan<'_>,
    svc: &Service,
    config: &UpdateConfig,
    units: &[Unit<'_>],
    progress: &[Progress],
) {
    let now = plan.now_ms;
    let mut busy = 0u64;
    for (u, p) in units.iter().zip(progress) {
        let in_delay = match p {
            Progress::Updated(at) | Progress::Failed(at) if *at != 0 => {
                let free_ms = at.saturating_add(config.delay_ms);
                if now < free_ms {
                    plan.wake(free_ms);
                    true
                } else {
                    false
                }
            }
            _ => false,
        };
        if *p == Progress::Started || in_delay || stopping(plan, u) {
            busy += 1;
        }
    }
    let mut budget = match config.parallelism {
        0 => u64::MAX,
        p => p.saturating_sub(busy),
    };
    for (u, p) in units.iter().zip(progress) {
        if budget == 0 {
            break;
        }
        if *p == Progress::Waiting && start(plan, svc, config, u) {
            budget -= 1;
        }
    }
}

/// The out-of-date tasks of a unit: live ones, and ended ones (finished, or waiting
/// for a restart that an update need not wait for).
fn outdated<'a>(svc: &Service, u: &Unit<'a>) -> (Vec<&'a Task>, Vec<&'a Task>) {
    let live = u
        .view
        .live
        .iter()
        .copied()
        .filter(|t| is_outdated(svc, t))
        .collect();
    let ended = u
        .view
        .waiting
        .iter()
        .chain(&u.view.finished)
        .copied()
        .filter(|t| is_outdated(svc, t))
        .collect();
    (live, ended)
}

/// Completes a replacement already under way in `u`: once its new task exists, the
/// old ones stop (start-first: once the unit counts as updated, or, for a unit that
/// failed or when no update is under way, once a task of the current spec has run
/// through a monitor period). `p`: where the unit stands, `None` without an update.
fn finish(
    plan: &mut Plan<'_>,
    svc: &Service,
    config: &UpdateConfig,
    u: &Unit<'_>,
    p: Option<Progress>,
) {
    let (old_live, old_ended) = outdated(svc, u);
    if old_live.is_empty() && old_ended.is_empty() {
        return;
    }
    if !u.view.all().any(|t| !is_outdated(svc, t)) {
        return;
    }
    plan.shutdown_all(&old_ended);
    let replaced = match p {
        Some(Progress::Updated(_)) => true,
        Some(Progress::Failed(_)) | None => match running(svc, config, u) {
            Some((_, ready_ms)) if plan.now_ms < ready_ms => {
                plan.wake(ready_ms);
                false
            }
            Some(_) => true,
            None => false,
        },
        Some(Progress::Started | Progress::Waiting) => false,
    };
    if config.order == UpdateOrder::StopFirst || replaced {
        plan.shutdown_all(&old_live);
    }
}

/// Restarts a unit whose new task failed and whose restart is due: its slot is not
/// empty when start-first kept the old task there, so the restart policy's next try
/// (of the current spec) is made here.
fn retry(plan: &mut Plan<'_>, svc: &Service, config: &UpdateConfig, u: &Unit<'_>) {
    if !u.view.all().any(|t| !is_outdated(svc, t)) {
        start(plan, svc, config, u);
    }
}

/// Starts replacing the out-of-date tasks of `u`; true when it did.
fn start(plan: &mut Plan<'_>, svc: &Service, config: &UpdateConfig, u: &Unit<'_>) -> bool {
    let (old_live, old_ended) = outdated(svc, u);
    if old_live.is_empty() && old_ended.is_empty() {
        return false;
    }
    plan.shutdown_all(&old_ended);
    if config.order == UpdateOrder::StopFirst {
        plan.shutdown_all(&old_live);
    }
    plan.create(svc, u.slot, u.node);
    true
}
