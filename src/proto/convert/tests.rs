//! Store → wire → store is the identity, for arbitrary values; and what cannot be a
//! value is refused with the field named.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;

use super::*;

pub(super) fn text() -> impl Strategy<Value = String> {
    "[a-z0-9=./ -]{0,8}"
}

fn words() -> impl Strategy<Value = Vec<String>> {
    vec(text(), 0..3)
}

pub(super) fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map(text(), text(), 0..3)
}

fn mode() -> impl Strategy<Value = ServiceMode> {
    prop_oneof![
        any::<u64>().prop_map(|replicas| ServiceMode::Replicated { replicas }),
        Just(ServiceMode::Global),
        (any::<u64>(), any::<u64>()).prop_map(|(m, t)| ServiceMode::ReplicatedJob {
            max_concurrent: m,
            total_completions: t
        }),
        Just(ServiceMode::GlobalJob),
    ]
}

fn mount() -> impl Strategy<Value = Mount> {
    (
        prop_oneof![
            Just(MountKind::Bind),
            Just(MountKind::Volume),
            Just(MountKind::Tmpfs)
        ],
        text(),
        text(),
        any::<bool>(),
        text(),
        labels(),
    )
        .prop_map(
            |(kind, source, target, readonly, driver, driver_opts)| Mount {
                kind,
                source,
                target,
                readonly,
                // Any pair of flags, from the other values.
                follow: readonly,
                keep: driver.len() % 2 == 0,
                driver,
                driver_opts,
            },
        )
}

fn healthcheck() -> impl Strategy<Value = HealthCheck> {
    (words(), any::<[u64; 4]>()).prop_map(|(test, [a, b, c, d])| HealthCheck {
        test,
        interval_ms: a,
        timeout_ms: b,
        retries: c,
        start_period_ms: d,
    })
}

fn options() -> impl Strategy<Value = ContainerOptions> {
    (
        (text(), words(), words(), labels(), labels()),
        (any::<[bool; 5]>(), text(), words()),
        (words(), words(), words(), any::<[i64; 2]>()),
    )
        .prop_map(
            |(
                (hostname, cap_add, cap_drop, sysctls, limits),
                ([init, tty, stdin_open, read_only, _], stop_signal, extra_hosts),
                (dns, dns_search, group_add, [soft, hard]),
            )| ContainerOptions {
                hostname,
                cap_add,
                cap_drop,
                sysctls,
                ulimits: limits
                    .into_keys()
                    .map(|k| (k, Ulimit { soft, hard }))
                    .collect(),
                init,
                stop_signal,
                extra_hosts,
                tty,
                stdin_open,
                read_only,
                dns,
                dns_search,
                group_add,
            },
        )
}

fn container() -> impl Strategy<Value = ContainerSpec> {
    (
        (text(), words(), words(), words(), labels()),
        (vec(mount(), 0..3), text(), text(), options()),
        (option::of(healthcheck()), any::<u64>(), text(), labels()),
    )
        .prop_map(
            |(
                (image, entrypoint, args, env, labels),
                (mounts, user, workdir, options),
                (healthcheck, stop_grace_period_ms, log_driver, log_opts),
            )| ContainerSpec {
                image,
                entrypoint,
                args,
                env,
                labels,
                mounts,
                user,
                workdir,
                healthcheck,
                stop_grace_period_ms,
                log_driver,
                log_opts,
                options,
            },
        )
}

