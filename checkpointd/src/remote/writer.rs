//! The writer: one thread with its own tokio runtime that sends the
//! tracker's batches to Redis, one pipelined script call a bucket, and keeps
//! the connection (reconnecting with back-off). Nothing here can stall the
//! drain loop: the tracker hands batches over a bounded channel and keeps
//! coalescing while it is full.

use super::epoch::{self, Raised};
use super::link::{tls_fault, Link, Refused, TlsFault};
use super::stats::RemoteStats;
use super::Pending;
use redis::aio::MultiplexedConnection;
use shm_layout::remote::{bucket_key, REMOTE_BUCKETS, WRITE_SCRIPT};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Receiver;
use tracing::{error, info, warn};

/// One bucket's share of a batch: (field, value) pairs for the script, and
/// the changes they carry (given back to the tracker if the call fails).
pub struct BucketWrite {
    pub bucket: u16,
    pub pairs: Vec<(String, Vec<u8>)>,
    pub changes: Vec<(u64, Pending)>,
    /// Protected connections' chunks the call removes (given back too).
    pub gone_chunks: Vec<(u64, u64)>,
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

/// What the writer hands back to the tracker.
#[derive(Default)]
pub struct Shared {
    /// Buckets the store lost (no epoch any more): the tracker queues their
    /// stored connections again.
    pub resync: Mutex<Vec<u16>>,
    /// Changes of bucket calls Redis refused (out of memory, a missing ACL
    /// permission, a script error): queued again.
    pub retry: Mutex<Vec<(u64, Pending)>>,
    /// Chunk removals (connection, offset) of refused calls.
    pub retry_chunks: Mutex<Vec<(u64, u64)>>,
    /// Commit generations of protected changes Redis took.
    pub committed: Mutex<Vec<u64>>,
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
    /// This appliance became the active one by a takeover: at its first
    /// connect it raises the epoch even if another appliance owns it (a
    /// forced takeover that could not reach Redis).
    pub claim: bool,
}

impl Writer {
    pub async fn run(self, mut rx: Receiver<Batch>) {
        let mut written = vec![false; usize::from(REMOTE_BUCKETS)];
        // Connected before the first batch: the tracker sends nothing until
        // the epoch is known.
        let mut session = Some(self.connect(&mut written).await);
        let mut tick = tokio::time::interval(LIVENESS_EVERY);
        let mut refusals_logged = 0u32;
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
                            self.lost("lost the connection", &e);
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
                match self.write(s, &batch, &mut written, &mut refusals_logged).await {
                    Ok(refused) => {
                        if refused {
                            // Redis refused some calls (full, say): let the
                            // tracker coalesce a while before the retry.
                            tokio::time::sleep(BACKOFF_MIN * 5).await;
                        }
                        break;
                    }
                    Err(e) => {
                        // The same batch again once reconnected: the script
                        // orders by version, so it cannot undo a newer write.
                        self.lost("write failed", &e);
                        session = None;
                        tokio::time::sleep(BACKOFF_MIN).await;
                    }
                }
            }
        }
    }

    /// Counts an error and reports the store down.
    fn down(&self) {
        RemoteStats::add(&self.stats.errors, 1);
        self.stats.up.store(false, Ordering::Relaxed);
    }

    /// A session that failed: [`Writer::down`], said once per failure.
    fn lost(&self, what: &str, e: &dyn std::fmt::Display) {
        self.down();
        warn!("remote store {}: {what} ({e}); reconnecting", self.link.shown);
    }

    /// Opens a session, retrying with back-off for as long as it takes.
    async fn connect(&self, written: &mut [bool]) -> Session {
        let mut backoff = BACKOFF_MIN;
        let mut logged = false;
        loop {
            match self.open(written).await {
                Ok(s) => return s,
                Err(e) => {
                    self.down();
                    if !logged {
                        let clock = tls_fault(&e) == Some(TlsFault::Clock);
                        let why = Refused::classify(e);
                        if why.is::<Refused>() {
                            error!("remote store {}: {why:#}; retrying", self.link.shown);
                        } else if clock {
                            warn!("remote store {}: {why}: a certificate is expired or not valid yet: check this host's clock (NTP) or renew it; checkpointing locally, retrying", self.link.shown);
                        } else {
                            warn!("remote store {} is down ({why}): checkpointing locally, retrying with back-off", self.link.shown);
                        }
                        logged = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Connects and loads the script; on the first connect takes the epoch
    /// (raising it, or finding this appliance fenced off); on a reconnect
    /// finds the buckets the server lost.
    async fn open(&self, written: &mut [bool]) -> redis::RedisResult<Session> {
        let mut conn = self.link.connect().await?;
        let sha: String =
            redis::cmd("SCRIPT").arg("LOAD").arg(WRITE_SCRIPT).query_async(&mut conn).await?;
        let held = epoch::held(&mut conn, &self.link).await?;
        if self.stats.epoch.load(Ordering::Relaxed) == 0 {
            let me = self.link.appliance.as_str();
            let verdict = match epoch::top(&held) {
                Some((e, owner)) if owner != me && !self.claim => Raised::Taken { epoch: e, owner },
                // Raised at every start: this process's versions restart
                // with the TSC after a reboot, and the script orders by
                // epoch first.
                _ => epoch::raise(&mut conn, &self.link).await?,
            };
            match verdict {
                Raised::Won(e) => self.stats.epoch.store(e, Ordering::Relaxed),
                Raised::Taken { epoch: e, owner } => {
                    self.stats.epoch.store(e, Ordering::Relaxed);
                    self.stats.fenced.store(true, Ordering::Relaxed);
                    error!(
                        "remote store {}: appliance {owner:?} holds epoch {e} (it took over): this \
                         one ({me:?}) is fenced off and writes no remote state (counted in \
                         fenced_writes); run it as the standby (checkpoint.remote.role = \"standby\")",
                        self.link.shown
                    );
                }
            }
        } else {
            RemoteStats::add(&self.stats.reconnects, 1);
            // Every bucket without an epoch: the tracker resends the stored
            // connections of each (those restored at start included, which
            // this process never wrote); buckets it holds nothing of cost
            // nothing.
            let lost: Vec<u16> =
                (0..REMOTE_BUCKETS).filter(|&b| held[usize::from(b)].0.is_none()).collect();
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
            held.iter().filter(|h| h.0.is_some()).count()
        );
        Ok(Session { conn, sha })
    }

    /// Sends one batch. Ok(true) when Redis refused some bucket calls (their
    /// changes go back to the tracker); Err when the connection failed.
    async fn write(
        &self,
        s: &mut Session,
        batch: &Batch,
        written: &mut [bool],
        refusals_logged: &mut u32,
    ) -> redis::RedisResult<bool> {
        let epoch = self.stats.epoch.load(Ordering::Relaxed);
        let drained_unix_ns =
            super::unix_ns().saturating_sub(batch.oldest.elapsed().as_nanos() as u64);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for w in &batch.buckets {
            let c = pipe.cmd("EVALSHA").arg(&s.sha).arg(1);
            c.arg(bucket_key(&self.link.namespace, w.bucket)).arg(epoch);
            c.arg(drained_unix_ns).arg(&self.link.appliance);
            for (field, value) in &w.pairs {
                c.arg(field).arg(value.as_slice());
            }
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut s.conn).await?;
        let mut stale = 0;
        let mut refused = false;
        let mut reload = false;
        for (w, reply) in batch.buckets.iter().zip(replies) {
            let parsed = match reply {
                redis::Value::ServerError(e) => Err(redis::RedisError::from(e)),
                v => redis::from_redis_value::<(i64, u64, u64, u64)>(v)
                    .map_err(redis::RedisError::from),
            };
            let (status, their_epoch, _, st) = match parsed {
                Ok(r) => r,
                Err(e) => {
                    refused = true;
                    reload |= e.to_string().contains("NOSCRIPT");
                    RemoteStats::add(&self.stats.refused_calls, 1);
                    self.shared.retry.lock().expect("retry list").extend(w.changes.iter().cloned());
                    let mut unremoved = self.shared.retry_chunks.lock().expect("retry list");
                    unremoved.extend(w.gone_chunks.iter().copied());
                    if *refusals_logged < 5 {
                        *refusals_logged += 1;
                        let advice = refusal_advice(&e);
                        error!("remote store {}: bucket {} refused the write ({e}): {advice}; its {} change(s) are queued again", self.link.shown, w.bucket, w.changes.len());
                    }
                    continue;
                }
            };
            let lost = status == 2 && written[usize::from(w.bucket)];
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
            if lost {
                // The bucket lost what was written before (Redis restarted
                // empty): these changes are not whole there; sent again
                // (their logs whole), their generations stay open.
                let again = w.changes.iter().filter(|(_, p)| p.gen.is_some()).cloned();
                self.shared.retry.lock().expect("retry list").extend(again);
            } else {
                let gens = w.changes.iter().filter_map(|(_, p)| p.gen);
                self.shared.committed.lock().expect("commit list").extend(gens);
            }
        }
        if reload {
            s.sha =
                redis::cmd("SCRIPT").arg("LOAD").arg(WRITE_SCRIPT).query_async(&mut s.conn).await?;
        }
        RemoteStats::add(&self.stats.stale, stale);
        RemoteStats::add(&self.stats.batches, 1);
        RemoteStats::add(&self.stats.records_written, batch.records);
        RemoteStats::add(&self.stats.deletes_written, batch.deletes);
        RemoteStats::add(&self.stats.bytes_sent, batch.bytes);
        self.stats.lag(batch.oldest.elapsed().as_micros() as u64);
        self.stats.up.store(true, Ordering::Relaxed);
        Ok(refused)
    }
}

/// What to do about a bucket call Redis refused.
fn refusal_advice(e: &redis::RedisError) -> &'static str {
    let text = e.to_string();
    if text.contains("OOM") {
        "Redis is out of memory (maxmemory): raise maxmemory or free memory; checkpointing continues locally"
    } else if text.contains("NOPERM") || text.contains("NoPerm") {
        "the ACL user lacks a permission: give it the ACL line of docs/OPERATING.md"
    } else if text.contains("NOSCRIPT") {
        "the script was flushed from Redis: it is loaded again"
    } else {
        "a Redis error"
    }
}
