//! The delta rings: one single-producer (a dataplane worker) single-consumer
//! (checkpointd) ring per worker.
//!
//! Memory orderings, each pair labelled:
//! * **P1** `publish` stores `head` with Release; **C1** `drain` loads `head`
//!   with Acquire. P1 synchronises with C1: every slot byte written before
//!   `publish` is visible to the consumer that sees the new head.
//! * **C2** `drain` stores `tail` with Release after `apply` returned for the
//!   records it covers; **P2** the producer loads `tail` with Acquire (only
//!   when its cached tail says the ring is full, and in `free_slots`). C2
//!   synchronises with P2: the consumer has finished reading a slot before
//!   the producer may overwrite it.
//!
//! Positions are free-running u64 (never wrap in practice: 2^64 deltas),
//! masked by `slots - 1` to index memory. Each slot carries its position as
//! `seq`, so a slot left over from the previous lap is detected, and a
//! checksum, so a record a killed producer left half written is skipped.

use crate::header::{
    check_base, format_segment, read_header, SegmentHeader, SegmentKind, HEADER_BYTES,
};
use crate::mapped::MappedFile;
use crate::LayoutError;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Every slot is this big, header included.
pub const DELTA_SLOT_BYTES: usize = 256;
/// The slot header: seq, conn_id, version, module, kind, len, checksum.
pub const DELTA_HEADER_BYTES: usize = 32;
/// The largest payload a delta carries.
pub const DELTA_PAYLOAD_MAX: usize = DELTA_SLOT_BYTES - DELTA_HEADER_BYTES;
/// Bytes of one ring's control block (head, tail, resync lines) before its slots.
pub const RING_CTRL_BYTES: usize = 512;
/// How far ahead the producer (of its head) and the consumer (of its tail)
/// prefetch slots: a ring larger than the cache is cold on every lap, and
/// without this each delta stalls its side on a miss (docs/BENCHMARKS.md,
/// checkpoint overhead and drain rate).
const PREFETCH_SLOTS: u64 = 8;

/// Starts fetching a slot's first two lines (the header and up to 96 bytes
/// of payload, where most portions end).
#[inline]
fn prefetch_slot(slot: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is a hint: it neither reads nor writes memory as
        // far as the program is concerned, and cannot fault, whatever the
        // address (wrapping_add: no in-bounds claim is made). Callers pass a
        // slot of the ring (masked position), so both lines are its own.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(slot.cast::<i8>());
            _mm_prefetch::<_MM_HINT_T0>(slot.wrapping_add(64).cast::<i8>());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}

const HEARTBEAT_OFFSET: usize = 128;
const MIN_SLOTS: u32 = 64;
const MAX_SLOTS: u32 = 1 << 24;
const MAX_WORKERS: u32 = 1024;

/// The header of one slot, as it sits in shared memory.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct SlotHeader {
    /// The ring position this record was written at.
    seq: u64,
    conn_id: u64,
    version: u64,
    module: u8,
    kind: u8,
    len: u16,
    /// [`record_checksum`] of the other fields (but `seq`) and the payload.
    checksum: u32,
}
const _: () = assert!(std::mem::size_of::<SlotHeader>() == DELTA_HEADER_BYTES);
const CHECKSUM_AT: usize = 28;

/// One ring's control block: head, consumer fields and rarely written
/// fields each on a 128-byte line pair of their own (the x86 adjacent-line
/// prefetcher pulls lines in pairs, so 64 would still share).
#[repr(C)]
struct RingCtrl {
    /// Next position the producer will publish (written by the producer only).
    head: AtomicU64,
    _pad0: [u8; 120],
    /// Next position the consumer will read (written by the consumer only).
    tail: AtomicU64,
    /// Records the consumer skipped because checksum or seq did not match.
    torn: AtomicU64,
    /// Records the consumer applied.
    applied: AtomicU64,
    _pad1: [u8; 104],
    /// Bumped by checkpointd when it lost the store: the producer must re-emit
    /// every connection it holds.
    resync_epoch: AtomicU64,
    _pad2: [u8; 120],
    _reserved: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<RingCtrl>() == RING_CTRL_BYTES);

/// checkpointd's liveness, in the header page.
#[repr(C)]
struct HeartbeatShm {
    monotonic_ns: AtomicU64,
    pid: AtomicU32,
    _pad: [u8; 116],
}
const _: () = assert!(HEARTBEAT_OFFSET + std::mem::size_of::<HeartbeatShm>() <= HEADER_BYTES);

/// How many rings and how big.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingsGeometry {
    /// One ring per dataplane worker.
    pub workers: u32,
    /// Slots per ring: a power of two, at least 64.
    pub slots_per_ring: u32,
}

