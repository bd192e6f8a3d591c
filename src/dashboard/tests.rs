use std::collections::BTreeMap;

use super::view::*;
use super::*;
use crate::store::fixtures::{node, service, task};
use crate::store::service::UpdateState;
use crate::store::{NodeStatus, Role, State, TaskState, TaskStatus, UpdateStatus};

fn ready(id: u64) -> crate::store::Node {
    let mut n = node(id);
    n.status = NodeStatus::Ready;
    n
}

fn running(id: &str, svc: &crate::store::Service, slot: u64, on: u64) -> crate::store::Task {
    let mut t = task(id, svc, slot);
    t.node_id = Some(NodeId(on));
    t.status = TaskStatus::new(TaskState::Running, "started", 5);
    t.created_ms = 1;
    t
}

fn all(_: &crate::store::Service, _: &crate::store::Node) -> bool {
    true
}

/// Two nodes, `web` with three replicas (two on host1, one on host2), one of them
/// failed and replaced.
fn state() -> State {
    let mut s = State::default();
    let mut m = ready(1);
    m.role = Role::Manager;
    s.nodes.insert(NodeId(1), m);
    s.nodes.insert(NodeId(2), ready(2));
    let web = service("web", 3);
    for t in [
        running("t1", &web, 1, 1),
        running("t2", &web, 2, 1),
        running("t3", &web, 3, 2),
    ] {
        s.tasks.insert(t.id.clone(), t);
    }
    let mut failed = running("t0", &web, 3, 2);
    failed.status = TaskStatus::new(TaskState::Failed, "exit 1", 4);
    failed.desired_state = TaskState::Shutdown;
    failed.created_ms = 0;
    s.tasks.insert(failed.id.clone(), failed);
    s.services.insert(web.id.clone(), web);
    s
}

