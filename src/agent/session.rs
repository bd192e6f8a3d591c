//! The worker's task session: assignments in, statuses out.
//!
//! The agent keeps one `Session` stream open to the leader (the address comes from the
//! heartbeat answers). The first message is the node's whole set of assignments, the
//! next ones increments; both go to the [`TaskRunner`], which converges the node's
//! containers. When the leader changes, the stream ends (or the heartbeat names a new
//! leader) and the agent opens a new one; the first message of the new session is
//! again the whole set, so nothing is missed.
//!
//! Observed statuses from the runner are sent in batches to the managers. Only the
//! newest status of each task matters (states only move forward), so while a send is
//! retried, newer statuses simply replace older ones.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::runner::{Assignment, TaskRunner};
use crate::error::Result;
use crate::host::Host;
use crate::proto::{self, dispatcher_client::DispatcherClient};

/// The largest session message a worker reads (the leader is a manager, checked by its
/// certificate; the bound keeps even it from growing the worker's memory without end).
pub const MAX_SESSION_MESSAGE: usize = 64 * 1024 * 1024;
use crate::store::{NodeId, TaskId, TaskStatus};

/// What the session needs of its node.
pub struct Start {
    /// The node.
    pub host: Host,
    /// This node's id.
    pub node: NodeId,
    /// Runs tasks with this executor instead of the Docker engine (in-process tests).
    pub executor: Option<Arc<dyn super::executor::Executor>>,
    /// The Docker engine (`unix:///var/run/docker.sock`), `None` for the default.
    pub docker_host: Option<String>,
    /// Where the runner is kept while it runs.
    pub runner: super::RunnerSlot,
}