impl RingsGeometry {
    fn ring_bytes(&self) -> u64 {
        RING_CTRL_BYTES as u64 + u64::from(self.slots_per_ring) * DELTA_SLOT_BYTES as u64
    }

    /// Bytes of the whole segment: the header page, then per ring a control
    /// block and the slots.
    pub fn segment_bytes(&self) -> u64 {
        HEADER_BYTES as u64 + u64::from(self.workers) * self.ring_bytes()
    }

    /// Checks the limits: 1..=1024 workers, slots a power of two in 64..=2^24.
    pub fn validate(&self) -> Result<(), LayoutError> {
        if self.workers == 0 || self.workers > MAX_WORKERS {
            return Err(LayoutError::BadGeometry(format!(
                "{} rings: need 1..={MAX_WORKERS} (one per [[worker]])",
                self.workers
            )));
        }
        if !self.slots_per_ring.is_power_of_two()
            || !(MIN_SLOTS..=MAX_SLOTS).contains(&self.slots_per_ring)
        {
            return Err(LayoutError::BadGeometry(format!(
                "{} slots per ring: need a power of two in {MIN_SLOTS}..={MAX_SLOTS} (checkpoint.ring_slots)",
                self.slots_per_ring
            )));
        }
        Ok(())
    }
}

/// One delta as the consumer sees it. `payload` is a verified private copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delta<'a> {
    pub seq: u64,
    pub conn_id: u64,
    pub version: u64,
    pub module: u8,
    pub kind: u8,
    pub payload: &'a [u8],
}

/// Why `try_push` refused a record. Neither case blocks or writes anything.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// Every slot holds a record checkpointd has not drained yet: count it,
    /// mark the connection dirty, re-emit it when `free_slots` says so.
    #[error("delta ring full; mark the connection dirty and re-emit it when space returns")]
    Full,
    /// The payload does not fit a slot: a module's portion grew beyond
    /// `DELTA_PAYLOAD_MAX`, a bug in that module's encoding.
    #[error("delta payload of {len} bytes exceeds the {max}-byte slot payload; shrink the module's portion encoding", max = DELTA_PAYLOAD_MAX)]
    TooLarge { len: usize },
}

/// The name the API was first drafted with: `try_push` fails with a
/// [`PushError`], of which `Full` is the common case.
pub type RingFull = PushError;

/// What one `drain` call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Records passed to `apply`.
    pub applied: u32,
    /// Records skipped: checksum or seq did not match.
    pub torn: u32,
}

/// A ring's shared counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingStatus {
    pub head: u64,
    pub tail: u64,
    pub resync_epoch: u64,
    /// Torn records the consumer has skipped, ever.
    pub torn: u64,
    /// Records the consumer has applied, ever.
    pub applied: u64,
}

impl RingStatus {
    /// Published records not drained yet.
    pub fn lag(&self) -> u64 {
        self.head.wrapping_sub(self.tail)
    }
}

/// checkpointd's last beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat {
    /// 0 when checkpointd never beat.
    pub pid: u32,
    /// CLOCK_MONOTONIC nanoseconds of the last beat.
    pub monotonic_ns: u64,
}

/// The rings segment. Holds the mapping alive when created by
/// `create_file`/`open_file`.
pub struct RingsSegment {
    base: NonNull<u8>,
    len: usize,
    geom: RingsGeometry,
    generation: u64,
    producers: Box<[AtomicBool]>,
    consumers: Box<[AtomicBool]>,
    file: Option<MappedFile>,
}

// SAFETY: the segment is shared memory accessed only through atomics and
// through producer/consumer handles whose exclusivity (one each per ring in
// this process) is enforced by the `producers`/`consumers` flags; the raw
// base pointer is never exposed for unsynchronised writes.
unsafe impl Send for RingsSegment {}
// SAFETY: as for Send: every &self method either touches atomics only or
// hands out a handle that takes its ring's exclusivity flag.
unsafe impl Sync for RingsSegment {}

impl std::fmt::Debug for RingsSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingsSegment")
            .field("geometry", &self.geom)
            .field("len", &self.len)
            .field("generation", &self.generation)
            .field("file", &self.file)
            .finish()
    }
}

impl RingsSegment {
    /// Formats `base..base+len` as an empty rings segment.
    ///
    /// # Safety
    /// `base..base+len` is mapped memory, valid for reads and writes, that
    /// outlives the returned value, and nobody else uses it during the call.
    pub unsafe fn format(
        base: *mut u8,
        len: usize,
        geom: RingsGeometry,
    ) -> Result<Self, LayoutError> {
        geom.validate()?;
        let header = SegmentHeader::new(
            SegmentKind::Rings,
            geom.segment_bytes(),
            (geom.workers, geom.slots_per_ring),
            (DELTA_SLOT_BYTES as u32, RING_CTRL_BYTES as u32),
        );
        // SAFETY: the caller guarantees base..base+len is ours.
        unsafe { format_segment(base, len, &header) }?;
        // SAFETY: just formatted with the same contract.
        unsafe { Self::attach(base, len) }
    }

