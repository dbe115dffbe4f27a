//! The packet pipeline of one worker: parse → connection lookup → the
//! protocol modules (ip → tcp | udp | icmp → ftp) → policy for new connections.
//! The worker runs it a burst at a time (`stage`, `lookup_staged`,
//! `process_staged`); `process` is the same pipeline for one packet.
//! Owned by one worker; allocates nothing and locks nothing after `new`.

use crate::checkpoint::wire::PortionError;
use crate::checkpoint::{CheckpointSink, SinkFull};
use crate::config::ConntrackSection;
use crate::conn::ConnId;
use crate::conn::{ConnKey, ConnTable, Dir, Endpoint, IndexHash, SlotId};
use crate::modules::ftp::{Expectation, Expectations, FtpEvent, FtpPortion};
use crate::modules::icmp::{self, IcmpKind, IcmpPortion};
use crate::modules::ip::IpPortion;
use crate::modules::tcp::{self, TcpChange, TcpState};
use crate::modules::udp::UdpPortion;
use crate::modules::{Conn, L4Portion, Module, NO_FTP};
use crate::parse::{self, proto, Addr, Fragment, FrameKind, IpPacket, TcpHdr, L4};
use crate::policy::{Action, Policy};
use crate::stats::{FwCounters, FwDrop};
use crate::conn::table::TableMemory;
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
        for (i, v) in [
            t.tcp_close,
            t.tcp_syn_sent,
            t.tcp_syn_recv,
            t.tcp_established,
            t.tcp_fin_wait,
            t.tcp_close_wait,
            t.tcp_last_ack,
            t.tcp_time_wait,
            t.tcp_close,
            t.tcp_syn_sent,
        ]
        .iter()
        .enumerate()
        {
            tcp[i] = s(*v);
        }
        Ticks {
            tcp,
            udp: s(t.udp),
            udp_stream: s(t.udp_stream),
            icmp: s(t.icmp),
            generic: s(t.generic),
            fragment: s(t.fragment),
            expectation: s(c.expectation_timeout),
        }
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

pub struct Firewall<S: CheckpointSink, A: TableMemory> {
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
    ckpt: ReemitState,
    /// The worker's own tallies behind `counters.gauges`.
    tally: Tally,
    /// TSC ticks between two copies of the tallies into the gauges (~100 ms).
    gauge_every: u64,
    next_gauge: u64,
    /// Slab position of an operator's flush under way.
    flush_cursor: Option<usize>,
}

/// Packets a burst may stage (DPDK's usual maximum burst; MAX_BURST of the
/// worker's mbuf burst is no larger).
pub const STAGE_MAX: usize = 64;

/// A burst's packets as `Firewall::stage` left them for
/// `Firewall::process_staged`. The worker owns it beside its mbufs, apart
/// from the firewall, so that a packet is tracked from its entry in place
/// while the firewall is borrowed mutably: no copy, no swap.
///
/// An entry holds a slot of the table that staged it, confirmed by key
/// before use: stage, look up and process a burst with one firewall (the
/// worker's loop does, with no `housekeeping` in between).
pub struct StagedBurst {
    staged: Box<[Staged; STAGE_MAX]>,
    /// The general parser's result per packet, apart from `staged`: the
    /// fast path never fills it, and kept inside each entry it doubled the
    /// lines a burst's entries take in L1 (200 bytes an entry against 104).
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

/// What `stage` learned of one packet of a burst. Flat fields rather than
/// an enum carrying the key: the key is then formed in place, not built and
/// copied into a variant (~26 instructions a packet, callgrind).
#[derive(Debug, Clone, Copy, Default)]
struct Staged {
    step: Step,
    /// Meaningful in `Step::Keyed` and `Step::Segment`, as are `hash`,
    /// `slot` and `src_is_lo`; `icmp_kind` in `Step::Keyed` only.
    key: ConnKey,
    hash: IndexHash,
    /// The index's candidate (`ConnTable::candidate`), confirmed when the
    /// packet is tracked. None may since have been created by an earlier
    /// packet of the same burst, so it is looked up again then.
    slot: Option<SlotId>,
    src_is_lo: bool,
    icmp_kind: Option<IcmpKind>,
    /// `Step::Segment` only: the segment as `parse::v4_tcp` read it (its
    /// `IpPacket` in `StagedBurst::pkts` is then not filled).
    seg: Seg,
}

/// What the modules of an existing connection read of a packet besides its
/// key: the TCP header of a TCP packet, and where its payload lies.
#[derive(Debug, Clone, Copy, Default)]
struct Seg {
    tcp: Option<TcpHdr>,
    payload_off: u16,
    payload_len: u16,
}

impl Seg {
    #[inline(always)]
    fn of(p: &IpPacket) -> Seg {
        let tcp = match p.l4 {
            L4::Tcp(h) => Some(h),
            _ => None,
        };
        Seg { tcp, payload_off: p.payload_off, payload_len: p.payload_len }
    }

    fn payload<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        parse::payload_at(frame, self.payload_off, self.payload_len)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Step {
    /// Not staged in this burst: `process_staged` runs `process`.
    #[default]
    Unstaged,
    /// Decided by the parser: a malformed frame (already counted) or non-IP.
    Decided(Verdict),
    /// Parsed, but no connection key of its own (a later fragment, an ICMP
    /// error, stateless ICMP): tracked as `process` would, from the parsed
    /// packet.
    Parsed,
    /// Keyed (`key`, `hash`, `src_is_lo`, `icmp_kind`) and, after
    /// `lookup_staged`, looked up (`slot`).
    Keyed,
    /// An IPv4/TCP segment of the common shape (`parse::v4_tcp`), keyed
    /// (`key`, `hash`, `src_is_lo`) and described by `seg` alone. When it
    /// finds a connection it is tracked from `seg`; when not, the general
    /// path parses it again and decides, as for any new connection.
    Segment,
}

/// Connections by layer-4 portion and TCP state, kept exact on insert, state
/// change and removal; plain integers, since only the worker touches them.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    /// tcp, udp, icmp, other.
    l4: [u64; 4],
    tcp_states: [u64; TcpState::COUNT],
}

impl Tally {
    fn slot(l4: &L4Portion) -> usize {
        match l4 {
            L4Portion::Tcp(_) => 0,
            L4Portion::Udp(_) => 1,
            L4Portion::Icmp(_) => 2,
            L4Portion::Other => 3,
        }
    }
    fn on(&mut self, l4: &L4Portion) {
        self.l4[Self::slot(l4)] += 1;
        if let L4Portion::Tcp(t) = l4 {
            self.tcp_states[t.state as usize] += 1;
        }
    }
    fn off(&mut self, l4: &L4Portion) {
        let i = Self::slot(l4);
        self.l4[i] = self.l4[i].saturating_sub(1);
        if let L4Portion::Tcp(t) = l4 {
            let s = &mut self.tcp_states[t.state as usize];
            *s = s.saturating_sub(1);
        }
    }
    fn moved(&mut self, from: TcpState, to: TcpState) {
        if from != to {
            self.tcp_states[from as usize] = self.tcp_states[from as usize].saturating_sub(1);
            self.tcp_states[to as usize] += 1;
        }
    }
}

/// The background side of checkpointing: deletes the ring had no room for,
/// and a walk over the table that writes dirty portions again (or every
/// portion, when checkpointd asked for a full resync).
struct ReemitState {
    pending_deletes: Vec<ConnId>,
    /// Connections with a dirty portion: `emit` counts each connection's
    /// clean → dirty and dirty → clean transitions, expiry its removal.
    dirty: usize,
    /// Slab position of the walk; None when no walk is under way.
    cursor: Option<usize>,
    resync: bool,
}

/// Slab positions the re-emit walk looks at per poll round.
const REEMIT_BATCH: usize = 64;
/// Deletes remembered while the ring is full.
const PENDING_DELETES: usize = 4096;
/// Slab positions an operator's flush empties per poll round: a flush of a
/// large table is spread over rounds instead of stalling the worker.
const FLUSH_BATCH: usize = 1024;

/// One stored connection's portions, as checkpointd's store holds them.
#[derive(Debug, Clone, Copy)]
pub struct StoredPortions<'a> {
    pub id: u64,
    pub ip: Option<&'a [u8]>,
    /// (module, bytes) of the tcp, udp or icmp portion.
    pub l4: Option<(u8, &'a [u8])>,
    pub ftp: Option<&'a [u8]>,
}

/// Why a stored connection could not be rebuilt (it is skipped and counted).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Portion(#[from] PortionError),
    #[error("stored id {stored:016x} is not the id of the key it carries ({computed}): the record is damaged")]
    IdMismatch { stored: u64, computed: ConnId },
    #[error("a stored layer-4 portion of module {0} is not one this build knows")]
    UnknownModule(u8),
    #[error("the connection table is full (conntrack.capacity): raise it to restore every stored connection")]
    TableFull,
}

