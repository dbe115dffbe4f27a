//! Checkpoint overhead in wall clock, measured as docs/BENCHMARKS.md asks of a
//! noisy machine: checkpointing off and on in the same process, in
//! alternating rounds, so that a burst of load from other tenants hits both
//! sides; the figure is the median of the per-round ratios.
//!
//!     cargo build --release -p dataplane --example overhead_paired
//!     target/release/examples/overhead_paired [ROUNDS] [DATA] [SLEEP_US]
//!
//! The drainer thread behaves like checkpointd: it drains while there is
//! something to drain and sleeps SLEEP_US (checkpointd's `idle_sleep_us`,
//! default 50) when the ring is empty; 0 busy-polls.
//!
//! `DRAINER=inline` runs no drainer thread: the main thread drains the ring
//! between passes, outside the timed part (RING_SLOTS must then hold a whole
//! pass's deltas). It isolates what the worker's own writes cost from what a
//! consumer running beside it on the other core costs.
//!
//! One table for both sides (the default): a single firewall whose sink is
//! switched between rounds, `WorkerSink::Off` and `WorkerSink::Ring`, as the
//! dataplane's `checkpoint.enabled` switches it. Its memory is then the same
//! for both sides. `TABLES=two` builds a firewall per side instead (the
//! previous design): where each one's memory lands moved the ratio from
//! process to process more than checkpointing did.
//!
//! Two clocks: wall time, and the worker thread's CPU time
//! (CLOCK_THREAD_CPUTIME_ID). A DPDK lcore is pinned and never descheduled,
//! so there the two agree; on this shared 2-core machine the wall clock also
//! counts the time other tenants and the drainer took the worker's core.

#[path = "../benches/common/mod.rs"]
mod common;

