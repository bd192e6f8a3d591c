//! Scheduling tests: small clusters built in memory, one pass of [`schedule`] each.

use std::collections::BTreeMap;

use super::*;
use crate::store::service::{
    ContainerSpec, PortConfig, Protocol, PublishMode, ServiceMode, TaskSpec, UpdateConfig,
};
use crate::store::task::HostPort;
use crate::store::TaskState;
use crate::store::{
    Availability, Command, Node, NodeDescription, NodeStatus, Role, Service, ServiceId,
    ServiceSpec, TaskStatus,
};

const GIB: u64 = 1 << 30;
const CPU: u64 = 1_000_000_000;

/// A cluster under construction, and the facts its nodes reported.
#[derive(Default)]
struct World {
    state: State,
    facts: BTreeMap<NodeId, NodeFacts>,
}

/// A ready, active worker with 4 CPUs and 8 GiB.
fn node(id: u64) -> Node {
    Node {
        status: NodeStatus::Ready,
        ..Node::new(
            NodeId(id),
            format!("10.0.0.{id}:4242"),
            Role::Worker,
            NodeDescription {
                hostname: format!("n{id}"),
                cpus: 4,
                memory_bytes: 8 * GIB,
                os: "linux".into(),
                arch: "x86_64".into(),
                engine_version: "27.0.0".into(),
                engine_labels: BTreeMap::new(),
                data_port: Default::default(),
                generic_resources: BTreeMap::new(),
            },
            0,
        )
    }
}

fn spec(name: &str, mode: ServiceMode) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        labels: BTreeMap::new(),
        mode,
        task: TaskSpec {
            container: ContainerSpec {
                image: "busybox".into(),
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
    }
}

fn host_port(published: u16, protocol: Protocol) -> PortConfig {
    PortConfig {
        protocol,
        target: 80,
        published,
        mode: PublishMode::Host,
        proxy_protocol: Default::default(),
    }
}

/// The id of the task in `slot` of `service`: `web.03`.
fn tid(service: &str, slot: u64) -> TaskId {
    TaskId(format!("{service}.{slot:02}"))
}

impl World {
    fn node(mut self, id: u64, edit: impl FnOnce(&mut Node)) -> Self {
        let mut n = node(id);
        edit(&mut n);
        self.state.nodes.insert(n.id, n);
        self
    }

    /// `count` plain nodes with ids `first..first + count`.
    fn nodes(mut self, first: u64, count: u64) -> Self {
        for id in first..first + count {
            self = self.node(id, |_| {});
        }
        self
    }

    fn facts(mut self, id: u64, facts: NodeFacts) -> Self {
        self.facts.insert(NodeId(id), facts);
        self
    }

    /// A replicated service named `name` (also its id) whose spec `edit` adjusts, with no
    /// tasks yet.
    fn service(mut self, name: &str, edit: impl FnOnce(&mut ServiceSpec)) -> Self {
        let mut spec = spec(name, ServiceMode::Replicated { replicas: 0 });
        edit(&mut spec);
        let service = Service {
            vip: String::new(),
            id: ServiceId(name.into()),
            spec,
            previous_spec: None,
            version: 1,
            created_ms: 0,
            updated_ms: 0,
        };
        self.state.services.insert(service.id.clone(), service);
        self
    }

    /// A task of `service` in `slot`, on `node` if any, observed in `state`.
    fn task(mut self, service: &str, slot: u64, node: Option<u64>, state: TaskState) -> Self {
        let svc = &self.state.services[&ServiceId(service.into())];
        let t = Task {
            vip: String::new(),
            endpoint: None,
            id: tid(service, slot),
            service_id: svc.id.clone(),
            service_name: svc.spec.name.clone(),
            slot,
            node_id: node.map(NodeId),
            spec_version: svc.version,
            spec: svc.spec.task.clone().into(),
            desired_state: TaskState::Running,
            status: TaskStatus::new(state, "", 0),
            created_ms: 0,
        };
        self.state.tasks.insert(t.id.clone(), t);
        self
    }

    /// New tasks of `service` in slots `1..=count`, without a node.
    fn pending(mut self, service: &str, count: u64) -> Self {
        for slot in 1..=count {
            self = self.task(service, slot, None, TaskState::New);
        }
        self
    }

    /// A running task of `service` in `slot` on `node`.
    fn running(self, service: &str, slot: u64, node: u64) -> Self {
        self.task(service, slot, Some(node), TaskState::Running)
    }

    fn schedule(&self) -> Plan {
        schedule(&self.state, &self.facts)
    }
}

