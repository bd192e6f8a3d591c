//! Scale: a simulated cluster of many nodes and tasks on one machine.
//!
//! - **Managers**: 3 real `orc daemon` processes on 127.0.0.1 (so the leader's memory
//!   and CPU are its own process's, read from /proc).
//! - **Workers**: `ORC_SCALE_NODES` simulated nodes in this process. Each joins through
//!   the real `Ca.Join` with its own key and CSR, holds its own node certificate, and
//!   speaks the real dispatcher protocol over mTLS from its own loopback address
//!   (127.1.x.y, ten nodes an address, as the join limit allows): heartbeats every
//!   period (the agent's [`orc::agent::beats::Beater`]: calls of their own, or on one
//!   `Beats` stream with `ORC_SCALE_BEATS=stream`), one `Session` stream, and
//!   `UpdateTaskStatus` reports. Only the containers
//!   are missing: a task is reported running as soon as it is assigned, and shut down
//!   as soon as it is told to stop.
//! - **Load**: `ORC_SCALE_SERVICES` services of `ORC_SCALE_REPLICAS` replicas each,
//!   created through the leader's control socket, 64 at a time.
//!
//! It prints: joins/s; placements/s to all tasks assigned (seen by the nodes) and to
//! all running (the leader's `orc_tasks{state="running"}`); the leader's RSS idle with
//! 5 nodes and at full size; its CPU while the sessions heartbeat; one lost node's
//! tasks replaced; a rolling update of one service, and where its time went (the
//! nodes' steps, the leader's mean proposal and pass times); the leader killed: when a
//! new one is elected, when every session is on it and every task running, and, 5 s
//! later, whether any node was marked down or another election held (the run fails
//! when a step does not finish). The published peers' figures are printed beside
//! orc's. Each simulated node follows the agent: one channel per manager, the next
//! manager when a heartbeat fails, a session reopened with what it holds
//! ([`orc::dispatcher::session::Held`]) and waits that grow when it keeps failing.
//!
//! Run: `cargo bench --bench scale` (1,000 nodes, 1,000 × 100 tasks). Smaller:
//! `ORC_SCALE_NODES=100 ORC_SCALE_SERVICES=100 cargo bench --bench scale`. The managers'
//! daemons take `ORC_SCALE_DAEMON_ARGS` too (space-separated, e.g. `--raft-heartbeat
//! 250ms --raft-election-timeout 1s`), to measure a tuning, and the first one (the first
//! leader) is run by `ORC_SCALE_LAUNCHER` when it is set (`heaptrack -o FILE`, to see
//! where its memory goes; its RSS and CPU figures are then the launcher's). `cargo test`
//! runs it too (the CI), small: 30 nodes, 10 × 50 tasks, a debug build; every step
//! fails the run when it does not finish.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use orc::proto::{
    self, ca_client::CaClient, control_client::ControlClient, dispatcher_client::DispatcherClient,
};
use tokio_util::sync::CancellationToken;

const PERIOD_MS: u64 = 500;

/// Whether the simulated nodes beat on one stream (`ORC_SCALE_BEATS=stream`) rather
/// than with calls of their own, as the agent does.
fn beats_on_stream() -> bool {
    std::env::var("ORC_SCALE_BEATS").is_ok_and(|v| v == "stream")
}

/// The smallest range of `10.224.0.0/12` (apart from the tests' `10.240.0.0/12`) that
/// holds `n` virtual IPs besides its network, DNS and broadcast addresses.
fn vip_range_for(n: usize) -> String {
    let bits = (32 - (n + 3).next_power_of_two().trailing_zeros()).clamp(12, 28);
    format!("10.224.0.0/{bits}")
}

