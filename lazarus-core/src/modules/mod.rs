//! Protocol modules. Each owns its portion of a connection record and nothing
//! else, and says when its portion changed in a way a checkpoint must capture.
pub mod ftp;
pub mod ftp_sessions;
pub mod icmp;
pub mod ip;
pub mod tcp;
pub mod udp;

pub use crate::portion::Module;

use crate::conn::{ConnId, ConnKey};

/// The layer-4 module's portion: exactly one per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Portion {
    Tcp(tcp::TcpPortion),
    Udp(udp::UdpPortion),
    Icmp(icmp::IcmpPortion),
    /// Another IP protocol: tracked by addresses only.
    Other,
}

impl L4Portion {
    pub fn module(&self) -> Option<Module> {
        match self {
            L4Portion::Tcp(_) => Some(Module::Tcp),
            L4Portion::Udp(_) => Some(Module::Udp),
            L4Portion::Icmp(_) => Some(Module::Icmp),
            L4Portion::Other => None,
        }
    }
}

/// No FTP portion: the sentinel the store uses for the same absence.
pub use shm_layout::NO_FTP;

/// A connection record: the key, and each module's portion side by side.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub key: ConnKey,
    pub id: ConnId,
    /// TSC after which the sweep may expire it.
    pub deadline: u64,
    pub ip: ip::IpPortion,
    pub l4: L4Portion,
    /// Index of the ftp portion in the worker's FTP pool, or NO_FTP.
    pub ftp: u32,
    /// Modules (bit = Module as u8) whose last change the checkpoint ring had
    /// no room for; the re-emit sweep writes them again.
    pub dirty: u8,
    /// Whether the connection goes to the checkpoint: from its first packet,
    /// except a TCP connection, which goes from the first answer to its SYN
    /// (`checkpoint::worth_storing`). Until then it writes no delta, and no
    /// delete when it ends.
    pub stored: bool,
}

impl Conn {
    /// Whether a full table may drop it to admit a new connection, as Linux's
    /// `early_drop` drops what is not assured: a TCP connection not yet
    /// established or already over (TIME_WAIT, CLOSE), unanswered UDP, ICMP.
    /// A closing connection (FIN_WAIT, CLOSE_WAIT, LAST_ACK) is kept: one side
    /// still sends, and dropping it would cut the end of a transfer.
    #[inline]
    pub fn evictable(&self) -> bool {
        use tcp::TcpState as S;
        match &self.l4 {
            L4Portion::Tcp(t) => {
                !matches!(t.state, S::Established | S::FinWait | S::CloseWait | S::LastAck)
            }
            L4Portion::Udp(u) => !u.replied,
            _ => true,
        }
    }
}

impl crate::conn::table::TableEntry for Conn {
    fn key(&self) -> &ConnKey {
        &self.key
    }
    fn deadline(&self) -> u64 {
        self.deadline
    }
}
