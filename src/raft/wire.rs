//! openraft's types ↔ the typed Raft messages of `proto/raft.proto`, as plain
//! conversions in one place (as openraft's own gRPC example keeps them).
//!
//! Encoding ([`From`] openraft → proto) cannot fail. Decoding ([`TryFrom`] proto →
//! openraft) fails with [`Error::InvalidInput`] naming the field when a required part is
//! missing, since the message came from another process: a vote without its leader, an
//! entry without a payload. A normal entry's payload is an orc command's bytes (a
//! protobuf `Command`, `proto/commands.proto`), sent as the [`super::LogCommand`] holds
//! them and decoded once on receipt (the same bytes the log keeps on disk,
//! [`super::log_store`]).

use std::collections::{BTreeMap, BTreeSet};

use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    AnyError, BasicNode, CommittedLeaderId, EntryPayload, ErrorSubject, ErrorVerb, LogId,
    Membership, SnapshotMeta, SnapshotSegmentId, StorageError, StorageIOError, StoredMembership,
    Vote,
};

use super::TypeConfig;
use crate::error::{Error, Result};
use crate::proto;

type Entry = openraft::Entry<TypeConfig>;

fn missing(field: &str) -> Error {
    Error::InvalidInput(format!("raft message: {field} is missing"))
}

fn need<T>(v: Option<T>, field: &str) -> Result<T> {
    v.ok_or_else(|| missing(field))
}

impl From<&CommittedLeaderId<u64>> for proto::LeaderId {
    fn from(l: &CommittedLeaderId<u64>) -> Self {
        proto::LeaderId {
            term: l.term,
            node_id: l.node_id,
        }
    }
}

impl From<proto::LeaderId> for CommittedLeaderId<u64> {
    fn from(l: proto::LeaderId) -> Self {
        CommittedLeaderId::new(l.term, l.node_id)
    }
}

impl From<&Vote<u64>> for proto::Vote {
    fn from(v: &Vote<u64>) -> Self {
        proto::Vote {
            leader_id: Some((&v.leader_id).into()),
            committed: v.committed,
        }
    }
}

impl TryFrom<proto::Vote> for Vote<u64> {
    type Error = Error;
    fn try_from(v: proto::Vote) -> Result<Self> {
        let l = need(v.leader_id, "vote.leader_id")?;
        Ok(Vote {
            leader_id: l.into(),
            committed: v.committed,
        })
    }
}

fn vote(v: Option<proto::Vote>, field: &str) -> Result<Vote<u64>> {
    need(v, field)?.try_into()
}

impl From<&LogId<u64>> for proto::LogId {
    fn from(l: &LogId<u64>) -> Self {
        proto::LogId {
            leader_id: Some((&l.leader_id).into()),
            index: l.index,
        }
    }
}

impl TryFrom<proto::LogId> for LogId<u64> {
    type Error = Error;
    fn try_from(l: proto::LogId) -> Result<Self> {
        let leader = need(l.leader_id, "log_id.leader_id")?;
        Ok(LogId::new(leader.into(), l.index))
    }
}

fn log_id_out(l: &Option<LogId<u64>>) -> Option<proto::LogId> {
    l.as_ref().map(Into::into)
}

fn log_id_in(l: Option<proto::LogId>) -> Result<Option<LogId<u64>>> {
    l.map(TryInto::try_into).transpose()
}

impl From<&Membership<u64, BasicNode>> for proto::Membership {
    fn from(m: &Membership<u64, BasicNode>) -> Self {
        proto::Membership {
            configs: m
                .get_joint_config()
                .iter()
                .map(|c| proto::VoterSet {
                    ids: c.iter().copied().collect(),
                })
                .collect(),
            nodes: m.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
        }
    }
}

