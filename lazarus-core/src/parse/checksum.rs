//! The Internet checksums of a received packet: IPv4's header checksum and
//! the TCP, UDP, ICMP and ICMPv6 checksums (RFC 1071, 768, 793, 8200). A
//! packet that fails one is dropped and counted before any state sees it.
//! Where the NIC checked them (DPDK's RX offload flags) its word is taken;
//! otherwise they are computed here.
//!
//! The sum runs over 8-byte little-endian words: a ones'-complement sum is
//! the same in either byte order up to a final swap (RFC 1071), and a valid
//! packet sums to 0xffff, which a swap leaves alone.

use super::{proto, DropReason, Family, Fragment, IpPacket};

/// What the NIC said of one layer's checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Offload {
    /// Not checked (no offload, or the PMD does not know): verify here.
    #[default]
    Unknown,
    Good,
    Bad,
}

/// What the NIC said of a packet's IP and L4 checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RxChecksums {
    pub ip: Offload,
    pub l4: Offload,
}

impl RxChecksums {
    /// Nothing known: everything is verified in software.
    pub const UNKNOWN: RxChecksums = RxChecksums { ip: Offload::Unknown, l4: Offload::Unknown };
    /// Already verified (by the NIC or by an earlier pass over the frame).
    pub const VERIFIED: RxChecksums = RxChecksums { ip: Offload::Good, l4: Offload::Good };

    /// From the dataplane's per-packet byte: bits 0-1 the IP, bits 2-3 the L4
    /// checksum, each 0 unknown, 1 good, 2 bad.
    #[inline(always)]
    pub fn from_bits(b: u8) -> RxChecksums {
        let one = |v: u8| match v & 3 {
            1 => Offload::Good,
            2 => Offload::Bad,
            _ => Offload::Unknown,
        };
        RxChecksums { ip: one(b), l4: one(b >> 2) }
    }
}

#[inline(always)]
fn add(acc: u64, w: u64) -> u64 {
    let (s, carry) = acc.overflowing_add(w);
    s + u64::from(carry)
}

/// Adds `bytes` to a ones'-complement accumulator, as 16-bit words from the
/// slice's start (callers start every slice at an even offset of the sum).
#[inline(always)]
fn sum(bytes: &[u8], mut acc: u64) -> u64 {
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        acc = add(acc, u64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
    }
    add(acc, tail(words.remainder()))
}

/// The Internet checksum of `parts` one after another, as the bytes to
/// store in the checksum field (zero while summed). Every part but the
/// last must have an even length.
pub(crate) fn checksum_bytes(parts: &[&[u8]]) -> [u8; 2] {
    let acc = parts.iter().fold(0, |acc, p| sum(p, acc));
    (!fold(acc)).to_le_bytes()
}

/// Up to 7 bytes as the low bytes of a little-endian word, zero above.
#[inline(always)]
fn tail(rest: &[u8]) -> u64 {
    let mut w = 0u64;
    let mut at = 0;
    if let Some(four) = rest.first_chunk::<4>() {
        w = u64::from(u32::from_le_bytes(*four));
        at = 4;
    }
    if let Some(two) = rest.get(at..).and_then(|r| r.first_chunk::<2>()) {
        w |= u64::from(u16::from_le_bytes(*two)) << (8 * at);
        at += 2;
    }
    if let Some(&one) = rest.get(at) {
        w |= u64::from(one) << (8 * at);
    }
    w
}

#[inline(always)]
fn le64(f: &[u8; 54], at: usize) -> u64 {
    u64::from_le_bytes(f[at..at + 8].try_into().unwrap_or([0; 8]))
}

#[inline(always)]
fn le32(f: &[u8; 54], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(f[at..at + 4].try_into().unwrap_or([0; 4])))
}

/// The 16-bit ones'-complement sum of a 64-bit accumulator: each fold adds
/// the halves and the carry out (which cannot carry again).
#[inline(always)]
pub(crate) fn fold(acc: u64) -> u16 {
    let (s, c) = (acc as u32).overflowing_add((acc >> 32) as u32);
    let s = s + u32::from(c);
    let (t, c) = (s as u16).overflowing_add((s >> 16) as u16);
    t + u16::from(c)
}

/// A 16-bit big-endian value as the little-endian word sum sees it.
#[inline(always)]
fn be(v: u16) -> u64 {
    u64::from(v.swap_bytes())
}

#[inline(always)]
fn valid(acc: u64) -> bool {
    fold(acc) == 0xffff
}

