//! Backup and restore on the real Docker engine: a 1-node cluster with services, a
//! network, a secret, a config and a node label is backed up; the file is 0600 and
//! holds no secret in the clear; bad files are refused with one line and leave a fresh
//! node as it was; `init --restore` on a fresh daemon gives the same objects, and the
//! secret reaches a task of the new cluster. The backup is served on the local socket
//! only: a manager's own certificate over the cluster port does not get it.
//!
//! Scheduled backups (`orc daemon --backup-schedule 1s --backup-keep 2`): the newest two
//! stay, 0600, and the newest restores. An autolocked cluster's backup restores only
//! with its unlock key, and the restored cluster stays locked with that key.

mod common;

use std::time::Duration;

use common::*;
use orc::proto::{self, control_client::ControlClient, local_client::LocalClient};

/// Removes the test's containers at the end, even on failure.
struct Cleanup(Vec<String>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            remove_containers(name);
        }
    }
}

fn remove_containers(service: &str) {
    let filter = format!("label=orc.service.name={service}");
    for id in docker(&["ps", "-aq", "--filter", filter.as_str()]).lines() {
        docker(&["rm", "-f", id]);
    }
}

fn running(service: &str) -> Vec<String> {
    let filter = format!("label=orc.service.name={service}");
    docker(&["ps", "-q", "--filter", filter.as_str()])
        .lines()
        .map(str::to_string)
        .collect()
}

fn rand_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    format!("{:016x}", h.finish())
}

