//! The ip module: which side opened the connection, and traffic counters.

use crate::conn::Dir;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct IpPortion {
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// TSC when the connection was created.
    pub created: u64,
    /// Whether the original direction's source is the canonical key's low side.
    pub orig_src_is_lo: bool,
}

impl IpPortion {
    pub fn new(src_is_lo: bool, now: u64) -> Self {
        IpPortion { orig_src_is_lo: src_is_lo, created: now, ..Default::default() }
    }

    /// The direction of a packet whose source is (or is not) the key's low side.
    #[inline]
    pub fn dir_of(&self, src_is_lo: bool) -> Dir {
        if src_is_lo == self.orig_src_is_lo {
            Dir::Original
        } else {
            Dir::Reply
        }
    }

    /// Counters change on every packet; they are not worth a checkpoint by
    /// themselves (they ride along with the next one).
    #[inline]
    pub fn count(&mut self, dir: Dir, len: usize) {
        self.packets[dir.idx()] += 1;
        self.bytes[dir.idx()] += len as u64;
    }
}
