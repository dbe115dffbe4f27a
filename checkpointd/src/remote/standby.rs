//! The drain loop's side of a standby: applies the follower's changes to
//! the store (the mirror), and performs a takeover when asked: proof that
//! the mirror is caught up (within `takeover_max_lag_ms`), the follower
//! stopped, every bucket's epoch raised in Redis (fencing the old active),
//! then the writer started under the new epoch.

use super::follower::{FollowState, Follower, MirrorOp};
use super::link::Link;
use super::stats::RemoteStats;
use super::Tracker;
use crate::store::{Outcome, Store};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use shm_layout::remote::{bucket_key, EPOCH_FIELD, RAISE_SCRIPT, REMOTE_BUCKETS};
use shm_layout::{delta_kind, Delta, RemoteSection, SegmentOrigin};
use std::sync::atomic::Ordering;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// A takeover asked on the control socket; the reply goes back on `reply`.
pub struct TakeoverRequest {
    /// Take over even when the mirror cannot be shown caught up, or the
    /// epoch cannot be raised.
    pub force: bool,
    pub reply: std_mpsc::Sender<Result<Value, String>>,
}

struct Pending {
    req: TakeoverRequest,
    asked_unix_ns: u64,
    asked: Instant,
}

pub struct Mirror {
    link: Arc<Link>,
    stats: Arc<RemoteStats>,
    state: Arc<FollowState>,
    rx: mpsc::Receiver<MirrorOp>,
    requests: std_mpsc::Receiver<TakeoverRequest>,
    pending: Option<Pending>,
    sec: RemoteSection,
    here: SegmentOrigin,
}

/// Ops applied per drain pass at most, so the rings keep being drained.
const OPS_PER_PASS: usize = 65_536;

