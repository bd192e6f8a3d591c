use super::*;

fn node(id: u64, role: Role) -> Node {
    Node::new(
        NodeId(id),
        format!("10.0.0.{id}:4242"),
        role,
        NodeDescription::default(),
        0,
    )
}

use super::fixtures::cluster;

#[test]
fn init_then_persisted_keys_reload_to_the_same_state() {
    let mut s = State::default();
    let (r, keys) = s.apply(&Command::InitCluster {
        cluster: cluster(),
        node: node(1, Role::Manager),
    });
    assert_eq!(r, Response::Ok);
    s.apply(&Command::AddNode {
        node: node(2, Role::Worker),
    });
    let mut reloaded = State::default();
    for k in keys.iter().chain([node_key(NodeId(2))].iter()) {
        reloaded.load(k, &s.value_of(k).unwrap()).unwrap();
    }
    assert_eq!(reloaded, s);
}

#[test]
fn second_init_is_rejected_and_changes_nothing() {
    let mut s = State::default();
    s.apply(&Command::InitCluster {
        cluster: cluster(),
        node: node(1, Role::Manager),
    });
    let before = s.clone();
    let (r, keys) = s.apply(&Command::InitCluster {
        cluster: cluster(),
        node: node(9, Role::Manager),
    });
    assert!(matches!(r, Response::Rejected(_)));
    assert!(keys.is_empty());
    assert_eq!(s, before);
}

#[test]
fn spec_and_status_updates_touch_only_their_own_fields() {
    let mut s = State::default();
    s.apply(&Command::AddNode {
        node: node(2, Role::Worker),
    });
    s.apply(&Command::UpdateNodeStatus {
        id: NodeId(2),
        status: NodeStatus::Ready,
        description: None,
        addr: None,
        now_ms: 50,
    });
    s.apply(&Command::UpdateNodeSpec {
        id: NodeId(2),
        role: None,
        availability: Some(Availability::Drain),
        labels_add: [("zone".to_string(), "a".to_string())].into(),
        labels_rm: vec![],
    });
    let n = &s.nodes[&NodeId(2)];
    assert_eq!(n.status, NodeStatus::Ready);
    assert_eq!(n.status_changed_ms, 50);
    assert_eq!(n.availability, Availability::Drain);
    assert_eq!(n.labels["zone"], "a");
    let (r, _) = s.apply(&Command::UpdateNodeSpec {
        id: NodeId(7),
        role: Some(Role::Manager),
        availability: None,
        labels_add: BTreeMap::new(),
        labels_rm: vec![],
    });
    assert!(matches!(r, Response::Rejected(_)));
}

#[test]
fn find_node_by_prefix_and_hostname() {
    let mut s = State::default();
    let mut a = node(0xabc1, Role::Worker);
    a.description.hostname = "alpha".into();
    s.apply(&Command::AddNode { node: a });
    s.apply(&Command::AddNode {
        node: node(0xabc2, Role::Worker),
    });
    assert_eq!(s.find_node("alpha").unwrap().id, NodeId(0xabc1));
    assert_eq!(
        s.find_node(&NodeId(0xabc2).to_string()).unwrap().id,
        NodeId(0xabc2)
    );
    assert!(matches!(s.find_node("0000"), Err(Error::InvalidInput(_))));
    assert!(matches!(s.find_node("zzz"), Err(Error::NotFound(_))));
}

