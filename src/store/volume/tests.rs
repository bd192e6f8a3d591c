use super::*;
use crate::store::fixtures;
use crate::store::service::{MountKind, UpdateOrder};
use crate::store::{Availability, TaskStatus};

fn volume(name: &str, follow: bool, keep: bool) -> Mount {
    Mount {
        follow,
        keep,
        ..Mount::new(MountKind::Volume, name, "/data")
    }
}

/// A cluster of nodes 1..=3 (ready) and a service `db` of one replica whose volume
/// `pgdata` follows (`keep` as given), monitor period 5 s.
fn state(keep: bool) -> State {
    let mut s = State {
        cluster: Some(fixtures::cluster()),
        ..Default::default()
    };
    for id in 1..=3 {
        let mut n = fixtures::node(id);
        n.status = NodeStatus::Ready;
        s.nodes.insert(n.id, n);
    }
    let mut svc = fixtures::service("db", 1);
    svc.spec.task.container.mounts = vec![volume("pgdata", true, keep)];
    svc.spec.update.monitor_ms = 5_000;
    s.services.insert(svc.id.clone(), svc);
    s
}

fn svc(s: &State) -> Service {
    s.services.values().next().unwrap().clone()
}

/// Task `id` of slot 1 on `node`, in `state` since `at_ms`, with the service's spec.
fn task_on(s: &mut State, id: &str, node: u64, state: TaskState, at_ms: u64) -> Task {
    let svc = svc(s);
    let mut t = fixtures::task(id, &svc, 1);
    t.spec = svc.spec.task.clone().into();
    t.node_id = Some(NodeId(node));
    t.status = TaskStatus::new(state, "", at_ms);
    s.tasks.insert(t.id.clone(), t.clone());
    t
}

fn record(s: &mut State, now_ms: u64) -> Vec<VolumeHome> {
    let homes = homes_to_record(s, now_ms);
    let (r, keys) = s.set_volume_homes(&homes);
    assert_eq!(r, crate::store::Response::Ok);
    assert_eq!(keys.len(), homes.len());
    homes
}

fn home_of(s: &State) -> Option<&VolumeHome> {
    s.volume_homes.values().next()
}

#[test]
fn the_first_node_a_slot_runs_on_is_its_home_at_once() {
    let mut s = state(false);
    let t = task_on(&mut s, "t1", 1, TaskState::Starting, 1_000);
    assert!(homes_to_record(&s, 1_000).is_empty(), "not running yet");
    s.tasks.get_mut(&t.id).unwrap().status = TaskStatus::new(TaskState::Running, "", 2_000);
    let homes = record(&mut s, 2_000);
    assert_eq!(homes.len(), 1);
    assert_eq!(home_of(&s).unwrap().node, NodeId(1));
    assert!(homes_to_record(&s, 60_000).is_empty(), "recorded once");
    // A service without a following volume has no home.
    let mut plain = state(false);
    for svc in plain.services.values_mut() {
        svc.spec.task.container.mounts = vec![volume("pgdata", false, false)];
    }
    let mut t = task_on(&mut plain, "t1", 1, TaskState::Running, 1_000);
    std::sync::Arc::make_mut(&mut t.spec).container.mounts[0].follow = false;
    plain.tasks.insert(t.id.clone(), t);
    assert!(homes_to_record(&plain, 60_000).is_empty());
}

