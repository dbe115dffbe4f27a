//! Verdicts packet by packet through the real dataplane on net_pcap: every
//! frame enters port a in a known order (both directions of each flow: the
//! tracker tells directions by address, not by port) and the pcap leaving
//! port b shows which were forwarded.

mod common;
use common::*;
use lazarus_core::frames::{eth, icmp, ipv4, tcp, udp};
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use std::time::Duration;

const C: [u8; 4] = [10, 99, 0, 1];
const S: [u8; 4] = [10, 99, 0, 2];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;

/// `frame` with its TCP checksum (untagged IPv4, no options) broken.
fn bad_l4(mut frame: Vec<u8>) -> Vec<u8> {
    frame[14 + 20 + 16] ^= 0x5a;
    frame
}

/// `frame` with its IPv4 header checksum broken.
fn bad_ip(mut frame: Vec<u8>) -> Vec<u8> {
    frame[14 + 10] ^= 0x5a;
    frame
}

/// The scenario: (frame, forwarded?, what it shows).
fn scenario(ftp_on: bool) -> Vec<(Vec<u8>, bool, &'static str)> {
    let (cs, ss) = (1000u32, 5000u32);
    let mut v = vec![
        (tcp(C, S, (40000, 80), SYN, (cs, 0), b""), true, "SYN opens"),
        (tcp(S, C, (80, 40000), SYN | ACK, (ss, cs + 1), b""), true, "SYN-ACK"),
        (tcp(C, S, (40000, 80), ACK, (cs + 1, ss + 1), b""), true, "ACK: established"),
        (tcp(C, S, (40000, 80), ACK | PSH, (cs + 1, ss + 1), &[b'x'; 100]), true, "data"),
        (tcp(C, S, (40000, 80), ACK | PSH, (cs + 1, ss + 1), &[b'x'; 100]), true, "retransmission"),
        (
            tcp(C, S, (40000, 80), ACK | PSH, (cs + 10_000_000, ss + 1), b"y"),
            false,
            "data far out of window",
        ),
        (tcp(S, C, (80, 40000), RST, (ss + 9_000_000, 0), b""), false, "RST out of window"),
        (tcp(S, C, (80, 40000), ACK, (ss + 1, cs + 101), b""), true, "ACK of the data"),
        (
            bad_l4(tcp(S, C, (80, 40000), RST, (ss + 1, 0), b"")),
            false,
            "in-window RST, bad TCP checksum",
        ),
        (bad_ip(tcp(C, S, (40002, 80), SYN, (1, 0), b"")), false, "SYN with a bad IPv4 checksum"),
        (
            tcp(C, S, (40000, 80), ACK | PSH, (cs + 101, ss + 1), b"after"),
            true,
            "the flow lives on: the forged RST changed nothing",
        ),
        (tcp(C, S, (40001, 80), ACK, (77, 88), b""), false, "mid-stream ACK with no connection"),
        (
            tcp(S, C, (2222, 22), SYN, (9, 0), b""),
            false,
            "new connection from the server side: policy",
        ),
        (tcp(C, S, (40002, 80), SYN | 0x01, (1, 0), b""), false, "SYN+FIN"),
        (udp(C, S, 5353, 53, b"query"), true, "UDP out"),
        (udp(S, C, 53, 5353, b"answer"), true, "UDP reply"),
        (udp(S, C, 53, 9999, b"unsolicited"), false, "UDP from the server side: policy"),
        (icmp(C, S, 8, 0, [0, 7, 0, 1], b"ping"), true, "echo request"),
        (icmp(S, C, 0, 0, [0, 7, 0, 1], b"ping"), true, "echo reply"),
        (icmp(S, C, 0, 0, [0, 8, 0, 1], b"ping"), false, "echo reply with no request"),
        (
            icmp(S, C, 3, 3, [0; 4], &udp(C, S, 5353, 53, b"query")[14..42]),
            true,
            "port unreachable quoting the UDP flow",
        ),
        (
            icmp(S, C, 3, 3, [0; 4], &udp(C, S, 6000, 53, b"query")[14..42]),
            false,
            "port unreachable quoting no flow",
        ),
        (eth(ipv4(6, C, S, &[0; 8])), false, "truncated TCP header"),
        (
            {
                let mut f = vec![0xff; 6];
                f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
                f.extend_from_slice(&[
                    0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 99, 0, 1, 0, 0, 0, 0, 0, 0, 10,
                    99, 0, 2,
                ]);
                f.resize(60, 0);
                f
            },
            true,
            "ARP passes",
        ),
        (tcp(C, S, (40000, 80), FIN | ACK, (cs + 101, ss + 1), b""), true, "FIN"),
        (tcp(S, C, (80, 40000), FIN | ACK, (ss + 1, cs + 102), b""), true, "FIN back"),
        (tcp(C, S, (40000, 80), ACK, (cs + 102, ss + 2), b""), true, "last ACK"),
    ];
    // Active FTP: the server opens the data connection, which policy drops as
    // new from the server side unless the ftp module saw the PORT command.
    let (fc, fs) = (7000u32, 9000u32);
    let port_cmd = b"PORT 10,99,0,1,156,64\r\n"; // 40000
    v.extend([
        (tcp(C, S, (41000, 21), SYN, (fc, 0), b""), true, "FTP control SYN"),
        (tcp(S, C, (21, 41000), SYN | ACK, (fs, fc + 1), b""), true, "FTP control SYN-ACK"),
        (tcp(C, S, (41000, 21), ACK, (fc + 1, fs + 1), b""), true, "FTP control ACK"),
        (
            tcp(C, S, (41000, 21), ACK | PSH, (fc + 1, fs + 1), &port_cmd[..9]),
            true,
            "PORT, first half",
        ),
        (
            tcp(C, S, (41000, 21), ACK | PSH, (fc + 10, fs + 1), &port_cmd[9..]),
            true,
            "PORT, second half",
        ),
        (
            tcp(S, C, (20, 40000), SYN, (3, 0), b""),
            ftp_on,
            "active data SYN from the server: related",
        ),
        (tcp(S, C, (20, 40001), SYN, (3, 0), b""), false, "a port nobody announced"),
    ]);
    v
}

