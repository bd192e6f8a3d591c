//! Level 4, image shipping: an image that exists on one node's engine only, and that no
//! registry has (none is reachable here), still runs everywhere: the nodes that lack it
//! load it from the node that has it over the cluster's mTLS (`NodeApi.ImageSave`,
//! `docker save` streamed into `docker load`). An image no node has rejects its tasks
//! with an error that says so.
//!
//! These tests need root; the hosts use machine-wide names, so they run one at a time.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::hosts::*;
use common::wait_for;

/// Whether host `i`'s engine has `image`.
fn has_image(i: usize, image: &str) -> bool {
    Command::new("bash")
        .arg(harness())
        .args(["docker", &i.to_string(), "image", "inspect", image])
        .output()
        .expect("harness docker")
        .status
        .success()
}

#[test]
fn an_image_on_one_node_only_is_shipped_to_the_others() {
    let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let h = Hosts::up(3);
    h.form_cluster(3, "worker", 1);
    wait_for(Duration::from_secs(30), "3 nodes with an engine", || {
        let ns = h.nodes(1)?;
        (ns.len() == 3
            && ns
                .iter()
                .all(|n| n["status"] == "ready" && n["engine_version"] != ""))
        .then_some(())
    });

    // The image exists on host 1's engine only (under a name outside orc-test/*, which
    // the harness loads everywhere).
    let image = format!("orc-shipped/only-on-one:{}", std::process::id());
    let image = image.as_str();
    h.run(&["docker", "1", "tag", "orc-test/web:1", image]);
    assert!(has_image(1, image));
    assert!(!has_image(2, image) && !has_image(3, image));

    let t0 = Instant::now();
    h.ok(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "shipped",
            "--replicas",
            "3",
            "--max-replicas-per-node",
            "1",
            image,
        ],
    );
    let tasks = wait_for(
        Duration::from_secs(90),
        "3 running tasks of shipped",
        || {
            let t = running_tasks(&h, 1, "shipped");
            (t.len() == 3).then_some(t)
        },
    );
    eprintln!(
        "3 tasks running {} ms after the service was created",
        t0.elapsed().as_millis()
    );
    let nodes: BTreeSet<String> = tasks
        .iter()
        .map(|t| t["node_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(nodes.len(), 3, "one task per host: {tasks:#?}");
    for i in 2..=3 {
        assert!(has_image(i, image), "host {i} has {image} now");
    }
    // The hosts that lacked it loaded it from another node (host 1, or one that had
    // loaded it already), not from a registry.
    for i in 2..=3 {
        let log = h.log(i);
        assert!(
            log.contains("image loaded from another node"),
            "host {i}: no image loaded in its log:\n{log}"
        );
    }

    // An image that no node has: rejected, saying so.
    h.ok(
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "nowhere",
            "orc-test/nowhere:1",
        ],
    );
    let rejected = wait_for(
        Duration::from_secs(90),
        "a rejected task of nowhere",
        || {
            let o = h.orc(1, &["service", "ps", "nowhere", "--format", "json"]);
            let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).ok()?;
            v.into_iter().find(|t| t["state"] == "rejected")
        },
    );
    let err = rejected["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("orc-test/nowhere:1")
            && err.contains("could not be pulled")
            && err.contains("no other node of the cluster has image orc-test/nowhere:1"),
        "{rejected:#}"
    );
    for i in 1..=3 {
        assert!(!has_image(i, "orc-test/nowhere:1"));
    }
}
