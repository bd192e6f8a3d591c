use std::collections::BTreeSet;

use super::*;
use crate::store::fixtures::{node, service, task};
use crate::store::service::{ServiceMode, UpdateState};
use crate::store::*;

/// Applies `cmd` to `s` and derives its events, as the state machine does.
fn step(s: &mut State, cmd: Command) -> Vec<EventBody> {
    let before = Before::capture(s, &cmd);
    let (r, keys) = s.apply(&cmd);
    derive(&before, s, &cmd, &r, &keys)
}

/// `type action` of each event.
fn kinds(events: &[EventBody]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{} {}", e.kind, e.action))
        .collect()
}

#[test]
fn a_service_s_life_gives_create_scale_update_remove() {
    let mut s = State::default();
    let web = service("web", 1);
    let e = step(
        &mut s,
        Command::CreateService {
            service: web.clone(),
        },
    );
    assert_eq!(kinds(&e), ["service create"]);
    assert_eq!(e[0].name, "web");
    assert_eq!(e[0].attributes["replicas"], "1");

    let mut scaled = s.services[&web.id].clone();
    scaled.spec.mode = ServiceMode::Replicated { replicas: 3 };
    scaled.version = 2;
    let e = step(&mut s, Command::UpdateService { service: scaled });
    assert_eq!(kinds(&e), ["service scale"]);
    assert_eq!(e[0].attributes["replicas"], "3");
    assert_eq!(e[0].attributes["previous"], "1");

    let mut changed = s.services[&web.id].clone();
    changed.previous_spec = Some(changed.spec.clone());
    changed.spec.task.container.image = "web:2".into();
    changed.version = 3;
    let e = step(&mut s, Command::UpdateService { service: changed });
    assert_eq!(kinds(&e), ["service update", "update start"]);

    // Wrapped in a request made once: the same events; its duplicate: none.
    let once = |cmd: Command| Command::Once {
        request: RequestId("r1".into()),
        now_ms: 1,
        reply: None,
        cmd: Box::new(cmd),
    };
    let e = step(&mut s, once(Command::RemoveService { id: web.id.clone() }));
    assert_eq!(kinds(&e), ["service remove"]);
    let e = step(&mut s, once(Command::RemoveService { id: web.id.clone() }));
    assert!(e.is_empty(), "{e:?}");
}

#[test]
fn a_rejected_command_gives_no_event() {
    let mut s = State::default();
    let e = step(
        &mut s,
        Command::RemoveService {
            id: ServiceId("nope".into()),
        },
    );
    assert!(e.is_empty(), "{e:?}");
}

#[test]
fn task_states_give_one_event_each_and_a_failure_carries_its_error() {
    let mut s = State::default();
    let web = service("web", 1);
    step(
        &mut s,
        Command::CreateService {
            service: web.clone(),
        },
    );
    step(&mut s, Command::AddNode { node: node(7) });
    let e = step(
        &mut s,
        Command::CreateTasks {
            tasks: vec![task("t1", &web, 1)],
        },
    );
    assert_eq!(kinds(&e), ["task create"]);
    assert_eq!(e[0].name, "web.1");
    assert_eq!(e[0].attributes["service"], "web");

    let e = step(
        &mut s,
        Command::AssignTasks {
            assign: vec![(TaskId("t1".into()), NodeId(7))],
            pending: vec![],
            now_ms: 1,
        },
    );
    assert_eq!(kinds(&e), ["task assigned"]);
    assert_eq!(e[0].attributes["node"], NodeId(7).to_string());

    let running = TaskStatus::new(TaskState::Running, "started", 2);
    let e = step(
        &mut s,
        Command::UpdateTaskStatus {
            updates: vec![(TaskId("t1".into()), running.clone())],
        },
    );
    assert_eq!(kinds(&e), ["task running"]);
    // The same status again changes nothing, so says nothing.
    let e = step(
        &mut s,
        Command::UpdateTaskStatus {
            updates: vec![(TaskId("t1".into()), running)],
        },
    );
    assert!(e.is_empty(), "{e:?}");

    let mut failed = TaskStatus::new(TaskState::Failed, "exited", 3);
    failed.err = "task: non-zero exit (137)".into();
    failed.exit_code = Some(137);
    let e = step(
        &mut s,
        Command::UpdateTaskStatus {
            updates: vec![(TaskId("t1".into()), failed)],
        },
    );
    assert_eq!(kinds(&e), ["task failed"]);
    assert_eq!(e[0].attributes["error"], "task: non-zero exit (137)");
    assert_eq!(e[0].attributes["exit_code"], "137");
    assert_eq!(e[0].attributes["previous"], "running");

    let e = step(
        &mut s,
        Command::SetTaskDesired {
            updates: vec![(TaskId("t1".into()), TaskState::Shutdown)],
        },
    );
    assert_eq!(kinds(&e), ["task desired"]);
    let e = step(
        &mut s,
        Command::DeleteTasks {
            ids: vec![TaskId("t1".into())],
        },
    );
    assert_eq!(kinds(&e), ["task remove"]);
}

