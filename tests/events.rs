//! `orc events` on the real Docker engine: a scripted life of a service yields the
//! expected events in order, a follower sees a change as it happens, and the hostile or
//! mistaken callers (a worker, an unknown filter, a refused join) get one clear answer.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

/// Now, as unix seconds with nanoseconds (an `orc events --since` value).
fn now_secs() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Containers of a service on the engine.
fn containers(service: &str) -> Vec<String> {
    let filter = format!("label=orc.service.name={service}");
    docker(&["ps", "-q", "--filter", filter.as_str()])
        .lines()
        .map(str::to_string)
        .collect()
}

fn running(n: &Node, service: &str) -> usize {
    n.json(&["service", "ps", service])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|t| t["state"] == "running" && t["desired_state"] == "running")
        .count()
}

/// The events `orc events ARGS --format json` prints (it must end by itself).
fn events(n: &Node, args: &[&str]) -> Vec<serde_json::Value> {
    let mut a = vec!["events"];
    a.extend(args);
    a.extend(["--format", "json"]);
    n.ok(&a)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// `type action` of an event.
fn kind(e: &serde_json::Value) -> String {
    format!(
        "{} {}",
        e["type"].as_str().unwrap_or(""),
        e["action"].as_str().unwrap_or("")
    )
}

/// Finds `want` in order in `events` (other events may come between); panics naming
/// the first one missing.
/// An expected event: its `type action`, and a check of the rest.
type Want<'a> = (&'a str, &'a dyn Fn(&serde_json::Value) -> bool);

fn in_order(events: &[serde_json::Value], want: &[Want]) {
    let mut at = 0;
    for (what, pred) in want {
        match events[at..]
            .iter()
            .position(|e| kind(e) == *what && pred(e))
        {
            Some(i) => at += i + 1,
            None => panic!(
                "no {what:?} after event {at}; the events:\n{}",
                events
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }
}

#[test]
fn a_service_s_life_yields_its_events_in_order() {
    ensure_images();
    let name = format!("ev{}", std::process::id());
    let _c = RemoveContainers(vec![name.clone()]);
    let nodes = cluster(1, 0, &[]);
    let m = &nodes[0];
    let node_id = m.nodes()[0]["id"].as_str().unwrap().to_string();
    let since = now_secs();

    m.ok(&[
        "service",
        "create",
        "--name",
        &name,
        "--replicas",
        "1",
        "--restart-delay",
        "1s",
        "--stop-grace-period",
        "1s",
        "orc-test/busybox:1",
        "sleep",
        "3600",
    ]);
    m.ok(&["service", "scale", &format!("{name}=2")]);
    // A container killed behind orc's back: its task fails and is replaced.
    let victim = containers(&name)[0].clone();
    docker(&["kill", &victim]);
    wait_for(Duration::from_secs(60), "the killed task replaced", || {
        let c = containers(&name);
        (c.len() == 2 && !c.iter().any(|c| victim.starts_with(c.as_str()))).then_some(())
    });
    wait_for(Duration::from_secs(60), "2 running", || {
        (running(m, &name) == 2).then_some(())
    });
    m.ok(&["node", "update", "--availability", "drain", &node_id]);
    wait_for(Duration::from_secs(60), "the drained node empty", || {
        containers(&name).is_empty().then_some(())
    });
    m.ok(&["node", "update", "--availability", "active", &node_id]);
    wait_for(Duration::from_secs(60), "2 running again", || {
        (running(m, &name) == 2).then_some(())
    });
    m.ok(&["service", "update", "--env-add", "V=2", &name]);
    m.ok(&["service", "rollback", &name]);
    let until = now_secs();

    let all = events(m, &["--since", &since, "--until", &until]);
    let named = |e: &serde_json::Value| e["name"] == name.as_str();
    let ours = |e: &serde_json::Value| e["attributes"]["service"] == name.as_str();
    let failed = |e: &serde_json::Value| {
        ours(e) && !e["attributes"]["error"].as_str().unwrap_or("").is_empty()
    };
    let drained = |e: &serde_json::Value| e["attributes"]["availability"] == "drain";
    let active = |e: &serde_json::Value| e["attributes"]["availability"] == "active";
    in_order(
        &all,
        &[
            ("service create", &named),
            ("task create", &ours),
            ("task running", &ours),
            ("service scale", &|e| {
                named(e) && e["attributes"]["replicas"] == "2"
            }),
            ("task failed", &failed),
            ("task running", &ours),
            ("node availability", &drained),
            ("task shutdown", &ours),
            ("node availability", &active),
            ("task running", &ours),
            ("service update", &named),
            ("update start", &named),
            ("update complete", &named),
            ("service update", &named),
            ("update rollback-start", &named),
            ("update rollback-complete", &named),
        ],
    );
    // Every event carries the contract's keys; times never go back.
    for e in &all {
        for k in [
            "time",
            "time_nano",
            "type",
            "action",
            "id",
            "name",
            "attributes",
        ] {
            assert!(e.get(k).is_some(), "{k} missing in {e}");
        }
    }
    let times: Vec<u64> = all
        .iter()
        .map(|e| e["time_nano"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // Filters: one type only; a name; an unknown key refused in one line naming it.
    let services = events(
        m,
        &[
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "type=service",
        ],
    );
    assert!(!services.is_empty());
    assert!(
        services.iter().all(|e| e["type"] == "service"),
        "{services:?}"
    );
    let updates = events(
        m,
        &[
            "--since",
            &since,
            "--until",
            &until,
            "-f",
            "type=update",
            "-f",
            &format!("name={name}"),
        ],
    );
    assert_eq!(
        updates.iter().map(kind).collect::<Vec<_>>(),
        [
            "update start",
            "update complete",
            "update rollback-start",
            "update rollback-complete"
        ]
    );
    let err = m.fails(&["events", "--filter", "colour=red"]);
    assert!(err.contains("--filter: unknown key \"colour\""), "{err}");
    let err = m.fails(&["events", "--since", "yesterday"]);
    assert!(err.contains("--since: expected"), "{err}");
    // The plain form: one line per event, docker's way.
    let plain = m.ok(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "-f",
        "type=service",
    ]);
    let first = plain.lines().next().unwrap_or("");
    assert!(
        first.contains(" service create ") && first.contains(&format!("(name={name}")),
        "{plain}"
    );
}

#[test]
fn a_follower_sees_changes_live_a_refused_join_is_told_and_a_worker_has_no_events() {
    ensure_images();
    let nodes = cluster(1, 1, &[]);
    let m = &nodes[0];
    let node_id = m.nodes()[0]["id"].as_str().unwrap().to_string();

    let mut child = Command::new(bin())
        .args([
            "-H",
            m.sock().to_str().unwrap(),
            "events",
            "--format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("orc events");
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if let Ok(v) = serde_json::from_str(&line) {
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);

    // The follower is live once it shows a change made after it started: label the
    // node until one shows (the first may come before the stream is open).
    let mut i = 0;
    wait_for(
        Duration::from_secs(30),
        "the follower shows a live change",
        || {
            i += 1;
            m.ok(&[
                "node",
                "update",
                "--label-add",
                &format!("probe={i}"),
                &node_id,
            ]);
            rx.recv_timeout(Duration::from_millis(500))
                .ok()
                .filter(|e| kind(e) == "node labels")
        },
    );
    // A join with a wrong secret (the right CA digest), from another daemon.
    let token = m.ok(&["join-token", "worker", "-q"]).trim().to_string();
    let (head, secret) = token.rsplit_once('-').unwrap();
    let bad = format!("{head}-{}", "0".repeat(secret.len()));
    let mut stranger = Node::new();
    stranger.start();
    stranger.fails(&[
        "join",
        "--token",
        &bad,
        "--advertise-addr",
        &stranger.addr(),
        &m.addr(),
    ]);
    let refused = wait_for(Duration::from_secs(30), "a join refuse event", || {
        rx.recv_timeout(Duration::from_secs(1))
            .ok()
            .filter(|e| kind(e) == "join refuse")
    });
    assert!(
        refused["attributes"]["addr"]
            .as_str()
            .unwrap_or("")
            .starts_with("127.0.0.1:"),
        "{refused}"
    );
    assert!(
        refused["attributes"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("invalid join token"),
        "{refused}"
    );
    assert!(
        !refused.to_string().contains(&bad),
        "the token is never in an event"
    );

    // A service created now shows as it happens.
    let name = format!("evf{}", std::process::id());
    let _c = RemoveContainers(vec![name.clone()]);
    m.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        &name,
        "orc-test/busybox:1",
        "sleep",
        "3600",
    ]);
    wait_for(
        Duration::from_secs(30),
        "the follower shows the service",
        || {
            rx.recv_timeout(Duration::from_secs(1))
                .ok()
                .filter(|e| kind(e) == "service create" && e["name"] == name.as_str())
        },
    );
    // A worker applies no Raft entries: it has no events, and says so in one line.
    let err = nodes[1].fails(&["events", "--since", "1m", "--until", "0s"]);
    assert!(err.contains("not a manager"), "{err}");
    // The positive control: the manager answers the same request.
    m.ok(&["events", "--since", "1m", "--until", "0s"]);
}
