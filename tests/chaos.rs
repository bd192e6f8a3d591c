//! Level 4 chaos: three managers on namespace hosts under a steady write load. The
//! leader's daemon is killed (SIGKILL) 20 times and restarted; then a follower's link
//! is cut and healed. No acknowledged write may be lost, the cut-off minority must
//! refuse writes, and every manager must end on the same applied index.
//!
//! Also here: rebalancing. A worker's host halts, its replicas move; when the host
//! comes back, the service spreads onto it again.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::hosts::*;
use common::wait_for;

/// `orc ARGS` against host `i`'s daemon, bounded by `secs` seconds.
fn orc_timed(h: &Hosts, i: usize, secs: u32, args: &[&str]) -> std::process::Output {
    Command::new("timeout")
        .arg(secs.to_string())
        .arg(env!("CARGO_BIN_EXE_orc"))
        .arg("-H")
        .arg(h.sock(i))
        .args(args)
        .output()
        .expect("timeout orc")
}

fn info(h: &Hosts, i: usize) -> Option<serde_json::Value> {
    let o = orc_timed(h, i, 5, &["info", "--format", "json"]);
    if !o.status.success() {
        return None;
    }
    serde_json::from_slice(&o.stdout).ok()
}

/// The host (1..=n) whose daemon leads, as host `from` sees it.
fn leader_host(h: &Hosts, from: usize, n: usize) -> Option<usize> {
    let v = info(h, from)?;
    let addr = v["leader_addr"].as_str()?.to_string();
    (1..=n).find(|i| addr == format!("{}:4242", h.addr(*i)))
}

fn kill_orc(h: &Hosts, i: usize) {
    let dir = h.run(&["dir", &i.to_string()]);
    let pid = std::fs::read_to_string(format!("{dir}/orc.pid")).expect("orc.pid");
    let st = Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .expect("kill");
    assert!(st.success(), "kill -9 {pid}");
    let _ = std::fs::remove_file(format!("{dir}/orc.pid"));
}

