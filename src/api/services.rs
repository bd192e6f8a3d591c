//! Control API operations on services, run on the leader. Specs are validated here,
//! at the door: nothing invalid is proposed.
//!
//! `previous_spec` is what `service rollback` (or an update's failure action) goes back
//! to: an update that replaces tasks sets it to the spec it replaces; a change that
//! replaces none (a scale, a label) sets it too, as in Swarm, unless an update is under
//! way or paused, whose rollback must still find the spec from before it.

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::proto;
use crate::store::service::{starts_update, ProxyProtocol, PublishMode, ServiceMode};
use crate::store::{Command, Node, Service, ServiceId, ServiceSpec, State, Task, TaskState};
use crate::units::now_ms;

fn parse_spec(spec_json: &str) -> Result<ServiceSpec> {
    let spec: ServiceSpec = serde_json::from_str(spec_json)
        .map_err(|e| Error::InvalidInput(format!("service spec: {e}")))?;
    spec.validate()?;
    Ok(spec)
}

/// Published ports already taken by other services (ingress ports are cluster-wide).
fn check_port_conflicts(
    state: &State,
    spec: &ServiceSpec,
    except: Option<&ServiceId>,
) -> Result<()> {
    for p in spec
        .ports
        .iter()
        .filter(|p| p.published != 0 && p.mode == PublishMode::Ingress)
    {
        for other in state.services.values() {
            if Some(&other.id) == except {
                continue;
            }
            if other.spec.ports.iter().any(|q| {
                q.published == p.published
                    && q.protocol == p.protocol
                    && q.mode == PublishMode::Ingress
            }) {
                return Err(Error::Conflict(format!(
                    "--publish: port {}/{} is already published by service {}",
                    p.published,
                    p.protocol.as_str(),
                    other.spec.name
                )));
            }
        }
    }
    Ok(())
}

/// The previous spec of `old` once `spec` replaces its spec (see the module doc).
pub(crate) fn previous_spec(
    state: &State,
    old: &Service,
    spec: &ServiceSpec,
) -> Option<ServiceSpec> {
    let under_way = state
        .update_status
        .get(&old.id)
        .is_some_and(|u| !u.state.is_done());
    if under_way && !starts_update(&old.spec, spec) {
        old.previous_spec.clone()
    } else {
        Some(old.spec.clone())
    }
}

fn service_ref(s: &Service) -> proto::ServiceRef {
    proto::ServiceRef {
        service: s.spec.name.clone(),
        id: s.id.0.clone(),
        version: s.version,
    }
}

/// `service create`.
pub async fn create(m: &Manager, spec_json: &str) -> Result<proto::ServiceRef> {
    let spec = parse_spec(spec_json)?;
    m.read(|s| {
        if s.services.values().any(|x| x.spec.name == spec.name) {
            return Err(Error::Conflict(format!(
                "service {} already exists",
                spec.name
            )));
        }
        check_port_conflicts(s, &spec, None)
    })?;
    let now = now_ms();
    let service = Service {
        id: ServiceId::random(),
        spec,
        previous_spec: None,
        version: 1,
        created_ms: now,
        updated_ms: now,
        vip: String::new(),
    };
    let r = service_ref(&service);
    m.propose_replying(Command::CreateService { service }, &r)
        .await?;
    Ok(r)
}

/// `service update`: a whole new spec for an existing service.
pub async fn update(m: &Manager, what: &str, spec_json: &str) -> Result<proto::ServiceRef> {
    let spec = parse_spec(spec_json)?;
    let (old, previous) = m.read(|s| -> Result<(Service, Option<ServiceSpec>)> {
        let old = s.find_service(what)?.clone();
        check_port_conflicts(s, &spec, Some(&old.id))?;
        let previous = previous_spec(s, &old, &spec);
        Ok((old, previous))
    })?;
    if spec.name != old.spec.name {
        return Err(Error::InvalidInput(format!(
            "--name: a service cannot be renamed ({} to {})",
            old.spec.name, spec.name
        )));
    }
    if spec.mode.name() != old.spec.mode.name() {
        return Err(Error::InvalidInput(format!(
            "--mode: a {} service cannot become {}",
            old.spec.mode.name(),
            spec.mode.name()
        )));
    }
    let service = Service {
        previous_spec: previous,
        spec,
        version: old.version + 1,
        updated_ms: now_ms(),
        ..old
    };
    let r = service_ref(&service);
    m.propose_replying(Command::UpdateService { service }, &r)
        .await?;
    Ok(r)
}

