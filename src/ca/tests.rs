//! Tests of the CA: tokens, issuing, and real TLS handshakes over loopback TCP.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::error::Error;
use crate::store::{NodeId, Role};

const CLUSTER: &str = "c0ffee";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// A node of `ca`: makes a key and CSR the way a joining node does and has them signed.
fn node_creds(ca: &RootCa, id: u64, role: Role, now: SystemTime) -> NodeCredentials {
    let (key_pem, csr_pem) = new_key_and_csr().unwrap();
    let cert_pem = ca
        .issue(&csr_pem, NodeId(id), role, CLUSTER, 90 * DAY, now)
        .unwrap();
    NodeCredentials {
        ca_cert_pem: ca.cert_pem().to_string(),
        cert_pem,
        key_pem,
    }
}

fn new_ca() -> RootCa {
    RootCa::generate(CLUSTER, SystemTime::now()).unwrap()
}

/// What each side saw of one connection attempt.
struct Outcome {
    /// The server's accept: on success the identity of the client certificate, if any.
    server: Result<Option<Identity>, String>,
    /// The client: handshake, then one request and one reply over the connection.
    client: Result<(), String>,
}

/// Runs one real TLS connection over 127.0.0.1 and reports what both ends saw. The client
/// counts as successful only once a byte round trip has worked, because in TLS 1.3 a client
/// finishes its handshake before the server has judged the client's certificate.
async fn connect(server: Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server);
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let peer = match tls.get_ref().1.peer_certificates() {
            Some(chain) => Some(identity_of_der(&chain[0]).map_err(|e| e.to_string())?),
            None => None,
        };
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN_H2));
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer)
    });
    let client = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from(SERVER_NAME).unwrap();
        let mut tls = TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"pong");
        Ok::<_, String>(())
    };
    let client = tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .expect("client timed out");
    let server = tokio::time::timeout(Duration::from_secs(10), server_task)
        .await
        .expect("server timed out")
        .unwrap();
    Outcome { server, client }
}

#[test]
fn token_round_trip() {
    let ca = new_ca();
    let token = Token {
        ca_digest: ca.digest(),
        secret: new_secret(),
    };
    let text = token.to_string();
    assert!(text.starts_with("ORC-1-"));
    assert_eq!(text.len(), 6 + 64 + 1 + 25);
    assert_eq!(text.parse::<Token>().unwrap(), token);
    assert!(!format!("{token:?}").contains(&token.secret));
}

#[test]
fn malformed_tokens_are_refused_with_the_reason() {
    let digest = "ab".repeat(32);
    let secret = "abcdefghijklmnopqrstuvwxy";
    assert!(format!("ORC-1-{digest}-{secret}").parse::<Token>().is_ok());
    assert!(format!(" ORC-1-{digest}-{secret}\n")
        .parse::<Token>()
        .is_ok());
    let cases = [
        (String::new(), "does not start"),
        (format!("ORC-2-{digest}-{secret}"), "does not start"),
        (format!("orc-1-{digest}-{secret}"), "does not start"),
        (format!("ORC-1-{digest}"), "secret is missing"),
        (format!("ORC-1-{}-{secret}", &digest[1..]), "digest"),
        (
            format!("ORC-1-{}-{secret}", digest.to_uppercase()),
            "digest",
        ),
        (format!("ORC-1-{}g-{secret}", &digest[1..]), "digest"),
        (format!("ORC-1-{digest}-{}", &secret[1..]), "secret"),
        (format!("ORC-1-{digest}-{secret}z"), "secret"),
        (
            format!("ORC-1-{digest}-{}", secret.to_uppercase()),
            "secret",
        ),
        (format!("ORC-1-{digest}-{secret}-x"), "secret"),
    ];
    for (text, why) in cases {
        match text.parse::<Token>() {
            Err(Error::InvalidInput(m)) => {
                assert!(
                    m.starts_with("join token: expected ORC-1-<digest>-<secret>"),
                    "{m}"
                );
                assert!(m.contains(why), "{text:?}: {m}");
                assert!(!m.contains(secret), "the error echoes the secret: {m}");
            }
            other => panic!("{text:?} parsed as {other:?}"),
        }
    }
}

