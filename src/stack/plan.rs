//! What a stack deploy changes: each network created or left as it is, each service
//! created, updated (with the fields that change), left alone, or removed, and the
//! stack's networks no longer used removed. Pure functions of the state and the stack,
//! used both by `--dry-run` and by the deploy itself.

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::stack::StackNetwork;
use crate::store::service::{ingress_port_conflict, STACK_LABEL};
use crate::store::{Network, NetworkSpec, Service, ServiceSpec, State};

/// What happens to one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A new service.
    Create,
    /// A new spec for an existing service.
    Update,
    /// The same spec: nothing happens.
    Unchanged,
    /// In the stack but not in the files (`--prune`).
    Remove,
}

/// One line of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// The full service name.
    pub service: String,
    /// What happens.
    pub action: Action,
    /// For an update: the fields that change (`task.container.image`, ...).
    pub changes: Vec<String>,
    /// For an update: true when tasks are replaced (a rolling update).
    pub replaces_tasks: bool,
}

/// The services of stack `name` in `state`.
pub fn services_of<'a>(state: &'a State, name: &'a str) -> impl Iterator<Item = &'a Service> {
    state
        .services
        .values()
        .filter(move |s| s.spec.labels.get(STACK_LABEL).map(String::as_str) == Some(name))
}

/// The plan for deploying `specs` as stack `name`. Refuses (changing nothing) a spec
/// outside the stack's names, a name taken by a service of another stack or of none,
/// a mode change, and published ports taken by services outside the stack.
pub fn plan(state: &State, name: &str, specs: &[ServiceSpec], prune: bool) -> Result<Vec<Item>> {
    let prefix = format!("{name}_");
    for s in specs {
        if !s.name.starts_with(&prefix)
            || s.labels.get(STACK_LABEL).map(String::as_str) != Some(name)
        {
            return Err(Error::InvalidInput(format!(
                "service {} is not named {prefix}... with the label {STACK_LABEL}={name}",
                s.name
            )));
        }
    }
    let mut items = vec![];
    for s in specs {
        let existing = state.services.values().find(|x| x.spec.name == s.name);
        match existing {
            None => items.push(Item {
                service: s.name.clone(),
                action: Action::Create,
                changes: vec![],
                replaces_tasks: false,
            }),
            Some(old) => {
                let owner = old.spec.labels.get(STACK_LABEL).map(String::as_str);
                if owner != Some(name) {
                    return Err(Error::Conflict(format!(
                        "service {} already exists and is not part of stack {name}{}",
                        s.name,
                        owner
                            .map(|o| format!(" (it is in stack {o})"))
                            .unwrap_or_default()
                    )));
                }
                if old.spec.mode.name() != s.mode.name() {
                    return Err(Error::InvalidInput(format!(
                        "services.{}: deploy.mode: a {} service cannot become {} (remove it first)",
                        &s.name[prefix.len()..],
                        old.spec.mode.name(),
                        s.mode.name()
                    )));
                }
                if &old.spec == s {
                    items.push(Item {
                        service: s.name.clone(),
                        action: Action::Unchanged,
                        changes: vec![],
                        replaces_tasks: false,
                    });
                } else {
                    let a = serde_json::to_value(&old.spec)?;
                    let b = serde_json::to_value(s)?;
                    let mut changes = vec![];
                    diff(&a, &b, &mut String::new(), &mut changes);
                    items.push(Item {
                        service: s.name.clone(),
                        action: Action::Update,
                        changes,
                        replaces_tasks: crate::store::service::starts_update(&old.spec, s),
                    });
                }
            }
        }
    }
    if prune {
        for old in services_of(state, name) {
            if !specs.iter().any(|s| s.name == old.spec.name) {
                items.push(Item {
                    service: old.spec.name.clone(),
                    action: Action::Remove,
                    changes: vec![],
                    replaces_tasks: false,
                });
            }
        }
    }
    check_ports(state, name, specs, prune)?;
    Ok(items)
}

