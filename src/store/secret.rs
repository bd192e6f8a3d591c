//! Secrets and configs: small files the operator hands to services.
//!
//! Both are the same object ([`Secret`], told apart by its [`Kind`]) in two tables of
//! their own (`secrets`, `configs`). The content never enters the store in the clear:
//! the control API seals it with the cluster's data key ([`crate::keys::DataKey`],
//! purpose `Secret` or `Config`) before it proposes, so the Raft log, snapshots and the
//! `sm` tree hold only ciphertext ([`Sealed`]); configs are sealed too, which costs
//! nothing and keeps one path.
//!
//! Rotation without renaming: `secret update` adds a [`Version`] under the same name and
//! id. A service names a secret by id *and version* ([`SecretRef`] in its task spec), so
//! applying the update bumps every service that uses the secret to the new version (its
//! old spec becoming its previous spec, as a normal `service update` does), and the
//! orchestrator's "task out of date" check rolls it under its `update_config`. Older
//! versions stay while any service spec, previous spec (a rollback would need it) or
//! task still names them, and are dropped once none does.
//!
//! Only the leader's dispatcher opens a version, for the node that runs a task naming
//! it, inside that task's assignment (`crate::dispatcher::session`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use super::sealed::Sealed;
use super::service::STACK_LABEL;
use crate::error::{Error, Result};

/// The most bytes one secret or config may hold (Swarm's limit).
pub const MAX_SIZE: usize = 500 * 1024;
/// The longest name, in bytes.
pub const MAX_NAME: usize = 64;
/// The most secrets (and, apart, configs) the cluster holds.
pub const MAX_OBJECTS: usize = 1024;
/// The most secrets (and, apart, configs) one service may use.
pub const MAX_REFS: usize = 64;
/// The most versions one secret keeps (the current one and those a service, a previous
/// spec or a task still names); an update beyond it is refused until rolling updates
/// finish.
pub const MAX_VERSIONS: usize = 16;
/// The most labels on one secret or config.
pub const MAX_LABELS: usize = 64;

/// A content in the clear (in memory only: an assignment, a stack file read); zeroed when dropped, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Plain(pub Vec<u8>);

impl Drop for Plain {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Plain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} bytes elided]", self.0.len())
    }
}

/// Secret or config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Mounted at `/run/secrets/TARGET`; never shown.
    Secret,
    /// Mounted at its target (default `/NAME`); may be shown.
    Config,
}

impl Kind {
    /// `secret` or `config`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }

    /// `secrets` or `configs`: the spec's and the compose file's key.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Secret => "secrets",
            Kind::Config => "configs",
        }
    }

    /// The path in the container of a reference's `target` (the name when empty):
    /// `/run/secrets/TARGET` for secrets (a relative target is under it), the target
    /// itself for configs (default `/NAME`).
    pub fn container_path(self, name: &str, target: &str) -> String {
        let t = if target.is_empty() { name } else { target };
        match self {
            Kind::Secret if t.starts_with('/') => t.to_string(),
            Kind::Secret => format!("/run/secrets/{t}"),
            Kind::Config if t.starts_with('/') => t.to_string(),
            Kind::Config => format!("/{t}"),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret's (or config's) identity: 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SecretId(pub String);

impl fmt::Display for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl SecretId {
    /// A fresh random id.
    pub fn random() -> Self {
        SecretId(format!("{:016x}", rand::random::<u64>()))
    }
}

/// One content of a secret, sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// 1 for the first content, one more for each update.
    pub version: u64,
    /// The content, sealed with the data key.
    pub data: Sealed,
    /// The content's length in bytes.
    pub size: u64,
    /// A keyed digest of the content (HMAC-SHA256 under the data key, hex, 32 digits):
    /// tells two contents apart without revealing a guessable one.
    pub digest: String,
    /// Unix ms.
    pub created_ms: u64,
}

