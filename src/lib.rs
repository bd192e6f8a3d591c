//! orc: a container orchestrator in one binary, in the spirit of Docker Swarm mode.
//!
//! # A tour
//!
//! A machine runs `orc daemon` ([`daemon`]). The CLI ([`cli`]) talks to its own daemon
//! over a unix socket; `orc init` makes the daemon the first manager of a new cluster,
//! `orc join` adds it to one. From then on, data flows one way:
//!
//! ```text
//! CLI ──gRPC──▶ control API (api) ──validate──▶ Raft propose (raft) ──apply──▶ state tables (store)
//!         leader components (orchestrator, scheduler, dispatcher, membership)
//!         ──▶ agents on every node (agent) ──▶ Docker
//! ```
//!
//! - [`proto`]: the wire: gRPC messages generated from `proto/*.proto`, and their
//!   conversions to and from the store's types in one place ([`proto::convert`]).
//! - [`store`]: the replicated state tables and the commands that change them; apply is a
//!   pure function.
//! - [`raft`]: openraft with its log and state machine on sled, and its network over gRPC.
//! - [`ca`]: the embedded certificate authority, join tokens and the rustls configs
//!   (clients dialing a manager accept only a manager's certificate); root rotation
//!   with a cross-signed transition ([`store::rotation`]).
//! - [`net`]: the local socket, the mTLS cluster port and the channel cache.
//! - [`api`]: the gRPC handlers, one file per service: decode, authorise, route to the
//!   leader ([`api::route`]), call the domain function. On the cluster port a gate
//!   ([`api::gate`]) judges every call by its path and its caller's certificate, checked
//!   against the node table ([`api::auth`]), before the body is read. A write carries a
//!   request id across its retries and applies once ([`manager::once`]).
//! - [`orchestrator`]: services → tasks in slots (restarts, node loss, drain, jobs,
//!   updates); a pure `reconcile` over a snapshot.
//! - [`scheduler`]: pending task → node (filters, then spread and preferences), with an
//!   explanation for what cannot be placed; a pure `schedule` over a snapshot.
//! - [`dispatcher`]: worker sessions on the leader: heartbeats (nodes down), assignment
//!   streams, status batching.
//! - [`agent`]: every node's session with the managers; reports the node; renews its
//!   certificate and switches role; runs its tasks through an `Executor` (Docker).
//! - [`docker`]: the engine connection.
//! - [`mesh`]: the routing mesh: the endpoint table and the user-space proxy every node
//!   runs on each published port.
//! - [`keys`]: keys at rest: the data key that seals the CA key, join secrets and node
//!   keys, the unlock key of autolock, the key files and the data dir's modes.
//! - [`units`]: durations, byte sizes and the clock, read one way everywhere.
//! - [`daemon`]: the node's life cycle: resume, init, join, leave, role changes; it
//!   wires everything, starts the manager runtime with its leader-only components, and
//!   serves the ports.
//! - [`manager`]: the manager runtime the components share: the Raft node, the applied
//!   state, proposals (applied once per request, [`manager::once`]), the leader's
//!   session table and status batcher.
//! - [`host`]: the shared handle: what the agent and the API handlers need of their node
//!   (membership, TLS, peers, the manager runtime, the life-cycle steps), implemented by
//!   the daemon.
//! - [`stack`]: compose files into service specs and a plan.
//!
//! Components do not call each other: they meet in the store, as in SwarmKit.
//!
//! # Layers
//!
//! Imports run one way, top to bottom; a module imports only modules below its line
//! (`tests/layers.rs` holds the code to this order, and CI runs it first):
//!
//! ```text
//! main, cli
//! daemon
//! api
//! stack
//! orchestrator, scheduler, dispatcher
//! agent
//! host
//! manager
//! raft
//! mesh, net
//! ca, keys, docker
//! proto
//! store
//! units, error
//! ```

pub mod agent;
pub mod api;
pub mod ca;
pub mod cli;
pub mod daemon;
pub mod dispatcher;
pub mod docker;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod host;
pub mod keys;
pub mod manager;
pub mod mesh;
pub mod net;
pub mod orchestrator;
pub mod proto;
pub mod raft;
pub mod scheduler;
pub mod stack;
pub mod store;
pub mod units;

pub use error::{Error, Result};
