//! Hostile status batches against the leader: updates that are arbitrary bytes or
//! valid `(TaskId, TaskStatus)` JSON damaged by [`fuzz::Edit`]s, node ids that are any
//! text. [`decode_statuses`] must refuse the batch or give updates that the store
//! applies without a panic and without moving a task's state backwards.

use proptest::prelude::*;

use super::*;
use crate::fuzz;
use crate::store::service::TaskSpec;
use crate::store::task::HostPort;
use crate::store::{Command, ServiceId, State, Task, TaskState};

fn status(i: u64) -> TaskStatus {
    let mut s = TaskStatus::new(TaskState::Running, "started", 1_000 + i);
    s.container_id = format!("c{i}");
    s.exit_code = Some(0);
    s.ports = vec![HostPort {
        protocol: crate::store::service::Protocol::Udp,
        target: 53,
        host_port: 30053,
    }];
    s
}

fn update(i: u64) -> Vec<u8> {
    serde_json::to_vec(&(TaskId(format!("t{i}")), status(i))).expect("encodes")
}

/// A store holding tasks `t0`..`t3` of node 2, assigned.
fn state() -> State {
    let mut s = State::default();
    for i in 0..4 {
        let id = TaskId(format!("t{i}"));
        s.tasks.insert(
            id.clone(),
            Task {
                id,
                service_id: ServiceId("svc".into()),
                service_name: "web".into(),
                slot: i,
                node_id: Some(NodeId(2)),
                spec_version: 1,
                spec: TaskSpec::default(),
                desired_state: TaskState::Running,
                status: TaskStatus::new(TaskState::Assigned, "assigned", 500),
                created_ms: 500,
                vip: String::new(),
            },
        );
    }
    s
}

/// Decodes `updates` as the leader does and applies what decodes.
fn decode_and_apply(updates: &[Vec<u8>]) {
    let Ok(decoded) = decode_statuses(updates) else {
        return;
    };
    assert_eq!(decoded.len(), updates.len());
    let mut s = state();
    let before = s.clone();
    s.apply(&Command::UpdateTaskStatus { updates: decoded });
    for (id, t) in &s.tasks {
        assert!(
            t.status.state >= before.tasks[id].status.state,
            "{id} moved back"
        );
    }
    assert_eq!(
        s.tasks.len(),
        before.tasks.len(),
        "no task made by a status"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_status_updates_are_refused(
        updates in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..4),
    ) {
        decode_and_apply(&updates);
    }

    #[test]
    fn damaged_status_updates_are_refused_or_applied_forward_only(
        which in proptest::collection::vec(0u64..6, 1..4),
        edits in fuzz::edits(fuzz::JSON_BYTES, 8),
        at in any::<usize>(),
    ) {
        let mut updates: Vec<Vec<u8>> = which.iter().map(|i| update(*i)).collect();
        let i = at % updates.len();
        updates[i] = fuzz::apply(updates[i].clone(), &edits);
        decode_and_apply(&updates);
    }

    #[test]
    fn node_ids_of_any_text_parse_or_are_refused(text in "\\PC{0,24}") {
        if let Ok(id) = text.parse::<NodeId>() {
            prop_assert_eq!(id.to_string().parse::<NodeId>().ok(), Some(id));
        }
    }
}

#[test]
fn a_valid_batch_decodes_and_applies() {
    let updates: Vec<Vec<u8>> = (0..3).map(update).collect();
    let decoded = decode_statuses(&updates).expect("decodes");
    assert_eq!(decoded[1], (TaskId("t1".into()), status(1)));
    let mut s = state();
    s.apply(&Command::UpdateTaskStatus { updates: decoded });
    assert_eq!(s.tasks[&TaskId("t2".into())].status, status(2));
    decode_and_apply(&updates);
}

#[test]
fn one_bad_update_refuses_the_batch_and_nesting_is_bounded() {
    let mut deep = b"[\"t1\",".to_vec();
    deep.extend(fuzz::nested_arrays(100_000, false));
    for bad in [
        b"".to_vec(),
        b"[\"t1\"]".to_vec(),
        deep,
        fuzz::nested_objects("state", 100_000),
    ] {
        assert!(decode_statuses(&[update(0), bad]).is_err());
    }
}