/// The fast path's shape: an untagged IPv4 header of 20 bytes at offset 14
/// and the TCP segment after it, `seg_len` bytes (at least its 20-byte
/// header). Fixed offsets, read in place, both sums checked with one branch:
/// the common packet pays a few adds.
#[inline(always)]
pub fn verify_v4_tcp(frame: &[u8], seg_len: usize, rx: RxChecksums) -> Result<(), DropReason> {
    if rx == RxChecksums::VERIFIED {
        return Ok(());
    }
    let f: &[u8; 54] = frame.first_chunk().ok_or(DropReason::Truncated)?;
    // Bytes 26..34, the addresses, are in both sums.
    let addrs = le64(f, 26);
    let ip = add(add(le64(f, 14), le32(f, 22)), addrs);
    let pseudo = be(u16::from(proto::TCP)) + be(seg_len as u16);
    let mut tcp = add(add(add(le64(f, 34), le64(f, 42)), le32(f, 50) + pseudo), addrs);
    if seg_len > 20 {
        let rest = frame.get(54..34 + seg_len).ok_or(DropReason::Truncated)?;
        tcp = sum(rest, tcp);
    }
    // Neither sum can be zero (version 4 and protocol 6 are in them), so
    // "a multiple of 0xffff" is "folds to 0xffff"; tested apart, each is a
    // multiply and a compare.
    if rx == RxChecksums::UNKNOWN && ip.is_multiple_of(0xffff) && tcp.is_multiple_of(0xffff) {
        return Ok(());
    }
    v4_tcp_verdict(valid(ip), valid(tcp), rx)
}

/// Which check failed, with the NIC's word where it gave one.
#[cold]
fn v4_tcp_verdict(ip_ok: bool, l4_ok: bool, rx: RxChecksums) -> Result<(), DropReason> {
    let ok = |nic: Offload, sw: bool| match nic {
        Offload::Good => true,
        Offload::Bad => false,
        Offload::Unknown => sw,
    };
    if !ok(rx.ip, ip_ok) {
        Err(DropReason::BadIpChecksum)
    } else if !ok(rx.l4, l4_ok) {
        Err(DropReason::BadL4Checksum)
    } else {
        Ok(())
    }
}

