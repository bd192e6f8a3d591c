//! The control API: thin gRPC handlers over the domain functions in [`nodes`].
//!
//! Each handler decodes, checks who is calling ([`auth`]), then routes: a manager that
//! leads runs the operation itself; a follower forwards the same request to the leader
//! over the cluster's mTLS, waiting briefly for an election if there is no leader yet;
//! a worker answers that it is not a manager. A forward that fails because the leader
//! just died is retried on the new leader, so a write sent during a failover lands as
//! soon as a new leader exists.
//!
//! Writes are not idempotent (a second `service update` would overwrite the rollback
//! target, a second join would add an orphan node), and a retried forward may reach a
//! leader that already applied the first attempt. So every write (the `leader_write!`
//! calls and `Ca.Join`) carries a request id, made by the first manager that receives
//! the call and kept across its retries, sent in the `orc-request-id` metadata, and
//! accepted only from the local socket or a manager. The leader applies it once and
//! gives a retry the first reply ([`crate::daemon::once`]).
//!
//! A locked manager (autolock, see [`crate::daemon::keys`]) answers
//! [`crate::daemon::LOCKED`] to every call but `Local.Info` and `Local.Unlock`: the
//! `Local` calls check it, and every `Control` call meets it in `Daemon::manager`.
//!
//! Services: `Local` (unix socket only: init, join, leave, info, unlock), `Control` (socket and
//! cluster port), `Ca` (cluster port; `Join` is the one call without a certificate),
//! `Dispatcher` (cluster port, any node of the cluster) and `Raft` (managers only,
//! [`crate::raft::network`], server side [`raft`]).

pub mod auth;
pub mod convert;
pub mod gate;
pub mod images;
pub mod keys;
pub mod logs;
pub mod nodes;
pub mod raft;
mod redacted;
pub mod services;
pub mod stacks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::server::Router;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::host::{Host, InitParams};
use crate::manager::Manager;
use crate::net::peer_of;
use crate::proto::{self, *};
use crate::store::{NodeId, RequestId, Role, TaskId, TaskStatus};

