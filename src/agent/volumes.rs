//! Following volumes ([`crate::store::volume`]): the copy of a task's named local volume
//! from the node that holds its data to the node the task now runs on.
//!
//! # The copy
//!
//! The node that holds the volume serves it as a tar (`NodeApi.VolumeSave`, served in
//! [`crate::api::volumes`]): the volume's directory walked in name order, without
//! following symbolic links, every entry with its mode, owner and times ([`write_tar`]).
//! The tar goes out in chunks of at most [`CHUNK`] bytes, each deflated on its own
//! (level 1) when that makes it smaller. The first chunk says the tar's fingerprint (a
//! SHA-256 of every entry's path, kind, size, mode, owner and time) and the size of the
//! files' contents, for the progress the task shows: `copying volume V from HOST (N MB
//! of M)`.
//!
//! The receiving node empties its volume and unpacks the tar into it as it arrives
//! ([`copy_in`]), each entry inside the volume only (`tar`'s `unpack_in` refuses `..`
//! and paths through links), and only files, directories and symbolic links (a device,
//! pipe or hard link that a lying node sends is skipped). A copy broken off (a connection lost, a node busy) goes on
//! where it stopped: the same request again with the offset of the bytes received and
//! the fingerprint; the serving node writes the same tar again (the volume is idle:
//! its task has stopped) and skips what was sent, and refuses if the fingerprint
//! differs (the volume changed: the copy then starts over, from an empty volume).
//!
//! # Who may copy what
//!
//! The serving node checks the caller's certificate, then asks the managers
//! (`Dispatcher.CheckVolumeGrant`, decided by [`grant`]) whether the caller has a task
//! of that slot to start, whose data the serving node holds, and whose spec names the
//! volume as following. It serves only a volume no running container of its own uses
//! (`UNAVAILABLE` otherwise: the old task is still stopping; the receiver waits).
//! Names are Docker volume names ([`check_name`]), never paths.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::proto::{VolumeChunk, VolumeRequest};
use crate::store::{NodeId, ServiceId, State, TaskState};

/// Label of a volume orc made to copy into: the service it belongs to.
pub const LABEL_VOLUME_SERVICE: &str = "orc.volume.service";

/// Chunks sent plain after one that deflated to more than 90 % of its size.
pub const SKIP_AFTER_POOR: u32 = 31;

/// The most bytes of tar in one chunk.
pub const CHUNK: usize = 256 * 1024;

/// The longest volume name accepted (Docker's own limit is lower in practice).
pub const MAX_NAME: usize = 255;

/// The most volumes one assignment copies.
pub const MAX_VOLUMES: usize = 64;

/// How many times a broken copy is resumed before the task fails.
pub const RESUMES: u32 = 5;

/// How long a copy waits for the serving node to release the volume (its old task to
/// stop) before the task fails.
pub const WAIT_FOR_RELEASE: std::time::Duration = std::time::Duration::from_secs(300);

/// Where a task's following volumes are, when on another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSource {
    /// The node.
    pub node: NodeId,
    /// Its cluster address (`IP:PORT`), where `NodeApi.VolumeSave` is served.
    pub addr: String,
    /// Its host name, for the status message.
    pub hostname: String,
    /// The volumes to copy.
    pub volumes: Vec<String>,
}

impl VolumeSource {
    /// Checks what a manager sent: names as [`check_name`], at most [`MAX_VOLUMES`].
    pub fn check(&self) -> Result<()> {
        if self.volumes.len() > MAX_VOLUMES {
            return Err(Error::InvalidInput(format!(
                "assignment.volume_source: at most {MAX_VOLUMES} volumes"
            )));
        }
        if self.addr.len() > MAX_NAME || self.hostname.len() > MAX_NAME {
            return Err(Error::InvalidInput(
                "assignment.volume_source: address or host name too long".into(),
            ));
        }
        for v in &self.volumes {
            check_name(v)?;
        }
        Ok(())
    }

    /// The node, as the status names it.
    pub fn name(&self) -> String {
        if self.hostname.is_empty() {
            self.addr.clone()
        } else {
            self.hostname.clone()
        }
    }
}

/// A Docker volume name: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most [`MAX_NAME`] bytes.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "volume name {:?}: expected letters, digits, '_', '.', '-' (at most {MAX_NAME})",
            name.chars().take(64).collect::<String>()
        )))
    }
}

