//! The leader's pipeline: the orchestrator and the scheduler, each a loop that reads a
//! snapshot of the store, runs its pure decision function, proposes the result, and
//! waits for the next change (or for a restart delay to run out).
//!
//! Both run only on the leader, under its leadership token, each pass on a blocking
//! thread ([`off_runtime`]). They never call each other:
//! the orchestrator's new tasks reach the scheduler through the store, and the
//! scheduler's placements reach the dispatcher (and the workers) the same way.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{now_ms, Manager};
use crate::scheduler::{self};
use crate::store::{Command, Node, Service, TaskId};

/// Starts the leader-only pipeline components under `stop`.
pub fn start(m: Arc<Manager>, stop: CancellationToken) {
    tokio::spawn(run_orchestrator(m.clone(), stop.clone()));
    tokio::spawn(run_scheduler(m, stop));
}

pub use crate::scheduler::{eligible, live_facts as facts};

/// Runs a pass over the state on a blocking thread, not on the runtime's: with
/// 100,000 tasks a pass takes long enough to hold up the heartbeats the runtime
/// serves, and nodes would be marked down for it. `None` if the pass panicked.
async fn off_runtime<T: Send + 'static>(
    m: &Arc<Manager>,
    pass: impl FnOnce(&crate::store::State) -> T + Send + 'static,
) -> Option<T> {
    let m = m.clone();
    match tokio::task::spawn_blocking(move || m.read(pass)).await {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!("a leader pass failed: {e}");
            None
        }
    }
}

/// How often the orchestrator looks at everything even when nothing says it must.
const WHOLE_PASS_EVERY: Duration = Duration::from_secs(10);

