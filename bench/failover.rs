//! Failover demo and benchmark (issue 7): orc and Docker Swarm mode on the same
//! namespace hosts, the same service, the same faults; a timeline, then the figures
//! side by side.
//!
//! Each system gets 5 fresh hosts (tests/hosts/harness.sh, `Hosts::up(5)`, which holds
//! the machine-wide `/tmp/orc-hosts.lock`): 3 managers (hosts 1–3) and 2 workers (hosts
//! 4–5).
//!
//! - orc: `harness cluster 3 2` (the provisioning script: init on host 1, managers 2–3
//!   and workers 4–5 join), then `orc stack deploy -c compose-examples/failover/stack.yml
//!   demo` with `WEB_IMAGE=orc-test/web:1`: 4 web replicas on the workers, published on
//!   8080 through the routing mesh, a 1 s health check.
//! - Swarm: `docker swarm init --advertise-addr` on host 1, `docker swarm join` on the
//!   others, then `docker service create` with the same image (tagged
//!   `127.0.0.1:5999/orc-test/web:1` on every host: a registry address that refuses at
//!   once, or every task waits out a DNS time-out), replicas, constraint
//!   (`node.role==worker`), health check and restart delay. Its ingress port is
//!   published only when the kernel has IPVS (Swarm's routing mesh needs it); otherwise
//!   the Swarm column has no client figures and the reason is printed.
//!
//! Then, for each system:
//!
//! 1. a client thread of this program enters host 5's network namespace (setns) and
//!    requests `http://<a manager that is not the leader>:8080/` in a loop (1 s
//!    time-outs, 50 ms apart), counting answers `200` and failures;
//! 2. host 4 (a worker with 2 replicas) halts (`harness halt 4`: link down, kill -9):
//!    printed when a surviving manager lists it down and when all 4 replicas run again
//!    elsewhere;
//! 3. the leader's host halts: a write (`orc node update --label-add` / `docker service
//!    update --label-add`, each a new label) is started against a surviving manager
//!    every 100 ms, each attempt on its own so that one stuck on the dead leader does not
//!    delay the next; printed when the first was accepted;
//! 4. the client's failed and total requests, and when failures happened.
//!
//! Run as root with Docker and the test images built (`tests/images/build.sh`):
//!
//! ```sh
//! cargo bench --bench failover
//! ```
//!
//! Environment: `ROUNDS` (default 1; figures are medians over rounds),
//! `ORC_BENCH_SWARM=0` (orc only). It prints its numbers and asserts nothing about
//! them; the hosts are torn down after each system's run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::env_u64;
use common::hosts::{harness, Hosts};

const REPLICAS: usize = 4;
const PORT: u16 = 8080;
const HOSTS: usize = 5;
/// The worker that halts, and the host the client runs in.
const HALTED_WORKER: usize = 4;
const CLIENT_HOST: usize = 5;
const SWARM_IMAGE: &str = "127.0.0.1:5999/orc-test/web:1";

// --- small helpers -------------------------------------------------------------------

/// Polls `f` every 50 ms for at most `within`; the time since `t0` when it held.
fn until(t0: Instant, within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2} s", d.as_secs_f64()))
        .unwrap_or_else(|| "timed out".into())
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn both(o: &Output) -> String {
    format!(
        "{} {}",
        String::from_utf8_lossy(&o.stdout).trim(),
        String::from_utf8_lossy(&o.stderr).trim()
    )
    .trim()
    .to_string()
}

/// The docker CLI against host `i`'s engine.
fn docker_cmd(i: usize, args: &[&str]) -> Command {
    let mut c = Command::new("docker");
    let base = std::env::var("ORC_HOSTS_DIR").unwrap_or_else(|_| "/tmp/orc-hosts".into());
    c.arg("-H")
        .arg(format!("unix://{base}/h{i}/docker.sock"))
        .args(args);
    c
}

fn docker(i: usize, args: &[&str]) -> Output {
    docker_cmd(i, args).output().expect("docker CLI")
}

