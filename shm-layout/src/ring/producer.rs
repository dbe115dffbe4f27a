//! The producer end of a ring: a dataplane worker writes records into its
//! slots and publishes them with one Release store of `head` (P1).

use super::checksum::{checksum_fields, record_checksum, words_checksum};
use super::stream;
use super::{
    prefetch_slot, record_slots, PushError, RingCtrl, SlotHeader, CHECKSUM_AT, CONTINUATION,
    CONTINUATION_PAYLOAD, DELTA_HEADER_BYTES, DELTA_PAYLOAD_MAX, DELTA_SLOT_BYTES, PREFETCH_SLOTS,
    RECORD_PAYLOAD_MAX,
};
use crate::delta_kind;
use crate::sync::{Ordering, SlotCells};
use std::ptr::NonNull;
use std::sync::atomic::AtomicBool;

/// The producer end of one ring. Not `Clone`: the dataplane worker owns it.
pub struct DeltaProducer<'a> {
    pub(super) ctrl: &'a RingCtrl,
    pub(super) slots: NonNull<u8>,
    pub(super) mask: u64,
    pub(super) size: u64,
    /// Next position to write; `ctrl.head` lags it until `publish`.
    pub(super) head: u64,
    /// Records from here to `head` are written and may not be sealed:
    /// `publish` computes their checksums, just before it makes them visible
    /// (a record `try_push_words` sealed among them gets the same one again).
    pub(super) unsealed: u64,
    /// The consumer's tail as last read: the producer's view of free space.
    pub(super) cached_tail: u64,
    /// Continuation slots were streamed since the last `publish`, which
    /// must fence before it stores the head.
    pub(super) streamed: bool,
    pub(super) taken: &'a AtomicBool,
    /// Slot accesses for loom's race checks (nothing in a normal build).
    pub(super) cells: SlotCells<'a>,
}

// SAFETY: the handle is the only writer of its ring's slots and head in this
// process; moving it to another thread moves that exclusivity with it.
unsafe impl Send for DeltaProducer<'_> {}

