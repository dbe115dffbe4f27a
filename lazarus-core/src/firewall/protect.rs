//! Protected services in the pipeline (issue 21): the TCP connections to a
//! `[[protected]]` service go through `protect::Protected` after the
//! tracker has let them pass. Unchanged segments are forwarded in place;
//! segments the firewall writes (answers for a dead server, replayed bytes,
//! segments rewritten by a splice) go to an outbox the worker sends after
//! each burst.
//!
//! Without `[[protected]]` the packet path pays one branch. With it, a
//! packet is matched on its raw addresses first and parsed again only when
//! it is the service's. IPv4 or IPv6, untagged or VLAN-tagged.
//!
//! Checkpointed (issue 21, slice 3): a client segment's new bytes go into
//! the worker's delta ring (LOG records) before the segment is forwarded,
//! and one with no room there is dropped, never forwarded unlogged; each
//! connection's snapshot follows at the next millisecond's walk when it
//! changed. checkpointd keeps both in its memory; a restarted dataplane
//! rebuilds the table from them (`restore`) before its ports start, and a
//! restarted checkpointd is told everything again.

use super::held_output::{Ask, HeldOutput};
use crate::checkpoint::{log_bytes_within, log_slots, CheckpointSink, ProtectRecord};
use crate::config::ProtectedService;
use crate::parse::checksum::RxChecksums;
use crate::parse::{
    is_v4_mapped, parse_into, tcp_flags, v4_mapped, Addr, Fragment, FrameKind, IpPacket, L4,
};
use crate::protect::segment::{write_segment, Endpoints, Segment};
use crate::protect::{
    Action, Ended, Judged, ProbeConfig, ProbeEvent, Prober, ProtectDrop, ProtectPolicy, Protected,
    ReplayError, SnapshotError, Toward, Verdict, Via, VlanTags, DOWN_FOR, SNAPSHOT_BYTES,
};
use crate::stats::{FwCounters, MAX_PROTECTED};
use foldhash::fast::RandomState;
use std::collections::HashMap;

/// The largest frame the outbox holds: a full-sized Ethernet frame.
pub const OUT_FRAME: usize = 1518 + 4 * 2;
/// Frames the outbox holds between two drains by the worker: two lanes'
/// bursts of spliced segments, and room for answers and the replay.
const OUT_FRAMES: usize = 256;
/// Bytes of a protected connection's checkpoint record: its snapshot, then
/// where it is on the wire (`WIRE_*`: both ends' MACs, addresses and
/// ports, the client's config port, the VLAN tags).
pub const RECORD_BYTES: usize = SNAPSHOT_BYTES + 64;
/// A record of snapshot format 3 or before: 4-byte addresses.
const RECORD_BYTES_V4: usize = SNAPSHOT_BYTES + 32;
/// Where the wire part keeps its VLAN tags (16-byte addresses before them);
/// in a record of format 3, at 26 (zero, untagged, before 3).
const TAGS_AT: std::ops::Range<usize> = 50..50 + VlanTags::ENCODED;
const TAGS_AT_V4: std::ops::Range<usize> = 26..26 + VlanTags::ENCODED;

/// A protected connection: client address and port, service index, the
/// config port the client's frames arrive on (its side of the bridge: a
/// frame from the wrong side matches nothing, and the same addresses on
/// another bridge are another connection), and its VLAN ids as the tracker
/// keys them (the same addresses in another VLAN are another connection).
type Key = (Addr, u16, usize, usize, u32);

/// Where a frame's headers are, read from its raw bytes before any parse.
#[derive(Clone, Copy)]
struct At {
    ip: usize,
    l4: usize,
    tags: VlanTags,
    v4: bool,
}

impl At {
    /// The frame's source and destination addresses, as the parser keeps
    /// them (IPv4 mapped).
    fn addrs(&self, f: &[u8]) -> (Addr, Addr) {
        let ip = self.ip;
        if self.v4 {
            let a = |at: usize| v4_mapped([f[at], f[at + 1], f[at + 2], f[at + 3]]);
            (a(ip + 12), a(ip + 16))
        } else {
            let a = |at: usize| -> Addr { f[at..at + 16].try_into().expect("16 bytes") };
            (a(ip + 8), a(ip + 24))
        }
    }
}

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
    /// FINs passed on since its protection ended and its last recovery:
    /// [`CLIENT_FIN`], [`SERVER_FIN`]. (Not those protection absorbed or
    /// holds: a crashed server's, the replay's; not resets, which a blind
    /// sender can forge.)
    closes: u8,
    /// Recoveries counted so far.
    recoveries: u32,
    /// Its id in checkpointd: its key and the client's ISN at its SYN
    /// (kept through truncations and restarts).
    id: u64,
    /// The record checkpointd holds; None when none yet, or it must be
    /// written again.
    written: Option<[u8; RECORD_BYTES]>,
    /// The stream offset up to which checkpointd holds its log.
    sent_log: u64,
    /// Its end is written: checkpointd holds nothing of it any more.
    end_written: bool,
    /// Output commit at the remote level.
    commit: Committed,
}

/// Where a connection's client bytes are in the remote store: (stream
/// offset, ring position after the record that carried it, the drainer it
/// went to) of its recent log writes, oldest first, and the offset the
/// store holds up to.
#[derive(Clone, Copy, Default)]
struct Committed {
    marks: [(u64, u64, u64); MARKS],
    len: u8,
    end: u64,
    /// Its frames in the hold, which its later ones wait behind.
    held: u16,
    /// Restored: its log's end is marked at the next walk.
    mark_due: bool,
}

/// Log writes remembered per connection; past it, the oldest two merge
/// (its bytes then wait for the later write's position).
const MARKS: usize = 8;

impl Committed {
    fn mark(&mut self, offset: u64, position: u64, drainer: u64) {
        if usize::from(self.len) == MARKS {
            self.marks.copy_within(1.., 0);
            self.len -= 1;
        }
        self.marks[usize::from(self.len)] = (offset, position, drainer);
        self.len += 1;
    }

    /// The offset committed, with ring positions below `committed` in the
    /// remote store as `drainer` says. A write to an earlier drainer (a
    /// checkpointd since restarted, a ring since resynced) is never
    /// committed by a later one's word: it waits until the log, written
    /// again to the new one, replaces its marks.
    fn settle(&mut self, (committed, drainer): (u64, u64)) -> u64 {
        let n = self.marks[..usize::from(self.len)]
            .iter()
            .take_while(|&&(_, pos, d)| pos <= committed && d == drainer)
            .count();
        if n > 0 {
            self.end = self.end.max(self.marks[n - 1].0);
            self.marks.copy_within(n.., 0);
            self.len -= n as u8;
        }
        self.end
    }
}

impl Entry {
    fn record(&self, ns: u64) -> [u8; RECORD_BYTES] {
        let mut r = [0; RECORD_BYTES];
        let (snap, wire) = r.split_at_mut(SNAPSHOT_BYTES);
        self.p.snapshot(snap.try_into().expect("SNAPSHOT_BYTES"), ns);
        let e = &self.ends;
        wire[0..6].copy_from_slice(&e.src_mac);
        wire[6..12].copy_from_slice(&e.dst_mac);
        wire[12..28].copy_from_slice(&e.src_ip);
        wire[28..44].copy_from_slice(&e.dst_ip);
        wire[44..46].copy_from_slice(&e.sport.to_le_bytes());
        wire[46..48].copy_from_slice(&e.dport.to_le_bytes());
        wire[48..50].copy_from_slice(&(self.client_port as u16).to_le_bytes());
        wire[TAGS_AT].copy_from_slice(&e.tags.encode());
        r
    }

    /// Log bytes checkpointd does not hold yet.
    fn log_owed(&self) -> usize {
        let log = self.p.client_log();
        (log.end_offset() - self.sent_log.max(log.base())) as usize
    }

    /// Ring slots `write_log` takes with `more` bytes on top.
    fn slots_owed(&self, more: usize) -> u32 {
        let trim = u32::from(self.sent_log < self.p.client_log().base());
        log_slots(self.log_owed() + more) + trim
    }

    /// Writes the log bytes checkpointd does not hold yet, in at most
    /// `slots` ring slots (a log longer than the ring, written again to a
    /// new checkpointd, goes in pieces); true once it holds them all.
    fn write_log<S: CheckpointSink>(&mut self, sink: &mut S, mut slots: u32) -> bool {
        let log = self.p.client_log();
        if self.sent_log < log.base() {
            // checkpointd's copy starts before this log's truncation (or it
            // holds nothing: a new checkpointd): it drops the bytes first.
            if slots == 0
                || sink.protect(self.id, ProtectRecord::Trim { base: log.base() }).is_err()
            {
                return false;
            }
            slots -= 1;
            self.sent_log = log.base();
        }
        let from = self.sent_log;
        let owed = (log.end_offset() - from) as usize;
        if owed == 0 {
            return true;
        }
        let n = owed.min(log_bytes_within(slots));
        if n == 0 {
            return false;
        }
        let at = (from - log.base()) as usize;
        let bytes = &log.bytes()[at..at + n];
        if sink.protect(self.id, ProtectRecord::Log { offset: from, bytes }).is_err() {
            return false;
        }
        self.sent_log = from + n as u64;
        self.commit.mark(self.sent_log, sink.position(), sink.drainer());
        n == owed
    }

    /// At a quiet point of a request/response service, truncates its log,
    /// here and in checkpointd: the trim and the rebased record go
    /// together, or, with no room for both, neither (it waits for the next
    /// quiet point).
    fn truncate<S: CheckpointSink>(
        &mut self,
        quiet: bool,
        sink: &mut S,
        (now, ns): (u64, u64),
        c: &FwCounters,
    ) {
        if !quiet || (S::ENABLED && (self.log_owed() != 0 || !sink.has_room(2))) {
            return;
        }
        self.p.truncate();
        c.protect.truncated.add(1);
        if !S::ENABLED {
            return;
        }
        let base = self.p.client_log().base();
        let rec = self.record(ns);
        let trimmed = sink.protect(self.id, ProtectRecord::Trim { base }).is_ok()
            && sink.protect(self.id, ProtectRecord::Snapshot { version: now, bytes: &rec }).is_ok();
        self.sent_log = base;
        self.written = trimmed.then_some(rec);
    }

    /// The client's stream offset past everything it sent: its log, and
    /// its FIN, counted as one more (what its record says).
    fn stream_end(&self) -> u64 {
        self.p.client_log().end_offset() + u64::from(self.p.fins().0)
    }

    /// The client's stream offset an acknowledgment number stands for
    /// (never past what it sent).
    fn ack_offset(&self, ack: u32) -> u64 {
        let behind = self.p.client_next().wrapping_sub(ack) as i32;
        self.stream_end().saturating_sub(u64::from(behind.max(0) as u32))
    }

    /// The sequence number up to which the remote store holds what the
    /// client sent (for the firewall's own acknowledgments).
    fn committed_seq(&self) -> u32 {
        let short = self.stream_end().saturating_sub(self.commit.end);
        self.p.client_next().wrapping_sub(short.min(u64::from(u32::MAX >> 1)) as u32)
    }

    /// Whether checkpointd holds anything of it (an end is then owed).
    fn known(&self) -> bool {
        !self.end_written && (self.written.is_some() || self.sent_log > 0)
    }

    /// Protection ended without a splice to keep: the end is written now
    /// (room permitting; else at the walk), so a restart in between cannot
    /// bring back a connection that is over.
    fn end_now<S: CheckpointSink>(&mut self, sink: &mut S, now: u64) {
        if S::ENABLED
            && self.known()
            && self.p.ended().is_some()
            && self.p.splice().is_none()
            && sink.protect(self.id, ProtectRecord::End { version: now }).is_ok()
        {
            self.end_written = true;
        }
    }
}

/// What an operator is shown of a protected connection's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView {
    pub client: (std::net::IpAddr, u16),
    pub server: (std::net::IpAddr, u16),
    /// Its VLAN ids as the tracker keys them (0 untagged).
    pub vlan: u32,
    pub snapshot: crate::protect::SnapshotView,
}

/// Reads a record as checkpointd holds it (`protected`), for display.
pub fn describe_record(record: &[u8]) -> Result<RecordView, ProtectRestoreError> {
    let (snapshot, ends, _) = read_record(record)?;
    Ok(RecordView {
        client: (ip_of(&ends.src_ip), ends.sport),
        server: (ip_of(&ends.dst_ip), ends.dport),
        vlan: ends.tags.id(),
        snapshot: crate::protect::view(snapshot)?,
    })
}

/// A record's snapshot bytes, its endpoints and the client's config port:
/// the wire part of this build's records, or of format 3 and before
/// (IPv4 addresses in 4 bytes).
fn read_record(record: &[u8]) -> Result<(&[u8], Endpoints, usize), ProtectRestoreError> {
    let (snapshot, wire) = record.split_at(SNAPSHOT_BYTES.min(record.len()));
    let tags = |at: std::ops::Range<usize>| {
        VlanTags::decode(wire[at].try_into().expect("VlanTags::ENCODED"))
            .ok_or(ProtectRestoreError::Tags)
    };
    let le16 = |at: usize| u16::from_le_bytes([wire[at], wire[at + 1]]);
    let mut ends = Endpoints {
        src_mac: [0; 6],
        dst_mac: [0; 6],
        src_ip: [0; 16],
        dst_ip: [0; 16],
        sport: 0,
        dport: 0,
        tags: VlanTags::UNTAGGED,
    };
    let client_port = match record.len() {
        RECORD_BYTES => {
            ends.src_ip.copy_from_slice(&wire[12..28]);
            ends.dst_ip.copy_from_slice(&wire[28..44]);
            (ends.sport, ends.dport, ends.tags) = (le16(44), le16(46), tags(TAGS_AT)?);
            le16(48)
        }
        RECORD_BYTES_V4 => {
            let ip = |at: usize| v4_mapped([wire[at], wire[at + 1], wire[at + 2], wire[at + 3]]);
            (ends.src_ip, ends.dst_ip) = (ip(12), ip(16));
            (ends.sport, ends.dport, ends.tags) = (le16(20), le16(22), tags(TAGS_AT_V4)?);
            le16(24)
        }
        n => return Err(ProtectRestoreError::Length(n)),
    };
    if is_v4_mapped(&ends.src_ip) != is_v4_mapped(&ends.dst_ip) {
        return Err(ProtectRestoreError::Family);
    }
    ends.src_mac.copy_from_slice(&wire[0..6]);
    ends.dst_mac.copy_from_slice(&wire[6..12]);
    Ok((snapshot, ends, usize::from(client_port)))
}

/// An address as the parser keeps it (IPv4 mapped).
fn addr_of(a: std::net::IpAddr) -> Addr {
    match a {
        std::net::IpAddr::V4(a) => v4_mapped(a.octets()),
        std::net::IpAddr::V6(a) => a.octets(),
    }
}

/// An address as the parser keeps it, as the standard library's.
fn ip_of(a: &Addr) -> std::net::IpAddr {
    let v6 = std::net::Ipv6Addr::from(*a);
    v6.to_ipv4_mapped().map_or(v6.into(), Into::into)
}

