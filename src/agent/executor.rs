//! The executor: the seam between the task runner and the container engine.
//!
//! The [`runner`](super::runner) decides *what* should happen to a task (pull, create,
//! start, watch, stop, remove); an [`Executor`] knows *how* to do each step on one
//! engine. There are two: [`DockerExecutor`](super::docker_exec::DockerExecutor), which
//! talks to a real Docker engine with bollard, and
//! [`FakeExecutor`](super::fake::FakeExecutor), an in-memory engine that tests drive by
//! hand (make a container exit, turn unhealthy, vanish).
//!
//! The contract both honour:
//!
//! - A container is created for one task on one node and carries the labels of
//!   [`container_labels`] (node id, service id and name, task id and slot) on top of
//!   the spec's own labels, and the name of [`container_name`]. The labels are how a
//!   restarted agent finds the containers it already runs ([`Executor::list`]).
//! - Every call is idempotent where it can be: starting a running container, stopping a
//!   stopped one and removing a removed one succeed. A container that does not exist is
//!   [`Error::NotFound`](crate::Error::NotFound) for [`Executor::inspect`],
//!   [`Executor::start`] and [`Executor::stop`]: the runner reads that as "removed
//!   behind our back".
//! - [`Executor::inspect`] reports what the runner needs to derive a task state:
//!   running or not, the exit code, the health-check status (empty without a health
//!   check), the host ports Docker published, whether the kernel killed it for memory.
//! - Images move between engines as `docker save` tars ([`Executor::save_image`],
//!   [`Executor::load_image`]), streamed, never held whole in memory. An image is
//!   known by its engine id ([`Executor::image_info`], `sha256:...`), which a save and
//!   a load keep: that id is what a service's image is pinned to
//!   ([`crate::store::image`]).
//! - Errors name what they concern (the image, the container) in words for the operator:
//!   they end up in the task's status.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::BoxStream;
pub use prost::bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::store::service::{ContainerSpec, PortConfig};
use crate::store::task::HostPort;
use crate::store::{NetworkId, NodeId, Task, TaskId};

/// Label: the node the container was created for (16 hex digits).
pub const LABEL_NODE_ID: &str = "orc.node.id";
/// Label: the service's id.
pub const LABEL_SERVICE_ID: &str = "orc.service.id";
/// Label: the service's name.
pub const LABEL_SERVICE_NAME: &str = "orc.service.name";
/// Label: the task's id.
pub const LABEL_TASK_ID: &str = "orc.task.id";
/// Label: the task's slot (0 for a global task).
pub const LABEL_TASK_SLOT: &str = "orc.task.slot";

/// The container's name: `<service>.<slot>.<task id>`, or `<service>.<node id>.<task
/// id>` for a global task (slot 0), as in Swarm mode.
pub fn container_name(node: NodeId, task: &Task) -> String {
    if task.slot == 0 {
        format!("{}.{}.{}", task.service_name, node, task.id)
    } else {
        format!("{}.{}.{}", task.service_name, task.slot, task.id)
    }
}

/// The labels a task's container carries: the spec's container labels, then orc's own
/// (which win on a clash).
pub fn container_labels(node: NodeId, task: &Task) -> BTreeMap<String, String> {
    let mut labels = task.spec.container.labels.clone();
    labels.insert(LABEL_NODE_ID.into(), node.to_string());
    labels.insert(LABEL_SERVICE_ID.into(), task.service_id.to_string());
    labels.insert(LABEL_SERVICE_NAME.into(), task.service_name.clone());
    labels.insert(LABEL_TASK_ID.into(), task.id.to_string());
    labels.insert(LABEL_TASK_SLOT.into(), task.slot.to_string());
    labels
}

/// What the engine says about one container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerState {
    /// The container's full id.
    pub id: String,
    /// The engine's word for it: `created`, `running`, `exited`, `dead`, ...
    pub status: String,
    /// Its main process runs (paused and restarting count as running).
    pub running: bool,
    /// The exit code, once it exited.
    pub exit_code: Option<i64>,
    /// `healthy`, `unhealthy`, `starting`, or empty without a health check.
    pub health: String,
    /// The host ports published for it, one per container port and protocol.
    pub ports: Vec<HostPort>,
    /// Its address on each orc network it is on.
    pub addresses: Vec<crate::store::TaskAddress>,
    /// The kernel killed it for want of memory.
    pub oom_killed: bool,
    /// When its main process last started (the engine's RFC 3339 text; empty if never).
    pub started_at: String,
    /// The engine's error, if starting it failed.
    pub error: String,
}

/// A container labelled for a node, as [`Executor::list`] finds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedContainer {
    /// The container's full id.
    pub container_id: String,
    /// The task it was created for (its `orc.task.id` label).
    pub task_id: TaskId,
    /// Its main process runs.
    pub running: bool,
}

/// What `service logs` asks of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogOptions {
    /// Keep the stream open and send new lines as they come.
    pub follow: bool,
    /// Only the last this many lines (`None` = all).
    pub tail: Option<u64>,
    /// Prefix each line with the engine's time stamp ([`LogLine::timestamp`]).
    pub timestamps: bool,
}

