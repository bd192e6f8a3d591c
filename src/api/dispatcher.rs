//! `Dispatcher`: what every node of the cluster calls on a manager: the session that
//! streams a worker's assignments ([`crate::dispatcher::session`], leader only),
//! heartbeats, task status batches, and image grants ([`super::images`]). A node speaks
//! for itself only; a manager may forward for others. Heartbeats and status batches
//! run on the leader (`super::route::on_leader`); a status batch is decoded and
//! bounded here before anything is proposed (`admit_statuses`).

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::auth::{self, is_manager, seen_ip};
use super::images;
use super::route::on_leader;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::net::peer_of;
use crate::proto::{self, *};
use crate::store::{NodeId, Role, TaskId, TaskStatus};

/// `Dispatcher`: heartbeats.
pub struct DispatcherApi {
    /// The node.
    pub(super) d: Host,
    /// What its sessions read of the state, made once an applied index for all.
    pub(super) views: std::sync::Arc<crate::dispatcher::session::Views>,
}

/// A worker's status batch; an update that does not convert refuses the batch.
fn decode_statuses(updates: Vec<proto::TaskStatusUpdate>) -> Result<Vec<(TaskId, TaskStatus)>> {
    updates.into_iter().map(TryInto::try_into).collect()
}

/// What the leader proposes of `node`'s decoded status batch. A node reports only its
/// own tasks: one of another node refuses the batch. Updates of tasks the store does
/// not hold are dropped (the store would ignore them, but only after they had gone
/// through Raft to every manager), of a task's updates only the one the store would
/// end with is kept (the last of those with the highest state) and only if the store
/// would change (neither the status it holds nor an earlier state), and each
/// status is cut to its limits ([`TaskStatus::cut_to_limits`]): what one batch
/// proposes is bounded by the node's tasks, not by what it sends.
fn admit_statuses(
    state: &crate::store::State,
    node: NodeId,
    updates: Vec<(TaskId, TaskStatus)>,
) -> Result<Vec<(TaskId, TaskStatus)>> {
    use std::collections::btree_map::{BTreeMap, Entry};
    // Each update's task is looked up once (a lookup in 100,000 tasks was a tenth of a
    // busy leader's time): whether the store would change is judged against the
    // status it holds, which does not change while the state is read.
    let mut admitted: BTreeMap<TaskId, (TaskStatus, &TaskStatus)> = BTreeMap::new();
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
                e.insert((status, &task.status));
            }
            Entry::Occupied(mut e) if e.get().0.state <= status.state => {
                e.get_mut().0 = status;
            }
            Entry::Occupied(_) => {}
        }
    }
    // What the store would not change is not proposed: an agent sends a batch again
    // when the answer is late, and a leader already too busy to answer wrote each
    // copy as one more entry for every session to look at.
    Ok(admitted
        .into_iter()
        .filter(|(_, (st, held))| st.state >= held.state && st != *held)
        .map(|(id, (st, _))| (id, st))
        .collect())
}

pub mod framing;
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
        let r = req.into_inner();
        let node: NodeId = r.node_id.parse()?;
        let held = crate::dispatcher::session::Held::of(&r);
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
        let rx = crate::dispatcher::session::stream(m, self.views.clone(), node, held, leading);
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
                    return Err(Error::NotLeader("leadership changed: retry".into()));
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

    async fn check_volume_grant(
        &self,
        req: Request<crate::proto::VolumeGrantRequest>,
    ) -> Result<Response<crate::proto::VolumeGrant>, Status> {
        super::volumes::check_volume_grant(&self.d, req).await
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
        beat(&self.d, &peer, req.into_inner())
            .await
            .map(Response::new)
    }

    type BeatsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<HeartbeatResponse, Status>> + Send>>;

    async fn beats(
        &self,
        req: Request<tonic::Streaming<HeartbeatRequest>>,
    ) -> Result<Response<Self::BeatsStream>, Status> {
        let peer = peer_of(&req);
        auth::admit(&self.d, &peer, auth::Access::Node)?;
        // One beat at a time: read, answered, and the next read only while at most one
        // answer waits to be sent (HTTP/2 flow control holds the sender meanwhile); the
        // stream ends after the first beat refused. Beats are read by a task of their
        // own, not as the answers are sent: HTTP/2 sends nothing more on a connection
        // whose window the node's session has filled, and a beat read only then was a
        // node marked down under load (a call of its own runs at once, and only its
        // answer waits).
        let (d, mut beats) = (self.d.clone(), req.into_inner());
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                // A beat whose node gave up on it (the answers dropped with its stream)
                // is given up here too, as a call's is: a write it waits for would
                // otherwise outlive it, one more for each beat sent again.
                let next = async {
                    match beats.message().await {
                        Ok(None) => None,
                        Ok(Some(r)) => Some(beat(&d, &peer, r).await),
                        Err(s) => Some(Err(s)),
                    }
                };
                let answer = tokio::select! {
                    a = next => match a {
                        Some(a) => a,
                        None => return,
                    },
                    _ = tx.closed() => return,
                };
                let refused = answer.is_err();
                if tx.send(answer).await.is_err() || refused {
                    return;
                }
            }
        });
        let answers = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(answers)))
    }
}

/// One heartbeat from `peer`, by a call of its own or on its stream: the caller is
/// checked (again, on a stream: it may have been removed since), then what it names
/// and reports, then the beat runs on the leader (forwarded from a follower).
async fn beat(
    d: &Host,
    peer: &crate::net::PeerInfo,
    mut r: HeartbeatRequest,
) -> Result<HeartbeatResponse, Status> {
    let caller = auth::admit(d, peer, auth::Access::Node)?;
    let seen = seen_ip(d, peer, &r.forwarded_for)?;
    let claimed: NodeId = r.node_id.parse()?;
    // A node speaks for itself only; a manager may forward for others.
    if let Some(c) = &caller {
        if c.node_id != claimed && !is_manager(d, peer) {
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
        d,
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
    .map(Response::into_inner)
}
