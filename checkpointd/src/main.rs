//! `lazarus-checkpointd --config FILE`: owns the shared-memory segments,
//! drains every worker's delta ring into the connection store, answers the
//! control socket. Runs in the foreground and logs to stderr.
//!
//! docs/CHECKPOINT.md describes the segments, the protocol and the crash
//! cases; docs/CONFIG.md the `[checkpoint]` keys.

#![forbid(unsafe_code)]

mod config;
mod conns;
mod control;
mod metrics;
mod protect;
mod remote;
mod store;

use anyhow::{bail, Context};
use clap::Parser;
use shm_layout::{
    is_hugetlbfs, monotonic_ns, open_lock_file, prepare_segment_dir, RingsGeometry, RingsSegment,
    SegmentAccess, StoreGeometry, StoreSegment, RINGS_FILE, STORE_FILE,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "lazarus-checkpointd",
    version,
    about = "Lazarus checkpoint daemon (always in the foreground)"
)]
struct Args {
    /// The Lazarus TOML file (the dataplane's); checkpointd reads [checkpoint],
    /// the [[worker]] count and conntrack.capacity.
    #[arg(long)]
    config: PathBuf,
}

/// Exit code when `checkpoint.enabled = false`.
const EXIT_DISABLED: u8 = 2;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // A closed stderr (journald restarted, a pipe whose reader left) must not
        // take the process down: tracing-subscriber would eprintln! the write
        // error, and that panics.
        .log_internal_errors(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let cfg = config::Config::load(&args.config)?;
    let ck = &cfg.checkpoint;
    if !ck.enabled {
        error!(
            "{}: checkpoint.enabled = false: the dataplane runs without checkpointd, so there is nothing \
             to do; set it to true to checkpoint connections",
            args.config.display()
        );
        return Ok(ExitCode::from(EXIT_DISABLED));
    }

    let link = remote::Link::load(&ck.remote)?;
    let access = SegmentAccess::for_group(&ck.group).context("checkpoint.group")?;
    let dir = ck.dir.clone();
    prepare_segment_dir(&dir, access).context("the segment directory (checkpoint.dir)")?;
    if !is_hugetlbfs(&dir) {
        warn!(
            "{} is not on hugetlbfs: the segments use normal pages (fine on tmpfs; on a disk \
             filesystem every store write may reach the disk)",
            dir.display()
        );
    }
    let _lock = lock_dir(&dir, access)?;

    let rings_geom = RingsGeometry { workers: cfg.workers, slots_per_ring: ck.ring_slots };
    let store_geom =
        StoreGeometry { conn_capacity: cfg.store_capacity, ftp_capacity: ck.ftp_capacity };
    let (rings, rings_existed) = open_rings(&dir, rings_geom, access)?;
    let (store_seg, store_created) = open_store(&dir, store_geom, access)?;
    if store_created && rings_existed {
        for w in 0..rings_geom.workers {
            rings.request_resync(w);
        }
        warn!(
            "the store was lost while the rings survived: asked all {} worker(s) for a full resync",
            rings_geom.workers
        );
    }
    let hugetlbfs = rings.file().is_some_and(|f| f.hugetlbfs());
    let (mut store, rebuilt) = store::Store::rebuild(store_seg);
    let (stranded, top) = store.beyond_workers(rings_geom.workers);
    if stranded > 0 {
        info!(
            "the store holds {stranded} connection(s) stored for no worker of the {} configured \
             (up to worker {top}, or copied from an appliance with another worker count): the \
             dataplane restores each on the worker its ports' RSS sends it to",
            rings_geom.workers,
        );
    }
    let here = shm_layout::SegmentOrigin::this_host().context("this boot's id")?;
    adopt_foreign_clock(&rings, &mut store, &here)?;
    if rebuilt.bad_portions + rebuilt.dropped_records + rebuilt.orphan_ftp > 0 {
        warn!(
            "store scan: dropped {} portion(s) failing their checksum, {} empty or duplicate record(s), \
             {} orphan FTP record(s); their deltas are re-applied from the rings if still there",
            rebuilt.bad_portions, rebuilt.dropped_records, rebuilt.orphan_ftp
        );
    }
    info!(
        "checkpointd {}: {} ring(s) x {} slots ({} MiB), store {} conns + {} ftp ({} MiB, {} B/conn), \
         {} connection(s) and {} ftp portion(s) restored from the store, dir {} (hugetlbfs: {hugetlbfs})",
        std::process::id(),
        rings_geom.workers,
        rings_geom.slots_per_ring,
        rings_geom.segment_bytes() >> 20,
        store_geom.conn_capacity,
        store_geom.ftp_capacity,
        store_geom.segment_bytes() >> 20,
        std::mem::size_of::<shm_layout::ConnRecord>(),
        rebuilt.conns,
        rebuilt.ftp,
        dir.display()
    );

    let (takeover_tx, takeover_rx) = std::sync::mpsc::channel();
    let (remote_side, remote_stats) = match link {
        Some(link) => {
            let (side, stats) = start_remote(
                link,
                ck,
                &mut store,
                (store_created, cfg.protects),
                rings_geom.workers,
                takeover_rx,
            )?;
            (Some(side), Some(stats))
        }
        None => (None, None),
    };

    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&term))
            .context("cannot install signal handlers")?;
    }

    let rings = Arc::new(rings);
    let started = Instant::now();
    // Bound before anything is served, so a taken port fails the start.
    let metrics_listener = cfg.metrics.map(metrics::bind).transpose()?;
    let listener = control::bind(&ck.control_socket, access)?;
    let store_path = dir.join(STORE_FILE);
    let control = control::Control {
        rings: Arc::clone(&rings),
        store: StoreSegment::open_file(&store_path)
            .with_context(|| format!("second mapping of {}", store_path.display()))?,
        stats: Arc::clone(&store.stats),
        protect: store.protect.clone(),
        facts: control::Facts {
            dir: dir.clone(),
            hugetlbfs,
            capacity: store_geom.conn_capacity,
            ftp_capacity: store_geom.ftp_capacity,
            segment_bytes: store_geom.segment_bytes(),
            rings_bytes: rings_geom.segment_bytes(),
            bytes_per_conn: std::mem::size_of::<shm_layout::ConnRecord>() as u64,
            generation: store.segment().generation(),
            origin: store.segment().origin(),
        },
        started,
        remote: remote_stats.clone(),
        takeover: std::sync::Mutex::new(takeover_tx),
    };
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || control.serve(listener))
        .context("cannot start the control thread")?;
    info!("control socket {}", ck.control_socket.display());
    if let Some(listener) = metrics_listener {
        let telemetry = Some(ck.dataplane_telemetry.clone()).filter(|p| !p.as_os_str().is_empty());
        let exporter = metrics::Exporter {
            rings: Arc::clone(&rings),
            stats: Arc::clone(&store.stats),
            capacity: store_geom.conn_capacity,
            ftp_capacity: store_geom.ftp_capacity,
            bytes_per_conn: std::mem::size_of::<shm_layout::ConnRecord>() as u64,
            started,
            telemetry: telemetry.clone(),
            remote: remote_stats.clone(),
            protect: store.protect.clone(),
        };
        let addr = listener.local_addr().context("metrics listener has no address")?;
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || exporter.serve(listener))
            .context("cannot start the metrics thread")?;
        match telemetry {
            Some(p) => info!("metrics on http://{addr}/metrics (dataplane counters from {})", p.display()),
            None => info!("metrics on http://{addr}/metrics (checkpointd only; checkpoint.dataplane_telemetry is off)"),
        }
    }

    let totals = drain_loop(&rings, &mut store, ck, &term, remote_side)?;
    let _ = std::fs::remove_file(&ck.control_socket);
    info!(
        "checkpointd exiting on signal: {} delta(s) applied, {} torn, {} connection(s) stored, {} store-full \
         drop(s); segments kept in {}",
        totals.applied,
        totals.torn,
        store.stats.conns.load(Ordering::Relaxed),
        store.stats.full_drops.load(Ordering::Relaxed),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Versions and deadlines are TSC readings of the boot that wrote them. Rings
/// from another boot (or machine) are drained into the store first, then a
/// store from elsewhere is rebased (every version to 0), so that what the
/// dataplane writes from now on is newer and a restore knows the old
/// deadlines for another clock's.
fn adopt_foreign_clock(
    rings: &RingsSegment,
    store: &mut store::Store,
    here: &shm_layout::SegmentOrigin,
) -> anyhow::Result<()> {
    let rings_origin = rings.origin();
    if !rings_origin.same_clock_as(here) {
        let mut drained = 0u64;
        for w in 0..rings.geometry().workers {
            let mut c = rings.consumer(w)?;
            loop {
                let r = c.drain(4096, |d| {
                    store.apply(d, w as u16);
                });
                drained += u64::from(r.applied);
                if r.applied + r.torn == 0 {
                    break;
                }
            }
        }
        rings.set_origin(here);
        warn!(
            "the rings are from another boot or machine (boot {}, TSC {} Hz; this one {}, {} Hz): \
             drained {drained} delta(s) into the store before rebasing it",
            rings_origin.boot_id_text(),
            rings_origin.tsc_hz,
            here.boot_id_text(),
            here.tsc_hz
        );
    }
    let store_origin = store.segment().origin();
    if !store_origin.same_clock_as(here) || !rings_origin.same_clock_as(here) {
        let n = store.rebase(here);
        warn!(
            "the store is from another boot or machine (boot {}, TSC {} Hz; this one {}, {} Hz): \
             rebased {n} portion(s) to version 0; their connections are restored, FTP \
             expectations inside them are not",
            store_origin.boot_id_text(),
            store_origin.tsc_hz,
            here.boot_id_text(),
            here.tsc_hz
        );
    }
    Ok(())
}

#[derive(Default)]
struct Totals {
    applied: u64,
    torn: u64,
    /// Deltas a standby drained and did not apply.
    ignored: u64,
}

/// A value no earlier start of checkpointd (nor takeover) chose: from the
/// time and the pid, never 0.
fn new_incarnation(pid: u32) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(&monotonic_ns().to_le_bytes(), u64::from(pid)).max(1)
}

