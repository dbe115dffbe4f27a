//! The `restore/1m_connections` bench without criterion, for instruction
//! counts of the rebuild alone:
//!
//!     cargo build --release -p dataplane --example profile_restore
//!     valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*rebuild*' \
//!         target/release/examples/profile_restore 100000
//!
//! Instructions per connection = the Ir total / connections.

#[path = "../benches/common/mod.rs"]
mod common;

use allocator_api2::alloc::Global;
use dataplane::checkpoint::restore::restore_worker;
use dataplane::checkpoint::NoCheckpoint;
use dataplane::config::ConntrackSection;
use dataplane::firewall::Firewall;
use std::sync::Arc;

#[inline(never)]
fn rebuild(fw: &mut Firewall<NoCheckpoint, Global>, store: &shm_layout::StoreSegment) -> u64 {
    restore_worker(fw, store, 0, 10).restored
}

fn main() {
    let n: u32 = std::env::args().nth(1).map(|a| a.parse().expect("usage: profile_restore CONNECTIONS")).unwrap_or(100_000);
    let store = common::store_of(n);
    let ct = ConntrackSection { capacity: n + n / 8, ..Default::default() };
    let mut fw = Firewall::new(&ct, Arc::new(Default::default()), vec![0, 0], 2_450_000_000, Global, NoCheckpoint, Arc::new(Default::default()));
    let t = std::time::Instant::now();
    let restored = rebuild(&mut fw, &store);
    assert_eq!(restored, n as u64);
    println!("{n} connections restored in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
}
