//! The gate of the cluster port: every request is judged on its path and its caller's
//! certificate **before a byte of its body is read**.
//!
//! tonic decodes a request's message before it calls the handler, so a check in the
//! handler comes after the whole message sits in memory: three anonymous 200 MB Raft
//! messages once took a leader from 22 MB to 1 GB. The gate is a tower layer around the
//! whole router instead. It sees the HTTP/2 headers (the path names the RPC) and the
//! connection's [`PeerInfo`]; a refused request is answered with a gRPC status at once
//! and its body is dropped unread, so HTTP/2 flow control stops the sender after one
//! window. An admitted request's body is wrapped in a byte limit that fits its RPC; on
//! a request stream that lives as long as its node (`Dispatcher.Beats`) the limit is of
//! each message, judged on the message's gRPC header before its bytes are read.
//!
//! # Who may call what (the cluster port)
//!
//! | RPC | caller | request at most |
//! |---|---|---|
//! | `Ca.Join` | anyone (the join secret is the credential); rate limited per address | 64 KiB |
//! | `Ca.Renew` | a member | 64 KiB |
//! | `Dispatcher.Heartbeat`, `.Session` | a member | 64 KiB |
//! | `Dispatcher.Beats` | a member, checked again at every beat (one at a time) | 64 KiB each message |
//! | `Dispatcher.UpdateTaskStatus` | a member | 8 MiB |
//! | `Dispatcher.*` (other) | a member | 64 KiB |
//! | `NodeApi.ImageSave`, `.VolumeSave` | a member | 64 KiB |
//! | `NodeApi.Logs`, `.Volumes` | a manager | 64 KiB |
//! | `Control.*` | a manager | 8 MiB (so that the one Raft entry a call makes fits in a Raft message) |
//! | `Raft.*` | a manager | 16 MiB (entries are sent in batches under it; snapshots in 1 MiB chunks) |
//! | anything else | nobody | |
//!
//! "A member" and "a manager" are checked against the node table (see
//! [`super::auth`]), so a removed node or a demoted manager is refused by its next call.
//! What each RPC may *name* (a node may report only its own tasks, a heartbeat's
//! address must be the caller's, a renewal is for the caller only) is checked in its
//! handler.
//!
//! Refusals are logged with the caller's address and identity, at most a few lines a
//! second.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tonic::body::Body;
use tower::{Layer, Service};

use super::auth::{self, Access};
use crate::host::Host;
use crate::net::PeerInfo;

/// 64 KiB.
const SMALL: usize = 64 * 1024;

/// What an RPC demands, and the most bytes its request body may have (gRPC framing
/// included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Who may call.
    pub access: Access,
    /// Request body limit, bytes.
    pub max_request_bytes: usize,
    /// The limit is of each message of a request stream, not of the whole body.
    pub each_message: bool,
}

/// The largest Raft request (see the table in the module doc).
pub const MAX_LARGE_REQUEST: usize = crate::raft::network::MAX_RAFT_REQUEST;

/// The largest control request: half a Raft message, so that the entry it makes, with
/// its framing, always fits in one.
pub const MAX_CONTROL_REQUEST: usize = MAX_LARGE_REQUEST / 2;

/// The rule for a request path (`/orc.Service/Method`), `None` for an unknown RPC.
pub fn rule_for(path: &str) -> Option<Rule> {
    let (service, method) = path.strip_prefix("/orc.")?.split_once('/')?;
    let rule = |access, max_request_bytes| {
        Some(Rule {
            access,
            max_request_bytes,
            each_message: false,
        })
    };
    match (service, method) {
        ("Dispatcher", "Beats") => Some(Rule {
            access: Access::Node,
            max_request_bytes: SMALL,
            each_message: true,
        }),
        ("Ca", "Join") => rule(Access::Anyone, SMALL),
        ("Ca", "Renew") => rule(Access::Node, SMALL),
        ("Dispatcher", "UpdateTaskStatus") => rule(Access::Node, 8 * 1024 * 1024),
        ("Dispatcher", _) => rule(Access::Node, SMALL),
        ("NodeApi", "ImageSave" | "VolumeSave") => rule(Access::Node, SMALL),
        ("NodeApi", "Logs" | "Volumes") => rule(Access::Manager, SMALL),
        ("Control", _) => rule(Access::Manager, MAX_CONTROL_REQUEST),
        ("Raft", _) => rule(Access::Manager, MAX_LARGE_REQUEST),
        _ => None,
    }
}