#[test]
fn a_cluster_restored_from_a_backup_has_the_same_objects_and_its_secret_reaches_a_task() {
    ensure_images();
    let id = std::process::id();
    let (web, db) = (format!("bkweb{id}"), format!("bkdb{id}"));
    let _c = Cleanup(vec![web.clone(), db.clone()]);
    let mut nodes = cluster(1, 0, &[]);
    let n = &nodes[0];
    let work = tempfile::tempdir().unwrap();
    let plain = format!("pw-{}", rand_hex());
    let conf = format!("listen-{}", rand_hex());
    let pw_file = work.path().join("pw");
    std::fs::write(&pw_file, &plain).unwrap();
    let conf_file = work.path().join("conf");
    std::fs::write(&conf_file, &conf).unwrap();
    let net = format!("bknet{id}");
    n.ok(&["network", "create", &net]);
    n.ok(&["secret", "create", "db_pw", pw_file.to_str().unwrap()]);
    n.ok(&["config", "create", "app_conf", conf_file.to_str().unwrap()]);
    let me = n.info()["node_id"].as_str().unwrap().to_string();
    n.ok(&["node", "update", "--label-add", "zone=east-bk", &me]);
    n.ok(&[
        "service",
        "create",
        "--name",
        &db,
        "--network",
        &net,
        "--secret",
        "source=db_pw,target=pg_pw",
        "--config",
        "src=app_conf,target=/etc/app.conf",
        "--constraint",
        "node.labels.zone==east-bk",
        "orc-test/busybox:1",
        "sleep",
        "100000",
    ]);
    n.ok(&[
        "service",
        "create",
        "--name",
        &web,
        "--replicas",
        "2",
        "orc-test/busybox:1",
        "sleep",
        "100000",
    ]);
    wait_for(Duration::from_secs(60), "the old cluster's tasks", || {
        (running(&db).len() == 1 && running(&web).len() == 2).then_some(())
    });

    // The backup: 0600, no secret in the clear; a value of the state is there (the
    // positive control of the same search).
    let file = work.path().join("cluster.orcbak");
    let out = n.ok(&["cluster", "backup", file.to_str().unwrap()]);
    assert!(out.contains("2 services"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let bytes = std::fs::read(&file).unwrap();
    let found = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        found("east-bk") && found(&net),
        "the state is not in the backup"
    );
    assert!(!found(&plain), "the secret's plaintext is in the backup");
    assert!(!found(&conf), "the config's plaintext is in the backup");

    // Over the cluster port, even this manager's own certificate does not get it; the
    // same certificate may list nodes there (the control), and the local socket may
    // back up (above).
    let creds = {
        let n = &mut nodes[0];
        n.kill();
        let member = orc::daemon::read_stored_member(
            &read_tree(&n.dir.path().join("data/db"), "local", "member"),
            &n.dir.path().join("data"),
        )
        .unwrap();
        n.start();
        member.creds
    };
    let n = &nodes[0];
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ch = orc::net::tls_channel(
            &n.addr(),
            creds.client_config().unwrap(),
            Duration::from_secs(10),
        );
        let listed = wait_for_async(|| {
            let ch = ch.clone();
            async move { ControlClient::new(ch).list_nodes(proto::Empty {}).await }
        })
        .await;
        assert_eq!(listed.into_inner().nodes.len(), 1);
        let r = LocalClient::new(ch.clone()).backup(proto::Empty {}).await;
        let s = r.expect_err("the backup over the cluster port was served");
        assert!(
            matches!(
                s.code(),
                tonic::Code::PermissionDenied | tonic::Code::Unimplemented
            ),
            "{s:?}"
        );
    });

    // The old cluster goes (its machine is lost); the new one starts on a fresh daemon.
    nodes[0].kill();
    remove_containers(&db);
    remove_containers(&web);
    let mut fresh = Node::new();
    fresh.start();
    // Bad files change nothing: refused with one line naming the file.
    let cut = work.path().join("cut.orcbak");
    std::fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
    let mut flipped = bytes.clone();
    let at = bytes.len() - 40;
    flipped[at] ^= 0x20;
    let bad = work.path().join("bad.orcbak");
    std::fs::write(&bad, &flipped).unwrap();
    let addr = fresh.addr();
    for (f, why) in [(&cut, "truncated"), (&bad, "damaged")] {
        let e = fresh.fails(&[
            "init",
            "--restore",
            f.to_str().unwrap(),
            "--advertise-addr",
            &addr,
        ]);
        assert!(
            e.contains(&f.display().to_string()) && e.contains(why),
            "{e}"
        );
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        assert_eq!(fresh.info()["state"], "inactive");
    }
    let out = fresh.ok(&[
        "init",
        "--restore",
        file.to_str().unwrap(),
        "--advertise-addr",
        &addr,
    ]);
    assert!(out.contains("orc join --token ORC-1-"), "{out}");

    // The same objects.
    let services: Vec<String> = fresh
        .json(&["service", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        services.contains(&web) && services.contains(&db),
        "{services:?}"
    );
    let nets = fresh.ok(&["network", "ls"]);
    assert!(nets.contains(&net), "{nets}");
    assert_eq!(fresh.json(&["secret", "ls"])[0]["name"], "db_pw");
    assert_eq!(fresh.json(&["config", "ls"])[0]["name"], "app_conf");
    let ci = fresh.json(&["config", "inspect", "app_conf"]);
    assert_eq!(ci[0]["data"], conf.as_str());
    let ns = fresh.nodes();
    assert_eq!(ns.len(), 1, "{ns:?}");
    let new_id = fresh.info()["node_id"].as_str().unwrap().to_string();
    assert_ne!(new_id, me);
    let ni = fresh.json(&["node", "inspect", &new_id]);
    let ni = if ni.is_array() { ni[0].clone() } else { ni };
    assert_eq!(ni["labels"]["zone"], "east-bk", "{ni}");

    // The secret reaches a task of the new cluster (placed by the restored label).
    let c = wait_for(Duration::from_secs(60), "a task of the restored db", || {
        running(&db).first().cloned()
    });
    assert_eq!(docker(&["exec", &c, "cat", "/run/secrets/pg_pw"]), plain);
    assert_eq!(docker(&["exec", &c, "cat", "/etc/app.conf"]), conf);
    wait_for(Duration::from_secs(60), "the restored web replicas", || {
        (running(&web).len() == 2).then_some(())
    });
    // No task of the old cluster is left on record.
    let ps = fresh.json(&["service", "ps", &web]);
    assert_eq!(ps.as_array().unwrap().len(), 2, "{ps}");
    fresh.ok(&["service", "rm", &web]);
    fresh.ok(&["service", "rm", &db]);
}

/// The file names of the scheduled backups `n`'s daemon logged as written, in order.
fn written(n: &Node) -> Vec<String> {
    n.log()
        .lines()
        .filter(|l| l.contains("scheduled backup written"))
        .filter_map(|l| {
            let from = l.find("orc-backup-")?;
            let end = l[from..].find(".orcbak")? + from + ".orcbak".len();
            Some(l[from..end].to_string())
        })
        .collect()
}

