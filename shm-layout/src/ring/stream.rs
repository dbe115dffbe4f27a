//! Continuation slots written around the cache (non-temporal stores).
//!
//! A LOG record's continuation slots are written once by the worker and
//! read once by checkpointd, a lap later at most: a normal store first reads
//! each line from memory (a lap ago it left every cache) to write it, and
//! leaves it where it pushes the packet path's own lines out. Streamed
//! stores skip that read. They are weakly ordered, so the producer fences
//! (`sfence`) before the Release store that publishes them.

#[cfg(all(target_arch = "x86_64", not(loom)))]
use super::CONTINUATION_PAYLOAD;
use super::{CONTINUATION_HEADER_BYTES, DELTA_SLOT_BYTES};

const _: () = assert!(CONTINUATION_HEADER_BYTES == 8 && DELTA_SLOT_BYTES.is_multiple_of(16));

/// Writes a continuation slot: `marker`, then `chunk` (at most
/// [`CONTINUATION_PAYLOAD`] bytes), the rest of its last 16 bytes zero.
///
/// # Safety
/// `slot` is a slot of the ring the caller may write (16-byte aligned,
/// [`DELTA_SLOT_BYTES`] long) and nothing reads it until the caller fences
/// and publishes.
#[cfg(all(target_arch = "x86_64", not(loom)))]
#[inline]
pub(super) unsafe fn write_continuation(slot: *mut u8, marker: u64, chunk: &[u8]) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
    debug_assert!(chunk.len() <= CONTINUATION_PAYLOAD && (slot as usize).is_multiple_of(16));
    // The slot as 16-byte words from its start: the marker and the first 8
    // bytes, then the rest of the chunk; the last word's tail from a copy.
    let mut first = [0u8; 16];
    first[..8].copy_from_slice(&marker.to_le_bytes());
    let head = chunk.len().min(8);
    first[8..8 + head].copy_from_slice(&chunk[..head]);
    // SAFETY: `slot` is 16-byte aligned and writable for DELTA_SLOT_BYTES
    // (the caller's contract); every store below is at a multiple of 16
    // inside it, and every load reads 16 bytes inside `first`, `chunk` or
    // `last`.
    unsafe {
        _mm_stream_si128(slot.cast::<__m128i>(), _mm_loadu_si128(first.as_ptr().cast()));
        let mut at = head;
        while at < chunk.len() {
            let word = if chunk.len() - at >= 16 {
                _mm_loadu_si128(chunk.as_ptr().add(at).cast())
            } else {
                let mut last = [0u8; 16];
                last[..chunk.len() - at].copy_from_slice(&chunk[at..]);
                _mm_loadu_si128(last.as_ptr().cast())
            };
            _mm_stream_si128(slot.add(CONTINUATION_HEADER_BYTES + at).cast::<__m128i>(), word);
            at += 16;
        }
    }
}

/// Elsewhere (and under loom): plain stores.
///
/// # Safety
/// As the x86_64 version.
#[cfg(not(all(target_arch = "x86_64", not(loom))))]
#[inline]
pub(super) unsafe fn write_continuation(slot: *mut u8, marker: u64, chunk: &[u8]) {
    // SAFETY: the caller's contract: the slot is writable and holds the
    // marker and the chunk.
    unsafe {
        slot.cast::<u64>().write_unaligned(marker);
        std::ptr::copy_nonoverlapping(
            chunk.as_ptr(),
            slot.add(CONTINUATION_HEADER_BYTES),
            chunk.len(),
        );
    }
}

/// Orders the streamed stores before the next store (the head's).
#[inline]
pub(super) fn fence() {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    // SAFETY: sfence has no operands and no effect but ordering.
    unsafe {
        std::arch::x86_64::_mm_sfence();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(256))]
    struct Slot([u8; DELTA_SLOT_BYTES]);

    /// Every chunk length: the marker, the bytes, zeros to the end of the
    /// last 16-byte word written, and nothing touched after it.
    #[test]
    fn a_continuation_slot_holds_its_marker_and_bytes_and_nothing_past_its_last_word() {
        let bytes: Vec<u8> = (0..CONTINUATION_PAYLOAD).map(|i| (i * 7 + 1) as u8).collect();
        for len in 0..=CONTINUATION_PAYLOAD {
            let mut slot = Slot([0xAA; DELTA_SLOT_BYTES]);
            let marker = 0x8000_0000_0000_0000 | len as u64;
            // SAFETY: the slot is aligned, writable and ours.
            unsafe { write_continuation(slot.0.as_mut_ptr(), marker, &bytes[..len]) };
            fence();
            let s = &slot.0;
            assert_eq!(s[..8], marker.to_le_bytes(), "len {len}");
            assert_eq!(s[8..8 + len], bytes[..len], "len {len}");
            #[cfg(target_arch = "x86_64")]
            {
                let written = (CONTINUATION_HEADER_BYTES + len).div_ceil(16) * 16;
                assert!(s[8 + len..written].iter().all(|&b| b == 0), "len {len}");
                assert!(s[written..].iter().all(|&b| b == 0xAA), "len {len}");
            }
        }
    }
}
