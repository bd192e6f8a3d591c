//! Recovery from a lost quorum (`orc init --force-new-cluster`): rewrites this
//! manager's Raft log so that it restarts as the only voter of its cluster, with all the
//! state it had.
//!
//! Raft cannot change its membership without a quorum, so a cluster that lost a
//! majority of its managers for good can never commit again. The way out, as etcd's
//! `--force-new-cluster` and Swarm's do it, is to step outside Raft on one survivor,
//! while its Raft node is stopped ([`force_new_cluster`]):
//!
//! 1. Whatever this node knows to be committed is applied to its state machine (the
//!    entries between the applied and the committed index, as openraft would at start).
//!    Entries after the commit index are dropped: nobody may have seen them applied.
//! 2. The log is cut after that point and new entries are appended at a term above
//!    every term this node has seen, as if it had led that term: a membership of this
//!    node alone, then one `RemoveNode` per other manager of the node table
//!    ([`restart_entries`]). They are recorded as committed — a group of one commits
//!    what it holds — and applied at once, the state then written as the current
//!    snapshot, so the node table has no other manager by the time Raft starts: the
//!    membership reconciler has nothing to add back, and the lost managers'
//!    certificates are refused at once (`api::auth::membership`).
//! 3. The vote is set to that term (not committed), so the restarted node holds an
//!    election among its one voter and leads a term above anything the old group ever
//!    reached.
//!
//! What stays: the cluster id, the CA, the data key, every other node with its
//! certificate, every service, task, network, secret and config. The lost managers are
//! **removed** from the node table (not marked down and demoted): were one to come back
//! with its old data, it is refused as a stranger, and must leave and join again.
//! Their tasks are replaced elsewhere, as those of any removed node.

// openraft's `StorageError` is what the storage traits return.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::RaftSnapshotBuilder;
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, Vote,
};

use super::log_store::LogStore;
use super::state_machine::StateMachineStore;
use super::TypeConfig;
use crate::error::{Error, Result};
use crate::store::{Command, NodeId, Role, State};

/// What [`force_new_cluster`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The managers taken out of the node table, by id.
    pub removed: Vec<NodeId>,
    /// The term the new entries carry (the restarted node leads a later one).
    pub term: u64,
    /// The id of the last entry kept from the old log (all of it applied).
    pub kept: LogId<u64>,
}

/// The managers of `state` other than `me`: the ones a forced new cluster removes.
pub fn lost_managers(state: &State, me: NodeId) -> Vec<NodeId> {
    state
        .managers()
        .map(|n| n.id)
        .filter(|id| *id != me)
        .collect()
}

/// The entries a forced new cluster appends after `kept`, at `term`, led by `me` (at
/// `addr`): the membership `{me}`, then one `RemoveNode` per lost manager.
pub fn restart_entries(
    me: NodeId,
    addr: &str,
    kept: LogId<u64>,
    term: u64,
    lost: &[NodeId],
) -> Vec<Entry<TypeConfig>> {
    let leader = CommittedLeaderId::new(term, me.0);
    let voters = vec![BTreeSet::from([me.0])];
    let nodes = BTreeMap::from([(me.0, BasicNode::new(addr))]);
    let mut entries = vec![Entry {
        log_id: LogId::new(leader, kept.index + 1),
        payload: EntryPayload::Membership(Membership::new(voters, nodes)),
    }];
    for (i, id) in lost.iter().enumerate() {
        entries.push(Entry {
            log_id: LogId::new(leader, kept.index + 2 + i as u64),
            payload: EntryPayload::Normal(Command::RemoveNode { id: *id }.into()),
        });
    }
    entries
}

/// The term of the new entries: above the vote's and the last entry's.
pub fn next_term(vote: &Vote<u64>, last: Option<&LogId<u64>>) -> u64 {
    let seen = vote.leader_id().get_term();
    let logged = last.map_or(0, |l| l.committed_leader_id().get_term());
    seen.max(logged) + 1
}

