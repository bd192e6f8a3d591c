//! `orc daemon`: one node.
//!
//! A daemon always serves its local control socket. Once it is in a cluster (after
//! `init` or `join`, or at start when its data dir says so) it also:
//!
//! - serves the **cluster port** (mTLS): Raft and control for managers, the CA's join and
//!   renew, and the dispatcher;
//! - runs the **agent** ([`crate::agent`]), which holds a session with the dispatcher:
//!   heartbeats that report this node, and answers that tell it the managers and the role
//!   it should have;
//! - if it is a manager, runs a [`Manager`]: the Raft node with its sled stores, and,
//!   while it leads, the leader-only components (dispatcher's down-detector and the
//!   membership reconciler), under a child cancellation token dropped on loss of
//!   leadership.
//!
//! What the node is (id, cluster, role, certificates, the managers it knows) is kept in
//! the `local` tree of its sled database (key `member`, JSON [`StoredMember`]: a
//! [`Member`] whose TLS key is sealed, see [`keys`]), so a daemon killed with SIGKILL
//! comes back as the same node in the same cluster. A manager of an autolocked cluster
//! comes back **locked** until `orc unlock`.
//!
//! The data dir is 0700 and every file in it 0600: fixed when the daemon opens it, and
//! kept so by the umask 0o077 the daemon sets (see [`crate::keys`]).

pub mod keys;
pub mod memory;
pub mod pipeline;
pub mod recover;

pub use crate::manager::{once, Manager, RaftTimings};
pub use keys::{read_stored_member, StoredMember, LOCKED};

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

pub use crate::host::{InitParams, Member};

use crate::ca::NodeCredentials;
use crate::error::{Error, Result};
use crate::host::{Host, Membership};
use crate::net::{Peers, TlsHolder};
use crate::store::{NodeId, Role};

/// How a daemon is started.
#[derive(Clone)]
pub struct DaemonConfig {
    /// Where the sled database lives.
    pub data_dir: PathBuf,
    /// The local control socket.
    pub socket: PathBuf,
    /// The Docker engine (`unix:///var/run/docker.sock`), `None` for the default.
    pub docker_host: Option<String>,
    /// Raft timings.
    pub raft: RaftTimings,
    /// Runs tasks with this executor instead of the Docker engine (in-process tests use
    /// the fake one).
    pub executor: Option<Arc<dyn crate::agent::executor::Executor>>,
    /// The shortest certificate validity `init` accepts, seconds (1 h by default:
    /// certificates renew at half their life, and a shorter life mostly makes work).
    pub min_cert_expiry_secs: u64,
    /// The data path's TCP port (0: any free one).
    pub data_path_port: u16,
    /// Discrete generic resources this node declares (`--node-generic-resource
    /// gpu=2`): kind → count, reported in its description.
    pub generic_resources: std::collections::BTreeMap<String, u64>,
    /// Count on the hot paths (the mesh's connections and bytes, DNS queries) and in
    /// the agent: set when metrics are served (`--metrics-addr`); without it those
    /// parts count nothing, so that a node that serves no metrics pays nothing for
    /// them.
    pub metrics: bool,
    /// Where the web dashboard is served (`--dashboard-addr`, bound), if it is.
    pub dashboard_addr: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for DaemonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonConfig")
            .field("data_dir", &self.data_dir)
            .field("socket", &self.socket)
            .field("docker_host", &self.docker_host)
            .field("raft", &self.raft)
            .field("executor", &self.executor.as_ref().map(|_| "custom"))
            .finish()
    }
}

/// A running daemon; cheap to clone.
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: DaemonConfig,
    db: sled::Db,
    /// The Raft log's own database (`raft` in the data dir), opened when the node is
    /// first a manager ([`Daemon::raft_db`]).
    raft_db: Mutex<Option<sled::Db>>,
    tls: TlsHolder,
    peers: Peers,
    member: RwLock<Option<Member>>,
    manager: RwLock<Option<Arc<Manager>>>,
    /// The routing mesh, while in a cluster.
    mesh: RwLock<Option<Arc<crate::mesh::Mesh>>>,
    /// The data path, while in a cluster.
    data_path: RwLock<Option<Arc<crate::mesh::tunnel::DataPath>>>,
    /// The data path's bound port (0: none).
    data_port: std::sync::atomic::AtomicU16,
    /// The task runner, once the agent has a Docker engine.
    runner: crate::agent::RunnerSlot,
    /// The cluster's members and their roles, as the leader's session last sent them
    /// (how a worker, which holds no state tables, tells a removed node).
    members: RwLock<Option<Arc<std::collections::BTreeMap<NodeId, Role>>>>,
    /// The leader's cluster address, as the last heartbeat answer gave it.
    leader_hint: tokio::sync::watch::Sender<Option<String>>,
    /// Cancels the cluster port and the agent (children of `stop`).
    cluster_stop: Mutex<Option<CancellationToken>>,
    /// Serialises init, join, leave and role changes.
    lifecycle: tokio::sync::Mutex<()>,
    /// The keys this node holds, and whether it is locked.
    keys: Mutex<keys::KeyState>,
    stop: CancellationToken,
    /// The node's metrics (counted always; served with `--metrics-addr`).
    metrics: Arc<crate::metrics::Metrics>,
}

