//! What of a protected connection is checkpointed besides its log, so a
//! restarted dataplane carries on where the killed one was: the phase, both
//! sides' numbers as the client sees them, the digest, and the splice.
//!
//! Not kept: a held FIN or RST (unacknowledged, the server sends it again),
//! a replay in flight (it starts over: the replay clears whatever socket
//! the last one left), timers (they start again from the restore).

use super::{Phase, Protected};
use crate::protect::log::{Acked, AckedDigest, Checked, ClientLog};
use crate::protect::segment::SynOptions;
use crate::protect::splice::{ServerSide, Splice};
use crate::protect::{Ended, ProtectPolicy};
use thiserror::Error;

/// Bytes of an encoded snapshot.
pub const SNAPSHOT_BYTES: usize = 104;
/// The encoding's own version, byte 0: a record of another is refused.
/// 2 adds byte 9: bit 0 the client's half-close, bit 1 a server FIN
/// released as a close; a record of 1 reads as 2 with it 0 (1 ended
/// protection at the client's FIN). 3 adds the VLAN tags to the record's
/// wire part (after the snapshot, `firewall::protect`); a record of 2 has
/// them zero there, untagged, as its connection was. 4 widens the wire
/// part's addresses to 16 bytes (IPv6, IPv4 mapped); a record of 3 or
/// before is told by its length and read as IPv4.
const FORMAT: u8 = 4;
const FORMAT_OLDEST: u8 = 1;
/// Where the time since the server went down sits: it changes at every
/// walk, and that alone is no reason to write a snapshot again.
pub const DOWN_FOR: std::ops::Range<usize> = 72..80;

const UP: u8 = 1;
const DOWN: u8 = 2;
const REPLAYING: u8 = 3;
/// Protection over, the splice still rewriting every segment.
const SPLICED: u8 = 4;

const F_SYN_WSCALE: u8 = 1;
const F_SACK: u8 = 2;
const F_CLIENT_TS: u8 = 4;
const F_SERVER_WSCALE: u8 = 8;
const F_SERVER_TS: u8 = 16;
const F_SPLICE: u8 = 32;
const F_SPLICE_TS: u8 = 64;
const F_DIGEST_HEAD: u8 = 128;

/// Why a snapshot cannot be restored: the connection then goes on
/// unprotected (counted), as it would have without `[[protected]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SnapshotError {
    #[error("protection record of {0} bytes, expected {SNAPSHOT_BYTES}: written by another build; the connection goes on unprotected")]
    Length(usize),
    #[error("protection record format {0}, this build reads {FORMAT_OLDEST} to {FORMAT}: the connection goes on unprotected")]
    Format(u8),
    #[error("protection record in phase {0}, which no build writes: damaged; the connection goes on unprotected")]
    Phase(u8),
    #[error("checkpointd holds {held} logged bytes of this connection but its record counts {counted}: the log lost records; the connection goes on unprotected")]
    LogShort { held: usize, counted: usize },
    #[error("the stored log of {0} bytes passes the service's log_bound: the bound was lowered; the connection goes on unprotected")]
    LogBound(usize),
    #[error("a window scale in the protection record passes 14: damaged; the connection goes on unprotected")]
    Scale,
}

/// What an operator is shown of a snapshot (`lazarusctl conns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotView {
    /// up, down, replaying or spliced (protection over, the splice kept).
    pub phase: &'static str,
    pub recoveries: u32,
    /// Client bytes logged, from stream offset `log_base` on.
    pub log_bytes: u32,
    pub log_base: u64,
}

