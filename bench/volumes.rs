//! Following volumes (issue 17): how long a drained database takes to run again on
//! another node with its data, how long its clients go unanswered, and how fast the
//! copy goes beside a plain `tar | socat` stream between the same two hosts, measured in
//! the same run.
//!
//! Three namespace hosts (tests/hosts/harness.sh, `Hosts::up(3)`, which holds the
//! machine-wide `/tmp/orc-hosts.lock`): a manager and two workers. For each size
//! (`SIZES`, MB, default `10,100,1000`):
//!
//! 1. a service `db` (one replica on a worker, `--mount-policy follow,keep` so that the
//!    old copy stays for the baseline) whose volume holds SIZE MB of random bytes
//!    (incompressible: the worst case for the copy's compression) written at its first
//!    start, serving `GET /cgi-bin/count` through the mesh;
//! 2. a client on host 1 asks for the count every 50 ms (1 s time-out);
//! 3. its worker is drained; printed: the time until the task runs on the other worker
//!    (the move), the longest the client went without an answer (the downtime), and
//!    the copy's own time and throughput as the receiving agent logged them;
//! 4. the baseline: the old host's volume directory streamed with busybox
//!    `tar -cf - .` through `socat` to `socat | tar -xf -` on the new host (plain TCP,
//!    no encryption: faster than `tar | ssh` would be), timed, and its throughput;
//! 5. the ratio of the two throughputs.
//!
//! Run as root with Docker and the test images built (`tests/images/build.sh`):
//!
//! ```sh
//! cargo bench --bench volumes
//! SIZES=10,100 cargo bench --bench volumes
//! ```
//!
//! It prints its numbers and asserts nothing about them.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::hosts::{harness, host_sh, Hosts};
use common::wait_for;

/// The stand-in database: SIZE MB of random bytes in its volume (once), and a CGI
/// that counts its files.
fn db_script(mb: u64) -> String {
    format!(
        r#"mkdir -p /www/cgi-bin
hostname > /www/index.html
[ -e /data/filled ] || {{ dd if=/dev/urandom of=/data/blob bs=1048576 count={mb} 2>/dev/null && sync && touch /data/filled; }}
cat > /www/cgi-bin/count <<'EOF'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
ls /data | wc -l
EOF
chmod +x /www/cgi-bin/count
exec httpd -f -p 80 -h /www"#
    )
}

fn current(h: &Hosts) -> Option<serde_json::Value> {
    let o = h.orc(1, &["service", "ps", "db", "--format", "json"]);
    let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).ok()?;
    v.into_iter().find(|t| t["desired_state"] == "running")
}

/// `s` without its terminal colour codes (`ESC [ ... m`).
fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The numbers after `key=` in the last line of `log` that holds `marker`.
fn field(log: &str, marker: &str, key: &str) -> Option<u64> {
    let line = log.lines().rev().map(plain).find(|l| l.contains(marker))?;
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}

struct Row {
    mb: u64,
    moved: Duration,
    downtime: Duration,
    copy_ms: u64,
    copy_bytes: u64,
    wait_ms: u64,
    tar_ms: u64,
}

