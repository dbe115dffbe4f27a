//! The per-packet pipeline of one worker: parse → connection lookup → the
//! protocol modules (ip → tcp | udp | icmp → ftp) → policy for new connections.
//! Owned by one worker; allocates nothing and locks nothing after `new`.

use crate::checkpoint::CheckpointSink;
use crate::config::ConntrackSection;
use crate::conn::{ConnKey, ConnTable, Dir, Endpoint};
use crate::modules::ftp::{Expectation, Expectations, FtpEvent, FtpPortion};
use crate::modules::icmp::{self, IcmpKind, IcmpPortion};
use crate::modules::ip::IpPortion;
use crate::modules::tcp::{self, TcpChange, TcpState};
use crate::modules::udp::UdpPortion;
use crate::modules::{Conn, L4Portion, Module, NO_FTP};
use crate::parse::{self, Addr, FrameKind, Fragment, IpPacket, L4};
use crate::policy::{Action, Policy};
use crate::stats::{FwCounters, FwDrop};
use allocator_api2::alloc::Allocator;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    Drop,
}

/// Timeouts converted to TSC ticks once.
#[derive(Debug, Clone)]
struct Ticks {
    tcp: [u64; TcpState::COUNT],
    udp: u64,
    udp_stream: u64,
    icmp: u64,
    generic: u64,
    fragment: u64,
    expectation: u64,
}

impl Ticks {
    fn new(c: &ConntrackSection, hz: u64) -> Ticks {
        let t = &c.timeouts;
        let s = |secs: u64| secs.saturating_mul(hz);
        let mut tcp = [0; TcpState::COUNT];
        for (i, v) in [t.tcp_close, t.tcp_syn_sent, t.tcp_syn_recv, t.tcp_established, t.tcp_fin_wait, t.tcp_close_wait, t.tcp_last_ack, t.tcp_time_wait, t.tcp_close, t.tcp_syn_sent].iter().enumerate() {
            tcp[i] = s(*v);
        }
        Ticks { tcp, udp: s(t.udp), udp_stream: s(t.udp_stream), icmp: s(t.icmp), generic: s(t.generic), fragment: s(t.fragment), expectation: s(c.expectation_timeout) }
    }

    fn of(&self, l4: &L4Portion) -> u64 {
        match l4 {
            L4Portion::Tcp(t) => self.tcp[t.state as usize],
            L4Portion::Udp(u) => {
                if u.replied {
                    self.udp_stream
                } else {
                    self.udp
                }
            }
            L4Portion::Icmp(_) => self.icmp,
            L4Portion::Other => self.generic,
        }
    }
}

/// First fragments' verdicts, so that later fragments follow them.
#[derive(Debug, Clone, Copy, Default)]
struct FragEntry {
    src: Addr,
    dst: Addr,
    id: u32,
    proto: u8,
    forward: bool,
    deadline: u64,
}

/// Pool of FTP portions (only control connections have one).
struct FtpPool {
    slots: Box<[FtpPortion]>,
    free: Vec<u32>,
}

pub struct Firewall<S: CheckpointSink, A: Allocator + Clone> {
    table: ConnTable<Conn, A>,
    policy: Arc<Policy>,
    port_bridge: Vec<u16>,
    ticks: Ticks,
    sweep_batch: usize,
    ftp_enabled: bool,
    ftp_ports: Vec<u16>,
    ftp: FtpPool,
    expectations: Expectations,
    frags: Box<[FragEntry]>,
    pub counters: Arc<FwCounters>,
    pub sink: S,
}

