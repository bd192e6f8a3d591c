//! Level 4, recovery from a lost quorum on namespace hosts (tests/hosts/harness.sh):
//! three managers and two workers; two managers are destroyed with their data; `orc
//! init --force-new-cluster` on the third makes it the only manager; the services keep
//! answering through the mesh with not one container restarted; two fresh managers
//! join and a write goes through them.
//!
//! Needs root; takes /tmp/orc-hosts.lock as the other hosts tests do.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::hosts::*;
use common::wait_for;

/// Every container of hosts `hosts`, as `host: id -> started-at`.
fn containers(h: &Hosts, hosts: &[usize]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for &i in hosts {
        let ids = h.run(&["docker", &i.to_string(), "ps", "-q", "--no-trunc"]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            continue;
        }
        let mut args = vec![
            "docker".to_string(),
            i.to_string(),
            "inspect".into(),
            "-f".into(),
            "{{.Id}} {{.State.StartedAt}}".into(),
        ];
        args.extend(ids.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        for line in h.run(&args).lines() {
            let (id, started) = line.split_once(' ').expect("id and start time");
            out.insert(format!("host {i}: {id}"), started.to_string());
        }
    }
    out
}

/// The page behind `addr:port`, asked from host `from`'s namespace.
fn page(from: usize, addr: &str, port: u16) -> Option<String> {
    let o = host_sh(
        from,
        &format!("timeout 5 busybox wget -q -O - http://{addr}:{port}/"),
    );
    let body = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (o.status.success() && !body.is_empty()).then_some(body)
}

/// Host `i`'s data dir of the orc daemon (the harness keeps it under the host's dir).
fn orc_data(h: &Hosts, i: usize) -> String {
    format!("{}/orc", h.run(&["dir", &i.to_string()]))
}

#[test]
fn a_survivor_forces_a_new_cluster_keeps_every_container_and_takes_new_managers() {
    let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let h = Hosts::up(5);
    for i in 1..=5 {
        h.start_orc(i);
    }
    h.ok(1, &["init", "--advertise-addr", &h.addr(1)]);
    let mt = h.ok(1, &["join-token", "manager", "-q"]).trim().to_string();
    let wt = h.ok(1, &["join-token", "worker", "-q"]).trim().to_string();
    for i in [2, 3] {
        h.ok(i, &["join", "--token", &mt, &h.addr(1)]);
    }
    for i in [4, 5] {
        h.ok(i, &["join", "--token", &wt, &h.addr(1)]);
    }
    let ns = wait_for(Duration::from_secs(60), "5 ready nodes", || {
        let ns = h.nodes(1)?;
        (ns.len() == 5
            && ns
                .iter()
                .all(|n| n["status"] == "ready" && n["manager_status"] != "unreachable"))
        .then_some(ns)
    });
    let ids: Vec<String> = (1..=5).map(|i| h.node_id(&ns, i)).collect();
    let cluster_before = h.ok(3, &["info", "--format", "json"]);

    // `web` on the two workers, published on 8080; `own` on the survivor-to-be, 8081.
    h.ok(
        1,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "--max-replicas-per-node",
            "1",
            "-p",
            "8080:80",
            "--constraint",
            "node.role==worker",
            "orc-test/web:1",
        ],
    );
    h.ok(
        1,
        &[
            "service",
            "create",
            "--name",
            "own",
            "-p",
            "8081:80",
            "--constraint",
            &format!("node.id=={}", ids[2]),
            "orc-test/web:1",
        ],
    );
    wait_for(Duration::from_secs(60), "web and own running", || {
        (running_tasks(&h, 1, "web").len() == 2 && running_tasks(&h, 1, "own").len() == 1)
            .then_some(())
    });
    for i in [3, 4, 5] {
        for port in [8080, 8081] {
            wait_for(
                Duration::from_secs(30),
                &format!("host {i}:{port} through the mesh"),
                || page(4, &h.addr(i), port),
            );
        }
    }
    let before = containers(&h, &[3, 4, 5]);
    assert_eq!(
        before.len(),
        3,
        "web on hosts 4 and 5, own on host 3: {before:?}"
    );

    // Refused while the cluster has its quorum, and on a worker.
    let o = h.orc(
        3,
        &[
            "init",
            "--force-new-cluster",
            "--advertise-addr",
            &h.addr(3),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("still has a quorum"),
        "{err}"
    );
    let o = h.orc(
        4,
        &[
            "init",
            "--force-new-cluster",
            "--advertise-addr",
            &h.addr(4),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("worker"), "{err}");

    // Managers 1 (the leader) and 2 are destroyed with their data.
    for i in [1, 2] {
        h.run(&["halt", &i.to_string()]);
        std::fs::remove_dir_all(orc_data(&h, i)).expect("remove the data dir");
    }
    // Host 3 alone has no quorum: a write is refused.
    let o = h.orc(3, &["node", "update", "--label-add", "x=1", &ids[3]]);
    assert!(!o.status.success(), "a write without quorum succeeded");

    let out = h.ok(
        3,
        &[
            "init",
            "--force-new-cluster",
            "--advertise-addr",
            &h.addr(3),
        ],
    );
    eprintln!("{out}");
    assert!(
        out.contains(&format!("Removed manager {}", ids[0])),
        "{out}"
    );
    assert!(
        out.contains(&format!("Removed manager {}", ids[1])),
        "{out}"
    );
    let manager_token = out
        .split_whitespace()
        .find(|w| w.starts_with("ORC-1-"))
        .expect("a manager token in the output")
        .to_string();
    assert_eq!(
        manager_token,
        h.ok(3, &["join-token", "manager", "-q"]).trim()
    );

    // Host 3 leads a cluster of three nodes: itself and the two workers, both ready.
    let ns = wait_for(Duration::from_secs(30), "3 ready nodes, 3 leading", || {
        let ns = h.nodes(3)?;
        let mut seen: Vec<(String, String, String)> = ns
            .iter()
            .map(|n| {
                (
                    n["id"].as_str().unwrap_or("").to_string(),
                    n["status"].as_str().unwrap_or("").to_string(),
                    n["manager_status"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        seen.sort();
        let mut want = vec![
            (ids[2].clone(), "ready".to_string(), "leader".to_string()),
            (ids[3].clone(), "ready".to_string(), String::new()),
            (ids[4].clone(), "ready".to_string(), String::new()),
        ];
        want.sort();
        (seen == want).then_some(ns)
    });
    eprintln!("after the forced new cluster: {ns:?}");
    // Same cluster, same CA: the workers kept their certificates.
    let info: serde_json::Value =
        serde_json::from_str(&h.ok(3, &["info", "--format", "json"])).expect("info json");
    let info_before: serde_json::Value = serde_json::from_str(&cluster_before).expect("info");
    assert_eq!(info["cluster_id"], info_before["cluster_id"]);

    // The services answer through the mesh on every surviving host; a write works.
    for i in [3, 4, 5] {
        for port in [8080, 8081] {
            wait_for(
                Duration::from_secs(30),
                &format!("host {i}:{port} after the forced new cluster"),
                || page(5, &h.addr(i), port),
            );
        }
    }
    h.ok(
        3,
        &["node", "update", "--label-add", "recovered=yes", &ids[3]],
    );

    // Two fresh managers join on the destroyed hosts, with fresh data dirs.
    for i in [1, 2] {
        h.run(&["restart", &i.to_string()]);
        h.start_orc(i);
        h.ok(i, &["join", "--token", &manager_token, &h.addr(3)]);
    }
    let ns = wait_for(Duration::from_secs(60), "5 ready nodes, 3 managers", || {
        let ns = h.nodes(1)?;
        let managers = ns.iter().filter(|n| n["role"] == "manager").count();
        (ns.len() == 5
            && managers == 3
            && ns
                .iter()
                .all(|n| n["status"] == "ready" && n["manager_status"] != "unreachable"))
        .then_some(ns)
    });
    for old in &ids[..2] {
        assert!(
            ns.iter().all(|n| n["id"] != old.as_str()),
            "the destroyed manager {old} is back: {ns:?}"
        );
    }
    // A write through each new manager (forwarded to the leader), seen by the others.
    h.ok(1, &["node", "update", "--label-add", "via1=yes", &ids[4]]);
    h.ok(2, &["node", "update", "--label-add", "via2=yes", &ids[4]]);
    wait_for(
        Duration::from_secs(15),
        "both labels seen on host 3",
        || {
            let ns = h.nodes(3)?;
            let w = ns.iter().find(|n| n["id"] == ids[4].as_str())?;
            (w["labels"]["via1"] == "yes" && w["labels"]["via2"] == "yes").then_some(())
        },
    );
    for port in [8080, 8081] {
        wait_for(
            Duration::from_secs(30),
            &format!("host 1:{port} (a new manager) through the mesh"),
            || page(4, &h.addr(1), port),
        );
    }

    // Not one container of the surviving hosts was restarted or replaced.
    assert_eq!(containers(&h, &[3, 4, 5]), before);
    let web: Vec<String> = running_tasks(&h, 3, "web")
        .iter()
        .map(|t| t["container_id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(web.len(), 2, "{web:?}");
    for c in &web {
        assert!(
            before.keys().any(|k| k.ends_with(c.as_str())),
            "web task {c} is not one of the containers of before: {before:?}"
        );
    }
}
