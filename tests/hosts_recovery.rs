//! Level 4, recovery from a lost quorum on namespace hosts (tests/hosts/harness.sh):
//! three managers and two workers; two managers are destroyed with their data; `orc
//! init --force-new-cluster` on the third makes it the only manager; the services keep
//! answering through the mesh with not one container restarted; two fresh managers
//! join and a write goes through them. Then the forced cluster's backup (`orc cluster
//! backup`) builds a NEW cluster on fresh hosts (orc's data deleted, containers
//! removed): `orc init --restore` on one, workers joined with the new token (the old
//! cluster's tokens are refused); the same services, networks, secrets, configs and node
//! labels (on the old nodes' records, copied by the operator to the new nodes); the
//! services answer through the mesh from tasks on the new hosts.
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

/// What a restore must give back, as host `i` lists it: services (name, mode, desired
/// replicas, image, ports), networks, secrets and configs (name and labels), each
/// sorted by name.
fn objects(h: &Hosts, i: usize) -> serde_json::Value {
    let ls = |what: &str, keys: &[&str]| {
        let all: Vec<serde_json::Value> =
            serde_json::from_str(&h.ok(i, &[what, "ls", "--format", "json"])).expect(what);
        let mut v: Vec<serde_json::Value> = all
            .iter()
            .map(|o| {
                let mut m = serde_json::Map::new();
                for k in keys {
                    m.insert(k.to_string(), o[*k].clone());
                }
                if what == "service" {
                    let desired = o["replicas"]
                        .as_str()
                        .and_then(|r| r.split('/').nth(1))
                        .unwrap_or("?");
                    m.insert("desired".into(), desired.into());
                }
                serde_json::Value::Object(m)
            })
            .collect();
        v.sort_by_key(|o| o["name"].to_string());
        serde_json::Value::Array(v)
    };
    serde_json::json!({
        "services": ls("service", &["name", "mode", "image", "ports"]),
        "networks": ls("network", &["name", "driver", "labels"]),
        "secrets": ls("secret", &["name", "labels"]),
        "configs": ls("config", &["name", "labels"]),
    })
}