/// Rewrites the Raft log in `log_db` and the state machine in `state_db` so that `me`
/// (advertising `addr`) restarts as the only voter (see the module doc). The Raft node of
/// these databases must be stopped. Refuses when `me` is not a manager of the node table
/// it applied.
pub async fn force_new_cluster(
    log_db: &sled::Db,
    state_db: &sled::Db,
    me: NodeId,
    addr: &str,
) -> Result<Recovered> {
    let storage = |what: &str, e: &dyn std::fmt::Display| {
        Error::Internal(format!("force new cluster: {what}: {e}"))
    };
    let mut log = LogStore::open(log_db, state_db)?;
    let mut sm = StateMachineStore::open(state_db)?;

    // 1. Apply what is known committed.
    let committed = log
        .read_committed()
        .await
        .map_err(|e| storage("read the commit index", &e))?;
    let (applied, _) = sm
        .applied_state()
        .await
        .map_err(|e| storage("read the applied index", &e))?;
    if committed > applied {
        let to = committed.map_or(0, |l| l.index);
        // After the snapshot's last entry; with no snapshot, from the log's start (the
        // state machine keeps its state as snapshots only), which nothing was purged of.
        let from = match applied {
            Some(l) => l.index + 1,
            None => {
                let state = log
                    .get_log_state()
                    .await
                    .map_err(|e| storage("read the log state", &e))?;
                match state.last_purged_log_id {
                    Some(p) => {
                        return Err(Error::Internal(format!(
                            "force new cluster: the log is purged up to {} and no snapshot holds what it made",
                            p.index
                        )))
                    }
                    None => log
                        .try_get_log_entries(..=to)
                        .await
                        .map_err(|e| storage("read committed entries", &e))?
                        .first()
                        .map_or(0, |e| e.log_id.index),
                }
            }
        };
        let entries = log
            .try_get_log_entries(from..=to)
            .await
            .map_err(|e| storage("read committed entries", &e))?;
        if entries.first().map(|e| e.log_id.index) != Some(from)
            || entries.last().map(|e| e.log_id.index) != Some(to)
        {
            return Err(Error::Internal(format!(
                "force new cluster: committed entries {from}..={to} are missing from the log"
            )));
        }
        sm.apply(entries)
            .await
            .map_err(|e| storage("apply committed entries", &e))?;
    }
    let Some(kept) = applied.max(committed) else {
        return Err(Error::Conflict(
            "this manager has applied nothing of its cluster: it cannot start a new one from it"
                .into(),
        ));
    };
    let lost = sm.read(|s| match s.nodes.get(&me) {
        Some(n) if n.role == Role::Manager => Ok(lost_managers(s, me)),
        _ => Err(Error::Conflict(format!(
            "node {me} is not a manager in the state it applied: only a manager can force a new cluster"
        ))),
    })?;

    // 2. Cut the log after `kept` and append the new entries.
    let vote = log
        .read_vote()
        .await
        .map_err(|e| storage("read the vote", &e))?
        .unwrap_or_default();
    let last = log
        .get_log_state()
        .await
        .map_err(|e| storage("read the log state", &e))?
        .last_log_id;
    let term = next_term(&vote, last.as_ref());
    // The vote first: from here on this node never answers for an older term.
    log.save_vote(&Vote::new(term, me.0))
        .await
        .map_err(|e| storage("save the vote", &e))?;
    if last.is_some_and(|l| l.index > kept.index) {
        log.truncate(LogId::new(kept.leader_id, kept.index + 1))
            .await
            .map_err(|e| storage("cut the log", &e))?;
    }
    let entries = restart_entries(me, addr, kept, term, &lost);
    let tail = entries.last().expect("the membership entry").log_id;
    log.blocking_append(entries.clone())
        .await
        .map_err(|e| storage("append", &e))?;

    // 3. Record them committed and apply them.
    log.save_committed(Some(tail))
        .await
        .map_err(|e| storage("save the commit index", &e))?;
    sm.apply(entries)
        .await
        .map_err(|e| storage("apply the new entries", &e))?;
    // The state machine writes its state only as snapshots: the restart starts from
    // this one.
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .map_err(|e| storage("snapshot the state", &e))?;
    for db in [log_db, state_db] {
        db.flush_async().await.map_err(|e| storage("flush", &e))?;
    }
    Ok(Recovered {
        removed: lost,
        term,
        kept,
    })
}

#[cfg(test)]
mod tests {
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
    use openraft::{
        CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, Vote,
    };
    use tempfile::TempDir;

    use super::*;
    use crate::raft::log_store::tests::open_db;
    use crate::store::{Cluster, Node, NodeDescription, Settings};

