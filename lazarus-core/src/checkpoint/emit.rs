//! Checkpoint emission: the firewall's side of the sink. A module's changed
//! portion is encoded into the sink at once; what the sink had no room for
//! is marked dirty and written again by a background walk over the table,
//! and deletes it had no room for wait in a list. The packet path never
//! waits for checkpointd.

use super::{CheckpointSink, DeltaHead, SinkFull};
use crate::conn::table::TableMemory;
use crate::conn::{ConnId, ConnTable};
use crate::modules::ftp::{Expectation, CHECKPOINT_EXPECTATIONS};
use crate::modules::ftp_sessions::FtpSessions;
use crate::modules::tcp::{TcpPortion, TcpState};
use crate::modules::{Conn, L4Portion, Module, NO_FTP};
use crate::portion::Portion;
use crate::stats::FwCounters;

/// Slab positions the re-emit walk looks at per poll round.
const REEMIT_BATCH: usize = 64;
/// Deletes remembered while the ring is full.
const PENDING_DELETES: usize = 4096;

/// Whether a connection goes to the checkpoint: from its first packet,
/// except a TCP connection, which goes from the first answer to its SYN.
/// Lost in a restart before that, it costs the client one SYN
/// retransmission (the server's answer is dropped as new, the retransmitted
/// SYN opens it again); once answered, the client may consider it open and
/// it must survive. So a SYN flood's half-open connections write nothing.
/// A related connection (an FTP data channel) is stored at its SYN: it used
/// up its expectation, so a retransmitted SYN would find nothing to admit it.
/// Nor is one that resets before it was ever stored: there is nothing to keep.
#[inline(always)]
pub fn worth_storing(l4: &L4Portion, related: bool) -> bool {
    match l4 {
        L4Portion::Tcp(t) => related || (t.seen_reply && t.state != TcpState::Close),
        _ => true,
    }
}

/// The sink of one firewall, with what the sink could not take yet.
pub struct Checkpointer<S: CheckpointSink> {
    pub sink: S,
    counters: &'static FwCounters,
    /// Deletes the sink had no room for, each with its version.
    pending_deletes: Vec<(ConnId, u64)>,
    /// The version of the last delta: each delta gets a later one than the
    /// delta before it, so a delete sorts between the connection it ends and
    /// one that reuses the id in the same burst.
    last_version: u64,
    /// Connections with a dirty portion: `emit` counts each connection's
    /// clean → dirty and dirty → clean transitions, removal its end.
    dirty: usize,
    /// Slab position of the re-emit walk; None when no walk is under way.
    cursor: Option<usize>,
    /// The walk writes every portion, not only dirty ones: checkpointd lost
    /// its store and asked for everything, or deletes were lost.
    resync: bool,
    /// Most deletes that may wait; past it they are lost and counted.
    pending_cap: usize,
    /// Deletes were lost: the store holds connections this table no longer
    /// has. A walk rewriting every connection, then a sweep, removes them.
    reconcile: bool,
    /// The version the walk under way started at; it ends with a sweep of
    /// what is older.
    sweep_from: Option<u64>,
    /// A sweep the sink had no room for yet.
    sweep_due: Option<u64>,
}

/// Every module that holds a portion of `conn`.
fn modules_of(conn: &Conn) -> u8 {
    let mut m = 1u8 << Module::Ip as u8;
    if let Some(l4) = conn.l4.module() {
        m |= 1 << l4 as u8;
    }
    if conn.ftp != NO_FTP {
        m |= 1 << Module::Ftp as u8;
    }
    m
}

impl<S: CheckpointSink> Checkpointer<S> {
    pub fn new(sink: S, counters: &'static FwCounters) -> Self {
        Checkpointer {
            sink,
            counters,
            pending_deletes: Vec::with_capacity(PENDING_DELETES),
            last_version: 0,
            dirty: 0,
            cursor: None,
            resync: false,
            pending_cap: PENDING_DELETES,
            reconcile: false,
            sweep_from: None,
            sweep_due: None,
        }
    }

    /// Writes `module`'s portion of `conn`, if the connection is stored; on
    /// no room marks the portion dirty. Returns whether it needs no retry.
    #[inline]
    pub fn emit(
        &mut self,
        conn: &mut Conn,
        module: Module,
        ftp: &FtpSessions,
        version: u64,
    ) -> bool {
        if !conn.stored {
            return true;
        }
        if !S::ENABLED {
            self.counters.ckpt[module as usize].add(1);
            return true;
        }
        if conn.dirty & !(1 << module as u8) != 0 {
            // Other portions wait for room, perhaps all of them: this one
            // goes with them, so the store never holds part of a connection.
            let want = conn.dirty | 1 << module as u8;
            return self.emit_modules(conn, want, ftp, version) == u64::from(want.count_ones());
        }
        self.write_portion(conn, module, ftp, version)
    }

