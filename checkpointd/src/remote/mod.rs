//! The remote copy: checkpointd's second store, in Redis, for when the whole
//! box is lost. The local store stays the authority; the remote copy trails
//! it. The drain loop notes which connections changed ([`Tracker`]); every
//! `flush_interval_ms` it seals their current state and hands it to the
//! [writer](writer::Writer), which runs on its own thread. A connection that
//! changes again before it is sent travels once, so refreshes coalesce.
//! docs/CHECKPOINT.md#remote has the keys and the guarantees.

mod follower;
mod link;
mod restore;
mod standby;
mod stats;
mod writer;

pub use link::{is_fatal, probe, Link};
pub use restore::restore;
pub use standby::{Mirror, TakeoverRequest};
pub use stats::RemoteStats;

use crate::store::{Change, Store};
use anyhow::Context;
use hashbrown::HashMap;
use shm_layout::remote::{
    bucket_of, conn_field, delete_value, encode_record, RemotePortion, REMOTE_BUCKETS,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use writer::{Batch, BucketWrite, Shared, Writer};

/// Now, CLOCK_REALTIME, in ns: lag across processes (and hosts whose clocks
/// are synchronised).
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The remote copy as the drain loop drives it.
pub enum RemoteSide {
    Active(Tracker),
    Standby(Mirror),
}

impl RemoteSide {
    /// After each ring's drain: an active appliance notes what changed.
    pub fn note(&mut self, store: &mut Store) {
        match self {
            RemoteSide::Active(t) => t.note(&mut store.changes),
            RemoteSide::Standby(_) => store.changes.clear(),
        }
    }

    /// Once a pass: send what is due, or follow (and take over when asked).
    pub fn pass(&mut self, store: &mut Store) {
        match self {
            RemoteSide::Active(t) => t.flush(store),
            RemoteSide::Standby(m) => {
                if let Some(t) = m.pass(store) {
                    *self = RemoteSide::Active(t);
                }
            }
        }
    }
}

/// Batches in flight between the tracker and the writer; beyond that the
/// tracker keeps coalescing.
const IN_FLIGHT: usize = 4;

#[derive(Clone, Copy)]
struct Pending {
    /// Some(version): deleted at that version; None: send what the store holds.
    gone: Option<u64>,
    since: Instant,
}

/// The drain loop's side: which connections changed, and when to send them.
pub struct Tracker {
    dirty: HashMap<u64, Pending>,
    tx: tokio::sync::mpsc::Sender<Batch>,
    link: Arc<Link>,
    shared: Arc<Shared>,
    pub stats: Arc<RemoteStats>,
    interval: Duration,
    batch: usize,
    last_flush: Instant,
    record: Vec<u8>,
}

impl Tracker {
    /// Starts the writer thread.
    pub fn start(
        link: Arc<Link>,
        sec: &shm_layout::RemoteSection,
        stats: Arc<RemoteStats>,
        origin: &shm_layout::SegmentOrigin,
    ) -> anyhow::Result<Tracker> {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = tokio::sync::mpsc::channel(IN_FLIGHT);
        let writer = Writer {
            link: Arc::clone(&link),
            stats: Arc::clone(&stats),
            shared: Arc::clone(&shared),
            origin: shm_layout::remote::origin_text(origin),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build the remote writer's runtime")?;
        std::thread::Builder::new()
            .name("remote".into())
            .spawn(move || rt.block_on(writer.run(rx)))
            .context("cannot start the remote writer thread")?;
        Ok(Tracker {
            dirty: HashMap::with_capacity(4096),
            tx,
            link,
            shared,
            stats,
            interval: Duration::from_millis(sec.flush_interval_ms),
            batch: sec.batch as usize,
            last_flush: Instant::now(),
            record: Vec::with_capacity(1024),
        })
    }

    /// Takes the store's change list.
    pub fn note(&mut self, changes: &mut Vec<Change>) {
        let now = Instant::now();
        for c in changes.drain(..) {
            let (id, gone) = match c {
                Change::Put(id) => (id, None),
                Change::Gone { conn_id, version } => (conn_id, Some(version)),
            };
            self.dirty
                .entry(id)
                .and_modify(|p| p.gone = gone)
                .or_insert(Pending { gone, since: now });
        }
    }

    /// Queues every stored connection (of `only` buckets, or all): the
    /// remote copy may have missed their last change.
    pub fn queue_all(&mut self, store: &Store, only: Option<&[u16]>) -> u64 {
        let now = Instant::now();
        let mut n = 0;
        for id in store.conn_ids() {
            if only.is_some_and(|b| !b.contains(&bucket_of(id))) {
                continue;
            }
            self.dirty.entry(id).or_insert(Pending { gone: None, since: now });
            n += 1;
        }
        RemoteStats::add(&self.stats.conns_resynced, n);
        n
    }

    /// Sends what is due, if the writer has room and knows its epoch.
    pub fn flush(&mut self, store: &Store) {
        let lost = std::mem::take(&mut *self.shared.resync.lock().expect("resync list"));
        if !lost.is_empty() {
            self.queue_all(store, Some(&lost));
        }
        self.stats.pending.store(self.dirty.len() as u64, Ordering::Relaxed);
        let epoch = self.stats.epoch.load(Ordering::Relaxed);
        if self.dirty.is_empty() || epoch == 0 || self.last_flush.elapsed() < self.interval {
            return;
        }
        self.last_flush = Instant::now();
        while !self.dirty.is_empty() && self.tx.capacity() > 0 {
            let ids: Vec<u64> = self.dirty.keys().take(self.batch).copied().collect();
            let mut buckets: HashMap<u16, Vec<(String, Vec<u8>)>> = HashMap::new();
            let mut b = Batch {
                buckets: Vec::new(),
                records: 0,
                deletes: 0,
                bytes: 0,
                oldest: Instant::now(),
            };
            for id in ids {
                let p = self.dirty.remove(&id).expect("listed above");
                b.oldest = b.oldest.min(p.since);
                let value = match p.gone {
                    Some(version) => {
                        b.deletes += 1;
                        delete_value(version).to_vec()
                    }
                    None => {
                        let stats = &self.stats;
                        let key = &self.link.key;
                        let out = &mut self.record;
                        let sealed = store.with_portions(id, |worker, list| {
                            let portions: Vec<RemotePortion<'_>> = list
                                .iter()
                                .map(|&(module, version, payload)| {
                                    let m = usize::from(module).min(4);
                                    RemoteStats::add(&stats.module_portions[m], 1);
                                    RemoteStats::add(&stats.module_bytes[m], payload.len() as u64);
                                    RemotePortion { module, version, epoch, payload }
                                })
                                .collect();
                            encode_record(key, id, worker, &portions, out);
                        });
                        if sealed.is_none() {
                            // Deleted since, and its delete is queued or sent.
                            continue;
                        }
                        b.records += 1;
                        self.record.clone()
                    }
                };
                b.bytes += value.len() as u64;
                buckets.entry(bucket_of(id)).or_default().push((conn_field(id), value));
            }
            b.buckets =
                buckets.into_iter().map(|(bucket, pairs)| BucketWrite { bucket, pairs }).collect();
            debug_assert!(b.buckets.iter().all(|w| w.bucket < REMOTE_BUCKETS));
            if b.buckets.is_empty() {
                continue;
            }
            if self.tx.try_send(b).is_err() {
                // The writer is gone (it never exits while we run) or full
                // despite the check: nothing is lost, the store still has it.
                self.queue_all(store, None);
                break;
            }
        }
        self.stats.pending.store(self.dirty.len() as u64, Ordering::Relaxed);
    }
}