#[test]
fn services_and_tasks_get_distinct_virtual_ips_that_survive_updates_and_reloads() {
    let mut s = State::default();
    s.apply(&Command::InitCluster {
        cluster: cluster(),
        node: node(1, Role::Manager),
    });
    let spec = |name: &str| ServiceSpec {
        name: name.into(),
        labels: Default::default(),
        mode: service::ServiceMode::Replicated { replicas: 2 },
        task: Default::default(),
        ports: vec![],
        expose: vec![],
        update: Default::default(),
        rollback: Default::default(),
        depends_on: vec![],
        endpoint_mode: Default::default(),
        networks: Default::default(),
    };
    let svc = |id: &str, name: &str| Service {
        id: ServiceId(id.into()),
        spec: spec(name),
        previous_spec: None,
        version: 1,
        created_ms: 0,
        updated_ms: 0,
        // Whatever the proposer says, the VIP is the state machine's choice.
        vip: "1.2.3.4".into(),
    };
    let (_, keys) = s.apply(&Command::CreateService {
        service: svc("a", "web"),
    });
    assert!(keys.contains(&CLUSTER_KEY.to_string()), "{keys:?}");
    s.apply(&Command::CreateService {
        service: svc("b", "db"),
    });
    let task = |id: &str| Task {
        id: TaskId(id.into()),
        service_id: ServiceId("a".into()),
        service_name: "web".into(),
        slot: 1,
        node_id: None,
        spec_version: 1,
        spec: Default::default(),
        desired_state: TaskState::Running,
        status: TaskStatus::new(TaskState::Pending, "", 0),
        created_ms: 0,
        vip: String::new(),
        endpoint: None,
    };
    let (_, keys) = s.apply(&Command::CreateTasks {
        tasks: vec![task("t1"), task("t2")],
    });
    let vips: Vec<String> = [
        &s.services[&ServiceId("a".into())].vip,
        &s.services[&ServiceId("b".into())].vip,
        &s.tasks[&TaskId("t1".into())].vip,
        &s.tasks[&TaskId("t2".into())].vip,
    ]
    .iter()
    .map(|v| v.to_string())
    .collect();
    assert_eq!(
        vips,
        ["10.233.0.2", "10.233.0.3", "10.233.0.4", "10.233.0.5"]
    );
    // An update keeps the VIP whatever the new copy carries.
    let mut updated = s.services[&ServiceId("a".into())].clone();
    updated.version = 2;
    updated.vip = String::new();
    s.apply(&Command::UpdateService { service: updated });
    assert_eq!(s.services[&ServiceId("a".into())].vip, "10.233.0.2");
    // A freed address is not reused at once.
    s.apply(&Command::DeleteTasks {
        ids: vec![TaskId("t1".into())],
    });
    s.apply(&Command::CreateTasks {
        tasks: vec![task("t3")],
    });
    assert_eq!(s.tasks[&TaskId("t3".into())].vip, "10.233.0.6");
    // The cursor is persisted with the cluster: a reload allocates the same next one.
    let mut reloaded = State::default();
    for k in [CLUSTER_KEY.to_string(), node_key(NodeId(1))]
        .into_iter()
        .chain(keys)
        .chain(["service/a".into(), "service/b".into(), "task/t3".into()])
    {
        if let Some(v) = s.value_of(&k) {
            reloaded.load(&k, &v).unwrap();
        }
    }
    assert_eq!(reloaded, s);
}

/// A full VIP range: the tasks past it are made without an address (counted in the
/// metrics), and an address freed is taken by the next task (the range is known full
/// from counts, not kept full).
#[test]
fn tasks_past_a_full_vip_range_have_none_and_are_counted_until_one_is_freed() {
    let mut s = State::default();
    let mut c = cluster();
    c.settings.vip_range = "10.9.0.0/28".into(); // 13 addresses
    s.apply(&Command::InitCluster {
        cluster: c,
        node: node(1, Role::Manager),
    });
    let svc = crate::store::fixtures::service("web", 15);
    s.apply(&Command::CreateService {
        service: svc.clone(),
    });
    let task = |i: u64| crate::store::fixtures::task(&format!("t{i:02}"), &svc, i);
    s.apply(&Command::CreateTasks {
        tasks: (1..=15).map(task).collect(),
    });
    let held: Vec<&str> = s.tasks.values().map(|t| t.vip.as_str()).collect();
    // Positive control: the first 12 tasks (after the service's one) have addresses,
    // each its own and in the range.
    let with: std::collections::BTreeSet<&str> =
        held.iter().copied().filter(|v| !v.is_empty()).collect();
    assert_eq!(with.len(), 12, "{held:?}");
    assert!(with.iter().all(|v| v.starts_with("10.9.0.")), "{with:?}");
    assert_eq!(held[12..], ["", "", ""]);
    let counts = crate::metrics::state::count(&s);
    assert_eq!((counts.vips_free, counts.without_vip), (0, 3));
    // Two addresses freed: the next two tasks take them.
    s.apply(&Command::DeleteTasks {
        ids: vec![TaskId("t01".into()), TaskId("t02".into())],
    });
    assert_eq!(crate::metrics::state::count(&s).vips_free, 2);
    s.apply(&Command::CreateTasks {
        tasks: vec![task(16), task(17), task(18)],
    });
    let vip = |i: u64| s.tasks[&TaskId(format!("t{i:02}"))].vip.clone();
    assert!(!vip(16).is_empty() && !vip(17).is_empty() && vip(16) != vip(17));
    assert_eq!(vip(18), "");
    let counts = crate::metrics::state::count(&s);
    assert_eq!((counts.vips_free, counts.without_vip), (0, 4));
}

