//! A root CA rotation in progress (`orc ca rotate`), kept beside the cluster object
//! under the key `ca_rotation`.
//!
//! # How a rotation goes
//!
//! 1. The leader makes a new root, and its certificate cross-signed by the old root,
//!    and proposes [`crate::store::Command::StartCaRotation`]. From then on join tokens
//!    show the new root's digest, and new certificates are issued by the new root with
//!    the chain `[leaf, new root cross-signed by the old, new root]`.
//! 2. Every heartbeat answer carries the roots to trust (old and new) and the root that
//!    should have issued the node's certificate (the new one). A node trusts both,
//!    then renews: its new certificate verifies for a peer that trusts only the old
//!    root (through the cross-signed certificate) and for one that trusts only the new.
//!    No connection breaks, no task restarts.
//! 3. The leader records each node it issued a new-root certificate to
//!    ([`crate::store::Command::CaNodeMoved`]). When every node of the table has one, it
//!    proposes [`crate::store::Command::FinishCaRotation`]: the new root becomes the
//!    cluster's only root, the old key is forgotten, and the next heartbeat answers tell
//!    every node to trust the new root alone: certificates of the old root are refused
//!    from then on.
//!
//! A node that is down during the rotation holds it open (`orc ca` names it); remove it
//! (`orc node rm --force`) to let the rotation finish. It can join again with the new
//! token.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::NodeId;

/// The key of the rotation (what [`crate::store::State::apply`] reports changed).
pub const ROTATION_KEY: &str = "ca_rotation";

/// A root CA rotation in progress.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRotation {
    /// The new root's certificate, PEM.
    pub new_cert_pem: String,
    /// The new root's private key, PEM, sealed with the data key as the CA key
    /// ([`crate::keys::Purpose::CaKey`]); it becomes the cluster's `ca_key` as it is.
    pub new_key: super::Sealed,
    /// The new root's certificate signed by the old root, PEM.
    pub cross_pem: String,
    /// The new root's digest (what join tokens show from now on).
    pub new_digest: String,
    /// Certificate validity from now on, seconds (`--cert-expiry`).
    pub cert_validity_secs: u64,
    /// The nodes that were issued a certificate of the new root.
    pub moved: BTreeSet<NodeId>,
    /// Unix ms of the start.
    pub started_ms: u64,
}

impl std::fmt::Debug for CaRotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaRotation")
            .field("new_digest", &self.new_digest)
            .field("new_key", &self.new_key)
            .field("moved", &self.moved)
            .field("started_ms", &self.started_ms)
            .finish()
    }
}

impl CaRotation {
    /// The chain a node certificate of the new root is followed by.
    pub fn chain_pem(&self) -> String {
        join_pem(&self.cross_pem, &self.new_cert_pem)
    }

    /// The roots a node trusts while the rotation lasts: the old and the new.
    pub fn bundle_pem(&self, old_root_pem: &str) -> String {
        join_pem(old_root_pem, &self.new_cert_pem)
    }

    /// The nodes of `all` that have no certificate of the new root yet.
    pub fn pending<'a>(&'a self, all: impl Iterator<Item = &'a NodeId>) -> Vec<NodeId> {
        all.filter(|id| !self.moved.contains(id)).copied().collect()
    }
}

/// Two PEM texts one after the other, a line break between them.
pub fn join_pem(a: &str, b: &str) -> String {
    if a.is_empty() || a.ends_with('\n') {
        format!("{a}{b}")
    } else {
        format!("{a}\n{b}")
    }
}