impl From<proto::Membership> for Membership<u64, BasicNode> {
    fn from(m: proto::Membership) -> Self {
        let configs: Vec<BTreeSet<u64>> = m
            .configs
            .into_iter()
            .map(|c| c.ids.into_iter().collect())
            .collect();
        let nodes: BTreeMap<u64, BasicNode> = m
            .nodes
            .into_iter()
            .map(|(id, addr)| (id, BasicNode { addr }))
            .collect();
        Membership::new(configs, nodes)
    }
}

impl From<&StoredMembership<u64, BasicNode>> for proto::StoredMembership {
    fn from(m: &StoredMembership<u64, BasicNode>) -> Self {
        proto::StoredMembership {
            log_id: log_id_out(m.log_id()),
            membership: Some(m.membership().into()),
        }
    }
}

impl TryFrom<proto::StoredMembership> for StoredMembership<u64, BasicNode> {
    type Error = Error;
    fn try_from(m: proto::StoredMembership) -> Result<Self> {
        Ok(StoredMembership::new(
            log_id_in(m.log_id)?,
            need(m.membership, "stored_membership.membership")?.into(),
        ))
    }
}

impl From<&Entry> for proto::Entry {
    fn from(e: &Entry) -> Self {
        use proto::entry::Payload;
        let payload = match &e.payload {
            EntryPayload::Blank => Payload::Blank(true),
            EntryPayload::Normal(cmd) => Payload::Normal(cmd.bytes().to_vec()),
            EntryPayload::Membership(m) => Payload::Membership(m.into()),
        };
        proto::Entry {
            log_id: Some((&e.log_id).into()),
            payload: Some(payload),
        }
    }
}

impl TryFrom<proto::Entry> for Entry {
    type Error = Error;
    fn try_from(e: proto::Entry) -> Result<Self> {
        use proto::entry::Payload;
        let payload = match need(e.payload, "entry.payload")? {
            Payload::Blank(_) => EntryPayload::Blank,
            Payload::Normal(bytes) => EntryPayload::Normal(super::LogCommand::decode(bytes)?),
            Payload::Membership(m) => EntryPayload::Membership(m.into()),
        };
        Ok(Entry {
            log_id: need(e.log_id, "entry.log_id")?.try_into()?,
            payload,
        })
    }
}

impl From<&AppendEntriesRequest<TypeConfig>> for proto::AppendEntriesRequest {
    fn from(r: &AppendEntriesRequest<TypeConfig>) -> Self {
        proto::AppendEntriesRequest {
            vote: Some((&r.vote).into()),
            prev_log_id: log_id_out(&r.prev_log_id),
            entries: r.entries.iter().map(Into::into).collect(),
            leader_commit: log_id_out(&r.leader_commit),
        }
    }
}

impl TryFrom<proto::AppendEntriesRequest> for AppendEntriesRequest<TypeConfig> {
    type Error = Error;
    fn try_from(r: proto::AppendEntriesRequest) -> Result<Self> {
        Ok(AppendEntriesRequest {
            vote: vote(r.vote, "append_entries.vote")?,
            prev_log_id: log_id_in(r.prev_log_id)?,
            entries: r
                .entries
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
            leader_commit: log_id_in(r.leader_commit)?,
        })
    }
}

impl From<&AppendEntriesResponse<u64>> for proto::AppendEntriesResponse {
    fn from(r: &AppendEntriesResponse<u64>) -> Self {
        use proto::append_entries_response::Kind;
        let kind = match r {
            AppendEntriesResponse::Success => Kind::Success(true),
            AppendEntriesResponse::PartialSuccess(m) => {
                Kind::PartialSuccess(proto::PartialSuccess {
                    matching: log_id_out(m),
                })
            }
            AppendEntriesResponse::Conflict => Kind::Conflict(true),
            AppendEntriesResponse::HigherVote(v) => Kind::HigherVote(v.into()),
        };
        proto::AppendEntriesResponse { kind: Some(kind) }
    }
}

