//! Control API operations on nodes, tokens and the CA, run on the leader. Each validates
//! its request against the current state before it proposes anything, so nothing
//! invalid reaches Raft.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use super::convert::node_info;
use crate::ca::{self, RootCa, Token};
use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::proto;
use crate::store::{Availability, Command, Node, NodeId, NodeStatus, Role, State};
use crate::units::now_ms;

/// `node ls`.
pub fn list(m: &Manager) -> proto::ListNodesResponse {
    let leader = m.leader();
    proto::ListNodesResponse {
        nodes: m.read(|s| s.nodes.values().map(|n| node_info(n, leader)).collect()),
    }
}

/// `node inspect`.
pub fn inspect(m: &Manager, what: &str) -> Result<proto::NodeInfo> {
    let leader = m.leader();
    m.read(|s| s.find_node(what).map(|n| node_info(n, leader)))
}

/// Refuses taking `target` out of the voters when the managers left could not form a
/// quorum, or when it is the last manager. Pure.
pub fn check_quorum_without(
    state: &State,
    voters: &BTreeSet<u64>,
    target: NodeId,
    leader: u64,
    verb: &str,
) -> Result<()> {
    let after: Vec<u64> = voters.iter().copied().filter(|v| *v != target.0).collect();
    if after.is_empty() {
        return Err(Error::Conflict(format!(
            "cannot {verb} node {target}: it is the last manager of the cluster"
        )));
    }
    let reachable = after
        .iter()
        .filter(|id| {
            **id == leader
                || state
                    .nodes
                    .get(&NodeId(**id))
                    .map(|n| n.status == NodeStatus::Ready)
                    .unwrap_or(false)
        })
        .count();
    let need = after.len() / 2 + 1;
    if reachable < need {
        return Err(Error::Conflict(format!(
            "cannot {verb} node {target}: the {} remaining managers would have {reachable} reachable, fewer than the {need} a quorum needs",
            after.len()
        )));
    }
    Ok(())
}

/// `node update`, `node promote`, `node demote`.
pub async fn update(m: &Manager, req: proto::UpdateNodeRequest) -> Result<proto::NodeInfo> {
    let availability = match req.availability.as_str() {
        "" => None,
        a => Some(a.parse::<Availability>()?),
    };
    let role = match req.role.as_str() {
        "" => None,
        r => Some(r.parse::<Role>()?),
    };
    for l in &req.labels_rm {
        if l.is_empty() {
            return Err(Error::InvalidInput("labels_rm: empty label name".into()));
        }
    }
    for k in req.labels_add.keys() {
        if k.is_empty() {
            return Err(Error::InvalidInput("labels_add: empty label name".into()));
        }
    }
    let voters = m.voters();
    let node = m.read(|s| -> Result<Node> {
        let n = s.find_node(&req.node)?.clone();
        if role == Some(Role::Worker) && n.role == Role::Manager {
            check_quorum_without(s, &voters, n.id, m.id, "demote")?;
        }
        Ok(n)
    })?;
    m.propose(Command::UpdateNodeSpec {
        id: node.id,
        role,
        availability,
        labels_add: req.labels_add.into_iter().collect(),
        labels_rm: req.labels_rm,
    })
    .await?;
    inspect(m, &node.id.to_string())
}

/// `node rm`.
pub async fn remove(m: &Manager, what: &str, force: bool) -> Result<()> {
    let node = m.read(|s| s.find_node(what).cloned())?;
    if node.role == Role::Manager {
        return Err(Error::Conflict(format!(
            "node {} is a manager: demote it first (`orc node demote {}`)",
            node.id, node.id
        )));
    }
    if node.status == NodeStatus::Ready && !force {
        return Err(Error::Conflict(format!(
            "node {} is ready and still part of the cluster: run `orc leave` on it, or use `orc node rm --force`",
            node.id
        )));
    }
    m.propose_replying(Command::RemoveNode { id: node.id }, &proto::Empty {})
        .await?;
    Ok(())
}

/// `join-token`.
pub async fn join_token(m: &Manager, role: &str, rotate: bool) -> Result<proto::JoinTokenResponse> {
    let role: Role = role.parse().map_err(|_| {
        Error::InvalidInput(format!(
            "join-token: expected worker or manager, found {role:?}"
        ))
    })?;
    if rotate {
        m.propose(Command::RotateSecret {
            role,
            secret: m.seal_join_secret(role, &ca::new_secret())?,
        })
        .await?;
    }
    let secret = m.join_secret(role)?;
    let manager_addr = m.addr_of(m.id).unwrap_or_default();
    Ok(proto::JoinTokenResponse {
        token: Token {
            ca_digest: m.read(ca::Trust::of)?.issuer_digest,
            secret,
        }
        .to_string(),
        manager_addr,
    })
}

