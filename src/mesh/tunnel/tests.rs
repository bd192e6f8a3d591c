//! Tunnels over loopback between two data paths of one throwaway cluster, a local echo
//! server standing for the container. Each hostile caller sits beside a positive
//! control that goes through the same setup.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::header::{self, NONCE_LEN};
use super::*;
use crate::ca::{new_key_and_csr, NodeCredentials, RootCa};
use crate::store::service::Protocol;
use crate::store::{Role, TaskId};

const CLUSTER: &str = "c0ffee";
const SERVER_NODE: NodeId = NodeId(1);
const CLIENT_NODE: NodeId = NodeId(2);

fn ca() -> RootCa {
    RootCa::generate(CLUSTER, SystemTime::now()).unwrap()
}

/// Credentials of node `id` issued by `ca`.
fn creds(ca: &RootCa, id: NodeId) -> NodeCredentials {
    let (key_pem, csr_pem) = new_key_and_csr().unwrap();
    let cert_pem = ca
        .issue(
            &csr_pem,
            id,
            Role::Worker,
            CLUSTER,
            Duration::from_secs(86_400),
            SystemTime::now(),
        )
        .unwrap();
    NodeCredentials {
        ca_cert_pem: ca.cert_pem().to_string(),
        cert_pem,
        key_pem,
    }
}

/// Key `id` of the pair (server, client), as each of the two holds it: the same bytes,
/// each naming the other.
fn key(id: u32, byte: u8) -> Vec<DataKey> {
    [SERVER_NODE, CLIENT_NODE]
        .into_iter()
        .map(|peer| DataKey {
            id,
            peer,
            key: [byte; 32],
        })
        .collect()
}

/// A TCP echo server that counts the connections it accepts; it echoes each until the
/// client's FIN, then closes its side.
struct Echo {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
}

async fn echo() -> Echo {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let n = accepts.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            n.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    Echo { addr, accepts }
}

/// A UDP echo server: every datagram goes back to its sender.
async fn udp_echo() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&buf[..n], from).await;
        }
    });
    addr
}

/// A serving node: its data path, where it listens, its echo backend.
struct Server {
    dp: Arc<DataPath>,
    addr: SocketAddr,
    echo: Echo,
    _stop: tokio_util::sync::DropGuard,
}

/// The server's tasks: `web` (plain network `front`, TCP 80, the echo server),
/// `vault` (encrypted network `secret`, TCP 80, the echo server), `dead` (TCP 80, a
/// closed port), `dns` (UDP 53, the UDP echo server).
async fn server(limits: Limits, ca: &RootCa) -> Server {
    let echo = echo().await;
    let udp = udp_echo().await;
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let web = echo.addr;
    let local = move |r: &Request| {
        let t = &r.target;
        let local = |addr, encrypted_network| Resolution::Local {
            addr,
            encrypted_network,
        };
        match (t.task.0.as_str(), t.network.as_str(), t.protocol, t.port) {
            ("web", "front", Protocol::Tcp, 80) => local(web, false),
            ("vault", "secret", Protocol::Tcp, 80) => local(web, true),
            ("dead", "front", Protocol::Tcp, 80) => local(closed, false),
            ("dns", "front", Protocol::Udp, 53) => local(udp, false),
            _ => Resolution::Refused,
        }
    };
    let dp = Arc::new(DataPath::new(SERVER_NODE, Arc::new(local), limits));
    dp.set_keys(key(1, 0xaa)).unwrap();
    dp.set_credentials(&creds(ca, SERVER_NODE)).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(dp.clone().serve(l, stop.clone()));
    Server {
        dp,
        addr,
        echo,
        _stop: stop.drop_guard(),
    }
}

/// A dialing node with key 1 and a certificate of `ca`.
fn client(ca: &RootCa) -> DataPath {
    let dp = DataPath::new(
        CLIENT_NODE,
        Arc::new(|_: &Request| Resolution::Refused),
        Limits::default(),
    );
    dp.set_keys(key(1, 0xaa)).unwrap();
    dp.set_credentials(&creds(ca, CLIENT_NODE)).unwrap();
    dp
}

fn target(task: &str, network: &str, protocol: Protocol, port: u16) -> Target {
    Target {
        protocol,
        port,
        network: network.into(),
        task: TaskId(task.into()),
    }
}

