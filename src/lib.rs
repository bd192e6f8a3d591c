//! orc: a container orchestrator in one binary, in the spirit of Docker Swarm mode.
//!
//! # A tour
//!
//! A machine runs `orc daemon`. The CLI talks to its own daemon over a unix socket;
//! `orc init` makes the daemon the first manager of a new cluster, `orc join` adds it to
//! one. From then on, data flows one way:
//!
//! ```text
//! CLI ──gRPC──▶ control API (api) ──validate──▶ Raft propose (manager, raft) ──apply──▶ state tables (store)
//!         leader components (orchestrator, scheduler, dispatcher)
//!         ──▶ agents on every node (agent) ──▶ Docker
//!         ──▶ the routing mesh on every node (mesh)
//! ```
//!
//! `docs/architecture.md` follows one service through these hops, file by file. The
//! modules, top to bottom (a module imports only modules below it; see [Layers](#layers)):
//!
//! - [`cli`]: what the operator types: clap commands, progress, tables and
//!   `--format json` (built from the typed answers; field → flag names in messages,
//!   [`cli::fields`]).
//! - [`daemon`]: the node's life cycle: resume, init, join, leave, role changes; it
//!   wires everything, starts the manager runtime with its leader-only components
//!   (the pipeline, [`daemon::pipeline`]), and serves the ports.
//! - [`api`]: the gRPC handlers, one file per service: decode, authorise, route to the
//!   leader ([`api::route`]), call the domain function ([`api::services`],
//!   [`api::stacks`], [`api::networks`], [`api::nodes`]). On the cluster port a gate ([`api::gate`]) judges
//!   every call by its path and its caller's certificate, checked against the node table
//!   ([`api::auth`]), before the body is read.
//! - [`stack`]: compose files (`stack::compose`) into service specs, and the plan of a
//!   deploy ([`stack::plan`]), applied in one Raft entry.
//! - [`orchestrator`]: services → tasks in slots (restarts, node loss, drain, jobs,
//!   rolling updates, convergence); a pure `reconcile` over a snapshot.
//! - [`scheduler`]: pending task → node (filters, then spread and preferences), with an
//!   explanation for what cannot be placed; a pure `schedule` over a snapshot.
//! - [`dispatcher`]: worker sessions on the leader: heartbeats (nodes down), assignment
//!   streams, status batching.
//! - [`agent`]: every node's session with the managers; reports the node; renews its
//!   certificate and switches role; runs its tasks ([`agent::runner`]) through Docker
//!   ([`agent::docker_exec`]), loading images from peers when it cannot pull
//!   ([`agent::images`]).
//! - [`host`]: the shared handle: what the agent and the API handlers need of their node
//!   (membership, TLS, peers, the manager runtime, the life-cycle steps), implemented by
//!   the daemon.
//! - [`manager`]: the manager runtime the components share: the Raft node, the applied
//!   state, proposals (applied once per request, [`manager::once`]), the leader's
//!   session table and status batcher.
//! - [`raft`]: openraft with its log and state machine on sled, and its network over gRPC
//!   in typed messages ([`raft::wire`]).
//! - [`mesh`]: the routing mesh: the endpoint table ([`mesh::table`]), the user-space
//!   proxy every node runs on each published port and on each virtual IP, and the
//!   cluster DNS ([`mesh::dns`]) that answers service and task names with those IPs.
//! - [`net`]: the local socket, the mTLS cluster port and the channel cache.
//! - [`metrics`]: the Prometheus registry the parts count into, and the `/metrics`
//!   endpoint (`orc daemon --metrics-addr`).
//! - [`ca`]: the embedded certificate authority, join tokens and the rustls configs
//!   (clients dialing a manager accept only a manager's certificate).
//! - [`keys`]: keys at rest: the data key that seals the CA key, join secrets and node
//!   keys, the unlock key of autolock, the key files and the data dir's modes.
//! - [`docker`]: the engine connection.
//! - [`proto`]: the wire: gRPC messages generated from `proto/*.proto`, and their
//!   conversions to and from the store's types ([`proto::convert`]; a type above `proto`
//!   converts beside itself: [`agent::wire`], [`mesh::wire`], [`raft::wire`]).
//! - [`store`]: the replicated state tables ([`store::State`]), the commands that change
//!   them ([`store::Command`]) and apply, a pure function per table (`store::apply`);
//!   the service spec and its validation ([`store::service`]), networks
//!   ([`store::network`]), virtual IPs
//!   ([`store::vip`]), CA rotation ([`store::rotation`]).
//! - [`units`]: durations, byte sizes and the clock, read one way everywhere;
//!   [`error`]: the one error type.
//!
//! Components do not call each other: they meet in the store, as in SwarmKit.
//!
//! # Where is …
//!
//! | behaviour | file |
//! |---|---|
//! | `service create` flags → a spec | `src/cli/service/spec.rs` (flags in `args.rs`) |
//! | `--format json` keys (the contract) | `src/cli/service/view.rs`, `src/cli/node.rs` |
//! | compose keys: supported, warned, refused | `src/stack/compose/keys.rs` |
//! | atomic stack apply | `src/stack/plan.rs` (plan), `src/store/apply/service.rs` (one entry) |
//! | spec validation, port conflicts | `src/store/service/validate.rs`, `src/store/service/ports.rs` (`ingress_port_conflict`) |
//! | who may call what | `src/api/gate.rs`, `src/api/auth.rs` |
//! | routing a call to the leader, retries | `src/api/route.rs` (`on_leader`), `src/error.rs` (kinds) |
//! | writes applied once | `src/manager/once.rs`, `src/store/request.rs` |
//! | join token check | `src/api/nodes.rs` (`ca_join`), `src/ca/token.rs` |
//! | certificates, CA rotation | `src/ca/mod.rs`, `src/api/ca.rs`, `src/store/rotation.rs`, `src/api/nodes.rs` |
//! | keys at rest, autolock | `src/keys/mod.rs`, `src/daemon/keys.rs`, `src/manager/keys.rs` |
//! | VIP allocation | `src/store/vip.rs`, at apply in `src/store/apply/service.rs` |
//! | networks: names → ids, create/rm, in use | `src/api/networks.rs`, `src/store/network.rs`, `src/store/apply/network.rs` |
//! | a stack's networks | `src/stack/compose/networks.rs` (keys), `src/stack/plan.rs` (`plan_networks`), `src/api/stacks.rs` |
//! | Raft log and entries on disk | `src/raft/log_store.rs`, `src/raft/wire.rs`, `src/proto/convert/command.rs` |
//! | replicas, restarts, node loss | `src/orchestrator/` (`replicated.rs`, `restart.rs`, `slot.rs`) |
//! | rolling update and rollback | `src/orchestrator/update.rs` |
//! | convergence (what `service create` waits for) | `src/orchestrator/progress.rs` |
//! | placement and constraints | `src/scheduler/filter.rs`, `src/store/constraint.rs`, `src/scheduler/spread.rs` |
//! | node down | `src/dispatcher/mod.rs` (`run_monitor`) |
//! | assignments to a worker | `src/dispatcher/session.rs`, `src/agent/session.rs` |
//! | a task's container, step by step | `src/agent/runner/worker.rs`, `src/agent/docker_exec.rs` |
//! | image loading from a peer | `src/agent/images.rs`, `src/agent/image_tar.rs`, `src/store/image.rs` |
//! | backend choice in the mesh | `src/mesh/mod.rs` (`Backends`) |
//! | service and task names (DNS) | `src/mesh/dns.rs`, names from `src/mesh/table.rs` |
//! | who may use a VIP or the DNS (per network) | `src/mesh/clients.rs`, `src/mesh/dns.rs` (`names_for`) |
//! | a task on another node: the data path | `src/mesh/tunnel.rs` (+ `tunnel/`), `src/mesh/table.rs` (`reach`), keys in `src/dispatcher/session.rs` (`data_keys`) |
//! | a network's bridge on a node, isolation rules | `src/agent/networks.rs` |
//! | container options (caps, sysctls, ulimits, dns, ...) and generic resources | `src/store/service/options.rs` (model, checks), `src/agent/container_opts.rs` (Docker), `src/cli/service/options.rs` (flags), `src/stack/compose/options.rs` (keys), `src/mesh/clients.rs` (`dns_of`), `src/scheduler/filter.rs` (`lacked gpu`) |
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
//! metrics
//! store
//! units, error
//! ```

pub mod agent;
pub mod api;
pub mod backup;
pub mod ca;
pub mod cli;
pub mod daemon;
pub mod dashboard;
pub mod dispatcher;
pub mod docker;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod host;
pub mod keys;
pub mod manager;
pub mod mesh;
pub mod metrics;
pub mod net;
pub mod orchestrator;
pub mod proto;
pub mod raft;
pub mod scheduler;
pub mod stack;
pub mod store;
#[cfg(test)]
#[path = "../tests/common/ports.rs"]
mod test_ports;
pub mod units;

pub use error::{Error, Result};
