//! The orchestrator: turns services into tasks, one slot at a time.
//!
//! # How it works
//!
//! The orchestrator owns the creation of tasks, their `desired_state` and their
//! deletion (see the table in [`crate::store::task`]); the scheduler places tasks and
//! agents report what happens to them. Its loop reads like every reconcile loop here:
//! take a snapshot of the state tables, run one pass of [`reconcile`], propose the
//! commands it returns, and wait for the next change (or for
//! [`Decision::wake_at_ms`], when a restart delay, an update's monitor period or its
//! delay between batches runs out). The pass is a pure
//! function: time comes in as `now_ms`, new task ids from an injected generator, and
//! node eligibility (the scheduler's filters) from the caller, so it is tested with
//! plain values and gives the same answer for the same snapshot.
//!
//! A pass groups each service's tasks into *slots*: replica numbers 1..=replicas for
//! replicated services and jobs, nodes for global ones (`SlotKey`). A slot keeps its
//! identity across restarts and updates; its tasks, oldest first, are its history.
//! Then, for each service in id order:
//!
//! 0. A service that has no tasks yet and whose `depends_on` is not met gets none
//!    (`depends.rs`): dependencies gate the first start only.
//! 1. The mode decides which slots exist (`replicated.rs`, `global.rs`, `job.rs`); tasks
//!    of slots that no longer exist (scaled down, node drained, down or gone,
//!    constraints no longer met) get desired Shutdown.
//! 2. Each slot's current tasks (desired Running or before) go through the life cycle
//!    (`slot.rs`): tasks on lost or drained nodes are stopped and replaced at once;
//!    ended ones follow the restart policy (`restart.rs`), with its delay and attempts.
//! 3. Slots left empty get a new task; out-of-date ones are replaced in batches, stop-
//!    or start-first, each replacement counted once it has run healthy through the
//!    monitor period; failures past the ratio pause the update or roll it back
//!    (`update.rs`, which keeps the service's update status in the store).
//! 4. Each slot's history is trimmed to its newest tasks (`history.rs`).
//!
//! Last, tasks of removed services get desired Remove and are deleted once done
//! (`removal.rs`), and the nodes holding the data of following volumes are recorded
//! (`SetVolumeHomes`, [`crate::store::volume::homes_to_record`]).
//!
//! Two judgements shape the rest. A node is *lost* only when it is down or gone: a
//! node this leader has not heard from yet (status unknown, right after a leader
//! change) keeps its tasks. A task is *out of date* ([`is_outdated`]) when its version
//! is behind the service's and its task spec (or the published ports) changed: a scale
//! or a label change bumps the version but restarts nothing, so such tasks keep their
//! older `spec_version`, and "the update is done" means no task is out of date.
//!
//! Every rule writes into one plan, so later rules see earlier decisions, desired
//! states only ever rise, observed status is never written, and the pass ends with at
//! most one command of each kind (`SetTaskDesired`, `CreateTasks`, `DeleteTasks`,
//! `SetUpdateStatus`), then one `RollbackService` per service whose update failed.
//! Whatever an update must remember between passes (units counted as updated or
//! failed, and when) is in the update status, never in the orchestrator: a new
//! leader's pass decides what the old leader's would have.
//! Applying them and running the pass again converges: once the cluster is where the
//! services say, a pass returns no commands.

mod depends;
mod global;
mod history;
mod job;
mod plan;
pub mod progress;
mod rebalance;
mod removal;
mod replicated;
mod restart;
mod slot;
mod update;

use std::collections::BTreeMap;

pub use depends::waiting_on;
pub use history::HISTORY;
pub use progress::{progress, Progress};
pub use slot::is_outdated;

use crate::store::changes::Changed;
use crate::store::service::ServiceMode;
use crate::store::{Command, Node, NodeId, Service, ServiceId, State, Task, TaskId};

/// What one pass decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// The commands to propose, in this order; at most one of each kind.
    pub commands: Vec<Command>,
    /// The earliest time something becomes due (a restart delay running out), unix ms:
    /// run a pass again then, even if nothing changed.
    pub wake_at_ms: Option<u64>,
    /// How many tasks the pass looked at (all of them, or those of the services that
    /// changed: see [`reconcile_changed`]).
    pub examined: usize,
}

impl Decision {
    /// True when the pass found nothing to do.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }
}

/// The identity of a slot within a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SlotKey {
    /// A replica number (0 for a task that has neither a slot nor a node).
    Replica(u64),
    /// A node, for global tasks (slot 0).
    Node(NodeId),
}

impl SlotKey {
    /// The slot `t` belongs to.
    fn of(t: &Task) -> SlotKey {
        match t.node_id {
            Some(n) if t.slot == 0 => SlotKey::Node(n),
            _ => SlotKey::Replica(t.slot),
        }
    }
}

