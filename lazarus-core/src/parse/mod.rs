//! Zero-copy parsing of received frames: Ethernet, 802.1Q, ARP (passed), IPv4
//! (options, fragments), IPv6 (extension header chain), TCP (options), UDP,
//! ICMP and ICMPv6 (echo, and errors with the header they quote).
//!
//! Contract (smoltcp's): `parse` never panics and never reads past the frame;
//! a malformed or truncated packet is an `Err(DropReason)`, counted by reason.
//!
//! Fragment policy: the first fragment (offset 0) carries the L4 header and is
//! parsed as usual with `frag = Fragment::First`; later fragments have no L4
//! header (`L4::Other`, `frag = Fragment::Later`) and are matched by the
//! connection tracker on (src, dst, proto, frag_id) or dropped and counted.

/// IPv4 addresses are stored as IPv4-mapped IPv6 (::ffff:a.b.c.d) so that one
/// key type serves both families.
pub type Addr = [u8; 16];

pub const fn v4_mapped(a: [u8; 4]) -> Addr {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]
}

/// Whether `a` (an address's bytes, from the first) is an IPv4 address
/// mapped as `v4_mapped` maps it.
pub fn is_v4_mapped(a: &[u8]) -> bool {
    a.len() == 16 && a[..12] == v4_mapped([0; 4])[..12]
}

/// Why a frame was dropped before any state was consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than the headers it announces (Ethernet, VLAN, IP, L4).
    Truncated = 0,
    /// IPv4: version/IHL/total length inconsistent; IPv6: payload length past the frame.
    BadIpHeader,
    /// IPv4 options malformed (length byte 0/1 or past the header).
    BadIpOptions,
    /// IPv6 extension header chain malformed or longer than the parser follows.
    BadIpv6ExtHeader,
    /// TCP data offset < 5 or past the packet; or TCP options malformed.
    BadTcpHeader,
    /// UDP length field inconsistent with the IP payload.
    BadUdpHeader,
    /// ICMP/ICMPv6 shorter than its fixed header (an error whose quote is unusable parses, with `quoted = None`).
    BadIcmp,
    /// A first fragment too short for its L4 header, or a TCP fragment at offset 1 (RFC 1858 tiny-fragment overlap).
    BadFragment,
    /// More than two stacked VLAN tags: the firewall cannot see what is inside.
    VlanStack,
    /// IPv4 header checksum wrong (by the NIC's word, or verified here).
    BadIpChecksum,
    /// TCP, UDP, ICMP or ICMPv6 checksum wrong.
    BadL4Checksum,
}

impl DropReason {
    pub const COUNT: usize = 11;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Truncated,
        DropReason::BadIpHeader,
        DropReason::BadIpOptions,
        DropReason::BadIpv6ExtHeader,
        DropReason::BadTcpHeader,
        DropReason::BadUdpHeader,
        DropReason::BadIcmp,
        DropReason::BadFragment,
        DropReason::VlanStack,
        DropReason::BadIpChecksum,
        DropReason::BadL4Checksum,
    ];
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::BadIpHeader => "bad_ip_header",
            DropReason::BadIpOptions => "bad_ip_options",
            DropReason::BadIpv6ExtHeader => "bad_ipv6_ext",
            DropReason::BadTcpHeader => "bad_tcp_header",
            DropReason::BadUdpHeader => "bad_udp_header",
            DropReason::BadIcmp => "bad_icmp",
            DropReason::BadFragment => "bad_fragment",
            DropReason::VlanStack => "vlan_stack",
            DropReason::BadIpChecksum => "bad_ip_checksum",
            DropReason::BadL4Checksum => "bad_l4_checksum",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Family {
    #[default]
    V4 = 4,
    V6 = 6,
}

pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpOpts {
    /// 0 when absent.
    pub mss: u16,
    /// Window scale shift when the option is present (clamped to 14 as RFC 7323 says).
    pub wscale: Option<u8>,
    pub sack_perm: bool,
    /// (TSval, TSecr) when present.
    pub timestamp: Option<(u32, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpHdr {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    /// Low 8 flag bits (see `tcp_flags`).
    pub flags: u8,
    /// Raw (unscaled) window.
    pub window: u16,
    pub opts: TcpOpts,
}

/// The header an ICMP error quotes: the packet that caused the error, as its
/// sender sent it (so src is *our* side of the original flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quoted {
    pub family: Family,
    pub src: Addr,
    pub dst: Addr,
    pub proto: u8,
    /// Ports for TCP/UDP; for a quoted ICMP echo, sport = dport = echo id.
    pub sport: u16,
    pub dport: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IcmpInfo {
    pub typ: u8,
    pub code: u8,
    /// Echo request/reply (ICMP 8/0, ICMPv6 128/129): identifier and sequence.
    pub echo: Option<(u16, u16)>,
    /// Errors (ICMP 3, 4, 5, 11, 12; ICMPv6 1, 2, 3, 4): the quoted header.
    /// None for an error means it quoted too little to identify a flow.
    pub quoted: Option<Quoted>,
    pub is_error: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L4 {
    Tcp(TcpHdr),
    Udp {
        sport: u16,
        dport: u16,
    },
    Icmp(IcmpInfo),
    /// Another protocol, or a non-first fragment.
    #[default]
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fragment {
    #[default]
    None,
    /// Offset 0 with more-fragments set: carries the L4 header.
    First,
    /// Offset > 0: no L4 header.
    Later,
}

/// An IP packet's metadata. Offsets index the frame given to `parse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpPacket {
    /// 802.1Q VLAN ids: the outer tag's in bits 0..12, a second (QinQ)
    /// tag's in bits 12..24; 0 when untagged. See [`crate::conn::vlan_ids`].
    pub vlan: u32,
    pub family: Family,
    pub src: Addr,
    pub dst: Addr,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    pub frag: Fragment,
    /// IPv4 identification, or the IPv6 fragment header's identification.
    pub frag_id: u32,
    pub l4: L4,
    /// Where the L4 payload starts (after the TCP/UDP/ICMP header) and its length,
    /// bounded by the IP length (Ethernet padding excluded).
    pub payload_off: u16,
    pub payload_len: u16,
    /// Where the IP header and the L4 header start in the frame (for the
    /// checksums).
    pub l3_off: u16,
    pub l4_off: u16,
}

impl IpPacket {
    pub fn payload<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        payload_at(frame, self.payload_off, self.payload_len)
    }
}

/// The `len` bytes of `frame` from `off`, as a parser described them (empty
/// if they are not all there).
#[inline(always)]
pub fn payload_at(frame: &[u8], off: u16, len: u16) -> &[u8] {
    let s = usize::from(off);
    frame.get(s..s + usize::from(len)).unwrap_or(&[])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// ARP and any other non-IP ethertype: passed through untouched.
    NonIp {
        ethertype: u16,
    },
    Ip(IpPacket),
}

/// What `parse_into` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// An IP packet, described in the `IpPacket` given to `parse_into`.
    Ip,
    /// ARP and any other non-IP ethertype: passed through untouched.
    NonIp { ethertype: u16 },
}

pub mod checksum;
mod fast;
mod frame;
pub use fast::{v4_tcp, V4TcpSegment};
pub use frame::{parse, parse_into};
