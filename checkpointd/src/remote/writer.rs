//! The writer: one thread with its own tokio runtime that sends the
//! tracker's batches to Redis, one pipelined script call a bucket, and keeps
//! the connection (reconnecting with back-off). Nothing here can stall the
//! drain loop: the tracker hands batches over a bounded channel and keeps
//! coalescing while it is full.

use super::link::{is_auth_error, Link};
use super::stats::RemoteStats;
use redis::aio::MultiplexedConnection;
use shm_layout::remote::{bucket_key, EPOCH_FIELD, OWNER_FIELD, REMOTE_BUCKETS, WRITE_SCRIPT};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Receiver;
use tracing::{error, info, warn};

/// One bucket's share of a batch: (field, value) pairs for the script.
pub struct BucketWrite {
    pub bucket: u16,
    pub pairs: Vec<(String, Vec<u8>)>,
}

/// What the tracker sends in one go.
pub struct Batch {
    pub buckets: Vec<BucketWrite>,
    pub records: u64,
    pub deletes: u64,
    pub bytes: u64,
    /// When the oldest change in the batch was drained.
    pub oldest: Instant,
}

/// What the writer and the tracker share besides the counters.
#[derive(Default)]
pub struct Shared {
    /// Buckets the store lost (their epoch field vanished): the tracker
    /// queues their connections again.
    pub resync: Mutex<Vec<u16>>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often an idle writer checks its connection.
const LIVENESS_EVERY: Duration = Duration::from_secs(1);

struct Session {
    conn: MultiplexedConnection,
    sha: String,
}

pub struct Writer {
    pub link: Arc<Link>,
    pub stats: Arc<RemoteStats>,
    pub shared: Arc<Shared>,
    pub origin: String,
}

impl Writer {
    pub async fn run(self, mut rx: Receiver<Batch>) {
        let mut written = vec![false; usize::from(REMOTE_BUCKETS)];
        // Connected before the first batch: the tracker sends nothing until
        // the epoch is known.
        let mut session = Some(self.connect(&mut written).await);
        let mut tick = tokio::time::interval(LIVENESS_EVERY);
        loop {
            let batch = tokio::select! {
                b = rx.recv() => match b {
                    Some(b) => b,
                    None => return,
                },
                _ = tick.tick() => {
                    // An idle writer still notices a store that restarted
                    // (and lost what this appliance wrote): the reconnect
                    // finds the lost buckets.
                    if let Some(s) = session.as_mut() {
                        if let Err(e) = redis::cmd("PING").query_async::<String>(&mut s.conn).await {
                            RemoteStats::add(&self.stats.errors, 1);
                            self.stats.up.store(false, Ordering::Relaxed);
                            warn!("remote store {}: lost the connection ({e}); reconnecting", self.link.shown);
                            session = Some(self.connect(&mut written).await);
                        }
                    }
                    continue;
                }
            };
            if self.stats.fenced.load(Ordering::Relaxed) {
                RemoteStats::add(&self.stats.fenced_writes, batch.records + batch.deletes);
                continue;
            }
            loop {
                let s = match session.as_mut() {
                    Some(s) => s,
                    None => session.insert(self.connect(&mut written).await),
                };
                match self.write(s, &batch, &mut written).await {
                    Ok(()) => break,
                    Err(e) => {
                        RemoteStats::add(&self.stats.errors, 1);
                        self.stats.up.store(false, Ordering::Relaxed);
                        warn!("remote store {}: write failed ({e}); reconnecting", self.link.shown);
                        session = None;
                        tokio::time::sleep(BACKOFF_MIN).await;
                    }
                }
            }
        }
    }

