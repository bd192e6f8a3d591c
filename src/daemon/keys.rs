//! This node's keys at rest, and the locked state of autolock (the design is in
//! [`crate::keys`]).
//!
//! # Which key a node holds
//!
//! | role    | key file in the data dir                    | seals                         |
//! |---------|---------------------------------------------|-------------------------------|
//! | manager | `data.key`: the cluster's data key, in the clear or wrapped (autolock) | its TLS key in `local`, and (for all managers alike) the CA key and join secrets in the state |
//! | worker  | `node.key`: a random key of its own         | its TLS key in `local`        |
//!
//! The `member` key of the `local` tree holds a [`StoredMember`]: the membership with
//! the TLS private key taken out, that key sealed, and which of the two keys sealed it.
//!
//! # Role changes
//!
//! - **Promotion** (or a join as manager): the leader sends the data key, and the unlock
//!   key if autolock is on, with the new certificate (`ManagerKeys`);
//!   [`Daemon::receive_manager_keys`] writes `data.key` (wrapped if autolock is on) before
//!   the membership is saved sealed with it; then `node.key` is removed.
//! - **Demotion**: the renewal brings no keys; a fresh `node.key` is written, the
//!   membership is saved sealed with it, then `data.key` is removed and the data key
//!   forgotten (the state tables it sealed are dropped with the Raft data). The data key
//!   itself is not rotated: a demoted manager that kept a copy of it could still read a
//!   stolen copy of another manager's database. Rotating the data key is future work.
//! - **Leave** removes both files.
//!
//! Each step writes the new key file before the membership that needs it and removes
//! the old one after, so a crash at any point leaves a membership whose key is on disk;
//! a stale file is removed at the next start.
//!
//! # Locked
//!
//! A manager that starts and finds `data.key` wrapped stays **locked**: it keeps its
//! membership sealed, serves no cluster port, runs no Raft, agent or mesh; its local
//! socket answers [`LOCKED`] to everything but `Info` (state `locked`) and `Unlock`.
//! [`Daemon::unlock`] unwraps the data key with the unlock key (a wrong key is refused
//! and changes nothing) and resumes the node as a normal start does.
//!
//! While it runs, every manager follows the cluster's sealed unlock key
//! ([`Daemon::spawn_key_follower`]) and rewrites its `data.key` when autolock is turned
//! on or off or its key rotates.

use std::path::Path;
use std::sync::{Arc, MutexGuard};

use serde::{Deserialize, Serialize};

use super::{Daemon, Manager, Member, MEMBER_KEY};
use crate::error::{Error, Result};
use crate::keys::{data_key_path, node_key_path, DataKey, KeyFile, Purpose, Sealed, UnlockKey};
use crate::proto;
use crate::store::Role;

/// What a locked manager answers to every call but `Info` and `Unlock`.
pub const LOCKED: &str = "this manager is locked: run orc unlock with the cluster's unlock key";

/// The keys this node holds in memory.
#[derive(Default)]
pub(super) struct KeyState {
    /// The cluster's data key (managers).
    data: Option<DataKey>,
    /// The unlock key `data.key` is wrapped with now (autolock), if any.
    unlock: Option<UnlockKey>,
    /// This node's own key (workers).
    node: Option<DataKey>,
    /// Set while locked.
    locked: Option<Locked>,
}

/// A locked manager's sealed membership and wrapped data key.
#[derive(Clone)]
struct Locked {
    stored: StoredMember,
    wrapped: Sealed,
}

/// Which key sealed a node's TLS key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SealedWith {
    /// The cluster's data key (`data.key`).
    Data,
    /// The node's own key (`node.key`).
    Node,
}

/// The `member` value of the `local` tree (JSON): the membership without its TLS private
/// key (`creds.key_pem` is empty), the key sealed as [`Purpose::NodeTlsKey`], and which key
/// sealed it.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredMember {
    member: Member,
    key: Sealed,
    sealed_with: SealedWith,
}

impl StoredMember {
    fn open(&self, key: &DataKey) -> Result<Member> {
        let mut m = self.member.clone();
        m.creds.key_pem = key.open_string(Purpose::NodeTlsKey, &self.key)?;
        Ok(m)
    }

    fn decode(bytes: &[u8]) -> Result<StoredMember> {
        serde_json::from_slice(bytes).map_err(|_| {
            Error::Internal(
                "this node's membership is not in the format of this orc (keys at rest): remove the data dir and join the node again"
                    .into(),
            )
        })
    }
}

