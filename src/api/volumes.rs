//! Following volumes between nodes ([`crate::agent::volumes`]): `NodeApi.VolumeSave`
//! streams a volume of this node to the node that takes over its slot, and
//! `Dispatcher.CheckVolumeGrant` is how the serving node asks the managers whether it
//! may.
//!
//! | RPC | who may call | what it may name | size |
//! |---|---|---|---|
//! | `NodeApi.VolumeSave` | a member whose task of that slot is to start there, with the data here ([`crate::agent::volumes::grant`], decided by the leader) | a Docker volume name ([`check_name`]) that the task's spec names as following | 64 KiB request; chunks of at most 256 KiB of tar |
//! | `Dispatcher.CheckVolumeGrant` | a member; the holder is the caller's certificate (a manager forwarding says it in `holder_id`) | the same | 64 KiB |
//!
//! The caller is named by its verified certificate, never by the request. The serving
//! node then refuses while a running container of its own uses the volume.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::auth;
use crate::agent::volumes::check_name;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::net::peer_of;
use crate::proto::{
    dispatcher_client::DispatcherClient, VolumeChunk, VolumeGrant, VolumeGrantRequest,
    VolumeRequest,
};
use crate::store::{NodeId, Role, ServiceId};

/// A stream of volume chunks.
pub type VolumeChunkStream = Pin<Box<dyn Stream<Item = Result<VolumeChunk, Status>> + Send>>;

/// The longest service id accepted.
const MAX_ID: usize = 128;

/// Serves `NodeApi.VolumeSave`.
pub async fn volume_save(
    d: &Host,
    runner: &crate::agent::RunnerSlot,
    req: Request<VolumeRequest>,
) -> Result<Response<VolumeChunkStream>, Status> {
    let peer = peer_of(&req);
    auth::require_role(d, &peer, Role::Worker)?;
    let Some(caller) = peer.identity() else {
        return Err(Error::PermissionDenied(
            "VolumeSave: the caller's node certificate is required".into(),
        )
        .into());
    };
    let r = req.into_inner();
    check_name(&r.volume)?;
    if r.service_id.is_empty() || r.service_id.len() > MAX_ID || r.fingerprint.len() > 64 {
        return Err(Error::InvalidInput("VolumeSave: malformed request".into()).into());
    }
    let me = d
        .member()
        .ok_or_else(|| Error::NotManager("this node is not part of a cluster".into()))?
        .node_id;
    let grant = ask_grant(
        d,
        VolumeGrantRequest {
            node_id: caller.node_id.to_string(),
            service_id: r.service_id.clone(),
            slot: r.slot,
            volume: r.volume.clone(),
            holder_id: me.to_string(),
        },
    )
    .await?;
    if !grant.allowed {
        tracing::warn!(peer = %caller.node_id, volume = r.volume, "refused to send a volume: {}", grant.reason);
        return Err(
            Error::PermissionDenied(format!("volume {}: {}", r.volume, grant.reason)).into(),
        );
    }
    let Some(runner) = runner.get() else {
        return Err(Error::NotFound(format!(
            "volume {}: this node has no container engine",
            r.volume
        ))
        .into());
    };
    if runner.volume_in_use(&r.volume).await? {
        return Err(Error::Unavailable(format!(
            "volume {}: a container on this node still uses it",
            r.volume
        ))
        .into());
    }
    let Some(dir) = runner.volume_dir(&r.volume).await? else {
        return Err(Error::NotFound(format!("volume {}: not on this node", r.volume)).into());
    };
    let expect = (r.offset > 0).then_some(r.fingerprint.clone());
    tracing::info!(volume = r.volume, offset = r.offset, peer = %caller.node_id, "sending a volume to another node");
    let s = crate::agent::volumes::serve(dir, r.offset, expect).await?;
    let s: VolumeChunkStream = Box::pin(s.map(|c| c.map_err(Status::from)));
    Ok(Response::new(s))
}

/// Asks the managers whether the request's node may have the volume.
async fn ask_grant(d: &Host, req: VolumeGrantRequest) -> Result<VolumeGrant> {
    let what = format!(
        "volume {}: whether node {} may have it",
        req.volume, req.node_id
    );
    super::route::ask_managers(d, &what, |ch| {
        let req = req.clone();
        async move { DispatcherClient::new(ch).check_volume_grant(req).await }
    })
    .await
}

/// The node a grant question is about: the caller itself, named by its certificate,
/// whatever the request claims; only a manager (forwarding for a node) or the local
/// socket may name another.
fn holder_of(manager: bool, caller: Option<NodeId>, claimed: &str) -> Result<NodeId> {
    if manager {
        return claimed.parse();
    }
    caller.ok_or_else(|| Error::PermissionDenied("a node certificate is required".into()))
}

