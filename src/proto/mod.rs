//! The wire: the types generated from `proto/*.proto` and their conversions to and
//! from the store's types ([`convert`]).
//!
//! The store's Rust structs are the authority; a protobuf message is their wire view.
//! Store → wire is a plain `From`; wire → store is a `TryFrom` that rejects what cannot
//! be a valid value (an unknown enum number, a port above 65535, a missing mode) with
//! [`crate::Error::InvalidInput`] naming the field. This module sits low in the crate: it
//! imports [`crate::store`] and nothing above it, so that the control API, the
//! dispatcher's sessions and Raft entries can all use the same messages.

/// The generated types and services.
#[allow(missing_docs, clippy::all)]
mod generated {
    tonic::include_proto!("orc");
}

pub use generated::*;

pub mod convert;