fn web() -> Target {
    target("web", "front", Protocol::Tcp, 80)
}

fn vault() -> Target {
    target("vault", "secret", Protocol::Tcp, 80)
}

/// Fails a test that hangs instead of waiting forever.
async fn in_time<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("finished within 60 s")
}

/// Waits until `cond` holds (the server counts a refusal after the client saw it).
async fn eventually(cond: impl Fn() -> bool) {
    in_time(async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// Deterministic bytes.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends `len` bytes through an echoing tunnel in odd-sized chunks, then its FIN (a
/// half-close: the echo goes on answering after it), and checks that exactly the same
/// bytes come back before the end.
async fn round_trip<S: AsyncRead + AsyncWrite + Send + 'static>(s: S, len: usize) {
    let (mut r, mut w) = tokio::io::split(s);
    let data = bytes(len as u64, len);
    let want = Sha256::digest(&data).to_vec();
    let writer = tokio::spawn(async move {
        let mut at = 0;
        let mut i = 0usize;
        while at < data.len() {
            let n = (1 + (i * 7919) % 100_000).min(data.len() - at);
            w.write_all(&data[at..at + n]).await.unwrap();
            at += n;
            i += 1;
        }
        w.shutdown().await.unwrap();
        w
    });
    let mut h = Sha256::new();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        got += n;
    }
    let _w = writer.await.unwrap();
    assert_eq!(got, len, "bytes echoed");
    assert_eq!(h.finalize().to_vec(), want, "the echo differs");
}

/// One short request and its echo.
async fn ping<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    s.flush().await.unwrap();
    let mut got = vec![0u8; msg.len()];
    in_time(s.read_exact(&mut got)).await.unwrap();
    assert_eq!(got, msg);
}

