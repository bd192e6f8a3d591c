//! Level 3: `orc daemon --metrics-addr` on the real Docker engine. The exposition is
//! scraped during a service's life and checked with Prometheus's own
//! `promtool check metrics`; counters move as tasks start and fail; the endpoint
//! refuses what is not a `GET /metrics`.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn get(addr: &str, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    http(addr, req.as_bytes()).expect("an answer")
}

fn scrape(addr: &str) -> String {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of one series (`name{labels}` exactly as exposed).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = output_within_child(child);
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn output_within_child(child: std::process::Child) -> std::process::Output {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("promtool did not finish within 60 s")
        .expect("promtool")
}

#[test]
fn metrics_follow_a_service_s_life_and_pass_promtool() {
    ensure_images();
    let id = std::process::id();
    let (web, bad, stuck) = (
        format!("mweb{id}"),
        format!("mbad{id}"),
        format!("mstuck{id}"),
    );
    let _c = RemoveContainers(vec![web.clone(), bad.clone(), stuck.clone()]);
    let maddr = format!("127.0.0.1:{}", free_port());
    let nodes = cluster_with(1, 0, &[], &["--metrics-addr", &maddr]);
    let n = &nodes[0];

    // Before any service: a leader, one ready manager, nothing started.
    let text = scrape(&maddr);
    promtool_check(&text);
    assert_eq!(value(&text, "orc_raft_is_leader"), Some(1.0), "{text}");
    assert!(
        value(&text, "orc_raft_term").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(value(&text, "orc_raft_applied_index").unwrap_or(0.0) >= 1.0);
    assert!(
        value(&text, "orc_raft_commit_index") >= value(&text, "orc_raft_applied_index"),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "orc_nodes{status=\"ready\",availability=\"active\",role=\"manager\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value(&text, "orc_services"), Some(0.0));
    assert_eq!(value(&text, "orc_agent_container_starts_total"), Some(0.0));
    let expiry = value(&text, "orc_node_certificate_expiry_seconds").expect("expiry");
    assert!(
        expiry > 80.0 * 86400.0 && expiry <= 90.0 * 86400.0,
        "{expiry}"
    );

    // A service whose two tasks start, published on a port.
    let port = free_port();
    let publish = format!("{port}:80");
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), "s3cr3t-content-xyz").unwrap();
    n.ok(&[
        "secret",
        "create",
        &format!("msecretname{id}"),
        secret_file.path().to_str().unwrap(),
    ]);
    let out = n.ok(&[
        "service",
        "create",
        "--name",
        &web,
        "--replicas",
        "2",
        "-p",
        &publish,
        "orc-test/web:1",
    ]);
    assert!(out.contains("converged"), "{out}");
    let page = wait_for(Duration::from_secs(20), "the page through the mesh", || {
        let (status, body) = http(
            &format!("127.0.0.1:{port}"),
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )?;
        (status == 200).then_some(body)
    });
    assert!(!page.is_empty());
    let text = wait_for(Duration::from_secs(20), "the mesh counters", || {
        let t = scrape(&maddr);
        let series = format!("orc_mesh_bytes_total{{service=\"{web}\",direction=\"out\"}}");
        (value(&t, &series).unwrap_or(0.0) > 0.0).then_some(t)
    });
    promtool_check(&text);
    assert_eq!(value(&text, "orc_services"), Some(1.0));
    assert_eq!(
        value(&text, "orc_tasks{state=\"running\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "orc_agent_container_starts_total"),
        Some(2.0),
        "{text}"
    );
    let conns = format!("orc_mesh_connections_total{{service=\"{web}\"}}");
    assert!(value(&text, &conns).unwrap_or(0.0) >= 1.0, "{text}");
    let bytes_in = format!("orc_mesh_bytes_total{{service=\"{web}\",direction=\"in\"}}");
    assert!(value(&text, &bytes_in).unwrap_or(0.0) > 0.0, "{text}");
    assert!(
        value(&text, "orc_raft_proposal_duration_seconds_count").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(value(&text, "orc_scheduler_pass_duration_seconds_count").unwrap_or(0.0) >= 1.0);
    assert!(value(&text, "orc_orchestrator_pass_duration_seconds_count").unwrap_or(0.0) >= 1.0);
    assert_eq!(value(&text, "orc_dispatcher_sessions"), Some(1.0), "{text}");
    assert_eq!(
        value(&text, "orc_agent_task_failures_total{state=\"failed\"}"),
        None,
        "{text}"
    );
    // neither a secret's name nor its content shows
    assert!(!text.contains("msecretname"), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");

    // A task whose command exits 1: the failure is counted.
    n.ok(&[
        "service",
        "create",
        "--name",
        &bad,
        "--restart-condition",
        "none",
        "--detach",
        "orc-test/busybox:1",
        "sh",
        "-c",
        "exit 1",
    ]);
    let text = wait_for(Duration::from_secs(30), "the failure counted", || {
        let t = scrape(&maddr);
        // the agent counts it at once; the manager's table has it once reported
        (value(&t, "orc_agent_task_failures_total{state=\"failed\"}") == Some(1.0)
            && value(&t, "orc_tasks{state=\"failed\"}") == Some(1.0))
        .then_some(t)
    });
    assert_eq!(value(&text, "orc_agent_container_starts_total"), Some(3.0));
    assert_eq!(
        value(&text, "orc_tasks{state=\"failed\"}"),
        Some(1.0),
        "{text}"
    );

    // A task no node can take: counted with its bucketed reason, not the constraint.
    n.ok(&[
        "service",
        "create",
        "--name",
        &stuck,
        "--constraint",
        "node.labels.zone==nowhere",
        "--detach",
        "orc-test/busybox:1",
        "sleep",
        "3600",
    ]);
    let text = wait_for(Duration::from_secs(30), "the unplaceable task", || {
        let t = scrape(&maddr);
        (value(&t, "orc_tasks_unplaceable{reason=\"failed_constraint\"}") == Some(1.0)).then_some(t)
    });
    assert!(!text.contains("nowhere"), "{text}");
    promtool_check(&text);
}

#[test]
fn the_endpoint_refuses_what_is_not_a_get_of_metrics() {
    let maddr = format!("127.0.0.1:{}", free_port());
    let mut n = Node::new();
    n.daemon_args = vec!["--metrics-addr".into(), maddr.clone()];
    n.start();
    // the metrics port opens just after the control socket
    wait_for(Duration::from_secs(20), "the metrics port", || {
        TcpStream::connect(&maddr).ok()
    });
    // control: the scrape succeeds, even outside a cluster
    let (status, body) = get(&maddr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE orc_dns_queries_total counter"),
        "{body}"
    );
    assert!(!body.contains("# EOF"), "{body}");
    // what Prometheus asks for: OpenMetrics
    let om = format!(
        "GET /metrics HTTP/1.1\r\nHost: {maddr}\r\nAccept: application/openmetrics-text;version=1.0.0\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = http(&maddr, om.as_bytes()).expect("an answer");
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE orc_dns_queries counter"), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert_eq!(get(&maddr, "/").0, 404);
    assert_eq!(get(&maddr, "/metrics/../debug").0, 404);
    assert_eq!(get(&maddr, "/debug/pprof").0, 404);
    let post = format!(
        "POST /metrics HTTP/1.1\r\nHost: {maddr}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    );
    assert_eq!(http(&maddr, post.as_bytes()).map(|r| r.0), Some(405));
    // a body announced beyond the limit
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: {maddr}\r\nContent-Length: 100000000\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(http(&maddr, big.as_bytes()).map(|r| r.0), Some(413));
    // a header of 1 MiB: refused (431) or the connection closed, never served
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: {maddr}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let r = http(&maddr, huge.as_bytes());
    assert!(r.as_ref().is_none_or(|(s, _)| *s == 431), "{r:?}");
    // and it still serves
    assert_eq!(get(&maddr, "/metrics").0, 200);
}

#[test]
fn a_non_loopback_metrics_address_needs_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let mut c = Command::new(bin());
        c.args(["daemon", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--socket")
            .arg(dir.path().join("orc.sock"))
            .args(extra);
        c
    };
    let o = output_within(
        &mut run(&["--metrics-addr", "0.0.0.0:9323"]),
        Duration::from_secs(30),
        "orc daemon --metrics-addr 0.0.0.0",
    )
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("error: --metrics-addr 0.0.0.0:9323")
            && err.contains("--metrics-allow-remote"),
        "{err}"
    );
    // with the operator's say-so it starts, and warns
    let port = free_port();
    let addr = format!("0.0.0.0:{port}");
    let mut child = run(&["--metrics-addr", &addr, "--metrics-allow-remote"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let warned = std::thread::spawn(move || {
        let mut s = String::new();
        let mut r = std::io::BufReader::new(stderr);
        let mut line = String::new();
        // read to the end: a closed pipe would make the daemon's next log line fail
        while std::io::BufRead::read_line(&mut r, &mut line).unwrap_or(0) > 0 {
            s.push_str(&line);
            line.clear();
        }
        s
    });
    let got = wait_for(Duration::from_secs(20), "the metrics endpoint", || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    drop(got);
    assert_eq!(get(&format!("127.0.0.1:{port}"), "/metrics").0, 200);
    let _ = child.kill();
    let _ = child.wait();
    let err = warned.join().unwrap();
    assert!(err.contains("warning: --metrics-addr"), "{err}");
}
