//! Hostile packets against the cluster DNS.
//!
//! Whatever a container sends, [`answer`] must not panic, and a reply must be a
//! well-formed message of ours: the query's ID, opcode, RD and CD echoed, QR set, at
//! most one question, A records only, no byte after them, within a TCP frame, and
//! within [`UDP_LIMIT`] once cut for UDP. Its rcode must be FORMERR exactly when a
//! reference reading of the question ([`reference_question`], written here from RFC
//! 1035 §4.1 and the limits the module doc sets) finds it malformed; otherwise the
//! question comes back as sent (pointers expanded, case kept) and the records are the
//! name's addresses. A query that gets no reply is a response, a packet shorter than
//! a header, or a well-formed query for a name outside the zone (forwarded).
//!
//! The inputs: arbitrary bytes; valid queries cut short or damaged by [`fuzz::Edit`]s
//! whose bytes are the ones that mean something in a name (label lengths 63 and 64,
//! pointer bytes, the header's offset 12); mazes of compression pointers that may
//! loop; names of labels up to 63 bytes around the 255-byte limit. The UDP and TCP
//! servers are then fed such packets over real sockets, and must answer each as
//! `answer` does and keep serving.

use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use super::bits::*;
use super::*;
use crate::fuzz;

const ZONE: &str = "orc.internal";
const TYPE_AAAA: u16 = 28;

/// Bytes that mean something in a DNS name: the end, label lengths at the limit and
/// past it, the reserved label types, pointer bytes, and the header's length.
const DNS_BYTES: &[u8] = &[
    0, 1, 2, 12, 63, 64, 0x3F, 0x7F, 0x80, 0xBF, 0xC0, 0xC1, 0xFF,
];

/// `a{63}.b{63}.c{63}.d{61}`: 255 bytes on the wire, the longest name there is.
fn longest_name() -> String {
    [
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61),
    ]
    .join(".")
}

/// The names served in every case, from one address to more than a TCP frame holds.
static NAMES: LazyLock<Names> = LazyLock::new(|| {
    let ip = |i: u32| Ipv4Addr::from(0x0A00_0000 + i);
    let mut n = Names::default();
    n.insert("web", vec![ip(2)]);
    n.insert("web.orc.internal", vec![ip(2)]);
    n.insert("tasks.web.orc.internal", vec![ip(7), ip(5), ip(6)]);
    n.insert("api.shop.orc.internal", vec![ip(9)]);
    n.insert("tasks.big.orc.internal", (0..100).map(ip).collect());
    n.insert("tasks.huge.orc.internal", (0..5000).map(ip).collect());
    n.insert("empty.orc.internal", vec![]);
    n.insert(&longest_name(), vec![ip(3)]);
    n
});

/// Names queries are made of: ours, under the zone, outside it.
const KNOWN: &[&str] = &[
    "web",
    "web.orc.internal",
    "tasks.web.orc.internal",
    "api.shop.orc.internal",
    "shop.orc.internal",
    "tasks.big.orc.internal",
    "tasks.huge.orc.internal",
    "empty.orc.internal",
    "nope.orc.internal",
    "orc.internal",
    "example.com",
    "",
];

/// A query's first question: labels as sent, type, class.
type Q = (Vec<Vec<u8>>, u16, u16);

/// The first question of `msg` as RFC 1035 §4.1 reads it, with the module doc's limits
/// (a name of at most 255 bytes on the wire, at most [`MAX_POINTERS`] pointers); None
/// when there is none or it is malformed. Labels of type 01 and 10 (RFC 6891 retired
/// them) are malformed.
fn reference_question(msg: &[u8]) -> Option<Q> {
    let word = |at: usize| Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]));
    if word(4)? == 0 {
        return None;
    }
    let mut labels = Vec::new();
    let (mut at, mut after, mut pointers, mut wire) = (HEADER_LEN, None, 0, 1);
    loop {
        let b = *msg.get(at)?;
        match b >> 6 {
            0b11 => {
                let low = *msg.get(at + 1)?;
                after.get_or_insert(at + 2);
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return None;
                }
                at = (usize::from(b & 0x3F) << 8) | usize::from(low);
            }
            0b00 if b == 0 => break,
            0b00 => {
                let label = msg.get(at + 1..at + 1 + usize::from(b))?;
                wire += label.len() + 1;
                if wire > MAX_NAME {
                    return None;
                }
                labels.push(label.to_vec());
                at += 1 + label.len();
            }
            _ => return None,
        }
    }
    let after = after.unwrap_or(at + 1);
    Some((labels, word(after)?, word(after + 2)?))
}

