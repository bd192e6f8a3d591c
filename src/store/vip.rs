//! Virtual IPs for service discovery: one per service and one per task, from the
//! cluster's VIP range (`orc init --vip-range`, default [`DEFAULT_VIP_RANGE`]).
//!
//! The first address of the range is the network, the second is the cluster DNS
//! server ([`VipRange::dns`]) and the last is never used; the rest are handed out in
//! turn from a cursor kept with the cluster, so an address freed by a removed task is
//! not reused before the whole range has gone round (stale DNS caches then meet nobody
//! rather than another service). Allocation happens when a command is applied, so every
//! manager computes the same addresses. Pure.

use std::net::Ipv4Addr;

use crate::error::{Error, Result};

/// The default VIP range.
pub const DEFAULT_VIP_RANGE: &str = "10.233.0.0/16";

/// An IPv4 range `a.b.c.d/n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipRange {
    base: u32,
    bits: u8,
}

impl VipRange {
    /// Parses `a.b.c.d/n` with 8 ≤ n ≤ 28; the address is masked to the network.
    pub fn parse(s: &str) -> Result<VipRange> {
        let bad = || {
            Error::InvalidInput(format!(
                "vip_range: {s:?}: expected an IPv4 network such as {DEFAULT_VIP_RANGE} (prefix 8 to 28)"
            ))
        };
        let (ip, bits) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let bits: u8 = bits.parse().map_err(|_| bad())?;
        if !(8..=28).contains(&bits) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - bits);
        Ok(VipRange {
            base: u32::from(ip) & mask,
            bits,
        })
    }

    /// The range's size.
    pub fn size(&self) -> u32 {
        1u32 << (32 - self.bits)
    }

    /// How many addresses may be allocated: all but the network's, the DNS's (the
    /// second) and the broadcast's ([`VipRange::allocate`]).
    pub fn capacity(&self) -> u32 {
        self.size() - 3
    }

    /// The address at `offset` from the network address.
    pub fn at(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + offset)
    }

    /// Where every node serves the cluster's DNS.
    pub fn dns(&self) -> Ipv4Addr {
        self.at(1)
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip).wrapping_sub(self.base) < self.size()
    }

    /// The next free address after `cursor` (an offset; allocatable offsets are
    /// 2..size-1; 0 = none yet), skipping those `used` says are; returns it and the new
    /// cursor, or `None` when the range is full.
    pub fn allocate(
        &self,
        cursor: u32,
        used: impl Fn(Ipv4Addr) -> bool,
    ) -> Option<(Ipv4Addr, u32)> {
        let first = 2i64;
        let count = i64::from(self.capacity());
        let last = i64::from(cursor.max(1)) - first;
        for i in 1..=count {
            let offset = (first + (last + i).rem_euclid(count)) as u32;
            let ip = self.at(offset);
            if !used(ip) {
                return Some((ip, offset));
            }
        }
        None
    }
}

impl std::fmt::Display for VipRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn parses_and_masks_and_refuses_nonsense() {
        let r = VipRange::parse("10.233.7.9/16").unwrap();
        assert_eq!(r.to_string(), "10.233.0.0/16");
        assert_eq!(r.dns(), Ipv4Addr::new(10, 233, 0, 1));
        assert!(r.contains(Ipv4Addr::new(10, 233, 255, 254)));
        assert!(!r.contains(Ipv4Addr::new(10, 234, 0, 1)));
        for bad in [
            "10.0.0.0",
            "10.0.0.0/4",
            "10.0.0.0/30",
            "x/16",
            "10.0.0.0/x",
        ] {
            let e = VipRange::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("vip_range: "), "{e}");
        }
    }

    #[test]
    fn allocation_goes_round_skipping_used_and_reserved_addresses() {
        let r = VipRange::parse("10.1.1.0/28").unwrap(); // 16 addresses, 13 usable
        let mut used = BTreeSet::new();
        let mut cursor = 0;
        let mut got = vec![];
        while let Some((ip, c)) = r.allocate(cursor, |ip| used.contains(&ip)) {
            used.insert(ip);
            got.push(ip);
            cursor = c;
        }
        assert_eq!(got.len(), 13);
        assert_eq!(got[0], Ipv4Addr::new(10, 1, 1, 2));
        assert_eq!(got[12], Ipv4Addr::new(10, 1, 1, 14));
        assert!(!got.contains(&Ipv4Addr::new(10, 1, 1, 0)));
        assert!(!got.contains(&Ipv4Addr::new(10, 1, 1, 1)));
        assert!(!got.contains(&Ipv4Addr::new(10, 1, 1, 15)));
        // A freed address is not reused before the cursor has gone round.
        used.remove(&Ipv4Addr::new(10, 1, 1, 5));
        used.remove(&Ipv4Addr::new(10, 1, 1, 12));
        let (ip, _) = r.allocate(cursor, |ip| used.contains(&ip)).unwrap();
        assert_eq!(ip, Ipv4Addr::new(10, 1, 1, 5));
        let (ip, _) = r.allocate(6, |ip| used.contains(&ip)).unwrap();
        assert_eq!(ip, Ipv4Addr::new(10, 1, 1, 12));
    }
}