const MEMBER_KEY: &str = "member";

pub use crate::units::now_ms;

impl Daemon {
    /// Opens the data dir and resumes the node's role if it is in a cluster. Does not
    /// serve the local socket: [`Daemon::serve`] does.
    pub async fn open(cfg: DaemonConfig, stop: CancellationToken) -> Result<Daemon> {
        crate::keys::restrict_umask();
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
            Error::Internal(format!("{}: cannot create: {e}", cfg.data_dir.display()))
        })?;
        crate::keys::secure_tree(&cfg.data_dir)?;
        let db = open_db(&cfg.data_dir.join("db"), 64 * 1024 * 1024)?;
        let tls = TlsHolder::default();
        let d = Daemon {
            inner: Arc::new(Inner {
                peers: Peers::new(tls.clone()),
                tls,
                member: RwLock::new(None),
                manager: RwLock::new(None),
                leader_hint: tokio::sync::watch::channel(None).0,
                members: RwLock::new(None),
                runner: Default::default(),
                mesh: RwLock::new(None),
                data_path: RwLock::new(None),
                data_port: std::sync::atomic::AtomicU16::new(0),
                cluster_stop: Mutex::new(None),
                lifecycle: tokio::sync::Mutex::new(()),
                keys: Mutex::new(Default::default()),
                cfg,
                db,
                raft_db: Mutex::new(None),
                stop,
                metrics: Arc::new(crate::metrics::Metrics::new()),
            }),
        };
        if let Some(m) = d.open_member()? {
            d.resume(m).await?;
        }
        Ok(d)
    }

    /// Resumes this node's role in its cluster (at start, or once unlocked).
    async fn resume(&self, m: Member) -> Result<()> {
        tracing::info!(node = %m.node_id, role = %m.role, cluster = %m.cluster_id, "resuming");
        self.inner.tls.set(m.creds.clone())?;
        *self.inner.member.write().expect("member lock") = Some(m.clone());
        let listener = tokio::net::TcpListener::bind(&m.listen_addr)
            .await
            .map_err(|e| Error::Internal(format!("cannot listen on {}: {e}", m.listen_addr)))?;
        if m.role == Role::Manager {
            self.start_manager(None).await?;
        }
        self.start_cluster(listener);
        Ok(())
    }

    /// The node's metrics registry.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.inner.metrics
    }

    /// Fills the gauges read at scrape time: this node's certificate expiry and, on a
    /// manager, Raft and the state tables ([`Manager::fill_metrics`]).
    pub fn refresh_metrics(&self) {
        if let Some(id) = self.member().and_then(|m| m.creds.identity().ok()) {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.inner
                .metrics
                .cert_expiry_seconds
                .set(id.not_after_unix as f64 - now);
        }
        let manager = self.inner.manager.read().expect("manager lock").clone();
        if let Some(m) = manager {
            m.fill_metrics();
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DaemonConfig {
        &self.inner.cfg
    }

    /// The sled database.
    pub fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    /// The Raft log's database, apart from [`Daemon::db`] so that the flush each append
    /// waits for writes the log only. Opened on first use; a log that a data dir of before
    /// kept in [`Daemon::db`] is moved into it then ([`crate::raft::log_store::move_log`]).
    pub fn raft_db(&self) -> Result<sled::Db> {
        let mut slot = self.inner.raft_db.lock().expect("raft db lock");
        if let Some(db) = &*slot {
            return Ok(db.clone());
        }
        let dir = self.inner.cfg.data_dir.join("raft");
        let db = open_db(&dir, 16 * 1024 * 1024)?;
        let moved = crate::raft::log_store::move_log(&self.inner.db, &db)?;
        if moved > 0 {
            tracing::info!(
                entries = moved,
                "moved the raft log into its own database ({})",
                dir.display()
            );
        }
        *slot = Some(db.clone());
        Ok(db)
    }

    /// Channels to other nodes.
    pub fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    /// The TLS material in force.
    pub fn tls(&self) -> &TlsHolder {
        &self.inner.tls
    }

    /// The daemon's root cancellation token.
    pub fn stop_token(&self) -> &CancellationToken {
        &self.inner.stop
    }

    /// What this node is, if it is in a cluster.
    pub fn member(&self) -> Option<Member> {
        self.inner.member.read().expect("member lock").clone()
    }

    /// The routing mesh, while in a cluster.
    pub fn mesh(&self) -> Option<Arc<crate::mesh::Mesh>> {
        self.inner.mesh.read().expect("mesh lock").clone()
    }

    /// The task runner, if this node runs tasks.
    pub fn runner(&self) -> Option<Arc<crate::agent::runner::TaskRunner>> {
        self.inner.runner.get()
    }

    /// This daemon as the shared handle ([`crate::host`]).
    pub fn host(&self) -> Host {
        Arc::new(self.clone())
    }

    /// Records the cluster's members (from the leader's session).
    pub fn set_members(&self, members: std::collections::BTreeMap<NodeId, Role>) {
        *self.inner.members.write().expect("members lock") = Some(Arc::new(members));
    }

    /// What the member table from the leader's session says of `node`.
    pub fn member_role(&self, node: NodeId) -> Membership {
        match self.inner.members.read().expect("members lock").as_ref() {
            None => Membership::Unknown,
            Some(t) => t
                .get(&node)
                .copied()
                .map_or(Membership::NotMember, Membership::Member),
        }
    }

    /// The leader's address as last heard.
    pub fn leader_hint(&self) -> Option<String> {
        self.inner.leader_hint.borrow().clone()
    }

    /// Records the leader's address (from a heartbeat answer).
    pub fn set_leader_hint(&self, addr: &str) {
        if addr.is_empty() {
            return;
        }
        self.inner.leader_hint.send_if_modified(|h| {
            if h.as_deref() == Some(addr) {
                false
            } else {
                *h = Some(addr.to_string());
                true
            }
        });
    }

    /// Wakes when the leader's address changes.
    pub fn watch_leader_hint(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.inner.leader_hint.subscribe()
    }

    /// This node's cluster id, if it is in a cluster (without copying its credentials:
    /// every RPC asks).
    pub fn cluster_id(&self) -> Option<String> {
        self.inner
            .member
            .read()
            .expect("member lock")
            .as_ref()
            .map(|m| m.cluster_id.clone())
    }

    /// The manager runtime, or the error a worker gives.
    pub fn manager(&self) -> Result<Arc<Manager>> {
        self.refuse_if_locked()?;
        if let Some(m) = self.inner.manager.read().expect("manager lock").clone() {
            return Ok(m);
        }
        match self.member() {
            None => Err(Error::NotManager(
                "this node is not part of a cluster: run `orc init` or `orc join` first".into(),
            )),
            Some(_) => Err(Error::NotManager(
                "this node is not a manager: worker nodes cannot view or modify cluster state; run the command on a manager".into(),
            )),
        }
    }

    /// Persists (its TLS key sealed) and installs `m` as this node's membership.
    pub fn save_member(&self, m: &Member) -> Result<()> {
        let t = self.inner.db.open_tree("local")?;
        t.insert(MEMBER_KEY, self.seal_member(m)?)?;
        self.inner.db.flush()?;
        *self.inner.member.write().expect("member lock") = Some(m.clone());
        self.drop_other_key(m.role)
    }

    /// Records the managers' addresses the node last heard of (persisted when changed).
    pub fn set_managers(&self, managers: Vec<String>) -> Result<()> {
        let Some(mut m) = self.member() else {
            return Ok(());
        };
        if m.managers != managers && !managers.is_empty() {
            m.managers = managers;
            self.save_member(&m)?;
        }
        Ok(())
    }

    /// Starts the manager runtime. `bootstrap` initialises a new single-voter cluster.
    async fn start_manager(&self, bootstrap: Option<(u64, String)>) -> Result<Arc<Manager>> {
        let id = match (&bootstrap, self.member()) {
            (Some((id, _)), _) => *id,
            (None, Some(m)) => m.node_id.0,
            (None, None) => return Err(Error::Internal("no node id".into())),
        };
        let m = Manager::start(crate::manager::Start {
            id,
            bootstrap: bootstrap.map(|(_, addr)| addr),
            db: self.db().clone(),
            raft_db: self.raft_db()?,
            peers: self.peers().clone(),
            data_key: self.data_key()?,
            timings: self.config().raft,
            stop: self.stop_token().clone(),
            components: Arc::new(leader_components),
            metrics: self.inner.metrics.clone(),
        })
        .await?;
        *self.inner.manager.write().expect("manager lock") = Some(m.clone());
        self.spawn_key_follower(m.clone());
        Ok(m)
    }

    /// Stops the manager runtime (demotion, leave) and forgets its Raft data.
    async fn stop_manager(&self, wipe: bool) -> Result<()> {
        let m = self.inner.manager.write().expect("manager lock").take();
        if let Some(m) = m {
            m.shutdown().await;
        }
        if wipe {
            let raft_db = self.raft_db()?;
            for t in crate::raft::log_store::TREES {
                raft_db.drop_tree(t)?;
            }
            raft_db.flush()?;
            for t in crate::raft::state_machine::TREES {
                self.inner.db.drop_tree(t)?;
            }
            self.inner.db.flush()?;
        }
        Ok(())
    }

    /// Serves the cluster port on `listener` and starts the agent.
    fn start_cluster(&self, listener: tokio::net::TcpListener) {
        let token = self.inner.stop.child_token();
        *self.inner.cluster_stop.lock().expect("cluster lock") = Some(token.clone());
        let incoming =
            crate::net::cluster_incoming(listener, self.inner.tls.clone(), token.clone());
        let router = crate::api::cluster_router(self.host(), self.inner.runner.clone());
        let t2 = token.clone();
        tokio::spawn(async move {
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, t2.cancelled_owned())
                .await
            {
                tracing::error!("cluster port: {e}");
            }
        });
        let mesh = crate::mesh::Mesh::new("0.0.0.0", token.child_token());
        if self.inner.cfg.metrics {
            mesh.set_metrics(self.inner.metrics.clone());
        }
        *self.inner.mesh.write().expect("mesh lock") = Some(mesh.clone());
        if let Some(m) = self.member() {
            self.start_data_path(&mesh, &m, token.clone());
        }
        let docker_host = self.inner.cfg.docker_host.clone();
        crate::agent::spawn(self.host(), docker_host.clone(), token.clone());
        if let Some(m) = self.member() {
            crate::agent::session::spawn(
                crate::agent::session::Start {
                    host: self.host(),
                    node: m.node_id,
                    executor: self.inner.cfg.executor.clone(),
                    docker_host,
                    runner: self.inner.runner.clone(),
                },
                token,
            );
        }
    }

    /// Binds the data path (the configured port, else any free one) and serves it: other
    /// nodes' meshes reach this node's tasks through it ([`crate::mesh::tunnel`]).
    fn start_data_path(
        &self,
        mesh: &Arc<crate::mesh::Mesh>,
        m: &Member,
        token: tokio_util::sync::CancellationToken,
    ) {
        use crate::mesh::tunnel::{DataPath, Limits, Request, Resolution};
        let want = self.inner.cfg.data_path_port;
        let std_listener = std::net::TcpListener::bind(("0.0.0.0", want)).or_else(|e| {
            tracing::warn!(
                port = want,
                "data path: cannot listen ({e}); using a free port"
            );
            std::net::TcpListener::bind(("0.0.0.0", 0))
        });
        let listener = std_listener.and_then(|l| {
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)
        });
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(
                    "data path: cannot listen: {e}; other nodes cannot reach this node's tasks"
                );
                return;
            }
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let weak = Arc::downgrade(mesh);
        let daemon = Arc::downgrade(&self.inner);
        // A node the cluster no longer counts as a member is refused at once, as on the
        // cluster port: on the encrypted path `from` is its certificate's node; on the
        // plain path it is what the caller claims, so this stops a removed node that
        // names itself, not one that holds the key and names another.
        let resolve = move |req: &Request| match (weak.upgrade(), daemon.upgrade()) {
            (Some(mesh), Some(inner)) => {
                let d = Daemon { inner };
                if crate::api::auth::membership(&d.host(), req.from) == Membership::NotMember {
                    tracing::debug!(node = %req.from, "data path: refused a removed node");
                    return Resolution::Refused;
                }
                mesh.resolve(req)
            }
            _ => Resolution::Refused,
        };
        let dp = Arc::new(DataPath::new(
            m.node_id,
            Arc::new(resolve),
            Limits::default(),
        ));
        if let Err(e) = dp.set_credentials(&m.creds) {
            tracing::warn!("data path: credentials: {e}");
        }
        mesh.set_data_path(dp.clone());
        *self.inner.data_path.write().expect("data path lock") = Some(dp.clone());
        self.inner
            .data_port
            .store(port, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(port, "data path listening");
        tokio::spawn(dp.serve(listener, token));
    }

    /// The data path's port (0: none).
    pub fn data_port(&self) -> u16 {
        self.inner
            .data_port
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The data path, while in a cluster.
    pub fn data_path(&self) -> Option<Arc<crate::mesh::tunnel::DataPath>> {
        self.inner.data_path.read().expect("data path lock").clone()
    }

    /// The settings `orc init` asks for, checked.
    fn init_settings(&self, req: &InitParams) -> Result<crate::store::Settings> {
        let mut settings = crate::store::Settings::default();
        if req.cert_validity_secs > 0 {
            if req.cert_validity_secs < self.inner.cfg.min_cert_expiry_secs {
                return Err(Error::InvalidInput(format!(
                    "cert_validity_secs: must be at least {} s ({} s given)",
                    self.inner.cfg.min_cert_expiry_secs, req.cert_validity_secs
                )));
            }
            settings.cert_validity_secs = req.cert_validity_secs;
        }
        if req.heartbeat_period_ms > 0 {
            settings.heartbeat_period_ms = req.heartbeat_period_ms;
        }
        if !req.vip_range.is_empty() {
            settings.vip_range = crate::store::vip::VipRange::parse(&req.vip_range)?.to_string();
        }
        Ok(settings)
    }

    /// `orc init`. One sequence (make the cluster's secrets, `new_cluster`; start the
    /// manager, propose the cluster, save the membership) kept whole so that its undo on
    /// failure reads beside what it undoes.
    pub async fn init(&self, req: InitParams) -> Result<crate::proto::InitResponse> {
        let _g = self.inner.lifecycle.lock().await;
        self.refuse_if_locked()?;
        if self.member().is_some() {
            return Err(Error::Conflict(
                "this node is already part of a cluster: run `orc leave` first".into(),
            ));
        }
        let (advertise, listen) = addrs(&req.advertise_addr, &req.listen_addr)?;
        // A restore reads and checks its backup (and its key) before anything starts.
        let restore = req.restore.as_ref().map(restore_from).transpose()?;
        let listener = tokio::net::TcpListener::bind(&listen).await.map_err(|e| {
            Error::InvalidInput(format!("listen_addr: cannot listen on {listen}: {e}"))
        })?;
        let now = SystemTime::now();
        let node_id = NodeId(rand::random::<u64>() | 1);
        let cluster_id = hex::encode(rand::random::<[u8; 12]>());
        let settings = match &restore {
            Some((b, _, _)) => b.state.cluster.as_ref().map(|c| c.settings.clone()),
            None => None,
        };
        let settings = settings.map_or_else(|| self.init_settings(&req), Ok)?;
        let (root, creds) = first_manager_credentials(&cluster_id, node_id, &settings, now)?;
        let NewCluster {
            mut cluster,
            dk,
            mut unlock,
            worker_secret,
            manager_secret,
        } = new_cluster(
            &cluster_id,
            &root,
            settings,
            req.autolock && restore.is_none(),
        )?;
        // A restored autolocked cluster keeps the unlock key the operator already holds.
        let show_unlock = unlock.is_some();
        if let Some((_, _, Some(u))) = &restore {
            cluster.unlock_key = Some(u.seal_with(&dk)?);
            unlock = Some(u.clone());
        }
        let node = crate::store::Node {
            status: crate::store::NodeStatus::Ready,
            ..crate::store::Node::new(
                node_id,
                advertise.clone(),
                Role::Manager,
                crate::store::NodeDescription {
                    generic_resources: self.config().generic_resources.clone(),
                    ..crate::agent::describe(self.config().docker_host.as_deref()).await
                },
                now_ms(),
            )
        };
        let (node, restored) = match &restore {
            Some((b, old_dk, _)) => {
                let plan = crate::backup::plan_restore(b, old_dk, &dk, node)?;
                (plan.me, plan.commands)
            }
            None => (node, vec![]),
        };
        let member = Member {
            node_id,
            cluster_id: cluster_id.clone(),
            role: Role::Manager,
            advertise_addr: advertise.clone(),
            listen_addr: listen,
            creds: creds.clone(),
            managers: vec![advertise.clone()],
        };
        self.install_data_key(dk, unlock.clone())?;
        self.inner.tls.set(creds)?;
        let result = async {
            let m = self
                .start_manager(Some((node_id.0, advertise.clone())))
                .await?;
            m.propose(crate::store::Command::InitCluster {
                cluster: cluster.clone(),
                node,
            })
            .await?;
            for cmd in restored {
                m.propose(cmd).await?;
            }
            self.save_member(&member)
        }
        .await;
        if let Err(e) = result {
            let _ = self.stop_manager(true).await;
            self.inner.tls.clear();
            let _ = self.forget_keys();
            return Err(e);
        }
        self.start_cluster(listener);
        let digest = crate::ca::digest_of_pem(&cluster.ca_cert_pem)?;
        let token = |secret| crate::ca::Token {
            ca_digest: digest.clone(),
            secret,
        };
        Ok(crate::proto::InitResponse {
            node_id: node_id.to_string(),
            cluster_id,
            worker_token: token(worker_secret).to_string(),
            manager_token: token(manager_secret).to_string(),
            advertise_addr: advertise,
            unlock_key: unlock
                .filter(|_| show_unlock)
                .map(|u| u.reveal())
                .unwrap_or_default(),
            removed_managers: Vec::new(),
        })
    }

    /// `orc join`.
    pub async fn join(&self, req: crate::proto::JoinRequest) -> Result<crate::proto::JoinResponse> {
        let _g = self.inner.lifecycle.lock().await;
        self.refuse_if_locked()?;
        if self.member().is_some() {
            return Err(Error::Conflict(
                "this node is already part of a cluster: run `orc leave` first".into(),
            ));
        }
        let token: crate::ca::Token = req.token.parse()?;
        let (remote, advertise, listen) = join_addrs(&req)?;
        let listener = tokio::net::TcpListener::bind(&listen).await.map_err(|e| {
            Error::InvalidInput(format!("listen_addr: cannot listen on {listen}: {e}"))
        })?;
        let (key_pem, csr_pem) = crate::ca::new_key_and_csr()?;
        let resp = ask_to_join(&remote, &token, &advertise, csr_pem).await?;
        let role: Role = resp.role.parse()?;
        let node_id: NodeId = resp.node_id.parse()?;
        let creds = check_join_answer(&remote, &token, &resp, key_pem, node_id, role)?;
        let member = Member {
            node_id,
            cluster_id: resp.cluster_id.clone(),
            role,
            advertise_addr: advertise,
            listen_addr: listen,
            creds: creds.clone(),
            managers: if resp.managers.is_empty() {
                vec![remote]
            } else {
                resp.managers
            },
        };
        self.receive_manager_keys(resp.manager_keys.as_ref(), role)?;
        self.inner.tls.set(creds)?;
        self.save_member(&member)?;
        if role == Role::Manager {
            self.start_manager(None).await?;
        }
        self.start_cluster(listener);
        if role == Role::Manager {
            // Return once the leader has made this node a voter.
            let m = self.manager()?;
            m.wait_voter(Duration::from_secs(30)).await?;
        }
        Ok(crate::proto::JoinResponse {
            node_id: node_id.to_string(),
            role: role.to_string(),
            cluster_id: resp.cluster_id,
        })
    }

    /// `orc leave`.
    pub async fn leave(&self, force: bool) -> Result<()> {
        let _g = self.inner.lifecycle.lock().await;
        self.refuse_if_locked()?;
        let Some(m) = self.member() else {
            return Err(Error::Conflict("this node is not part of a cluster".into()));
        };
        if m.role == Role::Manager && !force {
            return Err(Error::Conflict(
                "this node is a manager: demote it first (`orc node demote`), or use `orc leave --force` to leave anyway (the cluster may lose quorum)".into(),
            ));
        }
        self.stop_manager(true).await?;
        if let Some(t) = self.inner.cluster_stop.lock().expect("cluster lock").take() {
            t.cancel();
        }
        self.inner.tls.clear();
        *self.inner.members.write().expect("members lock") = None;
        self.inner.db.open_tree("local")?.remove(MEMBER_KEY)?;
        self.inner.db.flush()?;
        *self.inner.member.write().expect("member lock") = None;
        self.forget_keys()
    }

    /// Applies a role change decided by the managers (seen in a heartbeat answer): renew
    /// the certificate with the new role, then start or stop the manager runtime.
    pub async fn change_role(&self, creds: NodeCredentials, role: Role) -> Result<()> {
        let _g = self.inner.lifecycle.lock().await;
        let Some(mut m) = self.member() else {
            return Ok(());
        };
        let old = m.role;
        m.creds = creds.clone();
        if let Some(dp) = self.data_path() {
            if let Err(e) = dp.set_credentials(&creds) {
                tracing::warn!("data path: new credentials: {e}");
            }
        }
        m.role = role;
        self.inner.tls.set(creds)?;
        self.save_member(&m)?;
        if old != role {
            tracing::info!(from = %old, to = %role, "role changed");
            match role {
                Role::Manager => {
                    if self.inner.manager.read().expect("manager lock").is_none() {
                        self.stop_manager(true).await?;
                        self.start_manager(None).await?;
                    }
                }
                Role::Worker => self.stop_manager(true).await?,
            }
        }
        Ok(())
    }

    /// Stops everything (daemon shutdown).
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        let m = self.inner.manager.write().expect("manager lock").take();
        if let Some(m) = m {
            m.shutdown().await;
        }
        let _ = self.inner.db.flush_async().await;
    }
}

