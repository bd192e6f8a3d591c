//! Level 3: services on the real Docker engine. Daemons on 127.0.0.1 share this
//! machine's engine (each only touches containers labelled with its own node id).
//! Images are built locally by tests/images/build.sh.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Containers of a service on the engine, running or not.
fn containers(service: &str, all: bool) -> Vec<String> {
    let filter = format!("label=orc.service.name={service}");
    let mut args = vec!["ps", "-q", "--filter", filter.as_str()];
    if all {
        args.push("-a");
    }
    docker(&args).lines().map(str::to_string).collect()
}

fn tasks(n: &Node, service: &str) -> Vec<serde_json::Value> {
    n.json(&["service", "ps", service])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn running(n: &Node, service: &str) -> usize {
    tasks(n, service)
        .iter()
        .filter(|t| t["state"] == "running" && t["desired_state"] == "running")
        .count()
}

/// Removes the test's services at the end, even on failure.
struct Cleanup(Vec<String>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for s in &self.0 {
            let ids = containers(s, true);
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                docker(&args);
            }
        }
    }
}

#[test]
fn replicated_service_converges_is_replaced_scaled_and_removed() {
    ensure_images();
    let name = format!("web{}", std::process::id());
    let _c = Cleanup(vec![name.clone()]);
    let nodes = cluster(1, 1, &[]);
    let out = nodes[0].ok(&[
        "service",
        "create",
        "--name",
        &name,
        "--replicas",
        "3",
        "-p",
        "80",
        "--restart-delay",
        "1s",
        "orc-test/web:1",
    ]);
    assert!(out.contains("converged"), "{out}");
    assert_eq!(running(&nodes[0], &name), 3);
    assert_eq!(containers(&name, false).len(), 3);

    // The JSON contracts.
    let ls = nodes[0].json(&["service", "ls"]);
    let s = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name.as_str())
        .unwrap()
        .clone();
    for k in ["id", "name", "mode", "replicas", "image", "ports"] {
        assert!(s.get(k).is_some(), "service ls lacks {k}: {s}");
    }
    assert_eq!(s["replicas"], "3/3");
    assert_eq!(s["mode"], "replicated");
    for t in tasks(&nodes[0], &name) {
        for k in [
            "id",
            "service",
            "slot",
            "node_id",
            "desired_state",
            "state",
            "error",
            "image",
        ] {
            assert!(t.get(k).is_some(), "service ps lacks {k}: {t}");
        }
        // No host port is published for an ingress port (the mesh reaches the task at
        // its container address); the page answers there.
        assert_eq!(t["ports"][0]["host_port"].as_u64(), Some(0), "{t}");
        let cid = t["container_id"].as_str().expect("container id");
        let o = std::process::Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                cid,
            ])
            .output()
            .expect("docker inspect");
        let ips = String::from_utf8_lossy(&o.stdout).to_string();
        let ip = ips.split_whitespace().next().expect("the task's address");
        let mut s = std::net::TcpStream::connect((ip, 80)).expect("connect task");
        use std::io::{Read, Write};
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(body.contains("200"), "{body}");
    }
    // Both nodes got tasks (spread).
    let on: std::collections::BTreeSet<String> = tasks(&nodes[0], &name)
        .iter()
        .map(|t| t["node_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(on.len(), 2, "tasks not spread: {on:?}");

    // A container killed behind orc's back is replaced within the restart delay + 1 s
    // (plus the time to notice and to start a container on this shared machine).
    let victim = containers(&name, false)[0].clone();
    let t0 = Instant::now();
    docker(&["kill", &victim]);
    wait_for(Duration::from_secs(20), "replacement running", || {
        let ts = tasks(&nodes[0], &name);
        let failed = ts.iter().any(|t| t["state"] == "failed");
        (failed && running(&nodes[0], &name) == 3).then_some(())
    });
    eprintln!(
        "killed container replaced in {:?} (restart delay 1 s)",
        t0.elapsed()
    );
    let history = tasks(&nodes[0], &name);
    assert_eq!(
        history.len(),
        4,
        "history keeps the failed task: {history:?}"
    );

    // Scale down and up, with the progress display.
    let out = nodes[0].ok(&["service", "scale", &format!("{name}=1")]);
    assert!(out.contains("converged"), "{out}");
    wait_for(Duration::from_secs(20), "one container left", || {
        (containers(&name, false).len() == 1).then_some(())
    });

    // Removal removes the containers.
    nodes[0].ok(&["service", "rm", &name]);
    wait_for(Duration::from_secs(20), "containers removed", || {
        containers(&name, true).is_empty().then_some(())
    });
    let e = nodes[0].fails(&["service", "ps", &name]);
    assert!(e.contains("not found"), "{e}");
}

#[test]
fn a_lost_node_is_replaced_at_once_and_its_stale_containers_removed_on_return() {
    ensure_images();
    let name = format!("lost{}", std::process::id());
    let _c = Cleanup(vec![name.clone()]);
    let mut nodes = cluster(1, 1, &["--heartbeat-period", "500ms"]);
    let worker = nodes[1].info()["node_id"].as_str().unwrap().to_string();
    nodes[0].ok(&[
        "service",
        "create",
        "--name",
        &name,
        "--replicas",
        "2",
        "--restart-delay",
        "30s",
        "orc-test/busybox:1",
        "sleep",
        "3600",
    ]);
    let on_worker = wait_for(Duration::from_secs(20), "a task on the worker", || {
        let ts = tasks(&nodes[0], &name);
        ts.iter()
            .find(|t| t["node_id"] == worker.as_str() && t["state"] == "running")
            .map(|t| t["container_id"].as_str().unwrap().to_string())
    });
    nodes[1].kill();
    let t0 = Instant::now();
    // Replaced as soon as the node is down, not after the 30 s restart delay.
    wait_for(
        Duration::from_secs(15),
        "replacement running on the manager",
        || {
            let ts = tasks(&nodes[0], &name);
            let live: Vec<_> = ts
                .iter()
                .filter(|t| t["state"] == "running" && t["desired_state"] == "running")
                .collect();
            (live.len() == 2 && live.iter().all(|t| t["node_id"] != worker.as_str())).then_some(())
        },
    );
    eprintln!(
        "lost node's task running elsewhere {:?} after SIGKILL",
        t0.elapsed()
    );
    // The old container still runs on the engine; when the worker returns, it goes.
    assert!(docker(&["inspect", "-f", "{{.State.Running}}", &on_worker]) == "true");
    nodes[1].start();
    wait_for(Duration::from_secs(20), "stale container removed", || {
        let r = Command::new("docker")
            .args(["inspect", &on_worker])
            .output()
            .unwrap();
        (!r.status.success()).then_some(())
    });
    // Two containers again (rebalancing may start one on the returned node before it
    // stops one elsewhere: a third for a moment).
    wait_for(
        Duration::from_secs(20),
        "2 containers of the service",
        || (containers(&name, false).len() == 2).then_some(()),
    );
    nodes[0].ok(&["service", "rm", &name]);
}

#[test]
fn bad_service_input_is_refused_at_the_door_and_changes_nothing() {
    let nodes = cluster(1, 0, &[]);
    let e = nodes[0].fails(&["service", "create", "--name", "x", "-p", "70000:80", "img"]);
    assert!(e.contains("--publish: port 70000 is out of range"), "{e}");
    let e = nodes[0].fails(&[
        "service",
        "create",
        "--name",
        "x",
        "--constraint",
        "node.labels.zone=a",
        "img",
    ]);
    assert!(e.contains("--constraint"), "{e}");
    let e = nodes[0].fails(&["service", "create", "--name", "bad name", "img"]);
    assert!(e.contains("--name"), "{e}");
    let e = nodes[0].fails(&[
        "service",
        "create",
        "--name",
        "x",
        "--reserve-memory",
        "lots",
        "img",
    ]);
    assert!(e.contains("--reserve-memory"), "{e}");
    nodes[0].ok(&[
        "service", "create", "-d", "--name", "p1", "-p", "8089:80", "img",
    ]);
    let e = nodes[0].fails(&[
        "service", "create", "-d", "--name", "p2", "-p", "8089:80", "img",
    ]);
    assert!(e.contains("already published by service p1"), "{e}");
    let e = nodes[0].fails(&["service", "create", "-d", "--name", "p1", "img"]);
    assert!(e.contains("already exists"), "{e}");
    let ls = nodes[0].json(&["service", "ls"]);
    assert_eq!(ls.as_array().unwrap().len(), 1);
    nodes[0].ok(&["service", "rm", "p1"]);
}

#[test]
fn an_unplaceable_task_says_why() {
    let nodes = cluster(1, 0, &[]);
    nodes[0].ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "big",
        "--reserve-memory",
        "100T",
        "orc-test/busybox:1",
        "sleep",
        "1",
    ]);
    let why = wait_for(Duration::from_secs(10), "pending reason", || {
        let ts = tasks(&nodes[0], "big");
        let t = ts.first()?;
        let m = t["message"].as_str()?.to_string();
        (t["state"] == "pending" && m.contains("no suitable node")).then_some(m)
    });
    assert!(why.contains("lacked memory"), "{why}");
    let ps = nodes[0].ok(&["service", "ps", "big"]);
    assert!(ps.contains("no suitable node"), "{ps}");
    nodes[0].ok(&["service", "rm", "big"]);
}