#[test]
fn the_first_started_task_pins_the_image_and_an_image_change_clears_it() {
    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let mut s = State::default();
    s.apply(&Command::InitCluster {
        cluster: cluster(),
        node: node(1, Role::Manager),
    });
    let mut spec = ServiceSpec {
        name: "web".into(),
        labels: Default::default(),
        mode: service::ServiceMode::Replicated { replicas: 2 },
        task: Default::default(),
        ports: vec![],
        expose: vec![],
        update: Default::default(),
        rollback: Default::default(),
        depends_on: vec![],
        endpoint_mode: Default::default(),
        networks: Default::default(),
    };
    spec.task.container.image = "app:1".into();
    let mut svc = Service {
        id: ServiceId("a".into()),
        spec,
        previous_spec: None,
        version: 1,
        created_ms: 0,
        updated_ms: 0,
        vip: String::new(),
    };
    s.apply(&Command::CreateService {
        service: svc.clone(),
    });
    let task = |id: &str, image: &str| {
        let mut t = Task {
            id: TaskId(id.into()),
            service_id: ServiceId("a".into()),
            service_name: "web".into(),
            slot: 1,
            node_id: Some(NodeId(1)),
            spec_version: 1,
            spec: Default::default(),
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Assigned, "", 0),
            created_ms: 0,
            vip: String::new(),
            endpoint: None,
        };
        std::sync::Arc::make_mut(&mut t.spec).container.image = image.into();
        t
    };
    s.apply(&Command::CreateTasks {
        tasks: vec![task("t1", "app:1"), task("t2", "app:1")],
    });
    let report = |state: TaskState, id: &str| {
        let mut st = TaskStatus::new(state, "", 5);
        st.image_id = id.into();
        st
    };
    let sid = ServiceId("a".into());

    // Preparing: no pin yet.
    s.apply(&Command::UpdateTaskStatus {
        updates: vec![(TaskId("t1".into()), report(TaskState::Preparing, ""))],
    });
    assert!(s.image_pins.is_empty());
    // Started: pinned, and the pin is persisted under its key.
    let (_, keys) = s.apply(&Command::UpdateTaskStatus {
        updates: vec![(TaskId("t1".into()), report(TaskState::Starting, A))],
    });
    assert!(keys.contains(&pin_key(&sid)), "{keys:?}");
    assert_eq!(s.image_pins[&sid].id, A);
    assert_eq!(
        s.pin_for(&s.tasks[&TaskId("t1".into())]).map(|p| &p.id),
        Some(&A.to_string())
    );
    // A second task reporting other content does not move it.
    s.apply(&Command::UpdateTaskStatus {
        updates: vec![(TaskId("t2".into()), report(TaskState::Running, B))],
    });
    assert_eq!(s.image_pins[&sid].id, A);
    let mut reloaded = State::default();
    for k in s.keys() {
        if let Some(v) = s.value_of(&k) {
            reloaded.load(&k, &v).unwrap();
        }
    }
    assert_eq!(reloaded, s);

    // An update that keeps the image keeps the pin.
    svc.version = 2;
    svc.spec.labels.insert("x".into(), "y".into());
    s.apply(&Command::UpdateService {
        service: svc.clone(),
    });
    assert_eq!(s.image_pins[&sid].id, A);
    // A new image clears it; the old tasks have no pin any more.
    svc.version = 3;
    svc.spec.task.container.image = "app:2".into();
    let (_, keys) = s.apply(&Command::UpdateService {
        service: svc.clone(),
    });
    assert!(
        keys.contains(&pin_key(&sid)) && s.image_pins.is_empty(),
        "{keys:?}"
    );
    assert!(s.pin_for(&s.tasks[&TaskId("t1".into())]).is_none());
    // An old task's report does not pin the new image.
    s.apply(&Command::UpdateTaskStatus {
        updates: vec![(TaskId("t2".into()), report(TaskState::Complete, B))],
    });
    assert!(s.image_pins.is_empty());
    // The new image is pinned by its first task; removing the service drops the pin.
    s.apply(&Command::CreateTasks {
        tasks: vec![task("t3", "app:2")],
    });
    s.apply(&Command::UpdateTaskStatus {
        updates: vec![(TaskId("t3".into()), report(TaskState::Running, B))],
    });
    assert_eq!(s.image_pins[&sid].image, "app:2");
    assert_eq!(s.image_pins[&sid].id, B);
    let (_, keys) = s.apply(&Command::RemoveService { id: sid.clone() });
    assert!(keys.contains(&pin_key(&sid)) && s.image_pins.is_empty());
}