fn write_pcap(path: &std::path::Path, frames: &[&[u8]]) {
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write_packet(&PcapPacket::new(Duration::from_micros(i as u64), f.len() as u32, f))
            .unwrap();
    }
}

fn run(ftp_on: bool) -> (Vec<Vec<u8>>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let sc = scenario(ftp_on);
    let frames: Vec<&[u8]> = sc.iter().map(|(f, _, _)| f.as_slice()).collect();
    let (inp, empty, out_a, out_b) = (
        dir.path().join("in.pcap"),
        dir.path().join("empty.pcap"),
        dir.path().join("out_a.pcap"),
        dir.path().join("out_b.pcap"),
    );
    write_pcap(&inp, &frames);
    write_pcap(&empty, &[]);
    let policy = format!(
        "[conntrack]\nftp = {ftp_on}\n\n[[zone]]\nname = \"lan\"\ndefault = \"accept\"\n\n[[rule]]\nname = \"no-new-from-server\"\nsrc = \"10.99.0.2/32\"\naction = \"drop\"\n"
    );
    let cfg = bridge_config(dir.path(), "net_pcap0", "net_pcap1", "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("device = \"net_pcap0\"", "device = \"net_pcap0\"\nzone = \"lan\"")
        .replace("device = \"net_pcap1\"", "device = \"net_pcap1\"\nzone = \"lan\"")
        + &policy;
    std::fs::write(&cfg, text).unwrap();
    let mut eal = eal_no_huge(if ftp_on { "fw" } else { "fwnoftp" });
    eal.push(format!("--vdev=net_pcap0,rx_pcap={},tx_pcap={}", inp.display(), out_a.display()));
    eal.push(format!("--vdev=net_pcap1,rx_pcap={},tx_pcap={}", empty.display(), out_b.display()));
    let mut dp = start(&eal, &cfg);
    let n = frames.len() as u64;
    let line =
        dp.wait_for(Duration::from_secs(60), |l| l.contains("stats ") && field(l, "rx") >= Some(n));
    let (status, log) = dp.stop();
    assert!(line.is_some(), "the dataplane never received {n} frames; log:\n{}", log.join("\n"));
    assert!(status.success(), "exit {status}; log:\n{}", log.join("\n"));
    let mut r = PcapReader::new(std::fs::File::open(&out_b).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        out.push(p.unwrap().data.into_owned());
    }
    (out, log)
}

fn check(ftp_on: bool) -> Vec<String> {
    let sc = scenario(ftp_on);
    let (out, log) = run(ftp_on);
    let expected: Vec<&(Vec<u8>, bool, &str)> = sc.iter().filter(|(_, fwd, _)| *fwd).collect();
    let mut it = out.iter();
    for (frame, fwd, what) in &sc {
        if *fwd {
            assert_eq!(it.next(), Some(frame), "forwarded frames differ at {what:?}");
        }
    }
    assert_eq!(out.len(), expected.len(), "extra frames forwarded");
    log
}

/// Whether `key=value` is a whole token of a summary line: `drop.policy=3`
/// must not match `drop.policy=30`, nor `related=1` `icmp_unrelated=1`.
fn has_token(line: &str, token: &str) -> bool {
    line.split_whitespace().any(|t| t == token)
}

#[test]
fn verdicts_packet_by_packet() {
    let log = check(true);
    let summary = log.iter().find(|l| l.contains("conntrack summary")).expect("conntrack summary");
    for want in [
        "tcp.invalid.out_of_window=1",
        "tcp.invalid.rst_out_of_window=1",
        "tcp.invalid.new_not_syn=1",
        "tcp.invalid.bad_flags=1",
        "drop.policy=3",
        "drop.icmp_unrelated=1",
        "drop.icmp_bad_echo=1",
        "parse.truncated=1",
        "parse.bad_l4_checksum=1",
        "parse.bad_ip_checksum=1",
        "related=1",
        "ftp.expectations=1",
    ] {
        assert!(has_token(summary, want), "{want} missing in {summary}");
    }
}

#[test]
fn without_the_ftp_module_the_active_data_connection_is_dropped() {
    // The control run: the same frames, the ftp module off.
    let log = check(false);
    let summary = log.iter().find(|l| l.contains("conntrack summary")).expect("conntrack summary");
    assert!(has_token(summary, "drop.policy=4"), "{summary}");
    assert!(has_token(summary, "related=0") && !summary.contains("ftp.expectations"), "{summary}");
}