    /// Attaches to a formatted rings segment: checks magic, version, kind,
    /// header checksum, that `len` covers the layout, and the geometry.
    ///
    /// # Safety
    /// `base..base+len` is mapped memory, valid for reads and writes, that
    /// outlives the returned value.
    pub unsafe fn attach(base: *mut u8, len: usize) -> Result<Self, LayoutError> {
        check_base(base, len)?;
        // SAFETY: caller's contract; check_base ensured alignment and size.
        let h = unsafe { read_header(base, len, SegmentKind::Rings) }?;
        let geom = RingsGeometry { workers: h.geom_a, slots_per_ring: h.geom_b };
        geom.validate()?;
        h.check_sizes("slot / control", DELTA_SLOT_BYTES, RING_CTRL_BYTES, geom.segment_bytes())?;
        let flags = |n: u32| (0..n).map(|_| AtomicBool::new(false)).collect::<Box<[_]>>();
        Ok(RingsSegment {
            base: NonNull::new(base).ok_or(LayoutError::Misaligned { addr: 0, align: 64 })?,
            len,
            geom,
            generation: h.generation,
            producers: flags(geom.workers),
            consumers: flags(geom.workers),
            file: None,
        })
    }

    /// Creates `path` (replacing any file there), sized for `geom`, and
    /// formats it. The value keeps the mapping alive.
    pub fn create_file(path: &Path, geom: RingsGeometry) -> Result<Self, LayoutError> {
        geom.validate()?;
        let mut file = MappedFile::create(path, geom.segment_bytes())?;
        // SAFETY: the mapping is ours, page-aligned, len bytes long, and is
        // moved into the returned value, so it outlives it.
        let mut seg = unsafe { Self::format(file.as_mut_ptr(), file.len(), geom) }?;
        seg.file = Some(file);
        Ok(seg)
    }

    /// Maps and attaches to an existing rings file.
    pub fn open_file(path: &Path) -> Result<Self, LayoutError> {
        let mut file = MappedFile::open(path)?;
        // SAFETY: as in create_file: the mapping lives inside the value.
        let mut seg = unsafe { Self::attach(file.as_mut_ptr(), file.len()) }?;
        seg.file = Some(file);
        Ok(seg)
    }

    /// The mapped file, when the segment came from `create_file`/`open_file`.
    pub fn file(&self) -> Option<&MappedFile> {
        self.file.as_ref()
    }

    pub fn geometry(&self) -> RingsGeometry {
        self.geom
    }

    /// Identifies this formatting of the segment.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes of the layout (the mapping may be longer).
    pub fn segment_bytes(&self) -> u64 {
        self.geom.segment_bytes()
    }

    fn check_worker(&self, worker: u32) -> Result<(), LayoutError> {
        if worker >= self.geom.workers {
            return Err(LayoutError::NoSuchRing { worker, workers: self.geom.workers });
        }
        Ok(())
    }

    fn ring_offset(&self, worker: u32) -> usize {
        HEADER_BYTES + worker as usize * self.geom.ring_bytes() as usize
    }

    fn ctrl(&self, worker: u32) -> &RingCtrl {
        assert!(worker < self.geom.workers, "ring {worker} of {}", self.geom.workers);
        // SAFETY: the offset is inside the validated layout (attach checked
        // len >= segment_bytes), 64-byte aligned (HEADER_BYTES, ring_bytes are
        // multiples of 256), and RingCtrl is atomics plus padding nobody
        // writes, so a shared reference is sound for the segment's lifetime.
        unsafe { &*self.base.as_ptr().add(self.ring_offset(worker)).cast::<RingCtrl>() }
    }

    fn slots(&self, worker: u32) -> NonNull<u8> {
        // SAFETY: inside the validated layout, as in ctrl().
        unsafe {
            NonNull::new_unchecked(
                self.base.as_ptr().add(self.ring_offset(worker) + RING_CTRL_BYTES),
            )
        }
    }

    fn heartbeat_shm(&self) -> &HeartbeatShm {
        // SAFETY: the header page is HEADER_BYTES long and HEARTBEAT_OFFSET +
        // size_of::<HeartbeatShm>() fits in it (compile-time assert); only
        // atomics and untouched padding.
        unsafe { &*self.base.as_ptr().add(HEARTBEAT_OFFSET).cast::<HeartbeatShm>() }
    }

