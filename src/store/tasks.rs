//! The task table, with the indexes the leader's passes need to do work proportional
//! to what changed: tasks by service, and the tasks waiting for the scheduler; and the
//! virtual IPs in use, so that a command creating tasks does not walk every task to
//! find a free one ([`crate::store::vip`]); and what occupies each node (its tasks
//! by service, and what they reserve), so that a scheduler pass does not tally every
//! task on every node ([`Occupancy`]).
//!
//! [`Tasks`] reads like a sorted map of tasks by id ([`Tasks::get`], [`Tasks::values`],
//! [`Tasks::iter`] in id order), and every way to change it ([`Tasks::insert`],
//! [`Tasks::remove`], [`Tasks::get_mut`]) keeps the indexes in step, so no caller can
//! leave them stale. A task is found by its id in one hash lookup: the indexes name
//! tasks by id, and a search of a sorted map compared some 25 ids, each behind a
//! pointer, per task (12% of the leader while 30,000 tasks were placed). The indexes
//! are not stored: they are rebuilt as tasks are loaded or decoded.
//!
//! Tasks made from one version of a service hold one spec between them (an `Arc`):
//! a task inserted with a spec equal to the one last inserted for its service takes
//! that one's ([`Tasks::insert`]). Each task held a copy (a third of the state's
//! memory at 100,000 tasks); a decoded command or snapshot makes a copy for each
//! task, which is dropped here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::ops::{Deref, DerefMut, Index};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use std::sync::Arc;

use super::service::{Resources, TaskSpec};
use super::{NodeId, ServiceId, Task, TaskId};

/// Tasks by id, indexed by service and by whether they wait for the scheduler.
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    by_id: HashMap<TaskId, Task>,
    /// The ids of `by_id`, in order: how the tasks are walked.
    order: BTreeSet<TaskId>,
    by_service: BTreeMap<ServiceId, BTreeSet<TaskId>>,
    by_node: BTreeMap<NodeId, BTreeSet<TaskId>>,
    schedulable: BTreeSet<TaskId>,
    /// How many tasks hold each virtual IP (one, unless a command gave one twice).
    vips: BTreeMap<Ipv4Addr, u32>,
    /// What the tasks that occupy each node ([`occupies_node`]) add up to.
    occupancy: BTreeMap<NodeId, Occupancy>,
    /// The spec last inserted for each service that has tasks: the next task with an
    /// equal one shares it.
    specs: BTreeMap<ServiceId, Arc<TaskSpec>>,
}

/// What the tasks that occupy one node ([`occupies_node`]) add up to. Sums are kept
/// exactly (a task leaving takes off what it added); the scheduler saturates them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Occupancy {
    /// How many tasks.
    pub tasks: usize,
    /// How many of each service.
    pub by_service: BTreeMap<ServiceId, usize>,
    /// CPU they reserve, in 1e-9 CPUs.
    pub reserved_nano_cpus: u128,
    /// Memory they reserve, bytes.
    pub reserved_memory_bytes: u128,
    /// Generic resources they reserve: kind → count.
    pub reserved_generic: BTreeMap<String, u128>,
}

impl Occupancy {
    fn add(&mut self, service: &ServiceId, r: &Resources) {
        self.tasks += 1;
        *self.by_service.entry(service.clone()).or_default() += 1;
        self.reserved_nano_cpus += u128::from(r.reserve_nano_cpus);
        self.reserved_memory_bytes += u128::from(r.reserve_memory_bytes);
        for (kind, n) in &r.generic_resources {
            *self.reserved_generic.entry(kind.clone()).or_default() += u128::from(*n);
        }
    }

    fn take(&mut self, service: &ServiceId, r: &Resources) {
        self.tasks -= 1;
        if let Some(n) = self.by_service.get_mut(service) {
            *n -= 1;
            if *n == 0 {
                self.by_service.remove(service);
            }
        }
        self.reserved_nano_cpus -= u128::from(r.reserve_nano_cpus);
        self.reserved_memory_bytes -= u128::from(r.reserve_memory_bytes);
        for (kind, n) in &r.generic_resources {
            if let Some(have) = self.reserved_generic.get_mut(kind) {
                *have -= u128::from(*n);
                if *have == 0 {
                    self.reserved_generic.remove(kind);
                }
            }
        }
    }
}

