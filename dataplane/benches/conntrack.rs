//! Criterion micro-benchmarks of the firewall stages, and the whole per-packet
//! pipeline (parse → lookup → modules) over established TCP flows.
//!
//!     cargo bench -p dataplane --bench conntrack
//!
//! Inputs are built outside the timed region. Cycles per packet = ns × TSC GHz
//! (docs/BENCHMARKS.md).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lazarus_core::conn::{ConnKey, Endpoint};
use lazarus_core::modules::tcp;
use lazarus_core::parse::{self, v4_mapped, Family, TcpHdr};

mod common;
use common::{client, established, tcp_frame, SERVER};

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline_established");
    for n in [10_000u32, 1_000_000] {
        let (mut fw, frames) = established(n);
        let bytes = fw.table().bytes_allocated();
        eprintln!("{n} flows: table {bytes} bytes for {} slots = {} bytes per connection; record {} bytes", fw.table().capacity(), bytes / fw.table().capacity(), std::mem::size_of::<Option<lazarus_core::modules::Conn>>());
        g.throughput(Throughput::Elements(32));
        let mut at = 0usize;
        // One burst of 32, as a worker sees it: staged (the worker's way),
        // and each packet through `process` alone, for comparison.
        let next_burst = |at: &mut usize| -> [&[u8]; 32] {
            std::array::from_fn(|_| {
                let f: &[u8] = &frames[*at];
                *at = if *at + 1 == frames.len() { 0 } else { *at + 1 };
                f
            })
        };
        g.bench_with_input(BenchmarkId::new("staged", n), &n, |b, _| {
            b.iter(|| {
                let burst = next_burst(&mut at);
                let fwd = common::staged_burst(&mut fw, black_box(&burst), 0, 2);
                debug_assert_eq!(fwd, 32);
            })
        });
        g.bench_with_input(BenchmarkId::new("per_packet", n), &n, |b, _| {
            b.iter(|| {
                let fwd = common::per_packet_burst(&mut fw, black_box(next_burst(&mut at)), 0, 2);
                debug_assert_eq!(fwd, 32);
            })
        });
    }
    g.finish();
}

fn stages(c: &mut Criterion) {
    let frame = tcp_frame([10, 0, 0, 1], SERVER, (40000, 80), 0x10, 1001, 5001);
    let mut g = c.benchmark_group("stages");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_tcp", |b| b.iter(|| parse::parse(black_box(&frame))));
    // The packet path's shortcut for the same frame (parse::v4_tcp).
    g.bench_function("parse_tcp_fast", |b| b.iter(|| parse::v4_tcp(black_box(&frame))));

    let (fw, _) = established(100_000);
    let keys: Vec<ConnKey> = (0..100_000u32)
        .map(|i| {
            let (c, p) = client(i);
            ConnKey::canonical(
                Family::V4,
                6,
                Endpoint { addr: v4_mapped(c), port: p },
                Endpoint { addr: v4_mapped(SERVER), port: 80 },
                0,
                0,
            )
            .0
        })
        .collect();
    let mut i = 0;
    g.bench_function("lookup_100k", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            let k = &keys[i];
            black_box(fw.table().lookup(k, fw.table().hash_of(k)))
        })
    });

    let h = |flags, seq, ack| TcpHdr {
        sport: 40000,
        dport: 80,
        seq,
        ack,
        flags,
        window: 64240,
        ..Default::default()
    };
    let mut p = tcp::new_conn(&h(0x02, 1000, 0), 0).unwrap();
    tcp::track(&mut p, lazarus_core::conn::Dir::Reply, &h(0x12, 5000, 1001), 0).unwrap();
    tcp::track(&mut p, lazarus_core::conn::Dir::Original, &h(0x10, 1001, 5001), 0).unwrap();
    let data = h(0x10, 1001, 5001);
    g.bench_function("tcp_track_established", |b| {
        b.iter(|| {
            tcp::track(black_box(&mut p), lazarus_core::conn::Dir::Original, black_box(&data), 0)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = stages, pipeline
}
criterion_main!(benches);
