//! Checkpointing costs, for docs/BENCHMARKS.md:
//! * `overhead`: the pipeline on churning connections (every connection opens,
//!   carries a few packets, closes, and opens again) with checkpointing off
//!   and with deltas going into a real delta ring that a second thread drains
//!   as checkpointd would; the ratio is the figure.
//! * `restore_1m`: rebuilding 1 000 000 connections from a store segment.

mod common;
use common::{churn_frames, firewall, FLOWS};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dataplane::checkpoint::RingSink;
use dataplane::dpdk::KernelHugepageAlloc;
use lazarus_core::checkpoint::{CheckpointSink, NoCheckpoint};
use lazarus_core::firewall::Firewall;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn run<S: CheckpointSink>(
    fw: &mut Firewall<S, KernelHugepageAlloc>,
    frames: &[Vec<u8>],
    now: &mut u64,
) {
    let fwd = common::run_bursts(fw, frames, now);
    debug_assert_eq!(fwd, frames.len());
}

fn overhead(c: &mut Criterion) {
    let frames = churn_frames();
    let mut g = c.benchmark_group("checkpoint_overhead");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.sample_size(20).measurement_time(Duration::from_secs(8));

    let mut off = firewall(NoCheckpoint, FLOWS * 2);
    let mut now = 1;
    run(&mut off, &frames, &mut now);
    g.bench_function("churn_off", |b| b.iter(|| run(&mut off, &frames, &mut now)));
    assert_eq!(
        off.counters.tcp_invalid.iter().map(|c| c.get()).sum::<u64>(),
        0,
        "the churn workload must be valid traffic"
    );

    // A real ring in shared memory (tmpfs) and a drainer on the other core.
    let rings = common::scratch_rings(65536);
    let stop = Arc::new(AtomicBool::new(false));
    // Spinning when empty: criterion's figure is the busy-drainer case.
    let drained = common::spawn_drainer(rings, stop.clone(), 0);
    let mut on = firewall(RingSink::new(rings.producer(0).unwrap(), rings), FLOWS * 2);
    let mut now = 1;
    run(&mut on, &frames, &mut now);
    g.bench_function("churn_ring", |b| b.iter(|| run(&mut on, &frames, &mut now)));
    g.finish();
    stop.store(true, Ordering::Relaxed);
    let n = drained.join().unwrap();
    let deltas = common::deltas_written(on.counters);
    eprintln!(
        "checkpoint_overhead: {} frames per pass, {:.2} deltas per packet, {} drained, ring full {} (re-emitted {})",
        frames.len(),
        deltas as f64 / (now / 1000 * 32) as f64,
        n,
        on.counters.ckpt_ring_full.get(),
        on.counters.ckpt_reemitted.get()
    );
}

fn restore(c: &mut Criterion) {
    const N: u32 = 1_000_000;
    let store = common::store_of(N);
    let mut g = c.benchmark_group("restore");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("1m_connections", |b| {
        b.iter_batched_ref(
            || firewall(NoCheckpoint, N + N / 8),
            |fw| {
                let s = fw.restore_from_store(
                    &store,
                    0,
                    &lazarus_core::placement::Placement::single(),
                    10,
                );
                assert_eq!(s.restored, N as u64);
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    let t0 = Instant::now();
    let mut fw = firewall(NoCheckpoint, N + N / 8);
    let alloc = t0.elapsed();
    let t1 = Instant::now();
    fw.restore_from_store(&store, 0, &lazarus_core::placement::Placement::single(), 10);
    eprintln!(
        "restore: table allocation {:.1} ms, rebuild of {N} connections {:.1} ms",
        alloc.as_secs_f64() * 1e3,
        t1.elapsed().as_secs_f64() * 1e3
    );
}

criterion_group!(benches, overhead, restore);
criterion_main!(benches);
