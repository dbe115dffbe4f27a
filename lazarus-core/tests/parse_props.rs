//! Property tests of the frame parser: it never panics, never describes a
//! payload outside the frame, and reads back exactly what a well-formed
//! generated frame carries.

use lazarus_core::frames;
use lazarus_core::parse::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum GenL4 {
    Tcp {
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        mss: Option<u16>,
        wscale: Option<u8>,
        sack_perm: bool,
        timestamp: Option<(u32, u32)>,
    },
    Udp,
}

#[derive(Debug, Clone)]
struct GenFrame {
    vlan: Option<(u16, Option<u16>)>,
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    ip_id: u16,
    sport: u16,
    dport: u16,
    l4: GenL4,
    payload: Vec<u8>,
    padding: usize,
}

fn tcp_options(
    mss: Option<u16>,
    wscale: Option<u8>,
    sack_perm: bool,
    timestamp: Option<(u32, u32)>,
) -> Vec<u8> {
    let mut o = Vec::new();
    if let Some(m) = mss {
        o.extend_from_slice(&[2, 4]);
        o.extend_from_slice(&m.to_be_bytes());
    }
    if sack_perm {
        o.extend_from_slice(&[4, 2]);
    }
    if let Some((v, e)) = timestamp {
        o.extend_from_slice(&[8, 10]);
        o.extend_from_slice(&v.to_be_bytes());
        o.extend_from_slice(&e.to_be_bytes());
    }
    if let Some(w) = wscale {
        o.extend_from_slice(&[1, 3, 3, w]);
    }
    while o.len() % 4 != 0 {
        o.push(0);
    }
    o
}

/// Builds the frame; returns it and where the L4 payload starts.
fn build(g: &GenFrame) -> (Vec<u8>, usize) {
    let (proto, l4) = match &g.l4 {
        GenL4::Tcp { seq, ack, flags, window, mss, wscale, sack_perm, timestamp } => {
            let opts = tcp_options(*mss, *wscale, *sack_perm, *timestamp);
            let t = frames::Tcp {
                sport: g.sport,
                dport: g.dport,
                seq: *seq,
                ack: *ack,
                flags: *flags,
                window: *window,
                opts: &opts,
                payload: &g.payload,
            };
            (proto::TCP, frames::tcp_segment(&t))
        }
        GenL4::Udp => (proto::UDP, frames::udp_datagram(g.sport, g.dport, &g.payload)),
    };
    let l4_hlen = l4.len() - g.payload.len();
    let (ethertype, l3) = if g.v6 {
        (0x86dd, frames::ipv6(proto, g.src, g.dst, &l4))
    } else {
        let v4 = |a: &[u8; 16]| <[u8; 4]>::try_from(&a[12..]).unwrap();
        let h = frames::Ipv4 { id: g.ip_id, ..frames::Ipv4::new(proto, v4(&g.src), v4(&g.dst)) };
        (0x0800, frames::ipv4_packet(&h, &l4))
    };
    let mut tags = Vec::new();
    if let Some((outer, inner)) = g.vlan {
        tags.push((0x88a8, outer | 0xe000));
        if let Some(i) = inner {
            tags.push((0x8100, i));
        }
    }
    let mut f = frames::ether_tagged(&tags, ethertype, &l3);
    let payload_off = f.len() - l4.len() + l4_hlen;
    f.resize(f.len() + g.padding, 0);
    (f, payload_off)
}

fn gen_l4() -> impl Strategy<Value = GenL4> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            any::<u8>(),
            any::<u16>(),
            proptest::option::of(any::<u16>()),
            proptest::option::of(0u8..=14),
            any::<bool>(),
            proptest::option::of(any::<(u32, u32)>()),
        )
            .prop_map(|(seq, ack, flags, window, mss, wscale, sack_perm, timestamp)| {
                GenL4::Tcp {
                    seq,
                    ack,
                    flags,
                    window,
                    mss: mss.filter(|&m| m != 0),
                    wscale,
                    sack_perm,
                    timestamp,
                }
            }),
        Just(GenL4::Udp),
    ]
}

