//! The Docker executor: the [`Executor`] seam implemented with bollard.
//!
//! One task is one container. [`DockerExecutor::create`] turns a task's
//! [`ContainerSpec`] into Docker's create body:
//!
//! | orc | Docker |
//! |---|---|
//! | name | `<service>.<slot>.<task id>` (global: `<service>.<node id>.<task id>`) |
//! | labels | the spec's, then `orc.node.id`, `orc.service.id`, `orc.service.name`, `orc.task.id`, `orc.task.slot` |
//! | entrypoint, args, env, user, workdir | `Entrypoint`, `Cmd`, `Env`, `User`, `WorkingDir` (empty = the image's) |
//! | mounts | `HostConfig.Mounts`: bind, volume (driver and options), tmpfs; read-only |
//! | limits | `HostConfig.NanoCpus`, `HostConfig.Memory` |
//! | health check | `Healthcheck` (durations in ns; an empty test inherits the image's; `["NONE"]` disables) |
//! | stop grace period | `StopTimeout` (whole seconds, rounded up) |
//! | log driver and options | `HostConfig.LogConfig` |
//! | service ports | `ExposedPorts` + `HostConfig.PortBindings` |
//!
//! | container options, generic resources | see [`super::container_opts`] |
//! | networks | `HostConfig.NetworkMode` (the first) + `NetworkingConfig.EndpointsConfig` (all): one bridge per network ([`super::networks`]) |
//!
//! Ports: only a `mode: host` port is published by Docker (exactly its host port). Every
//! other port is only exposed: this node's mesh reaches it at the container's address,
//! and other nodes through this node's data path ([`crate::mesh::tunnel`]), so no
//! container port answers on the node's addresses. [`Executor::inspect`] reports each
//! exposed port as a [`HostPort`] (host port 0 when not published; IPv4 and IPv6
//! bindings of the same port count once), and the container's address on each orc
//! network.
//!
//! Images: a local image is used as it is, with no registry call (`ensure_image` only
//! inspects it); a missing one is pulled, and a failed pull is an error naming the image.
//!
//! Image shipping: [`Executor::save_image`] is `docker save` (the engine's tar, passed on
//! chunk by chunk as it comes) and [`Executor::load_image`] is `docker load` fed from a
//! stream, so an image crosses the cluster without being held whole anywhere.
//! [`Executor::image_info`] is `docker image inspect` (`Id`, `RepoDigests`), and
//! [`Executor::tag_image`] is `docker tag`: an image saved by id carries no tag, and a
//! loaded tar's own tags are dropped on the way in ([`super::image_tar`]), so the loading
//! node tags the image itself once it has checked the id.
//!
//! Stopping is `docker stop` with the grace period: the container's stop signal
//! (SIGTERM unless the image says otherwise), then SIGKILL when the period is over. The
//! HTTP request outlives the grace period (the client's usual time-out would cut a long
//! one short).
//!
//! bollard 0.21.1 sends unversioned paths until [`Docker::negotiate_version`] is called:
//! [`DockerExecutor::connect`] does it.

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models as dm;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    ImportImageOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder, TagImageOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

use super::executor::{
    container_labels, container_name, docker_network_name, network_of_docker_name, AssignedNetwork,
    ContainerEvents, ContainerState, Executor, ImageInfo, ImageStream, ListedContainer, LogLine,
    LogOptions, LogSource, LogStream, TaskNetwork, LABEL_NODE_ID, LABEL_TASK_ID, WATCHED_EVENTS,
};
use crate::error::{Error, Result};
use crate::store::service::{ContainerSpec, HealthCheck, Mount, MountKind, Protocol};
use crate::store::task::HostPort;
use crate::store::{NetworkId, NodeId, Task, TaskAddress, TaskId};

/// Extra time the `stop` request is given beyond the grace period.
const STOP_SLACK: Duration = Duration::from_secs(30);

/// How long `docker save` may take to start answering and `docker load` to answer
/// (it answers once the whole tar is in): image transfers are long requests.
const IMAGE_TRANSFER_TIMEOUT: Duration = Duration::from_secs(3600);

/// An [`Executor`] backed by a Docker engine.
#[derive(Debug, Clone)]
pub struct DockerExecutor {
    docker: Docker,
    bridges: std::sync::Arc<super::networks::Bridges>,
}

