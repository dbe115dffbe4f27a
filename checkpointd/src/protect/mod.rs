//! Protected connections (`[[protected]]`, issue 21) as checkpointd keeps
//! them: each one's snapshot (its newest PROTECT portion) and its client
//! log, rebuilt from the LOG records in order, in checkpointd's own memory.
//! A restarted dataplane reads them back through the control socket
//! (`protected`) before its ports start. [`remote`] is their side of the
//! remote copy.

mod remote;
pub use remote::SentLog;

use hashbrown::HashMap;
use shm_layout::{delta_kind, Delta};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The most log bytes kept for one connection: the dataplane's own bound
/// is lower (`log_bound`); this only stops a damaged ring from growing a
/// log without end.
pub const LOG_MAX: usize = 1 << 30;

/// Counters `status` reports.
#[derive(Debug, Default)]
pub struct ProtectStats {
    pub conns: AtomicU64,
    pub log_bytes: AtomicU64,
    /// Log records that started past the log's end: one was lost (a torn
    /// record), so the connection's log can no longer be replayed.
    pub log_gaps: AtomicU64,
    /// Log records whose bytes differ from those already held at their
    /// offset.
    pub log_conflicts: AtomicU64,
    /// Log records refused: past `LOG_MAX`.
    pub log_refused: AtomicU64,
    /// Snapshots older than the one held.
    pub stale: AtomicU64,
}

#[derive(Debug, Default)]
struct Entry {
    worker: u16,
    version: u64,
    snapshot: Vec<u8>,
    /// The stream offset of `log`'s first byte (what was truncated before).
    base: u64,
    log: Vec<u8>,
    /// A record of its log was lost: a restore must not replay it.
    broken: bool,
    /// The lineage of `log`'s bytes in the remote copy (shm_layout::
    /// remote_log), drawn when first sent and again whenever `log` starts
    /// over; 0: none drawn yet.
    lineage: u64,
    /// Offsets of its chunks this process found in the remote copy (a
    /// restore's, a mirror's): its tracker removes those it does not
    /// overwrite.
    remote_chunks: Vec<u64>,
    /// Copied from the remote copy: where its log ends there. A log held
    /// short of it lost a chunk.
    copied_end: Option<u64>,
}

impl Entry {
    fn end(&self) -> u64 {
        self.base + self.log.len() as u64
    }

    /// Broken, or copied without all of its log.
    fn unreplayable(&self) -> bool {
        self.broken || self.copied_end.is_some_and(|end| self.end() < end)
    }
}

/// Every protected connection the dataplane's rings have told of.
#[derive(Debug, Default, Clone)]
pub struct Protected {
    inner: Arc<Mutex<HashMap<u64, Entry>>>,
    pub stats: Arc<ProtectStats>,
    lineages: Arc<remote::Lineages>,
}

impl Protected {
    /// Applies one PROTECT delta from ring `worker`.
    pub fn apply(&self, d: &Delta<'_>, worker: u16) {
        let Ok(mut conns) = self.inner.lock() else { return };
        let st = &self.stats;
        match d.kind {
            delta_kind::PORTION => {
                let e = conns.entry(d.conn_id).or_default();
                if !e.snapshot.is_empty() && d.version < e.version {
                    st.stale.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                e.version = d.version;
                e.worker = worker;
                e.snapshot.clear();
                e.snapshot.extend_from_slice(d.payload);
            }
            delta_kind::LOG => {
                let e = conns.entry(d.conn_id).or_default();
                e.worker = worker;
                if e.broken && d.version <= e.base {
                    // Written again from its start (this checkpointd is new
                    // to the dataplane): whatever was lost is in it.
                    st.log_bytes.fetch_sub(e.log.len() as u64, Ordering::Relaxed);
                    e.log.clear();
                    e.broken = false;
                    e.lineage = 0;
                }
                // Bytes before the base were truncated: only a tail past it
                // is news.
                let before = e.base.saturating_sub(d.version);
                let Some(payload) = usize::try_from(before).ok().and_then(|b| d.payload.get(b..))
                else {
                    return;
                };
                let at = usize::try_from(d.version.max(e.base) - e.base).unwrap_or(usize::MAX);
                let held = e.log.len();
                if at > held {
                    st.log_gaps.fetch_add(1, Ordering::Relaxed);
                    e.broken = true;
                    return;
                }
                // A record sent again (after a resync) repeats what is held.
                let repeated = (held - at).min(payload.len());
                if e.log[at..at + repeated] != payload[..repeated] {
                    st.log_conflicts.fetch_add(1, Ordering::Relaxed);
                    e.broken = true;
                    return;
                }
                let new = &payload[repeated..];
                if held + new.len() > LOG_MAX {
                    st.log_refused.fetch_add(1, Ordering::Relaxed);
                    e.broken = true;
                    return;
                }
                e.log.extend_from_slice(new);
                st.log_bytes.fetch_add(new.len() as u64, Ordering::Relaxed);
            }
            delta_kind::TRIM => {
                let e = conns.entry(d.conn_id).or_default();
                e.worker = worker;
                if d.version <= e.base {
                    return;
                }
                let drop = usize::try_from(d.version - e.base).unwrap_or(usize::MAX);
                if drop >= e.log.len() {
                    // Everything held goes, and with it any gap: what came
                    // after it starts at the new base.
                    e.broken = false;
                }
                let drop = drop.min(e.log.len());
                e.log.drain(..drop);
                e.base = d.version;
                st.log_bytes.fetch_sub(drop as u64, Ordering::Relaxed);
            }
            delta_kind::DELETE => {
                if let Some(e) = conns.remove(&d.conn_id) {
                    st.log_bytes.fetch_sub(e.log.len() as u64, Ordering::Relaxed);
                }
            }
            _ => return,
        }
        st.conns.store(conns.len() as u64, Ordering::Relaxed);
    }

    /// Every protected connection's id (copied out).
    pub fn ids(&self) -> Vec<u64> {
        self.inner.lock().map(|c| c.keys().copied().collect()).unwrap_or_default()
    }

    /// Writes every connection to `out` as `shm_layout::parse_protected`
    /// reads it. Copied out first, so the drain loop never waits on the
    /// reader.
    pub fn dump(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut body = Vec::new();
        let mut n = 0u64;
        if let Ok(conns) = self.inner.lock() {
            // Those without a record too (their first one never came): the
            // dataplane refuses them and ends them, so none stays here.
            for (id, e) in conns.iter() {
                let (record, log) = ((&e.snapshot[..], e.version), (&e.log[..], e.base));
                let broken = e.unreplayable();
                shm_layout::encode_protected(&mut body, *id, e.worker, broken, record, log);
                n += 1;
            }
        }
        writeln!(out, "{}", serde_json::json!({"protected": n, "bytes": body.len()}))?;
        out.write_all(&body)?;
        out.flush()
    }

    pub fn to_json(&self) -> serde_json::Value {
        let st = &self.stats;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "conns": r(&st.conns),
            "log_bytes": r(&st.log_bytes),
            "log_gaps": r(&st.log_gaps),
            "log_conflicts": r(&st.log_conflicts),
            "log_refused": r(&st.log_refused),
            "stale": r(&st.stale),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_layout::module;

    fn delta(kind: u8, id: u64, version: u64, payload: &[u8]) -> Delta<'_> {
        Delta { seq: 0, conn_id: id, version, module: module::PROTECT, kind, payload }
    }

    fn dumped(p: &Protected) -> (String, Vec<u8>) {
        let mut out = Vec::new();
        p.dump(&mut out).unwrap();
        let nl = out.iter().position(|&b| b == b'\n').unwrap();
        (String::from_utf8(out[..nl].to_vec()).unwrap(), out[nl + 1..].to_vec())
    }

    /// The dumped entry of `id`.
    fn only(mut body: &[u8], id: u64) -> Vec<u8> {
        while !body.is_empty() {
            let len = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().unwrap()) as usize;
            let n = 36 + len(12) + len(16);
            if body[..8] == id.to_le_bytes() {
                return body[..n].to_vec();
            }
            body = &body[n..];
        }
        panic!("no entry {id}");
    }

