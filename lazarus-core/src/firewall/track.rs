//! Tracking and admission: a packet of a known connection goes through its
//! modules; a packet of none is admitted as a new connection when policy
//! (or an FTP expectation) allows; ICMP errors pass when they quote a
//! connection; later fragments follow their first.

use super::burst::{Seg, Step};
use super::fragments::LaterFragment;
use super::{Firewall, Verdict};
use crate::checkpoint::{worth_storing, CheckpointSink};
use crate::conn::table::TableMemory;
use crate::conn::{ConnKey, Dir, Endpoint, SlotId};
use crate::modules::icmp::{self, IcmpKind, IcmpPortion};
use crate::modules::ip::IpPortion;
use crate::modules::tcp::{self, TcpState};
use crate::modules::udp::UdpPortion;
use crate::modules::{Conn, L4Portion, Module, NO_FTP};
use crate::parse::{self, Fragment, FrameKind, IpPacket, L4};
use crate::policy::Action;
use crate::stats::{FwCounters, FwDrop};

/// The canonical key of a packet that has one of its own, which way it
/// goes, and what kind of ICMP it is.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Keyed {
    pub key: ConnKey,
    pub src_is_lo: bool,
    pub icmp_kind: Option<IcmpKind>,
}

impl Keyed {
    /// TCP, UDP, ICMP echo, and other protocols by address. None for ICMP
    /// errors and stateless ICMP, which `track` decides without a
    /// connection of theirs.
    #[inline(always)]
    pub fn of(p: &IpPacket, zone: u16) -> Option<Keyed> {
        let (sport, dport, icmp_kind) = match p.l4 {
            L4::Tcp(h) => (h.sport, h.dport, None),
            L4::Udp { sport, dport } => (sport, dport, None),
            L4::Icmp(info) => match icmp::classify(p.family, &info) {
                k @ (IcmpKind::EchoRequest(id) | IcmpKind::EchoReply(id)) => (id, id, Some(k)),
                _ => return None,
            },
            L4::Other => (0, 0, None),
        };
        let (key, src_is_lo) = ConnKey::canonical(
            p.family,
            p.proto,
            Endpoint { addr: p.src, port: sport },
            Endpoint { addr: p.dst, port: dport },
            zone,
            p.vlan,
        );
        Some(Keyed { key, src_is_lo, icmp_kind })
    }
}

impl<S: CheckpointSink, A: TableMemory> Firewall<S, A> {
    /// The verdict on one frame received on config port `port`.
    #[inline]
    pub fn process(&mut self, frame: &[u8], port: usize, now: u64) -> Verdict {
        let mut p = IpPacket::default();
        match Self::parse_step(&self.counters, frame, &mut p) {
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
    pub(super) fn parse_step(counters: &FwCounters, frame: &[u8], p: &mut IpPacket) -> Step {
        match parse::parse_into(frame, p) {
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
            let was = t.state;
            let r = tcp::on_segment(t, dir, h, u32::from(seg.payload_len), &self.ticks.tcp);
            self.tally.moved(was, t.state);
            match r {
                Ok(tracked) => {
                    if tracked.delta {
                        changed = Some(Module::Tcp);
                    }
                    if t.state == TcpState::Close && was != TcpState::Close {
                        self.counters.closed[Module::Tcp as usize].add(1);
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
            ip: IpPortion::new(k.src_is_lo, now),
            l4,
            ftp: NO_FTP,
            dirty: 0,
            stored,
        };
        conn.ip.count(Dir::Original, frame.len());
        conn.deadline = now + self.ticks.of(&conn.l4);
        if matches!(p.l4, L4::Tcp(_)) && self.ftp.wants(dport) {
            conn.ftp = self.ftp.open(&self.counters).unwrap_or(NO_FTP);
        }
        match self.table.insert(conn) {
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

    /// Feeds a control-connection segment to its ftp portion. The portion is
    /// checkpointed after every segment with payload: its unfinished line and
    /// stream position change then, and control channels carry little.
    fn ftp_segment(&mut self, slot: SlotId, dir: Dir, seq: u32, payload: &[u8], now: u64) {
        if payload.is_empty() {
            return;
        }
        let conn = self.table.get_mut(slot);
        self.ftp.feed(conn, dir, seq, payload, &self.counters, now);
        self.checkpoint.emit(conn, Module::Ftp, &self.ftp, now);
    }

    /// An ICMP error passes when the packet it quotes belongs to a connection.
    fn icmp_error(&mut self, p: &IpPacket, zone: u16) -> Verdict {
        let L4::Icmp(info) = p.l4 else { return Verdict::Drop };
        let Some(q) = info.quoted else { return self.drop_because(FwDrop::IcmpNoQuote) };
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
