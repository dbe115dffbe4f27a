//! Once a poll round, after the burst: expire what timed out, answer an
//! operator's flush a slice at a time, let the checkpointer catch up, and
//! refresh the gauges other threads read.

use super::Firewall;
use crate::checkpoint::CheckpointSink;
use crate::conn::table::TableMemory;
use crate::conn::SlotId;
use crate::modules::tcp::TcpState;
use crate::modules::L4Portion;
use std::sync::atomic::Ordering::Relaxed;

/// Slab positions an operator's flush empties per poll round: a flush of a
/// large table is spread over rounds instead of stalling the worker.
pub(super) const FLUSH_BATCH: usize = 1024;

/// Connections by layer-4 portion and TCP state, kept exact on insert, state
/// change and removal; plain integers, since only the worker touches them.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Tally {
    /// tcp, udp, icmp, other.
    l4: [u64; 4],
    tcp_states: [u64; TcpState::COUNT],
}

impl Tally {
    fn slot(l4: &L4Portion) -> usize {
        match l4 {
            L4Portion::Tcp(_) => 0,
            L4Portion::Udp(_) => 1,
            L4Portion::Icmp(_) => 2,
            L4Portion::Other => 3,
        }
    }
    pub fn on(&mut self, l4: &L4Portion) {
        self.l4[Self::slot(l4)] += 1;
        if let L4Portion::Tcp(t) = l4 {
            self.tcp_states[t.state as usize] += 1;
        }
    }
    pub fn off(&mut self, l4: &L4Portion) {
        let i = Self::slot(l4);
        self.l4[i] = self.l4[i].saturating_sub(1);
        if let L4Portion::Tcp(t) = l4 {
            let s = &mut self.tcp_states[t.state as usize];
            *s = s.saturating_sub(1);
        }
    }
    #[inline(always)]
    pub fn moved(&mut self, from: TcpState, to: TcpState) {
        if from != to {
            self.tcp_states[from as usize] = self.tcp_states[from as usize].saturating_sub(1);
            self.tcp_states[to as usize] += 1;
        }
    }
}

/// The state of the round's chores.
pub(super) struct Housekeeping {
    /// Slab positions the expiry sweep looks at per round.
    sweep_batch: usize,
    /// TSC ticks between two copies of the tallies into the gauges.
    gauge_every: u64,
    next_gauge: u64,
    /// Slab position of an operator's flush under way.
    pub(super) flush_cursor: Option<usize>,
}

impl Housekeeping {
    pub fn new(sweep_batch: usize, tsc_hz: u64) -> Self {
        Housekeeping { sweep_batch, gauge_every: tsc_hz / 10, next_gauge: 0, flush_cursor: None }
    }
}

impl<S: CheckpointSink, A: TableMemory> Firewall<S, A> {
    /// Expires what timed out, answers a flush request, lets the
    /// checkpointer catch up, refreshes the gauges; call once per poll round.
    #[inline]
    pub fn housekeeping(&mut self, now: u64) {
        let Firewall { table, counters, checkpoint, ftp, tally, chores, .. } = self;
        table.sweep(now, chores.sweep_batch, |_, conn| {
            if let Some(m) = conn.l4.module() {
                counters.expired[m as usize].add(1);
            }
            ftp.release(conn.ftp);
            tally.off(&conn.l4);
            checkpoint.removed(&conn, now);
        });
        self.counters.live.set(self.table.len() as u64);
        if !self.ftp.expectations.is_empty() {
            self.ftp.expectations.expire(now);
        }
        // Relaxed: the flag carries no data; the worker only has to see it soon.
        // Taken (swapped to false) when a walk starts, so that a request made
        // during a walk starts another one instead of being absorbed by it;
        // the plain load first keeps the locked swap off the common path.
        let flush = &self.counters.requests.flush;
        if self.chores.flush_cursor.is_none() && flush.load(Relaxed) && flush.swap(false, Relaxed) {
            self.chores.flush_cursor = Some(0);
        }
        if self.chores.flush_cursor.is_some() {
            self.flush_step(now);
        }
        self.checkpoint.reemit(&mut self.table, &self.ftp, now);
        self.checkpoint.publish();
        if now >= self.chores.next_gauge {
            self.chores.next_gauge = now.saturating_add(self.chores.gauge_every);
            self.publish_gauges();
        }
    }

    /// Copies the tallies into the gauges other threads read.
    fn publish_gauges(&self) {
        let g = &self.counters.gauges;
        for (c, v) in [&g.tcp, &g.udp, &g.icmp, &g.other].into_iter().zip(self.tally.l4) {
            c.set(v);
        }
        for (c, v) in g.tcp_states.iter().zip(self.tally.tcp_states) {
            c.set(v);
        }
        g.ftp.set(self.ftp.in_use() as u64);
        g.expectations.set(self.ftp.expectations.len() as u64);
        self.counters.live.set(self.table.len() as u64);
        g.refreshes.add(1);
    }

    /// One round of an operator's flush: removes the connections of the next
    /// `FLUSH_BATCH` slab positions, each with a checkpoint delete so that
    /// checkpointd's store follows. Waits (next round) while the sink is full
    /// rather than lose deletes.
    fn flush_step(&mut self, now: u64) {
        let mut i = self.chores.flush_cursor.unwrap_or(0);
        let cap = self.table.capacity();
        let end = (i + FLUSH_BATCH).min(cap);
        while i < end {
            if self.table.at_mut(i).is_some() {
                if !self.checkpoint.has_room(1) {
                    break;
                }
                if let Some(conn) = self.table.remove(SlotId(i as u32)) {
                    self.counters.flushed.add(1);
                    self.ftp.release(conn.ftp);
                    self.tally.off(&conn.l4);
                    self.checkpoint.removed(&conn, now);
                }
            }
            i += 1;
        }
        if i < cap {
            self.chores.flush_cursor = Some(i);
            return;
        }
        self.chores.flush_cursor = None;
        // The data connections the flushed control connections expected.
        self.ftp.expectations.expire(u64::MAX);
        self.counters.live.set(self.table.len() as u64);
        self.publish_gauges();
    }
}
