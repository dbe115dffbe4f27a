//! The remote copy: checkpointd's second store, in Redis, for when the whole
//! box is lost. The local store stays the authority; the remote copy trails
//! it. The drain loop notes which connections changed ([`Tracker`]); every
//! `flush_interval_ms` it seals their current state and hands it to the
//! [writer](writer::Writer), which runs on its own thread. A connection that
//! changes again before it is sent travels once, so refreshes coalesce.
//! docs/CHECKPOINT.md#remote has the keys and the guarantees.

mod commit;
mod epoch;
mod follower;
mod link;
mod restore;
mod standby;
mod stats;
mod writer;

pub use link::{is_fatal, probe, Link};
pub use restore::{restore, Take};
pub use standby::{Mirror, TakeoverRequest};
pub use stats::RemoteStats;

use crate::protect::SentLog;
use crate::store::{Change, Store};
use anyhow::Context;
use hashbrown::HashMap;
use shm_layout::remote::RemoteRecord;
use shm_layout::remote::{
    bucket_of, conn_field, encode_delete, encode_record, RemotePortion, REMOTE_BUCKETS,
};
use shm_layout::remote_log::{chunk_field, encode_chunk, CHUNK_GONE};
use shm_layout::{module, UNPLACED_WORKER};
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

/// Runs `work` on a thread of its own with a current-thread tokio runtime.
fn spawn(
    name: &str,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .with_context(|| format!("cannot build the {name} thread's runtime"))?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || rt.block_on(work))
        .with_context(|| format!("cannot start the {name} thread"))?;
    Ok(())
}

/// Runs `work` on a runtime of the calling thread, for at most `timeout`
/// (the blocking calls of a start or a takeover); None when it ran out.
pub fn block_on_timeout<T>(
    timeout: std::time::Duration,
    work: impl std::future::Future<Output = T>,
) -> anyhow::Result<Option<T>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build a runtime to reach the remote store")?;
    Ok(rt.block_on(async { tokio::time::timeout(timeout, work).await.ok() }))
}

/// The remote copy as the drain loop drives it.
pub enum RemoteSide {
    Active(Box<Tracker>),
    Standby(Box<Mirror>),
}

impl RemoteSide {
    /// After ring `worker`'s drain from position `before` to `after`: an
    /// active appliance notes what changed.
    pub fn note(&mut self, store: &mut Store, worker: usize, (before, after): (u64, u64)) {
        match self {
            RemoteSide::Active(t) => {
                t.note(&mut store.changes);
                t.drained(worker, before, after);
            }
            RemoteSide::Standby(_) => store.changes.clear(),
        }
    }

    /// Where ring `worker` is committed up to in the remote store (output
    /// commit at the remote level); None on a standby.
    pub fn committed(&mut self, worker: usize) -> Option<u64> {
        match self {
            RemoteSide::Active(t) => Some(t.commit.committed(worker)),
            RemoteSide::Standby(_) => None,
        }
    }

    /// Once a pass: send what is due, or follow (and take over when asked).
    pub fn pass(&mut self, store: &mut Store) {
        match self {
            RemoteSide::Active(t) => t.flush(store),
            RemoteSide::Standby(m) => {
                if let Some(t) = m.pass(store) {
                    *self = RemoteSide::Active(Box::new(t));
                }
            }
        }
    }
}

/// Files change `p` under commit generation `g` when older than its own.
fn stamp(commit: &mut commit::Commit, p: &mut Pending, g: u64) {
    match p.gen {
        Some(old) if old <= g => {}
        old => {
            commit.add(g);
            if let Some(old) = old {
                commit.done(old);
            }
            p.gen = Some(g);
        }
    }
}

/// A field of a bucket and its value, as the write script takes them.
type Pair = (String, Vec<u8>);

/// Batches in flight between the tracker and the writer; beyond that the
/// tracker keeps coalescing.
const IN_FLIGHT: usize = 4;

