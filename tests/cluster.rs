//! Level 2: clusters of real `orc daemon` processes on 127.0.0.1 (no Docker needed).
//! Elections, replication, leader loss, restarts, joins with good and bad tokens,
//! role changes, heartbeats, certificate renewal.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn three_managers_and_a_worker_form_a_cluster_with_the_json_contract() {
    let nodes = cluster(3, 1, &[]);
    for m in &nodes[..3] {
        let ns = m.nodes();
        assert_eq!(ns.len(), 4);
        for n in &ns {
            for key in [
                "id",
                "hostname",
                "role",
                "status",
                "availability",
                "manager_status",
                "address",
                "labels",
            ] {
                assert!(n.get(key).is_some(), "missing {key} in {n}");
            }
            assert!(n["labels"].is_object());
            assert_eq!(n["availability"], "active");
            assert!(n["address"].as_str().unwrap().starts_with("127.0.0.1:"));
            assert!(n["cpus"].as_u64().unwrap() >= 1);
        }
        let leaders = ns
            .iter()
            .filter(|n| n["manager_status"] == "leader")
            .count();
        assert_eq!(leaders, 1);
        let reachable = ns
            .iter()
            .filter(|n| n["manager_status"] == "reachable")
            .count();
        assert_eq!(reachable, 2);
        let workers: Vec<_> = ns.iter().filter(|n| n["role"] == "worker").collect();
        assert_eq!(workers.len(), 1);
        assert_eq!(workers[0]["manager_status"], "");
    }
    // A worker refuses cluster commands with one clear line.
    let e = nodes[3].fails(&["node", "ls"]);
    assert!(e.contains("not a manager"), "{e}");
    assert_eq!(nodes[3].info()["role"], "worker");
}

#[test]
fn writes_on_a_follower_are_forwarded_and_replicated() {
    let nodes = cluster(3, 0, &[]);
    let leader = leader_index(&nodes, 0);
    let follower = (leader + 1) % 3;
    let target = nodes[leader].info()["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    nodes[follower].ok(&[
        "node",
        "update",
        "--label-add",
        "zone=a",
        "--availability",
        "drain",
        &target,
    ]);
    for n in &nodes {
        let v = n.json(&["node", "inspect", &target]);
        assert_eq!(v[0]["labels"]["zone"], "a");
        assert_eq!(v[0]["availability"], "drain");
    }
    nodes[follower].ok(&[
        "node",
        "update",
        "--label-rm",
        "zone",
        "--availability",
        "active",
        &target,
    ]);
    let v = nodes[leader].json(&["node", "inspect", &target]);
    assert!(v[0]["labels"].get("zone").is_none());
    let e = nodes[follower].fails(&["node", "update", "--availability", "sideways", &target]);
    assert!(e.contains("--availability"), "{e}");
    let e = nodes[follower].fails(&["node", "inspect", "nosuchnode"]);
    assert!(e.contains("not found"), "{e}");
}