impl TryFrom<proto::AppendEntriesResponse> for AppendEntriesResponse<u64> {
    type Error = Error;
    fn try_from(r: proto::AppendEntriesResponse) -> Result<Self> {
        use proto::append_entries_response::Kind;
        Ok(match need(r.kind, "append_entries_response.kind")? {
            Kind::Success(_) => AppendEntriesResponse::Success,
            Kind::PartialSuccess(p) => {
                AppendEntriesResponse::PartialSuccess(log_id_in(p.matching)?)
            }
            Kind::Conflict(_) => AppendEntriesResponse::Conflict,
            Kind::HigherVote(v) => AppendEntriesResponse::HigherVote(v.try_into()?),
        })
    }
}

impl From<&VoteRequest<u64>> for proto::VoteRequest {
    fn from(r: &VoteRequest<u64>) -> Self {
        proto::VoteRequest {
            vote: Some((&r.vote).into()),
            last_log_id: log_id_out(&r.last_log_id),
        }
    }
}

impl TryFrom<proto::VoteRequest> for VoteRequest<u64> {
    type Error = Error;
    fn try_from(r: proto::VoteRequest) -> Result<Self> {
        Ok(VoteRequest {
            vote: vote(r.vote, "vote_request.vote")?,
            last_log_id: log_id_in(r.last_log_id)?,
        })
    }
}

impl From<&VoteResponse<u64>> for proto::VoteResponse {
    fn from(r: &VoteResponse<u64>) -> Self {
        proto::VoteResponse {
            vote: Some((&r.vote).into()),
            vote_granted: r.vote_granted,
            last_log_id: log_id_out(&r.last_log_id),
        }
    }
}

impl TryFrom<proto::VoteResponse> for VoteResponse<u64> {
    type Error = Error;
    fn try_from(r: proto::VoteResponse) -> Result<Self> {
        Ok(VoteResponse {
            vote: vote(r.vote, "vote_response.vote")?,
            vote_granted: r.vote_granted,
            last_log_id: log_id_in(r.last_log_id)?,
        })
    }
}

impl From<&SnapshotMeta<u64, BasicNode>> for proto::SnapshotMeta {
    fn from(m: &SnapshotMeta<u64, BasicNode>) -> Self {
        proto::SnapshotMeta {
            last_log_id: log_id_out(&m.last_log_id),
            last_membership: Some((&m.last_membership).into()),
            snapshot_id: m.snapshot_id.clone(),
        }
    }
}

impl TryFrom<proto::SnapshotMeta> for SnapshotMeta<u64, BasicNode> {
    type Error = Error;
    fn try_from(m: proto::SnapshotMeta) -> Result<Self> {
        Ok(SnapshotMeta {
            last_log_id: log_id_in(m.last_log_id)?,
            last_membership: need(m.last_membership, "snapshot_meta.last_membership")?
                .try_into()?,
            snapshot_id: m.snapshot_id,
        })
    }
}

impl From<&InstallSnapshotRequest<TypeConfig>> for proto::InstallSnapshotRequest {
    fn from(r: &InstallSnapshotRequest<TypeConfig>) -> Self {
        proto::InstallSnapshotRequest {
            vote: Some((&r.vote).into()),
            meta: Some((&r.meta).into()),
            offset: r.offset,
            data: r.data.clone(),
            done: r.done,
        }
    }
}

impl TryFrom<proto::InstallSnapshotRequest> for InstallSnapshotRequest<TypeConfig> {
    type Error = Error;
    fn try_from(r: proto::InstallSnapshotRequest) -> Result<Self> {
        Ok(InstallSnapshotRequest {
            vote: vote(r.vote, "install_snapshot.vote")?,
            meta: need(r.meta, "install_snapshot.meta")?.try_into()?,
            offset: r.offset,
            data: r.data,
            done: r.done,
        })
    }
}

impl From<&InstallSnapshotResponse<u64>> for proto::InstallSnapshotResponse {
    fn from(r: &InstallSnapshotResponse<u64>) -> Self {
        proto::InstallSnapshotResponse {
            vote: Some((&r.vote).into()),
        }
    }
}

