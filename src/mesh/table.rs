//! The endpoint table: what the mesh routes, computed on the leader from the store and
//! sent to every node with its session. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::store::service::{EndpointMode, PortConfig, Protocol, ProxyProtocol};
use crate::store::task::HostPort;
use crate::store::{
    NetworkAttachment, NetworkId, NodeId, NodeStatus, ServiceId, State, TaskAddress, TaskState,
};

/// The DNS zone of the cluster: a stack's short names live in `<stack>.<ZONE>`.
pub const ZONE: &str = "orc.internal";

/// A task that can take traffic: the node's IP and the host ports Docker mapped there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Backend {
    /// The task.
    pub task_id: String,
    /// Its node's IP (from the node's cluster address).
    pub ip: String,
    /// Container port → host port on that node.
    pub ports: Vec<HostPort>,
    /// The task's own virtual IP (empty: none).
    #[serde(default)]
    pub vip: String,
    /// Its node.
    #[serde(default)]
    pub node_id: u64,
    /// Its node's data-path port (0: none).
    #[serde(default)]
    pub data_port: u16,
    /// Its container's address on each of its networks, on its node.
    #[serde(default)]
    pub addresses: Vec<TaskAddress>,
}

/// One service: its virtual IP, published ports and backends.
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
    /// Its virtual IP (empty: none).
    #[serde(default)]
    pub vip: String,
    /// Its stack (empty: none).
    #[serde(default)]
    pub stack: String,
    /// What its name resolves to: its VIP, or its tasks' VIPs (`dnsrr`).
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
    /// The networks it is on (never empty: the built-in one when it names none).
    #[serde(default)]
    pub networks: Vec<NetworkAttachment>,
}

/// A network, as the mesh needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointNetwork {
    /// Id.
    pub id: NetworkId,
    /// Name.
    pub name: String,
    /// No route out of the cluster.
    pub internal: bool,
    /// Carried between nodes through mutual TLS.
    pub encrypted: bool,
}

/// Every service, and where the cluster's virtual IPs come from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Endpoints {
    /// By service id. Each shared with the tables before and after while it does not
    /// change: the leader keeps several tables (each session's last, the view's), and
    /// a table made again when one service changes copied 100,000 backends.
    pub services: Vec<Arc<ServiceEndpoint>>,
    /// The cluster's VIP range (empty: no service discovery).
    #[serde(default)]
    pub vip_range: String,
    /// The networks the services are on, by id.
    #[serde(default)]
    pub networks: Vec<EndpointNetwork>,
}

/// Where the mesh sends a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// An address this node connects to itself: its own task's container address (or,
    /// for a task of a node without a data path, the port Docker published there).
    Direct(String),
    /// A task of another node, through that node's data path ([`super::tunnel`]).
    Tunnel {
        /// The node.
        node_id: NodeId,
        /// Its data-path address.
        node: std::net::SocketAddr,
        /// The task, port and network.
        target: super::tunnel::Target,
        /// Through mutual TLS.
        encrypted: bool,
    },
}

impl From<&str> for Dest {
    fn from(addr: &str) -> Self {
        Dest::Direct(addr.to_string())
    }
}

impl From<String> for Dest {
    fn from(addr: String) -> Self {
        Dest::Direct(addr)
    }
}

impl Dest {
    /// How the destination is shown and told apart: `IP:PORT`, or
    /// `NODE_IP:DATA_PORT→TASK:PORT` (with `/tls` when encrypted).
    pub fn key(&self) -> String {
        match self {
            Dest::Direct(a) => a.clone(),
            Dest::Tunnel {
                node,
                target,
                encrypted,
                ..
            } => format!(
                "{node}→{}:{}{}",
                target.task,
                target.port,
                if *encrypted { "/tls" } else { "" }
            ),
        }
    }
}

/// A route of the mesh: where a node listens and the addresses that serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// tcp or udp.
    pub protocol: Protocol,
    /// `None`: every address of the node (a published port); `Some`: a virtual IP.
    pub vip: Option<Ipv4Addr>,
    /// The port listened on: the published port, or the container port on a VIP.
    pub port: u16,
    /// The service (and task, for a task VIP), for logs and views.
    pub service: String,
    /// Each backend.
    pub backends: Vec<Dest>,
    /// PROXY protocol header sent to backends.
    pub proxy: ProxyProtocol,
    /// Who may connect: `None`, anyone (a published port); `Some`, only this node's
    /// containers on one of these networks (a VIP).
    pub networks: Option<Vec<NetworkId>>,
}

/// The table from the store: a task is a backend while it is desired and observed
/// running on a node that is not down. A task told to stop leaves the table at once,
/// before its agent stops it.
pub fn endpoints(state: &State) -> Endpoints {
    let services = state
        .services
        .values()
        .map(|svc| Arc::new(service_endpoint(state, svc)))
        .collect();
    whole(state, services)
}

