//! Orchestrator tests: states built by hand, passes applied with `State::apply`, and a
//! small stand-in for the scheduler and the agents (`Sim`) to drive statuses forward.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::store::service::{
    ContainerSpec, RestartCondition, RestartPolicy, TaskSpec, UpdateConfig, UpdateOrder,
};
use crate::store::{
    Availability, NodeDescription, NodeStatus, Role, ServiceSpec, TaskState, TaskStatus,
};

fn node(id: u64) -> Node {
    Node {
        status: NodeStatus::Ready,
        ..Node::new(
            NodeId(id),
            format!("10.0.0.{id}:4242"),
            Role::Worker,
            NodeDescription::default(),
            0,
        )
    }
}

fn service(id: &str, mode: ServiceMode) -> Service {
    Service {
        vip: String::new(),
        id: ServiceId(id.into()),
        spec: ServiceSpec {
            name: format!("svc-{id}"),
            labels: BTreeMap::new(),
            mode,
            task: TaskSpec {
                container: ContainerSpec {
                    image: "app:1".into(),
                    ..Default::default()
                },
                ..Default::default()
            },
            ports: vec![],
            expose: vec![],
            update: UpdateConfig::default(),
            rollback: UpdateConfig::default(),
            depends_on: vec![],
            endpoint_mode: Default::default(),
            networks: Default::default(),
        },
        previous_spec: None,
        version: 1,
        created_ms: 0,
        updated_ms: 0,
    }
}

fn replicated(replicas: u64) -> ServiceMode {
    ServiceMode::Replicated { replicas }
}

/// The scheduler's filters, as the tests see them: ready, active, and no `no-global`
/// label (standing in for a constraint).
fn eligible(_: &Service, n: &Node) -> bool {
    n.status == NodeStatus::Ready
        && n.availability == Availability::Active
        && !n.labels.contains_key("no-global")
}

/// A cluster on paper: the state, a clock, an id counter, and stand-ins for the
/// scheduler and the agents.
struct Sim {
    state: State,
    now: u64,
    next_id: u64,
    /// The state the last pass read, and the wake-up it asked for:
    /// each pass is also run over only what changed since ([`reconcile_changed`]), and
    /// must decide the same.
    last: Option<(State, Option<u64>)>,
}

/// What differs between two states, as [`crate::store::changes`] would have recorded
/// it: the services whose spec, update status, image pin, volume homes or tasks
/// differ; everything when anything else does.
fn diff(before: &State, after: &State) -> Changed {
    if before.nodes != after.nodes
        || before.cluster != after.cluster
        || before.networks != after.networks
        || before.secrets != after.secrets
        || before.configs != after.configs
        || before.ca_rotation != after.ca_rotation
    {
        return Changed::All;
    }
    fn differ<'a, K: Ord, V: PartialEq>(
        a: &'a BTreeMap<K, V>,
        b: &'a BTreeMap<K, V>,
    ) -> impl Iterator<Item = &'a K> + 'a {
        a.keys()
            .chain(b.keys())
            .filter(move |k| a.get(*k) != b.get(*k))
    }
    let mut ids: BTreeSet<ServiceId> = BTreeSet::new();
    ids.extend(differ(&before.services, &after.services).cloned());
    ids.extend(differ(&before.update_status, &after.update_status).cloned());
    ids.extend(differ(&before.image_pins, &after.image_pins).cloned());
    ids.extend(differ(&before.volume_homes, &after.volume_homes).map(|(s, _)| s.clone()));
    let tasks_differ = before
        .tasks
        .keys()
        .chain(after.tasks.keys())
        .filter(|id| before.tasks.get(id) != after.tasks.get(id));
    for id in tasks_differ {
        for s in [&before, &after] {
            if let Some(t) = s.tasks.get(id) {
                ids.insert(t.service_id.clone());
            }
        }
    }
    Changed::Services(ids)
}

impl Sim {
    fn new(nodes: u64) -> Sim {
        let mut state = State::default();
        for id in 1..=nodes {
            state.nodes.insert(NodeId(id), node(id));
        }
        Sim {
            state,
            now: 1_000,
            next_id: 0,
            last: None,
        }
    }

    fn with(nodes: u64, svc: Service) -> Sim {
        let mut sim = Sim::new(nodes);
        sim.state.services.insert(svc.id.clone(), svc);
        sim
    }

    /// Runs one pass and applies it; checks the orchestrator's promises on the way.
    fn pass(&mut self) -> Decision {
        let run = |start: u64| {
            let mut n = start;
            let mut new_id = || {
                n += 1;
                TaskId(format!("t{n:03}"))
            };
            let d = reconcile(&self.state, self.now, &eligible, &mut new_id);
            (d, n)
        };
        let (d, next) = run(self.next_id);
        assert_eq!(run(self.next_id).0, d, "a pass is deterministic");
        // The same pass over only what changed since the last one (unless a wake-up it
        // asked for is due: then the daemon looks at everything) decides the same.
        if let Some((before, wake)) = &self.last {
            if !wake.is_some_and(|at| at <= self.now) {
                let changed = diff(before, &self.state);
                let mut n = self.next_id;
                let mut new_id = || {
                    n += 1;
                    TaskId(format!("t{n:03}"))
                };
                let part =
                    reconcile_changed(&self.state, &changed, self.now, &eligible, &mut new_id);
                assert_eq!(
                    part.commands, d.commands,
                    "a pass over what changed ({changed:?}) decides otherwise"
                );
                assert!(part.wake_at_ms.is_none() || part.wake_at_ms >= d.wake_at_ms);
            }
        }
        self.next_id = next;
        let mut kinds = BTreeSet::new();
        for c in &d.commands {
            let kind = match c {
                Command::SetTaskDesired { updates } => {
                    for (id, to) in updates {
                        let t = &self.state.tasks[id];
                        assert!(*to > t.desired_state, "desired state of {id} moves back");
                    }
                    "desired"
                }
                Command::CreateTasks { tasks } => {
                    assert!(!tasks.is_empty());
                    "create"
                }
                Command::DeleteTasks { ids } => {
                    assert!(!ids.is_empty());
                    "delete"
                }
                Command::SetUpdateStatus { updates } => {
                    assert!(!updates.is_empty());
                    "status"
                }
                Command::RollbackService { id, .. } => {
                    assert!(
                        kinds.insert(format!("rollback {id}")),
                        "two rollbacks of {id}"
                    );
                    continue;
                }
                other => panic!("the orchestrator proposed {other:?}"),
            };
            assert!(
                kinds.insert(kind.to_string()),
                "two {kind} commands in one pass"
            );
        }
        let before: BTreeMap<TaskId, TaskStatus> = self
            .state
            .tasks
            .iter()
            .map(|(id, t)| (id.clone(), t.status.clone()))
            .collect();
        // What the pass read: its own commands count as changes for the next one.
        self.last = Some((self.state.clone(), d.wake_at_ms));
        for c in &d.commands {
            self.state.apply(c);
        }
        for (id, t) in self.state.tasks.iter() {
            if let Some(s) = before.get(id) {
                assert_eq!(&t.status, s, "observed status of {id} touched");
            }
        }
        d
    }

    fn set_status(&mut self, id: &TaskId, state: TaskState) {
        let mut s = self.state.tasks[id].status.clone();
        s.state = state;
        s.timestamp_ms = self.now;
        s.message = state.as_str().into();
        self.state.apply(&Command::UpdateTaskStatus {
            updates: vec![(id.clone(), s)],
        });
    }

    fn up(&self, t: &Task) -> bool {
        t.node_id
            .and_then(|n| self.state.nodes.get(&n))
            .is_some_and(|n| n.status == NodeStatus::Ready)
    }

    /// The scheduler: pending tasks go to their preset node, or to the ready, active
    /// node with the fewest current tasks.
    fn schedule(&mut self) {
        let mut load: BTreeMap<NodeId, usize> = self
            .state
            .nodes
            .values()
            .filter(|n| n.status == NodeStatus::Ready && n.availability == Availability::Active)
            .map(|n| (n.id, 0))
            .collect();
        for t in self.state.tasks.values() {
            if let Some(n) = t.node_id {
                if t.desired_state <= TaskState::Running && !t.status.state.is_terminal() {
                    if let Some(l) = load.get_mut(&n) {
                        *l += 1;
                    }
                }
            }
        }
        let mut assign = vec![];
        let pending: Vec<Task> = self
            .state
            .tasks
            .values()
            .filter(|t| {
                t.status.state <= TaskState::Pending && t.desired_state <= TaskState::Running
            })
            .cloned()
            .collect();
        for t in pending {
            let target = match t.node_id {
                Some(n) => load.contains_key(&n).then_some(n),
                None => load
                    .iter()
                    .min_by_key(|(id, l)| (**l, **id))
                    .map(|(id, _)| *id),
            };
            if let Some(n) = target {
                *load.entry(n).or_default() += 1;
                assign.push((t.id.clone(), n));
            }
        }
        self.state.apply(&Command::AssignTasks {
            assign,
            pending: vec![],
            now_ms: self.now,
        });
    }

    /// The agents: assigned tasks wanted running start; tasks asked to stop stop.
    fn agents(&mut self) {
        let mut moves = vec![];
        for t in self.state.tasks.values() {
            if !self.up(t) || t.status.state.is_terminal() {
                continue;
            }
            if t.desired_state >= TaskState::Shutdown {
                moves.push((t.id.clone(), TaskState::Shutdown));
            } else if t.status.state >= TaskState::Assigned && t.status.state < TaskState::Running {
                moves.push((t.id.clone(), TaskState::Running));
            }
        }
        for (id, s) in moves {
            self.set_status(&id, s);
        }
    }

    /// Passes, scheduling and agents until a pass has nothing to do; the passes run.
    fn settle(&mut self) -> usize {
        for n in 1..50 {
            let d = self.pass();
            self.schedule();
            self.agents();
            self.now += 10;
            if d.is_empty() && self.pass().is_empty() {
                return n;
            }
        }
        panic!("no convergence");
    }

