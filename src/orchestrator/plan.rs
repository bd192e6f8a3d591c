//! The plan one pass builds: tasks to create, desired states to raise, tasks to delete,
//! update statuses to record and services to roll back.
//!
//! Every rule of the orchestrator writes into one [`Plan`] instead of into the store, so
//! rules that run later in the same pass see the decisions of earlier ones
//! ([`Plan::desired_of`]) and the pass ends with at most one command of each kind, but
//! one `RollbackService` per service rolled back.

use std::collections::{BTreeMap, BTreeSet};

use super::{Decision, SlotKey};
use crate::store::{
    Command, NodeId, Service, ServiceId, State, Task, TaskId, TaskState, TaskStatus, UpdateStatus,
};

/// The decisions of one pass, over one snapshot.
pub(super) struct Plan<'a> {
    /// The snapshot.
    pub state: &'a State,
    /// The time of the pass, unix ms.
    pub now_ms: u64,
    new_id: &'a mut dyn FnMut() -> TaskId,
    created: Vec<Task>,
    created_per_slot: BTreeMap<(ServiceId, SlotKey), usize>,
    desired: BTreeMap<TaskId, TaskState>,
    deleted: BTreeSet<TaskId>,
    statuses: Vec<(ServiceId, u64, UpdateStatus)>,
    rollbacks: Vec<(ServiceId, u64, String)>,
    wake_at_ms: Option<u64>,
    /// Where following volumes live now ([`crate::store::volume`]).
    pub homes: Vec<crate::store::volume::VolumeHome>,
}

impl<'a> Plan<'a> {
    /// An empty plan over `state`.
    pub fn new(state: &'a State, now_ms: u64, new_id: &'a mut dyn FnMut() -> TaskId) -> Self {
        Plan {
            state,
            now_ms,
            new_id,
            created: vec![],
            created_per_slot: BTreeMap::new(),
            desired: BTreeMap::new(),
            deleted: BTreeSet::new(),
            statuses: vec![],
            rollbacks: vec![],
            wake_at_ms: None,
            homes: vec![],
        }
    }

    /// The desired state of `t` once this plan is applied.
    pub fn desired_of(&self, t: &Task) -> TaskState {
        self.desired
            .get(&t.id)
            .copied()
            .unwrap_or(t.desired_state)
            .max(t.desired_state)
    }

    /// True while `t` is wanted running (desired state Running or before) by this plan.
    pub fn is_current(&self, t: &Task) -> bool {
        self.desired_of(t) <= TaskState::Running
    }

    /// Raises the desired state of `t` to `to`; never lowers it.
    pub fn raise(&mut self, t: &Task, to: TaskState) {
        if to > self.desired_of(t) && !self.deleted.contains(&t.id) {
            self.desired.insert(t.id.clone(), to);
        }
    }

    /// Asks for `t` to be stopped.
    pub fn shutdown(&mut self, t: &Task) {
        self.raise(t, TaskState::Shutdown);
    }

    /// Asks for every current task of `tasks` to be stopped.
    pub fn shutdown_all(&mut self, tasks: &[&Task]) {
        for t in tasks {
            if self.is_current(t) {
                self.shutdown(t);
            }
        }
    }

    /// Forgets `t`.
    pub fn delete(&mut self, t: &Task) {
        self.desired.remove(&t.id);
        self.deleted.insert(t.id.clone());
    }

    /// Wakes the caller up at `at_ms` at the latest.
    pub fn wake(&mut self, at_ms: u64) {
        self.wake_at_ms = Some(self.wake_at_ms.map_or(at_ms, |w| w.min(at_ms)));
    }

    /// Creates a task of `svc` in `slot` (0 for a global task, which gets its `node`).
    pub fn create(&mut self, svc: &Service, slot: u64, node: Option<NodeId>) {
        let key = match node {
            Some(n) if slot == 0 => SlotKey::Node(n),
            _ => SlotKey::Replica(slot),
        };
        *self
            .created_per_slot
            .entry((svc.id.clone(), key))
            .or_default() += 1;
        self.created.push(Task {
            id: (self.new_id)(),
            service_id: svc.id.clone(),
            service_name: svc.spec.name.clone(),
            slot,
            node_id: node,
            spec_version: svc.version,
            spec: svc.spec.task.clone().into(),
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Pending, "created", self.now_ms),
            created_ms: self.now_ms,
            vip: String::new(),
            endpoint: Some(crate::store::TaskEndpoint::of(svc)),
        });
    }

    /// Records the update status of `svc` (at its current version).
    pub fn set_update_status(&mut self, svc: &Service, status: UpdateStatus) {
        self.statuses.push((svc.id.clone(), svc.version, status));
    }

    /// Puts the previous spec of `svc` back, saying why.
    pub fn rollback(&mut self, svc: &Service, message: String) {
        self.rollbacks.push((svc.id.clone(), svc.version, message));
    }

    /// How many tasks this plan creates in a slot of `svc`.
    pub fn created_in(&self, svc: &ServiceId, key: SlotKey) -> usize {
        self.created_per_slot
            .get(&(svc.clone(), key))
            .copied()
            .unwrap_or(0)
    }

    /// The commands: desired states first (stop before start), then creations, then
    /// deletions, then update statuses, then rollbacks (last: they may be rejected, and
    /// a rejection ends the caller's proposals); empty ones left out.
    pub fn into_decision(self) -> Decision {
        let mut commands = vec![];
        let updates: Vec<(TaskId, TaskState)> = self
            .desired
            .into_iter()
            .filter(|(id, to)| {
                self.state
                    .tasks
                    .get(id)
                    .is_some_and(|t| *to > t.desired_state)
            })
            .collect();
        if !updates.is_empty() {
            commands.push(Command::SetTaskDesired { updates });
        }
        if !self.created.is_empty() {
            commands.push(Command::CreateTasks {
                tasks: self.created,
            });
        }
        if !self.deleted.is_empty() {
            commands.push(Command::DeleteTasks {
                ids: self.deleted.into_iter().collect(),
            });
        }
        if !self.statuses.is_empty() {
            commands.push(Command::SetUpdateStatus {
                updates: self.statuses,
            });
        }
        if !self.homes.is_empty() {
            commands.push(Command::SetVolumeHomes { homes: self.homes });
        }
        for (id, version, message) in self.rollbacks {
            commands.push(Command::RollbackService {
                id,
                version,
                message,
                now_ms: self.now_ms,
            });
        }
        Decision {
            commands,
            wake_at_ms: self.wake_at_ms,
            examined: 0,
        }
    }
}
