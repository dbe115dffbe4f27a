//! The frame parser behind [`parse`].
//!
//! Every read goes through a length check (`get`, slice patterns or an explicit
//! comparison before indexing a slice whose length is then known), so a frame of
//! any content and any length yields `Ok` or `Err(DropReason)`, never a panic,
//! and nothing is copied or allocated: the result only holds offsets into the
//! frame and a few header fields.
//!
//! Checksums (IPv4 header, TCP, UDP, ICMP) are **not** verified here: the NIC
//! (DPDK RX checksum offload) or the sending kernel is trusted for them, and a
//! packet with a bad checksum is dropped by the receiving end host anyway.
//! What is verified is everything the firewall's decisions depend on: that
//! every header announced is present and self-consistent.
//!
//! Policy choices beyond mod.rs:
//! * More than two stacked VLAN tags: `DropReason::VlanStack` (what is inside
//!   cannot be checked, so it must not pass as non-IP).
//! * IPv6 payload length 0 (a jumbogram, or an empty packet) is `BadIpHeader`.
//! * A hop-by-hop header anywhere but right after the IPv6 header, or a second
//!   fragment header, is `BadIpv6ExtHeader` (RFC 8200 §4.1).
//! * The tiny-fragment rule (RFC 1858: TCP, fragment offset 1) is applied to
//!   IPv6 fragments as well as IPv4 ones.
//! * An IPv6 fragment header with offset 0 and M = 0 (an "atomic fragment",
//!   RFC 6946) is not a fragment: `Fragment::None`, but `frag_id` is still set.
//! * In a first fragment, a UDP length larger than the fragment is expected
//!   (it is the whole datagram's); the payload is bounded by the fragment.
//! * TCP options of a known kind with a wrong length are skipped like unknown
//!   ones (as Linux does); only a length byte < 2 or past the header is an error.

use super::{
    proto, v4_mapped, Addr, DropReason, Family, Fragment, FrameKind, IcmpInfo, IpPacket, Parsed,
    Quoted, TcpHdr, TcpOpts, L4,
};

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const MAX_VLAN_TAGS: usize = 2;

const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
/// Most IPv6 extension headers followed before the packet is refused.
const MAX_V6_EXT: usize = 8;

const NH_HOPOPTS: u8 = 0;
const NH_ROUTING: u8 = 43;
const NH_FRAGMENT: u8 = 44;
const NH_AH: u8 = 51;
const NH_DSTOPTS: u8 = 60;

const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const ICMP_HLEN: usize = 8;
/// RFC 7323 §2.3: a larger shift is treated as 14.
const MAX_WSCALE: u8 = 14;