impl DockerExecutor {
    /// The containers that mount the volume `name` (a Docker volume name): running
    /// ones only, or `all`.
    async fn containers_using(&self, name: &str, all: bool) -> Result<Vec<dm::ContainerSummary>> {
        super::volumes::check_name(name)?;
        let mut filters = HashMap::new();
        filters.insert("volume", vec![name.to_string()]);
        let opts = ListContainersOptionsBuilder::default()
            .all(all)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| docker_error("listing containers", e))
    }

    /// Wraps a client whose API version was already negotiated.
    pub fn new(docker: Docker) -> Self {
        DockerExecutor {
            docker,
            bridges: Default::default(),
        }
    }

    /// Connects to the engine at `host` (see [`crate::docker::connect`]) and negotiates
    /// the API version.
    pub async fn connect(host: Option<&str>) -> Result<Self> {
        let docker = crate::docker::connect(host)?
            .negotiate_version()
            .await
            .map_err(|e| Error::Unavailable(format!("docker: {e}")))?;
        Ok(DockerExecutor {
            docker,
            bridges: Default::default(),
        })
    }

    /// The bollard client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    async fn pull(&self, image: &str) -> Result<()> {
        let (repo, tag) = split_reference(image);
        let mut opts = CreateImageOptionsBuilder::default().from_image(&repo);
        if let Some(tag) = &tag {
            opts = opts.tag(tag);
        }
        let mut progress = self.docker.create_image(Some(opts.build()), None, None);
        while let Some(item) = progress.next().await {
            let info = item.map_err(|e| pull_error(image, &docker_message(&e)))?;
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(pull_error(image, &detail));
            }
        }
        Ok(())
    }

    /// Creates container `name` for `task`; a container of that name that is this
    /// task's (a create whose answer was lost) is replaced, another task's refused.
    async fn create_replacing(
        &self,
        name: &str,
        task: &Task,
        body: dm::ContainerCreateBody,
    ) -> Result<String> {
        match self.create_once(name, body.clone()).await {
            Err(Error::Conflict(msg)) => {
                // A container of this name exists: if it is this task's (a create whose
                // answer was lost), replace it; else refuse.
                let existing = self
                    .docker
                    .inspect_container(name, None)
                    .await
                    .map_err(|e| docker_error(&format!("container {name}"), e))?;
                let ours = existing
                    .config
                    .and_then(|c| c.labels)
                    .and_then(|l| l.get(LABEL_TASK_ID).cloned())
                    == Some(task.id.to_string());
                if !ours {
                    return Err(Error::Conflict(msg));
                }
                self.remove(existing.id.as_deref().unwrap_or(name)).await?;
                self.create_once(name, body).await
            }
            other => other,
        }
    }

    async fn create_once(&self, name: &str, body: dm::ContainerCreateBody) -> Result<String> {
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        let r = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| docker_error(&format!("creating container {name}"), e))?;
        Ok(r.id)
    }
}

fn pull_error(image: &str, why: &str) -> Error {
    Error::NotFound(format!(
        "image {image}: not present on this node and could not be pulled: {why}"
    ))
}

/// `repo[:tag]` → (repo, tag); a digest reference is passed whole.
fn split_reference(image: &str) -> (String, Option<String>) {
    if image.contains('@') {
        return (image.to_string(), None);
    }
    let name_start = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[name_start..].rfind(':') {
        Some(i) => {
            let at = name_start + i;
            (image[..at].to_string(), Some(image[at + 1..].to_string()))
        }
        None => (image.to_string(), Some("latest".to_string())),
    }
}

/// The engine's own message for a server error, else bollard's text.
fn docker_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Maps a bollard error to orc's, prefixed with what was being done.
fn docker_error(what: &str, e: DockerError) -> Error {
    match e {
        DockerError::DockerResponseServerError {
            status_code: 404,
            message,
        } => Error::NotFound(format!("{what}: {message}")),
        DockerError::DockerResponseServerError {
            status_code: 409,
            message,
        } => Error::Conflict(format!("{what}: {message}")),
        DockerError::DockerResponseServerError { message, .. } => {
            Error::Internal(format!("{what}: {message}"))
        }
        other => Error::Unavailable(format!("{what}: docker: {other}")),
    }
}

fn ms_to_ns(ms: u64) -> Option<i64> {
    (ms > 0).then(|| i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX))
}

fn positive(v: u64) -> Option<i64> {
    (v > 0).then(|| i64::try_from(v).unwrap_or(i64::MAX))
}

fn nonempty<T: Clone>(v: &[T]) -> Option<Vec<T>> {
    (!v.is_empty()).then(|| v.to_vec())
}

