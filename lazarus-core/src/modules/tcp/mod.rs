//! The tcp module: the connection state machine and per-direction window
//! tracking, after Linux's nf_conntrack_proto_tcp.c (itself after Guido van
//! Rooij, "Real Stateful TCP Packet Filtering in IP Filter"). Read RFC 793 §3.2
//! (states), RFC 7323 §2 (window scale) and RFC 5961 §3 (RST validation).
//!
//! The transition table is declared once (`TRANSITIONS`); `in_window` is one
//! pure function. Strict: a connection starts with a SYN (no mid-stream
//! pickup; a restarted dataplane gets its state from the checkpoint instead).

mod portion;
pub use portion::MAX_WINDOW;
mod transitions;

use crate::conn::Dir;
use crate::parse::{tcp_flags as f, TcpHdr};
use transitions::{flag_idx, valid_flags, FlagIdx, IG, IV, TIMEOUT_ONLY, TRANSITIONS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum TcpState {
    #[default]
    None = 0,
    SynSent,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    LastAck,
    TimeWait,
    Close,
    /// Simultaneous open: both sides sent a SYN.
    SynSent2,
}

impl TcpState {
    pub const COUNT: usize = 10;
    /// Every state, in the order of its number.
    pub const ALL: [TcpState; Self::COUNT] = {
        use TcpState::*;
        [
            None,
            SynSent,
            SynRecv,
            Established,
            FinWait,
            CloseWait,
            LastAck,
            TimeWait,
            Close,
            SynSent2,
        ]
    };
    pub fn name(self) -> &'static str {
        [
            "NONE",
            "SYN_SENT",
            "SYN_RECV",
            "ESTABLISHED",
            "FIN_WAIT",
            "CLOSE_WAIT",
            "LAST_ACK",
            "TIME_WAIT",
            "CLOSE",
            "SYN_SENT2",
        ][self as usize]
    }
    fn from_u8(v: u8) -> TcpState {
        Self::ALL[v as usize]
    }
}

/// Why the tracker refused a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TcpInvalid {
    /// A flag combination no TCP sends (SYN+FIN, SYN+RST, none, ...).
    BadFlags = 0,
    /// A first packet that is not a plain SYN.
    NewNotSyn,
    /// A packet the state machine has no transition for (e.g. SYN-ACK in ESTABLISHED from the client).
    BadTransition,
    /// Sequence or acknowledgment outside the tracked window.
    OutOfWindow,
    /// A RST outside the window (or not acknowledging our SYN).
    RstOutOfWindow,
    /// A RST in the window but not at the exact next sequence (RFC 5961
    /// §3.2): forwarded, so the endpoint can send its challenge ACK, but the
    /// connection's state is kept, as Linux conntrack does.
    RstNotExact,
    /// A SYN outside the window of a synchronised connection: forwarded, so
    /// the endpoint can send its challenge ACK, the state kept, as Linux
    /// conntrack does.
    SynIgnored,
}

impl TcpInvalid {
    pub const COUNT: usize = 7;
    pub const ALL: [TcpInvalid; 7] = [
        TcpInvalid::BadFlags,
        TcpInvalid::NewNotSyn,
        TcpInvalid::BadTransition,
        TcpInvalid::OutOfWindow,
        TcpInvalid::RstOutOfWindow,
        TcpInvalid::RstNotExact,
        TcpInvalid::SynIgnored,
    ];
    pub fn name(self) -> &'static str {
        [
            "bad_flags",
            "new_not_syn",
            "bad_transition",
            "out_of_window",
            "rst_out_of_window",
            "rst_not_exact",
            "syn_on_synchronised",
        ][self as usize]
    }
}

/// What one direction has sent, as Linux's `ip_ct_tcp_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct TcpDirState {
    /// Highest sequence number sent + 1 (seq + len of the furthest segment).
    pub end: u32,
    /// Highest sequence number the peer allowed: its ack + its window.
    pub maxend: u32,
    /// Largest window (scaled) this side advertised.
    pub maxwin: u32,
    /// Highest ack this side sent.
    pub maxack: u32,
    pub scale: u8,
    pub flags: u8,
}

pub mod dir_flags {
    pub const WINDOW_SCALE: u8 = 0x01;
    pub const SACK_PERM: u8 = 0x02;
    pub const CLOSE_INIT: u8 = 0x04;
    pub const MAXACK_SET: u8 = 0x08;
    /// The portion came from a checkpoint and its edges may be stale, until
    /// the next checkpoint of the live connection.
    pub const RESTORED: u8 = 0x10;
}

/// The tcp module's portion of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct TcpPortion {
    pub dirs: [TcpDirState; 2],
    /// `end` of each direction when the portion was last checkpointed.
    pub ckpt_end: [u32; 2],
    pub state: TcpState,
    /// Whether the reply direction has been seen (for "unreplied").
    pub seen_reply: bool,
}

/// What a checkpoint must capture after a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpChange {
    None,
    /// The state machine moved (SYN_SENT → ESTABLISHED, → TIME_WAIT, ...).
    State,
    /// A window edge moved past the checkpoint threshold.
    Window,
    /// The state moved from `from` to a state that accepts the same segments
    /// and leads to the same states (FIN_WAIT → CLOSE_WAIT): a restore into
    /// `from` would only keep the connection for `from`'s timeout. The
    /// firewall checkpoints it when that timeout is the shorter one (then it
    /// calls [`TcpPortion::checkpointed`]); with Linux's defaults it is not.
    Timeout {
        from: TcpState,
    },
    /// An in-window RST not at the exact next sequence: the state is kept
    /// ([`TcpInvalid::RstNotExact`]).
    RstKept,
    /// A SYN out of the window of a synchronised connection: forwarded, the
    /// state kept ([`TcpInvalid::SynIgnored`]).
    SynIgnored,
}

