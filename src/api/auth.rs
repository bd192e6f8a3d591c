//! Who may call what.
//!
//! The local socket is trusted (its file mode guards it). On the cluster port the
//! caller's certificate has already been verified against the root CA by rustls (chain,
//! expiry); here we check that it belongs to this cluster and carries the role the RPC
//! needs.

use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::net::PeerInfo;
use crate::store::Role;

/// Accepts the local socket, or a certificate of this cluster with role `need`
/// (a manager certificate also satisfies `worker`: any node may hold a session).
pub fn require_role(d: &Daemon, peer: &PeerInfo, need: Role) -> Result<()> {
    if peer.local {
        return Ok(());
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
    if id.cluster_id != cluster_id {
        return Err(Error::PermissionDenied(format!(
            "certificate of cluster {} refused by cluster {cluster_id}",
            id.cluster_id
        )));
    }
    if need == Role::Manager && id.role != Role::Manager {
        return Err(Error::PermissionDenied(format!(
            "node {} has role {}: this call needs a manager",
            id.node_id, id.role
        )));
    }
    Ok(())
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
