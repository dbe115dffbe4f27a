//! A start with a new local store (the box rebooted, or its segments were
//! removed) fills it from the remote copy before the first heartbeat, so the
//! dataplane, which waits for that heartbeat, restores every connection
//! before its ports start.

use super::link::{Link, Refused};
use super::stats::RemoteStats;
use crate::store::{Outcome, Store};
use hashbrown::HashMap;
use shm_layout::remote::{bucket_key, bucket_of, decode_record, field_conn, REMOTE_BUCKETS};
use shm_layout::remote_log::{decode_chunk, field_chunk};
use shm_layout::UNPLACED_WORKER;
use std::time::Duration;
use tracing::warn;

/// What a restore found.
#[derive(Debug, Default)]
pub struct Restored {
    pub conns: u64,
    /// Protected connections (their snapshots and logs).
    pub protected: u64,
    pub portions: u64,
    /// Records whose HMAC failed (forged, transplanted, damaged), or found
    /// in another connection's bucket.
    pub forged: u64,
    /// Left for the dataplane to place by its RSS.
    pub unplaced: u64,
    /// The log chunks read, by protected connection: the tracker removes
    /// them when it next sends that log whole.
    pub chunks: HashMap<u64, Vec<u64>>,
}

/// Buckets fetched in one pipeline.
const CHUNK: u16 = 16;

/// What a restore takes from the remote copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Every connection: the local store is new.
    All,
    /// Only the protected connections and their logs: the local store
    /// survived, but they live in checkpointd's memory.
    ProtectedOnly,
}

/// Fills `store` from the remote copy, every portion at version 0 (FTP
/// expectations inside them are not restored, as after a rebase). Errors are the store's, unreachable
/// or refusing (the caller decides whether to go on without it).
pub fn restore(
    link: &Link,
    store: &mut Store,
    workers: u32,
    timeout: Duration,
    stats: &RemoteStats,
    take: Take,
) -> anyhow::Result<Restored> {
    let fetched = super::block_on_timeout(timeout, fetch(link))?.ok_or_else(|| {
        anyhow::anyhow!("no answer within checkpoint.remote.restore_timeout_ms ({timeout:?})")
    })??;
    let mut r = Restored::default();
    for (bucket, fields) in fetched {
        let mut chunks = Vec::new();
        for (field, value) in &fields {
            let Some(conn_id) = field_conn(field) else {
                if let Some(at) = field_chunk(field) {
                    chunks.push((at, value));
                }
                continue;
            };
            let rec = match decode_record(&link.key, conn_id, value) {
                Ok(rec) => rec,
                Err(e) => {
                    r.forged += 1;
                    warn!("remote record {conn_id:016x} in bucket {bucket} refused: {e}");
                    continue;
                }
            };
            if bucket_of(conn_id) != bucket {
                r.forged += 1;
                warn!(
                    "remote record {conn_id:016x} found in bucket {bucket}, not its own: refused"
                );
                continue;
            }
            let worker = super::local_worker(&rec, workers);
            r.unplaced += u64::from(worker == UNPLACED_WORKER);
            let (mut conn, mut protected) = (false, false);
            for p in &rec.portions {
                let protect = p.module == shm_layout::module::PROTECT;
                if take == Take::ProtectedOnly && !protect {
                    continue;
                }
                // Another process's clock (another boot, or another host's):
                // version 0, as a rebased store has.
                if store.put_copied(conn_id, worker, p.module, p.payload) == Outcome::Applied {
                    r.portions += 1;
                    protected |= protect;
                    conn |= !protect;
                }
            }
            r.conns += u64::from(conn);
            r.protected += u64::from(protected);
        }
        // Each log's chunks after its head, in order; a forged one leaves a
        // hole, and its connection is not replayed.
        chunks.sort_unstable_by_key(|&(at, _)| at);
        for ((id, offset), value) in chunks {
            r.chunks.entry(id).or_default().push(offset);
            match decode_chunk(&link.key, (id, offset), value) {
                Ok((lineage, bytes)) if bucket_of(id) == bucket => {
                    store.protect.put_chunk(id, (lineage, offset), bytes)
                }
                Ok(_) => {
                    r.forged += 1;
                    warn!("remote log chunk of {id:016x} found in bucket {bucket}: refused");
                }
                Err(e) => {
                    r.forged += 1;
                    warn!("remote log chunk of {id:016x} at {offset} refused: {e}");
                }
            }
        }
    }
    if take == Take::ProtectedOnly {
        return Ok(r);
    }
    RemoteStats::add(&stats.restored_conns, r.conns);
    RemoteStats::add(&stats.restore_forged, r.forged);
    RemoteStats::add(&stats.restore_unplaced, r.unplaced);
    Ok(r)
}

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

async fn fetch(link: &Link) -> anyhow::Result<Vec<(u16, Fields)>> {
    let mut conn = link.connect().await.map_err(Refused::classify)?;
    let mut out = Vec::with_capacity(usize::from(REMOTE_BUCKETS));
    let mut first = 0;
    while first < REMOTE_BUCKETS {
        let last = (first + CHUNK).min(REMOTE_BUCKETS);
        let mut pipe = redis::pipe();
        for b in first..last {
            pipe.cmd("HGETALL").arg(bucket_key(&link.namespace, b));
        }
        let got: Vec<Fields> = pipe.query_async(&mut conn).await?;
        out.extend((first..last).zip(got));
        first = last;
    }
    Ok(out)
}