/// How many tasks the plan put on each node.
fn per_node(plan: &Plan) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for (_, n) in &plan.assign {
        *counts.entry(n.0).or_default() += 1;
    }
    counts
}

/// The plan's pending messages, by task id.
fn reasons(plan: &Plan) -> BTreeMap<String, String> {
    plan.pending
        .iter()
        .map(|(t, why)| (t.0.clone(), why.clone()))
        .collect()
}

#[test]
fn each_filter_rejects_and_explains() {
    let heavy = |s: &mut ServiceSpec| {
        s.task.resources.reserve_memory_bytes = 6 * GIB;
        s.task.resources.reserve_nano_cpus = 3 * CPU;
    };
    let cases: Vec<(&str, World, &str)> = vec![
        (
            "no nodes",
            World::default().service("web", |_| {}).pending("web", 1),
            "no suitable node: no nodes",
        ),
        (
            "down",
            World::default()
                .node(1, |n| n.status = NodeStatus::Down)
                .service("web", |_| {})
                .pending("web", 1),
            "no suitable node: 1 down",
        ),
        (
            "unknown counts as down",
            World::default()
                .node(1, |n| n.status = NodeStatus::Unknown)
                .service("web", |_| {})
                .pending("web", 1),
            "no suitable node: 1 down",
        ),
        (
            "drained",
            World::default()
                .node(1, |n| n.availability = Availability::Drain)
                .service("web", |_| {})
                .pending("web", 1),
            "no suitable node: 1 drained",
        ),
        (
            "paused",
            World::default()
                .node(1, |n| n.availability = Availability::Pause)
                .service("web", |_| {})
                .pending("web", 1),
            "no suitable node: 1 paused",
        ),
        (
            "down wins over drained",
            World::default()
                .node(1, |n| {
                    n.status = NodeStatus::Down;
                    n.availability = Availability::Drain;
                })
                .service("web", |_| {})
                .pending("web", 1),
            "no suitable node: 1 down",
        ),
        (
            "memory",
            World::default()
                .node(1, |n| n.description.memory_bytes = 4 * GIB)
                .service("web", heavy)
                .pending("web", 1),
            "no suitable node: 1 lacked memory",
        ),
        (
            "cpu",
            World::default()
                .node(1, |n| n.description.cpus = 2)
                .service("web", heavy)
                .pending("web", 1),
            "no suitable node: 1 lacked cpu",
        ),
        (
            "memory is checked before cpu",
            World::default()
                .node(1, |n| {
                    n.description.cpus = 2;
                    n.description.memory_bytes = GIB;
                })
                .service("web", heavy)
                .pending("web", 1),
            "no suitable node: 1 lacked memory",
        ),
        (
            "reservations of tasks already there count",
            World::default()
                .nodes(1, 1)
                .service("db", heavy)
                .running("db", 1, 1)
                .service("web", heavy)
                .pending("web", 1),
            "no suitable node: 1 lacked memory",
        ),
        (
            "constraint",
            World::default()
                .node(1, |n| {
                    n.labels.insert("zone".into(), "b".into());
                })
                .nodes(2, 1)
                .service("web", |s| {
                    s.task.placement.constraints = vec!["node.labels.zone == a".into()]
                })
                .pending("web", 1),
            "no suitable node: 2 failed constraint node.labels.zone==a",
        ),
        (
            "the first failing constraint is named",
            World::default()
                .node(1, |n| n.role = Role::Manager)
                .nodes(2, 1)
                .service("web", |s| {
                    s.task.placement.constraints =
                        vec!["node.role==worker".into(), "node.hostname==n9".into()]
                })
                .pending("web", 1),
            "no suitable node: 1 failed constraint node.hostname==n9, \
             1 failed constraint node.role==worker",
        ),
        (
            "max replicas per node",
            World::default()
                .nodes(1, 1)
                .service("web", |s| s.task.placement.max_replicas_per_node = 1)
                .running("web", 1, 1)
                .task("web", 2, None, TaskState::Pending),
            "no suitable node: 1 at max replicas per node",
        ),
        (
            "host port",
            World::default()
                .nodes(1, 1)
                .service("other", |s| s.ports = vec![host_port(8080, Protocol::Tcp)])
                .running("other", 1, 1)
                .service("web", |s| s.ports = vec![host_port(8080, Protocol::Tcp)])
                .pending("web", 1),
            "no suitable node: 1 host port 8080/tcp in use",
        ),
        (
            "the commonest reason first, then the furthest filter",
            World::default()
                .node(1, |n| n.status = NodeStatus::Down)
                .node(2, |n| n.availability = Availability::Drain)
                .node(3, |n| n.description.memory_bytes = GIB)
                .node(4, |n| n.description.memory_bytes = 2 * GIB)
                .service("web", heavy)
                .pending("web", 1),
            "no suitable node: 2 lacked memory, 1 drained, 1 down",
        ),
    ];
    for (name, world, want) in cases {
        let plan = world.schedule();
        assert_eq!(plan.assign, vec![], "{name}");
        let got: Vec<&str> = plan.pending.iter().map(|(_, w)| w.as_str()).collect();
        assert_eq!(got, vec![want], "{name}");
    }
}