/// True when the peer closes `s` (EOF or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 64];
    loop {
        match tokio::time::timeout(within, s.read(&mut b)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn plain_tunnel_carries_10_mb_both_ways_with_a_half_close() {
    let ca = ca();
    let srv = server(Limits::default(), &ca).await;
    let c = client(&ca);
    let t = in_time(c.connect(SERVER_NODE, srv.addr, &web(), false))
        .await
        .unwrap();
    assert!(matches!(t, TunnelStream::Plain(_)));
    in_time(round_trip(t, 10 << 20)).await;
    assert_eq!(srv.echo.accepts.load(Ordering::SeqCst), 1);
    let s = srv.dp.stats().snapshot();
    assert_eq!((s.accepted, s.connected, s.bad_auth), (1, 1, 0));
}

#[tokio::test]
async fn tls_tunnel_carries_10_mb_both_ways_with_a_half_close() {
    let ca = ca();
    let srv = server(Limits::default(), &ca).await;
    let c = client(&ca);
    let t = in_time(c.connect(SERVER_NODE, srv.addr, &vault(), true))
        .await
        .unwrap();
    assert!(matches!(t, TunnelStream::Tls(_)));
    in_time(round_trip(t, 10 << 20)).await;
    // a plain network may be reached encrypted too
    let t = in_time(c.connect(SERVER_NODE, srv.addr, &web(), true))
        .await
        .unwrap();
    in_time(round_trip(t, 1000)).await;
    assert_eq!(srv.echo.accepts.load(Ordering::SeqCst), 2);
    assert_eq!(srv.dp.stats().snapshot().connected, 2);
}

#[tokio::test]
async fn a_wrong_key_is_refused_before_any_backend_is_dialed() {
    let ca = ca();
    let srv = server(Limits::default(), &ca).await;
    // control: the right key
    let good = client(&ca);
    let mut t = in_time(good.connect(SERVER_NODE, srv.addr, &web(), false))
        .await
        .unwrap();
    ping(&mut t, b"hello").await;
    assert_eq!(srv.echo.accepts.load(Ordering::SeqCst), 1);

    // same id, other bytes
    let bad = client(&ca);
    bad.set_keys(key(1, 0xbb)).unwrap();
    let e = in_time(bad.connect(SERVER_NODE, srv.addr, &web(), false))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
    // an id the server does not know
    bad.set_keys(key(7, 0xaa)).unwrap();
    let e = in_time(bad.connect(SERVER_NODE, srv.addr, &web(), false))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
    assert_eq!(
        srv.echo.accepts.load(Ordering::SeqCst),
        1,
        "no backend dialed"
    );
    assert_eq!(srv.dp.stats().snapshot().bad_auth, 2);
}

#[tokio::test]
async fn a_key_rotation_keeps_old_ids_working_and_open_tunnels_open() {
    let ca = ca();
    let srv = server(Limits::default(), &ca).await;
    let old_client = client(&ca);
    let mut before = in_time(old_client.connect(SERVER_NODE, srv.addr, &web(), false))
        .await
        .unwrap();
    ping(&mut before, b"before").await;

    // the managers hand out key 2; the server learns it first, one client too
    srv.dp
        .set_keys([key(1, 0xaa), key(2, 0xcc)].concat())
        .unwrap();
    let new_client = client(&ca);
    new_client
        .set_keys([key(2, 0xcc), key(1, 0xaa)].concat())
        .unwrap();
    // the new client signs with key 2 (the highest id): a server that knows only key 2
    // takes it
    let only_new = server(Limits::default(), &ca).await;
    only_new.dp.set_keys(key(2, 0xcc)).unwrap();
    let mut t = in_time(new_client.connect(SERVER_NODE, only_new.addr, &web(), false))
        .await
        .unwrap();
    ping(&mut t, b"new key").await;
    let mut t = in_time(new_client.connect(SERVER_NODE, srv.addr, &web(), false))
        .await
        .unwrap();
    ping(&mut t, b"new key").await;
    // a client still on key 1 gets in as well
    let mut t = in_time(old_client.connect(SERVER_NODE, srv.addr, &web(), false))
        .await
        .unwrap();
    ping(&mut t, b"old key").await;
    // and the tunnel opened before the rotation goes on
    ping(&mut before, b"after").await;

    // once key 1 is withdrawn, it no longer opens tunnels, but open ones stay
    srv.dp.set_keys(key(2, 0xcc)).unwrap();
    let e = in_time(old_client.connect(SERVER_NODE, srv.addr, &web(), false))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
    ping(&mut before, b"still open").await;

    assert!(srv.dp.set_keys([key(3, 1), key(3, 2)].concat()).is_err());
}

/// The first half of a plain handshake done by hand: the connection, the client nonce
/// sent, the server nonce received.
async fn hello(addr: SocketAddr, cn: [u8; NONCE_LEN]) -> (TcpStream, [u8; NONCE_LEN]) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&header::hello(&cn)).await.unwrap();
    let mut sn = [0u8; NONCE_LEN];
    s.read_exact(&mut sn).await.unwrap();
    (s, sn)
}

async fn status(s: &mut TcpStream) -> Option<u8> {
    let mut b = [0u8; 1];
    match in_time(s.read(&mut b)).await {
        Ok(1) => Some(b[0]),
        _ => None,
    }
}

#[tokio::test]
async fn a_recorded_plain_handshake_does_not_replay() {
    let ca = ca();
    let srv = server(Limits::default(), &ca).await;
    let req = Request {
        from: CLIENT_NODE,
        target: web(),
    };
    let h = req.encode().unwrap();
    let k = hmac::Key::new(hmac::HMAC_SHA256, &[0xaa; 32]);
    let cn = [7u8; NONCE_LEN];

    // control: the handshake, done by hand, opens a tunnel; its client bytes are kept
    let (mut s, sn) = hello(srv.addr, cn).await;
    let mut rest = 1u32.to_be_bytes().to_vec();
    rest.extend_from_slice(&h);
    rest.extend_from_slice(&header::sign(&k, &cn, &sn, 1, &h));
    s.write_all(&rest).await.unwrap();
    assert_eq!(status(&mut s).await, Some(Status::Connected as u8));
    ping(&mut s, b"live").await;

    // an eavesdropper replays the same client bytes on a new connection
    let (mut r, sn2) = hello(srv.addr, cn).await;
    assert_ne!(sn, sn2, "each connection gets a fresh server nonce");
    r.write_all(&rest).await.unwrap();
    assert_eq!(status(&mut r).await, Some(Status::BadAuth as u8));
    assert!(closed_within(&mut r, Duration::from_secs(5)).await);
    assert_eq!(srv.echo.accepts.load(Ordering::SeqCst), 1);
    assert_eq!(srv.dp.stats().snapshot().bad_auth, 1);
}

