use super::{ConnKey, IndexHash};
use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec;
use foldhash::fast::RandomState;
use hashbrown::HashTable;
use std::hash::{BuildHasher, Hasher};

/// What the table needs to know of a record.
pub trait TableEntry {
    fn key(&self) -> &ConnKey;
    /// TSC after which the record may be expired.
    fn deadline(&self) -> u64;
}

/// A record's place in the slab; stable for the record's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotId(pub u32);

/// The table is full: the new connection was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

/// One connection in the index: its slab position in the low `Packing::slot_bits`
/// bits, and above them as many bits of its [`IndexHash`] as fit (the digest),
/// bits the index's own tag and bucket position do not use. They let a lookup
/// settle on a record without reading it (see [`ConnTable::candidate`]), in
/// the 4 bytes the slab position alone took (an 8-byte entry with a 32-bit
/// digest was no faster; see docs/BENCHMARKS.md, tried and not kept).
#[derive(Debug, Clone, Copy)]
struct IndexEntry(u32);

/// How a table packs its [`IndexEntry`]s: fixed by its capacity.
#[derive(Debug, Clone, Copy)]
struct Packing {
    slot_bits: u32,
}

impl Packing {
    fn for_capacity(capacity: u32) -> Packing {
        // At least one digest bit even at the largest capacity the config
        // allows (2^26: 6 bits).
        Packing { slot_bits: (u32::BITS - capacity.saturating_sub(1).leading_zeros()).clamp(1, 31) }
    }

    /// Hash bits from 32 up: hashbrown takes a bucket's position from the low
    /// bits (27 reach the 2^27 buckets of the largest table) and its 7-bit
    /// tag from the top ones.
    #[inline(always)]
    fn digest(self, h: u64) -> u32 {
        ((h >> 32) as u32) << self.slot_bits
    }

    #[inline(always)]
    fn entry(self, slot: u32, h: u64) -> IndexEntry {
        IndexEntry(slot | self.digest(h))
    }

    #[inline(always)]
    fn slot(self, e: IndexEntry) -> u32 {
        e.0 & ((1 << self.slot_bits) - 1)
    }

    /// Whether `e`'s digest is `digest`'s.
    #[inline(always)]
    fn matches(self, e: IndexEntry, digest: u32) -> bool {
        (e.0 ^ digest) >> self.slot_bits == 0
    }
}

/// Fixed-capacity connection table: a slab of records plus a hashbrown index
/// of slab positions keyed by [`IndexHash`]. Nothing allocates after `new`:
/// the slab and free list are full-size from the start, and the index is
/// sized for `capacity` so it never grows (deletes are rehashed in place).
/// Memory a table lives in: an allocator that may also start fetching a
/// record into cache ahead of use. The dataplane's hugepage allocators
/// prefetch; the heap (`Global`) does not.
pub trait TableMemory: Allocator + Clone {
    #[inline(always)]
    fn prefetch<R>(_record: &R) {}
}

impl TableMemory for allocator_api2::alloc::Global {}

pub struct ConnTable<T, A: TableMemory> {
    index: HashTable<IndexEntry, A>,
    packing: Packing,
    slots: Vec<Option<T>, A>,
    free: Vec<u32, A>,
    sweep_cursor: usize,
    /// Slab position the next eviction looks from.
    evict_cursor: usize,
    /// foldhash, seeded at random per table: three folded multiplies a key,
    /// where xxh3 over the key's bytes needs a buffer and many more.
    hasher: RandomState,
}

/// The index hash of `key` under `hasher`.
#[inline(always)]
fn hash_with(hasher: &RandomState, key: &ConnKey) -> u64 {
    let mut h = hasher.build_hasher();
    for w in key.words() {
        h.write_u128(w);
    }
    h.finish()
}

/// An entry's hash, for when the index rehashes in place to clear the
/// marks deletes left.
fn rehash<T: TableEntry, A: Allocator>(
    slots: &Vec<Option<T>, A>,
    hasher: &RandomState,
    packing: Packing,
    e: &IndexEntry,
) -> u64 {
    slots[packing.slot(*e) as usize].as_ref().map_or(0, |r| hash_with(hasher, r.key()))
}

