//! The `checkpoint_overhead` bench without criterion, for instruction counts
//! of the worker's side only (checkpointd's drain is not counted):
//!
//!     cargo build --release -p dataplane --example profile_churn
//!     valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*run_passes*' \
//!         --toggle-collect='*profile_churn::drain*' target/release/examples/profile_churn off|ring 3 [DATA]
//!
//! Instructions per packet = the Ir total / (passes × frames per pass).
//!
//! Both modes run one type, `WorkerSink`, as the dataplane does whichever
//! `checkpoint.enabled` says: with a type per mode (`NoCheckpoint`,
//! `RingSink`) the compiler laid the two pipelines out differently, and the
//! counts differed outside the checkpoint.

#[path = "../benches/common/mod.rs"]
mod common;

use dataplane::checkpoint::{RingSink, WorkerSink};
use dataplane::dpdk::KernelHugepageAlloc;
use lazarus_core::checkpoint::{CheckpointSink, NoCheckpoint};
use lazarus_core::firewall::Firewall;
use shm_layout::DeltaConsumer;

#[inline(never)]
fn drain(c: &mut Option<DeltaConsumer<'_>>) {
    if let Some(c) = c {
        while c
            .drain(4096, |d| {
                std::hint::black_box(d.payload);
            })
            .applied
            != 0
        {}
    }
}

/// One pass in bursts of 32; the ring is drained between bursts outside the count.
#[inline(never)]
fn run_passes<S: CheckpointSink>(
    fw: &mut Firewall<S, KernelHugepageAlloc>,
    frames: &[Vec<u8>],
    now: &mut u64,
    cons: &mut Option<DeltaConsumer<'_>>,
) -> usize {
    let mut fwd = 0;
    for burst in frames.chunks(32) {
        fwd += common::run_bursts(fw, burst, now);
        drain(cons);
    }
    fwd
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "ring".into());
    let passes: usize = args
        .next()
        .map(|a| a.parse().expect("usage: profile_churn off|ring PASSES [DATA]"))
        .unwrap_or(3);
    let data: u32 = args
        .next()
        .map(|a| a.parse().expect("DATA: packets per connection life"))
        .unwrap_or(common::DATA);
    let frames = common::churn_frames_with(data);
    let mut now = 1;
    let fwd = if mode == "off" {
        let mut fw = common::firewall(WorkerSink::Off(NoCheckpoint), common::FLOWS * 2);
        (0..passes).map(|_| run_passes(&mut fw, &frames, &mut now, &mut None)).sum::<usize>()
    } else {
        let rings = common::scratch_rings(65536);
        let mut cons = Some(rings.consumer(0).unwrap());
        let mut fw = common::firewall(
            WorkerSink::Ring(RingSink::new(rings.producer(0).unwrap(), rings)),
            common::FLOWS * 2,
        );
        let n =
            (0..passes).map(|_| run_passes(&mut fw, &frames, &mut now, &mut cons)).sum::<usize>();
        let deltas = common::deltas_written(fw.counters);
        println!("{deltas} deltas, ring full {}", fw.counters.ckpt_ring_full.get());
        n
    };
    assert_eq!(fwd, passes * frames.len(), "the churn workload is valid traffic");
    println!("{mode}: {} packets", passes * frames.len());
}
