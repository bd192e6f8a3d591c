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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::convert::command::{decode, encode};
    use crate::store::{Command, SecretRef};

    fn secret(kind: Kind) -> Secret {
        Secret {
            id: SecretId("00000000000000a1".into()),
            kind,
            name: "shop_pw".into(),
            labels: [("com.docker.stack.namespace".to_string(), "shop".to_string())].into(),
            versions: vec![Version {
                version: 3,
                data: Sealed::from_stored("abcdef"),
                size: 7,
                digest: "d".into(),
                created_ms: 9,
            }],
            created_ms: 1,
            updated_ms: 2,
        }
    }

    #[test]
    fn the_secret_commands_round_trip() {
        let update = SecretUpdate {
            kind: Kind::Config,
            id: SecretId("b2".into()),
            version: secret(Kind::Config).versions[0].clone(),
        };
        for cmd in [
            Command::CreateSecret {
                secret: secret(Kind::Secret),
            },
            Command::CreateSecret {
                secret: secret(Kind::Config),
            },
            Command::UpdateSecret {
                update: update.clone(),
                now_ms: 5,
            },
            Command::RemoveSecret {
                kind: Kind::Config,
                id: SecretId("c3".into()),
            },
            Command::DeployStack {
                create: vec![],
                update: vec![],
                remove: vec![],
                create_networks: vec![],
                remove_networks: vec![],
                create_secrets: vec![secret(Kind::Secret)],
                update_secrets: vec![update],
                remove_secrets: vec![(Kind::Secret, SecretId("d4".into()))],
            },
        ] {
            assert_eq!(decode(&encode(&cmd)).unwrap(), cmd);
        }
    }

    #[test]
    fn a_snapshot_keeps_secrets_and_configs_apart() {
        let mut st = crate::store::State::default();
        st.secrets
            .insert(SecretId("00000000000000a1".into()), secret(Kind::Secret));
        st.configs
            .insert(SecretId("00000000000000a1".into()), secret(Kind::Config));
        let back = crate::store::State::try_from(pb::State::from(st.clone())).unwrap();
        assert_eq!(back, st);
    }

    #[test]
    fn a_reference_round_trips_and_a_secret_without_a_version_is_refused() {
        let r = SecretRef {
            id: SecretId("a1".into()),
            name: "pw".into(),
            target: "db".into(),
            uid: 70,
            gid: 71,
            mode: 0o400,
            version: 2,
        };
        assert_eq!(SecretRef::from(pb::SecretRef::from(r.clone())), r);
        let mut s = pb::Secret::from(secret(Kind::Secret));
        s.versions.clear();
        assert!(Secret::try_from(s).is_err());
        let mut s = pb::Secret::from(secret(Kind::Secret));
        s.kind = 9;
        assert!(Secret::try_from(s).is_err());
    }
}
