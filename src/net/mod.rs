//! Transport: how gRPC travels between processes.
//!
//! - The **local socket** (`/run/orc/orc.sock`, mode 0600) carries the CLI's calls to its
//!   own daemon. It is the only door without authentication; the file mode guards it.
//! - The **cluster port** (default 4242) carries everything between nodes over mutual
//!   TLS. We drive rustls ourselves (tokio-rustls) rather than through tonic's TLS
//!   options, so that the server can accept a client without a certificate (the join
//!   RPC) and every handler can read the caller's certificate from [`PeerInfo`] and check
//!   its role itself.
//! - [`Peers`] keeps one lazily connected channel per remote address, rebuilt when this
//!   node's certificate changes (renewal, promotion). [`Peers::channel`] accepts only a
//!   manager's certificate on the other end; [`Peers::node_channel`] any node's.
//!
//! # What a stranger can cost the cluster port
//!
//! Before TLS: a connection beyond [`MAX_CONNS_PER_IP`] from one address, or beyond
//! [`MAX_CONNS`] in all, is closed at once; after it, one without a client certificate
//! beyond [`MAX_ANONYMOUS`]. The handshake must end within [`HANDSHAKE_TIMEOUT`].
//! After it: a connection without a client certificate may live [`ANONYMOUS_LIFETIME`] (time
//! for a join), and any connection from which nothing was read for [`IDLE_TIMEOUT`] is
//! closed (clients send HTTP/2 pings every 5 s, so a live peer is never idle). What a
//! caller may then call, and how many bytes it may send, is decided per RPC before its
//! body is read ([`crate::api::gate`]).
//!
//! Connect and request time-outs are short and bounded: a dead peer must cost a bounded
//! wait, never a hang, so that failover stays fast.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::ca::{self, Identity, NodeCredentials};
use crate::error::{Error, Result};

/// How long a TCP connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a TLS handshake may take, on either side, once connected. A manager busy
/// with a thousand nodes finding it after a leader change answered handshakes in more
/// than a second: clients that gave up at one second and tried again every 200 ms kept
/// it busy with handshakes no one waited for.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one RPC between nodes may take by default.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections the cluster port holds at once, from everyone: a manager of a cluster of
/// 1,000 nodes holds one from each, and during a leader change a second from many (at
/// 1,024, nodes finding a new leader were refused).
pub const MAX_CONNS: usize = 8192;
/// Connections without a client certificate (joins only) held at once, after their
/// handshake.
pub const MAX_ANONYMOUS: usize = 256;
/// Connections the cluster port holds at once from one IP address.
pub const MAX_CONNS_PER_IP: usize = 64;
/// How long a connection without a client certificate may stay open.
pub const ANONYMOUS_LIFETIME: Duration = Duration::from_secs(60);
/// A connection from which nothing was read for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// What a handler knows about the connection its request came on.
#[derive(Clone, Debug, Default)]
pub struct PeerInfo {
    /// The client's certificate chain, if it presented one (cluster port only).
    pub certs: Option<Vec<CertificateDer<'static>>>,
    /// True for the local unix socket.
    pub local: bool,
    /// The client's address as this end of the TCP connection sees it (cluster port).
    pub remote: Option<std::net::SocketAddr>,
    /// The identity read from `certs`, once for the connection ([`PeerInfo::of_tls`]):
    /// read again at each call, it was 9% of the leader's time with 1,000 nodes.
    known: Option<Identity>,
}

impl PeerInfo {
    /// A cluster-port connection's: its verified chain (if any) and the address it
    /// came from; the identity in the chain is read here, once.
    pub fn of_tls(
        certs: Option<Vec<CertificateDer<'static>>>,
        remote: std::net::SocketAddr,
    ) -> PeerInfo {
        let known = certs
            .as_ref()
            .and_then(|c| c.first())
            .and_then(|c| ca::identity_of_der(c.as_ref()).ok());
        PeerInfo {
            certs,
            local: false,
            remote: Some(remote),
            known,
        }
    }

    /// The local socket's.
    pub fn local() -> PeerInfo {
        PeerInfo {
            local: true,
            ..PeerInfo::default()
        }
    }