/// True if `task` occupies its node: bound to it and not yet terminal.
pub fn occupies_node(task: &Task) -> bool {
    task.node_id.is_some()
        && task.status.state >= super::TaskState::Assigned
        && !task.status.state.is_terminal()
}

/// What a task is indexed by.
type Keys = (
    ServiceId,
    Option<NodeId>,
    bool,
    Option<Ipv4Addr>,
    Option<(NodeId, Resources)>,
);

fn keys(t: &Task) -> Keys {
    (
        t.service_id.clone(),
        t.node_id,
        is_schedulable(t),
        t.vip.parse().ok(),
        occupies_node(t)
            .then(|| t.node_id.map(|n| (n, t.spec.resources.clone())))
            .flatten(),
    )
}

impl Index<&TaskId> for Tasks {
    type Output = Task;

    fn index(&self, id: &TaskId) -> &Task {
        &self.by_id[id]
    }
}

/// The tasks in id order, with their ids ([`Tasks::iter`]).
#[derive(Clone)]
pub struct Iter<'a> {
    ids: std::collections::btree_set::Iter<'a, TaskId>,
    by_id: &'a HashMap<TaskId, Task>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a TaskId, &'a Task);

    fn next(&mut self) -> Option<Self::Item> {
        let id = self.ids.next()?;
        Some((id, &self.by_id[id]))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.ids.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let id = self.ids.next_back()?;
        Some((id, &self.by_id[id]))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl PartialEq for Tasks {
    fn eq(&self, other: &Self) -> bool {
        self.by_id == other.by_id
    }
}

impl Eq for Tasks {}

impl Serialize for Tasks {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Tasks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<TaskId, Task>::deserialize(d)?
            .into_values()
            .collect())
    }
}

impl<'a> IntoIterator for &'a Tasks {
    type Item = (&'a TaskId, &'a Task);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl FromIterator<Task> for Tasks {
    fn from_iter<I: IntoIterator<Item = Task>>(iter: I) -> Self {
        let mut tasks = Tasks::default();
        for t in iter {
            tasks.insert(t.id.clone(), t);
        }
        tasks
    }
}

impl Tasks {
    /// Adds or replaces the task `id`; returns the one it replaced.
    pub fn insert(&mut self, id: TaskId, mut task: Task) -> Option<Task> {
        let old = self.by_id.remove(&id);
        match &old {
            Some(old) => self.unindex(&id, old),
            None => {
                self.order.insert(id.clone());
            }
        }
        match self.specs.get(&task.service_id) {
            Some(shared) if Arc::ptr_eq(shared, &task.spec) => {}
            Some(shared) if **shared == *task.spec => task.spec = shared.clone(),
            _ => {
                self.specs
                    .insert(task.service_id.clone(), task.spec.clone());
            }
        }
        self.index(&id, &task);
        self.by_id.insert(id, task);
        old
    }

    /// Removes the task `id`; returns it.
    pub fn remove(&mut self, id: &TaskId) -> Option<Task> {
        let old = self.by_id.remove(id)?;
        self.order.remove(id);
        self.unindex(id, &old);
        Some(old)
    }

    /// The task `id`, to change in place; the indexes follow when the guard drops.
    pub fn get_mut(&mut self, id: &TaskId) -> Option<TaskMut<'_>> {
        let before = keys(self.by_id.get(id)?);
        Some(TaskMut {
            tasks: self,
            id: id.clone(),
            before,
        })
    }

    /// Removes every task.
    pub fn clear(&mut self) {
        *self = Tasks::default();
    }

    /// Changes every task with `f`, then indexes them again.
    pub fn update_all(&mut self, mut f: impl FnMut(&mut Task)) {
        let mut by_id = std::mem::take(&mut self.by_id);
        by_id.values_mut().for_each(&mut f);
        *self = by_id.into_values().collect();
    }

    /// The tasks, by id.
    pub fn into_values(self) -> impl Iterator<Item = Task> {
        let Tasks {
            mut by_id, order, ..
        } = self;
        order.into_iter().filter_map(move |id| by_id.remove(&id))
    }

