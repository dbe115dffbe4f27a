//! Tracking and admission: a packet of a known connection goes through its
//! modules; a packet of none is admitted as a new connection when policy
//! (or an FTP expectation) allows; ICMP errors pass when they quote a
//! connection; later fragments follow their first.

use super::fragments::LaterFragment;
use super::packet::{Keyed, Seg, Step};
use super::{Firewall, Verdict};
use crate::checkpoint::{worth_storing, CheckpointSink};
use crate::conn::table::TableMemory;
use crate::conn::{ConnKey, Dir, Endpoint, SlotId};
use crate::modules::ftp_sessions::Expected;
use crate::modules::icmp::{self, IcmpKind, IcmpPortion};
use crate::modules::ip::IpPortion;
use crate::modules::tcp::{self, TcpState};
use crate::modules::udp::UdpPortion;
use crate::modules::{Conn, L4Portion, Module, NO_FTP};
use crate::parse::checksum::{self, RxChecksums};
use crate::parse::{self, Fragment, FrameKind, IpPacket, L4};
use crate::policy::Action;
use crate::stats::{FwCounters, FwDrop};

/// Connections a full table looks at for one to drop before it refuses a
/// new one: a bounded cost per refused packet under a flood, like the
/// bucket range of Linux's `early_drop`.
const EARLY_DROP_SCAN: usize = 16;

impl<S: CheckpointSink, A: TableMemory> Firewall<S, A> {
    /// The verdict on one frame received on config port `port`.
    #[inline]
    pub fn process(&mut self, frame: &[u8], port: usize, now: u64) -> Verdict {
        self.checkpoint.send_pending_deletes();
        self.process_checked(frame, port, now, RxChecksums::UNKNOWN)
    }

    /// `process`, with what is known of the frame's checksums.
    pub(super) fn process_checked(
        &mut self,
        frame: &[u8],
        port: usize,
        now: u64,
        rx: RxChecksums,
    ) -> Verdict {
        let mut p = IpPacket::default();
        match Self::parse_step(self.counters, frame, &mut p, rx) {
            Step::Decided(v) => v,
            _ => self.track_parsed(frame, &p, port, now),
        }
    }

    #[inline(always)]
    pub(super) fn zone_of(&self, port: usize) -> u16 {
        self.port_zone.get(port).copied().unwrap_or(0)
    }

    /// Parses `frame` into `p`: `Step::Parsed` for an IP packet, else the
    /// verdict parsing decides (non-IP passes; a malformed frame is counted
    /// and dropped).
    #[inline(always)]
    pub(super) fn parse_step(
        counters: &FwCounters,
        frame: &[u8],
        p: &mut IpPacket,
        rx: RxChecksums,
    ) -> Step {
        match parse::parse_into(frame, p).and_then(|k| match k {
            FrameKind::Ip => checksum::verify(frame, p, rx).map(|()| k),
            FrameKind::NonIp { .. } => Ok(k),
        }) {
            Ok(FrameKind::Ip) => Step::Parsed,
            Ok(FrameKind::NonIp { .. }) => Step::Decided(Verdict::Forward),
            Err(r) => {
                counters.parse_drop[r as usize].add(1);
                Step::Decided(Verdict::Drop)
            }
        }
    }

    /// A parsed IP packet, its key not formed yet: a later fragment by the
    /// fragment table, anything else tracked.
    #[inline]
    pub(super) fn track_parsed(
        &mut self,
        frame: &[u8],
        p: &IpPacket,
        port: usize,
        now: u64,
    ) -> Verdict {
        if p.frag == Fragment::Later {
            return match self.frags.later(p, now) {
                LaterFragment::Forward => Verdict::Forward,
                LaterFragment::Drop => Verdict::Drop,
                LaterFragment::Unmatched => self.drop_because(FwDrop::FragmentUnmatched),
            };
        }
        let v = self.track(frame, p, port, now);
        self.fragment_seen(p, v, now)
    }

    /// `v`, after remembering it for the later fragments when `p` is a first
    /// fragment.
    #[inline(always)]
    pub(super) fn fragment_seen(&mut self, p: &IpPacket, v: Verdict, now: u64) -> Verdict {
        if p.frag == Fragment::First {
            self.frags.remember(p, v == Verdict::Forward, now);
        }
        v
    }

    pub(super) fn drop_because(&self, why: FwDrop) -> Verdict {
        self.counters.fw_drop[why as usize].add(1);
        Verdict::Drop
    }

    /// A segment the TCP module refused, counted by its reason.
    fn invalid_tcp(&self, why: tcp::TcpInvalid) -> Verdict {
        self.counters.tcp_invalid[why as usize].add(1);
        Verdict::Drop
    }