fn gen_frame() -> impl Strategy<Value = GenFrame> {
    (
        proptest::option::of((0u16..4096, proptest::option::of(0u16..4096))),
        any::<bool>(),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<u16>(),
        any::<u16>(),
        any::<u16>(),
        gen_l4(),
        proptest::collection::vec(any::<u8>(), 0..300),
        0usize..20,
    )
        .prop_map(|(vlan, v6, src, dst, ip_id, sport, dport, l4, payload, padding)| {
            let (src, dst) = if v6 {
                (src, dst)
            } else {
                (
                    v4_mapped([src[0], src[1], src[2], src[3]]),
                    v4_mapped([dst[0], dst[1], dst[2], dst[3]]),
                )
            };
            GenFrame { vlan, v6, src, dst, ip_id, sport, dport, l4, payload, padding }
        })
}

fn check_bounds(frame: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(Parsed::Ip(p)) = parse(frame) {
        prop_assert!(
            usize::from(p.payload_off) + usize::from(p.payload_len) <= frame.len(),
            "payload {}+{} past frame of {}",
            p.payload_off,
            p.payload_len,
            frame.len()
        );
        prop_assert_eq!(p.payload(frame).len(), usize::from(p.payload_len));
    }
    Ok(())
}

/// Whenever the fast path reads a segment, the general parser reads the same
/// packet: an untagged, unfragmented IPv4/TCP packet with these addresses,
/// this header and this payload.
fn check_fast(frame: &[u8]) -> Result<bool, TestCaseError> {
    let Some(s) = v4_tcp(frame) else { return Ok(false) };
    let parsed = parse(frame);
    let Ok(Parsed::Ip(p)) = parsed else {
        return Err(TestCaseError::fail(format!(
            "fast path read {s:?}, general parser {parsed:?}"
        )));
    };
    prop_assert_eq!(p.vlan, 0);
    prop_assert_eq!(p.family, Family::V4);
    prop_assert_eq!(p.proto, proto::TCP);
    prop_assert_eq!(p.frag, Fragment::None);
    prop_assert_eq!(p.src, v4_mapped(s.src.to_be_bytes()));
    prop_assert_eq!(p.dst, v4_mapped(s.dst.to_be_bytes()));
    prop_assert_eq!(p.l4, L4::Tcp(s.tcp));
    prop_assert_eq!((p.payload_off, p.payload_len), (s.payload_off, s.payload_len));
    Ok(true)
}

