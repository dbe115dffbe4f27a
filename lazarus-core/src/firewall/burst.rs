//! A burst in three passes: `stage` parses each packet and forms its key,
//! `lookup_staged` looks the burst's connections up in the index and starts
//! fetching their records, and `process_staged` tracks each packet. The
//! lookups then run back to back where the CPU overlaps their misses,
//! instead of one per packet between long stretches of parsing and tracking.
//!
//! A slot found by `lookup_staged` is a candidate, confirmed by its key when
//! the packet is tracked (`ConnTable::holds`) and looked up again when not:
//! whatever changed the table in between, a packet reaches its own connection.

use super::track::Keyed;
use super::{Firewall, Verdict};
use crate::checkpoint::CheckpointSink;
use crate::conn::table::TableMemory;
use crate::conn::{ConnKey, IndexHash, SlotId};
use crate::parse::{self, proto, Fragment, IpPacket, TcpHdr, L4};

/// A received burst as the pipeline sees it: frames by index, and a way to
/// keep only the ones it forwards. The dataplane's mbuf burst is one.
pub trait Burst {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn frame(&self, i: usize) -> &[u8];
    /// Keeps packet `i` when `keep(i, frame)` is true, in order; returns how
    /// many were not kept.
    fn retain(&mut self, keep: impl FnMut(usize, &[u8]) -> bool) -> usize;
}

/// Frames in memory as a burst (tests, benchmarks): `retain` counts what
/// it would forward.
pub struct FrameBurst<'a, 'f> {
    pub frames: &'a [&'f [u8]],
    pub forwarded: usize,
}

impl<'a, 'f> FrameBurst<'a, 'f> {
    pub fn new(frames: &'a [&'f [u8]]) -> Self {
        FrameBurst { frames, forwarded: 0 }
    }
}

impl Burst for FrameBurst<'_, '_> {
    fn len(&self) -> usize {
        self.frames.len()
    }
    fn frame(&self, i: usize) -> &[u8] {
        self.frames[i]
    }
    fn retain(&mut self, mut keep: impl FnMut(usize, &[u8]) -> bool) -> usize {
        let kept = self.frames.iter().enumerate().filter(|(i, f)| keep(*i, f)).count();
        self.forwarded += kept;
        self.frames.len() - kept
    }
}

/// Packets a burst may stage (DPDK's usual maximum burst).
pub const STAGE_MAX: usize = 64;

/// A burst's packets as `stage` left them for `process_staged`. The worker
/// owns it beside its mbufs, apart from the firewall, so that a packet is
/// tracked from its entry in place while the firewall is borrowed mutably.
///
/// An entry holds a slot of the table that staged it, confirmed by key
/// before use: stage, look up and process a burst with one firewall, with
/// no `housekeeping` in between (`Firewall::process_burst` does).
pub struct StagedBurst {
    pub(super) staged: Box<[Staged; STAGE_MAX]>,
    /// The general parser's result per packet, apart from `staged`: the
    /// fast path never fills it, and kept inside each entry it would double
    /// the lines a burst's entries take in L1.
    pkts: Box<[IpPacket; STAGE_MAX]>,
}

impl StagedBurst {
    /// Room for `STAGE_MAX` packets: allocated once, when a worker starts.
    pub fn new() -> StagedBurst {
        StagedBurst {
            staged: Box::new([Staged::default(); STAGE_MAX]),
            pkts: Box::new([IpPacket::default(); STAGE_MAX]),
        }
    }
}

impl Default for StagedBurst {
    fn default() -> Self {
        Self::new()
    }
}

/// What `stage` learned of one packet of a burst. Plain fields rather than
/// an enum carrying the key: the key is then formed in place, not built and
/// copied into a variant.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Staged {
    pub(super) step: Step,
    /// Meaningful in `Step::Keyed` and `Step::Segment`, as are `hash` and
    /// `slot`; `keyed.icmp_kind` in `Step::Keyed` only.
    keyed: Keyed,
    hash: IndexHash,
    /// The index's candidate (`ConnTable::candidate`), confirmed when the
    /// packet is tracked. None may since have been created by an earlier
    /// packet of the same burst, so it is looked up again then.
    pub(super) slot: Option<SlotId>,
    /// `Step::Segment` only: the segment as `parse::v4_tcp` read it (its
    /// `IpPacket` in `StagedBurst::pkts` is then not filled).
    seg: Seg,
}

/// What the modules of an existing connection read of a packet besides its
/// key: the TCP header of a TCP packet, and where its payload lies.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Seg {
    pub tcp: Option<TcpHdr>,
    pub payload_off: u16,
    pub payload_len: u16,
}

impl Seg {
    #[inline(always)]
    pub fn of(p: &IpPacket) -> Seg {
        let tcp = match p.l4 {
            L4::Tcp(h) => Some(h),
            _ => None,
        };
        Seg { tcp, payload_off: p.payload_off, payload_len: p.payload_len }
    }