/// Where task `t`'s following volumes are copied from when it runs on `node` (pure;
/// the dispatcher's part): the slot's home when that is another node that is up, only
/// until the container exists.
pub fn source_for(state: &State, t: &crate::store::Task, node: NodeId) -> Option<VolumeSource> {
    if t.status.state >= TaskState::Starting || t.desired_state > TaskState::Running {
        return None;
    }
    let from = crate::store::volume::copy_source(state, t, node)?;
    let n = state.nodes.get(&from)?;
    Some(VolumeSource {
        node: from,
        addr: n.addr.clone(),
        hostname: n.description.hostname.clone(),
        volumes: crate::store::volume::following(&t.spec.container.mounts)
            .map(|m| m.source.clone())
            .collect(),
    })
}

/// Whether node `requester` may have `volume` of slot `slot` of `service` from node
/// `holder` (pure; the managers' part). The error is why not.
pub fn grant(
    state: &State,
    requester: NodeId,
    holder: NodeId,
    service: &ServiceId,
    slot: u64,
    volume: &str,
) -> std::result::Result<(), String> {
    if !state.nodes.contains_key(&requester) {
        return Err(format!(
            "node {requester} is not part of the cluster (removed?)"
        ));
    }
    let task = state.tasks.values().find(|t| {
        t.node_id == Some(requester)
            && &t.service_id == service
            && t.slot == slot
            && t.desired_state <= TaskState::Running
            && t.status.state < TaskState::Starting
    });
    let Some(task) = task else {
        return Err(format!(
            "node {requester} has no task of slot {slot} of service {service} to start"
        ));
    };
    if crate::store::volume::copy_source(state, task, requester) != Some(holder) {
        return Err(format!(
            "the data of slot {slot} of service {service} is not on node {holder}"
        ));
    }
    if !crate::store::volume::following(&task.spec.container.mounts).any(|m| m.source == volume) {
        return Err(format!(
            "service {service} has no following volume {volume}"
        ));
    }
    Ok(())
}

/// One entry of a volume, in the order the tar holds them.
struct Entry {
    rel: PathBuf,
    meta: std::fs::Metadata,
}

/// What [`write_tar`] will write for `dir`: its entries in name order, the
/// fingerprint, and the files' contents in bytes. Only files, directories and symbolic
/// links are copied.
pub fn manifest(dir: &Path) -> Result<(String, u64)> {
    let entries = walk(dir)?;
    Ok(fingerprint(&entries))
}

fn walk(dir: &Path) -> Result<Vec<Entry>> {
    fn go(root: &Path, rel: &Path, out: &mut Vec<Entry>) -> Result<()> {
        let full = root.join(rel);
        let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(&full)
            .map_err(|e| io("reading", &full, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| io("reading", &full, e))?;
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            let meta =
                std::fs::symlink_metadata(root.join(&rel)).map_err(|e| io("reading", &rel, e))?;
            // Files, directories and links only: no sockets, pipes or devices.
            let t = meta.file_type();
            if !(t.is_file() || t.is_dir() || t.is_symlink()) {
                continue;
            }
            let is_dir = meta.is_dir();
            out.push(Entry {
                rel: rel.clone(),
                meta,
            });
            if is_dir {
                go(root, &rel, out)?;
            }
        }
        Ok(())
    }
    let mut out = vec![];
    go(dir, Path::new(""), &mut out)?;
    Ok(out)
}

fn fingerprint(entries: &[Entry]) -> (String, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    let mut bytes = 0u64;
    for e in entries {
        let m = &e.meta;
        h.update(e.rel.as_os_str().as_encoded_bytes());
        h.update([0]);
        for n in [
            m.mode() as u64,
            m.uid() as u64,
            m.gid() as u64,
            m.len(),
            m.mtime() as u64,
            m.mtime_nsec() as u64,
        ] {
            h.update(n.to_le_bytes());
        }
        if m.is_file() {
            bytes += m.len();
        }
    }
    (hex::encode(h.finalize()), bytes)
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    // tar's errors keep the cause one level down.
    let cause = std::error::Error::source(&e)
        .and_then(|s| s.source().or(Some(s)))
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    Error::Internal(format!("{what} {}: {e}{cause}", path.display()))
}

