//! The packet pipeline of one worker: parse → connection lookup → the
//! protocol modules (ip → tcp | udp | icmp → ftp) → policy for new
//! connections. The worker hands it a burst at a time (`process_burst`);
//! `process` is the same pipeline for one packet. Owned by one worker;
//! allocates nothing and locks nothing after `new`.
//!
//! One file a job: `burst` stages a burst and looks its connections up
//! together, `track` admits and tracks packets, `fragments` remembers
//! first fragments' verdicts, `housekeeping` expires, flushes and counts;
//! checkpoint emission is `checkpoint::Checkpointer`'s, restore decoding
//! `checkpoint::restore`'s.

mod burst;
mod fragments;
mod held_output;
mod housekeeping;
mod packet;
mod protect;
mod seen_vlans;
mod ticks;
mod track;

pub use burst::{Burst, FrameBurst, StagedBurst, STAGE_MAX};
pub use protect::{
    describe_record, Outbox, ProtectRestoreError, Protection, RecordView, OUT_FRAME, RECORD_BYTES,
};
pub use seen_vlans::SeenVlans;

use crate::checkpoint::restore::{self, RestoreError, RestoreSummary, StoredPortions};
use crate::checkpoint::{CheckpointSink, Checkpointer};
use crate::config::ConntrackSection;
use crate::conn::table::{TableFull, TableMemory};
use crate::conn::{ConnId, ConnTable};
use crate::modules::ftp::Expectation;
use crate::modules::ftp_sessions::{FtpConfig, FtpSessions};
use crate::modules::Conn;
use crate::policy::Policy;
use crate::ports::PortMap;
use crate::stats::FwCounters;
use fragments::Fragments;
use housekeeping::{Housekeeping, Tally};
use std::sync::Arc;
use ticks::Ticks;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    Drop,
}

pub struct Firewall<S: CheckpointSink, A: TableMemory> {
    table: ConnTable<Conn, A>,
    policy: Arc<Policy>,
    /// The zone of each config port (`ports.zone`, on the packet path).
    port_zone: Vec<u16>,
    /// The stable ids of the ports and their bridges.
    ports: PortMap,
    ticks: Ticks,
    ftp: FtpSessions,
    frags: Fragments,
    pub counters: &'static FwCounters,
    checkpoint: Checkpointer<S>,
    /// Connections by kind and TCP state, behind `counters.gauges`.
    tally: Tally,
    chores: Housekeeping,
    /// Protected services (`[[protected]]`); off unless `protect` is called.
    protection: Protection,
}

impl<S: CheckpointSink, A: TableMemory> Firewall<S, A> {
    pub fn new(
        c: &ConntrackSection,
        policy: Arc<Policy>,
        ports: impl Into<PortMap>,
        tsc_hz: u64,
        alloc: A,
        sink: S,
        counters: &'static FwCounters,
    ) -> Self {
        let ticks = Ticks::new(c, tsc_hz);
        let ports = ports.into();
        Firewall {
            table: ConnTable::new_in(c.capacity, alloc),
            policy,
            port_zone: ports.zone.clone(),
            ports,
            ftp: FtpSessions::new(&FtpConfig {
                enabled: c.ftp,
                ports: c.ftp_ports.clone(),
                sessions: c.ftp_sessions,
                expectations: c.expectations,
                per_session: c.expectations_per_session,
                expectation_ticks: ticks.expectation,
            }),
            frags: Fragments::new(c.fragments as usize, ticks.fragment),
            checkpoint: Checkpointer::new(sink, counters),
            counters,
            tally: Tally::default(),
            chores: Housekeeping::new(c.sweep_batch as usize, tsc_hz),
            protection: Protection::new(&[], Vec::new(), tsc_hz),
            ticks,
        }
    }

    /// Protects `services`' connections; `peer[p]` is the config port a
    /// frame received on port p leaves by. `tsc_hz` is the clock of `now`.
    pub fn protect(
        &mut self,
        services: &[crate::config::ProtectedService],
        peer: Vec<usize>,
        tsc_hz: u64,
    ) {
        self.protection = Protection::new(services, peer, tsc_hz);
    }

    /// Shares with the process's other workers where its protected
    /// services' clients were answered (where ARP and neighbour discovery
    /// for a probe address are answered).
    pub fn share_seen_vlans(&mut self, seen: std::sync::Arc<SeenVlans>) {
        self.protection.share_seen_vlans(seen);
    }

    /// Gives protected service `service` (its index in the config) the
    /// memory its logs grow in.
    pub fn set_log_memory(&mut self, service: usize, memory: crate::protect::LogMemory) {
        self.protection.set_log_memory(service, memory);
    }

