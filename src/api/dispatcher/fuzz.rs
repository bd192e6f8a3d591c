//! Hostile status batches against the leader: updates that are arbitrary bytes or
//! valid `TaskStatusUpdate` messages damaged by [`fuzz::Edit`]s, texts of any length,
//! node ids that are any text. [`decode_statuses`] and [`admit_statuses`] must refuse
//! the batch or admit at most one update per task of the node, each within the status
//! limits, which the store applies without a panic and without moving a task's state
//! backwards.

use proptest::prelude::*;

use super::*;
use crate::fuzz;
use crate::store::service::TaskSpec;
use crate::store::task::{HostPort, STATUS_PORTS_MAX, STATUS_TEXT_MAX, STATUS_WORD_MAX};
use crate::store::{Command, ServiceId, State, Task, TaskState};

/// The node that reports.
const NODE: NodeId = NodeId(2);

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

/// The bytes of one update, as a worker's batch carries it.
fn encoded(id: TaskId, st: TaskStatus) -> Vec<u8> {
    use prost::Message;
    proto::TaskStatusUpdate::from((id, st)).encode_to_vec()
}

fn update(i: u64) -> Vec<u8> {
    encoded(TaskId(format!("t{i}")), status(i))
}

/// Each update's bytes decoded as gRPC does, then [`decode_statuses`].
fn decode_wire(updates: &[Vec<u8>]) -> Result<Vec<(TaskId, TaskStatus)>> {
    use prost::Message;
    let messages = updates
        .iter()
        .map(|u| {
            proto::TaskStatusUpdate::decode(u.as_slice())
                .map_err(|e| Error::InvalidInput(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    decode_statuses(messages)
}

/// A store holding tasks `t0`..`t3` of [`NODE`] and `t9` of node 3, assigned.
fn state() -> State {
    let mut s = State::default();
    for i in [0, 1, 2, 3, 9] {
        let id = TaskId(format!("t{i}"));
        s.tasks.insert(
            id.clone(),
            Task {
                id,
                service_id: ServiceId("svc".into()),
                service_name: "web".into(),
                slot: i,
                node_id: Some(if i == 9 { NodeId(3) } else { NODE }),
                spec_version: 1,
                spec: TaskSpec::default().into(),
                desired_state: TaskState::Running,
                status: TaskStatus::new(TaskState::Assigned, "assigned", 500),
                created_ms: 500,
                vip: String::new(),
                endpoint: None,
            },
        );
    }
    s
}

/// Decodes and admits `updates` as the leader does, checks what is admitted, and
/// applies it.
fn decode_and_apply(updates: &[Vec<u8>]) {
    let Ok(decoded) = decode_wire(updates) else {
        return;
    };
    assert_eq!(decoded.len(), updates.len());
    let mut s = state();
    // The store as if every update went through Raft, cut.
    let mut direct = state();
    let cut = decoded.iter().cloned().map(|(id, mut st)| {
        st.cut_to_limits();
        (id, st)
    });
    direct.apply(&Command::UpdateTaskStatus {
        updates: cut.collect(),
    });
    let Ok(admitted) = admit_statuses(&s, NODE, decoded) else {
        return;
    };
    within_limits(&s, &admitted);
    let before = s.clone();
    s.apply(&Command::UpdateTaskStatus { updates: admitted });
    assert_eq!(
        s.tasks, direct.tasks,
        "admitted or not, the store ends the same"
    );
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

/// At most one update per task of [`NODE`], each within the status limits.
fn within_limits(s: &State, admitted: &[(TaskId, TaskStatus)]) {
    let mut ids: Vec<&TaskId> = admitted.iter().map(|(id, _)| id).collect();
    ids.dedup();
    assert_eq!(ids.len(), admitted.len(), "one update per task");
    for (id, st) in admitted {
        assert_eq!(s.tasks[id].node_id, Some(NODE), "{id} is the node's own");
        assert!(st.message.len() <= STATUS_TEXT_MAX && st.err.len() <= STATUS_TEXT_MAX);
        assert!(st.container_id.len() <= STATUS_WORD_MAX && st.health.len() <= STATUS_WORD_MAX);
        assert!(st.ports.len() <= STATUS_PORTS_MAX);
    }
}

/// A status of task `t{task}` with texts of the given lengths and `ports` ports.
fn big_update(task: u64, text: &str, ports: usize) -> Vec<u8> {
    let mut st = status(task);
    st.message = text.to_string();
    st.err = text.repeat(2);
    st.container_id = text.to_string();
    st.health = text.to_string();
    st.ports = (0..ports)
        .map(|i| HostPort {
            protocol: crate::store::service::Protocol::Tcp,
            target: i as u16,
            host_port: i as u16,
        })
        .collect();
    encoded(TaskId(format!("t{task}")), st)
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
        edits in fuzz::edits(fuzz::PROTOBUF_BYTES, 8),
        at in any::<usize>(),
    ) {
        let mut updates: Vec<Vec<u8>> = which.iter().map(|i| update(*i)).collect();
        let i = at % updates.len();
        updates[i] = fuzz::apply(updates[i].clone(), &edits);
        decode_and_apply(&updates);
    }

    #[test]
    fn texts_of_any_length_are_cut_to_the_limits(
        text in "\\PC{0,700}",
        task in 0u64..6,
        ports in 0usize..1100,
    ) {
        decode_and_apply(&[big_update(task, &text, ports), big_update(task, &text, 0)]);
        let mut st = status(0);
        st.message = text.clone();
        st.cut_to_limits();
        if text.len() <= STATUS_TEXT_MAX {
            prop_assert_eq!(&st.message, &text);
        } else {
            let kept = st.message.strip_suffix('…').expect("cut with …");
            prop_assert!(text.starts_with(kept));
        }
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
    let decoded = decode_wire(&updates).expect("decodes");
    assert_eq!(decoded[1], (TaskId("t1".into()), status(1)));
    let mut s = state();
    let admitted = admit_statuses(&s, NODE, decoded).expect("the node's own");
    s.apply(&Command::UpdateTaskStatus { updates: admitted });
    assert_eq!(s.tasks[&TaskId("t2".into())].status, status(2));
    decode_and_apply(&updates);
}

#[test]
fn of_a_tasks_updates_the_one_the_store_would_end_with_is_admitted() {
    let at = |state: TaskState, message: &str| {
        let st = TaskStatus::new(state, message, 9);
        encoded(TaskId("t1".into()), st)
    };
    for (updates, kept) in [
        (
            vec![at(TaskState::Running, "a"), at(TaskState::Starting, "b")],
            "a",
        ),
        (
            vec![at(TaskState::Starting, "a"), at(TaskState::Running, "b")],
            "b",
        ),
        (
            vec![at(TaskState::Running, "a"), at(TaskState::Running, "b")],
            "b",
        ),
    ] {
        let admitted = admit_statuses(&state(), NODE, decode_wire(&updates).expect("decodes"))
            .expect("admitted");
        assert_eq!(admitted.len(), 1);
        assert_eq!(admitted[0].1.message, kept);
        decode_and_apply(&updates);
    }
}

#[test]
fn a_report_the_store_holds_already_or_one_that_moves_back_is_not_admitted() {
    let mut s = state();
    let report = |st: TaskStatus| decode_wire(&[encoded(TaskId("t1".into()), st)]).unwrap();
    let running = TaskStatus::new(TaskState::Running, "started", 9);
    // The control: a new state is admitted, and applied.
    let admitted = admit_statuses(&s, NODE, report(running.clone())).expect("admitted");
    assert_eq!(admitted, vec![(TaskId("t1".into()), running.clone())]);
    s.apply(&Command::UpdateTaskStatus { updates: admitted });
    // The same report again (a retry): nothing to propose.
    let again = admit_statuses(&s, NODE, report(running.clone())).expect("admitted");
    assert!(again.is_empty(), "{again:?}");
    // A report of an earlier state: nothing.
    let back = TaskStatus::new(TaskState::Starting, "starting", 10);
    assert!(admit_statuses(&s, NODE, report(back))
        .expect("admitted")
        .is_empty());
    // The same state with news (a health check, a message): admitted.
    let mut healthy = running.clone();
    healthy.health = "healthy".into();
    assert_eq!(
        admit_statuses(&s, NODE, report(healthy))
            .expect("admitted")
            .len(),
        1
    );
}

#[test]
fn unknown_tasks_are_dropped_long_texts_cut_and_another_nodes_task_refused() {
    let s = state();
    // 5 MiB of text and 5000 ports for a task of the node, and a task the store does
    // not hold.
    let huge = "x".repeat(1 << 20);
    let updates = vec![
        big_update(1, &huge, 5000),
        update(4),
        big_update(1, "ok", 1),
    ];
    let admitted =
        admit_statuses(&s, NODE, decode_wire(&updates).expect("decodes")).expect("admitted");
    assert_eq!(admitted.len(), 1, "t4 dropped, t1 once: {admitted:?}");
    assert_eq!(admitted[0].1.message, "ok", "the last update of t1");
    let once =
        admit_statuses(&s, NODE, decode_wire(&updates[..1]).expect("decodes")).expect("admitted");
    within_limits(&s, &once);
    assert!(serde_json::to_vec(&once).expect("encodes").len() < 64 * 1024);

    let theirs = vec![update(0), update(9)];
    let e = admit_statuses(&s, NODE, decode_wire(&theirs).expect("decodes"))
        .expect_err("t9 is node 3's");
    assert!(e.to_string().contains("not its own"), "{e}");
}

#[test]
fn one_bad_update_refuses_the_batch_and_nesting_is_bounded() {
    let mut truncated = update(1);
    truncated.truncate(truncated.len() / 2);
    let mut deep = update(1);
    deep.extend(fuzz::nested_groups(100_000, false));
    for bad in [
        b"".to_vec(),
        b"[\"t1\"]".to_vec(),
        truncated,
        deep,
        fuzz::nested_groups(100_000, true),
    ] {
        assert!(decode_wire(&[update(0), bad]).is_err());
    }
}
