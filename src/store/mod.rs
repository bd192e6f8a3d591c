//! The replicated state tables.
//!
//! Every manager holds the same [`State`]: the cluster object (its id, root CA, join-token
//! secrets and settings) and the node table. It changes only by applying a [`Command`]
//! that Raft has committed, so [`State::apply`] is a pure, deterministic function: time
//! comes inside the command (`now_ms`, stamped by the proposer), never from the clock.
//!
//! Ownership of fields, as in SwarmKit: the control API writes a node's *spec*
//! (`role`, `availability`, `labels`), the dispatcher writes its *status* (`status`,
//! `description`, `last_seen_ms`). Each has its own command, so neither can clobber the
//! other's fields.
//!
//! Keys: [`State::apply`] returns the keys it changed, what the leader's components
//! ([`changes`]) and the events look at. Data dirs of before also stored each key's JSON
//! value in sled (the `sm` tree, read once at start by `crate::raft::state_machine`,
//! which now keeps the state in memory and writes it as snapshots). The keys:
//!
//! | key             | value                          |
//! |-----------------|--------------------------------|
//! | `cluster`       | JSON [`Cluster`]               |
//! | `node/<id hex>` | JSON [`Node`]                  |
//! | `service/<id>`  | JSON [`Service`]               |
//! | `task/<id>`     | JSON [`Task`]                  |
//! | `update/<id>`   | JSON [`UpdateStatus`] of the service `<id>` |
//! | `request/<id>`  | JSON [`AppliedRequest`]: a control write applied, and its reply |
//! | `ca_rotation`   | JSON [`rotation::CaRotation`]: a root CA rotation in progress |
//! | `pin/<id>`      | JSON [`ImagePin`] of the service `<id>` ([`image`]) |
//! | `network/<id>`  | JSON [`Network`] ([`network`]) |
//! | `secret/<id>`   | JSON [`Secret`] of kind secret ([`secret`]; its content sealed) |
//! | `config/<id>`   | JSON [`Secret`] of kind config (its content sealed too) |
//! | `volume/<id>/<slot>` | JSON [`volume::VolumeHome`]: the node holding a slot's following volumes |
//!
//! A service's update status lives beside it rather than in it: the control API starts
//! an update in the same command that changes the spec ([`Command::UpdateService`] whose
//! task spec, ports or networks differ, [`Command::RollbackService`]), and the orchestrator
//! records progress with [`Command::SetUpdateStatus`], each applied only if the service
//! still has the version it was computed for.
//!
//! Files, one per concept: [`node`](Node) and `cluster` (the objects), `command` (what
//! changes them), `apply/` (one file per table: how each command changes it), and
//! [`service`], [`task`], [`network`], [`image`], [`vip`], [`rotation`], [`request`],
//! [`constraint`], [`sealed`].
//!
//! Networks: [`Command::CreateNetwork`] and [`Command::RemoveNetwork`]; apply refuses a
//! service naming a network that is not there and the removal of a network a service
//! (or its previous spec) is on, so no order of racing writes leaves a service on a
//! missing network.
//!
//! Exactly once: a control write is proposed inside [`Command::Once`], which records its
//! request id (and reply) under `request/<id>` in the same entry, and applies nothing
//! when the id is already there (see [`request`]).

mod apply;
pub mod changes;
mod cluster;
mod command;
pub mod constraint;
pub mod events;
#[cfg(test)]
pub mod fixtures;
pub mod image;
pub mod network;
mod node;
pub mod request;
pub mod rotation;
pub mod sealed;
pub mod secret;
pub mod service;
pub mod task;
pub mod tasks;
pub mod vip;
pub mod volume;

use std::collections::{BTreeMap, BTreeSet};