fn task_spec() -> impl Strategy<Value = TaskSpec> {
    (
        container(),
        any::<[u64; 4]>(),
        (
            prop_oneof![
                Just(RestartCondition::Any),
                Just(RestartCondition::OnFailure),
                Just(RestartCondition::None)
            ],
            any::<[u64; 3]>(),
        ),
        (words(), words(), any::<u64>()),
        (any::<u64>(), labels(), any::<u64>()),
    )
        .prop_map(
            |(
                container,
                [a, b, c, d],
                (condition, [e, f, g]),
                (cs, ps, mr),
                (force_update, kinds, n),
            )| {
                TaskSpec {
                    secrets: vec![],
                    configs: vec![],
                    force_new_volume: force_update.rotate_left(7),
                    container,
                    resources: Resources {
                        reserve_nano_cpus: a,
                        reserve_memory_bytes: b,
                        limit_nano_cpus: c,
                        limit_memory_bytes: d,
                        generic_resources: kinds.into_keys().map(|k| (k, n)).collect(),
                    },
                    restart: RestartPolicy {
                        condition,
                        delay_ms: e,
                        max_attempts: f,
                        window_ms: g,
                    },
                    placement: Placement {
                        constraints: cs.into_iter().map(Into::into).collect(),
                        preferences: ps.into_iter().map(Into::into).collect(),
                        max_replicas_per_node: mr,
                    },
                    force_update,
                }
            },
        )
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)]
}

fn port_config() -> impl Strategy<Value = PortConfig> {
    (
        protocol(),
        any::<u16>(),
        any::<u16>(),
        prop_oneof![Just(PublishMode::Ingress), Just(PublishMode::Host)],
        prop_oneof![
            Just(ProxyProtocol::None),
            Just(ProxyProtocol::V1),
            Just(ProxyProtocol::V2)
        ],
    )
        .prop_map(
            |(protocol, target, published, mode, proxy_protocol)| PortConfig {
                protocol,
                target,
                published,
                mode,
                proxy_protocol,
            },
        )
}

fn update_config() -> impl Strategy<Value = UpdateConfig> {
    (
        any::<[u64; 3]>(),
        prop_oneof![
            Just(FailureAction::Pause),
            Just(FailureAction::Continue),
            Just(FailureAction::Rollback)
        ],
        0.0..=1.0f64,
        prop_oneof![Just(UpdateOrder::StopFirst), Just(UpdateOrder::StartFirst)],
    )
        .prop_map(
            |([a, b, c], failure_action, max_failure_ratio, order)| UpdateConfig {
                parallelism: a,
                delay_ms: b,
                failure_action,
                monitor_ms: c,
                max_failure_ratio,
                order,
            },
        )
}

fn dependency() -> impl Strategy<Value = Dependency> {
    (
        text(),
        prop_oneof![
            Just(DependCondition::ServiceStarted),
            Just(DependCondition::ServiceHealthy),
            Just(DependCondition::ServiceCompletedSuccessfully)
        ],
    )
        .prop_map(|(service, condition)| Dependency { service, condition })
}

pub(super) fn network_id() -> impl Strategy<Value = NetworkId> {
    prop_oneof![
        "[0-9a-f]{16}".prop_map(NetworkId),
        Just(NetworkId::default_network())
    ]
}

pub(super) fn attachments() -> impl Strategy<Value = Vec<NetworkAttachment>> {
    vec(
        (network_id(), words())
            .prop_map(|(network, aliases)| NetworkAttachment { network, aliases }),
        0..3,
    )
}

pub(super) fn network() -> impl Strategy<Value = Network> {
    (
        network_id(),
        (text(), labels()),
        prop_oneof![Just(NetworkDriver::Overlay), Just(NetworkDriver::Bridge)],
        any::<[bool; 3]>(),
        any::<u64>(),
    )
        .prop_map(
            |(id, (name, labels), driver, [internal, attachable, encrypted], created_ms)| Network {
                id,
                spec: NetworkSpec {
                    name,
                    labels,
                    driver,
                    internal,
                    attachable,
                    encrypted,
                },
                created_ms,
            },
        )
}

fn spec() -> impl Strategy<Value = ServiceSpec> {
    (
        (text(), labels(), mode(), task_spec()),
        (vec(port_config(), 0..3), vec(any::<u16>(), 0..3)),
        (update_config(), update_config(), vec(dependency(), 0..3)),
        prop_oneof![Just(EndpointMode::Vip), Just(EndpointMode::Dnsrr)],
        attachments(),
    )
        .prop_map(
            |(
                (name, labels, mode, task),
                (ports, expose),
                (update, rollback, depends_on),
                e,
                networks,
            )| {
                ServiceSpec {
                    name,
                    labels,
                    mode,
                    task,
                    ports,
                    expose,
                    update,
                    rollback,
                    depends_on,
                    endpoint_mode: e,
                    networks,
                }
            },
        )
}

