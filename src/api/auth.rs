//! Who may call what.
//!
//! The local socket is trusted (its file mode guards it). On the cluster port the
//! caller's certificate has already been verified against the root CA by rustls (chain,
//! expiry); here we check that it belongs to this cluster, that the node it names is
//! still a member (**revocation at once**: a removed node is refused by the next call,
//! whatever its certificate says), and that it has the role the RPC needs, by the lesser
//! of the role in its certificate and the role the cluster now gives it (a demoted
//! manager keeps a manager certificate until it renews, and is refused every manager
//! RPC meanwhile).
//!
//! Where the answer comes from:
//!
//! - on a manager, the replicated node table it holds;
//! - on a worker, the member table the leader sends with its session
//!   ([`crate::daemon::Daemon::set_members`]);
//! - before either exists (a manager that just joined and has not caught up yet), the
//!   certificate alone.
//!
//! [`crate::api::gate`] runs these checks for every RPC of the cluster port before its
//! body is read; the handlers repeat them (cheaply) as a second line.

use crate::ca::Identity;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::net::PeerInfo;
use crate::store::{NodeId, Role};

/// What an RPC demands of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who reaches the port (only `Ca.Join`: the join secret is the credential).
    Anyone,
    /// A current member of this cluster, any role.
    Node,
    /// A current manager of this cluster.
    Manager,
}

pub use crate::host::Membership;

/// Decides whether a caller passes, given its certificate's identity, this node's
/// cluster and what this node knows of the caller's membership. Pure.
pub fn decide(id: &Identity, cluster_id: &str, membership: Membership, need: Access) -> Result<()> {
    if id.cluster_id != cluster_id {
        return Err(Error::PermissionDenied(format!(
            "certificate of cluster {} refused by cluster {cluster_id}",
            id.cluster_id
        )));
    }
    let role = match membership {
        Membership::NotMember => {
            return Err(Error::PermissionDenied(format!(
                "node {} is not a member of this cluster (removed?)",
                id.node_id
            )))
        }
        Membership::Member(r) if r == Role::Manager && id.role == Role::Manager => Role::Manager,
        Membership::Member(_) => Role::Worker,
        Membership::Unknown => id.role,
    };
    if need == Access::Manager && role != Role::Manager {
        return Err(Error::PermissionDenied(format!(
            "node {} is not a manager (certificate: {}, cluster: {}): this call needs a manager",
            id.node_id,
            id.role,
            match membership {
                Membership::Member(r) => r.as_str(),
                _ => "unknown",
            }
        )));
    }
    Ok(())
}

/// What this node knows of `node`'s membership (see the module doc).
pub fn membership(d: &Host, node: NodeId) -> Membership {
    if let Ok(m) = d.manager() {
        let known = m.read(|s| {
            s.cluster
                .is_some()
                .then(|| s.nodes.get(&node).map(|n| n.role))
        });
        if let Some(role) = known {
            return role.map_or(Membership::NotMember, Membership::Member);
        }
    }
    d.member_role(node)
}

/// Checks the caller of an RPC that needs `need`. Returns the caller's identity (`None`
/// for the local socket, or an anonymous caller where anyone may call).
pub fn admit(d: &Host, peer: &PeerInfo, need: Access) -> Result<Option<Identity>> {
    if peer.local {
        return Ok(None);
    }
    if need == Access::Anyone {
        return Ok(peer.identity());
    }
    let Some(id) = peer.identity() else {
        return Err(Error::PermissionDenied(
            "a certificate of this cluster is required".into(),
        ));
    };
    let Some(cluster_id) = d.cluster_id() else {
        return Err(Error::Unavailable(
            "this node is not part of a cluster".into(),
        ));
    };
    decide(&id, &cluster_id, membership(d, id.node_id), need)?;
    Ok(Some(id))
}

/// Accepts the local socket, or a current member of this cluster with role `need`
/// (`worker`: any member may call).
pub fn require_role(d: &Host, peer: &PeerInfo, need: Role) -> Result<()> {
    let access = match need {
        Role::Manager => Access::Manager,
        Role::Worker => Access::Node,
    };
    admit(d, peer, access).map(|_| ())
}

/// Only the local socket.
pub fn require_local(peer: &PeerInfo) -> Result<()> {
    if peer.local {
        Ok(())
    } else {
        Err(Error::PermissionDenied(
            "this call is only served on the local socket".into(),
        ))
    }
}

/// The IP a node calls from: what a forwarding manager saw (`forwarded_for`, believed
/// only from a current manager), else this end of the connection; `None` on the local
/// socket.
pub(super) fn seen_ip(
    d: &Host,
    peer: &PeerInfo,
    forwarded_for: &str,
) -> Result<Option<std::net::IpAddr>> {
    if peer.local {
        return Ok(None);
    }
    if !forwarded_for.is_empty()
        && peer.identity().is_some()
        && admit(d, peer, Access::Manager).is_ok()
    {
        let ip = forwarded_for.parse::<std::net::IpAddr>().map_err(|_| {
            Error::InvalidInput(format!(
                "forwarded_for {forwarded_for:?}: not an IP address"
            ))
        })?;
        return Ok(Some(ip.to_canonical()));
    }
    Ok(peer.remote.map(|a| a.ip().to_canonical()))
}

/// True when the caller is a current manager (or the local socket): it may speak for
/// other nodes when it forwards their calls.
pub(super) fn is_manager(d: &Host, peer: &PeerInfo) -> bool {
    admit(d, peer, Access::Manager).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(role: Role) -> Identity {
        Identity {
            node_id: NodeId(7),
            role,
            cluster_id: "c1".into(),
            not_after_unix: 0,
            not_before_unix: 0,
        }
    }

    #[test]
    fn a_member_passes_with_the_lesser_of_its_two_roles() {
        use Membership::*;
        let m = id(Role::Manager);
        let w = id(Role::Worker);
        // Positive controls.
        assert!(decide(&m, "c1", Member(Role::Manager), Access::Manager).is_ok());
        assert!(decide(&w, "c1", Member(Role::Worker), Access::Node).is_ok());
        assert!(decide(&m, "c1", Member(Role::Worker), Access::Node).is_ok());
        // A demoted manager, still holding its manager certificate.
        let e = decide(&m, "c1", Member(Role::Worker), Access::Manager).unwrap_err();
        assert!(e.to_string().contains("not a manager"), "{e}");
        // A promoted worker, before it renews.
        assert!(decide(&w, "c1", Member(Role::Manager), Access::Manager).is_err());
        // Removed: refused everywhere, whatever the certificate.
        for need in [Access::Node, Access::Manager] {
            let e = decide(&m, "c1", NotMember, need).unwrap_err();
            assert!(e.to_string().contains("not a member"), "{e}");
        }
        // Another cluster.
        assert!(decide(&m, "c2", Member(Role::Manager), Access::Node).is_err());
        // No table yet: the certificate decides.
        assert!(decide(&m, "c1", Unknown, Access::Manager).is_ok());
        assert!(decide(&w, "c1", Unknown, Access::Manager).is_err());
    }
}
