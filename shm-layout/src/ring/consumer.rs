//! The consumer end of a ring: checkpointd drains published records, each
//! verified on a private copy before `apply` sees it.

use super::checksum::record_checksum;
use super::{
    prefetch_slot, record_slots, Delta, DrainReport, RingCtrl, SlotHeader, DELTA_HEADER_BYTES,
    DELTA_SLOT_BYTES, PREFETCH_SLOTS, RECORD_PAYLOAD_MAX, RECORD_SLOTS_MAX,
};
use crate::delta_kind;
use crate::sync::{Ordering, SlotCells};
use std::ptr::NonNull;
use std::sync::atomic::AtomicBool;

/// The consumer end of one ring (checkpointd).
pub struct DeltaConsumer<'a> {
    pub(super) ctrl: &'a RingCtrl,
    pub(super) slots: NonNull<u8>,
    pub(super) mask: u64,
    pub(super) size: u64,
    pub(super) tail: u64,
    /// Each record is copied here and verified before `apply` sees it.
    pub(super) scratch: Box<[u8; RECORD_SLOTS_MAX as usize * DELTA_SLOT_BYTES]>,
    pub(super) taken: &'a AtomicBool,
    /// Slot accesses for loom's race checks (nothing in a normal build).
    pub(super) cells: SlotCells<'a>,
}

// SAFETY: the handle is the only reader of its ring's published slots and the
// only writer of its tail in this process; moving it moves that exclusivity.
unsafe impl Send for DeltaConsumer<'_> {}

impl Drop for DeltaConsumer<'_> {
    fn drop(&mut self) {
        self.taken.store(false, std::sync::atomic::Ordering::Release);
    }
}

impl std::fmt::Debug for DeltaConsumer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaConsumer").field("tail", &self.tail).finish()
    }
}

/// What `read` found at a position, and the slots to move past it.
enum Read<'a> {
    Record(Delta<'a>, u64),
    Pad(u64),
    Torn(u64),
}

impl DeltaConsumer<'_> {
    /// Calls `apply` for each valid published record (up to `max`) in order,
    /// then publishes the new tail (Release). A record whose checksum or seq
    /// does not match is counted as torn and skipped, never passed to `apply`.
    pub fn drain(&mut self, max: u32, mut apply: impl FnMut(&Delta<'_>)) -> DrainReport {
        // C1: Acquire pairs with the producer's P1.
        let head = self.ctrl.head.load(Ordering::Acquire);
        let avail = head.wrapping_sub(self.tail);
        if avail > self.size {
            return self.resync(head);
        }
        let n = avail.min(u64::from(max));
        let start = self.tail;
        let mut report = DrainReport::default();
        // Slots up to `start + n`; the last record may run on past it, up to
        // the head.
        while self.tail.wrapping_sub(start) < n {
            let pos = self.tail;
            if pos.wrapping_sub(start) + PREFETCH_SLOTS < n {
                // SAFETY: masked position: inside this ring's slot array.
                prefetch_slot(unsafe {
                    self.slots.as_ptr().add(
                        (pos.wrapping_add(PREFETCH_SLOTS) & self.mask) as usize * DELTA_SLOT_BYTES,
                    )
                });
            }
            let span = match self.read(pos, head) {
                Read::Record(delta, span) => {
                    apply(&delta);
                    report.applied += 1;
                    span
                }
                Read::Pad(span) => span,
                Read::Torn(span) => {
                    report.torn += 1;
                    span
                }
            };
            self.tail = pos.wrapping_add(span);
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

    /// A head behind the tail or more than a ring ahead is impossible from a
    /// correct producer (a damaged or foreign control block): nothing between
    /// them can be trusted, so skip to the head and have the producer re-send
    /// every connection it holds, which replaces whatever was skipped.
    fn resync(&mut self, head: u64) -> DrainReport {
        self.tail = head;
        self.ctrl.tail.store(head, Ordering::Release);
        self.ctrl.resync_epoch.fetch_add(1, Ordering::AcqRel);
        DrainReport { resynced: true, ..DrainReport::default() }
    }

    /// The record at `pos` (below the published `head`), and the slots
    /// it spans: a record's header says how many; a slot that is no
    /// record's header (left from an earlier lap, or a torn record's) is
    /// skipped alone, and a record whose header is its own but whose bytes
    /// fail the checksum is skipped whole.
    fn read(&mut self, pos: u64, head: u64) -> Read<'_> {
        self.cells.read((pos & self.mask) as usize);
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
        let to_end = self.size - (pos & self.mask);
        let span =
            if header.kind == delta_kind::PAD && len == 0 { to_end } else { record_slots(len) };
        // Its slots must be published and in one lap.
        if header.seq != pos
            || len > RECORD_PAYLOAD_MAX
            || span > to_end
            || span > head.wrapping_sub(pos)
        {
            return Read::Torn(1);
        }
        let n = DELTA_HEADER_BYTES + len;
        for i in 1..span.min(RECORD_SLOTS_MAX) {
            self.cells.read(((pos + i) & self.mask) as usize);
        }
        // SAFETY: as above for every slot the record spans (below the head,
        // checked, and in one lap, so contiguous in the slot array); n <=
        // RECORD_SLOTS_MAX slots = the scratch buffer.
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
            // A pad is its header alone.
            return Read::Torn(if header.kind == delta_kind::PAD { 1 } else { span });
        }
        if header.kind == delta_kind::PAD {
            return Read::Pad(span);
        }
        Read::Record(
            Delta {
                seq: pos,
                conn_id: header.conn_id,
                version: header.version,
                module: header.module,
                kind: header.kind,
                payload: &self.scratch[DELTA_HEADER_BYTES..n],
            },
            span,
        )
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
