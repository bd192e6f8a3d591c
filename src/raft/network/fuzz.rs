//! Hostile bytes in a `RaftMessage` against the server's [`decode`]: arbitrary bytes,
//! valid AppendEntries, Vote and InstallSnapshot requests damaged by [`fuzz::Edit`]s
//! and decoded as each of the three, and JSON nested past any stack. Decoding must
//! return an error or a request that encodes and decodes again to the same bytes,
//! never panic, and refuse 100k levels of nesting without overflowing the stack: a
//! typed field refuses a wrong shape long before serde_json's recursion limit (128)
//! would, and an unknown field's value is skipped by a loop, not by recursion.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership, Vote,
};
use proptest::prelude::*;

use super::*;
use crate::fuzz;
use crate::store::{Command, NodeDescription, NodeId, Role, TaskId, TaskState, TaskStatus};

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn membership() -> Membership<u64, BasicNode> {
    let nodes: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|id| (id, BasicNode::new(format!("10.0.0.{id}:4242"))))
        .collect();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

fn append() -> AppendEntriesRequest<TypeConfig> {
    let node = crate::store::Node::new(
        NodeId(7),
        "10.0.0.7:4242",
        Role::Worker,
        NodeDescription::default(),
        1_000,
    );
    let status = TaskStatus::new(TaskState::Running, "started", 2_000);
    let entries = vec![
        Entry {
            log_id: log_id(3, 11),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(3, 12),
            payload: EntryPayload::Membership(membership()),
        },
        Entry {
            log_id: log_id(3, 13),
            payload: EntryPayload::Normal(Command::AddNode { node }),
        },
        Entry {
            log_id: log_id(3, 14),
            payload: EntryPayload::Normal(Command::UpdateTaskStatus {
                updates: vec![(TaskId("t1".into()), status)],
            }),
        },
    ];
    AppendEntriesRequest {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(log_id(3, 10)),
        entries,
        leader_commit: Some(log_id(3, 9)),
    }
}

fn vote() -> VoteRequest<u64> {
    VoteRequest::new(Vote::new(4, 2), Some(log_id(3, 14)))
}

fn snapshot() -> InstallSnapshotRequest<TypeConfig> {
    InstallSnapshotRequest {
        vote: Vote::new_committed(3, 1),
        meta: SnapshotMeta {
            last_log_id: Some(log_id(3, 14)),
            last_membership: StoredMembership::new(Some(log_id(3, 12)), membership()),
            snapshot_id: "3-14-1".into(),
        },
        offset: 0,
        data: br#"{"state":{}}"#.to_vec(),
        done: true,
    }
}

/// The three requests, as their senders encode them.
fn valid() -> [Vec<u8>; 3] {
    let json = |v: serde_json::Result<Vec<u8>>| v.expect("a request encodes");
    [
        json(serde_json::to_vec(&append())),
        json(serde_json::to_vec(&vote())),
        json(serde_json::to_vec(&snapshot())),
    ]
}

/// Decodes `data` as `T` as the server does; what decodes must encode and decode
/// again to the same bytes.
fn decodes_sanely<T: Serialize + DeserializeOwned>(data: &[u8]) -> Result<(), tonic::Status> {
    let v: T = decode(RaftMessage {
        data: data.to_vec(),
    })?;
    let once = serde_json::to_vec(&v).expect("a decoded request encodes");
    let again: T = decode(RaftMessage { data: once.clone() }).expect("re-decodes");
    assert_eq!(serde_json::to_vec(&again).expect("encodes"), once);
    Ok(())
}

/// `data` decoded as each of the three requests.
fn decode_all(data: &[u8]) -> [bool; 3] {
    [
        decodes_sanely::<AppendEntriesRequest<TypeConfig>>(data).is_ok(),
        decodes_sanely::<VoteRequest<u64>>(data).is_ok(),
        decodes_sanely::<InstallSnapshotRequest<TypeConfig>>(data).is_ok(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_decode_to_an_error(
        data in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        decode_all(&data);
    }

    #[test]
    fn damaged_requests_decode_to_an_error_or_a_request(
        which in 0usize..3,
        edits in fuzz::edits(fuzz::JSON_BYTES, 8),
    ) {
        let data = fuzz::apply(valid()[which].clone(), &edits);
        decode_all(&data);
    }

    #[test]
    fn requests_nested_inside_fields_decode_to_an_error(
        which in 0usize..3,
        at in any::<usize>(),
        depth in 1usize..400,
    ) {
        // Nesting spliced in where a value may start.
        let mut data = valid()[which].clone();
        let starts: Vec<usize> = data
            .iter()
            .enumerate()
            .filter(|(_, b)| matches!(b, b':' | b'[' | b','))
            .map(|(i, _)| i + 1)
            .collect();
        let i = starts[at % starts.len()];
        data.splice(i..i, fuzz::nested_arrays(depth, at % 2 == 0));
        decode_all(&data);
    }
}

#[test]
fn valid_requests_decode() {
    // Decoded as another request, a message may decode too (missing options are
    // None, unknown fields are skipped); the RPC says which one it is.
    let [a, v, s] = valid();
    assert!(decode_all(&a)[0]);
    assert!(decode_all(&v)[1]);
    assert!(decode_all(&s)[2]);
}

/// The error `decode` gives for `data` as `T`.
fn refused<T: DeserializeOwned>(data: &[u8]) -> tonic::Status {
    decode::<T>(RaftMessage {
        data: data.to_vec(),
    })
    .err()
    .expect("refused")
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    for data in [
        fuzz::nested_arrays(100_000, false),
        fuzz::nested_arrays(100_000, true),
        fuzz::nested_objects("vote", 100_000),
        fuzz::nested_objects("entries", 100_000),
        fuzz::nested_objects("meta", 100_000),
    ] {
        for e in [
            refused::<AppendEntriesRequest<TypeConfig>>(&data),
            refused::<VoteRequest<u64>>(&data),
            refused::<InstallSnapshotRequest<TypeConfig>>(&data),
        ] {
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
        }
    }
}

#[test]
fn deep_nesting_in_an_unknown_field_is_skipped_without_recursion() {
    // serde_json skips an unknown field's value with a loop, not recursion: 100k levels
    // take no stack and the request still decodes.
    let [_, v, _] = valid();
    let mut data = b"{\"unknown\":".to_vec();
    data.extend(fuzz::nested_arrays(100_000, true));
    data.push(b',');
    data.extend_from_slice(&v[1..]);
    let r = decode::<VoteRequest<u64>>(RaftMessage { data });
    assert!(r.is_ok(), "{r:?}");
}
