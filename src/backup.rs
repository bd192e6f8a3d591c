//! Cluster backup and restore: `orc cluster backup FILE`, `orc init --restore FILE`,
//! and the scheduled backups of `orc daemon --backup-schedule`.
//!
//! # What a backup is
//!
//! The applied state tables of one manager at one Raft index ([`State`], exactly what
//! every manager holds at that index), and the key that opens what is sealed in them.
//! `orc cluster backup` first runs a write barrier through the leader (a no-op entry
//! committed and applied), waits until the manager it asked has applied it, and then
//! reads that manager's state at its applied index: the backup holds every write the
//! leader had acknowledged when it was asked. The state itself never crosses the
//! cluster port for a backup: only the local socket asks for it ([`crate::api::local`]),
//! and it is served by the manager the operator is logged on.
//!
//! # The file
//!
//! ```text
//! ORC-BACKUP\n                                  magic, 11 bytes
//! {"format":1,"meta":{..},"body_bytes":N,"body_sha256":"<64 hex>"}\n   header, JSON, < 64 KiB
//! <N bytes of body: JSON {"meta":{..},"key":{..},"state":{..}}>
//! ```
//!
//! [`Meta`] (cluster id, index, time, autolock, counts) is in the header, to show
//! without reading the body, and again in the body, so that the checksum covers it: a
//! header that does not match its body is refused. The body's SHA-256 is checked
//! before the body is parsed; a truncated or damaged file, a file of another format
//! version and a header or body larger than [`MAX_HEADER_BYTES`] / [`MAX_BODY_BYTES`]
//! (checked against the file's size before anything is allocated) are refused with one
//! line naming the file.
//!
//! # Keys: what a fresh machine needs
//!
//! Secrets and configs stay sealed with the cluster's data key in the file, as in the
//! Raft log. The CA key and the join secrets are left out of nothing but are of no use:
//! a restore makes a new root CA and new join tokens. What opens the secrets travels as
//! Swarm's swarm directory carries its key ([`CarriedKey`]):
//!
//! - without autolock, the data key itself, as `data.key` holds it on every manager:
//!   whoever holds the file can open its secrets, so keep it as you keep a manager's
//!   data dir;
//! - with autolock, the data key wrapped with the unlock key: `init --restore` asks for
//!   the unlock key (`--unlock-key`, or stdin), and the restored cluster stays
//!   autolocked with the same unlock key.
//!
//! # Restore
//!
//! [`plan_restore`] turns a backup into the commands of a new cluster: the services,
//! networks, secrets and configs as they were (secrets and configs opened with the
//! backup's key and sealed again with the new cluster's data key, in memory), and the
//! nodes. Node records: the restoring machine takes the labels and availability of the
//! old node with its own hostname; every other old node is kept, as a `down` worker with
//! its labels, for the operator to see (and copy, and `orc node rm`) once the machines
//! rejoin with the new tokens as new nodes. A joining node is not matched by hostname:
//! a hostname is whatever the joining node says, and labels steer tasks (and their
//! secrets) to nodes. Tasks, update progress, image pins, the exactly-once table and a
//! CA rotation in progress are not restored: the orchestrator makes new tasks for the
//! services, so nothing is left "running" on a node that is not there.
//!
//! Everything that can fail on bad input (the file, the key, every secret opened) is
//! done before the daemon starts anything; a failure after that (a rejected command)
//! undoes the new cluster as a failed `orc init` does.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::keys::{DataKey, Sealed, UnlockKey};
use crate::store::secret::Kind;
use crate::store::{Command, Node, NodeStatus, Role, State};

/// The first bytes of every backup file.
pub const MAGIC: &[u8] = b"ORC-BACKUP\n";

/// The format version this orc writes and reads.
pub const FORMAT: u32 = 1;

/// The largest header accepted, bytes (it is a few hundred).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The largest body accepted, bytes: far above any state the Raft log can hold.
pub const MAX_BODY_BYTES: u64 = 1 << 30;

/// The extension of scheduled backups.
pub const EXTENSION: &str = "orcbak";

/// Where scheduled backups go, under the data dir.
pub const BACKUP_DIR: &str = "backups";

/// What a backup is of: shown from the header, checked against the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The cluster the state is of.
    pub cluster_id: String,
    /// The Raft index the state was applied to.
    pub index: u64,
    /// When the backup was taken, unix ms.
    pub created_ms: u64,
    /// True when the key is wrapped with the unlock key (the cluster is autolocked).
    pub autolock: bool,
    /// Nodes in the state.
    pub nodes: u64,
    /// Services.
    pub services: u64,
    /// Tasks.
    pub tasks: u64,
    /// Networks (the built-in one not counted).
    pub networks: u64,
    /// Secrets.
    pub secrets: u64,
    /// Configs.
    pub configs: u64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    meta: Meta,
    body_bytes: u64,
    body_sha256: String,
}

