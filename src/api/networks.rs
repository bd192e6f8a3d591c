//! Control API operations on networks, run on the leader: create, list, inspect,
//! remove, and the door of service specs that name networks.
//!
//! Clients name networks by name (or id); the store keeps ids ([`resolve`] turns one
//! into the other at the door of `service create`/`update` and `stack deploy`), so a
//! network removed and made again under the same name is another network, as in
//! SwarmKit. Answers name them again ([`service_networks`]).
//!
//! What the door checks, apply checks again (`store::apply::network`): a network in use
//! is not removed, and a service names only networks that exist, whatever the order in
//! which racing writes land.

use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::proto;
use crate::store::network::{resolve_attachments, MAX_NETWORKS};
use crate::store::task::TaskState;
use crate::store::{Command, Network, NetworkId, NetworkSpec, Service, ServiceSpec, State};
use crate::units::now_ms;

/// `spec`'s networks, named by name or id as a client sends them, as ids; see
/// [`resolve_attachments`] for what is refused.
pub fn resolve(state: &State, spec: &mut ServiceSpec) -> Result<()> {
    resolve_attachments(&|name| state.network_named(name), spec)
}

/// The networks `svc` is on, by name, with its aliases and its VIP on each (a service
/// has one VIP, the same on every network).
pub fn service_networks(state: &State, svc: &Service) -> Vec<proto::ServiceNetwork> {
    svc.spec
        .attachments()
        .into_iter()
        .map(|a| proto::ServiceNetwork {
            name: state
                .network(&a.network)
                .map(|n| n.spec.name)
                .unwrap_or_else(|| a.network.0.clone()),
            id: a.network.0,
            aliases: a.aliases,
            vip: svc.vip.clone(),
        })
        .collect()
}

/// The network `what` names (name first, then id).
fn find(state: &State, what: &str) -> Result<Network> {
    state
        .network_named(what)
        .ok_or_else(|| Error::NotFound(format!("network {what} not found")))
}

/// `network create`.
pub async fn create(m: &Manager, spec: proto::NetworkSpec) -> Result<proto::Network> {
    let spec = NetworkSpec::try_from(spec)?;
    spec.validate()?;
    m.read(|s| {
        if s.network_named(&spec.name)
            .is_some_and(|n| n.spec.name == spec.name)
        {
            return Err(Error::Conflict(format!(
                "network {} already exists",
                spec.name
            )));
        }
        if s.networks.len() >= MAX_NETWORKS {
            return Err(Error::Conflict(format!(
                "the cluster holds {MAX_NETWORKS} networks, the most it may: remove one first"
            )));
        }
        Ok(())
    })?;
    let network = Network {
        id: NetworkId::random(),
        spec,
        created_ms: now_ms(),
    };
    let reply = proto::Network::from(network.clone());
    m.propose_replying(Command::CreateNetwork { network }, &reply)
        .await?;
    Ok(reply)
}

/// One network as `network ls` shows it: the network and its services' names.
fn view(state: &State, n: Network) -> proto::NetworkView {
    proto::NetworkView {
        services: state.services_on(&n.id),
        network: Some(n.into()),
        tasks: vec![],
    }
}

/// `network ls`: the built-in network first, then by name.
pub fn list(m: &Manager) -> Result<proto::ListNetworksResponse> {
    Ok(m.read(|s| {
        let mut all = s.all_networks();
        all[1..].sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        proto::ListNetworksResponse {
            networks: all.into_iter().map(|n| view(s, n)).collect(),
        }
    }))
}

/// `network inspect`: the network, its services, and their tasks on it that are meant
/// to run (by service, then slot and node).
pub fn inspect(m: &Manager, what: &str) -> Result<proto::NetworkView> {
    m.read(|s| {
        let n = find(s, what)?;
        let mut tasks: Vec<_> = s
            .tasks
            .values()
            .filter(|t| t.desired_state <= TaskState::Running)
            .filter(|t| {
                t.endpoint(s.services.get(&t.service_id))
                    .attachments()
                    .iter()
                    .any(|a| a.network == n.id)
            })
            .collect();
        tasks.sort_by_key(|t| (&t.service_name, t.slot, t.node_id, &t.id));
        let tasks = tasks
            .into_iter()
            .map(|t| proto::NetworkTask {
                id: t.id.0.clone(),
                service: t.service_name.clone(),
                node_id: t.node_id.map(|id| id.to_string()).unwrap_or_default(),
                node: t
                    .node_id
                    .and_then(|id| s.nodes.get(&id))
                    .map(|n| n.description.hostname.clone())
                    .unwrap_or_default(),
                vip: t.vip.clone(),
                state: proto::TaskState::from(t.status.state).into(),
            })
            .collect();
        Ok(proto::NetworkView {
            tasks,
            ..view(s, n)
        })
    })
}

