//! The node as the parts below the daemon see it: the shared handle.
//!
//! The daemon ([`crate::daemon`]) owns the node's life cycle: it opens the data dir,
//! holds the keys, starts and stops the manager runtime, serves the cluster port. The
//! parts it wires together — the agent, the control API's handlers, the gate — need a
//! few things of it: the node's membership and TLS, the channels to its peers, the
//! manager runtime when there is one, the routing mesh, the member table the leader
//! sent, and, for the `Local` service and the agent, the life-cycle steps themselves
//! (`init`, `join`, `leave`, `unlock`, a role change). [`LocalNode`] names exactly that, and
//! the daemon implements it; the parts hold a [`Host`] (an `Arc<dyn LocalNode>`), so that
//! imports run one way: the daemon imports them, they never import the daemon.
//!
//! The plain data the two sides exchange lives here too: [`Member`] (what this node is
//! in its cluster, persisted by the daemon), [`Membership`] (what this node knows of
//! another's), [`InitParams`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::ca::NodeCredentials;
use crate::error::Result;
use crate::manager::Manager;
use crate::mesh::Mesh;
use crate::net::{Peers, TlsHolder};
use crate::proto;
use crate::store::{NodeId, Role};

/// The shared handle: the node, as the agent and the control API see it.
pub type Host = Arc<dyn LocalNode>;

/// What the parts below the daemon need of their node (see the module doc). Implemented
/// by [`crate::daemon::Daemon`].
#[tonic::async_trait]
pub trait LocalNode: Send + Sync + 'static {
    /// The node's sled database.
    fn db(&self) -> &sled::Db;

    /// Channels to other nodes.
    fn peers(&self) -> &Peers;

    /// The TLS material in force.
    fn tls(&self) -> &TlsHolder;

    /// The node's root cancellation token.
    fn stop_token(&self) -> &CancellationToken;

    /// What this node is, if it is in a cluster.
    fn member(&self) -> Option<Member>;

    /// This node's cluster id, if it is in a cluster (without copying its credentials:
    /// every RPC asks).
    fn cluster_id(&self) -> Option<String>;

    /// The manager runtime, or the error a worker (or a locked manager) gives.
    fn manager(&self) -> Result<Arc<Manager>>;

    /// The routing mesh, while in a cluster.
    fn mesh(&self) -> Option<Arc<Mesh>>;

    /// The port of this node's data path (0: none yet).
    fn data_port(&self) -> u16;

    /// The generic resources this node declares (`orc daemon --node-generic-resource`).
    /// The node's metrics registry (none: nothing is counted).
    fn metrics(&self) -> Option<Arc<crate::metrics::Metrics>> {
        None
    }

    fn generic_resources(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }

    /// Records the cluster's members (from the leader's session).
    fn set_members(&self, members: BTreeMap<NodeId, Role>);

    /// What the member table from the leader's session says of `node`.
    fn member_role(&self, node: NodeId) -> Membership;

    /// The leader's address as last heard.
    fn leader_hint(&self) -> Option<String>;

    /// Records the leader's address (from a heartbeat answer).
    fn set_leader_hint(&self, addr: &str);

    /// Wakes when the leader's address changes.
    fn watch_leader_hint(&self) -> tokio::sync::watch::Receiver<Option<String>>;

    /// Records the managers' addresses the node last heard of (persisted when changed).
    fn set_managers(&self, managers: Vec<String>) -> Result<()>;

    /// Refuses with [`crate::daemon::LOCKED`] while this manager is locked.
    fn refuse_if_locked(&self) -> Result<()>;

    /// The address this node serves the web dashboard at (`--dashboard-addr`), if it
    /// does.
    fn dashboard_addr(&self) -> Option<std::net::SocketAddr> {
        None
    }

    /// While locked: the membership (without its key), for `orc info`.
    fn locked_member(&self) -> Option<Member>;

    /// Keeps the manager keys a renewal or a join answer sent, for `role`.
    fn receive_manager_keys(&self, keys: Option<&proto::ManagerKeys>, role: Role) -> Result<()>;

    /// `orc init`.
    async fn init(&self, params: InitParams) -> Result<proto::InitResponse>;

    /// `orc init --force-new-cluster`: this surviving manager becomes the only one.
    async fn force_new_cluster(&self, advertise_addr: &str) -> Result<proto::InitResponse>;

    /// `orc join`.
    async fn join(&self, req: proto::JoinRequest) -> Result<proto::JoinResponse>;

    /// `orc leave`.
    async fn leave(&self, force: bool) -> Result<()>;

    /// `orc unlock`.
    async fn unlock(&self, key: &str) -> Result<()>;

    /// Applies a role change decided by the managers (new credentials, new role).
    async fn change_role(&self, creds: NodeCredentials, role: Role) -> Result<()>;
}

/// What this node is in its cluster; persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    /// This node's id.
    pub node_id: NodeId,
    /// The cluster's id.
    pub cluster_id: String,
    /// The role in this node's certificate.
    pub role: Role,
    /// Address the others dial (`IP:PORT`).
    pub advertise_addr: String,
    /// Address the cluster port listens on.
    pub listen_addr: String,
    /// CA certificate, own certificate and key.
    pub creds: NodeCredentials,
    /// Cluster addresses of the managers last heard of.
    pub managers: Vec<String>,
}

/// What this node knows of another node's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// A member with this role.
    Member(Role),
    /// Not a member: removed, or never joined.
    NotMember,
    /// This node has no member table yet.
    Unknown,
}

/// Parameters of `orc init`.
#[derive(Debug, Clone, Default)]
pub struct InitParams {
    /// `IP[:PORT]`.
    pub advertise_addr: String,
    /// `IP:PORT`, empty for `0.0.0.0:<advertise port>`.
    pub listen_addr: String,
    /// 0 for the default.
    pub cert_validity_secs: u64,
    /// 0 for the default.
    pub heartbeat_period_ms: u64,
    /// Empty for the default.
    pub vip_range: String,
    /// Wrap the data key with an unlock key (autolock).
    pub autolock: bool,
    /// `--restore`: start the cluster from a backup ([`crate::backup`]).
    pub restore: Option<RestoreFrom>,
}

/// Where a restored cluster comes from: a backup file, and the unlock key of an
/// autolocked cluster's backup (`Debug` never shows it).
#[derive(Clone, Default)]
pub struct RestoreFrom {
    /// The backup file, as the daemon opens it.
    pub path: std::path::PathBuf,
    /// `ORCKEY-1-...`, or empty.
    pub unlock_key: String,
}

impl std::fmt::Debug for RestoreFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreFrom")
            .field("path", &self.path)
            .field(
                "unlock_key",
                &(!self.unlock_key.is_empty()).then_some("[elided]"),
            )
            .finish()
    }
}
