//! The leader's answers about services, in the store's types, and their
//! `--format json` shapes.
//!
//! The control API answers with typed messages ([`proto::ServiceInspect`],
//! [`proto::TaskView`], [`proto::ServiceSummary`]); they are converted once here
//! ([`crate::proto::convert`]) and everything else in the CLI reads fields. The JSON
//! printed by `service ls`, `ps` and `inspect` (and `stack services`, `stack ps`) is
//! made from these values alone, with the keys it has always had: they are a contract.
//! `inspect` shows the spec, the previous spec and the update status as the store
//! serialises them.

use std::path::Path;

use serde_json::{json, Value};
use tonic::transport::Channel;

use super::super::connect;
use crate::error::Result;
use crate::proto::{self, control_client::ControlClient};
use crate::store::image::ImagePin;
use crate::store::service::{ProxyProtocol, PublishMode, ServiceMode, ServiceSpec};
use crate::store::{Service, Task, UpdateStatus};

/// A control client on the daemon's socket.
pub async fn client(socket: &Path) -> Result<ControlClient<Channel>> {
    Ok(ControlClient::new(connect(socket).await?).max_decoding_message_size(64 * 1024 * 1024))
}

/// One service as `InspectService` answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspected {
    /// The service, its spec and previous spec.
    pub service: Service,
    /// Its update (or rollback), if one ever started.
    pub update_status: Option<UpdateStatus>,
    /// How it is reached, once in the endpoint table.
    pub endpoint: Option<proto::ServiceEndpoint>,
    /// What its image is pinned to, once a task of the current image ran.
    pub image_pin: Option<ImagePin>,
    /// The unmet `depends_on` of a service that has not started.
    pub waiting_on: Vec<String>,
    /// Task counts and convergence, as the leader judges them.
    pub status: proto::ServiceProgress,
    /// The networks it is on, by name.
    pub networks: Vec<proto::ServiceNetwork>,
}

impl TryFrom<proto::ServiceInspect> for Inspected {
    type Error = crate::Error;
    fn try_from(v: proto::ServiceInspect) -> Result<Self> {
        Ok(Inspected {
            service: v
                .service
                .ok_or_else(|| crate::Error::Internal("inspect: no service".into()))?
                .try_into()?,
            update_status: v.update_status.map(TryInto::try_into).transpose()?,
            endpoint: v.endpoint,
            image_pin: v.image_digest.map(Into::into),
            waiting_on: v.waiting_on,
            status: v.status.unwrap_or_default(),
            networks: v.networks,
        })
    }
}

impl Inspected {
    /// The `service inspect` JSON.
    pub fn to_json(&self) -> Value {
        let svc = &self.service;
        let endpoint = match &self.endpoint {
            None => json!({}),
            Some(e) => json!({
                "vip": e.vip,
                "dns_names": e.dns_names,
                "vip_ports": e.vip_ports,
                "published": svc.spec.ports,
                "tasks": e.tasks.iter().map(|b| json!({"task_id": b.task_id, "vip": b.vip})).collect::<Vec<_>>(),
            }),
        };
        json!({
            "id": svc.id.0,
            "name": svc.spec.name,
            "version": svc.version,
            "created_ms": svc.created_ms,
            "updated_ms": svc.updated_ms,
            "spec": svc.spec,
            "previous_spec": svc.previous_spec,
            "vip": svc.vip,
            "endpoint": endpoint,
            "update_status": self.update_status,
            "image_digest": self
                .image_pin
                .as_ref()
                .map(|p| json!({"image": p.image, "id": p.id, "repo_digest": p.repo_digest})),
            "depends_on": svc
                .spec
                .depends_on
                .iter()
                .map(|d| json!({"service": d.service, "condition": d.condition.as_str()}))
                .collect::<Vec<_>>(),
            "waiting_on": self.waiting_on,
            "networks": self
                .networks
                .iter()
                .map(|n| json!({"name": n.name, "id": n.id, "aliases": n.aliases, "vip": n.vip}))
                .collect::<Vec<_>>(),
            "status": {
                "running": self.status.running,
                "desired": self.status.desired,
                "completed": self.status.completed,
                "ports": ports_text(&svc.spec),
            },
            "secrets": refs_json(crate::store::secret::Kind::Secret, &svc.spec.task.secrets),
            "configs": refs_json(crate::store::secret::Kind::Config, &svc.spec.task.configs),
        })
    }
}