impl<T: TableEntry, A: TableMemory> ConnTable<T, A> {
    pub fn new_in(capacity: u32, alloc: A) -> Self {
        let cap = capacity as usize;
        let mut slots = Vec::with_capacity_in(cap, alloc.clone());
        slots.resize_with(cap, || None);
        let mut free = Vec::with_capacity_in(cap, alloc.clone());
        free.extend((0..capacity).rev());
        ConnTable {
            index: HashTable::with_capacity_in(cap, alloc),
            packing: Packing::for_capacity(capacity),
            slots,
            free,
            sweep_cursor: 0,
            evict_cursor: 0,
            hasher: RandomState::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Bytes this table allocated, for the memory-per-connection figure.
    pub fn bytes_allocated(&self) -> usize {
        let buckets = self.index.capacity().next_power_of_two().max(4) * 8 / 7;
        self.slots.capacity() * std::mem::size_of::<Option<T>>()
            + self.free.capacity() * 4
            + buckets * (std::mem::size_of::<IndexEntry>() + 1)
    }

    /// Where `key` sits in this table's index (formed apart from the lookup,
    /// so that a burst's hashes can be formed before its lookups).
    #[inline(always)]
    pub fn hash_of(&self, key: &ConnKey) -> IndexHash {
        IndexHash(hash_with(&self.hasher, key))
    }

    #[inline(always)]
    pub fn lookup(&self, key: &ConnKey, h: IndexHash) -> Option<SlotId> {
        let (slots, pk) = (&self.slots, self.packing);
        let d = pk.digest(h.0);
        self.index
            .find(h.0, |&e| {
                pk.matches(e, d)
                    && slots[pk.slot(e) as usize].as_ref().is_some_and(|r| r.key() == key)
            })
            .map(|&e| SlotId(pk.slot(e)))
    }

    /// The record whose hash matches `h` in the index's tag and digest
    /// besides the bucket's position, found without reading any record: the
    /// lookup of a burst then stays within the index, and the records it
    /// names are fetched together instead of each on the lookup's critical
    /// path. Most likely the key's record; confirm it with [`Self::holds`]
    /// before use, and [`Self::lookup`] when it is not.
    #[inline(always)]
    pub fn candidate(&self, h: IndexHash) -> Option<SlotId> {
        let pk = self.packing;
        let d = pk.digest(h.0);
        self.index.find(h.0, |&e| pk.matches(e, d)).map(|&e| SlotId(pk.slot(e)))
    }

    /// Whether `s` holds the record of `key`.
    #[inline(always)]
    pub fn holds(&self, s: SlotId, key: &ConnKey) -> bool {
        self.slots.get(s.0 as usize).is_some_and(|r| r.as_ref().is_some_and(|r| r.key() == key))
    }

    /// Starts fetching the record in `s` (see `lookup_staged`).
    #[inline(always)]
    pub fn prefetch(&self, s: SlotId) {
        if let Some(r) = self.slots.get(s.0 as usize) {
            A::prefetch(r);
        }
    }

    #[inline]
    pub fn get(&self, s: SlotId) -> &T {
        self.slots[s.0 as usize].as_ref().expect("SlotId of a live record")
    }

    #[inline]
    pub fn get_mut(&mut self, s: SlotId) -> &mut T {
        self.slots[s.0 as usize].as_mut().expect("SlotId of a live record")
    }

    /// Adds a record whose key is not in the table yet.
    #[inline]
    pub fn insert(&mut self, rec: T) -> Result<SlotId, TableFull> {
        let i = self.free.pop().ok_or(TableFull)?;
        let h = hash_with(&self.hasher, rec.key());
        self.slots[i as usize] = Some(rec);
        let (slots, hasher, pk) = (&self.slots, &self.hasher, self.packing);
        self.index.insert_unique(h, pk.entry(i, h), |e| rehash(slots, hasher, pk, e));
        Ok(SlotId(i))
    }

    /// Starts adding many records whose keys are not in the table yet (a
    /// restore). Records go into the slab at once and into the index a batch
    /// at a time, so the index probes, each a cache miss in a big table, run
    /// back to back where the CPU overlaps them instead of one per record
    /// between long stretches of decoding. Everything pushed is indexed by
    /// the time the guard is dropped.
    pub fn bulk_insert(&mut self) -> BulkInsert<'_, T, A> {
        BulkInsert { table: self, pending: [(0, 0); BULK_BATCH], n: 0 }
    }

    pub fn remove(&mut self, s: SlotId) -> Option<T> {
        let rec = self.slots[s.0 as usize].take()?;
        if let Ok(e) = self
            .index
            .find_entry(hash_with(&self.hasher, rec.key()), |&e| self.packing.slot(e) == s.0)
        {
            e.remove();
        }
        self.free.push(s.0);
        Some(rec)
    }

    /// Looks at up to `budget` slab positions from where the last sweep
    /// stopped and removes records whose deadline passed, handing each to
    /// `expired`. A bounded, incremental sweep: the packet path pays for a few
    /// slots per burst instead of a timer per connection.
    #[inline]
    pub fn sweep(&mut self, now: u64, budget: usize, mut expired: impl FnMut(SlotId, T)) -> usize {
        let n = self.slots.len();
        if n == 0 || self.index.is_empty() {
            return 0;
        }
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            let i = self.sweep_cursor;
            self.sweep_cursor = if i + 1 == n { 0 } else { i + 1 };
            if self.slots[i].as_ref().is_some_and(|r| r.deadline() <= now) {
                let s = SlotId(i as u32);
                if let Some(rec) = self.remove(s) {
                    expired(s, rec);
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Removes the first record `evictable` allows among the next `scan`
    /// slab positions from where the last eviction stopped (a full table
    /// making room, as Linux's `early_drop` does in a bucket range). The
    /// cursor moves on, so evictions go round the slab, the oldest-placed
    /// first. None when all of them are kept.
    pub fn evict(&mut self, scan: usize, evictable: impl Fn(&T) -> bool) -> Option<T> {
        let n = self.slots.len();
        for _ in 0..scan.min(n) {
            let i = self.evict_cursor;
            self.evict_cursor = if i + 1 == n { 0 } else { i + 1 };
            if self.slots[i].as_ref().is_some_and(&evictable) {
                return self.remove(SlotId(i as u32));
            }
        }
        None
    }

    /// The record at slab position `i`, if one lives there (for walks that
    /// resume where they stopped, like the checkpoint re-emit sweep).
    #[inline]
    pub fn at_mut(&mut self, i: usize) -> Option<&mut T> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    /// Every live record, in slab order.
    pub fn iter(&self) -> impl Iterator<Item = (SlotId, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, r)| r.as_ref().map(|r| (SlotId(i as u32), r)))
    }
}

/// Records placed in the slab but not yet in the index, per batch. 256 keeps
/// the pending list in L1 while giving the CPU dozens of independent probes.
const BULK_BATCH: usize = 256;

/// A run of inserts into a [`ConnTable`]; see [`ConnTable::bulk_insert`].
pub struct BulkInsert<'t, T: TableEntry, A: TableMemory> {
    table: &'t mut ConnTable<T, A>,
    /// (hash, slab position) of records not indexed yet.
    pending: [(u64, u32); BULK_BATCH],
    n: usize,
}

impl<T: TableEntry, A: TableMemory> BulkInsert<'_, T, A> {
    /// Adds a record whose key is not in the table yet; it becomes visible to
    /// lookups at the next batch boundary or when the guard is dropped.
    #[inline]
    pub fn push(&mut self, rec: T) -> Result<SlotId, TableFull> {
        let i = self.table.free.pop().ok_or(TableFull)?;
        self.pending[self.n] = (hash_with(&self.table.hasher, rec.key()), i);
        self.table.slots[i as usize] = Some(rec);
        self.n += 1;
        if self.n == BULK_BATCH {
            self.index_pending();
        }
        Ok(SlotId(i))
    }

