//! The worker's task runner against the real Docker engine.
//!
//! Each test runs a [`TaskRunner`] with a [`DockerExecutor`] on the local engine, for a
//! node id of its own, and drives it the way a dispatcher session would. The images are
//! the local test images (`tests/images/build.sh` builds them when missing; nothing is
//! pulled). Every container a test creates carries an `orc.test` label unique to the
//! test, and a guard removes exactly those containers when the test ends, passed or
//! failed. Time limits are generous: the machine is small and shared.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use orc::agent::docker_exec::DockerExecutor;
use orc::agent::executor::{Executor, LogOptions, LogSource, TaskNetwork};
use orc::agent::runner::{Assignment, TaskRunner};
use orc::store::service::{HealthCheck, PortConfig, Protocol, PublishMode, TaskSpec};
use orc::store::{NodeId, ServiceId, Task, TaskId, TaskState, TaskStatus};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const BUSYBOX: &str = "orc-test/busybox:1";
const WEB: &str = "orc-test/web:1";
const LONG: Duration = Duration::from_secs(90);

/// Builds the test images once per test binary if `orc-test/web:1` is missing.
fn ensure_images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let present = Command::new("docker")
            .args(["image", "inspect", WEB, BUSYBOX])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !present {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/images/build.sh");
            let out = Command::new(script).output().expect("run build.sh");
            assert!(
                out.status.success(),
                "tests/images/build.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes every container labelled with this test's label when dropped.
struct Guard {
    label: String,
}

impl Guard {
    fn new(test: &str) -> Guard {
        Guard {
            label: format!("orc.test={test}-{:08x}", rand::random::<u32>()),
        }
    }

    fn containers(&self) -> Vec<String> {
        docker(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label={}", self.label),
        ])
        .lines()
        .map(str::to_string)
        .collect()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let ids = self.containers();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            let _ = Command::new("docker").args(&args).output();
        }
    }
}

/// One runner on the real engine, for a node of its own.
struct Env {
    guard: Guard,
    node: NodeId,
    exec: Arc<DockerExecutor>,
    db: sled::Db,
    _dir: tempfile::TempDir,
    rx: mpsc::UnboundedReceiver<(TaskId, TaskStatus)>,
    runner: Arc<TaskRunner>,
    stop: CancellationToken,
    pending: BTreeMap<TaskId, Vec<TaskStatus>>,
}

impl Env {
    async fn new(test: &str) -> Env {
        ensure_images();
        let guard = Guard::new(test);
        let exec = Arc::new(DockerExecutor::connect(None).await.expect("docker"));
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .cache_capacity(8 << 20)
            .open()
            .expect("sled");
        let node = NodeId(rand::random::<u64>());
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let runner = TaskRunner::new(node, exec.clone(), db.clone(), tx, stop.clone());
        Env {
            guard,
            node,
            exec,
            db,
            _dir: dir,
            rx,
            runner,
            stop,
            pending: BTreeMap::new(),
        }
    }

    /// Stops this runner and starts a new one on the same database and node.
    fn restart(&mut self) {
        self.stop.cancel();
        let (tx, rx) = mpsc::unbounded_channel();
        self.stop = CancellationToken::new();
        self.rx = rx;
        self.pending.clear();
        self.runner = TaskRunner::new(
            self.node,
            self.exec.clone(),
            self.db.clone(),
            tx,
            self.stop.clone(),
        );
    }

    /// A task of service `svc` running `image` with `args`, labelled for the guard.
    fn task(&self, svc: &str, slot: u64, image: &str, args: &[&str]) -> Task {
        let mut spec = TaskSpec::default();
        spec.container.image = image.into();
        spec.container.args = args.iter().map(|s| s.to_string()).collect();
        spec.container.stop_grace_period_ms = 1000;
        let (k, v) = self.guard.label.split_once('=').expect("label");
        spec.container.labels.insert(k.into(), v.into());
        Task {
            vip: String::new(),
            endpoint: None,
            id: TaskId::random(),
            service_id: ServiceId::random(),
            service_name: svc.into(),
            slot,
            node_id: Some(self.node),
            spec_version: 1,
            spec: spec.into(),
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Assigned, "assigned", 1),
            created_ms: 1,
        }
    }

    /// Statuses of `id` until it reaches `state`; panics if it reaches another final
    /// state or takes too long.
    async fn until(&mut self, id: &TaskId, state: TaskState) -> Vec<TaskStatus> {
        let mut seen = std::mem::take(self.pending.entry(id.clone()).or_default());
        if let Some(i) = seen.iter().position(|s| s.state == state) {
            let rest = seen.split_off(i + 1);
            self.pending.insert(id.clone(), rest);
            return seen;
        }
        let deadline = tokio::time::Instant::now() + LONG;
        loop {
            let got = tokio::time::timeout_at(deadline, self.rx.recv()).await;
            let Ok(Some((tid, st))) = got else {
                panic!("task {id} never reached {state}; saw {seen:#?}");
            };
            if &tid != id {
                self.pending.entry(tid).or_default().push(st);
                continue;
            }
            let s = st.state;
            seen.push(st);
            if s == state {
                return seen;
            }
            assert!(
                !s.is_terminal(),
                "task {id} ended {s} while waiting for {state}: {seen:#?}"
            );
        }
    }
}