/// The leader components the manager runtime starts each time this node becomes leader
/// (besides its own: the status batcher and the membership reconciler).
fn leader_components(m: Arc<Manager>, leading: CancellationToken) {
    tokio::spawn(crate::dispatcher::run_monitor(m.clone(), leading.clone()));
    pipeline::start(m, leading);
}

impl From<Daemon> for Host {
    fn from(d: Daemon) -> Host {
        Arc::new(d)
    }
}

/// The daemon as the parts below it see it: each method is the inherent one above.
#[tonic::async_trait]
impl crate::host::LocalNode for Daemon {
    fn generic_resources(&self) -> std::collections::BTreeMap<String, u64> {
        self.inner.cfg.generic_resources.clone()
    }

    fn metrics(&self) -> Option<Arc<crate::metrics::Metrics>> {
        self.inner.cfg.metrics.then(|| self.inner.metrics.clone())
    }

    fn db(&self) -> &sled::Db {
        Daemon::db(self)
    }
    fn peers(&self) -> &Peers {
        Daemon::peers(self)
    }
    fn tls(&self) -> &TlsHolder {
        Daemon::tls(self)
    }
    fn stop_token(&self) -> &CancellationToken {
        Daemon::stop_token(self)
    }
    fn member(&self) -> Option<Member> {
        Daemon::member(self)
    }
    fn cluster_id(&self) -> Option<String> {
        Daemon::cluster_id(self)
    }
    fn manager(&self) -> Result<Arc<Manager>> {
        Daemon::manager(self)
    }
    fn mesh(&self) -> Option<Arc<crate::mesh::Mesh>> {
        Daemon::mesh(self)
    }

