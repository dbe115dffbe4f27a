//! Wire detection (issue 21): a firewall on the wire cannot see a server's
//! `close()`, so without the server host's hook it asks the service. A SYN
//! from the firewall's own address (`probe_addr`) answered by an RST, or by
//! nothing twice, says the service is down: a held FIN or RST was its
//! crash's. A SYN-ACK says it listens: the FIN or RST was a close (the
//! half-open connection is reset at once), or, for connections waiting for
//! it, that it is back.
//!
//! Evidence is judged only by a probe sent `delay` after it: a crashing
//! process's connections may close before its listening socket does, and
//! an answer the old server gave before it died is no verdict on its death.
//! One probe at a time per service and worker; no I/O here.

use super::segment::{Endpoints, Segment, SynOptions, VlanTags};
use crate::parse::{tcp_flags, Addr, TcpHdr};

/// A service's probe settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    /// The firewall's own address and MAC on the server's side (the
    /// address as the parser keeps it: IPv4 mapped), of the service's family.
    pub addr: Addr,
    pub mac: [u8; 6],
    /// How long a probe waits for its answer; it is sent once more, then
    /// its silence is the verdict.
    pub timeout_ns: u64,
    /// How long after a FIN or RST the service is probed.
    pub delay_ns: u64,
    /// While connections wait for the service to come back, how often it
    /// is probed.
    pub interval_ns: u64,
}

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A SYN-ACK: the service listens.
    Listening,
    /// An RST: nothing listens at the port.
    Refused,
    /// No answer to two SYNs: the host is gone, or cut off.
    Silent,
}

impl Verdict {
    pub fn is_down(self) -> bool {
        self != Verdict::Listening
    }
}

/// A verdict, and when its probe was first sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    pub verdict: Verdict,
    pub sent_at: u64,
    /// It judges evidence (a FIN or RST) seen up to then, `delay` before
    /// the probe left.
    pub evidence_until: u64,
}

impl Judged {
    fn new(verdict: Verdict, sent_at: u64, delay: u64) -> Judged {
        Judged { verdict, sent_at, evidence_until: sent_at.saturating_sub(delay) }
    }
}

/// What `Prober::poll` asks of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// Send this segment out of config port `port`.
    Send { port: usize, ends: Endpoints, seg: Segment },
    /// A probe went unanswered.
    Judged(Judged),
}

struct Outstanding {
    sport: u16,
    isn: u32,
    sent_at: u64,
    last_sent: u64,
    tries: u8,
}

/// Where probes leave: the server side's config port, the server's MAC
/// (or its router's) and the VLAN tags, as a protected connection's frames
/// had them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via {
    pub port: usize,
    pub server_mac: [u8; 6],
    pub tags: VlanTags,
}

/// One service's probes on one worker.
pub struct Prober {
    cfg: ProbeConfig,
    server: (Addr, u16),
    /// Source ports whose answers the ports' RSS brings to this worker.
    sports: Vec<u16>,
    next_sport: usize,
    out: Option<Outstanding>,
    /// The earliest evidence no probe was sent after yet, and the latest
    /// evidence a probe sent judges (its verdict may still be on its way).
    wanted: Option<u64>,
    covered: Option<u64>,
    via: Option<Via>,
    last_probe: Option<u64>,
    /// An RST owed to the service for a probe it accepted: (port, seq).
    reset: Option<(u16, u32)>,
    /// Probe ISNs: a keyed hash of a count, so that one seen on the wire
    /// says nothing of the next.
    isn_key: u64,
    probes_sent: u64,
}

/// Two SYNs per verdict: one lost frame does not make a crash.
const TRIES: u8 = 2;