fn entry_id(key: &Key, client_isn: u32) -> u64 {
    let mut b = [0u8; 16 + 2 + 8 + 8 + 4 + 4];
    b[..16].copy_from_slice(&key.0);
    b[16..18].copy_from_slice(&key.1.to_le_bytes());
    b[18..26].copy_from_slice(&(key.2 as u64).to_le_bytes());
    b[26..34].copy_from_slice(&(key.3 as u64).to_le_bytes());
    b[34..38].copy_from_slice(&client_isn.to_le_bytes());
    b[38..].copy_from_slice(&key.4.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&b)
}

/// Why a protected connection could not be rebuilt at a restart; it goes
/// on unprotected (its tracked connection is restored as any other).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtectRestoreError {
    #[error("protection record of {0} bytes, expected {RECORD_BYTES}: written by another build")]
    Length(usize),
    #[error("{0}:{1} is no longer a [[protected]] service")]
    NoService(std::net::IpAddr, u16),
    #[error("the record's addresses are of two families: damaged")]
    Family,
    #[error("config port {0} of the record is not one of this config's ports")]
    NoPort(usize),
    #[error("the service's `connections` are all taken; raise it")]
    Full,
    #[error("the record's VLAN tags are none a build writes: damaged")]
    Tags,
    #[error("checkpointd lost a record of its log (a torn record, or it restarted and was not told everything again yet)")]
    LogLost,
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// How long an idle connection keeps its entry: one whose protection ended
/// but whose splice its segments still need, or one both ends went quiet
/// on (a connection that dies silently must not hold its place forever).
const IDLE_NS: u64 = 2 * 3600 * 1_000_000_000;
/// FINs passed on after protection ended (`Entry::closes`): with both, a
/// connection keeps its entry only `close_linger_ms` after its last
/// segment, not for hours, holding a place in `connections`.
const CLIENT_FIN: u8 = 1;
const SERVER_FIN: u8 = 2;
const POLL_NS: u64 = 1_000_000;

/// A connection whose SYN was never answered keeps its entry this long.
const OPENING_NS: u64 = 30 * 1_000_000_000;

struct Service {
    /// As the parser keeps addresses (IPv4 mapped).
    addr: Addr,
    v4: bool,
    port: u16,
    policy: ProtectPolicy,
    connections: usize,
    open: usize,
    /// `close_linger_ms`, in ns.
    close_linger_ns: u64,
    /// Wire detection (`probe_addr`): probes of the service, and the
    /// verdict of the last one, applied at the next walk.
    probe: Option<Prober>,
    judged: Option<Judged>,
    /// The last walk found connections waiting for it to come back.
    waiting: bool,
    /// `output_commit = "remote"`.
    remote_commit: bool,
}

/// Server segments the hold keeps at most per worker.
const HELD_FRAMES: usize = 512;

/// Source ports a worker's probes use, found among these: each one's
/// answers reach the worker by the ports' RSS.
const PROBE_SPORTS: std::ops::Range<u16> = 33_000..61_000;
const PROBE_SPORTS_EACH: usize = 8;

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
    /// Some service is IPv6: IPv6 frames are looked at at all.
    any_v6: bool,
    /// Some service probes from an IPv6 address: neighbour solicitations
    /// are looked at.
    v6_probes: bool,
    /// Where the services answered their clients, shared by the workers.
    seen: std::sync::Arc<super::SeenVlans>,
    conns: HashMap<Key, Entry, RandomState>,
    /// The bridge peer of each config port: where a frame received on it
    /// leaves.
    peer: Vec<usize>,
    /// Nanoseconds per TSC tick, as a 32.32 fixed-point factor: a multiply
    /// a packet, not a 128-bit division.
    ns_per_tick: u128,
    /// When the table was last walked, in ns.
    last_poll: u64,
    pub outbox: Outbox,
    /// Where a segment is rewritten.
    scratch: Box<[u8; OUT_FRAME]>,
    /// Ends of connections checkpointd holds, not written yet (no room).
    ends_owed: Vec<u64>,
    /// Server segments waiting for the remote store (output commit), by
    /// connection and id (a reused client port is another connection).
    held: HeldOutput<(Key, u64)>,
}

impl Protection {
    /// Protection for `services`; `peer[p]` is the port a frame received on
    /// config port p leaves by.
    pub fn new(services: &[ProtectedService], peer: Vec<usize>, tsc_hz: u64) -> Protection {
        let services: Vec<Service> = services
            .iter()
            .take(MAX_PROTECTED)
            .map(|s| Service {
                addr: addr_of(s.addr),
                v4: s.addr.is_ipv4(),
                port: s.port,
                policy: ProtectPolicy {
                    log_bound: s.log_bound as usize,
                    log_memory: crate::protect::LogMemory::HEAP,
                    hold_ns: s.hold_ms * 1_000_000,
                    keepalive_ns: s.keepalive_ms * 1_000_000,
                    down_max_ns: s.down_max_ms * 1_000_000,
                    truncate: s.truncation == crate::config::Truncation::RequestResponse,
                    truncate_idle_ns: s.truncate_idle_ms * 1_000_000,
                },
                connections: s.connections as usize,
                open: 0,
                close_linger_ns: s.close_linger_ms * 1_000_000,
                probe: s.probe_addr.zip(s.probe_mac).and_then(|(addr, mac)| {
                    // Of the service's family (the config checks it).
                    let cfg = ProbeConfig {
                        addr: addr_of(addr),
                        mac: mac.0,
                        timeout_ns: s.probe_timeout_ms * 1_000_000,
                        delay_ns: s.probe_delay_ms * 1_000_000,
                        interval_ns: s.probe_interval_ms * 1_000_000,
                    };
                    let sports = PROBE_SPORTS.take(PROBE_SPORTS_EACH).collect();
                    Prober::new(cfg, (addr_of(s.addr), s.port), sports, probe_key())
                }),
                judged: None,
                waiting: false,
                remote_commit: s.output_commit == crate::config::OutputCommit::Remote,
            })
            .collect();
        let room = services.iter().map(|s| s.connections).sum();
        let hold = if services.iter().any(|s| s.remote_commit) { HELD_FRAMES } else { 0 };
        Protection {
            any_v6: services.iter().any(|s| !s.v4),
            v6_probes: services.iter().any(|s| !s.v4 && s.probe.is_some()),
            seen: Default::default(),
            services,
            conns: HashMap::with_capacity_and_hasher(room, RandomState::default()),
            peer,
            ns_per_tick: (1_000_000_000u128 << 32) / u128::from(tsc_hz.max(1)),
            last_poll: 0,
            // Without services, no room: nothing is ever sent.
            outbox: Outbox::new(if room == 0 { 0 } else { OUT_FRAMES }),
            ends_owed: Vec::new(),
            scratch: Box::new([0; OUT_FRAME]),
            held: HeldOutput::new(hold),
        }
    }

    /// Shares `seen` with the other workers of the process.
    pub fn share_seen_vlans(&mut self, seen: std::sync::Arc<super::SeenVlans>) {
        self.seen = seen;
    }

    /// Gives service `service`'s logs `memory` from now on (before any
    /// connection opens: the dataplane's reserved address space).
    pub fn set_log_memory(&mut self, service: usize, memory: crate::protect::LogMemory) {
        if let Some(s) = self.services.get_mut(service) {
            s.policy.log_memory = memory;
        }
    }

    /// Gives each service's probes source ports whose answers the ports'
    /// RSS brings back to worker `worker`. Returns the services this
    /// worker cannot probe (no port's answers would reach it: RSS that
    /// hashes addresses only); its connections rely on the hook.
    pub fn place_probes(
        &mut self,
        worker: u16,
        placement: &crate::placement::Placement,
    ) -> Vec<(std::net::IpAddr, u16)> {
        let mut unprobed = Vec::new();
        for s in &mut self.services {
            let Some(p) = s.probe.as_ref() else { continue };
            let family = if s.v4 { crate::parse::Family::V4 } else { crate::parse::Family::V6 };
            let (probe, server) = (p.addr(), s.addr);
            let sports = PROBE_SPORTS
                .filter(|&sport| {
                    let (key, _) = crate::conn::ConnKey::canonical(
                        family,
                        6,
                        crate::conn::Endpoint { addr: probe, port: sport },
                        crate::conn::Endpoint { addr: server, port: s.port },
                        0,
                        0,
                    );
                    placement.worker_of(&key) == worker
                })
                .take(PROBE_SPORTS_EACH)
                .collect();
            let cfg = p.config();
            s.probe = Prober::new(cfg, (s.addr, s.port), sports, probe_key());
            if s.probe.is_none() {
                unprobed.push((ip_of(&s.addr), s.port));
            }
        }
        unprobed
    }

    /// True when no service is protected: the packet path's one branch.
    #[inline(always)]
    pub fn is_off(&self) -> bool {
        self.services.is_empty()
    }

    fn ns(&self, now: u64) -> u64 {
        ((u128::from(now) * self.ns_per_tick) >> 32) as u64
    }

