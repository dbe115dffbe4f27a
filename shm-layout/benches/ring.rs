//! Delta ring micro-benchmarks: the producer's cost per delta (the dataplane
//! fast path) and the consumer's drain rate (checkpointd, one core).

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use shm_layout::{delta_kind, module, DeltaProducer, RingsGeometry, RingsSegment};
use std::hint::black_box;

const SLOTS: u32 = 65536;
/// A tcp portion's usual encoding (the delta most changes write), and a
/// larger one.
const PAYLOADS: [&[u8]; 2] = [&[0x5a; 39], &[0x5a; 48]];

fn segment() -> (std::path::PathBuf, RingsSegment) {
    let dir = std::env::temp_dir().join(format!("shm-layout-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // /dev/shm when present: the same kind of memory the daemon uses.
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        dir
    };
    let path = base.join(format!("lazarus-bench-rings-{}", std::process::id()));
    let seg = RingsSegment::create_file(&path, RingsGeometry { workers: 1, slots_per_ring: SLOTS })
        .unwrap();
    (path, seg)
}

fn ring(c: &mut Criterion) {
    let (path, seg) = segment();
    let mut g = c.benchmark_group("ring");
    // Batches of 2048 deltas (512 KiB of slots, cache-resident) and 32768
    // (8 MiB: more than the caches, as behind a busy dataplane); the other
    // side of the ring runs outside the timing.
    for payload in PAYLOADS {
        for batch in [2048u64, 32768] {
            bench_batch(&mut g, &seg, batch, payload);
        }
    }
    for batch in [2048u64, 32768] {
        bench_words(&mut g, &seg, batch);
    }
    g.finish();
    drop(seg);
    let _ = std::fs::remove_file(path);
}

fn bench_batch(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    seg: &RingsSegment,
    batch: u64,
    payload: &[u8],
) {
    bench_push(g, seg, batch, &format!("try_push_{}B_publish_per_32", payload.len()), |p, id| {
        p.try_push(id, module::TCP, delta_kind::PORTION, id, black_box(payload)).unwrap();
    });
    g.bench_function(BenchmarkId::new(format!("drain_{}B", payload.len()), batch), |b| {
        let mut p = seg.producer(0).unwrap();
        let mut cons = seg.consumer(0).unwrap();
        b.iter_batched(
            || {
                for id in 0..batch {
                    p.try_push(id, module::TCP, delta_kind::PORTION, id, payload).unwrap();
                }
                p.publish();
            },
            |()| {
                let mut sum = 0u64;
                let r = cons.drain(u32::MAX, |d| {
                    sum = sum.wrapping_add(d.version ^ u64::from(d.payload[7]))
                });
                assert_eq!(u64::from(r.applied), batch);
                black_box(sum)
            },
            BatchSize::PerIteration,
        );
    });
}

/// The worker's tcp delta: 39 bytes given as five words, checksummed from
/// them at the push (`try_push_words`); a new portion each time, as the
/// worker's fields change from one delta to the next.
fn bench_words(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    seg: &RingsSegment,
    batch: u64,
) {
    bench_push(g, seg, batch, "try_push_words_39B_publish_per_32", |p, id| {
        let w = black_box([id, id ^ 0x5a5a, id.rotate_left(17), !id, id.wrapping_mul(3)]);
        p.try_push_words(id, module::TCP, delta_kind::PORTION, id, &w, 39).unwrap();
    });
}

/// `batch` deltas written by `push` (given the producer and the delta's
/// number), published every 32, the ring drained outside the timing.
fn bench_push(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    seg: &RingsSegment,
    batch: u64,
    name: &str,
    mut push: impl FnMut(&mut DeltaProducer<'_>, u64),
) {
    g.throughput(Throughput::Elements(batch));
    g.bench_function(BenchmarkId::new(name, batch), |b| {
        let mut p = seg.producer(0).unwrap();
        let mut cons = seg.consumer(0).unwrap();
        let mut id = 0u64;
        b.iter_batched(
            || {
                cons.drain(u32::MAX, |d| {
                    black_box(d);
                });
            },
            |()| {
                for _ in 0..batch {
                    push(&mut p, id);
                    id += 1;
                    if id & 31 == 0 {
                        p.publish();
                    }
                }
                p.publish();
            },
            BatchSize::PerIteration,
        );
        cons.drain(u32::MAX, |_| {});
    });
}

criterion_group!(benches, ring);
criterion_main!(benches);
