//! The data path between nodes: how one node's mesh reaches a task on another node.
//!
//! A node's mesh reaches its own tasks at their container addresses; a task on another
//! node it reaches through that node's mesh, over a *tunnel*: one TCP connection to the
//! other node's data-path port ([`DEFAULT_DATA_PATH_PORT`]) per client connection (or
//! per UDP session). The serving node checks who is calling, looks the task up
//! ([`LocalTasks`]), connects to it and then carries the bytes. No container port is
//! published on the host, so nothing outside the cluster reaches a task but through a
//! published port of the mesh.
//!
//! # Two modes on one port
//!
//! The first byte a client sends picks the mode; anything else closes at once.
//!
//! - `0x16` (a TLS ClientHello): **encrypted**. Mutual TLS 1.3 with the node
//!   certificates: each end accepts the other only with a certificate that
//!   chains to a root of the cluster and names the same cluster. Inside TLS the client
//!   sends the request header, the server answers a status byte, then the bytes flow.
//!   Long connections renew their traffic keys in place (TLS `key_update`) every
//!   [`KEY_UPDATE_BYTES`] sent or [`KEY_UPDATE_INTERVAL`] after a key's first use,
//!   whichever comes first ([`TlsTunnel`]). Renewed certificates
//!   ([`DataPath::set_credentials`]) apply to new connections; open ones keep theirs.
//! - `b'O'`: **plain**, for networks that are not encrypted. The connection stays a
//!   bare TCP socket, so both ends move the bytes with `splice(2)`
//!   ([`super::relay::relay`]). The caller proves it holds the data-path key of the
//!   pair of nodes (caller, server): 32 bytes that the managers derive for each pair
//!   and hand to each node, inside its session, for every current member
//!   ([`DataPath::set_keys`]). So a node cannot speak for another (it holds no key of
//!   another's pairs), and a removed node's keys leave the other nodes' rings with the
//!   next member table:
//!
//!   ```text
//!   client → server   "ORCT" | version 1 | client nonce (16)
//!   server → client   server nonce (16)
//!   client → server   key id (u32 BE) | header | MAC (32)
//!   server → client   status (1)
//!   MAC = HMAC-SHA256(key, "orc-tunnel-v1" | version | client nonce | server nonce
//!                          | key id | header)
//!   ```
//!
//!   The server reads the (bounded) header first to learn which node claims to call,
//!   and checks the MAC with that pair's key. The server nonce is fresh for every connection, so a recorded handshake does not
//!   replay; no clock and no replay cache are needed. The newest key (highest id) signs,
//!   every key listed is accepted, so a rotation breaks neither handshakes across the
//!   switch nor connections already open (they are past the handshake). A plain
//!   request for an encrypted network is refused: no downgrade.
//!
//! The request header ([`Request::encode`]), in both modes:
//!
//! ```text
//! len (u16 BE, bytes after it) | from node (u64 BE) | protocol (u8: 0 tcp, 1 udp)
//!   | container port (u16 BE) | network id len (u8) | network id | task id len (u8) | task id
//! ```
//!
//! Status ([`Status`]): 0 connected; 1 refused (no such task, network or port here, a
//! plain request for an encrypted network, a TLS header naming another node than its
//! certificate); 2 the backend did not accept (the caller tries another backend); 3 bad
//! key (the connection closes).
//!
//! TCP targets: the server connects to the task ([`super::CONNECT_TIMEOUT`]), answers,
//! and relays until both sides have closed; half-closes pass through. UDP targets: the
//! stream carries frames `[u16 BE length][datagram]` both ways ([`send_datagram`],
//! [`recv_datagram`]); the server sends each frame as one datagram from a socket
//! connected to the task and frames each datagram back; [`super::UDP_IDLE`] of silence
//! ends the session.
//!
//! # Bounds: who may call, what it may name, how big
//!
//! - **Who**: in encrypted mode, a node holding a certificate of this cluster; in plain
//!   mode, a holder of a current data-path key. Nobody else gets past the handshake,
//!   and a failed handshake costs nothing more: no lookup, no connect to a backend.
//! - **What**: a task, port and network that [`LocalTasks`] resolves on this node;
//!   anything else is refused with status 1.
//! - **How big**: a header of at most [`MAX_HEADER`] bytes (ids of at most
//!   [`MAX_ID`]), refused on its length prefix before anything is read into
//!   memory; the whole handshake within [`HANDSHAKE_TIMEOUT`]; at most
//!   [`MAX_TUNNELS`] connections in all and [`MAX_HANDSHAKES_PER_IP`] unfinished
//!   handshakes per source address (over those, a connection is closed at once; the
//!   global cap bounds callers that spread over many addresses);
//!   datagrams of at most [`MAX_DATAGRAM`] bytes.
//!
//! Every refusal is counted in [`Stats`].
//!
//! # Errors on the client side
//!
//! [`DataPath::connect`] answers with the one error type, by kind: `NotFound` when the
//! serving node refused the request (status 1), `Unavailable` when its backend did
//! not accept (status 2), `PermissionDenied` when it refused this node's key (status
//! 3), `Internal` when the tunnel itself failed (connect, TLS, timeout, a node that
//! closed without an answer). The mesh may try another backend after any of them.

