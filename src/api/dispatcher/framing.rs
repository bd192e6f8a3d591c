//! `Dispatcher.Session`'s responses framed by orc, not by tonic.
//!
//! tonic encodes a server stream's messages into one buffer per stream and keeps that
//! buffer, at the size of the largest message the stream ever sent, for as long as the
//! stream lives. A session's first message holds every pair key (1,000 at 1,000
//! nodes) and its endpoint changes grow with the services being placed, so a leader
//! with 1,000 sessions held 130 MB of such buffers before any task existed (heaptrack,
//! 1,000 simulated nodes), and more at size. Here each message is framed into a buffer
//! of its own size (the gRPC frame: a byte saying it is not compressed, its length as
//! 4 bytes big-endian, the message), which is freed once HTTP/2 has written it; the
//! stream's end, or its error, goes as the gRPC trailers. The endpoint changes, encoded
//! once for every session that needs them ([`crate::dispatcher::session`]), are not
//! copied into it: they go as a DATA frame of their own, the shared bytes themselves,
//! after the rest of the message (protobuf reads a message's fields in any order).
//! What is sent is a message tonic's clients read unchanged.
//!
//! Who may call, and how big the request may be, is decided before this by the cluster
//! port's gate (`api::gate`: a node, 64 KiB);
//! the request must be one uncompressed gRPC frame holding one `SessionRequest`, and
//! the session itself checks the caller as before
//! ([`super::DispatcherApi`]'s `session`). Every other method of `Dispatcher` is
//! served by tonic.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::Stream;
use http_body::Frame;
use http_body_util::BodyExt;
use prost::bytes::Bytes;
use prost::Message;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::Status;

use super::DispatcherApi;
use crate::proto::dispatcher_server::{Dispatcher, DispatcherServer};
use crate::proto::{SessionMessage, SessionRequest};

/// The path of the method served here.
pub const SESSION_PATH: &str = "/orc.Dispatcher/Session";

/// A session's stream of messages, as the session makes it.
type Messages = Pin<Box<dyn Stream<Item = Result<SessionMessage, Status>> + Send>>;

/// The `Dispatcher` service: `Session` framed here, the rest by tonic.
#[derive(Clone)]
pub struct Framed {
    api: Arc<DispatcherApi>,
    tonic: DispatcherServer<DispatcherApi>,
}

impl Framed {
    /// The service over `api`; tonic's part decodes requests of at most
    /// `max_decoding` bytes.
    pub fn new(api: DispatcherApi, max_decoding: usize) -> Framed {
        let api = Arc::new(api);
        Framed {
            tonic: DispatcherServer::from_arc(api.clone()).max_decoding_message_size(max_decoding),
            api,
        }
    }
}

impl NamedService for Framed {
    const NAME: &'static str = <DispatcherServer<DispatcherApi> as NamedService>::NAME;
}

impl tower::Service<http::Request<Body>> for Framed {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() != SESSION_PATH {
            let mut tonic = self.tonic.clone();
            return Box::pin(async move { tonic.call(req).await });
        }
        let api = self.api.clone();
        Box::pin(async move {
            Ok(match open(&api, req).await {
                Ok(messages) => http::Response::builder()
                    .header(http::header::CONTENT_TYPE, "application/grpc")
                    .body(Body::new(Frames {
                        messages,
                        next: None,
                        done: false,
                    }))
                    .expect("a fixed header is valid"),
                Err(status) => status.into_http(),
            })
        })
    }
}

/// Reads the request (bounded by the gate) and opens the session.
async fn open(api: &DispatcherApi, req: http::Request<Body>) -> Result<Messages, Status> {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("session request: {e}")))?
        .to_bytes();
    let message = unframe(&bytes)?;
    let req = tonic::Request::from_parts(
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        message,
    );
    Ok(api.session(req).await?.into_inner())
}

/// The one message of a unary gRPC request body.
fn unframe(body: &[u8]) -> Result<SessionRequest, Status> {
    let Some((head, message)) = body.split_at_checked(5) else {
        return Err(Status::invalid_argument("session request: no message"));
    };
    if head[0] != 0 {
        return Err(Status::unimplemented(
            "session request: compressed messages are not accepted",
        ));
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len != message.len() {
        return Err(Status::invalid_argument(
            "session request: the body is not one message",
        ));
    }
    SessionRequest::decode(message)
        .map_err(|e| Status::invalid_argument(format!("session request: {e}")))
}

/// `SessionMessage.endpoints`' field number.
const ENDPOINTS_FIELD: u32 = 7;

/// Endpoint changes at least this big go as the shared bytes, not copied.
const SHARED_FROM: usize = 4096;

/// One message framed for gRPC, in a buffer of its own size; its endpoint changes, when
/// they are big, as the shared bytes after it (the second part).
fn frame(mut m: SessionMessage) -> (Bytes, Option<Bytes>) {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
    let shared = match m.endpoints.take() {
        Some(b) if b.len() >= SHARED_FROM => Some(b),
        small => {
            m.endpoints = small;
            None
        }
    };
    let rest = m.encoded_len();
    let field = shared.as_ref().map_or(0, |b| {
        prost::encoding::key_len(ENDPOINTS_FIELD) + encoded_len_varint(b.len() as u64)
    });
    let len = rest + field + shared.as_ref().map_or(0, Bytes::len);
    let mut buf = Vec::with_capacity(5 + rest + field);
    buf.push(0);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    m.encode(&mut buf).expect("the buffer holds the message");
    if let Some(b) = &shared {
        encode_key(ENDPOINTS_FIELD, WireType::LengthDelimited, &mut buf);
        encode_varint(b.len() as u64, &mut buf);
    }
    (Bytes::from(buf), shared)
}

/// The gRPC trailers of a stream that ended with `status`.
fn trailers(status: &Status) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    if let Err(bad) = status.add_header(&mut h) {
        h.clear();
        let _ = bad.add_header(&mut h);
    }
    h
}