#[test]
fn six_replicas_spread_two_per_node() {
    let plan = World::default()
        .nodes(1, 3)
        .service("web", |_| {})
        .pending("web", 6)
        .schedule();
    assert_eq!(per_node(&plan), [(1, 2), (2, 2), (3, 2)].into());
    assert_eq!(plan.pending, vec![]);
    // Slot order, ties to the lowest node id: a fixed, readable plan.
    let order: Vec<(String, u64)> = plan
        .assign
        .iter()
        .map(|(t, n)| (t.0.clone(), n.0))
        .collect();
    assert_eq!(
        order,
        vec![
            ("web.01".into(), 1),
            ("web.02".into(), 2),
            ("web.03".into(), 3),
            ("web.04".into(), 1),
            ("web.05".into(), 2),
            ("web.06".into(), 3),
        ]
    );
}

#[test]
fn spread_counts_the_service_first_then_all_tasks() {
    let plan = World::default()
        .nodes(1, 3)
        // Node 1 already runs a replica of web; node 2 runs two tasks of db.
        .service("db", |_| {})
        .running("db", 1, 2)
        .running("db", 2, 2)
        .service("web", |_| {})
        .running("web", 1, 1)
        .task("web", 2, None, TaskState::Pending)
        .task("web", 3, None, TaskState::Pending)
        .schedule();
    // web.02: nodes 2 and 3 have no web; node 3 is idle. web.03: node 2 is the only
    // node still without web, busy as it is.
    assert_eq!(
        plan.assign,
        vec![(tid("web", 2), NodeId(3)), (tid("web", 3), NodeId(2))]
    );
}

#[test]
fn terminal_tasks_do_not_count() {
    let plan = World::default()
        .nodes(1, 2)
        .service("web", |s| {
            s.task.placement.max_replicas_per_node = 1;
            s.task.resources.reserve_memory_bytes = 8 * GIB;
            s.ports = vec![host_port(80, Protocol::Tcp)];
        })
        .task("web", 1, Some(1), TaskState::Failed)
        .task("web", 2, Some(1), TaskState::Shutdown)
        .task("web", 3, None, TaskState::New)
        .schedule();
    assert_eq!(plan.assign, vec![(tid("web", 3), NodeId(1))]);
}

#[test]
fn preferences_balance_zones_then_nodes() {
    let zone = |z: &'static str| {
        move |n: &mut Node| {
            n.labels.insert("zone".into(), z.into());
        }
    };
    let plan = World::default()
        .node(1, zone("a"))
        .node(2, zone("a"))
        .node(3, zone("b"))
        .service("web", |s| {
            s.task.placement.preferences = vec!["node.labels.zone".into()]
        })
        .pending("web", 4)
        .schedule();
    assert_eq!(per_node(&plan), [(1, 1), (2, 1), (3, 2)].into());

    // Nodes without the label form their own group, last among equals.
    let plan = World::default()
        .node(1, zone("a"))
        .node(2, |_| {})
        .node(3, zone("b"))
        .service("web", |s| {
            s.task.placement.preferences = vec!["node.labels.zone".into()]
        })
        .pending("web", 3)
        .schedule();
    assert_eq!(
        plan.assign,
        vec![
            (tid("web", 1), NodeId(1)),
            (tid("web", 2), NodeId(3)),
            (tid("web", 3), NodeId(2)),
        ]
    );

    // Tasks already in a zone count, even on a node that can no longer take more.
    let plan = World::default()
        .node(1, |n| {
            n.labels.insert("zone".into(), "a".into());
            n.availability = Availability::Drain;
        })
        .node(2, zone("a"))
        .node(3, zone("b"))
        .service("web", |s| {
            s.task.placement.preferences = vec!["node.labels.zone".into()]
        })
        .running("web", 1, 1)
        .task("web", 2, None, TaskState::New)
        .schedule();
    assert_eq!(plan.assign, vec![(tid("web", 2), NodeId(3))]);
}

