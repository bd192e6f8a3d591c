//! Jobs: tasks that run to completion.
//!
//! A job's run is tied to its service version: a new version (any `service update`,
//! as in Swarm, where it starts a new job iteration) starts the job again, and the
//! current tasks of older versions get desired Shutdown. Completions are counted per
//! slot among tasks of the current version, whatever their desired state.
//!
//! Replicated job: slot k (1..=total_completions) is *done* once one of its tasks
//! completed. At most `max_concurrent` slots are *active* (a live task, or a failed one
//! waiting for its restart); free places go to slots that ran before (a restart or a
//! lost node), then to fresh slots, lowest first. A pass walks only the slots that
//! have tasks and the fresh ones it fills, so a large `total_completions` costs nothing. One slot per completion keeps the
//! count exact whatever the history pruning forgets. A task that completes is never
//! restarted; a failed one follows the restart policy, and a slot whose failure is not
//! restarted is *dead*: it neither runs nor counts.
//!
//! Global job: the same per eligible node (see [`super::global`]).

use std::collections::{BTreeMap, BTreeSet};

use super::plan::Plan;
use super::slot::lifecycle;
use super::SlotKey;
use crate::store::{NodeId, Service, Task, TaskState};

/// True when a task of the current version completed among `tasks`.
fn completed(svc: &Service, tasks: &[&Task]) -> bool {
    tasks
        .iter()
        .any(|t| t.spec_version >= svc.version && t.status.state == TaskState::Complete)
}

/// Stops the current tasks of older versions of the job.
pub(super) fn retire_old_iterations(
    plan: &mut Plan<'_>,
    svc: &Service,
    slots: &BTreeMap<SlotKey, Vec<&Task>>,
) {
    for t in slots.values().flatten() {
        if t.spec_version < svc.version && plan.is_current(t) {
            plan.shutdown(t);
        }
    }
}

/// Plans a replicated job; `slots` holds its tasks.
pub(super) fn replicated(
    plan: &mut Plan<'_>,
    svc: &Service,
    max_concurrent: u64,
    total_completions: u64,
    slots: &BTreeMap<SlotKey, Vec<&Task>>,
) {
    retire_old_iterations(plan, svc, slots);
    for (key, tasks) in slots.iter().rev() {
        if !matches!(key, SlotKey::Replica(k) if (1..=total_completions).contains(k)) {
            plan.shutdown_all(tasks);
        }
    }
    // Slots done, active, dead or ran before: walked over when picking fresh ones.
    let mut settled = BTreeSet::new();
    let mut active = 0u64;
    let mut rerun = vec![];
    for (key, tasks) in slots {
        let k = match *key {
            SlotKey::Replica(k) if (1..=total_completions).contains(&k) => k,
            _ => continue,
        };
        if completed(svc, tasks) {
            settled.insert(k);
            continue;
        }
        let view = lifecycle(plan, svc, tasks, true);
        if !view.live.is_empty() || !view.waiting.is_empty() {
            active += 1;
            settled.insert(k);
        } else if !view.finished.is_empty() {
            settled.insert(k);
        } else if tasks.iter().any(|t| t.spec_version >= svc.version) {
            rerun.push(k);
            settled.insert(k);
        }
    }
    let mut room = max_concurrent.saturating_sub(active);
    for k in rerun {
        if room == 0 {
            return;
        }
        plan.create(svc, k, None);
        room -= 1;
    }
    let mut k = 1;
    while room > 0 && k <= total_completions {
        if !settled.contains(&k) {
            plan.create(svc, k, None);
            room -= 1;
        }
        k += 1;
    }
}

/// Plans a global job on one eligible node; `tasks` are the job's tasks there.
pub(super) fn run_once_on(plan: &mut Plan<'_>, svc: &Service, node: NodeId, tasks: &[&Task]) {
    if completed(svc, tasks) {
        return;
    }
    if lifecycle(plan, svc, tasks, false).is_empty() {
        plan.create(svc, 0, Some(node));
    }
}
