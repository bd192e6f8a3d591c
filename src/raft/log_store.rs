//! The Raft log, vote and commit index in sled.
//!
//! openraft hands [`LogStore`] the entries a leader replicates, the vote this node cast and
//! the commit index; it reads ranges of entries back to replicate them to followers and to
//! apply them. Everything lives in two sled trees of a database of its own (the daemon's
//! `raft` directory), apart from the state machine's, so that the flush each append waits
//! for writes the log and nothing else:
//!
//! | tree        | key                                  | value                          |
//! |-------------|--------------------------------------|--------------------------------|
//! | `raft_log`  | log index, 8 bytes big-endian        | protobuf `Entry` (`proto/raft.proto`; JSON in data dirs of before, still read) |
//! | `raft_meta` | `vote`                               | JSON `openraft::Vote`          |
//! | `raft_meta` | `committed`                          | JSON `openraft::LogId`         |
//! | `raft_meta` | `last_purged`                        | JSON `openraft::LogId`         |
//!
//! Big-endian keys sort like the indexes they encode, so a range of the log is one sled
//! range scan and the last entry is the tree's last key.
//!
//! Durability, the rules openraft relies on:
//!
//! - [`RaftLogStorage::append`] writes the entries in one atomic batch (so a reader sees
//!   them as soon as it returns), flushes the log's db and only then tells openraft they
//!   are durable through the callback. openraft 0.9 handles nothing else until then, and
//!   a follower answers AppendEntries only after it: when the state machine's writes
//!   shared this flush, it took 0.1–0.9 s under load, longer than AppendEntries waits.
//! - [`RaftLogStorage::save_vote`] flushes before it returns.
//! - `committed` is written without a flush: losing its last update only means openraft
//!   re-applies less at start-up and waits for the leader for the rest.
//! - [`RaftLogStorage::truncate`] removes the tail in one atomic batch. It is not flushed:
//!   should it be lost, the next `append` (which flushes) had not happened either.
//! - [`RaftLogStorage::purge`] first flushes the state machine's db, then removes the
//!   head and records `last_purged` in one transaction. The flush matters because the
//!   state machine (`super::state_machine`) keeps its state in memory and writes only
//!   snapshots, unflushed: once entries are gone from the log, the snapshot that holds
//!   what they produced (openraft purges only entries a snapshot covers) must be on disk.
//!
//! The log store is therefore opened with both databases ([`LogStore::open`]). Data dirs
//! of before kept the log's trees in the state machine's db; [`move_log`] moves them.

// openraft's `StorageError` is large, and it is what the storage traits return; the
// helpers here return it too rather than boxing it only to unbox it at every call.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogReader, RaftTypeConfig, StorageError,
    StorageIOError, Vote,
};
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionResult, TransactionError};
use sled::Transactional;
use tokio::sync::watch;

use super::TypeConfig;
use crate::proto;

/// The Raft node id type of [`TypeConfig`].
type NodeId = <TypeConfig as RaftTypeConfig>::NodeId;

/// What the storage traits return.
type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// Name of the tree that holds the entries.
const LOG_TREE: &str = "raft_log";
/// Name of the tree that holds vote, commit index and purge point.
const META_TREE: &str = "raft_meta";
/// The trees of the log's database: what a node that leaves the managers drops.
pub const TREES: [&str; 2] = [LOG_TREE, META_TREE];
/// `raft_meta` key of the vote.
const VOTE_KEY: &[u8] = b"vote";
/// `raft_meta` key of the last committed log id.
const COMMITTED_KEY: &[u8] = b"committed";
/// `raft_meta` key of the last purged log id.
const LAST_PURGED_KEY: &[u8] = b"last_purged";

/// How many bytes of encoded entries [`RaftLogReader::limited_get_log_entries`] reads
/// before it stops (it always returns at least one entry when the range holds one; the
/// entry that crosses the line is included). With the largest batch entry on top (half
/// of [`super::network::APPEND_BYTES`], `crate::manager::BATCH_BYTES`, checked there) it
/// stays within one AppendEntries: a read of 4 MiB was refused as too large every time,
/// and read and encoded again in smaller parts.
pub const LIMITED_READ_BYTES: usize = super::network::APPEND_BYTES / 2 - 64 * 1024;