#[test]
fn a_task_carries_its_endpoint_and_an_old_task_derives_it_as_before() {
    use service::{PortConfig, Protocol, PublishMode};
    let port = |published: u16| PortConfig {
        protocol: Protocol::Tcp,
        target: 80,
        published,
        mode: PublishMode::Host,
        proxy_protocol: Default::default(),
    };
    let spec = |published: u16| ServiceSpec {
        name: "web".into(),
        labels: Default::default(),
        mode: service::ServiceMode::Replicated { replicas: 1 },
        task: Default::default(),
        ports: vec![port(published)],
        expose: vec![9000],
        update: Default::default(),
        rollback: Default::default(),
        depends_on: vec![],
        endpoint_mode: Default::default(),
        networks: Default::default(),
    };
    // Version 2 moved the port from 8080 to 8081.
    let svc = Service {
        id: ServiceId("a".into()),
        spec: spec(8081),
        previous_spec: Some(spec(8080)),
        version: 2,
        created_ms: 0,
        updated_ms: 0,
        vip: String::new(),
    };
    let old = Task {
        id: TaskId("t1".into()),
        service_id: svc.id.clone(),
        service_name: "web".into(),
        slot: 1,
        node_id: None,
        spec_version: 1,
        spec: Default::default(),
        desired_state: TaskState::Running,
        status: TaskStatus::new(TaskState::Running, "", 0),
        created_ms: 0,
        vip: String::new(),
        endpoint: None,
    };
    // A task stored before tasks carried their endpoint loads without one...
    let mut json: serde_json::Value = serde_json::to_value(&old).unwrap();
    json.as_object_mut().unwrap().remove("endpoint");
    let loaded: Task = serde_json::from_value(json).unwrap();
    assert_eq!(loaded.endpoint, None);
    // ...and reads the one of the spec it was made from: the previous one.
    assert_eq!(loaded.endpoint(Some(&svc)).ports, vec![port(8080)]);
    assert_eq!(loaded.endpoint(Some(&svc)).expose, vec![9000]);
    let current = Task {
        spec_version: 2,
        ..loaded.clone()
    };
    assert_eq!(current.endpoint(Some(&svc)).ports, vec![port(8081)]);
    // A task with its own endpoint reads it, whatever the service says now.
    let own = Task {
        endpoint: Some(TaskEndpoint::of(&Service {
            spec: spec(7000),
            ..svc.clone()
        })),
        ..loaded
    };
    assert_eq!(own.endpoint(Some(&svc)).ports, vec![port(7000)]);
    assert_eq!(own.endpoint(None).ports, vec![port(7000)]);
}

fn network(id: &str, name: &str) -> Network {
    Network {
        id: NetworkId(id.into()),
        spec: NetworkSpec {
            name: name.into(),
            ..Default::default()
        },
        created_ms: 1,
    }
}

/// A service `name` (id `name` too) on the networks `on` (ids).
fn service_on(name: &str, on: &[&str]) -> Service {
    let mut s = super::fixtures::service(name, 1);
    s.id = ServiceId(name.into());
    s.spec.networks = on
        .iter()
        .map(|n| NetworkAttachment::to(NetworkId(n.to_string())))
        .collect();
    s
}