/// Reads what `SnapshotView` shows of a snapshot.
pub fn view(b: &[u8]) -> Result<SnapshotView, SnapshotError> {
    let b: &[u8; SNAPSHOT_BYTES] = b.try_into().map_err(|_| SnapshotError::Length(b.len()))?;
    if !(FORMAT_OLDEST..=FORMAT).contains(&b[0]) {
        return Err(SnapshotError::Format(b[0]));
    }
    let phase = match b[1] {
        UP => "up",
        DOWN => "down",
        REPLAYING => "replaying",
        SPLICED => "spliced",
        other => return Err(SnapshotError::Phase(other)),
    };
    let w = |i: usize| u32::from_le_bytes(b[12 + 4 * i..16 + 4 * i].try_into().unwrap());
    Ok(SnapshotView {
        phase,
        recoveries: w(13),
        log_bytes: w(14),
        log_base: u64::from_le_bytes(b[80..88].try_into().unwrap()),
    })
}

impl Protected {
    /// Whether a snapshot is worth writing: a connection still opening has
    /// no server side yet, and one whose protection ended without a splice
    /// needs nothing restored.
    pub fn worth_snapshot(&self) -> bool {
        match self.phase {
            Phase::Opening => false,
            Phase::Ended(_) => self.splice.is_some(),
            _ => true,
        }
    }