/// Which output a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// stdout or stderr.
    pub source: LogSource,
    /// RFC 3339 time stamp when asked for ([`LogOptions::timestamps`]), else empty.
    pub timestamp: String,
    /// The line, without its newline.
    pub text: String,
}

/// A stream of log lines; it ends when the container's output does (or, when
/// following, when the container stops).
pub type LogStream = BoxStream<'static, Result<LogLine>>;

/// What a task's container needs of the cluster's networking, sent with its assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskNetwork {
    /// The service's published ports: Docker publishes each on this node.
    pub ports: Vec<PortConfig>,
    /// Ports reachable inside the cluster only (`--expose`), TCP.
    #[serde(default)]
    pub expose: Vec<u16>,
    /// Name servers of the container (the cluster DNS).
    #[serde(default)]
    pub dns: Vec<String>,
    /// Search domains of the container (its stack's, for short names).
    #[serde(default)]
    pub dns_search: Vec<String>,
    /// Resolver options (`ndots:2` with a search domain, so that `tasks.SHORT` is
    /// looked up in the stack's domain first).
    #[serde(default)]
    pub dns_options: Vec<String>,
    /// Other nodes the image may be loaded from when this node's engine lacks it and
    /// cannot pull it (image shipping, [`super::images`]); sent only until the
    /// container exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_sources: Vec<ImageSource>,
    /// The networks the container is on, in the service's order (empty: the built-in
    /// one, as for an assignment stored before networks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<AssignedNetwork>,
}

/// A network a task's container is on; on each node, one Docker bridge of its own
/// ([`bridge_name`], [`docker_network_name`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedNetwork {
    /// The network's id.
    pub id: NetworkId,
    /// Its name, for labels and messages.
    pub name: String,
    /// No route out of the cluster.
    #[serde(default)]
    pub internal: bool,
    /// Carried between nodes through mutual TLS.
    #[serde(default)]
    pub encrypted: bool,
}

impl AssignedNetwork {
    /// The built-in network.
    pub fn default_network() -> Self {
        AssignedNetwork {
            id: NetworkId::default_network(),
            name: crate::store::network::DEFAULT_NETWORK.into(),
            internal: false,
            encrypted: false,
        }
    }
}

impl TaskNetwork {
    /// The ids of [`TaskNetwork::attachments`], without copying the rest.
    pub fn network_ids(&self) -> Vec<NetworkId> {
        if self.networks.is_empty() {
            vec![NetworkId::default_network()]
        } else {
            self.networks.iter().map(|n| n.id.clone()).collect()
        }
    }

    /// The networks the container is on (the built-in one when none is named).
    pub fn attachments(&self) -> Vec<AssignedNetwork> {
        if self.networks.is_empty() {
            vec![AssignedNetwork::default_network()]
        } else {
            self.networks.clone()
        }
    }
}

/// The prefix of the Docker networks orc makes.
pub const DOCKER_NETWORK_PREFIX: &str = "orc_";

/// The Docker network of orc network `id` on a node: `orc_<id>`.
pub fn docker_network_name(id: &NetworkId) -> String {
    format!("{DOCKER_NETWORK_PREFIX}{id}")
}

/// The orc network of Docker network `name`, if it is one of orc's.
pub fn network_of_docker_name(name: &str) -> Option<NetworkId> {
    name.strip_prefix(DOCKER_NETWORK_PREFIX)
        .filter(|id| !id.is_empty())
        .map(|id| NetworkId(id.to_string()))
}

/// The bridge device of orc network `id` (at most 15 bytes, the kernel's limit):
/// `orc-default`, or `orc` and the first 12 digits of the id.
pub fn bridge_name(id: &NetworkId) -> String {
    if id.is_default() {
        "orc-default".into()
    } else {
        format!("orc{}", id.0.chars().take(12).collect::<String>())
    }
}

/// A node that may hold a task's image, as the assignment names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSource {
    /// Its cluster address (`IP:PORT`), where `NodeApi.ImageSave` is served.
    pub addr: String,
    /// Its host name, for the task's status message.
    #[serde(default)]
    pub hostname: String,
    /// It runs a container of the image, so its engine surely has it (the others are
    /// only worth a try).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub known: bool,
}

/// What the engine says about one image.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The engine's image id, `sha256:...` (the digest of the image's config).
    pub id: String,
    /// Registry digests the engine knows for it (`repo@sha256:...`), if any.
    pub repo_digests: Vec<String>,
}

/// An image as `docker save` writes it (a tar), streamed in chunks.
pub type ImageStream = BoxStream<'static, Result<Bytes>>;

/// What happened to this node's containers: each item names the task whose container
/// started, exited, was removed or changed its health (an error ends the stream).
pub type ContainerEvents = BoxStream<'static, Result<TaskId>>;

/// The container events a runner is told of ([`Executor::events`]).
pub const WATCHED_EVENTS: [&str; 7] = [
    "start",
    "die",
    "oom",
    "destroy",
    "health_status",
    "pause",
    "unpause",
];