#[test]
fn preferences_spread_over_node_attributes() {
    // `node.hostname`: nodes 1 and 2 share a host name, node 3 has its own; the two
    // names share the replicas as two zones would.
    let host = |h: &'static str| {
        move |n: &mut Node| {
            n.description.hostname = h.into();
        }
    };
    let plan = World::default()
        .node(1, host("h1"))
        .node(2, host("h1"))
        .node(3, host("h2"))
        .service("web", |s| {
            s.task.placement.preferences = vec!["node.hostname".into()]
        })
        .pending("web", 4)
        .schedule();
    assert_eq!(per_node(&plan), [(1, 1), (2, 1), (3, 2)].into());

    // `node.platform.arch` and `node.role` the same way.
    let arch = |a: &'static str| {
        move |n: &mut Node| {
            n.description.arch = a.into();
        }
    };
    let plan = World::default()
        .node(1, arch("x86_64"))
        .node(2, arch("x86_64"))
        .node(3, arch("aarch64"))
        .service("web", |s| {
            s.task.placement.preferences = vec!["node.platform.arch".into()]
        })
        .pending("web", 4)
        .schedule();
    assert_eq!(per_node(&plan), [(1, 1), (2, 1), (3, 2)].into());
    let plan = World::default()
        .node(1, |n| n.role = Role::Manager)
        .node(2, |_| {})
        .node(3, |_| {})
        .service("web", |s| {
            s.task.placement.preferences = vec!["node.role".into()]
        })
        .pending("web", 4)
        .schedule();
    assert_eq!(per_node(&plan), [(1, 2), (2, 1), (3, 1)].into());

    // `node.id` under a zone: two per zone, then one per node of zone a; without the
    // node.id level, the zone's tasks would still spread, so the same holds, and with
    // it alone every node gets its share.
    let zone = |z: &'static str| {
        move |n: &mut Node| {
            n.labels.insert("zone".into(), z.into());
        }
    };
    let plan = World::default()
        .node(1, zone("a"))
        .node(2, zone("a"))
        .node(3, zone("b"))
        .service("web", |s| {
            s.task.placement.preferences = vec!["node.labels.zone".into(), "node.id".into()]
        })
        .pending("web", 4)
        .schedule();
    assert_eq!(per_node(&plan), [(1, 1), (2, 1), (3, 2)].into());
    let plan = World::default()
        .node(1, |_| {})
        .node(2, |_| {})
        .node(3, |_| {})
        .service("web", |s| {
            s.task.placement.preferences = vec!["node.id".into()]
        })
        .running("web", 1, 1)
        .running("web", 2, 1)
        .task("web", 3, None, TaskState::New)
        .task("web", 4, None, TaskState::New)
        .schedule();
    // slots 1 and 2 are on node 1 already: the new ones go to nodes 2 and 3.
    assert_eq!(per_node(&plan), [(2, 1), (3, 1)].into());
    // Each node is its own group: its value is its id.
    let n = node(7);
    let v = spread::preference_value(&n, &"node.id".into());
    assert_eq!(v.as_deref(), Some(NodeId(7).to_string().as_str()));
    let v = spread::preference_value(&n, &"node.platform.os".into());
    assert_eq!(v.as_deref(), Some(n.description.os.as_str()));
}

#[test]
fn preferences_read_attributes_in_any_case_and_refuse_facts() {
    use crate::store::Preference;
    for text in [
        "node.id",
        "node.hostname",
        "node.role",
        "node.platform.os",
        "node.platform.arch",
    ] {
        let p = Preference::read(text);
        assert!(p.is_valid(), "{text}");
        assert_eq!(p.to_string(), text);
        assert!(p == text);
    }
    assert_eq!(Preference::read("Node.ID").to_string(), "node.id");
    for text in ["node.facts.load1", "node", "node.idx", "zone"] {
        assert!(!Preference::read(text).is_valid(), "{text}");
    }
}

#[test]
fn preferences_nest_in_order() {
    // zone a: racks r1 (nodes 1, 2) and r2 (node 3); zone b: rack r1 (node 4).
    let at = |z: &'static str, r: &'static str| {
        move |n: &mut Node| {
            n.labels.insert("zone".into(), z.into());
            n.labels.insert("rack".into(), r.into());
        }
    };
    let plan = World::default()
        .node(1, at("a", "r1"))
        .node(2, at("a", "r1"))
        .node(3, at("a", "r2"))
        .node(4, at("b", "r1"))
        .service("web", |s| {
            s.task.placement.preferences =
                vec!["node.labels.zone".into(), "node.labels.rack".into()]
        })
        .pending("web", 8)
        .schedule();
    // 4 per zone; in zone a, 2 per rack; in rack a/r1, 1 per node.
    assert_eq!(per_node(&plan), [(1, 1), (2, 1), (3, 2), (4, 4)].into());
}

