//! What changed in the state tables, and when, so the leader's passes look again only
//! at what changed since their last pass.
//!
//! Every applied command moves a process-wide generation counter on. [`State::apply`]
//! records, from the keys a command changed, the generation at which each service (its
//! spec, its update status or any of its tasks) last changed, and when a node or
//! anything else (the cluster object, networks, secrets: what may change every
//! service's outcome) last did. A pass remembers the generation it read
//! ([`Changes::generation`]) and next asks [`Changes::since`] it.
//!
//! The record is bookkeeping of this process, not replicated state: it is never stored
//! nor sent, two states compare equal whatever it holds, and a state loaded, decoded or
//! built afresh counts as changed everywhere (its generation is new, so no pass can
//! mistake it for the state it read before).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Command, NodeId, ServiceId, State};

static NEXT: AtomicU64 = AtomicU64::new(1);

fn next() -> u64 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// When each part of a state last changed (see the module doc).
#[derive(Debug, Clone)]
pub struct Changes {
    last: u64,
    all: u64,
    nodes: u64,
    services: BTreeMap<ServiceId, u64>,
    /// The last change of what may change any node's assignments or volumes to drop
    /// among the services' records: volume homes, and the records (spec, update
    /// status, pin) of a service gone or one with volume homes.
    service_records: u64,
    /// The last change of each other service's own records (spec, update status,
    /// pin): it changes what the nodes running its tasks are sent, and only that.
    records: BTreeMap<ServiceId, u64>,
    /// The latest of `records`: while it is older than what a session read, none of
    /// its node's services is looked up (1,000 sessions did, at every entry).
    records_last: u64,
    /// The last change of a task that names each node.
    node_tasks: BTreeMap<NodeId, u64>,
    /// The last change of each node's own record.
    node_records: BTreeMap<NodeId, u64>,
}

impl Default for Changes {
    fn default() -> Self {
        let g = next();
        Changes {
            last: g,
            all: g,
            nodes: g,
            services: BTreeMap::new(),
            service_records: g,
            records: BTreeMap::new(),
            records_last: g,
            node_tasks: BTreeMap::new(),
            node_records: BTreeMap::new(),
        }
    }
}

impl PartialEq for Changes {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Changes {}

/// What changed since a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Anything may have: look at everything.
    All,
    /// Only these services (their specs, update statuses or tasks).
    Services(BTreeSet<ServiceId>),
}

impl Changes {
    /// The generation of the latest change.
    pub fn generation(&self) -> u64 {
        self.last
    }

    /// What changed after generation `gen` (`None`: everything).
    pub fn since(&self, gen: Option<u64>) -> Changed {
        match gen {
            Some(g) if self.nodes <= g => self.services_since(gen),
            _ => Changed::All,
        }
    }

    /// What changed after generation `gen` in what is made of the services, their tasks
    /// and the records of the nodes these run on (the endpoint table): a node's change
    /// counts as a change of the services of its tasks, not of everything. A node
    /// marked down and up again made the whole table of 30,000 backends again.
    pub fn services_since(&self, gen: Option<u64>) -> Changed {
        match gen {
            Some(g) if self.all <= g => Changed::Services(
                self.services
                    .iter()
                    .filter(|(_, at)| **at > g)
                    .map(|(id, _)| id.clone())
                    .collect(),
            ),
            _ => Changed::All,
        }
    }

    /// True if what a session sends node `node`, which runs tasks of `services`, may
    /// have changed after generation `gen`: one of the tasks that name it, its own
    /// record, the records of one of `services`, the records every node shares (volume
    /// homes), or anything else (`None`: everything has). Another node's record counts
    /// only when `waiting`: when `node` was sent a task whose container is still to be
    /// made (the nodes it may fetch an image or a volume from are sent with it). Which
    /// of those nodes are known to hold the image, a hint that orders them, is as of
    /// when the assignments were made. A rolling update's status changed every node's
    /// assignments, made again for all 1,000 nodes at each batch; so did each node
    /// marked down.
    pub fn touch_node(
        &self,
        node: NodeId,
        services: &BTreeSet<ServiceId>,
        waiting: bool,
        gen: Option<u64>,
    ) -> bool {
        let Some(g) = gen else { return true };
        self.all > g
            || (waiting && self.nodes > g)
            || self.node_records.get(&node).is_some_and(|at| *at > g)
            || self.service_records > g
            || self.node_tasks.get(&node).is_some_and(|at| *at > g)
            || (self.records_last > g
                && services
                    .iter()
                    .any(|s| self.records.get(s).is_some_and(|at| *at > g)))
    }

