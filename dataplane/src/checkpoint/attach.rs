//! The start-up handshake with checkpointd: wait until it is up and has
//! drained every ring, then map its segments.

use crate::config::CheckpointSection;
use shm_layout::{
    lock_producers, monotonic_ns, LayoutError, ProducerLock, RingsSegment, StoreSegment,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A heartbeat older than this means checkpointd is not running.
const HEARTBEAT_STALE: Duration = Duration::from_millis(1000);

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("checkpointd is not running: no rings segment in {dir} after {waited_ms} ms; start lazarus-checkpointd with the same config (systemctl start lazarus-checkpointd), or set checkpoint.enabled = false to run without checkpointing")]
    NoSegment { dir: String, waited_ms: u64 },
    #[error("checkpointd is not running: its last heartbeat in {path} is {age_ms} ms old (pid {pid}); start lazarus-checkpointd, or set checkpoint.enabled = false")]
    Stale { path: String, age_ms: u64, pid: u32 },
    #[error("checkpointd keeps rings for {have} worker(s) but the config has {want}: restart lazarus-checkpointd with this config")]
    Workers { have: u32, want: u32 },
    #[error("checkpointd has not drained ring {worker} ({lag} deltas behind) after {waited_ms} ms: it is overloaded or stuck; see `lazarusctl status`, or raise checkpoint.attach_timeout_ms")]
    NotDrained { worker: u32, lag: u64, waited_ms: u64 },
    #[error("checkpointd's store holds times of another boot (boot {stored}, this one {here}): restart lazarus-checkpointd, which rebases it, then start the dataplane")]
    ForeignClock { stored: String, here: String },
    #[error("checkpoint segment {path}: {source}")]
    Layout { path: String, source: LayoutError },
    #[error("stopped (SIGINT or SIGTERM) while waiting for checkpointd")]
    Stopped,
}

/// The segments a dataplane works with. The rings are mapped for the life of
/// the process (workers hold producers into them).
pub struct Attached {
    pub rings: &'static RingsSegment,
    pub store: StoreSegment,
    pub dir: PathBuf,
    /// This process is the only producer of its rings while this lives.
    pub producer_lock: ProducerLock,
}

/// The configured directory once checkpointd has made both segments there;
/// never another directory.
fn find_dir(cfg: &CheckpointSection) -> Option<PathBuf> {
    let d = &cfg.dir;
    let made = |f| std::fs::symlink_metadata(d.join(f)).is_ok();
    (made(shm_layout::RINGS_FILE) && made(shm_layout::STORE_FILE)).then(|| d.clone())
}

/// Waits (up to `attach_timeout_ms`) until checkpointd is up and has drained
/// every ring, then maps its segments. Traffic must never meet an empty table,
/// so every failure here stops the start with the reason. `stop` set (a
/// signal) ends the wait at once.
pub fn attach(
    cfg: &CheckpointSection,
    workers: u32,
    stop: &AtomicBool,
) -> Result<Attached, AttachError> {
    let stopped = || stop.load(Ordering::Relaxed);
    let start = Instant::now();
    let timeout = Duration::from_millis(cfg.attach_timeout_ms);
    let waited = || start.elapsed().as_millis() as u64;
    let mut logged = false;
    let dir = loop {
        if let Some(d) = find_dir(cfg) {
            break d;
        }
        if start.elapsed() >= timeout {
            return Err(AttachError::NoSegment {
                dir: cfg.dir.display().to_string(),
                waited_ms: waited(),
            });
        }
        if !logged {
            tracing::info!(dir = %cfg.dir.display(), "waiting for checkpointd's segments");
            logged = true;
        }
        if stopped() {
            return Err(AttachError::Stopped);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let rings_path = dir.join("rings");
    fn layout(path: &Path) -> impl FnOnce(LayoutError) -> AttachError + '_ {
        move |source| AttachError::Layout { path: path.display().to_string(), source }
    }
    shm_layout::check_segment_dir(&dir).map_err(layout(&dir))?;
    let rings = RingsSegment::open_file(&rings_path).map_err(layout(&rings_path))?;
    let have = rings.geometry().workers;
    if have < workers {
        return Err(AttachError::Workers { have, want: workers });
    }
    // The only producer: another live dataplane on these rings is refused
    // (waiting out the timeout lets one that is exiting finish; a dead one
    // holds nothing).
    let producer_lock = loop {
        match lock_producers(&rings_path, 0..workers) {
            Ok(lock) => break lock,
            Err(e @ LayoutError::ProducerLocked { .. }) if start.elapsed() >= timeout => {
                return Err(layout(&rings_path)(e));
            }
            Err(LayoutError::ProducerLocked { .. }) if stopped() => {
                return Err(AttachError::Stopped)
            }
            Err(LayoutError::ProducerLocked { .. }) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(layout(&rings_path)(e)),
        }
    };
    // Alive: a heartbeat that keeps moving.
    loop {
        let hb = rings.heartbeat();
        let age = Duration::from_nanos(monotonic_ns().saturating_sub(hb.monotonic_ns));
        if hb.pid != 0 && age < HEARTBEAT_STALE {
            break;
        }
        if start.elapsed() >= timeout {
            return Err(AttachError::Stale {
                path: rings_path.display().to_string(),
                age_ms: age.as_millis() as u64,
                pid: hb.pid,
            });
        }
        if stopped() {
            return Err(AttachError::Stopped);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Drained: everything the dead dataplane published is in the store.
    for w in 0..workers {
        loop {
            let lag = rings.status(w).lag();
            if lag == 0 {
                break;
            }
            if start.elapsed() >= timeout {
                return Err(AttachError::NotDrained { worker: w, lag, waited_ms: waited() });
            }
            if stopped() {
                return Err(AttachError::Stopped);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let store_path = dir.join("store");
    let store = StoreSegment::open_file(&store_path).map_err(layout(&store_path))?;
    // The TSC rate is left out (0): measuring it would lengthen every
    // restart, and within one boot the TSC is one clock.
    let here = shm_layout::SegmentOrigin::new(
        shm_layout::boot_id().map_err(layout(Path::new("/proc/sys/kernel/random/boot_id")))?,
        0,
    );
    let stored = store.origin();
    if !stored.same_clock_as(&here) {
        return Err(AttachError::ForeignClock {
            stored: stored.boot_id_text(),
            here: here.boot_id_text(),
        });
    }
    tracing::info!(dir = %dir.display(), waited_ms = waited(), checkpointd_pid = rings.heartbeat().pid, "checkpointd up, every ring drained");
    Ok(Attached { rings: Box::leak(Box::new(rings)), store, dir, producer_lock })
}
