//! Networks: create, remove, and the checks that keep every service's networks in the
//! table (a service names only networks that exist; a network in use stays).
//!
//! The control API checks the same at the door, but only apply sees the order in which
//! writes land: a `network rm` racing a `service create` naming that network must not
//! leave a service on a missing network, so both checks are made here again.

use super::Applied;
use crate::store::network::MAX_NETWORKS;
use crate::store::*;

impl State {
    /// Why `network` cannot join the table beside `also` (networks created in the same
    /// entry before it), or `None` when it can.
    pub(super) fn network_refusal(&self, network: &Network, also: &[&Network]) -> Option<String> {
        let name = &network.spec.name;
        if network.id.is_default() || name == network::DEFAULT_NETWORK {
            return Some(format!(
                "network {name}: {:?} is the cluster's built-in network",
                network::DEFAULT_NETWORK
            ));
        }
        let stored = self.networks.values();
        if stored
            .clone()
            .chain(also.iter().copied())
            .any(|n| &n.spec.name == name)
        {
            return Some(format!("network {name} already exists"));
        }
        if self.networks.contains_key(&network.id) || also.iter().any(|n| n.id == network.id) {
            return Some(format!("network id {} is taken", network.id));
        }
        if self.networks.len() + also.len() >= MAX_NETWORKS {
            return Some(format!(
                "network {name}: the cluster holds {MAX_NETWORKS} networks, the most it may"
            ));
        }
        None
    }

    /// Why `spec` cannot be stored: a network it names that `exists` does not know.
    pub(super) fn missing_network(
        spec: &ServiceSpec,
        exists: impl Fn(&NetworkId) -> bool,
    ) -> Option<String> {
        spec.networks
            .iter()
            .find(|a| !a.network.is_default() && !exists(&a.network))
            .map(|a| {
                format!(
                    "service {}: networks: network {} not found (removed meanwhile?)",
                    spec.name, a.network
                )
            })
    }

    /// The services of `services` on network `id`, by name, sorted; one whose previous
    /// spec alone names it is on it too (a rollback would put it back), and is shown so.
    pub fn network_users<'a>(
        id: &NetworkId,
        services: impl Iterator<Item = &'a Service>,
    ) -> Vec<String> {
        Self::users_of(services, |spec| {
            spec.networks.iter().any(|a| &a.network == id)
        })
    }

    /// The services of `services` whose spec satisfies `on`, by name, sorted; one whose
    /// previous spec alone does is shown so (a rollback would put it back).
    pub fn users_of<'a>(
        services: impl Iterator<Item = &'a Service>,
        on: impl Fn(&ServiceSpec) -> bool,
    ) -> Vec<String> {
        let mut users: Vec<String> = services
            .filter_map(|s| {
                if on(&s.spec) {
                    Some(s.spec.name.clone())
                } else if s.previous_spec.as_ref().is_some_and(&on) {
                    Some(format!(
                        "{} (its previous spec, for a rollback)",
                        s.spec.name
                    ))
                } else {
                    None
                }
            })
            .collect();
        users.sort();
        users
    }

    /// Why network `id` cannot be removed: it is missing, built in, or some service of
    /// `services` is on it (named; see [`State::network_users`]).
    pub(super) fn network_removal_refusal<'a>(
        &self,
        id: &NetworkId,
        services: impl Iterator<Item = &'a Service>,
    ) -> Option<String> {
        if id.is_default() {
            return Some(format!(
                "network {}: the cluster's built-in network cannot be removed",
                network::DEFAULT_NETWORK
            ));
        }
        let Some(n) = self.networks.get(id) else {
            return Some(format!("network {id} not found"));
        };
        let users = Self::network_users(id, services);
        if users.is_empty() {
            None
        } else {
            Some(format!(
                "network {} is in use by service{} {}",
                n.spec.name,
                if users.len() == 1 { "" } else { "s" },
                users.join(", ")
            ))
        }
    }

    /// Applies [`Command::CreateNetwork`].
    pub(super) fn create_network(&mut self, network: &Network) -> Applied {
        if let Some(why) = self.network_refusal(network, &[]) {
            return (Response::Rejected(why), vec![]);
        }
        self.networks.insert(network.id.clone(), network.clone());
        (Response::Ok, vec![network_key(&network.id)])
    }

    /// Applies [`Command::RemoveNetwork`].
    pub(super) fn remove_network(&mut self, id: &NetworkId) -> Applied {
        if let Some(why) = self.network_removal_refusal(id, self.services.values()) {
            return (Response::Rejected(why), vec![]);
        }
        self.networks.remove(id);
        (Response::Ok, vec![network_key(id)])
    }
}
