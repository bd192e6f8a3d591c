//! Tasks: created by the orchestrator, assigned by the scheduler, their status reported by the agents through the dispatcher (which may pin a service's image).

use super::Applied;
use crate::store::*;

impl State {
    /// Applies [`Command::CreateTasks`].
    pub(super) fn create_tasks(&mut self, tasks: &[Task]) -> Applied {
        let mut keys = vec![];
        let mut used = None;
        for t in tasks {
            if self.tasks.contains_key(&t.id) {
                continue;
            }
            let mut t = t.clone();
            t.vip = self.allocate_vip(&mut used, &mut keys);
            keys.push(task_key(&t.id));
            self.tasks.insert(t.id.clone(), t);
        }
        (Response::Ok, keys)
    }

    /// Applies [`Command::SetTaskDesired`].
    pub(super) fn set_task_desired(&mut self, updates: &[(TaskId, TaskState)]) -> Applied {
        let mut keys = vec![];
        for (id, desired) in updates {
            if let Some(mut t) = self.tasks.get_mut(id) {
                if *desired > t.desired_state {
                    t.desired_state = *desired;
                    keys.push(task_key(id));
                }
            }
        }
        (Response::Ok, keys)
    }

    /// Applies [`Command::DeleteTasks`].
    pub(super) fn delete_tasks(&mut self, ids: &[TaskId]) -> Applied {
        let mut keys = vec![];
        for id in ids {
            if self.tasks.remove(id).is_some() {
                keys.push(task_key(id));
            }
        }
        (Response::Ok, keys)
    }

    /// Applies [`Command::AssignTasks`].
    pub(super) fn assign_tasks(
        &mut self,
        assign: &[(TaskId, NodeId)],
        pending: &[(TaskId, String)],
        now_ms: &u64,
    ) -> Applied {
        let mut keys = vec![];
        for (id, node) in assign {
            if let Some(mut t) = self.tasks.get_mut(id) {
                if t.status.state <= TaskState::Pending && t.desired_state <= TaskState::Running {
                    t.node_id = Some(*node);
                    t.status = TaskStatus::new(TaskState::Assigned, "scheduled", *now_ms);
                    keys.push(task_key(id));
                }
            }
        }
        for (id, why) in pending {
            if let Some(mut t) = self.tasks.get_mut(id) {
                if t.status.state <= TaskState::Pending && t.status.message != *why {
                    t.status = TaskStatus::new(TaskState::Pending, why.clone(), *now_ms);
                    keys.push(task_key(id));
                }
            }
        }
        (Response::Ok, keys)
    }

    /// Applies [`Command::UpdateTaskStatus`].
    pub(super) fn update_task_status(&mut self, updates: &[(TaskId, TaskStatus)]) -> Applied {
        let mut keys = vec![];
        for (id, status) in updates {
            if let Some(mut t) = self.tasks.get_mut(id) {
                if status.state >= t.status.state && *status != t.status {
                    t.status = status.clone();
                    keys.push(task_key(id));
                }
            }
            // The dispatcher's pin (see `image`): the first task of a service
            // to start pins its image.
            // Only from a report that was applied (not one that moved back).
            let Some(t) = self.tasks.get(id).filter(|t| t.status == *status) else {
                continue;
            };
            let Some(svc) = self.services.get(&t.service_id) else {
                continue;
            };
            let current = self.image_pins.get(&svc.id);
            if let Some(pin) = image::pin_from_report(svc, current, t, status) {
                let sid = svc.id.clone();
                keys.push(pin_key(&sid));
                self.image_pins.insert(sid, pin);
            }
        }
        (Response::Ok, keys)
    }
}
