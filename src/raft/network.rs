//! The Raft RPCs over the cluster's mTLS gRPC connections.
//!
//! openraft's request and response types travel as JSON inside a `RaftMessage` (see
//! `proto/raft.proto`). The client side ([`Network`]) dials a manager through the shared
//! [`Peers`] channel cache; the server side (`crate::api::raft::RaftService`) accepts only callers
//! whose certificate says `manager` for this cluster, then hands the request to openraft
//! through [`decode`] and [`encode`].

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::TypeConfig;
use crate::net::Peers;
use crate::proto::raft_client::RaftClient;
use crate::proto::RaftMessage;

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
    async fn call<Req, Resp, E>(
        &self,
        which: Which,
        req: &Req,
        entries: usize,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if data.len() > MAX_RAFT_MESSAGE {
            // openraft sends fewer entries when told; the gate of the receiving manager
            // would refuse the message anyway.
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries_hint(entries, data.len())),
            ));
        }
        let ch = self
            .peers
            .channel(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut client = RaftClient::new(ch)
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE);
        let msg = RaftMessage { data };
        let resp = match which {
            Which::Append => client.append_entries(msg).await,
            Which::Vote => client.vote(msg).await,
            Which::Snapshot => client.install_snapshot(msg).await,
        };
        let resp = resp.map_err(|s| {
            if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown {
                self.peers.forget(&self.addr);
                RPCError::Unreachable(Unreachable::new(&crate::Error::from(s)))
            } else {
                RPCError::Network(NetworkError::new(&crate::Error::from(s)))
            }
        })?;
        let r: Result<Resp, RaftError<u64, E>> = serde_json::from_slice(&resp.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        r.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(0, e)))
    }
}

/// The largest encoded Raft message sent or accepted (below the gate's limit for
/// `Raft.*`, which counts the gRPC framing too). Snapshots travel in chunks of
/// [`SNAPSHOT_CHUNK`] bytes, a few MB once JSON-encoded.
pub const MAX_RAFT_MESSAGE: usize = MAX_RAFT_REQUEST - 64 * 1024;

/// The largest Raft request the cluster port accepts, gRPC framing included: the gate's
/// limit for `Raft.*` (`crate::api::gate::MAX_LARGE_REQUEST`).
pub const MAX_RAFT_REQUEST: usize = 16 * 1024 * 1024;

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

enum Which {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcErr> {
        let n = rpc.entries.len();
        self.call(Which::Append, &rpc, n).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcErr<InstallSnapshotError>> {
        self.call(Which::Snapshot, &rpc, 0).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcErr> {
        self.call(Which::Vote, &rpc, 0).await
    }
}

/// Decodes a Raft request or answer from its message (the server side: a malformed
/// message is the caller's error).
pub fn decode<T: DeserializeOwned>(m: RaftMessage) -> Result<T, tonic::Status> {
    serde_json::from_slice(&m.data).map_err(|e| tonic::Status::invalid_argument(e.to_string()))
}

#[cfg(test)]
mod fuzz;

/// Encodes a Raft answer into its message.
pub fn encode<T: Serialize>(v: &T) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
    let data = serde_json::to_vec(v).map_err(|e| tonic::Status::internal(e.to_string()))?;
    Ok(tonic::Response::new(RaftMessage { data }))
}
