//! Pins the shared layout to `tests/layout.fingerprint`: the size and field
//! offsets of every `#[repr(C)]` shared struct, the format constants, the
//! checksum functions on fixed inputs and the bytes of freshly formatted
//! segments. A change to any of them without a `LAYOUT_VERSION` bump fails
//! here (docs/CHECKPOINT.md, Format versions).
//!
//! After a deliberate bump (with its translation), regenerate the file:
//! `UPDATE_LAYOUT_FINGERPRINT=1 cargo test -p shm-layout fingerprint`.

use crate::header::{SegmentHeader, SegmentKind, HEADER_BYTES, LAYOUT_VERSION, MAGIC};
use crate::ring::checksum::record_checksum;
use crate::ring::segment::{HeartbeatShm, HEARTBEAT_OFFSET};
use crate::ring::{RingCtrl, SlotHeader, CHECKSUM_AT, CONTINUATION, CONTINUATION_HEADER_BYTES};
use crate::*;
use std::fmt::Write;
use std::mem::{offset_of, size_of};

const PINNED: &str = include_str!("../tests/layout.fingerprint");
const PINNED_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/layout.fingerprint");

macro_rules! layout {
    ($out:expr, $t:ty { $($f:ident),* }) => {{
        writeln!($out, "{} size {} align {}", stringify!($t), size_of::<$t>(), std::mem::align_of::<$t>()).unwrap();
        $(writeln!($out, "  .{} @{}", stringify!($f), offset_of!($t, $f)).unwrap();)*
    }};
}

/// An aligned zeroed buffer standing in for a mapping.
struct Buf(Vec<u64>);

impl Buf {
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: a u64 slice viewed as its bytes: same memory, any byte is valid.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), self.0.len() * 8) }
    }
}

