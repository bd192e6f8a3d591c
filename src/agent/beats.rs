//! A node's heartbeats on one stream (`Dispatcher.Beats`) to the manager it beats to:
//! one HTTP/2 DATA frame each way a beat, where a call of its own (`Heartbeat`) is a
//! new HTTP/2 stream with its headers and trailers both ways. A leader answering a
//! thousand nodes twice a second spent most of its time on that framing.
//!
//! The stream is opened with the first beat, kept while beats are answered in time,
//! and dropped on any failure (the next beat opens another, on the same connection).
//! A manager that does not serve it (an earlier version answers `unimplemented`) gets
//! calls of their own, as before.
//!
//! The agent beats with calls of their own for now ([`Beater::calls`]): with 1,000
//! simulated nodes the stream halved the leader's CPU while idle, but at 1,000 nodes
//! and 100,000 tasks every run with it fell behind (nodes marked down by the thousand,
//! a leader at 1.2 GB) where calls converged, for a reason not yet found (README,
//! "Heartbeats on one stream"). The scale bench measures either
//! (`ORC_SCALE_BEATS=stream`).

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
pub struct Beater {
    /// Whether beats go on a stream where the manager serves it.
    streams: bool,
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
    /// Beats on a stream to each manager that serves it, calls to the others.
    pub fn streaming() -> Beater {
        Beater {
            streams: true,
            open: None,
            unary: BTreeSet::new(),
        }
    }

    /// Beats as calls of their own only.
    pub fn calls() -> Beater {
        Beater {
            streams: false,
            ..Beater::streaming()
        }
    }

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
        if !self.streams || self.unary.contains(addr) {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tonic::{Request, Response, Status};

    use super::*;
    use crate::proto::dispatcher_server::{Dispatcher, DispatcherServer};

    /// A manager that answers beats with their count so far (in `period_ms`), and
    /// counts the streams opened and the calls of their own; with `streams` false it
    /// is of an earlier version (no `Beats`). A beat whose node id is `slow` is never
    /// answered.
    struct Manager {
        streams: bool,
        opened: AtomicUsize,
        calls: AtomicUsize,
        beats: Arc<AtomicUsize>,
    }

    fn answer(beats: &AtomicUsize) -> proto::HeartbeatResponse {
        proto::HeartbeatResponse {
            period_ms: beats.fetch_add(1, Ordering::SeqCst) as u64 + 1,
            ..Default::default()
        }
    }

    type Stream = std::pin::Pin<
        Box<
            dyn futures::Stream<Item = std::result::Result<proto::HeartbeatResponse, Status>>
                + Send,
        >,
    >;
    type Sessions = std::pin::Pin<
        Box<dyn futures::Stream<Item = std::result::Result<proto::SessionMessage, Status>> + Send>,
    >;

    #[tonic::async_trait]
    impl Dispatcher for Manager {
        type BeatsStream = Stream;
        type SessionStream = Sessions;

        async fn heartbeat(
            &self,
            _: Request<proto::HeartbeatRequest>,
        ) -> std::result::Result<Response<proto::HeartbeatResponse>, Status> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(answer(&self.beats)))
        }

        async fn beats(
            &self,
            req: Request<tonic::Streaming<proto::HeartbeatRequest>>,
        ) -> std::result::Result<Response<Stream>, Status> {
            if !self.streams {
                return Err(Status::unimplemented("Beats"));
            }
            self.opened.fetch_add(1, Ordering::SeqCst);
            let beats = self.beats.clone();
            let answers =
                futures::stream::unfold((req.into_inner(), beats), |(mut s, beats)| async move {
                    let r = s.message().await.ok()??;
                    if r.node_id == "slow" {
                        std::future::pending::<()>().await;
                    }
                    Some((Ok(answer(&beats)), (s, beats)))
                });
            Ok(Response::new(Box::pin(answers)))
        }

        async fn session(
            &self,
            _: Request<proto::SessionRequest>,
        ) -> std::result::Result<Response<Sessions>, Status> {
            Err(Status::unimplemented(""))
        }

        async fn update_task_status(
            &self,
            _: Request<proto::TaskStatusBatch>,
        ) -> std::result::Result<Response<proto::Empty>, Status> {
            Err(Status::unimplemented(""))
        }

