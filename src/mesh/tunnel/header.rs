//! The bytes of a tunnel handshake: the request header, the plain mode's hello and MAC,
//! the status byte. Pure encoding and decoding; the I/O is in [`super::server`] and
//! [`super::DataPath::connect`].

use ring::hmac;

use crate::error::{Error, Result};
use crate::store::service::Protocol;
use crate::store::{NodeId, TaskId};

/// The first four bytes of a plain-mode hello.
pub const MAGIC: &[u8; 4] = b"ORCT";

/// The plain mode's version byte, after [`MAGIC`].
pub const VERSION: u8 = 1;

/// Bytes of each side's nonce in the plain handshake.
pub const NONCE_LEN: usize = 16;

/// The plain-mode hello: [`MAGIC`], [`VERSION`], the client nonce.
pub const HELLO_LEN: usize = MAGIC.len() + 1 + NONCE_LEN;

/// Bytes of a MAC (HMAC-SHA256).
pub const MAC_LEN: usize = 32;

/// The most bytes a request header may take, its length prefix included.
pub const MAX_HEADER: usize = 512;

/// The longest network id or task id a header may carry, in bytes.
pub const MAX_ID: usize = 128;

/// What the MAC of a plain handshake starts with (domain separation).
const MAC_LABEL: &[u8] = b"orc-tunnel-v1";

/// Where a tunnel should lead on the node it reaches: a task's container port on one
/// of the task's networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// TCP (the stream carries the connection's bytes) or UDP (the stream carries
    /// framed datagrams, [`super::send_datagram`]).
    pub protocol: Protocol,
    /// The container port.
    pub port: u16,
    /// The id of the network the task is reached on (1 to [`MAX_ID`] bytes).
    pub network: String,
    /// The task's id (1 to [`MAX_ID`] bytes).
    pub task: TaskId,
}

/// A request as the serving node sees it: who sent it and where it should lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The sending node. In encrypted mode it is the node its certificate names (a
    /// header that claims another is refused); in plain mode the node whose pair key
    /// signed the header.
    pub from: NodeId,
    /// Where to.
    pub target: Target,
}

/// The server's one-byte answer to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Connected to the backend: the tunnel now carries its bytes.
    Connected = 0,
    /// Refused: no such task, network or port here, or not allowed.
    Refused = 1,
    /// The backend did not accept the connection (another backend may).
    Unavailable = 2,
    /// The caller's authentication failed; the connection closes.
    BadAuth = 3,
}

impl Status {
    /// The status of a byte read from the wire.
    pub fn of_byte(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Connected,
            1 => Status::Refused,
            2 => Status::Unavailable,
            3 => Status::BadAuth,
            _ => return None,
        })
    }
}

impl Request {
    /// The header: `len u16 | from u64 | protocol u8 | port u16 | network_len u8 |
    /// network | task_len u8 | task`, integers big-endian, `len` counting what follows
    /// it. Fails on ids that do not fit.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let t = &self.target;
        check_id("network", t.network.as_bytes())?;
        check_id("task", t.task.0.as_bytes())?;
        let mut b = Vec::with_capacity(16 + t.network.len() + t.task.0.len());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&self.from.0.to_be_bytes());
        b.push(match t.protocol {
            Protocol::Tcp => 0,
            Protocol::Udp => 1,
        });
        b.extend_from_slice(&t.port.to_be_bytes());
        b.push(t.network.len() as u8);
        b.extend_from_slice(t.network.as_bytes());
        b.push(t.task.0.len() as u8);
        b.extend_from_slice(t.task.0.as_bytes());
        let len = u16::try_from(b.len() - 2).expect("ids are bounded");
        b[..2].copy_from_slice(&len.to_be_bytes());
        debug_assert!(b.len() <= MAX_HEADER);
        Ok(b)
    }

    /// Reads a header's body (what follows the length prefix). Every byte must be
    /// used; ids must be UTF-8 of 1 to [`MAX_ID`] bytes.
    pub fn decode(body: &[u8]) -> Result<Request> {
        let mut r = Reader(body);
        let from = NodeId(u64::from_be_bytes(r.take_array()?));
        let protocol = match r.take(1)?[0] {
            0 => Protocol::Tcp,
            1 => Protocol::Udp,
            p => return Err(bad(format!("protocol {p} is neither tcp (0) nor udp (1)"))),
        };
        let port = u16::from_be_bytes(r.take_array()?);
        let network = r.id("network")?;
        let task = TaskId(r.id("task")?);
        if !r.0.is_empty() {
            return Err(bad(format!("{} bytes after the task id", r.0.len())));
        }
        Ok(Request {
            from,
            target: Target {
                protocol,
                port,
                network,
                task,
            },
        })
    }
}