impl<S: CheckpointSink, A: Allocator + Clone> Firewall<S, A> {
    pub fn new(c: &ConntrackSection, policy: Arc<Policy>, port_bridge: Vec<u16>, tsc_hz: u64, alloc: A, sink: S, counters: Arc<FwCounters>) -> Self {
        let ftp_n = if c.ftp { c.ftp_sessions } else { 0 };
        Firewall {
            table: ConnTable::new_in(c.capacity, alloc),
            policy,
            port_bridge,
            ticks: Ticks::new(c, tsc_hz),
            sweep_batch: c.sweep_batch as usize,
            ftp_enabled: c.ftp,
            ftp_ports: c.ftp_ports.clone(),
            ftp: FtpPool { slots: vec![FtpPortion::default(); ftp_n as usize].into_boxed_slice(), free: (0..ftp_n).rev().collect() },
            expectations: Expectations::new(c.expectations as usize),
            frags: vec![FragEntry::default(); c.fragments.max(1) as usize].into_boxed_slice(),
            counters,
            sink,
        }
    }

    pub fn table(&self) -> &ConnTable<Conn, A> {
        &self.table
    }

    /// Expires what timed out; call once per poll round.
    #[inline]
    pub fn housekeeping(&mut self, now: u64) {
        let (counters, sink, ftp) = (&self.counters, &mut self.sink, &mut self.ftp);
        self.table.sweep(now, self.sweep_batch, |_, conn| {
            if let Some(m) = conn.l4.module() {
                counters.expired[m as usize].add(1);
            }
            if conn.ftp != NO_FTP {
                ftp.free.push(conn.ftp);
            }
            sink.deleted(conn.id);
        });
        self.counters.live.set(self.table.len() as u64);
        if !self.expectations.is_empty() {
            self.expectations.expire(now);
        }
    }

    /// The verdict on one frame received on config port `port`.
    #[inline]
    pub fn process(&mut self, frame: &[u8], port: usize, now: u64) -> Verdict {
        let mut p = IpPacket::default();
        match parse::parse_into(frame, &mut p) {
            Ok(FrameKind::Ip) => {}
            Ok(FrameKind::NonIp { .. }) => return Verdict::Forward,
            Err(r) => {
                self.counters.parse_drop[r as usize].add(1);
                return Verdict::Drop;
            }
        };
        if p.frag == Fragment::Later {
            return self.later_fragment(&p, now);
        }
        let v = self.track(frame, &p, port, now);
        if p.frag == Fragment::First {
            self.remember_fragment(&p, v == Verdict::Forward, now);
        }
        v
    }

    fn frag_slot(&self, src: &Addr, dst: &Addr, id: u32, proto: u8) -> usize {
        let mut b = [0u8; 37];
        b[..16].copy_from_slice(src);
        b[16..32].copy_from_slice(dst);
        b[32..36].copy_from_slice(&id.to_be_bytes());
        b[36] = proto;
        (xxhash_rust::xxh3::xxh3_64(&b) % self.frags.len() as u64) as usize
    }

    fn remember_fragment(&mut self, p: &IpPacket, forward: bool, now: u64) {
        let i = self.frag_slot(&p.src, &p.dst, p.frag_id, p.proto);
        self.frags[i] = FragEntry { src: p.src, dst: p.dst, id: p.frag_id, proto: p.proto, forward, deadline: now + self.ticks.fragment };
    }

    fn later_fragment(&mut self, p: &IpPacket, now: u64) -> Verdict {
        let e = self.frags[self.frag_slot(&p.src, &p.dst, p.frag_id, p.proto)];
        if e.deadline > now && e.id == p.frag_id && e.proto == p.proto && e.src == p.src && e.dst == p.dst {
            if e.forward {
                return Verdict::Forward;
            }
        } else {
            self.counters.fw_drop[FwDrop::FragmentUnmatched as usize].add(1);
        }
        Verdict::Drop
    }

    fn drop_because(&self, why: FwDrop) -> Verdict {
        self.counters.fw_drop[why as usize].add(1);
        Verdict::Drop
    }