/// A change not yet sent.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pending {
    /// Some(version): deleted at that version; None: send what the store holds.
    gone: Option<u64>,
    /// The oldest commit generation of its protected changes not sent
    /// yet (see `commit`).
    gen: Option<u64>,
    since: Instant,
    /// Listed in the tracker's urgent list (once, however many urgent
    /// changes it had).
    listed: bool,
}

/// What crosses the network when: a connection's first state, its FTP
/// portion and its end go at the next pass; refreshes of what was already
/// sent (TCP window edges, timers) wait for the interval, coalesced.
/// A protected connection's changes go at once too: a dataplane may hold
/// its server's output for them.
fn urgent(c: &Change) -> bool {
    match *c {
        Change::Put { first, protected, .. } => first || protected,
        Change::Gone { .. } => true,
    }
}

/// The drain loop's side: which connections changed, and when to send them.
pub struct Tracker {
    dirty: HashMap<u64, Pending>,
    /// Beyond this many unsent changes (Redis down under churn) the map is
    /// replaced by a rewrite of every stored connection.
    cap: usize,
    rewrite_all: bool,
    tx: tokio::sync::mpsc::Sender<Batch>,
    link: Arc<Link>,
    shared: Arc<Shared>,
    pub stats: Arc<RemoteStats>,
    interval: Duration,
    batch: usize,
    last_flush: Instant,
    record: Vec<u8>,
    /// A protected connection's head and new log bytes, while they are
    /// sealed.
    protected: Vec<u8>,
    chunk: Vec<u8>,
    /// What was sent of each protected connection's log.
    logs: HashMap<u64, SentLog>,
    /// Pending connections with an urgent change, sent at the next pass.
    urgent: Vec<u64>,
    /// This appliance's worker count, sealed with each record.
    workers: u16,
    /// How far each ring's protected changes are in Redis.
    pub commit: commit::Commit,
    /// Protected changes noted since the last drain was recorded.
    noted_protected: bool,
    /// A rewrite of everything replaced the changes of these generations
    /// and later: held open until it is sent.
    rewrite_gen: Option<u64>,
}

impl Tracker {
    /// Starts the writer thread. `cap`: the store's connection capacity.
    /// `claim`: this appliance just became the active one by a takeover.
    pub fn start(
        link: Arc<Link>,
        sec: &shm_layout::RemoteSection,
        stats: Arc<RemoteStats>,
        cap: u64,
        workers: u32,
        claim: bool,
    ) -> anyhow::Result<Tracker> {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = tokio::sync::mpsc::channel(IN_FLIGHT);
        let writer = Writer {
            link: Arc::clone(&link),
            stats: Arc::clone(&stats),
            shared: Arc::clone(&shared),
            claim,
        };
        spawn("remote", writer.run(rx))?;
        Ok(Tracker {
            dirty: HashMap::with_capacity(4096),
            cap: (2 * cap as usize).max(65_536),
            rewrite_all: false,
            tx,
            link,
            shared,
            stats,
            interval: Duration::from_millis(sec.flush_interval_ms),
            batch: sec.batch as usize,
            last_flush: Instant::now(),
            record: Vec::with_capacity(1024),
            protected: Vec::new(),
            chunk: Vec::new(),
            logs: HashMap::new(),
            urgent: Vec::new(),
            workers: u16::try_from(workers).unwrap_or(u16::MAX),
            commit: commit::Commit::new(workers as usize),
            noted_protected: false,
            rewrite_gen: None,
        })
    }

    /// Chunks Redis holds that this tracker did not write (a restore's, a
    /// mirror's): removed when their log is next sent whole (the first time
    /// it is sent), or with its end.
    pub fn adopt_chunks(&mut self, chunks: HashMap<u64, Vec<u64>>) {
        for (id, list) in chunks {
            self.logs.entry(id).or_default().adopt(list);
        }
    }

