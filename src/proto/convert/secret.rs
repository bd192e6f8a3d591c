//! Secrets and configs ↔ their messages in `proto/objects.proto` and
//! `proto/commands.proto` ([`crate::store::secret`]). The content stays sealed on the
//! wire as in the store.

use super::invalid;
use crate::error::{Error, Result};
use crate::proto as pb;
use crate::store::secret::{Kind, SecretRef, Version};
use crate::store::{Sealed, Secret, SecretId, SecretUpdate};

impl From<Kind> for pb::SecretKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Secret => pb::SecretKind::Secret,
            Kind::Config => pb::SecretKind::Config,
        }
    }
}

impl From<pb::SecretKind> for Kind {
    fn from(k: pb::SecretKind) -> Self {
        match k {
            pb::SecretKind::Secret => Kind::Secret,
            pb::SecretKind::Config => Kind::Config,
        }
    }
}

/// A wire kind number as the store's kind, refused naming `field` when unknown.
pub fn kind_of(field: &str, v: i32) -> Result<Kind> {
    pb::SecretKind::try_from(v)
        .map(Into::into)
        .map_err(|_| invalid(field, format!("unknown value {v}")))
}

impl From<SecretRef> for pb::SecretRef {
    fn from(r: SecretRef) -> Self {
        pb::SecretRef {
            id: r.id.0,
            name: r.name,
            target: r.target,
            uid: r.uid,
            gid: r.gid,
            mode: r.mode,
            version: r.version,
        }
    }
}

impl From<pb::SecretRef> for SecretRef {
    fn from(r: pb::SecretRef) -> Self {
        SecretRef {
            id: SecretId(r.id),
            name: r.name,
            target: r.target,
            uid: r.uid,
            gid: r.gid,
            mode: r.mode,
            version: r.version,
        }
    }
}

impl From<Version> for pb::SecretVersion {
    fn from(v: Version) -> Self {
        pb::SecretVersion {
            version: v.version,
            data: v.data.as_str().to_string(),
            size: v.size,
            digest: v.digest,
            created_ms: v.created_ms,
        }
    }
}

impl From<pb::SecretVersion> for Version {
    fn from(v: pb::SecretVersion) -> Self {
        Version {
            version: v.version,
            data: Sealed::from_stored(v.data),
            size: v.size,
            digest: v.digest,
            created_ms: v.created_ms,
        }
    }
}

impl From<Secret> for pb::Secret {
    fn from(s: Secret) -> Self {
        pb::Secret {
            id: s.id.0,
            kind: pb::SecretKind::from(s.kind).into(),
            name: s.name,
            labels: s.labels,
            versions: s.versions.into_iter().map(Into::into).collect(),
            created_ms: s.created_ms,
            updated_ms: s.updated_ms,
        }
    }
}

impl TryFrom<pb::Secret> for Secret {
    type Error = Error;
    fn try_from(s: pb::Secret) -> Result<Self> {
        if s.versions.is_empty() {
            return Err(invalid("secret.versions", "must have one at least"));
        }
        Ok(Secret {
            id: SecretId(s.id),
            kind: kind_of("secret.kind", s.kind)?,
            name: s.name,
            labels: s.labels,
            versions: s.versions.into_iter().map(Into::into).collect(),
            created_ms: s.created_ms,
            updated_ms: s.updated_ms,
        })
    }
}

impl From<SecretUpdate> for pb::SecretUpdate {
    fn from(u: SecretUpdate) -> Self {
        pb::SecretUpdate {
            kind: pb::SecretKind::from(u.kind).into(),
            id: u.id.0,
            version: Some(u.version.into()),
        }
    }
}

impl TryFrom<pb::SecretUpdate> for SecretUpdate {
    type Error = Error;
    fn try_from(u: pb::SecretUpdate) -> Result<Self> {
        Ok(SecretUpdate {
            kind: kind_of("secret_update.kind", u.kind)?,
            id: SecretId(u.id),
            version: u
                .version
                .ok_or_else(|| invalid("secret_update.version", "must be set"))?
                .into(),
        })
    }
}

/// A (kind, id) pair on the wire.
pub fn key_out(kind: Kind, id: SecretId) -> pb::SecretKey {
    pb::SecretKey {
        kind: pb::SecretKind::from(kind).into(),
        id: id.0,
    }
}

/// A (kind, id) pair from the wire.
pub fn key_in(field: &str, k: pb::SecretKey) -> Result<(Kind, SecretId)> {
    Ok((kind_of(field, k.kind)?, SecretId(k.id)))
}
