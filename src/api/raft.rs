//! `Raft`: the server side of the Raft RPCs (the client side is
//! [`crate::raft::network`], the message conversions [`crate::raft::wire`]). Only
//! managers of this cluster may call ([`auth`]); a request that does not convert to
//! openraft's types is refused as the caller's error.

use openraft::error::RaftError;

use super::auth;
use crate::host::Host;
use crate::net::peer_of;
use crate::proto;
use crate::raft::{wire, Raft};
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

/// A request that does not convert is refused as the caller's fault.
fn invalid(e: crate::Error) -> tonic::Status {
    tonic::Status::invalid_argument(e.to_string())
}

#[tonic::async_trait]
impl proto::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        req: tonic::Request<proto::AppendEntriesRequest>,
    ) -> Result<tonic::Response<proto::AppendEntriesReply>, tonic::Status> {
        use proto::append_entries_reply::Result as R;
        let raft = self.raft(&req)?;
        let rpc = req.into_inner().try_into().map_err(invalid)?;
        let result = match raft.append_entries(rpc).await {
            Ok(r) => R::Ok((&r).into()),
            Err(RaftError::Fatal(f)) => R::Err(wire::fatal_out(&f)),
            Err(RaftError::APIError(never)) => match never {},
        };
        Ok(tonic::Response::new(proto::AppendEntriesReply {
            result: Some(result),
        }))
    }

    async fn vote(
        &self,
        req: tonic::Request<proto::VoteRequest>,
    ) -> Result<tonic::Response<proto::VoteReply>, tonic::Status> {
        use proto::vote_reply::Result as R;
        let raft = self.raft(&req)?;
        let rpc = req.into_inner().try_into().map_err(invalid)?;
        let result = match raft.vote(rpc).await {
            Ok(r) => R::Ok((&r).into()),
            Err(RaftError::Fatal(f)) => R::Err(wire::fatal_out(&f)),
            Err(RaftError::APIError(never)) => match never {},
        };
        Ok(tonic::Response::new(proto::VoteReply {
            result: Some(result),
        }))
    }

    async fn install_snapshot(
        &self,
        req: tonic::Request<proto::InstallSnapshotRequest>,
    ) -> Result<tonic::Response<proto::InstallSnapshotReply>, tonic::Status> {
        use proto::install_snapshot_reply::Result as R;
        let raft = self.raft(&req)?;
        let rpc = req.into_inner().try_into().map_err(invalid)?;
        let result = match raft.install_snapshot(rpc).await {
            Ok(r) => R::Ok((&r).into()),
            Err(e) => R::Err(wire::install_error_out(&e)),
        };
        Ok(tonic::Response::new(proto::InstallSnapshotReply {
            result: Some(result),
        }))
    }
}