/// Joins one address may start: a burst of [`JOIN_BURST`], then one per
/// [`JOIN_EVERY`].
pub const JOIN_BURST: f64 = 10.0;
/// See [`JOIN_BURST`].
pub const JOIN_EVERY: Duration = Duration::from_millis(500);
/// Addresses whose join budget is remembered (older, refilled ones are forgotten first).
pub const JOIN_TABLE_MAX: usize = 4096;

/// A token bucket per source address for `Ca.Join`: a stranger guessing secrets gets a
/// few tries a second, not thousands. Bounded: at most [`JOIN_TABLE_MAX`] addresses.
#[derive(Default)]
pub struct JoinLimiter {
    table: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl JoinLimiter {
    /// Takes one join from `ip`'s budget at `now`; false when it is spent.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut t = self.table.lock().expect("join limiter lock");
        let refill = |(tokens, at): (f64, Instant)| {
            let gained = now.saturating_duration_since(at).as_secs_f64() / JOIN_EVERY.as_secs_f64();
            (tokens + gained).min(JOIN_BURST)
        };
        if t.len() >= JOIN_TABLE_MAX && !t.contains_key(&ip) {
            t.retain(|_, v| refill(*v) < JOIN_BURST);
            if t.len() >= JOIN_TABLE_MAX {
                // Everyone in the table is still limited: the newcomer waits too.
                return false;
            }
        }
        let tokens = t.get(&ip).map(|v| refill(*v)).unwrap_or(JOIN_BURST);
        if tokens < 1.0 {
            t.insert(ip, (tokens, now));
            return false;
        }
        t.insert(ip, (tokens - 1.0, now));
        true
    }
}

/// Logs refusals, at most [`LOG_BURST`] a second.
#[derive(Default)]
struct RefusalLog {
    window: Mutex<(Option<Instant>, u32, u64)>,
}

const LOG_BURST: u32 = 5;

impl RefusalLog {
    fn refused(&self, peer: &PeerInfo, path: &str, why: &str) {
        let mut w = self.window.lock().expect("log lock");
        let now = Instant::now();
        if w.0
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(1))
        {
            if w.2 > 0 {
                tracing::warn!(suppressed = w.2, "cluster port: more calls refused");
            }
            *w = (Some(now), 0, 0);
        }
        if w.1 < LOG_BURST {
            w.1 += 1;
            let who = peer
                .identity()
                .map(|i| format!("node {} ({})", i.node_id, i.role))
                .unwrap_or_else(|| "anonymous".into());
            let addr = peer.remote.map(|a| a.to_string()).unwrap_or_default();
            tracing::warn!(peer = %addr, caller = %who, rpc = path, "refused: {why}");
        } else {
            w.2 += 1;
        }
    }
}

/// The gate as a tower layer for `Server::builder().layer(..)`.
#[derive(Clone)]
pub struct GateLayer {
    d: Host,
    joins: Arc<JoinLimiter>,
    log: Arc<RefusalLog>,
}

impl GateLayer {
    /// The gate of `d`'s cluster port.
    pub fn new(d: Host) -> Self {
        GateLayer {
            d,
            joins: Arc::default(),
            log: Arc::default(),
        }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;
    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            layer: self.clone(),
        }
    }
}

/// The gate around the router.
#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    layer: GateLayer,
}

