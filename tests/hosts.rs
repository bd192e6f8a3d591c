//! Level 4: real hosts. Each host is a network namespace with its own address, its own
//! dockerd and its own `orc daemon` (tests/hosts/harness.sh, after ../shared/HOSTS.md).
//! A halt kills every process of the host, containers included, and takes its link
//! down, as a power loss would.
//!
//! These tests need root; the hosts use machine-wide names, so they run one at a time.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::wait_for;

static HOSTS_LOCK: Mutex<()> = Mutex::new(());

fn harness() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/hosts/harness.sh")
}

/// A set of namespace hosts; torn down on drop.
struct Hosts {
    n: usize,
}

impl Hosts {
    fn up(n: usize) -> Hosts {
        let h = Hosts { n };
        h.run(&["up", &n.to_string()]);
        h
    }

    fn run(&self, args: &[&str]) -> String {
        let o = Command::new("bash")
            .arg(harness())
            .args(args)
            .env("ORC_BIN", env!("CARGO_BIN_EXE_orc"))
            .output()
            .expect("run harness");
        assert!(
            o.status.success(),
            "harness {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn addr(&self, i: usize) -> String {
        format!("10.77.0.{}", 10 + i)
    }

    fn sock(&self, i: usize) -> String {
        self.run(&["orc-sock", &i.to_string()])
    }

    fn start_orc(&self, i: usize) {
        self.run(&["start-orc", &i.to_string()]);
    }

    fn log(&self, i: usize) -> String {
        let dir = self.run(&["dir", &i.to_string()]);
        std::fs::read_to_string(format!("{dir}/orc.log")).unwrap_or_default()
    }

    fn orc(&self, i: usize, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_orc"))
            .arg("-H")
            .arg(self.sock(i))
            .args(args)
            .output()
            .expect("orc")
    }

    fn ok(&self, i: usize, args: &[&str]) -> String {
        let o = self.orc(i, args);
        assert!(
            o.status.success(),
            "host {i}: orc {args:?}: {}\n--- orc.log ---\n{}",
            String::from_utf8_lossy(&o.stderr),
            self.log(i)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn nodes(&self, i: usize) -> Option<Vec<serde_json::Value>> {
        let o = self.orc(i, &["node", "ls", "--format", "json"]);
        if !o.status.success() {
            return None;
        }
        serde_json::from_slice(&o.stdout).ok()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(harness()).arg("down").output();
        let _ = self.n;
    }
}

#[test]
fn three_managers_and_a_worker_on_separate_hosts_survive_the_leaders_halt() {
    let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let h = Hosts::up(4);
    for i in 1..=4 {
        h.start_orc(i);
    }
    h.ok(1, &["init", "--advertise-addr", &h.addr(1)]);
    let mt = h.ok(1, &["join-token", "manager", "-q"]).trim().to_string();
    let wt = h.ok(1, &["join-token", "worker", "-q"]).trim().to_string();
    // Managers 2 and 3 join through different managers; the advertised address is
    // found from the route to the manager.
    h.ok(2, &["join", "--token", &mt, &h.addr(1)]);
    h.ok(3, &["join", "--token", &mt, &format!("{}:4242", h.addr(2))]);
    h.ok(4, &["join", "--token", &wt, &h.addr(3)]);

    let ns = wait_for(Duration::from_secs(30), "4 ready nodes", || {
        let ns = h.nodes(2)?;
        (ns.len() == 4
            && ns
                .iter()
                .all(|n| n["status"] == "ready" && n["engine_version"] != ""))
        .then_some(ns)
    });
    let mut addrs: Vec<String> = ns
        .iter()
        .map(|n| n["address"].as_str().unwrap().to_string())
        .collect();
    addrs.sort();
    assert_eq!(
        addrs,
        (1..=4)
            .map(|i| format!("{}:4242", h.addr(i)))
            .collect::<Vec<_>>()
    );
    let leader = ns
        .iter()
        .find(|n| n["manager_status"] == "leader")
        .expect("a leader");
    assert_eq!(leader["address"], format!("{}:4242", h.addr(1)));
    let worker_id = ns.iter().find(|n| n["role"] == "worker").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Power loss of the leader's host.
    h.run(&["halt", "1"]);
    let t0 = Instant::now();
    h.ok(
        2,
        &[
            "node",
            "update",
            "--label-add",
            "after-halt=yes",
            &worker_id,
        ],
    );
    let took = t0.elapsed();
    eprintln!(
        "write accepted by host 2 {} ms after host 1 (the leader) halted",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(15), "failover took {took:?}");

    wait_for(
        Duration::from_secs(15),
        "halted leader seen down, new leader elected",
        || {
            let ns = h.nodes(3)?;
            let old = ns
                .iter()
                .find(|n| n["address"] == format!("{}:4242", h.addr(1)))?;
            let new_leader = ns.iter().find(|n| n["manager_status"] == "leader")?;
            (old["status"] == "down"
                && old["manager_status"] == "unreachable"
                && new_leader["address"] != old["address"])
                .then_some(())
        },
    );
    // The worker keeps its session through the failover.
    std::thread::sleep(Duration::from_secs(4));
    let ns = h.nodes(3).expect("node ls");
    let w = ns.iter().find(|n| n["id"] == worker_id.as_str()).unwrap();
    assert_eq!(w["status"], "ready");
    assert_eq!(w["labels"]["after-halt"], "yes");

    // The host comes back: its daemon resumes as the same manager and catches up.
    h.run(&["restart", "1"]);
    h.start_orc(1);
    wait_for(
        Duration::from_secs(30),
        "host 1 back as a reachable manager with the new write",
        || {
            let ns = h.nodes(1)?;
            let me = ns
                .iter()
                .find(|n| n["address"] == format!("{}:4242", h.addr(1)))?;
            let w = ns.iter().find(|n| n["id"] == worker_id.as_str())?;
            (me["status"] == "ready"
                && me["manager_status"] != "unreachable"
                && w["labels"]["after-halt"] == "yes")
                .then_some(())
        },
    );
}

#[test]
fn a_published_port_answers_on_every_host_whatever_host_runs_the_task() {
    let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let h = Hosts::up(3);
    for i in 1..=3 {
        h.start_orc(i);
    }
    h.ok(1, &["init", "--advertise-addr", &h.addr(1)]);
    let wt = h.ok(1, &["join-token", "worker", "-q"]).trim().to_string();
    for i in 2..=3 {
        h.ok(i, &["join", "--token", &wt, &h.addr(1)]);
    }
    let ns = wait_for(Duration::from_secs(30), "3 ready nodes", || {
        let ns = h.nodes(1)?;
        (ns.len() == 3 && ns.iter().all(|n| n["status"] == "ready")).then_some(ns)
    });
    let host3 = ns
        .iter()
        .find(|n| n["address"] == format!("{}:4242", h.addr(3)))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // One task, on host 3 only; published on 8080 everywhere.
    h.ok(
        1,
        &[
            "service",
            "create",
            "--name",
            "web",
            "-p",
            "8080:80",
            "--constraint",
            &format!("node.id=={host3}"),
            "orc-test/web:1",
        ],
    );
    for i in 1..=3 {
        let url = format!("http://{}:8080/", h.addr(i));
        let body = wait_for(
            Duration::from_secs(20),
            &format!("{url} through the mesh"),
            || {
                // The request comes from host 1's namespace, like a client on that network.
                let o = Command::new("bash")
                    .arg(harness())
                    .args([
                        "exec", "1", "timeout", "5", "busybox", "wget", "-q", "-O", "-", &url,
                    ])
                    .output()
                    .ok()?;
                o.status
                    .success()
                    .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
            },
        );
        assert!(!body.is_empty(), "host {i}: empty page");
        eprintln!("host {i} ({url}) answered: {body}");
    }
}