    fn log_id(term: u64, leader: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, leader), index)
    }

    fn node(id: u64, role: Role) -> Node {
        Node::new(
            NodeId(id),
            format!("10.0.0.{id}:4242"),
            role,
            NodeDescription::default(),
            1_000,
        )
    }

    fn cluster() -> Cluster {
        Cluster {
            vip_cursor: 0,
            id: "c1".into(),
            ca_cert_pem: "cert".into(),
            ca_key: crate::store::Sealed::from_stored("00"),
            worker_secret: crate::store::Sealed::from_stored("01"),
            manager_secret: crate::store::Sealed::from_stored("02"),
            unlock_key: None,
            settings: Settings::default(),
            created_ms: 1_000,
        }
    }

    /// Managers 1, 2, 3 and worker 4 at term 3 (led by 1); entries 1..=7.
    fn history() -> Vec<Entry<TypeConfig>> {
        let e = |index: u64, payload| Entry {
            log_id: log_id(3, 1, index),
            payload,
        };
        let voters = |ids: &[u64]| {
            let nodes: BTreeMap<u64, BasicNode> = ids
                .iter()
                .map(|id| (*id, BasicNode::new(format!("10.0.0.{id}:4242"))))
                .collect();
            EntryPayload::Membership(Membership::new(vec![ids.iter().copied().collect()], nodes))
        };
        let add = |id, role| {
            EntryPayload::Normal(
                Command::AddNode {
                    node: node(id, role),
                }
                .into(),
            )
        };
        vec![
            e(1, voters(&[1])),
            e(
                2,
                EntryPayload::Normal(
                    Command::InitCluster {
                        cluster: cluster(),
                        node: node(1, Role::Manager),
                    }
                    .into(),
                ),
            ),
            e(3, add(2, Role::Manager)),
            e(4, add(3, Role::Manager)),
            e(5, voters(&[1, 2, 3])),
            e(6, add(4, Role::Worker)),
            e(7, EntryPayload::Normal(Command::Noop.into())),
        ]
    }

    #[test]
    fn the_new_entries_make_one_voter_and_remove_the_other_managers() {
        let mut s = State::default();
        for (id, role) in [
            (1, Role::Manager),
            (2, Role::Manager),
            (3, Role::Manager),
            (4, Role::Worker),
        ] {
            s.nodes.insert(NodeId(id), node(id, role));
        }
        let lost = lost_managers(&s, NodeId(3));
        assert_eq!(lost, vec![NodeId(1), NodeId(2)]);
        let entries = restart_entries(NodeId(3), "10.0.0.3:4242", log_id(5, 1, 40), 6, &lost);
        let ids: Vec<(u64, u64, u64)> = entries
            .iter()
            .map(|e| {
                (
                    e.log_id.leader_id.term,
                    e.log_id.leader_id.node_id,
                    e.log_id.index,
                )
            })
            .collect();
        assert_eq!(ids, vec![(6, 3, 41), (6, 3, 42), (6, 3, 43)]);
        let EntryPayload::Membership(m) = &entries[0].payload else {
            panic!("first entry: {:?}", entries[0].payload);
        };
        assert_eq!(m.voter_ids().collect::<Vec<_>>(), vec![3]);
        assert_eq!(
            m.get_node(&3).map(|n| n.addr.as_str()),
            Some("10.0.0.3:4242")
        );
        assert_eq!(m.learner_ids().count(), 0);
        assert_eq!(
            entries[1..]
                .iter()
                .map(|e| e.payload.clone())
                .collect::<Vec<_>>(),
            vec![
                EntryPayload::Normal(Command::RemoveNode { id: NodeId(1) }.into()),
                EntryPayload::Normal(Command::RemoveNode { id: NodeId(2) }.into()),
            ]
        );
    }

    #[test]
    fn the_new_term_is_above_every_term_seen() {
        assert_eq!(next_term(&Vote::new(7, 2), Some(&log_id(5, 1, 9))), 8);
        assert_eq!(next_term(&Vote::new(4, 2), Some(&log_id(5, 1, 9))), 6);
        assert_eq!(next_term(&Vote::default(), None), 1);
    }

    /// A survivor that applied up to 5, knew 6 committed and held 7 uncommitted: the
    /// rewrite applies 6, drops 7, and leaves a log, vote and state machine that say
    /// "node 3 alone, nodes 1 and 2 gone, worker 4 kept" — also after a reopen.
    #[tokio::test]
    async fn a_survivor_restarts_alone_with_what_was_committed() {
        let dir = TempDir::new().expect("temporary directory");
        {
            let db = open_db(dir.path());
            let mut log = LogStore::open(&db, &db).expect("log store");
            let mut sm = StateMachineStore::open(&db).expect("state machine");
            let entries = history();
            log.blocking_append(entries.clone()).await.expect("append");
            sm.apply(entries[..5].to_vec()).await.expect("apply");
            log.save_committed(Some(log_id(3, 1, 6)))
                .await
                .expect("commit");
            log.save_vote(&Vote::new(5, 2)).await.expect("vote");

            let r = force_new_cluster(&db, &db, NodeId(3), "10.0.0.3:4242")
                .await
                .expect("force new cluster");
            assert_eq!(
                r,
                Recovered {
                    removed: vec![NodeId(1), NodeId(2)],
                    term: 6,
                    kept: log_id(3, 1, 6),
                }
            );
        }
        let db = open_db(dir.path());
        let mut log = LogStore::open(&db, &db).expect("log store");
        let mut sm = StateMachineStore::open(&db).expect("state machine");
        assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(6, 3)));
        assert_eq!(
            log.read_committed().await.expect("committed"),
            Some(log_id(6, 3, 9))
        );
        let indexes: Vec<(u64, u64)> = log
            .try_get_log_entries(..)
            .await
            .expect("entries")
            .iter()
            .map(|e| (e.log_id.index, e.log_id.leader_id.term))
            .collect();
        assert_eq!(
            indexes,
            vec![
                (1, 3),
                (2, 3),
                (3, 3),
                (4, 3),
                (5, 3),
                (6, 3),
                (7, 6),
                (8, 6),
                (9, 6)
            ],
            "entry 7 of term 3 (never committed) is gone"
        );
        let (applied, membership) = sm.applied_state().await.expect("applied");
        assert_eq!(applied, Some(log_id(6, 3, 9)));
        assert_eq!(
            membership.membership().voter_ids().collect::<Vec<_>>(),
            vec![3]
        );
        let nodes = sm.read(|s| {
            s.nodes
                .values()
                .map(|n| (n.id.0, n.role))
                .collect::<Vec<_>>()
        });
        assert_eq!(nodes, vec![(3, Role::Manager), (4, Role::Worker)]);
        assert_eq!(
            sm.read(|s| s.cluster.as_ref().map(|c| c.id.clone())),
            Some("c1".into())
        );
    }

    /// A worker's record (or a node the state does not name a manager) is refused, and
    /// nothing is written.
    #[tokio::test]
    async fn only_a_manager_of_the_applied_state_may_force_a_new_cluster() {
        let dir = TempDir::new().expect("temporary directory");
        let db = open_db(dir.path());
        let mut log = LogStore::open(&db, &db).expect("log store");
        let mut sm = StateMachineStore::open(&db).expect("state machine");
        let entries = history();
        log.blocking_append(entries.clone()).await.expect("append");
        sm.apply(entries).await.expect("apply");
        log.save_committed(Some(log_id(3, 1, 7)))
            .await
            .expect("commit");
        for who in [4, 9] {
            let e = force_new_cluster(&db, &db, NodeId(who), "10.0.0.4:4242")
                .await
                .expect_err("not a manager");
            assert!(e.to_string().contains("not a manager"), "{e}");
        }
        assert_eq!(
            log.get_log_state().await.expect("log state").last_log_id,
            Some(log_id(3, 1, 7))
        );
        // Positive control: manager 2 may.
        let r = force_new_cluster(&db, &db, NodeId(2), "10.0.0.2:4242")
            .await
            .expect("manager 2");
        assert_eq!(r.removed, vec![NodeId(1), NodeId(3)]);
    }

    /// An empty data dir has nothing to start a cluster from.
    #[tokio::test]
    async fn nothing_applied_is_refused() {
        let dir = TempDir::new().expect("temporary directory");
        let db = open_db(dir.path());
        let e = force_new_cluster(&db, &db, NodeId(1), "10.0.0.1:4242")
            .await
            .expect_err("empty");
        assert!(e.to_string().contains("applied nothing"), "{e}");
    }
}
