//! The fake executor: an in-memory container engine that tests drive by hand.
//!
//! It is the one fake of the [`Executor`] seam, shared by the runner's unit tests and by
//! in-process cluster tests, so it is compiled always (not only under `cfg(test)`).
//! Everything is deterministic: container ids count up (`fake0000000001`, ...), host
//! ports count up from 30000, "time stamps" count up too. Nothing happens by itself: a
//! container runs from [`Executor::start`] until a test makes it [`exit`], [`vanish`],
//! or the runner stops it; a health check stays `starting` until a test calls
//! [`set_health`] (or [`set_auto_healthy`] was set).
//!
//! Images are all present unless a test says otherwise with [`fail_pull`]; such an image
//! becomes present when [`Executor::load_image`] loads what another fake's
//! [`Executor::save_image`] wrote (a tiny stand-in for a tar naming the image's id and,
//! saved by reference, its tag). A present image's id is [`image_id_of`] its reference
//! unless a test retags the reference to other content ([`set_image`]). An image can
//! carry a health check of its own ([`set_image_healthcheck`]), as `orc-test/web:1`
//! does; the task's spec overrides it the way Docker's does (`["NONE"]` disables it).
//!
//! [`exit`]: FakeExecutor::exit
//! [`vanish`]: FakeExecutor::vanish
//! [`set_health`]: FakeExecutor::set_health
//! [`set_auto_healthy`]: FakeExecutor::set_auto_healthy
//! [`fail_pull`]: FakeExecutor::fail_pull
//! [`set_image_healthcheck`]: FakeExecutor::set_image_healthcheck
//! [`set_image`]: FakeExecutor::set_image

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::executor::{
    container_labels, container_name, AssignedNetwork, Bytes, ContainerState, Executor, ImageInfo,
    ImageStream, ListedContainer, LogLine, LogOptions, LogSource, LogStream, TaskNetwork,
    LABEL_NODE_ID, LABEL_TASK_ID,
};
use crate::error::{Error, Result};
use crate::store::service::{ContainerSpec, PortConfig};
use crate::store::task::HostPort;
use crate::store::{NetworkId, NodeId, Task, TaskId};

/// Exit code of a container stopped by SIGTERM (128 + 15).
pub const EXIT_SIGTERM: i64 = 143;
/// Exit code of a container killed by SIGKILL (128 + 9).
pub const EXIT_SIGKILL: i64 = 137;

/// One fake container, as a test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeContainer {
    /// Its id.
    pub id: String,
    /// Its name ([`container_name`]).
    pub name: String,
    /// Its labels ([`container_labels`]).
    pub labels: BTreeMap<String, String>,
    /// The spec it was created from.
    pub spec: ContainerSpec,
    /// The ports it was asked to publish.
    pub ports: Vec<PortConfig>,
    /// The networks it was created on.
    pub networks: Vec<AssignedNetwork>,
    /// What inspect reports.
    pub state: ContainerState,
    /// How many times it was started.
    pub starts: u32,
    /// It ignores SIGTERM: stopping it takes the whole grace period.
    pub ignores_sigterm: bool,
    /// The grace period of the last stop.
    pub last_stop_grace: Option<Duration>,
}

/// What the fake's `docker save` writes before the image's id and tag.
const FAKE_TAR: &str = "fake-image-tar ";

/// The id a fake engine gives the image `reference` stands for by default: `sha256:`
/// and the SHA-256 of the reference.
pub fn image_id_of(reference: &str) -> String {
    use sha2::Digest;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(reference.as_bytes()))
    )
}

/// A fake `docker save` tar of the image `id`, tagged `tag` (empty: saved by id).
pub fn image_tar(id: &str, tag: &str) -> ImageStream {
    let chunks = vec![
        Ok(Bytes::from_static(FAKE_TAR.as_bytes())),
        Ok(Bytes::from(format!("{id} {tag}").into_bytes())),
    ];
    futures::stream::iter(chunks).boxed()
}

#[derive(Default)]
struct Engine {
    containers: BTreeMap<String, FakeContainer>,
    logs: BTreeMap<String, Vec<LogLine>>,
    followers: BTreeMap<String, Vec<mpsc::UnboundedSender<Result<LogLine>>>>,
    next_id: u64,
    next_port: u16,
    clock: u64,
    failing_pulls: BTreeMap<String, String>,
    /// References tagged to an image id by a load, a tag or a test (present even if
    /// pulls fail); other references have their default id ([`image_id_of`]).
    tags: BTreeMap<String, String>,
    /// Image ids present (loaded, tagged, or seen by reference).
    ids: BTreeSet<String>,
    failing_starts: BTreeMap<String, String>,
    healthcheck_images: BTreeSet<String>,
    auto_healthy: bool,
    calls: Vec<String>,
    /// Where volumes live (a directory each), once [`FakeExecutor::with_volumes`] says.
    volumes_root: Option<std::path::PathBuf>,
    /// Container events, once [`FakeExecutor::with_events`] says (else none are told).
    events: Option<tokio::sync::broadcast::Sender<TaskId>>,
    /// How many times a container was inspected.
    inspects: u64,
}

