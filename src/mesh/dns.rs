//! Service discovery by name: a small DNS server, its messages read and written with
//! `hickory-proto`, its transport and forwarding our own (see the last section).
//!
//! # Which names exist
//!
//! The server knows no policy: the caller decides the names and hands the whole set over
//! with [`DnsServer::set_names`] (a [`Names`] map, replaced atomically, effective for the
//! next query without a restart). The intended set, for a zone such as `orc.internal`:
//!
//! - `NAME` and `NAME.<zone>` → the virtual IP of service `NAME`;
//! - `tasks.NAME` and `tasks.NAME.<zone>` → the addresses of the service's running tasks,
//!   in the order given (answered with a TTL of 1 s, since tasks come and go; every other
//!   name has a TTL of 10 s);
//! - services of a stack as `SHORT.<stack>.<zone>`: a container whose resolv.conf lists
//!   `search <stack>.<zone> <zone>` reaches `SHORT` with a short name, because its stub
//!   resolver tries `SHORT.<stack>.<zone>` first.
//!
//! Names are case-insensitive and a trailing dot is ignored; the question is echoed with
//! its case preserved (resolvers that randomise case check it). Only IPv4 `A` records are
//! served: `A` and `ANY` queries get one record per address, any other type of a known
//! name gets an empty NOERROR answer (NODATA), so `AAAA` lookups end at once.
//!
//! # Who is answered
//!
//! In the mesh, the server answers only this node's own containers
//! ([`DnsServer::set_clients`]), each with the names of the networks it is on
//! ([`DnsServer::set_networks`]): a service on no network of the container's does not
//! exist for it (NXDOMAIN). Any other source gets REFUSED and nothing is forwarded for
//! it. Without clients set (tests), every source gets the names of [`DnsServer::set_names`].
//!
//! # The zone
//!
//! The server is authoritative for `<zone>`: a name under it that is not in the set gets
//! NXDOMAIN with AA set, so a stub resolver walking its search list moves on to the next
//! domain at once instead of waiting for the outside world. The zone itself, and a name
//! that only has names below it (`<stack>.<zone>` when `web.<stack>.<zone>` exists), get
//! NODATA rather than NXDOMAIN, since a denial would, per RFC 8020, also deny the names
//! below.
//!
//! # Forwarding
//!
//! Any other query goes, unchanged, to the upstream nameservers (usually the host's, see
//! [`upstreams_from_resolv_conf`]; for a container whose service names its own `dns`
//! servers, those instead, see [`Clients::dns_of`]), over UDP from a fresh ephemeral socket, tried in
//! order with a 2 s timeout each. The first reply carrying the query's ID is relayed to
//! the client byte for byte; if no upstream answers, the client gets SERVFAIL. The
//! caller must not list an address that leads back to this server (it would loop);
//! the server's own bound address is dropped from the list.
//!
//! # Transports
//!
//! UDP and TCP are served on the same address, both sockets with `SO_REUSEADDR` and
//! `SO_REUSEPORT`, so the daemons of several nodes of one cluster on one machine can
//! share it. On UDP a reply to one of our names that exceeds 512 bytes (only with
//! dozens of addresses) is cut to the question with TC set, and the client retries over
//! TCP, where the full answer is sent. TCP carries 2-byte length-prefixed messages,
//! any number per connection, until EOF or 10 s of idleness; a forwarded query whose UDP
//! reply comes back truncated is retried over TCP to the same upstream. At most
//! [`MAX_TCP_CONNS`] connections are served at once (a further one is closed as soon
//! as it is accepted), and a message's buffer grows as its bytes arrive, not to the
//! length announced: a client that announces 64 KiB and sends nothing costs nothing.
//!
//! Malformed queries with a complete header get FORMERR (NOTIMP for an opcode other than
//! QUERY); packets shorter than a header, and responses (QR set, which could otherwise
//! bounce between two servers forever), are dropped. Only the first question is read
//! (its name may use compression pointers anywhere in the message, at most 64 of them,
//! 255 bytes on the wire at most); whatever follows it is ignored.
//!
//! # What hickory does here, and what it does not
//!
//! `hickory-proto` (0.26, feature `std` only: no crypto provider, no TLS, no runtime)
//! reads the header and the question's type and class, and writes every reply: header
//! flags and response codes ([`ResponseCode`]), the question (a hickory [`Query`]),
//! and the A records. Three parts stay our own, each for a reason measured on
//! hickory 0.26.3:
//!
//! - **The question's name is read by `parse_name`**, not `Name::read`: hickory
//!   takes only compression pointers to bytes before the name (a strict reading of
//!   RFC 1035 §4.1.4), the server has always followed them anywhere (the tests check
//!   it). Over the fuzz corpus of `dns/fuzz.rs` (2,000 packets per strategy, the
//!   deterministic runner), `Query::read` rejected 183 of the 860 pointer mazes and
//!   27 of the 1,015 hostile packets whose question this server reads, and accepted
//!   none that it calls malformed. Switching is a one-line change in `read_question`
//!   plus those tests, if the stricter rule is wanted.
//! - **A records are written by `QuestionA`** (owner = a pointer to the question,
//!   then hickory's own `RecordType`, `DNSClass` and `A` encoders), not as hickory
//!   `Record`s: hickory's encoder compresses at most 120 names per message and writes
//!   each later owner in full, 39 bytes a record instead of 16. Measured with
//!   `Message::to_vec` for `tasks.huge.orc.internal` with 5,000 addresses: 1,749
//!   records in 65,531 bytes with TC set, where this server sends 4,093 untruncated
//!   within the same 64 KiB TCP frame.
//! - **No `hickory-server` and no `hickory-resolver`.** hickory-server's `Server`
//!   accepts sockets we bind (so SO_REUSEPORT would survive), but in 0.26.3 (read in
//!   `server/mod.rs`): `handle_tcp` spawns a task for every accepted connection with
//!   no cap ([`MAX_TCP_CONNS`] would be lost), `handle_udp` a task for every packet
//!   (no `MAX_FORWARDS`), and a handler answers through `ResponseHandler` with a
//!   `MessageResponse` hickory re-encodes, so an upstream's reply cannot be relayed
//!   byte for byte. It parses the whole request first (`MessageRequest::read`, as
//!   `Message::from_vec` does): over the same corpus that rejects 423 of 2,000 valid
//!   queries (those claiming more questions than they carry, or with bytes after the
//!   question), which it would answer FORMERR where this server answers the first
//!   question. hickory-resolver would answer forwarded queries from its own lookup
//!   and cache, re-encoded, rather than relay the upstream's reply. The transport
//!   below is therefore our own: about 280 lines of tokio (`DnsServer` to `write_frame`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hickory_proto::op::{
    emit_message_parts, Header, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_proto::ProtoError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::clients::Clients;
use crate::store::NetworkId;

/// The names of each network, as [`DnsServer::set_networks`] takes them.
pub type NetworkNames = BTreeMap<NetworkId, BTreeMap<String, Vec<Ipv4Addr>>>;

/// The most distinct sets of networks whose merged names are kept at once.
const MAX_VIEWS: usize = 1024;

