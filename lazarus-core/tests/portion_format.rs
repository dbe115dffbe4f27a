//! The portion format pinned: the bytes each module writes for a fixed
//! portion. A change to any encoding without a bump of `PORTION_FORMAT` and
//! a translation from the previous format fails here (docs/CHECKPOINT.md,
//! "Format versions"): a restarted dataplane must read what the one before
//! it wrote.

use lazarus_core::conn::{ConnKey, Endpoint};
use lazarus_core::modules::ftp::{Expectation, FtpPortion, FtpRecord, CHECKPOINT_EXPECTATIONS};
use lazarus_core::modules::icmp::IcmpPortion;
use lazarus_core::modules::ip::{IpPortion, IpRecord};
use lazarus_core::modules::tcp::{self, TcpPortion};
use lazarus_core::modules::udp::UdpPortion;
use lazarus_core::parse::{v4_mapped, Family, TcpHdr, TcpOpts};
use lazarus_core::portion::{Portion, PortionError, PORTION_FORMAT, PORTION_FORMAT_OLDEST};

fn hex<P: Portion>(p: &P) -> String {
    let mut b = vec![0u8; P::MAX_LEN];
    let n = p.encode(&mut b).expect("fits its slot");
    let back = P::decode(&b[..n]).expect("reads back");
    let mut again = vec![0u8; P::MAX_LEN];
    assert_eq!(back.encode(&mut again).unwrap(), n, "{:?} round trip", P::MODULE);
    assert_eq!(&again[..n], &b[..n], "{:?} round trip", P::MODULE);
    b[..n].iter().map(|x| format!("{x:02x}")).collect()
}

fn samples() -> Vec<(&'static str, String)> {
    let (key, lo) = ConnKey::canonical(
        Family::V4,
        6,
        Endpoint { addr: v4_mapped([10, 0, 0, 1]), port: 40000 },
        Endpoint { addr: v4_mapped([10, 0, 0, 2]), port: 21 },
        3,
        // Outer VLAN 7, inner (QinQ) 9.
        7 | 9 << 12,
    );
    let mut ip = IpPortion::new(lo, 0x2345, 1234);
    ip.packets = [5, 6];
    ip.bytes = [700, 800];
    let h = |flags, seq, ack| TcpHdr {
        sport: 40000,
        dport: 21,
        seq,
        ack,
        flags,
        window: 64000,
        opts: TcpOpts::default(),
    };
    let mut t: TcpPortion = tcp::new_conn(&h(0x02, 1000, 0), 0).unwrap();
    tcp::track(&mut t, lazarus_core::conn::Dir::Reply, &h(0x12, 5000, 1001), 0).unwrap();
    let e = Expectation {
        family: 4,
        zone: 3,
        vlan: 7,
        src: v4_mapped([10, 0, 0, 2]),
        dst: v4_mapped([10, 0, 0, 1]),
        dport: 5001,
        deadline: 99,
        ..Default::default()
    };
    let ftp = FtpRecord {
        portion: FtpPortion::default(),
        expectations: [e; CHECKPOINT_EXPECTATIONS],
        count: 1,
    };
    vec![
        ("ip", hex(&IpRecord { key, ip, format: PORTION_FORMAT })),
        ("tcp", hex(&t)),
        ("udp", hex(&UdpPortion { replied: true })),
        ("icmp", hex(&IcmpPortion::new(0x4242))),
        ("ftp", hex(&ftp)),
    ]
}

/// The encodings of format 2: format 1's, the ip portion's direction byte
/// now flags (direction, related), its ingress port and inner VLAN appended.
const PINNED: [(&str, &str); 5] =
    [("ip", IP_V2), ("tcp", TCP_V2), ("udp", "0201"), ("icmp", "02424200"), ("ftp", FTP_V2)];
const IP_V2: &str = "0200000000000000000000ffff0a00000100000000000000000000ffff0a000002409c15000604030007000105000000000000000600000000000000bc020000000000002003000000000000d20400000000000045230900";
const TCP_V2: &str =
    "020201e9030000e9fd000000fa0000000000000000891300008913000000fa0000e90300000008";
const FTP_V2: &str = "0200000000000000000000000000000000000001040300070000000000000000000000ffff0a00000200000000000000000000ffff0a00000189136300000000000000";

