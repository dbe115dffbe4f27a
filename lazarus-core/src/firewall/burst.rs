//! A burst in three passes: `stage` parses each packet and forms its key,
//! `lookup_staged` looks the burst's connections up in the index and starts
//! fetching their records, and `process_staged` tracks each packet. The
//! lookups then run back to back where the CPU overlaps their misses,
//! instead of one per packet between long stretches of parsing and tracking.
//!
//! A slot found by `lookup_staged` is a candidate, confirmed by its key when
//! the packet is tracked (`ConnTable::holds`) and looked up again when not:
//! whatever changed the table in between, a packet reaches its own connection.

use super::packet::{Keyed, Seg, Step};
use super::{Firewall, Verdict};
use crate::checkpoint::CheckpointSink;
use crate::conn::table::TableMemory;
use crate::conn::{ConnKey, IndexHash, SlotId};
use crate::parse::checksum::{self, RxChecksums};
use crate::parse::{self, proto, Fragment, IpPacket};

/// A received burst as the pipeline sees it: frames by index, and a way to
/// keep only the ones it forwards. The dataplane's mbuf burst is one.
pub trait Burst {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn frame(&self, i: usize) -> &[u8];
    /// What the NIC found of packet `i`'s checksums; unknown (verified in
    /// software) unless the burst knows better.
    #[inline(always)]
    fn rx_checksums(&self, _i: usize) -> RxChecksums {
        RxChecksums::UNKNOWN
    }
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

impl<S: CheckpointSink, A: TableMemory> Firewall<S, A> {
    /// Stages packet `i` of a burst, received as `frame` on config port
    /// `port`, with what the NIC found of its checksums.
    #[inline]
    pub fn stage(
        &self,
        burst: &mut StagedBurst,
        i: usize,
        frame: &[u8],
        rx: RxChecksums,
        port: usize,
    ) {
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
            // Checked last, from the frame, once the fields above have left
            // the registers; a failure undoes the staging.
            let seg_len = usize::from(st.seg.payload_off) + usize::from(st.seg.payload_len) - 34;
            if let Err(r) = checksum::verify_v4_tcp(frame, seg_len, rx) {
                self.counters.parse_drop[r as usize].add(1);
                st.step = Step::Decided(Verdict::Drop);
            }
            return;
        }
        st.step = Self::parse_step(self.counters, frame, pkt, rx);
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
                // Policy and the new connection read the whole packet;
                // `stage` verified its checksums already.
                None => self.process_checked(frame, port, now, RxChecksums::VERIFIED),
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

#[cfg(test)]
mod tests {
    use crate::firewall::packet::Step;
    use crate::firewall::testing::*;
    use crate::parse::checksum::RxChecksums;

    use crate::checkpoint::MemorySink;
    use crate::conn::SlotId;
    use crate::firewall::*;
    use crate::frames::{tcp, tcp_flags::*, udp};

    use crate::parse::proto;

    #[test]
    fn staged_bursts_give_the_verdicts_and_counters_of_packet_by_packet() {
        let traffic = mixed_traffic();
        let mut one = fw(MemorySink::default());
        let want: Vec<Verdict> = traffic.iter().map(|(f, port)| one.process(f, *port, 1)).collect();
        assert!(want.contains(&Verdict::Drop) && want.contains(&Verdict::Forward));
        for burst in [1, 2, 3, 7, 16, STAGE_MAX] {
            let mut f = fw(MemorySink::default());
            let mut sb = StagedBurst::new();
            let mut got = Vec::new();
            let mut by_fast_path = 0;
            for chunk in traffic.chunks(burst) {
                for (i, (frame, port)) in chunk.iter().enumerate() {
                    f.stage(&mut sb, i, frame, RxChecksums::UNKNOWN, *port);
                    by_fast_path += usize::from(sb.staged[i].step == Step::Segment);
                }
                f.lookup_staged(&mut sb, chunk.len());
                for (i, (frame, port)) in chunk.iter().enumerate() {
                    got.push(f.process_staged(&mut sb, i, frame, *port, 1));
                }
            }
            // Every TCP frame here has the fast path's shape (no options).
            assert_eq!(by_fast_path, 13, "bursts of {burst}");
            assert_eq!(got, want, "bursts of {burst}");
            assert_eq!(f.table().len(), one.table().len(), "bursts of {burst}");
            assert_eq!(
                format!("{:?}", f.counters),
                format!("{:?}", one.counters),
                "bursts of {burst}"
            );
        }
    }