#[test]
fn node_changes_each_give_their_event() {
    let mut s = State::default();
    let e = step(&mut s, Command::AddNode { node: node(2) });
    assert_eq!(kinds(&e), ["node create"]);
    assert_eq!(e[0].name, "host2");
    let e = step(
        &mut s,
        Command::UpdateNodeStatus {
            id: NodeId(2),
            status: NodeStatus::Ready,
            description: None,
            addr: None,
            now_ms: 5,
        },
    );
    assert_eq!(kinds(&e), ["node status"]);
    assert_eq!(e[0].attributes["status"], "ready");
    let e = step(
        &mut s,
        Command::UpdateNodeSpec {
            id: NodeId(2),
            role: Some(Role::Manager),
            availability: Some(Availability::Drain),
            labels_add: [("zone".to_string(), "a".to_string())].into(),
            labels_rm: vec![],
        },
    );
    assert_eq!(kinds(&e), ["node availability", "node role", "node labels"]);
    assert_eq!(e[0].attributes["availability"], "drain");
    assert_eq!(e[2].attributes["labels"], "zone=a");
    let e = step(&mut s, Command::RemoveNode { id: NodeId(2) });
    assert_eq!(kinds(&e), ["node remove"]);
}

#[test]
fn update_progress_and_rollback_give_update_events() {
    let mut s = State::default();
    let web = service("web", 1);
    step(
        &mut s,
        Command::CreateService {
            service: web.clone(),
        },
    );
    let mut changed = s.services[&web.id].clone();
    changed.previous_spec = Some(changed.spec.clone());
    changed.spec.task.container.image = "web:2".into();
    changed.version = 2;
    step(&mut s, Command::UpdateService { service: changed });
    let done = UpdateStatus::new(UpdateState::Completed, 2, 9, "update completed");
    let e = step(
        &mut s,
        Command::SetUpdateStatus {
            updates: vec![(web.id.clone(), 2, done.clone())],
        },
    );
    assert_eq!(kinds(&e), ["update complete"]);
    assert_eq!(e[0].name, "web");
    // Told again: nothing new.
    let e = step(
        &mut s,
        Command::SetUpdateStatus {
            updates: vec![(web.id.clone(), 2, done)],
        },
    );
    assert!(e.is_empty(), "{e:?}");
    let e = step(
        &mut s,
        Command::RollbackService {
            id: web.id.clone(),
            version: 2,
            message: "asked".into(),
            now_ms: 10,
        },
    );
    assert_eq!(kinds(&e), ["service update", "update rollback-start"]);
    let done = UpdateStatus::new(UpdateState::RollbackCompleted, 3, 11, "rolled back");
    let e = step(
        &mut s,
        Command::SetUpdateStatus {
            updates: vec![(web.id.clone(), 3, done)],
        },
    );
    assert_eq!(kinds(&e), ["update rollback-complete"]);
}

#[test]
fn membership_changes_name_each_voter_added_or_removed() {
    let old: BTreeSet<u64> = [1, 2].into();
    let new: BTreeSet<u64> = [1, 3].into();
    let e = membership_events(&old, &new);
    assert_eq!(kinds(&e), ["membership add", "membership remove"]);
    assert_eq!(e[0].id, NodeId(3).to_string());
    assert_eq!(e[1].id, NodeId(2).to_string());
    assert!(membership_events(&old, &old).is_empty());
}

#[test]
fn the_line_form_reads_like_docker_events() {
    let e = EventBody::new("service", "create", "abc123", "web")
        .attr("replicas", "2")
        .at(1_764_842_400_000_000_000);
    assert_eq!(
        e.line(),
        "2025-12-04T10:00:00.000000000Z service create abc123 (name=web, replicas=2)"
    );
    let json = serde_json::to_value(&e).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "action",
            "attributes",
            "id",
            "name",
            "time",
            "time_nano",
            "type"
        ]
    );
}

