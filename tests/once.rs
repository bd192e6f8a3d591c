//! Exactly once: a write delivered twice with one request id applies once, and both
//! deliveries get the first reply; with two ids (the positive control) it applies
//! twice. Real daemons in this process (sockets, mTLS, Raft on sled), two managers, tasks
//! on the fake executor.
//!
//! A follower that retries a forward after a failover sends the leader the request id
//! it made for the first attempt; here the test plays that follower by setting the
//! `orc-request-id` metadata itself, which the local socket (trusted) and managers may.

use std::sync::Arc;
use std::time::Duration;

use orc::agent::fake::FakeExecutor;
use orc::daemon::{Daemon, DaemonConfig, RaftTimings};
use orc::proto::{self, ca_client::CaClient, control_client::ControlClient};
use orc::proto::{local_client::LocalClient, CaJoinRequest, ServiceSpecRequest};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

struct Node {
    _dir: tempfile::TempDir,
    sock: std::path::PathBuf,
    port: u16,
    daemon: Daemon,
    stop: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[path = "common/ports.rs"]
mod ports;
use ports::free_port;

async fn start() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("orc.sock");
    let cfg = DaemonConfig {
        data_dir: dir.path().join("data"),
        socket: sock.clone(),
        docker_host: None,
        raft: RaftTimings::default(),
        executor: Some(Arc::new(FakeExecutor::new())),
        min_cert_expiry_secs: 3600,
        data_path_port: 0,
        generic_resources: Default::default(),
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
        daemon,
        stop,
    }
}