    /// The producer handle of ring `worker`, resuming at its published head.
    /// One per ring per process at a time.
    pub fn producer(&self, worker: u32) -> Result<DeltaProducer<'_>, LayoutError> {
        self.check_worker(worker)?;
        let taken = &self.producers[worker as usize];
        if taken.swap(true, Ordering::Acquire) {
            return Err(LayoutError::RingInUse { worker, role: "producer" });
        }
        let ctrl = self.ctrl(worker);
        let head = ctrl.head.load(Ordering::Acquire);
        Ok(DeltaProducer {
            ctrl,
            slots: self.slots(worker),
            mask: u64::from(self.geom.slots_per_ring) - 1,
            size: u64::from(self.geom.slots_per_ring),
            head,
            unsealed: head,
            cached_tail: ctrl.tail.load(Ordering::Acquire),
            taken,
        })
    }

    /// The consumer handle of ring `worker`, resuming at its published tail.
    /// One per ring per process at a time.
    pub fn consumer(&self, worker: u32) -> Result<DeltaConsumer<'_>, LayoutError> {
        self.check_worker(worker)?;
        let taken = &self.consumers[worker as usize];
        if taken.swap(true, Ordering::Acquire) {
            return Err(LayoutError::RingInUse { worker, role: "consumer" });
        }
        let ctrl = self.ctrl(worker);
        Ok(DeltaConsumer {
            ctrl,
            slots: self.slots(worker),
            mask: u64::from(self.geom.slots_per_ring) - 1,
            size: u64::from(self.geom.slots_per_ring),
            tail: ctrl.tail.load(Ordering::Acquire),
            scratch: [0; DELTA_SLOT_BYTES],
            taken,
        })
    }

    /// Ring `worker`'s shared counters. Panics if `worker >= workers`.
    pub fn status(&self, worker: u32) -> RingStatus {
        let c = self.ctrl(worker);
        RingStatus {
            head: c.head.load(Ordering::Acquire),
            tail: c.tail.load(Ordering::Acquire),
            resync_epoch: c.resync_epoch.load(Ordering::Acquire),
            torn: c.torn.load(Ordering::Relaxed),
            applied: c.applied.load(Ordering::Relaxed),
        }
    }

    /// checkpointd's last beat (pid 0: never).
    pub fn heartbeat(&self) -> Heartbeat {
        let hb = self.heartbeat_shm();
        // H1 (Acquire) pairs with H2 in `beat`: the pid read belongs to a beat
        // at least as new as the timestamp.
        let monotonic_ns = hb.monotonic_ns.load(Ordering::Acquire);
        Heartbeat { pid: hb.pid.load(Ordering::Relaxed), monotonic_ns }
    }

    /// checkpointd: records a beat (CLOCK_MONOTONIC ns, see [`crate::monotonic_ns`]).
    pub fn beat(&self, pid: u32, monotonic_ns: u64) {
        let hb = self.heartbeat_shm();
        hb.pid.store(pid, Ordering::Relaxed);
        // H2 (Release) pairs with H1.
        hb.monotonic_ns.store(monotonic_ns, Ordering::Release);
    }

    /// checkpointd: asks the producer of ring `worker` to re-emit every
    /// connection (the store was lost). Panics if `worker >= workers`.
    pub fn request_resync(&self, worker: u32) {
        self.ctrl(worker).resync_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Test support: overwrite ring `worker`'s published head, as a producer
    /// bug or a stale segment could. Not for production use.
    #[doc(hidden)]
    pub fn test_force_head(&self, worker: u32, head: u64) {
        self.ctrl(worker).head.store(head, Ordering::Release);
    }
}

/// The producer end of one ring. Not `Clone`: the dataplane worker owns it.
pub struct DeltaProducer<'a> {
    ctrl: &'a RingCtrl,
    slots: NonNull<u8>,
    mask: u64,
    size: u64,
    /// Next position to write; `ctrl.head` lags it until `publish`.
    head: u64,
    /// Records from here to `head` are written and may not be sealed:
    /// `publish` computes their checksums, just before it makes them visible
    /// (a record `try_push_words` sealed among them gets the same one again).
    unsealed: u64,
    /// The consumer's tail as last read: the producer's view of free space.
    cached_tail: u64,
    taken: &'a AtomicBool,
}

// SAFETY: the handle is the only writer of its ring's slots and head in this
// process; moving it to another thread moves that exclusivity with it.
unsafe impl Send for DeltaProducer<'_> {}

impl Drop for DeltaProducer<'_> {
    fn drop(&mut self) {
        self.taken.store(false, Ordering::Release);
    }
}

impl std::fmt::Debug for DeltaProducer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaProducer")
            .field("head", &self.head)
            .field("cached_tail", &self.cached_tail)
            .finish()
    }
}

