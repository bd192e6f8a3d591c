//! The manager runtime: a Raft node and, while it leads, the leader-only components.
//!
//! This is the handle the components share: the dispatcher, the control API and the
//! daemon reach the replicated state through a [`Manager`] (read a snapshot, propose a
//! command), never through each other. It sits below the components, so it does not
//! name them: the daemon hands [`Manager::start`] the leader components to run
//! ([`LeaderComponents`]), as it hands it the database, the peers and the data key.
//!
//! Life cycle: [`Manager::start`] opens the sled stores and starts openraft; a watcher
//! follows openraft's metrics and, each time this node becomes leader, starts the
//! leader components under a child token, cancelled when leadership is lost:
//!
//! - the status batcher ([`batch`]) and the session table ([`sessions`]), reset;
//! - the components the daemon gave (the dispatcher's down-detector, the orchestrator
//!   and the scheduler);
//! - the membership reconciler ([`reconcile_membership`]), which makes the Raft voters
//!   follow the node table: a node whose role is `manager` is added as a learner, then
//!   promoted to voter; a voter whose role became `worker` (demotion) or that was
//!   removed is taken out of the voters. One change at a time, as Raft requires.
//!
//! Writes go through [`Manager::propose`], which refuses at once, with a clear message,
//! when this leader has not heard from a quorum recently, instead of hanging. A control
//! write proposed for a request (inside [`once::run`]) is wrapped so that it
//! applies once, however often the request is retried.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{BasicNode, Config, ServerState};
use tokio_util::sync::CancellationToken;

pub mod batch;
pub mod keys;
pub mod once;
pub mod propose;
pub mod sessions;

use crate::error::{Error, Result};
use crate::net::Peers;
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::StateMachineStore;
use crate::raft::Raft;
use crate::store::{Command, NodeId, Response, Role, State};

/// The largest command one Raft entry may carry, encoded: well under a Raft
/// message ([`crate::raft::network::MAX_RAFT_MESSAGE`]).
pub const MAX_ENTRY_BYTES: usize = crate::raft::network::MAX_RAFT_MESSAGE * 3 / 4;

/// The size at which group commit stops adding commands to an entry, and the size the
/// leader's own large writes are cut to ([`crate::daemon::pipeline`]): half of what one
/// AppendEntries carries ([`crate::raft::network::APPEND_BYTES`]), so that an entry is
/// sent, written and answered well within the time openraft gives it.
pub const BATCH_BYTES: usize = crate::raft::network::APPEND_BYTES / 2;

// A read of the log for replication (`raft::log_store::LIMITED_READ_BYTES`) with the
// largest batch on top (its crossing entry), framing included, fits one AppendEntries.
const _: () = assert!(
    crate::raft::log_store::LIMITED_READ_BYTES + BATCH_BYTES + 64
        < crate::raft::network::APPEND_BYTES
);

/// Raft timings, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct RaftTimings {
    /// Leader heartbeat period.
    pub heartbeat_ms: u64,
    /// Lower bound of the election time-out.
    pub election_min_ms: u64,
    /// Upper bound of the election time-out.
    pub election_max_ms: u64,
    /// Log entries since the last snapshot that trigger a new one (and log compaction).
    pub snapshot_logs: u64,
}

impl Default for RaftTimings {
    fn default() -> Self {
        RaftTimings {
            heartbeat_ms: 100,
            election_min_ms: 300,
            election_max_ms: 600,
            snapshot_logs: 5000,
        }
    }
}

/// A running manager.
pub struct Manager {
    /// This node's Raft id.
    pub id: u64,
    /// The Raft node.
    pub raft: Raft,
    /// The applied state tables.
    pub sm: StateMachineStore,
    /// The dispatcher's in-memory session table (meaningful on the leader).
    pub sessions: sessions::Sessions,
    /// The cluster's data key, which seals the CA key and the join secrets in the
    /// state (see [`keys`]: `root_ca`, `join_secret`).
    data_key: crate::keys::DataKey,
    /// The control writes running on this leader now (see [`once`]).
    pub(crate) in_flight: once::InFlight,
    timings: RaftTimings,
    stop: CancellationToken,
    leader_stop: Mutex<Option<(CancellationToken, batch::StatusBatcher)>>,
    components: LeaderComponents,
    /// The node's metrics, which the leader components count into too.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The queue of this manager's writes into Raft (group commit).
    proposer: propose::Proposer,
    /// The runtime Raft's tasks run on (stopped with the manager).
    raft_runtime: crate::raft::RaftRuntime,
}