/// Starts the task runner and its session with the leader, once the Docker engine
/// answers (it is retried every 2 s until then).
pub fn spawn(start: Start, stop: CancellationToken) {
    let Start {
        host: d,
        node,
        executor,
        docker_host,
        runner: slot,
    } = start;
    tokio::spawn(async move {
        let exec: Arc<dyn super::executor::Executor> = loop {
            if let Some(e) = executor.clone() {
                break e;
            }
            match super::docker_exec::DockerExecutor::connect(docker_host.as_deref()).await {
                Ok(e) => break Arc::new(e),
                Err(e) => {
                    tracing::warn!("no Docker engine yet, tasks cannot run here: {e}");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {},
                    }
                }
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let runner = TaskRunner::new(node, exec, d.db().clone(), tx, stop.clone());
        if let Some(mesh) = d.mesh() {
            runner.set_clients(mesh.clients().clone());
        }
        if let Some(metrics) = d.metrics() {
            runner.set_metrics(metrics.agent.clone());
        }
        runner.set_image_fetcher(Arc::new(super::images::PeerFetcher {
            peers: d.peers().clone(),
        }));
        runner.set_volume_fetcher(Arc::new(super::volumes::PeerVolumeFetcher {
            peers: d.peers().clone(),
        }));
        slot.set(Some(runner.clone()));
        tokio::spawn(status_loop(d.clone(), node, rx, stop.clone()));
        session_loop(d.clone(), node, runner, stop).await;
        slot.set(None);
    });
}

fn target(d: &Host, attempt: usize) -> Option<String> {
    let hint = d.leader_hint();
    let managers = d.member().map(|m| m.managers).unwrap_or_default();
    if attempt.is_multiple_of(2) {
        if let Some(h) = hint {
            return Some(h);
        }
    }
    if managers.is_empty() {
        return None;
    }
    Some(managers[attempt % managers.len()].clone())
}

/// The assignments of a session message; one that does not convert is skipped (and
/// logged), the others kept in order.
fn decode(msg: &proto::SessionMessage) -> Vec<Assignment> {
    msg.assignments
        .iter()
        .filter_map(|a| match Assignment::try_from(a.clone()) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!("undecodable assignment: {e}");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod fuzz;

/// The id of the data path keys a node holds, when it holds one for each member of the
/// member table it holds (what a leader may then not send again).
fn keys_id(
    members: Option<&BTreeMap<NodeId, crate::store::Role>>,
    keys: Option<&[proto::DataPathKey]>,
) -> Option<u32> {
    let (members, keys) = (members?, keys?);
    let id = keys.first()?.id;
    let peers: std::collections::BTreeSet<u64> = keys.iter().map(|k| k.peer).collect();
    (keys.iter().all(|k| k.id == id) && members.keys().all(|m| peers.contains(&m.0))).then_some(id)
}

/// The least a node waits before it opens its session again.
pub const RETRY_MIN: Duration = Duration::from_millis(200);
/// The most a node waits before it opens its session again.
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// Tries in a row at [`RETRY_MIN`] before the waits grow: about as long as an election
/// takes, so that finding a new leader is not slowed.
pub const RETRY_STEADY: u32 = 5;

/// How long to wait before the next try to open a session after `failures` tries in a
/// row that got no message: [`RETRY_MIN`] for the first [`RETRY_STEADY`], then doubled
/// at each, up to [`RETRY_MAX`]; drawn between half and all of that, so that a thousand
/// nodes whose leader went away do not all knock at the same moment, five times a
/// second, on a new leader still busy with the first of them.
pub fn retry_wait(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(RETRY_STEADY).min(8);
    let full = RETRY_MIN.saturating_mul(1u32 << doublings).min(RETRY_MAX);
    let half = full / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// Whether `table` is the one whose digest the leader sent with it (`digest`, 16
/// bytes; any other length says nothing, and the table is taken as it is). A table the
/// node held, made current by what changed since the state it was of, is checked once.
fn is_leaders(table: &crate::mesh::Endpoints, digest: &[u8]) -> bool {
    crate::mesh::wire::Digest::from_bytes(digest)
        .is_none_or(|d| d == crate::mesh::wire::Digest::of(table))
}

async fn session_loop(d: Host, node: NodeId, runner: Arc<TaskRunner>, stop: CancellationToken) {
    let mut attempt = 0usize;
    let mut failures = 0u32;
    // The endpoint table, members and pair keys as the sessions have built them (whole,
    // then changes), kept from one session to the next with the digests the leader
    // sent with them: a leader that holds the same tables sends them not again.
    let mut table: Option<crate::mesh::Endpoints> = None;
    let mut held_members: Option<BTreeMap<NodeId, crate::store::Role>> = None;
    let mut held_keys: Option<Vec<proto::DataPathKey>> = None;
    let (mut endpoints_digest, mut members_digest) = (Vec::new(), Vec::new());
    // The applied index of the state the endpoint table is of, as the leader said.
    let mut endpoints_index = 0u64;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let Some(addr) = target(&d, attempt) else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let mut hint = d.watch_leader_hint();
        hint.borrow_and_update();
        let mut got = false;
        let r = async {
            let ch = d.peers().channel(&addr)?;
            let request = proto::SessionRequest {
                node_id: node.to_string(),
                endpoints_digest: table
                    .as_ref()
                    .map(|_| endpoints_digest.clone())
                    .unwrap_or_default(),
                members_digest: held_members
                    .as_ref()
                    .map(|_| members_digest.clone())
                    .unwrap_or_default(),
                keys_id: keys_id(held_members.as_ref(), held_keys.as_deref()).unwrap_or(0),
                endpoints_index: table.as_ref().map_or(0, |_| endpoints_index),
            };
            // Checked once: the first table of a session that started from one held (made
            // current by what changed since, or sent whole). One that fails is dropped,
            // and the next session, holding none, takes the whole table as it comes.
            let mut check = request.endpoints_index != 0;
            let mut stream = DispatcherClient::new(ch)
                // Assignments carry their tasks' secrets and configs (500 KB each at
                // most) until the containers exist; tonic's default (4 MB) is too small.
                .max_decoding_message_size(MAX_SESSION_MESSAGE)
                .session(request)
                .await?
                .into_inner();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    // The heartbeat names another leader: move there.
                    _ = hint.changed() => {
                        if d.leader_hint().as_deref() != Some(addr.as_str()) {
                            return Ok(());
                        }
                    }
                    m = stream.message() => match m? {
                        None => return Ok(()),
                        Some(msg) => {
                            got = true;
                            if let Some(members) = msg.members.clone() {
                                members_digest.clear();
                                match crate::proto::convert::command::members_in(held_members.take(), members) {
                                    Ok(Some(t)) => {
                                        d.set_members(t.clone());
                                        held_members = Some(t);
                                        members_digest = msg.members_digest.clone();
                                    }
                                    Ok(None) => {
                                        tracing::warn!("member changes before any member table: the session starts again");
                                        return Ok(());
                                    }
                                    Err(e) => tracing::warn!("undecodable member table: {e}"),
                                }
                            }
                            if let Some(keys) = msg.data_keys.clone() {
                                match receive_keys(held_keys.take(), keys) {
                                    Some(k) => {
                                        set_data_keys(&d, &k);
                                        held_keys = Some(k);
                                    }
                                    None => {
                                        tracing::warn!("data path key changes before any keys: the session starts again");
                                        return Ok(());
                                    }
                                }
                            }
                            if let Some(drops) = &msg.drop_volumes {
                                runner.drop_volumes(drops);
                            }
                            if let Some(endpoints) = &msg.endpoints {
                                endpoints_digest.clear();
                                match crate::mesh::wire::receive_bytes(table.take(), endpoints) {
                                    // The first table of a session may be the one held
                                    // made current by what changed since (a new
                                    // leader's): checked against the digest it must
                                    // have, once; a table that is not is given up and
                                    // asked for whole.
                                    Ok(Some(e)) if check && !is_leaders(&e, &msg.endpoints_digest) => {
                                        tracing::warn!("the endpoint table made current is not the leader's: asked for whole");
                                        return Ok(());
                                    }
                                    Ok(Some(e)) => {
                                        if let Some(mesh) = d.mesh() {
                                            mesh.apply_endpoints(&e, node).await;
                                        }
                                        table = Some(e);
                                        endpoints_digest = msg.endpoints_digest.clone();
                                        endpoints_index = msg.endpoints_index;
                                    }
                                    Ok(None) => {
                                        tracing::warn!("endpoint changes before any endpoint table: the session starts again");
                                        return Ok(());
                                    }
                                    Err(e) => tracing::warn!("undecodable endpoint table: {e}"),
                                }
                            }
                            let a = decode(&msg);
                            if msg.full {
                                runner.set_all(a).await;
                            } else {
                                let removed = msg.removed.iter().map(|r| TaskId(r.clone())).collect();
                                runner.update(a, removed).await;
                            }
                            check = false;
                        }
                    }
                }
            }
        }
        .await;
        let r: Result<()> = r;
        if let Err(e) = r {
            tracing::debug!(manager = %addr, "session: {e}");
            d.peers().forget(&addr);
            attempt = attempt.wrapping_add(1);
        }
        failures = if got { 0 } else { failures.saturating_add(1) };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(if got { RETRY_MIN } else { retry_wait(failures) }) => {},
        }
    }
}