impl TryFrom<proto::InstallSnapshotResponse> for InstallSnapshotResponse<u64> {
    type Error = Error;
    fn try_from(r: proto::InstallSnapshotResponse) -> Result<Self> {
        Ok(InstallSnapshotResponse {
            vote: vote(r.vote, "install_snapshot_response.vote")?,
        })
    }
}

fn segment_out(s: &SnapshotSegmentId) -> proto::SnapshotSegmentId {
    proto::SnapshotSegmentId {
        id: s.id.clone(),
        offset: s.offset,
    }
}

fn segment_in(s: Option<proto::SnapshotSegmentId>, field: &str) -> Result<SnapshotSegmentId> {
    let s = need(s, field)?;
    Ok(SnapshotSegmentId {
        id: s.id,
        offset: s.offset,
    })
}

/// The wire form of a fatal error of the remote Raft node.
pub fn fatal_out(f: &Fatal<u64>) -> proto::RaftError {
    proto::RaftError {
        kind: Some(proto::raft_error::Kind::Fatal(f.to_string())),
    }
}

/// A fatal error of the remote node: `Stopped` and `Panicked` as such, anything else
/// (a storage error) as a storage error carrying the remote's text.
fn fatal_in(text: String) -> Fatal<u64> {
    match text.as_str() {
        "raft stopped" => Fatal::Stopped,
        "panicked" => Fatal::Panicked,
        _ => Fatal::StorageError(StorageError::IO {
            source: StorageIOError::new(
                ErrorSubject::Store,
                ErrorVerb::Read,
                AnyError::error(format!("on the remote manager: {text}")),
            ),
        }),
    }
}

/// The wire form of the error an install-snapshot call answered.
pub fn install_error_out(e: &RaftError<u64, InstallSnapshotError>) -> proto::RaftError {
    match e {
        RaftError::Fatal(f) => fatal_out(f),
        RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m)) => proto::RaftError {
            kind: Some(proto::raft_error::Kind::SnapshotMismatch(
                proto::SnapshotMismatch {
                    expect: Some(segment_out(&m.expect)),
                    got: Some(segment_out(&m.got)),
                },
            )),
        },
    }
}

/// An error answered by the remote node to a call whose only errors are fatal ones
/// (append entries, vote).
pub fn fatal_error_in(e: proto::RaftError) -> Result<RaftError<u64>> {
    match need(e.kind, "raft_error.kind")? {
        proto::raft_error::Kind::Fatal(text) => Ok(RaftError::Fatal(fatal_in(text))),
        proto::raft_error::Kind::SnapshotMismatch(_) => Err(Error::InvalidInput(
            "raft message: a snapshot mismatch answered a call without snapshots".into(),
        )),
    }
}

