//! Where a call runs, and how it is retried: the routing to the leader, apart from the
//! services it serves.
//!
//! A call that only the leader may serve is routed here (`on_leader`): a manager that
//! leads runs it itself; a follower forwards the same request to the leader over the
//! cluster's mTLS, waiting briefly for an election if there is no leader yet; a worker
//! answers that it is not a manager. A forward that fails because the leader just died
//! (`retryable`) is retried on the new leader for up to 8 s, so a call sent during a
//! failover lands as soon as a new leader exists; a forward stuck on a dead connection
//! is given up as soon as a new leader is known.
//!
//! Writes are not idempotent (a second `service update` would overwrite the rollback
//! target, a second join would add an orphan node), and a retried forward may reach a
//! leader that already applied the first attempt. So every write (`write_on_leader`:
//! the `leader_write!` calls and `Ca.Join`) carries a request id, made by the first
//! manager that receives the call and kept across its retries, sent in the
//! `orc-request-id` metadata (`request_id`, `with_request_id`), and accepted only
//! from the local socket or a manager. The leader applies it once and gives a retry the
//! first reply ([`crate::manager::once`]).
//!
//! A forwarded control call also carries a deadline (`orc-deadline-ms`,
//! `check_deadline`): one that sat in a dead connection is refused rather than applied
//! after its sender gave up.
//!
//! The `Control` handlers use it through `leader_call!` and `leader_write!` (authorise a
//! manager, check the deadline, run here or forward); `Ca`, `Dispatcher` and the image
//! grants ([`super::images`]) call `on_leader` and `write_on_leader` directly with
//! their own forwarders.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::host::Host;
use crate::manager::Manager;
use crate::store::RequestId;

/// The largest answer a forwarded control call may bring back.
pub(super) const MAX_MSG: usize = 64 * 1024 * 1024;

/// Where a leader-only call runs.
enum Route {
    Here(Arc<Manager>),
    Leader(Channel, String, Arc<Manager>, u64),
}

async fn route(d: &Host) -> Result<Route> {
    let m = d.manager()?;
    if m.is_leader() {
        return Ok(Route::Here(m));
    }
    let leader = m.wait_leader(Duration::from_secs(3)).await?;
    if leader == m.id {
        return Ok(Route::Here(m));
    }
    let addr = m
        .addr_of(leader)
        .ok_or_else(|| Error::Unavailable("the leader's address is unknown".into()))?;
    Ok(Route::Leader(d.peers().channel(&addr)?, addr, m, leader))
}

