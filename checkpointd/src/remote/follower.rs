//! A standby's checkpointd follows the remote copy into its local store, a
//! hot mirror that `lazarusctl takeover` hands to the dataplane. The
//! follower subscribes to every bucket's channel, then reads each bucket
//! whole (the published numbers tell which messages the read already
//! holds), then applies what the active appliance publishes. A gap in a
//! bucket's numbers, or a reconnect, reads that bucket whole again. Records
//! are verified (HMAC) here; the drain loop, which owns the store, applies
//! them, so a mirrored portion older than the one held (a rollback) is
//! refused by the store's own version check.

use super::link::{is_auth_error, Link};
use super::stats::RemoteStats;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use shm_layout::remote::{
    bucket_key, bucket_of, decode_change, decode_record, deleted_version, field_conn, parse_origin,
    ORIGIN_FIELD, REMOTE_BUCKETS, SEQ_FIELD,
};
use shm_layout::SegmentOrigin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tracing::{error, info, warn};

/// One change for the mirror, verified.
pub enum MirrorOp {
    Put { conn_id: u64, worker: u16, portions: Vec<(u8, u64, Vec<u8>)> },
    Delete { conn_id: u64, version: u64 },
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
    pub here: SegmentOrigin,
}

struct Bucket {
    /// The last published number applied.
    seq: u64,
    /// Its versions are this host's clock (else they are applied as 0).
    same_clock: bool,
    /// Behind at the last check (a second check behind reads it whole).
    behind: bool,
}

impl Follower {
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        let mut logged = false;
        while !self.state.stop.load(Ordering::Relaxed) {
            match self.session().await {
                Ok(()) => return,
                Err(e) => {
                    self.stats.following.store(false, Ordering::Relaxed);
                    RemoteStats::add(&self.stats.errors, 1);
                    if !logged || is_auth_error(&e) {
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
        let mut conn = self.link.connect().await?;
        let mut buckets: Vec<Bucket> = (0..REMOTE_BUCKETS)
            .map(|_| Bucket { seq: 0, same_clock: false, behind: false })
            .collect();
        let mut first = 0;
        while first < REMOTE_BUCKETS {
            let last = (first + CHUNK).min(REMOTE_BUCKETS);
            self.read_whole(&mut conn, first..last, &mut buckets).await?;
            first = last;
        }
        self.stats.following.store(true, Ordering::Relaxed);
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
                    let Some(b) = channels.iter().position(|c| c.as_bytes() == msg.get_channel_name().as_bytes()) else { continue };
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
                        self.read_whole(&mut conn, b as u16..b as u16 + 1, &mut buckets).await?;
                        continue;
                    }
                    bucket.seq = change.seq;
                    let same_clock = bucket.same_clock;
                    for (field, value) in change.pairs {
                        self.apply(b as u16, field, value, same_clock).await;
                    }
                    let lag_us = super::unix_ns().saturating_sub(change.drained_unix_ns) / 1000;
                    self.stats.mirror_lag.record(lag_us);
                }
                _ = tick.tick() => self.check(&mut conn, &mut buckets).await?,
                _ = self.state.check_now.notified() => self.check(&mut conn, &mut buckets).await?,
            }
        }
    }

    /// Compares every bucket's number with the mirror's: all equal is
    /// caught up; a bucket behind at two checks in a row is read whole.
    async fn check(
        &self,
        conn: &mut MultiplexedConnection,
        buckets: &mut [Bucket],
    ) -> redis::RedisResult<()> {
        let asked = super::unix_ns();
        let mut pipe = redis::pipe();
        for b in 0..REMOTE_BUCKETS {
            pipe.cmd("HGET").arg(bucket_key(&self.link.namespace, b)).arg(SEQ_FIELD);
        }
        let seqs: Vec<Option<u64>> = pipe.query_async(conn).await?;
        let mut all = true;
        for (b, theirs) in seqs.iter().enumerate() {
            let theirs = theirs.unwrap_or(0);
            if theirs > buckets[b].seq {
                all = false;
                if buckets[b].behind {
                    self.read_whole(conn, b as u16..b as u16 + 1, buckets).await?;
                } else {
                    buckets[b].behind = true;
                }
            } else {
                buckets[b].behind = false;
            }
        }
        if all {
            self.state.caught_up_unix_ns.store(asked, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn read_whole(
        &self,
        conn: &mut MultiplexedConnection,
        range: std::ops::Range<u16>,
        buckets: &mut [Bucket],
    ) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        for b in range.clone() {
            pipe.cmd("HGETALL").arg(bucket_key(&self.link.namespace, b));
        }
        let got: Vec<Vec<(Vec<u8>, Vec<u8>)>> = pipe.query_async(conn).await?;
        for (b, fields) in range.zip(got) {
            RemoteStats::add(&self.stats.mirror_resyncs, 1);
            let field =
                |name: &str| fields.iter().find(|(f, _)| f == name.as_bytes()).map(|(_, v)| v);
            let seq = field(SEQ_FIELD)
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                .unwrap_or(0);
            let same_clock = field(ORIGIN_FIELD)
                .and_then(|v| parse_origin(v))
                .is_some_and(|o| o.same_clock_as(&self.here));
            buckets[usize::from(b)] = Bucket { seq, same_clock, behind: false };
            for (f, v) in &fields {
                self.apply(b, f, v, same_clock).await;
            }
        }
        Ok(())
    }

    async fn apply(&self, bucket: u16, field: &[u8], value: &[u8], same_clock: bool) {
        let Some(conn_id) = field_conn(field) else { return };
        let op = if let Some(version) = deleted_version(value) {
            MirrorOp::Delete { conn_id, version: if same_clock { version } else { 0 } }
        } else {
            match decode_record(&self.link.key, conn_id, value) {
                Ok(rec) if bucket_of(conn_id) == bucket && u32::from(rec.worker) < self.workers => {
                    MirrorOp::Put {
                        conn_id,
                        worker: rec.worker,
                        portions: rec
                            .portions
                            .iter()
                            .map(|p| {
                                (
                                    p.module,
                                    if same_clock { p.version } else { 0 },
                                    p.payload.to_vec(),
                                )
                            })
                            .collect(),
                    }
                }
                Ok(_) => {
                    RemoteStats::add(&self.stats.mirror_misplaced, 1);
                    return;
                }
                Err(e) => {
                    if RemoteStats::get(&self.stats.mirror_forged) == 0 {
                        error!("standby: remote record {conn_id:016x} refused: {e} (counted in mirror_forged)");
                    }
                    RemoteStats::add(&self.stats.mirror_forged, 1);
                    return;
                }
            }
        };
        // The drain loop is gone only when checkpointd exits.
        let _ = self.tx.send(op).await;
    }
}