#[test]
fn secrets_are_fresh_and_well_formed() {
    let a = new_secret();
    let b = new_secret();
    assert_ne!(a, b);
    for s in [&a, &b] {
        assert_eq!(s.len(), SECRET_LEN);
        assert!(s
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }
    assert!(secrets_equal(&a, &a.clone()));
    assert!(!secrets_equal(&a, &b));
    assert!(!secrets_equal(&a, &a[1..]));
}

#[test]
fn issue_and_read_back_the_identity() {
    let ca = new_ca();
    let now = SystemTime::now();
    let (_, csr) = new_key_and_csr().unwrap();
    let pem = ca
        .issue(
            &csr,
            NodeId(0x0123_4567_89ab_cdef),
            Role::Manager,
            CLUSTER,
            90 * DAY,
            now,
        )
        .unwrap();
    let id = identity_of_pem(&pem).unwrap();
    assert_eq!(id.node_id, NodeId(0x0123_4567_89ab_cdef));
    assert_eq!(id.role, Role::Manager);
    assert_eq!(id.cluster_id, CLUSTER);
    let now_unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(id.not_before_unix, now_unix - 3600);
    assert_eq!(id.not_after_unix, now_unix + 90 * 24 * 3600);

    let (_, csr) = new_key_and_csr().unwrap();
    let pem = ca
        .issue(&csr, NodeId(7), Role::Worker, CLUSTER, DAY, now)
        .unwrap();
    let id = identity_of_pem(&pem).unwrap();
    assert_eq!((id.node_id, id.role), (NodeId(7), Role::Worker));
}

#[test]
fn the_root_names_the_cluster_and_its_digest_is_sha256_hex() {
    let ca = new_ca();
    let digest = ca.digest();
    assert_eq!(digest, digest_of_pem(ca.cert_pem()).unwrap());
    assert_eq!(digest.len(), 64);
    assert!(digest
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    assert_ne!(digest, new_ca().digest());
    // The root is not a node certificate.
    assert!(identity_of_pem(ca.cert_pem()).is_err());
    assert!(matches!(
        digest_of_pem("not pem"),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn garbage_csrs_are_invalid_input() {
    let ca = new_ca();
    let now = SystemTime::now();
    for csr in ["", "hello", ca.cert_pem()] {
        let err = ca
            .issue(csr, NodeId(1), Role::Worker, CLUSTER, DAY, now)
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    }
}

#[test]
fn from_pem_round_trips_and_checks_the_key() {
    let ca = new_ca();
    let loaded = RootCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
    assert_eq!(loaded.digest(), ca.digest());
    let other = new_ca();
    assert!(matches!(
        RootCa::from_pem(ca.cert_pem(), other.key_pem()),
        Err(Error::InvalidInput(_))
    ));
    let node = node_creds(&ca, 1, Role::Worker, SystemTime::now());
    assert!(RootCa::from_pem(&node.cert_pem, &node.key_pem).is_err());
}

#[tokio::test]
async fn members_of_one_ca_handshake_and_see_each_other() {
    let ca = new_ca();
    let now = SystemTime::now();
    let server = node_creds(&ca, 1, Role::Manager, now);
    let client = node_creds(&ca, 2, Role::Worker, now);
    let out = connect(
        server.server_config().unwrap(),
        client.client_config().unwrap(),
    )
    .await;
    assert_eq!(out.client, Ok(()));
    let seen = out.server.unwrap().expect("the server sees a client cert");
    assert_eq!(seen, client.identity().unwrap());
    assert_eq!((seen.node_id, seen.role), (NodeId(2), Role::Worker));
}

#[tokio::test]
async fn a_root_loaded_from_pem_signs_certificates_that_verify() {
    let ca = new_ca();
    let loaded = RootCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
    let now = SystemTime::now();
    let server = node_creds(&ca, 1, Role::Manager, now);
    let client = node_creds(&loaded, 2, Role::Manager, now);
    let out = connect(
        server.server_config().unwrap(),
        client.client_config().unwrap(),
    )
    .await;
    assert_eq!(out.client, Ok(()));
    assert_eq!(out.server.unwrap().map(|id| id.node_id), Some(NodeId(2)));
}

#[tokio::test]
async fn a_client_of_a_foreign_ca_is_refused() {
    let ca = new_ca();
    let foreign = new_ca();
    let now = SystemTime::now();
    let server = node_creds(&ca, 1, Role::Manager, now);
    let intruder = node_creds(&foreign, 2, Role::Manager, now);
    let out = connect(
        server.server_config().unwrap(),
        intruder.client_config().unwrap(),
    )
    .await;
    assert!(out.server.is_err(), "server accepted a foreign client");
    assert!(out.client.is_err());
}

#[tokio::test]
async fn a_server_of_a_foreign_ca_is_refused_by_a_member() {
    let ca = new_ca();
    let foreign = new_ca();
    let now = SystemTime::now();
    let impostor = node_creds(&foreign, 1, Role::Manager, now);
    let client = node_creds(&ca, 2, Role::Worker, now);
    let out = connect(
        impostor.server_config().unwrap(),
        client.client_config().unwrap(),
    )
    .await;
    let err = out.client.unwrap_err();
    assert!(err.starts_with("handshake:"), "{err}");
    assert!(out.server.is_err());
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let ca = new_ca();
    let now = SystemTime::now();
    let server = node_creds(&ca, 1, Role::Manager, now);
    let expired = node_creds(&ca, 2, Role::Worker, now - 400 * DAY);
    assert!(expired.identity().unwrap().not_after_unix < now_unix(now));
    let out = connect(
        server.server_config().unwrap(),
        expired.client_config().unwrap(),
    )
    .await;
    let err = out.server.unwrap_err();
    assert!(err.to_lowercase().contains("expired"), "{err}");
    assert!(out.client.is_err());
}

#[tokio::test]
async fn joining_with_the_right_digest_succeeds() {
    let ca = new_ca();
    let server = node_creds(&ca, 1, Role::Manager, SystemTime::now());
    let out = connect(
        server.server_config().unwrap(),
        join_client_config(&ca.digest()).unwrap(),
    )
    .await;
    assert_eq!(out.client, Ok(()));
    // The joining node has no certificate: the server lets it in anonymously.
    assert_eq!(out.server, Ok(None));
}

#[tokio::test]
async fn joining_with_a_wrong_digest_fails_the_handshake() {
    let ca = new_ca();
    let server = node_creds(&ca, 1, Role::Manager, SystemTime::now());
    let out = connect(
        server.server_config().unwrap(),
        join_client_config(&new_ca().digest()).unwrap(),
    )
    .await;
    let err = out.client.unwrap_err();
    assert!(err.starts_with("handshake:"), "{err}");
    assert!(err.contains("root CA of the join token"), "{err}");
    assert!(out.server.is_err());
}

#[tokio::test]
async fn a_pinned_root_does_not_vouch_for_a_certificate_it_did_not_sign() {
    // An impostor presents its own certificate followed by the genuine root (which is
    // public): the digest matches, but the chain does not verify against it.
    let ca = new_ca();
    let foreign = new_ca();
    let impostor = node_creds(&foreign, 1, Role::Manager, SystemTime::now());
    let lying = NodeCredentials {
        ca_cert_pem: ca.cert_pem().to_string(),
        ..impostor
    };
    let out = connect(
        lying.server_config().unwrap(),
        join_client_config(&ca.digest()).unwrap(),
    )
    .await;
    let err = out.client.unwrap_err();
    assert!(err.starts_with("handshake:"), "{err}");
    assert!(out.server.is_err());
}

#[test]
fn join_digests_are_checked() {
    assert!(matches!(
        join_client_config("abc"),
        Err(Error::InvalidInput(_))
    ));
    assert!(join_client_config(&"0".repeat(64)).is_ok());
}

#[tokio::test]
async fn a_client_without_a_certificate_still_completes_the_handshake() {
    let ca = new_ca();
    let server = node_creds(&ca, 1, Role::Manager, SystemTime::now());
    // Trusts the root like a member, but presents no certificate of its own.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der_of_pem(ca.cert_pem()).unwrap()).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    client.alpn_protocols = vec![ALPN_H2.to_vec()];
    let out = connect(server.server_config().unwrap(), Arc::new(client)).await;
    assert_eq!(out.client, Ok(()));
    assert_eq!(out.server, Ok(None));
}

#[test]
fn renewal_is_due_after_half_the_real_lifetime() {
    let ca = new_ca();
    let now = SystemTime::now();
    let creds = node_creds(&ca, 1, Role::Worker, now);
    let id = creds.identity().unwrap();
    let life = 90 * DAY;
    assert!(!needs_renewal(&id, now));
    assert!(!needs_renewal(&id, now + life.mul_f64(0.45)));
    assert!(needs_renewal(&id, now + life.mul_f64(0.55)));
    assert!(needs_renewal(&id, now + life * 2));
}

#[test]
fn a_short_certificate_is_not_due_at_once() {
    // The backdated hour is not life: a one-hour certificate counted from its
    // not-before would be past half-way at issue, and renew in a loop.
    let ca = new_ca();
    let now = SystemTime::now();
    for secs in [12u64, 3600, 7200] {
        let (key_pem, csr_pem) = new_key_and_csr().unwrap();
        let cert_pem = ca
            .issue(
                &csr_pem,
                NodeId(1),
                Role::Worker,
                CLUSTER,
                Duration::from_secs(secs),
                now,
            )
            .unwrap();
        let id = NodeCredentials {
            ca_cert_pem: ca.cert_pem().to_string(),
            cert_pem,
            key_pem,
        }
        .identity()
        .unwrap();
        let life = Duration::from_secs(secs);
        assert!(
            !needs_renewal(&id, now + Duration::from_secs(1)),
            "{secs} s"
        );
        assert!(!needs_renewal(&id, now + life.mul_f64(0.4)), "{secs} s");
        assert!(needs_renewal(&id, now + life.mul_f64(0.6)), "{secs} s");
    }
}

#[test]
fn credentials_are_shared_safely() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<RootCa>();
    send_sync::<NodeCredentials>();
    let creds = node_creds(&new_ca(), 1, Role::Worker, SystemTime::now());
    assert!(!format!("{creds:?}").contains(&creds.key_pem));
    let back: NodeCredentials =
        serde_json::from_str(&serde_json::to_string(&creds).unwrap()).unwrap();
    assert_eq!(back.identity().unwrap(), creds.identity().unwrap());
}

fn now_unix(now: SystemTime) -> i64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
