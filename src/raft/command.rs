//! [`LogCommand`]: the payload of a normal Raft entry, an orc [`Command`] together with
//! its bytes (`proto/commands.proto`), each made at most once.
//!
//! A command used to be encoded and decoded wherever it crossed a boundary: encoded by
//! the leader's log store on append, decoded again by every read of the log (to apply
//! it, and once per follower to replicate it), encoded again per AppendEntries and per
//! resend, decoded and encoded again by each follower. At 300 nodes this was 40% of the
//! leader's CPU (`perf`: `From<&Entry> for proto::Entry` and `Kind::merge`), enough to
//! starve its Raft heartbeats. Here the bytes travel with the command: the leader
//! encodes each command once when it is proposed (it needed the size anyway) and a batch
//! is the concatenation of its commands' bytes; a follower decodes what it receives once,
//! to check it, and keeps the bytes it received to store them.
//!
//! Cloning is cheap (an `Arc`). The invariant: [`LogCommand::bytes`] is the encoding of
//! [`LogCommand::command`] (a constructor that is handed both trusts its caller: code of
//! this manager; bytes from elsewhere go through [`LogCommand::decode`]).
//!
//! Once an entry is applied, only its bytes are needed (to send it to a follower): the
//! log's memory keeps [`LogCommand::bytes_only`] of it, which shares the bytes and drops
//! the decoded command (decoded again only if it is asked for, which the log's readers
//! do not do for an applied entry).

use std::fmt;
use std::sync::{Arc, OnceLock};

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Result;
use crate::proto::convert::command::{decode, encode};
use crate::store::Command;

/// The field number of `Batch batch` in `message Command` (`proto/commands.proto`).
const BATCH_FIELD: u32 = 30;
/// The field number of `repeated Command cmds` in `message Batch`.
const BATCH_CMDS_FIELD: u32 = 1;

/// A command and its bytes, shared (see the module doc).
#[derive(Clone)]
pub struct LogCommand(Arc<Inner>);

/// At least one of the two is set; the other is made from it when first asked for.
struct Inner {
    /// The command, decoded from `bytes` on first use when not handed in.
    command: OnceLock<Command>,
    /// The encoding of `command`, made on first use when not handed in; shared with the
    /// [`LogCommand::bytes_only`] made of it.
    bytes: OnceLock<Arc<Vec<u8>>>,
}

impl LogCommand {
    /// A command whose bytes are made when first needed.
    pub fn new(command: Command) -> Self {
        LogCommand(Arc::new(Inner {
            command: OnceLock::from(command),
            bytes: OnceLock::new(),
        }))
    }

    /// A command from bytes received or read: decoded (and so checked) once, the bytes
    /// kept as they are.
    pub fn decode(bytes: Vec<u8>) -> Result<Self> {
        let command = decode(&bytes)?;
        Ok(LogCommand(Arc::new(Inner {
            command: OnceLock::from(command),
            bytes: OnceLock::from(Arc::new(bytes)),
        })))
    }

    /// One command already encoded by [`encode`] (`bytes` must be its encoding).
    pub fn encoded(command: Command, bytes: Vec<u8>) -> Self {
        LogCommand(Arc::new(Inner {
            command: OnceLock::from(command),
            bytes: OnceLock::from(Arc::new(bytes)),
        }))
    }

    /// The same command holding only its bytes (shared, not copied): what the log keeps
    /// of an applied entry. Its command is decoded again only if asked for.
    pub fn bytes_only(&self) -> Self {
        self.bytes();
        let bytes = self.0.bytes.get().expect("made just above").clone();
        LogCommand(Arc::new(Inner {
            command: OnceLock::new(),
            bytes: OnceLock::from(bytes),
        }))
    }

    /// Whether the command is held decoded.
    pub fn is_decoded(&self) -> bool {
        self.0.command.get().is_some()
    }

    /// A [`Command::Batch`] of commands already encoded (each `bytes` the encoding of its
    /// command): its bytes are theirs, framed, with no command encoded again.
    pub fn batch(parts: Vec<(Command, Vec<u8>)>) -> Self {
        let framed = |len: usize| 1 + encoded_len_varint(len as u64) + len;
        let inner: usize = parts.iter().map(|(_, b)| framed(b.len())).sum();
        let mut bytes = Vec::with_capacity(2 + encoded_len_varint(inner as u64) + inner);
        encode_key(BATCH_FIELD, WireType::LengthDelimited, &mut bytes);
        encode_varint(inner as u64, &mut bytes);
        let mut cmds = Vec::with_capacity(parts.len());
        for (cmd, b) in parts {
            encode_key(BATCH_CMDS_FIELD, WireType::LengthDelimited, &mut bytes);
            encode_varint(b.len() as u64, &mut bytes);
            bytes.extend_from_slice(&b);
            cmds.push(cmd);
        }
        LogCommand::encoded(Command::Batch { cmds }, bytes)
    }