/// Writes against a surviving manager after a fault: a new attempt every 100 ms, each
/// a child process of its own (killed after 10 s); the time since `t0` when the first
/// one succeeded.
fn first_write(
    t0: Instant,
    within: Duration,
    mut attempt: impl FnMut(usize) -> Command,
) -> Option<Duration> {
    let end = Instant::now() + within;
    let mut running: Vec<(Child, Instant)> = Vec::new();
    let mut next = Instant::now();
    let mut k = 0;
    let mut result = None;
    while Instant::now() < end && result.is_none() {
        if Instant::now() >= next {
            k += 1;
            let child = attempt(k)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("write attempt");
            running.push((child, Instant::now()));
            next += Duration::from_millis(100);
        }
        running.retain_mut(|(c, started)| match c.try_wait() {
            Ok(Some(st)) => {
                if st.success() && result.is_none() {
                    result = Some(t0.elapsed());
                }
                false
            }
            Ok(None) if started.elapsed() > Duration::from_secs(10) => {
                let _ = c.kill();
                let _ = c.wait();
                false
            }
            Ok(None) => true,
            Err(_) => false,
        });
        std::thread::sleep(Duration::from_millis(10));
    }
    for (mut c, _) in running {
        let _ = c.kill();
        let _ = c.wait();
    }
    result
}

// --- the client ----------------------------------------------------------------------

/// One request: `GET /` answered with status 200.
fn request(addr: SocketAddr) -> bool {
    let t = Duration::from_secs(1);
    let Ok(mut s) = TcpStream::connect_timeout(&addr, t) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(t));
    let _ = s.set_write_timeout(Some(t));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: failover\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let deadline = Instant::now() + t;
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return false,
        }
    }
    buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200")
}

