//! The leader's passes at size (issue 18): one orchestrator pass and one scheduler pass
//! over a settled cluster, with 1 and with 1,000 changes, beside a pass over everything
//! (what every orchestrator pass cost before passes looked only at what changed); and
//! a snapshot of the whole state taken and installed (encoded and decoded as the Raft
//! state machine does), with its size and the memory it took; the memory the state
//! and the sessions' record of what they sent take. Memory is the heap counted at each
//! allocation (a counting allocator, on only while memory is measured).
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

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
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

/// The heap this process takes, counted at each allocation and free while
/// [`COUNTING`]: exact, where resident memory counts what the allocator keeps and
/// takes again. Off while passes are timed.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
/// Bytes taken less bytes given back while counting (relative: read as
/// differences).
static LIVE: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: as System's.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size() as i64);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as System's.
        unsafe { System.dealloc(p, l) };
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
        }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as System's.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size() as i64);
        }
        p
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: as System's.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() && COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
            grew(new as i64);
        }
        q
    }
}

fn grew(by: i64) {
    if !COUNTING.load(Ordering::Relaxed) {
        return;
    }
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Counts from now on.
fn count(on: bool) {
    COUNTING.store(on, Ordering::SeqCst);
}

/// Heap taken now, bytes (relative: read differences).
fn live() -> i64 {
    LIVE.load(Ordering::Relaxed)
}

/// Heap taken at most since the last [`reset_peak`], bytes (relative).
fn peak() -> i64 {
    PEAK.load(Ordering::Relaxed)
}

/// Bytes taken from `before` to `now` (none if more was given back).
fn since(before: i64, now: i64) -> u64 {
    (now - before).max(0) as u64
}

fn reset_peak() {
    PEAK.store(live(), Ordering::Relaxed);
}

fn per_task(bytes: u64, tasks: u64) -> String {
    format!("{:.2} KiB", bytes as f64 / tasks.max(1) as f64 / 1024.0)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

fn size(nodes: u64, services: usize, replicas: u64) {
    let tasks = services as u64 * replicas;
    println!("\n{nodes} nodes, {services} services x {replicas} = {tasks} tasks");
    count(true);
    let before = live();
    let base = build(nodes, services, replicas);
    let state_mem = since(before, live());
    // Before, each task held a copy of its spec: what those copies take.
    let before = live();
    let copies: Vec<_> = base.tasks.values().map(|t| (*t.spec).clone()).collect();
    let copies_mem = since(before, live());
    drop(copies);
    // What a leader's sessions hold of what they sent their nodes, to compare with
    // what each node should have next: every node's assignments before, their hashes
    // now (`orc::dispatcher::session::Sent`).
    let dk = orc::keys::DataKey::generate().expect("data key");
    let assignments = |n| orc::dispatcher::session::assignments_for(&base, NodeId(n), &dk);
    let before = live();
    let sent: Vec<_> = (1..=nodes)
        .map(|n| {
            let mut sent = orc::dispatcher::session::Sent::default();
            sent.update(assignments(n));
            sent
        })
        .collect();
    let sent_mem = since(before, live());
    let sent_count: usize = sent.iter().map(|s| s.len()).sum();
    let before = live();
    let held: Vec<_> = (1..=nodes).map(assignments).collect();
    let held_mem = since(before, live());
    drop((held, sent));
    count(false);
    println!(
        "  memory (heap): the state {} ({} a task; each task with its own copy of its spec, as before: {}, {} a task); what the sessions keep of what they sent ({sent_count} assignments): {} ({} a task; the assignments whole, before: {}, {} a task)",
        mib(state_mem),
        per_task(state_mem, tasks),
        mib(state_mem + copies_mem),
        per_task(state_mem + copies_mem, tasks),
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

    // Every node's session after one entry that changed one task of each node: each
    // node's assignments made again whole and compared (every session before), or
    // only those of the tasks that changed (`Changes::node_since`).
    {
        use orc::dispatcher::session::{assignments_of, Sent};
        use orc::store::changes::NodeChanged;
        let sent_all = || -> Vec<Sent> {
            (1..=nodes)
                .map(|n| {
                    let mut sent = Sent::default();
                    sent.update(assignments(n));
                    sent
                })
                .collect()
        };
        let mut s = base.clone();
        let read = s.changes.generation();
        let updates: Vec<_> = (1..=nodes)
            .filter_map(|n| s.tasks.on_node(NodeId(n)).next())
            .map(|t| {
                let mut st = t.status.clone();
                st.message = "again".into();
                st.timestamp_ms += 1;
                (t.id.clone(), st)
            })
            .collect();
        s.apply(&Command::UpdateTaskStatus { updates });
        let memo = Default::default();
        // Each round from sessions that were sent the assignments before the entry.
        let measure = |f: &dyn Fn(NodeId, &mut Sent) -> usize| {
            let mut times = vec![];
            let mut n_sent = 0;
            for _ in 0..rounds() {
                let mut sent = sent_all();
                let at = Instant::now();
                n_sent = sent
                    .iter_mut()
                    .enumerate()
                    .map(|(i, sent)| f(NodeId(i as u64 + 1), sent))
                    .sum::<usize>();
                times.push(at.elapsed());
            }
            (median(times), n_sent)
        };
        let (whole, sent_whole) = measure(&|n, sent| {
            let now = orc::dispatcher::session::assignments_with(&s, n, &dk, &memo);
            sent.update(now).0.len()
        });
        let (changed, sent_changed) =
            measure(
                &|n, sent| match s.changes.node_since(n, Some(read), || s.tasks.on_node(n)) {
                    NodeChanged::Tasks(ids) => sent
                        .update_some(assignments_of(&s, n, ids, &dk, &memo))
                        .0
                        .len(),
                    other => panic!("node {n}: {other:?}, not its tasks"),
                },
            );
        assert_eq!(sent_whole, sent_changed, "the same assignments sent");
        println!(
            "  sessions, one task of each node changed:       {:>10}  ({sent_changed} assignments sent; each node's made again whole, before: {}, {:.0}x)",
            ms(changed),
            ms(whole),
            whole.as_secs_f64() / changed.as_secs_f64().max(1e-9)
        );
    }

    // A snapshot: the state encoded as the state machine's snapshot, and decoded.
    use prost::Message;
    count(true);
    reset_peak();
    let before = peak();
    let (t, bytes) = time(|| orc::proto::State::from(base.clone()).encode_to_vec());
    let took = since(before, peak());
    // What of it holds the state's lock (applies wait): the copy only.
    let (copied, _) = time(|| base.clone());
    println!(
        "  snapshot taken:                                 {:>10}  ({}, {} more memory at peak; the state's lock held {} to copy it)",
        ms(t),
        mib(bytes.len() as u64),
        mib(took),
        ms(copied)
    );
    reset_peak();
    let before = peak();
    let (t, back) = time(|| {
        let pb = orc::proto::State::decode(bytes.as_slice()).expect("decode");
        State::try_from(pb).expect("convert")
    });
    let took = since(before, peak());
    count(false);
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