    /// The task `id`.
    pub fn get(&self, id: &TaskId) -> Option<&Task> {
        self.by_id.get(id)
    }

    /// Whether there is a task `id`.
    pub fn contains_key(&self, id: &TaskId) -> bool {
        self.by_id.contains_key(id)
    }

    /// How many tasks.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The tasks with their ids, by id.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            ids: self.order.iter(),
            by_id: &self.by_id,
        }
    }

    /// The tasks, by id.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Task> + ExactSizeIterator + Clone {
        self.iter().map(|(_, t)| t)
    }

    /// The task ids, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &TaskId> + ExactSizeIterator + Clone {
        self.order.iter()
    }

    /// The tasks of service `id`, by task id.
    pub fn of_service<'a>(&'a self, id: &ServiceId) -> impl Iterator<Item = &'a Task> + 'a {
        self.by_service
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|t| self.by_id.get(t))
    }

    /// How many tasks service `id` has.
    pub fn count_of(&self, id: &ServiceId) -> usize {
        self.by_service.get(id).map_or(0, BTreeSet::len)
    }

    /// The services that have tasks.
    pub fn services(&self) -> impl Iterator<Item = &ServiceId> {
        self.by_service.keys()
    }

    /// The tasks that name node `id` (given to it, or global tasks made for it), by id.
    pub fn on_node<'a>(&'a self, id: NodeId) -> impl Iterator<Item = &'a Task> + 'a {
        self.by_node
            .get(&id)
            .into_iter()
            .flatten()
            .filter_map(|t| self.by_id.get(t))
    }

    /// What occupies each node that has tasks on it ([`occupies_node`]).
    pub fn occupancy(&self) -> &BTreeMap<NodeId, Occupancy> {
        &self.occupancy
    }

    /// How many virtual IPs the tasks hold.
    pub fn vips_held(&self) -> usize {
        self.vips.len()
    }

    /// Whether a task holds the virtual IP `ip`.
    pub fn holds_vip(&self, ip: Ipv4Addr) -> bool {
        self.vips.contains_key(&ip)
    }

    /// The tasks waiting for the scheduler ([`crate::scheduler::is_schedulable`]).
    pub fn schedulable(&self) -> impl Iterator<Item = &Task> {
        self.schedulable.iter().filter_map(|t| self.by_id.get(t))
    }

    fn index(&mut self, id: &TaskId, task: &Task) {
        self.index_keys(id, keys(task));
    }

    fn unindex(&mut self, id: &TaskId, task: &Task) {
        self.unindex_keys(id, &keys(task));
    }

    fn index_keys(&mut self, id: &TaskId, (service, node, schedulable, vip, occupies): Keys) {
        if let Some(ip) = vip {
            *self.vips.entry(ip).or_default() += 1;
        }
        if let Some((n, r)) = &occupies {
            self.occupancy.entry(*n).or_default().add(&service, r);
        }
        self.by_service
            .entry(service)
            .or_default()
            .insert(id.clone());
        if let Some(n) = node {
            self.by_node.entry(n).or_default().insert(id.clone());
        }
        if schedulable {
            self.schedulable.insert(id.clone());
        }
    }

    fn unindex_keys(&mut self, id: &TaskId, (service, node, schedulable, vip, occupies): &Keys) {
        if let Some(n) = vip.and_then(|ip| self.vips.get_mut(&ip)) {
            *n -= 1;
            if *n == 0 {
                self.vips.remove(&vip.expect("an address"));
            }
        }
        if let Some((n, r)) = occupies {
            if let Some(o) = self.occupancy.get_mut(n) {
                o.take(service, r);
                if o.tasks == 0 {
                    self.occupancy.remove(n);
                }
            }
        }
        if let Some(ids) = self.by_service.get_mut(service) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_service.remove(service);
                self.specs.remove(service);
            }
        }
        if let Some(ids) = node.and_then(|n| self.by_node.get_mut(&n)) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_node.remove(&node.expect("a node"));
            }
        }
        if *schedulable {
            self.schedulable.remove(id);
        }
    }
}