/// A request loop in host `host`'s network namespace: when each request ended, and
/// whether it succeeded.
struct Client {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<(Instant, bool)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start(host: usize, target: SocketAddr) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s, l) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            let ns = std::fs::File::open(format!("/run/netns/orc-h{host}")).expect("netns");
            // SAFETY: setns on a descriptor we own; it moves this thread only.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns into host {host}");
            while !s.load(Ordering::SeqCst) {
                let ok = request(target);
                l.lock().unwrap().push((Instant::now(), ok));
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Client {
            stop,
            log,
            thread: Some(thread),
        }
    }

    /// Requests that ended after `since`: (failed, total), and the first and last
    /// failure relative to `since`.
    fn since(&self, since: Instant) -> (usize, usize, Option<(Duration, Duration)>) {
        let log = self.log.lock().unwrap();
        let after: Vec<&(Instant, bool)> = log.iter().filter(|(t, _)| *t >= since).collect();
        let fails: Vec<Duration> = after
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(t, _)| t.duration_since(since))
            .collect();
        let window = fails.first().map(|f| (*f, *fails.last().unwrap()));
        (fails.len(), after.len(), window)
    }

    fn wait_ok(&self, within: Duration) -> bool {
        let t0 = Instant::now();
        until(t0, within, || {
            let log = self.log.lock().unwrap();
            log.len() >= 5 && log[log.len() - 5..].iter().all(|(_, ok)| *ok)
        })
        .is_some()
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn print_client(c: &Client, since: Instant, what: &str) -> (usize, usize) {
    let (failed, total, window) = c.since(since);
    let w = window
        .map(|(a, b)| {
            format!(
                ", failures between t={:.2} s and t={:.2} s",
                a.as_secs_f64(),
                b.as_secs_f64()
            )
        })
        .unwrap_or_default();
    println!("          client since {what}: {failed} failed of {total}{w}");
    (failed, total)
}

// --- figures -------------------------------------------------------------------------

#[derive(Default, Clone)]
struct Figures {
    down_seen: Option<Duration>,
    replicas_back: Option<Duration>,
    write_after_leader_halt: Option<Duration>,
    /// (failed, total) through the whole run, when a client ran.
    requests: Option<(usize, usize)>,
}

fn halt(h: &Hosts, i: usize) -> Instant {
    let t0 = Instant::now();
    h.run(&["halt", &i.to_string()]);
    println!(
        "t=0.00 s  host {i} halted (the harness took {:.2} s)",
        t0.elapsed().as_secs_f64()
    );
    t0
}

// --- orc -----------------------------------------------------------------------------

fn orc_cmd(sock: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_orc"));
    c.arg("-H").arg(sock).args(args);
    c
}

fn orc_json(sock: &str, args: &[&str]) -> Option<Vec<serde_json::Value>> {
    let o = orc_cmd(sock, args).output().ok()?;
    if !o.status.success() {
        return None;
    }
    serde_json::from_slice(&o.stdout).ok()
}

fn run_orc(round: usize) -> Figures {
    println!("== orc, round {round}: 3 managers (hosts 1-3), 2 workers (hosts 4-5)");
    let h = Hosts::up(HOSTS);
    h.run(&["cluster", "3", "2"]);
    let socks: Vec<String> = (0..=HOSTS)
        .map(|i| if i == 0 { String::new() } else { h.sock(i) })
        .collect();
    let file = format!(
        "{}/compose-examples/failover/stack.yml",
        env!("CARGO_MANIFEST_DIR")
    );
    let o = orc_cmd(&socks[1], &["stack", "deploy", "-c", &file, "demo"])
        .env("WEB_IMAGE", "orc-test/web:1")
        .output()
        .expect("stack deploy");
    assert!(o.status.success(), "stack deploy: {}", both(&o));
    let nodes = orc_json(&socks[1], &["node", "ls", "--format", "json"]).expect("node ls");
    let node_of = |i: usize| -> String {
        nodes
            .iter()
            .find(|n| n["address"] == format!("{}:4242", h.addr(i)))
            .and_then(|n| n["id"].as_str())
            .unwrap_or_else(|| panic!("host {i}'s node"))
            .to_string()
    };
    let (w4, w5) = (node_of(HALTED_WORKER), node_of(CLIENT_HOST));
    let running = |ask: usize| -> Vec<serde_json::Value> {
        orc_json(
            &socks[ask],
            &["service", "ps", "demo_web", "--format", "json"],
        )
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t["state"] == "running" && t["desired_state"] == "running")
        .collect()
    };
    let t = Instant::now();
    let deployed = until(t, Duration::from_secs(120), || {
        let r = running(1);
        r.len() == REPLICAS && r.iter().filter(|t| t["node_id"] == w4.as_str()).count() > 0
    });
    assert!(deployed.is_some(), "demo_web did not converge");
    let on4 = running(1)
        .iter()
        .filter(|t| t["node_id"] == w4.as_str())
        .count();
    println!(
        "deployed demo_web: {REPLICAS} replicas running after {}, {on4} on host {HALTED_WORKER}",
        secs(deployed)
    );
    let leader_of = |ask: usize| -> Option<usize> {
        let o = orc_cmd(&socks[ask], &["info", "--format", "json"])
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        (1..=3).find(|i| v["leader_addr"] == format!("{}:4242", h.addr(*i)))
    };
    let leader = leader_of(1).expect("a leader");
    let target_host = if leader == 2 { 3 } else { 2 };
    let survivor = target_host;
    let target: SocketAddr = format!("{}:{PORT}", h.addr(target_host)).parse().unwrap();
    let client = Client::start(CLIENT_HOST, target);
    let started = Instant::now();
    assert!(
        client.wait_ok(Duration::from_secs(30)),
        "the client gets no answers from {target}"
    );
    println!(
        "client: host {CLIENT_HOST} -> http://{target}/ (host {target_host}'s mesh), answering"
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut f = Figures::default();

    let t0 = halt(&h, HALTED_WORKER);
    f.down_seen = until(t0, Duration::from_secs(60), || {
        orc_json(&socks[survivor], &["node", "ls", "--format", "json"]).is_some_and(|ns| {
            ns.iter()
                .any(|n| n["id"] == w4.as_str() && n["status"] == "down")
        })
    });
    println!(
        "t={}  host {HALTED_WORKER} seen down (orc node ls on host {survivor})",
        secs(f.down_seen)
    );
    f.replicas_back = until(t0, Duration::from_secs(90), || {
        let r = running(survivor);
        r.len() == REPLICAS && r.iter().all(|t| t["node_id"] != w4.as_str())
    });
    println!(
        "t={}  all {REPLICAS} replicas running again elsewhere (orc service ps)",
        secs(f.replicas_back)
    );
    std::thread::sleep(Duration::from_secs(2));
    print_client(&client, t0, "the worker's halt");

    let t1 = halt(&h, leader);
    println!("          (host {leader} was the leader; writes go to host {survivor})");
    f.write_after_leader_halt = first_write(t1, Duration::from_secs(60), |k| {
        orc_cmd(
            &socks[survivor],
            &[
                "node",
                "update",
                "--label-add",
                &format!("failover-{k}=1"),
                &w5,
            ],
        )
    });
    println!(
        "t={}  a write accepted by host {survivor} (orc node update --label-add)",
        secs(f.write_after_leader_halt)
    );
    let new_leader = until(t1, Duration::from_secs(10), || {
        leader_of(survivor).is_some_and(|l| l != leader)
    })
    .and_then(|_| leader_of(survivor));
    if let Some(l) = new_leader {
        println!("          the new leader is host {l}");
    }
    std::thread::sleep(Duration::from_secs(2));
    print_client(&client, t1, "the leader's halt");
    let (failed, total, _) = client.since(started);
    f.requests = Some((failed, total));
    client.stop();
    println!("client, whole run: {failed} failed of {total} requests");
    println!();
    f
}

// --- Swarm ---------------------------------------------------------------------------

/// Why Swarm's ingress routing mesh cannot work on this kernel, if it cannot.
fn no_ipvs() -> Option<String> {
    if std::path::Path::new("/proc/net/ip_vs").exists() {
        return None;
    }
    let mut config = String::new();
    if let Ok(o) = Command::new("sh")
        .args([
            "-c",
            "zcat /proc/config.gz 2>/dev/null | grep -E '^(# )?CONFIG_IP_VS[ =]'",
        ])
        .output()
    {
        config = text(&o);
    }
    Some(if config.is_empty() {
        "no /proc/net/ip_vs: this kernel has no IPVS, which Swarm's ingress routing mesh needs"
            .into()
    } else {
        format!(
            "this kernel has no IPVS ({config}; no /proc/net/ip_vs), which Swarm's ingress \
             routing mesh needs"
        )
    })
}

fn run_swarm(round: usize) -> Result<Figures, String> {
    println!("== Docker Swarm mode, round {round}: 3 managers (hosts 1-3), 2 workers (hosts 4-5)");
    let h = Hosts::up(HOSTS);
    let o = docker(1, &["swarm", "init", "--advertise-addr", &h.addr(1)]);
    if !o.status.success() {
        return Err(format!("docker swarm init on host 1 failed: {}", both(&o)));
    }
    let token = |role: &str| text(&docker(1, &["swarm", "join-token", "-q", role]));
    let (mt, wt) = (token("manager"), token("worker"));
    for i in 2..=HOSTS {
        let t = if i <= 3 { &mt } else { &wt };
        let o = docker(
            i,
            &[
                "swarm",
                "join",
                "--advertise-addr",
                &h.addr(i),
                "--token",
                t,
                &format!("{}:2377", h.addr(1)),
            ],
        );
        if !o.status.success() {
            return Err(format!("host {i}: docker swarm join failed: {}", both(&o)));
        }
    }
    let node_id = |i: usize| text(&docker(i, &["info", "--format", "{{.Swarm.NodeID}}"]));
    let (w4, w5) = (node_id(HALTED_WORKER), node_id(CLIENT_HOST));
    for i in 1..=HOSTS {
        let o = docker(i, &["tag", "orc-test/web:1", SWARM_IMAGE]);
        if !o.status.success() {
            return Err(format!("host {i}: docker tag: {}", both(&o)));
        }
    }
    let ipvs = no_ipvs();
    let replicas = REPLICAS.to_string();
    let publish = format!("{PORT}:80");
    let mut args = vec![
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--replicas",
        &replicas,
        "--constraint",
        "node.role==worker",
        "--health-cmd",
        "wget -q -O /dev/null http://127.0.0.1/",
        "--health-interval",
        "1s",
        "--health-timeout",
        "2s",
        "--health-retries",
        "3",
        "--stop-grace-period",
        "1s",
        "--restart-condition",
        "any",
        "--restart-delay",
        "0s",
    ];
    if ipvs.is_none() {
        args.extend(["--publish", &publish]);
    }
    args.push(SWARM_IMAGE);
    let o = docker(1, &args);
    if !o.status.success() {
        return Err(format!("docker service create failed: {}", both(&o)));
    }
    // (id, node id) of the running tasks, asked of host `ask`
    let running = |ask: usize| -> Option<Vec<(String, String)>> {
        let o = docker(
            ask,
            &[
                "service",
                "ps",
                "web",
                "--no-trunc",
                "--filter",
                "desired-state=running",
                "--format",
                "{{.ID}} {{.CurrentState}}",
            ],
        );
        if !o.status.success() {
            return None;
        }
        let ids: Vec<String> = text(&o)
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("Running"))
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect();
        if ids.is_empty() {
            return Some(vec![]);
        }
        let mut a = vec!["inspect", "--format", "{{.ID}} {{.NodeID}}"];
        a.extend(ids.iter().map(String::as_str));
        let o = docker(ask, &a);
        o.status.success().then(|| {
            text(&o)
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        })
    };
    let t = Instant::now();
    let deployed = until(t, Duration::from_secs(180), || {
        running(1)
            .is_some_and(|r| r.len() == REPLICAS && r.iter().filter(|(_, n)| *n == w4).count() > 0)
    });
    if deployed.is_none() {
        return Err(format!(
            "the Swarm service did not converge in 180 s: {}",
            both(&docker(1, &["service", "ps", "--no-trunc", "web"]))
        ));
    }
    let on4 = running(1)
        .unwrap_or_default()
        .iter()
        .filter(|(_, n)| *n == w4)
        .count();
    println!(
        "created web: {REPLICAS} replicas running after {}, {on4} on host {HALTED_WORKER}",
        secs(deployed)
    );
    let leader_of = |ask: usize| -> Option<usize> {
        (1..=3).find(|i| {
            let o = docker(
                ask,
                &[
                    "node",
                    "ls",
                    "--filter",
                    "role=manager",
                    "--format",
                    "{{.ManagerStatus}} {{.ID}}",
                ],
            );
            let me = node_id(*i);
            text(&o)
                .lines()
                .any(|l| l.starts_with("Leader ") && l.ends_with(me.as_str()))
        })
    };
    let leader = leader_of(1).ok_or("no Swarm leader")?;
    let survivor = if leader == 2 { 3 } else { 2 };
    let client = match &ipvs {
        None => {
            let target: SocketAddr = format!("{}:{PORT}", h.addr(survivor)).parse().unwrap();
            let c = Client::start(CLIENT_HOST, target);
            if !c.wait_ok(Duration::from_secs(30)) {
                println!("client: no answers from Swarm's ingress at {target}; counted anyway");
            } else {
                println!("client: host {CLIENT_HOST} -> http://{target}/ (host {survivor}'s ingress), answering");
            }
            Some((c, Instant::now()))
        }
        Some(why) => {
            println!("client: none ({why})");
            None
        }
    };
    std::thread::sleep(Duration::from_secs(2));
    let mut f = Figures::default();

    let t0 = halt(&h, HALTED_WORKER);
    f.down_seen = until(t0, Duration::from_secs(120), || {
        text(&docker(
            survivor,
            &["node", "inspect", "--format", "{{.Status.State}}", &w4],
        )) == "down"
    });
    println!(
        "t={}  host {HALTED_WORKER} seen down (docker node inspect on host {survivor})",
        secs(f.down_seen)
    );
    f.replicas_back = until(t0, Duration::from_secs(180), || {
        running(survivor).is_some_and(|r| r.len() == REPLICAS && r.iter().all(|(_, n)| *n != w4))
    });
    println!(
        "t={}  all {REPLICAS} replicas running again elsewhere (docker service ps)",
        secs(f.replicas_back)
    );
    std::thread::sleep(Duration::from_secs(2));
    if let Some((c, _)) = &client {
        print_client(c, t0, "the worker's halt");
    }

    let t1 = halt(&h, leader);
    println!("          (host {leader} was the leader; writes go to host {survivor})");
    f.write_after_leader_halt = first_write(t1, Duration::from_secs(120), |k| {
        docker_cmd(
            survivor,
            &[
                "service",
                "update",
                "--detach",
                "--label-add",
                &format!("failover-{k}=1"),
                "web",
            ],
        )
    });
    println!(
        "t={}  a write accepted by host {survivor} (docker service update --label-add)",
        secs(f.write_after_leader_halt)
    );
    let _ = w5;
    if let Some((c, started)) = client {
        std::thread::sleep(Duration::from_secs(2));
        print_client(&c, t1, "the leader's halt");
        let (failed, total, _) = c.since(started);
        f.requests = Some((failed, total));
        c.stop();
        println!("client, whole run: {failed} failed of {total} requests");
    }
    println!();
    Ok(f)
}