#[inline]
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}
#[inline]
fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

fn init_dir(d: &mut TcpDirState, h: &TcpHdr, end: u32) {
    d.end = end;
    d.maxend = end;
    d.maxwin = (h.window as u32).max(1);
    d.maxack = 0;
    d.flags = 0;
    d.scale = 0;
    if let Some(s) = h.opts.wscale {
        d.flags |= dir_flags::WINDOW_SCALE;
        d.scale = s.min(14);
    }
    if h.opts.sack_perm {
        d.flags |= dir_flags::SACK_PERM;
    }
}

/// seq + payload + SYN + FIN: the sequence space a segment occupies.
#[inline]
fn segment_end(h: &TcpHdr, payload_len: u32) -> u32 {
    h.seq
        .wrapping_add(payload_len)
        .wrapping_add((h.flags & f::SYN != 0) as u32)
        .wrapping_add((h.flags & f::FIN != 0) as u32)
}

/// The portion of a connection that starts with `h`, or why it cannot start.
pub fn new_conn(h: &TcpHdr, payload_len: u32) -> Result<TcpPortion, TcpInvalid> {
    if !valid_flags(h.flags) {
        return Err(TcpInvalid::BadFlags);
    }
    if flag_idx(h.flags) != FlagIdx::Syn {
        return Err(TcpInvalid::NewNotSyn);
    }
    let mut p = TcpPortion { state: TcpState::SynSent, ..Default::default() };
    init_dir(&mut p.dirs[0], h, segment_end(h, payload_len));
    p.ckpt_end = [p.dirs[0].end, 0];
    Ok(p)
}

/// Linux's tcp_in_window: is the segment inside what the two sides allowed,
/// and if so, move the window edges.
///
/// Only a SYN changes the portion before the check (it initialises or
/// reinitialises the sender's side); any other segment changes it only when
/// it returns true, so the caller need not work on a copy.
///
/// `PLAIN_ACK`: the caller knows the segment is an ACK without SYN, FIN,
/// RST or URG on an ESTABLISHED connection; the flag tests then fold away.
/// `MAYBE_RESTORED`: false when the caller knows neither side is marked
/// `RESTORED`; the slack then folds away.
#[inline(always)]
fn in_window<const PLAIN_ACK: bool, const MAYBE_RESTORED: bool>(
    p: &mut TcpPortion,
    dir: Dir,
    h: &TcpHdr,
    payload_len: u32,
) -> bool {
    let state = if PLAIN_ACK { TcpState::Established } else { p.state };
    // The sender's and the receiver's sides, resolved once.
    let [d0, d1] = &mut p.dirs;
    let (sd, rd) = match dir {
        Dir::Original => (d0, d1),
        Dir::Reply => (d1, d0),
    };
    let mut seq = h.seq;
    let mut ack = h.ack;
    let mut end =
        if PLAIN_ACK { h.seq.wrapping_add(payload_len) } else { segment_end(h, payload_len) };
    let syn = !PLAIN_ACK && h.flags & f::SYN != 0;
    let has_ack = PLAIN_ACK || h.flags & f::ACK != 0;
    let rst = !PLAIN_ACK && h.flags & f::RST != 0;
    let mut win = h.window as u32;
    if !syn {
        win <<= sd.scale;
    }

    if sd.maxwin == 0 {
        // First packet of this direction: it must be the SYN (SYN-ACK).
        if !syn {
            return false;
        }
        init_dir(sd, h, end);
        // RFC 7323 §2.2: scaling is used only when both SYNs carried the option.
        if sd.flags & rd.flags & dir_flags::WINDOW_SCALE == 0 {
            sd.scale = 0;
            rd.scale = 0;
        }
        if !has_ack {
            return true; // simultaneous open
        }
    } else if ((state == TcpState::SynSent && dir == Dir::Original)
        || (state == TcpState::SynRecv && dir == Dir::Reply))
        && syn
        && after(end, sd.end)
    {
        // RFC 793: a reinitialised sender (new ISN on a retransmitted SYN).
        init_dir(sd, h, end);
    }

    if !has_ack || (rst && ack == 0) {
        ack = rd.end;
    }
    if rst && seq == 0 && state == TcpState::SynSent {
        // RST answering a SYN.
        seq = sd.end;
        end = seq;
    }

    let maxackwin = sd.maxwin.max(66000);
    // A restored portion's edges lag the live ones by at most one checkpoint
    // threshold (a quarter of a window, see `track`) plus the window the peer
    // opened meanwhile: widen each bound by two of the larger windows until the
    // next checkpoint re-anchors them.
    let slack = if MAYBE_RESTORED && (sd.flags | rd.flags) & dir_flags::RESTORED != 0 {
        sd.maxwin.max(rd.maxwin).max(65535).saturating_mul(2)
    } else {
        0
    };
    let ok = before(seq, sd.maxend.wrapping_add(slack).wrapping_add(1))
        && after(end, sd.end.wrapping_sub(rd.maxwin).wrapping_sub(slack).wrapping_sub(1))
        && before(ack, rd.end.wrapping_add(slack).wrapping_add(1))
        && after(ack, rd.end.wrapping_sub(maxackwin).wrapping_sub(slack).wrapping_sub(1));
    if !ok {
        return false;
    }
    if sd.maxwin < win {
        sd.maxwin = win;
    }
    if after(end, sd.end) {
        sd.end = end;
    }
    if has_ack {
        if sd.flags & dir_flags::MAXACK_SET == 0 {
            sd.maxack = ack;
            sd.flags |= dir_flags::MAXACK_SET;
        } else if after(ack, sd.maxack) {
            sd.maxack = ack;
        }
    }
    let s_maxend = sd.maxend;
    if rd.maxwin != 0 && after(end, s_maxend) {
        rd.maxwin = rd.maxwin.wrapping_add(end.wrapping_sub(s_maxend));
    }
    if after(ack.wrapping_add(win), rd.maxend.wrapping_sub(1)) {
        rd.maxend = ack.wrapping_add(win).wrapping_add((win == 0) as u32);
    }
    true
}