impl Mirror {
    pub fn start(
        link: Arc<Link>,
        sec: &RemoteSection,
        stats: Arc<RemoteStats>,
        workers: u32,
        here: &SegmentOrigin,
        requests: std_mpsc::Receiver<TakeoverRequest>,
    ) -> anyhow::Result<Mirror> {
        let state = Arc::new(FollowState::default());
        let (tx, rx) = mpsc::channel(OPS_PER_PASS);
        let follower = Follower {
            link: Arc::clone(&link),
            stats: Arc::clone(&stats),
            state: Arc::clone(&state),
            tx,
            workers,
            here: *here,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build the follower's runtime")?;
        std::thread::Builder::new()
            .name("follower".into())
            .spawn(move || rt.block_on(follower.run()))
            .context("cannot start the follower thread")?;
        Ok(Mirror {
            link,
            stats,
            state,
            rx,
            requests,
            pending: None,
            sec: sec.clone(),
            here: *here,
        })
    }

    fn apply_ops(&mut self, store: &mut Store, max: usize) {
        for _ in 0..max {
            let Ok(op) = self.rx.try_recv() else { return };
            match op {
                MirrorOp::Put { conn_id, worker, portions } => {
                    let mut stale = false;
                    for (module, version, payload) in &portions {
                        let d = Delta {
                            seq: 0,
                            conn_id,
                            version: *version,
                            module: *module,
                            kind: delta_kind::PORTION,
                            payload,
                        };
                        stale |= store.apply(&d, worker) == Outcome::Stale;
                    }
                    if stale {
                        RemoteStats::add(&self.stats.mirror_stale, 1);
                    } else {
                        RemoteStats::add(&self.stats.mirror_applied, 1);
                    }
                }
                MirrorOp::Delete { conn_id, version } => {
                    let d = Delta {
                        seq: 0,
                        conn_id,
                        version,
                        module: 0,
                        kind: delta_kind::DELETE,
                        payload: &[],
                    };
                    store.apply(&d, 0);
                    RemoteStats::add(&self.stats.mirror_deletes, 1);
                }
            }
        }
    }

    /// One drain pass: mirror changes in, a takeover if one is due. Returns
    /// the writer when this appliance just became the active one.
    pub fn pass(&mut self, store: &mut Store) -> Option<Tracker> {
        self.apply_ops(store, OPS_PER_PASS);
        if let Ok(req) = self.requests.try_recv() {
            if self.pending.is_some() {
                let _ = req.reply.send(Err("a takeover is already under way".into()));
            } else {
                self.state.check_now.notify_one();
                self.pending =
                    Some(Pending { req, asked_unix_ns: super::unix_ns(), asked: Instant::now() });
            }
        }
        let p = self.pending.as_ref()?;
        let caught_up = self.state.caught_up_unix_ns.load(Ordering::Relaxed) >= p.asked_unix_ns;
        let bound = self.link.takeover_max_lag;
        if !caught_up && !p.req.force && p.asked.elapsed() < bound {
            return None;
        }
        let p = self.pending.take().expect("checked above");
        if !caught_up && !p.req.force {
            let last = self.state.caught_up_unix_ns.load(Ordering::Relaxed);
            let ago = if last == 0 {
                "never".to_string()
            } else {
                format!("{} ms ago", super::unix_ns().saturating_sub(last) / 1_000_000)
            };
            let msg = format!(
                "refusing the takeover: the mirror was not shown caught up with the remote store \
                 {} within checkpoint.remote.takeover_max_lag_ms ({} ms; last caught up: {ago}, \
                 following: {}). Check that the store is reachable; `lazarusctl takeover --force` \
                 takes over with what the mirror holds",
                self.link.shown,
                bound.as_millis(),
                self.stats.following.load(Ordering::Relaxed)
            );
            warn!("{msg}");
            let _ = p.req.reply.send(Err(msg));
            return None;
        }
        match self.promote(store, p.req.force, caught_up, p.asked) {
            Ok((tracker, reply)) => {
                let _ = p.req.reply.send(Ok(reply));
                Some(tracker)
            }
            Err(e) => {
                let msg = format!("{e:#}");
                error!("takeover failed: {msg}");
                self.state.stop.store(false, Ordering::Relaxed);
                let _ = p.req.reply.send(Err(msg));
                None
            }
        }
    }

    fn promote(
        &mut self,
        store: &mut Store,
        force: bool,
        caught_up: bool,
        asked: Instant,
    ) -> anyhow::Result<(Tracker, Value)> {
        self.state.stop.store(true, Ordering::Relaxed);
        self.apply_ops(store, usize::MAX);
        let epoch = match raise_epoch(&self.link) {
            Ok(e) => e,
            Err(e) if force => {
                warn!("takeover forced without fencing: {e:#}");
                0
            }
            Err(e) => bail!(
                "cannot raise the epoch in the remote store, so the old active would not be fenced \
                 off: {e:#}; `lazarusctl takeover --force` takes over anyway"
            ),
        };
        if epoch != 0 {
            self.stats.epoch.store(epoch, Ordering::Relaxed);
        }
        self.stats.fenced.store(false, Ordering::Relaxed);
        store.track_changes = true;
        store.changes.clear();
        let tracker =
            Tracker::start(Arc::clone(&self.link), &self.sec, Arc::clone(&self.stats), &self.here)?;
        RemoteStats::add(&self.stats.takeovers, 1);
        let conns = store.stats.conns.load(Ordering::Relaxed);
        info!(
            "takeover: this appliance ({}) is now the active one at epoch {epoch}; the mirror holds \
             {conns} connection(s){}",
            self.link.appliance,
            if caught_up { "" } else { " (forced: not shown caught up)" }
        );
        let reply = json!({
            "epoch": epoch,
            "conns": conns,
            "caught_up": caught_up,
            "forced": force,
            "ms": asked.elapsed().as_secs_f64() * 1e3,
        });
        Ok((tracker, reply))
    }
}

/// Raises every bucket's epoch past the highest one held; returns it.
fn raise_epoch(link: &Link) -> anyhow::Result<u64> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let work = async {
            let mut conn = link.connect().await?;
            let mut pipe = redis::pipe();
            for b in 0..REMOTE_BUCKETS {
                pipe.cmd("HGET").arg(bucket_key(&link.namespace, b)).arg(EPOCH_FIELD);
            }
            let held: Vec<Option<u64>> = pipe.query_async(&mut conn).await?;
            let epoch = held.iter().flatten().max().copied().unwrap_or(0) + 1;
            let sha: String =
                redis::cmd("SCRIPT").arg("LOAD").arg(RAISE_SCRIPT).query_async(&mut conn).await?;
            let mut pipe = redis::pipe();
            for b in 0..REMOTE_BUCKETS {
                pipe.cmd("EVALSHA")
                    .arg(&sha)
                    .arg(1)
                    .arg(bucket_key(&link.namespace, b))
                    .arg(epoch)
                    .arg(&link.appliance);
            }
            let _: Vec<u64> = pipe.query_async(&mut conn).await?;
            Ok::<u64, redis::RedisError>(epoch)
        };
        tokio::time::timeout(link.timeout, work)
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {:?}", link.timeout))?
            .map_err(anyhow::Error::from)
    })
}
