//! What this machine's memory allows a packet at a million flows: cycles for
//! a cache line fetched at random from a table far larger than the last-level
//! cache, one at a time (latency) and a burst's worth together (what the
//! memory system keeps in flight), in kernel hugepages as the tables are.
//!
//! usage: memory_floor [MiB=256] [lines a record=3]
use allocator_api2::alloc::{Allocator, Layout};
use dataplane::dpdk::{rdtsc, KernelHugepageAlloc};

const LINE: usize = 64;
const BURST: usize = 32;

/// xorshift: the addresses must defeat every prefetcher.
fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let mib = args.first().copied().unwrap_or(256);
    let per_record = args.get(1).copied().unwrap_or(3).max(1);
    let len = mib << 20;
    let layout = Layout::from_size_align(len, 4096).expect("a page-aligned layout");
    let block = KernelHugepageAlloc.allocate(layout).expect("hugepages: run scripts/setup.sh");
    let base = block.cast::<u8>();
    let lines = len / LINE;
    // SAFETY: base..base+len is the zeroed mapping just allocated, ours alone.
    let mem = unsafe { std::slice::from_raw_parts_mut(base.as_ptr(), len) };

    // A random cycle through every line, for the dependent chase.
    let mut order: Vec<usize> = (0..lines).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..lines).rev() {
        order.swap(i, (next(&mut seed) % (i as u64 + 1)) as usize);
    }
    for w in 0..lines {
        let (from, to) = (order[w], order[(w + 1) % lines]);
        mem[from * LINE..from * LINE + 8].copy_from_slice(&(to as u64).to_ne_bytes());
    }
    let chase = 2_000_000usize.min(lines);
    let mut at = order[0];
    let t = rdtsc();
    for _ in 0..chase {
        at =
            u64::from_ne_bytes(mem[at * LINE..at * LINE + 8].try_into().expect("8 bytes")) as usize;
    }
    let latency = (rdtsc() - t) as f64 / chase as f64;
    std::hint::black_box(at);

    // Bursts of records fetched together: every line of each, summed.
    let records = lines / per_record;
    let bursts = 200_000usize;
    let mut sum = 0u64;
    let mut starts = [0usize; BURST];
    let t = rdtsc();
    for _ in 0..bursts {
        for s in starts.iter_mut() {
            *s = (next(&mut seed) % records as u64) as usize * per_record * LINE;
        }
        for &s in &starts {
            for l in 0..per_record {
                sum = sum.wrapping_add(u64::from(mem[s + l * LINE]));
            }
        }
    }
    let a_record = (rdtsc() - t) as f64 / (bursts * BURST) as f64;
    std::hint::black_box(sum);

    println!(
        "{mib} MiB: one line at a time {latency:.0} cycles; a burst of {BURST} records of \
         {per_record} lines, {a_record:.1} cycles a record ({:.1} a line)",
        a_record / per_record as f64
    );
    // SAFETY: block came from this allocator with this layout.
    unsafe { KernelHugepageAlloc.deallocate(base, layout) };
}