/// The response body: each message as a frame, then the trailers.
struct Frames {
    messages: Messages,
    /// The shared second part of the message whose first part went last.
    next: Option<Bytes>,
    done: bool,
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(b) = self.next.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let end = match std::task::ready!(self.messages.as_mut().poll_next(cx)) {
            Some(Ok(m)) => {
                let (first, second) = frame(m);
                self.next = second;
                return Poll::Ready(Some(Ok(Frame::data(first))));
            }
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        self.done = true;
        Poll::Ready(Some(Ok(Frame::trailers(trailers(&end)))))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.next.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_body(m: &SessionRequest) -> Vec<u8> {
        let mut b = vec![0];
        b.extend_from_slice(&(m.encoded_len() as u32).to_be_bytes());
        m.encode(&mut b).unwrap();
        b
    }

    #[test]
    fn a_request_is_one_uncompressed_message_and_anything_else_is_refused() {
        let m = SessionRequest {
            node_id: "7".into(),
            keys_id: 3,
            ..Default::default()
        };
        // Positive control: one message, as a tonic client sends it.
        assert_eq!(unframe(&request_body(&m)).unwrap(), m);
        let empty = SessionRequest::default();
        assert_eq!(unframe(&request_body(&empty)).unwrap(), empty);
        // Hostile or broken: nothing, a short head, compressed, a length that is not
        // the body's (short, long, two messages), garbage.
        let mut compressed = request_body(&m);
        compressed[0] = 1;
        let mut two = request_body(&m);
        two.extend(request_body(&m));
        let mut long = request_body(&m);
        long[4] += 1;
        let mut short = request_body(&m);
        short.pop();
        let mut garbage = vec![0, 0, 0, 0, 3];
        garbage.extend([0xff, 0xff, 0xff]);
        for (what, body) in [
            ("nothing", vec![]),
            ("a short head", vec![0, 0, 0]),
            ("compressed", compressed),
            ("two messages", two),
            ("a length past the end", long),
            ("cut short", short),
            ("garbage", garbage),
        ] {
            assert!(unframe(&body).is_err(), "{what}");
        }
    }

    #[tokio::test]
    async fn messages_go_as_grpc_frames_of_their_own_size_then_the_status_as_trailers() {
        // Big endpoint changes go as the bytes the sessions share, not a copy.
        let shared = Bytes::from(vec![9u8; 100_000]);
        let message = |n: usize| SessionMessage {
            full: n == 0,
            removed: vec!["x".repeat(n)],
            endpoints: match n {
                3 => Some(Bytes::from_static(b"small")),
                100_000 => Some(shared.clone()),
                _ => None,
            },
            endpoints_digest: vec![1; 16],
            ..Default::default()
        };
        let sizes = [0, 100_000, 3];
        for end in [None, Some(Status::unavailable("leadership changed"))] {
            let mut items: Vec<Result<SessionMessage, Status>> =
                sizes.iter().map(|n| Ok(message(*n))).collect();
            items.extend(end.clone().map(Err));
            let body = Frames {
                messages: Box::pin(futures::stream::iter(items)),
                next: None,
                done: false,
            };
            let mut body = std::pin::pin!(body);
            let mut frames = vec![];
            while let Some(f) =
                std::future::poll_fn(|cx| http_body::Body::poll_frame(body.as_mut(), cx)).await
            {
                frames.push(f.unwrap());
            }
            assert!(http_body::Body::is_end_stream(&*body));
            // Three messages, the big one in two parts, then the trailers.
            assert_eq!(frames.len(), 5);
            let shared_part = frames[2].data_ref().expect("a data frame");
            assert_eq!(shared_part.as_ptr(), shared.as_ptr(), "not a copy");
            // Read back as a client reads the stream: one message after another.
            let mut stream: Vec<u8> = vec![];
            for f in &frames[..4] {
                stream.extend_from_slice(f.data_ref().expect("a data frame"));
            }
            let mut at = &stream[..];
            for n in sizes {
                assert_eq!(at[0], 0, "not compressed");
                let len = u32::from_be_bytes([at[1], at[2], at[3], at[4]]) as usize;
                assert_eq!(SessionMessage::decode(&at[5..5 + len]).unwrap(), message(n));
                at = &at[5 + len..];
            }
            assert!(at.is_empty());
            let t = frames[4].trailers_ref().expect("the trailers");
            let code = end.as_ref().map_or(tonic::Code::Ok, |s| s.code());
            assert_eq!(
                t.get("grpc-status").unwrap(),
                &(code as i32).to_string(),
                "{end:?}"
            );
            assert_eq!(Status::from_header_map(t).map(|s| s.code()), Some(code));
        }
    }
}