    /// A change that did not reach Redis, queued again.
    fn requeue(&mut self, id: u64, p: Pending) {
        match self.dirty.entry(id) {
            hashbrown::hash_map::Entry::Vacant(e) => {
                e.insert(Pending { listed: false, ..p });
            }
            hashbrown::hash_map::Entry::Occupied(mut e) => {
                // It goes with the newer change, under the older generation.
                if let Some(g) = p.gen {
                    stamp(&mut self.commit, e.get_mut(), g);
                    self.commit.done(g);
                }
            }
        }
        self.send_log_whole(id);
    }

    /// Ring `worker` was drained from `before` to `after`, its changes noted.
    pub fn drained(&mut self, worker: usize, before: u64, after: u64) {
        let protected = std::mem::take(&mut self.noted_protected);
        self.commit.drained(worker, before, after, protected);
    }

    /// Changes Redis now holds: their generations close.
    fn committed(&mut self) {
        let done = std::mem::take(&mut *self.shared.committed.lock().expect("commit list"));
        for g in done {
            self.commit.done(g);
        }
    }

    /// A protected connection's chunks may not be in Redis: its log goes
    /// whole at its next change.
    fn send_log_whole(&mut self, id: u64) {
        if let Some(s) = self.logs.get_mut(&id) {
            s.rewrite = true;
        }
    }

    /// Chunks whose removal was refused or never sent: Redis may still
    /// hold them.
    fn unremoved(&mut self, chunks: Vec<(u64, u64)>) {
        for (id, at) in chunks {
            self.logs.entry(id).or_default().adopt([at]);
        }
    }

    /// Takes the store's change list.
    pub fn note(&mut self, changes: &mut Vec<Change>) {
        let now = Instant::now();
        let gen = self.commit.current();
        for c in changes.drain(..) {
            let (id, gone, protected) = match c {
                Change::Put { conn_id, protected, .. } => (conn_id, None, protected),
                Change::Gone { conn_id, version } => (conn_id, Some(version), false),
            };
            self.noted_protected |= protected;
            let urgent = urgent(&c);
            match self.dirty.entry(id) {
                hashbrown::hash_map::Entry::Occupied(mut e) => {
                    let p = e.get_mut();
                    p.gone = gone;
                    if protected {
                        stamp(&mut self.commit, p, gen);
                    }
                    if urgent && !p.listed {
                        p.listed = true;
                        self.urgent.push(id);
                    }
                    RemoteStats::add(&self.stats.coalesced, 1);
                }
                hashbrown::hash_map::Entry::Vacant(e) => {
                    let gen = protected.then_some(gen);
                    if let Some(g) = gen {
                        self.commit.add(g);
                    }
                    e.insert(Pending { gone, gen, since: now, listed: urgent });
                    if urgent {
                        self.urgent.push(id);
                    }
                }
            }
        }
        if self.dirty.len() > self.cap {
            // Their generations stay open until the rewrite is sent: the
            // oldest of them (and of an earlier overflow's) holds one claim.
            let gens: Vec<u64> = self.dirty.values().filter_map(|p| p.gen).collect();
            if let Some(g) = gens.iter().copied().chain(self.rewrite_gen).min() {
                if self.rewrite_gen != Some(g) {
                    self.commit.add(g);
                    if let Some(old) = self.rewrite_gen {
                        self.commit.done(old);
                    }
                }
                self.rewrite_gen = Some(g);
            }
            for g in gens {
                self.commit.done(g);
            }
            // Deletes of connections Redis holds are lost with the map: they
            // stay there until their id is reused (docs/CHECKPOINT.md).
            self.dirty.clear();
            self.urgent.clear();
            self.rewrite_all = true;
            if RemoteStats::get(&self.stats.pending_overflows) == 0 {
                tracing::warn!(
                    "remote store {}: more than {} unsent changes (is it down?): dropped them for \
                     one rewrite of every stored connection when it is back",
                    self.link.shown,
                    self.cap
                );
            }
            RemoteStats::add(&self.stats.pending_overflows, 1);
        }
    }

