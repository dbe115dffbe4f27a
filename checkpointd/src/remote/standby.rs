//! The drain loop's side of a standby: applies the follower's changes to
//! the store (the mirror), and performs a takeover when asked: proof that
//! the mirror is caught up (within `takeover_max_lag_ms`), every bucket's
//! epoch raised in Redis (fencing the old active off), a last catch-up with
//! what the old active wrote before it was fenced, the follower stopped,
//! then the writer started under the new epoch.

use super::epoch::{self, Raised};
use super::follower::{FollowState, Follower, MirrorOp};
use super::link::Link;
use super::stats::RemoteStats;
use super::Tracker;
use crate::store::Store;
use serde_json::{json, Value};
use shm_layout::remote::{bucket_of, REMOTE_BUCKETS};
use shm_layout::RemoteSection;
use std::sync::atomic::Ordering;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// A takeover asked on the control socket; the reply goes back on `reply`.
pub struct TakeoverRequest {
    /// Take over even when the mirror cannot be shown caught up, or the
    /// epoch cannot be raised.
    pub force: bool,
    pub reply: std_mpsc::Sender<Result<Value, String>>,
}

enum Phase {
    /// Waiting for a check that finds the mirror caught up.
    CaughtUp,
    /// The epoch is raised; waiting for what the old active wrote before.
    AfterRaise { raised_unix_ns: u64, since: Instant, epoch: u64 },
}

struct Pending {
    req: TakeoverRequest,
    asked_unix_ns: u64,
    asked: Instant,
    phase: Phase,
    caught_up: bool,
}

pub struct Mirror {
    link: Arc<Link>,
    stats: Arc<RemoteStats>,
    state: Arc<FollowState>,
    rx: mpsc::Receiver<MirrorOp>,
    requests: std_mpsc::Receiver<TakeoverRequest>,
    pending: Option<Pending>,
    sec: RemoteSection,
    capacity: u64,
    workers: u32,
}

/// Ops applied per drain pass at most, so the rings keep being drained.
const OPS_PER_PASS: usize = 65_536;