/// `service scale NAME=N`.
pub async fn scale(m: &Manager, what: &str, replicas: u64) -> Result<proto::ServiceRef> {
    let (old, under_way) = m.read(|s| -> Result<(Service, bool)> {
        let old = s.find_service(what)?.clone();
        let under_way = s
            .update_status
            .get(&old.id)
            .is_some_and(|u| !u.state.is_done());
        Ok((old, under_way))
    })?;
    let mut spec = old.spec.clone();
    match &mut spec.mode {
        ServiceMode::Replicated { replicas: r } => *r = replicas,
        ServiceMode::ReplicatedJob {
            total_completions, ..
        } => *total_completions = replicas,
        _ => {
            return Err(Error::InvalidInput(format!(
                "scale: service {} is {}: only replicated services can be scaled",
                old.spec.name,
                old.spec.mode.name()
            )))
        }
    }
    let previous_spec = if under_way {
        old.previous_spec.clone()
    } else {
        Some(old.spec.clone())
    };
    let service = Service {
        spec,
        version: old.version + 1,
        previous_spec,
        updated_ms: now_ms(),
        ..old
    };
    let r = service_ref(&service);
    m.propose_replying(Command::UpdateService { service }, &r)
        .await?;
    Ok(r)
}

/// `service rollback`: the previous spec back, under the rollback settings.
pub async fn rollback(m: &Manager, what: &str) -> Result<proto::ServiceRef> {
    let old = m.read(|s| s.find_service(what).cloned())?;
    if old.previous_spec.is_none() {
        return Err(Error::Conflict(format!(
            "service {} has no previous spec to roll back to",
            old.spec.name
        )));
    }
    let r = proto::ServiceRef {
        service: old.spec.name.clone(),
        id: old.id.0.clone(),
        version: old.version + 1,
    };
    let cmd = Command::RollbackService {
        id: old.id,
        version: old.version,
        message: "rollback requested by the operator".into(),
        now_ms: now_ms(),
    };
    m.propose_replying(cmd, &r).await?;
    Ok(r)
}

/// `service rm`.
pub async fn remove(m: &Manager, what: &str) -> Result<()> {
    let id = m.read(|s| s.find_service(what).map(|s| s.id.clone()))?;
    m.propose_replying(Command::RemoveService { id }, &proto::Empty {})
        .await?;
    Ok(())
}

/// Whether a global service may run on a node, by the live facts this manager heard
/// (the leader hears them all).
fn eligible_fn(m: &Manager) -> impl Fn(&Service, &Node) -> bool {
    let facts = crate::scheduler::live_facts(m);
    move |svc: &Service, node: &Node| crate::scheduler::eligible(svc, node, facts.get(&node.id))
}

/// Running, desired and completed task counts of a service. A global service wants a
/// task on every node it may run on (`eligible`, the orchestrator's rule), counted
/// before the orchestrator has created them, so that `0/3` reads as not converged.
pub fn counts(
    state: &State,
    s: &Service,
    eligible: &dyn Fn(&Service, &Node) -> bool,
) -> (usize, usize, usize) {
    let tasks: Vec<&Task> = state.tasks_of(&s.id).collect();
    let running = tasks
        .iter()
        .filter(|t| t.status.state == TaskState::Running && t.desired_state <= TaskState::Running)
        .count();
    let completed = tasks
        .iter()
        .filter(|t| t.status.state == TaskState::Complete && t.spec_version == s.version)
        .count();
    let desired = match &s.spec.mode {
        ServiceMode::Replicated { replicas } => *replicas as usize,
        ServiceMode::ReplicatedJob {
            total_completions, ..
        } => *total_completions as usize,
        ServiceMode::Global | ServiceMode::GlobalJob => {
            let live = tasks
                .iter()
                .filter(|t| {
                    t.desired_state <= TaskState::Running && t.status.state <= TaskState::Complete
                })
                .count();
            let nodes = state.nodes.values().filter(|n| eligible(s, n)).count();
            live.max(nodes)
        }
    };
    (running, desired, completed)
}