/// True if `task` waits for the scheduler: status New or Pending, and meant to run.
pub fn is_schedulable(task: &Task) -> bool {
    task.status.state <= super::TaskState::Pending
        && task.desired_state <= super::TaskState::Running
}

/// A task being changed in place ([`Tasks::get_mut`]).
pub struct TaskMut<'a> {
    tasks: &'a mut Tasks,
    id: TaskId,
    before: Keys,
}

impl Deref for TaskMut<'_> {
    type Target = Task;

    fn deref(&self) -> &Task {
        &self.tasks.by_id[&self.id]
    }
}

impl DerefMut for TaskMut<'_> {
    fn deref_mut(&mut self) -> &mut Task {
        self.tasks
            .by_id
            .get_mut(&self.id)
            .expect("the task is held")
    }
}

impl Drop for TaskMut<'_> {
    fn drop(&mut self) {
        let after = keys(&self.tasks.by_id[&self.id]);
        if after != self.before {
            let id = self.id.clone();
            self.tasks.unindex_keys(&id, &self.before);
            self.tasks.index_keys(&id, after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TaskState;

    fn task(id: &str, service: &str) -> Task {
        let svc = crate::store::fixtures::service(service, 1);
        let mut t = crate::store::fixtures::task(id, &svc, 1);
        t.status.state = TaskState::New;
        t
    }

    fn rebuilt(t: &Tasks) -> Tasks {
        t.values().cloned().collect()
    }

    fn same_indexes(a: &Tasks, b: &Tasks) -> bool {
        a.by_service == b.by_service
            && a.by_node == b.by_node
            && a.schedulable == b.schedulable
            && a.vips == b.vips
            && a.occupancy == b.occupancy
    }

    #[test]
    fn the_tasks_of_a_service_made_from_one_spec_share_it_and_each_change_is_its_own() {
        let mut ts = Tasks::default();
        let (a, b) = (task("a", "web"), task("b", "web"));
        assert!(!Arc::ptr_eq(&a.spec, &b.spec), "decoded apart");
        let image = a.spec.container.image.clone();
        let v2 = |id: &str| {
            let mut t = task(id, "web");
            Arc::make_mut(&mut t.spec).container.image = "web:2".into();
            t
        };
        for t in [a, b, task("c", "web"), v2("d"), v2("e")] {
            ts.insert(t.id.clone(), t);
        }
        let spec = |ts: &Tasks, id: &str| ts[&TaskId(id.into())].spec.clone();
        assert!(Arc::ptr_eq(&spec(&ts, "a"), &spec(&ts, "b")));
        assert!(Arc::ptr_eq(&spec(&ts, "a"), &spec(&ts, "c")));
        // Another spec is its own, and shared by the next task made from it.
        assert!(!Arc::ptr_eq(&spec(&ts, "a"), &spec(&ts, "d")));
        assert!(Arc::ptr_eq(&spec(&ts, "d"), &spec(&ts, "e")));
        assert_eq!(spec(&ts, "d").container.image, "web:2");
        assert_eq!(spec(&ts, "a").container.image, image);
        // One task's spec changed leaves the others' as they were.
        Arc::make_mut(&mut ts.get_mut(&TaskId("a".into())).unwrap().spec)
            .container
            .image = "web:3".into();
        assert_eq!(spec(&ts, "a").container.image, "web:3");
        assert_eq!(spec(&ts, "b").container.image, image);
        assert!(same_indexes(&ts, &rebuilt(&ts)));
        // Every task of the service gone: nothing is kept for it.
        for id in ["a", "b", "c", "d", "e"] {
            ts.remove(&TaskId(id.into()));
        }
        assert!(ts.specs.is_empty());
    }

    #[test]
    fn tasks_are_walked_in_id_order_whatever_the_order_they_came_in() {
        let mut ts = Tasks::default();
        let ids = ["m", "a", "z", "c", "b", "y"];
        for id in ids {
            ts.insert(TaskId(id.into()), task(id, "s1"));
        }
        ts.remove(&TaskId("c".into()));
        ts.insert(TaskId("a".into()), task("a", "s2"));
        let sorted = ["a", "b", "m", "y", "z"];
        let walked: Vec<&str> = ts.keys().map(|id| id.0.as_str()).collect();
        assert_eq!(walked, sorted);
        let values: Vec<&str> = ts.values().map(|t| t.id.0.as_str()).collect();
        assert_eq!(values, sorted);
        let pairs: Vec<&str> = (&ts)
            .into_iter()
            .rev()
            .map(|(id, _)| id.0.as_str())
            .collect();
        assert_eq!(pairs, ["z", "y", "m", "b", "a"]);
        assert_eq!(ts.len(), 5);
        assert!(ts.contains_key(&TaskId("m".into())) && !ts.contains_key(&TaskId("c".into())));
        assert_eq!(
            ts[&TaskId("a".into())].service_id,
            ServiceId("id-s2".into())
        );
        // Written in order too (a snapshot's map), and read back the same.
        let json = serde_json::to_string(&ts).expect("json");
        let at = |id: &str| json.find(&format!("\"{id}\":")).expect("written");
        assert!(
            at("a") < at("b") && at("b") < at("m") && at("y") < at("z"),
            "{json}"
        );
        let back: Tasks = serde_json::from_str(&json).expect("read");
        assert_eq!(back, ts);
        assert!(same_indexes(&back, &ts));
        let owned: Vec<String> = ts.into_values().map(|t| t.id.0).collect();
        assert_eq!(owned, sorted);
    }

    #[test]
    fn the_indexes_follow_every_change() {
        let mut ts = Tasks::default();
        ts.insert(TaskId("a".into()), task("a", "s1"));
        ts.insert(TaskId("b".into()), task("b", "s1"));
        ts.insert(TaskId("c".into()), task("c", "s2"));
        assert_eq!(ts.count_of(&ServiceId("id-s1".into())), 2);
        assert_eq!(ts.schedulable().count(), 3);

        // Changed in place: assigned, so no longer schedulable; moved to another service.
        {
            let mut a = ts.get_mut(&TaskId("a".into())).unwrap();
            a.status.state = TaskState::Assigned;
            a.node_id = Some(NodeId(7));
        }
        assert_eq!(ts.on_node(NodeId(7)).count(), 1);
        ts.get_mut(&TaskId("b".into())).unwrap().service_id = ServiceId("id-s2".into());
        assert!(same_indexes(&ts, &rebuilt(&ts)));
        let ids: Vec<_> = ts.schedulable().map(|t| t.id.0.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(ts.count_of(&ServiceId("id-s1".into())), 1);
        assert_eq!(ts.count_of(&ServiceId("id-s2".into())), 2);

        // Replaced, then removed: no empty service is left behind.
        ts.insert(TaskId("a".into()), task("a", "s3"));
        assert!(same_indexes(&ts, &rebuilt(&ts)));
        assert_eq!(
            ts.on_node(NodeId(7)).count(),
            0,
            "the new one names no node"
        );
        ts.remove(&TaskId("a".into()));
        assert!(same_indexes(&ts, &rebuilt(&ts)));
        let services: Vec<_> = ts.services().map(|s| s.0.as_str()).collect();
        assert_eq!(services, ["id-s2"]);
        // Replaced by a task with the same service and state: still indexed.
        ts.insert(TaskId("c".into()), task("c", "s2"));
        assert!(same_indexes(&ts, &rebuilt(&ts)));
        assert_eq!(ts.schedulable().count(), 2);
    }

    #[test]
    fn the_virtual_ips_held_follow_every_change() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let mut ts = Tasks::default();
        let mut a = task("a", "s1");
        a.vip = "10.233.0.5".into();
        let mut b = task("b", "s1");
        b.vip = "10.233.0.6".into();
        ts.insert(TaskId("a".into()), a.clone());
        ts.insert(TaskId("b".into()), b);
        ts.insert(TaskId("c".into()), task("c", "s1"));
        assert!(ts.holds_vip(ip("10.233.0.5")) && ts.holds_vip(ip("10.233.0.6")));
        assert!(!ts.holds_vip(ip("10.233.0.7")), "no task holds it");
        // Changed in place, replaced, removed.
        ts.get_mut(&TaskId("c".into())).unwrap().vip = "10.233.0.7".into();
        assert!(ts.holds_vip(ip("10.233.0.7")));
        ts.insert(TaskId("a".into()), task("a", "s1"));
        assert!(!ts.holds_vip(ip("10.233.0.5")), "its task was replaced");
        ts.remove(&TaskId("b".into()));
        assert!(!ts.holds_vip(ip("10.233.0.6")), "its task was removed");
        assert!(same_indexes(&ts, &rebuilt(&ts)));
        // One address given twice stays held until both are gone.
        a.vip = "10.233.0.7".into();
        ts.insert(TaskId("a".into()), a);
        ts.remove(&TaskId("c".into()));
        assert!(ts.holds_vip(ip("10.233.0.7")));
        assert!(same_indexes(&ts, &rebuilt(&ts)));
        ts.remove(&TaskId("a".into()));
        assert!(!ts.holds_vip(ip("10.233.0.7")));
    }

    #[test]
    fn what_occupies_each_node_follows_every_change() {
        let svc = |s: &str| ServiceId(format!("id-{s}"));
        let mut ts = Tasks::default();
        let placed = |id: &str, service: &str, node: u64, state: TaskState, cpus: u64| {
            let mut t = task(id, service);
            t.node_id = Some(NodeId(node));
            t.status.state = state;
            std::sync::Arc::make_mut(&mut t.spec)
                .resources
                .reserve_nano_cpus = cpus;
            std::sync::Arc::make_mut(&mut t.spec)
                .resources
                .generic_resources = [("gpu".to_string(), 1)].into();
            t
        };
        // d and e do not occupy: bound but finished, and not yet assigned.
        for (id, service, node, state, cpus) in [
            ("a", "s1", 1, TaskState::Running, 10),
            ("b", "s1", 1, TaskState::Assigned, 20),
            ("c", "s2", 1, TaskState::Starting, 30),
            ("d", "s2", 1, TaskState::Failed, 40),
            ("e", "s2", 2, TaskState::Pending, 50),
        ] {
            ts.insert(TaskId(id.into()), placed(id, service, node, state, cpus));
        }
        let o = &ts.occupancy()[&NodeId(1)];
        assert_eq!(o.tasks, 3);
        assert_eq!(o.by_service[&svc("s1")], 2);
        assert_eq!(o.by_service[&svc("s2")], 1);
        assert_eq!(o.reserved_nano_cpus, 60);
        assert_eq!(o.reserved_generic["gpu"], 3);
        assert!(
            !ts.occupancy().contains_key(&NodeId(2)),
            "nothing occupies node 2"
        );
        // A task that ends, one that moves, one that reserves more, one removed.
        ts.get_mut(&TaskId("a".into())).unwrap().status.state = TaskState::Complete;
        {
            let mut e = ts.get_mut(&TaskId("e".into())).unwrap();
            e.status.state = TaskState::Assigned;
        }
        std::sync::Arc::make_mut(&mut ts.get_mut(&TaskId("b".into())).unwrap().spec)
            .resources
            .reserve_nano_cpus = 25;
        ts.remove(&TaskId("c".into()));
        assert!(same_indexes(&ts, &rebuilt(&ts)));
        let o = &ts.occupancy()[&NodeId(1)];
        assert_eq!(o.tasks, 1);
        assert_eq!(
            o.by_service.get(&svc("s2")),
            None,
            "no s2 task is left on it"
        );
        assert_eq!(o.reserved_nano_cpus, 25);
        assert_eq!(o.reserved_generic["gpu"], 1);
        assert_eq!(ts.occupancy()[&NodeId(2)].reserved_nano_cpus, 50);
        ts.remove(&TaskId("b".into()));
        assert!(!ts.occupancy().contains_key(&NodeId(1)), "node 1 is empty");
        assert!(same_indexes(&ts, &rebuilt(&ts)));
    }

    #[test]
    fn decoded_tasks_are_indexed() {
        let ts: Tasks = [task("a", "s1"), task("b", "s2")].into_iter().collect();
        let json = serde_json::to_string(&ts).unwrap();
        let back: Tasks = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ts);
        assert!(same_indexes(&back, &ts));
        assert_eq!(back.of_service(&ServiceId("id-s2".into())).count(), 1);
    }
}