impl DeltaProducer<'_> {
    #[inline]
    fn slot_ptr(&self, pos: u64) -> *mut u8 {
        // SAFETY: (pos & mask) < slots_per_ring, so the slot lies inside this
        // ring's slot array in the validated layout.
        unsafe { self.slots.as_ptr().add((pos & self.mask) as usize * DELTA_SLOT_BYTES) }
    }

    #[inline]
    fn has_room(&mut self) -> bool {
        if self.head.wrapping_sub(self.cached_tail) < self.size {
            return true;
        }
        // P2: Acquire pairs with the consumer's C2.
        self.cached_tail = self.ctrl.tail.load(Ordering::Acquire);
        self.head.wrapping_sub(self.cached_tail) < self.size
    }

    /// Writes the record into the next slot without publishing it. Never
    /// blocks; on error nothing is written.
    #[inline]
    pub fn try_push(
        &mut self,
        conn_id: u64,
        module: u8,
        kind: u8,
        version: u64,
        payload: &[u8],
    ) -> Result<(), PushError> {
        if payload.len() > DELTA_PAYLOAD_MAX {
            return Err(PushError::TooLarge { len: payload.len() });
        }
        self.try_push_with(conn_id, module, kind, version, |buf| {
            buf[..payload.len()].copy_from_slice(payload);
            payload.len()
        })
    }

    /// As [`try_push`](Self::try_push), with the payload written by `encode`
    /// straight into the slot (it gets the slot's payload area, returns the
    /// length it wrote): no scratch buffer and no copy per delta. Never
    /// blocks; on error the slot is not taken.
    #[inline]
    pub fn try_push_with(
        &mut self,
        conn_id: u64,
        module: u8,
        kind: u8,
        version: u64,
        encode: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<(), PushError> {
        if !self.has_room() {
            return Err(PushError::Full);
        }
        let slot = self.slot_ptr(self.head);
        // SAFETY: positions head..tail+size belong to the producer: the
        // consumer reads only below the published head (<= self.head) and has
        // finished with everything below the tail it published (C2/P2), so
        // nobody else touches this slot until `publish`. Its payload area is
        // the DELTA_PAYLOAD_MAX bytes after the header, inside the 256-byte
        // slot, and nothing else references it while `encode` runs.
        let payload = unsafe {
            std::slice::from_raw_parts_mut(slot.add(DELTA_HEADER_BYTES), DELTA_PAYLOAD_MAX)
        };
        let len = encode(payload);
        if len > DELTA_PAYLOAD_MAX {
            return Err(PushError::TooLarge { len });
        }
        // The checksum is left to `seal` (at `publish`): computed here, it
        // would read back the payload `encode` has only just stored, field by
        // narrow field, and wait for those stores (no store-to-load
        // forwarding into a wider load); at `publish` they are long done, and
        // the burst's records are checksummed side by side.
        // SAFETY: same slot, same exclusivity; 32-byte aligned, and the
        // header is the slot's first 32 bytes.
        unsafe {
            slot.cast::<SlotHeader>().write(SlotHeader {
                seq: self.head,
                conn_id,
                version,
                module,
                kind,
                len: len as u16,
                checksum: 0,
            })
        };
        self.head = self.head.wrapping_add(1);
        prefetch_slot(self.slot_ptr(self.head.wrapping_add(PREFETCH_SLOTS)));
        Ok(())
    }

    /// As [`try_push`](Self::try_push), with the payload given as
    /// little-endian words (its first `len` bytes are the payload; the rest of
    /// the last word is ignored): the words are stored whole and the record's
    /// checksum is computed from them as they are, in registers, so the
    /// record is sealed here and `publish` has nothing to read back. For
    /// fixed-size portions encoded on the packet path (tcp).
    #[inline]
    pub fn try_push_words<const N: usize>(
        &mut self,
        conn_id: u64,
        module: u8,
        kind: u8,
        version: u64,
        words: &[u64; N],
        len: usize,
    ) -> Result<(), PushError> {
        const { assert!(N * 8 <= DELTA_PAYLOAD_MAX) };
        if len > N * 8 {
            return Err(PushError::TooLarge { len });
        }
        if !self.has_room() {
            return Err(PushError::Full);
        }
        let checksum =
            words_checksum(checksum_fields(conn_id, version, module, kind, len), words, len);
        let slot = self.slot_ptr(self.head);
        // SAFETY: as in try_push_with: the slot at head is the producer's
        // alone until `publish`; the header is its first 32 bytes, and the N
        // words (N * 8 <= DELTA_PAYLOAD_MAX, checked at compile time) fit in
        // its payload area after them.
        unsafe {
            let payload = slot.add(DELTA_HEADER_BYTES).cast::<u64>();
            for (i, w) in words.iter().enumerate() {
                payload.add(i).write_unaligned(w.to_le());
            }
            slot.cast::<SlotHeader>().write(SlotHeader {
                seq: self.head,
                conn_id,
                version,
                module,
                kind,
                len: len as u16,
                checksum,
            });
        }
        // Sealed already: when nothing before it waits for `seal`, `seal`
        // need not look at it (else it checksums it again, the same value).
        if self.unsealed == self.head {
            self.unsealed = self.unsealed.wrapping_add(1);
        }
        self.head = self.head.wrapping_add(1);
        prefetch_slot(self.slot_ptr(self.head.wrapping_add(PREFETCH_SLOTS)));
        Ok(())
    }

    /// Test support: writes a record whose payload is only `written` bytes
    /// long in the slot (the rest left as it was) but whose header and
    /// checksum describe the whole payload: what a producer killed in the
    /// middle of `try_push` would leave. Not for production use.
    #[doc(hidden)]
    pub fn test_push_torn(
        &mut self,
        conn_id: u64,
        module: u8,
        kind: u8,
        version: u64,
        payload: &[u8],
        written: usize,
    ) -> Result<(), PushError> {
        if payload.len() > DELTA_PAYLOAD_MAX {
            return Err(PushError::TooLarge { len: payload.len() });
        }
        let seq = self.head;
        self.try_push_with(conn_id, module, kind, version, |buf| {
            let w = written.min(payload.len());
            buf[..w].copy_from_slice(&payload[..w]);
            payload.len()
        })?;
        // Seal as if the whole payload had been written (and everything
        // before it as it is), so that `publish` leaves it so.
        self.seal();
        // SAFETY: the slot just written is still the producer's (unpublished).
        unsafe {
            self.slot_ptr(seq)
                .add(CHECKSUM_AT)
                .cast::<u32>()
                .write(record_checksum(conn_id, version, module, kind, payload))
        };
        Ok(())
    }

    /// Writes the checksum of every record pushed since the last seal.
    #[inline]
    fn seal(&mut self) {
        while self.unsealed != self.head {
            let slot = self.slot_ptr(self.unsealed);
            // SAFETY: positions unsealed..head are pushed and unpublished, so
            // still the producer's alone (see try_push_with); the header was
            // written whole by the push, len <= DELTA_PAYLOAD_MAX.
            unsafe {
                let h = slot.cast::<SlotHeader>().read();
                let payload =
                    std::slice::from_raw_parts(slot.add(DELTA_HEADER_BYTES), usize::from(h.len));
                slot.add(CHECKSUM_AT)
                    .cast::<u32>()
                    .write(record_checksum(h.conn_id, h.version, h.module, h.kind, payload));
            }
            self.unsealed = self.unsealed.wrapping_add(1);
        }
    }

    /// Seals and makes every pushed record visible to the consumer (one
    /// Release store).
    #[inline]
    pub fn publish(&mut self) {
        self.seal();
        // P1: Release pairs with the consumer's C1.
        self.ctrl.head.store(self.head, Ordering::Release);
    }

    /// Free slots, counting pushed-but-unpublished ones as used. Re-reads the
    /// consumer's tail (Acquire), so it is exact at the time of the call.
    pub fn free_slots(&mut self) -> u32 {
        // P2.
        self.cached_tail = self.ctrl.tail.load(Ordering::Acquire);
        (self.size - self.head.wrapping_sub(self.cached_tail).min(self.size)) as u32
    }

    /// Records pushed since the last `publish`.
    pub fn pending(&self) -> u32 {
        self.head.wrapping_sub(self.ctrl.head.load(Ordering::Relaxed)) as u32
    }

    /// The next position this producer will write.
    pub fn position(&self) -> u64 {
        self.head
    }

    /// checkpointd's resync requests so far; when it grows, re-emit every
    /// connection of this worker.
    pub fn resync_epoch(&self) -> u64 {
        self.ctrl.resync_epoch.load(Ordering::Acquire)
    }
}