impl Mirror {
    pub fn start(
        link: Arc<Link>,
        sec: &RemoteSection,
        stats: Arc<RemoteStats>,
        workers: u32,
        capacity: u64,
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
        };
        super::spawn("follower", follower.run())?;
        Ok(Mirror {
            link,
            stats,
            state,
            rx,
            requests,
            pending: None,
            sec: sec.clone(),
            capacity,
            workers,
        })
    }

    fn apply_ops(&mut self, store: &mut Store, max: usize) {
        for _ in 0..max {
            let Ok(op) = self.rx.try_recv() else { return };
            match op {
                MirrorOp::Put { conn_id, worker, portions } => {
                    // The record replaces what the mirror held: a portion the
                    // connection no longer has (its id reused within one
                    // interval) does not survive.
                    // (A protected connection's head keeps the log its
                    // chunks brought.)
                    if !portions.iter().any(|(m, _)| *m == shm_layout::module::PROTECT) {
                        store.forget_copied(conn_id);
                    }
                    for (module, payload) in &portions {
                        store.put_copied(conn_id, worker, *module, payload);
                    }
                    RemoteStats::add(&self.stats.mirror_applied, 1);
                }
                MirrorOp::Chunk { id, lineage, offset, bytes } => {
                    store.protect.put_chunk(id, (lineage, offset), &bytes);
                }
                MirrorOp::ChunkGone { id, offset } => store.protect.chunk_gone(id, offset),
                MirrorOp::Delete { conn_id } => {
                    store.forget_copied(conn_id);
                    RemoteStats::add(&self.stats.mirror_deletes, 1);
                }
                MirrorOp::Prune { buckets, keep } => {
                    let mut mask = [false; REMOTE_BUCKETS as usize];
                    for b in buckets {
                        mask[usize::from(b)] = true;
                    }
                    let gone: Vec<u64> = store
                        .conn_ids()
                        .chain(store.protect.ids())
                        .filter(|id| mask[usize::from(bucket_of(*id))] && !keep.contains(id))
                        .collect();
                    for id in &gone {
                        store.forget_copied(*id);
                    }
                    RemoteStats::add(&self.stats.mirror_deletes, gone.len() as u64);
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
                self.pending = Some(Pending {
                    req,
                    asked_unix_ns: super::unix_ns(),
                    asked: Instant::now(),
                    phase: Phase::CaughtUp,
                    caught_up: false,
                });
            }
        }
        let bound = self.link.takeover_max_lag;
        let caught_up_at = self.state.caught_up_unix_ns.load(Ordering::Relaxed);
        let p = self.pending.as_mut()?;
        match p.phase {
            Phase::CaughtUp => {
                p.caught_up = caught_up_at >= p.asked_unix_ns;
                if !p.caught_up && !p.req.force && p.asked.elapsed() < bound {
                    return None;
                }
                if !p.caught_up && !p.req.force {
                    let p = self.pending.take().expect("checked above");
                    let ago = if caught_up_at == 0 {
                        "never".to_string()
                    } else {
                        format!(
                            "{} ms ago",
                            super::unix_ns().saturating_sub(caught_up_at) / 1_000_000
                        )
                    };
                    let msg = format!(
                        "refusing the takeover: the mirror was not shown caught up with the remote \
                         store {} within checkpoint.remote.takeover_max_lag_ms ({} ms; last caught \
                         up: {ago}, following: {}). Check that the store is reachable; `lazarusctl \
                         takeover --force` takes over with what the mirror holds",
                        self.link.shown,
                        bound.as_millis(),
                        self.stats.following.load(Ordering::Relaxed)
                    );
                    warn!("{msg}");
                    let _ = p.req.reply.send(Err(msg));
                    return None;
                }
                match raise_blocking(&self.link) {
                    Ok(Raised::Won(e)) => {
                        self.stats.epoch.store(e, Ordering::Relaxed);
                        p.phase = Phase::AfterRaise {
                            raised_unix_ns: super::unix_ns(),
                            since: Instant::now(),
                            epoch: e,
                        };
                        self.state.check_now.notify_one();
                        None
                    }
                    Ok(Raised::Taken { epoch: e, owner }) => {
                        let p = self.pending.take().expect("checked above");
                        let msg = format!(
                            "refusing the takeover: appliance {owner:?} already holds epoch {e} in \
                             the remote store (another standby took over first?)"
                        );
                        warn!("{msg}");
                        let _ = p.req.reply.send(Err(msg));
                        None
                    }
                    Err(e) if p.req.force => {
                        warn!("takeover forced without raising the epoch ({e:#}): the writer raises it when the store answers");
                        self.finish(store, 0)
                    }
                    Err(e) => {
                        let p = self.pending.take().expect("checked above");
                        let msg = format!(
                            "refusing the takeover: cannot raise the epoch in the remote store, so \
                             the old active would not be fenced off ({e:#}); `lazarusctl takeover \
                             --force` takes over anyway"
                        );
                        warn!("{msg}");
                        let _ = p.req.reply.send(Err(msg));
                        None
                    }
                }
            }
            Phase::AfterRaise { raised_unix_ns, since, epoch } => {
                // What the old active wrote before the raise fenced it off.
                if caught_up_at < raised_unix_ns && since.elapsed() < bound {
                    return None;
                }
                if caught_up_at < raised_unix_ns {
                    warn!("takeover: the mirror was not seen caught up after the epoch was raised; the old active's last changes may be missing");
                }
                self.finish(store, epoch)
            }
        }
    }

    fn finish(&mut self, store: &mut Store, epoch: u64) -> Option<Tracker> {
        let p = self.pending.take().expect("a takeover is pending");
        self.state.stop.store(true, Ordering::Relaxed);
        self.apply_ops(store, usize::MAX);
        self.stats.fenced.store(false, Ordering::Relaxed);
        store.track_changes = true;
        store.changes.clear();
        let mut tracker = match Tracker::start(
            Arc::clone(&self.link),
            &self.sec,
            Arc::clone(&self.stats),
            self.capacity,
            self.workers,
            epoch == 0,
        ) {
            Ok(t) => t,
            Err(e) => {
                let _ = p.req.reply.send(Err(format!("{e:#}")));
                return None;
            }
        };
        // The old active's chunks: this tracker removes them as it goes.
        tracker.adopt_chunks(store.protect.take_remote_chunks());
        RemoteStats::add(&self.stats.takeovers, 1);
        let conns = store.stats.conns.load(Ordering::Relaxed);
        info!(
            "takeover: this appliance ({}) is now the active one at epoch {epoch}; the mirror holds \
             {conns} connection(s){}",
            self.link.appliance,
            if p.caught_up { "" } else { " (forced: not shown caught up)" }
        );
        let _ = p.req.reply.send(Ok(json!({
            "epoch": epoch,
            "conns": conns,
            "caught_up": p.caught_up,
            "forced": p.req.force,
            "ms": p.asked.elapsed().as_secs_f64() * 1e3,
        })));
        Some(tracker)
    }
}

/// Raises every bucket's epoch past the highest one held (compare and set).
fn raise_blocking(link: &Link) -> anyhow::Result<Raised> {
    let work = async {
        let mut conn = link.connect().await?;
        epoch::raise(&mut conn, link).await
    };
    super::block_on_timeout(link.timeout, work)?
        .ok_or_else(|| anyhow::anyhow!("no answer within {:?}", link.timeout))?
        .map_err(anyhow::Error::from)
}