#[test]
fn leader_sigkill_then_a_write_to_another_manager_succeeds_and_a_restart_resumes() {
    let mut nodes = cluster(3, 1, &[]);
    let leader = leader_index(&nodes, 0);
    let other = (leader + 1) % 3;
    let worker_id = nodes[3].info()["node_id"].as_str().unwrap().to_string();
    nodes[other].ok(&["node", "update", "--label-add", "before=1", &worker_id]);
    let leader_id = nodes[leader].info()["node_id"]
        .as_str()
        .unwrap()
        .to_string();

    nodes[leader].kill();
    let t0 = Instant::now();
    nodes[other].ok(&["node", "update", "--label-add", "after=1", &worker_id]);
    eprintln!(
        "write accepted {:?} after the leader's SIGKILL",
        t0.elapsed()
    );

    let new_leader = leader_index(&nodes, other);
    assert_ne!(new_leader, leader);
    // The surviving manager told of the new leader in its events (`leader elect`).
    let new_leader_id = nodes[new_leader].info()["node_id"].clone();
    let elected = nodes[other].ok(&[
        "events",
        "--since",
        "10m",
        "--until",
        "0s",
        "--filter",
        "type=leader",
        "--format",
        "json",
    ]);
    let elected: Vec<serde_json::Value> = elected
        .lines()
        .map(|l| serde_json::from_str(l).expect("an event per line"))
        .collect();
    assert!(
        elected
            .iter()
            .any(|e| e["action"] == "elect" && e["id"] == new_leader_id),
        "no `leader elect` of {new_leader_id}: {elected:?}"
    );
    wait_for(Duration::from_secs(10), "old leader seen down", || {
        let ns = nodes[other].nodes();
        let old = ns.iter().find(|n| n["id"] == leader_id.as_str())?;
        (old["status"] == "down" && old["manager_status"] == "unreachable").then_some(())
    });

    // The data dir as an orc of before left it, with the Raft log in the state machine's
    // database: the restart moves it into its own (`data/raft`).
    let data = nodes[leader].dir.path().join("data");
    {
        let raft = open_stopped_db(&data.join("raft"));
        let db = open_stopped_db(&data.join("db"));
        for tree in ["raft_log", "raft_meta"] {
            let (from, to) = (raft.open_tree(tree).unwrap(), db.open_tree(tree).unwrap());
            for kv in from.iter() {
                let (k, v) = kv.unwrap();
                to.insert(k, v).unwrap();
            }
            assert!(!to.is_empty(), "control: {tree} was in the raft db");
        }
        db.flush().unwrap();
    }
    std::fs::remove_dir_all(data.join("raft")).unwrap();
    // Both locks are free again before the daemon starts.
    drop(open_stopped_db(&data.join("db")));

    // Restart on the same data dir: same id, role and cluster, nothing committed lost.
    nodes[leader].start();
    let info = nodes[leader].info();
    assert_eq!(info["node_id"], leader_id.as_str());
    assert_eq!(info["role"], "manager");
    wait_for(
        Duration::from_secs(15),
        "restarted manager ready and caught up",
        || {
            let v = nodes[leader].json(&["node", "inspect", &worker_id]);
            let ns = nodes[leader].nodes();
            let me = ns.iter().find(|n| n["id"] == leader_id.as_str())?;
            (v[0]["labels"]["before"] == "1"
                && v[0]["labels"]["after"] == "1"
                && me["status"] == "ready")
                .then_some(())
        },
    );
    assert!(
        nodes[leader]
            .log()
            .contains("moved the raft log into its own database"),
        "the log of before was not moved"
    );
    assert!(data.join("raft").is_dir());
}

#[test]
fn bad_tokens_are_refused_and_leave_nothing_behind() {
    let nodes = cluster(1, 0, &[]);
    let mut joiner = Node::new();
    joiner.start();
    let good = nodes[0]
        .ok(&["join-token", "worker", "-q"])
        .trim()
        .to_string();
    let (prefix, _secret) = good.rsplit_once('-').unwrap();

    // Wrong secret.
    let bad_secret = format!("{prefix}-{}", "a".repeat(25));
    let e = joiner.fails(&[
        "join",
        "--token",
        &bad_secret,
        "--advertise-addr",
        &joiner.addr(),
        &nodes[0].addr(),
    ]);
    assert!(e.contains("invalid join token"), "{e}");
    // Another CA's digest: refused before anything is sent.
    let secret = good.rsplit('-').next().unwrap();
    let foreign = format!("ORC-1-{}-{secret}", "0".repeat(64));
    let e = joiner.fails(&[
        "join",
        "--token",
        &foreign,
        "--advertise-addr",
        &joiner.addr(),
        &nodes[0].addr(),
    ]);
    assert!(e.contains("CA") || e.contains("root"), "{e}");
    // Malformed.
    let e = joiner.fails(&["join", "--token", "hello", &nodes[0].addr()]);
    assert!(e.contains("join token"), "{e}");
    // Rotated: the old token no longer works for new joins.
    nodes[0].ok(&["join-token", "worker", "--rotate"]);
    let e = joiner.fails(&[
        "join",
        "--token",
        &good,
        "--advertise-addr",
        &joiner.addr(),
        &nodes[0].addr(),
    ]);
    assert!(e.contains("invalid join token"), "{e}");

    assert_eq!(
        nodes[0].nodes().len(),
        1,
        "a refused join left a node behind"
    );
    assert_eq!(joiner.info()["state"], "inactive");

    // The new token works.
    let fresh = nodes[0]
        .ok(&["join-token", "worker", "-q"])
        .trim()
        .to_string();
    assert_ne!(fresh, good);
    joiner.ok(&[
        "join",
        "--token",
        &fresh,
        "--advertise-addr",
        &joiner.addr(),
        &nodes[0].addr(),
    ]);
    assert_eq!(nodes[0].nodes().len(), 2);
}