/// A record's checksum: CRC-32C of the header fields but `seq` (as three
/// little-endian words), then of the payload where it lies. `seq` is left
/// out: the consumer compares it with the position it reads, which catches a
/// slot left from an earlier lap, and a header half written carries the old
/// checksum. xxh3 over the header and payload was ~70 of the worker's ~140
/// instructions per delta; the crc32c crate's entry, built for long buffers,
/// ~260 for these 40–90 bytes; the SSE 4.2 instruction (which DPDK's x86
/// builds require anyway), a word at a time, ~45 (docs/BENCHMARKS.md,
/// checkpoint overhead). Other CPUs take the crate's path: the same CRC.
#[inline]
fn record_checksum(conn_id: u64, version: u64, module: u8, kind: u8, payload: &[u8]) -> u32 {
    let fields = checksum_fields(conn_id, version, module, kind, payload.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE 4.2, checked just above.
        return unsafe { crc32c_sse42(fields, payload) };
    }
    crc32c_portable(fields, payload)
}

/// The header words a record's checksum starts with (all but `seq`).
#[inline(always)]
fn checksum_fields(conn_id: u64, version: u64, module: u8, kind: u8, len: usize) -> [u64; 3] {
    [conn_id, version, u64::from(module) | u64::from(kind) << 8 | (len as u64) << 16]
}