    fn tasks(&self, svc: &str) -> Vec<&Task> {
        self.state
            .tasks
            .values()
            .filter(|t| t.service_id.0 == svc)
            .collect()
    }

    /// Tasks of `svc` wanted running, sorted by slot then node.
    fn current(&self, svc: &str) -> Vec<&Task> {
        let mut v: Vec<&Task> = self
            .tasks(svc)
            .into_iter()
            .filter(|t| t.desired_state <= TaskState::Running)
            .collect();
        v.sort_by_key(|t| (t.slot, t.node_id));
        v
    }

    fn running(&self, svc: &str) -> Vec<&Task> {
        self.current(svc)
            .into_iter()
            .filter(|t| t.status.state == TaskState::Running)
            .collect()
    }

    fn slot_task(&self, svc: &str, slot: u64) -> TaskId {
        let c: Vec<&Task> = self
            .current(svc)
            .into_iter()
            .filter(|t| t.slot == slot)
            .collect();
        assert_eq!(c.len(), 1, "slot {slot}: {c:?}");
        c[0].id.clone()
    }

    fn update_service(&mut self, id: &str, f: impl FnOnce(&mut ServiceSpec)) {
        let old = self.state.services[&ServiceId(id.into())].clone();
        let mut svc = old.clone();
        f(&mut svc.spec);
        svc.previous_spec = Some(old.spec);
        svc.version += 1;
        svc.updated_ms = self.now;
        let (r, _) = self.state.apply(&Command::UpdateService { service: svc });
        assert_eq!(r, crate::store::Response::Ok);
    }

    fn set_node(&mut self, id: u64, f: impl FnOnce(&mut Node)) {
        if let Some(n) = self.state.nodes.get_mut(&NodeId(id)) {
            f(n);
        }
    }
}

/// A change made to the cluster between passes.
type Step = fn(&mut Sim);

fn created(d: &Decision) -> Vec<&Task> {
    d.commands
        .iter()
        .flat_map(|c| match c {
            Command::CreateTasks { tasks } => tasks.iter().collect(),
            _ => vec![],
        })
        .collect()
}

fn desired(d: &Decision) -> Vec<(TaskId, TaskState)> {
    d.commands
        .iter()
        .flat_map(|c| match c {
            Command::SetTaskDesired { updates } => updates.clone(),
            _ => vec![],
        })
        .collect()
}

fn deleted(d: &Decision) -> Vec<TaskId> {
    d.commands
        .iter()
        .flat_map(|c| match c {
            Command::DeleteTasks { ids } => ids.clone(),
            _ => vec![],
        })
        .collect()
}

#[test]
fn scale_up_from_zero_to_three() {
    let mut sim = Sim::with(3, service("a", replicated(0)));
    assert!(sim.pass().is_empty());
    sim.update_service("a", |s| s.mode = replicated(3));
    let d = sim.pass();
    let new = created(&d);
    assert_eq!(new.iter().map(|t| t.slot).collect::<Vec<_>>(), [1, 2, 3]);
    for t in &new {
        assert_eq!(t.desired_state, TaskState::Running);
        assert_eq!(t.status.state, TaskState::Pending);
        assert_eq!(t.spec_version, 2);
        assert_eq!(t.service_name, "svc-a");
        assert_eq!(t.created_ms, sim.now);
        assert_eq!(t.node_id, None);
    }
    assert_eq!(d.wake_at_ms, None);
    assert!(sim.pass().is_empty(), "created tasks fill their slots");
    sim.settle();
    assert_eq!(sim.running("a").len(), 3);
}

#[test]
fn scale_down_three_to_one_stops_the_highest_slots_and_restarts_nothing() {
    let mut sim = Sim::with(3, service("a", replicated(3)));
    sim.settle();
    let kept = sim.slot_task("a", 1);
    sim.update_service("a", |s| s.mode = replicated(1));
    let d = sim.pass();
    assert!(created(&d).is_empty(), "a scale is not an update");
    let stopped: BTreeSet<u64> = desired(&d)
        .iter()
        .map(|(id, to)| {
            assert_eq!(*to, TaskState::Shutdown);
            sim.state.tasks[id].slot
        })
        .collect();
    assert_eq!(stopped, [2, 3].into());
    sim.settle();
    assert_eq!(sim.current("a").len(), 1);
    assert_eq!(sim.slot_task("a", 1), kept);
}

#[test]
fn restart_conditions() {
    use RestartCondition::*;
    use TaskState::*;
    // (condition, how the task ended, job?, replaced?)
    let table = [
        (Any, Failed, false, true),
        (Any, Complete, false, true),
        (Any, Shutdown, false, true),
        (Any, Rejected, false, true),
        (OnFailure, Failed, false, true),
        (OnFailure, Rejected, false, true),
        (OnFailure, Complete, false, false),
        (None, Failed, false, false),
        (None, Complete, false, false),
        (Any, Complete, true, false),
        (Any, Failed, true, true),
    ];
    for (condition, end, job, replaced) in table {
        let mode = if job {
            ServiceMode::ReplicatedJob {
                max_concurrent: 1,
                total_completions: 1,
            }
        } else {
            replicated(1)
        };
        let mut svc = service("a", mode);
        svc.spec.task.restart = RestartPolicy {
            condition,
            delay_ms: 0,
            ..Default::default()
        };
        let mut sim = Sim::with(1, svc);
        sim.settle();
        let first = sim.slot_task("a", 1);
        sim.set_status(&first, end);
        let d = sim.pass();
        let case = format!("{condition:?} after {end:?} (job: {job})");
        assert_eq!(created(&d).len(), usize::from(replaced), "{case}");
        if replaced {
            assert_eq!(desired(&d), [(first.clone(), Shutdown)], "{case}");
        } else {
            assert!(d.is_empty(), "{case}: the slot is left as it ended");
            assert_eq!(sim.state.tasks[&first].desired_state, Running);
        }
        sim.settle();
        assert_eq!(sim.tasks("a").len(), 1 + usize::from(replaced), "{case}");
    }
}

#[test]
fn a_failed_task_is_restarted_after_the_delay_and_attempts_are_limited_in_a_window() {
    let mut svc = service("a", replicated(1));
    svc.spec.task.restart = RestartPolicy {
        condition: RestartCondition::Any,
        delay_ms: 1_000,
        max_attempts: 2,
        window_ms: 10_000,
    };
    let mut sim = Sim::with(1, svc);
    sim.settle();
    // Two restarts within the window, each after the delay.
    for attempt in 1..=2 {
        let t = sim.slot_task("a", 1);
        sim.set_status(&t, TaskState::Failed);
        let failed_at = sim.now;
        let d = sim.pass();
        assert!(d.is_empty(), "attempt {attempt}: nothing before the delay");
        assert_eq!(d.wake_at_ms, Some(failed_at + 1_000));
        sim.now = failed_at + 999;
        assert!(sim.pass().is_empty());
        sim.now = failed_at + 1_000;
        let d = sim.pass();
        assert_eq!(created(&d).len(), 1, "attempt {attempt}");
        assert_eq!(desired(&d), [(t, TaskState::Shutdown)]);
        assert_eq!(d.wake_at_ms, None);
        sim.schedule();
        sim.agents();
        sim.now += 100;
    }
    // The third failure within the window is not restarted, now or later.
    let t = sim.slot_task("a", 1);
    sim.set_status(&t, TaskState::Failed);
    let d = sim.pass();
    assert!(d.is_empty());
    assert_eq!(d.wake_at_ms, None);
    sim.now += 60_000;
    assert!(sim.pass().is_empty(), "a slot given up on stays so");
    assert_eq!(sim.state.tasks[&t].desired_state, TaskState::Running);

    // A failure after a quiet spell longer than the window is restarted again.
    let mut svc = service("b", replicated(1));
    svc.spec.task.restart = RestartPolicy {
        condition: RestartCondition::Any,
        delay_ms: 0,
        max_attempts: 1,
        window_ms: 10_000,
    };
    let mut sim = Sim::with(1, svc);
    sim.settle();
    let first = sim.slot_task("b", 1);
    sim.set_status(&first, TaskState::Failed);
    assert_eq!(created(&sim.pass()).len(), 1, "first restart");
    sim.settle();
    sim.now += 20_000;
    let second = sim.slot_task("b", 1);
    sim.set_status(&second, TaskState::Failed);
    assert_eq!(
        created(&sim.pass()).len(),
        1,
        "the earlier restart left the window"
    );
    sim.settle();
    let third = sim.slot_task("b", 1);
    sim.set_status(&third, TaskState::Failed);
    assert!(sim.pass().is_empty(), "one restart per window");
}

#[test]
fn a_lost_or_drained_node_gets_its_tasks_replaced_at_once() {
    // (what happens to node 1, replaced?)
    let table: [(&str, Step, bool); 4] = [
        (
            "down",
            |s| s.set_node(1, |n| n.status = NodeStatus::Down),
            true,
        ),
        (
            "removed",
            |s| {
                s.state.nodes.remove(&NodeId(1));
            },
            true,
        ),
        (
            "drained",
            |s| s.set_node(1, |n| n.availability = Availability::Drain),
            true,
        ),
        (
            "paused",
            |s| s.set_node(1, |n| n.availability = Availability::Pause),
            false,
        ),
    ];
    for (what, change, replaced) in table {
        let mut svc = service("a", replicated(2));
        svc.spec.task.restart.delay_ms = 60_000;
        svc.spec.task.restart.max_attempts = 1;
        let mut sim = Sim::with(2, svc);
        sim.settle();
        let on_1: Vec<TaskId> = sim
            .current("a")
            .iter()
            .filter(|t| t.node_id == Some(NodeId(1)))
            .map(|t| t.id.clone())
            .collect();
        assert_eq!(on_1.len(), 1);
        change(&mut sim);
        let d = sim.pass();
        if !replaced {
            assert!(d.is_empty(), "{what}");
            continue;
        }
        // A drained node stops the task (its agent is there to do it); a down or
        // removed node's task is forgotten, so the node removes the stale container
        // when it returns.
        let expect = if what == "drained" {
            TaskState::Shutdown
        } else {
            TaskState::Remove
        };
        assert_eq!(desired(&d), [(on_1[0].clone(), expect)], "{what}");
        let new = created(&d);
        assert_eq!(new.len(), 1, "{what}: replaced without the restart delay");
        assert_eq!(
            new[0].slot, sim.state.tasks[&on_1[0]].slot,
            "{what}: same slot"
        );
        let replacement = new[0].id.clone();
        sim.settle();
        let running = sim.running("a");
        assert_eq!(running.len(), 2, "{what}");
        assert!(
            running.iter().all(|t| t.node_id == Some(NodeId(2))),
            "{what}"
        );
        // The replacement was not a restart: the one allowed attempt is still there.
        sim.set_status(&replacement, TaskState::Failed);
        sim.now += 60_000;
        assert_eq!(created(&sim.pass()).len(), 1, "{what}: restart allowed");
    }
}