#[test]
fn reservations_add_up_within_one_plan() {
    let plan = World::default()
        .node(1, |n| n.description.memory_bytes = 3 * GIB)
        .node(2, |n| n.description.memory_bytes = 2 * GIB)
        .service("db", |s| s.task.resources.reserve_memory_bytes = 2 * GIB)
        .pending("db", 3)
        .service("web", |s| s.task.resources.reserve_nano_cpus = 3 * CPU)
        .pending("web", 3)
        .schedule();
    assert_eq!(
        plan.assign,
        vec![
            (tid("db", 1), NodeId(1)),
            (tid("db", 2), NodeId(2)),
            (tid("web", 1), NodeId(1)),
            (tid("web", 2), NodeId(2)),
        ]
    );
    assert_eq!(
        reasons(&plan),
        [
            ("db.03".into(), "no suitable node: 2 lacked memory".into()),
            ("web.03".into(), "no suitable node: 2 lacked cpu".into()),
        ]
        .into()
    );
}

#[test]
fn max_replicas_per_node_holds_within_one_plan() {
    let plan = World::default()
        .nodes(1, 2)
        .service("web", |s| s.task.placement.max_replicas_per_node = 2)
        .pending("web", 5)
        .schedule();
    assert_eq!(per_node(&plan), [(1, 2), (2, 2)].into());
    assert_eq!(
        reasons(&plan),
        [(
            "web.05".into(),
            "no suitable node: 2 at max replicas per node".into()
        )]
        .into()
    );
}

#[test]
fn host_ports_conflict_by_port_and_protocol() {
    let plan = World::default()
        .nodes(1, 3)
        // Node 1: another service binds 8080/tcp in host mode.
        .service("other", |s| s.ports = vec![host_port(8080, Protocol::Tcp)])
        .running("other", 1, 1)
        // Node 2: 8080/udp and an ingress 8080/tcp do not conflict.
        .service("dns", |s| {
            s.ports = vec![
                host_port(8080, Protocol::Udp),
                PortConfig {
                    mode: PublishMode::Ingress,
                    proxy_protocol: Default::default(),
                    ..host_port(8080, Protocol::Tcp)
                },
            ]
        })
        .running("dns", 1, 2)
        .service("web", |s| s.ports = vec![host_port(8080, Protocol::Tcp)])
        .pending("web", 3)
        .schedule();
    assert_eq!(per_node(&plan), [(2, 1), (3, 1)].into());
    assert_eq!(
        reasons(&plan),
        [(
            "web.03".into(),
            "no suitable node: 3 host port 8080/tcp in use".into()
        )]
        .into()
    );
}

#[test]
fn host_ports_the_agent_reported_count() {
    let mut world = World::default()
        .nodes(1, 2)
        .service("other", |_| {})
        .running("other", 1, 1)
        .service("web", |s| s.ports = vec![host_port(9000, Protocol::Tcp)])
        .pending("web", 1);
    world
        .state
        .tasks
        .get_mut(&tid("other", 1))
        .expect("the task exists")
        .status
        .ports = vec![HostPort {
        protocol: Protocol::Tcp,
        target: 80,
        host_port: 9000,
    }];
    assert_eq!(world.schedule().assign, vec![(tid("web", 1), NodeId(2))]);
}

#[test]
fn facts_constraints() {
    let facts = |load1: f64, mem_gib: u64| NodeFacts {
        load1,
        mem_free_bytes: mem_gib * GIB,
        cpus: 4,
    };
    let cases: Vec<(&str, World, Vec<u64>, &str)> = vec![
        (
            "load1 with facts present",
            World::default()
                .nodes(1, 2)
                .facts(1, facts(3.0, 4))
                .facts(2, facts(0.5, 4)),
            vec![2, 2],
            "",
        ),
        (
            "load1 without facts",
            World::default().nodes(1, 2).facts(1, facts(3.0, 4)),
            vec![],
            "no suitable node: 2 failed constraint node.facts.load1<2",
        ),
    ];
    for (name, world, want, why) in cases {
        let plan = world
            .service("web", |s| {
                s.task.placement.constraints = vec!["node.facts.load1<2".into()]
            })
            .pending("web", 2)
            .schedule();
        let got: Vec<u64> = plan.assign.iter().map(|(_, n)| n.0).collect();
        assert_eq!(got, want, "{name}");
        if !why.is_empty() {
            assert_eq!(plan.pending[0].1, why, "{name}");
        }
    }

    let plan = World::default()
        .nodes(1, 3)
        .facts(1, facts(0.0, 0))
        .facts(2, facts(0.0, 1))
        .service("web", |s| {
            s.task.placement.constraints = vec!["node.facts.mem_free>=1G".into()]
        })
        .pending("web", 2)
        .schedule();
    assert_eq!(per_node(&plan), [(2, 2)].into());
}

