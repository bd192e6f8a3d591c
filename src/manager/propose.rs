//! Group commit: commands proposed at the same time share one Raft entry.
//!
//! openraft 0.9 appends each `client_write` as an entry of its own and waits for its
//! flush before it takes the next, so a leader that proposed every command on its own
//! paid one fsync per write, on the leader and on each follower (2,549 writes/s with 64
//! clients). Here every write of this manager (control API, orchestrator, scheduler,
//! dispatcher) goes through one queue. A proposer task takes what is queued, up to
//! [`MAX_BATCH`] commands and [`BATCH_BYTES`] encoded, and proposes it as one
//! [`Command::Batch`] entry; [`IN_FLIGHT`] entry is on its way at a time, and what
//! arrives meanwhile waits for the next. A lone command goes as it is, at once, so
//! one client's latency is what it was.
//!
//! Each command keeps its own response ([`Response::Batch`], split here), its own
//! rejection and its own events; a batch is durable, committed and applied as a whole,
//! so an acknowledged write is as durable as before.
//!
//! Who may call: code of this manager only (nothing outside proposes directly). Bounds:
//! the queue holds [`QUEUE`] commands (a full queue makes proposers wait, which is the
//! back-pressure), one entry at most [`MAX_BATCH`] commands and [`BATCH_BYTES`] (one
//! command alone up to [`MAX_ENTRY_BYTES`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::BATCH_BYTES;
use crate::error::{Error, Result};
use crate::raft::{LogCommand, Raft};
use crate::store::{Command, Response};

/// Commands in one entry at most.
pub const MAX_BATCH: usize = 1024;
/// The environment variable that lowers [`MAX_BATCH`] for a daemon (`1`: every command
/// an entry of its own, as before group commit; for measuring it, `bench/cluster.rs`).
pub const BATCH_ENV: &str = "ORC_RAFT_MAX_BATCH";
/// Entries proposed and not yet applied, at most. One: openraft 0.9 appends and
/// flushes one entry at a time anyway, so a second entry in flight only splits what
/// would have been one batch (measured with `cargo bench --bench cluster`: 64 clients
/// made 31.7 writes an entry and 11,470 writes/s with one in flight, 19.8 and 9,662 with
/// two).
pub const IN_FLIGHT: usize = 1;
/// Commands waiting for an entry, at most.
pub const QUEUE: usize = 8192;
/// How long a proposed entry may take to be committed and applied.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// One command waiting for its entry.
struct Pending {
    cmd: Command,
    /// Its encoding (`proto::convert::command::encode`): a batch is these bytes framed,
    /// no command is encoded twice ([`LogCommand::batch`]).
    bytes: Vec<u8>,
    reply: oneshot::Sender<Result<Response>>,
}

/// The queue into the proposer task.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

impl Proposer {
    /// Starts the proposer task over `raft`; it ends when every [`Proposer`] is dropped.
    pub fn start(raft: Raft, quorum_hint: impl Fn() -> String + Send + Sync + 'static) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, rx, Arc::new(quorum_hint)));
        Proposer { tx }
    }

    /// Proposes `cmd` (encoded as `bytes`, at most [`MAX_ENTRY_BYTES`]) and waits until
    /// it is committed and applied here.
    pub async fn propose(&self, cmd: Command, bytes: Vec<u8>) -> Result<Response> {
        self.queue(cmd, bytes).await?.await
    }

    /// Queues `cmd` (as [`Proposer::propose`]) and returns once it is queued, with what
    /// waits for its outcome: commands queued one after another are applied in that
    /// order, and the caller may queue more before the first is applied.
    pub async fn queue(
        &self,
        cmd: Command,
        bytes: Vec<u8>,
    ) -> Result<impl std::future::Future<Output = Result<Response>> + Send + 'static> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { cmd, bytes, reply })
            .await
            .map_err(|_| Error::Unavailable("this manager is stopping".into()))?;
        Ok(async move {
            rx.await
                .map_err(|_| Error::Unavailable("this manager is stopping".into()))?
        })
    }
}

/// Takes the next batch: `first`, then whatever is queued, within the bounds. A command
/// that would take the entry over [`BATCH_BYTES`] is handed back for the next one (a
/// single command may be larger, up to [`MAX_ENTRY_BYTES`]: it goes alone).
fn take_batch(
    first: Pending,
    rx: &mut mpsc::Receiver<Pending>,
    max: usize,
) -> (Vec<Pending>, Option<Pending>) {
    let mut bytes = framed(first.bytes.len());
    let mut batch = vec![first];
    while batch.len() < max {
        let Ok(next) = rx.try_recv() else { break };
        if bytes + framed(next.bytes.len()) > BATCH_BYTES {
            return (batch, Some(next));
        }
        bytes += framed(next.bytes.len());
        batch.push(next);
    }
    (batch, None)
}