#[test]
fn drain_moves_every_task_and_the_old_ones_stop() {
    let mut sim = Sim::with(3, service("a", replicated(6)));
    sim.settle();
    assert_eq!(
        sim.running("a")
            .iter()
            .filter(|t| t.node_id == Some(NodeId(3)))
            .count(),
        2
    );
    sim.set_node(3, |n| n.availability = Availability::Drain);
    sim.settle();
    let running = sim.running("a");
    assert_eq!(running.len(), 6);
    assert!(running.iter().all(|t| t.node_id != Some(NodeId(3))));
    let on_3: Vec<&Task> = sim
        .tasks("a")
        .into_iter()
        .filter(|t| t.node_id == Some(NodeId(3)))
        .collect();
    assert_eq!(on_3.len(), 2);
    assert!(on_3
        .iter()
        .all(|t| t.desired_state == TaskState::Shutdown && t.status.state == TaskState::Shutdown));
}

#[test]
fn global_follows_nodes_joining_draining_going_down_and_constraints() {
    let mut sim = Sim::with(3, service("g", ServiceMode::Global));
    sim.settle();
    let on = |sim: &Sim| -> Vec<u64> {
        sim.running("g")
            .iter()
            .filter_map(|t| t.node_id.map(|n| n.0))
            .collect()
    };
    assert_eq!(on(&sim), [1, 2, 3]);
    assert!(sim.current("g").iter().all(|t| t.slot == 0));

    // (step, nodes running the service afterwards)
    let table: [(&str, Step, Vec<u64>); 7] = [
        (
            "node 4 joins",
            |s| {
                s.state.nodes.insert(NodeId(4), node(4));
            },
            vec![1, 2, 3, 4],
        ),
        (
            "node 2 drains",
            |s| s.set_node(2, |n| n.availability = Availability::Drain),
            vec![1, 3, 4],
        ),
        (
            "node 2 is active again",
            |s| s.set_node(2, |n| n.availability = Availability::Active),
            vec![1, 2, 3, 4],
        ),
        (
            "node 3 pauses: its task stays",
            |s| s.set_node(3, |n| n.availability = Availability::Pause),
            vec![1, 2, 3, 4],
        ),
        (
            "node 4 loses the label",
            |s| {
                s.set_node(4, |n| {
                    n.labels.insert("no-global".into(), "1".into());
                })
            },
            vec![1, 2, 3],
        ),
        (
            "node 1 is removed",
            |s| {
                s.state.nodes.remove(&NodeId(1));
            },
            vec![2, 3],
        ),
        (
            "node 2 goes down",
            |s| s.set_node(2, |n| n.status = NodeStatus::Down),
            vec![3],
        ),
    ];
    for (step, change, nodes) in table {
        change(&mut sim);
        sim.settle();
        assert_eq!(on(&sim), nodes, "{step}");
        let current: Vec<u64> = sim
            .current("g")
            .iter()
            .filter_map(|t| t.node_id.map(|n| n.0))
            .collect();
        assert_eq!(current, nodes, "{step}: one current task per running node");
    }
    // Node 2 comes back: its old task was shut down; a new one starts.
    sim.set_node(2, |n| n.status = NodeStatus::Ready);
    sim.settle();
    assert_eq!(on(&sim), [2, 3]);
    // A global task that fails is restarted on its node, after the delay.
    let t = sim.current("g")[0].id.clone();
    sim.set_status(&t, TaskState::Failed);
    let d = sim.pass();
    assert!(d.is_empty());
    assert_eq!(d.wake_at_ms, Some(sim.now + 5_000));
    sim.now += 5_000;
    let d = sim.pass();
    assert_eq!(created(&d)[0].node_id, Some(NodeId(2)));
}

#[test]
fn replicated_job_runs_five_completions_two_at_a_time() {
    let mut svc = service(
        "j",
        ServiceMode::ReplicatedJob {
            max_concurrent: 2,
            total_completions: 5,
        },
    );
    svc.spec.task.restart.delay_ms = 0;
    let mut sim = Sim::with(2, svc);
    let mut failed_once = false;
    for _ in 0..30 {
        sim.pass();
        sim.schedule();
        sim.agents();
        let live: Vec<TaskId> = sim
            .current("j")
            .iter()
            .filter(|t| !t.status.state.is_terminal())
            .map(|t| t.id.clone())
            .collect();
        assert!(live.len() <= 2, "at most two at a time: {live:?}");
        // Each running task ends: the first one fails once, the others complete.
        for id in live {
            let end = if failed_once {
                TaskState::Complete
            } else {
                failed_once = true;
                TaskState::Failed
            };
            sim.set_status(&id, end);
        }
        sim.now += 10;
    }
    let tasks = sim.tasks("j");
    let complete = tasks
        .iter()
        .filter(|t| t.status.state == TaskState::Complete)
        .count();
    assert_eq!(complete, 5);
    assert_eq!(
        tasks.len(),
        6,
        "five successes and one failure replaced once"
    );
    let slots: BTreeSet<u64> = tasks.iter().map(|t| t.slot).collect();
    assert_eq!(slots, (1..=5).collect());
    assert!(sim.pass().is_empty(), "successes are not restarted");

    // A new version runs the job again.
    sim.update_service("j", |s| s.task.container.image = "app:2".into());
    let d = sim.pass();
    assert_eq!(created(&d).len(), 2);
    assert!(created(&d).iter().all(|t| t.spec_version == 2));
}

#[test]
fn global_job_runs_once_per_node() {
    let mut svc = service("gj", ServiceMode::GlobalJob);
    svc.spec.task.restart = RestartPolicy {
        condition: RestartCondition::OnFailure,
        delay_ms: 0,
        ..Default::default()
    };
    let mut sim = Sim::with(3, svc);
    let d = sim.pass();
    let nodes: Vec<Option<NodeId>> = created(&d).iter().map(|t| t.node_id).collect();
    assert_eq!(nodes, [Some(NodeId(1)), Some(NodeId(2)), Some(NodeId(3))]);
    sim.schedule();
    sim.agents();
    let ids: Vec<TaskId> = sim.current("gj").iter().map(|t| t.id.clone()).collect();
    sim.set_status(&ids[0], TaskState::Complete);
    sim.set_status(&ids[1], TaskState::Complete);
    sim.set_status(&ids[2], TaskState::Failed);
    let d = sim.pass();
    let new = created(&d);
    assert_eq!(new.len(), 1, "only the failure runs again");
    assert_eq!(new[0].node_id, Some(NodeId(3)));
    sim.schedule();
    sim.agents();
    let again = sim.current("gj")[2].id.clone();
    sim.set_status(&again, TaskState::Complete);
    assert!(sim.pass().is_empty(), "done on every node");
    sim.state.nodes.insert(NodeId(4), node(4));
    let d = sim.pass();
    assert_eq!(created(&d).len(), 1, "a new node runs it too");
    assert_eq!(created(&d)[0].node_id, Some(NodeId(4)));
}

/// Slots 1..=5 in transition: a task being stopped, or a current one not running.
fn in_transition(sim: &Sim) -> usize {
    (1..=5)
        .filter(|slot| {
            sim.tasks("a").iter().any(|t| {
                t.slot == *slot
                    && ((t.desired_state == TaskState::Shutdown && !t.status.state.is_terminal())
                        || (t.desired_state <= TaskState::Running
                            && t.status.state != TaskState::Running))
            })
        })
        .count()
}

#[test]
fn rolling_update_stop_first_two_at_a_time() {
    let mut svc = service("a", replicated(5));
    svc.spec.update.parallelism = 2;
    svc.spec.update.monitor_ms = 0;
    let mut sim = Sim::with(3, svc);
    sim.settle();
    sim.update_service("a", |s| s.task.container.image = "app:2".into());
    let mut batches = vec![];
    for _ in 0..10 {
        let d = sim.pass();
        let new = created(&d);
        assert!(new.len() <= 2);
        assert!(in_transition(&sim) <= 2, "at most two slots in transition");
        for t in &new {
            // Stop-first: the slot's old task is asked to stop in the same pass.
            assert!(desired(&d).iter().any(|(id, to)| {
                *to == TaskState::Shutdown && sim.state.tasks[id].slot == t.slot
            }));
        }
        batches.push(new.iter().map(|t| t.slot).collect::<Vec<_>>());
        // Nothing more starts until the batch is through.
        assert!(created(&sim.pass()).is_empty());
        sim.agents();
        sim.schedule();
        sim.agents();
        sim.now += 10;
    }
    assert_eq!(batches[..4], [vec![1, 2], vec![3, 4], vec![5], vec![]]);
    let running = sim.running("a");
    assert_eq!(running.len(), 5);
    assert!(running
        .iter()
        .all(|t| t.spec_version == 2 && t.spec.container.image == "app:2"));
    assert_eq!(sim.current("a").len(), 5);
    assert!(sim.pass().is_empty());
}