/// Serves `Dispatcher.CheckVolumeGrant`: any member may ask about a volume it holds;
/// the leader answers from the store ([`crate::agent::volumes::grant`]).
pub async fn check_volume_grant(
    d: &Host,
    req: Request<VolumeGrantRequest>,
) -> Result<Response<VolumeGrant>, Status> {
    let peer = peer_of(&req);
    let manager = peer.local || auth::require_role(d, &peer, Role::Manager).is_ok();
    let caller = auth::admit(d, &peer, auth::Access::Node)?;
    let mut r = req.into_inner();
    check_name(&r.volume)?;
    if r.service_id.is_empty() || r.service_id.len() > MAX_ID {
        return Err(Error::InvalidInput("CheckVolumeGrant: malformed request".into()).into());
    }
    let requester: NodeId = r.node_id.parse()?;
    let holder = holder_of(manager, caller.map(|c| c.node_id), &r.holder_id)?;
    r.holder_id = holder.to_string();
    super::route::on_leader(
        d,
        r,
        move |m, r: VolumeGrantRequest| async move {
            let decision = m.read(|s| {
                crate::agent::volumes::grant(
                    s,
                    requester,
                    holder,
                    &ServiceId(r.service_id.clone()),
                    r.slot,
                    &r.volume,
                )
            });
            Ok(match decision {
                Ok(()) => VolumeGrant {
                    allowed: true,
                    reason: String::new(),
                },
                Err(reason) => VolumeGrant {
                    allowed: false,
                    reason,
                },
            })
        },
        |ch, r| async move { DispatcherClient::new(ch).check_volume_grant(r).await },
    )
    .await
}

/// How long a node has to list its volumes before it is named as unreachable.
const NODE_ANSWER: std::time::Duration = std::time::Duration::from_secs(5);

/// `volume ls`: every ready node's volumes (asked of each at once), with the tasks that
/// use them and what following volumes they hold; the nodes that did not answer.
pub async fn list_volumes(d: &Host) -> Result<crate::proto::ListVolumesResponse> {
    let m = d.manager()?;
    let nodes: Vec<(NodeId, String, String, bool)> = m.read(|s| {
        s.nodes
            .values()
            .map(|n| {
                (
                    n.id,
                    n.description.hostname.clone(),
                    n.addr.clone(),
                    n.status == crate::store::NodeStatus::Ready,
                )
            })
            .collect()
    });
    let asks = nodes.iter().filter(|n| n.3).map(|(id, host, addr, _)| {
        let d = d.clone();
        let (id, host, addr) = (*id, host.clone(), addr.clone());
        async move {
            let r = async {
                let ch = d.peers().node_channel(&addr)?;
                let mut c = crate::proto::node_api_client::NodeApiClient::new(ch);
                let r = tokio::time::timeout(NODE_ANSWER, c.volumes(crate::proto::Empty {}))
                    .await
                    .map_err(|_| Error::Unavailable(format!("{addr}: no answer")))?
                    .map_err(Error::from)?;
                Ok::<_, Error>(r.into_inner())
            }
            .await;
            (id, host, r)
        }
    });
    let answers = futures::future::join_all(asks).await;
    let mut out = crate::proto::ListVolumesResponse::default();
    for (_, host, _, ready) in &nodes {
        if !ready {
            out.unreachable.push(format!("{host} (down)"));
        }
    }
    // The answers joined with the state as it is now (one read, no copy).
    m.read(|state| {
        for (id, host, r) in answers {
            match r {
                Err(e) => out.unreachable.push(format!("{host} ({e})")),
                Ok(vols) => {
                    for v in vols.volumes {
                        let tasks = v
                            .task_ids
                            .iter()
                            .filter_map(|t| state.tasks.get(&crate::store::TaskId(t.clone())))
                            .map(|t| format!("{}.{}", t.service_name, t.slot))
                            .collect();
                        out.volumes.push(crate::proto::VolumeRow {
                            node_id: id.to_string(),
                            node: host.clone(),
                            follows: follows(state, id, &v.name),
                            name: v.name,
                            driver: v.driver,
                            bytes: v.bytes,
                            size_known: v.size_known,
                            tasks,
                        });
                    }
                }
            }
        }
    });
    out.volumes
        .sort_by(|a, b| (&a.node, &a.name).cmp(&(&b.node, &b.name)));
    Ok(out)
}

/// What volume `name` of node `node` holds of a following volume: `data of SVC.SLOT`,
/// `copy of SVC.SLOT (moving here)` (its task runs here, the monitor period is not
/// over), `old copy of SVC.SLOT`, or nothing.
fn follows(s: &crate::store::State, node: NodeId, name: &str) -> String {
    for h in s.volume_homes.values() {
        let Some(svc) = s.services.get(&h.service_id) else {
            continue;
        };
        if !crate::store::volume::following(&svc.spec.task.container.mounts)
            .any(|m| m.source == name)
        {
            continue;
        }
        let slot = format!("{}.{}", svc.spec.name, h.slot);
        if h.node == node {
            return format!("data of {slot}");
        }
        if h.stale.contains(&node) {
            return format!("old copy of {slot}");
        }
        // The slot's task runs here on a copy, not yet recorded as the data's home.
        let moving = s.tasks.values().any(|t| {
            t.service_id == h.service_id
                && t.slot == h.slot
                && t.node_id == Some(node)
                && t.desired_state <= crate::store::TaskState::Running
                && t.status.state >= crate::store::TaskState::Starting
        });
        if moving {
            return format!("copy of {slot} (moving here)");
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_asks_only_about_volumes_it_holds_and_a_manager_speaks_for_one() {
        let (worker, holder) = (NodeId(5), NodeId(7));
        // A worker that claims to be the holder is taken for itself.
        assert_eq!(
            holder_of(false, Some(worker), &holder.to_string()).unwrap(),
            worker
        );
        // Control: a manager forwarding the holder's question names it.
        assert_eq!(holder_of(true, None, &holder.to_string()).unwrap(), holder);
        // Without a certificate, nothing.
        assert!(matches!(
            holder_of(false, None, &holder.to_string()),
            Err(Error::PermissionDenied(_))
        ));
        assert!(holder_of(true, None, "not an id").is_err());
    }
}
