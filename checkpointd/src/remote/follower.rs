//! A standby's checkpointd follows the remote copy into its local store, a
//! hot mirror that `lazarusctl takeover` hands to the dataplane. The
//! follower subscribes to every bucket's channel, then reads each bucket
//! whole (the published numbers tell which messages the read already
//! holds), then applies what the active appliance publishes. A bucket whose
//! number is not the mirror's at two checks in a row, or a reconnect, is
//! read whole again, and what the mirror holds of it that Redis no longer
//! does is removed. Records and deletes are verified (HMAC) here, and
//! ordered by (epoch, version) against the newest the mirror has seen of the
//! connection: an older one (a replay) is refused and counted. The drain
//! loop, which owns the store, applies what passes, at version 0 (the
//! versions are another process's clock).

use super::link::{is_auth_error, tls_fault, Link};
use super::stats::RemoteStats;
use futures_util::StreamExt;
use hashbrown::HashMap;
use redis::aio::MultiplexedConnection;
use shm_layout::remote::{
    bucket_key, bucket_of, decode_change, decode_delete, decode_record, field_conn, is_delete,
    REMOTE_BUCKETS, SEQ_FIELD,
};
use shm_layout::remote_log::{decode_chunk, field_chunk, CHUNK_GONE};
use shm_layout::UNPLACED_WORKER;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tracing::{error, info, warn};

