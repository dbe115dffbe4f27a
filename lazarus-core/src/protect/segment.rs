//! The segments the firewall sends in a protected connection's name (the
//! lingering socket's reset, the replayed SYN, replayed data, ACKs), written
//! as whole Ethernet frames into a buffer the caller owns, IPv4 or IPv6.

use crate::parse::checksum::checksum_bytes;
use crate::parse::{is_v4_mapped, proto, tcp_flags, Addr};
use std::ops::Range;

/// The SYN options a client chose, replayed as they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SynOptions {
    /// 0 when the client sent none.
    pub mss: u16,
    pub wscale: Option<u8>,
    pub sack_perm: bool,
}

/// One segment to send; `payload` is a range of the client log's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Set on a SYN: its options.
    pub syn: Option<SynOptions>,
    /// (TSval, TSecr) when the connection uses timestamps.
    pub ts: Option<(u32, u32)>,
    pub payload: Range<usize>,
}

impl Segment {
    /// The part of a received segment, `t` its header, from payload offset
    /// `at` on, as its sender would have sent it alone (its payload is the
    /// caller's to give).
    pub fn tail_of(t: &crate::parse::TcpHdr, at: usize) -> Segment {
        Segment {
            seq: t.seq.wrapping_add(at as u32),
            ack: t.ack,
            flags: t.flags,
            window: t.window,
            syn: None,
            ts: t.opts.timestamp,
            payload: 0..0,
        }
    }

    /// A bare RST at `seq` (no ACK): what a socket takes only at exactly
    /// the sequence number it expects next (RFC 5961 §3.2).
    pub fn reset(seq: u32) -> Segment {
        Segment {
            seq,
            ack: 0,
            flags: tcp_flags::RST,
            window: 0,
            syn: None,
            ts: None,
            payload: 0..0,
        }
    }
}

/// The VLAN tags a connection's frames carry, outermost first: the
/// firewall's own frames in its name carry the same, both ways (the
/// firewall bridges frames with their tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VlanTags {
    /// 0, 1 or 2.
    count: u8,
    /// Which tags' TPID is 802.1ad's (0x88a8), not 802.1Q's.
    ad: [bool; 2],
    /// Each tag's control information (priority, DEI, VLAN id).
    tci: [u16; 2],
}

const TPID_Q: u16 = 0x8100;
const TPID_AD: u16 = 0x88a8;

impl VlanTags {
    pub const UNTAGGED: VlanTags = VlanTags { count: 0, ad: [false; 2], tci: [0; 2] };

    /// Bytes of the encoding in a protection record.
    pub const ENCODED: usize = 5;

