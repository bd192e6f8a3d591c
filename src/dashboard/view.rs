//! What the dashboard shows, made from the state tables: a pure function of the state,
//! the leader and the latest events, so that it is tested without a browser or a
//! daemon.
//!
//! Bounded whatever the cluster's size: at most [`MAX_NODES`] node columns,
//! [`MAX_CARDS`] task cards in all (and [`MAX_CARDS_PER_NODE`] in one column),
//! [`MAX_SERVICES`] service rows and [`MAX_EVENTS`] events; what is left out is
//! counted (`more`), never silently dropped.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::orchestrator;
use crate::store::events::Event;
use crate::store::service::{ServiceMode, UpdateState};
use crate::store::{Node, NodeId, NodeStatus, Service, State, Task, TaskState};

/// Node columns shown at most.
pub const MAX_NODES: usize = 1_000;
/// Task cards shown at most, in all.
pub const MAX_CARDS: usize = 5_000;
/// Task cards shown at most in one node's column.
pub const MAX_CARDS_PER_NODE: usize = 200;
/// Service rows shown at most.
pub const MAX_SERVICES: usize = 1_000;
/// Latest events shown.
pub const MAX_EVENTS: usize = 50;

/// The whole page's data, sent as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct View {
    /// The cluster's id (empty before init).
    pub cluster: String,
    /// The leader's hostname (empty: no leader known).
    pub leader: String,
    /// The node that serves this page (its hostname).
    pub served_by: String,
    /// When this view was made, unix ms.
    pub generated_ms: u64,
    /// The newest event's time, ns since the epoch (0: none); the page measures how
    /// long a change took to reach it from this.
    pub last_event_nano: u64,
    /// Node columns, managers first, then by hostname.
    pub nodes: Vec<NodeColumn>,
    /// Node columns left out beyond [`MAX_NODES`].
    pub more_nodes: usize,
    /// Tasks wanted running that have no node yet (pending: not placeable now).
    pub unassigned: Vec<Card>,
    /// Services by name.
    pub services: Vec<ServiceRow>,
    /// Service rows left out beyond [`MAX_SERVICES`].
    pub more_services: usize,
    /// The latest events, newest first.
    pub events: Vec<Event>,
}

/// One node and its tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeColumn {
    pub id: String,
    pub hostname: String,
    pub role: String,
    /// `ready`, `down`, `disconnected`, ...
    pub status: String,
    /// `active`, `pause`, `drain`.
    pub availability: String,
    pub leader: bool,
    pub address: String,
    /// Its tasks, by service name then slot.
    pub tasks: Vec<Card>,
    /// Cards left out of this column.
    pub more: usize,
}

/// One task's card.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Card {
    /// The task id's first 12 characters.
    pub id: String,
    pub service: String,
    /// Replica slot (0: global).
    pub slot: u64,
    /// The observed state (`running`, `starting`, `failed`, ...).
    pub state: String,
    /// The desired state.
    pub desired: String,
    /// Its node is down or gone: the card is what the managers last heard.
    pub lost: bool,
    pub image: String,
    /// The status message or error, for the card's title.
    pub message: String,
    /// When it entered its state, unix ms.
    pub since_ms: u64,
}

/// One service's row.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServiceRow {
    pub id: String,
    pub name: String,
    /// `replicated`, `global`, `replicated-job`, `global-job`.
    pub mode: String,
    pub image: String,
    pub running: u64,
    pub desired: u64,
    /// The stack it belongs to (empty: none).
    pub stack: String,
    /// An update or rollback in progress or paused (none once completed).
    pub update: Option<UpdateRow>,
}

/// An update in progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UpdateRow {
    /// `updating`, `paused`, `rollback_started`, `rollback_paused`.
    pub state: String,
    /// Tasks of the new spec in their final state.
    pub done: u64,
    /// How many it needs.
    pub wanted: u64,
    pub message: String,
}

/// Whether a task belongs on the board: wanted running, or not yet seen to stop.
fn shown(t: &Task) -> bool {
    t.desired_state == TaskState::Running || !t.status.state.is_terminal()
}

fn card(t: &Task, lost: bool) -> Card {
    let message = if t.status.err.is_empty() {
        t.status.message.clone()
    } else {
        t.status.err.clone()
    };
    Card {
        id: t.id.0.chars().take(12).collect(),
        service: t.service_name.clone(),
        slot: t.slot,
        state: t.status.state.as_str().into(),
        desired: t.desired_state.as_str().into(),
        lost,
        image: t.spec.container.image.clone(),
        message,
        since_ms: t.status.timestamp_ms,
    }
}

fn mode(m: &ServiceMode) -> &'static str {
    match m {
        ServiceMode::Replicated { .. } => "replicated",
        ServiceMode::Global => "global",
        ServiceMode::ReplicatedJob { .. } => "replicated-job",
        ServiceMode::GlobalJob => "global-job",
    }
}

