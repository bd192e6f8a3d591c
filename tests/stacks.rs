//! Level 3: stacks on the real Docker engine. `orc stack deploy` of the compose
//! examples (with the stand-in images of tests/images/build.sh), start order under
//! depends_on, dry runs and redeploys that change nothing, refused deploys that leave
//! nothing behind, pruning.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

/// Removes the containers of a stack at the end, even on failure.
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=com.docker.stack.namespace={}", self.0);
        let ids = docker(&["ps", "-aq", "--filter", &filter]);
        let ids: Vec<&str> = ids.lines().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            docker(&args);
        }
    }
}

fn example(dir: &str) -> String {
    format!(
        "{}/compose-examples/{dir}/stack.yml",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// `orc ARGS` against `n` with extra environment variables.
fn orc_env(n: &Node, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(bin())
        .arg("-H")
        .arg(n.sock())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run orc")
}

fn ok_env(n: &Node, env: &[(&str, &str)], args: &[&str]) -> String {
    let o = orc_env(n, env, args);
    assert!(
        o.status.success(),
        "orc {args:?} failed: {}\n--- daemon log ---\n{}",
        String::from_utf8_lossy(&o.stderr),
        n.log()
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stack_tasks(n: &Node, stack: &str) -> Vec<serde_json::Value> {
    n.json(&["stack", "ps", stack])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn services(n: &Node) -> Vec<serde_json::Value> {
    n.json(&["service", "ls"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn http_get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.contains(" 200 ").then_some(body)
}

const WEB_DB_ENV: &[(&str, &str)] = &[
    ("WEB_IMAGE", "orc-test/web:1"),
    ("DB_IMAGE", "orc-test/postgres:1"),
];

#[test]
fn the_web_db_example_starts_its_database_first_and_a_redeploy_replaces_nothing() {
    ensure_images();
    let stack = format!("wd{}", std::process::id());
    let _c = Cleanup(stack.clone());
    let nodes = cluster(1, 1, &[]);
    let n = &nodes[0];
    let file = example("web-db");

    // A dry run on an empty cluster: the plan, and nothing created.
    let out = ok_env(
        n,
        WEB_DB_ENV,
        &["stack", "deploy", "--dry-run", "-c", &file, &stack],
    );
    assert!(
        out.contains(&format!("Would create service {stack}_web")),
        "{out}"
    );
    assert!(
        out.contains(&format!("Would create service {stack}_db")),
        "{out}"
    );
    assert!(services(n).is_empty(), "a dry run created services");

    let out = ok_env(n, WEB_DB_ENV, &["stack", "deploy", "-c", &file, &stack]);
    assert!(
        out.contains(&format!("verify: Service {stack}_web converged")),
        "{out}"
    );

    // depends_on (service_healthy): the web tasks were made after the database ran
    // healthy (orc reports running only once the health check passed).
    let tasks = stack_tasks(n, &stack);
    let db_running = tasks
        .iter()
        .filter(|t| t["service"] == format!("{stack}_db").as_str() && t["state"] == "running")
        .map(|t| t["timestamp_ms"].as_u64().unwrap())
        .min()
        .expect("a running db task");
    let web_created: Vec<u64> = tasks
        .iter()
        .filter(|t| t["service"] == format!("{stack}_web").as_str())
        .map(|t| t["created_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(web_created.len(), 2, "{tasks:?}");
    for c in &web_created {
        assert!(
            *c >= db_running,
            "a web task was created at {c}, before the db ran healthy at {db_running}"
        );
    }
    // The contract: stack ps has the objects of service ps; stack ls has name, services.
    for t in &tasks {
        for k in [
            "id",
            "service",
            "slot",
            "node_id",
            "desired_state",
            "state",
            "error",
            "image",
        ] {
            assert!(t.get(k).is_some(), "stack ps lacks {k}: {t}");
        }
    }
    let ls = n.json(&["stack", "ls"]);
    assert_eq!(ls, serde_json::json!([{"name": stack, "services": 2}]));
    // Published through the mesh, as in the file.
    wait_for(Duration::from_secs(20), "web on 8080", || http_get(8080));

    // The same files again: nothing changes, no task is replaced.
    let ids = |tasks: &[serde_json::Value]| -> Vec<String> {
        let mut v: Vec<String> = tasks.iter().map(|t| t["id"].to_string()).collect();
        v.sort();
        v
    };
    let versions = |n: &Node| -> Vec<String> {
        services(n)
            .iter()
            .map(|s| format!("{}@{}", s["name"], s["version"]))
            .collect()
    };
    let before_ids = ids(&stack_tasks(n, &stack));
    let before_versions = versions(n);
    let out = ok_env(n, WEB_DB_ENV, &["stack", "deploy", "-c", &file, &stack]);
    assert!(
        out.contains(&format!("Unchanged service {stack}_web")),
        "{out}"
    );
    assert!(
        out.contains(&format!("Unchanged service {stack}_db")),
        "{out}"
    );
    assert!(!out.contains("Updating"), "{out}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ids(&stack_tasks(n, &stack)), before_ids);
    assert_eq!(versions(n), before_versions);

    // A dry run of a change: the plan names the fields; nothing changes.
    let over = tempfile::NamedTempFile::with_suffix(".yml").unwrap();
    std::fs::write(
        over.path(),
        "services:\n  web:\n    environment: [COLOUR=blue]\n    deploy: {replicas: 3}\n",
    )
    .unwrap();
    let overp = over.path().to_str().unwrap();
    let out = ok_env(
        n,
        WEB_DB_ENV,
        &[
            "stack",
            "deploy",
            "--dry-run",
            "-c",
            &file,
            "-c",
            overp,
            &stack,
        ],
    );
    assert!(
        out.contains(&format!(
            "Would update service {stack}_web (changes: mode.replicas, task.container.env)"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("Unchanged service {stack}_db")),
        "{out}"
    );
    assert_eq!(versions(n), before_versions);
    assert_eq!(ids(&stack_tasks(n, &stack)), before_ids);

    // Applied: web rolls (the db keeps its task).
    let db_ids = |n: &Node| -> Vec<String> {
        stack_tasks(n, &stack)
            .iter()
            .filter(|t| t["service"] == format!("{stack}_db").as_str())
            .map(|t| t["id"].to_string())
            .collect()
    };
    let db_before = db_ids(n);
    let out = ok_env(
        n,
        WEB_DB_ENV,
        &["stack", "deploy", "-c", &file, "-c", overp, &stack],
    );
    assert!(
        out.contains(&format!("Updating service {stack}_web")),
        "{out}"
    );
    assert_eq!(db_ids(n), db_before);
    let running_web = stack_tasks(n, &stack)
        .iter()
        .filter(|t| {
            t["service"] == format!("{stack}_web").as_str()
                && t["state"] == "running"
                && t["up_to_date"] == true
        })
        .count();
    assert_eq!(running_web, 3);

    n.ok(&["stack", "rm", &stack]);
    assert!(services(n).is_empty());
    let err = n.fails(&["stack", "rm", &stack]);
    assert!(err.contains(&format!("stack {stack} not found")), "{err}");
}

#[test]
fn a_refused_deploy_leaves_nothing_and_prune_removes_what_the_files_dropped() {
    ensure_images();
    let stack = format!("rf{}", std::process::id());
    let _c = Cleanup(stack.clone());
    let _c2 = Cleanup(format!("{stack}b"));
    let nodes = cluster(1, 0, &[]);
    let n = &nodes[0];
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| -> String {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let port = free_port().to_string();

    // Refused by the loader: one line naming the file, line, column and field.
    let bad = write(
        "bad.yml",
        "services:\n  a:\n    image: orc-test/busybox:1\n    deploy:\n      replicas: three\n",
    );
    let err = n.fails(&["stack", "deploy", "-c", &bad, &stack]);
    assert_eq!(
        err.trim_end(),
        format!("error: {bad}:5:17: services.a.deploy.replicas: expected a whole number of at least 0, found \"three\"")
    );
    assert!(services(n).is_empty());

    // Refused because of an unset variable: the warnings come first, then the one error
    // line naming the variable.
    let unset = write(
        "unset.yml",
        "services:\n  db:\n    image: orc-test/busybox:1\n    privileged: true\n    volumes: [\"${PGDATA_UNSET_IN_TEST}:/data\"]\n",
    );
    let o = orc_env(n, &[], &["stack", "deploy", "-c", &unset, &stack]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with("warning: ") && lines[1].starts_with("warning: "),
        "{err}"
    );
    assert!(
        err.contains("privileged") && err.contains("PGDATA_UNSET_IN_TEST is not set"),
        "{err}"
    );
    assert_eq!(
        lines[2],
        format!("error: {unset}:5:15: services.db.volumes[0]: ${{PGDATA_UNSET_IN_TEST}} is not set, so the volume source is empty in \":/data\"")
    );
    assert!(services(n).is_empty());

    // A first stack; then a second whose last service takes the first one's port:
    // refused by the leader, and none of the second stack exists.
    let one = write(
        "one.yml",
        &format!(
            "services:\n  web:\n    image: orc-test/web:1\n    ports: [\"{port}:80\"]\n  side:\n    image: orc-test/busybox:1\n    command: sleep 1000\n"
        ),
    );
    n.ok(&["stack", "deploy", "-d", "-c", &one, &stack]);
    // Its network exists already with other options: the leader's warning about it is
    // printed before the refusal, not lost with it.
    n.ok(&["network", "create", &format!("{stack}b_front")]);
    let two = write(
        "two.yml",
        &format!(
            "services:\n  a:\n    image: orc-test/busybox:1\n    command: sleep 1000\n    networks: [front]\n  z:\n    image: orc-test/web:1\n    ports: [\"{port}:80\"]\nnetworks:\n  front:\n    internal: true\n"
        ),
    );
    let o = orc_env(
        n,
        &[],
        &["stack", "deploy", "-d", "-c", &two, &format!("{stack}b")],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.trim_end().lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(&format!(
            "warning: network {stack}b_front exists with other options"
        )),
        "{err}"
    );
    assert!(
        lines[1].starts_with("error: ")
            && lines[1].contains(&format!(
                "services.z.ports: port {port}/tcp is already published by service {stack}_web"
            )),
        "{err}"
    );
    n.ok(&["network", "rm", &format!("{stack}b_front")]);
    let names: Vec<String> = services(n).iter().map(|s| s["name"].to_string()).collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // A job the app waits for (service_completed_successfully), and a service dropped
    // from the files: kept without --prune, removed with it.
    let three = write(
        "three.yml",
        "services:\n  web:\n    image: orc-test/web:1\n  migrate:\n    image: orc-test/busybox:1\n    command: sh -c 'sleep 2'\n    deploy: {mode: replicated-job}\n  app:\n    image: orc-test/busybox:1\n    command: sleep 1000\n    depends_on:\n      migrate: {condition: service_completed_successfully}\n",
    );
    let out = n.ok(&["stack", "deploy", "-c", &three, &stack]);
    assert!(
        !out.contains(&format!("Removing service {stack}_side")),
        "{out}"
    );
    assert_eq!(services(n).len(), 4);
    let tasks = stack_tasks(n, &stack);
    let done = tasks
        .iter()
        .filter(|t| t["service"] == format!("{stack}_migrate").as_str() && t["state"] == "complete")
        .map(|t| t["timestamp_ms"].as_u64().unwrap())
        .min()
        .expect("the job completed");
    let app: Vec<u64> = tasks
        .iter()
        .filter(|t| t["service"] == format!("{stack}_app").as_str())
        .map(|t| t["created_ms"].as_u64().unwrap())
        .collect();
    assert!(
        !app.is_empty() && app.iter().all(|c| *c >= done),
        "app {app:?}, job done {done}"
    );

    let out = n.ok(&["stack", "deploy", "--prune", "-c", &three, &stack]);
    assert!(
        out.contains(&format!("Removing service {stack}_side")),
        "{out}"
    );
    let names: Vec<String> = services(n)
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert!(!names.contains(&format!("{stack}_side")), "{names:?}");
    assert_eq!(names.len(), 3);
    assert!(Path::new(&three).exists());
}