/// How long each upstream has to answer a forwarded query.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// A TCP connection is closed after this long without a complete query.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// The largest reply sent over UDP (no EDNS).
pub const UDP_LIMIT: usize = 512;
/// TTL of `tasks.*` records, in seconds.
pub const TTL_TASKS: u32 = 1;
/// TTL of every other record, in seconds.
pub const TTL_DEFAULT: u32 = 10;
/// Forwarded UDP queries in flight at once; beyond this, SERVFAIL at once.
const MAX_FORWARDS: usize = 1024;
/// TCP connections served at once; a further one is closed when accepted.
pub const MAX_TCP_CONNS: usize = 256;

/// Bytes in a message header; the first question starts there.
const HEADER_LEN: usize = 12;
/// The longest name on the wire, root byte included (RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;
/// Compression pointers followed in one name before it counts as malformed.
const MAX_POINTERS: usize = 64;
/// Bytes of one A record whose owner is a pointer to the question.
const A_RECORD_LEN: usize = 16;

/// What the server answers itself: lower-cased names → IPv4 addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// Lower-case name without trailing dot → its addresses, in answer order.
    addrs: HashMap<String, Vec<Ipv4Addr>>,
    /// Every proper suffix of a name in `addrs` (`b.c` and `c` for `a.b.c`): names that
    /// exist in the tree without records of their own.
    interior: HashSet<String>,
    /// Names that do not exist for this client (the cluster's names on networks it is
    /// not on): NXDOMAIN, never forwarded.
    denied: HashSet<String>,
}

impl Names {
    /// Sets the addresses of `name` (case-insensitive, trailing dot ignored), replacing
    /// any it had. An empty list makes the name exist without addresses (NODATA).
    pub fn insert(&mut self, name: &str, addrs: Vec<Ipv4Addr>) {
        let key = normalize(name);
        let mut rest = key.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            self.interior.insert(parent.to_string());
            rest = parent;
        }
        self.addrs.insert(key, addrs);
    }

    /// Makes `name` not exist: NXDOMAIN, and not forwarded (unless it has addresses).
    pub fn deny(&mut self, name: &str) {
        self.denied.insert(normalize(name));
    }

    /// The addresses of `name` (case-insensitive, trailing dot ignored).
    pub fn lookup(&self, name: &str) -> Option<&[Ipv4Addr]> {
        self.addrs.get(&normalize(name)).map(Vec::as_slice)
    }

    /// Whether some name lies below `name` (already normalised).
    fn has_below(&self, name: &str) -> bool {
        self.interior.contains(name)
    }
}

fn normalize(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

/// The lower-case presentation form of a name's labels, without trailing dot; bytes
/// that are not printable ASCII, dots and backslashes inside a label are written
/// `\DDD`, so such names never match a plain one.
fn name_text<'a>(labels: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut out = String::new();
    for (i, label) in labels.into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        for &b in label {
            if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                out.push(b.to_ascii_lowercase() as char);
            } else {
                out.push_str(&format!("\\{b:03}"));
            }
        }
    }
    out
}

/// Reads the name at `start`, following compression pointers (anywhere in the
/// message, at most [`MAX_POINTERS`] of them); returns its labels and the offset just
/// past it in the original position. Kept by hand rather than hickory's `Name::read`,
/// which takes only pointers to earlier bytes (see the module doc).
fn parse_name(msg: &[u8], start: usize) -> Option<(Vec<Vec<u8>>, usize)> {
    let mut labels = Vec::new();
    let mut pos = start;
    let mut end = None;
    let mut pointers = 0;
    let mut wire_len = 1;
    loop {
        let len = *msg.get(pos)? as usize;
        match len & 0xC0 {
            0x00 if len == 0 => {
                return Some((labels, end.unwrap_or(pos + 1)));
            }
            0x00 => {
                let label = msg.get(pos + 1..pos + 1 + len)?;
                wire_len += len + 1;
                if wire_len > MAX_NAME {
                    return None;
                }
                labels.push(label.to_vec());
                pos += 1 + len;
            }
            0xC0 => {
                let target = ((len & 0x3F) << 8) | usize::from(*msg.get(pos + 1)?);
                end.get_or_insert(pos + 2);
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return None;
                }
                pos = target;
            }
            _ => return None,
        }
    }
}

/// The header of `msg`; None when it is shorter than a header.
fn read_header(msg: &[u8]) -> Option<Header> {
    Header::read(&mut BinDecoder::new(msg)).ok()
}

/// The first question of `msg` (its name as sent, pointers expanded); None when there
/// is none or it is malformed. Further questions are not read.
fn read_question(msg: &[u8], header: &Header) -> Option<Query> {
    if header.counts.queries == 0 {
        return None;
    }
    let (labels, at) = parse_name(msg, HEADER_LEN)?;
    let mut decoder = BinDecoder::new(msg.get(at..)?);
    let qtype = RecordType::read(&mut decoder).ok()?;
    let qclass = DNSClass::read(&mut decoder).ok()?;
    let name = Name::from_labels(labels).ok()?;
    let mut query = Query::query(name, qtype);
    query.set_query_class(qclass);
    Some(query)
}

/// A reply of ours before it is written: hickory's header fields, the question echoed
/// (none when it could not be read), and A records owned by the question's name.
struct Reply {
    metadata: Metadata,
    question: Option<Query>,
    answers: Vec<QuestionA>,
}

impl Reply {
    /// An empty reply to a query with `header`: same ID and opcode, RD and CD copied,
    /// RA set.
    fn to(header: &Header, question: Option<Query>, rcode: ResponseCode, aa: bool) -> Reply {
        let mut metadata = Metadata::response_from_request(&header.metadata);
        metadata.recursion_available = true;
        metadata.authoritative = aa;
        metadata.response_code = rcode;
        Reply {
            metadata,
            question,
            answers: Vec::new(),
        }
    }

    /// The reply's bytes; None (and a log line) if hickory cannot write it, which the
    /// sizes kept here rule out.
    fn encode(&self) -> Option<Vec<u8>> {
        let mut buf = Vec::with_capacity(UDP_LIMIT);
        let written = emit_message_parts(
            &self.metadata,
            &mut self.question.iter(),
            &mut self.answers.iter(),
            &mut std::iter::empty::<&QuestionA>(),
            &mut std::iter::empty::<&QuestionA>(),
            None,
            None,
            &mut BinEncoder::new(&mut buf),
        );
        match written {
            Ok(_) => Some(buf),
            Err(e) => {
                tracing::warn!(error = %e, "dns: cannot encode a reply");
                None
            }
        }
    }

    /// The reply's bytes within [`UDP_LIMIT`]: when larger, header and question only,
    /// with TC set.
    fn encode_udp(mut self) -> Option<Vec<u8>> {
        let bytes = self.encode()?;
        if bytes.len() <= UDP_LIMIT {
            return Some(bytes);
        }
        self.answers.clear();
        self.metadata.truncation = true;
        self.encode()
    }
}

/// An A record whose owner is the question's name, written as a pointer to it.
///
/// hickory's own `Record` would do, but its encoder compresses at most 120 names per
/// message (`COMPRESSED_NAME_LIMIT` in hickory-proto 0.26.3) and writes every later
/// owner in full; see the module doc for what that costs.
struct QuestionA {
    ttl: u32,
    addr: Ipv4Addr,
}

