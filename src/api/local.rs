//! `Local`: the calls of the local unix socket only (init, join, leave, routes, unlock,
//! info). Each checks that it came over the socket ([`auth::require_local`]), then
//! hands over to the node ([`Host`]). A locked manager answers every call but `Info`
//! and `Unlock` with [`crate::daemon::keys::LOCKED`].

use tonic::{Request, Response, Status};

use super::auth;
use crate::host::{Host, InitParams};
use crate::net::peer_of;
use crate::proto::{self, *};
use crate::store::NodeId;

/// `Local`: init, join, leave, info.
pub struct LocalApi {
    /// The node.
    pub(super) d: Host,
}

#[tonic::async_trait]
impl local_server::Local for LocalApi {
    async fn init(&self, req: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        auth::require_local(&peer_of(&req))?;
        let r = req.into_inner();
        if r.force_new_cluster {
            let others_given = !r.listen_addr.is_empty()
                || r.cert_validity_secs != 0
                || r.heartbeat_period_ms != 0
                || !r.vip_range.is_empty()
                || r.autolock;
            if others_given {
                return Err(crate::error::Error::InvalidInput(
                    "force_new_cluster: keeps the cluster's settings; give only advertise_addr"
                        .into(),
                )
                .into());
            }
            return Ok(Response::new(
                self.d.force_new_cluster(&r.advertise_addr).await?,
            ));
        }
        let p = InitParams {
            advertise_addr: r.advertise_addr,
            listen_addr: r.listen_addr,
            cert_validity_secs: r.cert_validity_secs,
            heartbeat_period_ms: r.heartbeat_period_ms,
            vip_range: r.vip_range,
            autolock: r.autolock,
            restore: (!r.restore_path.is_empty()).then(|| crate::host::RestoreFrom {
                path: r.restore_path.into(),
                unlock_key: r.restore_unlock_key,
            }),
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
            .map(|r| proto::Route {
                protocol: r.protocol.into(),
                address: r.address,
                port: r.port.into(),
                service: r.service,
                backends: r
                    .backends
                    .into_iter()
                    .map(|(address, active)| RouteBackend {
                        address,
                        active: active as u64,
                    })
                    .collect(),
                networks: r.networks,
            })
            .collect();
        Ok(Response::new(RoutesResponse { routes }))
    }

    type BackupStream = super::images::ChunkStream;

    /// `orc cluster backup`. Who: the local socket only (as every `Local` call; the
    /// cluster port does not serve `Local`). What: this manager's applied state after a
    /// write barrier through the leader, and the key that opens its sealed values (see
    /// [`crate::backup`]). Size: the file, at most [`crate::backup::MAX_BODY_BYTES`] of
    /// body, sent in chunks of [`BACKUP_CHUNK`].
    async fn backup(&self, req: Request<Empty>) -> Result<Response<Self::BackupStream>, Status> {
        auth::require_local(&peer_of(&req))?;
        self.d.refuse_if_locked()?;
        let bytes = backup_now(&self.d).await?;
        let chunks: Vec<Result<Chunk, Status>> = bytes
            .chunks(BACKUP_CHUNK)
            .map(|c| Ok(Chunk { data: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    /// `orc dashboard token`. Who: the local socket only (the token opens the dashboard
    /// of every manager). What: nothing to name. On a node that is not a manager now:
    /// the usual "not a manager" error.
    async fn dashboard_token(
        &self,
        req: Request<Empty>,
    ) -> Result<Response<DashboardTokenResponse>, Status> {
        auth::require_local(&peer_of(&req))?;
        self.d.refuse_if_locked()?;
        let token = self.d.manager()?.dashboard_token()?;
        let url = self
            .d
            .dashboard_addr()
            .map(|a| format!("http://{a}/?token={token}"))
            .unwrap_or_default();
        Ok(Response::new(DashboardTokenResponse { token, url }))
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

/// The largest chunk of a backup sent to the CLI.
pub const BACKUP_CHUNK: usize = 1024 * 1024;

/// Takes a backup on this manager: a write barrier through the leader (run here when
/// this manager leads, else `Control.Barrier` forwarded, as any leader call), then this
/// manager's state once it has applied the barrier, read at one index.
pub async fn backup_now(d: &Host) -> Result<Vec<u8>, Status> {
    let m = d.manager()?;
    let index = super::route::on_leader(
        d,
        Empty {},
        |m: std::sync::Arc<crate::manager::Manager>, _r: Empty| async move {
            m.propose(crate::store::Command::Noop).await?;
            let index = *m.sm.subscribe().borrow();
            Ok(BarrierResponse { index })
        },
        super::route::forward!(barrier, None),
    )
    .await?
    .into_inner()
    .index;
    let mut applied = m.sm.subscribe();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        applied.wait_for(|i| *i >= index),
    )
    .await
    .map_err(|_| {
        crate::error::Error::Unavailable(format!(
            "backup: this manager has not applied the leader's index {index} within 10 s"
        ))
    })?
    .map_err(|_| crate::error::Error::Unavailable("backup: the manager stopped".into()))?;
    let (state, at) = m.sm.read_at(|s, at| (s.clone(), at));
    let dk = m.data_key().clone();
    let bytes = tokio::task::spawn_blocking(move || {
        crate::backup::take(state, at, &dk, crate::units::now_ms())?.encode()
    })
    .await
    .map_err(crate::error::Error::internal)??;
    Ok(bytes)
}
