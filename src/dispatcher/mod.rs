//! The dispatcher: worker sessions on the leader.
//!
//! Every node's agent sends a heartbeat each period (1 s by default) to any manager; a
//! follower forwards it to the leader. The leader keeps, in memory only, when it last
//! heard from each node ([`Sessions`]). It writes to the store only on a change: a node
//! that becomes `ready`, reports a new description or address, or — found by
//! [`run_monitor`] — misses `heartbeat_misses` periods in a row and is `down`.
//!
//! A new leader does not know when the others last heard from a node, so it starts
//! every clock afresh at the moment it took over: a node is never declared down sooner
//! than a full grace period after a leader change.

pub mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::daemon::{now_ms, Manager};
use crate::error::{Error, Result};
use crate::proto;
use crate::store::{Command, NodeDescription, NodeId, NodeStatus, State};

/// When the leader last heard from each node.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<SessionTable>,
}

#[derive(Default)]
struct SessionTable {
    since: Option<Instant>,
    last: HashMap<NodeId, Instant>,
    facts: HashMap<NodeId, proto::NodeFacts>,
}

impl Sessions {
    /// Forgets every session and starts all clocks at `now` (on becoming leader).
    pub fn reset_all(&self, now: Instant) {
        let mut t = self.inner.lock().expect("sessions lock");
        t.since = Some(now);
        t.last.clear();
        t.facts.clear();
    }

    /// Records a heartbeat.
    pub fn seen(&self, id: NodeId, now: Instant) {
        self.inner
            .lock()
            .expect("sessions lock")
            .last
            .insert(id, now);
    }

    /// Records a node's live facts.
    pub fn set_facts(&self, id: NodeId, facts: proto::NodeFacts) {
        self.inner
            .lock()
            .expect("sessions lock")
            .facts
            .insert(id, facts);
    }

    /// The live facts of every node heard from.
    pub fn facts(&self) -> HashMap<NodeId, proto::NodeFacts> {
        self.inner.lock().expect("sessions lock").facts.clone()
    }

    /// When the node was last heard from (or when this leader took over).
    pub fn last(&self, id: NodeId) -> Option<Instant> {
        let t = self.inner.lock().expect("sessions lock");
        t.last.get(&id).copied().or(t.since)
    }
}

/// The nodes that have missed their heartbeats at `now`: a pure decision over the state
/// and the session clocks.
pub fn overdue(
    state: &State,
    last: impl Fn(NodeId) -> Option<Instant>,
    now: Instant,
) -> Vec<NodeId> {
    let Some(c) = &state.cluster else {
        return vec![];
    };
    let grace =
        Duration::from_millis(c.settings.heartbeat_period_ms * c.settings.heartbeat_misses as u64);
    state
        .nodes
        .values()
        .filter(|n| n.status != NodeStatus::Down)
        .filter(|n| match last(n.id) {
            Some(t) => now.saturating_duration_since(t) > grace,
            None => false,
        })
        .map(|n| n.id)
        .collect()
}

/// Leader component: marks nodes down when they miss their heartbeats.
pub async fn run_monitor(m: Arc<Manager>, stop: CancellationToken) {
    loop {
        let period = m.read(|s| {
            s.cluster
                .as_ref()
                .map(|c| c.settings.heartbeat_period_ms)
                .unwrap_or(1000)
        });
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis((period / 4).max(20))) => {},
        }
        let now = Instant::now();
        let down = m.read(|s| overdue(s, |id| m.sessions.last(id), now));
        for id in down {
            tracing::warn!(node = %id, "node missed its heartbeats: down");
            let r = m
                .propose(Command::UpdateNodeStatus {
                    id,
                    status: NodeStatus::Down,
                    description: None,
                    addr: None,
                    now_ms: now_ms(),
                })
                .await;
            if let Err(e) = r {
                tracing::debug!("marking {id} down: {e}");
            }
        }
    }
}

/// Handles a heartbeat on the leader.
pub async fn heartbeat(
    m: &Manager,
    id: NodeId,
    description: NodeDescription,
    addr: String,
    facts: Option<proto::NodeFacts>,
) -> Result<proto::HeartbeatResponse> {
    m.sessions.seen(id, Instant::now());
    if let Some(f) = facts {
        m.sessions.set_facts(id, f);
    }
    let (node, period, managers) = m.read(|s| {
        (
            s.nodes.get(&id).cloned(),
            s.cluster
                .as_ref()
                .map(|c| c.settings.heartbeat_period_ms)
                .unwrap_or(1000),
            s.managers().map(|n| n.addr.clone()).collect::<Vec<_>>(),
        )
    });
    let Some(node) = node else {
        return Err(Error::PermissionDenied(format!(
            "node {id} has been removed from the cluster"
        )));
    };
    let desc_changed = node.description != description;
    let addr_changed = !addr.is_empty() && node.addr != addr;
    if node.status != NodeStatus::Ready || desc_changed || addr_changed {
        m.propose(Command::UpdateNodeStatus {
            id,
            status: NodeStatus::Ready,
            description: desc_changed.then_some(description),
            addr: addr_changed.then_some(addr),
            now_ms: now_ms(),
        })
        .await?;
    }
    Ok(proto::HeartbeatResponse {
        period_ms: period,
        managers,
        role: node.role.to_string(),
        leader_id: NodeId(m.id).to_string(),
        leader_addr: m.addr_of(m.id).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Cluster, Node, Role, Settings};

    fn state(statuses: &[(u64, NodeStatus)]) -> State {
        let mut s = State {
            cluster: Some(Cluster {
                vip_cursor: 0,
                id: "c".into(),
                ca_cert_pem: String::new(),
                ca_key_pem: String::new(),
                worker_secret: String::new(),
                manager_secret: String::new(),
                settings: Settings::default(),
                created_ms: 0,
            }),
            ..Default::default()
        };
        for (id, st) in statuses {
            s.nodes.insert(
                NodeId(*id),
                Node {
                    status: *st,
                    ..Node::new(
                        NodeId(*id),
                        String::new(),
                        Role::Worker,
                        Default::default(),
                        0,
                    )
                },
            );
        }
        s
    }

    #[test]
    fn a_node_is_overdue_after_three_missed_periods_not_before() {
        let s = state(&[
            (1, NodeStatus::Ready),
            (2, NodeStatus::Ready),
            (3, NodeStatus::Down),
        ]);
        let t0 = Instant::now();
        let last = |id: NodeId| match id.0 {
            1 => Some(t0),
            2 => Some(t0 + Duration::from_millis(2500)),
            _ => Some(t0),
        };
        // 3 periods of 1 s: not yet at 3.0 s, overdue at 3.1 s; a down node stays put.
        assert!(overdue(&s, last, t0 + Duration::from_millis(3000)).is_empty());
        assert_eq!(
            overdue(&s, last, t0 + Duration::from_millis(3100)),
            vec![NodeId(1)]
        );
        assert_eq!(
            overdue(&s, last, t0 + Duration::from_millis(5600)),
            vec![NodeId(1), NodeId(2)]
        );
    }

    #[test]
    fn a_new_leader_gives_every_node_a_full_grace_period() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        sessions.seen(NodeId(1), t0);
        sessions.reset_all(t0 + Duration::from_secs(10));
        assert_eq!(sessions.last(NodeId(1)), Some(t0 + Duration::from_secs(10)));
        assert_eq!(sessions.last(NodeId(9)), Some(t0 + Duration::from_secs(10)));
    }
}