    fn data_port(&self) -> u16 {
        Daemon::data_port(self)
    }
    fn set_members(&self, members: std::collections::BTreeMap<NodeId, Role>) {
        Daemon::set_members(self, members)
    }
    fn member_role(&self, node: NodeId) -> Membership {
        Daemon::member_role(self, node)
    }
    fn leader_hint(&self) -> Option<String> {
        Daemon::leader_hint(self)
    }
    fn set_leader_hint(&self, addr: &str) {
        Daemon::set_leader_hint(self, addr)
    }
    fn watch_leader_hint(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        Daemon::watch_leader_hint(self)
    }
    fn set_managers(&self, managers: Vec<String>) -> Result<()> {
        Daemon::set_managers(self, managers)
    }
    fn refuse_if_locked(&self) -> Result<()> {
        Daemon::refuse_if_locked(self)
    }
    fn dashboard_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.cfg.dashboard_addr
    }
    fn locked_member(&self) -> Option<Member> {
        Daemon::locked_member(self)
    }
    fn receive_manager_keys(
        &self,
        keys: Option<&crate::proto::ManagerKeys>,
        role: Role,
    ) -> Result<()> {
        Daemon::receive_manager_keys(self, keys, role)
    }
    async fn init(&self, params: InitParams) -> Result<crate::proto::InitResponse> {
        Daemon::init(self, params).await
    }
    async fn join(&self, req: crate::proto::JoinRequest) -> Result<crate::proto::JoinResponse> {
        Daemon::join(self, req).await
    }
    async fn force_new_cluster(&self, advertise_addr: &str) -> Result<crate::proto::InitResponse> {
        Daemon::force_new_cluster(self, advertise_addr).await
    }
    async fn leave(&self, force: bool) -> Result<()> {
        Daemon::leave(self, force).await
    }
    async fn unlock(&self, key: &str) -> Result<()> {
        Daemon::unlock(self, key).await
    }
    async fn change_role(&self, creds: NodeCredentials, role: Role) -> Result<()> {
        Daemon::change_role(self, creds, role).await
    }
}

