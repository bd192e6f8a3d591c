//! Replicated services: slots 1..=replicas, each with one live task.
//!
//! Tasks in slots above `replicas` (a scale down, highest first, all in one pass) get
//! desired Shutdown. Every slot in range goes through the lifecycle (lost nodes,
//! restarts) and then the update rules ([`super::update`]), which also fill the slots
//! that have no current task.

use std::collections::BTreeMap;

use super::plan::Plan;
use super::slot::lifecycle;
use super::update::{converge, Unit};
use super::SlotKey;
use crate::store::{Service, Task};

/// Plans a replicated service of `replicas` slots; `slots` holds its tasks.
pub(super) fn reconcile<'a>(
    plan: &mut Plan<'_>,
    svc: &Service,
    replicas: u64,
    slots: &'a BTreeMap<SlotKey, Vec<&'a Task>>,
) {
    for (key, tasks) in slots.iter().rev() {
        if !matches!(key, SlotKey::Replica(k) if (1..=replicas).contains(k)) {
            plan.shutdown_all(tasks);
        }
    }
    let units: Vec<Unit<'a>> = (1..=replicas)
        .map(|k| {
            let tasks = slots
                .get(&SlotKey::Replica(k))
                .map_or(&[][..], Vec::as_slice);
            Unit {
                slot: k,
                node: None,
                tasks,
                view: lifecycle(plan, svc, tasks, true),
            }
        })
        .collect();
    converge(plan, svc, &units);
}
