//! The record checksum: CRC-32C, the same value on every CPU.
//!
//! On x86_64 with SSE 4.2 (which DPDK's x86 builds require anyway) one loop,
//! [`crc32c_sse42`], serves both payload forms: bytes where they lie in a slot
//! and words still in registers (`try_push_words`). Other CPUs take the
//! crc32c crate's path, the same CRC.

use super::DELTA_PAYLOAD_MAX;

/// Payloads longer than this are checksummed by the crate's long-buffer path.
const LONG_PAYLOAD: usize = DELTA_PAYLOAD_MAX;

/// A record's checksum: CRC-32C of the header fields but `seq` (as three
/// little-endian words), then of the payload. `seq` is left out: the consumer
/// compares it with the position it reads, which catches a slot left from an
/// earlier lap, and a header half written carries the old checksum. A word
/// at a time through the CPU's CRC instruction: the crate's entry is built
/// for long buffers and these are short (docs/BENCHMARKS.md, checkpoint
/// overhead).
#[inline]
pub(crate) fn record_checksum(
    conn_id: u64,
    version: u64,
    module: u8,
    kind: u8,
    payload: &[u8],
) -> u32 {
    let fields = checksum_fields(conn_id, version, module, kind, payload.len());
    // A record longer than a slot (a LOG record's client bytes) goes through
    // the crate, whose three interleaved streams hide the instruction's
    // latency that one word at a time waits on: the same CRC.
    if payload.len() > LONG_PAYLOAD {
        return crc32c_portable(fields, payload);
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE 4.2, checked just above.
        return unsafe { crc32c_sse42(fields, &Bytes(payload), payload.len()) };
    }
    crc32c_portable(fields, payload)
}

/// The header words a record's checksum starts with (all but `seq`).
#[inline(always)]
pub(crate) fn checksum_fields(
    conn_id: u64,
    version: u64,
    module: u8,
    kind: u8,
    len: usize,
) -> [u64; 3] {
    [conn_id, version, u64::from(module) | u64::from(kind) << 8 | (len as u64) << 16]
}

/// [`record_checksum`] of a payload given as little-endian words, its first
/// `len` bytes (len <= 8 N).
#[inline(always)]
pub(crate) fn words_checksum<const N: usize>(
    fields: [u64; 3],
    words: &[u64; N],
    len: usize,
) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE 4.2, checked just above.
        return unsafe { crc32c_sse42(fields, words, len) };
    }
    let mut bytes = [0u8; DELTA_PAYLOAD_MAX];
    for (chunk, w) in bytes.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    crc32c_portable(fields, &bytes[..len])
}

/// A payload as the CRC loop reads it: little-endian words.
trait Words {
    /// The first `full` words; every byte of them is payload.
    fn words(&self, full: usize) -> impl Iterator<Item = u64>;
    /// Word `i` holding the last `rest` (1..=7) payload bytes in its low
    /// bytes; the loop ignores the others.
    fn partial(&self, i: usize, rest: usize) -> u64;
}

/// A payload in bytes.
struct Bytes<'a>(&'a [u8]);

impl Words for Bytes<'_> {
    #[inline(always)]
    fn words(&self, full: usize) -> impl Iterator<Item = u64> {
        self.0
            .chunks_exact(8)
            .take(full)
            .map(|w| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]))
    }

    #[inline(always)]
    fn partial(&self, i: usize, rest: usize) -> u64 {
        let tail = &self.0[i * 8..i * 8 + rest];
        // Whole narrower loads rather than a byte loop: 4, then 2, then 1.
        let (mut w, mut at) = (0u64, 0);
        if rest >= 4 {
            w = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
            at = 4;
        }
        if rest - at >= 2 {
            w |= u64::from(u16::from_le_bytes([tail[at], tail[at + 1]])) << (8 * at);
            at += 2;
        }
        if rest > at {
            w |= u64::from(tail[at]) << (8 * at);
        }
        w
    }
}

impl<const N: usize> Words for [u64; N] {
    #[inline(always)]
    fn words(&self, full: usize) -> impl Iterator<Item = u64> {
        self[..full.min(N)].iter().copied()
    }

    #[inline(always)]
    fn partial(&self, i: usize, _rest: usize) -> u64 {
        self[i.min(N - 1)]
    }
}

/// CRC-32C of `fields`, then of the first `len` bytes of `payload`: a word
/// at a time, the last partial word by 4, 2 and 1 bytes.
///
/// # Safety
/// The CPU supports SSE 4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
#[inline]
unsafe fn crc32c_sse42<P: Words + ?Sized>(fields: [u64; 3], payload: &P, len: usize) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};
    let mut c = u64::from(u32::MAX);
    for w in fields {
        c = _mm_crc32_u64(c, w);
    }
    let full = len / 8;
    for w in payload.words(full) {
        c = _mm_crc32_u64(c, w);
    }
    let mut c = c as u32;
    let mut rest = len % 8;
    if rest != 0 {
        let mut w = payload.partial(full, rest);
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The SSE 4.2 path and the portable one are the same CRC: a record
        /// written on one CPU verifies on any other.
        #[test]
        fn record_checksum_is_one_crc_on_every_path(conn_id: u64, version: u64, module: u8, kind: u8, payload in proptest::collection::vec(any::<u8>(), 0..=super::super::RECORD_PAYLOAD_MAX)) {
            let fields = checksum_fields(conn_id, version, module, kind, payload.len());
            prop_assert_eq!(record_checksum(conn_id, version, module, kind, &payload), crc32c_portable(fields, &payload));
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("sse4.2") {
                // SAFETY: checked just above.
                prop_assert_eq!(unsafe { crc32c_sse42(fields, &Bytes(&payload), payload.len()) }, crc32c_portable(fields, &payload));
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
            assert_eq!(unsafe { crc32c_sse42([0; 3], &Bytes(&[0; 8]), 8) }, 0x8a91_36aa);
        }
    }
}
