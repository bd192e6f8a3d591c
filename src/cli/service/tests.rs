//! The CLI's own logic over typed answers: the flags' parsers, the inspect text,
//! the progress lines and an update's outcome.

use std::collections::BTreeMap;

use super::*;
use crate::proto;
use crate::store::image::ImagePin;
use crate::store::service::*;
use crate::store::{NodeId, Service, ServiceId, ServiceSpec, Task, TaskId, TaskState, TaskStatus};

fn service(mode: ServiceMode) -> Service {
    Service {
        id: ServiceId("abc".into()),
        spec: ServiceSpec {
            name: "web".into(),
            labels: BTreeMap::new(),
            mode,
            task: TaskSpec::default(),
            ports: vec![],
            expose: vec![],
            update: UpdateConfig::default(),
            rollback: UpdateConfig::default(),
            depends_on: vec![],
            endpoint_mode: EndpointMode::Vip,
            networks: Default::default(),
        },
        previous_spec: None,
        version: 3,
        vip: String::new(),
        created_ms: 0,
        updated_ms: 0,
    }
}

fn inspected(service: Service, status: proto::ServiceProgress) -> Inspected {
    Inspected {
        service,
        update_status: None,
        endpoint: None,
        image_pin: None,
        waiting_on: vec![],
        status,
        networks: vec![],
    }
}

fn task(slot: u64, node: Option<u64>, state: TaskState) -> Listed {
    Listed {
        task: Task {
            id: TaskId(format!("t{slot}")),
            service_id: ServiceId("abc".into()),
            service_name: "web".into(),
            slot,
            node_id: node.map(NodeId),
            spec_version: 3,
            spec: TaskSpec::default().into(),
            desired_state: TaskState::Running,
            status: TaskStatus::new(state, "", 1),
            created_ms: 1,
            vip: String::new(),
            endpoint: None,
        },
        node: node.map(|n| format!("node{n}")).unwrap_or_default(),
        up_to_date: true,
    }
}

#[test]
fn inspect_text_shows_the_pinned_digest() {
    let id = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut svc = service(ServiceMode::Replicated { replicas: 2 });
    svc.vip = "10.233.0.2".into();
    svc.spec.task.container.image = "app:1".into();
    svc.spec.ports = vec![parse_publish("8080:80").unwrap()];
    let mut v = inspected(
        svc,
        proto::ServiceProgress {
            running: 2,
            desired: 2,
            ..Default::default()
        },
    );
    v.image_pin = Some(ImagePin {
        image: "app:1".into(),
        id: id.into(),
        repo_digest: String::new(),
    });
    assert_eq!(
        inspect_text(&v),
        format!(
            "ID:              abc\n\
             Name:            web\n\
             Mode:            replicated, 2 replicas\n\
             Tasks:           2 running of 2 desired\n\
             Image:           app:1\n\
             Image digest:    {id}\n\
             Version:         3\n\
             VIP:             10.233.0.2\n\
             Ports:           *:8080->80/tcp\n"
        )
    );
    assert_eq!(v.to_json()["image_digest"]["id"], id);
    v.image_pin = None;
    assert!(inspect_text(&v)
        .contains("Image digest:    not pinned yet (pinned when the first task runs)\n"));
    assert!(v.to_json()["image_digest"].is_null());
}

#[test]
fn publish_forms() {
    let p = parse_publish("8080:80").unwrap();
    assert_eq!(
        (p.published, p.target, p.protocol, p.mode),
        (8080, 80, Protocol::Tcp, PublishMode::Ingress)
    );
    let p = parse_publish("53:53/udp").unwrap();
    assert_eq!(p.protocol, Protocol::Udp);
    let p = parse_publish("mode=host,published=8080,target=80").unwrap();
    assert_eq!((p.published, p.mode), (8080, PublishMode::Host));
    assert_eq!(parse_publish("80").unwrap().published, 0);
    let e = parse_publish("70000:80").unwrap_err().to_string();
    assert_eq!(e, "--publish: port 70000 is out of range 1-65535");
    let e = parse_publish("8080:80/sctp").unwrap_err().to_string();
    assert!(e.contains("tcp or udp"), "{e}");
}