fn run(h: &Hosts, ns: &[serde_json::Value], mb: u64) -> Row {
    let host_of = |node: &str| (1..=3).find(|i| h.node_id(ns, *i) == node).expect("host");
    let volume = format!("vol{mb}");
    let script = db_script(mb);
    h.ok(
        1,
        &[
            "service",
            "create",
            "--name",
            "db",
            "--mount",
            &format!("type=volume,source={volume},target=/data"),
            "--mount-policy",
            "follow,keep",
            "--constraint",
            "node.role==worker",
            "--publish",
            "8080:80",
            "--no-healthcheck",
            "--stop-grace-period",
            "1s",
            "--update-monitor",
            "1s",
            "orc-test/web:1",
            "sh",
            "-c",
            &script,
        ],
    );
    let count_url = format!("http://{}:8080/cgi-bin/count", h.addr(1));
    let ask = |url: &str| {
        let o = host_sh(1, &format!("timeout 1 busybox wget -q -O - {url}"));
        o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "2"
    };
    let first = wait_for(Duration::from_secs(600), "db running and filled", || {
        let t = current(h).filter(|t| t["state"] == "running")?;
        ask(&count_url).then_some(t)
    });
    let old = host_of(first["node_id"].as_str().unwrap());
    let new = if old == 2 { 3 } else { 2 };

    // The client: answered or not, every 50 ms; the longest gap between answers.
    let stop = Arc::new(AtomicBool::new(false));
    let gap = Arc::new(Mutex::new((Instant::now(), Duration::ZERO)));
    let client = {
        let (stop, gap, url) = (stop.clone(), gap.clone(), count_url.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let o = host_sh(1, &format!("timeout 1 busybox wget -q -O - {url}"));
                let ok = o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "2";
                if ok {
                    let mut g = gap.lock().unwrap();
                    let since = g.0.elapsed();
                    g.1 = g.1.max(since);
                    g.0 = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let old_node = h.node_id(ns, old);
    let t0 = Instant::now();
    h.ok(1, &["node", "update", "--availability", "drain", &old_node]);
    wait_for(Duration::from_secs(900), "db on the other worker", || {
        let t = current(h)?;
        (t["state"] == "running" && host_of(t["node_id"].as_str()?) == new).then_some(())
    });
    let moved = t0.elapsed();
    wait_for(Duration::from_secs(60), "db answering again", || {
        ask(&count_url).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let downtime = gap.lock().unwrap().1;
    let log = h.log(new);
    let copy_ms = field(&log, "volume copied from another node", "ms").unwrap_or(0);
    let copy_bytes = field(&log, "volume copied from another node", "bytes").unwrap_or(0);
    let wait_ms = field(&log, "volume copied from another node", "wait_ms").unwrap_or(0);

    // Baseline: the old copy (kept) as a tar over plain TCP to the new host.
    let src = h
        .run(&[
            "docker",
            &old.to_string(),
            "volume",
            "inspect",
            "-f",
            "{{.Mountpoint}}",
            &volume,
        ])
        .trim()
        .to_string();
    let dst = format!("/tmp/orc-bench-volumes-{}", std::process::id());
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    let mut listener = Command::new("bash")
        .arg(harness())
        .args([
            "exec",
            &new.to_string(),
            "sh",
            "-c",
            &format!("socat -u TCP-LISTEN:9931,reuseaddr - | busybox tar -xf - -C {dst}"),
        ])
        .spawn()
        .expect("nc -l");
    std::thread::sleep(Duration::from_millis(500));
    let t1 = Instant::now();
    let o = host_sh(
        old,
        &format!(
            "busybox tar -cf - -C {src} . | socat -u - TCP:{}:9931",
            h.addr(new)
        ),
    );
    let _ = listener.wait();
    let tar_ms = t1.elapsed().as_millis() as u64;
    if !o.status.success() {
        eprintln!(
            "tar | socat failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    let _ = std::fs::remove_dir_all(&dst);

    h.ok(1, &["service", "rm", "db"]);
    h.ok(
        1,
        &["node", "update", "--availability", "active", &old_node],
    );
    for i in [old, new] {
        wait_for(Duration::from_secs(60), "db's container gone", || {
            let ps = h.run(&["docker", &i.to_string(), "ps", "-aq"]);
            ps.trim().is_empty().then_some(())
        });
        let _ = h.run(&["docker", &i.to_string(), "volume", "rm", "-f", &volume]);
    }
    Row {
        mb,
        moved,
        downtime,
        copy_ms,
        copy_bytes,
        wait_ms,
        tar_ms,
    }
}

fn main() {
    let sizes: Vec<u64> = std::env::var("SIZES")
        .unwrap_or_else(|_| "10,100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let h = Hosts::up(3);
    let ns = h.form_cluster(3, "worker", 1);
    let mut rows = vec![];
    for mb in sizes {
        let r = run(&h, &ns, mb);
        eprintln!(
            "{} MB: moved in {:.2} s, downtime {:.2} s, copy {} ms",
            r.mb,
            r.moved.as_secs_f64(),
            r.downtime.as_secs_f64(),
            r.copy_ms
        );
        rows.push(r);
    }
    let mbps = |bytes: u64, ms: u64| {
        if ms == 0 {
            f64::NAN
        } else {
            bytes as f64 / 1e6 / (ms as f64 / 1000.0)
        }
    };
    println!("following volume moved by a drain (random bytes; orc copy vs busybox tar | socat, same hosts, same run)");
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>10} {:>12} {:>10} {:>12} {:>8}",
        "size MB",
        "move s",
        "down s",
        "wait s",
        "copy s",
        "copy MB/s",
        "tar s",
        "tar MB/s",
        "ratio"
    );
    for r in &rows {
        let copy = mbps(r.copy_bytes, r.copy_ms);
        let tar = mbps(r.copy_bytes, r.tar_ms);
        println!(
            "{:>8} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>12.1} {:>10.2} {:>12.1} {:>8.2}",
            r.mb,
            r.moved.as_secs_f64(),
            r.downtime.as_secs_f64(),
            r.wait_ms as f64 / 1000.0,
            r.copy_ms as f64 / 1000.0,
            copy,
            r.tar_ms as f64 / 1000.0,
            tar,
            copy / tar
        );
    }
}
