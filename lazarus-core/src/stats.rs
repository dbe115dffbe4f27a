//! The firewall's counters and gauges: each worker is the only writer of its
//! own, so an update is a plain load + store; other threads read them Relaxed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Single-writer add: only the owning worker calls this.
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

use crate::modules::{tcp::TcpInvalid, Module};
use crate::parse::DropReason;

/// Why a packet of the firewall was dropped after parsing, besides TCP's own reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FwDrop {
    /// Policy refused a new connection.
    Policy = 0,
    /// The connection table is full: a new connection was refused.
    TableFull,
    /// A non-first fragment whose first fragment was not seen (or was dropped).
    FragmentUnmatched,
    /// An ICMP error quoting no known connection.
    IcmpUnrelated,
    /// An echo reply with no request, or a request in the reply direction.
    IcmpBadEcho,
    /// An ICMP error too short to say which flow it is about.
    IcmpNoQuote,
}

impl FwDrop {
    pub const COUNT: usize = 6;
    pub const ALL: [FwDrop; 6] = [
        FwDrop::Policy,
        FwDrop::TableFull,
        FwDrop::FragmentUnmatched,
        FwDrop::IcmpUnrelated,
        FwDrop::IcmpBadEcho,
        FwDrop::IcmpNoQuote,
    ];
    pub fn name(self) -> &'static str {
        [
            "policy",
            "table_full",
            "fragment_unmatched",
            "icmp_unrelated",
            "icmp_bad_echo",
            "icmp_no_quote",
        ][self as usize]
    }
}

/// Connection-tracking counters of one worker, by module and reason.
#[derive(Debug, Default)]
pub struct FwCounters {
    pub new: [Counter; Module::COUNT],
    pub closed: [Counter; Module::COUNT],
    pub expired: [Counter; Module::COUNT],
    pub parse_drop: [Counter; DropReason::COUNT],
    pub tcp_invalid: [Counter; TcpInvalid::COUNT],
    pub fw_drop: [Counter; FwDrop::COUNT],
    /// New connections admitted as related (an FTP data connection).
    pub related: Counter,
    pub ftp_expectations: Counter,
    /// PORT/EPRT/227 naming an address other than the control connection's peer.
    pub ftp_refused: Counter,
    pub ftp_no_session: Counter,
    pub ftp_gaps: Counter,
    pub expectations_full: Counter,
    /// Portions handed to the checkpoint sink, per module.
    pub ckpt: [Counter; Module::COUNT],
    pub ckpt_deletes: Counter,
    /// Deltas the ring had no room for: the connection was marked dirty.
    pub ckpt_ring_full: Counter,
    /// Portions written again by the background sweep (dirty or resync).
    pub ckpt_reemitted: Counter,
    /// Deletes that found the ring and the pending list full: the store keeps
    /// the connection until a restore drops it as expired.
    pub ckpt_deletes_lost: Counter,
    /// Full resyncs checkpointd asked for (it lost its store).
    pub ckpt_resyncs: Counter,
    /// Sweeps written: after deletes were lost, a walk rewrote every
    /// connection and checkpointd dropped the records it did not rewrite.
    pub ckpt_sweeps: Counter,
    /// Connections rebuilt from the store at start, and records skipped.
    pub restored: Counter,
    pub restore_skipped: Counter,
    /// FTP expectations not restored: their deadlines were another boot's
    /// clock (the store was rebased).
    pub restore_stale_expectations: Counter,
    /// Stored connections today's policy refuses, not restored.
    pub restore_forbidden: Counter,
    /// Connections a full table dropped to admit a new one (not established:
    /// half-open, unanswered or closing), as Linux's `early_drop`.
    pub early_drop: Counter,
    /// FTP expectations not restored: FTP is off, or off on their port.
    pub restore_forbidden_expectations: Counter,
    /// Connections in the table (a gauge the worker refreshes).
    pub live: Counter,
    /// Connections removed by an operator's flush (`/lazarus/flush`).
    pub flushed: Counter,
    /// What the table holds, refreshed by the worker about every 100 ms.
    pub gauges: ConnGauges,
    /// Requests from other threads (telemetry) that the worker acts on in
    /// housekeeping.
    pub requests: WorkerRequests,
    pub protect: ProtectCounters,
}

