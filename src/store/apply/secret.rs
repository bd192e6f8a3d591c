//! Secrets and configs: create, update (a rotation, which rolls the services that use
//! it), remove, and the checks that keep every service's references in the tables (a
//! service names only secrets and versions that exist; a secret in use stays).
//!
//! The control API checks the same at the door, but only apply sees the order in which
//! writes land: a `secret rm` racing a `service create` naming that secret must not
//! leave a service with a dangling reference, so both checks are made here again.

use super::Applied;
use crate::store::secret::{Kind, Version, MAX_OBJECTS, MAX_VERSIONS};
use crate::store::*;

/// The kinds, in the order they are checked.
const KINDS: [Kind; 2] = [Kind::Secret, Kind::Config];

impl State {
    /// Why `secret` cannot join its table beside `also` (created in the same entry
    /// before it), or `None` when it can.
    pub(super) fn secret_refusal(&self, secret: &Secret, also: &[&Secret]) -> Option<String> {
        let kind = secret.kind;
        let table = self.table(kind);
        let same = also.iter().filter(|s| s.kind == kind);
        if table
            .values()
            .chain(same.clone().copied())
            .any(|s| s.name == secret.name)
        {
            return Some(format!("{kind} {} already exists", secret.name));
        }
        if table.contains_key(&secret.id) || same.clone().any(|s| s.id == secret.id) {
            return Some(format!("{kind} id {} is taken", secret.id));
        }
        if table.len() + same.count() >= MAX_OBJECTS {
            return Some(format!(
                "{kind} {}: the cluster holds {MAX_OBJECTS} {}, the most it may",
                secret.name,
                kind.plural()
            ));
        }
        if secret.versions.len() != 1 {
            return Some(format!(
                "{kind} {}: a new {kind} has one version",
                secret.name
            ));
        }
        None
    }

    /// Why `spec` cannot be stored: a secret or config (or the version of it) it names
    /// that `exists` does not know.
    pub(super) fn missing_secret(
        spec: &ServiceSpec,
        exists: impl Fn(Kind, &SecretId, u64) -> bool,
    ) -> Option<String> {
        KINDS.iter().find_map(|&kind| {
            spec.task
                .refs(kind)
                .iter()
                .find(|r| !exists(kind, &r.id, r.version))
                .map(|r| {
                    format!(
                        "service {}: {}: {kind} {} not found (removed meanwhile?)",
                        spec.name,
                        kind.plural(),
                        r.name
                    )
                })
        })
    }

    /// True when `kind` `id` exists with version `v`.
    pub(super) fn has_secret_version(&self, kind: Kind, id: &SecretId, v: u64) -> bool {
        self.table(kind)
            .get(id)
            .is_some_and(|s| s.version(v).is_some())
    }