#[test]
fn rolling_update_start_first_stops_the_old_task_once_the_new_one_runs() {
    let mut svc = service("a", replicated(2));
    svc.spec.update.parallelism = 1;
    svc.spec.update.monitor_ms = 0;
    svc.spec.update.order = UpdateOrder::StartFirst;
    let mut sim = Sim::with(2, svc);
    sim.settle();
    let old1 = sim.slot_task("a", 1);
    sim.update_service("a", |s| s.task.container.image = "app:2".into());
    let d = sim.pass();
    assert_eq!(created(&d).len(), 1);
    assert_eq!(created(&d)[0].slot, 1);
    assert!(desired(&d).is_empty(), "the old task keeps running");
    assert!(sim.pass().is_empty(), "waiting for the new one to run");
    sim.schedule();
    sim.agents();
    let d = sim.pass();
    assert_eq!(desired(&d), [(old1, TaskState::Shutdown)]);
    assert!(
        created(&d).is_empty(),
        "slot 1 is still stopping its old task"
    );
    sim.agents();
    let d = sim.pass();
    assert_eq!(created(&d).len(), 1);
    assert_eq!(created(&d)[0].slot, 2);
    sim.settle();
    assert!(sim.running("a").iter().all(|t| t.spec_version == 2));
    assert_eq!(sim.current("a").len(), 2);

    // A new spec that fails leaves the old task serving and the update stalled.
    sim.update_service("a", |s| s.task.container.image = "broken".into());
    let d = sim.pass();
    let bad = created(&d)[0].id.clone();
    sim.schedule();
    sim.set_status(&bad, TaskState::Failed);
    for _ in 0..3 {
        sim.now += 5_000;
        let d = sim.pass();
        assert!(desired(&d)
            .iter()
            .all(|(id, _)| sim.state.tasks[id].spec_version == 3));
        for t in created(&d) {
            assert_eq!(t.slot, 1, "slot 2 waits");
            let id = t.id.clone();
            sim.schedule();
            sim.set_status(&id, TaskState::Failed);
        }
    }
    assert_eq!(sim.running("a").len(), 2, "the old tasks still run");
}

#[test]
fn removing_a_service_removes_then_deletes_its_tasks() {
    let mut sim = Sim::with(2, service("a", replicated(3)));
    sim.state
        .services
        .insert(ServiceId("keep".into()), service("keep", replicated(1)));
    sim.settle();
    // One more task that was never assigned.
    let mut pending = sim.current("a")[0].clone();
    pending.id = TaskId("p".into());
    pending.node_id = None;
    pending.slot = 9;
    pending.status = TaskStatus::new(TaskState::Pending, "no node", sim.now);
    sim.state.tasks.insert(pending.id.clone(), pending);
    sim.state.apply(&Command::RemoveService {
        id: ServiceId("a".into()),
    });
    let d = sim.pass();
    assert_eq!(desired(&d).len(), 4);
    assert!(desired(&d).iter().all(|(_, to)| *to == TaskState::Remove));
    assert!(created(&d).is_empty() && deleted(&d).is_empty());
    // The never-assigned task and those on a down node go at once; the others once
    // their agents report them stopped.
    sim.set_node(2, |n| n.status = NodeStatus::Down);
    let on_2 = sim
        .tasks("a")
        .iter()
        .filter(|t| t.node_id == Some(NodeId(2)))
        .count();
    let keep_on_2 = sim
        .tasks("keep")
        .iter()
        .filter(|t| t.node_id == Some(NodeId(2)))
        .count();
    let d = sim.pass();
    assert_eq!(deleted(&d).len(), 1 + on_2);
    sim.agents();
    let d = sim.pass();
    // ...plus the other service's task on the down node, forgotten after its
    // replacement (its container is stale).
    assert_eq!(deleted(&d).len(), 3 - on_2 + keep_on_2);
    assert!(sim.tasks("a").is_empty());
    assert_eq!(sim.current("keep").len(), 1, "other services untouched");
    assert!(sim.pass().is_empty());
}

#[test]
fn history_keeps_the_newest_five_tasks_per_slot() {
    let mut svc = service("a", replicated(2));
    svc.spec.task.restart.delay_ms = 0;
    let mut sim = Sim::with(1, svc);
    sim.settle();
    for _ in 0..12 {
        let t = sim.slot_task("a", 1);
        sim.set_status(&t, TaskState::Failed);
        sim.settle();
        assert!(sim.tasks("a").iter().filter(|t| t.slot == 1).count() <= HISTORY);
    }
    let slot1: Vec<&Task> = sim.tasks("a").into_iter().filter(|t| t.slot == 1).collect();
    assert_eq!(slot1.len(), HISTORY);
    let newest = slot1.iter().map(|t| t.created_ms).max();
    assert_eq!(
        sim.state.tasks[&sim.slot_task("a", 1)].created_ms,
        newest.unwrap_or_default(),
        "the current task is kept"
    );
    assert_eq!(sim.tasks("a").iter().filter(|t| t.slot == 2).count(), 1);

    // With max_attempts above the history, enough is kept to count the restarts.
    let mut svc = service("b", replicated(1));
    svc.spec.task.restart = RestartPolicy {
        delay_ms: 0,
        max_attempts: 7,
        ..Default::default()
    };
    let mut sim = Sim::with(1, svc);
    sim.settle();
    for _ in 0..7 {
        let t = sim.slot_task("b", 1);
        sim.set_status(&t, TaskState::Failed);
        sim.settle();
    }
    assert_eq!(sim.tasks("b").len(), 8);
    let t = sim.slot_task("b", 1);
    sim.set_status(&t, TaskState::Failed);
    assert!(sim.pass().is_empty(), "the eighth failure is not restarted");
}

#[test]
fn a_task_observed_orphaned_is_replaced_at_once_and_duplicates_are_cut_back() {
    let mut sim = Sim::with(2, service("a", replicated(1)));
    sim.settle();
    let t = sim.slot_task("a", 1);
    sim.set_status(&t, TaskState::Orphaned);
    let d = sim.pass();
    assert_eq!(created(&d).len(), 1);
    assert_eq!(desired(&d), [(t, TaskState::Shutdown)]);
    sim.settle();
    // Two passes raced: two live tasks in one slot; the one running stays.
    let mut dup = sim.current("a")[0].clone();
    let kept = dup.id.clone();
    dup.id = TaskId("dup".into());
    dup.created_ms += 1;
    dup.status = TaskStatus::new(TaskState::Pending, "created", sim.now);
    dup.node_id = None;
    sim.state.tasks.insert(dup.id.clone(), dup);
    let d = sim.pass();
    assert_eq!(desired(&d), [(TaskId("dup".into()), TaskState::Shutdown)]);
    assert!(created(&d).is_empty());
    assert_eq!(sim.slot_task("a", 1), kept);
}

// Rolling updates: health-gated units, batches and delays, failure actions, rollback,
// and the update status that carries them across leaders.

use crate::store::service::{FailureAction, UpdateState};
use crate::store::UpdateStatus;

impl Sim {
    fn update_status(&self, svc: &str) -> Option<&UpdateStatus> {
        self.state.update_status.get(&ServiceId(svc.into()))
    }

    fn update_state(&self, svc: &str) -> Option<UpdateState> {
        self.update_status(svc).map(|s| s.state)
    }

    /// Observes `id` exited with `code`, as its agent reports it.
    fn exit(&mut self, id: &TaskId, code: i64) {
        let mut s = self.state.tasks[id].status.clone();
        s.state = if code == 0 {
            TaskState::Complete
        } else {
            TaskState::Failed
        };
        s.timestamp_ms = self.now;
        s.exit_code = Some(code);
        s.message = format!("exited with code {code}");
        s.err = s.message.clone();
        self.state.apply(&Command::UpdateTaskStatus {
            updates: vec![(id.clone(), s)],
        });
    }

    /// Observes `id` in `state` with health `health`, now.
    fn observe(&mut self, id: &TaskId, state: TaskState, health: &str) {
        let mut s = self.state.tasks[id].status.clone();
        s.state = state;
        s.health = health.into();
        s.timestamp_ms = self.now;
        self.state.apply(&Command::UpdateTaskStatus {
            updates: vec![(id.clone(), s)],
        });
    }

    /// Passes, the scheduler and the agents for `ms`, in steps of 10 ms.
    fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.pass();
            self.schedule();
            self.agents();
            self.now += 10;
        }
    }

    /// The newest task of `svc` in `slot`.
    fn newest(&self, svc: &str, slot: u64) -> &Task {
        self.tasks(svc)
            .into_iter()
            .filter(|t| t.slot == slot)
            .max_by_key(|t| (t.created_ms, t.id.clone()))
            .expect("a task in the slot")
    }

    /// The ids of the current tasks of `svc`, by slot.
    fn current_ids(&self, svc: &str) -> Vec<TaskId> {
        self.current(svc).iter().map(|t| t.id.clone()).collect()
    }

    /// Drives an update: each new task of `svc` runs, or fails (exit 1) if its slot is
    /// in `failing`; stops when the update is no longer `updating` or after `passes`.
    fn drive(&mut self, svc: &str, failing: &[u64], passes: usize) {
        for _ in 0..passes {
            if self.update_state(svc) != Some(UpdateState::Updating) {
                return;
            }
            let d = self.pass();
            self.schedule();
            for t in created(&d) {
                if failing.contains(&t.slot) {
                    self.exit(&t.id, 1);
                }
            }
            self.agents();
            self.now += 10;
        }
    }
}

/// Service `id` with `replicas`, parallelism 1, no monitor period, no restart delay.
fn quick(id: &str, replicas: u64) -> Service {
    let mut svc = service(id, replicated(replicas));
    svc.spec.update.parallelism = 1;
    svc.spec.update.monitor_ms = 0;
    svc.spec.rollback.parallelism = 1;
    svc.spec.rollback.monitor_ms = 0;
    svc
}

fn rollbacks(d: &Decision) -> Vec<&Command> {
    d.commands
        .iter()
        .filter(|c| matches!(c, Command::RollbackService { .. }))
        .collect()
}