#[test]
fn global_tasks_keep_their_node_if_it_is_eligible() {
    let world = World::default()
        .nodes(1, 1)
        .node(2, |n| n.availability = Availability::Drain)
        .node(3, |n| {
            n.labels.insert("ssd".into(), "yes".into());
        })
        .node(4, |n| n.description.memory_bytes = GIB)
        .service("agent", |s| {
            s.mode = ServiceMode::Global;
            s.task.resources.reserve_memory_bytes = 2 * GIB;
            s.task.placement.constraints = vec!["node.labels.ssd!=yes".into()];
        })
        .task("agent", 0, Some(1), TaskState::New);
    // Global tasks are told apart by node, not slot: give each its own id.
    let mut world = world;
    for (n, id) in [
        (2, "agent.n2"),
        (3, "agent.n3"),
        (4, "agent.n4"),
        (9, "agent.n9"),
    ] {
        let mut t = world.state.tasks[&tid("agent", 0)].clone();
        t.id = TaskId(id.into());
        t.node_id = Some(NodeId(n));
        world.state.tasks.insert(t.id.clone(), t);
    }
    let plan = world.schedule();
    assert_eq!(plan.assign, vec![(tid("agent", 0), NodeId(1))]);
    assert_eq!(
        reasons(&plan),
        [
            ("agent.n2".into(), "no suitable node: 1 drained".into()),
            (
                "agent.n3".into(),
                "no suitable node: 1 failed constraint node.labels.ssd!=yes".into()
            ),
            (
                "agent.n4".into(),
                "no suitable node: 1 lacked memory".into()
            ),
            (
                "agent.n9".into(),
                "no suitable node: node 0000000000000009 is not in the cluster".into()
            ),
        ]
        .into()
    );
}

#[test]
fn global_task_does_not_count_against_its_own_node() {
    // The task already names node 1; it must not see itself there.
    let plan = World::default()
        .nodes(1, 1)
        .service("agent", |s| {
            s.mode = ServiceMode::Global;
            s.task.placement.max_replicas_per_node = 1;
            s.task.resources.reserve_memory_bytes = 8 * GIB;
            s.ports = vec![host_port(9100, Protocol::Tcp)];
        })
        .task("agent", 0, Some(1), TaskState::Pending)
        .schedule();
    assert_eq!(plan.assign, vec![(tid("agent", 0), NodeId(1))]);
}

#[test]
fn only_tasks_waiting_to_run_are_scheduled() {
    let mut world = World::default()
        .nodes(1, 1)
        .service("web", |_| {})
        .task("web", 1, None, TaskState::New)
        .task("web", 2, None, TaskState::Pending)
        .task("web", 3, Some(1), TaskState::Assigned)
        .task("web", 4, Some(1), TaskState::Running)
        .task("web", 5, None, TaskState::Pending)
        .task("web", 6, None, TaskState::Rejected);
    world
        .state
        .tasks
        .get_mut(&tid("web", 5))
        .expect("the task exists")
        .desired_state = TaskState::Shutdown;
    let plan = world.schedule();
    let placed: Vec<TaskId> = plan.assign.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(placed, vec![tid("web", 1), tid("web", 2)]);
    assert_eq!(plan.pending, vec![]);
}

#[test]
fn a_task_of_a_removed_service_stays_pending() {
    let mut world = World::default()
        .nodes(1, 1)
        .service("web", |_| {})
        .pending("web", 1);
    world.state.services.clear();
    let plan = world.schedule();
    assert_eq!(
        plan.pending,
        vec![(tid("web", 1), "service web not found".into())]
    );
}

#[test]
fn a_committed_plan_leaves_nothing_to_do() {
    let mut world = World::default()
        .nodes(1, 3)
        .service("web", |s| s.task.placement.max_replicas_per_node = 1)
        .pending("web", 4);
    let plan = world.schedule();
    assert_eq!(plan.assign.len(), 3);
    world.state.apply(&Command::AssignTasks {
        assign: plan.assign,
        pending: plan.pending,
        now_ms: 1,
    });
    // The task left pending already says why: nothing to write again.
    assert!(world.schedule().is_empty());
    assert_eq!(
        world.state.tasks[&tid("web", 4)].status.message,
        "no suitable node: 3 at max replicas per node"
    );
}