#[test]
fn a_join_to_an_unreachable_address_fails_within_bounded_time() {
    let mut joiner = Node::new();
    joiner.start();
    let token = format!("ORC-1-{}-{}", "ab".repeat(32), "x".repeat(25));
    let dead = format!("127.0.0.1:{}", free_port());
    let t0 = Instant::now();
    let e = joiner.fails(&[
        "join",
        "--token",
        &token,
        "--advertise-addr",
        &joiner.addr(),
        &dead,
    ]);
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t0.elapsed()
    );
    assert!(e.contains(&dead), "{e}");
    assert_eq!(joiner.info()["state"], "inactive");

    // A listener that accepts but never answers: the handshake times out, bounded.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let t0 = Instant::now();
    let e = joiner.fails(&[
        "join",
        "--token",
        &token,
        "--advertise-addr",
        &joiner.addr(),
        &silent_addr,
    ]);
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t0.elapsed()
    );
    assert!(e.contains("timed out"), "{e}");
    drop(silent);
}

#[test]
fn promote_demote_and_remove_follow_the_rules() {
    let mut nodes = cluster(1, 2, &[]);
    let w1 = nodes[1].info()["node_id"].as_str().unwrap().to_string();
    let w2 = nodes[2].info()["node_id"].as_str().unwrap().to_string();
    let m0 = nodes[0].info()["node_id"].as_str().unwrap().to_string();

    // Promotion: the worker gets a manager certificate, runs Raft and serves commands.
    nodes[0].ok(&["node", "promote", &w1]);
    wait_for(
        Duration::from_secs(20),
        "promoted node serves node ls",
        || {
            let o = nodes[1].orc(&["node", "ls", "--format", "json"]);
            if !o.status.success() {
                return None;
            }
            let ns: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).ok()?;
            let me = ns.iter().find(|n| n["id"] == w1.as_str())?;
            (me["role"] == "manager" && me["manager_status"] == "reachable").then_some(())
        },
    );
    assert_eq!(nodes[1].info()["role"], "manager");

    // Removing a manager or a live node is refused.
    let e = nodes[0].fails(&["node", "rm", &w1]);
    assert!(e.contains("demote it first"), "{e}");
    let e = nodes[0].fails(&["node", "rm", &w2]);
    assert!(e.contains("--force"), "{e}");

    // Demoting the only other manager while it is the sole follower of a 2-manager
    // cluster leaves 1 of 1: allowed. Demoting the last manager is refused.
    nodes[1].ok(&["node", "demote", &w1]);
    wait_for(Duration::from_secs(20), "demoted node is a worker", || {
        (nodes[1].info()["role"] == "worker").then_some(())
    });
    let e = nodes[0].fails(&["node", "demote", &m0]);
    assert!(e.contains("leader") || e.contains("last manager"), "{e}");

    // A down worker can be removed; its heartbeats are then refused.
    nodes[2].kill();
    wait_for(Duration::from_secs(10), "worker down", || {
        let ns = nodes[0].nodes();
        (ns.iter().find(|n| n["id"] == w2.as_str())?["status"] == "down").then_some(())
    });
    nodes[0].ok(&["node", "rm", &w2]);
    assert!(nodes[0].nodes().iter().all(|n| n["id"] != w2.as_str()));
}

#[test]
fn demotion_that_would_break_quorum_is_refused() {
    let mut nodes = cluster(3, 0, &[]);
    let leader = leader_index(&nodes, 0);
    let a = (leader + 1) % 3;
    let b = (leader + 2) % 3;
    let b_id = nodes[b].info()["node_id"].as_str().unwrap().to_string();
    nodes[a].kill();
    wait_for(Duration::from_secs(10), "manager down", || {
        let ns = nodes[leader].nodes();
        (ns.iter().filter(|n| n["status"] == "down").count() == 1).then_some(())
    });
    let e = nodes[leader].fails(&["node", "demote", &b_id]);
    assert!(e.contains("quorum"), "{e}");
}