/// What a command of `size` bytes takes in a batch: itself, its field's tag and length.
fn framed(size: usize) -> usize {
    size + 8
}

async fn run(
    raft: Raft,
    mut rx: mpsc::Receiver<Pending>,
    quorum_hint: Arc<dyn Fn() -> String + Send + Sync>,
) {
    let max_batch = std::env::var(BATCH_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(MAX_BATCH, |n| n.clamp(1, MAX_BATCH));
    // Without batches, as many entries in flight as before: one per waiting command.
    let in_flight = if max_batch == 1 { QUEUE } else { IN_FLIGHT };
    let permits = Arc::new(Semaphore::new(in_flight));
    let mut carried: Option<Pending> = None;
    loop {
        // Wait for room first: what queues meanwhile goes into this entry.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let (batch, rest) = take_batch(first, &mut rx, max_batch);
        carried = rest;
        let raft = raft.clone();
        let hint = quorum_hint.clone();
        tokio::spawn(async move {
            write(&raft, batch, &*hint).await;
            drop(permit);
        });
    }
}

/// Proposes `batch` as one entry and answers each of its commands.
async fn write(
    raft: &Raft,
    mut batch: Vec<Pending>,
    quorum_hint: &(dyn Fn() -> String + Send + Sync),
) {
    // Taken out, not cloned: the reply stays with the pending command.
    let take = |p: &mut Pending| {
        (
            std::mem::replace(&mut p.cmd, Command::Noop),
            std::mem::take(&mut p.bytes),
        )
    };
    let cmd = if batch.len() == 1 {
        let (cmd, bytes) = take(&mut batch[0]);
        LogCommand::encoded(cmd, bytes)
    } else {
        LogCommand::batch(batch.iter_mut().map(take).collect())
    };
    let written = tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(cmd)).await;
    let outcome = match written {
        Err(_) => Err(Error::NoQuorum(format!(
            "no quorum: the write was not committed within {} s ({})",
            WRITE_TIMEOUT.as_secs(),
            quorum_hint()
        ))),
        Ok(Err(e)) if e.forward_to_leader().is_some() => Err(Error::NotLeader(
            "leadership changed during the write: retry".into(),
        )),
        Ok(Err(e)) => Err(Error::Unavailable(format!("the write failed: {e}"))),
        Ok(Ok(r)) => Ok(r.data),
    };
    match outcome {
        Err(e) => {
            for p in batch {
                let _ = p.reply.send(Err(e.clone()));
            }
        }
        Ok(Response::Batch(responses)) if batch.len() > 1 => {
            for (p, r) in batch.into_iter().zip(responses) {
                let _ = p.reply.send(Ok(r));
            }
        }
        Ok(response) => {
            for p in batch {
                let _ = p.reply.send(Ok(response.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(size: usize) -> Pending {
        Pending {
            cmd: Command::Noop,
            bytes: vec![0; size],
            reply: oneshot::channel().0,
        }
    }

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_within_its_bounds() {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        for _ in 0..(MAX_BATCH + 5) {
            tx.send(pending(10)).await.unwrap();
        }
        let first = rx.recv().await.unwrap();
        let (batch, rest) = take_batch(first, &mut rx, MAX_BATCH);
        assert_eq!(batch.len(), MAX_BATCH);
        assert!(rest.is_none());
        // The rest waits for the next entry.
        let first = rx.recv().await.unwrap();
        let (batch, _) = take_batch(first, &mut rx, MAX_BATCH);
        assert_eq!(batch.len(), 5);
    }

    #[tokio::test]
    async fn a_command_that_would_overfill_the_entry_waits_for_the_next() {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let half = BATCH_BYTES / 2 - 8;
        for _ in 0..3 {
            tx.send(pending(half - 100)).await.unwrap();
        }
        let first = rx.recv().await.unwrap();
        let (batch, rest) = take_batch(first, &mut rx, MAX_BATCH);
        assert_eq!(batch.len(), 2, "two halves fit");
        assert_eq!(
            rest.map(|p| p.bytes.len()),
            Some(half - 100),
            "the third is carried"
        );
        // The control: small commands all join.
        for _ in 0..3 {
            tx.send(pending(100)).await.unwrap();
        }
        let first = rx.recv().await.unwrap();
        let (batch, rest) = take_batch(first, &mut rx, MAX_BATCH);
        assert_eq!(batch.len(), 3);
        assert!(rest.is_none());
    }
}