/// A reply of ours, read strictly (any deviation fails the test).
#[derive(Debug)]
struct Reply {
    id: u16,
    flags: u16,
    question: Option<Q>,
    /// (TTL, address) of each record.
    answers: Vec<(u32, Ipv4Addr)>,
}

fn read_reply(msg: &[u8]) -> Reply {
    assert!(msg.len() >= HEADER_LEN, "a reply has a header: {msg:?}");
    let word = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]);
    let (qd, an) = (word(4), word(6));
    assert!(qd <= 1, "at most one question: {qd}");
    assert_eq!(
        (word(8), word(10)),
        (0, 0),
        "no authority or additional records"
    );
    let mut at = HEADER_LEN;
    let question = (qd == 1).then(|| {
        let mut labels = Vec::new();
        loop {
            let len = usize::from(msg[at]);
            at += 1;
            if len == 0 {
                break;
            }
            assert!(len <= 63, "the question is written without pointers");
            labels.push(msg[at..at + len].to_vec());
            at += len;
        }
        at += 4;
        (labels, word(at - 4), word(at - 2))
    });
    let mut answers = Vec::new();
    for _ in 0..an {
        assert_eq!(
            msg[at..at + 2],
            [0xC0, HEADER_LEN as u8],
            "owner is the question"
        );
        assert_eq!((word(at + 2), word(at + 4)), (TYPE_A, CLASS_IN));
        assert_eq!(word(at + 10), 4, "rdlength of an A record");
        let ttl = u32::from_be_bytes(msg[at + 6..at + 10].try_into().expect("4 bytes"));
        let addr: [u8; 4] = msg[at + 12..at + 16].try_into().expect("4 bytes");
        answers.push((ttl, addr.into()));
        at += 16;
    }
    assert_eq!(at, msg.len(), "nothing after the records");
    Reply {
        id: word(0),
        flags: word(2),
        question,
        answers,
    }
}

/// Every promise of the module doc about the reply to `query`.
fn check(query: &[u8]) {
    let names = &*NAMES;
    let reply = answer(query, names, ZONE);
    let Some(flags) = u16_at(query, 2).filter(|_| query.len() >= HEADER_LEN) else {
        assert_eq!(reply, None, "shorter than a header: dropped");
        return;
    };
    if flags & QR != 0 {
        assert_eq!(reply, None, "a response: dropped");
        return;
    }
    let opcode = flags & 0x7800;
    let question = reference_question(query);
    let Some(reply) = reply else {
        let (labels, _, _) = question.expect("a malformed query is answered");
        assert_eq!(opcode, 0, "another opcode is answered NOTIMP");
        let name = name_text(labels.iter().map(Vec::as_slice));
        assert!(names.lookup(&name).is_none(), "{name} is ours");
        assert!(!in_zone(&name, ZONE), "{name} is in the zone");
        assert!(forwardable(query));
        return;
    };
    assert!(reply.len() <= usize::from(u16::MAX), "fits a TCP frame");
    let r = read_reply(&reply);
    assert_eq!(r.id, u16_at(query, 0).expect("header"), "ID echoed");
    assert_eq!(
        r.flags & (QR | 0x7800 | RD | CD),
        QR | opcode | (flags & (RD | CD))
    );
    let rcode = r.flags & 0xF;
    if opcode != 0 {
        assert_eq!(rcode, RCODE_NOTIMP);
        assert!(r.answers.is_empty());
    } else if let Some(q) = question {
        assert!(rcode == 0 || rcode == RCODE_NXDOMAIN, "rcode {rcode}");
        let name = name_text(q.0.iter().map(Vec::as_slice));
        assert_eq!(r.question.as_ref(), Some(&q), "the question as sent");
        if !r.answers.is_empty() {
            let addrs = names.lookup(&name).expect("records only for our names");
            assert!(matches!(q.1, TYPE_A | TYPE_ANY) && matches!(q.2, CLASS_IN | CLASS_ANY));
            let ttl = if name.starts_with("tasks.") { 1 } else { 10 };
            let want: Vec<(u32, Ipv4Addr)> = addrs.iter().map(|a| (ttl, *a)).collect();
            assert!(
                want.starts_with(&r.answers),
                "the name's addresses, in order"
            );
        }
    } else {
        assert_eq!(rcode, RCODE_FORMERR, "malformed: FORMERR");
        assert!(r.question.is_none() && r.answers.is_empty());
    }

    let udp = answer_udp(query, names, ZONE).expect("a UDP reply too");
    assert!(udp.len() <= UDP_LIMIT, "{} bytes over UDP", udp.len());
    let u = read_reply(&udp);
    if reply.len() <= UDP_LIMIT {
        assert_eq!(udp, reply, "small replies are sent as they are");
    } else {
        assert_eq!((u.id, u.flags), (r.id, r.flags | TC), "cut: TC set");
        assert_eq!(u.question, r.question);
        assert!(u.answers.is_empty());
    }
}

