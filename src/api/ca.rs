//! `Ca`: joining the cluster and renewing a certificate, on the cluster port. `Join`
//! is the one call without a certificate (the join secret is the credential); it is a
//! write made once per request id (`super::route::write_on_leader`). A renewal is
//! issued for the node that proves its id, or the one a manager vouches for when it
//! forwards the renewal (`orc-on-behalf-of`).

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::auth::{self, is_manager, seen_ip};
use super::nodes;
use super::route::{on_leader, request_id, with_request_id, write_on_leader};
use crate::error::Error;
use crate::host::Host;
use crate::net::peer_of;
use crate::proto::{self, *};
use crate::store::{NodeId, RequestId, Role};

/// `Ca`: join and renewal.
pub struct CaApi {
    /// The node.
    pub(super) d: Host,
}

/// The longest reason a `join refuse` event carries (the reason may quote what the
/// caller sent).
const MAX_REASON: usize = 256;

impl CaApi {
    /// Publishes `body` on this node's event stream, if it is a manager.
    fn publish(&self, body: crate::store::events::EventBody) {
        if let Ok(m) = self.d.manager() {
            m.sm.events().publish([body]);
        }
    }
}

#[tonic::async_trait]
impl ca_server::Ca for CaApi {
    async fn join(&self, req: Request<CaJoinRequest>) -> Result<Response<CaJoinResponse>, Status> {
        // Events: `join refuse` (with the reason and the caller's address as this
        // manager's socket saw it, never what the caller claims) and `certificate issue`,
        // told by the manager the joining node called. A join a follower forwarded is the
        // follower's to tell, so the leader does not tell it again. Joins the gate
        // refuses for their rate are logged, not told: an anonymous caller could
        // otherwise flush the history.
        let peer = peer_of(&req);
        let forwarded = peer.identity().is_some_and(|id| id.role == Role::Manager)
            && is_manager(&self.d, &peer);
        let addr = peer
            .remote
            .map(|a| a.to_string())
            .unwrap_or_else(|| "local".into());
        let r = self.join_once(req).await;
        if !forwarded {
            use crate::store::events::EventBody;
            match &r {
                Ok(resp) => self.publish(
                    EventBody::new("certificate", "issue", resp.get_ref().node_id.clone(), "")
                        .attr("role", resp.get_ref().role.clone())
                        .attr("addr", addr)
                        .attr("reason", "join"),
                ),
                Err(s) => {
                    let reason: String = s.message().chars().take(MAX_REASON).collect();
                    self.publish(
                        EventBody::new("join", "refuse", "", "")
                            .attr("addr", addr)
                            .attr("reason", reason),
                    )
                }
            }
        }
        r
    }

    async fn renew(&self, req: Request<RenewRequest>) -> Result<Response<RenewResponse>, Status> {
        self.renew_once(req).await
    }
}

impl CaApi {
    async fn join_once(
        &self,
        req: Request<CaJoinRequest>,
    ) -> Result<Response<CaJoinResponse>, Status> {
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

    async fn renew_once(
        &self,
        req: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
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
        let r = on_leader(
            &self.d,
            csr,
            move |m, csr: String| async move { nodes::ca_renew(&m, node, &csr) },
            move |ch: Channel, csr: String| async move {
                proto::ca_client::CaClient::new(ch)
                    .renew(renew_on_behalf(node, csr))
                    .await
            },
        )
        .await;
        // Told by the manager the node called (a renewal forwarded by a follower is the
        // follower's to tell).
        if r.is_ok() && named.is_none_or(|n| n == caller.node_id) {
            self.publish(crate::store::events::EventBody::new(
                "certificate",
                "renew",
                node.to_string(),
                "",
            ));
        }
        r
    }
}

/// The metadata key of a forwarded renewal: the node the certificate is for.
const ON_BEHALF_OF: &str = "orc-on-behalf-of";

/// A renewal forwarded by a follower names the node in request metadata.
fn renew_on_behalf(node: NodeId, csr_pem: String) -> Request<RenewRequest> {
    let mut r = Request::new(RenewRequest { csr_pem });
    if let Ok(v) = node.to_string().parse() {
        r.metadata_mut().insert(ON_BEHALF_OF, v);
    }
    r
}