    /// The command.
    pub fn command(&self) -> &Command {
        self.0.command.get_or_init(|| {
            let bytes = self
                .0
                .bytes
                .get()
                .expect("a command holds its bytes when not itself");
            // The bytes are this manager's encoding of a command, or bytes that decoded
            // before ([`LogCommand::decode`]): they decode again.
            decode(bytes).expect("the bytes of a command decode")
        })
    }

    /// Its bytes as a Raft entry carries them.
    pub fn bytes(&self) -> &[u8] {
        self.0
            .bytes
            .get_or_init(|| Arc::new(encode(self.command())))
    }
}

impl From<Command> for LogCommand {
    fn from(command: Command) -> Self {
        LogCommand::new(command)
    }
}

impl fmt::Debug for LogCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.command().fmt(f)
    }
}

impl PartialEq for LogCommand {
    fn eq(&self, other: &Self) -> bool {
        self.command() == other.command()
    }
}

impl Eq for LogCommand {}

/// As the command itself: the JSON of log entries and snapshots written before this type
/// reads back unchanged.
impl Serialize for LogCommand {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.command().serialize(s)
    }
}

impl<'de> Deserialize<'de> for LogCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Command::deserialize(d).map(LogCommand::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NodeId, Role};

    fn some_commands() -> Vec<Command> {
        vec![
            Command::Noop,
            Command::RemoveNode { id: NodeId(7) },
            Command::UpdateNodeSpec {
                id: NodeId(3),
                role: Some(Role::Manager),
                availability: None,
                labels_add: [("zone".to_string(), "b".to_string())].into(),
                labels_rm: vec!["old".into()],
            },
        ]
    }

    #[test]
    fn a_batch_of_encoded_commands_is_the_encoding_of_the_batch() {
        let cmds = some_commands();
        let parts = cmds.iter().map(|c| (c.clone(), encode(c))).collect();
        let batch = LogCommand::batch(parts);
        let whole = Command::Batch { cmds: cmds.clone() };
        assert_eq!(batch.command(), &whole);
        assert_eq!(batch.bytes(), encode(&whole).as_slice());
        assert_eq!(decode(batch.bytes()).expect("decodes"), whole);
        // A large batch: lengths of more than one varint byte.
        let many: Vec<Command> = (0..500)
            .map(|i| Command::RemoveNode { id: NodeId(i) })
            .collect();
        let parts = many.iter().map(|c| (c.clone(), encode(c))).collect();
        let whole = Command::Batch { cmds: many };
        assert_eq!(LogCommand::batch(parts).bytes(), encode(&whole).as_slice());
    }

    #[test]
    fn bytes_are_made_once_and_decoding_refuses_what_is_not_a_command() {
        let c = LogCommand::new(Command::RemoveNode { id: NodeId(9) });
        let first = c.bytes().as_ptr();
        assert_eq!(c.clone().bytes().as_ptr(), first, "shared, not made again");
        let back = LogCommand::decode(c.bytes().to_vec()).expect("decodes");
        assert_eq!(back, c);
        // Positive control above; here bytes that are not a command.
        assert!(LogCommand::decode(vec![0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn bytes_only_shares_the_bytes_and_decodes_the_command_again_when_asked() {
        for cmd in some_commands() {
            let full = LogCommand::new(cmd.clone());
            let light = full.bytes_only();
            assert!(
                full.is_decoded(),
                "positive control: the first holds its command"
            );
            assert!(!light.is_decoded(), "the command dropped");
            assert_eq!(light.bytes().as_ptr(), full.bytes().as_ptr(), "shared");
            assert_eq!(light.command(), &cmd, "decoded again when asked for");
            assert!(light.is_decoded());
        }
    }

    #[test]
    fn json_is_the_commands_own() {
        let cmd = Command::RemoveNode { id: NodeId(4) };
        let json = serde_json::to_string(&LogCommand::new(cmd.clone())).expect("json");
        assert_eq!(json, serde_json::to_string(&cmd).expect("json"));
        let back: LogCommand = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back.command(), &cmd);
    }
}