    /// Queues every stored connection (of `only` buckets, or all): the
    /// remote copy may have missed their last change.
    pub fn queue_all(&mut self, store: &Store, only: Option<&[u16]>) -> u64 {
        let mut mask = [only.is_none(); REMOTE_BUCKETS as usize];
        for &b in only.unwrap_or(&[]) {
            mask[usize::from(b)] = true;
        }
        let now = Instant::now();
        let mut n = 0;
        // A rewrite of everything sends what an overflow dropped: under the
        // oldest generation it dropped, which stays open until then.
        let gen = if only.is_none() { self.rewrite_gen.take() } else { None };
        let tracked = store.conn_ids().map(|id| (id, false));
        for (id, protected) in tracked.chain(store.protect.ids().into_iter().map(|id| (id, true))) {
            if mask[usize::from(bucket_of(id))] {
                self.send_log_whole(id);
                let p = self.dirty.entry(id).or_insert(Pending {
                    gone: None,
                    gen: None,
                    since: now,
                    listed: false,
                });
                if let Some(g) = gen.filter(|_| protected) {
                    stamp(&mut self.commit, p, g);
                }
                n += 1;
            }
        }
        if let Some(g) = gen {
            self.commit.done(g);
        }
        RemoteStats::add(&self.stats.conns_resynced, n);
        n
    }

    /// Sends what is due, if the writer has room and knows its epoch.
    pub fn flush(&mut self, store: &Store) {
        self.committed();
        let lost = std::mem::take(&mut *self.shared.resync.lock().expect("resync list"));
        if !lost.is_empty() {
            self.queue_all(store, Some(&lost));
        }
        let retry = std::mem::take(&mut *self.shared.retry.lock().expect("retry list"));
        for (id, p) in retry {
            self.requeue(id, p);
        }
        let unremoved = std::mem::take(&mut *self.shared.retry_chunks.lock().expect("retry list"));
        self.unremoved(unremoved);
        self.stats.pending.store(self.dirty.len() as u64, Ordering::Relaxed);
        let epoch = self.stats.epoch.load(Ordering::Relaxed);
        if epoch == 0 {
            return;
        }
        let due = self.last_flush.elapsed() >= self.interval;
        if (!due && self.urgent.is_empty()) || self.tx.capacity() == 0 {
            return;
        }
        if self.rewrite_all && self.stats.up.load(Ordering::Relaxed) {
            self.rewrite_all = false;
            self.queue_all(store, None);
        }
        let mut only_urgent = if due {
            self.last_flush = Instant::now();
            self.urgent.clear();
            None
        } else {
            Some(std::mem::take(&mut self.urgent))
        };
        while !self.dirty.is_empty() && self.tx.capacity() > 0 {
            let ids: Vec<u64> = match only_urgent.as_mut() {
                Some(list) if list.is_empty() => break,
                Some(list) => {
                    let n = list.len().min(self.batch);
                    list.drain(..n).filter(|id| self.dirty.contains_key(id)).collect()
                }
                None => self.dirty.keys().take(self.batch).copied().collect(),
            };
            let mut buckets: HashMap<u16, BucketWrite> = HashMap::new();
            let mut b = Batch {
                buckets: Vec::new(),
                records: 0,
                deletes: 0,
                bytes: 0,
                oldest: Instant::now(),
            };
            for id in ids {
                // Sent since it was listed (a flush at the interval).
                let Some(p) = self.dirty.remove(&id) else { continue };
                if only_urgent.is_some() {
                    RemoteStats::add(&self.stats.urgent_sends, 1);
                }
                let (mut pairs, mut gone) = (Vec::with_capacity(1), Vec::new());
                match p.gone {
                    Some(version) => {
                        b.deletes += 1;
                        pairs.push((
                            conn_field(id),
                            encode_delete(&self.link.key, id, epoch, version),
                        ));
                        // A protected connection's chunks go with it.
                        for at in self.logs.remove(&id).map(|s| s.chunks).unwrap_or_default() {
                            pairs.push((chunk_field(id, at), CHUNK_GONE.to_vec()));
                            gone.push((id, at));
                        }
                    }
                    None => {
                        if !self.seal(store, id, epoch, (&mut pairs, &mut gone)) {
                            // Deleted since, and its delete is queued or sent.
                            if let Some(g) = p.gen {
                                self.commit.done(g);
                            }
                            continue;
                        }
                        b.records += 1;
                    }
                }
                b.oldest = b.oldest.min(p.since);
                b.bytes += pairs.iter().map(|(_, v)| v.len() as u64).sum::<u64>();
                let bucket = bucket_of(id);
                let w = buckets.entry(bucket).or_insert_with(|| BucketWrite {
                    bucket,
                    pairs: Vec::new(),
                    changes: Vec::new(),
                    gone_chunks: Vec::new(),
                });
                w.pairs.extend(pairs);
                w.gone_chunks.extend(gone);
                w.changes.push((id, p));
            }
            b.buckets = buckets.into_values().collect();
            if b.buckets.is_empty() {
                continue;
            }
            if let Err(e) = self.tx.try_send(b) {
                // Full despite the check, or the writer gone: the changes go
                // back into the map, nothing is lost.
                let b = match e {
                    tokio::sync::mpsc::error::TrySendError::Full(b)
                    | tokio::sync::mpsc::error::TrySendError::Closed(b) => b,
                };
                for w in b.buckets {
                    for (id, p) in w.changes {
                        self.requeue(id, p);
                    }
                    self.unremoved(w.gone_chunks);
                }
                break;
            }
        }
        if let Some(rest) = only_urgent.filter(|l| !l.is_empty()) {
            // No room in flight: they go with the next pass.
            self.urgent.extend(rest);
        }
        self.stats.pending.store(self.dirty.len() as u64, Ordering::Relaxed);
    }
}