const MAX_MSG: usize = 64 * 1024 * 1024;

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
async fn on_leader<Req, Resp, L, LF, F, FF>(
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
async fn write_on_leader<Req, Resp, L, LF, F, FF>(
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
const REQUEST_ID_KEY: &str = "orc-request-id";

/// The request id a trusted caller (the local socket, a manager) sent, or a new one.
fn request_id<T>(req: &Request<T>) -> Result<RequestId, Status> {
    match req.metadata().get(REQUEST_ID_KEY) {
        None => Ok(RequestId::random()),
        Some(v) => Ok(v
            .to_str()
            .map_err(|_| Error::InvalidInput(format!("{REQUEST_ID_KEY}: not text")))?
            .parse()?),
    }
}

/// Sets the request id of a write in its metadata.
fn with_request_id<T>(mut req: Request<T>, request: Option<&RequestId>) -> Request<T> {
    if let Some(v) = request.and_then(|r| r.0.parse().ok()) {
        req.metadata_mut().insert(REQUEST_ID_KEY, v);
    }
    req
}

/// The router served on the local unix socket.
pub fn local_router(d: impl Into<Host>) -> Router {
    let d: Host = d.into();
    Server::builder()
        .add_service(
            local_server::LocalServer::new(LocalApi { d: d.clone() })
                .max_decoding_message_size(gate::MAX_CONTROL_REQUEST),
        )
        .add_service(
            control_server::ControlServer::new(ControlApi { d })
                .max_decoding_message_size(gate::MAX_CONTROL_REQUEST),
        )
}

/// The router served on the cluster port, behind the [`gate`]: who may call each RPC,
/// and how large its request may be, is decided before its body is read. Streams per
/// connection are capped, dead connections found by HTTP/2 pings.
pub fn cluster_router(
    d: Host,
    runner: crate::agent::RunnerSlot,
) -> Router<tower::layer::util::Stack<gate::GateLayer, tower::layer::util::Identity>> {
    Server::builder()
        .max_concurrent_streams(256)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(gate::GateLayer::new(d.clone()))
        .add_service(
            control_server::ControlServer::new(ControlApi { d: d.clone() })
                .max_decoding_message_size(gate::MAX_CONTROL_REQUEST),
        )
        .add_service(ca_server::CaServer::new(CaApi { d: d.clone() }))
        .add_service(
            dispatcher_server::DispatcherServer::new(DispatcherApi { d: d.clone() })
                .max_decoding_message_size(8 * 1024 * 1024),
        )
        .add_service(node_api_server::NodeApiServer::new(logs::NodeApi {
            d: d.clone(),
            runner,
        }))
        .add_service(
            raft_server::RaftServer::new(raft::RaftService::new(d))
                .max_decoding_message_size(gate::MAX_LARGE_REQUEST),
        )
}

/// `Local`: init, join, leave, info.
pub struct LocalApi {
    d: Host,
}

#[tonic::async_trait]
impl local_server::Local for LocalApi {
    async fn init(&self, req: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        auth::require_local(&peer_of(&req))?;
        let r = req.into_inner();
        let p = InitParams {
            advertise_addr: r.advertise_addr,
            listen_addr: r.listen_addr,
            cert_validity_secs: r.cert_validity_secs,
            heartbeat_period_ms: r.heartbeat_period_ms,
            vip_range: r.vip_range,
            autolock: r.autolock,
        };
        Ok(Response::new(self.d.init(p).await?))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        auth::require_local(&peer_of(&req))?;
        Ok(Response::new(self.d.join(req.into_inner()).await?))
    }

    async fn leave(&self, req: Request<LeaveRequest>) -> Result<Response<Empty>, Status> {
        auth::require_local(&peer_of(&req))?;
        self.d.leave(req.into_inner().force).await?;
        Ok(Response::new(Empty {}))
    }

    async fn routes(&self, req: Request<Empty>) -> Result<Response<RoutesResponse>, Status> {
        auth::require_local(&peer_of(&req))?;
        self.d.refuse_if_locked()?;
        let routes = self.d.mesh().map(|m| m.routes()).unwrap_or_default();
        let routes = routes
            .into_iter()
            .map(
                |(protocol, address, port, service, backends)| proto::Route {
                    protocol: protocol.into(),
                    address,
                    port: port.into(),
                    service,
                    backends: backends
                        .into_iter()
                        .map(|(address, active)| RouteBackend {
                            address,
                            active: active as u64,
                        })
                        .collect(),
                },
            )
            .collect();
        Ok(Response::new(RoutesResponse { routes }))
    }

    async fn unlock(&self, req: Request<UnlockRequest>) -> Result<Response<Empty>, Status> {
        auth::require_local(&peer_of(&req))?;
        self.d.unlock(&req.into_inner().key).await?;
        Ok(Response::new(Empty {}))
    }

    async fn info(&self, req: Request<Empty>) -> Result<Response<InfoResponse>, Status> {
        auth::require_local(&peer_of(&req))?;
        if let Some(me) = self.d.locked_member() {
            return Ok(Response::new(InfoResponse {
                node_id: me.node_id.to_string(),
                role: me.role.to_string(),
                cluster_id: me.cluster_id,
                advertise_addr: me.advertise_addr,
                managers: me.managers,
                state: "locked".into(),
                ..Default::default()
            }));
        }
        let Some(me) = self.d.member() else {
            return Ok(Response::new(InfoResponse {
                state: "inactive".into(),
                ..Default::default()
            }));
        };
        let mut r = InfoResponse {
            node_id: me.node_id.to_string(),
            role: me.role.to_string(),
            cluster_id: me.cluster_id.clone(),
            advertise_addr: me.advertise_addr.clone(),
            managers: me.managers.clone(),
            state: "active".into(),
            ..Default::default()
        };
        if let Ok(id) = me.creds.identity() {
            r.cert_expires = time::OffsetDateTime::from_unix_timestamp(id.not_after_unix)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
        }
        if let Ok(m) = self.d.manager() {
            let metrics = m.raft.metrics().borrow().clone();
            r.raft_term = metrics.current_term;
            r.raft_last_applied = metrics.last_applied.map(|l| l.index).unwrap_or(0);
            if let Some(l) = metrics.current_leader {
                r.leader_id = NodeId(l).to_string();
                r.leader_addr = m.addr_of(l).unwrap_or_default();
            }
            let (n, mgrs) = m.read(|s| (s.nodes.len() as u32, s.managers().count() as u32));
            r.nodes = n;
            r.managers_count = mgrs;
        }
        Ok(Response::new(r))
    }
}

/// `Control`: cluster state, served by the leader.
pub struct ControlApi {
    d: Host,
}

/// Metadata a forwarded call carries: the unix ms after which the leader must not
/// act on it. A call that sat in a dead connection (a manager cut off from the
/// others, then healed) is refused rather than applied after its sender gave up.
const DEADLINE_KEY: &str = "orc-deadline-ms";

/// How long a forwarded call stays valid.
const FORWARD_VALID_MS: u64 = 8_000;

/// Forwards a control call to the leader, with its deadline and, for a write, its
/// request id.
macro_rules! forward {
    ($method:ident, $request:expr) => {{
        let request: Option<RequestId> = $request;
        move |ch: Channel, r| {
            let request = request.clone();
            async move {
                let mut req = with_request_id(tonic::Request::new(r), request.as_ref());
                if let Ok(v) = (crate::units::now_ms() + FORWARD_VALID_MS)
                    .to_string()
                    .parse()
                {
                    req.metadata_mut().insert(DEADLINE_KEY, v);
                }
                proto::control_client::ControlClient::new(ch)
                    .max_decoding_message_size(MAX_MSG)
                    .$method(req)
                    .await
            }
        }
    }};
}

/// Refuses a forwarded call that arrives after its deadline.
fn check_deadline<T>(req: &Request<T>) -> Result<(), Status> {
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
        auth::require_role(&$self.d, &peer_of(&$req), Role::Manager)?;
        check_deadline(&$req)?;
        on_leader(
            &$self.d,
            $req.into_inner(),
            |$m: Arc<Manager>, $r: $t| async move { $body },
            forward!($method, None),
        )
        .await
    }};
}