    /// The identity in the caller's verified certificate, if any.
    pub fn identity(&self) -> Option<Identity> {
        self.known.clone()
    }
}

/// Reads the [`PeerInfo`] of a request (absent means an in-process call).
pub fn peer_of<T>(req: &tonic::Request<T>) -> PeerInfo {
    req.extensions()
        .get::<PeerInfo>()
        .cloned()
        .unwrap_or_default()
}

/// A server-side connection with the [`PeerInfo`] attached for tonic. It ends itself
/// (reads fail) when nothing was read for [`IDLE_TIMEOUT`], or at `deadline`.
pub struct Conn<S> {
    io: S,
    info: PeerInfo,
    /// Fires when the connection has been idle too long or reached its deadline.
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// The connection's end of life, if it has one (anonymous connections).
    deadline: Option<tokio::time::Instant>,
    /// Frees this connection's place in the caps when dropped.
    _slot: Option<ConnSlot>,
}

impl<S> Conn<S> {
    fn new(
        io: S,
        info: PeerInfo,
        deadline: Option<tokio::time::Instant>,
        slot: Option<ConnSlot>,
    ) -> Self {
        let mut c = Conn {
            io,
            info,
            timer: None,
            deadline,
            _slot: slot,
        };
        if !c.info.local {
            c.timer = Some(Box::pin(tokio::time::sleep_until(c.next_timeout())));
        }
        c
    }

    fn next_timeout(&self) -> tokio::time::Instant {
        let idle = tokio::time::Instant::now() + IDLE_TIMEOUT;
        match self.deadline {
            Some(d) => d.min(idle),
            None => idle,
        }
    }
}

/// A place in the connection caps of the cluster port.
pub struct ConnSlot {
    ip: std::net::IpAddr,
    caps: Arc<ConnCaps>,
    /// Counted among the connections without a certificate.
    anonymous: bool,
}

impl ConnSlot {
    /// Counts this connection among those without a client certificate: false (and not
    /// counted) when [`MAX_ANONYMOUS`] are open.
    pub fn anonymous(&mut self) -> bool {
        let mut t = self.caps.table.lock().expect("caps lock");
        if t.anonymous >= MAX_ANONYMOUS {
            return false;
        }
        t.anonymous += 1;
        self.anonymous = true;
        true
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut t = self.caps.table.lock().expect("caps lock");
        t.total = t.total.saturating_sub(1);
        if self.anonymous {
            t.anonymous -= 1;
        }
        if let Some(n) = t.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Counts of open connections, in all and per address.
#[derive(Default)]
pub struct ConnCaps {
    table: Mutex<CapTable>,
}

#[derive(Default)]
struct CapTable {
    total: usize,
    anonymous: usize,
    per_ip: HashMap<std::net::IpAddr, usize>,
}

impl ConnCaps {
    /// Takes a place for a connection from `ip`, or `None` when a cap is reached.
    pub fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<ConnSlot> {
        let mut t = self.table.lock().expect("caps lock");
        let n = t.per_ip.get(&ip).copied().unwrap_or(0);
        if t.total >= MAX_CONNS || n >= MAX_CONNS_PER_IP {
            return None;
        }
        t.total += 1;
        t.per_ip.insert(ip, n + 1);
        Some(ConnSlot {
            ip,
            caps: self.clone(),
            anonymous: false,
        })
    }

    /// Open connections in all.
    pub fn total(&self) -> usize {
        self.table.lock().expect("caps lock").total
    }
}

impl<S> tonic::transport::server::Connected for Conn<S> {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future;
        use std::task::Poll;
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            if buf.filled().len() > before {
                let next = self.next_timeout();
                if let Some(t) = self.timer.as_mut() {
                    t.as_mut().reset(next);
                }
            }
        }
        if r.is_pending() {
            if let Some(t) = self.timer.as_mut() {
                if t.as_mut().poll(cx).is_ready() {
                    let why = if self
                        .deadline
                        .is_some_and(|d| tokio::time::Instant::now() >= d)
                    {
                        "connection without a certificate open too long"
                    } else {
                        "connection idle too long"
                    };
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        why,
                    )));
                }
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

type ConnStream<S> = tokio_stream::wrappers::ReceiverStream<std::io::Result<Conn<S>>>;

/// Binds the local control socket with mode 0600, replacing a stale socket file.
pub fn bind_local(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::Conflict(format!(
                "{}: another orc daemon is already listening there",
                path.display()
            )));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)
        .map_err(|e| Error::Internal(format!("{}: cannot listen: {e}", path.display())))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Turns a unix listener into a stream of connections marked `local`.
