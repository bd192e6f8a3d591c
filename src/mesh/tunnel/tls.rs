//! The encrypted mode: rustls configurations from a node's credentials, and the TLS
//! stream that renews its traffic keys as it goes.
//!
//! Both ends present their node certificate and accept the other's only if it chains
//! to one of the roots in the node's `ca_cert_pem` (during a CA rotation the bundle
//! holds both roots) and names this node's cluster. The client side is the cluster
//! port's "any node" client ([`NodeCredentials::client_config_any_node`]: server name
//! [`crate::ca::SERVER_NAME`], cluster checked) with its own ALPN; the server side,
//! unlike the cluster port's, *requires* a client certificate (nobody joins through the
//! data path). TLS 1.3 only (the server offers nothing else), because only TLS 1.3 can
//! renew keys in place; no session resumption, so every tunnel proves its certificate
//! afresh.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::Stats;
use crate::ca::NodeCredentials;
use crate::error::{Error, Result};

/// The ALPN protocol of the encrypted data path.
pub const ALPN_TUNNEL: &[u8] = b"orc-tunnel/1";

/// When a connection renews its sending keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyUpdatePolicy {
    /// After this many bytes sent under one key.
    pub bytes: u64,
    /// Or this long after the first byte sent under one key, whichever comes first
    /// (a key that has protected nothing is not renewed, so an idle connection sends
    /// at most one update and then nothing).
    pub interval: Duration,
}

/// Both configs of one node: what its server presents and checks, what its client
/// presents and checks.
pub(super) struct Configs {
    pub(super) server: Arc<ServerConfig>,
    pub(super) client: Arc<ClientConfig>,
    /// The cluster both ends must belong to.
    pub(super) cluster_id: String,
}

impl Configs {
    /// The configs of a node holding `creds`.
    pub(super) fn of(creds: &NodeCredentials) -> Result<Configs> {
        let me = creds.identity()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = certs(&creds.ca_cert_pem, "root CA certificates")?;
        let mut store = RootCertStore::empty();
        for r in roots {
            store
                .add(r)
                .map_err(|e| Error::InvalidInput(format!("root CA certificate: {e}")))?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| Error::Internal(format!("TLS client verifier: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(creds.key_pem.as_bytes())
            .map_err(|e| Error::InvalidInput(format!("node key: not a PEM private key ({e})")))?;
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Internal(format!("TLS setup: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&creds.cert_pem, "node certificate")?, key)
            .map_err(|e| Error::InvalidInput(format!("node credentials: {e}")))?;
        server.alpn_protocols = vec![ALPN_TUNNEL.to_vec()];
        server.session_storage = Arc::new(NoServerSessionStorage {});
        server.send_tls13_tickets = 0;

        let mut client = (*creds.client_config_any_node()?).clone();
        client.alpn_protocols = vec![ALPN_TUNNEL.to_vec()];
        client.resumption = rustls::client::Resumption::disabled();
        Ok(Configs {
            server: Arc::new(server),
            client: Arc::new(client),
            cluster_id: me.cluster_id,
        })
    }
}

fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::InvalidInput(format!("{what}: not PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(Error::InvalidInput(format!("{what}: no PEM certificate")));
    }
    Ok(certs)
}

/// A TLS 1.3 connection of the data path that renews its sending keys (a TLS
/// `key_update`, which also asks the peer to renew its own) by the
/// [`KeyUpdatePolicy`], without interrupting the bytes. The byte rule is checked
/// before each write; the time rule by a timer polled with reads and writes, so a
/// connection waiting to read renews too.
pub struct TlsTunnel {
    inner: tokio_rustls::TlsStream<TcpStream>,
    policy: KeyUpdatePolicy,
    /// Bytes written under the current key.
    sent: u64,
    /// When the current key is due for renewal (armed by the first byte it protects).
    due: Pin<Box<Sleep>>,
    /// A key update is queued and not yet known to be on the wire.
    flush: bool,
    /// This side has shut down its writing: nothing more may be sent.
    closed: bool,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for TlsTunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTunnel")
            .field("sent", &self.sent)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl TlsTunnel {
    pub(super) fn new(
        inner: tokio_rustls::TlsStream<TcpStream>,
        policy: KeyUpdatePolicy,
        stats: Arc<Stats>,
    ) -> TlsTunnel {
        TlsTunnel {
            inner,
            policy,
            sent: 0,
            due: Box::pin(tokio::time::sleep(policy.interval)),
            flush: false,
            closed: false,
            stats,
        }
    }

    /// The TCP socket under the TLS layer.
    pub fn tcp(&self) -> &TcpStream {
        self.inner.get_ref().0
    }

    /// Queues a key update now (it goes out with the next write or flush, or the next
    /// read). Fails before the handshake is done, after this side shut down, or on a
    /// connection that is not TLS 1.3.
    pub fn update_keys(&mut self) -> Result<()> {
        if self.closed {
            return Err(Error::Internal(
                "tunnel: no key update after shutdown".into(),
            ));
        }
        let r = match &mut self.inner {
            tokio_rustls::TlsStream::Client(s) => s.get_mut().1.refresh_traffic_keys(),
            tokio_rustls::TlsStream::Server(s) => s.get_mut().1.refresh_traffic_keys(),
        };
        r.map_err(|e| Error::Internal(format!("tunnel: key update: {e}")))?;
        self.sent = 0;
        self.flush = true;
        self.stats.key_updates.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Renews the keys if the policy says so; registers the timer with `cx`.
    fn check(&mut self, cx: &mut Context<'_>) {
        if self.closed {
            return;
        }
        let due = self.sent >= self.policy.bytes
            || (self.sent > 0 && self.due.as_mut().poll(cx).is_ready());
        if due {
            if let Err(e) = self.update_keys() {
                // the connection is failing: its next read or write says so
                tracing::debug!("{e}");
                self.closed = true;
            }
        }
    }

    /// After `n` bytes were written: counts them, arms the timer for a fresh key.
    fn wrote(&mut self, n: usize, cx: &mut Context<'_>) {
        if self.sent == 0 && n > 0 {
            self.due
                .as_mut()
                .reset(Instant::now() + self.policy.interval);
            // register the new deadline
            let _ = self.due.as_mut().poll(cx);
        }
        self.sent += n as u64;
    }
}

impl AsyncRead for TlsTunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.check(cx);
        if this.flush {
            // a waiting reader must still send a queued update; a full socket just
            // leaves it for later
            match Pin::new(&mut this.inner).poll_flush(cx) {
                Poll::Ready(Ok(())) => this.flush = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsTunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.check(cx);
        // one write may go on as long as the socket takes bytes: stop it at the
        // policy's byte count, so that the next write renews the key
        let room = this.policy.bytes.saturating_sub(this.sent).max(1);
        let buf = &buf[..buf.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        // a write pushes out what was queued before it, the update included
        this.flush = false;
        this.wrote(n, cx);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.flush = false;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.closed = true;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
