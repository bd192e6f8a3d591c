//! Keys at rest: the cluster's data key, sealed values, the unlock key of autolock, the
//! key files in the data dir and their modes.
//!
//! # What is encrypted, with what
//!
//! ```text
//!   unlock key (ORCKEY-1-…, autolock only; shown to the operator, never stored in the clear)
//!        │ wraps
//!        ▼
//!   data key (DK, 32 random bytes, one per cluster, held by every manager)
//!        │ seals
//!        ├── the root CA private key          ─┐
//!        ├── the worker and manager join secrets├─ in the replicated cluster object:
//!        ├── the unlock key itself            ─┘  Raft log, snapshots, `sm` tree
//!        └── a manager's own TLS private key      (`local` tree of its database)
//!
//!   node key (32 random bytes, per worker, `<data-dir>/node.key`)
//!        └── seals a worker's own TLS private key (`local` tree)
//! ```
//!
//! A sealed value ([`Sealed`]) is AES-256-GCM (ring) with a random 96-bit nonce, written
//! as the hex of `nonce || ciphertext || tag`. The associated data is the value's
//! [`Purpose`], so a ciphertext sealed as one thing (the worker secret) cannot be passed
//! off as another (the manager secret). Random nonces are safe here: a data key seals a
//! few values per rotation of a secret, far from the 2^32 messages that bound the chance
//! of a nonce collision under one key.
//!
//! # Where the data key lives
//!
//! `orc init` makes it. A node that joins as a manager, or is promoted, receives it from
//! the leader over mutual TLS, in the answer to its join or renewal (`ManagerKeys`, only
//! ever filled for a node whose role in the store is `manager`). Each manager keeps it in
//! `<data-dir>/data.key` ([`KeyFile`]), mode 0600: in the clear without autolock, wrapped
//! with the unlock key with it. The leader opens sealed values when it needs them
//! (issuing a certificate, checking or showing a join secret); they never leave a
//! manager in the clear, except the join secret inside a token shown to the operator.
//!
//! # Autolock
//!
//! `orc init --autolock` or `orc cluster update --autolock=true` makes an unlock key
//! ([`UnlockKey`], `ORCKEY-1-<64 hex>`), shows it once, and stores it in the cluster
//! object sealed with the data key. Every running manager follows that field and
//! rewrites its `data.key`: wrapped with the unlock key when there is one, in the clear
//! when autolock is turned off; `orc unlock-key --rotate` makes a new one, which every
//! manager then wraps with. A manager that starts and finds its data key wrapped is
//! *locked*: it serves nothing on the cluster port and runs no Raft, agent or mesh until
//! `orc unlock` gives it the unlock key (see `crate::daemon`). A manager that was down
//! while the key was rotated (or autolock turned off) still needs the key that was in
//! force when it stopped: keep the previous key until every manager has run once.
//!
//! Workers are never locked: their node key sits in the clear beside their database, as
//! the data key does on managers without autolock. Autolock protects the managers, which
//! hold the CA key.
//!
//! # Modes
//!
//! The data dir is 0700 and every file under it 0600: [`secure_tree`] fixes an existing
//! data dir when the daemon opens it, and the daemon sets its umask to 0o077
//! ([`restrict_umask`]) so that the files sled creates later are born private.

#[cfg(test)]
mod tests;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::error::{Error, Result};
pub use crate::store::Sealed;

/// The length of every key here, in bytes.
pub const KEY_LEN: usize = 32;

/// The file that holds a manager's data key, in its data dir.
pub const DATA_KEY_FILE: &str = "data.key";

/// The file that holds a worker's node key, in its data dir.
pub const NODE_KEY_FILE: &str = "node.key";

/// The prefix of an unlock key as the operator sees it.
pub const UNLOCK_KEY_PREFIX: &str = "ORCKEY-1-";

/// What a sealed value is, bound into its ciphertext as associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The root CA's private key, PEM.
    CaKey,
    /// The secret of the worker join token.
    WorkerSecret,
    /// The secret of the manager join token.
    ManagerSecret,
    /// The unlock key, in the cluster object.
    UnlockKey,
    /// A node's own TLS private key, PEM, in its `local` tree.
    NodeTlsKey,
    /// The data key, wrapped by the unlock key.
    DataKey,
    /// The content of a secret (`crate::store::secret`).
    Secret,
    /// The content of a config.
    Config,
}

