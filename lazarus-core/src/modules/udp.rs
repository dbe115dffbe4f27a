//! The udp module: unreplied until the first reply, then assured.

use crate::checkpoint::wire::{PortionError, Reader, Writer};
use crate::conn::Dir;
use crate::modules::Module;

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

impl UdpPortion {
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, PortionError> {
        let mut w = Writer::new(out, Module::Udp);
        w.u8(self.replied as u8);
        w.finish()
    }
    pub fn decode(b: &[u8]) -> Result<Self, PortionError> {
        let mut r = Reader::new(b, Module::Udp)?;
        Ok(UdpPortion { replied: r.bool()? })
    }
}