impl Engine {
    fn tick(&mut self) -> String {
        self.clock += 1;
        format!("2000-01-01T00:00:00.{:09}Z", self.clock)
    }

    fn container(&mut self, id: &str) -> Result<&mut FakeContainer> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(format!("container {id}: no such container")))
    }

    /// The container's process ends with `code`; followers' streams end.
    fn end(&mut self, id: &str, code: i64) {
        if let Some(c) = self.containers.get_mut(id) {
            if c.state.running {
                c.state.running = false;
                c.state.status = "exited".into();
                c.state.exit_code = Some(code);
                c.state.ports.clear();
            }
        }
        self.followers.remove(id);
        self.tell(id);
    }

    /// Tells the followers of the events that container `id` changed.
    fn tell(&mut self, id: &str) {
        let task = self
            .containers
            .get(id)
            .and_then(|c| c.labels.get(LABEL_TASK_ID));
        if let (Some(tx), Some(task)) = (&self.events, task) {
            let _ = tx.send(TaskId(task.clone()));
        }
    }

    /// The id `image` (a reference or an id) stands for, if present.
    fn resolve(&mut self, image: &str) -> Option<String> {
        if crate::store::image::is_image_id(image) {
            return self.ids.contains(image).then(|| image.to_string());
        }
        let id = match self.tags.get(image) {
            Some(id) => id.clone(),
            None if self.failing_pulls.contains_key(image) => return None,
            None => image_id_of(image),
        };
        self.ids.insert(id.clone());
        Some(id)
    }

    fn has_healthcheck(&self, spec: &ContainerSpec) -> bool {
        match &spec.healthcheck {
            Some(h) if h.test.first().map(String::as_str) == Some("NONE") => false,
            Some(h) if !h.test.is_empty() => true,
            _ => self.healthcheck_images.contains(&spec.image),
        }
    }
}

/// An in-memory [`Executor`] for tests.
#[derive(Default)]
pub struct FakeExecutor {
    engine: Mutex<Engine>,
}

impl FakeExecutor {
    /// An empty engine: no containers, every image present, no health checks.
    pub fn new() -> Self {
        FakeExecutor {
            engine: Mutex::new(Engine {
                next_port: 30000,
                ..Engine::default()
            }),
        }
    }

    fn engine(&self) -> MutexGuard<'_, Engine> {
        // A test that panicked while holding the lock has failed already; the state is
        // still the best there is.
        self.engine
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `image` is missing and pulling it fails with `error` (which should name it).
    pub fn fail_pull(&self, image: &str, error: &str) {
        self.engine()
            .failing_pulls
            .insert(image.to_string(), error.to_string());
    }

    /// Tags `reference` as the image `id` (as `docker tag` does: the content it
    /// names changes, the other image stays present by id).
    pub fn set_image(&self, reference: &str, id: &str) {
        let mut e = self.engine();
        e.tags.insert(reference.to_string(), id.to_string());
        e.ids.insert(id.to_string());
    }

    /// Starting a container of `image` fails with `error`.
    pub fn fail_start(&self, image: &str, error: &str) {
        self.engine()
            .failing_starts
            .insert(image.to_string(), error.to_string());
    }

    /// `image` has (or has not) a HEALTHCHECK of its own.
    pub fn set_image_healthcheck(&self, image: &str, has: bool) {
        let mut e = self.engine();
        if has {
            e.healthcheck_images.insert(image.to_string());
        } else {
            e.healthcheck_images.remove(image);
        }
    }

    /// Health checks report `healthy` as soon as the container starts (for tests that
    /// do not care about the `starting` phase).
    pub fn set_auto_healthy(&self, on: bool) {
        self.engine().auto_healthy = on;
    }

    /// The container's process exits with `code`.
    pub fn exit(&self, container_id: &str, code: i64) {
        self.engine().end(container_id, code);
    }

    /// The kernel kills the container for want of memory (exit code 137).
    pub fn oom_kill(&self, container_id: &str) {
        let mut e = self.engine();
        if let Some(c) = e.containers.get_mut(container_id) {
            c.state.oom_killed = true;
        }
        e.end(container_id, EXIT_SIGKILL);
    }