#[test]
fn a_manager_without_quorum_refuses_writes_instead_of_hanging() {
    let mut nodes = cluster(3, 0, &[]);
    let leader = leader_index(&nodes, 0);
    let survivor = (leader + 1) % 3;
    let id = nodes[survivor].info()["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    for (i, n) in nodes.iter_mut().enumerate() {
        if i != survivor {
            n.kill();
        }
    }
    let t0 = Instant::now();
    let e = nodes[survivor].fails(&["node", "update", "--label-add", "x=1", &id]);
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t0.elapsed()
    );
    assert!(e.contains("quorum") || e.contains("leader"), "{e}");
}

#[test]
fn worker_heartbeats_mark_it_down_then_ready_again() {
    let mut nodes = cluster(1, 1, &["--heartbeat-period", "500ms"]);
    let w = nodes[1].info()["node_id"].as_str().unwrap().to_string();
    nodes[1].kill();
    let t0 = Instant::now();
    wait_for(Duration::from_secs(10), "worker down", || {
        let ns = nodes[0].nodes();
        (ns.iter().find(|n| n["id"] == w.as_str())?["status"] == "down").then_some(())
    });
    eprintln!(
        "worker seen down {:?} after SIGKILL (period 500ms, 3 misses)",
        t0.elapsed()
    );
    nodes[1].start();
    assert_eq!(nodes[1].info()["node_id"], w.as_str());
    wait_for(Duration::from_secs(10), "worker ready again", || {
        let ns = nodes[0].nodes();
        (ns.iter().find(|n| n["id"] == w.as_str())?["status"] == "ready").then_some(())
    });
}

#[test]
fn certificates_are_renewed_before_they_expire() {
    // Below the 1 h floor an operator gets: a refusal that names the flag.
    let mut floor = Node::new();
    floor.start();
    let e = floor.fails(&[
        "init",
        "--advertise-addr",
        &floor.addr(),
        "--cert-expiry",
        "12s",
    ]);
    assert!(e.contains("--cert-expiry: must be at least 3600 s"), "{e}");
    let nodes = cluster_with(
        1,
        1,
        &["--cert-expiry", "12s"],
        &["--min-cert-expiry", "10s"],
    );
    let first = nodes[1].info()["cert_expires"]
        .as_str()
        .unwrap()
        .to_string();
    let renewed = wait_for(Duration::from_secs(20), "renewed certificate", || {
        let now = nodes[1].info()["cert_expires"]
            .as_str()
            .unwrap()
            .to_string();
        (now != first).then_some(now)
    });
    assert!(renewed > first);
    // The node keeps working on its new certificate, past the old one's expiry.
    std::thread::sleep(Duration::from_secs(3));
    let ns = nodes[0].nodes();
    assert!(ns.iter().all(|n| n["status"] == "ready"), "{ns:?}");
}

#[test]
fn init_twice_and_leave_rules() {
    let nodes = cluster(1, 1, &[]);
    let e = nodes[0].fails(&["init", "--advertise-addr", &nodes[0].addr()]);
    assert!(e.contains("already part of a cluster"), "{e}");
    let e = nodes[0].fails(&["leave"]);
    assert!(e.contains("demote it first"), "{e}");
    nodes[1].ok(&["leave"]);
    assert_eq!(nodes[1].info()["state"], "inactive");
    let mut bad = Node::new();
    bad.start();
    let err = bad.fails(&["init", "--advertise-addr", "not-an-ip"]);
    assert!(err.contains("--advertise-addr"), "{err}");
    assert_eq!(bad.info()["state"], "inactive");
}