/// Encodes `module`'s portion of `conn` and hands it to the sink; on no room
/// marks the portion dirty. Free-standing so callers can lend disjoint fields.
#[allow(clippy::too_many_arguments)]
#[inline]
fn emit<S: CheckpointSink>(
    conn: &mut Conn,
    module: Module,
    ftp: &FtpPool,
    exps: &Expectations,
    sink: &mut S,
    counters: &FwCounters,
    ckpt: &mut ReemitState,
    version: u64,
) -> bool {
    if !conn.stored {
        return true;
    }
    if !S::ENABLED {
        counters.ckpt[module as usize].add(1);
        return true;
    }
    write_portion(conn, module, ftp, exps, sink, counters, ckpt, version)
}

/// `emit`'s work, kept out of line: one in ~7 packets at heavy churn needs
/// it, and inlined into every caller it made the packet path around it
/// compile differently from one build to the next (±30 instructions a delta
/// in `profile_churn`).
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn write_portion<S: CheckpointSink>(
    conn: &mut Conn,
    module: Module,
    ftp: &FtpPool,
    exps: &Expectations,
    sink: &mut S,
    counters: &FwCounters,
    ckpt: &mut ReemitState,
    version: u64,
) -> bool {
    // Not `modules_of(conn) & bit`, nor `conn.l4.module() == Some(module)`:
    // both cost 13–20 more instructions a delta here (callgrind, profile_churn).
    let present = match module {
        Module::Ip => true,
        Module::Tcp => matches!(conn.l4, L4Portion::Tcp(_)),
        Module::Udp => matches!(conn.l4, L4Portion::Udp(_)),
        Module::Icmp => matches!(conn.l4, L4Portion::Icmp(_)),
        Module::Ftp => conn.ftp != NO_FTP,
    };
    if !present {
        return true;
    }
    let c = &*conn;
    let pushed = match (module, &c.l4) {
        // The tcp portion, the one the packet path writes most, as words
        // built in registers.
        (Module::Tcp, L4Portion::Tcp(t)) => {
            sink.portion_words(c.id, module, version, &t.encode_words(), tcp::TcpPortion::WORDS_LEN)
        }
        // The others encoded straight into the sink's slot. Every encoding
        // fits the slot by construction (the portion MAX sizes); were one not
        // to, the delta would be empty, which a restore refuses as truncated.
        _ => sink.portion_with(c.id, module, version, |buf: &mut [u8]| {
            let len = match (module, &c.l4) {
                (Module::Ip, _) => c.ip.encode(&c.key, buf),
                (Module::Udp, L4Portion::Udp(u)) => u.encode(buf),
                (Module::Icmp, L4Portion::Icmp(i)) => i.encode(buf),
                (Module::Ftp, _) => {
                    let mut x =
                        [Expectation::default(); crate::modules::ftp::CHECKPOINT_EXPECTATIONS];
                    let mut n = 0;
                    for e in exps.of_master(c.id).take(x.len()) {
                        x[n] = *e;
                        n += 1;
                    }
                    ftp.slots[c.ftp as usize].encode(&x[..n], buf)
                }
                _ => Ok(0),
            };
            len.unwrap_or(0)
        }),
    };
    let dirty = &mut ckpt.dirty;
    let bit = 1u8 << module as u8;
    match pushed {
        Ok(()) => {
            counters.ckpt[module as usize].add(1);
            if conn.dirty == bit {
                *dirty -= 1;
            }
            conn.dirty &= !bit;
            true
        }
        Err(SinkFull) => {
            counters.ckpt_ring_full.add(1);
            if conn.dirty == 0 {
                *dirty += 1;
            }
            conn.dirty |= bit;
            false
        }
    }
}

/// Writes the portions of `conn` whose module bits are in `want`; returns
/// how many the sink took. Nothing while the connection is not stored.
#[allow(clippy::too_many_arguments)]
fn emit_modules<S: CheckpointSink>(
    conn: &mut Conn,
    want: u8,
    ftp: &FtpPool,
    exps: &Expectations,
    sink: &mut S,
    counters: &FwCounters,
    ckpt: &mut ReemitState,
    version: u64,
) -> u64 {
    if !conn.stored {
        return 0;
    }
    let mut n = 0;
    for m in Module::ALL {
        if want & (1 << m as u8) != 0 && emit(conn, m, ftp, exps, sink, counters, ckpt, version) {
            n += 1;
        }
    }
    n
}

/// Every module that holds a portion of `conn`.
fn modules_of(conn: &Conn) -> u8 {
    let mut m = 1u8 << Module::Ip as u8;
    if let Some(l4) = conn.l4.module() {
        m |= 1 << l4 as u8;
    }
    if conn.ftp != NO_FTP {
        m |= 1 << Module::Ftp as u8;
    }
    m
}

impl<S: CheckpointSink, A: TableMemory> Firewall<S, A> {
    pub fn new(
        c: &ConntrackSection,
        policy: Arc<Policy>,
        port_bridge: Vec<u16>,
        tsc_hz: u64,
        alloc: A,
        sink: S,
        counters: Arc<FwCounters>,
    ) -> Self {
        let ftp_n = if c.ftp { c.ftp_sessions } else { 0 };
        Firewall {
            table: ConnTable::new_in(c.capacity, alloc),
            policy,
            port_bridge,
            ticks: Ticks::new(c, tsc_hz),
            sweep_batch: c.sweep_batch as usize,
            ftp_enabled: c.ftp,
            ftp_ports: c.ftp_ports.clone(),
            ftp: FtpPool {
                slots: vec![FtpPortion::default(); ftp_n as usize].into_boxed_slice(),
                free: (0..ftp_n).rev().collect(),
            },
            expectations: Expectations::new(c.expectations as usize),
            frags: vec![FragEntry::default(); c.fragments.max(1) as usize].into_boxed_slice(),
            counters,
            sink,
            ckpt: ReemitState {
                pending_deletes: Vec::with_capacity(PENDING_DELETES),
                dirty: 0,
                cursor: None,
                resync: false,
            },
            tally: Tally::default(),
            gauge_every: tsc_hz / 10,
            next_gauge: 0,
            flush_cursor: None,
        }
    }