/// The key that opens the sealed values of a backup (see the module doc).
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CarriedKey {
    /// The data key, hex (no autolock).
    Plain(String),
    /// The data key wrapped with the unlock key (autolock).
    Wrapped(Sealed),
}

impl std::fmt::Debug for CarriedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CarriedKey::Plain(_) => f.write_str("Plain([elided])"),
            CarriedKey::Wrapped(w) => write!(f, "Wrapped({w:?})"),
        }
    }
}

/// A backup, decoded and checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backup {
    /// What it is of.
    pub meta: Meta,
    /// What opens its sealed values.
    pub key: CarriedKey,
    /// The state tables.
    pub state: State,
}

/// Takes a backup of `state`, applied up to `index`, sealed with `dk`.
pub fn take(state: State, index: u64, dk: &DataKey, now_ms: u64) -> Result<Backup> {
    let cluster = state.cluster.as_ref().ok_or_else(|| {
        Error::Unavailable("no cluster in the state yet: nothing to back up".into())
    })?;
    let key = match &cluster.unlock_key {
        Some(sealed) => CarriedKey::Wrapped(UnlockKey::open_with(dk, sealed)?.wrap(dk)?),
        None => CarriedKey::Plain(hex::encode(dk.as_bytes())),
    };
    let meta = Meta {
        cluster_id: cluster.id.clone(),
        index,
        created_ms: now_ms,
        autolock: matches!(key, CarriedKey::Wrapped(_)),
        nodes: state.nodes.len() as u64,
        services: state.services.len() as u64,
        tasks: state.tasks.len() as u64,
        networks: state.networks.len() as u64,
        secrets: state.secrets.len() as u64,
        configs: state.configs.len() as u64,
    };
    Ok(Backup { meta, key, state })
}

fn refused(name: &str, why: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("{name}: {why}"))
}

impl Backup {
    /// The file's bytes: magic, header, body (see the module doc).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let body = serde_json::to_vec(self)?;
        let header = Header {
            format: FORMAT,
            meta: self.meta.clone(),
            body_bytes: body.len() as u64,
            body_sha256: hex::encode(Sha256::digest(&body)),
        };
        let header = serde_json::to_vec(&header)?;
        let mut out = Vec::with_capacity(MAGIC.len() + header.len() + 1 + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&header);
        out.push(b'\n');
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes and checks a backup's bytes; `name` (the file) names every refusal.
    pub fn decode(bytes: &[u8], name: &str) -> Result<Backup> {
        let (header, rest) = split_header(bytes, name)?;
        let body = check_body(&header, rest, name)?;
        let b: Backup = serde_json::from_slice(body)
            .map_err(|e| refused(name, format!("the body does not decode ({e})")))?;
        if b.meta != header.meta {
            return Err(refused(
                name,
                "damaged: the header does not match the body it describes",
            ));
        }
        Ok(b)
    }