/// A secret or config in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// Identity.
    pub id: SecretId,
    /// Secret or config.
    pub kind: Kind,
    /// Unique name (within its kind).
    pub name: String,
    /// Labels (a stack's carry [`STACK_LABEL`]).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The kept versions, oldest first; the last is the current one.
    pub versions: Vec<Version>,
    /// Unix ms.
    pub created_ms: u64,
    /// Unix ms of the last update.
    pub updated_ms: u64,
}

impl Secret {
    /// The current version.
    pub fn current(&self) -> &Version {
        self.versions.last().expect("a secret has a version")
    }

    /// Version `v`, if kept.
    pub fn version(&self, v: u64) -> Option<&Version> {
        self.versions.iter().find(|x| x.version == v)
    }

    /// The stack the secret belongs to (empty: none).
    pub fn stack(&self) -> &str {
        self.labels
            .get(STACK_LABEL)
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// A service's use of a secret or config: which (by id, and the version its tasks
/// get), and where its file is in the container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SecretRef {
    /// The secret's id (empty until resolved at the control API's door).
    pub id: SecretId,
    /// Its name, as the client named it.
    pub name: String,
    /// The file's path: for secrets, under `/run/secrets/` unless absolute; for configs,
    /// absolute (empty: the name; see [`Kind::container_path`]).
    pub target: String,
    /// Owner of the file.
    pub uid: u32,
    /// Group of the file.
    pub gid: u32,
    /// Permission bits of the file (default 0o444).
    pub mode: u32,
    /// The version its tasks get (set at the door, bumped by a rotation).
    pub version: u64,
}

impl SecretRef {
    /// A reference to `name` with Docker's defaults.
    pub fn to(name: &str) -> SecretRef {
        SecretRef {
            id: SecretId(String::new()),
            name: name.to_string(),
            target: String::new(),
            uid: 0,
            gid: 0,
            mode: 0o444,
            version: 0,
        }
    }
}

/// Checks a name: 1 to [`MAX_NAME`] bytes of letters, digits, `_`, `-`, `.`, starting
/// with a letter or digit (Docker's rule).
pub fn validate_name(kind: Kind, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "name: {name:?} is not a {kind} name (1 to {MAX_NAME} letters, digits, '_', '-' or '.', starting with a letter or digit)"
        )))
    }
}

/// Checks a content's size: at most [`MAX_SIZE`] bytes, and not empty for a secret.
pub fn validate_data(kind: Kind, data: &[u8]) -> Result<()> {
    if data.len() > MAX_SIZE {
        return Err(Error::InvalidInput(format!(
            "data: a {kind} holds at most {MAX_SIZE} bytes (500 KB), this one has {}",
            data.len()
        )));
    }
    if kind == Kind::Secret && data.is_empty() {
        return Err(Error::InvalidInput(
            "data: a secret may not be empty".into(),
        ));
    }
    Ok(())
}

/// Checks labels: at most [`MAX_LABELS`], keys 1 to 128 bytes, values at most 512.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(Error::InvalidInput(format!(
            "labels: at most {MAX_LABELS} labels"
        )));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > 128 || v.len() > 512 {
            return Err(Error::InvalidInput(format!(
                "labels: {k:?}: keys are 1 to 128 bytes and values at most 512"
            )));
        }
    }
    Ok(())
}

/// Checks a service's references of one kind: at most [`MAX_REFS`], names valid, each
/// path used once, mode at most 0o777, targets without `..` (a secret's is a file name
/// or absolute; a config's absolute or a file name).
pub fn validate_refs(kind: Kind, refs: &[SecretRef]) -> Result<()> {
    let field = kind.plural();
    if refs.len() > MAX_REFS {
        return Err(Error::InvalidInput(format!(
            "{field}: at most {MAX_REFS} {field} on a service"
        )));
    }
    let mut paths = std::collections::BTreeSet::new();
    for r in refs {
        validate_name(kind, &r.name).map_err(|e| prefix(field, e))?;
        if r.mode > 0o777 {
            return Err(Error::InvalidInput(format!(
                "{field}: {}: mode {:o} is not a file mode (at most 0777)",
                r.name, r.mode
            )));
        }
        let t = &r.target;
        let bad = t.len() > 256
            || t.contains('\0')
            || t.split('/').any(|p| p == "..")
            || t.ends_with('/')
            || (t.starts_with('/') && t.len() == 1);
        if bad {
            return Err(Error::InvalidInput(format!(
                "{field}: {}: target {t:?} is not a file path",
                r.name
            )));
        }
        let path = kind.container_path(&r.name, t);
        if !paths.insert(path.clone()) {
            return Err(Error::InvalidInput(format!(
                "{field}: {path} is the target of two {field}"
            )));
        }
    }
    Ok(())
}

