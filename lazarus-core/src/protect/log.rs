//! What a protected connection keeps so a restarted server can be brought
//! to where the old one was: the client's bytes in sequence order, once
//! (`ClientLog`), and a digest of the server's output the client has
//! acknowledged (`AckedDigest`), against which the regenerated output is
//! checked before it is discarded.

use allocator_api2::alloc::{Allocator, Global};
use allocator_api2::vec::Vec;

/// Where a service's client logs take their memory. The heap by default;
/// the dataplane gives each service address space reserved at start, a
/// log's bound for each of its connections, where a log grows in place
/// (`dataplane::dpdk::ReservedLogs`): no copy as it grows, and no
/// allocation on the packet path.
#[derive(Clone, Copy)]
pub struct LogMemory(pub &'static (dyn Allocator + Sync));

static HEAP: Global = Global;

impl LogMemory {
    /// The global heap.
    pub const HEAP: LogMemory = LogMemory(&HEAP);
}

impl Default for LogMemory {
    fn default() -> LogMemory {
        LogMemory::HEAP
    }
}

impl std::fmt::Debug for LogMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self == &LogMemory::HEAP {
            "LogMemory(heap)"
        } else {
            "LogMemory(reserved)"
        })
    }
}

impl PartialEq for LogMemory {
    fn eq(&self, other: &LogMemory) -> bool {
        std::ptr::addr_eq(self.0, other.0)
    }
}

impl Eq for LogMemory {}

/// What became of a client segment's payload offered to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    /// This many bytes were new and are now in the log (a retransmission
    /// that overlaps the end adds only its tail).
    Appended(usize),
    /// Everything in it is logged already: a retransmission.
    Duplicate,
    /// It starts past the log's end: a segment before it was lost on the
    /// way to the firewall. Not logged, so it must not be forwarded either
    /// (the server could acknowledge bytes no log holds); drop and count
    /// it, and the client sends it again.
    Gap,
    /// Logging it would pass the connection's bound (or the log's memory
    /// could not grow: none is left where the service's logs live):
    /// protection ends here.
    Bound,
    /// It covers logged bytes with other bytes: forwarded, the server could
    /// take bytes no log holds. Drop it.
    Conflict,
}

/// The least a log takes when it first holds a byte.
const MIN_CAPACITY: usize = 512;

/// The client→server byte stream of one connection, from the first byte
/// after the client's SYN, or from where it was last truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLog {
    /// The sequence number of the first byte held.
    start: u32,
    /// Bytes of the stream before the first held (truncated): the held
    /// bytes' offset in the whole stream, which checkpointd's records use.
    base: u64,
    bytes: Vec<u8, &'static (dyn Allocator + Sync)>,
    bound: usize,
}

impl ClientLog {
    /// A log for the connection whose client chose `client_isn`, holding at
    /// most `bound` bytes. It grows with the stream, so a connection that
    /// never sends costs nothing.
    pub fn new(client_isn: u32, bound: usize, memory: LogMemory) -> ClientLog {
        ClientLog {
            start: client_isn.wrapping_add(1),
            base: 0,
            bytes: Vec::new_in(memory.0),
            bound,
        }
    }

    /// The log whose first held byte is at `start` and at offset `base` of
    /// the stream, holding `bytes` already (rebuilt from checkpointd's
    /// copy), or None when they pass `bound` (or find no memory).
    pub fn restored(
        start: u32,
        base: u64,
        bound: usize,
        bytes: &[u8],
        memory: LogMemory,
    ) -> Option<ClientLog> {
        let mut log = ClientLog::new(start.wrapping_sub(1), bound, memory);
        log.base = base;
        (bytes.len() <= bound && log.bytes.try_reserve_exact(bytes.len()).is_ok()).then(|| {
            log.append(bytes);
            log
        })
    }

    /// The sequence number after the last logged byte.
    pub fn end(&self) -> u32 {
        self.start.wrapping_add(self.bytes.len() as u32)
    }