#[test]
fn a_move_is_recorded_after_the_monitor_period_healthy_and_the_old_copy_marked() {
    let mut s = state(false);
    let old = task_on(&mut s, "t1", 1, TaskState::Running, 1_000);
    record(&mut s, 1_000);
    // Drained: the old task stops, a new one runs on node 2.
    s.tasks.get_mut(&old.id).unwrap().desired_state = TaskState::Shutdown;
    let new = task_on(&mut s, "t2", 2, TaskState::Running, 10_000);
    assert!(
        homes_to_record(&s, 14_999).is_empty(),
        "inside the monitor period"
    );
    assert_eq!(next_due_ms(&s), Some(15_000));
    // Unhealthy: never.
    s.tasks.get_mut(&new.id).unwrap().status.health = "unhealthy".into();
    assert!(homes_to_record(&s, 60_000).is_empty());
    assert_eq!(next_due_ms(&s), None, "nothing to wake for");
    s.tasks.get_mut(&new.id).unwrap().status.health = "healthy".into();
    record(&mut s, 15_000);
    let h = home_of(&s).unwrap();
    assert_eq!((h.node, h.task.0.as_str()), (NodeId(2), "t2"));
    assert_eq!(h.stale, vec![NodeId(1)]);
    // Node 1 is told to drop its copy; node 2 is not.
    assert_eq!(
        to_drop(&s, NodeId(1)),
        vec![DropVolume {
            name: "pgdata".into(),
            service_id: svc(&s).id
        }]
    );
    assert!(to_drop(&s, NodeId(2)).is_empty());
    // Back to node 1 later: it is no longer stale there.
    s.tasks.get_mut(&new.id).unwrap().desired_state = TaskState::Shutdown;
    task_on(&mut s, "t3", 1, TaskState::Running, 20_000);
    assert!(
        to_drop(&s, NodeId(1)).is_empty(),
        "a task of the slot is there"
    );
    record(&mut s, 25_000);
    let h = home_of(&s).unwrap();
    assert_eq!(h.node, NodeId(1));
    assert_eq!(h.stale, vec![NodeId(2)]);
}

#[test]
fn keep_and_a_forced_new_volume_leave_the_old_copy_alone() {
    let mut s = state(true);
    let old = task_on(&mut s, "t1", 1, TaskState::Running, 1_000);
    record(&mut s, 1_000);
    s.tasks.get_mut(&old.id).unwrap().desired_state = TaskState::Shutdown;
    task_on(&mut s, "t2", 2, TaskState::Running, 10_000);
    record(&mut s, 20_000);
    assert_eq!(home_of(&s).unwrap().node, NodeId(2));
    assert!(home_of(&s).unwrap().stale.is_empty(), "keep");

    let mut s = state(false);
    task_on(&mut s, "t1", 1, TaskState::Running, 1_000);
    record(&mut s, 1_000);
    s.tasks.clear();
    let mut t = task_on(&mut s, "t2", 2, TaskState::Running, 10_000);
    std::sync::Arc::make_mut(&mut t.spec).force_new_volume = 1;
    s.tasks.insert(t.id.clone(), t);
    record(&mut s, 20_000);
    let h = home_of(&s).unwrap();
    assert_eq!((h.node, h.generation), (NodeId(2), 1));
    assert!(h.stale.is_empty(), "the old copy may be all there is");
}

#[test]
fn placement_prefers_the_home_waits_while_it_is_down_unless_forced() {
    let mut s = state(false);
    let t = task_on(&mut s, "t1", 1, TaskState::Running, 1_000);
    // No home yet: anywhere.
    assert_eq!(placement(&s, &t), Placement::Anywhere);
    record(&mut s, 1_000);
    let mut new = fixtures::task("t2", &svc(&s), 1);
    new.spec = svc(&s).spec.task.clone().into();
    assert_eq!(placement(&s, &new), Placement::Prefer(NodeId(1)));
    // Drained is still up: the data can be copied from it.
    s.nodes.get_mut(&NodeId(1)).unwrap().availability = Availability::Drain;
    assert_eq!(placement(&s, &new), Placement::Prefer(NodeId(1)));
    assert_eq!(copy_source(&s, &new, NodeId(2)), Some(NodeId(1)));
    assert_eq!(copy_source(&s, &new, NodeId(1)), None, "at home: no copy");
    // Down: wait, saying where the data is.
    s.nodes.get_mut(&NodeId(1)).unwrap().status = NodeStatus::Down;
    match placement(&s, &new) {
        Placement::Wait(why) => assert!(
            why.starts_with("volume pgdata is on host1, which is down"),
            "{why}"
        ),
        p => panic!("{p:?}"),
    }
    assert_eq!(copy_source(&s, &new, NodeId(2)), None);
    // --force-new-volume: anywhere, empty.
    std::sync::Arc::make_mut(&mut new.spec).force_new_volume = 1;
    assert_eq!(placement(&s, &new), Placement::Anywhere);
}