    /// A frame's tags (at most two, as the parser takes) and where its
    /// ethertype sits; None for a frame too short or with more tags.
    #[inline]
    pub fn of_frame(f: &[u8]) -> Option<(VlanTags, usize)> {
        let mut tags = VlanTags::default();
        let mut at = 12;
        loop {
            let t = u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]);
            if t != TPID_Q && t != TPID_AD {
                return Some((tags, at));
            }
            if tags.count == 2 {
                return None;
            }
            tags.ad[usize::from(tags.count)] = t == TPID_AD;
            tags.tci[usize::from(tags.count)] =
                u16::from_be_bytes([*f.get(at + 2)?, *f.get(at + 3)?]);
            tags.count += 1;
            at += 4;
        }
    }

    /// The VLAN ids as the tracker keys a connection by them: the outer's,
    /// then the inner's above it.
    #[inline]
    pub fn id(&self) -> u32 {
        let id = |i: usize| u32::from(self.tci[i] & 0x0fff);
        match self.count {
            0 => 0,
            1 => id(0),
            _ => id(0) | id(1) << 12,
        }
    }

    /// The VLAN the tags name, priority and DEI left out: their count,
    /// TPIDs and ids, never 0.
    pub fn vlan_key(&self) -> u64 {
        1 << 63
            | u64::from(self.count) << 40
            | u64::from(self.ad[0]) << 38
            | u64::from(self.ad[1]) << 39
            | u64::from(self.id())
    }

    /// Bytes the tags take in a frame.
    #[inline]
    pub fn len(&self) -> usize {
        4 * usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes the tags (TPID, TCI each) at the start of `out`.
    fn write(&self, out: &mut [u8]) {
        for i in 0..usize::from(self.count) {
            let tpid = if self.ad[i] { TPID_AD } else { TPID_Q };
            out[4 * i..4 * i + 2].copy_from_slice(&tpid.to_be_bytes());
            out[4 * i + 2..4 * i + 4].copy_from_slice(&self.tci[i].to_be_bytes());
        }
    }

    /// For a protection record: the count and each tag's 802.1ad bit,
    /// then the TCIs little-endian; all zero untagged.
    pub fn encode(&self) -> [u8; Self::ENCODED] {
        let mut b = [0; Self::ENCODED];
        b[0] = self.count | u8::from(self.ad[0]) << 2 | u8::from(self.ad[1]) << 3;
        b[1..3].copy_from_slice(&self.tci[0].to_le_bytes());
        b[3..5].copy_from_slice(&self.tci[1].to_le_bytes());
        b
    }

    /// None for bytes no build writes.
    pub fn decode(b: &[u8; Self::ENCODED]) -> Option<VlanTags> {
        let count = b[0] & 3;
        let tags = VlanTags {
            count,
            ad: [b[0] & 4 != 0, b[0] & 8 != 0],
            tci: [u16::from_le_bytes([b[1], b[2]]), u16::from_le_bytes([b[3], b[4]])],
        };
        // Nothing set for a tag that is not there, as `encode` leaves it.
        let n = usize::from(count);
        let clean = count <= 2
            && b[0] & !15 == 0
            && tags.ad[n.min(2)..].iter().all(|&a| !a)
            && tags.tci[n.min(2)..].iter().all(|&t| t == 0);
        clean.then_some(tags)
    }
}

/// Who the segment is from and to, as the client's own frames had it.
/// Addresses as the parser keeps them: IPv4 ones mapped into IPv6's
/// (`::ffff:a.b.c.d`); both of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: Addr,
    pub dst_ip: Addr,
    pub sport: u16,
    pub dport: u16,
    pub tags: VlanTags,
}

impl Endpoints {
    /// The other way: from the server to the client.
    pub fn reversed(&self) -> Endpoints {
        Endpoints {
            src_mac: self.dst_mac,
            dst_mac: self.src_mac,
            src_ip: self.dst_ip,
            dst_ip: self.src_ip,
            sport: self.dport,
            dport: self.sport,
            tags: self.tags,
        }
    }

    /// Whether they are IPv4 (mapped) addresses.
    pub fn is_v4(&self) -> bool {
        is_v4_mapped(&self.src_ip)
    }

    /// Where the TCP header of a frame `write_segment` writes for them starts.
    pub fn tcp_offset(&self) -> usize {
        ETH + self.tags.len() + if self.is_v4() { IP } else { IP6 }
    }
}

const ETH: usize = 14;
const IP: usize = 20;
const IP6: usize = 40;
const TCP: usize = 20;
/// The most a segment's header takes: Ethernet, IPv6, TCP and 20 bytes of
/// options (a SYN's MSS, SACK-permitted, timestamps and window scale),
/// untagged (each VLAN tag adds 4; IPv4 takes 20 less).
pub const MAX_HEADERS: usize = ETH + IP6 + TCP + 20;

