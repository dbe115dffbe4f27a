//! Staging a burst before the one before it is tracked, against tracking
//! each burst as soon as it is staged, alternated in one process over the
//! same established flows (the worker does the first; see
//! `Firewall::stage_burst`). Prints TSC cycles a packet for each and their
//! ratio, round by round.
//!
//!     cargo run --release -p dataplane --example pipeline_ahead -- 1000000 100000 5
#[path = "../benches/common/mod.rs"]
mod common;

use lazarus_core::firewall::{FrameBurst, StagedBurst};
use std::hint::black_box;

const BURST: usize = 32;

fn rdtsc() -> u64 {
    // SAFETY: rdtsc reads a counter; no memory is touched.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

/// The frames of burst `k`.
fn burst_at<'f>(frames: &'f [Vec<u8>], k: usize, out: &mut [&'f [u8]; BURST]) {
    for (j, f) in out.iter_mut().enumerate() {
        *f = black_box(&frames[(k * BURST + j) % frames.len()]);
    }
}

#[inline(never)]
fn each_at_once(fw: &mut common::Fw, frames: &[Vec<u8>], bursts: usize) -> usize {
    let mut staged = StagedBurst::new();
    let mut fwd = 0;
    let mut b: [&[u8]; BURST] = [&[]; BURST];
    for k in 0..bursts {
        burst_at(frames, k, &mut b);
        let mut fb = FrameBurst::new(&b);
        fw.process_burst(&mut staged, &mut fb, 0, 2);
        fwd += fb.forwarded;
    }
    fwd
}

#[inline(never)]
fn one_ahead(fw: &mut common::Fw, frames: &[Vec<u8>], bursts: usize) -> usize {
    let mut staged = [StagedBurst::new(), StagedBurst::new()];
    let mut b: [[&[u8]; BURST]; 2] = [[&[]; BURST]; 2];
    let mut fwd = 0;
    burst_at(frames, 0, &mut b[0]);
    fw.stage_burst(&mut staged[0], &FrameBurst::new(&b[0]), 0);
    for k in 1..=bursts {
        let (cur, prev) = (k % 2, (k - 1) % 2);
        if k < bursts {
            burst_at(frames, k, &mut b[cur]);
            fw.stage_burst(&mut staged[cur], &FrameBurst::new(&b[cur]), 0);
        }
        let mut fb = FrameBurst::new(&b[prev]);
        fw.finish_burst(&mut staged[prev], &mut fb, 0, 2);
        fwd += fb.forwarded;
    }
    fwd
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("usage: FLOWS BURSTS ROUNDS"));
    let flows = args.next().unwrap_or(1_000_000);
    let bursts = args.next().unwrap_or(100_000);
    let rounds = args.next().unwrap_or(5);
    let (mut fw, frames) = common::established(flows as u32);
    let packets = (bursts * BURST) as f64;
    let mut ratios = Vec::new();
    for r in 1..=rounds {
        let t = rdtsc();
        assert_eq!(each_at_once(&mut fw, &frames, bursts), bursts * BURST);
        let at_once = (rdtsc() - t) as f64 / packets;
        let t = rdtsc();
        assert_eq!(one_ahead(&mut fw, &frames, bursts), bursts * BURST);
        let ahead = (rdtsc() - t) as f64 / packets;
        ratios.push(at_once / ahead);
        println!("round {r}: {flows} flows, each burst at once {at_once:.1} cycles a packet, one burst ahead {ahead:.1} (speed ahead ÷ at once {:.3})", at_once / ahead);
    }
    ratios.sort_by(f64::total_cmp);
    println!("median speed ratio {:.3}", ratios[ratios.len() / 2]);
}