/// Resolves when this manager sees a leader other than `leader` (a new term).
async fn leader_changed(m: &Manager, leader: u64) {
    let mut rx = m.raft.metrics();
    loop {
        let now = rx.borrow().current_leader;
        if now.is_some() && now != Some(leader) {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Errors after which the call is tried again on the (new) leader: the leader could not
/// be reached, or was lost during the call; not when there is no leader or no quorum, or
/// this node is no manager (the error's kind says so, [`Error::is_final_here`]).
fn retryable(s: &Status) -> bool {
    use tonic::Code::*;
    let m = s.message();
    let transport = matches!(
        s.code(),
        Unavailable | Unknown | Cancelled | DeadlineExceeded
    ) || (s.code() == Internal
        && (m.contains("http2") || m.contains("transport") || m.contains("connection")));
    transport && !Error::from(s.clone()).is_final_here()
}

/// Runs `local` on the leader, or forwards with `forward`; retries across a failover for
/// up to 8 s.
pub(super) async fn on_leader<Req, Resp, L, LF, F, FF>(
    d: &Host,
    req: Req,
    local: L,
    forward: F,
) -> Result<Response<Resp>, Status>
where
    Req: Clone,
    L: Fn(Arc<Manager>, Req) -> LF,
    LF: Future<Output = Result<Resp>>,
    F: Fn(Channel, Req) -> FF,
    FF: Future<Output = Result<Response<Resp>, Status>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        let r = match route(d).await {
            Ok(Route::Here(m)) => local(m, req.clone())
                .await
                .map(Response::new)
                .map_err(Status::from),
            Ok(Route::Leader(ch, addr, m, leader)) => {
                // A leader that vanished (power loss, partition) may leave the call
                // hanging on a dead connection: give up on it as soon as a new leader
                // is known. The call may have been applied all the same: writes carry
                // a request id, so the retry does not apply it again.
                let r = tokio::select! {
                    r = forward(ch, req.clone()) => r,
                    _ = leader_changed(&m, leader) => Err(Status::unavailable("the leader changed during the call")),
                };
                // The node this manager took for the leader is no manager any more (it
                // was just demoted): the new leader is elsewhere, try again there. Only
                // this node's own `NotManager` (a worker asked) is final.
                let r = r.map_err(|s| match Error::from(s.clone()) {
                    Error::NotManager(why) => Status::from(Error::NotLeader(format!(
                        "the leader this manager knew ({addr}) is no longer a manager: {why}"
                    ))),
                    _ => s,
                });
                if let Err(s) = &r {
                    if retryable(s) {
                        d.peers().forget(&addr);
                    }
                }
                r
            }
            Err(e) => Err(Status::from(e)),
        };
        match r {
            Err(s) if retryable(&s) && tokio::time::Instant::now() < deadline => {
                tracing::debug!("retrying on the leader: {}", s.message());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) if retryable(&s) => {
                return Err(Error::NoLeader(format!(
                    "no leader answered this manager within 8 s (is it cut off from the other managers?): {}",
                    s.message()
                ))
                .into())
            }
            other => return other,
        }
    }
}

/// [`on_leader`] for a write made for `request`: on the leader, it runs once per
/// request ([`crate::manager::once::run`]); `forward` must send `request` along
/// ([`with_request_id`]).
pub(super) async fn write_on_leader<Req, Resp, L, LF, F, FF>(
    d: &Host,
    request: RequestId,
    req: Req,
    local: L,
    forward: F,
) -> Result<Response<Resp>, Status>
where
    Req: Clone,
    Resp: prost::Message + Default,
    L: Fn(Arc<Manager>, Req) -> LF,
    LF: Future<Output = Result<Resp>>,
    F: Fn(Channel, Req) -> FF,
    FF: Future<Output = Result<Response<Resp>, Status>>,
{
    let local = |m: Arc<Manager>, r: Req| {
        let call = local(m.clone(), r);
        let request = request.clone();
        async move { crate::manager::once::run(&m, request, call).await }
    };
    on_leader(d, req, local, forward).await
}

/// Metadata of a write: its request id (see the module doc).
pub(super) const REQUEST_ID_KEY: &str = "orc-request-id";

/// The request id a trusted caller (the local socket, a manager) sent, or a new one.
pub(super) fn request_id<T>(req: &Request<T>) -> Result<RequestId, Status> {
    match req.metadata().get(REQUEST_ID_KEY) {
        None => Ok(RequestId::random()),
        Some(v) => Ok(v
            .to_str()
            .map_err(|_| Error::InvalidInput(format!("{REQUEST_ID_KEY}: not text")))?
            .parse()?),
    }
}

/// Sets the request id of a write in its metadata.
pub(super) fn with_request_id<T>(mut req: Request<T>, request: Option<&RequestId>) -> Request<T> {
    if let Some(v) = request.and_then(|r| r.0.parse().ok()) {
        req.metadata_mut().insert(REQUEST_ID_KEY, v);
    }
    req
}

/// Metadata a forwarded call carries: the unix ms after which the leader must not
/// act on it. A call that sat in a dead connection (a manager cut off from the
/// others, then healed) is refused rather than applied after its sender gave up.
pub(super) const DEADLINE_KEY: &str = "orc-deadline-ms";

/// How long a forwarded call stays valid.
pub(super) const FORWARD_VALID_MS: u64 = 8_000;

/// Forwards a control call to the leader, with its deadline and, for a write, its
/// request id.
macro_rules! forward {
    ($method:ident, $request:expr) => {{
        let request: Option<$crate::store::RequestId> = $request;
        move |ch: tonic::transport::Channel, r| {
            let request = request.clone();
            async move {
                let mut req =
                    $crate::api::route::with_request_id(tonic::Request::new(r), request.as_ref());
                if let Ok(v) = ($crate::units::now_ms() + $crate::api::route::FORWARD_VALID_MS)
                    .to_string()
                    .parse()
                {
                    req.metadata_mut()
                        .insert($crate::api::route::DEADLINE_KEY, v);
                }
                $crate::proto::control_client::ControlClient::new(ch)
                    .max_decoding_message_size($crate::api::route::MAX_MSG)
                    .$method(req)
                    .await
            }
        }
    }};
}
pub(super) use forward;

/// Refuses a forwarded call that arrives after its deadline.
pub(super) fn check_deadline<T>(req: &Request<T>) -> Result<(), Status> {
    let deadline = req
        .metadata()
        .get(DEADLINE_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match deadline {
        Some(d) if crate::units::now_ms() > d => Err(Status::deadline_exceeded(
            "a forwarded request arrived after its sender gave up on it: not applied",
        )),
        _ => Ok(()),
    }
}

/// A leader-only control call: authorise a manager (or the local socket), then run
/// `body` with the leading [`Manager`] here, or forward the same request to the leader.
macro_rules! leader_call {
    ($self:ident, $req:ident, $method:ident, |$m:ident, $r:ident : $t:ty| $body:expr) => {{
        $crate::api::auth::require_role(
            &$self.d,
            &$crate::net::peer_of(&$req),
            $crate::store::Role::Manager,
        )?;
        $crate::api::route::check_deadline(&$req)?;
        $crate::api::route::on_leader(
            &$self.d,
            $req.into_inner(),
            |$m: std::sync::Arc<$crate::manager::Manager>, $r: $t| async move { $body },
            $crate::api::route::forward!($method, None),
        )
        .await
    }};
}
pub(super) use leader_call;

/// A leader-only control write: as `leader_call!`, and it applies once however often
/// it is retried (see the module doc).
macro_rules! leader_write {
    ($self:ident, $req:ident, $method:ident, |$m:ident, $r:ident : $t:ty| $body:expr) => {{
        $crate::api::auth::require_role(
            &$self.d,
            &$crate::net::peer_of(&$req),
            $crate::store::Role::Manager,
        )?;
        $crate::api::route::check_deadline(&$req)?;
        let request = $crate::api::route::request_id(&$req)?;
        $crate::api::route::write_on_leader(
            &$self.d,
            request.clone(),
            $req.into_inner(),
            |$m: std::sync::Arc<$crate::manager::Manager>, $r: $t| async move { $body },
            $crate::api::route::forward!($method, Some(request)),
        )
        .await
    }};
}
pub(super) use leader_write;

/// Asks the managers a question with `ask`: this node's own manager runtime if it has
/// one, else the leader it last heard of, then the other managers; a manager that
/// cannot be reached is skipped. `what` names the question in the error.
pub(super) async fn ask_managers<T, F, FF>(d: &Host, what: &str, ask: F) -> Result<T>
where
    F: Fn(Channel) -> FF,
    FF: Future<Output = Result<Response<T>, Status>>,
{
    let member = d
        .member()
        .ok_or_else(|| Error::NotManager("this node is not part of a cluster".into()))?;
    let mut targets = vec![];
    if d.manager().is_ok() {
        targets.push(member.advertise_addr.clone());
    } else {
        targets.extend(d.leader_hint());
        targets.extend(member.managers.iter().cloned());
    }
    let mut seen = std::collections::BTreeSet::new();
    targets.retain(|a| seen.insert(a.clone()));
    let mut last = String::from("no manager known");
    for addr in targets {
        let ch = d.peers().channel(&addr)?;
        match ask(ch).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                        | tonic::Code::DeadlineExceeded
                ) =>
            {
                d.peers().forget(&addr);
                last = format!("{addr}: {}", s.message());
            }
            Err(s) => return Err(Error::from(s)),
        }
    }
    Err(Error::Unavailable(format!(
        "{what}: no manager answered ({last})"
    )))
}
