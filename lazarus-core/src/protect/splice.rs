//! A client's connection carried on by a restarted server (issue 21). The
//! firewall opens the new server connection in the client's name, with the
//! client's ISN and SYN options, so the client's sequence space is the same
//! on both. The new server chooses its own ISN, timestamp clock and window
//! scale, and the client must keep seeing the old server's: its PAWS check
//! drops a TSval that goes back, and its window check drops data outside the
//! old sequence space. So every segment is rewritten after the splice:
//!
//! * server to client: sequence number, TSval, and the window rescaled;
//! * client to server: acknowledgment number, SACK blocks, TSecr.
//!
//! The TCP checksum is updated in place for what changed (RFC 1624), so
//! the payload is never read. The addresses, ports and lengths do not change,
//! so the pseudo-header does not either.

use crate::parse::checksum::fold;
use thiserror::Error;

/// What the firewall knows of one server's side of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSide {
    /// The server's initial sequence number.
    pub isn: u32,
    /// The window scale shift the server announced in its SYN-ACK; None when
    /// it announced none (then neither side scales, RFC 7323 §2.2).
    pub wscale: Option<u8>,
    /// For the old server: the largest TSval (in serial arithmetic) the
    /// client has seen from it. For the new one: the TSval of its SYN-ACK.
    /// None when timestamps are off.
    pub tsval: Option<u32>,
}

/// Why a splice cannot be made, or a segment cannot be rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SpliceError {
    /// The restarted server answered the replayed SYN without timestamps
    /// while the client's connection uses them, or the other way round; the
    /// client would drop every segment. Reset both sides.
    #[error("the restarted server's timestamps differ from the old one's (used by one, not the other): the connection cannot be spliced; reset both sides")]
    TimestampsDiffer,
    /// The restarted server scales its window where the old one did not, or
    /// the other way round: the client's window field would mean another
    /// size to it. Reset both sides.
    #[error("the restarted server's window scaling differs from the old one's (on for one, off for the other): the connection cannot be spliced; reset both sides")]
    ScalingDiffers,
    /// The segment is signed or carries its own sequence space (TCP-MD5,
    /// TCP-AO, MPTCP), which a rewrite would break. Reset both sides.
    #[error("the segment carries TCP-MD5, TCP-AO or MPTCP options, which a rewrite breaks: the connection cannot be spliced; reset both sides")]
    Unsupported,
    /// A SYN after the splice: the handshake with the new server is the
    /// firewall's to answer, never the client's to see.
    #[error("a SYN cannot be spliced: the firewall answers the new server's handshake itself")]
    Handshake,
    /// The segment's header or options are malformed; drop it and count it.
    #[error("malformed TCP header or options: segment not rewritten; drop it")]
    Malformed,
}

/// The rewrite of every segment after a splice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Splice {
    /// Added to the new server's sequence numbers to give the old one's.
    seq: u32,
    /// Added to the new server's TSval, so that the client sees the old
    /// clock go on; None when timestamps are off.
    ts: Option<u32>,
    /// The old server's window scale (what the client applies) and the new
    /// one's (what the new server's window field means).
    scale_old: u8,
    scale_new: u8,
}

const SEQ_AT: usize = 4;
const ACK_AT: usize = 8;
const WINDOW_AT: usize = 14;
const CHECKSUM_AT: usize = 16;
const SYN_FLAG: u8 = 0x02;
const ACK_FLAG: u8 = 0x10;
const KIND_SACK: u8 = 5;
const KIND_TIMESTAMP: u8 = 8;
/// TCP-MD5 (RFC 2385), TCP-AO (RFC 5925), MPTCP (RFC 8684).
const KINDS_UNSUPPORTED: [u8; 3] = [19, 29, 30];
/// RFC 7323: a larger shift is taken as 14.
const MAX_SCALE: u8 = 14;

