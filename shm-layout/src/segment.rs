//! What every segment kind does the same way: format a mapping (header,
//! magic last), attach to one (header checks), create or open it as a file,
//! and describe itself in `Debug`. Each kind supplies its [`Geometry`].

use crate::header::{
    check_base, format_segment, read_header, read_origin, write_origin, SegmentHeader, SegmentKind,
};
use crate::mapped::MappedFile;
use crate::origin::SegmentOrigin;
use crate::trust::SegmentAccess;
use crate::LayoutError;
use std::path::Path;
use std::ptr::NonNull;

/// How one segment kind is sized, and how that sits in the header.
pub(crate) trait Geometry: Copy + std::fmt::Debug {
    const KIND: SegmentKind;
    /// This build's `record_bytes` and `aux_bytes`, which attach compares
    /// with the header's.
    const SIZES: (usize, usize);
    /// What the two sizes are, for the mismatch error ("slot / control").
    const SIZES_NAME: &'static str;

    /// The geometry a header records (`geom_a`, `geom_b`).
    fn from_header(a: u32, b: u32) -> Self;
    /// The `geom_a`, `geom_b` to record.
    fn to_header(&self) -> (u32, u32);
    fn validate(&self) -> Result<(), LayoutError>;
    fn segment_bytes(&self) -> u64;
}

/// A formatted segment's memory: base, length, geometry and generation read
/// from its header, and the file that keeps the mapping alive (None when the
/// caller owns the memory).
pub(crate) struct Mapping<G> {
    pub(crate) base: NonNull<u8>,
    pub(crate) len: usize,
    pub(crate) geom: G,
    pub(crate) generation: u64,
    pub(crate) file: Option<MappedFile>,
}

impl<G: Geometry> Mapping<G> {
    /// Zeroes the layout and writes a fresh header, then attaches.
    ///
    /// # Safety
    /// `base..base+len` is mapped memory, valid for reads and writes, that
    /// outlives the returned value, and nobody else uses it during the call.
    pub(crate) unsafe fn format(base: *mut u8, len: usize, geom: G) -> Result<Self, LayoutError> {
        geom.validate()?;
        let header = SegmentHeader::new(
            G::KIND,
            geom.segment_bytes(),
            geom.to_header(),
            (G::SIZES.0 as u32, G::SIZES.1 as u32),
        );
        let origin = SegmentOrigin::this_host()?;
        // SAFETY: the caller guarantees base..base+len is ours.
        unsafe { format_segment(base, len, &header, &origin) }?;
        // SAFETY: just formatted, same contract.
        unsafe { Self::attach(base, len) }
    }

    /// Checks magic, version, kind, header checksum, record sizes, geometry,
    /// and that `len` covers the layout.
    ///
    /// # Safety
    /// `base..base+len` is mapped memory, valid for reads and writes, that
    /// outlives the returned value.
    pub(crate) unsafe fn attach(base: *mut u8, len: usize) -> Result<Self, LayoutError> {
        check_base(base, len)?;
        // SAFETY: caller's contract; check_base ensured alignment and size.
        let h = unsafe { read_header(base, len, G::KIND) }?;
        let geom = G::from_header(h.geom_a, h.geom_b);
        geom.validate()?;
        h.check_sizes(G::SIZES_NAME, G::SIZES.0, G::SIZES.1, geom.segment_bytes())?;
        Ok(Mapping {
            base: NonNull::new(base).ok_or(LayoutError::Misaligned { addr: 0, align: 64 })?,
            len,
            geom,
            generation: h.generation,
            file: None,
        })
    }

    /// Creates `path` afresh (see [`MappedFile::create`]), sized for `geom`,
    /// and formats it; the mapping lives as long as the value.
    pub(crate) fn create_file(
        path: &Path,
        geom: G,
        access: SegmentAccess,
    ) -> Result<Self, LayoutError> {
        geom.validate()?;
        let mut file = MappedFile::create(path, geom.segment_bytes(), access)?;
        // SAFETY: the mapping is ours, page-aligned, len bytes long, and is
        // moved into the returned value, so it outlives it.
        let mut map = unsafe { Self::format(file.as_mut_ptr(), file.len(), geom) }?;
        map.file = Some(file);
        Ok(map)
    }

    /// Maps an existing file and attaches to it.
    pub(crate) fn open_file(path: &Path) -> Result<Self, LayoutError> {
        let mut file = MappedFile::open(path)?;
        // SAFETY: as in create_file: the mapping lives inside the value.
        let mut map = unsafe { Self::attach(file.as_mut_ptr(), file.len()) }?;
        map.file = Some(file);
        Ok(map)
    }

    /// Where the segment's times come from.
    pub(crate) fn origin(&self) -> SegmentOrigin {
        // SAFETY: attached: base is the 64-aligned base of a mapped segment
        // whose header page is at least HEADER_BYTES long.
        unsafe { read_origin(self.base.as_ptr()) }
    }

    /// Records a new origin (checkpointd, at start, before the dataplane
    /// attaches: after a rebase or a translation).
    pub(crate) fn set_origin(&self, origin: &SegmentOrigin) {
        // SAFETY: as in `origin`; one writer (checkpointd) at start.
        unsafe { write_origin(self.base.as_ptr(), origin) }
    }

    /// The segment's `Debug`, under the segment type's `name`.
    pub(crate) fn debug(&self, name: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(name)
            .field("geometry", &self.geom)
            .field("len", &self.len)
            .field("generation", &self.generation)
            .field("file", &self.file)
            .finish()
    }
}