impl Prober {
    /// Probes of `server` from the source ports `sports`; None without
    /// any (no port's answers would reach this worker). `key`: random.
    pub fn new(
        cfg: ProbeConfig,
        server: (Addr, u16),
        sports: Vec<u16>,
        key: u64,
    ) -> Option<Prober> {
        if sports.is_empty() {
            return None;
        }
        Some(Prober {
            cfg,
            server,
            sports,
            next_sport: 0,
            out: None,
            wanted: None,
            covered: None,
            via: None,
            last_probe: None,
            reset: None,
            isn_key: key,
            probes_sent: 0,
        })
    }

    pub fn config(&self) -> ProbeConfig {
        self.cfg
    }

    pub fn addr(&self) -> Addr {
        self.cfg.addr
    }

    pub fn mac(&self) -> [u8; 6] {
        self.cfg.mac
    }

    /// Evidence seen at `since` (a held FIN or RST) wants a verdict from a
    /// probe sent `delay` after it; `via` says where probes go.
    pub fn want(&mut self, since: u64, via: Via) {
        self.via = Some(via);
        if self.covered.is_some_and(|c| since <= c) {
            return;
        }
        self.wanted = Some(self.wanted.map_or(since, |w| w.min(since)));
    }

    /// An event `poll` gave that could not be sent (no room): an RST stays
    /// owed; a SYN goes again at the next poll.
    pub fn unsent(&mut self, ev: &ProbeEvent) {
        let ProbeEvent::Send { ends, seg, .. } = ev else { return };
        if seg.flags & tcp_flags::RST != 0 {
            self.reset = Some((ends.sport, seg.seq));
        } else if let Some(o) = self.out.as_mut().filter(|o| o.isn == seg.seq) {
            if o.tries > 1 {
                o.tries -= 1;
                o.last_sent = o.last_sent.saturating_sub(self.cfg.timeout_ns);
            } else {
                // Never left: the evidence it was for is still wanted.
                let at = o.sent_at.saturating_sub(self.cfg.delay_ns);
                self.out = None;
                self.covered = None;
                self.wanted = Some(self.wanted.map_or(at, |w| w.min(at)));
            }
        }
    }

    /// The RST a SYN-ACK to the probe address gets when no probe waits for
    /// it (its RST lost, or a probe already judged), as a stack would;
    /// `via`: where the SYN-ACK came from.
    pub fn stray_reset(&self, t: &TcpHdr, via: Via) -> ProbeEvent {
        self.send(via, t.dport, Segment::reset(t.ack))
    }

    /// Where probes go, learnt from a connection waiting for the service.
    pub fn route(&mut self, via: Via) {
        self.via = Some(via);
    }

    /// Whether a probe is waited for.
    pub fn in_flight(&self) -> bool {
        self.out.is_some()
    }

    /// A segment from the service to the probe address: the verdict when
    /// it answers the outstanding probe. Anything else is ignored.
    pub fn on_answer(&mut self, t: &TcpHdr) -> Option<Judged> {
        let o = self.out.as_ref()?;
        if t.dport != o.sport || t.ack != o.isn.wrapping_add(1) || t.flags & tcp_flags::ACK == 0 {
            return None;
        }
        let verdict = if t.flags & tcp_flags::RST != 0 {
            Verdict::Refused
        } else if t.flags & tcp_flags::SYN != 0 {
            // It listens: the half-open connection is not left to it.
            self.reset = Some((o.sport, t.ack));
            Verdict::Listening
        } else {
            return None;
        };
        let sent_at = o.sent_at;
        self.out = None;
        Some(Judged::new(verdict, sent_at, self.cfg.delay_ns))
    }

