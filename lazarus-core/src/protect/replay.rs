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

use super::log::Acked;
use super::segment::{Segment, SynOptions};
use super::splice::{ServerSide, Splice, SpliceError};
use crate::parse::{tcp_flags, TcpHdr};
use thiserror::Error;
use xxhash_rust::xxh3::Xxh3;

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
    /// The digest of the old server's output from its start to `acked.end`
    /// (at most `client_acked`).
    pub acked: Acked,
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
    check_end: u32,
    discard_end: u32,
    hash: Xxh3,
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
        let checked = r.acked.end.wrapping_sub(first);
        if checked > acked || acked > i32::MAX as u32 {
            return Err(ReplayError::Inconsistent);
        }
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
            check_end: checked,
            discard_end: acked,
            hash: Xxh3::new(),
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
                Some(Segment {
                    seq,
                    ack: 0,
                    flags: tcp_flags::RST,
                    window: 0,
                    syn: None,
                    ts: None,
                    payload: 0..0,
                })
            }
            Phase::Connect if now >= self.deadline => {
                if self.tries == SYN_TRIES {
                    self.phase = Phase::Failed(ReplayError::NoAnswer);
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
        if self.deadline != 0 && now >= self.deadline && (outstanding || self.snd_nxt != end) {
            if self.tries == DATA_TRIES {
                self.phase = Phase::Failed(ReplayError::NoAnswer);
                return None;
            }
            // Go back to the first byte not acknowledged; with a zero window
            // this sends one byte as a probe.
            self.tries += 1;
            self.rto = self.rto.saturating_mul(2);
            self.snd_nxt = self.snd_una;
            self.deadline = now + self.rto;
            let len = end.wrapping_sub(self.snd_nxt).min(self.mss as u32).min(self.snd_wnd.max(1));
            return Some(self.data(len));
        }
        let sent = self.snd_nxt.wrapping_sub(self.snd_una);
        let room = self.snd_wnd.saturating_sub(sent);
        let left = end.wrapping_sub(self.snd_nxt);
        if left != 0 && room != 0 {
            let len = left.min(room).min(self.mss as u32);
            if self.deadline == 0 {
                self.deadline = now + self.rto;
            }
            return Some(self.data(len));
        }
        if left != 0 && self.deadline == 0 {
            // A zero window: the timeout sends the probe.
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
        self.snd_nxt = self.snd_nxt.wrapping_add(len);
        if (self.snd_nxt.wrapping_sub(self.snd_max) as i32) > 0 {
            self.snd_max = self.snd_nxt;
        }
        self.ack_due = false;
        self.segment(seq, tcp_flags::ACK | tcp_flags::PSH, from..from + len as usize)
    }

    /// A segment from the new server, its header `t` and payload. Returns
    /// where the client's part of the payload starts when the segment also
    /// carries output past what the client has and the splice is ready: the
    /// caller forwards that part through the splice (the server will not
    /// send it again, so dropping it would cost the client a timeout).
    pub fn on_segment(
        &mut self,
        t: &TcpHdr,
        payload: &[u8],
        _now: u64,
    ) -> Result<Option<usize>, ReplayError> {
        match self.phase {
            Phase::Connect => self.on_handshake(t).map(|()| None),
            Phase::Replay => self.on_replay(t, payload),
            Phase::Done => Ok(None),
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
        self.check_end = start.wrapping_add(self.check_end);
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

    fn on_replay(&mut self, t: &TcpHdr, payload: &[u8]) -> Result<Option<usize>, ReplayError> {
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
                self.tries = 0;
                self.rto = DATA_RTO_NS;
                self.deadline = 0;
            }
            self.snd_wnd = u32::from(t.window) << self.shift;
        }
        let mut client_part = None;
        if !payload.is_empty() || t.flags & tcp_flags::FIN != 0 {
            client_part = self.read(t, payload)?;
        }
        self.finish_if_done();
        Ok(client_part.filter(|_| self.phase == Phase::Done))
    }

    /// Reads server output in order, up to where the client's
    /// acknowledgment is; what lies beyond is the client's to receive after
    /// the splice, so it is neither read nor acknowledged here: returns
    /// where it starts in `payload`, if anywhere.
    fn read(&mut self, t: &TcpHdr, payload: &[u8]) -> Result<Option<usize>, ReplayError> {
        self.ack_due = true;
        let behind = self.rcv_nxt.wrapping_sub(t.seq) as i32;
        if behind < 0 {
            return Ok(None);
        }
        let fresh = payload.get(behind as usize..).unwrap_or(&[]);
        let room = self.discard_end.wrapping_sub(self.rcv_nxt) as usize;
        if t.flags & tcp_flags::FIN != 0 && fresh.len() < room {
            // The server closes before giving back what the client has.
            return self.fail(ReplayError::Diverged);
        }
        let take = &fresh[..fresh.len().min(room)];
        let unchecked = self.check_end.wrapping_sub(self.rcv_nxt) as i32;
        if unchecked > 0 {
            let n = take.len().min(unchecked as usize);
            self.hash.update(&take[..n]);
            if n == unchecked as usize && self.hash.digest() != self.r.acked.digest {
                return self.fail(ReplayError::Diverged);
            }
        }
        self.rcv_nxt = self.rcv_nxt.wrapping_add(take.len() as u32);
        if let Some((val, _)) = t.opts.timestamp {
            self.ts_recent = val;
        }
        let beyond = fresh.len() > take.len() || t.flags & tcp_flags::FIN != 0;
        Ok(beyond.then_some(behind as usize + take.len()))
    }

    fn finish_if_done(&mut self) {
        if self.phase == Phase::Replay
            && self.snd_una == self.log_end()
            && self.rcv_nxt == self.discard_end
            && self.check_end.wrapping_sub(self.rcv_nxt) as i32 <= 0
        {
            self.phase = Phase::Done;
        }
    }
}
