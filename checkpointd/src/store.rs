//! The store as checkpointd sees it: the shared segment plus an index in
//! checkpointd's own heap (conn_id -> record, free lists), rebuilt from the
//! segment at every start.

use hashbrown::HashMap;
use shm_layout::{delta_kind, module, Delta, StoreSegment, NO_FTP};
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters the control thread reads while the drain loop runs.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub conns: AtomicU64,
    pub ftp: AtomicU64,
    /// New connections dropped because every record was in use.
    pub full_drops: AtomicU64,
    /// FTP portions dropped because the FTP pool was exhausted.
    pub ftp_full_drops: AtomicU64,
    /// Portions ignored because the store already had a newer version.
    pub stale: AtomicU64,
    /// Deletes ignored because the record is newer than the delete: a
    /// connection that reused the id after the one the delete was for.
    pub stale_deletes: AtomicU64,
    /// Records dropped by a SWEEP: connections the dataplane no longer had
    /// whose deletes it lost.
    pub swept: AtomicU64,
    /// Deltas refused: unknown module or kind, oversized portion.
    pub rejected: AtomicU64,
}

/// What the start-up scan found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rebuild {
    pub conns: u32,
    pub ftp: u32,
    /// Portions dropped because their checksum failed (a write checkpointd
    /// was killed in the middle of; the delta is still in its ring).
    pub bad_portions: u32,
    /// Records dropped: no valid portion left, or a duplicate conn_id.
    pub dropped_records: u32,
    /// FTP records nobody linked to, freed.
    pub orphan_ftp: u32,
}

/// Why `apply` did not store a delta (counted; the drain goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Deleted,
    /// SWEEP applied (how many records it dropped is in `swept`).
    Swept,
    /// DELETE of a connection the store does not hold (already deleted, or
    /// never stored): nothing to do.
    Absent,
    Stale,
    /// DELETE older than the record: it was for an earlier connection with
    /// the same id, and the record is a newer one's.
    StaleDelete,
    StoreFull,
    FtpFull,
    Rejected,
}

/// A connection the store changed, for the remote copy to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A portion of it was written. `first`: the connection, or this
    /// module's portion of it, is new (or the portion is FTP's, whose
    /// expectations a standby needs at once); otherwise a refresh.
    /// `protected`: a protected connection's record or log, which a
    /// dataplane committing output at the remote level waits for.
    Put { conn_id: u64, first: bool, protected: bool },
    /// It was removed by a delete or sweep stamped `version`.
    Gone { conn_id: u64, version: u64 },
}

pub struct Store {
    seg: StoreSegment,
    index: HashMap<u64, u32>,
    free: Vec<u32>,
    free_ftp: Vec<u32>,
    pub stats: std::sync::Arc<StoreStats>,
    /// Filled when `track_changes` is on; the remote copy takes them.
    pub changes: Vec<Change>,
    pub track_changes: bool,
    /// Protected connections: kept in memory, not in the segment.
    pub protect: crate::protect::Protected,
}