mod header;
mod server;
mod tls;
mod udp;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use zeroize::Zeroize;

use crate::error::{Error, Result};
use crate::store::NodeId;

pub use header::{Request, Status, Target, MAX_HEADER, MAX_ID};
pub use tls::{KeyUpdatePolicy, TlsTunnel, ALPN_TUNNEL};
pub use udp::{recv_datagram, send_datagram, MAX_DATAGRAM};

/// The data-path port every node listens on (Swarm's `--data-path-port` number).
pub const DEFAULT_DATA_PATH_PORT: u16 = 4789;

/// How long a caller has to complete its handshake (TLS included) and send its header.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The most tunnels a node serves at once.
pub const MAX_TUNNELS: usize = 16_384;

/// The most unfinished handshakes a node accepts from one source address.
pub const MAX_HANDSHAKES_PER_IP: usize = 256;

/// An encrypted tunnel renews its keys after this many bytes sent under one key.
pub const KEY_UPDATE_BYTES: u64 = 1 << 30;

/// An encrypted tunnel renews its keys this long after a key's first use.
pub const KEY_UPDATE_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Buffer size of each direction when an encrypted tunnel is copied.
const TLS_COPY_BUF: usize = 64 * 1024;

/// One data-path key: the key of the pair (this node, `peer`). The key bytes are wiped
/// when it is dropped.
#[derive(Clone)]
pub struct DataKey {
    /// The key's id; the highest id in force signs new handshakes.
    pub id: u32,
    /// The other node of the pair.
    pub peer: NodeId,
    /// The secret, 32 random bytes.
    pub key: [u8; 32],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("key", &"[elided]")
            .finish()
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// What a node's tunnels are allowed: deadlines, caps, key renewal. Tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The deadline of a handshake, header included ([`HANDSHAKE_TIMEOUT`]).
    pub handshake_timeout: Duration,
    /// Tunnels served at once ([`MAX_TUNNELS`]).
    pub max_tunnels: usize,
    /// Unfinished handshakes per source address ([`MAX_HANDSHAKES_PER_IP`]).
    pub max_handshakes_per_ip: usize,
    /// When encrypted tunnels renew their keys.
    pub key_update: KeyUpdatePolicy,
    /// Silence after which a UDP tunnel ends ([`super::UDP_IDLE`]).
    pub udp_idle: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_tunnels: MAX_TUNNELS,
            max_handshakes_per_ip: MAX_HANDSHAKES_PER_IP,
            key_update: KeyUpdatePolicy {
                bytes: KEY_UPDATE_BYTES,
                interval: KEY_UPDATE_INTERVAL,
            },
            udp_idle: super::UDP_IDLE,
        }
    }
}

/// How the serving node answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// No such task, network or port here, or the caller may not reach it.
    Refused,
    /// The task runs here: its container address for that port.
    Local {
        /// The container's `IP:port` on the bridge.
        addr: SocketAddr,
        /// The network is encrypted: plain tunnels to it are refused.
        encrypted_network: bool,
    },
}

/// The node's own tasks, as the tunnel server needs them. The caller (the agent's view
/// of its running tasks) implements it; a closure does too.
pub trait LocalTasks: Send + Sync + 'static {
    /// Where `req` leads on this node, if anywhere.
    fn resolve(&self, req: &Request) -> Resolution;
}

impl<F> LocalTasks for F
where
    F: Fn(&Request) -> Resolution + Send + Sync + 'static,
{
    fn resolve(&self, req: &Request) -> Resolution {
        self(req)
    }
}

