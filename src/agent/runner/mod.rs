//! The task runner: converges this node's containers to its assignments and reports
//! what it observes.
//!
//! The dispatcher's session hands the agent [`Assignment`]s: the whole set when a
//! session opens ([`TaskRunner::set_all`]), then increments ([`TaskRunner::update`]).
//! Each assigned task gets a small worker of its own (a tokio task) that owns the
//! task's observed [`TaskStatus`] and moves it forward, one step at a time:
//!
//! ```text
//! desired running, no container:  ACCEPTED → PREPARING (image) → STARTING (create, start)
//! container running:              no health check, or healthy  → RUNNING
//!                                 health check starting        → stays STARTING
//!                                 unhealthy                    → FAILED "unhealthy", stop it
//! container exited:               code 0 → COMPLETE; code N → FAILED "exited with code N"
//! container gone (inspect 404):   FAILED "container removed"
//! image missing, pull failed:     REJECTED with the error
//! desired shutdown (or later):    stop (grace period) → SHUTDOWN; the container stays
//! desired remove, or unassigned:  stop → SHUTDOWN, remove the container, forget the task
//! ```
//!
//! Statuses only move forward: a step that would not advance the state reports nothing.
//! A running container is watched through the engine's events ([`Executor::events`]):
//! an event naming a task wakes its worker, which looks at the container
//! ([`Executor::inspect`]) at once; while the events are followed a running container
//! is also looked at every [`WATCH_INTERVAL`], in case one was lost. While they are
//! not (the engine gives none, or the stream broke and is being followed again) it is
//! looked at every [`POLL_INTERVAL`]. So a container that dies is reported within
//! about a second either way, and an idle node does not ask its engine about each of
//! its containers twice a second (at 50 containers that cost the engine half a core
//! and the agent 40% of one, measured here).
//! Every report goes to the `status_tx` channel as `(task id, status)`, carrying the
//! container id, exit code, host ports, health and a unix-ms time stamp.
//!
//! # Restarts and adoption
//!
//! The runner records each assignment, with the status it last observed, in the sled
//! tree [`TREE`]:
//!
//! | key | value |
//! |---|---|
//! | task id (UTF-8) | JSON [`Assignment`] whose `task.status` is the agent's last observed status |
//!
//! A new runner on the same database (a restarted daemon) starts a worker for each
//! recorded task before anything else. A worker that knows its container (by the
//! recorded id, or by the `orc.task.id` label via [`Executor::list`]) just watches it:
//! a container that kept running is adopted, not restarted. Containers labelled for
//! this node whose task the runner does not know are strays: they are stopped and
//! removed, at start-up and whenever a full set arrives. When a new session's full set
//! shows that the managers are behind on a task, the worker sends its status again.
//!
//! Stopping the runner (its cancellation token) leaves the containers as they are, so
//! that the next runner adopts them.
//!
//! Files: this one holds the runner (the worker table, persistence, adoption, strays);
//! [`worker`] the per-task state machine; `tests.rs` runs both against the fake
//! executor.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use super::executor::{Executor, ImageInfo, ImageStream, LogOptions, LogStream, TaskNetwork};
use super::images::{self, ImageFetcher};
use crate::error::{Error, Result};
use crate::store::{ImagePin, NodeId, Task, TaskId, TaskState, TaskStatus};

/// The sled tree holding this node's assignments (see the module doc).
pub const TREE: &str = "agent_tasks";

/// How often a running container is inspected while the engine's events are not
/// followed.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How often a running container is inspected while the engine's events are followed
/// (they say at once when it changes; this is for an event lost).
pub const WATCH_INTERVAL: Duration = Duration::from_secs(10);

/// A subscription to the engine's events asks again for the events of this long before
/// the moment it is made ([`Executor::events`]).
const EVENTS_OVERLAP_MS: u64 = 2_000;

/// How long the runner waits before it follows the engine's events again after the
/// stream ended.
const EVENTS_RETRY: Duration = Duration::from_secs(1);

/// How long a running task with published ports stays up after it is told to stop,
/// while the routing mesh of every node drops it.
pub const MESH_DRAIN: Duration = Duration::from_millis(1000);

/// The grace period given to stray containers (whose task is unknown) when they are
/// stopped.
pub const STRAY_GRACE: Duration = Duration::from_secs(10);

