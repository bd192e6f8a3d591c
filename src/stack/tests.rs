//! Loader tests: the compose examples, every supported form, golden error messages for
//! invalid files (`tests/stacks/invalid/*.yml`, each with the one line expected in
//! `*.err`), and a property test that no input makes the loader panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::store::service::*;

/// Loads in-memory `files` (name → text) as stack `name`.
fn load_mem(files: &[(&str, &str)], name: &str, env: &[(&str, &str)]) -> Result<Stack> {
    let map: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|(n, t)| (PathBuf::from(n), t.to_string()))
        .collect();
    let read = move |p: &Path| {
        map.get(p)
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "not found"))
    };
    let env: Vars = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let paths: Vec<PathBuf> = files
        .iter()
        .filter(|(n, _)| n.ends_with(".yml") || n.ends_with(".yaml"))
        .map(|(n, _)| PathBuf::from(n))
        .collect();
    load(&paths, name, &env, &read)
}

fn one(text: &str) -> Result<Stack> {
    load_mem(&[("stack.yml", text)], "s", &[])
}

fn svc<'a>(s: &'a Stack, name: &str) -> &'a ServiceSpec {
    s.services
        .iter()
        .find(|x| x.name == name)
        .unwrap_or_else(|| panic!("no service {name} in {:?}", s.services))
}

