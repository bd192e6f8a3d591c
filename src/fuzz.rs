//! Hostile input for the property tests of everything parsed from the network.
//!
//! Each parser that reads a peer's bytes has a `fuzz` test module beside it
//! (`mesh::dns::fuzz`, `raft::network::fuzz`, `agent::session::fuzz`,
//! `api::dispatcher::fuzz`); they
//! feed it arbitrary bytes and valid messages damaged by the [`Edit`]s made here, and
//! check that it never panics and that what it gives back stays bounded and sane. The
//! edits are the ones that find bugs in hand-written parsers: bit flips, bytes set to
//! the values that mean something in the format (length and pointer bytes for DNS,
//! tags, lengths and group markers for protobuf), insertions, removals and truncations.

use proptest::prelude::*;

/// One change to a message. Positions are taken modulo the message's length at the
/// time of the edit, so any sequence applies to any message.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Flips bit `.1 % 8` of the byte at `.0`.
    Flip(usize, u8),
    /// Sets the byte at `.0`.
    Set(usize, u8),
    /// Inserts bytes before `.0`.
    Insert(usize, Vec<u8>),
    /// Removes the byte at `.0`.
    Remove(usize),
    /// Cuts the message at `.0`.
    Truncate(usize),
}

/// Applies `edits` in order.
pub fn apply(mut msg: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        if msg.is_empty() {
            if let Edit::Insert(_, bytes) = e {
                msg.extend_from_slice(bytes);
            }
            continue;
        }
        let at = |i: &usize| i % msg.len();
        match e {
            Edit::Flip(i, bit) => {
                let i = at(i);
                msg[i] ^= 1 << (bit % 8);
            }
            Edit::Set(i, b) => {
                let i = at(i);
                msg[i] = *b;
            }
            Edit::Insert(i, bytes) => {
                let i = at(i);
                msg.splice(i..i, bytes.iter().copied());
            }
            Edit::Remove(i) => {
                let i = at(i);
                msg.remove(i);
            }
            Edit::Truncate(i) => {
                let i = at(i);
                msg.truncate(i);
            }
        }
    }
    msg
}

/// Up to `max` edits whose bytes are drawn from `alphabet` (or are any byte, one time
/// in four).
pub fn edits(alphabet: &'static [u8], max: usize) -> impl Strategy<Value = Vec<Edit>> {
    let byte = prop_oneof![
        3 => proptest::sample::select(alphabet),
        1 => any::<u8>(),
    ];
    let edit = prop_oneof![
        3 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        3 => (any::<usize>(), byte.clone()).prop_map(|(i, b)| Edit::Set(i, b)),
        2 => (any::<usize>(), proptest::collection::vec(byte, 1..8))
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        1 => any::<usize>().prop_map(Edit::Remove),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ];
    proptest::collection::vec(edit, 1..=max)
}

/// Bytes that mean something in protobuf: tags of fields 1 to 5 of every wire type,
/// group starts and ends, varint continuation and length bytes.
pub const PROTOBUF_BYTES: &[u8] = &[
    0x08, 0x0a, 0x10, 0x12, 0x18, 0x1a, 0x20, 0x22, 0x28, 0x2a, 0x0b, 0x0c, 0x0d, 0x09, 0x00, 0x01,
    0x02, 0x7f, 0x80, 0xff,
];

/// `n` nested protobuf groups of field 15 (start-group tags, then as many end-group
/// tags when `closed`): prost must stop at its recursion limit, not at the stack's end.
pub fn nested_groups(n: usize, closed: bool) -> Vec<u8> {
    let mut data = vec![0x7b; n]; // field 15, wire type 3 (start group)
    if closed {
        data.extend(std::iter::repeat_n(0x7c, n)); // wire type 4 (end group)
    }
    data
}