/// `network rm`: refused for the built-in network and while any service is on it.
pub async fn remove(m: &Manager, what: &str) -> Result<()> {
    let id = m.read(|s| -> Result<NetworkId> {
        let n = find(s, what)?;
        if n.id.is_default() {
            return Err(Error::InvalidInput(format!(
                "network {what}: the cluster's built-in network cannot be removed"
            )));
        }
        let users = State::network_users(&n.id, s.services.values());
        if !users.is_empty() {
            return Err(Error::Conflict(format!(
                "network {} is in use by service{} {}",
                n.spec.name,
                if users.len() == 1 { "" } else { "s" },
                users.join(", ")
            )));
        }
        Ok(n.id)
    })?;
    m.propose_replying(Command::RemoveNetwork { id }, &proto::Empty {})
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::service::PortConfig;
    use crate::store::{network, NetworkAttachment, Response};

    fn state_with(nets: &[(&str, &str, bool)]) -> State {
        let mut s = State::default();
        for (id, name, internal) in nets {
            let (r, _) = s.apply(&Command::CreateNetwork {
                network: Network {
                    id: NetworkId(id.to_string()),
                    spec: NetworkSpec {
                        name: name.to_string(),
                        internal: *internal,
                        ..Default::default()
                    },
                    created_ms: 1,
                },
            });
            assert_eq!(r, Response::Ok);
        }
        s
    }

    fn spec_on(names: &[&str]) -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            labels: Default::default(),
            mode: crate::store::service::ServiceMode::Replicated { replicas: 1 },
            task: Default::default(),
            ports: vec![],
            expose: vec![],
            update: Default::default(),
            rollback: Default::default(),
            depends_on: vec![],
            endpoint_mode: Default::default(),
            networks: names
                .iter()
                .map(|n| NetworkAttachment::to(NetworkId(n.to_string())))
                .collect(),
        }
    }

    #[test]
    fn names_become_ids_and_an_unknown_name_is_refused_naming_it() {
        let s = state_with(&[("00000000000000a1", "front", false)]);
        let mut spec = spec_on(&["front", network::DEFAULT_NETWORK]);
        resolve(&s, &mut spec).expect("known names");
        let ids: Vec<&str> = spec.networks.iter().map(|a| a.network.0.as_str()).collect();
        assert_eq!(ids, ["00000000000000a1", "default"]);
        // An id is accepted as it is.
        let mut by_id = spec_on(&["00000000000000a1"]);
        resolve(&s, &mut by_id).expect("an id");
        let mut bad = spec_on(&["front", "nope"]);
        let e = resolve(&s, &mut bad).unwrap_err();
        assert_eq!(e.to_string(), "networks: network nope not found");
        // By name and by id: the same network twice.
        let mut twice = spec_on(&["front", "00000000000000a1"]);
        let e = resolve(&s, &mut twice).unwrap_err();
        assert!(e.to_string().contains("named twice"), "{e}");
    }

    #[test]
    fn a_service_only_on_internal_networks_publishes_no_port() {
        let s = state_with(&[
            ("00000000000000a1", "front", false),
            ("00000000000000b1", "back", true),
        ]);
        let port = PortConfig {
            protocol: Default::default(),
            target: 80,
            published: 8080,
            mode: Default::default(),
            proxy_protocol: Default::default(),
        };
        let mut spec = spec_on(&["back"]);
        resolve(&s, &mut spec).expect("internal, no port");
        spec = spec_on(&["back"]);
        spec.ports.push(port.clone());
        let e = resolve(&s, &mut spec).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ports: service web is only on internal networks (back), which publish no port"
        );
        // One network that is not internal: the port is published (positive control).
        let mut both = spec_on(&["back", "front"]);
        both.ports.push(port);
        resolve(&s, &mut both).expect("one network reaches out");
    }
}
