//! Image shipping between nodes ([`crate::agent::images`]): `NodeApi.ImageSave` streams
//! this node's `docker save` of an image to another node of the cluster, and
//! [`PeerFetcher`] is the calling side the task runner uses.
//!
//! Any node of the cluster may call (a worker certificate suffices): the image is what
//! the caller's own tasks are assigned to run. The tar goes out in the chunks the engine
//! writes, coalesced while more are ready (at most [`MAX_CHUNK`] a message), with
//! HTTP/2 flow control as back-pressure: neither side holds the whole image.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Status};

use super::auth;
use crate::agent::executor::{Bytes, ImageStream};
use crate::agent::images::ImageFetcher;
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::net::peer_of;
use crate::proto::{node_api_client::NodeApiClient, Chunk, ImageRequest};
use crate::store::Role;

/// The most bytes put into one `Chunk`.
pub const MAX_CHUNK: usize = 1024 * 1024;

/// The largest message the fetching side accepts (a chunk and then some).
const MAX_MSG: usize = 4 * MAX_CHUNK;

/// A stream of image chunks.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, Status>> + Send>>;

/// Serves `NodeApi.ImageSave`.
pub async fn image_save(d: &Daemon, req: Request<ImageRequest>) -> Result<ChunkStream, Status> {
    auth::require_role(d, &peer_of(&req), Role::Worker)?;
    let image = req.into_inner().image;
    if image.is_empty() {
        return Err(Error::InvalidInput("image: a reference is required".into()).into());
    }
    let Some(runner) = d.runner() else {
        // Not an error of the transfer: this node has no image to give.
        return Err(
            Error::NotFound(format!("image {image}: this node has no container engine")).into(),
        );
    };
    let tar = runner.save_image(&image).await?;
    tracing::info!(image, "sending an image to another node");
    Ok(Box::pin(coalesce(tar).map(|r| {
        r.map(|b| Chunk { data: b.to_vec() }).map_err(Status::from)
    })))
}

/// Joins the chunks that are ready at once, up to [`MAX_CHUNK`] (a larger one passes as
/// it is); an error ends the stream.
fn coalesce(tar: ImageStream) -> impl Stream<Item = Result<Bytes>> {
    tar.ready_chunks(64).flat_map(|batch| {
        let mut out: Vec<Result<Bytes>> = vec![];
        let mut buf: Vec<u8> = vec![];
        for item in batch {
            match item {
                Ok(b) => {
                    if !buf.is_empty() && buf.len() + b.len() > MAX_CHUNK {
                        out.push(Ok(Bytes::from(std::mem::take(&mut buf))));
                    }
                    buf.extend_from_slice(&b);
                }
                Err(e) => {
                    if !buf.is_empty() {
                        out.push(Ok(Bytes::from(std::mem::take(&mut buf))));
                    }
                    out.push(Err(e));
                    break;
                }
            }
        }
        if !buf.is_empty() {
            out.push(Ok(Bytes::from(buf)));
        }
        futures::stream::iter(out)
    })
}

/// The task runner's [`ImageFetcher`]: `NodeApi.ImageSave` over the cluster's mTLS.
pub struct PeerFetcher {
    /// The daemon (its peers' channels).
    pub d: Daemon,
}

#[tonic::async_trait]
impl ImageFetcher for PeerFetcher {
    async fn fetch(&self, addr: &str, image: &str) -> Result<ImageStream> {
        let ch = self.d.peers().node_channel(addr)?;
        let r = NodeApiClient::new(ch)
            .max_decoding_message_size(MAX_MSG)
            .image_save(ImageRequest {
                image: image.to_string(),
            })
            .await;
        let s = match r {
            Ok(s) => s,
            Err(e) => {
                if e.code() == tonic::Code::Unavailable {
                    self.d.peers().forget(addr);
                }
                return Err(Error::from(e));
            }
        };
        Ok(s.into_inner()
            .map(|c| c.map(|c| Bytes::from(c.data)).map_err(Error::from))
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(items: Vec<Result<Bytes>>) -> Vec<std::result::Result<usize, String>> {
        let s = futures::stream::iter(items).boxed();
        futures::executor::block_on(
            coalesce(s)
                .map(|r| r.map(|b| b.len()).map_err(|e| e.to_string()))
                .collect(),
        )
    }

    #[test]
    fn ready_chunks_are_joined_up_to_the_limit() {
        let small = || Ok(Bytes::from(vec![0u8; 1000]));
        assert_eq!(run(vec![small(), small(), small()]), vec![Ok(3000)]);
        let big = || Ok(Bytes::from(vec![0u8; MAX_CHUNK - 10]));
        assert_eq!(
            run(vec![big(), small(), small(), big()]),
            vec![Ok(MAX_CHUNK - 10), Ok(2000), Ok(MAX_CHUNK - 10)]
        );
        let huge = Ok(Bytes::from(vec![0u8; 3 * MAX_CHUNK]));
        assert_eq!(run(vec![huge]), vec![Ok(3 * MAX_CHUNK)]);
    }

    #[test]
    fn an_error_ends_the_stream_after_what_came_before() {
        let r = run(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(Error::Unavailable("engine went away".into())),
            Ok(Bytes::from_static(b"never")),
        ]);
        assert_eq!(r, vec![Ok(3), Err("engine went away".into())]);
    }
}
