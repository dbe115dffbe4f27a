//! Frame builders for tests, benchmarks and fuzz seeds: plain Ethernet/IPv4
//! frames with valid checksums. Not used by the dataplane itself.

pub use crate::parse::tcp_flags;

/// The Internet checksum (RFC 1071).
pub fn csum(b: &[u8]) -> u16 {
    let mut s = 0u32;
    for c in b.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

pub fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    let c = csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(l4);
    h
}

/// An Ethernet frame around `ip`, padded to the 60-byte minimum.
pub fn eth(ip: Vec<u8>) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend(ip);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// A TCP segment with window 64240 and no options.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    eth(ipv4(6, src, dst, &t))
}

pub fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    eth(ipv4(17, src, dst, &u))
}

/// An ICMP message: type, code, the 4 bytes after the checksum, and what it quotes.
pub fn icmp(
    src: [u8; 4],
    dst: [u8; 4],
    typ: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &[u8],
) -> Vec<u8> {
    let mut m = vec![typ, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(quoted);
    let c = csum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    eth(ipv4(1, src, dst, &m))
}