    /// What to do now: call until None. `waiting`: connections of the
    /// service wait for it to come back, so it is probed every interval.
    pub fn poll(&mut self, now: u64, waiting: bool) -> Option<ProbeEvent> {
        let via = self.via?;
        if let Some((sport, seq)) = self.reset.take() {
            return Some(self.send(via, sport, Segment::reset(seq)));
        }
        if let Some(o) = self.out.as_mut() {
            if now.saturating_sub(o.last_sent) < self.cfg.timeout_ns {
                return None;
            }
            if o.tries < TRIES {
                o.tries += 1;
                o.last_sent = now;
                let (sport, isn) = (o.sport, o.isn);
                return Some(self.send(via, sport, syn(isn)));
            }
            let sent_at = o.sent_at;
            self.out = None;
            return Some(ProbeEvent::Judged(Judged::new(
                Verdict::Silent,
                sent_at,
                self.cfg.delay_ns,
            )));
        }
        let due = self.wanted.is_some_and(|w| w.saturating_add(self.cfg.delay_ns) <= now)
            || (waiting
                && self.last_probe.is_none_or(|at| now.saturating_sub(at) >= self.cfg.interval_ns));
        if !due {
            return None;
        }
        self.wanted = None;
        self.covered = Some(now.saturating_sub(self.cfg.delay_ns));
        self.last_probe = Some(now);
        let sport = self.sports[self.next_sport % self.sports.len()];
        self.next_sport = self.next_sport.wrapping_add(1);
        self.probes_sent += 1;
        let x = xxhash_rust::xxh3::xxh3_64_with_seed(&self.probes_sent.to_le_bytes(), self.isn_key)
            as u32;
        self.out = Some(Outstanding { sport, isn: x, sent_at: now, last_sent: now, tries: 1 });
        Some(self.send(via, sport, syn(x)))
    }

    fn send(&self, via: Via, sport: u16, seg: Segment) -> ProbeEvent {
        let ends = Endpoints {
            src_mac: self.cfg.mac,
            dst_mac: via.server_mac,
            src_ip: self.cfg.addr,
            dst_ip: self.server.0,
            sport,
            dport: self.server.1,
            tags: via.tags,
        };
        ProbeEvent::Send { port: via.port, ends, seg }
    }
}

