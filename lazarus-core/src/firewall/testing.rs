//! What the firewall's tests share: two hosts, a firewall on the heap
//! writing to a memory sink, a handshake, a restore, a mix of traffic.

use crate::checkpoint::MemorySink;
use crate::firewall::*;
use crate::frames::{tcp, tcp_flags::*, udp};
use crate::modules::Module;
use allocator_api2::alloc::Global;

pub(super) const C: [u8; 4] = [10, 99, 0, 1];
pub(super) const S: [u8; 4] = [10, 99, 0, 2];
pub(super) const HZ: u64 = 1_000_000_000;

pub(super) fn fw(sink: MemorySink) -> Firewall<MemorySink, Global> {
    let c = ConntrackSection { capacity: 64, ..Default::default() };
    let counters = FwCounters::leaked();
    Firewall::new(&c, Arc::new(Policy::default()), vec![0, 0], HZ, Global, sink, counters)
}

/// Handshake and some data on one connection; returns the next (client seq, server seq).
pub(super) fn open(f: &mut Firewall<MemorySink, Global>, sport: u16) -> (u32, u32) {
    let t = 1;
    assert_eq!(f.process(&tcp(C, S, (sport, 80), SYN, (1000, 0), b""), 0, t), Verdict::Forward);
    assert_eq!(
        f.process(&tcp(S, C, (80, sport), SYN | ACK, (5000, 1001), b""), 1, t),
        Verdict::Forward
    );
    assert_eq!(f.process(&tcp(C, S, (sport, 80), ACK, (1001, 5001), b""), 0, t), Verdict::Forward);
    assert_eq!(
        f.process(&tcp(C, S, (sport, 80), ACK | PSH, (1001, 5001), &[7; 100]), 0, t),
        Verdict::Forward
    );
    (1101, 5001)
}

pub(super) fn restore_all(from: &MemorySink, into: &mut Firewall<MemorySink, Global>) -> usize {
    let ids: std::collections::BTreeSet<u64> = from.store.keys().map(|k| k.0).collect();
    for id in &ids {
        let get = |m: Module| from.store.get(&(*id, m as u8)).map(|(_, b)| b.as_slice());
        let l4 = [Module::Tcp, Module::Udp, Module::Icmp]
            .into_iter()
            .find_map(|m| get(m).map(|b| (m as u8, b)));
        into.restore(*id, get(Module::Ip).unwrap(), l4, get(Module::Ftp), 10).unwrap();
    }
    ids.len()
}

/// Frames of every kind the pipeline tells apart, in an order where later
/// packets depend on connections earlier ones opened.
pub(super) fn mixed_traffic() -> Vec<(Vec<u8>, usize)> {
    use crate::frames::{eth, icmp, ipv4};
    let mut v = Vec::new();
    for sport in [40000u16, 40001] {
        v.push((tcp(C, S, (sport, 80), SYN, (1000, 0), b""), 0));
        v.push((tcp(S, C, (80, sport), SYN | ACK, (5000, 1001), b""), 1));
        v.push((tcp(C, S, (sport, 80), ACK, (1001, 5001), b""), 0));
        v.push((tcp(C, S, (sport, 80), ACK | PSH, (1001, 5001), &[7; 100]), 0));
        v.push((tcp(C, S, (sport, 80), ACK | PSH, (1101 + 10_000_000, 5001), b"y"), 0));
    }
    v.push((tcp(C, S, (40009, 80), ACK, (77, 88), b""), 0));
    v.push((udp(C, S, 5353, 53, b"query"), 0));
    v.push((udp(S, C, 53, 5353, b"answer"), 1));
    v.push((icmp(C, S, 8, 0, [0, 7, 0, 1], b"ping"), 0));
    v.push((icmp(S, C, 0, 0, [0, 7, 0, 1], b"ping"), 1));
    v.push((icmp(S, C, 0, 0, [0, 8, 0, 1], b"ping"), 1));
    v.push((icmp(S, C, 3, 3, [0; 4], &udp(C, S, 5353, 53, b"query")[14..42]), 1));
    v.push((icmp(S, C, 3, 3, [0; 4], &udp(C, S, 6000, 53, b"query")[14..42]), 1));
    v.push((eth(ipv4(6, C, S, &[0; 8])), 0));
    v.push((eth(ipv4(47, C, S, &[0; 8])), 0));
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.resize(60, 0);
    v.push((arp, 0));
    v.push((tcp(C, S, (40000, 80), FIN | ACK, (1101, 5001), b""), 0));
    v.push((tcp(S, C, (80, 40000), FIN | ACK, (5001, 1102), b""), 1));
    v
}