impl Purpose {
    fn aad(self) -> &'static [u8] {
        match self {
            Purpose::CaKey => b"orc/1/ca-key",
            Purpose::WorkerSecret => b"orc/1/worker-secret",
            Purpose::ManagerSecret => b"orc/1/manager-secret",
            Purpose::UnlockKey => b"orc/1/unlock-key",
            Purpose::NodeTlsKey => b"orc/1/node-tls-key",
            Purpose::DataKey => b"orc/1/data-key",
            Purpose::Secret => b"orc/1/secret",
            Purpose::Config => b"orc/1/config",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Purpose::CaKey => "the root CA key",
            Purpose::WorkerSecret => "the worker join secret",
            Purpose::ManagerSecret => "the manager join secret",
            Purpose::UnlockKey => "the unlock key",
            Purpose::NodeTlsKey => "this node's TLS key",
            Purpose::DataKey => "the data key",
            Purpose::Secret => "a secret",
            Purpose::Config => "a config",
        }
    }
}

/// A 256-bit AEAD key: the cluster's data key, a worker's node key, or the key inside an
/// [`UnlockKey`]. Zeroed when dropped; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey(Box<[u8; KEY_LEN]>);

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([elided])")
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Error::Internal("the system's random source failed".into()))?;
    Ok(b)
}

impl DataKey {
    /// A new random key.
    pub fn generate() -> Result<DataKey> {
        Ok(DataKey(Box::new(random_bytes::<KEY_LEN>()?)))
    }

    /// A key from its bytes.
    pub fn from_bytes(b: &[u8]) -> Result<DataKey> {
        let arr: [u8; KEY_LEN] = b
            .try_into()
            .map_err(|_| Error::InvalidInput(format!("a key has {KEY_LEN} bytes")))?;
        Ok(DataKey(Box::new(arr)))
    }

    /// The key's bytes (to hand the data key to a new manager).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0[..]
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0[..]).expect("a 32-byte key"))
    }

    /// Encrypts `plain` as `purpose`, with a fresh random nonce.
    pub fn seal(&self, purpose: Purpose, plain: &[u8]) -> Result<Sealed> {
        let nonce = random_bytes::<NONCE_LEN>()?;
        let mut buf = plain.to_vec();
        self.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.aad()),
                &mut buf,
            )
            .map_err(|_| Error::Internal(format!("cannot encrypt {}", purpose.name())))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        buf.zeroize();
        Ok(Sealed::from_stored(hex::encode(out)))
    }

    /// Decrypts a value sealed as `purpose`; refuses a wrong key, a value sealed as
    /// something else and any change to the ciphertext.
    pub fn open(&self, purpose: Purpose, sealed: &Sealed) -> Result<Vec<u8>> {
        let refused = || {
            Error::PermissionDenied(format!(
                "cannot decrypt {}: wrong key or damaged data",
                purpose.name()
            ))
        };
        let mut bytes = hex::decode(sealed.as_str()).map_err(|_| refused())?;
        if bytes.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(refused());
        }
        let mut body = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| refused())?;
        let n = self
            .aead()
            .open_in_place(nonce, Aad::from(purpose.aad()), &mut body)
            .map_err(|_| refused())?
            .len();
        body.truncate(n);
        Ok(body)
    }

    /// [`DataKey::seal`] of a string.
    pub fn seal_str(&self, purpose: Purpose, plain: &str) -> Result<Sealed> {
        self.seal(purpose, plain.as_bytes())
    }

    /// [`DataKey::open`] of a value sealed from a string.
    pub fn open_string(&self, purpose: Purpose, sealed: &Sealed) -> Result<String> {
        String::from_utf8(self.open(purpose, sealed)?)
            .map_err(|_| Error::Internal(format!("{}: not text once decrypted", purpose.name())))
    }
}

