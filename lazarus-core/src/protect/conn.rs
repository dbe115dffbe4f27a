//! One protected connection on the wire (issue 21): what the firewall does
//! with each of its segments, from the client's SYN to the splice onto a
//! restarted server.
//!
//! * Up: client bytes are logged before they are forwarded (a segment after
//!   a gap is dropped, so no server can acknowledge bytes no log holds);
//!   the server's output is digested as the client acknowledges it. A
//!   server FIN or RST is held, never forwarded, until the service is said
//!   down (then it was the crash's) or the hold times out (a close: it is
//!   released, rebuilt).
//! * Down: the firewall answers the client for the server: every client
//!   segment (logged) gets an ACK of the log's end with a zero window, and a
//!   keep-alive goes out at an interval, so the client neither times out
//!   nor resets; the dead server's segments are absorbed. Bounded: after
//!   `down_max` both sides are reset.
//! * Replaying: `Replay` rebuilds the connection on the server that came
//!   back; then the splice rewrites every segment both ways, and the
//!   client's window is reopened at once.
//!
//! Every sequence number kept here is in the client's view, so a second
//! crash after a splice replays from the same log onto a third server.
//! No I/O: the caller applies each `Action` and sends what `poll` returns.

use super::log::{AckedDigest, ClientLog, LogMemory, Logged};
use super::replay::{Rebuild, Replay, ReplayError};
use super::segment::{Segment, SynOptions};
use super::splice::{clear_flag, ServerSide, Splice};
use crate::parse::{tcp_flags, TcpHdr};

mod snapshot;
pub use snapshot::{view, SnapshotError, SnapshotView, DOWN_FOR, SNAPSHOT_BYTES};

/// A protected service's settings that each connection applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtectPolicy {
    /// The most client bytes logged for one connection; past it the
    /// connection is no longer protected.
    pub log_bound: usize,
    /// Where its log's bytes live.
    pub log_memory: LogMemory,
    /// How long a server FIN or RST is held waiting for word that the
    /// service is down, before it is released as a close.
    pub hold_ns: u64,
    /// The keep-alive's interval while the server is down.
    pub keepalive_ns: u64,
    /// How long the client is kept waiting for the server before both
    /// sides are reset.
    pub down_max_ns: u64,
    /// A request/response service that keeps no per-connection state
    /// between requests: the log is truncated wherever every client byte
    /// is answered and every answer acknowledged.
    pub truncate: bool,
    /// How long the server must have sent nothing before its answer is
    /// taken as complete (TCP does not say where an answer ends).
    pub truncate_idle_ns: u64,
}

/// What to do with the segment just shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Forward it (rewritten in place when the connection is spliced).
    Forward,
    /// Forward only the part of its payload from this offset on, its
    /// sequence number moved up as much, through the splice.
    ForwardFrom(usize),
    /// Do not forward it: the firewall answers for the other side, or it is
    /// the dead server's.
    Absorb,
    /// Drop it and count why.
    Drop(ProtectDrop),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtectDrop {
    /// Client bytes after a gap, which the log cannot hold in order.
    LogGap,
    /// A retransmission whose bytes differ from those logged: forwarded,
    /// the server could act on bytes no log holds.
    LogConflict,
    /// A segment the splice cannot rewrite (malformed, signed).
    Unspliceable,
}

/// Which way a segment the firewall sends goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toward {
    Client,
    Server,
}

/// How a connection's protection ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The connection closed or was reset by an end.
    Closed,
    /// The log would have passed its bound.
    LogBound,
    /// A close held for the hold time, then released.
    Released,
    /// The server stayed down past `down_max`: both sides reset.
    DownTooLong,
    /// The replay failed: both sides reset.
    Replay(ReplayError),
    /// A segment came that protection cannot take whole (an IP fragment):
    /// the connection goes on unprotected.
    Unfollowable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The client's SYN seen, waiting for the server's SYN-ACK.
    Opening,
    Up,
    Down,
    Replaying,
    Ended(Ended),
}

/// A server FIN or RST held back from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    flags: u8,
    seq: u32,
    since: u64,
    until: u64,
}

pub struct Protected {
    policy: ProtectPolicy,
    phase: Phase,
    client_isn: u32,
    syn: SynOptions,
    /// The client's newest TSval; None without timestamps.
    client_tsval: Option<u32>,
    /// The client's newest acknowledgment (the server's bytes it has).
    client_acked: u32,
    /// The server as the client sees it.
    server: ServerSide,
    /// The sequence number after the server's last byte, as the client sees it.
    server_end: u32,
    /// The server's last acknowledgment, in its own view (the client's
    /// sequence space, which no splice moves).
    server_acked: u32,
    log: ClientLog,
    digest: AckedDigest,
    held: Option<Held>,
    replay: Option<Replay>,
    splice: Option<Splice>,
    /// An answer owed to the client (ACK, zero window) or a window update.
    answer_due: bool,
    window_open: Option<u16>,
    /// An RST owed to the client, and one to the server the replay opened.
    reset_client: bool,
    reset_server: bool,
    next_keepalive: u64,
    down_since: u64,
    /// Times the connection was carried onto a restarted server.
    recoveries: u32,
    /// A replay the service refused is tried again then, this long after
    /// the one before.
    retry_at: Option<u64>,
    retry_in: u64,
    /// The server sent bytes acknowledging every logged client byte: an
    /// answer to the last request (cleared by the next request's bytes).
    answered: bool,
    /// When the server last sent bytes (ns).
    last_server_data: u64,
    /// When the server last sent anything while up (ns), and since when the
    /// client has been retransmitting into its silence: evidence of a
    /// server host lost without a FIN or RST, for a probe to judge.
    last_server_seen: u64,
    silent_since: Option<u64>,
    /// The ISN of the client's SYN (`client_isn` moves with truncations):
    /// a SYN with it is this connection's again.
    syn_isn: u32,
    /// The client half-closed: its FIN sits at the log's end, and a replay
    /// sends it after the log.
    client_fin: bool,
    /// The server's FIN, held, was released to the client as a close.
    server_fin_released: bool,
}

const RETRY_FIRST_NS: u64 = 50_000_000;
/// How long the server must have been silent when the client sends
/// unacknowledged bytes again for it to be evidence: half the least
/// retransmission timeout most stacks use (200 ms), so that the first
/// timeout's retransmission is evidence; a tail-loss probe a few
/// milliseconds after a delayed ACK is not.
const SILENCE_NS: u64 = 100_000_000;
const RETRY_MAX_NS: u64 = 1_000_000_000;

impl Protected {
    /// Protection for the connection a client's SYN `syn` opens.
    pub fn new(policy: ProtectPolicy, syn: &TcpHdr) -> Protected {
        let mut p = Protected::new_blank(
            policy,
            syn.seq,
            ClientLog::new(syn.seq, policy.log_bound, policy.log_memory),
        );
        p.syn = SynOptions {
            mss: syn.opts.mss,
            wscale: syn.opts.wscale,
            sack_perm: syn.opts.sack_perm,
        };
        p.client_tsval = syn.opts.timestamp.map(|(v, _)| v);
        p
    }

    /// Opening, with nothing learnt of either side but the client's ISN.
    fn new_blank(policy: ProtectPolicy, client_isn: u32, log: ClientLog) -> Protected {
        Protected {
            policy,
            phase: Phase::Opening,
            client_isn,
            syn: SynOptions { mss: 0, wscale: None, sack_perm: false },
            client_tsval: None,
            client_acked: 0,
            server: ServerSide { isn: 0, wscale: None, tsval: None },
            server_end: 0,
            server_acked: client_isn.wrapping_add(1),
            log,
            digest: AckedDigest::new(0),
            held: None,
            replay: None,
            splice: None,
            answer_due: false,
            window_open: None,
            reset_client: false,
            reset_server: false,
            next_keepalive: 0,
            down_since: 0,
            recoveries: 0,
            retry_at: None,
            retry_in: 0,
            answered: false,
            last_server_data: 0,
            last_server_seen: 0,
            silent_since: None,
            syn_isn: client_isn,
            client_fin: false,
            server_fin_released: false,
        }
    }

