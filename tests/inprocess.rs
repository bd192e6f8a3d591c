//! Level 2 with tasks: a cluster of daemons inside this test process, each running its
//! tasks on its own in-memory `FakeExecutor` (the one fake of the executor seam).
//! Everything else is real: sockets, mTLS, Raft on sled, the leader's orchestrator,
//! scheduler and dispatcher, the worker sessions and task runners. Node loss and
//! container deaths are driven from the test.

use std::sync::Arc;
use std::time::Duration;

use orc::agent::fake::FakeExecutor;
use orc::daemon::{Daemon, DaemonConfig, RaftTimings};
use orc::proto::{self, control_client::ControlClient, local_client::LocalClient};
use tokio_util::sync::CancellationToken;

struct Node {
    _dir: tempfile::TempDir,
    sock: std::path::PathBuf,
    port: u16,
    fake: Arc<FakeExecutor>,
    daemon: Daemon,
    stop: CancellationToken,
}

#[path = "common/ports.rs"]
mod ports;
use ports::free_port;

async fn start() -> Node {
    start_with(Default::default()).await
}

/// A daemon declaring `generic_resources` (`--node-generic-resource`).
async fn start_with(generic_resources: std::collections::BTreeMap<String, u64>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("orc.sock");
    let fake = Arc::new(FakeExecutor::new());
    let cfg = DaemonConfig {
        data_dir: dir.path().join("data"),
        socket: sock.clone(),
        docker_host: None,
        raft: RaftTimings::default(),
        executor: Some(fake.clone()),
        min_cert_expiry_secs: 3600,
        data_path_port: 0,
        generic_resources,
        metrics: false,
        dashboard_addr: None,
    };
    let stop = CancellationToken::new();
    let listener = orc::net::bind_local(&sock).unwrap();
    let daemon = Daemon::open(cfg, stop.clone()).await.unwrap();
    let incoming = orc::net::local_incoming(listener, stop.clone());
    let router = orc::api::local_router(daemon.clone());
    tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned()));
    Node {
        _dir: dir,
        sock,
        port: free_port(),
        fake,
        daemon,
        stop,
    }
}