/// One task given to this node, with what its container needs to know of the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The task (its spec, desired state and the managers' view of its status).
    pub task: Task,
    /// Its ports and name servers.
    #[serde(flatten)]
    pub net: TaskNetwork,
    /// The content the task's image must be ([`crate::store::image`]); sent only until
    /// the container exists, and only once the service's image is pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pin: Option<ImagePin>,
    /// The task's secrets and configs ([`crate::agent::secrets`]): never recorded (a
    /// restarted agent waits for its session to send them again).
    #[serde(skip)]
    pub files: Vec<crate::agent::secrets::TaskFile>,
    /// Where its following volumes are, when on another node ([`crate::agent::volumes`]);
    /// only until the container exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_source: Option<crate::agent::volumes::VolumeSource>,
}

/// What a worker is told: its assignment (`None` = unassigned: remove it) and the
/// session it came from.
#[derive(Debug, Clone)]
struct Desired {
    assignment: Option<Assignment>,
    session: u64,
}

/// What [`TaskRunner::known`] and [`TaskRunner::logs`] read.
#[derive(Debug, Clone)]
struct Observed {
    state: TaskState,
    container_id: String,
}

struct WorkerHandle {
    generation: u64,
    tx: watch::Sender<Desired>,
}

#[derive(Default)]
struct Workers {
    adopted: bool,
    session: u64,
    map: BTreeMap<TaskId, WorkerHandle>,
    /// Stray containers being stopped and removed.
    removing: BTreeSet<String>,
}

struct Shared {
    node_id: NodeId,
    exec: Arc<dyn Executor>,
    db: sled::Db,
    status_tx: mpsc::UnboundedSender<(TaskId, TaskStatus)>,
    stop: CancellationToken,
    observed: Mutex<BTreeMap<TaskId, Observed>>,
    workers: tokio::sync::Mutex<Workers>,
    generations: AtomicU64,
    /// Each worker's wake-up for an event of its container, with its generation.
    nudges: Mutex<BTreeMap<TaskId, (u64, Arc<Notify>)>>,
    /// Whether the engine's events are being followed ([`WATCH_INTERVAL`]).
    events_live: AtomicBool,
    /// How images are loaded from other nodes ([`super::images`]); none: pull only.
    fetcher: Mutex<Option<Arc<dyn ImageFetcher>>>,
    /// How following volumes are copied from other nodes ([`super::volumes`]).
    volume_fetcher: Mutex<Option<Arc<dyn super::volumes::VolumeFetcher>>>,
    /// One turn per image being prepared: tasks that need the same image take turns,
    /// so that it is pulled or loaded once (by image reference; dead entries pruned).
    image_turns: Mutex<BTreeMap<String, Weak<tokio::sync::Mutex<()>>>>,
    /// The node's mesh's record of its containers and bridges (who may use a VIP or
    /// the DNS); none: not told.
    clients: Mutex<Option<Arc<crate::mesh::Clients>>>,
    /// The node's agent metrics, once set (until then nothing is counted).
    metrics: std::sync::OnceLock<crate::metrics::AgentMetrics>,
}

/// How many times a stale volume still in use is tried again, and how often.
const DROP_TRIES: usize = 30;
/// See [`DROP_TRIES`].
const DROP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs this node's tasks. See the module doc.
pub struct TaskRunner {
    shared: Arc<Shared>,
}

use crate::units::now_ms;

impl TaskRunner {
    /// A runner for node `node_id`, driving `exec`, recording its tasks in `db` (tree
    /// [`TREE`]) and sending statuses to `status_tx`; it stops with `stop`. Recorded
    /// tasks are adopted at once (when called inside a tokio runtime, else at the first
    /// [`set_all`](Self::set_all) or [`update`](Self::update)).
    pub fn new(
        node_id: NodeId,
        exec: Arc<dyn Executor>,
        db: sled::Db,
        status_tx: mpsc::UnboundedSender<(TaskId, TaskStatus)>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let shared = Arc::new(Shared {
            node_id,
            exec,
            db,
            status_tx,
            stop,
            observed: Mutex::new(BTreeMap::new()),
            workers: tokio::sync::Mutex::new(Workers::default()),
            generations: AtomicU64::new(0),
            nudges: Mutex::new(BTreeMap::new()),
            events_live: AtomicBool::new(false),
            fetcher: Mutex::new(None),
            volume_fetcher: Mutex::new(None),
            image_turns: Mutex::new(BTreeMap::new()),
            clients: Mutex::new(None),
            metrics: std::sync::OnceLock::new(),
        });
        {
            let mut observed = shared.observed();
            for a in shared.load() {
                observed.insert(
                    a.task.id.clone(),
                    Observed {
                        state: a.task.status.state,
                        container_id: a.task.status.container_id.clone(),
                    },
                );
            }
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let s = shared.clone();
            rt.spawn(async move {
                let mut w = s.workers.lock().await;
                s.adopt(&mut w).await;
            });
            rt.spawn(shared.clone().follow_events());
        }
        Arc::new(TaskRunner { shared })
    }