#[tokio::test]
async fn an_encrypted_network_is_not_reached_in_plain() {
    let ca = ca();
    let srv = server(Limits::default(), &ca).await;
    let c = client(&ca);
    let e = in_time(c.connect(SERVER_NODE, srv.addr, &vault(), false))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    assert_eq!(srv.echo.accepts.load(Ordering::SeqCst), 0);
    // control: the same request over TLS
    let mut t = in_time(c.connect(SERVER_NODE, srv.addr, &vault(), true))
        .await
        .unwrap();
    ping(&mut t, b"secret").await;
    let s = srv.dp.stats().snapshot();
    assert_eq!((s.downgrades, s.refused, s.connected), (1, 1, 1));
}

#[tokio::test]
async fn a_certificate_of_another_ca_is_refused() {
    let ca = ca();
    let srv = server(Limits::default(), &ca).await;
    // control
    let mut t = in_time(client(&ca).connect(SERVER_NODE, srv.addr, &vault(), true))
        .await
        .unwrap();
    ping(&mut t, b"ok").await;

    // a client that trusts the cluster's root but holds a certificate of another CA
    let other = RootCa::generate(CLUSTER, SystemTime::now()).unwrap();
    let forged = creds(&other, CLIENT_NODE);
    let c = client(&ca);
    c.set_credentials(&NodeCredentials {
        ca_cert_pem: ca.cert_pem().to_string(),
        ..forged.clone()
    })
    .unwrap();
    let e = in_time(c.connect(SERVER_NODE, srv.addr, &vault(), true))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Internal(_)), "{e:?}");
    // a client wholly of the other CA does not even accept the server
    let c = client(&other);
    let e = in_time(c.connect(SERVER_NODE, srv.addr, &vault(), true))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Internal(_)), "{e:?}");
    assert_eq!(srv.echo.accepts.load(Ordering::SeqCst), 1);
    // the server may count the second failure after the client has given up
    eventually(|| srv.dp.stats().snapshot().tls_failures == 2).await;
}