fn assignment(task: &Task, ports: Vec<PortConfig>) -> Assignment {
    Assignment {
        task: task.clone(),
        net: TaskNetwork {
            ports,
            ..Default::default()
        },
        image_pin: None,
        files: vec![],
        volume_source: None,
    }
}

fn tcp(target: u16, published: u16, mode: PublishMode) -> PortConfig {
    PortConfig {
        protocol: Protocol::Tcp,
        target,
        published,
        mode,
        proxy_protocol: Default::default(),
    }
}

#[path = "common/ports.rs"]
mod ports;
use ports::free_port;

/// `GET /` on 127.0.0.1:port with a plain TcpStream; retries while the port is not
/// ready. Returns the whole response.
fn http_get(port: u16) -> String {
    http_get_at(&format!("127.0.0.1:{port}"))
}

/// `GET /` on `addr` (`IP:PORT`), as [`http_get`].
fn http_get_at(addr: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })();
        match attempt {
            Ok(r) if r.starts_with("HTTP/1.") => return r,
            other if Instant::now() > deadline => panic!("GET / on {addr}: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[tokio::test]
async fn the_web_image_serves_through_its_published_ports() {
    let mut env = Env::new("web").await;
    let t = env.task("web", 1, WEB, &[]);
    let host_port = free_port();
    let mut h = env.task("webhost", 0, WEB, &[]);
    std::sync::Arc::make_mut(&mut h.spec).container.healthcheck = Some(HealthCheck {
        test: vec!["NONE".into()],
        ..HealthCheck::default()
    });
    env.runner
        .set_all(vec![
            assignment(&t, vec![tcp(80, 8080, PublishMode::Ingress)]),
            assignment(&h, vec![tcp(80, host_port, PublishMode::Host)]),
        ])
        .await;

    // The image's HEALTHCHECK holds the task in STARTING until it passes.
    let seen = env.until(&t.id, TaskState::Running).await;
    let states: Vec<_> = seen.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [
            TaskState::Accepted,
            TaskState::Preparing,
            TaskState::Starting,
            TaskState::Running
        ]
    );
    assert_eq!(seen[2].health, "starting");
    let running = seen.last().expect("running");
    assert_eq!(running.health, "healthy");
    assert!(seen[3].timestamp_ms >= seen[2].timestamp_ms);

    // The ingress port is not published by Docker: it is exposed, and the node reaches
    // it at the container's address on its network (the built-in one).
    assert_eq!(running.ports.len(), 1, "{:?}", running.ports);
    let p = &running.ports[0];
    assert_eq!((p.protocol, p.target, p.host_port), (Protocol::Tcp, 80, 0));
    assert_eq!(running.addresses.len(), 1, "{:?}", running.addresses);
    assert!(running.addresses[0].network.is_default());
    let page = http_get_at(&format!("{}:80", running.addresses[0].ip));
    assert!(
        page.starts_with("HTTP/1.") && page.contains(" 200 "),
        "{page}"
    );
    let hostname = &running.container_id[..12];
    assert!(page.trim_end().ends_with(hostname), "{page}");

    // The container carries orc's labels and name.
    let name = docker(&["inspect", "-f", "{{.Name}}", &running.container_id]);
    assert_eq!(name, format!("/web.1.{}", t.id));
    let labels = docker(&[
        "inspect",
        "-f",
        "{{json .Config.Labels}}",
        &running.container_id,
    ]);
    assert!(
        labels.contains(&format!("\"orc.task.id\":\"{}\"", t.id)),
        "{labels}"
    );
    assert!(
        labels.contains(&format!("\"orc.node.id\":\"{}\"", env.node)),
        "{labels}"
    );

    // Host mode binds exactly the published port; health check disabled: no health.
    let seen = env.until(&h.id, TaskState::Running).await;
    let running = seen.last().expect("running");
    assert_eq!(running.health, "");
    assert_eq!(running.ports.len(), 1, "{:?}", running.ports);
    assert_eq!(running.ports[0].host_port, host_port);
    let page = http_get(host_port);
    assert!(page.contains(&running.container_id[..12]), "{page}");
    let name = docker(&["inspect", "-f", "{{.Name}}", &running.container_id]);
    assert_eq!(name, format!("/webhost.{}.{}", env.node, h.id));
}

#[tokio::test]
async fn health_checks_drive_starting_to_running_or_to_failed() {
    let mut env = Env::new("health").await;
    // Healthy after about three seconds.
    let mut good = env.task(
        "good",
        1,
        BUSYBOX,
        &["sh", "-c", "sleep 3; touch /tmp/ok; exec sleep 1000"],
    );
    std::sync::Arc::make_mut(&mut good.spec)
        .container
        .healthcheck = Some(HealthCheck {
        test: vec!["CMD".into(), "test".into(), "-f".into(), "/tmp/ok".into()],
        interval_ms: 500,
        timeout_ms: 2000,
        retries: 100,
        start_period_ms: 0,
    });
    // Never healthy.
    let mut bad = env.task("bad", 1, BUSYBOX, &["sleep", "1000"]);
    std::sync::Arc::make_mut(&mut bad.spec)
        .container
        .healthcheck = Some(HealthCheck {
        test: vec!["CMD".into(), "false".into()],
        interval_ms: 500,
        timeout_ms: 2000,
        retries: 2,
        start_period_ms: 0,
    });
    env.runner
        .set_all(vec![assignment(&good, vec![]), assignment(&bad, vec![])])
        .await;
    let seen = env.until(&good.id, TaskState::Running).await;
    let starting = seen
        .iter()
        .find(|s| s.state == TaskState::Starting)
        .expect("starting");
    let running = seen.last().expect("running");
    assert!(
        running.timestamp_ms >= starting.timestamp_ms + 2500,
        "running only once healthy: {seen:#?}"
    );
    assert_eq!(running.health, "healthy");

    let seen = env.until(&bad.id, TaskState::Failed).await;
    assert!(!seen.iter().any(|s| s.state == TaskState::Running));
    let failed = seen.last().expect("failed");
    assert_eq!(failed.message, "unhealthy");
    // The unhealthy container is stopped.
    let deadline = Instant::now() + LONG;
    while docker(&["inspect", "-f", "{{.State.Running}}", &failed.container_id]) == "true" {
        assert!(
            Instant::now() < deadline,
            "the unhealthy container still runs"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn exit_codes_give_complete_or_failed() {
    let mut env = Env::new("exit").await;
    let ok = env.task("ok", 1, BUSYBOX, &["sh", "-c", "sleep 1; exit 0"]);
    let three = env.task("three", 1, BUSYBOX, &["sh", "-c", "sleep 1; exit 3"]);
    env.runner
        .set_all(vec![assignment(&ok, vec![]), assignment(&three, vec![])])
        .await;
    let seen = env.until(&ok.id, TaskState::Complete).await;
    assert_eq!(seen.last().expect("complete").exit_code, Some(0));
    let seen = env.until(&three.id, TaskState::Failed).await;
    let failed = seen.last().expect("failed");
    assert_eq!(failed.exit_code, Some(3));
    assert_eq!(failed.message, "exited with code 3");
}

#[tokio::test]
async fn a_killed_container_fails_within_two_seconds() {
    let mut env = Env::new("kill").await;
    let t = env.task("victim", 1, BUSYBOX, &["sleep", "1000"]);
    env.runner.set_all(vec![assignment(&t, vec![])]).await;
    let seen = env.until(&t.id, TaskState::Running).await;
    let id = seen.last().expect("running").container_id.clone();
    docker(&["kill", &id]);
    let killed = Instant::now();
    let seen = env.until(&t.id, TaskState::Failed).await;
    let took = killed.elapsed();
    let failed = seen.last().expect("failed");
    assert_eq!(failed.message, "exited with code 137");
    assert_eq!(failed.exit_code, Some(137));
    // At once (the engine's `die` event wakes the worker; without events, 500 ms
    // polling; a runner deaf to events would look only every 10 s); generous for a
    // busy machine.
    assert!(took < Duration::from_secs(3), "reported after {took:?}");
    eprintln!("kill reported after {took:?}");
}

#[tokio::test]
async fn the_engines_events_name_the_task_whose_container_changed_on_this_node_only() {
    use futures::StreamExt;
    let mut env = Env::new("events").await;
    let mut events = env
        .exec
        .events(env.node, orc::units::now_ms())
        .await
        .expect("the engine tells events");
    // Hostile: a container labelled for another node, and one for no task of orc.
    let other = NodeId(env.node.0 ^ 1);
    for labels in [
        vec![
            format!("orc.node.id={other}"),
            "orc.task.id=othernode".to_string(),
        ],
        vec!["orc.unrelated=1".to_string()],
    ] {
        let mut args = vec!["run", "-d", "--label", &env.guard.label];
        for l in &labels {
            args.extend(["--label", l.as_str()]);
        }
        args.extend([BUSYBOX, "sleep", "1000"]);
        docker(&args);
    }
    // Positive: this node's task, started, then killed.
    let t = env.task("watched", 1, BUSYBOX, &["sleep", "1000"]);
    env.runner.set_all(vec![assignment(&t, vec![])]).await;
    let seen = env.until(&t.id, TaskState::Running).await;
    let id = seen.last().expect("running").container_id.clone();
    docker(&["kill", &id]);
    let mut named = vec![];
    while named.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("an event in 30 s")
            .expect("the stream goes on")
            .expect("an event");
        named.push(e);
    }
    // Its start and its death, and nothing of the others.
    assert_eq!(named, [t.id.clone(), t.id.clone()]);
}

#[tokio::test]
async fn a_container_removed_behind_its_back_fails_the_task() {
    let mut env = Env::new("rm").await;
    let t = env.task("gone", 1, BUSYBOX, &["sleep", "1000"]);
    env.runner.set_all(vec![assignment(&t, vec![])]).await;
    let seen = env.until(&t.id, TaskState::Running).await;
    let id = seen.last().expect("running").container_id.clone();
    docker(&["rm", "-f", &id]);
    let seen = env.until(&t.id, TaskState::Failed).await;
    let failed = seen.last().expect("failed");
    assert_eq!(failed.message, "container removed");
    assert_eq!(failed.container_id, id);
}

#[tokio::test]
async fn a_new_runner_adopts_the_running_container() {
    let mut env = Env::new("adopt").await;
    let t = env.task("kept", 1, BUSYBOX, &["sleep", "1000"]);
    // And a leftover of this node whose task nobody knows.
    let stray = env.task("stray", 1, BUSYBOX, &["sleep", "1000"]);
    let stray_id = env
        .exec
        .create(env.node, &stray, &TaskNetwork::default())
        .await
        .expect("create the stray");
    env.exec.start(&stray_id).await.expect("start the stray");

    env.runner.set_all(vec![assignment(&t, vec![])]).await;
    let seen = env.until(&t.id, TaskState::Running).await;
    let id = seen.last().expect("running").container_id.clone();
    let started = docker(&["inspect", "-f", "{{.State.StartedAt}}", &id]);
    // The stray is removed when the full set arrives.
    let deadline = Instant::now() + LONG;
    while env.exec.inspect(&stray_id).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the stray container is still there"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    env.restart();
    assert_eq!(env.runner.known(), vec![(t.id.clone(), TaskState::Running)]);
    // A new session whose managers lag hears RUNNING again, for the same container.
    env.runner.set_all(vec![assignment(&t, vec![])]).await;
    let seen = env.until(&t.id, TaskState::Running).await;
    assert_eq!(seen.last().expect("running").container_id, id);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.State.StartedAt}} {{.State.Running}}",
            &id
        ]),
        format!("{started} true"),
        "not restarted"
    );
    assert_eq!(env.guard.containers(), vec![id.clone()]);
    // Still watched by the new runner.
    docker(&["kill", &id]);
    let seen = env.until(&t.id, TaskState::Failed).await;
    assert_eq!(seen.last().expect("failed").exit_code, Some(137));
}