/// An error answered by the remote node to an install-snapshot call.
pub fn install_error_in(e: proto::RaftError) -> Result<RaftError<u64, InstallSnapshotError>> {
    Ok(match need(e.kind, "raft_error.kind")? {
        proto::raft_error::Kind::Fatal(text) => RaftError::Fatal(fatal_in(text)),
        proto::raft_error::Kind::SnapshotMismatch(m) => {
            RaftError::APIError(InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
                expect: segment_in(m.expect, "snapshot_mismatch.expect")?,
                got: segment_in(m.got, "snapshot_mismatch.got")?,
            }))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Command;

    fn lid(term: u64, node: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    fn membership() -> Membership<u64, BasicNode> {
        let nodes: BTreeMap<u64, BasicNode> = [
            (1, BasicNode::new("10.0.0.1:4242")),
            (2, BasicNode::new("10.0.0.2:4242")),
            (3, BasicNode::new("10.0.0.3:4242")),
        ]
        .into();
        Membership::new(vec![[1, 2].into(), [1, 2, 3].into()], nodes)
    }

    fn round<O, P>(o: &O) -> O
    where
        for<'a> P: From<&'a O> + prost::Message + Default,
        O: TryFrom<P, Error = Error>,
    {
        let bytes = prost::Message::encode_to_vec(&P::from(o));
        let p = P::decode(bytes.as_slice()).expect("decodes");
        O::try_from(p).expect("converts back")
    }

    #[test]
    fn every_message_comes_back_as_it_went() {
        let v = Vote::new_committed(7, 2);
        let entries = vec![
            Entry {
                log_id: lid(7, 2, 10),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: lid(7, 2, 11),
                payload: EntryPayload::Normal(Command::Noop.into()),
            },
            Entry {
                log_id: lid(7, 2, 12),
                payload: EntryPayload::Membership(membership()),
            },
        ];
        let append = AppendEntriesRequest::<TypeConfig> {
            vote: v,
            prev_log_id: Some(lid(6, 1, 9)),
            entries,
            leader_commit: None,
        };
        let back = round::<_, proto::AppendEntriesRequest>(&append);
        assert_eq!(back.vote, append.vote);
        assert_eq!(back.prev_log_id, append.prev_log_id);
        assert_eq!(back.leader_commit, None);
        assert_eq!(back.entries, append.entries);

        for r in [
            AppendEntriesResponse::Success,
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::PartialSuccess(None),
            AppendEntriesResponse::PartialSuccess(Some(lid(3, 1, 4))),
            AppendEntriesResponse::HigherVote(Vote::new(9, 3)),
        ] {
            assert_eq!(round::<_, proto::AppendEntriesResponse>(&r), r);
        }

        let vr = VoteRequest::new(Vote::new(8, 3), Some(lid(7, 2, 12)));
        assert_eq!(round::<_, proto::VoteRequest>(&vr), vr);
        let vp = VoteResponse {
            vote: Vote::new(8, 3),
            vote_granted: true,
            last_log_id: None,
        };
        assert_eq!(round::<_, proto::VoteResponse>(&vp), vp);

        let snap = InstallSnapshotRequest::<TypeConfig> {
            vote: v,
            meta: SnapshotMeta {
                last_log_id: Some(lid(7, 2, 12)),
                last_membership: StoredMembership::new(Some(lid(7, 2, 12)), membership()),
                snapshot_id: "7-2-12-abc".into(),
            },
            offset: 1 << 20,
            data: vec![1, 2, 3],
            done: false,
        };
        let back = round::<_, proto::InstallSnapshotRequest>(&snap);
        assert_eq!(back.meta, snap.meta);
        assert_eq!(
            (back.offset, back.data, back.done),
            (1 << 20, vec![1, 2, 3], false)
        );
        let sr = InstallSnapshotResponse { vote: v };
        assert_eq!(round::<_, proto::InstallSnapshotResponse>(&sr), sr);
    }

    #[test]
    fn errors_keep_their_kind() {
        let m = RaftError::APIError(InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
            expect: SnapshotSegmentId {
                id: "a".into(),
                offset: 0,
            },
            got: SnapshotSegmentId {
                id: "a".into(),
                offset: 5,
            },
        }));
        assert_eq!(install_error_in(install_error_out(&m)).unwrap(), m);
        let stopped = RaftError::<u64>::Fatal(Fatal::Stopped);
        assert_eq!(fatal_error_in(fatal_out(&Fatal::Stopped)).unwrap(), stopped);
    }

    #[test]
    fn a_message_missing_a_part_is_refused_naming_it() {
        let e = VoteRequest::<u64>::try_from(proto::VoteRequest {
            vote: None,
            last_log_id: None,
        })
        .unwrap_err();
        assert!(e.to_string().contains("vote_request.vote"), "{e}");
        let e = Entry::try_from(proto::Entry {
            log_id: Some((&lid(1, 1, 1)).into()),
            payload: None,
        })
        .unwrap_err();
        assert!(e.to_string().contains("entry.payload"), "{e}");
        let e = Entry::try_from(proto::Entry {
            log_id: Some((&lid(1, 1, 1)).into()),
            payload: Some(proto::entry::Payload::Normal(b"not a command".to_vec())),
        })
        .unwrap_err();
        assert!(e.to_string().contains("not a command"), "{e}");
    }
}
