//! The `pipeline_established` bench without criterion, for instruction counts:
//! builds `flows` established TCP flows, then runs `bursts` bursts of 32
//! established-traffic frames through `Firewall::process`, all inside
//! `run_bursts` so that callgrind can count only that:
//!
//!     cargo build --release -p dataplane --example profile_pipeline
//!     valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*run_bursts*' \
//!         target/release/examples/profile_pipeline 10000 2000
//!
//! Instructions per packet = the Ir total / (bursts × 32).
//!
//! `MODE=per-packet` runs each frame through `Firewall::process` alone
//! instead of staging the burst first (`stage`, then `process_staged`, as the
//! worker does): the two, compared in one build.

#[path = "../benches/common/mod.rs"]
mod common;

use std::hint::black_box;

#[inline(never)]
fn run_bursts(fw: &mut common::Fw, frames: &[Vec<u8>], bursts: usize, staged: bool) -> usize {
    let mut at = 0;
    let mut forwarded = 0;
    for _ in 0..bursts {
        let mut burst: [&[u8]; 32] = [&[]; 32];
        for b in burst.iter_mut() {
            *b = black_box(&frames[at]);
            at = if at + 1 == frames.len() { 0 } else { at + 1 };
        }
        forwarded += if staged {
            common::staged_burst(fw, &burst, 0, 2)
        } else {
            common::per_packet_burst(fw, burst, 0, 2)
        };
    }
    forwarded
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("usage: profile_pipeline FLOWS BURSTS"));
    let flows = args.next().unwrap_or(10_000);
    let bursts = args.next().unwrap_or(2_000);
    let (mut fw, frames) = common::established(flows as u32);
    let staged = !common::per_packet();
    let fwd = run_bursts(&mut fw, &frames, bursts, staged);
    assert_eq!(fwd, bursts * 32, "every established frame is forwarded");
    println!(
        "{flows} flows, {} packets, {}",
        bursts * 32,
        if staged { "staged bursts" } else { "per packet" }
    );
}
