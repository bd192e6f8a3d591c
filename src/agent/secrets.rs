//! Secrets and configs on a worker: each task's files on a tmpfs of its own.
//!
//! The leader's dispatcher sends a task's secrets and configs inside its assignment
//! ([`TaskFile`], opened for this node's session only). The worker never stores them:
//! [`crate::agent::runner::Assignment::files`] is skipped when the runner records its
//! assignments. Just before the task's container is created, [`prepare`] mounts a tmpfs
//! at `/run/orc/secrets/<node>/<task>` (mode 0700, root), writes each file there with its
//! owner and mode, and answers the read-only bind mounts that put each at its path in
//! the container (`/run/secrets/TARGET` for a secret). [`remove`] unmounts and removes
//! the directory once the task has ended or its container is removed, and [`remove_strays`]
//! does the same, when the agent starts, for the directories of tasks it no longer runs.
//! Nothing of a secret reaches the node's disk.

use std::collections::BTreeSet;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
pub use crate::store::secret::Plain;
use crate::store::secret::{Kind, SecretRef, MAX_REFS, MAX_SIZE};
use crate::store::service::{Mount, MountKind, TaskSpec};
use crate::store::{NodeId, SecretId, TaskId};

/// Where the tmpfs of every task of every orc node on this host is mounted.
pub const ROOT: &str = "/run/orc/secrets";

/// One secret or config file of a task's container, as its assignment carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFile {
    /// Secret or config.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// Its id.
    pub id: SecretId,
    /// The version of its content.
    pub version: u64,
    /// Absolute path in the container.
    pub path: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
    /// The content.
    pub data: Plain,
}

impl TaskFile {
    /// The file of `r` (of `kind`) holding `data`.
    pub fn of(kind: Kind, r: &SecretRef, data: Vec<u8>) -> TaskFile {
        TaskFile {
            kind,
            name: r.name.clone(),
            id: r.id.clone(),
            version: r.version,
            path: kind.container_path(&r.name, &r.target),
            uid: r.uid,
            gid: r.gid,
            mode: r.mode,
            data: Plain(data),
        }
    }

    /// Checks a file as a worker receives it: an absolute path without `..`, a mode, at
    /// most [`MAX_SIZE`] bytes.
    pub fn check(&self) -> Result<()> {
        let p = &self.path;
        if !p.starts_with('/')
            || p.len() > 512
            || p.contains('\0')
            || p.split('/').any(|c| c == "..")
        {
            return Err(Error::InvalidInput(format!(
                "assignment.files.path: {p:?} is not an absolute path"
            )));
        }
        if self.mode > 0o777 || self.data.0.len() > MAX_SIZE {
            return Err(Error::InvalidInput(format!(
                "assignment.files: {} is too large or has a bad mode",
                self.name
            )));
        }
        Ok(())
    }
}

/// The most files one assignment may carry.
pub const MAX_FILES: usize = 2 * MAX_REFS;

/// The references of `spec` whose file is not among `files` (by kind, id and version).
pub fn missing<'a>(spec: &'a TaskSpec, files: &[TaskFile]) -> Vec<&'a SecretRef> {
    [Kind::Secret, Kind::Config]
        .into_iter()
        .flat_map(|k| spec.refs(k).iter().map(move |r| (k, r)))
        .filter(|(k, r)| {
            !files
                .iter()
                .any(|f| f.kind == *k && f.id == r.id && f.version == r.version)
        })
        .map(|(_, r)| r)
        .collect()
}

/// The directory of `node`'s tasks.
pub fn node_dir(node: NodeId) -> PathBuf {
    Path::new(ROOT).join(node.to_string())
}

/// The tmpfs of `task` on `node`.
pub fn task_dir(node: NodeId, task: &TaskId) -> PathBuf {
    node_dir(node).join(&task.0)
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("{what} {}: {e}", path.display()))
}

fn cstr(p: &Path) -> Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::Internal(format!("{}: a NUL in a path", p.display())))
}

/// True when `dir` is a mount point (its device differs from its parent's).
fn is_mount(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(dir), dir.parent().map(std::fs::metadata)) {
        (Ok(d), Some(Ok(p))) => d.dev() != p.dev(),
        _ => false,
    }
}