/// Applies `cmd` and checks it is refused, changing nothing; gives the reason.
fn refused(s: &mut State, cmd: Command) -> String {
    let before = s.clone();
    let (r, keys) = s.apply(&cmd);
    assert!(keys.is_empty(), "{keys:?}");
    assert_eq!(*s, before, "a refused command changes nothing");
    match r {
        Response::Rejected(why) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_network_is_created_once_by_name_and_id_and_reloads_from_its_key() {
    let mut s = State::default();
    let (r, keys) = s.apply(&Command::CreateNetwork {
        network: network("00000000000000a1", "front"),
    });
    assert_eq!(r, Response::Ok);
    assert_eq!(keys, [network_key(&NetworkId("00000000000000a1".into()))]);
    let mut reloaded = State::default();
    reloaded
        .load(&keys[0], &s.value_of(&keys[0]).unwrap())
        .unwrap();
    assert_eq!(reloaded, s);
    let why = refused(
        &mut s,
        Command::CreateNetwork {
            network: network("00000000000000a2", "front"),
        },
    );
    assert_eq!(why, "network front already exists");
    let why = refused(
        &mut s,
        Command::CreateNetwork {
            network: network("00000000000000a1", "back"),
        },
    );
    assert!(why.contains("id 00000000000000a1 is taken"), "{why}");
    let why = refused(
        &mut s,
        Command::CreateNetwork {
            network: network("default", "other"),
        },
    );
    assert!(why.contains("built-in"), "{why}");
    assert_eq!(
        s.apply(&Command::CreateNetwork {
            network: network("00000000000000a2", "back"),
        })
        .0,
        Response::Ok
    );
    assert_eq!(s.network_named("back").unwrap().id.0, "00000000000000a2");
}

#[test]
fn the_cluster_holds_at_most_max_networks() {
    let mut s = State::default();
    for i in 0..network::MAX_NETWORKS {
        let (r, _) = s.apply(&Command::CreateNetwork {
            network: network(&format!("{i:016x}"), &format!("n{i}")),
        });
        assert_eq!(r, Response::Ok, "network {i}");
    }
    let why = refused(
        &mut s,
        Command::CreateNetwork {
            network: network("ffffffffffffffff", "one-more"),
        },
    );
    assert!(why.contains("the most it may"), "{why}");
}

#[test]
fn a_network_in_use_stays_and_a_service_cannot_name_a_missing_network() {
    let mut s = State::default();
    s.apply(&Command::CreateNetwork {
        network: network("00000000000000a1", "front"),
    });
    s.apply(&Command::CreateNetwork {
        network: network("00000000000000a2", "spare"),
    });
    // A service naming a network that is not there (a `network rm` that won the race):
    // refused in apply.
    let why = refused(
        &mut s,
        Command::CreateService {
            service: service_on("ghost", &["00000000000000ff"]),
        },
    );
    assert!(
        why.contains("networks: network 00000000000000ff not found"),
        "{why}"
    );
    for name in ["web", "api"] {
        let (r, _) = s.apply(&Command::CreateService {
            service: service_on(name, &["00000000000000a1", "default"]),
        });
        assert_eq!(r, Response::Ok);
    }
    let mut moved = service_on("api", &["00000000000000ff"]);
    moved.version = 2;
    let why = refused(&mut s, Command::UpdateService { service: moved });
    assert!(why.contains("not found"), "{why}");
    // In use: refused naming the services.
    let why = refused(
        &mut s,
        Command::RemoveNetwork {
            id: NetworkId("00000000000000a1".into()),
        },
    );
    assert_eq!(why, "network front is in use by services api, web");
    let why = refused(
        &mut s,
        Command::RemoveNetwork {
            id: NetworkId::default_network(),
        },
    );
    assert!(why.contains("built-in"), "{why}");
    // Unused: removed, with its key.
    let (r, keys) = s.apply(&Command::RemoveNetwork {
        id: NetworkId("00000000000000a2".into()),
    });
    assert_eq!(r, Response::Ok);
    assert_eq!(keys, ["network/00000000000000a2"]);
    assert!(s.value_of(&keys[0]).is_none());
    // Once its services are gone, the first goes too.
    s.apply(&Command::RemoveService {
        id: ServiceId("web".into()),
    });
    s.apply(&Command::RemoveService {
        id: ServiceId("api".into()),
    });
    let (r, _) = s.apply(&Command::RemoveNetwork {
        id: NetworkId("00000000000000a1".into()),
    });
    assert_eq!(r, Response::Ok);
    assert!(s.networks.is_empty());
}

#[test]
fn a_stack_entry_creates_its_networks_first_and_removes_them_last_or_changes_nothing() {
    let mut s = State::default();
    let deploy = Command::DeployStack {
        create: vec![service_on("shop_web", &["00000000000000a1"])],
        update: vec![],
        remove: vec![],
        create_networks: vec![network("00000000000000a1", "shop_default")],
        remove_networks: vec![],
        create_secrets: vec![],
        update_secrets: vec![],
        remove_secrets: vec![],
    };
    assert_eq!(s.apply(&deploy).0, Response::Ok);
    assert_eq!(
        s.services_on(&NetworkId("00000000000000a1".into())),
        ["shop_web"]
    );
    // Removing the network while a service stays on it: refused whole.
    let why = refused(
        &mut s,
        Command::DeployStack {
            create: vec![],
            update: vec![],
            remove: vec![],
            create_networks: vec![],
            remove_networks: vec![NetworkId("00000000000000a1".into())],
            create_secrets: vec![],
            update_secrets: vec![],
            remove_secrets: vec![],
        },
    );
    assert_eq!(why, "network shop_default is in use by service shop_web");
    // A new service on a network neither stored nor created in the entry: refused.
    let why = refused(
        &mut s,
        Command::DeployStack {
            create: vec![service_on("shop_db", &["00000000000000b2"])],
            update: vec![],
            remove: vec![],
            create_networks: vec![network("00000000000000a3", "shop_x")],
            remove_networks: vec![],
            create_secrets: vec![],
            update_secrets: vec![],
            remove_secrets: vec![],
        },
    );
    assert!(why.contains("not found"), "{why}");
    // The same network twice in one entry: refused.
    let why = refused(
        &mut s,
        Command::DeployStack {
            create: vec![],
            update: vec![],
            remove: vec![],
            create_networks: vec![
                network("00000000000000b1", "shop_back"),
                network("00000000000000b2", "shop_back"),
            ],
            remove_networks: vec![],
            create_secrets: vec![],
            update_secrets: vec![],
            remove_secrets: vec![],
        },
    );
    assert_eq!(why, "network shop_back already exists");
    // `stack rm`: the services, then their network, in one entry.
    let (r, keys) = s.apply(&Command::DeployStack {
        create: vec![],
        update: vec![],
        remove: vec![ServiceId("shop_web".into())],
        create_networks: vec![],
        remove_networks: vec![NetworkId("00000000000000a1".into())],
        create_secrets: vec![],
        update_secrets: vec![],
        remove_secrets: vec![],
    });
    assert_eq!(r, Response::Ok);
    assert!(
        keys.contains(&"network/00000000000000a1".to_string()),
        "{keys:?}"
    );
    assert!(s.services.is_empty() && s.networks.is_empty());
}

#[test]
fn a_network_a_previous_spec_names_stays_so_that_a_rollback_finds_it() {
    let mut s = State::default();
    for (id, name) in [("00000000000000a1", "old"), ("00000000000000a2", "new")] {
        s.apply(&Command::CreateNetwork {
            network: network(id, name),
        });
    }
    s.apply(&Command::CreateService {
        service: service_on("api", &["00000000000000a1"]),
    });
    let mut moved = s.services[&ServiceId("api".into())].clone();
    moved.previous_spec = Some(moved.spec.clone());
    moved.spec = service_on("api", &["00000000000000a2"]).spec;
    moved.version = 2;
    assert_eq!(
        s.apply(&Command::UpdateService { service: moved }).0,
        Response::Ok
    );
    let why = refused(
        &mut s,
        Command::RemoveNetwork {
            id: NetworkId("00000000000000a1".into()),
        },
    );
    assert_eq!(
        why,
        "network old is in use by service api (its previous spec, for a rollback)"
    );
    // The rollback finds its network.
    let (r, _) = s.apply(&Command::RollbackService {
        id: ServiceId("api".into()),
        version: 2,
        message: "test".into(),
        now_ms: 1,
    });
    assert_eq!(r, Response::Ok);
    assert_eq!(
        s.services_on(&NetworkId("00000000000000a1".into())),
        ["api"]
    );
}

mod secrets;
