//! Test builders of state objects, shared by the unit tests of every part that reads
//! the state tables (events, the dashboard, ...).

use super::service::ServiceMode;
use super::*;

/// A replicated service `name` of `replicas`, id `id-NAME`, version 1.
pub fn service(name: &str, replicas: u64) -> Service {
    Service {
        id: ServiceId(format!("id-{name}")),
        spec: ServiceSpec {
            name: name.into(),
            labels: Default::default(),
            mode: ServiceMode::Replicated { replicas },
            task: Default::default(),
            ports: vec![],
            expose: vec![],
            update: Default::default(),
            rollback: Default::default(),
            depends_on: vec![],
            endpoint_mode: Default::default(),
            networks: Default::default(),
        },
        previous_spec: None,
        version: 1,
        created_ms: 0,
        updated_ms: 0,
        vip: String::new(),
    }
}

/// A pending task `id` of `svc` in `slot`, on no node, desired running.
pub fn task(id: &str, svc: &Service, slot: u64) -> Task {
    Task {
        id: TaskId(id.into()),
        service_id: svc.id.clone(),
        service_name: svc.spec.name.clone(),
        slot,
        node_id: None,
        spec_version: 1,
        spec: Default::default(),
        desired_state: TaskState::Running,
        status: TaskStatus::new(TaskState::Pending, "", 0),
        created_ms: 0,
        vip: String::new(),
        endpoint: None,
    }
}

/// A ready worker `id`, hostname `hostID`, at `10.0.0.ID:4242`.
pub fn node(id: u64) -> Node {
    let d = NodeDescription {
        hostname: format!("host{id}"),
        ..Default::default()
    };
    Node::new(NodeId(id), format!("10.0.0.{id}:4242"), Role::Worker, d, 0)
}

/// An initialised cluster `c1` without autolock (its sealed values are placeholders).
pub fn cluster() -> Cluster {
    Cluster {
        vip_cursor: 0,
        id: "c1".into(),
        ca_cert_pem: "cert".into(),
        ca_key: Sealed::from_stored("00"),
        worker_secret: Sealed::from_stored("01"),
        manager_secret: Sealed::from_stored("02"),
        unlock_key: None,
        settings: Settings::default(),
        created_ms: 1,
    }
}

/// A state of cluster `c1` with nodes 1–3, services `s0`–`s2` and their tasks `t0`–`t8`
/// (task `i` of service `i % 3`, slot `i`), created running through
/// [`Command::CreateTasks`] on the node `node_of(i)` gives. Returns the state, the
/// services and the task ids.
pub fn three_services_on_three_nodes(
    node_of: impl Fn(usize) -> u64,
) -> (State, Vec<Service>, Vec<TaskId>) {
    let mut s = State {
        cluster: Some(cluster()),
        ..Default::default()
    };
    for n in 1..=3 {
        s.nodes.insert(NodeId(n), node(n));
    }
    let svcs: Vec<Service> = (0..3).map(|k| service(&format!("s{k}"), 3)).collect();
    for svc in &svcs {
        s.services.insert(svc.id.clone(), svc.clone());
    }
    let ids: Vec<TaskId> = (0..9).map(|i| TaskId(format!("t{i}"))).collect();
    let tasks = (0..9)
        .map(|i| {
            let mut t = task(&ids[i].0, &svcs[i % 3], i as u64);
            t.node_id = Some(NodeId(node_of(i)));
            t.status.state = TaskState::Running;
            t
        })
        .collect();
    s.apply(&Command::CreateTasks { tasks });
    (s, svcs, ids)
}
