//! The shared-memory layout of Lazarus: what the dataplane and checkpointd
//! agree on byte for byte.
//!
//! Two segments, each a file in hugetlbfs (or a tmpfs) owned by checkpointd
//! so it outlives both processes, in a directory only its user may write
//! (`trust`):
//!
//! * the **rings** segment ([`RingsSegment`]): one single-producer
//!   single-consumer delta ring per dataplane worker, plus checkpointd's
//!   heartbeat;
//! * the **store** segment ([`StoreSegment`]): the newest portion of every
//!   (connection, module), written by checkpointd, read by a restarting
//!   dataplane.
//!
//! Rules (docs/CHECKPOINT.md has the byte-level picture):
//! * every shared structure is `#[repr(C)]`, pointer-free, built from
//!   fixed-width integers (never `usize`), with compile-time size checks;
//! * shared memory is never handed out as a plain `&T` to a structure another
//!   process writes: indices are atomics with labelled orderings, records are
//!   copied in and out with volatile accesses and verified by checksum;
//! * each segment starts with a [`SegmentHeader`] (magic, layout version,
//!   kind, sizes, geometry); attaching to anything else is a typed
//!   [`LayoutError`] that says what to do.
//!
//! This crate is the only one besides the dataplane's DPDK layer allowed to
//! use `unsafe`; every block carries a `// SAFETY:` comment.

mod config;
#[cfg(all(test, not(loom)))]
mod fingerprint;
mod header;
mod mapped;
mod origin;
mod producer_lock;
mod protected;
pub mod remote;
pub mod remote_log;
mod ring;
mod segment;
mod store;
mod sync;
mod translate;
mod trust;

pub use config::{
    read_config, CheckpointSection, ConfigError, RemoteSection, DEFAULT_CONNTRACK_CAPACITY,
};
pub use header::{
    SegmentHeader, SegmentKind, HEADER_BYTES, LAYOUT_VERSION, LAYOUT_VERSION_OLDEST, MAGIC,
};
pub use mapped::{is_hugetlbfs, try_lock_exclusive, MappedFile, HUGEPAGE_BYTES};
pub use origin::{boot_id, tsc_hz, SegmentOrigin, ORIGIN_OFFSET};
pub use producer_lock::{lock_producers, ProducerLock};
pub use protected::{
    encode_protected, parse_protected, HeldProtected, ProtectedReplyError, PROTECTED_HEADER_BYTES,
};
pub use ring::{log_bytes_within, log_slots, record_slots};
pub use ring::{
    Delta, DeltaConsumer, DeltaProducer, DrainReport, Heartbeat, PushError, RingFull, RingStatus,
    RingsGeometry, RingsSegment, DELTA_HEADER_BYTES, DELTA_PAYLOAD_MAX, DELTA_SLOT_BYTES,
    RECORD_PAYLOAD_MAX, RECORD_SLOTS_MAX, RINGS_FILE, RING_CTRL_BYTES, STORE_FILE,
};
pub use store::{
    portion_checksum, ConnRecord, FtpRecord, PortionSlot, RestoreIter, StoreGeometry, StoreSegment,
    StoredConn, StoredPortion, FTP_PORTION_MAX, IP_PORTION_MAX, L4_PORTION_MAX, NO_FTP,
    UNPLACED_WORKER,
};
pub use translate::{from_previous, test_downgrade_to, test_downgrade_to_previous, Translated};
pub use trust::{
    check_segment_dir, daemon_uid, open_lock_file, prepare_segment_dir, SegmentAccess,
};

use std::path::PathBuf;

/// What a delta record does.
pub mod delta_kind {
    /// The record carries the new portion of `module` for the connection.
    pub const PORTION: u8 = 1;
    /// The connection ended: every portion of it can go.
    pub const DELETE: u8 = 2;
    /// The producer rewrote every connection it holds, each delta with a
    /// version after this one's (a walk of its whole table): every record
    /// of its ring whose newest portion is older is a connection it no
    /// longer has (its delete was lost) and can go. `conn_id` 0.
    pub const SWEEP: u8 = 3;
    /// Client bytes of a protected connection (module `PROTECT`): the
    /// payload continues its log at byte `version` (the offset from the
    /// first byte after the client's SYN). Written before the client's
    /// segment is forwarded. Variable length, up to `RECORD_PAYLOAD_MAX`
    /// (layout 8: a record spans as many slots as its bytes need, up to
    /// `RECORD_SLOTS_MAX`); a longer segment takes more records.
    pub const LOG: u8 = 4;
    /// A protected connection's log was truncated (module `PROTECT`):
    /// every byte before stream offset `version` can go.
    pub const TRIM: u8 = 5;
    /// Layout 8: nothing; the slots from this one to the ring's end are
    /// skipped (the next record would have wrapped). `len` 0, `conn_id` 0.
    pub const PAD: u8 = 6;
}