#[test]
fn an_update_opens_with_a_task_spec_or_port_change_and_not_with_a_scale_or_a_label() {
    let mut sim = Sim::with(2, quick("a", 2));
    sim.settle();
    sim.update_service("a", |s| s.mode = replicated(3));
    sim.update_service("a", |s| {
        s.labels.insert("k".into(), "v".into());
    });
    sim.settle();
    assert_eq!(sim.current("a").len(), 3);
    assert!(
        sim.update_status("a").is_none(),
        "a scale, a label, a new slot: no update"
    );
    sim.update_service("a", |s| s.task.container.image = "app:2".into());
    let st = sim.update_status("a").expect("status").clone();
    assert_eq!(st.state, UpdateState::Updating);
    assert_eq!(
        (st.version, st.started_ms, st.completed_ms),
        (4, sim.now, None)
    );
    sim.settle();
    let st = sim.update_status("a").expect("status");
    assert_eq!(st.state, UpdateState::Completed);
    assert_eq!(st.message, "update completed");
    assert_eq!(st.updated.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert!(st.completed_ms.is_some());
    // A scale during nothing keeps the completed status as it is.
    sim.update_service("a", |s| s.mode = replicated(2));
    assert_eq!(sim.update_state("a"), Some(UpdateState::Completed));
    // A published port replaces tasks too.
    sim.update_service("a", |s| {
        s.ports.push(crate::store::service::PortConfig {
            protocol: Default::default(),
            target: 80,
            published: 8080,
            mode: Default::default(),
            proxy_protocol: Default::default(),
        })
    });
    assert_eq!(sim.update_state("a"), Some(UpdateState::Updating));
    // The states' names in JSON.
    let names: Vec<serde_json::Value> = [
        UpdateState::Updating,
        UpdateState::Paused,
        UpdateState::Completed,
        UpdateState::RollbackStarted,
        UpdateState::RollbackPaused,
        UpdateState::RollbackCompleted,
    ]
    .iter()
    .map(|s| serde_json::to_value(s).expect("json"))
    .collect();
    assert_eq!(
        names,
        [
            "updating",
            "paused",
            "completed",
            "rollback_started",
            "rollback_paused",
            "rollback_completed"
        ]
    );
}

#[test]
fn a_network_added_removed_or_realiased_rolls_the_tasks_and_naming_the_default_does_not() {
    use crate::store::{Network, NetworkAttachment, NetworkId, NetworkSpec};
    let mut sim = Sim::with(2, quick("a", 2));
    let back = NetworkId("00000000000000b1".into());
    sim.state.networks.insert(
        back.clone(),
        Network {
            id: back.clone(),
            spec: NetworkSpec {
                name: "back".into(),
                ..Default::default()
            },
            created_ms: 1,
        },
    );
    sim.settle();
    let first: Vec<TaskId> = sim.current("a").iter().map(|t| t.id.clone()).collect();
    // Naming the built-in network is what naming none means: nothing rolls (the
    // positive control of the changes below).
    sim.update_service("a", |s| {
        s.networks = vec![NetworkAttachment::to(NetworkId::default_network())]
    });
    sim.settle();
    assert!(sim.update_status("a").is_none(), "no update");
    let same: Vec<TaskId> = sim.current("a").iter().map(|t| t.id.clone()).collect();
    assert_eq!(same, first);
    // A network added: an update, and every new task is on both networks.
    sim.update_service("a", |s| {
        s.networks.push(NetworkAttachment::to(back.clone()))
    });
    assert_eq!(sim.update_state("a"), Some(UpdateState::Updating));
    sim.settle();
    assert_eq!(sim.update_state("a"), Some(UpdateState::Completed));
    let current = sim.current("a");
    assert_eq!(current.len(), 2);
    for t in &current {
        assert!(!first.contains(&t.id), "{} replaced", t.id);
        let nets: Vec<NetworkId> = t
            .endpoint(None)
            .attachments()
            .into_iter()
            .map(|a| a.network)
            .collect();
        assert_eq!(nets, [NetworkId::default_network(), back.clone()]);
    }
    let second: Vec<TaskId> = current.iter().map(|t| t.id.clone()).collect();
    // An alias is part of the attachment: it rolls too.
    sim.update_service("a", |s| s.networks[1].aliases = vec!["db".into()]);
    assert_eq!(sim.update_state("a"), Some(UpdateState::Updating));
    sim.settle();
    assert!(sim.current("a").iter().all(|t| !second.contains(&t.id)));
    // And a network removed.
    sim.update_service("a", |s| s.networks.truncate(1));
    assert_eq!(sim.update_state("a"), Some(UpdateState::Updating));
    sim.settle();
    for t in sim.current("a") {
        assert_eq!(
            t.endpoint(None).attachments(),
            [NetworkAttachment::to(NetworkId::default_network())]
        );
    }
}

#[test]
fn a_new_task_counts_as_updated_once_running_and_healthy_for_the_monitor_period() {
    let mut svc = quick("a", 2);
    svc.spec.update.monitor_ms = 1000;
    let mut sim = Sim::with(2, svc);
    sim.settle();
    let a1 = sim.slot_task("a", 1);
    sim.update_service("a", |s| s.task.container.image = "app:2".into());
    let d = sim.pass();
    assert_eq!(created(&d).len(), 1);
    let b1 = created(&d)[0].id.clone();
    sim.schedule();
    sim.observe(&a1, TaskState::Shutdown, "");
    // Its health check has not passed yet: however long, it is not updated.
    sim.observe(&b1, TaskState::Starting, "starting");
    sim.now += 10_000;
    let d = sim.pass();
    assert!(created(&d).is_empty());
    assert!(sim.update_status("a").expect("status").updated.is_empty());
    // Healthy and running at t0: updated at t0 + monitor, not before.
    sim.observe(&b1, TaskState::Running, "healthy");
    let t0 = sim.now;
    sim.now += 999;
    let d = sim.pass();
    assert!(created(&d).is_empty(), "slot 2 waits for slot 1's monitor");
    assert_eq!(d.wake_at_ms, Some(t0 + 1000), "woken when the period ends");
    sim.now = t0 + 1000;
    let d = sim.pass();
    assert_eq!(created(&d).len(), 1);
    assert_eq!(created(&d)[0].slot, 2);
    let st = sim.update_status("a").expect("status");
    assert_eq!(st.updated.get(&1), Some(&(t0 + 1000)));
    assert_eq!(st.state, UpdateState::Updating);
}

#[test]
fn a_task_failing_in_its_monitor_period_is_a_failure_and_after_it_is_not() {
    let mut svc = quick("a", 3);
    svc.spec.update.monitor_ms = 1000;
    svc.spec.update.failure_action = FailureAction::Continue;
    svc.spec.task.restart.condition = RestartCondition::None;
    let mut sim = Sim::with(2, svc);
    sim.settle();
    sim.update_service("a", |s| s.task.container.image = "app:2".into());
    // Slot 1: running, then unhealthy half-way through its monitor period.
    let b1 = created(&sim.pass())[0].id.clone();
    sim.schedule();
    sim.agents();
    sim.observe(&b1, TaskState::Running, "healthy");
    sim.now += 500;
    let mut s = sim.state.tasks[&b1].status.clone();
    s.state = TaskState::Failed;
    s.health = "unhealthy".into();
    s.message = "unhealthy".into();
    s.err = "container is unhealthy".into();
    s.timestamp_ms = sim.now;
    sim.state.apply(&Command::UpdateTaskStatus {
        updates: vec![(b1.clone(), s)],
    });
    let d = sim.pass();
    let st = sim.update_status("a").expect("status");
    assert_eq!(st.failures.len(), 1);
    assert_eq!(st.failures[0].task_id, b1);
    assert_eq!(st.failures[0].reason, "failed: container is unhealthy");
    // Continue: slot 2 goes on, in the same pass.
    assert_eq!(created(&d)[0].slot, 2);
    // Slot 2 runs through its period; failing later is no update failure.
    let b2 = created(&d)[0].id.clone();
    sim.schedule();
    sim.agents();
    sim.now += 1000;
    let d = sim.pass();
    assert_eq!(created(&d)[0].slot, 3);
    sim.exit(&b2, 1);
    sim.run_for(2000);
    let st = sim.update_status("a").expect("status");
    assert_eq!(st.failures.len(), 1, "{st:?}");
    assert_eq!(st.state, UpdateState::Completed);
    assert_eq!(st.message, "update completed; 1 of 3 tasks failed");
}

#[test]
fn failure_action_pause_names_the_failing_task_and_starts_nothing_more() {
    let mut sim = Sim::with(2, quick("a", 3));
    sim.settle();
    let old = sim.current_ids("a");
    sim.update_service("a", |s| s.task.container.image = "broken".into());
    let b1 = created(&sim.pass())[0].id.clone();
    sim.schedule();
    sim.agents();
    sim.exit(&b1, 3);
    sim.pass();
    let st = sim.update_status("a").expect("status").clone();
    assert_eq!(st.state, UpdateState::Paused);
    assert_eq!(
        st.message,
        format!(
            "task {b1} (slot 1) failed: exited with code 3 (1 of 3 tasks failed, max failure ratio 0)"
        )
    );
    // Paused: slot 1 follows its restart policy (here its restart runs); slots 2 and
    // 3 keep their old tasks.
    sim.run_for(20_000);
    assert_eq!(sim.update_state("a"), Some(UpdateState::Paused));
    let now = sim.current_ids("a");
    assert_eq!(now[1..], old[1..], "no new replacement started");
    assert_eq!(sim.running("a").len(), 3);
    assert_eq!(sim.newest("a", 1).spec.container.image, "broken");
    // A new update starts over.
    sim.update_service("a", |s| s.task.container.image = "app:3".into());
    assert_eq!(sim.update_state("a"), Some(UpdateState::Updating));
    sim.settle();
    assert_eq!(sim.update_state("a"), Some(UpdateState::Completed));
    assert!(sim
        .running("a")
        .iter()
        .all(|t| t.spec.container.image == "app:3"));
}

#[test]
fn the_failure_ratio_counts_failed_units_against_the_units_replaced() {
    for (failing, ratio, state, message) in [
        (
            &[1, 2, 3][..],
            0.5,
            UpdateState::Paused,
            "(3 of 4 tasks failed, max failure ratio 0.5)",
        ),
        (
            &[1, 3][..],
            0.5,
            UpdateState::Completed,
            "update completed; 2 of 4 tasks failed",
        ),
        (
            &[2][..],
            0.2,
            UpdateState::Paused,
            "(1 of 4 tasks failed, max failure ratio 0.2)",
        ),
        (
            &[1, 2, 3, 4][..],
            1.0,
            UpdateState::Completed,
            "4 of 4 tasks failed",
        ),
    ] {
        let mut svc = quick("a", 4);
        svc.spec.update.max_failure_ratio = ratio;
        svc.spec.task.restart.condition = RestartCondition::None;
        let mut sim = Sim::with(2, svc);
        sim.settle();
        sim.update_service("a", |s| s.task.container.image = "app:2".into());
        sim.drive("a", failing, 50);
        let st = sim.update_status("a").expect("status");
        assert_eq!(st.state, state, "{failing:?} at {ratio}: {st:?}");
        assert!(st.message.ends_with(message), "{}", st.message);
        let failed: Vec<u64> = st.failures.iter().map(|f| f.unit).collect();
        assert_eq!(failed, failing);
    }
}

#[test]
fn failure_action_rollback_restores_the_previous_spec_keeping_the_old_tasks() {
    let mut svc = quick("a", 4);
    svc.spec.update.parallelism = 2;
    svc.spec.update.failure_action = FailureAction::Rollback;
    let mut sim = Sim::with(2, svc);
    sim.settle();
    let old = sim.current_ids("a");
    // The update brings its own rollback settings: two at a time, watched 500 ms.
    sim.update_service("a", |s| {
        s.task.container.args = vec!["exit".into()];
        s.rollback.parallelism = 2;
        s.rollback.monitor_ms = 500;
    });
    let d = sim.pass();
    assert_eq!(created(&d).len(), 2);
    sim.schedule();
    sim.agents();
    for t in created(&d) {
        sim.exit(&t.id, 3);
    }
    let d = sim.pass();
    assert!(created(&d).is_empty(), "nothing of the failed spec starts");
    let [Command::RollbackService { version, .. }] = rollbacks(&d)[..] else {
        panic!("no rollback: {d:?}");
    };
    assert_eq!(*version, 2);
    let svc = &sim.state.services[&ServiceId("a".into())];
    assert_eq!(svc.version, 3);
    assert!(
        svc.spec.task.container.args.is_empty(),
        "the previous spec is back"
    );
    assert_eq!(
        svc.previous_spec
            .as_ref()
            .map(|p| p.task.container.args.clone()),
        Some(vec!["exit".to_string()])
    );
    let st = sim.update_status("a").expect("status").clone();
    assert_eq!(st.state, UpdateState::RollbackStarted);
    assert_eq!(st.version, 3);
    assert!(st.message.starts_with("task t"), "{}", st.message);
    assert!(st.message.contains("failed: exited with code 3"));
    // The rollback replaces both failed slots at once, and keeps slots 3 and 4.
    let d = sim.pass();
    let again = created(&d);
    assert_eq!(again.iter().map(|t| t.slot).collect::<Vec<_>>(), [1, 2]);
    assert!(again.iter().all(|t| t.spec.container.args.is_empty()));
    sim.schedule();
    sim.agents();
    let t0 = sim.now;
    sim.now += 490;
    sim.pass();
    assert_eq!(sim.update_state("a"), Some(UpdateState::RollbackStarted));
    sim.now = t0 + 500;
    sim.pass();
    let done = sim.update_status("a").expect("status");
    assert_eq!(done.state, UpdateState::RollbackCompleted);
    assert_eq!(done.message, st.message, "it still says why");
    assert_eq!(done.completed_ms, Some(sim.now));
    assert_eq!(done.updated.get(&3), Some(&0), "slot 3 needed nothing");
    let now = sim.current_ids("a");
    assert_eq!(now[2..], old[2..], "the old tasks of slots 3 and 4 stayed");
    assert_eq!(sim.running("a").len(), 4);
    assert!(sim.pass().is_empty());
}

#[test]
fn a_start_first_rollback_finds_the_old_tasks_still_running() {
    let mut svc = quick("a", 2);
    svc.spec.update.order = UpdateOrder::StartFirst;
    svc.spec.update.failure_action = FailureAction::Rollback;
    let mut sim = Sim::with(2, svc);
    sim.settle();
    let old = sim.current_ids("a");
    sim.update_service("a", |s| s.task.container.image = "broken".into());
    let b1 = created(&sim.pass())[0].id.clone();
    sim.schedule();
    sim.observe(&b1, TaskState::Starting, "starting");
    sim.exit(&b1, 1);
    assert_eq!(rollbacks(&sim.pass()).len(), 1);
    let d = sim.pass();
    assert!(created(&d).is_empty(), "nothing to start again");
    assert_eq!(sim.update_state("a"), Some(UpdateState::RollbackCompleted));
    assert_eq!(sim.current_ids("a"), old);
    assert_eq!(sim.running("a").len(), 2);
    assert!(sim.state.tasks[&b1].desired_state >= TaskState::Shutdown);
    assert!(sim.pass().is_empty());
}

#[test]
fn a_failing_rollback_pauses_as_rollback_paused() {
    let mut svc = quick("a", 2);
    svc.spec.update.failure_action = FailureAction::Rollback;
    let mut sim = Sim::with(2, svc);
    sim.settle();
    sim.update_service("a", |s| s.task.container.image = "app:2".into());
    let b1 = created(&sim.pass())[0].id.clone();
    sim.schedule();
    sim.agents();
    sim.exit(&b1, 1);
    sim.pass();
    assert_eq!(sim.update_state("a"), Some(UpdateState::RollbackStarted));
    // The old spec fails now too (its image went away).
    let a1 = created(&sim.pass())[0].id.clone();
    sim.schedule();
    let mut s = sim.state.tasks[&a1].status.clone();
    s.state = TaskState::Rejected;
    s.err = "no such image: app:1".into();
    sim.state.apply(&Command::UpdateTaskStatus {
        updates: vec![(a1.clone(), s)],
    });
    sim.pass();
    let st = sim.update_status("a").expect("status");
    assert_eq!(st.state, UpdateState::RollbackPaused);
    assert_eq!(
        st.message,
        format!("task {a1} (slot 1) was rejected: no such image: app:1 (1 of 1 tasks failed, max failure ratio 0)")
    );
}

#[test]
fn the_update_delay_separates_batches_with_a_wake_up() {
    let mut svc = quick("a", 3);
    svc.spec.update.delay_ms = 2000;
    let mut sim = Sim::with(2, svc);
    sim.settle();
    sim.update_service("a", |s| s.task.container.image = "app:2".into());
    assert_eq!(created(&sim.pass())[0].slot, 1);
    sim.schedule();
    sim.agents();
    let t1 = sim.now;
    let d = sim.pass();
    assert!(created(&d).is_empty());
    assert_eq!(d.wake_at_ms, Some(t1 + 2000));
    assert_eq!(
        sim.update_status("a").expect("status").updated.get(&1),
        Some(&t1)
    );
    sim.now = t1 + 1999;
    assert!(created(&sim.pass()).is_empty());
    sim.now = t1 + 2000;
    assert_eq!(created(&sim.pass())[0].slot, 2);
}

#[test]
fn start_first_stops_the_old_task_once_the_new_one_is_healthy_and_monitored() {
    let mut svc = quick("a", 2);
    svc.spec.update.order = UpdateOrder::StartFirst;
    svc.spec.update.monitor_ms = 1000;
    let mut sim = Sim::with(2, svc);
    sim.settle();
    let a1 = sim.slot_task("a", 1);
    sim.update_service("a", |s| s.task.container.image = "app:2".into());
    let b1 = created(&sim.pass())[0].id.clone();
    sim.schedule();
    sim.observe(&b1, TaskState::Starting, "starting");
    sim.now += 5000;
    assert!(
        desired(&sim.pass()).is_empty(),
        "health check not passed yet"
    );
    sim.observe(&b1, TaskState::Running, "healthy");
    let t0 = sim.now;
    sim.now += 500;
    assert!(desired(&sim.pass()).is_empty(), "in its monitor period");
    sim.now = t0 + 1000;
    let d = sim.pass();
    assert_eq!(desired(&d), [(a1, TaskState::Shutdown)]);
    assert!(
        created(&d).is_empty(),
        "slot 1 is still stopping its old task"
    );
    sim.agents();
    assert_eq!(created(&sim.pass())[0].slot, 2);
}

#[test]
fn a_new_leader_resumes_the_update_from_the_stored_status() {
    let mut svc = quick("a", 4);
    svc.spec.update.parallelism = 2;
    svc.spec.update.monitor_ms = 1000;
    let mut sim = Sim::with(2, svc);
    sim.settle();
    sim.update_service("a", |s| s.task.container.image = "app:2".into());
    sim.pass();
    sim.schedule();
    sim.agents();
    sim.now += 1000;
    sim.pass();
    let st = sim.update_status("a").expect("status").clone();
    assert_eq!(st.updated.keys().copied().collect::<Vec<_>>(), [1, 2]);
    // Slot 1's task, counted as updated, fails now: no update failure.
    let b1 = sim.newest("a", 1).id.clone();
    sim.exit(&b1, 1);
    // A new leader loads the state tables from its own store and runs a fresh pass.
    let mut loaded = State::default();
    for k in sim.state.keys() {
        let v = sim.state.value_of(&k).expect("value");
        loaded.load(&k, &v).expect("load");
    }
    assert_eq!(loaded, sim.state);
    let pass = |state: &State| {
        let mut n = 100;
        let mut new_id = || {
            n += 1;
            TaskId(format!("t{n:03}"))
        };
        reconcile(state, sim.now + 10, &eligible, &mut new_id)
    };
    assert_eq!(pass(&loaded), pass(&sim.state), "the same decision");
    let mut fresh = Sim {
        state: loaded,
        now: sim.now + 10,
        next_id: 100,
        last: None,
    };
    fresh.run_for(5000);
    let st = fresh.update_status("a").expect("status");
    assert_eq!(st.state, UpdateState::Completed, "{st:?}");
    assert!(st.failures.is_empty());
    assert_eq!(
        st.started_ms,
        sim.update_status("a").expect("status").started_ms
    );
    assert!(fresh
        .running("a")
        .iter()
        .all(|t| t.spec.container.image == "app:2"));
}

#[test]
fn rollback_and_update_status_commands_check_the_version() {
    let mut sim = Sim::with(1, quick("a", 1));
    sim.settle();
    let id = ServiceId("a".into());
    let rollback = |version| Command::RollbackService {
        id: id.clone(),
        version,
        message: "rollback requested by the operator".into(),
        now_ms: 5,
    };
    let (r, _) = sim.state.apply(&rollback(1));
    assert!(
        matches!(&r, crate::store::Response::Rejected(m) if m.contains("no previous spec")),
        "{r:?}"
    );
    sim.update_service("a", |s| s.task.container.image = "app:2".into());
    let (r, _) = sim.state.apply(&rollback(1));
    assert!(matches!(r, crate::store::Response::Rejected(_)), "stale");
    let stale = UpdateStatus::new(UpdateState::Completed, 2, 0, "x");
    let (_, keys) = sim.state.apply(&Command::SetUpdateStatus {
        updates: vec![(id.clone(), 1, stale)],
    });
    assert!(keys.is_empty(), "a status for an older version is dropped");
    let (r, keys) = sim.state.apply(&rollback(2));
    assert_eq!(r, crate::store::Response::Ok);
    assert_eq!(
        keys,
        [
            crate::store::service_key(&id),
            crate::store::update_key(&id)
        ]
    );
    let svc = &sim.state.services[&id];
    assert_eq!(svc.version, 3);
    assert_eq!(svc.spec.task.container.image, "app:1");
    let st = sim.update_status("a").expect("status");
    assert_eq!(st.state, UpdateState::RollbackStarted);
    assert_eq!((st.version, st.started_ms), (3, 5));
    // The update had not reached the old task, current again: the rollback completes
    // in one pass, without a new task.
    let d = sim.pass();
    assert!(created(&d).is_empty());
    assert_eq!(sim.update_state("a"), Some(UpdateState::RollbackCompleted));
    // Removing the service removes its status.
    sim.state.apply(&Command::RemoveService { id: id.clone() });
    assert!(sim.update_status("a").is_none());
}

#[test]
fn a_global_update_counts_nodes_and_reopens_for_a_node_that_returns_out_of_date() {
    let mut svc = quick("g", 0);
    svc.spec.mode = ServiceMode::Global;
    let mut sim = Sim::with(3, svc);
    sim.settle();
    sim.set_node(3, |n| n.status = NodeStatus::Unknown);
    sim.update_service("g", |s| s.task.container.image = "app:2".into());
    sim.settle();
    let st = sim.update_status("g").expect("status");
    assert_eq!(st.state, UpdateState::Completed);
    assert_eq!(st.updated.keys().copied().collect::<Vec<_>>(), [1, 2]);
    // Node 3 is back with its old task: the update opens again for it.
    sim.set_node(3, |n| n.status = NodeStatus::Ready);
    sim.pass();
    assert_eq!(sim.update_state("g"), Some(UpdateState::Updating));
    sim.settle();
    assert_eq!(sim.update_state("g"), Some(UpdateState::Completed));
    assert_eq!(sim.running("g").len(), 3);
    assert!(sim
        .running("g")
        .iter()
        .all(|t| t.spec.container.image == "app:2"));
}

#[test]
fn new_update_settings_resume_a_paused_update_where_it_stopped() {
    let mut svc = quick("a", 4);
    svc.spec.task.restart.condition = RestartCondition::None;
    let mut sim = Sim::with(2, svc);
    sim.settle();
    sim.update_service("a", |s| s.task.container.image = "app:2".into());
    sim.drive("a", &[1], 20);
    assert_eq!(sim.update_state("a"), Some(UpdateState::Paused));
    sim.update_service("a", |s| {
        s.labels.insert("k".into(), "v".into());
    });
    assert_eq!(sim.update_state("a"), Some(UpdateState::Paused), "a label");
    sim.update_service("a", |s| s.update.max_failure_ratio = 0.5);
    let st = sim.update_status("a").expect("status");
    assert_eq!((st.state, st.version), (UpdateState::Updating, 2));
    assert_eq!(st.failures.len(), 1, "progress kept");
    sim.drive("a", &[], 50);
    let st = sim.update_status("a").expect("status");
    assert_eq!(st.state, UpdateState::Completed);
    assert_eq!(st.message, "update completed; 1 of 4 tasks failed");
    assert_eq!(
        sim.running("a")
            .iter()
            .filter(|t| t.spec.container.image == "app:2")
            .count(),
        3
    );
}

#[test]
fn a_failed_start_first_unit_keeps_its_old_task_until_a_restart_of_the_new_spec_runs() {
    let mut svc = quick("a", 2);
    svc.spec.update.order = UpdateOrder::StartFirst;
    svc.spec.update.failure_action = FailureAction::Continue;
    let mut sim = Sim::with(2, svc);
    sim.settle();
    let a1 = sim.slot_task("a", 1);
    sim.update_service("a", |s| s.task.container.image = "app:2".into());
    sim.drive("a", &[1], 50);
    let st = sim.update_status("a").expect("status").clone();
    assert_eq!(st.state, UpdateState::Completed);
    assert_eq!(st.message, "update completed; 1 of 2 tasks failed");
    // Done, and it stays done: passes change nothing while slot 1 waits for its restart.
    sim.settle();
    assert_eq!(sim.update_status("a"), Some(&st));
    assert!(sim.state.tasks[&a1].desired_state == TaskState::Running);
    // The restart runs: the old task goes.
    sim.now += 5000;
    sim.settle();
    assert!(sim.state.tasks[&a1].desired_state >= TaskState::Shutdown);
    assert_eq!(sim.update_status("a"), Some(&st));
    assert!(sim
        .running("a")
        .iter()
        .all(|t| t.spec.container.image == "app:2"));
}

// depends_on: a gate on a service's first start.

use crate::store::service::{DependCondition, Dependency};

/// Service `id` with `replicas`, depending on `svc-<on>` under `condition`.
fn dependent(id: &str, replicas: u64, on: &str, condition: DependCondition) -> Service {
    let mut svc = service(id, replicated(replicas));
    svc.spec.depends_on = vec![Dependency {
        service: format!("svc-{on}"),
        condition,
    }];
    svc
}

impl Sim {
    fn add(&mut self, svc: Service) {
        self.state.services.insert(svc.id.clone(), svc);
    }

    fn waiting_on(&self, svc: &str) -> Vec<String> {
        waiting_on(&self.state, &self.state.services[&ServiceId(svc.into())])
    }
}

#[test]
fn a_dependent_starts_only_once_its_dependency_runs_healthy() {
    let mut sim = Sim::with(2, service("db", replicated(1)));
    sim.add(dependent("web", 2, "db", DependCondition::ServiceHealthy));
    // The db has no tasks yet: only it gets one.
    let d = sim.pass();
    assert!(created(&d).iter().all(|t| t.service_id.0 == "db"));
    assert_eq!(created(&d).len(), 1);
    assert_eq!(sim.waiting_on("web"), ["svc-db to be healthy"]);
    sim.schedule();
    let db = sim.slot_task("db", 1);
    // Its health check is starting: the agent holds it in Starting.
    sim.observe(&db, TaskState::Starting, "starting");
    assert!(sim.pass().is_empty());
    // Running but not (yet) healthy does not count either.
    sim.observe(&db, TaskState::Running, "starting");
    assert!(sim.pass().is_empty());
    assert_eq!(sim.waiting_on("web"), ["svc-db to be healthy"]);
    sim.observe(&db, TaskState::Running, "healthy");
    assert!(sim.waiting_on("web").is_empty());
    let d = sim.pass();
    let new: Vec<u64> = created(&d).iter().map(|t| t.slot).collect();
    assert_eq!(new, [1, 2]);
    assert!(created(&d).iter().all(|t| t.service_id.0 == "web"));
    sim.settle();
    assert_eq!(sim.running("web").len(), 2);
}

#[test]
fn started_needs_a_running_task_and_healthy_accepts_one_without_a_health_check() {
    for condition in [
        DependCondition::ServiceStarted,
        DependCondition::ServiceHealthy,
    ] {
        let mut sim = Sim::with(1, service("db", replicated(1)));
        sim.add(dependent("web", 1, "db", condition));
        sim.pass();
        sim.schedule();
        let db = sim.slot_task("db", 1);
        sim.observe(&db, TaskState::Starting, "");
        assert!(sim.pass().is_empty(), "{condition:?}");
        assert_eq!(sim.waiting_on("web").len(), 1, "{condition:?}");
        // No health check: the agent reports Running with no health.
        sim.observe(&db, TaskState::Running, "");
        assert_eq!(created(&sim.pass()).len(), 1, "{condition:?}");
    }
}

#[test]
fn completed_successfully_waits_for_every_completion_of_a_job() {
    let mut migrate = service(
        "migrate",
        ServiceMode::ReplicatedJob {
            max_concurrent: 1,
            total_completions: 2,
        },
    );
    migrate.spec.task.restart.delay_ms = 0;
    let mut sim = Sim::with(1, migrate);
    sim.add(dependent(
        "web",
        1,
        "migrate",
        DependCondition::ServiceCompletedSuccessfully,
    ));
    for _ in 0..2 {
        assert_eq!(
            sim.waiting_on("web"),
            ["svc-migrate to complete successfully"]
        );
        let d = sim.pass();
        assert!(created(&d).iter().all(|t| t.service_id.0 == "migrate"));
        sim.schedule();
        sim.agents();
        // Running is not done.
        assert!(sim.pass().is_empty());
        let live: Vec<TaskId> = sim
            .current("migrate")
            .iter()
            .filter(|t| t.status.state == TaskState::Running)
            .map(|t| t.id.clone())
            .collect();
        assert_eq!(live.len(), 1);
        sim.exit(&live[0], 0);
    }
    assert!(sim.waiting_on("web").is_empty());
    let d = sim.pass();
    assert_eq!(created(&d).len(), 1);
    assert_eq!(created(&d)[0].service_id.0, "web");
}

#[test]
fn completed_successfully_of_a_service_needs_a_task_that_exited_zero() {
    let mut init = service("init", replicated(1));
    init.spec.task.restart.condition = RestartCondition::None;
    let mut sim = Sim::with(1, init);
    sim.add(dependent(
        "web",
        1,
        "init",
        DependCondition::ServiceCompletedSuccessfully,
    ));
    sim.pass();
    sim.schedule();
    sim.agents();
    let t = sim.slot_task("init", 1);
    sim.exit(&t, 1);
    assert!(
        created(&sim.pass()).is_empty(),
        "a failure is not a success"
    );
    assert_eq!(sim.waiting_on("web"), ["svc-init to complete successfully"]);
}

#[test]
fn a_dependent_with_tasks_is_managed_normally_when_its_dependency_goes_away() {
    let mut sim = Sim::with(2, service("db", replicated(1)));
    let mut web = dependent("web", 2, "db", DependCondition::ServiceHealthy);
    web.spec.task.restart.delay_ms = 0;
    sim.add(web);
    sim.settle();
    assert_eq!(sim.running("web").len(), 2);
    sim.state.apply(&Command::RemoveService {
        id: ServiceId("db".into()),
    });
    sim.settle();
    assert!(sim.tasks("db").is_empty());
    assert_eq!(
        sim.running("web").len(),
        2,
        "the gate holds only a first start"
    );
    assert!(sim.waiting_on("web").is_empty());
    // Restarts and scales go on as usual.
    let w1 = sim.slot_task("web", 1);
    sim.exit(&w1, 1);
    sim.update_service("web", |s| s.mode = replicated(3));
    sim.settle();
    assert_eq!(sim.running("web").len(), 3);
    assert_ne!(sim.slot_task("web", 1), w1);
}

#[test]
fn a_missing_dependency_holds_the_dependent_back_until_it_exists() {
    let mut sim = Sim::with(
        1,
        dependent("web", 1, "db", DependCondition::ServiceStarted),
    );
    assert!(sim.pass().is_empty());
    assert_eq!(sim.waiting_on("web"), ["svc-db to start (no such service)"]);
    sim.add(service("db", replicated(1)));
    sim.settle();
    assert_eq!(sim.running("db").len(), 1);
    assert_eq!(sim.running("web").len(), 1);
}

fn per_node(sim: &Sim, svc: &str) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for t in sim.running(svc) {
        *m.entry(t.node_id.unwrap().0).or_default() += 1;
    }
    m
}

