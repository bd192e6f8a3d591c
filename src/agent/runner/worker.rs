//! The per-task worker: one state machine per task on this node, from `accepted` to a
//! terminal state. It brings the container to what the assignment wants (prepare the
//! image, create, start, watch, stop, remove), reports every change of state, and
//! persists what it knows so that a restarted agent adopts its containers.

use super::*;

/// What a worker does after a step.
pub(super) enum Next {
    /// Step again at once.
    Now,
    /// Step again after [`POLL_INTERVAL`], when the assignment changes or when an
    /// event names the container.
    Poll,
    /// The container runs: step again when an event names it, when the assignment
    /// changes, or after [`Shared::watch_interval`].
    Watch,
    /// Step again when the assignment changes.
    Idle,
}

/// What the desired state asks of the container.
pub(super) enum Want {
    Run,
    Stop,
    Remove,
}

pub(super) fn want(desired: TaskState) -> Want {
    if desired == TaskState::Remove {
        Want::Remove
    } else if desired <= TaskState::Running {
        Want::Run
    } else {
        Want::Stop
    }
}

/// One task's life on this node.
pub(super) struct Worker {
    pub(super) shared: Arc<Shared>,
    pub(super) id: TaskId,
    pub(super) generation: u64,
    /// Woken by an event of this task's container.
    pub(super) nudge: Arc<Notify>,
    pub(super) rx: watch::Receiver<Desired>,
    /// The latest assignment (its `task.status` is the managers' view).
    pub(super) assignment: Assignment,
    /// What this worker observed last (authoritative from ACCEPTED on).
    pub(super) status: TaskStatus,
    pub(super) session: u64,
    /// The following volumes were copied in (a launch that starts over, for a new
    /// assignment, does not copy them again).
    pub(super) volumes_copied: bool,
}

