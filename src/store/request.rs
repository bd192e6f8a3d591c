//! Applied requests: what makes a retried control write apply once.
//!
//! A write of the control API (and a join) carries a request id, made by the first
//! manager that received the call and kept across its retries (see
//! `crate::daemon::once`). The leader proposes the write wrapped in
//! [`super::Command::Once`], which names the request: applying it records the id,
//! with the reply the caller got, in the **same entry** as the write, so there is no
//! moment where the write is applied and its id is not. A second entry with a known
//! id applies nothing and answers [`super::Response::Duplicate`] with the first reply.
//!
//! The table is bounded and pruned deterministically inside `apply`, by the time the
//! proposer stamped on the command (never the clock): an id is kept for
//! [`REQUEST_TTL_MS`], far longer than a forwarded call may be retried (8 s), and there
//! are at most [`MAX_REQUESTS`] ids whose replies weigh at most [`MAX_REPLY_BYTES`] in
//! all; beyond that the oldest go first (ties broken by id).
//!
//! Only a write that applied is recorded: a command rejected at apply changed nothing,
//! so its retry may try again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How long an applied request id is remembered, in ms of the proposers' clocks.
pub const REQUEST_TTL_MS: u64 = 10 * 60 * 1000;

/// At most this many request ids are remembered.
pub const MAX_REQUESTS: usize = 10_000;

/// The replies remembered weigh at most this many bytes in all.
pub const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

/// A request id: 32 lower-case hex digits (128 random bits).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub String);

impl RequestId {
    /// A fresh random id.
    pub fn random() -> RequestId {
        RequestId(hex::encode(rand::random::<[u8; 16]>()))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for RequestId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(RequestId(s.to_string()))
        } else {
            Err(Error::InvalidInput(format!(
                "request id {:?}: expected 32 lower-case hex digits",
                s.chars().take(64).collect::<String>()
            )))
        }
    }
}

/// A request that was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRequest {
    /// When it was applied: the proposer's unix ms.
    pub at_ms: u64,
    /// The reply the caller got (protobuf bytes), `None` when the reply is a read made
    /// after the write, which a retry makes again.
    pub reply: Option<Vec<u8>>,
}

/// The key of an applied request in the `sm` tree.
pub fn request_key(id: &RequestId) -> String {
    format!("request/{id}")
}

/// Forgets the requests older than [`REQUEST_TTL_MS`] at `now_ms`, then, if `room`
/// more would not fit in the bounds, the oldest until they do. Returns the ids
/// forgotten. Deterministic: it depends only on the table, `now_ms` and `room`.
pub fn prune(
    requests: &mut BTreeMap<RequestId, AppliedRequest>,
    now_ms: u64,
    room: Option<&AppliedRequest>,
) -> Vec<RequestId> {
    let mut gone: Vec<RequestId> = requests
        .iter()
        .filter(|(_, r)| r.at_ms.saturating_add(REQUEST_TTL_MS) <= now_ms)
        .map(|(id, _)| id.clone())
        .collect();
    for id in &gone {
        requests.remove(id);
    }
    let Some(new) = room else {
        return gone;
    };
    let weight = |r: &AppliedRequest| r.reply.as_ref().map_or(0, Vec::len);
    let mut count = requests.len() + 1;
    let mut bytes: usize = requests.values().map(weight).sum::<usize>() + weight(new);
    if count <= MAX_REQUESTS && bytes <= MAX_REPLY_BYTES {
        return gone;
    }
    let mut by_age: Vec<(u64, RequestId)> = requests
        .iter()
        .map(|(id, r)| (r.at_ms, id.clone()))
        .collect();
    by_age.sort();
    for (_, id) in by_age {
        if count <= MAX_REQUESTS && bytes <= MAX_REPLY_BYTES {
            break;
        }
        if let Some(r) = requests.remove(&id) {
            count -= 1;
            bytes -= weight(&r);
            gone.push(id);
        }
    }
    gone
}