/// How many bytes of entries (encoded) [`Recent`] keeps at most. At 4 MiB, a follower
/// a few seconds behind while 100,000 tasks were created (entries of 60 KB) was sent
/// entries read back from sled and decoded: a fifth of the leader's time.
const RECENT_BYTES: usize = 32 * 1024 * 1024;
/// How many entries [`Recent`] keeps at most.
const RECENT_ENTRIES: usize = 4096;

/// The Raft log storage of one node: entries, vote, commit index and purge point, in the
/// `raft_log` and `raft_meta` sled trees.
///
/// Cloning is cheap and shares the trees; openraft's log reader is such a clone.
#[derive(Clone)]
pub struct LogStore {
    /// The log's database, flushed to make appends and votes durable.
    db: sled::Db,
    /// The state machine's database, flushed before a purge.
    state_db: sled::Db,
    /// `raft_log`: index (big-endian) → protobuf entry.
    log: sled::Tree,
    /// `raft_meta`: `vote`, `committed`, `last_purged`.
    meta: sled::Tree,
    /// The last entries appended, shared by every clone (openraft's log readers).
    recent: Arc<Mutex<Recent>>,
}

/// The last entries of the log as they were appended, so that applying them and
/// replicating them to each follower reads no sled value and decodes nothing (a
/// [`super::LogCommand`] is shared, not copied). At most [`RECENT_BYTES`] and
/// [`RECENT_ENTRIES`]; older entries are read from sled.
///
/// The invariant the reads rely on: the entries held have consecutive indexes and the
/// last of them is the last entry of the log. Every append goes through here after it
/// is in sled, a truncate and a purge cut here what they cut there, and an append that
/// does not follow the last entry held (the log after a snapshot was installed) starts
/// the list again.
///
/// An entry the state machine applied is kept as its bytes only
/// ([`super::LogCommand::bytes_only`]): replication needs nothing else, and the decoded
/// commands of 32 MiB of entries cost the leader about 80 MB at 30,000 tasks.
#[derive(Default)]
struct Recent {
    entries: VecDeque<Entry<TypeConfig>>,
    /// The encoded size of `entries`.
    bytes: usize,
    /// The index of the last entry applied, when the state machine tells it
    /// ([`LogStore::keep_applied_as_bytes`]).
    applied: Option<watch::Receiver<u64>>,
    /// The entries before this index are held as bytes only.
    light_from: u64,
}

impl Recent {
    fn push(&mut self, entry: Entry<TypeConfig>) {
        if let Some(last) = self.entries.back() {
            if last.log_id.index + 1 != entry.log_id.index {
                self.entries.clear();
                self.bytes = 0;
            }
        }
        self.bytes += entry_bytes(&entry);
        self.entries.push_back(entry);
        while self.entries.len() > 1
            && (self.bytes > RECENT_BYTES || self.entries.len() > RECENT_ENTRIES)
        {
            self.pop_front();
        }
    }

    /// Keeps the entries applied since the last call as their bytes only.
    fn lighten(&mut self) {
        let Some(applied) = self.applied.as_ref().map(|rx| *rx.borrow()) else {
            return;
        };
        let Some(first) = self.entries.front().map(|e| e.log_id.index) else {
            return;
        };
        let from = self.light_from.max(first);
        for e in self.entries.iter_mut().skip((from - first) as usize) {
            if e.log_id.index > applied {
                break;
            }
            if let openraft::EntryPayload::Normal(cmd) = &e.payload {
                e.payload = openraft::EntryPayload::Normal(cmd.bytes_only());
            }
        }
        self.light_from = self.light_from.max(applied + 1);
    }

    fn pop_front(&mut self) {
        let popped = self.entries.pop_front();
        self.forget(popped);
    }

    /// Takes what a popped entry counted for off `bytes`.
    fn forget(&mut self, popped: Option<Entry<TypeConfig>>) {
        if let Some(e) = popped {
            self.bytes -= entry_bytes(&e);
        }
    }

    /// Drops the entries from `index` on.
    fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.log_id.index >= index) {
            let popped = self.entries.pop_back();
            self.forget(popped);
        }
    }

    /// Drops the entries up to `index`.
    fn purge(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.log_id.index <= index)
        {
            self.pop_front();
        }
    }

    /// The entries in `[start, end)` under the same budget as a read of sled, when the
    /// range starts within what is held (everything after it is held too); `None` when
    /// it starts before, or when `is_last` says the last entry held is not the log's.
    fn read(
        &self,
        start: u64,
        end: Option<u64>,
        budget: usize,
        is_last: impl Fn(u64) -> bool,
    ) -> Option<Vec<Entry<TypeConfig>>> {
        let first = self.entries.front()?.log_id.index;
        let last = self.entries.back()?.log_id.index;
        if start < first || !is_last(last) {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for e in self.entries.iter().skip((start - first) as usize) {
            if end.is_some_and(|end| e.log_id.index >= end) || (bytes > budget && !out.is_empty()) {
                break;
            }
            bytes += entry_bytes(e);
            out.push(e.clone());
        }
        Some(out)
    }
}