/// The CA's `Join`: checks the secret, issues a certificate, adds the node.
pub async fn ca_join(m: &Manager, req: proto::CaJoinRequest) -> Result<proto::CaJoinResponse> {
    let cluster = m
        .read(|s| s.cluster.clone())
        .ok_or_else(|| Error::Unavailable("the cluster is not initialised".into()))?;
    let role = if ca::secrets_equal(&req.secret, &m.join_secret(Role::Worker)?) {
        Role::Worker
    } else if ca::secrets_equal(&req.secret, &m.join_secret(Role::Manager)?) {
        Role::Manager
    } else {
        return Err(Error::PermissionDenied(
            "invalid join token: the secret is wrong or was rotated".into(),
        ));
    };
    req.advertise_addr
        .parse::<std::net::SocketAddr>()
        .map_err(|_| {
            Error::InvalidInput(format!(
                "advertise address {:?} is not IP:PORT",
                req.advertise_addr
            ))
        })?;
    let issuing = Issuing::now(m)?;
    let id = loop {
        let id = NodeId(rand::random::<u64>() | 1);
        if m.read(|s| !s.nodes.contains_key(&id)) {
            break id;
        }
    };
    let cert_pem = issuing.issue(&req.csr_pem, id, role, &cluster.id)?;
    let node = Node::new(
        id,
        req.advertise_addr.clone(),
        role,
        crate::store::NodeDescription {
            hostname: req.hostname.clone(),
            ..Default::default()
        },
        now_ms(),
    );
    // The managers as they will be with this node, in id order: the reply is known
    // before the write, so that a retried join gets this same node and certificate.
    let mut managers: std::collections::BTreeMap<NodeId, String> =
        m.read(|s| s.managers().map(|n| (n.id, n.addr.clone())).collect());
    if role == Role::Manager {
        managers.insert(id, node.addr.clone());
    }
    let reply = proto::CaJoinResponse {
        node_id: id.to_string(),
        role: role.to_string(),
        cluster_id: cluster.id,
        cert_pem,
        ca_cert_pem: issuing.trust.bundle_pem.clone(),
        managers: managers.into_values().collect(),
        // Added by the handler after the write: never recorded in the state.
        manager_keys: None,
    };
    m.propose_replying(Command::AddNode { node }, &reply)
        .await?;
    tracing::info!(node = %id, role = %role, addr = %req.advertise_addr, "node joined");
    Ok(reply)
}

/// The CA's `Renew`: a new certificate with the node's current role.
pub fn ca_renew(m: &Manager, id: NodeId, csr_pem: &str) -> Result<proto::RenewResponse> {
    let (cluster, node) = m.read(|s| (s.cluster.clone(), s.nodes.get(&id).cloned()));
    let cluster =
        cluster.ok_or_else(|| Error::Unavailable("the cluster is not initialised".into()))?;
    let node = node.ok_or_else(|| {
        Error::PermissionDenied(format!("node {id} has been removed from the cluster"))
    })?;
    let cert_pem = Issuing::now(m)?.issue(csr_pem, id, node.role, &cluster.id)?;
    tracing::info!(node = %id, role = %node.role, "certificate issued (renewal)");
    Ok(proto::RenewResponse {
        cert_pem,
        role: node.role.to_string(),
        manager_keys: m.manager_keys(node.role)?,
    })
}

/// Who issues certificates now: the cluster's root, or, during a rotation, the new
/// root (its certificates followed by the chain a node that trusts only the old root
/// needs); and the roots a node must trust.
pub struct Issuing {
    root: RootCa,
    /// PEM appended after a new certificate.
    chain: String,
    /// The roots to trust and the issuing root's digest.
    pub trust: ca::Trust,
    validity: Duration,
}

impl Issuing {
    /// The issuer in force in `m`'s state (opens the issuing root's key).
    pub fn now(m: &Manager) -> Result<Issuing> {
        let (cluster, rotation, trust) =
            m.read(|s| (s.cluster.clone(), s.ca_rotation.clone(), ca::Trust::of(s)));
        let (cluster, trust) = (
            cluster.ok_or_else(|| Error::Unavailable("the cluster is not initialised".into()))?,
            trust?,
        );
        match rotation {
            None => Ok(Issuing {
                root: m.root_ca()?,
                chain: String::new(),
                trust,
                validity: Duration::from_secs(cluster.settings.cert_validity_secs),
            }),
            Some(r) => Ok(Issuing {
                root: RootCa::from_pem(&r.new_cert_pem, &m.open_ca_key(&r.new_key)?)?,
                chain: r.chain_pem(),
                trust,
                validity: Duration::from_secs(r.cert_validity_secs),
            }),
        }
    }