/// A query for `name` (dotted, no compression) with the given header fields.
fn query(id: u16, flags: u16, qdcount: u16, name: &str, qtype: u16, qclass: u16) -> Vec<u8> {
    let mut q = Vec::new();
    for w in [id, flags, qdcount, 0, 0, 0] {
        q.extend_from_slice(&w.to_be_bytes());
    }
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&qclass.to_be_bytes());
    q
}

/// Well-formed queries: our names and others, in any case, any type and class, with
/// any RD/CD bits, sometimes claiming many questions or followed by other bytes.
fn valid_query() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        3 => (proptest::sample::select(KNOWN), any::<u64>()).prop_map(|(n, case)| {
            n.chars()
                .enumerate()
                .map(|(i, c)| if (case >> (i % 64)) & 1 == 1 { c.to_ascii_uppercase() } else { c })
                .collect::<String>()
        }),
        1 => "([a-zA-Z0-9-]{1,20}\\.){0,3}(orc\\.internal|example\\.com)",
    ];
    let qtype = prop_oneof![
        proptest::sample::select(&[TYPE_A, TYPE_AAAA, TYPE_ANY, 15, 16][..]),
        any::<u16>()
    ];
    let qclass = prop_oneof![
        proptest::sample::select(&[CLASS_IN, CLASS_ANY, 3][..]),
        any::<u16>()
    ];
    let qdcount = prop_oneof![4 => Just(1u16), 1 => any::<u16>()];
    let tail = prop_oneof![
        4 => Just(vec![]),
        1 => proptest::collection::vec(any::<u8>(), 1..3),
    ];
    (
        any::<u16>(),
        any::<u16>(),
        qdcount,
        name,
        qtype,
        qclass,
        tail,
    )
        .prop_map(|(id, bits, qd, name, qtype, qclass, tail)| {
            let mut q = query(id, bits & (RD | CD), qd, &name, qtype, qclass);
            q.extend_from_slice(&tail);
            q
        })
}

/// Valid queries damaged by a few edits.
fn damaged_query() -> impl Strategy<Value = Vec<u8>> {
    (valid_query(), fuzz::edits(DNS_BYTES, 6)).prop_map(|(q, e)| fuzz::apply(q, &e))
}

/// A header, then `cells.len()` cells of 6 bytes (a label of 3 bytes and a pointer,
/// a pointer, or the root), each pointing at a cell or anywhere (`.1` >= cells).
fn pointer_maze() -> impl Strategy<Value = Vec<u8>> {
    let cell = (0u8..3, 0usize..40, any::<u16>());
    proptest::collection::vec(cell, 1..24).prop_map(|cells| {
        let n = cells.len();
        let mut q = query(0x1234, RD, 1, "", TYPE_A, CLASS_IN);
        q.truncate(HEADER_LEN);
        for (kind, to, anywhere) in cells {
            let target = if to < n {
                HEADER_LEN + 6 * to
            } else {
                usize::from(anywhere & 0x3FFF)
            };
            let ptr = [0xC0 | (target >> 8) as u8, target as u8];
            match kind {
                0 => q.extend_from_slice(&[3, b'w', b'e', b'b', ptr[0], ptr[1]]),
                1 => q.extend_from_slice(&[ptr[0], ptr[1], 0, 1, 0, 1]),
                _ => q.extend_from_slice(&[0, 0, 1, 0, 1, 0]),
            }
        }
        q
    })
}