fn drain_loop(
    rings: &RingsSegment,
    store: &mut store::Store,
    ck: &config::CheckpointSection,
    term: &AtomicBool,
    mut remote_side: Option<remote::RemoteSide>,
) -> anyhow::Result<Totals> {
    let workers = rings.geometry().workers;
    let mut consumers = (0..workers).map(|w| rings.consumer(w)).collect::<Result<Vec<_>, _>>()?;
    let pid = std::process::id();
    // Time and pid: no earlier start of checkpointd chose the same.
    rings.set_incarnation(new_incarnation(pid));
    let idle = Duration::from_micros(ck.idle_sleep_us);
    let mut totals = Totals::default();
    let mut last_drop_log = Instant::now() - Duration::from_secs(2);
    let mut logged_drops = 0u64;
    loop {
        // Read before the pass: a signal that arrives during it still gets
        // the pass finished (and its tails published) before we leave.
        let stop = term.load(Ordering::Relaxed);
        let mut busy = false;
        // A standby's store is its mirror of the active appliance: its own
        // dataplane's deltas (an idle table expiring copies) are drained and
        // dropped until it takes over.
        let mirror_only = matches!(remote_side, Some(remote::RemoteSide::Standby(_)));
        for (w, c) in consumers.iter_mut().enumerate() {
            let before = c.position();
            let r = c.drain(ck.drain_batch, |d| {
                if mirror_only {
                    totals.ignored += 1;
                } else {
                    store.apply(d, w as u16);
                }
            });
            if r.resynced {
                let st = rings.status(w as u32);
                warn!(
                    "ring {w}: its control block was impossible (head behind the tail or more than \
                     a ring ahead; a damaged or foreign segment): resumed at head {} and asked the \
                     dataplane to re-send every connection (resync epoch {})",
                    st.head, st.resync_epoch
                );
            }
            if r.torn > 0 {
                warn!(
                    "ring {w}: skipped {} torn record(s) (checksum or sequence mismatch)",
                    r.torn
                );
            }
            if let Some(r) = remote_side.as_mut() {
                r.note(store, w, (before, c.position()));
            }
            totals.applied += u64::from(r.applied);
            totals.torn += u64::from(r.torn);
            busy |= r.applied + r.torn > 0;
        }
        if let Some(r) = remote_side.as_mut() {
            let was_standby = matches!(r, remote::RemoteSide::Standby(_));
            r.pass(store);
            if was_standby && matches!(r, remote::RemoteSide::Active(_)) {
                // Took over: what the rings carried while this was the
                // standby went nowhere. A new incarnation has the dataplane
                // write its protected connections again, and its commit
                // marks start over (they hold for one drainer only).
                rings.set_incarnation(new_incarnation(pid));
            }
            for w in 0..workers {
                if let Some(at) = r.committed(w as usize) {
                    rings.set_remote_committed(w, at);
                }
            }
        }
        rings.beat(pid, monotonic_ns());
        let drops = store.stats.full_drops.load(Ordering::Relaxed)
            + store.stats.ftp_full_drops.load(Ordering::Relaxed);
        if drops != logged_drops && last_drop_log.elapsed() >= Duration::from_secs(1) {
            warn!(
                "store full: {} new connection(s) and {} ftp portion(s) dropped so far; raise \
                 checkpoint.store_capacity / ftp_capacity",
                store.stats.full_drops.load(Ordering::Relaxed),
                store.stats.ftp_full_drops.load(Ordering::Relaxed)
            );
            logged_drops = drops;
            last_drop_log = Instant::now();
        }
        if stop {
            return Ok(totals);
        }
        if !busy && !idle.is_zero() {
            std::thread::sleep(idle);
        }
    }
}

