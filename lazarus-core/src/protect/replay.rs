//! Bringing a restarted server to where the old one was (issue 21). The
//! firewall clears the old server's lingering socket, opens a connection in
//! the client's name (its ISN and SYN options), sends the logged client
//! bytes as a TCP sender (the server's window respected, losses sent again),
//! and reads the output the server regenerates up to what the client already
//! has, checking it against the digest and acknowledging it so the server
//! does not stall. Then the connection is spliced (`Splice`).
//!
//! No I/O here: the caller sends what `poll` returns, feeds the server's
//! segments to `on_segment`, and gives the time in nanoseconds.

use super::log::{digest_append, Acked, Checked};
use super::segment::{Segment, SynOptions};
use super::splice::{ServerSide, Splice, SpliceError};
use crate::parse::{tcp_flags, TcpHdr};
use thiserror::Error;

/// What the firewall knows of the connection when the old server died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuild {
    pub client_isn: u32,
    pub syn: SynOptions,
    /// The newest TSval the client sent; None when the connection has no
    /// timestamps.
    pub client_tsval: Option<u32>,
    pub old: ServerSide,
    /// The old server's last acknowledgment (its next expected byte): an
    /// RST there clears a socket it left behind (RFC 5961 §3.2).
    pub old_server_acked: u32,
    /// The client's last acknowledgment: it holds the old server's output
    /// before this, which the new server's must match and is not resent.
    pub client_acked: u32,
    /// What the digest of the old server's output vouches for (up to
    /// `client_acked` at most).
    pub checked: Checked,
    /// The client half-closed: its FIN follows the log.
    pub client_fin: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReplayError {
    #[error(
        "the service refused the replayed connection (RST): it is not back yet; try again later"
    )]
    Refused,
    #[error("the restarted server reset the replayed connection: reset both sides")]
    Reset,
    #[error("the restarted server did not answer the replay: reset both sides")]
    NoAnswer,
    #[error("the service did not answer the replayed SYN: it is not back yet; try again later")]
    Unanswered,
    #[error("the restarted server's output differs from what the client already has (the service is not deterministic): reset both sides")]
    Diverged,
    #[error(
        "the client's acknowledgment and the digest disagree: the rebuild record is inconsistent"
    )]
    Inconsistent,
    #[error(transparent)]
    Splice(#[from] SpliceError),
}

/// The first retransmission timeout of the SYN (RFC 6298 §2.1).
const SYN_RTO_NS: u64 = 1_000_000_000;
/// Of data: Linux's lowest, the replay's RTT being a LAN's.
const DATA_RTO_NS: u64 = 200_000_000;
const SYN_TRIES: u32 = 4;
const DATA_TRIES: u32 = 8;
/// The replay's own segment size; the server's MSS may lower it.
const SEGMENT_MAX: usize = 1400;
/// The window the replay advertises (unscaled): it reads everything the
/// server sends up to the splice at once.
const WINDOW: u16 = u16::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The lingering socket's reset is to be sent at this sequence number.
    Clear(u32),
    Connect,
    Replay,
    Done,
    Failed(ReplayError),
}

pub struct Replay {
    r: Rebuild,
    /// The logged bytes to send, from the client's ISN + 1.
    log_len: usize,
    phase: Phase,
    splice: Option<Splice>,
    /// The new server's window scale (when both sides scale).
    shift: u8,
    mss: usize,
    snd_una: u32,
    snd_nxt: u32,
    snd_max: u32,
    snd_wnd: u32,
    rcv_nxt: u32,
    /// The new server's output is checked up to here and read up to
    /// `discard_end`, where the client's own acknowledgment is.
    /// The parts of the output checked against the digest.
    checks: [Check; 2],
    discard_end: u32,
    ts_recent: u32,
    ack_due: bool,
    rto: u64,
    /// When the next timeout fires; 0 when none is armed.
    deadline: u64,
    tries: u32,
}

