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

/// The key of an applied request (what [`crate::store::State::apply`] reports changed).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::service::ServiceMode;
    use crate::store::{Command, Node, NodeDescription, NodeId, Response, Role, Service};
    use crate::store::{ServiceId, ServiceSpec, State};

    fn id(n: u8) -> RequestId {
        RequestId(format!("{n:032x}"))
    }

    fn spec(replicas: u64) -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            labels: Default::default(),
            mode: ServiceMode::Replicated { replicas },
            task: Default::default(),
            ports: vec![],
            expose: vec![],
            update: Default::default(),
            rollback: Default::default(),
            depends_on: vec![],
            endpoint_mode: Default::default(),
            networks: Default::default(),
        }
    }

    /// What `service scale` proposes against `s`: the next version, the spec it
    /// replaces as the previous one.
    fn scale(s: &State, replicas: u64) -> Command {
        let old = &s.services[&ServiceId("a".into())];
        Command::UpdateService {
            service: Service {
                spec: spec(replicas),
                previous_spec: Some(old.spec.clone()),
                version: old.version + 1,
                ..old.clone()
            },
        }
    }

    fn once(request: RequestId, now_ms: u64, reply: &[u8], cmd: Command) -> Command {
        Command::Once {
            request,
            now_ms,
            reply: Some(reply.to_vec()),
            cmd: Box::new(cmd),
        }
    }

    fn with_service() -> State {
        let mut s = State::default();
        let (r, _) = s.apply(&Command::CreateService {
            service: Service {
                id: ServiceId("a".into()),
                spec: spec(1),
                previous_spec: None,
                version: 1,
                created_ms: 0,
                updated_ms: 0,
                vip: String::new(),
            },
        });
        assert_eq!(r, Response::Ok);
        s
    }

    fn join(node: u64) -> Command {
        Command::AddNode {
            node: Node::new(
                NodeId(node),
                "10.0.0.9:4242",
                Role::Worker,
                NodeDescription::default(),
                0,
            ),
        }
    }

    #[test]
    fn a_retried_update_applies_once_and_gets_the_first_reply() {
        let mut s = with_service();
        let first = once(id(1), 1_000, b"v2", scale(&s, 3));
        assert_eq!(s.apply(&first).0, Response::Ok);
        let after_first = s.clone();
        // The retry, as the handler makes it again on the new state: the next version,
        // the spec of the first attempt as the previous one. Same request: nothing.
        let retry = once(id(1), 1_500, b"v3", scale(&s, 3));
        let (r, keys) = s.apply(&retry);
        assert_eq!(r, Response::Duplicate(Some(b"v2".to_vec())));
        assert!(keys.is_empty(), "{keys:?}");
        assert_eq!(s, after_first);
        // The very same entry twice (a log replayed) changes nothing either.
        assert_eq!(s.apply(&first).0, Response::Duplicate(Some(b"v2".to_vec())));
        assert_eq!(s, after_first);
        let svc = &s.services[&ServiceId("a".into())];
        assert_eq!(
            svc.previous_spec,
            Some(spec(1)),
            "the rollback target is kept"
        );
        assert_eq!(svc.version, 2);

        // Control: another request is another write, and it does overwrite.
        let other = once(id(2), 1_500, b"v3", scale(&s, 3));
        assert_eq!(s.apply(&other).0, Response::Ok);
        let svc = &s.services[&ServiceId("a".into())];
        assert_eq!(svc.previous_spec, Some(spec(3)));
        assert_eq!(svc.version, 3);
    }

    #[test]
    fn a_retried_join_adds_one_node_and_other_joins_add_theirs() {
        let mut s = State::default();
        assert_eq!(s.apply(&once(id(1), 10, b"n1", join(1))).0, Response::Ok);
        let (r, _) = s.apply(&once(id(1), 20, b"n2", join(2)));
        assert_eq!(r, Response::Duplicate(Some(b"n1".to_vec())));
        assert_eq!(s.nodes.keys().collect::<Vec<_>>(), [&NodeId(1)]);
        // Control: different ids both apply.
        assert_eq!(s.apply(&once(id(2), 20, b"n2", join(2))).0, Response::Ok);
        assert_eq!(s.nodes.len(), 2);
        assert_eq!(s.requests.len(), 2);
    }

    #[test]
    fn the_record_is_written_with_the_write_and_reloads() {
        let mut s = with_service();
        let (_, keys) = s.apply(&once(id(1), 1_000, b"v2", scale(&s, 2)));
        assert!(keys.contains(&"service/a".to_string()), "{keys:?}");
        assert!(keys.contains(&request_key(&id(1))), "{keys:?}");
        let mut reloaded = State::default();
        for k in s.keys() {
            reloaded
                .load(&k, &s.value_of(&k).expect("a value"))
                .expect("load");
        }
        assert_eq!(reloaded, s);
        let json = serde_json::to_string(&s).expect("encode");
        assert_eq!(serde_json::from_str::<State>(&json).expect("decode"), s);
    }

    #[test]
    fn a_rejected_write_is_not_recorded_and_may_be_retried() {
        let mut s = State::default();
        let rm = Command::RemoveNode { id: NodeId(1) };
        let (r, _) = s.apply(&once(id(1), 10, b"", rm));
        assert!(matches!(r, Response::Rejected(_)), "{r:?}");
        assert!(s.requests.is_empty());
        assert_eq!(s.apply(&once(id(1), 20, b"", join(1))).0, Response::Ok);
        // A request inside a request is refused.
        let nested = once(id(3), 30, b"", once(id(4), 30, b"", join(4)));
        assert!(matches!(s.apply(&nested).0, Response::Rejected(_)));
        assert!(!s.nodes.contains_key(&NodeId(4)));
    }

    #[test]
    fn ids_are_forgotten_after_their_time_by_the_commands_clock() {
        let mut s = State::default();
        s.apply(&once(id(1), 1_000, b"", join(1)));
        // Just before the end of its time, the id still holds.
        let (r, _) = s.apply(&once(id(1), 1_000 + REQUEST_TTL_MS - 1, b"", join(2)));
        assert_eq!(r, Response::Duplicate(Some(vec![])));
        // At its end it is pruned (and the key deleted), so the same id applies again.
        let (r, keys) = s.apply(&once(id(1), 1_000 + REQUEST_TTL_MS, b"", join(2)));
        assert_eq!(r, Response::Ok);
        assert!(keys.contains(&request_key(&id(1))), "{keys:?}");
        assert_eq!(s.nodes.len(), 2);
        assert_eq!(s.requests[&id(1)].at_ms, 1_000 + REQUEST_TTL_MS);
    }

    #[test]
    fn the_table_keeps_at_most_its_bounds_oldest_first() {
        let entry = |at_ms: u64, bytes: usize| AppliedRequest {
            at_ms,
            reply: Some(vec![0; bytes]),
        };
        let mut table: BTreeMap<RequestId, AppliedRequest> = (0..MAX_REQUESTS as u64)
            .map(|n| (RequestId(format!("{n:032x}")), entry(1_000 + n / 2, 0)))
            .collect();
        // Room under the bound: nothing goes.
        let mut below = table.clone();
        below.remove(&RequestId(format!("{:032x}", 5)));
        assert!(prune(&mut below, 2_000, Some(&entry(2_000, 0))).is_empty());
        // Full: one more pushes out the oldest, ties broken by id.
        let gone = prune(&mut table, 2_000, Some(&entry(2_000, 0)));
        assert_eq!(gone, vec![RequestId(format!("{:032x}", 0))]);
        assert_eq!(table.len(), MAX_REQUESTS - 1);
        // Bytes: a reply that does not fit pushes out as many old ones as it takes.
        let mut table: BTreeMap<RequestId, AppliedRequest> = (0..4u8)
            .map(|n| (id(n), entry(u64::from(n), MAX_REPLY_BYTES / 4)))
            .collect();
        let gone = prune(&mut table, 10, Some(&entry(10, MAX_REPLY_BYTES / 2)));
        assert_eq!(gone, vec![id(0), id(1)]);
        // Through apply: the table never grows past its bound.
        let mut s = State {
            requests: (0..MAX_REQUESTS as u64)
                .map(|n| (RequestId(format!("{n:032x}")), entry(1_000, 0)))
                .collect(),
            ..State::default()
        };
        let fresh = RequestId("f".repeat(32));
        let (r, keys) = s.apply(&once(fresh.clone(), 1_001, b"", join(1)));
        assert_eq!(r, Response::Ok);
        assert_eq!(s.requests.len(), MAX_REQUESTS);
        assert!(s.requests.contains_key(&fresh));
        assert!(!s.requests.contains_key(&RequestId(format!("{:032x}", 0))));
        assert!(keys.contains(&request_key(&RequestId(format!("{:032x}", 0)))));
    }

    #[test]
    fn request_ids_are_32_hex_digits() {
        let fresh = RequestId::random();
        assert_eq!(fresh.0.parse::<RequestId>().expect("parses"), fresh);
        assert_ne!(fresh, RequestId::random());
        for bad in ["", "abc", &"G".repeat(32), &"A".repeat(32), &"a".repeat(33)] {
            assert!(bad.parse::<RequestId>().is_err(), "{bad:?}");
        }
    }
}