/// Starts the leader components the daemon wires in (the dispatcher's down-detector, the
/// orchestrator, the scheduler), each under the token given, cancelled when leadership
/// is lost.
pub type LeaderComponents = Arc<dyn Fn(Arc<Manager>, CancellationToken) + Send + Sync>;

/// What [`Manager::start`] needs of its node.
pub struct Start {
    /// This node's Raft id (its node id).
    pub id: u64,
    /// `Some(addr)` initialises a new cluster with this node, at `addr`, as its only
    /// voter.
    pub bootstrap: Option<String>,
    /// The node's database (the state machine lives in its trees).
    pub db: sled::Db,
    /// The Raft log's own database.
    pub raft_db: sled::Db,
    /// Channels to the other managers.
    pub peers: Peers,
    /// The cluster's data key.
    pub data_key: crate::keys::DataKey,
    /// Raft timings.
    pub timings: RaftTimings,
    /// The node's token: the manager stops with it (a child token).
    pub stop: CancellationToken,
    /// The leader components.
    pub components: LeaderComponents,
    /// The node's metrics (proposal latency, snapshots).
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Manager {
    /// Starts Raft on the node's database.
    pub async fn start(start: Start) -> Result<Arc<Manager>> {
        let Start {
            id: member_id,
            bootstrap,
            db,
            raft_db,
            peers,
            data_key,
            timings,
            stop,
            components,
            metrics,
        } = start;
        let config = Config {
            cluster_name: "orc".into(),
            heartbeat_interval: timings.heartbeat_ms,
            election_timeout_min: timings.election_min_ms,
            election_timeout_max: timings.election_max_ms,
            install_snapshot_timeout: 10_000,
            snapshot_max_chunk_size: crate::raft::network::SNAPSHOT_CHUNK,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(timings.snapshot_logs),
            max_in_snapshot_log_to_keep: (timings.snapshot_logs / 5).min(1000),
            max_payload_entries: 500,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Internal(format!("raft config: {e}")))?;
        let log = LogStore::open(&raft_db, &db)?;
        let sm = StateMachineStore::open(&db)?;
        log.keep_applied_as_bytes(sm.subscribe());
        // Raft's tasks and its channels live on a runtime of their own.
        let raft_runtime = crate::raft::RaftRuntime::new()?;
        let network = Network::new(peers.apart());
        let raft = {
            let sm = sm.clone();
            raft_runtime
                .run(async move { Raft::new(member_id, Arc::new(config), network, log, sm).await })
                .await?
                .map_err(|e| Error::Internal(format!("raft: {e}")))?
        };
        let bootstrapped = bootstrap.is_some();
        if let Some(addr) = bootstrap {
            let mut members = BTreeMap::new();
            members.insert(member_id, BasicNode { addr });
            raft.initialize(members)
                .await
                .map_err(|e| Error::Internal(format!("raft initialize: {e}")))?;
        }
        let proposer = {
            let raft = raft.clone();
            propose::Proposer::start(raft.clone(), move || quorum_hint(&raft))
        };
        let m = Arc::new(Manager {
            id: member_id,
            proposer,
            raft,
            sm,
            sessions: Default::default(),
            data_key,
            in_flight: Default::default(),
            timings,
            stop: stop.child_token(),
            leader_stop: Mutex::new(None),
            components,
            metrics,
            raft_runtime,
        });
        tokio::spawn(watch_leadership(m.clone()));
        tokio::spawn(count_snapshots(m.clone()));
        if bootstrapped {
            // A cluster of one elects its voter at once, on Raft's runtime: the first
            // write (`InitCluster`) must find it leading, not race the election.
            if let Err(e) = m.wait_leader(Duration::from_secs(10)).await {
                // Its watchers hold `m`: stop them and Raft's runtime, not leave them.
                m.shutdown().await;
                return Err(e);
            }
        }
        Ok(m)
    }

    /// Stops Raft and the leader components.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        if let Some((t, _)) = self.leader_stop.lock().expect("leader lock").take() {
            t.cancel();
        }
        let _ = self.raft.shutdown().await;
        self.raft_runtime.stop();
    }

    /// The cluster's data key.
    pub fn data_key(&self) -> &crate::keys::DataKey {
        &self.data_key
    }

    /// Cancelled when this manager stops.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// While this manager leads: the token cancelled when leadership is lost, and the
    /// dispatcher's status batcher.
    pub fn leading(&self) -> Option<(CancellationToken, batch::StatusBatcher)> {
        self.leader_stop.lock().expect("leader lock").clone()
    }

    /// Reads the applied state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.sm.read(f)
    }

    /// The current leader's id, if known.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// True when this node leads.
    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.id)
    }

    /// The cluster address of a manager, from the Raft membership.
    pub fn addr_of(&self, id: u64) -> Option<String> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().get_node(&id).map(|n| n.addr.clone())
    }

    /// The voters of the current membership.
    pub fn voters(&self) -> BTreeSet<u64> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().voter_ids().collect()
    }

    /// Waits for a leader to be known, for at most `wait`.
    pub async fn wait_leader(&self, wait: Duration) -> Result<u64> {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(l) = rx.borrow().current_leader {
                return Ok(l);
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { break },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        Err(Error::NoLeader(format!(
            "no leader: this manager cannot reach a quorum of the managers ({})",
            self.quorum_hint()
        )))
    }

    fn quorum_hint(&self) -> String {
        quorum_hint(&self.raft)
    }

    /// Waits until this node is a voter (after joining as a manager).
    pub async fn wait_voter(&self, wait: Duration) -> Result<()> {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.voters().contains(&self.id) {
                return Ok(());
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { break },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        Err(Error::Unavailable(
            "joined, but the leader has not made this node a Raft voter yet".into(),
        ))
    }

    /// Proposes a command; returns once it is committed and applied here. Must run on
    /// the leader (callers forward otherwise). Inside a control write
    /// ([`once::run`]) the command applies once per request: a retry whose first
    /// attempt was applied changes nothing and answers [`Response::Ok`].
    pub async fn propose(&self, cmd: Command) -> Result<Response> {
        self.propose_once(cmd, None).await
    }

    /// [`Manager::propose`] for a control write whose reply the handler knows before it
    /// writes (an id it made, a certificate it issued): `reply` is recorded with the
    /// request, and a retry gets it instead of the handler's new one. `reply` must be
    /// the message the RPC answers with.
    pub async fn propose_replying(
        &self,
        cmd: Command,
        reply: &impl prost::Message,
    ) -> Result<Response> {
        self.propose_once(cmd, Some(reply.encode_to_vec())).await
    }

    async fn propose_once(&self, cmd: Command, reply: Option<Vec<u8>>) -> Result<Response> {
        let cmd = once::wrap(cmd, reply, crate::units::now_ms())?;
        self.propose_command(cmd).await.map(once::note)
    }

    async fn propose_command(&self, cmd: Command) -> Result<Response> {
        self.propose_queued(cmd).await?.await
    }

    /// Queues a write of this leader's own (not a control request's: it is proposed
    /// without the request's record, [`once`]) behind those queued before it, and
    /// returns once it is queued, with what waits for its outcome (as
    /// [`Manager::propose`]'s). Writes queued one after another are applied in that
    /// order; the caller may queue the next before the first is applied.
    pub async fn propose_queued(
        &self,
        cmd: Command,
    ) -> Result<impl std::future::Future<Output = Result<Response>> + Send + 'static> {
        // An entry must fit in one Raft message, or no follower could ever take it.
        let bytes = crate::proto::convert::command::encode(&cmd);
        let size = bytes.len();
        if size > MAX_ENTRY_BYTES {
            return Err(Error::InvalidInput(format!(
                "the change is too large for the cluster's log ({:.1} MiB; at most {} MiB)",
                size as f64 / 1048576.0,
                MAX_ENTRY_BYTES >> 20
            )));
        }
        // A leader that lost its quorum would wait forever: refuse at once instead.
        let stale = {
            // Read in place: a clone of the metrics cost an allocation per write.
            let m = self.raft.metrics();
            let m = m.borrow();
            m.state == ServerState::Leader
                && m.membership_config.membership().voter_ids().count() > 1
                && m.millis_since_quorum_ack
                    .map(|ms| ms > self.timings.election_max_ms * 2)
                    .unwrap_or(false)
        };
        if stale {
            return Err(Error::NoQuorum(format!(
                "no quorum: this manager has not heard from a majority of the managers ({}); the write was refused",
                self.quorum_hint()
            )));
        }
        let started = std::time::Instant::now();
        let written = self.proposer.queue(cmd, bytes).await?;
        let metrics = self.metrics.clone();
        Ok(async move {
            let written = written.await;
            if written.is_ok() {
                metrics
                    .raft
                    .proposal_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            match written? {
                Response::Rejected(why) => Err(Error::Conflict(why)),
                ok => Ok(ok),
            }
        })
    }

    /// Starts or stops the leader components as leadership comes and goes.
    fn set_leading(&self, me: &Arc<Manager>, leading: bool) {
        let mut g = self.leader_stop.lock().expect("leader lock");
        match (leading, g.is_some()) {
            (true, false) => {
                tracing::info!(node = %NodeId(self.id), "became leader");
                let t = self.stop.child_token();
                self.sessions.reset_all(tokio::time::Instant::now());
                tokio::spawn(reconcile_membership(me.clone(), t.clone()));
                let batcher = batch::StatusBatcher::start(me.clone(), t.clone());
                (self.components)(me.clone(), t.clone());
                *g = Some((t, batcher));
            }
            (false, true) => {
                tracing::info!(node = %NodeId(self.id), "lost leadership");
                if let Some((t, _)) = g.take() {
                    t.cancel();
                }
            }
            _ => {}
        }
    }
}

async fn watch_leadership(m: Arc<Manager>) {
    let mut rx = m.raft.metrics();
    let mut last_leader = None;
    loop {
        // One read guard at a time: a second `borrow()` in the same statement waits
        // behind RaftCore's next metrics send, which waits for the first guard (a
        // deadlock that froze a leader under load).
        let (leader, term, state, applied_term) = {
            let metrics = rx.borrow();
            (
                metrics.current_leader,
                metrics.current_term,
                metrics.state,
                metrics.last_applied.map(|l| l.leader_id.term),
            )
        };
        let leading = leads(m.id, leader, state, term, applied_term);
        // Every manager tells of each leader it learns of (`leader elect`).
        if let Some(l) = leader.filter(|_| leader != last_leader) {
            m.sm.events().publish([crate::store::events::EventBody::new(
                "leader",
                "elect",
                NodeId(l).to_string(),
                "",
            )
            .attr("term", term.to_string())]);
        }
        last_leader = leader;
        m.set_leading(&m, leading);
        tokio::select! {
            _ = m.stop.cancelled() => break,
            r = rx.changed() => if r.is_err() { break },
        }
    }
    m.set_leading(&m, false);
}

/// Whether this manager (`me`) runs the leader's components: it leads, and it has
/// applied an entry of its own term (the one a leader appends when elected), so every
/// entry an earlier leader committed is applied here too. Before that its state may be
/// behind what the last leader showed the nodes: sessions opened then found the tables
/// the nodes held newer than the leader's and sent each node the whole endpoint table
/// again (700 MB at 1,000 nodes in one run), and the orchestrator would decide on tasks
/// as they were. Pure.
pub fn leads(
    me: u64,
    leader: Option<u64>,
    state: ServerState,
    term: u64,
    applied_term: Option<u64>,
) -> bool {
    leader == Some(me) && state == ServerState::Leader && applied_term >= Some(term)
}

/// How many managers there are and how many make a quorum, for error messages.
fn quorum_hint(raft: &Raft) -> String {
    let voters = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .count();
    format!(
        "{voters} managers in the cluster, {} needed for quorum",
        voters / 2 + 1
    )
}

/// One step of membership reconciliation: what should change next, given the voters and
/// the node table. Pure, so it is tested without Raft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipStep {
    /// Add this manager as a learner, then make it a voter.
    Add(u64, String),
    /// Take this voter out.
    Remove(u64),
}

