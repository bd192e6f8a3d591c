//! `Raft`: the server side of the Raft RPCs (the client side and the message codec are
//! [`crate::raft::network`]). Only managers of this cluster may call ([`auth`]).

use super::auth;
use crate::host::Host;
use crate::net::peer_of;
use crate::proto::RaftMessage;
use crate::raft::network::{decode, encode};
use crate::raft::Raft;
use crate::store::Role;

/// The server side: hands authorised requests to the local Raft node, if this node runs
/// one.
pub struct RaftService {
    daemon: Host,
}

impl RaftService {
    /// Serves Raft for the daemon's manager runtime.
    pub fn new(daemon: Host) -> Self {
        RaftService { daemon }
    }

    fn raft<T>(&self, req: &tonic::Request<T>) -> Result<Raft, tonic::Status> {
        auth::require_role(&self.daemon, &peer_of(req), Role::Manager)?;
        Ok(self.daemon.manager()?.raft.clone())
    }
}

#[tonic::async_trait]
impl crate::proto::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        req: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let raft = self.raft(&req)?;
        let r = raft.append_entries(decode(req.into_inner())?).await;
        encode(&r)
    }

    async fn vote(
        &self,
        req: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let raft = self.raft(&req)?;
        let r = raft.vote(decode(req.into_inner())?).await;
        encode(&r)
    }

    async fn install_snapshot(
        &self,
        req: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let raft = self.raft(&req)?;
        let r = raft.install_snapshot(decode(req.into_inner())?).await;
        encode(&r)
    }
}