    fn track(&mut self, frame: &[u8], p: &IpPacket, port: usize, now: u64) -> Verdict {
        let zone = self.zone_of(port);
        let Some(k) = Keyed::of(p, zone) else {
            let L4::Icmp(info) = p.l4 else { return Verdict::Drop };
            return match icmp::classify(p.family, &info) {
                IcmpKind::Error => self.icmp_error(p, zone),
                IcmpKind::LinkLocal => Verdict::Forward,
                // Stateless: the policy decides each one.
                _ => match self.policy.decide(port, p).0 {
                    Action::Accept => Verdict::Forward,
                    Action::Drop => self.drop_because(FwDrop::Policy),
                },
            };
        };
        match self.table.lookup(&k.key, self.table.hash_of(&k.key)) {
            Some(slot) => {
                self.track_existing(slot, k.src_is_lo, k.icmp_kind, frame, &Seg::of(p), now)
            }
            None => self.new_conn(&k, frame, p, port, now),
        }
    }

    /// A packet of the connection in `slot`, through its modules.
    #[inline(always)]
    pub(super) fn track_existing(
        &mut self,
        slot: SlotId,
        src_is_lo: bool,
        icmp_kind: Option<IcmpKind>,
        frame: &[u8],
        seg: &Seg,
        now: u64,
    ) -> Verdict {
        let conn = self.table.get_mut(slot);
        let dir = conn.ip.dir_of(src_is_lo);
        let mut changed: Option<Module> = None;
        // TCP, nearly every packet, on one predictable branch rather than
        // through a jump table over the portion's kind.
        let timeout = if let (L4Portion::Tcp(t), Some(h)) = (&mut conn.l4, &seg.tcp) {
            match tcp::on_segment(t, dir, h, u32::from(seg.payload_len), &self.ticks.tcp) {
                Ok(tracked) => {
                    if let Some((from, to)) = tracked.moved {
                        self.tally.moved(from, to);
                        if to == TcpState::Close {
                            self.counters.closed[Module::Tcp as usize].add(1);
                        }
                    }
                    if tracked.delta {
                        changed = Some(Module::Tcp);
                    }
                    if let Some(why) = tracked.kept {
                        self.counters.tcp_invalid[why as usize].add(1);
                    }
                    tracked.timeout
                }
                Err(why) => return self.invalid_tcp(why),
            }
        } else {
            match &mut conn.l4 {
                L4Portion::Udp(u) => changed = u.track(dir).then_some(Module::Udp),
                L4Portion::Icmp(i) => match i.track(dir, icmp_kind.unwrap_or(IcmpKind::Other)) {
                    Ok(true) => changed = Some(Module::Icmp),
                    Ok(false) => {}
                    Err(_wrong_way) => return self.drop_because(FwDrop::IcmpBadEcho),
                },
                _ => {}
            }
            self.ticks.of(&conn.l4)
        };
        conn.ip.count(dir, frame.len());
        conn.deadline = now + timeout;
        if let Some(m) = changed {
            if conn.stored {
                self.checkpoint.emit(conn, m, &self.ftp, now);
            } else if worth_storing(&conn.l4, false) {
                conn.stored = true;
                self.checkpoint.emit_all(conn, &self.ftp, now);
            }
        }
        if conn.ftp != NO_FTP {
            if let Some(h) = seg.tcp {
                self.ftp_segment(slot, dir, h.seq, seg.payload(frame), now);
            }
        }
        Verdict::Forward
    }

    /// A packet of no connection: admitted as a new one when it is expected
    /// (an FTP data connection) or the policy accepts it.
    pub(super) fn new_conn(
        &mut self,
        k: &Keyed,
        frame: &[u8],
        p: &IpPacket,
        port: usize,
        now: u64,
    ) -> Verdict {
        let (l4, module) = match p.l4 {
            L4::Tcp(h) => match tcp::new_conn(&h, p.payload_len as u32) {
                Ok(t) => (L4Portion::Tcp(t), Some(Module::Tcp)),
                Err(why) => return self.invalid_tcp(why),
            },
            L4::Udp { .. } => (L4Portion::Udp(UdpPortion::default()), Some(Module::Udp)),
            L4::Icmp(_) => match k.icmp_kind {
                Some(IcmpKind::EchoRequest(id)) => {
                    (L4Portion::Icmp(IcmpPortion::new(id)), Some(Module::Icmp))
                }
                _ => return self.drop_because(FwDrop::IcmpBadEcho),
            },
            L4::Other => (L4Portion::Other, None),
        };
        let dport = match p.l4 {
            L4::Tcp(h) => h.dport,
            L4::Udp { dport, .. } => dport,
            _ => 0,
        };
        let related = matches!(p.l4, L4::Tcp(_)) && self.ftp.take_expected(&k.key, p, dport, now);
        if related {
            self.counters.related.add(1);
        } else if self.policy.decide(port, p).0 == Action::Drop {
            return self.drop_because(FwDrop::Policy);
        }
        let stored = worth_storing(&l4, related);
        let mut conn = Conn {
            key: k.key,
            id: k.key.id(),
            deadline: 0,
            ip: IpPortion { related, ..IpPortion::new(k.src_is_lo, self.ports.id_of(port), now) },
            l4,
            ftp: NO_FTP,
            dirty: 0,
            stored,
        };
        conn.ip.count(Dir::Original, frame.len());
        conn.deadline = now + self.ticks.of(&conn.l4);
        if matches!(p.l4, L4::Tcp(_)) && self.ftp.wants(dport) {
            conn.ftp = self.ftp.open().unwrap_or_else(|| {
                self.counters.ftp_no_session.add(1);
                NO_FTP
            });
        }
        let mut inserted = self.table.insert(conn);
        if inserted.is_err() && self.early_drop(now) {
            inserted = self.table.insert(conn);
        }
        match inserted {
            Ok(slot) => {
                self.tally.on(&conn.l4);
                self.counters.new[module.unwrap_or(Module::Ip) as usize].add(1);
                if stored {
                    self.checkpoint.emit_all(self.table.get_mut(slot), &self.ftp, now);
                }
                Verdict::Forward
            }
            Err(_) => {
                self.ftp.release(conn.ftp);
                self.drop_because(FwDrop::TableFull)
            }
        }
    }