impl Store {
    /// Scans the segment, drops what fails its checksum, builds the index.
    pub fn rebuild(mut seg: StoreSegment) -> (Self, Rebuild) {
        let geom = seg.geometry();
        let mut r = Rebuild::default();
        let mut index = HashMap::with_capacity(1024);
        let mut ftp_linked = vec![false; geom.ftp_capacity as usize];
        let mut free = Vec::new();
        for i in 0..geom.conn_capacity {
            let rec = seg.record(i);
            if rec.used == 0 {
                continue;
            }
            let mut valid = 0;
            for (clear_as, present, ok) in [
                (module::IP, rec.ip.is_present(), rec.ip.verify(rec.conn_id)),
                (module::TCP, rec.l4.is_present(), rec.l4.verify(rec.conn_id)),
            ] {
                if present && ok {
                    valid += 1;
                } else if present {
                    r.bad_portions += 1;
                    seg.clear_portion(i, clear_as);
                }
            }
            let mut ftp_ok = false;
            if rec.ftp != NO_FTP {
                let fi = rec.ftp;
                let f = (fi < geom.ftp_capacity).then(|| seg.ftp_record(fi));
                ftp_ok = f.is_some_and(|f| {
                    f.used != 0
                        && f.conn_id == rec.conn_id
                        && f.portion.is_present()
                        && f.portion.verify(rec.conn_id)
                }) && !ftp_linked[fi as usize];
                if ftp_ok {
                    valid += 1;
                } else {
                    r.bad_portions += 1;
                    let mut fixed = seg.record(i);
                    fixed.ftp = NO_FTP;
                    seg.write_record(i, &fixed);
                }
            }
            if valid == 0 || index.contains_key(&rec.conn_id) {
                r.dropped_records += 1;
                seg.clear_record(i);
                continue;
            }
            if ftp_ok {
                ftp_linked[rec.ftp as usize] = true;
            }
            index.insert(rec.conn_id, i);
            r.conns += 1;
        }
        for i in (0..geom.conn_capacity).rev() {
            if seg.record(i).used == 0 {
                free.push(i);
            }
        }
        let mut free_ftp = Vec::new();
        for fi in (0..geom.ftp_capacity).rev() {
            if ftp_linked[fi as usize] {
                r.ftp += 1;
                continue;
            }
            if seg.ftp_record(fi).used != 0 {
                r.orphan_ftp += 1;
                seg.clear_ftp(fi);
            }
            free_ftp.push(fi);
        }
        let stats = StoreStats::default();
        stats.conns.store(u64::from(r.conns), Ordering::Relaxed);
        stats.ftp.store(u64::from(r.ftp), Ordering::Relaxed);
        let stats = std::sync::Arc::new(stats);
        let store = Store {
            seg,
            index,
            free,
            free_ftp,
            stats,
            changes: Vec::new(),
            track_changes: false,
            protect: Default::default(),
        };
        (store, r)
    }

    pub fn segment(&self) -> &StoreSegment {
        &self.seg
    }

    /// Stored connections of workers `workers` and up, and the highest such
    /// worker: a config with fewer workers would never restore them.
    pub fn beyond_workers(&self, workers: u32) -> (u64, u16) {
        let mut n = 0;
        let mut top = 0;
        for &i in self.index.values() {
            let w = self.seg.record(i).worker;
            if u32::from(w) >= workers {
                n += 1;
                top = top.max(w);
            }
        }
        (n, top)
    }

    /// See [`StoreSegment::rebase`]; the index is unchanged (ids stay).
    pub fn rebase(&mut self, now: &shm_layout::SegmentOrigin) -> u64 {
        self.seg.rebase(now)
    }