/// The default cluster port.
pub const DEFAULT_PORT: u16 = 4242;

/// The addresses of `orc join`: the manager to call (with the default port), and this
/// node's advertised and listen addresses (advertised: given, else the local address
/// that routes to the manager).
fn join_addrs(req: &crate::proto::JoinRequest) -> Result<(String, String, String)> {
    let remote = with_default_port(&req.remote_addr).map_err(|_| {
        Error::InvalidInput(format!(
            "{:?}: expected a manager address IP[:PORT]",
            req.remote_addr
        ))
    })?;
    let advertise = if req.advertise_addr.trim().is_empty() {
        route_to(&remote).ok_or_else(|| {
            Error::InvalidInput(format!(
                "advertise_addr: no local address routes to {remote}; give one"
            ))
        })?
    } else {
        req.advertise_addr.clone()
    };
    let (advertise, listen) = addrs(&advertise, &req.listen_addr)?;
    Ok((remote, advertise, listen))
}

/// `Ca.Join` on the manager at `remote`, trusting only the CA the token names; gives up
/// after 30 s.
async fn ask_to_join(
    remote: &str,
    token: &crate::ca::Token,
    advertise: &str,
    csr_pem: String,
) -> Result<crate::proto::CaJoinResponse> {
    let client_cfg = crate::ca::join_client_config(&token.ca_digest)?;
    let ch = crate::net::tls_channel(remote, client_cfg, Duration::from_secs(30));
    let hostname = crate::agent::hostname();
    let mut client = crate::proto::ca_client::CaClient::new(ch);
    let call = client.join(crate::proto::CaJoinRequest {
        secret: token.secret.clone(),
        csr_pem,
        advertise_addr: advertise.to_string(),
        hostname,
        forwarded_for: String::new(),
    });
    match tokio::time::timeout(Duration::from_secs(30), call).await {
        Err(_) => Err(Error::Unavailable(format!(
            "cannot join through {remote}: no answer within 30 s"
        ))),
        Ok(Err(s)) => Err(join_error(remote, s)),
        Ok(Ok(r)) => Ok(r.into_inner()),
    }
}