#[test]
fn global_services_follow_nodes_and_drain_moves_tasks() {
    ensure_images();
    let g = format!("glob{}", std::process::id());
    let r = format!("rep{}", std::process::id());
    let _c = Cleanup(vec![g.clone(), r.clone()]);
    let nodes = cluster(1, 2, &[]);
    let ids: Vec<String> = nodes
        .iter()
        .map(|n| n.info()["node_id"].as_str().unwrap().to_string())
        .collect();
    nodes[0].ok(&[
        "service",
        "create",
        "--name",
        &g,
        "--mode",
        "global",
        "orc-test/busybox:1",
        "sleep",
        "3600",
    ]);
    // `service create` returns once the service converged: a task runs on every
    // eligible node (not before the orchestrator created them).
    let on: std::collections::BTreeSet<String> = tasks(&nodes[0], &g)
        .iter()
        .filter(|t| t["state"] == "running")
        .map(|t| t["node_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(on.len(), 3, "one task per node: {on:?}");
    let ls = nodes[0].json(&["service", "ls"]);
    let row = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == g.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["mode"], "global");
    assert_eq!(row["replicas"], "3/3");

    nodes[0].ok(&[
        "service",
        "create",
        "--name",
        &r,
        "--replicas",
        "2",
        "--constraint",
        &format!("node.id!={}", ids[0]),
        "orc-test/busybox:1",
        "sleep",
        "3600",
    ]);
    // Draining worker 1: its global task stops, its replicated task moves to worker 2.
    nodes[0].ok(&["node", "update", "--availability", "drain", &ids[1]]);
    wait_for(
        Duration::from_secs(30),
        "tasks moved off the drained node",
        || {
            let gt = tasks(&nodes[0], &g);
            let rt = tasks(&nodes[0], &r);
            let g_live: Vec<_> = gt
                .iter()
                .filter(|t| t["desired_state"] == "running" && t["state"] == "running")
                .collect();
            let r_live: Vec<_> = rt
                .iter()
                .filter(|t| t["desired_state"] == "running" && t["state"] == "running")
                .collect();
            let none_on_1 = g_live
                .iter()
                .chain(r_live.iter())
                .all(|t| t["node_id"] != ids[1].as_str());
            (g_live.len() == 2
                && r_live.len() == 2
                && none_on_1
                && r_live.iter().all(|t| t["node_id"] == ids[2].as_str()))
            .then_some(())
        },
    );
    // Active again: the global service comes back there.
    nodes[0].ok(&["node", "update", "--availability", "active", &ids[1]]);
    wait_for(
        Duration::from_secs(30),
        "global task back on the node",
        || {
            let gt = tasks(&nodes[0], &g);
            gt.iter()
                .any(|t| {
                    t["node_id"] == ids[1].as_str()
                        && t["state"] == "running"
                        && t["desired_state"] == "running"
                })
                .then_some(())
        },
    );
    nodes[0].ok(&["service", "rm", &g, &r]);
}

#[test]
fn a_replicated_job_runs_to_completion_and_is_not_restarted() {
    ensure_images();
    let j = format!("job{}", std::process::id());
    let _c = Cleanup(vec![j.clone()]);
    let nodes = cluster(1, 0, &[]);
    let out = nodes[0].ok(&[
        "service",
        "create",
        "--name",
        &j,
        "--mode",
        "replicated-job",
        "--replicas",
        "3",
        "--max-concurrent",
        "2",
        "orc-test/busybox:1",
        "sh",
        "-c",
        "echo done-$HOSTNAME",
    ]);
    assert!(out.contains("converged"), "{out}");
    let ts = tasks(&nodes[0], &j);
    assert_eq!(
        ts.iter().filter(|t| t["state"] == "complete").count(),
        3,
        "{ts:?}"
    );
    // No new task appears for a completed job.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(tasks(&nodes[0], &j).len(), 3);
    // Its output is in the logs, gathered by the manager from the node.
    let logs = nodes[0].ok(&["service", "logs", &j]);
    assert_eq!(logs.matches("done-").count(), 3, "{logs}");
    nodes[0].ok(&["service", "rm", &j]);
}

#[test]
fn a_restarted_daemon_adopts_its_containers_and_restarts_none() {
    ensure_images();
    let name = format!("adopt{}", std::process::id());
    let _c = Cleanup(vec![name.clone()]);
    let mut nodes = cluster(1, 0, &[]);
    nodes[0].ok(&[
        "service",
        "create",
        "--name",
        &name,
        "--replicas",
        "2",
        "orc-test/busybox:1",
        "sleep",
        "3600",
    ]);
    let before: Vec<(String, String)> = containers(&name, false)
        .iter()
        .map(|c| {
            (
                c.clone(),
                docker(&["inspect", "-f", "{{.State.StartedAt}}", c]),
            )
        })
        .collect();
    assert_eq!(before.len(), 2);
    nodes[0].kill();
    nodes[0].start();
    wait_for(Duration::from_secs(20), "manager back", || {
        let o = nodes[0].orc(&["service", "ps", &name, "--format", "json"]);
        o.status.success().then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let after: Vec<(String, String)> = containers(&name, false)
        .iter()
        .map(|c| {
            (
                c.clone(),
                docker(&["inspect", "-f", "{{.State.StartedAt}}", c]),
            )
        })
        .collect();
    let (mut b, mut a) = (before.clone(), after.clone());
    b.sort();
    a.sort();
    assert_eq!(a, b, "containers were replaced or restarted");
    assert_eq!(running(&nodes[0], &name), 2);
    nodes[0].ok(&["service", "rm", &name]);
}

#[test]
fn an_update_replaces_every_task_with_the_new_spec() {
    ensure_images();
    let name = format!("upd{}", std::process::id());
    let _c = Cleanup(vec![name.clone()]);
    let nodes = cluster(1, 1, &[]);
    nodes[0].ok(&[
        "service",
        "create",
        "--name",
        &name,
        "--replicas",
        "3",
        "-e",
        "V=1",
        "--stop-grace-period",
        "1s",
        "orc-test/busybox:1",
        "sleep",
        "3600",
    ]);
    let out = nodes[0].ok(&[
        "service",
        "update",
        "--env-add",
        "V=2",
        "--update-parallelism",
        "2",
        &name,
    ]);
    assert!(out.contains("converged"), "{out}");
    // Converged: 3 new tasks run; the old ones were told to stop and are going.
    let live = wait_for(Duration::from_secs(20), "old containers stopped", || {
        let c = containers(&name, false);
        (c.len() == 3).then_some(c)
    });
    for c in &live {
        let env = docker(&["inspect", "-f", "{{json .Config.Env}}", c]);
        assert!(env.contains("V=2"), "{env}");
    }
    let ts = tasks(&nodes[0], &name);
    let ps = nodes[0].ok(&["service", "ps", &name]);
    assert_eq!(
        ts.iter()
            .filter(|t| t["desired_state"] == "shutdown")
            .count(),
        3,
        "{ps}"
    );
    let inspect = nodes[0].json(&["service", "inspect", &name]);
    assert_eq!(inspect[0]["version"], 2);
    assert_eq!(
        inspect[0]["previous_spec"]["task"]["container"]["env"][0],
        "V=1"
    );
    // A scale changes no task's spec: nothing is replaced.
    nodes[0].ok(&["service", "scale", &format!("{name}=2")]);
    let after: Vec<String> = containers(&name, false);
    assert!(
        after.iter().all(|c| live.contains(c)),
        "scale replaced tasks"
    );
    nodes[0].ok(&["service", "rm", &name]);
}

/// Creates `name`: `replicas` of orc-test/web:1 published on a free port, stopped with
/// `grace`; returns the published address once every replica answers through the mesh.
fn web_through_mesh(node: &Node, name: &str, replicas: usize, grace: &str) -> String {
    let port = free_port();
    node.ok(&[
        "service",
        "create",
        "--name",
        name,
        "--replicas",
        &replicas.to_string(),
        "-p",
        &format!("{port}:80"),
        "--stop-grace-period",
        grace,
        "orc-test/web:1",
    ]);
    let addr = format!("127.0.0.1:{port}");
    wait_for(
        Duration::from_secs(30),
        "every replica through the mesh",
        || {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..10 * replicas {
                seen.insert(http_get(&addr)?);
            }
            (seen.len() == replicas).then_some(())
        },
    );
    addr
}

/// Client threads sending `GET path` to an address in a loop until stopped, each at
/// most one request a millisecond: every request costs the machine three ephemeral
/// ports in TIME_WAIT (client, mesh to backend, Docker's proxy), and an unpaced loop on
/// a busy CI machine runs out of them.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<std::thread::JoinHandle<(u64, u64, u64)>>,
}

impl Load {
    fn start(addr: &str, path: &'static str, clients: usize) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = (0..clients)
            .map(|_| {
                let (a, stop) = (addr.to_string(), stop.clone());
                std::thread::spawn(move || {
                    let (mut ok, mut failed, mut no_port) = (0, 0, 0);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        match try_get(&a, path) {
                            Ok(Some(_)) => ok += 1,
                            Ok(None) => failed += 1,
                            // The client could not even open a socket: no request
                            // was sent, so none was lost; counted apart and printed.
                            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                                no_port += 1
                            }
                            Err(_) => failed += 1,
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    (ok, failed, no_port)
                })
            })
            .collect();
        Load { stop, clients }
    }

    /// Stops the clients: requests that succeeded, that failed.
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, failed, no_port) = self
            .clients
            .into_iter()
            .map(|c| c.join().unwrap())
            .fold((0, 0, 0), |(a, b, c), (o, f, n)| (a + o, b + f, c + n));
        if no_port > 0 {
            eprintln!("load: {no_port} requests not sent (no ephemeral port left)");
        }
        (ok, failed)
    }
}