pub(super) fn service() -> impl Strategy<Value = Service> {
    (
        text(),
        spec(),
        option::of(spec()),
        any::<[u64; 3]>(),
        text(),
    )
        .prop_map(|(id, spec, previous_spec, [v, c, u], vip)| Service {
            id: ServiceId(id),
            spec,
            previous_spec,
            version: v,
            vip,
            created_ms: c,
            updated_ms: u,
        })
}

fn update_state() -> impl Strategy<Value = UpdateState> {
    prop_oneof![
        Just(UpdateState::Updating),
        Just(UpdateState::Paused),
        Just(UpdateState::Completed),
        Just(UpdateState::RollbackStarted),
        Just(UpdateState::RollbackPaused),
        Just(UpdateState::RollbackCompleted),
    ]
}

pub(super) fn update_status() -> impl Strategy<Value = UpdateStatus> {
    (
        (
            update_state(),
            text(),
            any::<u64>(),
            option::of(any::<u64>()),
        ),
        (any::<u64>(), btree_map(any::<u64>(), any::<u64>(), 0..3)),
        vec(
            (any::<u64>(), text(), text(), any::<u64>()).prop_map(|(unit, id, reason, at_ms)| {
                UpdateFailure {
                    unit,
                    task_id: TaskId(id),
                    reason,
                    at_ms,
                }
            }),
            0..3,
        ),
    )
        .prop_map(
            |((state, message, started_ms, completed_ms), (version, updated), failures)| {
                UpdateStatus {
                    state,
                    message,
                    started_ms,
                    completed_ms,
                    version,
                    updated,
                    failures,
                }
            },
        )
}

pub(super) fn task_state() -> impl Strategy<Value = TaskState> {
    prop_oneof![
        Just(TaskState::New),
        Just(TaskState::Pending),
        Just(TaskState::Assigned),
        Just(TaskState::Accepted),
        Just(TaskState::Preparing),
        Just(TaskState::Starting),
        Just(TaskState::Running),
        Just(TaskState::Complete),
        Just(TaskState::Shutdown),
        Just(TaskState::Failed),
        Just(TaskState::Rejected),
        Just(TaskState::Orphaned),
        Just(TaskState::Remove),
    ]
}

pub(super) fn task_status() -> impl Strategy<Value = TaskStatus> {
    (
        (task_state(), any::<u64>(), text(), text(), text()),
        option::of(any::<i64>()),
        vec(
            (protocol(), any::<u16>(), any::<u16>()).prop_map(|(protocol, target, host_port)| {
                HostPort {
                    protocol,
                    target,
                    host_port,
                }
            }),
            0..3,
        ),
        (text(), text(), text()),
        vec(
            (network_id(), text()).prop_map(|(network, ip)| TaskAddress { network, ip }),
            0..3,
        ),
    )
        .prop_map(
            |(
                (state, timestamp_ms, message, err, container_id),
                exit_code,
                ports,
                (health, image_id, image_digest),
                addresses,
            )| TaskStatus {
                state,
                timestamp_ms,
                message,
                err,
                container_id,
                exit_code,
                ports,
                health,
                image_id,
                image_digest,
                addresses,
            },
        )
}

pub(super) fn task() -> impl Strategy<Value = Task> {
    (
        (text(), text(), text(), any::<u64>()),
        (option::of(any::<u64>().prop_map(NodeId)), any::<u64>()),
        (task_spec(), task_state(), task_status()),
        (
            any::<u64>(),
            text(),
            option::of((
                vec(port_config(), 0..3),
                vec(1u16..=65535, 0..3),
                attachments(),
            )),
        ),
    )
        .prop_map(
            |(
                (id, service_id, service_name, slot),
                (node_id, spec_version),
                (spec, desired_state, status),
                (created_ms, vip, endpoint),
            )| Task {
                id: TaskId(id),
                service_id: ServiceId(service_id),
                service_name,
                slot,
                node_id,
                spec_version,
                spec: spec.into(),
                desired_state,
                status,
                created_ms,
                vip,
                endpoint: endpoint.map(|(ports, expose, networks)| TaskEndpoint {
                    ports,
                    expose,
                    networks,
                }),
            },
        )
}