/// The unlock key of an autolocked cluster: wraps the data key in `data.key`. Shown to
/// the operator as `ORCKEY-1-<64 hex>` by [`UnlockKey::reveal`] only; `Debug` never
/// shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct UnlockKey(DataKey);

impl fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnlockKey([elided])")
    }
}

impl UnlockKey {
    /// A new random unlock key.
    pub fn generate() -> Result<UnlockKey> {
        Ok(UnlockKey(DataKey::generate()?))
    }

    /// Parses `ORCKEY-1-<64 hex>` (surrounding blanks ignored).
    pub fn parse(s: &str) -> Result<UnlockKey> {
        let bad = || {
            Error::InvalidInput(format!(
                "not an unlock key: expected {UNLOCK_KEY_PREFIX} followed by 64 hex digits"
            ))
        };
        let hexpart = s.trim().strip_prefix(UNLOCK_KEY_PREFIX).ok_or_else(bad)?;
        if hexpart.len() != 2 * KEY_LEN {
            return Err(bad());
        }
        let mut b = hex::decode(hexpart.to_ascii_lowercase()).map_err(|_| bad())?;
        let k = DataKey::from_bytes(&b);
        b.zeroize();
        Ok(UnlockKey(k.map_err(|_| bad())?))
    }

    /// The key as the operator types it. Only for the operator's eyes.
    pub fn reveal(&self) -> String {
        format!("{UNLOCK_KEY_PREFIX}{}", hex::encode(self.0.as_bytes()))
    }

    /// Seals this key under the data key, for the cluster object.
    pub fn seal_with(&self, dk: &DataKey) -> Result<Sealed> {
        dk.seal(Purpose::UnlockKey, self.0.as_bytes())
    }

    /// Opens the cluster object's sealed unlock key.
    pub fn open_with(dk: &DataKey, sealed: &Sealed) -> Result<UnlockKey> {
        let mut b = dk.open(Purpose::UnlockKey, sealed)?;
        let k = DataKey::from_bytes(&b);
        b.zeroize();
        Ok(UnlockKey(k?))
    }

    /// Wraps the data key with this key.
    pub fn wrap(&self, dk: &DataKey) -> Result<Sealed> {
        self.0.seal(Purpose::DataKey, dk.as_bytes())
    }

    /// Unwraps a data key; a wrong unlock key is refused with one line.
    pub fn unwrap_data_key(&self, wrapped: &Sealed) -> Result<DataKey> {
        let mut b = self.0.open(Purpose::DataKey, wrapped).map_err(|_| {
            Error::PermissionDenied(
                "wrong unlock key: this manager stays locked (`orc unlock-key` on an unlocked manager shows the current key)"
                    .into(),
            )
        })?;
        let k = DataKey::from_bytes(&b);
        b.zeroize();
        k
    }
}

/// What a key file holds: the key in the clear (hex), or wrapped by the unlock key.
///
/// On disk, JSON: `{"version":1,"plain":"<64 hex>"}` or `{"version":1,"wrapped":"<hex of
/// a Sealed>"}`.
#[derive(Debug, Clone)]
pub enum KeyFile {
    /// In the clear (no autolock, or a worker's node key).
    Plain(DataKey),
    /// Wrapped with the unlock key (autolock).
    Wrapped(Sealed),
}

#[derive(Serialize, Deserialize)]
struct KeyFileJson {
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrapped: Option<Sealed>,
}

