//! Arbitrary bytes through the full frame parser (`lazarus_core::parse::parse`).
//!
//! Checked on every input, beyond "never panics" (the contract in
//! lazarus-core/src/parse/mod.rs):
//! * the payload the parser describes lies inside the frame, inside the IP
//!   packet's own length (Ethernet padding excluded), and after the headers;
//! * `IpPacket::payload` returns exactly that sub-slice of the input;
//! * the addresses and VLAN id are the ones at the header offsets;
//! * a later fragment has no L4 header; a window scale is clamped to 14;
//! * appending bytes after a parsed IP packet (Ethernet padding) changes nothing;
//! * whatever the packet path's shortcut (`lazarus_core::parse::v4_tcp`) reads,
//!   the general parser reads the same: an untagged, unfragmented IPv4/TCP
//!   packet with those addresses, that header and that payload.
#![no_main]

use lazarus_core::parse::{parse, proto, v4_mapped, v4_tcp, Family, Fragment, Parsed, L4};
use libfuzzer_sys::fuzz_target;

fn be16(b: &[u8], off: usize) -> usize {
    usize::from(u16::from_be_bytes([b[off], b[off + 1]]))
}

fuzz_target!(|frame: &[u8]| {
    if let Some(s) = v4_tcp(frame) {
        let parsed = parse(frame);
        let Ok(Parsed::Ip(q)) = parsed else {
            panic!("the shortcut read {s:?}, the parser {parsed:?}");
        };
        assert_eq!(
            (q.vlan, q.family, q.proto, q.frag),
            (0, Family::V4, proto::TCP, Fragment::None)
        );
        assert_eq!(
            (q.src, q.dst),
            (v4_mapped(s.src.to_be_bytes()), v4_mapped(s.dst.to_be_bytes()))
        );
        assert_eq!(q.l4, L4::Tcp(s.tcp));
        assert_eq!((q.payload_off, q.payload_len), (s.payload_off, s.payload_len));
    }

    let Ok(Parsed::Ip(p)) = parse(frame) else {
        return;
    };

    // Where the IP header is, recomputed independently of the parser.
    let mut l3 = 14;
    let mut ethertype = be16(frame, 12);
    let mut vlan = 0u32;
    while (ethertype == 0x8100 || ethertype == 0x88a8) && l3 < 22 {
        // The outer id in bits 0..12, the inner one in 12..24.
        vlan |= ((be16(frame, l3) & 0x0fff) as u32) << (12 * (l3 - 14) / 4);
        ethertype = be16(frame, l3 + 2);
        l3 += 4;
    }
    assert_eq!(p.vlan, vlan);
    let (ip_end, min_hlen) = match p.family {
        Family::V4 => {
            assert_eq!(ethertype, 0x0800);
            assert_eq!(p.src, v4_mapped(frame[l3 + 12..l3 + 16].try_into().unwrap()));
            assert_eq!(p.dst, v4_mapped(frame[l3 + 16..l3 + 20].try_into().unwrap()));
            (l3 + be16(frame, l3 + 2), 20)
        }
        Family::V6 => {
            assert_eq!(ethertype, 0x86dd);
            assert_eq!(p.src[..], frame[l3 + 8..l3 + 24]);
            assert_eq!(p.dst[..], frame[l3 + 24..l3 + 40]);
            (l3 + 40 + be16(frame, l3 + 4), 40)
        }
    };
    assert!(ip_end <= frame.len(), "IP end {ip_end} past frame {}", frame.len());

    let off = usize::from(p.payload_off);
    let len = usize::from(p.payload_len);
    let l4_hlen = match p.l4 {
        L4::Tcp(t) => {
            assert!(t.opts.wscale.is_none_or(|w| w <= 14));
            20
        }
        L4::Udp { .. } | L4::Icmp(_) => 8,
        L4::Other => 0,
    };
    assert!(
        off >= l3 + min_hlen + l4_hlen,
        "payload at {off} inside the headers (l3 {l3}, l4 header {l4_hlen})"
    );
    assert!(off + len <= ip_end, "payload {off}+{len} past IP end {ip_end}");
    if p.frag == Fragment::Later {
        assert_eq!(p.l4, L4::Other);
    }

    // The only slice the parser hands out: exactly frame[off..off + len].
    let pl = p.payload(frame);
    assert_eq!(pl.len(), len);
    if len > 0 {
        assert_eq!(pl.as_ptr(), frame[off..].as_ptr());
    }

    // Ethernet padding after the IP packet is not part of it.
    let mut padded = frame.to_vec();
    padded.extend_from_slice(&[0xa5; 7]);
    assert_eq!(parse(&padded), Ok(Parsed::Ip(p)));
});
