//! The consumer end of a ring: checkpointd drains published records, each
//! verified on a private copy before `apply` sees it.

use super::checksum::record_checksum;
use super::{
    prefetch_slot, Delta, DrainReport, RingCtrl, SlotHeader, DELTA_HEADER_BYTES, DELTA_PAYLOAD_MAX,
    DELTA_SLOT_BYTES, PREFETCH_SLOTS,
};
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
    pub(super) scratch: [u8; DELTA_SLOT_BYTES],
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

    fn read(&mut self, pos: u64) -> Option<Delta<'_>> {
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
