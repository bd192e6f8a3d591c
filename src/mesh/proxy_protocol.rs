//! The PROXY protocol header (HAProxy's spec, versions 1 and 2), which the mesh sends to
//! a backend before the client's first byte when a published port asks for it
//! (`-p published=8080,target=80,proxy-protocol=v2`), so the backend learns the
//! client's address and the address the client connected to. Pure.

use std::net::{IpAddr, SocketAddr};

use crate::store::service::ProxyProtocol;

/// The 12 bytes every version 2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// Both addresses in one family: an IPv4 address next to an IPv6 one is written
/// IPv4-mapped.
fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => (src, dst),
        _ => (v6(src), v6(dst)),
    }
}

/// The header for a TCP connection from `src` (the client) to `dst` (the address it
/// connected to); empty for [`ProxyProtocol::None`].
pub fn header(version: ProxyProtocol, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = same_family(src, dst);
    match version {
        ProxyProtocol::None => vec![],
        ProxyProtocol::V1 => {
            let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                src.ip(),
                dst.ip(),
                src.port(),
                dst.port()
            )
            .into_bytes()
        }
        ProxyProtocol::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            // Version 2, command PROXY.
            out.push(0x21);
            let mut addrs = vec![];
            match (src.ip(), dst.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(0x11); // TCP over IPv4
                    addrs.extend_from_slice(&s.octets());
                    addrs.extend_from_slice(&d.octets());
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    out.push(0x21); // TCP over IPv6
                    addrs.extend_from_slice(&s.octets());
                    addrs.extend_from_slice(&d.octets());
                }
                _ => unreachable!("same_family gives one family"),
            }
            addrs.extend_from_slice(&src.port().to_be_bytes());
            addrs.extend_from_slice(&dst.port().to_be_bytes());
            out.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
            out.extend_from_slice(&addrs);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_is_one_text_line() {
        assert_eq!(
            header(
                ProxyProtocol::V1,
                a("10.77.0.1:51234"),
                a("10.77.0.12:8080")
            ),
            b"PROXY TCP4 10.77.0.1 10.77.0.12 51234 8080\r\n".to_vec()
        );
        assert_eq!(
            header(
                ProxyProtocol::V1,
                a("[2001:db8::1]:5"),
                a("[2001:db8::2]:80")
            ),
            b"PROXY TCP6 2001:db8::1 2001:db8::2 5 80\r\n".to_vec()
        );
        assert_eq!(
            header(ProxyProtocol::V1, a("10.0.0.1:5"), a("[2001:db8::2]:80")),
            b"PROXY TCP6 ::ffff:10.0.0.1 2001:db8::2 5 80\r\n".to_vec()
        );
        assert!(header(ProxyProtocol::None, a("10.0.0.1:5"), a("10.0.0.2:6")).is_empty());
    }

    #[test]
    fn v2_is_the_binary_layout() {
        let h = header(ProxyProtocol::V2, a("192.168.1.2:513"), a("10.0.0.3:80"));
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12]);
        want.extend_from_slice(&[192, 168, 1, 2, 10, 0, 0, 3, 2, 1, 0, 80]);
        assert_eq!(h, want);
        let h = header(ProxyProtocol::V2, a("[::1]:1"), a("[::2]:2"));
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(h[16 + 15], 1);
        assert_eq!(h[16 + 31], 2);
        assert_eq!(&h[48..], &[0, 1, 0, 2]);
    }

    mod props {
        //! The writer over every pair of addresses, read back by a reference reader
        //! written here from HAProxy's spec.

        use std::net::{Ipv4Addr, Ipv6Addr};

        use proptest::prelude::*;

        use super::*;

        /// The longest version 1 line the spec allows, CRLF included.
        const V1_MAX: usize = 107;

        fn addr() -> impl Strategy<Value = SocketAddr> {
            prop_oneof![
                (any::<[u8; 4]>(), any::<u16>())
                    .prop_map(|(ip, port)| SocketAddr::new(Ipv4Addr::from(ip).into(), port)),
                (any::<[u8; 16]>(), any::<u16>())
                    .prop_map(|(ip, port)| SocketAddr::new(Ipv6Addr::from(ip).into(), port)),
                (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| {
                    SocketAddr::new(Ipv4Addr::from(ip).to_ipv6_mapped().into(), port)
                }),
                Just(a("[::]:0")),
                Just(a("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")),
                Just(a("255.255.255.255:65535")),
            ]
        }

        /// What the header must carry: both addresses in one family, IPv4 written
        /// IPv4-mapped beside IPv6.
        fn expected(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
            if src.is_ipv4() == dst.is_ipv4() {
                return (src, dst);
            }
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(ip) => SocketAddr::new(ip.to_ipv6_mapped().into(), a.port()),
                IpAddr::V6(_) => a,
            };
            (v6(src), v6(dst))
        }

        /// Reads a version 1 line: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n`.
        fn read_v1(h: &[u8]) -> (SocketAddr, SocketAddr) {
            assert!(h.len() <= V1_MAX, "{} bytes", h.len());
            let line = std::str::from_utf8(h).expect("ASCII");
            let line = line.strip_suffix("\r\n").expect("ends in CRLF");
            assert!(!line.contains(['\r', '\n']), "one line");
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f.len(), 6, "{line:?}");
            assert_eq!(f[0], "PROXY");
            let ip = |s: &str| s.parse::<IpAddr>().expect("an address");
            let port = |s: &str| {
                assert!(s == "0" || !s.starts_with('0'), "no leading zero: {s}");
                s.parse::<u16>().expect("a port")
            };
            let (src, dst) = (ip(f[2]), ip(f[3]));
            let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            assert_eq!(f[1], family);
            assert_eq!(src.is_ipv4(), dst.is_ipv4(), "one family");
            (
                SocketAddr::new(src, port(f[4])),
                SocketAddr::new(dst, port(f[5])),
            )
        }

        /// Reads a version 2 header: signature, version and command, family, length,
        /// addresses and ports.
        fn read_v2(h: &[u8]) -> (SocketAddr, SocketAddr) {
            assert_eq!(h[..12], V2_SIGNATURE);
            assert_eq!(h[12], 0x21, "version 2, PROXY");
            let len = usize::from(u16::from_be_bytes([h[14], h[15]]));
            assert_eq!(h.len(), 16 + len, "the length counts what follows");
            let body = &h[16..];
            let (src, dst, ports): (IpAddr, IpAddr, &[u8]) = match (h[13], len) {
                (0x11, 12) => {
                    let ip = |at: usize| {
                        let o: [u8; 4] = body[at..at + 4].try_into().expect("4 bytes");
                        IpAddr::from(o)
                    };
                    (ip(0), ip(4), &body[8..])
                }
                (0x21, 36) => {
                    let ip = |at: usize| {
                        let o: [u8; 16] = body[at..at + 16].try_into().expect("16 bytes");
                        IpAddr::from(o)
                    };
                    (ip(0), ip(16), &body[32..])
                }
                other => panic!("family and length {other:?}"),
            };
            let port = |at: usize| u16::from_be_bytes([ports[at], ports[at + 1]]);
            (SocketAddr::new(src, port(0)), SocketAddr::new(dst, port(2)))
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            #[test]
            fn v1_is_one_line_of_at_most_107_bytes_that_reads_back(
                src in addr(),
                dst in addr(),
            ) {
                let h = header(ProxyProtocol::V1, src, dst);
                prop_assert_eq!(read_v1(&h), expected(src, dst));
            }

            #[test]
            fn v2_has_its_length_and_reads_back(src in addr(), dst in addr()) {
                let h = header(ProxyProtocol::V2, src, dst);
                prop_assert_eq!(read_v2(&h), expected(src, dst));
            }

            #[test]
            fn none_writes_nothing(src in addr(), dst in addr()) {
                prop_assert!(header(ProxyProtocol::None, src, dst).is_empty());
            }
        }

        #[test]
        fn the_longest_v1_line_fits() {
            let src = a("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
            let h = header(ProxyProtocol::V1, src, src);
            assert_eq!(h.len(), 104);
            assert_eq!(read_v1(&h), (src, src));
        }
    }
}
