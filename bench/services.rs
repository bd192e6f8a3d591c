//! Services benchmark: converge N replicas (default 50) on one engine, side by side
//! with the floor, N parallel `docker run` (create + start through the Engine API, all
//! at once) of the same image on the same engine. Rounds alternate floor and orc; the
//! medians and their ratio are printed (target: at most 1.2). Each round also runs the
//! floor on the bridge orc's tasks are on (`orc_default`, a user-defined bridge, which
//! Docker starts containers on more slowly than on its default bridge), after orc's
//! round has made it.
//!
//! Also: how long a task whose container is killed takes to run again, beside its
//! restart delay (target: within the delay plus one second).
//!
//! Run: `cargo bench --bench services` (needs Docker and tests/images/build.sh).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use common::*;
use orc::proto::{self, control_client::ControlClient};

const IMAGE: &str = "orc-test/busybox:1";

/// The Docker network of orc's default network, which a service without networks is on.
const ORC_BRIDGE: &str = "orc_default";

async fn floor(
    docker: &bollard::Docker,
    n: usize,
    round: usize,
    network: Option<&'static str>,
) -> Duration {
    let t0 = Instant::now();
    let mut handles = vec![];
    for i in 0..n {
        let docker = docker.clone();
        handles.push(tokio::spawn(async move {
            let name = format!("orc-bench-floor-{round}-{i}");
            let body = bollard::models::ContainerCreateBody {
                image: Some(IMAGE.to_string()),
                cmd: Some(vec!["sleep".into(), "3600".into()]),
                labels: Some([("orc.bench".to_string(), "floor".to_string())].into()),
                host_config: network.map(|n| bollard::models::HostConfig {
                    network_mode: Some(n.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let opts = CreateContainerOptionsBuilder::default().name(&name).build();
            let c = docker
                .create_container(Some(opts), body)
                .await
                .expect("create");
            docker
                .start_container(
                    &c.id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .expect("start");
            c.id
        }));
    }
    let mut ids = vec![];
    for h in handles {
        ids.push(h.await.expect("join"));
    }
    let took = t0.elapsed();
    let rm = RemoveContainerOptionsBuilder::default().force(true).build();
    for id in ids {
        let _ = docker.remove_container(&id, Some(rm.clone())).await;
    }
    took
}

async fn tasks(sock: &std::path::Path, service: &str) -> Vec<serde_json::Value> {
    let ch = orc::net::local_channel(sock).await.expect("socket");
    let r = ControlClient::new(ch)
        .max_decoding_message_size(64 << 20)
        .service_tasks(proto::ServiceRef {
            service: service.into(),
            ..Default::default()
        })
        .await
        .expect("tasks")
        .into_inner();
    r.tasks
        .into_iter()
        .map(|t| {
            orc::cli::service::Listed::try_from(t)
                .expect("task")
                .to_json()
        })
        .collect()
}

/// A spec's JSON (the store's serde form) as the wire message the control API takes.
fn wire(spec_json: &str) -> Option<proto::ServiceSpec> {
    let spec: orc::store::ServiceSpec = serde_json::from_str(spec_json).expect("spec");
    Some(spec.into())
}

async fn orc_converge(sock: &std::path::Path, n: usize, round: usize) -> Duration {
    let name = format!("bench{round}");
    let spec = serde_json::json!({
        "name": name,
        "labels": {},
        "mode": {"kind": "replicated", "replicas": n},
        "task": {
            "container": {"image": IMAGE, "entrypoint": [], "args": ["sleep", "3600"], "env": [], "labels": {},
                          "mounts": [], "user": "", "workdir": "", "healthcheck": null, "stop_grace_period_ms": 1000},
            "resources": {"reserve_nano_cpus": 0, "reserve_memory_bytes": 0, "limit_nano_cpus": 0, "limit_memory_bytes": 0},
            "restart": {"condition": "any", "delay_ms": 5000, "max_attempts": 0, "window_ms": 0},
            "placement": {"constraints": [], "preferences": [], "max_replicas_per_node": 0},
            "force_update": 0
        },
        "ports": [], "expose": [],
        "update": {"parallelism": 1, "delay_ms": 0, "failure_action": "pause", "monitor_ms": 0, "max_failure_ratio": 0.0, "order": "stop-first"},
        "rollback": {"parallelism": 1, "delay_ms": 0, "failure_action": "pause", "monitor_ms": 0, "max_failure_ratio": 0.0, "order": "stop-first"}
    });
    let t0 = Instant::now();
    let ch = orc::net::local_channel(sock).await.expect("socket");
    ControlClient::new(ch.clone())
        .create_service(proto::ServiceSpecRequest {
            service: String::new(),
            spec: wire(&spec.to_string()),
        })
        .await
        .expect("create");
    loop {
        let ts = tasks(sock, &name).await;
        if ts.iter().filter(|t| t["state"] == "running").count() >= n {
            break;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            panic!("service did not converge in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t0.elapsed();
    ControlClient::new(ch)
        .remove_service(proto::ServiceRef {
            service: name.clone(),
            ..Default::default()
        })
        .await
        .expect("rm");
    // Wait for the containers to go before the next round.
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    loop {
        let f = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&[("label", vec![format!("orc.service.name={name}")])].into())
            .build();
        if docker
            .list_containers(Some(f))
            .await
            .map(|l| l.is_empty())
            .unwrap_or(true)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    took
}

async fn restart_time(sock: &std::path::Path, delay_ms: u64) -> Duration {
    let ch = orc::net::local_channel(sock).await.expect("socket");
    let spec = format!(
        r#"{{"name":"restarter","labels":{{}},"mode":{{"kind":"replicated","replicas":1}},
        "task":{{"container":{{"image":"{IMAGE}","entrypoint":[],"args":["sleep","3600"],"env":[],"labels":{{}},"mounts":[],"user":"","workdir":"","healthcheck":null,"stop_grace_period_ms":1000}},
        "resources":{{"reserve_nano_cpus":0,"reserve_memory_bytes":0,"limit_nano_cpus":0,"limit_memory_bytes":0}},
        "restart":{{"condition":"any","delay_ms":{delay_ms},"max_attempts":0,"window_ms":0}},
        "placement":{{"constraints":[],"preferences":[],"max_replicas_per_node":0}},"force_update":0}},
        "ports":[],"expose":[],
        "update":{{"parallelism":1,"delay_ms":0,"failure_action":"pause","monitor_ms":0,"max_failure_ratio":0.0,"order":"stop-first"}},
        "rollback":{{"parallelism":1,"delay_ms":0,"failure_action":"pause","monitor_ms":0,"max_failure_ratio":0.0,"order":"stop-first"}}}}"#
    );
    ControlClient::new(ch.clone())
        .create_service(proto::ServiceSpecRequest {
            service: String::new(),
            spec: wire(&spec),
        })
        .await
        .expect("create");
    let container = loop {
        let ts = tasks(sock, "restarter").await;
        if let Some(t) = ts.iter().find(|t| t["state"] == "running") {
            break t["container_id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    let t0 = Instant::now();
    docker
        .kill_container(
            &container,
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .expect("kill");
    let took = loop {
        let ts = tasks(sock, "restarter").await;
        if ts
            .iter()
            .any(|t| t["state"] == "running" && t["container_id"] != container.as_str())
        {
            break t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    ControlClient::new(ch)
        .remove_service(proto::ServiceRef {
            service: "restarter".into(),
            ..Default::default()
        })
        .await
        .expect("rm");
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n = env_u64("ORC_BENCH_REPLICAS", 50) as usize;
    let rounds = env_u64("ORC_BENCH_ROUNDS", 3) as usize;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let nodes = cluster(1, 0, &[]);
    let sock = nodes[0].sock();
    let docker = rt.block_on(async {
        bollard::Docker::connect_with_local_defaults()
            .expect("docker")
            .negotiate_version()
            .await
            .expect("docker version")
    });
    println!("converge {n} replicas of {IMAGE} on one engine, {rounds} rounds, alternating");
    let (mut fl, mut oc, mut fb) = (vec![], vec![], vec![]);
    for r in 0..rounds {
        let f = rt.block_on(floor(&docker, n, r, None));
        let o = rt.block_on(orc_converge(&sock, n, r));
        let b = rt.block_on(floor(&docker, n, r + rounds, Some(ORC_BRIDGE)));
        println!(
            "  round {}: {n} parallel docker run {:>6} ms   orc service converged {:>6} ms   ratio {:.2}   docker run on {ORC_BRIDGE} {:>6} ms   ratio {:.2}",
            r + 1,
            f.as_millis(),
            o.as_millis(),
            o.as_secs_f64() / f.as_secs_f64(),
            b.as_millis(),
            o.as_secs_f64() / b.as_secs_f64()
        );
        fl.push(f);
        oc.push(o);
        fb.push(b);
    }
    let (f, o, b) = (median(fl), median(oc), median(fb));
    println!(
        "services: median {n} parallel docker run {} ms, orc {} ms, ratio {:.2} (aim <= 1.0; Swarm about 1.06); on orc's bridge {} ms, ratio {:.2}",
        f.as_millis(),
        o.as_millis(),
        o.as_secs_f64() / f.as_secs_f64(),
        b.as_millis(),
        o.as_secs_f64() / b.as_secs_f64()
    );
    for delay in [0u64, 1000] {
        let t = rt.block_on(restart_time(&sock, delay));
        println!(
            "restart: killed container's task running again after {} ms with restart delay {delay} ms (target <= {} ms)",
            t.as_millis(),
            delay + 1000
        );
    }
}