    /// The table is full: drops one connection that is not established (an
    /// unanswered SYN most likely) to make room, as Linux's `early_drop`
    /// does, so that a SYN flood cannot lock out new connections. Returns
    /// whether it made room.
    #[inline(never)]
    fn early_drop(&mut self, now: u64) -> bool {
        let Some(conn) = self.table.evict(EARLY_DROP_SCAN, Conn::evictable) else {
            return false;
        };
        self.ftp.release(conn.ftp);
        self.tally.off(&conn.l4);
        self.checkpoint.removed(&conn, now);
        self.counters.early_drop.add(1);
        true
    }

    /// Feeds a control-connection segment to its ftp portion. The portion is
    /// checkpointed after every segment with payload: its unfinished line and
    /// stream position change then, and control channels carry little.
    fn ftp_segment(&mut self, slot: SlotId, dir: Dir, seq: u32, payload: &[u8], now: u64) {
        if payload.is_empty() {
            return;
        }
        let conn = self.table.get_mut(slot);
        let fed = self.ftp.feed(conn, dir, seq, payload, now);
        let c = &self.counters;
        if fed.gap {
            c.ftp_gaps.add(1);
        }
        match fed.expectation {
            Some(Expected::Made) => c.ftp_expectations.add(1),
            Some(Expected::Refused) => c.ftp_refused.add(1),
            Some(Expected::Full) => c.expectations_full.add(1),
            None => {}
        }
        self.checkpoint.emit(conn, Module::Ftp, &self.ftp, now);
    }