/// [`record_checksum`] of a payload given as little-endian words, its first
/// `len` bytes (len <= 8 N).
#[inline(always)]
fn words_checksum<const N: usize>(fields: [u64; 3], words: &[u64; N], len: usize) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE 4.2, checked just above.
        return unsafe { crc32c_sse42_words(fields, words, len) };
    }
    let mut bytes = [0u8; DELTA_PAYLOAD_MAX];
    for (chunk, w) in bytes.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    crc32c_portable(fields, &bytes[..len])
}

/// # Safety
/// The CPU supports SSE 4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
#[inline]
unsafe fn crc32c_sse42_words<const N: usize>(
    fields: [u64; 3],
    words: &[u64; N],
    len: usize,
) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};
    let mut c = u64::from(u32::MAX);
    for w in fields {
        c = _mm_crc32_u64(c, w);
    }
    let full = len / 8;
    for &w in &words[..full.min(N)] {
        c = _mm_crc32_u64(c, w);
    }
    let mut c = c as u32;
    let mut rest = len % 8;
    if rest != 0 {
        let mut w = words[full.min(N - 1)];
        if rest >= 4 {
            c = _mm_crc32_u32(c, w as u32);
            w >>= 32;
            rest -= 4;
        }
        if rest >= 2 {
            c = _mm_crc32_u16(c, w as u16);
            w >>= 16;
            rest -= 2;
        }
        if rest == 1 {
            c = _mm_crc32_u8(c, w as u8);
        }
    }
    !c
}

fn crc32c_portable(fields: [u64; 3], payload: &[u8]) -> u32 {
    let mut head = [0u8; 24];
    for (chunk, w) in head.chunks_exact_mut(8).zip(fields) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    crc32c::crc32c_append(crc32c::crc32c(&head), payload)
}

/// # Safety
/// The CPU supports SSE 4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_sse42(fields: [u64; 3], payload: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};
    let mut c = u64::from(u32::MAX);
    for w in fields {
        c = _mm_crc32_u64(c, w);
    }
    let mut words = payload.chunks_exact(8);
    for w in &mut words {
        c = _mm_crc32_u64(c, u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]));
    }
    let mut c = c as u32;
    let mut tail = words.remainder();
    if tail.len() >= 4 {
        c = _mm_crc32_u32(c, u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        tail = &tail[4..];
    }
    if tail.len() >= 2 {
        c = _mm_crc32_u16(c, u16::from_le_bytes([tail[0], tail[1]]));
        tail = &tail[2..];
    }
    if let Some(&b) = tail.first() {
        c = _mm_crc32_u8(c, b);
    }
    !c
}

/// The consumer end of one ring (checkpointd).
pub struct DeltaConsumer<'a> {
    ctrl: &'a RingCtrl,
    slots: NonNull<u8>,
    mask: u64,
    size: u64,
    tail: u64,
    /// Each record is copied here and verified before `apply` sees it.
    scratch: [u8; DELTA_SLOT_BYTES],
    taken: &'a AtomicBool,
}

// SAFETY: the handle is the only reader of its ring's published slots and the
// only writer of its tail in this process; moving it moves that exclusivity.
unsafe impl Send for DeltaConsumer<'_> {}

impl Drop for DeltaConsumer<'_> {
    fn drop(&mut self) {
        self.taken.store(false, Ordering::Release);
    }
}

impl std::fmt::Debug for DeltaConsumer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaConsumer").field("tail", &self.tail).finish()
    }
}