#[test]
fn no_acknowledged_write_is_lost_through_20_leader_kills_and_a_partition() {
    let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    const N: usize = 3;
    let h = Arc::new(Hosts::up(N));
    let ns = h.form_cluster(N, "manager", 1);
    let target = ns[0]["id"].as_str().unwrap().to_string();

    // The write load: labels c0, c1, ... on one node, each through a usable manager;
    // `acked` holds those whose command succeeded.
    let usable: Arc<Mutex<BTreeSet<usize>>> = Arc::new(Mutex::new((1..=N).collect()));
    let acked: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::new(Mutex::new(vec![]));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (h, usable, acked, failed, stop, target) = (
            h.clone(),
            usable.clone(),
            acked.clone(),
            failed.clone(),
            stop.clone(),
            target.clone(),
        );
        std::thread::spawn(move || {
            let mut k = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let hosts: Vec<usize> = usable.lock().unwrap().iter().copied().collect();
                let i = hosts[(k as usize) % hosts.len()];
                let label = format!("c{k}=1");
                let started = Instant::now();
                let o = orc_timed(
                    &h,
                    i,
                    10,
                    &["node", "update", "--label-add", &label, &target],
                );
                if o.status.success() {
                    acked.lock().unwrap().push((k, started));
                } else {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                k += 1;
            }
            k
        })
    };

    // 20 leader kills.
    let mut failovers = vec![];
    for round in 1..=20 {
        let leader = wait_for(Duration::from_secs(20), "a leader", || {
            (1..=N).find_map(|i| leader_host(&h, i, N))
        });
        usable.lock().unwrap().remove(&leader);
        kill_orc(&h, leader);
        let t0 = Instant::now();
        // a write sent after the kill, acknowledged
        wait_for(Duration::from_secs(20), "a write after the kill", || {
            acked
                .lock()
                .unwrap()
                .iter()
                .any(|(_, at)| *at >= t0)
                .then_some(())
        });
        failovers.push(t0.elapsed());
        h.start_orc(leader);
        wait_for(Duration::from_secs(30), "the killed manager back", || {
            let v = info(&h, leader)?;
            (v["state"] == "active" && !v["leader_addr"].as_str()?.is_empty()).then_some(())
        });
        usable.lock().unwrap().insert(leader);
        eprintln!(
            "round {round}: host {leader} killed; a write sent after the kill acknowledged {:?} later",
            t0.elapsed()
        );
    }

    // A follower cut off: the majority goes on, the minority refuses writes.
    let leader = wait_for(Duration::from_secs(20), "a leader", || {
        (1..=N).find_map(|i| leader_host(&h, i, N))
    });
    let minority = (1..=N).find(|i| *i != leader).unwrap();
    usable.lock().unwrap().remove(&minority);
    h.run(&["cut", &minority.to_string()]);
    let before = acked.lock().unwrap().len();
    wait_for(
        Duration::from_secs(20),
        "writes through the majority",
        || (acked.lock().unwrap().len() > before + 5).then_some(()),
    );
    let t0 = Instant::now();
    let o = orc_timed(
        &h,
        minority,
        30,
        &["node", "update", "--label-add", "minority=1", &target],
    );
    assert!(
        !o.status.success(),
        "the cut-off manager accepted a write: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    eprintln!(
        "cut-off manager refused a write in {:?}: {}",
        t0.elapsed(),
        String::from_utf8_lossy(&o.stderr).trim()
    );
    h.run(&["heal", &minority.to_string()]);
    usable.lock().unwrap().insert(minority);
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let attempted = writer.join().unwrap();

    // Converged: every manager on the same applied index.
    let applied = wait_for(
        Duration::from_secs(30),
        "every manager on one applied index",
        || {
            let idx: Vec<u64> = (1..=N)
                .map(|i| info(&h, i).and_then(|v| v["raft_last_applied"].as_u64()))
                .collect::<Option<_>>()?;
            idx.windows(2).all(|w| w[0] == w[1]).then(|| idx[0])
        },
    );
    // No acknowledged write lost, seen through every manager.
    let acked: Vec<u64> = acked.lock().unwrap().iter().map(|(k, _)| *k).collect();
    for i in 1..=N {
        let o = orc_timed(&h, i, 10, &["node", "inspect", &target]);
        assert!(o.status.success(), "node inspect via host {i}");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let v = if v.is_array() { v[0].clone() } else { v };
        let labels = v["labels"].as_object().expect("labels").clone();
        let lost: Vec<&u64> = acked
            .iter()
            .filter(|k| !labels.contains_key(&format!("c{k}")))
            .collect();
        assert!(
            lost.is_empty(),
            "host {i}: acknowledged writes lost: {lost:?}"
        );
        assert!(
            !labels.contains_key("minority"),
            "the minority's write was applied"
        );
    }
    failovers.sort();
    eprintln!(
        "chaos: {attempted} writes attempted, {} acknowledged, {} failed, 0 lost; 20 leader kills (first write sent after a kill acknowledged: median {:?}, max {:?}); minority refused; all managers at index {applied}",
        acked.len(),
        failed.load(Ordering::SeqCst),
        failovers[failovers.len() / 2],
        failovers.last().unwrap()
    );
}

#[test]
fn a_worker_that_comes_back_gets_its_share_of_replicas_again() {
    let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let h = Hosts::up(3);
    h.form_cluster(3, "worker", 1);
    h.ok(
        1,
        &[
            "service",
            "create",
            "--name",
            "spread",
            "--replicas",
            "6",
            "--update-parallelism",
            "2",
            "orc-test/busybox:1",
            "sleep",
            "100000",
        ],
    );
    let per_host = |h: &Hosts| -> Vec<usize> {
        let tasks = running_tasks(h, 1, "spread");
        let ns = h.nodes(1).unwrap_or_default();
        (1..=3)
            .map(|i| {
                let id = ns
                    .iter()
                    .find(|n| n["address"] == format!("{}:4242", h.addr(i)))
                    .map(|n| n["id"].clone());
                tasks
                    .iter()
                    .filter(|t| Some(&t["node_id"]) == id.as_ref())
                    .count()
            })
            .collect()
    };
    wait_for(Duration::from_secs(60), "2 replicas per host", || {
        (per_host(&h) == [2, 2, 2]).then_some(())
    });
    h.run(&["halt", "3"]);
    wait_for(
        Duration::from_secs(60),
        "6 replicas on hosts 1 and 2",
        || (per_host(&h) == [3, 3, 0]).then_some(()),
    );
    h.run(&["restart", "3"]);
    h.start_orc(3);
    let t0 = Instant::now();
    wait_for(
        Duration::from_secs(60),
        "host 3 with its share again",
        || (per_host(&h) == [2, 2, 2]).then_some(()),
    );
    eprintln!(
        "host 3 got its 2 replicas back {:?} after its daemon restarted",
        t0.elapsed()
    );
}