/// The table with `services`, and the range and networks of `state`.
fn whole(state: &State, services: Vec<Arc<ServiceEndpoint>>) -> Endpoints {
    let vip_range = state
        .cluster
        .as_ref()
        .map(|c| c.settings.vip_range.clone())
        .unwrap_or_default();
    let used: BTreeSet<&NetworkId> = services
        .iter()
        .flat_map(|s| s.networks.iter().map(|a| &a.network))
        .collect();
    let networks = used
        .into_iter()
        .filter_map(|id| state.network(id))
        .map(|n| EndpointNetwork {
            id: n.id,
            name: n.spec.name,
            internal: n.spec.internal,
            encrypted: n.spec.encrypted,
        })
        .collect();
    Endpoints {
        services,
        vip_range,
        networks,
    }
}

/// The entry of one service: its running tasks (from the task table's index by
/// service, not a walk of every task).
pub fn service_endpoint(state: &State, svc: &crate::store::Service) -> ServiceEndpoint {
    let ports: Vec<PortConfig> = svc
        .spec
        .ports
        .iter()
        .filter(|p| p.is_ingress())
        .cloned()
        .collect();
    let mut backends: Vec<Backend> = state
        .tasks
        .of_service(&svc.id)
        .filter(|t| t.desired_state == TaskState::Running && t.status.state == TaskState::Running)
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
                vip: t.vip.clone(),
                node_id: node.id.0,
                data_port: node.description.data_port,
                addresses: t.status.addresses.clone(),
            })
        })
        .collect();
    backends.sort();
    ServiceEndpoint {
        id: svc.id.0.clone(),
        name: svc.spec.name.clone(),
        ports,
        backends,
        vip: svc.vip.clone(),
        stack: svc.spec.stack().to_string(),
        endpoint_mode: svc.spec.endpoint_mode,
        networks: svc.spec.attachments(),
    }
}

/// The table of `state` made from `prev`, the table of an earlier state of the same
/// process, and what changed since that one ([`crate::store::Changes::since`]): only
/// the services that changed are made again, and only they are compared. `None` when
/// the table is `prev`'s; else the table and what changed from `prev`. The same as
/// [`endpoints`] and [`Endpoints::changes_from`], without a walk of every task and a
/// comparison of every backend ten times a second at 30,000 tasks.
pub fn endpoints_after(
    state: &State,
    prev: &Endpoints,
    changed: &crate::store::changes::Changed,
) -> Option<(Endpoints, EndpointChanges)> {
    use crate::store::changes::Changed;
    let Changed::Services(ids) = changed else {
        let table = endpoints(state);
        if table == *prev {
            return None;
        }
        let changes = table.changes_from(prev);
        return Some((table, changes));
    };
    let before: BTreeMap<&str, &Arc<ServiceEndpoint>> =
        prev.services.iter().map(|s| (s.id.as_str(), s)).collect();
    let removed: Vec<String> = prev
        .services
        .iter()
        .filter(|s| !state.services.contains_key(&ServiceId(s.id.clone())))
        .map(|s| s.id.clone())
        .collect();
    let mut services = Vec::with_capacity(state.services.len());
    let (mut old_part, mut new_part) = (Vec::new(), Vec::new());
    for svc in state.services.values() {
        match before.get(svc.id.0.as_str()) {
            Some(old) if !ids.contains(&svc.id) => services.push(Arc::clone(old)),
            old => {
                let e = service_endpoint(state, svc);
                match old {
                    // Unchanged: the old one, shared.
                    Some(o) if ***o == e => services.push(Arc::clone(o)),
                    _ => {
                        let e = Arc::new(e);
                        old_part.extend(old.map(|o| Arc::clone(o)));
                        new_part.push(Arc::clone(&e));
                        services.push(e);
                    }
                }
            }
        }
    }
    if new_part.is_empty() && removed.is_empty() {
        return None;
    }
    let table = whole(state, services);
    let mut changes = Endpoints {
        services: new_part,
        ..Default::default()
    }
    .changes_from(&Endpoints {
        services: old_part,
        ..Default::default()
    });
    changes.removed = removed;
    changes.changed.vip_range = table.vip_range.clone();
    changes.changed.networks = table.networks.clone();
    Some((table, changes))
}