impl Replay {
    /// A replay of `log_len` logged bytes for the connection `r` describes.
    pub fn new(r: Rebuild, log_len: usize) -> Result<Replay, ReplayError> {
        let first = r.old.isn.wrapping_add(1);
        let acked = r.client_acked.wrapping_sub(first);
        let c = r.checked;
        let at = |seq: u32| seq.wrapping_sub(first);
        let head = c.head.unwrap_or(Acked { end: first, digest: 0 });
        // The first part within what the client acknowledged.
        if at(head.end) > acked || at(head.end) > at(c.from) || acked > i32::MAX as u32 {
            return Err(ReplayError::Inconsistent);
        }
        // A second part the client has not acknowledged to its end (it
        // began past a gap, at bytes the client has not all taken) is left
        // unchecked: the output is discarded only up to the client's
        // acknowledgment.
        let whole = at(c.from) <= at(c.acked.end) && at(c.acked.end) <= acked;
        let (from, tail) =
            if whole { (c.from, c.acked) } else { (head.end, Acked { end: head.end, digest: 0 }) };
        let checks = [
            Check { from: 0, end: at(head.end), want: head.digest, hash: 0 },
            Check { from: at(from), end: at(tail.end), want: tail.digest, hash: 0 },
        ];
        let start = r.client_isn.wrapping_add(1);
        Ok(Replay {
            r,
            log_len,
            phase: Phase::Clear(r.old_server_acked),
            splice: None,
            shift: 0,
            mss: SEGMENT_MAX,
            snd_una: start,
            snd_nxt: start,
            snd_max: start,
            snd_wnd: 0,
            rcv_nxt: 0,
            checks,
            discard_end: acked,
            ts_recent: 0,
            ack_due: false,
            rto: SYN_RTO_NS,
            deadline: 0,
            tries: 0,
        })
    }

    /// The splice, once the server is where the old one was.
    pub fn splice(&self) -> Option<Splice> {
        self.splice.filter(|_| self.phase == Phase::Done)
    }

    /// The new server's window, in the units of `old_wscale` (what the
    /// client applies to the window field).
    pub fn server_window(&self, old_wscale: Option<u8>) -> u16 {
        (self.snd_wnd >> old_wscale.unwrap_or(0).min(14)).min(u32::from(u16::MAX)) as u16
    }

    /// The rewrite from the new server to the client's view, known from
    /// the new server's SYN-ACK on (the splice once the replay is done).
    pub fn mapping(&self) -> Option<Splice> {
        self.splice
    }

    /// Whether the replay is over: spliced, only the new server's
    /// handshake still answered if it comes again.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Why the replay failed, if it did.
    pub fn failed(&self) -> Option<ReplayError> {
        match self.phase {
            Phase::Failed(e) => Some(e),
            _ => None,
        }
    }

    fn log_end(&self) -> u32 {
        self.r.client_isn.wrapping_add(1).wrapping_add(self.log_len as u32)
    }

    /// Past everything the replay sends: the log, and the client's FIN.
    fn send_end(&self) -> u32 {
        self.log_end().wrapping_add(u32::from(self.r.client_fin))
    }

    /// The client half-closed while the replay ran: its FIN is replayed
    /// after the log.
    pub fn client_fin(&mut self) {
        self.r.client_fin = true;
    }

    /// The client's FIN, at the log's end.
    fn fin(&mut self) -> Segment {
        let seq = self.log_end();
        self.sent_to(seq.wrapping_add(1));
        self.segment(seq, tcp_flags::FIN | tcp_flags::ACK, 0..0)
    }

    /// What was sent now ends before `end`: the next to send, and the
    /// furthest sent.
    fn sent_to(&mut self, end: u32) {
        self.snd_nxt = end;
        if (self.snd_nxt.wrapping_sub(self.snd_max) as i32) > 0 {
            self.snd_max = self.snd_nxt;
        }
        self.ack_due = false;
    }

    fn ts(&self, ecr: u32) -> Option<(u32, u32)> {
        self.r.client_tsval.map(|v| (v, ecr))
    }

    fn segment(&self, seq: u32, flags: u8, payload: std::ops::Range<usize>) -> Segment {
        Segment {
            seq,
            ack: self.rcv_nxt,
            flags,
            window: WINDOW,
            syn: None,
            ts: self.ts(self.ts_recent),
            payload,
        }
    }

