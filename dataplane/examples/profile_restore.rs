//! The `restore/1m_connections` bench without criterion, for wall time and
//! instruction counts of the rebuild alone, with the store and tables in
//! hugepages as in the dataplane:
//!
//!     cargo build --release -p dataplane --example profile_restore
//!     target/release/examples/profile_restore 1000000 1 9  # one worker, 9 rounds
//!     target/release/examples/profile_restore 1000000 2 9  # two workers, one thread each, as the dataplane restores
//!
//! Each round rebuilds into fresh tables (allocated and touched before the
//! clock starts, as the dataplane allocates before it restores); the median
//! and the range of the rounds are printed.
//!     valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*rebuild*' \
//!         target/release/examples/profile_restore 100000
//!
//! Instructions per connection = the Ir total / connections.

#[path = "../benches/common/mod.rs"]
mod common;

use dataplane::dpdk::KernelHugepageAlloc;
use lazarus_core::checkpoint::NoCheckpoint;
use lazarus_core::firewall::Firewall;

type Fw = Firewall<NoCheckpoint, KernelHugepageAlloc>;

#[inline(never)]
fn rebuild(fw: &mut Fw, store: &shm_layout::StoreSegment, worker: u16, workers: u16) -> u64 {
    let placement = lazarus_core::placement::Placement::spread(workers);
    fw.restore_from_store(store, worker, &placement, 10).restored
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u32>().expect("usage: profile_restore CONNECTIONS [WORKERS] [ROUNDS]"));
    let n = args.next().unwrap_or(100_000);
    let workers = args.next().unwrap_or(1).max(1) as u16;
    let rounds = args.next().unwrap_or(1).max(1);
    let store = common::store_for(n, workers);
    let share = n / workers as u32 + 1;
    let capacity = share + share / 8;
    let mut ms = Vec::new();
    for _ in 0..rounds {
        let mut fws: Vec<Fw> =
            (0..workers).map(|_| common::firewall(NoCheckpoint, capacity)).collect();
        let t = std::time::Instant::now();
        let restored: u64 = if workers == 1 {
            rebuild(&mut fws[0], &store, 0, 1)
        } else {
            std::thread::scope(|s| {
                let store = &store;
                let jobs: Vec<_> = fws
                    .iter_mut()
                    .enumerate()
                    .map(|(w, fw)| s.spawn(move || rebuild(fw, store, w as u16, workers)))
                    .collect();
                jobs.into_iter().map(|j| j.join().unwrap()).sum()
            })
        };
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(restored, n as u64);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "{n} connections restored by {workers} worker(s): median {:.1} ms over {rounds} round(s) (min {:.1}, max {:.1})",
        ms[ms.len() / 2],
        ms[0],
        ms[ms.len() - 1]
    );
}
