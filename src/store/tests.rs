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

fn cluster() -> Cluster {
    Cluster {
        id: "c1".into(),
        ca_cert_pem: "cert".into(),
        ca_key_pem: "key".into(),
        worker_secret: "w".into(),
        manager_secret: "m".into(),
        settings: Settings::default(),
        created_ms: 1,
    }
}

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
