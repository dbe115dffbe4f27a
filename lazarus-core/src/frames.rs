//! The one builder of test frames, for tests, benchmarks and fuzz seeds:
//! Ethernet, VLAN, IPv4 (with options and fragments), IPv6 (with extension
//! headers), TCP, UDP and ICMP, with correct IPv4 header checksums and
//! correct TCP, UDP and ICMP checksums (pseudo-header included), since
//! frames with bad checksums are dropped. Not used by the dataplane itself.

use crate::parse::proto;
pub use crate::parse::tcp_flags;

/// The Internet checksum (RFC 1071) of `b`, folded from `start`.
fn csum_from(start: u32, b: &[u8]) -> u16 {
    let mut s = start;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The Internet checksum (RFC 1071).
pub fn csum(b: &[u8]) -> u16 {
    csum_from(0, b)
}

/// The sum of a pseudo-header's words (RFC 793 §3.1, RFC 8200 §8.1).
fn pseudo_sum(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    let mut s = 0u32;
    for c in src.chunks(2).chain(dst.chunks(2)) {
        s += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    s + u32::from(proto) + (len as u32 & 0xffff) + (len as u32 >> 16)
}

/// Writes the checksum of the layer-4 message `l4` of `proto` between
/// `src` and `dst`, where its protocol has one at a known place and the
/// message is long enough to hold it; anything else is left as it is.
fn fill_l4_checksum(src: &[u8], dst: &[u8], proto: u8, l4: &mut [u8]) {
    let (at, pseudo) = match proto {
        proto::TCP if l4.len() >= 20 => (16, true),
        proto::UDP if l4.len() >= 8 => (6, true),
        proto::ICMP if l4.len() >= 4 => (2, false),
        proto::ICMPV6 if l4.len() >= 4 => (2, true),
        _ => return,
    };
    l4[at..at + 2].fill(0);
    let start = if pseudo { pseudo_sum(src, dst, proto, l4.len()) } else { 0 };
    let mut c = csum_from(start, l4);
    if proto == proto::UDP && c == 0 {
        // A computed zero is sent as all ones: zero means "no checksum".
        c = 0xffff;
    }
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// An IPv4 header's fields besides its lengths and checksum.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4<'a> {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub proto: u8,
    pub id: u16,
    /// Flags and fragment offset, as on the wire (0x4000: don't fragment).
    pub frag: u16,
    pub ttl: u8,
    /// Options, a multiple of 4 bytes.
    pub opts: &'a [u8],
}

impl Ipv4<'_> {
    pub fn new(proto: u8, src: [u8; 4], dst: [u8; 4]) -> Self {
        Ipv4 { src, dst, proto, id: 1, frag: 0x4000, ttl: 64, opts: &[] }
    }
}

/// An IPv4 packet of `h` around `l4`. A whole datagram (no fragment) gets
/// its layer-4 checksum filled in too.
pub fn ipv4_packet(h: &Ipv4<'_>, l4: &[u8]) -> Vec<u8> {
    assert_eq!(h.opts.len() % 4, 0, "IPv4 options come in 4-byte words");
    let ihl = 20 + h.opts.len();
    let mut v = vec![0x40 | (ihl / 4) as u8, 0];
    v.extend_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
    v.extend_from_slice(&h.id.to_be_bytes());
    v.extend_from_slice(&h.frag.to_be_bytes());
    v.extend_from_slice(&[h.ttl, h.proto, 0, 0]);
    v.extend_from_slice(&h.src);
    v.extend_from_slice(&h.dst);
    v.extend_from_slice(h.opts);
    let c = csum(&v);
    v[10..12].copy_from_slice(&c.to_be_bytes());
    let at = v.len();
    v.extend_from_slice(l4);
    if h.frag & 0x3fff == 0 {
        fill_l4_checksum(&h.src, &h.dst, h.proto, &mut v[at..]);
    }
    v
}

/// An IPv4 packet from `src` to `dst` with the usual header.
pub fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
    ipv4_packet(&Ipv4::new(proto, src, dst), l4)
}

/// An IPv6 packet whose first next header is `nh`. When `nh` is TCP, UDP or
/// ICMPv6 (no extension headers), its checksum is filled in.
pub fn ipv6(nh: u8, src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x60, 0, 0, 0];
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(&[nh, 64]);
    v.extend_from_slice(&src);
    v.extend_from_slice(&dst);
    v.extend_from_slice(payload);
    fill_l4_checksum(&src, &dst, nh, &mut v[40..]);
    v
}

/// An IPv6 extension header (hop-by-hop, routing, destination options) of
/// 8*(n+1) bytes, filled with PadN.
pub fn ipv6_ext(nh: u8, n: u8) -> Vec<u8> {
    let len = (usize::from(n) + 1) * 8;
    let mut v = vec![nh, n, 1, (len - 4) as u8];
    v.resize(len, 0);
    v
}

/// An IPv6 fragment header.
pub fn ipv6_frag(nh: u8, offset: u16, more: bool, id: u32) -> Vec<u8> {
    let mut v = vec![nh, 0];
    v.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
    v.extend_from_slice(&id.to_be_bytes());
    v
}

/// The two MAC addresses every test frame carries.
pub const MACS: [u8; 12] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];

/// An Ethernet frame of `ethertype` around `l3`, unpadded.
pub fn ether(ethertype: u16, l3: &[u8]) -> Vec<u8> {
    ether_tagged(&[], ethertype, l3)
}