#[test]
fn mounts_and_sizes() {
    let m = parse_mount("type=bind,source=/a,target=/b,readonly").unwrap();
    assert_eq!(
        (m.kind, m.readonly, m.source.as_str()),
        (MountKind::Bind, true, "/a")
    );
    assert!(parse_mount("type=nfs,target=/b").is_err());
    assert_eq!(parse_bytes("f", "64M").unwrap(), 64 * 1024 * 1024);
    assert_eq!(parse_bytes("f", "1g").unwrap(), 1 << 30);
    assert!(parse_bytes("f", "lots").is_err());
}

#[test]
fn an_update_is_followed_by_its_status_and_ends_in_error_unless_it_completed() {
    let svc = |state: UpdateState, message: &str| {
        let mut v = inspected(
            service(ServiceMode::Replicated { replicas: 3 }),
            proto::ServiceProgress {
                done: 2,
                wanted: 3,
                ..Default::default()
            },
        );
        v.update_status = Some(UpdateStatus {
            updated: [(1, 10), (2, 0), (7, 3)].into(),
            ..UpdateStatus::new(state, 2, 0, message)
        });
        v
    };
    let tasks = [
        task(1, None, TaskState::Running),
        task(2, None, TaskState::Running),
        task(3, None, TaskState::Starting),
    ];
    let lines = update_progress(&svc(UpdateState::Updating, "update in progress"), &tasks);
    assert_eq!(
        lines,
        [
            "overall progress: 2 out of 3 tasks",
            "1/3: running",
            "2/3: running",
            "3/3: starting",
            "update updating: update in progress",
        ]
    );
    use progress::update_outcome;
    assert!(update_outcome(&svc(UpdateState::Updating, ""), false).is_none());
    assert!(update_outcome(&svc(UpdateState::RollbackStarted, ""), false).is_none());
    assert!(matches!(
        update_outcome(&svc(UpdateState::Completed, "update completed"), false),
        Some(Ok(_))
    ));
    assert!(matches!(
        update_outcome(&svc(UpdateState::RollbackCompleted, "x"), true),
        Some(Ok(_))
    ));
    for (state, rollback) in [
        (UpdateState::Paused, false),
        (UpdateState::RollbackCompleted, false),
        (UpdateState::RollbackPaused, false),
        (UpdateState::RollbackPaused, true),
    ] {
        let e = update_outcome(
            &svc(state, "task t1 (slot 1) failed: exited with code 3"),
            rollback,
        )
        .expect("ended")
        .unwrap_err()
        .to_string();
        let what = if rollback { "rollback" } else { "update" };
        assert_eq!(
            e,
            format!("service web: {what} {state}: task t1 (slot 1) failed: exited with code 3")
        );
    }
}

#[test]
fn a_global_service_shows_a_line_per_node_and_the_leaders_verdict() {
    let svc = |done: u64, converged: bool| {
        inspected(
            service(ServiceMode::Global),
            proto::ServiceProgress {
                desired: 2,
                done,
                wanted: 2,
                converged,
                ..Default::default()
            },
        )
    };
    let (converged, lines) = progress(&svc(0, false), &[]);
    assert!(!converged);
    assert_eq!(lines, ["overall progress: 0 out of 2 tasks"]);
    let both = [
        task(0, Some(1), TaskState::Running),
        task(0, Some(2), TaskState::Running),
    ];
    let (converged, lines) = progress(&svc(2, true), &both);
    assert!(converged);
    assert_eq!(
        lines,
        [
            "overall progress: 2 out of 2 tasks",
            "node1: running",
            "node2: running"
        ]
    );
}