        async fn check_image_grant(
            &self,
            _: Request<proto::ImageGrantRequest>,
        ) -> std::result::Result<Response<proto::ImageGrant>, Status> {
            Err(Status::unimplemented(""))
        }

        async fn check_volume_grant(
            &self,
            _: Request<proto::VolumeGrantRequest>,
        ) -> std::result::Result<Response<proto::VolumeGrant>, Status> {
            Err(Status::unimplemented(""))
        }
    }

    /// Serves a `Manager` on loopback: its address, a channel to it, and the manager.
    async fn manager(streams: bool) -> (String, Channel, Arc<Manager>) {
        let m = Arc::new(Manager {
            streams,
            opened: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            beats: Arc::new(AtomicUsize::new(0)),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tonic::transport::Server::builder()
            .add_service(DispatcherServer::from_arc(m.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        let ch = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        (addr, ch, m)
    }

    fn beat_of(node: &str) -> proto::HeartbeatRequest {
        proto::HeartbeatRequest {
            node_id: node.into(),
            ..Default::default()
        }
    }

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn beats_go_on_one_stream_answered_in_order_and_a_late_answer_is_never_taken() {
        let (addr, ch, m) = manager(true).await;
        let mut b = Beater::streaming();
        for i in 1..=5u64 {
            let a = b.beat(ch.clone(), &addr, beat_of("n"), WAIT).await.unwrap();
            assert_eq!(
                a.map(|a| a.period_ms),
                Some(i),
                "beat {i} answered, in order"
            );
        }
        assert!(b.streaming_to(&addr));
        assert_eq!(m.opened.load(Ordering::SeqCst), 1, "one stream for 5 beats");
        assert_eq!(m.calls.load(Ordering::SeqCst), 0);
        // A beat not answered in time: given up with its stream, so that its answer
        // (were it to come) is not taken for the next beat's; the next opens another.
        let late = b.beat(
            ch.clone(),
            &addr,
            beat_of("slow"),
            Duration::from_millis(200),
        );
        assert!(late.await.unwrap().is_none());
        assert!(!b.streaming_to(&addr));
        let a = b.beat(ch.clone(), &addr, beat_of("n"), WAIT).await.unwrap();
        assert_eq!(a.map(|a| a.period_ms), Some(6));
        assert_eq!(m.opened.load(Ordering::SeqCst), 2);
        // Another manager: the stream moves there.
        let (addr2, ch2, m2) = manager(true).await;
        let a = b.beat(ch2, &addr2, beat_of("n"), WAIT).await.unwrap();
        assert_eq!(a.map(|a| a.period_ms), Some(1));
        assert!(b.streaming_to(&addr2) && !b.streaming_to(&addr));
        assert_eq!(m2.opened.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_manager_without_the_stream_gets_calls_of_their_own() {
        let (addr, ch, m) = manager(false).await;
        let mut b = Beater::streaming();
        for i in 1..=3u64 {
            let a = b.beat(ch.clone(), &addr, beat_of("n"), WAIT).await.unwrap();
            assert_eq!(a.map(|a| a.period_ms), Some(i));
        }
        assert_eq!(m.calls.load(Ordering::SeqCst), 3, "every beat a call");
        assert_eq!(m.opened.load(Ordering::SeqCst), 0);
        assert!(!b.streaming_to(&addr));
        // Beats as calls only, to a manager that serves the stream.
        let (addr3, ch3, m3) = manager(true).await;
        let mut calls = Beater::calls();
        for _ in 0..2 {
            calls
                .beat(ch3.clone(), &addr3, beat_of("n"), WAIT)
                .await
                .unwrap();
        }
        assert_eq!(
            (
                m3.opened.load(Ordering::SeqCst),
                m3.calls.load(Ordering::SeqCst)
            ),
            (0, 2)
        );
        // Control: a manager that serves it gets the stream, from the same beater.
        let (addr2, ch2, m2) = manager(true).await;
        b.beat(ch2, &addr2, beat_of("n"), WAIT).await.unwrap();
        assert_eq!(
            (
                m2.opened.load(Ordering::SeqCst),
                m2.calls.load(Ordering::SeqCst)
            ),
            (1, 0)
        );
    }
}