// --- main ----------------------------------------------------------------------------

fn median(mut v: Vec<Duration>) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    v.sort();
    Some(v[v.len() / 2])
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // SAFETY: plain libc call; the client threads enter other network namespaces.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the failover benchmark runs as root"
    );
    let rounds = env_u64("ROUNDS", env_u64("ORC_BENCH_ROUNDS", 1)).max(1) as usize;
    let with_swarm = env_u64("ORC_BENCH_SWARM", 1) == 1;
    let _ = harness();
    let mut orc: Vec<Figures> = Vec::new();
    let mut swarm: Vec<Figures> = Vec::new();
    let mut swarm_err: Option<String> = if with_swarm {
        None
    } else {
        Some("skipped (ORC_BENCH_SWARM=0)".into())
    };
    for r in 1..=rounds {
        orc.push(run_orc(r));
        if swarm_err.is_none() {
            match run_swarm(r) {
                Ok(f) => swarm.push(f),
                Err(e) => {
                    println!("swarm: {e}");
                    println!();
                    swarm_err = Some(e);
                }
            }
        }
    }

    let pick = |v: &[Figures], g: fn(&Figures) -> Option<Duration>| -> Option<Duration> {
        if v.is_empty() || v.iter().any(|f| g(f).is_none()) {
            return None;
        }
        median(v.iter().filter_map(g).collect())
    };
    println!(
        "failover figures ({rounds} round{}, {}):",
        if rounds == 1 { "" } else { "s" },
        if rounds == 1 { "one run" } else { "medians" }
    );
    println!(
        "{:<46} {:>10} {:>10} {:>12}",
        "metric", "orc", "swarm", "swarm/orc"
    );
    let row = |name: &str, g: fn(&Figures) -> Option<Duration>| {
        let a = pick(&orc, g);
        let b = pick(&swarm, g);
        let ratio = match (a, b) {
            (Some(a), Some(b)) if a.as_secs_f64() > 0.0 => {
                format!("{:.1}x", b.as_secs_f64() / a.as_secs_f64())
            }
            _ => "-".into(),
        };
        let cell = |d: Option<Duration>, v: &[Figures]| {
            if v.is_empty() {
                "-".into()
            } else {
                secs(d)
            }
        };
        println!(
            "{:<46} {:>10} {:>10} {:>12}",
            name,
            cell(a, &orc),
            cell(b, &swarm),
            ratio
        );
    };
    row("halted worker seen down", |f| f.down_seen);
    row("halted worker's replicas all running elsewhere", |f| {
        f.replicas_back
    });
    row("write accepted after the leader's halt", |f| {
        f.write_after_leader_halt
    });
    let reqs = |v: &[Figures]| -> String {
        let (mut failed, mut total) = (0, 0);
        for f in v {
            let Some((a, b)) = f.requests else {
                return "-".into();
            };
            failed += a;
            total += b;
        }
        if v.is_empty() {
            "-".into()
        } else {
            format!("{failed}/{total}")
        }
    };
    println!(
        "{:<46} {:>10} {:>10}",
        "client requests failed/total",
        reqs(&orc),
        reqs(&swarm)
    );
    println!("targets (issue 7): replicas elsewhere within 5 s (aim 4 s), a write within 2 s");
    if let Some(e) = swarm_err {
        println!("swarm: {e}");
    } else if swarm.iter().any(|f| f.requests.is_none()) {
        if let Some(why) = no_ipvs() {
            println!("swarm client: none: {why}");
        }
    }
}