    /// The sequence number of the first byte held.
    pub fn start(&self) -> u32 {
        self.start
    }

    /// The stream offset of the first byte held.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The stream offset after the last byte held.
    pub fn end_offset(&self) -> u64 {
        self.base + self.bytes.len() as u64
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Bytes of memory the log holds (what it grew to, kept for the next
    /// request after a truncation).
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Forgets every byte held: the log starts again at its end. The
    /// memory is kept, so a request/response service's log stops growing
    /// once it has held its largest request.
    pub fn truncate_all(&mut self) {
        self.start = self.end();
        self.base = self.end_offset();
        self.bytes.clear();
    }

    /// Offers the payload of a client segment that starts at `seq`.
    pub fn record(&mut self, seq: u32, payload: &[u8]) -> Logged {
        let end = self.end();
        // Serial arithmetic (RFC 1982): how far the segment starts before
        // the end; negative means after it.
        let behind = end.wrapping_sub(seq) as i32;
        if behind < 0 {
            return Logged::Gap;
        }
        let behind = behind as usize;
        // What it repeats of the log must be what was logged: payload byte
        // i sits at log byte len - behind + i (a segment that starts before
        // the log, as at a SYN's sequence number, repeats less).
        let (from, to) = (behind.saturating_sub(self.bytes.len()), behind.min(payload.len()));
        if from < to {
            let at = self.bytes.len() + from - behind;
            if payload[from..to] != self.bytes[at..at + (to - from)] {
                return Logged::Conflict;
            }
        }
        if payload.len() <= behind {
            return Logged::Duplicate;
        }
        let new = &payload[behind..];
        let len = self.bytes.len() + new.len();
        if len > self.bound {
            return Logged::Bound;
        }
        if len > self.bytes.capacity() {
            // Doubling, never past the bound (reserved memory holds no more).
            let want = (self.bytes.capacity() * 2).max(MIN_CAPACITY).min(self.bound).max(len);
            if self.bytes.try_reserve_exact(want - self.bytes.len()).is_err() {
                return Logged::Bound;
            }
        }
        self.append(new);
        Logged::Appended(new.len())
    }

    /// `extend_from_slice` copies this Vec's bytes one at a time; a fill
    /// and a copy are each one pass of wide stores.
    fn append(&mut self, bytes: &[u8]) {
        let at = self.bytes.len();
        self.bytes.resize(at + bytes.len(), 0);
        self.bytes[at..].copy_from_slice(bytes);
    }
}

/// A digest of the server's output, in sequence order, up to the last point
/// where the client had acknowledged everything the server had sent. The
/// bytes between that point and the client's acknowledgment are discarded
/// unchecked on replay; at a request/response service the point is every
/// answer's end. CRC-32C: it resumes from its value alone, so the digest
/// travels in a checkpoint and carries on after a restart.
///
/// A segment after a gap (lost on its way to the firewall, or output the
/// firewall did not see: a restart from a snapshot a little old) cannot be
/// hashed in order. The digest keeps what was acknowledged before the
/// first gap (`Checked::head`) and starts again at the segment past it;
/// the bytes between go unchecked. A later gap starts the second part
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckedDigest {
    head: Option<Acked>,
    /// Where the running part starts.
    from: u32,
    running: u32,
    /// The sequence number after the last byte hashed.
    running_end: u32,
    /// The running part up to the client's last quiet acknowledgment.
    acked: Acked,
}

/// The server's output up to `end` (its sequence space) hashes to `digest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    pub end: u32,
    pub digest: u32,
}

/// What a replay can check the regenerated output against: from the first
/// byte to `head.end` (when a gap cut the digest), and from `from` to
/// `acked.end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub head: Option<Acked>,
    pub from: u32,
    pub acked: Acked,
}

