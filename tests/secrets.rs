//! Secrets and configs on the real Docker engine: a task reads its secret from a tmpfs
//! at /run/secrets/..., with the owner and mode asked for; the plaintext is in no file
//! of the manager's data dir, in no `inspect` and in no log; a rotation rolls the
//! service under the same name; the host's tmpfs goes with the task.

mod common;

use std::time::Duration;

use common::*;

/// The service's running, up-to-date container ids.
fn containers(service: &str) -> Vec<String> {
    let filter = format!("label=orc.service.name={service}");
    docker(&["ps", "-q", "--filter", filter.as_str()])
        .lines()
        .map(str::to_string)
        .collect()
}

/// `cat PATH` in container `c`, or "" when it fails or takes over 10 s (polled while
/// the service rolls, the container may be stopping under the exec).
fn cat_in(c: &str, path: &str) -> String {
    let mut cmd = std::process::Command::new("docker");
    cmd.args(["exec", c, "cat", path]);
    output_within(&mut cmd, Duration::from_secs(10), "docker exec cat")
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[test]
fn a_task_reads_its_secret_from_a_tmpfs_and_the_plaintext_is_nowhere_else() {
    ensure_images();
    let name = format!("sec{}", std::process::id());
    let _c = RemoveContainers(vec![name.clone()]);
    let nodes = cluster(1, 0, &[]);
    let n = &nodes[0];
    let work = tempfile::tempdir().unwrap();
    let plain = format!("pw-{:016x}", rand_u64());
    let rotated = format!("pw2-{:016x}", rand_u64());
    let conf = format!("listen {:08x}\n", rand_u64() as u32);
    let f = |file: &str, content: &str| {
        let p = work.path().join(file);
        std::fs::write(&p, content).unwrap();
        p.display().to_string()
    };
    let (pw_file, pw2_file, conf_file) = (f("pw", &plain), f("pw2", &rotated), f("conf", &conf));

    n.ok(&["secret", "create", "--label", "team=db", "db_pw", &pw_file]);
    n.ok(&["config", "create", "app_conf", &conf_file]);
    // Unknown secrets, bad names and contents over 500 KB are refused at the door.
    let e = n.fails(&[
        "service",
        "create",
        "--name",
        &name,
        "--secret",
        "nope",
        "orc-test/busybox:1",
    ]);
    assert!(e.contains("secret nope not found"), "{e}");
    let e = n.fails(&["secret", "create", "bad/name", &pw_file]);
    assert!(e.contains("NAME: \"bad/name\" is not a secret name"), "{e}");
    let big = work.path().join("big");
    std::fs::write(&big, vec![b'x'; 500 * 1024 + 1]).unwrap();
    let e = n.fails(&["secret", "create", "big", big.to_str().unwrap()]);
    assert!(e.contains("at most 512000 bytes"), "{e}");
    std::fs::write(&big, vec![b'x'; 500 * 1024]).unwrap();
    n.ok(&["secret", "create", "big", big.to_str().unwrap()]);
    n.ok(&["secret", "rm", "big"]);

    n.ok(&[
        "service",
        "create",
        "--name",
        &name,
        "--secret",
        "source=db_pw,target=pg_pw,uid=70,gid=71,mode=0400",
        "--config",
        "src=app_conf,target=/etc/app.conf",
        "--update-delay",
        "0s",
        "orc-test/busybox:1",
        "sleep",
        "100000",
    ]);
    let c = wait_for(Duration::from_secs(60), "a running container", || {
        containers(&name).first().cloned()
    });
    assert_eq!(docker(&["exec", &c, "cat", "/run/secrets/pg_pw"]), plain);
    assert_eq!(
        docker(&["exec", &c, "stat", "-c", "%u %g %a", "/run/secrets/pg_pw"]),
        "70 71 400"
    );
    let mounts = docker(&["exec", &c, "grep", "/run/secrets", "/proc/mounts"]);
    assert!(
        mounts.contains("/run/secrets/pg_pw tmpfs") && mounts.contains(" ro,"),
        "{mounts}"
    );
    assert_eq!(docker(&["exec", &c, "cat", "/etc/app.conf"]), conf.trim());
    assert_eq!(
        docker(&["exec", &c, "stat", "-c", "%u %g %a", "/etc/app.conf"]),
        "0 0 444"
    );
    // The host side: one tmpfs for the task, root only.
    let node_id = n.info()["node_id"].as_str().unwrap().to_string();
    let host_dir = std::path::Path::new("/run/orc/secrets").join(&node_id);
    let task_dirs: Vec<_> = std::fs::read_dir(&host_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(task_dirs.len(), 1, "{task_dirs:?}");
    let proc_mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let task_dir = task_dirs[0].display().to_string();
    assert!(
        proc_mounts
            .lines()
            .any(|l| l.starts_with(&format!("tmpfs {task_dir} tmpfs"))),
        "{task_dir} is not a tmpfs"
    );

    // inspect and ls: the contract keys, never the plaintext.
    let ls = n.json(&["secret", "ls"]);
    let s = &ls[0];
    for k in [
        "id",
        "name",
        "labels",
        "created",
        "created_ms",
        "updated",
        "updated_ms",
        "version",
        "services",
    ] {
        assert!(s.get(k).is_some(), "secret ls lacks {k}: {s}");
    }
    assert_eq!(s["services"], serde_json::json!([name]));
    let inspect = n.ok(&["secret", "inspect", "db_pw"]);
    assert!(!inspect.contains(&plain), "{inspect}");
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["size"], plain.len());
    let ci = n.json(&["config", "inspect", "app_conf"]);
    assert_eq!(ci[0]["data"], conf.as_str());
    let si = n.json(&["service", "inspect", &name]);
    let si = if si.is_array() { si[0].clone() } else { si };
    assert_eq!(si["secrets"][0]["name"], "db_pw");
    assert_eq!(si["secrets"][0]["target"], "/run/secrets/pg_pw");
    assert_eq!(si["secrets"][0]["mode"], "0400");
    assert_eq!(si["configs"][0]["target"], "/etc/app.conf");

    // In use: refused, naming the service.
    let e = n.fails(&["secret", "rm", "db_pw"]);
    assert!(e.contains("in use") && e.contains(&name), "{e}");

    // Rotation without renaming: the service rolls to the new content.
    n.ok(&["secret", "update", "db_pw", &pw2_file]);
    let c2 = wait_for(
        Duration::from_secs(60),
        "the rotated secret in a task",
        || {
            containers(&name)
                .into_iter()
                .find(|c| cat_in(c, "/run/secrets/pg_pw") == rotated)
        },
    );
    assert_ne!(c, c2);
    assert_eq!(n.json(&["secret", "ls"])[0]["version"], 2);

    // Neither content is in any file of the data dir, nor in the log.
    for p in [&plain, &rotated] {
        let found = files_containing(&n.dir.path().join("data"), p.as_bytes());
        assert!(found.is_empty(), "plaintext in {found:?}");
        assert!(!n.log().contains(p.as_str()), "plaintext in the daemon log");
    }

    // The task's tmpfs goes with it.
    n.ok(&["service", "rm", &name]);
    wait_for(
        Duration::from_secs(60),
        "the tmpfs of the tasks gone",
        || {
            let left = std::fs::read_dir(&host_dir).map(|d| d.count()).unwrap_or(0);
            (left == 0).then_some(())
        },
    );
    let proc_mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!proc_mounts.contains(&host_dir.display().to_string()));
    n.ok(&["secret", "rm", "db_pw"]);
    n.ok(&["config", "rm", "app_conf"]);
    assert_eq!(n.json(&["secret", "ls"]), serde_json::json!([]));
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

#[test]
fn a_stack_makes_its_secrets_a_redeploy_with_a_new_content_rotates_and_rm_removes_them() {
    ensure_images();
    let stack = format!("sst{}", std::process::id() % 100000);
    let service = format!("{stack}_db");
    let _c = RemoveContainers(vec![service.clone()]);
    let nodes = cluster(1, 0, &[]);
    let n = &nodes[0];
    let work = tempfile::tempdir().unwrap();
    let first = format!("one-{:016x}", rand_u64());
    let second = format!("two-{:016x}", rand_u64());
    std::fs::write(work.path().join("pw.txt"), &first).unwrap();
    let file = work.path().join("stack.yml");
    std::fs::write(
        &file,
        r#"
services:
  db:
    image: orc-test/busybox:1
    command: ["sleep", "100000"]
    environment:
      POSTGRES_PASSWORD_FILE: /run/secrets/db_pw
    secrets:
      - db_pw
    configs:
      - source: motd
        target: /etc/motd
secrets:
  db_pw:
    file: ./pw.txt
configs:
  motd:
    content: "welcome"
"#,
    )
    .unwrap();
    let file = file.display().to_string();
    n.ok(&["stack", "deploy", "-c", &file, &stack]);
    let c = wait_for(Duration::from_secs(60), "the stack's task", || {
        containers(&service).first().cloned()
    });
    assert_eq!(docker(&["exec", &c, "cat", "/run/secrets/db_pw"]), first);
    assert_eq!(docker(&["exec", &c, "cat", "/etc/motd"]), "welcome");
    let ls = n.json(&["secret", "ls"]);
    assert_eq!(ls[0]["name"], format!("{stack}_db_pw"));
    assert_eq!(
        ls[0]["labels"]["com.docker.stack.namespace"],
        stack.as_str()
    );

    // Redeployed unchanged: the secret keeps its version and the task stays.
    n.ok(&["stack", "deploy", "-c", &file, &stack]);
    assert_eq!(n.json(&["secret", "ls"])[0]["version"], 1);
    // A new content under the same name: the service rolls to it.
    std::fs::write(work.path().join("pw.txt"), &second).unwrap();
    n.ok(&["stack", "deploy", "-c", &file, &stack]);
    wait_for(
        Duration::from_secs(60),
        "the rotated secret in the task",
        || {
            containers(&service)
                .into_iter()
                .find(|c| cat_in(c, "/run/secrets/db_pw") == second)
        },
    );
    assert_eq!(n.json(&["secret", "ls"])[0]["version"], 2);
    for p in [&first, &second] {
        let found = files_containing(&n.dir.path().join("data"), p.as_bytes());
        assert!(found.is_empty(), "plaintext in {found:?}");
    }

    // The stack's network has its bridge on the node while a task is on it, and loses
    // it once none is (Docker's address pools hold about 30 bridges).
    let label = format!("label=orc.network.name={stack}_default");
    let bridges = || docker(&["network", "ls", "-q", "--filter", label.as_str()]);
    assert!(!bridges().is_empty(), "no bridge for {stack}_default");
    n.ok(&["stack", "rm", &stack]);
    assert_eq!(n.json(&["secret", "ls"]), serde_json::json!([]));
    assert_eq!(n.json(&["config", "ls"]), serde_json::json!([]));
    wait_for(
        Duration::from_secs(60),
        "the stack network's bridge to go",
        || bridges().is_empty().then_some(()),
    );
}
