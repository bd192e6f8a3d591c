//! The Raft state machine: committed [`Command`]s applied to the [`State`] tables.
//!
//! [`StateMachineStore`] keeps the applied [`State`] in memory, behind a lock, for the
//! rest of the program to read ([`StateMachineStore::read`]), and in sled for restarts.
//! Components that react to changes wait on [`StateMachineStore::subscribe`], which
//! carries the index of the last applied entry.
//!
//! Key layout, in the daemon's one [`sled::Db`]:
//!
//! | tree       | key                 | value                                         |
//! |------------|---------------------|-----------------------------------------------|
//! | `snapshot` | `meta`              | JSON `openraft::SnapshotMeta` of the current  |
//! | `snapshot` | `data`              | the current snapshot's bytes (protobuf, below) |
//! | `sm`       | `cluster`, `node/<id hex>`, ..., `meta/last_applied`, `meta/membership` | data dirs of before only: the state tables as JSON, one key each (see [`crate::store`]) |
//!
//! Applying: for a batch of entries, each [`Command`] goes through [`State::apply`] in
//! memory, and nothing is written: the log is the durable record, and the current
//! snapshot the state it starts from. On restart the machine is the current snapshot's,
//! and openraft re-applies the committed entries after it (its start-up reads the commit
//! index the log store keeps); openraft purges the log only up to the current snapshot,
//! and the log store flushes this db before it purges, which makes that snapshot durable
//! first; that is why it is opened with this db too. (Until this, every apply wrote each
//! changed key as JSON into the `sm` tree: at 100,000 tasks, sled's writes were half of
//! an apply on every manager, and its cache a part of their memory.)
//!
//! Data dirs of before keep their state in the `sm` tree, as of its `meta/last_applied`,
//! a later point than their current snapshot: [`StateMachineStore::open`] makes it the
//! current snapshot, then empties the tree.
//!
//! Snapshots: the data is the protobuf `Snapshot` of `proto/raft.proto` (`last_applied`,
//! `last_membership`, the state tables; a JSON snapshot of a data dir of before is still
//! read), the same bytes InstallSnapshot carries in chunks; the id is
//! `<term>-<index>-<counter>` of the last applied entry (`none-<counter>` before any),
//! the counter counting the snapshots this process built. The current snapshot, built or
//! installed, is kept in the `snapshot` tree so that it is still there after a restart.
//! openraft builds snapshots in a task of its own, so a build may finish after a newer
//! snapshot was installed; it then does not replace the current one.
//! Installing one replaces the memory state and makes it the current snapshot, then
//! flushes.

// openraft's `StorageError` is large, and it is what the storage traits return; the
// helpers here return it too rather than boxing it only to unbox it at every call.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, RaftTypeConfig,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::TypeConfig;
use crate::error::Error;
use crate::store::events::{self, Hub};
use crate::store::{Command, Response, State};

/// The Raft node id type of [`TypeConfig`].
type NodeId = <TypeConfig as RaftTypeConfig>::NodeId;

/// What the storage traits return.
type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// Name of the tree of the state tables.
const SM_TREE: &str = "sm";
/// Name of the tree of the current snapshot.
const SNAPSHOT_TREE: &str = "snapshot";
/// The state machine's trees in the node's database: what a node that leaves the
/// managers drops.
pub const TREES: [&str; 2] = [SM_TREE, SNAPSHOT_TREE];
/// `sm` key of the last applied log id.
const LAST_APPLIED_KEY: &str = "meta/last_applied";
/// `sm` key of the last applied membership.
const MEMBERSHIP_KEY: &str = "meta/membership";
/// `snapshot` key of the current snapshot's metadata.
const SNAPSHOT_META_KEY: &str = "meta";
/// `snapshot` key of the current snapshot's data.
const SNAPSHOT_DATA_KEY: &str = "data";

/// Everything the state machine holds; also the content of a snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Machine {
    /// The log id of the last applied entry.
    last_applied: Option<LogId<NodeId>>,
    /// The last applied membership and the log id of its entry.
    last_membership: StoredMembership<NodeId, BasicNode>,
    /// The state tables.
    state: State,
}