    #[test]
    fn the_log_is_rebuilt_in_order_once_and_a_gap_breaks_it() {
        let p = Protected::default();
        p.apply(&delta(delta_kind::LOG, 7, 0, b"hello "), 1);
        p.apply(&delta(delta_kind::LOG, 7, 6, b"world"), 1);
        // Sent again after a resync: the same bytes, and one more.
        p.apply(&delta(delta_kind::LOG, 7, 3, b"lo world!"), 1);
        p.apply(&delta(delta_kind::PORTION, 7, 5, b"snap"), 1);
        p.apply(&delta(delta_kind::PORTION, 7, 4, b"old!"), 1);
        let (head, body) = dumped(&p);
        assert_eq!(head, r#"{"bytes":52,"protected":1}"#);
        assert_eq!(&body[..8], &7u64.to_le_bytes());
        assert_eq!(&body[8..12], &[1, 0, 0, 0]);
        assert_eq!(&body[28..36], &5u64.to_le_bytes(), "the newest snapshot's version");
        assert_eq!(&body[36..], b"snaphello world!");
        assert_eq!(p.stats.stale.load(Ordering::Relaxed), 1);

        p.apply(&delta(delta_kind::LOG, 7, 40, b"late"), 1);
        assert_eq!(only(&dumped(&p).1, 7)[10], 1, "broken after a gap");
        assert_eq!(p.stats.log_gaps.load(Ordering::Relaxed), 1);
        p.apply(&delta(delta_kind::LOG, 8, 0, b"abc"), 0);
        p.apply(&delta(delta_kind::LOG, 8, 0, b"abd"), 0);
        assert_eq!(p.stats.log_conflicts.load(Ordering::Relaxed), 1);

        p.apply(&delta(delta_kind::LOG, 7, 0, b"hello world!?"), 1);
        let body = only(&dumped(&p).1, 7);
        assert_eq!((body[10], &body[36..]), (0, &b"snaphello world!?"[..]), "whole again");
        // Truncated: the bytes before offset 6 go; a record repeating them
        // adds only what is past them.
        p.apply(&delta(delta_kind::TRIM, 7, 6, b""), 1);
        p.apply(&delta(delta_kind::LOG, 7, 12, b"?! more"), 1);
        let body = only(&dumped(&p).1, 7);
        assert_eq!(&body[20..28], &6u64.to_le_bytes());
        assert_eq!(&body[36..], b"snapworld!?! more");
        // A gap, then a trim past everything held: whole again from there.
        p.apply(&delta(delta_kind::LOG, 7, 100, b"x"), 1);
        p.apply(&delta(delta_kind::TRIM, 7, 200, b""), 1);
        p.apply(&delta(delta_kind::LOG, 7, 200, b"y"), 1);
        let body = only(&dumped(&p).1, 7);
        assert_eq!((body[10], &body[36..]), (0, &b"snapy"[..]));
        p.apply(&delta(delta_kind::DELETE, 7, 9, b""), 1);
        p.apply(&delta(delta_kind::DELETE, 8, 9, b""), 1);
        assert_eq!(dumped(&p).0, r#"{"bytes":0,"protected":0}"#);
        assert_eq!(p.stats.log_bytes.load(Ordering::Relaxed), 0);
    }
}