/// How node `me` reaches container port `target` of backend `b` of service `s`: its
/// own tasks at their container address, other nodes' tasks through their node's data
/// path, on the service's first encrypted network if it has one (encrypted), else on
/// its first network; a node without a data path through the port Docker published
/// there, if any. `None` when the task does not expose the port.
fn reach(
    s: &ServiceEndpoint,
    b: &Backend,
    protocol: Protocol,
    target: u16,
    me: Option<NodeId>,
    encrypted: &BTreeSet<&NetworkId>,
) -> Option<Dest> {
    let exposes = b
        .ports
        .iter()
        .find(|h| h.target == target && h.protocol == protocol)?;
    if me.is_some_and(|me| me.0 == b.node_id) {
        if let Some(a) = b.addresses.iter().find(|a| !a.ip.is_empty()) {
            return Some(Dest::Direct(format!("{}:{target}", a.ip)));
        }
    }
    if b.data_port != 0 {
        if let Ok(ip) = b.ip.parse::<std::net::IpAddr>() {
            let secret = s.networks.iter().find(|a| encrypted.contains(&a.network));
            let network = secret.or(s.networks.first())?;
            return Some(Dest::Tunnel {
                node_id: NodeId(b.node_id),
                node: std::net::SocketAddr::new(ip, b.data_port),
                target: super::tunnel::Target {
                    protocol,
                    port: target,
                    network: network.network.0.clone(),
                    task: crate::store::TaskId(b.task_id.clone()),
                },
                encrypted: secret.is_some(),
            });
        }
    }
    (exposes.host_port != 0).then(|| Dest::Direct(format!("{}:{}", b.ip, exposes.host_port)))
}

/// What changed from one endpoint table to the next, as a session sends it to a node
/// instead of the whole table ([`Endpoints::changes_from`], [`Endpoints::apply_changes`]).
/// A service whose own fields did not change carries only its backends that are new
/// or changed, and the ids of those gone: while tasks start, nearly every service
/// changes within a moment, and a service whole each time was the whole table (30,000
/// backends at 300 nodes) sent to every node ten times a second.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointChanges {
    /// New or changed services; `vip_range` and `networks` as in the new table. A
    /// service named in `backends_gone` holds only its new or changed backends; any
    /// other is whole.
    pub changed: Endpoints,
    /// Ids of the services gone.
    pub removed: Vec<String>,
    /// By service id: the services of `changed` sent by backend, and the task ids of
    /// their backends gone.
    pub backends_gone: BTreeMap<String, Vec<String>>,
}

impl ServiceEndpoint {
    /// A copy without its backends.
    fn clone_but_backends(&self) -> ServiceEndpoint {
        ServiceEndpoint {
            id: self.id.clone(),
            name: self.name.clone(),
            ports: self.ports.clone(),
            backends: vec![],
            vip: self.vip.clone(),
            stack: self.stack.clone(),
            endpoint_mode: self.endpoint_mode,
            networks: self.networks.clone(),
        }
    }

    /// True if the two differ in their backends at most.
    fn same_but_backends(&self, o: &ServiceEndpoint) -> bool {
        self.id == o.id
            && self.name == o.name
            && self.ports == o.ports
            && self.vip == o.vip
            && self.stack == o.stack
            && self.endpoint_mode == o.endpoint_mode
            && self.networks == o.networks
    }
}

impl Endpoints {
    /// What changed from `old` to this table. Pure; O(services + backends).
    pub fn changes_from(&self, old: &Endpoints) -> EndpointChanges {
        let before: BTreeMap<&str, &Arc<ServiceEndpoint>> =
            old.services.iter().map(|s| (s.id.as_str(), s)).collect();
        let now: BTreeSet<&str> = self.services.iter().map(|s| s.id.as_str()).collect();
        let mut services = vec![];
        let mut backends_gone = BTreeMap::new();
        for s in &self.services {
            match before.get(s.id.as_str()) {
                Some(o) if *o == s => {}
                Some(o) if s.same_but_backends(o) => {
                    let had: BTreeMap<&str, &Backend> =
                        o.backends.iter().map(|b| (b.task_id.as_str(), b)).collect();
                    let has: BTreeSet<&str> =
                        s.backends.iter().map(|b| b.task_id.as_str()).collect();
                    backends_gone.insert(
                        s.id.clone(),
                        o.backends
                            .iter()
                            .filter(|b| !has.contains(b.task_id.as_str()))
                            .map(|b| b.task_id.clone())
                            .collect(),
                    );
                    services.push(Arc::new(ServiceEndpoint {
                        backends: s
                            .backends
                            .iter()
                            .filter(|b| had.get(b.task_id.as_str()) != Some(b))
                            .cloned()
                            .collect(),
                        ..s.clone_but_backends()
                    }));
                }
                _ => services.push(s.clone()),
            }
        }
        EndpointChanges {
            changed: Endpoints {
                services,
                vip_range: self.vip_range.clone(),
                networks: self.networks.clone(),
            },
            removed: old
                .services
                .iter()
                .filter(|s| !now.contains(s.id.as_str()))
                .map(|s| s.id.clone())
                .collect(),
            backends_gone,
        }
    }