/// Unanswered beats in a row before a simulated node tries the next manager
/// (`ORC_SCALE_PATIENCE`): 1 by default, as the agent, which keeps its connection to
/// a manager too slow to answer and sends its next beat to another.
fn patience() -> u32 {
    std::env::var("ORC_SCALE_PATIENCE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}
/// The labels of `orc_nodes` that count down workers.
const DOWN_WORKERS: &str = "{status=\"down\",availability=\"active\",role=\"worker\"}";

/// What every simulated node adds to: tasks it was given and reports it made.
#[derive(Default)]
struct Totals {
    /// Tasks assigned with desired state running, now, over all live nodes.
    assigned: AtomicUsize,
    /// Reports of running acknowledged by the leader.
    running_reports: AtomicU64,
    /// Session messages received.
    messages: AtomicU64,
    /// Bytes of endpoint tables and changes received.
    endpoint_bytes: AtomicU64,
    /// Heartbeats answered.
    heartbeats: AtomicU64,
    /// Heartbeats that failed or were not answered in time, and the first such error.
    heartbeats_failed: AtomicU64,
    /// Status reports refused or failed (each is sent again).
    reports_failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
    /// While set (the rolling update), what the nodes saw and when ([`Step`]).
    tracing: std::sync::atomic::AtomicBool,
    steps: Mutex<Vec<(Instant, Step)>>,
}

/// What a node saw of a rolling update, to tell where a batch's time goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// A task told to stop.
    StopSeen,
    /// Its shutdown report taken by the leader.
    StopReported,
    /// A new task assigned.
    NewSeen,
    /// Its running report taken by the leader.
    RunReported,
}

impl Totals {
    fn step(&self, s: Step) {
        if self.tracing.load(Ordering::Relaxed) {
            self.steps.lock().unwrap().push((Instant::now(), s));
        }
    }
}

/// Where a rolling update's time went: the steps seen, grouped into runs of one kind
/// in time order; for each kind of step, the time from the end of the run before it to
/// the end of its own run, summed over the update (the last one of a batch is the one
/// that holds the batch up).
fn update_breakdown(steps: &mut [(Instant, Step)]) -> String {
    steps.sort();
    let mut runs: Vec<(Step, Instant)> = vec![];
    for &(at, step) in steps.iter() {
        match runs.last_mut() {
            Some((s, end)) if *s == step => *end = at,
            _ => runs.push((step, at)),
        }
    }
    let mut sum: BTreeMap<Step, (Duration, usize)> = BTreeMap::new();
    for w in runs.windows(2) {
        let e = sum.entry(w[1].0).or_default();
        e.0 += w[1].1 - w[0].1;
        e.1 += 1;
    }
    sum.iter()
        .map(|(s, (d, n))| format!("to {s:?} {:.0} ms ({n} runs)", d.as_secs_f64() * 1000.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One simulated node.
struct Sim {
    id: String,
    /// The ids of the tasks it runs now (desired running).
    tasks: Arc<Mutex<BTreeSet<String>>>,
    stop: CancellationToken,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The loopback address of simulated node `i`: ten nodes an address.
fn sim_ip(i: usize) -> IpAddr {
    let a = i / 10;
    IpAddr::V4(Ipv4Addr::new(127, 1, (a / 250) as u8, (a % 250 + 1) as u8))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Joins simulated node `i` through `manager`; returns its id and mTLS credentials.
async fn join(
    i: usize,
    manager: &str,
    token: &orc::ca::Token,
) -> (String, Arc<rustls::ClientConfig>) {
    let ip = sim_ip(i);
    let (key_pem, csr_pem) = orc::ca::new_key_and_csr().expect("key and csr");
    let cfg = orc::ca::join_client_config(&token.ca_digest).expect("join config");
    let ch = orc::net::tls_channel_from(manager, cfg, Duration::from_secs(30), Some(ip));
    let mut last = String::new();
    for _ in 0..20 {
        let r = CaClient::new(ch.clone())
            .join(proto::CaJoinRequest {
                secret: token.secret.clone(),
                csr_pem: csr_pem.clone(),
                advertise_addr: format!("{ip}:{}", 20000 + i),
                hostname: format!("sim-{i:04}"),
                forwarded_for: String::new(),
            })
            .await;
        match r {
            Ok(r) => {
                let r = r.into_inner();
                let creds = orc::ca::NodeCredentials {
                    ca_cert_pem: r.ca_cert_pem,
                    cert_pem: r.cert_pem,
                    key_pem: key_pem.clone(),
                };
                return (r.node_id, creds.client_config().expect("client config"));
            }
            Err(e) => {
                last = e.to_string();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    panic!("sim-{i} could not join: {last}");
}

/// Runs simulated node `i` until `stop`: heartbeats and one session to the leader.
fn run_sim(
    i: usize,
    id: String,
    tls: Arc<rustls::ClientConfig>,
    managers: Arc<Vec<String>>,
    leader: String,
    totals: Arc<Totals>,
) -> Sim {
    let stop = CancellationToken::new();
    let tasks: Arc<Mutex<BTreeSet<String>>> = Default::default();
    let ip = sim_ip(i);
    // The leader as the heartbeats last named it, and a channel to it; as the agent,
    // the node follows the leader when it changes, and tries the next manager when a
    // heartbeat fails.
    let leader = Arc::new(Mutex::new(leader));
    let channel = {
        let leader = leader.clone();
        // One channel per manager, as the agent's `Peers`: moving between managers
        // does not connect again.
        let cached: Arc<Mutex<BTreeMap<String, tonic::transport::Channel>>> = Default::default();
        move || {
            let addr = leader.lock().unwrap().clone();
            cached
                .lock()
                .unwrap()
                .entry(addr.clone())
                .or_insert_with(|| {
                    orc::net::tls_channel_from(
                        &addr,
                        tls.clone(),
                        Duration::from_secs(30),
                        Some(ip),
                    )
                })
                .clone()
        }
    };
    // Heartbeats.
    {
        let (channel, id, stop, totals) =
            (channel.clone(), id.clone(), stop.clone(), totals.clone());
        let leader = leader.clone();
        tokio::spawn(async move {
            // Spread the nodes' beats over the period, as real nodes' are.
            tokio::time::sleep(Duration::from_millis((i as u64 * 7) % PERIOD_MS)).await;
            let mut unanswered = 0;
            // As the agent: calls of their own, or (`ORC_SCALE_BEATS=stream`) the beats
            // on one stream to the manager beaten to.
            let mut beater = if beats_on_stream() {
                orc::agent::beats::Beater::streaming()
            } else {
                orc::agent::beats::Beater::calls()
            };
            loop {
                let to = leader.lock().unwrap().clone();
                let req = proto::HeartbeatRequest {
                    node_id: id.clone(),
                    description: Some(proto::NodeDescription {
                        hostname: format!("sim-{i:04}"),
                        cpus: 4,
                        memory_bytes: 8 << 30,
                        os: "linux".into(),
                        arch: "x86_64".into(),
                        engine_version: "sim".into(),
                        ..Default::default()
                    }),
                    addr: format!("{ip}:{}", 20000 + i),
                    facts: None,
                    forwarded_for: String::new(),
                    cert_issuer_digest: String::new(),
                };
                // As the agent does: a beat not answered in two periods is given up and
                // sent again (without this, one beat stuck behind a busy leader ended
                // the node's beats for good, and the bench waited for ever).
                let beat = beater.beat(channel(), &to, req, Duration::from_millis(2 * PERIOD_MS));
                let period = match beat.await.map_err(tonic::Status::from).and_then(|r| {
                    r.ok_or_else(|| tonic::Status::deadline_exceeded("heartbeat not answered"))
                }) {
                    Ok(r) => {
                        unanswered = 0;
                        totals.heartbeats.fetch_add(1, Ordering::Relaxed);
                        if !r.leader_addr.is_empty() {
                            *leader.lock().unwrap() = r.leader_addr;
                        }
                        r.period_ms.max(100)
                    }
                    Err(e) => {
                        // The next manager at once when this one cannot be reached, after
                        // `patience()` unanswered beats in a row when it is only slow (its
                        // channel kept either way).
                        unanswered = if e.code() == tonic::Code::DeadlineExceeded {
                            unanswered + 1
                        } else {
                            patience()
                        };
                        if unanswered >= patience() {
                            unanswered = 0;
                            let mut l = leader.lock().unwrap();
                            let at = managers.iter().position(|m| *m == *l).unwrap_or(0);
                            *l = managers[(at + 1) % managers.len()].clone();
                        }
                        if totals.heartbeats_failed.fetch_add(1, Ordering::Relaxed) < 10 {
                            eprintln!("sim-{i:04}: heartbeat at {} ms failed: {e}", now_ms());
                        }
                        totals
                            .first_failure
                            .lock()
                            .unwrap()
                            .get_or_insert_with(|| format!("sim-{i:04}: {e}"));
                        // As the agent: the next try 200 ms after a failed one.
                        200
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(period)) => {}
                }
            }
        });
    }
    // Statuses out: a task of its own, as the agent's `status_loop`. A session that
    // waited for its own report before reading the stream again could deadlock its
    // connection: the stream's unread messages held HTTP/2's connection window, so the
    // report's answer never came.
    let (report_tx, mut report_rx) = tokio::sync::mpsc::unbounded_channel::<(String, i32)>();
    {
        let (id, stop, totals, channel) =
            (id.clone(), stop.clone(), totals.clone(), channel.clone());
        tokio::spawn(async move {
            // Each task's newest state and when it was seen: a batch sent again is the
            // same batch, as the agent's.
            let mut pending: BTreeMap<String, (i32, u64)> = BTreeMap::new();
            loop {
                if pending.is_empty() {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        m = report_rx.recv() => match m {
                            Some((task, state)) => { pending.insert(task, (state, now_ms())); }
                            None => return,
                        },
                    }
                }
                while let Ok((task, state)) = report_rx.try_recv() {
                    pending.insert(task, (state, now_ms()));
                }
                let batch = proto::TaskStatusBatch {
                    node_id: id.clone(),
                    updates: pending
                        .iter()
                        .map(|(task, (state, at))| proto::TaskStatusUpdate {
                            task_id: task.clone(),
                            status: Some(proto::TaskStatus {
                                state: *state,
                                timestamp_ms: *at,
                                message: "simulated".into(),
                                container_id: format!("sim{task}"),
                                ..Default::default()
                            }),
                        })
                        .collect(),
                };
                let mut client = DispatcherClient::new(channel());
                let call = client.update_task_status(batch);
                // Retried until the leader takes it, as the agent does.
                match tokio::time::timeout(Duration::from_secs(5), call).await {
                    Ok(Ok(_)) => {
                        let running = pending
                            .values()
                            .filter(|(s, _)| *s == proto::TaskState::Running as i32)
                            .count() as u64;
                        if running > 0 {
                            totals.step(Step::RunReported);
                        }
                        if (running as usize) < pending.len() {
                            totals.step(Step::StopReported);
                        }
                        totals.running_reports.fetch_add(running, Ordering::Relaxed);
                        pending.clear();
                    }
                    failed => {
                        if stop.is_cancelled() {
                            return;
                        }
                        let e = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "not answered in 5 s".to_string(),
                        };
                        if totals.reports_failed.fetch_add(1, Ordering::Relaxed) < 10 {
                            eprintln!("sim-{i:04}: status report failed: {e}");
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
    }
    // Assignments in.
    {
        let (id, stop, tasks) = (id.clone(), stop.clone(), tasks.clone());
        tokio::spawn(async move {
            // Task id → the state last reported.
            let mut reported: BTreeMap<String, i32> = BTreeMap::new();
            // Tries in a row that got no message, and the wait before the next, as the
            // agent's.
            let (mut failures, mut first) = (0u32, true);
            // The digests of the endpoint and member tables held, the keys' id, and the
            // applied index of the state the endpoint table is of.
            let mut held: (Vec<u8>, Vec<u8>, u32, u64) = Default::default();
            'session: loop {
                if !first {
                    tokio::time::sleep(match failures {
                        0 => orc::agent::session::RETRY_MIN,
                        f => orc::agent::session::retry_wait(f),
                    })
                    .await;
                }
                first = false;
                failures += 1;
                let mut client = DispatcherClient::new(channel())
                    .max_decoding_message_size(orc::agent::session::MAX_SESSION_MESSAGE);
                // What this node holds from its sessions before, as the agent says.
                let req = proto::SessionRequest {
                    node_id: id.clone(),
                    endpoints_digest: held.0.clone(),
                    members_digest: held.1.clone(),
                    keys_id: held.2,
                    endpoints_index: held.3,
                };
                let stream = tokio::select! {
                    _ = stop.cancelled() => break,
                    s = client.session(req) => s,
                };
                let Ok(stream) = stream else { continue };
                let mut stream = stream.into_inner();
                loop {
                    let msg = tokio::select! {
                        _ = stop.cancelled() => break 'session,
                        m = stream.message() => m,
                    };
                    let Ok(Some(msg)) = msg else {
                        continue 'session;
                    };
                    totals.messages.fetch_add(1, Ordering::Relaxed);
                    failures = 0;
                    if let Some(e) = &msg.endpoints {
                        totals
                            .endpoint_bytes
                            .fetch_add(e.len() as u64, Ordering::Relaxed);
                        held.0 = msg.endpoints_digest.clone();
                        held.3 = msg.endpoints_index;
                    }
                    if msg.members.is_some() {
                        held.1 = msg.members_digest.clone();
                    }
                    if let Some(k) = msg.data_keys.as_ref().and_then(|k| k.keys.first()) {
                        held.2 = k.id;
                    }
                    let mut t = tasks.lock().unwrap();
                    if msg.full {
                        totals.assigned.fetch_sub(t.len(), Ordering::Relaxed);
                        t.clear();
                    }
                    for gone in &msg.removed {
                        if t.remove(gone) {
                            totals.assigned.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    for a in &msg.assignments {
                        let Some(task) = &a.task else { continue };
                        let run = task.desired_state == proto::TaskState::Running as i32;
                        let state = if run {
                            proto::TaskState::Running
                        } else {
                            proto::TaskState::Shutdown
                        } as i32;
                        if run {
                            if t.insert(task.id.clone()) {
                                totals.assigned.fetch_add(1, Ordering::Relaxed);
                                totals.step(Step::NewSeen);
                            }
                        } else if t.remove(&task.id) {
                            totals.assigned.fetch_sub(1, Ordering::Relaxed);
                            totals.step(Step::StopSeen);
                        }
                        if reported.get(&task.id) != Some(&state) {
                            reported.insert(task.id.clone(), state);
                            let _ = report_tx.send((task.id.clone(), state));
                        }
                    }
                }
            }
        });
    }
    Sim { id, tasks, stop }
}

/// The leader's resident memory, MB.
fn rss_mb(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU seconds (user + system) the process used so far.
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is the 12th, stime
    // the 13th of those.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

/// The leader's CPU share of one core over `window`.
fn cpu_share(pid: u32, window: Duration) -> f64 {
    let c0 = cpu_secs(pid);
    let t0 = Instant::now();
    std::thread::sleep(window);
    (cpu_secs(pid) - c0) / t0.elapsed().as_secs_f64()
}

/// One sample of the leader's metrics: the value of `name` with exactly `labels`.
fn metric(port: u16, name: &str, labels: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let key = format!("{name}{labels} ");
    body.lines()
        .find(|l| l.starts_with(&key))
        .and_then(|l| l[key.len()..].trim().parse().ok())
}

fn spec(name: &str, replicas: usize, env: &str) -> proto::ServiceSpec {
    let mut s: serde_json::Value =
        serde_json::from_str(include_str!("../tests/spec_template.json")).unwrap();
    s["name"] = name.into();
    s["mode"]["replicas"] = (replicas as u64).into();
    s["task"]["container"]["env"] = serde_json::json!([env]);
    s["update"]["parallelism"] = 10.into();
    let spec: orc::store::ServiceSpec = serde_json::from_value(s).unwrap();
    spec.into()
}

fn wait_until(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `cargo bench` passes `--bench`; `cargo test` (CI) does not: then a small setting.
    let full = std::env::args().any(|a| a == "--bench");
    let nodes_n = env_usize("ORC_SCALE_NODES", if full { 1000 } else { 30 }).max(3);
    let services_n = env_usize("ORC_SCALE_SERVICES", if full { 1000 } else { 10 });
    let replicas = env_usize("ORC_SCALE_REPLICAS", if full { 100 } else { 50 });
    let total = services_n * replicas;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!(
        "scale: 3 manager daemons, {nodes_n} simulated nodes, {services_n} services x {replicas} replicas = {total} tasks, heartbeats every {PERIOD_MS} ms ({}){}",
        if beats_on_stream() {
            "on one stream"
        } else {
            "calls"
        },
        std::env::var("ORC_SCALE_DAEMON_ARGS")
            .map(|a| format!(", managers with {a}"))
            .unwrap_or_default()
    );

    // Managers, each serving metrics on its own port.
    let mut managers: Vec<Node> = (0..3).map(|_| Node::new()).collect();
    let metrics_ports: Vec<u16> = managers.iter().map(|_| free_port()).collect();
    for (n, port) in managers.iter_mut().zip(&metrics_ports) {
        n.daemon_args = vec!["--metrics-addr".into(), format!("127.0.0.1:{port}")];
        n.daemon_args.extend(
            std::env::var("ORC_SCALE_DAEMON_ARGS")
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from),
        );
    }
    // The first manager (the first leader) run by a program, to profile it:
    // `ORC_SCALE_LAUNCHER="heaptrack -o /tmp/leader"` (space-separated).
    if let Ok(launcher) = std::env::var("ORC_SCALE_LAUNCHER") {
        managers[0].launcher = launcher.split_whitespace().map(String::from).collect();
    }
    // A VIP range that holds every service and task (tests' clusters get a /24 each:
    // 253 addresses, and the tasks past them got none).
    let vip_range = vip_range_for(services_n + total);
    let mut managers = form_cluster(
        managers,
        3,
        &[
            "--heartbeat-period",
            &format!("{PERIOD_MS}ms"),
            "--vip-range",
            &vip_range,
        ],
    );
    // Managers run no tasks here, as in large clusters (and they have no image).
    for n in managers[0].nodes() {
        let id = n["id"].as_str().expect("node id");
        managers[0].ok(&["node", "update", "--availability", "drain", id]);
    }
    let li = leader_index(&managers, 0);
    let leader = &managers[li];
    let pid = leader.pid().expect("leader pid");
    let mport = metrics_ports[li];
    let token: orc::ca::Token = leader
        .ok(&["join-token", "worker", "-q"])
        .trim()
        .parse()
        .expect("token");
    let totals = Arc::new(Totals::default());
    let leader_addr = leader.addr();
    let manager_addrs: Arc<Vec<String>> = Arc::new(managers.iter().map(|m| m.addr()).collect());

    let start = |i, id, tls| {
        let _g = rt.enter();
        run_sim(
            i,
            id,
            tls,
            manager_addrs.clone(),
            leader_addr.clone(),
            totals.clone(),
        )
    };
    // Two nodes first: the leader idle with 5 nodes.
    let mut sims: Vec<Sim> = vec![];
    for i in 0..2 {
        let (id, tls) = rt.block_on(join(i, &leader_addr, &token));
        sims.push(start(i, id, tls));
    }
    let ready = |n: usize| {
        metric(
            mport,
            "orc_nodes",
            "{status=\"ready\",availability=\"active\",role=\"worker\"}",
        )
        .is_some_and(|v| v as usize >= n)
    };
    wait_until(Duration::from_secs(30), "2 simulated nodes ready", || {
        ready(2)
    });
    std::thread::sleep(Duration::from_secs(3));
    let rss_idle = rss_mb(pid);
    println!("leader RSS idle, 5 nodes: {rss_idle:.1} MB (aim: <= 50 MB)");

    // The rest join, 50 at a time.
    let t0 = Instant::now();
    let joined: Vec<(usize, String, Arc<rustls::ClientConfig>)> = rt.block_on(async {
        use futures::StreamExt;
        futures::stream::iter(2..nodes_n)
            .map(|i| {
                let (addr, token) = (leader_addr.clone(), token.clone());
                async move {
                    let (id, tls) = join(i, &addr, &token).await;
                    (i, id, tls)
                }
            })
            .buffer_unordered(50)
            .collect()
            .await
    });
    let join_secs = t0.elapsed().as_secs_f64();
    for (i, id, tls) in joined {
        sims.push(start(i, id, tls));
    }
    let until_ready = wait_until(
        Duration::from_secs(120),
        "every simulated node ready",
        || ready(nodes_n),
    );
    println!(
        "joins: {} nodes in {join_secs:.1} s ({:.0}/s), all ready {:.1} s later",
        nodes_n - 2,
        (nodes_n - 2) as f64 / join_secs,
        until_ready.as_secs_f64()
    );
    let rss_nodes = rss_mb(pid);
    let cpu_hb = cpu_share(pid, Duration::from_secs(10));
    println!(
        "leader with {nodes_n} nodes heartbeating, no tasks: RSS {rss_nodes:.1} MB, CPU {:.1}% of one core (aim: <= 25%)",
        cpu_hb * 100.0
    );

    // The services.
    let sock = leader.sock();
    let counter = |name: &str| metric(mport, name, "").unwrap_or(0.0);
    let marked_down = || counter("orc_dispatcher_missed_heartbeats_total");
    let deaf = || counter("orc_dispatcher_deaf_seconds_total");
    let (marked0, deaf0) = (marked_down(), deaf());
    // The highest term any manager reports: how many elections there were meanwhile.
    let max_term = || {
        metrics_ports
            .iter()
            .filter_map(|p| metric(*p, "orc_raft_term", ""))
            .fold(0.0, f64::max)
    };
    let term0 = max_term();
    let t0 = Instant::now();
    let running_metric =
        || metric(mport, "orc_tasks", "{state=\"running\"}").unwrap_or(0.0) as usize;
    // Where placing is, every few seconds (on stderr), while it goes on.
    let mut next_progress = Instant::now();
    let mut progress = |what: &str| {
        if Instant::now() >= next_progress {
            next_progress = Instant::now() + Duration::from_secs(5);
            eprintln!(
                "placing ({what}, {:.0} s): {} of {total} assigned, {} running, {:.0} elections, leader RSS {:.0} MB",
                t0.elapsed().as_secs_f64(),
                totals.assigned.load(Ordering::Relaxed),
                running_metric(),
                max_term() - term0,
                rss_mb(pid)
            );
        }
    };
    // A create refused because the leader changed is made again (and counted): the
    // elections are a figure of the run, not a reason to end it.
    let retried = AtomicUsize::new(0);
    rt.block_on(async {
        use futures::StreamExt;
        let ch = orc::net::local_channel(&sock).await.expect("socket");
        let results: Vec<_> = futures::stream::iter(0..services_n)
            .map(|s| {
                let (ch, retried) = (ch.clone(), &retried);
                async move {
                    let mut tries = 0;
                    loop {
                        let mut c = ControlClient::new(ch.clone());
                        let r = c
                            .create_service(proto::ServiceSpecRequest {
                                spec: Some(spec(&format!("s{s:04}"), replicas, "V=1")),
                                ..Default::default()
                            })
                            .await;
                        match r {
                            Err(e) if e.code() == tonic::Code::Unavailable && tries < 60 => {
                                tries += 1;
                                retried.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                            // The refused one was committed after all (the leader
                            // changed before it could answer).
                            Err(e) if tries > 0 && e.code() == tonic::Code::FailedPrecondition => {
                                return Ok(tonic::Response::new(Default::default()));
                            }
                            r => return r,
                        }
                    }
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        for r in results {
            r.expect("service create");
        }
    });
    let created = t0.elapsed();
    let assigned = wait_until(Duration::from_secs(1800), "every task assigned", || {
        progress("to assigned");
        totals.assigned.load(Ordering::Relaxed) >= total
    }) + created;
    let running = wait_until(Duration::from_secs(1800), "every task running", || {
        progress("to running");
        running_metric() >= total
    }) + assigned;
    let rate = |d: Duration| total as f64 / d.as_secs_f64();
    println!(
        "placements: {services_n} services created in {:.1} s; {total} tasks assigned in {:.1} s ({:.0}/s), all running in {:.1} s ({:.0}/s) (aim: >= 10000/s)",
        created.as_secs_f64(),
        assigned.as_secs_f64(),
        rate(assigned),
        running.as_secs_f64(),
        rate(running)
    );
    println!(
        "during placements: {:.0} nodes marked down (and up again), the leader's runtime late for {:.1} s (not held against the nodes), {:.0} elections, {} creates made again after one",
        marked_down() - marked0,
        deaf() - deaf0,
        max_term() - term0,
        retried.load(Ordering::Relaxed)
    );
    let without_vip = metric(mport, "orc_tasks_without_vip", "").unwrap_or(f64::NAN);
    println!("virtual IPs: range {vip_range}, {without_vip:.0} tasks without one");
    assert!(
        without_vip == 0.0,
        "{without_vip} tasks have no virtual IP in {vip_range}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let rss_full = rss_mb(pid);
    let cpu_full = cpu_share(pid, Duration::from_secs(10));
    println!(
        "leader with {nodes_n} nodes and {total} tasks: RSS {rss_full:.1} MB (aim: <= 500 MB), CPU {:.1}% of one core heartbeating",
        cpu_full * 100.0
    );

    // One node lost.
    let victim = sims
        .iter()
        .position(|s| !s.tasks.lock().unwrap().is_empty())
        .expect("a node with tasks");
    let down = || metric(mport, "orc_nodes", DOWN_WORKERS).unwrap_or(0.0);
    let down_before = down();
    let lost_tasks = sims[victim].tasks.lock().unwrap().len();
    let lost = sims.remove(victim);
    lost.stop.cancel();
    totals.assigned.fetch_sub(lost_tasks, Ordering::Relaxed);
    let t0 = Instant::now();
    let detected = wait_until(Duration::from_secs(60), "the lost node marked down", || {
        down() > down_before
    });
    let replaced = wait_until(
        Duration::from_secs(120),
        &format!("the lost node's {lost_tasks} tasks replaced"),
        || {
            let (a, r) = (totals.assigned.load(Ordering::Relaxed), running_metric());
            if a >= total && r >= total {
                return true;
            }
            if t0.elapsed().as_millis() % 10_000 < 20 {
                eprintln!("waiting: {a} of {total} assigned, {r} running");
            }
            false
        },
    ) + detected;
    println!(
        "node lost ({} with {lost_tasks} tasks): down after {:.2} s, all replaced and running {:.2} s after detection ({:.2} s in all)",
        lost.id,
        detected.as_secs_f64(),
        (replaced - detected).as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );

    // A rolling update of one service, parallelism 10.
    let timings = || {
        ["raft_proposal", "orchestrator_pass", "scheduler_pass"].map(|m| {
            let at = |part: &str| {
                metric(mport, &format!("orc_{m}_duration_seconds_{part}"), "").unwrap_or(0.0)
            };
            (at("sum"), at("count"))
        })
    };
    let timings_before = timings();
    totals.tracing.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let batches = replicas.div_ceil(10);
    rt.block_on(async {
        let ch = orc::net::local_channel(&sock).await.expect("socket");
        let mut c = ControlClient::new(ch);
        c.update_service(proto::ServiceSpecRequest {
            service: "s0000".into(),
            spec: Some(spec("s0000", replicas, "V=2")),
        })
        .await
        .expect("service update");
        loop {
            let s = c
                .inspect_service(proto::ServiceRef {
                    service: "s0000".into(),
                    ..Default::default()
                })
                .await
                .expect("inspect")
                .into_inner();
            let done = s
                .update_status
                .as_ref()
                .is_some_and(|u| u.state == proto::UpdateState::Completed as i32);
            if done {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "update did not complete"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let update = t0.elapsed();
    totals.tracing.store(false, Ordering::Relaxed);
    println!(
        "rolling update: {replicas} replicas, parallelism 10, while {} nodes heartbeat: {:.2} s ({:.0} ms a batch of 10)",
        sims.len(),
        update.as_secs_f64(),
        update.as_secs_f64() * 1000.0 / batches as f64
    );
    println!(
        "  where it went, as the nodes saw it: {}",
        update_breakdown(&mut totals.steps.lock().unwrap())
    );
    let means: Vec<String> = timings()
        .iter()
        .zip(timings_before)
        .zip(["proposal", "orchestrator pass", "scheduler pass"])
        .map(|(((s1, c1), (s0, c0)), what)| {
            let n = c1 - c0;
            format!("{what} {:.1} ms ({n:.0})", (s1 - s0) * 1000.0 / n.max(1.0))
        })
        .collect();
    println!("  the leader meanwhile, mean (count): {}", means.join(", "));

    if leader_index(&managers, 0) != li {
        println!("NOTE: leadership moved during the run: the leader figures above are of the first leader");
    }

    // The leader lost (killed): a new one must take over every session and hold it,
    // with no node marked down and every task still running. It is killed right after
    // a change of the endpoint table (a service scaled down by a tenth), before most
    // nodes were sent it: they hold the table before, which the new leader makes
    // current by what changed since, not by the table whole.
    let others: Vec<usize> = (0..managers.len()).filter(|i| *i != li).collect();
    let down_before = down();
    let sessions_n = sims.len();
    let bytes_before = totals.endpoint_bytes.load(Ordering::Relaxed);
    let scaled = if services_n > 1 { replicas / 10 } else { 0 };
    let total_after = total - scaled;
    if scaled > 0 {
        rt.block_on(async {
            let ch = orc::net::local_channel(&sock).await.expect("socket");
            ControlClient::new(ch)
                .scale_service(proto::ScaleRequest {
                    service: "s0001".into(),
                    replicas: (replicas - scaled) as u64,
                })
                .await
                .expect("service scale");
        });
    }
    let t0 = Instant::now();
    managers[li].kill();
    let is_leader = |i: usize| metric(metrics_ports[i], "orc_raft_is_leader", "") == Some(1.0);
    wait_until(Duration::from_secs(60), "a new leader", || {
        others.iter().any(|i| is_leader(*i))
    });
    let elected = t0.elapsed();
    let nl = *others.iter().find(|i| is_leader(**i)).expect("new leader");
    let nport = metrics_ports[nl];
    let term = || metric(nport, "orc_raft_term", "").unwrap_or(0.0);
    let term_elected = term();
    wait_until(
        Duration::from_secs(120),
        &format!("{sessions_n} sessions on the new leader"),
        || metric(nport, "orc_dispatcher_sessions", "").unwrap_or(0.0) as usize >= sessions_n,
    );
    let back = t0.elapsed();
    wait_until(
        Duration::from_secs(120),
        "every task running on the new leader",
        || metric(nport, "orc_tasks", "{state=\"running\"}").unwrap_or(0.0) as usize >= total_after,
    );
    let settled = t0.elapsed();
    // Held for a while: no node marked down meanwhile, no further election.
    std::thread::sleep(Duration::from_secs(5));
    let down_after = metric(nport, "orc_nodes", DOWN_WORKERS).unwrap_or(f64::NAN);
    let elections = term() - term_elected;
    println!(
        "leader lost (killed right after s0001 was scaled down by {scaled}) with {sessions_n} nodes and {total_after} tasks, after the kill: new leader {:.2} s, all sessions on it {:.2} s, all tasks running {:.2} s; 5 s later {} workers down ({} before), {} more elections; endpoint bytes sent meanwhile {:.1} MB",
        elected.as_secs_f64(),
        back.as_secs_f64(),
        settled.as_secs_f64(),
        down_after,
        down_before,
        elections,
        (totals.endpoint_bytes.load(Ordering::Relaxed) - bytes_before) as f64 / 1e6
    );
    assert!(
        down_after <= down_before,
        "the new leader marked {} nodes down",
        down_after - down_before
    );
    println!();
    println!("measure | orc | published peer | orc / peer");
    println!(
        "placements/s to running | {:.0} | Nomad C1M ~3,750/s (1M containers, 5,000 clients); C2M ~1,500/s | {:.1}x",
        rate(running),
        rate(running) / 3750.0
    );
    println!(
        "placements/s to running | {:.0} | kube-scheduler 100-300 pods/s at 5,000 nodes | {:.0}x",
        rate(running),
        rate(running) / 300.0
    );
    println!(
        "nodes x tasks | {nodes_n} x {total} | Swarm's scale test: 1,000 nodes x 30,000 containers | {:.2}x tasks",
        total as f64 / 30000.0
    );
    println!(
        "leader RSS | {rss_idle:.0} MB idle (5 nodes), {rss_full:.0} MB at size | aim 50 / 500 MB |"
    );
    println!(
        "leader CPU, heartbeats | {:.1}% ({nodes_n} nodes, no tasks), {:.1}% (with tasks) | aim 25% |",
        cpu_hb * 100.0,
        cpu_full * 100.0
    );
    println!(
        "leader lost | new leader {:.1} s, every session on it {:.1} s, {} nodes marked down | Swarm: new leader 11-16 s (5 hosts, README) | {:.2}x",
        elected.as_secs_f64(),
        back.as_secs_f64(),
        down_after - down_before,
        elected.as_secs_f64() / 11.0
    );
    println!(
        "session messages {} heartbeats {} (failed {}{}) running reports {} (status batches failed or unanswered in 5 s: {})",
        totals.messages.load(Ordering::Relaxed),
        totals.heartbeats.load(Ordering::Relaxed),
        totals.heartbeats_failed.load(Ordering::Relaxed),
        totals
            .first_failure
            .lock()
            .unwrap()
            .as_deref()
            .map(|e| format!(", the first: {e}"))
            .unwrap_or_default(),
        totals.running_reports.load(Ordering::Relaxed),
        totals.reports_failed.load(Ordering::Relaxed)
    );
    for s in &sims {
        s.stop.cancel();
    }
    drop(rt);
}