#[test]
fn the_same_state_gives_the_same_plan() {
    let world = World::default()
        .nodes(1, 5)
        .node(6, |n| {
            n.labels.insert("zone".into(), "x".into());
        })
        .service("a", |s| {
            s.task.placement.preferences = vec!["node.labels.zone".into()];
            s.task.resources.reserve_memory_bytes = 3 * GIB;
        })
        .pending("a", 9)
        .service("b", |_| {})
        .pending("b", 7);
    let first = world.schedule();
    for _ in 0..5 {
        assert_eq!(world.schedule(), first);
    }
}

#[test]
fn a_constraint_that_no_longer_parses_never_matches() {
    // Only a spec stored by an older version can hold one: the API refuses it.
    let bad = Constraint::read("node.labels.zone=a");
    assert!(bad.why().is_some());
    let world = World::default()
        .nodes(1, 2)
        .service("web", |s| s.task.placement.constraints = vec![bad.clone()])
        .pending("web", 1);
    let plan = world.schedule();
    assert!(plan.assign.is_empty());
    assert_eq!(
        reasons(&plan),
        [(
            "web.01".into(),
            "task.placement.constraints[0]: \"node.labels.zone=a\": expected KEY==VALUE, \
             KEY!=VALUE, or a comparison <,<=,>,>= on node.facts.*"
                .into()
        )]
        .into()
    );
    // A global service is eligible nowhere; with a good constraint instead, it is.
    let svc = &world.state.services[&ServiceId("web".into())];
    let n = node(1);
    assert!(!bad.matches(&n, None));
    assert!(!eligible(svc, &n, None));
    let mut good = svc.clone();
    good.spec.task.placement.constraints = vec!["node.hostname==n1".into()];
    assert!(eligible(&good, &n, None));
}

/// A node declaring `gpus` GPUs.
fn gpus(n: &mut Node, gpus: u64) {
    n.description
        .generic_resources
        .insert("gpu".to_string(), gpus);
}

#[test]
fn generic_resources_land_only_where_some_are_free_and_never_over_commit() {
    // Node 1 has 2 GPUs, node 2 has 1, node 3 none. Five tasks wanting one GPU each:
    // three fit, two stay pending; no node gets more than it declares.
    let plan = World::default()
        .node(1, |n| gpus(n, 2))
        .node(2, |n| gpus(n, 1))
        .node(3, |_| {})
        .service("train", |s| {
            s.task
                .resources
                .generic_resources
                .insert("gpu".to_string(), 1);
        })
        .pending("train", 5)
        .schedule();
    assert_eq!(per_node(&plan), [(1, 2), (2, 1)].into());
    assert_eq!(
        reasons(&plan),
        [
            (
                "train.04".to_string(),
                "no suitable node: 3 lacked gpu".to_string()
            ),
            (
                "train.05".to_string(),
                "no suitable node: 3 lacked gpu".to_string()
            ),
        ]
        .into()
    );
}

#[test]
fn generic_resources_held_by_running_tasks_count() {
    // A running task already holds node 1's only GPU: the new one goes to node 2, and
    // a task asking for two fits nowhere.
    let plan = World::default()
        .node(1, |n| gpus(n, 1))
        .node(2, |n| gpus(n, 1))
        .service("a", |s| {
            s.task
                .resources
                .generic_resources
                .insert("gpu".to_string(), 1);
        })
        .running("a", 1, 1)
        .task("a", 2, None, TaskState::New)
        .service("b", |s| {
            s.task
                .resources
                .generic_resources
                .insert("gpu".to_string(), 2);
        })
        .pending("b", 1)
        .schedule();
    assert_eq!(plan.assign, vec![(tid("a", 2), NodeId(2))]);
    assert_eq!(
        reasons(&plan),
        [(
            "b.01".to_string(),
            "no suitable node: 2 lacked gpu".to_string()
        )]
        .into()
    );
}

#[test]
fn a_task_without_generic_resources_ignores_them() {
    let plan = World::default()
        .node(1, |_| {})
        .service("web", |_| {})
        .pending("web", 2)
        .schedule();
    assert_eq!(per_node(&plan), [(1, 2)].into());
}

/// A service `db` whose volume `pgdata` follows its task, with its slot 1's data on
/// node `home`, and a new task of slot 1 waiting.
fn following(home: u64) -> World {
    let mut w = World::default().nodes(1, 3).service("db", |s| {
        s.task.container.mounts = vec![crate::store::service::Mount::following("pgdata", "/data")];
    });
    // Two busy nodes elsewhere would win the spread without the home rule: node 3 is
    // the emptiest.
    w = w
        .service("other", |_| {})
        .running("other", 1, home)
        .running("other", 2, home);
    w.state.volume_homes.insert(
        (ServiceId("db".into()), 1),
        crate::store::volume::VolumeHome {
            service_id: ServiceId("db".into()),
            slot: 1,
            node: NodeId(home),
            task: TaskId("old".into()),
            generation: 0,
            stale: vec![],
            since_ms: 0,
        },
    );
    w.pending("db", 1)
}

