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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Command, NodeId, ServiceId, State, Task, TaskId, TaskState};

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
    /// The tasks that changed on each node, latest last.
    node_tasks: BTreeMap<NodeId, NodeTasks>,
    /// The last change of each node's own record.
    node_records: BTreeMap<NodeId, u64>,
    /// The cluster object as last counted, its VIP cursor left out (`None`: not yet
    /// seen). Each virtual IP given moves the cursor, which no pass reads: counted as
    /// a change of everything, every task created made the orchestrator's next pass
    /// whole, each session's assignments and the endpoint table whole again.
    cluster: Option<super::Cluster>,
    /// The generation after each applied log entry, the last [`APPLIED_KEPT`]
    /// (log index, generation), oldest first ([`Changes::mark_applied`]).
    applied: VecDeque<(u64, u64)>,
    /// The services whose record was let go (gone with their tasks), each with the
    /// generation it went at, the last [`GONE_KEPT`]; every one gone after
    /// `gone_complete_after` is here.
    gone: VecDeque<(u64, ServiceId)>,
    gone_complete_after: u64,
}

/// How many applied entries' generations [`Changes`] keeps: how far back a node's
/// endpoint table can be made current by the services changed since
/// ([`Changes::services_since_index`]). Entries carry batches: while 100,000 tasks
/// are placed, a few dozen a second.
pub const APPLIED_KEPT: usize = 4096;

/// How many gone services [`Changes`] keeps.
pub const GONE_KEPT: usize = 1024;

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
            cluster: None,
            applied: VecDeque::new(),
            gone: VecDeque::new(),
            gone_complete_after: g,
        }
    }
}

impl PartialEq for Changes {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Changes {}

/// How many changed tasks each node's record keeps ([`NodeTasks`]): a session that fell
/// further behind makes its node's assignments again whole. A session reads at every
/// applied entry, and an entry changes a node's tasks a few at a time (a node's whole
/// share of a placement is its first assignments, made whole anyway).
pub const NODE_TASKS_KEPT: usize = 256;

/// The tasks that changed on one node (a task that names it changed, or one that named
/// it was deleted), each with the generation of its change, the last
/// [`NODE_TASKS_KEPT`]. With 1,000 sessions, each making its node's 100 assignments
/// again whenever one of them changed was a third of the leader's time while 100,000
/// tasks were placed.
#[derive(Debug, Clone)]
struct NodeTasks {
    /// Every change after this generation is in `ids` (older ones were let go).
    complete_after: u64,
    ids: VecDeque<(u64, TaskId)>,
}

impl NodeTasks {
    fn last(&self) -> u64 {
        self.ids.back().map_or(self.complete_after, |(g, _)| *g)
    }

