//! The human tables of `service ls`, `ps` and `inspect --pretty` (also used by `stack
//! services` and `stack ps`).

use super::super::print_table;
use super::view::{ports_text, Inspected, Listed, Summary};
use crate::store::service::ServiceMode;
use crate::store::TaskState;

fn id_prefix(s: &str) -> &str {
    &s[..s.len().min(12)]
}

/// Prints services (`service ls`) as a table.
pub fn print_services(v: &[Summary]) {
    let rows: Vec<Vec<String>> = v
        .iter()
        .map(|s| {
            vec![
                id_prefix(&s.summary.id).to_string(),
                s.summary.name.clone(),
                s.mode.name().to_string(),
                s.replicas(),
                s.summary.image.clone(),
                s.ports_text(),
            ]
        })
        .collect();
    print_table(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"], &rows);
}

/// `service inspect --pretty`: one service as text.
pub fn inspect_text(v: &Inspected) -> String {
    let svc = &v.service;
    let mode_text = match &svc.spec.mode {
        ServiceMode::Replicated { replicas } => format!("replicated, {replicas} replicas"),
        ServiceMode::ReplicatedJob {
            max_concurrent,
            total_completions,
        } => format!("replicated job, {total_completions} completions, {max_concurrent} at a time"),
        other => other.name().to_string(),
    };
    let digest = match &v.image_pin {
        None => "not pinned yet (pinned when the first task runs)".to_string(),
        Some(p) => p.id.clone(),
    };
    let mut rows = vec![
        ("ID", svc.id.0.clone()),
        ("Name", svc.spec.name.clone()),
        ("Mode", mode_text),
        (
            "Tasks",
            format!(
                "{} running of {} desired",
                v.status.running, v.status.desired
            ),
        ),
        ("Image", svc.spec.task.container.image.clone()),
        ("Image digest", digest),
    ];
    if let Some(p) = v.image_pin.as_ref().filter(|p| !p.repo_digest.is_empty()) {
        rows.push(("Registry digest", p.repo_digest.clone()));
    }
    rows.push(("Version", svc.version.to_string()));
    if !svc.vip.is_empty() {
        rows.push(("VIP", svc.vip.clone()));
    }
    let ports = ports_text(&svc.spec);
    if !ports.is_empty() {
        rows.push(("Ports", ports));
    }
    if !v.networks.is_empty() {
        let nets: Vec<String> = v
            .networks
            .iter()
            .map(|n| match n.aliases.is_empty() {
                true => n.name.clone(),
                false => format!("{} (aliases {})", n.name, n.aliases.join(", ")),
            })
            .collect();
        rows.push(("Networks", nets.join(", ")));
    }
    if let Some(u) = &v.update_status {
        rows.push(("Update status", format!("{}: {}", u.state, u.message)));
    }
    rows.iter()
        .map(|(k, v)| format!("{:<17}{v}\n", format!("{k}:")))
        .collect()
}

/// Prints tasks (`service ps`) as a table.
pub fn print_tasks(tasks: &[Listed], no_trunc: bool) {
    let short = |s: &str| -> String {
        if no_trunc {
            s.to_string()
        } else {
            id_prefix(s).to_string()
        }
    };
    let mut prev_slot = None;
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|l| {
            let t = &l.task;
            let slot_key = Some((&t.service_name, t.slot, t.node_id));
            let name = if t.slot > 0 {
                format!("{}.{}", t.service_name, t.slot)
            } else {
                format!("{}.{}", t.service_name, short(&l.node_id()))
            };
            let name = if slot_key == prev_slot {
                format!(" \\_ {name}")
            } else {
                name
            };
            prev_slot = slot_key;
            let (err, msg) = (&t.status.err, &t.status.message);
            vec![
                short(&t.id.0),
                name,
                t.spec.container.image.clone(),
                l.node.clone(),
                t.desired_state.as_str().to_string(),
                t.status.state.as_str().to_string(),
                if err.is_empty() && t.status.state == TaskState::Pending {
                    msg.clone()
                } else {
                    err.clone()
                },
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "NAME",
            "IMAGE",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
        ],
        &rows,
    );
}
