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
//! A running container is watched by polling [`Executor::inspect`] every
//! [`POLL_INTERVAL`], so a container that dies is reported within about a second.
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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::executor::{Executor, ImageInfo, ImageStream, LogOptions, LogStream, TaskNetwork};
use super::images::{self, ImageFetcher};
use crate::error::{Error, Result};
use crate::store::{ImagePin, NodeId, Task, TaskId, TaskState, TaskStatus};

/// The sled tree holding this node's assignments (see the module doc).
pub const TREE: &str = "agent_tasks";

/// How often a running container is inspected.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

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
    /// How images are loaded from other nodes ([`super::images`]); none: pull only.
    fetcher: Mutex<Option<Arc<dyn ImageFetcher>>>,
    /// One turn per image being prepared: tasks that need the same image take turns,
    /// so that it is pulled or loaded once (by image reference; dead entries pruned).
    image_turns: Mutex<BTreeMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

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
            fetcher: Mutex::new(None),
            image_turns: Mutex::new(BTreeMap::new()),
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

    /// Lets tasks load images their engine lacks, and cannot pull, from the other nodes
    /// their assignment names (image shipping, [`super::images`]).
    pub fn set_image_fetcher(&self, fetcher: Arc<dyn ImageFetcher>) {
        *self
            .shared
            .fetcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(fetcher);
    }

    /// `image` as this node's engine saves it (for another node's `ImageSave`);
    /// `NotFound` if the engine does not have it.
    pub async fn save_image(&self, image: &str) -> Result<ImageStream> {
        self.shared.exec.save_image(image).await
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
        for a in self.load() {
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
        let worker = Worker {
            shared: self.clone(),
            id: id.clone(),
            generation,
            rx,
            status: a.task.status.clone(),
            assignment: a,
            session,
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

/// What a worker does after a step.
enum Next {
    /// Step again at once.
    Now,
    /// Step again after [`POLL_INTERVAL`] or when the assignment changes.
    Poll,
    /// Step again when the assignment changes.
    Idle,
}

/// What the desired state asks of the container.
enum Want {
    Run,
    Stop,
    Remove,
}

fn want(desired: TaskState) -> Want {
    if desired == TaskState::Remove {
        Want::Remove
    } else if desired <= TaskState::Running {
        Want::Run
    } else {
        Want::Stop
    }
}

/// One task's life on this node.
struct Worker {
    shared: Arc<Shared>,
    id: TaskId,
    generation: u64,
    rx: watch::Receiver<Desired>,
    /// The latest assignment (its `task.status` is the managers' view).
    assignment: Assignment,
    /// What this worker observed last (authoritative from ACCEPTED on).
    status: TaskStatus,
    session: u64,
}

impl Worker {
    async fn run(mut self) {
        loop {
            if self.shared.stop.is_cancelled() {
                return;
            }
            let desired = self.rx.borrow_and_update().clone();
            let next = match desired.assignment {
                Some(a) => {
                    let desired_state = a.task.desired_state;
                    self.absorb(a, desired.session);
                    match want(desired_state) {
                        Want::Run => self.step_run().await,
                        Want::Stop => self.step_stop().await,
                        Want::Remove => {
                            self.teardown().await;
                            if self.finish().await {
                                return;
                            }
                            Next::Now
                        }
                    }
                }
                None => {
                    self.teardown().await;
                    if self.finish().await {
                        return;
                    }
                    Next::Now
                }
            };
            let poll = match next {
                Next::Now => continue,
                Next::Poll => Some(POLL_INTERVAL),
                Next::Idle => None,
            };
            tokio::select! {
                _ = self.shared.stop.cancelled() => return,
                r = self.rx.changed() => {
                    if r.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep(poll.unwrap_or_default()), if poll.is_some() => {}
            }
        }
    }

    fn grace(&self) -> Duration {
        Duration::from_millis(self.assignment.task.spec.container.stop_grace_period_ms)
    }

    fn desired_changed(&self) -> bool {
        self.rx.has_changed().unwrap_or(true)
    }

    /// Takes in a new assignment: the managers' status wins only if it is ahead; a new
    /// session that is behind on this task gets the status again.
    fn absorb(&mut self, a: Assignment, session: u64) {
        let theirs = &a.task.status;
        let mut changed = a != self.assignment;
        if theirs.state > self.status.state {
            let container_id = std::mem::take(&mut self.status.container_id);
            self.status = theirs.clone();
            if self.status.container_id.is_empty() {
                self.status.container_id = container_id;
            }
            self.observe_locally();
            changed = true;
        }
        if session != self.session {
            self.session = session;
            if theirs.state < self.status.state && self.status.state >= TaskState::Accepted {
                let _ = self
                    .shared
                    .status_tx
                    .send((self.id.clone(), self.status.clone()));
            }
        }
        self.assignment = a;
        if changed {
            self.persist();
        }
    }

    fn persist(&self) {
        let mut a = self.assignment.clone();
        a.task.status = self.status.clone();
        self.shared.persist(&a);
    }

    fn observe_locally(&self) {
        self.shared.observed().insert(
            self.id.clone(),
            Observed {
                state: self.status.state,
                container_id: self.status.container_id.clone(),
            },
        );
    }

    /// Moves the status forward to `state` and reports it; does nothing if that would
    /// not advance it.
    fn report(&mut self, state: TaskState, message: &str) {
        if state <= self.status.state {
            return;
        }
        self.status.state = state;
        self.status.message = message.to_string();
        self.status.timestamp_ms = now_ms();
        if state.is_terminal() {
            self.status.ports.clear();
        }
        tracing::debug!(task = %self.id, state = %state, "{message}");
        self.observe_locally();
        self.persist();
        let _ = self
            .shared
            .status_tx
            .send((self.id.clone(), self.status.clone()));
    }

    fn fail(&mut self, state: TaskState, message: &str, err: &str) {
        if state > self.status.state {
            self.status.err = err.to_string();
        }
        self.report(state, message);
    }

    fn set_container(&mut self, id: String) {
        self.status.container_id = id;
        self.observe_locally();
        self.persist();
    }

    /// The container labelled for this task, if one exists.
    async fn find_container(&self) -> Result<Option<String>> {
        let list = self.shared.exec.list(self.shared.node_id).await?;
        Ok(list
            .into_iter()
            .find(|c| c.task_id == self.id)
            .map(|c| c.container_id))
    }

    /// Desired running.
    async fn step_run(&mut self) -> Next {
        let state = self.status.state;
        if state.is_terminal() {
            return self.stop_if_running().await;
        }
        if self.status.container_id.is_empty() && state >= TaskState::Preparing {
            match self.find_container().await {
                Ok(Some(id)) => self.set_container(id),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(task = %self.id, "agent: looking for the task's container: {e}");
                    return Next::Poll;
                }
            }
        }
        if !self.status.container_id.is_empty() {
            return self.observe().await;
        }
        if state >= TaskState::Starting {
            self.fail(TaskState::Failed, "container removed", "container removed");
            return Next::Idle;
        }
        self.launch().await
    }

    /// Pulls (if needed), creates and starts the container.
    async fn launch(&mut self) -> Next {
        self.report(TaskState::Accepted, "accepted");
        self.report(TaskState::Preparing, "preparing");
        let exec = self.shared.exec.clone();
        match self.prepare_image().await {
            Ok(found) => {
                // Reported with STARTING: the first one pins the service's image.
                self.status.image_digest = found.repo_digests.first().cloned().unwrap_or_default();
                self.status.image_id = found.id;
            }
            Err(e) => {
                let e = e.to_string();
                self.fail(TaskState::Rejected, &e, &e);
                return Next::Idle;
            }
        }
        if self.desired_changed() {
            return Next::Now;
        }
        let created = exec
            .create(
                self.shared.node_id,
                &self.assignment.task,
                &self.assignment.net,
            )
            .await;
        let id = match created {
            Ok(id) => id,
            Err(e) => {
                let e = format!("creating the container: {e}");
                self.fail(TaskState::Rejected, &e, &e);
                return Next::Idle;
            }
        };
        self.set_container(id.clone());
        if self.desired_changed() {
            return Next::Now;
        }
        if let Err(e) = exec.start(&id).await {
            let e = format!("starting the container: {e}");
            self.fail(TaskState::Failed, &e, &e);
            return Next::Idle;
        }
        if let Ok(st) = exec.inspect(&id).await {
            self.status.ports = st.ports;
            self.status.health = st.health;
        }
        self.report(TaskState::Starting, "starting");
        Next::Now
    }

    /// Makes sure the task's image is present: local, else loaded from one of the
    /// assignment's image sources that has it, else pulled (see [`super::images`]);
    /// whichever way it came, it must be the content the service is pinned to.
    /// Returns what the image is. Tasks of this node that need the same image take
    /// turns.
    async fn prepare_image(&mut self) -> Result<ImageInfo> {
        let exec = self.shared.exec.clone();
        let spec = self.assignment.task.spec.container.clone();
        let image = spec.image.clone();
        let pin = self
            .assignment
            .image_pin
            .clone()
            .filter(|p| p.image == image);
        let pin = pin.as_ref();
        let turn = self.shared.image_turn(&image);
        let _turn = turn.lock().await;
        if let Ok(Some(found)) = exec.image_info(&image).await {
            images::check(&image, "on this node", &found, pin)?;
            return Ok(found);
        }
        let fetcher = self
            .shared
            .fetcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let mut tried = vec![];
        if let Some(fetcher) = fetcher {
            let sources = images::source_order(
                &self.assignment.net.image_sources,
                self.assignment.task.slot,
            );
            for src in sources {
                let name = images::source_name(&src);
                let loaded = match fetcher.fetch(&src.addr, &image).await {
                    Ok(fetched) => {
                        self.note(&format!("loading image from {name}"));
                        images::load(&exec, fetched, &name, &image, pin).await
                    }
                    Err(e) => Err(e),
                };
                match loaded {
                    Ok(found) => {
                        tracing::info!(task = %self.id, image, id = %found.id, from = %name,
                            "image loaded from another node");
                        return Ok(found);
                    }
                    Err(e) => {
                        if matches!(e, Error::Conflict(_)) {
                            tracing::warn!(task = %self.id, image, from = %name, "refused an image: {e}");
                        } else {
                            tracing::debug!(task = %self.id, image, from = %name, "loading the image: {e}");
                        }
                        tried.push((name, e));
                    }
                }
            }
        }
        let pulled = match exec.ensure_image(&spec).await {
            Ok(()) => match exec.image_info(&image).await {
                Ok(Some(found)) => images::check(&image, "as pulled", &found, pin).map(|_| found),
                Ok(None) => Err(Error::Internal(format!(
                    "image {image}: pulled, but the engine does not show it"
                ))),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        pulled.map_err(|e| {
            if tried.is_empty() {
                e
            } else {
                images::shipping_error(&image, &e, &tried)
            }
        })
    }

    /// Reports a new message without changing the state (progress within a state).
    fn note(&mut self, message: &str) {
        if self.status.message == message || self.status.state.is_terminal() {
            return;
        }
        self.status.message = message.to_string();
        self.status.timestamp_ms = now_ms();
        self.persist();
        let _ = self
            .shared
            .status_tx
            .send((self.id.clone(), self.status.clone()));
    }

    /// Watches the container of a task that should run.
    async fn observe(&mut self) -> Next {
        let id = self.status.container_id.clone();
        let st = match self.shared.exec.inspect(&id).await {
            Ok(st) => st,
            Err(Error::NotFound(_)) => {
                self.fail(TaskState::Failed, "container removed", "container removed");
                return Next::Idle;
            }
            Err(e) => {
                tracing::warn!(task = %self.id, "agent: inspecting the container: {e}");
                return Next::Poll;
            }
        };
        self.status.health = st.health.clone();
        if st.running {
            self.status.ports = st.ports.clone();
            match st.health.as_str() {
                "unhealthy" => {
                    self.fail(TaskState::Failed, "unhealthy", "container is unhealthy");
                    self.stop_container().await;
                    Next::Idle
                }
                "starting" => {
                    self.report(TaskState::Starting, "starting");
                    Next::Poll
                }
                _ => {
                    self.report(TaskState::Running, "started");
                    Next::Poll
                }
            }
        } else if st.status == "created" {
            // Created but never started (the previous runner stopped in between).
            if let Err(e) = self.shared.exec.start(&id).await {
                let e = format!("starting the container: {e}");
                self.fail(TaskState::Failed, &e, &e);
                return Next::Idle;
            }
            Next::Now
        } else {
            self.exited(&st);
            Next::Idle
        }
    }

    /// Reports how the container ended.
    fn exited(&mut self, st: &super::executor::ContainerState) {
        self.status.exit_code = st.exit_code;
        match st.exit_code {
            Some(0) => self.report(TaskState::Complete, "finished"),
            Some(code) => {
                let message = format!("exited with code {code}");
                let mut err = message.clone();
                if st.oom_killed {
                    err.push_str(" (out of memory)");
                }
                if !st.error.is_empty() {
                    err = format!("{err}: {}", st.error);
                }
                self.fail(TaskState::Failed, &message, &err);
            }
            None => {
                let message = format!("container is {}", st.status);
                self.fail(TaskState::Failed, &message, &message);
            }
        }
    }

    /// A running task with published ports is taken out of every node's mesh by the
    /// same store change that tells this agent to stop it; waiting [`MESH_DRAIN`]
    /// before the stop lets the other nodes apply that change first, so no new
    /// connection reaches a stopping container and the ones in flight finish.
    async fn drain(&self) {
        if self.status.state == TaskState::Running && !self.assignment.net.ports.is_empty() {
            tokio::time::sleep(MESH_DRAIN).await;
        }
    }

    /// Stops the container (grace period), recording its exit code.
    async fn stop_container(&mut self) -> bool {
        let id = self.status.container_id.clone();
        let exec = self.shared.exec.clone();
        match exec.stop(&id, self.grace()).await {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(task = %self.id, "agent: stopping the container: {e}");
                return false;
            }
        }
        if let Ok(st) = exec.inspect(&id).await {
            if st.exit_code.is_some() {
                self.status.exit_code = st.exit_code;
            }
        }
        true
    }

    /// A finished task's container must not run on.
    async fn stop_if_running(&mut self) -> Next {
        if self.status.container_id.is_empty() {
            return Next::Idle;
        }
        match self.shared.exec.inspect(&self.status.container_id).await {
            Ok(st) if st.running => {
                if self.stop_container().await {
                    self.persist();
                    Next::Idle
                } else {
                    Next::Poll
                }
            }
            Ok(_) | Err(Error::NotFound(_)) => Next::Idle,
            Err(e) => {
                tracing::warn!(task = %self.id, "agent: inspecting the container: {e}");
                Next::Poll
            }
        }
    }

    /// Desired shutdown (or complete, failed, ...): stop, report SHUTDOWN, keep the
    /// container.
    async fn step_stop(&mut self) -> Next {
        if self.status.container_id.is_empty() && self.status.state >= TaskState::Preparing {
            if let Ok(Some(id)) = self.find_container().await {
                self.set_container(id);
            }
        }
        if !self.status.container_id.is_empty() {
            match self.shared.exec.inspect(&self.status.container_id).await {
                Ok(st) if st.running => {
                    self.drain().await;
                    if !self.stop_container().await {
                        return Next::Poll;
                    }
                }
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(task = %self.id, "agent: inspecting the container: {e}");
                    return Next::Poll;
                }
            }
        }
        self.report(TaskState::Shutdown, "shutdown");
        Next::Idle
    }

    /// Unassigned or desired remove: stop, report SHUTDOWN, remove the container.
    async fn teardown(&mut self) {
        if self.step_stop().await.is_poll() {
            // The engine did not answer; removing forcefully still ends the container.
            tracing::warn!(task = %self.id, "agent: removing the container without a clean stop");
        }
        if !self.status.container_id.is_empty() {
            if let Err(e) = self.shared.exec.remove(&self.status.container_id).await {
                tracing::warn!(task = %self.id, "agent: removing the container: {e}");
            }
        }
    }

    /// Forgets the task unless it was assigned again meanwhile (then returns false).
    async fn finish(&mut self) -> bool {
        let mut w = self.shared.workers.lock().await;
        let reassigned =
            self.rx.has_changed().unwrap_or(false) && self.rx.borrow().assignment.is_some();
        if reassigned {
            return false;
        }
        if w.map.get(&self.id).map(|h| h.generation) == Some(self.generation) {
            w.map.remove(&self.id);
        }
        self.shared.forget(&self.id);
        true
    }
}

impl Next {
    fn is_poll(&self) -> bool {
        matches!(self, Next::Poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::fake::FakeExecutor;
    use crate::store::service::{HealthCheck, PortConfig, Protocol, PublishMode, TaskSpec};
    use crate::store::ServiceId;

    const NODE: NodeId = NodeId(0xabc);

    fn task(id: &str, slot: u64) -> Task {
        let mut spec = TaskSpec::default();
        spec.container.image = "orc-test/busybox:1".into();
        spec.container.stop_grace_period_ms = 2000;
        Task {
            vip: String::new(),
            id: TaskId(id.into()),
            service_id: ServiceId("svc1".into()),
            service_name: "web".into(),
            slot,
            node_id: Some(NODE),
            spec_version: 1,
            spec,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Assigned, "assigned", 1),
            created_ms: 1,
        }
    }

    fn assign(t: &Task) -> Assignment {
        Assignment {
            image_pin: None,
            task: t.clone(),
            net: TaskNetwork {
                ports: vec![PortConfig {
                    protocol: Protocol::Tcp,
                    target: 80,
                    published: 8080,
                    mode: PublishMode::Ingress,
                    proxy_protocol: Default::default(),
                }],
                ..Default::default()
            },
        }
    }

    struct Env {
        fake: Arc<FakeExecutor>,
        db: sled::Db,
        rx: mpsc::UnboundedReceiver<(TaskId, TaskStatus)>,
        runner: Arc<TaskRunner>,
        stop: CancellationToken,
        pending: BTreeMap<String, std::collections::VecDeque<TaskStatus>>,
    }

    impl Env {
        fn new() -> Env {
            let db = sled::Config::new().temporary(true).open().expect("sled");
            Env::on(Arc::new(FakeExecutor::new()), db)
        }

        fn on(fake: Arc<FakeExecutor>, db: sled::Db) -> Env {
            let (tx, rx) = mpsc::unbounded_channel();
            let stop = CancellationToken::new();
            let runner = TaskRunner::new(NODE, fake.clone(), db.clone(), tx, stop.clone());
            Env {
                fake,
                db,
                rx,
                runner,
                stop,
                pending: BTreeMap::new(),
            }
        }

        /// A new runner on the same engine and database (the old one stopped).
        fn restart(self) -> Env {
            self.stop.cancel();
            Env::on(self.fake.clone(), self.db.clone())
        }

        /// Statuses of `id` until it reaches `state` (panics after a long while).
        /// Statuses of other tasks are kept for later calls.
        async fn until(&mut self, id: &str, state: TaskState) -> Vec<TaskStatus> {
            let mut seen = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let queued = self.pending.get_mut(id).and_then(|q| q.pop_front());
                let st = match queued {
                    Some(st) => st,
                    None => {
                        let r = tokio::time::timeout_at(deadline, self.rx.recv()).await;
                        let (tid, st) = r
                            .unwrap_or_else(|_| panic!("{id} never reached {state}; saw {seen:?}"))
                            .expect("channel open");
                        if tid.0 != id {
                            self.pending.entry(tid.0).or_default().push_back(st);
                            continue;
                        }
                        st
                    }
                };
                let done = st.state == state;
                assert!(
                    st.state <= state || st.state.is_terminal(),
                    "{id}: {} while waiting for {state}",
                    st.state
                );
                seen.push(st);
                if done {
                    return seen;
                }
            }
        }

        /// No status arrives for a while (paused time: the runner polls meanwhile).
        async fn quiet(&mut self, d: Duration) {
            if let Some(s) = self.pending.values().flatten().next() {
                panic!("unexpected status {s:?}");
            }
            if let Ok(Some(s)) = tokio::time::timeout(d, self.rx.recv()).await {
                panic!("unexpected status {s:?}");
            }
        }

        fn container(&self, id: &str) -> crate::agent::fake::FakeContainer {
            self.fake
                .container_of(&TaskId(id.into()))
                .expect("the task's container")
        }

        fn state(&self, id: &str) -> Option<TaskState> {
            self.runner
                .known()
                .into_iter()
                .find(|(t, _)| t.0 == id)
                .map(|(_, s)| s)
        }
    }

    fn states(v: &[TaskStatus]) -> Vec<TaskState> {
        v.iter().map(|s| s.state).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_goes_from_accepted_to_running() {
        let mut env = Env::new();
        env.runner.set_all(vec![assign(&task("t1", 1))]).await;
        let seen = env.until("t1", TaskState::Running).await;
        assert_eq!(
            states(&seen),
            [
                TaskState::Accepted,
                TaskState::Preparing,
                TaskState::Starting,
                TaskState::Running
            ]
        );
        let c = env.container("t1");
        let running = seen.last().expect("running");
        assert_eq!(running.container_id, c.id);
        assert_eq!(
            running.image_id,
            crate::agent::fake::image_id_of("orc-test/busybox:1")
        );
        assert_eq!(running.message, "started");
        assert!(running.timestamp_ms > 0);
        assert_eq!(running.ports.len(), 1);
        assert_eq!(running.ports[0].target, 80);
        assert_eq!(c.name, "web.1.t1");
        assert_eq!(c.labels["orc.task.id"], "t1");
        assert_eq!(c.labels["orc.node.id"], NODE.to_string());
        assert_eq!(env.state("t1"), Some(TaskState::Running));
        // Polling goes on without further reports.
        env.quiet(Duration::from_secs(5)).await;
        assert_eq!(env.container("t1").starts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_health_check_holds_the_task_in_starting_until_healthy() {
        let mut env = Env::new();
        let mut t = task("t1", 1);
        t.spec.container.healthcheck = Some(HealthCheck {
            test: vec!["CMD".into(), "true".into()],
            ..HealthCheck::default()
        });
        env.runner.set_all(vec![assign(&t)]).await;
        let seen = env.until("t1", TaskState::Starting).await;
        assert_eq!(seen.last().expect("starting").health, "starting");
        env.quiet(Duration::from_secs(10)).await;
        assert_eq!(env.state("t1"), Some(TaskState::Starting));
        let c = env.container("t1");
        env.fake.set_health(&c.id, "healthy");
        let seen = env.until("t1", TaskState::Running).await;
        assert_eq!(seen.last().expect("running").health, "healthy");
        // Unhealthy later: failed, and the container is stopped.
        env.fake.set_health(&c.id, "unhealthy");
        let seen = env.until("t1", TaskState::Failed).await;
        let failed = seen.last().expect("failed");
        assert_eq!(failed.message, "unhealthy");
        assert_eq!(failed.health, "unhealthy");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!env.container("t1").state.running);
    }

    #[tokio::test(start_paused = true)]
    async fn the_images_health_check_counts_and_none_disables_it() {
        let mut env = Env::new();
        env.fake.set_image_healthcheck("orc-test/web:1", true);
        let mut t1 = task("t1", 1);
        t1.spec.container.image = "orc-test/web:1".into();
        let mut t2 = t1.clone();
        t2.id = TaskId("t2".into());
        t2.slot = 2;
        t2.spec.container.healthcheck = Some(HealthCheck {
            test: vec!["NONE".into()],
            ..HealthCheck::default()
        });
        env.runner.set_all(vec![assign(&t1), assign(&t2)]).await;
        env.until("t2", TaskState::Running).await;
        assert_eq!(env.state("t1"), Some(TaskState::Starting));
        let c = env.container("t1");
        env.fake.set_health(&c.id, "unhealthy");
        let seen = env.until("t1", TaskState::Failed).await;
        assert_eq!(
            states(&seen),
            [
                TaskState::Accepted,
                TaskState::Preparing,
                TaskState::Starting,
                TaskState::Failed
            ],
            "never running"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn exit_codes_give_complete_or_failed() {
        let mut env = Env::new();
        env.runner
            .set_all(vec![assign(&task("t1", 1)), assign(&task("t2", 2))])
            .await;
        env.until("t1", TaskState::Running).await;
        env.until("t2", TaskState::Running).await;
        env.fake.exit(&env.container("t1").id, 0);
        env.fake.exit(&env.container("t2").id, 3);
        let done = env.until("t1", TaskState::Complete).await;
        let done = done.last().expect("complete");
        assert_eq!(done.exit_code, Some(0));
        assert!(done.ports.is_empty());
        let failed = env.until("t2", TaskState::Failed).await;
        let failed = failed.last().expect("failed");
        assert_eq!(failed.exit_code, Some(3));
        assert_eq!(failed.message, "exited with code 3");
        assert_eq!(failed.err, "exited with code 3");
        // Terminal: nothing more, no restart.
        env.quiet(Duration::from_secs(5)).await;
        assert_eq!(env.container("t2").starts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_oom_kill_says_so() {
        let mut env = Env::new();
        env.runner.set_all(vec![assign(&task("t1", 1))]).await;
        env.until("t1", TaskState::Running).await;
        env.fake.oom_kill(&env.container("t1").id);
        let failed = env.until("t1", TaskState::Failed).await;
        let failed = failed.last().expect("failed");
        assert_eq!(failed.message, "exited with code 137");
        assert_eq!(failed.err, "exited with code 137 (out of memory)");
    }

    #[tokio::test(start_paused = true)]
    async fn a_container_removed_behind_our_back_fails_the_task() {
        let mut env = Env::new();
        env.runner.set_all(vec![assign(&task("t1", 1))]).await;
        env.until("t1", TaskState::Running).await;
        let before = tokio::time::Instant::now();
        env.fake.vanish(&env.container("t1").id);
        let failed = env.until("t1", TaskState::Failed).await;
        assert!(before.elapsed() <= Duration::from_secs(1));
        assert_eq!(failed.last().expect("failed").message, "container removed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_pull_rejects_the_task() {
        let mut env = Env::new();
        env.fake.fail_pull(
            "nowhere/nothing:1",
            "image nowhere/nothing:1: not present on this node and could not be pulled",
        );
        let mut t = task("t1", 1);
        t.spec.container.image = "nowhere/nothing:1".into();
        env.runner.set_all(vec![assign(&t)]).await;
        let seen = env.until("t1", TaskState::Rejected).await;
        assert_eq!(
            states(&seen),
            [
                TaskState::Accepted,
                TaskState::Preparing,
                TaskState::Rejected
            ]
        );
        let r = seen.last().expect("rejected");
        assert!(r.err.contains("nowhere/nothing:1"), "{r:?}");
        assert!(env.fake.container_of(&t.id).is_none());
    }

    /// What an honest node's `ImageSave` sends: the image (the pinned id if given,
    /// else what the reference names) saved by id, with that id.
    async fn honest_save(
        engine: &FakeExecutor,
        image: &str,
        pin: Option<&str>,
    ) -> Result<images::Fetched> {
        let id = match pin {
            Some(id) => id.to_string(),
            None => match engine.image_info(image).await? {
                Some(i) => i.id,
                None => return Err(Error::NotFound(format!("image {image}: not present"))),
            },
        };
        Ok(images::Fetched {
            tar: engine.save_image(&id).await?,
            image_id: id,
        })
    }

    /// Other nodes' engines, by address, for image shipping.
    struct Peers(BTreeMap<String, Arc<FakeExecutor>>);

    #[tonic::async_trait]
    impl ImageFetcher for Peers {
        async fn fetch(&self, addr: &str, image: &str) -> Result<images::Fetched> {
            match self.0.get(addr) {
                Some(engine) => honest_save(engine, image, None).await,
                None => Err(Error::Unavailable(format!("{addr}: connection refused"))),
            }
        }
    }

    fn shipped(image: &str, sources: &[&str]) -> Assignment {
        let mut t = task("t1", 1);
        t.spec.container.image = image.into();
        let mut a = assign(&t);
        a.net.image_sources = sources
            .iter()
            .map(|h| super::super::executor::ImageSource {
                addr: format!("{h}:4242"),
                hostname: h.to_string(),
                known: false,
            })
            .collect();
        a
    }

    #[tokio::test(start_paused = true)]
    async fn an_image_no_registry_has_is_loaded_from_a_node_that_has_it() {
        let mut env = Env::new();
        let image = "local/only-on-c:1";
        env.fake.fail_pull(image, "no registry");
        // b lacks it too, d is down; c has it. Slot 1 starts at the second source.
        let b = Arc::new(FakeExecutor::new());
        b.fail_pull(image, "no registry");
        let c = Arc::new(FakeExecutor::new());
        let peers = Peers(
            [
                ("b:4242".to_string(), b.clone()),
                ("c:4242".to_string(), c.clone()),
            ]
            .into(),
        );
        env.runner.set_image_fetcher(Arc::new(peers));
        env.runner
            .set_all(vec![shipped(image, &["c", "b", "d"])])
            .await;
        let seen = env.until("t1", TaskState::Running).await;
        let preparing: Vec<&str> = seen
            .iter()
            .filter(|s| s.state == TaskState::Preparing)
            .map(|s| s.message.as_str())
            .collect();
        // b lacks it and d does not answer: only c, which sends it, is named.
        assert_eq!(preparing, ["preparing", "loading image from c"]);
        // Saved by id, loaded, then tagged here.
        let id = crate::agent::fake::image_id_of(image);
        assert!(env.fake.calls().contains(&format!("load {id}")));
        assert!(env.fake.calls().contains(&format!("tag {image}")));
        // An image the cluster has is not asked of a registry.
        assert!(!env.fake.calls().contains(&format!("pull {image}")));
        assert!(c.calls().contains(&format!("save {id}")));
        // The id is reported with the status (it pins the service's image).
        assert_eq!(seen.last().expect("running").image_id, id);
        assert!(!b.calls().iter().any(|c| c.starts_with("save")));
        assert_eq!(env.container("t1").spec.image, image);
    }

    /// A source that takes a second to answer.
    struct SlowPeer(Arc<FakeExecutor>);

    #[tonic::async_trait]
    impl ImageFetcher for SlowPeer {
        async fn fetch(&self, _addr: &str, image: &str) -> Result<images::Fetched> {
            tokio::time::sleep(Duration::from_secs(1)).await;
            honest_save(&self.0, image, None).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_that_need_the_same_missing_image_load_it_once() {
        let mut env = Env::new();
        let image = "local/only-on-c:1";
        env.fake.fail_pull(image, "no registry");
        let c = Arc::new(FakeExecutor::new());
        env.runner.set_image_fetcher(Arc::new(SlowPeer(c.clone())));
        let mut a1 = shipped(image, &["c"]);
        let mut a2 = a1.clone();
        a2.task.id = TaskId("t2".into());
        a2.task.slot = 2;
        a1.task.id = TaskId("t1".into());
        env.runner.set_all(vec![a1, a2]).await;
        env.until("t1", TaskState::Running).await;
        env.until("t2", TaskState::Running).await;
        let count = |calls: Vec<String>, what: &str| calls.iter().filter(|c| *c == what).count();
        let id = crate::agent::fake::image_id_of(image);
        assert_eq!(count(c.calls(), &format!("save {id}")), 1);
        assert_eq!(count(env.fake.calls(), &format!("load {id}")), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_image_no_node_has_rejects_the_task_saying_so() {
        let mut env = Env::new();
        let image = "nowhere/nothing:1";
        env.fake.fail_pull(
            image,
            "image nowhere/nothing:1: not present on this node and could not be pulled",
        );
        let b = Arc::new(FakeExecutor::new());
        b.fail_pull(image, "no registry");
        env.runner
            .set_image_fetcher(Arc::new(Peers([("b:4242".to_string(), b)].into())));
        env.runner.set_all(vec![shipped(image, &["b"])]).await;
        let seen = env.until("t1", TaskState::Rejected).await;
        let r = seen.last().expect("rejected");
        assert_eq!(
            r.err,
            "image nowhere/nothing:1: not present on this node and could not be pulled; \
             no other node of the cluster has image nowhere/nothing:1"
        );
        assert!(env.fake.container_of(&TaskId("t1".into())).is_none());
    }

    fn pin(image: &str, id: &str) -> Option<ImagePin> {
        Some(ImagePin {
            image: image.into(),
            id: id.into(),
            repo_digest: String::new(),
        })
    }

    /// A node that sends other content under the image's name: a tar of what its
    /// tag names, saved by tag, while it says it sends `claims`.
    struct Poisoner {
        engine: Arc<FakeExecutor>,
        claims: String,
    }

    #[tonic::async_trait]
    impl ImageFetcher for Poisoner {
        async fn fetch(&self, addr: &str, image: &str) -> Result<images::Fetched> {
            if !addr.starts_with("evil") {
                return Err(Error::NotFound(format!("image {image}: not present")));
            }
            Ok(images::Fetched {
                image_id: self.claims.clone(),
                tar: self.engine.save_image(image).await?,
            })
        }
    }

    /// Tries `good` after the poisoner.
    struct Both(Poisoner, Arc<FakeExecutor>);

    #[tonic::async_trait]
    impl ImageFetcher for Both {
        async fn fetch(&self, addr: &str, image: &str) -> Result<images::Fetched> {
            if addr.starts_with("evil") {
                self.0.fetch(addr, image).await
            } else {
                honest_save(&self.1, image, None).await
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_loaded_image_that_is_not_the_pinned_one_is_refused() {
        let image = "local/app:1";
        let good = crate::agent::fake::image_id_of(image);
        let bad = crate::agent::fake::image_id_of("other/content:1");
        let evil = Arc::new(FakeExecutor::new());
        evil.set_image(image, &bad);

        // The poisoner says it sends the pinned id, and sends other content: loaded,
        // checked, refused; the task does not start.
        let mut env = Env::new();
        env.fake.fail_pull(image, "no registry");
        env.runner.set_image_fetcher(Arc::new(Poisoner {
            engine: evil.clone(),
            claims: good.clone(),
        }));
        let mut a = shipped(image, &["evil"]);
        a.image_pin = pin(image, &good);
        env.runner.set_all(vec![a]).await;
        let seen = env.until("t1", TaskState::Rejected).await;
        let r = seen.last().expect("rejected");
        assert!(
            r.err.contains(&format!(
                "image {image} sent by evil is {bad}, expected {good} (the service's pinned image)"
            )),
            "{r:?}"
        );
        assert!(env.fake.container_of(&TaskId("t1".into())).is_none());

        // A sender that says it sends other content is refused before anything loads.
        let mut env = Env::new();
        env.fake.fail_pull(image, "no registry");
        env.runner.set_image_fetcher(Arc::new(Poisoner {
            engine: evil.clone(),
            claims: bad.clone(),
        }));
        let mut a = shipped(image, &["evil"]);
        a.image_pin = pin(image, &good);
        env.runner.set_all(vec![a]).await;
        let seen = env.until("t1", TaskState::Rejected).await;
        assert!(seen.last().expect("rejected").err.contains(&bad));
        assert!(!env.fake.calls().iter().any(|c| c.starts_with("load")));

        // Control: the poisoner first, then a node with the right content: that one's
        // image runs, and the name now names the pinned id.
        let mut env = Env::new();
        env.fake.fail_pull(image, "no registry");
        let honest = Arc::new(FakeExecutor::new());
        env.runner.set_image_fetcher(Arc::new(Both(
            Poisoner {
                engine: evil,
                claims: good.clone(),
            },
            honest,
        )));
        // Slot 1 starts at the second source: evil, then good.
        let mut a = shipped(image, &["good", "evil"]);
        a.image_pin = pin(image, &good);
        env.runner.set_all(vec![a]).await;
        let seen = env.until("t1", TaskState::Running).await;
        assert_eq!(seen.last().expect("running").image_id, good);
        assert_eq!(
            env.fake
                .image_info(image)
                .await
                .expect("info")
                .map(|i| i.id),
            Some(good)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_local_image_other_than_the_pinned_one_is_refused() {
        let mut env = Env::new();
        let pinned = crate::agent::fake::image_id_of("orc-test/busybox:1");
        let other = crate::agent::fake::image_id_of("retagged/elsewhere:1");
        env.fake.set_image("orc-test/busybox:1", &other);
        let mut refused = assign(&task("t1", 1));
        refused.image_pin = pin("orc-test/busybox:1", &pinned);
        // Control: a task whose pin is what the engine has.
        let mut t2 = task("t2", 2);
        t2.spec.container.image = "orc-test/web:1".into();
        let mut runs = assign(&t2);
        runs.image_pin = pin(
            "orc-test/web:1",
            &crate::agent::fake::image_id_of("orc-test/web:1"),
        );
        env.runner.set_all(vec![refused, runs]).await;
        let seen = env.until("t1", TaskState::Rejected).await;
        assert_eq!(
            seen.last().expect("rejected").err,
            format!(
                "image orc-test/busybox:1 on this node is {other}, expected {pinned} \
                 (the service's pinned image): not starting the task"
            )
        );
        assert!(env.fake.container_of(&TaskId("t1".into())).is_none());
        env.until("t2", TaskState::Running).await;
        // A pin for another image (an older spec's) does not count.
        let mut t3 = task("t3", 3);
        t3.spec.container.image = "orc-test/busybox:1".into();
        let mut stale = assign(&t3);
        stale.image_pin = pin("orc-test/busybox:0", &pinned);
        env.runner.update(vec![stale], vec![]).await;
        env.until("t3", TaskState::Running).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_start_error_fails_the_task() {
        let mut env = Env::new();
        env.fake
            .fail_start("orc-test/busybox:1", "port is already allocated");
        env.runner.set_all(vec![assign(&task("t1", 1))]).await;
        let seen = env.until("t1", TaskState::Failed).await;
        let f = seen.last().expect("failed");
        assert!(f.err.contains("port is already allocated"), "{f:?}");
        assert!(!f.container_id.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_with_the_grace_period_and_remove_removes() {
        let mut env = Env::new();
        let t = task("t1", 1);
        env.runner.set_all(vec![assign(&t)]).await;
        env.until("t1", TaskState::Running).await;
        let c = env.container("t1");
        env.fake.ignore_sigterm(&c.id);
        let mut down = t.clone();
        down.desired_state = TaskState::Shutdown;
        let before = tokio::time::Instant::now();
        env.runner.update(vec![assign(&down)], vec![]).await;
        let seen = env.until("t1", TaskState::Shutdown).await;
        assert!(
            before.elapsed() >= Duration::from_secs(2),
            "waited the grace period"
        );
        let s = seen.last().expect("shutdown");
        assert_eq!(s.exit_code, Some(crate::agent::fake::EXIT_SIGKILL));
        let c = env.container("t1");
        assert!(!c.state.running, "stopped");
        assert_eq!(c.last_stop_grace, Some(Duration::from_secs(2)));
        // The container stays until the task is removed.
        env.quiet(Duration::from_secs(2)).await;
        assert!(env.fake.container_of(&t.id).is_some());
        env.runner.update(vec![], vec![t.id.clone()]).await;
        for _ in 0..100 {
            if env.fake.container_of(&t.id).is_none() && env.runner.known().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(env.fake.container_of(&t.id).is_none());
        assert!(env.runner.known().is_empty());
        assert!(env.db.open_tree(TREE).expect("tree").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn desired_remove_and_a_missing_task_in_the_full_set_remove_containers() {
        let mut env = Env::new();
        let t1 = task("t1", 1);
        let t2 = task("t2", 2);
        env.runner.set_all(vec![assign(&t1), assign(&t2)]).await;
        env.until("t1", TaskState::Running).await;
        env.until("t2", TaskState::Running).await;
        let mut gone = t1.clone();
        gone.desired_state = TaskState::Remove;
        env.runner.set_all(vec![assign(&gone)]).await;
        env.until("t1", TaskState::Shutdown).await;
        env.until("t2", TaskState::Shutdown).await;
        for _ in 0..100 {
            if env.fake.containers().is_empty() && env.runner.known().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(env.fake.containers().is_empty());
        assert!(env.runner.known().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_runner_adopts_running_containers_without_restarting_them() {
        let mut env = Env::new();
        let mut t = task("t1", 1);
        env.runner.set_all(vec![assign(&t)]).await;
        let seen = env.until("t1", TaskState::Running).await;
        let cid = seen.last().expect("running").container_id.clone();
        let calls = env.fake.calls().len();

        let mut env = env.restart();
        // The recorded task is known at once.
        assert_eq!(env.state("t1"), Some(TaskState::Running));
        // The managers still think it is assigned: the new session hears again.
        env.runner.set_all(vec![assign(&t)]).await;
        let again = env.until("t1", TaskState::Running).await;
        assert_eq!(again.last().expect("running").container_id, cid);
        env.quiet(Duration::from_secs(3)).await;
        let c = env.container("t1");
        assert_eq!(c.id, cid);
        assert_eq!(c.starts, 1, "not restarted");
        assert_eq!(env.fake.calls().len(), calls, "no create, start or stop");
        // And it still watches it.
        env.fake.exit(&cid, 2);
        env.until("t1", TaskState::Failed).await;

        // A manager that is up to date hears nothing again.
        t.status = TaskStatus::new(TaskState::Failed, "", 2);
        let mut env = env.restart();
        env.runner.set_all(vec![assign(&t)]).await;
        env.quiet(Duration::from_secs(3)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_container_that_died_while_the_agent_was_down_is_reported() {
        let mut env = Env::new();
        let t = task("t1", 1);
        env.runner.set_all(vec![assign(&t)]).await;
        env.until("t1", TaskState::Running).await;
        env.stop.cancel();
        env.fake.exit(&env.container("t1").id, 1);
        let mut env = env.restart();
        // Adopted from the record alone, before any session.
        let seen = env.until("t1", TaskState::Failed).await;
        assert_eq!(seen.last().expect("failed").message, "exited with code 1");
    }

    #[tokio::test(start_paused = true)]
    async fn stray_containers_are_removed() {
        let mut env = Env::new();
        let t = task("t1", 1);
        env.runner.set_all(vec![assign(&t)]).await;
        env.until("t1", TaskState::Running).await;
        let ours = env.container("t1").id;
        let stray = env
            .fake
            .add_container(NODE, &TaskId("unknown".into()), true);
        let elsewhere = env
            .fake
            .add_container(NodeId(0xdef), &TaskId("other".into()), true);
        // At start-up of a new runner...
        let mut env = env.restart();
        for _ in 0..100 {
            if env.fake.container(&stray).is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(env.fake.container(&stray).is_none());
        assert!(env.fake.container(&elsewhere).is_some(), "another node's");
        assert_eq!(env.fake.container(&ours).map(|c| c.starts), Some(1));
        // ... and when a full set arrives.
        let stray = env.fake.add_container(NODE, &TaskId("late".into()), false);
        env.runner.set_all(vec![assign(&t)]).await;
        // (the managers are behind: they hear the status again)
        env.until("t1", TaskState::Running).await;
        for _ in 0..100 {
            if env.fake.container(&stray).is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(env.fake.container(&stray).is_none());
        assert!(env.fake.container(&ours).is_some());
        env.quiet(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_before_start_never_creates_a_container() {
        let mut env = Env::new();
        let mut t = task("t1", 1);
        t.desired_state = TaskState::Shutdown;
        env.runner.set_all(vec![assign(&t)]).await;
        let seen = env.until("t1", TaskState::Shutdown).await;
        assert_eq!(states(&seen), [TaskState::Shutdown]);
        assert!(env.fake.containers().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_global_task_is_named_after_its_node_and_logs_flow() {
        let mut env = Env::new();
        let t = task("g1", 0);
        env.runner.set_all(vec![assign(&t)]).await;
        env.until("g1", TaskState::Running).await;
        let c = env.container("g1");
        assert_eq!(c.name, format!("web.{NODE}.g1"));
        env.fake
            .push_log(&c.id, crate::agent::executor::LogSource::Stdout, "hello");
        let lines: Vec<_> = futures::StreamExt::collect::<Vec<_>>(
            env.runner
                .logs(&t.id, LogOptions::default())
                .await
                .expect("logs"),
        )
        .await;
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].as_ref().expect("line").text, "hello");
    }
}
