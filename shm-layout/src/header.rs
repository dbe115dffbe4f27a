//! The header at byte 0 of every segment.

use crate::origin::{SegmentOrigin, ORIGIN_OFFSET};
use crate::LayoutError;
use std::sync::atomic::{fence, Ordering};

/// Bytes 0..8 of every segment.
pub const MAGIC: [u8; 8] = *b"LAZARUS1";
/// Bumped whenever any shared structure changes size, order or meaning.
/// 4: the header page records the segment's [`SegmentOrigin`].
/// 5: the rings carry `delta_kind::SWEEP`; a DELETE older than the record's
/// newest portion is ignored.
/// 6: the rings carry `delta_kind::LOG`, `delta_kind::TRIM` and
/// `module::PROTECT` records.
/// 7: each ring's control block carries `remote_committed`, written by
/// checkpointd (output commit at the remote level).
/// 8: a record may span up to `RECORD_SLOTS_MAX` slots, and
/// `delta_kind::PAD` skips to a ring's end.
/// 9: each continuation slot starts with its position marked
/// `CONTINUATION` (8 ran a record's payload on through bare slots).
pub const LAYOUT_VERSION: u32 = 9;
/// The oldest layout checkpointd translates (`translate::from_previous`):
/// the previous ones, back to `v0.1.0`'s.
pub const LAYOUT_VERSION_OLDEST: u32 = 3;
/// The header page: the [`SegmentHeader`] and segment-wide fields (the rings'
/// heartbeat) live in the first 4 KiB; the body starts after it.
pub const HEADER_BYTES: usize = 4096;

/// Which segment a header describes.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    Rings = 1,
    Store = 2,
}

