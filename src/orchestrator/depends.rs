//! `depends_on`: a startup gate, as in compose.
//!
//! A service whose spec names dependencies gets its first tasks only once every
//! dependency is ready; until then [`reconcile`](super::reconcile) creates nothing for
//! it. Once it has tasks the gate is open for good: it is managed like any other
//! service, and a dependency that fails, stops or disappears later changes nothing.
//!
//! A dependency is found by its full name (`STACK_db`) and judged by the observed
//! state of its tasks:
//!
//! | condition | ready when |
//! |---|---|
//! | `service_started` | a task wanted running is observed Running |
//! | `service_healthy` | such a task reports health `healthy`, or none (no health check) |
//! | `service_completed_successfully` | a replicated job: every completion of its current version done; otherwise a task Complete (exited 0) |
//!
//! An agent reports Running only once a health check passed (it holds the task in
//! Starting while the check says `starting`), so `service_healthy` mostly asks what
//! `service_started` does; the health is checked too, so a task that is running but
//! not (or no longer) healthy never opens the gate. A dependency that does not exist
//! is not ready.

use std::collections::BTreeSet;

use crate::store::service::{DependCondition, Dependency, ServiceMode};
use crate::store::{Service, State, Task, TaskState};

/// What `svc` waits for before its first tasks start, one reason per unmet dependency
/// (`shop_db to be healthy`), in the order of its spec; empty when it waits for
/// nothing: its dependencies are ready, or it has tasks already (the gate only holds
/// back a first start).
pub fn waiting_on(state: &State, svc: &Service) -> Vec<String> {
    if svc.spec.depends_on.is_empty() || state.tasks_of(&svc.id).next().is_some() {
        return vec![];
    }
    unmet(state, svc)
}

/// The reasons of the dependencies of `svc` that are not ready, whatever its tasks.
pub(super) fn unmet(state: &State, svc: &Service) -> Vec<String> {
    svc.spec
        .depends_on
        .iter()
        .filter_map(
            |d| match state.services.values().find(|s| s.spec.name == d.service) {
                None => Some(format!("{} (no such service)", reason(d))),
                Some(dep) if !ready(state, dep, d.condition) => Some(reason(d)),
                Some(_) => None,
            },
        )
        .collect()
}

/// True when `condition` holds for the service `dep` in `state`.
fn ready(state: &State, dep: &Service, condition: DependCondition) -> bool {
    let mut tasks = state.tasks_of(&dep.id);
    match condition {
        DependCondition::ServiceStarted => tasks.any(running),
        DependCondition::ServiceHealthy => tasks.any(|t| running(t) && healthy(t)),
        DependCondition::ServiceCompletedSuccessfully => match dep.spec.mode {
            ServiceMode::ReplicatedJob {
                total_completions, ..
            } => {
                // One completion per slot, as the job counts them (see `job.rs`).
                let done: BTreeSet<u64> = tasks
                    .filter(|t| {
                        t.spec_version >= dep.version
                            && t.status.state == TaskState::Complete
                            && (1..=total_completions).contains(&t.slot)
                    })
                    .map(|t| t.slot)
                    .collect();
                done.len() as u64 >= total_completions
            }
            _ => tasks.any(|t| t.status.state == TaskState::Complete),
        },
    }
}

/// True when `t` runs and is meant to go on running (not being stopped).
fn running(t: &Task) -> bool {
    t.status.state == TaskState::Running && t.desired_state <= TaskState::Running
}

/// True when `t`'s health check passed, or it has none.
fn healthy(t: &Task) -> bool {
    matches!(t.status.health.as_str(), "healthy" | "")
}

/// `shop_db to be healthy`.
fn reason(d: &Dependency) -> String {
    let what = match d.condition {
        DependCondition::ServiceStarted => "to start",
        DependCondition::ServiceHealthy => "to be healthy",
        DependCondition::ServiceCompletedSuccessfully => "to complete successfully",
    };
    format!("{} {what}", d.service)
}