#[test]
fn a_following_volume_brings_its_task_home_waits_for_a_down_home_and_else_moves() {
    // Home can take it: there, though the spread would choose another node.
    let plan = following(1).schedule();
    assert_eq!(plan.assign, vec![(tid("db", 1), NodeId(1))]);
    // Control: without the home, the spread picks an emptier node.
    let mut w = following(1);
    w.state.volume_homes.clear();
    assert_ne!(w.schedule().assign[0].1, NodeId(1));
    // Home drained: elsewhere (the agent copies from it).
    let mut w = following(1);
    w.state.nodes.get_mut(&NodeId(1)).unwrap().availability = Availability::Drain;
    let plan = w.schedule();
    assert_eq!(plan.assign.len(), 1);
    assert_ne!(plan.assign[0].1, NodeId(1));
    // Home down: nowhere, saying why.
    let mut w = following(1);
    w.state.nodes.get_mut(&NodeId(1)).unwrap().status = NodeStatus::Down;
    let plan = w.schedule();
    assert!(plan.assign.is_empty());
    assert!(
        reasons(&plan)[&tid("db", 1).0].starts_with("volume pgdata is on n1, which is down"),
        "{:?}",
        reasons(&plan)
    );
    // --force-new-volume: anywhere up.
    w.state
        .tasks
        .update_all(|t| std::sync::Arc::make_mut(&mut t.spec).force_new_volume = 1);
    let plan = w.schedule();
    assert_eq!(plan.assign.len(), 1);
    assert_ne!(plan.assign[0].1, NodeId(1));
}

/// A small deterministic random source for generated worlds.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// A world of a few nodes (some drained or down, of varying memory, in two zones) and
/// services with reservations, limits per node, constraints, host ports, preferences
/// and tasks of two specs (as in an update), some already running.
fn generated(rng: &mut Rng) -> World {
    let mut w = World::default();
    for id in 1..=1 + rng.below(12) {
        let (memory, zone, state) = (1 + rng.below(8), rng.below(2), rng.below(8));
        w = w.node(id, |n| {
            n.description.memory_bytes = memory * GIB;
            n.labels
                .insert("zone".into(), if zone == 0 { "a" } else { "b" }.into());
            match state {
                0 => n.status = NodeStatus::Down,
                1 => n.availability = Availability::Drain,
                _ => {}
            }
        });
    }
    for i in 0..1 + rng.below(5) {
        let name = format!("s{i}");
        let (memory, max, constraint, port, prefs) = (
            rng.below(3),
            rng.below(4),
            rng.below(4) == 0,
            rng.below(5) == 0,
            rng.below(5) == 0,
        );
        w = w.service(&name, |s| {
            s.task.resources.reserve_memory_bytes = memory * GIB;
            s.task.placement.max_replicas_per_node = max;
            if constraint {
                s.task.placement.constraints = vec!["node.labels.zone == a".into()];
            }
            if port {
                s.ports = vec![host_port(8000 + i as u16, Protocol::Tcp)];
            }
            if prefs {
                s.task.placement.preferences = vec!["node.labels.zone".into()];
            }
        });
        let nodes = w.state.nodes.len() as u64;
        for slot in 1..=rng.below(16) {
            match rng.below(4) {
                0 => w = w.running(&name, slot, 1 + rng.below(nodes)),
                _ => w = w.task(&name, slot, None, TaskState::New),
            }
            // Half the waiting tasks of some services ask for less: an update's two specs.
            if rng.below(3) == 0 {
                if let Some(mut t) = w.state.tasks.get_mut(&tid(&name, slot)) {
                    std::sync::Arc::make_mut(&mut t.spec)
                        .resources
                        .reserve_memory_bytes /= 2;
                }
            }
        }
    }
    w
}

#[test]
fn ranking_the_nodes_once_per_run_places_exactly_as_checking_every_node_per_task() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut placed, mut left) = (0, 0);
    for round in 0..500 {
        let w = generated(&mut rng);
        let fast = schedule_with(&w.state, &w.facts, true);
        let slow = schedule_with(&w.state, &w.facts, false);
        assert_eq!(fast, slow, "world {round}");
        placed += fast.assign.len();
        left += fast.pending.len();
    }
    // The worlds place many tasks and leave some pending, so both paths were exercised.
    assert!(
        placed > 1000 && left > 100,
        "{placed} placed, {left} pending"
    );
}
