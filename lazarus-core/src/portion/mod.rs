//! The byte form of module portions, as checkpoint deltas and checkpointd's
//! store carry them: the module ids, the portion format and its reader and
//! writer. Facts of the shared format come from `shm_layout`, defined there once.

pub mod wire;

pub(crate) use wire::bool_of;
pub use wire::{PortionError, Reader, Writer, PORTION_FORMAT, PORTION_FORMAT_OLDEST};

use shm_layout::module as id;

/// The modules, as named in checkpoint deltas and the store: the numbers are
/// `shm_layout::module`'s, so the two cannot drift apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Module {
    Ip = id::IP,
    Tcp = id::TCP,
    Udp = id::UDP,
    Icmp = id::ICMP,
    Ftp = id::FTP,
}

impl Module {
    pub const COUNT: usize = id::COUNT;
    pub const ALL: [Module; Module::COUNT] =
        [Module::Ip, Module::Tcp, Module::Udp, Module::Icmp, Module::Ftp];

    pub fn name(self) -> &'static str {
        id::name(self as u8)
    }

    /// The module numbered `n` in a delta or the store.
    pub fn from_id(n: u8) -> Option<Module> {
        Module::ALL.get(n as usize).copied().filter(|m| *m as u8 == n)
    }
}

// Every module id shm_layout knows is one of ours, at its own index.
const _: () = {
    let mut i = 0;
    while i < Module::COUNT {
        assert!(Module::ALL[i] as usize == i);
        i += 1;
    }
};

/// A module's portion of a connection in its byte form: which module owns
/// it, the most bytes it can take, and how it is written and read back.
/// Each implementation asserts at compile time that `MAX_LEN` fits the slot
/// shm_layout gives that module in the store.
pub trait Portion: Sized {
    const MODULE: Module;
    /// The longest encoding.
    const MAX_LEN: usize;
    /// Writes the portion into `out` (at least `MAX_LEN` bytes); returns the length.
    fn encode(&self, out: &mut [u8]) -> Result<usize, PortionError>;
    /// Reads a portion back; a damaged or foreign record is an error, never a panic.
    fn decode(bytes: &[u8]) -> Result<Self, PortionError>;
}