    fn track(&mut self, frame: &[u8], p: &IpPacket, port: usize, now: u64) -> Verdict {
        let zone = self.port_bridge.get(port).copied().unwrap_or(0);
        let (sport, dport, icmp_kind) = match p.l4 {
            L4::Tcp(h) => (h.sport, h.dport, None),
            L4::Udp { sport, dport } => (sport, dport, None),
            L4::Icmp(info) => match icmp::classify(p.family, &info) {
                IcmpKind::Error => return self.icmp_error(p, zone),
                IcmpKind::LinkLocal => return Verdict::Forward,
                IcmpKind::Other => {
                    // Stateless: the policy decides each one.
                    return match self.policy.decide(port, p).0 {
                        Action::Accept => Verdict::Forward,
                        Action::Drop => self.drop_because(FwDrop::Policy),
                    };
                }
                k @ (IcmpKind::EchoRequest(id) | IcmpKind::EchoReply(id)) => (id, id, Some(k)),
            },
            L4::Other => (0, 0, None),
        };
        let (key, src_is_lo) = ConnKey::canonical(p.family, p.proto, Endpoint { addr: p.src, port: sport }, Endpoint { addr: p.dst, port: dport }, zone, p.vlan);
        let id = key.id();
        match self.table.lookup(&key, id) {
            Some(slot) => {
                let conn = self.table.get_mut(slot);
                let dir = conn.ip.dir_of(src_is_lo);
                let mut changed: Option<Module> = None;
                match (&mut conn.l4, &p.l4) {
                    (L4Portion::Tcp(t), L4::Tcp(h)) => {
                        let old = t.state;
                        match tcp::track(t, dir, h, p.payload_len as u32) {
                            Ok(TcpChange::None) => {}
                            Ok(_) => {
                                changed = Some(Module::Tcp);
                                if t.state == TcpState::Close && old != TcpState::Close {
                                    self.counters.closed[Module::Tcp as usize].add(1);
                                }
                            }
                            Err(why) => {
                                self.counters.tcp_invalid[why as usize].add(1);
                                return Verdict::Drop;
                            }
                        }
                    }
                    (L4Portion::Udp(u), _) => {
                        if u.track(dir) {
                            changed = Some(Module::Udp);
                        }
                    }
                    (L4Portion::Icmp(i), _) => match i.track(dir, icmp_kind.unwrap_or(IcmpKind::Other)) {
                        Ok(true) => changed = Some(Module::Icmp),
                        Ok(false) => {}
                        Err(()) => return self.drop_because(FwDrop::IcmpBadEcho),
                    },
                    _ => {}
                }
                conn.ip.count(dir, frame.len());
                conn.deadline = now + self.ticks.of(&conn.l4);
                if let Some(m) = changed {
                    self.sink.portion_changed(conn, m);
                }
                if conn.ftp != NO_FTP {
                    if let L4::Tcp(h) = p.l4 {
                        self.ftp_segment(slot, dir, h.seq, p.payload(frame), now);
                    }
                }
                Verdict::Forward
            }
            None => self.new_conn(key, src_is_lo, frame, p, port, icmp_kind, now),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn new_conn(&mut self, key: ConnKey, src_is_lo: bool, frame: &[u8], p: &IpPacket, port: usize, icmp_kind: Option<IcmpKind>, now: u64) -> Verdict {
        let (l4, module) = match p.l4 {
            L4::Tcp(h) => match tcp::new_conn(&h, p.payload_len as u32) {
                Ok(t) => (L4Portion::Tcp(t), Some(Module::Tcp)),
                Err(why) => {
                    self.counters.tcp_invalid[why as usize].add(1);
                    return Verdict::Drop;
                }
            },
            L4::Udp { .. } => (L4Portion::Udp(UdpPortion::default()), Some(Module::Udp)),
            L4::Icmp(_) => match icmp_kind {
                Some(IcmpKind::EchoRequest(id)) => (L4Portion::Icmp(IcmpPortion::new(id)), Some(Module::Icmp)),
                _ => return self.drop_because(FwDrop::IcmpBadEcho),
            },
            L4::Other => (L4Portion::Other, None),
        };
        let dport = match p.l4 {
            L4::Tcp(h) => h.dport,
            L4::Udp { dport, .. } => dport,
            _ => 0,
        };
        let related = matches!(p.l4, L4::Tcp(_)) && self.expectations.take(p.family, key.zone, key.vlan, &p.src, &p.dst, dport, now).is_some();
        if related {
            self.counters.related.add(1);
        } else if self.policy.decide(port, p).0 == Action::Drop {
            return self.drop_because(FwDrop::Policy);
        }
        let mut conn = Conn { key, id: key.id(), deadline: 0, ip: IpPortion::new(src_is_lo, now), l4, ftp: NO_FTP };
        conn.ip.count(Dir::Original, frame.len());
        conn.deadline = now + self.ticks.of(&conn.l4);
        let wants_ftp = self.ftp_enabled && matches!(p.l4, L4::Tcp(_)) && self.ftp_ports.contains(&dport);
        if wants_ftp {
            match self.ftp.free.pop() {
                Some(i) => {
                    self.ftp.slots[i as usize] = FtpPortion::default();
                    conn.ftp = i;
                }
                None => self.counters.ftp_no_session.add(1),
            }
        }
        match self.table.insert(conn) {
            Ok(_) => {
                if let Some(m) = module {
                    self.counters.new[m as usize].add(1);
                    self.sink.portion_changed(&conn, Module::Ip);
                    self.sink.portion_changed(&conn, m);
                } else {
                    self.counters.new[Module::Ip as usize].add(1);
                    self.sink.portion_changed(&conn, Module::Ip);
                }
                Verdict::Forward
            }
            Err(_) => {
                if conn.ftp != NO_FTP {
                    self.ftp.free.push(conn.ftp);
                }
                self.drop_because(FwDrop::TableFull)
            }
        }
    }

    fn ftp_segment(&mut self, slot: crate::conn::SlotId, dir: Dir, seq: u32, payload: &[u8], now: u64) {
        if payload.is_empty() {
            return;
        }
        let conn = *self.table.get(slot);
        let portion = &mut self.ftp.slots[conn.ftp as usize];
        let r = portion.feed(dir, seq, payload);
        if r.gap {
            self.counters.ftp_gaps.add(1);
        }
        let Some(ev) = r.event else { return };
        // The two ends of the control connection, as the client and server.
        let (client, server) = if conn.ip.orig_src_is_lo { (conn.key.lo_addr, conn.key.hi_addr) } else { (conn.key.hi_addr, conn.key.lo_addr) };
        // Only the control connection's own peers may be named: anything else
        // is an FTP bounce (RFC 2577) and creates no expectation.
        let (src, dst, port) = match ev {
            FtpEvent::Active { addr, port } if addr == client => (server, client, port),
            FtpEvent::Passive { addr, port } if addr == server => (client, server, port),
            FtpEvent::ExtendedPassive { port } => (client, server, port),
            _ => {
                self.counters.ftp_refused.add(1);
                return;
            }
        };
        let e = Expectation { family: conn.key.family, zone: conn.key.zone, vlan: conn.key.vlan, src, dst, dport: port, master: conn.id, deadline: now + self.ticks.expectation, live: true };
        if self.expectations.add(e, now) {
            self.counters.ftp_expectations.add(1);
            portion.expectations_made += 1;
            self.sink.portion_changed(&conn, Module::Ftp);
        } else {
            self.counters.expectations_full.add(1);
        }
    }

    /// An ICMP error passes when the packet it quotes belongs to a connection.
    fn icmp_error(&mut self, p: &IpPacket, zone: u16) -> Verdict {
        let L4::Icmp(info) = p.l4 else { return Verdict::Drop };
        let Some(q) = info.quoted else { return self.drop_because(FwDrop::IcmpNoQuote) };
        let (key, _) = ConnKey::canonical(q.family, q.proto, Endpoint { addr: q.src, port: q.sport }, Endpoint { addr: q.dst, port: q.dport }, zone, p.vlan);
        if self.table.lookup(&key, key.id()).is_some() {
            Verdict::Forward
        } else {
            self.drop_because(FwDrop::IcmpUnrelated)
        }
    }
}