    fn index_pending(&mut self) {
        let ConnTable { index, slots, hasher, packing, .. } = &mut *self.table;
        let pk = *packing;
        for &(h, i) in &self.pending[..self.n] {
            index.insert_unique(h, pk.entry(i, h), |e| rehash(slots, hasher, pk, e));
        }
        self.n = 0;
    }
}

impl<T: TableEntry, A: TableMemory> Drop for BulkInsert<'_, T, A> {
    fn drop(&mut self) {
        self.index_pending();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{ConnKey, Endpoint};
    use crate::parse::{v4_mapped, Family};
    use allocator_api2::alloc::Global;

    struct Rec {
        key: ConnKey,
        deadline: u64,
    }
    impl TableEntry for Rec {
        fn key(&self) -> &ConnKey {
            &self.key
        }
        fn deadline(&self) -> u64 {
            self.deadline
        }
    }

    fn key(n: u32) -> ConnKey {
        let a = Endpoint { addr: v4_mapped(n.to_be_bytes()), port: 1000 };
        let b = Endpoint { addr: v4_mapped([192, 168, 0, 1]), port: 80 };
        ConnKey::canonical(Family::V4, 6, a, b, 0, 0).0
    }

    #[test]
    fn insert_lookup_remove_and_full() {
        let mut t: ConnTable<Rec, Global> = ConnTable::new_in(100, Global);
        for n in 0..100 {
            t.insert(Rec { key: key(n), deadline: n as u64 }).unwrap();
        }
        assert_eq!(
            t.insert(Rec { key: key(1000), deadline: 0 }),
            Err(TableFull).map(|_: ()| SlotId(0))
        );
        for n in 0..100 {
            let k = key(n);
            let s = t.lookup(&k, t.hash_of(&k));
            assert!(s.is_some(), "{n}");
            assert_eq!(t.candidate(t.hash_of(&k)), s, "the candidate of a present key is its record (barring collisions of tag and digest)");
            assert!(t.holds(s.unwrap(), &k) && !t.holds(s.unwrap(), &key(n + 1)));
        }
        let k = key(7);
        let s = t.lookup(&k, t.hash_of(&k)).unwrap();
        t.remove(s).unwrap();
        assert!(t.lookup(&k, t.hash_of(&k)).is_none());
        assert!(t.insert(Rec { key: key(1000), deadline: 0 }).is_ok(), "a freed slot is reused");
    }

    #[test]
    fn bulk_insert_indexes_every_record_and_stops_at_full() {
        // More than a batch, not a multiple of it, into a table with a record
        // already in it.
        let cap = 3 * BULK_BATCH as u32 + 17;
        let mut t: ConnTable<Rec, Global> = ConnTable::new_in(cap, Global);
        t.insert(Rec { key: key(u32::MAX), deadline: 0 }).unwrap();
        let mut full = 0;
        {
            let mut bulk = t.bulk_insert();
            for n in 0..cap + 5 {
                if bulk.push(Rec { key: key(n), deadline: 0 }).is_err() {
                    full += 1;
                }
            }
        }
        assert_eq!(full, 6, "capacity - 1 records fit, the rest are refused");
        assert_eq!(t.len(), cap as usize);
        for n in (0..cap - 1).chain([u32::MAX]) {
            let k = key(n);
            let s = t.lookup(&k, t.hash_of(&k)).unwrap_or_else(|| panic!("record {n} not indexed"));
            assert_eq!(t.get(s).key, k);
        }
    }

    #[test]
    fn churn_never_exceeds_capacity_or_loses_records() {
        let mut t: ConnTable<Rec, Global> = ConnTable::new_in(64, Global);
        let mut live = std::collections::VecDeque::new();
        for n in 0..10_000u32 {
            if live.len() == 64 {
                let old: u32 = live.pop_front().unwrap();
                let k = key(old);
                t.remove(t.lookup(&k, t.hash_of(&k)).unwrap());
            }
            t.insert(Rec { key: key(n), deadline: 0 }).unwrap();
            live.push_back(n);
        }
        assert_eq!(t.len(), 64);
        for &n in &live {
            let k = key(n);
            assert!(t.lookup(&k, t.hash_of(&k)).is_some());
        }
    }

    #[test]
    fn sweep_expires_only_past_deadline() {
        let mut t: ConnTable<Rec, Global> = ConnTable::new_in(10, Global);
        for n in 0..10 {
            t.insert(Rec { key: key(n), deadline: if n % 2 == 0 { 5 } else { 50 } }).unwrap();
        }
        let mut gone = 0;
        t.sweep(10, 3, |_, _| gone += 1);
        t.sweep(10, 100, |_, _| gone += 1);
        assert_eq!(gone, 5);
        assert_eq!(t.len(), 5);
    }
}