/// Through the wire and its bytes, and back.
fn round_trip<S, W>(v: &S) -> S
where
    S: Clone + Into<W> + TryFrom<W, Error = Error>,
    W: prost::Message + Default,
{
    let bytes = prost::Message::encode_to_vec(&v.clone().into());
    let w = W::decode(bytes.as_slice()).expect("decodes");
    S::try_from(w).expect("converts back")
}

proptest! {
    #[test]
    fn a_service_goes_through_the_wire_unchanged(s in service()) {
        prop_assert_eq!(round_trip::<Service, pb::Service>(&s), s);
    }

    #[test]
    fn an_update_status_goes_through_the_wire_unchanged(u in update_status()) {
        prop_assert_eq!(round_trip::<UpdateStatus, pb::UpdateStatus>(&u), u);
    }

    #[test]
    fn a_task_goes_through_the_wire_unchanged(t in task()) {
        prop_assert_eq!(round_trip::<Task, pb::Task>(&t), t);
    }

    #[test]
    fn a_network_goes_through_the_wire_unchanged(n in network()) {
        prop_assert_eq!(round_trip::<Network, pb::Network>(&n), n);
    }
}

#[test]
fn what_cannot_be_a_value_is_refused_naming_the_field() {
    let spec: pb::ServiceSpec = ServiceSpec::try_from(pb::ServiceSpec {
        mode: Some(ServiceMode::Global.into()),
        ..Default::default()
    })
    .expect("a spec with a mode")
    .into();
    let refused = |s: pb::ServiceSpec| match ServiceSpec::try_from(s) {
        Err(Error::InvalidInput(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let mut no_mode = spec.clone();
    no_mode.mode = None;
    assert_eq!(refused(no_mode), "mode: must be set");
    let mut big_port = spec.clone();
    big_port.ports.push(pb::PortConfig {
        target: 70000,
        ..Default::default()
    });
    assert_eq!(
        refused(big_port),
        "ports.target: 70000 is not a port (0-65535)"
    );
    let mut unknown = spec.clone();
    unknown.endpoint_mode = 9;
    assert_eq!(refused(unknown), "endpoint_mode: unknown value 9");
    let mut mount = spec;
    mount
        .task
        .get_or_insert_with(Default::default)
        .container
        .get_or_insert_with(Default::default)
        .mounts
        .push(pb::Mount::default());
    assert_eq!(refused(mount), "mounts.kind: must be set");

    let task = pb::Task {
        node_id: "not hex".into(),
        ..Default::default()
    };
    assert!(
        matches!(Task::try_from(task), Err(Error::InvalidInput(m)) if m.starts_with("node_id:"))
    );
}

#[test]
fn constraints_travel_as_their_text_and_arrive_parsed() {
    let p = Placement {
        constraints: vec!["node.labels.zone == a".into(), "node.name==a".into()],
        preferences: vec![],
        max_replicas_per_node: 0,
    };
    let wire = pb::Placement::from(p.clone());
    assert_eq!(wire.constraints, ["node.labels.zone == a", "node.name==a"]);
    let bytes = prost::Message::encode_to_vec(&wire);
    let back = Placement::from(
        <pb::Placement as prost::Message>::decode(bytes.as_slice()).expect("decodes"),
    );
    assert_eq!(back, p);
    assert!(matches!(
        back.constraints[0],
        crate::store::Constraint::Valid(_)
    ));
    // Text that does not parse is kept (a Raft entry or an answer may carry what an
    // older version stored); the control API's door refuses it in a new spec.
    assert!(back.constraints[1].why().is_some());
}