    /// How protection ended, once it has.
    pub fn ended(&self) -> Option<Ended> {
        match self.phase {
            Phase::Ended(e) => Some(e),
            _ => None,
        }
    }

    /// The client's next sequence number: past its log, and its FIN.
    pub fn client_next(&self) -> u32 {
        self.log.end().wrapping_add(u32::from(self.client_fin))
    }

    /// Whether a server FIN or RST is held back from the client: what is
    /// forwarded of its segment goes without it.
    pub fn holds_close(&self) -> bool {
        self.held.is_some()
    }

    /// Whether the client half-closed (its FIN passed while protected),
    /// and whether a held server FIN was released as a close.
    pub fn fins(&self) -> (bool, bool) {
        (self.client_fin, self.server_fin_released)
    }

    /// Whether client bytes still go to its log.
    pub fn is_logging(&self) -> bool {
        matches!(self.phase, Phase::Up | Phase::Down | Phase::Replaying)
    }

    pub fn is_down(&self) -> bool {
        matches!(self.phase, Phase::Down | Phase::Replaying)
    }

    /// The rewrite of the server's segments for the client, once the
    /// connection is being carried onto a restarted server.
    pub fn splice(&self) -> Option<Splice> {
        self.replay.as_ref().and_then(Replay::mapping).or(self.splice)
    }

    /// The ISN of the client's SYN: a SYN with another one is a new
    /// connection.
    pub fn syn_isn(&self) -> u32 {
        self.syn_isn
    }

    /// Still waiting for the server's SYN-ACK.
    pub fn is_opening(&self) -> bool {
        self.phase == Phase::Opening
    }

    /// Times the connection was carried onto a restarted server.
    pub fn recoveries(&self) -> u32 {
        self.recoveries
    }

    /// The logged client bytes (what a replay sends).
    pub fn log(&self) -> &[u8] {
        self.log.bytes()
    }

    /// The log, with where its bytes sit in the client's stream.
    pub fn client_log(&self) -> &ClientLog {
        &self.log
    }

    /// Whether the log can be truncated here: a request/response service,
    /// up, every client byte acknowledged by the server, every server byte
    /// acknowledged by the client and in the digest, nothing held, and
    /// something since the last truncation.
    pub fn truncatable(&self, now: u64) -> bool {
        self.quiet_at(self.client_acked, now)
    }

    /// Whether the client segment `t` opens with a quiet point: its
    /// acknowledgment completes one at the log's end, before its own bytes
    /// (a client that acknowledges an answer with its next request, as
    /// delayed ACKs have it).
    pub fn truncatable_before(&self, t: &TcpHdr, now: u64) -> bool {
        t.flags & (tcp_flags::SYN | tcp_flags::RST | tcp_flags::FIN | tcp_flags::ACK)
            == tcp_flags::ACK
            && t.seq == self.log.end()
            && self.quiet_at(t.ack, now)
    }

    /// A quiet point: the last request answered (server bytes that
    /// acknowledge all of it; a bare ACK is not an answer), the server
    /// silent for `truncate_idle_ns` since (an answer in several segments
    /// is not cut), every client byte acknowledged by the server and every
    /// server byte by the client and in the digest, nothing held.
    fn quiet_at(&self, client_acked: u32, now: u64) -> bool {
        self.policy.truncate
            && self.answered
            && now.saturating_sub(self.last_server_data) >= self.policy.truncate_idle_ns
            && self.phase == Phase::Up
            && self.held.is_none()
            && self.replay.as_ref().is_none_or(Replay::is_done)
            && self.server_acked == self.log.end()
            && client_acked == self.server_end
            && self.digest.running().end == self.server_end
    }

    /// Truncates the log at a quiet point (`truncatable`): the connection
    /// is taken as if it had begun here, both ISNs moved to just before the
    /// next bytes, so a replay opens a new connection at this point and
    /// sends only what came after; the digest starts again with it.
    pub fn truncate(&mut self) {
        self.answered = false;
        self.client_acked = self.server_end;
        self.log.truncate_all();
        self.client_isn = self.log.start().wrapping_sub(1);
        self.server.isn = self.server_end.wrapping_sub(1);
        self.digest = AckedDigest::new(self.server.isn);
    }

    fn end(&mut self, e: Ended) {
        self.phase = Phase::Ended(e);
        self.replay = None;
    }

    /// A segment protection cannot log or rewrite whole (an IP fragment:
    /// its bytes are not all in it), from the client or not, at `seq`.
    /// Where nothing depends on protection (opening, or up, never spliced,
    /// with no crash evidence pending) and the segment starts at its
    /// sender's next byte (as a reset must: a blind one cannot end
    /// protection), protection ends and the segment goes on (true); else it
    /// cannot go on (false: the caller drops it).
    pub fn cannot_follow(&mut self, from_client: bool, seq: u32) -> bool {
        if self.splice.is_some() {
            return false;
        }
        let next = if from_client { self.client_next() } else { self.server_end };
        match self.phase {
            Phase::Ended(_) => true,
            Phase::Opening if from_client && seq == next => {
                self.end(Ended::Unfollowable);
                true
            }
            Phase::Up if seq == next && self.held.is_none() && self.silent_since.is_none() => {
                self.end(Ended::Unfollowable);
                true
            }
            _ => false,
        }
    }

    /// A segment from the client: `t` its header, `tcp` its TCP header and
    /// payload (rewritten in place when the connection is spliced; never
    /// touched, and may be empty, when it is not).
    pub fn from_client(&mut self, t: &TcpHdr, payload: &[u8], tcp: &mut [u8], now: u64) -> Action {
        match self.phase {
            Phase::Opening => return Action::Forward,
            // No longer protected, but a spliced connection is rewritten for
            // the rest of its life.
            Phase::Ended(_) => return self.rewrite_to_server(tcp),
            _ => {}
        }
        if t.flags & tcp_flags::RST != 0 {
            // Only a reset at the exact next byte ends the connection (RFC
            // 5961 §3.2): a blind one must not end its protection.
            // After its FIN, a client whose FIN was not acknowledged may
            // reset at the FIN's own number.
            if t.seq != self.client_next() && !(self.client_fin && t.seq == self.log.end()) {
                return self.answer_for_server().unwrap_or(Action::Forward);
            }
            if self.is_down() {
                self.reset_server = self.splice().is_some();
                self.end(Ended::Closed);
                return Action::Absorb;
            }
            self.end(Ended::Closed);
            return self.rewrite_to_server(tcp);
        }
        if t.flags & tcp_flags::SYN != 0 {
            // A SYN in an established connection draws a challenge ACK
            // (RFC 5961 §4), from the server or, while it is down, from us.
            return self.answer_for_server().unwrap_or(Action::Forward);
        }
        let seg_end = t.seq.wrapping_add(payload.len() as u32);
        if self.client_fin
            && !payload.is_empty()
            && (seg_end.wrapping_sub(self.log.end()) as i32) > 0
        {
            // Bytes past the client's own FIN: no TCP sends them.
            return Action::Drop(ProtectDrop::LogConflict);
        }
        if !payload.is_empty() || t.flags & tcp_flags::FIN != 0 {
            self.note_silence(t, payload.len(), now);
        }
        if !payload.is_empty() {
            match self.log.record(t.seq, payload) {
                Logged::Gap => return Action::Drop(ProtectDrop::LogGap),
                Logged::Conflict => return Action::Drop(ProtectDrop::LogConflict),
                Logged::Bound => {
                    if self.is_down() {
                        self.abort(Ended::LogBound);
                        return Action::Absorb;
                    }
                    self.end(Ended::LogBound);
                    return self.rewrite_to_server(tcp);
                }
                Logged::Appended(_) => {
                    self.answered = false;
                    if let Some(r) = self.replay.as_mut() {
                        r.log_grew(self.log.bytes().len());
                    }
                }
                Logged::Duplicate => {}
            }
        }
        if t.flags & tcp_flags::FIN != 0 {
            // A half-close: the FIN sits at the log's end (after a gap, or
            // inside what was logged, it cannot be the client's), and the
            // server may still answer; a replay sends it after the log.
            if seg_end != self.log.end() {
                let after = (seg_end.wrapping_sub(self.log.end()) as i32) > 0;
                return Action::Drop(if after {
                    ProtectDrop::LogGap
                } else {
                    ProtectDrop::LogConflict
                });
            }
            self.client_fin = true;
            if let Some(r) = self.replay.as_mut() {
                r.client_fin();
            }
        }
        if let (Some((val, _)), Some(_)) = (t.opts.timestamp, self.client_tsval) {
            self.client_tsval = Some(val);
        }
        // An acknowledgment of bytes the server never sent is not believed
        // (RFC 9293 §3.10.7.4).
        let ahead = t.ack.wrapping_sub(self.client_acked) as i32;
        let sent = self.server_end.wrapping_sub(self.client_acked) as i32;
        if t.flags & tcp_flags::ACK != 0 && ahead > 0 && ahead <= sent {
            self.client_acked = t.ack;
            self.digest.client_ack(t.ack);
        }
        match self.phase {
            Phase::Down | Phase::Replaying => {
                // Answered for the server, whether data or a window probe.
                self.answer_due = true;
                Action::Absorb
            }
            _ => self.rewrite_to_server(tcp),
        }
    }