fn prefix(field: &str, e: Error) -> Error {
    match e {
        Error::InvalidInput(m) => Error::InvalidInput(format!("{field}: {m}")),
        e => e,
    }
}

/// `spec`'s references of `kind` as a client sends them (by name), resolved by `lookup`
/// (a name or id → the secret) to ids and each secret's current version; refused,
/// naming the field and the name, when one is not found.
pub fn resolve_refs(
    kind: Kind,
    lookup: &dyn Fn(&str) -> Option<Secret>,
    refs: &mut [SecretRef],
) -> Result<()> {
    for r in refs.iter_mut() {
        let key = if r.id.0.is_empty() { &r.name } else { &r.id.0 };
        let s = lookup(key).ok_or_else(|| {
            Error::InvalidInput(format!("{}: {kind} {} not found", kind.plural(), r.name))
        })?;
        r.id = s.id.clone();
        r.name = s.name.clone();
        r.version = s.current().version;
    }
    validate_refs(kind, refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["db_password", "a", "x.y-z_1", &"x".repeat(64)] {
            validate_name(Kind::Secret, ok).unwrap();
        }
        for bad in ["", "-x", ".x", "a b", "a/b", &"x".repeat(65), "é"] {
            assert!(validate_name(Kind::Secret, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn content_is_at_most_500_kb_and_a_secret_not_empty() {
        validate_data(Kind::Secret, &vec![b'x'; MAX_SIZE]).unwrap();
        let e = validate_data(Kind::Secret, &vec![b'x'; MAX_SIZE + 1]).unwrap_err();
        assert!(e.to_string().contains("at most 512000 bytes"), "{e}");
        assert!(validate_data(Kind::Secret, b"").is_err());
        validate_data(Kind::Config, b"").unwrap();
    }

    #[test]
    fn paths_in_the_container() {
        assert_eq!(Kind::Secret.container_path("pw", ""), "/run/secrets/pw");
        assert_eq!(Kind::Secret.container_path("pw", "db"), "/run/secrets/db");
        assert_eq!(Kind::Secret.container_path("pw", "/etc/pw"), "/etc/pw");
        assert_eq!(Kind::Config.container_path("conf", ""), "/conf");
        assert_eq!(
            Kind::Config.container_path("conf", "/etc/a.conf"),
            "/etc/a.conf"
        );
    }

    #[test]
    fn references_are_bounded_unique_and_stay_in_their_place() {
        let r = |name: &str, target: &str| SecretRef {
            target: target.into(),
            ..SecretRef::to(name)
        };
        validate_refs(Kind::Secret, &[r("a", ""), r("b", "x")]).unwrap();
        let e = validate_refs(Kind::Secret, &[r("a", ""), r("b", "a")]).unwrap_err();
        assert!(e.to_string().contains("/run/secrets/a"), "{e}");
        for bad in ["../etc/passwd", "/", "a/", "x/../../y"] {
            assert!(
                validate_refs(Kind::Secret, &[r("a", bad)]).is_err(),
                "{bad}"
            );
        }
        let mut m = r("a", "");
        m.mode = 0o1777;
        assert!(validate_refs(Kind::Secret, &[m]).is_err());
        let many: Vec<SecretRef> = (0..=MAX_REFS).map(|i| r(&format!("s{i}"), "")).collect();
        assert!(validate_refs(Kind::Config, &many).is_err());
    }
}