/// The tasks of one service by slot, each slot oldest first (creation time, then id).
type Slots<'a> = BTreeMap<SlotKey, Vec<&'a Task>>;

/// Groups `tasks` by service and slot.
fn slots<'a>(tasks: impl Iterator<Item = &'a Task>) -> BTreeMap<&'a ServiceId, Slots<'a>> {
    let mut by_service: BTreeMap<&ServiceId, Slots<'_>> = BTreeMap::new();
    for t in tasks {
        by_service
            .entry(&t.service_id)
            .or_default()
            .entry(SlotKey::of(t))
            .or_default()
            .push(t);
    }
    for slots in by_service.values_mut() {
        for tasks in slots.values_mut() {
            tasks.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        }
    }
    by_service
}

/// Runs one pass over all of `state` at `now_ms`.
///
/// `eligible(service, node)` says whether `node` may run a task of the global
/// `service` (the scheduler's filters: ready, active, constraints). `new_id` gives the
/// ids of new tasks, called once per task in a deterministic order.
pub fn reconcile(
    state: &State,
    now_ms: u64,
    eligible: &dyn Fn(&Service, &Node) -> bool,
    new_id: &mut dyn FnMut() -> TaskId,
) -> Decision {
    reconcile_changed(state, &Changed::All, now_ms, eligible, new_id)
}

/// Runs one pass over what `changed` names ([`crate::store::changes`]): the services
/// that changed since the last pass, those waiting on their `depends_on` and the tasks
/// of removed services. A service left out is one whose last pass's decision was
/// applied and that nothing touched since, so a pass over it would decide nothing
/// more; anything that may change every service's outcome (a node, a network, the
/// cluster object) comes as [`Changed::All`]. Time alone changes nothing here without a
/// wake-up ([`Decision::wake_at_ms`]), which the caller answers with a whole pass.
///
/// The work is proportional to the tasks of the services looked at
/// ([`Decision::examined`]), not to the whole task table.
pub fn reconcile_changed(
    state: &State,
    changed: &Changed,
    now_ms: u64,
    eligible: &dyn Fn(&Service, &Node) -> bool,
    new_id: &mut dyn FnMut() -> TaskId,
) -> Decision {
    let mut plan = plan::Plan::new(state, now_ms, new_id);
    // The tasks to look at: all, or those of the services that changed, of services
    // waiting to start, and of removed services.
    let tasks: Vec<&Task> = match changed {
        Changed::All => state.tasks.values().collect(),
        Changed::Services(ids) => {
            let waiting = state
                .services
                .values()
                .filter(|s| !s.spec.depends_on.is_empty() && state.tasks.count_of(&s.id) == 0)
                .map(|s| &s.id);
            let removed = state
                .tasks
                .services()
                .filter(|id| !state.services.contains_key(*id));
            let mut look: Vec<&ServiceId> = ids.iter().chain(waiting).chain(removed).collect();
            look.sort_unstable();
            look.dedup();
            look.into_iter()
                .flat_map(|id| state.tasks.of_service(id))
                .collect()
        }
    };
    let by_service = slots(tasks.iter().copied());
    let none = Slots::new();
    let services: Box<dyn Iterator<Item = &Service>> = match changed {
        Changed::All => Box::new(state.services.values()),
        Changed::Services(ids) => Box::new(state.services.values().filter(|s| {
            ids.contains(&s.id)
                || (!s.spec.depends_on.is_empty() && state.tasks.count_of(&s.id) == 0)
        })),
    };
    for svc in services {
        let slots = by_service.get(&svc.id).unwrap_or(&none);
        if slots.is_empty()
            && !svc.spec.depends_on.is_empty()
            && !depends::unmet(state, svc).is_empty()
        {
            continue;
        }
        match svc.spec.mode {
            ServiceMode::Replicated { replicas } => {
                replicated::reconcile(&mut plan, svc, replicas, slots);
                rebalance::reconcile(&mut plan, svc, slots, eligible);
            }
            ServiceMode::Global => global::reconcile(&mut plan, svc, slots, eligible, false),
            ServiceMode::ReplicatedJob {
                max_concurrent,
                total_completions,
            } => job::replicated(&mut plan, svc, max_concurrent, total_completions, slots),
            ServiceMode::GlobalJob => global::reconcile(&mut plan, svc, slots, eligible, true),
        }
        history::prune(&mut plan, svc, slots);
    }
    removal::reconcile(&mut plan, &tasks);
    plan.homes = crate::store::volume::homes_among(state, tasks.iter().copied(), now_ms);
    let due = crate::store::volume::next_due_among(state, tasks.iter().copied());
    if let Some(at) = due.filter(|at| *at > now_ms) {
        plan.wake(at);
    }
    let mut decision = plan.into_decision();
    decision.examined = tasks.len();
    decision
}

#[cfg(test)]
mod tests;
