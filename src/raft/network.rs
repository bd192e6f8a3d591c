//! The Raft RPCs over the cluster's mTLS gRPC connections.
//!
//! openraft's requests and responses travel as the typed messages of `proto/raft.proto`
//! (conversions in [`super::wire`]). The client side ([`Network`]) dials a manager
//! through the shared [`Peers`] channel cache; the server side
//! (`crate::api::raft::RaftService`) accepts only callers whose certificate says
//! `manager` for this cluster, then hands the request to openraft.

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use prost::Message;

use super::{wire, TypeConfig};
use crate::net::Peers;
use crate::proto::{self, raft_client::RaftClient};

/// Builds a [`Connection`] per target manager.
#[derive(Clone)]
pub struct Network {
    peers: Peers,
}

impl Network {
    /// A network over the given channel cache.
    pub fn new(peers: Peers) -> Self {
        Network { peers }
    }
}

/// The client side of Raft to one manager.
pub struct Connection {
    peers: Peers,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;
    async fn new_client(&mut self, _target: u64, node: &BasicNode) -> Connection {
        Connection {
            peers: self.peers.clone(),
            addr: node.addr.clone(),
        }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<u64, BasicNode, RaftError<u64, E>>;

impl Connection {
    /// A client to the target manager, or why it is unreachable.
    // openraft's error type is what `RaftNetwork` returns; boxing it here would only
    // move the size.
    #[allow(clippy::result_large_err)]
    fn client<E: std::error::Error>(
        &self,
    ) -> Result<RaftClient<tonic::transport::Channel>, RpcErr<E>> {
        let ch = self
            .peers
            .channel(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        Ok(RaftClient::new(ch)
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE))
    }

    /// The call's failure in openraft's terms: a manager that cannot be reached is
    /// forgotten by the channel cache (and reported unreachable, so openraft backs off).
    fn failed<E: std::error::Error>(&self, s: tonic::Status) -> RpcErr<E> {
        if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown {
            self.peers.forget(&self.addr);
            RPCError::Unreachable(Unreachable::new(&crate::Error::from(s)))
        } else {
            RPCError::Network(NetworkError::new(&crate::Error::from(s)))
        }
    }
}

/// Refuses a message over [`MAX_RAFT_MESSAGE`] before it is sent: openraft sends fewer
/// entries when told, and the gate of the receiving manager would refuse it anyway.
#[allow(clippy::result_large_err)] // openraft's error type, as `client` above
fn check_size<E: std::error::Error>(len: usize, entries: usize) -> Result<(), RpcErr<E>> {
    if len > MAX_RAFT_MESSAGE {
        return Err(RPCError::PayloadTooLarge(
            PayloadTooLarge::new_entries_hint(entries_hint(entries, len)),
        ));
    }
    Ok(())
}

fn remote<E: std::error::Error>(e: RaftError<u64, E>) -> RpcErr<E> {
    RPCError::RemoteError(openraft::error::RemoteError::new(0, e))
}

fn bad_answer<E: std::error::Error>(e: crate::Error) -> RpcErr<E> {
    RPCError::Network(NetworkError::new(&e))
}

/// The largest encoded Raft message sent or accepted (below the gate's limit for
/// `Raft.*`, which counts the gRPC framing too). Snapshots travel in chunks of
/// [`SNAPSHOT_CHUNK`] bytes, a few MB once JSON-encoded.
pub const MAX_RAFT_MESSAGE: usize = MAX_RAFT_REQUEST - 64 * 1024;

/// The largest Raft request the cluster port accepts, gRPC framing included: the gate's
/// limit for `Raft.*` (`crate::api::gate::MAX_LARGE_REQUEST`).
pub const MAX_RAFT_REQUEST: usize = 16 * 1024 * 1024;

/// The size an AppendEntries of several entries is kept under (one entry goes alone
/// whatever its size, up to [`MAX_RAFT_MESSAGE`]). openraft gives an AppendEntries one
/// heartbeat interval (100 ms) to be answered: an append of several MB on a busy machine
/// missed it every time and was sent again for ever, so that nothing committed.
pub const APPEND_BYTES: usize = 2 << 20;

/// The size of one snapshot chunk (openraft's `snapshot_max_chunk_size`).
pub const SNAPSHOT_CHUNK: u64 = 1024 * 1024;

/// How many entries to send next after `entries` entries made a message of `len` bytes,
/// too large: scaled to fit with room to spare, at least 1.
pub fn entries_hint(entries: usize, len: usize) -> u64 {
    let fit = entries as f64 * MAX_RAFT_MESSAGE as f64 / len.max(1) as f64;
    ((fit / 2.0) as u64).clamp(1, entries.saturating_sub(1).max(1) as u64)
}

#[cfg(test)]
mod limits {
    use super::*;

    #[test]
    fn a_batch_over_the_limit_is_split_to_fit_and_never_to_nothing() {
        // 500 entries in 32 MiB: about 125 next time (half of what would just fit).
        let n = entries_hint(500, 2 * MAX_RAFT_MESSAGE);
        assert!((100..=130).contains(&n), "{n}");
        // Always fewer than were sent, at least one.
        assert_eq!(entries_hint(2, 100 * MAX_RAFT_MESSAGE), 1);
        assert_eq!(entries_hint(1, 2 * MAX_RAFT_MESSAGE), 1);
        assert!(entries_hint(10, MAX_RAFT_MESSAGE + 1) < 10);
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcErr> {
        let msg = proto::AppendEntriesRequest::from(&rpc);
        let len = msg.encoded_len();
        check_size(len, rpc.entries.len())?;
        // openraft waits one heartbeat interval for the answer: send no more than can be
        // answered in it (see [`APPEND_BYTES`]).
        if len > APPEND_BYTES && rpc.entries.len() > 1 {
            let fit = (rpc.entries.len() * APPEND_BYTES / len).max(1);
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fit.min(rpc.entries.len() - 1) as u64),
            ));
        }
        let reply = self
            .client()?
            .append_entries(msg)
            .await
            .map_err(|s| self.failed(s))?
            .into_inner();
        match reply.result {
            Some(proto::append_entries_reply::Result::Ok(r)) => r.try_into().map_err(bad_answer),
            Some(proto::append_entries_reply::Result::Err(e)) => {
                Err(remote(wire::fatal_error_in(e).map_err(bad_answer)?))
            }
            None => Err(bad_answer(crate::Error::InvalidInput(
                "raft message: append_entries_reply.result is missing".into(),
            ))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcErr<InstallSnapshotError>> {
        let msg = proto::InstallSnapshotRequest::from(&rpc);
        check_size(msg.encoded_len(), 0)?;
        let reply = self
            .client()?
            .install_snapshot(msg)
            .await
            .map_err(|s| self.failed(s))?
            .into_inner();
        match reply.result {
            Some(proto::install_snapshot_reply::Result::Ok(r)) => r.try_into().map_err(bad_answer),
            Some(proto::install_snapshot_reply::Result::Err(e)) => {
                Err(remote(wire::install_error_in(e).map_err(bad_answer)?))
            }
            None => Err(bad_answer(crate::Error::InvalidInput(
                "raft message: install_snapshot_reply.result is missing".into(),
            ))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcErr> {
        let msg = proto::VoteRequest::from(&rpc);
        let reply = self
            .client()?
            .vote(msg)
            .await
            .map_err(|s| self.failed(s))?
            .into_inner();
        match reply.result {
            Some(proto::vote_reply::Result::Ok(r)) => r.try_into().map_err(bad_answer),
            Some(proto::vote_reply::Result::Err(e)) => {
                Err(remote(wire::fatal_error_in(e).map_err(bad_answer)?))
            }
            None => Err(bad_answer(crate::Error::InvalidInput(
                "raft message: vote_reply.result is missing".into(),
            ))),
        }
    }
}

#[cfg(test)]
mod fuzz;
