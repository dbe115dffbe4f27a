//! Segments of the previous layouts, brought forward in place by checkpointd
//! (docs/CHECKPOINT.md, Format versions).
//! * 8 → 9: 9 marks each continuation slot of a multi-slot record, so
//!   client bytes never sit where a header is looked for. A ring written by
//!   8 (on main for a few hours, never released) may hold unread records
//!   whose continuation slots are bare client bytes: they are dropped
//!   unread (each ring's tail moved to its head) and the producer is asked
//!   to write every connection again (its resync epoch bumped).
//! * 7 → 8: the same bytes; 8 lets a record span several slots and adds
//!   the PAD kind, which a ring written by 7 holds none of (each of its
//!   records is one slot, as 8 reads them).
//! * 6 → 7: the same bytes; 7 gives checkpointd a word in each ring's
//!   control block (where the remote store has the protected connections'
//!   records up to), which 6 left zero: nothing said yet.
//! * 5 → 6: the same bytes; 6 adds the LOG delta kind and the PROTECT
//!   module, which a ring written by 5 holds none of.
//! * 4 → 5: the same bytes; 5 adds a delta kind (SWEEP) and versioned
//!   deletes, which a ring or store written by 4 holds none of.
//! * 3 (`v0.1.0`) → 4: adds the origin. A file on hugetlbfs or tmpfs cannot
//!   predate this boot, so it gets this host's origin; anywhere else the
//!   origin is left unknown, which makes checkpointd rebase the store as if
//!   it came from another boot.

use crate::header::{SegmentHeader, LAYOUT_VERSION, LAYOUT_VERSION_OLDEST, MAGIC};
use crate::mapped::{fs_magic, is_hugetlbfs, parent_dir, MappedFile};
use crate::origin::{SegmentOrigin, ORIGIN_OFFSET};
use crate::LayoutError;
use std::path::Path;

const TMPFS_MAGIC: i64 = 0x0102_1994;

/// What [`from_previous`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translated {
    /// Already this build's layout.
    Current,
    /// Brought forward from `from`; `origin_known` when this boot's origin
    /// could be vouched for.
    From { from: u32, origin_known: bool },
}

/// Brings the segment file at `path` to [`LAYOUT_VERSION`] when it holds
/// the previous layout. Anything older or newer is refused as attach would.
pub fn from_previous(path: &Path) -> Result<Translated, LayoutError> {
    let mut file = MappedFile::open(path)?;
    if file.len() < crate::HEADER_BYTES {
        return Err(LayoutError::Truncated {
            len: file.len() as u64,
            needed: crate::HEADER_BYTES as u64,
        });
    }
    let base = file.as_mut_ptr();
    // SAFETY: the mapping is page-aligned and at least HEADER_BYTES long;
    // the header is plain integers.
    let mut h = unsafe { std::ptr::read_volatile(base.cast::<SegmentHeader>()) };
    if h.magic != MAGIC {
        return Err(LayoutError::BadMagic { found: h.magic });
    }
    if h.layout_version == LAYOUT_VERSION {
        return Ok(Translated::Current);
    }
    let from = h.layout_version;
    if !(LAYOUT_VERSION_OLDEST..LAYOUT_VERSION).contains(&from) {
        return Err(LayoutError::VersionMismatch { found: from, expected: LAYOUT_VERSION });
    }
    if h.header_checksum != h.compute_checksum() {
        return Err(LayoutError::BadGeometry(
            "header checksum mismatch: the header was overwritten; stop checkpointd and remove the segment files"
                .into(),
        ));
    }
    // 3 → 4: the origin.
    let mut origin_known = true;
    if from == 3 {
        let dir = parent_dir(path);
        origin_known = is_hugetlbfs(dir) || fs_magic(dir) == Some(TMPFS_MAGIC);
        let origin =
            if origin_known { SegmentOrigin::this_host()? } else { SegmentOrigin::new([0; 16], 0) };
        // SAFETY: inside the header page of a mapping only checkpointd (the
        // caller, at start) writes; the version that makes it meaningful is
        // written after it.
        unsafe {
            std::ptr::write_volatile(base.add(ORIGIN_OFFSET).cast::<SegmentOrigin>(), origin)
        };
    }
    // 8 → 9: nothing unread is trusted.
    if from == 8 && h.kind == crate::header::SegmentKind::Rings as u32 {
        drop_unread_records(&mut file, &h)?;
    }
    // 4 → 5 up to 7 → 8: nothing but the number.
    h.layout_version = LAYOUT_VERSION;
    h.header_checksum = h.compute_checksum();
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    // SAFETY: the header page, as above; the version last.
    unsafe { std::ptr::write_volatile(base.cast::<SegmentHeader>(), h) };
    file.flush()?;
    Ok(Translated::From { from, origin_known })
}

/// Moves each ring's tail to its head and bumps its resync epoch (8 → 9).
fn drop_unread_records(file: &mut MappedFile, h: &SegmentHeader) -> Result<(), LayoutError> {
    let (workers, slots) = (u64::from(h.geom_a), u64::from(h.geom_b));
    let ring = u64::from(h.aux_bytes) + slots * u64::from(h.record_bytes);
    let needed = crate::HEADER_BYTES as u64 + workers * ring;
    if u64::from(h.aux_bytes) < 264 || (file.len() as u64) < needed {
        return Err(LayoutError::Truncated { len: file.len() as u64, needed });
    }
    let base = file.as_mut_ptr();
    for w in 0..workers {
        let ctrl = crate::HEADER_BYTES as u64 + w * ring;
        // SAFETY: ctrl + 264 <= needed <= the mapping's length (checked);
        // head at 0, tail at 128 and resync_epoch at 256 of the control
        // block are 8-aligned (the body and the ring strides are multiples
        // of 64), and only checkpointd (the caller, at start) writes them.
        unsafe {
            let at = |off: u64| base.add((ctrl + off) as usize).cast::<u64>();
            let head = std::ptr::read_volatile(at(0));
            std::ptr::write_volatile(at(128), head);
            let epoch = std::ptr::read_volatile(at(256));
            std::ptr::write_volatile(at(256), epoch.wrapping_add(1));
        }
    }
    Ok(())
}

/// Test support: writes the segment file at `path` as layout `version` (3
/// to 8) would have: 4 to 8 are this layout under their numbers (the
/// control block's new word zero, every record one slot; 8's records as
/// they are), 3 lacks the origin.
/// The previous versions' encoders, kept for the translation tests. Not for
/// production use.
#[doc(hidden)]
pub fn test_downgrade_to(path: &Path, version: u32) -> Result<(), LayoutError> {
    assert!(matches!(version, 3..=8), "layout {version} is not one this build translates");
    let mut file = MappedFile::open(path)?;
    let base = file.as_mut_ptr();
    // SAFETY: as in `from_previous`; the test owns the file.
    unsafe {
        let mut h = std::ptr::read_volatile(base.cast::<SegmentHeader>());
        h.layout_version = version;
        h.header_checksum = h.compute_checksum();
        if version == 3 {
            std::ptr::write_bytes(base.add(ORIGIN_OFFSET), 0, std::mem::size_of::<SegmentOrigin>());
        }
        std::ptr::write_volatile(base.cast::<SegmentHeader>(), h);
    }
    Ok(())
}

/// Test support: [`test_downgrade_to`] the previous layout.
#[doc(hidden)]
pub fn test_downgrade_to_previous(path: &Path) -> Result<(), LayoutError> {
    test_downgrade_to(path, LAYOUT_VERSION - 1)
}