#[test]
fn a_node_that_comes_back_gets_its_share_again_a_batch_at_a_time() {
    let mut svc = service("a", replicated(6));
    svc.spec.update.parallelism = 1;
    svc.spec.update.delay_ms = 10_000;
    let mut sim = Sim::with(3, svc);
    sim.settle();
    sim.set_node(3, |n| n.status = NodeStatus::Down);
    sim.settle();
    assert_eq!(per_node(&sim, "a"), BTreeMap::from([(1, 3), (2, 3)]));
    sim.set_node(3, |n| n.status = NodeStatus::Ready);
    // Nothing moves before the delay after the last task started.
    let d = sim.pass();
    assert!(created(&d).is_empty(), "{d:?}");
    let wake = d.wake_at_ms.expect("a wake-up at the end of the delay");
    sim.now = wake;
    // One task (parallelism 1) moves: stopped, and its slot refilled on node 3.
    let d = sim.pass();
    assert_eq!(desired(&d).len(), 1);
    assert_eq!(desired(&d)[0].1, TaskState::Shutdown);
    let new = created(&d);
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].node_id, Some(NodeId(3)));
    sim.settle();
    // The next batch waits for the delay again, then the spread is even.
    sim.now += 10_000;
    sim.settle();
    assert_eq!(
        per_node(&sim, "a"),
        BTreeMap::from([(1, 2), (2, 2), (3, 2)])
    );
    // Settled and even: a pass changes nothing.
    sim.now += 60_000;
    assert!(sim.pass().is_empty());
}

