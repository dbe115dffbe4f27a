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

#[path = "../benches/common/mod.rs"]
mod common;

use dataplane::dpdk::KernelHugepageAlloc;
use dataplane::checkpoint::{CheckpointSink, NoCheckpoint, RingSink};
use dataplane::config::ConntrackSection;
use dataplane::firewall::Firewall;
use shm_layout::{RingsGeometry, RingsSegment};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn firewall<S: CheckpointSink>(sink: S) -> Firewall<S, KernelHugepageAlloc> {
    let ct = ConntrackSection { capacity: common::FLOWS * 2, ..Default::default() };
    Firewall::new(&ct, Arc::new(Default::default()), vec![0, 0], 2_450_000_000, KernelHugepageAlloc, sink, Arc::new(Default::default()))
}

/// One pass; returns its duration.
fn pass<S: CheckpointSink>(fw: &mut Firewall<S, KernelHugepageAlloc>, frames: &[Vec<u8>], now: &mut u64) -> Duration {
    let t = Instant::now();
    let fwd = common::run_bursts(fw, frames, now);
    let d = t.elapsed();
    assert_eq!(fwd, frames.len(), "the churn workload is valid traffic");
    d
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map(|a| a.parse().expect("usage: overhead_paired [ROUNDS] [DATA] [SLEEP_US]")).unwrap_or(31);
    let data: u32 = args.next().map(|a| a.parse().expect("DATA: data packets per connection life")).unwrap_or(common::DATA);
    let sleep_us: u64 = args.next().map(|a| a.parse().expect("SLEEP_US: drainer idle sleep")).unwrap_or(50);
    let slots: u32 = std::env::var("RING_SLOTS").ok().map_or(65536, |v| v.parse().expect("RING_SLOTS: a power of two"));
    let frames = common::churn_frames_with(data);

    let path = std::env::temp_dir().join(format!("lazarus-overhead-rings-{}", std::process::id()));
    let rings: &'static RingsSegment = Box::leak(Box::new(RingsSegment::create_file(&path, RingsGeometry { workers: 1, slots_per_ring: slots }).unwrap()));
    let _ = std::fs::remove_file(&path);
    let stop = Arc::new(AtomicBool::new(false));
    let drainer = common::spawn_drainer(rings, stop.clone(), sleep_us);

    let mut off = firewall(NoCheckpoint);
    let mut on = firewall(RingSink::new(rings.producer(0).unwrap()));
    let (mut t_off, mut t_on) = (1u64, 1u64);
    // Warm-up: tables populated, pages touched, caches and branch predictors.
    pass(&mut off, &frames, &mut t_off);
    pass(&mut on, &frames, &mut t_on);
    let (mut ratios, mut offs, mut ons) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        // Alternate which side goes first, so neither always follows the other.
        let (a, b) = if r % 2 == 0 {
            let a = pass(&mut off, &frames, &mut t_off);
            (a, pass(&mut on, &frames, &mut t_on))
        } else {
            let b = pass(&mut on, &frames, &mut t_on);
            (pass(&mut off, &frames, &mut t_off), b)
        };
        let mpps = |d: Duration| frames.len() as f64 / d.as_secs_f64() / 1e6;
        offs.push(mpps(a));
        ons.push(mpps(b));
        ratios.push(a.as_secs_f64() / b.as_secs_f64());
    }
    stop.store(true, Ordering::Relaxed);
    let drained = drainer.join().unwrap();
    let deltas: u64 = on.counters.ckpt.iter().map(|c| c.get()).sum::<u64>() + on.counters.ckpt_deletes.get();
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{} packets per pass ({:.3} deltas/packet, {} drained, ring full {}), {rounds} rounds, ring {slots} slots, drainer idle sleep {sleep_us} us",
        frames.len(),
        deltas as f64 / ((rounds + 1) * frames.len()) as f64,
        drained,
        on.counters.ckpt_ring_full.get()
    );
    let lives = ((rounds + 1) * common::FLOWS as usize) as f64;
    println!(
        "deltas per connection life: ip {:.2}, tcp {:.2}, delete {:.2}",
        on.counters.ckpt[dataplane::modules::Module::Ip as usize].get() as f64 / lives,
        on.counters.ckpt[dataplane::modules::Module::Tcp as usize].get() as f64 / lives,
        on.counters.ckpt_deletes.get() as f64 / lives
    );
    println!(
        "off {:.2} Mpps, on {:.2} Mpps (medians); on/off median {:.3} (quartiles {:.3}..{:.3})",
        median(&mut offs),
        median(&mut ons),
        median(&mut ratios),
        sorted[rounds / 4],
        sorted[rounds * 3 / 4]
    );
}
