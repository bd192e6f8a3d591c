//! Conversions between the state types and their wire views, in one place.

use crate::proto;
use crate::store::{Node, NodeStatus, Role};

/// The control API's view of a node; `leader` is the current Raft leader's id.
pub fn node_info(n: &Node, leader: Option<u64>) -> proto::NodeInfo {
    let manager_status = match n.role {
        Role::Worker => String::new(),
        Role::Manager if Some(n.id.0) == leader => "leader".into(),
        Role::Manager if n.status == NodeStatus::Ready => "reachable".into(),
        Role::Manager => "unreachable".into(),
    };
    proto::NodeInfo {
        id: n.id.to_string(),
        hostname: n.description.hostname.clone(),
        role: n.role.to_string(),
        status: n.status.as_str().into(),
        availability: n.availability.as_str().into(),
        manager_status,
        address: n.addr.clone(),
        labels: n.labels.clone().into_iter().collect(),
        engine_version: n.description.engine_version.clone(),
        cpus: n.description.cpus,
        memory_bytes: n.description.memory_bytes,
        os: n.description.os.clone(),
        arch: n.description.arch.clone(),
        engine_labels: n.description.engine_labels.clone().into_iter().collect(),
        created_ms: n.created_ms,
        status_changed_ms: n.status_changed_ms,
        data_port: n.description.data_port.into(),
        generic_resources: n
            .description
            .generic_resources
            .clone()
            .into_iter()
            .collect(),
    }
}
