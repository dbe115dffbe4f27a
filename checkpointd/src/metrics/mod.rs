//! The Prometheus endpoint (`checkpoint.metrics_listen`).
//!
//! A thread of its own answers `GET /metrics` with the OpenMetrics text
//! format (encoded by the `prometheus-client` crate), built at every scrape
//! from the same atomics the control socket reads: ring control blocks and
//! heartbeat in shared memory, store counters in the heap. It never takes a
//! lock the drain loop holds, so a slow scraper cannot stall the drain.
//!
//! When `checkpoint.dataplane_telemetry` names the dataplane's DPDK telemetry
//! socket, each scrape also asks the dataplane for `/lazarus/workers` and
//! `/lazarus/checkpoint` and exports every number in the replies as
//! `lazarus_dataplane_*` (labelled by worker where the reply is per worker).
//! A dataplane that is down, or a build without those commands, only sets
//! `lazarus_dataplane_up 0`. Every metric is listed in docs/OPERATING.md.

mod collector;
mod dataplane;
mod families;
mod http;

pub use http::bind;

use crate::store::StoreStats;
use collector::Snapshot;
use prometheus_client::registry::Registry;
use shm_layout::RingsSegment;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// What a scrape reads: served by `http`, encoded by `collector`.
pub struct Exporter {
    pub rings: Arc<RingsSegment>,
    pub stats: Arc<StoreStats>,
    pub capacity: u32,
    pub ftp_capacity: u32,
    pub bytes_per_conn: u64,
    pub started: Instant,
    /// The dataplane's telemetry socket; None: checkpointd's metrics only.
    pub telemetry: Option<PathBuf>,
    /// The remote copy's counters; None when it is off.
    pub remote: Option<Arc<crate::remote::RemoteStats>>,
    /// What checkpointd holds of protected connections.
    pub protect: crate::protect::Protected,
}

impl Exporter {
    /// One scrape: reads every counter now, asks the dataplane if configured.
    pub fn render(&self) -> String {
        let snap = self.snapshot();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(snap));
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    fn snapshot(&self) -> Snapshot {
        let workers = self.rings.geometry().workers;
        let rings = (0..workers).map(|w| (w, self.rings.status(w))).collect();
        let hb = self.rings.heartbeat();
        let heartbeat_age = (hb.pid != 0)
            .then(|| shm_layout::monotonic_ns().saturating_sub(hb.monotonic_ns) as f64 / 1e9);
        let st = &self.stats;
        let dataplane = self.telemetry.as_deref().map(dataplane::scrape);
        Snapshot {
            rings,
            heartbeat_age,
            conns: st.conns.load(Ordering::Relaxed),
            ftp: st.ftp.load(Ordering::Relaxed),
            capacity: self.capacity,
            ftp_capacity: self.ftp_capacity,
            bytes_per_conn: self.bytes_per_conn,
            full_drops: st.full_drops.load(Ordering::Relaxed),
            ftp_full_drops: st.ftp_full_drops.load(Ordering::Relaxed),
            stale: st.stale.load(Ordering::Relaxed),
            stale_deletes: st.stale_deletes.load(Ordering::Relaxed),
            swept: st.swept.load(Ordering::Relaxed),
            rejected: st.rejected.load(Ordering::Relaxed),
            uptime: self.started.elapsed().as_secs_f64(),
            dataplane,
            remote: self.remote.as_ref().map(|r| {
                let mut out = families::Families::new();
                families::flatten("lazarus_remote", &r.to_json(), &Vec::new(), &mut out);
                out
            }),
            protect: {
                let mut out = families::Families::new();
                families::flatten(
                    "lazarus_protect",
                    &self.protect.to_json(),
                    &Vec::new(),
                    &mut out,
                );
                out
            },
        }
    }
}