#[test]
fn rebalancing_leaves_unsettled_services_alone_and_moves_all_with_parallelism_zero() {
    let mut svc = service("a", replicated(4));
    svc.spec.update.parallelism = 0;
    let mut sim = Sim::with(2, svc);
    sim.settle();
    sim.set_node(2, |n| n.status = NodeStatus::Down);
    sim.settle();
    assert_eq!(per_node(&sim, "a"), BTreeMap::from([(1, 4)]));
    // A task that is not running (restarting) holds rebalancing back.
    sim.set_node(2, |n| n.status = NodeStatus::Ready);
    let t = sim.slot_task("a", 1);
    sim.set_status(&t, TaskState::Failed);
    let d = sim.pass();
    assert!(created(&d).iter().all(|t| t.node_id.is_none()), "{d:?}");
    sim.now += 5_000;
    sim.settle();
    // Parallelism 0: every move needed at once; even afterwards.
    assert_eq!(per_node(&sim, "a"), BTreeMap::from([(1, 2), (2, 2)]));
    // A node the service may not use (the stand-in constraint) gets nothing.
    let mut sim = Sim::with(2, service("b", replicated(4)));
    sim.settle();
    sim.set_node(2, |n| n.status = NodeStatus::Down);
    sim.settle();
    let mut n3 = node(3);
    n3.labels.insert("no-global".into(), "1".into());
    sim.state.nodes.insert(NodeId(3), n3);
    assert_eq!(per_node(&sim, "b"), BTreeMap::from([(1, 4)]));
    assert!(sim.pass().is_empty());
}

