//! Autolock with real daemon processes on 127.0.0.1: a restarted manager of an
//! autolocked cluster serves nothing until `orc unlock` gets the unlock key; a wrong key
//! changes nothing; the key rotates; autolock turns off; joined and promoted managers
//! hold the data key wrapped, workers never lock.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

const LOCKED: &str = "error: this manager is locked: run orc unlock with the cluster's unlock key";

/// `orc unlock` with `key` on stdin.
fn unlock(n: &Node, key: &str) -> Output {
    let mut c = Command::new(bin())
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

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn data_dir(n: &Node) -> PathBuf {
    n.dir.path().join("data")
}

fn key_file(n: &Node) -> Vec<u8> {
    std::fs::read(data_dir(n).join("data.key")).unwrap_or_default()
}

/// True when `data.key` holds the data key wrapped (autolock), false when in the clear.
fn wrapped(dir: &Path) -> bool {
    let text = std::fs::read_to_string(dir.join("data.key")).expect("data.key");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(v["wrapped"].is_string() != v["plain"].is_string(), "{v}");
    v["wrapped"].is_string()
}

fn cluster_port_answers(n: &Node) -> bool {
    std::net::TcpStream::connect_timeout(&n.addr().parse().unwrap(), Duration::from_secs(1)).is_ok()
}

/// The node serves nothing but `info` and `unlock`.
fn assert_locked(n: &Node) {
    assert_eq!(n.info()["state"], "locked", "info: {}", n.info());
    for args in [
        &["node", "ls"][..],
        &["join-token", "worker"],
        &["service", "ls"],
        &["unlock-key"],
        &["leave", "--force"],
        &["node", "routes"],
    ] {
        let e = n.fails(args);
        assert_eq!(e.trim_end(), LOCKED, "orc {args:?}");
    }
    assert!(
        !cluster_port_answers(n),
        "a locked manager's cluster port answers"
    );
}

/// Waits until `node ls` answers with `count` nodes all ready.
fn wait_ready(n: &Node, count: usize) {
    wait_for(Duration::from_secs(20), "all nodes ready", || {
        let o = n.orc(&["node", "ls", "--format", "json"]);
        if !o.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        let ns = v.as_array()?;
        (ns.len() == count && ns.iter().all(|x| x["status"] == "ready")).then_some(())
    });
}

fn key_of(init_output: &str) -> String {
    init_output
        .split_whitespace()
        .find(|w| w.starts_with("ORCKEY-1-"))
        .expect("an unlock key in the output of init --autolock")
        .to_string()
}

#[test]
fn an_autolocked_manager_restarts_locked_and_unlocks_only_with_its_key() {
    let mut n = Node::new();
    n.start();
    let vips = random_vip_range();
    let out = n.ok(&[
        "init",
        "--advertise-addr",
        &n.addr(),
        "--vip-range",
        &vips,
        "--autolock",
    ]);
    let key = key_of(&out);
    assert_eq!(n.ok(&["unlock-key", "-q"]).trim(), key);
    assert!(wrapped(&data_dir(&n)));
    // Positive control before the restart: the node serves.
    wait_ready(&n, 1);
    assert!(cluster_port_answers(&n));
    assert_eq!(n.info()["state"], "active");

    // Restarted: locked.
    n.kill();
    n.start();
    assert_locked(&n);

    // A wrong key, and a malformed one: refused with one line, still locked.
    let wrong = format!("ORCKEY-1-{}", "ab".repeat(32));
    let o = unlock(&n, &wrong);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.starts_with("error: wrong unlock key"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    let o = unlock(&n, "hunter2");
    assert!(
        stderr(&o).starts_with("error: not an unlock key"),
        "{}",
        stderr(&o)
    );
    assert_locked(&n);

    // The right key: it runs again, as a normal start does.
    let o = unlock(&n, &key);
    assert!(o.status.success(), "{}", stderr(&o));
    wait_ready(&n, 1);
    assert!(cluster_port_answers(&n));
    assert_eq!(n.info()["state"], "active");
    let o = unlock(&n, &key);
    assert!(stderr(&o).contains("not locked"), "{}", stderr(&o));

    // Rotation: a new key; every manager re-wraps its file with it.
    let before = key_file(&n);
    let new_key = n.ok(&["unlock-key", "--rotate", "-q"]).trim().to_string();
    assert!(new_key.starts_with("ORCKEY-1-"));
    assert_ne!(new_key, key);
    assert_eq!(n.ok(&["unlock-key", "-q"]).trim(), new_key);
    wait_for(Duration::from_secs(5), "data.key re-wrapped", || {
        (key_file(&n) != before).then_some(())
    });
    n.kill();
    n.start();
    assert_locked(&n);
    let o = unlock(&n, &key);
    assert!(
        stderr(&o).starts_with("error: wrong unlock key"),
        "the old key after rotation: {}",
        stderr(&o)
    );
    assert_locked(&n);
    let o = unlock(&n, &new_key);
    assert!(o.status.success(), "{}", stderr(&o));
    wait_ready(&n, 1);

    // Autolock off: the data key goes back to a 0600 file; a restart needs no key.
    let out = n.ok(&["cluster", "update", "--autolock=false"]);
    assert!(out.contains("Autolock is off"), "{out}");
    wait_for(Duration::from_secs(5), "data.key in the clear", || {
        (!wrapped(&data_dir(&n))).then_some(())
    });
    let e = n.fails(&["unlock-key"]);
    assert!(e.contains("autolock is not enabled"), "{e}");
    n.kill();
    n.start();
    wait_ready(&n, 1);
    assert_eq!(n.info()["state"], "active");

    // And on again: a new key, shown once.
    let out = n.ok(&["cluster", "update", "--autolock=true"]);
    let third = key_of(&out);
    assert!(third != key && third != new_key);
    wait_for(Duration::from_secs(5), "data.key wrapped again", || {
        wrapped(&data_dir(&n)).then_some(())
    });

    // No key ever reached the daemon's log.
    let log = n.log();
    for k in [&key, &new_key, &third] {
        assert!(!log.contains(&k[9..]), "an unlock key is in the daemon log");
    }
}

#[test]
fn joined_and_promoted_managers_hold_the_wrapped_key_and_workers_never_lock() {
    let mut nodes = cluster(3, 1, &["--autolock"]);
    let key = nodes[0].ok(&["unlock-key", "-q"]).trim().to_string();
    // Joined managers got the data key, wrapped; the worker has none, only its node key.
    for n in &nodes[..3] {
        assert!(wrapped(&data_dir(n)));
        assert!(!data_dir(n).join("node.key").exists());
    }
    assert!(!data_dir(&nodes[3]).join("data.key").exists());
    assert!(data_dir(&nodes[3]).join("node.key").exists());

    // The first manager stops: another leads (it holds the data key: it signs, it
    // shows the join token).
    nodes[0].kill();
    wait_for(Duration::from_secs(20), "a new leader", || {
        let o = nodes[1].orc(&["join-token", "worker", "-q"]);
        o.status.success().then_some(())
    });
    // It comes back locked, and rejoins once unlocked.
    nodes[0].start();
    assert_locked(&nodes[0]);
    let o = unlock(&nodes[0], &key);
    assert!(o.status.success(), "{}", stderr(&o));
    wait_ready(&nodes[0], 4);

    // A joined manager restarts locked too; the worker never does.
    nodes[2].kill();
    nodes[2].start();
    assert_locked(&nodes[2]);
    let o = unlock(&nodes[2], &key);
    assert!(o.status.success(), "{}", stderr(&o));
    nodes[3].kill();
    nodes[3].start();
    assert_eq!(nodes[3].info()["state"], "active");
    wait_ready(&nodes[0], 4);

    // Promotion brings the wrapped data key; demotion takes it away.
    let worker_id = nodes[3].info()["node_id"].as_str().unwrap().to_string();
    nodes[0].ok(&["node", "promote", &worker_id]);
    let w = data_dir(&nodes[3]);
    wait_for(
        Duration::from_secs(20),
        "the promoted node's data key",
        || (w.join("data.key").exists() && !w.join("node.key").exists()).then_some(()),
    );
    assert!(wrapped(&w));
    // (Demoted only once a voter: see `promote_demote_and_remove_follow_the_rules`.)
    wait_for(
        Duration::from_secs(20),
        "the promoted node is a voter",
        || {
            let o = nodes[3].orc(&["node", "ls", "--format", "json"]);
            let ns: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).ok()?;
            let me = ns.iter().find(|n| n["id"] == worker_id.as_str())?;
            (me["manager_status"] == "reachable").then_some(())
        },
    );
    nodes[0].ok(&["node", "demote", &worker_id]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while w.join("data.key").exists() || !w.join("node.key").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the demoted node kept its data key; its log:\n{}",
            nodes[3].log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let e = nodes[3].fails(&["node", "ls"]);
    assert!(e.contains("not a manager"), "{e}");
}

/// A node's real credentials, read from its stopped database with the key file beside
/// it (the node is started again).
fn creds_of(n: &mut Node) -> orc::ca::NodeCredentials {
    n.kill();
    let dir = data_dir(n);
    let db = wait_for(Duration::from_secs(10), "the database lock", || {
        sled::open(dir.join("db")).ok()
    });
    let v = db
        .open_tree("local")
        .unwrap()
        .get("member")
        .unwrap()
        .expect("member");
    drop(db);
    let member = orc::daemon::read_stored_member(&v, &dir).unwrap();
    n.start();
    member.creds
}

async fn renew_as(
    addr: &str,
    creds: &orc::ca::NodeCredentials,
) -> Result<orc::proto::RenewResponse, tonic::Status> {
    let ch = orc::net::tls_channel(
        addr,
        creds.client_config().unwrap(),
        Duration::from_secs(10),
    );
    let (_, csr_pem) = orc::ca::new_key_and_csr().unwrap();
    orc::proto::ca_client::CaClient::new(ch)
        .renew(orc::proto::RenewRequest { csr_pem })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_key_goes_to_managers_only() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut nodes = tokio::task::spawn_blocking(|| cluster(2, 1, &[]))
        .await
        .unwrap();
    let (manager, worker, dk) = tokio::task::spawn_blocking(move || {
        let m = creds_of(&mut nodes[1]);
        let w = creds_of(&mut nodes[2]);
        let dk = orc::keys::read_plain_key(&data_dir(&nodes[0])).unwrap();
        wait_ready(&nodes[0], 3);
        (m, w, (dk, nodes))
    })
    .await
    .unwrap();
    let (dk, nodes) = dk;
    let leader = nodes[0].addr();
    // Control: a manager's renewal brings the cluster's data key.
    let r = renew_as(&leader, &manager).await.unwrap();
    assert_eq!(r.role, "manager");
    let keys = r.manager_keys.expect("a manager gets the data key");
    assert_eq!(keys.data_key, dk.as_bytes());
    assert!(keys.unlock_key.is_empty(), "no autolock here");
    // A worker's renewal, to the leader and through the other manager: never.
    for addr in [&leader, &nodes[1].addr()] {
        let r = renew_as(addr, &worker).await.unwrap();
        assert_eq!(r.role, "worker");
        assert!(r.manager_keys.is_none(), "a worker was sent the data key");
    }
    drop(nodes);
}