/// What an entry counts for in [`Recent`] and in a read's budget: its command's bytes.
fn entry_bytes(e: &Entry<TypeConfig>) -> usize {
    match &e.payload {
        openraft::EntryPayload::Normal(cmd) => cmd.bytes().len() + 32,
        _ => 64,
    }
}

impl LogStore {
    /// Opens (or creates) the log trees in `db`; `state_db` is the database the state
    /// machine is opened on (it may be `db` itself).
    pub fn open(db: &sled::Db, state_db: &sled::Db) -> crate::Result<LogStore> {
        Ok(LogStore {
            db: db.clone(),
            state_db: state_db.clone(),
            log: db.open_tree(LOG_TREE)?,
            meta: db.open_tree(META_TREE)?,
            recent: Arc::default(),
        })
    }

    /// Reads the entries with index in `[start, end)` (`end == None`: to the last one),
    /// stopping early once more than `budget` bytes were read.
    fn read_range(
        &self,
        start: u64,
        end: Option<u64>,
        budget: usize,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        if end.is_some_and(|end| start >= end) {
            return Ok(Vec::new());
        }
        // What is held is read only while its last entry is the log's last in sled too
        // (the invariant of [`Recent`], checked rather than trusted: it costs one key).
        let last_key = self
            .log
            .last()
            .map_err(|e| StorageIOError::read_logs(&e))?
            .map(|(k, _)| k);
        if let Some(held) = self.recent().read(start, end, budget, |last| {
            last_key.as_deref() == Some(&index_key(last)[..])
        }) {
            return Ok(held);
        }
        let lo = Bound::Included(index_key(start));
        let hi = end.map_or(Bound::Unbounded, |end| Bound::Excluded(index_key(end)));
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for item in self.log.range::<[u8; 8], _>((lo, hi)) {
            if bytes > budget && !entries.is_empty() {
                break;
            }
            let (_, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let entry = decode_entry(&value)?;
            bytes += entry_bytes(&entry);
            entries.push(entry);
        }
        Ok(entries)
    }

    /// The log id of the last entry present, if any.
    fn last_present(&self) -> StorageResult<Option<LogId<NodeId>>> {
        match self.log.last().map_err(|e| StorageIOError::read_logs(&e))? {
            Some((_, value)) => Ok(Some(decode_entry(&value)?.log_id)),
            None => Ok(None),
        }
    }

    /// Keeps the entries held in memory that the state machine has applied (`applied`:
    /// [`super::state_machine::StateMachineStore::subscribe`]) as their bytes only.
    pub fn keep_applied_as_bytes(&self, applied: watch::Receiver<u64>) {
        self.recent().applied = Some(applied);
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // A panic while holding the list cannot leave it unlike the log: each change
        // is made to sled first.
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Flushes the log's db to disk.
    async fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush_async().await.map(|_| ())
    }
}

/// `raft_meta` key, in the log's own db, set once the trees were copied there from the
/// state machine's db (where data dirs of before kept them); see [`move_log`].
const MOVED_KEY: &[u8] = b"moved";

/// Moves the log's trees from `old`, the state machine's db where data dirs of before
/// kept them, to `new`, the log's own db. Returns how many entries it moved (0 when
/// `old` holds no log).
///
/// It may be stopped at any point and run again: the copy is marked done in `new` and
/// flushed before `old`'s trees are dropped, and a copy not marked done is made afresh.
pub fn move_log(old: &sled::Db, new: &sled::Db) -> crate::Result<usize> {
    let names = old.tree_names();
    if !names
        .iter()
        .any(|n| n.as_ref() == LOG_TREE.as_bytes() || n.as_ref() == META_TREE.as_bytes())
    {
        return Ok(0);
    }
    let mut moved = 0;
    let new_meta = new.open_tree(META_TREE)?;
    if new_meta.get(MOVED_KEY)?.is_none() {
        let new_log = new.open_tree(LOG_TREE)?;
        for (name, to) in [(LOG_TREE, &new_log), (META_TREE, &new_meta)] {
            to.clear()?;
            let mut batch = sled::Batch::default();
            let mut n = 0usize;
            for item in old.open_tree(name)?.iter() {
                let (key, value) = item?;
                batch.insert(key, value);
                n += 1;
                if n.is_multiple_of(1024) {
                    to.apply_batch(std::mem::take(&mut batch))?;
                }
            }
            to.apply_batch(batch)?;
            if name == LOG_TREE {
                moved = n;
            }
        }
        // Last: sled recovers a prefix of the writes, so the mark implies the copy.
        new_meta.insert(MOVED_KEY, &b"1"[..])?;
        new.flush()?;
    }
    old.drop_tree(LOG_TREE)?;
    old.drop_tree(META_TREE)?;
    old.flush()?;
    Ok(moved)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let Some((start, end)) = half_open(&range) else {
            return Ok(Vec::new());
        };
        self.read_range(start, end, usize::MAX)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        self.read_range(start, Some(end), LIMITED_READ_BYTES)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<NodeId>> =
            read_json(&self.meta, LAST_PURGED_KEY).map_err(StorageIOError::read_logs)?;
        let last_log_id = self.last_present()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        write_json(&self.meta, VOTE_KEY, vote).map_err(StorageIOError::write_vote)?;
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(read_json(&self.meta, VOTE_KEY).map_err(StorageIOError::read_vote)?)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        match committed {
            Some(log_id) => {
                write_json(&self.meta, COMMITTED_KEY, &log_id).map_err(StorageIOError::write)?
            }
            None => {
                self.meta
                    .remove(COMMITTED_KEY)
                    .map_err(|e| StorageIOError::write(&e))?;
            }
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(read_json(&self.meta, COMMITTED_KEY).map_err(StorageIOError::read)?)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        super::cpu_heavy(|| {
            let mut batch = sled::Batch::default();
            for entry in &entries {
                let value = proto::Entry::from(entry).encode_to_vec();
                batch.insert(&index_key(entry.log_id.index)[..], value);
            }
            self.log.apply_batch(batch)
        })
        .map_err(|e| StorageIOError::write_logs(&e))?;
        // Held only once they are in sled (the invariant of [`Recent`]).
        {
            let mut recent = self.recent();
            for entry in entries {
                recent.push(entry);
            }
            recent.lighten();
        }
        // openraft 0.9 waits for this flush before it handles anything else: a slow one
        // holds off heartbeats and votes (seen at 0.1–0.9 s on a loaded machine).
        let started = std::time::Instant::now();
        let flushed = self.flush().await;
        if started.elapsed() > std::time::Duration::from_millis(100) {
            tracing::debug!("the raft log's flush took {:?}", started.elapsed());
        }
        match flushed {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = StorageIOError::write_logs(&e);
                callback.log_io_completed(Err(io::Error::from(e)));
                Err(err.into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut batch = sled::Batch::default();
        for key in self.log.range(index_key(log_id.index)..).keys() {
            batch.remove(key.map_err(|e| StorageIOError::read_logs(&e))?);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.recent().truncate(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        // Make the current snapshot, which holds the state of the entries about to go,
        // durable first (see the module doc). openraft waits for the purge before it
        // does anything else, heartbeats included: a long one is told.
        let started = std::time::Instant::now();
        self.state_db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let flushed = started.elapsed();

        let mut batch = sled::Batch::default();
        for key in self.log.range(..=index_key(log_id.index)).keys() {
            batch.remove(key.map_err(|e| StorageIOError::read_logs(&e))?);
        }
        let last_purged =
            serde_json::to_vec(&log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        let result = (&self.log, &self.meta).transaction(
            |(log, meta)| -> ConflictableTransactionResult<(), Infallible> {
                log.apply_batch(&batch)?;
                meta.insert(LAST_PURGED_KEY, last_purged.as_slice())?;
                Ok(())
            },
        );
        if started.elapsed() > std::time::Duration::from_millis(100) {
            tracing::info!(
                upto = log_id.index,
                "raft log purge took {:?} ({:?} of it flushing the snapshot)",
                started.elapsed(),
                flushed
            );
        }
        match result {
            Ok(()) => {
                self.recent().purge(log_id.index);
                Ok(())
            }
            Err(TransactionError::Storage(e)) => Err(StorageIOError::write_logs(&e).into()),
            Err(TransactionError::Abort(never)) => match never {},
        }
    }
}

/// The `raft_log` key of a log index.
fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Turns any range of indexes into `[start, end)`, `end == None` meaning unbounded.
/// Returns `None` when the range cannot hold any index.
fn half_open(range: &impl RangeBounds<u64>) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        // `..=u64::MAX` reaches the end of the index space: the same as unbounded.
        Bound::Included(&i) => i.checked_add(1),
        Bound::Excluded(&i) => Some(i),
        Bound::Unbounded => None,
    };
    Some((start, end))
}

/// Decodes one `raft_log` value: the protobuf `Entry` of `proto/raft.proto`, or the
/// JSON that data dirs written before it hold (a JSON entry starts with `{`; a protobuf
/// one with the tag of field 1 or 2, never `{`).
fn decode_entry(value: &[u8]) -> StorageResult<Entry<TypeConfig>> {
    if value.first() == Some(&b'{') {
        return serde_json::from_slice(value).map_err(|e| StorageIOError::read_logs(&e).into());
    }
    let entry = proto::Entry::decode(value).map_err(|e| StorageIOError::read_logs(&e))?;
    Entry::try_from(entry).map_err(|e| StorageIOError::read_logs(&e).into())
}

/// Reads and decodes the JSON value under `key`, `None` when absent.
fn read_json<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>, AnyError> {
    match tree.get(key).map_err(|e| AnyError::new(&e))? {
        Some(value) => serde_json::from_slice(&value)
            .map(Some)
            .map_err(|e| AnyError::new(&e)),
        None => Ok(None),
    }
}

/// Encodes `value` as JSON and stores it under `key`.
fn write_json<T: Serialize>(tree: &sled::Tree, key: &[u8], value: &T) -> Result<(), AnyError> {
    let bytes = serde_json::to_vec(value).map_err(|e| AnyError::new(&e))?;
    tree.insert(key, bytes).map_err(|e| AnyError::new(&e))?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::StorageError;
    use tempfile::TempDir;

    use super::{LogStore, NodeId, TypeConfig};
    use crate::raft::state_machine::StateMachineStore;

    /// Opens a sled db in `dir` the way tests do (the daemon opens its own).
    /// A dropped db's flusher thread may hold the file lock for a moment, so a reopen
    /// right after a drop retries for a while.
    pub(crate) fn open_db(dir: &std::path::Path) -> sled::Db {
        let mut tries = 0;
        loop {
            match sled::Config::new()
                .path(dir)
                .cache_capacity(64 * 1024 * 1024)
                .open()
            {
                Ok(db) => return db,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("open sled db: {e}"),
            }
        }
    }

    /// Builds both stores on a fresh sled db in a temporary directory; the directory is
    /// the guard and lives as long as the test using the stores.
    struct SledStoreBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledStoreBuilder {
        async fn build(
            &self,
        ) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
            // Two databases, as the daemon opens them.
            let dir = TempDir::new().expect("create temporary directory");
            let log_db = open_db(&dir.path().join("raft"));
            let db = open_db(&dir.path().join("db"));
            let log = LogStore::open(&log_db, &db).expect("open log store");
            let sm = StateMachineStore::open(&db).expect("open state machine");
            Ok((dir, log, sm))
        }
    }

    /// openraft's conformance suite, for both the log store and the state machine.
    #[test]
    fn openraft_suite() -> Result<(), StorageError<NodeId>> {
        Suite::test_all(SledStoreBuilder)
    }

    /// A data dir of before kept the log in the state machine's db: it moves to its own
    /// db whole, once; a copy cut short is made again, and one marked done is kept.
    #[tokio::test]
    async fn a_log_of_before_moves_to_its_own_db_whole() {
        use super::{index_key, move_log, LOG_TREE, META_TREE};
        use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
        use openraft::testing::log_id;
        use openraft::{Entry, EntryPayload, RaftLogReader, Vote};

        let dir = TempDir::new().expect("create temporary directory");
        let old = open_db(&dir.path().join("db"));
        let entry = |i: u64| Entry::<TypeConfig> {
            log_id: log_id(2, 1, i),
            payload: EntryPayload::Normal(crate::store::Command::Noop.into()),
        };
        let entries: Vec<_> = (1..=3000).map(entry).collect();
        {
            let mut before = LogStore::open(&old, &old).expect("open log store");
            before.save_vote(&Vote::new(2, 1)).await.expect("vote");
            before
                .blocking_append(entries.clone())
                .await
                .expect("append");
            before.purge(log_id(2, 1, 10)).await.expect("purge");
            before
                .save_committed(Some(log_id(2, 1, 2999)))
                .await
                .expect("committed");
        }
        // The state machine's trees are not the log's: they stay.
        old.open_tree("sm")
            .expect("sm")
            .insert("k", "v")
            .expect("insert");
        let has_log = |db: &sled::Db| {
            db.tree_names()
                .iter()
                .any(|n| n.as_ref() == LOG_TREE.as_bytes() || n.as_ref() == META_TREE.as_bytes())
        };
        assert!(has_log(&old), "control: the old layout");

        let new = open_db(&dir.path().join("raft"));
        // A copy cut short before: part of a log, not marked done.
        new.open_tree(LOG_TREE)
            .expect("log tree")
            .insert(index_key(5), &b"stale"[..])
            .expect("insert");
        assert_eq!(move_log(&old, &new).expect("move"), 2990);
        assert!(!has_log(&old), "the old trees are dropped");
        assert!(old
            .open_tree("sm")
            .expect("sm")
            .get("k")
            .expect("get")
            .is_some());

        let mut store = LogStore::open(&new, &old).expect("open moved log");
        let check = |store: &mut LogStore| {
            let mut store = store.clone();
            let entries = entries.clone();
            async move {
                assert_eq!(
                    store.read_vote().await.expect("vote"),
                    Some(Vote::new(2, 1))
                );
                assert_eq!(
                    store.read_committed().await.expect("committed"),
                    Some(log_id(2, 1, 2999))
                );
                let state = store.get_log_state().await.expect("state");
                assert_eq!(state.last_purged_log_id, Some(log_id(2, 1, 10)));
                assert_eq!(state.last_log_id, Some(log_id(2, 1, 3000)));
                let got = store.try_get_log_entries(1..=3000).await.expect("read");
                assert_eq!(got, entries[10..], "all of it, and nothing stale");
            }
        };
        check(&mut store).await;

        // Every start runs it: with nothing to move it changes nothing.
        assert_eq!(move_log(&old, &new).expect("again"), 0);
        check(&mut store).await;
        // Stopped after the copy was marked done, before the old trees went: they go,
        // and the moved log is kept as it is.
        old.open_tree(LOG_TREE)
            .expect("log tree")
            .insert(index_key(1), &b"old"[..])
            .expect("insert");
        assert_eq!(move_log(&old, &new).expect("after the mark"), 0);
        assert!(!has_log(&old));
        check(&mut store).await;
    }

    /// Vote, commit index, entries and purge point survive closing and reopening the db.
    #[tokio::test]
    async fn entries_are_kept_as_protobuf_and_old_json_ones_still_read() {
        use super::{decode_entry, index_key, LOG_TREE};
        use openraft::storage::RaftLogStorageExt;
        use openraft::testing::log_id;
        use openraft::{Entry, EntryPayload, RaftLogReader};

        let dir = TempDir::new().expect("create temporary directory");
        let db = open_db(dir.path());
        let mut store = LogStore::open(&db, &db).expect("open log store");
        let entry = |i: u64| Entry::<TypeConfig> {
            log_id: log_id(2, 1, i),
            payload: EntryPayload::Normal(crate::store::Command::Noop.into()),
        };
        // One entry as a data dir of before wrote it, one as this build writes it.
        db.open_tree(LOG_TREE)
            .expect("log tree")
            .insert(index_key(1), serde_json::to_vec(&entry(1)).expect("json"))
            .expect("insert");
        store.blocking_append([entry(2)]).await.expect("append");
        let raw = db
            .open_tree(LOG_TREE)
            .expect("log tree")
            .get(index_key(2))
            .expect("read")
            .expect("present");
        assert_ne!(raw.first(), Some(&b'{'), "written as protobuf");
        let got = store
            .try_get_log_entries(1..=2)
            .await
            .expect("read entries");
        assert_eq!(got, vec![entry(1), entry(2)]);
        // Neither form of garbage reads as an entry.
        for bad in [&b"{not json"[..], &[0x0a, 0xff][..]] {
            assert!(decode_entry(bad).is_err());
        }
    }

    /// The entries held in memory read exactly as sled's do, through appends, a
    /// truncate and a purge; and they are what is read (a store opened afresh on the same
    /// db holds none and reads sled).
    #[tokio::test]
    async fn the_last_entries_read_from_memory_as_they_are_in_sled() {
        use super::{index_key, LOG_TREE, RECENT_BYTES};
        use crate::store::{Command, NodeId};
        use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
        use openraft::testing::log_id;
        use openraft::{Entry, EntryPayload, RaftLogReader};

        let dir = TempDir::new().expect("create temporary directory");
        let db = open_db(dir.path());
        let mut held = LogStore::open(&db, &db).expect("open log store");
        let entry = |term: u64, i: u64| Entry::<TypeConfig> {
            log_id: log_id(term, 1, i),
            payload: EntryPayload::Normal(
                Command::RemoveNode {
                    id: NodeId(term * 100 + i),
                }
                .into(),
            ),
        };
        held.blocking_append((1..=10).map(|i| entry(1, i)))
            .await
            .expect("append");
        let same = |held: LogStore| async move {
            let mut held = held;
            let mut fresh = LogStore::open(&db_of(&held), &db_of(&held)).expect("open");
            for (a, b) in [(1, 11), (3, 8), (5, 100), (9, 10), (11, 12)] {
                assert_eq!(
                    held.try_get_log_entries(a..b).await.expect("held"),
                    fresh.try_get_log_entries(a..b).await.expect("sled"),
                    "{a}..{b}"
                );
                assert_eq!(
                    held.limited_get_log_entries(a, b).await.expect("held"),
                    fresh.limited_get_log_entries(a, b).await.expect("sled"),
                );
            }
            held
        };
        let mut held = same(held).await;
        held.truncate(log_id(1, 1, 7)).await.expect("truncate");
        held.purge(log_id(1, 1, 2)).await.expect("purge");
        let mut held = same(held).await;
        held.blocking_append((7..=9).map(|i| entry(2, i)))
            .await
            .expect("append after the truncate");
        let mut held = same(held).await;
        assert_eq!(
            held.try_get_log_entries(9..10).await.expect("read"),
            vec![entry(2, 9)]
        );

        // An entry in sled past the last held (the invariant broken from outside): the
        // read goes to sled and finds it.
        let tree = db.open_tree(LOG_TREE).expect("log tree");
        tree.insert(
            index_key(10),
            prost::Message::encode_to_vec(&crate::proto::Entry::from(&entry(2, 10))),
        )
        .expect("insert");
        assert_eq!(
            held.try_get_log_entries(9..11).await.expect("read"),
            vec![entry(2, 9), entry(2, 10)]
        );
        tree.remove(index_key(10)).expect("remove");

        // What is read is what is held: sled's value spoilt, the held entry still
        // reads; a store without it (the control) fails on the same read.
        db.open_tree(LOG_TREE)
            .expect("log tree")
            .insert(index_key(8), &[0x0a, 0xff][..])
            .expect("spoil");
        assert_eq!(
            held.try_get_log_entries(8..9).await.expect("held"),
            vec![entry(2, 8)]
        );
        let mut fresh = LogStore::open(&db, &db).expect("open");
        assert!(fresh.try_get_log_entries(8..9).await.is_err());

        // Bounded: many large entries keep at most RECENT_BYTES and one entry.
        let big = |i: u64| Entry::<TypeConfig> {
            log_id: log_id(3, 1, i),
            payload: EntryPayload::Normal(
                Command::RotateSecret {
                    role: crate::store::Role::Worker,
                    secret: crate::store::Sealed::from_stored("s".repeat(256 * 1024)),
                }
                .into(),
            ),
        };
        let n = (RECENT_BYTES / (256 * 1024)) as u64 + 10;
        held.blocking_append((10..10 + n).map(big))
            .await
            .expect("append");
        let bytes = held.recent().bytes;
        assert!(bytes <= RECENT_BYTES + 257 * 1024, "{bytes}");
        assert!((held.recent().entries.len() as u64) < n);
        // Reads before what is held go to sled.
        assert_eq!(
            held.try_get_log_entries(10..11).await.expect("read"),
            vec![big(10)]
        );
    }

    /// Entries the state machine applied are held as their bytes only; those not yet
    /// applied keep their command decoded (for the apply that reads them); both read as
    /// the same entries.
    #[tokio::test]
    async fn applied_entries_are_held_as_bytes_only() {
        use crate::store::{Command, NodeId};
        use openraft::storage::RaftLogStorageExt;
        use openraft::testing::log_id;
        use openraft::{Entry, EntryPayload, RaftLogReader};

        let decoded = |store: &LogStore| -> Vec<(u64, bool)> {
            let recent = store.recent();
            recent
                .entries
                .iter()
                .map(|e| match &e.payload {
                    EntryPayload::Normal(cmd) => (e.log_id.index, cmd.is_decoded()),
                    _ => (e.log_id.index, false),
                })
                .collect()
        };
        let entry = |i: u64| Entry::<TypeConfig> {
            log_id: log_id(1, 1, i),
            payload: EntryPayload::Normal(Command::RemoveNode { id: NodeId(i) }.into()),
        };
        let dir = TempDir::new().expect("create temporary directory");
        let db = open_db(dir.path());
        let mut store = LogStore::open(&db, &db).expect("open log store");
        let (applied, rx) = tokio::sync::watch::channel(0u64);
        store.keep_applied_as_bytes(rx);
        store
            .blocking_append((1..=5).map(entry))
            .await
            .expect("append");
        // Positive control: nothing applied, all decoded.
        assert_eq!(
            decoded(&store),
            (1..=5).map(|i| (i, true)).collect::<Vec<_>>()
        );
        applied.send_replace(3);
        store
            .blocking_append((6..=7).map(entry))
            .await
            .expect("append");
        let want = [
            (1, false),
            (2, false),
            (3, false),
            (4, true),
            (5, true),
            (6, true),
            (7, true),
        ];
        assert_eq!(decoded(&store), want);
        // The same entries, read as replication reads them (their bytes: comparing the
        // commands would decode them again).
        let bytes = |entries: Vec<Entry<TypeConfig>>| -> Vec<(u64, Vec<u8>)> {
            entries
                .iter()
                .map(|e| match &e.payload {
                    EntryPayload::Normal(cmd) => (e.log_id.index, cmd.bytes().to_vec()),
                    _ => (e.log_id.index, vec![]),
                })
                .collect()
        };
        assert_eq!(
            bytes(store.limited_get_log_entries(1, 8).await.expect("read")),
            bytes((1..=7).map(entry).collect()),
        );
        assert_eq!(decoded(&store), want, "reading the bytes decodes nothing");
        applied.send_replace(7);
        store.blocking_append([entry(8)]).await.expect("append");
        let want: Vec<_> = (1..=8).map(|i| (i, i == 8)).collect();
        assert_eq!(decoded(&store), want);
    }

    fn db_of(store: &LogStore) -> sled::Db {
        store.db.clone()
    }

    #[tokio::test]
    async fn log_survives_reopen() {
        use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
        use openraft::testing::{blank_ent, log_id};
        use openraft::{RaftLogReader, Vote};

        let dir = TempDir::new().expect("create temporary directory");
        {
            let db = open_db(dir.path());
            let mut store = LogStore::open(&db, &db).expect("open log store");
            store.save_vote(&Vote::new(3, 1)).await.expect("save vote");
            let entries: Vec<_> = (1..=5).map(|i| blank_ent::<TypeConfig>(3, 1, i)).collect();
            // `LogFlushed` cannot be built outside openraft: `blocking_append` calls
            // `append` and waits for its flush callback, as openraft does.
            store.blocking_append(entries).await.expect("append");
            store
                .save_committed(Some(log_id(3, 1, 4)))
                .await
                .expect("save committed");
            store.purge(log_id(3, 1, 2)).await.expect("purge");
            store.truncate(log_id(3, 1, 5)).await.expect("truncate");
        }
        let db = open_db(dir.path());
        let mut store = LogStore::open(&db, &db).expect("reopen log store");
        assert_eq!(
            store.read_vote().await.expect("read vote"),
            Some(Vote::new(3, 1))
        );
        assert_eq!(
            store.read_committed().await.expect("read committed"),
            Some(log_id(3, 1, 4))
        );
        let state = store.get_log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id, Some(log_id(3, 1, 2)));
        assert_eq!(state.last_log_id, Some(log_id(3, 1, 4)));
        let indexes: Vec<u64> = store
            .try_get_log_entries(..)
            .await
            .expect("read entries")
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(indexes, vec![3, 4]);
        let limited = store.limited_get_log_entries(3, 100).await.expect("read");
        assert_eq!(limited.len(), 2);
        let (start, end) = (4, 3);
        let reversed = store.try_get_log_entries(start..end).await;
        assert!(reversed.expect("empty range").is_empty());
    }
}