/// Decides the next membership change. Adds come before removals, so that demoting one
/// manager while promoting another never dips below the intended size. The leader may
/// remove itself (its own demotion): openraft keeps it leading until the change is
/// committed, then it steps down and the others elect a new leader.
pub fn next_membership_step(voters: &BTreeSet<u64>, state: &State) -> Option<MembershipStep> {
    for n in state.managers() {
        if !voters.contains(&n.id.0) {
            return Some(MembershipStep::Add(n.id.0, n.addr.clone()));
        }
    }
    for v in voters {
        let wanted = state
            .nodes
            .get(&NodeId(*v))
            .map(|n| n.role == Role::Manager)
            .unwrap_or(false);
        if !wanted && voters.len() > 1 {
            return Some(MembershipStep::Remove(*v));
        }
    }
    None
}

async fn reconcile_membership(m: Arc<Manager>, stop: CancellationToken) {
    let mut applied = m.sm.subscribe();
    loop {
        let step = {
            let voters = m.voters();
            m.read(|s| next_membership_step(&voters, s))
        };
        if let Some(step) = step {
            let r = apply_step(&m, &step).await;
            if let Err(e) = r {
                tracing::debug!("membership change {step:?}: {e}");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {},
                }
            }
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = applied.changed() => {},
            _ = tokio::time::sleep(Duration::from_secs(1)) => {},
        }
    }
}