impl BinEncodable for QuestionA {
    fn emit(&self, encoder: &mut BinEncoder<'_>) -> Result<(), ProtoError> {
        encoder.emit_u16(0xC000 | HEADER_LEN as u16)?;
        RecordType::A.emit(encoder)?;
        DNSClass::IN.emit(encoder)?;
        encoder.emit_u32(self.ttl)?;
        encoder.emit_u16(4)?;
        A(self.addr).emit(encoder)
    }
}

/// An error reply to `query` with `rcode`, echoing the question when it can be read;
/// None when `query` is shorter than a header.
fn error_reply(query: &[u8], rcode: ResponseCode) -> Option<Vec<u8>> {
    let header = read_header(query)?;
    let question = read_question(query, &header);
    Reply::to(&header, question, rcode, false).encode()
}

fn in_zone(name: &str, zone: &str) -> bool {
    !zone.is_empty()
        && (name == zone
            || name
                .strip_suffix(zone)
                .is_some_and(|head| head.ends_with('.')))
}

/// The reply to one query packet, or None when the query should be forwarded upstream
/// (a name we do not own) or is too malformed to answer at all (shorter than a header,
/// or a response rather than a query). `zone` is normalised.
fn respond(query: &[u8], names: &Names, zone: &str) -> Option<Reply> {
    let header = read_header(query)?;
    if header.message_type != MessageType::Query {
        return None;
    }
    if header.op_code != OpCode::Query {
        let question = read_question(query, &header);
        return Some(Reply::to(&header, question, ResponseCode::NotImp, false));
    }
    let Some(question) = read_question(query, &header) else {
        return Some(Reply::to(&header, None, ResponseCode::FormErr, false));
    };
    let name = name_text(question.name().iter());
    if let Some(addrs) = names.addrs.get(&name) {
        let wanted = matches!(question.query_type(), RecordType::A | RecordType::ANY)
            && matches!(question.query_class(), DNSClass::IN | DNSClass::ANY);
        let ttl = if name.starts_with("tasks.") {
            TTL_TASKS
        } else {
            TTL_DEFAULT
        };
        // Keep the message within the 64 KiB a TCP frame holds.
        let question_len = question.name().iter().map(|l| l.len() + 1).sum::<usize>() + 1 + 4;
        let room = (usize::from(u16::MAX) - HEADER_LEN - question_len) / A_RECORD_LEN;
        let addrs = if wanted {
            &addrs[..addrs.len().min(room)]
        } else {
            &[]
        };
        let mut reply = Reply::to(&header, Some(question), ResponseCode::NoError, true);
        reply.answers = addrs.iter().map(|&addr| QuestionA { ttl, addr }).collect();
        return Some(reply);
    }
    if names.denied.contains(&name) {
        return Some(Reply::to(
            &header,
            Some(question),
            ResponseCode::NXDomain,
            true,
        ));
    }
    if in_zone(&name, zone) {
        let rcode = if name == zone || names.has_below(&name) {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
        return Some(Reply::to(&header, Some(question), rcode, true));
    }
    None
}

/// Builds the reply to one query packet, or None when the query should be forwarded
/// upstream (a name we do not own) or is too malformed to answer at all (shorter than
/// a header, or a response rather than a query).
///
/// `zone` (e.g. `orc.internal`, case and trailing dot ignored) is where we are
/// authoritative: unknown names under it get NXDOMAIN. The reply is not size-limited;
/// see [`answer_udp`] for the one sent over UDP.
pub fn answer(query: &[u8], names: &Names, zone: &str) -> Option<Vec<u8>> {
    respond(query, names, &normalize(zone))?.encode()
}

/// [`answer`] fitted into [`UDP_LIMIT`]: a larger reply is cut to its header and
/// question, with TC set and no records.
pub fn answer_udp(query: &[u8], names: &Names, zone: &str) -> Option<Vec<u8>> {
    respond(query, names, &normalize(zone))?.encode_udp()
}

/// A well-formed query (header present, QR clear, opcode QUERY) that may go upstream.
fn forwardable(msg: &[u8]) -> bool {
    read_header(msg)
        .is_some_and(|h| h.message_type == MessageType::Query && h.op_code == OpCode::Query)
}

/// Whether an upstream's reply has TC set.
fn truncated(reply: &[u8]) -> bool {
    read_header(reply).is_some_and(|h| h.truncation)
}

/// The nameservers of a resolv.conf text (IPv4 and IPv6, port 53), in order. Comments
/// (`#`, `;`) are ignored; IPv6 addresses with a named scope (`fe80::1%eth0`) are
/// skipped, numeric scopes are kept.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(word) = words.next() else { continue };
        let addr = match word.split_once('%') {
            None => word
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53)),
            Some((ip, scope)) => match (ip.parse::<Ipv6Addr>(), scope.parse::<u32>()) {
                (Ok(ip), Ok(scope)) => Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                    ip, 53, 0, scope,
                ))),
                _ => None,
            },
        };
        out.extend(addr);
    }
    out
}

/// The DNS server; see the module doc.
#[derive(Debug)]
pub struct DnsServer {
    names: RwLock<Arc<Names>>,
    clients: RwLock<Option<Arc<Clients>>>,
    networks: RwLock<Arc<NetworkNames>>,
    views: Mutex<HashMap<Vec<NetworkId>, Arc<Names>>>,
    zone: String,
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    local: SocketAddr,
    forwards: Arc<Semaphore>,
    tcp_conns: Arc<Semaphore>,
    /// Queries, NXDOMAIN answers and failed forwards, once set.
    metrics: std::sync::OnceLock<crate::metrics::DnsMetrics>,
}

impl DnsServer {
    /// Serves UDP and TCP on `addr` (port 0 picks one free port for both; see
    /// [`DnsServer::local_addr`]), answering from the names set with
    /// [`DnsServer::set_names`] (none at first), forwarding other queries to
    /// `upstreams`. Stops when `stop` is cancelled.
    pub async fn start(
        addr: SocketAddr,
        upstreams: Vec<SocketAddr>,
        zone: String,
        stop: CancellationToken,
    ) -> io::Result<Arc<DnsServer>> {
        Self::start_with(addr, upstreams, zone, stop, UPSTREAM_TIMEOUT).await
    }

    async fn start_with(
        addr: SocketAddr,
        upstreams: Vec<SocketAddr>,
        zone: String,
        stop: CancellationToken,
        timeout: Duration,
    ) -> io::Result<Arc<DnsServer>> {
        let (udp, tcp) = bind_both(addr)?;
        let local = udp.local_addr()?;
        let server = Arc::new(DnsServer {
            names: RwLock::new(Arc::new(Names::default())),
            clients: RwLock::new(None),
            networks: RwLock::new(Arc::new(BTreeMap::new())),
            views: Mutex::new(HashMap::new()),
            zone: normalize(&zone),
            upstreams: upstreams.into_iter().filter(|u| *u != local).collect(),
            timeout,
            local,
            forwards: Arc::new(Semaphore::new(MAX_FORWARDS)),
            tcp_conns: Arc::new(Semaphore::new(MAX_TCP_CONNS)),
            metrics: std::sync::OnceLock::new(),
        });
        tokio::spawn(server.clone().serve_udp(Arc::new(udp), stop.clone()));
        tokio::spawn(server.clone().serve_tcp(tcp, stop));
        Ok(server)
    }