    /// A client segment that sends again bytes the server has not
    /// acknowledged, into the server's silence: its host may be gone
    /// without a word.
    fn note_silence(&mut self, t: &TcpHdr, len: usize, now: u64) {
        let end = t.seq.wrapping_add(len as u32);
        // Its FIN sent again (a half-closed client) counts as its bytes do.
        let fin_again = self.client_fin && t.flags & tcp_flags::FIN != 0 && end == self.log.end();
        let again = (self.log.end().wrapping_sub(t.seq) as i32) > 0 || fin_again;
        let sent_end = end.wrapping_add(u32::from(t.flags & tcp_flags::FIN != 0));
        let unacked = (sent_end.wrapping_sub(self.server_acked) as i32) > 0;
        if self.phase == Phase::Up
            && again
            && unacked
            && self.silent_since.is_none()
            && now.saturating_sub(self.last_server_seen) >= SILENCE_NS
        {
            self.silent_since = Some(now);
        }
    }

    /// While the server is down, a client segment is answered for it.
    fn answer_for_server(&mut self) -> Option<Action> {
        self.is_down().then(|| {
            self.answer_due = true;
            Action::Absorb
        })
    }

    fn rewrite_to_server(&self, tcp: &mut [u8]) -> Action {
        match self.splice.map(|s| s.to_server(tcp)) {
            Some(Err(_)) => Action::Drop(ProtectDrop::Unspliceable),
            _ => Action::Forward,
        }
    }

    /// A segment from the server, as `from_client`.
    pub fn from_server(&mut self, t: &TcpHdr, payload: &[u8], tcp: &mut [u8], now: u64) -> Action {
        match self.phase {
            Phase::Opening => {
                if t.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN | tcp_flags::ACK
                    && t.ack == self.client_isn.wrapping_add(1)
                {
                    self.server = ServerSide {
                        isn: t.seq,
                        wscale: self.syn.wscale.and(t.opts.wscale),
                        tsval: self.client_tsval.and(t.opts.timestamp.map(|(v, _)| v)),
                    };
                    self.server_end = t.seq.wrapping_add(1);
                    self.client_acked = self.server_end;
                    self.digest = AckedDigest::new(t.seq);
                    self.phase = Phase::Up;
                    self.last_server_seen = now;
                }
                Action::Forward
            }
            Phase::Ended(_) => self.rewrite_to_client(tcp, t, payload, now),
            Phase::Down => Action::Absorb,
            Phase::Replaying => self.replaying(t, payload, now),
            Phase::Up => {
                self.last_server_seen = now;
                self.silent_since = None;
                if t.flags & tcp_flags::SYN != 0 {
                    // The new server's SYN-ACK again: the replay owes it an ACK.
                    if let Some(r) = self.replay.as_mut() {
                        let _ = r.on_segment(t, payload, now);
                    }
                    return Action::Absorb;
                }
                if t.flags & (tcp_flags::FIN | tcp_flags::RST) != 0 {
                    let seq = self.splice.map_or(t.seq, |s| s.client_seq(t.seq));
                    self.hold_close(t.flags, seq.wrapping_add(payload.len() as u32), now);
                    if payload.is_empty() || t.flags & tcp_flags::RST != 0 {
                        return Action::Absorb;
                    }
                    // Its data goes on; the FIN is what is held.
                    let a = self.rewrite_to_client(tcp, t, payload, now);
                    clear_flag(tcp, tcp_flags::FIN);
                    return a;
                }
                if self.held.is_some() {
                    // The server sends after its FIN: a close with data
                    // after it cannot be, so it was not a crash's.
                    return Action::Absorb;
                }
                self.rewrite_to_client(tcp, t, payload, now)
            }
        }
    }

    /// Rewrites a server segment for the client, then learns from it what
    /// the client will see.
    fn rewrite_to_client(
        &mut self,
        tcp: &mut [u8],
        t: &TcpHdr,
        payload: &[u8],
        now: u64,
    ) -> Action {
        if let Some(s) = self.splice {
            if s.to_client(tcp).is_err() {
                return Action::Drop(ProtectDrop::Unspliceable);
            }
        }
        if matches!(self.phase, Phase::Ended(_)) {
            return Action::Forward;
        }
        let seq = self.splice.map_or(t.seq, |s| s.client_seq(t.seq));
        self.learn_server(seq, t, payload, self.splice, now);
        Action::Forward
    }

    /// What the client sees of the server: `seq` in its view, `t`'s TSval
    /// through `mapping`.
    fn learn_server(
        &mut self,
        seq: u32,
        t: &TcpHdr,
        payload: &[u8],
        mapping: Option<Splice>,
        now: u64,
    ) {
        if !payload.is_empty() {
            self.last_server_data = now;
            self.answered |= t.flags & tcp_flags::ACK != 0 && t.ack == self.log.end();
        }
        let end = seq.wrapping_add(payload.len() as u32);
        if (end.wrapping_sub(self.server_end) as i32) > 0 {
            self.server_end = end;
        }
        self.digest.server_data(seq, payload);
        if t.flags & tcp_flags::ACK != 0 {
            self.server_acked = t.ack;
        }
        if let (Some((val, _)), Some(last)) = (t.opts.timestamp, self.server.tsval) {
            let seen = mapping.map_or(val, |s| s.client_tsval(val));
            if (seen.wrapping_sub(last) as i32) > 0 {
                self.server.tsval = Some(seen);
            }
        }
    }