impl DeltaConsumer<'_> {
    /// Calls `apply` for each valid published record (up to `max`) in order,
    /// then publishes the new tail (Release). A record whose checksum or seq
    /// does not match is counted as torn and skipped, never passed to `apply`.
    pub fn drain(&mut self, max: u32, mut apply: impl FnMut(&Delta<'_>)) -> DrainReport {
        // C1: Acquire pairs with the producer's P1.
        let head = self.ctrl.head.load(Ordering::Acquire);
        // A head behind the tail or more than a ring ahead is impossible from
        // a correct producer; take at most one ring, the seq check rejects
        // whatever is stale.
        let avail = head.wrapping_sub(self.tail).min(self.size);
        let n = avail.min(u64::from(max));
        let mut report = DrainReport::default();
        for i in 0..n {
            let pos = self.tail;
            if i + PREFETCH_SLOTS < n {
                // SAFETY: masked position: inside this ring's slot array.
                prefetch_slot(unsafe {
                    self.slots.as_ptr().add(
                        (pos.wrapping_add(PREFETCH_SLOTS) & self.mask) as usize * DELTA_SLOT_BYTES,
                    )
                });
            }
            match self.read(pos) {
                Some(delta) => {
                    apply(&delta);
                    report.applied += 1;
                }
                None => report.torn += 1,
            }
            self.tail = pos.wrapping_add(1);
        }
        if n > 0 {
            if report.torn > 0 {
                self.ctrl.torn.fetch_add(u64::from(report.torn), Ordering::Relaxed);
            }
            self.ctrl.applied.fetch_add(u64::from(report.applied), Ordering::Relaxed);
            // C2: Release pairs with the producer's P2; every `apply` above
            // has returned, so a record is in the store before its slot can
            // be reused or a restarted consumer skips it.
            self.ctrl.tail.store(self.tail, Ordering::Release);
        }
        report
    }

    fn read(&mut self, pos: u64) -> Option<Delta<'_>> {
        // SAFETY: (pos & mask) < slots_per_ring, so the slot is inside this
        // ring's slot array in the validated layout.
        let slot =
            unsafe { self.slots.as_ptr().add((pos & self.mask) as usize * DELTA_SLOT_BYTES) };
        // SAFETY: pos is below the head loaded with Acquire (C1), so the
        // producer finished writing the slot and will not touch it before we
        // publish a tail beyond it (C2). A slot header is plain integers: any
        // bytes are a valid value.
        let header = unsafe { std::ptr::read_volatile(slot.cast::<SlotHeader>()) };
        let len = header.len as usize;
        if header.seq != pos || len > DELTA_PAYLOAD_MAX {
            return None;
        }
        let n = DELTA_HEADER_BYTES + len;
        // SAFETY: as above, and n <= 256 = the slot and the scratch buffer.
        unsafe { std::ptr::copy_nonoverlapping(slot, self.scratch.as_mut_ptr(), n) };
        // The private copy is what gets verified and applied: a producer
        // writing the slot meanwhile (a bug) cannot change it after the check.
        if record_checksum(
            header.conn_id,
            header.version,
            header.module,
            header.kind,
            &self.scratch[DELTA_HEADER_BYTES..n],
        ) != header.checksum
        {
            return None;
        }
        Some(Delta {
            seq: pos,
            conn_id: header.conn_id,
            version: header.version,
            module: header.module,
            kind: header.kind,
            payload: &self.scratch[DELTA_HEADER_BYTES..n],
        })
    }

    /// Published records not drained yet (head - tail).
    pub fn lag(&self) -> u64 {
        self.ctrl.head.load(Ordering::Acquire).wrapping_sub(self.tail)
    }

    /// The next position this consumer will read.
    pub fn position(&self) -> u64 {
        self.tail
    }
}

/// File name of the rings segment inside the segment directory.
pub const RINGS_FILE: &str = "rings";
/// File name of the store segment inside the segment directory.
pub const STORE_FILE: &str = "store";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The SSE 4.2 path and the portable one are the same CRC: a record
        /// written on one CPU verifies on any other.
        #[test]
        fn record_checksum_is_one_crc_on_every_path(conn_id: u64, version: u64, module: u8, kind: u8, payload in proptest::collection::vec(any::<u8>(), 0..=DELTA_PAYLOAD_MAX)) {
            let fields = checksum_fields(conn_id, version, module, kind, payload.len());
            prop_assert_eq!(record_checksum(conn_id, version, module, kind, &payload), crc32c_portable(fields, &payload));
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("sse4.2") {
                // SAFETY: checked just above.
                prop_assert_eq!(unsafe { crc32c_sse42(fields, &payload) }, crc32c_portable(fields, &payload));
            }
        }
    }

    proptest! {
        /// A payload given as words has the checksum of the same bytes.
        #[test]
        fn words_checksum_is_record_checksum(conn_id: u64, version: u64, module: u8, kind: u8, words: [u64; 6], len in 0usize..=48) {
            let mut bytes = Vec::new();
            for w in words {
                bytes.extend_from_slice(&w.to_le_bytes());
            }
            let fields = checksum_fields(conn_id, version, module, kind, len);
            prop_assert_eq!(words_checksum(fields, &words, len), record_checksum(conn_id, version, module, kind, &bytes[..len]));
        }
    }

    #[test]
    fn record_checksum_is_crc32c() {
        // The CRC-32C check value (RFC 3720 B.4): 32 zero bytes -> 0x8a9136aa.
        assert_eq!(crc32c_portable([0; 3], &[0; 8]), 0x8a91_36aa);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: checked just above.
            assert_eq!(unsafe { crc32c_sse42([0; 3], &[0; 8]) }, 0x8a91_36aa);
        }
    }
}