/// Every entry of `dir`, sorted.
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn service_names(n: &Node) -> Vec<String> {
    n.json(&["service", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// `orc daemon ARGS` on a fresh data dir, which must exit at once; its stderr.
fn daemon_refuses(args: &[&str]) -> String {
    let d = tempfile::tempdir().unwrap();
    let mut c = std::process::Command::new(bin());
    c.args(["daemon", "--data-path-port", "0", "--data-dir"])
        .arg(d.path().join("data"))
        .arg("--socket")
        .arg(d.path().join("orc.sock"))
        .args(args);
    let o = output_within(
        &mut c,
        Duration::from_secs(30),
        &format!("orc daemon {args:?}"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!o.status.success(), "orc daemon {args:?} was accepted");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn scheduled_backups_keep_the_newest_two_readable_by_root_only_and_the_newest_restores() {
    ensure_images();
    // The shortest period the CLI takes is 1s, and at least one backup is kept: below
    // that the daemon does not start (the 1s / 2 daemon below is the control).
    let e = daemon_refuses(&["--backup-schedule", "999ms"]);
    assert!(e.contains("--backup-schedule: must be at least 1s"), "{e}");
    let e = daemon_refuses(&["--backup-schedule", "1s", "--backup-keep", "0"]);
    assert!(e.contains("--backup-keep: must be at least 1"), "{e}");

    let svc = format!("bksched{}", std::process::id());
    let _c = Cleanup(vec![svc.clone()]);
    let mut n = Node::new();
    n.daemon_args = ["--backup-schedule", "1s", "--backup-keep", "2"]
        .map(String::from)
        .to_vec();
    n.start();
    let vips = random_vip_range();
    n.ok(&["init", "--advertise-addr", &n.addr(), "--vip-range", &vips]);
    n.ok(&[
        "service",
        "create",
        "--name",
        &svc,
        "orc-test/busybox:1",
        "sleep",
        "100000",
    ]);
    let cluster_id = n.info()["cluster_id"].as_str().unwrap().to_string();
    // Three backups taken after the service was created (so the newest holds it).
    let before = written(&n).len();
    let k = wait_for(
        Duration::from_secs(30),
        "3 scheduled backups after the service",
        || {
            let k = written(&n).len();
            (k >= before + 3).then_some(k)
        },
    );
    // Stopped just after a backup was logged, a second before the next one is due.
    wait_for(Duration::from_secs(10), "one more scheduled backup", || {
        (written(&n).len() > k).then_some(())
    });
    n.kill();
    remove_containers(&svc);
    let logged = written(&n);
    assert!(logged.len() >= 4, "{logged:?}");
    let dir = n.dir.path().join("data").join(orc::backup::BACKUP_DIR);
    // Exactly the newest two remain, and nothing else (no temporary file left).
    assert_eq!(
        entries(&dir),
        logged[logged.len() - 2..].to_vec(),
        "{logged:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode & 0o077, 0, "{}: mode {dir_mode:o}", dir.display());
    let mut created = vec![];
    for f in entries(&dir) {
        let path = dir.join(&f);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}: mode {mode:o}");
        let meta = orc::backup::Backup::read_meta(&path).unwrap();
        assert_eq!(meta.cluster_id, cluster_id);
        assert_eq!(meta.services, 1, "{f}: {meta:?}");
        assert!(!meta.autolock);
        created.push(meta.created_ms);
    }
    assert!(created[0] < created[1], "{created:?}");

    // The newest restores on a fresh daemon, with the service, which runs there.
    let newest = dir.join(logged.last().unwrap());
    let mut fresh = Node::new();
    fresh.start();
    let out = fresh.ok(&[
        "init",
        "--restore",
        newest.to_str().unwrap(),
        "--advertise-addr",
        &fresh.addr(),
    ]);
    assert!(out.contains("1 services"), "{out}");
    assert_ne!(fresh.info()["cluster_id"], cluster_id.as_str());
    assert_eq!(service_names(&fresh), vec![svc.clone()]);
    wait_for(
        Duration::from_secs(60),
        "the restored service's task",
        || (running(&svc).len() == 1).then_some(()),
    );
    fresh.ok(&["service", "rm", &svc]);
}

/// `orc unlock` on `n` with `key` on stdin.
fn unlock(n: &Node, key: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut c = std::process::Command::new(bin())
        .arg("-H")
        .arg(n.sock())
        .arg("unlock")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run orc unlock");
    c.stdin
        .take()
        .unwrap()
        .write_all(format!("{key}\n").as_bytes())
        .unwrap();
    c.wait_with_output().unwrap()
}

#[test]
fn an_autolocked_clusters_backup_restores_only_with_its_unlock_key() {
    ensure_images();
    let svc = format!("bklock{}", std::process::id());
    let _c = Cleanup(vec![svc.clone()]);
    let mut nodes = cluster(1, 0, &["--autolock"]);
    let n = &nodes[0];
    let key = n.ok(&["unlock-key", "-q"]).trim().to_string();
    let work = tempfile::tempdir().unwrap();
    let conf = format!("conf-{}", rand_hex());
    let conf_file = work.path().join("conf");
    std::fs::write(&conf_file, &conf).unwrap();
    n.ok(&["config", "create", "lock_conf", conf_file.to_str().unwrap()]);
    n.ok(&[
        "service",
        "create",
        "--name",
        &svc,
        "--config",
        "src=lock_conf,target=/etc/app.conf",
        "orc-test/busybox:1",
        "sleep",
        "100000",
    ]);
    let file = work.path().join("locked.orcbak");
    let out = n.ok(&["cluster", "backup", file.to_str().unwrap()]);
    assert!(out.contains("autolocked"), "{out}");
    assert!(orc::backup::Backup::read_meta(&file).unwrap().autolock);
    nodes[0].kill();
    remove_containers(&svc);

    let mut fresh = Node::new();
    fresh.start();
    let addr = fresh.addr();
    let f = file.to_str().unwrap();
    // Without the key (nothing on stdin): one line naming the flag; nothing changed.
    let e = fresh.fails(&["init", "--restore", f, "--advertise-addr", &addr]);
    assert!(
        e.contains("--unlock-key") && e.contains("autolocked"),
        "{e}"
    );
    assert_eq!(fresh.info()["state"], "inactive");
    // A well-formed key that is not this cluster's: refused.
    let last = key.chars().last().unwrap();
    let wrong = format!(
        "{}{}",
        &key[..key.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    assert_ne!(wrong, key);
    let with_key = |k: &str| {
        fresh.orc(&[
            "init",
            "--restore",
            f,
            "--advertise-addr",
            &addr,
            "--unlock-key",
            k,
        ])
    };
    for (k, why) in [
        (wrong.as_str(), "wrong unlock key"),
        ("not-a-key", "not an unlock key"),
    ] {
        let o = with_key(k);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "restored with the key {k}");
        assert!(
            e.starts_with("error: --unlock-key: ") && e.contains(why),
            "{e}"
        );
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        assert_eq!(fresh.info()["state"], "inactive");
    }

    // The right key: the same service and config, and the same unlock key in force.
    let o = with_key(&key);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        fresh.log()
    );
    assert!(out.contains("1 services"), "{out}");
    assert!(
        !out.contains(&key),
        "the unlock key is printed again: {out}"
    );
    assert_eq!(service_names(&fresh), vec![svc.clone()]);
    assert_eq!(
        fresh.json(&["config", "inspect", "lock_conf"])[0]["data"],
        conf.as_str()
    );
    assert_eq!(fresh.ok(&["unlock-key", "-q"]).trim(), key);
    let c = wait_for(
        Duration::from_secs(60),
        "the restored service's task",
        || running(&svc).first().cloned(),
    );
    assert_eq!(docker(&["exec", &c, "cat", "/etc/app.conf"]), conf);

    // Restarted, it is locked: the wrong key leaves it so, the backup's key opens it.
    fresh.kill();
    fresh.start();
    assert_eq!(fresh.info()["state"], "locked");
    assert!(!unlock(&fresh, &wrong).status.success());
    assert_eq!(fresh.info()["state"], "locked");
    let o = unlock(&fresh, &key);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let names = wait_for(Duration::from_secs(20), "service ls after unlock", || {
        let o = fresh.orc(&["service", "ls", "--format", "json"]);
        o.status.success().then(|| {
            serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout)
                .unwrap()
                .iter()
                .map(|s| s["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
    });
    assert_eq!(names, vec![svc.clone()]);
    fresh.ok(&["service", "rm", &svc]);
}

/// Retries an RPC that may meet a daemon still starting.
async fn wait_for_async<T, F, Fut>(mut f: F) -> tonic::Response<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match f().await {
            Ok(r) => return r,
            Err(e) if std::time::Instant::now() > deadline => panic!("{e:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
