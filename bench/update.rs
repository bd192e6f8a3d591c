//! Rolling-update benchmark (issue 5), on this machine's engine with one orc node:
//!
//! 1. A rolling update of N replicas (default 50) with parallelism P (default 10) and a
//!    zero monitor, stop-first, timed from `service update -d` until every task runs the
//!    new spec and the update status says `completed`; printed beside its floor,
//!    ⌈N/P⌉ × (one batch: P containers of the same image stopped and P new ones created
//!    and started, each stop followed by its start, all P at once through the Engine
//!    API on this engine, median of 5), and beside ⌈N/P⌉ × one container's stop + start
//!    (the floor this bench printed before issue 18).
//! 2. The number of failed requests from a client loop through the mesh's published port
//!    during a 4-replica start-first update of a web service with a health check (must
//!    be 0), and how many requests were made.
//!
//! Run: `cargo bench --bench update` (needs Docker and tests/images/build.sh).
//! `ORC_BENCH_REPLICAS` and `ORC_BENCH_PARALLELISM` change N and P.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptionsBuilder, StartContainerOptions,
    StopContainerOptionsBuilder,
};
use common::*;

const IMAGE: &str = "orc-test/busybox:1";

fn docker(args: &[&str]) -> String {
    let o = Command::new("docker").args(args).output().expect("docker");
    assert!(
        o.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Stop (no grace: SIGKILL at once, as the service below is configured) of a running
/// container plus create and start of a new one, through the CLI; median of 5.
fn floor_one() -> Duration {
    let run = || {
        docker(&[
            "run",
            "-d",
            "--label",
            "orc.bench=update",
            IMAGE,
            "sleep",
            "3600",
        ])
    };
    let mut v = vec![];
    let mut running = run();
    for _ in 0..5 {
        let t0 = Instant::now();
        docker(&["stop", "-t", "0", &running]);
        let next = run();
        v.push(t0.elapsed());
        docker(&["rm", "-f", &running]);
        running = next;
    }
    docker(&["rm", "-f", &running]);
    v.sort();
    v[v.len() / 2]
}

async fn create_started(docker: &bollard::Docker) -> String {
    let body = bollard::models::ContainerCreateBody {
        image: Some(IMAGE.to_string()),
        cmd: Some(vec!["sleep".into(), "3600".into()]),
        labels: Some([("orc.bench".to_string(), "update".to_string())].into()),
        ..Default::default()
    };
    let c = docker
        .create_container(None::<CreateContainerOptions>, body)
        .await
        .expect("create");
    docker
        .start_container(&c.id, None::<StartContainerOptions>)
        .await
        .expect("start");
    c.id
}

/// One batch at the engine's own pace: `p` running containers each stopped (SIGKILL at
/// once) and followed by a new one created and started, all `p` at once through the
/// Engine API; median of 5 batches.
async fn floor_batch(docker: &bollard::Docker, p: usize) -> Duration {
    let mut running = vec![];
    for _ in 0..p {
        running.push(create_started(docker).await);
    }
    let mut v = vec![];
    for _ in 0..5 {
        let t0 = Instant::now();
        let batch: Vec<_> = running
            .iter()
            .map(|id| {
                let (docker, id) = (docker.clone(), id.clone());
                tokio::spawn(async move {
                    let stop = StopContainerOptionsBuilder::default().t(0).build();
                    docker.stop_container(&id, Some(stop)).await.expect("stop");
                    create_started(&docker).await
                })
            })
            .collect();
        let mut next = vec![];
        for h in batch {
            next.push(h.await.expect("join"));
        }
        v.push(t0.elapsed());
        let rm = RemoveContainerOptionsBuilder::default().force(true).build();
        for id in std::mem::replace(&mut running, next) {
            let _ = docker.remove_container(&id, Some(rm.clone())).await;
        }
    }
    let rm = RemoveContainerOptionsBuilder::default().force(true).build();
    for id in running {
        let _ = docker.remove_container(&id, Some(rm.clone())).await;
    }
    v.sort();
    v[v.len() / 2]
}

fn tasks(node: &Node, service: &str) -> Vec<serde_json::Value> {
    let o = node.orc(&["service", "ps", service, "--format", "json"]);
    serde_json::from_slice(&o.stdout).unwrap_or_default()
}

fn update_state(node: &Node, service: &str) -> String {
    let v = node.json(&["service", "inspect", service]);
    v[0]["update_status"]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn wait_update(node: &Node, service: &str, replicas: usize, within: Duration) {
    wait_for(within, "the update to complete", || {
        let up = tasks(node, service)
            .iter()
            .filter(|t| t["state"] == "running" && t["up_to_date"] == true)
            .count();
        (up == replicas && update_state(node, service) == "completed").then_some(())
    });
}

fn rolling_update(node: &Node, n: usize, p: usize) -> Duration {
    let name = format!("upd{}", std::process::id());
    let _gone = RemoveContainers(vec![name.clone()]);
    node.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        &name,
        "--replicas",
        &n.to_string(),
        "--update-parallelism",
        &p.to_string(),
        "--update-monitor",
        "0s",
        "--stop-grace-period",
        "0s",
        IMAGE,
        "sleep",
        "3600",
    ]);
    wait_for(Duration::from_secs(300), "replicas running", || {
        let running = tasks(node, &name)
            .iter()
            .filter(|t| t["state"] == "running")
            .count();
        (running == n).then_some(())
    });
    let t0 = Instant::now();
    node.ok(&["service", "update", "-d", "--env-add", "V=2", &name]);
    wait_update(node, &name, n, Duration::from_secs(600));
    let took = t0.elapsed();
    node.ok(&["service", "rm", &name]);
    took
}

fn http_ok(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    s.read_to_string(&mut body).is_ok() && body.contains("200 OK")
}

fn update_under_load(node: &Node) -> (u64, u64) {
    let name = format!("web{}", std::process::id());
    let _gone = RemoveContainers(vec![name.clone()]);
    let port = free_port();
    node.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        &name,
        "--replicas",
        "4",
        "-p",
        &format!("{port}:80"),
        "--update-order",
        "start-first",
        "--update-parallelism",
        "1",
        "--update-monitor",
        "1s",
        "orc-test/web:1",
    ]);
    wait_for(Duration::from_secs(120), "4 healthy web tasks", || {
        let ts = tasks(node, &name);
        (ts.iter()
            .filter(|t| t["state"] == "running" && t["health"] == "healthy")
            .count()
            == 4)
            .then_some(())
    });
    let addr = format!("127.0.0.1:{port}");
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    if http_ok(&addr) {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    node.ok(&["service", "update", "-d", "--env-add", "V=2", &name]);
    wait_update(node, &name, 4, Duration::from_secs(300));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for c in clients {
        let (o, f) = c.join().unwrap();
        ok += o;
        failed += f;
    }
    node.ok(&["service", "rm", &name]);
    (ok, failed)
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n = env_u64("ORC_BENCH_REPLICAS", 50) as usize;
    let p = env_u64("ORC_BENCH_PARALLELISM", 10) as usize;
    let nodes = cluster(1, 0, &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let batch = rt.block_on(async {
        let docker = bollard::Docker::connect_with_local_defaults()
            .expect("docker")
            .negotiate_version()
            .await
            .expect("docker version");
        floor_batch(&docker, p).await
    });
    let one = floor_one();
    let took = rolling_update(&nodes[0], n, p);
    let batches = n.div_ceil(p);
    let floor = batch * batches as u32;
    println!(
        "rolling update of {n} replicas, parallelism {p}, monitor 0: {} ms; floor {batches} x (a batch of {p} stop + start at once {} ms) = {} ms; ratio {:.2} (aim <= 1.5)",
        took.as_millis(),
        batch.as_millis(),
        floor.as_millis(),
        took.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "  beside {batches} x (one container's stop + start through the CLI {} ms) = {} ms: ratio {:.2}",
        one.as_millis(),
        (one * batches as u32).as_millis(),
        took.as_secs_f64() / (one * batches as u32).as_secs_f64()
    );
    let (ok, failed) = update_under_load(&nodes[0]);
    println!(
        "start-first update of 4 replicas under a request loop through the mesh: {failed} failed of {} requests (must be 0)",
        ok + failed
    );
}