/// Published ingress ports of `specs` (stack `name`) taken by services that stay: those
/// of other stacks or of none, and, without `prune`, this stack's services the files
/// no longer name. The rule is [`ingress_port_conflict`]; the messages name the file's
/// service.
fn check_ports(state: &State, name: &str, specs: &[ServiceSpec], prune: bool) -> Result<()> {
    let prefix = format!("{name}_");
    // published ports taken by services that stay and are not this stack's
    let elsewhere: Vec<&Service> = state
        .services
        .values()
        .filter(|x| x.spec.labels.get(STACK_LABEL).map(String::as_str) != Some(name))
        .collect();
    for s in specs {
        if let Some(c) = ingress_port_conflict(s, &elsewhere) {
            return Err(Error::Conflict(format!(
                "services.{}.ports: port {}/{} is already published by service {}",
                &s.name[prefix.len()..],
                c.port.published,
                c.port.protocol.as_str(),
                c.holder.spec.name
            )));
        }
    }
    // services of this stack that stay (not pruned, not redeployed) keep their ports
    if !prune {
        let kept: Vec<&Service> = services_of(state, name)
            .filter(|o| !specs.iter().any(|s| s.name == o.spec.name))
            .collect();
        for old in kept {
            for s in specs {
                let Some(c) = ingress_port_conflict(s, &[old]) else {
                    continue;
                };
                return Err(Error::Conflict(format!(
                    "services.{}.ports: port {}/{} is already published by service {} (deploy with --prune to remove it)",
                    &s.name[prefix.len()..],
                    c.port.published,
                    c.port.protocol.as_str(),
                    c.holder.spec.name
                )));
            }
        }
    }
    Ok(())
}

/// The paths at which `a` and `b` differ (arrays compared whole).
fn diff(a: &Value, b: &Value, path: &mut String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                diff(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    path,
                    out,
                );
                path.truncate(len);
            }
        }
        _ if a != b => out.push(path.clone()),
        _ => {}
    }
}

/// One network of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkItem {
    /// The network's name in the cluster.
    pub network: String,
    /// Created, left as it is (`Unchanged`: it exists, or is external), or removed.
    pub action: Action,
    /// External: must exist, never made nor removed by the stack.
    pub external: bool,
}

/// The networks a deploy of stack `name` needs: each one missing is created, an
/// existing one is left as it is (with a warning naming it when its options differ
/// from the file's), and a missing external one is refused, naming it.
pub fn plan_networks(
    state: &State,
    name: &str,
    nets: &[StackNetwork],
) -> Result<(Vec<NetworkItem>, Vec<String>)> {
    let mut items = vec![];
    let mut warnings = vec![];
    for n in nets {
        let existing = state
            .networks
            .values()
            .find(|x| x.spec.name == n.spec.name)
            .map(|x| &x.spec);
        let action = match (existing, n.external) {
            (None, true) => {
                return Err(Error::InvalidInput(format!(
                "networks: external network {} not found (create it first: orc network create {})",
                n.spec.name, n.spec.name
            )))
            }
            (None, false) => Action::Create,
            (Some(old), false) => {
                let differ = option_changes(old, &n.spec);
                if !differ.is_empty() {
                    warnings.push(format!(
                        "network {} exists with other options ({}): left as it is{}",
                        n.spec.name,
                        differ.join(", "),
                        match old.stack() {
                            s if s == name => " (remove the stack to make it again)",
                            _ => "",
                        }
                    ));
                }
                Action::Unchanged
            }
            (Some(_), true) => Action::Unchanged,
        };
        items.push(NetworkItem {
            network: n.spec.name.clone(),
            action,
            external: n.external,
        });
    }
    Ok((items, warnings))
}

/// The options that differ between a network in the cluster and a stack file's, as
/// `field: CLUSTER → FILE`.
fn option_changes(old: &NetworkSpec, new: &NetworkSpec) -> Vec<String> {
    let mut out = vec![];
    if old.driver != new.driver {
        out.push(format!("driver: {} → {}", old.driver, new.driver));
    }
    for (field, a, b) in [
        ("internal", old.internal, new.internal),
        ("attachable", old.attachable, new.attachable),
        ("encrypted", old.encrypted, new.encrypted),
    ] {
        if a != b {
            out.push(format!("{field}: {a} → {b}"));
        }
    }
    if old.labels != new.labels {
        out.push("labels".into());
    }
    out
}

/// The networks of stack `name` (by its label) to remove: those not in `keep` that no
/// spec of `after` names (every spec once the change is made, networks by id: the
/// services' and their previous specs, which a rollback would put back). A network of
/// the stack that another service still uses stays, with a warning.
pub fn networks_to_remove(
    state: &State,
    name: &str,
    keep: &[&str],
    after: &[&ServiceSpec],
) -> (Vec<Network>, Vec<String>) {
    let mut out = vec![];
    let mut warnings = vec![];
    for n in state.networks.values() {
        if n.spec.stack() != name || keep.contains(&n.spec.name.as_str()) {
            continue;
        }
        let mut users: Vec<&str> = after
            .iter()
            .filter(|s| s.networks.iter().any(|a| a.network == n.id))
            .map(|s| s.name.as_str())
            .collect();
        users.sort();
        if users.is_empty() {
            out.push(n.clone());
        } else {
            warnings.push(format!(
                "network {} is left: still in use by {}",
                n.spec.name,
                users.join(", ")
            ));
        }
    }
    out.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    (out, warnings)
}