    /// The service a frame's raw addresses name, whether it is the client's
    /// (to the service) or the server's, and where its headers are.
    #[inline]
    fn service_of(&self, f: &[u8]) -> Option<(usize, bool, At)> {
        let (tags, et) = VlanTags::of_frame(f)?;
        let ip = et + 2;
        let at = match f.get(et..ip)? {
            [0x08, 0x00] => {
                if *f.get(ip + 9)? != 6 {
                    return None;
                }
                At { ip, l4: ip + usize::from(f[ip] & 0x0f) * 4, tags, v4: true }
            }
            [0x86, 0xdd] if self.any_v6 => {
                let l4 = match *f.get(ip + 6)? {
                    6 => ip + 40,
                    // Extension headers (hop-by-hop, routing, fragment,
                    // destination options, AH): where TCP starts, the
                    // parser says. Any other next header is not TCP.
                    0 | 43 | 44 | 51 | 60 => {
                        let mut p = IpPacket::default();
                        parse_into(f, &mut p).ok()?;
                        let L4::Tcp(_) = p.l4 else { return None };
                        usize::from(p.l4_off)
                    }
                    _ => return None,
                };
                // An IPv4 address inside IPv6's: neither family's service.
                let mapped = |at: usize| f.get(at..at + 16).is_some_and(is_v4_mapped);
                if mapped(ip + 8) || mapped(ip + 24) {
                    return None;
                }
                At { ip, l4, tags, v4: false }
            }
            _ => return None,
        };
        let (sport, dport) = (
            u16::from_be_bytes([*f.get(at.l4)?, *f.get(at.l4 + 1)?]),
            u16::from_be_bytes([*f.get(at.l4 + 2)?, *f.get(at.l4 + 3)?]),
        );
        let (src, dst) = if at.v4 {
            (f.get(ip + 12..ip + 16)?, f.get(ip + 16..ip + 20)?)
        } else {
            (f.get(ip + 8..ip + 24)?, f.get(ip + 24..ip + 40)?)
        };
        let tail = if at.v4 { 12 } else { 0 };
        self.services.iter().enumerate().find_map(|(i, s)| {
            if s.v4 != at.v4 {
                None
            } else if dst == &s.addr[tail..] && dport == s.port {
                Some((i, true, at))
            } else if src == &s.addr[tail..] && sport == s.port {
                Some((i, false, at))
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
    pub fn before_tracking<S: CheckpointSink>(
        &mut self,
        frame: &[u8],
        port: usize,
        now: u64,
        c: &FwCounters,
        sink: &mut S,
    ) -> Option<bool> {
        // ARP, or IPv6 with probes from IPv6 addresses, behind any tags:
        // maybe a question for a probe address.
        if matches!(
            frame.get(12..14),
            Some([0x08, 0x06] | [0x86, 0xdd] | [0x81, 0x00] | [0x88, 0xa8])
        ) {
            let taken =
                VlanTags::of_frame(frame).and_then(|(tags, et)| match frame.get(et..et + 2) {
                    Some([0x08, 0x06]) => self.answer_arp(frame, tags, et, port, c),
                    Some([0x86, 0xdd]) if self.v6_probes => {
                        self.answer_solicitation(frame, tags, et, port, c)
                    }
                    _ => None,
                });
            if taken.is_some() {
                return taken;
            }
        }
        self.take(frame, port, now, c, sink, true)
    }

    /// A neighbour solicitation for an IPv6 probe address is answered with
    /// an advertisement (RFC 4861 §7.2.4), as ARP is for an IPv4 one: out
    /// of the port it came in by, in the VLANs the service's connections
    /// came in. Every other frame goes on as before, and so does a
    /// solicitation of duplicate address detection (its source unspecified).
    /// `tags` and `et` (where its ethertype sits) as `VlanTags::of_frame`
    /// read them.
    fn answer_solicitation(
        &mut self,
        f: &[u8],
        tags: VlanTags,
        et: usize,
        port: usize,
        c: &FwCounters,
    ) -> Option<bool> {
        let ip = et + 2;
        // ICMPv6 right after the IPv6 header, from a link neighbour (hop
        // limit 255), a solicitation.
        if f.get(ip + 6..ip + 8)? != [58, 255] {
            return None;
        }
        let icmp = ip + 40;
        if f.get(icmp..icmp + 2)? != [135, 0] {
            return None;
        }
        // RFC 4861 §7.1.1: the message at least 24 bytes, no option of
        // length 0, a unicast target.
        let len = usize::from(u16::from_be_bytes(f.get(ip + 4..ip + 6)?.try_into().ok()?));
        let msg = f.get(icmp..icmp + len).filter(|_| len >= 24)?;
        let mut opt = 24;
        while opt < len {
            let olen = usize::from(*msg.get(opt + 1)?) * 8;
            if olen == 0 {
                return None;
            }
            opt += olen;
        }
        let target: Addr = msg[8..24].try_into().ok()?;
        let asker: Addr = f.get(ip + 8..ip + 24)?.try_into().ok()?;
        if target[0] == 0xff || asker == [0; 16] || is_v4_mapped(&target) {
            return None;
        }
        let mac = self.services.iter().enumerate().find_map(|(i, s)| {
            s.probe
                .as_ref()
                .filter(|p| !s.v4 && p.addr() == target && self.seen.answers_in(i, tags))
                .map(|p| p.mac())
        })?;
        let mut p = IpPacket::default();
        if parse_into(f, &mut p).is_err()
            || crate::parse::checksum::verify(f, &p, RxChecksums::UNKNOWN).is_err()
        {
            return None;
        }
        const ADVERT: usize = 32;
        let len = ip + 40 + ADVERT;
        let sent = self.outbox.push(port, |out| {
            let out = out.get_mut(..len)?;
            out.fill(0);
            out[0..6].copy_from_slice(&f[6..12]);
            out[6..12].copy_from_slice(&mac);
            out[12..ip].copy_from_slice(&f[12..ip]);
            let h = &mut out[ip..ip + 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(ADVERT as u16).to_be_bytes());
            h[6..8].copy_from_slice(&[58, 255]);
            h[8..24].copy_from_slice(&target);
            h[24..40].copy_from_slice(&asker);
            let a = &mut out[icmp..len];
            // Solicited and override; the target's link-layer address.
            a[0] = 136;
            a[4] = 0x60;
            a[8..24].copy_from_slice(&target);
            a[24..26].copy_from_slice(&[2, 1]);
            a[26..32].copy_from_slice(&mac);
            let mut pseudo = [0u8; 40];
            pseudo[..16].copy_from_slice(&target);
            pseudo[16..32].copy_from_slice(&asker);
            pseudo[32..36].copy_from_slice(&(ADVERT as u32).to_be_bytes());
            pseudo[39] = 58;
            let sum = crate::parse::checksum::checksum_bytes(&[&pseudo, a]);
            a[2..4].copy_from_slice(&sum);
            Some(len)
        });
        if sent {
            c.protect.arp_answered.add(1);
        } else {
            c.protect.send_full.add(1);
        }
        Some(false)
    }

    /// An ARP request for a probe address is answered, out of the port it
    /// came in by (the service's host must reach the address to answer a
    /// probe); every other ARP frame goes on as before.
    /// `tags` and `et` as `answer_solicitation` takes them.
    fn answer_arp(
        &mut self,
        f: &[u8],
        tags: VlanTags,
        et: usize,
        port: usize,
        c: &FwCounters,
    ) -> Option<bool> {
        // IPv4 over Ethernet, a request; answered in the VLAN it came from.
        let a = et + 2;
        if f.get(a..a + 8)? != [0, 1, 8, 0, 6, 4, 0, 1] {
            return None;
        }
        let target = f.get(a + 24..a + 28)?;
        let mac = self.services.iter().enumerate().find_map(|(i, s)| {
            s.probe
                .as_ref()
                .filter(|p| s.v4 && p.addr()[12..] == *target && self.seen.answers_in(i, tags))
                .map(|p| p.mac())
        })?;
        let sent = self.outbox.push(port, |out| {
            let out = out.get_mut(..60 + tags.len())?;
            out.fill(0);
            out[0..6].copy_from_slice(&f[a + 8..a + 14]);
            out[6..12].copy_from_slice(&mac);
            out[12..a].copy_from_slice(&f[12..a]);
            out[a..a + 8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
            out[a + 8..a + 14].copy_from_slice(&mac);
            out[a + 14..a + 18].copy_from_slice(target);
            out[a + 18..a + 28].copy_from_slice(&f[a + 8..a + 18]);
            Some(60 + tags.len())
        });
        if sent {
            c.protect.arp_answered.add(1);
        } else {
            c.protect.send_full.add(1);
        }
        Some(false)
    }

    /// A frame the tracker let pass, received on config port `port`: true
    /// to forward it as it is; false when protection took it (absorbed,
    /// dropped and counted, or sent rewritten through the outbox).
    pub fn pass<S: CheckpointSink>(
        &mut self,
        frame: &[u8],
        port: usize,
        now: u64,
        c: &FwCounters,
        sink: &mut S,
    ) -> bool {
        self.take(frame, port, now, c, sink, false).unwrap_or(true)
    }

    fn take<S: CheckpointSink>(
        &mut self,
        frame: &[u8],
        port: usize,
        now: u64,
        c: &FwCounters,
        sink: &mut S,
        before: bool,
    ) -> Option<bool> {
        let (svc, from_client, at) = self.service_of(frame)?;
        if before && self.up_as_tracked(frame, svc, from_client, port, at) {
            return None;
        }
        // Parsed in place: a `Parsed` returned by value is copied out whole.
        let mut p = IpPacket::default();
        let Ok(FrameKind::Ip) = parse_into(frame, &mut p) else { return None };
        let L4::Tcp(t) = p.l4 else { return None };
        let syn = t.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
        // After VLAN tags and IP options, if any.
        let l4 = usize::from(p.l4_off);
        if before && !from_client {
            if let Some(probe) = self.services[svc].probe.as_mut() {
                if p.dst == probe.addr() {
                    // The service answers a probe: never the tracker's. (A
                    // bad checksum was counted when the burst was staged.)
                    if crate::parse::checksum::verify(frame, &p, RxChecksums::UNKNOWN).is_err() {
                        return Some(false);
                    }
                    if let Some(j) = probe.on_answer(&t) {
                        self.services[svc].judged = Some(j);
                    } else if t.flags & (tcp_flags::SYN | tcp_flags::ACK)
                        == tcp_flags::SYN | tcp_flags::ACK
                    {
                        let mut via = Via { port, server_mac: [0; 6], tags: at.tags };
                        via.server_mac.copy_from_slice(&frame[6..12]);
                        if let ProbeEvent::Send { port, ends, seg } = probe.stray_reset(&t, via) {
                            if self.outbox.push(port, |b| write_segment(b, &ends, &seg, &[])) {
                                c.protect.probes.add(1);
                            }
                        }
                    }
                    return Some(false);
                }
            }
        }
        let client = if from_client { (p.src, t.sport) } else { (p.dst, t.dport) };
        let client_side = if from_client { port } else { *self.peer.get(port)? };
        let key = (client.0, client.1, svc, client_side, p.vlan);
        if p.frag != Fragment::None {
            // Its bytes are not all here to log or rewrite: protection ends
            // where it can, else the fragment goes no further.
            let Some(e) = self.conns.get_mut(&key) else {
                if !before && from_client && syn {
                    c.protect.unprotectable.add(1);
                }
                return None;
            };
            if e.p.cannot_follow(from_client, t.seq) {
                e.end_now(sink, now);
                return None;
            }
            c.protect.unspliceable.add(1);
            return Some(false);
        }
        if before {
            if from_client && syn {
                // A new connection always meets the tracker and the policy.
                return None;
            }
            let e = self.conns.get(&key)?;
            if !e.p.is_down() && e.p.splice().is_none() {
                return None;
            }
            // Not seen by the tracker, so checked here (and counted when
            // the burst was staged).
            if crate::parse::checksum::verify(frame, &p, RxChecksums::UNKNOWN).is_err() {
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
        if from_client {
            let quiet = e.p.truncatable_before(&t, ns);
            e.truncate(quiet, sink, (now, ns), c);
        }
        // Output commit: the bytes are in the ring before the segment
        // leaves, or it does not leave.
        let logging = S::ENABLED && from_client && !payload.is_empty() && e.p.is_logging();
        // The client's first FIN (a half-close) goes into its record in the
        // ring before it leaves or is answered for, as its bytes do.
        let first_fin = S::ENABLED
            && from_client
            && t.flags & tcp_flags::FIN != 0
            && e.p.is_logging()
            && !e.p.fins().0;
        let room = e.slots_owed(payload.len()) + u32::from(first_fin);
        if (logging || first_fin) && !sink.has_room(room) {
            // Behind (a new checkpointd is told the log again): a piece more
            // now; the client sends the segment again.
            let room = sink.free_slots();
            e.write_log(sink, room);
            c.protect.log_ring_full.add(1);
            return Some(false);
        }
        // A segment protection may rewrite (spliced, or a server FIN or RST
        // it may strip) is worked on as a copy, sent from the outbox, the
        // received one dropped. (A frame too large for it is counted and
        // dropped: TCP sends it again smaller or not at all.) Any other is
        // never touched.
        let rewrite = e.p.splice().is_some()
            || (!from_client && t.flags & (tcp_flags::FIN | tcp_flags::RST) != 0);
        let copy: &mut [u8] = if rewrite {
            let Some(copy) = self.scratch.get_mut(..frame.len()) else {
                c.protect.unspliceable.add(1);
                return Some(false);
            };
            copy.copy_from_slice(frame);
            copy
        } else {
            &mut []
        };
        let tcp = copy.get_mut(l4..).unwrap_or_default();
        let action = if from_client {
            e.p.from_client(&t, payload, tcp, ns)
        } else {
            if t.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN | tcp_flags::ACK {
                // The service answers in this VLAN: its probe address may be
                // asked for here.
                self.seen.saw(svc, e.ends.tags);
            }
            e.p.from_server(&t, payload, tcp, ns)
        };
        if logging && !e.write_log(sink, u32::MAX) {
            // Room was made sure of above: unreachable, and still never
            // forwarded unlogged.
            c.protect.log_ring_full.add(1);
            return Some(false);
        }
        if first_fin && e.p.fins().0 {
            let rec = e.record(ns);
            if sink.protect(e.id, ProtectRecord::Snapshot { version: now, bytes: &rec }).is_ok() {
                e.written = Some(rec);
                e.commit.mark(e.stream_end(), sink.position(), sink.drainer());
            }
        }
        if t.flags & tcp_flags::FIN != 0
            && e.p.ended().is_some()
            && matches!(action, Action::Forward | Action::ForwardFrom(_))
        {
            e.closes |= if from_client { CLIENT_FIN } else { SERVER_FIN };
        }
        let quiet = e.p.truncatable(ns);
        e.truncate(quiet, sink, (now, ns), c);
        e.end_now(sink, now);
        let out_port = if from_client { self.peer[port] } else { e.client_port };
        // Output commit at the remote level: a server segment waits until
        // the client bytes it acknowledges are in the remote store (and
        // behind its connection's segments already waiting).
        let hold = (!from_client
            && self.services[svc].remote_commit
            && e.p.is_logging()
            && t.flags & tcp_flags::ACK != 0)
            .then(|| e.ack_offset(t.ack))
            .filter(|&needs| e.commit.held > 0 || needs > e.commit.settle(sink.remote_committed()))
            .map(|needs| ((key, e.id), needs));
        let to = Out { outbox: &mut self.outbox, held: &mut self.held, hold };
        let out = match action {
            Action::Forward if hold.is_none() && (!rewrite || copy == frame) => return Some(true),
            Action::Forward => to.emit(out_port, copied(if rewrite { copy } else { frame })),
            Action::ForwardFrom(at) => {
                let Some(splice) = e.p.splice() else { return Some(false) };
                let mut seg = Segment::tail_of(&t, at);
                if e.p.holds_close() {
                    seg.flags &= !tcp_flags::FIN;
                }
                let ends = e.ends.reversed();
                let part = payload.get(at..).unwrap_or(&[]);
                to.emit(out_port, |buf| {
                    let n = write_segment(buf, &ends, &seg, part)?;
                    splice.to_client(&mut buf[ends.tcp_offset()..n]).ok()?;
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
        match out {
            Emitted::Sent => count_sent(c, true),
            Emitted::NoRoom => count_sent(c, false),
            Emitted::Held => {
                e.commit.held += 1;
                c.protect.commit_held.add(1);
            }
            Emitted::HoldFull => c.protect.commit_full.add(1),
        }
        Some(false)
    }

    /// Whether a frame of service `svc` is one the tracker sees first, told
    /// from its raw bytes before any parse (most frames of a protected
    /// service: a connection that is up and not spliced, a new SYN, none
    /// of protection's). False sends it on to the
    /// full parse: a probe's answer, a connection down, in recovery or
    /// spliced.
    #[inline]
    fn up_as_tracked(&self, f: &[u8], svc: usize, from_client: bool, port: usize, at: At) -> bool {
        // service_of checked the length up to the ports.
        let l4 = at.l4;
        let port16 = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
        let (src, dst) = at.addrs(f);
        let ip = if from_client {
            if f.get(l4 + 13)
                .is_some_and(|&fl| fl & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN)
            {
                return true;
            }
            src
        } else {
            if self.services[svc].probe.as_ref().is_some_and(|p| p.addr() == dst) {
                return false;
            }
            dst
        };
        let (client_port, client_side) = if from_client {
            (port16(l4), port)
        } else {
            let Some(&side) = self.peer.get(port) else { return true };
            (port16(l4 + 2), side)
        };
        self.conns
            .get(&(ip, client_port, svc, client_side, at.tags.id()))
            .is_none_or(|e| !e.p.is_down() && e.p.splice().is_none())
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
            Some(e) if e.p.syn_isn() == t.seq => return,
            // The client's address and port, reused for a new connection:
            // the old one is over.
            Some(_) => {
                if let Some(old) = self.conns.remove(&key) {
                    if old.known() {
                        self.ends_owed.push(old.id);
                    }
                }
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
            // service_of read them already.
            tags: VlanTags::of_frame(frame).map(|(t, _)| t).unwrap_or_default(),
        };
        ends.src_mac.copy_from_slice(&frame[6..12]);
        ends.dst_mac.copy_from_slice(&frame[..6]);
        let p = Protected::new(s.policy, t);
        let id = entry_id(&key, t.seq);
        self.conns.insert(
            key,
            Entry {
                p,
                ends,
                client_port: port,
                last_seen: ns,
                end_counted: false,
                closes: 0,
                recoveries: 0,
                id,
                written: None,
                sent_log: 0,
                end_written: false,
                commit: Committed::default(),
            },
        );
    }

    /// Rebuilds a protected connection from what checkpointd held of it
    /// (`record`, `log`) at a restart, before the ports start.
    pub fn restore(
        &mut self,
        id: u64,
        record: &[u8],
        log: Vec<u8>,
        held_from: u64,
        now: u64,
    ) -> Result<(), ProtectRestoreError> {
        let (snapshot, ends, client_port) = read_record(record)?;
        let svc = self
            .services
            .iter()
            .position(|s| s.addr == ends.dst_ip && s.port == ends.dport)
            .ok_or(ProtectRestoreError::NoService(ip_of(&ends.dst_ip), ends.dport))?;
        if client_port >= self.peer.len() {
            return Err(ProtectRestoreError::NoPort(client_port));
        }
        let s = &self.services[svc];
        if s.open >= s.connections {
            return Err(ProtectRestoreError::Full);
        }
        let ns = self.ns(now);
        let p = Protected::restore(s.policy, snapshot, log, held_from, ns)?;
        self.seen.saw(svc, ends.tags);
        let sent_log = p.client_log().end_offset();
        let key = (ends.src_ip, ends.sport, svc, client_port, ends.tags.id());
        let e = Entry {
            id,
            p,
            ends,
            client_port,
            last_seen: ns,
            end_counted: false,
            closes: 0,
            recoveries: 0,
            written: None,
            sent_log,
            end_written: false,
            commit: Committed { mark_due: true, ..Committed::default() },
        };
        let mut e = e;
        e.recoveries = e.p.recoveries();
        e.written = Some(e.record(ns));
        if let Some(old) = self.conns.insert(key, e) {
            // Two records of one client port: the newer SYN's wins.
            if old.known() {
                self.ends_owed.push(old.id);
            }
        } else {
            self.services[svc].open += 1;
        }
        Ok(())
    }

    /// Ends connection `id` in checkpointd at the next walk.
    pub fn forget(&mut self, id: u64) {
        self.ends_owed.push(id);
    }

    /// Timers, the hook's words, and the segments owed: called from
    /// housekeeping, with the service counters the hook writes.
    pub fn poll<S: CheckpointSink>(&mut self, now: u64, c: &FwCounters, sink: &mut S) {
        if self.is_off() {
            return;
        }
        if S::ENABLED && sink.take_protect_resync() {
            // A new checkpointd holds nothing of them: everything again;
            // what went to the old one is committed only by the rewrite.
            c.protect.rewritten.add(1);
            for e in self.conns.values_mut() {
                e.written = None;
                e.sent_log = 0;
                e.commit.len = 0;
            }
        }
        if !self.held.is_empty() {
            self.release_held(sink.remote_committed(), c);
        }
        let ns = self.ns(now);
        // Every round would walk every protected connection: a millisecond
        // between walks is soon enough for any timer here.
        if ns.saturating_sub(self.last_poll) < POLL_NS {
            return;
        }
        self.last_poll = ns;
        let req = &c.requests;
        for i in 0..self.services.len() {
            use std::sync::atomic::Ordering;
            let v = req.protect_word[i].load(Ordering::Acquire);
            let (words, last_up) = (v >> 1, v & 1 == 1);
            let new = words.wrapping_sub(req.protect_seen[i].load(Ordering::Relaxed));
            req.protect_seen[i].store(words, Ordering::Relaxed);
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
        for i in 0..self.services.len() {
            if let Some(j) = self.services[i].judged.take() {
                judge(&mut self.conns, i, j, ns, c);
            }
        }
        self.probe(ns, c);
        let Protection { conns, outbox, peer, services, ends_owed, held: hold, .. } = self;
        let (mut held, mut memory) = (0u64, 0u64);
        conns.retain(|key, e| {
            if services[key.2].remote_commit {
                if std::mem::take(&mut e.commit.mark_due) {
                    // Restored: what checkpointd held of its log reaches
                    // the remote store before anything past this point.
                    e.commit.mark(e.stream_end(), sink.position(), sink.drainer());
                }
                e.commit.settle(sink.remote_committed());
            }
            let keep = Self::walk(key, e, ns, c, (outbox, hold), peer, services);
            if let Some(probe) = services[key.2].probe.as_mut().filter(|_| keep) {
                let via = Via {
                    port: peer[e.client_port],
                    server_mac: e.ends.dst_mac,
                    tags: e.ends.tags,
                };
                if let Some(since) = e.p.evidence_since() {
                    probe.want(since, via);
                }
                if e.p.waiting_since().is_some() {
                    probe.route(via);
                    services[key.2].waiting = true;
                }
            }
            // A quiet point reached by the server's silence alone.
            if keep {
                let quiet = e.p.truncatable(ns);
                e.truncate(quiet, sink, (now, ns), c);
            }
            let log = e.p.client_log();
            held += log.bytes().len() as u64;
            memory += log.capacity() as u64;
            if S::ENABLED {
                if keep {
                    // Half the room at most: the packets need the rest.
                    let room = sink.free_slots() / 2;
                    if e.write_log(sink, room) && e.p.worth_snapshot() {
                        let rec = e.record(ns);
                        let version = now;
                        if e.written.is_none_or(|w| changed(&w, &rec))
                            && sink
                                .protect(e.id, ProtectRecord::Snapshot { version, bytes: &rec })
                                .is_ok()
                        {
                            e.written = Some(rec);
                            // Its record says whether the client sent its
                            // FIN: once Redis holds it, so does the commit.
                            e.commit.mark(e.stream_end(), sink.position(), sink.drainer());
                        }
                    }
                } else if e.known() {
                    ends_owed.push(e.id);
                }
            }
            keep
        });
        c.protect.log_bytes.set(held);
        c.protect.log_memory.set(memory);

        while let Some(&id) = ends_owed.last() {
            if sink.protect(id, ProtectRecord::End { version: now }).is_err() {
                break;
            }
            ends_owed.pop();
        }
    }

    /// Sends the held server segments whose client bytes the remote store
    /// now holds (`committed`: the ring position below which it does).
    fn release_held(&mut self, (committed, drainer): (u64, u64), c: &FwCounters) {
        let Protection { held, conns, outbox, .. } = self;
        let (sent, dropped) = held.release(
            |key, ask| {
                let e = conns.get_mut(&key.0).filter(|e| e.id == key.1)?;
                match ask {
                    Ask::Committed => Some(e.commit.settle((committed, drainer))),
                    Ask::Left => {
                        e.commit.held = e.commit.held.saturating_sub(1);
                        None
                    }
                }
            },
            |port, frame| outbox.push(port, copied(frame)),
        );
        c.protect.sent.add(sent);
        c.protect.commit_full.add(dropped);
        c.protect.commit_waiting.set(held.len() as u64);
    }

    /// Each service's probes, before the walk (whose replays may fill the
    /// outbox), for the evidence the last walk found: what `poll` gives is
    /// sent, or given back when there is no room.
    fn probe(&mut self, ns: u64, c: &FwCounters) {
        for i in 0..self.services.len() {
            let s = &mut self.services[i];
            let waiting = std::mem::take(&mut s.waiting);
            let Some(probe) = s.probe.as_mut() else { continue };
            while let Some(ev) = probe.poll(ns, waiting) {
                match &ev {
                    ProbeEvent::Send { port, ends, seg } => {
                        if self.outbox.push(*port, |buf| write_segment(buf, ends, seg, &[])) {
                            c.protect.probes.add(1);
                        } else {
                            c.protect.send_full.add(1);
                            probe.unsent(&ev);
                            break;
                        }
                    }
                    ProbeEvent::Judged(j) => judge(&mut self.conns, i, *j, ns, c),
                }
            }
        }
    }

    /// One connection's timers and owed segments; false when its entry goes.
    fn walk(
        key: &Key,
        e: &mut Entry,
        ns: u64,
        c: &FwCounters,
        (outbox, hold): (&mut Outbox, &mut HeldOutput<(Key, u64)>),
        peer: &[usize],
        services: &mut [Service],
    ) -> bool {
        while let Some((to, mut seg)) = e.p.poll(ns) {
            let sent = match to {
                Toward::Client => {
                    if services[key.2].remote_commit && seg.flags & tcp_flags::RST == 0 {
                        // Answering for the server, the firewall too
                        // acknowledges only what the remote store holds.
                        let committed = e.committed_seq();
                        if (seg.ack.wrapping_sub(committed) as i32) > 0 {
                            seg.ack = committed;
                        }
                    }
                    let ends = e.ends.reversed();
                    let write = |buf: &mut [u8]| write_segment(buf, &ends, &seg, &[]);
                    if e.commit.held > 0 {
                        // Behind its server segments still held (a close
                        // released must not overtake the data before it).
                        let held = hold.push((*key, e.id), e.client_port, 0, write);
                        if held {
                            e.commit.held += 1;
                        } else {
                            c.protect.commit_full.add(1);
                        }
                        continue;
                    }
                    outbox.push(e.client_port, write)
                }
                Toward::Server => {
                    let port = peer[e.client_port];
                    let bytes = e.p.log().get(seg.payload.clone()).unwrap_or(&[]);
                    outbox.push(port, |buf| write_segment(buf, &e.ends, &seg, bytes))
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
            e.closes = 0;
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
            // Counted already; kept for its splice until idle, or until its
            // close is over.
            let closed = e.closes == CLIENT_FIN | SERVER_FIN
                && ns.saturating_sub(e.last_seen) > services[key.2].close_linger_ns;
            // Kept without a splice only until its held segments are out.
            let done = e.p.splice().is_none() && e.commit.held == 0;
            if idle || closed || done {
                services[key.2].open -= 1;
            }
            return !(idle || closed || done);
        }
        e.end_counted = true;
        // FINs that passed while it was protected (a half-close, a close
        // released) count toward its close as those after.
        let (client_fin, server_fin) = e.p.fins();
        if client_fin {
            e.closes |= CLIENT_FIN;
        }
        if server_fin {
            e.closes |= SERVER_FIN;
        }
        let counter = match why {
            Ended::Closed => None,
            Ended::LogBound => Some(&c.protect.log_bound),
            Ended::Unfollowable => Some(&c.protect.unprotectable),
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
        // keeps its entry, whose splice every segment still needs, and one
        // with segments held until they are out.
        if e.p.splice().is_some() || e.commit.held > 0 {
            return true;
        }
        services[key.2].open -= 1;
        false
    }
}

/// Writes `bytes` as a frame, for the outbox or the hold.
fn copied(bytes: &[u8]) -> impl FnOnce(&mut [u8]) -> Option<usize> + '_ {
    move |out| {
        out.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(bytes.len())
    }
}

/// Where a segment the firewall forwards goes: the outbox, or the hold
/// until the remote store has what it acknowledges.
struct Out<'a> {
    outbox: &'a mut Outbox,
    held: &'a mut HeldOutput<(Key, u64)>,
    hold: Option<((Key, u64), u64)>,
}

enum Emitted {
    Sent,
    NoRoom,
    Held,
    /// The hold is full: dropped (the server sends it again).
    HoldFull,
}

impl Out<'_> {
    fn emit(self, port: usize, write: impl FnOnce(&mut [u8]) -> Option<usize>) -> Emitted {
        match self.hold {
            Some((key, needs)) => {
                if self.held.push(key, port, needs, write) {
                    Emitted::Held
                } else {
                    Emitted::HoldFull
                }
            }
            None if self.outbox.push(port, write) => Emitted::Sent,
            None => Emitted::NoRoom,
        }
    }
}

/// Applies a probe's verdict to service `svc`'s connections whose evidence
/// came before the probe: a held FIN or RST was the crash's (down) or a
/// close (released); connections waiting for the service replay onto it.
fn judge(
    conns: &mut HashMap<Key, Entry, RandomState>,
    svc: usize,
    j: Judged,
    ns: u64,
    c: &FwCounters,
) {
    let p = &c.protect;
    match j.verdict {
        Verdict::Listening => &p.probe_listening,
        Verdict::Refused => &p.probe_refused,
        Verdict::Silent => &p.probe_silent,
    }
    .add(1);
    for (_, e) in conns.iter_mut().filter(|(k, _)| k.2 == svc) {
        let judged = e.p.evidence_since().is_some_and(|t| t <= j.evidence_until);
        if j.verdict.is_down() {
            if judged {
                e.p.service_down(ns);
                p.wire_down.add(1);
            }
        } else {
            if judged {
                e.p.judged_alive(ns);
            }
            if e.p.waiting_since().is_some_and(|t| t <= j.sent_at) {
                e.p.service_up(ns);
            }
        }
    }
}

/// A random key (the std hasher's random seed).
fn probe_key() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u8)
}

/// Whether a record says more than the one checkpointd holds. The time
/// since the server went down moves on by itself: it is written again
/// when it has moved by a tenth of a second, so a restart late in an
/// outage still keeps `down_max_ms`.
fn changed(held: &[u8; RECORD_BYTES], now: &[u8; RECORD_BYTES]) -> bool {
    let down_for = |r: &[u8; RECORD_BYTES]| u64::from_le_bytes(r[DOWN_FOR].try_into().unwrap());
    held[..DOWN_FOR.start] != now[..DOWN_FOR.start]
        || held[DOWN_FOR.end..] != now[DOWN_FOR.end..]
        || down_for(now).abs_diff(down_for(held)) >= DOWN_FOR_STEP_NS
}

/// How far the time since the server went down moves before its record is
/// written again.
const DOWN_FOR_STEP_NS: u64 = 100_000_000;

fn count_sent(c: &FwCounters, sent: bool) {
    if sent {
        c.protect.sent.add(1);
    } else {
        c.protect.send_full.add(1);
    }
}

#[cfg(test)]
mod tests {
    fn ip4(a: &[u8; 16]) -> [u8; 4] {
        [a[12], a[13], a[14], a[15]]
    }

    use crate::checkpoint::MemorySink;
    use crate::config::{ProtectedService, Truncation};
    use crate::firewall::testing::{fw, C, HZ, S};
    use crate::firewall::{FrameBurst, StagedBurst};
    use crate::frames::{tcp, tcp_flags::*};
    use std::sync::atomic::Ordering;

    const MS: u64 = HZ / 1000;

    type Fw = super::super::Firewall<MemorySink, allocator_api2::alloc::Global>;

    fn protected(sink: MemorySink) -> Fw {
        protected_with(sink, Truncation::None)
    }

    fn protected_with(sink: MemorySink, truncation: Truncation) -> Fw {
        let mut f = fw(sink);
        let svc = ProtectedService {
            addr: S.into(),
            port: 80,
            truncation,
            truncate_idle_ms: 0,
            ..Default::default()
        };
        f.protect(&[svc], vec![1, 0], HZ);
        f
    }

    /// Runs one frame through the burst path; true when forwarded as it is.
    fn burst(f: &mut Fw, frame: &[u8], port: usize, now: u64) -> bool {
        let frames = [frame];
        let mut b = FrameBurst::new(&frames);
        f.process_burst(&mut StagedBurst::new(), &mut b, port, now);
        b.forwarded == 1
    }

    fn open(f: &mut super::super::Firewall<MemorySink, allocator_api2::alloc::Global>) {
        assert!(burst(f, &tcp(C, S, (40000, 80), SYN, (1000, 0), b""), 0, MS));
        assert!(burst(f, &tcp(S, C, (80, 40000), SYN | ACK, (5000, 1001), b""), 1, MS));
        assert!(burst(f, &tcp(C, S, (40000, 80), ACK, (1001, 5001), b""), 0, MS));
    }

    #[test]
    fn client_bytes_are_in_the_ring_before_they_leave_or_they_do_not_leave() {
        let mut f = protected(MemorySink::default());
        open(&mut f);
        assert!(burst(
            &mut f,
            &tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"SET a 1\n"),
            0,
            2 * MS
        ));
        let (_, log, _) = f.sink().protected.values().next().expect("a log record");
        assert_eq!(log, b"SET a 1\n");
        // No room for the next bytes: dropped, counted, not logged.
        f.sink_mut().room = Some(0);
        assert!(!burst(
            &mut f,
            &tcp(C, S, (40000, 80), ACK | PSH, (1009, 5001), b"GET a\n"),
            0,
            3 * MS
        ));
        assert_eq!(f.counters.protect.log_ring_full.get(), 1);
        f.sink_mut().room = None;
        // Its retransmission passes and is logged once.
        assert!(burst(
            &mut f,
            &tcp(C, S, (40000, 80), ACK | PSH, (1009, 5001), b"GET a\n"),
            0,
            4 * MS
        ));
        let (snap, log, _) = f.sink().protected.values().next().unwrap();
        assert_eq!(log, b"SET a 1\nGET a\n");
        assert!(snap.is_empty(), "the snapshot waits for the walk");
        f.housekeeping(6 * MS);
        let (snap, _, _) = f.sink().protected.values().next().unwrap();
        assert_eq!(snap.len(), super::RECORD_BYTES);
    }

    #[test]
    fn a_restarted_firewall_carries_on_from_checkpointd() {
        let mut f = protected(MemorySink::default());
        open(&mut f);
        assert!(burst(
            &mut f,
            &tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"INCR n\n"),
            0,
            2 * MS
        ));
        // The hook: the service went down.
        f.counters.requests.protect_word[0].store(1 << 1, Ordering::Release);
        f.housekeeping(4 * MS);
        let held = f.sink().protected.clone();
        assert_eq!(held.len(), 1);

        // checkpointd outlived the firewall: it still holds the connection.
        let mut g = protected(MemorySink { protected: held.clone(), ..Default::default() });
        for (id, (snap, log, base)) in &held {
            g.restore_protected(*id, snap, log.clone(), *base, false, 5 * MS).unwrap();
        }
        assert_eq!(g.counters.protect.restored.get(), 1);
        // Still down: a client segment is absorbed and answered for the
        // server, acknowledging the log restored and the new bytes.
        assert!(!burst(
            &mut g,
            &tcp(C, S, (40000, 80), ACK | PSH, (1008, 5001), b"GET n\n"),
            0,
            6 * MS
        ));
        g.housekeeping(8 * MS);
        let mut answers = Vec::new();
        g.outbox().drain(|port, frame| answers.push((port, frame.to_vec())));
        let acks: Vec<u32> = answers
            .iter()
            .filter(|(port, _)| *port == 0)
            .map(|(_, fr)| u32::from_be_bytes(fr[42..46].try_into().unwrap()))
            .collect();
        assert!(acks.contains(&1014), "{acks:?}");
        assert_eq!(
            g.sink().protected.values().next().unwrap().1,
            b"INCR n\nGET n\n",
            "the new bytes go on from the restored log's end"
        );

        // A record another build wrote is refused, counted, and the rest go on.
        let mut h = protected(MemorySink::default());
        let (id, (snap, log, _)) = held.iter().next().unwrap();
        assert!(h.restore_protected(*id, &snap[..50], log.clone(), 0, false, 5 * MS).is_err());
        assert_eq!(h.counters.protect.restore_refused.get(), 1);
        // And one whose log checkpointd lost a record of.
        assert_eq!(
            h.restore_protected(*id, snap, log.clone(), 0, true, 5 * MS),
            Err(super::ProtectRestoreError::LogLost)
        );
        assert_eq!(h.counters.protect.restore_refused.get(), 2);
    }

    #[test]
    fn a_request_response_log_is_truncated_here_and_in_checkpointd() {
        let mut f = protected_with(MemorySink::default(), Truncation::RequestResponse);
        open(&mut f);
        let mut t = 2 * MS;
        let (mut cs, mut ss) = (1001u32, 5001u32);
        // The first two answers acknowledged alone, the third with the
        // next request (a delayed ACK).
        for (i, req) in [&b"GET /a\n"[..], b"GET /bb\n", b"GET /ccc\n", b"x"].iter().enumerate() {
            assert!(burst(&mut f, &tcp(C, S, (40000, 80), ACK | PSH, (cs, ss), req), 0, t));
            cs += req.len() as u32;
            assert!(burst(&mut f, &tcp(S, C, (80, 40000), ACK | PSH, (ss, cs), b"ok\n"), 1, t));
            ss += 3;
            if i < 2 {
                assert!(burst(&mut f, &tcp(C, S, (40000, 80), ACK, (cs, ss), b""), 0, t));
            }
            t += MS;
        }
        assert!(burst(&mut f, &tcp(C, S, (40000, 80), ACK, (cs, ss), b""), 0, t));
        assert_eq!(f.counters.protect.truncated.get(), 4);
        let (id, (snap, log, base)) =
            f.sink().protected.iter().next().map(|(i, e)| (*i, e.clone())).unwrap();
        assert_eq!((log.len(), base), (0, 25), "checkpointd's copy truncated too");
        f.housekeeping(t + MS);
        assert_eq!(f.counters.protect.log_bytes.get(), 0);
        // A restart from that copy goes on from the truncation.
        let held = f.sink().protected.clone();
        let mut g = protected_with(
            MemorySink { protected: held, ..Default::default() },
            Truncation::RequestResponse,
        );
        crate::firewall::testing::restore_all(f.sink(), &mut g);
        g.restore_protected(id, &snap, log, base, false, t).unwrap();
        assert!(burst(
            &mut g,
            &tcp(C, S, (40000, 80), ACK | PSH, (cs, ss), b"GET /d\n"),
            0,
            t + 2 * MS
        ));
        let (_, log, base) = g.sink().protected.values().next().unwrap();
        assert_eq!((&log[..], *base), (&b"GET /d\n"[..], 25));
    }

    #[test]
    fn a_log_longer_than_the_ring_is_told_a_new_checkpointd_in_pieces() {
        let mut f = protected(MemorySink::default());
        open(&mut f);
        let mut cs = 1001u32;
        let mut t = 2 * MS;
        for _ in 0..10 {
            assert!(burst(
                &mut f,
                &tcp(C, S, (40000, 80), ACK | PSH, (cs, 5001), &[b'q'; 1000]),
                0,
                t
            ));
            cs += 1000;
        }
        // checkpointd restarted: it holds nothing, and its ring has room
        // for 20 slots at a time (a few hundred bytes of log a round), less
        // than the log.
        f.sink_mut().protected.clear();
        f.sink_mut().protect_resync = true;
        let mut passed = false;
        for _ in 0..20 {
            f.sink_mut().room = Some(20);
            t += 2 * MS;
            f.housekeeping(t);
            f.sink_mut().room = Some(20);
            passed = burst(&mut f, &tcp(C, S, (40000, 80), ACK | PSH, (cs, 5001), b"next"), 0, t);
            if passed {
                break;
            }
        }
        assert!(passed, "the connection never caught up");
        let (_, log, base) = f.sink().protected.values().next().unwrap();
        assert_eq!((log.len(), *base), (10_004, 0));
        assert_eq!(f.counters.protect.rewritten.get(), 1);
    }

    #[test]
    fn a_record_reads_back_for_the_operator() {
        let mut f = protected(MemorySink::default());
        open(&mut f);
        assert!(burst(
            &mut f,
            &tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"PING\n"),
            0,
            2 * MS
        ));
        f.housekeeping(4 * MS);
        let (snap, _, _) = f.sink().protected.values().next().unwrap();
        let v = super::describe_record(snap).unwrap();
        assert_eq!((v.client, v.server), ((C.into(), 40000), (S.into(), 80)));
        assert_eq!((v.snapshot.phase, v.snapshot.log_bytes, v.snapshot.recoveries), ("up", 5, 0));
        assert!(super::describe_record(&snap[..10]).is_err());
    }

    const PROBE: [u8; 4] = [10, 0, 0, 250];
    const PROBE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfa];

    fn probing(sink: MemorySink) -> Fw {
        let mut f = fw(sink);
        let svc = ProtectedService {
            addr: S.into(),
            port: 80,
            probe_addr: Some(PROBE.into()),
            probe_mac: Some(crate::config::Mac(PROBE_MAC)),
            probe_delay_ms: 1,
            ..Default::default()
        };
        f.protect(&[svc], vec![1, 0], HZ);
        f
    }

    /// The frames the firewall sent: (port, source and destination
    /// address, TCP header).
    fn sent(f: &mut Fw) -> Vec<(usize, [u8; 4], [u8; 4], crate::parse::TcpHdr)> {
        let mut out = Vec::new();
        f.outbox().drain(|port, fr| {
            if let Ok(crate::parse::Parsed::Ip(p)) = crate::parse::parse(fr) {
                if let crate::parse::L4::Tcp(t) = p.l4 {
                    out.push((port, ip4(&p.src), ip4(&p.dst), t));
                }
            }
        });
        out
    }

    /// The service's answer to `probe` (its acknowledgment `off` past the
    /// probe's ISN: 1 is the probe's own).
    fn probe_answer(probe: &crate::parse::TcpHdr, flags: u8, off: u32) -> Vec<u8> {
        tcp(S, PROBE, (80, probe.sport), flags, (9000, probe.seq.wrapping_add(off)), b"")
    }

    fn the_probe(out: &[(usize, [u8; 4], [u8; 4], crate::parse::TcpHdr)]) -> crate::parse::TcpHdr {
        let probes: Vec<_> = out.iter().filter(|o| o.1 == PROBE && o.3.flags == SYN).collect();
        assert_eq!(probes.len(), 1, "one probe: {out:?}");
        assert_eq!((probes[0].0, probes[0].2, probes[0].3.dport), (1, S, 80));
        probes[0].3
    }

    #[test]
    fn a_held_fin_is_judged_by_a_probe_without_the_hook() {
        let mut f = probing(MemorySink::default());
        open(&mut f);
        assert!(burst(&mut f, &tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"x\n"), 0, 2 * MS));
        // The server's FIN is held; the next walk probes the service.
        assert!(!burst(&mut f, &tcp(S, C, (80, 40000), ACK | FIN, (5001, 1003), b""), 1, 3 * MS));
        f.housekeeping(4 * MS);
        f.housekeeping(4 * MS + MS);
        let probe = the_probe(&sent(&mut f));
        // Nothing listens: an RST. The connection is down from then on.
        let rst = probe_answer(&probe, RST | ACK, 1);
        assert!(!burst(&mut f, &rst, 1, 5 * MS), "the probe's answer is the firewall's");
        f.housekeeping(6 * MS);
        assert_eq!(f.counters.protect.probe_refused.get(), 1);
        assert_eq!(f.counters.protect.wire_down.get(), 1);
        assert!(!burst(
            &mut f,
            &tcp(C, S, (40000, 80), ACK | PSH, (1003, 5001), b"y\n"),
            0,
            7 * MS
        ));
        f.housekeeping(8 * MS);
        let out = sent(&mut f);
        assert!(
            out.iter().any(|o| o.0 == 0 && o.2 == C && o.3.ack == 1005 && o.3.window == 0),
            "the client is answered for the server: {out:?}"
        );
        // Probed again while the client waits; a SYN-ACK says it is back:
        // the probe is reset and the replay opens in the client's name.
        f.housekeeping(60 * MS);
        let probe = the_probe(&sent(&mut f));
        let back = probe_answer(&probe, SYN | ACK, 1);
        assert!(!burst(&mut f, &back, 1, 61 * MS));
        f.housekeeping(62 * MS);
        let out = sent(&mut f);
        assert!(
            out.iter().any(|o| o.1 == PROBE && o.3.flags == RST && o.3.seq == probe.seq + 1),
            "{out:?}"
        );
        assert!(
            out.iter()
                .any(|o| o.1 == C && o.3.sport == 40000 && o.3.flags == SYN && o.3.seq == 1000),
            "the replay's SYN: {out:?}"
        );
        assert_eq!(f.counters.protect.probe_listening.get(), 1);
    }

    /// An open connection whose server's FIN or RST (`flags`) is held,
    /// and the probe the next walks send to judge it.
    fn held_then_probed(flags: u8) -> (Fw, crate::parse::TcpHdr) {
        let mut f = probing(MemorySink::default());
        open(&mut f);
        assert!(!burst(&mut f, &tcp(S, C, (80, 40000), ACK | flags, (5001, 1001), b""), 1, 3 * MS));
        f.housekeeping(4 * MS);
        f.housekeeping(5 * MS);
        let probe = the_probe(&sent(&mut f));
        (f, probe)
    }

    #[test]
    fn a_close_the_probe_finds_listening_is_released_at_once() {
        let (mut f, probe) = held_then_probed(FIN);
        // An answer to a probe it did not send (another number) is no verdict.
        // It is reset, as a stack would (a SYN-ACK whose RST was lost).
        let stray = probe_answer(&probe, SYN | ACK, 7);
        assert!(!burst(&mut f, &stray, 1, 5 * MS));
        let out = sent(&mut f);
        assert!(
            out.iter()
                .any(|o| o.0 == 1 && o.1 == PROBE && o.3.flags == RST && o.3.seq == probe.seq + 7),
            "{out:?}"
        );
        f.housekeeping(6 * MS);
        assert_eq!(f.counters.protect.released.get(), 0);
        let back = probe_answer(&probe, SYN | ACK, 1);
        assert!(!burst(&mut f, &back, 1, 7 * MS));
        f.housekeeping(8 * MS);
        let out = sent(&mut f);
        assert!(
            out.iter().any(|o| o.0 == 0 && o.2 == C && o.3.flags & FIN != 0 && o.3.seq == 5001),
            "the FIN released, long before hold_ms: {out:?}"
        );
        assert_eq!(f.counters.protect.released.get(), 1);
        assert_eq!(f.counters.protect.wire_down.get(), 0);
    }

    #[test]
    fn a_tagged_connections_service_is_probed_in_its_vlan() {
        let tags = [(0x8100, 100)];
        let mut f = probing(MemorySink::default());
        let t = |fr: Vec<u8>| tagged(&fr, &tags);
        assert!(burst(&mut f, &t(tcp(C, S, (40000, 80), SYN, (1000, 0), b"")), 0, MS));
        assert!(burst(&mut f, &t(tcp(S, C, (80, 40000), SYN | ACK, (5000, 1001), b"")), 1, MS));
        assert!(burst(&mut f, &t(tcp(C, S, (40000, 80), ACK, (1001, 5001), b"")), 0, MS));
        assert!(burst(
            &mut f,
            &t(tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"x\n")),
            0,
            2 * MS
        ));
        assert!(!burst(
            &mut f,
            &t(tcp(S, C, (80, 40000), ACK | FIN, (5001, 1003), b"")),
            1,
            3 * MS
        ));
        f.housekeeping(4 * MS);
        f.housekeeping(5 * MS);
        let mut probes = Vec::new();
        f.outbox().drain(|port, fr| probes.push((port, fr.to_vec())));
        let probe =
            probes.iter().find(|(port, fr)| *port == 1 && fr[30..34] == PROBE).expect("a probe");
        assert_eq!(probe.1[12..18], [0x81, 0, 0, 100, 8, 0], "tagged as the connection");
    }

    #[test]
    fn an_unanswered_probe_is_sent_twice_then_taken_as_a_crash() {
        let (mut f, first) = held_then_probed(RST);
        f.housekeeping(105 * MS);
        assert_eq!(the_probe(&sent(&mut f)).seq, first.seq, "sent again");
        f.housekeeping(206 * MS);
        assert_eq!(f.counters.protect.probe_silent.get(), 1);
        assert_eq!(f.counters.protect.wire_down.get(), 1);
        assert_eq!(f.counters.protect.released.get(), 0);
    }

    #[test]
    fn each_worker_probes_from_ports_whose_answers_reach_it() {
        use crate::placement::{L4Hashed, Placement};
        let placement = Placement {
            workers: 2,
            reta_size: 128,
            key_len: 40,
            l4: L4Hashed { v4_tcp: true, ..Default::default() },
        };
        let mut ports = Vec::new();
        for worker in 0..2 {
            let mut f = probing(MemorySink::default());
            f.place_probes(worker, &placement);
            open(&mut f);
            assert!(!burst(
                &mut f,
                &tcp(S, C, (80, 40000), ACK | FIN, (5001, 1001), b""),
                1,
                3 * MS
            ));
            let mut mine = Vec::new();
            for i in 0..4u64 {
                f.housekeeping((4 + 300 * i) * MS);
                f.housekeeping((4 + 300 * i) * MS + MS);
                let probe = the_probe(&sent(&mut f));
                let (key, _) = crate::conn::ConnKey::canonical_v4(
                    6,
                    u32::from_be_bytes(PROBE),
                    probe.sport,
                    u32::from_be_bytes(S),
                    80,
                    0,
                );
                assert_eq!(placement.worker_of(&key), worker, "port {}", probe.sport);
                mine.push(probe.sport);
                // Refused: the next walk probes again for the waiting client.
                let rst = probe_answer(&probe, RST | ACK, 1);
                assert!(!burst(&mut f, &rst, 1, (5 + 300 * i) * MS));
            }
            ports.push(mine);
        }
        assert!(ports[0].iter().all(|p| !ports[1].contains(p)), "{ports:?}");
    }

    #[test]
    fn a_client_retransmitting_into_silence_gets_the_service_probed() {
        let mut f = probing(MemorySink::default());
        open(&mut f);
        let req = tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"x\n");
        assert!(burst(&mut f, &req, 0, 2 * MS));
        // Sent again 50 ms later (a tail-loss probe): not evidence.
        assert!(burst(&mut f, &req, 0, 52 * MS));
        f.housekeeping(54 * MS);
        assert!(sent(&mut f).is_empty());
        // Sent again into 300 ms of silence: the service is probed; it
        // listens, so the host lives and nothing changes.
        assert!(burst(&mut f, &req, 0, 300 * MS));
        f.housekeeping(302 * MS);
        f.housekeeping(302 * MS + MS);
        let probe = the_probe(&sent(&mut f));
        let alive = probe_answer(&probe, SYN | ACK, 1);
        assert!(!burst(&mut f, &alive, 1, 303 * MS));
        f.housekeeping(304 * MS);
        f.housekeeping(400 * MS);
        assert!(sent(&mut f).iter().all(|o| o.3.flags != SYN), "no probe without new evidence");
        assert_eq!(f.counters.protect.wire_down.get(), 0);
        // The next retransmission, and this time nothing answers: the host
        // is gone, and the client is answered for it.
        assert!(burst(&mut f, &req, 0, 700 * MS));
        f.housekeeping(702 * MS);
        f.housekeeping(702 * MS + MS);
        the_probe(&sent(&mut f));
        f.housekeeping(803 * MS);
        f.housekeeping(904 * MS);
        assert_eq!(f.counters.protect.probe_silent.get(), 1);
        assert_eq!(f.counters.protect.wire_down.get(), 1);
        assert!(!burst(&mut f, &req, 0, 905 * MS), "down: absorbed and answered");
    }

    #[test]
    fn a_server_that_answers_is_not_silent() {
        let mut f = probing(MemorySink::default());
        open(&mut f);
        let req = tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"x\n");
        assert!(burst(&mut f, &req, 0, 2 * MS));
        // The server acknowledged it (the ACK lost on its way to the
        // client): the retransmission is no evidence.
        assert!(burst(&mut f, &tcp(S, C, (80, 40000), ACK, (5001, 1003), b""), 1, 3 * MS));
        assert!(burst(&mut f, &req, 0, 300 * MS));
        // A window probe or a keep-alive of the server's a moment ago.
        let more = tcp(C, S, (40000, 80), ACK | PSH, (1003, 5001), b"y\n");
        assert!(burst(&mut f, &more, 0, 301 * MS));
        assert!(burst(&mut f, &tcp(S, C, (80, 40000), ACK, (5001, 1003), b""), 1, 400 * MS));
        assert!(burst(&mut f, &more, 0, 450 * MS));
        f.housekeeping(452 * MS);
        assert!(sent(&mut f).is_empty());
    }

    #[test]
    fn an_arp_request_for_the_probe_address_is_answered() {
        let mut f = probing(MemorySink::default());
        let asker = [2, 0, 0, 0, 0, 2];
        let arp = |target: [u8; 4]| {
            let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
            a.extend_from_slice(&asker);
            a.extend_from_slice(&S);
            a.extend_from_slice(&[0; 6]);
            a.extend_from_slice(&target);
            crate::frames::ether_between([0xff; 6], asker, 0x0806, &a)
        };
        // No connection yet: nowhere to answer.
        assert!(burst(&mut f, &arp(PROBE), 1, MS));
        open(&mut f);
        assert!(!burst(&mut f, &arp(PROBE), 1, MS));
        let mut out = Vec::new();
        f.outbox().drain(|port, fr| out.push((port, fr.to_vec())));
        assert_eq!(out.len(), 1);
        let (port, r) = &out[0];
        assert_eq!(*port, 1, "out of the port it came in by");
        assert_eq!((&r[0..6], &r[6..12], &r[12..14]), (&asker[..], &PROBE_MAC[..], &[8, 6][..]));
        assert_eq!(&r[20..22], &[0, 2], "a reply");
        assert_eq!((&r[22..28], &r[28..32]), (&PROBE_MAC[..], &PROBE[..]));
        assert_eq!((&r[32..38], &r[38..42]), (&asker[..], &S[..]));
        assert_eq!(f.counters.protect.arp_answered.get(), 1);
        // Any other address's request goes on as before.
        assert!(burst(&mut f, &arp([10, 0, 0, 7]), 1, MS));
        // In a VLAN where the service answered no client: not answered
        // (another host there may own the address); a client's SYN alone
        // is not the service answering; once it did, answered there, by
        // every worker (they share where).
        let req = arp(PROBE);
        let req = crate::frames::ether_tagged(&[(0x8100, 100)], 0x0806, &req[14..]);
        assert!(burst(&mut f, &req, 1, MS));
        let in100 = |fr: Vec<u8>| crate::frames::ether_tagged(&[(0x8100, 100)], 0x0800, &fr[14..]);
        assert!(burst(&mut f, &in100(tcp(C, S, (40001, 80), SYN, (7000, 0), b"")), 0, MS));
        assert!(burst(&mut f, &req, 1, MS));
        let mut other = probing(MemorySink::default());
        let seen = std::sync::Arc::new(crate::firewall::SeenVlans::default());
        f.share_seen_vlans(seen.clone());
        other.share_seen_vlans(seen);
        assert!(burst(&mut other, &in100(tcp(C, S, (40002, 80), SYN, (9000, 0), b"")), 0, MS));
        assert!(burst(
            &mut other,
            &in100(tcp(S, C, (80, 40002), SYN | ACK, (300, 9001), b"")),
            1,
            MS
        ));
        f.outbox().drain(|_, _| {});
        assert!(!burst(&mut f, &req, 1, MS));
        let mut out = Vec::new();
        f.outbox().drain(|port, fr| out.push((port, fr.to_vec())));
        let (_, r) = &out[0];
        assert_eq!(&r[12..18], &[0x81, 0, 0, 100, 8, 6]);
        assert_eq!((&r[24..26], &r[26..32], &r[32..36]), (&[0, 2][..], &PROBE_MAC[..], &PROBE[..]));
        assert_eq!((&r[36..42], &r[42..46]), (&asker[..], &S[..]));
    }

    #[test]
    fn a_server_segment_waits_for_the_remote_store_at_the_remote_level() {
        let mut f = remote_level();
        open(&mut f);
        assert!(burst(&mut f, &tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"x\n"), 0, 2 * MS));
        let logged_at = f.sink().written;
        // The answer acknowledges bytes the remote store does not hold yet.
        let answer = tcp(S, C, (80, 40000), ACK | PSH, (5001, 1003), b"x\n");
        assert!(!burst(&mut f, &answer, 1, 3 * MS), "held");
        // A bare ACK of nothing new behind it waits too (order).
        let ack = tcp(S, C, (80, 40000), ACK, (5003, 1003), b"");
        assert!(!burst(&mut f, &ack, 1, 3 * MS));
        assert_eq!(f.counters.protect.commit_held.get(), 2);
        f.housekeeping(4 * MS);
        assert!(f.outbox().is_empty(), "still not in the remote store");
        f.sink_mut().remote_committed = Some(logged_at);
        f.housekeeping(5 * MS);
        let mut out = Vec::new();
        f.outbox().drain(|port, fr| out.push((port, fr.to_vec())));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], (0, answer.clone()), "released as it came, in order");
        assert_eq!(out[1], (0, ack));
        assert_eq!(f.counters.protect.commit_waiting.get(), 0);
        // Committed now: the next answer to committed bytes goes at once.
        let again = tcp(S, C, (80, 40000), ACK, (5003, 1003), b"");
        assert!(burst(&mut f, &again, 1, 6 * MS));
    }

    fn remote_level() -> Fw {
        remote(MemorySink { remote_committed: Some(0), ..Default::default() })
    }

    /// The server protected with output commit at the remote level, writing
    /// into `sink`.
    pub(super) fn remote(sink: MemorySink) -> Fw {
        let mut f = fw(sink);
        let svc = ProtectedService {
            addr: S.into(),
            port: 80,
            output_commit: crate::config::OutputCommit::Remote,
            ..Default::default()
        };
        f.protect(&[svc], vec![1, 0], HZ);
        f
    }

    #[test]
    fn a_new_checkpointds_word_commits_nothing_written_to_the_old_one() {
        let mut f = remote_level();
        open(&mut f);
        assert!(burst(&mut f, &tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"x\n"), 0, 2 * MS));
        let answer = tcp(S, C, (80, 40000), ACK | PSH, (5001, 1003), b"x\n");
        assert!(!burst(&mut f, &answer, 1, 3 * MS));
        // checkpointd restarted: it drained past the record but never sent
        // it; its word covers the position.
        f.sink_mut().drainer = 7;
        f.sink_mut().remote_committed = Some(u64::MAX - 1);
        assert!(!burst(&mut f, &tcp(S, C, (80, 40000), ACK, (5003, 1003), b""), 1, 3 * MS));
        f.housekeeping(3 * MS + 1);
        assert!(f.outbox().is_empty(), "released on a word about records it never had");
        // The dataplane takes note and writes the log to it again (it
        // holds nothing); once that is committed, the segments go.
        f.sink_mut().protected.clear();
        f.sink_mut().protect_resync = true;
        f.housekeeping(5 * MS);
        f.housekeeping(7 * MS);
        let mut out = 0;
        f.outbox().drain(|port, _| out += usize::from(port == 0));
        assert_eq!(out, 2);
    }

    #[test]
    fn a_reused_client_port_does_not_wait_behind_the_old_connection() {
        let mut f = remote_level();
        open(&mut f);
        assert!(burst(&mut f, &tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"x\n"), 0, 2 * MS));
        assert!(!burst(
            &mut f,
            &tcp(S, C, (80, 40000), ACK | PSH, (5001, 1003), b"x\n"),
            1,
            3 * MS
        ));
        // The client resets and opens again from the same port.
        burst(&mut f, &tcp(C, S, (40000, 80), RST, (1003, 0), b""), 0, 4 * MS);
        assert!(burst(&mut f, &tcp(C, S, (40000, 80), SYN, (9000, 0), b""), 0, 5 * MS));
        assert!(burst(&mut f, &tcp(S, C, (80, 40000), SYN | ACK, (300, 9001), b""), 1, 5 * MS));
        f.sink_mut().remote_committed = None;
        f.housekeeping(6 * MS);
        // The old connection's segment is dropped, not sent to the new one.
        let mut out = Vec::new();
        f.outbox().drain(|port, fr| out.push((port, fr.to_vec())));
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(f.counters.protect.commit_full.get(), 1);
        assert!(burst(&mut f, &tcp(S, C, (80, 40000), ACK, (301, 9001), b""), 1, 7 * MS));
    }

    #[test]
    fn a_reset_connection_opened_again_is_protected_anew() {
        let mut f = protected(MemorySink::default());
        for round in 0..2u64 {
            let t = round * 100 * MS;
            assert!(burst(&mut f, &tcp(C, S, (40000, 80), SYN, (1000, 0), b""), 0, t + MS));
            assert!(burst(
                &mut f,
                &tcp(S, C, (80, 40000), SYN | ACK, (5000, 1001), b""),
                1,
                t + MS
            ));
            assert!(burst(&mut f, &tcp(C, S, (40000, 80), ACK, (1001, 5001), b""), 0, t + MS));
            assert!(burst(
                &mut f,
                &tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"x\n"),
                0,
                t + 2 * MS
            ));
            assert!(burst(&mut f, &tcp(S, C, (80, 40000), ACK, (5001, 1003), b""), 1, t + 3 * MS));
            assert!(burst(
                &mut f,
                &tcp(C, S, (40000, 80), RST | ACK, (1003, 5001), b""),
                0,
                t + 4 * MS
            ));
            f.housekeeping(t + 10 * MS);
            f.housekeeping(t + 20 * MS);
            // Even with the same ISN (a replayed capture), the new life is
            // logged from its first byte.
            assert_eq!(f.counters.protect.connections.get(), round + 1);
        }
    }

    #[test]
    fn at_the_local_level_nothing_waits_for_the_remote_store() {
        let mut f = protected(MemorySink { remote_committed: Some(0), ..Default::default() });
        open(&mut f);
        assert!(burst(&mut f, &tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"x\n"), 0, 2 * MS));
        let answer = tcp(S, C, (80, 40000), ACK | PSH, (5001, 1003), b"x\n");
        assert!(burst(&mut f, &answer, 1, 3 * MS));
        assert_eq!(f.counters.protect.commit_held.get(), 0);
    }

    /// `frame` (untagged) with VLAN tags, outermost first.
    fn tagged(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
        crate::frames::ether_tagged(tags, 0x0800, &frame[14..])
    }

    /// The ACK numbers of the TCP segments sent out of `port`, each frame's
    /// bytes after the MACs up to its ethertype checked against `tags`.
    fn answers_in(f: &mut Fw, port: usize, tags: &[(u16, u16)]) -> Vec<u32> {
        let mut acks = Vec::new();
        f.outbox().drain(|p, fr| {
            if p != port {
                return;
            }
            let l3 = 14 + 4 * tags.len();
            let want: Vec<u8> = tags
                .iter()
                .flat_map(|&(t, c)| [t.to_be_bytes(), c.to_be_bytes()])
                .flatten()
                .collect();
            assert_eq!(fr[12..l3 - 2], want[..], "the connection's tags");
            assert_eq!(fr[l3 - 2..l3], [8, 0]);
            let Ok(crate::parse::Parsed::Ip(ip)) = crate::parse::parse(fr) else {
                panic!("unparsed")
            };
            crate::parse::checksum::verify(fr, &ip, crate::parse::checksum::RxChecksums::UNKNOWN)
                .expect("checksums");
            let crate::parse::L4::Tcp(t) = ip.l4 else { panic!("not TCP") };
            acks.push(t.ack);
        });
        acks
    }

    #[test]
    fn a_tagged_connection_is_protected_and_answered_in_its_vlan() {
        let tags = [(0x88a8, 7), (0x8100, 0x2064)];
        let mut f = protected(MemorySink::default());
        let t = |fr: Vec<u8>| tagged(&fr, &tags);
        assert!(burst(&mut f, &t(tcp(C, S, (40000, 80), SYN, (1000, 0), b"")), 0, MS));
        assert!(burst(&mut f, &t(tcp(S, C, (80, 40000), SYN | ACK, (5000, 1001), b"")), 1, MS));
        assert!(burst(&mut f, &t(tcp(C, S, (40000, 80), ACK, (1001, 5001), b"")), 0, MS));
        assert_eq!(f.counters.protect.connections.get(), 1);
        assert_eq!(f.counters.protect.unprotectable.get(), 0);
        assert!(burst(
            &mut f,
            &t(tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"SET a 1\n")),
            0,
            2 * MS
        ));
        assert_eq!(f.sink().protected.values().next().expect("logged").1, b"SET a 1\n");
        // Down: answered for the server, in the client's VLAN.
        f.counters.requests.protect_word[0].store(1 << 1, Ordering::Release);
        f.housekeeping(4 * MS);
        let get = t(tcp(C, S, (40000, 80), ACK | PSH, (1009, 5001), b"GET a\n"));
        assert!(!burst(&mut f, &get, 0, 5 * MS));
        f.housekeeping(7 * MS);
        assert!(answers_in(&mut f, 0, &tags).contains(&1015));

        // Its record keeps the tags: a restarted firewall answers in the VLAN too.
        let held = f.sink().protected.clone();
        let mut g = protected(MemorySink { protected: held.clone(), ..Default::default() });
        for (id, (snap, log, base)) in &held {
            g.restore_protected(*id, snap, log.clone(), *base, false, 8 * MS).unwrap();
        }
        let more = t(tcp(C, S, (40000, 80), ACK | PSH, (1015, 5001), b"INCR a\n"));
        assert!(!burst(&mut g, &more, 0, 9 * MS));
        g.housekeeping(11 * MS);
        assert!(answers_in(&mut g, 0, &tags).contains(&1022));
        // The same addresses untagged are another connection: not this one's.
        let untagged = tcp(C, S, (40000, 80), ACK | PSH, (1022, 5001), b"GET b\n");
        burst(&mut g, &untagged, 0, 12 * MS);
        assert_eq!(g.sink().protected.values().next().unwrap().1, b"SET a 1\nGET a\nINCR a\n");

        // A record whose tags no build writes is refused.
        let (id, (snap, log, _)) = held.iter().next().unwrap();
        let mut bad = snap.clone();
        bad[super::SNAPSHOT_BYTES + super::TAGS_AT.start] = 3;
        let mut h = protected(MemorySink::default());
        assert_eq!(
            h.restore_protected(*id, &bad, log.clone(), 0, false, 5 * MS),
            Err(super::ProtectRestoreError::Tags)
        );
    }

    const C6: [u8; 16] = [0xfd, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const S6: [u8; 16] = [0xfd, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// An Ethernet/IPv6 frame of a TCP segment.
    fn tcp6(
        src: [u8; 16],
        dst: [u8; 16],
        ports: (u16, u16),
        flags: u8,
        (seq, ack): (u32, u32),
        payload: &[u8],
    ) -> Vec<u8> {
        use crate::frames::{ether, ipv6, tcp_segment, Tcp};
        let t = Tcp { sport: ports.0, dport: ports.1, seq, ack, flags, payload, ..Tcp::default() };
        ether(0x86dd, &ipv6(6, src, dst, &tcp_segment(&t)))
    }

    /// A firewall protecting the IPv6 service [S6]:80 and the IPv4 S:80.
    fn protected_v6(sink: MemorySink) -> Fw {
        let mut f = fw(sink);
        let v6 = ProtectedService { addr: S6.into(), port: 80, ..Default::default() };
        let v4 = ProtectedService { addr: S.into(), port: 80, ..Default::default() };
        f.protect(&[v6, v4], vec![1, 0], HZ);
        f
    }

    /// The IPv6 TCP segments sent out of `port`, checksums verified.
    fn sent6(f: &mut Fw, port: usize) -> Vec<crate::parse::TcpHdr> {
        let mut out = Vec::new();
        f.outbox().drain(|p, fr| {
            if p != port {
                return;
            }
            assert_eq!(fr[12..14], [0x86, 0xdd], "IPv6");
            let Ok(crate::parse::Parsed::Ip(ip)) = crate::parse::parse(fr) else {
                panic!("unparsed")
            };
            crate::parse::checksum::verify(fr, &ip, crate::parse::checksum::RxChecksums::UNKNOWN)
                .expect("checksums");
            assert_eq!((ip.src, ip.dst), (S6, C6), "from the server to the client");
            let crate::parse::L4::Tcp(t) = ip.l4 else { panic!("not TCP") };
            out.push(t);
        });
        out
    }

    #[test]
    fn an_ipv6_service_is_protected_and_answered_over_ipv6() {
        let mut f = protected_v6(MemorySink::default());
        assert!(burst(&mut f, &tcp6(C6, S6, (40000, 80), SYN, (1000, 0), b""), 0, MS));
        assert!(burst(&mut f, &tcp6(S6, C6, (80, 40000), SYN | ACK, (5000, 1001), b""), 1, MS));
        assert!(burst(&mut f, &tcp6(C6, S6, (40000, 80), ACK, (1001, 5001), b""), 0, MS));
        assert_eq!(f.counters.protect.connections.get(), 1);
        assert!(burst(
            &mut f,
            &tcp6(C6, S6, (40000, 80), ACK | PSH, (1001, 5001), b"SET a 1\n"),
            0,
            2 * MS
        ));
        assert_eq!(f.sink().protected.values().next().expect("logged").1, b"SET a 1\n");
        // An IPv6 frame with an IPv4 address mapped inside is neither
        // family's service: not protected.
        let mapped = crate::parse::v4_mapped([10, 99, 0, 1]);
        assert!(burst(&mut f, &tcp6(mapped, S6, (40001, 80), SYN, (1000, 0), b""), 0, 2 * MS));
        assert_eq!(f.counters.protect.connections.get(), 1);
        // The IPv4 service on the same port is another: its word leaves this one up.
        f.counters.requests.protect_word[1].store(1 << 1, Ordering::Release);
        f.housekeeping(3 * MS);
        assert!(burst(
            &mut f,
            &tcp6(C6, S6, (40000, 80), ACK | PSH, (1009, 5001), b"GET a\n"),
            0,
            4 * MS
        ));
        // Down: answered for the server, over IPv6.
        f.counters.requests.protect_word[0].store(1 << 1, Ordering::Release);
        f.housekeeping(5 * MS);
        assert!(!burst(
            &mut f,
            &tcp6(C6, S6, (40000, 80), ACK | PSH, (1015, 5001), b"INCR a\n"),
            0,
            6 * MS
        ));
        f.housekeeping(8 * MS);
        assert!(sent6(&mut f, 0).iter().any(|t| t.ack == 1022 && t.window == 0));

        // Its record keeps its addresses: a restarted firewall answers over
        // IPv6 too; and a record of format 3 (IPv4, 4-byte addresses) is
        // still read.
        let held = f.sink().protected.clone();
        let mut g = protected_v6(MemorySink { protected: held.clone(), ..Default::default() });
        for (id, (snap, log, base)) in &held {
            g.restore_protected(*id, snap, log.clone(), *base, false, 9 * MS).unwrap();
            let v = super::describe_record(snap).unwrap();
            assert_eq!(v.server, (std::net::IpAddr::from(S6), 80));
        }
        assert!(!burst(
            &mut g,
            &tcp6(C6, S6, (40000, 80), ACK | PSH, (1022, 5001), b"x\n"),
            0,
            10 * MS
        ));
        g.housekeeping(12 * MS);
        assert!(sent6(&mut g, 0).iter().any(|t| t.ack == 1024));
    }

    #[test]
    fn an_ipv6_service_is_probed_and_its_probe_address_is_a_neighbour() {
        const PROBE6: [u8; 16] = [0xfd, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfa];
        let mut f = fw(MemorySink::default());
        let svc = ProtectedService {
            addr: S6.into(),
            port: 80,
            probe_addr: Some(PROBE6.into()),
            probe_mac: Some(crate::config::Mac(PROBE_MAC)),
            probe_delay_ms: 1,
            ..Default::default()
        };
        f.protect(&[svc], vec![1, 0], HZ);
        let server_mac = [2, 0, 0, 0, 0, 2];
        let solicit = |target: [u8; 16]| {
            let mut body = target.to_vec();
            body.extend_from_slice(&[1, 1]);
            body.extend_from_slice(&server_mac);
            let mut ip = crate::frames::ipv6(
                58,
                S6,
                target,
                &crate::frames::icmp_message(135, 0, [0; 4], &body),
            );
            ip[7] = 255;
            crate::frames::ether_between([0x33, 0x33, 0xff, 0, 0, 0xfa], server_mac, 0x86dd, &ip)
        };
        // No connection yet: not answered.
        assert!(burst(&mut f, &solicit(PROBE6), 1, MS));
        assert!(burst(&mut f, &tcp6(C6, S6, (40000, 80), SYN, (1000, 0), b""), 0, MS));
        assert!(burst(&mut f, &tcp6(S6, C6, (80, 40000), SYN | ACK, (5000, 1001), b""), 1, MS));
        assert!(burst(
            &mut f,
            &tcp6(C6, S6, (40000, 80), ACK | PSH, (1001, 5001), b"x\n"),
            0,
            2 * MS
        ));
        // The server asks for the probe address: advertised.
        assert!(!burst(&mut f, &solicit(PROBE6), 1, 2 * MS));
        let mut out = Vec::new();
        f.outbox().drain(|port, fr| out.push((port, fr.to_vec())));
        let (port, na) = &out[0];
        assert_eq!((*port, &na[0..6], &na[6..12]), (1, &server_mac[..], &PROBE_MAC[..]));
        let Ok(crate::parse::Parsed::Ip(ip)) = crate::parse::parse(na) else { panic!("unparsed") };
        crate::parse::checksum::verify(na, &ip, crate::parse::checksum::RxChecksums::UNKNOWN)
            .expect("checksum");
        assert_eq!((ip.src, ip.dst, na[20], na[21]), (PROBE6, S6, 58, 255));
        assert_eq!(
            (na[54], na[58], &na[62..78], &na[78..80], &na[80..86]),
            (136, 0x60, &PROBE6[..], &[2, 1][..], &PROBE_MAC[..])
        );
        // Another address's solicitation goes on; so do malformed ones: a
        // message shorter than its target, an option of length 0, a target
        // that is an IPv4 address mapped.
        assert!(burst(&mut f, &solicit(C6), 1, 2 * MS));
        // A solicitation whose message is built from `body`, with `trailing`
        // bytes after the packet, its checksums right.
        let ns = |body: &[u8], trailing: &[u8]| {
            let mut ip = crate::frames::ipv6(
                58,
                S6,
                PROBE6,
                &crate::frames::icmp_message(135, 0, [0; 4], body),
            );
            ip[7] = 255;
            ip.extend_from_slice(trailing);
            crate::frames::ether_between([0x33, 0x33, 0xff, 0, 0, 0xfa], server_mac, 0x86dd, &ip)
        };
        // The target outside the message (its length 8), an option of length
        // 0: not answered (both go on, to the tracker).
        burst(&mut f, &ns(&[], &PROBE6), 1, 2 * MS);
        let mut zero_opt = PROBE6.to_vec();
        zero_opt.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        burst(&mut f, &ns(&zero_opt, &[]), 1, 2 * MS);
        burst(&mut f, &solicit(crate::parse::v4_mapped([10, 0, 0, 250])), 1, 2 * MS);
        let mut none = 0;
        f.outbox().drain(|_, _| none += 1);
        assert_eq!(none, 0, "nothing answered");
        assert_eq!(f.counters.protect.arp_answered.get(), 1);
        // The server's FIN is held; the probe goes from the probe address
        // over IPv6, and its RST says the service is down.
        assert!(!burst(
            &mut f,
            &tcp6(S6, C6, (80, 40000), ACK | FIN, (5001, 1003), b""),
            1,
            3 * MS
        ));
        f.housekeeping(4 * MS);
        f.housekeeping(5 * MS);
        let mut probe = None;
        f.outbox().drain(|port, fr| {
            let Ok(crate::parse::Parsed::Ip(ip)) = crate::parse::parse(fr) else { return };
            if let crate::parse::L4::Tcp(t) = ip.l4 {
                if port == 1 && ip.src == PROBE6 && t.flags == SYN {
                    probe = Some(t);
                }
            }
        });
        let probe = probe.expect("a probe over IPv6");
        let rst =
            tcp6(S6, PROBE6, (80, probe.sport), RST | ACK, (0, probe.seq.wrapping_add(1)), b"");
        assert!(!burst(&mut f, &rst, 1, 6 * MS));
        f.housekeeping(7 * MS);
        assert_eq!(f.counters.protect.probe_refused.get(), 1);
        assert_eq!(f.counters.protect.wire_down.get(), 1);
    }

    #[test]
    fn a_record_of_format_3_restores_as_ipv4() {
        let mut f = protected(MemorySink::default());
        open(&mut f);
        assert!(burst(
            &mut f,
            &tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"SET a 1\n"),
            0,
            2 * MS
        ));
        f.counters.requests.protect_word[0].store(1 << 1, Ordering::Release);
        f.housekeeping(4 * MS);
        let (id, (rec, log, base)) = f.sink().protected.clone().into_iter().next().unwrap();
        // As a build of format 3 wrote it: 4-byte addresses, tags at 26.
        let (snap, wire) = rec.split_at(super::SNAPSHOT_BYTES);
        let mut old = snap.to_vec();
        old[0] = 3;
        let mut w = [0u8; 32];
        w[..12].copy_from_slice(&wire[..12]);
        w[12..16].copy_from_slice(&wire[24..28]);
        w[16..20].copy_from_slice(&wire[40..44]);
        w[20..26].copy_from_slice(&wire[44..50]);
        w[26..31].copy_from_slice(&wire[50..55]);
        old.extend_from_slice(&w);
        let v = super::describe_record(&old).unwrap();
        assert_eq!(
            (v.client, v.server),
            ((std::net::IpAddr::from(C), 40000), (std::net::IpAddr::from(S), 80))
        );
        let mut g =
            protected(MemorySink { protected: f.sink().protected.clone(), ..Default::default() });
        g.restore_protected(id, &old, log, base, false, 5 * MS).unwrap();
        assert!(!burst(
            &mut g,
            &tcp(C, S, (40000, 80), ACK | PSH, (1009, 5001), b"GET a\n"),
            0,
            6 * MS
        ));
        g.housekeeping(8 * MS);
        let acks = answers_in(&mut g, 0, &[]);
        assert!(acks.contains(&1015), "{acks:?}");
        // Lengths no build writes are refused.
        assert_eq!(
            g.restore_protected(id, &old[..old.len() - 1], Vec::new(), 0, false, 9 * MS),
            Err(super::ProtectRestoreError::Length(old.len() - 1))
        );
    }

    /// A TCP frame whose IPv4 header carries options (four NOPs' worth),
    /// or is a first fragment (`frag` 0x2000).
    fn tcp_ip(
        src: [u8; 4],
        dst: [u8; 4],
        ports: (u16, u16),
        flags: u8,
        (seq, ack): (u32, u32),
        payload: &[u8],
        frag: u16,
    ) -> Vec<u8> {
        use crate::frames::{eth, ipv4_packet, tcp_segment, Ipv4, Tcp};
        let t = Tcp { sport: ports.0, dport: ports.1, seq, ack, flags, payload, ..Tcp::default() };
        let h = Ipv4 { opts: &[1, 1, 1, 0], frag, ..Ipv4::new(6, src, dst) };
        eth(ipv4_packet(&h, &tcp_segment(&t)))
    }

    #[test]
    fn a_connection_whose_frames_carry_ip_options_is_protected_up_and_down() {
        let mut f = protected(MemorySink::default());
        let whole = 0x4000;
        assert!(burst(&mut f, &tcp_ip(C, S, (40000, 80), SYN, (1000, 0), b"", whole), 0, MS));
        assert!(burst(&mut f, &tcp(S, C, (80, 40000), SYN | ACK, (5000, 1001), b""), 1, MS));
        assert!(burst(&mut f, &tcp_ip(C, S, (40000, 80), ACK, (1001, 5001), b"", whole), 0, MS));
        assert_eq!(f.counters.protect.connections.get(), 1);
        assert_eq!(f.counters.protect.unprotectable.get(), 0);
        let set = tcp_ip(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"SET a 1\n", whole);
        assert!(burst(&mut f, &set, 0, 2 * MS));
        assert_eq!(f.sink().protected.values().next().expect("logged").1, b"SET a 1\n");
        // Down: its bytes are logged and answered for the server.
        f.counters.requests.protect_word[0].store(1 << 1, Ordering::Release);
        f.housekeeping(4 * MS);
        let get = tcp_ip(C, S, (40000, 80), ACK | PSH, (1009, 5001), b"GET a\n", whole);
        assert!(!burst(&mut f, &get, 0, 5 * MS), "absorbed while the server is down");
        assert_eq!(f.sink().protected.values().next().unwrap().1, b"SET a 1\nGET a\n");
        f.housekeeping(7 * MS);
        let mut acks = Vec::new();
        f.outbox().drain(|port, fr| {
            if port == 0 {
                acks.push(u32::from_be_bytes(fr[42..46].try_into().unwrap()));
            }
        });
        assert!(acks.contains(&1015), "{acks:?}");
    }

    #[test]
    fn a_fragment_ends_protection_where_it_can_and_goes_no_further_where_not() {
        let mut f = protected(MemorySink::default());
        open(&mut f);
        assert!(burst(&mut f, &tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"x\n"), 0, 2 * MS));
        // A fragment not at the client's next byte (in the window, blind)
        // does not end protection: dropped.
        let blind = tcp_ip(C, S, (40000, 80), ACK | PSH, (1500, 5001), b"abcd", 0x2000);
        assert!(!burst(&mut f, &blind, 0, 2 * MS));
        assert_eq!(f.counters.protect.unspliceable.get(), 1);
        // Up: protection ends, the fragment and what follows go on unlogged.
        let first = tcp_ip(C, S, (40000, 80), ACK | PSH, (1003, 5001), b"abcd", 0x2000);
        assert!(burst(&mut f, &first, 0, 3 * MS));
        f.housekeeping(4 * MS);
        assert_eq!(f.counters.protect.unprotectable.get(), 1);
        assert!(f.sink().protected.is_empty(), "its end was written");
        assert!(burst(
            &mut f,
            &tcp(C, S, (40000, 80), ACK | PSH, (1003, 5001), b"abcd"),
            0,
            5 * MS
        ));
        assert!(f.sink().protected.is_empty(), "no longer logged");

        // Down: the fragment cannot be logged, nor go to the server.
        let mut g = protected(MemorySink::default());
        open(&mut g);
        g.counters.requests.protect_word[0].store(1 << 1, Ordering::Release);
        g.housekeeping(2 * MS);
        assert!(!burst(&mut g, &first, 0, 3 * MS));
        assert_eq!(g.counters.protect.unspliceable.get(), 1);
        assert_eq!(g.counters.protect.unprotectable.get(), 0);

        // Up, but the server's close is held (crash evidence): the fragment
        // cannot end protection then either.
        let mut h = protected(MemorySink::default());
        open(&mut h);
        assert!(!burst(&mut h, &tcp(S, C, (80, 40000), ACK | FIN, (5001, 1001), b""), 1, 2 * MS));
        let at_start = tcp_ip(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"abcd", 0x2000);
        assert!(!burst(&mut h, &at_start, 0, 3 * MS));
        h.housekeeping(4 * MS);
        assert_eq!(h.counters.protect.unprotectable.get(), 0);
        assert_eq!(h.counters.protect.unspliceable.get(), 1);
    }

    #[test]
    fn a_half_close_is_in_the_ring_before_it_leaves() {
        let mut f = protected(MemorySink::default());
        open(&mut f);
        assert!(burst(&mut f, &tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"x\n"), 0, 2 * MS));
        f.housekeeping(3 * MS);
        let fin = tcp(C, S, (40000, 80), ACK | FIN, (1003, 5001), b"");
        // No room for its record: dropped, counted; the client sends it again.
        f.sink_mut().room = Some(0);
        assert!(!burst(&mut f, &fin, 0, 4 * MS));
        assert_eq!(f.counters.protect.log_ring_full.get(), 1);
        f.sink_mut().room = None;
        assert!(burst(&mut f, &fin, 0, 5 * MS));
        let (snap, _, _) = f.sink().protected.values().next().unwrap();
        assert_eq!(snap[9] & 1, 1, "its record says so before the next walk");
    }

    #[test]
    fn a_connection_that_ends_while_down_is_forgotten_at_once() {
        let mut f = protected(MemorySink::default());
        open(&mut f);
        assert!(burst(&mut f, &tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"x\n"), 0, 2 * MS));
        f.counters.requests.protect_word[0].store(1 << 1, Ordering::Release);
        f.housekeeping(4 * MS);
        assert_eq!(f.sink().protected.len(), 1);
        // Its FIN while the server is down is a half-close: logged after
        // the bytes, answered, the connection kept for the replay.
        burst(&mut f, &tcp(C, S, (40000, 80), ACK | FIN, (1003, 5001), b""), 0, 4 * MS + 1);
        assert_eq!(f.sink().protected.len(), 1);
        f.housekeeping(5 * MS);
        let mut acks = Vec::new();
        f.outbox().drain(|_, fr| acks.push(u32::from_be_bytes(fr[42..46].try_into().unwrap())));
        assert!(acks.contains(&1004), "its FIN acknowledged: {acks:?}");
        // The client gives up (a reset at its next byte, past the FIN):
        // checkpointd forgets the connection with that segment, not at the
        // next walk (a restart in between would replay it).
        burst(&mut f, &tcp(C, S, (40000, 80), RST, (1004, 0), b""), 0, 5 * MS + 1);
        assert!(f.sink().protected.is_empty(), "{:?}", f.sink().protected.keys());
        f.housekeeping(6 * MS);
        assert!(f.sink().protected.is_empty());
    }
}

