//! Control API operations on stacks, run on the leader: the plan of a deploy (see
//! [`crate::stack::plan`]) and, unless it is a dry run, one Raft entry that applies
//! it whole: the stack's missing networks made first, then its services (their
//! networks named by name in the request, by id in the store), and, with `--prune`
//! or `stack rm`, the stack's networks no service uses any more removed last.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::proto;
use crate::proto::convert::secret::kind_of;
use crate::stack::plan::{self, Action};
use crate::stack::StackNetwork;
use crate::store::secret::{validate_data, validate_labels, validate_name, Kind};
use crate::store::{
    Command, Network, NetworkId, Secret, SecretId, SecretUpdate, Service, ServiceId, ServiceSpec,
};
use crate::units::now_ms;

/// The most networks one stack request may carry (the loader's bound, again at the
/// door).
const MAX_STACK_NETWORKS: usize = 128;

impl From<Action> for proto::PlanAction {
    fn from(a: Action) -> Self {
        match a {
            Action::Create => proto::PlanAction::Create,
            Action::Update => proto::PlanAction::Update,
            Action::Unchanged => proto::PlanAction::Unchanged,
            Action::Remove => proto::PlanAction::Remove,
        }
    }
}

impl From<plan::Item> for proto::PlanItem {
    fn from(i: plan::Item) -> Self {
        proto::PlanItem {
            service: i.service,
            action: proto::PlanAction::from(i.action).into(),
            changes: i.changes,
            replaces_tasks: i.replaces_tasks,
        }
    }
}

impl From<plan::NetworkItem> for proto::PlanNetwork {
    fn from(i: plan::NetworkItem) -> Self {
        proto::PlanNetwork {
            network: i.network,
            action: proto::PlanAction::from(i.action).into(),
            external: i.external,
        }
    }
}

/// The plan's answer.
fn stack_plan(
    name: &str,
    dry_run: bool,
    items: Vec<plan::Item>,
    networks: Vec<plan::NetworkItem>,
    warnings: Vec<String>,
) -> proto::StackPlan {
    proto::StackPlan {
        stack: name.to_string(),
        dry_run,
        actions: items.into_iter().map(Into::into).collect(),
        networks: networks.into_iter().map(Into::into).collect(),
        warnings,
    }
}

/// The networks of a request, checked: bounded, valid, named once.
fn stack_networks(name: &str, r: Vec<proto::StackNetwork>) -> Result<Vec<StackNetwork>> {
    if r.len() > MAX_STACK_NETWORKS {
        return Err(Error::InvalidInput(format!(
            "networks: {} networks; a stack has at most {MAX_STACK_NETWORKS}",
            r.len()
        )));
    }
    let mut out: Vec<StackNetwork> = vec![];
    for n in r {
        let spec: crate::store::NetworkSpec = n
            .spec
            .ok_or_else(|| Error::InvalidInput("networks.spec: must be set".into()))?
            .try_into()
            .map_err(|e| Error::InvalidInput(format!("networks: {e}")))?;
        spec.validate()
            .map_err(|e| Error::InvalidInput(format!("networks.{}: {e}", spec.name)))?;
        if !n.external && spec.stack() != name {
            return Err(Error::InvalidInput(format!(
                "networks.{}: a stack's network carries the label {}={name}",
                spec.name,
                crate::store::service::STACK_LABEL
            )));
        }
        if out.iter().any(|o| o.spec.name == spec.name) {
            return Err(Error::InvalidInput(format!(
                "networks.{}: named twice",
                spec.name
            )));
        }
        out.push(StackNetwork {
            spec,
            external: n.external,
        });
    }
    Ok(out)
}

/// The most secrets and configs one stack request may carry, and their most bytes in
/// all (sealed, they double in size; the whole entry must fit a Raft message).
const MAX_STACK_SECRETS: usize = 256;
const MAX_STACK_SECRET_BYTES: usize = 4 * 1024 * 1024;