    /// Opens a session, retrying with back-off for as long as it takes.
    async fn connect(&self, written: &mut [bool]) -> Session {
        let mut backoff = BACKOFF_MIN;
        let mut logged = false;
        loop {
            match self.open(written).await {
                Ok(s) => return s,
                Err(e) => {
                    RemoteStats::add(&self.stats.errors, 1);
                    self.stats.up.store(false, Ordering::Relaxed);
                    if !logged {
                        if is_auth_error(&e) {
                            error!("remote store {}: {e}: check checkpoint.remote.user and password_file; retrying", self.link.shown);
                        } else {
                            warn!("remote store {} is down ({e}): checkpointing locally, retrying with back-off", self.link.shown);
                        }
                        logged = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Connects, loads the script, learns the epoch on the first connect,
    /// and on a reconnect finds the buckets the server lost.
    async fn open(&self, written: &mut [bool]) -> redis::RedisResult<Session> {
        let mut conn = self.link.connect().await?;
        let sha: String =
            redis::cmd("SCRIPT").arg("LOAD").arg(WRITE_SCRIPT).query_async(&mut conn).await?;
        let mut pipe = redis::pipe();
        for b in 0..REMOTE_BUCKETS {
            pipe.cmd("HMGET")
                .arg(bucket_key(&self.link.namespace, b))
                .arg(EPOCH_FIELD)
                .arg(OWNER_FIELD);
        }
        let held: Vec<(Option<u64>, Option<String>)> = pipe.query_async(&mut conn).await?;
        let epochs: Vec<Option<u64>> = held.iter().map(|h| h.0).collect();
        let top = held.iter().filter_map(|h| h.0.map(|e| (e, h.1.as_deref()))).max_by_key(|h| h.0);
        let first = self.stats.epoch.load(Ordering::Relaxed) == 0;
        if first {
            match top {
                None => self.stats.epoch.store(1, Ordering::Relaxed),
                Some((e, owner)) if owner == Some(self.link.appliance.as_str()) => {
                    self.stats.epoch.store(e, Ordering::Relaxed)
                }
                Some((e, owner)) => {
                    self.stats.epoch.store(e, Ordering::Relaxed);
                    self.stats.fenced.store(true, Ordering::Relaxed);
                    error!(
                        "remote store {}: appliance {:?} holds epoch {e} (it took over): this one \
                         ({:?}) is fenced off and writes no remote state (counted in fenced_writes); \
                         run it as the standby (checkpoint.remote.role = \"standby\")",
                        self.link.shown,
                        owner.unwrap_or("?"),
                        self.link.appliance
                    );
                }
            }
        } else {
            RemoteStats::add(&self.stats.reconnects, 1);
            // Every bucket without an epoch: the tracker resends the stored
            // connections of each (those restored at start included, which
            // this process never wrote); buckets it holds nothing of cost nothing.
            let lost: Vec<u16> =
                (0..REMOTE_BUCKETS).filter(|&b| epochs[usize::from(b)].is_none()).collect();
            if !lost.is_empty() {
                let gone = lost.iter().filter(|&&b| written[usize::from(b)]).count();
                if gone > 0 {
                    warn!(
                        "remote store {}: {gone} bucket(s) this process wrote are gone (the \
                         server restarted without its data?): sending the connections stored \
                         for every bucket without an epoch ({}) again",
                        self.link.shown,
                        lost.len()
                    );
                }
                for &b in &lost {
                    written[usize::from(b)] = false;
                }
                RemoteStats::add(&self.stats.buckets_resynced, lost.len() as u64);
                self.shared.resync.lock().expect("resync list").extend(lost);
            }
        }
        self.stats.up.store(true, Ordering::Relaxed);
        info!(
            "remote store {} up: epoch {}, {} bucket(s) hold state",
            self.link.shown,
            self.stats.epoch.load(Ordering::Relaxed),
            epochs.iter().flatten().count()
        );
        Ok(Session { conn, sha })
    }

    async fn write(
        &self,
        s: &mut Session,
        batch: &Batch,
        written: &mut [bool],
    ) -> redis::RedisResult<()> {
        let epoch = self.stats.epoch.load(Ordering::Relaxed);
        let drained_unix_ns =
            super::unix_ns().saturating_sub(batch.oldest.elapsed().as_nanos() as u64);
        let mut pipe = redis::pipe();
        for w in &batch.buckets {
            let c = pipe.cmd("EVALSHA").arg(&s.sha).arg(1);
            c.arg(bucket_key(&self.link.namespace, w.bucket)).arg(epoch).arg(&self.origin);
            c.arg(drained_unix_ns).arg(&self.link.appliance);
            for (field, value) in &w.pairs {
                c.arg(field).arg(value.as_slice());
            }
        }
        let replies: Vec<(i64, u64, u64, u64)> = pipe.query_async(&mut s.conn).await?;
        let mut stale = 0;
        for (w, &(status, their_epoch, _, st)) in batch.buckets.iter().zip(&replies) {
            match status {
                0 => {
                    if !self.stats.fenced.swap(true, Ordering::Relaxed) {
                        error!(
                            "remote store {}: bucket {} carries epoch {their_epoch}, newer than this \
                             appliance's {epoch}: another appliance took over. This one no longer \
                             writes remote state (counted in fenced_writes); restart it as the standby",
                            self.link.shown, w.bucket
                        );
                    }
                    RemoteStats::add(&self.stats.fenced_writes, w.pairs.len() as u64);
                    continue;
                }
                2 if written[usize::from(w.bucket)] => {
                    RemoteStats::add(&self.stats.buckets_resynced, 1);
                    self.shared.resync.lock().expect("resync list").push(w.bucket);
                }
                _ => {}
            }
            written[usize::from(w.bucket)] = true;
            stale += st;
        }
        RemoteStats::add(&self.stats.stale, stale);
        RemoteStats::add(&self.stats.batches, 1);
        RemoteStats::add(&self.stats.records_written, batch.records);
        RemoteStats::add(&self.stats.deletes_written, batch.deletes);
        RemoteStats::add(&self.stats.bytes_sent, batch.bytes);
        self.stats.lag(batch.oldest.elapsed().as_micros() as u64);
        self.stats.up.store(true, Ordering::Relaxed);
        Ok(())
    }
}