#[tokio::test]
async fn tls_without_a_client_certificate_is_refused() {
    let ca = ca();
    let srv = server(Limits::default(), &ca).await;
    let mut roots = rustls::RootCertStore::empty();
    let root = rustls::pki_types::CertificateDer::from_pem_slice(ca.cert_pem().as_bytes());
    roots.add(root.unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let header = Request {
        from: CLIENT_NODE,
        target: vault(),
    }
    .encode()
    .unwrap();
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let name = ServerName::try_from(crate::ca::SERVER_NAME).unwrap();
    // the client's side of a TLS 1.3 handshake completes before the server judges it
    let r = async {
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        tls.write_all(&header).await?;
        tls.flush().await?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await?;
        Ok::<u8, io::Error>(b[0])
    };
    assert!(in_time(r).await.is_err());
    assert_eq!(srv.echo.accepts.load(Ordering::SeqCst), 0);
    eventually(|| srv.dp.stats().snapshot().tls_failures == 1).await;
    // control: with its certificate
    let mut t = in_time(client(&ca).connect(SERVER_NODE, srv.addr, &vault(), true))
        .await
        .unwrap();
    ping(&mut t, b"ok").await;
}

use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn a_node_cannot_speak_for_another_in_plain_mode() {
    let ca = ca();
    let srv = server(Limits::default(), &ca).await;
    // the server holds its pair keys with node 2 (0xaa) and node 3 (0x33)
    let mut ring = key(1, 0xaa);
    ring.push(DataKey {
        id: 1,
        peer: NodeId(3),
        key: [0x33; 32],
    });
    srv.dp.set_keys(ring).unwrap();
    // node 3, holding only its own pair's key, claims to be node 2
    let liar = DataPath::new(
        CLIENT_NODE,
        Arc::new(|_: &Request| Resolution::Refused),
        Limits::default(),
    );
    let own = DataKey {
        id: 1,
        peer: SERVER_NODE,
        key: [0x33; 32],
    };
    liar.set_keys(vec![own.clone()]).unwrap();
    let e = in_time(liar.connect(SERVER_NODE, srv.addr, &web(), false))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
    assert_eq!(srv.echo.accepts.load(Ordering::SeqCst), 0);
    // once the server no longer lists node 2 (removed), node 2's own key is refused too
    srv.dp
        .set_keys(vec![DataKey {
            id: 1,
            peer: NodeId(3),
            key: [0x33; 32],
        }])
        .unwrap();
    let e = in_time(client(&ca).connect(SERVER_NODE, srv.addr, &web(), false))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
    assert_eq!(srv.dp.stats().snapshot().bad_auth, 2);
    // control: node 3 as itself
    let honest = DataPath::new(
        NodeId(3),
        Arc::new(|_: &Request| Resolution::Refused),
        Limits::default(),
    );
    honest.set_keys(vec![own]).unwrap();
    let mut t = in_time(honest.connect(SERVER_NODE, srv.addr, &web(), false))
        .await
        .unwrap();
    ping(&mut t, b"ok").await;
}

#[tokio::test]
async fn a_node_cannot_speak_for_another_over_tls() {
    let ca = ca();
    let srv = server(Limits::default(), &ca).await;
    // node 3 holding node 2's certificate
    let c = DataPath::new(
        NodeId(3),
        Arc::new(|_: &Request| Resolution::Refused),
        Limits::default(),
    );
    c.set_credentials(&creds(&ca, CLIENT_NODE)).unwrap();
    let e = in_time(c.connect(SERVER_NODE, srv.addr, &vault(), true))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    assert_eq!(srv.echo.accepts.load(Ordering::SeqCst), 0);
    // control: node 3 with its own certificate
    c.set_credentials(&creds(&ca, NodeId(3))).unwrap();
    let mut t = in_time(c.connect(SERVER_NODE, srv.addr, &vault(), true))
        .await
        .unwrap();
    ping(&mut t, b"ok").await;
}

#[tokio::test]
async fn renewed_certificates_serve_new_tunnels_and_leave_open_ones() {
    let ca = ca();
    let srv = server(Limits::default(), &ca).await;
    let c = client(&ca);
    let mut open = in_time(c.connect(SERVER_NODE, srv.addr, &vault(), true))
        .await
        .unwrap();
    ping(&mut open, b"first").await;
    // both ends renew
    srv.dp.set_credentials(&creds(&ca, SERVER_NODE)).unwrap();
    c.set_credentials(&creds(&ca, CLIENT_NODE)).unwrap();
    let mut t = in_time(c.connect(SERVER_NODE, srv.addr, &vault(), true))
        .await
        .unwrap();
    ping(&mut t, b"renewed").await;
    ping(&mut open, b"still open").await;
    // a server now holding another CA's material refuses the old cluster's clients
    let other = RootCa::generate(CLUSTER, SystemTime::now()).unwrap();
    srv.dp.set_credentials(&creds(&other, SERVER_NODE)).unwrap();
    assert!(in_time(c.connect(SERVER_NODE, srv.addr, &vault(), true))
        .await
        .is_err());
    ping(&mut open, b"and open").await;
}

/// Reads exactly `n` bytes of a tunnel into a digest.
async fn drain<R: AsyncRead + Unpin>(r: &mut R, n: usize) -> Vec<u8> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let k = r.read(&mut buf[..left.min(64 * 1024)]).await.unwrap();
        assert!(k > 0, "early end");
        h.update(&buf[..k]);
        left -= k;
    }
    h.finalize().to_vec()
}

