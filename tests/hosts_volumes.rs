//! Level 4, stateful services on namespace hosts (tests/hosts/harness.sh): a named
//! volume that follows its task (`--mount-policy follow`).
//!
//! A stand-in database (busybox httpd with a CGI script: `GET /cgi-bin/write?N` writes
//! the file `rows/N` into its volume, syncs, and only then answers `ok N`) takes writes
//! from a client loop through the routing mesh. Its worker is drained: the task moves
//! to the other worker with every acknowledged row, the status shows the copy on its
//! way, and the old worker's copy is removed after the monitor period. Then the new
//! worker is halted (a power loss): the task waits, saying the volume is on a node that
//! is down, until `service update --force-new-volume` starts it with an empty volume.
//!
//! Needs root; takes /tmp/orc-hosts.lock as the other hosts tests do.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::hosts::*;
use common::wait_for;

/// The stand-in database: a CGI that writes a row (a file) per request, answering
/// only once the row is on disk, and one that counts the rows.
const DB: &str = r#"mkdir -p /www/cgi-bin /data/rows
hostname > /www/index.html
cat > /www/cgi-bin/write <<'EOF'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
n="$QUERY_STRING"
case "$n" in ''|*[!0-9]*) echo bad; exit 0;; esac
echo "$n" > /data/rows/.$n && mv /data/rows/.$n /data/rows/$n && sync && echo "ok $n"
EOF
cat > /www/cgi-bin/count <<'EOF'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
ls /data/rows | wc -l
EOF
chmod +x /www/cgi-bin/write /www/cgi-bin/count
exec httpd -f -p 80 -h /www"#;

/// Creates the service `db`: the stand-in database on a following volume `pgdata`,
/// published on 8080, a 1 s grace period and a 3 s monitor period, with `extra` flags.
fn create_db(h: &Hosts, extra: &[&str]) {
    let mut args = vec![
        "service",
        "create",
        "--name",
        "db",
        "--mount",
        "type=volume,source=pgdata,target=/data",
        "--mount-policy",
        "follow",
        "--publish",
        "8080:80",
        "--stop-grace-period",
        "1s",
        "--update-monitor",
        "3s",
    ];
    args.extend(extra);
    args.extend(["orc-test/web:1", "sh", "-c", DB]);
    h.ok(1, &args);
}

/// The one task of `db` meant to run, as host 1 lists it.
fn current(h: &Hosts) -> Option<serde_json::Value> {
    let o = h.orc(1, &["service", "ps", "db", "--format", "json"]);
    let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).ok()?;
    v.into_iter().find(|t| t["desired_state"] == "running")
}

