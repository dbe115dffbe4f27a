//! Protected services in the pipeline (issue 21): the TCP connections to a
//! `[[protected]]` service go through `protect::Protected` after the
//! tracker has let them pass. Unchanged segments are forwarded in place;
//! segments the firewall writes (answers for a dead server, replayed bytes,
//! segments rewritten by a splice) go to an outbox the worker sends after
//! each burst.
//!
//! Without `[[protected]]` the packet path pays one branch. With it, a
//! packet is matched on its raw addresses first and parsed again only when
//! it is the service's. IPv4 and untagged frames only, so far. A protected
//! connection's log is allocated as it grows: the design's log ring into
//! checkpointd's memory (which also makes it survive the dataplane) is not
//! built yet.

use crate::config::ProtectedService;
use crate::parse::checksum::RxChecksums;
use crate::parse::{parse, tcp_flags, Parsed, L4};
use crate::protect::segment::{write_v4, Endpoints, Segment};
use crate::protect::{Action, Ended, ProtectDrop, ProtectPolicy, Protected, ReplayError, Toward};
use crate::stats::{FwCounters, MAX_PROTECTED};
use std::collections::HashMap;

const ETH: usize = 14;
const ETH_IP: usize = ETH + 20;
/// The largest frame the outbox holds: a full-sized Ethernet frame.
pub const OUT_FRAME: usize = 1518;
/// Frames the outbox holds between two drains by the worker: two lanes'
/// bursts of spliced segments, and room for answers and the replay.
const OUT_FRAMES: usize = 256;

/// A protected connection: client address and port, service index, and
/// the config port the client's frames arrive on (its side of the bridge: a
/// frame from the wrong side matches nothing, and the same addresses on
/// another bridge are another connection).
type Key = ([u8; 4], u16, usize, usize);

struct Entry {
    p: Protected,
    /// Client to server, as the client's SYN had them.
    ends: Endpoints,
    /// The config port the client's frames arrive on: answers to the client
    /// leave by it, frames to the server by its bridge peer.
    client_port: usize,
    /// When its last segment passed (in ns), and whether the end of its
    /// protection was counted.
    last_seen: u64,
    end_counted: bool,
    /// Recoveries counted so far.
    recoveries: u32,
}

/// How long an idle connection keeps its entry: one whose protection ended
/// but whose splice its segments still need, or one both ends went quiet
/// on (a connection that dies silently must not hold its place forever).
const IDLE_NS: u64 = 2 * 3600 * 1_000_000_000;
const POLL_NS: u64 = 1_000_000;
/// A connection whose SYN was never answered keeps its entry this long.
const OPENING_NS: u64 = 30 * 1_000_000_000;

struct Service {
    addr: [u8; 4],
    port: u16,
    policy: ProtectPolicy,
    connections: usize,
    open: usize,
    /// The hook's words seen so far.
    words_seen: u64,
}

/// Frames the firewall sends itself, and the config port each leaves by.
pub struct Outbox {
    frames: Vec<[u8; OUT_FRAME]>,
    lens: Vec<(usize, usize)>,
}

impl Outbox {
    /// Room for `n` frames, taken now.
    fn new(n: usize) -> Outbox {
        Outbox { frames: vec![[0; OUT_FRAME]; n], lens: Vec::with_capacity(n) }
    }

