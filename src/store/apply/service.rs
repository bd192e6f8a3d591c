//! Services: create, update (which may start a rolling update), roll back, update status, remove, and a stack's changes (its networks too) in one entry.

use super::Applied;
use crate::store::*;

impl State {
    /// Applies [`Command::CreateService`].
    pub(super) fn create_service(&mut self, service: &Service) -> Applied {
        if self
            .services
            .values()
            .any(|s| s.spec.name == service.spec.name)
        {
            return (
                Response::Rejected(format!("service {} already exists", service.spec.name)),
                vec![],
            );
        }
        if let Some(why) = Self::missing_network(&service.spec, |id| self.networks.contains_key(id))
        {
            return (Response::Rejected(why), vec![]);
        }
        if let Some(why) =
            Self::missing_secret(&service.spec, |k, id, v| self.has_secret_version(k, id, v))
        {
            return (Response::Rejected(why), vec![]);
        }
        let mut service = service.clone();
        let mut keys = vec![service_key(&service.id)];
        service.vip = self.allocate_vip(&mut None, &mut keys);
        self.services.insert(service.id.clone(), service);
        (Response::Ok, keys)
    }

    /// Applies [`Command::UpdateService`].
    pub(super) fn update_service(&mut self, service: &Service) -> Applied {
        match self.services.get(&service.id) {
            Some(old) if old.version < service.version => {}
            Some(_) => {
                return (
                    Response::Rejected(format!(
                        "service {} was changed meanwhile: retry",
                        service.spec.name
                    )),
                    vec![],
                )
            }
            None => {
                return (
                    Response::Rejected(format!("service {} not found", service.spec.name)),
                    vec![],
                )
            }
        }
        if let Some(why) = Self::missing_network(&service.spec, |id| self.networks.contains_key(id))
        {
            return (Response::Rejected(why), vec![]);
        }
        if let Some(why) =
            Self::missing_secret(&service.spec, |k, id, v| self.has_secret_version(k, id, v))
        {
            return (Response::Rejected(why), vec![]);
        }
        let mut service = service.clone();
        let old = &self.services[&service.id];
        service.vip = old.vip.clone();
        let mut keys = vec![service_key(&service.id)];
        let paused = self
            .update_status
            .get_mut(&service.id)
            .filter(|u| u.state == service::UpdateState::Paused);
        if service::starts_update(&old.spec, &service.spec) {
            let status = UpdateStatus::new(
                service::UpdateState::Updating,
                service.version,
                service.updated_ms,
                "update in progress",
            );
            self.update_status.insert(service.id.clone(), status);
            keys.push(update_key(&service.id));
        } else if let Some(u) = paused.filter(|_| old.spec.update != service.spec.update) {
            // New update settings resume a paused update where it stopped.
            u.state = service::UpdateState::Updating;
            u.message = "update resumed".into();
            keys.push(update_key(&service.id));
        }
        let id = service.id.clone();
        self.services.insert(id.clone(), service);
        self.drop_stale_pin(&id, &mut keys);
        (Response::Ok, keys)
    }

    /// Applies [`Command::RollbackService`].
    pub(super) fn rollback_service(
        &mut self,
        id: &ServiceId,
        version: &u64,
        message: &str,
        now_ms: &u64,
    ) -> Applied {
        let Some(svc) = self.services.get_mut(id) else {
            return (
                Response::Rejected(format!("service {id} not found")),
                vec![],
            );
        };
        if svc.version != *version {
            return (
                Response::Rejected(format!(
                    "service {} was changed meanwhile: retry",
                    svc.spec.name
                )),
                vec![],
            );
        }
        let Some(previous) = svc.previous_spec.take() else {
            return (
                Response::Rejected(format!(
                    "service {} has no previous spec to roll back to",
                    svc.spec.name
                )),
                vec![],
            );
        };
        let current = std::mem::replace(&mut svc.spec, previous);
        svc.previous_spec = Some(current);
        svc.version += 1;
        svc.updated_ms = *now_ms;
        let mut keys = vec![service_key(id)];
        if !svc.spec.mode.is_job() {
            let status = UpdateStatus::new(
                service::UpdateState::RollbackStarted,
                svc.version,
                *now_ms,
                message,
            );
            self.update_status.insert(id.clone(), status);
            keys.push(update_key(id));
        }
        self.drop_stale_pin(id, &mut keys);
        (Response::Ok, keys)
    }

    /// Applies [`Command::SetUpdateStatus`].
    pub(super) fn set_update_status(
        &mut self,
        updates: &[(ServiceId, u64, UpdateStatus)],
    ) -> Applied {
        let mut keys = vec![];
        for (id, version, status) in updates {
            if self.services.get(id).is_some_and(|s| s.version == *version) {
                self.update_status.insert(id.clone(), status.clone());
                keys.push(update_key(id));
            }
        }
        (Response::Ok, keys)
    }

    /// Applies [`Command::RemoveService`].
    pub(super) fn remove_service(&mut self, id: &ServiceId) -> Applied {
        if self.services.remove(id).is_none() {
            return (
                Response::Rejected(format!("service {id} not found")),
                vec![],
            );
        }
        let mut keys = vec![service_key(id)];
        if self.update_status.remove(id).is_some() {
            keys.push(update_key(id));
        }
        if self.image_pins.remove(id).is_some() {
            keys.push(pin_key(id));
        }
        self.drop_volume_homes(id, &mut keys);
        (Response::Ok, keys)
    }