/// A leader-only control write: as `leader_call!`, and it applies once however often
/// it is retried (see the module doc).
macro_rules! leader_write {
    ($self:ident, $req:ident, $method:ident, |$m:ident, $r:ident : $t:ty| $body:expr) => {{
        auth::require_role(&$self.d, &peer_of(&$req), Role::Manager)?;
        check_deadline(&$req)?;
        let request = request_id(&$req)?;
        write_on_leader(
            &$self.d,
            request.clone(),
            $req.into_inner(),
            |$m: Arc<Manager>, $r: $t| async move { $body },
            forward!($method, Some(request)),
        )
        .await
    }};
}

#[tonic::async_trait]
impl control_server::Control for ControlApi {
    async fn join_token(
        &self,
        req: Request<JoinTokenRequest>,
    ) -> Result<Response<JoinTokenResponse>, Status> {
        leader_write!(self, req, join_token, |m, r: JoinTokenRequest| {
            nodes::join_token(&m, &r.role, r.rotate).await
        })
    }

    async fn list_nodes(&self, req: Request<Empty>) -> Result<Response<ListNodesResponse>, Status> {
        leader_call!(self, req, list_nodes, |m, _r: Empty| Ok(nodes::list(&m)))
    }

    async fn inspect_node(&self, req: Request<NodeRef>) -> Result<Response<NodeInfo>, Status> {
        leader_call!(self, req, inspect_node, |m, r: NodeRef| nodes::inspect(
            &m, &r.node
        ))
    }

    async fn update_node(
        &self,
        req: Request<UpdateNodeRequest>,
    ) -> Result<Response<NodeInfo>, Status> {
        leader_write!(self, req, update_node, |m, r: UpdateNodeRequest| {
            nodes::update(&m, r).await
        })
    }