impl Worker {
    pub(super) async fn run(mut self) {
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
                Next::Watch => Some(self.shared.watch_interval()),
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
                _ = self.nudge.notified(), if poll.is_some() => {}
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

    pub(super) fn persist(&self) {
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
        if let Some(m) = self.shared.metrics.get() {
            m.note_task_state(state.as_str());
        }
        if state.is_terminal() {
            self.status.ports.clear();
            self.status.addresses.clear();
            crate::agent::secrets::remove(self.shared.node_id, &self.id);
        }
        self.tell_mesh();
        tracing::debug!(task = %self.id, state = %state, "{message}");
        self.observe_locally();
        self.persist();
        let _ = self
            .shared
            .status_tx
            .send((self.id.clone(), self.status.clone()));
    }

    /// Tells the node's mesh where this task's container is, on which networks, or
    /// that it is gone ([`crate::mesh::clients`]).
    fn tell_mesh(&self) {
        let clients = self
            .shared
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(clients) = clients else {
            return;
        };
        if self.status.state.is_terminal() || self.status.addresses.is_empty() {
            clients.forget_task(&self.id.0);
            return;
        }
        let nets = self
            .status
            .addresses
            .iter()
            .map(|a| a.network.clone())
            .collect();
        let ips = self
            .status
            .addresses
            .iter()
            .filter_map(|a| a.ip.parse().ok())
            .collect();
        clients.set_task(&self.id.0, nets, ips);
        clients.set_task_dns(
            &self.id.0,
            self.assignment.task.spec.container.options.dns_servers(),
        );
    }

    /// Makes sure this node has the bridges of the task's networks, and tells the mesh
    /// their subnets.
    async fn prepare_networks(&self) -> Result<()> {
        let bridges = self
            .shared
            .exec
            .ensure_networks(&self.assignment.net.attachments())
            .await?;
        let clients = self
            .shared
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(clients) = clients {
            for (net, subnet) in bridges {
                if let Some(s) = crate::mesh::clients::Subnet::parse(&subnet) {
                    clients.set_bridge(net, s);
                }
            }
        }
        Ok(())
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
        if let Err(e) = self.prepare_volumes().await {
            let e = format!("copying the volumes: {e}");
            self.fail(TaskState::Rejected, &e, &e);
            return Next::Idle;
        }
        if self.desired_changed() {
            return Next::Now;
        }
        if let Err(e) = self.prepare_networks().await {
            let e = format!("preparing the networks: {e}");
            self.fail(TaskState::Rejected, &e, &e);
            return Next::Idle;
        }
        let task = match self.with_files() {
            Ok(Some(task)) => task,
            Ok(None) => return Next::Idle,
            Err(e) => {
                let e = format!("preparing the secrets and configs: {e}");
                self.fail(TaskState::Rejected, &e, &e);
                return Next::Idle;
            }
        };
        let created = exec
            .create(self.shared.node_id, &task, &self.assignment.net)
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
        if let Some(m) = self.shared.metrics.get() {
            m.container_starts.inc();
        }
        if let Ok(st) = exec.inspect(&id).await {
            self.status.ports = st.ports;
            self.status.addresses = st.addresses;
            self.status.health = st.health;
            self.tell_mesh();
        }
        self.report(TaskState::Starting, "starting");
        Next::Now
    }

    /// The task with its secrets and configs written to its tmpfs and bind-mounted
    /// ([`crate::agent::secrets`]); `None` when their content has not come yet (an
    /// assignment recorded before a restart: the session sends them again).
    fn with_files(&self) -> Result<Option<Task>> {
        let a = &self.assignment;
        let missing = crate::agent::secrets::missing(&a.task.spec, &a.files);
        if let Some(r) = missing.first() {
            if self.session == 0 {
                return Ok(None);
            }
            return Err(crate::error::Error::NotFound(format!(
                "{} (version {}) was not received",
                r.name, r.version
            )));
        }
        let mut task = a.task.clone();
        let binds = crate::agent::secrets::prepare(self.shared.node_id, &self.id, &a.files)?;
        std::sync::Arc::make_mut(&mut task.spec)
            .container
            .mounts
            .extend(binds);
        Ok(Some(task))
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
        // An image the engine holds is checked by every task at once; only a fetch or
        // a pull takes the image's turn (one at a time), looking again once it has it.
        // (Taking the turn first put 50 tasks' inspects of one image in a row: 4.5 s
        // before the last one's create on a busy engine.)
        if let Ok(Some(found)) = exec.image_info(&image).await {
            images::check(&image, "on this node", &found, pin)?;
            return Ok(found);
        }
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
                        if let Some(m) = self.shared.metrics.get() {
                            m.note_image_load("peer");
                        }
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
                Ok(Some(found)) => {
                    if let Some(m) = self.shared.metrics.get() {
                        m.note_image_load("pull");
                    }
                    images::check(&image, "as pulled", &found, pin).map(|_| found)
                }
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

    /// Copies the task's following volumes from the node that holds them, when the
    /// assignment names one ([`super::volumes`]), saying how far each copy is.
    async fn prepare_volumes(&mut self) -> Result<()> {
        let Some(src) = self.assignment.volume_source.clone() else {
            return Ok(());
        };
        if self.volumes_copied {
            return Ok(());
        }
        let fetcher = self
            .shared
            .volume_fetcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or_else(|| Error::Unavailable("this node cannot copy volumes".into()))?;
        let exec = self.shared.exec.clone();
        let service = self.assignment.task.service_id.clone();
        let slot = self.assignment.task.slot;
        let from = src.name();
        for v in &src.volumes {
            // Another replica of this node may run on a volume of the same name: it is
            // never overwritten.
            if exec.volume_in_use(v).await? {
                return Err(Error::Conflict(format!(
                    "volume {v} is in use on this node by another container: not overwritten by the copy from {from}"
                )));
            }
            let dir = exec
                .volume_dir(v, Some(&service))
                .await?
                .ok_or_else(|| Error::Internal(format!("volume {v}: not made")))?;
            let progress = Arc::new(crate::agent::volumes::Progress::default());
            let req = crate::proto::VolumeRequest {
                service_id: service.0.clone(),
                slot,
                volume: v.clone(),
                offset: 0,
                fingerprint: String::new(),
            };
            self.note(&crate::agent::volumes::progress_message(
                v, &from, &progress,
            ));
            let started = std::time::Instant::now();
            let copy =
                crate::agent::volumes::copy_in(&*fetcher, &src.addr, req, &dir, progress.clone());
            tokio::pin!(copy);
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    r = &mut copy => {
                        r.map_err(|e| match e {
                            Error::PermissionDenied(m) | Error::NotFound(m) | Error::Conflict(m) =>
                                Error::Conflict(format!("volume {v} from {from}: {m}")),
                            e => e,
                        })?;
                        break;
                    }
                    _ = tick.tick() => {
                        self.note(&crate::agent::volumes::progress_message(v, &from, &progress));
                    }
                }
            }
            self.note(&crate::agent::volumes::progress_message(
                v, &from, &progress,
            ));
            if let Some(m) = self.shared.metrics.get() {
                m.volume_copies.inc();
                m.volume_copy_bytes
                    .inc_by(progress.done.load(std::sync::atomic::Ordering::Relaxed));
            }
            let waited = progress
                .waited_ms
                .load(std::sync::atomic::Ordering::Relaxed);
            tracing::info!(task = %self.id, volume = v, from = %from,
                bytes = progress.done.load(std::sync::atomic::Ordering::Relaxed),
                wait_ms = waited,
                ms = (started.elapsed().as_millis() as u64).saturating_sub(waited),
                "volume copied from another node");
        }
        self.volumes_copied = true;
        Ok(())
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
            self.status.addresses = st.addresses.clone();
            self.tell_mesh();
            match st.health.as_str() {
                "unhealthy" => {
                    self.fail(TaskState::Failed, "unhealthy", "container is unhealthy");
                    self.stop_container().await;
                    Next::Idle
                }
                "starting" => {
                    self.report(TaskState::Starting, "starting");
                    Next::Watch
                }
                _ => {
                    self.report(TaskState::Running, "started");
                    Next::Watch
                }
            }
        } else if st.status == "created" {
            // Created but never started (the previous runner stopped in between, or
            // the desired state changed between its creation and its start).
            if let Err(e) = self.shared.exec.start(&id).await {
                let e = format!("starting the container: {e}");
                self.fail(TaskState::Failed, &e, &e);
                return Next::Idle;
            }
            if let Some(m) = self.shared.metrics.get() {
                m.container_starts.inc();
            }
            Next::Now
        } else {
            self.exited(&st);
            Next::Idle
        }
    }

    /// Reports how the container ended.
    fn exited(&mut self, st: &crate::agent::executor::ContainerState) {
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
        crate::agent::secrets::remove(self.shared.node_id, &self.id);
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
        self.shared.drop_nudge(&self.id, self.generation);
        self.shared.forget(&self.id);
        // With the lock held: no task is given a network between `keep` and the removal.
        let keep = w
            .map
            .values()
            .flat_map(|h| {
                h.tx.borrow()
                    .assignment
                    .as_ref()
                    .map(|a| a.net.network_ids())
                    .unwrap_or_default()
            })
            .collect();
        if let Err(e) = self.shared.exec.prune_networks(&keep).await {
            tracing::warn!("agent: removing unused bridges: {e}");
        }
        true
    }
}

impl Next {
    fn is_poll(&self) -> bool {
        matches!(self, Next::Poll)
    }
}