impl GateLayer {
    /// Judges one request: its rule, or the status to answer with.
    fn judge(&self, peer: &PeerInfo, path: &str) -> Result<Rule, tonic::Status> {
        let Some(rule) = rule_for(path) else {
            return Err(tonic::Status::unimplemented(format!(
                "{path}: no such call on the cluster port"
            )));
        };
        if rule.access == Access::Anyone && peer.identity().is_none() {
            if let Some(ip) = peer.remote.map(|a| a.ip()) {
                if !self.joins.allow(ip, Instant::now()) {
                    return Err(tonic::Status::resource_exhausted(format!(
                        "too many join attempts from {ip}: wait a moment and retry"
                    )));
                }
            }
        }
        auth::admit(&self.d, peer, rule.access).map_err(tonic::Status::from)?;
        Ok(rule)
    }
}

impl<S> Service<http::Request<Body>> for Gate<S>
where
    S: Service<http::Request<http_body_util::Limited<Body>>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let peer = req
            .extensions()
            .get::<PeerInfo>()
            .cloned()
            .unwrap_or_default();
        let path = req.uri().path().to_string();
        match self.layer.judge(&peer, &path) {
            Ok(rule) => {
                let req = req.map(|b| match rule.each_message {
                    false => http_body_util::Limited::new(b, rule.max_request_bytes),
                    true => http_body_util::Limited::new(
                        Body::new(EachMessage::new(b, rule.max_request_bytes)),
                        usize::MAX,
                    ),
                });
                // The clone that was made ready is the one that must be called.
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                Box::pin(ready.call(req))
            }
            Err(status) => {
                self.layer.log.refused(&peer, &path, status.message());
                // The body is dropped unread.
                drop(req);
                Box::pin(async move { Ok(status.into_http::<Body>()) })
            }
        }
    }
}

/// Where a request stream is in its gRPC framing (each message: a byte saying whether
/// it is compressed, its length as 4 bytes big-endian, the message), read as its bytes
/// pass, whatever the HTTP/2 frames they come in.
#[derive(Debug, Default)]
struct Framing {
    head: [u8; 5],
    /// Bytes of `head` read.
    have: usize,
    /// Bytes of the current message still to come.
    left: usize,
}