    /// The health check reports `health` (`healthy`, `unhealthy`, `starting`).
    pub fn set_health(&self, container_id: &str, health: &str) {
        let mut e = self.engine();
        if let Some(c) = e.containers.get_mut(container_id) {
            c.state.health = health.to_string();
        }
        e.tell(container_id);
    }

    /// The engine tells its container events ([`Executor::events`]).
    pub fn with_events(&self) {
        self.engine().events = Some(tokio::sync::broadcast::channel(1024).0);
    }

    /// The engine stops telling events: the streams end, and no new one is given.
    pub fn stop_events(&self) {
        self.engine().events = None;
    }

    /// How many times a container was inspected so far.
    pub fn inspects(&self) -> u64 {
        self.engine().inspects
    }

    /// The container disappears, as after `docker rm -f` behind the agent's back.
    pub fn vanish(&self, container_id: &str) {
        let mut e = self.engine();
        e.tell(container_id);
        e.containers.remove(container_id);
        e.logs.remove(container_id);
        e.followers.remove(container_id);
    }

    /// The container ignores SIGTERM: a stop takes the whole grace period.
    pub fn ignore_sigterm(&self, container_id: &str) {
        if let Some(c) = self.engine().containers.get_mut(container_id) {
            c.ignores_sigterm = true;
        }
    }

    /// The container writes a line.
    pub fn push_log(&self, container_id: &str, source: LogSource, text: &str) {
        let mut e = self.engine();
        let line = LogLine {
            source,
            timestamp: e.tick(),
            text: text.to_string(),
        };
        if let Some(fs) = e.followers.get_mut(container_id) {
            fs.retain(|f| f.send(Ok(line.clone())).is_ok());
        }
        e.logs
            .entry(container_id.to_string())
            .or_default()
            .push(line);
    }

    /// A container labelled for `node` and `task` that no runner created (a leftover),
    /// running if `running`. Returns its id.
    pub fn add_container(&self, node: NodeId, task: &TaskId, running: bool) -> String {
        let mut e = self.engine();
        e.next_id += 1;
        let id = format!("fake{:010}", e.next_id);
        let started_at = e.tick();
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_NODE_ID.to_string(), node.to_string());
        labels.insert(LABEL_TASK_ID.to_string(), task.to_string());
        let c = FakeContainer {
            id: id.clone(),
            name: format!("leftover.{task}"),
            labels,
            spec: ContainerSpec::default(),
            ports: vec![],
            networks: vec![],
            state: ContainerState {
                id: id.clone(),
                status: if running { "running" } else { "exited" }.into(),
                running,
                exit_code: if running { None } else { Some(0) },
                started_at,
                ..ContainerState::default()
            },
            starts: 1,
            ignores_sigterm: false,
            last_stop_grace: None,
        };
        e.containers.insert(id.clone(), c);
        id
    }

    /// A snapshot of one container.
    pub fn container(&self, container_id: &str) -> Option<FakeContainer> {
        self.engine().containers.get(container_id).cloned()
    }

    /// A snapshot of every container, by id.
    pub fn containers(&self) -> Vec<FakeContainer> {
        self.engine().containers.values().cloned().collect()
    }

    /// The container created for `task`, if any.
    pub fn container_of(&self, task: &TaskId) -> Option<FakeContainer> {
        self.engine()
            .containers
            .values()
            .find(|c| c.labels.get(LABEL_TASK_ID) == Some(&task.0))
            .cloned()
    }

    /// The calls made so far, in order: `pull IMAGE`, `save IMAGE`, `load IMAGE` (the
    /// tag the tar carried, else its id), `tag IMAGE`, `create NAME`, `start ID`, `stop
    /// ID`, `remove ID` (inspect, list and logs are not recorded).
    pub fn calls(&self) -> Vec<String> {
        self.engine().calls.clone()
    }
}

impl FakeExecutor {
    /// Gives the engine local volumes: a directory each under `root`.
    pub fn with_volumes(&self, root: &std::path::Path) {
        self.engine().volumes_root = Some(root.to_path_buf());
    }
}

#[tonic::async_trait]
impl Executor for FakeExecutor {
    async fn volume_in_use(&self, name: &str) -> Result<bool> {
        Ok(self.engine().containers.values().any(|c| {
            c.state.running
                && c.spec
                    .mounts
                    .iter()
                    .any(|m| m.kind == crate::store::service::MountKind::Volume && m.source == name)
        }))
    }