    /// Writes one frame with `write`; false when the outbox is full.
    fn push(&mut self, port: usize, write: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        let i = self.lens.len();
        if i == self.frames.len() {
            return false;
        }
        match write(&mut self.frames[i]) {
            Some(n) => {
                self.lens.push((port, n));
                true
            }
            None => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Hands each frame to `send` (config port, bytes), then empties.
    pub fn drain(&mut self, mut send: impl FnMut(usize, &[u8])) {
        for (i, &(port, n)) in self.lens.iter().enumerate() {
            send(port, &self.frames[i][..n]);
        }
        self.lens.clear();
    }
}

pub struct Protection {
    services: Vec<Service>,
    conns: HashMap<Key, Entry>,
    /// The bridge peer of each config port: where a frame received on it
    /// leaves.
    peer: Vec<usize>,
    tsc_hz: u64,
    /// When the table was last walked, in ns.
    last_poll: u64,
    pub outbox: Outbox,
}

impl Protection {
    /// Protection for `services`; `peer[p]` is the port a frame received on
    /// config port p leaves by.
    pub fn new(services: &[ProtectedService], peer: Vec<usize>, tsc_hz: u64) -> Protection {
        let services: Vec<Service> = services
            .iter()
            .take(MAX_PROTECTED)
            .map(|s| Service {
                addr: s.addr.octets(),
                port: s.port,
                policy: ProtectPolicy {
                    log_bound: s.log_bound as usize,
                    hold_ns: s.hold_ms * 1_000_000,
                    keepalive_ns: s.keepalive_ms * 1_000_000,
                    down_max_ns: s.down_max_ms * 1_000_000,
                },
                connections: s.connections as usize,
                open: 0,
                words_seen: 0,
            })
            .collect();
        let room = services.iter().map(|s| s.connections).sum();
        Protection {
            services,
            conns: HashMap::with_capacity(room),
            peer,
            tsc_hz: tsc_hz.max(1),
            last_poll: 0,
            // Without services, no room: nothing is ever sent.
            outbox: Outbox::new(if room == 0 { 0 } else { OUT_FRAMES }),
        }
    }

    /// True when no service is protected: the packet path's one branch.
    #[inline(always)]
    pub fn is_off(&self) -> bool {
        self.services.is_empty()
    }

    fn ns(&self, now: u64) -> u64 {
        (u128::from(now) * 1_000_000_000 / u128::from(self.tsc_hz)) as u64
    }

    /// The service a frame's raw addresses name, and whether it is the
    /// client's (to the service) or the server's: untagged IPv4 only.
    #[inline]
    fn service_of(&self, f: &[u8]) -> Option<(usize, bool)> {
        if f.len() < ETH_IP + 20 || f[12..14] != [0x08, 0x00] || f[ETH + 9] != 6 {
            return None;
        }
        let l4 = ETH + usize::from(f[ETH] & 0x0f) * 4;
        let (sport, dport) = (
            u16::from_be_bytes([*f.get(l4)?, *f.get(l4 + 1)?]),
            u16::from_be_bytes([*f.get(l4 + 2)?, *f.get(l4 + 3)?]),
        );
        self.services.iter().enumerate().find_map(|(i, s)| {
            if f[30..34] == s.addr && dport == s.port {
                Some((i, true))
            } else if f[26..30] == s.addr && sport == s.port {
                Some((i, false))
            } else {
                None
            }
        })
    }

    /// A frame of a protected connection that is down, in recovery or
    /// spliced, before the tracker sees it: Some(true) to forward it as it
    /// is, Some(false) when protection took it. None for every other frame,
    /// which the tracker sees first. The tracker's view of such a
    /// connection stays as it was when the server died: the new server's
    /// handshake and sequence numbers are not the connection it knows.
    pub fn before_tracking(
        &mut self,
        frame: &[u8],
        port: usize,
        now: u64,
        c: &FwCounters,
    ) -> Option<bool> {
        self.take(frame, port, now, c, true)
    }

    /// A frame the tracker let pass, received on config port `port`: true
    /// to forward it as it is; false when protection took it (absorbed,
    /// dropped and counted, or sent rewritten through the outbox).
    pub fn pass(&mut self, frame: &[u8], port: usize, now: u64, c: &FwCounters) -> bool {
        self.take(frame, port, now, c, false).unwrap_or(true)
    }

    fn take(
        &mut self,
        frame: &[u8],
        port: usize,
        now: u64,
        c: &FwCounters,
        before: bool,
    ) -> Option<bool> {
        let (svc, from_client) = self.service_of(frame)?;
        let Ok(Parsed::Ip(p)) = parse(frame) else { return None };
        let L4::Tcp(t) = p.l4 else { return None };
        if p.l3_off as usize != ETH || p.l4_off as usize != ETH_IP {
            // IP options: not ours to rewrite yet.
            return None;
        }
        let client = if from_client { (ip4(&p.src), t.sport) } else { (ip4(&p.dst), t.dport) };
        let client_side = if from_client { port } else { *self.peer.get(port)? };
        let key = (client.0, client.1, svc, client_side);
        let syn = t.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
        if before {
            if from_client && syn {
                // A new connection always meets the tracker and the policy.
                return None;
            }
            let e = self.conns.get(&key)?;
            if !e.p.is_down() && e.p.splice().is_none() {
                return None;
            }
            // Not seen by the tracker, so checked here.
            if crate::parse::checksum::verify(frame, &p, RxChecksums::UNKNOWN).is_err() {
                c.parse_drop[crate::parse::DropReason::BadL4Checksum as usize].add(1);
                return Some(false);
            }
        }
        let ns = self.ns(now);
        if from_client && syn {
            self.open(key, &t, frame, port, ns, c);
        }
        let Some(e) = self.conns.get_mut(&key) else { return Some(true) };
        e.last_seen = ns;
        let payload = p.payload(frame);
        // The rewrite works on a copy: a rewritten segment is sent from the
        // outbox, the received one dropped. (A frame too large for it is
        // counted and dropped: TCP sends it again smaller or not at all.)
        let mut buf = [0u8; OUT_FRAME];
        let Some(copy) = buf.get_mut(..frame.len()) else {
            c.protect.unspliceable.add(1);
            return Some(false);
        };
        copy.copy_from_slice(frame);
        let action = if from_client {
            e.p.from_client(&t, payload, &mut copy[ETH_IP..])
        } else {
            e.p.from_server(&t, payload, &mut copy[ETH_IP..], ns)
        };
        let out_port = if from_client { self.peer[port] } else { e.client_port };
        let sent = match action {
            Action::Forward if copy == frame => return Some(true),
            Action::Forward => self.outbox.push(out_port, |out| {
                out[..copy.len()].copy_from_slice(copy);
                Some(copy.len())
            }),
            Action::ForwardFrom(at) => {
                let Some(splice) = e.p.splice() else { return Some(false) };
                let seg = Segment::tail_of(&t, at);
                let ends = e.ends.reversed();
                let part = payload.get(at..).unwrap_or(&[]);
                self.outbox.push(out_port, |buf| {
                    let n = write_v4(buf, &ends, &seg, part)?;
                    splice.to_client(&mut buf[ETH_IP..n]).ok()?;
                    Some(n)
                })
            }
            Action::Absorb => return Some(false),
            Action::Drop(why) => {
                let counter = match why {
                    ProtectDrop::LogGap => &c.protect.log_gap,
                    ProtectDrop::LogConflict => &c.protect.log_conflict,
                    ProtectDrop::Unspliceable => &c.protect.unspliceable,
                };
                counter.add(1);
                return Some(false);
            }
        };
        count_sent(c, sent);
        Some(false)
    }

    fn open(
        &mut self,
        key: Key,
        t: &crate::parse::TcpHdr,
        frame: &[u8],
        port: usize,
        ns: u64,
        c: &FwCounters,
    ) {
        match self.conns.get(&key) {
            // Its SYN again.
            Some(e) if e.p.client_isn() == t.seq => return,
            // The client's address and port, reused for a new connection:
            // the old one is over.
            Some(_) => {
                self.conns.remove(&key);
                self.services[key.2].open -= 1;
            }
            None => {}
        }
        let s = &mut self.services[key.2];
        if s.open >= s.connections {
            c.protect.table_full.add(1);
            return;
        }
        s.open += 1;
        c.protect.connections.add(1);
        let mut ends = Endpoints {
            src_mac: [0; 6],
            dst_mac: [0; 6],
            src_ip: key.0,
            dst_ip: s.addr,
            sport: t.sport,
            dport: t.dport,
        };
        ends.src_mac.copy_from_slice(&frame[6..12]);
        ends.dst_mac.copy_from_slice(&frame[..6]);
        let p = Protected::new(s.policy, t);
        self.conns.insert(
            key,
            Entry { p, ends, client_port: port, last_seen: ns, end_counted: false, recoveries: 0 },
        );
    }

    /// Timers, the hook's words, and the segments owed: called from
    /// housekeeping, with the service counters the hook writes.
    pub fn poll(&mut self, now: u64, c: &FwCounters) {
        if self.is_off() {
            return;
        }
        let ns = self.ns(now);
        // Every round would walk every protected connection: a millisecond
        // between walks is soon enough for any timer here.
        if ns.saturating_sub(self.last_poll) < POLL_NS {
            return;
        }
        self.last_poll = ns;
        let req = &c.requests;
        for (i, s) in self.services.iter_mut().enumerate() {
            let v = req.protect_word[i].load(std::sync::atomic::Ordering::Acquire);
            let (words, last_up) = (v >> 1, v & 1 == 1);
            let new = words.wrapping_sub(s.words_seen);
            s.words_seen = words;
            if new == 0 {
                continue;
            }
            // Down and up again since the last look (a fast restart): both.
            let went_down = !last_up || new >= 2;
            let came_up = last_up;
            for (_, e) in self.conns.iter_mut().filter(|(k, _)| k.2 == i) {
                if went_down {
                    e.p.service_down(ns);
                }
                if came_up {
                    e.p.service_up(ns);
                }
            }
        }
        let Protection { conns, outbox, peer, services, .. } = self;
        conns.retain(|key, e| {
            while let Some((to, seg)) = e.p.poll(ns) {
                let sent = match to {
                    Toward::Client => {
                        let ends = e.ends.reversed();
                        outbox.push(e.client_port, |buf| write_v4(buf, &ends, &seg, &[]))
                    }
                    Toward::Server => {
                        let port = peer[e.client_port];
                        let bytes = e.p.log().get(seg.payload.clone()).unwrap_or(&[]);
                        outbox.push(port, |buf| write_v4(buf, &e.ends, &seg, bytes))
                    }
                };
                count_sent(c, sent);
                if !sent {
                    break;
                }
            }
            if e.p.recoveries() != e.recoveries {
                c.protect.spliced.add(u64::from(e.p.recoveries() - e.recoveries));
                e.recoveries = e.p.recoveries();
            }
            let idle = ns.saturating_sub(e.last_seen) > IDLE_NS
                || (e.p.is_opening() && ns.saturating_sub(e.last_seen) > OPENING_NS);
            let Some(why) = e.p.ended() else {
                if idle && !e.p.is_down() {
                    services[key.2].open -= 1;
                    return false;
                }
                return true;
            };
            if e.end_counted {
                // Counted already; kept for its splice until idle.
                if idle {
                    services[key.2].open -= 1;
                }
                return !idle;
            }
            e.end_counted = true;
            let counter = match why {
                Ended::Closed => None,
                Ended::LogBound => Some(&c.protect.log_bound),
                Ended::Released => Some(&c.protect.released),
                Ended::DownTooLong => Some(&c.protect.down_too_long),
                Ended::Replay(ReplayError::Diverged) => {
                    c.protect.diverged.add(1);
                    Some(&c.protect.replay_failed)
                }
                Ended::Replay(_) => Some(&c.protect.replay_failed),
            };
            if let Some(counter) = counter {
                counter.add(1);
            }
            // An ended connection is forwarded as any other; a spliced one
            // keeps its entry, whose splice every segment still needs.
            if e.p.splice().is_some() {
                return true;
            }
            services[key.2].open -= 1;
            false
        });
    }
}

fn count_sent(c: &FwCounters, sent: bool) {
    if sent {
        c.protect.sent.add(1);
    } else {
        c.protect.send_full.add(1);
    }
}

fn ip4(a: &[u8; 16]) -> [u8; 4] {
    [a[12], a[13], a[14], a[15]]
}
