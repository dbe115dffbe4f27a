//! Protected connections in the remote copy (shm_layout::remote_log): what
//! the tracker sends of each one (its head, and only the log bytes Redis
//! does not hold yet), and what a restore or a standby's mirror takes back.

use super::{Entry, Protected};
use hashbrown::HashMap;
use shm_layout::remote::RemoteError;
use shm_layout::remote_log::{ProtectedHead, CHUNK_MAX};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where lineages come from: a keyed hash of a counter, keyed at random per
/// process, so no two logs (of this appliance or another, before a restart
/// or after) draw the same one but by chance.
#[derive(Debug, Default)]
pub struct Lineages {
    keys: std::collections::hash_map::RandomState,
    next: AtomicU64,
}

impl Lineages {
    fn draw(&self) -> u64 {
        loop {
            let l = self.keys.hash_one(self.next.fetch_add(1, Ordering::Relaxed));
            if l != 0 {
                return l;
            }
        }
    }
}

/// What the tracker has sent of one protected connection's log.
#[derive(Debug, Clone)]
pub struct SentLog {
    /// Offsets of the chunks Redis holds (or was sent), in order.
    pub chunks: Vec<u64>,
    /// Where the bytes sent end.
    end: u64,
    lineage: u64,
    /// Send it whole at the next change: a call that carried its chunks
    /// failed, or Redis lost the bucket, or nothing was sent yet.
    pub rewrite: bool,
}

impl Default for SentLog {
    fn default() -> Self {
        SentLog { chunks: Vec::new(), end: 0, lineage: 0, rewrite: true }
    }
}

impl SentLog {
    /// Chunks Redis may hold (found there, or whose removal failed): removed
    /// at the next whole rewrite unless it overwrites them.
    pub fn adopt(&mut self, offsets: impl IntoIterator<Item = u64>) {
        self.chunks.extend(offsets);
        self.chunks.sort_unstable();
        self.chunks.dedup();
        self.rewrite = true;
    }
}

/// One change of a protected connection for the remote copy.
#[derive(Debug, Default)]
pub struct LogChange {
    pub worker: u16,
    pub version: u64,
    pub lineage: u64,
    /// Chunks to write: offset and length, their bytes one after the other
    /// in the caller's buffer.
    pub chunks: Vec<(u64, usize)>,
    /// Chunks to remove: truncated, or superseded by a whole rewrite.
    pub gone: Vec<u64>,
    /// Sent whole again, from its base.
    pub whole: bool,
}

impl Protected {
    /// `id`'s head into `head` and the log bytes Redis lacks into `bytes`
    /// (both cleared first), given what was sent of it; None when no
    /// protected connection has that id.
    pub fn remote_change(
        &self,
        id: u64,
        sent: &mut SentLog,
        head: &mut Vec<u8>,
        bytes: &mut Vec<u8>,
    ) -> Option<LogChange> {
        head.clear();
        bytes.clear();
        let mut conns = self.inner.lock().ok()?;
        let e = conns.get_mut(&id)?;
        if e.lineage == 0 {
            e.lineage = self.lineages.draw();
        }
        let end = e.end();
        ProtectedHead {
            broken: e.unreplayable(),
            record: &e.snapshot,
            base: e.base,
            end,
            lineage: e.lineage,
        }
        .encode(head);
        let mut change = LogChange {
            worker: e.worker,
            version: e.version,
            lineage: e.lineage,
            ..Default::default()
        };
        let chunks = &mut sent.chunks;
        change.whole = sent.rewrite || sent.lineage != e.lineage || sent.end > end;
        if change.whole {
            // Written again from the base; what it does not overwrite goes.
            change.gone = std::mem::take(chunks);
            sent.rewrite = false;
            sent.lineage = e.lineage;
            sent.end = e.base;
        }
        // Chunks wholly before the base were truncated.
        while let Some(&first) = chunks.first() {
            if chunks.get(1).copied().unwrap_or(sent.end) > e.base {
                break;
            }
            change.gone.push(first);
            chunks.remove(0);
        }
        let from = sent.end.max(e.base);
        if end > from {
            chunks.push(from);
            // Each chunk at least twice the next: at most about log2 of the
            // log's length of them, and a byte is sent again only when its
            // chunk grows by half or more. (Not into a chunk that starts
            // before the base: its first bytes are gone; nor past CHUNK_MAX.)
            while let [.., prev, last] = chunks[..] {
                if prev < e.base || last - prev >= 2 * (end - last) || end - prev > CHUNK_MAX as u64
                {
                    break;
                }
                chunks.pop();
                if last != from {
                    change.gone.push(last);
                }
            }
            let at = chunks.pop().expect("a chunk was pushed");
            bytes.extend_from_slice(&e.log[(at - e.base) as usize..]);
            let mut p = at;
            while p < end {
                let len = (end - p).min(CHUNK_MAX as u64);
                chunks.push(p);
                change.chunks.push((p, len as usize));
                p += len;
            }
            // A chunk written again in place is not removed.
            change.gone.retain(|g| !change.chunks.iter().any(|(c, _)| c == g));
        }
        sent.end = end;
        Some(change)
    }