/// Checks the remote store's credentials, then either fills a new local
/// store from it (a reboot) and starts the writer, or (a standby) starts
/// following it. A store that is down is no reason not to checkpoint
/// locally; wrong credentials are.
fn start_remote(
    link: remote::Link,
    ck: &config::CheckpointSection,
    store: &mut store::Store,
    (store_created, protects): (bool, bool),
    workers: u32,
    takeovers: std::sync::mpsc::Receiver<remote::TakeoverRequest>,
) -> anyhow::Result<(remote::RemoteSide, Arc<remote::RemoteStats>)> {
    let stats = &Arc::new(remote::RemoteStats::default());
    let timeout = Duration::from_millis(ck.remote.restore_timeout_ms.max(1));
    let shown = link.shown.clone();
    let link = Arc::new(link);
    if link.standby {
        if let Err(e) = remote::probe(&link, link.timeout) {
            if remote::is_fatal(&e) {
                return Err(e.context(format!("remote store {shown}")));
            }
            warn!("standby: the remote store {shown} is down at start ({e:#}): retrying");
        }
        // The mirror is written at version 0 (another process's clock): a
        // store this appliance filled itself (a former active restarted as
        // the standby) is brought to version 0 too, or the mirror could
        // never update what it holds.
        let origin = store.segment().origin();
        let rebased = store.rebase(&origin);
        info!(
            "standby ({}): following the remote store {shown} into the local store ({rebased} stored \
             portion(s) set to version 0)",
            link.appliance
        );
        let m = remote::Mirror::start(
            link,
            &ck.remote,
            Arc::clone(stats),
            workers,
            u64::from(store.segment().geometry().conn_capacity),
            takeovers,
        )?;
        return Ok((remote::RemoteSide::Standby(Box::new(m)), Arc::clone(stats)));
    }
    store.track_changes = true;
    let mut chunks = Default::default();
    if store_created {
        match remote::restore(&link, store, workers, timeout, stats, remote::Take::All) {
            Ok(r) => {
                chunks = r.chunks;
                info!(
                    "restored {} connection(s) and {} protected connection log(s) ({} portion(s)) \
                     from the remote store {shown}; {} refused (HMAC), {} left for the \
                     dataplane's RSS to place",
                    r.conns, r.protected, r.portions, r.forged, r.unplaced
                );
                if r.forged > 0 {
                    warn!(
                        "{} remote record(s) failed their HMAC: forged, copied from another \
                         connection, or sealed under another key (checkpoint.remote.hmac_key_file)",
                        r.forged
                    );
                }
            }
            Err(e) if remote::is_fatal(&e) => {
                return Err(e.context(format!("remote store {shown}")))
            }
            Err(e) => warn!(
                "the local store is new but the remote store {shown} could not be read ({e:#}): \
                 starting without the connections it holds"
            ),
        }
        store.changes.clear();
    } else if let Err(e) = remote::probe(&link, timeout.min(link.timeout)) {
        if remote::is_fatal(&e) {
            return Err(e.context(format!("remote store {shown}")));
        }
        warn!("remote store {shown} is down at start ({e:#}): checkpointing locally, retrying");
    } else if protects {
        // The segments survived, the protected connections' logs (in the
        // last checkpointd's memory) did not: the remote copy has them.
        match remote::restore(&link, store, workers, timeout, stats, remote::Take::ProtectedOnly) {
            Ok(r) => {
                info!(
                    "restored {} protected connection log(s) from the remote store {shown} \
                     beside the local store ({} refused)",
                    r.protected, r.forged
                );
                chunks = r.chunks;
            }
            Err(e) => warn!(
                "the protected connections' logs could not be read from the remote store \
                 {shown} ({e:#}): a dataplane that restarts before it writes them again \
                 restores those connections unprotected"
            ),
        }
        store.changes.clear();
    }
    let capacity = u64::from(store.segment().geometry().conn_capacity);
    let mut tracker =
        remote::Tracker::start(link, &ck.remote, Arc::clone(stats), capacity, workers, false)?;
    tracker.adopt_chunks(chunks);
    tracker.adopt_chunks(store.protect.take_remote_chunks());
    if !store_created {
        // The changes drained before this start may not have reached the
        // remote store: send every connection once (older ones are skipped
        // there by version).
        let n = tracker.queue_all(store, None);
        info!("remote store {shown}: {n} stored connection(s) queued to bring it up to date");
    }
    Ok((remote::RemoteSide::Active(Box::new(tracker)), Arc::clone(stats)))
}