/// Byte 0 of a segment: 64 bytes, written once at format, magic last.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// [`MAGIC`]; stored last at format, so a half-formatted segment never
    /// passes attach.
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`] of the build that formatted it.
    pub layout_version: u32,
    /// [`SegmentKind`] as u32.
    pub kind: u32,
    /// Bytes the layout occupies (the mapping may be larger: hugepage rounding).
    pub total_bytes: u64,
    /// Offset of the body ([`HEADER_BYTES`]).
    pub header_bytes: u64,
    /// Rings: workers. Store: connection capacity.
    pub geom_a: u32,
    /// Rings: slots per ring. Store: FTP pool capacity.
    pub geom_b: u32,
    /// Chosen at format (time and pid): tells one incarnation from the next.
    pub generation: u64,
    /// Rings: bytes per slot. Store: bytes per `ConnRecord`.
    pub record_bytes: u32,
    /// Rings: bytes of one ring's control block. Store: bytes per `FtpRecord`.
    pub aux_bytes: u32,
    /// xxh3-64 of bytes 0..56 of this header.
    pub header_checksum: u64,
}

const _: () = assert!(std::mem::size_of::<SegmentHeader>() == 64);
const _: () = assert!(HEADER_BYTES >= 64 + 128 + 128);

impl SegmentHeader {
    pub(crate) fn new(
        kind: SegmentKind,
        total_bytes: u64,
        geom: (u32, u32),
        sizes: (u32, u32),
    ) -> Self {
        let mut h = SegmentHeader {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            kind: kind as u32,
            total_bytes,
            header_bytes: HEADER_BYTES as u64,
            geom_a: geom.0,
            geom_b: geom.1,
            generation: new_generation(),
            record_bytes: sizes.0,
            aux_bytes: sizes.1,
            header_checksum: 0,
        };
        h.header_checksum = h.compute_checksum();
        h
    }

    pub(crate) fn compute_checksum(&self) -> u64 {
        let mut b = [0u8; 56];
        b[0..8].copy_from_slice(&self.magic);
        b[8..12].copy_from_slice(&self.layout_version.to_le_bytes());
        b[12..16].copy_from_slice(&self.kind.to_le_bytes());
        b[16..24].copy_from_slice(&self.total_bytes.to_le_bytes());
        b[24..32].copy_from_slice(&self.header_bytes.to_le_bytes());
        b[32..36].copy_from_slice(&self.geom_a.to_le_bytes());
        b[36..40].copy_from_slice(&self.geom_b.to_le_bytes());
        b[40..48].copy_from_slice(&self.generation.to_le_bytes());
        b[48..52].copy_from_slice(&self.record_bytes.to_le_bytes());
        b[52..56].copy_from_slice(&self.aux_bytes.to_le_bytes());
        xxhash_rust::xxh3::xxh3_64(&b)
    }
}

fn new_generation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    xxhash_rust::xxh3::xxh3_64_with_seed(&nanos.to_le_bytes(), u64::from(std::process::id()))
}

/// The base of a mapping: must be cache-line aligned (atomics, ring lines).
pub(crate) fn check_base(base: *mut u8, len: usize) -> Result<(), LayoutError> {
    if base.is_null() || (base as usize) & 63 != 0 {
        return Err(LayoutError::Misaligned { addr: base as u64, align: 64 });
    }
    if len < HEADER_BYTES {
        return Err(LayoutError::Truncated { len: len as u64, needed: HEADER_BYTES as u64 });
    }
    Ok(())
}

/// Formats a segment: checks the mapping can hold `header.total_bytes`, then
/// zeroes that much and writes the header (what `format` of every segment
/// kind does before its own initialisation).
///
/// # Safety
/// `base..base+len` is valid for writes and nobody else accesses it during
/// the call.
pub(crate) unsafe fn format_segment(
    base: *mut u8,
    len: usize,
    header: &SegmentHeader,
    origin: &SegmentOrigin,
) -> Result<(), LayoutError> {
    check_base(base, len)?;
    let total = header.total_bytes;
    if total > len as u64 {
        return Err(LayoutError::Truncated { len: len as u64, needed: total });
    }
    // SAFETY: the caller guarantees base..base+len (>= total) is ours.
    unsafe { write_header(base, total as usize, header, origin) };
    Ok(())
}

impl SegmentHeader {
    /// At attach: the record sizes the header records are this build's, and
    /// its total is what the geometry read from it needs. `what` names the
    /// two sizes in the error ("slot / control", "records of").
    pub(crate) fn check_sizes(
        &self,
        what: &str,
        record: usize,
        aux: usize,
        geometry_bytes: u64,
    ) -> Result<(), LayoutError> {
        if self.record_bytes as usize != record || self.aux_bytes as usize != aux {
            return Err(LayoutError::BadGeometry(format!(
                "{what} {} / {} bytes, this build uses {record} / {aux}",
                self.record_bytes, self.aux_bytes
            )));
        }
        if self.total_bytes != geometry_bytes {
            return Err(LayoutError::BadGeometry(format!(
                "header says {} bytes, the geometry needs {geometry_bytes}",
                self.total_bytes
            )));
        }
        Ok(())
    }
}

/// Zeroes `total` bytes and writes `header` and `origin`, magic last.
///
/// # Safety
/// `base..base+total` is valid for writes, 64-byte aligned, at least
/// HEADER_BYTES long, and nobody else accesses it during the call.
pub(crate) unsafe fn write_header(
    base: *mut u8,
    total: usize,
    header: &SegmentHeader,
    origin: &SegmentOrigin,
) {
    // SAFETY: the caller guarantees base..base+total is writable and unshared.
    unsafe { std::ptr::write_bytes(base, 0, total) };
    // SAFETY: ORIGIN_OFFSET + 32 lies in the header page, 8-aligned.
    unsafe { write_origin(base, origin) };
    let mut without_magic = *header;
    without_magic.magic = [0; 8];
    // SAFETY: base is 64-byte aligned and at least HEADER_BYTES long (checked
    // by check_base), so a SegmentHeader fits and is aligned.
    unsafe { std::ptr::write_volatile(base.cast::<SegmentHeader>(), without_magic) };
    // Everything the magic vouches for is stored before the magic itself.
    fence(Ordering::Release);
    // SAFETY: as above; the magic is the first field, 8 bytes at base.
    unsafe { std::ptr::write_volatile(base.cast::<[u8; 8]>(), header.magic) };
}

/// Reads and validates the header of a segment of `kind`.
///
/// # Safety
/// `base..base+len` is valid for reads and 64-byte aligned, len >= HEADER_BYTES.
pub(crate) unsafe fn read_header(
    base: *const u8,
    len: usize,
    kind: SegmentKind,
) -> Result<SegmentHeader, LayoutError> {
    // SAFETY: the caller guarantees at least HEADER_BYTES readable bytes at
    // an aligned base; the header is plain integers, any bit pattern is valid.
    let h = unsafe { std::ptr::read_volatile(base.cast::<SegmentHeader>()) };
    fence(Ordering::Acquire);
    if h.magic != MAGIC {
        return Err(LayoutError::BadMagic { found: h.magic });
    }
    if h.layout_version != LAYOUT_VERSION {
        return Err(LayoutError::VersionMismatch {
            found: h.layout_version,
            expected: LAYOUT_VERSION,
        });
    }
    if h.kind != kind as u32 {
        return Err(LayoutError::WrongKind { found: h.kind, expected: kind as u32 });
    }
    if h.header_checksum != h.compute_checksum() {
        return Err(LayoutError::BadGeometry(
            "header checksum mismatch: the header was overwritten; stop checkpointd and remove the segment files"
                .into(),
        ));
    }
    if h.header_bytes != HEADER_BYTES as u64 {
        return Err(LayoutError::BadGeometry(format!(
            "header_bytes {} (this build: {HEADER_BYTES})",
            h.header_bytes
        )));
    }
    if h.total_bytes > len as u64 {
        return Err(LayoutError::Truncated { len: len as u64, needed: h.total_bytes });
    }
    Ok(h)
}

/// Writes a segment's origin.
///
/// # Safety
/// `base` is a segment's 64-aligned base with its header page mapped; only
/// checkpointd writes the origin, before the dataplane attaches.
pub(crate) unsafe fn write_origin(base: *mut u8, origin: &SegmentOrigin) {
    // SAFETY: the caller's contract; the origin is plain integers.
    unsafe { std::ptr::write_volatile(base.add(ORIGIN_OFFSET).cast::<SegmentOrigin>(), *origin) };
}

/// Reads a segment's origin.
///
/// # Safety
/// `base` is a segment's 64-aligned base with its header page mapped.
pub(crate) unsafe fn read_origin(base: *const u8) -> SegmentOrigin {
    // SAFETY: the caller's contract; any bytes are a SegmentOrigin.
    unsafe { std::ptr::read_volatile(base.add(ORIGIN_OFFSET).cast::<SegmentOrigin>()) }
}