fn cards(v: &View, host: &str) -> Vec<(String, u64, String, bool)> {
    v.nodes
        .iter()
        .find(|n| n.hostname == host)
        .map(|n| {
            n.tasks
                .iter()
                .map(|c| (c.service.clone(), c.slot, c.state.clone(), c.lost))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn nodes_are_columns_with_their_running_tasks_and_a_stopped_task_leaves_the_board() {
    let v = view(&state(), Some(1), Some(NodeId(2)), &all, vec![], 7);
    assert_eq!(
        v.nodes
            .iter()
            .map(|n| n.hostname.as_str())
            .collect::<Vec<_>>(),
        ["host1", "host2"],
        "managers first"
    );
    assert!(v.nodes[0].leader && !v.nodes[1].leader);
    assert_eq!(
        (v.leader.as_str(), v.served_by.as_str()),
        ("host1", "host2")
    );
    assert_eq!(
        cards(&v, "host1"),
        [
            ("web".to_string(), 1, "running".to_string(), false),
            ("web".to_string(), 2, "running".to_string(), false)
        ]
    );
    // The failed task (desired shutdown, ended) is not on the board; its replacement is.
    assert_eq!(
        cards(&v, "host2"),
        [("web".to_string(), 3, "running".to_string(), false)]
    );
    assert_eq!(v.services.len(), 1);
    let web = &v.services[0];
    assert_eq!((web.running, web.desired), (3, 3));
    assert_eq!(web.mode, "replicated");
    assert!(web.update.is_none());
    assert_eq!(v.generated_ms, 7);
}

#[test]
fn a_down_node_keeps_its_cards_marked_lost_and_pending_tasks_have_their_own_column() {
    let mut s = state();
    s.nodes.get_mut(&NodeId(2)).unwrap().status = NodeStatus::Down;
    let web = s.services.values().next().unwrap().clone();
    let pending = task("t9", &web, 4);
    s.tasks.insert(pending.id.clone(), pending);
    let v = view(&s, Some(1), None, &all, vec![], 0);
    assert_eq!(v.nodes[1].status, "down");
    assert_eq!(
        cards(&v, "host2"),
        [("web".to_string(), 3, "running".to_string(), true)],
        "the down node's task is shown as lost"
    );
    assert!(cards(&v, "host1").iter().all(|c| !c.3));
    assert_eq!(v.unassigned.len(), 1);
    assert_eq!(v.unassigned[0].state, "pending");
}

#[test]
fn an_update_in_progress_shows_its_progress_and_a_completed_one_does_not() {
    let mut s = state();
    let id = s.services.keys().next().unwrap().clone();
    s.update_status.insert(
        id.clone(),
        UpdateStatus::new(UpdateState::Updating, 1, 0, "rolling"),
    );
    let v = view(&s, None, None, &all, vec![], 0);
    let u = v.services[0].update.as_ref().expect("an update row");
    assert_eq!(u.state, "updating");
    assert_eq!((u.done, u.wanted), (3, 3));
    assert_eq!(v.leader, "");
    s.update_status.get_mut(&id).unwrap().state = UpdateState::Completed;
    let v = view(&s, None, None, &all, vec![], 0);
    assert!(v.services[0].update.is_none());
}

#[test]
fn the_view_is_bounded_and_counts_what_it_leaves_out() {
    let mut s = State::default();
    s.nodes.insert(NodeId(1), ready(1));
    let svc = service("big", 300);
    for slot in 1..=300 {
        let t = running(&format!("t{slot:04}"), &svc, slot, 1);
        s.tasks.insert(t.id.clone(), t);
    }
    s.services.insert(svc.id.clone(), svc);
    let events: Vec<_> = (0..80u64)
        .map(|i| crate::store::events::Event {
            time: String::new(),
            time_nano: i,
            kind: "task".into(),
            action: "running".into(),
            id: format!("e{i}"),
            name: String::new(),
            attributes: BTreeMap::new(),
        })
        .collect();
    let v = view(&s, None, None, &all, events, 0);
    assert_eq!(v.nodes[0].tasks.len(), MAX_CARDS_PER_NODE);
    assert_eq!(v.nodes[0].more, 300 - MAX_CARDS_PER_NODE);
    assert_eq!(v.events.len(), MAX_EVENTS);
    assert_eq!(v.events[0].time_nano, 79, "newest first");
    assert_eq!(v.last_event_nano, 79);
}

#[test]
fn the_token_is_the_same_for_one_ca_key_and_differs_for_another() {
    let a = crate::manager::keys::dashboard_token_of(b"ca key one");
    assert_eq!(a, crate::manager::keys::dashboard_token_of(b"ca key one"));
    assert_ne!(a, crate::manager::keys::dashboard_token_of(b"ca key two"));
    assert_eq!(a.len(), 64);
    assert!(same(a.as_bytes(), a.clone().as_bytes()));
    assert!(!same(a.as_bytes(), &a.as_bytes()[..63]));
    let mut other = a.clone().into_bytes();
    other[63] ^= 1;
    assert!(!same(a.as_bytes(), &other));
}

#[test]
fn the_token_is_read_from_the_cookie_or_a_bearer_header_and_the_address() {
    let mut h = HeaderMap::new();
    assert_eq!(presented(&h), None);
    h.insert(
        header::COOKIE,
        HeaderValue::from_static("a=b; orc_dashboard=abc; c=d"),
    );
    assert_eq!(presented(&h).as_deref(), Some("abc"));
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer xyz"),
    );
    assert_eq!(presented(&h).as_deref(), Some("xyz"));
    let mut h = HeaderMap::new();
    h.insert(
        header::COOKIE,
        HeaderValue::from_static("orc_dashboardx=abc"),
    );
    assert_eq!(presented(&h), None, "another cookie's name is not ours");
    let uri: Uri = "/?x=1&token=t0k".parse().unwrap();
    assert_eq!(query_token(&uri), Some("t0k"));
    let uri: Uri = "/?tokens=t0k".parse().unwrap();
    assert_eq!(query_token(&uri), None);
}

#[test]
fn loopback_is_taken_and_anything_else_needs_saying_so() {
    assert!(check_addr("127.0.0.1:4243", false).is_ok());
    let e = check_addr("0.0.0.0:4243", false).unwrap_err().to_string();
    assert!(e.contains("--dashboard-allow-remote"), "{e}");
    assert!(check_addr("0.0.0.0:4243", true).unwrap().1);
    assert!(check_addr("localhost:4243", false).is_err());
}