pub fn local_incoming(l: UnixListener, stop: CancellationToken) -> ConnStream<UnixStream> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                r = l.accept() => match r {
                    Ok((s, _)) => {
                        let c = Conn::new(s, PeerInfo::local(), None, None);
                        if tx.send(Ok(c)).await.is_err() { break; }
                    }
                    Err(e) => tracing::warn!("local socket accept: {e}"),
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The TLS material in force on this node; swapped atomically on renewal.
#[derive(Clone, Default)]
pub struct TlsHolder {
    inner: Arc<RwLock<Option<Arc<Tls>>>>,
}

/// Configs built from one set of credentials.
pub struct Tls {
    /// The credentials.
    pub creds: NodeCredentials,
    /// Who this node is, per its certificate.
    pub identity: Identity,
    /// Server side.
    pub server: Arc<rustls::ServerConfig>,
    /// Client side, to managers only.
    pub client: Arc<rustls::ClientConfig>,
    /// Client side, to any node of the cluster.
    pub client_any: Arc<rustls::ClientConfig>,
    /// Increases with each new set of credentials (for channel caches).
    pub generation: u64,
}

impl TlsHolder {
    /// Installs new credentials.
    pub fn set(&self, creds: NodeCredentials) -> Result<()> {
        let identity = creds.identity()?;
        let server = creds.server_config()?;
        let client = creds.client_config()?;
        let client_any = creds.client_config_any_node()?;
        let mut g = self.inner.write().expect("tls lock");
        let generation = g.as_ref().map(|t| t.generation + 1).unwrap_or(1);
        *g = Some(Arc::new(Tls {
            creds,
            identity,
            server,
            client,
            client_any,
            generation,
        }));
        Ok(())
    }

    /// Forgets the credentials (after `leave`).
    pub fn clear(&self) {
        *self.inner.write().expect("tls lock") = None;
    }

    /// The credentials in force, if the node is in a cluster.
    pub fn get(&self) -> Option<Arc<Tls>> {
        self.inner.read().expect("tls lock").clone()
    }

    fn require(&self) -> Result<Arc<Tls>> {
        self.get()
            .ok_or_else(|| Error::NotManager("this node is not part of a cluster".into()))
    }
}

/// Accepts TLS connections on the cluster port; handshakes run concurrently so a slow
/// client cannot stall the others. Connections over the caps ([`MAX_CONNS`],
/// [`MAX_CONNS_PER_IP`]) are closed before any TLS.
pub fn cluster_incoming(
    l: TcpListener,
    tls: TlsHolder,
    stop: CancellationToken,
) -> ConnStream<tokio_rustls::server::TlsStream<TcpStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let caps = Arc::new(ConnCaps::default());
    tokio::spawn(async move {
        let mut refused_logged = tokio::time::Instant::now() - Duration::from_secs(60);
        loop {
            let (sock, peer) = tokio::select! {
                _ = stop.cancelled() => break,
                r = l.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("cluster port accept: {e}");
                        // Out of descriptors: let some close before trying again.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            };
            let Some(mut slot) = caps.take(peer.ip()) else {
                if refused_logged.elapsed() > Duration::from_secs(10) {
                    tracing::warn!(peer = %peer, open = caps.total(), "cluster port: connection refused, too many open (per address or in all)");
                    refused_logged = tokio::time::Instant::now();
                }
                drop(sock);
                continue;
            };
            let Some(cfg) = tls.get() else { continue };
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = sock.set_nodelay(true);
                let acceptor = TlsAcceptor::from(cfg.server.clone());
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                    Ok(Ok(s)) => {
                        let certs: Option<Vec<CertificateDer<'static>>> = s
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
                        if certs.is_none() && !slot.anonymous() {
                            tracing::debug!(peer = %peer, "cluster port: connection without a certificate refused, {MAX_ANONYMOUS} open");
                            return;
                        }
                        let deadline = certs
                            .is_none()
                            .then(|| tokio::time::Instant::now() + ANONYMOUS_LIFETIME);
                        let info = PeerInfo::of_tls(certs, peer);
                        let _ = tx.send(Ok(Conn::new(s, info, deadline, Some(slot)))).await;
                    }
                    Ok(Err(e)) => tracing::debug!("TLS handshake with {peer} failed: {e}"),
                    Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Opens a channel to `addr` (`IP:PORT`) with the given client config. Lazy: the first
/// call connects; a failed connect fails that call after [`CONNECT_TIMEOUT`], a
/// handshake not done after [`HANDSHAKE_TIMEOUT`] more.
pub fn tls_channel(addr: &str, client: Arc<rustls::ClientConfig>, timeout: Duration) -> Channel {
    tls_channel_from(addr, client, timeout, None)
}

/// [`tls_channel`] whose connections leave from `local` (an address of this host; any,
/// when `None`). The scale benchmark's simulated nodes each call from their own
/// loopback address, as nodes of a real cluster each have theirs.
pub fn tls_channel_from(
    addr: &str,
    client: Arc<rustls::ClientConfig>,
    timeout: Duration,
    local: Option<std::net::IpAddr>,
) -> Channel {
    let addr = addr.to_string();
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let addr = addr.clone();
        let client = client.clone();
        async move {
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, connect_from(&addr, local))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connect to {addr} timed out"),
                    )
                })??;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(ca::SERVER_NAME)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let tls = tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                TlsConnector::from(client).connect(name, tcp),
            )
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("TLS handshake with {addr} timed out"),
                )
            })??;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    Endpoint::from_static("http://orc-node")
        .timeout(timeout)
        // Our connector bounds connect and handshake itself, with clearer errors; tonic's
        // own bound is only a backstop.
        .connect_timeout(CONNECT_TIMEOUT + HANDSHAKE_TIMEOUT + Duration::from_secs(1))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        // Streams from a peer this node called (images, volumes, snapshots) get a
        // receive window sized to the link, not HTTP/2's 64 KiB.
        .http2_adaptive_window(true)
        .connect_with_connector_lazy(connector)
}

