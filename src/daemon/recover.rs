//! `orc init --force-new-cluster`: a surviving manager of a cluster that lost quorum for
//! good becomes its only manager.
//!
//! Who may ask: the local socket only (`Local.Init` with `force_new_cluster`), as for
//! `init`. What it names: nothing but this node's own address, which must be the one it
//! already advertises. The steps ([`Daemon::force_new_cluster`]):
//!
//! 1. Refuse unless this node is an unlocked manager, and unless its cluster has lost
//!    quorum: this manager must see no quorum for [`lost_window`] without a break
//!    ([`quorum_alive`], [`LostFor`]), or the command is refused with one line. There
//!    is no override: a cluster with a quorum removes managers with `node demote` and
//!    `node rm`, which keep Raft's guarantees. (Swarm does not check; forcing a new
//!    cluster beside a live majority splits the cluster in two.)
//! 2. Stop the Raft node, rewrite its log ([`crate::raft::recovery`]: membership of
//!    this node alone at a higher term, the other managers removed from the node
//!    table), start it again: it elects itself and leads.
//! 3. Nothing else stops: the cluster port, the agent, the mesh and the containers run
//!    on, and the workers, whose heartbeats this node now answers as leader, keep
//!    their sessions and their tasks (a new leader gives every node a full grace
//!    period, see [`crate::dispatcher`]).
//!
//! [`crate::raft::recovery::force_new_cluster`] is what starts a fresh single-manager
//! Raft group on the old state.

use std::time::Duration;

use openraft::ServerState;
use tokio::time::Instant;

use super::{addrs, Daemon};
use crate::error::{Error, Result};
use crate::store::Role;

/// Whether one look at a manager's Raft metrics shows a working quorum: a leader that
/// heard from a majority within `stale_ms` (or is the only voter), or a follower that
/// knows another node as its leader.
pub fn quorum_alive(
    me: u64,
    state: ServerState,
    leader: Option<u64>,
    voters: usize,
    millis_since_quorum_ack: Option<u64>,
    stale_ms: u64,
) -> bool {
    match state {
        ServerState::Leader => {
            voters <= 1 || millis_since_quorum_ack.is_some_and(|ms| ms <= stale_ms)
        }
        _ => leader.is_some_and(|l| l != me),
    }
}

/// How long no quorum must be seen, without a break, before a new cluster is forced:
/// three election time-outs, so that a cluster in the middle of an election (no leader
/// for less than one time-out) is not taken for a lost one.
pub fn lost_window(timings: &crate::manager::RaftTimings) -> Duration {
    Duration::from_millis(timings.election_max_ms * 3)
}

/// How much later than usual the new leader starts counting the heartbeats a node
/// missed: a worker tries the managers it knew in turn, and each removed one costs it a
/// heartbeat time-out (2 periods) and a 200 ms pause before it reaches the survivor.
pub fn takeover_delay(period_ms: u64, removed: usize) -> Duration {
    Duration::from_millis((period_ms * 2 + 200) * removed as u64)
}

/// Tracks for how long no quorum has been seen.
#[derive(Debug, Default)]
pub struct LostFor {
    since: Option<Instant>,
}

impl LostFor {
    /// Records one look at `now`; true once no quorum was seen for `window` in a row.
    pub fn observe(&mut self, alive: bool, now: Instant, window: Duration) -> bool {
        if alive {
            self.since = None;
            return false;
        }
        let since = *self.since.get_or_insert(now);
        now.saturating_duration_since(since) >= window
    }
}

impl Daemon {
    /// `orc init --force-new-cluster` (see the module doc).
    pub async fn force_new_cluster(
        &self,
        advertise_addr: &str,
    ) -> Result<crate::proto::InitResponse> {
        let _g = self.inner.lifecycle.lock().await;
        self.refuse_if_locked()?;
        let Some(mut member) = self.member() else {
            return Err(Error::Conflict(
                "this node is not part of a cluster: --force-new-cluster recovers a surviving manager of one".into(),
            ));
        };
        if member.role != Role::Manager {
            return Err(Error::NotManager(
                "this node is a worker: run --force-new-cluster on a surviving manager".into(),
            ));
        }
        let (advertise, _) = addrs(advertise_addr, "")?;
        if advertise != member.advertise_addr {
            return Err(Error::InvalidInput(format!(
                "advertise_addr: this manager advertises {}; a forced new cluster keeps its address (give {})",
                member.advertise_addr, member.advertise_addr
            )));
        }
        self.wait_quorum_lost(&*self.manager()?).await?;

        tracing::warn!(node = %member.node_id, "forcing a new cluster: this manager becomes the only one");
        self.stop_manager(false).await?;
        let recovered = crate::raft::recovery::force_new_cluster(
            &self.raft_db()?,
            self.db(),
            member.node_id,
            &advertise,
        )
        .await;
        // Start Raft again whatever happened: on the rewritten log, or on the untouched
        // one if the rewrite refused.
        let restarted = self.start_manager(None).await;
        let recovered = recovered?;
        let m = restarted?;
        for id in &recovered.removed {
            tracing::warn!(node = %id, "forced new cluster: manager removed");
        }
        wait_leading(&m, Duration::from_secs(30)).await?;
        let period_ms = m.read(|s| s.cluster.as_ref().map(|c| c.settings.heartbeat_period_ms));
        let delay = takeover_delay(period_ms.unwrap_or(500), recovered.removed.len());
        m.sessions.postpone_takeover(Instant::now() + delay);
        self.set_leader_hint(&advertise);
        member.managers = vec![advertise.clone()];
        self.save_member(&member)?;

        let worker = crate::api::nodes::join_token(&m, "worker", false).await?;
        let manager = crate::api::nodes::join_token(&m, "manager", false).await?;
        Ok(crate::proto::InitResponse {
            node_id: member.node_id.to_string(),
            cluster_id: member.cluster_id,
            worker_token: worker.token,
            manager_token: manager.token,
            advertise_addr: advertise,
            unlock_key: String::new(),
            removed_managers: recovered.removed.iter().map(|id| id.to_string()).collect(),
        })
    }

