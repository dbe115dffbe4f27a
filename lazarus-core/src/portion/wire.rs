//! The byte form of module portions inside checkpoint deltas and the store.
//! Little-endian, fixed order, a format byte first: a restarted dataplane of a
//! newer build must read what an older one wrote (hitless upgrade), so fields
//! are only ever appended and the format byte says which came last.

use super::Module;

/// Format of every portion written by this build.
pub const PORTION_FORMAT: u8 = 2;
/// The oldest format this build reads: the previous one (translated as it
/// is read), never older (docs/CHECKPOINT.md, "Format versions").
pub const PORTION_FORMAT_OLDEST: u8 = 1;
const _: () = assert!(matches!(PORTION_FORMAT.checked_sub(PORTION_FORMAT_OLDEST), Some(0 | 1)));

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortionError {
    #[error("{module} portion is truncated ({len} bytes): the store or ring holds a damaged record; it is skipped and the connection restarts without it")]
    Truncated { module: &'static str, len: usize },
    #[error("{module} portion has format {found}, this build reads up to {PORTION_FORMAT}: run the newer build, or flush the checkpoint store")]
    Format { module: &'static str, found: u8 },
    #[error("{module} portion has format {found}, older than the {PORTION_FORMAT_OLDEST} this build still translates: upgrade through the release in between (it reads format {found} and writes the next), or flush the checkpoint store and lose the connections")]
    TooOld { module: &'static str, found: u8 },
    #[error("{module} portion has an impossible {what}: the record is skipped")]
    BadValue { module: &'static str, what: &'static str },
    #[error("{module} portion does not fit in {max} bytes")]
    TooLong { module: &'static str, max: usize },
}

pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
    module: Module,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8], module: Module) -> Self {
        let mut w = Writer { buf, pos: 0, module };
        w.u8(PORTION_FORMAT);
        w
    }
    #[inline]
    pub fn bytes(&mut self, b: &[u8]) {
        // Callers size their buffers from the portion maxima; a write past the
        // end is truncated and reported by `finish`.
        let end = self.pos + b.len();
        if end <= self.buf.len() {
            self.buf[self.pos..end].copy_from_slice(b);
        }
        self.pos = end;
    }
    #[inline]
    pub fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    #[inline]
    pub fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    #[inline]
    pub fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    #[inline]
    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    /// The next `N` bytes as a run of fixed fields, bounds-checked once (the
    /// encode side of [`Reader::fields`]); None, and `finish` reports the
    /// overflow, when they do not fit.
    #[inline]
    pub fn fields<const N: usize>(&mut self) -> Option<FieldsMut<'_, N>> {
        let end = self.pos + N;
        let b = self.buf.get_mut(self.pos..end).and_then(|b| <&mut [u8; N]>::try_from(b).ok());
        self.pos = end;
        b.map(|b| FieldsMut { b, pos: 0 })
    }
    /// The length written.
    pub fn finish(self) -> Result<usize, PortionError> {
        if self.pos > self.buf.len() {
            return Err(PortionError::TooLong { module: self.module.name(), max: self.buf.len() });
        }
        Ok(self.pos)
    }
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    module: Module,
    pub format: u8,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], module: Module) -> Result<Self, PortionError> {
        let mut r = Reader { buf, pos: 0, module, format: 0 };
        let f = r.u8()?;
        if f > PORTION_FORMAT {
            return Err(PortionError::Format { module: module.name(), found: f });
        }
        if f < PORTION_FORMAT_OLDEST {
            return Err(PortionError::TooOld { module: module.name(), found: f });
        }
        r.format = f;
        Ok(r)
    }
    #[inline]
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], PortionError> {
        let b = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or(PortionError::Truncated { module: self.module.name(), len: self.buf.len() })?;
        self.pos += n;
        Ok(b)
    }
    #[inline]
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], PortionError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }
    #[inline]
    pub fn u8(&mut self) -> Result<u8, PortionError> {
        Ok(self.bytes(1)?[0])
    }
    #[inline]
    pub fn bool(&mut self) -> Result<bool, PortionError> {
        let v = self.u8()?;
        bool_of(v).ok_or_else(|| self.bad("boolean"))
    }
    #[inline]
    pub fn u16(&mut self) -> Result<u16, PortionError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    #[inline]
    pub fn u32(&mut self) -> Result<u32, PortionError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    #[inline]
    pub fn u64(&mut self) -> Result<u64, PortionError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// The next `N` bytes as a run of fixed fields, bounds-checked once: a
    /// portion's fixed part decodes without a check (and an error path) per
    /// field, which was most of a restore's decoding cost.
    #[inline]
    pub fn fields<const N: usize>(&mut self) -> Result<Fields<'a, N>, PortionError> {
        let b = self.bytes(N)?;
        let b: &[u8; N] = b.try_into().map_err(|_| PortionError::Truncated {
            module: self.module.name(),
            len: self.buf.len(),
        })?;
        Ok(Fields { b, pos: 0 })
    }
    pub fn bad(&self, what: &'static str) -> PortionError {
        PortionError::BadValue { module: self.module.name(), what }
    }
}

/// A stored boolean: 0 or 1, anything else is damage.
#[inline(always)]
pub(crate) fn bool_of(v: u8) -> Option<bool> {
    match v {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// Fixed fields read from a bounds-checked run of `N` bytes. Offsets are
/// constants once inlined, so the compiler drops the per-field checks; a
/// read past `N` is a bug in the caller's `N` (every decoder's tests catch it).
pub struct Fields<'a, const N: usize> {
    b: &'a [u8; N],
    pos: usize,
}

impl<const N: usize> Fields<'_, N> {
    #[inline(always)]
    pub fn array<const M: usize>(&mut self) -> [u8; M] {
        let mut a = [0u8; M];
        a.copy_from_slice(&self.b[self.pos..self.pos + M]);
        self.pos += M;
        a
    }
    #[inline(always)]
    pub fn u8(&mut self) -> u8 {
        self.pos += 1;
        self.b[self.pos - 1]
    }
    /// None for a byte other than 0 or 1 (the caller names the error).
    #[inline(always)]
    pub fn bool(&mut self) -> Option<bool> {
        bool_of(self.u8())
    }
    #[inline(always)]
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }
    #[inline(always)]
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    #[inline(always)]
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}

/// Fixed fields written into a bounds-checked run of `N` bytes; see [`Fields`].
pub struct FieldsMut<'a, const N: usize> {
    b: &'a mut [u8; N],
    pos: usize,
}

impl<const N: usize> FieldsMut<'_, N> {
    #[inline(always)]
    pub fn bytes(&mut self, v: &[u8]) {
        self.b[self.pos..self.pos + v.len()].copy_from_slice(v);
        self.pos += v.len();
    }
    #[inline(always)]
    pub fn u8(&mut self, v: u8) {
        self.b[self.pos] = v;
        self.pos += 1;
    }
    #[inline(always)]
    pub fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    #[inline(always)]
    pub fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    #[inline(always)]
    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}