/// Writes `seg` with `payload` (its bytes) into `buf` as one frame, IPv4 or
/// IPv6 as the endpoints are; returns its length, or None when `buf` is too
/// small.
pub fn write_segment(
    buf: &mut [u8],
    e: &Endpoints,
    seg: &Segment,
    payload: &[u8],
) -> Option<usize> {
    let mut opts = [0u8; 20];
    let mut n = 0;
    let mut put = |b: &[u8]| {
        opts[n..n + b.len()].copy_from_slice(b);
        n += b.len();
    };
    if let Some(s) = seg.syn {
        if s.mss != 0 {
            put(&[2, 4]);
            put(&s.mss.to_be_bytes());
        }
    }
    // SACK-permitted fills the two bytes before the timestamps, as Linux
    // lays a SYN out; NOPs pad where either is alone.
    let sack_perm = seg.syn.is_some_and(|s| s.sack_perm);
    match (sack_perm, seg.ts) {
        (true, None) => put(&[1, 1, 4, 2]),
        (sack, Some((val, ecr))) => {
            put(if sack { &[4, 2, 8, 10] } else { &[1, 1, 8, 10] });
            put(&val.to_be_bytes());
            put(&ecr.to_be_bytes());
        }
        (false, None) => {}
    }
    if let Some(ws) = seg.syn.and_then(|s| s.wscale) {
        put(&[1, 3, 3, ws]);
    }
    let tcp_len = TCP + n + payload.len();
    let v4 = e.is_v4();
    let l3 = ETH + e.tags.len();
    let ip_len = if v4 { IP } else { IP6 };
    let total = l3 + ip_len + tcp_len;
    let frame = buf.get_mut(..total)?;
    frame[..6].copy_from_slice(&e.dst_mac);
    frame[6..12].copy_from_slice(&e.src_mac);
    e.tags.write(&mut frame[12..]);
    let ethertype: u16 = if v4 { 0x0800 } else { 0x86dd };
    frame[l3 - 2..l3].copy_from_slice(&ethertype.to_be_bytes());
    let ip = &mut frame[l3..l3 + ip_len];
    ip.fill(0);
    // The TCP checksum's pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1).
    let mut pseudo = [0u8; 40];
    let pseudo = if v4 {
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((IP + tcp_len) as u16).to_be_bytes());
        ip[6] = 0x40; // don't fragment, as Linux sends TCP
        ip[8] = 64;
        ip[9] = proto::TCP;
        ip[12..16].copy_from_slice(&e.src_ip[12..]);
        ip[16..20].copy_from_slice(&e.dst_ip[12..]);
        let c = checksum_bytes(&[ip]);
        ip[10..12].copy_from_slice(&c);
        pseudo[..4].copy_from_slice(&e.src_ip[12..]);
        pseudo[4..8].copy_from_slice(&e.dst_ip[12..]);
        pseudo[9] = proto::TCP;
        pseudo[10..12].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        &pseudo[..12]
    } else {
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        ip[6] = proto::TCP;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&e.src_ip);
        ip[24..40].copy_from_slice(&e.dst_ip);
        pseudo[..32].copy_from_slice(&ip[8..40]);
        pseudo[32..36].copy_from_slice(&(tcp_len as u32).to_be_bytes());
        pseudo[39] = proto::TCP;
        &pseudo[..]
    };
    let tcp = &mut frame[l3 + ip_len..];
    tcp[..2].copy_from_slice(&e.sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&e.dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seg.seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&seg.ack.to_be_bytes());
    tcp[12] = (((TCP + n) / 4) as u8) << 4;
    tcp[13] = seg.flags;
    tcp[14..16].copy_from_slice(&seg.window.to_be_bytes());
    tcp[16..20].fill(0);
    tcp[TCP..TCP + n].copy_from_slice(&opts[..n]);
    tcp[TCP + n..].copy_from_slice(payload);
    let c = checksum_bytes(&[pseudo, tcp]);
    tcp[16..18].copy_from_slice(&c);
    debug_assert!(
        seg.flags
            & !(tcp_flags::FIN | tcp_flags::SYN | tcp_flags::RST | tcp_flags::PSH | tcp_flags::ACK)
            == 0
    );
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::checksum::{verify, RxChecksums};
    use crate::parse::{parse, Parsed, L4};

    const E: Endpoints = Endpoints {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src_ip: crate::parse::v4_mapped([10, 0, 0, 2]),
        dst_ip: crate::parse::v4_mapped([10, 0, 0, 1]),
        sport: 40000,
        dport: 7,
        tags: VlanTags::UNTAGGED,
    };

    /// What the firewall's own parser and checksum check make of a frame.
    fn read_back(frame: &[u8]) -> crate::parse::TcpHdr {
        let Ok(Parsed::Ip(p)) = parse(frame) else { panic!("not parsed: {frame:?}") };
        verify(frame, &p, RxChecksums::default()).expect("checksums");
        let L4::Tcp(t) = p.l4 else { panic!("not TCP") };
        t
    }

    #[test]
    fn a_replayed_syn_carries_the_clients_options() {
        let seg = Segment {
            seq: 7,
            ack: 0,
            flags: tcp_flags::SYN,
            window: 64240,
            syn: Some(SynOptions { mss: 1460, wscale: Some(7), sack_perm: true }),
            ts: Some((123, 0)),
            payload: 0..0,
        };
        let mut buf = [0u8; 128];
        let n = write_segment(&mut buf, &E, &seg, &[]).unwrap();
        assert_eq!(n, MAX_HEADERS - 20, "IPv4");
        let v6 = Endpoints {
            src_ip: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            dst_ip: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            ..E
        };
        let mut buf6 = [0u8; 128];
        let n6 = write_segment(&mut buf6, &v6, &seg, &[]).unwrap();
        assert_eq!(n6, MAX_HEADERS);
        let t6 = read_back(&buf6[..n6]);
        assert_eq!(
            (t6.sport, t6.seq, t6.opts.mss, t6.opts.timestamp),
            (40000, 7, 1460, Some((123, 0)))
        );
        let t = read_back(&buf[..n]);
        assert_eq!(
            (t.sport, t.dport, t.seq, t.flags, t.window),
            (40000, 7, 7, tcp_flags::SYN, 64240)
        );
        assert_eq!(t.opts.mss, 1460);
        assert_eq!(t.opts.wscale, Some(7));
        assert!(t.opts.sack_perm);
        assert_eq!(t.opts.timestamp, Some((123, 0)));
    }

    #[test]
    fn a_tagged_connections_segment_carries_its_tags() {
        for (tags, wire) in [
            (&[(0x8100u16, 0x2064u16)][..], 1),
            (&[(0x88a8, 0x0007), (0x8100, 0xe123)][..], 2),
            (&[(0x8100, 5), (0x8100, 6)][..], 2),
            (&[(0x88a8, 7), (0x88a8, 0x2064)][..], 2),
            (&[(0x8100, 7), (0x88a8, 0x2064)][..], 2),
        ] {
            let received = crate::frames::ether_tagged(tags, 0x0800, &[0; 40]);
            let (t, at) = VlanTags::of_frame(&received).unwrap();
            assert_eq!((t.len(), at), (4 * wire, 12 + 4 * wire));
            assert_eq!(VlanTags::decode(&t.encode()), Some(t));
            let e = Endpoints { tags: t, ..E };
            let seg = Segment { flags: tcp_flags::ACK, payload: 0..2, ..Segment::reset(9) };
            let mut buf = [0u8; 128];
            let n = write_segment(&mut buf, &e, &seg, b"hi").unwrap();
            assert_eq!(buf[12..at], received[12..at], "the tags as received");
            assert_eq!(e.tcp_offset(), at + 2 + IP);
            let got = read_back(&buf[..n]);
            assert_eq!((got.seq, got.flags), (9, tcp_flags::ACK));
        }
        // Three tags: not a frame protection takes (nor the parser).
        let three =
            crate::frames::ether_tagged(&[(0x8100, 1), (0x8100, 2), (0x8100, 3)], 0x0800, &[0; 40]);
        assert_eq!(VlanTags::of_frame(&three), None);
        assert_eq!(VlanTags::decode(&[3, 0, 0, 0, 0]), None);
        assert_eq!(VlanTags::decode(&[1, 5, 0, 9, 0]), None, "a second TCI behind one tag");
        assert_eq!(VlanTags::decode(&[1 | 8, 5, 0, 0, 0]), None, "a second TPID behind one tag");
        assert_eq!(VlanTags::decode(&[0; 5]), Some(VlanTags::default()));
    }

    #[test]
    fn data_at_an_odd_length_has_a_valid_checksum() {
        let seg = Segment {
            seq: u32::MAX,
            ack: 99,
            flags: tcp_flags::ACK | tcp_flags::PSH,
            window: 501,
            syn: None,
            ts: Some((u32::MAX, 1)),
            payload: 0..5,
        };
        let mut buf = [0u8; 128];
        let n = write_segment(&mut buf, &E, &seg, b"hello").unwrap();
        let t = read_back(&buf[..n]);
        assert_eq!((t.seq, t.ack, t.opts.timestamp), (u32::MAX, 99, Some((u32::MAX, 1))));
        assert_eq!(&buf[n - 5..n], b"hello");
        assert!(write_segment(&mut buf[..n - 1], &E, &seg, b"hello").is_none());
    }
}
