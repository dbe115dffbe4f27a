//! What the remote copy counts, read by the control socket and the metrics
//! endpoint while the writer runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct RemoteStats {
    /// 1 while the writer holds a working connection.
    pub up: AtomicBool,
    /// Set once another appliance raised the epoch: this one writes no more.
    pub fenced: AtomicBool,
    /// The epoch this appliance writes under (0 until the first connect).
    pub epoch: AtomicU64,
    /// Connections waiting to be sent (changed since their last write).
    pub pending: AtomicU64,
    pub batches: AtomicU64,
    pub records_written: AtomicU64,
    pub deletes_written: AtomicU64,
    /// Writes the store skipped because it held a newer version.
    pub stale: AtomicU64,
    /// Writes refused because the bucket's epoch was newer.
    pub fenced_writes: AtomicU64,
    /// Failed writes or connects (each retried).
    pub errors: AtomicU64,
    /// Bucket calls Redis refused (out of memory, ACL, script error): their
    /// changes were queued again.
    pub refused_calls: AtomicU64,
    /// Times the map of unsent changes outgrew its bound (Redis down under
    /// churn): it was replaced by a rewrite of every stored connection.
    pub pending_overflows: AtomicU64,
    pub reconnects: AtomicU64,
    /// Buckets found empty after they had been written (the server lost
    /// them): their connections were sent again.
    pub buckets_resynced: AtomicU64,
    /// Connections queued again for a full rewrite (start, lost bucket).
    pub conns_resynced: AtomicU64,
    /// Changes folded into one already waiting (refreshes coalesced).
    pub coalesced: AtomicU64,
    /// Connections sent ahead of the interval: new ones, new portions,
    /// FTP, deletes.
    pub urgent_sends: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Protected connections' log bytes sent in chunks, and the logs sent
    /// whole again (a truncation, too many chunks, a failed call).
    pub log_chunk_bytes: AtomicU64,
    pub log_rewrites: AtomicU64,
    /// Bytes of sealed portions sent, by module number.
    pub module_bytes: [AtomicU64; 6],
    /// Portions sent, by module number.
    pub module_portions: [AtomicU64; 6],
    /// From a connection's first unsent change to the store's reply, in µs.
    pub lag_last_us: AtomicU64,
    pub lag_max_us: AtomicU64,
    /// Start-up restore from the remote store.
    pub restored_conns: AtomicU64,
    pub restore_forged: AtomicU64,
    /// Restored for the dataplane to place by its RSS (written by an
    /// appliance with another worker count).
    pub restore_unplaced: AtomicU64,
    /// A standby's mirror: records and deletes applied from the followed
    /// copy, records refused (HMAC) or older than the mirror's (a rollback).
    pub mirror_applied: AtomicU64,
    pub mirror_deletes: AtomicU64,
    pub mirror_forged: AtomicU64,
    pub mirror_stale: AtomicU64,
    pub mirror_unplaced: AtomicU64,
    /// Buckets read whole again (start, a gap in the published numbers).
    pub mirror_resyncs: AtomicU64,
    /// 1 while the follower is subscribed and in sync.
    pub following: AtomicBool,
    /// From the writer's drain of a change to its application in this
    /// mirror (both clocks are CLOCK_REALTIME: meaningful within one host or
    /// with synchronised clocks).
    pub mirror_lag: LagHistogram,
    /// Takeovers this checkpointd performed.
    pub takeovers: AtomicU64,
}

/// Latencies in 100 µs steps up to 100 ms, and one bin past that.
#[derive(Debug)]
pub struct LagHistogram {
    bins: Vec<AtomicU64>,
}

const LAG_STEP_US: u64 = 100;
const LAG_BINS: usize = 1001;

impl Default for LagHistogram {
    fn default() -> Self {
        LagHistogram { bins: (0..LAG_BINS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl LagHistogram {
    pub fn record(&self, us: u64) {
        let i = ((us / LAG_STEP_US) as usize).min(LAG_BINS - 1);
        self.bins[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.bins.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The upper edge of the bin holding quantile `q`, in µs (None: empty).
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let want = ((n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.bins.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= want {
                return Some((i as u64 + 1) * LAG_STEP_US);
            }
        }
        None
    }
}

impl RemoteStats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn lag(&self, us: u64) {
        self.lag_last_us.store(us, Ordering::Relaxed);
        self.lag_max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// The figures as the control socket reports them.
    pub fn to_json(&self) -> serde_json::Value {
        let g = Self::get;
        let by_module = |a: &[AtomicU64; 6]| {
            serde_json::json!({
                "ip": g(&a[0]), "tcp": g(&a[1]), "udp": g(&a[2]), "icmp": g(&a[3]), "ftp": g(&a[4]),
                "protect": g(&a[5]),
            })
        };
        serde_json::json!({
            "up": self.up.load(Ordering::Relaxed),
            "fenced": self.fenced.load(Ordering::Relaxed),
            "epoch": g(&self.epoch),
            "pending": g(&self.pending),
            "batches": g(&self.batches),
            "records_written": g(&self.records_written),
            "deletes_written": g(&self.deletes_written),
            "stale": g(&self.stale),
            "fenced_writes": g(&self.fenced_writes),
            "errors": g(&self.errors),
            "refused_calls": g(&self.refused_calls),
            "pending_overflows": g(&self.pending_overflows),
            "reconnects": g(&self.reconnects),
            "buckets_resynced": g(&self.buckets_resynced),
            "conns_resynced": g(&self.conns_resynced),
            "coalesced": g(&self.coalesced),
            "urgent_sends": g(&self.urgent_sends),
            "bytes_sent": g(&self.bytes_sent),
            "log_chunk_bytes": g(&self.log_chunk_bytes),
            "log_rewrites": g(&self.log_rewrites),
            "module_bytes": by_module(&self.module_bytes),
            "module_portions": by_module(&self.module_portions),
            "lag_last_us": g(&self.lag_last_us),
            "lag_max_us": g(&self.lag_max_us),
            "restored_conns": g(&self.restored_conns),
            "restore_forged": g(&self.restore_forged),
            "restore_unplaced": g(&self.restore_unplaced),
            "following": self.following.load(Ordering::Relaxed),
            "mirror_applied": g(&self.mirror_applied),
            "mirror_deletes": g(&self.mirror_deletes),
            "mirror_forged": g(&self.mirror_forged),
            "mirror_stale": g(&self.mirror_stale),
            "mirror_unplaced": g(&self.mirror_unplaced),
            "mirror_resyncs": g(&self.mirror_resyncs),
            "mirror_lag_samples": self.mirror_lag.count(),
            "mirror_lag_p50_us": self.mirror_lag.quantile_us(0.5),
            "mirror_lag_p99_us": self.mirror_lag.quantile_us(0.99),
            "takeovers": g(&self.takeovers),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_bins() {
        let h = LagHistogram::default();
        assert_eq!(h.quantile_us(0.5), None);
        for us in [50, 150, 150, 950, 250_000] {
            h.record(us);
        }
        assert_eq!(h.quantile_us(0.2), Some(100));
        assert_eq!(h.quantile_us(0.5), Some(200));
        assert_eq!(h.quantile_us(0.8), Some(1000));
        assert_eq!(h.quantile_us(1.0), Some(100_100));
    }
}