impl Tracker {
    /// Seals `id`'s current state into `pairs`: a tracked connection's
    /// portions, or a protected connection's head, then the chunks it
    /// removes, then its new chunk (a follower applies them in that order).
    /// False when neither is held any more.
    fn seal(
        &mut self,
        store: &Store,
        id: u64,
        epoch: u64,
        (pairs, gone): (&mut Vec<Pair>, &mut Vec<(u64, u64)>),
    ) -> bool {
        let stats = &self.stats;
        let key = &self.link.key;
        let out = &mut self.record;
        let workers = self.workers;
        let mut sent = self.logs.remove(&id).unwrap_or_default();
        let change =
            store.protect.remote_change(id, &mut sent, &mut self.protected, &mut self.chunk);
        let Some(c) = change else {
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
                encode_record(key, id, worker, workers, &portions, out);
            });
            if sealed.is_some() {
                pairs.push((conn_field(id), out.clone()));
            }
            return sealed.is_some();
        };
        self.logs.insert(id, sent);
        let head = RemotePortion {
            module: module::PROTECT,
            version: c.version,
            epoch,
            payload: &self.protected,
        };
        encode_record(key, id, c.worker, workers, &[head], out);
        pairs.push((conn_field(id), out.clone()));
        for &at in &c.gone {
            pairs.push((chunk_field(id, at), CHUNK_GONE.to_vec()));
        }
        gone.extend(c.gone.iter().map(|&at| (id, at)));
        RemoteStats::add(&stats.log_rewrites, u64::from(c.whole && !c.gone.is_empty()));
        let mut from = 0;
        for &(at, len) in &c.chunks {
            let piece = &self.chunk[from..from + len];
            pairs.push((chunk_field(id, at), encode_chunk(key, id, (c.lineage, at), piece)));
            from += len;
        }
        RemoteStats::add(&stats.log_chunk_bytes, self.chunk.len() as u64);
        let bytes = self.protected.len() + self.chunk.len();
        RemoteStats::add(&stats.module_portions[usize::from(module::PROTECT)], 1);
        RemoteStats::add(&stats.module_bytes[usize::from(module::PROTECT)], bytes as u64);
        true
    }
}