    /// Counts queries, NXDOMAIN answers and failed forwards into `metrics` (once; later
    /// calls are ignored).
    pub fn set_metrics(&self, metrics: crate::metrics::DnsMetrics) {
        let _ = self.metrics.set(metrics);
    }

    /// Counts one query received.
    fn count_query(&self) {
        if let Some(m) = self.metrics.get() {
            m.queries.inc();
        }
    }

    /// Counts `reply` if it is NXDOMAIN.
    fn count_reply(&self, reply: &[u8]) {
        if let Some(m) = self.metrics.get() {
            if is_nxdomain(reply) {
                m.nxdomain.inc();
            }
        }
    }

    /// Replaces the names answered to every client; effective for the next query. Not
    /// used once [`DnsServer::set_clients`] was called.
    pub fn set_names(&self, names: Names) {
        *self.names.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(names);
    }

    /// From now on, answers only the containers `clients` knows, each with the names
    /// of its networks ([`DnsServer::set_networks`]), and refuses anyone else
    /// (REFUSED, nothing forwarded: the server is no open resolver).
    pub fn set_clients(&self, clients: Arc<Clients>) {
        *self.clients.write().unwrap_or_else(|e| e.into_inner()) = Some(clients);
    }

    /// Replaces the names of each network; effective for the next query.
    pub fn set_networks(&self, networks: NetworkNames) {
        *self.networks.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(networks);
        self.views.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The names a client at `ip` sees: with clients set, the names of its networks
    /// (the first network's answer wins for a name on several), `None` for a stranger;
    /// else every name.
    fn names_for(&self, ip: IpAddr) -> Option<Arc<Names>> {
        let clients = self
            .clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(clients) = clients else {
            return Some(self.names());
        };
        let nets = clients.networks_of(ip)?;
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = views.get(&nets) {
            return Some(v.clone());
        }
        let all = self
            .networks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut merged: BTreeMap<&str, &Vec<Ipv4Addr>> = BTreeMap::new();
        for n in &nets {
            for (name, addrs) in all.get(n).into_iter().flatten() {
                merged.entry(name).or_insert(addrs);
            }
        }
        let mut names = Names::default();
        for (name, _) in all.values().flatten() {
            if !merged.contains_key(name.as_str()) {
                names.deny(name);
            }
        }
        for (name, addrs) in merged {
            names.insert(name, addrs.clone());
        }
        let names = Arc::new(names);
        if views.len() >= MAX_VIEWS {
            views.clear();
        }
        views.insert(nets, names.clone());
        Some(names)
    }

    /// The address served (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn names(&self) -> Arc<Names> {
        self.names.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn serve_udp(self: Arc<Self>, socket: Arc<UdpSocket>, stop: CancellationToken) {
        let mut buf = vec![0u8; 65536];
        loop {
            let (len, peer) = tokio::select! {
                _ = stop.cancelled() => return,
                r = socket.recv_from(&mut buf) => match r {
                    Ok(r) => r,
                    Err(e) => {
                        // ICMP errors from earlier sends surface here; keep serving.
                        tracing::debug!(error = %e, "dns: udp receive");
                        continue;
                    }
                },
            };
            let msg = &buf[..len];
            self.count_query();
            let Some(names) = self.names_for(peer.ip()) else {
                if let Some(reply) = error_reply(msg, ResponseCode::Refused) {
                    send_udp(&socket, &reply, peer).await;
                }
                continue;
            };
            if let Some(reply) = answer_udp(msg, &names, &self.zone) {
                self.count_reply(&reply);
                send_udp(&socket, &reply, peer).await;
            } else if forwardable(msg) {
                let Ok(permit) = self.forwards.clone().try_acquire_owned() else {
                    if let Some(reply) = error_reply(msg, ResponseCode::ServFail) {
                        send_udp(&socket, &reply, peer).await;
                    }
                    continue;
                };
                let (server, socket, msg) = (self.clone(), socket.clone(), msg.to_vec());
                tokio::spawn(async move {
                    let reply = server.forward(&msg, false, peer.ip()).await;
                    drop(permit);
                    if let Some(reply) = reply {
                        send_udp(&socket, &reply, peer).await;
                    }
                });
            }
        }
    }

    async fn serve_tcp(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(error = %e, "dns: tcp accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = self.tcp_conns.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "dns: {MAX_TCP_CONNS} tcp connections already; closing");
                continue;
            };
            let (server, stop) = (self.clone(), stop.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = server.serve_conn(stream, peer.ip()) => {}
                }
                drop(permit);
            });
        }
    }

    /// Answers length-prefixed queries on one connection until EOF, an error or
    /// [`TCP_IDLE`] without a complete query.
    async fn serve_conn(&self, mut stream: TcpStream, peer: IpAddr) {
        loop {
            let msg = match tokio::time::timeout(TCP_IDLE, read_frame(&mut stream)).await {
                Ok(Ok(Some(msg))) => msg,
                _ => return,
            };
            self.count_query();
            let Some(names) = self.names_for(peer) else {
                if let Some(reply) = error_reply(&msg, ResponseCode::Refused) {
                    let _ = tokio::time::timeout(TCP_IDLE, write_frame(&mut stream, &reply)).await;
                }
                return;
            };
            let reply = match answer(&msg, &names, &self.zone) {
                Some(reply) => {
                    self.count_reply(&reply);
                    reply
                }
                None if forwardable(&msg) => match self.forward(&msg, true, peer).await {
                    Some(reply) => reply,
                    None => continue,
                },
                None => continue,
            };
            match tokio::time::timeout(TCP_IDLE, write_frame(&mut stream, &reply)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }

    /// The upstreams of the client at `peer`: its service's own name servers when it
    /// names some ([`Clients::dns_of`]), else the node's; never this server itself.
    fn upstreams_for(&self, peer: IpAddr) -> Vec<SocketAddr> {
        let own = self
            .clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|c| c.dns_of(peer));
        match own {
            Some(list) => list.into_iter().filter(|u| *u != self.local).collect(),
            None => self.upstreams.clone(),
        }
    }

    /// The upstreams' reply to `query`, or SERVFAIL when none answers. `tcp`: the
    /// client came over TCP, so a truncated UDP reply is retried over TCP. `peer`: the
    /// client, whose service may name its own upstreams.
    async fn forward(&self, query: &[u8], tcp: bool, peer: IpAddr) -> Option<Vec<u8>> {
        for upstream in self.upstreams_for(peer) {
            match forward_udp(query, upstream, self.timeout).await {
                Ok(Some(reply)) => {
                    if tcp && truncated(&reply) {
                        match forward_tcp(query, upstream, self.timeout).await {
                            Ok(full) => return Some(full),
                            Err(e) => {
                                tracing::debug!(%upstream, error = %e, "dns: upstream over tcp")
                            }
                        }
                    }
                    return Some(reply);
                }
                Ok(None) => tracing::debug!(%upstream, "dns: upstream timed out"),
                Err(e) => tracing::debug!(%upstream, error = %e, "dns: upstream"),
            }
        }
        if let Some(m) = self.metrics.get() {
            m.forward_failures.inc();
        }
        error_reply(query, ResponseCode::ServFail)
    }
}