async fn apply_step(m: &Manager, step: &MembershipStep) -> Result<()> {
    let timeout = Duration::from_secs(10);
    match step {
        MembershipStep::Add(id, addr) => {
            tracing::info!(node = %NodeId(*id), %addr, "adding manager to Raft");
            let add = m
                .raft
                .add_learner(*id, BasicNode { addr: addr.clone() }, true);
            tokio::time::timeout(timeout, add)
                .await
                .map_err(|_| Error::Unavailable("add learner timed out".into()))?
                .map_err(|e| Error::Unavailable(e.to_string()))?;
            let mut voters = m.voters();
            voters.insert(*id);
            let change = m.raft.change_membership(voters, false);
            tokio::time::timeout(timeout, change)
                .await
                .map_err(|_| Error::Unavailable("membership change timed out".into()))?
                .map_err(|e| Error::Unavailable(e.to_string()))?;
        }
        MembershipStep::Remove(id) => {
            tracing::info!(node = %NodeId(*id), "removing manager from Raft");
            let mut voters = m.voters();
            voters.remove(id);
            let change = m.raft.change_membership(voters, false);
            tokio::time::timeout(timeout, change)
                .await
                .map_err(|_| Error::Unavailable("membership change timed out".into()))?
                .map_err(|e| Error::Unavailable(e.to_string()))?;
        }
    }
    Ok(())
}

