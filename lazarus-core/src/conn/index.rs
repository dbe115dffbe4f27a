//! The connection index: which slab position holds a key's record. Buckets
//! of one cache line each, as DPDK's rte_hash and VPP's bihash lay theirs
//! out: a lookup reads one line (the bucket, addressed by the hash's low
//! bits) before the record, and the line can be fetched as soon as the
//! hash is known, a burst ahead of the lookup. hashbrown's index reads two
//! (its control group, then the entry) and offers no way to start either.
//!
//! An entry is a slab position plus one and, above it, as many bits of the
//! hash's upper half as fit (the digest), its top bit always set; 0 is an
//! empty entry, which no digest matches. A full
//! bucket sends an entry on to the next one and counts it in its
//! `overflow` (F14's outbound overflow count), so a lookup goes on past a
//! bucket only while that count is not zero, and a removal needs no
//! tombstone: it lowers the counts along the way.

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec;

/// Entries a bucket holds: 15 of 4 bytes and the overflow count fill 64.
const WAYS: usize = 15;

/// Connections a bucket holds on average in a full table: 8 of 15 keeps
/// buckets that overflow below one in a hundred.
const LOAD: usize = 8;

#[repr(C, align(64))]
#[derive(Clone, Copy, Default)]
pub(super) struct Bucket {
    /// `WAYS` entries, then the overflow count: the entries that passed this
    /// bucket because it was full. One array, so that a lookup compares all
    /// sixteen words at once; the count never matches a digest, whose top
    /// bit is set.
    words: [u32; WAYS + 1],
}

impl Bucket {
    /// Bit i set where word i carries `digest` (the entry's bits above the
    /// slot): sixteen masks and compares, four words a vector register, and
    /// one byte mask (the compiler's own vectorisation of the loop below
    /// takes twice the instructions).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn matching(&self, digest: u32, slot_mask: u32) -> u32 {
        use safe_arch::{
            bitand_m128i, cmp_eq_mask_i32_m128i, m128i, move_mask_i8_m128i, pack_i16_to_i8_m128i,
            pack_i32_to_i16_m128i, set_splat_i32_m128i,
        };
        let (mask, want) = (set_splat_i32_m128i(!slot_mask as i32), set_splat_i32_m128i(digest as i32));
        let (quads, _) = self.words.as_chunks::<4>();
        let eq = |k: usize| cmp_eq_mask_i32_m128i(bitand_m128i(m128i::from(quads[k]), mask), want);
        let (lo, hi) = (pack_i32_to_i16_m128i(eq(0), eq(1)), pack_i32_to_i16_m128i(eq(2), eq(3)));
        move_mask_i8_m128i(pack_i16_to_i8_m128i(lo, hi)) as u32
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[inline(always)]
    fn matching(&self, digest: u32, slot_mask: u32) -> u32 {
        let mut m = 0u32;
        for (i, &e) in self.words.iter().enumerate() {
            m |= u32::from((e & !slot_mask) == digest) << i;
        }
        m
    }

    #[cfg(test)]
    fn entries(&self) -> &[u32] {
        &self.words[..WAYS]
    }

    #[inline(always)]
    fn entries_mut(&mut self) -> &mut [u32] {
        &mut self.words[..WAYS]
    }

    #[inline(always)]
    fn overflow(&self) -> u32 {
        self.words[WAYS]
    }

    #[inline(always)]
    fn overflow_mut(&mut self) -> &mut u32 {
        &mut self.words[WAYS]
    }
}

pub(super) struct Index<A: Allocator> {
    buckets: Vec<Bucket, A>,
    mask: usize,
    len: usize,
    slot_bits: u32,
}

impl<A: Allocator> Index<A> {
    /// An index for slab positions below `capacity`; it never grows.
    pub(super) fn with_capacity_in(capacity: u32, alloc: A) -> Self {
        let n = (capacity as usize).div_ceil(LOAD).next_power_of_two().max(2);
        let mut buckets = Vec::with_capacity_in(n, alloc);
        buckets.resize(n, Bucket::default());
        // Positions plus one, up to `capacity`, must fit below the digest.
        let slot_bits = (u32::BITS - capacity.leading_zeros()).clamp(1, 31);
        Index { buckets, mask: n - 1, len: 0, slot_bits }
    }

