//! What a supervised dataplane's processes share (docs/RESTART.md): the port
//! owner reserves it, the worker processes find it. Each worker's counters
//! live here, so telemetry, which only the port owner serves, reads the live
//! figures of whichever process runs the workers, and they carry on across a
//! worker restart instead of falling back to zero.

use crate::stats::WorkerCounters;
use lazarus_core::stats::FwCounters;
use std::sync::atomic::{AtomicU32, AtomicU64};

/// The most workers a dataplane runs.
pub const MAX_WORKERS: usize = 64;

/// The memzone's name.
pub const MEMZONE: &str = "lazarus_shared";

/// The build that laid the memory out: a worker process of another build
/// (started by hand from a newer binary) reads other offsets, so it refuses.
pub const BUILD: u64 = {
    let v = env!("CARGO_PKG_VERSION").as_bytes();
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ std::mem::size_of::<SharedState>() as u64;
    let mut i = 0;
    while i < v.len() {
        h = (h ^ v[i] as u64).wrapping_mul(0x100_0000_01b3);
        i += 1;
    }
    h
};

#[derive(Debug, Default)]
pub struct SharedWorker {
    pub counters: WorkerCounters,
    pub fw: FwCounters,
    /// Poll rounds, counted by the worker whatever it finds: the port
    /// owner's watchdog reads a worker that stopped counting as hung.
    pub rounds: crossbeam_utils::CachePadded<lazarus_core::stats::Counter>,
}

#[derive(Debug)]
pub struct SharedState {
    pub build: u64,
    pub workers: [SharedWorker; MAX_WORKERS],
    /// The worker process that holds the active lock, 0 before the first.
    pub active_pid: AtomicU32,
    /// The worker process the last activation replaced.
    pub replaced_pid: AtomicU32,
    /// Worker processes that became active: the first start, then each takeover.
    pub activations: AtomicU64,
    /// The last activation, from holding the lock to polling: the drain
    /// wait, the restore and the lcore launch.
    pub activation_us: AtomicU64,
    /// How long the last restore took.
    pub restore_us: AtomicU64,
    /// Worker processes that ended (killed, crashed or stopped), as the port
    /// owner reaped them.
    pub worker_exits: AtomicU64,
    /// Worker processes with EAL up, tables built, waiting for the lock (the
    /// port owner counts them each tick).
    pub standbys: AtomicU32,
    /// Active worker processes the watchdog killed because their workers
    /// stopped polling.
    pub watchdog_kills: AtomicU64,
    /// The last worker process that stood by (the port owner waits for it
    /// before it starts the next).
    pub ready_pid: AtomicU32,
}

impl Default for SharedState {
    fn default() -> Self {
        SharedState {
            build: BUILD,
            workers: std::array::from_fn(|_| SharedWorker::default()),
            active_pid: AtomicU32::new(0),
            replaced_pid: AtomicU32::new(0),
            activations: AtomicU64::new(0),
            activation_us: AtomicU64::new(0),
            restore_us: AtomicU64::new(0),
            worker_exits: AtomicU64::new(0),
            standbys: AtomicU32::new(0),
            watchdog_kills: AtomicU64::new(0),
            ready_pid: AtomicU32::new(0),
        }
    }
}
