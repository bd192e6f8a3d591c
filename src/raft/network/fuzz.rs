//! Hostile bytes against the Raft server's decoding: arbitrary bytes, valid
//! AppendEntries, Vote and InstallSnapshot requests damaged by [`fuzz::Edit`]s and
//! decoded as each of the three (protobuf, then the conversion to openraft's types that
//! the handlers run, [`super::wire`]), and groups nested past any stack in an unknown
//! field. Decoding must return an error or a request that encodes and decodes again to
//! the same bytes, never panic, and refuse 100k levels of nesting without overflowing
//! the stack (prost stops at its recursion limit of 100; a length-delimited unknown
//! field is skipped by its length, without looking inside).

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
            payload: EntryPayload::Normal(Command::AddNode { node }.into()),
        },
        Entry {
            log_id: log_id(3, 14),
            payload: EntryPayload::Normal(
                Command::UpdateTaskStatus {
                    updates: vec![(TaskId("t1".into()), status)],
                }
                .into(),
            ),
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
    [
        proto::AppendEntriesRequest::from(&append()).encode_to_vec(),
        proto::VoteRequest::from(&vote()).encode_to_vec(),
        proto::InstallSnapshotRequest::from(&snapshot()).encode_to_vec(),
    ]
}

/// Decodes `data` as the server does (the message `P`, then openraft's `O`); what
/// decodes must encode and decode again to the same bytes.
fn decodes_sanely<P, O>(data: &[u8]) -> Result<(), crate::Error>
where
    P: Message + Default + for<'a> From<&'a O>,
    O: TryFrom<P, Error = crate::Error>,
{
    let p = P::decode(data).map_err(|e| crate::Error::InvalidInput(e.to_string()))?;
    let o = O::try_from(p)?;
    let once = P::from(&o).encode_to_vec();
    let again = O::try_from(P::decode(once.as_slice()).expect("re-decodes")).expect("converts");
    assert_eq!(P::from(&again).encode_to_vec(), once);
    Ok(())
}

/// `data` decoded as each of the three requests.
fn decode_all(data: &[u8]) -> [bool; 3] {
    [
        decodes_sanely::<proto::AppendEntriesRequest, AppendEntriesRequest<TypeConfig>>(data)
            .is_ok(),
        decodes_sanely::<proto::VoteRequest, VoteRequest<u64>>(data).is_ok(),
        decodes_sanely::<proto::InstallSnapshotRequest, InstallSnapshotRequest<TypeConfig>>(data)
            .is_ok(),
    ]
}

/// `n` length-delimited fields of number 15, each inside the previous one.
fn nested_bytes(n: usize) -> Vec<u8> {
    let mut data: Vec<u8> = vec![];
    for _ in 0..n {
        let mut outer = vec![0x7a]; // field 15, wire type 2
        prost::encoding::encode_varint(data.len() as u64, &mut outer);
        outer.extend_from_slice(&data);
        data = outer;
    }
    data
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
        edits in fuzz::edits(fuzz::PROTOBUF_BYTES, 8),
    ) {
        let data = fuzz::apply(valid()[which].clone(), &edits);
        decode_all(&data);
    }

    #[test]
    fn groups_nested_inside_requests_decode_to_an_error(
        which in 0usize..3,
        at in any::<usize>(),
        depth in 1usize..400,
    ) {
        // Nesting spliced in at any byte.
        let mut data = valid()[which].clone();
        let i = at % (data.len() + 1);
        data.splice(i..i, fuzz::nested_groups(depth, at % 2 == 0));
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

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    for data in [
        fuzz::nested_groups(100_000, false),
        fuzz::nested_groups(100_000, true),
    ] {
        assert_eq!(decode_all(&data), [false; 3]);
    }
}

#[test]
fn deep_nesting_in_an_unknown_field_is_skipped_without_recursion() {
    // An unknown length-delimited field is skipped by its length: 100k levels inside it
    // take no stack and the request still decodes.
    let [_, v, _] = valid();
    let mut data = nested_bytes(100_000);
    data.extend_from_slice(&v);
    assert!(decode_all(&data)[1]);
}

#[test]
fn a_request_that_does_not_convert_is_refused_by_the_server() {
    // A vote request without its vote: protobuf decodes it, the conversion refuses it.
    let data = proto::VoteRequest {
        vote: None,
        last_log_id: None,
    }
    .encode_to_vec();
    assert_eq!(decode_all(&data), [false; 3]);
}