    fn replaying(&mut self, t: &TcpHdr, payload: &[u8], now: u64) -> Action {
        let Some(r) = self.replay.as_mut() else { return Action::Absorb };
        match r.on_segment(t, payload, now) {
            Err(ReplayError::Refused) => {
                // Not listening yet (the word came before the server's
                // listen()).
                self.retry_later(now);
                Action::Absorb
            }
            Err(e) => {
                self.abort(Ended::Replay(e));
                Action::Absorb
            }
            Ok(handed) => {
                let mapping = r.mapping();
                if let Some(splice) = r.splice() {
                    // The replay stays, to send the ACKs it still owes.
                    self.window_open = Some(r.server_window(self.server.wscale));
                    self.splice = Some(splice);
                    self.recoveries += 1;
                    self.phase = Phase::Up;
                    self.last_server_seen = now;
                    self.answer_due = false;
                }
                match (handed.and_then(|at| Some((at, payload.get(at..)?))), mapping) {
                    (Some((at, part)), Some(m)) => {
                        let seq = m.client_seq(t.seq.wrapping_add(at as u32));
                        if t.flags & tcp_flags::FIN != 0 {
                            // The new server's close, as any: held (it is
                            // stripped from what goes on).
                            self.hold_close(t.flags, seq.wrapping_add(part.len() as u32), now);
                        }
                        self.learn_server(seq, t, part, Some(m), now);
                        if part.is_empty() {
                            return Action::Absorb;
                        }
                        Action::ForwardFrom(at)
                    }
                    _ => Action::Absorb,
                }
            }
        }
    }

    /// Word that the service is down (the hook): a held FIN or RST was the
    /// crash's, and the client is kept waiting from now on.
    pub fn service_down(&mut self, now: u64) {
        match self.phase {
            Phase::Up => self.down_since = now,
            // Down again before the replay was done: it starts over at the
            // next word that the service is up.
            Phase::Replaying => {}
            _ => return,
        }
        self.held = None;
        self.replay = None;
        self.phase = Phase::Down;
        self.next_keepalive = now;
        (self.retry_at, self.retry_in) = (None, 0);
    }

    /// Holds a server FIN or RST (`flags`) at `seq` in the client's view,
    /// unless one is held already.
    fn hold_close(&mut self, flags: u8, seq: u32, now: u64) {
        if self.held.is_none() {
            self.held = Some(Held { flags, seq, since: now, until: now + self.policy.hold_ns });
        }
    }