    #[test]
    fn a_connection_opened_earlier_in_the_burst_is_found() {
        // The whole handshake and data in one burst: the SYN-ACK's lookup ran
        // before the SYN created the connection.
        let mut f = fw(MemorySink::default());
        let mut sb = StagedBurst::new();
        let burst = [
            (tcp(C, S, (40000, 80), SYN, (1000, 0), b""), 0),
            (tcp(S, C, (80, 40000), SYN | ACK, (5000, 1001), b""), 1),
            (tcp(C, S, (40000, 80), ACK, (1001, 5001), b""), 0),
        ];
        for (i, (frame, port)) in burst.iter().enumerate() {
            f.stage(&mut sb, i, frame, RxChecksums::UNKNOWN, *port);
        }
        f.lookup_staged(&mut sb, burst.len());
        let got: Vec<Verdict> = burst
            .iter()
            .enumerate()
            .map(|(i, (frame, port))| f.process_staged(&mut sb, i, frame, *port, 1))
            .collect();
        assert_eq!(got, [Verdict::Forward; 3]);
        assert_eq!(f.table().len(), 1);
    }

    #[test]
    fn a_candidate_holding_another_key_is_not_tracked() {
        // The index names a candidate by hash bits alone; here each packet's
        // candidate is swapped for another connection's, as a collision of
        // those bits would. Each packet must still reach its own connection:
        // tracked on another's record, A's data would fail B's windows.
        let mut f = fw(MemorySink::default());
        for (sport, isn) in [(40000u16, 1000u32), (40001, 900_000_000)] {
            for (frame, port) in [
                (tcp(C, S, (sport, 80), SYN, (isn, 0), b""), 0),
                (tcp(S, C, (80, sport), SYN | ACK, (isn ^ 0x5555, isn + 1), b""), 1),
                (tcp(C, S, (sport, 80), ACK, (isn + 1, (isn ^ 0x5555) + 1), b""), 0),
            ] {
                assert_eq!(f.process(&frame, port, 1), Verdict::Forward);
            }
        }
        assert_eq!(f.process(&udp(C, S, 5353, 53, b"q"), 0, 1), Verdict::Forward);
        let burst = [
            (tcp(C, S, (40000, 80), ACK | PSH, (1001, 1001 ^ 0x5554), &[1; 10]), 0),
            (tcp(C, S, (40001, 80), ACK | PSH, (900_000_001, 900_000_001 ^ 0x5554), &[2; 20]), 0),
            (udp(C, S, 5353, 53, b"again"), 0),
        ];
        let mut sb = StagedBurst::new();
        for (i, (frame, port)) in burst.iter().enumerate() {
            f.stage(&mut sb, i, frame, RxChecksums::UNKNOWN, *port);
        }
        assert_eq!(
            [sb.staged[0].step, sb.staged[1].step, sb.staged[2].step],
            [Step::Segment, Step::Segment, Step::Keyed]
        );
        f.lookup_staged(&mut sb, burst.len());
        let slots: Vec<SlotId> =
            sb.staged[..3].iter().map(|st| st.slot.expect("every connection exists")).collect();
        for (i, s) in [slots[1], slots[2], slots[0]].into_iter().enumerate() {
            sb.staged[i].slot = Some(s);
        }
        for (i, (frame, port)) in burst.iter().enumerate() {
            assert_eq!(
                f.process_staged(&mut sb, i, frame, *port, 1),
                Verdict::Forward,
                "packet {i}"
            );
        }
        // Each connection counted its own packet, on top of the SYN and ACK
        // of a TCP one, or the first query of the UDP one.
        for s in &slots {
            let conn = f.table().get(*s);
            assert_eq!(
                conn.ip.packets[0],
                if conn.key.proto == proto::TCP { 3 } else { 2 },
                "{:?}",
                conn.key
            );
        }
        assert_eq!(
            f.table().len(),
            3,
            "no connection was created for a packet whose candidate was wrong"
        );
    }

    #[test]
    fn a_packet_not_staged_in_this_burst_is_processed_whole() {
        // Staged in one burst, not in the next: the next must not reuse it.
        let mut f = fw(MemorySink::default());
        let mut sb = StagedBurst::new();
        let syn = tcp(C, S, (40000, 80), SYN, (1000, 0), b"");
        f.stage(&mut sb, 0, &syn, RxChecksums::UNKNOWN, 0);
        f.lookup_staged(&mut sb, 1);
        assert_eq!(f.process_staged(&mut sb, 0, &syn, 0, 1), Verdict::Forward);
        let stray = tcp(C, S, (40001, 80), ACK, (1, 1), b"");
        assert_eq!(
            f.process_staged(&mut sb, 0, &stray, 0, 1),
            Verdict::Drop,
            "tracked as itself, not as the SYN staged before"
        );
    }
}

#[cfg(test)]
mod checksum_tests {
    use crate::checkpoint::MemorySink;
    use crate::firewall::testing::*;
    use crate::firewall::*;
    use crate::frames::{tcp, tcp_flags::*, udp};
    use crate::parse::checksum::{Offload, RxChecksums};
    use crate::parse::DropReason;
    use allocator_api2::alloc::Global;

