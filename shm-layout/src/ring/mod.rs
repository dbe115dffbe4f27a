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

pub(crate) mod checksum;
mod consumer;
mod producer;
pub(crate) mod segment;
mod stream;

pub use consumer::DeltaConsumer;
pub use producer::DeltaProducer;
pub use segment::{Heartbeat, RingsSegment};

use crate::header::HEADER_BYTES;
use crate::sync::AtomicU64;
use crate::LayoutError;

/// Every slot is this big, header included.
pub const DELTA_SLOT_BYTES: usize = 256;
/// The slot header: seq, conn_id, version, module, kind, len, checksum.
pub const DELTA_HEADER_BYTES: usize = 32;
/// The largest payload a delta carries.
pub const DELTA_PAYLOAD_MAX: usize = DELTA_SLOT_BYTES - DELTA_HEADER_BYTES;
/// The most slots one record spans (layout 8): a record longer than a
/// slot's payload continues in the slots after its own. A record never
/// wraps: one that would is preceded by a `delta_kind::PAD` record to the
/// ring's end.
pub const RECORD_SLOTS_MAX: u64 = 8;
/// A continuation slot starts with its own position, this bit set: never a
/// header's `seq`, so client bytes a LOG record carries never sit where the
/// consumer looks for a header, even after a damaged one.
pub const CONTINUATION: u64 = 1 << 63;
/// Bytes of a continuation slot before its share of the payload.
pub const CONTINUATION_HEADER_BYTES: usize = 8;
/// Payload bytes a continuation slot carries.
pub const CONTINUATION_PAYLOAD: usize = DELTA_SLOT_BYTES - CONTINUATION_HEADER_BYTES;
/// The largest payload of a record: what a protected connection's LOG
/// record carries of its client's bytes (a full-sized segment fits one).
pub const RECORD_PAYLOAD_MAX: usize =
    DELTA_PAYLOAD_MAX + (RECORD_SLOTS_MAX as usize - 1) * CONTINUATION_PAYLOAD;

/// Slots a record of `len` payload bytes spans.
#[inline]
pub const fn record_slots(len: usize) -> u64 {
    if len <= DELTA_PAYLOAD_MAX {
        1
    } else {
        1 + (len - DELTA_PAYLOAD_MAX).div_ceil(CONTINUATION_PAYLOAD) as u64
    }
}

/// Payload bytes a record of `slots` slots carries at most.
#[inline]
const fn record_bytes(slots: u64) -> usize {
    if slots == 0 {
        0
    } else {
        DELTA_PAYLOAD_MAX + (slots as usize - 1) * CONTINUATION_PAYLOAD
    }
}

/// Slots `len` bytes of log take at most, however they fall in the ring:
/// records of [`RECORD_PAYLOAD_MAX`], and a pad before the one that would
/// wrap. Nothing for no bytes (nothing is written).
#[inline]
pub const fn log_slots(len: usize) -> u32 {
    if len == 0 {
        return 0;
    }
    let (full, rest) = (len / RECORD_PAYLOAD_MAX, len % RECORD_PAYLOAD_MAX);
    let last = if rest > 0 { record_slots(rest) } else { 0 };
    (full as u64 * RECORD_SLOTS_MAX + last + RECORD_SLOTS_MAX - 1) as u32
}

/// The most bytes of log [`log_slots`] promises to fit in `slots`.
#[inline]
pub const fn log_bytes_within(slots: u32) -> usize {
    let usable = (slots as u64).saturating_sub(RECORD_SLOTS_MAX - 1);
    let (full, rest) = (usable / RECORD_SLOTS_MAX, usable % RECORD_SLOTS_MAX);
    full as usize * RECORD_PAYLOAD_MAX + record_bytes(rest)
}

/// Bytes of one ring's control block (head, tail, resync lines) before its slots.
pub const RING_CTRL_BYTES: usize = 512;
/// How far ahead the producer (of its head) and the consumer (of its tail)
/// prefetch slots: a ring larger than the cache is cold on every lap, and
/// without this each delta stalls its side on a miss (docs/BENCHMARKS.md,
/// checkpoint overhead and drain rate).
pub(crate) const PREFETCH_SLOTS: u64 = 8;