/// The parts shared by every clone of a [`StateMachineStore`].
struct Inner {
    /// The database, flushed after a snapshot install.
    db: sled::Db,
    /// `snapshot`: the current snapshot.
    snapshots: sled::Tree,
    /// The applied state, for reads and snapshots.
    machine: RwLock<Machine>,
    /// The index of the last applied entry, for subscribers.
    applied_tx: watch::Sender<u64>,
    /// This manager's events, derived from the entries it applies.
    events: Arc<Hub>,
    /// The number of snapshots built by this process, for snapshot ids.
    snapshots_built: AtomicU64,
    /// Serialises replacing the current snapshot: openraft builds snapshots in a task of
    /// their own, which may finish after a newer snapshot was installed.
    snapshot_lock: Mutex<()>,
}

/// The Raft state machine of one node: the applied [`State`] in memory and in sled, and
/// the current snapshot.
///
/// Cloning is cheap and shares everything; the snapshot builder is such a clone.
#[derive(Clone)]
pub struct StateMachineStore {
    /// The shared parts.
    inner: Arc<Inner>,
}

impl StateMachineStore {
    /// Opens (or creates) the state machine's trees in `db` and loads the applied state:
    /// the current snapshot's, or the `sm` tree's of a data dir of before (which then
    /// becomes the current snapshot). Give the log store this `db` as its state db.
    pub fn open(db: &sled::Db) -> crate::Result<StateMachineStore> {
        let snapshots = db.open_tree(SNAPSHOT_TREE)?;
        let corrupt = |e: &dyn std::fmt::Display| {
            Error::Internal(format!("state machine: the current snapshot: {e}"))
        };
        let machine = match current_snapshot(&snapshots).map_err(|e| corrupt(&e))? {
            Some((meta, data)) => {
                let mut machine = decode_machine(&data).map_err(|e| corrupt(&e))?;
                machine.last_applied = meta.last_log_id;
                machine.last_membership = meta.last_membership;
                machine
            }
            None => Machine::default(),
        };
        let (applied_tx, _) = watch::channel(applied_index(&machine));
        let store = StateMachineStore {
            inner: Arc::new(Inner {
                db: db.clone(),
                snapshots,
                machine: RwLock::new(machine),
                applied_tx,
                events: Arc::new(Hub::default()),
                snapshots_built: AtomicU64::new(0),
                snapshot_lock: Mutex::new(()),
            }),
        };
        store.adopt_tree_of_before()?;
        Ok(store)
    }

    /// A data dir of before: its `sm` tree holds the state tables, one JSON value a key,
    /// as of a later entry than its current snapshot (each apply wrote it). That state
    /// becomes the current snapshot (flushed), then the tree is emptied (flushed again).
    fn adopt_tree_of_before(&self) -> crate::Result<()> {
        let sm = self.inner.db.open_tree(SM_TREE)?;
        if sm.is_empty() {
            return Ok(());
        }
        let mut older = Machine::default();
        for item in sm.iter() {
            let (key, value) = item?;
            let key = std::str::from_utf8(&key).map_err(|_| {
                Error::Internal(format!(
                    "state machine: key {key:?} in tree sm is not UTF-8"
                ))
            })?;
            let corrupt = |e: &dyn std::fmt::Display| {
                Error::Internal(format!("state machine: key {key} in tree sm: {e}"))
            };
            match key {
                LAST_APPLIED_KEY => {
                    older.last_applied = serde_json::from_slice(&value).map_err(|e| corrupt(&e))?
                }
                MEMBERSHIP_KEY => {
                    older.last_membership =
                        serde_json::from_slice(&value).map_err(|e| corrupt(&e))?
                }
                _ => older.state.load(key, &value).map_err(|e| corrupt(&e))?,
            }
        }
        if older.last_applied > self.machine().last_applied {
            let meta = SnapshotMeta {
                last_log_id: older.last_applied,
                last_membership: older.last_membership.clone(),
                snapshot_id: match older.last_applied {
                    Some(l) => format!("{}-{}-of-before", l.leader_id.term, l.index),
                    None => "none-of-before".into(),
                },
            };
            let data = encode_machine(older.clone());
            self.save_snapshot(&meta, &data)
                .map_err(|e| Error::Internal(format!("state machine: {e}")))?;
            self.inner.db.flush()?;
            self.inner.applied_tx.send_replace(applied_index(&older));
            *self.machine_mut() = older;
        }
        sm.clear()?;
        self.inner.db.flush()?;
        Ok(())
    }