    /// Since when there is evidence of a crash a probe of the service
    /// judges: a server FIN or RST held, or the client retransmitting into
    /// the server's silence.
    pub fn evidence_since(&self) -> Option<u64> {
        if self.phase != Phase::Up {
            return None;
        }
        match (self.held.map(|h| h.since), self.silent_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A probe found the service listening after the evidence: a held FIN
    /// or RST was a close, released at the next `poll`; a silence was not
    /// the host's loss (a later retransmission is evidence again).
    pub fn judged_alive(&mut self, now: u64) {
        if let Some(h) = self.held.as_mut() {
            h.until = h.until.min(now);
        }
        self.silent_since = None;
    }

    /// Since when the client has been kept waiting for a service that is
    /// down, with no replay under way (a probe's SYN-ACK starts one).
    pub fn waiting_since(&self) -> Option<u64> {
        (self.phase == Phase::Down).then_some(self.down_since)
    }

    /// Word that the service is back: the replay starts.
    pub fn service_up(&mut self, _now: u64) {
        if self.phase != Phase::Down {
            return;
        }
        let r = Rebuild {
            client_isn: self.client_isn,
            syn: self.syn,
            client_tsval: self.client_tsval,
            old: self.server,
            old_server_acked: self.server_acked,
            client_acked: self.client_acked,
            checked: self.digest.checked(),
            client_fin: self.client_fin,
        };
        match Replay::new(r, self.log.bytes().len()) {
            Ok(r) => {
                self.replay = Some(r);
                self.phase = Phase::Replaying;
            }
            Err(e) => self.abort(Ended::Replay(e)),
        }
    }

    /// Ends protection with an RST to the client, and to the server when
    /// the replay opened a connection to it.
    /// The service is not back yet: the replay is tried again later, each
    /// time twice as late, up to a second; `down_max` still bounds it all.
    fn retry_later(&mut self, now: u64) {
        self.replay = None;
        self.phase = Phase::Down;
        self.retry_in = (self.retry_in * 2).clamp(RETRY_FIRST_NS, RETRY_MAX_NS);
        self.retry_at = Some(now + self.retry_in);
    }

    fn abort(&mut self, why: Ended) {
        self.reset_client = true;
        self.reset_server = self.splice().is_some();
        self.end(why);
    }

    /// The firewall's answer to the client for the server: an ACK of
    /// everything logged, `window` wide, from where the server's output
    /// ends.
    fn answer(&self, window: u16) -> Segment {
        Segment {
            seq: self.server_end,
            ack: self.client_next(),
            flags: tcp_flags::ACK,
            window,
            syn: None,
            ts: self.server.tsval.zip(self.client_tsval),
            payload: 0..0,
        }
    }

    /// The next segment the firewall sends in this connection, if any; call
    /// until None. A segment toward the server takes its payload from `log()`.
    pub fn poll(&mut self, now: u64) -> Option<(Toward, Segment)> {
        if self.reset_server {
            self.reset_server = false;
            return Some((Toward::Server, Segment::reset(self.client_next())));
        }
        if self.reset_client {
            self.reset_client = false;
            // At the client's next expected byte, so that it takes it.
            let mut rst = self.answer(0);
            rst.seq = self.client_acked;
            rst.flags = tcp_flags::RST | tcp_flags::ACK;
            return Some((Toward::Client, rst));
        }
        match self.phase {
            Phase::Up => {
                if let Some(seg) = self.replay.as_mut().and_then(|r| r.poll(now)) {
                    return Some((Toward::Server, seg));
                }
                if let Some(w) = self.window_open.take() {
                    return Some((Toward::Client, self.answer(w)));
                }
                let h = self.held?;
                if now < h.until {
                    return None;
                }
                // Nobody said the service was down: a close, released.
                self.held = None;
                self.server_fin_released = h.flags & tcp_flags::FIN != 0;
                self.end(Ended::Released);
                let mut seg = self.answer(0);
                seg.seq = h.seq;
                seg.flags = h.flags | tcp_flags::ACK;
                seg.ack = self.server_acked;
                seg.window = 0;
                Some((Toward::Client, seg))
            }
            Phase::Down | Phase::Replaying => {
                if now.saturating_sub(self.down_since) >= self.policy.down_max_ns {
                    self.abort(Ended::DownTooLong);
                    return self.poll(now);
                }
                if self.retry_at.is_some_and(|at| now >= at) {
                    self.retry_at = None;
                    self.service_up(now);
                }
                if let Some(r) = self.replay.as_mut() {
                    if let Some(seg) = r.poll(now) {
                        return Some((Toward::Server, seg));
                    }
                    match r.failed() {
                        // Nobody listens yet: kept waiting, as refused.
                        Some(ReplayError::Unanswered) => self.retry_later(now),
                        Some(e) => {
                            self.abort(Ended::Replay(e));
                            return self.poll(now);
                        }
                        None => {}
                    }
                }
                if self.answer_due || now >= self.next_keepalive {
                    self.answer_due = false;
                    self.next_keepalive = now + self.policy.keepalive_ns;
                    return Some((Toward::Client, self.answer(0)));
                }
                None
            }
            Phase::Opening | Phase::Ended(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::tcp;
    use crate::parse::checksum::{verify, RxChecksums};
    use crate::parse::{parse, Parsed, L4};
    use tcp_flags::*;

    const C: [u8; 4] = [10, 0, 0, 2];
    const S: [u8; 4] = [10, 0, 0, 1];
    const MS: u64 = 1_000_000;
    const POLICY: ProtectPolicy = ProtectPolicy {
        log_bound: 16,
        log_memory: LogMemory::HEAP,
        hold_ns: 100 * MS,
        keepalive_ns: 1000 * MS,
        down_max_ns: 5000 * MS,
        truncate: false,
        truncate_idle_ns: 0,
    };

    /// A segment as the firewall sees it: header, payload, and the frame.
    fn seg(
        from_client: bool,
        flags: u8,
        seq: u32,
        ack: u32,
        payload: &[u8],
    ) -> (TcpHdr, Vec<u8>, Vec<u8>) {
        let f = if from_client {
            tcp(C, S, (40000, 7), flags, (seq, ack), payload)
        } else {
            tcp(S, C, (7, 40000), flags, (seq, ack), payload)
        };
        let Ok(Parsed::Ip(p)) = parse(&f) else { panic!() };
        let L4::Tcp(t) = p.l4 else { panic!() };
        (t, payload.to_vec(), f)
    }

    fn client(p: &mut Protected, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Action {
        let (t, pl, mut f) = seg(true, flags, seq, ack, payload);
        p.from_client(&t, &pl, &mut f[34..], 0)
    }

    fn server(
        p: &mut Protected,
        flags: u8,
        seq: u32,
        ack: u32,
        payload: &[u8],
        now: u64,
    ) -> (Action, Vec<u8>) {
        let (t, pl, mut f) = seg(false, flags, seq, ack, payload);
        let a = p.from_server(&t, &pl, &mut f[34..], now);
        (a, f)
    }

    /// An established connection: client ISN 99, server ISN 499.
    fn up() -> Protected {
        let (syn, _, _) = seg(true, SYN, 99, 0, b"");
        let mut p = Protected::new(POLICY, &syn);
        assert_eq!(server(&mut p, SYN | ACK, 499, 100, b"", 0).0, Action::Forward);
        assert_eq!(client(&mut p, ACK, 100, 500, b""), Action::Forward);
        p
    }

    fn drain(p: &mut Protected, now: u64) -> Vec<(Toward, Segment)> {
        std::iter::from_fn(|| p.poll(now)).collect()
    }

    #[test]
    fn a_close_is_held_then_released_when_nobody_says_the_service_is_down() {
        let mut p = up();
        assert_eq!(client(&mut p, ACK | PSH, 100, 500, b"hi\n"), Action::Forward);
        assert_eq!(server(&mut p, ACK | PSH, 500, 103, b"hi\n", 0).0, Action::Forward);
        assert_eq!(server(&mut p, ACK | FIN, 503, 103, b"", 0).0, Action::Absorb);
        assert!(drain(&mut p, 99 * MS).is_empty());
        let out = drain(&mut p, 100 * MS);
        assert_eq!(out.len(), 1);
        let (to, fin) = &out[0];
        assert_eq!((*to, fin.flags, fin.seq, fin.ack), (Toward::Client, FIN | ACK, 503, 103));
        assert_eq!(p.ended(), Some(Ended::Released));
    }

    #[test]
    fn data_with_a_fin_goes_on_and_the_fin_is_held() {
        let mut p = up();
        let (a, f) = server(&mut p, ACK | PSH | FIN, 500, 100, b"bye\n", 0);
        assert_eq!(a, Action::Forward);
        let Ok(Parsed::Ip(pk)) = parse(&f) else { panic!() };
        verify(&f, &pk, RxChecksums::UNKNOWN).expect("checksum kept right");
        let L4::Tcp(t) = pk.l4 else { panic!() };
        assert_eq!(t.flags, ACK | PSH);
        p.service_down(1);
        let out = drain(&mut p, 1);
        assert_eq!(out[0].1.seq, 504, "the answer starts after the data the client had");
    }

    #[test]
    fn while_down_the_client_is_answered_with_a_zero_window_then_reset() {
        let mut p = up();
        p.service_down(0);
        assert!(p.is_down());
        let first = drain(&mut p, 0);
        assert_eq!(first.len(), 1, "a keep-alive at once");
        assert_eq!(client(&mut p, ACK | PSH, 100, 500, b"more\n"), Action::Absorb);
        let out = drain(&mut p, 10 * MS);
        assert_eq!(out.len(), 1);
        let (to, a) = &out[0];
        assert_eq!((*to, a.flags, a.seq, a.ack, a.window), (Toward::Client, ACK, 500, 105, 0));
        assert_eq!(p.log(), b"more\n");
        assert!(drain(&mut p, 500 * MS).is_empty());
        assert_eq!(drain(&mut p, 1010 * MS).len(), 1, "the keep-alive");
        // The dead server's segments are absorbed.
        assert_eq!(server(&mut p, RST, 500, 0, b"", 1100 * MS).0, Action::Absorb);
        let out = drain(&mut p, 5000 * MS);
        assert_eq!(out[0].1.flags, RST | ACK);
        assert_eq!(p.ended(), Some(Ended::DownTooLong));
    }

    #[test]
    fn bytes_after_a_gap_are_dropped_and_the_bound_ends_protection() {
        let mut p = up();
        assert_eq!(client(&mut p, ACK, 110, 500, b"late"), Action::Drop(ProtectDrop::LogGap));
        assert_eq!(p.log(), b"");
        assert_eq!(client(&mut p, ACK, 100, 500, b"0123456789"), Action::Forward);
        assert_eq!(client(&mut p, ACK, 110, 500, b"0123456789"), Action::Forward);
        assert_eq!(p.ended(), Some(Ended::LogBound));
        // Unprotected now: even a gap passes, as without protection.
        assert_eq!(client(&mut p, ACK, 150, 500, b"x"), Action::Forward);
    }

    #[test]
    fn word_of_a_restart_starts_the_replay_toward_the_server() {
        let mut p = up();
        assert_eq!(client(&mut p, ACK | PSH, 100, 500, b"abc"), Action::Forward);
        p.service_down(0);
        p.service_up(0);
        let out = drain(&mut p, 0);
        let to_server: Vec<_> = out.iter().filter(|(t, _)| *t == Toward::Server).collect();
        assert_eq!(to_server[0].1.flags, RST, "the lingering socket cleared first");
        assert_eq!(to_server[1].1.flags, SYN);
        assert_eq!(to_server[1].1.seq, 99);
    }

    fn to_server(out: &[(Toward, Segment)]) -> Vec<Segment> {
        out.iter().filter(|(t, _)| *t == Toward::Server).map(|(_, s)| s.clone()).collect()
    }

    #[test]
    fn bytes_logged_while_replaying_are_replayed_too() {
        let mut p = up();
        assert_eq!(client(&mut p, ACK | PSH, 100, 500, b"abc"), Action::Forward);
        p.service_down(0);
        p.service_up(0);
        drain(&mut p, 0);
        assert_eq!(client(&mut p, ACK | PSH, 103, 500, b"def"), Action::Absorb);
        server(&mut p, SYN | ACK, 7000, 100, b"", 2);
        let sent = to_server(&drain(&mut p, 2));
        assert_eq!(sent.iter().map(|s| s.payload.end).max(), Some(6), "{sent:?}");
        server(&mut p, ACK, 7001, 103, b"", 3);
        assert!(p.is_down(), "not spliced before def is acknowledged");
        server(&mut p, ACK, 7001, 106, b"", 3);
        assert!(!p.is_down() && p.splice().is_some());
    }

    #[test]
    fn a_half_closed_client_is_replayed_with_its_fin() {
        let mut p = up();
        // The client sends its request and half-closes: the FIN passes.
        assert_eq!(client(&mut p, ACK | PSH | FIN, 100, 500, b"abc"), Action::Forward);
        assert_eq!(p.client_next(), 104);
        // Its acknowledgments after the FIN (at the FIN's next number)
        // pass; bytes past its own FIN are no TCP's.
        assert_eq!(client(&mut p, ACK, 104, 500, b""), Action::Forward);
        assert_eq!(
            client(&mut p, ACK | PSH, 104, 500, b"x"),
            Action::Drop(ProtectDrop::LogConflict)
        );
        // The server dies before answering; the replay sends the log, then
        // the FIN, which the new server must acknowledge before the splice.
        p.service_down(0);
        assert_eq!(client(&mut p, ACK | FIN, 103, 500, b""), Action::Absorb, "its FIN again");
        let answers: Vec<_> =
            drain(&mut p, 0).into_iter().filter(|(t, _)| *t == Toward::Client).collect();
        assert!(answers.iter().all(|(_, s)| s.ack == 104), "{answers:?}");
        p.service_up(0);
        drain(&mut p, 0);
        server(&mut p, SYN | ACK, 7000, 100, b"", 2);
        let sent = to_server(&drain(&mut p, 2));
        // The log, then the FIN, and nothing past it.
        let data: Vec<_> = sent.iter().filter(|s| !s.payload.is_empty()).collect();
        assert_eq!(data.len(), 1, "{sent:?}");
        assert_eq!((data[0].seq, data[0].payload.clone()), (100, 0..3));
        let fins: Vec<_> = sent.iter().filter(|s| s.flags & FIN != 0).collect();
        assert_eq!(fins.len(), 1, "{sent:?}");
        assert_eq!(fins[0].seq, 103);
        assert!(sent.iter().all(|s| s.seq <= 104), "{sent:?}");
        server(&mut p, ACK, 7001, 103, b"", 3);
        assert!(p.is_down(), "not spliced before its FIN is acknowledged");
        // Lost: sent again after the timeout.
        let again = to_server(&drain(&mut p, 3 + 200 * MS));
        assert!(again.iter().any(|s| s.flags & FIN != 0 && s.seq == 103), "{again:?}");
        let again = to_server(&drain(&mut p, 3 + 200 * MS));
        assert!(again.is_empty(), "nothing more until the next timeout: {again:?}");
        server(&mut p, ACK, 7001, 104, b"", 300 * MS);
        assert!(!p.is_down() && p.splice().is_some());
        // The new server answers and closes: its FIN is held as any.
        let (a, _) = server(&mut p, ACK | PSH, 7001, 104, b"ABC", 301 * MS);
        assert_eq!(a, Action::Forward);
        // Restored from a snapshot, it still knows the FIN was sent.
        let q = restored(&p, 302 * MS);
        assert_eq!(q.client_next(), 104);
    }

    #[test]
    fn the_new_servers_answer_and_close_in_one_segment_hold_the_close() {
        let mut p = up();
        assert_eq!(client(&mut p, ACK | PSH | FIN, 100, 500, b"abc"), Action::Forward);
        p.service_down(0);
        p.service_up(0);
        drain(&mut p, 0);
        server(&mut p, SYN | ACK, 7000, 100, b"", 1);
        drain(&mut p, 1);
        // It reads the request and the end, answers and closes at once.
        let (a, _) = server(&mut p, ACK | PSH | FIN, 7001, 104, b"ABC", 2);
        assert_eq!(a, Action::ForwardFrom(0));
        assert!(p.splice().is_some() && p.holds_close(), "its FIN held, as any close");
        // Nobody says the service died: released, and protection ends.
        assert!(drain(&mut p, 3).iter().all(|(_, s)| s.flags & FIN == 0));
        let out = drain(&mut p, 2 + 100 * MS);
        assert!(out.iter().any(|(t, s)| *t == Toward::Client && s.flags & FIN != 0), "{out:?}");
        assert_eq!(p.ended(), Some(Ended::Released));
        assert_eq!(p.fins(), (true, true));
        // A client whose FIN was not acknowledged resets at its number.
        let mut q = up();
        assert_eq!(client(&mut q, ACK | FIN, 100, 500, b""), Action::Forward);
        assert_eq!(client(&mut q, RST, 100, 0, b""), Action::Forward);
        assert_eq!(q.ended(), Some(Ended::Closed));
    }

    #[test]
    fn a_snapshot_of_the_format_before_reads_with_no_half_close() {
        let p = up();
        let mut b = [0; SNAPSHOT_BYTES];
        p.snapshot(&mut b, 0);
        b[0] = 1;
        let q = Protected::restore(POLICY, &b, Vec::new(), 0, 0).unwrap();
        assert_eq!(q.client_next(), 100);
        // 3 and 4 changed only the record's wire part, outside the snapshot.
        for format in [2, 3] {
            b[0] = format;
            let q = Protected::restore(POLICY, &b, Vec::new(), 0, 0).unwrap();
            assert_eq!(q.client_next(), 100);
        }
        b[0] = 5;
        assert!(Protected::restore(POLICY, &b, Vec::new(), 0, 0).is_err());
    }

    #[test]
    fn the_new_servers_handshake_is_acknowledged_after_the_splice() {
        let mut p = up();
        p.service_down(0);
        p.service_up(0);
        drain(&mut p, 0);
        server(&mut p, SYN | ACK, 7000, 100, b"", 1);
        assert!(p.splice().is_some());
        let out = drain(&mut p, 1);
        let acks = to_server(&out);
        assert_eq!((acks.len(), acks[0].flags, acks[0].ack), (1, ACK, 7001));
        // The client's window, closed while the server was down, reopened
        // at once with the new server's (its SYN-ACK's, no scaling here).
        let opened: Vec<_> = out.iter().filter(|(t, _)| *t == Toward::Client).collect();
        assert_eq!(opened.last().map(|(_, s)| (s.flags, s.window)), Some((ACK, 64240)), "{out:?}");
        // Its SYN-ACK again (our ACK lost): answered, not passed on.
        assert_eq!(server(&mut p, SYN | ACK, 7000, 100, b"", 2).0, Action::Absorb);
        assert_eq!(to_server(&drain(&mut p, 2)).len(), 1);
    }

    fn restored(p: &Protected, now: u64) -> Protected {
        let mut b = [0; SNAPSHOT_BYTES];
        assert!(p.worth_snapshot());
        p.snapshot(&mut b, now);
        Protected::restore(POLICY, &b, p.log().to_vec(), p.client_log().base(), now).unwrap()
    }

    /// An idle connection's record does not change with time (so it is not
    /// written again); a down one's counts the outage.
    #[test]
    fn only_a_down_connection_s_record_moves_with_time() {
        let mut p = up();
        client(&mut p, ACK | PSH, 100, 500, b"abc");
        let (mut a, mut b) = ([0; SNAPSHOT_BYTES], [0; SNAPSHOT_BYTES]);
        p.snapshot(&mut a, 5 * MS);
        p.snapshot(&mut b, 5000 * MS);
        assert_eq!(a, b);
        p.service_down(6000 * MS);
        p.snapshot(&mut a, 6000 * MS);
        p.snapshot(&mut b, 6500 * MS);
        assert_ne!(a, b);
        assert!(restored(&p, 7000 * MS).is_down());
    }

    #[test]
    fn a_spliced_connection_is_rewritten_the_same_after_a_restore() {
        let mut p = up();
        assert_eq!(client(&mut p, ACK | PSH, 100, 500, b"abc"), Action::Forward);
        server(&mut p, ACK | PSH, 500, 103, b"x\n", 1);
        client(&mut p, ACK, 103, 502, b"");
        p.service_down(2);
        p.service_up(2);
        drain(&mut p, 2);
        server(&mut p, SYN | ACK, 7000, 100, b"", 3);
        drain(&mut p, 3);
        server(&mut p, ACK | PSH, 7001, 103, b"x\n", 3);
        drain(&mut p, 3);
        assert!(p.splice().is_some() && !p.is_down());
        let mut q = restored(&p, 4);
        assert_eq!(q.splice(), p.splice());
        assert_eq!(q.recoveries(), 1);
        let (a, f) = server(&mut p, ACK | PSH, 7003, 103, b"yz", 5);
        let (b, g) = server(&mut q, ACK | PSH, 7003, 103, b"yz", 5);
        assert_eq!((a, f), (b, g), "the same rewrite to the client");
        let (t, pl, mut f) = seg(true, ACK | PSH, 103, 505, b"more");
        let mut g = f.clone();
        assert_eq!(
            p.from_client(&t, &pl, &mut f[34..], 0),
            q.from_client(&t, &pl, &mut g[34..], 0)
        );
        assert_eq!(f, g, "the same rewrite to the server");
        assert_eq!(q.log(), b"abcmore");
    }

    #[test]
    fn a_connection_restored_while_down_is_answered_then_replayed() {
        let mut p = up();
        assert_eq!(client(&mut p, ACK | PSH, 100, 500, b"abc"), Action::Forward);
        p.service_down(10);
        let mut q = restored(&p, 20);
        assert!(q.is_down());
        let out = drain(&mut q, 20);
        // The client answered for the server, and the service probed at
        // once (the word that it is back may have gone to the dead
        // dataplane): the replay's reset and SYN.
        let to_client: Vec<_> = out.iter().filter(|(t, _)| *t == Toward::Client).collect();
        assert_eq!(to_client.len(), 1, "{out:?}");
        assert_eq!((to_client[0].1.ack, to_client[0].1.window), (103, 0));
        let sent = to_server(&out);
        assert_eq!((sent[0].flags, sent[1].flags, sent[1].seq), (RST, SYN, 99));
        // Refused (not back yet): tried again later, still down.
        server(&mut q, RST | ACK, 0, 100, b"", 21);
        assert!(q.is_down() && q.ended().is_none());
        assert!(to_server(&drain(&mut q, 22)).is_empty());
        let sent = to_server(&drain(&mut q, 21 + 50 * MS));
        assert_eq!(sent.last().map(|s| s.flags), Some(SYN), "{sent:?}");
        // Kept waiting since it first went down, not since the restore.
        let mut r = restored(&p, 20);
        let out = drain(&mut r, 10 + POLICY.down_max_ns);
        assert!(out.iter().any(|(t, s)| *t == Toward::Client && s.flags & RST != 0), "{out:?}");
    }

    #[test]
    fn a_connection_restored_mid_replay_starts_the_replay_over() {
        let mut p = up();
        assert_eq!(client(&mut p, ACK | PSH, 100, 500, b"abc"), Action::Forward);
        p.service_down(0);
        p.service_up(0);
        drain(&mut p, 0);
        server(&mut p, SYN | ACK, 7000, 100, b"", 1);
        drain(&mut p, 1);
        let mut q = restored(&p, 2);
        let sent = to_server(&drain(&mut q, 2));
        assert_eq!((sent[0].flags, sent[1].flags), (RST, SYN), "{sent:?}");
        // The half-replayed socket answers the SYN with a challenge ACK:
        // reset exactly there, then the SYN again.
        server(&mut q, ACK, 7001, 103, b"", 3);
        let sent = to_server(&drain(&mut q, 3));
        assert_eq!((sent[0].flags, sent[0].seq, sent[1].flags), (RST, 103, SYN), "{sent:?}");
    }

    #[test]
    fn a_syn_nobody_answers_is_tried_again_until_down_max() {
        let (syn, _, _) = seg(true, SYN, 99, 0, b"");
        let policy = ProtectPolicy { down_max_ns: 60_000 * MS, ..POLICY };
        let mut p = Protected::new(policy, &syn);
        server(&mut p, SYN | ACK, 499, 100, b"", 0);
        client(&mut p, ACK, 100, 500, b"");
        p.service_down(0);
        p.service_up(0);
        let mut syns = 0;
        for ms in (0..30_000).step_by(10) {
            syns += to_server(&drain(&mut p, ms * MS)).iter().filter(|s| s.flags == SYN).count();
        }
        assert!(p.is_down() && p.ended().is_none(), "{:?}", p.ended());
        assert!(syns > 4, "{syns} SYNs");
        drain(&mut p, 60_000 * MS);
        assert_eq!(p.ended(), Some(Ended::DownTooLong));
    }

    #[test]
    fn a_request_response_log_is_truncated_and_replayed_from_there() {
        let (syn, _, _) = seg(true, SYN, 99, 0, b"");
        let mut p = Protected::new(ProtectPolicy { truncate: true, ..POLICY }, &syn);
        server(&mut p, SYN | ACK, 499, 100, b"", 0);
        client(&mut p, ACK, 100, 500, b"");
        assert!(!p.truncatable(10), "nothing since the handshake");
        client(&mut p, ACK | PSH, 100, 500, b"GET a\n");
        assert!(!p.truncatable(10), "not answered");
        server(&mut p, ACK | PSH, 500, 106, b"A\n", 1);
        assert!(!p.truncatable(10), "the answer not acknowledged");
        client(&mut p, ACK, 106, 502, b"");
        assert!(p.truncatable(10));
        p.truncate();
        assert_eq!((p.log(), p.client_log().base()), (&b""[..], 6));
        client(&mut p, ACK | PSH, 106, 502, b"GET b\n");
        // The restarted server sees a connection that begins here.
        let mut q = restored(&p, 2);
        for c in [&mut p, &mut q] {
            c.service_down(2);
            c.service_up(2);
            let sent = to_server(&drain(c, 2));
            assert_eq!((sent[1].flags, sent[1].seq), (SYN, 105), "{sent:?}");
            server(c, SYN | ACK, 9000, 106, b"", 3);
            let sent = to_server(&drain(c, 3));
            let data: Vec<_> = sent.iter().filter(|s| !s.payload.is_empty()).collect();
            assert_eq!(data.len(), 1, "{sent:?}");
            assert_eq!(
                (data[0].seq, c.log().get(data[0].payload.clone())),
                (106, Some(&b"GET b\n"[..]))
            );
            server(c, ACK, 9001, 112, b"", 4);
            assert!(c.splice().is_some() && !c.is_down());
            // Its answer reaches the client where the old server's output ended.
            let (a, f) = server(c, ACK | PSH, 9001, 112, b"B\n", 5);
            assert_eq!(a, Action::Forward);
            assert_eq!(u32::from_be_bytes(f[38..42].try_into().unwrap()), 502);
        }
        // After a recovery too (q, restored, has the default policy).
        let mut c = p;
        client(&mut c, ACK, 112, 504, b"");
        assert!(c.truncatable(10), "a spliced connection truncates as any other");
        // Without the policy the log is never truncated.
        let mut r = up();
        client(&mut r, ACK | PSH, 100, 500, b"GET a\n");
        server(&mut r, ACK | PSH, 500, 106, b"A\n", 1);
        client(&mut r, ACK, 106, 502, b"");
        assert!(!r.truncatable(10));
    }

    #[test]
    fn a_restore_from_a_snapshot_a_little_old_still_checks_what_follows() {
        let mut p = up();
        client(&mut p, ACK | PSH, 100, 500, b"a\n");
        server(&mut p, ACK | PSH, 500, 102, b"1\n", 1);
        client(&mut p, ACK, 102, 502, b"");
        let mut b = [0; SNAPSHOT_BYTES];
        p.snapshot(&mut b, 1); // the last walk before the kill
        client(&mut p, ACK | PSH, 102, 502, b"b\n");
        server(&mut p, ACK | PSH, 502, 104, b"2\n", 2);
        client(&mut p, ACK, 104, 504, b"");
        let mut q = Protected::restore(POLICY, &b, p.log().to_vec(), 0, 3).unwrap();
        for c in [&mut p, &mut q] {
            client(c, ACK | PSH, 104, 504, b"c\n");
            server(c, ACK | PSH, 504, 106, b"3\n", 4);
            client(c, ACK, 106, 506, b"");
        }
        let checked = q.digest.checked();
        assert_eq!(checked.head.map(|h| h.end), Some(502), "what the snapshot vouched for");
        assert_eq!((checked.from, checked.acked.end), (504, 506), "and what came after the gap");
        // The restarted server answers the third request differently: both
        // the original and the restored connection see it.
        for c in [&mut p, &mut q] {
            c.service_down(5);
            c.service_up(5);
            drain(c, 5);
            server(c, SYN | ACK, 7000, 100, b"", 6);
            drain(c, 6);
            server(c, ACK | PSH, 7001, 106, b"1\n2\nX\n", 7);
            drain(c, 7);
            assert_eq!(c.ended(), Some(Ended::Replay(ReplayError::Diverged)));
        }
    }

    #[test]
    fn a_bare_ack_or_part_of_an_answer_is_no_quiet_point() {
        let (syn, _, _) = seg(true, SYN, 99, 0, b"");
        let policy = ProtectPolicy { truncate: true, truncate_idle_ns: 10 * MS, ..POLICY };
        let mut p = Protected::new(policy, &syn);
        server(&mut p, SYN | ACK, 499, 100, b"", 0);
        client(&mut p, ACK, 100, 500, b"");
        client(&mut p, ACK | PSH, 100, 500, b"GET a\n");
        // The server's kernel acknowledges the request before the answer.
        server(&mut p, ACK, 500, 106, b"", MS);
        assert!(!p.truncatable(100 * MS), "a bare ACK is no answer");
        // The answer's first segment, acknowledged at once by the client.
        server(&mut p, ACK | PSH, 500, 106, b"part1-", 2 * MS);
        client(&mut p, ACK, 106, 506, b"");
        assert!(!p.truncatable(5 * MS), "the server may not have finished");
        server(&mut p, ACK | PSH, 506, 106, b"part2\n", 6 * MS);
        client(&mut p, ACK, 106, 512, b"");
        assert!(!p.truncatable(7 * MS));
        assert!(p.truncatable(16 * MS), "silent for the idle time: the answer is whole");
        // Truncated at the acknowledgment that came with the next request
        // only once the server has been silent as long.
        let (t, _, _) = seg(true, ACK | PSH, 106, 512, b"GET b\n");
        assert!(!p.truncatable_before(&t, 10 * MS));
        assert!(p.truncatable_before(&t, 16 * MS));
    }

    #[test]
    fn a_gap_then_a_crash_is_replayed_not_refused() {
        let mut p = up();
        client(&mut p, ACK | PSH, 100, 500, b"a\n");
        // The server's first answer is lost on its way to the firewall; its
        // second arrives.
        server(&mut p, ACK | PSH, 502, 102, b"yz", 1);
        p.service_down(2);
        p.service_up(2);
        drain(&mut p, 2);
        assert_eq!(p.ended(), None);
        server(&mut p, SYN | ACK, 7000, 100, b"", 3);
        drain(&mut p, 3);
        server(&mut p, ACK | PSH, 7001, 102, b"xxyz", 4);
        drain(&mut p, 4);
        assert!(p.ended().is_none() && p.splice().is_some(), "{:?}", p.ended());
    }

    #[test]
    fn a_restore_whose_log_starts_after_the_truncation_is_refused_not_a_panic() {
        let (syn, _, _) = seg(true, SYN, 99, 0, b"");
        let mut p = Protected::new(ProtectPolicy { truncate: true, ..POLICY }, &syn);
        server(&mut p, SYN | ACK, 499, 100, b"", 0);
        client(&mut p, ACK | PSH, 100, 500, b"GET a\n");
        server(&mut p, ACK | PSH, 500, 106, b"A\n", 1);
        client(&mut p, ACK, 106, 502, b"");
        p.truncate();
        let mut b = [0; SNAPSHOT_BYTES];
        p.snapshot(&mut b, 2);
        // checkpointd holds nothing from offset 0 (its TRIM not come yet).
        assert!(matches!(
            Protected::restore(POLICY, &b, Vec::new(), 0, 3),
            Err(SnapshotError::LogShort { .. })
        ));
        // A late copy of the SYN is still this connection's.
        assert_eq!(p.syn_isn(), 99);
        let q = Protected::restore(POLICY, &b, Vec::new(), 6, 3).unwrap();
        assert_eq!(q.syn_isn(), 99);
    }

    #[test]
    fn a_damaged_or_foreign_snapshot_is_refused() {
        let mut p = up();
        client(&mut p, ACK | PSH, 100, 500, b"abc");
        let mut b = [0; SNAPSHOT_BYTES];
        p.snapshot(&mut b, 0);
        let log = p.log().to_vec();
        assert_eq!(
            Protected::restore(POLICY, &b[..40], log.clone(), 0, 0).err(),
            Some(SnapshotError::Length(40))
        );
        assert!(matches!(
            Protected::restore(POLICY, &b, b"ab".to_vec(), 0, 0),
            Err(SnapshotError::LogShort { held: 2, counted: 3 })
        ));
        let small = ProtectPolicy { log_bound: 2, ..POLICY };
        assert_eq!(
            Protected::restore(small, &b, log.clone(), 0, 0).err(),
            Some(SnapshotError::LogBound(3))
        );
        let mut c = b;
        c[0] = 9;
        assert_eq!(
            Protected::restore(POLICY, &c, log.clone(), 0, 0).err(),
            Some(SnapshotError::Format(9))
        );
        c = b;
        c[1] = 77;
        assert_eq!(Protected::restore(POLICY, &c, log, 0, 0).err(), Some(SnapshotError::Phase(77)));
    }

    #[test]
    fn a_stale_fin_from_the_new_server_is_ignored() {
        let mut p = up();
        assert_eq!(client(&mut p, ACK | PSH, 100, 500, b"abc"), Action::Forward);
        p.service_down(0);
        p.service_up(0);
        drain(&mut p, 0);
        server(&mut p, SYN | ACK, 7000, 100, b"", 1);
        drain(&mut p, 1);
        assert_eq!(server(&mut p, ACK | FIN, 7001 - 100, 103, b"x", 2).0, Action::Absorb);
    }

    #[test]
    fn a_retransmission_with_other_bytes_is_dropped() {
        let mut p = up();
        assert_eq!(client(&mut p, ACK | PSH, 100, 500, b"GET /a"), Action::Forward);
        assert_eq!(
            client(&mut p, ACK | PSH, 100, 500, b"DEL /b"),
            Action::Drop(ProtectDrop::LogConflict)
        );
    }

    #[test]
    fn a_blind_rst_or_a_syn_does_not_end_protection() {
        let mut p = up();
        p.service_down(0);
        drain(&mut p, 0);
        assert_eq!(client(&mut p, RST, 0xdead_beef, 0, b""), Action::Absorb);
        let out = drain(&mut p, 1);
        assert_eq!((out[0].0, out[0].1.flags), (Toward::Client, ACK), "a challenge ACK");
        assert!(p.ended().is_none());
        assert_eq!(client(&mut p, RST, 100, 0, b""), Action::Absorb);
        assert_eq!(p.ended(), Some(Ended::Closed));
        let mut q = up();
        assert_eq!(client(&mut q, SYN, 12345, 0, b""), Action::Forward);
        assert!(q.ended().is_none());
    }

    #[test]
    fn an_ack_of_bytes_never_sent_is_not_believed() {
        let mut p = up();
        client(&mut p, ACK, 100, 500 + 1_000_000, b"");
        p.service_down(0);
        p.service_up(0);
        drain(&mut p, 0);
        // The replay reads no output: the client had none.
        server(&mut p, SYN | ACK, 7000, 100, b"", 1);
        assert!(p.splice().is_some());
    }

    #[test]
    fn a_replay_the_service_refuses_is_tried_again_until_it_listens() {
        let mut p = up();
        p.service_down(0);
        p.service_up(0);
        drain(&mut p, 0);
        server(&mut p, RST | ACK, 0, 100, b"", 1);
        assert!(p.is_down() && p.ended().is_none());
        let syns =
            |out: Vec<(Toward, Segment)>| to_server(&out).iter().filter(|s| s.flags == SYN).count();
        assert_eq!(syns(drain(&mut p, 10 * MS)), 0, "not at once");
        assert_eq!(syns(drain(&mut p, 60 * MS)), 1, "again after the first back-off");
        server(&mut p, RST | ACK, 0, 100, b"", 61 * MS);
        assert_eq!(syns(drain(&mut p, 120 * MS)), 0, "the back-off doubled");
        assert_eq!(syns(drain(&mut p, 170 * MS)), 1);
    }
}
