//! The consumer end of a ring: checkpointd drains published records, each
//! verified on a private copy before `apply` sees it.

use super::checksum::record_checksum;
use super::{
    prefetch_slot, record_slots, Delta, DrainReport, RingCtrl, SlotHeader, CONTINUATION,
    CONTINUATION_HEADER_BYTES, CONTINUATION_PAYLOAD, DELTA_HEADER_BYTES, DELTA_PAYLOAD_MAX,
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
    /// The last slot read was torn or a continuation slot: the next
    /// continuation slots are that record's, counted with it.
    pub(super) skipping: bool,
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
    /// A continuation slot: never a header.
    Continuation,
    Torn,
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
                prefetch_slot(self.slot_ptr(pos.wrapping_add(PREFETCH_SLOTS)));
            }
            let was_skipping = self.skipping;
            let (span, skipping) = match self.read(pos, head) {
                Read::Record(delta, span) => {
                    apply(&delta);
                    report.applied += 1;
                    (span, false)
                }
                Read::Pad(span) => (span, false),
                // The rest of a record just found torn: counted with it. A
                // continuation slot after anything else is a header that
                // was damaged into one, or a record's first slot lost:
                // counted.
                Read::Continuation if was_skipping => (1, true),
                Read::Continuation | Read::Torn => {
                    report.torn += 1;
                    (1, true)
                }
            };
            self.skipping = skipping;
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
        self.skipping = false;
        self.ctrl.tail.store(head, Ordering::Release);
        self.ctrl.resync_epoch.fetch_add(1, Ordering::AcqRel);
        DrainReport { resynced: true, ..DrainReport::default() }
    }

    /// The record at `pos` (below the published `head`), and the slots
    /// it spans. A slot that is no record's header (left from an earlier
    /// lap, a damaged header, a continuation slot) is skipped alone: each
    /// continuation slot says whose it is, so the next header is found
    /// whatever happened to this one.
    fn read(&mut self, pos: u64, head: u64) -> Read<'_> {
        self.cells.read((pos & self.mask) as usize);
        let slot = self.slot_ptr(pos);
        // SAFETY: pos is below the head loaded with Acquire (C1), so the
        // producer finished writing the slot and will not touch it before we
        // publish a tail beyond it (C2). A slot header is plain integers: any
        // bytes are a valid value.
        let header = unsafe { std::ptr::read_volatile(slot.cast::<SlotHeader>()) };
        if header.seq != pos {
            return if header.seq == pos | CONTINUATION { Read::Continuation } else { Read::Torn };
        }
        let len = header.len as usize;
        let to_end = self.size - (pos & self.mask);
        let pad = header.kind == delta_kind::PAD && len == 0;
        let span = if pad { 1 } else { record_slots(len) };
        // Its slots must be published and in one lap (a pad's: to the end).
        let covers = if pad { to_end } else { span };
        if len > RECORD_PAYLOAD_MAX || covers > to_end || covers > head.wrapping_sub(pos) {
            return Read::Torn;
        }
        let (first, rest) = (len.min(DELTA_PAYLOAD_MAX), len.saturating_sub(DELTA_PAYLOAD_MAX));
        // SAFETY: as above; the header and first bytes lie in the slot, and
        // 32 + len <= the scratch buffer (len <= RECORD_PAYLOAD_MAX).
        unsafe {
            std::ptr::copy_nonoverlapping(
                slot,
                self.scratch.as_mut_ptr(),
                DELTA_HEADER_BYTES + first,
            )
        };
        for i in 1..span {
            let at = pos.wrapping_add(i);
            self.cells.read((at & self.mask) as usize);
            let cont = self.slot_ptr(at);
            // SAFETY: slot `at` is below the head (span checked) and in this
            // lap, so written and not rewritten (C1/C2); its first word is a
            // plain integer.
            if unsafe { std::ptr::read_volatile(cont.cast::<u64>()) } != at | CONTINUATION {
                return Read::Torn;
            }
            let off = (i as usize - 1) * CONTINUATION_PAYLOAD;
            let n = (rest - off).min(CONTINUATION_PAYLOAD);
            // SAFETY: n bytes after the marker lie in the slot; the scratch
            // holds 32 + len >= 32 + 224 + off + n bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    cont.add(CONTINUATION_HEADER_BYTES),
                    self.scratch.as_mut_ptr().add(DELTA_HEADER_BYTES + DELTA_PAYLOAD_MAX + off),
                    n,
                )
            };
        }
        let payload = &self.scratch[DELTA_HEADER_BYTES..DELTA_HEADER_BYTES + len];
        // The private copy is what gets verified and applied: a producer
        // writing the slot meanwhile (a bug) cannot change it after the check.
        if record_checksum(header.conn_id, header.version, header.module, header.kind, payload)
            != header.checksum
        {
            return Read::Torn;
        }
        if pad {
            return Read::Pad(to_end);
        }
        Read::Record(
            Delta {
                seq: pos,
                conn_id: header.conn_id,
                version: header.version,
                module: header.module,
                kind: header.kind,
                payload,
            },
            span,
        )
    }

    fn slot_ptr(&self, pos: u64) -> *const u8 {
        // SAFETY: (pos & mask) < slots_per_ring, so the slot is inside this
        // ring's slot array in the validated layout.
        unsafe { self.slots.as_ptr().add((pos & self.mask) as usize * DELTA_SLOT_BYTES) }
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