#[test]
fn service_network_flags_name_networks_and_inspect_shows_them_by_name() {
    let crate::cli::Command::Service(ServiceCommand::Create(a)) = parse(&[
        "create",
        "--name",
        "api",
        "--network",
        "front",
        "--network",
        "name=back,alias=db,alias=pg",
        "app:1",
    ]) else {
        panic!("create")
    };
    let spec = create_spec(&a).expect("good flags");
    let nets: Vec<(&str, Vec<String>)> = spec
        .networks
        .iter()
        .map(|n| (n.network.0.as_str(), n.aliases.clone()))
        .collect();
    assert_eq!(
        nets,
        [
            ("front", vec![]),
            ("back", vec!["db".to_string(), "pg".to_string()])
        ]
    );
    // Hostile values: refused naming the flag (positive control above).
    let crate::cli::Command::Service(ServiceCommand::Create(a)) = parse(&[
        "create",
        "--name",
        "api",
        "--network",
        "name=back,alias=a b",
        "app:1",
    ]) else {
        panic!("create")
    };
    let e = create_spec(&a).unwrap_err().to_string();
    assert!(
        e.contains("--network: alias \"a b\" is not a DNS name"),
        "{e}"
    );
    // The same network twice: the spec's check names `networks`, shown as the flag.
    let crate::cli::Command::Service(ServiceCommand::Create(a)) = parse(&[
        "create",
        "--name",
        "api",
        "--network",
        "x",
        "--network",
        "x",
        "app:1",
    ]) else {
        panic!("create")
    };
    let e = crate::cli::fields::with_flags(create_spec(&a).unwrap_err()).to_string();
    assert!(e.contains("--network: network x is named twice"), "{e}");
    // update: --network-add / --network-rm
    let crate::cli::Command::Service(ServiceCommand::Update(u)) = parse(&[
        "update",
        "--network-add",
        "name=back,alias=db",
        "--network-rm",
        "front",
        "api",
    ]) else {
        panic!("update")
    };
    let mut svc = service(ServiceMode::Replicated { replicas: 1 });
    svc.spec.task.container.image = "app:1".into();
    svc.spec.networks = vec![crate::store::NetworkAttachment::to(
        crate::store::NetworkId("front".into()),
    )];
    let spec = update_spec(svc.spec.clone(), &u).expect("update");
    assert_eq!(spec.networks.len(), 1);
    assert_eq!(spec.networks[0].network.0, "back");
    assert_eq!(spec.networks[0].aliases, ["db"]);
    // inspect: each network by name, with its id, aliases and the service's VIP.
    let mut v = inspected(svc, Default::default());
    v.networks = vec![proto::ServiceNetwork {
        name: "back".into(),
        id: "00000000000000b1".into(),
        aliases: vec!["db".into()],
        vip: "10.233.0.9".into(),
    }];
    assert_eq!(
        v.to_json()["networks"],
        serde_json::json!([{"name": "back", "id": "00000000000000b1", "aliases": ["db"], "vip": "10.233.0.9"}])
    );
    assert!(
        inspect_text(&v).contains("Networks:        back (aliases db)\n"),
        "{}",
        inspect_text(&v)
    );
}