/// One checkpointd per directory: an flock held for the process's life.
/// Only the daemon's user can open the lock file, so nobody else can hold it.
fn lock_dir(dir: &Path, access: SegmentAccess) -> anyhow::Result<std::fs::File> {
    let path = dir.join("checkpointd.lock");
    let f = open_lock_file(&path, access)?;
    match shm_layout::try_lock_exclusive(&f) {
        Ok(true) => {}
        Ok(false) => bail!(
            "{}: another checkpointd owns this segment directory; stop it first",
            dir.display()
        ),
        Err(e) => warn!(
            "cannot lock {} ({e}); make sure only one checkpointd uses {}",
            path.display(),
            dir.display()
        ),
    }
    Ok(f)
}

fn remove_advice(dir: &Path) -> String {
    format!(
        "stop the dataplane and checkpointd, remove {} and {} (the connections they hold are lost), then \
         start checkpointd again",
        dir.join(RINGS_FILE).display(),
        dir.join(STORE_FILE).display()
    )
}

/// Creates a segment under a temporary name and renames it into place, so a
/// crash in the middle never leaves a half-formatted file under the real name.
fn create_atomically<T>(
    path: &Path,
    create: impl FnOnce(&Path) -> Result<T, shm_layout::LayoutError>,
) -> anyhow::Result<T> {
    let tmp = path.with_extension("new");
    let seg = create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(seg)
}