    /// Runs `f` on the applied state. Keep `f` short: applying waits while it runs.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.machine().state)
    }

    /// This manager's events ([`crate::store::events`]): those of every applied entry,
    /// and the manager-local ones its other parts publish.
    pub fn events(&self) -> &Arc<Hub> {
        &self.inner.events
    }

    /// Runs `f` on the applied state and the index it is applied to, read together.
    pub fn read_at<R>(&self, f: impl FnOnce(&State, u64) -> R) -> R {
        let m = self.machine();
        f(&m.state, applied_index(&m))
    }

    /// Watches the index of the last applied entry (0 before any). It changes after each
    /// applied batch and after a snapshot is installed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.applied_tx.subscribe()
    }

    /// Read access to the in-memory machine.
    fn machine(&self) -> RwLockReadGuard<'_, Machine> {
        self.inner
            .machine
            .read()
            .expect("state machine lock poisoned: a panic interrupted an apply")
    }

    /// Write access to the in-memory machine.
    fn machine_mut(&self) -> RwLockWriteGuard<'_, Machine> {
        self.inner
            .machine
            .write()
            .expect("state machine lock poisoned: a panic interrupted an apply")
    }

    /// Stores `meta` and `data` as the current snapshot, in one atomic batch, unless the
    /// current one covers more of the log (a build that finished after an install).
    fn save_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        data: &[u8],
    ) -> StorageResult<()> {
        let write_err = |e: &(dyn std::error::Error + 'static)| {
            StorageIOError::write_snapshot(
                Some(meta.signature()),
                openraft::AnyError::from_dyn(e, None),
            )
        };
        let _serial = self
            .inner
            .snapshot_lock
            .lock()
            .expect("snapshot lock poisoned: a panic interrupted a snapshot save");
        let current = self.inner.snapshots.get(SNAPSHOT_META_KEY);
        let current = current.map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        if let Some(current) = current {
            let current: SnapshotMeta<NodeId, BasicNode> = serde_json::from_slice(&current)
                .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
            if current.last_log_id > meta.last_log_id {
                tracing::info!(
                    kept = %current.snapshot_id,
                    dropped = %meta.snapshot_id,
                    "snapshot: a newer one is already current",
                );
                return Ok(());
            }
        }
        let meta_json = serde_json::to_vec(meta).map_err(|e| write_err(&e))?;
        let mut batch = sled::Batch::default();
        batch.insert(SNAPSHOT_META_KEY.as_bytes(), meta_json);
        batch.insert(SNAPSHOT_DATA_KEY.as_bytes(), data);
        self.inner
            .snapshots
            .apply_batch(batch)
            .map_err(|e| write_err(&e))?;
        Ok(())
    }
}

/// A snapshot's data: the protobuf `Snapshot` of `proto/raft.proto`, made of a copy of
/// the machine (`Machine::clone` under the read lock: converting and encoding 100,000
/// tasks there held every apply off for about a third of a second).
fn encode_machine(m: Machine) -> Vec<u8> {
    use prost::Message;
    crate::proto::Snapshot {
        last_applied: m.last_applied.as_ref().map(Into::into),
        last_membership: Some((&m.last_membership).into()),
        state: Some(m.state.into()),
    }
    .encode_to_vec()
}

