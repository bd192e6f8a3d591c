//! Level 4, secrets on namespace hosts (tests/hosts/harness.sh): a stand-in Postgres
//! (busybox httpd serving the password it read from `POSTGRES_PASSWORD_FILE`) on a
//! worker reads its secret from a tmpfs; the manager's node, which runs no task using
//! it, never gets it; neither content is in any file of any host's data dir; `secret
//! update` under a request loop rolls the service with no failed request.
//!
//! Needs root; takes /tmp/orc-hosts.lock as the other hosts tests do.

mod common;

use std::time::Duration;

use common::hosts::*;
use common::{files_containing, wait_for};

#[test]
fn a_stand_in_postgres_reads_its_secret_and_a_rotation_under_load_fails_no_request() {
    let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let h = Hosts::up(2);
    let nodes = h.form_cluster(2, "worker", 1);
    let manager_id = h.node_id(&nodes, 1);
    let work = tempfile::tempdir().unwrap();
    let pid = std::process::id();
    let (first, second) = (format!("pg-one-{pid:x}-a1"), format!("pg-two-{pid:x}-b2"));
    let pw = work.path().join("pw");
    std::fs::write(&pw, &first).unwrap();
    let pw = pw.display().to_string();
    h.ok(1, &["secret", "create", "pg_pw", &pw]);
    h.ok(
        1,
        &[
            "service",
            "create",
            "--name",
            "pg",
            "--replicas",
            "2",
            "--constraint",
            "node.role==worker",
            "-p",
            "8080:80",
            "--update-order",
            "start-first",
            "--update-monitor",
            "2s",
            "--secret",
            "source=pg_pw,target=pg_pw,mode=0400",
            "-e",
            "POSTGRES_PASSWORD_FILE=/run/secrets/pg_pw",
            "orc-test/web:1",
            "sh",
            "-c",
            "mkdir -p /tmp/www && cat \"$POSTGRES_PASSWORD_FILE\" > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www",
        ],
    );
    wait_for(Duration::from_secs(60), "2 healthy tasks", || {
        let t = running_tasks(&h, 1, "pg");
        (t.len() == 2 && t.iter().all(|t| t["health"] == "healthy")).then_some(())
    });
    let body = |h: &Hosts| {
        let o = host_sh(
            1,
            &format!("busybox wget -q -O - http://{}:8080/", h.addr(2)),
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(body(&h), first);
    let ctr = h.run(&[
        "docker",
        "2",
        "ps",
        "-q",
        "--filter",
        "label=orc.service.name=pg",
    ]);
    let ctr = ctr
        .lines()
        .next()
        .expect("a container on host 2")
        .to_string();
    let mounts = in_container(&h, 2, &ctr, "grep /run/secrets /proc/mounts");
    let mounts = String::from_utf8_lossy(&mounts.stdout).to_string();
    assert!(mounts.contains("/run/secrets/pg_pw tmpfs"), "{mounts}");
    // The manager runs no task that uses it: nothing of it on its node.
    let on_manager = std::path::Path::new("/run/orc/secrets").join(&manager_id);
    assert_eq!(
        std::fs::read_dir(&on_manager)
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );

    let stop = "/tmp/orc-secret-rotation-stop";
    let _ = std::fs::remove_file(stop);
    let script = format!(
        "ok=0; fails=0; while [ ! -e {stop} ]; do \
         if timeout 5 busybox wget -q -O /dev/null http://{}:8080/; then ok=$((ok+1)); \
         else fails=$((fails+1)); fi; done; echo $ok $fails",
        h.addr(2)
    );
    let client = std::thread::spawn(move || host_sh(1, &script));
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(work.path().join("pw"), &second).unwrap();
    h.ok(1, &["secret", "update", "pg_pw", &pw]);
    wait_for(
        Duration::from_secs(120),
        "every task on the new secret",
        || {
            let t = running_tasks(&h, 1, "pg");
            (t.len() == 2
                && t.iter()
                    .all(|t| t["up_to_date"] == true && t["health"] == "healthy")
                && body(&h) == second)
                .then_some(())
        },
    );
    std::fs::write(stop, b"").unwrap();
    let o = client.join().unwrap();
    let _ = std::fs::remove_file(stop);
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let (ok, fails) = out.split_once(' ').expect("ok fails");
    let (ok, fails): (u64, u64) = (ok.parse().unwrap(), fails.parse().unwrap());
    eprintln!("requests during the rotation: {ok} ok, {fails} failed");
    assert!(ok > 0, "no request went through");
    assert_eq!(fails, 0, "requests failed while the secret rotated");

    for i in 1..=2 {
        let dir = h.run(&["dir", &i.to_string()]);
        for p in [&first, &second] {
            // orc's data dir (the stand-in itself copies the password into its own
            // container's files, under docker/, as a real Postgres would keep a hash).
            let found = files_containing(&std::path::Path::new(&dir).join("orc"), p.as_bytes());
            assert!(found.is_empty(), "host {i}: plaintext in {found:?}");
            assert!(
                !h.log(i).contains(p.as_str()),
                "host {i}: plaintext in its log"
            );
        }
    }
    let inspect = h.ok(1, &["secret", "inspect", "pg_pw"]);
    assert!(!inspect.contains(&first) && !inspect.contains(&second));
}
