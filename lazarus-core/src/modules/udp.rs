//! The udp module: unreplied until the first reply, then assured.

use crate::conn::Dir;
use crate::modules::Module;
use crate::portion::{Portion, PortionError, Reader, Writer};

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

// State, a format byte before it.
const UDP_ENCODED: usize = 1 + 1;
const _: () = assert!(UDP_ENCODED <= shm_layout::L4_PORTION_MAX);

impl Portion for UdpPortion {
    const MODULE: Module = Module::Udp;
    const MAX_LEN: usize = shm_layout::L4_PORTION_MAX;

    fn encode(&self, out: &mut [u8]) -> Result<usize, PortionError> {
        let mut w = Writer::new(out, Module::Udp);
        w.u8(self.replied as u8);
        w.finish()
    }
    fn decode(b: &[u8]) -> Result<Self, PortionError> {
        let mut r = Reader::new(b, Module::Udp)?;
        Ok(UdpPortion { replied: r.bool()? })
    }
}