fn ev(kind: &'static str, action: &str, name: &str) -> Event {
    EventBody::new(kind, action, "0123456789ab", name).at(1)
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn filters_of_one_key_are_alternatives_and_keys_all_must_match() {
    let f = Filters::new(&pairs(&[
        ("type", "service"),
        ("type", "task"),
        ("name", "web"),
    ]))
    .unwrap();
    assert!(f.matches(&ev("service", "create", "web")));
    let t = EventBody::new("task", "running", "t1", "web.1")
        .attr("service", "web")
        .at(1);
    assert!(f.matches(&t), "a task matches its service's name");
    assert!(!f.matches(&ev("service", "create", "db")));
    assert!(!f.matches(&ev("node", "create", "web")));
    let f = Filters::new(&pairs(&[("event", "failed"), ("id", "0123")])).unwrap();
    assert!(f.matches(&ev("task", "failed", "x")));
    assert!(!f.matches(&ev("task", "running", "x")));
    assert!(Filters::default().matches(&ev("leader", "elect", "")));
}

#[test]
fn filters_refuse_unknown_keys_types_and_oversize_with_one_line_naming_them() {
    let e = Filters::new(&pairs(&[("colour", "red")])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--filter: unknown key \"colour\" (expected type, event, name, id, node)"
    );
    let e = Filters::new(&pairs(&[("type", "volume")])).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("--filter type: unknown type \"volume\""),
        "{e}"
    );
    let long = "x".repeat(filter::MAX_VALUE + 1);
    assert!(Filters::new(&[("name".into(), long)]).is_err());
    assert!(Filters::new(&[("name".into(), String::new())]).is_err());
    let many: Vec<(String, String)> = (0..=filter::MAX_FILTERS)
        .map(|i| ("name".to_string(), format!("s{i}")))
        .collect();
    assert!(Filters::new(&many).is_err());
    // The positive control: the most filters of the longest values pass.
    let most: Vec<(String, String)> = (0..filter::MAX_FILTERS)
        .map(|_| ("name".to_string(), "x".repeat(filter::MAX_VALUE)))
        .collect();
    assert!(Filters::new(&most).is_ok());
    assert!(Filters::parse(&["type".into()]).is_err());
    assert_eq!(
        Filters::parse(&["type=node".into()]).unwrap(),
        Filters::new(&pairs(&[("type", "node")])).unwrap()
    );
}

#[test]
fn since_and_until_read_durations_rfc3339_and_unix_seconds() {
    let now = 1_764_842_400_000_000_000;
    assert_eq!(
        parse_time("--since", "10m", now).unwrap(),
        now - 600_000_000_000
    );
    assert_eq!(
        parse_time("--since", "2025-12-04T10:00:00Z", now).unwrap(),
        now
    );
    assert_eq!(
        parse_time("--since", "2025-12-04T10:00:00.5Z", now).unwrap(),
        now + 500_000_000
    );
    assert_eq!(parse_time("--since", "1764842400", now).unwrap(), now);
    assert_eq!(
        parse_time("--until", "1764842400.25", now).unwrap(),
        now + 250_000_000
    );
    for bad in ["", "yesterday", "1.2.3", "10x", "-5m"] {
        let e = parse_time("--since", bad, now).unwrap_err();
        assert!(e.to_string().starts_with("--since: expected"), "{bad}: {e}");
    }
}

#[test]
fn the_ring_is_bounded_and_replays_from_since_then_follows() {
    let hub = Hub::with_capacity(3, 8);
    for i in 1..=5u64 {
        hub.publish_at(
            i * 10,
            [EventBody::new("node", "status", i.to_string(), "")],
        );
    }
    assert_eq!(hub.len(), 3, "the ring keeps the last 3");
    let sub = hub.subscribe(Some(35)).unwrap();
    let ids: Vec<&str> = sub.history.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["4", "5"]);
    assert!(!sub.truncated);
    let sub2 = hub.subscribe(Some(0)).unwrap();
    assert!(sub2.truncated, "events before 30 were dropped");
    let mut live = sub.live;
    hub.publish_at(60, [EventBody::new("node", "status", "6", "")]);
    assert_eq!(live.try_recv().unwrap().id, "6");
    // Times never go back.
    hub.publish_at(1, [EventBody::new("node", "status", "7", "")]);
    assert_eq!(live.try_recv().unwrap().time_nano, 60);
}