/// Counters of what the data path did and refused (both sides; metrics read them).
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections taken in (within the caps).
    pub accepted: AtomicU64,
    /// Connections closed at once: [`Limits::max_tunnels`] reached.
    pub over_capacity: AtomicU64,
    /// Connections closed at once: too many unfinished handshakes from their address.
    pub over_ip_cap: AtomicU64,
    /// Connections that opened with neither a TLS ClientHello nor a plain hello.
    pub unknown_mode: AtomicU64,
    /// Handshakes that missed [`Limits::handshake_timeout`].
    pub handshake_timeouts: AtomicU64,
    /// TLS handshakes that failed (no certificate, a foreign one, another cluster).
    pub tls_failures: AtomicU64,
    /// Headers refused: too long, malformed.
    pub bad_headers: AtomicU64,
    /// Plain handshakes with an unknown key id or a wrong MAC (status 3).
    pub bad_auth: AtomicU64,
    /// Requests refused (status 1), downgrades included.
    pub refused: AtomicU64,
    /// Of those, plain requests for an encrypted network.
    pub downgrades: AtomicU64,
    /// Requests whose backend did not accept (status 2).
    pub unavailable: AtomicU64,
    /// Tunnels connected to their backend (status 0).
    pub connected: AtomicU64,
    /// Frames refused for their size (the tunnel closed).
    pub oversize_frames: AtomicU64,
    /// TLS key updates this node sent.
    pub key_updates: AtomicU64,
}

/// The counters of [`Stats`] at one moment (each field as there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`Stats::accepted`].
    pub accepted: u64,
    /// See [`Stats::over_capacity`].
    pub over_capacity: u64,
    /// See [`Stats::over_ip_cap`].
    pub over_ip_cap: u64,
    /// See [`Stats::unknown_mode`].
    pub unknown_mode: u64,
    /// See [`Stats::handshake_timeouts`].
    pub handshake_timeouts: u64,
    /// See [`Stats::tls_failures`].
    pub tls_failures: u64,
    /// See [`Stats::bad_headers`].
    pub bad_headers: u64,
    /// See [`Stats::bad_auth`].
    pub bad_auth: u64,
    /// See [`Stats::refused`].
    pub refused: u64,
    /// See [`Stats::downgrades`].
    pub downgrades: u64,
    /// See [`Stats::unavailable`].
    pub unavailable: u64,
    /// See [`Stats::connected`].
    pub connected: u64,
    /// See [`Stats::oversize_frames`].
    pub oversize_frames: u64,
    /// See [`Stats::key_updates`].
    pub key_updates: u64,
}

impl Stats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            accepted: g(&self.accepted),
            over_capacity: g(&self.over_capacity),
            over_ip_cap: g(&self.over_ip_cap),
            unknown_mode: g(&self.unknown_mode),
            handshake_timeouts: g(&self.handshake_timeouts),
            tls_failures: g(&self.tls_failures),
            bad_headers: g(&self.bad_headers),
            bad_auth: g(&self.bad_auth),
            refused: g(&self.refused),
            downgrades: g(&self.downgrades),
            unavailable: g(&self.unavailable),
            connected: g(&self.connected),
            oversize_frames: g(&self.oversize_frames),
            key_updates: g(&self.key_updates),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// The data-path keys in force.
#[derive(Default)]
struct KeyRing {
    /// The key that signs a request to each peer: its highest id.
    send: BTreeMap<NodeId, (u32, hmac::Key)>,
    /// Every key accepted, by id and the peer that may use it.
    accept: BTreeMap<(u32, NodeId), hmac::Key>,
}

/// A tunnel: a bare TCP socket (plain mode) or a TLS stream (encrypted mode), past its
/// handshake and connected to the backend.
#[derive(Debug)]
pub enum TunnelStream {
    /// Plain mode: relay it with [`super::relay::relay`] (splice).
    Plain(TcpStream),
    /// Encrypted mode: copy it through user space.
    Tls(Box<TlsTunnel>),
}

impl TunnelStream {
    /// Carries bytes both ways between this tunnel and `other` until both sides have
    /// closed (half-closes pass through): spliced for a plain tunnel, copied for an
    /// encrypted one. Returns the bytes moved (this → other, other → this).
    pub async fn relay(&mut self, other: &mut TcpStream) -> io::Result<(u64, u64)> {
        match self {
            TunnelStream::Plain(s) => super::relay::relay(s, other).await,
            TunnelStream::Tls(s) => {
                tokio::io::copy_bidirectional_with_sizes(
                    s.as_mut(),
                    other,
                    TLS_COPY_BUF,
                    TLS_COPY_BUF,
                )
                .await
            }
        }
    }