    fn fail<T>(&mut self, e: ReplayError) -> Result<T, ReplayError> {
        self.phase = Phase::Failed(e);
        Err(e)
    }

    /// The next segment to send at `now`, if any; call until None.
    pub fn poll(&mut self, now: u64) -> Option<Segment> {
        match self.phase {
            Phase::Clear(seq) => {
                self.phase = Phase::Connect;
                self.deadline = now;
                Some(Segment::reset(seq))
            }
            Phase::Connect if now >= self.deadline => {
                if self.tries == SYN_TRIES {
                    self.phase = Phase::Failed(ReplayError::Unanswered);
                    return None;
                }
                self.tries += 1;
                self.deadline = now + (SYN_RTO_NS << (self.tries - 1));
                Some(Segment {
                    seq: self.r.client_isn,
                    ack: 0,
                    flags: tcp_flags::SYN,
                    window: WINDOW,
                    syn: Some(self.r.syn),
                    ts: self.ts(0),
                    payload: 0..0,
                })
            }
            Phase::Replay => self.poll_replay(now),
            Phase::Done if self.ack_due => {
                self.ack_due = false;
                Some(self.segment(self.snd_nxt, tcp_flags::ACK, 0..0))
            }
            _ => None,
        }
    }

    fn poll_replay(&mut self, now: u64) -> Option<Segment> {
        let outstanding = self.snd_una != self.snd_max;
        let end = self.log_end();
        if self.deadline != 0 && now >= self.deadline {
            if self.tries == DATA_TRIES {
                self.phase = Phase::Failed(ReplayError::NoAnswer);
                return None;
            }
            self.tries += 1;
            self.rto = self.rto.saturating_mul(2);
            self.deadline = now + self.rto;
            if outstanding || self.snd_nxt != self.send_end() {
                // Go back to the first byte not acknowledged; with a zero
                // window this sends one byte as a probe.
                self.snd_nxt = self.snd_una;
                if self.snd_nxt == end {
                    return Some(self.fin());
                }
                let len =
                    end.wrapping_sub(self.snd_nxt).min(self.mss as u32).min(self.snd_wnd.max(1));
                return Some(self.data(len));
            }
            // Everything sent and acknowledged, the output the client has
            // not all back: our last ACK may have been lost.
            return Some(self.segment(self.snd_nxt, tcp_flags::ACK, 0..0));
        }
        let sent = self.snd_nxt.wrapping_sub(self.snd_una);
        let room = self.snd_wnd.saturating_sub(sent);
        // Nothing left once past the log (the FIN sent after it).
        let left = (end.wrapping_sub(self.snd_nxt) as i32).max(0) as u32;
        if left != 0 && room != 0 {
            let len = left.min(room).min(self.mss as u32);
            if self.deadline == 0 {
                self.deadline = now + self.rto;
            }
            return Some(self.data(len));
        }
        if left == 0 && self.r.client_fin && self.snd_nxt == end {
            if self.deadline == 0 {
                self.deadline = now + self.rto;
            }
            return Some(self.fin());
        }
        if self.deadline == 0 && (left != 0 || self.rcv_nxt != self.discard_end) {
            // A zero window (the timeout sends the probe), or output still
            // to come back: either way, not waited for forever.
            self.deadline = now + self.rto;
        }
        if self.ack_due {
            self.ack_due = false;
            return Some(self.segment(self.snd_nxt, tcp_flags::ACK, 0..0));
        }
        None
    }

    /// `len` log bytes from `snd_nxt`, which then moves past them.
    fn data(&mut self, len: u32) -> Segment {
        let from = self.snd_nxt.wrapping_sub(self.r.client_isn.wrapping_add(1)) as usize;
        let seq = self.snd_nxt;
        self.sent_to(seq.wrapping_add(len));
        self.segment(seq, tcp_flags::ACK | tcp_flags::PSH, from..from + len as usize)
    }