    /// Writes the snapshot into `b`, at `now` (ns): how long the server
    /// has been down is kept as a duration, which a restarted process (whose
    /// clock may run at a rate measured anew) adds to its own now.
    pub fn snapshot(&self, b: &mut [u8; SNAPSHOT_BYTES], now: u64) {
        *b = [0; SNAPSHOT_BYTES];
        let splice = self.splice;
        b[0] = FORMAT;
        b[1] = match self.phase {
            Phase::Down => DOWN,
            Phase::Replaying => REPLAYING,
            Phase::Ended(_) => SPLICED,
            Phase::Opening | Phase::Up => UP,
        };
        let mut flags = 0;
        let mut flag = |on: bool, f: u8| {
            if on {
                flags |= f;
            }
        };
        flag(self.syn.wscale.is_some(), F_SYN_WSCALE);
        flag(self.syn.sack_perm, F_SACK);
        flag(self.client_tsval.is_some(), F_CLIENT_TS);
        flag(self.server.wscale.is_some(), F_SERVER_WSCALE);
        flag(self.server.tsval.is_some(), F_SERVER_TS);
        flag(splice.is_some(), F_SPLICE);
        flag(splice.is_some_and(|s| s.parts().1.is_some()), F_SPLICE_TS);
        let checked = self.digest.checked();
        flag(checked.head.is_some(), F_DIGEST_HEAD);
        b[2] = flags;
        b[3] = self.syn.wscale.unwrap_or(0);
        b[4..6].copy_from_slice(&self.syn.mss.to_le_bytes());
        b[6] = self.server.wscale.unwrap_or(0);
        let (seq, ts, old, new) = splice.map_or((0, None, 0, 0), |s| s.parts());
        b[7] = old;
        b[8] = new;
        b[9] = u8::from(self.client_fin) | u8::from(self.server_fin_released) << 1;
        let running = self.digest.running();
        let acked = checked.acked;
        let words = [
            self.client_isn,
            self.client_tsval.unwrap_or(0),
            self.client_acked,
            self.server.isn,
            self.server.tsval.unwrap_or(0),
            self.server_end,
            self.server_acked,
            running.end,
            running.digest,
            acked.end,
            acked.digest,
            seq,
            ts.unwrap_or(0),
            self.recoveries,
            self.log.bytes().len() as u32,
        ];
        for (i, w) in words.iter().enumerate() {
            b[12 + 4 * i..16 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        // Only a server that is down has a clock running: an idle record
        // stays the same, and is not written again.
        let down_for = if self.is_down() { now.saturating_sub(self.down_since) } else { 0 };
        b[DOWN_FOR].copy_from_slice(&down_for.to_le_bytes());
        b[80..88].copy_from_slice(&self.log.base().to_le_bytes());
        let head = checked.head.unwrap_or(Acked { end: 0, digest: 0 });
        for (i, w) in [head.end, head.digest, checked.from, self.syn_isn].iter().enumerate() {
            b[88 + 4 * i..92 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
    }

    /// The connection a snapshot describes, its log `log` as checkpointd
    /// holds it from stream offset `held_from`. A connection that was
    /// replaying starts its replay over; one that was down probes the
    /// service.
    pub fn restore(
        policy: ProtectPolicy,
        b: &[u8],
        log: Vec<u8>,
        held_from: u64,
        now: u64,
    ) -> Result<Protected, SnapshotError> {
        let b: &[u8; SNAPSHOT_BYTES] = b.try_into().map_err(|_| SnapshotError::Length(b.len()))?;
        if !(FORMAT_OLDEST..=FORMAT).contains(&b[0]) {
            return Err(SnapshotError::Format(b[0]));
        }
        let w = |i: usize| u32::from_le_bytes(b[12 + 4 * i..16 + 4 * i].try_into().unwrap());
        let flags = b[2];
        let on = |f: u8| flags & f != 0;
        let counted = w(14) as usize;
        let base = u64::from_le_bytes(b[80..88].try_into().unwrap());
        // checkpointd may still hold bytes before the snapshot's truncation.
        let Some(skip) = base.checked_sub(held_from) else {
            return Err(SnapshotError::LogShort { held: 0, counted });
        };
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        if skip > log.len() || log.len() - skip < counted {
            return Err(SnapshotError::LogShort { held: log.len().saturating_sub(skip), counted });
        }
        let log = &log[skip..];
        let client_isn = w(0);
        let len = log.len();
        let log = ClientLog::restored(
            client_isn.wrapping_add(1),
            base,
            policy.log_bound,
            log,
            policy.log_memory,
        )
        .ok_or(SnapshotError::LogBound(len))?;
        let splice = if on(F_SPLICE) {
            let ts = on(F_SPLICE_TS).then_some(w(12));
            Some(Splice::from_parts(w(11), ts, b[7], b[8]).ok_or(SnapshotError::Scale)?)
        } else {
            None
        };
        let phase = match b[1] {
            UP => Phase::Up,
            DOWN | REPLAYING => Phase::Down,
            SPLICED if splice.is_some() => Phase::Ended(Ended::Closed),
            other => return Err(SnapshotError::Phase(other)),
        };
        let mut p = Protected::new_blank(policy, client_isn, log);
        p.phase = phase;
        p.syn = SynOptions {
            mss: u16::from_le_bytes([b[4], b[5]]),
            wscale: on(F_SYN_WSCALE).then_some(b[3]),
            sack_perm: on(F_SACK),
        };
        p.client_tsval = on(F_CLIENT_TS).then_some(w(1));
        p.client_acked = w(2);
        p.server = ServerSide {
            isn: w(3),
            wscale: on(F_SERVER_WSCALE).then_some(b[6]),
            tsval: on(F_SERVER_TS).then_some(w(4)),
        };
        p.server_end = w(5);
        p.server_acked = w(6);
        let x = |i: usize| u32::from_le_bytes(b[88 + 4 * i..92 + 4 * i].try_into().unwrap());
        p.digest = AckedDigest::from_parts(
            Checked {
                head: on(F_DIGEST_HEAD).then_some(Acked { end: x(0), digest: x(1) }),
                from: x(2),
                acked: Acked { end: w(9), digest: w(10) },
            },
            Acked { end: w(7), digest: w(8) },
        );
        p.splice = splice;
        p.syn_isn = x(3);
        // Format 1 wrote 0 there.
        p.client_fin = b[9] & 1 != 0;
        p.server_fin_released = b[9] & 2 != 0;
        p.recoveries = w(13);
        p.down_since = now.saturating_sub(u64::from_le_bytes(b[DOWN_FOR].try_into().unwrap()));
        p.next_keepalive = now;
        match b[1] {
            REPLAYING => p.service_up(now),
            // The hook's word that the service is back may have come while
            // no dataplane listened: the service is probed (the replay
            // tried, and tried again later while refused or unanswered).
            DOWN => p.retry_at = Some(now),
            _ => {}
        }
        Ok(p)
    }
}