impl AckedDigest {
    /// The digest for the server whose ISN is `server_isn`: nothing yet.
    pub fn new(server_isn: u32) -> AckedDigest {
        let start = server_isn.wrapping_add(1);
        AckedDigest {
            head: None,
            from: start,
            running: 0,
            running_end: start,
            acked: Acked { end: start, digest: 0 },
        }
    }

    /// A digest as `checked` and `running` gave it (a checkpoint).
    pub fn from_parts(checked: Checked, running: Acked) -> AckedDigest {
        AckedDigest {
            head: checked.head,
            from: checked.from,
            running: running.digest,
            running_end: running.end,
            acked: checked.acked,
        }
    }

    /// What has been hashed so far in the running part, acknowledged or not.
    pub fn running(&self) -> Acked {
        Acked { end: self.running_end, digest: self.running }
    }

    /// A server segment's payload at `seq`, in the client's view.
    pub fn server_data(&mut self, seq: u32, payload: &[u8]) {
        let behind = self.running_end.wrapping_sub(seq) as i32;
        if behind < 0 {
            if payload.is_empty() {
                return;
            }
            // A gap: what was vouched for before it is kept.
            if self.head.is_none() {
                self.head = Some(self.acked);
            }
            self.from = seq;
            self.running = 0;
            self.running_end = seq;
            self.acked = Acked { end: seq, digest: 0 };
            return self.server_data(seq, payload);
        }
        if behind as usize >= payload.len() {
            return;
        }
        let new = &payload[behind as usize..];
        self.running = crc32c::crc32c_append(self.running, new);
        self.running_end = self.running_end.wrapping_add(new.len() as u32);
    }

    /// The client acknowledged everything before `ack`.
    pub fn client_ack(&mut self, ack: u32) {
        if ack == self.running_end {
            self.acked = Acked { end: ack, digest: self.running };
        }
    }

    /// What the digest vouches for.
    pub fn checked(&self) -> Checked {
        Checked { head: self.head, from: self.from, acked: self.acked }
    }

    /// The running part up to the client's last quiet acknowledgment.
    pub fn acked(&self) -> Acked {
        self.acked
    }
}