#[cfg(test)]
/// Where probes, output commit at the remote level, the half-close and
/// restores meet.
mod interplay_tests {
    use super::tests::remote;
    use crate::checkpoint::MemorySink;
    use crate::config::ProtectedService;
    use crate::firewall::testing::{fw, C, HZ, S};
    use crate::firewall::{FrameBurst, StagedBurst};
    use crate::frames::{tcp, tcp_flags::*};

    const MS: u64 = HZ / 1000;
    type Fw = super::super::Firewall<MemorySink, allocator_api2::alloc::Global>;

    fn burst(f: &mut Fw, frame: &[u8], port: usize, now: u64) -> bool {
        let frames = [frame];
        let mut b = FrameBurst::new(&frames);
        f.process_burst(&mut StagedBurst::new(), &mut b, port, now);
        b.forwarded == 1
    }
    fn open(f: &mut Fw) {
        assert!(burst(f, &tcp(C, S, (40000, 80), SYN, (1000, 0), b""), 0, MS));
        assert!(burst(f, &tcp(S, C, (80, 40000), SYN | ACK, (5000, 1001), b""), 1, MS));
        assert!(burst(f, &tcp(C, S, (40000, 80), ACK, (1001, 5001), b""), 0, MS));
    }
    fn restart(f: &Fw, now: u64) -> Fw {
        let held = f.sink().protected.clone();
        let mut g = remote(MemorySink { protected: held.clone(), ..Default::default() });
        crate::firewall::testing::restore_all(f.sink(), &mut g);
        for (id, (snap, log, base)) in &held {
            g.restore_protected(*id, snap, log.clone(), *base, false, now).unwrap();
        }
        g
    }

