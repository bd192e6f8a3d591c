//! Status batching on the leader: the `UpdateTaskStatus` calls that arrive within a few
//! milliseconds become one Raft proposal, and each caller is answered once its updates
//! are committed. Started with the leader components, it lives as long as leadership.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Manager;
use crate::error::{Error, Result};
use crate::store::{Command, TaskId, TaskStatus};

type StatusBatch = (Vec<(TaskId, TaskStatus)>, oneshot::Sender<Result<()>>);

/// Sends status updates to the leader's batcher.
#[derive(Clone)]
pub struct StatusBatcher {
    tx: mpsc::Sender<StatusBatch>,
}

impl StatusBatcher {
    /// Starts the batcher (a leader component).
    pub fn start(m: Arc<Manager>, stop: CancellationToken) -> Self {
        let (tx, mut rx) = mpsc::channel::<StatusBatch>(1024);
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    _ = stop.cancelled() => return,
                    b = rx.recv() => match b { Some(b) => b, None => return },
                };
                let mut updates = first.0;
                let mut waiters = vec![first.1];
                // Gather what arrives in the next few milliseconds into one proposal.
                let deadline = tokio::time::Instant::now() + Duration::from_millis(5);
                while updates.len() < 2000 {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some((u, w))) => {
                            updates.extend(u);
                            waiters.push(w);
                        }
                        _ => break,
                    }
                }
                let r = m
                    .propose(Command::UpdateTaskStatus { updates })
                    .await
                    .map(|_| ());
                for w in waiters {
                    let _ = w.send(r.clone());
                }
            }
        });
        StatusBatcher { tx }
    }

    /// Queues updates; returns once they are committed.
    pub async fn submit(&self, mut updates: Vec<(TaskId, TaskStatus)>) -> Result<()> {
        for (_, st) in &mut updates {
            crate::store::image::drop_malformed(st);
        }
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((updates, tx))
            .await
            .map_err(|_| Error::NotLeader("leadership changed: retry".into()))?;
        rx.await
            .map_err(|_| Error::NotLeader("leadership changed: retry".into()))?
    }
}