    /// Reads and checks a backup file. The file's size is checked against the limits
    /// before anything is read into memory.
    pub fn read_file(path: &Path) -> Result<Backup> {
        let name = path.display().to_string();
        let mut f = std::fs::File::open(path).map_err(|e| refused(&name, e))?;
        let len = f.metadata().map_err(|e| refused(&name, e))?.len();
        let max = (MAGIC.len() + MAX_HEADER_BYTES) as u64 + MAX_BODY_BYTES;
        if len > max {
            return Err(refused(
                &name,
                format!("{len} bytes: larger than any backup ({max} bytes at most)"),
            ));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        f.read_to_end(&mut bytes).map_err(|e| refused(&name, e))?;
        Backup::decode(&bytes, &name)
    }

    /// Reads only the header of a backup file (to show it, or to know whether the
    /// restore needs the unlock key). The body is checked by [`Backup::read_file`].
    pub fn read_meta(path: &Path) -> Result<Meta> {
        let name = path.display().to_string();
        let f = std::fs::File::open(path).map_err(|e| refused(&name, e))?;
        let mut head = Vec::new();
        f.take((MAGIC.len() + MAX_HEADER_BYTES + 1) as u64)
            .read_to_end(&mut head)
            .map_err(|e| refused(&name, e))?;
        let (h, _) = split_header(&head, &name)?;
        Ok(h.meta)
    }

    /// The data key that opens this backup's sealed values: in the clear, or unwrapped
    /// with `unlock` (with the unlock key, too, when the cluster was autolocked).
    pub fn open_key(&self, unlock: Option<&str>) -> Result<(DataKey, Option<UnlockKey>)> {
        match &self.key {
            CarriedKey::Plain(h) => {
                let b = hex::decode(h)
                    .map_err(|_| Error::InvalidInput("the backup's data key is not hex".into()))?;
                Ok((DataKey::from_bytes(&b)?, None))
            }
            CarriedKey::Wrapped(w) => {
                let Some(u) = unlock.filter(|u| !u.trim().is_empty()) else {
                    return Err(Error::InvalidInput(
                        "--unlock-key: the backup is of an autolocked cluster: give its unlock key (--unlock-key, or on stdin)".into(),
                    ));
                };
                let u = UnlockKey::parse(u)
                    .map_err(|e| Error::InvalidInput(format!("--unlock-key: {e}")))?;
                let dk = u.unwrap_data_key(w).map_err(|_| {
                    Error::PermissionDenied(
                        "--unlock-key: wrong unlock key for this backup (the key in force when the backup was taken is needed)"
                            .into(),
                    )
                })?;
                Ok((dk, Some(u)))
            }
        }
    }
}

/// Splits magic and header off; checks the format version.
fn split_header<'a>(bytes: &'a [u8], name: &str) -> Result<(Header, &'a [u8])> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| refused(name, "not an orc backup (no ORC-BACKUP header)"))?;
    let window = &rest[..rest.len().min(MAX_HEADER_BYTES + 1)];
    let Some(end) = window.iter().position(|&b| b == b'\n') else {
        return Err(if rest.len() > MAX_HEADER_BYTES {
            refused(
                name,
                format!("the header is larger than {MAX_HEADER_BYTES} bytes: not an orc backup"),
            )
        } else {
            refused(name, "truncated: the header is cut short")
        });
    };
    #[derive(Deserialize)]
    struct Version {
        format: u32,
    }
    let v: Version = serde_json::from_slice(&rest[..end])
        .map_err(|e| refused(name, format!("damaged: the header does not decode ({e})")))?;
    if v.format != FORMAT {
        return Err(refused(
            name,
            format!(
                "backup format version {} is not supported (this orc reads version {FORMAT})",
                v.format
            ),
        ));
    }
    let h: Header = serde_json::from_slice(&rest[..end])
        .map_err(|e| refused(name, format!("damaged: the header does not decode ({e})")))?;
    Ok((h, &rest[end + 1..]))
}

/// The body after the header: of the size the header gives (within the limit), with
/// the checksum it gives.
fn check_body<'a>(h: &Header, rest: &'a [u8], name: &str) -> Result<&'a [u8]> {
    if h.body_bytes > MAX_BODY_BYTES {
        return Err(refused(
            name,
            format!(
                "the header announces a body of {} bytes, more than {MAX_BODY_BYTES}",
                h.body_bytes
            ),
        ));
    }
    if (rest.len() as u64) < h.body_bytes {
        return Err(refused(
            name,
            format!(
                "truncated: {} bytes of body, the header announces {}",
                rest.len(),
                h.body_bytes
            ),
        ));
    }
    if (rest.len() as u64) > h.body_bytes {
        return Err(refused(
            name,
            format!(
                "damaged: {} bytes after the body the header announces",
                rest.len() as u64 - h.body_bytes
            ),
        ));
    }
    if hex::encode(Sha256::digest(rest)) != h.body_sha256 {
        return Err(refused(
            name,
            "damaged: the checksum (SHA-256) of the body does not match",
        ));
    }
    Ok(rest)
}

/// Writes `bytes` to `path` atomically: a new 0600 file beside it, synced, renamed over
/// `path`, the directory synced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.display().to_string();
    let file_name = path
        .file_name()
        .ok_or_else(|| refused(&name, "not a file name"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        refused(&name, e)
    })
}

/// What a restore proposes, in order, after the new cluster's first entry.
#[derive(Debug)]
pub struct RestorePlan {
    /// The restoring node's record (its labels and availability from the old node of
    /// its hostname).
    pub me: Node,
    /// Old nodes (as down workers), networks, secrets, configs, services.
    pub commands: Vec<Command>,
}