    /// A half-closed connection restored at the remote level: the server's
    /// answer, which acknowledges the FIN, goes once the remote store holds
    /// the record that says it.
    #[test]
    fn a_restored_half_close_commits_its_fin() {
        let mut f = remote(MemorySink { remote_committed: Some(0), ..Default::default() });
        open(&mut f);
        assert!(burst(
            &mut f,
            &tcp(C, S, (40000, 80), ACK | PSH | FIN, (1001, 5001), b"x\n"),
            0,
            2 * MS
        ));
        f.sink_mut().remote_committed = None; // Redis holds everything
        f.housekeeping(3 * MS);
        // Control: before the restart the answer, acking the FIN, passes.
        let answer = tcp(S, C, (80, 40000), ACK | PSH, (5001, 1004), b"X\n");
        let mut g = restart(&f, 4 * MS);
        assert!(burst(&mut f, &answer, 1, 4 * MS), "control");
        for t in 5..50 {
            g.housekeeping(t * MS);
        }
        let passed = burst(&mut g, &answer, 1, 50 * MS);
        for t in 51..200 {
            g.housekeeping(t * MS);
        }
        let mut out = 0;
        g.outbox().drain(|port, _| out += usize::from(port == 0));
        assert!(
            passed || out > 0,
            "held forever: waiting={} held={}",
            g.counters.protect.commit_waiting.get(),
            g.counters.protect.commit_held.get()
        );
    }