    /// The TCP socket under the tunnel.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            TunnelStream::Plain(s) => s,
            TunnelStream::Tls(s) => s.tcp(),
        }
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            TunnelStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TunnelStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            TunnelStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelStream::Plain(s) => Pin::new(s).poll_flush(cx),
            TunnelStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            TunnelStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One node's data path: its keys and TLS material, both as server and as client, its
/// view of its own tasks, its counters. Shared (`Arc`) by the server loop
/// ([`DataPath::serve`]) and the mesh, which dials with [`DataPath::connect`].
pub struct DataPath {
    /// This node: the sender named in its requests.
    node: NodeId,
    local: Arc<dyn LocalTasks>,
    limits: Limits,
    keys: RwLock<Arc<KeyRing>>,
    tls: RwLock<Option<Arc<tls::Configs>>>,
    stats: Arc<Stats>,
    /// One permit per tunnel served.
    tunnels: Arc<Semaphore>,
    /// Unfinished handshakes by source address (entries at zero are removed).
    handshakes: Mutex<HashMap<IpAddr, usize>>,
    rng: SystemRandom,
}

impl std::fmt::Debug for DataPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPath")
            .field("node", &self.node)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl DataPath {
    /// The data path of node `node`, serving `local`'s tasks. It has no key and no TLS
    /// material yet: until [`DataPath::set_keys`] and [`DataPath::set_credentials`],
    /// every handshake of the missing mode fails.
    pub fn new(node: NodeId, local: Arc<dyn LocalTasks>, limits: Limits) -> DataPath {
        DataPath {
            node,
            local,
            limits,
            keys: RwLock::new(Arc::new(KeyRing::default())),
            tls: RwLock::new(None),
            stats: Arc::new(Stats::default()),
            tunnels: Arc::new(Semaphore::new(limits.max_tunnels)),
            handshakes: Mutex::new(HashMap::new()),
            rng: SystemRandom::new(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Sets this node's data-path keys, one per (id, peer): every listed key is
    /// accepted from its peer, and the one with the highest id signs this node's
    /// requests to that peer. A peer without a key can neither call nor be called in
    /// plain mode; an empty list turns plain mode off both ways.
    pub fn set_keys(&self, keys: Vec<DataKey>) -> Result<()> {
        let mut ring = KeyRing::default();
        for k in &keys {
            let key = hmac::Key::new(hmac::HMAC_SHA256, &k.key);
            if ring.accept.insert((k.id, k.peer), key.clone()).is_some() {
                return Err(Error::InvalidInput(format!(
                    "data-path keys: id {} is listed twice for node {}",
                    k.id, k.peer
                )));
            }
            if ring.send.get(&k.peer).is_none_or(|(id, _)| k.id > *id) {
                ring.send.insert(k.peer, (k.id, key));
            }
        }
        *self.keys.write().expect("keys lock") = Arc::new(ring);
        Ok(())
    }

    /// Sets this node's TLS material: the roots to trust are every certificate in
    /// `creds.ca_cert_pem` (both during a CA rotation), the chain presented is
    /// `creds.cert_pem`. New tunnels, both ways, use it; open ones keep theirs.
    pub fn set_credentials(&self, creds: &crate::ca::NodeCredentials) -> Result<()> {
        let configs = tls::Configs::of(creds)?;
        *self.tls.write().expect("tls lock") = Some(Arc::new(configs));
        Ok(())
    }

    fn key_ring(&self) -> Arc<KeyRing> {
        self.keys.read().expect("keys lock").clone()
    }

    fn tls_configs(&self) -> Option<Arc<tls::Configs>> {
        self.tls.read().expect("tls lock").clone()
    }

    fn nonce(&self) -> Result<[u8; header::NONCE_LEN]> {
        let mut n = [0u8; header::NONCE_LEN];
        self.rng
            .fill(&mut n)
            .map_err(|_| Error::Internal("tunnel: no randomness for a nonce".into()))?;
        Ok(n)
    }

    /// Opens a tunnel to `target` through node `to`, whose data-path port is `node`,
    /// encrypted (mutual TLS) or plain (the data-path key). On success the stream is
    /// connected to the task; see the module doc for the errors. The whole exchange is
    /// bounded by [`super::CONNECT_TIMEOUT`] plus the handshake deadline.
    pub async fn connect(
        &self,
        to: NodeId,
        node: SocketAddr,
        target: &Target,
        encrypted: bool,
    ) -> Result<TunnelStream> {
        let req = Request {
            from: self.node,
            target: target.clone(),
        };
        let header = req.encode()?;
        let deadline = super::CONNECT_TIMEOUT + self.limits.handshake_timeout;
        let dial = async {
            let tcp = TcpStream::connect(node).await?;
            let _ = tcp.set_nodelay(true);
            if encrypted {
                self.dial_tls(tcp, &header).await
            } else {
                self.dial_plain(tcp, to, &header).await
            }
        };
        let (stream, status) = tokio::time::timeout(deadline, dial)
            .await
            .map_err(|_| {
                Error::Internal(format!(
                    "tunnel to {node}: no answer within {}",
                    humantime::format_duration(deadline)
                ))
            })?
            .map_err(|e| match e {
                Error::Internal(m) => Error::Internal(format!("tunnel to {node}: {m}")),
                e => e,
            })?;
        let what = format!(
            "{} port {}/{} of task {} on network {}",
            node,
            target.port,
            target.protocol.as_str(),
            target.task,
            target.network
        );
        match status {
            Status::Connected => Ok(stream),
            Status::Refused => Err(Error::NotFound(format!("tunnel: {what}: refused"))),
            Status::Unavailable => Err(Error::Unavailable(format!(
                "tunnel: {what}: the task did not accept the connection"
            ))),
            Status::BadAuth => Err(Error::PermissionDenied(format!(
                "tunnel: {what}: the node refused this node's data-path key"
            ))),
        }
    }

    async fn dial_plain(
        &self,
        mut tcp: TcpStream,
        to: NodeId,
        header: &[u8],
    ) -> Result<(TunnelStream, Status)> {
        let ring = self.key_ring();
        let (key_id, key) = ring
            .send
            .get(&to)
            .ok_or_else(|| Error::Internal(format!("no data-path key for node {to} yet")))?;
        let cn = self.nonce()?;
        tcp.write_all(&header::hello(&cn)).await?;
        let mut sn = [0u8; header::NONCE_LEN];
        read_or_closed(&mut tcp, &mut sn).await?;
        let mac = header::sign(key, &cn, &sn, *key_id, header);
        let mut msg = Vec::with_capacity(4 + header.len() + header::MAC_LEN);
        msg.extend_from_slice(&key_id.to_be_bytes());
        msg.extend_from_slice(header);
        msg.extend_from_slice(&mac);
        tcp.write_all(&msg).await?;
        let status = read_status(&mut tcp).await?;
        Ok((TunnelStream::Plain(tcp), status))
    }

    async fn dial_tls(&self, tcp: TcpStream, header: &[u8]) -> Result<(TunnelStream, Status)> {
        let configs = self
            .tls_configs()
            .ok_or_else(|| Error::Internal("no TLS credentials yet".into()))?;
        let name = ServerName::try_from(crate::ca::SERVER_NAME)
            .map_err(|e| Error::Internal(format!("server name: {e}")))?;
        let tls = TlsConnector::from(configs.client.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| Error::Internal(format!("TLS: {e}")))?;
        if tls.get_ref().1.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
            return Err(Error::Internal(
                "TLS: the node did not speak TLS 1.3".into(),
            ));
        }
        let mut s = TlsTunnel::new(
            tokio_rustls::TlsStream::Client(tls),
            self.limits.key_update,
            self.stats.clone(),
        );
        s.write_all(header).await?;
        s.flush().await?;
        let status = read_status(&mut s).await?;
        Ok((TunnelStream::Tls(Box::new(s)), status))
    }
}

/// Reads exactly `buf.len()` bytes; an early end is "closed during the handshake".
async fn read_or_closed<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<()> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(Error::Internal(
            "the node closed the connection during the handshake".into(),
        )),
        Err(e) => Err(Error::Internal(e.to_string())),
    }
}

async fn read_status<R: AsyncRead + Unpin>(r: &mut R) -> Result<Status> {
    let mut b = [0u8; 1];
    read_or_closed(r, &mut b).await?;
    Status::of_byte(b[0])
        .ok_or_else(|| Error::Internal(format!("the node answered status {}", b[0])))
}