impl Splice {
    /// The splice from `old`, the server the client was talking to, to
    /// `new`, the one that answered the replayed SYN.
    pub fn new(old: ServerSide, new: ServerSide) -> Result<Splice, SpliceError> {
        let ts = match (old.tsval, new.tsval) {
            // The new server's first value follows the last one the client saw.
            (Some(last), Some(first)) => Some(last.wrapping_add(1).wrapping_sub(first)),
            (None, None) => None,
            _ => return Err(SpliceError::TimestampsDiffer),
        };
        let (scale_old, scale_new) = match (old.wscale, new.wscale) {
            (Some(o), Some(n)) => (o.min(MAX_SCALE), n.min(MAX_SCALE)),
            (None, None) => (0, 0),
            _ => return Err(SpliceError::ScalingDiffers),
        };
        Ok(Splice { seq: old.isn.wrapping_sub(new.isn), ts, scale_old, scale_new })
    }

    /// Its fields as a checkpoint carries them: the sequence offset, the
    /// timestamp offset, the old and the new window scale.
    pub fn parts(&self) -> (u32, Option<u32>, u8, u8) {
        (self.seq, self.ts, self.scale_old, self.scale_new)
    }

    /// The splice `parts` gave; None when a scale is past RFC 7323's 14.
    pub fn from_parts(seq: u32, ts: Option<u32>, scale_old: u8, scale_new: u8) -> Option<Splice> {
        (scale_old <= MAX_SCALE && scale_new <= MAX_SCALE).then_some(Splice {
            seq,
            ts,
            scale_old,
            scale_new,
        })
    }

    /// A sequence number of the new server's, as the client sees it.
    pub fn client_seq(&self, seq: u32) -> u32 {
        seq.wrapping_add(self.seq)
    }

    /// A TSval of the new server's, as the client sees it.
    pub fn client_tsval(&self, tsval: u32) -> u32 {
        tsval.wrapping_add(self.ts.unwrap_or(0))
    }

    /// Rewrites a segment the new server sent, `tcp` being its TCP header
    /// and payload, into the one the old server would have sent.
    pub fn to_client(&self, tcp: &mut [u8]) -> Result<(), SpliceError> {
        let opts = options(tcp)?;
        if tcp[13] & SYN_FLAG != 0 {
            return Err(SpliceError::Handshake);
        }
        let seq = be32(tcp, SEQ_AT).wrapping_add(self.seq);
        patch(tcp, SEQ_AT, &seq.to_be_bytes());
        let wide = u32::from(be16(tcp, WINDOW_AT)) << self.scale_new;
        let window = (wide >> self.scale_old).min(u32::from(u16::MAX)) as u16;
        patch(tcp, WINDOW_AT, &window.to_be_bytes());
        if let (Some(ts), Some(at)) = (self.ts, opts.timestamp) {
            let tsval = be32(tcp, at).wrapping_add(ts);
            patch(tcp, at, &tsval.to_be_bytes());
        }
        Ok(())
    }

    /// Rewrites a segment the client sent, `tcp` being its TCP header and
    /// payload, into one the new server accepts.
    pub fn to_server(&self, tcp: &mut [u8]) -> Result<(), SpliceError> {
        let opts = options(tcp)?;
        if tcp[13] & SYN_FLAG != 0 {
            return Err(SpliceError::Handshake);
        }
        if tcp[13] & ACK_FLAG != 0 {
            let ack = be32(tcp, ACK_AT).wrapping_sub(self.seq);
            patch(tcp, ACK_AT, &ack.to_be_bytes());
        }
        if let Some((at, blocks)) = opts.sack {
            // Each block's edges are in the server's sequence space.
            for edge in 0..2 * usize::from(blocks) {
                let e = at + 4 * edge;
                let v = be32(tcp, e).wrapping_sub(self.seq);
                patch(tcp, e, &v.to_be_bytes());
            }
        }
        if let (Some(ts), Some(at)) = (self.ts, opts.timestamp) {
            // TSecr echoes a TSval the client saw: the old clock's.
            let tsecr = be32(tcp, at + 4).wrapping_sub(ts);
            patch(tcp, at + 4, &tsecr.to_be_bytes());
        }
        Ok(())
    }
}