    /// This table with `c` applied: the table [`Endpoints::changes_from`] was taken
    /// from. Services stay in id order and backends in task order, as the leader makes
    /// them. False (and the table is left as it was) when `c` changes by backend a
    /// service this table does not have: changes taken from another table.
    pub fn apply_changes(&mut self, c: EndpointChanges) -> bool {
        let held: BTreeSet<&str> = self.services.iter().map(|s| s.id.as_str()).collect();
        if c.backends_gone.keys().any(|id| !held.contains(id.as_str())) {
            return false;
        }
        let removed: BTreeSet<&str> = c.removed.iter().map(String::as_str).collect();
        let mut by_id: BTreeMap<String, Arc<ServiceEndpoint>> = std::mem::take(&mut self.services)
            .into_iter()
            .filter(|s| !removed.contains(s.id.as_str()))
            .map(|s| (s.id.clone(), s))
            .collect();
        for s in c.changed.services {
            let gone = c.backends_gone.get(&s.id);
            let old = by_id.remove(&s.id);
            let s = match (gone, old) {
                (Some(gone), Some(old)) => {
                    let gone: BTreeSet<&str> = gone.iter().map(String::as_str).collect();
                    let mut backends: BTreeMap<String, Backend> = Arc::unwrap_or_clone(old)
                        .backends
                        .into_iter()
                        .filter(|b| !gone.contains(b.task_id.as_str()))
                        .map(|b| (b.task_id.clone(), b))
                        .collect();
                    let s = Arc::unwrap_or_clone(s);
                    for b in s.backends {
                        backends.insert(b.task_id.clone(), b);
                    }
                    // Task ids are unique and lead `Backend`'s order: id order is its order.
                    let backends = backends.into_values().collect();
                    Arc::new(ServiceEndpoint { backends, ..s })
                }
                _ => s,
            };
            by_id.insert(s.id.clone(), s);
        }
        self.services = by_id.into_values().collect();
        self.vip_range = c.changed.vip_range;
        self.networks = c.changed.networks;
        true
    }

    /// The routes node `me` serves (`None`: a node that is no task's, as in tests):
    /// each published port on every address; each port the tasks of a service expose
    /// (published targets, `--expose`, the image's EXPOSE) on the service's VIP,
    /// balanced over its tasks; and the same ports on each task's own VIP, to that task
    /// alone. VIP routes answer only containers on one of the service's networks.
    pub fn routes(&self, me: Option<NodeId>) -> Vec<Route> {
        let encrypted: BTreeSet<&NetworkId> = self
            .networks
            .iter()
            .filter(|n| n.encrypted)
            .map(|n| &n.id)
            .collect();
        let mut out = vec![];
        for s in &self.services {
            let nets: Vec<NetworkId> = s.networks.iter().map(|a| a.network.clone()).collect();
            for p in &s.ports {
                out.push(Route {
                    protocol: p.protocol,
                    vip: None,
                    port: p.published,
                    service: s.name.clone(),
                    backends: s
                        .backends
                        .iter()
                        .filter_map(|b| reach(s, b, p.protocol, p.target, me, &encrypted))
                        .collect(),
                    proxy: p.proxy_protocol,
                    networks: None,
                });
            }
            let exposed: BTreeSet<(Protocol, u16)> = s
                .backends
                .iter()
                .flat_map(|b| b.ports.iter().map(|h| (h.protocol, h.target)))
                .collect();
            if let Ok(vip) = s.vip.parse::<Ipv4Addr>() {
                for &(protocol, port) in &exposed {
                    out.push(Route {
                        protocol,
                        vip: Some(vip),
                        port,
                        service: s.name.clone(),
                        backends: s
                            .backends
                            .iter()
                            .filter_map(|b| reach(s, b, protocol, port, me, &encrypted))
                            .collect(),
                        proxy: ProxyProtocol::None,
                        networks: Some(nets.clone()),
                    });
                }
            }
            for b in &s.backends {
                let Ok(vip) = b.vip.parse::<Ipv4Addr>() else {
                    continue;
                };
                for h in &b.ports {
                    out.push(Route {
                        protocol: h.protocol,
                        vip: Some(vip),
                        port: h.target,
                        service: format!("{}/{}", s.name, b.task_id),
                        backends: reach(s, b, h.protocol, h.target, me, &encrypted)
                            .into_iter()
                            .collect(),
                        proxy: ProxyProtocol::None,
                        networks: Some(nets.clone()),
                    });
                }
            }
        }
        out
    }

