//! Nodes and the cluster object: init, join, a node's spec and status, removal, the join secrets and the unlock key.

use super::Applied;
use crate::store::*;

impl State {
    /// Applies [`Command::InitCluster`].
    pub(super) fn init_cluster(&mut self, cluster: &Cluster, node: &Node) -> Applied {
        if self.cluster.is_some() {
            return (
                Response::Rejected("the cluster already exists".into()),
                vec![],
            );
        }
        self.cluster = Some(cluster.clone());
        self.nodes.insert(node.id, node.clone());
        (Response::Ok, vec![CLUSTER_KEY.into(), node_key(node.id)])
    }

    /// Applies [`Command::AddNode`].
    pub(super) fn add_node(&mut self, node: &Node) -> Applied {
        self.nodes.insert(node.id, node.clone());
        (Response::Ok, vec![node_key(node.id)])
    }

    /// Applies [`Command::UpdateNodeSpec`].
    pub(super) fn update_node_spec(
        &mut self,
        id: &NodeId,
        role: &Option<Role>,
        availability: &Option<Availability>,
        labels_add: &BTreeMap<String, String>,
        labels_rm: &[String],
    ) -> Applied {
        let Some(n) = self.nodes.get_mut(id) else {
            return (Response::Rejected(format!("node {id} not found")), vec![]);
        };
        if let Some(r) = role {
            n.role = *r;
        }
        if let Some(a) = availability {
            n.availability = *a;
        }
        for k in labels_rm {
            n.labels.remove(k);
        }
        for (k, v) in labels_add {
            n.labels.insert(k.clone(), v.clone());
        }
        (Response::Ok, vec![node_key(*id)])
    }

    /// Applies [`Command::UpdateNodeStatus`].
    pub(super) fn update_node_status(
        &mut self,
        id: &NodeId,
        status: &NodeStatus,
        description: &Option<NodeDescription>,
        addr: &Option<String>,
        now_ms: &u64,
    ) -> Applied {
        let Some(n) = self.nodes.get_mut(id) else {
            return (Response::Rejected(format!("node {id} not found")), vec![]);
        };
        if n.status != *status {
            n.status = *status;
            n.status_changed_ms = *now_ms;
        }
        if let Some(d) = description {
            n.description = d.clone();
        }
        if let Some(a) = addr {
            n.addr = a.clone();
        }
        (Response::Ok, vec![node_key(*id)])
    }

    /// Applies [`Command::RemoveNode`].
    pub(super) fn remove_node(&mut self, id: &NodeId) -> Applied {
        if self.nodes.remove(id).is_none() {
            return (Response::Rejected(format!("node {id} not found")), vec![]);
        }
        (Response::Ok, vec![node_key(*id)])
    }

    /// Applies [`Command::RotateSecret`].
    pub(super) fn rotate_secret(&mut self, role: &Role, secret: &Sealed) -> Applied {
        let Some(c) = self.cluster.as_mut() else {
            return (Response::Rejected("no cluster".into()), vec![]);
        };
        match role {
            Role::Manager => c.manager_secret = secret.clone(),
            Role::Worker => c.worker_secret = secret.clone(),
        }
        (Response::Ok, vec![CLUSTER_KEY.into()])
    }

    /// Applies [`Command::SetUnlockKey`].
    pub(super) fn set_unlock_key(&mut self, unlock_key: &Option<Sealed>) -> Applied {
        let Some(c) = self.cluster.as_mut() else {
            return (Response::Rejected("no cluster".into()), vec![]);
        };
        c.unlock_key = unlock_key.clone();
        (Response::Ok, vec![CLUSTER_KEY.into()])
    }
}
