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
            services: e
                .services
                .into_iter()
                .map(|s| std::sync::Arc::unwrap_or_clone(s).into())
                .collect(),
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
                .map(|s| s.try_into().map(std::sync::Arc::new))
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

/// A digest of an endpoint table, the same wherever the table is: the sum (wrapping) of
/// each service's digest and of the rest's (the VIP range and the networks), each the
/// first 16 bytes of the SHA-256 of its wire form. A sum, so that a table changed in a
/// few services gets its digest from the one before at the cost of those services
/// ([`Digest::after`]). It names a table a node already holds: a node that opens a
/// session again presents it, and a leader that holds the same table sends none (at a
/// leader change, a thousand nodes were each sent the whole table again). A member
/// table's digest travels as one too
/// ([`crate::proto::convert::command::members_digest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digest(pub u128);

/// The first 16 bytes of the SHA-256 of `m`'s wire form.
fn sha16(m: &impl prost::Message) -> u128 {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(m.encode_to_vec());
    u128::from_be_bytes(d[..16].try_into().expect("16 bytes"))
}

fn service_digest(s: &ServiceEndpoint) -> u128 {
    sha16(&pb::EndpointService::from(s.clone()))
}

fn rest_digest(e: &Endpoints) -> u128 {
    sha16(&pb::Endpoints::from(Endpoints {
        services: vec![],
        vip_range: e.vip_range.clone(),
        networks: e.networks.clone(),
    }))
}

impl Digest {
    /// The digest of the whole table `e`.
    pub fn of(e: &Endpoints) -> Digest {
        Digest(
            e.services
                .iter()
                .map(|s| service_digest(s))
                .fold(rest_digest(e), u128::wrapping_add),
        )
    }

    /// The digest of `new`, this one being `old`'s, when the services of `old` and
    /// `new` differ in those named in `ids` only.
    pub fn after(self, old: &Endpoints, new: &Endpoints, ids: &[&str]) -> Digest {
        let find = |e: &Endpoints, id: &str| {
            e.services
                .binary_search_by(|s| s.id.as_str().cmp(id))
                .ok()
                .map(|i| service_digest(&e.services[i]))
                .unwrap_or(0)
        };
        let mut d = self
            .0
            .wrapping_sub(rest_digest(old))
            .wrapping_add(rest_digest(new));
        for id in ids {
            d = d.wrapping_sub(find(old, id)).wrapping_add(find(new, id));
        }
        Digest(d)
    }

    /// Its wire form: 16 bytes.
    pub fn to_bytes(self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }

    /// From its wire form; `None` unless 16 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Digest> {
        Some(Digest(u128::from_be_bytes(b.try_into().ok()?)))
    }
}

impl EndpointChanges {
    /// The ids of the services these changes touch (changed, added or gone).
    pub fn service_ids(&self) -> Vec<&str> {
        self.changed
            .services
            .iter()
            .map(|s| s.id.as_str())
            .chain(self.removed.iter().map(String::as_str))
            .collect()
    }
}

#[cfg(test)]
mod digest_tests {
    use super::*;

    #[test]
    fn a_digest_names_the_vip_range_and_networks_too_and_travels_as_16_bytes() {
        let a = Endpoints {
            vip_range: "10.1.0.0/24".into(),
            ..Default::default()
        };
        let mut b = a.clone();
        b.vip_range = "10.2.0.0/24".into();
        let mut c = b.clone();
        c.networks.push(EndpointNetwork {
            id: NetworkId("n1".into()),
            name: "front".into(),
            internal: false,
            encrypted: true,
        });
        let d = Digest::of;
        assert_ne!(d(&a), d(&b));
        assert_ne!(d(&b), d(&c));
        assert_eq!(d(&a).after(&a, &b, &[]), d(&b));
        assert_eq!(d(&b).after(&b, &c, &[]), d(&c));
        assert_eq!(Digest::from_bytes(&d(&c).to_bytes()), Some(d(&c)));
        assert_eq!(d(&c).to_bytes().len(), 16);
        assert_eq!(Digest::from_bytes(&[1, 2, 3]), None);
        assert_eq!(Digest::from_bytes(&[0; 17]), None);
    }
}
