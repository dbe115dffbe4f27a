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
        if !self.protection.is_off() {
            self.protection.poll(now, self.counters, &mut self.checkpoint.sink);
        }
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

#[cfg(test)]
mod tests {
    use crate::firewall::testing::*;

    use crate::checkpoint::MemorySink;
    use crate::firewall::housekeeping::FLUSH_BATCH;
    use crate::firewall::*;

    use crate::frames::{tcp, tcp_flags::*, udp};
    use crate::modules::tcp::{self, TcpState};
    use crate::modules::{L4Portion, Module};

    use crate::portion::Portion;
    use allocator_api2::alloc::Global;

    #[test]
    fn a_full_ring_marks_portions_dirty_and_the_sweep_writes_them_later() {
        let mut a = fw(MemorySink { room: Some(1), ..Default::default() });
        open(&mut a, 40001);
        assert!(a.counters.ckpt_ring_full.get() > 0);
        assert!(!a
            .checkpoint
            .sink
            .store
            .contains_key(&(a.table().iter().next().unwrap().1.id.0, Module::Tcp as u8)));
        a.checkpoint.sink.room = None;
        a.housekeeping(2);
        let conn = *a.table().iter().next().unwrap().1;
        assert_eq!(conn.dirty, 0);
        assert!(a.counters.ckpt_reemitted.get() > 0);
        let (_, tcp_bytes) = &a.checkpoint.sink.store[&(conn.id.0, Module::Tcp as u8)];
        let L4Portion::Tcp(live) = conn.l4 else { panic!() };
        assert_eq!(
            tcp::TcpPortion::decode(tcp_bytes).unwrap().state,
            live.state,
            "the store converged to the live state"
        );
    }

    #[test]
    fn a_connection_is_stored_whole_or_not_at_all() {
        // Room for one delta when the connection is first stored: writing its
        // ip portion alone would leave a store that restores it without its
        // TCP state.
        let mut a = fw(MemorySink { room: Some(1), ..Default::default() });
        open(&mut a, 40005);
        let id = a.table().iter().next().unwrap().1.id.0;
        assert!(
            !a.checkpoint.sink.store.keys().any(|k| k.0 == id),
            "no portion is written while the whole connection does not fit"
        );
        a.checkpoint.sink.room = Some(2);
        a.housekeeping(2);
        assert!(a.checkpoint.sink.store.contains_key(&(id, Module::Ip as u8)));
        assert!(a.checkpoint.sink.store.contains_key(&(id, Module::Tcp as u8)));
        assert_eq!(a.table().iter().next().unwrap().1.dirty, 0);
    }

    #[test]
    fn a_late_delete_does_not_remove_a_newer_connection_with_the_same_id() {
        let mut a = fw(MemorySink::default());
        open(&mut a, 40030);
        let id = a.table().iter().next().unwrap().1.id.0;
        // It expires while the ring is full: its delete waits.
        a.checkpoint.sink.room = Some(0);
        let t = u64::MAX / 2;
        for _ in 0..64 {
            a.housekeeping(t);
        }
        assert_eq!(a.table().len(), 0);
        // The same four-tuple opens again once there is room, before the
        // waiting delete is sent.
        a.checkpoint.sink.room = None;
        let syn = tcp(C, S, (40030, 80), SYN, (7000, 0), b"");
        let syn_ack = tcp(S, C, (80, 40030), SYN | ACK, (8000, 7001), b"");
        assert_eq!(a.process(&syn, 0, t + 1), Verdict::Forward);
        assert_eq!(a.process(&syn_ack, 1, t + 1), Verdict::Forward);
        a.housekeeping(t + 2);
        let s = &a.checkpoint.sink;
        assert!(s.store.contains_key(&(id, Module::Ip as u8)), "the new connection is stored");
        let (_, b) = &s.store[&(id, Module::Tcp as u8)];
        assert_eq!(tcp::TcpPortion::decode(b).unwrap().state, TcpState::SynRecv);
    }

    #[test]
    fn a_delete_waiting_in_the_checkpointer_sorts_before_a_newer_connection() {
        // The checkpointer alone, the delete sent after the new connection's
        // portions: its version still tells the store it is the older one's.
        let mut a = fw(MemorySink::default());
        open(&mut a, 40031);
        let mut conn = *a.table().iter().next().unwrap().1;
        a.checkpoint.sink.room = Some(0);
        a.checkpoint.removed(&conn, 5);
        a.checkpoint.sink.room = None;
        conn.dirty = 0;
        a.checkpoint.emit_all(&mut conn, &a.ftp, 5);
        a.checkpoint.send_pending_deletes();
        assert_eq!(a.checkpoint.sink.stale_deletes, 1);
        assert!(a.checkpoint.sink.store.contains_key(&(conn.id.0, Module::Tcp as u8)));
    }