    /// Gives the probes of protected services source ports whose answers
    /// reach this worker, `worker` of `placement`; returns the services it
    /// cannot probe.
    pub fn place_probes(
        &mut self,
        worker: u16,
        placement: &crate::placement::Placement,
    ) -> Vec<(std::net::IpAddr, u16)> {
        self.protection.place_probes(worker, placement)
    }

    /// Rebuilds protected connection `id` from checkpointd's record and log
    /// (before the ports start): `log` holds the client's stream from offset
    /// `held_from`; `log_lost` when checkpointd lost part of it (refused).
    /// Counted either way.
    pub fn restore_protected(
        &mut self,
        id: u64,
        record: &[u8],
        log: Vec<u8>,
        held_from: u64,
        log_lost: bool,
        now: u64,
    ) -> Result<(), ProtectRestoreError> {
        let r = if log_lost {
            Err(ProtectRestoreError::LogLost)
        } else {
            self.protection.restore(id, record, log, held_from, now)
        };
        let c = &self.counters.protect;
        if r.is_ok() { &c.restored } else { &c.restore_refused }.add(1);
        r
    }

    /// Ends protected connection `id` in checkpointd (one that could not be
    /// restored), at the next walk.
    pub fn forget_protected(&mut self, id: u64) {
        self.protection.forget(id);
    }

    /// Whether any service is protected.
    pub fn protects(&self) -> bool {
        !self.protection.is_off()
    }