pub use cluster::{Cluster, Settings};
pub use command::{Command, Response, SecretUpdate};
pub use constraint::{Condition, Constraint, Preference};
pub use image::ImagePin;
pub use network::{Network, NetworkAttachment, NetworkId, NetworkSpec, TaskAddress};
pub use node::{Availability, Node, NodeDescription, NodeId, NodeStatus, Role};
pub use request::{AppliedRequest, RequestId};
pub use sealed::Sealed;
pub use secret::{Secret, SecretId, SecretRef};
pub use service::{Service, ServiceId, ServiceSpec, UpdateStatus};
pub use task::{Task, TaskEndpoint, TaskId, TaskState, TaskStatus};
pub use tasks::Tasks;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The applied state tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The cluster object, once initialised.
    pub cluster: Option<Cluster>,
    /// Nodes by id.
    pub nodes: BTreeMap<NodeId, Node>,
    /// Services by id.
    #[serde(default)]
    pub services: BTreeMap<ServiceId, Service>,
    /// Tasks by id, indexed by service ([`tasks`]).
    #[serde(default)]
    pub tasks: Tasks,
    /// Update statuses by service (a service that was never updated has none).
    #[serde(default)]
    pub update_status: BTreeMap<ServiceId, UpdateStatus>,
    /// Control writes applied recently, by request id (see [`request`]).
    #[serde(default)]
    pub requests: BTreeMap<RequestId, AppliedRequest>,
    /// A root CA rotation in progress (see [`rotation`]).
    #[serde(default)]
    pub ca_rotation: Option<rotation::CaRotation>,
    /// Image pins by service ([`image`]; written by the dispatcher's status command,
    /// dropped when the service's image changes or the service goes).
    #[serde(default)]
    pub image_pins: BTreeMap<ServiceId, ImagePin>,
    /// Networks by id (the built-in [`network::DEFAULT_NETWORK`] is not stored: see
    /// [`State::network`]).
    #[serde(default)]
    pub networks: BTreeMap<NetworkId, Network>,
    /// Secrets by id ([`secret`]).
    #[serde(default)]
    pub secrets: BTreeMap<SecretId, Secret>,
    /// Configs by id.
    #[serde(default)]
    pub configs: BTreeMap<SecretId, Secret>,
    /// Where the following volumes of each slot live ([`volume`]).
    #[serde(default)]
    pub volume_homes: volume::Homes,
    /// What changed when, for the leader's passes ([`changes`]; not stored).
    #[serde(skip)]
    pub changes: changes::Changes,
}

/// The key of the cluster object (what [`State::apply`] reports changed).
pub const CLUSTER_KEY: &str = "cluster";

/// The key of a node (what [`State::apply`] reports changed).
pub fn node_key(id: NodeId) -> String {
    format!("node/{id}")
}

/// The key of a service (what [`State::apply`] reports changed).
pub fn service_key(id: &ServiceId) -> String {
    format!("service/{id}")
}

/// The key of a network (what [`State::apply`] reports changed).
pub fn network_key(id: &NetworkId) -> String {
    format!("network/{id}")
}

/// The key of a secret (or config) (what [`State::apply`] reports changed).
pub fn secret_key(kind: secret::Kind, id: &SecretId) -> String {
    format!("{kind}/{id}")
}

/// The key of a service's image pin (what [`State::apply`] reports changed).
pub fn pin_key(id: &ServiceId) -> String {
    format!("pin/{id}")
}

/// The key of a service's update status (what [`State::apply`] reports changed).
pub fn update_key(id: &ServiceId) -> String {
    format!("update/{id}")
}

/// The key of a task (what [`State::apply`] reports changed).
pub fn task_key(id: &TaskId) -> String {
    format!("task/{id}")
}

impl State {
    /// The network `id`: a stored one, or the built-in default network.
    pub fn network(&self, id: &NetworkId) -> Option<Network> {
        if id.is_default() {
            return Some(Network::default_network());
        }
        self.networks.get(id).cloned()
    }

    /// The network named or identified by `name_or_id` (a name first, as Docker looks
    /// names up first), the built-in one included.
    pub fn network_named(&self, name_or_id: &str) -> Option<Network> {
        if name_or_id == network::DEFAULT_NETWORK {
            return Some(Network::default_network());
        }
        self.networks
            .values()
            .find(|n| n.spec.name == name_or_id)
            .or_else(|| self.networks.get(&NetworkId(name_or_id.to_string())))
            .cloned()
    }

    /// Every network, the built-in one first.
    pub fn all_networks(&self) -> Vec<Network> {
        std::iter::once(Network::default_network())
            .chain(self.networks.values().cloned())
            .collect()
    }

