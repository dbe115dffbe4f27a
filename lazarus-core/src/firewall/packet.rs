//! What the pipeline learned of a packet before it meets its connection:
//! how far it got (`Step`), its key (`Keyed`), and what the modules read of
//! it besides the key (`Seg`).

use super::Verdict;
use crate::conn::{ConnKey, Endpoint};
use crate::modules::icmp::{self, IcmpKind};
use crate::parse::{self, IpPacket, TcpHdr, L4};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Step {
    /// Not staged in this burst: `process_staged` runs `process`.
    #[default]
    Unstaged,
    /// Decided by the parser: a malformed frame (already counted) or non-IP.
    Decided(Verdict),
    /// Parsed, but no connection key of its own (a later fragment, an ICMP
    /// error, stateless ICMP): tracked as `process` would, from the parsed
    /// packet.
    Parsed,
    /// Keyed (`keyed`, `hash`) and, after `lookup_staged`, looked up (`slot`).
    Keyed,
    /// An IPv4/TCP segment of the common shape (`parse::v4_tcp`), keyed and
    /// described by `seg` alone. When it finds a connection it is tracked
    /// from `seg`; when not, the general path parses it again and decides,
    /// as for any new connection.
    Segment,
}

/// The canonical key of a packet that has one of its own, which way it
/// goes, and what kind of ICMP it is.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Keyed {
    pub key: ConnKey,
    pub src_is_lo: bool,
    pub icmp_kind: Option<IcmpKind>,
}

impl Keyed {
    /// TCP, UDP, ICMP echo, and other protocols by address. None for ICMP
    /// errors and stateless ICMP, which `track` decides without a
    /// connection of theirs.
    #[inline(always)]
    pub fn of(p: &IpPacket, zone: u16) -> Option<Keyed> {
        let (sport, dport, icmp_kind) = match p.l4 {
            L4::Tcp(h) => (h.sport, h.dport, None),
            L4::Udp { sport, dport } => (sport, dport, None),
            L4::Icmp(info) => match icmp::classify(p.family, &info) {
                k @ (IcmpKind::EchoRequest(id) | IcmpKind::EchoReply(id)) => (id, id, Some(k)),
                _ => return None,
            },
            L4::Other => (0, 0, None),
        };
        let (key, src_is_lo) = ConnKey::canonical(
            p.family,
            p.proto,
            Endpoint { addr: p.src, port: sport },
            Endpoint { addr: p.dst, port: dport },
            zone,
            p.vlan,
        );
        Some(Keyed { key, src_is_lo, icmp_kind })
    }
}

/// What the modules of an existing connection read of a packet besides its
/// key: the TCP header of a TCP packet, and where its payload lies.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Seg {
    pub tcp: Option<TcpHdr>,
    pub payload_off: u16,
    pub payload_len: u16,
}

impl Seg {
    #[inline(always)]
    pub fn of(p: &IpPacket) -> Seg {
        let tcp = match p.l4 {
            L4::Tcp(h) => Some(h),
            _ => None,
        };
        Seg { tcp, payload_off: p.payload_off, payload_len: p.payload_len }
    }

    pub fn payload<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        parse::payload_at(frame, self.payload_off, self.payload_len)
    }
}