    /// Frames the firewall sends itself (protected connections): the worker
    /// sends them after each burst and housekeeping.
    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.protection.outbox
    }

    pub fn table(&self) -> &ConnTable<Conn, A> {
        &self.table
    }

    /// Where this firewall's checkpoint deltas go.
    pub fn sink(&self) -> &S {
        &self.checkpoint.sink
    }

    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.checkpoint.sink
    }

    /// The pipeline over one received burst, from config port `port`: every
    /// packet staged (parsed, keyed), their connections looked up together,
    /// then each one tracked; `burst` keeps the packets to forward. The
    /// deltas the burst made are published before it returns, so none of its
    /// packets leaves before the state it created is in the ring (output
    /// commit). Returns how many packets were dropped.
    #[inline]
    pub fn process_burst<B: Burst>(
        &mut self,
        staged: &mut StagedBurst,
        burst: &mut B,
        port: usize,
        now: u64,
    ) -> usize {
        self.checkpoint.send_pending_deletes();
        let n = burst.len();
        for i in 0..n {
            self.stage(staged, i, burst.frame(i), burst.rx_checksums(i), port);
        }
        self.lookup_staged(staged, n);
        let dropped = burst.retain(|i, frame| {
            if !self.protection.is_off() {
                let sink = &mut self.checkpoint.sink;
                if let Some(keep) =
                    self.protection.before_tracking(frame, port, now, self.counters, sink)
                {
                    return keep;
                }
            }
            self.process_staged(staged, i, frame, port, now) == Verdict::Forward
                && (self.protection.is_off()
                    || self.protection.pass(
                        frame,
                        port,
                        now,
                        self.counters,
                        &mut self.checkpoint.sink,
                    ))
        });
        self.checkpoint.publish();
        dropped
    }

    /// Rebuilds one connection from its stored portions (before the ports
    /// start). The id must be the id of the key the ip portion carries.
    pub fn restore(
        &mut self,
        id: u64,
        ip: &[u8],
        l4: Option<(u8, &[u8])>,
        ftp: Option<&[u8]>,
        now: u64,
    ) -> Result<(), RestoreError> {
        let mut refused = None;
        let one = StoredPortions { id, ip: Some(ip), l4, ftp, ftp_rebased: false };
        self.restore_many(|sink| sink(one), now, |_, e| refused = Some(e));
        refused.map_or(Ok(()), Err)
    }

    /// Rebuilds connections from their stored portions (before the ports
    /// start), each module restoring its own portion; a connection that
    /// cannot be rebuilt is counted (`restore_skipped`), handed to `skipped`,
    /// and the rest carry on. `feed` hands each connection to the sink it is
    /// given (the store lends them from its copy-out buffer, nothing moves).
    /// Returns how many were restored.
    pub fn restore_many(
        &mut self,
        feed: impl FnOnce(&mut dyn FnMut(StoredPortions<'_>)),
        now: u64,
        mut skipped: impl FnMut(u64, RestoreError),
    ) -> u64 {
        let Firewall { table, ticks, ftp, counters, tally, policy, ports, checkpoint, .. } = self;
        // No duplicate check: the id is the key's hash and checkpointd's store
        // holds each id once (its rebuild drops duplicates), so a probe per
        // connection would only double the cache misses of a large restore.
        let mut bulk = table.bulk_insert();
        let mut restored = 0;
        let mut one = |s: StoredPortions<'_>| {
            let placed = restore::rebuild(&s, now, ports, |l4| ticks.of(l4)).and_then(|r| {
                restore::admitted(&r.conn, policy, ports)?;
                let mut conn = r.conn;
                let mut ftp_rec = r.ftp;
                if let Some(rec) = ftp_rec.filter(|_| !ftp.wants(restore::server_port(&conn))) {
                    // FTP is off, or no longer on this port: its expectations
                    // would admit what the config no longer expects.
                    counters.restore_forbidden_expectations.add(rec.count as u64);
                    ftp_rec = None;
                }
                if let Some(rec) = ftp_rec {
                    let placed = ftp.place(rec.portion);
                    if placed.is_none() {
                        counters.ftp_no_session.add(1);
                    }
                    if let Some(i) = placed {
                        conn.ftp = i;
                        if s.ftp_rebased {
                            counters.restore_stale_expectations.add(rec.count as u64);
                        }
                        let live = if s.ftp_rebased { 0 } else { rec.count };
                        // No stored deadline is later than a fresh one would be.
                        let latest = now + ticks.expectation;
                        for e in &rec.expectations[..live] {
                            let e = Expectation { deadline: e.deadline.min(latest), ..*e };
                            if e.deadline > now && !ftp.expectations.add(e, now) {
                                counters.expectations_full.add(1);
                            }
                        }
                    }
                }
                if let Some(old) = r.stored_as {
                    // Stored under an older format's id: written again under
                    // its own, and the old records deleted.
                    checkpoint.rekeyed(&mut conn, ConnId(old), now);
                }
                match bulk.push(conn) {
                    Ok(_) => Ok(conn),
                    Err(TableFull) => {
                        ftp.release(conn.ftp);
                        Err(RestoreError::TableFull)
                    }
                }
            });
            match placed {
                Ok(conn) => {
                    tally.on(&conn.l4);
                    restored += 1;
                }
                Err(e) => {
                    if matches!(e, RestoreError::Forbidden { .. }) {
                        counters.restore_forbidden.add(1);
                    } else {
                        counters.restore_skipped.add(1);
                    }
                    skipped(s.id, e);
                }
            }
        };
        feed(&mut one);
        drop(bulk);
        counters.restored.add(restored);
        restored
    }

    /// Rebuilds this worker's table from checkpointd's store; a damaged
    /// record is skipped, counted and logged (the first few), never applied.
    pub fn restore_from_store(
        &mut self,
        store: &shm_layout::StoreSegment,
        worker: u16,
        placement: &crate::placement::Placement,
        now: u64,
    ) -> RestoreSummary {
        let mut skipped = 0u64;
        // Refusals by today's policy: logged once per rule, with a count.
        let mut forbidden: Vec<(String, u64)> = Vec::new();
        let feed = |sink: &mut dyn FnMut(StoredPortions<'_>)| {
            store.restore_iter_placed(worker, placement.workers).for_each_stored(|c| {
                // Stored for no worker of ours: ours if our ports send it
                // here (one that does not decode goes to worker 0, which
                // reports it).
                if c.worker != worker
                    && placement.worker_of_stored(c.ip().map(|p| p.payload())).unwrap_or(0)
                        != worker
                {
                    return std::ops::ControlFlow::Continue(());
                }
                sink(restore::portions_of(c));
                std::ops::ControlFlow::Continue(())
            })
        };
        let restored = self.restore_many(feed, now, |id, e| {
            if let RestoreError::Forbidden { by } = e {
                match forbidden.iter_mut().find(|(b, _)| *b == by) {
                    Some((_, n)) => *n += 1,
                    None => forbidden.push((by, 1)),
                }
                return;
            }
            skipped += 1;
            if skipped <= 5 {
                tracing::warn!(
                    worker,
                    conn = format_args!("{id:016x}"),
                    "stored connection skipped: {e}"
                );
            }
        });
        for (by, n) in &forbidden {
            tracing::warn!(
                worker,
                "{n} stored connection(s) not restored: the policy now refuses them ({by}); \
                 restore the rule to keep such connections across a restart"
            );
        }
        let forbidden = forbidden.iter().map(|(_, n)| n).sum();
        RestoreSummary { restored, skipped, forbidden }
    }
}

#[cfg(test)]
mod testing;

#[cfg(test)]
mod tests {
    use crate::firewall::testing::*;

    use crate::checkpoint::MemorySink;
    use crate::firewall::*;

    use crate::frames::{tcp, tcp_flags::*, udp};
    use crate::modules::tcp::{self};
    use crate::modules::Module;

