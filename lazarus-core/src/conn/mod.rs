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
    /// Reply when `reply`, as a value rather than a branch: the two
    /// directions of the flows interleave in no order a predictor learns.
    #[inline(always)]
    pub fn reply_if(reply: bool) -> Dir {
        [Dir::Original, Dir::Reply][usize::from(reply)]
    }

    #[inline(always)]
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
/// crosses (both ports of a bridge share it), `vlan` its 802.1Q ids (see
/// [`vlan_ids`]).
#[derive(Debug, Clone, Copy, Eq, Default)]
#[repr(C)]
pub struct ConnKey {
    pub lo_addr: Addr,
    pub hi_addr: Addr,
    pub lo_port: u16,
    pub hi_port: u16,
    pub proto: u8,
    pub family: u8,
    pub zone: u16,
    pub vlan: u32,
}

/// The outer and inner (QinQ) VLAN ids packed in a key's or packet's `vlan`.
pub fn vlan_ids(vlan: u32) -> (u16, u16) {
    ((vlan & 0xfff) as u16, (vlan >> 12 & 0xfff) as u16)
}

/// Field by field, as derived, but on the index's three words: the probe
/// compares two keys per lookup, and eight fields cost far more compares
/// than three words. The words hold every field whole, so they are equal
/// exactly when the fields are.
impl PartialEq for ConnKey {
    #[inline(always)]
    fn eq(&self, other: &ConnKey) -> bool {
        let (a, b) = (self.words(), other.words());
        (a[0] == b[0]) & (a[1] == b[1]) & (a[2] == b[2])
    }
}

/// ::ffff:0.0.0.0 as a big-endian integer: an IPv4-mapped address is this
/// or'ed with the IPv4 address.
const V4_MAPPED: u128 = 0xffff << 32;

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
    pub fn canonical(
        family: Family,
        proto: u8,
        src: Endpoint,
        dst: Endpoint,
        zone: u16,
        vlan: u32,
    ) -> (ConnKey, bool) {
        // Big-endian u128s order as the address bytes do; compared as
        // integers, not byte by byte.
        let src_is_lo =
            (u128::from_be_bytes(src.addr), src.port) <= (u128::from_be_bytes(dst.addr), dst.port);
        let (lo, hi) = if src_is_lo { (src, dst) } else { (dst, src) };
        (
            ConnKey {
                lo_addr: lo.addr,
                hi_addr: hi.addr,
                lo_port: lo.port,
                hi_port: hi.port,
                proto,
                family: family as u8,
                zone,
                vlan,
            },
            src_is_lo,
        )
    }

    /// `canonical` for an IPv4 packet (addresses IPv4-mapped, no VLAN),
    /// its addresses given as big-endian integers: the order is decided on
    /// one integer of address and port instead of two 128-bit ones, and the
    /// mapped addresses are formed in registers, not byte by byte.
    #[inline(always)]
    pub fn canonical_v4(
        proto: u8,
        src: u32,
        sport: u16,
        dst: u32,
        dport: u16,
        zone: u16,
    ) -> (ConnKey, bool) {
        // The mapped addresses share their first 12 bytes, so they order as
        // their last four do.
        let s = u64::from(src) << 16 | u64::from(sport);
        let d = u64::from(dst) << 16 | u64::from(dport);
        let src_is_lo = s <= d;
        let (lo, hi) = if src_is_lo { (s, d) } else { (d, s) };
        let mapped = |a: u64| (V4_MAPPED | u128::from(a >> 16)).to_be_bytes();
        let key = ConnKey {
            lo_addr: mapped(lo),
            hi_addr: mapped(hi),
            lo_port: lo as u16,
            hi_port: hi as u16,
            proto,
            family: Family::V4 as u8,
            zone,
            vlan: 0,
        };
        (key, src_is_lo)
    }

    /// The connection id: xxh3-64 of the canonical key's bytes in a fixed
    /// order. Stable across builds and restarts, so a restored record can be
    /// checked against the key it carries. The inner VLAN id is hashed only
    /// when there is one, so that other keys keep the ids of the builds
    /// before QinQ keys.
    #[inline]
    pub fn id(&self) -> ConnId {
        let mut b = [0u8; 44];
        b[..16].copy_from_slice(&self.lo_addr);
        b[16..32].copy_from_slice(&self.hi_addr);
        b[32..34].copy_from_slice(&self.lo_port.to_be_bytes());
        b[34..36].copy_from_slice(&self.hi_port.to_be_bytes());
        b[36] = self.proto;
        b[37] = self.family;
        b[38..40].copy_from_slice(&self.zone.to_be_bytes());
        let (outer, inner) = vlan_ids(self.vlan);
        b[40..42].copy_from_slice(&outer.to_be_bytes());
        b[42..44].copy_from_slice(&inner.to_be_bytes());
        let n = if inner == 0 { 42 } else { 44 };
        ConnId(xxhash_rust::xxh3::xxh3_64(&b[..n]))
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

    fn pick<T>(same: bool, this: T, other: T) -> T {
        if same {
            this
        } else {
            other
        }
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

        /// Keys are equal exactly when every field is.
        #[test]
        fn keys_compare_field_by_field(a: [u8; 16], b: [u8; 16], ports: [u16; 4], proto: [u8; 2], family: [u8; 2], zone: [u16; 2], vlan: [u32; 2], same: [bool; 8]) {
            let x = ConnKey { lo_addr: a, hi_addr: b, lo_port: ports[0], hi_port: ports[1], proto: proto[0], family: family[0], zone: zone[0], vlan: vlan[0] };
            let y = ConnKey {
                lo_addr: pick(same[0], a, b),
                hi_addr: pick(same[1], b, a),
                lo_port: pick(same[2], ports[0], ports[2]),
                hi_port: pick(same[3], ports[1], ports[3]),
                proto: pick(same[4], proto[0], proto[1]),
                family: pick(same[5], family[0], family[1]),
                zone: pick(same[6], zone[0], zone[1]),
                vlan: pick(same[7], vlan[0], vlan[1]),
            };
            let fields = x.lo_addr == y.lo_addr && x.hi_addr == y.hi_addr && x.lo_port == y.lo_port && x.hi_port == y.hi_port
                && x.proto == y.proto && x.family == y.family && x.zone == y.zone && x.vlan == y.vlan;
            proptest::prop_assert_eq!(x == y, fields);
            proptest::prop_assert!(x == x);
        }

        /// The IPv4 shortcut forms the key and side `canonical` forms.
        #[test]
        fn the_v4_key_is_the_general_key(a: [u8; 4], b: [u8; 4], pa: u16, pb: u16, same_addr: bool, zone: u16, proto: u8) {
            let b = if same_addr { a } else { b };
            let general = ConnKey::canonical(Family::V4, proto, Endpoint { addr: v4_mapped(a), port: pa }, Endpoint { addr: v4_mapped(b), port: pb }, zone, 0);
            proptest::prop_assert_eq!(ConnKey::canonical_v4(proto, u32::from_be_bytes(a), pa, u32::from_be_bytes(b), pb, zone), general);
        }
    }
}