/// The shape the fast path takes: untagged IPv4/TCP, no IP options, and no
/// TCP options or Linux's NOP, NOP, timestamp.
fn fast_shaped() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<[u8; 8]>(),
        any::<[u16; 3]>(),
        any::<[u32; 2]>(),
        any::<u8>(),
        proptest::option::of(any::<(u32, u32)>()),
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..100),
        0usize..20,
    )
        .prop_map(
            |(addrs, [sport, dport, window], [seq, ack], flags, ts, df, payload, padding)| {
                let opts: Vec<u8> = match ts {
                    Some((v, e)) => {
                        [&[1, 1, 8, 10][..], &v.to_be_bytes(), &e.to_be_bytes()].concat()
                    }
                    None => Vec::new(),
                };
                let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00, 0x45, 0];
                f.extend_from_slice(&((40 + opts.len() + payload.len()) as u16).to_be_bytes());
                f.extend_from_slice(&[0, 7, if df { 0x40 } else { 0 }, 0, 64, proto::TCP, 0, 0]);
                f.extend_from_slice(&addrs);
                f.extend_from_slice(&sport.to_be_bytes());
                f.extend_from_slice(&dport.to_be_bytes());
                f.extend_from_slice(&seq.to_be_bytes());
                f.extend_from_slice(&ack.to_be_bytes());
                f.extend_from_slice(&[(((20 + opts.len()) / 4) as u8) << 4, flags]);
                f.extend_from_slice(&window.to_be_bytes());
                f.extend_from_slice(&[0, 0, 0, 0]);
                f.extend_from_slice(&opts);
                f.extend_from_slice(&payload);
                f.resize(f.len() + padding, 0);
                f
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The fast path takes every frame of its shape, and reads each as the
    /// general parser does; mutated and cut, it reads the same or declines.
    #[test]
    fn the_fast_path_reads_what_the_general_parser_reads(
        frame in fast_shaped(),
        muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        prop_assert!(check_fast(&frame)?, "a frame of the fast path's shape was declined");
        let mut m = frame.clone();
        for (idx, val) in &muts {
            let i = idx.index(m.len());
            m[i] = *val;
            check_fast(&m)?;
        }
        check_fast(&frame[..cut.index(frame.len() + 1)])?;
    }

    /// Frames of every shape: where the fast path reads one, it agrees.
    #[test]
    fn the_fast_path_agrees_on_generated_frames(g in gen_frame()) {
        let (frame, _) = build(&g);
        let taken = check_fast(&frame)?;
        let plain_v4_tcp = !g.v6 && g.vlan.is_none() && matches!(g.l4, GenL4::Tcp { mss: None, wscale: None, sack_perm: false, timestamp: None, .. });
        prop_assert_eq!(taken, plain_v4_tcp);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        check_bounds(&bytes)?;
    }

    /// Arbitrary bytes behind a plausible Ethernet/IP start, so the deeper
    /// layers get exercised too.
    #[test]
    fn arbitrary_ip_bytes_never_panic(
        v6 in any::<bool>(),
        proto_nr in prop_oneof![Just(1u8), Just(6), Just(17), Just(58), Just(0), Just(44), Just(60), any::<u8>()],
        rest in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut f = vec![0u8; 12];
        if v6 {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(rest.len() as u16).to_be_bytes());
            f.extend_from_slice(&[proto_nr, 64]);
            f.extend_from_slice(&[0; 32]);
        } else {
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            f.extend_from_slice(&((20 + rest.len()) as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0, 64, proto_nr, 0, 0]);
            f.extend_from_slice(&[0; 8]);
        }
        f.extend_from_slice(&rest);
        check_bounds(&f)?;
    }

    #[test]
    fn well_formed_frames_round_trip(g in gen_frame()) {
        let (frame, payload_off) = build(&g);
        let parsed = parse(&frame);
        let Ok(Parsed::Ip(p)) = parsed else {
            return Err(TestCaseError::fail(format!("{parsed:?}")));
        };
        let vlans = g.vlan.map_or(0, |(outer, inner)| u32::from(outer) | u32::from(inner.unwrap_or(0)) << 12);
        prop_assert_eq!(p.vlan, vlans, "the outer VLAN id, and the inner one above it");
        prop_assert_eq!(p.family, if g.v6 { Family::V6 } else { Family::V4 });
        prop_assert_eq!(p.src, g.src);
        prop_assert_eq!(p.dst, g.dst);
        prop_assert_eq!(p.frag, Fragment::None);
        prop_assert_eq!(p.frag_id, if g.v6 { 0 } else { u32::from(g.ip_id) });
        prop_assert_eq!(usize::from(p.payload_off), payload_off);
        prop_assert_eq!(p.payload(&frame), &g.payload[..]);
        match g.l4 {
            GenL4::Tcp { seq, ack, flags, window, mss, wscale, sack_perm, timestamp } => {
                prop_assert_eq!(p.proto, proto::TCP);
                prop_assert_eq!(p.l4, L4::Tcp(TcpHdr {
                    sport: g.sport,
                    dport: g.dport,
                    seq,
                    ack,
                    flags,
                    window,
                    opts: TcpOpts { mss: mss.unwrap_or(0), wscale, sack_perm, timestamp },
                }));
            }
            GenL4::Udp => {
                prop_assert_eq!(p.proto, proto::UDP);
                prop_assert_eq!(p.l4, L4::Udp { sport: g.sport, dport: g.dport });
            }
        }
    }

    #[test]
    fn mutated_frames_never_panic(
        g in gen_frame(),
        muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let (mut frame, _) = build(&g);
        // One byte alone first, then the others accumulated.
        for (idx, val) in &muts {
            let i = idx.index(frame.len());
            let mut one = frame.clone();
            one[i] = *val;
            check_bounds(&one)?;
            frame[i] = *val;
        }
        check_bounds(&frame)?;
        if let Some(c) = cut {
            check_bounds(&frame[..c.index(frame.len() + 1)])?;
        }
    }
}