    /// Applies [`Command::DeployStack`].
    pub(super) fn deploy_stack(
        &mut self,
        create: &[Service],
        update: &[Service],
        remove: &[ServiceId],
        create_networks: &[Network],
        remove_networks: &[NetworkId],
        (create_secrets, update_secrets, remove_secrets): (
            &[Secret],
            &[SecretUpdate],
            &[(secret::Kind, SecretId)],
        ),
    ) -> Applied {
        let mut made_secrets: Vec<&Secret> = vec![];
        for s in create_secrets {
            if let Some(why) = self.secret_refusal(s, &made_secrets) {
                return (Response::Rejected(why), vec![]);
            }
            made_secrets.push(s);
        }
        for u in update_secrets {
            if let Some(why) = self.secret_update_refusal(u.kind, &u.id, &u.version) {
                return (Response::Rejected(why), vec![]);
            }
            let twice = update_secrets
                .iter()
                .filter(|x| x.kind == u.kind && x.id == u.id)
                .count()
                > 1;
            if twice
                || remove_secrets
                    .iter()
                    .any(|(k, id)| *k == u.kind && id == &u.id)
            {
                return (
                    Response::Rejected(format!("{} {}: changed twice in one entry", u.kind, u.id)),
                    vec![],
                );
            }
        }
        let mut made: Vec<&Network> = vec![];
        for n in create_networks {
            if let Some(why) = self.network_refusal(n, &made) {
                return (Response::Rejected(why), vec![]);
            }
            made.push(n);
        }
        for svc in create {
            let taken = self
                .services
                .values()
                .any(|s| s.spec.name == svc.spec.name && !remove.contains(&s.id));
            let twice = create
                .iter()
                .filter(|c| c.spec.name == svc.spec.name)
                .count()
                > 1;
            if taken || twice {
                return (
                    Response::Rejected(format!("service {} already exists", svc.spec.name)),
                    vec![],
                );
            }
        }
        for svc in update {
            match self.services.get(&svc.id) {
                Some(old) if old.version < svc.version && !remove.contains(&svc.id) => {}
                _ => {
                    return (
                        Response::Rejected(format!(
                            "service {} was changed meanwhile: retry",
                            svc.spec.name
                        )),
                        vec![],
                    )
                }
            }
        }
        if let Some(id) = remove.iter().find(|id| !self.services.contains_key(id)) {
            return (
                Response::Rejected(format!("service {id} was removed meanwhile: retry")),
                vec![],
            );
        }
        // Networks: the services' after the entry name only networks that exist then,
        // and the networks removed are used by none of them.
        let exists = |id: &NetworkId| {
            !remove_networks.contains(id)
                && (self.networks.contains_key(id) || made.iter().any(|n| &n.id == id))
        };
        let secret_exists = |kind: secret::Kind, id: &SecretId, v: u64| {
            !remove_secrets.iter().any(|(k, i)| *k == kind && i == id)
                && (self.has_secret_version(kind, id, v)
                    || made_secrets
                        .iter()
                        .any(|s| s.kind == kind && &s.id == id && s.version(v).is_some())
                    || update_secrets
                        .iter()
                        .any(|u| u.kind == kind && &u.id == id && u.version.version == v))
        };
        for svc in create.iter().chain(update) {
            if let Some(why) = Self::missing_network(&svc.spec, exists) {
                return (Response::Rejected(why), vec![]);
            }
            if let Some(why) = Self::missing_secret(&svc.spec, secret_exists) {
                return (Response::Rejected(why), vec![]);
            }
        }
        let after: Vec<&Service> = self
            .services
            .values()
            .filter(|s| !remove.contains(&s.id) && !update.iter().any(|u| u.id == s.id))
            .chain(create.iter().chain(update))
            .collect();
        for id in remove_networks {
            if let Some(why) = self.network_removal_refusal(id, after.iter().copied()) {
                return (Response::Rejected(why), vec![]);
            }
        }
        for (kind, id) in remove_secrets {
            if let Some(why) = self.secret_removal_refusal(*kind, id, after.iter().copied()) {
                return (Response::Rejected(why), vec![]);
            }
        }
        let mut keys = vec![];
        for s in create_secrets {
            let (r, k) = self.create_secret(s);
            debug_assert_eq!(r, Response::Ok, "checked above");
            keys.extend(k);
        }
        // The services this entry updates or removes are not moved by a rotation: their
        // new specs name the new versions already.
        let skip: Vec<ServiceId> = update
            .iter()
            .map(|s| s.id.clone())
            .chain(remove.iter().cloned())
            .collect();
        for u in update_secrets {
            let (r, k) = self.update_secret(u.kind, &u.id, &u.version, u.version.created_ms, &skip);
            debug_assert_eq!(r, Response::Ok, "checked above");
            keys.extend(k);
        }
        let parts = create_networks
            .iter()
            .map(|n| Command::CreateNetwork { network: n.clone() })
            .chain(
                remove
                    .iter()
                    .map(|id| Command::RemoveService { id: id.clone() }),
            )
            .chain(
                update
                    .iter()
                    .map(|s| Command::UpdateService { service: s.clone() }),
            )
            .chain(
                create
                    .iter()
                    .map(|s| Command::CreateService { service: s.clone() }),
            )
            .chain(
                remove_networks
                    .iter()
                    .map(|id| Command::RemoveNetwork { id: id.clone() }),
            )
            .chain(
                remove_secrets
                    .iter()
                    .map(|(kind, id)| Command::RemoveSecret {
                        kind: *kind,
                        id: id.clone(),
                    }),
            );
        for c in parts {
            let (r, k) = self.apply(&c);
            debug_assert_eq!(r, Response::Ok, "checked above");
            keys.extend(k);
        }
        (Response::Ok, keys)
    }
}