fn with_default_port(a: &str) -> std::result::Result<String, ()> {
    let a = a.trim();
    if a.is_empty() {
        return Err(());
    }
    let full = if a.parse::<std::net::IpAddr>().is_ok() {
        format!("{a}:{DEFAULT_PORT}")
    } else {
        a.to_string()
    };
    full.parse::<std::net::SocketAddr>().map_err(|_| ())?;
    Ok(full)
}

/// The local address that routes to `remote` (`IP:PORT`): the default advertise
/// address of a joining node. Connecting a UDP socket sends nothing; it only asks the
/// kernel for the route, from this daemon's own network namespace.
fn route_to(remote: &str) -> Option<String> {
    let target = remote.parse::<std::net::SocketAddr>().ok()?;
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect(target).ok()?;
    Some(s.local_addr().ok()?.ip().to_string())
}

/// Checks `advertise_addr` and `listen_addr` (`--advertise-addr`, `--listen-addr`),
/// filling defaults.
fn addrs(advertise: &str, listen: &str) -> Result<(String, String)> {
    let adv = with_default_port(advertise).map_err(|_| {
        Error::InvalidInput(format!(
            "advertise_addr: expected IP[:PORT], found {advertise:?}"
        ))
    })?;
    let port = adv.rsplit(':').next().unwrap_or("4242").to_string();
    let listen = if listen.trim().is_empty() {
        format!("0.0.0.0:{port}")
    } else {
        listen.parse::<std::net::SocketAddr>().map_err(|_| {
            Error::InvalidInput(format!("listen_addr: expected IP:PORT, found {listen:?}"))
        })?;
        listen.to_string()
    };
    Ok((adv, listen))
}