    /// `emit`'s work, kept out of line: few packets need it, and inlined
    /// into every caller it made the packet path around it compile
    /// differently from one build to the next.
    #[inline(never)]
    fn write_portion(
        &mut self,
        conn: &mut Conn,
        module: Module,
        ftp: &FtpSessions,
        version: u64,
    ) -> bool {
        // A match on the module, not a test of `modules_of`: fewer
        // instructions a delta on the packet path.
        let present = match module {
            Module::Ip => true,
            Module::Tcp => matches!(conn.l4, L4Portion::Tcp(_)),
            Module::Udp => matches!(conn.l4, L4Portion::Udp(_)),
            Module::Icmp => matches!(conn.l4, L4Portion::Icmp(_)),
            Module::Ftp => conn.ftp != NO_FTP,
        };
        if !present {
            return true;
        }
        let version = self.stamp(version);
        let c = &*conn;
        let at = DeltaHead { id: c.id, module, version };
        let pushed = match (module, &c.l4) {
            // The tcp portion, the one the packet path writes most, as words
            // built in registers.
            (Module::Tcp, L4Portion::Tcp(t)) => {
                self.sink.portion_words(at, &t.encode_words(), TcpPortion::WORDS_LEN)
            }
            // The others encoded straight into the sink's slot. Every encoding
            // fits the slot by construction (the portion MAX sizes); were one not
            // to, the delta would be empty, which a restore refuses as truncated.
            _ => self.sink.portion_with(at, |buf: &mut [u8]| {
                let len = match (module, &c.l4) {
                    (Module::Ip, _) => c.ip.encode(&c.key, buf),
                    (Module::Udp, L4Portion::Udp(u)) => u.encode(buf),
                    (Module::Icmp, L4Portion::Icmp(i)) => i.encode(buf),
                    (Module::Ftp, _) => {
                        let mut x = [Expectation::default(); CHECKPOINT_EXPECTATIONS];
                        let mut n = 0;
                        for e in ftp.expectations.of_master(c.id).take(x.len()) {
                            x[n] = *e;
                            n += 1;
                        }
                        ftp.portion(c.ftp).encode(&x[..n], buf)
                    }
                    _ => Ok(0),
                };
                len.unwrap_or(0)
            }),
        };
        let bit = 1u8 << module as u8;
        match pushed {
            Ok(()) => {
                self.counters.ckpt[module as usize].add(1);
                if conn.dirty == bit {
                    self.dirty -= 1;
                }
                conn.dirty &= !bit;
                true
            }
            Err(SinkFull) => {
                self.counters.ckpt_ring_full.add(1);
                if conn.dirty == 0 {
                    self.dirty += 1;
                }
                conn.dirty |= bit;
                false
            }
        }
    }

    /// Writes the portions of `conn` whose module bits are in `want`, all or
    /// none: without room for all, they are marked dirty. Returns how many
    /// the sink took. Nothing while the connection is not stored.
    fn emit_modules(&mut self, conn: &mut Conn, want: u8, ftp: &FtpSessions, version: u64) -> u64 {
        let present = modules_of(conn);
        if conn.dirty & !present != 0 {
            // A portion the connection no longer has (its FTP session ended)
            // has nothing left to write.
            conn.dirty &= present;
            if conn.dirty == 0 {
                self.dirty = self.dirty.saturating_sub(1);
            }
        }
        let want = want & present;
        if !conn.stored || want == 0 {
            return 0;
        }
        if !S::ENABLED {
            for m in Module::ALL.into_iter().filter(|&m| want & (1 << m as u8) != 0) {
                self.counters.ckpt[m as usize].add(1);
            }
            return u64::from(want.count_ones());
        }
        if !self.sink.has_room(want.count_ones()) {
            self.counters.ckpt_ring_full.add(1);
            if conn.dirty == 0 {
                self.dirty += 1;
            }
            conn.dirty |= want;
            return 0;
        }
        let mut n = 0;
        for m in Module::ALL {
            if want & (1 << m as u8) != 0 && self.write_portion(conn, m, ftp, version) {
                n += 1;
            }
        }
        n
    }

    /// Writes every portion `conn` has, or none: were only some to fit, a
    /// kill before the rest would leave a connection restored without its
    /// state. With no room for all, every portion waits for the re-emit walk.
    pub fn emit_all(&mut self, conn: &mut Conn, ftp: &FtpSessions, version: u64) {
        let present = modules_of(conn);
        self.emit_modules(conn, present, ftp, version);
    }

    /// A version after every delta written so far, and not before `now`.
    #[inline(always)]
    fn stamp(&mut self, now: u64) -> u64 {
        self.last_version = now.max(self.last_version + 1);
        self.last_version
    }