/// The worker a record copied from the remote store is stored for here: the
/// writer's, when it ran as many workers as this appliance has (its ports'
/// RSS then sent the connection to the same queue number); else none, and
/// the dataplane places it by its own ports' RSS when it restores.
pub fn local_worker(rec: &RemoteRecord<'_>, workers: u32) -> u16 {
    match rec.workers {
        Some(n) if u32::from(n) == workers && u32::from(rec.worker) < workers => rec.worker,
        _ => UNPLACED_WORKER,
    }
}

#[cfg(test)]
mod commit_tests {
    use super::*;

    /// A tracker whose writer never reaches a store (nothing listens on
    /// port 1): what it sends is settled by hand.
    fn tracker() -> Tracker {
        let dir = std::env::temp_dir().join(format!("lz-commit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        std::fs::write(&key, [7u8; 32]).unwrap();
        let sec = shm_layout::RemoteSection {
            url: "redis://127.0.0.1:1".into(),
            hmac_key_file: key,
            appliance: "a".into(),
            ..Default::default()
        };
        let link = Link::load(&sec).unwrap().unwrap();
        Tracker::start(Arc::new(link), &sec, Arc::new(RemoteStats::default()), 1, 1, false).unwrap()
    }

    fn empty_store(tag: &str) -> Store {
        let dir = std::env::temp_dir().join(format!("lz-commit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let geometry = shm_layout::StoreGeometry { conn_capacity: 4, ftp_capacity: 1 };
        Store::rebuild(shm_layout::StoreSegment::create_file(&dir.join("store"), geometry).unwrap())
            .0
    }

    fn put(id: u64) -> Change {
        Change::Put { conn_id: id, first: false, protected: true }
    }

    /// Sends whatever is queued, and Redis takes it.
    fn all_taken(t: &mut Tracker) {
        let ids: Vec<u64> = t.dirty.keys().copied().collect();
        for id in ids {
            if let Some(g) = t.dirty.remove(&id).and_then(|p| p.gen) {
                t.commit.done(g);
            }
        }
    }

    #[test]
    fn overflows_before_the_rewrite_keep_one_claim_and_release_it() {
        for overflows in [1, 2, 3] {
            let mut t = tracker();
            t.cap = 2;
            t.note(&mut vec![put(1)]);
            t.drained(0, 0, 10);
            for i in 0..overflows {
                t.note(&mut vec![put(10 + i), put(20 + i), put(30 + i)]);
                t.drained(0, 10 + 10 * i, 20 + 10 * i);
            }
            let end = 20 + 10 * (overflows - 1);
            assert!(t.rewrite_all);
            assert_eq!(t.commit.committed(0), 0, "nothing sent yet");
            // Redis is back: the rewrite goes, and Redis takes it.
            t.queue_all(&empty_store(&overflows.to_string()), None);
            all_taken(&mut t);
            t.drained(0, end, end + 10);
            assert_eq!(t.commit.committed(0), end + 10, "{overflows} overflow(s)");
        }
    }

    #[test]
    fn a_change_given_back_keeps_its_generation_open() {
        let mut t = tracker();
        t.note(&mut vec![put(1)]);
        t.drained(0, 0, 10);
        let p = t.dirty.remove(&1).unwrap();
        // Refused by Redis after a newer change of it was noted.
        t.note(&mut vec![put(1)]);
        t.drained(0, 10, 20);
        t.requeue(1, p);
        assert_eq!(t.commit.committed(0), 0);
        all_taken(&mut t);
        assert_eq!(t.commit.committed(0), 20);
    }
}