/// A new cluster: its record, with the CA key and the secrets sealed by a new data key
/// before they reach Raft, and what is shown once in the clear.
struct NewCluster {
    /// The record `InitCluster` proposes.
    cluster: crate::store::Cluster,
    /// The data key that sealed it.
    dk: crate::keys::DataKey,
    /// The unlock key, with autolock.
    unlock: Option<crate::keys::UnlockKey>,
    /// The workers' join secret.
    worker_secret: String,
    /// The managers' join secret.
    manager_secret: String,
}

/// Makes a new cluster's secrets and its record (see [`NewCluster`]).
fn new_cluster(
    cluster_id: &str,
    root: &crate::ca::RootCa,
    settings: crate::store::Settings,
    autolock: bool,
) -> Result<NewCluster> {
    // The data key seals the CA key and the secrets before they reach Raft.
    let dk = crate::keys::DataKey::generate()?;
    let unlock = if autolock {
        Some(crate::keys::UnlockKey::generate()?)
    } else {
        None
    };
    let worker_secret = crate::ca::new_secret();
    let manager_secret = crate::ca::new_secret();
    use crate::keys::Purpose;
    let cluster = crate::store::Cluster {
        id: cluster_id.to_string(),
        ca_cert_pem: root.cert_pem().to_string(),
        ca_key: dk.seal_str(Purpose::CaKey, root.key_pem())?,
        worker_secret: dk.seal_str(Purpose::WorkerSecret, &worker_secret)?,
        manager_secret: dk.seal_str(Purpose::ManagerSecret, &manager_secret)?,
        unlock_key: unlock.as_ref().map(|u| u.seal_with(&dk)).transpose()?,
        settings,
        created_ms: now_ms(),
        vip_cursor: 0,
    };
    Ok(NewCluster {
        cluster,
        dk,
        unlock,
        worker_secret,
        manager_secret,
    })
}