/// The flags that make a segment anything but a plain ACK (PSH, ECE and CWR
/// do not count).
const NOT_PLAIN_ACK: u8 = f::FIN | f::SYN | f::RST | f::ACK | f::URG;

/// Tracks one packet of an existing connection. On success returns what a
/// checkpoint must capture; the portion is changed only when the packet is valid.
///
/// Inlined whole into the packet path, the general case kept out of line:
/// as one function, every packet paid the general case's register saves
/// and stack frame for a call.
#[inline(always)]
pub fn track(
    p: &mut TcpPortion,
    dir: Dir,
    h: &TcpHdr,
    payload_len: u32,
) -> Result<TcpChange, TcpInvalid> {
    // Data and pure ACKs of an established connection, nearly every packet:
    // ESTABLISHED stays ESTABLISHED on an ACK in both directions, so no table
    // lookup, and the window check without its SYN and RST cases (the same
    // `in_window`, specialised; a proptest holds the two paths to one result).
    if is_plain_ack(p, h) {
        return track_plain_ack(p, dir, h, payload_len);
    }
    track_any(p, dir, h, payload_len)
}

/// Whether `h` is an ACK without SYN, FIN, RST or URG on an ESTABLISHED
/// connection: `track` then takes `track_plain_ack`, and the state stays
/// ESTABLISHED whatever the result.
#[inline(always)]
pub fn is_plain_ack(p: &TcpPortion, h: &TcpHdr) -> bool {
    p.state == TcpState::Established && h.flags & NOT_PLAIN_ACK == f::ACK
}

/// What one segment did to a tracked connection, as the firewall needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    /// The change is worth a checkpoint delta.
    pub delta: bool,
    /// The timeout of the state the segment left the connection in.
    pub timeout: u64,
    /// The state moved, (from, to); None on the plain-ACK path, where it
    /// cannot, so that the caller's bookkeeping drops out of that path.
    pub moved: Option<(TcpState, TcpState)>,
    /// The segment passes but left the state alone, and why (an in-window
    /// RST off the exact sequence, a SYN on a synchronised connection).
    pub kept: Option<TcpInvalid>,
}

/// `track`, for the firewall: whether the change is worth a delta, and the
/// timeout of the resulting state from `timeouts` (by state, in the
/// caller's units). A move that only shortens what a restore would keep
/// ([`TcpChange::Timeout`]) is worth a delta only when the new state's
/// timeout is the longer one.
#[inline(always)]
pub fn on_segment(
    p: &mut TcpPortion,
    dir: Dir,
    h: &TcpHdr,
    payload_len: u32,
    timeouts: &[u64; TcpState::COUNT],
) -> Result<Tracked, TcpInvalid> {
    // Nearly every packet: ESTABLISHED stays so, its timeout known.
    if is_plain_ack(p, h) {
        let delta = !matches!(track_plain_ack(p, dir, h, payload_len)?, TcpChange::None);
        let timeout = timeouts[TcpState::Established as usize];
        return Ok(Tracked { delta, timeout, moved: None, kept: None });
    }
    // An invalid segment leaves the state as it was.
    let was = p.state;
    let change = track(p, dir, h, payload_len)?;
    let delta = match change {
        TcpChange::None | TcpChange::RstKept | TcpChange::SynIgnored => false,
        TcpChange::Timeout { from } => {
            let worth = timeouts[p.state as usize] > timeouts[from as usize];
            if worth {
                p.checkpointed();
            }
            worth
        }
        _ => true,
    };
    let moved = (p.state != was).then_some((was, p.state));
    let kept = match change {
        TcpChange::RstKept => Some(TcpInvalid::RstNotExact),
        TcpChange::SynIgnored => Some(TcpInvalid::SynIgnored),
        _ => None,
    };
    Ok(Tracked { delta, timeout: timeouts[p.state as usize], moved, kept })
}

/// `track` of a segment `is_plain_ack` accepts; for a caller that would
/// otherwise handle state changes that cannot happen here.
#[inline(always)]
pub fn track_plain_ack(
    p: &mut TcpPortion,
    dir: Dir,
    h: &TcpHdr,
    payload_len: u32,
) -> Result<TcpChange, TcpInvalid> {
    // Most connections were never restored: their bounds need no slack,
    // and the check is the shorter for knowing it.
    let restored = (p.dirs[0].flags | p.dirs[1].flags) & dir_flags::RESTORED != 0;
    let ok = if restored {
        close_slack_if_live::<true>(p, dir, h, payload_len);
        in_window::<true, true>(p, dir, h, payload_len)
    } else {
        in_window::<true, false>(p, dir, h, payload_len)
    };
    if !ok {
        return Err(TcpInvalid::OutOfWindow);
    }
    p.seen_reply |= dir == Dir::Reply;
    Ok(if edge_moved(p, dir) { TcpChange::Window } else { TcpChange::None })
}

