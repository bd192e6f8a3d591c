//! Level 4, image shipping: an image that exists on one node's engine only, and that no
//! registry has (none is reachable here), still runs everywhere: the nodes that lack it
//! load it from the node that has it over the cluster's mTLS (`NodeApi.ImageSave`,
//! `docker save` streamed into `docker load`). An image no node has rejects its tasks
//! with an error that says so.
//!
//! The service's image is pinned to the image id its first task ran (shown by `service
//! inspect`); a node whose tag names other content then neither sends that content
//! (images are sent by the pinned id) nor runs it (the id is checked before a task
//! starts), while the right content still runs.
//!
//! These tests need root; the hosts use machine-wide names, so they run one at a time.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::hosts::*;
use common::wait_for;

/// The image id `image` names on host `i`'s engine.
fn image_id(h: &Hosts, i: usize, image: &str) -> String {
    h.run(&[
        "docker",
        &i.to_string(),
        "image",
        "inspect",
        "-f",
        "{{.Id}}",
        image,
    ])
}

/// The host (1..=3) of the node with id `node`.
fn host_of(h: &Hosts, node: &str) -> usize {
    let ns = h.nodes(1).expect("node ls");
    let n = ns.iter().find(|n| n["id"] == node).expect("the node");
    let addr = n["address"].as_str().unwrap_or_default();
    (1..=3)
        .find(|i| addr == h.addr(*i) || addr.starts_with(&format!("{}:", h.addr(*i))))
        .unwrap_or_else(|| panic!("no host has address {addr}"))
}

/// Builds `image` on host `i`'s engine: orc-test/web:1 with a label naming it (the
/// classic builder, which uses the local base image without asking a registry).
fn build_unique(i: usize, image: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM orc-test/web:1\nLABEL orc.test.unique=\"{image}\"\n"),
    )
    .expect("Dockerfile");
    let o = Command::new("bash")
        .arg(harness())
        .args(["docker", &i.to_string(), "build", "-q", "-t", image])
        .arg(dir.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("harness docker build");
    assert!(
        o.status.success(),
        "docker build on host {i}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

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
    // the harness loads everywhere), and so does its content: orc-test/web:1 with a
    // label of its own, so that no other engine has its id.
    let image = format!("orc-shipped/only-on-one:{}", std::process::id());
    let image = image.as_str();
    build_unique(1, image);
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

    // The service's image is pinned to the id its first task ran: host 1's.
    let pinned = image_id(&h, 1, image);
    let inspect = h.ok(1, &["service", "inspect", "shipped"]);
    let v: serde_json::Value = serde_json::from_str(&inspect).expect("inspect JSON");
    assert_eq!(v[0]["image_digest"]["id"], pinned.as_str(), "{v:#}");
    let text = h.ok(1, &["service", "inspect", "--pretty", "shipped"]);
    assert!(
        text.contains(&format!("Image digest:    {pinned}\n")),
        "{text}"
    );
    for i in 2..=3 {
        assert_eq!(
            image_id(&h, i, image),
            pinned,
            "host {i} loaded the pinned id"
        );
    }

    // Poisoning: host 1's tag now names other content (busybox), and hosts 2 and 3 lose
    // the tag (their running containers keep the content, untagged). Host 3's task is
    // replaced, and host 3 loses the content too: its node must load the image from
    // another node, host 1 included, which must send the pinned id, not what its tag
    // names.
    h.run(&["docker", "1", "tag", "orc-test/busybox:1", image]);
    let poison = image_id(&h, 1, image);
    assert_ne!(poison, pinned);
    for i in 2..=3 {
        h.run(&["docker", &i.to_string(), "rmi", "-f", image]);
        assert!(!has_image(i, image));
    }
    let on = |host: usize| {
        running_tasks(&h, 1, "shipped")
            .into_iter()
            .find(|t| host_of(&h, t["node_id"].as_str().unwrap_or_default()) == host)
            .unwrap_or_else(|| panic!("no running task of shipped on host {host}"))
    };
    let victim = on(3);
    h.run(&[
        "docker",
        "3",
        "rm",
        "-f",
        victim["container_id"].as_str().unwrap_or_default(),
    ]);
    // Within the restart delay (5 s), before the replacement prepares.
    h.run(&["docker", "3", "rmi", "-f", &pinned]);
    assert!(!has_image(3, &pinned), "host 3 still has {pinned}");
    wait_for(
        Duration::from_secs(90),
        "shipped running again on host 3",
        || {
            let t = running_tasks(&h, 1, "shipped");
            (t.len() == 3 && t.iter().all(|t| t["id"] != victim["id"])).then_some(())
        },
    );
    assert_eq!(
        image_id(&h, 3, image),
        pinned,
        "host 3 runs the pinned content, not host 1's retagged one"
    );
    let log = h.log(1);
    assert!(
        !log.contains(&format!("id={poison}")) && !log.contains(&format!("id=\"{poison}\"")),
        "host 1 sent its retagged content:\n{log}"
    );

    // Host 1's own tag names other content: its replacement task is refused before it
    // starts, with a message naming the image, the id found and the id expected.
    let victim = on(1);
    h.run(&[
        "docker",
        "1",
        "rm",
        "-f",
        victim["container_id"].as_str().unwrap_or_default(),
    ]);
    let rejected = wait_for(
        Duration::from_secs(90),
        "a rejected task of shipped on host 1",
        || {
            let o = h.orc(1, &["service", "ps", "shipped", "--format", "json"]);
            let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).ok()?;
            v.into_iter().find(|t| t["state"] == "rejected")
        },
    );
    let err = rejected["error"].as_str().unwrap_or_default();
    assert_eq!(
        err,
        format!(
            "image {image} on this node is {poison}, expected {pinned} \
             (the service's pinned image): not starting the task"
        ),
        "{rejected:#}"
    );
    // The other two still run the pinned content. (On a 2-core machine host 3 was at
    // times marked down right after its replacement started, in 1 of 2 runs of the
    // code before this stop too: its beats, every 500 ms, came over 2 s late while it
    // loaded and started the container; its task is then placed again: this waits.)
    wait_for(
        Duration::from_secs(60),
        "two running tasks of shipped",
        || (running_tasks(&h, 1, "shipped").len() == 2).then_some(()),
    );
}