#[tokio::test]
async fn stop_honours_the_grace_period() {
    let mut env = Env::new("grace").await;
    let mut stubborn = env.task(
        "stubborn",
        1,
        BUSYBOX,
        &["sh", "-c", "trap '' TERM; while true; do sleep 0.2; done"],
    );
    std::sync::Arc::make_mut(&mut stubborn.spec)
        .container
        .stop_grace_period_ms = 3000;
    let mut polite = env.task(
        "polite",
        1,
        BUSYBOX,
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 0.2; done",
        ],
    );
    std::sync::Arc::make_mut(&mut polite.spec)
        .container
        .stop_grace_period_ms = 30_000;
    env.runner
        .set_all(vec![
            assignment(&stubborn, vec![]),
            assignment(&polite, vec![]),
        ])
        .await;
    env.until(&stubborn.id, TaskState::Running).await;
    env.until(&polite.id, TaskState::Running).await;

    let asked = Instant::now();
    let mut down = vec![stubborn.clone(), polite.clone()];
    for t in &mut down {
        t.desired_state = TaskState::Shutdown;
    }
    env.runner
        .update(down.iter().map(|t| assignment(t, vec![])).collect(), vec![])
        .await;

    let seen = env.until(&polite.id, TaskState::Shutdown).await;
    let polite_took = asked.elapsed();
    assert_eq!(seen.last().expect("shutdown").exit_code, Some(0));
    assert!(
        polite_took < Duration::from_secs(20),
        "a container that exits on SIGTERM is not made to wait: {polite_took:?}"
    );

    let seen = env.until(&stubborn.id, TaskState::Shutdown).await;
    let took = asked.elapsed();
    let s = seen.last().expect("shutdown");
    assert_eq!(s.exit_code, Some(137), "killed after the grace period");
    assert!(
        took >= Duration::from_millis(2900),
        "stopped after {took:?}"
    );
    assert!(took < Duration::from_secs(30), "stopped after {took:?}");
    // The stopped container stays until the task is removed.
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &s.container_id]),
        "false"
    );
    env.runner
        .update(vec![], vec![stubborn.id.clone(), polite.id.clone()])
        .await;
    let deadline = Instant::now() + LONG;
    while !env.guard.containers().is_empty() || !env.runner.known().is_empty() {
        assert!(Instant::now() < deadline, "containers not removed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_is_rejected() {
    let mut env = Env::new("pull").await;
    let image = format!("orc-test/does-not-exist-{:08x}:1", rand::random::<u32>());
    let t = env.task("nothing", 1, &image, &[]);
    env.runner.set_all(vec![assignment(&t, vec![])]).await;
    let seen = env.until(&t.id, TaskState::Rejected).await;
    let r = seen.last().expect("rejected");
    assert!(r.err.contains(&image), "{r:#?}");
    assert!(r.message.contains(&image), "{r:#?}");
    assert!(env.guard.containers().is_empty());
}

#[tokio::test]
async fn logs_come_back_line_by_line() {
    let mut env = Env::new("logs").await;
    let t = env.task(
        "talker",
        1,
        BUSYBOX,
        &[
            "sh",
            "-c",
            "echo one; echo two; echo three; echo oops >&2; exec sleep 1000",
        ],
    );
    env.runner.set_all(vec![assignment(&t, vec![])]).await;
    env.until(&t.id, TaskState::Running).await;
    let deadline = Instant::now() + LONG;
    loop {
        let stream = env
            .runner
            .logs(
                &t.id,
                LogOptions {
                    follow: false,
                    tail: None,
                    timestamps: true,
                },
            )
            .await
            .expect("logs");
        let lines: Vec<_> = futures::StreamExt::collect::<Vec<_>>(stream)
            .await
            .into_iter()
            .map(|l| l.expect("line"))
            .collect();
        if lines.len() >= 4 {
            // Docker keeps each stream's order, not the order between the two.
            let of = |src| -> Vec<&str> {
                lines
                    .iter()
                    .filter(|l| l.source == src)
                    .map(|l| l.text.as_str())
                    .collect()
            };
            assert_eq!(of(LogSource::Stdout), ["one", "two", "three"]);
            assert_eq!(of(LogSource::Stderr), ["oops"]);
            assert!(lines.iter().all(|l| l.timestamp.contains('T')), "{lines:?}");
            break;
        }
        assert!(Instant::now() < deadline, "logs: {lines:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tail = env
        .runner
        .logs(
            &t.id,
            LogOptions {
                follow: false,
                tail: Some(2),
                timestamps: false,
            },
        )
        .await
        .expect("logs");
    let lines: Vec<_> = futures::StreamExt::collect::<Vec<_>>(tail).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        let l = l.as_ref().expect("line");
        assert!(["two", "three", "oops"].contains(&l.text.as_str()), "{l:?}");
        assert_eq!(l.timestamp, "");
    }

    // Following: new lines arrive, and the stream ends when the container stops.
    let mut follow = env
        .runner
        .logs(
            &t.id,
            LogOptions {
                follow: true,
                tail: Some(0),
                timestamps: false,
            },
        )
        .await
        .expect("logs");
    let mut down = t.clone();
    down.desired_state = TaskState::Shutdown;
    env.runner
        .update(vec![assignment(&down, vec![])], vec![])
        .await;
    let end = tokio::time::timeout(LONG, futures::StreamExt::next(&mut follow)).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
}

/// Image shipping on the real engine: saved by id, a tar carries no tag; loaded, the
/// tags a tar does carry are not applied (a sender cannot retag this engine's images),
/// while the image itself is loaded and can be tagged by its id.
#[tokio::test]
async fn a_loaded_tar_applies_no_tag_and_the_image_is_tagged_by_its_id() {
    ensure_images();
    let exec = DockerExecutor::connect(None).await.expect("docker");
    let victim = format!("orc-test-digest/victim:{}", std::process::id());
    let busybox = exec.image_info(BUSYBOX).await.unwrap().expect("busybox").id;
    let web = exec.image_info(WEB).await.unwrap().expect("web").id;
    // A tar whose manifest tags busybox's content as `victim`.
    docker(&["tag", BUSYBOX, &victim]);
    let tar = exec.save_image(&victim).await.expect("save");
    let mut bytes = vec![];
    let mut tar = tar;
    while let Some(c) = futures::StreamExt::next(&mut tar).await {
        bytes.extend_from_slice(&c.expect("chunk"));
    }
    let stream = |b: Vec<u8>| {
        futures::StreamExt::boxed(futures::stream::iter(vec![Ok(
            orc::agent::executor::Bytes::from(b),
        )]))
    };
    // A tar with an entry `docker save` never writes is refused, saying why.
    let mut bad = bytes.clone();
    bad[..3].copy_from_slice(b"../");
    let e = exec.load_image(stream(bad)).await.expect_err("refused");
    assert!(
        e.to_string().contains("is not a plain `docker save` tar"),
        "{e}"
    );
    // `victim` now names other content; loading the tar must not move it back.
    docker(&["tag", WEB, &victim]);
    let replay = stream(bytes);
    exec.load_image(replay).await.expect("load");
    let now = exec.image_info(&victim).await.unwrap().expect("victim").id;
    docker(&["rmi", &victim]);
    assert_eq!(now, web, "the tar's tag was applied");
    // Control: the loaded image is there by id, and tagging it by id works.
    assert!(exec.image_info(&busybox).await.unwrap().is_some());
    exec.tag_image(&busybox, &victim).await.expect("tag by id");
    let tagged = exec.image_info(&victim).await.unwrap().expect("victim").id;
    docker(&["rmi", &victim]);
    assert_eq!(tagged, busybox);
    // Saved by id, a tar names no tag (the sending side of shipping).
    let tar = exec.save_image(&busybox).await.expect("save by id");
    let chunks: Vec<_> = futures::StreamExt::collect(tar).await;
    let all: Vec<u8> = chunks
        .into_iter()
        .flat_map(|c| c.unwrap().to_vec())
        .collect();
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("\"RepoTags\":null"), "saved by id with a tag");
}

/// Docker's container options and a generic resource reach the container: each is in
/// `docker inspect` as Docker names it, `dns_search` is in the resolver file orc
/// mounts (after the cluster's own domain), and the generic resource is in the
/// environment as Swarm sets it.
#[tokio::test]
async fn container_options_and_generic_resources_reach_the_container() {
    use orc::store::service::Ulimit;
    let mut env = Env::new("opts").await;
    let mut t = env.task("opts", 1, BUSYBOX, &["sleep", "300"]);
    {
        let o = &mut std::sync::Arc::make_mut(&mut t.spec).container.options;
        o.hostname = "opts-host".into();
        o.cap_add = vec!["NET_ADMIN".into()];
        o.cap_drop = vec!["cap_mknod".into()];
        o.sysctls.insert("net.core.somaxconn".into(), "1024".into());
        o.ulimits.insert(
            "nofile".into(),
            Ulimit {
                soft: 1024,
                hard: 2048,
            },
        );
        o.init = true;
        o.stop_signal = "SIGQUIT".into();
        o.extra_hosts = vec!["db.example:10.1.2.3".into()];
        o.tty = true;
        o.stdin_open = true;
        o.read_only = true;
        o.dns = vec!["192.0.2.53".into()];
        o.dns_search = vec!["corp.example".into()];
        o.group_add = vec!["4242".into()];
    }
    std::sync::Arc::make_mut(&mut t.spec)
        .resources
        .generic_resources
        .insert("gpu".into(), 1);
    let a = Assignment {
        task: t.clone(),
        net: TaskNetwork {
            dns: vec!["198.51.100.1".into()],
            dns_search: vec!["s.orc.internal".into()],
            ..Default::default()
        },
        image_pin: None,
        files: vec![],
        volume_source: None,
    };
    env.runner.set_all(vec![a]).await;
    let seen = env.until(&t.id, TaskState::Running).await;
    let id = seen.last().expect("running").container_id.clone();
    let inspect = |f: &str| docker(&["inspect", "-f", f, &id]);
    assert_eq!(inspect("{{.Config.Hostname}}"), "opts-host");
    assert_eq!(
        inspect("{{json .HostConfig.CapAdd}}"),
        r#"["CAP_NET_ADMIN"]"#
    );
    assert_eq!(inspect("{{json .HostConfig.CapDrop}}"), r#"["CAP_MKNOD"]"#);
    assert_eq!(
        inspect("{{json .HostConfig.Sysctls}}"),
        r#"{"net.core.somaxconn":"1024"}"#
    );
    assert_eq!(
        inspect("{{json .HostConfig.Ulimits}}"),
        r#"[{"Name":"nofile","Hard":2048,"Soft":1024}]"#
    );
    assert_eq!(inspect("{{json .HostConfig.Init}}"), "true");
    assert_eq!(inspect("{{.Config.StopSignal}}"), "SIGQUIT");
    assert_eq!(
        inspect("{{json .HostConfig.ExtraHosts}}"),
        r#"["db.example:10.1.2.3"]"#
    );
    assert_eq!(
        inspect("{{.Config.Tty}} {{.Config.OpenStdin}}"),
        "true true"
    );
    assert_eq!(inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(inspect("{{json .HostConfig.GroupAdd}}"), r#"["4242"]"#);
    let env_list = inspect("{{json .Config.Env}}");
    assert!(env_list.contains("\"DOCKER_RESOURCE_GPU=1\""), "{env_list}");

    // Inside: the kernel took the sysctl, /etc/hosts has the extra host, the root is
    // read-only, and the resolver file lists the cluster DNS with the service's search
    // domain after the cluster's (its `dns` servers are where the cluster DNS forwards,
    // not in the file).
    let exec = |cmd: &[&str]| {
        let mut args = vec!["exec", id.as_str()];
        args.extend_from_slice(cmd);
        Command::new("docker")
            .args(&args)
            .output()
            .expect("docker exec")
    };
    let out = exec(&["cat", "/proc/sys/net/core/somaxconn"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1024");
    let hosts = String::from_utf8_lossy(&exec(&["cat", "/etc/hosts"]).stdout).to_string();
    assert!(hosts.contains("10.1.2.3\tdb.example"), "{hosts}");
    assert!(!exec(&["touch", "/x"]).status.success(), "root is writable");
    let resolv = String::from_utf8_lossy(&exec(&["cat", "/etc/resolv.conf"]).stdout).to_string();
    assert!(resolv.contains("nameserver 198.51.100.1\n"), "{resolv}");
    assert!(
        resolv.contains("search s.orc.internal corp.example\n"),
        "{resolv}"
    );
    assert!(!resolv.contains("192.0.2.53"), "{resolv}");

    // The node's copy of the resolver file goes with the container.
    let file = orc::agent::docker_exec::resolv_path(&t.id);
    assert!(std::path::Path::new(&file).exists(), "{file}");
    env.runner.set_all(vec![]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&file).exists() {
        assert!(Instant::now() < deadline, "{file} is still there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Serves a directory of this machine as another node's volume would be served.
struct DirFetcher {
    dir: std::path::PathBuf,
}

#[tonic::async_trait]
impl orc::agent::volumes::VolumeFetcher for DirFetcher {
    async fn fetch(
        &self,
        _addr: &str,
        req: orc::proto::VolumeRequest,
    ) -> orc::Result<orc::agent::volumes::VolumeStream> {
        let expect = (req.offset > 0).then_some(req.fingerprint);
        orc::agent::volumes::serve(self.dir.clone(), req.offset, expect).await
    }
}

/// A task whose following volume is on another node: the engine's volume is made
/// (labelled for the service), filled with the other node's copy before the container
/// starts, and the status says how far the copy is. A stale copy is removed only once
/// no running container uses it.
#[tokio::test]
async fn a_following_volume_is_copied_in_before_the_container_starts() {
    let mut env = Env::new("follow").await;
    let remote = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(remote.path().join("rows")).unwrap();
    for i in 0..100 {
        std::fs::write(
            remote.path().join(format!("rows/{i:03}")),
            format!("row {i}\n"),
        )
        .unwrap();
    }
    std::fs::write(remote.path().join("blob"), vec![7u8; 3_000_000]).unwrap();
    env.runner.set_volume_fetcher(Arc::new(DirFetcher {
        dir: remote.path().to_path_buf(),
    }));
    let volume = format!("orc-test-follow-{:08x}", rand::random::<u32>());
    struct RmVolume(String);
    impl Drop for RmVolume {
        fn drop(&mut self) {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", &self.0])
                .output();
        }
    }
    let _rm = RmVolume(volume.clone());
    // Stale content of an earlier stay on this node goes.
    docker(&["volume", "create", &volume]);
    let mut t = env.task("db", 1, BUSYBOX, &["sleep", "1000"]);
    std::sync::Arc::make_mut(&mut t.spec).container.mounts =
        vec![orc::store::service::Mount::following(
            volume.clone(),
            "/data",
        )];
    let mut a = assignment(&t, vec![]);
    a.volume_source = Some(orc::agent::volumes::VolumeSource {
        node: NodeId(7),
        addr: "192.0.2.7:4242".into(),
        hostname: "old-host".into(),
        volumes: vec![volume.clone()],
    });
    // The pre-existing volume holds a stale file.
    let mountpoint = docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", &volume]);
    std::fs::write(std::path::Path::new(mountpoint.trim()).join("stale"), b"x").unwrap();
    env.runner.set_all(vec![a]).await;
    let seen = env.until(&t.id, TaskState::Running).await;
    let messages: Vec<&str> = seen.iter().map(|s| s.message.as_str()).collect();
    assert!(
        messages
            .iter()
            .any(|m| *m == format!("copying volume {volume} from old-host (3.0 MB of 3.0)")),
        "{messages:?}"
    );
    let cid = seen.last().unwrap().container_id.clone();
    let listing = docker(&[
        "exec",
        &cid,
        "sh",
        "-c",
        "ls /data/rows | wc -l; cat /data/rows/042; ls /data",
    ]);
    assert_eq!(
        listing, "100\nrow 42\nblob\nrows",
        "what the container sees"
    );
    // Docker made nothing else; the engine's volume is in use now.
    assert!(env.exec.volume_in_use(&volume).await.unwrap());
    assert!(
        !env.exec.remove_volume(&volume).await.unwrap(),
        "in use: kept"
    );
    // Stopped, the task's container goes with the stale copy.
    env.runner.set_all(vec![]).await;
    let deadline = Instant::now() + LONG;
    while env.exec.volume_in_use(&volume).await.unwrap() {
        assert!(Instant::now() < deadline, "the container never stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(env.exec.remove_volume(&volume).await.unwrap());
    assert!(env.exec.volume_dir(&volume, None).await.unwrap().is_none());
    // A volume made by orc to copy into is labelled with its service.
    let made = env
        .exec
        .volume_dir(&volume, Some(&t.service_id))
        .await
        .unwrap()
        .expect("made");
    assert!(made.exists());
    let label = docker(&[
        "volume",
        "inspect",
        "-f",
        "{{index .Labels \"orc.volume.service\"}}",
        &volume,
    ]);
    assert_eq!(label.trim(), t.service_id.to_string());
}
