//! A node's heartbeats on one stream (`Dispatcher.Beats`) to the manager it beats to:
//! one HTTP/2 DATA frame each way a beat, where a call of its own (`Heartbeat`) is a
//! new HTTP/2 stream with its headers and trailers both ways. A leader answering a
//! thousand nodes twice a second spent most of its time on that framing.
//!
//! The stream is opened with the first beat, kept while beats are answered in time,
//! and dropped on any failure (the next beat opens another, on the same connection).
//! A manager that does not serve it (an earlier version answers `unimplemented`) gets
//! calls of their own, as before.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::error::{Error, Result};
use crate::proto::{self, dispatcher_client::DispatcherClient};

/// Managers remembered as not serving the stream; more are forgotten (a manager set
/// is a handful).
const UNARY_MAX: usize = 16;

/// The heartbeats of one node.
#[derive(Default)]
pub struct Beater {
    open: Option<Open>,
    /// Managers that answered the stream `unimplemented`.
    unary: BTreeSet<String>,
}

/// An open stream of beats to one manager.
struct Open {
    addr: String,
    beats: mpsc::Sender<proto::HeartbeatRequest>,
    answers: tonic::Streaming<proto::HeartbeatResponse>,
}

/// How one beat went on a stream that was open before it.
enum OnOpen {
    Answered(proto::HeartbeatResponse),
    /// The manager ended the stream (not a refusal): open another.
    Ended,
}

impl Beater {
    /// Sends `req` to the manager at `addr` (over `ch`, its channel) and waits for the
    /// answer: `None` when none came within `timeout` (the stream is dropped then, so
    /// a late answer is never taken for the next beat's).
    pub async fn beat(
        &mut self,
        ch: Channel,
        addr: &str,
        req: proto::HeartbeatRequest,
        timeout: Duration,
    ) -> Result<Option<proto::HeartbeatResponse>> {
        match tokio::time::timeout(timeout, self.beat_now(ch, addr, req)).await {
            Ok(r) => r.map(Some),
            Err(_) => {
                self.open = None;
                Ok(None)
            }
        }
    }

    /// Whether beats go to `addr` on a stream now.
    pub fn streaming_to(&self, addr: &str) -> bool {
        self.open.as_ref().is_some_and(|o| o.addr == addr)
    }

    async fn beat_now(
        &mut self,
        ch: Channel,
        addr: &str,
        req: proto::HeartbeatRequest,
    ) -> Result<proto::HeartbeatResponse> {
        if self.unary.contains(addr) {
            return unary(ch, req).await;
        }
        // Taken out while the beat is on its way: a beat given up (its future
        // dropped) leaves no stream behind.
        match self.open.take() {
            Some(mut open) if open.addr == addr => match on_open(&mut open, req.clone()).await? {
                OnOpen::Answered(a) => {
                    self.open = Some(open);
                    return Ok(a);
                }
                OnOpen::Ended => {}
            },
            _ => {}
        }
        let (beats, rx) = mpsc::channel(1);
        // The first beat goes with the stream's headers.
        beats
            .send(req.clone())
            .await
            .map_err(|_| Error::Internal("heartbeat stream: no receiver".into()))?;
        let opened = DispatcherClient::new(ch.clone())
            .beats(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        let mut answers = match opened {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                tracing::debug!(manager = %addr, "no heartbeat stream there: calls of their own");
                if self.unary.len() >= UNARY_MAX {
                    self.unary.clear();
                }
                self.unary.insert(addr.to_string());
                return unary(ch, req).await;
            }
            Err(s) => return Err(s.into()),
        };
        let Some(answer) = answers.message().await? else {
            return Err(Error::Unavailable(format!(
                "{addr} ended the heartbeat stream unanswered"
            )));
        };
        self.open = Some(Open {
            addr: addr.to_string(),
            beats,
            answers,
        });
        Ok(answer)
    }
}

/// One beat on a stream already open; a refusal is the manager's status.
async fn on_open(open: &mut Open, req: proto::HeartbeatRequest) -> Result<OnOpen> {
    if open.beats.send(req).await.is_err() {
        return Ok(OnOpen::Ended);
    }
    Ok(match open.answers.message().await? {
        Some(a) => OnOpen::Answered(a),
        None => OnOpen::Ended,
    })
}

/// One beat as a call of its own.
async fn unary(ch: Channel, req: proto::HeartbeatRequest) -> Result<proto::HeartbeatResponse> {
    Ok(DispatcherClient::new(ch).heartbeat(req).await?.into_inner())
}