/// Module numbers as they travel in deltas and sit in the store. They match
/// the dataplane's `Module` enum (`Module as u8`).
pub mod module {
    pub const IP: u8 = 0;
    pub const TCP: u8 = 1;
    pub const UDP: u8 = 2;
    pub const ICMP: u8 = 3;
    pub const FTP: u8 = 4;
    /// Number of modules whose portions the store segment holds.
    pub const COUNT: usize = 5;
    /// A protected connection (`[[protected]]`): its PORTION is the
    /// connection's protection snapshot, its LOG records the client's bytes,
    /// its DELETE the end of its protection. Its id is the protection's own
    /// (not a tracked connection's), and checkpointd keeps it in its own
    /// memory, not in the store segment.
    pub const PROTECT: u8 = 5;

    /// The module's name, or "unknown".
    pub fn name(module: u8) -> &'static str {
        match module {
            IP => "ip",
            TCP => "tcp",
            UDP => "udp",
            ICMP => "icmp",
            FTP => "ftp",
            PROTECT => "protect",
            _ => "unknown",
        }
    }
}

/// Why a segment cannot be created, attached or used. Each message says what
/// the operator (or the caller) should do next.
#[derive(thiserror::Error, Debug)]
pub enum LayoutError {
    #[error(
        "not a Lazarus segment (magic {found:02x?}, expected \"LAZARUS1\"); \
         point checkpoint.dir at a directory of its own, or remove the file"
    )]
    BadMagic { found: [u8; 8] },
    #[error(
        "segment layout version {found}, this build uses {expected}: the segment was written by \
         another Lazarus build; stop checkpointd and remove the segment files, or run the \
         matching build"
    )]
    VersionMismatch { found: u32, expected: u32 },
    #[error(
        "segment is of kind {found} but kind {expected} ({}) was expected; check that the \
         rings and store files were not swapped or overwritten", kind_name(*expected)
    )]
    WrongKind { found: u32, expected: u32 },
    #[error(
        "segment is {len} bytes but its layout needs {needed}; the file was truncated or is \
         still being created: stop checkpointd and remove the segment files"
    )]
    Truncated { len: u64, needed: u64 },
    #[error("bad segment geometry: {0}")]
    BadGeometry(String),
    #[error("segment base address {addr:#x} is not {align}-byte aligned; map it page-aligned")]
    Misaligned { addr: u64, align: u64 },
    #[error(
        "no ring for worker {worker}: the segment has {workers} ring(s); the [[worker]] count \
         changed since the segment was created, stop checkpointd and remove the segment files"
    )]
    NoSuchRing { worker: u32, workers: u32 },
    #[error(
        "the {role} of ring {worker} is already taken in this process; a ring has exactly one \
         producer and one consumer"
    )]
    RingInUse { worker: u32, role: &'static str },
    #[error("module {module} ({}) portion of {len} bytes exceeds its {max}-byte slot", module::name(*module))]
    PortionTooLarge { module: u8, len: usize, max: usize },
    #[error("module {0} is not a Lazarus module (0 ip, 1 tcp, 2 udp, 3 icmp, 4 ftp)")]
    UnknownModule(u8),
    #[error(
        "ring {worker} of {path} already has a producer: another dataplane (one started with \
         another --file-prefix on the same checkpoint.dir?) writes into these rings; stop it \
         first. The lock dies with its holder, so a dead dataplane never blocks a restart"
    )]
    ProducerLocked { path: PathBuf, worker: u32 },
    #[error("{path} {reason}: refused, since whoever can write the segments decides what a restarted dataplane admits; {fix}")]
    Untrusted { path: PathBuf, reason: String, fix: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn kind_name(kind: u32) -> &'static str {
    match kind {
        1 => "rings",
        2 => "store",
        _ => "unknown",
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of [`Heartbeat`].
pub fn monotonic_ns() -> u64 {
    // SAFETY: timespec is plain old data; all-zero is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: CLOCK_MONOTONIC is always available on Linux; ts is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}