/// Counts the snapshots this manager builds or installs (`orc_raft_snapshots_total`):
/// each change of the snapshot Raft reports is one.
async fn count_snapshots(m: Arc<Manager>) {
    let mut rx = m.raft.metrics();
    let mut last = rx.borrow().snapshot;
    let stop = m.stop_token();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
        let now = rx.borrow().snapshot;
        if now != last && now.is_some() {
            m.metrics.raft.snapshots.inc();
        }
        last = now;
    }
}

impl Manager {
    /// Fills the gauges read at scrape time: Raft's term, leader and indexes (from its
    /// metrics), the state tables' counts (from the applied state), and, on the
    /// leader, the sessions alive.
    pub fn fill_metrics(&self) {
        use crate::metrics::{state, LeaderLabel};
        let mx = &self.metrics;
        let rm = self.raft.metrics().borrow().clone();
        let leading = rm.state == ServerState::Leader;
        mx.raft.term.set(rm.current_term as i64);
        mx.raft.is_leader.set(leading as i64);
        mx.raft.leader.clear();
        if let Some(l) = rm.current_leader {
            mx.raft
                .leader
                .get_or_create(&LeaderLabel {
                    leader: crate::store::NodeId(l).to_string(),
                })
                .set(1);
        }
        mx.raft
            .last_log_index
            .set(rm.last_log_index.unwrap_or(0) as i64);
        let applied = rm.last_applied.map(|l| l.index).unwrap_or(0);
        mx.raft.applied_index.set(applied as i64);
        // The leader knows what a majority holds; a follower applies what it learns is
        // committed at once, so its applied index stands for its commit index.
        let commit = if leading {
            let matched: Vec<Option<u64>> = rm
                .membership_config
                .membership()
                .voter_ids()
                .map(|v| {
                    if v == self.id {
                        rm.last_log_index
                    } else {
                        rm.replication
                            .as_ref()
                            .and_then(|r| r.get(&v).cloned().flatten())
                            .map(|l| l.index)
                    }
                })
                .collect();
            state::quorum_index(&matched).unwrap_or(applied)
        } else {
            applied
        };
        mx.raft.commit_index.set(commit as i64);
        let (counts, period_ms) = self.read(|s| {
            let period = s
                .cluster
                .as_ref()
                .map(|c| c.settings.heartbeat_period_ms)
                .unwrap_or_else(|| crate::store::Settings::default().heartbeat_period_ms);
            (state::count(s), period)
        });
        mx.set_state(&counts);
        let sessions = if leading {
            let within = Duration::from_millis(period_ms.saturating_mul(3));
            self.sessions.live(tokio::time::Instant::now(), within)
        } else {
            0
        };
        mx.dispatcher_sessions.set(sessions as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Node, NodeStatus};

    fn state(nodes: &[(u64, Role)]) -> State {
        let mut s = State::default();
        for (id, role) in nodes {
            s.nodes.insert(
                NodeId(*id),
                Node {
                    status: NodeStatus::Ready,
                    ..Node::new(
                        NodeId(*id),
                        format!("10.0.0.{id}:4242"),
                        *role,
                        Default::default(),
                        0,
                    )
                },
            );
        }
        s
    }

    #[test]
    fn a_new_leader_runs_its_components_once_it_has_applied_an_entry_of_its_term() {
        let leader = ServerState::Leader;
        // Positive: leading, and an entry of term 7 applied.
        assert!(leads(1, Some(1), leader, 7, Some(7)));
        // Elected in term 7, the last entry applied from term 6: not yet.
        assert!(!leads(1, Some(1), leader, 7, Some(6)));
        assert!(!leads(1, Some(1), leader, 7, None));
        // Not the leader, or not in the leader state.
        assert!(!leads(1, Some(2), leader, 7, Some(7)));
        assert!(!leads(1, Some(1), ServerState::Follower, 7, Some(7)));
    }

    #[test]
    fn membership_follows_the_node_table_adds_first() {
        let voters: BTreeSet<u64> = [1, 2].into();
        // 3 promoted, 2 demoted: add 3 before removing 2.
        let s = state(&[(1, Role::Manager), (2, Role::Worker), (3, Role::Manager)]);
        assert_eq!(
            next_membership_step(&voters, &s),
            Some(MembershipStep::Add(3, "10.0.0.3:4242".into()))
        );
        let voters: BTreeSet<u64> = [1, 2, 3].into();
        assert_eq!(
            next_membership_step(&voters, &s),
            Some(MembershipStep::Remove(2))
        );
        let voters: BTreeSet<u64> = [1, 3].into();
        assert_eq!(next_membership_step(&voters, &s), None);
    }

    #[test]
    fn removed_nodes_leave_the_voters_but_never_the_last_one() {
        let s = state(&[(1, Role::Manager)]);
        let voters: BTreeSet<u64> = [1, 9].into();
        assert_eq!(
            next_membership_step(&voters, &s),
            Some(MembershipStep::Remove(9))
        );
        let s = state(&[(1, Role::Worker)]);
        let voters: BTreeSet<u64> = [1].into();
        assert_eq!(next_membership_step(&voters, &s), None);
    }
}