/// An Ethernet frame with VLAN tags, each (TPID, TCI), outermost first:
/// (0x8100, vid) for 802.1Q, (0x88a8, vid) for a QinQ outer tag.
pub fn ether_tagged(tags: &[(u16, u16)], ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = MACS.to_vec();
    for &(tpid, tci) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

/// An Ethernet frame from MAC `src` to MAC `dst`, padded to the 60-byte minimum.
pub fn ether_between(dst: [u8; 6], src: [u8; 6], ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// An Ethernet frame around IPv4 packet `ip`, padded to the 60-byte minimum.
pub fn eth(ip: Vec<u8>) -> Vec<u8> {
    let mut f = ether(0x0800, &ip);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// A TCP header's fields; the checksum is the IP layer's to fill.
#[derive(Debug, Clone, Copy)]
pub struct Tcp<'a> {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Options, a multiple of 4 bytes.
    pub opts: &'a [u8],
    pub payload: &'a [u8],
}

impl Default for Tcp<'_> {
    fn default() -> Self {
        Tcp { sport: 0, dport: 0, seq: 0, ack: 0, flags: 0, window: 64240, opts: &[], payload: &[] }
    }
}

/// The bytes of TCP segment `t`, checksum zero.
pub fn tcp_segment(t: &Tcp<'_>) -> Vec<u8> {
    assert_eq!(t.opts.len() % 4, 0, "TCP options come in 4-byte words");
    let doff = (20 + t.opts.len()) / 4;
    let mut v = Vec::with_capacity(20 + t.opts.len() + t.payload.len());
    v.extend_from_slice(&t.sport.to_be_bytes());
    v.extend_from_slice(&t.dport.to_be_bytes());
    v.extend_from_slice(&t.seq.to_be_bytes());
    v.extend_from_slice(&t.ack.to_be_bytes());
    v.extend_from_slice(&[(doff as u8) << 4, t.flags]);
    v.extend_from_slice(&t.window.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 0]);
    v.extend_from_slice(t.opts);
    v.extend_from_slice(t.payload);
    v
}

/// An Ethernet/IPv4 frame of a TCP segment with window 64240 and no
/// options: ports as (source, destination), numbers as (seq, ack).
pub fn tcp(
    src: [u8; 4],
    dst: [u8; 4],
    (sport, dport): (u16, u16),
    flags: u8,
    (seq, ack): (u32, u32),
    payload: &[u8],
) -> Vec<u8> {
    let t = Tcp { sport, dport, seq, ack, flags, payload, ..Tcp::default() };
    eth(ipv4(proto::TCP, src, dst, &tcp_segment(&t)))
}

/// The bytes of a UDP datagram, checksum zero (the IP layer fills it).
pub fn udp_datagram(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// An Ethernet/IPv4 frame of a UDP datagram.
pub fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    eth(ipv4(proto::UDP, src, dst, &udp_datagram(sport, dport, payload)))
}

/// The bytes of an ICMP message: type, code, the 4 bytes after the
/// checksum, and what it carries; the checksum is the IP layer's to fill.
pub fn icmp_message(typ: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![typ, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    m
}

/// An Ethernet/IPv4 frame of an ICMP message quoting `quoted`.
pub fn icmp(
    src: [u8; 4],
    dst: [u8; 4],
    typ: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &[u8],
) -> Vec<u8> {
    eth(ipv4(proto::ICMP, src, dst, &icmp_message(typ, code, rest, quoted)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checksum over the pseudo-header and the message, its checksum
    /// field included, is zero: the receiver's check.
    fn verifies(src: &[u8], dst: &[u8], proto: u8, l4: &[u8], pseudo: bool) -> bool {
        let start = if pseudo { pseudo_sum(src, dst, proto, l4.len()) } else { 0 };
        csum_from(start, l4) == 0
    }

    #[test]
    fn ipv4_frames_carry_checksums_a_receiver_accepts() {
        let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let f = tcp(a, b, (1000, 80), tcp_flags::SYN, (7, 0), b"hello");
        assert_eq!(csum(&f[14..34]), 0, "IPv4 header");
        let total = u16::from_be_bytes([f[16], f[17]]) as usize;
        assert!(verifies(&a, &b, proto::TCP, &f[34..14 + total], true), "TCP");
        let f = udp(a, b, 5353, 53, b"q");
        assert!(verifies(&a, &b, proto::UDP, &f[34..34 + 9], true), "UDP");
        let f = icmp(a, b, 8, 0, [0, 1, 0, 1], b"ping");
        assert!(verifies(&a, &b, proto::ICMP, &f[34..34 + 12], false), "ICMP");
        // Control: a flipped payload bit no longer verifies.
        let mut f = tcp(a, b, (1000, 80), tcp_flags::ACK, (7, 1), b"hello");
        f[54] ^= 1;
        assert!(!verifies(&a, &b, proto::TCP, &f[34..59], true));
    }

    #[test]
    fn ipv6_frames_carry_checksums_a_receiver_accepts() {
        let (a, b) = ([0x20; 16], [0x21; 16]);
        let t = tcp_segment(&Tcp { sport: 1, dport: 2, payload: b"x", ..Tcp::default() });
        let p = ipv6(proto::TCP, a, b, &t);
        assert!(verifies(&a, &b, proto::TCP, &p[40..], true));
        let p = ipv6(proto::ICMPV6, a, b, &icmp_message(128, 0, [0, 1, 0, 1], b""));
        assert!(verifies(&a, &b, proto::ICMPV6, &p[40..], true));
    }

    #[test]
    fn a_fragment_keeps_its_bytes() {
        let h = Ipv4 { frag: 0x2000, ..Ipv4::new(proto::TCP, [1; 4], [2; 4]) };
        let l4 = [0xaa; 24];
        assert_eq!(&ipv4_packet(&h, &l4)[20..], &l4, "only a whole datagram's checksum is filled");
    }
}
