//! The leader's passes at size (issue 18): one orchestrator pass and one scheduler pass
//! over a settled cluster, with 1 and with 1,000 changes, beside a pass over everything
//! (what every orchestrator pass cost before passes looked only at what changed); and
//! a snapshot of the whole state taken and installed (encoded and decoded as the Raft
//! state machine does), with its size and the memory it took.
//!
//! The states are built through the store and changed with the same commands the
//! agents' reports and the orchestrator's decisions commit, so the change record the
//! daemon's passes read ([`orc::store::changes`]) is the real one. Each figure is the
//! median of `ORC_BENCH_ROUNDS` (default 5) runs.
//!
//! Run: `cargo bench --bench passes`. `ORC_BENCH_SIZES` lists the sizes as
//! `nodes:services:replicas,...` (default `100:100:100,1000:1000:100`: 10,000 and
//! 100,000 tasks).

#[path = "common/state.rs"]
mod state;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use orc::orchestrator::{reconcile_changed, Decision};
use orc::store::changes::Changed;
use orc::store::{
    Command, Node, NodeId, NodeStatus, Role, Service, ServiceId, State, TaskId, TaskState,
    TaskStatus,
};

fn rounds() -> usize {
    std::env::var("ORC_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// A settled cluster: `nodes` ready workers, `services` services of `replicas`, every
/// task running, spread round-robin.
fn build(nodes: u64, services: usize, replicas: u64) -> State {
    let mut s = State::default();
    for i in 1..=nodes {
        let n = state::ready_node(
            i,
            format!("10.1.{}.{}:4242", i / 250, i % 250),
            Role::Worker,
        );
        s.nodes.insert(n.id, n);
    }
    let mut made = 0u64;
    for i in 0..services {
        let sv = state::service(i, |spec| {
            spec.task.restart.delay_ms = 0;
            spec.task.placement = Default::default();
            spec.mode = orc::store::service::ServiceMode::Replicated { replicas };
        });
        for slot in 1..=replicas {
            made += 1;
            let t = state::running_task(i, &sv, slot, NodeId(1 + made % nodes));
            s.tasks.insert(t.id.clone(), t);
        }
        s.services.insert(sv.id.clone(), sv);
    }
    s
}

fn pass(state: &State, changed: &Changed) -> Decision {
    let mut n = 0u64;
    let mut new_id = || {
        n += 1;
        TaskId(format!("new{n:08}"))
    };
    let eligible = |_: &Service, n: &Node| n.status == NodeStatus::Ready;
    reconcile_changed(state, changed, 10_000, &eligible, &mut new_id)
}

/// The median time of `f`, and its last result.
fn time<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = vec![];
    let mut out = None;
    for _ in 0..rounds() {
        let at = Instant::now();
        out = Some(f());
        times.push(at.elapsed());
    }
    (median(times), out.expect("one round"))
}

/// Fails `count` tasks, spread over the first `services` services, as agents' reports
/// would.
fn fail(state: &mut State, count: usize, services: usize) {
    let per_service: BTreeMap<ServiceId, Vec<TaskId>> = state
        .tasks
        .values()
        .fold(BTreeMap::new(), |mut m, t| {
            m.entry(t.service_id.clone())
                .or_insert_with(Vec::new)
                .push(t.id.clone());
            m
        })
        .into_iter()
        .take(services)
        .collect();
    let mut ids = vec![];
    'outer: for round in 0.. {
        let mut any = false;
        for tasks in per_service.values() {
            if let Some(id) = tasks.get(round) {
                any = true;
                ids.push(id.clone());
                if ids.len() == count {
                    break 'outer;
                }
            }
        }
        if !any {
            break;
        }
    }
    let updates = ids
        .into_iter()
        .map(|id| (id, TaskStatus::new(TaskState::Failed, "exit 1", 5)))
        .collect();
    state.apply(&Command::UpdateTaskStatus { updates });
}

/// Peak resident memory of this process, bytes, since the last reset.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resident memory of this process now, bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn per_task(bytes: u64, tasks: u64) -> String {
    format!("{:.2} KiB", bytes as f64 / tasks.max(1) as f64 / 1024.0)
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