    /// How many services have a record (bounded by the services and their tasks).
    pub fn services_recorded(&self) -> usize {
        self.services.len()
    }

    pub(super) fn all(&mut self) {
        self.last = next();
        self.all = self.last;
    }

    fn node(&mut self) {
        self.last = next();
        self.nodes = self.last;
    }

    fn service(&mut self, id: ServiceId) {
        self.last = next();
        self.services.insert(id, self.last);
    }
}

impl State {
    /// The services and nodes of the tasks `cmd` deletes, read before it is applied
    /// (after, the tasks are gone).
    pub(super) fn deleted_services(&self, cmd: &Command) -> Vec<(ServiceId, Option<NodeId>)> {
        match cmd {
            Command::DeleteTasks { ids } => ids
                .iter()
                .filter_map(|id| self.tasks.get(id))
                .map(|t| (t.service_id.clone(), t.node_id))
                .collect(),
            _ => vec![],
        }
    }

    /// Records what the changed `keys` (and the deleted tasks) touched.
    pub(super) fn record_changes(
        &mut self,
        keys: &[String],
        deleted: Vec<(ServiceId, Option<NodeId>)>,
    ) {
        let mut touched: BTreeSet<ServiceId> = BTreeSet::new();
        let mut nodes: BTreeSet<NodeId> = BTreeSet::new();
        for (service, node) in deleted {
            touched.insert(service);
            nodes.extend(node);
        }
        let mut records = false;
        let mut own_records: BTreeSet<ServiceId> = BTreeSet::new();
        for key in keys {
            let (table, id) = key.split_once('/').unwrap_or((key.as_str(), ""));
            match table {
                "task" => {
                    if let Some(t) = self.tasks.get(&super::TaskId(id.to_string())) {
                        touched.insert(t.service_id.clone());
                        nodes.extend(t.node_id);
                    }
                }
                "service" | "update" | "pin" => {
                    let sid = ServiceId(id.to_string());
                    // A service gone, or one with volume homes, may change what
                    // nodes without its tasks are sent (the copies they must drop).
                    let homes = self
                        .volume_homes
                        .range((sid.clone(), 0)..=(sid.clone(), u64::MAX))
                        .next()
                        .is_some();
                    if homes || !self.services.contains_key(&sid) {
                        records = true;
                    } else {
                        own_records.insert(sid.clone());
                    }
                    touched.insert(sid);
                }
                "volume" => {
                    let service = id.rsplit_once('/').map_or(id, |(s, _)| s);
                    touched.insert(ServiceId(service.to_string()));
                    records = true;
                }
                "node" => {
                    self.changes.node();
                    if let Ok(n) = id.parse::<NodeId>() {
                        self.changes.node_records.insert(n, self.changes.last);
                        // What is made of its tasks names the node (its address, its
                        // status): their services changed too.
                        touched.extend(self.tasks.on_node(n).map(|t| t.service_id.clone()));
                    }
                    // A node gone takes its records with it.
                    let known = &self.nodes;
                    self.changes.node_tasks.retain(|n, _| known.contains_key(n));
                    self.changes
                        .node_records
                        .retain(|n, _| known.contains_key(n));
                }
                // A control write's record: its command's own keys say what it changed.
                "request" => {}
                _ => self.changes.all(),
            }
        }
        if records {
            self.changes.last = next();
            self.changes.service_records = self.changes.last;
        }
        for id in own_records {
            self.changes.last = next();
            self.changes.records.insert(id, self.changes.last);
            self.changes.records_last = self.changes.last;
        }
        for node in nodes {
            if self.nodes.contains_key(&node) {
                self.changes.last = next();
                self.changes.node_tasks.insert(node, self.changes.last);
            }
        }
        for id in touched {
            // A service gone with all its tasks leaves nothing to look at again.
            if !self.services.contains_key(&id) && self.tasks.count_of(&id) == 0 {
                self.changes.services.remove(&id);
                self.changes.records.remove(&id);
                self.changes.last = next();
            } else {
                self.changes.service(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{fixtures, Command, NodeId, TaskId, TaskState, TaskStatus};

    fn state() -> State {
        let mut s = State::default();
        for name in ["a", "b"] {
            let svc = fixtures::service(name, 2);
            for slot in 1..=2 {
                let t = fixtures::task(&format!("{name}{slot}"), &svc, slot);
                s.tasks.insert(t.id.clone(), t);
            }
            s.services.insert(svc.id.clone(), svc);
        }
        s
    }

    fn services(names: &[&str]) -> Changed {
        Changed::Services(names.iter().map(|n| ServiceId(format!("id-{n}"))).collect())
    }

    /// Node `n` marked down at `now_ms`.
    fn node_down(n: u64, now_ms: u64) -> Command {
        Command::UpdateNodeStatus {
            id: NodeId(n),
            status: crate::store::NodeStatus::Down,
            description: None,
            addr: None,
            now_ms,
        }
    }

    #[test]
    fn a_task_change_names_its_service_and_a_node_change_everything_or_its_tasks_services() {
        let mut s = state();
        assert_eq!(s.changes.since(None), Changed::All);
        let g = s.changes.generation();
        assert_eq!(s.changes.since(Some(g)), services(&[]));

        let status = TaskStatus::new(TaskState::Running, "", 1);
        s.apply(&Command::UpdateTaskStatus {
            updates: vec![(TaskId("b1".into()), status)],
        });
        assert_eq!(s.changes.since(Some(g)), services(&["b"]));
        let g2 = s.changes.generation();
        assert_eq!(s.changes.since(Some(g2)), services(&[]));

        // Deleted tasks name their service too.
        s.apply(&Command::DeleteTasks {
            ids: vec![TaskId("a2".into())],
        });
        assert_eq!(s.changes.since(Some(g2)), services(&["a"]));
        assert_eq!(s.changes.since(Some(g)), services(&["a", "b"]));

        // A command that changes nothing records nothing.
        let g3 = s.changes.generation();
        s.apply(&Command::DeleteTasks {
            ids: vec![TaskId("gone".into())],
        });
        assert_eq!(s.changes.since(Some(g3)), services(&[]));

        // A node: every service for the passes that place tasks; for what is made of
        // the services' tasks and their nodes, the services of its tasks (none yet).
        s.apply(&Command::AddNode {
            node: fixtures::node(1),
        });
        assert_eq!(s.changes.since(Some(g3)), Changed::All);
        assert_eq!(s.changes.services_since(Some(g3)), services(&[]));
        s.apply(&Command::AssignTasks {
            assign: vec![(TaskId("a1".into()), NodeId(1))],
            pending: vec![],
            now_ms: 1,
        });
        let g4 = s.changes.generation();
        s.apply(&node_down(1, 2));
        assert_eq!(s.changes.since(Some(g4)), Changed::All);
        assert_eq!(s.changes.services_since(Some(g4)), services(&["a"]));
        assert_eq!(s.changes.services_since(None), Changed::All);
    }

    #[test]
    fn a_node_is_touched_by_its_own_tasks_and_by_what_every_node_shares() {
        let none = BTreeSet::new();
        let mut s = state();
        s.nodes.insert(NodeId(1), fixtures::node(1));
        s.nodes.insert(NodeId(2), fixtures::node(2));
        s.apply(&Command::AssignTasks {
            assign: vec![(TaskId("a1".into()), NodeId(1))],
            pending: vec![],
            now_ms: 1,
        });
        let g = s.changes.generation();
        assert!(s.changes.touch_node(NodeId(1), &none, false, None));
        assert!(!s.changes.touch_node(NodeId(1), &none, false, Some(g)));
        // A task on node 1 starts: node 1, not node 2.
        s.apply(&Command::UpdateTaskStatus {
            updates: vec![(
                TaskId("a1".into()),
                TaskStatus::new(TaskState::Running, "", 2),
            )],
        });
        assert!(s.changes.touch_node(NodeId(1), &none, false, Some(g)));
        assert!(!s.changes.touch_node(NodeId(2), &none, false, Some(g)));
        // A task on no node touches no node; a deleted one touches its node.
        let g = s.changes.generation();
        s.apply(&Command::UpdateTaskStatus {
            updates: vec![(
                TaskId("b1".into()),
                TaskStatus::new(TaskState::Rejected, "", 2),
            )],
        });
        assert!(!s.changes.touch_node(NodeId(1), &none, false, Some(g)));
        s.apply(&Command::DeleteTasks {
            ids: vec![TaskId("a1".into())],
        });
        assert!(s.changes.touch_node(NodeId(1), &none, false, Some(g)));
        assert!(!s.changes.touch_node(NodeId(2), &none, false, Some(g)));
        // A service's own record touches the nodes of its tasks, not the others.
        let (a, b) = (ServiceId("id-a".into()), ServiceId("id-b".into()));
        let runs = |id: &ServiceId| BTreeSet::from([id.clone()]);
        let g = s.changes.generation();
        let mut svc = s.services[&b].clone();
        svc.version += 1;
        svc.spec.labels.insert("x".into(), "y".into());
        s.apply(&Command::UpdateService { service: svc });
        assert!(s.changes.touch_node(NodeId(2), &runs(&b), false, Some(g)));
        assert!(!s.changes.touch_node(NodeId(1), &runs(&a), false, Some(g)));
        assert!(!s.changes.touch_node(NodeId(1), &none, false, Some(g)));
        // One with volume homes touches every node (a node without its tasks may hold
        // a copy to drop), and so does a service gone.
        s.volume_homes.insert(
            (b.clone(), 1),
            crate::store::volume::VolumeHome {
                service_id: b.clone(),
                slot: 1,
                node: NodeId(2),
                task: TaskId("b1".into()),
                generation: 0,
                stale: vec![NodeId(1)],
                since_ms: 0,
            },
        );
        let g = s.changes.generation();
        let mut svc = s.services[&b].clone();
        svc.version += 1;
        svc.spec.labels.insert("x".into(), "z".into());
        s.apply(&Command::UpdateService { service: svc });
        assert!(s.changes.touch_node(NodeId(1), &none, false, Some(g)));
        s.volume_homes.clear();
        // Node 2 marked down: its own record touches it; node 1 only while a task sent
        // to it is still to be started (it is sent the nodes to fetch its image from).
        let g = s.changes.generation();
        s.apply(&node_down(2, 3));
        assert!(s.changes.touch_node(NodeId(2), &none, false, Some(g)));
        assert!(!s.changes.touch_node(NodeId(1), &runs(&a), false, Some(g)));
        assert!(s.changes.touch_node(NodeId(1), &runs(&a), true, Some(g)));
        let g = s.changes.generation();
        s.apply(&Command::RemoveService { id: b });
        assert!(s.changes.touch_node(NodeId(1), &none, false, Some(g)));
    }

    #[test]
    fn a_removed_service_is_forgotten_once_its_tasks_are_gone() {
        let mut s = state();
        s.apply(&Command::RemoveService {
            id: ServiceId("id-a".into()),
        });
        assert_eq!(s.changes.services_recorded(), 1);
        s.apply(&Command::DeleteTasks {
            ids: vec![TaskId("a1".into()), TaskId("a2".into())],
        });
        assert_eq!(s.changes.services_recorded(), 0);
    }

    #[test]
    fn a_state_built_afresh_is_changed_everywhere_for_any_earlier_pass() {
        let s = state();
        let g = s.changes.generation();
        let fresh: State = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(fresh.changes.since(Some(g)), Changed::All);
        assert_eq!(fresh, s);
    }
}
