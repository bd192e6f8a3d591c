//! Security benchmark: what a stranger on the cluster port can cost a leader, measured
//! on real `orc daemon` processes on 127.0.0.1.
//!
//! - Memory: 10 anonymous clients (no certificate; only the CA digest every join token
//!   shows) each send one 200 MB Raft message to the leader at once. Prints the leader's
//!   resident set when idle and its peak meanwhile (sampled every 10 ms). Aim: under
//!   100 MB above idle. Before the gate, three such messages took a leader from 22 MB to
//!   1 GB: the messages were decoded before the caller was checked.
//! - Joins: one address sends joins with wrong secrets as fast as it can for
//!   `ORC_BENCH_SECS` seconds (default 5). Prints the joins judged per second (their
//!   secret compared) and the ones refused by the per-address limit.
//! - CA rotation: 3 managers and 2 workers; the time `orc ca rotate` takes until every
//!   node holds a certificate of the new root and the old root is dropped, over
//!   `ORC_BENCH_RUNS` fresh clusters (default 3). Nodes move with their next heartbeat
//!   (every 500 ms).
//!
//! Run: `cargo bench --bench security`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use orc::proto::{self, ca_client::CaClient, raft_client::RaftClient};

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let senders = env_u64("ORC_BENCH_SENDERS", 10) as usize;
    let mb = env_u64("ORC_BENCH_MESSAGE_MB", 200) as usize;
    let secs = env_u64("ORC_BENCH_SECS", 5);

    let nodes = cluster(1, 0, &[]);
    let addr = nodes[0].addr();
    let token: orc::ca::Token = nodes[0]
        .ok(&["join-token", "worker", "-q"])
        .trim()
        .parse()
        .expect("token");
    let digest = token.ca_digest.clone();
    let pid = nodes[0].pid().expect("pid");
    std::thread::sleep(Duration::from_secs(1));
    let idle = rss_bytes(pid);

    // Memory under anonymous senders.
    let sampler = PeakRss::start(pid, idle, Duration::from_millis(10));
    let t0 = Instant::now();
    let outcomes: Vec<String> = rt.block_on(async {
        let tasks: Vec<_> = (0..senders)
            .map(|_| {
                let ch = anonymous(&addr, &digest);
                tokio::spawn(async move {
                    let r = RaftClient::new(ch)
                        .max_encoding_message_size(usize::MAX)
                        .append_entries(proto::AppendEntriesRequest {
                            entries: vec![proto::Entry {
                                log_id: None,
                                payload: Some(proto::entry::Payload::Normal(vec![b' '; mb << 20])),
                            }],
                            ..Default::default()
                        })
                        .await;
                    match r {
                        Ok(_) => "accepted".to_string(),
                        Err(s) => format!("{:?}", s.code()),
                    }
                })
            })
            .collect();
        let mut out = vec![];
        for t in tasks {
            out.push(t.await.expect("sender"));
        }
        out
    });
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let peak = sampler.stop();
    let mut by_outcome = std::collections::BTreeMap::<String, usize>::new();
    for o in outcomes {
        *by_outcome.entry(o).or_default() += 1;
    }
    println!("== {senders} anonymous senders of one {mb} MB Raft message each, at once ==");
    println!("answers: {by_outcome:?} after {:.2} s", took.as_secs_f64());
    println!(
        "leader RSS: idle {:.1} MB, peak {:.1} MB, growth {:.1} MB (aim: under 100 MB)",
        idle as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        peak.saturating_sub(idle) as f64 / 1048576.0
    );
    assert!(nodes[0].info()["state"] == "active", "the leader survived");

    // Joins from one address.
    let (judged, limited) = rt.block_on(async {
        let ch = anonymous(&addr, &digest);
        let mut client = CaClient::new(ch);
        let (mut judged, mut limited) = (0u64, 0u64);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(secs) {
            let r = client
                .join(proto::CaJoinRequest {
                    secret: "0".repeat(25),
                    csr_pem: String::new(),
                    advertise_addr: "127.0.0.1:1".into(),
                    hostname: "bench".into(),
                    forwarded_for: String::new(),
                })
                .await;
            match r {
                Err(s) if s.code() == tonic::Code::ResourceExhausted => limited += 1,
                Err(s) if s.code() == tonic::Code::PermissionDenied => judged += 1,
                other => panic!("join with a wrong secret: {other:?}"),
            }
        }
        (judged, limited)
    });
    println!("== joins with wrong secrets from one address for {secs} s ==");
    println!(
        "judged {judged} ({:.1}/s), refused by the per-address limit {limited} ({:.0}/s)",
        judged as f64 / secs as f64,
        limited as f64 / secs as f64
    );
    drop(nodes);

    // CA rotation of 5 nodes.
    let runs = env_u64("ORC_BENCH_RUNS", 3);
    let mut times = vec![];
    for _ in 0..runs {
        let nodes = cluster(3, 2, &[]);
        let t0 = Instant::now();
        let out = nodes[0].ok(&["ca", "rotate"]);
        times.push(t0.elapsed());
        assert!(out.contains("root CA rotated"), "{out}");
    }
    times.sort();
    println!("== CA rotation of 3 managers and 2 workers, {runs} clusters ==");
    println!(
        "median {:.2} s (min {:.2} s, max {:.2} s)",
        times[times.len() / 2].as_secs_f64(),
        times[0].as_secs_f64(),
        times[times.len() - 1].as_secs_f64()
    );
}