/// One container engine, seen by the task runner. Usable as `Arc<dyn Executor>`.
#[tonic::async_trait]
pub trait Executor: Send + Sync {
    /// The [`WATCHED_EVENTS`] of node `node`'s containers from `since_ms` (ms since
    /// the epoch) on: a subscription asks for the moments before it again, so that
    /// nothing that happened between a look at a container and the subscription is
    /// missed. `None`: this engine tells none, and a runner looks at its running
    /// containers every [`super::runner::POLL_INTERVAL`].
    async fn events(&self, _node: NodeId, _since_ms: u64) -> Option<ContainerEvents> {
        None
    }

    /// Makes sure the spec's image is present: a local image is used as it is (no
    /// registry call); a missing one is pulled. The error names the image.
    async fn ensure_image(&self, spec: &ContainerSpec) -> Result<()>;

    /// Whether the engine has `image` (no registry call).
    async fn has_image(&self, image: &str) -> Result<bool>;

    /// The id (and registry digests) of `image`, a reference or an image id; `None`
    /// if the engine does not have it (no registry call).
    async fn image_info(&self, image: &str) -> Result<Option<ImageInfo>>;

    /// Tags the image whose id is `id` as `reference` (`docker tag`).
    async fn tag_image(&self, id: &str, reference: &str) -> Result<()>;

    /// `image` (a reference or an image id) as `docker save` writes it, streamed as
    /// the engine writes it; `NotFound` if the engine does not have it. Saved by id,
    /// the tar names no tag.
    async fn save_image(&self, image: &str) -> Result<ImageStream>;

    /// Loads a tar that `docker save` wrote (`docker load`), fed to the engine as it
    /// arrives; returns once the engine has loaded it.
    async fn load_image(&self, tar: ImageStream) -> Result<()>;

    /// Creates (does not start) the container of `task` on `node`, with `net` (the
    /// service's ports to publish, its exposed ports, the cluster DNS): returns its id. A
    /// leftover container of the same task with the same name is replaced.
    async fn create(&self, node: NodeId, task: &Task, net: &TaskNetwork) -> Result<String>;

    /// Makes sure this node's bridge of each network exists (see
    /// [`super::networks`]); returns each one's subnet (`A.B.C.D/N`).
    async fn ensure_networks(&self, nets: &[AssignedNetwork]) -> Result<Vec<(NetworkId, String)>>;

    /// Removes the bridges this node made for networks that none of its tasks is on
    /// now (`keep` holds those that some task is on); the built-in network stays. A
    /// bridge with containers still attached stays until a later call.
    async fn prune_networks(&self, keep: &std::collections::BTreeSet<NetworkId>) -> Result<()> {
        let _ = keep;
        Ok(())
    }

    /// Starts a created container; a running one is left alone.
    async fn start(&self, container_id: &str) -> Result<()>;

    /// What the container is doing now; `NotFound` if it is gone.
    async fn inspect(&self, container_id: &str) -> Result<ContainerState>;

    /// Stops the container: its stop signal (SIGTERM), then SIGKILL after `grace`.
    /// Returns once it has stopped. A stopped container is left alone.
    async fn stop(&self, container_id: &str, grace: Duration) -> Result<()>;

    /// Removes the container (forcefully, with its anonymous volumes); a container
    /// that is already gone is fine.
    async fn remove(&self, container_id: &str) -> Result<()>;

    /// Every container (running or not) labelled for `node`, with its task.
    async fn list(&self, node: NodeId) -> Result<Vec<ListedContainer>>;

    /// The container's output, for `service logs`.
    async fn logs(&self, container_id: &str, opts: LogOptions) -> Result<LogStream>;

    /// The directory on this host of the local volume `name` ([`super::volumes`]):
    /// made, labelled for `create`'s service, when missing and `create` is given;
    /// `None` when missing.
    async fn volume_dir(
        &self,
        name: &str,
        create: Option<&crate::store::ServiceId>,
    ) -> Result<Option<std::path::PathBuf>> {
        let _ = (name, create);
        Err(crate::Error::Unavailable(
            "this engine cannot copy volumes".into(),
        ))
    }

    /// The engine's volumes: name, driver, and for a local one its directory.
    async fn list_volumes(&self) -> Result<Vec<(String, String, Option<std::path::PathBuf>)>> {
        Ok(vec![])
    }

    /// The tasks of orc's containers (running or not) that use the volume `name`.
    async fn volume_users(&self, name: &str) -> Result<Vec<TaskId>> {
        let _ = name;
        Ok(vec![])
    }

    /// Whether a running container uses the volume `name`.
    async fn volume_in_use(&self, name: &str) -> Result<bool> {
        let _ = name;
        Ok(false)
    }

    /// Removes the volume `name`, and the stopped containers of orc's tasks that use it;
    /// `false` (and nothing removed) while a running container, or one orc did not
    /// make, uses it. A volume that is gone is fine.
    async fn remove_volume(&self, name: &str) -> Result<bool> {
        let _ = name;
        Ok(true)
    }
}
