//! The root CA rotation: start it, note each node that moved to the new root, finish it.

use super::Applied;
use crate::store::*;

impl State {
    /// Applies [`Command::StartCaRotation`].
    pub(super) fn start_ca_rotation(&mut self, rotation: &rotation::CaRotation) -> Applied {
        if self.cluster.is_none() {
            return (Response::Rejected("no cluster".into()), vec![]);
        }
        if let Some(r) = &self.ca_rotation {
            return (
                Response::Rejected(format!(
                    "a CA rotation (to root {}) is already in progress",
                    &r.new_digest[..12.min(r.new_digest.len())]
                )),
                vec![],
            );
        }
        self.ca_rotation = Some(rotation.clone());
        (Response::Ok, vec![rotation::ROTATION_KEY.into()])
    }

    /// Applies [`Command::CaNodeMoved`].
    pub(super) fn ca_node_moved(&mut self, id: &NodeId, new_digest: &str) -> Applied {
        match self.ca_rotation.as_mut() {
            Some(r) if r.new_digest == *new_digest => {
                if r.moved.insert(*id) {
                    (Response::Ok, vec![rotation::ROTATION_KEY.into()])
                } else {
                    (Response::Ok, vec![])
                }
            }
            _ => (
                Response::Rejected("that CA rotation is not in progress".into()),
                vec![],
            ),
        }
    }

    /// Applies [`Command::FinishCaRotation`].
    pub(super) fn finish_ca_rotation(&mut self, new_digest: &str) -> Applied {
        let (Some(r), Some(c)) = (self.ca_rotation.as_ref(), self.cluster.as_mut()) else {
            return (
                Response::Rejected("no CA rotation is in progress".into()),
                vec![],
            );
        };
        if r.new_digest != *new_digest {
            return (
                Response::Rejected("that CA rotation is not in progress".into()),
                vec![],
            );
        }
        let pending = r.pending(self.nodes.keys());
        if !pending.is_empty() {
            return (
                Response::Rejected(format!(
                    "{} nodes have no certificate of the new root yet",
                    pending.len()
                )),
                vec![],
            );
        }
        c.ca_cert_pem = r.new_cert_pem.clone();
        c.ca_key = r.new_key.clone();
        c.settings.cert_validity_secs = r.cert_validity_secs;
        self.ca_rotation = None;
        (
            Response::Ok,
            vec![CLUSTER_KEY.into(), rotation::ROTATION_KEY.into()],
        )
    }
}
