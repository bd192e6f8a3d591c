//! The endpoint table: what the mesh routes, computed on the leader from the store and
//! sent to every node with its session. Pure.

use serde::{Deserialize, Serialize};

use crate::store::service::{PortConfig, Protocol, PublishMode};
use crate::store::task::HostPort;
use crate::store::{NodeStatus, State, TaskState};

/// A task that can take traffic: the node's IP and the host ports Docker mapped there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Backend {
    /// The task.
    pub task_id: String,
    /// Its node's IP (from the node's cluster address).
    pub ip: String,
    /// Container port → host port on that node.
    pub ports: Vec<HostPort>,
}

/// One service's published ports and backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEndpoint {
    /// Service id.
    pub id: String,
    /// Service name.
    pub name: String,
    /// Its ingress-published ports.
    pub ports: Vec<PortConfig>,
    /// Running tasks, in task id order.
    pub backends: Vec<Backend>,
}

/// Every service with ingress ports.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Endpoints {
    /// By service id.
    pub services: Vec<ServiceEndpoint>,
}

/// A route of the mesh: a published port and the addresses that serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// tcp or udp.
    pub protocol: Protocol,
    /// The port every node listens on.
    pub published: u16,
    /// The service, for logs.
    pub service: String,
    /// `IP:PORT` of each backend.
    pub backends: Vec<String>,
}

/// The table from the store: a task is a backend while it is desired and observed
/// running on a node that is not down. A task told to stop leaves the table at once,
/// before its agent stops it.
pub fn endpoints(state: &State) -> Endpoints {
    let mut services = vec![];
    for svc in state.services.values() {
        let ports: Vec<PortConfig> = svc
            .spec
            .ports
            .iter()
            .filter(|p| p.mode == PublishMode::Ingress && p.published != 0)
            .cloned()
            .collect();
        if ports.is_empty() {
            continue;
        }
        let mut backends: Vec<Backend> = state
            .tasks_of(&svc.id)
            .filter(|t| {
                t.desired_state == TaskState::Running && t.status.state == TaskState::Running
            })
            .filter_map(|t| {
                let node = state.nodes.get(&t.node_id?)?;
                if node.status == NodeStatus::Down {
                    return None;
                }
                let ip = node.addr.rsplit_once(':').map(|(ip, _)| ip)?.to_string();
                Some(Backend {
                    task_id: t.id.0.clone(),
                    ip,
                    ports: t.status.ports.clone(),
                })
            })
            .collect();
        backends.sort();
        services.push(ServiceEndpoint {
            id: svc.id.0.clone(),
            name: svc.spec.name.clone(),
            ports,
            backends,
        });
    }
    Endpoints { services }
}

impl Endpoints {
    /// The routes a node serves: one per published port.
    pub fn routes(&self) -> Vec<Route> {
        let mut out = vec![];
        for s in &self.services {
            for p in &s.ports {
                let backends = s
                    .backends
                    .iter()
                    .filter_map(|b| {
                        b.ports
                            .iter()
                            .find(|h| h.target == p.target && h.protocol == p.protocol)
                            .map(|h| format!("{}:{}", b.ip, h.host_port))
                    })
                    .collect();
                out.push(Route {
                    protocol: p.protocol,
                    published: p.published,
                    service: s.name.clone(),
                    backends,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::service::*;
    use crate::store::*;

    fn node(id: u64, status: NodeStatus) -> Node {
        Node {
            status,
            ..Node::new(
                NodeId(id),
                format!("10.0.0.{id}:4242"),
                Role::Worker,
                Default::default(),
                0,
            )
        }
    }

    fn task(id: &str, node: u64, desired: TaskState, state: TaskState, host_port: u16) -> Task {
        let mut status = TaskStatus::new(state, "", 0);
        status.ports = vec![HostPort {
            protocol: Protocol::Tcp,
            target: 80,
            host_port,
        }];
        Task {
            id: TaskId(id.into()),
            service_id: ServiceId("s".into()),
            service_name: "web".into(),
            slot: 1,
            node_id: Some(NodeId(node)),
            spec_version: 1,
            spec: TaskSpec::default(),
            desired_state: desired,
            status,
            created_ms: 0,
        }
    }

    #[test]
    fn only_running_tasks_on_live_nodes_serve_and_stopping_ones_leave_first() {
        let mut s = State::default();
        s.nodes.insert(NodeId(1), node(1, NodeStatus::Ready));
        s.nodes.insert(NodeId(2), node(2, NodeStatus::Down));
        s.services.insert(
            ServiceId("s".into()),
            Service {
                id: ServiceId("s".into()),
                spec: ServiceSpec {
                    name: "web".into(),
                    labels: Default::default(),
                    mode: ServiceMode::Replicated { replicas: 3 },
                    task: TaskSpec::default(),
                    ports: vec![
                        PortConfig {
                            protocol: Protocol::Tcp,
                            target: 80,
                            published: 8080,
                            mode: PublishMode::Ingress,
                        },
                        PortConfig {
                            protocol: Protocol::Tcp,
                            target: 80,
                            published: 9090,
                            mode: PublishMode::Host,
                        },
                    ],
                    expose: vec![],
                    update: UpdateConfig::default(),
                    rollback: UpdateConfig::default(),
                },
                previous_spec: None,
                version: 1,
                created_ms: 0,
                updated_ms: 0,
            },
        );
        for t in [
            task("a", 1, TaskState::Running, TaskState::Running, 30001),
            task("b", 1, TaskState::Shutdown, TaskState::Running, 30002),
            task("c", 1, TaskState::Running, TaskState::Starting, 30003),
            task("d", 2, TaskState::Running, TaskState::Running, 30004),
        ] {
            s.tasks.insert(t.id.clone(), t);
        }
        let routes = endpoints(&s).routes();
        assert_eq!(
            routes,
            vec![Route {
                protocol: Protocol::Tcp,
                published: 8080,
                service: "web".into(),
                backends: vec!["10.0.0.1:30001".into()],
            }]
        );
    }
}
