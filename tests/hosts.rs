//! Level 4: real hosts. Each host is a network namespace with its own address, its own
//! dockerd and its own `orc daemon` (tests/hosts/harness.sh, after ../shared/HOSTS.md).
//! A halt kills every process of the host, containers included, and takes its link
//! down, as a power loss would.
//!
//! These tests need root; the hosts use machine-wide names, so they run one at a time.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::hosts::*;
use common::wait_for;

#[test]
fn three_managers_and_a_worker_on_separate_hosts_survive_the_leaders_halt() {
    let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let h = Hosts::up(4);
    // Host 2 serves the dashboard, on its own address (the browser is outside the hosts).
    let dash = format!("{}:4243", h.addr(2));
    for i in 1..=4 {
        if i == 2 {
            h.start_orc_with(i, &["--dashboard-addr", &dash, "--dashboard-allow-remote"]);
        } else {
            h.start_orc(i);
        }
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

    // Four replicas, one on each host, watched in a real browser on host 2's dashboard.
    let host1 = ns
        .iter()
        .find(|n| n["address"] == format!("{}:4242", h.addr(1)))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    h.ok(
        1,
        &[
            "service",
            "create",
            "--name",
            "vis",
            "--replicas",
            "4",
            "orc-test/web:1",
        ],
    );
    let token = h.ok(2, &["dashboard", "token", "-q"]).trim().to_string();
    let b = common::browser::Browser::start(1280, 800);
    b.goto(&format!("http://{dash}/?token={token}"));
    let running_by_node = r#"
        const out = {};
        for (const c of document.querySelectorAll('.card[data-service="vis"][data-state="running"]'))
            out[c.dataset.nodeId] = (out[c.dataset.nodeId] || 0) + 1;
        return out;"#;
    let spread = b.wait(
        Duration::from_secs(60),
        "four running cards, one per host",
        &format!(
            "const s = (function() {{ {running_by_node} }})(); return Object.keys(s).length === 4 && s[{host1:?}] === 1 ? s : null;"
        ),
    );
    eprintln!("dashboard before the halt: {spread}");
    let load = b.eval("return window.orc.loadId;");

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
    // The page saw it, without a reload: host 1's column is down, and its replica runs
    // on another host.
    let after = b.wait(
        Duration::from_secs(60),
        "host 1 down and four running cards on the other hosts",
        &format!(
            "const down = [...document.querySelectorAll('.node')].some(n => n.dataset.nodeId === {host1:?} && n.dataset.status === 'down'); const s = (function() {{ {running_by_node} }})(); return down && !s[{host1:?}] && Object.values(s).reduce((a, b) => a + b, 0) === 4 ? s : null;"
        ),
    );
    eprintln!("dashboard after the halt: {after}");
    if let Some(path) = std::env::var_os("ORC_DASHBOARD_SCREENSHOT") {
        b.screenshot(std::path::Path::new(&path));
    }
    assert_eq!(
        b.eval("return window.orc.loadId;"),
        load,
        "the page was reloaded"
    );
    drop(b);
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
fn the_mesh_serves_every_host_by_port_and_containers_by_name_across_hosts() {
    let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let h = Hosts::up(3);
    let ns = h.form_cluster(3, "worker", 1);
    let (host1, host3) = (h.node_id(&ns, 1), h.node_id(&ns, 3));
    // A stack "shop": its web on hosts 2 and 3, published on 8080 everywhere; its
    // client on host 1. A UDP echo on host 3, published on 9999/udp.
    h.ok(
        1,
        &[
            "service",
            "create",
            "--name",
            "shop_web",
            "--label",
            "com.docker.stack.namespace=shop",
            "--replicas",
            "2",
            "--max-replicas-per-node",
            "1",
            "-p",
            "8080:80",
            "--constraint",
            &format!("node.id!={host1}"),
            "orc-test/web:1",
        ],
    );
    h.ok(
        1,
        &[
            "service",
            "create",
            "--name",
            "shop_client",
            "--label",
            "com.docker.stack.namespace=shop",
            "--constraint",
            &format!("node.id=={host1}"),
            "orc-test/busybox:1",
            "sleep",
            "100000",
        ],
    );
    h.ok(
        1,
        &[
            "service",
            "create",
            "--name",
            "echo",
            "-p",
            "9999:9999/udp",
            "--constraint",
            &format!("node.id=={host3}"),
            "orc-test/tools:1",
            "socat",
            "UDP4-RECVFROM:9999,fork",
            "SYSTEM:echo pong-$(hostname)",
        ],
    );

    // 1. The published port answers on every host, two of which run a task.
    let mut pages = std::collections::BTreeSet::new();
    for i in 1..=3 {
        let url = format!("http://{}:8080/", h.addr(i));
        let body = wait_for(
            Duration::from_secs(30),
            &format!("{url} through the mesh"),
            || {
                // The request comes from host 1's namespace, like a client on that network.
                let o = host_sh(1, &format!("timeout 5 busybox wget -q -O - {url}"));
                o.status
                    .success()
                    .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
            },
        );
        assert!(!body.is_empty(), "host {i}: empty page");
        eprintln!("host {i} ({url}) answered: {body}");
        pages.insert(body);
    }

    // 2. UDP: a datagram to any host's 9999 reaches the echo on host 3 and comes back.
    for i in 1..=3 {
        let reply = wait_for(Duration::from_secs(30), &format!("UDP on host {i}"), || {
            let o = host_sh(
                1,
                &format!("echo ping | timeout 5 socat -t 2 - UDP4:{}:9999", h.addr(i)),
            );
            let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
            out.starts_with("pong-").then_some(out)
        });
        eprintln!("UDP via host {i}: {reply}");
    }

    // 3. By name, across hosts: the client on host 1 reaches the web tasks on hosts 2
    // and 3 by the service's name, its stack short name and each task's own name.
    let client = wait_for(Duration::from_secs(30), "the client running", || {
        running_tasks(&h, 1, "shop_client")
            .first()
            .map(|t| t["container_id"].as_str().unwrap_or("").to_string())
            .filter(|c| !c.is_empty())
    });
    let web_tasks = wait_for(Duration::from_secs(30), "2 web tasks", || {
        let t = running_tasks(&h, 1, "shop_web");
        (t.len() == 2).then_some(t)
    });
    let hostnames: std::collections::BTreeSet<String> = web_tasks
        .iter()
        .map(|t| t["container_id"].as_str().unwrap()[..12].to_string())
        .collect();
    for name in ["shop_web", "web"] {
        let mut seen = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen != hostnames && Instant::now() < deadline {
            let o = in_container(
                &h,
                1,
                &client,
                &format!("timeout 5 wget -q -O - http://{name}/"),
            );
            let body = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if o.status.success() {
                seen.insert(body);
            } else {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        assert_eq!(
            seen, hostnames,
            "http://{name}/ from host 1 reached {seen:?}"
        );
    }
    let o = in_container(&h, 1, &client, "nslookup tasks.shop_web.");
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let task_vips: Vec<String> = web_tasks
        .iter()
        .map(|t| t["vip"].as_str().unwrap().to_string())
        .collect();
    for vip in &task_vips {
        assert!(text.contains(vip.as_str()), "tasks.web lacks {vip}: {text}");
        let o = in_container(
            &h,
            1,
            &client,
            &format!("timeout 5 wget -q -O - http://{vip}/"),
        );
        assert!(o.status.success(), "task VIP {vip} did not answer");
    }
    let inspect = h.ok(1, &["service", "inspect", "shop_web"]);
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let vip = v[0]["endpoint"]["vip"].as_str().unwrap().to_string();
    let o = in_container(&h, 1, &client, "nslookup shop_web.");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&vip),
        "shop_web does not resolve to {vip}"
    );
    // The short name of a task list, through the stack's search domain.
    let o = in_container(&h, 1, &client, "timeout 5 wget -q -O - http://tasks.web/");
    assert!(o.status.success(), "http://tasks.web/ did not answer");
    assert!(hostnames.contains(String::from_utf8_lossy(&o.stdout).trim()));

    // 4. A task's container is killed during a request loop through host 1's mesh: a
    // connect to the dead backend is retried on the other one, so no request fails
    // but one caught in flight; once the backends have changed, none.
    let victim = &web_tasks[0];
    let victim_host = if victim["node_id"].as_str() == Some(host3.as_str()) {
        3
    } else {
        2
    };
    let victim_ctr = victim["container_id"].as_str().unwrap().to_string();
    let url = format!("http://{}:8080/", h.addr(1));
    let _ = std::fs::remove_file("/tmp/orc-mesh-stop");
    let script = format!(
        "ok=0; fails=0; while [ ! -e /tmp/orc-mesh-stop ]; do \
         if timeout 5 busybox wget -q -O /dev/null {url}; then ok=$((ok+1)); \
         else fails=$((fails+1)); fi; done; echo $ok $fails"
    );
    let loop_during = std::thread::spawn(move || host_sh(1, &script));
    std::thread::sleep(Duration::from_millis(700));
    // Host 1 reaches the victim through its host's data path: `IP:4789→TASK:80`.
    let dead = format!(
        "{}:4789→{}:80",
        h.addr(victim_host),
        victim["id"].as_str().unwrap()
    );
    let before = h.ok(1, &["node", "routes", "--format", "json"]);
    assert!(
        before.contains(&dead),
        "{dead} not among host 1's backends: {before}"
    );
    h.run(&["docker", &victim_host.to_string(), "kill", &victim_ctr]);
    wait_for(
        Duration::from_secs(20),
        "host 1's mesh to drop the dead task",
        || {
            let o = h.orc(1, &["node", "routes", "--format", "json"]);
            let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).ok()?;
            let r = v
                .iter()
                .find(|r| r["address"] == "*" && r["port"] == 8080)?;
            let backends = r["backends"].as_array()?;
            (!backends.is_empty() && backends.iter().all(|b| b["address"] != dead.as_str()))
                .then_some(())
        },
    );
    // The loop goes on a moment after the change, then stops.
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::write("/tmp/orc-mesh-stop", "").unwrap();
    let out = String::from_utf8_lossy(&loop_during.join().unwrap().stdout).to_string();
    let _ = std::fs::remove_file("/tmp/orc-mesh-stop");
    let mut it = out.split_whitespace().map(|n| n.parse::<u32>().unwrap());
    let (served, during) = (it.next().unwrap(), it.next().unwrap());
    let script = format!(
        "fails=0; i=0; while [ $i -lt 50 ]; do i=$((i+1)); \
         timeout 5 busybox wget -q -O /dev/null {url} || fails=$((fails+1)); done; echo $fails"
    );
    let after: u32 = String::from_utf8_lossy(&host_sh(1, &script).stdout)
        .trim()
        .parse()
        .unwrap();
    eprintln!(
        "killed a task during a request loop: {served} ok, {during} failed until the \
         backends changed; 50 after: {after} failed"
    );
    assert!(served > 20, "the request loop hardly ran: {served}");
    assert!(during <= 1, "{during} requests failed around the kill");
    assert_eq!(after, 0, "requests failed after the backends changed");
}

/// The update status of a service as `service inspect` shows it.
fn update_state(h: &Hosts, i: usize, service: &str) -> Option<String> {
    let o = h.orc(i, &["service", "inspect", service]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    v[0]["update_status"]["state"].as_str().map(str::to_string)
}

#[test]
fn start_first_updates_under_load_fail_no_request_survive_the_leaders_loss_and_roll_back() {
    let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let h = Hosts::up(3);
    h.form_cluster(3, "manager", 2);
    h.ok(
        1,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "4",
            "-p",
            "8080:80",
            "--update-order",
            "start-first",
            "--update-parallelism",
            "1",
            "--update-monitor",
            "2s",
            "orc-test/web:1",
        ],
    );
    wait_for(Duration::from_secs(60), "4 healthy tasks", || {
        let t = running_tasks(&h, 2, "web");
        (t.len() == 4 && t.iter().all(|t| t["health"] == "healthy")).then_some(())
    });
    // Clients on hosts 2 and 3's published ports (host 1, the leader, is killed below:
    // its own mesh goes with its daemon, so no client goes through it). Each says when
    // a request failed.
    let script = |host: usize| {
        format!(
            "ok=0; fails=0; while [ ! -e /tmp/orc-update-stop ]; do \
             if timeout 5 busybox wget -q -O /dev/null http://{}:8080/; then ok=$((ok+1)); \
             else fails=$((fails+1)); echo failed $(date +%s.%N); fi; done; echo $ok $fails",
            h.addr(host)
        )
    };
    let _ = std::fs::remove_file("/tmp/orc-update-stop");
    let clients: Vec<_> = [2, 3]
        .into_iter()
        .map(|host| {
            let s = script(host);
            std::thread::spawn(move || host_sh(1, &s))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    h.ok(2, &["service", "update", "-d", "--env-add", "V=2", "web"]);
    // Mid-update, the leader's daemon dies; another manager carries the update on.
    wait_for(Duration::from_secs(60), "the first replaced task", || {
        let t = running_tasks(&h, 2, "web");
        t.iter().any(|t| t["up_to_date"] == true).then_some(())
    });
    let pid = std::fs::read_to_string(format!("{}/orc.pid", h.run(&["dir", "1"])))
        .unwrap()
        .trim()
        .to_string();
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap()
        .success());
    let state = wait_for(Duration::from_secs(180), "the update to end", || {
        let s = update_state(&h, 2, "web")?;
        (s != "updating").then_some(s)
    });
    assert_eq!(state, "completed");
    // A broken update (the command exits at once) under the same load: start-first
    // keeps the old tasks serving, and the failure rolls the service back by itself.
    let o = h.orc(
        2,
        &[
            "service",
            "update",
            "--args",
            "sleep x",
            "--update-failure-action",
            "rollback",
            "--update-monitor",
            "2s",
            "--rollback-monitor",
            "1s",
            "web",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "a rolled-back update exited 0");
    assert!(err.contains("update rollback_completed"), "{err}");
    assert_eq!(
        update_state(&h, 2, "web").as_deref(),
        Some("rollback_completed")
    );
    // Another with failure action pause: it stops and says why; a manual rollback
    // brings the service back.
    let o = h.orc(
        3,
        &[
            "service",
            "update",
            "--args",
            "sleep y",
            "--update-failure-action",
            "pause",
            "--update-monitor",
            "2s",
            "web",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "a paused update exited 0");
    assert!(
        err.contains("update paused") && err.contains("failed"),
        "{err}"
    );
    h.ok(2, &["service", "rollback", "web"]);
    assert_eq!(
        update_state(&h, 2, "web").as_deref(),
        Some("rollback_completed")
    );
    wait_for(Duration::from_secs(60), "4 tasks of the good spec", || {
        let t = running_tasks(&h, 2, "web");
        (t.len() == 4 && t.iter().all(|t| t["up_to_date"] == true)).then_some(())
    });
    std::fs::write("/tmp/orc-update-stop", "").unwrap();
    // A request on its way through host 1's data path (to one of its tasks) when its
    // daemon is killed is lost with the connection (the daemon holds it): each client,
    // which sends one request at a time, may lose that one, ended by the kill or by its
    // 5 s time-out. Any other failure, or a second one of a client then, fails the test.
    let (mut ok, mut failed, mut at_kill) = (0, 0, 0);
    let mut other = vec![];
    for c in clients {
        let out = String::from_utf8_lossy(&c.join().unwrap().stdout).to_string();
        let mut lines = out.lines().collect::<Vec<_>>();
        let mut it = lines
            .pop()
            .expect("the client's counts")
            .split_whitespace()
            .map(|n| n.parse::<u32>().unwrap());
        ok += it.next().unwrap();
        failed += it.next().unwrap();
        let mut this_at_kill = 0;
        for l in lines {
            let t: f64 = l.trim_start_matches("failed ").parse().unwrap();
            if (killed_at..killed_at + 5.5).contains(&t) && this_at_kill == 0 {
                this_at_kill += 1;
            } else {
                other.push(t - killed_at);
            }
        }
        at_kill += this_at_kill;
    }
    let _ = std::fs::remove_file("/tmp/orc-update-stop");
    eprintln!(
        "start-first update of 4 replicas (leader killed midway), a rolled-back and a paused one: {ok} requests ok, {failed} failed ({at_kill} on their way as the leader was killed; others at {other:?} s from the kill)"
    );
    let t = running_tasks(&h, 2, "web");
    assert_eq!(t.len(), 4, "{t:?}");
    assert!(t.iter().all(|t| t["up_to_date"] == true), "{t:?}");
    assert!(ok > 100, "the clients hardly ran: {ok}");
    assert_eq!(
        failed,
        at_kill + other.len() as u32,
        "every failure is told"
    );
    assert!(
        other.is_empty(),
        "requests failed during the update, at {other:?} s from the leader's kill"
    );

    // The max failure ratio, across hosts: each new container takes a number from a
    // directory all hosts see (one at a time: parallelism 1) at its first health check,
    // and the odd ones are unhealthy, so 2 of 4 replacements fail.
    let dirs: Vec<String> = (1..=2)
        .map(|i| format!("/tmp/orc-hosts-ratio-{}-{i}", std::process::id()))
        .collect();
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).unwrap();
    }
    h.ok(
        2,
        &common::ratio_create_args("ratio")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let update = |dir: &str, ratio: &str| {
        let args = common::ratio_update_args(dir, ratio, "ratio");
        h.orc(2, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // Ratio 0.5: 2 failures of 4 are within it, the update completes.
    let o = update(&dirs[0], "0.5");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(update_state(&h, 2, "ratio").as_deref(), Some("completed"));
    // Ratio 0.2: the first failure (1 of 4) is too many: paused.
    let o = update(&dirs[1], "0.2");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        !o.status.success() && err.contains("update paused"),
        "{err}"
    );
    assert!(err.contains("max failure ratio 0.2"), "{err}");
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The first time a task of `service` (in `tasks`) was seen in `state`.
fn first_at(tasks: &[serde_json::Value], service: &str, state: &str) -> Option<u64> {
    tasks
        .iter()
        .filter(|t| t["service"] == service && t["state"] == state)
        .filter_map(|t| t["timestamp_ms"].as_u64())
        .min()
}

#[test]
fn the_compose_examples_deploy_as_they_are_across_hosts_in_dependency_order() {
    let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let h = Hosts::up(3);
    h.form_cluster(3, "worker", 1);
    let example = |d: &str| {
        format!(
            "{}/compose-examples/{d}/stack.yml",
            env!("CARGO_MANIFEST_DIR")
        )
    };
    // The files as they are; only the images are swapped for the local stand-ins.
    let env = [
        ("VOTE_IMAGE", "orc-test/web:1"),
        ("RESULT_IMAGE", "orc-test/web:1"),
        ("WORKER_IMAGE", "orc-test/worker:1"),
        ("REDIS_IMAGE", "orc-test/redis:1"),
        ("DB_IMAGE", "orc-test/postgres:1"),
        ("AGENT_IMAGE", "orc-test/node-exporter:1"),
    ];
    let deploy = |file: &str, name: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_orc"))
            .arg("-H")
            .arg(h.sock(1))
            .args(["stack", "deploy", "-d", "-c", file, name])
            .envs(env)
            .output()
            .expect("orc");
        assert!(
            o.status.success(),
            "stack deploy {name}: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            h.log(1)
        );
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!err.contains("warning"), "warnings for {file}: {err}");
    };
    deploy(&example("voting-app"), "vote");
    deploy(&example("global-agent"), "mon");

    let want = [
        ("vote_vote", 2),
        ("vote_result", 1),
        ("vote_worker", 1),
        ("vote_redis", 1),
        ("vote_db", 1),
        ("mon_node-exporter", 3),
    ];
    let t0 = Instant::now();
    while !want
        .iter()
        .all(|(s, n)| running_tasks(&h, 1, s).len() == *n)
    {
        if t0.elapsed() > Duration::from_secs(120) {
            let ps = |st: &str| {
                String::from_utf8_lossy(&h.orc(1, &["stack", "ps", st]).stdout).to_string()
            };
            panic!(
                "not every service running after 120 s:\n{}\n{}\n{}",
                ps("vote"),
                ps("mon"),
                h.ok(1, &["service", "inspect", "vote_vote"])
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("both stacks running after {:?}", t0.elapsed());

    // depends_on: each dependent's first task was made once its dependencies ran
    // healthy (Swarm starts them all at once).
    let o = h.orc(1, &["stack", "ps", "vote", "--format", "json"]);
    let tasks: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let created = |s: &str| {
        tasks
            .iter()
            .filter(|t| t["service"] == s)
            .filter_map(|t| t["created_ms"].as_u64())
            .min()
            .unwrap()
    };
    let redis = first_at(&tasks, "vote_redis", "running").unwrap();
    let db = first_at(&tasks, "vote_db", "running").unwrap();
    assert!(
        created("vote_vote") >= redis,
        "vote before redis was healthy"
    );
    assert!(created("vote_result") >= db, "result before db was healthy");
    assert!(
        created("vote_worker") >= redis.max(db),
        "worker before redis and db"
    );

    // Inside the stack, services find each other by their short names across hosts:
    // the worker's log says it reached redis and db.
    wait_for(
        Duration::from_secs(30),
        "the worker reaching redis and db",
        || {
            let o = h.orc(1, &["service", "logs", "--tail", "5", "vote_worker"]);
            String::from_utf8_lossy(&o.stdout)
                .contains("redis:6379=ok db:5432=ok")
                .then_some(())
        },
    );
    // Networks, as in Docker's example: vote is on frontend only, so it neither
    // resolves db nor reaches it by its VIP, while it does reach redis (frontend) by
    // name, and the worker (on both) reaches db.
    let on_host = |service: &str| -> (usize, String) {
        let task = running_tasks(&h, 1, service).remove(0);
        let cid = task["container_id"].as_str().unwrap().to_string();
        let i = (1..=3)
            .find(|i| in_container(&h, *i, &cid, "true").status.success())
            .expect("the container on some host");
        (i, cid)
    };
    let db_vip = {
        let v: serde_json::Value =
            serde_json::from_str(&h.ok(1, &["service", "inspect", "vote_db", "--format", "json"]))
                .unwrap();
        let v = if v.is_array() { v[0].clone() } else { v };
        v["vip"].as_str().unwrap().to_string()
    };
    // `node routes` names the networks each listener serves: db's VIP answers
    // containers on the backend network only; a published port answers anyone.
    let routes: serde_json::Value =
        serde_json::from_str(&h.ok(1, &["node", "routes", "--format", "json"])).unwrap();
    let routes = routes.as_array().unwrap();
    let db_route = routes
        .iter()
        .find(|r| r["address"] == db_vip.as_str())
        .unwrap_or_else(|| panic!("no route on db's VIP {db_vip}: {routes:?}"));
    assert_eq!(
        db_route["networks"],
        serde_json::json!(["vote_backend"]),
        "{db_route}"
    );
    let published = routes
        .iter()
        .find(|r| r["address"] == "*")
        .unwrap_or_else(|| panic!("no published route: {routes:?}"));
    assert_eq!(published["networks"], serde_json::json!([]), "{published}");
    let (vi, vote) = on_host("vote_vote");
    let (wi, worker) = on_host("vote_worker");
    let says = |i: usize, c: &str, script: &str, needle: &str| {
        String::from_utf8_lossy(&in_container(&h, i, c, script).stdout).contains(needle)
    };
    let pg = "orc-test postgres";
    assert!(
        says(vi, &vote, "echo QUIT | timeout 5 nc redis 6379", "+OK"),
        "vote reaches redis"
    );
    assert!(
        says(wi, &worker, "timeout 5 nc db 5432 </dev/null", pg),
        "worker reaches db"
    );
    assert!(
        says(
            wi,
            &worker,
            &format!("timeout 5 nc {db_vip} 5432 </dev/null"),
            pg
        ),
        "worker reaches db's VIP"
    );
    assert!(
        !in_container(&h, vi, &vote, "timeout 5 nslookup db")
            .status
            .success(),
        "vote resolves db"
    );
    assert!(
        !says(vi, &vote, "timeout 5 nc db 5432 </dev/null", pg),
        "vote reaches db by name"
    );
    assert!(
        !says(
            vi,
            &vote,
            &format!("timeout 5 nc {db_vip} 5432 </dev/null"),
            pg
        ),
        "vote reaches db's VIP {db_vip}"
    );
    // vote and result answer on every host through the mesh.
    for i in 1..=3 {
        for port in [5000, 5001] {
            let url = format!("http://{}:{port}/", h.addr(i));
            wait_for(Duration::from_secs(30), &url, || {
                let o = host_sh(1, &format!("timeout 5 busybox wget -q -O - {url}"));
                o.status.success().then_some(())
            });
        }
    }
    // The global agent: one per host, each answering on its own host's 9100.
    for i in 1..=3 {
        let url = format!("http://{}:9100/metrics", h.addr(i));
        let body = wait_for(Duration::from_secs(30), &url, || {
            let o = host_sh(1, &format!("timeout 5 busybox wget -q -O - {url}"));
            o.status
                .success()
                .then(|| String::from_utf8_lossy(&o.stdout).to_string())
        });
        assert!(body.contains("node_up 1"), "{body}");
    }
    let ls = h.ok(1, &["stack", "ls", "--format", "json"]);
    let ls: serde_json::Value = serde_json::from_str(&ls).unwrap();
    assert_eq!(
        ls,
        serde_json::json!([{"name": "mon", "services": 1}, {"name": "vote", "services": 5}])
    );
    h.ok(1, &["stack", "rm", "vote", "mon"]);
    wait_for(Duration::from_secs(30), "no service left", || {
        let o = h.orc(1, &["service", "ls", "--format", "json"]);
        let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap_or_default();
        (o.status.success() && v.is_empty()).then_some(())
    });
}

#[test]
fn the_provisioning_scripts_of_the_vagrantfile_form_three_managers_and_two_workers() {
    let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let h = Hosts::up(5);
    // tests/hosts/provision/cluster.sh, as `vagrant up` runs it on each machine
    h.run(&["cluster", "3", "2"]);
    let ns = wait_for(Duration::from_secs(30), "5 ready nodes", || {
        let ns = h.nodes(1)?;
        (ns.len() == 5 && ns.iter().all(|n| n["status"] == "ready")).then_some(ns)
    });
    let managers = ns.iter().filter(|n| n["role"] == "manager").count();
    let workers = ns.iter().filter(|n| n["role"] == "worker").count();
    assert_eq!((managers, workers), (3, 2), "{ns:?}");
    assert_eq!(
        ns.iter()
            .filter(|n| n["manager_status"] == "leader")
            .count(),
        1
    );
    // Idempotent, like a second `vagrant provision`: nothing changes.
    h.run(&["cluster", "3", "2"]);
    assert_eq!(h.nodes(1).unwrap().len(), 5);
}

/// `orc ca rotate` on three hosts while a client loops on the published port: no
/// request fails, no task restarts, no daemon restarts, and the cluster ends on the new
/// root alone. (That a certificate of the old root is then refused is checked with
/// real certificates in tests/security.rs.)
#[test]
fn the_root_ca_rotates_under_a_request_loop_without_a_failed_request_or_a_restarted_task() {
    let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let h = Hosts::up(3);
    h.form_cluster(3, "worker", 1);
    h.ok(
        1,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "-p",
            "8080:80",
            "orc-test/web:1",
        ],
    );
    let before = wait_for(Duration::from_secs(60), "2 running tasks", || {
        let t = running_tasks(&h, 1, "web");
        (t.len() == 2).then_some(t)
    });
    let ids = |t: &[serde_json::Value]| {
        let mut v: Vec<String> = t
            .iter()
            .map(|t| format!("{} {}", t["id"], t["container_id"]))
            .collect();
        v.sort();
        v
    };
    let pids = || {
        (1..=3)
            .map(|i| {
                std::fs::read_to_string(format!("{}/orc.pid", h.run(&["dir", &i.to_string()])))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
    };
    let pids_before = pids();
    let old: serde_json::Value =
        serde_json::from_str(&h.ok(1, &["ca", "--format", "json"])).unwrap();

    let _ = std::fs::remove_file("/tmp/orc-rotate-stop");
    let clients: Vec<_> = [2, 3]
        .into_iter()
        .map(|host| {
            let s = format!(
                "ok=0; fails=0; while [ ! -e /tmp/orc-rotate-stop ]; do \
                 if timeout 5 busybox wget -q -O /dev/null http://{}:8080/; then ok=$((ok+1)); \
                 else fails=$((fails+1)); fi; done; echo $ok $fails",
                h.addr(host)
            );
            std::thread::spawn(move || host_sh(1, &s))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    let out = h.ok(1, &["ca", "rotate"]);
    eprintln!("{out}rotation took {:?}", t0.elapsed());
    // The loop goes on a moment on the new root alone.
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write("/tmp/orc-rotate-stop", "").unwrap();
    let (mut ok, mut failed) = (0u32, 0u32);
    for c in clients {
        let out = String::from_utf8_lossy(&c.join().unwrap().stdout).to_string();
        let mut it = out.split_whitespace().map(|n| n.parse::<u32>().unwrap());
        ok += it.next().unwrap();
        failed += it.next().unwrap();
    }
    let _ = std::fs::remove_file("/tmp/orc-rotate-stop");
    eprintln!("requests during the rotation: {ok} ok, {failed} failed");
    assert!(out.contains("root CA rotated"), "{out}");
    assert!(ok > 20, "the loop ran: {ok}");
    assert_eq!(failed, 0, "requests failed during the rotation");

    let new: serde_json::Value =
        serde_json::from_str(&h.ok(1, &["ca", "--format", "json"])).unwrap();
    assert_eq!(new["rotating"], false);
    assert_ne!(new["root_digest"], old["root_digest"]);
    let after = running_tasks(&h, 1, "web");
    assert_eq!(ids(&before), ids(&after), "no task restarted");
    assert_eq!(pids_before, pids(), "no daemon restarted");
    // Every node still reports in, on the new root.
    std::thread::sleep(Duration::from_secs(2));
    let ns = h.nodes(1).unwrap();
    assert!(
        ns.len() == 3 && ns.iter().all(|n| n["status"] == "ready"),
        "{ns:?}"
    );
}

#[test]
fn nothing_but_published_ports_answers_a_host_outside_the_cluster() {
    let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let h = Hosts::up(3);
    // Host 3 is on the same link, not in the cluster: the outsider.
    h.form_cluster(2, "worker", 1);
    h.ok(1, &["network", "create", "back"]);
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
            "orc-test/web:1",
        ],
    );
    h.ok(
        1,
        &[
            "service",
            "create",
            "--name",
            "db",
            "--network",
            "back",
            "--replicas",
            "2",
            "--max-replicas-per-node",
            "1",
            "orc-test/redis:1",
        ],
    );
    wait_for(Duration::from_secs(60), "web and db running", || {
        (running_tasks(&h, 1, "web").len() == 2 && running_tasks(&h, 1, "db").len() == 2)
            .then_some(())
    });
    let (a1, a2) = (h.addr(1), h.addr(2));
    // Positive control: the published port answers the outsider on both nodes.
    for a in [&a1, &a2] {
        wait_for(
            Duration::from_secs(30),
            &format!("{a}:8080 from outside"),
            || {
                let o = host_sh(
                    3,
                    &format!("timeout 5 busybox wget -q -O - http://{a}:8080/"),
                );
                o.status.success().then_some(())
            },
        );
    }
    let scan = format!("{}/tests/hosts/scan.py", env!("CARGO_MANIFEST_DIR"));
    let open = |args: &str| -> std::collections::BTreeSet<String> {
        let o = host_sh(3, &format!("python3 {scan} {args}"));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    // Every TCP port of both nodes: the cluster port, the data path, the published port.
    let found = open(&format!("0.5 1 65535 {a1} {a2}"));
    let want: std::collections::BTreeSet<String> = [&a1, &a2]
        .iter()
        .flat_map(|a| [4242, 4789, 8080].map(|p| format!("{a}:{p}")))
        .collect();
    assert_eq!(found, want, "ports open to a host outside the cluster");

    // The containers' addresses and the VIP range, routed through host 1.
    let db = running_tasks(&h, 1, "db");
    let cid = db
        .iter()
        .map(|t| t["container_id"].as_str().unwrap().to_string())
        .find(|c| in_container(&h, 1, c, "true").status.success())
        .expect("a db task on host 1");
    let ips = h.run(&[
        "docker",
        "1",
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        &cid,
    ]);
    let ip = ips
        .split_whitespace()
        .next()
        .expect("the container's address")
        .to_string();
    let vip = {
        let v: serde_json::Value =
            serde_json::from_str(&h.ok(1, &["service", "inspect", "db", "--format", "json"]))
                .unwrap();
        let v = if v.is_array() { v[0].clone() } else { v };
        v["vip"].as_str().unwrap().to_string()
    };
    // Positive control: from host 1 itself the container answers on 6379.
    let o = host_sh(1, &format!("echo QUIT | timeout 5 busybox nc {ip} 6379"));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("+OK"),
        "host 1 reaches its own container {ip}:6379"
    );
    let o = host_sh(
        3,
        &format!("ip route replace {ip}/32 via {a1} && ip route replace 10.233.0.0/16 via {a1}"),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        open(&format!("0.5 1 65535 {ip}")),
        Default::default(),
        "container {ip}"
    );
    assert_eq!(
        open(&format!("1 6379 6379 {vip} 10.233.0.1")),
        Default::default(),
        "db's VIP {vip} and the cluster DNS"
    );
    assert_eq!(
        open("1 53 53 10.233.0.1"),
        Default::default(),
        "the cluster DNS"
    );
}

#[test]
fn an_encrypted_network_carries_nothing_in_the_clear_between_hosts_a_plain_one_does() {
    let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let h = Hosts::up(2);
    let ns = h.form_cluster(2, "worker", 1);
    let (host1, host2) = (h.node_id(&ns, 1), h.node_id(&ns, 2));
    h.ok(1, &["network", "create", "plain"]);
    h.ok(1, &["network", "create", "--opt", "encrypted", "secret"]);
    // A web on each network on host 2; a client on both networks on host 1.
    for (name, net) in [("web_plain", "plain"), ("web_secret", "secret")] {
        h.ok(
            1,
            &[
                "service",
                "create",
                "--name",
                name,
                "--network",
                net,
                "--constraint",
                &format!("node.id=={host2}"),
                "orc-test/web:1",
            ],
        );
    }
    h.ok(
        1,
        &[
            "service",
            "create",
            "--name",
            "client",
            "--network",
            "plain",
            "--network",
            "secret",
            "--constraint",
            &format!("node.id=={host1}"),
            "orc-test/busybox:1",
            "sleep",
            "100000",
        ],
    );
    let client = wait_for(Duration::from_secs(60), "everything running", || {
        let c = running_tasks(&h, 1, "client");
        (c.len() == 1
            && running_tasks(&h, 1, "web_plain").len() == 1
            && running_tasks(&h, 1, "web_secret").len() == 1)
            .then(|| c[0]["container_id"].as_str().unwrap().to_string())
    });
    // Positive controls first: both answer the client across the hosts.
    for name in ["web_plain", "web_secret"] {
        wait_for(
            Duration::from_secs(30),
            &format!("{name} from the client"),
            || {
                in_container(
                    &h,
                    1,
                    &client,
                    &format!("timeout 5 wget -q -O - http://{name}/"),
                )
                .status
                .success()
                .then_some(())
            },
        );
    }
    // Host 2's link is its veth on the harness's bridge (orc-v2): capture it while the
    // client sends a marker in its request line to each web.
    let capture = format!("{}/tests/hosts/capture.py", env!("CARGO_MANIFEST_DIR"));
    let (m_plain, m_secret) = ("orc-marker-plain-7f3a", "orc-marker-secret-9c1e");
    let mut cap = Command::new("python3")
        .args([&capture, "orc-v2", "8", m_plain, m_secret])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("capture");
    let mut out = std::io::BufReader::new(cap.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    for _ in 0..3 {
        for (name, marker) in [("web_plain", m_plain), ("web_secret", m_secret)] {
            // A 404 is fine: the request line crossed the link either way.
            let _ = in_container(
                &h,
                1,
                &client,
                &format!("timeout 5 wget -q -O - http://{name}/{marker}"),
            );
        }
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    cap.wait().unwrap();
    eprintln!("capture: {rest}");
    let seen: Vec<&str> = rest.lines().collect();
    assert!(
        seen.contains(&m_plain),
        "the plain network's marker was not seen: {rest}"
    );
    assert!(
        !seen.contains(&m_secret),
        "the encrypted network's marker crossed in the clear"
    );
}

#[test]
fn a_network_added_to_and_removed_from_a_running_service_fails_no_request() {
    let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let h = Hosts::up(2);
    h.form_cluster(2, "worker", 1);
    h.ok(1, &["network", "create", "extra"]);
    h.ok(
        1,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "-p",
            "8080:80",
            "--update-order",
            "start-first",
            "--update-monitor",
            "2s",
            "orc-test/web:1",
        ],
    );
    wait_for(Duration::from_secs(60), "2 healthy tasks", || {
        let t = running_tasks(&h, 1, "web");
        (t.len() == 2 && t.iter().all(|t| t["health"] == "healthy")).then_some(())
    });
    let stop = "/tmp/orc-network-update-stop";
    let _ = std::fs::remove_file(stop);
    let script = format!(
        "ok=0; fails=0; while [ ! -e {stop} ]; do \
         if timeout 5 busybox wget -q -O /dev/null http://{}:8080/; then ok=$((ok+1)); \
         else fails=$((fails+1)); fi; done; echo $ok $fails",
        h.addr(2)
    );
    let client = std::thread::spawn(move || host_sh(1, &script));
    std::thread::sleep(Duration::from_secs(1));
    let networks = |h: &Hosts| -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_str(&h.ok(1, &["service", "inspect", "web", "--format", "json"]))
                .unwrap();
        let v = if v.is_array() { v[0].clone() } else { v };
        v["networks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_string())
            .collect()
    };
    h.ok(1, &["service", "update", "--network-add", "extra", "web"]);
    assert_eq!(networks(&h), ["default", "extra"]);
    h.ok(1, &["service", "update", "--network-rm", "extra", "web"]);
    assert_eq!(networks(&h), ["default"]);
    std::fs::write(stop, b"").unwrap();
    let o = client.join().unwrap();
    let _ = std::fs::remove_file(stop);
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let (ok, fails) = out.split_once(' ').expect("ok fails");
    let (ok, fails): (u64, u64) = (ok.parse().unwrap(), fails.parse().unwrap());
    eprintln!("requests during the two network updates: {ok} ok, {fails} failed");
    assert!(ok > 0, "no request went through");
    assert_eq!(
        fails, 0,
        "requests failed while a network was added and removed"
    );
    // Both updates rolled the tasks: none is from the first version.
    let t = running_tasks(&h, 1, "web");
    assert!(t.iter().all(|t| t["up_to_date"] == true), "{t:?}");
}
