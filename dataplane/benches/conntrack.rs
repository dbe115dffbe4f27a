//! Criterion micro-benchmarks of the firewall stages, and the whole per-packet
//! pipeline (parse → lookup → modules) over established TCP flows.
//!
//!     cargo bench -p dataplane --bench conntrack
//!
//! Inputs are built outside the timed region. Cycles per packet = ns × TSC GHz
//! (docs/BENCHMARKS.md).

use allocator_api2::alloc::Global;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::checkpoint::NoCheckpoint;
use dataplane::config::ConntrackSection;
use dataplane::conn::{ConnKey, Endpoint};
use dataplane::firewall::{Firewall, Verdict};
use dataplane::modules::tcp;
use dataplane::parse::{self, v4_mapped, Family, TcpHdr};
use dataplane::stats::FwCounters;
use std::sync::Arc;

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
fn tcp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
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

const SERVER: [u8; 4] = [10, 99, 0, 2];

fn client(i: u32) -> ([u8; 4], u16) {
    let a = (i / 50_000).to_be_bytes();
    ([10, 100 + a[2], a[3], 1 + (i % 250) as u8], 1024 + (i % 50_000) as u16)
}

/// A firewall holding `n` established flows, and a shuffled list of frames
/// (one per flow, alternating directions) of established traffic.
fn established(n: u32) -> (Firewall<NoCheckpoint, Global>, Vec<Vec<u8>>) {
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

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline_established");
    for n in [10_000u32, 1_000_000] {
        let (mut fw, frames) = established(n);
        let bytes = fw.table().bytes_allocated();
        eprintln!("{n} flows: table {bytes} bytes for {} slots = {} bytes per connection; record {} bytes", fw.table().capacity(), bytes / fw.table().capacity(), std::mem::size_of::<Option<dataplane::modules::Conn>>());
        g.throughput(Throughput::Elements(32));
        let mut at = 0usize;
        g.bench_with_input(BenchmarkId::new("flows", n), &n, |b, _| {
            b.iter(|| {
                // One burst of 32, as a worker sees it.
                for _ in 0..32 {
                    let v = fw.process(black_box(&frames[at]), 0, 2);
                    debug_assert_eq!(v, Verdict::Forward);
                    at = if at + 1 == frames.len() { 0 } else { at + 1 };
                }
            })
        });
    }
    g.finish();
}

fn stages(c: &mut Criterion) {
    let frame = tcp_frame([10, 0, 0, 1], SERVER, 40000, 80, 0x10, 1001, 5001);
    let mut g = c.benchmark_group("stages");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_tcp", |b| b.iter(|| parse::parse(black_box(&frame))));

    let (fw, _) = established(100_000);
    let keys: Vec<ConnKey> = (0..100_000u32)
        .map(|i| {
            let (c, p) = client(i);
            ConnKey::canonical(Family::V4, 6, Endpoint { addr: v4_mapped(c), port: p }, Endpoint { addr: v4_mapped(SERVER), port: 80 }, 0, 0).0
        })
        .collect();
    let mut i = 0;
    g.bench_function("lookup_100k", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            let k = &keys[i];
            black_box(fw.table().lookup(k, k.id()))
        })
    });

    let h = |flags, seq, ack| TcpHdr { sport: 40000, dport: 80, seq, ack, flags, window: 64240, ..Default::default() };
    let mut p = tcp::new_conn(&h(0x02, 1000, 0), 0).unwrap();
    tcp::track(&mut p, dataplane::conn::Dir::Reply, &h(0x12, 5000, 1001), 0).unwrap();
    tcp::track(&mut p, dataplane::conn::Dir::Original, &h(0x10, 1001, 5001), 0).unwrap();
    let data = h(0x10, 1001, 5001);
    g.bench_function("tcp_track_established", |b| b.iter(|| tcp::track(black_box(&mut p), dataplane::conn::Dir::Original, black_box(&data), 0)));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = stages, pipeline
}
criterion_main!(benches);