/// A restored side's slack closes on its first segment that fits its
/// window without it: the side's edges are then as live as the tracker's
/// own, rather than widened until the next checkpoint. Checked on a copy;
/// the caller checks the segment for real after.
#[cold]
#[inline(never)]
fn close_slack_if_live<const PLAIN_ACK: bool>(
    p: &mut TcpPortion,
    dir: Dir,
    h: &TcpHdr,
    payload_len: u32,
) {
    let mut strict = *p;
    if in_window::<PLAIN_ACK, false>(&mut strict, dir, h, payload_len) {
        p.dirs[dir.idx()].flags &= !dir_flags::RESTORED;
    }
}

/// Whether the sender's window edge moved by more than a quarter of the
/// peer's largest window since the last checkpoint: a restore from an older
/// edge could refuse segments that are in flight. If so the portion is
/// marked checkpointed.
#[inline(always)]
fn edge_moved(p: &mut TcpPortion, dir: Dir) -> bool {
    let (s, r) = (dir.idx(), dir.other().idx());
    let threshold = (p.dirs[r].maxwin / 4).max(1);
    if p.dirs[s].end.wrapping_sub(p.ckpt_end[s]) > threshold {
        p.checkpointed();
        return true;
    }
    false
}

#[inline(never)]
fn track_any(
    p: &mut TcpPortion,
    dir: Dir,
    h: &TcpHdr,
    payload_len: u32,
) -> Result<TcpChange, TcpInvalid> {
    if !valid_flags(h.flags) {
        return Err(TcpInvalid::BadFlags);
    }
    let fi = flag_idx(h.flags);
    // A new SYN from the client on a finished connection reopens it (RFC 793
    // TIME-WAIT assassination rules, as Linux allows).
    // Not worth a delta until it is answered, like a new connection's SYN
    // (see `checkpoint::worth_storing`): restored in the old state, the connection
    // takes the client's retransmitted SYN the same way.
    if dir == Dir::Original
        && fi == FlagIdx::Syn
        && matches!(p.state, TcpState::TimeWait | TcpState::Close)
    {
        *p = new_conn(h, payload_len)?;
        return Ok(TcpChange::None);
    }
    let next = TRANSITIONS[dir.idx()][fi as usize][p.state as usize];
    if next == IV {
        return Err(TcpInvalid::BadTransition);
    }
    if fi == FlagIdx::Rst && p.state == TcpState::SynSent && dir == Dir::Reply {
        // RFC 793: a RST answering our SYN is acceptable only if it ACKs the SYN.
        if h.flags & f::ACK == 0 || h.ack != p.dirs[0].end {
            return Err(TcpInvalid::RstOutOfWindow);
        }
        // The server side has no window yet to check the RST against.
        p.state = TcpState::Close;
        p.seen_reply = true;
        return Ok(TcpChange::State);
    }
    // RFC 5961 §3.2: on a synchronised connection a RST closes only at the
    // exact next sequence: the receiver's highest ACK, or the sender's own
    // edge (a RST right after its data, before the peer acknowledged it).
    let rst_exact = fi != FlagIdx::Rst || !synchronised(p.state) || {
        let (sd, rd) = match dir {
            Dir::Original => (&p.dirs[0], &p.dirs[1]),
            Dir::Reply => (&p.dirs[1], &p.dirs[0]),
        };
        h.seq == sd.end || rd.flags & dir_flags::MAXACK_SET == 0 || h.seq == rd.maxack
    };
    // A SYN may (re)initialise its sender's side before the window check:
    // try it on a copy. Any other segment leaves the portion alone unless it
    // passes (see `in_window`), so established traffic needs no copy.
    // A RST that will not close is checked on a copy too: it moves no edge,
    // or a second copy of it would be "at the sender's edge".
    if (p.dirs[0].flags | p.dirs[1].flags) & dir_flags::RESTORED != 0 {
        close_slack_if_live::<false>(p, dir, h, payload_len);
    }
    let accepted = if h.flags & f::SYN != 0 || !rst_exact {
        let mut trial = *p;
        let ok = in_window::<false, true>(&mut trial, dir, h, payload_len);
        if ok && rst_exact {
            *p = trial;
        }
        ok
    } else {
        in_window::<false, true>(p, dir, h, payload_len)
    };
    if !accepted {
        if fi == FlagIdx::Syn && synchronised(p.state) {
            // As Linux's conntrack (an "ignored" SYN): the endpoint answers
            // with a challenge ACK (RFC 5961 §4), so a peer that lost the
            // connection can reset it and open it again on the same port.
            return Ok(TcpChange::SynIgnored);
        }
        return Err(if fi == FlagIdx::Rst {
            TcpInvalid::RstOutOfWindow
        } else {
            TcpInvalid::OutOfWindow
        });
    }
    if !rst_exact {
        return Ok(TcpChange::RstKept);
    }
    if dir == Dir::Reply {
        p.seen_reply = true;
    }
    let old_state = p.state;
    if next != IG {
        p.state = TcpState::from_u8(next);
    }
    let mut timeout_only = None;
    if p.state != old_state {
        if !TIMEOUT_ONLY[old_state as usize][p.state as usize] {
            p.checkpointed();
            return Ok(TcpChange::State);
        }
        timeout_only = Some(old_state);
    }
    if edge_moved(p, dir) {
        return Ok(TcpChange::Window);
    }
    Ok(match timeout_only {
        Some(from) => TcpChange::Timeout { from },
        None => TcpChange::None,
    })
}

/// Both sides' sequence spaces are known: a RST must then be exact.
fn synchronised(state: TcpState) -> bool {
    matches!(
        state,
        TcpState::Established
            | TcpState::FinWait
            | TcpState::CloseWait
            | TcpState::LastAck
            | TcpState::TimeWait
    )
}