/// The view of `state`: `leader` is the leader's node id, `me` this node's,
/// `eligible` whether a global service may run on a node (for its desired count),
/// `events` the latest events (any order; the newest [`MAX_EVENTS`] are kept).
pub fn view(
    state: &State,
    leader: Option<u64>,
    me: Option<NodeId>,
    eligible: &dyn Fn(&Service, &Node) -> bool,
    mut events: Vec<Event>,
    now_ms: u64,
) -> View {
    let hostname = |id: Option<NodeId>| {
        id.and_then(|id| state.nodes.get(&id))
            .map(|n| n.description.hostname.clone())
            .unwrap_or_default()
    };
    // Tasks by node, in a stable order.
    let mut by_node: BTreeMap<Option<NodeId>, Vec<&Task>> = BTreeMap::new();
    for t in state.tasks.values().filter(|t| shown(t)) {
        by_node.entry(t.node_id).or_default().push(t);
    }
    for tasks in by_node.values_mut() {
        tasks.sort_by(|a, b| {
            (&a.service_name, a.slot, &a.id.0).cmp(&(&b.service_name, b.slot, &b.id.0))
        });
    }
    let mut nodes: Vec<&Node> = state.nodes.values().collect();
    nodes.sort_by(|a, b| {
        (
            a.role != crate::store::Role::Manager,
            &a.description.hostname,
            a.id.0,
        )
            .cmp(&(
                b.role != crate::store::Role::Manager,
                &b.description.hostname,
                b.id.0,
            ))
    });
    let more_nodes = nodes.len().saturating_sub(MAX_NODES);
    let mut budget = MAX_CARDS;
    let mut take = |tasks: &[&Task], lost: bool| -> (Vec<Card>, usize) {
        let n = tasks.len().min(MAX_CARDS_PER_NODE).min(budget);
        budget -= n;
        (
            tasks[..n].iter().map(|t| card(t, lost)).collect(),
            tasks.len() - n,
        )
    };
    let columns = nodes
        .iter()
        .take(MAX_NODES)
        .map(|n| {
            let lost = n.status != NodeStatus::Ready;
            let tasks = by_node.get(&Some(n.id)).map(Vec::as_slice).unwrap_or(&[]);
            let (tasks, more) = take(tasks, lost);
            NodeColumn {
                id: n.id.to_string(),
                hostname: n.description.hostname.clone(),
                role: n.role.to_string(),
                status: n.status.as_str().into(),
                availability: n.availability.as_str().into(),
                leader: Some(n.id.0) == leader,
                address: n.addr.clone(),
                tasks,
                more,
            }
        })
        .collect();
    let pending: Vec<&Task> = by_node
        .get(&None)
        .map(|ts| {
            ts.iter()
                .copied()
                .filter(|t| t.desired_state == TaskState::Running)
                .collect()
        })
        .unwrap_or_default();
    let (unassigned, _) = take(&pending, false);
    let mut services: Vec<&Service> = state.services.values().collect();
    services.sort_by(|a, b| (&a.spec.name, &a.id.0).cmp(&(&b.spec.name, &b.id.0)));
    let more_services = services.len().saturating_sub(MAX_SERVICES);
    let services = services
        .into_iter()
        .take(MAX_SERVICES)
        .map(|svc| {
            let p = orchestrator::progress(state, svc, eligible);
            let update = state.update_status.get(&svc.id).and_then(|u| {
                let active = matches!(
                    u.state,
                    UpdateState::Updating
                        | UpdateState::Paused
                        | UpdateState::RollbackStarted
                        | UpdateState::RollbackPaused
                );
                active.then(|| UpdateRow {
                    state: u.state.as_str().into(),
                    done: p.done as u64,
                    wanted: p.wanted as u64,
                    message: u.message.clone(),
                })
            });
            ServiceRow {
                id: svc.id.0.clone(),
                name: svc.spec.name.clone(),
                mode: mode(&svc.spec.mode).into(),
                image: svc.spec.task.container.image.clone(),
                running: p.running as u64,
                desired: p.desired as u64,
                stack: svc
                    .spec
                    .labels
                    .get(crate::store::service::STACK_LABEL)
                    .cloned()
                    .unwrap_or_default(),
                update,
            }
        })
        .collect();
    events.sort_by_key(|e| std::cmp::Reverse(e.time_nano));
    events.truncate(MAX_EVENTS);
    View {
        cluster: state
            .cluster
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default(),
        leader: hostname(leader.map(NodeId)),
        served_by: hostname(me),
        generated_ms: now_ms,
        last_event_nano: events.first().map(|e| e.time_nano).unwrap_or(0),
        nodes: columns,
        more_nodes,
        unassigned,
        services,
        more_services,
        events,
    }
}