    #[test]
    fn a_restored_table_carries_established_flows_and_an_empty_one_does_not() {
        let mut a = fw(MemorySink::default());
        let (cs, ss) = open(&mut a, 40000);
        assert_eq!(a.process(&udp(C, S, 5353, 53, b"q"), 0, 1), Verdict::Forward);
        assert_eq!(a.process(&udp(S, C, 53, 5353, b"r"), 1, 1), Verdict::Forward);
        // What a dead dataplane left in the store, rebuilt in a new one.
        let mut b = fw(MemorySink::default());
        assert_eq!(restore_all(&a.checkpoint.sink, &mut b), 2);
        assert_eq!(b.table().len(), 2);
        let mid = tcp(C, S, (40000, 80), ACK | PSH, (cs, ss), &[8; 100]);
        let reply = tcp(S, C, (80, 40000), ACK, (ss, cs + 100), b"");
        assert_eq!(b.process(&mid, 0, 20), Verdict::Forward);
        assert_eq!(b.process(&reply, 1, 20), Verdict::Forward);
        assert_eq!(b.counters.tcp_invalid.iter().map(|c| c.get()).sum::<u64>(), 0);
        // Control: without the restore the strict tracker refuses mid-stream packets.
        let mut empty = fw(MemorySink::default());
        assert_eq!(empty.process(&mid, 0, 20), Verdict::Drop);
        assert_eq!(empty.counters.tcp_invalid[tcp::TcpInvalid::NewNotSyn as usize].get(), 1);
    }

    /// Connections stored for no worker of this dataplane (another
    /// appliance's count, or more workers before) are each restored once,
    /// on the worker the ports' RSS sends them to.
    #[test]
    fn connections_of_unknown_workers_are_restored_where_rss_sends_them() {
        use crate::placement::{L4Hashed, Placement};
        let mut a = fw(MemorySink::default());
        for p in 0..24 {
            assert_eq!(a.process(&udp(C, S, 6000 + p, 53, b"q"), 0, 1), Verdict::Forward);
        }
        let dir = std::env::temp_dir().join(format!("lz-placed-{}", std::process::id()));
        let geom = shm_layout::StoreGeometry { conn_capacity: 64, ftp_capacity: 4 };
        let mut store = shm_layout::StoreSegment::create_file(&dir, geom).unwrap();
        let _ = std::fs::remove_file(&dir);
        let ids: std::collections::BTreeSet<u64> =
            a.checkpoint.sink.store.keys().map(|k| k.0).collect();
        for (i, id) in ids.iter().enumerate() {
            // Half stored for a fourth worker, half with no worker at all.
            let w = if i % 2 == 0 { 3 } else { shm_layout::UNPLACED_WORKER };
            store.init_record(i as u32, *id, w);
            for ((cid, m), (v, b)) in &a.checkpoint.sink.store {
                if cid == id {
                    store.put_portion(i as u32, *m, *v, b).unwrap();
                }
            }
        }
        let l4 = L4Hashed { v4_tcp: true, v4_udp: true, v6_tcp: true, v6_udp: true };
        let two = Placement { workers: 2, reta_size: 128, key_len: 40, l4 };
        let mut took = [0u64; 2];
        for w in 0..2u16 {
            let mut b = fw(MemorySink::default());
            let s = b.restore_from_store(&store, w, &two, 10);
            assert_eq!(s.skipped, 0);
            took[usize::from(w)] = s.restored;
            for (_, conn) in b.table().iter() {
                assert_eq!(two.worker_of(&conn.key), w);
            }
        }
        assert_eq!(took[0] + took[1], ids.len() as u64, "{took:?}");
        assert!(took[0] > 0 && took[1] > 0, "{took:?}");
        let mut one = fw(MemorySink::default());
        let s = one.restore_from_store(&store, 0, &Placement::single(), 10);
        assert_eq!(s.restored, ids.len() as u64);
    }

    #[test]
    fn a_damaged_record_is_refused() {
        let mut a = fw(MemorySink::default());
        open(&mut a, 40005);
        let (k, (_, ip)) =
            a.checkpoint.sink.store.iter().find(|(k, _)| k.1 == Module::Ip as u8).unwrap();
        let mut b = fw(MemorySink::default());
        assert!(matches!(
            b.restore(k.0 ^ 1, ip, None, None, 1),
            Err(RestoreError::IdMismatch { .. })
        ));
        assert!(matches!(b.restore(k.0, &ip[..10], None, None, 1), Err(RestoreError::Portion(_))));
        assert_eq!(b.table().len(), 0);
    }
}

#[cfg(test)]
mod restore_config_tests;
