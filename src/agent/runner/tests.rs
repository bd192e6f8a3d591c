//! The task runner against the fake executor: the worker state machine, image loading
//! and pinning, adoption after a restart, strays, logs.

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
        endpoint: None,
        id: TaskId(id.into()),
        service_id: ServiceId("svc1".into()),
        service_name: "web".into(),
        slot,
        node_id: Some(NODE),
        spec_version: 1,
        spec: spec.into(),
        desired_state: TaskState::Running,
        status: TaskStatus::new(TaskState::Assigned, "assigned", 1),
        created_ms: 1,
    }
}

fn assign(t: &Task) -> Assignment {
    Assignment {
        image_pin: None,
        files: vec![],
        volume_source: None,
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

/// A runner on an engine that tells its events, with task `t1` running.
async fn running_with_events() -> Env {
    let fake = Arc::new(FakeExecutor::new());
    fake.with_events();
    let db = sled::Config::new().temporary(true).open().expect("sled");
    let mut env = Env::on(fake, db);
    env.runner.set_all(vec![assign(&task("t1", 1))]).await;
    env.until("t1", TaskState::Running).await;
    env
}

/// How many times the running container of `t1` is looked at in 25 s, and how long its
/// exit then takes to be reported (25 s: not a multiple of WATCH_INTERVAL, so that the
/// exit does not fall just before a look).
async fn looks_and_exit(env: &mut Env) -> (u64, Duration) {
    let before = env.fake.inspects();
    env.quiet(Duration::from_secs(25)).await;
    let looks = env.fake.inspects() - before;
    let t0 = tokio::time::Instant::now();
    env.fake.exit(&env.container("t1").id, 3);
    env.until("t1", TaskState::Failed).await;
    (looks, t0.elapsed())
}

#[tokio::test(start_paused = true)]
async fn with_the_engines_events_a_running_container_is_looked_at_when_it_changes() {
    // Control: an engine that tells no events; the container is looked at every
    // POLL_INTERVAL, and its exit seen within one.
    let mut env = Env::new();
    env.runner.set_all(vec![assign(&task("t1", 1))]).await;
    env.until("t1", TaskState::Running).await;
    let (looks, took) = looks_and_exit(&mut env).await;
    assert!(looks >= 40, "{looks} looks in 25 s without events");
    assert!(
        took <= POLL_INTERVAL,
        "exit seen after {took:?} without events"
    );

    // With events: looked at every WATCH_INTERVAL, and the exit seen at once.
    let mut env = running_with_events().await;
    let (looks, took) = looks_and_exit(&mut env).await;
    assert!(looks <= 4, "{looks} looks in 25 s with events");
    assert!(
        took < Duration::from_millis(50),
        "exit seen after {took:?} with events"
    );
}

#[tokio::test(start_paused = true)]
async fn when_the_engines_events_stop_running_containers_are_polled_again() {
    let mut env = running_with_events().await;
    env.quiet(Duration::from_secs(1)).await;
    env.fake.stop_events();
    let (looks, took) = looks_and_exit(&mut env).await;
    assert!(looks >= 40, "{looks} looks in 25 s once the events stopped");
    assert!(took <= POLL_INTERVAL, "exit seen after {took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_health_check_holds_the_task_in_starting_until_healthy() {
    let mut env = Env::new();
    let mut t = task("t1", 1);
    std::sync::Arc::make_mut(&mut t.spec).container.healthcheck = Some(HealthCheck {
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
    std::sync::Arc::make_mut(&mut t1.spec).container.image = "orc-test/web:1".into();
    let mut t2 = t1.clone();
    t2.id = TaskId("t2".into());
    t2.slot = 2;
    std::sync::Arc::make_mut(&mut t2.spec).container.healthcheck = Some(HealthCheck {
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
    std::sync::Arc::make_mut(&mut t.spec).container.image = "nowhere/nothing:1".into();
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
    std::sync::Arc::make_mut(&mut t.spec).container.image = image.into();
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
    std::sync::Arc::make_mut(&mut t2.spec).container.image = "orc-test/web:1".into();
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
    std::sync::Arc::make_mut(&mut t3.spec).container.image = "orc-test/busybox:1".into();
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

#[tokio::test(start_paused = true)]
async fn a_task_whose_secret_did_not_come_is_rejected_without_a_container() {
    let mut env = Env::new();
    let mut t = task("t1", 1);
    let mut r = crate::store::SecretRef::to("pw");
    r.id = crate::store::SecretId("s1".into());
    r.version = 1;
    std::sync::Arc::make_mut(&mut t.spec).secrets.push(r);
    // A live session's assignment without the file (the leader could not open it).
    env.runner.set_all(vec![assign(&t)]).await;
    let seen = env.until("t1", TaskState::Rejected).await;
    let last = seen.last().expect("rejected");
    assert!(
        last.err.contains("pw (version 1) was not received"),
        "{last:?}"
    );
    assert!(env.fake.container_of(&t.id).is_none());
    // The recorded assignment never holds the content.
    let a = assign(&t);
    let json = serde_json::to_string(&Assignment {
        files: vec![crate::agent::secrets::TaskFile::of(
            crate::store::secret::Kind::Secret,
            &t.spec.secrets[0],
            b"hunter2".to_vec(),
        )],
        ..a
    })
    .unwrap();
    assert!(
        !json.contains("hunter2") && !json.contains("files"),
        "{json}"
    );
}

/// Serves a directory as another node's volume, counting the copies, each taking a
/// moment (so that new assignments arrive meanwhile).
struct SlowVolume {
    dir: std::path::PathBuf,
    fetches: std::sync::atomic::AtomicUsize,
}

#[tonic::async_trait]
impl crate::agent::volumes::VolumeFetcher for SlowVolume {
    async fn fetch(
        &self,
        _addr: &str,
        req: crate::proto::VolumeRequest,
    ) -> Result<crate::agent::volumes::VolumeStream> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let expect = (req.offset > 0).then_some(req.fingerprint);
        crate::agent::volumes::serve(self.dir.clone(), req.offset, expect).await
    }
}

/// Task `id` of `slot` whose following volume `pgdata` is on node `b`.
fn from_b(id: &str, slot: u64) -> Assignment {
    let mut t = task(id, slot);
    std::sync::Arc::make_mut(&mut t.spec).container.mounts =
        vec![crate::store::service::Mount::following("pgdata", "/data")];
    let mut a = assign(&t);
    a.volume_source = Some(crate::agent::volumes::VolumeSource {
        node: NodeId(9),
        addr: "b:4242".into(),
        hostname: "b".into(),
        volumes: vec!["pgdata".into()],
    });
    a
}

#[tokio::test]
async fn a_following_volume_is_copied_once_though_the_assignment_changes_meanwhile() {
    let mut env = Env::new();
    let tmp = tempfile::tempdir().unwrap();
    let (remote, local) = (tmp.path().join("remote"), tmp.path().join("engine"));
    std::fs::create_dir_all(&remote).unwrap();
    std::fs::create_dir_all(&local).unwrap();
    std::fs::write(remote.join("row-1"), b"1").unwrap();
    env.fake.with_volumes(&local);
    let fetcher = Arc::new(SlowVolume {
        dir: remote.clone(),
        fetches: Default::default(),
    });
    env.runner.set_volume_fetcher(fetcher.clone());
    let a = from_b("t1", 1);
    env.runner.set_all(vec![a.clone()]).await;
    // The managers echo each status back in a new assignment, as the dispatcher does.
    let mut echoed = a.clone();
    let seen = loop {
        let st = env.until("t1", TaskState::Preparing).await;
        echoed.task.status = st.last().unwrap().clone();
        env.runner.update(vec![echoed.clone()], vec![]).await;
        if st
            .iter()
            .any(|s| s.message.starts_with("copying volume pgdata from b"))
        {
            break env.until("t1", TaskState::Running).await;
        }
    };
    assert!(!seen.is_empty());
    assert_eq!(
        fetcher.fetches.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "copied once"
    );
    assert_eq!(std::fs::read(local.join("pgdata/row-1")).unwrap(), b"1");
}

#[tokio::test]
async fn a_copy_never_overwrites_a_volume_another_replica_of_this_node_runs_on() {
    let mut env = Env::new();
    let tmp = tempfile::tempdir().unwrap();
    env.fake.with_volumes(tmp.path());
    env.runner.set_volume_fetcher(Arc::new(SlowVolume {
        dir: tmp.path().to_path_buf(),
        fetches: Default::default(),
    }));
    // Slot 2 runs here on pgdata.
    let mut other = task("t2", 2);
    std::sync::Arc::make_mut(&mut other.spec).container.mounts =
        vec![crate::store::service::Mount::following("pgdata", "/data")];
    env.runner.set_all(vec![assign(&other)]).await;
    env.until("t2", TaskState::Running).await;
    std::fs::create_dir_all(tmp.path().join("pgdata")).unwrap();
    std::fs::write(tmp.path().join("pgdata/mine"), b"slot 2").unwrap();
    // Slot 1 comes here with a copy from elsewhere: refused, slot 2's data untouched.
    let a = from_b("t1", 1);
    env.runner.set_all(vec![assign(&other), a]).await;
    let seen = env.until("t1", TaskState::Rejected).await;
    let err = &seen.last().unwrap().err;
    assert!(
        err.contains("volume pgdata is in use on this node"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(tmp.path().join("pgdata/mine")).unwrap(),
        b"slot 2"
    );
}
