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
    pub reconnects: AtomicU64,
    /// Buckets found empty after they had been written (the server lost
    /// them): their connections were sent again.
    pub buckets_resynced: AtomicU64,
    /// Connections queued again for a full rewrite (start, lost bucket).
    pub conns_resynced: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Bytes of sealed portions sent, by module number.
    pub module_bytes: [AtomicU64; 5],
    /// Portions sent, by module number.
    pub module_portions: [AtomicU64; 5],
    /// From a connection's first unsent change to the store's reply, in µs.
    pub lag_last_us: AtomicU64,
    pub lag_max_us: AtomicU64,
    /// Start-up restore from the remote store.
    pub restored_conns: AtomicU64,
    pub restore_forged: AtomicU64,
    pub restore_misplaced: AtomicU64,
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
        let by_module = |a: &[AtomicU64; 5]| {
            serde_json::json!({
                "ip": g(&a[0]), "tcp": g(&a[1]), "udp": g(&a[2]), "icmp": g(&a[3]), "ftp": g(&a[4]),
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
            "reconnects": g(&self.reconnects),
            "buckets_resynced": g(&self.buckets_resynced),
            "conns_resynced": g(&self.conns_resynced),
            "bytes_sent": g(&self.bytes_sent),
            "module_bytes": by_module(&self.module_bytes),
            "module_portions": by_module(&self.module_portions),
            "lag_last_us": g(&self.lag_last_us),
            "lag_max_us": g(&self.lag_max_us),
            "restored_conns": g(&self.restored_conns),
            "restore_forged": g(&self.restore_forged),
            "restore_misplaced": g(&self.restore_misplaced),
        })
    }
}
