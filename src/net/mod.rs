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
//!   node's certificate changes (renewal, promotion).
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

/// How long a TCP connect plus TLS handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long one RPC between nodes may take by default.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a handler knows about the connection its request came on.
#[derive(Clone, Debug, Default)]
pub struct PeerInfo {
    /// The client's certificate chain, if it presented one (cluster port only).
    pub certs: Option<Vec<CertificateDer<'static>>>,
    /// True for the local unix socket.
    pub local: bool,
}

impl PeerInfo {
    /// The identity in the caller's verified certificate, if any.
    pub fn identity(&self) -> Option<Identity> {
        let certs = self.certs.as_ref()?;
        ca::identity_of_der(certs.first()?.as_ref()).ok()
    }
}

/// Reads the [`PeerInfo`] of a request (absent means an in-process call).
pub fn peer_of<T>(req: &tonic::Request<T>) -> PeerInfo {
    req.extensions()
        .get::<PeerInfo>()
        .cloned()
        .unwrap_or_default()
}

/// A server-side connection with the [`PeerInfo`] attached for tonic.
pub struct Conn<S> {
    io: S,
    info: PeerInfo,
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
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
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
                        let c = Conn { io: s, info: PeerInfo { certs: None, local: true } };
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
    /// Client side.
    pub client: Arc<rustls::ClientConfig>,
    /// Increases with each new set of credentials (for channel caches).
    pub generation: u64,
}

impl TlsHolder {
    /// Installs new credentials.
    pub fn set(&self, creds: NodeCredentials) -> Result<()> {
        let identity = creds.identity()?;
        let server = creds.server_config()?;
        let client = creds.client_config()?;
        let mut g = self.inner.write().expect("tls lock");
        let generation = g.as_ref().map(|t| t.generation + 1).unwrap_or(1);
        *g = Some(Arc::new(Tls {
            creds,
            identity,
            server,
            client,
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
            .ok_or_else(|| Error::Unavailable("this node is not part of a cluster".into()))
    }
}

/// Accepts TLS connections on the cluster port; handshakes run concurrently so a slow
/// client cannot stall the others.
pub fn cluster_incoming(
    l: TcpListener,
    tls: TlsHolder,
    stop: CancellationToken,
) -> ConnStream<tokio_rustls::server::TlsStream<TcpStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (sock, peer) = tokio::select! {
                _ = stop.cancelled() => break,
                r = l.accept() => match r {
                    Ok(x) => x,
                    Err(e) => { tracing::warn!("cluster port accept: {e}"); continue; }
                }
            };
            let Some(cfg) = tls.get() else { continue };
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = sock.set_nodelay(true);
                let acceptor = TlsAcceptor::from(cfg.server.clone());
                match tokio::time::timeout(CONNECT_TIMEOUT * 5, acceptor.accept(sock)).await {
                    Ok(Ok(s)) => {
                        let certs = s
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
                        let c = Conn {
                            io: s,
                            info: PeerInfo {
                                certs,
                                local: false,
                            },
                        };
                        let _ = tx.send(Ok(c)).await;
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
/// call connects; a failed connect fails that call after [`CONNECT_TIMEOUT`].
pub fn tls_channel(addr: &str, client: Arc<rustls::ClientConfig>, timeout: Duration) -> Channel {
    let addr = addr.to_string();
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let addr = addr.clone();
        let client = client.clone();
        async move {
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
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
                CONNECT_TIMEOUT,
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
        .connect_timeout(CONNECT_TIMEOUT * 3)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect_with_connector_lazy(connector)
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

/// One channel per remote address, built from this node's credentials.
#[derive(Clone, Default)]
pub struct Peers {
    tls: TlsHolder,
    cache: Arc<Mutex<HashMap<String, (u64, Channel)>>>,
}

impl Peers {
    /// Channels that use the credentials in `tls`.
    pub fn new(tls: TlsHolder) -> Self {
        Peers {
            tls,
            cache: Default::default(),
        }
    }

    /// The channel to `addr`.
    pub fn channel(&self, addr: &str) -> Result<Channel> {
        let tls = self.tls.require()?;
        let mut cache = self.cache.lock().expect("peers lock");
        if let Some((g, ch)) = cache.get(addr) {
            if *g == tls.generation {
                return Ok(ch.clone());
            }
        }
        let ch = tls_channel(addr, tls.client.clone(), REQUEST_TIMEOUT);
        cache.insert(addr.to_string(), (tls.generation, ch.clone()));
        Ok(ch)
    }

    /// Drops the cached channel to `addr` (after a connection error).
    pub fn forget(&self, addr: &str) {
        self.cache.lock().expect("peers lock").remove(addr);
    }
}
