//! Dashboard benchmark (issue 16), measured in a real headless Chromium on one local
//! node with the real Docker engine:
//!
//! - first paint: the page's first contentful paint, and its first drawing of the
//!   cluster's data (both from the start of navigation, as the browser reports them),
//!   over `ORC_BENCH_LOADS` loads (default 5);
//! - update latency over `ORC_BENCH_ROUNDS` scales (default 10), each adding a replica:
//!   from the manager's event of the new task running to the browser drawing it
//!   (the dashboard's own delay), and from the `orc service scale` command to the
//!   drawing (what an operator sees, container start included).
//!
//! Run: `cargo bench --bench dashboard` (needs `chromium` and `chromium-driver`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::browser::Browser;
use common::*;

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn summary(name: &str, v: &[f64]) {
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(0.0, f64::max);
    println!(
        "{name:<44} median {:>8.1} ms   min {min:>8.1}   max {max:>8.1}   (n={})",
        median(v.to_vec()),
        v.len()
    );
}

fn main() {
    ensure_images();
    let loads = env_u64("ORC_BENCH_LOADS", 5) as usize;
    let rounds = env_u64("ORC_BENCH_ROUNDS", 10) as usize;
    let service = format!("dashbench{}", std::process::id());
    let _c = RemoveContainers(vec![service.clone()]);
    let dash = format!("127.0.0.1:{}", free_port());
    let nodes = cluster_with(1, 0, &[], &["--dashboard-addr", &dash]);
    let n = &nodes[0];
    n.ok(&[
        "service",
        "create",
        "--name",
        &service,
        "--replicas",
        "1",
        "orc-test/web:1",
    ]);
    let token = n.ok(&["dashboard", "token", "-q"]).trim().to_string();
    let b = Browser::start(1280, 800);
    b.goto(&format!("http://{dash}/?token={token}"));
    b.wait(
        Duration::from_secs(30),
        "the first view",
        "return window.orc && window.orc.views > 0;",
    );

    let mut fcp = vec![];
    let mut data = vec![];
    for _ in 0..loads {
        b.goto(&format!("http://{dash}/"));
        let v = b.wait(
            Duration::from_secs(30),
            "a drawn view",
            "const p = performance.getEntriesByName('first-contentful-paint')[0]; return window.orc && window.orc.firstRender && p ? [p.startTime, window.orc.firstRender.perf] : null;",
        );
        fcp.push(v[0].as_f64().unwrap());
        data.push(v[1].as_f64().unwrap());
    }

    let mut change_to_paint = vec![];
    let mut command_to_paint = vec![];
    for round in 0..rounds {
        let replicas = 2 + round;
        let t0 = now_ms();
        n.ok(&["service", "scale", &format!("{service}={replicas}"), "-d"]);
        let script = format!(
            "const r = window.orc.renders.find(m => m.running >= {replicas} && m.at >= {t0}); return r ? [r.at, r.last_event_nano / 1e6] : null;"
        );
        let v = b.wait(Duration::from_secs(60), "the new replica drawn", &script);
        let (at, event) = (v[0].as_f64().unwrap(), v[1].as_f64().unwrap());
        change_to_paint.push(at - event);
        command_to_paint.push(at - t0);
    }
    println!("dashboard benchmark: one node, headless Chromium, {loads} loads, {rounds} scales");
    summary("first contentful paint", &fcp);
    summary("first drawing of the cluster's data", &data);
    summary(
        "update: manager's event -> drawn in browser",
        &change_to_paint,
    );
    summary(
        "update: `service scale` -> drawn in browser",
        &command_to_paint,
    );
}