/// Where a segment's rewritten options sit.
#[derive(Debug, Default)]
struct Options {
    /// Offset of TSval (TSecr follows).
    timestamp: Option<usize>,
    /// Offset of the first block's left edge, and how many blocks.
    sack: Option<(usize, u8)>,
}

/// Finds the options this module rewrites, checking every length on the way.
fn options(tcp: &[u8]) -> Result<Options, SpliceError> {
    let doff = usize::from(*tcp.get(12).ok_or(SpliceError::Malformed)? >> 4) * 4;
    if doff < 20 || doff > tcp.len() {
        return Err(SpliceError::Malformed);
    }
    let mut found = Options::default();
    let mut i = 20;
    while i < doff {
        match tcp[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = usize::from(
                    *tcp.get(i + 1).filter(|_| i + 1 < doff).ok_or(SpliceError::Malformed)?,
                );
                if len < 2 || i + len > doff {
                    return Err(SpliceError::Malformed);
                }
                match (kind, len) {
                    (KIND_TIMESTAMP, 10) => found.timestamp = Some(i + 2),
                    (KIND_SACK, _) if len % 8 == 2 && len > 2 => {
                        found.sack = Some((i + 2, ((len - 2) / 8) as u8));
                    }
                    (k, _) if KINDS_UNSUPPORTED.contains(&k) => {
                        return Err(SpliceError::Unsupported)
                    }
                    // A timestamp or SACK of the wrong length is ignored, as
                    // Linux and the parser ignore it: left as it is.
                    _ => {}
                }
                i += len;
            }
        }
    }
    Ok(found)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The ones'-complement sum of the 16-bit words of `tcp` (aligned to its
/// start) that cover bytes `from..to`.
fn words_sum(tcp: &[u8], from: usize, to: usize) -> u32 {
    let mut s = 0u32;
    let mut w = from & !1;
    while w < to {
        s += u32::from(u16::from_be_bytes([tcp[w], tcp.get(w + 1).copied().unwrap_or(0)]));
        w += 2;
    }
    s
}

/// Writes `new` at `at` and updates the checksum for it (RFC 1624, eqn. 3:
/// HC' = ~(~HC + ~m + m')), over whole words whatever the alignment: an
/// option may start at an odd offset.
/// Clears `flag` in a segment's TCP header `tcp`, its checksum kept right
/// (a FIN held back from the data it came with). `tcp` holds at least the
/// fixed header.
pub(crate) fn clear_flag(tcp: &mut [u8], flag: u8) {
    let word = [tcp[12], tcp[13] & !flag];
    patch(tcp, 12, &word);
}