/// The membership of a stopped node, read from the `member` value of its `local` tree
/// with the key file beside it (for tools and tests; refuses an autolocked manager's).
pub fn read_stored_member(bytes: &[u8], data_dir: &Path) -> Result<Member> {
    let s = StoredMember::decode(bytes)?;
    let path = match s.sealed_with {
        SealedWith::Data => data_key_path(data_dir),
        SealedWith::Node => node_key_path(data_dir),
    };
    match KeyFile::read(&path)? {
        Some(KeyFile::Plain(k)) => s.open(&k),
        Some(KeyFile::Wrapped(_)) => Err(Error::Conflict(LOCKED.into())),
        None => Err(Error::NotFound(format!("{}: missing", path.display()))),
    }
}

impl Daemon {
    fn keys(&self) -> MutexGuard<'_, KeyState> {
        self.inner.keys.lock().expect("keys lock")
    }

    /// The cluster's data key, on a manager.
    pub fn data_key(&self) -> Result<DataKey> {
        let k = self.keys();
        if k.locked.is_some() {
            return Err(Error::Conflict(LOCKED.into()));
        }
        k.data.clone().ok_or_else(|| {
            Error::Unavailable("this node holds no data key: it is not a manager".into())
        })
    }

    /// True while this manager waits for `orc unlock`.
    pub fn is_locked(&self) -> bool {
        self.keys().locked.is_some()
    }

    /// Refuses with [`LOCKED`] while locked.
    pub fn refuse_if_locked(&self) -> Result<()> {
        if self.is_locked() {
            Err(Error::Conflict(LOCKED.into()))
        } else {
            Ok(())
        }
    }

    /// While locked: the membership (without its key), for `orc info`.
    pub fn locked_member(&self) -> Option<Member> {
        self.keys().locked.as_ref().map(|l| l.stored.member.clone())
    }

    /// Encodes `m` for the `local` tree: its TLS key sealed with the data key on a
    /// manager, with the node key on a worker (made on first use).
    pub(super) fn seal_member(&self, m: &Member) -> Result<Vec<u8>> {
        let mut k = self.keys();
        let (key, sealed_with) = match m.role {
            Role::Manager => (
                k.data.clone().ok_or_else(|| {
                    Error::Unavailable(
                        "this node is a manager but holds no data key: the leader sent none".into(),
                    )
                })?,
                SealedWith::Data,
            ),
            Role::Worker => {
                if k.node.is_none() {
                    let nk = DataKey::generate()?;
                    KeyFile::Plain(nk.clone()).write(&node_key_path(&self.config().data_dir))?;
                    k.node = Some(nk);
                }
                (k.node.clone().expect("node key"), SealedWith::Node)
            }
        };
        let mut member = m.clone();
        member.creds.key_pem = String::new();
        let stored = StoredMember {
            member,
            key: key.seal_str(Purpose::NodeTlsKey, &m.creds.key_pem)?,
            sealed_with,
        };
        Ok(serde_json::to_vec(&stored)?)
    }

    /// After the membership was saved with `role`: forgets and removes the key the other
    /// role holds.
    pub(super) fn drop_other_key(&self, role: Role) -> Result<()> {
        let dir = self.config().data_dir.clone();
        let mut k = self.keys();
        match role {
            Role::Manager => {
                k.node = None;
                KeyFile::remove(&node_key_path(&dir))
            }
            Role::Worker => {
                if k.data.take().is_some() {
                    tracing::info!("forgot the cluster's data key (no longer a manager)");
                }
                k.unlock = None;
                KeyFile::remove(&data_key_path(&dir))
            }
        }
    }

    /// Installs the cluster's data key: writes `data.key` (wrapped with `unlock` if
    /// given) and keeps both in memory.
    pub(super) fn install_data_key(&self, dk: DataKey, unlock: Option<UnlockKey>) -> Result<()> {
        let file = match &unlock {
            Some(u) => KeyFile::Wrapped(u.wrap(&dk)?),
            None => KeyFile::Plain(dk.clone()),
        };
        let mut k = self.keys();
        file.write(&data_key_path(&self.config().data_dir))?;
        k.data = Some(dk);
        k.unlock = unlock;
        Ok(())
    }

    /// Takes the keys a manager receives with its certificate (join as a manager,
    /// promotion). Ignored for a worker's role.
    pub fn receive_manager_keys(
        &self,
        keys: Option<&proto::ManagerKeys>,
        role: Role,
    ) -> Result<()> {
        if role != Role::Manager {
            return Ok(());
        }
        let Some(keys) = keys else {
            if self.keys().data.is_some() {
                return Ok(());
            }
            return Err(Error::Unavailable(
                "the leader gave this node the manager role but no data key".into(),
            ));
        };
        let dk = DataKey::from_bytes(&keys.data_key)?;
        if self.keys().data.as_ref() == Some(&dk) {
            return Ok(());
        }
        let unlock = if keys.unlock_key.is_empty() {
            None
        } else {
            Some(UnlockKey::parse(&keys.unlock_key)?)
        };
        tracing::info!(
            autolock = unlock.is_some(),
            "received the cluster's data key"
        );
        self.install_data_key(dk, unlock)
    }

    /// Forgets every key and removes both key files (leave, failed init).
    pub(super) fn forget_keys(&self) -> Result<()> {
        let dir = self.config().data_dir.clone();
        let mut k = self.keys();
        *k = KeyState::default();
        KeyFile::remove(&data_key_path(&dir))?;
        KeyFile::remove(&node_key_path(&dir))
    }

    /// Reads this node's membership at start, opening its TLS key with the key file
    /// beside the database. A manager whose data key is wrapped comes up locked:
    /// `Ok(None)`, and [`Daemon::unlock`] finishes the start.
    pub(super) fn open_member(&self) -> Result<Option<Member>> {
        let t = self.db().open_tree("local")?;
        let Some(v) = t.get(MEMBER_KEY)? else {
            return Ok(None);
        };
        let stored = StoredMember::decode(&v)?;
        let dir = self.config().data_dir.clone();
        let (path, other) = match stored.sealed_with {
            SealedWith::Data => (data_key_path(&dir), node_key_path(&dir)),
            SealedWith::Node => (node_key_path(&dir), data_key_path(&dir)),
        };
        let file = KeyFile::read(&path)?.ok_or_else(|| {
            Error::Internal(format!(
                "{}: missing: this node's TLS key cannot be opened without it",
                path.display()
            ))
        })?;
        // Left behind by a role change cut short.
        KeyFile::remove(&other)?;
        let mut k = self.keys();
        match (stored.sealed_with, file) {
            (SealedWith::Data, KeyFile::Plain(dk)) => {
                let m = stored.open(&dk)?;
                k.data = Some(dk);
                Ok(Some(m))
            }
            (SealedWith::Data, KeyFile::Wrapped(wrapped)) => {
                tracing::warn!(
                    node = %stored.member.node_id,
                    "this manager is locked (autolock): it serves nothing until `orc unlock`"
                );
                k.locked = Some(Locked { stored, wrapped });
                Ok(None)
            }
            (SealedWith::Node, KeyFile::Plain(nk)) => {
                let m = stored.open(&nk)?;
                k.node = Some(nk);
                Ok(Some(m))
            }
            (SealedWith::Node, KeyFile::Wrapped(_)) => Err(Error::Internal(format!(
                "{}: a node key is never wrapped",
                path.display()
            ))),
        }
    }

    /// `orc unlock`: unwraps the data key with `key` and starts the node as usual. A
    /// wrong key is refused with one line and changes nothing.
    pub async fn unlock(&self, key: &str) -> Result<()> {
        let _g = self.inner.lifecycle.lock().await;
        let locked = self
            .keys()
            .locked
            .clone()
            .ok_or_else(|| Error::Conflict("this node is not locked".into()))?;
        let unlock = UnlockKey::parse(key)?;
        let dk = unlock.unwrap_data_key(&locked.wrapped)?;
        let member = locked.stored.open(&dk)?;
        {
            let mut k = self.keys();
            k.data = Some(dk);
            k.unlock = Some(unlock);
            k.locked = None;
        }
        if let Err(e) = self.resume(member).await {
            self.stop_manager(false).await.ok();
            self.inner.tls.clear();
            *self.inner.member.write().expect("member lock") = None;
            let mut k = self.keys();
            k.data = None;
            k.unlock = None;
            k.locked = Some(locked);
            return Err(e);
        }
        tracing::info!("unlocked: this manager resumes");
        Ok(())
    }

    /// Follows the cluster's unlock key while `m` runs, rewriting `data.key` when
    /// autolock is turned on or off or its key rotates.
    pub(super) fn spawn_key_follower(&self, m: Arc<Manager>) {
        let d = self.clone();
        tokio::spawn(async move {
            let stop = m.stop_token();
            let mut applied = m.sm.subscribe();
            loop {
                if let Err(e) = d.sync_data_key_file(&m) {
                    tracing::warn!("the data key file: {e}");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = applied.changed() => if r.is_err() { return },
                }
            }
        });
    }

    fn sync_data_key_file(&self, m: &Manager) -> Result<()> {
        let Some(sealed) = m.read(|s| s.cluster.as_ref().map(|c| c.unlock_key.clone())) else {
            return Ok(());
        };
        let want = sealed
            .map(|s| UnlockKey::open_with(m.data_key(), &s))
            .transpose()?;
        let mut k = self.keys();
        let Some(dk) = k.data.clone() else {
            return Ok(());
        };
        if k.unlock == want {
            return Ok(());
        }
        let file = match &want {
            Some(u) => KeyFile::Wrapped(u.wrap(&dk)?),
            None => KeyFile::Plain(dk),
        };
        file.write(&data_key_path(&self.config().data_dir))?;
        tracing::info!(
            autolock = want.is_some(),
            "rewrote the data key file for the cluster's autolock setting"
        );
        k.unlock = want;
        Ok(())
    }
}