#[test]
fn the_leader_can_be_demoted_and_leadership_moves() {
    let nodes = cluster(3, 0, &[]);
    let leader = leader_index(&nodes, 0);
    let id = nodes[leader].info()["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    nodes[leader].ok(&["node", "demote", &id]);
    let other = (leader + 1) % 3;
    wait_for(
        Duration::from_secs(20),
        "old leader a worker, a new leader elected",
        || {
            let ns = nodes[other].nodes();
            let old = ns.iter().find(|n| n["id"] == id.as_str())?;
            let leaders = ns
                .iter()
                .filter(|n| n["manager_status"] == "leader")
                .count();
            let managers = ns.iter().filter(|n| n["role"] == "manager").count();
            (old["role"] == "worker"
                && old["manager_status"] == ""
                && leaders == 1
                && managers == 2
                && nodes[leader].info()["role"] == "worker")
                .then_some(())
        },
    );
    // The cluster still takes writes, and the demoted node is refused cluster commands.
    nodes[other].ok(&["node", "update", "--label-add", "after=demote", &id]);
    let e = nodes[leader].fails(&["node", "ls"]);
    assert!(e.contains("not a manager"), "{e}");
}

#[test]
fn a_manager_joining_after_log_compaction_gets_a_snapshot() {
    let args = ["--raft-snapshot-logs", "20"];
    let mut nodes = cluster_with(1, 0, &[], &args);
    let id = nodes[0].info()["node_id"].as_str().unwrap().to_string();
    for i in 0..60 {
        nodes[0].ok(&["node", "update", "--label-add", &format!("k{i}=v{i}"), &id]);
    }
    let mt = nodes[0]
        .ok(&["join-token", "manager", "-q"])
        .trim()
        .to_string();
    for _ in 0..2 {
        let mut n = Node::new();
        n.daemon_args = args.iter().map(|s| s.to_string()).collect();
        n.start();
        n.ok(&[
            "join",
            "--token",
            &mt,
            "--advertise-addr",
            &n.addr(),
            &nodes[0].addr(),
        ]);
        nodes.push(n);
    }
    // The joiners' logs start after the compacted prefix: their state came by snapshot.
    for n in &nodes[1..] {
        let v = n.json(&["node", "inspect", &id]);
        assert_eq!(v[0]["labels"]["k59"], "v59");
        assert_eq!(v[0]["labels"]["k0"], "v0");
    }
    // ...and it survives the first manager's loss and the joiners' restarts.
    nodes[0].kill();
    nodes[1].kill();
    nodes[1].start();
    wait_for(
        Duration::from_secs(20),
        "a new leader with the replicated state",
        || {
            let o = nodes[1].orc(&["node", "inspect", &id, "--format", "json"]);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            (o.status.success() && v[0]["labels"]["k30"] == "v30").then_some(())
        },
    );
}

#[test]
fn the_daemon_raises_its_open_files_limit_to_the_hard_limit() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("orc.sock");
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["daemon", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--socket")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: only getrlimit and setrlimit run between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                lim.rlim_cur = lim.rlim_max.min(256);
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn orc daemon");
    wait_for(Duration::from_secs(20), "the daemon's socket", || {
        std::os::unix::net::UnixStream::connect(&sock).ok()
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    let f: Vec<&str> = line.split_whitespace().collect();
    // "Max open files  SOFT  HARD  files"
    let (soft, hard) = (f[3], f[4]);
    assert_eq!(soft, hard, "{line}");
    assert_ne!(soft, "256", "{line}");
}

#[test]
fn a_follower_catches_up_on_25_mb_of_log_under_the_raft_message_limit() {
    // 40 entries of 640 kB while a follower is down: 25 MB, more than one Raft message
    // may carry (16 MiB; the receiving gate refuses more). openraft sends them in the
    // batches it formed (a few MB here); a batch over the limit would be answered
    // PayloadTooLarge and split (`raft::network::entries_hint`, unit-tested).
    let mut nodes = cluster(3, 0, &[]);
    let leader = leader_index(&nodes, 0);
    let down = (leader + 1) % 3;
    let down_id = nodes[down].info()["node_id"].as_str().unwrap().to_string();
    nodes[down].kill();
    let labels: Vec<String> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|k| format!("{k}={}", "x".repeat(128 * 1024 - 8)))
        .collect();
    for _ in 0..40 {
        let mut args = vec!["node", "update"];
        for l in &labels {
            args.extend(["--label-add", l.as_str()]);
        }
        args.push(&down_id);
        nodes[leader].ok(&args);
    }
    let index = nodes[leader].info()["raft_last_applied"].as_u64().unwrap();
    nodes[down].start();
    let t0 = Instant::now();
    wait_for(Duration::from_secs(60), "the follower caught up", || {
        let applied = nodes[down].info()["raft_last_applied"].as_u64()?;
        (applied >= index).then_some(())
    });
    eprintln!("caught up on 25 MB of log in {:?}", t0.elapsed());
}

#[test]
fn a_node_demoted_right_after_its_promotion_ends_a_worker() {
    // Demoted as soon as it is promoted. (A node demoted before it became a voter was
    // once seen stuck: its Raft knew no leader and it reported only to itself; the
    // agent now tries the other managers after 3 failed reports to itself. This
    // sequence did not reproduce that here; it checks the quick round trip.)
    let nodes = cluster(1, 1, &[]);
    let w = nodes[1].info()["node_id"].as_str().unwrap().to_string();
    nodes[0].ok(&["node", "promote", &w]);
    std::thread::sleep(Duration::from_millis(400));
    nodes[0].ok(&["node", "demote", &w]);
    wait_for(Duration::from_secs(20), "the node a worker again", || {
        (nodes[1].info()["role"] == "worker").then_some(())
    });
    wait_for(Duration::from_secs(10), "both nodes ready", || {
        let ns = nodes[0].nodes();
        ns.iter().all(|n| n["status"] == "ready").then_some(())
    });
}

/// `orc network` through the binary: create with its flags, `ls` and `inspect` in their
/// JSON contract, `rm` with one line per name and a non-zero exit when one fails, and a
/// service naming an unknown network refused with the flag named.
#[test]
fn network_commands_keep_their_json_contract_and_rm_reports_each_name() {
    let nodes = cluster(1, 0, &[]);
    let n = &nodes[0];
    let id = n.ok(&[
        "network",
        "create",
        "--internal",
        "--opt",
        "encrypted",
        "--label",
        "team=a",
        "back",
    ]);
    assert_eq!(id.trim().len(), 16, "{id}");
    n.ok(&["network", "create", "front"]);
    let e = n.fails(&["network", "create", "front"]);
    assert_eq!(e.trim(), "error: network front already exists");
    let e = n.fails(&["network", "create", "--driver", "macvlan", "x"]);
    assert!(e.contains("--driver: expected overlay or bridge"), "{e}");

    let ls = n.json(&["network", "ls"]);
    let ls = ls.as_array().expect("array");
    let names: Vec<&str> = ls.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default", "back", "front"]);
    for v in ls {
        for key in [
            "id",
            "name",
            "driver",
            "scope",
            "internal",
            "attachable",
            "encrypted",
            "labels",
            "created",
            "services",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["scope"], "swarm");
    }
    assert_eq!(ls[1]["internal"], true);
    assert_eq!(ls[1]["encrypted"], true);
    assert_eq!(ls[1]["labels"]["team"], "a");
    assert_eq!(ls[1]["id"], id.trim());
    let inspect = n.json(&["network", "inspect", "back", "front"]);
    assert_eq!(inspect.as_array().unwrap().len(), 2);
    assert!(inspect[0]["tasks"].as_array().unwrap().is_empty());

    // A service on an unknown network: refused, naming the flag and the name.
    let e = n.fails(&[
        "service",
        "create",
        "-d",
        "--name",
        "api",
        "--network",
        "nope",
        "busybox",
    ]);
    assert!(e.contains("--network: network nope not found"), "{e}");

    // rm: the removed name on stdout, the refused one an error line; exit non-zero.
    let o = n.orc(&["network", "rm", "front", "nope"]);
    assert!(!o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "front\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim(), "error: network nope not found", "{err}");
    // Two refusals: one line each, naming each.
    let o = n.orc(&["network", "rm", "gone1", "default", "back"]);
    assert!(!o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "back\n");
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.trim_end().lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].contains("network gone1 not found"), "{err}");
    assert!(
        lines[1].contains("built-in network cannot be removed"),
        "{err}"
    );
    let ls = n.json(&["network", "ls"]);
    assert_eq!(ls.as_array().unwrap().len(), 1, "{ls}");
}