    /// The services of `services` that use `kind` `id`, by name, sorted; one whose
    /// previous spec alone names it is shown so (a rollback would put it back).
    pub fn secret_users<'a>(
        kind: Kind,
        id: &SecretId,
        services: impl Iterator<Item = &'a Service>,
    ) -> Vec<String> {
        Self::users_of(services, |spec| {
            spec.task.refs(kind).iter().any(|r| &r.id == id)
        })
    }

    /// Why `kind` `id` cannot be removed: it is missing, or some service of `services`
    /// uses it (named).
    pub(super) fn secret_removal_refusal<'a>(
        &self,
        kind: Kind,
        id: &SecretId,
        services: impl Iterator<Item = &'a Service>,
    ) -> Option<String> {
        let Some(s) = self.table(kind).get(id) else {
            return Some(format!("{kind} {id} not found"));
        };
        let users = Self::secret_users(kind, id, services);
        if users.is_empty() {
            None
        } else {
            Some(format!(
                "{kind} {} is in use by service{} {}",
                s.name,
                if users.len() == 1 { "" } else { "s" },
                users.join(", ")
            ))
        }
    }

    /// Why `version` cannot be added to `kind` `id` now.
    pub(super) fn secret_update_refusal(
        &self,
        kind: Kind,
        id: &SecretId,
        version: &Version,
    ) -> Option<String> {
        let Some(s) = self.table(kind).get(id) else {
            return Some(format!("{kind} {id} not found"));
        };
        if version.version != s.current().version + 1 {
            return Some(format!("{kind} {} was changed meanwhile: retry", s.name));
        }
        if s.versions.len() >= MAX_VERSIONS {
            return Some(format!(
                "{kind} {}: {MAX_VERSIONS} versions are still in use by services, their previous specs or tasks: let their rolling updates finish first",
                s.name
            ));
        }
        None
    }

    /// Applies [`Command::CreateSecret`].
    pub(super) fn create_secret(&mut self, secret: &Secret) -> Applied {
        if let Some(why) = self.secret_refusal(secret, &[]) {
            return (Response::Rejected(why), vec![]);
        }
        self.table_mut(secret.kind)
            .insert(secret.id.clone(), secret.clone());
        (Response::Ok, vec![secret_key(secret.kind, &secret.id)])
    }

    /// Applies [`Command::UpdateSecret`]: adds the version, then moves every service that
    /// uses the secret (but those in `skip`, which the same entry changes itself) to it,
    /// as a `service update` would: the old spec becomes the previous one, and a rolling
    /// update starts.
    pub(super) fn update_secret(
        &mut self,
        kind: Kind,
        id: &SecretId,
        version: &Version,
        now_ms: u64,
        skip: &[ServiceId],
    ) -> Applied {
        if let Some(why) = self.secret_update_refusal(kind, id, version) {
            return (Response::Rejected(why), vec![]);
        }
        let s = self.table_mut(kind).get_mut(id).expect("checked above");
        s.versions.push(version.clone());
        s.updated_ms = now_ms;
        let mut keys = vec![secret_key(kind, id)];
        let users: Vec<Service> = self
            .services
            .values()
            .filter(|svc| !skip.contains(&svc.id))
            .filter(|svc| {
                svc.spec
                    .task
                    .refs(kind)
                    .iter()
                    .any(|r| &r.id == id && r.version < version.version)
            })
            .cloned()
            .collect();
        for old in users {
            let mut spec = old.spec.clone();
            for r in spec.task.refs_mut(kind).iter_mut().filter(|r| &r.id == id) {
                r.version = version.version;
            }
            let new = Service {
                spec,
                previous_spec: Some(old.spec.clone()),
                version: old.version + 1,
                updated_ms: now_ms,
                ..old
            };
            let (r, k) = self.update_service(&new);
            debug_assert_eq!(r, Response::Ok, "a newer version of a service that exists");
            keys.extend(k);
        }
        (Response::Ok, keys)
    }

    /// Applies [`Command::RemoveSecret`].
    pub(super) fn remove_secret(&mut self, kind: Kind, id: &SecretId) -> Applied {
        if let Some(why) = self.secret_removal_refusal(kind, id, self.services.values()) {
            return (Response::Rejected(why), vec![]);
        }
        self.table_mut(kind).remove(id);
        (Response::Ok, vec![secret_key(kind, id)])
    }

    /// Drops the versions no service spec, previous spec or task names any more (the
    /// current one always stays), adding the keys of the secrets it changed to `keys`.
    pub(super) fn prune_secret_versions(&mut self, keys: &mut Vec<String>) {
        if self.secrets.is_empty() && self.configs.is_empty() {
            return;
        }
        let mut used = std::collections::BTreeSet::new();
        let specs = self
            .services
            .values()
            .flat_map(|s| {
                std::iter::once(&s.spec.task).chain(s.previous_spec.iter().map(|p| &p.task))
            })
            .chain(self.tasks.values().map(|t| &*t.spec));
        for task in specs {
            for kind in KINDS {
                for r in task.refs(kind) {
                    used.insert((kind, r.id.clone(), r.version));
                }
            }
        }
        for kind in KINDS {
            for (id, s) in self.table_mut(kind).iter_mut() {
                let current = s.current().version;
                let before = s.versions.len();
                s.versions.retain(|v| {
                    v.version == current || used.contains(&(kind, id.clone(), v.version))
                });
                if s.versions.len() != before {
                    let k = secret_key(kind, id);
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
            }
        }
    }
}
