//! `orc stack deploy|ls|services|ps|rm`.
//!
//! `deploy` loads the compose files here, on the operator's machine (interpolation
//! uses this shell's variables and a `.env` beside the first file), prints a warning
//! per key orc does not honour, and sends the specs to the leader, which plans and
//! applies the whole stack in one Raft entry. The plan comes back and is printed:
//! the networks made first, one line per service created, updated (with the fields that
//! change), removed or unchanged, then the networks removed. `--dry-run` stops there. Otherwise the command follows each created or
//! updated service, dependencies first, until it converges (`-d` returns at once).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::service::{
    client, print_services, print_tasks, view, wait_converged, wait_update, Listed, Summary,
};
use super::{print_table, Format};
use crate::error::{Error, Result};
use crate::proto;

/// `orc stack ...`.
#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Deploy a new stack or update an existing one from compose files.
    Deploy(DeployArgs),
    /// List stacks.
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// List the services of a stack.
    Services {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Stack name.
        name: String,
    },
    /// List the tasks of a stack.
    Ps {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Stack name.
        name: String,
    },
    /// Remove stacks.
    #[command(alias = "remove", alias = "down")]
    Rm {
        /// Stack names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// `orc stack deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Compose file; repeat to merge several (later files override earlier ones).
    #[arg(short = 'c', long = "compose-file", required = true)]
    pub files: Vec<PathBuf>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove services of the stack that the files no longer define.
    #[arg(long)]
    pub prune: bool,
    /// Return once the stack is deployed, without waiting for its services.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Output format of the plan.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Stack name.
    pub name: String,
}

/// Loads the files of `a` with this process's environment.
pub fn load(a: &DeployArgs) -> Result<crate::stack::Stack> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let read = |p: &Path| std::fs::read_to_string(p);
    let (stack, warnings) = crate::stack::load_reporting(&a.files, &a.name, &env, &read);
    if stack.is_err() {
        // The warnings may explain the refusal (`the variable PGDATA is not set`).
        for w in &warnings {
            eprintln!("warning: {w}");
        }
    }
    stack
}

/// The word of a plan's action (`create`, `update`, `unchanged`, `remove`), as in JSON.
fn action_word(item: &proto::PlanItem) -> &'static str {
    match proto::PlanAction::try_from(item.action) {
        Ok(proto::PlanAction::Create) => "create",
        Ok(proto::PlanAction::Update) => "update",
        Ok(proto::PlanAction::Unchanged) => "unchanged",
        Ok(proto::PlanAction::Remove) => "remove",
        Ok(proto::PlanAction::Unspecified) | Err(_) => "",
    }
}

/// The word of a plan action's value.
fn action_of(action: i32) -> &'static str {
    action_word(&proto::PlanItem {
        action,
        ..Default::default()
    })
}

/// A plan as `stack deploy --format json` prints it: `networks` are
/// `{network, action, external}`, in the order they are made (created first, removed
/// last).
fn plan_json(plan: &proto::StackPlan) -> Value {
    json!({
        "stack": plan.stack,
        "dry_run": plan.dry_run,
        "actions": plan.actions.iter().map(|i| json!({
            "service": i.service,
            "action": action_word(i),
            "changes": i.changes,
            "replaces_tasks": i.replaces_tasks,
        })).collect::<Vec<_>>(),
        "networks": plan.networks.iter().map(|n| json!({
            "network": n.network,
            "action": action_of(n.action),
            "external": n.external,
        })).collect::<Vec<_>>(),
    })
}

/// One line of a plan's network, as printed.
pub fn network_line(n: &proto::PlanNetwork, dry_run: bool) -> String {
    let verb = match (action_of(n.action), dry_run) {
        ("create", false) => "Creating network",
        ("remove", false) => "Removing network",
        ("create", true) => "Would create network",
        ("remove", true) => "Would remove network",
        _ if n.external => "External network",
        _ => "Existing network",
    };
    format!("{verb} {}", n.network)
}

