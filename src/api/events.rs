//! `orc events` (`Control.Events`): this manager's events ([`crate::store::events`]),
//! the history from `since` first, then live ones until `until` or until the client
//! goes.
//!
//! Who may call: the local socket (its file mode guards it), or a manager on the
//! cluster port (the gate's `Control.*` rule). Any manager serves its own stream: the
//! call is not forwarded to the leader. A worker has no events (it applies no Raft
//! entries): it answers the same "this node is not a manager" error as every other
//! read of the cluster's state.
//!
//! What it may name: filters, checked before anything is read ([`Filters::new`]: known
//! keys and types only, at most 32, values at most 256 bytes); times are plain numbers.
//!
//! How much it may hold: the history is the manager's bounded ring; live events wait in
//! the one broadcast queue ([`crate::store::events::SUBSCRIBER_QUEUE`]) and in this
//! stream's small channel; a client that reads too slowly falls behind the queue and is
//! cut off with a `resource exhausted` error that says so. At most
//! [`crate::store::events::MAX_SUBSCRIBERS`] streams at once.

use std::pin::Pin;

use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use crate::error::Result;
use crate::host::Host;
use crate::proto::{EventMessage, EventsRequest};
use crate::store::events::{now_nano, Event, Filters, HISTORY, SUBSCRIBER_QUEUE};

/// A stream of events.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<EventMessage, Status>> + Send>>;

/// Events this stream's channel holds for a client, beyond the shared queue.
const CHANNEL: usize = 64;

/// A notice to the client about the stream (not an event).
fn notice(text: String) -> EventMessage {
    EventMessage {
        notice: text,
        ..Default::default()
    }
}

/// Whether `e` is past the end of the stream.
fn past(e: &Event, until: Option<u64>) -> bool {
    until.is_some_and(|u| e.time_nano > u)
}

/// The events of this manager for `req` (see the module doc).
pub fn events(d: &Host, req: EventsRequest) -> Result<EventStream> {
    let m = d.manager()?;
    let pairs: Vec<(String, String)> = req.filters.into_iter().map(|f| (f.key, f.value)).collect();
    let filters = Filters::new(&pairs)?;
    let until = (req.until_nano > 0).then_some(req.until_nano);
    // `--until` alone: the whole history up to it, as `docker events --until` does.
    let since = match (req.since_nano, until) {
        (0, None) => None,
        (0, Some(_)) => Some(0),
        (s, _) => Some(s),
    };
    let sub = m.sm.events().subscribe(since)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<EventMessage, Status>>(CHANNEL);
    tokio::spawn(async move {
        let mut live = sub.live;
        if sub.truncated {
            let text = format!(
                "this manager keeps its last {HISTORY} events: older events in the range \
                 asked for are lost"
            );
            if tx.send(Ok(notice(text))).await.is_err() {
                return;
            }
        }
        for e in sub.history {
            if past(&e, until) {
                return;
            }
            if filters.matches(&e) && tx.send(Ok(e.into())).await.is_err() {
                return;
            }
        }
        let end = async {
            match until {
                Some(u) => {
                    let wait = u.saturating_sub(now_nano());
                    tokio::time::sleep(std::time::Duration::from_nanos(wait)).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(end);
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = &mut end => return,
                r = live.recv() => match r {
                    Ok(e) => {
                        if past(&e, until) {
                            return;
                        }
                        if filters.matches(&e) && tx.send(Ok(e.into())).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::resource_exhausted(format!(
                                "events: this stream fell {n} events behind (more than \
                                 {SUBSCRIBER_QUEUE}) and was cut off: read faster, or \
                                 reconnect with --since"
                            ))))
                            .await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}