    /// Takes `id`'s head from the remote copy (a reboot's restore, a
    /// standby's mirror), at version 0: another process's clock, so what
    /// this dataplane writes next is newer. The log held is kept from the
    /// head's base if it is of the head's lineage; its chunks follow.
    pub fn put_head(&self, id: u64, worker: u16, payload: &[u8]) -> Result<(), RemoteError> {
        let h = ProtectedHead::parse(payload)?;
        let Ok(mut conns) = self.inner.lock() else { return Ok(()) };
        let e = conns.entry(id).or_default();
        let before = e.log.len();
        if e.lineage != h.lineage || h.base < e.base || h.base > e.end() {
            e.log.clear();
        } else {
            e.log.drain(..(h.base - e.base) as usize);
        }
        e.lineage = h.lineage;
        e.base = h.base;
        e.log.truncate(usize::try_from(h.end - h.base).unwrap_or(usize::MAX));
        e.worker = worker;
        e.version = 0;
        e.snapshot.clear();
        e.snapshot.extend_from_slice(h.record);
        e.broken = h.broken;
        e.copied_end = Some(h.end);
        let st = &self.stats;
        st.log_bytes.fetch_sub(before as u64, Ordering::Relaxed);
        st.log_bytes.fetch_add(e.log.len() as u64, Ordering::Relaxed);
        st.conns.store(conns.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Adds a chunk of `id`'s log of `lineage` from the remote copy (after
    /// its head): the bytes past what is held, up to the head's end. A chunk
    /// of another lineage adds nothing; one past a hole neither, and the
    /// connection is then short of its end, and not replayed.
    pub fn put_chunk(&self, id: u64, (lineage, offset): (u64, u64), chunk: &[u8]) {
        let Ok(mut conns) = self.inner.lock() else { return };
        let Some(e) = conns.get_mut(&id) else { return };
        if let Err(at) = e.remote_chunks.binary_search(&offset) {
            e.remote_chunks.insert(at, offset);
        }
        let (held, end) = (e.end(), e.copied_end.unwrap_or(u64::MAX));
        if lineage != e.lineage
            || offset > held
            || offset.saturating_add(chunk.len() as u64) <= held
        {
            return;
        }
        let from = (held - offset) as usize;
        let upto = usize::try_from(end.saturating_sub(offset)).unwrap_or(usize::MAX);
        let new = &chunk[from..chunk.len().min(upto).max(from)];
        e.log.extend_from_slice(new);
        self.stats.log_bytes.fetch_add(new.len() as u64, Ordering::Relaxed);
    }

    /// A chunk of `id` removed from the remote copy (a mirror follows it).
    pub fn chunk_gone(&self, id: u64, offset: u64) {
        let Ok(mut conns) = self.inner.lock() else { return };
        if let Some(e) = conns.get_mut(&id) {
            e.remote_chunks.retain(|&c| c != offset);
        }
    }

    /// The chunks found in the remote copy, by connection (taken: a new
    /// tracker adopts them once).
    pub fn take_remote_chunks(&self) -> HashMap<u64, Vec<u64>> {
        let Ok(mut conns) = self.inner.lock() else { return HashMap::new() };
        conns
            .iter_mut()
            .filter(|(_, e)| !e.remote_chunks.is_empty())
            .map(|(&id, e)| (id, std::mem::take(&mut e.remote_chunks)))
            .collect()
    }

    /// Forgets `id` (the remote copy no longer holds it).
    pub fn remove(&self, id: u64) {
        let Ok(mut conns) = self.inner.lock() else { return };
        if let Some(e) = conns.remove(&id) {
            self.stats.log_bytes.fetch_sub(e.log.len() as u64, Ordering::Relaxed);
        }
        self.stats.conns.store(conns.len() as u64, Ordering::Relaxed);
    }
}

impl Entry {
    #[cfg(test)]
    fn log_of(&self) -> (u64, &[u8]) {
        (self.base, &self.log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_layout::{delta_kind, module, Delta};

    fn delta(kind: u8, id: u64, version: u64, payload: &[u8]) -> Delta<'_> {
        Delta { seq: 0, conn_id: id, version, module: module::PROTECT, kind, payload }
    }

    /// Sends `id`'s change from `a` into `b` as Redis would hand it on
    /// (head, then chunk); the chunks removed.
    fn carry(a: &Protected, b: &Protected, id: u64, sent: &mut SentLog) -> Vec<u64> {
        let (mut head, mut bytes) = (Vec::new(), Vec::new());
        let c = a.remote_change(id, sent, &mut head, &mut bytes).unwrap();
        b.put_head(id, c.worker, &head).unwrap();
        let mut from = 0;
        for &(at, len) in &c.chunks {
            b.put_chunk(id, (c.lineage, at), &bytes[from..from + len]);
            from += len;
        }
        for &at in &c.gone {
            b.chunk_gone(id, at);
        }
        c.gone
    }

    fn log(p: &Protected, id: u64) -> (u64, Vec<u8>, bool) {
        let conns = p.inner.lock().unwrap();
        let e = &conns[&id];
        let (base, log) = e.log_of();
        (base, log.to_vec(), e.unreplayable())
    }

    #[test]
    fn only_new_bytes_travel_and_a_trim_drops_whole_chunks() {
        let (a, b) = (Protected::default(), Protected::default());
        let mut sent = SentLog::default();
        let (mut head, mut bytes) = (Vec::new(), Vec::new());
        let first = [b'x'; 40];
        a.apply(&delta(delta_kind::LOG, 7, 0, &first), 2);
        a.apply(&delta(delta_kind::PORTION, 7, 500, b"snap"), 2);
        assert_eq!(carry(&a, &b, 7, &mut sent), Vec::<u64>::new());
        a.apply(&delta(delta_kind::LOG, 7, 40, b"INCR k\r\n"), 2);
        let c = a.remote_change(7, &mut sent.clone(), &mut head, &mut bytes).unwrap();
        assert_eq!(
            (&c.chunks[..], &bytes[..]),
            (&[(40, 8)][..], &b"INCR k\r\n"[..]),
            "only the new bytes"
        );
        carry(&a, &b, 7, &mut sent);
        assert_eq!(sent.chunks, [0, 40]);
        // Nothing new: the head alone.
        let c = a.remote_change(7, &mut sent.clone(), &mut head, &mut bytes).unwrap();
        assert_eq!((c.chunks.len(), c.gone.len()), (0, 0));
        // A chunk over half the one before merges into it: sent again from
        // there, in place.
        a.apply(&delta(delta_kind::LOG, 7, 48, b"GET k\r\n"), 2);
        let c = a.remote_change(7, &mut sent, &mut head, &mut bytes).unwrap();
        assert_eq!(
            (&c.chunks[..], c.gone, &bytes[..]),
            (&[(40, 15)][..], vec![], &b"INCR k\r\nGET k\r\n"[..])
        );
        b.put_head(7, 2, &head).unwrap();
        b.put_chunk(7, (c.lineage, 40), &bytes);
        let mut whole = first.to_vec();
        whole.extend_from_slice(b"INCR k\r\nGET k\r\n");
        assert_eq!(log(&b, 7), (0, whole, false));
        assert_eq!(sent.chunks, [0, 40]);
        // Truncated inside the second chunk: the first goes, the second
        // stays (its tail is the log).
        a.apply(&delta(delta_kind::TRIM, 7, 45, b""), 2);
        assert_eq!(carry(&a, &b, 7, &mut sent), [0]);
        assert_eq!(log(&b, 7), (45, b"k\r\nGET k\r\n".to_vec(), false));
        a.apply(&delta(delta_kind::LOG, 7, 55, b"GET k\r\n"), 2);
        assert_eq!(carry(&a, &b, 7, &mut sent), Vec::<u64>::new(), "not merged into a cut chunk");
        assert_eq!(sent.chunks, [40, 55]);
        // Truncated to its end: every chunk goes, none is written.
        a.apply(&delta(delta_kind::TRIM, 7, 62, b""), 2);
        assert_eq!(carry(&a, &b, 7, &mut sent), [40, 55]);
        assert_eq!(log(&b, 7), (62, Vec::new(), false));
        // A failed call: sent whole again.
        a.apply(&delta(delta_kind::LOG, 7, 62, b"GET k\r\n"), 2);
        carry(&a, &b, 7, &mut sent);
        sent.rewrite = true;
        a.apply(&delta(delta_kind::LOG, 7, 69, b"GET k\r\n"), 2);
        let gone = carry(&a, &b, 7, &mut sent);
        assert_eq!(gone, Vec::<u64>::new(), "the one at the base is overwritten");
        assert_eq!(log(&b, 7), (62, b"GET k\r\nGET k\r\n".to_vec(), false));
        assert_eq!(sent.chunks, [62]);
    }

    /// A log that grows a few bytes at a time: few chunks, and each byte
    /// sent a few times at most.
    #[test]
    fn a_trickling_log_keeps_few_chunks() {
        let a = Protected::default();
        let mut sent = SentLog::default();
        let (mut head, mut bytes) = (Vec::new(), Vec::new());
        let mut total = 0;
        let mut most = 0;
        for i in 0..20_000u64 {
            a.apply(&delta(delta_kind::LOG, 7, i * 5, b"INCR\n"), 0);
            a.remote_change(7, &mut sent, &mut head, &mut bytes).unwrap();
            total += bytes.len();
            most = most.max(sent.chunks.len());
        }
        assert!(most <= 20, "{most} chunks");
        assert!(total <= 100_000 * 20, "{total} bytes sent for 100000");
    }

    #[test]
    fn a_missing_chunk_makes_the_copy_unreplayable() {
        let (a, b) = (Protected::default(), Protected::default());
        let mut sent = SentLog::default();
        let first = [b'x'; 20];
        a.apply(&delta(delta_kind::LOG, 7, 0, &first), 0);
        carry(&a, &b, 7, &mut sent);
        a.apply(&delta(delta_kind::LOG, 7, 20, b"two four"), 0);
        let (mut head, mut bytes) = (Vec::new(), Vec::new());
        a.remote_change(7, &mut sent, &mut head, &mut bytes).unwrap();
        // Lost on the way: the next change carries only what follows.
        a.apply(&delta(delta_kind::LOG, 7, 28, b"abc"), 0);
        carry(&a, &b, 7, &mut sent);
        assert_eq!(log(&b, 7), (0, first.to_vec(), true));
        // Chunks read back in any order and repeated add each byte once.
        let c = Protected::default();
        let l = a.remote_change(7, &mut SentLog::default(), &mut head, &mut bytes).unwrap().lineage;
        c.put_head(7, 0, &head).unwrap();
        c.put_chunk(7, (l, 20), b"two fourabc");
        c.put_chunk(7, (l, 0), &first);
        c.put_chunk(7, (l, 20), b"two fourabc");
        let mut longer = first.to_vec();
        longer.extend_from_slice(b"two fourabc and more");
        c.put_chunk(7, (l, 0), &longer);
        assert_eq!(log(&c, 7), (0, longer[..31].to_vec(), false));
        assert_eq!(c.stats.log_bytes.load(Ordering::Relaxed), 31);
        c.remove(7);
        assert_eq!(c.stats.log_bytes.load(Ordering::Relaxed), 0);
    }

    /// A log rebuilt after a lost record starts a new lineage: a mirror
    /// that held the old bytes takes the new ones, not a mix.
    #[test]
    fn a_rebuilt_log_replaces_the_mirrored_one() {
        let (a, b) = (Protected::default(), Protected::default());
        let mut sent = SentLog::default();
        a.apply(&delta(delta_kind::LOG, 7, 0, b"abcd"), 0);
        carry(&a, &b, 7, &mut sent);
        a.apply(&delta(delta_kind::LOG, 7, 0, b"abXd"), 0);
        a.apply(&delta(delta_kind::LOG, 7, 0, b"abXdef"), 0);
        carry(&a, &b, 7, &mut sent);
        assert_eq!(log(&b, 7), (0, b"abXdef".to_vec(), false));
    }

    /// A chunk left in Redis by an earlier connection with the same id (or
    /// an earlier lineage) never lends its bytes to the new log.
    #[test]
    fn a_leaked_chunk_of_another_lineage_is_passed_over() {
        let a = Protected::default();
        a.apply(&delta(delta_kind::LOG, 7, 0, &[b'n'; 110]), 0);
        let (mut head, mut bytes) = (Vec::new(), Vec::new());
        let c = a.remote_change(7, &mut SentLog::default(), &mut head, &mut bytes).unwrap();
        let r = Protected::default();
        r.put_head(7, 0, &head).unwrap();
        r.put_chunk(7, (c.lineage, 0), &bytes[..100]);
        r.put_chunk(7, (c.lineage ^ 1, 40), &[b'O'; 160]);
        r.put_chunk(7, (c.lineage, 100), &bytes[100..]);
        assert_eq!(log(&r, 7), (0, vec![b'n'; 110], false));
        // Without the chunk of its own lineage at 100, it is short: broken.
        let r = Protected::default();
        r.put_head(7, 0, &head).unwrap();
        r.put_chunk(7, (c.lineage, 0), &bytes[..100]);
        r.put_chunk(7, (c.lineage ^ 1, 40), &[b'O'; 160]);
        assert!(log(&r, 7).2);
        let mut found = r.take_remote_chunks();
        assert_eq!(found.remove(&7), Some(vec![0, 40]), "both removed by the next active");
    }

    /// No chunk passes CHUNK_MAX: a log sent whole goes in pieces.
    #[test]
    fn a_long_log_goes_in_pieces() {
        let (a, b) = (Protected::default(), Protected::default());
        let long = vec![b'z'; 2 * CHUNK_MAX + 5];
        a.apply(&delta(delta_kind::LOG, 7, 0, &long), 0);
        let mut sent = SentLog::default();
        let (mut head, mut bytes) = (Vec::new(), Vec::new());
        let c = a.remote_change(7, &mut sent.clone(), &mut head, &mut bytes).unwrap();
        let m = CHUNK_MAX as u64;
        assert_eq!(c.chunks, [(0, CHUNK_MAX), (m, CHUNK_MAX), (2 * m, 5)]);
        carry(&a, &b, 7, &mut sent);
        a.apply(&delta(delta_kind::LOG, 7, 2 * m + 5, b"tail"), 0);
        let c = a.remote_change(7, &mut sent.clone(), &mut head, &mut bytes).unwrap();
        assert_eq!((c.chunks, c.gone), (vec![(2 * m, 9)], vec![]), "merged into the short piece");
        carry(&a, &b, 7, &mut sent);
        assert_eq!(log(&b, 7).1.len(), long.len() + 4);
    }
}