/// The rule `service create` waits on (moved here from the CLI): a global service
/// wants a task on every eligible node before its first pass has made any; it has
/// converged once each runs its current task, and an update is converged only once no
/// task of the old spec still runs.
#[test]
fn a_service_converges_once_every_wanted_task_of_its_spec_runs() {
    let svc = service("g", ServiceMode::Global);
    let mut sim = Sim::with(3, svc);
    sim.set_node(3, |n| {
        n.labels.insert("no-global".into(), String::new());
    });
    let p = |sim: &Sim| {
        progress(
            &sim.state,
            &sim.state.services[&ServiceId("g".into())],
            &eligible,
        )
    };
    let before = p(&sim);
    assert_eq!((before.desired, before.wanted, before.done), (2, 2, 0));
    assert!(!before.converged, "0/2 is not converged");
    sim.settle();
    let after = p(&sim);
    assert_eq!((after.running, after.done, after.wanted), (2, 2, 2));
    assert!(after.converged);

    let mut sim = Sim::with(2, service("r", replicated(2)));
    sim.settle();
    let p = |sim: &Sim| {
        progress(
            &sim.state,
            &sim.state.services[&ServiceId("r".into())],
            &eligible,
        )
    };
    assert!(p(&sim).converged);
    sim.update_service("r", |s| s.task.container.image = "app:2".into());
    assert!(!p(&sim).converged, "old tasks still run");
    // One at a time, each watched through the monitor period (5 s).
    sim.run_for(20_000);
    assert!(p(&sim).converged);

    // No eligible node at all: nothing to wait for.
    let mut sim = Sim::with(1, service("n", ServiceMode::Global));
    sim.set_node(1, |n| n.status = NodeStatus::Down);
    let s = &sim.state.services[&ServiceId("n".into())];
    assert!(progress(&sim.state, s, &eligible).converged);
}

#[test]
fn a_container_option_or_a_generic_resource_changed_rolls_the_tasks() {
    let mut sim = Sim::with(2, quick("a", 2));
    sim.settle();
    assert!(sim.update_status("a").is_none());
    sim.update_service("a", |s| {
        s.task.container.options.cap_add = vec!["NET_ADMIN".into()]
    });
    assert_eq!(sim.update_state("a"), Some(UpdateState::Updating));
    sim.settle();
    assert_eq!(sim.update_state("a"), Some(UpdateState::Completed));
    sim.update_service("a", |s| {
        s.task.resources.generic_resources.insert("gpu".into(), 1);
    });
    assert_eq!(sim.update_state("a"), Some(UpdateState::Updating));
}

#[test]
fn a_pass_after_one_change_looks_at_that_service_s_tasks_only() {
    let mut sim = Sim::new(4);
    for i in 0..20 {
        let mut svc = service(&format!("s{i:02}"), replicated(5));
        svc.spec.task.restart.delay_ms = 0;
        sim.state.services.insert(svc.id.clone(), svc);
    }
    sim.settle();
    let read = sim.state.changes.generation();
    assert_eq!(
        sim.state.changes.since(Some(read)),
        Changed::Services(BTreeSet::new())
    );
    // One task of one service fails, as its agent reports through the store.
    let failed = sim.current("s07")[2].id.clone();
    sim.set_status(&failed, TaskState::Failed);
    let changed = sim.state.changes.since(Some(read));
    assert_eq!(
        changed,
        Changed::Services([ServiceId("s07".into())].into_iter().collect())
    );
    let run = |changed: &Changed| {
        let mut n = 900;
        let mut new_id = || {
            n += 1;
            TaskId(format!("t{n:03}"))
        };
        reconcile_changed(&sim.state, changed, sim.now, &eligible, &mut new_id)
    };
    let part = run(&changed);
    let whole = run(&Changed::All);
    assert_eq!(whole.examined, 100);
    assert_eq!(part.examined, 5, "the failed task's service, and no other");
    assert_eq!(part.commands, whole.commands);
    assert_eq!(created(&part).len(), 1, "its replacement");
    // Nothing changed: nothing looked at, nothing decided.
    let quiet = run(&Changed::Services(BTreeSet::new()));
    assert_eq!(quiet.examined, 0);
    assert!(quiet.is_empty());
}