impl Node {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    async fn local(&self) -> LocalClient<tonic::transport::Channel> {
        LocalClient::new(orc::net::local_channel(&self.sock).await.unwrap())
    }
    async fn control(&self) -> ControlClient<tonic::transport::Channel> {
        ControlClient::new(orc::net::local_channel(&self.sock).await.unwrap())
    }
    async fn tasks(&self, service: &str) -> Vec<serde_json::Value> {
        let r = self
            .control()
            .await
            .service_tasks(proto::ServiceRef {
                service: service.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        r.tasks
            .into_iter()
            .map(|t| orc::cli::service::Listed::try_from(t).unwrap().to_json())
            .collect()
    }
    fn running_containers(&self) -> usize {
        self.fake
            .containers()
            .iter()
            .filter(|c| c.state.running)
            .count()
    }
    /// Power loss, as far as a process can fake it: everything stops at once.
    async fn halt(&self) {
        self.stop.cancel();
        self.daemon.shutdown().await;
    }
}

async fn wait<T>(within: Duration, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A spec's JSON (the store's serde form) as the wire message the control API takes.
fn wire(spec_json: &str) -> Option<proto::ServiceSpec> {
    let spec: orc::store::ServiceSpec = serde_json::from_str(spec_json).unwrap();
    Some(spec.into())
}

fn spec(name: &str, replicas: u64, restart_delay_ms: u64) -> String {
    let mut s: serde_json::Value =
        serde_json::from_str(include_str!("spec_template.json")).unwrap();
    s["name"] = name.into();
    s["mode"]["replicas"] = replicas.into();
    s["task"]["restart"]["delay_ms"] = restart_delay_ms.into();
    s.to_string()
}

async fn three_nodes() -> Vec<Node> {
    three_nodes_with([0, 0, 0]).await
}

/// Three nodes, the first the manager, each declaring `gpus[i]` GPUs.
async fn three_nodes_with(gpus: [u64; 3]) -> Vec<Node> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut nodes = vec![];
    for n in gpus {
        let res = (n > 0)
            .then(|| ("gpu".to_string(), n))
            .into_iter()
            .collect();
        nodes.push(start_with(res).await);
    }
    nodes[0]
        .local()
        .await
        .init(proto::InitRequest {
            advertise_addr: nodes[0].addr(),
            heartbeat_period_ms: 300,
            ..Default::default()
        })
        .await
        .unwrap();
    let token = nodes[0]
        .control()
        .await
        .join_token(proto::JoinTokenRequest {
            role: "worker".into(),
            rotate: false,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    for n in &nodes[1..] {
        n.local()
            .await
            .join(proto::JoinRequest {
                token: token.clone(),
                remote_addr: nodes[0].addr(),
                advertise_addr: n.addr(),
                listen_addr: String::new(),
            })
            .await
            .unwrap();
    }
    let m = &nodes[0];
    wait(Duration::from_secs(20), "3 ready nodes", async || {
        let ns = m
            .control()
            .await
            .list_nodes(proto::Empty {})
            .await
            .ok()?
            .into_inner()
            .nodes;
        (ns.len() == 3 && ns.iter().all(|n| n.status == "ready")).then_some(())
    })
    .await;
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containers_that_exit_are_replaced_after_the_delay_and_lost_nodes_at_once() {
    let nodes = three_nodes().await;
    let m = &nodes[0];
    m.control()
        .await
        .create_service(proto::ServiceSpecRequest {
            service: String::new(),
            spec: wire(&spec("app", 6, 2000)),
        })
        .await
        .unwrap();
    wait(
        Duration::from_secs(20),
        "6 running tasks, 2 per node",
        async || {
            let per: Vec<usize> = nodes.iter().map(|n| n.running_containers()).collect();
            (per == [2, 2, 2]).then_some(())
        },
    )
    .await;

    // A container exits non-zero: its task fails and is replaced after the 2 s delay.
    let victim = nodes[1]
        .fake
        .containers()
        .into_iter()
        .find(|c| c.state.running)
        .unwrap();
    let t0 = tokio::time::Instant::now();
    nodes[1].fake.exit(&victim.id, 3);
    wait(
        Duration::from_secs(20),
        "failed task replaced",
        async || {
            let ts = m.tasks("app").await;
            let failed = ts.iter().any(|t| {
                t["state"] == "failed" && t["message"].as_str().unwrap_or("").contains("code 3")
            });
            let live = ts
                .iter()
                .filter(|t| t["state"] == "running" && t["desired_state"] == "running")
                .count();
            (failed && live == 6).then_some(())
        },
    )
    .await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(2000),
        "replaced before its restart delay: {took:?}"
    );
    eprintln!("exited container's task running again after {took:?} (delay 2 s)");

    // Node 2 is lost: its tasks run elsewhere at once, without the restart delay.
    nodes[2].halt().await;
    let t0 = tokio::time::Instant::now();
    wait(
        Duration::from_secs(20),
        "tasks of the lost node replaced",
        async || {
            let ts = m.tasks("app").await;
            let live: Vec<_> = ts
                .iter()
                .filter(|t| t["state"] == "running" && t["desired_state"] == "running")
                .collect();
            (live.len() == 6 && nodes[0].running_containers() + nodes[1].running_containers() == 6)
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "lost node's tasks running elsewhere after {:?}",
        t0.elapsed()
    );
    let per = (nodes[0].running_containers(), nodes[1].running_containers());
    assert_eq!(per, (3, 3), "spread over the two nodes left");
}

/// `NodeApi.ImageSave` with the nodes' real certificates: a node gets an image only for
/// a task of its own, saved by the id the service's image is pinned to; a removed node
/// gets nothing. Each refusal beside a call that succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn image_save_serves_a_node_only_its_own_tasks_images_by_their_pin() {
    use futures::StreamExt;
    use orc::proto::node_api_client::NodeApiClient;

    let nodes = three_nodes().await;
    let m = &nodes[0];
    let mut c = m.control().await;
    c.create_service(proto::ServiceSpecRequest {
        service: String::new(),
        spec: wire(&spec("app", 3, 1000)),
    })
    .await
    .unwrap();
    wait(
        Duration::from_secs(20),
        "one app task per node",
        async || {
            let per: Vec<usize> = nodes.iter().map(|n| n.running_containers()).collect();
            (per == [1, 1, 1]).then_some(())
        },
    )
    .await;
    let mut solo: serde_json::Value = serde_json::from_str(&spec("solo", 1, 1000)).unwrap();
    solo["task"]["container"]["image"] = "secret/solo:1".into();
    c.create_service(proto::ServiceSpecRequest {
        service: String::new(),
        spec: wire(&solo.to_string()),
    })
    .await
    .unwrap();
    let holder = wait(Duration::from_secs(20), "solo running", async || {
        nodes.iter().position(|n| n.running_containers() == 2)
    })
    .await;

    // The first task that ran pinned app's image; inspect shows it.
    let pinned = orc::agent::fake::image_id_of("fake/image:1");
    let inspect = |name: &'static str| {
        let mut c = c.clone();
        async move {
            let r = c
                .inspect_service(proto::ServiceRef {
                    service: name.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            orc::cli::service::Inspected::try_from(r).unwrap().to_json()
        }
    };
    let svc = wait(Duration::from_secs(10), "app pinned", async || {
        let v = inspect("app").await;
        (!v["image_digest"].is_null()).then_some(v)
    })
    .await;
    assert_eq!(svc["image_digest"]["id"], pinned.as_str(), "{svc:#}");
    assert_eq!(svc["image_digest"]["image"], "fake/image:1");

    // A worker without a task of solo asks solo's node for solo's image: refused.
    let caller = if holder == 0 { 1 } else { 3 - holder };
    let ch = nodes[caller]
        .daemon
        .peers()
        .node_channel(&nodes[holder].addr())
        .unwrap();
    let mut api = NodeApiClient::new(ch);
    let e = api
        .image_save(proto::ImageRequest {
            image: "secret/solo:1".into(),
        })
        .await
        .expect_err("not its task's image");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        e.message()
            .contains("has no task that uses image secret/solo:1"),
        "{e:?}"
    );
    // Control: its own task's image is sent, saved by the pinned id.
    let r = api
        .image_save(proto::ImageRequest {
            image: "fake/image:1".into(),
        })
        .await
        .expect("its own task's image");
    assert_eq!(
        r.metadata()
            .get("orc-image-id")
            .and_then(|v| v.to_str().ok()),
        Some(pinned.as_str())
    );
    let mut tar = vec![];
    let mut s = r.into_inner();
    while let Some(chunk) = s.next().await {
        tar.extend(chunk.unwrap().data);
    }
    assert_eq!(
        String::from_utf8(tar).unwrap(),
        format!("fake-image-tar {pinned} "),
        "saved by id, with no tag"
    );
    // A reference over 512 bytes is refused at the door.
    let e = api
        .image_save(proto::ImageRequest {
            image: "a".repeat(513),
        })
        .await
        .expect_err("too long");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    // The caller is removed from the cluster: its own task's image is refused too.
    let caller_id = nodes[caller].daemon.member().unwrap().node_id.to_string();
    c.remove_node(proto::RemoveNodeRequest {
        node: caller_id,
        force: true,
    })
    .await
    .unwrap();
    let e = wait(
        Duration::from_secs(10),
        "the removed node refused",
        async || {
            api.image_save(proto::ImageRequest {
                image: "fake/image:1".into(),
            })
            .await
            .err()
        },
    )
    .await;
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
}

/// One manager that runs its own tasks.
async fn one_node() -> Node {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n = start().await;
    n.local()
        .await
        .init(proto::InitRequest {
            advertise_addr: n.addr(),
            heartbeat_period_ms: 300,
            ..Default::default()
        })
        .await
        .unwrap();
    n
}

fn net_ref(name: &str) -> proto::NetworkRef {
    proto::NetworkRef {
        network: name.into(),
    }
}

/// The control API's networks over the local socket: created once, listed with the
/// built-in one first, named by services (by name, stored by id), inspected with their
/// services' tasks, and removed only once no service is on them. Each refusal beside a
/// call that succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn networks_are_made_joined_inspected_and_removed_only_when_unused() {
    let m = one_node().await;
    let mut c = m.control().await;
    let net = |name: &str, internal: bool| proto::NetworkSpec {
        name: name.into(),
        internal,
        ..Default::default()
    };
    let back = c
        .create_network(net("back", false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.id.len(), 16);
    c.create_network(net("vault", true)).await.unwrap();
    let e = c.create_network(net("back", true)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert_eq!(e.message(), "network back already exists");
    let e = c.create_network(net("no way", false)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().starts_with("name: \"no way\""),
        "{}",
        e.message()
    );

    let names = |r: proto::ListNetworksResponse| -> Vec<String> {
        r.networks
            .into_iter()
            .map(|v| v.network.unwrap().spec.unwrap().name)
            .collect()
    };
    let list = c.list_networks(proto::Empty {}).await.unwrap().into_inner();
    assert_eq!(names(list), ["default", "back", "vault"]);

    // A service names networks by name; an unknown name is refused, naming it.
    let on = |name: &str, nets: serde_json::Value, ports: serde_json::Value| {
        let mut s: serde_json::Value = serde_json::from_str(&spec(name, 1, 100)).unwrap();
        s["networks"] = nets;
        s["ports"] = ports;
        wire(&s.to_string())
    };
    let no_ports = serde_json::json!([]);
    let e = c
        .create_service(proto::ServiceSpecRequest {
            service: String::new(),
            spec: on(
                "api",
                serde_json::json!([{"network": "nope"}]),
                no_ports.clone(),
            ),
        })
        .await
        .unwrap_err();
    assert_eq!(e.message(), "networks: network nope not found");
    let published = serde_json::json!([{"protocol": "tcp", "target": 80, "published": 8080, "mode": "ingress"}]);
    let e = c
        .create_service(proto::ServiceSpecRequest {
            service: String::new(),
            spec: on("safe", serde_json::json!([{"network": "vault"}]), published),
        })
        .await
        .unwrap_err();
    assert!(
        e.message()
            .starts_with("ports: service safe is only on internal networks (vault)"),
        "{}",
        e.message()
    );
    c.create_service(proto::ServiceSpecRequest {
        service: String::new(),
        spec: on(
            "api",
            serde_json::json!([{"network": "back", "aliases": ["db"]}]),
            no_ports,
        ),
    })
    .await
    .unwrap();

    // Inspect: the service's networks by name, its tasks on the network.
    let svc = c
        .inspect_service(proto::ServiceRef {
            service: "api".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let stored = svc.service.as_ref().unwrap().spec.as_ref().unwrap();
    assert_eq!(stored.networks[0].network, back.id, "stored by id");
    let vip = svc.service.as_ref().unwrap().vip.clone();
    assert_eq!(svc.networks.len(), 1);
    assert_eq!(
        (
            svc.networks[0].name.as_str(),
            svc.networks[0].id.as_str(),
            svc.networks[0].aliases.clone(),
            svc.networks[0].vip.as_str()
        ),
        (
            "back",
            back.id.as_str(),
            vec!["db".to_string()],
            vip.as_str()
        )
    );
    let view = wait(
        Duration::from_secs(20),
        "api's task running on back",
        async || {
            let v = m
                .control()
                .await
                .inspect_network(net_ref("back"))
                .await
                .ok()?
                .into_inner();
            let running = proto::TaskState::Running as i32;
            (v.tasks.len() == 1 && v.tasks[0].state == running).then_some(v)
        },
    )
    .await;
    assert_eq!(view.services, ["api"]);
    assert_eq!(view.tasks[0].service, "api");
    assert!(!view.tasks[0].vip.is_empty() && !view.tasks[0].node_id.is_empty());
    let json = orc::cli::network::Viewed::try_from(view)
        .unwrap()
        .to_inspect_json();
    for key in [
        "id",
        "name",
        "driver",
        "scope",
        "internal",
        "attachable",
        "encrypted",
        "labels",
        "created",
        "services",
        "tasks",
    ] {
        assert!(json.get(key).is_some(), "no {key} in {json}");
    }
    assert_eq!(json["scope"], "swarm");
    assert_eq!(json["tasks"][0]["state"], "running");

    // In use: refused naming the service; the built-in one never.
    let e = c.remove_network(net_ref("back")).await.unwrap_err();
    assert_eq!(e.message(), "network back is in use by service api");
    let e = c.remove_network(net_ref("default")).await.unwrap_err();
    assert!(
        e.message().contains("built-in network cannot be removed"),
        "{}",
        e.message()
    );
    c.remove_network(net_ref("vault")).await.unwrap();
    c.remove_service(proto::ServiceRef {
        service: "api".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.remove_network(net_ref(&back.id)).await.unwrap();
    let list = c.list_networks(proto::Empty {}).await.unwrap().into_inner();
    assert_eq!(names(list), ["default"]);
    let e = c.inspect_network(net_ref("back")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    m.halt().await;
}

/// A stack's networks over the control API: the deploy makes `STACK_default` and the
/// file's networks in its one entry, a redeploy leaves them, a missing external network
/// refuses the deploy whole, and `stack rm` removes them after the services.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stack_makes_its_networks_and_stack_rm_removes_them() {
    let m = one_node().await;
    let mut c = m.control().await;
    let load = |text: &str| {
        let read = |p: &std::path::Path| match p.to_str() {
            Some("stack.yml") => Ok(text.to_string()),
            _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        orc::stack::load(&["stack.yml".into()], "shop", &Default::default(), &read).unwrap()
    };
    let request = |s: &orc::stack::Stack| proto::StackRequest {
        name: s.name.clone(),
        services: s.services.iter().cloned().map(Into::into).collect(),
        networks: s
            .networks
            .iter()
            .map(|n| proto::StackNetwork {
                spec: Some(n.spec.clone().into()),
                external: n.external,
            })
            .collect(),
        ..Default::default()
    };
    let text = "services:\n  web: {image: 'fake/image:1', networks: {front: {aliases: [www]}}}\n  db: {image: 'fake/image:1'}\nnetworks:\n  front: {}\n";
    let s = load(text);
    let plan = c.deploy_stack(request(&s)).await.unwrap().into_inner();
    let made: Vec<(String, i32)> = plan
        .networks
        .iter()
        .map(|n| (n.network.clone(), n.action))
        .collect();
    let create = proto::PlanAction::Create as i32;
    assert_eq!(
        made,
        [
            ("shop_default".to_string(), create),
            ("shop_front".to_string(), create)
        ]
    );
    let list = c.list_networks(proto::Empty {}).await.unwrap().into_inner();
    let front = list
        .networks
        .iter()
        .find(|v| v.network.as_ref().unwrap().spec.as_ref().unwrap().name == "shop_front")
        .expect("shop_front made");
    assert_eq!(front.services, ["shop_web"]);
    // The same files again: nothing changes.
    let again = c.deploy_stack(request(&s)).await.unwrap().into_inner();
    let unchanged = proto::PlanAction::Unchanged as i32;
    assert!(
        again.networks.iter().all(|n| n.action == unchanged),
        "{again:?}"
    );
    assert!(
        again.actions.iter().all(|a| a.action == unchanged),
        "{again:?}"
    );
    // A missing external network: refused whole, nothing made.
    let ext = load("services:\n  web: {image: 'fake/image:1', networks: [corp]}\n  extra: {image: 'fake/image:1'}\nnetworks:\n  corp: {external: true}\n");
    let e = c.deploy_stack(request(&ext)).await.unwrap_err();
    assert!(
        e.message().contains("external network corp not found"),
        "{}",
        e.message()
    );
    let svcs = c
        .list_services(proto::Empty {})
        .await
        .unwrap()
        .into_inner()
        .services;
    assert_eq!(svcs.len(), 2, "nothing made by the refused deploy");
    // stack rm: the services, then the networks.
    let plan = c
        .remove_stack(proto::StackRequest {
            name: "shop".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let gone: Vec<&str> = plan.networks.iter().map(|n| n.network.as_str()).collect();
    assert_eq!(gone, ["shop_default", "shop_front"]);
    let list = c.list_networks(proto::Empty {}).await.unwrap().into_inner();
    assert_eq!(list.networks.len(), 1, "only the built-in network is left");
    m.halt().await;
}

/// Nodes declare generic resources (`--node-generic-resource gpu=N`): `node inspect`
/// shows them, and tasks reserving one land only where one is free, never over-commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_reserving_a_gpu_land_only_on_nodes_with_one_free() {
    let nodes = three_nodes_with([0, 1, 2]).await;
    let m = &nodes[0];
    let gpus = wait(Duration::from_secs(20), "declared gpus", async || {
        let ns = m
            .control()
            .await
            .list_nodes(proto::Empty {})
            .await
            .ok()?
            .into_inner()
            .nodes;
        let mut g: Vec<u64> = ns
            .iter()
            .map(|n| n.generic_resources.get("gpu").copied().unwrap_or(0))
            .collect();
        g.sort();
        (g == [0, 1, 2]).then_some(ns)
    })
    .await;
    let json = orc::cli::node::node_json(&gpus[0]);
    assert!(json["generic_resources"].is_object(), "{json}");

    let mut s: serde_json::Value = serde_json::from_str(&spec("train", 4, 1000)).unwrap();
    s["task"]["resources"]["generic_resources"] = serde_json::json!({"gpu": 1});
    m.control()
        .await
        .create_service(proto::ServiceSpecRequest {
            service: String::new(),
            spec: wire(&s.to_string()),
        })
        .await
        .unwrap();
    wait(
        Duration::from_secs(20),
        "3 tasks running on the GPU nodes, 1 pending for lack of a GPU",
        async || {
            let per: Vec<usize> = nodes.iter().map(|n| n.running_containers()).collect();
            let ts = m.tasks("train").await;
            let pending = ts.iter().any(|t| {
                t["state"] == "pending"
                    && t["message"].as_str().unwrap_or("") == "no suitable node: 3 lacked gpu"
            });
            (per == [0, 1, 2] && pending).then_some(())
        },
    )
    .await;
}

/// `orc init --force-new-cluster`: three managers and two workers; the two managers
/// that are not the survivor are lost; the survivor refuses while the cluster had its
/// quorum and on a worker, then becomes the only manager with the state, the workers'
/// containers untouched; a fresh manager joins and writes go through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_surviving_manager_forces_a_new_cluster_and_no_container_restarts() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut nodes = vec![];
    for _ in 0..5 {
        nodes.push(start().await);
    }
    nodes[0]
        .local()
        .await
        .init(proto::InitRequest {
            advertise_addr: nodes[0].addr(),
            heartbeat_period_ms: 300,
            ..Default::default()
        })
        .await
        .unwrap();
    let token = async |role: &str, n: &Node| {
        n.control()
            .await
            .join_token(proto::JoinTokenRequest {
                role: role.into(),
                rotate: false,
            })
            .await
            .unwrap()
            .into_inner()
            .token
    };
    let (mt, wt) = (
        token("manager", &nodes[0]).await,
        token("worker", &nodes[0]).await,
    );
    for (i, t) in [(1, &mt), (2, &mt), (3, &wt), (4, &wt)] {
        nodes[i]
            .local()
            .await
            .join(proto::JoinRequest {
                token: t.clone(),
                remote_addr: nodes[0].addr(),
                advertise_addr: nodes[i].addr(),
                listen_addr: String::new(),
            })
            .await
            .unwrap();
    }
    let list = async |n: &Node| -> Option<Vec<proto::NodeInfo>> {
        Some(
            n.control()
                .await
                .list_nodes(proto::Empty {})
                .await
                .ok()?
                .into_inner()
                .nodes,
        )
    };
    let ns = wait(Duration::from_secs(30), "5 ready nodes", async || {
        let ns = list(&nodes[0]).await?;
        (ns.len() == 5
            && ns
                .iter()
                .all(|n| n.status == "ready" && n.manager_status != "unreachable"))
        .then_some(ns)
    })
    .await;
    let id_of = |i: usize| {
        ns.iter()
            .find(|n| n.address == nodes[i].addr())
            .unwrap()
            .id
            .clone()
    };
    let ids: Vec<String> = (0..5).map(id_of).collect();

    let mut app: orc::store::ServiceSpec = serde_json::from_str(&spec("app", 4, 1000)).unwrap();
    app.task.placement.constraints =
        vec![orc::store::Constraint::parse("constraint", "node.role==worker").unwrap()];
    nodes[0]
        .control()
        .await
        .create_service(proto::ServiceSpecRequest {
            service: String::new(),
            spec: Some(app.into()),
        })
        .await
        .unwrap();
    wait(
        Duration::from_secs(30),
        "2 tasks on each worker",
        async || {
            (nodes[3].running_containers() == 2 && nodes[4].running_containers() == 2).then_some(())
        },
    )
    .await;
    let before: Vec<_> = [3, 4]
        .iter()
        .flat_map(|&i| nodes[i].fake.containers())
        .map(|c| (c.id, c.starts, c.state.running))
        .collect();

    let force = async |n: &Node| {
        n.local()
            .await
            .init(proto::InitRequest {
                advertise_addr: n.addr(),
                force_new_cluster: true,
                ..Default::default()
            })
            .await
    };
    // Refused with the quorum alive, and on a worker.
    let e = force(&nodes[2]).await.unwrap_err();
    assert!(e.message().contains("still has a quorum"), "{e:?}");
    let e = force(&nodes[3]).await.unwrap_err();
    assert!(e.message().contains("worker"), "{e:?}");

    // Managers 0 (the leader) and 1 are lost.
    nodes[0].halt().await;
    nodes[1].halt().await;
    let r = force(&nodes[2]).await.unwrap().into_inner();
    let mut removed = r.removed_managers.clone();
    removed.sort();
    let mut lost = vec![ids[0].clone(), ids[1].clone()];
    lost.sort();
    assert_eq!(removed, lost);
    assert_eq!(r.node_id, ids[2]);

    let survivor = &nodes[2];
    wait(
        Duration::from_secs(30),
        "the survivor leads 3 ready nodes",
        async || {
            let ns = list(survivor).await?;
            let mut seen: Vec<(String, String, String)> = ns
                .iter()
                .map(|n| (n.id.clone(), n.status.clone(), n.manager_status.clone()))
                .collect();
            seen.sort();
            let mut want = vec![
                (ids[2].clone(), "ready".into(), "leader".into()),
                (ids[3].clone(), "ready".into(), String::new()),
                (ids[4].clone(), "ready".into(), String::new()),
            ];
            want.sort();
            (seen == want).then_some(())
        },
    )
    .await;

    // A fresh manager joins with the printed token; a write goes through it.
    assert_eq!(r.manager_token, token("manager", survivor).await);
    let fresh = start().await;
    fresh
        .local()
        .await
        .join(proto::JoinRequest {
            token: r.manager_token.clone(),
            remote_addr: survivor.addr(),
            advertise_addr: fresh.addr(),
            listen_addr: String::new(),
        })
        .await
        .unwrap();
    fresh
        .control()
        .await
        .update_node(proto::UpdateNodeRequest {
            node: ids[3].clone(),
            labels_add: [("recovered".to_string(), "yes".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    wait(
        Duration::from_secs(30),
        "4 ready nodes, 2 managers",
        async || {
            let ns = list(survivor).await?;
            let managers = ns.iter().filter(|n| n.role == "manager").count();
            let labelled = ns.iter().any(|n| {
                n.id == ids[3] && n.labels.get("recovered").map(String::as_str) == Some("yes")
            });
            (ns.len() == 4 && managers == 2 && labelled && ns.iter().all(|n| n.status == "ready"))
                .then_some(())
        },
    )
    .await;

    // Every container of the workers is the one of before, started once.
    let after: Vec<_> = [3, 4]
        .iter()
        .flat_map(|&i| nodes[i].fake.containers())
        .map(|c| (c.id, c.starts, c.state.running))
        .collect();
    assert_eq!(after, before);
    assert!(before
        .iter()
        .all(|(_, starts, running)| *starts == 1 && *running));
}

/// `NodeApi.VolumeSave` with the nodes' real certificates: a drained node's following
/// volume reaches the node that takes its slot over (the positive control, through
/// the managers' grant); a node without that slot's task, the new holder once its task
/// started, and a path for a name are refused. `NodeApi.Volumes` answers managers only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volume_save_serves_a_following_volume_only_to_the_node_taking_its_slot_over() {
    use orc::proto::node_api_client::NodeApiClient;

    let nodes = three_nodes().await;
    let roots: Vec<tempfile::TempDir> = nodes
        .iter()
        .map(|n| {
            let d = tempfile::tempdir().unwrap();
            n.fake.with_volumes(d.path());
            d
        })
        .collect();
    let mut c = nodes[0].control().await;
    let mut db: serde_json::Value = serde_json::from_str(&spec("db", 1, 1000)).unwrap();
    db["task"]["container"]["mounts"] = serde_json::json!([{
        "kind": "volume", "source": "pgdata", "target": "/data", "readonly": false,
        "follow": true
    }]);
    db["update"]["monitor_ms"] = 500.into();
    let id = c
        .create_service(proto::ServiceSpecRequest {
            service: String::new(),
            spec: wire(&db.to_string()),
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let holder = wait(Duration::from_secs(20), "db running", async || {
        nodes.iter().position(|n| n.running_containers() == 1)
    })
    .await;
    // The database writes (the fake engine's volume is a directory).
    let vol = roots[holder].path().join("pgdata");
    std::fs::create_dir_all(vol.join("rows")).unwrap();
    std::fs::write(vol.join("rows/1"), b"one").unwrap();
    // Drained: the task moves, and its data with it, through VolumeSave.
    let holder_id = nodes[holder].daemon.member().unwrap().node_id.to_string();
    c.update_node(proto::UpdateNodeRequest {
        node: holder_id,
        availability: "drain".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let new = wait(
        Duration::from_secs(30),
        "db running elsewhere",
        async || (0..3).find(|i| *i != holder && nodes[*i].running_containers() == 1),
    )
    .await;
    assert_eq!(
        std::fs::read(roots[new].path().join("pgdata/rows/1")).unwrap(),
        b"one",
        "the row moved with the task"
    );

    let req = |volume: &str| proto::VolumeRequest {
        service_id: id.clone(),
        slot: 1,
        volume: volume.into(),
        offset: 0,
        fingerprint: String::new(),
    };
    let api = |from: usize, to: usize| {
        let ch = nodes[from]
            .daemon
            .peers()
            .node_channel(&nodes[to].addr())
            .unwrap();
        NodeApiClient::new(ch)
    };
    // The third node has no task of the slot.
    let third = (0..3).find(|i| *i != holder && *i != new).unwrap();
    let e = api(third, holder)
        .volume_save(req("pgdata"))
        .await
        .expect_err("not its slot");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("has no task of slot 1"), "{e:?}");
    // The new holder, once its task started, gets no second copy.
    let e = api(new, holder)
        .volume_save(req("pgdata"))
        .await
        .expect_err("already started");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    // A path for a name is refused at the door.
    let e = api(new, holder)
        .volume_save(req("../../etc"))
        .await
        .expect_err("a path");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    // Volumes: a worker is refused; the manager is answered (with the moved volume).
    let worker = (1..3).next().unwrap();
    let e = api(worker, new)
        .volumes(proto::Empty {})
        .await
        .expect_err("a worker");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let listed = api(0, new)
        .volumes(proto::Empty {})
        .await
        .expect("the manager")
        .into_inner();
    let pg = listed
        .volumes
        .iter()
        .find(|v| v.name == "pgdata")
        .expect("pgdata listed");
    assert!(pg.size_known && pg.bytes == 3, "{pg:?}");
}

/// Group commit: writes proposed at the same time share Raft entries, and each still
/// gets its own answer (a rejected write among them fails alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_raft_entries_and_each_keeps_its_answer() {
    let n = one_node().await;
    let applied = async || {
        let info = n.local().await.info(proto::Empty {}).await.unwrap();
        info.into_inner().raft_last_applied
    };
    let ch = orc::net::local_channel(&n.sock).await.unwrap();
    let _ = ControlClient::new(ch.clone())
        .barrier(proto::Empty {})
        .await
        .unwrap();
    let first = applied().await;
    let writes = 200;
    let mut calls = vec![];
    for _ in 0..writes {
        let mut c = ControlClient::new(ch.clone());
        calls.push(tokio::spawn(async move {
            c.barrier(proto::Empty {})
                .await
                .map(|r| r.into_inner().index)
        }));
    }
    // Among them, one write that must be refused on its own: a service whose name is
    // taken by a create racing it in the same moment.
    let mut c1 = n.control().await;
    let mut c2 = n.control().await;
    let create = |mut c: ControlClient<tonic::transport::Channel>| async move {
        c.create_service(proto::ServiceSpecRequest {
            spec: wire(&spec("same", 1, 0)),
            ..Default::default()
        })
        .await
    };
    let (a, b) = tokio::join!(create(c1.clone()), create(c2.clone()));
    for call in calls {
        call.await.unwrap().expect("every barrier is acknowledged");
    }
    // The entries the writes took (the leader's own no-op entries, if any, count too).
    let entries = applied().await - first;
    assert!(
        entries <= writes as u64 / 2,
        "{} concurrent writes took {entries} entries: they were not batched",
        writes + 2
    );
    assert!(
        a.is_ok() != b.is_ok(),
        "exactly one create of `same` succeeds: {a:?} {b:?}"
    );
    let services = c1
        .list_services(proto::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(services.services.len(), 1);
    let _ = c2.barrier(proto::Empty {}).await.unwrap();
}

/// A leader's own writes queued one after another (`Manager::propose_queued`, as the
/// status batcher queues its batches) are applied in that order, each queued before
/// the one before it is applied: a node's labels set right after it is added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_queued_one_after_another_apply_in_order() {
    use orc::store::{Command, Node as StoreNode, NodeId, Role};
    let n = one_node().await;
    let m = n.daemon.manager().expect("a manager");
    let label = |id: NodeId, v: String| Command::UpdateNodeSpec {
        id,
        role: None,
        availability: None,
        labels_add: [("k".to_string(), v)].into(),
        labels_rm: vec![],
    };
    // Positive control: labels for a node not added are refused, so a label applied
    // before its node's add would fail below.
    assert!(m.propose(label(NodeId(0xdead), "x".into())).await.is_err());
    let mut queued = vec![];
    for i in 0..50u64 {
        let id = NodeId(0xfeed_0000 + i);
        let node = StoreNode::new(id, "10.9.9.9:4242", Role::Worker, Default::default(), 0);
        let add = m
            .propose_queued(Command::AddNode { node })
            .await
            .expect("queued");
        let set = m
            .propose_queued(label(id, i.to_string()))
            .await
            .expect("queued");
        queued.push((add, set));
    }
    for (i, (add, set)) in queued.into_iter().enumerate() {
        add.await.expect("added");
        set.await
            .unwrap_or_else(|e| panic!("node {i}: labelled after it was added: {e}"));
    }
}
