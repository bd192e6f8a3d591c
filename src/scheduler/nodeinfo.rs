//! What the scheduler knows of one node while it builds a plan.
//!
//! A [`NodeInfo`] starts from the store: the node itself, its live facts, and what the
//! tasks that occupy it add up to ([`crate::store::tasks::Occupancy`], kept by the task
//! table as tasks change): every task bound to the node (status Assigned or later)
//! that is not terminal, whatever its desired state, since a task being stopped still
//! holds its memory and its ports until it is gone. Each placement the plan makes is
//! then added with [`NodeInfo::add`], so the next task of the same plan sees it. The
//! host ports the tasks hold are read from the tasks themselves, and only for a plan
//! that has a task asking for one ([`NodeInfo::hold_ports`]).

use std::collections::{BTreeMap, BTreeSet};

use super::NodeFacts;
use crate::store::service::{Protocol, Resources, ServiceSpec};
use crate::store::tasks::Occupancy;
use crate::store::{Node, Service, ServiceId, Task};

/// A host port: the published port and its protocol.
pub(crate) type HostPort = (u16, Protocol);

/// One node and what occupies it.
#[derive(Debug, Clone)]
pub(crate) struct NodeInfo<'a> {
    /// The node.
    pub node: &'a Node,
    /// Its live facts, if the leader has heard them.
    pub facts: Option<&'a NodeFacts>,
    /// CPU reserved by the tasks on it, in 1e-9 CPUs.
    pub reserved_nano_cpus: u64,
    /// Memory reserved by the tasks on it, bytes.
    pub reserved_memory_bytes: u64,
    /// Tasks on it, all services.
    pub tasks: usize,
    /// What occupied it before the plan, as the task table keeps it.
    occupied: Option<&'a Occupancy>,
    /// Tasks the plan added to it, by service.
    added_by_service: BTreeMap<ServiceId, usize>,
    /// Host ports bound by the tasks on it.
    pub host_ports: BTreeSet<HostPort>,
    /// Generic resources reserved by the tasks on it: kind → count.
    pub reserved_generic: BTreeMap<String, u64>,
}

impl<'a> NodeInfo<'a> {
    /// A node with nothing on it yet.
    pub fn new(node: &'a Node, facts: Option<&'a NodeFacts>) -> Self {
        NodeInfo {
            node,
            facts,
            reserved_nano_cpus: 0,
            reserved_memory_bytes: 0,
            tasks: 0,
            occupied: None,
            added_by_service: BTreeMap::new(),
            host_ports: BTreeSet::new(),
            reserved_generic: BTreeMap::new(),
        }
    }

    /// A node with what occupies it (sums above `u64::MAX` count as `u64::MAX`).
    pub fn occupied(
        node: &'a Node,
        facts: Option<&'a NodeFacts>,
        occupied: Option<&'a Occupancy>,
    ) -> Self {
        let mut info = NodeInfo::new(node, facts);
        if let Some(o) = occupied {
            let sat = |n: u128| u64::try_from(n).unwrap_or(u64::MAX);
            info.tasks = o.tasks;
            info.reserved_nano_cpus = sat(o.reserved_nano_cpus);
            info.reserved_memory_bytes = sat(o.reserved_memory_bytes);
            info.reserved_generic = o
                .reserved_generic
                .iter()
                .map(|(k, n)| (k.clone(), sat(*n)))
                .collect();
            info.occupied = Some(o);
        }
        info
    }

    /// Counts the host ports a task that occupies the node holds.
    pub fn hold_ports(&mut self, host_ports: &[HostPort]) {
        self.host_ports.extend(host_ports.iter().copied());
    }

    /// Counts one more task on the node.
    pub fn add(&mut self, service: &ServiceId, resources: &Resources, host_ports: &[HostPort]) {
        self.reserved_nano_cpus = self
            .reserved_nano_cpus
            .saturating_add(resources.reserve_nano_cpus);
        self.reserved_memory_bytes = self
            .reserved_memory_bytes
            .saturating_add(resources.reserve_memory_bytes);
        self.tasks += 1;
        *self.added_by_service.entry(service.clone()).or_default() += 1;
        self.host_ports.extend(host_ports.iter().copied());
        for (kind, n) in &resources.generic_resources {
            let r = self.reserved_generic.entry(kind.clone()).or_default();
            *r = r.saturating_add(*n);
        }
    }

    /// How many of generic resource `kind` the node has left (0 for a kind it does not
    /// declare).
    pub fn free_generic(&self, kind: &str) -> u64 {
        let have = self
            .node
            .description
            .generic_resources
            .get(kind)
            .copied()
            .unwrap_or(0);
        have.saturating_sub(self.reserved_generic.get(kind).copied().unwrap_or(0))
    }

    /// Tasks of `service` on the node.
    pub fn service_tasks(&self, service: &ServiceId) -> usize {
        let before = self
            .occupied
            .and_then(|o| o.by_service.get(service))
            .copied()
            .unwrap_or(0);
        before + self.added_by_service.get(service).copied().unwrap_or(0)
    }

    /// CPU not yet reserved, in 1e-9 CPUs.
    pub fn free_nano_cpus(&self) -> u64 {
        (u64::from(self.node.description.cpus) * 1_000_000_000)
            .saturating_sub(self.reserved_nano_cpus)
    }

    /// Memory not yet reserved, bytes.
    pub fn free_memory_bytes(&self) -> u64 {
        self.node
            .description
            .memory_bytes
            .saturating_sub(self.reserved_memory_bytes)
    }
}

pub(crate) use crate::store::tasks::occupies_node;

/// The host ports a spec asks for: published ports in host mode.
pub(crate) fn wanted_host_ports(spec: &ServiceSpec) -> Vec<HostPort> {
    spec.ports
        .iter()
        .filter(|p| p.is_host_published())
        .map(|p| (p.published, p.protocol))
        .collect()
}

/// The host ports a task already on a node holds: those its endpoint publishes in host
/// mode ([`Task::endpoint`]), and those its agent reported as bound.
pub(crate) fn bound_host_ports(service: Option<&Service>, task: &Task) -> Vec<HostPort> {
    let mut ports = BTreeSet::new();
    ports.extend(
        task.endpoint(service)
            .ports
            .iter()
            .filter(|p| p.is_host_published())
            .map(|p| (p.published, p.protocol)),
    );
    ports.extend(
        task.status
            .ports
            .iter()
            .filter(|p| p.host_port != 0)
            .map(|p| (p.host_port, p.protocol)),
    );
    ports.into_iter().collect()
}