fn patch(tcp: &mut [u8], at: usize, new: &[u8]) {
    let end = at + new.len();
    let old = fold(u64::from(words_sum(tcp, at, end)));
    tcp[at..end].copy_from_slice(new);
    let new = fold(u64::from(words_sum(tcp, at, end)));
    let hc = be16(tcp, CHECKSUM_AT);
    let sum = fold(u64::from(!hc) + u64::from(!old) + u64::from(new));
    tcp[CHECKSUM_AT..CHECKSUM_AT + 2].copy_from_slice(&(!sum).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{eth, ipv4, tcp_flags::*, tcp_segment, Tcp};
    use crate::parse::checksum::{verify, RxChecksums};
    use crate::parse::{parse, proto, Parsed, L4};
    use proptest::prelude::*;

    const C: [u8; 4] = [10, 0, 0, 1];
    const S: [u8; 4] = [10, 0, 0, 2];
    const TCP_AT: usize = 14 + 20;

    /// A frame whose checksums are right, with the given options.
    fn frame(from_server: bool, seq: u32, ack: u32, window: u16, opts: &[u8]) -> Vec<u8> {
        let t = Tcp {
            sport: if from_server { 6379 } else { 40000 },
            dport: if from_server { 40000 } else { 6379 },
            seq,
            ack,
            flags: ACK | PSH,
            window,
            opts,
            payload: b"+OK\r\n",
        };
        let (src, dst) = if from_server { (S, C) } else { (C, S) };
        eth(ipv4(proto::TCP, src, dst, &tcp_segment(&t)))
    }

    fn timestamps(tsval: u32, tsecr: u32) -> Vec<u8> {
        let mut o = vec![1, 1, 8, 10];
        o.extend_from_slice(&tsval.to_be_bytes());
        o.extend_from_slice(&tsecr.to_be_bytes());
        o
    }

    /// The segment's header as the parser reads it, after checking both
    /// checksums from scratch.
    fn read(f: &[u8]) -> crate::parse::TcpHdr {
        let Ok(Parsed::Ip(p)) = parse(f) else { panic!("not an IP frame") };
        verify(f, &p, RxChecksums::UNKNOWN).expect("the checksums hold after the rewrite");
        let L4::Tcp(h) = p.l4 else { panic!("not TCP") };
        h
    }

    fn side(isn: u32, wscale: u8, tsval: Option<u32>) -> ServerSide {
        ServerSide { isn, wscale: Some(wscale), tsval }
    }

    #[test]
    fn the_client_sees_the_old_servers_numbers_and_the_server_its_own() {
        let old = side(5000, 7, Some(900_000));
        let new = side(3_000_000_000, 7, Some(12));
        let sp = Splice::new(old, new).unwrap();
        // The new server's first byte of output, with its first TSval.
        let mut f = frame(true, 3_000_000_001, 1001, 502, &timestamps(12, 777));
        sp.to_client(&mut f[TCP_AT..]).unwrap();
        let h = read(&f);
        assert_eq!(h.seq, 5001, "the same stream offset in the old space");
        assert_eq!(
            h.opts.timestamp,
            Some((900_001, 777)),
            "the clock goes on from the last value the client saw"
        );
        assert_eq!(h.window, 502, "same scale: same window");
        // The client acknowledges it, echoing the TSval it saw.
        let mut f = frame(false, 1001, 5006, 501, &timestamps(778, 900_001));
        sp.to_server(&mut f[TCP_AT..]).unwrap();
        let h = read(&f);
        assert_eq!(h.ack, 3_000_000_006);
        assert_eq!(
            h.opts.timestamp,
            Some((778, 12)),
            "TSecr in the new server's clock; TSval untouched"
        );
        assert_eq!((h.seq, h.window), (1001, 501), "the client's own numbers are the same on both");
    }

    #[test]
    fn sack_blocks_move_to_the_new_servers_space() {
        let sp = Splice::new(side(100, 0, None), side(40, 0, None)).unwrap();
        let mut o = vec![1, 1, 5, 18];
        for e in [300u32, 400, 500, 600] {
            o.extend_from_slice(&e.to_be_bytes());
        }
        let mut f = frame(false, 7, 200, 1000, &o);
        sp.to_server(&mut f[TCP_AT..]).unwrap();
        assert_eq!(read(&f).ack, 140);
        let opts = &f[TCP_AT + 20 + 4..TCP_AT + 20 + 20];
        let edges: Vec<u32> =
            opts.chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap())).collect();
        assert_eq!(edges, [240, 340, 440, 540]);
    }

    #[test]
    fn a_window_is_rescaled_and_capped() {
        let sp = Splice::new(side(0, 2, None), side(0, 7, None)).unwrap();
        let mut f = frame(true, 1, 1, 100, &[]);
        sp.to_client(&mut f[TCP_AT..]).unwrap();
        assert_eq!(read(&f).window, 3200, "100 << 7 is 3200 << 2");
        let mut f = frame(true, 1, 1, 60_000, &[]);
        sp.to_client(&mut f[TCP_AT..]).unwrap();
        assert_eq!(read(&f).window, u16::MAX, "more than the old scale can say: the most it can");
        let sp = Splice::new(side(0, 7, None), side(0, 2, None)).unwrap();
        let mut f = frame(true, 1, 1, 1000, &[]);
        sp.to_client(&mut f[TCP_AT..]).unwrap();
        assert_eq!(read(&f).window, 31, "rounded down, never promising more than the server did");
    }

    #[test]
    fn a_segment_without_ack_keeps_its_ack_field_and_a_syn_is_refused() {
        let sp = Splice::new(side(100, 0, None), side(40, 0, None)).unwrap();
        let mut f = frame(false, 7, 200, 1000, &[]);
        f[TCP_AT + 13] = PSH; // no ACK: the field means nothing, and stays
        let before = f.clone();
        sp.to_server(&mut f[TCP_AT..]).unwrap();
        assert_eq!(f, before);
        for (flags, to_client) in [(SYN | ACK, true), (SYN, false)] {
            let mut f = frame(!to_client, 7, 200, 1000, &[]);
            f[TCP_AT + 13] = flags;
            let r = if to_client {
                sp.to_client(&mut f[TCP_AT..])
            } else {
                sp.to_server(&mut f[TCP_AT..])
            };
            assert_eq!(r, Err(SpliceError::Handshake));
        }
    }

    #[test]
    fn options_of_the_wrong_length_are_left_alone_as_linux_does() {
        let sp = Splice::new(side(100, 0, Some(1)), side(40, 0, Some(1))).unwrap();
        // A timestamp of length 9, then a SACK without a whole block.
        let opts = [8u8, 9, 0, 0, 0, 1, 0, 0, 0, 5, 4, 0, 0, 0, 0, 0];
        let mut f = frame(false, 7, 200, 1000, &opts);
        sp.to_server(&mut f[TCP_AT..]).unwrap();
        assert_eq!(read(&f).ack, 140, "the segment is rewritten");
        assert_eq!(&f[TCP_AT + 20..TCP_AT + 36], &opts, "and those options left as they were");
    }

    #[test]
    fn window_scaling_on_one_side_only_cannot_be_spliced() {
        let (on, off) = (side(1, 7, None), ServerSide { wscale: None, ..side(2, 0, None) });
        assert_eq!(Splice::new(on, off), Err(SpliceError::ScalingDiffers));
        assert_eq!(Splice::new(off, on), Err(SpliceError::ScalingDiffers));
        let none = Splice::new(off, off).unwrap();
        let mut f = frame(true, 1, 1, 1000, &[]);
        none.to_client(&mut f[TCP_AT..]).unwrap();
        assert_eq!(read(&f).window, 1000, "no scaling on either: the field as it was");
    }

    #[test]
    fn timestamps_on_one_side_only_cannot_be_spliced() {
        assert_eq!(
            Splice::new(side(1, 0, Some(5)), side(2, 0, None)),
            Err(SpliceError::TimestampsDiffer)
        );
        assert_eq!(
            Splice::new(side(1, 0, None), side(2, 0, Some(5))),
            Err(SpliceError::TimestampsDiffer)
        );
    }

    #[test]
    fn malformed_options_are_refused_and_the_segment_left_as_it_was() {
        let sp = Splice::new(side(100, 0, Some(1)), side(40, 0, Some(1))).unwrap();
        for bad in [
            vec![3, 0, 0, 0],              // a length below 2
            vec![1, 1, 1, 30],             // a kind with no length byte left
            vec![1, 1, 2, 8],              // an option running past the header
            vec![1, 1, 1, 1, 8, 10, 0, 0], // a timestamp cut by the header's end
        ] {
            let mut f = frame(false, 7, 200, 1000, &bad);
            let before = f.clone();
            assert_eq!(sp.to_server(&mut f[TCP_AT..]), Err(SpliceError::Malformed), "{bad:?}");
            assert_eq!(sp.to_client(&mut f[TCP_AT..]), Err(SpliceError::Malformed), "{bad:?}");
            assert_eq!(f, before);
        }
        for signed in [19u8, 29, 30] {
            let mut f = frame(false, 7, 200, 1000, &[1, 1, signed, 2]);
            let before = f.clone();
            assert_eq!(
                sp.to_server(&mut f[TCP_AT..]),
                Err(SpliceError::Unsupported),
                "kind {signed}"
            );
            assert_eq!(
                sp.to_client(&mut f[TCP_AT..]),
                Err(SpliceError::Unsupported),
                "kind {signed}"
            );
            assert_eq!(f, before);
        }
        let mut short = frame(false, 7, 200, 1000, &[]);
        short[TCP_AT + 12] = 0xf0; // a data offset of 60 bytes in a shorter segment
        assert_eq!(sp.to_server(&mut short[TCP_AT..]), Err(SpliceError::Malformed));
    }

    proptest! {
        /// Any bytes at all: a rewrite or an error, never a panic, and
        /// nothing written when it is an error.
        #[test]
        fn any_bytes_give_a_rewrite_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..80), ts in any::<bool>()) {
            let t = ts.then_some(9);
            let sp = Splice::new(side(100, 3, t), side(40, 9, t)).unwrap();
            for to_client in [true, false] {
                let mut b = bytes.clone();
                let r = if to_client { sp.to_client(&mut b) } else { sp.to_server(&mut b) };
                if r.is_err() {
                    prop_assert_eq!(&b, &bytes);
                }
            }
        }

        /// Whatever the numbers, and wherever the options fall (an odd
        /// number of NOPs puts the timestamp at an odd offset), the rewrite
        /// gives the expected fields and a checksum that holds.
        #[test]
        fn rewrites_keep_the_checksum_and_move_every_number(
            old_isn in any::<u32>(), new_isn in any::<u32>(),
            last_ts in any::<u32>(), first_ts in any::<u32>(),
            seq in any::<u32>(), ack in any::<u32>(), tsval in any::<u32>(), tsecr in any::<u32>(),
            window in any::<u16>(), scale_old in 0u8..=14, scale_new in 0u8..=14,
            nops in 0usize..4, edges in proptest::collection::vec(any::<u32>(), 0..=3),
        ) {
            let sp = Splice::new(side(old_isn, scale_old, Some(last_ts)), side(new_isn, scale_new, Some(first_ts))).unwrap();
            let mut o = vec![1; nops];
            o.extend_from_slice(&[8, 10]);
            o.extend_from_slice(&tsval.to_be_bytes());
            o.extend_from_slice(&tsecr.to_be_bytes());
            if !edges.is_empty() {
                o.extend_from_slice(&[5, 2 + 8 * edges.len() as u8]);
                for e in &edges {
                    o.extend_from_slice(&e.to_be_bytes());
                    o.extend_from_slice(&e.wrapping_add(100).to_be_bytes());
                }
            }
            while o.len() % 4 != 0 {
                o.push(0);
            }
            let ts_delta = last_ts.wrapping_add(1).wrapping_sub(first_ts);
            let seq_delta = old_isn.wrapping_sub(new_isn);

            let mut f = frame(true, seq, ack, window, &o);
            sp.to_client(&mut f[TCP_AT..]).unwrap();
            let h = read(&f);
            prop_assert_eq!(h.seq, seq.wrapping_add(seq_delta));
            prop_assert_eq!(h.ack, ack);
            prop_assert_eq!(h.opts.timestamp, Some((tsval.wrapping_add(ts_delta), tsecr)));

            let mut f = frame(false, seq, ack, window, &o);
            sp.to_server(&mut f[TCP_AT..]).unwrap();
            let h = read(&f);
            prop_assert_eq!((h.seq, h.window), (seq, window));
            prop_assert_eq!(h.ack, ack.wrapping_sub(seq_delta));
            prop_assert_eq!(h.opts.timestamp, Some((tsval, tsecr.wrapping_sub(ts_delta))));
            let at = TCP_AT + 20 + nops + 10 + 2;
            for (k, e) in edges.iter().enumerate() {
                let left = u32::from_be_bytes(f[at + 8 * k..at + 8 * k + 4].try_into().unwrap());
                let right = u32::from_be_bytes(f[at + 8 * k + 4..at + 8 * k + 8].try_into().unwrap());
                prop_assert_eq!((left, right), (e.wrapping_sub(seq_delta), e.wrapping_add(100).wrapping_sub(seq_delta)));
            }
        }
    }
}