#[test]
fn container_option_flags_set_docker_s_options_and_update_adds_and_removes() {
    let crate::cli::Command::Service(ServiceCommand::Create(a)) = parse(&[
        "create",
        "--name",
        "api",
        "--hostname",
        "api-host",
        "--cap-add",
        "NET_ADMIN",
        "--cap-drop",
        "MKNOD",
        "--sysctl",
        "net.core.somaxconn=1024",
        "--ulimit",
        "nofile=1024:2048",
        "--init",
        "--stop-signal",
        "SIGQUIT",
        "--add-host",
        "db:10.0.0.5",
        "-t",
        "--read-only",
        "--dns",
        "9.9.9.9",
        "--dns-search",
        "example.com",
        "--group",
        "audio",
        "--generic-resource",
        "gpu=1",
        "app:1",
    ]) else {
        panic!("create")
    };
    let spec = create_spec(&a).expect("good flags");
    let o = &spec.task.container.options;
    assert_eq!(o.hostname, "api-host");
    assert_eq!(o.cap_add, ["NET_ADMIN"]);
    assert_eq!(o.cap_drop, ["MKNOD"]);
    assert_eq!(o.sysctls["net.core.somaxconn"], "1024");
    assert_eq!(
        o.ulimits["nofile"],
        Ulimit {
            soft: 1024,
            hard: 2048
        }
    );
    assert!(o.init && o.tty && o.read_only && !o.stdin_open);
    assert_eq!(o.stop_signal, "SIGQUIT");
    assert_eq!(o.extra_hosts, ["db:10.0.0.5"]);
    assert_eq!(o.dns, ["9.9.9.9"]);
    assert_eq!(o.dns_search, ["example.com"]);
    assert_eq!(o.group_add, ["audio"]);
    assert_eq!(
        spec.task.resources.generic_resources,
        [("gpu".to_string(), 1)].into()
    );
    // inspect --format json shows them under the spec.
    let mut svc = service(ServiceMode::Replicated { replicas: 1 });
    svc.spec = spec.clone();
    let j = inspected(svc.clone(), Default::default()).to_json();
    assert_eq!(
        j["spec"]["task"]["container"]["options"]["cap_add"],
        serde_json::json!(["NET_ADMIN"])
    );
    assert_eq!(
        j["spec"]["task"]["container"]["options"]["ulimits"]["nofile"],
        serde_json::json!({"soft": 1024, "hard": 2048})
    );
    assert_eq!(
        j["spec"]["task"]["resources"]["generic_resources"],
        serde_json::json!({"gpu": 1})
    );

    // Hostile values are refused naming the flag.
    for (flag, value, want) in [
        (
            "--sysctl",
            "kernel.panic=1",
            "--sysctl: kernel.panic is not namespaced",
        ),
        (
            "--ulimit",
            "nofile=9:1",
            "--ulimit: nofile: the soft limit 9 is above the hard limit 1",
        ),
        (
            "--cap-add",
            "GODMODE",
            "--cap-add: \"GODMODE\" is not a Linux capability",
        ),
        ("--add-host", "db", "--add-host: expected HOST:IP"),
        (
            "--stop-signal",
            "SIGNOPE",
            "--stop-signal: \"SIGNOPE\" is not a signal",
        ),
        ("--dns", "127.0.0.1", "--dns: 127.0.0.1: a loopback"),
        (
            "--generic-resource",
            "gpu=0",
            "--generic-resource: gpu: a count of at least 1",
        ),
    ] {
        let crate::cli::Command::Service(ServiceCommand::Create(a)) =
            parse(&["create", "--name", "api", flag, value, "app:1"])
        else {
            panic!("create")
        };
        let e = crate::cli::fields::with_flags(create_spec(&a).unwrap_err()).to_string();
        assert!(e.starts_with(want), "{flag} {value}: {e}");
    }

    // `--init`, `-t` and `--read-only` take no value unless given with `=`: the image
    // after them stays the image.
    let crate::cli::Command::Service(ServiceCommand::Create(a)) = parse(&[
        "create",
        "--name",
        "api",
        "--read-only",
        "--init",
        "-t",
        "app:1",
        "sh",
    ]) else {
        panic!("create")
    };
    assert_eq!(
        (a.image.as_str(), a.command.as_slice()),
        ("app:1", &["sh".to_string()][..])
    );
    let o = create_spec(&a).expect("good flags").task.container.options;
    assert!(o.init && o.tty && o.read_only);

    // update: -add / -rm; --cap-add moves a capability out of the dropped ones.
    let crate::cli::Command::Service(ServiceCommand::Update(u)) = parse(&[
        "update",
        "--cap-add",
        "MKNOD",
        "--sysctl-rm",
        "net.core.somaxconn",
        "--sysctl-add",
        "net.ipv4.ip_forward=1",
        "--ulimit-add",
        "nproc=100",
        "--host-rm",
        "db",
        "--host-add",
        "cache:10.0.0.6",
        "--dns-rm",
        "9.9.9.9",
        "--dns-add",
        "1.1.1.1",
        "--group-add",
        "video",
        "--group-rm",
        "audio",
        "--generic-resource-rm",
        "gpu",
        "--init=false",
        "api",
    ]) else {
        panic!("update")
    };
    let next = update_spec(spec.clone(), &u).expect("update");
    let o = &next.task.container.options;
    assert_eq!(o.cap_add, ["NET_ADMIN", "MKNOD"]);
    assert!(o.cap_drop.is_empty());
    assert_eq!(
        o.sysctls,
        [("net.ipv4.ip_forward".to_string(), "1".to_string())].into()
    );
    assert_eq!(o.ulimits.len(), 2);
    assert_eq!(o.extra_hosts, ["cache:10.0.0.6"]);
    assert_eq!(o.dns, ["1.1.1.1"]);
    assert_eq!(o.group_add, ["video"]);
    assert!(!o.init && o.tty);
    assert!(next.task.resources.generic_resources.is_empty());
    // A change of options is a change of the task spec: the service rolls.
    assert_ne!(next.task, spec.task);
}

