//! Rebuilding a worker's table from checkpointd's store, before any port
//! starts: each module restores its own portion.

use crate::checkpoint::CheckpointSink;
use crate::conn::table::TableMemory;
use crate::firewall::{Firewall, StoredPortions};
use shm_layout::StoreSegment;

/// What a worker's restore did.
#[derive(Debug, Default, Clone, Copy)]
pub struct RestoreSummary {
    pub restored: u64,
    pub skipped: u64,
}

/// Rebuilds `worker`'s table from the store: each module restores its own
/// portion. A damaged record is skipped and counted, never applied.
pub fn restore_worker<S: CheckpointSink, A: TableMemory>(
    fw: &mut Firewall<S, A>,
    store: &StoreSegment,
    worker: u16,
    now: u64,
) -> RestoreSummary {
    let mut skipped = 0u64;
    let stored = store.restore_iter(worker).map(|c| StoredPortions {
        id: c.conn_id,
        ip: c.ip.map(|p| p.payload),
        l4: c.l4.map(|p| (p.module, p.payload)),
        ftp: c.ftp.map(|p| p.payload),
    });
    let restored = fw.restore_many(stored, now, |id, e| {
        skipped += 1;
        if skipped <= 5 {
            tracing::warn!(
                worker,
                conn = format_args!("{id:016x}"),
                "stored connection skipped: {e}"
            );
        }
    });
    RestoreSummary { restored, skipped }
}
