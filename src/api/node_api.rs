//! `NodeApi`: served by every node on its cluster port: `Logs` to managers (the node
//! side of `service logs`, [`super::logs`]), `ImageSave` to a node with a task that
//! uses the image ([`super::images`]), `VolumeSave` to a node that takes over a
//! following volume ([`super::volumes`]).

use tonic::{Request, Response, Status};

use super::{auth, images, logs, volumes};
use crate::host::Host;
use crate::net::peer_of;
use crate::proto::{self, LogsRequest};
use crate::store::Role;

/// `NodeApi`: served by every node; `Logs` to managers, `ImageSave` to a node with a
/// task that uses the image ([`super::images`]).
pub struct NodeApi {
    /// The node.
    pub d: Host,
    /// This node's task runner, while it runs one.
    pub runner: crate::agent::RunnerSlot,
}

#[tonic::async_trait]
impl proto::node_api_server::NodeApi for NodeApi {
    type LogsStream = logs::LineStream;
    type ImageSaveStream = images::ChunkStream;
    type VolumeSaveStream = volumes::VolumeChunkStream;

    async fn volume_save(
        &self,
        req: Request<proto::VolumeRequest>,
    ) -> Result<Response<Self::VolumeSaveStream>, Status> {
        volumes::volume_save(&self.d, &self.runner, req).await
    }

    async fn image_save(
        &self,
        req: Request<proto::ImageRequest>,
    ) -> Result<Response<Self::ImageSaveStream>, Status> {
        images::image_save(&self.d, &self.runner, req).await
    }

    async fn volumes(
        &self,
        req: Request<proto::Empty>,
    ) -> Result<Response<proto::NodeVolumes>, Status> {
        auth::require_role(&self.d, &peer_of(&req), Role::Manager)?;
        let Some(runner) = self.runner.get() else {
            return Ok(Response::new(proto::NodeVolumes::default()));
        };
        Ok(Response::new(runner.local_volumes().await?))
    }

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<logs::LineStream>, Status> {
        auth::require_role(&self.d, &peer_of(&req), Role::Manager)?;
        Ok(Response::new(
            logs::node_logs(&self.runner, req.into_inner()).await?,
        ))
    }
}