/// The digest of `bytes` as `AckedDigest` computes it.
pub fn digest(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// `digest` carried on over `more`.
pub fn digest_append(digest: u32, more: &[u8]) -> u32 {
    crc32c::crc32c_append(digest, more)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn retransmissions_and_overlaps_are_logged_once() {
        let mut log = ClientLog::new(999, 100, LogMemory::HEAP);
        assert_eq!(log.record(1000, b"hello "), Logged::Appended(6));
        assert_eq!(log.record(1000, b"hello "), Logged::Duplicate);
        assert_eq!(log.record(1003, b"lo world"), Logged::Appended(5));
        assert_eq!(log.record(1020, b"late"), Logged::Gap);
        assert_eq!(log.record(1011, b""), Logged::Duplicate);
        assert_eq!(log.bytes(), b"hello world");
        assert_eq!(log.end(), 1011);
    }

    #[test]
    fn a_retransmission_with_other_bytes_is_refused() {
        let mut log = ClientLog::new(999, 100, LogMemory::HEAP);
        assert_eq!(log.record(1000, b"GET /a"), Logged::Appended(6));
        assert_eq!(log.record(1000, b"DEL /b"), Logged::Conflict);
        assert_eq!(log.record(1004, b"/a and more"), Logged::Appended(9));
        assert_eq!(log.record(1004, b"/b and more!"), Logged::Conflict);
        assert_eq!(log.record(998, b"xxGET"), Logged::Duplicate);
        assert_eq!(log.bytes(), b"GET /a and more");
    }

    #[test]
    fn the_bound_stops_logging_and_keeps_what_was_logged() {
        let mut log = ClientLog::new(0, 8, LogMemory::HEAP);
        assert_eq!(log.record(1, b"12345"), Logged::Appended(5));
        assert_eq!(log.record(6, b"6789"), Logged::Bound);
        assert_eq!(log.bytes(), b"12345");
        assert_eq!(log.record(6, b"678"), Logged::Appended(3));
    }

    #[test]
    fn a_truncated_log_goes_on_from_its_end() {
        let mut log = ClientLog::new(99, 8, LogMemory::HEAP);
        assert_eq!(log.record(100, b"GET a\n"), Logged::Appended(6));
        log.truncate_all();
        assert_eq!((log.start(), log.base(), log.bytes()), (106, 6, &b""[..]));
        assert_eq!(log.record(100, b"GET a\n"), Logged::Duplicate, "before the truncation");
        assert_eq!(
            log.record(106, b"GET bb\n"),
            Logged::Appended(7),
            "the bound counts what is held"
        );
        assert_eq!((log.end(), log.end_offset()), (113, 13));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut log = ClientLog::new(u32::MAX - 2, 100, LogMemory::HEAP);
        assert_eq!(log.record(u32::MAX - 1, b"abcdef"), Logged::Appended(6));
        assert_eq!(log.record(2, b"efgh"), Logged::Appended(2));
        assert_eq!(log.bytes(), b"abcdefgh");
        assert_eq!(log.end(), 6);
    }

    #[test]
    fn the_digest_covers_what_the_client_acknowledged_at_a_quiet_point() {
        let mut d = AckedDigest::new(99);
        d.server_data(100, b"one\n");
        d.client_ack(104);
        d.server_data(104, b"two\n");
        // Acknowledged in part: the digest stays at the last quiet point.
        d.client_ack(106);
        assert_eq!(d.acked(), Acked { end: 104, digest: digest(b"one\n") });
        d.server_data(104, b"two\n"); // a retransmission
        d.client_ack(108);
        assert_eq!(d.acked(), Acked { end: 108, digest: digest(b"one\ntwo\n") });
        // After a gap: the part before it kept, the rest hashed from the
        // segment past it.
        d.server_data(120, b"three\n");
        d.client_ack(126);
        let c = d.checked();
        assert_eq!(c.head, Some(Acked { end: 108, digest: digest(b"one\ntwo\n") }));
        assert_eq!((c.from, c.acked), (120, Acked { end: 126, digest: digest(b"three\n") }));
        // A second gap starts the second part again; the head stays.
        d.server_data(200, b"four\n");
        d.client_ack(205);
        assert_eq!(d.checked().head, c.head);
        assert_eq!(d.checked().acked, Acked { end: 205, digest: digest(b"four\n") });
    }

    proptest! {
        /// However the stream is cut, repeated, overlapped and reordered,
        /// the log holds it once and in order: what was appended is a prefix
        /// of the stream, and nothing after a gap is taken.
        #[test]
        fn the_log_is_the_stream_in_order(
            isn in any::<u32>(),
            stream in proptest::collection::vec(any::<u8>(), 0..400),
            cuts in proptest::collection::vec((0usize..400, 0usize..64), 0..60),
        ) {
            let mut log = ClientLog::new(isn, 1 << 20, LogMemory::HEAP);
            let start = isn.wrapping_add(1);
            for (at, len) in cuts {
                let at = at.min(stream.len());
                let end = (at + len).min(stream.len());
                let before = log.bytes().len();
                let r = log.record(start.wrapping_add(at as u32), &stream[at..end]);
                match r {
                    Logged::Appended(n) => {
                        prop_assert!(at <= before && end > before);
                        prop_assert_eq!(n, end - before);
                    }
                    Logged::Duplicate => prop_assert!(end <= before),
                    Logged::Gap => prop_assert!(at > before),
                    Logged::Bound | Logged::Conflict => prop_assert!(false, "{r:?}"),
                }
                prop_assert_eq!(log.bytes(), &stream[..log.bytes().len()]);
            }
        }
    }
}