    /// Applies one delta from ring `worker`. Idempotent: applying the same
    /// delta again (a restarted checkpointd replays from its last tail)
    /// leaves the same store.
    pub fn apply(&mut self, d: &Delta<'_>, worker: u16) -> Outcome {
        if d.module == module::PROTECT {
            self.protect.apply(d, worker);
            if self.track_changes {
                // Its own entry in the remote copy (the id is the protected
                // connection's, not the tracked one's).
                self.changes.push(match d.kind {
                    delta_kind::DELETE => Change::Gone { conn_id: d.conn_id, version: d.version },
                    _ => Change::Put { conn_id: d.conn_id, first: false, protected: true },
                });
            }
            return Outcome::Applied;
        }
        let o = match d.kind {
            delta_kind::PORTION => self.upsert(d, worker),
            delta_kind::DELETE => self.delete_older(d.conn_id, d.version),
            delta_kind::SWEEP => self.sweep(worker, d.version),
            _ => Outcome::Rejected,
        };
        let counter = match o {
            Outcome::Stale => &self.stats.stale,
            Outcome::StaleDelete => &self.stats.stale_deletes,
            Outcome::StoreFull => &self.stats.full_drops,
            Outcome::FtpFull => &self.stats.ftp_full_drops,
            Outcome::Rejected => &self.stats.rejected,
            Outcome::Applied | Outcome::Deleted | Outcome::Absent | Outcome::Swept => return o,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        o
    }

    /// Stores a portion copied from the remote store (a reboot's restore, a
    /// standby's mirror) at version 0: another process's clock, so what this
    /// appliance's dataplane writes next is newer.
    pub fn put_copied(&mut self, conn_id: u64, worker: u16, module: u8, payload: &[u8]) -> Outcome {
        if module == module::PROTECT {
            return match self.protect.put_head(conn_id, worker, payload) {
                Ok(()) => Outcome::Applied,
                Err(e) => {
                    tracing::warn!(
                        "remote protected connection {conn_id:016x}: {e}; it goes on unprotected"
                    );
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    Outcome::Rejected
                }
            };
        }
        let d = Delta { seq: 0, conn_id, version: 0, module, kind: delta_kind::PORTION, payload };
        self.apply(&d, worker)
    }

    /// Removes a copied connection whatever version its portions carry (the
    /// remote store no longer holds it).
    pub fn forget_copied(&mut self, conn_id: u64) {
        self.protect.remove(conn_id);
        self.delete(conn_id);
    }

    fn upsert(&mut self, d: &Delta<'_>, worker: u16) -> Outcome {
        if !matches!(d.module, module::IP | module::TCP | module::UDP | module::ICMP | module::FTP)
        {
            return Outcome::Rejected;
        }
        let mut first = d.module == module::FTP;
        let i = match self.index.get(&d.conn_id) {
            Some(&i) => {
                let rec = self.seg.record(i);
                let stored = match d.module {
                    module::IP => rec.ip.is_present().then_some(rec.ip.version),
                    module::FTP => {
                        (rec.ftp != NO_FTP).then(|| self.seg.ftp_record(rec.ftp).portion.version)
                    }
                    _ => rec.l4.is_present().then_some(rec.l4.version),
                };
                if stored.is_some_and(|v| d.version < v) {
                    return Outcome::Stale;
                }
                first |= stored.is_none();
                if rec.worker != worker {
                    // The connection moved (worker count or RSS changed):
                    // the newest ring owns it.
                    let mut moved = rec;
                    moved.worker = worker;
                    self.seg.write_record(i, &moved);
                }
                i
            }
            None => {
                let Some(i) = self.free.pop() else {
                    return Outcome::StoreFull;
                };
                self.seg.init_record(i, d.conn_id, worker);
                first = true;
                self.index.insert(d.conn_id, i);
                self.stats.conns.fetch_add(1, Ordering::Relaxed);
                i
            }
        };
        let result = if d.module == module::FTP {
            let linked = self.seg.record(i).ftp;
            let fi = if linked != NO_FTP {
                linked
            } else if let Some(fi) = self.free_ftp.pop() {
                self.stats.ftp.fetch_add(1, Ordering::Relaxed);
                fi
            } else {
                self.forget_if_empty(i, d.conn_id);
                return Outcome::FtpFull;
            };
            self.seg.put_ftp(i, fi, d.conn_id, d.version, d.payload)
        } else {
            self.seg.put_portion(i, d.module, d.version, d.payload)
        };
        match result {
            Ok(()) => {
                if self.track_changes {
                    self.changes.push(Change::Put { conn_id: d.conn_id, first, protected: false });
                }
                Outcome::Applied
            }
            Err(_) => {
                self.forget_if_empty(i, d.conn_id);
                Outcome::Rejected
            }
        }
    }

    /// A record allocated for a delta that could not be stored holds nothing:
    /// free it again.
    fn forget_if_empty(&mut self, i: u32, conn_id: u64) {
        let rec = self.seg.record(i);
        if !rec.ip.is_present() && !rec.l4.is_present() && rec.ftp == NO_FTP {
            self.delete(conn_id);
        }
    }

    /// The newest version among the record's portions (0 when none).
    fn newest_version(&self, i: u32) -> u64 {
        let rec = self.seg.record(i);
        let mut newest = 0;
        if rec.ip.is_present() {
            newest = rec.ip.version;
        }
        if rec.l4.is_present() {
            newest = newest.max(rec.l4.version);
        }
        if rec.ftp != NO_FTP {
            newest = newest.max(self.seg.ftp_record(rec.ftp).portion.version);
        }
        newest
    }

    /// Ring `worker`'s producer rewrote every connection it has, each after
    /// `version`: its records not rewritten since are connections it no
    /// longer has, whose deletes it lost.
    fn sweep(&mut self, worker: u16, version: u64) -> Outcome {
        let gone: Vec<u64> = self
            .index
            .iter()
            .filter(|&(_, &i)| {
                self.seg.record(i).worker == worker && self.newest_version(i) < version
            })
            .map(|(&id, _)| id)
            .collect();
        for id in &gone {
            self.delete(*id);
            if self.track_changes {
                self.changes.push(Change::Gone { conn_id: *id, version });
            }
        }
        self.stats.swept.fetch_add(gone.len() as u64, Ordering::Relaxed);
        Outcome::Swept
    }

    /// A delete stamped `version` removes what was written before it: a
    /// record holding a later portion belongs to a connection that reused the
    /// id after the delete was made (a delete that waited in the dataplane
    /// while the ring was full), and stays.
    fn delete_older(&mut self, conn_id: u64, version: u64) -> Outcome {
        if let Some(&i) = self.index.get(&conn_id) {
            if self.newest_version(i) > version {
                return Outcome::StaleDelete;
            }
        }
        let o = self.delete(conn_id);
        if o == Outcome::Deleted && self.track_changes {
            self.changes.push(Change::Gone { conn_id, version });
        }
        o
    }

    /// Every stored connection id (for a full rewrite of the remote copy).
    pub fn conn_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.index.keys().copied()
    }

