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

async fn run_orchestrator(m: Arc<Manager>, stop: CancellationToken) {
    let mut applied = m.sm.subscribe();
    let mut last: Vec<Command> = vec![];
    let mut last_at = tokio::time::Instant::now();
    loop {
        let now = now_ms();
        let f = facts(&m);
        let pass = std::time::Instant::now();
        let decision = off_runtime(&m, move |s| {
            crate::orchestrator::reconcile(
                s,
                now,
                &|svc: &Service, node: &Node| eligible(svc, node, f.get(&node.id)),
                &mut TaskId::random,
            )
        })
        .await;
        let Some(decision) = decision else { return };
        m.metrics
            .orchestrator_pass_seconds
            .observe(pass.elapsed().as_secs_f64());
        // The same decision again right after it was applied means it changes nothing:
        // do not spin on it.
        let repeat = decision.commands == last && last_at.elapsed() < Duration::from_secs(1);
        if !decision.commands.is_empty() && !repeat {
            last = decision.commands.clone();
            last_at = tokio::time::Instant::now();
            for cmd in decision.commands {
                if let Err(e) = m.propose(cmd).await {
                    tracing::debug!("orchestrator: {e}");
                    break;
                }
            }
        }
        let wait = decision
            .wake_at_ms
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