/// A TCP connection to `addr`, from `local` when given.
async fn connect_from(addr: &str, local: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let Some(local) = local else {
        return TcpStream::connect(addr).await;
    };
    let to: std::net::SocketAddr = addr.parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}"))
    })?;
    let socket = if to.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(std::net::SocketAddr::new(local, 0))?;
    socket.connect(to).await
}

/// Opens a channel to the local daemon's socket.
pub async fn local_channel(path: &Path) -> Result<Channel> {
    let p = path.to_path_buf();
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let p = p.clone();
        async move {
            let s = UnixStream::connect(&p).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
        }
    });
    Endpoint::from_static("http://localhost")
        .connect_with_connector(connector)
        .await
        .map_err(|_| {
            Error::Unavailable(format!(
                "cannot reach the orc daemon at {}: is `orc daemon` running? (set -H or ORC_HOST)",
                path.display()
            ))
        })
}

/// A cached channel's address, and whether it accepts only a manager.
type ChannelKey = (String, bool);

/// One channel per remote address and kind of server, built from this node's
/// credentials.
#[derive(Clone, Default)]
pub struct Peers {
    tls: TlsHolder,
    cache: Arc<Mutex<HashMap<ChannelKey, (u64, Channel)>>>,
}

impl Peers {
    /// Channels that use the credentials in `tls`.
    pub fn new(tls: TlsHolder) -> Self {
        Peers {
            tls,
            cache: Default::default(),
        }
    }