    async fn remove_node(
        &self,
        req: Request<RemoveNodeRequest>,
    ) -> Result<Response<Empty>, Status> {
        leader_write!(self, req, remove_node, |m, r: RemoveNodeRequest| {
            nodes::remove(&m, &r.node, r.force).await.map(|_| Empty {})
        })
    }

    // `update_cluster` and `unlock_key` write, yet are not `leader_write!`: their reply
    // is an unlock key, and a recorded reply lives in the replicated state in the clear.
    // A retry turns autolock on only once (then answers without the key: `orc
    // unlock-key` shows it) and a retried rotation answers the key in force.
    async fn update_cluster(
        &self,
        req: Request<UpdateClusterRequest>,
    ) -> Result<Response<UpdateClusterResponse>, Status> {
        leader_call!(self, req, update_cluster, |m, r: UpdateClusterRequest| {
            keys::update_cluster(&m, r).await
        })
    }

    async fn unlock_key(
        &self,
        req: Request<UnlockKeyRequest>,
    ) -> Result<Response<UnlockKeyResponse>, Status> {
        leader_call!(self, req, unlock_key, |m, r: UnlockKeyRequest| {
            keys::unlock_key(&m, r.rotate).await
        })
    }

    type ServiceLogsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<LogLine, Status>> + Send>>;

    async fn create_service(
        &self,
        req: Request<ServiceSpecRequest>,
    ) -> Result<Response<ServiceRef>, Status> {
        leader_write!(self, req, create_service, |m, r: ServiceSpecRequest| {
            services::create(&m, r.spec).await
        })
    }

    async fn update_service(
        &self,
        req: Request<ServiceSpecRequest>,
    ) -> Result<Response<ServiceRef>, Status> {
        leader_write!(self, req, update_service, |m, r: ServiceSpecRequest| {
            services::update(&m, &r.service, r.spec).await
        })
    }

    async fn scale_service(
        &self,
        req: Request<ScaleRequest>,
    ) -> Result<Response<ServiceRef>, Status> {
        leader_write!(self, req, scale_service, |m, r: ScaleRequest| {
            services::scale(&m, &r.service, r.replicas).await
        })
    }

    async fn rollback_service(
        &self,
        req: Request<ServiceRef>,
    ) -> Result<Response<ServiceRef>, Status> {
        leader_write!(self, req, rollback_service, |m, r: ServiceRef| {
            services::rollback(&m, &r.service).await
        })
    }

    async fn remove_service(&self, req: Request<ServiceRef>) -> Result<Response<Empty>, Status> {
        leader_write!(self, req, remove_service, |m, r: ServiceRef| {
            services::remove(&m, &r.service).await.map(|_| Empty {})
        })
    }

    async fn list_services(
        &self,
        req: Request<Empty>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        leader_call!(self, req, list_services, |m, _r: Empty| services::list(&m))
    }

    async fn inspect_service(
        &self,
        req: Request<ServiceRef>,
    ) -> Result<Response<ServiceInspect>, Status> {
        leader_call!(self, req, inspect_service, |m, r: ServiceRef| {
            services::inspect(&m, &r.service)
        })
    }

    async fn service_tasks(
        &self,
        req: Request<ServiceRef>,
    ) -> Result<Response<ServiceTasksResponse>, Status> {
        leader_call!(self, req, service_tasks, |m, r: ServiceRef| {
            services::tasks(&m, &r.service)
        })
    }

    async fn service_logs(
        &self,
        req: Request<LogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        // Any manager can gather logs: no need to go through the leader.
        auth::require_role(&self.d, &peer_of(&req), Role::Manager)?;
        Ok(Response::new(
            logs::service_logs(&self.d, req.into_inner()).await?,
        ))
    }

    async fn deploy_stack(
        &self,
        req: Request<StackRequest>,
    ) -> Result<Response<StackPlan>, Status> {
        leader_write!(self, req, deploy_stack, |m, r: StackRequest| {
            stacks::deploy(&m, r).await
        })
    }

    async fn remove_stack(
        &self,
        req: Request<StackRequest>,
    ) -> Result<Response<StackPlan>, Status> {
        leader_write!(self, req, remove_stack, |m, r: StackRequest| {
            stacks::remove(&m, &r.name).await
        })
    }

