//! Level 5: the attack suite. Real daemons, real certificates, real TLS: each attack of
//! issue 12 is tried as an attacker would, and must be refused, beside a positive
//! control that must succeed (so that the test can fail). It prints
//! `attacks refused N of N`.
//!
//! Who the attackers are: a worker (its own real certificate), a removed or demoted
//! manager (its real, still unexpired certificate), and a stranger on the cluster port
//! (no certificate, only the CA digest every join token shows).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use orc::ca::NodeCredentials;
use orc::proto::{
    self, ca_client::CaClient, control_client::ControlClient, dispatcher_client::DispatcherClient,
    node_api_client::NodeApiClient, raft_client::RaftClient,
};
use orc::store::NodeId;

/// The outcome of each attack.
#[derive(Default)]
struct Suite {
    results: Vec<(String, bool)>,
}

impl Suite {
    fn attack(&mut self, name: &str, refused: bool) {
        eprintln!(
            "attack: {name}: {}",
            if refused { "refused" } else { "LET THROUGH" }
        );
        self.results.push((name.to_string(), refused));
    }

    fn finish(self) {
        let refused = self.results.iter().filter(|(_, r)| *r).count();
        println!("attacks refused {refused} of {}", self.results.len());
        let through: Vec<&String> = self
            .results
            .iter()
            .filter(|(_, r)| !*r)
            .map(|(n, _)| n)
            .collect();
        assert!(through.is_empty(), "attacks let through: {through:?}");
    }
}

/// A node's real credentials, read from its database, its TLS key opened with the key
/// file beside it (the node is restarted).
fn creds_of(n: &mut Node) -> NodeCredentials {
    n.kill();
    let member = orc::daemon::read_stored_member(
        &read_tree(&n.dir.path().join("data/db"), "local", "member"),
        &n.dir.path().join("data"),
    )
    .unwrap();
    n.start();
    member.creds
}

fn id_of(n: &Node) -> NodeId {
    n.info()["node_id"].as_str().unwrap().parse().unwrap()
}

/// A channel to a manager, as the holder of `creds`.
fn to_manager(addr: &str, creds: &NodeCredentials) -> tonic::transport::Channel {
    orc::net::tls_channel(
        addr,
        creds.client_config().unwrap(),
        Duration::from_secs(10),
    )
}

/// A channel to any node, as the holder of `creds`.
fn to_node(addr: &str, creds: &NodeCredentials) -> tonic::transport::Channel {
    orc::net::tls_channel(
        addr,
        creds.client_config_any_node().unwrap(),
        Duration::from_secs(10),
    )
}

/// A channel without a certificate, pinned to the CA of `token` (a stranger).
fn stranger(addr: &str, token: &str) -> tonic::transport::Channel {
    let t: orc::ca::Token = token.parse().unwrap();
    anonymous(addr, &t.ca_digest)
}

async fn list_nodes(ch: tonic::transport::Channel) -> Result<usize, tonic::Status> {
    ControlClient::new(ch)
        .list_nodes(proto::Empty {})
        .await
        .map(|r| r.into_inner().nodes.len())
}

fn denied(r: &Result<impl std::fmt::Debug, tonic::Status>) -> bool {
    matches!(r, Err(s) if s.code() == tonic::Code::PermissionDenied)
}