/// Writes the tar of `dir` into `out` (blocking): its entries in name order, without
/// following links; returns the fingerprint it wrote. Fails if the fingerprint is not
/// `expect` (when given): the volume changed since.
pub fn write_tar(dir: &Path, expect: Option<&str>, out: impl Write) -> Result<String> {
    let entries = walk(dir)?;
    let (fp, _) = fingerprint(&entries);
    if let Some(expect) = expect.filter(|e| **e != fp) {
        return Err(Error::Conflict(format!(
            "the volume changed since the copy began (fingerprint {expect}, now {fp})"
        )));
    }
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    for e in &entries {
        b.append_path_with_name(dir.join(&e.rel), &e.rel)
            .map_err(|err| io("archiving", &e.rel, err))?;
    }
    b.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| io("archiving", dir, e))?;
    Ok(fp)
}

/// A writer that drops the first `skip` bytes and sends the rest in chunks of
/// [`CHUNK`] into a channel (blocking).
struct ChunkWriter {
    skip: u64,
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Result<Vec<u8>>>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len();
        let mut data = data;
        if self.skip > 0 {
            let s = (self.skip.min(data.len() as u64)) as usize;
            self.skip -= s as u64;
            data = &data[s..];
        }
        self.buf.extend_from_slice(data);
        while self.buf.len() >= CHUNK {
            let rest = self.buf.split_off(CHUNK);
            let chunk = std::mem::replace(&mut self.buf, rest);
            self.send(chunk)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::take(&mut self.buf);
            self.send(chunk)?;
        }
        Ok(())
    }
}

impl ChunkWriter {
    fn send(&self, chunk: Vec<u8>) -> std::io::Result<()> {
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "receiver gone"))
    }
}

/// A stream of a volume's chunks.
pub type VolumeStream = BoxStream<'static, Result<VolumeChunk>>;

