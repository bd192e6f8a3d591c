//! Control API operations on services, run on the leader. Specs are validated here,
//! at the door: nothing invalid is proposed.
//!
//! `previous_spec` is what `service rollback` (or an update's failure action) goes back
//! to: an update that replaces tasks sets it to the spec it replaces; a change that
//! replaces none (a scale, a label) sets it too, as in Swarm, unless an update is under
//! way or paused, whose rollback must still find the spec from before it.

use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::orchestrator;
use crate::proto;
use crate::store::service::{ingress_port_conflict, starts_update, ServiceMode};
use crate::store::{Command, Node, Service, ServiceId, ServiceSpec, State, Task};
use crate::units::now_ms;

/// The spec of a request, converted and checked: nothing invalid goes further.
pub fn parse_spec(spec: Option<proto::ServiceSpec>) -> Result<ServiceSpec> {
    let spec: ServiceSpec = spec
        .ok_or_else(|| Error::InvalidInput("spec: must be set".into()))?
        .try_into()?;
    spec.validate()?;
    Ok(spec)
}

/// Published ports already taken by other services (ingress ports are cluster-wide;
/// the rule is [`ingress_port_conflict`]).
fn check_port_conflicts(
    state: &State,
    spec: &ServiceSpec,
    except: Option<&ServiceId>,
) -> Result<()> {
    let others: Vec<&Service> = state
        .services
        .values()
        .filter(|o| Some(&o.id) != except)
        .collect();
    match ingress_port_conflict(spec, &others) {
        Some(c) => Err(Error::Conflict(format!(
            "ports: port {}/{} is already published by service {}",
            c.port.published,
            c.port.protocol.as_str(),
            c.holder.spec.name
        ))),
        None => Ok(()),
    }
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
pub async fn create(m: &Manager, spec: Option<proto::ServiceSpec>) -> Result<proto::ServiceRef> {
    let mut spec = parse_spec(spec)?;
    m.read(|s| {
        if s.services.values().any(|x| x.spec.name == spec.name) {
            return Err(Error::Conflict(format!(
                "service {} already exists",
                spec.name
            )));
        }
        super::networks::resolve(s, &mut spec)?;
        super::secrets::resolve(s, &mut spec)?;
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
pub async fn update(
    m: &Manager,
    what: &str,
    spec: Option<proto::ServiceSpec>,
) -> Result<proto::ServiceRef> {
    let mut spec = parse_spec(spec)?;
    let (old, previous) = m.read(|s| -> Result<(Service, Option<ServiceSpec>)> {
        let old = s.find_service(what)?.clone();
        super::networks::resolve(s, &mut spec)?;
        super::secrets::resolve(s, &mut spec)?;
        check_port_conflicts(s, &spec, Some(&old.id))?;
        let previous = previous_spec(s, &old, &spec);
        Ok((old, previous))
    })?;
    if spec.name != old.spec.name {
        return Err(Error::InvalidInput(format!(
            "name: a service cannot be renamed ({} to {})",
            old.spec.name, spec.name
        )));
    }
    if spec.mode.name() != old.spec.mode.name() {
        return Err(Error::InvalidInput(format!(
            "mode: a {} service cannot become {}",
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

/// `service ls`.
pub fn list(m: &Manager) -> Result<proto::ListServicesResponse> {
    let eligible = eligible_fn(m);
    let services = m.read(|s| {
        s.services
            .values()
            .map(|svc| {
                let p = orchestrator::progress(s, svc, &eligible);
                proto::ServiceSummary {
                    id: svc.id.0.clone(),
                    name: svc.spec.name.clone(),
                    mode: Some(svc.spec.mode.clone().into()),
                    running: p.running as u64,
                    desired: p.desired as u64,
                    completed: p.completed as u64,
                    image: svc.spec.task.container.image.clone(),
                    ports: svc.spec.ports.iter().cloned().map(Into::into).collect(),
                    version: svc.version,
                    stack: svc.spec.stack().to_string(),
                }
            })
            .collect()
    });
    Ok(proto::ListServicesResponse { services })
}

/// One task as `service ps` shows it.
pub fn task_view(state: &State, t: &Task) -> proto::TaskView {
    let node = t.node_id.and_then(|id| state.nodes.get(&id));
    let up_to_date = state
        .services
        .get(&t.service_id)
        .is_some_and(|svc| !orchestrator::is_outdated(svc, t));
    proto::TaskView {
        task: Some(t.clone().into()),
        node: node
            .map(|n| n.description.hostname.clone())
            .unwrap_or_default(),
        up_to_date,
    }
}

/// `service ps`: tasks newest first within each slot.
pub fn tasks(m: &Manager, what: &str) -> Result<proto::ServiceTasksResponse> {
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
        Ok(proto::ServiceTasksResponse {
            tasks: tasks.iter().map(|t| task_view(s, t)).collect(),
        })
    })
}

/// How the service is reached: its VIP and DNS names, the ports its VIP serves
/// (what its running tasks expose), and the VIPs of its tasks; `None` when the
/// endpoint table has no entry for it.
fn endpoint(s: &State, svc: &Service) -> Option<proto::ServiceEndpoint> {
    // This service's entry only: the whole table walked every task at every inspect.
    let e = &crate::mesh::table::service_endpoint(s, svc);
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
    let mut dns_names = vec![e.name.clone(), format!("tasks.{}", e.name)];
    if let Some(short) = (!e.stack.is_empty())
        .then(|| e.name.strip_prefix(&format!("{}_", e.stack)))
        .flatten()
    {
        dns_names.push(short.to_string());
        dns_names.push(format!("tasks.{short}"));
    }
    Some(proto::ServiceEndpoint {
        vip: e.vip.clone(),
        dns_names,
        vip_ports,
        tasks: e
            .backends
            .iter()
            .map(|b| proto::EndpointTask {
                task_id: b.task_id.clone(),
                vip: b.vip.clone(),
            })
            .collect(),
    })
}

/// `service inspect`: the service, its update, endpoint and image pin, what a service
/// that has not started yet waits for (`waiting_on`: its unmet `depends_on`), and its
/// progress, converged or not, by the orchestrator's rules.
pub fn inspect(m: &Manager, what: &str) -> Result<proto::ServiceInspect> {
    let eligible = eligible_fn(m);
    m.read(|s| {
        let svc = s.find_service(what)?;
        let p = orchestrator::progress(s, svc, &eligible);
        Ok(proto::ServiceInspect {
            service: Some(svc.clone().into()),
            update_status: s.update_status.get(&svc.id).cloned().map(Into::into),
            endpoint: endpoint(s, svc),
            // The content the image is pinned to (see `store::image`), once the first
            // task of the current image runs.
            image_digest: s
                .image_pins
                .get(&svc.id)
                .filter(|p| p.image == svc.spec.task.container.image)
                .cloned()
                .map(Into::into),
            waiting_on: orchestrator::waiting_on(s, svc),
            networks: super::networks::service_networks(s, svc),
            status: Some(proto::ServiceProgress {
                running: p.running as u64,
                desired: p.desired as u64,
                completed: p.completed as u64,
                converged: p.converged,
                done: p.done as u64,
                wanted: p.wanted as u64,
            }),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::service::ContainerSpec;

    /// A new spec as a client sends it, with these placement constraints.
    fn wire_spec(constraints: &[&str]) -> proto::ServiceSpec {
        let mut spec = ServiceSpec {
            name: "web".into(),
            labels: Default::default(),
            mode: ServiceMode::Replicated { replicas: 1 },
            task: Default::default(),
            ports: vec![],
            expose: vec![],
            update: Default::default(),
            rollback: Default::default(),
            depends_on: vec![],
            endpoint_mode: Default::default(),
            networks: Default::default(),
        };
        spec.task.container = ContainerSpec {
            image: "busybox".into(),
            ..Default::default()
        };
        spec.task.placement.constraints = constraints.iter().map(|c| (*c).into()).collect();
        spec.into()
    }

    #[test]
    fn a_constraint_that_does_not_parse_is_refused_at_the_door_naming_the_field() {
        let spec = parse_spec(Some(wire_spec(&[
            "node.role==worker",
            "node.labels.zone==a",
        ])))
        .expect("good constraints are accepted");
        assert_eq!(
            spec.task.placement.constraints[1].text(),
            "node.labels.zone==a"
        );
        let e = parse_spec(Some(wire_spec(&[
            "node.role==worker",
            "node.labels.zone=a",
        ])))
        .expect_err("refused");
        assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "task.placement.constraints[1]: \"node.labels.zone=a\": expected KEY==VALUE, \
             KEY!=VALUE, or a comparison <,<=,>,>= on node.facts.*"
        );
    }

    #[test]
    fn container_options_and_generic_resources_are_checked_at_the_door() {
        // Positive control: Docker's forms pass the wire and the checks.
        let mut good = wire_spec(&[]);
        let c = good
            .task
            .as_mut()
            .and_then(|t| t.container.as_mut())
            .expect("container");
        c.options = Some(proto::ContainerOptions {
            cap_add: vec!["NET_ADMIN".into()],
            sysctls: [("net.core.somaxconn".to_string(), "1024".to_string())].into(),
            dns: vec!["9.9.9.9".into()],
            ..Default::default()
        });
        good.task.as_mut().expect("task").resources = Some(proto::Resources {
            generic_resources: [("gpu".to_string(), 1)].into(),
            ..Default::default()
        });
        let spec = parse_spec(Some(good.clone())).expect("accepted");
        assert_eq!(spec.task.container.options.cap_add, ["NET_ADMIN"]);
        assert_eq!(spec.task.resources.generic_resources["gpu"], 1);
        // Hostile: every entry of a huge list is a capability name, and a reservation
        // of a kind that would not make an environment name; both refused by field.
        let mut many = good.clone();
        let o = many
            .task
            .as_mut()
            .and_then(|t| t.container.as_mut())
            .and_then(|c| c.options.as_mut())
            .expect("options");
        o.cap_add = vec!["CHOWN".to_string(); 10_000];
        let e = parse_spec(Some(many)).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "task.container.options.cap_add: at most 64 entries"
        );
        let mut bad = good;
        bad.task.as_mut().expect("task").resources = Some(proto::Resources {
            generic_resources: [("g=p u".to_string(), 1)].into(),
            ..Default::default()
        });
        let e = parse_spec(Some(bad)).expect_err("refused");
        assert!(
            e.to_string()
                .starts_with("task.resources.generic_resources: \"g=p u\" is not a resource kind"),
            "{e}"
        );
    }

    #[test]
    fn a_preference_that_is_not_a_label_is_refused_at_the_door() {
        let mut wire = wire_spec(&[]);
        let placement = wire.task.as_mut().and_then(|t| t.placement.as_mut());
        placement.expect("a placement").preferences = vec!["node.labels.zone".into()];
        assert!(parse_spec(Some(wire.clone())).is_ok());
        let placement = wire.task.as_mut().and_then(|t| t.placement.as_mut());
        placement.expect("a placement").preferences = vec!["zone".into()];
        let e = parse_spec(Some(wire)).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "task.placement.preferences: expected spread=KEY, KEY one of node.labels.NAME, \
             engine.labels.NAME, node.id, node.hostname, node.role, node.platform.os or \
             node.platform.arch, found spread=zone"
        );
        // An attribute of the node is a preference too (`spread: node.id`), but no live
        // fact.
        for (text, ok) in [
            ("node.id", true),
            ("NODE.Hostname", true),
            ("node.facts.load1", false),
        ] {
            let mut wire = wire_spec(&[]);
            let placement = wire.task.as_mut().and_then(|t| t.placement.as_mut());
            placement.expect("a placement").preferences = vec![text.into()];
            assert_eq!(parse_spec(Some(wire)).is_ok(), ok, "{text}");
        }
    }
}