    /// The same across a checkpointd restart (a protect resync) that came
    /// before the FIN's record was committed: the rewritten record commits
    /// it.
    #[test]
    fn a_half_close_across_a_checkpointd_restart_commits_its_fin() {
        let mut f = remote(MemorySink { remote_committed: Some(0), ..Default::default() });
        open(&mut f);
        assert!(burst(&mut f, &tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"x\n"), 0, 2 * MS));
        f.sink_mut().remote_committed = None;
        f.housekeeping(3 * MS);
        f.sink_mut().remote_committed = Some(0);
        assert!(burst(&mut f, &tcp(C, S, (40000, 80), ACK | FIN, (1003, 5001), b""), 0, 4 * MS));
        // checkpointd restarts before Redis took the FIN's record.
        f.sink_mut().drainer = 7;
        f.sink_mut().protected.clear();
        f.sink_mut().protect_resync = true;
        f.housekeeping(5 * MS);
        f.sink_mut().remote_committed = None; // the new one holds everything now
        for t in 6..20 {
            f.housekeeping(t * MS);
        }
        let answer = tcp(S, C, (80, 40000), ACK | PSH, (5001, 1004), b"X\n");
        let passed = burst(&mut f, &answer, 1, 20 * MS);
        for t in 21..100 {
            f.housekeeping(t * MS);
        }
        let mut out = 0;
        f.outbox().drain(|port, _| out += usize::from(port == 0));
        assert!(passed || out > 0, "held forever");
    }

    /// Restored down with its FIN, everything committed: the firewall's
    /// answers acknowledge the FIN.
    #[test]
    fn a_restored_half_close_while_down_has_its_fin_acknowledged() {
        let mut f = remote(MemorySink { remote_committed: None, ..Default::default() });
        open(&mut f);
        assert!(burst(
            &mut f,
            &tcp(C, S, (40000, 80), ACK | PSH | FIN, (1001, 5001), b"x\n"),
            0,
            2 * MS
        ));
        f.counters.requests.protect_word[0].store(1 << 1, std::sync::atomic::Ordering::Release);
        f.housekeeping(3 * MS);
        f.housekeeping(5 * MS);
        let mut g = restart(&f, 6 * MS);
        for t in 7..20 {
            g.housekeeping(t * MS);
        }
        g.outbox().drain(|_, _| {});
        assert!(!burst(&mut g, &tcp(C, S, (40000, 80), ACK | FIN, (1003, 5001), b""), 0, 20 * MS));
        g.housekeeping(21 * MS);
        let mut acks = Vec::new();
        g.outbox().drain(|port, fr| {
            if port == 0 {
                acks.push(u32::from_be_bytes(fr[42..46].try_into().unwrap()))
            }
        });
        assert!(acks.contains(&1004), "the FIN is never acknowledged: {acks:?}");
    }

    const PROBE: [u8; 4] = [10, 0, 0, 250];

    fn probing_remote(sink: MemorySink) -> Fw {
        let mut f = fw(sink);
        let svc = ProtectedService {
            addr: S.into(),
            port: 80,
            probe_addr: Some(PROBE.into()),
            probe_mac: Some(crate::config::Mac([2, 0, 0, 0, 0, 0xfa])),
            probe_delay_ms: 1,
            output_commit: crate::config::OutputCommit::Remote,
            ..Default::default()
        };
        f.protect(&[svc], vec![1, 0], HZ);
        f
    }

    fn probes(f: &mut Fw) -> Vec<crate::parse::TcpHdr> {
        let mut out = Vec::new();
        f.outbox().drain(|_, fr| {
            if let Ok(crate::parse::Parsed::Ip(p)) = crate::parse::parse(fr) {
                if let crate::parse::L4::Tcp(t) = p.l4 {
                    if p.src == crate::parse::v4_mapped(PROBE) && t.flags == SYN {
                        out.push(t);
                    }
                }
            }
        });
        out
    }

    /// A half-closed client whose server host vanished sends its FIN again
    /// into the silence: evidence, as its bytes would be.
    #[test]
    fn a_fin_sent_again_into_silence_gets_the_service_probed() {
        let mut f = probing_remote(MemorySink::default());
        open(&mut f);
        assert!(burst(&mut f, &tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"x\n"), 0, 2 * MS));
        assert!(burst(&mut f, &tcp(S, C, (80, 40000), ACK, (5001, 1003), b""), 1, 3 * MS));
        let fin = tcp(C, S, (40000, 80), ACK | FIN, (1003, 5001), b"");
        assert!(burst(&mut f, &fin, 0, 4 * MS));
        // The server's host is gone: the FIN is sent again into silence.
        let mut n = 0;
        for at in [300u64, 700, 1500, 3100] {
            burst(&mut f, &fin, 0, at * MS);
            f.housekeeping(at * MS + 1);
            f.housekeeping(at * MS + 2 * MS);
            n += probes(&mut f).len();
        }
        assert!(n > 0, "never probed");
    }

    /// A close with data, judged a close by a probe while the data waits
    /// for the remote store: the FIN waits behind the data, and the entry
    /// stays until both are out.
    #[test]
    fn a_released_close_waits_behind_its_held_data() {
        let mut f = probing_remote(MemorySink { remote_committed: Some(0), ..Default::default() });
        open(&mut f);
        assert!(burst(&mut f, &tcp(C, S, (40000, 80), ACK | PSH, (1001, 5001), b"q\n"), 0, 2 * MS));
        // Redis is slow: the answer waits; its FIN is held by protection.
        assert!(!burst(
            &mut f,
            &tcp(S, C, (80, 40000), ACK | PSH | FIN, (5001, 1003), b"bye\n"),
            1,
            3 * MS
        ));
        f.housekeeping(4 * MS);
        f.housekeeping(5 * MS);
        let p = probes(&mut f);
        assert_eq!(p.len(), 1);
        let back = tcp(S, PROBE, (80, p[0].sport), SYN | ACK, (9000, p[0].seq + 1), b"");
        assert!(!burst(&mut f, &back, 1, 6 * MS));
        f.housekeeping(7 * MS);
        let mut to_client = Vec::new();
        f.outbox().drain(|port, fr| {
            if port == 0 {
                to_client.push(fr.to_vec())
            }
        });
        // Redis catches up.
        f.sink_mut().remote_committed = None;
        f.housekeeping(8 * MS);
        f.housekeeping(9 * MS);
        f.outbox().drain(|port, fr| {
            if port == 0 {
                to_client.push(fr.to_vec())
            }
        });
        let fin_at = |fr: &Vec<u8>| fr[47] & FIN != 0;
        let payload = |fr: &Vec<u8>| usize::from(u16::from_be_bytes([fr[16], fr[17]])) - 40;
        let data = to_client.iter().position(|fr| payload(fr) > 0 && !fin_at(fr));
        let fin = to_client.iter().position(fin_at);
        assert!(
            matches!((data, fin), (Some(d), Some(c)) if d < c),
            "data {data:?} before the FIN {fin:?} ({} frames, commit_full={})",
            to_client.len(),
            f.counters.protect.commit_full.get()
        );
        assert_eq!(f.counters.protect.commit_full.get(), 0);
    }
}