    /// The names the cluster DNS answers on each network: [`Endpoints::names`] of the
    /// services on it, plus each service's aliases there (answering as its name does).
    pub fn names_by_network(&self) -> BTreeMap<NetworkId, BTreeMap<String, Vec<Ipv4Addr>>> {
        let mut out: BTreeMap<NetworkId, BTreeMap<String, Vec<Ipv4Addr>>> = BTreeMap::new();
        for s in &self.services {
            let one = Endpoints {
                services: vec![s.clone()],
                vip_range: String::new(),
                networks: vec![],
            };
            let names = one.names();
            let own = names.get(&s.name.to_ascii_lowercase()).cloned();
            for a in &s.networks {
                let net = out.entry(a.network.clone()).or_default();
                for (name, addrs) in &names {
                    net.entry(name.clone()).or_insert_with(|| addrs.clone());
                }
                if let Some(own) = &own {
                    for alias in &a.aliases {
                        net.entry(alias.to_ascii_lowercase())
                            .or_insert_with(|| own.clone());
                    }
                }
            }
        }
        out
    }

    /// The names the cluster DNS answers (lower case, in [`ZONE`] for stack short
    /// names): `NAME` → the service's VIP (with endpoint mode `dnsrr`: its running
    /// tasks' VIPs, DNS round robin), `tasks.NAME` → its running tasks' VIPs; for a
    /// service `STACK_SHORT` of a stack, also `SHORT.STACK.ZONE` and
    /// `tasks.SHORT.STACK.ZONE`, which containers of the stack reach by `SHORT` and
    /// `tasks.SHORT` through their search domain.
    pub fn names(&self) -> BTreeMap<String, Vec<Ipv4Addr>> {
        let mut out: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
        for s in &self.services {
            let tasks: Vec<Ipv4Addr> = s
                .backends
                .iter()
                .filter_map(|b| b.vip.parse().ok())
                .collect();
            // What NAME answers; a `dnsrr` service answers even with no task running
            // (no addresses), as `tasks.NAME` does.
            let own: Option<Vec<Ipv4Addr>> = match s.endpoint_mode {
                EndpointMode::Vip => s.vip.parse().ok().map(|v| vec![v]),
                EndpointMode::Dnsrr => Some(tasks.clone()),
            };
            let name = s.name.to_ascii_lowercase();
            let mut aliases = vec![name.clone()];
            if !s.stack.is_empty() {
                let prefix = format!("{}_", s.stack.to_ascii_lowercase());
                if let Some(short) = name.strip_prefix(&prefix) {
                    aliases.push(format!("{short}.{}.{ZONE}", s.stack.to_ascii_lowercase()));
                }
            }
            for a in aliases {
                if let Some(own) = &own {
                    out.insert(a.clone(), own.clone());
                }
                out.insert(format!("tasks.{a}"), tasks.clone());
            }
        }
        out
    }