/// The volumes of host `i`'s engine.
fn volumes(h: &Hosts, i: usize) -> BTreeSet<String> {
    h.run(&["docker", &i.to_string(), "volume", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_drained_database_moves_with_its_rows_and_a_lost_one_waits_for_its_volume() {
    let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let h = Hosts::up(3);
    let ns = h.form_cluster(3, "worker", 1);
    let host_of = |node: &str| {
        (1..=3)
            .find(|i| h.node_id(&ns, *i) == node)
            .expect("a host")
    };
    create_db(
        &h,
        &["--constraint", "node.role==worker", "--no-healthcheck"],
    );
    let first = wait_for(Duration::from_secs(60), "db running", || {
        current(&h).filter(|t| t["state"] == "running")
    });
    let old = host_of(first["node_id"].as_str().unwrap());
    let new = if old == 2 { 3 } else { 2 };
    eprintln!("db runs on host {old}");

    // The client: from host 1, through the mesh, a row at a time; acknowledged rows
    // are appended to a file.
    let acks = format!("/tmp/orc-volumes-acks-{}", std::process::id());
    let stop = format!("{acks}.stop");
    let _ = std::fs::remove_file(&acks);
    let _ = std::fs::remove_file(&stop);
    let script = format!(
        "i=0; while [ ! -e {stop} ]; do i=$((i+1)); \
         r=$(timeout 3 busybox wget -q -O - http://{addr}:8080/cgi-bin/write?$i 2>/dev/null) \
         && [ \"$r\" = \"ok $i\" ] && echo $i >> {acks}; sleep 0.05; done",
        addr = h.addr(1)
    );
    let mut client = std::process::Command::new("bash")
        .arg(harness())
        .args(["exec", "1", "sh", "-c", &script])
        .spawn()
        .expect("client loop");
    let count_acks = || {
        std::fs::read_to_string(&acks)
            .unwrap_or_default()
            .lines()
            .count()
    };
    wait_for(Duration::from_secs(30), "20 acknowledged rows", || {
        (count_acks() >= 20).then_some(())
    });

    // Drain: the task moves, with its data, and says so on the way.
    let old_node = h.node_id(&ns, old);
    h.ok(1, &["node", "update", "--availability", "drain", &old_node]);
    let t0 = Instant::now();
    let mut messages = BTreeSet::new();
    let moved = wait_for(
        Duration::from_secs(90),
        "db running on the other worker",
        || {
            let t = current(&h)?;
            if let Some(m) = t["message"].as_str() {
                messages.insert(m.to_string());
            }
            (t["state"] == "running" && host_of(t["node_id"].as_str()?) == new).then_some(t)
        },
    );
    let took = t0.elapsed();
    eprintln!("moved in {took:?}; messages seen: {messages:?}");
    let old_name = ns
        .iter()
        .find(|n| n["id"] == old_node.as_str())
        .and_then(|n| n["hostname"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with(&format!("copying volume pgdata from {old_name} ("))),
        "the copy shows in service ps: {messages:?}"
    );
    assert!(
        h.log(new).contains("volume copied from another node"),
        "host {new} copied the volume"
    );
    // A few more rows on the new node, then the client stops.
    let before = count_acks();
    wait_for(
        Duration::from_secs(30),
        "rows acknowledged after the move",
        || (count_acks() >= before + 10).then_some(()),
    );
    std::fs::write(&stop, b"").unwrap();
    let _ = client.wait();
    let acked: Vec<String> = std::fs::read_to_string(&acks)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let ctr = moved["container_id"].as_str().unwrap().to_string();
    let o = in_container(&h, new, &ctr, "ls /data/rows");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: BTreeSet<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|r| !rows.contains(*r)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged rows are missing on the new node: {missing:?}",
        missing.len(),
        acked.len()
    );
    eprintln!(
        "{} acknowledged rows, all on host {new} ({} rows there)",
        acked.len(),
        rows.len()
    );
    // `volume ls` shows where the data is, with its size and its task.
    // (`copy of db.1 (moving here)` until the monitor period is over.)
    let mut seen = BTreeSet::new();
    let here = wait_for(
        Duration::from_secs(30),
        "volume ls: the data on the new host",
        || {
            let ls = h.ok(1, &["volume", "ls", "--format", "json"]);
            let ls: Vec<serde_json::Value> = serde_json::from_str(&ls).unwrap();
            let v = ls
                .into_iter()
                .find(|v| v["name"] == "pgdata" && v["node_id"] == h.node_id(&ns, new).as_str())?;
            seen.insert(v["follows"].as_str().unwrap_or_default().to_string());
            (v["follows"] == "data of db.1").then_some(v)
        },
    );
    eprintln!("volume ls said of host {new}: {seen:?}");
    assert_eq!(here["tasks"], serde_json::json!(["db.1"]), "{here}");
    assert!(here["size_bytes"].as_u64().unwrap() > 0, "{here}");
    // The old copy goes once the new task has run for the monitor period.
    wait_for(Duration::from_secs(60), "the old copy removed", || {
        (!volumes(&h, old).contains("pgdata")).then_some(())
    });
    assert!(volumes(&h, new).contains("pgdata"));
    let _ = std::fs::remove_file(&acks);
    let _ = std::fs::remove_file(&stop);

    // Power loss of the node with the data: the task waits for it, saying why.
    h.ok(
        1,
        &["node", "update", "--availability", "active", &old_node],
    );
    h.run(&["halt", &new.to_string()]);
    let new_name = ns
        .iter()
        .find(|n| n["id"] == h.node_id(&ns, new).as_str())
        .and_then(|n| n["hostname"].as_str())
        .unwrap_or_default()
        .to_string();
    let waiting = wait_for(Duration::from_secs(60), "db waiting for its volume", || {
        let t = current(&h)?;
        let m = t["message"].as_str()?.to_string();
        (t["state"] == "pending" && m.contains("volume pgdata is on")).then_some(m)
    });
    assert!(
        waiting.starts_with(&format!("volume pgdata is on {new_name}, which is down")),
        "{waiting}"
    );
    // It keeps waiting: not started empty elsewhere.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(current(&h).unwrap()["state"], "pending");
    // The operator accepts an empty volume.
    h.ok(1, &["service", "update", "--force-new-volume", "db"]);
    let restarted = wait_for(Duration::from_secs(60), "db running empty on host", || {
        current(&h).filter(|t| t["state"] == "running")
    });
    assert_eq!(host_of(restarted["node_id"].as_str().unwrap()), old);
    let body = host_sh(
        1,
        &format!(
            "timeout 5 busybox wget -q -O - http://{}:8080/cgi-bin/count",
            h.addr(1)
        ),
    );
    assert_eq!(
        String::from_utf8_lossy(&body.stdout).trim(),
        "0",
        "a new, empty volume"
    );
}

#[test]
fn a_move_whose_new_task_fails_its_health_check_rolls_back_to_the_old_node_with_its_rows() {
    let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let h = Hosts::up(3);
    let ns = h.form_cluster(3, "worker", 1);
    let (a, b) = (2, 3);
    h.ok(
        1,
        &[
            "node",
            "update",
            "--label-add",
            "slot=a",
            &h.node_id(&ns, a),
        ],
    );
    h.ok(
        1,
        &[
            "node",
            "update",
            "--label-add",
            "slot=b",
            &h.node_id(&ns, b),
        ],
    );
    let host_of = |node: &str| {
        (1..=3)
            .find(|i| h.node_id(&ns, *i) == node)
            .expect("a host")
    };
    create_db(
        &h,
        &[
            "--constraint",
            "node.labels.slot==a",
            "--health-cmd",
            "test -d /data/rows",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
            "--update-failure-action",
            "rollback",
        ],
    );
    let first = wait_for(Duration::from_secs(60), "db running", || {
        current(&h).filter(|t| t["state"] == "running")
    });
    assert_eq!(host_of(first["node_id"].as_str().unwrap()), a);
    let url = format!("http://{}:8080/cgi-bin", h.addr(1));
    for i in 1..=20 {
        let o = host_sh(
            1,
            &format!("timeout 5 busybox wget -q -O - {url}/write?{i}"),
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("ok {i}"));
    }
    // The update moves the slot to b, where the new spec's health check fails.
    let _ = h.orc(
        1,
        &[
            "service",
            "update",
            "--detach",
            "--constraint-rm",
            "node.labels.slot==a",
            "--constraint-add",
            "node.labels.slot==b",
            "--health-cmd",
            "false",
            "db",
        ],
    );
    let mut saw_b = false;
    let back = wait_for(Duration::from_secs(120), "the rollback done", || {
        let o = h.orc(1, &["service", "ps", "db", "--format", "json"]);
        let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).ok()?;
        saw_b |= v
            .iter()
            .any(|t| t["node_id"].as_str().map(host_of) == Some(b) && t["container_id"] != "");
        let inspect = h.orc(1, &["service", "inspect", "db"]);
        let s: serde_json::Value = serde_json::from_slice(&inspect.stdout).ok()?;
        let state = s[0]["update_status"]["state"].as_str()?.to_string();
        let t = current(&h).filter(|t| t["state"] == "running")?;
        (state == "rollback_completed").then_some(t)
    });
    assert!(saw_b, "the new task ran on b (and copied the volume there)");
    assert!(
        h.log(b).contains("volume copied from another node"),
        "host b copied the volume"
    );
    assert_eq!(host_of(back["node_id"].as_str().unwrap()), a, "back on a");
    // Every row is there, from a's own copy (never removed).
    let o = host_sh(1, &format!("timeout 5 busybox wget -q -O - {url}/count"));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "20");
    assert!(volumes(&h, a).contains("pgdata"));
}