    /// The whole set (first message of a session): tasks not in it are stopped and
    /// their containers removed; containers of this node whose task is in no
    /// assignment are removed too.
    pub async fn set_all(&self, assignments: Vec<Assignment>) {
        let s = &self.shared;
        let mut w = s.workers.lock().await;
        s.adopt(&mut w).await;
        w.session += 1;
        let session = w.session;
        let want: BTreeMap<TaskId, Assignment> = assignments
            .into_iter()
            .map(|a| (a.task.id.clone(), a))
            .collect();
        for (id, h) in &w.map {
            if !want.contains_key(id) {
                h.tx.send_replace(Desired {
                    assignment: None,
                    session,
                });
            }
        }
        for (_, a) in want {
            s.assign(&mut w, a, session);
        }
        s.remove_strays(&mut w).await;
    }

    /// Increments: `changed` tasks are new or have a new desired state or spec;
    /// `removed` tasks are stopped, their containers removed and they are forgotten.
    pub async fn update(&self, changed: Vec<Assignment>, removed: Vec<TaskId>) {
        let s = &self.shared;
        let mut w = s.workers.lock().await;
        s.adopt(&mut w).await;
        let session = w.session;
        for a in changed {
            s.assign(&mut w, a, session);
        }
        for id in removed {
            if let Some(h) = w.map.get(&id) {
                h.tx.send_replace(Desired {
                    assignment: None,
                    session,
                });
            }
        }
    }

    /// The tasks it knows, with their observed states (for adoption after a restart
    /// and for tests).
    pub fn known(&self) -> Vec<(TaskId, TaskState)> {
        self.shared
            .observed()
            .iter()
            .map(|(id, o)| (id.clone(), o.state))
            .collect()
    }

    /// Counts container starts, task failures and image loads into `metrics` (once;
    /// later calls are ignored).
    pub fn set_metrics(&self, metrics: crate::metrics::AgentMetrics) {
        let _ = self.shared.metrics.set(metrics);
    }

    /// Lets tasks copy their following volumes from the node that holds them
    /// ([`super::volumes`]).
    pub fn set_volume_fetcher(&self, fetcher: Arc<dyn super::volumes::VolumeFetcher>) {
        *self
            .shared
            .volume_fetcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(fetcher);
    }