fn example(dir: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("compose-examples")
        .join(dir)
        .join("stack.yml");
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn the_voting_app_example_loads_with_every_key_honoured() {
    let s = load_mem(
        &[("stack.yml", &example("voting-app"))],
        "vote",
        &[("REDIS_IMAGE", "orc-test/redis:1")],
    )
    .unwrap();
    assert_eq!(s.warnings, Vec::<String>::new());
    assert_eq!(s.services.len(), 5);
    let vote = svc(&s, "vote_vote");
    assert_eq!(vote.mode, ServiceMode::Replicated { replicas: 2 });
    assert_eq!(
        vote.task.container.image,
        "dockersamples/examplevotingapp_vote"
    );
    assert_eq!(vote.update.order, UpdateOrder::StartFirst);
    assert_eq!(vote.update.failure_action, FailureAction::Rollback);
    assert_eq!(vote.update.delay_ms, 5000);
    assert_eq!(vote.task.resources.limit_nano_cpus, 500_000_000);
    assert_eq!(vote.task.container.log_driver, "json-file");
    assert_eq!(vote.task.container.log_opts["max-size"], "10m");
    assert_eq!(vote.ports[0].published, 5000);
    assert_eq!(vote.labels[STACK_LABEL], "vote");
    assert_eq!(
        vote.depends_on,
        [Dependency {
            service: "vote_redis".into(),
            condition: DependCondition::ServiceHealthy
        }]
    );
    assert_eq!(
        svc(&s, "vote_redis").task.container.image,
        "orc-test/redis:1"
    );
    let db = svc(&s, "vote_db");
    assert_eq!(db.task.container.mounts[0].source, "vote_db-data");
    assert_eq!(db.task.placement.max_replicas_per_node, 1);
    assert_eq!(db.task.restart.condition, RestartCondition::OnFailure);
    assert_eq!(svc(&s, "vote_worker").depends_on.len(), 2);
    // Docker's networks: the front end and the database share none.
    let on = |name: &str| -> Vec<String> {
        svc(&s, name)
            .networks
            .iter()
            .map(|a| a.network.0.clone())
            .collect()
    };
    assert_eq!(on("vote_vote"), ["vote_frontend"]);
    assert_eq!(on("vote_redis"), ["vote_frontend"]);
    assert_eq!(on("vote_result"), ["vote_backend"]);
    assert_eq!(on("vote_db"), ["vote_backend"]);
    assert_eq!(on("vote_worker"), ["vote_frontend", "vote_backend"]);
    let nets: Vec<&str> = s.networks.iter().map(|n| n.spec.name.as_str()).collect();
    assert_eq!(
        nets,
        ["vote_backend", "vote_frontend"],
        "no vote_default: every service names its networks"
    );
    assert!(s
        .networks
        .iter()
        .all(|n| !n.external && n.spec.stack() == "vote"));
}

#[test]
fn networks_are_named_for_the_stack_with_every_key_honoured_or_warned() {
    let s = one(r#"
services:
  web:
    image: nginx
    networks:
      front:
        aliases: [www, web.internal]
        ipv4_address: 10.0.0.9
      back:
  db:
    image: postgres
    networks: [back]
  cache:
    image: redis
networks:
  front:
    driver: bridge
    attachable: true
    labels: [team=web, tier]
  back:
    internal: true
    driver_opts:
      encrypted: ""
      com.docker.network.driver.mtu: "1400"
    labels: {team: data}
    ipam:
      config: [{subnet: 10.9.0.0/24}]
    enable_ipv6: true
  shared:
    external: true
    name: corp-net
  unused: {}
"#)
    .unwrap();
    let w = s.warnings.join("\n");
    for key in [
        "networks.front.driver: bridge: on orc the network spans the cluster",
        "networks.back.driver_opts.com.docker.network.driver.mtu: not supported by orc",
        "networks.back.ipam: not supported by orc",
        "networks.back.enable_ipv6: not supported by orc",
        "services.web.networks.front.ipv4_address: not supported by orc",
        "networks.shared: no service is on it: not created",
        "networks.unused: no service is on it: not created",
    ] {
        assert!(w.contains(key), "no warning {key:?} in:\n{w}");
    }
    assert_eq!(s.warnings.len(), 7, "{w}");
    let net = |name: &str| {
        s.networks
            .iter()
            .find(|n| n.spec.name == name)
            .unwrap_or_else(|| panic!("no network {name} in {:?}", s.networks))
    };
    let front = net("s_front");
    assert_eq!(
        front.spec.driver,
        crate::store::network::NetworkDriver::Bridge
    );
    assert!(front.spec.attachable && !front.spec.internal && !front.spec.encrypted);
    assert_eq!(front.spec.labels["team"], "web");
    assert_eq!(front.spec.labels["tier"], "");
    assert_eq!(front.spec.labels[STACK_LABEL], "s");
    let back = net("s_back");
    assert!(
        back.spec.internal && back.spec.encrypted,
        "encrypted: \"\" is encrypted"
    );
    assert_eq!(back.spec.labels["team"], "data");
    // cache names no network: it is on the stack's default network, made for it.
    let default = net("s_default");
    assert!(!default.external);
    assert_eq!(s.networks.len(), 3, "{:?}", s.networks);
    let web = svc(&s, "s_web");
    assert_eq!(web.networks.len(), 2);
    assert_eq!(web.networks[0].network.0, "s_front");
    assert_eq!(web.networks[0].aliases, ["www", "web.internal"]);
    assert_eq!(web.networks[1].network.0, "s_back");
    assert!(
        web.networks[1].aliases.is_empty(),
        "a null value: no aliases"
    );
    assert_eq!(svc(&s, "s_db").networks[0].network.0, "s_back");
    assert_eq!(svc(&s, "s_cache").networks[0].network.0, "s_default");
}

#[test]
fn external_and_named_networks_keep_their_names_and_default_may_be_declared() {
    let s = one(r#"
services:
  a:
    image: x
    networks: [corp, legacy, own]
  b:
    image: y
networks:
  corp:
    external: true
  legacy:
    external:
      name: old-net
  own:
    name: my-net
  default:
    name: everyone
    internal: true
"#)
    .unwrap();
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let by = |name: &str| s.networks.iter().find(|n| n.spec.name == name).cloned();
    let corp = by("corp").expect("external by its key");
    assert!(corp.external && corp.spec.labels.is_empty());
    assert!(by("old-net").expect("the old external form").external);
    let own = by("my-net").expect("name:");
    assert!(!own.external && own.spec.stack() == "s");
    let everyone = by("everyone").expect("default declared");
    assert!(everyone.spec.internal);
    assert_eq!(svc(&s, "s_b").networks[0].network.0, "everyone");
}

#[test]
fn hostile_networks_are_refused_by_a_bound_and_bad_names_are_named() {
    // 10,000 networks: refused at the bound, before any is read.
    let mut text = String::from("services:\n  a: {image: x}\nnetworks:\n");
    for i in 0..10_000 {
        text.push_str(&format!("  n{i}:\n"));
    }
    let e = one(&text).unwrap_err().to_string();
    assert!(
        e.contains("networks: 10000 networks declared; a stack has at most 128"),
        "{e}"
    );
    // The positive control: at the bound, accepted.
    let mut ok = String::from("services:\n  a: {image: x, networks: [n0]}\nnetworks:\n");
    for i in 0..128 {
        ok.push_str(&format!("  n{i}:\n"));
    }
    assert!(one(&ok).is_ok());
    for (text, want) in [
        (
            "services:\n  a: {image: x, networks: {n: {aliases: [\"-bad-\\u0000\"]}}}\nnetworks:\n  n:\n",
            "is not a DNS name",
        ),
        (
            "services:\n  a: {image: x, networks: [n]}\nnetworks:\n  n: {name: \"a b\"}\n",
            "networks.n.name: \"a b\" is not a network name",
        ),
        (
            "services:\n  a: {image: x, networks: [n]}\nnetworks:\n  n: {driver: macvlan}\n",
            "networks.n.driver: expected overlay or bridge",
        ),
        (
            "services:\n  a: {image: x, networks: [n]}\nnetworks:\n  n: {drivr: overlay}\n",
            "networks.n.drivr: unknown key (did you mean driver?)",
        ),
        (
            "services:\n  a: {image: x, networks: {n: {alias: [x]}}}\nnetworks:\n  n:\n",
            "services.a.networks.n.alias: unknown key (did you mean aliases?)",
        ),
        (
            "services:\n  a: {image: x, networks: 3}\nnetworks:\n  n:\n",
            "services.a.networks: expected a list or a mapping of networks",
        ),
    ] {
        let e = one(text).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn service_networks_merge_across_files_in_list_and_map_forms() {
    let base =
        "services:\n  a:\n    image: x\n    networks: [front]\nnetworks:\n  front:\n  back:\n";
    let over = "services:\n  a:\n    networks:\n      back:\n        aliases: [api]\n";
    let s = load_mem(&[("stack.yml", base), ("over.yml", over)], "s", &[]).unwrap();
    let a = svc(&s, "s_a");
    let nets: Vec<(&str, Vec<String>)> = a
        .networks
        .iter()
        .map(|n| (n.network.0.as_str(), n.aliases.clone()))
        .collect();
    assert_eq!(
        nets,
        [("s_front", vec![]), ("s_back", vec!["api".to_string()])]
    );
}

#[test]
fn the_other_examples_load_without_warnings() {
    for dir in ["web-db", "global-agent"] {
        let s = load_mem(&[("stack.yml", &example(dir))], "ex", &[]).unwrap();
        assert_eq!(s.warnings, Vec::<String>::new(), "{dir}");
    }
    let s = load_mem(&[("stack.yml", &example("global-agent"))], "ex", &[]).unwrap();
    assert_eq!(s.services[0].mode, ServiceMode::Global);
    assert_eq!(s.services[0].ports[0].mode, PublishMode::Host);
}

#[test]
fn short_and_long_forms_map_to_the_same_spec() {
    let short = one(r#"
services:
  web:
    image: nginx
    command: sh -c "echo 'hi there'"
    environment: [A=1, "B=two words"]
    labels: [tier=front]
    ports: ["8080:80", "9000-9001:9000-9001/udp", "3000"]
    expose: [81, "82/tcp"]
    volumes: ["data:/data:ro", "/srv:/srv", "/anon"]
    tmpfs: /run
    healthcheck:
      test: wget -q localhost
      interval: 1m30s
      retries: 3
    stop_grace_period: 1500ms
    depends_on: [db]
  db:
    image: postgres
volumes:
  data:
    driver: local
    driver_opts: {type: none}
"#)
    .unwrap();
    let long = one(r#"
services:
  web:
    image: nginx
    command: ["sh", "-c", "echo 'hi there'"]
    environment: {A: 1, B: two words}
    labels: {tier: front}
    ports:
      - {target: 80, published: "8080"}
      - {target: 9000, published: 9000-9001, protocol: udp}
      - {target: 3000}
    expose: ["81", 82]
    volumes:
      - {type: volume, source: data, target: /data, read_only: true}
      - {type: bind, source: /srv, target: /srv}
      - {type: volume, target: /anon}
    tmpfs: [/run]
    healthcheck:
      test: [CMD-SHELL, wget -q localhost]
      interval: 90s
      retries: "3"
    stop_grace_period: 1.5
    depends_on:
      db: {condition: service_started}
  db:
    image: postgres
volumes:
  data: {driver: local, driver_opts: {type: none}}
"#)
    .unwrap();
    assert_eq!(short, long);
    let web = svc(&short, "s_web");
    let c = &web.task.container;
    assert_eq!(c.args, ["sh", "-c", "echo 'hi there'"]);
    assert_eq!(c.env, ["A=1", "B=two words"]);
    assert_eq!(c.labels["tier"], "front");
    assert_eq!(web.ports.len(), 4);
    assert_eq!(web.ports[2].protocol, Protocol::Udp);
    assert_eq!(web.ports[2].published, 9001);
    assert_eq!(web.ports[3].published, 0);
    assert_eq!(web.expose, [81, 82]);
    assert_eq!(c.mounts[0].source, "s_data");
    assert!(c.mounts[0].readonly);
    assert_eq!(c.mounts[0].driver_opts["type"], "none");
    assert_eq!(c.mounts[1].kind, MountKind::Bind);
    assert_eq!(c.mounts[3].kind, MountKind::Tmpfs);
    let h = c.healthcheck.as_ref().unwrap();
    assert_eq!(h.interval_ms, 90_000);
    assert_eq!(c.stop_grace_period_ms, 1500);
}

#[test]
fn deploy_keys_modes_and_the_loose_keys_deploy_overrides() {
    let s = one(r#"
services:
  job:
    image: a
    deploy: {mode: replicated-job, replicas: 3}
  gjob:
    image: a
    deploy: {mode: global-job}
  agent:
    image: a
    deploy:
      mode: global
      endpoint_mode: dnsrr
      placement:
        constraints: [node.role == manager]
        preferences: [{spread: node.labels.zone}]
  web:
    image: a
    restart: on-failure:4
    scale: 2
    cpus: 0.25
    mem_limit: 64m
    deploy:
      rollback_config: {parallelism: 0, failure_action: continue, order: start-first}
      update_config: {parallelism: 2, delay: 10s, monitor: 1m, max_failure_ratio: 0.5}
      resources:
        reservations: {cpus: '0.1', memory: 1G}
  over:
    image: a
    restart: "no"
    scale: 2
    deploy:
      replicas: 5
      restart_policy: {condition: any, delay: 1s, max_attempts: 2, window: 30s}
"#)
    .unwrap();
    assert_eq!(
        svc(&s, "s_job").mode,
        ServiceMode::ReplicatedJob {
            max_concurrent: 3,
            total_completions: 3
        }
    );
    assert_eq!(svc(&s, "s_gjob").mode, ServiceMode::GlobalJob);
    let agent = svc(&s, "s_agent");
    assert_eq!(agent.endpoint_mode, EndpointMode::Dnsrr);
    assert_eq!(agent.task.placement.preferences, ["node.labels.zone"]);
    let web = svc(&s, "s_web");
    assert_eq!(web.mode, ServiceMode::Replicated { replicas: 2 });
    assert_eq!(web.task.restart.condition, RestartCondition::OnFailure);
    assert_eq!(web.task.restart.max_attempts, 4);
    // deploy.resources present: the loose cpus/mem_limit give way to it
    assert_eq!(web.task.resources.limit_nano_cpus, 0);
    assert_eq!(web.task.resources.reserve_memory_bytes, 1 << 30);
    assert_eq!(web.update.parallelism, 2);
    assert_eq!(web.update.monitor_ms, 60_000);
    assert_eq!(web.update.max_failure_ratio, 0.5);
    assert_eq!(web.rollback.parallelism, 0);
    assert_eq!(web.rollback.order, UpdateOrder::StartFirst);
    let over = svc(&s, "s_over");
    assert_eq!(over.mode, ServiceMode::Replicated { replicas: 5 });
    assert_eq!(over.task.restart.condition, RestartCondition::Any);
    assert_eq!(over.task.restart.window_ms, 30_000);
}

#[test]
fn interpolation_uses_the_shell_over_the_env_file_beside_the_stack() {
    let files = [
        (
            "/stack/dir/stack.yml",
            "services:\n  web:\n    image: ${IMG:-nginx}:${TAG}\n    environment:\n      - PRICE=$$5\n      - FROM_SHELL\n    deploy:\n      replicas: ${N}\n    env_file: web.env\n",
        ),
        ("/stack/dir/.env", "TAG=from-dotenv\nN=3\nIMG=dotenv-image\n"),
        ("/stack/dir/web.env", "A=from-env-file\nPRICE=overridden\n"),
    ];
    let s = load_mem(&files, "s", &[("IMG", "shell-image"), ("FROM_SHELL", "x")]).unwrap();
    let web = svc(&s, "s_web");
    assert_eq!(web.task.container.image, "shell-image:from-dotenv");
    assert_eq!(web.mode, ServiceMode::Replicated { replicas: 3 });
    assert_eq!(
        web.task.container.env,
        ["A=from-env-file", "PRICE=$5", "FROM_SHELL=x"]
    );
    // unset without a default: a warning, and an empty string
    let s = one("services:\n  web:\n    image: nginx${SUFFIX}\n").unwrap();
    assert_eq!(svc(&s, "s_web").task.container.image, "nginx");
    assert_eq!(
        s.warnings,
        ["stack.yml: the variable SUFFIX is not set: an empty string is used"]
    );
}

#[test]
fn several_files_merge_with_compose_override_rules() {
    let base = r#"
services:
  web:
    image: nginx:1
    command: [a, b]
    environment: [A=1, B=2]
    ports: ["80:80"]
    volumes: ["/a:/data", "/logs:/logs"]
    deploy: {replicas: 1, labels: [x=1]}
  db:
    image: postgres
"#;
    let over = r#"
services:
  web:
    image: nginx:2
    command: [c]
    environment: {B: 3, C: 4}
    ports: ["443:443"]
    volumes: ["/b:/data"]
    deploy: {replicas: 4, labels: {y: "2"}}
"#;
    let s = load_mem(&[("a.yml", base), ("b.yml", over)], "s", &[]).unwrap();
    let web = svc(&s, "s_web");
    assert_eq!(web.task.container.image, "nginx:2");
    assert_eq!(web.task.container.args, ["c"]);
    assert_eq!(web.task.container.env, ["A=1", "B=3", "C=4"]);
    assert_eq!(
        web.ports.iter().map(|p| p.published).collect::<Vec<_>>(),
        [80, 443]
    );
    let mounts: Vec<(&str, &str)> = web
        .task
        .container
        .mounts
        .iter()
        .map(|m| (m.source.as_str(), m.target.as_str()))
        .collect();
    assert_eq!(mounts, [("/b", "/data"), ("/logs", "/logs")]);
    assert_eq!(web.mode, ServiceMode::Replicated { replicas: 4 });
    assert_eq!(web.labels["x"], "1");
    assert_eq!(web.labels["y"], "2");
    assert!(s.services.iter().any(|x| x.name == "s_db"));
}

#[test]
fn anchors_merge_keys_and_extension_fields() {
    let s = one(r#"
x-defaults: &defaults
  image: busybox
  environment: {A: "1"}
  deploy: &deploy {replicas: 2}
services:
  a:
    <<: *defaults
  b:
    <<: *defaults
    image: other
    deploy:
      <<: *deploy
      replicas: 3
    x-note: ignored quietly
"#)
    .unwrap();
    assert_eq!(s.warnings, Vec::<String>::new());
    assert_eq!(svc(&s, "s_a").task.container.image, "busybox");
    assert_eq!(svc(&s, "s_a").mode, ServiceMode::Replicated { replicas: 2 });
    assert_eq!(svc(&s, "s_b").task.container.image, "other");
    assert_eq!(svc(&s, "s_b").mode, ServiceMode::Replicated { replicas: 3 });
    assert_eq!(svc(&s, "s_b").task.container.env, ["A=1"]);
}

#[test]
fn keys_orc_does_not_honour_are_each_named_and_the_rest_deploys() {
    let s = one(r#"
version: "3.8"
services:
  web:
    image: nginx
    build: .
    container_name: web1
    privileged: true
    network_mode: host
    devices: ["/dev/fuse:/dev/fuse"]
    networks: [front]
    ports: ["127.0.0.1:8080:80"]
networks:
  front: {}
"#)
    .unwrap();
    assert_eq!(s.services.len(), 1);
    let w = s.warnings.join("\n");
    for key in [
        "stack.yml:2:1: version:",
        "services.web.build:",
        "services.web.container_name:",
        "stack.yml:8:5: services.web.privileged: not supported by orc, ignored",
        "services.web.network_mode:",
        "services.web.devices:",
        "services.web.ports[0]: the host address is ignored",
    ] {
        assert!(w.contains(key), "no warning {key:?} in:\n{w}");
    }
    // networks: are honoured now: no warning names them.
    assert!(!w.contains("networks"), "{w}");
    assert_eq!(s.services[0].networks[0].network.0, "s_front");
    // secrets: and configs: are honoured now too (see `tests/secrets.rs` here).
    assert_eq!(s.warnings.len(), 7, "{w}");
}

/// `tests/stacks/invalid/NAME.yml` must be refused with exactly the line in
/// `NAME.err` (`{dir}` stands for the directory).
#[test]
fn invalid_files_are_refused_with_one_golden_line() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stacks/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "only {} invalid files", files.len());
    let mut failures = vec![];
    for f in &files {
        let want = std::fs::read_to_string(f.with_extension("err"))
            .unwrap_or_else(|_| panic!("{} has no .err", f.display()))
            .trim_end()
            .replace("{dir}", &dir.display().to_string());
        let read = |p: &Path| std::fs::read_to_string(p);
        let env: Vars = [("HOME".to_string(), "/root".to_string())].into();
        let got = load(std::slice::from_ref(f), "s", &env, &read);
        match got {
            Ok(_) => failures.push(format!("{}: loaded, expected {want}", f.display())),
            Err(e) => {
                let line = e.to_string();
                assert!(!line.contains('\n'), "{line}");
                if line != want {
                    failures.push(format!("{}:\n  got  {line}\n  want {want}", f.display()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

mod no_panic {
    use super::*;
    use proptest::prelude::*;

    fn corpus() -> Vec<String> {
        let mut v: Vec<String> = ["voting-app", "web-db", "global-agent"]
            .iter()
            .map(|d| example(d))
            .collect();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stacks/invalid");
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|e| e == "yml") {
                v.push(std::fs::read_to_string(p).unwrap());
            }
        }
        v
    }

    fn try_load(text: &str) {
        let _ = load_mem(&[("stack.yml", text)], "s", &[("X", "1")]);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn mutated_stack_files_never_panic_the_loader(
            which in 0usize..64,
            edits in proptest::collection::vec((any::<u16>(), 0u8..4, any::<u8>()), 1..8),
        ) {
            let corpus = corpus();
            let mut bytes = corpus[which % corpus.len()].clone().into_bytes();
            for (at, kind, b) in edits {
                if bytes.is_empty() { break; }
                let i = at as usize % bytes.len();
                let pick = b"{}[]:-,&*<>|'\"$#\n \t0123abc!%@`?~";
                let c = pick[b as usize % pick.len()];
                match kind {
                    0 => bytes[i] = c,
                    1 => bytes.insert(i, c),
                    2 => { bytes.remove(i); }
                    _ => bytes.truncate(i),
                }
            }
            try_load(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn arbitrary_text_never_panics_the_loader(text in "[ -~\n\t]{0,400}") {
            try_load(&text);
        }

        #[test]
        fn arbitrary_service_values_never_panic_the_loader(
            key in "(image|command|ports|volumes|deploy|healthcheck|depends_on|environment|expose|restart|scale|logging)",
            value in "[ -~]{0,60}",
        ) {
            try_load(&format!("services:\n  a:\n    image: x\n    {key}: {value}\n  b:\n    image: y\n"));
        }
    }
}

mod planning {
    use super::*;
    use crate::stack::plan::{plan, Action};
    use crate::store::{Command, Response, Service, ServiceId, State};

    /// The state once `specs` are deployed, their networks made as the leader makes
    /// them (by name: `STACK_default` and the like).
    fn deployed(specs: &[ServiceSpec]) -> State {
        let mut st = State::default();
        let mut names: Vec<&str> = specs
            .iter()
            .flat_map(|s| s.networks.iter().map(|a| a.network.0.as_str()))
            .collect();
        names.sort();
        names.dedup();
        for (i, name) in names.into_iter().enumerate() {
            let (r, _) = st.apply(&Command::CreateNetwork {
                network: crate::store::Network {
                    id: crate::store::NetworkId(format!("{:016x}", 0xa000 + i)),
                    spec: crate::store::NetworkSpec {
                        name: name.into(),
                        ..Default::default()
                    },
                    created_ms: 1,
                },
            });
            assert_eq!(r, Response::Ok);
        }
        let specs = resolved(&st, specs);
        for (i, s) in specs.iter().enumerate() {
            let (r, _) = st.apply(&Command::CreateService {
                service: Service {
                    id: ServiceId(format!("{i:016x}")),
                    spec: s.clone(),
                    previous_spec: None,
                    version: 1,
                    created_ms: 0,
                    updated_ms: 0,
                    vip: String::new(),
                },
            });
            assert_eq!(r, Response::Ok);
        }
        st
    }

    fn stack(text: &str) -> Vec<ServiceSpec> {
        load_mem(&[("stack.yml", text)], "shop", &[])
            .unwrap()
            .services
    }

    /// `specs` with their networks' names resolved to ids in `st`, as the leader does.
    fn resolved(st: &State, specs: &[ServiceSpec]) -> Vec<ServiceSpec> {
        let mut specs = specs.to_vec();
        for s in &mut specs {
            crate::store::network::resolve_attachments(&|n| st.network_named(n), s)
                .expect("networks exist");
        }
        specs
    }

    const V1: &str = "services:\n  web: {image: 'web:1', ports: ['8080:80']}\n  db: {image: db}\n  old: {image: old}\n";
    const V2: &str = "services:\n  web: {image: 'web:2', ports: ['8080:80']}\n  db: {image: db, deploy: {replicas: 2}}\n";

    #[test]
    fn a_redeploy_of_the_same_files_changes_nothing() {
        let st = deployed(&stack(V1));
        let items = plan(&st, "shop", &resolved(&st, &stack(V1)), true).unwrap();
        assert!(
            items.iter().all(|i| i.action == Action::Unchanged),
            "{items:?}"
        );
    }

    #[test]
    fn the_plan_names_each_change_and_prunes_only_when_asked() {
        let st = deployed(&stack(V1));
        let items = plan(&st, "shop", &resolved(&st, &stack(V2)), false).unwrap();
        let web = items.iter().find(|i| i.service == "shop_web").unwrap();
        assert_eq!(web.action, Action::Update);
        assert_eq!(web.changes, ["task.container.image"]);
        assert!(web.replaces_tasks);
        let db = items.iter().find(|i| i.service == "shop_db").unwrap();
        assert_eq!(db.changes, ["mode.replicas"]);
        assert!(!db.replaces_tasks);
        assert!(!items.iter().any(|i| i.action == Action::Remove));
        let items = plan(&st, "shop", &resolved(&st, &stack(V2)), true).unwrap();
        let old = items.iter().find(|i| i.service == "shop_old").unwrap();
        assert_eq!(old.action, Action::Remove);
    }

    #[test]
    fn names_and_ports_of_other_stacks_are_refused() {
        let st = deployed(&stack(V1));
        let other = load_mem(
            &[(
                "stack.yml",
                "services:\n  web: {image: x, ports: ['8080:80']}\n",
            )],
            "blog",
            &[],
        )
        .unwrap();
        let e = plan(&st, "blog", &other.services, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "services.web.ports: port 8080/tcp is already published by service shop_web"
        );
        let mut foreign = stack(V1);
        foreign[0].labels.insert(STACK_LABEL.into(), "blog".into());
        let st = deployed(&foreign);
        let e = plan(&st, "shop", &resolved(&st, &stack(V1)), false).unwrap_err();
        assert!(
            e.to_string()
                .contains("is not part of stack shop (it is in stack blog)"),
            "{e}"
        );
    }

    #[test]
    fn a_stack_entry_applies_whole_or_not_at_all() {
        let mut st = deployed(&stack(V1));
        let before = st.clone();
        let new = resolved(&st, &stack(V2));
        let web = st
            .services
            .values()
            .find(|s| s.spec.name == "shop_web")
            .unwrap()
            .clone();
        let old = st
            .services
            .values()
            .find(|s| s.spec.name == "shop_old")
            .unwrap()
            .clone();
        // a creation whose name is taken: nothing at all changes
        let cmd = Command::DeployStack {
            create: vec![Service {
                id: ServiceId("ffff".into()),
                spec: new[0].clone(),
                ..web.clone()
            }],
            update: vec![],
            remove: vec![old.id.clone()],
            create_networks: vec![],
            remove_networks: vec![],
            create_secrets: vec![],
            update_secrets: vec![],
            remove_secrets: vec![],
        };
        let (r, keys) = st.apply(&cmd);
        assert!(matches!(r, Response::Rejected(_)), "{r:?}");
        assert!(keys.is_empty());
        assert_eq!(st, before);
        // a valid one: update and removal together
        let cmd = Command::DeployStack {
            create: vec![],
            update: vec![Service {
                spec: new.iter().find(|s| s.name == "shop_web").unwrap().clone(),
                version: 2,
                ..web.clone()
            }],
            remove: vec![old.id.clone()],
            create_networks: vec![],
            remove_networks: vec![],
            create_secrets: vec![],
            update_secrets: vec![],
            remove_secrets: vec![],
        };
        assert_eq!(st.apply(&cmd).0, Response::Ok);
        assert_eq!(st.services[&web.id].spec.task.container.image, "web:2");
        assert!(!st.services.contains_key(&old.id));
    }

    #[test]
    fn network_plan_makes_the_missing_leaves_the_existing_and_refuses_a_missing_external() {
        use crate::stack::plan::{networks_to_remove, plan_networks};
        let text = "services:\n  a: {image: x, networks: [front, corp]}\n  b: {image: y}\nnetworks:\n  front: {internal: true}\n  corp: {external: true}\n";
        let s = load_mem(&[("stack.yml", text)], "shop", &[]).unwrap();
        let mut st = State::default();
        // The external network is missing: refused, naming it.
        let e = plan_networks(&st, "shop", &s.networks)
            .unwrap_err()
            .to_string();
        assert!(e.contains("external network corp not found"), "{e}");
        for (i, (name, internal)) in [("corp", false), ("shop_front", false)].iter().enumerate() {
            let mut spec = crate::store::NetworkSpec {
                name: name.to_string(),
                internal: *internal,
                ..Default::default()
            };
            if name.starts_with("shop_") {
                spec.labels.insert(STACK_LABEL.into(), "shop".into());
            }
            st.apply(&Command::CreateNetwork {
                network: crate::store::Network {
                    id: crate::store::NetworkId(format!("{:016x}", 0xb000 + i)),
                    spec,
                    created_ms: 1,
                },
            });
        }
        let (items, warnings) = plan_networks(&st, "shop", &s.networks).unwrap();
        let got: Vec<(&str, Action, bool)> = items
            .iter()
            .map(|i| (i.network.as_str(), i.action, i.external))
            .collect();
        assert_eq!(
            got,
            [
                ("corp", Action::Unchanged, true),
                ("shop_default", Action::Create, false),
                ("shop_front", Action::Unchanged, false),
            ]
        );
        // shop_front exists without internal: left as it is, named in a warning.
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(
                "network shop_front exists with other options (internal: false → true)"
            ),
            "{warnings:?}"
        );
        // Removal: the stack's own networks no spec names; never an external one.
        let (gone, w) = networks_to_remove(&st, "shop", &[], &[]);
        let gone: Vec<&str> = gone.iter().map(|n| n.spec.name.as_str()).collect();
        assert_eq!(gone, ["shop_front"]);
        assert!(w.is_empty());
        let mut user = s.services[0].clone();
        user.networks = vec![crate::store::NetworkAttachment::to(
            crate::store::NetworkId(format!("{:016x}", 0xb001)),
        )];
        user.name = "other_x".into();
        let (gone, w) = networks_to_remove(&st, "shop", &[], &[&user]);
        assert!(gone.is_empty());
        assert_eq!(w, ["network shop_front is left: still in use by other_x"]);
    }
}

#[test]
fn container_options_and_generic_resources_are_honoured_in_docker_s_forms() {
    let s = one(r#"
services:
  a:
    image: busybox
    hostname: box-a
    cap_add: [NET_ADMIN, CAP_SYS_PTRACE]
    cap_drop: [ALL]
    sysctls:
      net.core.somaxconn: 1024
      net.ipv4.tcp_syncookies: "0"
    ulimits:
      nproc: 65535
      nofile: {soft: 20000, hard: 40000}
    init: true
    stop_signal: SIGQUIT
    extra_hosts: ["db:10.0.0.5", "cache=10.0.0.6"]
    tty: true
    stdin_open: true
    read_only: true
    dns: 9.9.9.9
    dns_search: [example.com, example.org]
    group_add: [audio, 1001]
    deploy:
      resources:
        reservations:
          generic_resources:
            - discrete_resource_spec: {kind: gpu, value: 2}
            - named_resource_spec: {kind: fpga, value: f1}
  b:
    image: busybox
    sysctls: ["net.core.somaxconn=512"]
    extra_hosts:
      db: 10.0.0.7
    dns: [1.1.1.1, 8.8.8.8]
"#)
    .unwrap();
    let a = svc(&s, "s_a");
    let o = &a.task.container.options;
    assert_eq!(o.hostname, "box-a");
    assert_eq!(o.cap_add, ["NET_ADMIN", "CAP_SYS_PTRACE"]);
    assert_eq!(o.cap_drop, ["ALL"]);
    assert_eq!(o.sysctls["net.core.somaxconn"], "1024");
    assert_eq!(o.sysctls["net.ipv4.tcp_syncookies"], "0");
    assert_eq!(
        o.ulimits["nproc"],
        Ulimit {
            soft: 65535,
            hard: 65535
        }
    );
    assert_eq!(
        o.ulimits["nofile"],
        Ulimit {
            soft: 20000,
            hard: 40000
        }
    );
    assert!(o.init && o.tty && o.stdin_open && o.read_only);
    assert_eq!(o.stop_signal, "SIGQUIT");
    assert_eq!(o.extra_hosts, ["db:10.0.0.5", "cache:10.0.0.6"]);
    assert_eq!(o.dns, ["9.9.9.9"]);
    assert_eq!(o.dns_search, ["example.com", "example.org"]);
    assert_eq!(o.group_add, ["audio", "1001"]);
    assert_eq!(
        a.task.resources.generic_resources,
        [("gpu".to_string(), 2)].into()
    );
    let b = &svc(&s, "s_b").task.container.options;
    assert_eq!(b.sysctls["net.core.somaxconn"], "512");
    assert_eq!(b.extra_hosts, ["db:10.0.0.7"]);
    assert_eq!(b.dns, ["1.1.1.1", "8.8.8.8"]);
    // Only the named generic resource is warned about: every option is honoured.
    assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
    assert!(
        s.warnings[0].contains("generic_resources[1].named_resource_spec"),
        "{:?}",
        s.warnings
    );
}

#[test]
fn bad_container_options_are_refused_at_their_line() {
    let cases = [
        (
            "    sysctls: {kernel.panic: 1}\n",
            "stack.yml:5:14: services.a.sysctls: kernel.panic is not namespaced",
        ),
        (
            "    cap_add: [FLY]\n",
            "stack.yml:5:14: services.a.cap_add: \"FLY\" is not a Linux capability",
        ),
        (
            "    ulimits: {nofile: {soft: 10, hard: 5}}\n",
            "stack.yml:5:14: services.a.ulimits: nofile: the soft limit 10 is above the hard limit 5",
        ),
        (
            "    extra_hosts: [\"db\"]\n",
            "services.a.extra_hosts[0]: expected HOST:IP",
        ),
        (
            "    stop_signal: SIGNOPE\n",
            "services.a.stop_signal: \"SIGNOPE\" is not a signal",
        ),
        (
            "    dns: dns.google\n",
            "services.a.dns: \"dns.google\" is not an IP address",
        ),
        (
            "    deploy: {resources: {reservations: {generic_resources: [{discrete_resource_spec: {kind: gpu, value: 0}}]}}}\n",
            "generic_resources[0].discrete_resource_spec.value: a count of at least 1 is needed",
        ),
    ];
    for (line, want) in cases {
        let text = format!("services:\n  a:\n    image: busybox\n\n{line}");
        let got = one(&text).expect_err(line).to_string();
        assert!(got.contains(want), "{line}: got {got:?}, want {want:?}");
    }
}

#[test]
fn warnings_are_kept_when_the_stack_is_then_refused() {
    let map: BTreeMap<PathBuf, String> = [(
        PathBuf::from("stack.yml"),
        "services:\n  db:\n    image: postgres\n    privileged: true\n    volumes: [\"${PGDATA}:/data\"]\n"
            .to_string(),
    )]
    .into();
    let read = move |p: &Path| {
        map.get(p)
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "not found"))
    };
    let (got, warnings) =
        crate::stack::load_reporting(&["stack.yml".into()], "s", &Vars::new(), &read);
    let e = got.unwrap_err().to_string();
    assert_eq!(
        e,
        "stack.yml:5:15: services.db.volumes[0]: ${PGDATA} is not set, so the volume source is empty in \":/data\""
    );
    let w = warnings.join("\n");
    assert!(w.contains("the variable PGDATA is not set"), "{w}");
    assert!(w.contains("services.db.privileged"), "{w}");
    // A variable that is set, and a written source, load as before.
    let ok = load_mem(
        &[("stack.yml", "services:\n  db:\n    image: postgres\n    volumes: [\"${PGDATA}:/data\"]\nvolumes:\n  pg: {}\n")],
        "s",
        &[("PGDATA", "pg")],
    )
    .unwrap();
    assert_eq!(ok.services[0].task.container.mounts[0].source, "s_pg");
    // A required variable that is unset still warns about the others.
    let (got, warnings) = crate::stack::load_reporting(
        &["stack.yml".into()],
        "s",
        &Vars::new(),
        &|p: &Path| -> std::io::Result<String> {
            if p.ends_with(".env") {
                return Err(std::io::ErrorKind::NotFound.into());
            }
            Ok("services:\n  a:\n    image: ${TAG}x\n    user: ${NEED:?set it}\n".to_string())
        },
    );
    assert!(got
        .unwrap_err()
        .to_string()
        .contains("the variable NEED is required"));
    assert!(
        warnings.iter().any(|w| w.contains("TAG is not set")),
        "{warnings:?}"
    );
}

#[test]
fn merges_follow_yaml_merge_key_rules() {
    let s = one(r#"
x-a: &a {image: a, user: ua, environment: {X: "1"}}
x-b: &b {image: b, working_dir: /b}
services:
  one:
    user: mine
    <<: [*a, *b]
"#)
    .unwrap();
    let c = &svc(&s, "s_one").task.container;
    // the mapping's own key wins, then the first of the list
    assert_eq!(
        (c.user.as_str(), c.image.as_str(), c.workdir.as_str()),
        ("mine", "a", "/b")
    );
    for bad in [
        "x: &x\nservices:\n  w:\n    <<: [*x]\n    image: a\n",
        "services:\n  w:\n    <<: ~\n    image: a\n",
        "services:\n  w:\n    <<: text\n    image: a\n",
    ] {
        let e = one(bad).unwrap_err().to_string();
        assert!(
            e.contains("services.w.<<: a merge needs a mapping"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn swarm_templates_and_node_attribute_preferences_load_as_written() {
    let s = one(r#"
services:
  web:
    image: nginx
    environment:
      - HOST={{.Node.Hostname}}
      - SLOT={{.Task.Slot}}
    labels: {who: "{{.Service.Name}}"}
    deploy:
      placement:
        preferences: [{spread: node.id}, {spread: node.labels.zone}]
"#)
    .unwrap();
    let web = svc(&s, "s_web");
    assert_eq!(
        web.task.container.env,
        ["HOST={{.Node.Hostname}}", "SLOT={{.Task.Slot}}"]
    );
    assert_eq!(web.task.container.labels["who"], "{{.Service.Name}}");
    let prefs: Vec<String> = web
        .task
        .placement
        .preferences
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(prefs, ["node.id", "node.labels.zone"]);
    let e = one("services:\n  web:\n    image: nginx\n    deploy:\n      placement:\n        preferences: [{spread: node.facts.load1}]\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("spread: expected node.labels.NAME, engine.labels.NAME, node.id"),
        "{e}"
    );
}

#[test]
fn an_image_an_unset_variable_broke_is_refused_naming_it() {
    let e = one("services:\n  web:\n    image: owncloud/server:${VERSION}\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "stack.yml:3:12: services.web.image: \"owncloud/server:\" is not a valid image reference: \
         an empty tag (Docker: invalid reference format) (${VERSION} is not set)"
    );
    for ok in [
        "nginx",
        "nginx:1.25",
        "localhost:5000/a/b:1",
        "a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "orc-test/busybox:1",
    ] {
        assert!(
            one(&format!("services:\n  web:\n    image: {ok}\n")).is_ok(),
            "{ok}"
        );
    }
    for bad in ["nginx@", ":1", "a//b", "a/", "a/:1", "a@sha256:00"] {
        assert!(
            one(&format!("services:\n  web:\n    image: \"{bad}\"\n")).is_err(),
            "{bad}"
        );
    }
}

mod secrets;

#[test]
fn x_orc_volume_makes_a_volume_follow_per_volume_or_per_service() {
    let s = one("services:
  db:
    image: postgres:16
    volumes: [pgdata:/var/lib/postgresql/data, cache:/cache]
  queue:
    image: q:1
    volumes: [qdata:/data]
    x-orc-volume: {follow: true, keep: true}
volumes:
  pgdata:
    x-orc-volume: {follow: true}
  cache: {}
  qdata: {}
")
    .unwrap();
    let db = &svc(&s, "s_db").task.container.mounts;
    assert_eq!(db[0].source, "s_pgdata");
    assert!(db[0].follow && !db[0].keep);
    assert!(!db[1].follow, "cache does not follow");
    let q = &svc(&s, "s_queue").task.container.mounts;
    assert!(q[0].follow && q[0].keep);
    // Or a label, for a file that must read the same to Docker.
    let labelled = |policy: &str| {
        one(&format!(
            "services:
  db:
    image: a
    volumes: [v:/d]
    deploy: {{labels: [orc.mount-policy={policy}]}}
volumes:
  v: {{}}
"
        ))
    };
    let s = labelled("follow").unwrap();
    assert!(svc(&s, "s_db").task.container.mounts[0].follow);
    let e = labelled("follw").unwrap_err().to_string();
    assert!(
        e.contains("deploy.labels.orc.mount-policy") && e.contains("follw"),
        "{e}"
    );
    // A shared driver cannot follow; neither can a typo.
    let e = one("services:
  db: {image: a, volumes: [v:/d]}
volumes:
  v: {driver: nfs, x-orc-volume: {follow: true}}
")
    .unwrap_err()
    .to_string();
    assert!(e.contains("only a volume of the local driver"), "{e}");
    let e = one("services:
  db: {image: a, volumes: [v:/d], x-orc-volume: {folow: true}}
volumes:
  v: {}
")
    .unwrap_err()
    .to_string();
    assert!(e.contains("folow"), "{e}");
}