    /// Returns once this manager has seen no quorum for [`lost_window`]; refuses when it
    /// keeps seeing one.
    async fn wait_quorum_lost(&self, m: &crate::manager::Manager) -> Result<()> {
        let timings = self.config().raft;
        let window = lost_window(&timings);
        let stale_ms = timings.election_max_ms * 2;
        let deadline = Instant::now() + window * 3;
        let mut lost = LostFor::default();
        let mut rx = m.raft.metrics();
        loop {
            let (alive, leader) = {
                let x = rx.borrow_and_update();
                let voters = x.membership_config.membership().voter_ids().count();
                let alive = quorum_alive(
                    m.id,
                    x.state,
                    x.current_leader,
                    voters,
                    x.millis_since_quorum_ack,
                    stale_ms,
                );
                (alive, x.current_leader)
            };
            let now = Instant::now();
            if lost.observe(alive, now, window) {
                return Ok(());
            }
            if now >= deadline {
                let who = leader
                    .map(|l| format!("node {}", crate::store::NodeId(l)))
                    .unwrap_or_else(|| "a leader".into());
                return Err(Error::Conflict(format!(
                    "the cluster still has a quorum ({who} leads): --force-new-cluster is only for a cluster that lost a majority of its managers for good; remove managers with `orc node demote` and `orc node rm` instead"
                )));
            }
            tokio::select! {
                _ = rx.changed() => {},
                _ = tokio::time::sleep(Duration::from_millis(timings.heartbeat_ms.max(20))) => {},
            }
        }
    }
}

/// Waits until `m` leads, for at most `wait`.
async fn wait_leading(m: &crate::manager::Manager, wait: Duration) -> Result<()> {
    let mut rx = m.raft.metrics();
    let deadline = Instant::now() + wait;
    loop {
        if m.is_leader() {
            return Ok(());
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { break },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    Err(Error::Unavailable(
        "forced a new cluster, but this manager did not become its leader: see the daemon's log"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_has_quorum_while_a_majority_answers_or_when_alone() {
        let l = ServerState::Leader;
        assert!(quorum_alive(1, l, Some(1), 3, Some(100), 1200));
        assert!(!quorum_alive(1, l, Some(1), 3, Some(5000), 1200));
        assert!(!quorum_alive(1, l, Some(1), 3, None, 1200));
        // A cluster of one manager never lost its quorum.
        assert!(quorum_alive(1, l, Some(1), 1, None, 1200));
    }

    #[test]
    fn a_follower_has_quorum_while_it_knows_a_leader() {
        assert!(quorum_alive(
            1,
            ServerState::Follower,
            Some(2),
            3,
            None,
            1200
        ));
        assert!(!quorum_alive(1, ServerState::Follower, None, 3, None, 1200));
        assert!(!quorum_alive(
            1,
            ServerState::Candidate,
            None,
            3,
            None,
            1200
        ));
        // A candidate that voted for itself is no leader.
        assert!(!quorum_alive(
            1,
            ServerState::Candidate,
            Some(1),
            3,
            None,
            1200
        ));
    }

    #[test]
    fn workers_get_a_heartbeat_time_out_more_per_removed_manager() {
        assert_eq!(takeover_delay(500, 2), Duration::from_millis(2400));
        assert_eq!(takeover_delay(500, 0), Duration::ZERO);
    }

    #[test]
    fn no_quorum_must_last_the_whole_window_without_a_break() {
        let t0 = Instant::now();
        let w = Duration::from_secs(2);
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut lost = LostFor::default();
        assert!(!lost.observe(false, at(0), w));
        assert!(!lost.observe(false, at(1500), w));
        // An election won in between starts the window again.
        assert!(!lost.observe(true, at(1600), w));
        assert!(!lost.observe(false, at(1700), w));
        assert!(!lost.observe(false, at(3600), w));
        assert!(lost.observe(false, at(3700), w));
    }
}