fn syn(isn: u32) -> Segment {
    Segment {
        seq: isn,
        ack: 0,
        flags: tcp_flags::SYN,
        window: 1024,
        syn: Some(SynOptions { mss: 536, wscale: None, sack_perm: false }),
        ts: None,
        payload: 0..0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::TcpOpts;

    const MS: u64 = 1_000_000;
    const CFG: ProbeConfig = ProbeConfig {
        addr: crate::parse::v4_mapped([10, 0, 0, 9]),
        mac: [2, 0, 0, 0, 0, 9],
        timeout_ns: 100 * MS,
        delay_ns: 10 * MS,
        interval_ns: 50 * MS,
    };
    const VIA: Via = Via { port: 1, server_mac: [2, 0, 0, 0, 0, 2], tags: VlanTags::UNTAGGED };

    fn prober() -> Prober {
        Prober::new(CFG, (crate::parse::v4_mapped([10, 0, 0, 2]), 7000), vec![40001, 40003], 12345)
            .unwrap()
    }

    fn sent(e: Option<ProbeEvent>) -> (Endpoints, Segment) {
        match e {
            Some(ProbeEvent::Send { port: 1, ends, seg }) => (ends, seg),
            other => panic!("expected a frame out of port 1, got {other:?}"),
        }
    }

    fn answer(sport: u16, isn: u32, flags: u8) -> TcpHdr {
        TcpHdr {
            sport: 7000,
            dport: sport,
            seq: 777,
            ack: isn.wrapping_add(1),
            flags,
            window: 0,
            opts: TcpOpts::default(),
        }
    }

    #[test]
    fn nothing_is_sent_without_evidence() {
        let mut p = prober();
        assert_eq!(p.poll(0, false), None);
        p.want(5 * MS, VIA);
        assert_eq!(p.poll(14 * MS, false), None, "not before the delay");
    }

    #[test]
    fn an_rst_says_refused_and_judges_what_came_before_the_probe() {
        let mut p = prober();
        p.want(MS, VIA);
        let (ends, seg) = sent(p.poll(12 * MS, false));
        assert_eq!(
            (ends.src_ip, ends.dst_ip, ends.dport),
            (CFG.addr, crate::parse::v4_mapped([10, 0, 0, 2]), 7000)
        );
        assert_eq!((ends.src_mac, ends.dst_mac), (CFG.mac, VIA.server_mac));
        assert_eq!(seg.flags, tcp_flags::SYN);
        // Evidence after the probe left waits for the next one.
        p.want(13 * MS, VIA);
        assert_eq!(p.poll(30 * MS, false), None, "one probe at a time");
        // An answer to another port or number is not the probe's.
        assert_eq!(
            p.on_answer(&answer(ends.sport, seg.seq + 5, tcp_flags::RST | tcp_flags::ACK)),
            None
        );
        let j = p.on_answer(&answer(ends.sport, seg.seq, tcp_flags::RST | tcp_flags::ACK));
        assert_eq!(
            j,
            Some(Judged { verdict: Verdict::Refused, sent_at: 12 * MS, evidence_until: 2 * MS })
        );
        let (_, next) = sent(p.poll(30 * MS, false));
        assert_eq!(next.flags, tcp_flags::SYN);
        assert_ne!(next.seq, seg.seq);
    }

    #[test]
    fn a_syn_ack_says_listening_and_is_reset() {
        let mut p = prober();
        p.want(MS, VIA);
        let (ends, seg) = sent(p.poll(11 * MS, false));
        let j = p.on_answer(&answer(ends.sport, seg.seq, tcp_flags::SYN | tcp_flags::ACK));
        assert_eq!(j.map(|j| j.verdict), Some(Verdict::Listening));
        let (e, rst) = sent(p.poll(12 * MS, false));
        assert_eq!((e.sport, rst.flags, rst.seq), (ends.sport, tcp_flags::RST, seg.seq + 1));
        assert_eq!(p.poll(12 * MS, false), None);
    }

    #[test]
    fn silence_is_a_verdict_after_a_second_syn() {
        let mut p = prober();
        p.want(0, VIA);
        let (_, first) = sent(p.poll(10 * MS, false));
        assert_eq!(p.poll(109 * MS, false), None);
        let (_, again) = sent(p.poll(110 * MS, false));
        assert_eq!(again, first, "the same SYN again");
        assert_eq!(
            p.poll(210 * MS, false),
            Some(ProbeEvent::Judged(Judged {
                verdict: Verdict::Silent,
                sent_at: 10 * MS,
                evidence_until: 0
            }))
        );
    }

    #[test]
    fn what_found_no_room_goes_at_the_next_poll() {
        let mut p = prober();
        p.want(0, VIA);
        let first = p.poll(10 * MS, false).unwrap();
        p.unsent(&first);
        let (ends, again) = sent(p.poll(11 * MS, false));
        assert_eq!(again.flags, tcp_flags::SYN);
        let ack = answer(ends.sport, again.seq, tcp_flags::SYN | tcp_flags::ACK);
        let j = p.on_answer(&ack).unwrap();
        assert_eq!(j.evidence_until, MS, "it judges the evidence the lost SYN was for");
        let rst = p.poll(12 * MS, false).unwrap();
        p.unsent(&rst);
        assert_eq!(p.poll(13 * MS, false), Some(rst), "the RST stays owed");
    }

    #[test]
    fn a_service_waited_for_is_probed_every_interval() {
        let mut p = prober();
        p.route(VIA);
        let (e, s) = sent(p.poll(0, true));
        p.on_answer(&answer(e.sport, s.seq, tcp_flags::RST | tcp_flags::ACK)).unwrap();
        assert_eq!(p.poll(49 * MS, true), None);
        let (e2, s2) = sent(p.poll(50 * MS, true));
        assert_ne!(e2.sport, e.sport, "source ports take turns");
        p.on_answer(&answer(e2.sport, s2.seq, tcp_flags::RST | tcp_flags::ACK)).unwrap();
        assert_eq!(p.poll(200 * MS, false), None, "nobody waits: no probe");
    }
}