    async fn ca_status(&self, req: Request<Empty>) -> Result<Response<CaStatusResponse>, Status> {
        leader_call!(self, req, ca_status, |m, _r: Empty| nodes::ca_status(&m))
    }

    async fn rotate_ca(
        &self,
        req: Request<RotateCaRequest>,
    ) -> Result<Response<CaStatusResponse>, Status> {
        leader_write!(self, req, rotate_ca, |m, r: RotateCaRequest| {
            nodes::ca_rotate(&m, r.cert_validity_secs).await
        })
    }

    async fn barrier(&self, req: Request<Empty>) -> Result<Response<BarrierResponse>, Status> {
        leader_call!(self, req, barrier, |m, _r: Empty| {
            m.propose(crate::store::Command::Noop).await?;
            let index = *m.sm.subscribe().borrow();
            Ok(BarrierResponse { index })
        })
    }
}

/// `Ca`: join and renewal.
pub struct CaApi {
    d: Host,
}

#[tonic::async_trait]
impl ca_server::Ca for CaApi {
    async fn join(&self, req: Request<CaJoinRequest>) -> Result<Response<CaJoinResponse>, Status> {
        // No certificate needed: the secret is the credential (the gate limits tries per
        // address). The address the node will be dialled at must be the one it calls
        // from, as this manager sees it, or as a forwarding manager saw it. A request id
        // counts only when a manager of this cluster forwarded the join.
        let peer = peer_of(&req);
        let seen = seen_ip(&self.d, &peer, &req.get_ref().forwarded_for)?;
        let forwarded = peer.identity().is_some_and(|id| id.role == Role::Manager)
            && is_manager(&self.d, &peer);
        let request = if forwarded {
            request_id(&req)?
        } else {
            RequestId::random()
        };
        let mut r = req.into_inner();
        crate::dispatcher::check_join_report(&r.advertise_addr, seen, &r.hostname).inspect_err(
            |e| {
                tracing::warn!(peer = ?peer.remote, "join refused: {e}");
            },
        )?;
        r.forwarded_for = seen.map(|ip| ip.to_string()).unwrap_or_default();
        let to_leader = request.clone();
        let r = write_on_leader(
            &self.d,
            request,
            r,
            |m, r| async move { nodes::ca_join(&m, r).await },
            move |ch: Channel, r| {
                let req = with_request_id(Request::new(r), Some(&to_leader));
                async move { proto::ca_client::CaClient::new(ch).join(req).await }
            },
        )
        .await;
        match &r {
            Ok(resp) => tracing::info!(
                peer = ?peer.remote,
                node = %resp.get_ref().node_id,
                role = %resp.get_ref().role,
                "certificate issued (join)"
            ),
            Err(s) => tracing::warn!(peer = ?peer.remote, "join refused: {}", s.message()),
        }
        let mut resp = r?;
        // A new manager's keys are added to the reply here, after the write: the reply
        // recorded in the replicated state for retries must never hold the data key.
        let reply = resp.get_mut();
        if reply.role == Role::Manager.as_str() && reply.manager_keys.is_none() {
            reply.manager_keys = self.d.manager()?.manager_keys(Role::Manager)?;
        }
        Ok(resp)
    }

    async fn renew(&self, req: Request<RenewRequest>) -> Result<Response<RenewResponse>, Status> {
        let peer = peer_of(&req);
        let caller = auth::admit(&self.d, &peer, auth::Access::Node)?.ok_or_else(|| {
            Error::PermissionDenied("renewal needs the node's certificate".into())
        })?;
        // A certificate is issued for the node that proves its id: the caller's own, or
        // the id a manager vouches for when it forwards a renewal it received (it
        // checked that caller's certificate the same way). Nobody else may name a node.
        let named = match req.metadata().get(ON_BEHALF_OF) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| Error::InvalidInput("orc-on-behalf-of: not text".into()))?
                    .parse::<NodeId>()?,
            ),
        };
        let node = match named {
            None => caller.node_id,
            Some(n) if n == caller.node_id => n,
            Some(n) => {
                if !is_manager(&self.d, &peer) {
                    return Err(Error::PermissionDenied(format!(
                        "node {} may not renew a certificate for node {n}",
                        caller.node_id
                    ))
                    .into());
                }
                n
            }
        };
        tracing::info!(peer = ?peer.remote, node = %node, "certificate renewal requested");
        let csr = req.into_inner().csr_pem;
        on_leader(
            &self.d,
            csr,
            move |m, csr: String| async move { nodes::ca_renew(&m, node, &csr) },
            move |ch: Channel, csr: String| async move {
                proto::ca_client::CaClient::new(ch)
                    .renew(renew_on_behalf(node, csr))
                    .await
            },
        )
        .await
    }
}