    #[inline(always)]
    fn slot_mask(&self) -> u32 {
        (1u32 << self.slot_bits) - 1
    }

    #[inline(always)]
    fn digest(&self, h: u64) -> u32 {
        ((h >> 32) as u32) << self.slot_bits | 1 << 31
    }

    #[inline(always)]
    fn home(&self, h: u64) -> usize {
        h as usize & self.mask
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
    }

    /// The bucket a lookup of `h` reads first, to fetch ahead of it.
    #[inline(always)]
    pub(super) fn home_bucket(&self, h: u64) -> &Bucket {
        &self.buckets[self.home(h)]
    }

    /// The first slab position whose entry carries `h`'s digest and, among
    /// those, `is_it` accepts.
    #[inline(always)]
    pub(super) fn find(&self, h: u64, is_it: impl Fn(u32) -> bool) -> Option<u32> {
        let (digest, slot_mask) = (self.digest(h), self.slot_mask());
        let mut b = self.home(h);
        loop {
            let bucket = &self.buckets[b];
            let mut m = bucket.matching(digest, slot_mask);
            while m != 0 {
                let slot = (bucket.words[m.trailing_zeros() as usize] & slot_mask) - 1;
                if is_it(slot) {
                    return Some(slot);
                }
                m &= m - 1;
            }
            if bucket.overflow() == 0 {
                return None;
            }
            b = (b + 1) & self.mask;
        }
    }

    /// Adds slab position `slot` under `h`. The caller never adds more
    /// positions than the capacity, so a free entry is always found.
    #[inline]
    pub(super) fn insert(&mut self, h: u64, slot: u32) {
        let e = (slot + 1) | self.digest(h);
        let mut b = self.home(h);
        loop {
            let bucket = &mut self.buckets[b];
            if let Some(free) = bucket.entries_mut().iter_mut().find(|x| **x == 0) {
                *free = e;
                self.len += 1;
                return;
            }
            *bucket.overflow_mut() += 1;
            b = (b + 1) & self.mask;
        }
    }