#[test]
fn a_removed_service_takes_its_homes_with_it() {
    let mut s = state(false);
    task_on(&mut s, "t1", 1, TaskState::Running, 1_000);
    record(&mut s, 1_000);
    let id = svc(&s).id;
    let (_, keys) = s.apply(&crate::store::Command::RemoveService { id: id.clone() });
    assert!(keys.contains(&home_key(&id, 1)), "{keys:?}");
    assert!(s.volume_homes.is_empty());
    // A home for a service that is gone is not recorded.
    let h = VolumeHome {
        service_id: id,
        slot: 1,
        node: NodeId(1),
        task: TaskId("t1".into()),
        generation: 0,
        stale: vec![],
        since_ms: 0,
    };
    let (_, keys) = s.set_volume_homes(&[h]);
    assert!(keys.is_empty());
}

#[test]
fn homes_survive_the_sm_tree_and_a_snapshot() {
    let mut s = state(false);
    task_on(&mut s, "t1", 1, TaskState::Running, 1_000);
    record(&mut s, 1_000);
    let key = home_key(&svc(&s).id, 1);
    assert!(s.keys().contains(&key));
    let value = s.value_of(&key).expect("a value");
    let mut back = State::default();
    back.load(&key, &value).unwrap();
    assert_eq!(back.volume_homes, s.volume_homes);
    let pb: crate::proto::State = s.clone().into();
    let again: State = pb.try_into().unwrap();
    assert_eq!(again.volume_homes, s.volume_homes);
}

#[test]
fn the_policy_is_read_and_applied_to_named_local_volumes_only() {
    assert_eq!(
        "follow".parse::<MountPolicy>().unwrap(),
        MountPolicy {
            follow: true,
            keep: false
        }
    );
    assert!("follow,keep".parse::<MountPolicy>().unwrap().keep);
    let e = "folow".parse::<MountPolicy>().unwrap_err().to_string();
    assert!(e.contains("--mount-policy") && e.contains("folow"), "{e}");
    let mut mounts = vec![
        volume("pgdata", false, false),
        Mount {
            kind: MountKind::Bind,
            source: "/srv".into(),
            ..volume("x", false, false)
        },
        Mount {
            driver: "nfs".into(),
            ..volume("shared", false, false)
        },
    ];
    apply_policy(&mut mounts, "follow".parse().unwrap(), "--mount-policy").unwrap();
    assert_eq!(
        mounts.iter().map(|m| m.follow).collect::<Vec<_>>(),
        vec![true, false, false]
    );
    let mut none = vec![mounts[1].clone()];
    let e = apply_policy(&mut none, "follow".parse().unwrap(), "--mount-policy")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no named volume"), "{e}");
}

#[test]
fn a_spec_that_cannot_follow_is_refused_with_its_field() {
    let s = state(false);
    let mut spec = svc(&s).spec;
    spec.task.container.image = "db:1".into();
    check_spec(&spec, "f").unwrap();
    spec.validate().unwrap();
    let mut global = spec.clone();
    global.mode = ServiceMode::Global;
    assert!(check_spec(&global, "f")
        .unwrap_err()
        .to_string()
        .contains("replicated"));
    let mut start_first = spec.clone();
    start_first.update.order = UpdateOrder::StartFirst;
    let e = start_first.validate().unwrap_err().to_string();
    assert!(e.contains("stop-first"), "{e}");
    let mut template = spec.clone();
    template.task.container.mounts[0].source = "data-{{.Task.Slot}}".into();
    assert!(check_spec(&template, "f")
        .unwrap_err()
        .to_string()
        .contains("template"));
    // follow on a bind mount, through the API.
    spec.task.container.mounts[0].kind = MountKind::Bind;
    spec.task.container.mounts[0].source = "/srv".into();
    let e = spec.validate().unwrap_err().to_string();
    assert!(e.contains("only a named volume"), "{e}");
}
