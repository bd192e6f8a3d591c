//! Control API operations on stacks, run on the leader: the plan of a deploy (see
//! [`crate::stack::plan`]) and, unless it is a dry run, one Raft entry that applies
//! it whole.

use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::proto;
use crate::stack::plan::{self, Action};
use crate::store::{Command, Service, ServiceId, ServiceSpec};
use crate::units::now_ms;

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

/// The plan's answer.
fn stack_plan(name: &str, dry_run: bool, items: Vec<plan::Item>) -> proto::StackPlan {
    proto::StackPlan {
        stack: name.to_string(),
        dry_run,
        actions: items.into_iter().map(Into::into).collect(),
    }
}

/// `stack deploy`: the plan; applied unless `dry_run`.
pub async fn deploy(m: &Manager, r: proto::StackRequest) -> Result<proto::StackPlan> {
    crate::stack::check_name(&r.name)?;
    let specs: Vec<ServiceSpec> = r
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
    let (items, cmd) = m.read(|st| -> Result<_> {
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
        Ok((
            items,
            Command::DeployStack {
                create,
                update,
                remove,
                create_networks: vec![],
                remove_networks: vec![],
            },
        ))
    })?;
    let changes = items.iter().any(|i| i.action != Action::Unchanged);
    let reply = stack_plan(&r.name, r.dry_run, items);
    if !r.dry_run && changes {
        m.propose_replying(cmd, &reply).await?;
    }
    Ok(reply)
}

/// `stack rm`: every service of the stack, in one entry.
pub async fn remove(m: &Manager, name: &str) -> Result<proto::StackPlan> {
    let (items, ids) = m.read(|st| {
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
        (items, olds.iter().map(|s| s.id.clone()).collect::<Vec<_>>())
    });
    if ids.is_empty() {
        return Err(Error::NotFound(format!("stack {name} not found")));
    }
    let reply = stack_plan(name, false, items);
    let cmd = Command::DeployStack {
        create: vec![],
        update: vec![],
        remove: ids,
        create_networks: vec![],
        remove_networks: vec![],
    };
    m.propose_replying(cmd, &reply).await?;
    Ok(reply)
}