    /// A segment from the new server, its header `t` and payload. Returns
    /// where the client's part of the payload starts when the segment also
    /// carries output past what the client has: the caller forwards that
    /// part through `mapping` at once (the client expects exactly those
    /// bytes next; holding them back would cost it the server's
    /// retransmission timeout, as the replay does not acknowledge them).
    pub fn on_segment(
        &mut self,
        t: &TcpHdr,
        payload: &[u8],
        now: u64,
    ) -> Result<Option<usize>, ReplayError> {
        match self.phase {
            Phase::Connect => self.on_handshake(t).map(|()| None),
            Phase::Replay => self.on_replay(t, payload, now),
            Phase::Done => {
                // Its SYN-ACK again: our ACK of it was lost.
                self.ack_due |= t.flags & tcp_flags::SYN != 0;
                Ok(None)
            }
            Phase::Failed(e) => Err(e),
            Phase::Clear(_) => Ok(None),
        }
    }

    fn on_handshake(&mut self, t: &TcpHdr) -> Result<(), ReplayError> {
        let syn_ack = tcp_flags::SYN | tcp_flags::ACK;
        let first = self.r.client_isn.wrapping_add(1);
        if t.flags & tcp_flags::RST != 0 {
            if t.flags & tcp_flags::ACK != 0 && t.ack == first {
                return self.fail(ReplayError::Refused);
            }
            return Ok(());
        }
        if t.flags & syn_ack == tcp_flags::ACK {
            // A challenge ACK from the socket the old server left: its
            // acknowledgment is where it expects the reset; the SYN follows.
            self.phase = Phase::Clear(t.ack);
            return Ok(());
        }
        if t.flags & syn_ack != syn_ack || t.ack != first {
            return Ok(());
        }
        let new = ServerSide {
            isn: t.seq,
            wscale: self.r.syn.wscale.and(t.opts.wscale),
            tsval: self.r.client_tsval.and(t.opts.timestamp.map(|(v, _)| v)),
        };
        let splice = match Splice::new(self.r.old, new) {
            Ok(s) => s,
            Err(e) => return self.fail(e.into()),
        };
        let start = t.seq.wrapping_add(1);
        self.splice = Some(splice);
        self.shift = new.wscale.unwrap_or(0);
        if t.opts.mss != 0 {
            self.mss = self.mss.min(usize::from(t.opts.mss));
        }
        self.snd_wnd = u32::from(t.window);
        self.rcv_nxt = start;
        for c in &mut self.checks {
            (c.from, c.end) = (start.wrapping_add(c.from), start.wrapping_add(c.end));
        }
        self.discard_end = start.wrapping_add(self.discard_end);
        self.ts_recent = new.tsval.unwrap_or(0);
        self.ack_due = true;
        self.rto = DATA_RTO_NS;
        self.tries = 0;
        self.deadline = 0;
        self.phase = Phase::Replay;
        self.finish_if_done();
        Ok(())
    }

    fn on_replay(
        &mut self,
        t: &TcpHdr,
        payload: &[u8],
        now: u64,
    ) -> Result<Option<usize>, ReplayError> {
        if t.flags & tcp_flags::RST != 0 {
            return self.fail(ReplayError::Reset);
        }
        if t.flags & tcp_flags::SYN != 0 {
            // Our ACK of its SYN-ACK was lost.
            self.ack_due = true;
            return Ok(None);
        }
        if t.flags & tcp_flags::ACK != 0 {
            let acked = t.ack.wrapping_sub(self.snd_una) as i32;
            let limit = self.snd_max.wrapping_sub(self.snd_una) as i32;
            if acked > 0 && acked <= limit {
                self.snd_una = t.ack;
                if (self.snd_una.wrapping_sub(self.snd_nxt) as i32) > 0 {
                    self.snd_nxt = self.snd_una;
                }
                self.progress(now);
            }
            self.snd_wnd = u32::from(t.window) << self.shift;
        }
        let mut client_part = None;
        if !payload.is_empty() || t.flags & tcp_flags::FIN != 0 {
            client_part = self.read(t, payload, now)?;
        }
        self.finish_if_done();
        Ok(client_part)
    }

