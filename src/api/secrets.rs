//! Control API operations on secrets and configs, run on the leader: create, list,
//! inspect, update (a rotation), remove, and the door of service specs that name them.
//!
//! The content is checked (at most [`MAX_SIZE`] bytes) and sealed with the cluster's
//! data key here, before anything is proposed: the Raft log and snapshots
//! only ever hold ciphertext. No answer carries a secret's content, and answers of
//! writes (which the exactly-once table records in the replicated state) carry no
//! content at all. What the door checks, apply checks again
//! (`store::apply::secret`).

use crate::error::{Error, Result};
use crate::keys::DataKey;
use crate::manager::Manager;
use crate::proto;
use crate::proto::convert::secret::kind_of;
use crate::store::secret::{
    resolve_refs, validate_data, validate_labels, validate_name, Kind, Version, MAX_OBJECTS,
    MAX_SIZE,
};
use crate::store::{Command, Secret, SecretId, SecretUpdate, ServiceSpec, State};
use crate::units::now_ms;

pub use crate::keys::{secret_digest as digest, secret_purpose as purpose};

/// A sealed version `version` of `data`, checked.
pub fn seal_version(
    dk: &DataKey,
    kind: Kind,
    version: u64,
    data: &[u8],
    now: u64,
) -> Result<Version> {
    validate_data(kind, data)?;
    Ok(Version {
        version,
        data: dk.seal(purpose(kind), data)?,
        size: data.len() as u64,
        digest: digest(dk, kind, data),
        created_ms: now,
    })
}

/// `spec`'s secrets and configs, named by name (or id) as a client sends them, as ids
/// and current versions; refused, naming the field, when one is not found.
pub fn resolve(state: &State, spec: &mut ServiceSpec) -> Result<()> {
    for kind in [Kind::Secret, Kind::Config] {
        resolve_refs(
            kind,
            &|name| state.secret_named(kind, name).cloned(),
            spec.task.refs_mut(kind),
        )?;
    }
    Ok(())
}

/// The services that use `s`, by name.
fn users(state: &State, s: &Secret) -> Vec<String> {
    State::secret_users(s.kind, &s.id, state.services.values())
}

/// How `ls` and `inspect` show `s` (never a secret's content).
pub fn view(state: &State, s: &Secret) -> proto::SecretView {
    let cur = s.current();
    proto::SecretView {
        id: s.id.0.clone(),
        kind: proto::SecretKind::from(s.kind).into(),
        name: s.name.clone(),
        labels: s.labels.clone(),
        created_ms: s.created_ms,
        updated_ms: s.updated_ms,
        version: cur.version,
        size: cur.size,
        digest: cur.digest.clone(),
        services: users(state, s),
        data: None,
    }
}

fn find<'a>(state: &'a State, kind: Kind, what: &str) -> Result<&'a Secret> {
    state
        .secret_named(kind, what)
        .ok_or_else(|| Error::NotFound(format!("{kind} {what} not found")))
}

/// `secret create` / `config create`.
pub async fn create(m: &Manager, r: proto::SecretData) -> Result<proto::SecretView> {
    let kind = kind_of("kind", r.kind)?;
    validate_name(kind, &r.name)?;
    validate_labels(&r.labels)?;
    if r.data.len() > MAX_SIZE {
        validate_data(kind, &r.data)?;
    }
    m.read(|s| {
        if s.table(kind).values().any(|x| x.name == r.name) {
            return Err(Error::Conflict(format!("{kind} {} already exists", r.name)));
        }
        if s.table(kind).len() >= MAX_OBJECTS {
            return Err(Error::Conflict(format!(
                "the cluster holds {MAX_OBJECTS} {}, the most it may: remove one first",
                kind.plural()
            )));
        }
        Ok(())
    })?;
    let now = now_ms();
    let version = seal_version(m.data_key(), kind, 1, &r.data, now)?;
    let secret = Secret {
        id: SecretId::random(),
        kind,
        name: r.name,
        labels: r.labels,
        versions: vec![version],
        created_ms: now,
        updated_ms: now,
    };
    let reply = m.read(|s| view(s, &secret));
    m.propose_replying(Command::CreateSecret { secret }, &reply)
        .await?;
    Ok(reply)
}

/// `secret ls` / `config ls`, by name.
pub fn list(m: &Manager, r: proto::SecretKindRequest) -> Result<proto::ListSecretsResponse> {
    let kind = kind_of("kind", r.kind)?;
    Ok(m.read(|s| {
        let mut all: Vec<&Secret> = s.table(kind).values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        proto::ListSecretsResponse {
            secrets: all.into_iter().map(|x| view(s, x)).collect(),
        }
    }))
}

/// `secret inspect` / `config inspect`: a config's content is shown, a secret's never.
pub fn inspect(m: &Manager, r: proto::SecretName) -> Result<proto::SecretView> {
    let kind = kind_of("kind", r.kind)?;
    let (mut v, sealed) = m.read(|s| -> Result<_> {
        let x = find(s, kind, &r.name)?;
        Ok((view(s, x), x.current().data.clone()))
    })?;
    if kind == Kind::Config {
        let data = m.data_key().open(purpose(kind), &sealed)?;
        v.data = Some(String::from_utf8_lossy(&data).into_owned());
    }
    Ok(v)
}

/// `secret update` / `config update`: a new content under the same name; every service
/// that uses it rolls to it under its update settings.
pub async fn update(m: &Manager, r: proto::SecretData) -> Result<proto::SecretView> {
    let kind = kind_of("kind", r.kind)?;
    if r.data.len() > MAX_SIZE {
        validate_data(kind, &r.data)?;
    }
    let (id, next) = m.read(|s| -> Result<_> {
        let x = find(s, kind, &r.name)?;
        Ok((x.id.clone(), x.current().version + 1))
    })?;
    let now = now_ms();
    let version = seal_version(m.data_key(), kind, next, &r.data, now)?;
    let cmd = Command::UpdateSecret {
        update: SecretUpdate {
            kind,
            id: id.clone(),
            version,
        },
        now_ms: now,
    };
    let mut reply = m.read(|s| -> Result<_> {
        let x = s
            .table(kind)
            .get(&id)
            .ok_or_else(|| Error::NotFound(format!("{kind} {} not found", r.name)))?;
        Ok(view(s, x))
    })?;
    reply.version = next;
    reply.updated_ms = now;
    reply.size = r.data.len() as u64;
    reply.digest = digest(m.data_key(), kind, &r.data);
    m.propose_replying(cmd, &reply).await?;
    Ok(reply)
}

/// `secret rm` / `config rm`: refused while any service uses it.
pub async fn remove(m: &Manager, r: proto::SecretName) -> Result<()> {
    let kind = kind_of("kind", r.kind)?;
    let id = m.read(|s| -> Result<SecretId> {
        let x = find(s, kind, &r.name)?;
        let users = users(s, x);
        if !users.is_empty() {
            return Err(Error::Conflict(format!(
                "{kind} {} is in use by service{} {}",
                x.name,
                if users.len() == 1 { "" } else { "s" },
                users.join(", ")
            )));
        }
        Ok(x.id.clone())
    })?;
    m.propose_replying(Command::RemoveSecret { kind, id }, &proto::Empty {})
        .await?;
    Ok(())
}
