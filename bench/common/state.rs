//! A builder shared by the benches that make large states through the store
//! (`backup.rs`, `passes.rs`).

use orc::store::{NodeId, Service, Task, TaskId, TaskState, TaskStatus};

/// A running task of `sv` (the `i`th service) in `slot` on `node`, made from the
/// service's spec.
pub fn running_task(i: usize, sv: &Service, slot: u64, node: NodeId) -> Task {
    Task {
        id: TaskId(format!("{i:012x}{slot:012x}")),
        service_id: sv.id.clone(),
        service_name: sv.spec.name.clone(),
        slot,
        node_id: Some(node),
        spec_version: 1,
        spec: sv.spec.task.clone().into(),
        desired_state: TaskState::Running,
        status: TaskStatus::new(TaskState::Running, "started", 2),
        created_ms: 1,
        vip: String::new(),
        endpoint: None,
    }
}

/// A ready node `id` at `addr` with 8 CPUs and 16 GiB, hostname `hostID`.
pub fn ready_node(id: u64, addr: String, role: orc::store::Role) -> orc::store::Node {
    let mut n = orc::store::Node::new(
        NodeId(id),
        addr,
        role,
        orc::store::NodeDescription {
            hostname: format!("host{id}"),
            cpus: 8,
            memory_bytes: 16 << 30,
            ..Default::default()
        },
        1,
    );
    n.status = orc::store::NodeStatus::Ready;
    n
}

/// The `i`th service of a large state: the spec template under test, named `svcNNNNN`,
/// its image one of 50; `edit` adjusts its spec.
pub fn service(i: usize, edit: impl FnOnce(&mut orc::store::ServiceSpec)) -> Service {
    let mut spec: orc::store::ServiceSpec =
        serde_json::from_str(include_str!("../../tests/spec_template.json")).expect("template");
    spec.name = format!("svc{i:05}");
    spec.task.container.image = format!("registry.example/app{}:1.{i}", i % 50);
    edit(&mut spec);
    Service {
        id: orc::store::ServiceId(format!("{i:024x}")),
        spec,
        previous_spec: None,
        version: 1,
        created_ms: 1,
        updated_ms: 1,
        vip: String::new(),
    }
}
