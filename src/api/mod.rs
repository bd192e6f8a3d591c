//! The control API: the gRPC services a node serves, as thin handlers (decode, check
//! who is calling, route, call the domain function, encode) over the domain functions
//! beside them.
//!
//! Two routers: [`local_router`] for the local unix socket (`Local` and `Control`) and
//! [`cluster_router`] for the cluster port, behind the [`gate`] (`Control`, `Ca`,
//! `Dispatcher`, `NodeApi`, `Raft`).
//!
//! Where things are:
//!
//! - who may call what: [`auth`] (the checks), [`gate`] (run on the cluster port before
//!   a request's body is read, with its size bound);
//! - where a call runs and how it is retried: [`route`] (run on the leader or forward
//!   to it, retry across a failover, request ids that make a retried write apply once,
//!   deadlines of forwarded calls);
//! - one file per service's handlers: [`local`] (`Local`, unix socket only: init, join,
//!   leave, routes, unlock, info), [`control`] (`Control`, socket and cluster port),
//!   [`ca`] (`Ca`, cluster port; `Join` is the one call without a certificate),
//!   [`dispatcher`] (`Dispatcher`, any node of the cluster), [`node_api`] (`NodeApi`,
//!   served by every node) and [`raft`] (`Raft`, managers only; the client side is
//!   [`crate::raft::network`]);
//! - the domain functions they call: [`nodes`] (nodes, join tokens, the CA),
//!   [`services`], [`stacks`], [`networks`], [`keys`] (autolock), [`logs`] (`service logs`),
//!   [`events`] (`orc events`, this manager's stream),
//!   [`images`] (image shipping between nodes); [`convert`] the store's types into
//!   answers.
//!
//! A locked manager (autolock, see [`crate::daemon::keys`]) answers
//! [`crate::daemon::keys::LOCKED`] to every call but `Local.Info` and `Local.Unlock`:
//! the `Local` calls check it, and every `Control` call meets it when it asks the node
//! for its manager runtime.

pub mod auth;
pub mod ca;
pub mod control;
pub mod convert;
pub mod dispatcher;
pub mod events;
pub mod gate;
pub mod images;
pub mod keys;
pub mod local;
pub mod logs;
pub mod networks;
pub mod node_api;
pub mod nodes;
pub mod raft;
mod redacted;
pub mod route;
pub mod secrets;
pub mod services;
pub mod stacks;
pub mod volumes;

use std::time::Duration;

use tonic::transport::server::Router;
use tonic::transport::Server;

use crate::host::Host;
use crate::proto::*;

pub use ca::CaApi;
pub use control::ControlApi;
pub use dispatcher::DispatcherApi;
pub use local::LocalApi;
pub use node_api::NodeApi;

/// The router served on the local unix socket.
pub fn local_router(d: impl Into<Host>) -> Router {
    let d: Host = d.into();
    Server::builder()
        .add_service(
            local_server::LocalServer::new(LocalApi { d: d.clone() })
                .max_decoding_message_size(gate::MAX_CONTROL_REQUEST),
        )
        .add_service(
            control_server::ControlServer::new(ControlApi { d })
                .max_decoding_message_size(gate::MAX_CONTROL_REQUEST),
        )
}

/// Streams one connection to the cluster port may have open at once.
const MAX_STREAMS: u32 = 256;

/// The router served on the cluster port, behind the [`gate`]: who may call each RPC,
/// and how large its request may be, is decided before its body is read. Streams per
/// connection are capped, dead connections found by HTTP/2 pings. As many streams as
/// may be open may be reset before they are served (h2's default, 20, closed a
/// follower's connection to a busy leader, and with it every heartbeat it forwarded,
/// when the nodes' calls timed out).
pub fn cluster_router(
    d: Host,
    runner: crate::agent::RunnerSlot,
) -> Router<tower::layer::util::Stack<gate::GateLayer, tower::layer::util::Identity>> {
    Server::builder()
        .max_concurrent_streams(MAX_STREAMS)
        .http2_max_pending_accept_reset_streams(Some(MAX_STREAMS as usize))
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(gate::GateLayer::new(d.clone()))
        .add_service(
            control_server::ControlServer::new(ControlApi { d: d.clone() })
                .max_decoding_message_size(gate::MAX_CONTROL_REQUEST),
        )
        .add_service(ca_server::CaServer::new(CaApi { d: d.clone() }))
        .add_service(dispatcher::framing::Framed::new(
            DispatcherApi {
                d: d.clone(),
                views: Default::default(),
            },
            8 * 1024 * 1024,
        ))
        .add_service(node_api_server::NodeApiServer::new(NodeApi {
            d: d.clone(),
            runner,
        }))
        .add_service(
            raft_server::RaftServer::new(raft::RaftService::new(d))
                .max_decoding_message_size(gate::MAX_LARGE_REQUEST),
        )
}