    pub fn payload<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        parse::payload_at(frame, self.payload_off, self.payload_len)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Step {
    /// Not staged in this burst: `process_staged` runs `process`.
    #[default]
    Unstaged,
    /// Decided by the parser: a malformed frame (already counted) or non-IP.
    Decided(Verdict),
    /// Parsed, but no connection key of its own (a later fragment, an ICMP
    /// error, stateless ICMP): tracked as `process` would, from the parsed
    /// packet.
    Parsed,
    /// Keyed (`keyed`, `hash`) and, after `lookup_staged`, looked up (`slot`).
    Keyed,
    /// An IPv4/TCP segment of the common shape (`parse::v4_tcp`), keyed and
    /// described by `seg` alone. When it finds a connection it is tracked
    /// from `seg`; when not, the general path parses it again and decides,
    /// as for any new connection.
    Segment,
}

impl<S: CheckpointSink, A: TableMemory> Firewall<S, A> {
    /// Stages packet `i` of a burst, received as `frame` on config port `port`.
    #[inline]
    pub fn stage(&self, burst: &mut StagedBurst, i: usize, frame: &[u8], port: usize) {
        if i >= STAGE_MAX {
            return;
        }
        let (st, pkt) = (&mut burst.staged[i], &mut burst.pkts[i]);
        let zone = self.zone_of(port);
        // Most packets: read only what the key and the tracker need.
        if let Some(seg) = parse::v4_tcp(frame) {
            // Stored while the header is in registers, before the key and
            // its hash need them.
            st.seg = Seg {
                tcp: Some(seg.tcp),
                payload_off: seg.payload_off,
                payload_len: seg.payload_len,
            };
            let (key, src_is_lo) = ConnKey::canonical_v4(
                proto::TCP,
                seg.src,
                seg.tcp.sport,
                seg.dst,
                seg.tcp.dport,
                zone,
            );
            // Hashed from registers, before the key goes to memory.
            st.hash = self.table.hash_of(&key);
            st.keyed.key = key;
            st.keyed.src_is_lo = src_is_lo;
            st.slot = None;
            st.step = Step::Segment;
            return;
        }
        st.step = Self::parse_step(&self.counters, frame, pkt);
        if st.step != Step::Parsed || pkt.frag == Fragment::Later {
            return;
        }
        if let Some(keyed) = Keyed::of(pkt, zone) {
            st.keyed = keyed;
            st.hash = self.table.hash_of(&st.keyed.key);
            st.slot = None;
            st.step = Step::Keyed;
        }
    }

    /// Looks up the connections of the first `n` staged packets, after every
    /// one of them was staged: a tight loop of lookups and nothing else, so
    /// that their cache misses are in flight together.
    #[inline]
    pub fn lookup_staged(&self, burst: &mut StagedBurst, n: usize) {
        let table = &self.table;
        for st in burst.staged.iter_mut().take(n) {
            if matches!(st.step, Step::Keyed | Step::Segment) {
                // Within the index alone: the record is confirmed when the
                // packet is tracked, its lines fetched meanwhile beside the
                // burst's other records.
                st.slot = table.candidate(st.hash);
                if let Some(s) = st.slot {
                    table.prefetch(s);
                }
            }
        }
    }

    /// The verdict on packet `i` of the burst, which `stage` saw as `frame`.
    /// A packet that was not staged is processed whole.
    #[inline]
    pub fn process_staged(
        &mut self,
        burst: &mut StagedBurst,
        i: usize,
        frame: &[u8],
        port: usize,
        now: u64,
    ) -> Verdict {
        if i >= STAGE_MAX {
            return self.process(frame, port, now);
        }
        let (st, p) = (&mut burst.staged[i], &burst.pkts[i]);
        let v = self.finish_staged(st, p, frame, port, now);
        st.step = Step::Unstaged;
        v
    }

    #[inline(always)]
    fn finish_staged(
        &mut self,
        st: &Staged,
        p: &IpPacket,
        frame: &[u8],
        port: usize,
        now: u64,
    ) -> Verdict {
        // Most packets: a segment whose connection the lookup found, on one
        // predictable branch rather than through a jump table over the steps.
        if let (Step::Segment, Some(slot)) = (st.step, st.slot) {
            if self.table.holds(slot, &st.keyed.key) {
                return self.track_existing(slot, st.keyed.src_is_lo, None, frame, &st.seg, now);
            }
        }
        match st.step {
            Step::Unstaged => self.process(frame, port, now),
            Step::Decided(v) => v,
            Step::Parsed => self.track_parsed(frame, p, port, now),
            Step::Keyed => {
                let k = &st.keyed;
                let v = match self.found(st) {
                    Some(slot) => {
                        self.track_existing(slot, k.src_is_lo, k.icmp_kind, frame, &Seg::of(p), now)
                    }
                    None => self.new_conn(k, frame, p, port, now),
                };
                self.fragment_seen(p, v, now)
            }
            // No candidate, or another key's (the branch above took the
            // confirmed ones).
            Step::Segment => match self.found(st) {
                Some(slot) => {
                    self.track_existing(slot, st.keyed.src_is_lo, None, frame, &st.seg, now)
                }
                // Policy and the new connection read the whole packet.
                None => self.process(frame, port, now),
            },
        }
    }

    /// The connection of a keyed packet: the lookup's candidate when it is
    /// the key's, else a lookup now (the candidate was another key's, or
    /// there was none and an earlier packet of the burst may have created
    /// the connection since).
    #[inline(always)]
    fn found(&self, st: &Staged) -> Option<SlotId> {
        st.slot
            .filter(|&s| self.table.holds(s, &st.keyed.key))
            .or_else(|| self.table.lookup(&st.keyed.key, st.hash))
    }
}