    async fn list_volumes(&self) -> Result<Vec<(String, String, Option<std::path::PathBuf>)>> {
        let Some(root) = self.engine().volumes_root.clone() else {
            return Ok(vec![]);
        };
        let mut out = vec![];
        for e in std::fs::read_dir(&root)
            .map_err(|err| Error::Internal(format!("volumes: {err}")))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            out.push((name, "local".to_string(), Some(e.path())));
        }
        out.sort();
        Ok(out)
    }

    async fn volume_dir(
        &self,
        name: &str,
        create: Option<&crate::store::ServiceId>,
    ) -> Result<Option<std::path::PathBuf>> {
        crate::agent::volumes::check_name(name)?;
        let mut e = self.engine();
        e.calls.push(format!("volume {name}"));
        let Some(root) = e.volumes_root.clone() else {
            return Err(Error::Unavailable("no volumes in this fake engine".into()));
        };
        let dir = root.join(name);
        if !dir.exists() {
            if create.is_none() {
                return Ok(None);
            }
            std::fs::create_dir_all(&dir)
                .map_err(|err| Error::Internal(format!("volume {name}: {err}")))?;
        }
        Ok(Some(dir))
    }

    async fn ensure_image(&self, spec: &ContainerSpec) -> Result<()> {
        let mut e = self.engine();
        if e.resolve(&spec.image).is_some() {
            return Ok(());
        }
        e.calls.push(format!("pull {}", spec.image));
        let err = e
            .failing_pulls
            .get(&spec.image)
            .cloned()
            .unwrap_or_else(|| format!("image {}: not present", spec.image));
        Err(Error::NotFound(err))
    }

    async fn has_image(&self, image: &str) -> Result<bool> {
        Ok(self.engine().resolve(image).is_some())
    }

    async fn image_info(&self, image: &str) -> Result<Option<ImageInfo>> {
        Ok(self.engine().resolve(image).map(|id| ImageInfo {
            id,
            repo_digests: vec![],
        }))
    }

    async fn tag_image(&self, id: &str, reference: &str) -> Result<()> {
        let mut e = self.engine();
        if !e.ids.contains(id) {
            return Err(Error::NotFound(format!("image {id}: no such image")));
        }
        e.calls.push(format!("tag {reference}"));
        e.tags.insert(reference.to_string(), id.to_string());
        Ok(())
    }

    async fn save_image(&self, image: &str) -> Result<ImageStream> {
        let Some(id) = self.engine().resolve(image) else {
            return Err(Error::NotFound(format!(
                "image {image}: not present on this node"
            )));
        };
        self.engine().calls.push(format!("save {image}"));
        let tag = if id == image { "" } else { image };
        Ok(image_tar(&id, tag))
    }

    async fn load_image(&self, mut tar: ImageStream) -> Result<()> {
        let mut all = Vec::new();
        while let Some(chunk) = tar.next().await {
            all.extend_from_slice(&chunk?);
        }
        let (id, tag) = std::str::from_utf8(&all)
            .ok()
            .and_then(|s| s.strip_prefix(FAKE_TAR))
            .and_then(|s| s.split_once(' '))
            .ok_or_else(|| Error::InvalidInput("loading an image: not an image tar".into()))?;
        let mut e = self.engine();
        e.calls
            .push(format!("load {}", if tag.is_empty() { id } else { tag }));
        e.ids.insert(id.to_string());
        if !tag.is_empty() {
            e.tags.insert(tag.to_string(), id.to_string());
        }
        Ok(())
    }

    async fn create(&self, node: NodeId, task: &Task, net: &TaskNetwork) -> Result<String> {
        let mut e = self.engine();
        let name = container_name(node, task);
        e.calls.push(format!("create {name}"));
        e.containers.retain(|_, c| c.name != name);
        e.next_id += 1;
        let id = format!("fake{:010}", e.next_id);
        let c = FakeContainer {
            id: id.clone(),
            name,
            labels: container_labels(node, task),
            spec: task.spec.container.clone(),
            ports: net.ports.clone(),
            networks: net.attachments(),
            state: ContainerState {
                id: id.clone(),
                status: "created".into(),
                ..ContainerState::default()
            },
            starts: 0,
            ignores_sigterm: false,
            last_stop_grace: None,
        };
        e.containers.insert(id.clone(), c);
        Ok(id)
    }

    async fn ensure_networks(&self, nets: &[AssignedNetwork]) -> Result<Vec<(NetworkId, String)>> {
        Ok(nets
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), format!("10.250.{i}.0/24")))
            .collect())
    }

    async fn start(&self, container_id: &str) -> Result<()> {
        let mut e = self.engine();
        e.calls.push(format!("start {container_id}"));
        let image = e.container(container_id)?.spec.image.clone();
        if let Some(err) = e.failing_starts.get(&image).cloned() {
            let c = e.container(container_id)?;
            c.state.error = err.clone();
            return Err(Error::Internal(err));
        }
        if e.container(container_id)?.state.running {
            return Ok(());
        }
        let spec = e.container(container_id)?.spec.clone();
        let health = if !e.has_healthcheck(&spec) {
            String::new()
        } else if e.auto_healthy {
            "healthy".to_string()
        } else {
            "starting".to_string()
        };
        let wanted = e.container(container_id)?.ports.clone();
        let mut ports = Vec::new();
        for p in wanted {
            let host_port = if p.is_host_published() {
                p.published
            } else {
                e.next_port += 1;
                e.next_port
            };
            ports.push(HostPort {
                protocol: p.protocol,
                target: p.target,
                host_port,
            });
        }
        ports.sort();
        ports.dedup_by(|a, b| a.protocol == b.protocol && a.target == b.target);
        let started_at = e.tick();
        let serial = e.next_id;
        let c = e.container(container_id)?;
        // One fake address per network: 10.250.<network's place>.<a serial>.
        c.state.addresses = c
            .networks
            .iter()
            .enumerate()
            .map(|(i, n)| crate::store::TaskAddress {
                network: n.id.clone(),
                ip: format!("10.250.{i}.{}", serial % 250 + 1),
            })
            .collect();
        c.starts += 1;
        c.state.running = true;
        c.state.status = "running".into();
        c.state.exit_code = None;
        c.state.health = health;
        c.state.ports = ports;
        c.state.started_at = started_at;
        e.tell(container_id);
        Ok(())
    }

    async fn inspect(&self, container_id: &str) -> Result<ContainerState> {
        let mut e = self.engine();
        e.inspects += 1;
        Ok(e.container(container_id)?.state.clone())
    }

    async fn events(
        &self,
        _node: NodeId,
        _since_ms: u64,
    ) -> Option<crate::agent::executor::ContainerEvents> {
        let rx = self.engine().events.as_ref()?.subscribe();
        let events = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(task) => return Some((Ok(task), rx)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Some(Box::pin(events))
    }

    async fn stop(&self, container_id: &str, grace: Duration) -> Result<()> {
        let ignores = {
            let mut e = self.engine();
            e.calls.push(format!("stop {container_id}"));
            let c = e.container(container_id)?;
            c.last_stop_grace = Some(grace);
            if !c.state.running {
                return Ok(());
            }
            c.ignores_sigterm
        };
        if ignores {
            tokio::time::sleep(grace).await;
            self.engine().end(container_id, EXIT_SIGKILL);
        } else {
            self.engine().end(container_id, EXIT_SIGTERM);
        }
        Ok(())
    }

    async fn remove(&self, container_id: &str) -> Result<()> {
        let mut e = self.engine();
        e.calls.push(format!("remove {container_id}"));
        e.containers.remove(container_id);
        e.logs.remove(container_id);
        e.followers.remove(container_id);
        Ok(())
    }

    async fn list(&self, node: NodeId) -> Result<Vec<ListedContainer>> {
        let node = node.to_string();
        Ok(self
            .engine()
            .containers
            .values()
            .filter(|c| c.labels.get(LABEL_NODE_ID) == Some(&node))
            .filter_map(|c| {
                Some(ListedContainer {
                    container_id: c.id.clone(),
                    task_id: TaskId(c.labels.get(LABEL_TASK_ID)?.clone()),
                    running: c.state.running,
                })
            })
            .collect())
    }

    async fn logs(&self, container_id: &str, opts: LogOptions) -> Result<LogStream> {
        let mut e = self.engine();
        let running = e.container(container_id)?.state.running;
        let all = e.logs.get(container_id).cloned().unwrap_or_default();
        let skip = match opts.tail {
            Some(n) => all
                .len()
                .saturating_sub(usize::try_from(n).unwrap_or(usize::MAX)),
            None => 0,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        for line in all.into_iter().skip(skip) {
            let _ = tx.send(Ok(line));
        }
        if opts.follow && running {
            e.followers
                .entry(container_id.to_string())
                .or_default()
                .push(tx);
        }
        let timestamps = opts.timestamps;
        let stream = futures::StreamExt::map(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
            move |r: Result<LogLine>| {
                r.map(|mut l| {
                    if !timestamps {
                        l.timestamp.clear();
                    }
                    l
                })
            },
        );
        Ok(Box::pin(stream))
    }
}