    /// The search domain of a stack's containers.
    pub fn search_domain(stack: &str) -> String {
        format!("{}.{ZONE}", stack.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::service::*;
    use crate::store::*;
    use std::net::Ipv4Addr;

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
            vip: String::new(),
            endpoint: None,
            id: TaskId(id.into()),
            service_id: ServiceId("s".into()),
            service_name: "web".into(),
            slot: 1,
            node_id: Some(NodeId(node)),
            spec_version: 1,
            spec: TaskSpec::default().into(),
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
                vip: String::new(),
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
                            proxy_protocol: Default::default(),
                        },
                        PortConfig {
                            protocol: Protocol::Tcp,
                            target: 80,
                            published: 9090,
                            mode: PublishMode::Host,
                            proxy_protocol: Default::default(),
                        },
                    ],
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
        let routes = endpoints(&s).routes(None);
        assert_eq!(
            routes,
            vec![Route {
                protocol: Protocol::Tcp,
                vip: None,
                port: 8080,
                service: "web".into(),
                backends: vec!["10.0.0.1:30001".into()],
                proxy: ProxyProtocol::None,
                networks: Default::default(),
            }]
        );
    }

    fn backend(task: &str, ip: &str, vip: &str, ports: &[(u16, u16)]) -> Backend {
        Backend {
            task_id: task.into(),
            ip: ip.into(),
            ports: ports
                .iter()
                .map(|&(target, host_port)| HostPort {
                    protocol: Protocol::Tcp,
                    target,
                    host_port,
                })
                .collect(),
            vip: vip.into(),
            addresses: Default::default(),
            data_port: Default::default(),
            node_id: Default::default(),
        }
    }

    fn svc(id: &str, backends: &[&str]) -> Arc<ServiceEndpoint> {
        Arc::new(ServiceEndpoint {
            id: id.into(),
            name: format!("name-{id}"),
            ports: vec![],
            backends: backends
                .iter()
                .map(|t| backend(t, "10.0.0.1", "10.233.0.9", &[(80, 30080)]))
                .collect(),
            vip: "10.233.0.2".into(),
            stack: String::new(),
            endpoint_mode: EndpointMode::Vip,
            networks: Default::default(),
        })
    }

    #[test]
    fn changes_carry_only_what_changed_and_rebuild_the_new_table() {
        let old = Endpoints {
            vip_range: "10.233.0.0/16".into(),
            services: vec![svc("a", &["t1"]), svc("b", &["t2"]), svc("c", &["t3"])],
            networks: Default::default(),
        };
        // b gains a backend, c goes, d comes; a stays as it was.
        let new = Endpoints {
            vip_range: "10.233.0.0/16".into(),
            services: vec![
                svc("a", &["t1"]),
                svc("b", &["t2", "t4"]),
                svc("d", &["t5"]),
            ],
            networks: vec![EndpointNetwork {
                id: NetworkId("n1".into()),
                name: "back".into(),
                internal: false,
                encrypted: false,
            }],
        };
        let c = new.changes_from(&old);
        let ids: Vec<&str> = c.changed.services.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["b", "d"], "only b and d travel");
        assert_eq!(c.removed, ["c"]);
        // b by backend (only t4), d whole.
        assert_eq!(c.changed.services[0].backends.len(), 1);
        assert_eq!(c.changed.services[0].backends[0].task_id, "t4");
        assert_eq!(c.backends_gone.keys().collect::<Vec<_>>(), ["b"]);
        let mut held = old.clone();
        assert!(held.apply_changes(c));
        assert_eq!(held, new);
        // No change: nothing travels.
        let none = new.changes_from(&new);
        assert!(none.changed.services.is_empty() && none.removed.is_empty());
        // Through the wire, as a node receives them.
        let wire: crate::proto::Endpoints = new.changes_from(&old).into();
        assert!(wire.partial);
        let got = super::super::wire::receive(Some(old.clone()), wire.clone()).unwrap();
        assert_eq!(got, Some(new.clone()));
        // Changes with no table to apply them to are refused; a whole table is taken.
        assert_eq!(super::super::wire::receive(None, wire).unwrap(), None);
        let whole: crate::proto::Endpoints = new.clone().into();
        assert_eq!(super::super::wire::receive(None, whole).unwrap(), Some(new));
    }

    #[test]
    fn a_service_changes_by_backend_and_whole_when_more_than_its_backends_change() {
        let old = Endpoints {
            services: vec![svc("a", &["t1", "t2", "t3"]), svc("b", &["t4"])],
            ..Default::default()
        };
        let mut new = old.clone();
        // a: t1 goes, t2 moves (another IP), t5 comes, t3 stays; b is renamed.
        Arc::make_mut(&mut new.services[0]).backends = vec![
            backend("t2", "10.0.0.7", "10.233.0.9", &[(80, 30080)]),
            old.services[0].backends[2].clone(),
            backend("t5", "10.0.0.1", "10.233.0.9", &[(80, 30080)]),
        ];
        Arc::make_mut(&mut new.services[1]).name = "renamed".into();
        let c = new.changes_from(&old);
        let a = &c.changed.services[0];
        let sent: Vec<&str> = a.backends.iter().map(|b| b.task_id.as_str()).collect();
        assert_eq!(sent, ["t2", "t5"], "t3 did not change: it does not travel");
        assert_eq!(c.backends_gone["a"], ["t1"]);
        assert!(!c.backends_gone.contains_key("b"), "b travels whole");
        assert_eq!(c.changed.services[1].backends.len(), 1);
        let mut held = old.clone();
        assert!(held.apply_changes(c.clone()));
        assert_eq!(held, new);
        // Changes by backend for a service the node does not hold are refused, and the
        // table is left as it was (the session starts again from a whole table).
        let mut other = Endpoints {
            services: vec![svc("b", &["t4"])],
            ..Default::default()
        };
        let before = other.clone();
        assert!(!other.apply_changes(c.clone()));
        assert_eq!(other, before);
        let wire: crate::proto::Endpoints = c.into();
        assert_eq!(
            super::super::wire::receive(Some(before), wire).unwrap(),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn changes_from_any_table_rebuild_the_new_one_through_the_wire(
            old in proptest::collection::vec((0u8..5, 0u8..2, proptest::collection::btree_map(0u8..8, 0u8..3, 0..6)), 0..5),
            new in proptest::collection::vec((0u8..5, 0u8..2, proptest::collection::btree_map(0u8..8, 0u8..3, 0..6)), 0..5),
        ) {
            // (service, name, task → IP) triples as tables, by id as the leader makes them.
            let table = |spec: &[(u8, u8, BTreeMap<u8, u8>)]| {
                let by_id: BTreeMap<String, Arc<ServiceEndpoint>> = spec
                    .iter()
                    .map(|(id, name, tasks)| {
                        let id = format!("s{id}");
                        let mut e = svc(&id, &[]);
                        let s = Arc::make_mut(&mut e);
                        s.name = format!("n{name}");
                        s.backends = tasks
                            .iter()
                            .map(|(t, ip)| {
                                backend(&format!("t{t}"), &format!("10.0.0.{ip}"), "", &[(80, 1)])
                            })
                            .collect();
                        (id, e)
                    })
                    .collect();
                Endpoints {
                    services: by_id.into_values().collect(),
                    ..Default::default()
                }
            };
            let (old, new) = (table(&old), table(&new));
            let changes = new.changes_from(&old);
            // The digest of the new table from the old one's and the services changed
            // is the new table's; two tables share one only when they are equal.
            let digest = super::super::wire::Digest::of;
            proptest::prop_assert_eq!(
                digest(&old).after(&old, &new, &changes.service_ids()),
                digest(&new)
            );
            proptest::prop_assert_eq!(digest(&old) == digest(&new), old == new);
            let wire: crate::proto::Endpoints = changes.into();
            let bytes = prost::Message::encode_to_vec(&wire);
            let got = super::super::wire::receive_bytes(Some(old.clone()), &bytes).unwrap();
            proptest::prop_assert_eq!(got, Some(new.clone()));
            // What travels is never more backends than the new table has.
            let sent: usize = wire.services.iter().map(|s| s.backends.len()).sum();
            let all: usize = new.services.iter().map(|s| s.backends.len()).sum();
            proptest::prop_assert!(sent <= all);
        }
    }

    /// One change to the state, as a command applies it.
    #[derive(Debug, Clone)]
    enum Op {
        /// Task `i` observed in a state (0: running, 1: starting, 2: shut down).
        Status(usize, u8),
        /// Task `i` told to stop.
        Stop(usize),
        /// Node `n` down (true) or ready.
        NodeDown(u64, bool),
        /// Service `k` removed.
        RemoveService(usize),
        /// Task `i` deleted.
        Delete(usize),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0usize..9, 0u8..3).prop_map(|(i, s)| Op::Status(i, s)),
            (0usize..9).prop_map(Op::Stop),
            (1u64..4, any::<bool>()).prop_map(|(n, d)| Op::NodeDown(n, d)),
            (0usize..3).prop_map(Op::RemoveService),
            (0usize..9).prop_map(Op::Delete),
        ]
    }

    proptest::proptest! {
        #[test]
        fn the_table_made_from_the_last_one_and_what_changed_is_the_table_made_afresh(
            ops in proptest::collection::vec(op(), 1..12),
        ) {
            use crate::store::{fixtures, Command};
            let (mut s, svcs, ids) = fixtures::three_services_on_three_nodes(|i| i as u64 % 3 + 1);
            let mut table = endpoints(&s);
            let mut generation = s.changes.generation();
            for op in ops {
                let cmd = match op {
                    Op::Status(i, st) => {
                        let Some(t) = s.tasks.get(&ids[i]) else { continue };
                        let mut status = t.status.clone();
                        status.state = [TaskState::Running, TaskState::Starting, TaskState::Shutdown][st as usize];
                        status.timestamp_ms += 1;
                        Command::UpdateTaskStatus { updates: vec![(ids[i].clone(), status)] }
                    }
                    Op::Stop(i) => Command::SetTaskDesired { updates: vec![(ids[i].clone(), TaskState::Shutdown)] },
                    Op::NodeDown(n, down) => Command::UpdateNodeStatus {
                        id: NodeId(n),
                        status: if down { NodeStatus::Down } else { NodeStatus::Ready },
                        description: None,
                        addr: None,
                        now_ms: 1,
                    },
                    Op::RemoveService(k) => Command::RemoveService { id: svcs[k].id.clone() },
                    Op::Delete(i) => Command::DeleteTasks { ids: vec![ids[i].clone()] },
                };
                s.apply(&cmd);
                let fresh = endpoints(&s);
                match endpoints_after(&s, &table, &s.changes.services_since(Some(generation))) {
                    None => proptest::prop_assert_eq!(&fresh, &table, "unchanged after {:?}", cmd),
                    Some((made, changes)) => {
                        proptest::prop_assert_eq!(&made, &fresh, "after {:?}", cmd);
                        // The digest from the last one's and the services changed.
                        let digest = super::super::wire::Digest::of;
                        proptest::prop_assert_eq!(
                            digest(&table).after(&table, &made, &changes.service_ids()),
                            digest(&fresh),
                            "after {:?}",
                            cmd
                        );
                        let mut held = table.clone();
                        proptest::prop_assert!(held.apply_changes(changes));
                        proptest::prop_assert_eq!(&held, &fresh);
                    }
                }
                table = fresh;
                generation = s.changes.generation();
            }
        }
    }

    #[test]
    fn every_exposed_port_answers_on_the_service_vip_and_each_task_vip() {
        let e = Endpoints {
            vip_range: "10.233.0.0/16".into(),
            services: vec![Arc::new(ServiceEndpoint {
                id: "s".into(),
                name: "Db".into(),
                ports: vec![],
                backends: vec![
                    backend(
                        "t1",
                        "10.0.0.1",
                        "10.233.0.3",
                        &[(5432, 30001), (9187, 30002)],
                    ),
                    // Still starting its second port, say: only what Docker mapped counts.
                    backend("t2", "10.0.0.2", "10.233.0.4", &[(5432, 30003)]),
                ],
                vip: "10.233.0.2".into(),
                stack: "shop".into(),
                endpoint_mode: EndpointMode::Vip,
                networks: Default::default(),
            })],
            networks: Default::default(),
        };
        let routes: Vec<(Option<Ipv4Addr>, u16, Vec<String>)> = e
            .routes(None)
            .into_iter()
            .map(|r| (r.vip, r.port, r.backends.iter().map(Dest::key).collect()))
            .collect();
        let ip = |d: u8| Some(Ipv4Addr::new(10, 233, 0, d));
        assert_eq!(
            routes,
            vec![
                (
                    ip(2),
                    5432,
                    vec!["10.0.0.1:30001".into(), "10.0.0.2:30003".into()]
                ),
                (ip(2), 9187, vec!["10.0.0.1:30002".into()]),
                (ip(3), 5432, vec!["10.0.0.1:30001".into()]),
                (ip(3), 9187, vec!["10.0.0.1:30002".into()]),
                (ip(4), 5432, vec!["10.0.0.2:30003".into()]),
            ]
        );
        // Not a stack member by its name: no short name.
        let names = e.names();
        assert_eq!(names["db"], vec![Ipv4Addr::new(10, 233, 0, 2)]);
        assert_eq!(
            names["tasks.db"],
            vec![Ipv4Addr::new(10, 233, 0, 3), Ipv4Addr::new(10, 233, 0, 4)]
        );
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn stack_services_also_answer_by_short_name_in_their_search_domain() {
        let e = Endpoints {
            vip_range: "10.233.0.0/16".into(),
            services: vec![Arc::new(ServiceEndpoint {
                id: "s".into(),
                name: "shop_db".into(),
                ports: vec![],
                backends: vec![backend("t1", "10.0.0.1", "10.233.0.9", &[])],
                vip: "10.233.0.2".into(),
                stack: "shop".into(),
                endpoint_mode: EndpointMode::Vip,
                networks: Default::default(),
            })],
            networks: Default::default(),
        };
        let names = e.names();
        assert_eq!(Endpoints::search_domain("Shop"), "shop.orc.internal");
        assert_eq!(names["shop_db"], vec![Ipv4Addr::new(10, 233, 0, 2)]);
        assert_eq!(
            names["db.shop.orc.internal"],
            vec![Ipv4Addr::new(10, 233, 0, 2)]
        );
        assert_eq!(
            names["tasks.db.shop.orc.internal"],
            vec![Ipv4Addr::new(10, 233, 0, 9)]
        );
        // Backends without ports serve no route, but their names still resolve.
        assert!(e.routes(None).is_empty());
    }

    #[test]
    fn a_dnsrr_service_name_answers_with_its_task_vips() {
        let mut e = Endpoints {
            vip_range: "10.233.0.0/16".into(),
            services: vec![Arc::new(ServiceEndpoint {
                id: "s".into(),
                name: "shop_db".into(),
                ports: vec![],
                backends: vec![
                    backend("t1", "10.0.0.1", "10.233.0.9", &[]),
                    backend("t2", "10.0.0.2", "10.233.0.7", &[]),
                ],
                vip: "10.233.0.2".into(),
                stack: "shop".into(),
                endpoint_mode: EndpointMode::Dnsrr,
                networks: Default::default(),
            })],
            networks: Default::default(),
        };
        let tasks = vec![Ipv4Addr::new(10, 233, 0, 9), Ipv4Addr::new(10, 233, 0, 7)];
        let names = e.names();
        for name in [
            "shop_db",
            "tasks.shop_db",
            "db.shop.orc.internal",
            "tasks.db.shop.orc.internal",
        ] {
            assert_eq!(names[name], tasks, "{name}");
        }
        assert_eq!(names.len(), 4, "{names:?}");
        // No task running: the name exists, with no addresses (not the VIP).
        Arc::make_mut(&mut e.services[0]).backends.clear();
        let names = e.names();
        assert!(names["shop_db"].is_empty());
        assert!(names["db.shop.orc.internal"].is_empty());
    }
}
