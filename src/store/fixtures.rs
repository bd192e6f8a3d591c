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