/// Plans a restore of `b` (whose sealed values `old` opens) into a new cluster whose
/// data key is `new`, started by the node `me` (see the module doc). Fails, before
/// anything is changed, when a sealed value does not open.
pub fn plan_restore(b: &Backup, old: &DataKey, new: &DataKey, mut me: Node) -> Result<RestorePlan> {
    let s = &b.state;
    let mine: Vec<&Node> = s
        .nodes
        .values()
        .filter(|n| {
            !me.description.hostname.is_empty() && n.description.hostname == me.description.hostname
        })
        .collect();
    let adopted = match mine.as_slice() {
        [one] => {
            me.labels = one.labels.clone();
            me.availability = one.availability;
            Some(one.id)
        }
        _ => None,
    };
    let mut commands = vec![];
    for n in s.nodes.values() {
        if Some(n.id) == adopted || n.id == me.id {
            continue;
        }
        let mut n = n.clone();
        n.role = Role::Worker;
        n.status = NodeStatus::Down;
        commands.push(Command::AddNode { node: n });
    }
    for n in s.networks.values() {
        commands.push(Command::CreateNetwork { network: n.clone() });
    }
    for kind in [Kind::Secret, Kind::Config] {
        for sec in s.table(kind).values() {
            let mut sec = sec.clone();
            for v in &mut sec.versions {
                let purpose = crate::keys::secret_purpose(kind);
                let mut plain = old.open(purpose, &v.data).map_err(|_| {
                    Error::PermissionDenied(format!(
                        "{kind} {}: cannot be opened with the backup's key: wrong key or damaged backup",
                        sec.name
                    ))
                })?;
                v.data = new.seal(purpose, &plain)?;
                v.digest = crate::keys::secret_digest(new, kind, &plain);
                zeroize::Zeroize::zeroize(&mut plain);
            }
            commands.push(Command::CreateSecret { secret: sec });
        }
    }
    for sv in s.services.values() {
        commands.push(Command::CreateService {
            service: sv.clone(),
        });
    }
    Ok(RestorePlan { me, commands })
}

/// The name of a scheduled backup taken at `ms` (unix ms): sorts by time.
pub fn scheduled_name(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "orc-backup-{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z.{EXTENSION}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Of the files named in `names`, the scheduled backups to delete so that the newest
/// `keep` stay (other files are never named).
pub fn to_prune(names: &[String], keep: usize) -> Vec<String> {
    let mut ours: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("orc-backup-") && n.ends_with(&format!(".{EXTENSION}")))
        .collect();
    ours.sort();
    let drop = ours.len().saturating_sub(keep);
    ours.into_iter().take(drop).cloned().collect()
}

/// Writes one scheduled backup of `b` into `dir` and prunes to the newest `keep`.
/// Returns the file written.
pub fn write_scheduled(dir: &Path, b: &Backup, keep: usize) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| refused(&dir.display().to_string(), e))?;
    let path = dir.join(scheduled_name(b.meta.created_ms));
    write_atomic(&path, &b.encode()?)?;
    let names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| refused(&dir.display().to_string(), e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    for n in to_prune(&names, keep) {
        if let Err(e) = std::fs::remove_file(dir.join(&n)) {
            tracing::warn!("backup: cannot remove {n}: {e}");
        }
    }
    Ok(path)
}

/// A backup of `m`'s applied state now, read at one index (no barrier: a scheduled
/// backup holds what this manager has applied, a committed prefix of the log).
pub fn take_local(m: &crate::manager::Manager, now_ms: u64) -> Result<Backup> {
    let (state, at) = m.sm.read_at(|s, at| (s.clone(), at));
    take(state, at, m.data_key(), now_ms)
}

/// `orc daemon --backup-schedule EVERY --backup-keep KEEP`: every `every`, while this
/// node is an unlocked manager (`manager` gives it), writes a backup of its own
/// applied state into `dir` and keeps the newest `keep`. Every manager keeps its own,
/// so that any manager that survives a disaster holds a recent one. Stops with `stop`.
pub async fn run_schedule(
    dir: PathBuf,
    every: std::time::Duration,
    keep: usize,
    manager: impl Fn() -> Option<std::sync::Arc<crate::manager::Manager>> + Send + 'static,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(m) = manager() else { continue };
        let dir = dir.clone();
        let r = tokio::task::spawn_blocking(move || {
            let b = take_local(&m, crate::units::now_ms())?;
            write_scheduled(&dir, &b, keep)
        })
        .await
        .map_err(Error::internal)
        .and_then(|r| r);
        match r {
            Ok(path) => tracing::info!(file = %path.display(), "scheduled backup written"),
            Err(e) => tracing::warn!("scheduled backup failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