/// The chunks of the tar of `dir` from byte `offset` (the serving side): the first says
/// the fingerprint and the contents' size. With an offset, `expect` is the fingerprint
/// the copy began with.
pub async fn serve(dir: PathBuf, offset: u64, expect: Option<String>) -> Result<VolumeStream> {
    let d = dir.clone();
    let (fp, files_bytes) = tokio::task::spawn_blocking(move || manifest(&d))
        .await
        .map_err(|e| Error::Internal(format!("archiving the volume: {e}")))??;
    if let Some(expect) = expect.as_ref().filter(|e| **e != fp) {
        return Err(Error::Conflict(format!(
            "the volume changed since the copy began (fingerprint {expect}, now {fp})"
        )));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>>>(4);
    let want = fp.clone();
    tokio::task::spawn_blocking(move || {
        let w = ChunkWriter {
            skip: offset,
            buf: vec![],
            tx: tx.clone(),
        };
        if let Err(e) = write_tar(&dir, Some(&want), w) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let mut first = Some((fp, files_bytes));
    // Data that does not deflate (media, compressed or encrypted files) is not tried
    // again for a while: compressing it costs more than sending it.
    let mut skip = 0u32;
    let chunks = tokio_stream::wrappers::ReceiverStream::new(rx).map(move |c| {
        let data = c?;
        let mut chunk = if skip > 0 {
            skip -= 1;
            VolumeChunk {
                data,
                ..Default::default()
            }
        } else {
            let n = data.len();
            let c = deflate(data);
            if c.data.len() * 10 > n * 9 {
                skip = SKIP_AFTER_POOR;
            }
            c
        };
        if let Some((fp, bytes)) = first.take() {
            chunk.fingerprint = fp;
            chunk.files_bytes = bytes;
        }
        Ok(chunk)
    });
    // An empty tail (the offset was the whole tar) still says the fingerprint.
    Ok(chunks.boxed())
}

/// A chunk of tar bytes, deflated if that makes it smaller.
fn deflate(data: Vec<u8>) -> VolumeChunk {
    let mut z = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(data.len() / 2),
        flate2::Compression::fast(),
    );
    let packed = z.write_all(&data).and_then(|_| z.finish());
    match packed {
        Ok(p) if p.len() < data.len() => VolumeChunk {
            data: p,
            deflated: true,
            ..Default::default()
        },
        _ => VolumeChunk {
            data,
            deflated: false,
            ..Default::default()
        },
    }
}

/// The tar bytes of a chunk; at most [`CHUNK`] once inflated.
fn inflate(c: VolumeChunk) -> Result<Vec<u8>> {
    if !c.deflated {
        if c.data.len() > CHUNK {
            return Err(Error::InvalidInput("volume chunk: too large".into()));
        }
        return Ok(c.data);
    }
    let mut out = Vec::with_capacity(CHUNK);
    flate2::read::DeflateDecoder::new(&c.data[..])
        .take(CHUNK as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::InvalidInput(format!("volume chunk: {e}")))?;
    if out.len() > CHUNK {
        return Err(Error::InvalidInput("volume chunk: too large".into()));
    }
    Ok(out)
}

/// Streams a following volume from another node.
#[tonic::async_trait]
pub trait VolumeFetcher: Send + Sync {
    /// The volume of `req` from the node at `addr`, from `req.offset`.
    async fn fetch(&self, addr: &str, req: VolumeRequest) -> Result<VolumeStream>;
}

/// The task runner's [`VolumeFetcher`]: `NodeApi.VolumeSave` over the cluster's mTLS.
pub struct PeerVolumeFetcher {
    /// The channels to the other nodes.
    pub peers: crate::net::Peers,
}

#[tonic::async_trait]
impl VolumeFetcher for PeerVolumeFetcher {
    async fn fetch(&self, addr: &str, req: VolumeRequest) -> Result<VolumeStream> {
        let ch = self.peers.node_channel(addr)?;
        let r = crate::proto::node_api_client::NodeApiClient::new(ch)
            .max_decoding_message_size(2 * CHUNK)
            .volume_save(req)
            .await;
        match r {
            Ok(s) => Ok(s.into_inner().map(|c| c.map_err(Error::from)).boxed()),
            Err(e) => {
                if e.code() == tonic::Code::Unavailable && e.message().contains("transport") {
                    self.peers.forget(addr);
                }
                Err(Error::from(e))
            }
        }
    }
}

/// How a copy is going: bytes of file contents written, out of how many.
#[derive(Debug, Default)]
pub struct Progress {
    /// File contents unpacked so far, bytes.
    pub done: AtomicU64,
    /// The files' contents in all, bytes (0 until the first chunk).
    pub total: AtomicU64,
    /// Milliseconds from the start of the copy to its first chunk: the wait for the
    /// serving node to release the volume (its old task stopping).
    pub waited_ms: AtomicU64,
}

/// A reader over tar bytes sent through a channel (the unpacking side).
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Empties `dir` (the volume's directory), keeping `dir` itself.
pub fn empty_dir(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| io("reading", dir, e))? {
        let e = e.map_err(|e| io("reading", dir, e))?;
        let p = e.path();
        let r = if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(|err| io("emptying", &p, err))?;
    }
    Ok(())
}

/// Copies a volume into `dir` (the receiving side): empties it, then unpacks the tar
/// the fetcher streams from `addr`, resuming a broken stream up to [`RESUMES`] times.
pub async fn copy_in(
    fetcher: &dyn VolumeFetcher,
    addr: &str,
    mut req: VolumeRequest,
    dir: &Path,
    progress: Arc<Progress>,
) -> Result<()> {
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || empty_dir(&d))
        .await
        .map_err(|e| Error::Internal(format!("emptying the volume: {e}")))??;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    let d = dir.to_path_buf();
    let p = progress.clone();
    let unpacker = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut ar = tar::Archive::new(ChunkReader {
            rx,
            cur: vec![],
            pos: 0,
        });
        ar.set_preserve_permissions(true);
        ar.set_preserve_ownerships(true);
        ar.set_preserve_mtime(true);
        ar.set_overwrite(true);
        // A directory's time is set last: the entries written into it change it.
        let mut dirs = vec![];
        for e in ar.entries().map_err(|e| io("unpacking into", &d, e))? {
            let mut e = e.map_err(|e| io("unpacking into", &d, e))?;
            // What the serving side writes, and nothing else: no devices, pipes or hard
            // links from a node that lies.
            let kind = e.header().entry_type();
            if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
                tracing::warn!(entry = ?e.path().ok(), ?kind, "a volume copy held an entry of a refused kind: skipped");
                continue;
            }
            let size = e.header().size().unwrap_or(0);
            let path = e.path().map(|p| p.into_owned()).unwrap_or_default();
            let unpacked = e.unpack_in(&d).map_err(|err| io("unpacking", &path, err))?;
            if unpacked && e.header().entry_type().is_dir() {
                if let Ok(t) = e.header().mtime() {
                    dirs.push((d.join(&path), t));
                }
            }
            p.done.fetch_add(size, Ordering::Relaxed);
        }
        for (dir, t) in dirs.into_iter().rev() {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t);
            std::fs::File::open(&dir)
                .and_then(|f| f.set_times(std::fs::FileTimes::new().set_modified(at)))
                .map_err(|e| io("setting the time of", &dir, e))?;
        }
        Ok(())
    });
    req.offset = 0;
    let began = std::time::Instant::now();
    let mut resumes = 0;
    // Before the first byte, a node still busy (its old task stopping: a grace period)
    // is waited for up to this long.
    let deadline = std::time::Instant::now() + WAIT_FOR_RELEASE;
    let fed = loop {
        // Why this attempt ended early, if it did.
        let broke = match fetcher.fetch(addr, req.clone()).await {
            Err(Error::Unavailable(e))
                if req.offset == 0 && std::time::Instant::now() < deadline =>
            {
                tracing::debug!(volume = req.volume, "waiting for the volume: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => Some(e),
            Ok(mut stream) => {
                let mut broke = None;
                while let Some(c) = stream.next().await {
                    let c = match c {
                        Ok(c) => c,
                        Err(e) => {
                            broke = Some(e);
                            break;
                        }
                    };
                    if !c.fingerprint.is_empty() {
                        if req.fingerprint.is_empty() {
                            req.fingerprint = c.fingerprint.clone();
                            progress.total.store(c.files_bytes, Ordering::Relaxed);
                            progress
                                .waited_ms
                                .store(began.elapsed().as_millis() as u64, Ordering::Relaxed);
                        } else if req.fingerprint != c.fingerprint {
                            broke =
                                Some(Error::Conflict("the volume changed during the copy".into()));
                            break;
                        }
                    }
                    let data = inflate(c)?;
                    req.offset += data.len() as u64;
                    if tx.send(data).is_err() {
                        // The unpacker stopped: its error says why.
                        break;
                    }
                }
                broke
            }
        };
        match broke {
            None => break Ok(()),
            Some(e) if resumes < RESUMES && retriable(&e) => {
                resumes += 1;
                tracing::info!(
                    volume = req.volume,
                    offset = req.offset,
                    "copying a volume: {e}; resuming"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(resumes)))
                    .await;
            }
            Some(e) => break Err(e),
        }
    };
    drop(tx);
    let unpacked = unpacker
        .await
        .map_err(|e| Error::Internal(format!("unpacking the volume: {e}")))?;
    fed?;
    unpacked
}