async fn status_loop(
    d: Host,
    node: NodeId,
    mut rx: mpsc::UnboundedReceiver<(TaskId, TaskStatus)>,
    stop: CancellationToken,
) {
    let mut pending: BTreeMap<TaskId, TaskStatus> = BTreeMap::new();
    let mut attempt = 0usize;
    loop {
        if pending.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return,
                m = rx.recv() => match m {
                    Some((id, s)) => { pending.insert(id, s); }
                    None => return,
                },
            }
        }
        // Gather what comes in the next moment into the same batch.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
        while let Ok(Some((id, s))) = tokio::time::timeout_at(deadline, rx.recv()).await {
            pending.insert(id, s);
        }
        while let Ok((id, s)) = rx.try_recv() {
            pending.insert(id, s);
        }
        let Some(addr) = target(&d, attempt) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let updates: Vec<proto::TaskStatusUpdate> = pending
            .iter()
            .map(|(id, s)| (id.clone(), s.clone()).into())
            .collect();
        let sent: Vec<(TaskId, TaskStatus)> = pending
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let r = async {
            let ch = d.peers().channel(&addr)?;
            let mut client = DispatcherClient::new(ch);
            let call = client.update_task_status(proto::TaskStatusBatch {
                node_id: node.to_string(),
                updates,
            });
            match tokio::time::timeout(Duration::from_secs(5), call).await {
                Err(_) => Err(crate::Error::Unavailable("status update timed out".into())),
                Ok(r) => r.map(|_| ()).map_err(crate::Error::from),
            }
        }
        .await;
        match r {
            Ok(()) => {
                // Keep only what changed while the batch was in flight.
                for (id, s) in sent {
                    if pending.get(&id) == Some(&s) {
                        pending.remove(&id);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(manager = %addr, "status update: {e}");
                d.peers().forget(&addr);
                attempt = attempt.wrapping_add(1);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {},
                }
            }
        }
    }
}