#[tokio::test]
async fn tls_tunnels_survive_many_key_updates_with_their_bytes_intact() {
    let ca = ca();
    let limits = Limits {
        key_update: KeyUpdatePolicy {
            bytes: 256 * 1024,
            interval: Duration::from_millis(200),
        },
        ..Limits::default()
    };
    let srv = server(limits, &ca).await;
    let c = DataPath::new(
        CLIENT_NODE,
        Arc::new(|_: &Request| Resolution::Refused),
        limits,
    );
    c.set_credentials(&creds(&ca, CLIENT_NODE)).unwrap();
    let mut t = in_time(c.connect(SERVER_NODE, srv.addr, &vault(), true))
        .await
        .unwrap();

    // by bytes: 10 MB each way renews the keys dozens of times on each side
    let data = bytes(9, 10 << 20);
    let want = Sha256::digest(&data).to_vec();
    let (mut r, mut w) = tokio::io::split(t);
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.flush().await.unwrap();
        w
    });
    assert_eq!(in_time(drain(&mut r, 10 << 20)).await, want);
    let w = writer.await.unwrap();
    t = r.unsplit(w);
    let (cs, ss) = (c.stats().snapshot(), srv.dp.stats().snapshot());
    assert!(cs.key_updates >= 20, "client updates: {}", cs.key_updates);
    assert!(ss.key_updates >= 20, "server updates: {}", ss.key_updates);

    // by time: a tunnel that waits renews the key its last bytes used, once
    ping(&mut t, b"then silence").await;
    let (c0, s0) = (c.stats().snapshot(), srv.dp.stats().snapshot());
    // (the relay always has a read pending on its tunnel; here a read stands for it)
    let mut b = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_millis(700), t.read(&mut b)).await;
    assert!(waited.is_err(), "nothing to read while waiting");
    let (c1, s1) = (c.stats().snapshot(), srv.dp.stats().snapshot());
    assert_eq!(c1.key_updates, c0.key_updates + 1, "client while waiting");
    assert_eq!(s1.key_updates, s0.key_updates + 1, "server while waiting");
    ping(&mut t, b"after the updates").await;

    // a forced update in the middle of a stream
    if let TunnelStream::Tls(s) = &mut t {
        for _ in 0..5 {
            s.update_keys().unwrap();
            ping(s.as_mut(), b"forced").await;
        }
    }
    in_time(round_trip(t, 1 << 20)).await;
    assert_eq!(srv.echo.accepts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unknown_task_is_refused_and_a_dead_one_is_unavailable() {
    let ca = ca();
    let srv = server(Limits::default(), &ca).await;
    let c = client(&ca);
    for encrypted in [false, true] {
        for t in [
            target("nope", "front", Protocol::Tcp, 80),
            target("web", "front", Protocol::Tcp, 81),
            target("web", "back", Protocol::Tcp, 80),
            target("web", "front", Protocol::Udp, 80),
        ] {
            let e = in_time(c.connect(SERVER_NODE, srv.addr, &t, encrypted))
                .await
                .unwrap_err();
            assert!(matches!(e, Error::NotFound(_)), "{t:?}: {e:?}");
        }
        let e = in_time(c.connect(
            SERVER_NODE,
            srv.addr,
            &target("dead", "front", Protocol::Tcp, 80),
            encrypted,
        ))
        .await
        .unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
        // control
        let mut t = in_time(c.connect(SERVER_NODE, srv.addr, &web(), encrypted))
            .await
            .unwrap();
        ping(&mut t, b"here").await;
    }
    let s = srv.dp.stats().snapshot();
    assert_eq!((s.refused, s.unavailable, s.connected), (8, 2, 2));
}

#[tokio::test]
async fn an_oversize_header_closes_the_connection() {
    let ca = ca();
    let srv = server(Limits::default(), &ca).await;
    let cn = [1u8; NONCE_LEN];
    let (mut s, _) = hello(srv.addr, cn).await;
    // key id, then a length prefix announcing 65,535 bytes
    s.write_all(&[0, 0, 0, 1, 0xff, 0xff]).await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    // just over the cap
    let (mut s, _) = hello(srv.addr, cn).await;
    let over = (MAX_HEADER - 1) as u16;
    let mut m = vec![0, 0, 0, 1];
    m.extend_from_slice(&over.to_be_bytes());
    s.write_all(&m).await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    assert_eq!(srv.dp.stats().snapshot().bad_headers, 2);
    // and a first byte of no mode
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    assert_eq!(srv.dp.stats().snapshot().unknown_mode, 1);
    // control: the largest header that fits goes through (ids of the longest size
    // are refused by the lookup, not by the size check)
    let req = Request {
        from: CLIENT_NODE,
        target: target(&"t".repeat(128), &"n".repeat(128), Protocol::Tcp, 80),
    };
    assert!(req.encode().unwrap().len() <= MAX_HEADER);
    let e = in_time(client(&ca).connect(SERVER_NODE, srv.addr, &req.target, false))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    assert_eq!(srv.echo.accepts.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_slow_handshake_is_cut_at_the_deadline() {
    let ca = ca();
    let limits = Limits {
        handshake_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let srv = server(limits, &ca).await;
    // control: a prompt caller
    let mut t = in_time(client(&ca).connect(SERVER_NODE, srv.addr, &web(), false))
        .await
        .unwrap();
    ping(&mut t, b"quick").await;
    // a caller that dribbles its hello and never finishes it
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"OR").await.unwrap();
    let start = std::time::Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    assert!(start.elapsed() < Duration::from_secs(3));
    // one that finishes TLS but never sends its header
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(&[0x16]).await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    assert_eq!(srv.dp.stats().snapshot().handshake_timeouts, 2);
    // the tunnel opened before is not cut by any deadline
    tokio::time::sleep(Duration::from_millis(400)).await;
    ping(&mut t, b"still here").await;
}

#[tokio::test]
async fn unfinished_handshakes_are_capped_per_address() {
    let ca = ca();
    let limits = Limits {
        max_handshakes_per_ip: 3,
        ..Limits::default()
    };
    let srv = server(limits, &ca).await;
    let c = client(&ca);
    // control
    let mut open = in_time(c.connect(SERVER_NODE, srv.addr, &web(), false))
        .await
        .unwrap();
    ping(&mut open, b"ok").await;
    // three callers that stall in their handshake hold all of 127.0.0.1's slots
    let mut stalled = vec![];
    for _ in 0..3 {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(b"O").await.unwrap();
        stalled.push(s);
    }
    // wait until the server has taken them all in
    in_time(async {
        while srv.dp.stats().snapshot().accepted < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut fourth = TcpStream::connect(srv.addr).await.unwrap();
    assert!(closed_within(&mut fourth, Duration::from_secs(5)).await);
    let e = in_time(c.connect(SERVER_NODE, srv.addr, &web(), false))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Internal(_)), "{e:?}");
    assert_eq!(srv.dp.stats().snapshot().over_ip_cap, 2);
    // the finished tunnel holds no slot and keeps working
    ping(&mut open, b"still").await;
    // the stalled callers leave: their slots come back
    drop(stalled);
    in_time(async {
        loop {
            if c.connect(SERVER_NODE, srv.addr, &web(), false)
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_tunnel_count_is_capped() {
    let ca = ca();
    let limits = Limits {
        max_tunnels: 2,
        ..Limits::default()
    };
    let srv = server(limits, &ca).await;
    let c = client(&ca);
    let mut a = in_time(c.connect(SERVER_NODE, srv.addr, &web(), false))
        .await
        .unwrap();
    let mut b = in_time(c.connect(SERVER_NODE, srv.addr, &web(), true))
        .await
        .unwrap();
    ping(&mut a, b"a").await;
    ping(&mut b, b"b").await;
    assert!(in_time(c.connect(SERVER_NODE, srv.addr, &web(), false))
        .await
        .is_err());
    assert_eq!(srv.dp.stats().snapshot().over_capacity, 1);
    // one ends: its place is free again
    a.shutdown().await.unwrap();
    drop(a);
    in_time(async {
        loop {
            if c.connect(SERVER_NODE, srv.addr, &web(), false)
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn udp_datagrams_cross_the_tunnel_both_ways() {
    let ca = ca();
    let srv = server(Limits::default(), &ca).await;
    let c = client(&ca);
    let dns = target("dns", "front", Protocol::Udp, 53);
    for encrypted in [false, true] {
        let mut t = in_time(c.connect(SERVER_NODE, srv.addr, &dns, encrypted))
            .await
            .unwrap();
        let sizes = [0usize, 1, 512, 1400, 9000, MAX_DATAGRAM];
        for (i, n) in sizes.iter().enumerate() {
            send_datagram(&mut t, &bytes(i as u64, *n)).await.unwrap();
        }
        let mut buf = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            assert!(in_time(recv_datagram(&mut t, &mut buf)).await.unwrap());
            assert_eq!(buf, bytes(i as u64, *n), "datagram {i}");
        }
        // a frame over the limit is refused on the sending side...
        assert!(send_datagram(&mut t, &vec![0; MAX_DATAGRAM + 1])
            .await
            .is_err());
        // ...and closes the tunnel on the serving side
        t.write_all(&u16::MAX.to_be_bytes()).await.unwrap();
        t.flush().await.unwrap();
        assert!(!in_time(recv_datagram(&mut t, &mut buf))
            .await
            .unwrap_or(false));
    }
    // counted as the server's session ends, which may be after the client sees it
    eventually(|| srv.dp.stats().snapshot().oversize_frames == 2).await;
}

#[tokio::test]
async fn a_silent_udp_tunnel_ends() {
    let ca = ca();
    let limits = Limits {
        udp_idle: Duration::from_millis(300),
        ..Limits::default()
    };
    let srv = server(limits, &ca).await;
    let c = client(&ca);
    let dns = target("dns", "front", Protocol::Udp, 53);
    let mut t = in_time(c.connect(SERVER_NODE, srv.addr, &dns, false))
        .await
        .unwrap();
    let mut buf = Vec::new();
    // control: while datagrams flow, it stays
    for i in 0..5u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        send_datagram(&mut t, &bytes(i, 100)).await.unwrap();
        assert!(in_time(recv_datagram(&mut t, &mut buf)).await.unwrap());
    }
    // silence ends it
    let start = std::time::Instant::now();
    assert!(!in_time(recv_datagram(&mut t, &mut buf)).await.unwrap());
    assert!(start.elapsed() >= Duration::from_millis(250));
}

#[test]
fn headers_round_trip_and_malformed_ones_are_refused() {
    let req = Request {
        from: NodeId(0x0123_4567_89ab_cdef),
        target: target("task1", "net1", Protocol::Udp, 5353),
    };
    let h = req.encode().unwrap();
    assert_eq!(header::body_len([h[0], h[1]]).unwrap(), h.len() - 2);
    assert_eq!(Request::decode(&h[2..]).unwrap(), req);
    // each cut is refused, as are trailing bytes
    for n in 0..h.len() - 2 {
        assert!(Request::decode(&h[2..2 + n]).is_err(), "cut at {n}");
    }
    let mut long = h[2..].to_vec();
    long.push(0);
    assert!(Request::decode(&long).is_err());
    // a protocol that is neither
    let mut bad = h[2..].to_vec();
    bad[8] = 2;
    assert!(Request::decode(&bad).is_err());
    // empty or too long ids do not encode
    for (t, n) in [("", "n"), ("t", ""), (&*"t".repeat(129), "n")] {
        let r = Request {
            from: NodeId(1),
            target: target(t, n, Protocol::Tcp, 1),
        };
        assert!(r.encode().is_err(), "{t:?} {n:?}");
    }
}

/// Loopback throughput of one tunnel, plain and TLS, 1 GiB each way through an echo
/// server, beside the same echo reached directly (what the mesh's backend connection
/// costs without a tunnel):
/// `cargo test --release --offline --lib mesh::tunnel::tests::throughput -- --ignored
/// --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    let ca = ca();
    let srv = server(Limits::default(), &ca).await;
    let c = client(&ca);
    let direct = TcpStream::connect(srv.echo.addr).await.unwrap();
    report("direct", direct).await;
    let plain = c
        .connect(SERVER_NODE, srv.addr, &web(), false)
        .await
        .unwrap();
    report("plain tunnel", plain).await;
    let tls = c
        .connect(SERVER_NODE, srv.addr, &web(), true)
        .await
        .unwrap();
    report("tls tunnel", tls).await;
}

/// Sends 1 GiB through `s` to the echo and reads it back; prints the rate.
async fn report<S: AsyncRead + AsyncWrite + Send + 'static>(what: &str, s: S) {
    const TOTAL: usize = 1 << 30;
    let (mut r, mut w) = tokio::io::split(s);
    let start = std::time::Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![0x5au8; 256 * 1024];
        let mut left = TOTAL;
        while left > 0 {
            let n = left.min(chunk.len());
            w.write_all(&chunk[..n]).await.unwrap();
            left -= n;
        }
        w.shutdown().await.unwrap();
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    writer.await.unwrap();
    assert_eq!(got, TOTAL);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{what}: 1 GiB each way in {secs:.2} s: {:.0} MB/s ({:.2} Gbit/s) per direction",
        TOTAL as f64 / secs / 1e6,
        TOTAL as f64 * 8.0 / secs / 1e9
    );
}