    /// Reads server output in order, up to where the client's
    /// acknowledgment is; what lies beyond is the client's to receive after
    /// the splice, so it is neither read nor acknowledged here: returns
    /// where it starts in `payload`, if anywhere.
    fn read(&mut self, t: &TcpHdr, payload: &[u8], now: u64) -> Result<Option<usize>, ReplayError> {
        self.ack_due = true;
        let behind = self.rcv_nxt.wrapping_sub(t.seq) as i32;
        if behind < 0 {
            return Ok(None);
        }
        // Wholly old, its FIN included: a duplicate.
        let Some(fresh) = payload.get(behind as usize..) else { return Ok(None) };
        let room = self.discard_end.wrapping_sub(self.rcv_nxt) as usize;
        if t.flags & tcp_flags::FIN != 0 && fresh.len() < room {
            // The server closes before giving back what the client has.
            return self.fail(ReplayError::Diverged);
        }
        let take = &fresh[..fresh.len().min(room)];
        for i in 0..self.checks.len() {
            if !self.checks[i].read(self.rcv_nxt, take) {
                return self.fail(ReplayError::Diverged);
            }
        }
        self.rcv_nxt = self.rcv_nxt.wrapping_add(take.len() as u32);
        if behind == 0 {
            if let Some((val, _)) = t.opts.timestamp {
                self.ts_recent = val;
            }
        }
        if !take.is_empty() {
            self.progress(now);
        }
        let beyond = fresh.len() > take.len() || t.flags & tcp_flags::FIN != 0;
        Ok(beyond.then_some(behind as usize + take.len()))
    }

    /// The server moved (acknowledged, or sent what was awaited): the
    /// timeout starts over, armed while anything is still awaited.
    fn progress(&mut self, now: u64) {
        self.tries = 0;
        self.rto = DATA_RTO_NS;
        let awaited = self.snd_una != self.snd_max
            || self.snd_una != self.send_end()
            || self.rcv_nxt != self.discard_end;
        self.deadline = if awaited { now + self.rto } else { 0 };
    }

    /// The client sent more while the replay ran; logged, it is replayed
    /// too (the firewall has acknowledged it to the client).
    pub fn log_grew(&mut self, log_len: usize) {
        self.log_len = self.log_len.max(log_len);
    }

    fn finish_if_done(&mut self) {
        if self.phase == Phase::Replay
            && self.snd_una == self.send_end()
            && self.rcv_nxt == self.discard_end
            && self.checks.iter().all(|c| c.end.wrapping_sub(self.rcv_nxt) as i32 <= 0)
        {
            self.phase = Phase::Done;
        }
    }
}

/// One part of the regenerated output that must hash as the old server's
/// did: sequence numbers `from` to `end` (offsets from the first byte
/// until the new server's ISN is known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Check {
    from: u32,
    end: u32,
    want: u32,
    hash: u32,
}