async fn run_orchestrator(m: Arc<Manager>, stop: CancellationToken) {
    let mut applied = m.sm.subscribe();
    let mut last: Vec<Command> = vec![];
    let mut last_at = tokio::time::Instant::now();
    // The generation the last pass read and whose decision was proposed in full
    // (`None`: look at everything), the earliest wake-up any pass asked for, and when
    // the last whole pass ran.
    let mut since: Option<u64> = None;
    let mut wake_at: Option<u64> = None;
    let mut whole_at = tokio::time::Instant::now();
    loop {
        let now = now_ms();
        let whole = since.is_none()
            || wake_at.is_some_and(|at| at <= now)
            || whole_at.elapsed() >= WHOLE_PASS_EVERY;
        let from = if whole { None } else { since };
        let f = facts(&m);
        let pass = std::time::Instant::now();
        let decision = off_runtime(&m, move |s| {
            let changed = s.changes.since(from);
            let decision = crate::orchestrator::reconcile_changed(
                s,
                &changed,
                now,
                &|svc: &Service, node: &Node| eligible(svc, node, f.get(&node.id)),
                &mut TaskId::random,
            );
            (decision, s.changes.generation())
        })
        .await;
        let Some((decision, generation)) = decision else {
            return;
        };
        m.metrics
            .orchestrator_pass_seconds
            .observe(pass.elapsed().as_secs_f64());
        if whole {
            whole_at = tokio::time::Instant::now();
            wake_at = decision.wake_at_ms;
        } else {
            wake_at = match (wake_at, decision.wake_at_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        since = Some(generation);
        // The same decision again right after it was applied means it changes nothing:
        // do not spin on it.
        let repeat = decision.commands == last && last_at.elapsed() < Duration::from_secs(1);
        if !decision.commands.is_empty() && !repeat {
            last = decision.commands.clone();
            last_at = tokio::time::Instant::now();
            for cmd in cut(decision.commands) {
                if let Err(e) = m.propose(cmd).await {
                    tracing::debug!("orchestrator: {e}");
                    // What was not applied must be decided again: look at everything.
                    since = None;
                    break;
                }
            }
        }
        let wait = wake_at
            .map(|t| Duration::from_millis(t.saturating_sub(now_ms()).max(10)))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        tokio::select! {
            _ = stop.cancelled() => return,
            r = applied.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(wait) => {},
        }
    }
}

/// The orchestrator's commands, each creation of many tasks cut into parts of at most
/// half of [`crate::manager::BATCH_BYTES`] encoded: 5,000 new tasks made one entry of
/// about 10 MB, which no follower could take within the time openraft gives it. The
/// parts keep their order; a part that fails ends the proposals, and the next pass
/// (a whole one) decides the rest again.
fn cut(commands: Vec<Command>) -> Vec<Command> {
    use prost::Message;
    let limit = crate::manager::BATCH_BYTES / 2;
    let mut out = Vec::with_capacity(commands.len());
    for cmd in commands {
        let Command::CreateTasks { tasks } = cmd else {
            out.push(cmd);
            continue;
        };
        let mut part = vec![];
        let mut bytes = 0;
        for t in tasks {
            let size = crate::proto::Task::from(t.clone()).encoded_len() + 8;
            if !part.is_empty() && bytes + size > limit {
                out.push(Command::CreateTasks {
                    tasks: std::mem::take(&mut part),
                });
                bytes = 0;
            }
            bytes += size;
            part.push(t);
        }
        if !part.is_empty() {
            out.push(Command::CreateTasks { tasks: part });
        }
    }
    out
}

async fn run_scheduler(m: Arc<Manager>, stop: CancellationToken) {
    let mut applied = m.sm.subscribe();
    let mut last: Option<Command> = None;
    let mut last_at = tokio::time::Instant::now();
    loop {
        let f = facts(&m);
        let pass = std::time::Instant::now();
        let Some(plan) = off_runtime(&m, move |s| scheduler::schedule(s, &f)).await else {
            return;
        };
        m.metrics
            .scheduler_pass_seconds
            .observe(pass.elapsed().as_secs_f64());
        if !plan.assign.is_empty() || !plan.pending.is_empty() {
            let cmd = Command::AssignTasks {
                assign: plan.assign,
                pending: plan.pending,
                now_ms: now_ms(),
            };
            let same = match (&last, &cmd) {
                (
                    Some(Command::AssignTasks {
                        assign: a,
                        pending: p,
                        ..
                    }),
                    Command::AssignTasks {
                        assign: b,
                        pending: q,
                        ..
                    },
                ) => a == b && p == q,
                _ => false,
            };
            if !(same && last_at.elapsed() < Duration::from_secs(1)) {
                last = Some(cmd.clone());
                last_at = tokio::time::Instant::now();
                if let Err(e) = m.propose(cmd).await {
                    tracing::debug!("scheduler: {e}");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = applied.changed() => if r.is_err() { return },
            // Live facts change without a store change: look again now and then.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Task, TaskState, TaskStatus};

    fn task(i: usize, args: usize) -> Task {
        let mut t = Task {
            id: TaskId(format!("t{i:05}")),
            service_id: crate::store::ServiceId("s".into()),
            service_name: "s".into(),
            slot: i as u64,
            node_id: None,
            spec_version: 1,
            spec: Default::default(),
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::New, "", 0),
            created_ms: 0,
            vip: String::new(),
            endpoint: None,
        };
        std::sync::Arc::make_mut(&mut t.spec).container.args = vec!["x".repeat(1000); args];
        t
    }

    #[test]
    fn a_large_creation_is_cut_in_order_and_small_commands_pass_as_they_are() {
        let tasks: Vec<Task> = (0..2000).map(|i| task(i, 1)).collect();
        let noop = Command::Noop;
        let parts = cut(vec![
            noop.clone(),
            Command::CreateTasks {
                tasks: tasks.clone(),
            },
            noop.clone(),
        ]);
        assert_eq!(parts.first(), Some(&noop));
        assert_eq!(parts.last(), Some(&noop));
        let mut again = vec![];
        for p in &parts[1..parts.len() - 1] {
            let Command::CreateTasks { tasks } = p else {
                panic!("{p:?}")
            };
            let size = crate::proto::convert::command::encoded_len(p);
            assert!(size <= crate::manager::BATCH_BYTES / 2, "{size}");
            again.extend(tasks.iter().cloned());
        }
        assert!(parts.len() > 4, "about 2 MB in parts of half a MiB");
        assert_eq!(again, tasks, "every task once, in order");
        // The control: a small creation is left whole.
        let small = Command::CreateTasks {
            tasks: tasks[..10].to_vec(),
        };
        assert_eq!(cut(vec![small.clone()]), vec![small]);
    }
}
