//! The serving side: the accept loop with its caps, one handshake per connection, then
//! the connect to the task and the bytes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::header::{self, Request, Status, HELLO_LEN, MAC_LEN, MAX_HEADER, NONCE_LEN};
use super::{bump, udp, DataPath, Resolution, TlsTunnel, TunnelStream};
use crate::error::{Error, Result};
use crate::store::service::Protocol;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// A connection past its handshake: the stream, the request, how it was authenticated.
struct Accepted {
    stream: TunnelStream,
    req: Request,
}

/// Why a handshake did not give a request.
enum Failed {
    /// Counted already; close without a word.
    Close,
    /// Answer this status, then close.
    Answer(TunnelStream, Status),
}

/// Holds one unfinished handshake of a source address; gives it back when dropped.
struct HandshakeSlot<'a> {
    dp: &'a DataPath,
    ip: IpAddr,
}

impl Drop for HandshakeSlot<'_> {
    fn drop(&mut self) {
        let mut map = self.dp.handshakes.lock().expect("handshakes lock");
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl DataPath {
    /// Serves tunnels on `listener` (the data-path port) until `cancel`; tunnels in
    /// progress end with it too.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, cancel: CancellationToken) {
        loop {
            let (tcp, peer) = tokio::select! {
                () = cancel.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // out of descriptors and the like: let the others finish
                        tracing::warn!("data path: accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = self.tunnels.clone().try_acquire_owned() else {
                bump(&self.stats.over_capacity);
                continue;
            };
            if !self.take_handshake(peer.ip()) {
                bump(&self.stats.over_ip_cap);
                continue;
            }
            bump(&self.stats.accepted);
            let dp = self.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = dp.connection(tcp, peer) => {}
                }
                drop(permit);
            });
        }
    }

    /// Takes a handshake slot of `ip` if it has one left (given back by
    /// [`HandshakeSlot`]).
    fn take_handshake(&self, ip: IpAddr) -> bool {
        let mut map = self.handshakes.lock().expect("handshakes lock");
        let n = map.entry(ip).or_insert(0);
        if *n >= self.limits.max_handshakes_per_ip {
            return false;
        }
        *n += 1;
        true
    }

    async fn connection(&self, tcp: TcpStream, peer: SocketAddr) {
        let slot = HandshakeSlot {
            dp: self,
            ip: peer.ip(),
        };
        let _ = tcp.set_nodelay(true);
        let shaken = tokio::time::timeout(self.limits.handshake_timeout, self.handshake(tcp)).await;
        drop(slot);
        let accepted = match shaken {
            Err(_) => {
                bump(&self.stats.handshake_timeouts);
                tracing::debug!("data path: {peer}: handshake timed out");
                return;
            }
            Ok(Err(Failed::Close)) => return,
            Ok(Err(Failed::Answer(mut stream, status))) => {
                let _ = answer(&mut stream, status).await;
                return;
            }
            Ok(Ok(a)) => a,
        };
        if let Err(e) = self.carry(accepted).await {
            tracing::debug!("data path: {peer}: {e}");
        }
    }

    /// Reads the mode, authenticates the caller, reads its request.
    async fn handshake(&self, tcp: TcpStream) -> std::result::Result<Accepted, Failed> {
        let mut first = [0u8; 1];
        match tcp.peek(&mut first).await {
            Ok(1) => {}
            _ => return Err(Failed::Close),
        }
        match first[0] {
            TLS_HANDSHAKE => self.handshake_tls(tcp).await,
            b if b == header::MAGIC[0] => self.handshake_plain(tcp).await,
            _ => {
                bump(&self.stats.unknown_mode);
                Err(Failed::Close)
            }
        }
    }

    async fn handshake_plain(&self, mut tcp: TcpStream) -> std::result::Result<Accepted, Failed> {
        let mut hello = [0u8; HELLO_LEN];
        tcp.read_exact(&mut hello)
            .await
            .map_err(|_| Failed::Close)?;
        if &hello[..4] != header::MAGIC || hello[4] != header::VERSION {
            bump(&self.stats.unknown_mode);
            return Err(Failed::Close);
        }
        let cn: [u8; NONCE_LEN] = hello[5..].try_into().expect("nonce length");
        let sn = self.nonce().map_err(|_| Failed::Close)?;
        tcp.write_all(&sn).await.map_err(|_| Failed::Close)?;
        // key id and header length
        let mut head = [0u8; 6];
        tcp.read_exact(&mut head).await.map_err(|_| Failed::Close)?;
        let key_id = u32::from_be_bytes(head[..4].try_into().expect("4 bytes"));
        let Ok(len) = header::body_len([head[4], head[5]]) else {
            bump(&self.stats.bad_headers);
            return Err(Failed::Close);
        };
        // the header (prefix included, as the MAC covers it), then the MAC
        let mut buf = [0u8; MAX_HEADER + MAC_LEN];
        buf[..2].copy_from_slice(&head[4..]);
        let end = 2 + len;
        tcp.read_exact(&mut buf[2..end + MAC_LEN])
            .await
            .map_err(|_| Failed::Close)?;
        let mac: [u8; MAC_LEN] = buf[end..end + MAC_LEN].try_into().expect("MAC length");
        // The header names the caller, whose pair key must have signed it; nothing in
        // it is acted on before the MAC holds.
        let Ok(req) = Request::decode(&buf[2..end]) else {
            bump(&self.stats.bad_headers);
            return Err(Failed::Close);
        };
        let ring = self.key_ring();
        let good = ring
            .accept
            .get(&(key_id, req.from))
            .is_some_and(|key| header::verify(key, &cn, &sn, key_id, &buf[..end], &mac));
        if !good {
            bump(&self.stats.bad_auth);
            return Err(Failed::Answer(TunnelStream::Plain(tcp), Status::BadAuth));
        }
        Ok(Accepted {
            stream: TunnelStream::Plain(tcp),
            req,
        })
    }

    async fn handshake_tls(&self, tcp: TcpStream) -> std::result::Result<Accepted, Failed> {
        let Some(configs) = self.tls_configs() else {
            bump(&self.stats.tls_failures);
            return Err(Failed::Close);
        };
        let tls = match TlsAcceptor::from(configs.server.clone()).accept(tcp).await {
            Ok(t) => t,
            Err(e) => {
                bump(&self.stats.tls_failures);
                tracing::debug!("data path: TLS: {e}");
                return Err(Failed::Close);
            }
        };
        // the verifier checked the chain; the certificate must also name a node of
        // this cluster
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|c| crate::ca::identity_of_der(c).ok());
        let Some(peer) = peer.filter(|p| p.cluster_id == configs.cluster_id) else {
            bump(&self.stats.tls_failures);
            return Err(Failed::Close);
        };
        let mut stream = TlsTunnel::new(
            tokio_rustls::TlsStream::Server(tls),
            self.limits.key_update,
            self.stats.clone(),
        );
        let mut buf = [0u8; MAX_HEADER];
        stream
            .read_exact(&mut buf[..2])
            .await
            .map_err(|_| Failed::Close)?;
        let Ok(len) = header::body_len([buf[0], buf[1]]) else {
            bump(&self.stats.bad_headers);
            return Err(Failed::Close);
        };
        stream
            .read_exact(&mut buf[2..2 + len])
            .await
            .map_err(|_| Failed::Close)?;
        let Ok(req) = Request::decode(&buf[2..2 + len]) else {
            bump(&self.stats.bad_headers);
            return Err(Failed::Close);
        };
        let stream = TunnelStream::Tls(Box::new(stream));
        if req.from != peer.node_id {
            // a node speaking for another
            bump(&self.stats.refused);
            return Err(Failed::Answer(stream, Status::Refused));
        }
        Ok(Accepted { stream, req })
    }

    /// Looks the request up, connects to the task, answers, carries the bytes.
    async fn carry(&self, a: Accepted) -> Result<()> {
        let Accepted { mut stream, req } = a;
        let encrypted = matches!(stream, TunnelStream::Tls(_));
        let addr = match self.local.resolve(&req) {
            Resolution::Refused => {
                bump(&self.stats.refused);
                return answer(&mut stream, Status::Refused).await;
            }
            Resolution::Local {
                encrypted_network: true,
                ..
            } if !encrypted => {
                bump(&self.stats.refused);
                bump(&self.stats.downgrades);
                return answer(&mut stream, Status::Refused).await;
            }
            Resolution::Local { addr, .. } => addr,
        };
        match req.target.protocol {
            Protocol::Tcp => {
                let Some(mut backend) = connect_tcp(addr).await else {
                    bump(&self.stats.unavailable);
                    return answer(&mut stream, Status::Unavailable).await;
                };
                bump(&self.stats.connected);
                answer(&mut stream, Status::Connected).await?;
                stream.relay(&mut backend).await?;
            }
            Protocol::Udp => {
                let Some(sock) = connect_udp(addr).await else {
                    bump(&self.stats.unavailable);
                    return answer(&mut stream, Status::Unavailable).await;
                };
                bump(&self.stats.connected);
                answer(&mut stream, Status::Connected).await?;
                if let Err(e) = udp::serve(stream, sock, self.limits.udp_idle).await {
                    if matches!(e, Error::InvalidInput(_)) {
                        bump(&self.stats.oversize_frames);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// Sends a status byte (and, for TLS, flushes it out).
async fn answer<S: AsyncWrite + AsyncRead + Unpin>(s: &mut S, status: Status) -> Result<()> {
    s.write_all(&[status as u8]).await?;
    s.flush().await?;
    Ok(())
}

/// A TCP connection to the task, or `None` if it did not accept in time.
async fn connect_tcp(addr: SocketAddr) -> Option<TcpStream> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .ok()?;
    match tokio::time::timeout(super::super::CONNECT_TIMEOUT, sock.connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Some(s)
        }
        _ => None,
    }
}

/// A UDP socket connected to the task.
async fn connect_udp(addr: SocketAddr) -> Option<UdpSocket> {
    let local: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).await.ok()?;
    sock.connect(addr).await.ok()?;
    Some(sock)
}