impl Drop for DeltaProducer<'_> {
    fn drop(&mut self) {
        // Streamed stores are ordered by a fence on their own thread.
        if self.streamed {
            stream::fence();
        }
        self.taken.store(false, std::sync::atomic::Ordering::Release);
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

    /// The slot at `pos`, about to be written.
    #[inline]
    fn slot_to_write(&self, pos: u64) -> *mut u8 {
        self.cells.write((pos & self.mask) as usize);
        self.slot_ptr(pos)
    }

    #[inline]
    fn has_room(&mut self) -> bool {
        self.has_room_for(1)
    }

    /// Whether `slots` more slots are free: the cached tail first, the
    /// consumer's (P2) only when that says no, so a producer with room
    /// does not read the line the consumer writes.
    #[inline]
    pub fn has_room_for(&mut self, slots: u64) -> bool {
        // A tail ahead of the head (a damaged control block) is no room.
        let fits = |used: u64, size: u64| used <= size && slots <= size - used;
        if fits(self.head.wrapping_sub(self.cached_tail), self.size) {
            return true;
        }
        // P2: Acquire pairs with the consumer's C2.
        self.cached_tail = self.ctrl.tail.load(Ordering::Acquire);
        fits(self.head.wrapping_sub(self.cached_tail), self.size)
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
        if kind == delta_kind::PAD {
            return Err(PushError::ReservedKind);
        }
        if !self.has_room() {
            return Err(PushError::Full);
        }
        let slot = self.slot_to_write(self.head);
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

    /// As [`try_push`](Self::try_push), for a payload of up to
    /// [`RECORD_PAYLOAD_MAX`] bytes: the record spans [`record_slots`] slots
    /// (layout 8), its header and first bytes in the first, the rest in
    /// continuation slots, each starting with its own position marked
    /// [`CONTINUATION`]. One that would wrap is preceded by a PAD record to
    /// the ring's end. Never blocks; on error nothing is written.
    pub fn try_push_record(
        &mut self,
        conn_id: u64,
        module: u8,
        kind: u8,
        version: u64,
        payload: &[u8],
    ) -> Result<(), PushError> {
        if payload.len() > RECORD_PAYLOAD_MAX {
            return Err(PushError::TooLarge { len: payload.len() });
        }
        if kind == delta_kind::PAD {
            return Err(PushError::ReservedKind);
        }
        let span = record_slots(payload.len());
        let to_end = self.size - (self.head & self.mask);
        let pad = if span > to_end { to_end } else { 0 };
        if !self.has_room_for(pad + span) {
            return Err(PushError::Full);
        }
        // Sealed here, from the caller's contiguous bytes (already in cache),
        // not read back from the slots in pieces: what was pushed before it
        // is sealed first, so `seal` only ever meets one-slot records.
        self.seal();
        if pad > 0 {
            let sealed = record_checksum(0, 0, 0, delta_kind::PAD, &[]);
            self.write_header(delta_kind::PAD, 0, 0, 0, 0, sealed);
            self.skip_sealed(pad);
        }
        let (first, rest) = payload.split_at(payload.len().min(DELTA_PAYLOAD_MAX));
        let slot = self.slot_to_write(self.head);
        // SAFETY: positions head..head+span are the producer's (room was
        // checked, as in try_push_with) and in one lap (span <= to_end after
        // the pad); `first` fits the first slot's payload area and each
        // continuation chunk the 248 bytes after its slot's marker. Nothing
        // else references these slots until `publish`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                first.as_ptr(),
                slot.add(DELTA_HEADER_BYTES),
                first.len(),
            );
            for (i, chunk) in rest.chunks(CONTINUATION_PAYLOAD).enumerate() {
                let pos = self.head.wrapping_add(1 + i as u64);
                stream::write_continuation(self.slot_to_write(pos), pos | CONTINUATION, chunk);
            }
        }
        self.streamed |= !rest.is_empty();
        let sealed = record_checksum(conn_id, version, module, kind, payload);
        self.write_header(kind, conn_id, module, version, payload.len(), sealed);
        self.skip_sealed(span);
        prefetch_slot(self.slot_ptr(self.head.wrapping_add(PREFETCH_SLOTS)));
        Ok(())
    }

    /// Moves the head past a record of `span` slots written sealed, with
    /// nothing before it unsealed.
    #[inline]
    fn skip_sealed(&mut self, span: u64) {
        self.head = self.head.wrapping_add(span);
        self.unsealed = self.head;
    }

    /// The header of the record at `head` (`checksum` 0: left to `seal`).
    #[inline]
    fn write_header(
        &mut self,
        kind: u8,
        conn_id: u64,
        module: u8,
        version: u64,
        len: usize,
        checksum: u32,
    ) {
        let slot = self.slot_to_write(self.head);
        // SAFETY: the slot at head is the producer's alone until `publish`
        // (see try_push_with); the header is its first 32 bytes.
        unsafe {
            slot.cast::<SlotHeader>().write(SlotHeader {
                seq: self.head,
                conn_id,
                version,
                module,
                kind,
                len: len as u16,
                checksum,
            })
        };
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
        if kind == delta_kind::PAD {
            return Err(PushError::ReservedKind);
        }
        if !self.has_room() {
            return Err(PushError::Full);
        }
        let checksum =
            words_checksum(checksum_fields(conn_id, version, module, kind, len), words, len);
        let slot = self.slot_to_write(self.head);
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
            self.slot_to_write(seq)
                .add(CHECKSUM_AT)
                .cast::<u32>()
                .write(record_checksum(conn_id, version, module, kind, payload))
        };
        Ok(())
    }

    /// Writes the checksum of every record pushed since the last seal: each
    /// one slot (a multi-slot record and its pad are sealed at their push,
    /// after everything before them).
    #[inline]
    fn seal(&mut self) {
        while self.unsealed != self.head {
            let slot = self.slot_to_write(self.unsealed);
            // SAFETY: positions unsealed..head are pushed and unpublished, so
            // still the producer's alone (see try_push_with); the header was
            // written whole by the push, and the payload read is kept inside
            // the slot whatever its len says.
            unsafe {
                let h = slot.cast::<SlotHeader>().read();
                let len = usize::from(h.len).min(DELTA_PAYLOAD_MAX);
                let payload = std::slice::from_raw_parts(slot.add(DELTA_HEADER_BYTES), len);
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
        if std::mem::take(&mut self.streamed) {
            stream::fence();
        }
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

    /// The position below which every protected connection's record is in
    /// the remote store, as checkpointd last said (0: nothing yet).
    pub fn remote_committed(&self) -> u64 {
        self.ctrl.remote_committed.load(Ordering::Acquire)
    }

    /// checkpointd's resync requests so far; when it grows, re-emit every
    /// connection of this worker.
    pub fn resync_epoch(&self) -> u64 {
        self.ctrl.resync_epoch.load(Ordering::Acquire)
    }
}