/// The ports column: `*:8080->80/tcp`, host mode `8080->80/tcp (host)`.
pub fn ports_text(spec: &ServiceSpec) -> String {
    spec.ports
        .iter()
        .map(|p| {
            let host = if p.mode == PublishMode::Host {
                " (host)"
            } else {
                ""
            };
            let published = if p.published == 0 {
                "*".to_string()
            } else {
                p.published.to_string()
            };
            let proxy = if p.proxy_protocol == ProxyProtocol::None {
                String::new()
            } else {
                format!(" (proxy-protocol {})", p.proxy_protocol.as_str())
            };
            format!(
                "*:{published}->{}/{}{host}{proxy}",
                p.target,
                p.protocol.as_str()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `service ls`.
pub fn list(m: &Manager) -> Result<String> {
    let eligible = eligible_fn(m);
    let v: Vec<Value> = m.read(|s| {
        s.services
            .values()
            .map(|svc| {
                let (running, desired, completed) = counts(s, svc, &eligible);
                let replicas = if svc.spec.mode.is_job() {
                    format!("{running}/{desired} ({completed} completed)")
                } else {
                    format!("{running}/{desired}")
                };
                json!({
                    "id": svc.id.0,
                    "name": svc.spec.name,
                    "mode": svc.spec.mode.name(),
                    "replicas": replicas,
                    "image": svc.spec.task.container.image,
                    "ports": ports_text(&svc.spec),
                    "version": svc.version,
                    "stack": svc.spec.labels.get(crate::store::service::STACK_LABEL).cloned().unwrap_or_default(),
                })
            })
            .collect()
    });
    Ok(serde_json::to_string(&v)?)
}

/// One task as `service ps` shows it.
pub fn task_json(state: &State, t: &Task) -> Value {
    let node = t.node_id.and_then(|id| state.nodes.get(&id));
    let up_to_date = state
        .services
        .get(&t.service_id)
        .map(|svc| !crate::orchestrator::is_outdated(svc, t))
        .unwrap_or(false);
    json!({
        "id": t.id.0,
        "service": t.service_name,
        "service_id": t.service_id.0,
        "slot": t.slot,
        "node_id": t.node_id.map(|n| n.to_string()).unwrap_or_default(),
        "node": node.map(|n| n.description.hostname.clone()).unwrap_or_default(),
        "desired_state": t.desired_state.as_str(),
        "state": t.status.state.as_str(),
        "message": t.status.message,
        "error": t.status.err,
        "image": t.spec.container.image,
        "container_id": t.status.container_id,
        "image_id": t.status.image_id,
        "exit_code": t.status.exit_code,
        "health": t.status.health,
        "ports": t.status.ports,
        "vip": t.vip,
        "spec_version": t.spec_version,
        "up_to_date": up_to_date,
        "created_ms": t.created_ms,
        "timestamp_ms": t.status.timestamp_ms,
    })
}

/// `service ps`: tasks newest first within each slot.
pub fn tasks(m: &Manager, what: &str) -> Result<String> {
    m.read(|s| {
        let svc = s.find_service(what)?;
        let mut tasks: Vec<&Task> = s.tasks_of(&svc.id).collect();
        // Replicated: by slot; global (slot 0): by node; newest first within each.
        let key = |t: &Task| {
            (
                t.slot,
                if t.slot == 0 { t.node_id } else { None },
                std::cmp::Reverse(t.created_ms),
                t.id.clone(),
            )
        };
        tasks.sort_by_key(|t| key(t));
        let v: Vec<Value> = tasks.iter().map(|t| task_json(s, t)).collect();
        Ok(serde_json::to_string(&v)?)
    })
}

/// How the service is reached: its VIP and DNS names, the ports its VIP serves
/// (what its running tasks expose), its published ports, and the VIPs of its tasks.
fn endpoint_json(s: &State, svc: &Service) -> Value {
    let table = crate::mesh::table::endpoints(s);
    let Some(e) = table.services.iter().find(|e| e.id == svc.id.0) else {
        return json!({});
    };
    let mut vip_ports: Vec<String> = e
        .backends
        .iter()
        .flat_map(|b| {
            b.ports
                .iter()
                .map(|h| format!("{}/{}", h.target, h.protocol.as_str()))
        })
        .collect();
    vip_ports.sort();
    vip_ports.dedup();
    let mut names = vec![e.name.clone(), format!("tasks.{}", e.name)];
    if let Some(short) = (!e.stack.is_empty())
        .then(|| e.name.strip_prefix(&format!("{}_", e.stack)))
        .flatten()
    {
        names.push(short.to_string());
        names.push(format!("tasks.{short}"));
    }
    json!({
        "vip": e.vip,
        "dns_names": names,
        "vip_ports": vip_ports,
        "published": svc.spec.ports,
        "tasks": e.backends.iter().map(|b| json!({"task_id": b.task_id, "vip": b.vip})).collect::<Vec<_>>(),
    })
}

/// `service inspect`: the whole spec and status, with what a service that has not
/// started yet waits for (`waiting_on`: its unmet `depends_on`).
pub fn inspect(m: &Manager, what: &str) -> Result<String> {
    let eligible = eligible_fn(m);
    m.read(|s| {
        let svc = s.find_service(what)?;
        let (running, desired, completed) = counts(s, svc, &eligible);
        let v = json!({
            "id": svc.id.0,
            "name": svc.spec.name,
            "version": svc.version,
            "created_ms": svc.created_ms,
            "updated_ms": svc.updated_ms,
            "spec": svc.spec,
            "previous_spec": svc.previous_spec,
            "vip": svc.vip,
            "endpoint": endpoint_json(s, svc),
            "update_status": s.update_status.get(&svc.id),
            // The content the image is pinned to (see `store::image`): the engine's
            // image id, and a registry digest when known; null until the first task
            // of the current image runs.
            "image_digest": s
                .image_pins
                .get(&svc.id)
                .filter(|p| p.image == svc.spec.task.container.image)
                .map(|p| json!({"image": p.image, "id": p.id, "repo_digest": p.repo_digest})),
            "depends_on": svc
                .spec
                .depends_on
                .iter()
                .map(|d| json!({"service": d.service, "condition": d.condition.as_str()}))
                .collect::<Vec<_>>(),
            "waiting_on": crate::orchestrator::waiting_on(s, svc),
            "status": {
                "running": running,
                "desired": desired,
                "completed": completed,
                "ports": ports_text(&svc.spec),
            },
        });
        Ok(serde_json::to_string(&v)?)
    })
}