/// Whether a reply's RCODE is NXDOMAIN (3; the low four bits of the fourth byte).
fn is_nxdomain(reply: &[u8]) -> bool {
    reply.get(3).map(|b| b & 0x0f) == Some(3)
}

async fn send_udp(socket: &UdpSocket, reply: &[u8], peer: SocketAddr) {
    if let Err(e) = socket.send_to(reply, peer).await {
        tracing::debug!(%peer, error = %e, "dns: udp send");
    }
}

fn reusable(addr: SocketAddr, ty: socket2::Type) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), ty, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// UDP and TCP sockets on one address; with port 0, a port free for both.
fn bind_both(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = reusable(addr, socket2::Type::DGRAM)?;
        let port = udp.local_addr()?.as_socket().map_or(0, |a| a.port());
        let tcp = reusable(SocketAddr::new(addr.ip(), port), socket2::Type::STREAM)
            .and_then(|tcp| tcp.listen(1024).map(|()| tcp));
        match tcp {
            Ok(tcp) => {
                let udp = UdpSocket::from_std(std::net::UdpSocket::from(udp))?;
                let tcp = TcpListener::from_std(std::net::TcpListener::from(tcp))?;
                return Ok((udp, tcp));
            }
            Err(e) if addr.port() == 0 && attempt < 16 => {
                tracing::debug!(port, error = %e, "dns: tcp port taken, picking another");
            }
            Err(e) => return Err(e),
        }
    }
}

/// The header of `reply` when it is whole and carries the ID of `query`.
fn reply_header(reply: &[u8], query: &[u8]) -> Option<Header> {
    let id = read_header(query)?.id;
    read_header(reply).filter(|h| h.id == id)
}

/// Sends `query` to `upstream` from a fresh socket and waits up to `timeout` for a
/// reply with the same ID; Ok(None) on timeout.
async fn forward_udp(
    query: &[u8],
    upstream: SocketAddr,
    timeout: Duration,
) -> io::Result<Option<Vec<u8>>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let len = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) => return Ok(None),
            Ok(r) => r?,
        };
        let reply = reply_header(&buf[..len], query);
        if reply.is_some_and(|h| h.message_type == MessageType::Response) {
            buf.truncate(len);
            return Ok(Some(buf));
        }
    }
}

