//! The TCP state machine declared once: Linux's tcp_conntracks table, and
//! which moves only change how long a restored connection would be kept.

use super::TcpState;
use crate::parse::tcp_flags as f;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum FlagIdx {
    Syn = 0,
    SynAck,
    Fin,
    Ack,
    Rst,
    None,
}

pub(super) fn flag_idx(flags: u8) -> FlagIdx {
    if flags & f::RST != 0 {
        FlagIdx::Rst
    } else if flags & f::SYN != 0 {
        if flags & f::ACK != 0 {
            FlagIdx::SynAck
        } else {
            FlagIdx::Syn
        }
    } else if flags & f::FIN != 0 {
        FlagIdx::Fin
    } else if flags & f::ACK != 0 {
        FlagIdx::Ack
    } else {
        FlagIdx::None
    }
}

/// Flag combinations real stacks send (Linux's tcp_valid_flags); PSH, ECE and
/// CWR are ignored.
pub(super) fn valid_flags(flags: u8) -> bool {
    let x = flags & (f::FIN | f::SYN | f::RST | f::ACK | f::URG);
    matches!(
        x,
        f::SYN | 0x22 /* SYN|URG */ | 0x12 /* SYN|ACK */ | f::RST | 0x14 /* RST|ACK */ | 0x11 /* FIN|ACK */ | 0x31 /* FIN|ACK|URG */ | f::ACK | 0x30 /* ACK|URG */
    )
}

pub(super) const IV: u8 = 0xfe; // invalid
pub(super) const IG: u8 = 0xff; // ignore: accept without changing state

/// TRANSITIONS[dir][flag][state] = new state. Columns: NONE, SYN_SENT,
/// SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE,
/// SYN_SENT2 — Linux's tcp_conntracks, with ACK on NONE invalid (strict, no
/// mid-stream pickup).
pub(super) const TRANSITIONS: [[[u8; TcpState::COUNT]; 6]; 2] = {
    const NO: u8 = 0;
    const SS: u8 = 1;
    const SR: u8 = 2;
    const ES: u8 = 3;
    const FW: u8 = 4;
    const CW: u8 = 5;
    const LA: u8 = 6;
    const TW: u8 = 7;
    const CL: u8 = 8;
    const S2: u8 = 9;
    let _ = NO;
    [
        // Original direction.
        [
            /* syn    */ [SS, SS, IG, IG, IG, IG, IG, SS, SS, S2],
            /* synack */ [IV, IV, SR, IV, IV, IV, IV, IV, IV, SR],
            /* fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
            /* ack    */ [IV, IV, ES, ES, CW, CW, TW, TW, CL, IV],
            /* rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
            /* none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
        ],
        // Reply direction.
        [
            /* syn    */ [IV, S2, IV, IV, IV, IV, IV, SS, IV, S2],
            /* synack */ [IV, SR, IG, IG, IG, IG, IG, IG, IG, SR],
            /* fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
            /* ack    */ [IV, IG, SR, ES, CW, CW, TW, TW, CL, IG],
            /* rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
            /* none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
        ],
    ]
};

/// TIMEOUT_ONLY[a][b]: moving from state a to state b changes nothing a
/// restore would decide differently but the timeout. Their columns of
/// `TRANSITIONS` are equal (IG keeps each in itself, so equal columns also
/// lead back into the pair), and neither is a state `track` or `in_window`
/// treats specially (SYN_SENT, SYN_RECV, TIME_WAIT, CLOSE).
pub(super) const TIMEOUT_ONLY: [[bool; TcpState::COUNT]; TcpState::COUNT] = {
    const fn special(s: usize) -> bool {
        matches!(s, 1 | 2 | 7 | 8)
    }
    let mut t = [[false; TcpState::COUNT]; TcpState::COUNT];
    let mut a = 0;
    while a < TcpState::COUNT {
        let mut b = 0;
        while b < TcpState::COUNT {
            let mut same = a != b && !special(a) && !special(b);
            let mut d = 0;
            while d < 2 {
                let mut f = 0;
                while f < 6 {
                    same = same && TRANSITIONS[d][f][a] == TRANSITIONS[d][f][b];
                    f += 1;
                }
                d += 1;
            }
            t[a][b] = same;
            b += 1;
        }
        a += 1;
    }
    t
};
