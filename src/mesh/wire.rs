//! The endpoint table ↔ its message in `proto/dispatcher.proto`, as every node's
//! session receives it. Store → wire cannot fail; wire → store names the field it
//! refuses, as in [`crate::proto::convert`] (which converts the ports inside).

use super::table::{Backend, EndpointChanges, EndpointNetwork, ServiceEndpoint};
use super::Endpoints;
use crate::error::{Error, Result};
use crate::proto as pb;
use crate::proto::convert::{enum_of, port};
use crate::store::{NetworkId, NodeId};

impl From<Backend> for pb::EndpointBackend {
    fn from(b: Backend) -> Self {
        pb::EndpointBackend {
            task_id: b.task_id,
            ip: b.ip,
            ports: b.ports.into_iter().map(Into::into).collect(),
            vip: b.vip,
            node_id: NodeId(b.node_id).to_string(),
            data_port: b.data_port.into(),
            addresses: b.addresses.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::EndpointBackend> for Backend {
    type Error = Error;
    fn try_from(b: pb::EndpointBackend) -> Result<Self> {
        Ok(Backend {
            task_id: b.task_id,
            ip: b.ip,
            ports: b
                .ports
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
            vip: b.vip,
            node_id: b
                .node_id
                .parse::<NodeId>()
                .map_err(|_| {
                    Error::InvalidInput(format!(
                        "endpoints.backends.node_id: {:?} is not a node id",
                        b.node_id
                    ))
                })?
                .0,
            data_port: port("endpoints.backends.data_port", b.data_port)?,
            addresses: b.addresses.into_iter().map(Into::into).collect(),
        })
    }
}

impl From<ServiceEndpoint> for pb::EndpointService {
    fn from(s: ServiceEndpoint) -> Self {
        pb::EndpointService {
            id: s.id,
            name: s.name,
            ports: s.ports.into_iter().map(Into::into).collect(),
            backends: s.backends.into_iter().map(Into::into).collect(),
            vip: s.vip,
            stack: s.stack,
            endpoint_mode: s.endpoint_mode.into(),
            networks: s.networks.into_iter().map(Into::into).collect(),
            backends_partial: false,
            removed_backends: vec![],
        }
    }
}

impl TryFrom<pb::EndpointService> for ServiceEndpoint {
    type Error = Error;
    fn try_from(s: pb::EndpointService) -> Result<Self> {
        let endpoint_mode =
            enum_of::<pb::EndpointMode, _>("endpoints.endpoint_mode", s.endpoint_mode)?;
        Ok(ServiceEndpoint {
            id: s.id,
            name: s.name,
            ports: s
                .ports
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
            backends: s
                .backends
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
            vip: s.vip,
            stack: s.stack,
            endpoint_mode,
            networks: s.networks.into_iter().map(Into::into).collect(),
        })
    }
}

impl From<Endpoints> for pb::Endpoints {
    fn from(e: Endpoints) -> Self {
        pb::Endpoints {
            services: e.services.into_iter().map(Into::into).collect(),
            vip_range: e.vip_range,
            networks: e
                .networks
                .into_iter()
                .map(|n| pb::EndpointNetwork {
                    id: n.id.0,
                    name: n.name,
                    internal: n.internal,
                    encrypted: n.encrypted,
                })
                .collect(),
            partial: false,
            removed_services: vec![],
        }
    }
}

impl From<EndpointChanges> for pb::Endpoints {
    fn from(mut c: EndpointChanges) -> Self {
        let mut e = pb::Endpoints {
            partial: true,
            removed_services: c.removed,
            ..c.changed.into()
        };
        for s in &mut e.services {
            if let Some(gone) = c.backends_gone.remove(&s.id) {
                s.backends_partial = true;
                s.removed_backends = gone;
            }
        }
        e
    }
}

impl TryFrom<pb::Endpoints> for Endpoints {
    type Error = Error;
    fn try_from(e: pb::Endpoints) -> Result<Self> {
        Ok(Endpoints {
            services: e
                .services
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
            vip_range: e.vip_range,
            networks: e
                .networks
                .into_iter()
                .map(|n| EndpointNetwork {
                    id: NetworkId(n.id),
                    name: n.name,
                    internal: n.internal,
                    encrypted: n.encrypted,
                })
                .collect(),
        })
    }
}

/// A session's endpoint message applied to the table the node holds: a whole table
/// replaces it, changes ([`pb::Endpoints::partial`]) go onto it. `None` when changes
/// arrive that do not fit the table held, or with no table at all (the leader sends
/// the whole table first in every session, and changes from the table it sent last,
/// so only a confused or hostile leader does that); the caller starts again.
pub fn receive(held: Option<Endpoints>, e: pb::Endpoints) -> Result<Option<Endpoints>> {
    let partial = e.partial;
    let removed = e.removed_services.clone();
    let backends_gone = e
        .services
        .iter()
        .filter(|s| partial && s.backends_partial)
        .map(|s| (s.id.clone(), s.removed_backends.clone()))
        .collect();
    let table = Endpoints::try_from(e)?;
    if !partial {
        return Ok(Some(table));
    }
    Ok(held.and_then(|mut h| {
        h.apply_changes(EndpointChanges {
            changed: table,
            removed,
            backends_gone,
        })
        .then_some(h)
    }))
}

/// An encoded endpoint message (the session's `endpoints` bytes) applied as
/// [`receive`] does.
pub fn receive_bytes(held: Option<Endpoints>, bytes: &[u8]) -> Result<Option<Endpoints>> {
    use prost::Message;
    let e = pb::Endpoints::decode(bytes)
        .map_err(|e| Error::InvalidInput(format!("endpoints: not an endpoint table: {e}")))?;
    receive(held, e)
}
