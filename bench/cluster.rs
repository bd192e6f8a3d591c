//! Cluster-core benchmark: prints the leader-failover time and Raft committed writes
//! per second, measured on real `orc daemon` processes on 127.0.0.1.
//!
//! - Failover: 3 managers; SIGKILL the leader; time until another manager accepts a
//!   write (a replicated no-op sent to its local socket, which forwards to the new
//!   leader). Repeated `ORC_BENCH_RUNS` times (default 5). Anchor: Swarm mode needs
//!   11–16 s on the same hosts (../shared/HOSTS.md).
//! - Throughput: 3 managers; N concurrent clients send replicated no-ops to the
//!   leader for `ORC_BENCH_SECS` seconds (default 5) each, first with every command an
//!   entry of its own (`ORC_RAFT_MAX_BATCH=1`, as before group commit), then with group
//!   commit (`orc::manager::propose`), side by side; and the 1-client latency p50/p99.
//!
//! Run: `cargo bench --bench cluster`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use orc::proto::{self, control_client::ControlClient};

async fn barrier(ch: tonic::transport::Channel) -> bool {
    ControlClient::new(ch)
        .barrier(proto::Empty {})
        .await
        .is_ok()
}

fn failover(rt: &tokio::runtime::Runtime, runs: u64) -> Vec<Duration> {
    let mut times = vec![];
    for run in 0..runs {
        let mut nodes = cluster(3, 0, &[]);
        let leader = leader_index(&nodes, 0);
        let other = (leader + 1) % 3;
        let sock = nodes[other].sock();
        // Warm the follower's forwarding path.
        rt.block_on(async {
            let ch = orc::net::local_channel(&sock).await.expect("socket");
            assert!(barrier(ch).await, "warm-up write failed");
        });
        nodes[leader].kill();
        let t0 = Instant::now();
        let took = rt.block_on(async {
            loop {
                if let Ok(ch) = orc::net::local_channel(&sock).await {
                    if barrier(ch).await {
                        return t0.elapsed();
                    }
                }
                if t0.elapsed() > Duration::from_secs(30) {
                    panic!("no write accepted within 30 s of the leader's loss");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        println!(
            "  run {}: write accepted {} ms after the leader's SIGKILL",
            run + 1,
            took.as_millis()
        );
        times.push(took);
    }
    times.sort();
    times
}

/// One throughput run: its rate per client count, and the 1-client latencies sorted.
struct Throughput {
    rates: Vec<(usize, f64)>,
    serial_latencies: Vec<Duration>,
}

/// Committed no-op writes per second from `clients` concurrent clients, on 3 fresh
/// managers whose daemons get `env`.
fn throughput(
    rt: &tokio::runtime::Runtime,
    secs: u64,
    clients: &[usize],
    env: &[(&str, &str)],
) -> Throughput {
    let nodes = cluster_env(3, 0, &[], &[], env);
    let leader = leader_index(&nodes, 0);
    let sock = nodes[leader].sock();
    let mut rates = vec![];
    let mut serial_latencies = vec![];
    let applied = || -> u64 {
        nodes[leader].info()["raft_last_applied"]
            .as_u64()
            .unwrap_or(0)
    };
    for &c in clients {
        let first = applied();
        let (n, mut lat) = rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(secs);
            let mut tasks = vec![];
            for _ in 0..c {
                // Each client its own connection, as separate `orc` commands have.
                let ch = orc::net::local_channel(&sock).await.expect("socket");
                tasks.push(tokio::spawn(async move {
                    let mut lat = vec![];
                    while Instant::now() < deadline {
                        let t0 = Instant::now();
                        if barrier(ch.clone()).await {
                            lat.push(t0.elapsed());
                        }
                    }
                    lat
                }));
            }
            let mut all = vec![];
            for t in tasks {
                all.extend(t.await.expect("client task"));
            }
            (all.len(), all)
        });
        let rate = n as f64 / secs as f64;
        let entries = applied().saturating_sub(first).max(1);
        println!(
            "  {c:>3} concurrent clients: {rate:>8.0} committed writes/s ({n} in {secs} s, {:.1} writes a Raft entry)",
            n as f64 / entries as f64
        );
        rates.push((c, rate));
        if c == 1 {
            lat.sort();
            serial_latencies = lat;
        }
    }
    Throughput {
        rates,
        serial_latencies,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let runs = env_u64("ORC_BENCH_RUNS", 5);
    let secs = env_u64("ORC_BENCH_SECS", 5);

    println!("leader failover: 3 managers on 127.0.0.1, SIGKILL of the leader, time to the first write accepted by another manager");
    let t = failover(&rt, runs);
    let median = t[t.len() / 2];
    let max = t[t.len() - 1];
    println!(
        "failover: median {} ms, max {} ms over {} runs (target < 2000 ms; Swarm mode: 11000-16000 ms on the same hosts)",
        median.as_millis(),
        max.as_millis(),
        t.len()
    );
    println!(
        "failover ratio vs Swarm's best (11 s): {:.3}",
        median.as_secs_f64() / 11.0
    );

    let clients = [1, 16, 64];
    println!("raft throughput: 3 managers, replicated no-op writes to the leader");
    println!(
        " one command an entry ({}=1, as before group commit):",
        orc::manager::propose::BATCH_ENV
    );
    let before = throughput(
        &rt,
        secs,
        &clients,
        &[(orc::manager::propose::BATCH_ENV, "1")],
    );
    println!(" group commit (commands proposed together share one entry and one fsync):");
    let after = throughput(&rt, secs, &clients, &[]);
    println!("raft writes/s   clients   one each   group commit   ratio");
    for ((c, b), (_, a)) in before.rates.iter().zip(&after.rates) {
        println!(
            "              {c:>9} {b:>10.0} {a:>14.0} {:>7.2}x",
            a / b.max(1e-9)
        );
    }
    for (name, t) in [("one each", &before), ("group commit", &after)] {
        println!(
            "raft 1-client latency ({name}): p50 {:.2} ms, p99 {:.2} ms over {} writes",
            percentile(&t.serial_latencies, 0.5),
            percentile(&t.serial_latencies, 0.99),
            t.serial_latencies.len()
        );
    }
    let best = after.rates.iter().map(|x| x.1).fold(0.0, f64::max);
    println!("raft: {best:.0} writes/s with group commit (aim: >= 20000 with 64 clients)");
}
