//! The icmp module: echo request/reply pairs as connections (keyed by the echo
//! id); errors pass when the header they quote belongs to a known connection.

use crate::conn::Dir;
use crate::modules::Module;
use crate::parse::{Family, IcmpInfo};
use crate::portion::{Portion, PortionError, Reader, Writer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct IcmpPortion {
    pub echo_id: u16,
    pub replied: bool,
}

/// What kind of ICMP message a packet is, for the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpKind {
    EchoRequest(u16),
    EchoReply(u16),
    Error,
    /// IPv6 neighbour discovery and multicast listener messages: IPv6 does not
    /// work without them, and they never leave the link. Passed without state.
    LinkLocal,
    /// Anything else (timestamps, router advertisements of IPv4, ...).
    Other,
}

pub fn classify(family: Family, info: &IcmpInfo) -> IcmpKind {
    if info.is_error {
        return IcmpKind::Error;
    }
    match (family, info.typ, info.echo) {
        (Family::V4, 8, Some((id, _))) | (Family::V6, 128, Some((id, _))) => {
            IcmpKind::EchoRequest(id)
        }
        (Family::V4, 0, Some((id, _))) | (Family::V6, 129, Some((id, _))) => {
            IcmpKind::EchoReply(id)
        }
        (Family::V6, 130..=137 | 143, _) => IcmpKind::LinkLocal,
        _ => IcmpKind::Other,
    }
}

/// An echo request in the reply direction or a reply in the original one
/// (counted as `icmp_bad_echo` and dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongWayEcho;

// Echo id and state, a format byte before them.
const ICMP_ENCODED: usize = 1 + 2 + 1;
const _: () = assert!(ICMP_ENCODED <= shm_layout::L4_PORTION_MAX);

impl Portion for IcmpPortion {
    const MODULE: Module = Module::Icmp;
    const MAX_LEN: usize = shm_layout::L4_PORTION_MAX;

    fn encode(&self, out: &mut [u8]) -> Result<usize, PortionError> {
        let mut w = Writer::new(out, Module::Icmp);
        w.u16(self.echo_id);
        w.u8(self.replied as u8);
        w.finish()
    }
    fn decode(b: &[u8]) -> Result<Self, PortionError> {
        let mut r = Reader::new(b, Module::Icmp)?;
        Ok(IcmpPortion { echo_id: r.u16()?, replied: r.bool()? })
    }
}

impl IcmpPortion {
    pub fn new(echo_id: u16) -> Self {
        IcmpPortion { echo_id, replied: false }
    }

    /// An echo of an existing connection: a request may only travel in the
    /// original direction, a reply only in the reply direction. `Ok(true)`:
    /// the first reply, a change worth a checkpoint.
    pub fn track(&mut self, dir: Dir, kind: IcmpKind) -> Result<bool, WrongWayEcho> {
        match (kind, dir) {
            (IcmpKind::EchoRequest(_), Dir::Original) => Ok(false),
            (IcmpKind::EchoReply(_), Dir::Reply) => {
                let first = !self.replied;
                self.replied = true;
                Ok(first)
            }
            _ => Err(WrongWayEcho),
        }
    }
}