/// Names of labels of 1 to 63 bytes, around the 255-byte limit.
fn long_name_query() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec((1usize..=63, any::<u8>()), 1..=9).prop_map(|labels| {
        let name: Vec<String> = labels
            .iter()
            .map(|(len, c)| char::from(b'a' + c % 26).to_string().repeat(*len))
            .collect();
        query(7, RD, 1, &name.join("."), TYPE_A, CLASS_IN)
    })
}

/// Any of the above, or arbitrary bytes.
fn hostile_packet() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        valid_query(),
        damaged_query(),
        pointer_maze(),
        long_name_query(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_get_a_bounded_reply_or_none(
        msg in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        check(&msg);
    }

    #[test]
    fn arbitrary_bytes_after_a_query_header_get_formerr_or_a_sane_reply(
        id in any::<u16>(),
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut msg = query(id, RD, 1, "", TYPE_A, CLASS_IN);
        msg.truncate(HEADER_LEN);
        msg.extend_from_slice(&body);
        check(&msg);
    }

    #[test]
    fn valid_queries_are_answered_with_their_question(q in valid_query()) {
        prop_assert!(reference_question(&q).is_some());
        check(&q);
    }

    #[test]
    fn truncated_queries_get_formerr_or_a_sane_reply(q in valid_query(), cut in any::<usize>()) {
        check(&q[..cut % (q.len() + 1)]);
    }

    #[test]
    fn damaged_queries_get_formerr_or_a_sane_reply(q in damaged_query()) {
        check(&q);
    }

    #[test]
    fn compression_pointers_that_loop_get_formerr(q in pointer_maze()) {
        check(&q);
    }

    #[test]
    fn names_past_255_bytes_get_formerr(q in long_name_query()) {
        let wire = q.len() - HEADER_LEN - 4;
        prop_assert_eq!(reference_question(&q).is_some(), wire <= MAX_NAME);
        check(&q);
    }
}

/// `n` pointers, each to the next, then the name `web`.
fn pointer_chain(n: usize) -> Vec<u8> {
    let mut q = query(9, RD, 1, "", TYPE_A, CLASS_IN);
    q.truncate(HEADER_LEN);
    // Type and class sit right after the first pointer.
    let start = HEADER_LEN + 2 + 4;
    q.extend_from_slice(&[0xC0, start as u8]);
    q.extend_from_slice(&[0, 1, 0, 1]);
    for i in 1..n {
        let next = start + 2 * i;
        q.extend_from_slice(&[0xC0 | (next >> 8) as u8, next as u8]);
    }
    q.extend_from_slice(b"\x03web\x00");
    q
}

fn rcode(reply: &[u8]) -> u16 {
    u16_at(reply, 2).expect("header") & 0xF
}

#[test]
fn a_name_of_255_bytes_is_answered_and_one_of_256_gets_formerr() {
    let name = longest_name();
    let q = query(1, RD, 1, &name, TYPE_A, CLASS_IN);
    assert_eq!(q.len() - HEADER_LEN - 4, 255);
    let r = read_reply(&answer(&q, &NAMES, ZONE).expect("ours"));
    assert_eq!(r.answers.len(), 1);
    check(&q);

    let q = query(1, RD, 1, &format!("{name}x"), TYPE_A, CLASS_IN);
    assert_eq!(q.len() - HEADER_LEN - 4, 256);
    assert_eq!(
        rcode(&answer(&q, &NAMES, ZONE).expect("FORMERR")),
        RCODE_FORMERR
    );
    check(&q);
}