    /// An ICMP error passes when the packet it quotes belongs to a connection
    /// and the error goes back to that packet's sender, as an error about it
    /// can: one sent on toward the quoted packet's destination is forged.
    fn icmp_error(&mut self, p: &IpPacket, zone: u16) -> Verdict {
        let L4::Icmp(info) = p.l4 else { return Verdict::Drop };
        let Some(q) = info.quoted else { return self.drop_because(FwDrop::IcmpNoQuote) };
        if p.dst != q.src {
            return self.drop_because(FwDrop::IcmpUnrelated);
        }
        let (key, _) = ConnKey::canonical(
            q.family,
            q.proto,
            Endpoint { addr: q.src, port: q.sport },
            Endpoint { addr: q.dst, port: q.dport },
            zone,
            p.vlan,
        );
        if self.table.lookup(&key, self.table.hash_of(&key)).is_some() {
            Verdict::Forward
        } else {
            self.drop_because(FwDrop::IcmpUnrelated)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::firewall::testing::*;

    use crate::checkpoint::MemorySink;
    use crate::firewall::*;

    use crate::frames::{tcp, tcp_flags::*};
    use crate::modules::tcp::{self};
    use crate::modules::{L4Portion, Module};

    use crate::portion::Portion;
    use allocator_api2::alloc::Global;

    #[test]
    fn an_icmp_error_is_related_only_on_its_way_back_to_the_quoted_sender() {
        use crate::frames::{icmp, udp};
        let mut a = fw(MemorySink::default());
        assert_eq!(a.process(&udp(C, S, 5353, 53, b"q"), 0, 1), Verdict::Forward);
        let quoted = &udp(C, S, 5353, 53, b"q")[14..42];
        // From the server, or a router on the way, back to the client.
        assert_eq!(a.process(&icmp(S, C, 3, 3, [0; 4], quoted), 1, 2), Verdict::Forward);
        assert_eq!(
            a.process(&icmp([10, 99, 0, 254], C, 3, 1, [0; 4], quoted), 1, 2),
            Verdict::Forward
        );
        // The same quote sent on toward the server: not an error about it.
        assert_eq!(a.process(&icmp(C, S, 3, 3, [0; 4], quoted), 0, 2), Verdict::Drop);
        assert_eq!(a.process(&icmp([10, 98, 0, 9], S, 3, 1, [0; 4], quoted), 1, 2), Verdict::Drop);
        assert_eq!(a.counters.fw_drop[crate::stats::FwDrop::IcmpUnrelated as usize].get(), 2);
    }

    /// `frame` with an 802.1ad outer tag and an 802.1Q inner tag.
    fn qinq(frame: &[u8], outer: u16, inner: u16) -> Vec<u8> {
        let mut f = frame[..12].to_vec();
        f.extend_from_slice(&[0x88, 0xa8]);
        f.extend_from_slice(&outer.to_be_bytes());
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&inner.to_be_bytes());
        f.extend_from_slice(&frame[12..]);
        f
    }

    #[test]
    fn tenants_in_different_inner_vlans_are_different_connections() {
        let mut a = fw(MemorySink::default());
        let (t1, t2) = (|f: &[u8]| qinq(f, 100, 10), |f: &[u8]| qinq(f, 100, 20));
        for (p, port) in [
            (t1(&tcp(C, S, (45000, 80), SYN, (1000, 0), b"")), 0),
            (t1(&tcp(S, C, (80, 45000), SYN | ACK, (5000, 1001), b"")), 1),
            (t1(&tcp(C, S, (45000, 80), ACK, (1001, 5001), b"")), 0),
        ] {
            assert_eq!(a.process(&p, port, 1), Verdict::Forward);
        }
        // The same tuple in the second tenant's VLAN is no connection yet.
        let mid = tcp(C, S, (45000, 80), ACK, (1001, 5001), b"");
        assert_eq!(a.process(&t2(&mid), 0, 2), Verdict::Drop);
        assert_eq!(a.process(&t1(&mid), 0, 2), Verdict::Forward);
        // Its own handshake makes a second connection, stored apart.
        assert_eq!(
            a.process(&t2(&tcp(C, S, (45000, 80), SYN, (7, 0), b"")), 0, 3),
            Verdict::Forward
        );
        assert_eq!(a.table().len(), 2);
        let ids: std::collections::BTreeSet<u64> = a.table().iter().map(|(_, c)| c.id.0).collect();
        assert_eq!(ids.len(), 2);
        // Both keys survive a checkpoint and a restore with their VLANs.
        let answer = t2(&tcp(S, C, (80, 45000), SYN | ACK, (9, 8), b""));
        assert_eq!(a.process(&answer, 1, 3), Verdict::Forward);
        let mut b = fw(MemorySink::default());
        assert_eq!(restore_all(&a.checkpoint.sink, &mut b), 2);
        assert_eq!(b.process(&t1(&mid), 0, 20), Verdict::Forward);
        assert_eq!(
            b.process(&t2(&tcp(C, S, (45000, 80), ACK, (8, 10), b"")), 0, 20),
            Verdict::Forward
        );
    }

    /// A table full of unanswered SYNs (the flood) and some established
    /// connections: a new connection drops one of the SYNs, never an
    /// established one; a table of established connections only refuses it.
    #[test]
    fn a_full_table_drops_a_half_open_connection_for_a_new_one() {
        let mut a = fw(MemorySink::default());
        for p in 0..10 {
            open(&mut a, 42000 + p);
        }
        // One of them half-closed: the server's answer is still to come.
        let fin = tcp(C, S, (42009, 80), FIN | ACK, (1101, 5001), b"");
        assert_eq!(a.process(&fin, 0, 1), Verdict::Forward);
        let spoofed =
            |i: u16| tcp([10, 98, (i >> 8) as u8, i as u8], S, (1024 + i, 80), SYN, (1, 0), b"");
        for i in 0..54 {
            assert_eq!(a.process(&spoofed(i), 0, 1), Verdict::Forward);
        }
        assert_eq!(a.table().len(), 64, "full");
        let legit = tcp(C, S, (43000, 80), SYN, (5, 0), b"");
        assert_eq!(a.process(&legit, 0, 2), Verdict::Forward);
        assert_eq!(a.counters.early_drop.get(), 1);
        let ours = |f: &Firewall<MemorySink, Global>| {
            f.table().iter().filter(|(_, c)| (42000..42010).contains(&c.key.lo_port)).count()
        };
        assert_eq!(ours(&a), 10, "no established or closing connection was dropped");
        // The legitimate connection completes, and traffic of the established
        // ones still passes.
        let syn_ack = tcp(S, C, (80, 43000), SYN | ACK, (9, 6), b"");
        assert_eq!(a.process(&syn_ack, 1, 3), Verdict::Forward);
        let mid = tcp(C, S, (42003, 80), ACK, (1101, 5001), b"");
        assert_eq!(a.process(&mid, 0, 3), Verdict::Forward);
        // More new connections: the flood's entries go, never those ten.
        for i in 0..60 {
            let syn = tcp(C, S, (46000 + i, 80), SYN, (5, 0), b"");
            assert_eq!(a.process(&syn, 0, 4), Verdict::Forward);
        }
        assert_eq!(ours(&a), 10, "still all ten, the half-closed one too");
        let answer = tcp(S, C, (80, 42009), ACK | PSH, (5001, 1102), b"OK");
        assert_eq!(a.process(&answer, 1, 5), Verdict::Forward, "{}", a.counters.detail());
        // Only established connections: nothing to drop, the new one is refused.
        let mut b = fw(MemorySink::default());
        for p in 0..64 {
            open(&mut b, 44000 + p);
        }
        assert_eq!(b.process(&legit, 0, 2), Verdict::Drop);
        assert_eq!(b.counters.early_drop.get(), 0);
        assert_eq!(b.counters.fw_drop[crate::stats::FwDrop::TableFull as usize].get(), 1);
    }
    #[test]
    fn the_ack_of_a_fin_writes_no_delta_unless_close_wait_outlives_fin_wait() {
        let stored_state = |f: &Firewall<MemorySink, Global>| {
            let (_, conn) = f.table().iter().next().unwrap();
            tcp::TcpPortion::decode(&f.checkpoint.sink.store[&(conn.id.0, Module::Tcp as u8)].1)
                .unwrap()
                .state
        };
        let tcp_deltas =
            |f: &Firewall<MemorySink, Global>| f.counters.ckpt[Module::Tcp as usize].get();
        for close_wait_longer in [false, true] {
            let mut c = ConntrackSection { capacity: 64, ..Default::default() };
            if close_wait_longer {
                c.timeouts.tcp_close_wait = c.timeouts.tcp_fin_wait + 1;
            }
            let mut a = Firewall::new(
                &c,
                Arc::new(Policy::default()),
                vec![0, 0],
                HZ,
                Global,
                MemorySink::default(),
                FwCounters::leaked(),
            );
            let (cs, ss) = open(&mut a, 40100);
            assert_eq!(
                a.process(&tcp(C, S, (40100, 80), FIN | ACK, (cs, ss), b""), 0, 2),
                Verdict::Forward
            );
            let after_fin = tcp_deltas(&a);
            assert_eq!(
                a.process(&tcp(S, C, (80, 40100), ACK, (ss, cs + 1), b""), 1, 3),
                Verdict::Forward
            );
            if close_wait_longer {
                assert_eq!(tcp_deltas(&a), after_fin + 1);
                assert_eq!(stored_state(&a), tcp::TcpState::CloseWait);
            } else {
                assert_eq!(
                    tcp_deltas(&a),
                    after_fin,
                    "FIN_WAIT -> CLOSE_WAIT is not worth a delta"
                );
                assert_eq!(stored_state(&a), tcp::TcpState::FinWait);
            }
            // Killed here: a restored dataplane carries the rest of the close.
            let mut b = Firewall::new(
                &c,
                Arc::new(Policy::default()),
                vec![0, 0],
                HZ,
                Global,
                MemorySink::default(),
                FwCounters::leaked(),
            );
            assert_eq!(restore_all(&a.checkpoint.sink, &mut b), 1);
            assert_eq!(
                b.process(&tcp(S, C, (80, 40100), FIN | ACK, (ss, cs + 1), b""), 1, 20),
                Verdict::Forward
            );
            assert_eq!(
                b.process(&tcp(C, S, (40100, 80), ACK, (cs + 1, ss + 1), b""), 0, 20),
                Verdict::Forward
            );
            assert_eq!(b.counters.tcp_invalid.iter().map(|c| c.get()).sum::<u64>(), 0);
            let L4Portion::Tcp(t) = b.table().iter().next().unwrap().1.l4 else { panic!() };
            assert_eq!(t.state, tcp::TcpState::TimeWait);
        }
    }

    #[test]
    fn a_tcp_connection_is_stored_once_its_syn_is_answered() {
        let syn = tcp(C, S, (40200, 80), SYN, (1000, 0), b"");
        let syn_ack = tcp(S, C, (80, 40200), SYN | ACK, (5000, 1001), b"");
        let mut a = fw(MemorySink::default());
        assert_eq!(a.process(&syn, 0, 1), Verdict::Forward);
        assert!(a.checkpoint.sink.store.is_empty(), "a SYN alone writes nothing");
        // Killed here: the new dataplane drops the server's answer, and the
        // client's retransmitted SYN opens the connection again.
        let mut b = fw(MemorySink::default());
        assert_eq!(restore_all(&a.checkpoint.sink, &mut b), 0);
        assert_eq!(b.process(&syn_ack, 1, 20), Verdict::Drop);
        assert_eq!(b.process(&syn, 0, 21), Verdict::Forward);
        assert_eq!(b.process(&syn_ack, 1, 21), Verdict::Forward);
        assert_eq!(
            b.process(&tcp(C, S, (40200, 80), ACK, (1001, 5001), b""), 0, 21),
            Verdict::Forward
        );
        // Not killed: the answer stores ip and tcp, in the state it made.
        assert_eq!(a.process(&syn_ack, 1, 2), Verdict::Forward);
        let id = a.table().iter().next().unwrap().1.id.0;
        assert_eq!(
            a.checkpoint.sink.store.keys().copied().collect::<Vec<_>>(),
            vec![(id, Module::Ip as u8), (id, Module::Tcp as u8)]
        );
        assert_eq!(
            tcp::TcpPortion::decode(&a.checkpoint.sink.store[&(id, Module::Tcp as u8)].1)
                .unwrap()
                .state,
            tcp::TcpState::SynRecv
        );
    }

    #[test]
    fn a_related_connection_is_stored_at_its_syn() {
        let mut a = fw(MemorySink::default());
        for (p, port) in [
            (tcp(C, S, (40300, 21), SYN, (1000, 0), b""), 0),
            (tcp(S, C, (21, 40300), SYN | ACK, (5000, 1001), b""), 1),
            (tcp(C, S, (40300, 21), ACK, (1001, 5001), b""), 0),
            (tcp(C, S, (40300, 21), ACK | PSH, (1001, 5001), b"PORT 10,99,0,1,156,64\r\n"), 0),
        ] {
            assert_eq!(a.process(&p, port, 1), Verdict::Forward);
        }
        // Active mode: the server opens the data connection to the port the
        // client named, admitted by the expectation that this SYN uses up.
        assert_eq!(a.process(&tcp(S, C, (20, 40000), SYN, (9000, 0), b""), 1, 2), Verdict::Forward);
        assert_eq!(a.counters.related.get(), 1);
        let data = a
            .table()
            .iter()
            .map(|(_, c)| *c)
            .find(|c| c.key.lo_port == 20 || c.key.hi_port == 20)
            .unwrap();
        assert!(
            a.checkpoint.sink.store.contains_key(&(data.id.0, Module::Ip as u8))
                && a.checkpoint.sink.store.contains_key(&(data.id.0, Module::Tcp as u8)),
            "stored before its answer: its expectation is gone"
        );
        let mut b = fw(MemorySink::default());
        assert_eq!(restore_all(&a.checkpoint.sink, &mut b), 2);
    }

    /// A connection is restored whole or not at all: a TCP key whose tcp
    /// portion is missing, or whose layer-4 portion is another protocol's,
    /// is refused and counted, not rebuilt as a portless flow that passes
    /// every segment. Fails with the check in `restore::rebuild` removed.
    #[test]
    fn a_connection_missing_its_l4_portion_is_not_restored() {
        let mut a = fw(MemorySink::default());
        open(&mut a, 40330);
        let sink = &a.checkpoint.sink;
        let id = sink.store.keys().next().unwrap().0;
        let ip = sink.store[&(id, Module::Ip as u8)].1.clone();
        let tcp_bytes = sink.store[&(id, Module::Tcp as u8)].1.clone();
        let udp = (Module::Udp as u8, &tcp_bytes[..]);
        for l4 in [None, Some(udp)] {
            let mut b = fw(MemorySink::default());
            let got = b.restore(id, &ip, l4, None, 10);
            assert!(
                matches!(
                    got,
                    Err(crate::checkpoint::restore::RestoreError::L4Mismatch { proto: 6, .. })
                ),
                "{got:?}"
            );
            assert_eq!(b.counters.restore_skipped.get(), 1);
            assert_eq!(b.table().iter().count(), 0);
        }
        let mut b = fw(MemorySink::default());
        assert!(b.restore(id, &ip, Some((Module::Tcp as u8, &tcp_bytes)), None, 10).is_ok());
    }

    /// Restored values are bounded by what the live code could have made: a
    /// stored window past 2^30 is cut to it (it would pass every segment), and
    /// an expectation's deadline is cut to a fresh one's. Each half fails
    /// with its bound removed.
    #[test]
    fn restored_windows_and_deadlines_are_bounded() {
        use crate::modules::ftp::FtpRecord;
        use crate::portion::Portion;
        let mut a = fw(MemorySink::default());
        for (p, port) in [
            (tcp(C, S, (40340, 21), SYN, (1000, 0), b""), 0),
            (tcp(S, C, (21, 40340), SYN | ACK, (5000, 1001), b""), 1),
            (tcp(C, S, (40340, 21), ACK, (1001, 5001), b""), 0),
            (tcp(C, S, (40340, 21), ACK | PSH, (1001, 5001), b"PORT 10,99,0,1,156,64\r\n"), 0),
        ] {
            assert_eq!(a.process(&p, port, 1), Verdict::Forward);
        }
        let sink = &a.checkpoint.sink;
        let id = sink.store.keys().next().unwrap().0;
        let get = |m: Module| sink.store[&(id, m as u8)].1.clone();
        let (ip, tcp_bytes) = (get(Module::Ip), get(Module::Tcp));
        let mut rec = FtpRecord::decode(&get(Module::Ftp)).unwrap();
        rec.expectations[0].deadline = 1 << 60;
        let mut ftp = vec![0u8; 512];
        let n = rec.portion.encode(&rec.expectations[..rec.count], &mut ftp).unwrap();
        let mut b = fw(MemorySink::default());
        let tcp_l4 = Some((Module::Tcp as u8, &tcp_bytes[..]));
        b.restore(id, &ip, tcp_l4, Some(&ftp[..n]), 10).unwrap();
        let after_a_fresh_deadline = 10 + 30 * HZ + 1;
        b.process(&tcp(S, C, (20, 40000), SYN, (9000, 0), b""), 1, after_a_fresh_deadline);
        assert_eq!(b.counters.related.get(), 0, "the forged deadline was kept");

        let mut t = tcp::TcpPortion::decode(&tcp_bytes).unwrap();
        t.dirs[0].maxwin = 1 << 31;
        let mut wide = vec![0u8; 256];
        let n = t.encode(&mut wide).unwrap();
        let mut c = fw(MemorySink::default());
        c.restore(id, &ip, Some((Module::Tcp as u8, &wide[..n])), None, 10).unwrap();
        let L4Portion::Tcp(t) = c.table().iter().next().unwrap().1.l4 else { panic!() };
        assert_eq!(t.dirs[0].maxwin, tcp::MAX_WINDOW);
    }

    /// FTP bounce (RFC 2577): a PORT naming a host other than the control
    /// connection's client, or a 227 naming one other than its server,
    /// creates no expectation; the third host's connection is not related.
    /// Fails with the check in `FtpSessions::feed` removed.
    #[test]
    fn an_ftp_bounce_creates_no_expectation() {
        let mut a = fw(MemorySink::default());
        let (cs, ss) = (1001, 5001);
        for (p, port) in [
            (tcp(C, S, (40320, 21), SYN, (1000, 0), b""), 0),
            (tcp(S, C, (21, 40320), SYN | ACK, (5000, 1001), b""), 1),
            (tcp(C, S, (40320, 21), ACK, (cs, ss), b""), 0),
            (tcp(C, S, (40320, 21), ACK | PSH, (cs, ss), b"PORT 10,99,0,77,0,25\r\n"), 0),
            (
                tcp(
                    S,
                    C,
                    (21, 40320),
                    ACK | PSH,
                    (ss, cs + 22),
                    b"227 Entering (10,99,0,78,0,25)\r\n",
                ),
                1,
            ),
        ] {
            assert_eq!(a.process(&p, port, 1), Verdict::Forward);
        }
        assert_eq!(a.counters.ftp_refused.get(), 2, "{}", a.counters.detail());
        assert_eq!(a.counters.ftp_expectations.get(), 0);
        assert!(a.ftp.expectations.is_empty());
        a.process(&tcp(S, [10, 99, 0, 77], (20, 25), SYN, (9000, 0), b""), 1, 2);
        a.process(&tcp(C, [10, 99, 0, 78], (40400, 25), SYN, (9000, 0), b""), 0, 2);
        assert_eq!(a.counters.related.get(), 0);
    }

    /// An FTP portion rebased from another boot (version 0) carries
    /// deadlines of another clock: its expectations are dropped and counted,
    /// the control connection itself restored; with the same store not
    /// rebased, the data connection is admitted.
    #[test]
    fn expectations_from_another_boot_are_not_restored() {
        let mut a = fw(MemorySink::default());
        for (p, port) in [
            (tcp(C, S, (40310, 21), SYN, (1000, 0), b""), 0),
            (tcp(S, C, (21, 40310), SYN | ACK, (5000, 1001), b""), 1),
            (tcp(C, S, (40310, 21), ACK, (1001, 5001), b""), 0),
            (tcp(C, S, (40310, 21), ACK | PSH, (1001, 5001), b"PORT 10,99,0,1,156,64\r\n"), 0),
        ] {
            assert_eq!(a.process(&p, port, 1), Verdict::Forward);
        }
        let data_syn = tcp(S, C, (20, 40000), SYN, (9000, 0), b"");
        for rebased in [false, true] {
            let sink = &a.checkpoint.sink;
            let id = sink.store.keys().next().unwrap().0;
            let get = |m: Module| sink.store.get(&(id, m as u8)).map(|(_, b)| b.as_slice());
            let stored = StoredPortions {
                id,
                ip: get(Module::Ip),
                l4: get(Module::Tcp).map(|b| (Module::Tcp as u8, b)),
                ftp: get(Module::Ftp),
                ftp_rebased: rebased,
            };
            assert!(stored.ftp.is_some());
            let mut b = fw(MemorySink::default());
            assert_eq!(b.restore_many(|sink| sink(stored), 10, |_, e| panic!("{e}")), 1);
            b.process(&data_syn, 1, 11);
            assert_eq!(
                (b.counters.related.get(), b.counters.restore_stale_expectations.get()),
                (u64::from(!rebased), u64::from(rebased)),
                "rebased: {rebased}"
            );
        }
    }

    #[test]
    fn a_reopening_syn_is_stored_once_answered() {
        let mut a = fw(MemorySink::default());
        let (cs, ss) = open(&mut a, 40203);
        for (p, port) in [
            (tcp(C, S, (40203, 80), FIN | ACK, (cs, ss), b""), 0),
            (tcp(S, C, (80, 40203), FIN | ACK, (ss, cs + 1), b""), 1),
            (tcp(C, S, (40203, 80), ACK, (cs + 1, ss + 1), b""), 0),
        ] {
            assert_eq!(a.process(&p, port, 2), Verdict::Forward);
        }
        let id = a.table().iter().next().unwrap().1.id.0;
        let stored = |f: &Firewall<MemorySink, Global>| {
            tcp::TcpPortion::decode(&f.checkpoint.sink.store[&(id, Module::Tcp as u8)].1)
                .unwrap()
                .state
        };
        assert_eq!(stored(&a), tcp::TcpState::TimeWait);
        let syn = tcp(C, S, (40203, 80), SYN, (90000, 0), b"");
        let syn_ack = tcp(S, C, (80, 40203), SYN | ACK, (7000, 90001), b"");
        assert_eq!(a.process(&syn, 0, 3), Verdict::Forward);
        assert_eq!(stored(&a), tcp::TcpState::TimeWait, "the reopening SYN alone writes nothing");
        // Killed here: restored in TIME_WAIT, the connection takes the
        // client's retransmitted SYN as it took the first.
        let mut b = fw(MemorySink::default());
        assert_eq!(restore_all(&a.checkpoint.sink, &mut b), 1);
        assert_eq!(b.process(&syn, 0, 20), Verdict::Forward);
        assert_eq!(b.process(&syn_ack, 1, 20), Verdict::Forward);
        assert_eq!(
            b.process(&tcp(C, S, (40203, 80), ACK, (90001, 7001), b""), 0, 20),
            Verdict::Forward
        );
        // Not killed: the answer is written.
        assert_eq!(a.process(&syn_ack, 1, 4), Verdict::Forward);
        assert_eq!(stored(&a), tcp::TcpState::SynRecv);
    }

    #[test]
    fn an_unanswered_syn_is_neither_resynced_nor_deleted() {
        let mut a = fw(MemorySink::default());
        assert_eq!(a.process(&tcp(C, S, (40201, 80), SYN, (1000, 0), b""), 0, 1), Verdict::Forward);
        open(&mut a, 40202);
        a.checkpoint.sink.store.clear();
        a.checkpoint.sink.resync = true;
        a.housekeeping(2);
        assert_eq!(a.checkpoint.sink.store.len(), 2, "ip and tcp of the answered connection only");
        assert_eq!(a.counters.ckpt_reemitted.get(), 2, "and only those counted as re-emitted");
        for _ in 0..64 {
            a.housekeeping(u64::MAX / 2);
        }
        assert_eq!(a.table().len(), 0);
        assert_eq!(a.checkpoint.sink.deletes, 1, "the answered connection's delete only");
    }
}

#[cfg(test)]
mod strict_rst_tests {
    use crate::checkpoint::MemorySink;
    use crate::firewall::testing::*;
    use crate::firewall::*;
    use crate::frames::{tcp, tcp_flags::*};
    use crate::modules::tcp::{TcpInvalid, TcpState};
    use crate::modules::L4Portion;