/// The encodings of format 1, as the previous build wrote them: kept to test
/// the translation.
const PINNED_V1: [(&str, &str); 5] =
    [("ip", IP_V1), ("tcp", TCP_V1), ("udp", "0101"), ("icmp", "01424200"), ("ftp", FTP_V1)];
const IP_V1: &str = "0100000000000000000000ffff0a00000100000000000000000000ffff0a000002409c15000604030007000105000000000000000600000000000000bc020000000000002003000000000000d204000000000000";
const TCP_V1: &str =
    "010201e9030000e9fd000000fa0000000000000000891300008913000000fa0000e90300000008";
const FTP_V1: &str = "0100000000000000000000000000000000000001040300070000000000000000000000ffff0a00000200000000000000000000ffff0a00000189136300000000000000";

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len() / 2).map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap()).collect()
}

#[test]
fn format_1_reads_as_format_2_with_the_ingress_and_inner_vlan_unknown() {
    let v2 = |i: usize| unhex(PINNED[i].1);
    let v1 = |i: usize| unhex(PINNED_V1[i].1);
    let old = IpRecord::decode(&v1(0)).unwrap();
    let new = IpRecord::decode(&v2(0)).unwrap();
    assert_eq!((old.format, new.format), (1, 2));
    // Format 1 kept the outer VLAN only.
    assert_eq!(old.key, ConnKey { vlan: new.key.vlan & 0xfff, ..new.key });
    assert_eq!(new.key.vlan, 7 | 9 << 12);
    assert_eq!(old.ip.ingress, lazarus_core::ports::UNKNOWN_PORT);
    assert!(!old.ip.related);
    assert_eq!(IpPortion { ingress: 0x2345, ..old.ip }, new.ip);
    assert_eq!(TcpPortion::decode(&v1(1)).unwrap(), TcpPortion::decode(&v2(1)).unwrap());
    assert_eq!(UdpPortion::decode(&v1(2)).unwrap(), UdpPortion::decode(&v2(2)).unwrap());
    assert_eq!(IcmpPortion::decode(&v1(3)).unwrap(), IcmpPortion::decode(&v2(3)).unwrap());
    let (f1, f2) = (FtpRecord::decode(&v1(4)).unwrap(), FtpRecord::decode(&v2(4)).unwrap());
    assert_eq!(f1.count, f2.count);
    assert_eq!(f1.expectations[..f1.count], f2.expectations[..f2.count]);
}

/// The kept format-1 encoder (the upgrade test writes stores with it)
/// writes exactly what the previous build wrote.
#[test]
fn the_kept_format_1_encoder_writes_the_previous_builds_bytes() {
    let new = IpRecord::decode(&unhex(PINNED[0].1)).unwrap();
    let mut out = [0u8; 128];
    let n = new.encode_format_1(new.key.zone, &mut out).unwrap();
    assert_eq!(out[..n], unhex(PINNED_V1[0].1)[..]);
}

#[test]
fn every_portion_encodes_as_its_format_says() {
    assert_eq!(
        PORTION_FORMAT, 2,
        "a new format: pin its encodings here, keep format 1's for the translation test"
    );
    if std::env::var_os("PRINT_PORTION_FORMAT").is_some() {
        for (name, got) in samples() {
            println!("{name} {got}");
        }
    }
    for ((name, got), (pname, want)) in samples().iter().zip(PINNED) {
        assert_eq!(*name, pname);
        assert_eq!(
            got, want,
            "the {name} portion's bytes changed without a new PORTION_FORMAT: bump it and add a \
             translation from the previous format (docs/CHECKPOINT.md, Format versions)"
        );
    }
}

#[test]
fn a_newer_format_and_one_older_than_the_previous_are_refused_with_what_to_do() {
    let (_, udp) = &samples()[2];
    let mut b: Vec<u8> = (0..udp.len() / 2)
        .map(|i| u8::from_str_radix(&udp[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    b[0] = PORTION_FORMAT + 1;
    let newer = UdpPortion::decode(&b).unwrap_err();
    assert!(matches!(newer, PortionError::Format { .. }), "{newer}");
    assert!(newer.to_string().contains("run the newer build"), "{newer}");
    b[0] = PORTION_FORMAT_OLDEST - 1;
    let older = UdpPortion::decode(&b).unwrap_err();
    assert!(matches!(older, PortionError::TooOld { .. }), "{older}");
    assert!(older.to_string().contains("upgrade through the release in between"), "{older}");
}
