//! Backup and restore on the real Docker engine: a 1-node cluster with services, a
//! network, a secret, a config and a node label is backed up; the file is 0600 and
//! holds no secret in the clear; bad files are refused with one line and leave a fresh
//! node as it was; `init --restore` on a fresh daemon gives the same objects, and the
//! secret reaches a task of the new cluster. The backup is served on the local socket
//! only: a manager's own certificate over the cluster port does not get it.

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