fn size(nodes: u64, services: usize, replicas: u64) {
    let tasks = services as u64 * replicas;
    println!("\n{nodes} nodes, {services} services x {replicas} = {tasks} tasks");
    let before = rss();
    let base = build(nodes, services, replicas);
    let state_mem = rss().saturating_sub(before);
    // What a leader's sessions hold of what they sent their nodes, to compare with
    // what each node should have next: every node's assignments before, their hashes
    // now (`orc::dispatcher::session::Sent`).
    let dk = orc::keys::DataKey::generate().expect("data key");
    let assignments = |n| orc::dispatcher::session::assignments_for(&base, NodeId(n), &dk);
    let before = rss();
    let sent: Vec<_> = (1..=nodes)
        .map(|n| {
            let mut sent = orc::dispatcher::session::Sent::default();
            sent.update(assignments(n));
            sent
        })
        .collect();
    let sent_mem = rss().saturating_sub(before);
    let sent_count: usize = sent.iter().map(|s| s.len()).sum();
    // Both kept while measured: memory freed would be taken again.
    let before = rss();
    let held: Vec<_> = (1..=nodes).map(assignments).collect();
    let held_mem = rss().saturating_sub(before);
    drop((held, sent));
    println!(
        "  memory: the state {} ({} a task); what the sessions keep of what they sent ({sent_count} assignments): {} ({} a task; the assignments whole, before: {}, {} a task)",
        mib(state_mem),
        per_task(state_mem, tasks),
        mib(sent_mem),
        per_task(sent_mem, tasks),
        mib(held_mem),
        per_task(held_mem, tasks)
    );
    let (whole, d) = time(|| pass(&base, &Changed::All));
    assert!(d.is_empty(), "a settled cluster needs nothing: {d:?}");
    println!(
        "  orchestrator, whole pass (every pass before):  {:>10}  ({} tasks looked at)",
        ms(whole),
        d.examined
    );
    let quiet = base.changes.since(Some(base.changes.generation()));
    let (t, d) = time(|| pass(&base, &quiet));
    println!(
        "  orchestrator, nothing changed:                  {:>10}  ({} tasks looked at)",
        ms(t),
        d.examined
    );
    let facts = BTreeMap::new();
    let (t, plan) = time(|| orc::scheduler::schedule(&base, &facts));
    assert!(plan.is_empty());
    println!(
        "  scheduler, nothing waiting:                     {:>10}",
        ms(t)
    );

    for (changes, among) in [(1usize, 1usize), (1000, 10), (1000, services)] {
        let mut s = base.clone();
        let read = s.changes.generation();
        fail(&mut s, changes, among);
        let changed = s.changes.since(Some(read));
        let (t, d) = time(|| pass(&s, &changed));
        let (tw, dw) = time(|| pass(&s, &Changed::All));
        assert_eq!(d.commands, dw.commands, "the same decision");
        let created = d
            .commands
            .iter()
            .map(|c| match c {
                Command::CreateTasks { tasks } => tasks.len(),
                _ => 0,
            })
            .sum::<usize>();
        println!(
            "  orchestrator, {changes:>4} failed in {among:>4} services: {:>10}  ({} tasks looked at, {created} replacements; whole pass {})",
            ms(t),
            d.examined,
            ms(tw)
        );
        for c in &d.commands {
            s.apply(c);
        }
        let (t, plan) = time(|| orc::scheduler::schedule(&s, &facts));
        println!(
            "  scheduler, {:>4} waiting:                       {:>10}  ({} placed)",
            created,
            ms(t),
            plan.assign.len()
        );
    }

    // A snapshot: the state encoded as the state machine's snapshot, and decoded.
    use prost::Message;
    reset_peak();
    let before = peak_rss();
    let (t, bytes) = time(|| orc::proto::State::from(base.clone()).encode_to_vec());
    let took = peak_rss().saturating_sub(before);
    println!(
        "  snapshot taken:                                 {:>10}  ({}, {} more memory at peak)",
        ms(t),
        mib(bytes.len() as u64),
        mib(took)
    );
    reset_peak();
    let before = peak_rss();
    let (t, back) = time(|| {
        let pb = orc::proto::State::decode(bytes.as_slice()).expect("decode");
        State::try_from(pb).expect("convert")
    });
    let took = peak_rss().saturating_sub(before);
    assert_eq!(back.tasks.len(), base.tasks.len());
    println!(
        "  snapshot installed:                             {:>10}  ({} more memory at peak)",
        ms(t),
        mib(took)
    );
}

fn main() {
    let sizes = std::env::var("ORC_BENCH_SIZES").unwrap_or("100:100:100,1000:1000:100".into());
    println!("leader passes (median of {} runs)", rounds());
    for part in sizes.split(',') {
        let v: Vec<u64> = part.split(':').filter_map(|x| x.parse().ok()).collect();
        let [nodes, services, replicas] = v[..] else {
            panic!("ORC_BENCH_SIZES: {part}: want nodes:services:replicas");
        };
        size(nodes, services as usize, replicas);
    }
}