    /// Removes the stale copies of following volumes the managers name (those a
    /// container still uses stay, and are named again by the next list).
    pub fn drop_volumes(&self, drops: &crate::proto::VolumeDrops) {
        let exec = self.shared.exec.clone();
        let names: Vec<String> = drops
            .volumes
            .iter()
            .filter(|v| super::volumes::check_name(&v.name).is_ok())
            .map(|v| v.name.clone())
            .take(super::volumes::MAX_VOLUMES)
            .collect();
        if names.is_empty() {
            return;
        }
        let stop = self.shared.stop.clone();
        tokio::spawn(async move {
            // One still in use is tried again for a while (its task may be stopping).
            let mut left = names;
            for _ in 0..DROP_TRIES {
                let mut busy = vec![];
                for name in left {
                    match exec.remove_volume(&name).await {
                        Ok(true) => tracing::info!(
                            volume = name,
                            "removed a stale copy of a following volume"
                        ),
                        Ok(false) => busy.push(name),
                        Err(e) => tracing::warn!(
                            volume = name,
                            "removing a stale copy of a following volume: {e}"
                        ),
                    }
                }
                if busy.is_empty() {
                    return;
                }
                left = busy;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(DROP_EVERY) => {}
                }
            }
            tracing::info!(volumes = ?left, "stale copies of following volumes still in use: kept");
        });
    }

    /// Lets tasks load images their engine lacks, and cannot pull, from the other nodes
    /// their assignment names (image shipping, [`super::images`]).
    pub fn set_image_fetcher(&self, fetcher: Arc<dyn ImageFetcher>) {
        *self
            .shared
            .fetcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(fetcher);
    }

    /// Tells the node's mesh of each bridge made and each container started or gone
    /// ([`crate::mesh::clients`]).
    pub fn set_clients(&self, clients: Arc<crate::mesh::Clients>) {
        *self
            .shared
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(clients);
    }

    /// `image` as this node's engine saves it (for another node's `ImageSave`);
    /// `NotFound` if the engine does not have it.
    pub async fn save_image(&self, image: &str) -> Result<ImageStream> {
        self.shared.exec.save_image(image).await
    }

    /// This node's volumes, their sizes and the tasks using them.
    pub async fn local_volumes(&self) -> Result<crate::proto::NodeVolumes> {
        crate::agent::volumes::node_volumes(&self.shared.exec).await
    }

    /// Whether a running container of this node's engine uses the volume `name`.
    pub async fn volume_in_use(&self, name: &str) -> Result<bool> {
        self.shared.exec.volume_in_use(name).await
    }

    /// The directory of this node's local volume `name`; `None` if it has none.
    pub async fn volume_dir(&self, name: &str) -> Result<Option<std::path::PathBuf>> {
        self.shared.exec.volume_dir(name, None).await
    }

    /// What `image` (a reference or an id) is in this node's engine; `None` if absent.
    pub async fn image_info(&self, image: &str) -> Result<Option<ImageInfo>> {
        self.shared.exec.image_info(image).await
    }

    /// The output of a task's container (for `service logs`); `NotFound` if the task has
    /// no container here.
    pub async fn logs(&self, task: &TaskId, opts: LogOptions) -> Result<LogStream> {
        let container = self
            .shared
            .observed()
            .get(task)
            .map(|o| o.container_id.clone())
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Error::NotFound(format!("task {task}: no container on this node")))?;
        self.shared.exec.logs(&container, opts).await
    }
}