impl KeyFile {
    /// Reads a key file; `None` when there is none.
    pub fn read(path: &Path) -> Result<Option<KeyFile>> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Internal(format!("{}: {e}", path.display()))),
        };
        let bad = || Error::Internal(format!("{}: not an orc key file", path.display()));
        let j: KeyFileJson = serde_json::from_slice(&text).map_err(|_| bad())?;
        match (j.version, j.plain, j.wrapped) {
            (1, Some(mut p), None) => {
                let mut b = hex::decode(&p).map_err(|_| bad())?;
                p.zeroize();
                let k = DataKey::from_bytes(&b).map_err(|_| bad());
                b.zeroize();
                Ok(Some(KeyFile::Plain(k?)))
            }
            (1, None, Some(w)) => Ok(Some(KeyFile::Wrapped(w))),
            _ => Err(bad()),
        }
    }

    /// Writes a key file atomically (a 0600 temporary file, synced, renamed over it).
    pub fn write(&self, path: &Path) -> Result<()> {
        let j = match self {
            KeyFile::Plain(k) => KeyFileJson {
                version: 1,
                plain: Some(hex::encode(k.as_bytes())),
                wrapped: None,
            },
            KeyFile::Wrapped(w) => KeyFileJson {
                version: 1,
                plain: None,
                wrapped: Some(w.clone()),
            },
        };
        let mut text = serde_json::to_vec(&j)?;
        let tmp = path.with_extension("key.tmp");
        let r = write_private(&tmp, &text).and_then(|_| {
            std::fs::rename(&tmp, path)
                .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))
        });
        text.zeroize();
        if let Some(mut p) = j.plain {
            p.zeroize();
        }
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Removes a key file; no error if there is none.
    pub fn remove(path: &Path) -> Result<()> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Internal(format!("{}: {e}", path.display()))),
        }
    }
}

/// Creates (or truncates) `path` with mode 0600 and writes `data`, synced.
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |e: std::io::Error| Error::Internal(format!("{}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)
}

/// `<data-dir>/data.key`.
pub fn data_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DATA_KEY_FILE)
}

/// `<data-dir>/node.key`.
pub fn node_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(NODE_KEY_FILE)
}

/// The key in the clear in `<data-dir>/data.key` or, if there is none, `node.key`: for
/// tools and tests that read a stopped node's database. Refuses a wrapped (autolocked)
/// data key.
pub fn read_plain_key(data_dir: &Path) -> Result<DataKey> {
    for path in [data_key_path(data_dir), node_key_path(data_dir)] {
        match KeyFile::read(&path)? {
            Some(KeyFile::Plain(k)) => return Ok(k),
            Some(KeyFile::Wrapped(_)) => {
                return Err(Error::Conflict(format!(
                    "{}: the data key is wrapped by the unlock key",
                    path.display()
                )))
            }
            None => {}
        }
    }
    Err(Error::NotFound(format!(
        "{}: no key file",
        data_dir.display()
    )))
}

/// Sets the process umask to 0o077, so that every file and directory the daemon (and
/// sled) creates from now on is private to its owner.
pub fn restrict_umask() {
    // SAFETY: umask only changes the process's file mode creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Makes `dir` and every directory under it 0700 and every other file 0600. Symbolic
/// links are neither followed nor changed.
pub fn secure_tree(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let err = |p: &Path, e: std::io::Error| Error::Internal(format!("{}: {e}", p.display()));
    let meta = std::fs::symlink_metadata(dir).map_err(|e| err(dir, e))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if meta.is_dir() {
        if meta.permissions().mode() & 0o7777 != 0o700 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| err(dir, e))?;
        }
        for entry in std::fs::read_dir(dir).map_err(|e| err(dir, e))? {
            let entry = entry.map_err(|e| err(dir, e))?;
            secure_tree(&entry.path())?;
        }
    } else if meta.permissions().mode() & 0o7777 != 0o600 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err(dir, e))?;
    }
    Ok(())
}

/// The purpose a kind's content is sealed as.
pub fn secret_purpose(kind: crate::store::secret::Kind) -> Purpose {
    match kind {
        crate::store::secret::Kind::Secret => Purpose::Secret,
        crate::store::secret::Kind::Config => Purpose::Config,
    }
}

/// The keyed digest of a content: HMAC-SHA256 under a key derived from the data key,
/// 32 hex digits. It tells contents apart (a stack redeploy rotates only a changed
/// one) without letting anyone without the data key test a guess.
pub fn secret_digest(dk: &DataKey, kind: crate::store::secret::Kind, data: &[u8]) -> String {
    let derived = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, dk.as_bytes()),
        b"orc secret digest v1",
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(kind.as_str().as_bytes());
    ctx.update(&[0]);
    ctx.update(data);
    hex::encode(&ctx.sign().as_ref()[..16])
}