/// The plan's lines: networks made, services, networks removed.
fn print_plan(plan: &proto::StackPlan, dry_run: bool) {
    let removed = |n: &&proto::PlanNetwork| n.action == proto::PlanAction::Remove as i32;
    for n in plan.networks.iter().filter(|n| !removed(n)) {
        println!("{}", network_line(n, dry_run));
    }
    for it in &plan.actions {
        println!("{}", plan_line(it, dry_run));
    }
    for n in plan.networks.iter().filter(removed) {
        println!("{}", network_line(n, dry_run));
    }
}

/// One line of a plan, as printed.
pub fn plan_line(item: &proto::PlanItem, dry_run: bool) -> String {
    let service = item.service.as_str();
    let action = action_word(item);
    let verb = match (action, dry_run) {
        ("create", false) => "Creating service",
        ("update", false) => "Updating service",
        ("remove", false) => "Removing service",
        ("unchanged", _) => "Unchanged service",
        ("create", true) => "Would create service",
        ("update", true) => "Would update service",
        ("remove", true) => "Would remove service",
        _ => action,
    };
    let mut line = format!("{verb} {service}");
    if action == "update" {
        line.push_str(&format!(" (changes: {})", item.changes.join(", ")));
        if !item.replaces_tasks {
            line.push_str(" [no task replaced]");
        }
    }
    line
}

/// Dependencies first: the created or updated services in an order where each comes
/// after the services it depends on.
fn follow_order(services: &[crate::store::ServiceSpec], names: &[String]) -> Vec<String> {
    let mut done: Vec<String> = vec![];
    let mut left: Vec<&crate::store::ServiceSpec> = services.iter().collect();
    while !left.is_empty() {
        let before = left.len();
        left.retain(|s| {
            let ready = s.depends_on.iter().all(|d| {
                done.contains(&d.service) || !services.iter().any(|x| x.name == d.service)
            });
            if ready {
                done.push(s.name.clone());
            }
            !ready
        });
        if left.len() == before {
            done.extend(left.iter().map(|s| s.name.clone()));
            break;
        }
    }
    done.into_iter().filter(|n| names.contains(n)).collect()
}

async fn list_services(socket: &Path) -> Result<Vec<Summary>> {
    view::list(&mut client(socket).await?).await
}

async fn stack_services(socket: &Path, name: &str) -> Result<Vec<Summary>> {
    let v: Vec<Summary> = list_services(socket)
        .await?
        .into_iter()
        .filter(|s| s.summary.stack == name)
        .collect();
    if v.is_empty() {
        return Err(Error::NotFound(format!("stack {name} not found")));
    }
    Ok(v)
}