/// A failure worth another try: the network, or a node still busy.
fn retriable(e: &Error) -> bool {
    matches!(e, Error::Unavailable(_) | Error::Internal(_))
}

/// The most entries [`dir_size`] walks before it gives up on a volume's size.
pub const MAX_WALK: usize = 200_000;

/// The bytes of the files under `dir`, or `None` past [`MAX_WALK`] entries (blocking).
pub fn dir_size(dir: &Path) -> Option<u64> {
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            seen += 1;
            if seen > MAX_WALK {
                return None;
            }
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                todo.push(e.path());
            } else if m.is_file() {
                total += m.len();
            }
        }
    }
    Some(total)
}

/// This node's volumes, their sizes and the tasks using them (`NodeApi.Volumes`).
pub async fn node_volumes(
    exec: &Arc<dyn super::executor::Executor>,
) -> Result<crate::proto::NodeVolumes> {
    let mut out = vec![];
    for (name, driver, dir) in exec.list_volumes().await? {
        let size = match dir {
            Some(d) => tokio::task::spawn_blocking(move || dir_size(&d))
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let users = if check_name(&name).is_ok() {
            exec.volume_users(&name).await.unwrap_or_default()
        } else {
            vec![]
        };
        out.push(crate::proto::NodeVolume {
            name,
            driver,
            bytes: size.unwrap_or(0),
            size_known: size.is_some(),
            task_ids: users.into_iter().map(|t| t.0).collect(),
        });
    }
    Ok(crate::proto::NodeVolumes { volumes: out })
}

/// The status of a copy: `copying volume V from HOST (N MB of M)`.
pub fn progress_message(volume: &str, from: &str, p: &Progress) -> String {
    let (done, total) = (
        p.done.load(Ordering::Relaxed),
        p.total.load(Ordering::Relaxed),
    );
    // Whole MB, or tenths below 10 MB.
    let mb = |b: u64| {
        if total < 10_000_000 {
            format!("{:.1}", b as f64 / 1e6)
        } else {
            (b / 1_000_000).to_string()
        }
    };
    format!(
        "copying volume {volume} from {from} ({} MB of {})",
        mb(done),
        mb(total)
    )
}

#[cfg(test)]
mod tests;