    /// The services on network `id`, by name.
    pub fn services_on(&self, id: &NetworkId) -> Vec<String> {
        let mut out: Vec<String> = self
            .services
            .values()
            .filter(|s| s.spec.attachments().iter().any(|a| &a.network == id))
            .map(|s| s.spec.name.clone())
            .collect();
        out.sort();
        out
    }

    /// The next free virtual IP of the cluster's range, or empty when the range is
    /// full (counted by [`crate::metrics::state::count`]: `orc_tasks_without_vip`);
    /// moves the cursor (and adds the cluster's key to `keys` when it does). An
    /// address is in use when a task holds it (the task table's index, which holds the
    /// address given once the task is in) or a service does: `used` is the services'
    /// addresses in the range, read on the first call of a command. (A pass over every
    /// task for each address, then for each command, was what the managers spent their
    /// time on creating tasks.)
    fn allocate_vip(
        &mut self,
        used: &mut Option<BTreeSet<std::net::Ipv4Addr>>,
        keys: &mut Vec<String>,
    ) -> String {
        let Some(c) = self.cluster.as_ref() else {
            return String::new();
        };
        let Ok(range) = vip::VipRange::parse(&c.settings.vip_range) else {
            return String::new();
        };
        let used = used.get_or_insert_with(|| self.service_vips_in(&range));
        let tasks = &self.tasks;
        // A full range is known without a look at each of its addresses: 100,000 tasks
        // in the default /16 (65,533 addresses) scanned all of it for each task past
        // the 65,533rd.
        if Self::vips_left(&range, used.len(), tasks) == 0 {
            return String::new();
        }
        let Some((ip, cursor)) =
            range.allocate(c.vip_cursor, |ip| used.contains(&ip) || tasks.holds_vip(ip))
        else {
            return String::new();
        };
        if let Some(c) = self.cluster.as_mut() {
            c.vip_cursor = cursor;
        }
        if !keys.iter().any(|k| k == CLUSTER_KEY) {
            keys.push(CLUSTER_KEY.into());
        }
        ip.to_string()
    }

    /// The services' virtual IPs in `range` (a service whose address is outside the
    /// range, given before the range was chosen, takes none of it).
    fn service_vips_in(&self, range: &vip::VipRange) -> BTreeSet<std::net::Ipv4Addr> {
        self.services
            .values()
            .filter_map(|s| s.vip.parse().ok())
            .filter(|ip| range.contains(*ip))
            .collect()
    }

    /// Addresses of `range` no service (`services` of them in it) and no task holds.
    fn vips_left(range: &vip::VipRange, services: usize, tasks: &tasks::Tasks) -> usize {
        (range.capacity() as usize).saturating_sub(services + tasks.vips_held())
    }

    /// The addresses of the cluster's virtual IP range nobody holds, `None` without a
    /// cluster or range (`orc_vips_free`); what [`Self::allocate_vip`] counts on.
    pub fn vips_free(&self) -> Option<usize> {
        let c = self.cluster.as_ref()?;
        let range = vip::VipRange::parse(&c.settings.vip_range).ok()?;
        Some(Self::vips_left(
            &range,
            self.service_vips_in(&range).len(),
            &self.tasks,
        ))
    }