/// `orc info` of host `i`.
fn info_of(h: &Hosts, i: usize) -> serde_json::Value {
    serde_json::from_str(&h.ok(i, &["info", "--format", "json"])).expect("info json")
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

    // --- The forced cluster's backup builds a new cluster on fresh hosts. ---
    // Objects of every kind first: a network, a secret, a config, and a service placed
    // by a node label (`recovered=yes`, host 4's), published on 8082.
    let work = tempfile::tempdir().expect("tempdir");
    let plain = format!("pw-{}-{}", std::process::id(), ids[3]);
    let conf = format!("conf-{}-{}", std::process::id(), ids[4]);
    let (pw_file, conf_file) = (work.path().join("pw"), work.path().join("conf"));
    std::fs::write(&pw_file, &plain).unwrap();
    std::fs::write(&conf_file, &conf).unwrap();
    h.ok(3, &["network", "create", "appnet"]);
    h.ok(
        3,
        &["secret", "create", "app_pw", pw_file.to_str().unwrap()],
    );
    h.ok(
        3,
        &["config", "create", "app_conf", conf_file.to_str().unwrap()],
    );
    h.ok(
        3,
        &[
            "service",
            "create",
            "--name",
            "labeled",
            "--network",
            "appnet",
            "--secret",
            "app_pw",
            "--config",
            "src=app_conf,target=/etc/app.conf",
            "--constraint",
            "node.labels.recovered==yes",
            "-p",
            "8082:80",
            "orc-test/web:1",
        ],
    );
    let t = wait_for(Duration::from_secs(60), "labeled running", || {
        running_tasks(&h, 3, "labeled").pop()
    });
    assert_eq!(t["node_id"], ids[3].as_str(), "{t}");
    let objects_before = objects(&h, 3);
    eprintln!("objects backed up: {objects_before}");
    let old_nodes = h.nodes(3).expect("node ls");
    assert_eq!(old_nodes.len(), 5, "{old_nodes:?}");
    let old_cluster = info_of(&h, 3)["cluster_id"].as_str().unwrap().to_string();
    let old_worker_token = h.ok(3, &["join-token", "worker", "-q"]).trim().to_string();
    let file = work.path().join("forced.orcbak");
    let out = h.ok(3, &["cluster", "backup", file.to_str().unwrap()]);
    eprintln!("{out}");

    // Fresh hosts: every host goes down; hosts 1, 4 and 5 come back with their engines
    // (and images) only: orc's data deleted, every container and network removed.
    for i in 1..=5 {
        h.run(&["halt", &i.to_string()]);
    }
    for i in [1, 4, 5] {
        let n = i.to_string();
        std::fs::remove_dir_all(orc_data(&h, i)).expect("remove the data dir");
        h.run(&["restart", &n]);
        let left = h.run(&["docker", &n, "ps", "-aq"]);
        let mut rm = vec!["docker", n.as_str(), "rm", "-f"];
        rm.extend(left.split_whitespace());
        if rm.len() > 4 {
            h.run(&rm);
        }
        h.run(&["docker", &n, "network", "prune", "-f"]);
        assert_eq!(h.run(&["docker", &n, "ps", "-aq"]), "", "host {i}");
        h.start_orc(i);
        assert_eq!(info_of(&h, i)["state"], "inactive", "host {i}");
    }

    let out = h.ok(
        1,
        &[
            "init",
            "--restore",
            file.to_str().unwrap(),
            "--advertise-addr",
            &h.addr(1),
        ],
    );
    eprintln!("{out}");
    assert!(
        out.contains(&format!("backup of cluster {old_cluster}")),
        "{out}"
    );
    assert_ne!(info_of(&h, 1)["cluster_id"], old_cluster.as_str());
    let worker_token = h.ok(1, &["join-token", "worker", "-q"]).trim().to_string();
    assert_ne!(worker_token, old_worker_token);
    // The old cluster's tokens are refused by the restored one; the new one is taken.
    for old in [&old_worker_token, &manager_token] {
        let o = h.orc(4, &["join", "--token", old, &h.addr(1)]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "joined with the old token {old}");
        eprintln!("the old token is refused: {}", err.trim());
        assert_eq!(info_of(&h, 4)["state"], "inactive");
    }
    for i in [4, 5] {
        h.ok(i, &["join", "--token", &worker_token, &h.addr(1)]);
    }
    let old_ids: Vec<&str> = old_nodes
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    let ns = wait_for(Duration::from_secs(60), "3 new ready nodes", || {
        let ns = h.nodes(1)?;
        let new: Vec<&serde_json::Value> = ns
            .iter()
            .filter(|n| !old_ids.contains(&n["id"].as_str().unwrap_or("")))
            .collect();
        (new.len() == 3 && new.iter().all(|n| n["status"] == "ready")).then_some(ns)
    });
    eprintln!("the restored cluster: {ns:?}");
    let new_id = |i: usize| {
        ns.iter()
            .find(|n| {
                n["address"] == format!("{}:4242", h.addr(i)).as_str()
                    && !old_ids.contains(&n["id"].as_str().unwrap_or(""))
            })
            .expect("the new node of the host")["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (new1, new4, new5) = (new_id(1), new_id(4), new_id(5));
    // The old nodes are kept as down workers with their labels. No old node is the
    // restoring host's: every namespace host has this machine's hostname, and a
    // hostname matching more than one old node adopts none (src/backup.rs).
    assert_eq!(ns.len(), 8, "{ns:?}");
    for old in &old_nodes {
        let now = ns.iter().find(|n| n["id"] == old["id"]).expect("old node");
        assert_eq!(now["status"], "down", "{now}");
        assert_eq!(now["role"], "worker", "{now}");
        assert_eq!(now["labels"], old["labels"], "{now}");
    }
    let me = ns.iter().find(|n| n["id"] == new1.as_str()).unwrap();
    assert_eq!(me["manager_status"], "leader", "{me}");
    assert_eq!(me["labels"], serde_json::json!({}), "{me}");

    // The same objects.
    assert_eq!(objects(&h, 1), objects_before);
    let ci: serde_json::Value =
        serde_json::from_str(&h.ok(1, &["config", "inspect", "app_conf", "--format", "json"]))
            .expect("config inspect");
    assert_eq!(ci[0]["data"], conf.as_str());

    // `web` runs on the two new workers and answers through the mesh on each new host.
    wait_for(Duration::from_secs(60), "web on the new workers", || {
        let mut on: Vec<String> = running_tasks(&h, 1, "web")
            .iter()
            .map(|t| t["node_id"].as_str().unwrap_or("").to_string())
            .collect();
        on.sort();
        let mut want = vec![new4.clone(), new5.clone()];
        want.sort();
        (on == want).then_some(())
    });
    // No task on a node that is down, nor for a label no ready node carries yet; `own`
    // names the old host 3's node id, which is down: it stays pending.
    assert!(running_tasks(&h, 1, "labeled").is_empty());
    assert!(running_tasks(&h, 1, "own").is_empty());
    // The operator copies the old node's labels to the new node of the same host.
    let old4 = old_nodes
        .iter()
        .find(|n| n["address"] == format!("{}:4242", h.addr(4)).as_str())
        .expect("host 4's old node");
    let labels = old4["labels"].as_object().expect("labels");
    assert_eq!(labels["recovered"], "yes", "{old4}");
    let mut args = vec!["node".to_string(), "update".to_string()];
    for (k, v) in labels {
        args.push("--label-add".into());
        args.push(format!("{k}={}", v.as_str().unwrap()));
    }
    args.push(new4.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    h.ok(1, &args);
    let t = wait_for(
        Duration::from_secs(60),
        "labeled on host 4's new node",
        || running_tasks(&h, 1, "labeled").pop(),
    );
    assert_eq!(t["node_id"], new4.as_str(), "{t}");
    let ctr = t["container_id"]
        .as_str()
        .expect("container id")
        .to_string();
    assert!(
        h.run(&["docker", "4", "ps", "-q", "--no-trunc"])
            .contains(&ctr),
        "{ctr} is not on host 4"
    );
    let o = in_container(&h, 4, &ctr, "cat /run/secrets/app_pw");
    assert_eq!(String::from_utf8_lossy(&o.stdout), plain);
    let o = in_container(&h, 4, &ctr, "cat /etc/app.conf");
    assert_eq!(String::from_utf8_lossy(&o.stdout), conf);
    for i in [1, 4, 5] {
        for port in [8080, 8082] {
            wait_for(
                Duration::from_secs(30),
                &format!("host {i}:{port} of the restored cluster"),
                || page(5, &h.addr(i), port),
            );
        }
    }
    for t in running_tasks(&h, 1, "web") {
        let host = if t["node_id"] == new4.as_str() {
            "4"
        } else {
            "5"
        };
        let c = t["container_id"].as_str().unwrap();
        assert!(
            h.run(&["docker", host, "ps", "-q", "--no-trunc"])
                .contains(c),
            "web's {c} is not on host {host}"
        );
    }
}
