//! net_pcap: frames of many kinds go in on one port; the paired port's output
//! pcap must hold the same frames, byte for byte, in the same order.

mod common;
use common::*;
use lazarus_core::frames;
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use std::time::Duration;

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    frames::ether_between(dst, src, ethertype, payload)
}

fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
    frames::ipv4_packet(&frames::Ipv4 { id: 0x1234, ..frames::Ipv4::new(proto, src, dst) }, l4)
}

/// Frames of varied protocols and sizes, each made unique by its index.
fn frames() -> Vec<Vec<u8>> {
    let (m1, m2) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let mut out = Vec::new();
    for i in 0..200u32 {
        let tag = i.to_be_bytes();
        let f = match i % 8 {
            0 => {
                let mut tcp = vec![0x30, 0x39, 0, 80];
                tcp.extend_from_slice(&tag);
                tcp.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
                eth(m2, m1, 0x0800, &ipv4(6, [10, 0, 0, 1], [10, 0, 0, 2], &tcp))
            }
            1 => {
                let mut udp = vec![0x13, 0x88, 0x00, 0x35, 0, 0, 0, 0];
                udp.extend_from_slice(&tag);
                udp.extend(std::iter::repeat_n(i as u8, (i as usize * 7) % 1400));
                let l = (udp.len() as u16).to_be_bytes();
                udp[4..6].copy_from_slice(&l);
                eth(m1, m2, 0x0800, &ipv4(17, [10, 0, 0, 2], [10, 0, 0, 1], &udp))
            }
            2 => {
                let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
                arp.extend_from_slice(&m1);
                arp.extend_from_slice(&[10, 0, 0, 1]);
                arp.extend_from_slice(&[0; 6]);
                arp.extend_from_slice(&tag);
                eth([0xff; 6], m1, 0x0806, &arp)
            }
            3 => {
                let mut v6 = vec![0x60, 0, 0, 0, 0, 12, 58, 64];
                v6.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
                v6.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
                v6.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
                v6.extend_from_slice(&tag);
                eth([0x33, 0x33, 0, 0, 0, 2], m1, 0x86dd, &v6)
            }
            4 => {
                let mut vlan = vec![0x00, 0x64, 0x08, 0x00];
                vlan.extend_from_slice(&ipv4(
                    1,
                    [10, 0, 0, 1],
                    [10, 0, 0, 9],
                    &[8, 0, 0, 0, 0, 1, 0, 1, tag[0], tag[1], tag[2], tag[3]],
                ));
                eth(m2, m1, 0x8100, &vlan)
            }
            5 => eth(
                [0x01, 0x80, 0xc2, 0, 0, 0x0e],
                m1,
                0x88cc,
                &[tag.as_slice(), &[0u8; 40]].concat(),
            ),
            6 => {
                // Full-size frame.
                let mut p = tag.to_vec();
                p.resize(1500, (i % 251) as u8);
                eth(m2, m1, 0x0800, &ipv4(17, [10, 0, 0, 1], [10, 0, 0, 2], &p[..1480]))
            }
            _ => eth(m1, m2, 0x9000, &tag), // loopback ethertype, minimum size
        };
        out.push(f);
    }
    out
}

fn write_pcap(path: &std::path::Path, frames: &[Vec<u8>]) {
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write_packet(&PcapPacket::new(Duration::from_micros(i as u64), f.len() as u32, f))
            .unwrap();
    }
}

fn read_pcap(path: &std::path::Path) -> Vec<Vec<u8>> {
    let mut r = PcapReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        out.push(p.unwrap().data.into_owned());
    }
    out
}

#[test]
fn pcap_frames_cross_the_bridge_unchanged_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let input = frames();
    let (inp, empty, out_a, out_b) = (
        dir.path().join("in.pcap"),
        dir.path().join("empty.pcap"),
        dir.path().join("out_a.pcap"),
        dir.path().join("out_b.pcap"),
    );
    write_pcap(&inp, &input);
    write_pcap(&empty, &[]);
    // A stateless bridge: this test is about the datapath, not the firewall
    // (tests/pcap_firewall.rs checks verdicts).
    let cfg = bridge_config(dir.path(), "net_pcap0", "net_pcap1", "[conntrack]\nenabled = false");
    let mut eal = eal_no_huge("pcap");
    eal.push(format!("--vdev=net_pcap0,rx_pcap={},tx_pcap={}", inp.display(), out_a.display()));
    eal.push(format!("--vdev=net_pcap1,rx_pcap={},tx_pcap={}", empty.display(), out_b.display()));

    let mut dp = start(&eal, &cfg);
    let n = input.len() as u64;
    let line =
        dp.wait_for(Duration::from_secs(60), |l| l.contains("stats ") && field(l, "tx") >= Some(n));
    let (status, log) = dp.stop();
    assert!(
        line.is_some(),
        "the dataplane never reported {n} frames forwarded; log:\n{}",
        log.join("\n")
    );
    assert!(status.success(), "exit {status}; log:\n{}", log.join("\n"));
    assert!(
        log.iter().any(|l| l.contains("stopped cleanly")),
        "no clean stop; log:\n{}",
        log.join("\n")
    );

    let got = read_pcap(&out_b);
    assert_eq!(got.len(), input.len(), "frame count differs");
    for (i, (g, w)) in got.iter().zip(&input).enumerate() {
        assert_eq!(g, w, "frame {i} differs");
    }
    assert!(read_pcap(&out_a).is_empty(), "nothing came in on port b, so nothing may leave port a");
    let summary = log.iter().find(|l| l.contains("summary ")).expect("summary line");
    assert_eq!(field(summary, "dropped"), Some(0), "{summary}");
}