    /// The JSON value now stored under `key`, `None` if the key is absent.
    pub fn value_of(&self, key: &str) -> Option<Vec<u8>> {
        if key == CLUSTER_KEY {
            return self
                .cluster
                .as_ref()
                .map(|c| serde_json::to_vec(c).expect("cluster encodes"));
        }
        if let Some(id) = key.strip_prefix("service/") {
            return self
                .services
                .get(&ServiceId(id.to_string()))
                .map(|s| serde_json::to_vec(s).expect("service encodes"));
        }
        if let Some(id) = key.strip_prefix("task/") {
            return self
                .tasks
                .get(&TaskId(id.to_string()))
                .map(|t| serde_json::to_vec(t).expect("task encodes"));
        }
        if let Some(id) = key.strip_prefix("update/") {
            return self
                .update_status
                .get(&ServiceId(id.to_string()))
                .map(|u| serde_json::to_vec(u).expect("update status encodes"));
        }
        if key == rotation::ROTATION_KEY {
            return self
                .ca_rotation
                .as_ref()
                .map(|r| serde_json::to_vec(r).expect("rotation encodes"));
        }
        if let Some(id) = key.strip_prefix("request/") {
            return self
                .requests
                .get(&RequestId(id.to_string()))
                .map(|r| serde_json::to_vec(r).expect("applied request encodes"));
        }
        if let Some(id) = key.strip_prefix("pin/") {
            return self
                .image_pins
                .get(&ServiceId(id.to_string()))
                .map(|p| serde_json::to_vec(p).expect("image pin encodes"));
        }
        if let Some(rest) = key.strip_prefix("volume/") {
            let (id, slot) = rest.rsplit_once('/')?;
            return self
                .volume_homes
                .get(&(ServiceId(id.to_string()), slot.parse().ok()?))
                .map(|h| serde_json::to_vec(h).expect("volume home encodes"));
        }
        if let Some(id) = key.strip_prefix("network/") {
            return self
                .networks
                .get(&NetworkId(id.to_string()))
                .map(|n| serde_json::to_vec(n).expect("network encodes"));
        }
        for kind in [secret::Kind::Secret, secret::Kind::Config] {
            if let Some(id) = key.strip_prefix(&format!("{kind}/")) {
                return self
                    .table(kind)
                    .get(&SecretId(id.to_string()))
                    .map(|s| serde_json::to_vec(s).expect("secret encodes"));
            }
        }
        let id = key.strip_prefix("node/")?.parse::<NodeId>().ok()?;
        self.nodes
            .get(&id)
            .map(|n| serde_json::to_vec(n).expect("node encodes"))
    }

    /// Loads one `sm` key/value pair (the inverse of [`State::value_of`]); other keys are
    /// ignored.
    pub fn load(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.changes.all();
        if key == CLUSTER_KEY {
            self.cluster = Some(serde_json::from_slice(value)?);
        } else if key.starts_with("node/") {
            let n: Node = serde_json::from_slice(value)?;
            self.nodes.insert(n.id, n);
        } else if key.starts_with("network/") {
            let n: Network = serde_json::from_slice(value)?;
            self.networks.insert(n.id.clone(), n);
        } else if key.starts_with("service/") {
            let sv: Service = serde_json::from_slice(value)?;
            self.services.insert(sv.id.clone(), sv);
        } else if key.starts_with("task/") {
            let t: Task = serde_json::from_slice(value)?;
            self.tasks.insert(t.id.clone(), t);
        } else if let Some(id) = key.strip_prefix("update/") {
            let u: UpdateStatus = serde_json::from_slice(value)?;
            self.update_status.insert(ServiceId(id.to_string()), u);
        } else if key == rotation::ROTATION_KEY {
            self.ca_rotation = Some(serde_json::from_slice(value)?);
        } else if let Some(id) = key.strip_prefix("request/") {
            let r: AppliedRequest = serde_json::from_slice(value)?;
            self.requests.insert(RequestId(id.to_string()), r);
        } else if let Some(id) = key.strip_prefix("pin/") {
            let p: ImagePin = serde_json::from_slice(value)?;
            self.image_pins.insert(ServiceId(id.to_string()), p);
        } else if key.starts_with("volume/") {
            let h: volume::VolumeHome = serde_json::from_slice(value)?;
            self.volume_homes.insert((h.service_id.clone(), h.slot), h);
        } else if key.starts_with("secret/") || key.starts_with("config/") {
            let sec: Secret = serde_json::from_slice(value)?;
            self.table_mut(sec.kind).insert(sec.id.clone(), sec);
        }
        Ok(())
    }

    /// Drops the image pin of service `id` if it is for another image than the
    /// service's spec now names (an update, rollback or stack deploy changed it).
    fn drop_stale_pin(&mut self, id: &ServiceId, keys: &mut Vec<String>) {
        let image = self.services.get(id).map(|s| &s.spec.task.container.image);
        if self
            .image_pins
            .get(id)
            .is_some_and(|p| Some(&p.image) != image)
        {
            self.image_pins.remove(id);
            keys.push(pin_key(id));
        }
    }