/// One `GET path`: the body's last line for a 200, `None` for any other answer or a
/// connection that broke after it opened; an error when it could not connect.
fn try_get(addr: &str, path: &str) -> std::io::Result<Option<String>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    let mut read = || -> std::io::Result<String> {
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    };
    Ok(read().ok().and_then(|body| {
        body.contains("200 OK")
            .then(|| body.lines().last().unwrap_or("").trim().to_string())
    }))
}

fn http_get(addr: &str) -> Option<String> {
    http_get_path(addr, "/")
}

fn http_get_path(addr: &str, path: &str) -> Option<String> {
    try_get(addr, path).ok().flatten()
}

#[test]
fn the_mesh_serves_a_published_port_and_a_dead_task_costs_no_request() {
    ensure_images();
    let name = format!("mesh{}", std::process::id());
    let _c = Cleanup(vec![name.clone()]);
    let nodes = cluster(1, 0, &[]);
    let port = free_port();
    nodes[0].ok(&[
        "service",
        "create",
        "--name",
        &name,
        "--replicas",
        "2",
        "-p",
        &format!("{port}:80"),
        "--restart-delay",
        "1s",
        "orc-test/web:1",
    ]);
    let addr = format!("127.0.0.1:{port}");
    // Both replicas answer through the published port.
    let seen = wait_for(
        Duration::from_secs(20),
        "both replicas through the mesh",
        || {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..20 {
                seen.insert(http_get(&addr)?);
            }
            (seen.len() == 2).then_some(seen)
        },
    );
    eprintln!("mesh answered from {seen:?}");
    // The node's own view of what its mesh routes.
    let routes = nodes[0].json(&["node", "routes"]);
    let r = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["published"] == port)
        .expect("route listed")
        .clone();
    assert_eq!(r["service"], name.as_str());
    assert_eq!(r["backends"].as_array().unwrap().len(), 2, "{r}");
    // A published port answers anyone; the service's VIP only its network's containers.
    assert_eq!(r["networks"], serde_json::json!([]), "{r}");
    let vip = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == name.as_str() && r["address"] != "*")
        .unwrap_or_else(|| panic!("no VIP route for {name}: {routes}"));
    assert_eq!(vip["networks"], serde_json::json!(["default"]), "{vip}");
    // Kill one container during a request loop: once the backends changed, no request
    // fails; and while they change, a failed connect is retried on the other task.
    let victim = containers(&name, false)[0].clone();
    docker(&["kill", &victim]);
    let mut failed = 0;
    for _ in 0..200 {
        if http_get(&addr).is_none() {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "requests failed while a task died");
    wait_for(Duration::from_secs(20), "2 replicas again", || {
        (running(&nodes[0], &name) == 2).then_some(())
    });
    // Scale down under a request loop: the stopping task leaves the mesh before it is
    // stopped, so no request fails.
    let load = Load::start(&addr, "/", 1);
    nodes[0].ok(&["service", "scale", &format!("{name}=1")]);
    wait_for(Duration::from_secs(20), "one container left", || {
        (containers(&name, false).len() == 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failed) = load.stop();
    eprintln!("scale-down under load: {ok} requests ok, {failed} failed");
    assert!(ok > 20, "the loop hardly ran: {ok}");
    assert_eq!(failed, 0, "requests failed during a scale-down");
    nodes[0].ok(&["service", "rm", &name]);
    wait_for(Duration::from_secs(10), "port closed after rm", || {
        std::net::TcpStream::connect(&addr).is_err().then_some(())
    });
}

#[test]
fn a_stopping_task_leaves_the_mesh_first_so_its_in_flight_requests_finish() {
    ensure_images();
    let name = format!("drain{}", std::process::id());
    let _c = Cleanup(vec![name.clone()]);
    let nodes = cluster(1, 0, &[]);
    // No stop grace: the container is killed the moment it is stopped, so only the
    // mesh drain (out of every node's table, then a pause, then the stop) saves the
    // requests it is serving.
    let addr = web_through_mesh(&nodes[0], &name, 2, "0s");
    // Four clients, each request taking 0.4 s in the task: at any moment both tasks
    // have requests in flight.
    let load = Load::start(&addr, "/cgi-bin/slow?0.4", 4);
    std::thread::sleep(Duration::from_millis(1500));
    nodes[0].ok(&["service", "scale", &format!("{name}=1")]);
    wait_for(Duration::from_secs(20), "one container left", || {
        (containers(&name, false).len() == 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1000));
    let (ok, failed) = load.stop();
    eprintln!("scale-down with slow requests in flight: {ok} ok, {failed} failed");
    assert!(ok > 16, "the clients hardly ran: {ok}");
    assert_eq!(
        failed, 0,
        "in-flight requests failed when their task stopped"
    );
    nodes[0].ok(&["service", "rm", &name]);
}

/// `service inspect` of one service.
fn inspect(n: &Node, service: &str) -> serde_json::Value {
    n.json(&["service", "inspect", service])[0].clone()
}

/// Runs a CLI command that must fail; returns its stdout (progress) and its one
/// `error:` line.
fn fails_after_progress(n: &Node, args: &[&str]) -> (String, String) {
    let o = n.orc(args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success(),
        "orc {args:?} should have failed: {out}"
    );
    assert!(err.starts_with("error: "), "not an error line: {err:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    (out, err)
}

#[test]
fn a_broken_update_is_rolled_back_to_the_previous_spec_by_itself() {
    ensure_images();
    let name = format!("rback{}", std::process::id());
    let _c = Cleanup(vec![name.clone()]);
    let nodes = cluster(1, 0, &[]);
    nodes[0].ok(&[
        "service",
        "create",
        "--name",
        &name,
        "--replicas",
        "3",
        "--stop-grace-period",
        "1s",
        "orc-test/busybox:1",
        "sleep",
        "3600",
    ]);
    let before = containers(&name, false);
    assert_eq!(before.len(), 3);
    // `sleep x` exits at once with code 1.
    let (out, err) = fails_after_progress(
        &nodes[0],
        &[
            "service",
            "update",
            "--args",
            "sleep x",
            "--update-failure-action",
            "rollback",
            "--update-monitor",
            "2s",
            "--rollback-monitor",
            "1s",
            &name,
        ],
    );
    assert!(out.contains("overall progress: "), "{out}");
    assert!(
        err.contains(&format!("service {name}: update rollback_completed: task "))
            && err.contains("(slot 1) failed: exited with code 1"),
        "{err}"
    );
    let svc = inspect(&nodes[0], &name);
    let st = &svc["update_status"];
    assert_eq!(st["state"], "rollback_completed", "{st}");
    assert!(st["completed_ms"].as_u64().is_some(), "{st}");
    assert!(st["started_ms"].as_u64().is_some(), "{st}");
    assert_eq!(
        svc["spec"]["task"]["container"]["args"],
        serde_json::json!(["sleep", "3600"])
    );
    assert_eq!(running(&nodes[0], &name), 3);
    let after = wait_for(Duration::from_secs(20), "3 containers", || {
        let c = containers(&name, false);
        (c.len() == 3).then_some(c)
    });
    // Slots 2 and 3 were never touched: their containers still run.
    let kept = after.iter().filter(|c| before.contains(c)).count();
    assert_eq!(kept, 2, "before {before:?}, after {after:?}");
    for c in &after {
        let cmd = docker(&["inspect", "-f", "{{json .Config.Cmd}}", c]);
        assert_eq!(cmd, r#"["sleep","3600"]"#);
    }
    nodes[0].ok(&["service", "rm", &name]);
}

#[test]
fn a_failing_update_pauses_and_says_why_then_a_manual_rollback_restores_it() {
    ensure_images();
    let name = format!("pause{}", std::process::id());
    let _c = Cleanup(vec![name.clone()]);
    let nodes = cluster(1, 0, &[]);
    nodes[0].ok(&[
        "service",
        "create",
        "--name",
        &name,
        "--replicas",
        "2",
        "--stop-grace-period",
        "1s",
        "orc-test/busybox:1",
        "sleep",
        "3600",
    ]);
    let err = nodes[0].fails(&["service", "rollback", &name]);
    assert!(err.contains("no previous spec"), "{err}");
    let (_, err) = fails_after_progress(
        &nodes[0],
        &[
            "service",
            "update",
            "--args",
            "sleep x",
            "--update-failure-action",
            "pause",
            "--update-monitor",
            "1s",
            &name,
        ],
    );
    let svc = inspect(&nodes[0], &name);
    let st = &svc["update_status"];
    assert_eq!(st["state"], "paused", "{st}");
    let failed = st["failures"][0]["task_id"].as_str().expect("a failure");
    let message = st["message"].as_str().unwrap_or("");
    assert!(
        message.contains(failed) && message.contains("exited with code 1"),
        "{message}"
    );
    assert!(
        err.contains(&format!("service {name}: update paused: {message}")),
        "{err}"
    );
    // Paused: slot 2 still runs its old task.
    assert!(tasks(&nodes[0], &name).iter().any(|t| t["slot"] == 2
        && t["state"] == "running"
        && t["desired_state"] == "running"
        && t["spec_version"] == 1));
    // The operator rolls back.
    let out = nodes[0].ok(&["service", "rollback", &name]);
    assert!(out.contains("converged"), "{out}");
    let svc = inspect(&nodes[0], &name);
    assert_eq!(svc["update_status"]["state"], "rollback_completed");
    assert_eq!(
        svc["update_status"]["message"],
        "rollback requested by the operator"
    );
    assert_eq!(
        svc["spec"]["task"]["container"]["args"],
        serde_json::json!(["sleep", "3600"])
    );
    wait_for(Duration::from_secs(20), "2 tasks of the old spec", || {
        (running(&nodes[0], &name) == 2 && containers(&name, false).len() == 2).then_some(())
    });
    nodes[0].ok(&["service", "rm", &name]);
}

#[test]
fn the_max_failure_ratio_tolerates_unhealthy_tasks_up_to_it() {
    ensure_images();
    let name = format!("ratio{}", std::process::id());
    let _c = Cleanup(vec![name.clone()]);
    let dirs: Vec<String> = (1..=2)
        .map(|i| format!("/tmp/orc-ratio-{}-{i}", std::process::id()))
        .collect();
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).expect("mkdir");
    }
    struct RmDirs(Vec<String>);
    impl Drop for RmDirs {
        fn drop(&mut self) {
            for d in &self.0 {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
    let _d = RmDirs(dirs.clone());
    let nodes = cluster(1, 0, &[]);
    nodes[0].ok(&ratio_create_args(&name)
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    // Each new container takes a number from the shared directory at its first
    // health check (0, 1, 2, 3 in slot order: one at a time); odd ones are unhealthy.
    let update = |dir: &str, ratio: &str| ratio_update_args(dir, ratio, &name);
    // Ratio 0.5: slots 2 and 4 fail, 2 of 4 is not more than half: completed.
    let a = update(&dirs[0], "0.5");
    let out = nodes[0].ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.contains("overall progress: 2 out of 4 tasks"), "{out}");
    let st = inspect(&nodes[0], &name)["update_status"].clone();
    assert_eq!(st["state"], "completed", "{st}");
    assert_eq!(st["message"], "update completed; 2 of 4 tasks failed");
    let units: Vec<u64> = st["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .filter_map(|f| f["unit"].as_u64())
        .collect();
    assert_eq!(units, [2, 4], "{st}");
    assert_eq!(running(&nodes[0], &name), 2);
    // Ratio 0.2 (a fresh directory): slot 2's failure, 1 of 4, is too many.
    let a = update(&dirs[1], "0.2");
    let (_, err) =
        fails_after_progress(&nodes[0], &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err.contains("update paused: task ")
            && err.contains("(slot 2) failed: container is unhealthy (1 of 4 tasks failed, max failure ratio 0.2)"),
        "{err}"
    );
    assert_eq!(
        inspect(&nodes[0], &name)["update_status"]["state"],
        "paused"
    );
    nodes[0].ok(&["service", "rm", &name]);
}

#[test]
fn a_start_first_update_under_a_request_loop_fails_no_request() {
    ensure_images();
    let name = format!("sfirst{}", std::process::id());
    let _c = Cleanup(vec![name.clone()]);
    let nodes = cluster(1, 0, &[]);
    let addr = web_through_mesh(&nodes[0], &name, 2, "1s");
    let load = Load::start(&addr, "/", 4);
    let out = nodes[0].ok(&[
        "service",
        "update",
        "--env-add",
        "V=2",
        "--update-order",
        "start-first",
        "--update-monitor",
        "1s",
        &name,
    ]);
    assert!(out.contains("overall progress: 2 out of 2 tasks"), "{out}");
    assert!(out.contains("converged"), "{out}");
    wait_for(Duration::from_secs(20), "the old containers gone", || {
        (containers(&name, false).len() == 2).then_some(())
    });
    let (ok, failed) = load.stop();
    eprintln!("start-first update under load: {ok} ok, {failed} failed");
    assert!(ok > 100, "the clients hardly ran: {ok}");
    assert_eq!(failed, 0, "requests failed during a start-first update");
    for c in containers(&name, false) {
        let env = docker(&["inspect", "-f", "{{json .Config.Env}}", &c]);
        assert!(env.contains("V=2"), "{env}");
    }
    let st = inspect(&nodes[0], &name)["update_status"].clone();
    assert_eq!(st["state"], "completed", "{st}");
    nodes[0].ok(&["service", "rm", &name]);
}

/// Swarm templates in `--env` and `--container-label` arrive expanded in each task's
/// container, for its own node and slot; the service keeps them as written; a bad one
/// is refused at the door and creates nothing.
#[test]
fn swarm_templates_are_expanded_per_task_in_the_container() {
    ensure_images();
    let name = format!("tpl{}", std::process::id());
    let bad = format!("{name}bad");
    let _c = Cleanup(vec![name.clone(), bad.clone()]);
    let nodes = cluster(1, 1, &[]);
    let e = nodes[0].fails(&[
        "service",
        "create",
        "--name",
        &bad,
        "-e",
        "HOST={{.Node.Hostnam}}",
        "orc-test/busybox:1",
        "sleep",
        "3600",
    ]);
    assert!(
        e.contains("--env \"{{.Node.Hostnam}}\": bad template: unknown field .Node.Hostnam"),
        "{e}"
    );
    assert!(!e.trim().contains('\n'), "{e}");
    nodes[0].ok(&[
        "service",
        "create",
        "--name",
        &name,
        "--replicas",
        "2",
        "--label",
        "team=blue",
        "-e",
        "HOST={{.Node.Hostname}}",
        "-e",
        "SLOT={{.Task.Slot}}",
        "-e",
        "WHO={{.Service.Name}}/{{index .Service.Labels \"team\"}}",
        "--container-label",
        "on={{.Node.ID}}",
        "--stop-grace-period",
        "1s",
        "orc-test/busybox:1",
        "sleep",
        "3600",
    ]);
    let ls = nodes[0].json(&["service", "ls"]).to_string();
    assert!(!ls.contains(&bad), "the refused service exists: {ls}");
    let live = wait_for(Duration::from_secs(30), "two running containers", || {
        let c = containers(&name, false);
        (c.len() == 2).then_some(c)
    });
    let hostnames: std::collections::BTreeMap<String, String> = nodes[0]
        .nodes()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap_or_default().to_string(),
                n["hostname"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let mut slots = vec![];
    for c in &live {
        let env: Vec<String> =
            serde_json::from_str(&docker(&["inspect", "-f", "{{json .Config.Env}}", c]))
                .expect("env json");
        let labels: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&docker(&["inspect", "-f", "{{json .Config.Labels}}", c]))
                .expect("labels json");
        let node = &labels["orc.node.id"];
        let host = &hostnames[node];
        assert!(!host.is_empty(), "{hostnames:?}");
        assert!(env.contains(&format!("HOST={host}")), "{env:?}");
        assert!(
            env.contains(&format!("SLOT={}", labels["orc.task.slot"])),
            "{env:?}"
        );
        assert!(env.contains(&format!("WHO={name}/blue")), "{env:?}");
        assert_eq!(&labels["on"], node);
        slots.push(labels["orc.task.slot"].clone());
    }
    slots.sort();
    assert_eq!(slots, ["1", "2"]);
    // The spec keeps the templates as written.
    let spec = nodes[0].json(&["service", "inspect", &name]);
    assert_eq!(
        spec[0]["spec"]["task"]["container"]["env"][0], "HOST={{.Node.Hostname}}",
        "{spec}"
    );
    nodes[0].ok(&["service", "rm", &name]);
}

/// `service logs` of a service with a task on a node that is down: what the reachable
/// nodes have, and one line naming the down node, instead of a failure.
#[test]
fn node_ps_lists_a_node_s_tasks_and_logs_name_a_down_node_while_the_rest_print() {
    ensure_images();
    let name = format!("lg{}", std::process::id());
    let _c = Cleanup(vec![name.clone()]);
    let mut nodes = cluster(1, 1, &["--heartbeat-period", "500ms"]);
    let worker = nodes[1].info()["node_id"].as_str().unwrap().to_string();
    nodes[0].ok(&[
        "service",
        "create",
        "--name",
        &name,
        "--mode",
        "global",
        "orc-test/busybox:1",
        "sh",
        "-c",
        "echo started; exec sleep 3600",
    ]);
    wait_for(Duration::from_secs(30), "a task on each node", || {
        (running(&nodes[0], &name) == 2).then_some(())
    });
    // control: both nodes up, both tasks' lines, no warning
    let o = nodes[0].orc(&["service", "logs", &name]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(out.matches("| started").count(), 2, "{out}");
    assert!(o.stderr.is_empty(), "{o:?}");
    // `node ps`: this node's task, or the named node's; `service ps --filter node=`.
    let manager = nodes[0].info()["node_id"].as_str().unwrap().to_string();
    for (args, node) in [
        (vec!["node", "ps"], &manager),
        (vec!["node", "ps", &worker], &worker),
        (
            vec![
                "service",
                "ps",
                &name,
                "--filter",
                &format!("node={worker}"),
            ],
            &worker,
        ),
    ] {
        let v = nodes[0].json(&args);
        let v = v.as_array().unwrap();
        assert_eq!(v.len(), 1, "{args:?}: {v:?}");
        assert_eq!(v[0]["node_id"], node.as_str(), "{args:?}: {v:?}");
        assert_eq!(v[0]["service"], name.as_str(), "{args:?}: {v:?}");
    }
    let e = nodes[0].fails(&["service", "ps", &name, "--filter", "color=red"]);
    assert!(e.contains("--filter: unknown key"), "{e}");
    // `logs -f` picks up the tasks an update starts while it follows.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_orc"))
        .arg("-H")
        .arg(nodes[0].sock())
        .args(["service", "logs", "-f", &name])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    nodes[0].ok(&["service", "update", "-d", "--env-add", "ROUND=2", &name]);
    let mut sources = std::collections::BTreeSet::new();
    let t0 = Instant::now();
    while sources.len() < 4 && t0.elapsed() < Duration::from_secs(60) {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
            if let Some((src, text)) = l.split_once('|') {
                if text.trim() == "started" {
                    sources.insert(src.trim().to_string());
                }
            }
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(
        sources.len(),
        4,
        "logs -f saw only these tasks start: {sources:?}"
    );
    wait_for(Duration::from_secs(30), "the update done", || {
        (running(&nodes[0], &name) == 2).then_some(())
    });
    nodes[1].kill();
    wait_for(Duration::from_secs(20), "the worker down", || {
        let ns = nodes[0].json(&["node", "ls"]);
        (ns.as_array()?.iter().find(|n| n["id"] == worker.as_str())?["status"] == "down")
            .then_some(())
    });
    let o = nodes[0].orc(&["service", "logs", &name]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{o:?}");
    // the manager's tasks (the update's old one too) print; the worker's do not
    assert!(
        (1..=2).contains(&out.matches("| started").count()),
        "stdout: {out}\nstderr: {err}"
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {err}");
    assert!(
        lines[0].starts_with("warning: node ")
            && lines[0].contains(&worker)
            && lines[0].contains("is down"),
        "stderr: {err}"
    );
    nodes[1].start();
    nodes[0].ok(&["service", "rm", &name]);
}