/// The metadata key of a forwarded renewal: the node the certificate is for.
const ON_BEHALF_OF: &str = "orc-on-behalf-of";

/// The IP a node calls from: what a forwarding manager saw (`forwarded_for`, believed
/// only from a current manager), else this end of the connection; `None` on the local
/// socket.
fn seen_ip(
    d: &Host,
    peer: &crate::net::PeerInfo,
    forwarded_for: &str,
) -> Result<Option<std::net::IpAddr>> {
    if peer.local {
        return Ok(None);
    }
    if !forwarded_for.is_empty()
        && peer.identity().is_some()
        && auth::admit(d, peer, auth::Access::Manager).is_ok()
    {
        let ip = forwarded_for.parse::<std::net::IpAddr>().map_err(|_| {
            Error::InvalidInput(format!(
                "forwarded_for {forwarded_for:?}: not an IP address"
            ))
        })?;
        return Ok(Some(ip.to_canonical()));
    }
    Ok(peer.remote.map(|a| a.ip().to_canonical()))
}

/// True when the caller is a current manager (or the local socket): it may speak for
/// other nodes when it forwards their calls.
fn is_manager(d: &Host, peer: &crate::net::PeerInfo) -> bool {
    auth::admit(d, peer, auth::Access::Manager).is_ok()
}

/// A renewal forwarded by a follower names the node in request metadata.
fn renew_on_behalf(node: NodeId, csr_pem: String) -> Request<RenewRequest> {
    let mut r = Request::new(RenewRequest { csr_pem });
    if let Ok(v) = node.to_string().parse() {
        r.metadata_mut().insert(ON_BEHALF_OF, v);
    }
    r
}

/// `Dispatcher`: heartbeats.
pub struct DispatcherApi {
    d: Host,
}

/// A worker's status batch; an update that does not convert refuses the batch.
fn decode_statuses(updates: Vec<proto::TaskStatusUpdate>) -> Result<Vec<(TaskId, TaskStatus)>> {
    updates.into_iter().map(TryInto::try_into).collect()
}

/// What the leader proposes of `node`'s decoded status batch. A node reports only its
/// own tasks: one of another node refuses the batch. Updates of tasks the store does
/// not hold are dropped (the store would ignore them, but only after they had gone
/// through Raft to every manager), of a task's updates only the one the store would
/// end with is kept (the last of those with the highest state), and each
/// status is cut to its limits ([`TaskStatus::cut_to_limits`]): what one batch
/// proposes is bounded by the node's tasks, not by what it sends.
fn admit_statuses(
    state: &crate::store::State,
    node: NodeId,
    updates: Vec<(TaskId, TaskStatus)>,
) -> Result<Vec<(TaskId, TaskStatus)>> {
    use std::collections::btree_map::{BTreeMap, Entry};
    let mut admitted = BTreeMap::new();
    for (id, mut status) in updates {
        let Some(task) = state.tasks.get(&id) else {
            continue;
        };
        if task.node_id != Some(node) {
            return Err(Error::PermissionDenied(format!(
                "node {node} reported task {id}, which is not its own"
            )));
        }
        status.cut_to_limits();
        // The one the store would end with: states only move forward.
        match admitted.entry(id) {
            Entry::Vacant(e) => {
                e.insert(status);
            }
            Entry::Occupied(mut e) if e.get().state <= status.state => {
                e.insert(status);
            }
            Entry::Occupied(_) => {}
        }
    }
    Ok(admitted.into_iter().collect())
}