#[test]
fn a_slow_subscriber_is_told_it_lagged_and_memory_stays_bounded() {
    let hub = Hub::with_capacity(100, 4);
    let mut sub = hub.subscribe(None).unwrap();
    for i in 0..10u64 {
        hub.publish_at(i, [EventBody::new("node", "status", i.to_string(), "")]);
    }
    assert!(matches!(
        sub.live.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(6))
    ));
    // A subscriber that keeps up gets every event (the positive control).
    let mut fast = hub.subscribe(None).unwrap();
    hub.publish_at(20, [EventBody::new("node", "status", "x", "")]);
    assert_eq!(fast.live.try_recv().unwrap().id, "x");
}

#[test]
fn subscriptions_are_bounded_and_freed_when_dropped() {
    let hub = Hub::default();
    let subs: Vec<_> = (0..MAX_SUBSCRIBERS)
        .map(|_| hub.subscribe(None).unwrap())
        .collect();
    assert!(hub.subscribe(None).is_err());
    drop(subs);
    assert!(hub.subscribe(None).is_ok());
}

#[test]
fn secret_events_name_the_secret_and_never_hold_its_content() {
    let mut s = State::default();
    let sealed = Sealed::from_stored("c0ffee");
    let sec = Secret {
        id: SecretId("s1".into()),
        kind: secret::Kind::Secret,
        name: "db-password".into(),
        labels: Default::default(),
        versions: vec![secret::Version {
            version: 1,
            data: sealed,
            size: 6,
            digest: "d1gest".into(),
            created_ms: 0,
        }],
        created_ms: 0,
        updated_ms: 0,
    };
    let e = step(&mut s, Command::CreateSecret { secret: sec });
    assert_eq!(kinds(&e), ["secret create"]);
    assert_eq!(e[0].name, "db-password");
    let text = format!("{e:?}");
    assert!(
        !text.contains("c0ffee") && !text.contains("d1gest"),
        "{text}"
    );
    let e = step(
        &mut s,
        Command::RemoveSecret {
            kind: secret::Kind::Secret,
            id: SecretId("s1".into()),
        },
    );
    assert_eq!(kinds(&e), ["secret remove"]);
}

#[test]
fn a_following_volume_s_home_is_an_event_of_its_service() {
    let mut s = State::default();
    let db = service("db", 1);
    step(
        &mut s,
        Command::CreateService {
            service: db.clone(),
        },
    );
    let home = volume::VolumeHome {
        service_id: db.id.clone(),
        slot: 1,
        node: NodeId(7),
        task: TaskId("t1".into()),
        generation: 0,
        stale: vec![NodeId(3)],
        since_ms: 5,
    };
    let e = step(
        &mut s,
        Command::SetVolumeHomes {
            homes: vec![home.clone()],
        },
    );
    assert_eq!(kinds(&e), ["service volume-home"]);
    assert_eq!(e[0].name, "db");
    assert_eq!(e[0].attributes["node"], NodeId(7).to_string());
    assert_eq!(e[0].attributes["slot"], "1");
    // A home of a service that is gone says nothing.
    step(&mut s, Command::RemoveService { id: db.id.clone() });
    let e = step(&mut s, Command::SetVolumeHomes { homes: vec![home] });
    assert!(e.is_empty(), "{e:?}");
}

#[test]
fn a_status_or_a_new_service_gives_the_same_events_from_its_narrow_capture() {
    let mut s = State {
        cluster: Some(crate::store::fixtures::cluster()),
        ..Default::default()
    };
    for n in 1..=3 {
        step(&mut s, Command::AddNode { node: node(n) });
    }
    step(
        &mut s,
        Command::CreateService {
            service: service("web", 2),
        },
    );
    let cmds = [
        Command::UpdateNodeStatus {
            id: NodeId(2),
            status: NodeStatus::Ready,
            description: None,
            addr: Some("10.0.0.22:4242".into()),
            now_ms: 5,
        },
        Command::UpdateNodeStatus {
            id: NodeId(2),
            status: NodeStatus::Down,
            description: None,
            addr: None,
            now_ms: 6,
        },
        Command::CreateService {
            service: service("api", 3),
        },
        // Rejected: its name is taken.
        Command::CreateService {
            service: service("web", 1),
        },
    ];
    for cmd in cmds {
        // What every object of the state captured gives, against the narrow capture.
        let wide = Before::everything(&s);
        let narrow = Before::capture(&s, &cmd);
        let (r, keys) = s.apply(&cmd);
        let want = derive(&wide, &s, &cmd, &r, &keys);
        assert_eq!(derive(&narrow, &s, &cmd, &r, &keys), want, "{cmd:?}");
        if r == Response::Ok {
            assert!(!want.is_empty(), "the control makes events: {cmd:?}");
        }
    }
}