/// Seconds a connection in `state` lives without packets (Linux's defaults).
pub fn default_timeout_secs(state: TcpState) -> u64 {
    match state {
        TcpState::None => 10,
        TcpState::SynSent | TcpState::SynSent2 => 120,
        TcpState::SynRecv => 60,
        TcpState::Established => 432_000,
        TcpState::FinWait => 120,
        TcpState::CloseWait => 60,
        TcpState::LastAck => 30,
        TcpState::TimeWait => 120,
        TcpState::Close => 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::TcpOpts;
    use crate::portion::Portion;
    use Dir::{Original as O, Reply as R};

    const A: u8 = f::ACK;

    fn seg(flags: u8, seq: u32, ack: u32, window: u16) -> TcpHdr {
        TcpHdr { sport: 40000, dport: 80, seq, ack, flags, window, opts: TcpOpts::default() }
    }

    /// A handshake: client ISN 1000, server ISN 5000, windows 64000.
    fn established() -> TcpPortion {
        let mut p = new_conn(&seg(f::SYN, 1000, 0, 64000), 0).unwrap();
        assert_eq!(track(&mut p, R, &seg(f::SYN | A, 5000, 1001, 64000), 0), Ok(TcpChange::State));
        assert_eq!(p.state, TcpState::SynRecv);
        assert_eq!(track(&mut p, O, &seg(A, 1001, 5001, 64000), 0), Ok(TcpChange::State));
        assert_eq!(p.state, TcpState::Established);
        p
    }

    #[test]
    fn three_way_handshake_and_data() {
        let mut p = established();
        assert!(track(&mut p, O, &seg(A | f::PSH, 1001, 5001, 64000), 100).is_ok());
        assert!(track(&mut p, R, &seg(A, 5001, 1101, 64000), 0).is_ok());
        assert_eq!(p.dirs[0].end, 1101);
    }

    #[test]
    fn retransmission_is_accepted() {
        let mut p = established();
        track(&mut p, O, &seg(A, 1001, 5001, 64000), 500).unwrap();
        assert!(track(&mut p, O, &seg(A, 1001, 5001, 64000), 500).is_ok(), "same segment again");
        assert_eq!(p.dirs[0].end, 1501);
    }

    #[test]
    fn out_of_window_is_refused_and_leaves_state_alone() {
        let mut p = established();
        let before = p;
        assert_eq!(
            track(&mut p, O, &seg(A, 1001 + 200_000, 5001, 64000), 10),
            Err(TcpInvalid::OutOfWindow)
        );
        assert_eq!(
            track(&mut p, O, &seg(A, 1001, 5001 + 100_000, 64000), 10),
            Err(TcpInvalid::OutOfWindow),
            "ack of data never sent"
        );
        assert_eq!(
            track(&mut p, O, &seg(A, 1001u32.wrapping_sub(200_000), 5001, 64000), 10),
            Err(TcpInvalid::OutOfWindow),
            "far in the past"
        );
        assert_eq!(p, before);
    }

    #[test]
    fn rst_in_window_closes_and_out_of_window_is_refused() {
        let mut p = established();
        assert_eq!(
            track(&mut p, R, &seg(f::RST, 5001 + 1_000_000, 0, 0), 0),
            Err(TcpInvalid::RstOutOfWindow)
        );
        assert_eq!(p.state, TcpState::Established);
        assert_eq!(track(&mut p, R, &seg(f::RST, 5001, 0, 0), 0), Ok(TcpChange::State));
        assert_eq!(p.state, TcpState::Close);
    }

    /// RFC 5961 §3.2, as Linux conntrack: a RST inside the window but not at
    /// the exact next sequence keeps the connection (a blind attacker must
    /// hit one number, not a window's worth); the exact one still closes.
    #[test]
    fn an_in_window_rst_off_the_exact_sequence_keeps_the_connection() {
        let mut p = established();
        let before = p;
        assert_eq!(track(&mut p, R, &seg(f::RST, 5001 + 100, 0, 0), 0), Ok(TcpChange::RstKept));
        assert_eq!(p, before, "nothing moved");
        assert_eq!(track(&mut p, R, &seg(f::RST, 5001 + 100, 0, 0), 0), Ok(TcpChange::RstKept));
        assert_eq!(p, before, "nor on a second copy");
        assert_eq!(
            track(&mut p, O, &seg(f::RST | A, 1001 + 7, 5001, 0), 0),
            Ok(TcpChange::RstKept)
        );
        assert_eq!(p.state, TcpState::Established);
        let timeouts = [1; TcpState::COUNT];
        let t = on_segment(&mut p, O, &seg(f::RST | A, 1001 + 7, 5001, 0), 0, &timeouts).unwrap();
        assert!(t.kept == Some(TcpInvalid::RstNotExact) && !t.delta && t.moved.is_none());
        // At the receiver's highest ACK it closes.
        assert_eq!(track(&mut p, O, &seg(f::RST | A, 1001, 5001, 0), 0), Ok(TcpChange::State));
        assert_eq!(p.state, TcpState::Close);
    }

    /// A SYN with a new ISN on an established connection (the client lost
    /// it and reopens on the same port) passes without touching the state,
    /// as Linux's conntrack lets it: the server answers with a challenge ACK
    /// (RFC 5961 §4), the client resets at the exact sequence, and its next
    /// SYN opens a new connection.
    #[test]
    fn a_syn_on_an_established_connection_passes_and_changes_nothing() {
        let mut p = established();
        let before = p;
        assert_eq!(track(&mut p, O, &seg(f::SYN, 900_000, 0, 64000), 0), Ok(TcpChange::SynIgnored));
        assert_eq!(p, before, "nothing moved");
        let timeouts = [1; TcpState::COUNT];
        let t = on_segment(&mut p, O, &seg(f::SYN, 900_000, 0, 64000), 0, &timeouts).unwrap();
        assert_eq!(t.kept, Some(TcpInvalid::SynIgnored));
        assert!(!t.delta && t.moved.is_none());
        // The challenge ACK, then the client's RST at the exact sequence.
        assert!(track(&mut p, R, &seg(A, 5001, 1001, 64000), 0).is_ok());
        assert_eq!(track(&mut p, O, &seg(f::RST, 1001, 0, 0), 0), Ok(TcpChange::State));
        assert_eq!(p.state, TcpState::Close);
        // A SYN-ACK out of the blue on an established connection is still refused.
        let mut q = established();
        assert!(track(&mut q, R, &seg(f::SYN | A, 700_000, 1001, 64000), 0).is_err());
    }

    /// A RST sent right after the sender's own data, before the peer has
    /// acknowledged it (SO_LINGER 0 after a write), is at the sender's edge
    /// and closes.
    #[test]
    fn a_rst_at_the_senders_edge_closes() {
        let mut p = established();
        assert!(track(&mut p, R, &seg(A | f::PSH, 5001, 1001, 64000), 100).is_ok());
        assert_eq!(track(&mut p, R, &seg(f::RST | A, 5101, 1001, 0), 0), Ok(TcpChange::State));
        assert_eq!(p.state, TcpState::Close);
    }

    #[test]
    fn rst_to_syn_must_ack_it() {
        let mut p = new_conn(&seg(f::SYN, 1000, 0, 64000), 0).unwrap();
        assert_eq!(
            track(&mut p, R, &seg(f::RST | A, 0, 77, 0), 0),
            Err(TcpInvalid::RstOutOfWindow)
        );
        assert_eq!(track(&mut p, R, &seg(f::RST | A, 0, 1001, 0), 0), Ok(TcpChange::State));
        assert_eq!(p.state, TcpState::Close);
    }

    /// A bulk transfer that keeps the window full; returns the last checkpoint
    /// written (encoded, as in the store) and the segments that followed it.
    fn bulk_with_checkpoints() -> (Vec<u8>, Vec<(Dir, TcpHdr, u32)>) {
        let mut p = established();
        let (mss, win) = (1400u32, 64000u16);
        let mut ckpt = vec![0u8; TcpPortion::MAX_LEN];
        let n = p.encode(&mut ckpt).unwrap();
        ckpt.truncate(n);
        let mut since = Vec::new();
        let (mut next, mut acked) = (1001u32, 1001u32);
        for it in 0.. {
            // Stop where the store is stale: acks moved the window since.
            if it >= 400 && since.iter().filter(|(d, _, _)| *d == R).count() >= 2 {
                break;
            }
            // The sender fills the window; the receiver acks what is 40 kB old.
            let mut segs = Vec::new();
            while next.wrapping_add(mss) <= acked.wrapping_add(win as u32) {
                segs.push((O, seg(A, next, 5001, win), mss));
                next = next.wrapping_add(mss);
            }
            if next.wrapping_sub(acked) > 40_000 {
                acked = acked.wrapping_add(mss * 3);
                segs.push((R, seg(A, 5001, acked, win), 0));
            }
            for (d, h, len) in segs {
                match track(&mut p, d, &h, len).expect("live tracking accepts the transfer") {
                    TcpChange::None => since.push((d, h, len)),
                    _ => {
                        ckpt.resize(TcpPortion::MAX_LEN, 0);
                        let n = p.encode(&mut ckpt).unwrap();
                        ckpt.truncate(n);
                        since.clear();
                    }
                }
            }
        }
        (ckpt, since)
    }

    #[test]
    fn a_restored_portion_accepts_what_flowed_after_its_checkpoint() {
        let (ckpt, mut since) = bulk_with_checkpoints();
        // The two directions are independent streams: after a restart the
        // sender's newest data may arrive before the acks that opened the
        // window for it.
        since.sort_by_key(|(d, _, _)| d.idx());
        assert!(!since.is_empty());
        let mut p = TcpPortion::decode(&ckpt).unwrap();
        assert_eq!(p.state, TcpState::Established);
        for (i, (d, h, len)) in since.iter().enumerate() {
            assert!(track(&mut p, *d, h, *len).is_ok(), "segment {i} after the checkpoint refused");
        }
        // Control: the same stale edges without the restore slack refuse some.
        let mut strict = TcpPortion::decode(&ckpt).unwrap();
        for d in &mut strict.dirs {
            d.flags &= !dir_flags::RESTORED;
        }
        let refused =
            since.iter().filter(|(d, h, len)| track(&mut strict, *d, h, *len).is_err()).count();
        assert!(refused > 0, "the test must exercise stale edges");
        // Out of any window is still refused after a restore.
        let mut p = TcpPortion::decode(&ckpt).unwrap();
        let far = p.dirs[0].end.wrapping_add(1_000_000);
        assert_eq!(track(&mut p, O, &seg(A, far, 5001, 64000), 10), Err(TcpInvalid::OutOfWindow));
    }

    #[test]
    fn the_restore_slack_closes_on_the_first_segments_that_fit_without_it() {
        let (ckpt, mut since) = bulk_with_checkpoints();
        since.sort_by_key(|(d, _, _)| d.idx());
        let mut p = TcpPortion::decode(&ckpt).unwrap();
        for (d, h, len) in &since {
            track(&mut p, *d, h, *len).unwrap();
        }
        // Both sides have sent what the store had not seen: their edges are
        // live again, and the slack has closed.
        assert_eq!((p.dirs[0].flags | p.dirs[1].flags) & dir_flags::RESTORED, 0);
        // Data past the receiver's window by less than the slack: a restored
        // portion would take it, a live one refuses it.
        let past = p.dirs[0].maxend.wrapping_add(2000);
        assert_eq!(track(&mut p, O, &seg(A, past, 5001, 64000), 10), Err(TcpInvalid::OutOfWindow));
        let mut fresh = TcpPortion::decode(&ckpt).unwrap();
        let past_ckpt = fresh.dirs[0].maxend.wrapping_add(2000);
        assert!(
            track(&mut fresh, O, &seg(A, past_ckpt, 5001, 64000), 10).is_ok(),
            "the slack is open before"
        );
    }

    #[test]
    fn portion_round_trips_and_rejects_garbage() {
        let p = established();
        let mut b = [0u8; TcpPortion::MAX_LEN];
        let n = p.encode(&mut b).unwrap();
        let q = TcpPortion::decode(&b[..n]).unwrap();
        assert_eq!(q.state, p.state);
        assert_eq!(q.dirs[0].end, p.dirs[0].end);
        assert!(TcpPortion::decode(&b[..n - 1]).is_err(), "truncated");
        let mut bad = b;
        bad[0] = 99;
        assert!(TcpPortion::decode(&bad[..n]).is_err(), "future format");
        bad = b;
        bad[1] = 200;
        assert!(TcpPortion::decode(&bad[..n]).is_err(), "state out of range");
    }

    #[test]
    fn fin_both_sides_then_time_wait() {
        let mut p = established();
        track(&mut p, O, &seg(f::FIN | A, 1001, 5001, 64000), 0).unwrap();
        assert_eq!(p.state, TcpState::FinWait);
        track(&mut p, R, &seg(A, 5001, 1002, 64000), 0).unwrap();
        assert_eq!(p.state, TcpState::CloseWait);
        track(&mut p, R, &seg(f::FIN | A, 5001, 1002, 64000), 0).unwrap();
        assert_eq!(p.state, TcpState::LastAck);
        track(&mut p, O, &seg(A, 1002, 5002, 64000), 0).unwrap();
        assert_eq!(p.state, TcpState::TimeWait);
        // A new SYN from the client reopens; worth a delta once answered.
        assert_eq!(track(&mut p, O, &seg(f::SYN, 90000, 0, 64000), 0), Ok(TcpChange::None));
        assert_eq!(p.state, TcpState::SynSent);
        assert_eq!(track(&mut p, R, &seg(f::SYN | A, 7000, 90001, 64000), 0), Ok(TcpChange::State));
        assert_eq!(p.state, TcpState::SynRecv);
    }

    fn dir_state() -> impl proptest::strategy::Strategy<Value = TcpDirState> {
        use proptest::prelude::*;
        (any::<u32>(), 0u32..200_000, 0u32..300_000, any::<u32>(), 0u8..=14, any::<u8>()).prop_map(
            |(end, ahead, maxwin, maxack, scale, flags)| TcpDirState {
                end,
                maxend: end.wrapping_add(ahead),
                maxwin,
                maxack,
                scale,
                flags: flags & 0x1f,
            },
        )
    }

    proptest::proptest! {
        /// The word encoding is the byte encoding, byte for byte.
        #[test]
        fn the_word_encoding_is_the_byte_encoding(d0 in dir_state(), d1 in dir_state(), ckpt in proptest::prelude::any::<[u32; 2]>(), seen_reply in proptest::prelude::any::<bool>(), state in 0u8..TcpState::COUNT as u8) {
            let p = TcpPortion { dirs: [d0, d1], ckpt_end: ckpt, state: TcpState::from_u8(state), seen_reply };
            let mut bytes = [0u8; 64];
            let n = p.encode(&mut bytes).unwrap();
            proptest::prop_assert_eq!(n, TcpPortion::WORDS_LEN);
            let words: Vec<u8> = p.encode_words().iter().flat_map(|w| w.to_le_bytes()).collect();
            proptest::prop_assert_eq!(&words[..n], &bytes[..n]);
        }
    }

    proptest::proptest! {
        /// The established fast path gives what the general path gives: the
        /// same verdict, change and portion, on segments in and out of window.
        #[test]
        fn the_plain_ack_path_agrees_with_the_general_one(
            d0 in dir_state(), d1 in dir_state(), ckpt in proptest::prelude::any::<[u32; 2]>(), seen_reply in proptest::prelude::any::<bool>(),
            reply in proptest::prelude::any::<bool>(), seq_off in -300_000i64..300_000, ack_off in -300_000i64..300_000,
            extra in 0u8..8, window in proptest::prelude::any::<u16>(), len in 0u32..3000,
        ) {
            let p = TcpPortion { dirs: [d0, d1], ckpt_end: ckpt, state: TcpState::Established, seen_reply };
            let dir = if reply { R } else { O };
            let (sd, rd) = if reply { (d1, d0) } else { (d0, d1) };
            // PSH, ECE and CWR ride along; around the edges, so both verdicts occur.
            let flags = A | [0, f::PSH, 0x40, 0x80, f::PSH | 0x40, f::PSH | 0x80, 0xc0, f::PSH | 0xc0][extra as usize];
            let h = seg(flags, sd.end.wrapping_add(seq_off as u32), rd.end.wrapping_add(ack_off as u32), window);
            let (mut fast, mut general) = (p, p);
            let a = track_plain_ack(&mut fast, dir, &h, len);
            let b = track_any(&mut general, dir, &h, len);
            proptest::prop_assert_eq!(a, b);
            proptest::prop_assert_eq!(fast, general);
            proptest::prop_assert_eq!(track(&mut { p }, dir, &h, len), b);
        }
    }

    #[test]
    fn only_fin_wait_and_close_wait_differ_by_their_timeout_alone() {
        let mut pairs = Vec::new();
        for (a, row) in TIMEOUT_ONLY.iter().enumerate() {
            for (b, &quiet) in row.iter().enumerate() {
                if quiet {
                    pairs.push((TcpState::from_u8(a as u8), TcpState::from_u8(b as u8)));
                }
            }
        }
        assert_eq!(
            pairs,
            vec![
                (TcpState::FinWait, TcpState::CloseWait),
                (TcpState::CloseWait, TcpState::FinWait)
            ]
        );
    }

    #[test]
    fn the_ack_of_a_fin_changes_only_the_timeout_and_a_restore_before_it_closes_alike() {
        let mut p = established();
        assert_eq!(track(&mut p, O, &seg(f::FIN | A, 1001, 5001, 64000), 0), Ok(TcpChange::State));
        let mut ckpt = [0u8; 64];
        let n = p.encode(&mut ckpt).unwrap();
        assert_eq!(
            track(&mut p, R, &seg(A, 5001, 1002, 64000), 0),
            Ok(TcpChange::Timeout { from: TcpState::FinWait })
        );
        assert_eq!(p.state, TcpState::CloseWait);
        // A dataplane restored from the FIN's checkpoint (FIN_WAIT) takes the
        // rest of the close (and stray retransmissions) exactly as the live one.
        let mut restored = TcpPortion::decode(&ckpt[..n]).unwrap();
        assert_eq!(restored.state, TcpState::FinWait);
        let rest = [
            (R, seg(A, 5001, 1002, 64000)),
            (O, seg(f::FIN | A, 1001, 5001, 64000)),
            (R, seg(f::FIN | A, 5001, 1002, 64000)),
            (O, seg(A, 1002, 5002, 64000)),
        ];
        for (d, h) in rest {
            let live = track(&mut p, d, &h, 0).is_ok();
            assert_eq!(track(&mut restored, d, &h, 0).is_ok(), live, "{h:?}");
            if p.state != TcpState::CloseWait {
                assert_eq!(restored.state, p.state);
            }
        }
        assert_eq!(p.state, TcpState::TimeWait);
    }

    #[test]
    fn simultaneous_open() {
        let mut p = new_conn(&seg(f::SYN, 1000, 0, 64000), 0).unwrap();
        track(&mut p, R, &seg(f::SYN, 5000, 0, 64000), 0).unwrap();
        assert_eq!(p.state, TcpState::SynSent2);
        track(&mut p, O, &seg(f::SYN | A, 1000, 5001, 64000), 0).unwrap();
        assert_eq!(p.state, TcpState::SynRecv);
        track(&mut p, R, &seg(f::SYN | A, 5000, 1001, 64000), 0).unwrap();
        track(&mut p, O, &seg(A, 1001, 5001, 64000), 0).unwrap();
        assert_eq!(p.state, TcpState::Established);
    }

    #[test]
    fn new_must_be_syn_and_flags_must_be_sane() {
        assert_eq!(new_conn(&seg(A, 1, 1, 100), 0), Err(TcpInvalid::NewNotSyn));
        assert_eq!(new_conn(&seg(f::SYN | A, 1, 1, 100), 0), Err(TcpInvalid::NewNotSyn));
        assert_eq!(new_conn(&seg(f::SYN | f::FIN, 1, 0, 100), 0), Err(TcpInvalid::BadFlags));
        assert_eq!(new_conn(&seg(0, 1, 0, 100), 0), Err(TcpInvalid::BadFlags));
        let mut p = established();
        assert_eq!(
            track(&mut p, O, &seg(f::SYN | f::RST, 1001, 0, 100), 0),
            Err(TcpInvalid::BadFlags)
        );
        assert_eq!(
            track(&mut p, O, &seg(f::SYN | A, 1001, 5001, 100), 0),
            Err(TcpInvalid::BadTransition),
            "SYN-ACK from the client"
        );
    }

    #[test]
    fn window_scale_applies_only_when_both_offer_it() {
        let mut syn = seg(f::SYN, 1000, 0, 65535);
        syn.opts.wscale = Some(7);
        let mut p = new_conn(&syn, 0).unwrap();
        let mut synack = seg(f::SYN | A, 5000, 1001, 65535);
        synack.opts.wscale = Some(7);
        track(&mut p, R, &synack, 0).unwrap();
        track(&mut p, O, &seg(A, 1001, 5001, 1000), 0).unwrap();
        assert_eq!((p.dirs[0].scale, p.dirs[1].scale), (7, 7));
        // The server advertised 1000 << 7 = 128000: the client may send that far.
        track(&mut p, R, &seg(A, 5001, 1001, 1000), 0).unwrap();
        assert!(track(&mut p, O, &seg(A, 1001 + 120_000, 5001, 1000), 1000).is_ok());

        let mut p = new_conn(&syn, 0).unwrap();
        track(&mut p, R, &seg(f::SYN | A, 5000, 1001, 65535), 0).unwrap();
        assert_eq!(
            (p.dirs[0].scale, p.dirs[1].scale),
            (0, 0),
            "no scaling unless both SYNs carry it"
        );
    }

    #[test]
    fn window_movement_asks_for_a_checkpoint() {
        let mut p = established();
        let mut seqno = 1001u32;
        let mut changes = 0;
        for _ in 0..100 {
            if track(&mut p, O, &seg(A, seqno, 5001, 64000), 1000) == Ok(TcpChange::Window) {
                changes += 1;
            }
            seqno += 1000;
            track(&mut p, R, &seg(A, 5001, seqno, 64000), 0).unwrap();
        }
        // 100 kB with a 64 kB window: a checkpoint every ~16 kB, not per packet.
        assert!((4..=8).contains(&changes), "{changes}");
    }
}
