//! Hostile session messages against the worker: assignments and endpoint tables that
//! are arbitrary bytes, valid ones damaged by [`fuzz::Edit`]s, or nested past any
//! stack. [`decode`] must skip what does not decode and keep every assignment that
//! does, in order; an endpoint table that decodes must give routes and DNS names
//! ([`Mesh::apply_endpoints`](crate::mesh::Mesh::apply_endpoints) without the sockets)
//! without a panic.

use proptest::prelude::*;

use super::*;
use crate::agent::executor::TaskNetwork;
use crate::fuzz;
use crate::mesh::dns::Names;
use crate::mesh::table::{Backend, ServiceEndpoint};
use crate::mesh::Endpoints;
use crate::store::service::TaskSpec;
use crate::store::service::{ContainerSpec, EndpointMode, PortConfig, Protocol, PublishMode};
use crate::store::task::HostPort;
use crate::store::vip::VipRange;
use crate::store::{ServiceId, Task, TaskState};

fn assignment(i: u64) -> Assignment {
    let spec = TaskSpec {
        container: ContainerSpec {
            image: "nginx:1.27".into(),
            args: vec!["-g".into(), "daemon off;".into()],
            env: vec!["A=1".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let mut status = TaskStatus::new(TaskState::Assigned, "assigned", 1_000 + i);
    status.ports = vec![HostPort {
        protocol: Protocol::Tcp,
        target: 80,
        host_port: 32768,
    }];
    Assignment {
        task: Task {
            id: TaskId(format!("task{i}")),
            service_id: ServiceId("svc".into()),
            service_name: "web".into(),
            slot: i,
            node_id: Some(NodeId(2)),
            spec_version: 1,
            spec: spec.into(),
            desired_state: TaskState::Running,
            status,
            created_ms: 1_000,
            vip: "10.233.0.7".into(),
            endpoint: None,
        },
        net: TaskNetwork {
            ports: vec![port()],
            expose: vec![9000],
            dns: vec!["10.233.0.1".into()],
            dns_search: vec!["shop.orc.internal".into()],
            dns_options: vec!["ndots:2".into()],
            image_sources: vec![],
            networks: Default::default(),
        },
        image_pin: None,
        files: vec![],
        volume_source: None,
    }
}

fn port() -> PortConfig {
    PortConfig {
        protocol: Protocol::Tcp,
        target: 80,
        published: 8080,
        mode: PublishMode::Ingress,
        proxy_protocol: Default::default(),
    }
}

fn endpoints() -> Endpoints {
    let backend = |i: u8| Backend {
        task_id: format!("task{i}"),
        ip: format!("10.0.0.{i}"),
        ports: vec![HostPort {
            protocol: Protocol::Tcp,
            target: 80,
            host_port: 32768 + u16::from(i),
        }],
        vip: format!("10.233.0.{}", 10 + i),
        addresses: Default::default(),
        data_port: Default::default(),
        node_id: Default::default(),
    };
    Endpoints {
        services: [
            ServiceEndpoint {
                id: "s1".into(),
                name: "shop_web".into(),
                ports: vec![port()],
                backends: vec![backend(1), backend(2)],
                vip: "10.233.0.2".into(),
                stack: "shop".into(),
                endpoint_mode: EndpointMode::Vip,
                networks: Default::default(),
            },
            ServiceEndpoint {
                id: "s2".into(),
                name: "db".into(),
                ports: vec![],
                backends: vec![backend(3)],
                vip: String::new(),
                stack: String::new(),
                endpoint_mode: EndpointMode::Dnsrr,
                networks: Default::default(),
            },
        ]
        .map(std::sync::Arc::new)
        .to_vec(),
        vip_range: "10.233.0.0/16".into(),
        networks: Default::default(),
    }
}

/// The bytes of a message.
fn bytes<M: prost::Message>(m: &M) -> Vec<u8> {
    m.encode_to_vec()
}

/// An assignment's bytes as its message.
fn wire(a: &Assignment) -> Vec<u8> {
    bytes(&proto::Assignment::from(a.clone()))
}

/// What the worker does with an endpoint table's bytes, minus the sockets: decode,
/// convert, route and name.
/// Changes (a partial table) go onto a table held.
fn apply_endpoints(data: &[u8]) {
    let Ok(Some(e)) = crate::mesh::wire::receive_bytes(Some(endpoints()), data) else {
        return;
    };
    let _ = VipRange::parse(&e.vip_range);
    let routes = e.routes(None);
    let ports: usize = e.services.iter().map(|s| s.ports.len()).sum();
    assert!(routes.len() >= ports, "a route per published port");
    let mut names = Names::default();
    for (name, addrs) in e.names() {
        assert_eq!(name, name.to_ascii_lowercase());
        names.insert(&name, addrs);
    }
}

/// The assignment messages of `data` that decode (what a sender could have put in a
/// session message).
fn message_of(data: &[u8]) -> Option<proto::Assignment> {
    use prost::Message;
    proto::Assignment::decode(data).ok()
}

/// An assignment, or one damaged by `edits` (which may leave it valid).
#[derive(Debug, Clone)]
enum Item {
    Valid(u64),
    Damaged(u64, Vec<fuzz::Edit>),
    Bytes(Vec<u8>),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        (0u64..100).prop_map(Item::Valid),
        (0u64..100, fuzz::edits(fuzz::PROTOBUF_BYTES, 6)).prop_map(|(i, e)| Item::Damaged(i, e)),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(Item::Bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn damaged_assignments_are_skipped_and_valid_ones_kept_in_order(
        items in proptest::collection::vec(item(), 0..6),
        full in any::<bool>(),
    ) {
        let msg = proto::SessionMessage {
            full,
            assignments: items
                .iter()
                .filter_map(|it| match it {
                    Item::Valid(i) => message_of(&wire(&assignment(*i))),
                    Item::Damaged(i, e) => message_of(&fuzz::apply(wire(&assignment(*i)), e)),
                    Item::Bytes(b) => message_of(b),
                })
                .collect(),
            ..Default::default()
        };
        let got = decode(&msg);
        prop_assert!(got.len() <= msg.assignments.len());
        let mut rest = got.iter();
        for it in &items {
            if let Item::Valid(i) = it {
                let want = assignment(*i);
                prop_assert!(rest.any(|a| *a == want), "assignment {} kept, in order", i);
            }
        }
    }

    #[test]
    fn arbitrary_endpoint_tables_are_refused_or_routed(
        data in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        apply_endpoints(&data);
    }

    #[test]
    fn damaged_endpoint_tables_are_refused_or_routed(
        edits in fuzz::edits(fuzz::PROTOBUF_BYTES, 8),
    ) {
        apply_endpoints(&fuzz::apply(bytes(&proto::Endpoints::from(endpoints())), &edits));
    }
}

#[test]
fn the_valid_messages_decode() {
    let msg = proto::SessionMessage {
        full: true,
        assignments: vec![assignment(1).into(), assignment(2).into()],
        endpoints: Some(bytes(&proto::Endpoints::from(endpoints())).into()),
        ..Default::default()
    };
    assert_eq!(decode(&msg), vec![assignment(1), assignment(2)]);
    let e = crate::mesh::wire::receive_bytes(None, msg.endpoints.as_ref().expect("sent"))
        .expect("converts")
        .expect("a whole table");
    assert_eq!(e, endpoints());
    assert_eq!(e.routes(None).len(), 1 + 1 + 2 + 1);
}

#[test]
fn deep_nesting_stops_at_the_recursion_limit() {
    // prost refuses groups nested past its limit of 100 levels, in a known field's
    // place or an unknown one's, without using up the stack.
    let valid = wire(&assignment(1));
    for closed in [false, true] {
        let mut data = valid.clone();
        data.extend(fuzz::nested_groups(100_000, closed));
        assert!(message_of(&data).is_none());
        assert!(message_of(&fuzz::nested_groups(100_000, closed)).is_none());
        use prost::Message;
        assert!(proto::Endpoints::decode(fuzz::nested_groups(100_000, closed).as_slice()).is_err());
    }
    // An assignment without its task is skipped, the valid one kept.
    let msg = proto::SessionMessage {
        assignments: vec![proto::Assignment::default(), assignment(1).into()],
        ..Default::default()
    };
    assert_eq!(decode(&msg), vec![assignment(1)]);
}