    /// A node certificate for `csr_pem`, followed by the chain.
    pub fn issue(&self, csr_pem: &str, id: NodeId, role: Role, cluster_id: &str) -> Result<String> {
        let leaf = self.root.issue(
            csr_pem,
            id,
            role,
            cluster_id,
            self.validity,
            SystemTime::now(),
        )?;
        Ok(crate::store::rotation::join_pem(&leaf, &self.chain))
    }
}

/// `ca`: the root, and a rotation's progress.
pub fn ca_status(m: &Manager) -> Result<proto::CaStatusResponse> {
    m.read(|s| {
        let c = s
            .cluster
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the cluster is not initialised".into()))?;
        let root_digest = ca::digest_of_pem(&c.ca_cert_pem)?;
        let total = s.nodes.len() as u64;
        Ok(match &s.ca_rotation {
            None => proto::CaStatusResponse {
                root_digest,
                rotating: false,
                new_root_digest: String::new(),
                moved: total,
                total,
                pending: vec![],
                cert_validity_secs: c.settings.cert_validity_secs,
                started_ms: None,
            },
            Some(r) => {
                let pending: Vec<proto::CaPendingNode> = r
                    .pending(s.nodes.keys())
                    .into_iter()
                    .map(|id| {
                        let n = &s.nodes[&id];
                        proto::CaPendingNode {
                            id: id.to_string(),
                            hostname: n.description.hostname.clone(),
                            status: n.status.as_str().to_string(),
                        }
                    })
                    .collect();
                proto::CaStatusResponse {
                    root_digest,
                    rotating: true,
                    new_root_digest: r.new_digest.clone(),
                    moved: total - pending.len() as u64,
                    total,
                    pending,
                    cert_validity_secs: r.cert_validity_secs,
                    started_ms: Some(r.started_ms),
                }
            }
        })
    })
}

/// `ca rotate`: a new root, cross-signed by the current one; nodes move to it as they
/// renew (see [`crate::store::rotation`]).
pub async fn ca_rotate(m: &Manager, cert_validity_secs: u64) -> Result<proto::CaStatusResponse> {
    let cluster = m
        .read(|s| s.cluster.clone())
        .ok_or_else(|| Error::Unavailable("the cluster is not initialised".into()))?;
    let validity = match cert_validity_secs {
        0 => cluster.settings.cert_validity_secs,
        v if v < 3600 => {
            return Err(Error::InvalidInput(
                "cert_validity_secs: must be at least 1h".into(),
            ))
        }
        v => v,
    };
    let old = m.root_ca()?;
    let started_ms = now_ms();
    let new = RootCa::generate_named(
        &cluster.id,
        &format!("orc root CA {started_ms}"),
        SystemTime::now(),
    )?;
    let rotation = crate::store::rotation::CaRotation {
        new_cert_pem: new.cert_pem().to_string(),
        new_key: m.seal_ca_key(new.key_pem())?,
        cross_pem: new.cross_signed_by(&old)?,
        new_digest: new.digest(),
        cert_validity_secs: validity,
        moved: Default::default(),
        started_ms,
    };
    m.propose(Command::StartCaRotation { rotation }).await?;
    tracing::info!(root = %new.digest(), "CA rotation started");
    ca_status(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NodeDescription;

    fn state(nodes: &[(u64, Role, NodeStatus)]) -> State {
        let mut s = State::default();
        for (id, role, status) in nodes {
            s.nodes.insert(
                NodeId(*id),
                Node {
                    status: *status,
                    ..Node::new(
                        NodeId(*id),
                        String::new(),
                        *role,
                        NodeDescription::default(),
                        0,
                    )
                },
            );
        }
        s
    }

    #[test]
    fn demote_keeps_quorum_or_is_refused() {
        use NodeStatus::*;
        let voters: BTreeSet<u64> = [1, 2, 3].into();
        let all_up = state(&[
            (1, Role::Manager, Ready),
            (2, Role::Manager, Ready),
            (3, Role::Manager, Ready),
        ]);
        assert!(check_quorum_without(&all_up, &voters, NodeId(3), 1, "demote").is_ok());
        // 3 managers, one down: demoting a healthy one leaves 1 of 2 reachable.
        let one_down = state(&[
            (1, Role::Manager, Ready),
            (2, Role::Manager, Down),
            (3, Role::Manager, Ready),
        ]);
        let e = check_quorum_without(&one_down, &voters, NodeId(3), 1, "demote").unwrap_err();
        assert!(
            e.to_string().contains("fewer than the 2 a quorum needs"),
            "{e}"
        );
        // ...but demoting the down one is fine.
        assert!(check_quorum_without(&one_down, &voters, NodeId(2), 1, "demote").is_ok());
        let single: BTreeSet<u64> = [1].into();
        let e = check_quorum_without(&all_up, &single, NodeId(1), 1, "demote").unwrap_err();
        assert!(e.to_string().contains("last manager"), "{e}");
    }
}