/// The secrets and configs of a request, checked: bounded, valid, named once; a
/// stack's own carry its label.
fn stack_secrets(name: &str, r: Vec<proto::StackSecret>) -> Result<Vec<proto::StackSecret>> {
    if r.len() > MAX_STACK_SECRETS {
        return Err(Error::InvalidInput(format!(
            "secrets: {} secrets and configs; a stack has at most {MAX_STACK_SECRETS}",
            r.len()
        )));
    }
    let total: usize = r.iter().map(|s| s.data.as_ref().map_or(0, Vec::len)).sum();
    if total > MAX_STACK_SECRET_BYTES {
        return Err(Error::InvalidInput(format!(
            "secrets: {total} bytes of secrets and configs; a stack has at most {MAX_STACK_SECRET_BYTES}"
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for s in &r {
        let kind = kind_of("secrets.kind", s.kind)?;
        let field = format!("{}.{}", kind.plural(), s.name);
        validate_name(kind, &s.name).map_err(|e| Error::InvalidInput(format!("{field}: {e}")))?;
        validate_labels(&s.labels).map_err(|e| Error::InvalidInput(format!("{field}: {e}")))?;
        match (&s.data, s.external) {
            (Some(d), false) => {
                validate_data(kind, d).map_err(|e| Error::InvalidInput(format!("{field}: {e}")))?
            }
            (None, true) => {}
            _ => {
                return Err(Error::InvalidInput(format!(
                    "{field}: a stack's own has a content, an external one none"
                )))
            }
        }
        if !s.external
            && s.labels
                .get(crate::store::service::STACK_LABEL)
                .map(String::as_str)
                != Some(name)
        {
            return Err(Error::InvalidInput(format!(
                "{field}: a stack's {kind} carries the label {}={name}",
                crate::store::service::STACK_LABEL
            )));
        }
        if !seen.insert((kind, s.name.clone())) {
            return Err(Error::InvalidInput(format!("{field}: named twice")));
        }
    }
    Ok(r)
}

/// New secrets, new contents, and every secret by kind and name as after the entry.
type SecretPlan = (
    Vec<Secret>,
    Vec<SecretUpdate>,
    BTreeMap<(Kind, String), Secret>,
);

/// What a deploy does to the stack's secrets and configs: the ones to make, the new
/// contents, and every one by name as it is after the entry (to resolve the services'
/// references to). Refuses an external one that is missing, and a name taken by one
/// that is not the stack's.
fn plan_secrets(
    st: &crate::store::State,
    dk: &crate::keys::DataKey,
    stack: &str,
    secrets: &[proto::StackSecret],
    now: u64,
) -> Result<SecretPlan> {
    let mut create = vec![];
    let mut update = vec![];
    let mut after = BTreeMap::new();
    for s in secrets {
        let kind = kind_of("secrets.kind", s.kind)?;
        let field = format!("{}.{}", kind.plural(), s.name);
        let stored = st.table(kind).values().find(|x| x.name == s.name);
        let data = s.data.as_deref().unwrap_or_default();
        let now_is = match (stored, s.external) {
            (None, true) => {
                return Err(Error::NotFound(format!(
                    "{field}: external {kind} {} not found",
                    s.name
                )))
            }
            (Some(x), true) => x.clone(),
            (Some(x), false) if x.stack() != stack => {
                return Err(Error::Conflict(format!(
                    "{field}: {kind} {} exists and is not of stack {stack}",
                    s.name
                )))
            }
            (Some(x), false) => {
                if x.current().digest == super::secrets::digest(dk, kind, data) {
                    x.clone()
                } else {
                    let v =
                        super::secrets::seal_version(dk, kind, x.current().version + 1, data, now)?;
                    let mut x = x.clone();
                    x.versions.push(v.clone());
                    update.push(SecretUpdate {
                        kind,
                        id: x.id.clone(),
                        version: v,
                    });
                    x
                }
            }
            (None, false) => {
                let x = Secret {
                    id: SecretId::random(),
                    kind,
                    name: s.name.clone(),
                    labels: s.labels.clone(),
                    versions: vec![super::secrets::seal_version(dk, kind, 1, data, now)?],
                    created_ms: now,
                    updated_ms: now,
                };
                create.push(x.clone());
                x
            }
        };
        after.insert((kind, s.name.clone()), now_is);
    }
    Ok((create, update, after))
}

/// `stack deploy`: the plan; applied unless `dry_run`.
pub async fn deploy(m: &Manager, r: proto::StackRequest) -> Result<proto::StackPlan> {
    crate::stack::check_name(&r.name)?;
    let nets = stack_networks(&r.name, r.networks)?;
    let stack_secrets = stack_secrets(&r.name, r.secrets)?;
    let mut specs: Vec<ServiceSpec> = r
        .services
        .into_iter()
        .map(ServiceSpec::try_from)
        .collect::<Result<_>>()
        .map_err(|e| Error::InvalidInput(format!("services: {e}")))?;
    if specs.is_empty() {
        return Err(Error::InvalidInput(
            "services: a stack has at least one service".into(),
        ));
    }
    let prefix = format!("{}_", r.name);
    for s in &specs {
        let short = s.name.strip_prefix(&prefix).unwrap_or(&s.name);
        s.validate()
            .map_err(|e| Error::InvalidInput(format!("services.{short}: {e}")))?;
        for d in &s.depends_on {
            if !specs.iter().any(|x| x.name == d.service) {
                return Err(Error::InvalidInput(format!(
                    "services.{short}.depends_on: {} is not a service of stack {}",
                    d.service, r.name
                )));
            }
        }
    }
    let now = now_ms();
    // The warnings given before a refusal go back with it.
    let mut early: Vec<String> = vec![];
    let planned = m.read(|st| -> Result<_> {
        let (mut net_items, mut warnings) = plan::plan_networks(st, &r.name, &nets)?;
        early.clone_from(&warnings);
        // The networks the deploy makes get their ids now; names resolve to them.
        let mut made: BTreeMap<String, Network> = BTreeMap::new();
        for (it, n) in net_items.iter().zip(&nets) {
            if it.action == Action::Create {
                let net = Network {
                    id: NetworkId::random(),
                    spec: n.spec.clone(),
                    created_ms: now,
                };
                made.insert(n.spec.name.clone(), net);
            }
        }
        let lookup = |name: &str| made.get(name).cloned().or_else(|| st.network_named(name));
        for s in specs.iter_mut() {
            let short = s.name.strip_prefix(&prefix).unwrap_or(&s.name).to_string();
            crate::store::network::resolve_attachments(&lookup, s)
                .map_err(|e| Error::InvalidInput(format!("services.{short}: {e}")))?;
        }
        let (create_secrets, update_secrets, after_secrets) =
            plan_secrets(st, m.data_key(), &r.name, &stack_secrets, now)?;
        for s in specs.iter_mut() {
            let short = s.name.strip_prefix(&prefix).unwrap_or(&s.name).to_string();
            for kind in [Kind::Secret, Kind::Config] {
                let lookup = |name: &str| {
                    after_secrets
                        .get(&(kind, name.to_string()))
                        .cloned()
                        .or_else(|| st.secret_named(kind, name).cloned())
                };
                crate::store::secret::resolve_refs(kind, &lookup, s.task.refs_mut(kind))
                    .map_err(|e| Error::InvalidInput(format!("services.{short}: {e}")))?;
            }
        }
        let items = plan::plan(st, &r.name, &specs, r.prune)?;
        let mut create = vec![];
        let mut update = vec![];
        let mut remove = vec![];
        for it in &items {
            let spec = specs.iter().find(|s| s.name == it.service);
            let old = st.services.values().find(|s| s.spec.name == it.service);
            match (it.action, spec, old) {
                (Action::Create, Some(spec), _) => create.push(Service {
                    id: ServiceId::random(),
                    spec: spec.clone(),
                    previous_spec: None,
                    version: 1,
                    created_ms: now,
                    updated_ms: now,
                    vip: String::new(),
                }),
                (Action::Update, Some(spec), Some(old)) => update.push(Service {
                    previous_spec: super::services::previous_spec(st, old, spec),
                    spec: spec.clone(),
                    version: old.version + 1,
                    updated_ms: now,
                    ..old.clone()
                }),
                (Action::Remove, _, Some(old)) => remove.push(old.id.clone()),
                _ => {}
            }
        }
        // With --prune, the stack's networks the files no longer name go too, unless a
        // service that stays is on them.
        let mut remove_networks = vec![];
        if r.prune {
            // Every spec that stays, previous specs included (a rollback puts them back).
            let after: Vec<&ServiceSpec> = st
                .services
                .values()
                .filter(|s| !remove.contains(&s.id))
                .flat_map(|s| std::iter::once(&s.spec).chain(&s.previous_spec))
                .chain(specs.iter())
                .collect();
            let keep: Vec<&str> = nets.iter().map(|n| n.spec.name.as_str()).collect();
            let (gone, w) = plan::networks_to_remove(st, &r.name, &keep, &after);
            warnings.extend(w);
            for n in gone {
                net_items.push(plan::NetworkItem {
                    network: n.spec.name.clone(),
                    action: Action::Remove,
                    external: false,
                });
                remove_networks.push(n.id);
            }
        }
        Ok((
            items,
            net_items,
            warnings,
            Command::DeployStack {
                create,
                update,
                remove,
                create_networks: made.into_values().collect(),
                remove_networks,
                create_secrets,
                update_secrets,
                remove_secrets: vec![],
            },
        ))
    });
    let (items, net_items, warnings, cmd) = planned.map_err(|e| e.with_warnings(&early))?;
    let secrets_change = matches!(
        &cmd,
        Command::DeployStack { create_secrets, update_secrets, .. }
            if !create_secrets.is_empty() || !update_secrets.is_empty()
    );
    let changes = items.iter().any(|i| i.action != Action::Unchanged)
        || net_items.iter().any(|i| i.action != Action::Unchanged)
        || secrets_change;
    let reply = stack_plan(&r.name, r.dry_run, items, net_items, warnings);
    if !r.dry_run && changes {
        m.propose_replying(cmd, &reply).await?;
    }
    Ok(reply)
}

/// `stack rm`: every service of the stack, then its networks (those no other service
/// is on), in one entry.
pub async fn remove(m: &Manager, name: &str) -> Result<proto::StackPlan> {
    let (items, ids, nets, warnings, secrets) = m.read(|st| {
        let olds: Vec<&Service> = plan::services_of(st, name).collect();
        let items: Vec<plan::Item> = olds
            .iter()
            .map(|s| plan::Item {
                service: s.spec.name.clone(),
                action: Action::Remove,
                changes: vec![],
                replaces_tasks: false,
            })
            .collect();
        let ids: Vec<ServiceId> = olds.iter().map(|s| s.id.clone()).collect();
        let after: Vec<&ServiceSpec> = st
            .services
            .values()
            .filter(|s| !ids.contains(&s.id))
            .flat_map(|s| std::iter::once(&s.spec).chain(&s.previous_spec))
            .collect();
        let (nets, warnings) = plan::networks_to_remove(st, name, &[], &after);
        // The stack's own secrets and configs no service that stays uses.
        let staying: Vec<&Service> = st
            .services
            .values()
            .filter(|s| !ids.contains(&s.id))
            .collect();
        let secrets: Vec<(Kind, SecretId)> = [Kind::Secret, Kind::Config]
            .into_iter()
            .flat_map(|k| st.table(k).values().map(move |s| (k, s)))
            .filter(|(k, s)| {
                s.stack() == name
                    && crate::store::State::secret_users(*k, &s.id, staying.iter().copied())
                        .is_empty()
            })
            .map(|(k, s)| (k, s.id.clone()))
            .collect();
        (items, ids, nets, warnings, secrets)
    });
    if ids.is_empty() && nets.is_empty() && secrets.is_empty() {
        return Err(Error::NotFound(format!("stack {name} not found")));
    }
    let net_items = nets
        .iter()
        .map(|n| plan::NetworkItem {
            network: n.spec.name.clone(),
            action: Action::Remove,
            external: false,
        })
        .collect();
    let reply = stack_plan(name, false, items, net_items, warnings);
    let cmd = Command::DeployStack {
        create: vec![],
        update: vec![],
        remove: ids,
        create_networks: vec![],
        remove_networks: nets.into_iter().map(|n| n.id).collect(),
        create_secrets: vec![],
        update_secrets: vec![],
        remove_secrets: secrets,
    };
    m.propose_replying(cmd, &reply).await?;
    Ok(reply)
}
