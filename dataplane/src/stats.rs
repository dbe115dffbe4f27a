//! Per-worker, per-port counters. Each worker is the only writer of its own
//! counters, so an update is a plain load + store (no locked RMW on the packet
//! path); the main thread reads them with Relaxed loads for the stats line.

use crossbeam_utils::CachePadded;

pub use lazarus_core::stats::Counter;

/// What one worker did on one port.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Packets received on this port.
    pub rx: Counter,
    /// Packets sent out of this port.
    pub tx: Counter,
    /// Packets for this port the TX ring had no room for (freed; also in `dropped`).
    pub tx_full: Counter,
    /// Packets received on this port that did not leave, for any reason.
    pub dropped: Counter,
}

/// A plain copy of PortCounters, for sums and printing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PortTotals {
    pub rx: u64,
    pub tx: u64,
    pub tx_full: u64,
    pub dropped: u64,
}

impl PortCounters {
    pub fn snapshot(&self) -> PortTotals {
        PortTotals {
            rx: self.rx.get(),
            tx: self.tx.get(),
            tx_full: self.tx_full.get(),
            dropped: self.dropped.get(),
        }
    }
}

impl std::ops::AddAssign for PortTotals {
    fn add_assign(&mut self, o: Self) {
        self.rx += o.rx;
        self.tx += o.tx;
        self.tx_full += o.tx_full;
        self.dropped += o.dropped;
    }
}

/// The most ports a dataplane drives: DPDK's own limit in Debian's build.
pub const MAX_PORTS: usize = dpdk_sys::RTE_MAX_ETHPORTS as usize;

/// All counters of one worker, on cache lines of their own so that workers
/// never share a line. Fixed-size, so that a supervised dataplane can keep
/// them in memory the port owner reads (`shared`).
#[derive(Debug, Default)]
pub struct WorkerCounters {
    pub ports: [CachePadded<PortCounters>; MAX_PORTS],
    /// Poll rounds in which the worker found nothing on any queue.
    pub idle_polls: CachePadded<Counter>,
}

impl WorkerCounters {
    /// A fresh set that lives as long as the process.
    pub fn leaked() -> &'static WorkerCounters {
        Box::leak(Box::default())
    }
}