impl Check {
    /// Hashes what of `take` (output from `at` on, in order) falls in the
    /// part; false when the part is complete and differs.
    fn read(&mut self, at: u32, take: &[u8]) -> bool {
        let hi = self.end.wrapping_sub(at) as i32;
        if hi <= 0 {
            return true;
        }
        let lo = (self.from.wrapping_sub(at) as i32).max(0) as usize;
        let hi = (hi as usize).min(take.len());
        if lo >= hi {
            return true;
        }
        self.hash = digest_append(self.hash, &take[lo..hi]);
        hi as u32 != self.end.wrapping_sub(at) || self.hash == self.want
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::TcpOpts;
    use crate::protect::log::digest;

    const ISN: u32 = 1000;
    const OLD: u32 = 50_000;
    const NEW: u32 = 7;
    const MS: u64 = 1_000_000;

    /// The old server had sent `out`, all of it acknowledged by the client.
    fn rebuild(out: &[u8]) -> Rebuild {
        let end = OLD.wrapping_add(1 + out.len() as u32);
        Rebuild {
            client_isn: ISN,
            syn: SynOptions { mss: 1460, wscale: Some(7), sack_perm: true },
            client_tsval: Some(500),
            old: ServerSide { isn: OLD, wscale: Some(7), tsval: Some(9000) },
            old_server_acked: ISN + 1,
            client_acked: end,
            checked: Checked {
                head: None,
                from: OLD.wrapping_add(1),
                acked: Acked { end, digest: digest(out) },
            },
            client_fin: false,
        }
    }

    fn hdr(flags: u8, seq: u32, ack: u32, window: u16) -> TcpHdr {
        TcpHdr {
            seq,
            ack,
            flags,
            window,
            opts: TcpOpts {
                mss: 1460,
                wscale: Some(7),
                sack_perm: true,
                timestamp: Some((1, 500)),
            },
            ..TcpHdr::default()
        }
    }

    /// A replay of `log` bytes through the clearing RST and the SYN to the
    /// SYN-ACK of a server with `window`.
    fn connected(r: Rebuild, log: usize, window: u16) -> Replay {
        let mut p = Replay::new(r, log).unwrap();
        assert_eq!(p.poll(0).unwrap().flags, tcp_flags::RST);
        let syn = p.poll(0).unwrap();
        assert_eq!((syn.flags, syn.seq, syn.syn), (tcp_flags::SYN, ISN, Some(r.syn)));
        assert_eq!(syn.ts, Some((500, 0)));
        let sa = hdr(tcp_flags::SYN | tcp_flags::ACK, NEW, ISN + 1, window);
        p.on_segment(&sa, &[], 0).unwrap();
        p
    }

    fn drain(p: &mut Replay, now: u64) -> Vec<Segment> {
        std::iter::from_fn(|| p.poll(now)).collect()
    }

    #[test]
    fn the_log_is_sent_within_the_servers_window_and_again_on_loss() {
        let mut p = connected(rebuild(b""), 25, 10);
        let sent = drain(&mut p, 0);
        let data: Vec<_> = sent.iter().filter(|s| !s.payload.is_empty()).collect();
        assert_eq!(data.iter().map(|s| s.payload.len()).sum::<usize>(), 10, "{sent:?}");
        assert_eq!(data[0].seq, ISN + 1);
        // Nothing acknowledged: after the timeout, the first byte again.
        assert!(drain(&mut p, 100 * MS).is_empty());
        let again = drain(&mut p, 1000 * MS);
        assert_eq!((again[0].seq, again[0].payload.clone()), (ISN + 1, 0..10));
        // Acknowledged in full with a window of 2 << 7: the rest goes.
        p.on_segment(&hdr(tcp_flags::ACK, NEW + 1, ISN + 11, 2), &[], 0).unwrap();
        let rest = drain(&mut p, 1000 * MS);
        assert_eq!(rest.iter().map(|s| s.payload.len()).sum::<usize>(), 15);
        assert!(p.splice().is_none());
        p.on_segment(&hdr(tcp_flags::ACK, NEW + 1, ISN + 26, 2), &[], 0).unwrap();
        assert!(p.splice().is_some());
    }

    #[test]
    fn a_zero_window_is_probed_one_byte_at_a_time() {
        let mut p = connected(rebuild(b""), 5, 0);
        assert!(drain(&mut p, 0).iter().all(|s| s.payload.is_empty()));
        let probe = drain(&mut p, 500 * MS);
        assert_eq!(probe.len(), 1);
        assert_eq!(probe[0].payload, 0..1);
    }

    #[test]
    fn output_the_client_has_is_checked_and_the_rest_handed_over() {
        let mut p = connected(rebuild(b"hello\n"), 0, 100);
        // "hel" then "lo\nworld": the client's part starts at "world".
        p.on_segment(&hdr(tcp_flags::ACK, NEW + 1, ISN + 1, 100), b"hel", 0).unwrap();
        assert!(p.splice().is_none());
        let at =
            p.on_segment(&hdr(tcp_flags::ACK, NEW + 4, ISN + 1, 100), b"lo\nworld", 0).unwrap();
        assert_eq!(at, Some(3));
        assert!(p.splice().is_some());
        // The ACK the new server gets covers only what the client had.
        let acks = drain(&mut p, 0);
        assert_eq!(acks.last().unwrap().ack, NEW + 7);
    }

    #[test]
    fn other_output_after_the_restart_is_refused() {
        let mut p = connected(rebuild(b"hello\n"), 0, 100);
        let e = p.on_segment(&hdr(tcp_flags::ACK, NEW + 1, ISN + 1, 100), b"HELLO\n", 0);
        assert_eq!(e, Err(ReplayError::Diverged));
        assert_eq!(p.failed(), Some(ReplayError::Diverged));
        let mut p = connected(rebuild(b"hello\n"), 0, 100);
        let fin = hdr(tcp_flags::ACK | tcp_flags::FIN, NEW + 1, ISN + 1, 100);
        assert_eq!(p.on_segment(&fin, b"hel", 0), Err(ReplayError::Diverged));
    }

    #[test]
    fn a_closed_port_refuses_and_silence_gives_up() {
        let mut p = Replay::new(rebuild(b""), 0).unwrap();
        drain(&mut p, 0);
        let rst = hdr(tcp_flags::RST | tcp_flags::ACK, 0, ISN + 1, 0);
        assert_eq!(p.on_segment(&rst, &[], 0), Err(ReplayError::Refused));
        let mut p = Replay::new(rebuild(b""), 0).unwrap();
        let mut syns = 0;
        for s in 0..100 {
            syns +=
                drain(&mut p, s * 1000 * MS).iter().filter(|s| s.flags == tcp_flags::SYN).count();
        }
        assert_eq!((syns, p.failed()), (SYN_TRIES as usize, Some(ReplayError::Unanswered)));
    }

    #[test]
    fn a_challenge_ack_is_answered_with_a_reset_where_it_points() {
        let mut p = Replay::new(rebuild(b""), 0).unwrap();
        drain(&mut p, 0);
        p.on_segment(&hdr(tcp_flags::ACK, 4242, ISN + 77, 100), &[], 0).unwrap();
        let again = drain(&mut p, 0);
        assert_eq!((again[0].flags, again[0].seq), (tcp_flags::RST, ISN + 77));
        assert_eq!(again[1].flags, tcp_flags::SYN);
    }

    #[test]
    fn a_server_without_timestamps_cannot_be_spliced() {
        let mut p = Replay::new(rebuild(b""), 0).unwrap();
        drain(&mut p, 0);
        let mut sa = hdr(tcp_flags::SYN | tcp_flags::ACK, NEW, ISN + 1, 100);
        sa.opts.timestamp = None;
        let e = p.on_segment(&sa, &[], 0);
        assert_eq!(e, Err(ReplayError::Splice(SpliceError::TimestampsDiffer)));
    }

    #[test]
    fn a_digest_past_the_clients_acknowledgment_is_refused_or_left_unchecked() {
        // Its first part: the record is inconsistent.
        let mut r = rebuild(b"abc");
        r.checked.head = Some(Acked { end: r.client_acked.wrapping_add(1), digest: 0 });
        r.checked.from = r.client_acked.wrapping_add(1);
        assert!(matches!(Replay::new(r, 0), Err(ReplayError::Inconsistent)));
        // Its second part, begun past a gap the client has not taken
        // everything before: not checked, the replay goes on.
        let mut r = rebuild(b"abc");
        r.checked.acked.end = r.client_acked.wrapping_add(1);
        assert!(Replay::new(r, 0).is_ok());
    }

    #[test]
    fn a_lost_tail_after_a_partial_ack_is_sent_again() {
        let mut p = connected(rebuild(b""), 3000, 65535);
        drain(&mut p, 0);
        p.on_segment(&hdr(tcp_flags::ACK, NEW + 1, ISN + 1 + 1400, 65535), &[], 0).unwrap();
        let again = drain(&mut p, 1000 * MS);
        assert_eq!(again.first().map(|s| s.seq), Some(ISN + 1 + 1400), "{again:?}");
    }

    #[test]
    fn a_server_that_gives_back_less_is_not_waited_for_forever() {
        let mut p = connected(rebuild(b"hello\n"), 0, 100);
        p.on_segment(&hdr(tcp_flags::ACK, NEW + 1, ISN + 1, 100), b"hel", 0).unwrap();
        for s in 1..400 {
            drain(&mut p, s * 1000 * MS);
        }
        assert_eq!(p.failed(), Some(ReplayError::NoAnswer));
    }
}