use dataplane::checkpoint::{RingSink, WorkerSink};
use dataplane::dpdk::KernelHugepageAlloc;
use lazarus_core::checkpoint::{CheckpointSink, NoCheckpoint};
use lazarus_core::firewall::Firewall;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn thread_cpu() -> Duration {
    // SAFETY: timespec is plain old data; all-zero is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and out pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One pass; returns its wall and worker-CPU durations.
fn pass<S: CheckpointSink>(
    fw: &mut Firewall<S, KernelHugepageAlloc>,
    frames: &[Vec<u8>],
    now: &mut u64,
) -> (Duration, Duration) {
    let (t, c) = (Instant::now(), thread_cpu());
    let fwd = common::run_bursts(fw, frames, now);
    let (d, cd) = (t.elapsed(), thread_cpu() - c);
    assert_eq!(fwd, frames.len(), "the churn workload is valid traffic");
    (d, cd)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args
        .next()
        .map(|a| a.parse().expect("usage: overhead_paired [ROUNDS] [DATA] [SLEEP_US]"))
        .unwrap_or(31);
    let data: u32 = args
        .next()
        .map(|a| a.parse().expect("DATA: data packets per connection life"))
        .unwrap_or(common::DATA);
    let sleep_us: u64 =
        args.next().map(|a| a.parse().expect("SLEEP_US: drainer idle sleep")).unwrap_or(50);
    let slots: u32 = std::env::var("RING_SLOTS")
        .ok()
        .map_or(65536, |v| v.parse().expect("RING_SLOTS: a power of two"));
    let frames = common::churn_frames_with(data);

    let rings = common::scratch_rings(slots);
    let stop = Arc::new(AtomicBool::new(false));
    let inline = std::env::var("DRAINER").is_ok_and(|v| v == "inline");
    let drainer = (!inline).then(|| common::spawn_drainer(rings, stop.clone(), sleep_us));
    let mut inline_consumer = inline.then(|| rings.consumer(0).unwrap());
    let mut inline_drained = 0u64;
    let mut drain_inline = || {
        if let Some(c) = inline_consumer.as_mut() {
            while c.lag() > 0 {
                let r = c.drain(1024, |d| {
                    std::hint::black_box(d.payload);
                });
                inline_drained += u64::from(r.applied);
            }
        }
    };

    let two = std::env::var("TABLES").is_ok_and(|v| v == "two");
    let ring = WorkerSink::Ring(RingSink::new(rings.producer(0).unwrap(), rings));
    // fws[0] is the off side, and the on side too with one table; `parked`
    // holds whichever sink the one table is not using.
    let (mut fws, mut parked) = if two {
        (
            vec![
                common::firewall(WorkerSink::Off(NoCheckpoint), common::FLOWS * 2),
                common::firewall(ring, common::FLOWS * 2),
            ],
            None,
        )
    } else {
        (vec![common::firewall(WorkerSink::Off(NoCheckpoint), common::FLOWS * 2)], Some(ring))
    };
    let mut side = |fws: &mut Vec<Firewall<WorkerSink, KernelHugepageAlloc>>, on: bool| -> usize {
        if fws.len() == 2 {
            return on as usize;
        }
        if matches!(fws[0].sink(), WorkerSink::Ring(_)) != on {
            let other = parked.take().expect("the parked sink");
            parked = Some(std::mem::replace(fws[0].sink_mut(), other));
        }
        0
    };
    // A clock per table: with one, both sides advance it, so a connection's
    // deadlines stay in order whichever side runs.
    let mut clocks = [1u64, 1u64];
    let (mut deltas, mut ring_full) = (0u64, 0u64);
    let mut on_pass =
        |fws: &mut Vec<Firewall<WorkerSink, KernelHugepageAlloc>>, i: usize, t: &mut u64| {
            let fw = &mut fws[i];
            let (d0, f0) = (common::deltas_written(fw.counters), fw.counters.ckpt_ring_full.get());
            let r = pass(fw, &frames, t);
            deltas += common::deltas_written(fw.counters) - d0;
            ring_full += fw.counters.ckpt_ring_full.get() - f0;
            r
        };
    // Warm-up: tables populated, pages touched, caches and branch predictors.
    let i = side(&mut fws, false);
    pass(&mut fws[i], &frames, &mut clocks[i]);
    let i = side(&mut fws, true);
    on_pass(&mut fws, i, &mut clocks[i]);
    drain_inline();
    let (mut ratios, mut offs, mut ons) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu_ratios, mut cpu_offs, mut cpu_ons) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        // Alternate which side goes first, so neither always follows the other.
        let (a, b) = if r % 2 == 0 {
            let i = side(&mut fws, false);
            let a = pass(&mut fws[i], &frames, &mut clocks[i]);
            let i = side(&mut fws, true);
            (a, on_pass(&mut fws, i, &mut clocks[i]))
        } else {
            let i = side(&mut fws, true);
            let b = on_pass(&mut fws, i, &mut clocks[i]);
            let i = side(&mut fws, false);
            (pass(&mut fws[i], &frames, &mut clocks[i]), b)
        };
        drain_inline();
        let mpps = |d: Duration| frames.len() as f64 / d.as_secs_f64() / 1e6;
        offs.push(mpps(a.0));
        ons.push(mpps(b.0));
        ratios.push(a.0.as_secs_f64() / b.0.as_secs_f64());
        cpu_offs.push(mpps(a.1));
        cpu_ons.push(mpps(b.1));
        cpu_ratios.push(a.1.as_secs_f64() / b.1.as_secs_f64());
    }
    stop.store(true, Ordering::Relaxed);
    let drained = drainer.map_or(inline_drained, |d| d.join().unwrap());
    println!(
        "{} packets per pass ({:.3} deltas/packet on the on side, {} drained, ring full {}), {rounds} rounds, ring {slots} slots, {}, {}",
        frames.len(),
        deltas as f64 / ((rounds + 1) * frames.len()) as f64,
        drained,
        ring_full,
        if inline { "drained inline between passes".to_string() } else { format!("drainer idle sleep {sleep_us} us") },
        if two { "a table per side" } else { "one table, sink switched" }
    );
    println!(
        "deltas per connection life: {:.2}",
        deltas as f64 / ((rounds + 1) * common::FLOWS as usize) as f64
    );
    for (clock, offs, ons, ratios) in [
        ("wall clock", &mut offs, &mut ons, &mut ratios),
        ("worker CPU", &mut cpu_offs, &mut cpu_ons, &mut cpu_ratios),
    ] {
        let m = median(ratios);
        println!(
            "{clock}: off {:.2} Mpps, on {:.2} Mpps (medians); on/off median {m:.3} (quartiles {:.3}..{:.3})",
            median(offs),
            median(ons),
            ratios[rounds / 4],
            ratios[rounds * 3 / 4]
        );
    }
}
