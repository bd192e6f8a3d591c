//! Consensus: openraft 0.9 with the log and the state machine on sled.
//!
//! Managers are Raft voters; workers are not members of Raft at all (they talk to the
//! dispatcher). The pieces:
//!
//! - [`command`]: the payload of a normal entry, a command with its bytes.
//! - [`log_store`]: the Raft log, vote and commit index in sled (`raft_log`, `raft_meta`
//!   trees of a db of their own, `raft` in the data dir). Appends are flushed before
//!   openraft is told they are durable; that flush writes the log only.
//! - [`state_machine`]: applies committed [`Command`]s to the [`State`] tables, keeps them
//!   in memory for reads and in sled (`sm` tree) for restarts, builds and installs
//!   snapshots (`snapshot` tree).
//! - [`network`]: the Raft RPCs over the cluster's mTLS gRPC connections.
//! - [`recovery`]: `orc init --force-new-cluster`, the rewrite of a survivor's log that
//!   restarts it as the only voter after its cluster lost quorum for good.
//!
//! Both stores pass openraft's conformance `Suite` (see the tests in each module).

pub mod command;
pub mod log_store;
pub mod network;
pub mod recovery;
pub mod state_machine;
pub mod wire;

use crate::store::Response;
#[allow(unused_imports)]
use crate::store::State;
pub use command::LogCommand;

openraft::declare_raft_types!(
    /// The openraft type configuration of orc.
    pub TypeConfig:
        D = LogCommand,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A running Raft node.
pub type Raft = openraft::Raft<TypeConfig>;