/// Protected services (issue 21), counted by each worker.
#[derive(Debug, Default)]
pub struct ProtectCounters {
    /// Connections protected from their SYN on.
    pub connections: Counter,
    /// Connections not protected: the worker held `connections` already.
    pub table_full: Counter,
    /// Connections carried onto a restarted server.
    pub spliced: Counter,
    /// Replays that failed (both sides reset), of which the restarted
    /// server's output differed from what the client had.
    pub replay_failed: Counter,
    pub diverged: Counter,
    /// Connections that stopped being protected: the log would have passed
    /// its bound.
    pub log_bound: Counter,
    /// Client segments dropped: after a gap in the log, or differing from
    /// the bytes logged.
    pub log_gap: Counter,
    pub log_conflict: Counter,
    /// A held server FIN or RST released to the client: a close, not a crash.
    pub released: Counter,
    /// Connections reset because the server stayed down past `down_max_ms`.
    pub down_too_long: Counter,
    /// Segments the firewall sent for a protected connection (answers,
    /// keep-alives, replayed data, rewritten segments), and those it had no
    /// room to send.
    pub sent: Counter,
    pub send_full: Counter,
    /// Segments a splice could not rewrite, and fragments of a connection
    /// down, in recovery or spliced (dropped).
    pub unspliceable: Counter,
    /// Client segments dropped because the delta ring had no room for
    /// their bytes: never forwarded unlogged; the client sends them again.
    pub log_ring_full: Counter,
    /// Connections rebuilt from checkpointd at a restart, and those that
    /// could not be (they go on unprotected; the log says why).
    pub restored: Counter,
    pub restore_refused: Counter,
    /// Times checkpointd was found restarted and every protected
    /// connection was written to it again.
    pub rewritten: Counter,
    /// Logs truncated at a quiet point (`truncation = "request-response"`).
    pub truncated: Counter,
    /// Wire detection (`probe_addr`): probes sent (SYNs, and the RSTs that
    /// close a service's SYN-ACK), and what they found: listening, refused
    /// (an RST), silent (nothing twice).
    pub probes: Counter,
    pub probe_listening: Counter,
    pub probe_refused: Counter,
    pub probe_silent: Counter,
    /// Connections taken as crashed on a probe's verdict, with no word
    /// from the hook.
    pub wire_down: Counter,
    /// ARP requests and neighbour solicitations for a probe address
    /// answered.
    pub arp_answered: Counter,
    /// Connections to a protected service protection cannot follow: a SYN
    /// sent in fragments, or a fragment that ends their protection (up and
    /// never spliced; elsewhere the fragment is dropped as `unspliceable`).
    /// They go on unprotected.
    pub unprotectable: Counter,
    /// Output commit at the remote level: server segments held until the
    /// client bytes they acknowledge were in the remote store, those
    /// dropped because the hold was full (the server sends them again),
    /// and (a gauge) how many wait now.
    pub commit_held: Counter,
    pub commit_full: Counter,
    pub commit_waiting: Counter,
    /// Gauges, refreshed at each walk of the table (every millisecond):
    /// client bytes the logs hold, and the memory they took.
    pub log_bytes: Counter,
    pub log_memory: Counter,
}

impl ProtectCounters {
    /// Every counter by name, for the metrics and the final summary.
    pub fn named(&self) -> [(&'static str, u64); 30] {
        [
            ("connections", self.connections.get()),
            ("table_full", self.table_full.get()),
            ("spliced", self.spliced.get()),
            ("replay_failed", self.replay_failed.get()),
            ("diverged", self.diverged.get()),
            ("log_bound", self.log_bound.get()),
            ("log_gap", self.log_gap.get()),
            ("log_conflict", self.log_conflict.get()),
            ("released", self.released.get()),
            ("down_too_long", self.down_too_long.get()),
            ("sent", self.sent.get()),
            ("send_full", self.send_full.get()),
            ("unspliceable", self.unspliceable.get()),
            ("log_ring_full", self.log_ring_full.get()),
            ("restored", self.restored.get()),
            ("restore_refused", self.restore_refused.get()),
            ("rewritten", self.rewritten.get()),
            ("truncated", self.truncated.get()),
            ("probes", self.probes.get()),
            ("probe_listening", self.probe_listening.get()),
            ("probe_refused", self.probe_refused.get()),
            ("probe_silent", self.probe_silent.get()),
            ("wire_down", self.wire_down.get()),
            ("arp_answered", self.arp_answered.get()),
            ("unprotectable", self.unprotectable.get()),
            ("commit_held", self.commit_held.get()),
            ("commit_full", self.commit_full.get()),
            ("commit_waiting", self.commit_waiting.get()),
            ("log_bytes", self.log_bytes.get()),
            ("log_memory", self.log_memory.get()),
        ]
    }
}

/// The most `[[protected]]` services a dataplane has.
pub const MAX_PROTECTED: usize = 16;

/// Gauges of one worker's table, copied from the worker's own tallies (kept
/// up to date on insert, state change and removal) every ~100 ms, so that
/// another thread can read them without touching the table.
#[derive(Debug, Default)]
pub struct ConnGauges {
    /// Connections by layer-4 portion: tcp, udp, icmp, other IP protocols.
    pub tcp: Counter,
    pub udp: Counter,
    pub icmp: Counter,
    pub other: Counter,
    /// TCP connections per state (`TcpState as usize`).
    pub tcp_states: [Counter; crate::modules::tcp::TcpState::COUNT],
    /// Control connections with an FTP portion.
    pub ftp: Counter,
    /// Pending FTP data-connection expectations.
    pub expectations: Counter,
    /// How many times the worker refreshed these gauges (0: never yet).
    pub refreshes: Counter,
}

/// Flags set by other threads, cleared by the worker when done.
#[derive(Debug, Default)]
pub struct WorkerRequests {
    /// Empty the table (a checkpoint delete for each connection).
    pub flush: std::sync::atomic::AtomicBool,
    /// Words from the server host's hook about protected service i: how
    /// many so far, shifted left by one, and whether the last one said up
    /// (bit 0). The worker acts on a count it has not seen.
    pub protect_word: [std::sync::atomic::AtomicU64; MAX_PROTECTED],
    /// The words the worker has acted on, per service: beside the words,
    /// so a worker process that takes over acts on those its predecessor
    /// had not, and on none twice.
    pub protect_seen: [std::sync::atomic::AtomicU64; MAX_PROTECTED],
}

impl Counter {
    /// For gauges: only the owning worker calls this.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
}

fn sum(c: &[Counter]) -> u64 {
    c.iter().map(Counter::get).sum()
}

impl FwCounters {
    /// A fresh set that lives as long as the process: a worker's counters are
    /// read by other threads (telemetry) for the life of the process, and in a
    /// supervised dataplane they live in memory shared with another process.
    pub fn leaked() -> &'static FwCounters {
        Box::leak(Box::default())
    }