#[test]
fn a_label_of_63_bytes_is_read_and_a_length_of_64_is_formerr() {
    let label = "x".repeat(63);
    let q = query(2, RD, 1, &format!("{label}.orc.internal"), TYPE_A, CLASS_IN);
    assert_eq!(
        rcode(&answer(&q, &NAMES, ZONE).expect("ours")),
        RCODE_NXDOMAIN
    );
    let mut q = query(
        2,
        RD,
        1,
        &format!("{label}x.orc.internal"),
        TYPE_A,
        CLASS_IN,
    );
    assert_eq!(q[HEADER_LEN], 64, "a reserved label type, not a length");
    assert_eq!(
        rcode(&answer(&q, &NAMES, ZONE).expect("FORMERR")),
        RCODE_FORMERR
    );
    check(&q);
    q[HEADER_LEN] = 0x80;
    assert_eq!(
        rcode(&answer(&q, &NAMES, ZONE).expect("FORMERR")),
        RCODE_FORMERR
    );
}

#[test]
fn pointer_loops_and_chains_past_the_limit_get_formerr() {
    let mut q = query(3, RD, 1, "", TYPE_A, CLASS_IN);
    q.truncate(HEADER_LEN);
    // A pointer to itself, then two pointing at each other.
    q.extend_from_slice(&[0xC0, HEADER_LEN as u8, 0, 1, 0, 1]);
    assert_eq!(
        rcode(&answer(&q, &NAMES, ZONE).expect("FORMERR")),
        RCODE_FORMERR
    );
    q[HEADER_LEN + 1] = HEADER_LEN as u8 + 6;
    q.extend_from_slice(&[0xC0, HEADER_LEN as u8]);
    assert_eq!(
        rcode(&answer(&q, &NAMES, ZONE).expect("FORMERR")),
        RCODE_FORMERR
    );
    // A pointer past the end.
    let mut q = query(3, RD, 1, "", TYPE_A, CLASS_IN);
    q.truncate(HEADER_LEN);
    q.extend_from_slice(&[0xFF, 0xFF, 0, 1, 0, 1]);
    assert_eq!(
        rcode(&answer(&q, &NAMES, ZONE).expect("FORMERR")),
        RCODE_FORMERR
    );

    let q = pointer_chain(MAX_POINTERS);
    let r = read_reply(&answer(&q, &NAMES, ZONE).expect("ours"));
    assert_eq!(r.answers.len(), 1, "{MAX_POINTERS} pointers are followed");
    check(&q);
    let q = pointer_chain(MAX_POINTERS + 1);
    assert_eq!(
        rcode(&answer(&q, &NAMES, ZONE).expect("FORMERR")),
        RCODE_FORMERR
    );
    check(&q);
}

#[test]
fn a_huge_question_count_reads_the_first_question_only() {
    let q = query(4, RD, u16::MAX, "web", TYPE_A, CLASS_IN);
    let r = read_reply(&answer(&q, &NAMES, ZONE).expect("ours"));
    assert_eq!(r.answers.len(), 1);
    assert!(r.question.is_some());
    check(&q);
}

#[test]
fn the_largest_answer_fits_a_tcp_frame_and_is_cut_for_udp() {
    let q = query(5, RD, 1, "tasks.huge.orc.internal", TYPE_A, CLASS_IN);
    let reply = answer(&q, &NAMES, ZONE).expect("ours");
    assert!(reply.len() <= usize::from(u16::MAX));
    let r = read_reply(&reply);
    assert!(
        r.answers.len() > 4000 && r.answers.len() < 5000,
        "{}",
        r.answers.len()
    );
    assert!(answer_udp(&q, &NAMES, ZONE).expect("ours").len() <= UDP_LIMIT);
    check(&q);
}

/// `n` hostile packets, the same in every run, then a query for `web`.
fn barrage(n: usize) -> Vec<Vec<u8>> {
    let mut runner = TestRunner::deterministic();
    let strategy = hostile_packet();
    let mut v: Vec<Vec<u8>> = (0..n)
        .map(|_| strategy.new_tree(&mut runner).expect("a packet").current())
        .collect();
    v.push(query(0xD0D0, RD, 1, "web", TYPE_A, CLASS_IN));
    v
}

/// What the server sends for `msg` with no upstream: our answer, or SERVFAIL for a
/// query it would forward, or nothing.
fn expected(msg: &[u8], udp: bool) -> Option<Vec<u8>> {
    let reply = if udp {
        answer_udp(msg, &NAMES, ZONE)
    } else {
        answer(msg, &NAMES, ZONE)
    };
    match reply {
        Some(r) => Some(r),
        None if forwardable(msg) => error_reply(msg, ResponseCode::ServFail),
        None => None,
    }
}