    /// The pin of `t`'s service if it is for `t`'s image (a task of an older spec,
    /// with another image, has none).
    pub fn pin_for(&self, t: &Task) -> Option<&ImagePin> {
        self.image_pins
            .get(&t.service_id)
            .filter(|p| p.image == t.spec.container.image)
    }

    /// The managers, in id order.
    pub fn managers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values().filter(|n| n.role == Role::Manager)
    }

    /// Every key that [`State::value_of`] would give a value for (for snapshots).
    pub fn keys(&self) -> Vec<String> {
        let mut keys = vec![];
        if self.cluster.is_some() {
            keys.push(CLUSTER_KEY.to_string());
        }
        keys.extend(self.nodes.keys().map(|id| node_key(*id)));
        keys.extend(self.services.keys().map(service_key));
        keys.extend(self.tasks.keys().map(task_key));
        keys.extend(self.update_status.keys().map(update_key));
        keys.extend(self.requests.keys().map(request::request_key));
        if self.ca_rotation.is_some() {
            keys.push(rotation::ROTATION_KEY.into());
        }
        keys.extend(self.image_pins.keys().map(pin_key));
        keys.extend(self.networks.keys().map(network_key));
        keys.extend(
            self.volume_homes
                .keys()
                .map(|(id, slot)| volume::home_key(id, *slot)),
        );
        for kind in [secret::Kind::Secret, secret::Kind::Config] {
            keys.extend(self.table(kind).keys().map(|id| secret_key(kind, id)));
        }
        keys
    }

    /// The table of secrets or of configs.
    pub fn table(&self, kind: secret::Kind) -> &BTreeMap<SecretId, Secret> {
        match kind {
            secret::Kind::Secret => &self.secrets,
            secret::Kind::Config => &self.configs,
        }
    }

    /// The table of secrets or of configs, to change.
    pub fn table_mut(&mut self, kind: secret::Kind) -> &mut BTreeMap<SecretId, Secret> {
        match kind {
            secret::Kind::Secret => &mut self.secrets,
            secret::Kind::Config => &mut self.configs,
        }
    }

    /// The secret (or config) named or identified by `name_or_id` (a name first).
    pub fn secret_named(&self, kind: secret::Kind, name_or_id: &str) -> Option<&Secret> {
        let t = self.table(kind);
        t.values()
            .find(|s| s.name == name_or_id)
            .or_else(|| t.get(&SecretId(name_or_id.to_string())))
    }

    /// Finds a service by id, unique id prefix or name.
    pub fn find_service(&self, what: &str) -> Result<&Service> {
        if let Some(s) = self.services.values().find(|s| s.spec.name == what) {
            return Ok(s);
        }
        let by_prefix: Vec<&Service> = self
            .services
            .values()
            .filter(|s| !what.is_empty() && s.id.0.starts_with(what))
            .collect();
        match by_prefix.len() {
            1 => Ok(by_prefix[0]),
            0 => Err(Error::NotFound(format!("service {what} not found"))),
            _ => Err(Error::InvalidInput(format!(
                "service {what} is ambiguous: give more of its id"
            ))),
        }
    }

    /// The tasks of a service.
    pub fn tasks_of<'a>(&'a self, id: &'a ServiceId) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks.of_service(id)
    }

    /// Finds a node by full id, unique id prefix or hostname.
    pub fn find_node(&self, what: &str) -> Result<&Node> {
        if let Ok(id) = what.parse::<NodeId>() {
            if what.len() == 16 {
                if let Some(n) = self.nodes.get(&id) {
                    return Ok(n);
                }
            }
        }
        let by_prefix: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| n.id.to_string().starts_with(what))
            .collect();
        if by_prefix.len() == 1 {
            return Ok(by_prefix[0]);
        }
        let by_name: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| n.description.hostname == what)
            .collect();
        match (by_prefix.len(), by_name.len()) {
            (_, 1) => Ok(by_name[0]),
            (0, 0) => Err(Error::NotFound(format!("node {what} not found"))),
            _ => Err(Error::InvalidInput(format!(
                "node {what} is ambiguous: give more of its id"
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