/// A segment of the previous layout is brought forward in place.
fn translate(path: &Path) -> anyhow::Result<()> {
    match shm_layout::from_previous(path).with_context(|| format!("segment {}", path.display()))? {
        shm_layout::Translated::Current => {}
        shm_layout::Translated::From { from, origin_known } => info!(
            "{}: translated from layout {from} to {} ({})",
            path.display(),
            shm_layout::LAYOUT_VERSION,
            if origin_known {
                "on hugetlbfs or tmpfs, so from this boot"
            } else {
                "its boot is unknown, so it is rebased as if from another boot"
            }
        ),
    }
    Ok(())
}

fn open_rings(
    dir: &Path,
    geom: RingsGeometry,
    access: SegmentAccess,
) -> anyhow::Result<(RingsSegment, bool)> {
    let path = dir.join(RINGS_FILE);
    // lstat: a link under the name is opened (and refused), not replaced.
    if std::fs::symlink_metadata(&path).is_err() {
        let seg = create_atomically(&path, |p| RingsSegment::create_file_for(p, geom, access))?;
        info!("created {} ({} bytes)", path.display(), geom.segment_bytes());
        return Ok((seg, false));
    }
    translate(&path)?;
    let seg = RingsSegment::open_file(&path)
        .with_context(|| format!("rings segment {}", path.display()))?;
    let found = seg.geometry();
    if found != geom {
        bail!(
            "rings segment {}: holds {} ring(s) of {} slots but the config asks for {} of {} \
             ([[worker]] count, checkpoint.ring_slots): {}",
            path.display(),
            found.workers,
            found.slots_per_ring,
            geom.workers,
            geom.slots_per_ring,
            remove_advice(dir)
        );
    }
    info!("attached {} (generation {:016x})", path.display(), seg.generation());
    Ok((seg, true))
}

fn open_store(
    dir: &Path,
    geom: StoreGeometry,
    access: SegmentAccess,
) -> anyhow::Result<(StoreSegment, bool)> {
    let path = dir.join(STORE_FILE);
    if std::fs::symlink_metadata(&path).is_err() {
        let seg = create_atomically(&path, |p| StoreSegment::create_file_for(p, geom, access))?;
        info!("created {} ({} bytes)", path.display(), geom.segment_bytes());
        return Ok((seg, true));
    }
    translate(&path)?;
    let seg = StoreSegment::open_file(&path)
        .with_context(|| format!("store segment {}", path.display()))?;
    let found = seg.geometry();
    if found != geom {
        bail!(
            "store segment {}: holds {} connections + {} ftp records but the config asks for {} + {} \
             (checkpoint.store_capacity, ftp_capacity): {}",
            path.display(),
            found.conn_capacity,
            found.ftp_capacity,
            geom.conn_capacity,
            geom.ftp_capacity,
            remove_advice(dir)
        );
    }
    info!("attached {} (generation {:016x})", path.display(), seg.generation());
    Ok((seg, false))
}