/// Retries `f` until it is refused (PermissionDenied), for at most `within`; the time
/// it took, or `None`.
async fn refused_within<T, F, Fut>(within: Duration, mut f: F) -> Option<Duration>
where
    T: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let t0 = Instant::now();
    while t0.elapsed() <= within {
        if denied(&f().await) {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn heartbeat_of(node: NodeId, addr: &str, hostname: String) -> proto::HeartbeatRequest {
    proto::HeartbeatRequest {
        node_id: node.to_string(),
        description: Some(proto::NodeDescription {
            hostname,
            cpus: 1,
            os: "linux".into(),
            ..Default::default()
        }),
        addr: addr.to_string(),
        facts: None,
        forwarded_for: String::new(),
        cert_issuer_digest: String::new(),
    }
}

/// A beat stream (`Dispatcher.Beats`) opened with `first`, which must be answered
/// (the control, `who` says whose): where to send the next beats, and the answers.
type BeatStream = (
    tokio::sync::mpsc::Sender<proto::HeartbeatRequest>,
    tonic::Streaming<proto::HeartbeatResponse>,
);

async fn beats(
    ch: tonic::transport::Channel,
    first: proto::HeartbeatRequest,
    who: &str,
) -> BeatStream {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(first).await.expect("the receiver is here");
    let mut answers = DispatcherClient::new(ch)
        .max_encoding_message_size(usize::MAX)
        .beats(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_or_else(|e| panic!("control: {who} opens a beat stream: {e}"))
        .into_inner();
    let first = answers.message().await;
    assert!(
        matches!(&first, Ok(Some(_))),
        "control: {who}'s first beat is answered: {first:?}"
    );
    (tx, answers)
}

/// The answer to the next beat on `stream`, `req`.
async fn next_beat(
    stream: &mut BeatStream,
    req: proto::HeartbeatRequest,
) -> Result<proto::HeartbeatResponse, tonic::Status> {
    let _ = stream.0.send(req).await;
    stream
        .1
        .message()
        .await?
        .ok_or_else(|| tonic::Status::unavailable("the beat stream ended"))
}

/// A TLS server that is not orc: it completes handshakes with `creds` and counts the
/// application bytes clients then send (a join secret, for instance).
async fn fake_server(creds: &NodeCredentials) -> (String, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let got = Arc::new(AtomicUsize::new(0));
    let acceptor = tokio_rustls::TlsAcceptor::from(creds.server_config().unwrap());
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            let g = g.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = vec![0u8; 65536];
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(3), tls.read(&mut buf)).await
                {
                    if n == 0 {
                        break;
                    }
                    g.fetch_add(n, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_attack_is_refused_beside_a_control_that_succeeds() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut suite = Suite::default();
    // Three managers (0 initialised the cluster) and two workers.
    let mut nodes = tokio::task::spawn_blocking(|| cluster(3, 2, &[]))
        .await
        .unwrap();
    let leader = tokio::task::block_in_place(|| leader_index(&nodes, 0));
    let follower = (1..3).find(|i| *i != leader).unwrap();
    let spare = (0..3).find(|i| *i != leader && *i != follower).unwrap();
    let (w, w2) = (3, 4);
    let token = nodes[0]
        .ok(&["join-token", "manager", "-q"])
        .trim()
        .to_string();
    let worker = creds_of(&mut nodes[w]);
    let follower_creds = creds_of(&mut nodes[follower]);
    let wid = id_of(&nodes[w]);
    let fid = id_of(&nodes[follower]);
    let laddr = nodes[leader].addr();
    let faddr = nodes[follower].addr();
    tokio::task::block_in_place(|| {
        wait_for(Duration::from_secs(20), "all nodes ready again", || {
            let ns = nodes[leader].nodes();
            ns.iter().all(|n| n["status"] == "ready").then_some(())
        })
    });

    // 1. A worker becomes a manager through a renewal sent to a follower.
    let (_, csr) = orc::ca::new_key_and_csr().unwrap();
    let r = CaClient::new(to_manager(&faddr, &worker))
        .renew(proto::RenewRequest { csr_pem: csr })
        .await
        .expect("control: a worker renews its own certificate through a follower");
    let got = orc::ca::identity_of_pem(&r.into_inner().cert_pem).unwrap();
    suite.attack(
        "renewal through a follower gives the worker the follower's id or the manager role",
        got.node_id == wid && got.role == orc::store::Role::Worker,
    );
    let (_, csr) = orc::ca::new_key_and_csr().unwrap();
    let mut req = tonic::Request::new(proto::RenewRequest { csr_pem: csr });
    req.metadata_mut()
        .insert("orc-on-behalf-of", fid.to_string().parse().unwrap());
    let r = CaClient::new(to_manager(&laddr, &worker)).renew(req).await;
    suite.attack(
        "a worker asks for a certificate on behalf of a manager",
        denied(&r),
    );

    // 9. A retried forward applies twice: the same join forwarded twice by a manager
    // with one request id adds one node. Control: another id adds another.
    let wtoken: orc::ca::Token = nodes[0]
        .ok(&["join-token", "worker", "-q"])
        .trim()
        .parse()
        .unwrap();
    let count = || async {
        list_nodes(to_manager(&laddr, &follower_creds))
            .await
            .unwrap()
    };
    let forwarded_join = |id: &str| {
        let (_, csr_pem) = orc::ca::new_key_and_csr().unwrap();
        let mut r = tonic::Request::new(proto::CaJoinRequest {
            secret: wtoken.secret.clone(),
            csr_pem,
            advertise_addr: "127.0.0.1:9".into(),
            hostname: "retried".into(),
            forwarded_for: String::new(),
        });
        r.metadata_mut()
            .insert("orc-request-id", id.parse().unwrap());
        r
    };
    let before = count().await;
    let mut ca = CaClient::new(to_manager(&laddr, &follower_creds));
    let once = "0123456789abcdef0123456789abcdef";
    let first = ca.join(forwarded_join(once)).await.unwrap().into_inner();
    let again = ca.join(forwarded_join(once)).await.unwrap().into_inner();
    let after_retry = count().await;
    let other = ca
        .join(forwarded_join("fedcba9876543210fedcba9876543210"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        other.node_id, first.node_id,
        "control: another id is another join"
    );
    assert_eq!(count().await, before + 2, "control: another id adds a node");
    suite.attack(
        "a join forwarded twice with one request id adds two nodes",
        first.node_id == again.node_id && after_retry == before + 1,
    );
    for id in [&first.node_id, &other.node_id] {
        tokio::task::block_in_place(|| nodes[leader].ok(&["node", "rm", "--force", id]));
    }

    // 2. A worker's certificate serves as a manager: a joining node must not send it
    // the join secret. Control: the same fake server with a manager's certificate
    // does receive the request (so the counter works).
    let (fake, got_bytes) = fake_server(&worker).await;
    let mut joiner = Node::new();
    joiner.start();
    let out = joiner.orc(&[
        "join",
        "--token",
        &token,
        "--advertise-addr",
        &joiner.addr(),
        &fake,
    ]);
    suite.attack(
        "a worker's certificate serves a join (and receives the secret)",
        !out.status.success() && got_bytes.load(Ordering::SeqCst) == 0,
    );
    let (fake_m, got_m) = fake_server(&follower_creds).await;
    let _ = joiner.orc(&[
        "join",
        "--token",
        &token,
        "--advertise-addr",
        &joiner.addr(),
        &fake_m,
    ]);
    assert!(
        got_m.load(Ordering::SeqCst) > 0,
        "control: a joining node sends its request to a manager's certificate"
    );
    drop(joiner);

    // 5. A stranger on the cluster port.
    let r = list_nodes(stranger(&laddr, &token)).await;
    suite.attack("a stranger lists the nodes", denied(&r));
    let r = RaftClient::new(stranger(&laddr, &token))
        .vote(proto::VoteRequest::default())
        .await;
    suite.attack("a stranger sends a Raft vote", denied(&r));
    // ... with 200 MB messages: refused before they are read.
    let pid = nodes[leader].pid().unwrap();
    let idle = rss_bytes(pid);
    let sampler = PeakRss::start(pid, idle, Duration::from_millis(20));
    let senders: Vec<_> = (0..3)
        .map(|_| {
            let ch = stranger(&laddr, &token);
            tokio::spawn(async move {
                RaftClient::new(ch)
                    .max_encoding_message_size(usize::MAX)
                    .append_entries(proto::AppendEntriesRequest {
                        entries: vec![proto::Entry {
                            log_id: None,
                            payload: Some(proto::entry::Payload::Normal(vec![b' '; 200 << 20])),
                        }],
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    let mut all_refused = true;
    for s in senders {
        let r = s.await.unwrap();
        all_refused &= r.is_err();
    }
    let peak = sampler.stop();
    let grew = peak.saturating_sub(idle);
    eprintln!(
        "leader RSS idle {} MB, peak {} MB under 3 anonymous 200 MB senders",
        idle >> 20,
        peak >> 20
    );
    suite.attack(
        "a stranger's 200 MB messages are read (leader grows by 100 MB or more)",
        all_refused && grew < 100 << 20,
    );
    // Control: a manager gets through the gate with a small message, and is refused a
    // message over the Raft limit.
    let r = RaftClient::new(to_manager(&laddr, &follower_creds))
        .vote(proto::VoteRequest::default())
        .await;
    assert!(
        matches!(&r, Err(s) if s.code() == tonic::Code::InvalidArgument),
        "control: a manager's Raft call passes the gate and is decoded: {r:?}"
    );
    let r = RaftClient::new(to_manager(&laddr, &follower_creds))
        .max_encoding_message_size(usize::MAX)
        .append_entries(proto::AppendEntriesRequest {
            entries: vec![proto::Entry {
                log_id: None,
                payload: Some(proto::entry::Payload::Normal(vec![b' '; 20 << 20])),
            }],
            ..Default::default()
        })
        .await;
    suite.attack("a manager's 20 MB Raft message is taken", r.is_err());
    // Joins from one address: a few tries a second.
    let mut tried = (0, 0);
    for _ in 0..25 {
        let r = CaClient::new(stranger(&laddr, &token))
            .join(proto::CaJoinRequest {
                secret: "0".repeat(25),
                csr_pem: String::new(),
                advertise_addr: "127.0.0.1:1".into(),
                hostname: "h".into(),
                forwarded_for: String::new(),
            })
            .await;
        match r {
            Err(s) if s.code() == tonic::Code::ResourceExhausted => tried.1 += 1,
            Err(s) if s.code() == tonic::Code::PermissionDenied => tried.0 += 1,
            other => panic!("join with a wrong secret: {other:?}"),
        }
    }
    assert!(
        tried.0 >= 1,
        "control: the first joins are judged on their secret"
    );
    suite.attack(
        "a stranger guesses join secrets at full speed",
        tried.1 >= 10,
    );

    // 7. A worker fills the managers' disks, or gives another address.
    let mut hb = DispatcherClient::new(to_manager(&laddr, &worker));
    let waddr = nodes[w].addr();
    let me = orc::agent::hostname();
    hb.heartbeat(heartbeat_of(wid, &waddr, me.clone()))
        .await
        .expect("control: a worker's own heartbeat is taken");
    let r = hb
        .heartbeat(heartbeat_of(wid, &waddr, "x".repeat(3 << 20)))
        .await;
    suite.attack("a 3 MB host name in a heartbeat", r.is_err());
    let r = hb
        .heartbeat(heartbeat_of(wid, &waddr, "x".repeat(60_000)))
        .await;
    suite.attack(
        "a 60 kB host name in a heartbeat",
        matches!(&r, Err(s) if s.code() == tonic::Code::InvalidArgument),
    );
    let r = hb
        .heartbeat(heartbeat_of(wid, "10.9.9.9:4242", me.clone()))
        .await;
    suite.attack("a heartbeat gives someone else's address", denied(&r));
    let r = hb.heartbeat(heartbeat_of(fid, &faddr, me.clone())).await;
    suite.attack("a worker heartbeats for a manager", denied(&r));
    // The same beats on one stream: the worker's own are answered one after the other
    // (the control); a beat for another node is refused and ends the stream, and a beat
    // past 64 kB is refused at its header, before the manager reads it.
    let mut own = beats(
        to_manager(&laddr, &worker),
        heartbeat_of(wid, &waddr, me.clone()),
        "a worker",
    )
    .await;
    let second = next_beat(&mut own, heartbeat_of(wid, &waddr, me.clone())).await;
    assert!(
        second.is_ok(),
        "control: its next beat on the stream is answered: {second:?}"
    );
    let r = next_beat(&mut own, heartbeat_of(fid, &faddr, me.clone())).await;
    suite.attack("a worker's beat stream beats for a manager", denied(&r));
    let r = next_beat(&mut own, heartbeat_of(wid, &waddr, me.clone())).await;
    suite.attack("a beat stream goes on after a refused beat", r.is_err());
    let mut big = beats(
        to_manager(&laddr, &worker),
        heartbeat_of(wid, &waddr, me.clone()),
        "a worker's second stream",
    )
    .await;
    let r = next_beat(&mut big, heartbeat_of(wid, &waddr, "x".repeat(3 << 20))).await;
    eprintln!("a 3 MB beat on a stream: {r:?}");
    suite.attack(
        "a 3 MB beat on a beat stream is read",
        matches!(&r, Err(s) if s.code() == tonic::Code::OutOfRange),
    );
    // A session (framed by orc, not tonic): a worker's own opens with all it holds (the
    // control); another node's is refused, and so is a request past its 64 kB.
    let session = |node_id: String, digest_len: usize| proto::SessionRequest {
        node_id,
        endpoints_digest: vec![7; digest_len],
        ..Default::default()
    };
    let own = hb.session(session(wid.to_string(), 0)).await;
    let first = match own {
        Ok(r) => r.into_inner().message().await.ok().flatten(),
        Err(e) => panic!("control: a worker's own session opens: {e}"),
    };
    let first = first.expect("control: a worker's own session opens with a message");
    assert!(
        first.full,
        "control: a worker's own session opens with all it holds"
    );
    // The index of the state a node's endpoint table is of, as it reports it: a table it
    // held at a state the leader applied is brought up to date by what changed since
    // (the control: a digest that differs, the index as sent, gets a partial table); an
    // index the leader never applied gets the whole table, and the node nothing else.
    let table_of = |r: Result<tonic::Response<tonic::Streaming<proto::SessionMessage>>, _>| async {
        let mut stream = r.ok()?.into_inner();
        let m = stream.message().await.ok().flatten()?;
        let b = m.endpoints?;
        <proto::Endpoints as prost::Message>::decode(b).ok()
    };
    let held = |index: u64| proto::SessionRequest {
        node_id: wid.to_string(),
        endpoints_digest: vec![9; 16],
        endpoints_index: index,
        ..Default::default()
    };
    assert_ne!(first.endpoints_index, 0, "the first table names its state");
    let resumed = table_of(hb.session(held(first.endpoints_index)).await).await;
    assert!(
        resumed.is_some_and(|t| t.partial),
        "control: a table held at a state the leader applied is resumed"
    );
    for (what, index) in [
        ("an endpoint table of a state to come", u64::MAX),
        (
            "an endpoint table of a state one past the leader's",
            first.endpoints_index + 1_000_000,
        ),
    ] {
        let t = table_of(hb.session(held(index)).await).await;
        suite.attack(what, t.is_some_and(|t| !t.partial));
    }
    let r = hb.session(session(id_of(&nodes[w2]).to_string(), 0)).await;
    suite.attack("a worker opens another node's session", denied(&r));
    let r = hb.session(session(wid.to_string(), 100_000)).await;
    suite.attack("a 100 kB session request", r.is_err());
    let shown = tokio::task::block_in_place(|| nodes[leader].nodes());
    let w_row = shown
        .iter()
        .find(|n| n["id"] == wid.to_string().as_str())
        .unwrap();
    assert_eq!(w_row["hostname"], me.as_str());
    assert_eq!(w_row["address"], waddr.as_str());

    // 3. A demoted, then removed manager keeps its certificate's powers. Control first:
    // the follower's certificate lists nodes, reads a node of the workers, and opens an
    // encrypted data-path tunnel to a task on a worker.
    let w2id = id_of(&nodes[w2]);
    let (task, data_addr) = tokio::task::block_in_place(|| {
        nodes[leader].ok(&[
            "service",
            "create",
            "-d",
            "--name",
            "reach",
            "--expose",
            "80",
            "--constraint",
            &format!("node.id=={w2id}"),
            "orc-test/web:1",
        ]);
        let task = wait_for(
            Duration::from_secs(60),
            "the task on worker 2 running",
            || {
                let ps = nodes[leader].json(&["service", "ps", "reach"]);
                ps.as_array()?
                    .iter()
                    .find(|t| t["state"] == "running")
                    .and_then(|t| t["id"].as_str().map(String::from))
            },
        );
        let node = nodes[leader].json(&["node", "inspect", &w2id.to_string()]);
        let node = if node.is_array() {
            node[0].clone()
        } else {
            node
        };
        let port = node["data_port"].as_u64().expect("data_port") as u16;
        assert_ne!(port, 0, "worker 2 has no data path: {node}");
        (task, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    });
    let tunnel_as = |creds: NodeCredentials, id: NodeId| {
        let task = task.clone();
        async move {
            let dp = orc::mesh::tunnel::DataPath::new(
                id,
                Arc::new(|_: &orc::mesh::tunnel::Request| orc::mesh::tunnel::Resolution::Refused),
                orc::mesh::tunnel::Limits::default(),
            );
            dp.set_credentials(&creds).expect("credentials");
            let target = orc::mesh::tunnel::Target {
                protocol: orc::store::service::Protocol::Tcp,
                port: 80,
                network: "default".into(),
                task: orc::store::TaskId(task),
            };
            dp.connect(w2id, data_addr, &target, true).await.map(|_| ())
        }
    };
    let mut opened = false;
    let t0 = Instant::now();
    while !opened && t0.elapsed() < Duration::from_secs(20) {
        opened = tunnel_as(follower_creds.clone(), fid).await.is_ok();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        opened,
        "control: a member's tunnel to a task on worker 2 never connected"
    );
    list_nodes(to_manager(&laddr, &follower_creds))
        .await
        .expect("control: a manager lists the nodes");
    let saved = NodeApiClient::new(to_node(&nodes[w2].addr(), &follower_creds))
        .image_save(proto::ImageRequest {
            image: "orc-test/none:1".into(),
        })
        .await;
    // A member passes the worker's gate, and is then judged on its tasks (it has none
    // using that image).
    assert!(
        matches!(&saved, Err(s) if s.message().contains("no task")),
        "control: a member passes a worker's gate for ImageSave: {saved:?}"
    );
    tokio::task::block_in_place(|| nodes[leader].ok(&["node", "demote", &fid.to_string()]));
    for i in [leader, spare] {
        let addr = nodes[i].addr();
        let creds = follower_creds.clone();
        let took = refused_within(Duration::from_secs(1), || {
            list_nodes(to_manager(&addr, &creds))
        })
        .await;
        eprintln!("demoted manager refused by manager {i} after {took:?}");
        suite.attack(
            &format!("a demoted manager lists nodes on manager {i} a second later"),
            took.is_some(),
        );
    }
    let r = ControlClient::new(to_manager(&laddr, &follower_creds))
        .join_token(proto::JoinTokenRequest {
            role: "manager".into(),
            rotate: false,
        })
        .await;
    suite.attack("a demoted manager reads the manager join token", denied(&r));
    // A beat stream the node opened before it was removed: answered now (the control),
    // refused at its first beat after.
    let mut kept = beats(
        to_manager(&laddr, &follower_creds),
        heartbeat_of(fid, &faddr, me.clone()),
        "the demoted node",
    )
    .await;
    nodes[follower].kill();
    tokio::task::block_in_place(|| {
        wait_for(Duration::from_secs(20), "the demoted node down", || {
            let ns = nodes[leader].nodes();
            (ns.iter().find(|n| n["id"] == fid.to_string().as_str())?["status"] == "down")
                .then_some(())
        });
        nodes[leader].ok(&["node", "rm", &fid.to_string()]);
    });
    let r = next_beat(&mut kept, heartbeat_of(fid, &faddr, me.clone())).await;
    suite.attack(
        "a removed node beats on the stream it opened before",
        denied(&r),
    );
    for i in [leader, spare] {
        let addr = nodes[i].addr();
        let (creds, id, a) = (follower_creds.clone(), fid, faddr.clone());
        let took = refused_within(Duration::from_secs(1), || {
            let ch = to_manager(&addr, &creds);
            let a = a.clone();
            async move {
                DispatcherClient::new(ch)
                    .heartbeat(heartbeat_of(id, &a, "h".into()))
                    .await
            }
        })
        .await;
        suite.attack(
            &format!("a removed node's heartbeat on manager {i} a second later"),
            took.is_some(),
        );
    }
    let waddr2 = nodes[w2].addr();
    let creds = follower_creds.clone();
    let took = refused_within(Duration::from_secs(2), || {
        let ch = to_node(&waddr2, &creds);
        async move {
            match NodeApiClient::new(ch)
                .image_save(proto::ImageRequest {
                    image: "orc-test/none:1".into(),
                })
                .await
            {
                Err(s) if s.message().contains("not a member") => Err(s),
                Err(s) => Ok(s.message().to_string()),
                Ok(_) => Ok("served".to_string()),
            }
        }
    })
    .await;
    suite.attack(
        "a removed node fetches an image from a worker",
        took.is_some(),
    );
    // Worker 2 hears of the removal with its session's member table: within 2 s.
    let t0 = Instant::now();
    let mut r = tunnel_as(follower_creds.clone(), fid).await;
    while r.is_ok() && t0.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        r = tunnel_as(follower_creds.clone(), fid).await;
    }
    eprintln!("removed node's tunnel after {:?}: {r:?}", t0.elapsed());
    suite.attack(
        "a removed node opens a data-path tunnel to a task on a worker",
        matches!(&r, Err(e) if e.to_string().contains("refused")),
    );
    let r = tunnel_as(worker.clone(), wid).await;
    assert!(r.is_ok(), "control: a worker's tunnel to the task: {r:?}");

    // 6. A worker asks another for an image none of its tasks uses.
    let r = NodeApiClient::new(to_node(&nodes[w2].addr(), &worker))
        .image_save(proto::ImageRequest {
            image: "orc-test/web:1".into(),
        })
        .await;
    suite.attack(
        "a worker fetches an image none of its tasks uses",
        matches!(&r, Err(s) if s.code() == tonic::Code::PermissionDenied),
    );

    // 4. Keys in the open: a local user without root reads the data dir. Control: the
    // search finds what is not secret (the CA certificate) in the same files.
    let data = nodes[leader].dir.path().join("data");
    let mut loose = vec![];
    let (mut private_key, mut cert) = (false, false);
    let mut stack = vec![data.clone()];
    while let Some(p) = stack.pop() {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            if mode != 0o700 {
                loose.push(format!("{} {mode:o}", p.display()));
            }
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else {
            if mode & 0o077 != 0 {
                loose.push(format!("{} {mode:o}", p.display()));
            }
            let bytes = std::fs::read(&p).unwrap_or_default();
            let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
            private_key |= has(b"PRIVATE KEY");
            cert |= has(b"BEGIN CERTIFICATE");
        }
    }
    assert!(
        cert,
        "control: the search finds the CA certificate in the database"
    );
    eprintln!("data dir entries open to others: {loose:?}");
    suite.attack(
        "a local user reads the data dir, or a private key in it",
        loose.is_empty() && !private_key,
    );

    // 8. Certificates of an hour renew once, at half-life, not in a loop.
    let short = tokio::task::spawn_blocking(|| cluster(1, 1, &["--cert-expiry", "1h"]))
        .await
        .unwrap();
    let first = short[1].info()["cert_expires"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = short[1].info()["cert_expires"]
        .as_str()
        .unwrap()
        .to_string();
    let renewals = short[1]
        .log()
        .matches("renewed this node's certificate")
        .count();
    suite.attack(
        "a one-hour certificate renews in a loop",
        first == later && renewals == 0,
    );

    suite.finish();
}

/// `orc ca rotate` on 3 managers and 2 workers: every node moves to the new root
/// without a restart, the new join token works, and at the end a certificate of the old
/// root is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_root_ca_rotates_without_a_restart_then_the_old_root_is_refused() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut nodes = tokio::task::spawn_blocking(|| cluster(3, 2, &[]))
        .await
        .unwrap();
    let w = 4;
    let old_worker = creds_of(&mut nodes[w]);
    let wid = id_of(&nodes[w]);
    let waddr = nodes[w].addr();
    let laddr = nodes[0].addr();
    let me = orc::agent::hostname();
    let old_token = nodes[0]
        .ok(&["join-token", "worker", "-q"])
        .trim()
        .to_string();
    tokio::task::block_in_place(|| {
        wait_for(Duration::from_secs(20), "all nodes ready again", || {
            let ns = nodes[0].nodes();
            ns.iter().all(|n| n["status"] == "ready").then_some(())
        })
    });
    // Control: the old root's certificate is taken before the rotation.
    DispatcherClient::new(to_manager(&laddr, &old_worker))
        .heartbeat(heartbeat_of(wid, &waddr, me.clone()))
        .await
        .expect("control: the worker's certificate works before the rotation");
    let before: serde_json::Value = nodes[0].json(&["ca"]);
    assert_eq!(before["rotating"], false);
    let pids: Vec<Option<u32>> = nodes.iter().map(|n| n.pid()).collect();

    let t0 = Instant::now();
    let out = tokio::task::block_in_place(|| nodes[1].ok(&["ca", "rotate"]));
    let took = t0.elapsed();
    eprintln!("{out}rotation of 5 nodes took {took:?}");
    assert!(out.contains("nodes moved 5 of 5"), "{out}");
    assert!(out.contains("root CA rotated"), "{out}");
    let after: serde_json::Value = nodes[0].json(&["ca"]);
    assert_eq!(after["rotating"], false, "{after}");
    assert_ne!(after["root_digest"], before["root_digest"]);
    let pids_after: Vec<Option<u32>> = nodes.iter().map(|n| n.pid()).collect();
    assert_eq!(pids, pids_after, "no daemon restarted");
    // Every manager told of the rotation's start and end in its events.
    for n in &nodes[..3] {
        let out = tokio::task::block_in_place(|| {
            n.ok(&[
                "events",
                "--since",
                "10m",
                "--until",
                "0s",
                "--filter",
                "type=certificate",
                "--format",
                "json",
            ])
        });
        let actions: Vec<String> = out
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("an event per line"))
            .filter_map(|e| e["action"].as_str().map(str::to_string))
            .collect();
        let start = actions.iter().position(|a| a == "ca-rotation-start");
        let end = actions.iter().position(|a| a == "ca-rotation-complete");
        assert!(
            start.is_some() && end.is_some() && start < end,
            "certificate events: {actions:?}"
        );
    }

    // Every node keeps working on its new certificate.
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| {
        let ns = nodes[0].nodes();
        assert!(ns.iter().all(|n| n["status"] == "ready"), "{ns:?}");
        nodes[2].ok(&["node", "ls"]);
    });

    // The old root's certificate is refused, everywhere.
    let mut refused = 0;
    for n in &nodes[..3] {
        let r = DispatcherClient::new(to_manager(&n.addr(), &old_worker))
            .heartbeat(heartbeat_of(wid, &waddr, me.clone()))
            .await;
        if r.is_err() {
            refused += 1;
        }
    }
    assert_eq!(
        refused, 3,
        "an old-root certificate was taken after the rotation"
    );

    // The join token shows the new root; the old one is refused; the new one joins.
    let token = nodes[0]
        .ok(&["join-token", "worker", "-q"])
        .trim()
        .to_string();
    assert_ne!(token, old_token);
    let mut late = Node::new();
    late.start();
    let e = late.fails(&[
        "join",
        "--token",
        &old_token,
        "--advertise-addr",
        &late.addr(),
        &laddr,
    ]);
    assert!(e.contains("CA does not match"), "{e}");
    late.ok(&[
        "join",
        "--token",
        &token,
        "--advertise-addr",
        &late.addr(),
        &laddr,
    ]);
    tokio::task::block_in_place(|| {
        wait_for(Duration::from_secs(20), "the late node ready", || {
            let ns = nodes[0].nodes();
            (ns.len() == 6 && ns.iter().all(|n| n["status"] == "ready")).then_some(())
        })
    });
}