const WAIT: Duration = Duration::from_secs(5);

async fn server() -> (Arc<DnsServer>, CancellationToken) {
    let stop = CancellationToken::new();
    let server = DnsServer::start_with(
        "127.0.0.1:0".parse().expect("address"),
        vec![],
        ZONE.to_string(),
        stop.clone(),
        Duration::from_millis(100),
    )
    .await
    .expect("server starts");
    server.set_names(NAMES.clone());
    (server, stop)
}

#[tokio::test]
async fn the_udp_server_answers_hostile_packets_as_answer_does_and_keeps_serving() {
    let (server, stop) = server().await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.connect(server.local_addr()).await.expect("connect");
    let mut buf = vec![0u8; 65536];
    let packets = barrage(400);
    let mut replies = 0;
    for msg in &packets {
        socket.send(msg).await.expect("send");
        let Some(want) = expected(msg, true) else {
            continue;
        };
        let len = tokio::time::timeout(WAIT, socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no reply to {msg:?}"))
            .expect("recv");
        assert!(len <= UDP_LIMIT, "{len} bytes over UDP for {msg:?}");
        assert_eq!(buf[..len], want[..], "reply to {msg:?}");
        replies += 1;
    }
    // Each reply matched its packet, the last one included: no stray reply came.
    assert!(replies > 200, "most packets are answered: {replies}");
    stop.cancel();
}

#[tokio::test]
async fn the_tcp_server_survives_hostile_frames_and_keeps_serving() {
    let (server, stop) = server().await;
    let mut stream = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    // An empty frame is no query.
    write_frame(&mut stream, &[]).await.expect("write");
    for msg in barrage(200) {
        write_frame(&mut stream, &msg).await.expect("write");
        let Some(want) = expected(&msg, false) else {
            continue;
        };
        let got = tokio::time::timeout(WAIT, read_frame(&mut stream))
            .await
            .unwrap_or_else(|_| panic!("no reply to {msg:?}"))
            .expect("read")
            .expect("a frame");
        assert_eq!(got, want, "reply to {msg:?}");
    }

    // A frame that claims more than it brings, then EOF: the server hangs up.
    stream
        .write_all(&[0xFF, 0xFF, 1, 2, 3])
        .await
        .expect("write");
    stream.shutdown().await.expect("shutdown");
    let end = tokio::time::timeout(WAIT, read_frame(&mut stream))
        .await
        .expect("the server hangs up");
    assert!(matches!(end, Ok(None)), "{end:?}");

    // A new connection is served.
    let mut stream = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let q = query(6, RD, 1, "tasks.huge.orc.internal", TYPE_A, CLASS_IN);
    write_frame(&mut stream, &q).await.expect("write");
    let got = tokio::time::timeout(WAIT, read_frame(&mut stream))
        .await
        .expect("a reply")
        .expect("read")
        .expect("a frame");
    assert_eq!(Some(got), answer(&q, &NAMES, ZONE), "in full over TCP");
    stop.cancel();
}

#[tokio::test]
async fn tcp_clients_past_the_cap_are_closed_and_the_others_served() {
    let (server, stop) = server().await;
    let addr = server.local_addr();
    // Each held connection announces a whole frame and sends none of it.
    let mut held = Vec::new();
    for _ in 0..MAX_TCP_CONNS {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(&[0xFF, 0xFF]).await.expect("write");
        held.push(s);
    }
    let mut extra = TcpStream::connect(addr).await.expect("connect");
    let end = tokio::time::timeout(WAIT, read_frame(&mut extra))
        .await
        .expect("closed at once");
    assert!(matches!(end, Ok(None)), "{end:?}");

    // One held connection goes: its place is free again.
    drop(held.swap_remove(0));
    let q = query(8, RD, 1, "web", TYPE_A, CLASS_IN);
    let mut served = None;
    for _ in 0..50 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        write_frame(&mut s, &q).await.expect("write");
        if let Ok(Ok(Some(reply))) = tokio::time::timeout(WAIT, read_frame(&mut s)).await {
            served = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        served,
        answer(&q, &NAMES, ZONE),
        "served once a place is free"
    );
    stop.cancel();
}