impl Shared {
    fn observed(&self) -> MutexGuard<'_, BTreeMap<TaskId, Observed>> {
        // The map is only ever replaced entry by entry: a panic elsewhere leaves it usable.
        self.observed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Follows the engine's events for as long as the runner runs, waking the worker
    /// of each task an event names; every worker is woken when the following starts or
    /// stops (what happened in between is looked at).
    async fn follow_events(self: Arc<Self>) {
        let mut since = now_ms();
        loop {
            let from = since.saturating_sub(EVENTS_OVERLAP_MS);
            let Some(mut events) = self.exec.events(self.node_id, from).await else {
                return;
            };
            self.events_live.store(true, Ordering::Release);
            self.nudge_all();
            loop {
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    e = events.next() => match e {
                        Some(Ok(task)) => self.nudge(&task),
                        Some(Err(e)) => {
                            tracing::warn!("agent: the engine's events: {e}");
                            break;
                        }
                        None => break,
                    },
                }
            }
            self.events_live.store(false, Ordering::Release);
            self.nudge_all();
            since = now_ms();
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(EVENTS_RETRY) => {}
            }
        }
    }

    fn nudges(&self) -> MutexGuard<'_, BTreeMap<TaskId, (u64, Arc<Notify>)>> {
        self.nudges
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes the worker of `task` (none: nothing; the engine may name any container
    /// labelled for this node).
    fn nudge(&self, task: &TaskId) {
        if let Some((_, n)) = self.nudges().get(task) {
            n.notify_one();
        }
    }

    fn nudge_all(&self) {
        for (_, n) in self.nudges().values() {
            n.notify_one();
        }
    }

    /// How long a worker watching a running container waits before it looks again.
    fn watch_interval(&self) -> Duration {
        if self.events_live.load(Ordering::Acquire) {
            WATCH_INTERVAL
        } else {
            POLL_INTERVAL
        }
    }

    /// Forgets the wake-up of the worker of `task` of generation `generation`.
    fn drop_nudge(&self, task: &TaskId, generation: u64) {
        let mut nudges = self.nudges();
        if nudges.get(task).map(|(g, _)| *g) == Some(generation) {
            nudges.remove(task);
        }
    }

    fn tree(&self) -> Result<sled::Tree> {
        Ok(self.db.open_tree(TREE)?)
    }

    /// The recorded assignments.
    fn load(&self) -> Vec<Assignment> {
        let tree = match self.tree() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("agent: reading {TREE}: {e}");
                return vec![];
            }
        };
        let mut out = Vec::new();
        for kv in tree.iter() {
            match kv {
                Ok((k, v)) => match serde_json::from_slice::<Assignment>(&v) {
                    Ok(a) => out.push(a),
                    Err(e) => tracing::warn!(
                        "agent: skipping the unreadable record of task {}: {e}",
                        String::from_utf8_lossy(&k)
                    ),
                },
                Err(e) => tracing::error!("agent: reading {TREE}: {e}"),
            }
        }
        out
    }

    fn persist(&self, a: &Assignment) {
        let r = self.tree().and_then(|t| {
            t.insert(a.task.id.0.as_bytes(), serde_json::to_vec(a)?)?;
            Ok(())
        });
        if let Err(e) = r {
            tracing::error!(task = %a.task.id, "agent: recording the task: {e}");
        }
    }

    /// The turn of `image` (see `image_turns`).
    fn image_turn(&self, image: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self
            .image_turns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        turns.retain(|_, t| t.strong_count() > 0);
        if let Some(t) = turns.get(image).and_then(Weak::upgrade) {
            return t;
        }
        let t = Arc::new(tokio::sync::Mutex::new(()));
        turns.insert(image.to_string(), Arc::downgrade(&t));
        t
    }

    fn forget(&self, id: &TaskId) {
        if let Err(e) = self.tree().and_then(|t| Ok(t.remove(id.0.as_bytes())?)) {
            tracing::error!(task = %id, "agent: forgetting the task: {e}");
        }
        self.observed().remove(id);
    }

    /// Once per runner: workers for the recorded tasks, then stray removal.
    async fn adopt(self: &Arc<Self>, w: &mut Workers) {
        if w.adopted {
            return;
        }
        w.adopted = true;
        let recorded = self.load();
        let keep = recorded.iter().map(|a| a.task.id.clone()).collect();
        super::secrets::remove_strays(self.node_id, &keep);
        for a in recorded {
            self.spawn(w, a, 0);
        }
        self.remove_strays(w).await;
    }

    /// Gives `a` to its worker, starting one if needed.
    fn assign(self: &Arc<Self>, w: &mut Workers, a: Assignment, session: u64) {
        match w.map.get(&a.task.id) {
            Some(h) => {
                h.tx.send_replace(Desired {
                    assignment: Some(a),
                    session,
                });
            }
            None => self.spawn(w, a, session),
        }
    }

    fn spawn(self: &Arc<Self>, w: &mut Workers, a: Assignment, session: u64) {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let id = a.task.id.clone();
        let (tx, rx) = watch::channel(Desired {
            assignment: Some(a.clone()),
            session,
        });
        self.observed().insert(
            id.clone(),
            Observed {
                state: a.task.status.state,
                container_id: a.task.status.container_id.clone(),
            },
        );
        let nudge = Arc::new(Notify::new());
        self.nudges()
            .insert(id.clone(), (generation, nudge.clone()));
        let worker = Worker {
            shared: self.clone(),
            id: id.clone(),
            generation,
            nudge,
            rx,
            status: a.task.status.clone(),
            assignment: a,
            session,
            volumes_copied: false,
        };
        worker.persist();
        tokio::spawn(worker.run());
        w.map.insert(id, WorkerHandle { generation, tx });
    }

    /// Stops and removes (in the background) the containers of this node whose task
    /// has no worker.
    async fn remove_strays(self: &Arc<Self>, w: &mut Workers) {
        let list = match self.exec.list(self.node_id).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("agent: listing this node's containers: {e}");
                return;
            }
        };
        for c in list {
            if w.map.contains_key(&c.task_id) || w.removing.contains(&c.container_id) {
                continue;
            }
            tracing::info!(container = %c.container_id, task = %c.task_id,
                "agent: removing a container whose task is not assigned here");
            w.removing.insert(c.container_id.clone());
            let s = self.clone();
            tokio::spawn(async move {
                if c.running {
                    if let Err(e) = s.exec.stop(&c.container_id, STRAY_GRACE).await {
                        tracing::warn!(container = %c.container_id, "agent: stopping a stray container: {e}");
                    }
                }
                if let Err(e) = s.exec.remove(&c.container_id).await {
                    tracing::warn!(container = %c.container_id, "agent: removing a stray container: {e}");
                }
                s.workers.lock().await.removing.remove(&c.container_id);
            });
        }
    }
}

#[cfg(test)]
mod tests;
pub mod worker;

use worker::Worker;