/// One change for the mirror, verified.
pub enum MirrorOp {
    Put {
        conn_id: u64,
        worker: u16,
        portions: Vec<(u8, Vec<u8>)>,
    },
    Delete {
        conn_id: u64,
    },
    /// Log bytes of a protected connection, from stream offset `offset`.
    Chunk {
        id: u64,
        lineage: u64,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// One of its chunks removed.
    ChunkGone {
        id: u64,
        offset: u64,
    },
    /// After reading `buckets` whole: what the mirror holds of them that is
    /// not in `keep` is gone from Redis.
    Prune {
        buckets: Vec<u16>,
        keep: hashbrown::HashSet<u64>,
    },
}

/// What the follower, the drain loop and a takeover share.
#[derive(Default)]
pub struct FollowState {
    /// Unix ns when every bucket's number was last seen applied.
    pub caught_up_unix_ns: AtomicU64,
    /// Ask for a check now (a takeover is waiting on it).
    pub check_now: Notify,
    pub stop: AtomicBool,
}

/// How often the follower compares each bucket's number with its own.
const CHECK_EVERY: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Buckets read whole in one pipeline.
const CHUNK: u16 = 16;

pub struct Follower {
    pub link: Arc<Link>,
    pub stats: Arc<RemoteStats>,
    pub state: Arc<FollowState>,
    pub tx: mpsc::Sender<MirrorOp>,
    pub workers: u32,
}

struct Bucket {
    /// The last published number applied.
    seq: u64,
    /// Redis's number at the last check: what should have arrived by the next.
    seen: u64,
}

/// A check that found the mirror short of Redis: when it was asked, and the
/// numbers to reach.
type Target = Option<(u64, Vec<u64>)>;

/// The newest (epoch, version) the mirror has of each connection.
type Newest = HashMap<u64, (u64, u64)>;

impl Follower {
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        let mut logged = false;
        while !self.state.stop.load(Ordering::Relaxed) {
            match self.session().await {
                Ok(()) => return,
                Err(e) => {
                    self.stats.following.store(false, Ordering::Relaxed);
                    self.stats.up.store(false, Ordering::Relaxed);
                    RemoteStats::add(&self.stats.errors, 1);
                    if !logged || is_auth_error(&e) || tls_fault(&e).is_some() {
                        warn!(
                            "standby: following the remote store {} failed ({e}); the mirror \
                             keeps what it has, retrying with back-off",
                            self.link.shown
                        );
                        logged = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Ok when told to stop; Err when the connection broke.
    async fn session(&self) -> redis::RedisResult<()> {
        let mut sub = self.link.subscriber().await?;
        let channels: Vec<String> =
            (0..REMOTE_BUCKETS).map(|b| bucket_key(&self.link.namespace, b)).collect();
        sub.subscribe(&channels).await?;
        // Every channel is `lazarus:{<namespace>:<bucket>}`.
        let prefix = format!("lazarus:{{{}:", self.link.namespace);
        let mut conn = self.link.connect().await?;
        let mut buckets: Vec<Bucket> =
            (0..REMOTE_BUCKETS).map(|_| Bucket { seq: 0, seen: 0 }).collect();
        let mut target: Target = None;
        let mut newest = Newest::new();
        self.read_whole(&mut conn, 0..REMOTE_BUCKETS, &mut buckets, &mut newest).await?;
        self.stats.following.store(true, Ordering::Relaxed);
        self.stats.up.store(true, Ordering::Relaxed);
        info!(
            "standby: following the remote store {} ({} connection(s) in the mirror so far)",
            self.link.shown,
            RemoteStats::get(&self.stats.mirror_applied)
        );
        let mut messages = sub.on_message();
        let mut tick = tokio::time::interval(CHECK_EVERY);
        loop {
            if self.state.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else {
                        return Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into());
                    };
                    let Some(b) = bucket_of_channel(msg.get_channel_name(), &prefix) else { continue };
                    let payload = msg.get_payload_bytes();
                    let Some(change) = decode_change(payload) else {
                        RemoteStats::add(&self.stats.mirror_forged, 1);
                        continue;
                    };
                    let bucket = &mut buckets[b];
                    if change.seq <= bucket.seq {
                        continue;
                    }
                    if change.seq != bucket.seq + 1 {
                        warn!("standby: bucket {b} skipped from {} to {}: reading it whole", bucket.seq, change.seq);
                        self.read_whole(&mut conn, b as u16..b as u16 + 1, &mut buckets, &mut newest).await?;
                        continue;
                    }
                    bucket.seq = change.seq;
                    for (field, value) in change.pairs {
                        self.apply(b as u16, field, value, &mut newest).await;
                    }
                    let lag_us = super::unix_ns().saturating_sub(change.drained_unix_ns) / 1000;
                    self.stats.mirror_lag.record(lag_us);
                    self.reached(&buckets, &mut target);
                }
                _ = tick.tick() => self.check(&mut conn, &mut buckets, &mut newest, &mut target).await?,
                _ = self.state.check_now.notified() => self.check(&mut conn, &mut buckets, &mut newest, &mut target).await?,
            }
        }
    }

    /// Compares every bucket's number with the mirror's. The mirror is
    /// caught up, as of this check, once every bucket reaches the number
    /// Redis had (at once, or as the messages in flight arrive). A bucket
    /// whose number went back (the server lost it), or that is still short
    /// of what Redis had a check ago, is read whole.
    async fn check(
        &self,
        conn: &mut MultiplexedConnection,
        buckets: &mut [Bucket],
        newest: &mut Newest,
        target: &mut Target,
    ) -> redis::RedisResult<()> {
        let asked = super::unix_ns();
        let mut pipe = redis::pipe();
        for b in 0..REMOTE_BUCKETS {
            pipe.cmd("HGET").arg(bucket_key(&self.link.namespace, b)).arg(SEQ_FIELD);
        }
        let seqs: Vec<u64> = pipe
            .query_async::<Vec<Option<u64>>>(conn)
            .await?
            .into_iter()
            .map(|s| s.unwrap_or(0))
            .collect();
        let mut off = Vec::new();
        for (b, &theirs) in seqs.iter().enumerate() {
            let mine = buckets[b].seq;
            if theirs < mine || mine < buckets[b].seen {
                off.push(b as u16);
            }
            buckets[b].seen = theirs;
        }
        for b in off {
            self.read_whole(conn, b..b + 1, buckets, newest).await?;
        }
        *target = Some((asked, seqs));
        self.reached(buckets, target);
        Ok(())
    }

    /// Whether the mirror reached the numbers of the last check short of
    /// them: then it is caught up as of that check.
    fn reached(&self, buckets: &[Bucket], target: &mut Target) {
        let Some((asked, seqs)) = target else { return };
        if buckets.iter().zip(seqs.iter()).all(|(b, &t)| b.seq >= t) {
            self.state.caught_up_unix_ns.fetch_max(*asked, Ordering::Relaxed);
            *target = None;
        }
    }

    async fn read_whole(
        &self,
        conn: &mut MultiplexedConnection,
        range: std::ops::Range<u16>,
        buckets: &mut [Bucket],
        newest: &mut Newest,
    ) -> redis::RedisResult<()> {
        let mut keep = hashbrown::HashSet::new();
        // A whole read is what Redis holds now: its records set the order
        // again (after the server lost the buckets, older epochs are back).
        let in_range = |id: &u64| range.contains(&bucket_of(*id));
        newest.retain(|id, _| !in_range(id));
        let mut first = range.start;
        while first < range.end {
            let last = (first + CHUNK).min(range.end);
            let mut pipe = redis::pipe();
            for b in first..last {
                pipe.cmd("HGETALL").arg(bucket_key(&self.link.namespace, b));
            }
            let got: Vec<Vec<(Vec<u8>, Vec<u8>)>> = pipe.query_async(conn).await?;
            for (b, fields) in (first..last).zip(got) {
                RemoteStats::add(&self.stats.mirror_resyncs, 1);
                let seq = fields
                    .iter()
                    .find(|(f, _)| f == SEQ_FIELD.as_bytes())
                    .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
                    .unwrap_or(0);
                buckets[usize::from(b)] = Bucket { seq, seen: seq };
                // Log chunks after their heads, in order.
                let mut chunks = Vec::new();
                for (f, v) in &fields {
                    if let Some(id) = field_conn(f) {
                        keep.insert(id);
                    } else if let Some(at) = field_chunk(f) {
                        chunks.push((at, f, v));
                        continue;
                    }
                    self.apply(b, f, v, newest).await;
                }
                chunks.sort_unstable_by_key(|&(at, _, _)| at);
                for (_, f, v) in chunks {
                    self.apply(b, f, v, newest).await;
                }
            }
            first = last;
        }
        let _ = self.tx.send(MirrorOp::Prune { buckets: range.collect(), keep }).await;
        Ok(())
    }

    async fn apply(&self, bucket: u16, field: &[u8], value: &[u8], newest: &mut Newest) {
        let Some(conn_id) = field_conn(field) else {
            if let Some(at) = field_chunk(field) {
                self.apply_chunk(bucket, at, value).await;
            }
            return;
        };
        let refused = |e: &dyn std::fmt::Display| self.refused(conn_id, e);
        let op = if is_delete(value) {
            let order = match decode_delete(&self.link.key, conn_id, value) {
                Ok(o) => o,
                Err(e) => return refused(&e),
            };
            if newest.get(&conn_id).is_some_and(|&have| order < have) {
                RemoteStats::add(&self.stats.mirror_stale, 1);
                return;
            }
            newest.remove(&conn_id);
            MirrorOp::Delete { conn_id }
        } else {
            let rec = match decode_record(&self.link.key, conn_id, value) {
                Ok(rec) => rec,
                Err(e) => return refused(&e),
            };
            if bucket_of(conn_id) != bucket {
                return refused(&"found in another connection's bucket");
            }
            let worker = super::local_worker(&rec, self.workers);
            if worker == UNPLACED_WORKER {
                RemoteStats::add(&self.stats.mirror_unplaced, 1);
            }
            if newest.get(&conn_id).is_some_and(|&have| rec.order < have) {
                RemoteStats::add(&self.stats.mirror_stale, 1);
                return;
            }
            newest.insert(conn_id, rec.order);
            MirrorOp::Put {
                conn_id,
                worker,
                portions: rec.portions.iter().map(|p| (p.module, p.payload.to_vec())).collect(),
            }
        };
        // The drain loop is gone only when checkpointd exits.
        let _ = self.tx.send(op).await;
    }
}

impl Follower {
    /// A protected connection's log chunk, or its removal, for the mirror.
    async fn apply_chunk(&self, bucket: u16, (id, offset): (u64, u64), value: &[u8]) {
        if value == CHUNK_GONE {
            let _ = self.tx.send(MirrorOp::ChunkGone { id, offset }).await;
            return;
        }
        let (lineage, bytes) = match decode_chunk(&self.link.key, (id, offset), value) {
            Ok((l, b)) if bucket_of(id) == bucket => (l, b.to_vec()),
            Ok(_) => return self.refused(id, &"a log chunk found in another connection's bucket"),
            Err(e) => return self.refused(id, &e),
        };
        let _ = self.tx.send(MirrorOp::Chunk { id, lineage, offset, bytes }).await;
    }

    fn refused(&self, id: u64, e: &dyn std::fmt::Display) {
        if RemoteStats::get(&self.stats.mirror_forged) == 0 {
            error!("standby: remote value of {id:016x} refused: {e} (counted in mirror_forged)");
        }
        RemoteStats::add(&self.stats.mirror_forged, 1);
    }
}

/// The bucket a channel name stands for, given its `lazarus:{<namespace>:`
/// prefix: a parse, not a search of the 256 names for every message.
fn bucket_of_channel(name: &str, prefix: &str) -> Option<usize> {
    let b: u16 = name.strip_prefix(prefix)?.strip_suffix('}')?.parse().ok()?;
    (b < REMOTE_BUCKETS).then_some(usize::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_name_their_bucket() {
        let p = "lazarus:{edge1:";
        assert_eq!(bucket_of_channel(&bucket_key("edge1", 17), p), Some(17));
        assert_eq!(bucket_of_channel(&bucket_key("edge1", 255), p), Some(255));
        assert_eq!(bucket_of_channel("lazarus:{edge1:256}", p), None);
        assert_eq!(bucket_of_channel(&bucket_key("edge2", 3), p), None);
        assert_eq!(bucket_of_channel("lazarus:{edge1:x}", p), None);
    }
}