impl Framing {
    /// Reads `data`; `Err` with the length a message's header announces when the
    /// message, with its header, is longer than `max`.
    fn pass(&mut self, mut data: &[u8], max: usize) -> Result<(), usize> {
        while !data.is_empty() {
            if self.left > 0 {
                let n = self.left.min(data.len());
                self.left -= n;
                data = &data[n..];
                continue;
            }
            let n = (self.head.len() - self.have).min(data.len());
            self.head[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == self.head.len() {
                self.have = 0;
                let [_, a, b, c, d] = self.head;
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                if len.saturating_add(self.head.len()) > max {
                    return Err(len);
                }
                self.left = len;
            }
        }
        Ok(())
    }
}

/// A request body whose every message is at most `max` bytes, framing included: the
/// body fails at the header of the first longer one, before its bytes are read.
struct EachMessage {
    inner: Body,
    max: usize,
    framing: Framing,
    failed: bool,
}

impl EachMessage {
    fn new(inner: Body, max: usize) -> Self {
        EachMessage {
            inner,
            max,
            framing: Framing::default(),
            failed: false,
        }
    }
}

impl http_body::Body for EachMessage {
    type Data = prost::bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let frame = match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        let max = self.max;
        if let Some(data) = frame.data_ref() {
            let data = data.clone();
            if let Err(len) = self.framing.pass(&data, max) {
                self.failed = true;
                return Poll::Ready(Some(Err(tonic::Status::out_of_range(format!(
                    "a message of {len} bytes: at most {max} each"
                )))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_s_messages_are_bounded_each_whatever_the_frames_they_come_in() {
        let framed = |len: usize| {
            let mut m = vec![0u8];
            m.extend((len as u32).to_be_bytes());
            m.extend(std::iter::repeat_n(7u8, len));
            m
        };
        // Positive control: many messages under the bound, in pieces of every size
        // (headers and messages split across frames).
        let stream: Vec<u8> = (0..50).flat_map(|i| framed(i * 37 % 1000)).collect();
        for piece in [1, 2, 3, 5, 7, 64, 4096] {
            let mut f = Framing::default();
            for chunk in stream.chunks(piece) {
                assert_eq!(f.pass(chunk, 1005), Ok(()), "pieces of {piece}");
            }
            assert_eq!((f.have, f.left), (0, 0), "ends at a message's end");
        }
        // One message just over, after good ones: refused at its header (its first
        // byte never needed), in any pieces.
        let mut bad = framed(10);
        bad.extend(framed(1001)[..5].to_vec());
        for piece in [1, 3, 6] {
            let mut f = Framing::default();
            let r: Result<Vec<()>, usize> = bad.chunks(piece).map(|c| f.pass(c, 1005)).collect();
            assert_eq!(r, Err(1001), "pieces of {piece}");
        }
        let mut f = Framing::default();
        assert_eq!(f.pass(&framed(1000), 1005), Ok(()), "exactly the bound");
        // A length near u32::MAX does not overflow into a small one.
        let mut f = Framing::default();
        assert_eq!(
            f.pass(&[0, 255, 255, 255, 255], 1005),
            Err(u32::MAX as usize)
        );
    }

    #[test]
    fn every_rpc_of_the_protos_has_a_rule_and_unknown_ones_have_none() {
        for p in [
            "/orc.Ca/Join",
            "/orc.Ca/Renew",
            "/orc.Dispatcher/Heartbeat",
            "/orc.Dispatcher/Beats",
            "/orc.Dispatcher/Session",
            "/orc.Dispatcher/UpdateTaskStatus",
            "/orc.NodeApi/ImageSave",
            "/orc.NodeApi/VolumeSave",
            "/orc.Dispatcher/CheckVolumeGrant",
            "/orc.NodeApi/Logs",
            "/orc.NodeApi/Volumes",
            "/orc.Control/ListNodes",
            "/orc.Control/CreateNetwork",
            "/orc.Control/RemoveNetwork",
            "/orc.Raft/AppendEntries",
        ] {
            assert!(rule_for(p).is_some(), "{p}");
        }
        // Networks are control writes: a manager's, bounded as CreateService is.
        assert_eq!(
            rule_for("/orc.Control/CreateNetwork"),
            rule_for("/orc.Control/CreateService")
        );
        assert_eq!(rule_for("/orc.Ca/Join").unwrap().access, Access::Anyone);
        // The heartbeat stream lives as long as its node: its bound is of each beat.
        assert!(rule_for("/orc.Dispatcher/Beats").unwrap().each_message);
        assert!(!rule_for("/orc.Dispatcher/Heartbeat").unwrap().each_message);
        assert!(!rule_for("/orc.Dispatcher/Session").unwrap().each_message);
        assert_eq!(rule_for("/orc.Raft/Vote").unwrap().access, Access::Manager);
        assert_eq!(
            rule_for("/orc.NodeApi/Logs").unwrap().access,
            Access::Manager
        );
        assert_eq!(
            rule_for("/orc.Local/Init"),
            None,
            "the local API is not served here"
        );
        assert_eq!(rule_for("/grpc.health.v1.Health/Check"), None);
        assert_eq!(rule_for("/orc.Raft"), None);
        assert_eq!(rule_for(""), None);
    }

    #[test]
    fn joins_from_one_address_are_limited_and_refill() {
        let l = JoinLimiter::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        let burst = (0..100).filter(|_| l.allow(a, t0)).count();
        assert_eq!(burst, JOIN_BURST as usize);
        // Another address is not affected (the positive control).
        assert!(l.allow(b, t0));
        // One more after one refill period, not two.
        let t1 = t0 + JOIN_EVERY + Duration::from_millis(1);
        assert!(l.allow(a, t1));
        assert!(!l.allow(a, t1));
    }

    #[test]
    fn the_join_table_stays_bounded() {
        let l = JoinLimiter::default();
        let t0 = Instant::now();
        for i in 0..(JOIN_TABLE_MAX as u32 + 100) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.allow(ip, t0);
        }
        assert!(l.table.lock().unwrap().len() <= JOIN_TABLE_MAX);
    }
}