/// The machine from a snapshot's data: protobuf, or the JSON that snapshots of data
/// dirs written before it hold (JSON starts with `{`; the protobuf never does: it has
/// no field 15).
fn decode_machine(data: &[u8]) -> crate::Result<Machine> {
    use prost::Message;
    if data.first() == Some(&b'{') {
        return serde_json::from_slice(data)
            .map_err(|e| crate::Error::InvalidInput(format!("snapshot: {e}")));
    }
    let s = crate::proto::Snapshot::decode(data)
        .map_err(|e| crate::Error::InvalidInput(format!("snapshot: {e}")))?;
    Ok(Machine {
        last_applied: s.last_applied.map(TryInto::try_into).transpose()?,
        last_membership: s
            .last_membership
            .map(TryInto::try_into)
            .transpose()?
            .unwrap_or_default(),
        state: s
            .state
            .ok_or_else(|| crate::Error::InvalidInput("snapshot: state is missing".into()))?
            .try_into()?,
    })
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let machine = self.machine().clone();
        let (last_applied, last_membership) =
            (machine.last_applied, machine.last_membership.clone());
        let data = super::cpu_heavy(|| encode_machine(machine));
        let counter = self.inner.snapshots_built.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(log_id) => format!("{}-{}-{}", log_id.leader_id.term, log_id.index, counter),
            None => format!("none-{counter}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        self.save_snapshot(&meta, &data)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl StateMachineStore {
    /// [`RaftStateMachine::apply`], run where it may hold its thread.
    fn apply_now<I>(&self, entries: I) -> StorageResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>>,
    {
        let mut derived = Vec::new();
        let (responses, index) = {
            let mut machine = self.machine_mut();
            let mut responses = Vec::new();
            for entry in entries {
                machine.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Response::Ok,
                    EntryPayload::Normal(logged) => match logged.command() {
                        // A batch's commands apply one by one, each with its events.
                        Command::Batch { cmds } => Response::Batch(
                            cmds.iter()
                                .map(|cmd| match cmd {
                                    Command::Batch { .. } => {
                                        Response::Rejected("a batch within a batch".into())
                                    }
                                    cmd => apply_command(&mut machine.state, cmd, &mut derived),
                                })
                                .collect(),
                        ),
                        cmd => apply_command(&mut machine.state, cmd, &mut derived),
                    },
                    EntryPayload::Membership(membership) => {
                        let voters = |m: &openraft::Membership<NodeId, BasicNode>| {
                            m.voter_ids().collect::<std::collections::BTreeSet<u64>>()
                        };
                        let old = voters(machine.last_membership.membership());
                        derived.extend(events::membership_events(&old, &voters(&membership)));
                        machine.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        Response::Ok
                    }
                };
                machine.state.changes.mark_applied(entry.log_id.index);
                responses.push(response);
            }
            if responses.is_empty() {
                return Ok(responses);
            }
            (responses, applied_index(&machine))
        };
        self.inner.events.publish(derived);
        self.inner.applied_tx.send_replace(index);
        Ok(responses)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let machine = self.machine();
        Ok((machine.last_applied, machine.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        super::cpu_heavy(|| self.apply_now(entries))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let signature = || Some(meta.signature());
        let data = snapshot.into_inner();
        let mut machine =
            decode_machine(&data).map_err(|e| StorageIOError::read_snapshot(signature(), &e))?;
        // The metadata openraft checked is authoritative; the data carries the same.
        machine.last_applied = meta.last_log_id;
        machine.last_membership = meta.last_membership.clone();

        let write_err = |e: &(dyn std::error::Error + 'static)| {
            StorageIOError::write_snapshot(signature(), openraft::AnyError::from_dyn(e, None))
        };
        // Durable before it is the state: a restart starts from it.
        self.save_snapshot(meta, &data)?;
        self.inner
            .db
            .flush_async()
            .await
            .map_err(|e| write_err(&e))?;
        let index = applied_index(&machine);
        *self.machine_mut() = machine;
        self.inner.events.publish([
            events::EventBody::new("cluster", "snapshot-install", "", "")
                .attr("index", index.to_string()),
        ]);
        self.inner.applied_tx.send_replace(index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let current = current_snapshot(&self.inner.snapshots)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(current.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// A snapshot's metadata and data.
type StoredSnapshot = (SnapshotMeta<NodeId, BasicNode>, Vec<u8>);

/// The current snapshot's metadata and data in `tree`, `None` before any.
fn current_snapshot(tree: &sled::Tree) -> crate::Result<Option<StoredSnapshot>> {
    let meta = tree.get(SNAPSHOT_META_KEY)?;
    let data = tree.get(SNAPSHOT_DATA_KEY)?;
    let (Some(meta), Some(data)) = (meta, data) else {
        return Ok(None);
    };
    let meta = serde_json::from_slice(&meta)
        .map_err(|e| Error::Internal(format!("snapshot metadata: {e}")))?;
    Ok(Some((meta, data.to_vec())))
}

/// Applies one command to `state` and adds the events it makes to `derived`; returns
/// the response.
fn apply_command(
    state: &mut State,
    cmd: &Command,
    derived: &mut Vec<events::EventBody>,
) -> Response {
    let before = events::Before::capture(state, cmd);
    let (response, changed) = state.apply(cmd);
    derived.extend(events::derive(&before, state, cmd, &response, &changed));
    response
}

/// The index of the last applied entry, 0 before any.
fn applied_index(machine: &Machine) -> u64 {
    machine.last_applied.map_or(0, |log_id| log_id.index)
}

#[cfg(test)]
mod tests {
    //! openraft's conformance `Suite` runs over both stores in `log_store::tests`; these
    //! tests cover what the suite cannot: normal entries, restarts and snapshot contents.

    use std::collections::{BTreeMap, BTreeSet};

    use openraft::storage::RaftStateMachine;
    use openraft::{
        BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftSnapshotBuilder,
    };
    use tempfile::TempDir;

    use super::{
        StateMachineStore, TypeConfig, LAST_APPLIED_KEY, MEMBERSHIP_KEY, SM_TREE, SNAPSHOT_TREE,
    };
    use crate::raft::log_store::tests::open_db;
    use crate::store::{
        Availability, Cluster, Command, Node, NodeDescription, NodeId, Response, Role, Settings,
        State,
    };

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn normal(index: u64, cmd: Command) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(1, index),
            payload: EntryPayload::Normal(cmd.into()),
        }
    }

    fn membership(index: u64, voters: &[u64]) -> Entry<TypeConfig> {
        let nodes: BTreeMap<u64, BasicNode> = voters
            .iter()
            .map(|id| (*id, BasicNode::new(format!("10.0.0.{id}:4242"))))
            .collect();
        let config = vec![voters.iter().copied().collect::<BTreeSet<u64>>()];
        Entry {
            log_id: log_id(1, index),
            payload: EntryPayload::Membership(Membership::new(config, nodes)),
        }
    }

    fn node(id: u64, role: Role) -> Node {
        Node {
            status_changed_ms: 0,
            ..Node::new(
                NodeId(id),
                format!("10.0.0.{id}:4242"),
                role,
                NodeDescription::default(),
                1_000 + id,
            )
        }
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

    /// A short history: init, two joins, a spec change, a removal, a rejected command.
    fn history() -> Vec<Entry<TypeConfig>> {
        vec![
            membership(1, &[1]),
            normal(
                2,
                Command::InitCluster {
                    cluster: cluster(),
                    node: node(1, Role::Manager),
                },
            ),
            normal(
                3,
                Command::AddNode {
                    node: node(2, Role::Worker),
                },
            ),
            normal(
                4,
                Command::AddNode {
                    node: node(3, Role::Worker),
                },
            ),
            normal(
                5,
                Command::UpdateNodeSpec {
                    id: NodeId(2),
                    role: None,
                    availability: Some(Availability::Drain),
                    labels_add: BTreeMap::from([("zone".to_string(), "a".to_string())]),
                    labels_rm: vec![],
                },
            ),
            normal(6, Command::RemoveNode { id: NodeId(3) }),
            normal(7, Command::RemoveNode { id: NodeId(9) }),
            Entry {
                log_id: log_id(1, 8),
                payload: EntryPayload::Blank,
            },
        ]
    }

    /// A state machine on the db in `dir` (the db too, for what a test reads of it).
    fn opened(dir: &TempDir) -> (sled::Db, StateMachineStore) {
        let db = open_db(dir.path());
        let sm = StateMachineStore::open(&db).expect("open state machine");
        (db, sm)
    }

    /// [`history`] in two parts: up to the first removal's node (index 4), and the rest.
    fn history_in_two() -> (Vec<Entry<TypeConfig>>, Vec<Entry<TypeConfig>>) {
        let mut entries = history();
        let later = entries.split_off(4);
        (entries, later)
    }

    /// Applies [`history`] in two batches and checks the responses.
    async fn apply_history(sm: &mut StateMachineStore) {
        let mut entries = history();
        let second = entries.split_off(4);
        let first = sm.apply(entries).await.expect("apply first batch");
        assert_eq!(first, vec![Response::Ok; 4]);
        let second = sm.apply(second).await.expect("apply second batch");
        assert_eq!(second.len(), 4);
        assert_eq!(second[0], Response::Ok);
        assert_eq!(second[1], Response::Ok);
        assert!(
            matches!(second[2], Response::Rejected(_)),
            "{:?}",
            second[2]
        );
        assert_eq!(second[3], Response::Ok);
    }

    #[tokio::test]
    async fn a_batch_entry_applies_like_its_commands_one_entry_each() {
        // The history's commands 2..=7 as entries of their own, and as one batch entry.
        let plain: Vec<Command> = history()
            .into_iter()
            .filter_map(|e| match e.payload {
                EntryPayload::Normal(cmd) => Some(cmd.command().clone()),
                _ => None,
            })
            .collect();
        let one_each = TempDir::new().expect("create temporary directory");
        let batched = TempDir::new().expect("create temporary directory");
        let mut a = StateMachineStore::open(&open_db(one_each.path())).expect("open");
        let mut b = StateMachineStore::open(&open_db(batched.path())).expect("open");
        let singles: Vec<_> = plain
            .iter()
            .enumerate()
            .map(|(i, cmd)| normal(i as u64 + 1, cmd.clone()))
            .collect();
        let responses = a.apply(singles).await.expect("apply one each");
        let batch = normal(
            1,
            Command::Batch {
                cmds: plain.clone(),
            },
        );
        let batch_responses = b.apply([batch]).await.expect("apply the batch");
        assert_eq!(batch_responses, vec![Response::Batch(responses.clone())]);
        // One rejected command (the removal of a node that is not there) changed nothing
        // of the others.
        assert!(
            matches!(responses[5], Response::Rejected(_)),
            "{responses:?}"
        );
        assert_eq!(a.read(State::clone), b.read(State::clone));
        assert_eq!(b.read(|s| s.nodes.len()), 2);
        // The same events, in the same order.
        let kinds = |sm: &StateMachineStore| -> Vec<(String, String, String)> {
            sm.events()
                .latest(100)
                .into_iter()
                .map(|e| (e.kind.clone(), e.action.clone(), e.id.clone()))
                .collect()
        };
        assert!(kinds(&a).len() >= 4, "{:?}", kinds(&a));
        assert_eq!(kinds(&a), kinds(&b));
        // And after a restart, the batch's state is its snapshot's.
        b.build_snapshot().await.expect("snapshot");
        drop(b);
        let b = StateMachineStore::open(&open_db(batched.path())).expect("reopen");
        assert_eq!(a.read(State::clone), b.read(State::clone));
    }

    /// Every tree's keys and values, by tree name.
    type Trees = BTreeMap<Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>>;

    /// What the db holds.
    fn trees(db: &sled::Db) -> Trees {
        db.tree_names()
            .into_iter()
            .map(|name| {
                let tree = db.open_tree(&name).expect("tree");
                let kvs = tree
                    .iter()
                    .map(|kv| {
                        let (k, v) = kv.expect("read");
                        (k.to_vec(), v.to_vec())
                    })
                    .collect();
                (name.to_vec(), kvs)
            })
            .collect()
    }

    /// Applying writes nothing; a restart starts from the current snapshot (openraft
    /// then applies the committed entries after it again, as here).
    #[tokio::test]
    async fn state_survives_reopen_as_its_snapshot_and_applying_writes_nothing() {
        let dir = TempDir::new().expect("create temporary directory");
        let (entries, later) = history_in_two();
        let (state, applied) = {
            let (db, mut sm) = opened(&dir);
            let mut rx = sm.subscribe();
            assert_eq!(*rx.borrow_and_update(), 0);
            sm.apply(entries).await.expect("apply");
            sm.build_snapshot().await.expect("snapshot");
            let on_disk = trees(&db);
            // Positive control: the snapshot is written.
            assert!(on_disk[SNAPSHOT_TREE.as_bytes()].len() == 2, "{on_disk:?}");
            sm.apply(later.clone()).await.expect("apply");
            assert_eq!(trees(&db), on_disk, "applying wrote to the db");
            assert!(rx.has_changed().expect("sender alive"));
            assert_eq!(*rx.borrow_and_update(), 8);
            (
                sm.read(State::clone),
                sm.applied_state().await.expect("applied"),
            )
        };
        assert_eq!(state.nodes.len(), 2, "node 3 was removed: {state:?}");
        assert_eq!(state.nodes[&NodeId(2)].availability, Availability::Drain);

        let (_db, mut sm) = opened(&dir);
        assert_eq!(*sm.subscribe().borrow(), 4, "the snapshot's");
        let (at, _) = sm.applied_state().await.expect("applied");
        assert_eq!(at, Some(log_id(1, 4)));
        assert_ne!(sm.read(State::clone), state);
        sm.apply(later).await.expect("apply again");
        assert_eq!(sm.read(State::clone), state);
        assert_eq!(sm.applied_state().await.expect("applied"), applied);
        assert_eq!(applied.0, Some(log_id(1, 8)));
        assert_eq!(applied.1.log_id(), &Some(log_id(1, 1)));
        assert_eq!(*sm.subscribe().borrow(), 8);
    }

    /// A data dir of before: its `sm` tree (the state as of a later entry than its
    /// snapshot) becomes the current snapshot, and the tree is emptied.
    #[tokio::test]
    async fn the_state_tree_of_a_data_dir_of_before_becomes_the_current_snapshot() {
        let dir = TempDir::new().expect("create temporary directory");
        let (entries, later) = history_in_two();
        let (state, applied) = {
            let (db, mut sm) = opened(&dir);
            sm.apply(entries).await.expect("apply");
            sm.build_snapshot().await.expect("older snapshot");
            sm.apply(later).await.expect("apply");
            // The layout of before: each key of the state as JSON, and the meta keys.
            let tree = db.open_tree(SM_TREE).expect("sm");
            let m = sm.machine().clone();
            for key in m.state.keys() {
                tree.insert(key.as_bytes(), m.state.value_of(&key).expect("value"))
                    .expect("insert");
            }
            tree.insert(
                LAST_APPLIED_KEY,
                serde_json::to_vec(&m.last_applied).expect("json"),
            )
            .expect("insert");
            tree.insert(
                MEMBERSHIP_KEY,
                serde_json::to_vec(&m.last_membership).expect("json"),
            )
            .expect("insert");
            (m.state, sm.applied_state().await.expect("applied"))
        };
        for _ in 0..2 {
            let (db, mut sm) = opened(&dir);
            assert_eq!(sm.read(State::clone), state);
            assert_eq!(sm.applied_state().await.expect("applied"), applied);
            assert_eq!(*sm.subscribe().borrow(), 8);
            let current = sm
                .get_current_snapshot()
                .await
                .expect("read")
                .expect("a current snapshot");
            assert_eq!(current.meta.last_log_id, Some(log_id(1, 8)));
            assert!(db.open_tree(SM_TREE).expect("sm").is_empty());
        }
    }

    #[tokio::test]
    async fn older_snapshot_does_not_replace_current() {
        let dir = TempDir::new().expect("create temporary directory");
        let (_db, mut sm) = opened(&dir);
        let (entries, later) = history_in_two();
        sm.apply(entries).await.expect("apply first batch");
        let older = sm.build_snapshot().await.expect("build older snapshot");
        sm.apply(later).await.expect("apply second batch");
        let newer = sm.build_snapshot().await.expect("build newer snapshot");

        // The older build finishing last, as a spawned build may, changes nothing.
        let data = older.snapshot.into_inner();
        sm.save_snapshot(&older.meta, &data).expect("save older");
        let current = sm.get_current_snapshot().await.expect("read snapshot");
        assert_eq!(current.expect("a current snapshot").meta, newer.meta);
    }

    #[tokio::test]
    async fn a_snapshot_is_protobuf_and_a_json_one_of_before_still_installs() {
        let dir_l = TempDir::new().expect("create temporary directory");
        let dir_f = TempDir::new().expect("create temporary directory");
        let (_db_l, mut leader) = opened(&dir_l);
        apply_history(&mut leader).await;
        let snapshot = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build snapshot");
        let data = snapshot.snapshot.get_ref();
        assert_ne!(data.first(), Some(&b'{'), "written as protobuf");
        let json = serde_json::to_vec(&*leader.machine()).expect("json");
        assert!(data.len() < json.len(), "{} >= {}", data.len(), json.len());

        let (_db_f, mut follower) = opened(&dir_f);
        let mut cursor = follower
            .begin_receiving_snapshot()
            .await
            .expect("begin receiving");
        *cursor = std::io::Cursor::new(json);
        follower
            .install_snapshot(&snapshot.meta, cursor)
            .await
            .expect("install a JSON snapshot");
        assert_eq!(follower.read(State::clone), leader.read(State::clone));
        // Garbage of either kind is refused, not installed.
        for bad in [&b"{not json"[..], &[0x0a, 0xff][..]] {
            assert!(super::decode_machine(bad).is_err());
        }
    }

    #[tokio::test]
    async fn snapshot_transfers_state() {
        let dir_l = TempDir::new().expect("create temporary directory");
        let dir_f = TempDir::new().expect("create temporary directory");
        let (_db_l, mut leader) = opened(&dir_l);
        apply_history(&mut leader).await;
        let snapshot = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build snapshot");
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 8)));
        assert!(snapshot.meta.snapshot_id.starts_with("1-8-"));

        let meta = {
            // The follower has a stale node of its own, which the snapshot must remove.
            let (_db_f, mut follower) = opened(&dir_f);
            follower
                .apply([normal(
                    1,
                    Command::AddNode {
                        node: node(7, Role::Worker),
                    },
                )])
                .await
                .expect("apply on follower");
            let mut rx = follower.subscribe();
            rx.borrow_and_update();

            let mut data = follower
                .begin_receiving_snapshot()
                .await
                .expect("begin receiving");
            *data = *snapshot.snapshot;
            follower
                .install_snapshot(&snapshot.meta, data)
                .await
                .expect("install snapshot");

            assert!(rx.has_changed().expect("sender alive"));
            assert_eq!(*rx.borrow(), 8);
            assert_eq!(follower.read(State::clone), leader.read(State::clone));
            assert_eq!(
                follower.applied_state().await.expect("applied"),
                leader.applied_state().await.expect("applied")
            );
            snapshot.meta
        };

        // After a restart the follower has the same state and still knows its snapshot.
        let (_db_f, mut follower) = opened(&dir_f);
        let state = follower.read(State::clone);
        assert_eq!(state, leader.read(State::clone));
        assert!(!state.nodes.contains_key(&NodeId(7)));
        let current = follower
            .get_current_snapshot()
            .await
            .expect("read snapshot")
            .expect("a current snapshot");
        assert_eq!(current.meta, meta);
        assert_eq!(
            follower.applied_state().await.expect("applied"),
            leader.applied_state().await.expect("applied")
        );
    }
}