/// The length a header's prefix announces, if it is within [`MAX_HEADER`].
pub fn body_len(prefix: [u8; 2]) -> Result<usize> {
    let len = usize::from(u16::from_be_bytes(prefix));
    if len + 2 > MAX_HEADER {
        return Err(bad(format!(
            "a header of {} bytes (at most {MAX_HEADER})",
            len + 2
        )));
    }
    Ok(len)
}

/// The plain hello a client sends first.
pub fn hello(client_nonce: &[u8; NONCE_LEN]) -> [u8; HELLO_LEN] {
    let mut h = [0u8; HELLO_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4] = VERSION;
    h[5..].copy_from_slice(client_nonce);
    h
}

/// What a plain handshake's MAC covers: `"orc-tunnel-v1" | version | client nonce |
/// server nonce | key id (u32 BE) | header (length prefix included)`.
fn mac_input(
    client_nonce: &[u8; NONCE_LEN],
    server_nonce: &[u8; NONCE_LEN],
    key_id: u32,
    header: &[u8],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(MAC_LABEL.len() + 1 + 2 * NONCE_LEN + 4 + header.len());
    m.extend_from_slice(MAC_LABEL);
    m.push(VERSION);
    m.extend_from_slice(client_nonce);
    m.extend_from_slice(server_nonce);
    m.extend_from_slice(&key_id.to_be_bytes());
    m.extend_from_slice(header);
    m
}

/// The MAC a client sends after the header.
pub fn sign(
    key: &hmac::Key,
    client_nonce: &[u8; NONCE_LEN],
    server_nonce: &[u8; NONCE_LEN],
    key_id: u32,
    header: &[u8],
) -> [u8; MAC_LEN] {
    let tag = hmac::sign(key, &mac_input(client_nonce, server_nonce, key_id, header));
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

/// True when `mac` is the MAC of that handshake under `key` (constant time).
pub fn verify(
    key: &hmac::Key,
    client_nonce: &[u8; NONCE_LEN],
    server_nonce: &[u8; NONCE_LEN],
    key_id: u32,
    header: &[u8],
    mac: &[u8; MAC_LEN],
) -> bool {
    hmac::verify(
        key,
        &mac_input(client_nonce, server_nonce, key_id, header),
        mac,
    )
    .is_ok()
}

fn check_id(what: &str, id: &[u8]) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID {
        return Err(Error::InvalidInput(format!(
            "tunnel request: {what} id of {} bytes (1 to {MAX_ID})",
            id.len()
        )));
    }
    Ok(())
}

fn bad(why: String) -> Error {
    Error::InvalidInput(format!("tunnel header: {why}"))
}

/// A cursor over a header body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(bad("cut short".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn id(&mut self, what: &str) -> Result<String> {
        let n = usize::from(self.take(1)?[0]);
        let raw = self.take(n)?;
        check_id(what, raw).map_err(|_| bad(format!("{what} id of {n} bytes (1 to {MAX_ID})")))?;
        String::from_utf8(raw.to_vec()).map_err(|_| bad(format!("{what} id is not UTF-8")))
    }
}