    #[test]
    fn lost_deletes_are_swept_from_the_store_after_a_full_rewrite() {
        let mut a = fw(MemorySink::default());
        a.checkpoint.set_pending_cap(1);
        for port in 40040..40043 {
            open(&mut a, port);
        }
        // All three expire while the ring is full: one delete waits, two
        // are lost.
        a.checkpoint.sink.room = Some(0);
        for _ in 0..64 {
            a.housekeeping(u64::MAX / 2);
        }
        assert_eq!(a.table().len(), 0);
        assert_eq!(a.counters.ckpt_deletes_lost.get(), 2);
        // A live connection opened once there is room again.
        a.checkpoint.sink.room = None;
        let t = u64::MAX / 2 + 1;
        let live = tcp(C, S, (40050, 80), SYN, (7000, 0), b"");
        let live_ack = tcp(S, C, (80, 40050), SYN | ACK, (8000, 7001), b"");
        assert_eq!(a.process(&live, 0, t), Verdict::Forward);
        assert_eq!(a.process(&live_ack, 1, t), Verdict::Forward);
        for r in 0..4 {
            a.housekeeping(t + 1 + r);
        }
        let ids: std::collections::BTreeSet<u64> =
            a.checkpoint.sink.store.keys().map(|k| k.0).collect();
        let live_id = a.table().iter().next().unwrap().1.id.0;
        assert_eq!(
            ids.into_iter().collect::<Vec<_>>(),
            vec![live_id],
            "the store holds the live connection and no dead one"
        );
        assert_eq!(a.counters.ckpt_sweeps.get(), 1);
    }

    #[test]
    fn a_resync_writes_every_connection_again() {
        let mut a = fw(MemorySink::default());
        open(&mut a, 40002);
        open(&mut a, 40003);
        a.checkpoint.sink.store.clear();
        a.checkpoint.sink.resync = true;
        a.housekeeping(2);
        assert_eq!(a.checkpoint.sink.store.len(), 4, "ip and tcp of both connections");
        assert_eq!(a.counters.ckpt_resyncs.get(), 1);
    }

    #[test]
    fn expiry_writes_a_delete() {
        let mut a = fw(MemorySink::default());
        open(&mut a, 40004);
        for _ in 0..64 {
            a.housekeeping(u64::MAX / 2);
        }
        assert_eq!(a.table().len(), 0);
        assert_eq!(a.checkpoint.sink.deletes, 1);
        assert!(a.checkpoint.sink.store.is_empty());
    }

    #[test]
    fn gauges_follow_the_table_and_a_flush_deletes_everything() {
        use std::sync::atomic::Ordering::Relaxed;
        let mut a = fw(MemorySink::default());
        open(&mut a, 40006);
        open(&mut a, 40007);
        assert_eq!(a.process(&udp(C, S, 5353, 53, b"q"), 0, 1), Verdict::Forward);
        a.housekeeping(1);
        let g = &a.counters.gauges;
        assert_eq!((g.tcp.get(), g.udp.get(), g.icmp.get()), (2, 1, 0));
        assert_eq!(g.tcp_states[TcpState::Established as usize].get(), 2);
        assert_eq!(a.checkpoint.sink.store.len(), 6, "ip + l4 of three connections");
        a.counters.requests.flush.store(true, Relaxed);
        // Gauges refresh every 100 ms of TSC (HZ / 10 ticks); the flush refreshes at once.
        a.housekeeping(2);
        assert_eq!(a.table().len(), 0);
        assert!(!a.counters.requests.flush.load(Relaxed), "the flag is cleared when done");
        assert_eq!(a.counters.flushed.get(), 3);
        assert_eq!(a.checkpoint.sink.deletes, 3);
        assert!(a.checkpoint.sink.store.is_empty(), "the store follows the flush");
        let g = &a.counters.gauges;
        assert_eq!(
            (g.tcp.get(), g.udp.get(), g.tcp_states[TcpState::Established as usize].get()),
            (0, 0, 0)
        );
        // Traffic after a flush: an established flow mid-stream is now unknown.
        assert_eq!(a.process(&tcp(C, S, (40006, 80), ACK, (1101, 5001), b""), 0, 3), Verdict::Drop);
    }

    #[test]
    fn a_flush_asked_during_a_walk_gets_a_walk_of_its_own() {
        use std::sync::atomic::Ordering::Relaxed;
        let c = ConntrackSection { capacity: 4 * FLUSH_BATCH as u32, ..Default::default() };
        let mut a = Firewall::new(
            &c,
            Arc::new(Policy::default()),
            vec![0, 0],
            HZ,
            Global,
            MemorySink::default(),
            FwCounters::leaked(),
        );
        open(&mut a, 40010);
        a.counters.requests.flush.store(true, Relaxed);
        a.housekeeping(1);
        assert!(a.chores.flush_cursor.is_some(), "a table of several batches takes several rounds");
        assert_eq!(a.table().len(), 0);
        // A connection opened behind the walk's cursor, and a second request.
        open(&mut a, 40011);
        a.counters.requests.flush.store(true, Relaxed);
        for t in 2..20 {
            a.housekeeping(t);
        }
        assert_eq!(a.table().len(), 0, "the second request was absorbed by the first walk");
        assert_eq!(a.counters.flushed.get(), 2);
        assert!(!a.counters.requests.flush.load(Relaxed));
    }
}
