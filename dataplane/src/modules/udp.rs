//! The udp module: unreplied until the first reply, then assured.

use crate::conn::Dir;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct UdpPortion {
    pub replied: bool,
}

impl UdpPortion {
    /// Returns true when the portion changed in a way a checkpoint must capture
    /// (the first reply: the flow becomes a stream with the longer timeout).
    #[inline]
    pub fn track(&mut self, dir: Dir) -> bool {
        if dir == Dir::Reply && !self.replied {
            self.replied = true;
            return true;
        }
        false
    }
}