    pub fn invalid_total(&self) -> u64 {
        sum(&self.parse_drop)
            + sum(&self.tcp_invalid)
            + sum(&self.fw_drop[FwDrop::FragmentUnmatched as usize..])
    }

    /// One short summary for the periodic stats line.
    pub fn brief(&self) -> String {
        format!(
            "conns={} new={} closed={} expired={} invalid={} policy_drop={} table_full={} related={} ckpt={} ring_full={}",
            self.live.get(),
            sum(&self.new),
            sum(&self.closed),
            sum(&self.expired),
            self.invalid_total(),
            self.fw_drop[FwDrop::Policy as usize].get(),
            self.fw_drop[FwDrop::TableFull as usize].get(),
            self.related.get(),
            sum(&self.ckpt) + self.ckpt_deletes.get(),
            self.ckpt_ring_full.get()
        )
    }

    /// Every non-zero counter by name, for the final summary.
    pub fn detail(&self) -> String {
        let mut parts = Vec::new();
        for m in Module::ALL {
            for (what, c) in [
                ("new", &self.new),
                ("closed", &self.closed),
                ("expired", &self.expired),
                ("ckpt", &self.ckpt),
            ] {
                let v = c[m as usize].get();
                if v != 0 {
                    parts.push(format!("{}.{what}={v}", m.name()));
                }
            }
        }
        for r in DropReason::ALL {
            let v = self.parse_drop[r as usize].get();
            if v != 0 {
                parts.push(format!("parse.{}={v}", r.name()));
            }
        }
        for r in TcpInvalid::ALL {
            let v = self.tcp_invalid[r as usize].get();
            if v != 0 {
                parts.push(format!("tcp.invalid.{}={v}", r.name()));
            }
        }
        for r in FwDrop::ALL {
            let v = self.fw_drop[r as usize].get();
            if v != 0 {
                parts.push(format!("drop.{}={v}", r.name()));
            }
        }
        for (n, c) in [
            ("related", &self.related),
            ("ftp.expectations", &self.ftp_expectations),
            ("ftp.refused", &self.ftp_refused),
            ("ftp.no_session", &self.ftp_no_session),
            ("ftp.gaps", &self.ftp_gaps),
            ("expectations_full", &self.expectations_full),
            ("ckpt.deletes", &self.ckpt_deletes),
            ("ckpt.ring_full", &self.ckpt_ring_full),
            ("ckpt.reemitted", &self.ckpt_reemitted),
            ("ckpt.deletes_lost", &self.ckpt_deletes_lost),
            ("ckpt.resyncs", &self.ckpt_resyncs),
            ("ckpt.sweeps", &self.ckpt_sweeps),
            ("restored", &self.restored),
            ("restore.skipped", &self.restore_skipped),
            ("restore.stale_expectations", &self.restore_stale_expectations),
            ("restore.forbidden", &self.restore_forbidden),
            ("restore.forbidden_expectations", &self.restore_forbidden_expectations),
            ("early_drop", &self.early_drop),
            ("flushed", &self.flushed),
        ] {
            if c.get() != 0 {
                parts.push(format!("{n}={}", c.get()));
            }
        }
        for (n, v) in self.protect.named() {
            // Gauges say what is, not what happened: left to the metrics.
            if v != 0 && !matches!(n, "commit_waiting" | "log_bytes" | "log_memory") {
                parts.push(format!("protect.{n}={v}"));
            }
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" ")
        }
    }
}