/// The backup of `orc init --restore`, read and checked, with the data key that opens
/// it (and its unlock key, for an autolocked cluster's).
#[allow(clippy::type_complexity)]
fn restore_from(
    r: &crate::host::RestoreFrom,
) -> Result<(
    crate::backup::Backup,
    crate::keys::DataKey,
    Option<crate::keys::UnlockKey>,
)> {
    let b = crate::backup::Backup::read_file(&r.path)?;
    let unlock = (!r.unlock_key.is_empty()).then_some(r.unlock_key.as_str());
    let (dk, u) = b.open_key(unlock)?;
    Ok((b, dk, u))
}

/// A new cluster's root CA, and the first manager's credentials under it.
fn first_manager_credentials(
    cluster_id: &str,
    node_id: NodeId,
    settings: &crate::store::Settings,
    now: SystemTime,
) -> Result<(crate::ca::RootCa, NodeCredentials)> {
    let root = crate::ca::RootCa::generate(cluster_id, now)?;
    let (key_pem, csr_pem) = crate::ca::new_key_and_csr()?;
    let cert_pem = root.issue(
        &csr_pem,
        node_id,
        Role::Manager,
        cluster_id,
        Duration::from_secs(settings.cert_validity_secs),
        now,
    )?;
    let creds = NodeCredentials {
        ca_cert_pem: root.cert_pem().to_string(),
        cert_pem,
        key_pem,
    };
    Ok((root, creds))
}

/// What the manager sent must be what the token pinned and what it announced: the root
/// of the token's digest, a certificate for the node id, cluster and role of the answer,
/// chaining to that root. Gives the node's credentials (with its own `key_pem`).
fn check_join_answer(
    remote: &str,
    token: &crate::ca::Token,
    resp: &crate::proto::CaJoinResponse,
    key_pem: String,
    node_id: NodeId,
    role: Role,
) -> Result<NodeCredentials> {
    let refused = |why: String| Error::PermissionDenied(format!("join through {remote}: {why}"));
    let pinned = NodeCredentials {
        ca_cert_pem: resp.ca_cert_pem.clone(),
        cert_pem: String::new(),
        key_pem: String::new(),
    };
    if !pinned.trusts(&token.ca_digest) {
        return Err(refused(
            "the root CA sent is not the one of the join token".into(),
        ));
    }
    let creds = NodeCredentials {
        ca_cert_pem: resp.ca_cert_pem.clone(),
        cert_pem: resp.cert_pem.clone(),
        key_pem,
    };
    let got = creds.identity()?;
    if got.node_id != node_id || got.cluster_id != resp.cluster_id || got.role != role {
        return Err(refused(format!(
            "the certificate sent names node {} ({}) of cluster {}, the answer said {node_id} ({role}) of {}",
            got.node_id, got.role, got.cluster_id, resp.cluster_id
        )));
    }
    creds.check_own(&creds.cert_pem, rustls_pki_types::UnixTime::now())?;
    Ok(creds)
}

fn join_error(remote: &str, s: tonic::Status) -> Error {
    let msg = s.message().to_string();
    match s.code() {
        tonic::Code::PermissionDenied
        | tonic::Code::Unauthenticated
        | tonic::Code::InvalidArgument => {
            Error::PermissionDenied(format!("join refused by {remote}: {msg}"))
        }
        _ => {
            let cause = short_transport(&s);
            if format!("{s:?} {cause}").contains("root CA of the join token") {
                Error::PermissionDenied(format!(
                    "cannot join through {remote}: the manager's CA does not match the join token"
                ))
            } else {
                Error::Unavailable(format!("cannot join through {remote}: {cause}"))
            }
        }
    }
}

/// Reduces a tonic transport error to its cause.
pub fn short_transport(s: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut cause = s.message().to_string();
    let mut src = s.source();
    while let Some(e) = src {
        cause = e.to_string();
        src = e.source();
    }
    if cause.is_empty() {
        "unreachable".into()
    } else if cause.contains("deadline has elapsed") {
        "timed out".into()
    } else {
        cause
    }
}

impl crate::dashboard::Source for Daemon {
    fn manager(&self) -> Option<Arc<Manager>> {
        Daemon::manager(self).ok()
    }
    fn node_id(&self) -> Option<NodeId> {
        self.member().map(|m| m.node_id)
    }
}

/// Opens (or makes) the sled database at `dir` with a cache of `cache_bytes`; the error
/// names the directory.
fn open_db(dir: &std::path::Path, cache_bytes: u64) -> Result<sled::Db> {
    sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes)
        .open()
        .map_err(|e| Error::Internal(format!("{}: cannot open the database: {e}", dir.display())))
}