/// The data path's keys from a session message, applied to those held: every key
/// replaces them, changes ([`proto::DataPathKeys::partial`]) go onto them (the pairs
/// of the peers gone leave, the new ones' come). `None` when changes come with no
/// keys held (the leader sends every key first in every session).
fn receive_keys(
    held: Option<Vec<proto::DataPathKey>>,
    m: proto::DataPathKeys,
) -> Option<Vec<proto::DataPathKey>> {
    if !m.partial {
        return Some(m.keys);
    }
    let mut held = held?;
    let gone: std::collections::BTreeSet<u64> = m.removed.iter().copied().collect();
    let fresh: std::collections::BTreeSet<(u32, u64)> =
        m.keys.iter().map(|k| (k.id, k.peer)).collect();
    held.retain(|k| !gone.contains(&k.peer) && !fresh.contains(&(k.id, k.peer)));
    held.extend(m.keys);
    Some(held)
}

/// Hands the managers' data-path keys to this node's data path (a key that is not 32
/// bytes is dropped).
fn set_data_keys(d: &Host, keys: &[proto::DataPathKey]) {
    let Some(dp) = d.mesh().and_then(|m| m.data_path()) else {
        return;
    };
    let keys: Vec<crate::mesh::tunnel::DataKey> = keys
        .iter()
        .filter_map(|k| {
            let key: [u8; 32] = k.key.as_slice().try_into().ok()?;
            Some(crate::mesh::tunnel::DataKey {
                id: k.id,
                peer: crate::store::NodeId(k.peer),
                key,
            })
        })
        .collect();
    if let Err(e) = dp.set_keys(keys) {
        tracing::warn!("data path keys refused: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_retries_start_at_the_least_wait_then_double_to_the_most_and_are_spread() {
        let within = |f: u32, full: std::time::Duration| {
            let seen: Vec<_> = (0..200).map(|_| retry_wait(f)).collect();
            assert!(
                seen.iter().all(|w| *w >= full / 2 && *w <= full),
                "{f}: {seen:?}"
            );
            // Spread: not all the same.
            assert!(seen.iter().any(|w| *w != seen[0]), "{f}");
        };
        for f in 0..=RETRY_STEADY {
            within(f, RETRY_MIN);
        }
        within(RETRY_STEADY + 1, RETRY_MIN * 2);
        within(RETRY_STEADY + 3, RETRY_MIN * 8);
        within(RETRY_STEADY + 5, RETRY_MAX);
        within(u32::MAX, RETRY_MAX);
    }

    /// A table made current that is not the leader's (a leader that lied, or a table
    /// of another state than the index said) is given up; the leader's is kept.
    #[test]
    fn a_table_made_current_is_kept_only_with_the_leaders_digest() {
        use crate::mesh::wire::Digest;
        let mut table = crate::mesh::Endpoints {
            vip_range: "10.233.0.0/16".into(),
            ..Default::default()
        };
        let digest = Digest::of(&table).to_bytes();
        // Positive control: the leader's.
        assert!(is_leaders(&table, &digest));
        // No digest (a leader of before): taken as it is.
        assert!(is_leaders(&table, &[]));
        table.vip_range = "10.234.0.0/16".into();
        assert!(!is_leaders(&table, &digest));
        assert!(!is_leaders(&table, &[0; 16]));
    }

    fn key(peer: u64, id: u32) -> proto::DataPathKey {
        proto::DataPathKey {
            id,
            key: vec![peer as u8; 32],
            peer,
        }
    }

    #[test]
    fn key_changes_go_onto_the_keys_held_and_need_keys_held() {
        let whole = proto::DataPathKeys {
            keys: vec![key(1, 7), key(2, 7), key(3, 7)],
            ..Default::default()
        };
        let held = receive_keys(None, whole).expect("every key is taken");
        // Peer 2 leaves, 4 comes, 3's key is sent again: the pairs held are 1, 3, 4, once each.
        let changes = proto::DataPathKeys {
            keys: vec![key(4, 7), key(3, 7)],
            partial: true,
            removed: vec![2],
        };
        let mut got = receive_keys(Some(held), changes.clone()).unwrap();
        got.sort_by_key(|k| k.peer);
        assert_eq!(got, vec![key(1, 7), key(3, 7), key(4, 7)]);
        // Changes with no keys held: none, the session starts again.
        assert_eq!(receive_keys(None, changes), None);
    }
}