/// Asks `upstream` over TCP.
async fn forward_tcp(query: &[u8], upstream: SocketAddr, timeout: Duration) -> io::Result<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(upstream).await?;
        write_frame(&mut stream, query).await?;
        loop {
            match read_frame(&mut stream).await? {
                None => return Err(io::ErrorKind::UnexpectedEof.into()),
                Some(reply) if reply_header(&reply, query).is_some() => return Ok(reply),
                Some(_) => {}
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// One length-prefixed message; None at a clean EOF. The buffer grows as the bytes
/// arrive: the length announced is only a limit.
async fn read_frame(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u16::from_be_bytes(len);
    let mut msg = Vec::new();
    (&mut *stream)
        .take(u64::from(len))
        .read_to_end(&mut msg)
        .await?;
    if msg.len() < usize::from(len) {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(msg))
}

async fn write_frame(stream: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    let mut frame = Vec::with_capacity(msg.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(msg);
    stream.write_all(&frame).await
}

#[cfg(test)]
mod fuzz;

/// The raw header bits and codes the tests read replies with, by hand and apart from
/// hickory, so that the tests check the wire rather than the library's reading of it.
#[cfg(test)]
mod bits {
    pub const QR: u16 = 0x8000;
    pub const AA: u16 = 0x0400;
    pub const TC: u16 = 0x0200;
    pub const RD: u16 = 0x0100;
    pub const RA: u16 = 0x0080;
    pub const CD: u16 = 0x0010;
    pub const TYPE_A: u16 = 1;
    pub const TYPE_ANY: u16 = 255;
    pub const CLASS_IN: u16 = 1;
    pub const CLASS_ANY: u16 = 255;
    pub const RCODE_FORMERR: u16 = 1;
    pub const RCODE_SERVFAIL: u16 = 2;
    pub const RCODE_NXDOMAIN: u16 = 3;
    pub const RCODE_NOTIMP: u16 = 4;

    pub fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
    }
}

#[cfg(test)]
mod tests {
    use super::bits::*;
    use super::*;

    const ZONE: &str = "orc.internal";
    const TYPE_AAAA: u16 = 28;

    /// A query for `name` (dotted, no compression) of `qtype`, class IN, RD set.
    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = Vec::new();
        q.extend_from_slice(&id.to_be_bytes());
        q.extend_from_slice(&RD.to_be_bytes());
        q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    /// The parts of a reply the tests look at.
    #[derive(Debug)]
    struct Reply {
        id: u16,
        flags: u16,
        counts: [u16; 4],
        question: Vec<u8>,
        /// (TTL, address) of each A record.
        answers: Vec<(u32, Ipv4Addr)>,
    }

    impl Reply {
        fn rcode(&self) -> u16 {
            self.flags & 0xF
        }
    }

    fn parse(msg: &[u8]) -> Reply {
        let counts = [4, 6, 8, 10].map(|at| u16_at(msg, at).unwrap());
        let mut at = HEADER_LEN;
        if counts[0] > 0 {
            at = parse_name(msg, HEADER_LEN).unwrap().1 + 4;
        }
        let question = msg[HEADER_LEN..at].to_vec();
        let mut answers = Vec::new();
        for _ in 0..counts[1] {
            assert_eq!(
                &msg[at..at + 2],
                &[0xC0, 12],
                "answer name is a pointer to 12"
            );
            assert_eq!(u16_at(msg, at + 2), Some(TYPE_A));
            assert_eq!(u16_at(msg, at + 4), Some(CLASS_IN));
            let ttl = u32::from_be_bytes(msg[at + 6..at + 10].try_into().unwrap());
            assert_eq!(u16_at(msg, at + 10), Some(4));
            let addr = Ipv4Addr::new(msg[at + 12], msg[at + 13], msg[at + 14], msg[at + 15]);
            answers.push((ttl, addr));
            at += 16;
        }
        assert_eq!(at, msg.len(), "no trailing bytes");
        Reply {
            id: u16_at(msg, 0).unwrap(),
            flags: u16_at(msg, 2).unwrap(),
            counts,
            question,
            answers,
        }
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    fn names() -> Names {
        let mut n = Names::default();
        n.insert("web", vec![ip(2)]);
        n.insert("web.orc.internal", vec![ip(2)]);
        n.insert("tasks.web.orc.internal", vec![ip(7), ip(5), ip(6)]);
        n.insert("api.shop.orc.internal", vec![ip(9)]);
        n
    }

    #[test]
    fn a_name_found_is_not_counted_as_nxdomain() {
        let reply = answer(&query(1, "web.orc.internal", TYPE_A), &names(), ZONE).unwrap();
        assert!(!is_nxdomain(&reply));
        assert!(!is_nxdomain(&[]));
    }

    #[test]
    fn names_are_case_insensitive_and_ignore_the_trailing_dot() {
        let mut n = Names::default();
        n.insert("Web.Orc.Internal.", vec![ip(1)]);
        assert_eq!(n.lookup("web.orc.internal"), Some(&[ip(1)][..]));
        assert_eq!(n.lookup("WEB.ORC.INTERNAL."), Some(&[ip(1)][..]));
        assert_eq!(n.lookup("web.orc"), None);
        n.insert("web.orc.internal", vec![ip(3), ip(4)]);
        assert_eq!(n.lookup("web.orc.internal"), Some(&[ip(3), ip(4)][..]));
    }

    #[test]
    fn a_query_gets_every_address_in_order() {
        let q = query(0xBEEF, "tasks.web.orc.internal", TYPE_A);
        let r = parse(&answer(&q, &names(), ZONE).unwrap());
        assert_eq!(r.id, 0xBEEF);
        assert_eq!(r.flags, QR | AA | RD | RA, "NOERROR, AA, RD copied, RA");
        assert_eq!(r.counts, [1, 3, 0, 0]);
        assert_eq!(r.question, q[HEADER_LEN..]);
        assert_eq!(r.answers, vec![(1, ip(7)), (1, ip(5)), (1, ip(6))]);
    }

    #[test]
    fn rd_is_copied_and_service_names_get_ttl_10() {
        let mut q = query(7, "web", TYPE_A);
        q[2] &= !((RD >> 8) as u8);
        let r = parse(&answer(&q, &names(), ZONE).unwrap());
        assert_eq!(r.flags, QR | AA | RA);
        assert_eq!(r.answers, vec![(10, ip(2))]);
        let r = parse(&answer(&query(8, "web.orc.internal", TYPE_ANY), &names(), ZONE).unwrap());
        assert_eq!(r.answers, vec![(10, ip(2))], "ANY answers with A records");
    }

    #[test]
    fn lookup_is_case_insensitive_and_the_question_keeps_its_case() {
        let q = query(9, "WeB.oRc.InTeRnAl.", TYPE_A);
        let r = parse(&answer(&q, &names(), ZONE).unwrap());
        assert_eq!(r.rcode(), 0);
        assert_eq!(r.answers, vec![(10, ip(2))]);
        assert_eq!(r.question, q[HEADER_LEN..], "0x20 case echoed");
        // The zone is case-insensitive too.
        let r = parse(
            &answer(
                &query(9, "nope.orc.internal", TYPE_A),
                &names(),
                "ORC.Internal.",
            )
            .unwrap(),
        );
        assert_eq!(r.rcode(), RCODE_NXDOMAIN);
    }

    #[test]
    fn other_types_of_our_names_get_nodata() {
        let q = query(10, "web.orc.internal", TYPE_AAAA);
        let r = parse(&answer(&q, &names(), ZONE).unwrap());
        assert_eq!(r.flags, QR | AA | RD | RA);
        assert_eq!(r.counts, [1, 0, 0, 0]);
        assert_eq!(r.question, q[HEADER_LEN..]);
    }

    #[test]
    fn unknown_names_in_the_zone_get_nxdomain() {
        for name in [
            "db.orc.internal",
            "tasks.db.orc.internal",
            "x.web.orc.internal",
        ] {
            let q = query(11, name, TYPE_A);
            let reply = answer(&q, &names(), ZONE).unwrap();
            assert!(is_nxdomain(&reply), "{name}");
            let r = parse(&reply);
            assert_eq!(r.flags, QR | AA | RD | RA | RCODE_NXDOMAIN, "{name}");
            assert_eq!(r.counts, [1, 0, 0, 0]);
            assert_eq!(r.question, q[HEADER_LEN..]);
        }
    }

    #[test]
    fn the_zone_and_names_with_names_below_get_nodata() {
        for name in [
            "orc.internal",
            "shop.orc.internal",
            "tasks.web.orc.internal",
        ] {
            let r = parse(&answer(&query(12, name, TYPE_AAAA), &names(), ZONE).unwrap());
            assert_eq!(r.rcode(), 0, "{name}");
            assert_eq!(r.counts, [1, 0, 0, 0]);
        }
        let r = parse(&answer(&query(12, "shop.orc.internal", TYPE_A), &names(), ZONE).unwrap());
        assert_eq!((r.rcode(), r.counts[1]), (0, 0));
    }

    #[test]
    fn names_outside_the_zone_are_forwarded() {
        for name in [
            "example.com",
            "notorc.internal",
            "orc.internal.example.com",
            "internal",
        ] {
            assert_eq!(
                answer(&query(13, name, TYPE_A), &names(), ZONE),
                None,
                "{name}"
            );
        }
        // Without a zone, only the names themselves are answered.
        assert_eq!(
            answer(&query(13, "db.orc.internal", TYPE_A), &names(), ""),
            None
        );
        assert!(answer(&query(13, "web", TYPE_A), &names(), "").is_some());
    }

    #[test]
    fn odd_bytes_in_labels_never_match_a_plain_name() {
        // One label "web.orc" then "internal": not the name web.orc.internal.
        let mut q = query(14, "x.internal", TYPE_A);
        q.splice(12..14, [7, b'w', b'e', b'b', b'.', b'o', b'r', b'c']);
        let mut n = Names::default();
        n.insert("web.orc.internal", vec![ip(1)]);
        assert_eq!(answer(&q, &n, "example"), None);
        let r = parse(&answer(&q, &n, "internal").unwrap());
        assert_eq!(r.rcode(), RCODE_NXDOMAIN);
    }

    #[test]
    fn compression_pointers_in_the_question_are_followed() {
        // "web" + pointer to "orc.internal" stored after the question.
        let mut q = query(15, "", TYPE_A);
        let tail = HEADER_LEN + 6 + 4;
        q.truncate(HEADER_LEN);
        q.extend_from_slice(&[3, b'w', b'e', b'b', 0xC0, tail as u8]);
        q.extend_from_slice(&TYPE_A.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q.extend_from_slice(b"\x03orc\x08internal\x00");
        let r = parse(&answer(&q, &names(), ZONE).unwrap());
        assert_eq!(r.answers, vec![(10, ip(2))]);
        assert_eq!(
            r.question,
            query(0, "web.orc.internal", TYPE_A)[HEADER_LEN..],
            "expanded"
        );

        // A pointer loop is malformed.
        let mut q = query(16, "", TYPE_A);
        q.truncate(HEADER_LEN);
        q.extend_from_slice(&[0xC0, HEADER_LEN as u8, 0, 1, 0, 1]);
        let r = parse(&answer(&q, &names(), ZONE).unwrap());
        assert_eq!(r.flags, QR | RD | RA | RCODE_FORMERR);
        assert_eq!(r.counts, [0; 4]);
    }

    #[test]
    fn malformed_queries_get_formerr_or_nothing() {
        let n = names();
        // Shorter than a header: nothing at all.
        assert_eq!(answer(&[0x12, 0x34, 0x01], &n, ZONE), None);
        assert_eq!(answer(&[], &n, ZONE), None);
        // No question.
        let mut q = query(17, "web", TYPE_A);
        q[5] = 0;
        let r = parse(&answer(&q, &n, ZONE).unwrap());
        assert_eq!(
            (r.id, r.flags, r.counts),
            (17, QR | RD | RA | RCODE_FORMERR, [0; 4])
        );
        // Question cut short, bare header, and a reserved label type.
        for q in [
            query(18, "web.orc.internal", TYPE_A)[..20].to_vec(),
            query(18, "web", TYPE_A)[..HEADER_LEN].to_vec(),
            {
                let mut q = query(18, "web", TYPE_A);
                q[12] = 0x43;
                q
            },
        ] {
            let r = parse(&answer(&q, &n, ZONE).unwrap());
            assert_eq!((r.id, r.rcode()), (18, RCODE_FORMERR));
        }
        // A response is never answered (no ping-pong between servers).
        let mut q = query(19, "web", TYPE_A);
        q[2] |= 0x80;
        assert_eq!(answer(&q, &n, ZONE), None);
        assert!(!forwardable(&q));
        // Another opcode (STATUS = 2): NOTIMP, opcode copied.
        let mut q = query(20, "web", TYPE_A);
        q[2] |= 2 << 3;
        let r = parse(&answer(&q, &n, ZONE).unwrap());
        assert_eq!(r.flags, QR | (2 << 11) | RD | RA | RCODE_NOTIMP);
        assert!(!forwardable(&q));
        assert!(forwardable(&query(21, "example.com", TYPE_A)));
    }

    #[test]
    fn big_replies_are_truncated_for_udp() {
        let mut n = Names::default();
        let many: Vec<Ipv4Addr> = (0..100).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect();
        n.insert("tasks.big.orc.internal", many.clone());
        let q = query(22, "tasks.big.orc.internal", TYPE_A);
        let full = answer(&q, &n, ZONE).unwrap();
        assert!(full.len() > UDP_LIMIT);
        assert_eq!(parse(&full).answers.len(), 100);
        let cut = parse(&answer_udp(&q, &n, ZONE).unwrap());
        assert_eq!(cut.flags, QR | AA | TC | RD | RA);
        assert_eq!(cut.counts, [1, 0, 0, 0]);
        assert_eq!(cut.question, q[HEADER_LEN..]);
        let small = query(23, "web", TYPE_A);
        assert_eq!(
            answer_udp(&small, &names(), ZONE),
            answer(&small, &names(), ZONE)
        );
    }

    #[test]
    fn resolv_conf_nameservers_in_order() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.1\n  nameserver\t2001:db8::1 # v6\n\
                    ;nameserver 9.9.9.9\nnameserver fe80::1%eth0\nnameserver fe80::2%3\nnameserver bogus\n\
                    options ndots:0\nnameserver 127.0.0.53\n";
        let v6 = |s: &str, scope| {
            SocketAddr::V6(std::net::SocketAddrV6::new(
                s.parse().unwrap(),
                53,
                0,
                scope,
            ))
        };
        assert_eq!(
            upstreams_from_resolv_conf(text),
            vec![
                "10.0.0.1:53".parse().unwrap(),
                v6("2001:db8::1", 0),
                v6("fe80::2", 3),
                "127.0.0.53:53".parse().unwrap(),
            ]
        );
        assert!(upstreams_from_resolv_conf("").is_empty());
    }

    // ---- the server, over real sockets ----

    const WAIT: Duration = Duration::from_secs(5);

    /// A fake upstream: replies to each query with its ID, QR set and `marker` bytes.
    async fn fake_upstream(marker: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
                let mut reply = buf[..len].to_vec();
                reply[2] |= 0x80;
                reply.extend_from_slice(marker);
                socket.send_to(&reply, peer).await.unwrap();
            }
        });
        (addr, task)
    }

    async fn ask_udp(server: SocketAddr, q: &[u8]) -> Vec<u8> {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(q, server).await.unwrap();
        let mut buf = vec![0u8; 65536];
        let (len, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
            .await
            .expect("a reply")
            .unwrap();
        buf.truncate(len);
        buf
    }

    async fn start(
        upstreams: Vec<SocketAddr>,
        timeout: Duration,
    ) -> (Arc<DnsServer>, CancellationToken) {
        let stop = CancellationToken::new();
        let server = DnsServer::start_with(
            "127.0.0.1:0".parse().unwrap(),
            upstreams,
            ZONE.to_string(),
            stop.clone(),
            timeout,
        )
        .await
        .unwrap();
        (server, stop)
    }

    #[tokio::test]
    async fn udp_answers_forwards_and_follows_set_names() {
        let (up, _task) = fake_upstream(b"UPSTREAM").await;
        let (server, stop) = start(vec![up], UPSTREAM_TIMEOUT).await;
        let addr = server.local_addr();

        // Forwarded: the upstream's bytes, unchanged.
        let q = query(0x4242, "example.com", TYPE_A);
        let mut expected = q.clone();
        expected[2] |= 0x80;
        expected.extend_from_slice(b"UPSTREAM");
        assert_eq!(ask_udp(addr, &q).await, expected);

        // Ours, before and after set_names.
        let q = query(0x0101, "web.orc.internal", TYPE_A);
        let r = parse(&ask_udp(addr, &q).await);
        assert_eq!((r.id, r.rcode()), (0x0101, RCODE_NXDOMAIN));
        server.set_names(names());
        let r = parse(&ask_udp(addr, &q).await);
        assert_eq!(
            (r.id, r.rcode(), r.answers.clone()),
            (0x0101, 0, vec![(10, ip(2))])
        );

        // Too big for UDP: TC and the question only.
        let mut n = names();
        n.insert(
            "tasks.big.orc.internal",
            (0..100).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect(),
        );
        server.set_names(n);
        let r = parse(&ask_udp(addr, &query(5, "tasks.big.orc.internal", TYPE_A)).await);
        assert_eq!((r.flags & TC, r.counts), (TC, [1, 0, 0, 0]));

        // Stopped: no more answers.
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(&q, addr).await.unwrap();
        let mut buf = [0u8; 512];
        let got =
            tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buf)).await;
        assert!(!matches!(got, Ok(Ok(_))), "no reply after stop");
    }

    async fn ask_udp_from(from: &str, server: SocketAddr, q: &[u8]) -> Vec<u8> {
        let socket = UdpSocket::bind((from, 0)).await.unwrap();
        socket.send_to(q, server).await.unwrap();
        let mut buf = vec![0u8; 65536];
        let (len, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
            .await
            .expect("a reply")
            .unwrap();
        buf.truncate(len);
        buf
    }

    #[tokio::test]
    async fn a_container_whose_service_names_dns_servers_is_forwarded_to_them() {
        let (node_up, _a) = fake_upstream(b"NODE").await;
        let (own_up, _b) = fake_upstream(b"OWN").await;
        let (server, _stop) = start(vec![node_up], UPSTREAM_TIMEOUT).await;
        let addr = server.local_addr();
        let clients = Arc::new(Clients::default());
        let front = NetworkId("front".into());
        // 127.0.0.1: a task whose service names its own `dns`; 127.0.0.3: one without.
        clients.set_task("t1", vec![front.clone()], vec![Ipv4Addr::LOCALHOST]);
        clients.set_task_dns("t1", vec![own_up]);
        clients.set_task("t2", vec![front.clone()], vec![Ipv4Addr::new(127, 0, 0, 3)]);
        clients.set_task_dns("t2", vec![]);
        server.set_clients(clients.clone());
        server.set_networks(BTreeMap::from([(
            front.clone(),
            BTreeMap::from([("web".to_string(), vec![ip(2)])]),
        )]));
        let outside = query(7, "example.com", TYPE_A);
        let reply = |marker: &[u8]| {
            let mut r = outside.clone();
            r[2] |= 0x80;
            r.extend_from_slice(marker);
            r
        };
        assert_eq!(
            ask_udp_from("127.0.0.1", addr, &outside).await,
            reply(b"OWN")
        );
        assert_eq!(
            ask_udp_from("127.0.0.3", addr, &outside).await,
            reply(b"NODE")
        );
        // The cluster's names are still the cluster DNS's own answer.
        let r = parse(&ask_udp_from("127.0.0.1", addr, &query(8, "web", TYPE_A)).await);
        assert_eq!((r.rcode(), r.answers.clone()), (0, vec![(10, ip(2))]));
        // Its servers are forgotten with the task.
        clients.forget_task("t1");
        assert_eq!(clients.dns_of("127.0.0.1".parse().unwrap()), None);
    }

    #[tokio::test]
    async fn with_clients_each_container_sees_its_networks_names_and_strangers_are_refused() {
        let (up, _task) = fake_upstream(b"UPSTREAM").await;
        let (server, _stop) = start(vec![up], UPSTREAM_TIMEOUT).await;
        let addr = server.local_addr();
        let clients = Arc::new(Clients::default());
        let front = NetworkId("front".into());
        let back = NetworkId("back".into());
        // 127.0.0.1 stands for a container on `front`; 127.0.0.2 for nobody's.
        clients.set_task("t1", vec![front.clone()], vec![Ipv4Addr::LOCALHOST]);
        server.set_clients(clients.clone());
        server.set_networks(BTreeMap::from([
            (
                front.clone(),
                BTreeMap::from([("web".to_string(), vec![ip(2)])]),
            ),
            (
                back.clone(),
                BTreeMap::from([("db".to_string(), vec![ip(3)])]),
            ),
        ]));
        let web = query(1, "web", TYPE_A);
        let db = query(2, "db", TYPE_A);
        let outside = query(3, "example.com", TYPE_A);
        // Positive control: the container resolves its network's name, and the rest
        // of the world through the upstream.
        let r = parse(&ask_udp_from("127.0.0.1", addr, &web).await);
        assert_eq!((r.rcode(), r.answers.clone()), (0, vec![(10, ip(2))]));
        let mut expected = outside.clone();
        expected[2] |= 0x80;
        expected.extend_from_slice(b"UPSTREAM");
        assert_eq!(ask_udp_from("127.0.0.1", addr, &outside).await, expected);
        // Another network's service does not exist for it, and is not asked upstream.
        let r = parse(&ask_udp_from("127.0.0.1", addr, &db).await);
        assert_eq!((r.rcode(), r.answers.len()), (RCODE_NXDOMAIN, 0));
        // A stranger gets nothing, not even forwarding.
        for q in [&web, &db, &outside] {
            let r = parse(&ask_udp_from("127.0.0.2", addr, q).await);
            assert_eq!(r.rcode(), 5, "REFUSED");
            assert!(r.answers.is_empty());
        }
        // Over TCP too.
        let mut s = TcpStream::connect(addr).await.unwrap();
        write_frame(&mut s, &web).await.unwrap();
        let r = parse(&read_frame(&mut s).await.unwrap().unwrap());
        assert_eq!(r.answers, vec![(10, ip(2))]);
        // On both networks: both names.
        clients.set_task("t1", vec![front, back], vec![Ipv4Addr::LOCALHOST]);
        let same = server.networks.read().unwrap().as_ref().clone();
        server.set_networks(same);
        let r = parse(&ask_udp_from("127.0.0.1", addr, &db).await);
        assert_eq!(r.answers, vec![(10, ip(3))]);
    }

    #[tokio::test]
    async fn silent_upstreams_give_servfail_and_the_next_one_is_tried() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (server, stop) = start(
            vec![silent.local_addr().unwrap()],
            Duration::from_millis(200),
        )
        .await;
        let q = query(0x5150, "example.com", TYPE_A);
        let r = parse(&ask_udp(server.local_addr(), &q).await);
        assert_eq!(r.id, 0x5150);
        assert_eq!(r.flags, QR | RD | RA | RCODE_SERVFAIL);
        assert_eq!(r.question, q[HEADER_LEN..]);
        stop.cancel();

        let (up, _task) = fake_upstream(b"SECOND").await;
        let (server, stop) = start(
            vec![silent.local_addr().unwrap(), up],
            Duration::from_millis(200),
        )
        .await;
        let reply = ask_udp(server.local_addr(), &q).await;
        assert!(reply.ends_with(b"SECOND"), "{reply:?}");
        stop.cancel();
    }

    #[tokio::test]
    async fn tcp_serves_several_queries_per_connection() {
        let (up, _task) = fake_upstream(b"VIA-UDP").await;
        let (server, stop) = start(vec![up], UPSTREAM_TIMEOUT).await;
        let mut n = names();
        n.insert(
            "tasks.big.orc.internal",
            (0..100).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect(),
        );
        server.set_names(n);
        let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
        let queries = [
            query(1, "tasks.big.orc.internal", TYPE_A),
            query(2, "example.com", TYPE_A),
            query(3, "web", TYPE_A),
        ];
        for q in &queries {
            write_frame(&mut stream, q).await.unwrap();
        }
        let mut replies = Vec::new();
        for _ in &queries {
            let frame = tokio::time::timeout(WAIT, read_frame(&mut stream))
                .await
                .unwrap();
            replies.push(frame.unwrap().expect("a reply"));
        }
        let big = parse(&replies[0]);
        assert_eq!(
            (big.id, big.flags & TC, big.answers.len()),
            (1, 0, 100),
            "no truncation on TCP"
        );
        assert!(replies[1].ends_with(b"VIA-UDP"));
        assert_eq!(u16_at(&replies[1], 0), Some(2));
        assert_eq!(parse(&replies[2]).answers, vec![(10, ip(2))]);
        // EOF ends the connection cleanly.
        stream.shutdown().await.unwrap();
        let end = tokio::time::timeout(WAIT, read_frame(&mut stream))
            .await
            .unwrap();
        assert!(matches!(end, Ok(None)));
        stop.cancel();
    }

    #[tokio::test]
    async fn two_servers_share_one_address() {
        let (a, stop) = start(vec![], UPSTREAM_TIMEOUT).await;
        let stop_b = CancellationToken::new();
        let b = DnsServer::start(a.local_addr(), vec![], ZONE.to_string(), stop_b.clone()).await;
        assert!(b.is_ok(), "{b:?}");
        stop.cancel();
        stop_b.cancel();
    }
}