impl Node {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    async fn local(&self) -> LocalClient<Channel> {
        LocalClient::new(orc::net::local_channel(&self.sock).await.unwrap())
    }
    async fn control(&self) -> ControlClient<Channel> {
        ControlClient::new(orc::net::local_channel(&self.sock).await.unwrap())
    }
    async fn inspect(&self, service: &str) -> serde_json::Value {
        let r = self
            .control()
            .await
            .inspect_service(proto::ServiceRef {
                service: service.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        orc::cli::service::Inspected::try_from(r).unwrap().to_json()
    }
    async fn node_count(&self) -> usize {
        let r = self.control().await.list_nodes(proto::Empty {}).await;
        r.unwrap().into_inner().nodes.len()
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

fn spec(name: &str, label: Option<&str>) -> String {
    let mut s: serde_json::Value =
        serde_json::from_str(include_str!("spec_template.json")).unwrap();
    s["name"] = name.into();
    if let Some(v) = label {
        s["labels"]["v"] = v.into();
    }
    s.to_string()
}

/// A leader and a follower manager; returns them and the cluster's tokens.
async fn two_managers() -> (Node, Node, proto::InitResponse) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (leader, follower) = (start().await, start().await);
    let init = leader
        .local()
        .await
        .init(proto::InitRequest {
            advertise_addr: leader.addr(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    follower
        .local()
        .await
        .join(proto::JoinRequest {
            token: init.manager_token.clone(),
            remote_addr: leader.addr(),
            advertise_addr: follower.addr(),
            listen_addr: String::new(),
        })
        .await
        .unwrap();
    wait(
        Duration::from_secs(20),
        "a follower that knows the leader",
        async || {
            let i = follower.local().await.info(proto::Empty {}).await.ok()?;
            let i = i.into_inner();
            (!i.leader_id.is_empty() && i.leader_id != i.node_id).then_some(())
        },
    )
    .await;
    (leader, follower, init)
}

/// `service update` with a label, delivered with `request` in its metadata.
fn update(service: &str, request: &str) -> tonic::Request<ServiceSpecRequest> {
    let mut r = tonic::Request::new(ServiceSpecRequest {
        service: service.into(),
        spec: wire(&spec(service, Some("2"))),
    });
    r.metadata_mut()
        .insert("orc-request-id", request.parse().unwrap());
    r
}

const ID_A: &str = "0123456789abcdef0123456789abcdef";
const ID_B: &str = "fedcba9876543210fedcba9876543210";
const ID_C: &str = "00112233445566778899aabbccddeeff";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarded_update_delivered_twice_keeps_the_rollback_target() {
    let (leader, follower, _) = two_managers().await;
    for name in ["once", "twice", "together"] {
        leader
            .control()
            .await
            .create_service(ServiceSpecRequest {
                service: String::new(),
                spec: wire(&spec(name, None)),
            })
            .await
            .unwrap();
    }
    let original = leader.inspect("once").await["spec"].clone();
    assert_eq!(original["labels"], serde_json::json!({}));

    // Through the follower, which forwards to the leader with the id: twice, one id.
    let mut fc = follower.control().await;
    let first = fc.update_service(update("once", ID_A)).await.unwrap();
    let again = fc.update_service(update("once", ID_A)).await.unwrap();
    assert_eq!(
        first.get_ref(),
        again.get_ref(),
        "the retry gets the first reply"
    );
    assert_eq!(first.get_ref().version, 2);
    let once = leader.inspect("once").await;
    assert_eq!(once["version"], 2, "{once}");
    assert_eq!(
        once["previous_spec"], original,
        "the rollback target is kept"
    );
    assert_eq!(once["spec"]["labels"]["v"], "2");

    // Positive control: the same update with two ids is two writes, and the second
    // overwrites the rollback target with the spec of the first.
    let one = fc.update_service(update("twice", ID_B)).await.unwrap();
    let two = fc.update_service(update("twice", ID_C)).await.unwrap();
    assert_eq!((one.get_ref().version, two.get_ref().version), (2, 3));
    let twice = leader.inspect("twice").await;
    assert_eq!(twice["version"], 3, "{twice}");
    assert_eq!(twice["previous_spec"]["labels"]["v"], "2", "{twice}");

    // Two deliveries at the same time on the leader: the second waits for the first.
    let (mut c1, mut c2) = (leader.control().await, leader.control().await);
    let id = "ab".repeat(16);
    let (r1, r2) = tokio::join!(
        c1.update_service(update("together", &id)),
        c2.update_service(update("together", &id)),
    );
    assert_eq!(r1.unwrap().get_ref(), r2.unwrap().get_ref());
    let together = leader.inspect("together").await;
    assert_eq!(together["version"], 2, "{together}");
    assert_eq!(together["previous_spec"]["labels"], serde_json::json!({}));

    // A request id that is not one is refused, not ignored.
    let e = fc
        .update_service(update("once", "not-an-id"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_forwarded_twice_by_a_manager_adds_one_node() {
    let (leader, follower, init) = two_managers().await;
    let token: orc::ca::Token = init.worker_token.parse().unwrap();
    let join = |request: &str| {
        let (_key, csr_pem) = orc::ca::new_key_and_csr().unwrap();
        let mut r = tonic::Request::new(CaJoinRequest {
            secret: token.secret.clone(),
            csr_pem,
            advertise_addr: "127.0.0.1:9".into(),
            hostname: "retried".into(),
            forwarded_for: String::new(),
        });
        r.metadata_mut()
            .insert("orc-request-id", request.parse().unwrap());
        r
    };
    let before = leader.node_count().await;

    // The follower's own manager certificate on the leader's cluster port: a forward.
    let ch = follower.daemon.peers().channel(&leader.addr()).unwrap();
    let mut as_manager = CaClient::new(ch);
    let first = as_manager.join(join(ID_A)).await.unwrap().into_inner();
    let again = as_manager.join(join(ID_A)).await.unwrap().into_inner();
    assert_eq!(first.node_id, again.node_id, "the same node both times");
    assert_eq!(
        first.cert_pem, again.cert_pem,
        "the same certificate both times"
    );
    assert_eq!(first, again);
    assert_eq!(leader.node_count().await, before + 1, "one node added");

    // Positive control: a stranger (no certificate) cannot name the request: its id is
    // ignored and each join adds a node.
    let anonymous = orc::net::tls_channel(
        &leader.addr(),
        orc::ca::join_client_config(&token.ca_digest).unwrap(),
        Duration::from_secs(10),
    );
    let mut stranger = CaClient::new(anonymous);
    let one = stranger.join(join(ID_B)).await.unwrap().into_inner();
    let two = stranger.join(join(ID_B)).await.unwrap().into_inner();
    assert_ne!(one.node_id, two.node_id);
    assert_eq!(leader.node_count().await, before + 3, "two more nodes");
}

/// The first attempt of `request`: `service update` of `name` to `spec_json` as the
/// handler would propose it, applied with its reply.
fn first_attempt(
    m: &orc::daemon::Manager,
    name: &str,
    spec_json: &str,
    request: &str,
) -> (orc::store::Command, proto::ServiceRef) {
    let old = m.read(|s| s.find_service(name).cloned()).unwrap();
    let service = orc::store::Service {
        spec: serde_json::from_str(spec_json).unwrap(),
        previous_spec: Some(old.spec.clone()),
        version: old.version + 1,
        ..old
    };
    let reply = proto::ServiceRef {
        service: name.into(),
        id: service.id.0.clone(),
        version: service.version,
    };
    let cmd = orc::store::Command::Once {
        request: request.parse().unwrap(),
        now_ms: orc::daemon::now_ms(),
        reply: Some(prost::Message::encode_to_vec(&reply)),
        cmd: Box::new(orc::store::Command::UpdateService { service }),
    };
    (cmd, reply)
}

/// The first attempt is applied after the retry looked for its id (committed by the old
/// leader, applied here late) but before the retry's handler wrote: the retry's own
/// entry finds the id recorded, applies nothing, and the caller gets the first reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_whose_first_attempt_lands_meanwhile_applies_nothing() {
    let (leader, _follower, _) = two_managers().await;
    for name in ["late", "control"] {
        leader
            .control()
            .await
            .create_service(ServiceSpecRequest {
                service: String::new(),
                spec: wire(&spec(name, None)),
            })
            .await
            .unwrap();
    }
    let m = leader.daemon.manager().unwrap();
    let retry = |name: &'static str, first_id: &'static str, retry_id: &'static str| {
        let m = m.clone();
        async move {
            let (first, first_reply) = first_attempt(&m, name, &spec(name, Some("1")), first_id);
            let handler = {
                let m = m.clone();
                async move {
                    // Not a part of this request: proposed as it is, from another task.
                    let lands = tokio::spawn({
                        let m = m.clone();
                        async move { m.propose(first).await }
                    });
                    lands.await.unwrap().unwrap();
                    // The handler's write, as `service update` computes it on the
                    // state with the first attempt in it: a new version, and the
                    // first attempt's spec as the rollback target.
                    let old = m.read(|s| s.find_service(name).cloned()).unwrap();
                    let service = orc::store::Service {
                        spec: serde_json::from_str(&spec(name, Some("2"))).unwrap(),
                        previous_spec: Some(old.spec.clone()),
                        version: old.version + 1,
                        ..old
                    };
                    let mine = proto::ServiceRef {
                        service: name.into(),
                        id: service.id.0.clone(),
                        version: service.version,
                    };
                    m.propose_replying(orc::store::Command::UpdateService { service }, &mine)
                        .await?;
                    Ok(mine)
                }
            };
            let got = orc::daemon::once::run(&m, retry_id.parse().unwrap(), handler).await;
            (got.unwrap(), first_reply)
        }
    };

    let (got, first) = retry("late", ID_A, ID_A).await;
    assert_eq!(got, first, "the first reply, not the handler's");
    let late = leader.inspect("late").await;
    assert_eq!(late["version"], 2, "{late}");
    assert_eq!(late["spec"]["labels"]["v"], "1", "{late}");
    assert_eq!(late["previous_spec"]["labels"], serde_json::json!({}));

    // Positive control: a different id is another write, applied on top.
    let (got, first) = retry("control", ID_B, ID_C).await;
    assert_eq!(got.version, 3);
    assert_ne!(got, first);
    let control = leader.inspect("control").await;
    assert_eq!(control["version"], 3, "{control}");
    assert_eq!(control["previous_spec"]["labels"]["v"], "1", "{control}");
}