    /// A blind RST inside the window but off the exact sequence is forwarded
    /// (the endpoint answers it with a challenge ACK) and counted; the
    /// firewall keeps the connection, as Linux conntrack does. The exact RST
    /// closes it.
    #[test]
    fn a_blind_in_window_rst_does_not_close_the_connection() {
        let mut f = fw(MemorySink::default());
        let (cs, ss) = open(&mut f, 40700);
        let state = |f: &Firewall<MemorySink, _>| {
            let (_, conn) = f.table().iter().next().unwrap();
            match conn.l4 {
                L4Portion::Tcp(t) => t.state,
                _ => unreachable!(),
            }
        };
        let blind = [
            tcp(S, C, (80, 40700), RST, (ss + 500, 0), b""),
            tcp(C, S, (40700, 80), RST | ACK, (cs - 50, ss), b""),
        ];
        for rst in &blind {
            assert_eq!(f.process(rst, 0, 2), Verdict::Forward);
            assert_eq!(state(&f), TcpState::Established);
        }
        assert_eq!(f.counters.tcp_invalid[TcpInvalid::RstNotExact as usize].get(), 2);
        let data = tcp(C, S, (40700, 80), ACK | PSH, (cs, ss), b"more");
        assert_eq!(f.process(&data, 0, 3), Verdict::Forward);
        let exact = tcp(C, S, (40700, 80), RST | ACK, (cs + 4, ss), b"");
        assert_eq!(f.process(&exact, 0, 4), Verdict::Forward);
        assert_eq!(state(&f), TcpState::Close);
    }
}