    /// Writes `module`'s portion of the connection in `slot` to the sink.
    #[inline]
    fn emit(&mut self, slot: crate::conn::SlotId, module: Module, now: u64) {
        let conn = self.table.get_mut(slot);
        emit(
            conn,
            module,
            &self.ftp,
            &self.expectations,
            &mut self.sink,
            &self.counters,
            &mut self.ckpt,
            now,
        );
    }

    /// Writes every portion the connection in `slot` has.
    fn emit_all(&mut self, slot: crate::conn::SlotId, now: u64) {
        let conn = self.table.get_mut(slot);
        let present = modules_of(conn);
        emit_modules(
            conn,
            present,
            &self.ftp,
            &self.expectations,
            &mut self.sink,
            &self.counters,
            &mut self.ckpt,
            now,
        );
    }

    fn emit_delete(
        sink: &mut S,
        pending: &mut Vec<ConnId>,
        counters: &FwCounters,
        id: ConnId,
        now: u64,
    ) {
        match sink.deleted(id, now) {
            Ok(()) => counters.ckpt_deletes.add(1),
            Err(SinkFull) => {
                counters.ckpt_ring_full.add(1);
                if pending.len() < pending.capacity() {
                    pending.push(id);
                } else {
                    counters.ckpt_deletes_lost.add(1);
                }
            }
        }
    }

    /// The checkpoint side of housekeeping: a resync checkpointd asked for,
    /// deletes and dirty portions the ring had no room for earlier.
    fn reemit(&mut self, now: u64) {
        if self.sink.take_resync() {
            self.counters.ckpt_resyncs.add(1);
            self.ckpt.resync = true;
            self.ckpt.cursor = Some(0);
        }
        while let Some(&id) = self.ckpt.pending_deletes.last() {
            if self.sink.deleted(id, now).is_err() {
                return;
            }
            self.ckpt.pending_deletes.pop();
            self.counters.ckpt_deletes.add(1);
        }
        if self.ckpt.cursor.is_none() && self.ckpt.dirty != 0 {
            self.ckpt.cursor = Some(0);
        }
        let Some(mut i) = self.ckpt.cursor else { return };
        let cap = self.table.capacity();
        let end = (i + REEMIT_BATCH).min(cap);
        while i < end {
            // Room for a whole connection (ip, l4, ftp) before touching it.
            if !self.sink.has_room(Module::COUNT as u32) {
                break;
            }
            if let Some(conn) = self.table.at_mut(i) {
                let want = if self.ckpt.resync { modules_of(conn) } else { conn.dirty };
                let n = emit_modules(
                    conn,
                    want,
                    &self.ftp,
                    &self.expectations,
                    &mut self.sink,
                    &self.counters,
                    &mut self.ckpt,
                    now,
                );
                self.counters.ckpt_reemitted.add(n);
            }
            i += 1;
        }
        if i >= cap {
            // A full walk: what is still dirty failed again and starts a new one.
            self.ckpt.cursor = None;
            self.ckpt.resync = false;
        } else {
            self.ckpt.cursor = Some(i);
        }
    }

    /// Rebuilds one connection from its stored portions (before the ports
    /// start). The id must be the id of the key the ip portion carries.
    pub fn restore(
        &mut self,
        id: u64,
        ip: &[u8],
        l4: Option<(u8, &[u8])>,
        ftp: Option<&[u8]>,
        now: u64,
    ) -> Result<(), RestoreError> {
        let mut refused = None;
        self.restore_many(
            std::iter::once(StoredPortions { id, ip: Some(ip), l4, ftp }),
            now,
            |_, e| refused = Some(e),
        );
        refused.map_or(Ok(()), Err)
    }

