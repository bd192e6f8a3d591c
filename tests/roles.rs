//! Every RPC on the cluster port checks the caller's certificate: chain to this
//! cluster's root, expiry, cluster id and role. Driven with real certificates over real
//! TLS against a real daemon.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use orc::ca::{NodeCredentials, RootCa};
use orc::proto::{self, control_client::ControlClient, raft_client::RaftClient};
use orc::store::{Cluster, NodeId, Role};

fn creds_for(
    root: &RootCa,
    node: NodeId,
    cluster: &str,
    role: Role,
    validity: Duration,
    now: SystemTime,
) -> NodeCredentials {
    let (key_pem, csr_pem) = orc::ca::new_key_and_csr().unwrap();
    let cert_pem = root
        .issue(&csr_pem, node, role, cluster, validity, now)
        .unwrap();
    NodeCredentials {
        ca_cert_pem: root.cert_pem().to_string(),
        cert_pem,
        key_pem,
    }
}

async fn list_with(addr: &str, creds: &NodeCredentials) -> Result<usize, tonic::Status> {
    let ch = orc::net::tls_channel(addr, creds.client_config().unwrap(), Duration::from_secs(5));
    ControlClient::new(ch)
        .list_nodes(proto::Empty {})
        .await
        .map(|r| r.into_inner().nodes.len())
}

async fn vote_with(addr: &str, creds: &NodeCredentials) -> Result<(), tonic::Status> {
    let ch = orc::net::tls_channel(addr, creds.client_config().unwrap(), Duration::from_secs(5));
    RaftClient::new(ch)
        .vote(proto::VoteRequest::default())
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_port_checks_chain_expiry_cluster_and_role() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut nodes = tokio::task::spawn_blocking(|| cluster(1, 1, &[]))
        .await
        .unwrap();
    let maddr = nodes[0].addr();

    // Take the worker's real credentials and the cluster's CA from their databases.
    nodes[1].kill();
    // (Their keys are sealed: opened with the key file beside each database.)
    let member = orc::daemon::read_stored_member(
        &read_tree(&nodes[1].dir.path().join("data/db"), "local", "member"),
        &nodes[1].dir.path().join("data"),
    )
    .unwrap();
    let worker: NodeCredentials = member.creds;
    nodes[0].kill();
    let cluster: Cluster = read_cluster(&nodes[0].dir.path().join("data"));
    nodes[0].start();
    let dk = orc::keys::read_plain_key(&nodes[0].dir.path().join("data")).unwrap();
    let ca_key = dk
        .open_string(orc::keys::Purpose::CaKey, &cluster.ca_key)
        .unwrap();
    let root = RootCa::from_pem(&cluster.ca_cert_pem, &ca_key).unwrap();
    let now = SystemTime::now();
    let day = Duration::from_secs(86400);

    // Positive control: a valid manager certificate of this cluster, for the manager
    // that is a member, is served.
    let mid: NodeId = nodes[0].info()["node_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let manager = creds_for(&root, mid, &cluster.id, Role::Manager, day, now);
    let mut served = None;
    for _ in 0..50 {
        match list_with(&maddr, &manager).await {
            Ok(n) => {
                served = Some(n);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert_eq!(served, Some(2), "a manager certificate must be served");

    // A worker's real certificate: control and Raft are refused by role.
    let e = list_with(&maddr, &worker).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("needs a manager"), "{e:?}");
    let e = vote_with(&maddr, &worker).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");

    // A certificate of this CA claiming another cluster id.
    // (Its own client refuses the server first, whose certificate names this cluster;
    // the server's refusal is `auth::decide`'s, unit-tested.)
    let other = creds_for(&root, mid, "another-cluster", Role::Manager, day, now);
    assert!(
        list_with(&maddr, &other).await.is_err(),
        "another cluster accepted"
    );

    // A valid manager certificate of this cluster for a node that is not a member.
    let stranger = creds_for(&root, NodeId(0x77), &cluster.id, Role::Manager, day, now);
    let e = list_with(&maddr, &stranger).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("not a member"), "{e:?}");

    // Expired: issued two days ago for one day.
    let expired = creds_for(&root, mid, &cluster.id, Role::Manager, day, now - 2 * day);
    assert!(
        list_with(&maddr, &expired).await.is_err(),
        "expired certificate accepted"
    );

    // A foreign CA, even with the right cluster id and role.
    let foreign_root = RootCa::generate(&cluster.id, now).unwrap();
    let foreign = creds_for(&foreign_root, mid, &cluster.id, Role::Manager, day, now);
    assert!(
        list_with(&maddr, &foreign).await.is_err(),
        "foreign CA accepted"
    );
    assert!(
        vote_with(&maddr, &foreign).await.is_err(),
        "foreign CA accepted by Raft"
    );
}