    fn push(&mut self, generation: u64, id: TaskId) {
        if self.ids.len() == NODE_TASKS_KEPT {
            if let Some((g, _)) = self.ids.pop_front() {
                self.complete_after = g;
            }
        }
        self.ids.push_back((generation, id));
    }
}

/// What may have changed in what a session sends a node since a generation
/// ([`Changes::node_since`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeChanged {
    /// Nothing it is sent.
    Nothing,
    /// The assignments of these tasks only (each changed, came or went).
    Tasks(BTreeSet<TaskId>),
    /// Anything: make them all again.
    All,
}

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

    /// The generation of the latest change of a node's record or of anything but the
    /// services and their tasks (the cluster object, its CA rotation).
    pub fn nodes_or_all(&self) -> u64 {
        self.nodes.max(self.all)
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

    /// What of what a session sends node `node` may have changed after generation
    /// `gen` (`None`: everything). Its tasks only, when nothing else changed but tasks
    /// that name it (one changed, came, or was deleted): those tasks' ids. All of it
    /// when its own record changed, the records every node shares (volume homes), the
    /// records of the service of a task it runs, or anything else; and, while one of
    /// its tasks is still to be started (it is sent the nodes it may fetch an image or
    /// a volume from), another node's record. Which of those nodes are known to hold
    /// the image, a hint that orders them, is as of when the assignments were made.
    /// `tasks` lists the tasks `node` runs now (read only when a service's or a node's
    /// record changed). A rolling update's status changed every node's assignments,
    /// made again for all 1,000 nodes at each batch; so did each node marked down.
    pub fn node_since<'a, I>(
        &self,
        node: NodeId,
        gen: Option<u64>,
        tasks: impl FnOnce() -> I,
    ) -> NodeChanged
    where
        I: Iterator<Item = &'a Task>,
    {
        let Some(g) = gen else {
            return NodeChanged::All;
        };
        if self.all > g
            || self.service_records > g
            || self.node_records.get(&node).is_some_and(|at| *at > g)
        {
            return NodeChanged::All;
        }
        if self.nodes > g || self.records_last > g {
            let others = self.nodes > g;
            let all = tasks()
                .filter(|t| t.status.state >= TaskState::Assigned)
                .any(|t| {
                    (others && t.status.state < TaskState::Starting)
                        || self.records.get(&t.service_id).is_some_and(|at| *at > g)
                });
            if all {
                return NodeChanged::All;
            }
        }
        match self.node_tasks.get(&node) {
            Some(log) if log.last() > g => {
                if log.complete_after > g {
                    return NodeChanged::All;
                }
                let ids: BTreeSet<TaskId> = log
                    .ids
                    .iter()
                    .rev()
                    .take_while(|(at, _)| *at > g)
                    .map(|(_, id)| id.clone())
                    .collect();
                NodeChanged::Tasks(ids)
            }
            _ => NodeChanged::Nothing,
        }
    }

    /// Records that log entry `index` is applied: the state is now as of it. Every
    /// applied entry is marked, in order.
    pub fn mark_applied(&mut self, index: u64) {
        if self.applied.len() == APPLIED_KEPT {
            self.applied.pop_front();
        }
        self.applied.push_back((index, self.last));
    }

    /// The generation the state had once log entry `index` was applied, if this
    /// process applied it and still knows (`None` for an index before the oldest kept,
    /// or after the last applied).
    pub fn generation_at(&self, index: u64) -> Option<u64> {
        let (first, _) = self.applied.front()?;
        let (last, _) = self.applied.back()?;
        if index < *first || index > *last {
            return None;
        }
        // The last entry at or before `index` (entries are marked in order; an index
        // not marked was never applied here, as after a snapshot install).
        let at = self.applied.partition_point(|(i, _)| *i <= index);
        self.applied
            .get(at.checked_sub(1)?)
            .filter(|(i, _)| *i == index)
            .map(|(_, g)| *g)
    }

    /// The services whose entry of the endpoint table may differ between the state as
    /// of log entry `index` and this one: those changed since, and those gone since
    /// (the ids of services this state no longer has). `None` when that is not known:
    /// `index` is not one this process applied and keeps, or something changed that
    /// may change every service's entry. What a node that holds the table as of
    /// `index` (from a leader before) needs to hold this one: a leader change sent
    /// 1,000 nodes the whole table (100,000 backends) each when the last change had
    /// not reached them.
    pub fn services_since_index(&self, index: u64) -> Option<BTreeSet<ServiceId>> {
        let g = self.generation_at(index)?;
        if self.gone_complete_after > g {
            return None;
        }
        let Changed::Services(mut ids) = self.services_since(Some(g)) else {
            return None;
        };
        ids.extend(
            self.gone
                .iter()
                .rev()
                .take_while(|(at, _)| *at > g)
                .map(|(_, id)| id.clone()),
        );
        Some(ids)
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
    pub(super) fn deleted_services(
        &self,
        cmd: &Command,
    ) -> Vec<(ServiceId, Option<NodeId>, TaskId)> {
        match cmd {
            Command::DeleteTasks { ids } => ids
                .iter()
                .filter_map(|id| self.tasks.get(id))
                .map(|t| (t.service_id.clone(), t.node_id, t.id.clone()))
                .collect(),
            _ => vec![],
        }
    }

    /// Records what the changed `keys` (and the deleted tasks) touched.
    pub(super) fn record_changes(
        &mut self,
        keys: &[String],
        deleted: Vec<(ServiceId, Option<NodeId>, TaskId)>,
    ) {
        let mut touched: BTreeSet<ServiceId> = BTreeSet::new();
        // The tasks that changed on each node. A task's node, once set, stays
        // (`assign_tasks` sets it on a task not yet assigned only), so a task changed
        // names the one node whose assignments it is in.
        let mut nodes: Vec<(NodeId, TaskId)> = vec![];
        for (service, node, id) in deleted {
            touched.insert(service);
            nodes.extend(node.map(|n| (n, id)));
        }
        let mut records = false;
        let mut own_records: BTreeSet<ServiceId> = BTreeSet::new();
        for key in keys {
            let (table, id) = key.split_once('/').unwrap_or((key.as_str(), ""));
            match table {
                "task" => {
                    if let Some(t) = self.tasks.get(&super::TaskId(id.to_string())) {
                        touched.insert(t.service_id.clone());
                        nodes.extend(t.node_id.map(|n| (n, t.id.clone())));
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
                // Its VIP cursor alone is no change of anything a pass reads.
                "cluster" => {
                    let now = self.cluster.clone().map(|mut c| {
                        c.vip_cursor = 0;
                        c
                    });
                    if self.changes.cluster.is_none() || now != self.changes.cluster {
                        self.changes.cluster = now;
                        self.changes.all();
                    }
                }
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
        for (node, id) in nodes {
            if self.nodes.contains_key(&node) {
                self.changes.last = next();
                let all = self.changes.all;
                self.changes
                    .node_tasks
                    .entry(node)
                    .or_insert_with(|| NodeTasks {
                        complete_after: all,
                        ids: VecDeque::new(),
                    })
                    .push(self.changes.last, id);
            }
        }
        for id in touched {
            // A service gone with all its tasks leaves nothing to look at again.
            if !self.services.contains_key(&id) && self.tasks.count_of(&id) == 0 {
                self.changes.services.remove(&id);
                self.changes.records.remove(&id);
                self.changes.last = next();
                let gone = &mut self.changes.gone;
                if gone.len() == GONE_KEPT {
                    if let Some((g, _)) = gone.pop_front() {
                        self.changes.gone_complete_after = g;
                    }
                }
                gone.push_back((self.changes.last, id));
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
        // What heartbeat replies are made of (nodes, the cluster) did not change.
        assert!(s.changes.nodes_or_all() <= g);
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
        assert!(s.changes.nodes_or_all() > g3, "a node came");
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

    /// What `node` must be sent again since `g`, as a session asks it.
    fn since(s: &State, node: u64, g: Option<u64>) -> NodeChanged {
        s.changes
            .node_since(NodeId(node), g, || s.tasks.on_node(NodeId(node)))
    }

    fn tasks(ids: &[&str]) -> NodeChanged {
        NodeChanged::Tasks(ids.iter().map(|i| TaskId(i.to_string())).collect())
    }

    fn status(id: &str, state: TaskState, at: u64) -> Command {
        Command::UpdateTaskStatus {
            updates: vec![(TaskId(id.into()), TaskStatus::new(state, "", at))],
        }
    }

    #[test]
    fn a_node_is_sent_again_its_tasks_that_changed_or_all_when_what_every_node_shares_did() {
        let mut s = state();
        s.nodes.insert(NodeId(1), fixtures::node(1));
        s.nodes.insert(NodeId(2), fixtures::node(2));
        s.apply(&Command::AssignTasks {
            assign: vec![(TaskId("a1".into()), NodeId(1))],
            pending: vec![],
            now_ms: 1,
        });
        let g = s.changes.generation();
        assert_eq!(since(&s, 1, None), NodeChanged::All);
        assert_eq!(since(&s, 1, Some(g)), NodeChanged::Nothing);
        // A task on node 1 starts: that task of node 1, nothing of node 2.
        s.apply(&status("a1", TaskState::Running, 2));
        assert_eq!(since(&s, 1, Some(g)), tasks(&["a1"]));
        assert_eq!(since(&s, 2, Some(g)), NodeChanged::Nothing);
        // A task on no node touches no node; a deleted one its node.
        let g = s.changes.generation();
        s.apply(&status("b1", TaskState::Rejected, 2));
        assert_eq!(since(&s, 1, Some(g)), NodeChanged::Nothing);
        s.apply(&Command::AssignTasks {
            assign: vec![
                (TaskId("a2".into()), NodeId(1)),
                (TaskId("b2".into()), NodeId(2)),
            ],
            pending: vec![],
            now_ms: 3,
        });
        s.apply(&Command::DeleteTasks {
            ids: vec![TaskId("a1".into())],
        });
        assert_eq!(since(&s, 1, Some(g)), tasks(&["a1", "a2"]));
        assert_eq!(since(&s, 2, Some(g)), tasks(&["b2"]));
        // A service's own record: all of the nodes of its tasks, nothing of the others.
        let b = ServiceId("id-b".into());
        s.apply(&status("a2", TaskState::Running, 4));
        s.apply(&status("b2", TaskState::Running, 4));
        let g = s.changes.generation();
        let mut svc = s.services[&b].clone();
        svc.version += 1;
        svc.spec.labels.insert("x".into(), "y".into());
        s.apply(&Command::UpdateService { service: svc });
        assert_eq!(since(&s, 2, Some(g)), NodeChanged::All);
        assert_eq!(since(&s, 1, Some(g)), NodeChanged::Nothing);
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
        assert_eq!(since(&s, 1, Some(g)), NodeChanged::All);
        s.volume_homes.clear();
        // Node 2 marked down: all of node 2; of node 1, nothing while its tasks run,
        // all while one is still to be started (it is sent the nodes to fetch its image
        // from).
        let g = s.changes.generation();
        s.apply(&node_down(2, 5));
        assert_eq!(since(&s, 2, Some(g)), NodeChanged::All);
        assert_eq!(since(&s, 1, Some(g)), NodeChanged::Nothing);
        let g = s.changes.generation();
        let mut t = s.tasks[&TaskId("a2".into())].clone();
        t.id = TaskId("a3".into());
        t.slot = 3;
        t.status = TaskStatus::new(TaskState::Assigned, "", 6);
        s.apply(&Command::CreateTasks { tasks: vec![t] });
        let g2 = s.changes.generation();
        assert_eq!(since(&s, 1, Some(g)), tasks(&["a3"]));
        assert_eq!(since(&s, 1, Some(g2)), NodeChanged::Nothing);
        s.apply(&Command::UpdateNodeStatus {
            id: NodeId(2),
            status: crate::store::NodeStatus::Ready,
            description: None,
            addr: None,
            now_ms: 7,
        });
        assert_eq!(since(&s, 1, Some(g2)), NodeChanged::All);
        let g = s.changes.generation();
        s.apply(&Command::RemoveService { id: b });
        assert_eq!(since(&s, 1, Some(g)), NodeChanged::All);
    }

    #[test]
    fn a_virtual_ip_given_changes_only_its_tasks_service_and_the_clusters_other_fields_everything()
    {
        let mut s = state();
        s.cluster = Some(fixtures::cluster());
        let created = |s: &mut State, id: &str| {
            let mut t = s.tasks[&TaskId("a1".into())].clone();
            t.id = TaskId(id.into());
            t.vip = String::new();
            s.apply(&Command::CreateTasks { tasks: vec![t] });
            assert!(!s.tasks[&TaskId(id.into())].vip.is_empty(), "given a VIP");
        };
        created(&mut s, "a7");
        let g = s.changes.generation();
        let cursor = s.cluster.as_ref().map(|c| c.vip_cursor);
        created(&mut s, "a8");
        assert_ne!(s.cluster.as_ref().map(|c| c.vip_cursor), cursor, "moved");
        assert_eq!(s.changes.since(Some(g)), services(&["a"]));
        // Positive control: another field of the cluster changes everything.
        let g = s.changes.generation();
        s.apply(&Command::RotateSecret {
            role: crate::store::Role::Worker,
            secret: crate::store::Sealed::from_stored("new"),
        });
        assert_eq!(s.changes.since(Some(g)), Changed::All);
    }

    #[test]
    fn a_session_further_behind_than_its_nodes_record_of_tasks_goes_makes_all_again() {
        let mut s = state();
        s.nodes.insert(NodeId(1), fixtures::node(1));
        s.apply(&Command::AssignTasks {
            assign: vec![(TaskId("a1".into()), NodeId(1))],
            pending: vec![],
            now_ms: 1,
        });
        let before = s.changes.generation();
        for at in 2..(NODE_TASKS_KEPT as u64 + 2) {
            s.apply(&status("a1", TaskState::Preparing, at));
        }
        let recent = s.changes.generation();
        s.apply(&status("a1", TaskState::Running, 1_000));
        // Every change since `before` is no longer known one by one.
        assert_eq!(since(&s, 1, Some(before)), NodeChanged::All);
        assert_eq!(since(&s, 1, Some(recent)), tasks(&["a1"]));
        // Positive control: one generation later than the first let go is complete.
        let kept = s.changes.node_tasks[&NodeId(1)].complete_after;
        assert_eq!(since(&s, 1, Some(kept)), tasks(&["a1"]));
        assert_eq!(since(&s, 1, Some(kept - 1)), NodeChanged::All);
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
    fn an_applied_index_kept_names_the_services_changed_or_gone_since() {
        let ids = |names: &[&str]| -> Option<BTreeSet<ServiceId>> {
            Some(names.iter().map(|n| ServiceId(format!("id-{n}"))).collect())
        };
        let mut s = state();
        s.changes.mark_applied(10);
        // Positive control: nothing since.
        assert_eq!(s.changes.services_since_index(10), ids(&[]));
        s.apply(&status("b1", TaskState::Running, 1));
        s.changes.mark_applied(11);
        s.apply(&Command::RemoveService {
            id: ServiceId("id-a".into()),
        });
        s.changes.mark_applied(12);
        // Its last tasks gone, a service leaves the record; it is still named as gone.
        s.apply(&Command::DeleteTasks {
            ids: vec![TaskId("a1".into()), TaskId("a2".into())],
        });
        assert_eq!(s.changes.services_recorded(), 1);
        s.changes.mark_applied(13);
        assert_eq!(s.changes.services_since_index(10), ids(&["a", "b"]));
        assert_eq!(s.changes.services_since_index(11), ids(&["a"]));
        assert_eq!(s.changes.services_since_index(12), ids(&["a"]));
        assert_eq!(s.changes.services_since_index(13), ids(&[]));
        // An index not applied here, or not yet: not known.
        assert_eq!(s.changes.services_since_index(9), None);
        assert_eq!(s.changes.services_since_index(14), None);
        // A state decoded afresh knows no index.
        let fresh: State = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(fresh.changes.services_since_index(13), None);

        // Gone services are kept, the last GONE_KEPT: one further back is not known.
        for i in 0..GONE_KEPT {
            let svc = fixtures::service(&format!("x{i}"), 1);
            s.services.insert(svc.id.clone(), svc.clone());
            s.apply(&Command::RemoveService { id: svc.id });
        }
        s.changes.mark_applied(14);
        assert_eq!(
            s.changes.services_since_index(13).map(|i| i.len()),
            Some(GONE_KEPT)
        );
        assert_eq!(s.changes.services_since_index(12), None);

        // Applied indexes are kept, the last APPLIED_KEPT.
        for i in 15..15 + APPLIED_KEPT as u64 {
            s.changes.mark_applied(i);
        }
        assert_eq!(s.changes.services_since_index(14), None);
        assert_eq!(s.changes.services_since_index(15), ids(&[]));

        // A change that may change every service's entry: not known.
        s.changes.all();
        s.changes.mark_applied(20_000);
        assert_eq!(s.changes.services_since_index(15), None);
        assert_eq!(s.changes.services_since_index(20_000), ids(&[]));
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