fn nonempty_str(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Whole seconds, rounded up: Docker's stop time-out has no finer unit.
fn ceil_secs(d: Duration) -> i64 {
    i64::try_from(d.as_millis().div_ceil(1000)).unwrap_or(i64::MAX)
}

fn health_config(h: &HealthCheck) -> dm::HealthConfig {
    dm::HealthConfig {
        test: nonempty(&h.test),
        interval: ms_to_ns(h.interval_ms),
        timeout: ms_to_ns(h.timeout_ms),
        retries: positive(h.retries),
        start_period: ms_to_ns(h.start_period_ms),
        start_interval: None,
    }
}

fn mount(m: &Mount) -> dm::Mount {
    let typ = match m.kind {
        MountKind::Bind => dm::MountType::BIND,
        MountKind::Volume => dm::MountType::VOLUME,
        MountKind::Tmpfs => dm::MountType::TMPFS,
    };
    let volume_options = (m.kind == MountKind::Volume
        && (!m.driver.is_empty() || !m.driver_opts.is_empty()))
    .then(|| dm::MountVolumeOptions {
        driver_config: Some(dm::MountVolumeOptionsDriverConfig {
            name: nonempty_str(&m.driver),
            options: Some(
                m.driver_opts
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        }),
        ..Default::default()
    });
    dm::Mount {
        target: Some(m.target.clone()),
        source: nonempty_str(&m.source),
        typ: Some(typ),
        read_only: Some(m.readonly),
        volume_options,
        ..Default::default()
    }
}

/// Where the resolver file of a task's container is kept on the node (`/run`: gone at
/// reboot, with the containers).
pub const RESOLV_DIR: &str = "/run/orc/resolv";

/// The resolver file of task `task`'s container.
pub fn resolv_path(task: &TaskId) -> String {
    format!("{RESOLV_DIR}/{task}.conf")
}

/// The container's `/etc/resolv.conf`: the cluster DNS, its search domains and options.
///
/// It is mounted read-only at `/etc/resolv.conf`, so that the container asks the
/// cluster DNS itself, as on Docker's default bridge: on a user-defined bridge Docker
/// would put its own resolver (`127.0.0.11`) in between, which answers some names
/// itself (single-label names it does not know get an empty answer instead of going
/// to the cluster DNS).
///
/// The service's own search domains (`dns_search`) follow the cluster's; its name
/// servers (`dns`) are not listed: the cluster DNS forwards to them the names it does
/// not own ([`crate::mesh::clients`]), so service names keep resolving.
pub fn resolv_conf(net: &TaskNetwork, extra_search: &[String]) -> String {
    let mut out = String::new();
    for ns in &net.dns {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    let search: Vec<&String> = net.dns_search.iter().chain(extra_search).collect();
    if !search.is_empty() {
        out.push_str(&format!(
            "search {}\n",
            search
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    if !net.dns_options.is_empty() {
        out.push_str(&format!("options {}\n", net.dns_options.join(" ")));
    }
    out
}

fn port_key(target: u16, protocol: Protocol) -> String {
    format!("{target}/{}", protocol.as_str())
}

/// Docker's create body for `task` on `node`, publishing `net.ports`.
fn create_body(node: NodeId, task: &Task, net: &TaskNetwork) -> dm::ContainerCreateBody {
    let c = &task.spec.container;
    let r = &task.spec.resources;
    // Only `mode: host` ports are published by Docker; every other port is reached by
    // this node's mesh at the container's address (see the module doc).
    let mut bindings: dm::PortMap = HashMap::new();
    for p in net.ports.iter().filter(|p| p.is_host_published()) {
        let list = bindings
            .entry(port_key(p.target, p.protocol))
            .or_insert_with(|| Some(Vec::new()));
        if let Some(list) = list {
            let binding = dm::PortBinding {
                host_ip: None,
                host_port: Some(p.published.to_string()),
            };
            if !list.contains(&binding) {
                list.push(binding);
            }
        }
    }
    let mut exposed: Vec<String> = net
        .ports
        .iter()
        .map(|p| port_key(p.target, p.protocol))
        .chain(net.expose.iter().map(|p| port_key(*p, Protocol::Tcp)))
        .collect();
    exposed.sort();
    exposed.dedup();
    let log_config = nonempty_str(&c.log_driver).map(|driver| dm::HostConfigLogConfig {
        typ: Some(driver),
        config: Some(
            c.log_opts
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
    });
    let mut mounts: Vec<dm::Mount> = c.mounts.iter().map(mount).collect();
    if !net.dns.is_empty() && !c.mounts.iter().any(|m| m.target == "/etc/resolv.conf") {
        mounts.push(dm::Mount {
            target: Some("/etc/resolv.conf".into()),
            source: Some(resolv_path(&task.id)),
            typ: Some(dm::MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let host_config = dm::HostConfig {
        mounts: nonempty(&mounts),
        nano_cpus: positive(r.limit_nano_cpus),
        memory: positive(r.limit_memory_bytes),
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        dns: nonempty(&net.dns),
        dns_search: nonempty(&net.dns_search),
        dns_options: nonempty(&net.dns_options),
        log_config,
        ..Default::default()
    };
    let nets = net.attachments();
    let host_config = dm::HostConfig {
        network_mode: nets.first().map(|n| docker_network_name(&n.id)),
        ..host_config
    };
    // The first network only: engines before API 1.44 take one network at creation;
    // `create` connects the others before the container starts.
    let endpoints: HashMap<String, dm::EndpointSettings> = nets
        .iter()
        .take(1)
        .map(|n| (docker_network_name(&n.id), dm::EndpointSettings::default()))
        .collect();
    let mut body = dm::ContainerCreateBody {
        networking_config: Some(dm::NetworkingConfig {
            endpoints_config: Some(endpoints),
        }),
        image: Some(c.image.clone()),
        entrypoint: nonempty(&c.entrypoint),
        cmd: nonempty(&c.args),
        env: nonempty(&c.env),
        user: nonempty_str(&c.user),
        working_dir: nonempty_str(&c.workdir),
        labels: Some(container_labels(node, task).into_iter().collect()),
        healthcheck: c.healthcheck.as_ref().map(health_config),
        stop_timeout: Some(ceil_secs(Duration::from_millis(c.stop_grace_period_ms))),
        exposed_ports: nonempty(&exposed),
        host_config: Some(host_config),
        ..Default::default()
    };
    super::container_opts::apply(task, !net.dns.is_empty(), &mut body);
    body
}

/// The host ports in Docker's port map, one per (protocol, container port, host port).
/// Docker may bind an ephemeral port for IPv4 and another for IPv6 (`0.0.0.0:32818`
/// and `[::]:32817`); the mesh reaches tasks at their node's IPv4 address, so only the
/// IPv4 bindings count when there are any.
fn host_ports(map: &dm::PortMap) -> Vec<HostPort> {
    let mut out = Vec::new();
    for (key, bindings) in map {
        let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(protocol) = proto.parse::<Protocol>() else {
            continue;
        };
        let Ok(target) = port.parse::<u16>() else {
            continue;
        };
        let all: Vec<&dm::PortBinding> = bindings.iter().flatten().collect();
        if all.is_empty() {
            // Exposed, not published: the mesh reaches it at the container's address.
            out.push(HostPort {
                protocol,
                target,
                host_port: 0,
            });
            continue;
        }
        let is_v6 = |b: &dm::PortBinding| b.host_ip.as_deref().is_some_and(|ip| ip.contains(':'));
        let v4: Vec<&dm::PortBinding> = all.iter().copied().filter(|b| !is_v6(b)).collect();
        for b in if v4.is_empty() { all } else { v4 } {
            if let Some(host_port) = b.host_port.as_deref().and_then(|p| p.parse::<u16>().ok()) {
                out.push(HostPort {
                    protocol,
                    target,
                    host_port,
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn container_state(r: dm::ContainerInspectResponse) -> ContainerState {
    let st = r.state.unwrap_or_default();
    let running = st.running.unwrap_or(false);
    let status = st.status.map(|s| s.to_string()).unwrap_or_default();
    let health = match st.health.and_then(|h| h.status) {
        Some(dm::HealthStatusEnum::HEALTHY) => "healthy",
        Some(dm::HealthStatusEnum::UNHEALTHY) => "unhealthy",
        Some(dm::HealthStatusEnum::STARTING) => "starting",
        _ => "",
    };
    let settings = r.network_settings.unwrap_or_default();
    let ports = settings.ports.as_ref().map(host_ports).unwrap_or_default();
    let mut addresses: Vec<TaskAddress> = settings
        .networks
        .iter()
        .flatten()
        .filter_map(|(name, ep)| {
            let network = network_of_docker_name(name)?;
            let ip = ep.ip_address.clone().filter(|ip| !ip.is_empty())?;
            Some(TaskAddress { network, ip })
        })
        .collect();
    addresses.sort();
    let exited = !running && status != "created";
    ContainerState {
        id: r.id.unwrap_or_default(),
        running,
        exit_code: if exited { st.exit_code } else { None },
        health: health.to_string(),
        ports,
        addresses,
        oom_killed: st.oom_killed.unwrap_or(false),
        started_at: st
            .started_at
            .filter(|s| !s.starts_with("0001-"))
            .unwrap_or_default(),
        error: st.error.unwrap_or_default(),
        status,
    }
}

/// Splits one frame of Docker's log stream into lines.
fn log_lines(source: LogSource, bytes: &[u8], timestamps: bool) -> Vec<Result<LogLine>> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    text.split('\n')
        .map(|l| {
            let l = l.strip_suffix('\r').unwrap_or(l);
            let (timestamp, text) = if timestamps {
                l.split_once(' ').unwrap_or((l, ""))
            } else {
                ("", l)
            };
            Ok(LogLine {
                source,
                timestamp: timestamp.to_string(),
                text: text.to_string(),
            })
        })
        .collect()
}

#[tonic::async_trait]
impl Executor for DockerExecutor {
    async fn ensure_image(&self, spec: &ContainerSpec) -> Result<()> {
        let image = spec.image.as_str();
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(docker_error(&format!("image {image}"), e)),
        }
        tracing::info!(image, "pulling a missing image");
        self.pull(image).await?;
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) => Err(pull_error(image, &docker_message(&e))),
        }
    }

    async fn has_image(&self, image: &str) -> Result<bool> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(docker_error(&format!("image {image}"), e)),
        }
    }

    async fn image_info(&self, image: &str) -> Result<Option<ImageInfo>> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(Some(ImageInfo {
                id: i.id.unwrap_or_default(),
                repo_digests: i.repo_digests.unwrap_or_default(),
            })),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(docker_error(&format!("image {image}"), e)),
        }
    }

    async fn tag_image(&self, id: &str, reference: &str) -> Result<()> {
        let (repo, tag) = split_reference(reference);
        let mut opts = TagImageOptionsBuilder::default().repo(&repo);
        if let Some(tag) = &tag {
            opts = opts.tag(tag);
        }
        self.docker
            .tag_image(id, Some(opts.build()))
            .await
            .map_err(|e| docker_error(&format!("tagging image {id} as {reference}"), e))
    }

    async fn save_image(&self, image: &str) -> Result<ImageStream> {
        if !self.has_image(image).await? {
            return Err(Error::NotFound(format!(
                "image {image}: not present on this node"
            )));
        }
        let what = format!("saving image {image}");
        Ok(self
            .docker
            .clone()
            .with_timeout(IMAGE_TRANSFER_TIMEOUT)
            .export_image(image)
            .map(move |r| r.map_err(|e| docker_error(&what, e)))
            .boxed())
    }

    async fn load_image(&self, tar: ImageStream) -> Result<()> {
        // Another node's tar: its tags are not applied (see `image_tar`). An error of the
        // stream (a refused tar, a broken transfer) reaches the engine as a cut body;
        // it is kept to say why.
        let cut: std::sync::Arc<std::sync::Mutex<Option<Error>>> = Default::default();
        let seen = cut.clone();
        let tar = super::image_tar::untagged(tar, "another node").inspect(move |r| {
            if let Err(e) = r {
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                seen.get_or_insert_with(|| e.clone());
            }
        });
        let opts = ImportImageOptionsBuilder::default().quiet(true).build();
        // The engine answers once it has read the whole tar: the client's usual
        // time-out would cut a long transfer.
        let client = self.docker.clone().with_timeout(IMAGE_TRANSFER_TIMEOUT);
        let mut progress = client.import_image_stream(opts, tar, None);
        let why = |e: Error| {
            cut.lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or(e)
        };
        while let Some(item) = progress.next().await {
            let info = item.map_err(|e| why(docker_error("loading an image", e)))?;
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(why(Error::Internal(format!("loading an image: {detail}"))));
            }
        }
        Ok(())
    }

    async fn events(&self, node: NodeId, since_ms: u64) -> Option<ContainerEvents> {
        let mut filters = HashMap::new();
        filters.insert("type", vec!["container".to_string()]);
        filters.insert("label", vec![format!("{LABEL_NODE_ID}={node}")]);
        filters.insert(
            "event",
            WATCHED_EVENTS.iter().map(|e| e.to_string()).collect(),
        );
        // Seconds and nanoseconds: the engine reads the digits after the point as a
        // count of nanoseconds.
        let since = format!("{}.{:09}", since_ms / 1000, (since_ms % 1000) * 1_000_000);
        let opts = EventsOptionsBuilder::default()
            .since(&since)
            .filters(&filters)
            .build();
        let events = self.docker.events(Some(opts)).filter_map(|e| async move {
            match e {
                Ok(m) => m
                    .actor
                    .and_then(|a| a.attributes)
                    .and_then(|mut labels| labels.remove(LABEL_TASK_ID))
                    .map(|id| Ok(TaskId(id))),
                Err(e) => Some(Err(docker_error("following the engine's events", e))),
            }
        });
        Some(Box::pin(events))
    }

    async fn create(&self, node: NodeId, task: &Task, net: &TaskNetwork) -> Result<String> {
        let name = container_name(node, task);
        if !net.dns.is_empty() {
            let write = std::fs::create_dir_all(RESOLV_DIR).and_then(|()| {
                std::fs::write(
                    resolv_path(&task.id),
                    resolv_conf(net, &task.spec.container.options.dns_search),
                )
            });
            if let Err(e) = write {
                return Err(Error::Internal(format!(
                    "writing {}: {e}",
                    resolv_path(&task.id)
                )));
            }
        }
        let body = create_body(node, task, net);
        let id = self.create_replacing(&name, task, body).await?;
        for n in net.attachments().iter().skip(1) {
            let network = docker_network_name(&n.id);
            let connect = dm::NetworkConnectRequest {
                container: id.clone(),
                endpoint_config: Some(dm::EndpointSettings::default()),
            };
            if let Err(e) = self.docker.connect_network(&network, connect).await {
                let _ = self.remove(&id).await;
                return Err(docker_error(
                    &format!("connecting container {name} to network {}", n.name),
                    e,
                ));
            }
        }
        Ok(id)
    }

    async fn ensure_networks(&self, nets: &[AssignedNetwork]) -> Result<Vec<(NetworkId, String)>> {
        self.bridges.ensure(&self.docker, nets).await
    }

    async fn prune_networks(&self, keep: &std::collections::BTreeSet<NetworkId>) -> Result<()> {
        self.bridges.prune(&self.docker, keep).await;
        Ok(())
    }

    async fn start(&self, container_id: &str) -> Result<()> {
        self.docker
            .start_container(container_id, None)
            .await
            .map_err(|e| docker_error(&format!("starting container {container_id}"), e))
    }

    async fn inspect(&self, container_id: &str) -> Result<ContainerState> {
        let r = self
            .docker
            .inspect_container(container_id, None)
            .await
            .map_err(|e| docker_error(&format!("container {container_id}"), e))?;
        Ok(container_state(r))
    }

    async fn stop(&self, container_id: &str, grace: Duration) -> Result<()> {
        let secs = ceil_secs(grace);
        let opts = StopContainerOptionsBuilder::default()
            .t(i32::try_from(secs).unwrap_or(i32::MAX))
            .build();
        let client = self.docker.clone().with_timeout(
            Duration::from_secs(u64::try_from(secs).unwrap_or(u64::MAX / 2)) + STOP_SLACK,
        );
        client
            .stop_container(container_id, Some(opts))
            .await
            .map_err(|e| docker_error(&format!("stopping container {container_id}"), e))
    }

    async fn remove(&self, container_id: &str) -> Result<()> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        // Its task's resolv.conf goes with it (a node would otherwise keep one file per
        // task it ever ran under /run/orc/resolv).
        let task = self
            .docker
            .inspect_container(container_id, None)
            .await
            .ok()
            .and_then(|c| c.config?.labels?.get(LABEL_TASK_ID).cloned())
            .filter(|t| !t.is_empty() && !t.contains('/') && !t.contains(".."));
        match self.docker.remove_container(container_id, Some(opts)).await {
            Ok(()) => {
                if let Some(t) = task {
                    let _ = std::fs::remove_file(resolv_path(&TaskId(t)));
                }
                Ok(())
            }
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(docker_error(
                &format!("removing container {container_id}"),
                e,
            )),
        }
    }

    async fn list(&self, node: NodeId) -> Result<Vec<ListedContainer>> {
        let mut filters = HashMap::new();
        filters.insert("label", vec![format!("{LABEL_NODE_ID}={node}")]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| docker_error("listing containers", e))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let task = c.labels.as_ref()?.get(LABEL_TASK_ID)?.clone();
                Some(ListedContainer {
                    container_id: c.id?,
                    task_id: TaskId(task),
                    running: c.state == Some(dm::ContainerSummaryStateEnum::RUNNING),
                })
            })
            .collect())
    }

    async fn volume_dir(
        &self,
        name: &str,
        create: Option<&crate::store::ServiceId>,
    ) -> Result<Option<std::path::PathBuf>> {
        super::volumes::check_name(name)?;
        let what = format!("volume {name}");
        let v = match self.docker.inspect_volume(name).await {
            Ok(v) => v,
            Err(e) => match docker_error(&what, e) {
                Error::NotFound(_) => {
                    let Some(service) = create else {
                        return Ok(None);
                    };
                    let labels = HashMap::from([(
                        super::volumes::LABEL_VOLUME_SERVICE.to_string(),
                        service.to_string(),
                    )]);
                    self.docker
                        .create_volume(dm::VolumeCreateRequest {
                            name: Some(name.to_string()),
                            driver: Some("local".into()),
                            labels: Some(labels),
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| docker_error(&format!("creating {what}"), e))?
                }
                e => return Err(e),
            },
        };
        if v.driver != "local" {
            return Err(Error::Conflict(format!(
                "{what}: of driver {}, not local: it cannot be copied",
                v.driver
            )));
        }
        Ok(Some(std::path::PathBuf::from(v.mountpoint)))
    }

    async fn list_volumes(&self) -> Result<Vec<(String, String, Option<std::path::PathBuf>)>> {
        let list = self
            .docker
            .list_volumes(None::<bollard::query_parameters::ListVolumesOptions>)
            .await
            .map_err(|e| docker_error("listing volumes", e))?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| {
                let dir = (v.driver == "local").then(|| std::path::PathBuf::from(&v.mountpoint));
                (v.name, v.driver, dir)
            })
            .collect())
    }

    async fn volume_users(&self, name: &str) -> Result<Vec<TaskId>> {
        Ok(self
            .containers_using(name, true)
            .await?
            .into_iter()
            .filter_map(|c| Some(TaskId(c.labels?.get(LABEL_TASK_ID)?.clone())))
            .collect())
    }

    async fn volume_in_use(&self, name: &str) -> Result<bool> {
        Ok(!self.containers_using(name, false).await?.is_empty())
    }

    async fn remove_volume(&self, name: &str) -> Result<bool> {
        super::volumes::check_name(name)?;
        // The stopped containers of orc's old tasks that name it go first; a running
        // container, or one orc did not make, keeps it.
        let users = self.containers_using(name, true).await?;
        for c in &users {
            let ours = c
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(LABEL_NODE_ID));
            let running = c.state == Some(dm::ContainerSummaryStateEnum::RUNNING);
            if running || !ours {
                return Ok(false);
            }
        }
        for id in users.iter().filter_map(|c| c.id.as_deref()) {
            self.remove(id).await?;
        }
        match self
            .docker
            .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await
        {
            Ok(()) => Ok(true),
            Err(e) => match docker_error(&format!("removing volume {name}"), e) {
                Error::NotFound(_) => Ok(true),
                Error::Conflict(_) => Ok(false),
                e => Err(e),
            },
        }
    }

    async fn logs(&self, container_id: &str, opts: LogOptions) -> Result<LogStream> {
        // Fail early (and with NotFound) for a missing container.
        self.inspect(container_id).await?;
        let tail = opts
            .tail
            .map(|n| n.to_string())
            .unwrap_or_else(|| "all".into());
        let q = LogsOptionsBuilder::default()
            .follow(opts.follow)
            .stdout(true)
            .stderr(true)
            .timestamps(opts.timestamps)
            .tail(&tail)
            .build();
        let what = format!("logs of container {container_id}");
        let timestamps = opts.timestamps;
        let stream = self
            .docker
            .logs(container_id, Some(q))
            .flat_map(move |item| {
                let lines = match item {
                    Ok(bollard::container::LogOutput::StdErr { message }) => {
                        log_lines(LogSource::Stderr, &message, timestamps)
                    }
                    Ok(
                        bollard::container::LogOutput::StdOut { message }
                        | bollard::container::LogOutput::Console { message },
                    ) => log_lines(LogSource::Stdout, &message, timestamps),
                    Ok(bollard::container::LogOutput::StdIn { .. }) => vec![],
                    Err(e) => vec![Err(docker_error(&what, e))],
                };
                futures::stream::iter(lines)
            });
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::service::{PortConfig, PublishMode};

    #[test]
    fn references_split_into_repo_and_tag() {
        assert_eq!(
            split_reference("busybox"),
            ("busybox".into(), Some("latest".into()))
        );
        assert_eq!(
            split_reference("orc-test/web:1"),
            ("orc-test/web".into(), Some("1".into()))
        );
        assert_eq!(
            split_reference("localhost:5000/x/y"),
            ("localhost:5000/x/y".into(), Some("latest".into()))
        );
        assert_eq!(
            split_reference("localhost:5000/y:2"),
            ("localhost:5000/y".into(), Some("2".into()))
        );
        assert_eq!(
            split_reference("a/b@sha256:00"),
            ("a/b@sha256:00".into(), None)
        );
    }

    #[test]
    fn host_ports_dedupe_ipv4_and_ipv6() {
        let mut map: dm::PortMap = HashMap::new();
        map.insert(
            "80/tcp".into(),
            Some(vec![
                dm::PortBinding {
                    host_ip: Some("0.0.0.0".into()),
                    host_port: Some("49153".into()),
                },
                dm::PortBinding {
                    host_ip: Some("::".into()),
                    host_port: Some("49153".into()),
                },
            ]),
        );
        // Exposed, not published: listed with host port 0 (the mesh reaches it at the
        // container's address).
        map.insert("53/udp".into(), None);
        assert_eq!(
            host_ports(&map),
            vec![
                HostPort {
                    protocol: Protocol::Tcp,
                    target: 80,
                    host_port: 49153
                },
                HostPort {
                    protocol: Protocol::Udp,
                    target: 53,
                    host_port: 0
                },
            ]
        );
        // Different ephemeral ports for IPv4 and IPv6: the IPv4 one, wherever it is
        // listed; an IPv6-only binding is kept.
        let binding = |ip: &str, port: &str| dm::PortBinding {
            host_ip: Some(ip.into()),
            host_port: Some(port.into()),
        };
        let mut map: dm::PortMap = HashMap::new();
        map.insert(
            "80/tcp".into(),
            Some(vec![binding("::", "32817"), binding("0.0.0.0", "32818")]),
        );
        map.insert("53/udp".into(), Some(vec![binding("::", "32900")]));
        assert_eq!(
            host_ports(&map),
            vec![
                HostPort {
                    protocol: Protocol::Tcp,
                    target: 80,
                    host_port: 32818
                },
                HostPort {
                    protocol: Protocol::Udp,
                    target: 53,
                    host_port: 32900
                },
            ]
        );
    }

    #[test]
    fn log_frames_split_into_lines_with_timestamps() {
        let lines = log_lines(
            LogSource::Stdout,
            b"2024-01-01T00:00:00.1Z hello world\n",
            true,
        );
        assert_eq!(
            lines,
            vec![Ok(LogLine {
                source: LogSource::Stdout,
                timestamp: "2024-01-01T00:00:00.1Z".into(),
                text: "hello world".into()
            })]
        );
    }

    #[test]
    fn only_host_mode_ports_are_published_and_the_rest_exposed() {
        let task = Task {
            vip: String::new(),
            endpoint: None,
            id: TaskId("t1".into()),
            service_id: crate::store::ServiceId("s1".into()),
            service_name: "web".into(),
            slot: 2,
            node_id: None,
            spec_version: 1,
            spec: Default::default(),
            desired_state: crate::store::TaskState::Running,
            status: crate::store::TaskStatus::new(crate::store::TaskState::Assigned, "", 0),
            created_ms: 0,
        };
        let ports = [
            PortConfig {
                protocol: Protocol::Tcp,
                target: 80,
                published: 8080,
                mode: PublishMode::Ingress,
                proxy_protocol: Default::default(),
            },
            PortConfig {
                protocol: Protocol::Udp,
                target: 53,
                published: 5353,
                mode: PublishMode::Host,
                proxy_protocol: Default::default(),
            },
        ];
        let net = TaskNetwork {
            ports: ports.to_vec(),
            expose: vec![6379, 80],
            dns: vec!["10.233.0.1".into()],
            dns_search: vec!["shop.orc.internal".into()],
            dns_options: vec!["ndots:2".into()],
            image_sources: vec![],
            networks: Default::default(),
        };
        let body = create_body(NodeId(7), &task, &net);
        let hc = body.host_config.clone().unwrap();
        // Nothing is published on the node but the `mode: host` port.
        assert_eq!(hc.publish_all_ports, None);
        assert_eq!(hc.network_mode.as_deref(), Some("orc_default"));
        let mounts = hc.mounts.clone().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.target.as_deref() == Some("/etc/resolv.conf")
                    && m.source.as_deref() == Some("/run/orc/resolv/t1.conf")
                    && m.read_only == Some(true)),
            "{mounts:?}"
        );
        assert_eq!(
            resolv_conf(&net, &[]),
            "nameserver 10.233.0.1\nsearch shop.orc.internal\noptions ndots:2\n"
        );
        assert_eq!(hc.dns, Some(vec!["10.233.0.1".to_string()]));
        assert_eq!(hc.dns_search, Some(vec!["shop.orc.internal".to_string()]));
        assert_eq!(hc.dns_options, Some(vec!["ndots:2".to_string()]));
        let b = body.host_config.and_then(|h| h.port_bindings).unwrap();
        assert!(
            !b.contains_key("80/tcp"),
            "an ingress port is not published: {b:?}"
        );
        assert_eq!(
            b["53/udp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("5353")
        );
        assert_eq!(
            body.exposed_ports,
            Some(vec![
                "53/udp".to_string(),
                "6379/tcp".to_string(),
                "80/tcp".to_string()
            ])
        );
        assert_eq!(container_name(NodeId(7), &task), "web.2.t1");
        let labels = body.labels.unwrap();
        assert_eq!(labels["orc.node.id"], "0000000000000007");
        assert_eq!(labels["orc.task.slot"], "2");
    }
}