/// Mounts the task's tmpfs, writes `files` into it and answers the bind mounts of
/// each into the container (read-only). With no file, does nothing.
pub fn prepare(node: NodeId, task: &TaskId, files: &[TaskFile]) -> Result<Vec<Mount>> {
    if files.is_empty() {
        return Ok(vec![]);
    }
    let dir = task_dir(node, task);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| io("making", &dir, e))?;
    if !is_mount(&dir) {
        let total: usize = files.iter().map(|f| f.data.0.len()).sum();
        let size = total + 64 * 1024;
        let opts = cstr(Path::new(&format!("mode=0700,uid=0,gid=0,size={size}")))?;
        let target = cstr(&dir)?;
        let fstype = cstr(Path::new("tmpfs"))?;
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                opts.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(io(
                "mounting a tmpfs on",
                &dir,
                std::io::Error::last_os_error(),
            ));
        }
    }
    let mut mounts = vec![];
    for (i, f) in files.iter().enumerate() {
        f.check()?;
        let path = dir.join(format!("{}-{i}", f.kind));
        let _ = std::fs::remove_file(&path);
        {
            use std::io::Write;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| io("writing", &path, e))?;
            out.write_all(&f.data.0)
                .map_err(|e| io("writing", &path, e))?;
        }
        std::os::unix::fs::chown(&path, Some(f.uid), Some(f.gid))
            .map_err(|e| io("changing the owner of", &path, e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))
            .map_err(|e| io("changing the mode of", &path, e))?;
        mounts.push(Mount {
            readonly: true,
            ..Mount::new(MountKind::Bind, path.to_string_lossy(), f.path.clone())
        });
    }
    Ok(mounts)
}

/// Unmounts and removes the task's tmpfs, if there is one.
pub fn remove(node: NodeId, task: &TaskId) {
    remove_dir(&task_dir(node, task));
}

fn remove_dir(dir: &Path) {
    if !dir.exists() {
        return;
    }
    if is_mount(dir) {
        if let Ok(c) = cstr(dir) {
            // SAFETY: a NUL-terminated path that outlives the call. Detached: a
            // container still holding a bind of a file keeps only that file.
            let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            if rc != 0 {
                tracing::warn!(dir = %dir.display(), "agent: unmounting a task's secrets: {}",
                    std::io::Error::last_os_error());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), "agent: removing a task's secrets: {e}");
    }
}

/// Removes the tmpfs of every task of `node` not in `keep` (the agent's start).
pub fn remove_strays(node: NodeId, keep: &BTreeSet<TaskId>) {
    let Ok(entries) = std::fs::read_dir(node_dir(node)) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !keep.contains(&TaskId(name)) {
            remove_dir(&e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(kind: Kind, name: &str, version: u64) -> TaskFile {
        let mut r = SecretRef::to(name);
        r.id = SecretId(format!("id-{name}"));
        r.version = version;
        TaskFile::of(kind, &r, b"hunter2".to_vec())
    }

    #[test]
    fn debug_never_shows_the_content() {
        let f = file(Kind::Secret, "pw", 1);
        let d = format!("{f:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("7 bytes elided"), "{d}");
        assert_eq!(f.path, "/run/secrets/pw");
    }

    #[test]
    fn a_reference_is_missing_until_its_version_came() {
        let mut spec = TaskSpec::default();
        let mut r = SecretRef::to("pw");
        r.id = SecretId("id-pw".into());
        r.version = 2;
        spec.secrets.push(r);
        assert_eq!(missing(&spec, &[file(Kind::Secret, "pw", 1)]).len(), 1);
        assert_eq!(missing(&spec, &[file(Kind::Config, "pw", 2)]).len(), 1);
        assert!(missing(&spec, &[file(Kind::Secret, "pw", 2)]).is_empty());
    }

    #[test]
    fn a_received_file_must_stay_in_the_container() {
        let mut f = file(Kind::Config, "c", 1);
        f.check().unwrap();
        for bad in ["relative", "/a/../../etc/shadow", ""] {
            f.path = bad.into();
            assert!(f.check().is_err(), "{bad}");
        }
    }
}