    /// Calls `f` with the worker and every present portion of `conn_id`;
    /// None when the store does not hold it.
    pub fn with_portions<R>(
        &self,
        conn_id: u64,
        f: impl FnOnce(u16, &[(u8, u64, &[u8])]) -> R,
    ) -> Option<R> {
        let &i = self.index.get(&conn_id)?;
        let rec = self.seg.record(i);
        let ftp = (rec.ftp != NO_FTP).then(|| self.seg.ftp_record(rec.ftp));
        let mut list: [(u8, u64, &[u8]); 3] = [(0, 0, &[]); 3];
        let mut n = 0;
        if rec.ip.is_present() {
            list[n] = (module::IP, rec.ip.version, rec.ip.payload());
            n += 1;
        }
        if rec.l4.is_present() {
            list[n] = (rec.l4.module, rec.l4.version, rec.l4.payload());
            n += 1;
        }
        if let Some(f) = ftp.as_ref() {
            list[n] = (module::FTP, f.portion.version, f.portion.payload());
            n += 1;
        }
        Some(f(rec.worker, &list[..n]))
    }

    fn delete(&mut self, conn_id: u64) -> Outcome {
        let Some(i) = self.index.remove(&conn_id) else {
            return Outcome::Absent;
        };
        let ftp = self.seg.record(i).ftp;
        self.seg.clear_record(i);
        if ftp != NO_FTP {
            self.seg.clear_ftp(ftp);
            self.free_ftp.push(ftp);
            self.stats.ftp.fetch_sub(1, Ordering::Relaxed);
        }
        self.free.push(i);
        self.stats.conns.fetch_sub(1, Ordering::Relaxed);
        Outcome::Deleted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_layout::StoreGeometry;

    fn store(dir: &std::path::Path, conns: u32, ftp: u32) -> Store {
        let seg = StoreSegment::create_file(
            &dir.join("store"),
            StoreGeometry { conn_capacity: conns, ftp_capacity: ftp },
        )
        .unwrap();
        Store::rebuild(seg).0
    }

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ckptd-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn portion(conn_id: u64, m: u8, version: u64, payload: &[u8]) -> Delta<'_> {
        Delta { seq: 0, conn_id, version, module: m, kind: delta_kind::PORTION, payload }
    }