/// The checksums of a parsed packet. The L4 checksum of a fragment is left
/// alone: it covers bytes in other fragments.
#[inline]
pub fn verify(frame: &[u8], p: &IpPacket, rx: RxChecksums) -> Result<(), DropReason> {
    let l3 = usize::from(p.l3_off);
    let l4 = usize::from(p.l4_off);
    let end = usize::from(p.payload_off) + usize::from(p.payload_len);
    let ip_hdr = frame.get(l3..l4).ok_or(DropReason::Truncated)?;
    if p.family == Family::V4 {
        match rx.ip {
            Offload::Good => {}
            Offload::Bad => return Err(DropReason::BadIpChecksum),
            Offload::Unknown => {
                if !valid(sum(ip_hdr, 0)) {
                    return Err(DropReason::BadIpChecksum);
                }
            }
        }
    }
    if p.frag != Fragment::None {
        return Ok(());
    }
    let icmp = if p.family == Family::V4 { proto::ICMP } else { proto::ICMPV6 };
    if !matches!(p.proto, proto::TCP | proto::UDP) && p.proto != icmp {
        return Ok(());
    }
    match rx.l4 {
        Offload::Good => return Ok(()),
        Offload::Bad => return Err(DropReason::BadL4Checksum),
        Offload::Unknown => {}
    }
    let seg = frame.get(l4..end).ok_or(DropReason::Truncated)?;
    if p.proto == proto::UDP && p.family == Family::V4 && seg.get(6..8) == Some(&[0, 0]) {
        // No checksum sent (allowed for UDP over IPv4 only).
        return Ok(());
    }
    let len = seg.len() as u64;
    let pseudo = match p.family {
        // ICMP over IPv4 has no pseudo-header.
        Family::V4 if p.proto == icmp => 0,
        Family::V4 => sum(&ip_hdr[12..20], be(u16::from(p.proto)) + be(len as u16)),
        Family::V6 => {
            let addrs = frame.get(l3 + 8..l3 + 40).ok_or(DropReason::Truncated)?;
            let len32 = (len as u32).to_be_bytes();
            sum(addrs, be(u16::from(p.proto)) + sum(&len32, 0))
        }
    };
    if valid(sum(seg, pseudo)) {
        Ok(())
    } else {
        Err(DropReason::BadL4Checksum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{self, Tcp};
    use crate::parse::tcp_flags::*;

    const C: [u8; 4] = [10, 0, 0, 1];
    const S: [u8; 4] = [10, 0, 0, 2];
    use crate::parse::{parse_into, FrameKind};

    /// RFC 1071's reference: 16-bit big-endian words, carries folded.
    fn reference(parts: &[&[u8]]) -> u16 {
        let mut acc = 0u32;
        for p in parts {
            for w in p.chunks(2) {
                acc += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
            }
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn the_word_sum_agrees_with_rfc_1071() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1501).map(|b| b.wrapping_mul(151)).collect();
        for len in [0, 1, 2, 7, 8, 9, 20, 63, 64, 1500, 1501] {
            let ours = fold(sum(&data[..len], 0)).swap_bytes();
            assert_eq!(ours, reference(&[&data[..len]]), "len {len}");
        }
    }

    fn parsed(frame: &[u8]) -> IpPacket {
        let mut p = IpPacket::default();
        assert!(matches!(parse_into(frame, &mut p), Ok(FrameKind::Ip)));
        p
    }

    /// Every frame the builder makes is valid; flipping any one byte of the
    /// IP header or the L4 segment is caught, in software and by the NIC's
    /// word; the NIC's "good" is trusted as is.
    #[test]
    fn a_flipped_byte_anywhere_is_caught() {
        let (c, s) = (C, S);
        let v6 = |last| [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last];
        let seg =
            Tcp { sport: 40000, dport: 80, flags: ACK, payload: b"v6 data", ..Tcp::default() };
        let cases: Vec<Vec<u8>> = vec![
            frames::tcp(c, s, (40000, 80), ACK | PSH, (1, 2), b"hello, world"),
            frames::tcp(c, s, (40000, 80), SYN, (1, 0), b""),
            frames::udp(c, s, 5353, 53, b"query!"),
            frames::icmp(c, s, 8, 0, [0, 7, 0, 1], b"ping"),
            frames::ether(0x86dd, &frames::ipv6(6, v6(1), v6(2), &frames::tcp_segment(&seg))),
            frames::ether(
                0x86dd,
                &frames::ipv6(17, v6(1), v6(2), &frames::udp_datagram(5353, 53, b"v6 udp")),
            ),
            frames::ether(
                0x86dd,
                &frames::ipv6(
                    58,
                    v6(1),
                    v6(2),
                    &frames::icmp_message(128, 0, [0, 1, 0, 2], b"v6 ping"),
                ),
            ),
        ];
        for f in &cases {
            let p = parsed(f);
            assert_eq!(verify(f, &p, RxChecksums::UNKNOWN), Ok(()), "{f:02x?}");
            let end = usize::from(p.payload_off) + usize::from(p.payload_len);
            // IPv6's first 8 bytes (class, flow, length, next header, hop
            // limit) are under no checksum.
            let first = usize::from(p.l3_off) + if p.family == Family::V6 { 8 } else { 0 };
            for at in first..end {
                let mut bad = f.clone();
                bad[at] ^= 0x10;
                let mut q = IpPacket::default();
                if !matches!(parse_into(&bad, &mut q), Ok(FrameKind::Ip)) {
                    continue; // the parser refuses it first
                }
                assert!(verify(&bad, &q, RxChecksums::UNKNOWN).is_err(), "byte {at} of {f:02x?}");
            }
            let nic = |ip, l4| RxChecksums { ip, l4 };
            assert_eq!(
                verify(f, &p, nic(Offload::Good, Offload::Bad)),
                Err(DropReason::BadL4Checksum)
            );
            let mut bad = f.clone();
            bad[end - 1] ^= 1;
            assert_eq!(
                verify(&bad, &p, nic(Offload::Good, Offload::Good)),
                Ok(()),
                "the NIC's word"
            );
        }
    }

    #[test]
    fn the_fast_paths_check_matches_the_general_one() {
        let f = frames::tcp(C, S, (40000, 80), ACK, (1, 2), &[9; 26]);
        let seg_len = f.len() - 34;
        assert_eq!(verify_v4_tcp(&f, seg_len, RxChecksums::UNKNOWN), Ok(()));
        for at in 14..f.len() {
            let mut bad = f.clone();
            bad[at] ^= 0x01;
            let want = if at < 34 { DropReason::BadIpChecksum } else { DropReason::BadL4Checksum };
            assert_eq!(verify_v4_tcp(&bad, seg_len, RxChecksums::UNKNOWN), Err(want), "{at}");
        }
    }

    #[test]
    fn udp_without_a_checksum_passes_over_ipv4_only() {
        let mut f = frames::udp(C, S, 5353, 53, b"query!");
        let p = parsed(&f);
        let at = usize::from(p.l4_off) + 6;
        f[at..at + 2].copy_from_slice(&[0, 0]);
        assert_eq!(verify(&f, &p, RxChecksums::UNKNOWN), Ok(()));
    }
}