    /// `conn` left the table: a delete for checkpointd if it was stored
    /// (kept for later when the sink is full). Its version says which
    /// connection it ends: checkpointd ignores it for a record written after
    /// it, a newer connection's with the same id.
    pub fn removed(&mut self, conn: &Conn, now: u64) {
        if conn.dirty != 0 {
            self.dirty = self.dirty.saturating_sub(1);
        }
        if !conn.stored {
            return;
        }
        let version = self.stamp(now);
        if !self.pending_deletes.is_empty() {
            // Behind the deletes already waiting, in order.
            self.keep_delete(conn.id, version);
            return;
        }
        match self.sink.deleted(conn.id, version) {
            Ok(()) => self.counters.ckpt_deletes.add(1),
            Err(SinkFull) => {
                self.counters.ckpt_ring_full.add(1);
                self.keep_delete(conn.id, version);
            }
        }
    }

    fn keep_delete(&mut self, id: ConnId, version: u64) {
        if self.pending_deletes.len() < self.pending_cap {
            self.pending_deletes.push((id, version));
        } else {
            self.counters.ckpt_deletes_lost.add(1);
            self.reconcile = true;
        }
    }

    /// Test support: how many deletes may wait.
    #[cfg(test)]
    pub(crate) fn set_pending_cap(&mut self, n: usize) {
        self.pending_cap = n.min(PENDING_DELETES);
    }

    /// Writes the deletes that waited for room, oldest first; called before
    /// a burst writes its own deltas, so a delete never trails the deltas of
    /// a connection that reused its id. Returns whether none is left.
    #[inline]
    pub fn send_pending_deletes(&mut self) -> bool {
        if self.pending_deletes.is_empty() {
            return true;
        }
        self.drain_pending_deletes()
    }

    #[inline(never)]
    fn drain_pending_deletes(&mut self) -> bool {
        let mut sent = 0;
        for &(id, version) in &self.pending_deletes {
            if self.sink.deleted(id, version).is_err() {
                break;
            }
            sent += 1;
        }
        self.pending_deletes.drain(..sent);
        self.counters.ckpt_deletes.add(sent as u64);
        self.pending_deletes.is_empty()
    }

    /// A restored `conn` was stored under `old`, another id (an older
    /// format's): its records there go, and it is written whole under its own.
    pub fn rekeyed(&mut self, conn: &mut Conn, old: ConnId, now: u64) {
        if conn.dirty == 0 {
            self.dirty += 1;
        }
        conn.dirty |= modules_of(conn);
        let version = self.stamp(now);
        self.keep_delete(old, version);
    }

    /// The background side, once per poll round: a resync checkpointd asked
    /// for, deletes and dirty portions the sink had no room for earlier.
    pub fn reemit<A: TableMemory>(
        &mut self,
        table: &mut ConnTable<Conn, A>,
        ftp: &FtpSessions,
        now: u64,
    ) {
        if self.sink.take_resync() {
            self.counters.ckpt_resyncs.add(1);
            self.resync = true;
            self.cursor = Some(0);
        }
        if !self.send_pending_deletes() {
            return;
        }
        if let Some(v) = self.sweep_due {
            if self.sink.swept(v).is_err() {
                return;
            }
            self.sweep_due = None;
            self.counters.ckpt_sweeps.add(1);
        }
        if self.reconcile && self.sweep_from.is_none() {
            // Rewrite everything from the start, then sweep what is older.
            self.reconcile = false;
            self.resync = true;
            self.cursor = Some(0);
            self.sweep_from = Some(self.stamp(now));
        }
        if self.cursor.is_none() && self.dirty != 0 {
            self.cursor = Some(0);
        }
        let Some(mut i) = self.cursor else { return };
        let cap = table.capacity();
        let end = (i + REEMIT_BATCH).min(cap);
        while i < end {
            if let Some(conn) = table.at_mut(i) {
                let want = if self.resync { modules_of(conn) } else { conn.dirty };
                // Room for everything the connection needs before touching it.
                if !self.sink.has_room((want & modules_of(conn)).count_ones()) {
                    break;
                }
                let n = self.emit_modules(conn, want, ftp, now);
                self.counters.ckpt_reemitted.add(n);
            }
            i += 1;
        }
        if i >= cap {
            // A full walk: what is still dirty failed again and starts a new one.
            self.cursor = None;
            self.resync = false;
            self.sweep_due = self.sweep_from.take();
        } else {
            self.cursor = Some(i);
        }
    }

    /// Whether the sink has room for `n` more deltas now.
    pub fn has_room(&mut self, n: u32) -> bool {
        self.sink.has_room(n)
    }

    /// Makes what was written visible to checkpointd.
    #[inline]
    pub fn publish(&mut self) {
        self.sink.publish();
    }
}