    /// Removes slab position `slot`, added under `h`; false if it is not
    /// there.
    #[inline]
    pub(super) fn remove(&mut self, h: u64, slot: u32) -> bool {
        let e = (slot + 1) | self.digest(h);
        let home = self.home(h);
        let mut b = home;
        loop {
            let bucket = &mut self.buckets[b];
            if let Some(x) = bucket.entries_mut().iter_mut().find(|x| **x == e) {
                *x = 0;
                self.len -= 1;
                // The buckets it had passed no longer send lookups on for it.
                let mut p = home;
                while p != b {
                    *self.buckets[p].overflow_mut() -= 1;
                    p = (p + 1) & self.mask;
                }
                return true;
            }
            if bucket.overflow() == 0 {
                return false;
            }
            b = (b + 1) & self.mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_api2::alloc::Global;

    /// Hashes that all land in bucket 0 with the same digest: the worst
    /// case, every entry past the first 15 overflowing.
    fn colliding(n: u32) -> u64 {
        (7u64 << 32) | (u64::from(n) << 40)
    }

    #[test]
    fn overflowing_buckets_keep_every_entry_findable_and_removable() {
        let mut ix: Index<Global> = Index::with_capacity_in(64, Global);
        assert_eq!(ix.buckets.len(), 8);
        let same = |_: u32| 7u64 << 32;
        for s in 0..40 {
            ix.insert(same(s), s);
        }
        assert_eq!(ix.len(), 40);
        assert_eq!(ix.buckets[0].overflow(), 25, "15 stay home, 25 pass bucket 0");
        assert_eq!(ix.buckets[1].overflow(), 10);
        for s in 0..40 {
            assert_eq!(ix.find(same(s), |x| x == s), Some(s), "slot {s}");
        }
        // Removing a home entry leaves the overflow counts; removing one
        // that passed bucket 0 and 1 lowers both.
        assert!(ix.remove(same(3), 3));
        assert_eq!(ix.buckets[0].overflow(), 25);
        assert!(ix.remove(same(35), 35));
        assert_eq!((ix.buckets[0].overflow(), ix.buckets[1].overflow()), (24, 9));
        assert!(!ix.remove(same(35), 35), "already gone");
        assert_eq!(ix.find(same(35), |x| x == 35), None);
        for s in (0..40).filter(|s| ![3, 35].contains(s)) {
            assert!(ix.remove(same(s), s), "slot {s}");
        }
        assert_eq!(ix.len(), 0);
        assert!(ix.buckets.iter().all(|b| b.overflow() == 0 && b.entries().iter().all(|&e| e == 0)));
    }

    #[test]
    fn digests_tell_keys_of_one_bucket_apart() {
        let mut ix: Index<Global> = Index::with_capacity_in(64, Global);
        for s in 0..10 {
            ix.insert(colliding(s), s);
        }
        for s in 0..10 {
            assert_eq!(ix.find(colliding(s), |_| true), Some(s), "the digest alone finds {s}");
        }
        assert_eq!(ix.find(colliding(99), |_| true), None);
    }

    #[test]
    fn the_last_slab_position_of_a_power_of_two_capacity_fits() {
        let cap = 1u32 << 10;
        let mut ix: Index<Global> = Index::with_capacity_in(cap, Global);
        let h = u64::MAX;
        ix.insert(h, cap - 1);
        assert_eq!(ix.find(h, |_| true), Some(cap - 1));
        assert!(ix.remove(h, cap - 1));
    }

    #[test]
    fn the_chain_wraps_past_the_last_bucket() {
        let mut ix: Index<Global> = Index::with_capacity_in(64, Global);
        let last = ix.mask as u64;
        for s in 0..20 {
            ix.insert(last | (u64::from(s) << 32), s);
        }
        assert_eq!(ix.buckets[ix.mask].overflow(), 5);
        for s in 0..20 {
            assert_eq!(ix.find(last | (u64::from(s) << 32), |x| x == s), Some(s));
        }
    }
}

#[cfg(test)]
mod model {
    use super::*;
    use allocator_api2::alloc::Global;
    use std::collections::HashMap;

    /// Random inserts and removes into a small index with few distinct
    /// bucket positions and digests (long overflow chains, shared digests),
    /// checked after every step against a map.
    #[test]
    fn agrees_with_a_map_under_random_churn() {
        let cap = 200u32;
        let mut ix: Index<Global> = Index::with_capacity_in(cap, Global);
        let mut live: HashMap<u32, u64> = HashMap::new();
        let mut free: std::vec::Vec<u32> = (0..cap).collect();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..100_000 {
            let r = rnd();
            if live.len() < cap as usize && (r & 1 == 0 || live.is_empty()) {
                let slot = free.swap_remove((r >> 8) as usize % free.len());
                // Four bucket positions of the index's 32, eight digests.
                let h = (((r >> 20) & 3) * 8) | (((r >> 24) & 7) << 32);
                ix.insert(h, slot);
                live.insert(slot, h);
            } else if let Some((&slot, &h)) = live.iter().nth((r >> 8) as usize % live.len().max(1))
            {
                assert!(ix.remove(h, slot), "step {step}: slot {slot} not removed");
                live.remove(&slot);
                free.push(slot);
            }
            assert_eq!(ix.len(), live.len());
            if step % 97 == 0 {
                for (&slot, &h) in &live {
                    assert_eq!(ix.find(h, |s| s == slot), Some(slot), "step {step}");
                }
            }
        }
        let passed: u32 = ix.buckets.iter().map(|b| b.overflow()).sum();
        let chained: usize = live
            .iter()
            .map(|(&slot, &h)| {
                let e = (slot + 1) | ix.digest(h);
                let mut b = ix.home(h);
                let mut n = 0;
                while !ix.buckets[b].entries().contains(&e) {
                    n += 1;
                    b = (b + 1) & ix.mask;
                }
                n
            })
            .sum();
        assert_eq!(
            passed as usize, chained,
            "overflow counts are exactly the buckets entries passed"
        );
    }
}