/// Runs a stack command.
pub async fn run(socket: &Path, c: StackCommand) -> Result<()> {
    match c {
        StackCommand::Deploy(a) => deploy(socket, a).await,
        StackCommand::Ls { format } => {
            let mut stacks: BTreeMap<String, u64> = BTreeMap::new();
            for s in list_services(socket).await? {
                if !s.summary.stack.is_empty() {
                    *stacks.entry(s.summary.stack).or_default() += 1;
                }
            }
            if format == Format::Json {
                let v: Vec<Value> = stacks
                    .iter()
                    .map(|(name, n)| json!({"name": name, "services": n}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = stacks
                .iter()
                .map(|(name, n)| vec![name.clone(), n.to_string()])
                .collect();
            print_table(&["NAME", "SERVICES"], &rows);
            Ok(())
        }
        StackCommand::Services { format, name } => {
            let v = stack_services(socket, &name).await?;
            if format == Format::Json {
                let json: Vec<_> = v.iter().map(Summary::to_json).collect();
                println!("{}", serde_json::to_string_pretty(&json)?);
            } else {
                print_services(&v);
            }
            Ok(())
        }
        StackCommand::Ps { format, name } => {
            let mut c = client(socket).await?;
            let mut tasks = vec![];
            for s in stack_services(socket, &name).await? {
                tasks.extend(view::tasks(&mut c, &s.summary.id).await?);
            }
            if format == Format::Json {
                let json: Vec<_> = tasks.iter().map(Listed::to_json).collect();
                println!("{}", serde_json::to_string_pretty(&json)?);
            } else {
                print_tasks(&tasks, false);
            }
            Ok(())
        }
        StackCommand::Rm { names } => {
            let mut c = client(socket).await?;
            let mut missing = vec![];
            for name in names {
                let r = c
                    .remove_stack(proto::StackRequest {
                        name: name.clone(),
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(r) => {
                        let plan = r.into_inner();
                        for w in &plan.warnings {
                            eprintln!("warning: {w}");
                        }
                        print_plan(&plan, false);
                    }
                    Err(e) if e.code() == tonic::Code::NotFound => missing.push(name),
                    Err(e) => return Err(e.into()),
                }
            }
            if !missing.is_empty() {
                return Err(Error::NotFound(format!(
                    "stack {} not found",
                    missing.join(", ")
                )));
            }
            Ok(())
        }
    }
}

async fn deploy(socket: &Path, a: DeployArgs) -> Result<()> {
    let stack = load(&a)?;
    for w in &stack.warnings {
        eprintln!("warning: {w}");
    }
    let plan = client(socket)
        .await?
        .deploy_stack(proto::StackRequest {
            name: stack.name.clone(),
            services: stack.services.iter().cloned().map(Into::into).collect(),
            networks: stack
                .networks
                .iter()
                .map(|n| proto::StackNetwork {
                    spec: Some(n.spec.clone().into()),
                    external: n.external,
                })
                .collect(),
            prune: a.prune,
            dry_run: a.dry_run,
            secrets: stack
                .secrets
                .iter()
                .map(|s| proto::StackSecret {
                    kind: proto::SecretKind::from(s.kind).into(),
                    name: s.name.clone(),
                    external: s.external,
                    data: s.data.as_ref().map(|d| d.0.clone()),
                    labels: s.labels.clone(),
                })
                .collect(),
        })
        .await
        .map_err(|s| {
            // a refusal's server-side warnings are printed before its error line
            let (warnings, e) = Error::from(s).split_warnings();
            for w in warnings {
                eprintln!("warning: {w}");
            }
            e
        })?
        .into_inner();
    let items = &plan.actions;
    if a.format == Format::Json {
        let mut out = plan_json(&plan);
        let mut warnings = stack.warnings.clone();
        warnings.extend(plan.warnings.iter().cloned());
        out["warnings"] = json!(warnings);
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for w in &plan.warnings {
            eprintln!("warning: {w}");
        }
        if a.dry_run {
            println!("Plan for stack {} (dry run: nothing changed):", stack.name);
        }
        print_plan(&plan, a.dry_run);
    }
    if a.dry_run || a.detach {
        return Ok(());
    }
    let is = |i: &proto::PlanItem, a: proto::PlanAction| i.action == a as i32;
    let changed: Vec<String> = items
        .iter()
        .filter(|i| is(i, proto::PlanAction::Create) || is(i, proto::PlanAction::Update))
        .map(|i| i.service.clone())
        .collect();
    let replaced: Vec<String> = items
        .iter()
        .filter(|i| is(i, proto::PlanAction::Update) && i.replaces_tasks)
        .map(|i| i.service.clone())
        .collect();
    let mut c = client(socket).await?;
    for name in follow_order(&stack.services, &changed) {
        println!("{name}:");
        if replaced.contains(&name) {
            let version = view::inspect(&mut c, &name).await?.service.version;
            wait_update(socket, &name, version, false).await?;
        } else {
            wait_converged(socket, &name).await?;
        }
    }
    Ok(())
}