#[cfg(test)]
mod fuzz;

#[tonic::async_trait]
impl dispatcher_server::Dispatcher for DispatcherApi {
    type SessionStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<SessionMessage, Status>> + Send>>;

    async fn session(
        &self,
        req: Request<SessionRequest>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let peer = peer_of(&req);
        auth::require_role(&self.d, &peer, Role::Worker)?;
        let node: NodeId = req.into_inner().node_id.parse()?;
        if let Some(c) = peer.identity() {
            if c.node_id != node {
                return Err(Error::PermissionDenied(format!(
                    "node {} cannot open a session for node {node}",
                    c.node_id
                ))
                .into());
            }
        }
        let m = self.d.manager()?;
        let Some((leading, _)) = m.leading() else {
            return Err(Error::NotLeader(
                "not the leader: open the session with the leader".into(),
            )
            .into());
        };
        if !m.read(|s| s.nodes.contains_key(&node)) {
            return Err(Error::PermissionDenied(format!(
                "node {node} has been removed from the cluster"
            ))
            .into());
        }
        let rx = crate::dispatcher::session::stream(m, node, leading);
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn update_task_status(
        &self,
        req: Request<TaskStatusBatch>,
    ) -> Result<Response<Empty>, Status> {
        let peer = peer_of(&req);
        auth::require_role(&self.d, &peer, Role::Worker)?;
        let batch = req.into_inner();
        let node: NodeId = batch.node_id.parse()?;
        if let Some(c) = peer.identity() {
            if c.node_id != node && !is_manager(&self.d, &peer) {
                return Err(Error::PermissionDenied(format!(
                    "node {} cannot report for node {node}",
                    c.node_id
                ))
                .into());
            }
        }
        on_leader(
            &self.d,
            batch,
            move |m, b: TaskStatusBatch| async move {
                let updates = decode_statuses(b.updates)?;
                let updates = m.read(|s| admit_statuses(s, node, updates))?;
                if updates.is_empty() {
                    return Ok(Empty {});
                }
                let Some((_, batcher)) = m.leading() else {
                    return Err(Error::Unavailable("leadership changed: retry".into()));
                };
                batcher.submit(updates).await?;
                Ok(Empty {})
            },
            |ch: Channel, b| async move {
                proto::dispatcher_client::DispatcherClient::new(ch)
                    .update_task_status(b)
                    .await
            },
        )
        .await
    }

    async fn check_image_grant(
        &self,
        req: Request<ImageGrantRequest>,
    ) -> Result<Response<ImageGrant>, Status> {
        images::check_image_grant(&self.d, req).await
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let peer = peer_of(&req);
        let caller = auth::admit(&self.d, &peer, auth::Access::Node)?;
        let seen = seen_ip(&self.d, &peer, &req.get_ref().forwarded_for)?;
        let mut r = req.into_inner();
        let claimed: NodeId = r.node_id.parse()?;
        // A node speaks for itself only; a manager may forward for others.
        if let Some(c) = &caller {
            if c.node_id != claimed && !is_manager(&self.d, &peer) {
                return Err(Error::PermissionDenied(format!(
                    "node {} cannot send heartbeats for node {claimed}",
                    c.node_id
                ))
                .into());
            }
        }
        let description: crate::store::NodeDescription =
            r.description.clone().unwrap_or_default().into();
        crate::dispatcher::check_report(&r.addr, seen, &description)?;
        r.forwarded_for = seen.map(|ip| ip.to_string()).unwrap_or_default();
        on_leader(
            &self.d,
            r,
            move |m, r: HeartbeatRequest| async move {
                crate::dispatcher::heartbeat(
                    &m,
                    claimed,
                    r.description.unwrap_or_default().into(),
                    r.addr,
                    r.facts,
                    &r.cert_issuer_digest,
                )
                .await
            },
            |ch: Channel, r| async move {
                proto::dispatcher_client::DispatcherClient::new(ch)
                    .heartbeat(r)
                    .await
            },
        )
        .await
    }
}