    /// Channels with the same credentials and a cache of their own: made where they are
    /// first used (Raft's, on its runtime).
    pub fn apart(&self) -> Peers {
        Peers::new(self.tls.clone())
    }

    /// The channel to the **manager** at `addr`: the handshake fails unless the server
    /// holds a manager certificate of this cluster.
    pub fn channel(&self, addr: &str) -> Result<Channel> {
        self.cached(addr, true)
    }

    /// The channel to **any node** at `addr` (image shipping, logs).
    pub fn node_channel(&self, addr: &str) -> Result<Channel> {
        self.cached(addr, false)
    }

    fn cached(&self, addr: &str, manager: bool) -> Result<Channel> {
        let tls = self.tls.require()?;
        let mut cache = self.cache.lock().expect("peers lock");
        let key = (addr.to_string(), manager);
        if let Some((g, ch)) = cache.get(&key) {
            if *g == tls.generation {
                return Ok(ch.clone());
            }
        }
        let client = if manager {
            tls.client.clone()
        } else {
            tls.client_any.clone()
        };
        let ch = tls_channel(addr, client, REQUEST_TIMEOUT);
        cache.insert(key, (tls.generation, ch.clone()));
        Ok(ch)
    }

    /// Drops the cached channels to `addr` (after a connection error).
    pub fn forget(&self, addr: &str) {
        self.cache
            .lock()
            .expect("peers lock")
            .retain(|(a, _), _| a != addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caps_refuse_a_connection_beyond_each_limit_and_take_it_once_one_closes() {
        let caps = Arc::new(ConnCaps::default());
        let ip = |i: usize| std::net::IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
        // One address: MAX_CONNS_PER_IP, not one more; another address still gets in.
        let mut one: Vec<ConnSlot> = (0..MAX_CONNS_PER_IP)
            .map(|_| caps.take(ip(0)).expect("under the per-address cap"))
            .collect();
        assert!(caps.take(ip(0)).is_none());
        one.pop();
        assert!(caps.take(ip(0)).is_some());
        // In all: MAX_CONNS, from many addresses.
        let mut all: Vec<ConnSlot> = (1..)
            .map(|i| caps.take(ip(i % 4000 + 1)))
            .take_while(Option::is_some)
            .flatten()
            .collect();
        assert_eq!(caps.total(), MAX_CONNS);
        assert!(caps.take(ip(4001)).is_none());
        // Without a certificate: MAX_ANONYMOUS of them, counted apart.
        let marked = all
            .iter_mut()
            .filter_map(|s| s.anonymous().then_some(()))
            .count();
        assert_eq!(marked, MAX_ANONYMOUS);
        assert!(!all.last_mut().unwrap().anonymous());
        drop(all.remove(0));
        assert!(all.last_mut().unwrap().anonymous());
        drop(all);
        drop(one);
        assert_eq!(caps.total(), 0);
        assert_eq!(caps.table.lock().unwrap().anonymous, 0);
    }

    #[test]
    fn a_connections_identity_is_read_once_from_its_certificate_and_none_from_garbage() {
        use rustls_pki_types::pem::PemObject;
        use std::time::SystemTime;
        let ca = ca::RootCa::generate("c0ffee", SystemTime::now()).unwrap();
        let (_key, csr) = ca::new_key_and_csr().unwrap();
        let pem = ca
            .issue(
                &csr,
                crate::store::NodeId(7),
                crate::store::Role::Worker,
                "c0ffee",
                Duration::from_secs(3600),
                SystemTime::now(),
            )
            .unwrap();
        let der: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        let remote = "127.0.0.1:1".parse().unwrap();
        let id = PeerInfo::of_tls(Some(der), remote)
            .identity()
            .expect("a node certificate names its node");
        assert_eq!(id.node_id, crate::store::NodeId(7));
        assert_eq!(id.role, crate::store::Role::Worker);
        let garbage = vec![CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])];
        assert!(PeerInfo::of_tls(Some(garbage), remote).identity().is_none());
        assert!(PeerInfo::of_tls(None, remote).identity().is_none());
        assert!(PeerInfo::local().identity().is_none());
        assert!(PeerInfo::local().local);
    }
}