/// Big-endian u16 at `off`; 0 if out of bounds (callers check lengths first,
/// the fallback only makes a mistake harmless instead of a panic).
#[inline(always)]
fn be16(b: &[u8], off: usize) -> u16 {
    match b.get(off..off.wrapping_add(2)) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

/// Big-endian u32 at `off`; 0 if out of bounds.
#[inline(always)]
fn be32(b: &[u8], off: usize) -> u32 {
    match b.get(off..off.wrapping_add(4)) {
        Some(&[a, x, y, z]) => u32::from_be_bytes([a, x, y, z]),
        _ => 0,
    }
}

/// The IPv4 address at `off`, IPv4-mapped; unspecified if out of bounds.
#[inline(always)]
fn addr_v4(b: &[u8], off: usize) -> Addr {
    match b.get(off..off.wrapping_add(4)) {
        Some(&[a, x, y, z]) => v4_mapped([a, x, y, z]),
        _ => [0; 16],
    }
}

/// The IPv6 address at `off`; unspecified if out of bounds.
#[inline(always)]
fn addr_v6(b: &[u8], off: usize) -> Addr {
    b.get(off..off.wrapping_add(16)).and_then(|s| <[u8; 16]>::try_from(s).ok()).unwrap_or([0; 16])
}

#[inline(always)]
fn is_echo(family: Family, typ: u8) -> bool {
    match family {
        Family::V4 => typ == 8 || typ == 0,
        Family::V6 => typ == 128 || typ == 129,
    }
}

#[inline(always)]
fn is_icmp_error(family: Family, typ: u8) -> bool {
    match family {
        Family::V4 => matches!(typ, 3 | 4 | 5 | 11 | 12),
        Family::V6 => matches!(typ, 1..=4),
    }
}

#[inline(always)]
fn icmp_proto(family: Family) -> u8 {
    match family {
        Family::V4 => proto::ICMP,
        Family::V6 => proto::ICMPV6,
    }
}

/// Parses one received frame (Ethernet II, up to two 802.1Q/802.1ad tags,
/// IPv4/IPv6, TCP/UDP/ICMP/ICMPv6). See the module docs for the contract.
#[inline]
pub fn parse(frame: &[u8]) -> Result<Parsed, DropReason> {
    let mut pkt = IpPacket::default();
    match parse_into(frame, &mut pkt)? {
        FrameKind::Ip => Ok(Parsed::Ip(pkt)),
        FrameKind::NonIp { ethertype } => Ok(Parsed::NonIp { ethertype }),
    }
}

/// `parse`, writing an IP packet's metadata into `out` instead of returning
/// it: the packet path's form, which spares it copies of the ~100-byte
/// `IpPacket` through the layers of `Result`. `out` is meaningful only when
/// the result is `Ok(FrameKind::Ip)`.
#[inline(always)]
pub fn parse_into(frame: &[u8], out: &mut IpPacket) -> Result<FrameKind, DropReason> {
    if frame.len() < ETH_HLEN {
        return Err(DropReason::Truncated);
    }
    let mut ethertype = be16(frame, 12);
    let mut off = ETH_HLEN;
    let mut vlan = 0u32;
    let mut tags = 0;
    while (ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ) && tags < MAX_VLAN_TAGS {
        let Some(&[tci_hi, tci_lo, et_hi, et_lo]) = frame.get(off..off + 4) else {
            return Err(DropReason::Truncated);
        };
        // The outer id, then the inner one above it: two tenants' equal
        // tuples in different inner VLANs are different connections.
        vlan |= u32::from(u16::from_be_bytes([tci_hi, tci_lo]) & 0x0fff) << (12 * tags);
        ethertype = u16::from_be_bytes([et_hi, et_lo]);
        off += 4;
        tags += 1;
    }
    match ethertype {
        ETHERTYPE_IPV4 => parse_v4(frame, off, vlan, out).map(|()| FrameKind::Ip),
        ETHERTYPE_IPV6 => parse_v6(frame, off, vlan, out).map(|()| FrameKind::Ip),
        ETHERTYPE_VLAN | ETHERTYPE_QINQ => Err(DropReason::VlanStack),
        _ => Ok(FrameKind::NonIp { ethertype }),
    }
}

/// IPv4 header at `frame[off..]`.
#[inline(always)]
fn parse_v4(frame: &[u8], off: usize, vlan: u32, pkt: &mut IpPacket) -> Result<(), DropReason> {
    let avail = frame.get(off..).unwrap_or(&[]);
    if avail.len() < IPV4_MIN_HLEN {
        return Err(DropReason::Truncated);
    }
    let vihl = avail[0];
    if vihl >> 4 != 4 {
        return Err(DropReason::BadIpHeader);
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    if ihl < IPV4_MIN_HLEN {
        return Err(DropReason::BadIpHeader);
    }
    let total = usize::from(be16(avail, 2));
    if total < ihl {
        return Err(DropReason::BadIpHeader);
    }
    // Bounded by the total length: Ethernet padding is not part of the packet.
    let ip = avail.get(..total).ok_or(DropReason::Truncated)?;
    if ihl > IPV4_MIN_HLEN {
        check_v4_options(ip.get(IPV4_MIN_HLEN..ihl).unwrap_or(&[]))?;
    }
    let frag_field = be16(ip, 6);
    let more = frag_field & 0x2000 != 0;
    let frag_off = frag_field & 0x1fff;
    *pkt = IpPacket {
        vlan,
        family: Family::V4,
        src: addr_v4(ip, 12),
        dst: addr_v4(ip, 16),
        proto: ip[9],
        frag: Fragment::None,
        frag_id: u32::from(be16(ip, 4)),
        l4: L4::Other,
        payload_off: 0,
        payload_len: 0,
        l3_off: off as u16,
        l4_off: (off + ihl) as u16,
    };
    let seg = ip.get(ihl..).unwrap_or(&[]);
    finish(pkt, seg, off + ihl, frag_off, more)
}

/// Structural check of IPv4 options: EOL ends the list, NOP is one byte, every
/// other option has a length byte >= 2 that stays within the header.
#[inline]
fn check_v4_options(opts: &[u8]) -> Result<(), DropReason> {
    let mut i = 0;
    while let Some(&kind) = opts.get(i) {
        match kind {
            0 => return Ok(()),
            1 => i += 1,
            _ => {
                let len = usize::from(*opts.get(i + 1).ok_or(DropReason::BadIpOptions)?);
                if len < 2 || i + len > opts.len() {
                    return Err(DropReason::BadIpOptions);
                }
                i += len;
            }
        }
    }
    Ok(())
}

/// IPv6 header at `frame[off..]`, then its extension header chain.
#[inline]
fn parse_v6(frame: &[u8], off: usize, vlan: u32, pkt: &mut IpPacket) -> Result<(), DropReason> {
    let avail = frame.get(off..).unwrap_or(&[]);
    if avail.len() < IPV6_HLEN {
        return Err(DropReason::Truncated);
    }
    if avail[0] >> 4 != 6 {
        return Err(DropReason::BadIpHeader);
    }
    let plen = usize::from(be16(avail, 4));
    if plen == 0 {
        // Jumbogram (RFC 2675) or empty: not supported.
        return Err(DropReason::BadIpHeader);
    }
    let ip = avail.get(..IPV6_HLEN + plen).ok_or(DropReason::Truncated)?;

    let mut nh = ip[6];
    let mut pos = IPV6_HLEN;
    let mut count = 0;
    let mut frag_off = 0u16;
    let mut more = false;
    let mut frag_id = 0u32;
    let mut seen_frag = false;
    loop {
        let hlen = match nh {
            NH_HOPOPTS | NH_ROUTING | NH_DSTOPTS | NH_AH => {
                if nh == NH_HOPOPTS && count != 0 {
                    return Err(DropReason::BadIpv6ExtHeader);
                }
                let Some(&[_, len]) = ip.get(pos..pos + 2) else {
                    return Err(DropReason::BadIpv6ExtHeader);
                };
                if nh == NH_AH {
                    (usize::from(len) + 2) * 4
                } else {
                    (usize::from(len) + 1) * 8
                }
            }
            NH_FRAGMENT => {
                if seen_frag {
                    return Err(DropReason::BadIpv6ExtHeader);
                }
                let Some(e) = ip.get(pos..pos + 8) else {
                    return Err(DropReason::BadIpv6ExtHeader);
                };
                let fo = be16(e, 2);
                frag_off = fo >> 3;
                more = fo & 1 != 0;
                frag_id = be32(e, 4);
                seen_frag = true;
                8
            }
            _ => break,
        };
        if count == MAX_V6_EXT || pos + hlen > ip.len() {
            return Err(DropReason::BadIpv6ExtHeader);
        }
        nh = ip[pos];
        pos += hlen;
        count += 1;
        if frag_off != 0 {
            // What follows a non-first fragment's header is the middle of the
            // original payload, not headers.
            break;
        }
    }
    *pkt = IpPacket {
        vlan,
        family: Family::V6,
        src: addr_v6(ip, 8),
        dst: addr_v6(ip, 24),
        proto: nh,
        frag: Fragment::None,
        frag_id,
        l4: L4::Other,
        payload_off: 0,
        payload_len: 0,
        l3_off: off as u16,
        l4_off: (off + pos) as u16,
    };
    let seg = ip.get(pos..).unwrap_or(&[]);
    finish(pkt, seg, off + pos, frag_off, more)
}

/// Common tail of both families: fragment handling, L4, payload bounds.
/// `seg` is the IP payload after all IP headers, at frame offset `base`.
#[inline(always)]
fn finish(
    pkt: &mut IpPacket,
    seg: &[u8],
    base: usize,
    frag_off: u16,
    more: bool,
) -> Result<(), DropReason> {
    if frag_off != 0 {
        // RFC 1858: a TCP fragment at offset 8 can rewrite the flags of the
        // first fragment's header on reassembly.
        if frag_off == 1 && pkt.proto == proto::TCP {
            return Err(DropReason::BadFragment);
        }
        pkt.frag = Fragment::Later;
        return set_payload(pkt, base, seg.len());
    }
    if more {
        pkt.frag = Fragment::First;
    }
    let (hlen, plen) = parse_l4(seg, pkt.proto, pkt.family, more, &mut pkt.l4)?;
    set_payload(pkt, base + hlen, plen)
}

#[inline(always)]
fn set_payload(pkt: &mut IpPacket, off: usize, len: usize) -> Result<(), DropReason> {
    // Frames are at most 64 KiB (an mbuf segment); anything larger cannot be
    // described by the u16 offsets and is refused rather than wrapped.
    pkt.payload_off = u16::try_from(off).map_err(|_| DropReason::BadIpHeader)?;
    pkt.payload_len = u16::try_from(len).map_err(|_| DropReason::BadIpHeader)?;
    Ok(())
}

/// Writes the L4 header to `l4` and returns its length and the L4 payload
/// length (through `l4` rather than a returned tuple: no copy of `L4`).
/// `first` is true in a first fragment, where a header that does not fit is
/// `BadFragment`.
#[inline(always)]
fn parse_l4(
    seg: &[u8],
    proto_nr: u8,
    family: Family,
    first: bool,
    l4: &mut L4,
) -> Result<(usize, usize), DropReason> {
    match proto_nr {
        proto::TCP => parse_tcp(seg, first, l4),
        proto::UDP => parse_udp(seg, first, l4),
        p if p == icmp_proto(family) => parse_icmp(seg, family, first, l4),
        _ => {
            *l4 = L4::Other;
            Ok((0, seg.len()))
        }
    }
}

#[inline(always)]
fn parse_tcp(seg: &[u8], first: bool, l4: &mut L4) -> Result<(usize, usize), DropReason> {
    if seg.len() < TCP_MIN_HLEN {
        return Err(if first { DropReason::BadFragment } else { DropReason::Truncated });
    }
    let doff = usize::from(seg[12] >> 4) * 4;
    if doff < TCP_MIN_HLEN {
        return Err(DropReason::BadTcpHeader);
    }
    let Some(opt_bytes) = seg.get(TCP_MIN_HLEN..doff) else {
        return Err(if first { DropReason::BadFragment } else { DropReason::BadTcpHeader });
    };
    let opts = if opt_bytes.is_empty() { TcpOpts::default() } else { parse_tcp_opts(opt_bytes)? };
    let hdr = TcpHdr {
        sport: be16(seg, 0),
        dport: be16(seg, 2),
        seq: be32(seg, 4),
        ack: be32(seg, 8),
        flags: seg[13],
        window: be16(seg, 14),
        opts,
    };
    *l4 = L4::Tcp(hdr);
    Ok((doff, seg.len() - doff))
}

#[inline]
fn parse_tcp_opts(b: &[u8]) -> Result<TcpOpts, DropReason> {
    let mut o = TcpOpts::default();
    let mut i = 0;
    while let Some(&kind) = b.get(i) {
        match kind {
            0 => break,
            1 => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let len = usize::from(*b.get(i + 1).ok_or(DropReason::BadTcpHeader)?);
        if len < 2 {
            return Err(DropReason::BadTcpHeader);
        }
        let body = b.get(i + 2..i + len).ok_or(DropReason::BadTcpHeader)?;
        match (kind, body) {
            (2, &[hi, lo]) => o.mss = u16::from_be_bytes([hi, lo]),
            (3, &[shift]) => o.wscale = Some(shift.min(MAX_WSCALE)),
            (4, []) => o.sack_perm = true,
            (8, &[a, b, c, d, e, f, g, h]) => {
                o.timestamp =
                    Some((u32::from_be_bytes([a, b, c, d]), u32::from_be_bytes([e, f, g, h])));
            }
            // SACK blocks, unknown kinds, known kinds with a wrong length.
            _ => {}
        }
        i += len;
    }
    Ok(o)
}

#[inline(always)]
fn parse_udp(seg: &[u8], first: bool, l4: &mut L4) -> Result<(usize, usize), DropReason> {
    if seg.len() < UDP_HLEN {
        return Err(if first { DropReason::BadFragment } else { DropReason::Truncated });
    }
    let ulen = usize::from(be16(seg, 4));
    if ulen < UDP_HLEN {
        return Err(DropReason::BadUdpHeader);
    }
    let end = if first {
        // The UDP length is the whole datagram's; this fragment holds a prefix.
        ulen.min(seg.len())
    } else if ulen > seg.len() {
        return Err(DropReason::BadUdpHeader);
    } else {
        ulen
    };
    *l4 = L4::Udp { sport: be16(seg, 0), dport: be16(seg, 2) };
    Ok((UDP_HLEN, end - UDP_HLEN))
}

#[inline]
fn parse_icmp(
    seg: &[u8],
    family: Family,
    first: bool,
    l4: &mut L4,
) -> Result<(usize, usize), DropReason> {
    if seg.len() < ICMP_HLEN {
        return Err(if first { DropReason::BadFragment } else { DropReason::BadIcmp });
    }
    let typ = seg[0];
    let mut info = IcmpInfo { typ, code: seg[1], ..IcmpInfo::default() };
    if is_echo(family, typ) {
        info.echo = Some((be16(seg, 4), be16(seg, 6)));
    } else if is_icmp_error(family, typ) {
        info.is_error = true;
        let q = seg.get(ICMP_HLEN..).unwrap_or(&[]);
        info.quoted = match family {
            Family::V4 => quoted_v4(q),
            Family::V6 => quoted_v6(q),
        };
    }
    *l4 = L4::Icmp(info);
    Ok((ICMP_HLEN, seg.len() - ICMP_HLEN))
}

/// The IPv4 header (and 8 bytes of L4) an ICMP error quotes. Its total length
/// may exceed what is quoted, so only the quoted bytes are looked at.
#[inline]
fn quoted_v4(q: &[u8]) -> Option<Quoted> {
    let h = q.get(..IPV4_MIN_HLEN)?;
    if h[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < IPV4_MIN_HLEN {
        return None;
    }
    let proto_nr = h[9];
    let later = be16(h, 6) & 0x1fff != 0;
    let l4 = q.get(ihl..).unwrap_or(&[]);
    let (sport, dport) = quoted_ports(l4, proto_nr, Family::V4, later)?;
    Some(Quoted {
        family: Family::V4,
        src: addr_v4(h, 12),
        dst: addr_v4(h, 16),
        proto: proto_nr,
        sport,
        dport,
    })
}

/// The IPv6 header (and 8 bytes of L4, after extension headers) an ICMPv6
/// error quotes. Tolerant: whatever cannot be followed gives `None`.
#[inline]
fn quoted_v6(q: &[u8]) -> Option<Quoted> {
    let h = q.get(..IPV6_HLEN)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let mut nh = h[6];
    let mut pos = IPV6_HLEN;
    let mut later = false;
    let mut count = 0;
    loop {
        let hlen = match nh {
            NH_HOPOPTS | NH_ROUTING | NH_DSTOPTS => (usize::from(*q.get(pos + 1)?) + 1) * 8,
            NH_AH => (usize::from(*q.get(pos + 1)?) + 2) * 4,
            NH_FRAGMENT => {
                let e = q.get(pos..pos + 8)?;
                later = be16(e, 2) >> 3 != 0;
                8
            }
            _ => break,
        };
        if count == MAX_V6_EXT {
            return None;
        }
        nh = *q.get(pos)?;
        pos += hlen;
        count += 1;
        if later {
            break;
        }
    }
    let l4 = q.get(pos..).unwrap_or(&[]);
    let (sport, dport) = quoted_ports(l4, nh, Family::V6, later)?;
    Some(Quoted {
        family: Family::V6,
        src: addr_v6(h, 8),
        dst: addr_v6(h, 24),
        proto: nh,
        sport,
        dport,
    })
}

/// Ports of a quoted L4 header: TCP/UDP ports, the id of a quoted echo, 0/0
/// for other protocols. `None` when they cannot be known.
#[inline]
fn quoted_ports(l4: &[u8], proto_nr: u8, family: Family, later: bool) -> Option<(u16, u16)> {
    match proto_nr {
        proto::TCP | proto::UDP => {
            if later {
                return None;
            }
            let h = l4.get(..8)?;
            Some((be16(h, 0), be16(h, 2)))
        }
        p if p == icmp_proto(family) => {
            if later {
                return None;
            }
            let h = l4.get(..8)?;
            if !is_echo(family, h[0]) {
                return None;
            }
            let id = be16(h, 4);
            Some((id, id))
        }
        _ => Some((0, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tcp_flags;
    use super::*;
    use crate::frames::{self, tcp_segment, Ipv4, Tcp};

    const A4: [u8; 4] = [10, 0, 0, 1];
    const B4: [u8; 4] = [192, 168, 1, 2];
    const A6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const B6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    fn eth(ethertype: u16, l3: &[u8]) -> Vec<u8> {
        frames::ether(ethertype, l3)
    }

    fn ipv4_full(proto: u8, opts: &[u8], id: u16, frag: u16, l4: &[u8]) -> Vec<u8> {
        frames::ipv4_packet(&Ipv4 { id, frag, opts, ..Ipv4::new(proto, A4, B4) }, l4)
    }

    fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
        ipv4_full(proto, &[], 0x1234, 0x4000, l4)
    }

    fn ipv6_raw(nh: u8, src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
        frames::ipv6(nh, src, dst, payload)
    }

    fn ipv6(nh: u8, payload: &[u8]) -> Vec<u8> {
        ipv6_raw(nh, A6, B6, payload)
    }

    fn ext(nh: u8, n: u8) -> Vec<u8> {
        frames::ipv6_ext(nh, n)
    }

    fn frag6(nh: u8, off: u16, more: bool, id: u32) -> Vec<u8> {
        frames::ipv6_frag(nh, off, more, id)
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        frames::udp_datagram(sport, dport, payload)
    }

    fn icmp(typ: u8, code: u8, rest: [u8; 4], payload: &[u8]) -> Vec<u8> {
        frames::icmp_message(typ, code, rest, payload)
    }

    fn echo(typ: u8, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let [a, b] = id.to_be_bytes();
        let [c, d] = seq.to_be_bytes();
        icmp(typ, 0, [a, b, c, d], payload)
    }

    fn ip(frame: &[u8]) -> IpPacket {
        match parse(frame) {
            Ok(Parsed::Ip(p)) => p,
            other => panic!("expected Ip, got {other:?}"),
        }
    }

    fn syn_opts() -> Vec<u8> {
        // Linux's SYN: MSS 1460, SACK-perm, TS, NOP, WS 7.
        let mut o = vec![2, 4, 0x05, 0xb4, 4, 2, 8, 10];
        o.extend_from_slice(&0x0102_0304u32.to_be_bytes());
        o.extend_from_slice(&0u32.to_be_bytes());
        o.extend_from_slice(&[1, 3, 3, 7]);
        o
    }

    fn syn_frame() -> Vec<u8> {
        let seg = tcp_segment(&Tcp {
            sport: 40000,
            dport: 443,
            seq: 0xdead_beef,
            ack: 0,
            flags: tcp_flags::SYN,
            window: 64240,
            opts: &syn_opts(),
            payload: &[],
        });
        eth(0x0800, &ipv4(proto::TCP, &seg))
    }

    #[test]
    fn tcp_syn_with_options() {
        let f = syn_frame();
        let p = ip(&f);
        assert_eq!(p.vlan, 0);
        assert_eq!(p.family, Family::V4);
        assert_eq!(p.src, v4_mapped(A4));
        assert_eq!(p.dst, v4_mapped(B4));
        assert_eq!(p.proto, proto::TCP);
        assert_eq!(p.frag, Fragment::None);
        assert_eq!(p.frag_id, 0x1234);
        assert_eq!(p.payload_off, 14 + 20 + 40);
        assert_eq!(p.payload_len, 0);
        assert_eq!(
            p.l4,
            L4::Tcp(TcpHdr {
                sport: 40000,
                dport: 443,
                seq: 0xdead_beef,
                ack: 0,
                flags: tcp_flags::SYN,
                window: 64240,
                opts: TcpOpts {
                    mss: 1460,
                    wscale: Some(7),
                    sack_perm: true,
                    timestamp: Some((0x0102_0304, 0)),
                },
            })
        );
    }

    #[test]
    fn tcp_data_no_options_and_wscale_clamp() {
        let seg = tcp_segment(&Tcp {
            sport: 1,
            dport: 2,
            seq: 3,
            ack: 4,
            flags: tcp_flags::ACK | tcp_flags::PSH,
            window: 5,
            opts: &[],
            payload: b"abc",
        });
        let f = eth(0x0800, &ipv4(proto::TCP, &seg));
        let p = ip(&f);
        let L4::Tcp(t) = p.l4 else { panic!() };
        assert_eq!((t.sport, t.dport, t.seq, t.ack, t.window), (1, 2, 3, 4, 5));
        assert_eq!(t.flags, tcp_flags::ACK | tcp_flags::PSH);
        assert_eq!(t.opts, TcpOpts::default());
        assert_eq!(p.payload(&f), b"abc");

        // WS 15 is clamped to 14; SACK blocks and unknown options skipped;
        // MSS with a wrong length ignored.
        let opts = [3, 3, 15, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2, 2, 3, 5, 1, 1, 1, 0];
        let seg = tcp_segment(&Tcp {
            sport: 1,
            dport: 2,
            seq: 3,
            ack: 4,
            flags: tcp_flags::ACK,
            window: 5,
            opts: &opts,
            payload: &[],
        });
        let f = eth(0x0800, &ipv4(proto::TCP, &seg));
        let L4::Tcp(t) = ip(&f).l4 else { panic!() };
        assert_eq!(t.opts.wscale, Some(14));
        assert_eq!(t.opts.mss, 0);
    }

    #[test]
    fn tcp_bad_options_rejected() {
        for opts in [[2u8, 1, 0, 0], [2, 0, 0, 0], [1, 1, 1, 8], [8, 10, 0, 0], [1, 1, 2, 3]] {
            let seg = tcp_segment(&Tcp {
                sport: 1,
                dport: 2,
                seq: 3,
                ack: 4,
                flags: tcp_flags::SYN,
                window: 5,
                opts: &opts,
                payload: &[],
            });
            let f = eth(0x0800, &ipv4(proto::TCP, &seg));
            assert_eq!(parse(&f), Err(DropReason::BadTcpHeader), "{opts:?}");
        }
        // EOL stops the parse: garbage after it is fine.
        let seg = tcp_segment(&Tcp {
            sport: 1,
            dport: 2,
            seq: 3,
            ack: 4,
            flags: tcp_flags::SYN,
            window: 5,
            opts: &[0, 0xff, 0xff, 0xff],
            payload: &[],
        });
        assert!(parse(&eth(0x0800, &ipv4(proto::TCP, &seg))).is_ok());
    }

    #[test]
    fn tcp_doff_checked() {
        let mut seg = tcp_segment(&Tcp {
            sport: 1,
            dport: 2,
            seq: 3,
            ack: 4,
            flags: tcp_flags::ACK,
            window: 5,
            opts: &[],
            payload: b"0123456789",
        });
        seg[12] = 4 << 4;
        assert_eq!(parse(&eth(0x0800, &ipv4(proto::TCP, &seg))), Err(DropReason::BadTcpHeader));
        seg[12] = 0;
        assert_eq!(parse(&eth(0x0800, &ipv4(proto::TCP, &seg))), Err(DropReason::BadTcpHeader));
        // 15 * 4 = 60 > 30 bytes of segment.
        seg[12] = 15 << 4;
        assert_eq!(parse(&eth(0x0800, &ipv4(proto::TCP, &seg))), Err(DropReason::BadTcpHeader));
        // Header shorter than 20 bytes inside a valid IP packet.
        assert_eq!(parse(&eth(0x0800, &ipv4(proto::TCP, &seg[..19]))), Err(DropReason::Truncated));
    }

    #[test]
    fn udp_basic() {
        let f = eth(0x0800, &ipv4(proto::UDP, &udp(5353, 53, b"hello")));
        let p = ip(&f);
        assert_eq!(p.proto, proto::UDP);
        assert_eq!(p.l4, L4::Udp { sport: 5353, dport: 53 });
        assert_eq!(p.payload_off, 14 + 20 + 8);
        assert_eq!(p.payload_len, 5);
        assert_eq!(p.payload(&f), b"hello");
    }

    #[test]
    fn udp_bad_length_rejected() {
        let mut seg = udp(1, 2, b"hello");
        seg[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(parse(&eth(0x0800, &ipv4(proto::UDP, &seg))), Err(DropReason::BadUdpHeader));
        seg[4..6].copy_from_slice(&14u16.to_be_bytes());
        assert_eq!(parse(&eth(0x0800, &ipv4(proto::UDP, &seg))), Err(DropReason::BadUdpHeader));
        // Shorter than the IP payload: payload bounded by the UDP length.
        seg[4..6].copy_from_slice(&10u16.to_be_bytes());
        let f = eth(0x0800, &ipv4(proto::UDP, &seg));
        assert_eq!(ip(&f).payload(&f), b"he");
        assert_eq!(parse(&eth(0x0800, &ipv4(proto::UDP, &seg[..7]))), Err(DropReason::Truncated));
    }

    #[test]
    fn ethernet_padding_excluded() {
        let mut f = eth(0x0800, &ipv4(proto::UDP, &udp(1, 2, b"x")));
        assert_eq!(f.len(), 43);
        f.resize(60, 0xee);
        let p = ip(&f);
        assert_eq!(p.payload_len, 1);
        assert_eq!(p.payload(&f), b"x");

        let mut f = eth(
            0x0800,
            &ipv4(
                proto::TCP,
                &tcp_segment(&Tcp {
                    sport: 1,
                    dport: 2,
                    seq: 3,
                    ack: 4,
                    flags: tcp_flags::ACK,
                    window: 5,
                    opts: &[],
                    payload: &[],
                }),
            ),
        );
        f.resize(60, 0xee);
        assert_eq!(ip(&f).payload_len, 0);

        let mut f = eth(0x86dd, &ipv6(proto::UDP, &udp(1, 2, b"")));
        f.resize(f.len() + 6, 0xee);
        let p = ip(&f);
        assert_eq!((p.payload_off as usize, p.payload_len), (14 + 48, 0));
    }

    #[test]
    fn arp_and_others_are_non_ip() {
        let arp = eth(0x0806, &[0u8; 28]);
        assert_eq!(parse(&arp), Ok(Parsed::NonIp { ethertype: 0x0806 }));
        assert_eq!(parse(&eth(0x88cc, &[])), Ok(Parsed::NonIp { ethertype: 0x88cc }));
        assert_eq!(parse(&arp[..13]), Err(DropReason::Truncated));
        assert_eq!(parse(&[]), Err(DropReason::Truncated));
    }

    fn tagged(tags: &[(u16, u16)], ethertype: u16, l3: &[u8]) -> Vec<u8> {
        frames::ether_tagged(tags, ethertype, l3)
    }

    #[test]
    fn vlan_tagged_ipv4() {
        let f = tagged(&[(0x8100, 0x2064)], 0x0800, &ipv4(proto::UDP, &udp(1, 2, b"ab")));
        let p = ip(&f);
        assert_eq!(p.vlan, 100);
        assert_eq!(p.payload_off, 18 + 28);
        assert_eq!(p.payload(&f), b"ab");
        // Tagged ARP passes.
        let f = tagged(&[(0x8100, 5)], 0x0806, &[0; 28]);
        assert_eq!(parse(&f), Ok(Parsed::NonIp { ethertype: 0x0806 }));
        // Truncated tag.
        assert_eq!(parse(&f[..16]), Err(DropReason::Truncated));
    }

    #[test]
    fn qinq() {
        let f =
            tagged(&[(0x88a8, 0xf00a), (0x8100, 20)], 0x0800, &ipv4(proto::UDP, &udp(1, 2, b"ab")));
        let p = ip(&f);
        assert_eq!(p.vlan, 10 | 20 << 12, "the outer id, then the inner one");
        assert_eq!(p.payload_off, 22 + 28);
        assert_eq!(p.payload(&f), b"ab");
        let f = tagged(&[(0x8100, 7), (0x8100, 8)], 0x86dd, &ipv6(proto::UDP, &udp(1, 2, b"")));
        assert_eq!(ip(&f).vlan, 7 | 8 << 12);
        // A third tag is not followed.
        let f = tagged(
            &[(0x8100, 1), (0x8100, 2), (0x8100, 3)],
            0x0800,
            &ipv4(proto::UDP, &udp(1, 2, b"")),
        );
        assert_eq!(parse(&f), Err(DropReason::VlanStack));
    }

    #[test]
    fn ipv6_tcp() {
        let seg = tcp_segment(&Tcp {
            sport: 5555,
            dport: 22,
            seq: 100,
            ack: 200,
            flags: tcp_flags::ACK,
            window: 1000,
            opts: &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
            payload: b"data",
        });
        let f = eth(0x86dd, &ipv6(proto::TCP, &seg));
        let p = ip(&f);
        assert_eq!(p.family, Family::V6);
        assert_eq!((p.src, p.dst), (A6, B6));
        assert_eq!(p.proto, proto::TCP);
        assert_eq!(p.frag, Fragment::None);
        assert_eq!(p.frag_id, 0);
        let L4::Tcp(t) = p.l4 else { panic!() };
        assert_eq!((t.sport, t.dport, t.seq, t.ack, t.window), (5555, 22, 100, 200, 1000));
        assert_eq!(t.opts.timestamp, Some((1, 2)));
        assert_eq!(p.payload_off, 14 + 40 + 32);
        assert_eq!(p.payload(&f), b"data");
    }

    #[test]
    fn ipv6_ext_headers_before_udp() {
        let mut pl = ext(60, 0); // hop-by-hop -> dest options
        pl.extend(ext(43, 1)); // dest options (16 bytes) -> routing
        pl.extend(ext(proto::UDP, 0)); // routing -> UDP
        pl.extend(udp(1000, 2000, b"xyz"));
        let f = eth(0x86dd, &ipv6(0, &pl));
        let p = ip(&f);
        assert_eq!(p.proto, proto::UDP);
        assert_eq!(p.l4, L4::Udp { sport: 1000, dport: 2000 });
        assert_eq!(p.payload_off as usize, 14 + 40 + 32 + 8);
        assert_eq!(p.payload(&f), b"xyz");

        // AH: (2 + 2) * 4 = 16 bytes.
        let mut pl = vec![proto::TCP, 2, 0, 0];
        pl.resize(16, 0);
        pl.extend(tcp_segment(&Tcp {
            sport: 1,
            dport: 2,
            seq: 3,
            ack: 4,
            flags: tcp_flags::SYN,
            window: 5,
            opts: &[],
            payload: &[],
        }));
        let p = ip(&eth(0x86dd, &ipv6(51, &pl)));
        assert_eq!(p.proto, proto::TCP);
        assert!(matches!(p.l4, L4::Tcp(_)));

        // No next header, and ESP: Other.
        let p = ip(&eth(0x86dd, &ipv6(59, &[0; 8])));
        assert_eq!((p.proto, p.l4, p.payload_len), (59, L4::Other, 8));
        let mut pl = ext(50, 0);
        pl.extend([0u8; 16]);
        let p = ip(&eth(0x86dd, &ipv6(60, &pl)));
        assert_eq!((p.proto, p.l4, p.payload_off, p.payload_len), (50, L4::Other, 14 + 48, 16));
    }

    #[test]
    fn ipv6_bad_ext_headers() {
        // Nine extension headers.
        let mut pl = Vec::new();
        for _ in 0..8 {
            pl.extend(ext(60, 0));
        }
        pl.extend(ext(proto::UDP, 0));
        pl.extend(udp(1, 2, b""));
        assert_eq!(parse(&eth(0x86dd, &ipv6(60, &pl))), Err(DropReason::BadIpv6ExtHeader));
        // Eight are fine.
        let p = ip(&eth(0x86dd, &ipv6(60, &pl[8..])));
        assert_eq!(p.proto, proto::UDP);
        // A header past the payload.
        let pl = ext(proto::UDP, 3);
        assert_eq!(parse(&eth(0x86dd, &ipv6(60, &pl[..16]))), Err(DropReason::BadIpv6ExtHeader));
        assert_eq!(parse(&eth(0x86dd, &ipv6(60, &[17]))), Err(DropReason::BadIpv6ExtHeader));
        assert_eq!(
            parse(&eth(0x86dd, &ipv6(44, &[17, 0, 0, 0]))),
            Err(DropReason::BadIpv6ExtHeader)
        );
        // Hop-by-hop not first.
        let mut pl = ext(0, 0);
        pl.extend(ext(proto::UDP, 0));
        pl.extend(udp(1, 2, b""));
        assert_eq!(parse(&eth(0x86dd, &ipv6(60, &pl))), Err(DropReason::BadIpv6ExtHeader));
    }

    #[test]
    fn ipv6_bad_header() {
        let mut l3 = ipv6(proto::UDP, &udp(1, 2, b"abc"));
        l3[0] = 0x40;
        assert_eq!(parse(&eth(0x86dd, &l3)), Err(DropReason::BadIpHeader));
        l3[0] = 0x60;
        l3[4..6].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(parse(&eth(0x86dd, &l3)), Err(DropReason::BadIpHeader));
        l3[4..6].copy_from_slice(&12u16.to_be_bytes());
        assert_eq!(parse(&eth(0x86dd, &l3)), Err(DropReason::Truncated));
        assert_eq!(parse(&eth(0x86dd, &l3[..39])), Err(DropReason::Truncated));
    }

    #[test]
    fn ipv6_fragments() {
        let mut pl = frag6(proto::UDP, 0, true, 0xabcd_0001);
        pl.extend(udp(7, 8, &[0x55; 32]));
        // First fragment: the UDP length is the whole datagram's.
        pl[8 + 4..8 + 6].copy_from_slice(&1000u16.to_be_bytes());
        let f = eth(0x86dd, &ipv6(44, &pl));
        let p = ip(&f);
        assert_eq!(p.frag, Fragment::First);
        assert_eq!(p.frag_id, 0xabcd_0001);
        assert_eq!(p.proto, proto::UDP);
        assert_eq!(p.l4, L4::Udp { sport: 7, dport: 8 });
        assert_eq!(p.payload_off as usize, 14 + 40 + 8 + 8);
        assert_eq!(p.payload_len, 32);

        let mut pl = frag6(proto::UDP, 5, false, 0xabcd_0001);
        pl.extend([0x66; 24]);
        let f = eth(0x86dd, &ipv6(44, &pl));
        let p = ip(&f);
        assert_eq!(p.frag, Fragment::Later);
        assert_eq!(p.frag_id, 0xabcd_0001);
        assert_eq!(p.proto, proto::UDP);
        assert_eq!(p.l4, L4::Other);
        assert_eq!(p.payload(&f), &[0x66; 24]);

        // Tiny TCP fragment.
        let mut pl = frag6(proto::TCP, 1, true, 9);
        pl.extend([0; 16]);
        assert_eq!(parse(&eth(0x86dd, &ipv6(44, &pl))), Err(DropReason::BadFragment));
        // First fragment too short for the TCP header.
        let mut pl = frag6(proto::TCP, 0, true, 9);
        pl.extend([0x50; 16]);
        assert_eq!(parse(&eth(0x86dd, &ipv6(44, &pl))), Err(DropReason::BadFragment));
        // Atomic fragment.
        let mut pl = frag6(proto::UDP, 0, false, 3);
        pl.extend(udp(1, 2, b""));
        let p = ip(&eth(0x86dd, &ipv6(44, &pl)));
        assert_eq!((p.frag, p.frag_id), (Fragment::None, 3));
        // Two fragment headers.
        let mut pl = frag6(44, 0, true, 3);
        pl.extend(frag6(proto::UDP, 0, true, 3));
        pl.extend(udp(1, 2, b""));
        assert_eq!(parse(&eth(0x86dd, &ipv6(44, &pl))), Err(DropReason::BadIpv6ExtHeader));
    }

    #[test]
    fn ipv4_fragments() {
        // First: MF, offset 0.
        let seg = tcp_segment(&Tcp {
            sport: 1,
            dport: 2,
            seq: 3,
            ack: 4,
            flags: tcp_flags::ACK,
            window: 5,
            opts: &[],
            payload: &[0x77; 16],
        });
        let f = eth(0x0800, &ipv4_full(proto::TCP, &[], 0x4242, 0x2000, &seg));
        let p = ip(&f);
        assert_eq!((p.frag, p.frag_id), (Fragment::First, 0x4242));
        assert!(matches!(p.l4, L4::Tcp(_)));
        assert_eq!(p.payload_len, 16);
        // Later: offset 5 (40 bytes), last.
        let f = eth(0x0800, &ipv4_full(proto::TCP, &[], 0x4242, 5, &[0x88; 12]));
        let p = ip(&f);
        assert_eq!(
            (p.frag, p.frag_id, p.proto, p.l4),
            (Fragment::Later, 0x4242, proto::TCP, L4::Other)
        );
        assert_eq!(p.payload_off, 34);
        assert_eq!(p.payload(&f), &[0x88; 12]);
        // Later with MF.
        let p = ip(&eth(0x0800, &ipv4_full(proto::UDP, &[], 1, 0x2000 | 3, &[0; 8])));
        assert_eq!(p.frag, Fragment::Later);
        // First fragment too short for its L4 header.
        let f = eth(0x0800, &ipv4_full(proto::TCP, &[], 1, 0x2000, &seg[..16]));
        assert_eq!(parse(&f), Err(DropReason::BadFragment));
        let mut seg2 = seg.clone();
        seg2[12] = 0xf0;
        let f = eth(0x0800, &ipv4_full(proto::TCP, &[], 1, 0x2000, &seg2[..24]));
        assert_eq!(parse(&f), Err(DropReason::BadFragment));
        let f = eth(0x0800, &ipv4_full(proto::UDP, &[], 1, 0x2000, &[0; 4]));
        assert_eq!(parse(&f), Err(DropReason::BadFragment));
        // UDP first fragment with the whole datagram's length.
        let mut u = udp(1, 2, &[0; 16]);
        u[4..6].copy_from_slice(&3000u16.to_be_bytes());
        let p = ip(&eth(0x0800, &ipv4_full(proto::UDP, &[], 1, 0x2000, &u)));
        assert_eq!((p.frag, p.payload_len), (Fragment::First, 16));
    }

    #[test]
    fn tiny_tcp_fragment_rejected() {
        let f = eth(0x0800, &ipv4_full(proto::TCP, &[], 1, 1, &[0; 16]));
        assert_eq!(parse(&f), Err(DropReason::BadFragment));
        let f = eth(0x0800, &ipv4_full(proto::TCP, &[], 1, 0x2001, &[0; 16]));
        assert_eq!(parse(&f), Err(DropReason::BadFragment));
        // Offset 1 is fine for UDP; offset 2 fine for TCP.
        assert_eq!(
            ip(&eth(0x0800, &ipv4_full(proto::UDP, &[], 1, 1, &[0; 16]))).frag,
            Fragment::Later
        );
        assert_eq!(
            ip(&eth(0x0800, &ipv4_full(proto::TCP, &[], 1, 2, &[0; 16]))).frag,
            Fragment::Later
        );
    }

    #[test]
    fn ipv4_header_checks() {
        let good = ipv4(proto::UDP, &udp(1, 2, b"abc"));
        let mut l3 = good.clone();
        l3[0] = 0x65;
        assert_eq!(parse(&eth(0x0800, &l3)), Err(DropReason::BadIpHeader));
        l3[0] = 0x44;
        assert_eq!(parse(&eth(0x0800, &l3)), Err(DropReason::BadIpHeader));
        let mut l3 = good.clone();
        l3[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(parse(&eth(0x0800, &l3)), Err(DropReason::BadIpHeader));
        l3[2..4].copy_from_slice(&(good.len() as u16 + 1).to_be_bytes());
        assert_eq!(parse(&eth(0x0800, &l3)), Err(DropReason::Truncated));
        // IHL past total length.
        let mut l3 = good.clone();
        l3[0] = 0x4f;
        assert_eq!(parse(&eth(0x0800, &l3)), Err(DropReason::BadIpHeader));
        assert_eq!(parse(&eth(0x0800, &good[..19])), Err(DropReason::Truncated));
        // Other protocol: payload is the IP payload.
        let f = eth(0x0800, &ipv4(47, &[1, 2, 3, 4, 5]));
        let p = ip(&f);
        assert_eq!((p.proto, p.l4), (47, L4::Other));
        assert_eq!(p.payload(&f), &[1, 2, 3, 4, 5]);
        // ICMPv6 over IPv4 is just another protocol.
        assert_eq!(ip(&eth(0x0800, &ipv4(58, &[0; 3]))).l4, L4::Other);
    }

    #[test]
    fn ipv4_options() {
        // NOP + Record Route (7 bytes, one slot).
        let opts = [1, 7, 7, 4, 0, 0, 0, 0];
        let f = eth(0x0800, &ipv4_full(proto::UDP, &opts, 1, 0, &udp(1, 2, b"q")));
        let p = ip(&f);
        assert_eq!(p.payload_off, 14 + 28 + 8);
        assert_eq!(p.payload(&f), b"q");
        // EOL then garbage.
        let opts = [1, 0, 0xff, 0xff];
        assert!(parse(&eth(0x0800, &ipv4_full(proto::UDP, &opts, 1, 0, &udp(1, 2, b"")))).is_ok());
        for opts in [[7u8, 1, 0, 0], [7, 0, 0, 0], [7, 9, 4, 0], [1, 1, 1, 0x44], [1, 1, 0x83, 3]] {
            let f = eth(0x0800, &ipv4_full(proto::UDP, &opts, 1, 0, &udp(1, 2, b"")));
            assert_eq!(parse(&f), Err(DropReason::BadIpOptions), "{opts:?}");
        }
    }

    #[test]
    fn icmp_echo() {
        let f = eth(0x0800, &ipv4(proto::ICMP, &echo(8, 0x1111, 7, b"ping")));
        let p = ip(&f);
        assert_eq!(p.proto, proto::ICMP);
        assert_eq!(
            p.l4,
            L4::Icmp(IcmpInfo {
                typ: 8,
                code: 0,
                echo: Some((0x1111, 7)),
                quoted: None,
                is_error: false
            })
        );
        assert_eq!(p.payload_off, 14 + 20 + 8);
        assert_eq!(p.payload(&f), b"ping");
        let L4::Icmp(i) = ip(&eth(0x0800, &ipv4(proto::ICMP, &echo(0, 1, 2, b"")))).l4 else {
            panic!()
        };
        assert_eq!(i.echo, Some((1, 2)));
        // Other types: neither echo nor error.
        let L4::Icmp(i) = ip(&eth(0x0800, &ipv4(proto::ICMP, &icmp(13, 0, [0; 4], &[0; 12])))).l4
        else {
            panic!()
        };
        assert_eq!((i.echo, i.is_error, i.quoted), (None, false, None));
        assert_eq!(
            parse(&eth(0x0800, &ipv4(proto::ICMP, &[8, 0, 0, 0, 0, 0, 0]))),
            Err(DropReason::BadIcmp)
        );
    }

    #[test]
    fn icmp_port_unreachable_quotes_udp() {
        // The UDP packet B4 -> A4 that caused the error, with a total length
        // larger than what is quoted.
        let mut inner = ipv4(proto::UDP, &udp(3333, 53, b"query"));
        inner[12..16].copy_from_slice(&B4);
        inner[16..20].copy_from_slice(&A4);
        inner[2..4].copy_from_slice(&1400u16.to_be_bytes());
        let quote = &inner[..28];
        let f = eth(0x0800, &ipv4(proto::ICMP, &icmp(3, 3, [0; 4], quote)));
        let p = ip(&f);
        let L4::Icmp(i) = p.l4 else { panic!() };
        assert_eq!((i.typ, i.code, i.is_error, i.echo), (3, 3, true, None));
        assert_eq!(
            i.quoted,
            Some(Quoted {
                family: Family::V4,
                src: v4_mapped(B4),
                dst: v4_mapped(A4),
                proto: proto::UDP,
                sport: 3333,
                dport: 53,
            })
        );
        assert_eq!(p.payload_len, 28);

        // Too little quoted: error without a quote.
        let f = eth(0x0800, &ipv4(proto::ICMP, &icmp(11, 0, [0; 4], &inner[..27])));
        let L4::Icmp(i) = ip(&f).l4 else { panic!() };
        assert!(i.is_error);
        assert_eq!(i.quoted, None);
        // Quoting an IPv6 packet: family mismatch.
        let v6 = ipv6(proto::UDP, &udp(1, 2, b""));
        let f = eth(0x0800, &ipv4(proto::ICMP, &icmp(3, 3, [0; 4], &v6)));
        let L4::Icmp(i) = ip(&f).l4 else { panic!() };
        assert_eq!(i.quoted, None);
        // Quoting an echo request: sport = dport = id.
        let mut inner = ipv4(proto::ICMP, &echo(8, 0x7777, 1, b"abc"));
        inner.truncate(28);
        let f = eth(0x0800, &ipv4(proto::ICMP, &icmp(11, 0, [0; 4], &inner)));
        let L4::Icmp(i) = ip(&f).l4 else { panic!() };
        let q = i.quoted.unwrap();
        assert_eq!((q.proto, q.sport, q.dport), (proto::ICMP, 0x7777, 0x7777));
        // Quoting GRE: no ports.
        let inner = ipv4(47, &[]);
        let f = eth(0x0800, &ipv4(proto::ICMP, &icmp(3, 1, [0; 4], &inner)));
        let L4::Icmp(i) = ip(&f).l4 else { panic!() };
        assert_eq!(i.quoted.map(|q| (q.proto, q.sport, q.dport)), Some((47, 0, 0)));
    }

    #[test]
    fn icmpv6_echo() {
        let f = eth(0x86dd, &ipv6(proto::ICMPV6, &echo(128, 42, 9, b"p6")));
        let p = ip(&f);
        assert_eq!(p.proto, proto::ICMPV6);
        let L4::Icmp(i) = p.l4 else { panic!() };
        assert_eq!((i.typ, i.echo, i.is_error), (128, Some((42, 9)), false));
        assert_eq!(p.payload(&f), b"p6");
        let L4::Icmp(i) = ip(&eth(0x86dd, &ipv6(proto::ICMPV6, &echo(129, 42, 10, b"")))).l4 else {
            panic!()
        };
        assert_eq!(i.echo, Some((42, 10)));
        // ICMPv4 type numbers mean nothing in ICMPv6, and ICMP (1) over IPv6 is Other.
        let L4::Icmp(i) = ip(&eth(0x86dd, &ipv6(proto::ICMPV6, &echo(8, 1, 1, b"")))).l4 else {
            panic!()
        };
        assert_eq!(i.echo, None);
        assert_eq!(ip(&eth(0x86dd, &ipv6(proto::ICMP, &echo(8, 1, 1, b"")))).l4, L4::Other);
        assert_eq!(
            parse(&eth(0x86dd, &ipv6(proto::ICMPV6, &[128, 0, 0]))),
            Err(DropReason::BadIcmp)
        );
    }

    #[test]
    fn icmpv6_unreachable_quotes_tcp() {
        let inner = ipv6_raw(
            proto::TCP,
            B6,
            A6,
            &tcp_segment(&Tcp {
                sport: 50000,
                dport: 80,
                seq: 1,
                ack: 0,
                flags: tcp_flags::SYN,
                window: 9,
                opts: &syn_opts(),
                payload: &[],
            }),
        );
        let f = eth(0x86dd, &ipv6(proto::ICMPV6, &icmp(1, 4, [0; 4], &inner[..48])));
        let L4::Icmp(i) = ip(&f).l4 else { panic!() };
        assert!(i.is_error);
        assert_eq!(
            i.quoted,
            Some(Quoted {
                family: Family::V6,
                src: B6,
                dst: A6,
                proto: proto::TCP,
                sport: 50000,
                dport: 80
            })
        );
        // With a destination options header in the quote.
        let mut pl = ext(proto::TCP, 0);
        pl.extend(tcp_segment(&Tcp {
            sport: 50000,
            dport: 80,
            seq: 1,
            ack: 0,
            flags: tcp_flags::SYN,
            window: 9,
            opts: &[],
            payload: &[],
        }));
        let inner = ipv6_raw(60, B6, A6, &pl);
        let f = eth(0x86dd, &ipv6(proto::ICMPV6, &icmp(2, 0, [0, 0, 5, 0xdc], &inner[..56])));
        let L4::Icmp(i) = ip(&f).l4 else { panic!() };
        assert_eq!(i.quoted.map(|q| (q.proto, q.sport, q.dport)), Some((proto::TCP, 50000, 80)));
        // Cut inside the quoted TCP header.
        let f = eth(0x86dd, &ipv6(proto::ICMPV6, &icmp(1, 4, [0; 4], &inner[..55])));
        let L4::Icmp(i) = ip(&f).l4 else { panic!() };
        assert_eq!((i.is_error, i.quoted), (true, None));
        // Quoting a non-first fragment: ports unknown.
        let mut pl = frag6(proto::UDP, 10, false, 1);
        pl.extend([0; 8]);
        let inner = ipv6_raw(44, B6, A6, &pl);
        let f = eth(0x86dd, &ipv6(proto::ICMPV6, &icmp(3, 0, [0; 4], &inner)));
        let L4::Icmp(i) = ip(&f).l4 else { panic!() };
        assert_eq!(i.quoted, None);
        // Quoting IPv4 in ICMPv6: mismatch.
        let v4 = ipv4(proto::UDP, &udp(1, 2, b""));
        let f = eth(0x86dd, &ipv6(proto::ICMPV6, &icmp(1, 0, [0; 4], &v4)));
        let L4::Icmp(i) = ip(&f).l4 else { panic!() };
        assert_eq!(i.quoted, None);
    }

    fn assert_bounded(f: &[u8]) {
        if let Ok(Parsed::Ip(p)) = parse(f) {
            assert!(usize::from(p.payload_off) + usize::from(p.payload_len) <= f.len());
        }
    }

    #[test]
    fn every_truncation_is_rejected() {
        let frames = [
            syn_frame(),
            tagged(
                &[(0x88a8, 1), (0x8100, 2)],
                0x0800,
                &ipv4(
                    proto::TCP,
                    &tcp_segment(&Tcp {
                        sport: 1,
                        dport: 2,
                        seq: 3,
                        ack: 4,
                        flags: 0x10,
                        window: 5,
                        opts: &syn_opts(),
                        payload: b"xy",
                    }),
                ),
            ),
            eth(
                0x86dd,
                &ipv6(
                    proto::TCP,
                    &tcp_segment(&Tcp {
                        sport: 1,
                        dport: 2,
                        seq: 3,
                        ack: 4,
                        flags: 0x10,
                        window: 5,
                        opts: &syn_opts(),
                        payload: b"xy",
                    }),
                ),
            ),
            eth(0x0800, &ipv4(proto::UDP, &udp(1, 2, b"abcdef"))),
            eth(
                0x0800,
                &ipv4_full(proto::UDP, &[1, 7, 7, 4, 0, 0, 0, 0], 1, 0, &udp(1, 2, b"abcdef")),
            ),
        ];
        for full in &frames {
            assert!(matches!(parse(full), Ok(Parsed::Ip(_))));
            for n in 0..full.len() {
                let r = parse(&full[..n]);
                assert!(
                    matches!(r, Err(_) | Ok(Parsed::NonIp { .. })),
                    "prefix {n} of {} parsed as {r:?}",
                    full.len()
                );
            }
        }
    }

    #[test]
    fn mutations_never_panic() {
        let mut frames = vec![syn_frame()];
        let inner = ipv6_raw(
            proto::TCP,
            B6,
            A6,
            &tcp_segment(&Tcp {
                sport: 50000,
                dport: 80,
                seq: 1,
                ack: 0,
                flags: 2,
                window: 9,
                opts: &syn_opts(),
                payload: &[],
            }),
        );
        frames.push(eth(0x86dd, &ipv6(proto::ICMPV6, &icmp(1, 4, [0; 4], &inner))));
        let mut inner = ipv4(proto::UDP, &udp(3333, 53, b"query"));
        inner.truncate(28);
        frames.push(eth(0x0800, &ipv4(proto::ICMP, &icmp(3, 3, [0; 4], &inner))));
        let mut pl = ext(60, 0);
        pl.extend(frag6(proto::UDP, 0, true, 3));
        pl.extend(udp(1, 2, b"abc"));
        frames.push(eth(0x86dd, &ipv6(0, &pl)));
        for full in &frames {
            for i in 0..full.len() {
                for v in [0u8, 1, 2, 0x0f, 0x40, 0x45, 0x60, 0x7f, 0x80, 0xff] {
                    let mut f = full.clone();
                    f[i] = v;
                    assert_bounded(&f);
                    for n in [i, i + 1] {
                        assert_bounded(&f[..n.min(f.len())]);
                    }
                }
            }
        }
    }
}
