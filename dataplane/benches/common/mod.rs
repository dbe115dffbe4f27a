//! Established-flow fixtures shared by the criterion benches and the
//! callgrind harness (`examples/profile_pipeline.rs`).

use allocator_api2::alloc::Global;
use dataplane::checkpoint::NoCheckpoint;
use dataplane::config::ConntrackSection;
use dataplane::firewall::{Firewall, Verdict};
use dataplane::stats::FwCounters;
use std::sync::Arc;

pub type Fw = Firewall<NoCheckpoint, Global>;

fn csum(b: &[u8]) -> u16 {
    let mut s = 0u32;
    for c in b.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// A 60-byte (64 with FCS) Ethernet/IPv4/TCP frame.
pub fn tcp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let mut ip = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend(ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    f.resize(60, 0);
    f
}

pub const SERVER: [u8; 4] = [10, 99, 0, 2];

pub fn client(i: u32) -> ([u8; 4], u16) {
    let a = (i / 50_000).to_be_bytes();
    ([10, 100 + a[2], a[3], 1 + (i % 250) as u8], 1024 + (i % 50_000) as u16)
}

/// A firewall holding `n` established flows, and a shuffled list of frames
/// (one per flow, alternating directions) of established traffic.
pub fn established(n: u32) -> (Fw, Vec<Vec<u8>>) {
    let ct = ConntrackSection { capacity: n + n / 8 + 1024, ..Default::default() };
    let counters = Arc::new(FwCounters::default());
    let mut fw = Firewall::new(&ct, Arc::new(Default::default()), vec![0, 0], 2_450_000_000, Global, NoCheckpoint, counters);
    let mut frames = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (c, p) = client(i);
        let (cs, ss) = (1000u32, 5000u32);
        assert_eq!(fw.process(&tcp_frame(c, SERVER, p, 80, 0x02, cs, 0), 0, 1), Verdict::Forward);
        assert_eq!(fw.process(&tcp_frame(SERVER, c, 80, p, 0x12, ss, cs + 1), 1, 1), Verdict::Forward);
        assert_eq!(fw.process(&tcp_frame(c, SERVER, p, 80, 0x10, cs + 1, ss + 1), 0, 1), Verdict::Forward);
        frames.push(if i % 2 == 0 { tcp_frame(c, SERVER, p, 80, 0x10, cs + 1, ss + 1) } else { tcp_frame(SERVER, c, 80, p, 0x10, ss + 1, cs + 1) });
    }
    // Visit flows in a random order, as traffic would: no cache-friendly stride.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..frames.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        frames.swap(i, (x % (i as u64 + 1)) as usize);
    }
    (fw, frames)
}
