//! Exactly-once control writes, on the leader.
//!
//! A follower forwards a control write to the leader and, when the leader vanishes or
//! the connection breaks mid-call, tries again on the new leader; the first attempt may
//! have been committed all the same. So every write carries a [`RequestId`], made by the
//! first manager that received the call and kept across its retries (the control API
//! sends it in the `orc-request-id` metadata), and the leader runs it through [`run`]:
//!
//! 1. A retry that arrives while the same request still runs on this leader waits for
//!    it ([`InFlight`]).
//! 2. A request already in the replicated table (`request/<id>`, see
//!    [`crate::store::request`]) with a recorded reply gets that reply; nothing runs.
//! 3. Otherwise the handler runs with the request as its task-local context, and
//!    [`Manager::propose`](super::Manager::propose) wraps its command in
//!    [`Command::Once`]: the id is recorded in the same Raft entry as the write. If the
//!    entry finds the id already recorded (the first attempt was committed, but not yet
//!    applied here when step 2 looked), it applies nothing, and the caller gets the
//!    first reply instead of the handler's.
//! 4. A handler that fails after the first attempt was applied meanwhile (a create that
//!    finds its own service: "already exists") gives way to the first reply too.
//!
//! A handler whose reply is known before it writes (an id it made, a certificate it
//! issued, a plan) proposes with
//! [`Manager::propose_replying`](super::Manager::propose_replying), so that a retry gets
//! the same bytes; one whose reply is a read made after the write (`node update`
//! answers with the node as it is now) proposes plainly, and a retry makes the read
//! again (its command applies nothing the second time).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use super::Manager;
use crate::error::{Error, Result};
use crate::store::{Command, RequestId, Response};

tokio::task_local! {
    /// The request the handler running in this task writes for.
    static WRITE: Arc<Write>;
}

/// What a handler's proposal found, for [`run`].
#[derive(Debug, Default)]
enum Outcome {
    /// Nothing proposed yet.
    #[default]
    NotYet,
    /// Proposed (and, if the proposal succeeded, applied for the first time).
    Proposed,
    /// Applied before: the reply recorded then.
    Duplicate(Option<Vec<u8>>),
}

/// The context of one write on the leader.
struct Write {
    /// Its request id.
    request: RequestId,
    /// What its proposal found; a write proposes one command.
    outcome: Mutex<Outcome>,
}

/// The requests this leader runs now, so that a retry waits for the first attempt.
#[derive(Default)]
pub struct InFlight {
    /// One lock per running request; an entry goes when its last holder does.
    running: Mutex<HashMap<RequestId, Arc<tokio::sync::Mutex<()>>>>,
}

/// A request's turn to run: the others with its id wait until it is dropped.
struct Turn<'a> {
    table: &'a InFlight,
    request: RequestId,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl InFlight {
    async fn enter(&self, request: &RequestId) -> Turn<'_> {
        let lock = self
            .running
            .lock()
            .expect("in-flight lock")
            .entry(request.clone())
            .or_default()
            .clone();
        Turn {
            table: self,
            request: request.clone(),
            _held: lock.lock_owned().await,
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut running = self.table.running.lock().expect("in-flight lock");
        // The table's reference and this turn's guard: nobody else waits.
        if running
            .get(&self.request)
            .is_some_and(|l| Arc::strong_count(l) <= 2)
        {
            running.remove(&self.request);
        }
    }
}

/// Runs `call`, the handler of a control write, on the leader, once per `request`
/// (see the module doc). `R` is the reply the caller gets, as the handler encodes it
/// for [`Manager::propose_replying`](super::Manager::propose_replying).
pub async fn run<R, F>(m: &Manager, request: RequestId, call: F) -> Result<R>
where
    R: prost::Message + Default,
    F: Future<Output = Result<R>>,
{
    let _turn = m.in_flight.enter(&request).await;
    if let Some(first) = recorded_reply(m, &request) {
        tracing::debug!(%request, "request applied before: its first reply, nothing run");
        return decode(&request, &first);
    }
    let write = Arc::new(Write {
        request: request.clone(),
        outcome: Mutex::new(Outcome::NotYet),
    });
    let r = WRITE.scope(write.clone(), call).await;
    let outcome = std::mem::take(&mut *write.outcome.lock().expect("write lock"));
    match (r, outcome) {
        (Ok(_), Outcome::Duplicate(Some(first))) => {
            tracing::debug!(%request, "request applied before: nothing applied, its first reply");
            decode(&request, &first)
        }
        (Ok(reply), _) => Ok(reply),
        (Err(e), _) => match recorded_reply(m, &request) {
            Some(first) => {
                tracing::debug!(%request, "request applied meanwhile ({e}): its first reply");
                decode(&request, &first)
            }
            None => Err(e),
        },
    }
}

/// The reply recorded for `request`, if it was applied with one.
fn recorded_reply(m: &Manager, request: &RequestId) -> Option<Vec<u8>> {
    m.read(|s| s.requests.get(request).and_then(|r| r.reply.clone()))
}

fn decode<R: prost::Message + Default>(request: &RequestId, bytes: &[u8]) -> Result<R> {
    R::decode(bytes).map_err(|e| {
        Error::Internal(format!(
            "request {request}: the reply recorded for it does not decode: {e}"
        ))
    })
}

/// Wraps `cmd` in [`Command::Once`] when it is proposed for a request (inside [`run`]);
/// returns it as it is otherwise.
pub(super) fn wrap(cmd: Command, reply: Option<Vec<u8>>, now_ms: u64) -> Result<Command> {
    let Ok(request) = WRITE.try_with(|w| {
        let mut outcome = w.outcome.lock().expect("write lock");
        match *outcome {
            Outcome::NotYet => {
                *outcome = Outcome::Proposed;
                Ok(w.request.clone())
            }
            _ => Err(Error::Internal(format!(
                "request {}: a control write proposes one command",
                w.request
            ))),
        }
    }) else {
        return Ok(cmd);
    };
    Ok(Command::Once {
        request: request?,
        now_ms,
        reply,
        cmd: Box::new(cmd),
    })
}

/// Notes what the proposal of a request found, and answers as a first apply would.
pub(super) fn note(response: Response) -> Response {
    match response {
        Response::Duplicate(first) => {
            let _ = WRITE.try_with(|w| {
                *w.outcome.lock().expect("write lock") = Outcome::Duplicate(first);
            });
            Response::Ok
        }
        other => other,
    }
}
