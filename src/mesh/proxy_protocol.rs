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
}
