//! The poll-mode worker: one per lcore, owning its RX queues and one TX queue
//! on every port. It shares nothing with other workers.

use crate::checkpoint::WorkerSink;
use crate::config::Lane;
use crate::dpdk::{rdtsc, HugepageAlloc, LcoreTask, Mbuf, MbufBurst, SharedPool, POOL_NAME};
use crate::stats::WorkerCounters;
use lazarus_core::firewall::{Firewall, StagedBurst};
use lazarus_core::stats::FwCounters;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

/// A lane resolved to DPDK port ids.
#[derive(Debug, Clone, Copy)]
pub struct PortLane {
    pub lane: Lane,
    pub rx_port_id: u16,
    pub tx_port_id: u16,
}

pub struct Worker {
    pub index: usize,
    pub lcore: u32,
    pub lanes: Vec<PortLane>,
    pub burst: usize,
    pub idle_sleep: Duration,
    pub idle_polls: u32,
    /// Shared with telemetry, which reads them from its own thread.
    pub counters: &'static WorkerCounters,
    pub quit: Arc<AtomicBool>,
    /// The worker's connection tracker; None bridges without state
    /// (`conntrack.enabled = false`). The mutex is taken once, when the worker
    /// starts, never per packet: it only hands the tracker to the lcore thread.
    pub firewall: Option<Mutex<WorkerFirewall>>,
    pub fw_counters: &'static FwCounters,
    /// Counted every poll round (a supervised dataplane's watchdog reads it).
    pub rounds: &'static lazarus_core::stats::Counter,
}

pub type WorkerFirewall = Firewall<WorkerSink, HugepageAlloc>;

// Every packet of a received burst can be staged.
const _: () = assert!(crate::dpdk::MAX_BURST <= lazarus_core::firewall::STAGE_MAX);

impl Worker {
    /// One poll round over every lane; returns the packets received.
    #[inline]
    fn poll_once(
        &self,
        burst: &mut MbufBurst,
        staged: &mut StagedBurst,
        mut fw: Option<&mut WorkerFirewall>,
        now: u64,
    ) -> usize {
        let mut got = 0;
        for pl in &self.lanes {
            let n = burst.rx(pl.rx_port_id, pl.lane.rx_queue, self.burst);
            if n == 0 {
                continue;
            }
            got += n;
            let rxc = &self.counters.ports[pl.lane.rx_port];
            if let Some(fw) = fw.as_deref_mut() {
                let dropped = fw.process_burst(staged, burst, pl.lane.rx_port, now);
                if dropped != 0 {
                    rxc.dropped.add(dropped as u64);
                }
            }
            let out = burst.tx(pl.tx_port_id, pl.lane.tx_queue);
            let txc = &self.counters.ports[pl.lane.tx_port];
            rxc.rx.add(n as u64);
            txc.tx.add(out.sent as u64);
            if out.unsent != 0 {
                txc.tx_full.add(out.unsent as u64);
                rxc.dropped.add(out.unsent as u64);
            }
        }
        got
    }
}

impl Worker {
    /// Sends the frames the firewall wrote itself (protected connections),
    /// each on this worker's TX queue of its port, from the packet pool.
    fn send_outbox(&self, fw: &mut WorkerFirewall, pool: &mut Option<SharedPool>) {
        if fw.outbox().is_empty() {
            return;
        }
        if pool.is_none() {
            *pool = SharedPool::lookup(POOL_NAME);
        }
        let pool = *pool;
        // Frames for one port go out in one burst (a TX call for each run
        // of frames to the same port, not for each frame).
        let mut run: Option<(usize, MbufBurst)> = None;
        fw.outbox().drain(|port, bytes| {
            let txc = &self.counters.ports[port];
            let Some(mut m) = pool.and_then(Mbuf::alloc_shared) else {
                txc.tx_full.add(1);
                return;
            };
            if !m.append(bytes) {
                txc.tx_full.add(1);
                return;
            }
            if run.as_ref().is_some_and(|(p, _)| *p != port) {
                self.send_run(run.take());
            }
            let (_, b) = run.get_or_insert_with(|| (port, MbufBurst::new()));
            if let Err(m) = b.push(m) {
                self.send_run(run.take());
                let mut b = MbufBurst::new();
                let _ = b.push(m);
                run = Some((port, b));
            }
        });
        self.send_run(run);
    }

    /// Sends a run of outbox frames on its port's TX queue of this worker;
    /// what the queue does not take is counted and freed.
    fn send_run(&self, run: Option<(usize, MbufBurst)>) {
        let Some((port, mut b)) = run else { return };
        let txc = &self.counters.ports[port];
        let Some(pl) = self.lanes.iter().find(|pl| pl.lane.tx_port == port) else {
            txc.tx_full.add(b.len() as u64);
            return;
        };
        let out = b.tx(pl.tx_port_id, pl.lane.tx_queue);
        txc.tx.add(u64::from(out.sent));
        txc.tx_full.add(u64::from(out.unsent));
    }
}

impl LcoreTask for Worker {
    fn run(&self) {
        tracing::info!(
            worker = self.index,
            lcore = self.lcore,
            lanes = self.lanes.len(),
            "worker polling"
        );
        let mut burst = MbufBurst::new();
        let mut staged = StagedBurst::new();
        let mut idle = 0u32;
        let mut pool = None;
        let mut guard = self.firewall.as_ref().map(|m| m.lock().unwrap_or_else(|e| e.into_inner()));
        // Relaxed is enough: the flag carries no data, and the main thread joins
        // the lcore (rte_eal_mp_wait_lcore) before it reads anything we wrote.
        while !self.quit.load(Ordering::Relaxed) {
            // One TSC read a round, for the packets and the housekeeping
            // after them: a read is slow in a VM.
            let now = rdtsc();
            self.rounds.add(1);
            let got = self.poll_once(&mut burst, &mut staged, guard.as_deref_mut(), now);
            if let Some(fw) = guard.as_deref_mut() {
                fw.housekeeping(now);
                self.send_outbox(fw, &mut pool);
            }
            if got != 0 {
                idle = 0;
                continue;
            }
            self.counters.idle_polls.add(1);
            if !self.idle_sleep.is_zero() {
                idle += 1;
                if idle >= self.idle_polls {
                    // Only reached when every queue was empty for idle_polls rounds:
                    // gives the core back on shared machines (config: idle_sleep_us).
                    std::thread::sleep(self.idle_sleep);
                }
            }
        }
        tracing::info!(worker = self.index, lcore = self.lcore, "worker stopped");
    }
}

/// Gives each protected service of `fw` its own reserved log memory (a
/// slot of `log_bound` per connection it may hold); a service whose
/// reservation the machine refuses keeps the heap, and says so.
pub fn reserve_log_memory<S, A>(
    fw: &mut Firewall<S, A>,
    services: &[lazarus_core::config::ProtectedService],
) where
    S: lazarus_core::checkpoint::CheckpointSink,
    A: lazarus_core::conn::table::TableMemory,
{
    for (i, s) in services.iter().enumerate().take(lazarus_core::stats::MAX_PROTECTED) {
        match crate::dpdk::ReservedLogs::reserve(s.log_bound as usize, s.connections as usize) {
            Ok(logs) => fw.set_log_memory(i, lazarus_core::protect::LogMemory(logs)),
            Err(e) => tracing::warn!(
                service = %format!("{}:{}", s.addr, s.port),
                "protected logs stay on the heap (they reallocate as they grow): {e}"
            ),
        }
    }
}