/// Starts fetching a slot's first two lines (the header and up to 96 bytes
/// of payload, where most portions end).
#[inline]
pub(crate) fn prefetch_slot(slot: *const u8) {
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

pub(crate) const MIN_SLOTS: u32 = 64;
const MAX_SLOTS: u32 = 1 << 24;
const MAX_WORKERS: u32 = 1024;

/// The header of one slot, as it sits in shared memory.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotHeader {
    /// The ring position this record was written at.
    pub(crate) seq: u64,
    pub(crate) conn_id: u64,
    pub(crate) version: u64,
    pub(crate) module: u8,
    pub(crate) kind: u8,
    pub(crate) len: u16,
    /// [`record_checksum`] of the other fields (but `seq`) and the payload.
    pub(crate) checksum: u32,
}
const _: () = assert!(std::mem::size_of::<SlotHeader>() == DELTA_HEADER_BYTES);
pub(crate) const CHECKSUM_AT: usize = 28;

/// One ring's control block: head, consumer fields and rarely written
/// fields each on a 128-byte line pair of their own (the x86 adjacent-line
/// prefetcher pulls lines in pairs, so 64 would still share).
#[repr(C)]
pub(crate) struct RingCtrl {
    /// Next position the producer will publish (written by the producer only).
    pub(crate) head: AtomicU64,
    pub(crate) _pad0: [u8; 120],
    /// Next position the consumer will read (written by the consumer only).
    pub(crate) tail: AtomicU64,
    /// Records the consumer skipped because checksum or seq did not match.
    pub(crate) torn: AtomicU64,
    /// Records the consumer applied.
    pub(crate) applied: AtomicU64,
    pub(crate) _pad1: [u8; 104],
    /// Bumped by checkpointd when it lost the store: the producer must re-emit
    /// every connection it holds.
    pub(crate) resync_epoch: AtomicU64,
    pub(crate) _pad2: [u8; 120],
    /// Written by checkpointd (layout 7): every protected connection's
    /// record at a position below it is in the remote store (output commit
    /// at the remote level). 0 until it says.
    pub(crate) remote_committed: AtomicU64,
    pub(crate) _reserved: [u8; 120],
}
// Under loom the atomics are loom's (larger) and the block lives off the
// segment, so only the real build pins its size.
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<RingCtrl>() == RING_CTRL_BYTES);

#[cfg(loom)]
impl RingCtrl {
    /// A zeroed control block, as format leaves one.
    pub(crate) fn new() -> Self {
        RingCtrl {
            head: AtomicU64::new(0),
            _pad0: [0; 120],
            tail: AtomicU64::new(0),
            torn: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            _pad1: [0; 104],
            resync_epoch: AtomicU64::new(0),
            _pad2: [0; 120],
            remote_committed: AtomicU64::new(0),
            _reserved: [0; 120],
        }
    }
}

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
    /// The payload does not fit: a module's portion grew beyond
    /// `DELTA_PAYLOAD_MAX` (a bug in that module's encoding), or a record
    /// beyond `RECORD_PAYLOAD_MAX` (split it first).
    #[error("delta payload of {len} bytes exceeds what the record may carry (a slot's {max} bytes, or {RECORD_PAYLOAD_MAX} for a multi-slot record); shrink the module's portion encoding or split the record", max = DELTA_PAYLOAD_MAX)]
    TooLarge { len: usize },
    /// `delta_kind::PAD` is the ring's own: the producer writes it where a
    /// record would wrap.
    #[error("delta kind PAD is written by the ring itself, never pushed")]
    ReservedKind,
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
    /// The control block was impossible (head behind the tail, or more than
    /// a ring ahead): the consumer moved its tail to the head and asked the
    /// producer to re-send every connection. Report it; it happens once.
    pub resynced: bool,
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

/// File name of the rings segment inside the segment directory.
pub const RINGS_FILE: &str = "rings";
/// File name of the store segment inside the segment directory.
pub const STORE_FILE: &str = "store";
