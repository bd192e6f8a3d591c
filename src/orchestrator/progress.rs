//! How far a service is from what it asks for: the task counts `service ls` and
//! `service inspect` show, and whether the service has *converged*, the rule the CLI
//! waits on after `service create`, `update` and `scale` (as `docker service create`
//! does). Both read the orchestrator's own judgements: which nodes a global service
//! wants a task on (`eligible`, the scheduler's filters) and which tasks are out of
//! date ([`super::is_outdated`]).

use std::collections::BTreeMap;

use crate::store::service::ServiceMode;
use crate::store::{Node, Service, State, Task, TaskState};

/// A service's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Tasks running (and desired running).
    pub running: usize,
    /// Tasks wanted: the replicas or completions; for a global service, one on every
    /// node it may run on, counted before the orchestrator has created them (so that
    /// `0/3` reads as not converged).
    pub desired: usize,
    /// Jobs: tasks of the current version that completed.
    pub completed: usize,
    /// Tasks of the current spec in their final state: running (the newest of each
    /// slot or node), or complete for jobs.
    pub done: usize,
    /// How many such tasks convergence needs.
    pub wanted: usize,
    /// Every wanted task is done and no task of an older spec still runs.
    pub converged: bool,
}

/// The progress of `svc` in `state`; `eligible` says whether a global service may run
/// on a node.
pub fn progress(
    state: &State,
    svc: &Service,
    eligible: &dyn Fn(&Service, &Node) -> bool,
) -> Progress {
    let tasks: Vec<&Task> = state.tasks_of(&svc.id).collect();
    let running = tasks
        .iter()
        .filter(|t| t.status.state == TaskState::Running && t.desired_state <= TaskState::Running)
        .count();
    let completed = tasks
        .iter()
        .filter(|t| t.status.state == TaskState::Complete && t.spec_version == svc.version)
        .count();
    let desired = match &svc.spec.mode {
        ServiceMode::Replicated { replicas } => *replicas as usize,
        ServiceMode::ReplicatedJob {
            total_completions, ..
        } => *total_completions as usize,
        ServiceMode::Global | ServiceMode::GlobalJob => {
            let live = tasks
                .iter()
                .filter(|t| {
                    t.desired_state <= TaskState::Running && t.status.state <= TaskState::Complete
                })
                .count();
            let nodes = state.nodes.values().filter(|n| eligible(svc, n)).count();
            live.max(nodes)
        }
    };
    let (done, wanted, converged) = convergence(svc, &tasks, desired);
    Progress {
        running,
        desired,
        completed,
        done,
        wanted,
        converged,
    }
}

/// Done, wanted and converged for `svc` with `tasks` (all of its tasks) and `desired`
/// tasks wanted (see [`Progress`]).
pub fn convergence(svc: &Service, tasks: &[&Task], desired: usize) -> (usize, usize, bool) {
    let up_to_date = |t: &Task| !super::is_outdated(svc, t);
    let job = svc.spec.mode.is_job();
    let global = matches!(svc.spec.mode, ServiceMode::Global | ServiceMode::GlobalJob);
    // The newest current task of each slot (replicated) or node (global).
    let mut newest: BTreeMap<(u64, Option<crate::store::NodeId>), &Task> = BTreeMap::new();
    for &t in tasks {
        if !(up_to_date(t) || !job && t.desired_state == TaskState::Running) {
            continue;
        }
        let key = if global {
            (0, t.node_id)
        } else {
            (t.slot, None)
        };
        if newest.get(&key).is_none_or(|o| t.created_ms > o.created_ms) {
            newest.insert(key, t);
        }
    }
    let wanted = match svc.spec.mode {
        ServiceMode::Global | ServiceMode::GlobalJob => newest.len().max(desired),
        _ => desired,
    };
    let done = if job {
        tasks
            .iter()
            .filter(|t| up_to_date(t) && t.status.state == TaskState::Complete)
            .count()
    } else {
        newest
            .values()
            .filter(|t| {
                t.status.state == TaskState::Running
                    && t.desired_state == TaskState::Running
                    && up_to_date(t)
            })
            .count()
    };
    let old_running = !job
        && tasks.iter().any(|t| {
            !up_to_date(t)
                && t.status.state == TaskState::Running
                && t.desired_state == TaskState::Running
        });
    let converged = done >= wanted && !old_running && (wanted > 0 || newest.is_empty());
    (done, wanted, converged)
}