/// A formatted segment's bytes with the per-format fields (generation, and
/// the header checksum that covers it) zeroed.
fn masked(bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    // The origin is this host's: its place is pinned, not its value.
    b[ORIGIN_OFFSET..][..size_of::<SegmentOrigin>()].fill(0);
    b[offset_of!(SegmentHeader, generation)..][..8].fill(0);
    b[offset_of!(SegmentHeader, header_checksum)..][..8].fill(0);
    b
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Everything the layout consists of, as text; the first line is the version.
fn describe() -> String {
    let mut o = String::new();
    writeln!(o, "LAYOUT_VERSION {LAYOUT_VERSION}").unwrap();
    writeln!(o, "MAGIC {}", hex(&MAGIC)).unwrap();
    writeln!(
        o,
        "HEADER_BYTES {HEADER_BYTES} HEARTBEAT_OFFSET {HEARTBEAT_OFFSET} ORIGIN_OFFSET {ORIGIN_OFFSET}"
    )
    .unwrap();
    writeln!(o, "kinds rings {} store {}", SegmentKind::Rings as u32, SegmentKind::Store as u32)
        .unwrap();
    writeln!(
        o,
        "ring slot {DELTA_SLOT_BYTES} header {DELTA_HEADER_BYTES} payload {DELTA_PAYLOAD_MAX} \
         ctrl {RING_CTRL_BYTES} checksum_at {CHECKSUM_AT} record_slots_max {RECORD_SLOTS_MAX} \
         continuation {CONTINUATION:#x} continuation_header {CONTINUATION_HEADER_BYTES} \
         record_payload_max {RECORD_PAYLOAD_MAX}"
    )
    .unwrap();
    writeln!(
        o,
        "portions ip {IP_PORTION_MAX} l4 {L4_PORTION_MAX} ftp {FTP_PORTION_MAX} no_ftp {NO_FTP:#x}"
    )
    .unwrap();
    writeln!(
        o,
        "delta kinds portion {} delete {} sweep {} log {} trim {} pad {}",
        delta_kind::PORTION,
        delta_kind::DELETE,
        delta_kind::SWEEP,
        delta_kind::LOG,
        delta_kind::TRIM,
        delta_kind::PAD
    )
    .unwrap();
    writeln!(
        o,
        "modules ip {} tcp {} udp {} icmp {} ftp {} count {} protect {}",
        module::IP,
        module::TCP,
        module::UDP,
        module::ICMP,
        module::FTP,
        module::COUNT,
        module::PROTECT
    )
    .unwrap();
    layout!(
        o,
        SegmentHeader {
            magic,
            layout_version,
            kind,
            total_bytes,
            header_bytes,
            geom_a,
            geom_b,
            generation,
            record_bytes,
            aux_bytes,
            header_checksum
        }
    );
    layout!(o, SegmentOrigin { boot_id, tsc_hz, checksum });
    layout!(o, SlotHeader { seq, conn_id, version, module, kind, len, checksum });
    layout!(
        o,
        RingCtrl {
            head,
            _pad0,
            tail,
            torn,
            applied,
            _pad1,
            resync_epoch,
            _pad2,
            remote_committed,
            _reserved
        }
    );
    layout!(o, HeartbeatShm { monotonic_ns, pid, _pad0, incarnation, _pad });
    layout!(o, PortionSlot<IP_PORTION_MAX> { version, checksum, len, module, present, payload });
    layout!(o, PortionSlot<L4_PORTION_MAX> { version, checksum, len, module, present, payload });
    layout!(o, PortionSlot<FTP_PORTION_MAX> { version, checksum, len, module, present, payload });
    layout!(o, ConnRecord { conn_id, worker, used, _pad, ftp, ip, l4 });
    layout!(o, FtpRecord { conn_id, used, _pad, portion });
    let payload: Vec<u8> = (0..61u8).map(|i| i.wrapping_mul(37)).collect();
    writeln!(
        o,
        "record_checksum {:08x} portion_checksum {:08x}",
        record_checksum(0x0123_4567_89ab_cdef, 7, module::TCP, delta_kind::PORTION, &payload),
        portion_checksum(0x0123_4567_89ab_cdef, 7, module::FTP, &payload)
    )
    .unwrap();

    let geom = RingsGeometry { workers: 2, slots_per_ring: 64 };
    let rings = formatted(geom.segment_bytes(), |p, l| {
        // SAFETY: p..p+l is a zeroed, 64-byte aligned buffer of ours that
        // outlives the segment (dropped at the end of this closure).
        drop(unsafe { RingsSegment::format(p, l, geom) }.unwrap());
    });
    let sgeom = StoreGeometry { conn_capacity: 2, ftp_capacity: 1 };
    let store = formatted(sgeom.segment_bytes(), |p, l| {
        // SAFETY: as above.
        drop(unsafe { StoreSegment::format(p, l, sgeom) }.unwrap());
    });
    for (name, b) in [("rings", &rings), ("store", &store)] {
        writeln!(o, "{name} empty header {}", hex(&b[..size_of::<SegmentHeader>()])).unwrap();
        writeln!(o, "{name} empty {} bytes xxh3 {:016x}", b.len(), xxhash_rust::xxh3::xxh3_64(b))
            .unwrap();
    }
    o
}

/// Formats a segment of `bytes` into a 64-byte aligned zeroed buffer and
/// returns its bytes, masked.
fn formatted(bytes: u64, format: impl FnOnce(*mut u8, usize)) -> Vec<u8> {
    let n = bytes as usize;
    let mut buf = Buf(vec![0; n / 8 + 8]);
    let all = buf.bytes();
    let skip = all.as_ptr().align_offset(64);
    let seg = &mut all[skip..skip + n];
    format(seg.as_mut_ptr(), n);
    masked(seg)
}

#[test]
fn layout_matches_the_pinned_fingerprint() {
    let now = describe();
    if std::env::var_os("UPDATE_LAYOUT_FINGERPRINT").is_some() {
        std::fs::write(PINNED_PATH, &now).unwrap();
        return;
    }
    if now == PINNED {
        return;
    }
    let version = |s: &str| s.lines().next().unwrap_or("").to_string();
    let diff: Vec<String> = PINNED
        .lines()
        .zip(now.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("  pinned: {a}\n  now:    {b}"))
        .collect();
    if version(&now) == version(PINNED) {
        panic!(
            "the shared layout changed but LAYOUT_VERSION did not: bump LAYOUT_VERSION and add a \
             translation from the previous version (docs/CHECKPOINT.md, Format versions); then \
             UPDATE_LAYOUT_FINGERPRINT=1 cargo test -p shm-layout fingerprint\n{}",
            diff.join("\n")
        );
    }
    panic!(
        "LAYOUT_VERSION changed: check the translation from the previous version exists \
         (docs/CHECKPOINT.md, Format versions), then pin the new layout with \
         UPDATE_LAYOUT_FINGERPRINT=1 cargo test -p shm-layout fingerprint\n{}",
        diff.join("\n")
    );
}
