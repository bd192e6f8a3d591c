//! Removed services: their tasks are stopped, then forgotten.
//!
//! Every task whose service is gone gets desired Remove (its agent stops and removes
//! the container). A task with desired Remove is deleted once nothing more can happen
//! to it: observed terminal, never given a node, or on a node that is down or gone
//! (when such a node comes back, its agent no longer finds the task among its
//! assignments and removes the container).

use super::plan::Plan;
use super::slot::node_lost;
use crate::store::{Task, TaskState};

/// Plans the removal of the tasks of removed services, among `tasks`.
pub(super) fn reconcile(plan: &mut Plan<'_>, tasks: &[&Task]) {
    let state = plan.state;
    for t in tasks.iter().copied() {
        if t.desired_state == TaskState::Remove {
            if t.status.state.is_terminal() || t.node_id.is_none() || node_lost(state, t) {
                plan.delete(t);
            }
        } else if !state.services.contains_key(&t.service_id) {
            plan.raise(t, TaskState::Remove);
        }
    }
}
