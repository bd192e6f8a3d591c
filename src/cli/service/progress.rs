//! Following a service until it converges, or an update until it ends: the lines
//! drawn (one per replica slot or node, as `docker service create` does) and the
//! loops that redraw them. Whether the service has converged, and how many tasks that
//! takes, is the leader's judgement ([`crate::orchestrator::progress`]); the CLI only
//! shows it.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use super::view::{client, inspect, tasks, Inspected, Listed};
use crate::error::{Error, Result};
use crate::store::service::{ServiceMode, UpdateState};
use crate::store::TaskState;

/// Whether the service has converged (the leader says), and the lines to show.
pub fn progress(service: &Inspected, tasks: &[Listed]) -> (bool, Vec<String>) {
    let mode = &service.service.spec.mode;
    let job = mode.is_job();
    let global = matches!(mode, ServiceMode::Global | ServiceMode::GlobalJob);
    // The newest current task of each slot (replicated) or node (global).
    let mut newest: BTreeMap<String, &Listed> = BTreeMap::new();
    for t in tasks
        .iter()
        .filter(|t| t.up_to_date || !job && t.task.desired_state == TaskState::Running)
    {
        let key = if global {
            t.node_id()
        } else {
            format!("{:08}", t.task.slot)
        };
        if newest
            .get(&key)
            .is_none_or(|o| t.task.created_ms > o.task.created_ms)
        {
            newest.insert(key, t);
        }
    }
    let (done, desired) = (service.status.done, service.status.wanted as usize);
    let mut lines = vec![format!("overall progress: {done} out of {desired} tasks")];
    for w in &service.waiting_on {
        lines.push(format!("waiting for {w}"));
    }
    let n = newest.len();
    for t in newest.values() {
        let label = if global {
            if t.node.is_empty() {
                t.node_id()
            } else {
                t.node.clone()
            }
        } else {
            format!("{}/{}", t.task.slot, desired.max(n))
        };
        let state = t.task.status.state;
        let noted = matches!(
            state,
            TaskState::Pending | TaskState::Failed | TaskState::Rejected | TaskState::Starting
        );
        let note = [t.task.status.err.as_str(), t.task.status.message.as_str()]
            .into_iter()
            .find(|s| !s.is_empty() && noted)
            .unwrap_or("");
        lines.push(
            format!("{label}: {:<10} {note}", state.as_str())
                .trim_end()
                .to_string(),
        );
    }
    (service.status.converged, lines)
}

/// Progress lines on stdout: redrawn in place on a terminal, printed when they change
/// otherwise.
#[derive(Default)]
struct Screen {
    drawn: usize,
    last: Vec<String>,
}

impl Screen {
    fn show(&mut self, lines: Vec<String>) {
        if lines == self.last {
            return;
        }
        let mut out = std::io::stdout().lock();
        if self.drawn > 0 && std::io::stdout().is_terminal() {
            let _ = write!(out, "\x1b[{}A\x1b[J", self.drawn);
        }
        for l in &lines {
            let _ = writeln!(out, "{l}");
        }
        let _ = out.flush();
        self.drawn = lines.len();
        self.last = lines;
    }
}

/// Waits for convergence, drawing progress.
pub async fn wait_converged(socket: &Path, service: &str) -> Result<()> {
    let mut c = client(socket).await?;
    let mut screen = Screen::default();
    loop {
        let svc = inspect(&mut c, service).await?;
        let tasks = tasks(&mut c, service).await?;
        let (converged, lines) = progress(&svc, &tasks);
        screen.show(lines);
        if converged {
            println!("verify: Service {} converged", svc.service.spec.name);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How an update (or rollback) being followed stands: `None` while it goes on, `Some`
/// with the outcome once it completed, paused or was rolled back (an error for
/// anything but the outcome the command asked for).
pub(super) fn update_outcome(service: &Inspected, rollback: bool) -> Option<Result<String>> {
    let status = service.update_status.as_ref()?;
    let (state, message) = (status.state, &status.message);
    let wanted = if rollback {
        UpdateState::RollbackCompleted
    } else {
        UpdateState::Completed
    };
    let ended = matches!(
        state,
        UpdateState::Completed
            | UpdateState::RollbackCompleted
            | UpdateState::Paused
            | UpdateState::RollbackPaused
    );
    if !ended {
        None
    } else if state == wanted {
        Some(Ok(format!("{state}: {message}")))
    } else {
        let what = if rollback { "rollback" } else { "update" };
        Some(Err(Error::Conflict(format!(
            "service {}: {what} {state}: {message}",
            service.service.spec.name
        ))))
    }
}

/// The lines shown while an update is followed: overall progress from the update
/// status, one line per slot, then the update's state.
pub fn update_progress(service: &Inspected, tasks: &[Listed]) -> Vec<String> {
    let (_, mut lines) = progress(service, tasks);
    let status = service.update_status.as_ref();
    let replicas = match service.service.spec.mode {
        ServiceMode::Replicated { replicas } => Some(replicas),
        _ => None,
    };
    let total = replicas.map_or(lines.len().saturating_sub(1), |r| r as usize);
    let updated = status.map(|u| &u.updated);
    let done = match replicas {
        Some(_) => updated.map_or(0, |u| {
            u.keys().filter(|k| (1..=total as u64).contains(*k)).count()
        }),
        None => updated.map_or(0, |u| u.len().min(total)),
    };
    if let Some(first) = lines.first_mut() {
        *first = format!("overall progress: {done} out of {total} tasks");
    }
    let failed = status.map_or(0, |u| u.failures.len());
    let mut last = format!(
        "update {}: {}",
        status.map_or("", |u| u.state.as_str()),
        status.map_or("", |u| u.message.as_str())
    );
    if failed > 0 {
        last.push_str(&format!(" [{failed} failed]"));
    }
    lines.push(last);
    lines
}

/// Follows the update (or, `rollback`, the rollback) that made `version` of `service`,
/// or the one still under way or paused, drawing progress until it completes, pauses or
/// is rolled back. A change that started no update (a scale, a label) while none is
/// under way is followed to convergence instead.
pub async fn wait_update(socket: &Path, service: &str, version: u64, rollback: bool) -> Result<()> {
    let mut c = client(socket).await?;
    let svc = inspect(&mut c, service).await?;
    let status = svc.update_status.as_ref();
    let under_way = status.is_some_and(|u| !u.state.is_done());
    let tracked = under_way || status.is_some_and(|u| u.version >= version);
    if !tracked {
        return wait_converged(socket, service).await;
    }
    let mut screen = Screen::default();
    loop {
        let svc = inspect(&mut c, service).await?;
        let tasks = tasks(&mut c, service).await?;
        screen.show(update_progress(&svc, &tasks));
        if let Some(outcome) = update_outcome(&svc, rollback) {
            outcome?;
            println!("verify: Service {} converged", svc.service.spec.name);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