/// A service's secrets (or configs) as `service inspect` shows them: `name`, `id`,
/// `target` (the path in the container), `uid`, `gid`, `mode` (octal text, `0444`).
fn refs_json(kind: crate::store::secret::Kind, refs: &[crate::store::SecretRef]) -> Value {
    refs.iter()
        .map(|r| {
            json!({
                "name": r.name,
                "id": r.id.0,
                "target": kind.container_path(&r.name, &r.target),
                "uid": r.uid,
                "gid": r.gid,
                "mode": format!("{:04o}", r.mode),
            })
        })
        .collect()
}

/// One task as `ServiceTasks` answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// The task.
    pub task: Task,
    /// Its node's hostname (empty: none).
    pub node: String,
    /// Made from the service's current spec.
    pub up_to_date: bool,
}

impl TryFrom<proto::TaskView> for Listed {
    type Error = crate::Error;
    fn try_from(v: proto::TaskView) -> Result<Self> {
        Ok(Listed {
            task: v
                .task
                .ok_or_else(|| crate::Error::Internal("tasks: no task".into()))?
                .try_into()?,
            node: v.node,
            up_to_date: v.up_to_date,
        })
    }
}

impl Listed {
    /// The node id as shown (16 hex digits; empty: none).
    pub fn node_id(&self) -> String {
        self.task.node_id.map(|n| n.to_string()).unwrap_or_default()
    }

    /// The `service ps` JSON.
    pub fn to_json(&self) -> Value {
        let t = &self.task;
        json!({
            "id": t.id.0,
            "service": t.service_name,
            "service_id": t.service_id.0,
            "slot": t.slot,
            "node_id": self.node_id(),
            "node": self.node,
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
            "up_to_date": self.up_to_date,
            "created_ms": t.created_ms,
            "timestamp_ms": t.status.timestamp_ms,
        })
    }
}

/// One line of `service ls`, in the store's types.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The wire summary.
    pub summary: proto::ServiceSummary,
    /// Its mode.
    pub mode: ServiceMode,
    /// Its published ports.
    pub ports: Vec<crate::store::service::PortConfig>,
}

impl TryFrom<proto::ServiceSummary> for Summary {
    type Error = crate::Error;
    fn try_from(s: proto::ServiceSummary) -> Result<Self> {
        let mode = s
            .mode
            .ok_or_else(|| crate::Error::Internal("ls: no mode".into()))?
            .try_into()?;
        let ports = s
            .ports
            .iter()
            .cloned()
            .map(TryInto::try_into)
            .collect::<Result<_>>()?;
        Ok(Summary {
            summary: s,
            mode,
            ports,
        })
    }
}

impl Summary {
    /// `running/desired`, with the completions of a job.
    pub fn replicas(&self) -> String {
        let s = &self.summary;
        if self.mode.is_job() {
            format!("{}/{} ({} completed)", s.running, s.desired, s.completed)
        } else {
            format!("{}/{}", s.running, s.desired)
        }
    }

    /// The ports column.
    pub fn ports_text(&self) -> String {
        ports_text_of(&self.ports)
    }

    /// The `service ls` JSON.
    pub fn to_json(&self) -> Value {
        let s = &self.summary;
        json!({
            "id": s.id,
            "name": s.name,
            "mode": self.mode.name(),
            "replicas": self.replicas(),
            "image": s.image,
            "ports": self.ports_text(),
            "version": s.version,
            "stack": s.stack,
        })
    }
}

/// The ports column: `*:8080->80/tcp`, host mode `8080->80/tcp (host)`.
pub fn ports_text(spec: &ServiceSpec) -> String {
    ports_text_of(&spec.ports)
}

fn ports_text_of(ports: &[crate::store::service::PortConfig]) -> String {
    ports
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

/// `service ps` of `service`.
pub async fn tasks(c: &mut ControlClient<Channel>, service: &str) -> Result<Vec<Listed>> {
    let r = c
        .service_tasks(proto::ServiceRef {
            service: service.to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    r.tasks.into_iter().map(TryInto::try_into).collect()
}

/// `service inspect` of `service`.
pub async fn inspect(c: &mut ControlClient<Channel>, service: &str) -> Result<Inspected> {
    let r = c
        .inspect_service(proto::ServiceRef {
            service: service.to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    r.try_into()
}

/// `service ls`.
pub async fn list(c: &mut ControlClient<Channel>) -> Result<Vec<Summary>> {
    let r = c.list_services(proto::Empty {}).await?.into_inner();
    r.services.into_iter().map(TryInto::try_into).collect()
}