    #[test]
    fn upsert_keeps_newest_and_is_idempotent() {
        let d = tmp("upsert");
        let mut s = store(&d, 4, 1);
        assert_eq!(s.apply(&portion(1, module::TCP, 5, b"v5"), 0), Outcome::Applied);
        assert_eq!(s.apply(&portion(1, module::TCP, 5, b"v5"), 0), Outcome::Applied);
        assert_eq!(s.apply(&portion(1, module::TCP, 4, b"v4"), 0), Outcome::Stale);
        assert_eq!(s.apply(&portion(1, module::FTP, 1, b"ftp"), 0), Outcome::Applied);
        assert_eq!(s.apply(&portion(2, module::FTP, 1, b"ftp"), 0), Outcome::FtpFull);
        assert_eq!(s.index.len(), 1, "a record allocated for a dropped portion is freed");
        let c = s.segment().restore_iter(0).next().unwrap();
        assert_eq!(
            (c.l4().unwrap().payload(), c.ftp().unwrap().payload()),
            (&b"v5"[..], &b"ftp"[..])
        );
        // A delete made before the record's newest portion is an earlier
        // connection's: the record stays.
        let early = Delta { kind: delta_kind::DELETE, ..portion(1, 0, 4, &[]) };
        assert_eq!(s.apply(&early, 0), Outcome::StaleDelete);
        assert_eq!(s.stats.stale_deletes.load(Ordering::Relaxed), 1);
        let del = Delta { kind: delta_kind::DELETE, ..portion(1, 0, 6, &[]) };
        assert_eq!(s.apply(&del, 0), Outcome::Deleted);
        assert_eq!(s.apply(&del, 0), Outcome::Absent);
        assert_eq!(s.apply(&portion(2, module::FTP, 1, b"ftp"), 0), Outcome::Applied);
        for id in 10..13 {
            s.apply(&portion(id, module::IP, 1, b"x"), 0);
        }
        assert_eq!(s.apply(&portion(99, module::IP, 1, b"x"), 0), Outcome::StoreFull);
        assert_eq!(s.stats.full_drops.load(Ordering::Relaxed), 1);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn changes_say_what_is_new_and_what_is_a_refresh() {
        let d = tmp("changes");
        let mut s = store(&d, 4, 1);
        s.track_changes = true;
        s.apply(&portion(1, module::IP, 1, b"ip"), 0);
        s.apply(&portion(1, module::TCP, 2, b"tcp"), 0);
        s.apply(&portion(1, module::TCP, 3, b"tcp refresh"), 0);
        s.apply(&portion(1, module::TCP, 2, b"stale"), 0);
        s.apply(&portion(1, module::FTP, 4, b"ftp"), 0);
        s.apply(&portion(1, module::FTP, 5, b"ftp again"), 0);
        s.apply(&Delta { kind: delta_kind::DELETE, ..portion(1, 0, 6, &[]) }, 0);
        let put = |first| Change::Put { conn_id: 1, first, protected: false };
        assert_eq!(
            s.changes,
            vec![
                put(true),
                put(true),
                put(false),
                put(true),
                put(true),
                Change::Gone { conn_id: 1, version: 6 }
            ]
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_sweep_drops_what_its_worker_did_not_rewrite() {
        let d = tmp("sweep");
        let mut s = store(&d, 8, 1);
        s.apply(&portion(1, module::IP, 10, b"old"), 0);
        s.apply(&portion(2, module::IP, 10, b"rewritten"), 0);
        s.apply(&portion(2, module::TCP, 30, b"rewritten"), 0);
        s.apply(&portion(3, module::IP, 10, b"another worker's"), 1);
        let sweep = Delta { kind: delta_kind::SWEEP, ..portion(0, 0, 20, &[]) };
        assert_eq!(s.apply(&sweep, 0), Outcome::Swept);
        let mut left: Vec<u64> = s.index.keys().copied().collect();
        left.sort();
        assert_eq!(left, vec![2, 3]);
        assert_eq!(s.stats.swept.load(Ordering::Relaxed), 1);
        assert_eq!(s.stats.conns.load(Ordering::Relaxed), 2);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn rebuild_drops_bad_portions_and_keeps_the_rest() {
        let d = tmp("rebuild");
        let mut s = store(&d, 8, 2);
        s.apply(&portion(1, module::IP, 1, b"ip1"), 0);
        s.apply(&portion(1, module::TCP, 1, b"tcp1"), 0);
        s.apply(&portion(2, module::UDP, 1, b"udp2"), 1);
        s.apply(&portion(3, module::FTP, 1, b"ftp3"), 1);
        let i1 = s.index[&1];
        let i2 = s.index[&2];
        let mut seg = s.seg;
        let mut r = seg.record(i1);
        r.l4.payload[0] ^= 1;
        seg.write_record(i1, &r);
        let mut r = seg.record(i2);
        r.l4.payload[0] ^= 1;
        seg.write_record(i2, &r);
        let (s, rb) = Store::rebuild(seg);
        assert_eq!((rb.conns, rb.ftp, rb.bad_portions, rb.dropped_records), (2, 1, 2, 1));
        let c = s.segment().restore_iter(0).next().unwrap();
        assert_eq!((c.conn_id, c.ip().is_some(), c.l4().is_none()), (1, true, true));
        assert_eq!(s.free.len(), 6);
        assert_eq!(s.free_ftp.len(), 1);
        std::fs::remove_dir_all(d).unwrap();
    }
}