    /// Rebuilds connections from their stored portions (before the ports
    /// start), each module restoring its own portion; a connection that
    /// cannot be rebuilt is counted (`restore_skipped`), handed to `skipped`,
    /// and the rest carry on. Returns how many were restored.
    pub fn restore_many<'a>(
        &mut self,
        stored: impl IntoIterator<Item = StoredPortions<'a>>,
        now: u64,
        mut skipped: impl FnMut(u64, RestoreError),
    ) -> u64 {
        let Firewall { table, ticks, ftp, expectations, counters, tally, .. } = self;
        // No duplicate check: the id is the key's hash and checkpointd's store
        // holds each id once (its rebuild drops duplicates), so a probe per
        // connection would only double the cache misses of a 1M restore.
        let mut bulk = table.bulk_insert();
        let mut restored = 0;
        for s in stored {
            let placed =
                Self::rebuild(&s, ticks, ftp, expectations, counters, now).and_then(|conn| {
                    match bulk.push(conn) {
                        Ok(_) => Ok(conn),
                        Err(crate::conn::table::TableFull) => {
                            if conn.ftp != NO_FTP {
                                ftp.free.push(conn.ftp);
                            }
                            Err(RestoreError::TableFull)
                        }
                    }
                });
            match placed {
                Ok(conn) => {
                    tally.on(&conn.l4);
                    restored += 1;
                }
                Err(e) => {
                    counters.restore_skipped.add(1);
                    skipped(s.id, e);
                }
            }
        }
        drop(bulk);
        counters.restored.add(restored);
        restored
    }

    /// One connection from its portions, its FTP session (if any) placed in
    /// the pool and its expectations re-armed.
    fn rebuild(
        s: &StoredPortions<'_>,
        ticks: &Ticks,
        ftp: &mut FtpPool,
        expectations: &mut Expectations,
        counters: &FwCounters,
        now: u64,
    ) -> Result<Conn, RestoreError> {
        let ip =
            s.ip.ok_or(RestoreError::Portion(PortionError::Truncated { module: "ip", len: 0 }))?;
        let (key, ipp) = IpPortion::decode(ip)?;
        let computed = key.id();
        if computed.0 != s.id {
            return Err(RestoreError::IdMismatch { stored: s.id, computed });
        }
        let l4 = match s.l4 {
            None => L4Portion::Other,
            Some((m, b)) if m == Module::Tcp as u8 => L4Portion::Tcp(tcp::TcpPortion::decode(b)?),
            Some((m, b)) if m == Module::Udp as u8 => L4Portion::Udp(UdpPortion::decode(b)?),
            Some((m, b)) if m == Module::Icmp as u8 => L4Portion::Icmp(IcmpPortion::decode(b)?),
            Some((m, _)) => return Err(RestoreError::UnknownModule(m)),
        };
        // A restored connection gets a fresh timeout for its state: the old
        // process's last-seen time is not checkpointed (it changes per packet).
        let deadline = now + ticks.of(&l4);
        let mut conn =
            Conn { key, id: computed, deadline, ip: ipp, l4, ftp: NO_FTP, dirty: 0, stored: true };
        if let Some(b) = s.ftp {
            let (portion, exps, n) = FtpPortion::decode(b, computed)?;
            match ftp.free.pop() {
                Some(i) => {
                    ftp.slots[i as usize] = portion;
                    conn.ftp = i;
                    for e in &exps[..n] {
                        if e.deadline > now && !expectations.add(*e, now) {
                            counters.expectations_full.add(1);
                        }
                    }
                }
                None => counters.ftp_no_session.add(1),
            }
        }
        Ok(conn)
    }

    pub fn table(&self) -> &ConnTable<Conn, A> {
        &self.table
    }

    /// Expires what timed out, answers a flush request, refreshes the gauges;
    /// call once per poll round.
    #[inline]
    pub fn housekeeping(&mut self, now: u64) {
        let (counters, sink, ftp, ckpt, tally) =
            (&self.counters, &mut self.sink, &mut self.ftp, &mut self.ckpt, &mut self.tally);
        self.table.sweep(now, self.sweep_batch, |_, conn| {
            if let Some(m) = conn.l4.module() {
                counters.expired[m as usize].add(1);
            }
            Self::forget(sink, ftp, ckpt, tally, counters, &conn, now);
        });
        self.counters.live.set(self.table.len() as u64);
        if !self.expectations.is_empty() {
            self.expectations.expire(now);
        }
        // Relaxed: the flag carries no data; the worker only has to see it soon.
        // Taken (swapped to false) when a walk starts, so that a request made
        // during a walk starts another one instead of being absorbed by it;
        // the plain load first keeps the locked swap off the common path.
        let flush = &self.counters.requests.flush;
        if self.flush_cursor.is_none()
            && flush.load(std::sync::atomic::Ordering::Relaxed)
            && flush.swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            self.flush_cursor = Some(0);
        }
        if self.flush_cursor.is_some() {
            self.flush_step(now);
        }
        self.reemit(now);
        self.sink.publish();
        if now >= self.next_gauge {
            self.next_gauge = now.saturating_add(self.gauge_every);
            self.publish_gauges();
        }
    }

    /// What every removal of a connection does besides the table: its FTP
    /// portion goes back to the pool, its tallies drop, and checkpointd is
    /// told with a delete (kept for later when the ring is full).
    fn forget(
        sink: &mut S,
        ftp: &mut FtpPool,
        ckpt: &mut ReemitState,
        tally: &mut Tally,
        counters: &FwCounters,
        conn: &Conn,
        now: u64,
    ) {
        if conn.ftp != NO_FTP {
            ftp.free.push(conn.ftp);
        }
        if conn.dirty != 0 {
            ckpt.dirty = ckpt.dirty.saturating_sub(1);
        }
        tally.off(&conn.l4);
        if conn.stored {
            Self::emit_delete(sink, &mut ckpt.pending_deletes, counters, conn.id, now);
        }
    }

    /// Copies the tallies into the gauges other threads read (a few dozen
    /// Relaxed stores, about every 100 ms).
    fn publish_gauges(&self) {
        let g = &self.counters.gauges;
        for (c, v) in [&g.tcp, &g.udp, &g.icmp, &g.other].into_iter().zip(self.tally.l4) {
            c.set(v);
        }
        for (c, v) in g.tcp_states.iter().zip(self.tally.tcp_states) {
            c.set(v);
        }
        g.ftp.set((self.ftp.slots.len() - self.ftp.free.len()) as u64);
        g.expectations.set(self.expectations.len() as u64);
        self.counters.live.set(self.table.len() as u64);
        g.refreshes.add(1);
    }

    /// One round of an operator's flush: removes the connections of the next
    /// `FLUSH_BATCH` slab positions, each with a checkpoint delete so that
    /// checkpointd's store follows. Waits (next round) while the ring is full
    /// rather than lose deletes.
    fn flush_step(&mut self, now: u64) {
        let mut i = self.flush_cursor.unwrap_or(0);
        let cap = self.table.capacity();
        let end = (i + FLUSH_BATCH).min(cap);
        while i < end {
            if self.table.at_mut(i).is_some() {
                if !self.sink.has_room(1) {
                    break;
                }
                if let Some(conn) = self.table.remove(crate::conn::SlotId(i as u32)) {
                    self.counters.flushed.add(1);
                    Self::forget(
                        &mut self.sink,
                        &mut self.ftp,
                        &mut self.ckpt,
                        &mut self.tally,
                        &self.counters,
                        &conn,
                        now,
                    );
                }
            }
            i += 1;
        }
        if i < cap {
            self.flush_cursor = Some(i);
            return;
        }
        self.flush_cursor = None;
        // The data connections the flushed control connections expected.
        self.expectations.expire(u64::MAX);
        self.counters.live.set(self.table.len() as u64);
        self.publish_gauges();
    }

    /// The verdict on one frame received on config port `port`.
    #[inline]
    pub fn process(&mut self, frame: &[u8], port: usize, now: u64) -> Verdict {
        let mut p = IpPacket::default();
        match Self::parse_step(&self.counters, frame, &mut p) {
            Step::Decided(v) => v,
            _ => self.track_parsed(frame, &p, port, now),
        }
    }

    /// Parses `frame` into `p`: `Step::Parsed` for an IP packet, else the
    /// verdict parsing decides (non-IP passes; a malformed frame is counted
    /// and dropped).
    #[inline(always)]
    fn parse_step(counters: &FwCounters, frame: &[u8], p: &mut IpPacket) -> Step {
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
    fn track_parsed(&mut self, frame: &[u8], p: &IpPacket, port: usize, now: u64) -> Verdict {
        if p.frag == Fragment::Later {
            return self.later_fragment(p, now);
        }
        let v = self.track(frame, p, port, now);
        self.fragment_seen(p, v, now)
    }

    /// `v`, after remembering it for the later fragments when `p` is a first
    /// fragment.
    #[inline(always)]
    fn fragment_seen(&mut self, p: &IpPacket, v: Verdict, now: u64) -> Verdict {
        if p.frag == Fragment::First {
            self.remember_fragment(p, v == Verdict::Forward, now);
        }
        v
    }

    /// A burst in three passes over a `StagedBurst`: `stage(.., i, ..)`
    /// parses packet `i` and forms its key, `lookup_staged(.., n)` looks the
    /// burst's connections up in the index and starts fetching their records,
    /// and `process_staged(.., i, ..)` tracks each packet. The lookups then
    /// run back to back where the CPU overlaps their misses, instead of one
    /// per packet between long stretches of parsing and tracking.
    ///
    /// A slot found by `lookup_staged` is a candidate, confirmed by its key
    /// when the packet is tracked (`ConnTable::holds`) and looked up again
    /// when not: whatever changed the table in between, a packet reaches its
    /// own connection.
    #[inline]
    pub fn stage(&self, burst: &mut StagedBurst, i: usize, frame: &[u8], port: usize) {
        if i >= STAGE_MAX {
            return;
        }
        let (st, pkt) = (&mut burst.staged[i], &mut burst.pkts[i]);
        let zone = self.port_bridge.get(port).copied().unwrap_or(0);
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
            st.key = key;
            st.src_is_lo = src_is_lo;
            st.slot = None;
            st.step = Step::Segment;
            return;
        }
        st.step = Self::parse_step(&self.counters, frame, pkt);
        if st.step != Step::Parsed || pkt.frag == Fragment::Later {
            return;
        }
        if let Some((key, src_is_lo, icmp_kind)) = Self::key_of(pkt, zone) {
            st.key = key;
            st.hash = self.table.hash_of(&st.key);
            st.src_is_lo = src_is_lo;
            st.icmp_kind = icmp_kind;
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

    /// Second half: the verdict on packet `i` of the burst, which `stage`
    /// saw as `frame`. A packet that was not staged is processed whole.
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
            if self.table.holds(slot, &st.key) {
                return self.track_existing(slot, st.src_is_lo, None, frame, &st.seg, now);
            }
        }
        match st.step {
            Step::Unstaged => self.process(frame, port, now),
            Step::Decided(v) => v,
            Step::Parsed => self.track_parsed(frame, p, port, now),
            Step::Keyed => {
                let v = match self.found(st) {
                    Some(slot) => self.track_existing(
                        slot,
                        st.src_is_lo,
                        st.icmp_kind,
                        frame,
                        &Seg::of(p),
                        now,
                    ),
                    None => self.new_conn(st.key, st.src_is_lo, frame, p, port, st.icmp_kind, now),
                };
                self.fragment_seen(p, v, now)
            }
            // No candidate, or another key's (the branch above took the
            // confirmed ones).
            Step::Segment => match self.found(st) {
                Some(slot) => self.track_existing(slot, st.src_is_lo, None, frame, &st.seg, now),
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
            .filter(|&s| self.table.holds(s, &st.key))
            .or_else(|| self.table.lookup(&st.key, st.hash))
    }

    /// The canonical key of a packet that has one of its own: TCP, UDP, ICMP
    /// echo, and other protocols by address. None for ICMP errors and
    /// stateless ICMP, which `track` decides without a connection of theirs.
    #[inline(always)]
    fn key_of(p: &IpPacket, zone: u16) -> Option<(ConnKey, bool, Option<IcmpKind>)> {
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
        Some((key, src_is_lo, icmp_kind))
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
        self.frags[i] = FragEntry {
            src: p.src,
            dst: p.dst,
            id: p.frag_id,
            proto: p.proto,
            forward,
            deadline: now + self.ticks.fragment,
        };
    }

    fn later_fragment(&mut self, p: &IpPacket, now: u64) -> Verdict {
        let e = self.frags[self.frag_slot(&p.src, &p.dst, p.frag_id, p.proto)];
        if e.deadline > now
            && e.id == p.frag_id
            && e.proto == p.proto
            && e.src == p.src
            && e.dst == p.dst
        {
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

    /// A segment the TCP module refused, counted by its reason.
    fn invalid_tcp(&self, why: tcp::TcpInvalid) -> Verdict {
        self.counters.tcp_invalid[why as usize].add(1);
        Verdict::Drop
    }

    fn track(&mut self, frame: &[u8], p: &IpPacket, port: usize, now: u64) -> Verdict {
        let zone = self.port_bridge.get(port).copied().unwrap_or(0);
        let Some((key, src_is_lo, icmp_kind)) = Self::key_of(p, zone) else {
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
        match self.table.lookup(&key, self.table.hash_of(&key)) {
            Some(slot) => self.track_existing(slot, src_is_lo, icmp_kind, frame, &Seg::of(p), now),
            None => self.new_conn(key, src_is_lo, frame, p, port, icmp_kind, now),
        }
    }

    /// A packet of the connection in `slot`, through its modules.
    #[inline(always)]
    fn track_existing(
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
        // through a jump table over the portion's kind; its arm knows the
        // timeout without matching the portion again.
        let timeout = if let (L4Portion::Tcp(t), Some(h)) = (&mut conn.l4, &seg.tcp) {
            if tcp::is_plain_ack(t, h) {
                // ESTABLISHED stays so: no state to tally, no close to
                // count, and the timeout known.
                match tcp::track_plain_ack(t, dir, h, u32::from(seg.payload_len)) {
                    Ok(TcpChange::None) => {}
                    Ok(_) => changed = Some(Module::Tcp),
                    Err(why) => return self.invalid_tcp(why),
                }
                self.ticks.tcp[TcpState::Established as usize]
            } else {
                let old = t.state;
                let r = tcp::track(t, dir, h, u32::from(seg.payload_len));
                self.tally.moved(old, t.state);
                match r {
                    Ok(TcpChange::None) => {}
                    Ok(TcpChange::Timeout { from }) => {
                        // A restore into `from` accepts what the new
                        // state accepts, for `from`'s timeout: worth a
                        // delta only when that is the shorter one.
                        if self.ticks.tcp[t.state as usize] > self.ticks.tcp[from as usize] {
                            t.checkpointed();
                            changed = Some(Module::Tcp);
                        }
                    }
                    Ok(_) => {
                        changed = Some(Module::Tcp);
                        if t.state == TcpState::Close && old != TcpState::Close {
                            self.counters.closed[Module::Tcp as usize].add(1);
                        }
                    }
                    Err(why) => return self.invalid_tcp(why),
                }
                self.ticks.tcp[t.state as usize]
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
        let mut store_now = false;
        if let Some(m) = changed {
            if conn.stored {
                emit(
                    conn,
                    m,
                    &self.ftp,
                    &self.expectations,
                    &mut self.sink,
                    &self.counters,
                    &mut self.ckpt,
                    now,
                );
            } else if let L4Portion::Tcp(t) = &conn.l4 {
                // The SYN answered (or a simultaneous open): from now on the
                // client may treat the connection as open. Not one reset
                // before it was ever stored: nothing to keep.
                store_now = t.seen_reply && t.state != TcpState::Close;
            }
        }
        let has_ftp = conn.ftp != NO_FTP;
        if store_now {
            self.table.get_mut(slot).stored = true;
            self.emit_all(slot, now);
        }
        if has_ftp {
            if let Some(h) = seg.tcp {
                self.ftp_segment(slot, dir, h.seq, seg.payload(frame), now);
            }
        }
        Verdict::Forward
    }

    #[allow(clippy::too_many_arguments)]
    fn new_conn(
        &mut self,
        key: ConnKey,
        src_is_lo: bool,
        frame: &[u8],
        p: &IpPacket,
        port: usize,
        icmp_kind: Option<IcmpKind>,
        now: u64,
    ) -> Verdict {
        let (l4, module) = match p.l4 {
            L4::Tcp(h) => match tcp::new_conn(&h, p.payload_len as u32) {
                Ok(t) => (L4Portion::Tcp(t), Some(Module::Tcp)),
                Err(why) => return self.invalid_tcp(why),
            },
            L4::Udp { .. } => (L4Portion::Udp(UdpPortion::default()), Some(Module::Udp)),
            L4::Icmp(_) => match icmp_kind {
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
        let related = matches!(p.l4, L4::Tcp(_))
            && self
                .expectations
                .take(p.family, key.zone, key.vlan, &p.src, &p.dst, dport, now)
                .is_some();
        if related {
            self.counters.related.add(1);
        } else if self.policy.decide(port, p).0 == Action::Drop {
            return self.drop_because(FwDrop::Policy);
        }
        // A TCP connection goes to the checkpoint when its SYN is answered
        // (`track_existing`), not now. Lost in a restart before that, it
        // costs the client one SYN retransmission: the server's answer is
        // dropped as new, the retransmitted SYN opens it again. Once answered,
        // the client may consider it open, and it must survive. So a SYN
        // flood's half-open connections write nothing to the ring. Not a
        // related connection: it used up its expectation, which the control
        // connection's next delta no longer carries, so a retransmitted SYN
        // would find nothing to admit it.
        let stored = !matches!(l4, L4Portion::Tcp(_)) || related;
        let mut conn = Conn {
            key,
            id: key.id(),
            deadline: 0,
            ip: IpPortion::new(src_is_lo, now),
            l4,
            ftp: NO_FTP,
            dirty: 0,
            stored,
        };
        conn.ip.count(Dir::Original, frame.len());
        conn.deadline = now + self.ticks.of(&conn.l4);
        let wants_ftp =
            self.ftp_enabled && matches!(p.l4, L4::Tcp(_)) && self.ftp_ports.contains(&dport);
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
            Ok(slot) => {
                self.tally.on(&conn.l4);
                self.counters.new[module.unwrap_or(Module::Ip) as usize].add(1);
                if stored {
                    self.emit_all(slot, now);
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

    /// Feeds a control-connection segment to its ftp portion. The portion is
    /// checkpointed after every segment with payload: its unfinished line and
    /// stream position change then, and control channels carry little.
    fn ftp_segment(
        &mut self,
        slot: crate::conn::SlotId,
        dir: Dir,
        seq: u32,
        payload: &[u8],
        now: u64,
    ) {
        if payload.is_empty() {
            return;
        }
        self.ftp_feed(slot, dir, seq, payload, now);
        self.emit(slot, Module::Ftp, now);
    }

    fn ftp_feed(
        &mut self,
        slot: crate::conn::SlotId,
        dir: Dir,
        seq: u32,
        payload: &[u8],
        now: u64,
    ) {
        let conn = *self.table.get(slot);
        let portion = &mut self.ftp.slots[conn.ftp as usize];
        let r = portion.feed(dir, seq, payload);
        if r.gap {
            self.counters.ftp_gaps.add(1);
        }
        let Some(ev) = r.event else { return };
        // The two ends of the control connection, as the client and server.
        let (client, server) = if conn.ip.orig_src_is_lo {
            (conn.key.lo_addr, conn.key.hi_addr)
        } else {
            (conn.key.hi_addr, conn.key.lo_addr)
        };
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
        let e = Expectation {
            family: conn.key.family,
            zone: conn.key.zone,
            vlan: conn.key.vlan,
            src,
            dst,
            dport: port,
            master: conn.id,
            deadline: now + self.ticks.expectation,
            live: true,
        };
        if self.expectations.add(e, now) {
            self.counters.ftp_expectations.add(1);
            portion.expectations_made += 1;
        } else {
            self.counters.expectations_full.add(1);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::MemorySink;
    use crate::frames::{tcp, tcp_flags::*, udp};
    use allocator_api2::alloc::Global;

    const C: [u8; 4] = [10, 99, 0, 1];
    const S: [u8; 4] = [10, 99, 0, 2];
    const HZ: u64 = 1_000_000_000;

    fn fw(sink: MemorySink) -> Firewall<MemorySink, Global> {
        let c = ConntrackSection { capacity: 64, ..Default::default() };
        let counters = Arc::new(FwCounters::default());
        Firewall::new(&c, Arc::new(Policy::default()), vec![0, 0], HZ, Global, sink, counters)
    }

    /// Handshake and some data on one connection; returns the next (client seq, server seq).
    fn open(f: &mut Firewall<MemorySink, Global>, sport: u16) -> (u32, u32) {
        let t = 1;
        assert_eq!(f.process(&tcp(C, S, sport, 80, SYN, 1000, 0, b""), 0, t), Verdict::Forward);
        assert_eq!(
            f.process(&tcp(S, C, 80, sport, SYN | ACK, 5000, 1001, b""), 1, t),
            Verdict::Forward
        );
        assert_eq!(f.process(&tcp(C, S, sport, 80, ACK, 1001, 5001, b""), 0, t), Verdict::Forward);
        assert_eq!(
            f.process(&tcp(C, S, sport, 80, ACK | PSH, 1001, 5001, &[7; 100]), 0, t),
            Verdict::Forward
        );
        (1101, 5001)
    }

    fn restore_all(from: &MemorySink, into: &mut Firewall<MemorySink, Global>) -> usize {
        let ids: std::collections::BTreeSet<u64> = from.store.keys().map(|k| k.0).collect();
        for id in &ids {
            let get = |m: Module| from.store.get(&(*id, m as u8)).map(|(_, b)| b.as_slice());
            let l4 = [Module::Tcp, Module::Udp, Module::Icmp]
                .into_iter()
                .find_map(|m| get(m).map(|b| (m as u8, b)));
            into.restore(*id, get(Module::Ip).unwrap(), l4, get(Module::Ftp), 10).unwrap();
        }
        ids.len()
    }

    #[test]
    fn a_restored_table_carries_established_flows_and_an_empty_one_does_not() {
        let mut a = fw(MemorySink::default());
        let (cs, ss) = open(&mut a, 40000);
        assert_eq!(a.process(&udp(C, S, 5353, 53, b"q"), 0, 1), Verdict::Forward);
        assert_eq!(a.process(&udp(S, C, 53, 5353, b"r"), 1, 1), Verdict::Forward);
        // What a dead dataplane left in the store, rebuilt in a new one.
        let mut b = fw(MemorySink::default());
        assert_eq!(restore_all(&a.sink, &mut b), 2);
        assert_eq!(b.table().len(), 2);
        let mid = tcp(C, S, 40000, 80, ACK | PSH, cs, ss, &[8; 100]);
        let reply = tcp(S, C, 80, 40000, ACK, ss, cs + 100, b"");
        assert_eq!(b.process(&mid, 0, 20), Verdict::Forward);
        assert_eq!(b.process(&reply, 1, 20), Verdict::Forward);
        assert_eq!(b.counters.tcp_invalid.iter().map(|c| c.get()).sum::<u64>(), 0);
        // Control: without the restore the strict tracker refuses mid-stream packets.
        let mut empty = fw(MemorySink::default());
        assert_eq!(empty.process(&mid, 0, 20), Verdict::Drop);
        assert_eq!(empty.counters.tcp_invalid[tcp::TcpInvalid::NewNotSyn as usize].get(), 1);
    }

    #[test]
    fn the_ack_of_a_fin_writes_no_delta_unless_close_wait_outlives_fin_wait() {
        let stored_state = |f: &Firewall<MemorySink, Global>| {
            let (_, conn) = f.table().iter().next().unwrap();
            tcp::TcpPortion::decode(&f.sink.store[&(conn.id.0, Module::Tcp as u8)].1).unwrap().state
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
                Arc::new(FwCounters::default()),
            );
            let (cs, ss) = open(&mut a, 40100);
            assert_eq!(
                a.process(&tcp(C, S, 40100, 80, FIN | ACK, cs, ss, b""), 0, 2),
                Verdict::Forward
            );
            let after_fin = tcp_deltas(&a);
            assert_eq!(
                a.process(&tcp(S, C, 80, 40100, ACK, ss, cs + 1, b""), 1, 3),
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
                Arc::new(FwCounters::default()),
            );
            assert_eq!(restore_all(&a.sink, &mut b), 1);
            assert_eq!(
                b.process(&tcp(S, C, 80, 40100, FIN | ACK, ss, cs + 1, b""), 1, 20),
                Verdict::Forward
            );
            assert_eq!(
                b.process(&tcp(C, S, 40100, 80, ACK, cs + 1, ss + 1, b""), 0, 20),
                Verdict::Forward
            );
            assert_eq!(b.counters.tcp_invalid.iter().map(|c| c.get()).sum::<u64>(), 0);
            let L4Portion::Tcp(t) = b.table().iter().next().unwrap().1.l4 else { panic!() };
            assert_eq!(t.state, tcp::TcpState::TimeWait);
        }
    }

    #[test]
    fn a_full_ring_marks_portions_dirty_and_the_sweep_writes_them_later() {
        let mut a = fw(MemorySink { room: Some(1), ..Default::default() });
        open(&mut a, 40001);
        assert!(a.counters.ckpt_ring_full.get() > 0);
        assert!(!a
            .sink
            .store
            .contains_key(&(a.table().iter().next().unwrap().1.id.0, Module::Tcp as u8)));
        a.sink.room = None;
        a.housekeeping(2);
        let conn = *a.table().iter().next().unwrap().1;
        assert_eq!(conn.dirty, 0);
        assert!(a.counters.ckpt_reemitted.get() > 0);
        let (_, tcp_bytes) = &a.sink.store[&(conn.id.0, Module::Tcp as u8)];
        let L4Portion::Tcp(live) = conn.l4 else { panic!() };
        assert_eq!(
            tcp::TcpPortion::decode(tcp_bytes).unwrap().state,
            live.state,
            "the store converged to the live state"
        );
    }

    #[test]
    fn a_resync_writes_every_connection_again() {
        let mut a = fw(MemorySink::default());
        open(&mut a, 40002);
        open(&mut a, 40003);
        a.sink.store.clear();
        a.sink.resync = true;
        a.housekeeping(2);
        assert_eq!(a.sink.store.len(), 4, "ip and tcp of both connections");
        assert_eq!(a.counters.ckpt_resyncs.get(), 1);
    }

    #[test]
    fn a_tcp_connection_is_stored_once_its_syn_is_answered() {
        let syn = tcp(C, S, 40200, 80, SYN, 1000, 0, b"");
        let syn_ack = tcp(S, C, 80, 40200, SYN | ACK, 5000, 1001, b"");
        let mut a = fw(MemorySink::default());
        assert_eq!(a.process(&syn, 0, 1), Verdict::Forward);
        assert!(a.sink.store.is_empty(), "a SYN alone writes nothing");
        // Killed here: the new dataplane drops the server's answer, and the
        // client's retransmitted SYN opens the connection again.
        let mut b = fw(MemorySink::default());
        assert_eq!(restore_all(&a.sink, &mut b), 0);
        assert_eq!(b.process(&syn_ack, 1, 20), Verdict::Drop);
        assert_eq!(b.process(&syn, 0, 21), Verdict::Forward);
        assert_eq!(b.process(&syn_ack, 1, 21), Verdict::Forward);
        assert_eq!(b.process(&tcp(C, S, 40200, 80, ACK, 1001, 5001, b""), 0, 21), Verdict::Forward);
        // Not killed: the answer stores ip and tcp, in the state it made.
        assert_eq!(a.process(&syn_ack, 1, 2), Verdict::Forward);
        let id = a.table().iter().next().unwrap().1.id.0;
        assert_eq!(
            a.sink.store.keys().copied().collect::<Vec<_>>(),
            vec![(id, Module::Ip as u8), (id, Module::Tcp as u8)]
        );
        assert_eq!(
            tcp::TcpPortion::decode(&a.sink.store[&(id, Module::Tcp as u8)].1).unwrap().state,
            tcp::TcpState::SynRecv
        );
    }

    #[test]
    fn a_related_connection_is_stored_at_its_syn() {
        let mut a = fw(MemorySink::default());
        for (p, port) in [
            (tcp(C, S, 40300, 21, SYN, 1000, 0, b""), 0),
            (tcp(S, C, 21, 40300, SYN | ACK, 5000, 1001, b""), 1),
            (tcp(C, S, 40300, 21, ACK, 1001, 5001, b""), 0),
            (tcp(C, S, 40300, 21, ACK | PSH, 1001, 5001, b"PORT 10,99,0,1,156,64\r\n"), 0),
        ] {
            assert_eq!(a.process(&p, port, 1), Verdict::Forward);
        }
        // Active mode: the server opens the data connection to the port the
        // client named, admitted by the expectation that this SYN uses up.
        assert_eq!(a.process(&tcp(S, C, 20, 40000, SYN, 9000, 0, b""), 1, 2), Verdict::Forward);
        assert_eq!(a.counters.related.get(), 1);
        let data = a
            .table()
            .iter()
            .map(|(_, c)| *c)
            .find(|c| c.key.lo_port == 20 || c.key.hi_port == 20)
            .unwrap();
        assert!(
            a.sink.store.contains_key(&(data.id.0, Module::Ip as u8))
                && a.sink.store.contains_key(&(data.id.0, Module::Tcp as u8)),
            "stored before its answer: its expectation is gone"
        );
        let mut b = fw(MemorySink::default());
        assert_eq!(restore_all(&a.sink, &mut b), 2);
    }

    #[test]
    fn a_reopening_syn_is_stored_once_answered() {
        let mut a = fw(MemorySink::default());
        let (cs, ss) = open(&mut a, 40203);
        for (p, port) in [
            (tcp(C, S, 40203, 80, FIN | ACK, cs, ss, b""), 0),
            (tcp(S, C, 80, 40203, FIN | ACK, ss, cs + 1, b""), 1),
            (tcp(C, S, 40203, 80, ACK, cs + 1, ss + 1, b""), 0),
        ] {
            assert_eq!(a.process(&p, port, 2), Verdict::Forward);
        }
        let id = a.table().iter().next().unwrap().1.id.0;
        let stored = |f: &Firewall<MemorySink, Global>| {
            tcp::TcpPortion::decode(&f.sink.store[&(id, Module::Tcp as u8)].1).unwrap().state
        };
        assert_eq!(stored(&a), tcp::TcpState::TimeWait);
        let syn = tcp(C, S, 40203, 80, SYN, 90000, 0, b"");
        let syn_ack = tcp(S, C, 80, 40203, SYN | ACK, 7000, 90001, b"");
        assert_eq!(a.process(&syn, 0, 3), Verdict::Forward);
        assert_eq!(stored(&a), tcp::TcpState::TimeWait, "the reopening SYN alone writes nothing");
        // Killed here: restored in TIME_WAIT, the connection takes the
        // client's retransmitted SYN as it took the first.
        let mut b = fw(MemorySink::default());
        assert_eq!(restore_all(&a.sink, &mut b), 1);
        assert_eq!(b.process(&syn, 0, 20), Verdict::Forward);
        assert_eq!(b.process(&syn_ack, 1, 20), Verdict::Forward);
        assert_eq!(
            b.process(&tcp(C, S, 40203, 80, ACK, 90001, 7001, b""), 0, 20),
            Verdict::Forward
        );
        // Not killed: the answer is written.
        assert_eq!(a.process(&syn_ack, 1, 4), Verdict::Forward);
        assert_eq!(stored(&a), tcp::TcpState::SynRecv);
    }

    #[test]
    fn an_unanswered_syn_is_neither_resynced_nor_deleted() {
        let mut a = fw(MemorySink::default());
        assert_eq!(a.process(&tcp(C, S, 40201, 80, SYN, 1000, 0, b""), 0, 1), Verdict::Forward);
        open(&mut a, 40202);
        a.sink.store.clear();
        a.sink.resync = true;
        a.housekeeping(2);
        assert_eq!(a.sink.store.len(), 2, "ip and tcp of the answered connection only");
        assert_eq!(a.counters.ckpt_reemitted.get(), 2, "and only those counted as re-emitted");
        for _ in 0..64 {
            a.housekeeping(u64::MAX / 2);
        }
        assert_eq!(a.table().len(), 0);
        assert_eq!(a.sink.deletes, 1, "the answered connection's delete only");
    }

    #[test]
    fn expiry_writes_a_delete() {
        let mut a = fw(MemorySink::default());
        open(&mut a, 40004);
        for _ in 0..64 {
            a.housekeeping(u64::MAX / 2);
        }
        assert_eq!(a.table().len(), 0);
        assert_eq!(a.sink.deletes, 1);
        assert!(a.sink.store.is_empty());
    }

    #[test]
    fn gauges_follow_the_table_and_a_flush_deletes_everything() {
        use std::sync::atomic::Ordering::Relaxed;
        let mut a = fw(MemorySink::default());
        open(&mut a, 40006);
        open(&mut a, 40007);
        assert_eq!(a.process(&udp(C, S, 5353, 53, b"q"), 0, 1), Verdict::Forward);
        a.housekeeping(1);
        let g = &a.counters.gauges;
        assert_eq!((g.tcp.get(), g.udp.get(), g.icmp.get()), (2, 1, 0));
        assert_eq!(g.tcp_states[TcpState::Established as usize].get(), 2);
        assert_eq!(a.sink.store.len(), 6, "ip + l4 of three connections");
        a.counters.requests.flush.store(true, Relaxed);
        // Gauges refresh every 100 ms of TSC (HZ / 10 ticks); the flush refreshes at once.
        a.housekeeping(2);
        assert_eq!(a.table().len(), 0);
        assert!(!a.counters.requests.flush.load(Relaxed), "the flag is cleared when done");
        assert_eq!(a.counters.flushed.get(), 3);
        assert_eq!(a.sink.deletes, 3);
        assert!(a.sink.store.is_empty(), "the store follows the flush");
        let g = &a.counters.gauges;
        assert_eq!(
            (g.tcp.get(), g.udp.get(), g.tcp_states[TcpState::Established as usize].get()),
            (0, 0, 0)
        );
        // Traffic after a flush: an established flow mid-stream is now unknown.
        assert_eq!(a.process(&tcp(C, S, 40006, 80, ACK, 1101, 5001, b""), 0, 3), Verdict::Drop);
    }

    #[test]
    fn a_flush_asked_during_a_walk_gets_a_walk_of_its_own() {
        use std::sync::atomic::Ordering::Relaxed;
        let c = ConntrackSection { capacity: 4 * FLUSH_BATCH as u32, ..Default::default() };
        let mut a = Firewall::new(
            &c,
            Arc::new(Policy::default()),
            vec![0, 0],
            HZ,
            Global,
            MemorySink::default(),
            Arc::new(FwCounters::default()),
        );
        open(&mut a, 40010);
        a.counters.requests.flush.store(true, Relaxed);
        a.housekeeping(1);
        assert!(a.flush_cursor.is_some(), "a table of several batches takes several rounds");
        assert_eq!(a.table().len(), 0);
        // A connection opened behind the walk's cursor, and a second request.
        open(&mut a, 40011);
        a.counters.requests.flush.store(true, Relaxed);
        for t in 2..20 {
            a.housekeeping(t);
        }
        assert_eq!(a.table().len(), 0, "the second request was absorbed by the first walk");
        assert_eq!(a.counters.flushed.get(), 2);
        assert!(!a.counters.requests.flush.load(Relaxed));
    }

    #[test]
    fn a_damaged_record_is_refused() {
        let mut a = fw(MemorySink::default());
        open(&mut a, 40005);
        let (k, (_, ip)) = a.sink.store.iter().find(|(k, _)| k.1 == Module::Ip as u8).unwrap();
        let mut b = fw(MemorySink::default());
        assert!(matches!(
            b.restore(k.0 ^ 1, ip, None, None, 1),
            Err(RestoreError::IdMismatch { .. })
        ));
        assert!(matches!(b.restore(k.0, &ip[..10], None, None, 1), Err(RestoreError::Portion(_))));
        assert_eq!(b.table().len(), 0);
    }

    /// Frames of every kind the pipeline tells apart, in an order where later
    /// packets depend on connections earlier ones opened.
    fn mixed_traffic() -> Vec<(Vec<u8>, usize)> {
        use crate::frames::{eth, icmp, ipv4};
        let mut v = Vec::new();
        for sport in [40000u16, 40001] {
            v.push((tcp(C, S, sport, 80, SYN, 1000, 0, b""), 0));
            v.push((tcp(S, C, 80, sport, SYN | ACK, 5000, 1001, b""), 1));
            v.push((tcp(C, S, sport, 80, ACK, 1001, 5001, b""), 0));
            v.push((tcp(C, S, sport, 80, ACK | PSH, 1001, 5001, &[7; 100]), 0));
            v.push((tcp(C, S, sport, 80, ACK | PSH, 1101 + 10_000_000, 5001, b"y"), 0));
        }
        v.push((tcp(C, S, 40009, 80, ACK, 77, 88, b""), 0));
        v.push((udp(C, S, 5353, 53, b"query"), 0));
        v.push((udp(S, C, 53, 5353, b"answer"), 1));
        v.push((icmp(C, S, 8, 0, [0, 7, 0, 1], b"ping"), 0));
        v.push((icmp(S, C, 0, 0, [0, 7, 0, 1], b"ping"), 1));
        v.push((icmp(S, C, 0, 0, [0, 8, 0, 1], b"ping"), 1));
        v.push((icmp(S, C, 3, 3, [0; 4], &udp(C, S, 5353, 53, b"query")[14..42]), 1));
        v.push((icmp(S, C, 3, 3, [0; 4], &udp(C, S, 6000, 53, b"query")[14..42]), 1));
        v.push((eth(ipv4(6, C, S, &[0; 8])), 0));
        v.push((eth(ipv4(47, C, S, &[0; 8])), 0));
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        arp.resize(60, 0);
        v.push((arp, 0));
        v.push((tcp(C, S, 40000, 80, FIN | ACK, 1101, 5001, b""), 0));
        v.push((tcp(S, C, 80, 40000, FIN | ACK, 5001, 1102, b""), 1));
        v
    }

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
                    f.stage(&mut sb, i, frame, *port);
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
            (tcp(C, S, 40000, 80, SYN, 1000, 0, b""), 0),
            (tcp(S, C, 80, 40000, SYN | ACK, 5000, 1001, b""), 1),
            (tcp(C, S, 40000, 80, ACK, 1001, 5001, b""), 0),
        ];
        for (i, (frame, port)) in burst.iter().enumerate() {
            f.stage(&mut sb, i, frame, *port);
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
                (tcp(C, S, sport, 80, SYN, isn, 0, b""), 0),
                (tcp(S, C, 80, sport, SYN | ACK, isn ^ 0x5555, isn + 1, b""), 1),
                (tcp(C, S, sport, 80, ACK, isn + 1, (isn ^ 0x5555) + 1, b""), 0),
            ] {
                assert_eq!(f.process(&frame, port, 1), Verdict::Forward);
            }
        }
        assert_eq!(f.process(&udp(C, S, 5353, 53, b"q"), 0, 1), Verdict::Forward);
        let burst = [
            (tcp(C, S, 40000, 80, ACK | PSH, 1001, 1001 ^ 0x5554, &[1; 10]), 0),
            (tcp(C, S, 40001, 80, ACK | PSH, 900_000_001, 900_000_001 ^ 0x5554, &[2; 20]), 0),
            (udp(C, S, 5353, 53, b"again"), 0),
        ];
        let mut sb = StagedBurst::new();
        for (i, (frame, port)) in burst.iter().enumerate() {
            f.stage(&mut sb, i, frame, *port);
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
        let syn = tcp(C, S, 40000, 80, SYN, 1000, 0, b"");
        f.stage(&mut sb, 0, &syn, 0);
        f.lookup_staged(&mut sb, 1);
        assert_eq!(f.process_staged(&mut sb, 0, &syn, 0, 1), Verdict::Forward);
        let stray = tcp(C, S, 40001, 80, ACK, 1, 1, b"");
        assert_eq!(
            f.process_staged(&mut sb, 0, &stray, 0, 1),
            Verdict::Drop,
            "tracked as itself, not as the SYN staged before"
        );
    }
}
