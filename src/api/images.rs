//! Image shipping between nodes ([`crate::agent::images`]): `NodeApi.ImageSave` streams
//! this node's `docker save` of an image to another node of the cluster, and
//! [`PeerFetcher`](crate::agent::images::PeerFetcher) is the calling side the task runner
//! uses.
//!
//! A node may have an image only for its own tasks, and only the content they are
//! pinned to ([`crate::store::image`]). The serving node, often a worker without the
//! state tables, asks the managers (`Dispatcher.CheckImageGrant`, [`check_image_grant`],
//! answered from the store by the leader with [`crate::agent::images::grant`]) whether
//! the caller — named by its verified certificate, never by the request — exists, is
//! not removed, and has a task to run that uses the image; the answer carries the
//! pinned image id. The image is then saved by that id, not by the tag: a tag retagged
//! on the serving node since the pin does not change what is sent. The id goes out in
//! the response metadata ([`IMAGE_ID_KEY`]); the loading node checks it before it
//! loads, and checks the id again after the load. Before the service is pinned (its
//! first tasks) the serving node saves what the reference names now, by that id.
//! Refusals are logged with the caller's id. References are at most
//! [`MAX_REFERENCE`](crate::store::image::MAX_REFERENCE) bytes.
//!
//! The tar goes out in the chunks the engine writes, coalesced while more are ready
//! (at most [`MAX_CHUNK`] a message), with HTTP/2 flow control as back-pressure:
//! neither side holds the whole image.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::auth;
use crate::agent::executor::{Bytes, ImageStream};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::net::peer_of;
use crate::proto::{
    dispatcher_client::DispatcherClient, Chunk, ImageGrant, ImageGrantRequest, ImageRequest,
};
use crate::store::image::{check_reference, is_image_id};
use crate::store::{NodeId, Role};

pub use crate::agent::images::{IMAGE_ID_KEY, MAX_CHUNK};

/// A stream of image chunks.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, Status>> + Send>>;

/// Serves `NodeApi.ImageSave`: only an image one of the caller's tasks uses, saved by
/// the id the managers allow.
pub async fn image_save(
    d: &Host,
    runner: &crate::agent::RunnerSlot,
    req: Request<ImageRequest>,
) -> Result<Response<ChunkStream>, Status> {
    let peer = peer_of(&req);
    auth::require_role(d, &peer, Role::Worker)?;
    let Some(caller) = peer.identity() else {
        return Err(Error::PermissionDenied(
            "ImageSave: the caller's node certificate is required".into(),
        )
        .into());
    };
    let image = req.into_inner().image;
    check_reference(&image)?;
    let grant = ask_grant(d, caller.node_id, &image).await?;
    if !grant.allowed {
        tracing::warn!(peer = %caller.node_id, image, "refused to send an image: {}", grant.reason);
        return Err(Error::PermissionDenied(format!("image {image}: {}", grant.reason)).into());
    }
    let Some(runner) = runner.get() else {
        // Not an error of the transfer: this node has no image to give.
        return Err(
            Error::NotFound(format!("image {image}: this node has no container engine")).into(),
        );
    };
    let id = if grant.image_id.is_empty() {
        // Not pinned yet: what the reference names now, by id.
        match runner.image_info(&image).await? {
            Some(i) => i.id,
            None => {
                return Err(
                    Error::NotFound(format!("image {image}: not present on this node")).into(),
                )
            }
        }
    } else {
        grant.image_id
    };
    if !is_image_id(&id) {
        return Err(Error::Internal(format!("image {image}: unexpected image id {id:?}")).into());
    }
    let tar = runner.save_image(&id).await.map_err(|e| match e {
        Error::NotFound(_) => {
            Error::NotFound(format!("image {image} ({id}): not present on this node"))
        }
        e => e,
    })?;
    tracing::info!(image, id, peer = %caller.node_id, "sending an image to another node");
    let stream: ChunkStream = Box::pin(
        coalesce(tar).map(|r| r.map(|b| Chunk { data: b.to_vec() }).map_err(Status::from)),
    );
    let mut resp = Response::new(stream);
    let value = id
        .parse()
        .map_err(|_| Error::Internal(format!("image id {id}: not a header value")))?;
    resp.metadata_mut().insert(IMAGE_ID_KEY, value);
    Ok(resp)
}

/// Asks the managers whether node `requester` may have `image`.
async fn ask_grant(d: &Host, requester: NodeId, image: &str) -> Result<ImageGrant> {
    let req = ImageGrantRequest {
        node_id: requester.to_string(),
        image: image.to_string(),
    };
    let what = format!("image {image}: whether node {requester} may have it");
    super::route::ask_managers(d, &what, |ch| {
        let req = req.clone();
        async move { DispatcherClient::new(ch).check_image_grant(req).await }
    })
    .await
}

/// Serves `Dispatcher.CheckImageGrant`: any node of the cluster may ask; the leader
/// answers from the store ([`crate::agent::images::grant`]), a follower forwards.
pub async fn check_image_grant(
    d: &Host,
    req: Request<ImageGrantRequest>,
) -> Result<Response<ImageGrant>, Status> {
    auth::require_role(d, &peer_of(&req), Role::Worker)?;
    let r = req.into_inner();
    check_reference(&r.image)?;
    let node: NodeId = r.node_id.parse()?;
    super::route::on_leader(
        d,
        r,
        move |m, r: ImageGrantRequest| async move {
            Ok(m.read(|s| grant_answer(crate::agent::images::grant(s, node, &r.image))))
        },
        |ch, r| async move { DispatcherClient::new(ch).check_image_grant(r).await },
    )
    .await
}

/// The wire form of a grant decision.
fn grant_answer(
    decision: std::result::Result<Option<crate::store::ImagePin>, String>,
) -> ImageGrant {
    match decision {
        Ok(pin) => ImageGrant {
            allowed: true,
            image_id: pin.map(|p| p.id).unwrap_or_default(),
            reason: String::new(),
        },
        Err(reason) => ImageGrant {
            allowed: false,
            image_id: String::new(),
            reason,
        },
    }
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
