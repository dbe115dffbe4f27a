//! Connection identity and the per-worker connection table.
//!
//! The table is fixed-capacity: its slab of records and its hash index are
//! allocated once, at start, from the allocator it is given (hugepage memory in
//! the dataplane, the global heap in unit tests), and never grow. A full table
//! refuses new connections (counted by the caller) and keeps existing ones.

pub mod table;
pub use table::{ConnTable, SlotId};

use crate::parse::{Addr, Family};

/// Which way a packet travels relative to the connection's first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Dir {
    Original = 0,
    Reply = 1,
}

impl Dir {
    pub fn idx(self) -> usize {
        self as usize
    }
    pub fn other(self) -> Dir {
        match self {
            Dir::Original => Dir::Reply,
            Dir::Reply => Dir::Original,
        }
    }
}

/// A connection's canonical key: the two endpoints ordered so that both
/// directions of a flow give the same key. `zone` is the bridge the flow
/// crosses (both ports of a bridge share it), `vlan` its 802.1Q id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct ConnKey {
    pub lo_addr: Addr,
    pub hi_addr: Addr,
    pub lo_port: u16,
    pub hi_port: u16,
    pub proto: u8,
    pub family: u8,
    pub zone: u16,
    pub vlan: u16,
}

/// One side of a flow as a packet names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: Addr,
    pub port: u16,
}

impl ConnKey {
    /// The canonical key of a packet from `src` to `dst`, and whether `src` is
    /// the key's low side.
    #[inline]
    pub fn canonical(family: Family, proto: u8, src: Endpoint, dst: Endpoint, zone: u16, vlan: u16) -> (ConnKey, bool) {
        // Big-endian u128s order as the address bytes do; compared as
        // integers, not byte by byte (~20 instructions a packet less).
        let src_is_lo = (u128::from_be_bytes(src.addr), src.port) <= (u128::from_be_bytes(dst.addr), dst.port);
        let (lo, hi) = if src_is_lo { (src, dst) } else { (dst, src) };
        (ConnKey { lo_addr: lo.addr, hi_addr: hi.addr, lo_port: lo.port, hi_port: hi.port, proto, family: family as u8, zone, vlan }, src_is_lo)
    }

    /// The connection id: xxh3-64 of the canonical key's bytes in a fixed
    /// order. Stable across builds and restarts, so a restored record can be
    /// checked against the key it carries.
    #[inline]
    pub fn id(&self) -> ConnId {
        let mut b = [0u8; 42];
        b[..16].copy_from_slice(&self.lo_addr);
        b[16..32].copy_from_slice(&self.hi_addr);
        b[32..34].copy_from_slice(&self.lo_port.to_be_bytes());
        b[34..36].copy_from_slice(&self.hi_port.to_be_bytes());
        b[36] = self.proto;
        b[37] = self.family;
        b[38..40].copy_from_slice(&self.zone.to_be_bytes());
        b[40..42].copy_from_slice(&self.vlan.to_be_bytes());
        ConnId(xxhash_rust::xxh3::xxh3_64(&b))
    }
}

/// Where a key sits in a table's index: a hash keyed with a seed drawn when
/// the table is made, cheap to form per packet. Not the [`ConnId`], which
/// must be the same in every process (the checkpoint's key) and costs an
/// xxh3 over 42 bytes; and unlike it, not something a sender can aim
/// collisions at from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexHash(pub u64);

impl ConnKey {
    /// The key as three words, what the index hashes.
    #[inline(always)]
    pub fn words(&self) -> [u128; 3] {
        let rest = u128::from(self.lo_port)
            | u128::from(self.hi_port) << 16
            | u128::from(self.proto) << 32
            | u128::from(self.family) << 40
            | u128::from(self.zone) << 48
            | u128::from(self.vlan) << 64;
        [u128::from_ne_bytes(self.lo_addr), u128::from_ne_bytes(self.hi_addr), rest]
    }
}

/// A connection's id, formed from its canonical key (addresses, ports,
/// protocol, zone, VLAN); embedded in every checkpoint delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[repr(transparent)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::v4_mapped;

    #[test]
    fn both_directions_share_a_key_and_id() {
        let a = Endpoint { addr: v4_mapped([10, 0, 0, 1]), port: 40000 };
        let b = Endpoint { addr: v4_mapped([10, 0, 0, 2]), port: 80 };
        let (k1, lo1) = ConnKey::canonical(Family::V4, 6, a, b, 0, 0);
        let (k2, lo2) = ConnKey::canonical(Family::V4, 6, b, a, 0, 0);
        assert_eq!(k1, k2);
        assert_ne!(lo1, lo2);
        assert_eq!(k1.id(), k2.id());
        let (k3, _) = ConnKey::canonical(Family::V4, 6, a, b, 1, 0);
        assert_ne!(k1.id(), k3.id(), "the zone is part of the id");
        let (k4, _) = ConnKey::canonical(Family::V4, 17, a, b, 0, 0);
        assert_ne!(k1.id(), k4.id(), "the protocol is part of the id");
    }

    proptest::proptest! {
        /// The low side is the one whose (address bytes, port) sort first,
        /// and both directions give one key.
        #[test]
        fn the_low_side_sorts_first_by_address_bytes_then_port(a: [u8; 16], b: [u8; 16], pa: u16, pb: u16, same_addr: bool) {
            let b = if same_addr { a } else { b };
            let (x, y) = (Endpoint { addr: a, port: pa }, Endpoint { addr: b, port: pb });
            let (k, x_is_lo) = ConnKey::canonical(Family::V6, 6, x, y, 0, 0);
            proptest::prop_assert_eq!(x_is_lo, (a, pa) <= (b, pb));
            let (k2, y_is_lo) = ConnKey::canonical(Family::V6, 6, y, x, 0, 0);
            proptest::prop_assert_eq!(k, k2);
            proptest::prop_assert_eq!(y_is_lo, (b, pb) <= (a, pa));
        }
    }
}