    /// Frames with the NIC's word on each, as the dataplane's burst has.
    struct NicBurst<'a> {
        frames: Vec<&'a [u8]>,
        rx: RxChecksums,
        kept: usize,
    }

    impl Burst for NicBurst<'_> {
        fn len(&self) -> usize {
            self.frames.len()
        }
        fn frame(&self, i: usize) -> &[u8] {
            self.frames[i]
        }
        fn rx_checksums(&self, _i: usize) -> RxChecksums {
            self.rx
        }
        fn retain(&mut self, mut keep: impl FnMut(usize, &[u8]) -> bool) -> usize {
            let n = self.frames.len();
            self.kept = self.frames.iter().enumerate().filter(|(i, f)| keep(*i, f)).count();
            n - self.kept
        }
    }

    fn drops(f: &Firewall<MemorySink, Global>, r: DropReason) -> u64 {
        f.counters.parse_drop[r as usize].get()
    }

    /// A segment whose checksum is wrong is dropped and counted before any
    /// state sees it: a forged RST does not close the flow, a forged SYN
    /// opens nothing, and nothing reaches the checkpoint.
    #[test]
    fn a_bad_checksum_is_dropped_counted_and_changes_nothing() {
        let mut f = fw(MemorySink::default());
        let (cs, ss) = open(&mut f, 40500);
        let stored = f.checkpoint.sink.store.clone();
        let mut rst = tcp(C, S, (40500, 80), RST | ACK, (cs, ss), b"");
        let at = rst.len() - 1 - (rst.len() - 54); // the last TCP header byte
        rst[at] ^= 0xff;
        let mut syn = tcp(C, S, (40501, 80), SYN, (1, 0), b"");
        syn[24] ^= 0x01; // the IPv4 header (TTL)
        let mut dns = udp(C, S, 5353, 53, b"query");
        dns[44] ^= 0x01; // the UDP payload
        let mut sb = StagedBurst::new();
        let frames = [&rst[..], &syn[..], &dns[..]];
        let mut burst = FrameBurst::new(&frames);
        assert_eq!(f.process_burst(&mut sb, &mut burst, 0, 2), 3);
        assert_eq!(drops(&f, DropReason::BadL4Checksum), 2);
        assert_eq!(drops(&f, DropReason::BadIpChecksum), 1);
        assert_eq!(f.table().iter().count(), 1, "the SYN opened nothing");
        assert_eq!(f.checkpoint.sink.store, stored, "nothing checkpointed");
        // The flow is as it was: its next data segment passes.
        let data = tcp(C, S, (40500, 80), ACK | PSH, (cs, ss), b"more");
        assert_eq!(f.process(&data, 0, 3), Verdict::Forward);
    }

    /// The NIC's word is taken where it gave one (net_tap gives it; the
    /// dataplane test checks that branch on a real tap).
    #[test]
    fn the_nics_verdict_is_taken_as_given() {
        let mut f = fw(MemorySink::default());
        let good = tcp(C, S, (40600, 80), SYN, (1, 0), b"");
        let mut mangled = good.clone();
        mangled[50] ^= 0x01; // the TCP checksum itself
        let mut sb = StagedBurst::new();
        let mut bad_by_nic = NicBurst {
            frames: vec![&good[..]],
            rx: RxChecksums { ip: Offload::Good, l4: Offload::Bad },
            kept: 0,
        };
        assert_eq!(f.process_burst(&mut sb, &mut bad_by_nic, 0, 1), 1);
        assert_eq!(drops(&f, DropReason::BadL4Checksum), 1);
        let mut good_by_nic = NicBurst {
            frames: vec![&mangled[..]],
            rx: RxChecksums { ip: Offload::Good, l4: Offload::Good },
            kept: 0,
        };
        assert_eq!(f.process_burst(&mut sb, &mut good_by_nic, 0, 1), 0, "{}", f.counters.detail());
        assert_eq!(good_by_nic.kept, 1);
        let mut unknown =
            NicBurst { frames: vec![&mangled[..]], rx: RxChecksums::UNKNOWN, kept: 0 };
        assert_eq!(f.process_burst(&mut sb, &mut unknown, 0, 1), 1, "verified in software");
    }
}