#[test]
fn mount_policy_marks_named_local_volumes_and_force_new_volume_counts() {
    let crate::cli::Command::Service(ServiceCommand::Create(a)) = parse(&[
        "create",
        "--name",
        "db",
        "--mount",
        "type=volume,source=pgdata,target=/data",
        "--mount",
        "type=bind,source=/etc/db,target=/etc/db",
        "--mount-policy",
        "follow,keep",
        "db:1",
    ]) else {
        panic!("create")
    };
    let spec = create_spec(&a).expect("good flags");
    let m = &spec.task.container.mounts;
    assert_eq!((m[0].follow, m[0].keep), (true, true));
    assert_eq!((m[1].follow, m[1].keep), (false, false), "a bind stays");
    // Without a volume to follow, the flag is refused, naming itself.
    let crate::cli::Command::Service(ServiceCommand::Create(a)) =
        parse(&["create", "--name", "db", "--mount-policy", "follow", "db:1"])
    else {
        panic!("create")
    };
    let e = create_spec(&a).unwrap_err().to_string();
    assert!(e.starts_with("--mount-policy:"), "{e}");
    // The label says the same.
    let crate::cli::Command::Service(ServiceCommand::Create(a)) = parse(&[
        "create",
        "--name",
        "db",
        "--label",
        "orc.mount-policy=follow",
        "--mount",
        "type=volume,source=pgdata,target=/data",
        "db:1",
    ]) else {
        panic!("create")
    };
    assert!(create_spec(&a).unwrap().task.container.mounts[0].follow);
    // Update: none turns it off; --force-new-volume bumps the count.
    let crate::cli::Command::Service(ServiceCommand::Update(u)) = parse(&[
        "update",
        "--mount-policy",
        "none",
        "--force-new-volume",
        "db",
    ]) else {
        panic!("update")
    };
    let updated = update_spec(spec.clone(), &u).expect("good flags");
    assert!(!updated.task.container.mounts[0].follow);
    assert_eq!(
        updated.task.force_new_volume,
        spec.task.force_new_volume + 1
    );
}

/// `orc service ARGS...`, parsed.
fn parse(args: &[&str]) -> crate::cli::Command {
    use clap::Parser;
    crate::cli::Cli::try_parse_from(["orc", "service"].iter().chain(args.iter()))
        .expect("parses")
        .command
}
