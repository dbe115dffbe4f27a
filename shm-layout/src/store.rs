//! The store segment: the newest portion of every (connection, module).
//!
//! Written only by checkpointd (one writer, `&mut self` methods), read by a
//! restarting dataplane through [`StoreSegment::restore_iter`]. checkpointd
//! keeps its index (conn_id -> record, free lists) in its own heap and
//! rebuilds it by scanning the records at start.
//!
//! Every portion is sealed with a checksum over (conn_id, version, module,
//! len, payload), so a portion checkpointd was writing when it was killed is
//! detected; the delta it came from is still in the ring (the tail moves only
//! after the store was written) and is applied again on restart.

use crate::header::{SegmentKind, HEADER_BYTES};
use crate::mapped::MappedFile;
use crate::origin::SegmentOrigin;
use crate::segment::{Geometry, Mapping};
use crate::trust::SegmentAccess;
use crate::{module, LayoutError};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{fence, Ordering};

/// Largest ip portion.
pub const IP_PORTION_MAX: usize = 88;
/// Largest tcp, udp or icmp portion (one layer-4 slot per connection).
pub const L4_PORTION_MAX: usize = 56;
/// Largest ftp portion.
pub const FTP_PORTION_MAX: usize = 224;
/// `ConnRecord::ftp` when the connection has no FTP portion.
pub const NO_FTP: u32 = u32::MAX;
/// A record's worker when the writer could not say which worker owns it
/// (a copy from an appliance with another worker count): the restoring
/// dataplane places it by its ports' RSS hash.
pub const UNPLACED_WORKER: u16 = u16::MAX;

const MAX_CONNS: u32 = 1 << 28;
const MAX_FTP: u32 = 1 << 24;

/// The checksum of a stored portion: low 32 bits of xxh3-64 over the payload
/// in place, seeded with (conn_id, version, module, len) mixed into one word.
/// Hashing in place matters for restore: the earlier form copied the fields
/// into a zeroed 259-byte buffer first, which cost more than the hash itself
/// (store-forwarding stalls on the byte-wise header), a third of a 1M
/// restore. A torn slot still fails: a changed version, module or length
/// changes the seed (the version through an odd multiply, a bijection), and
/// xxh3 under another seed or over other bytes is a fresh 32-bit value.
#[inline]
pub fn portion_checksum(conn_id: u64, version: u64, module: u8, payload: &[u8]) -> u32 {
    let len = payload.len().min(FTP_PORTION_MAX);
    let seed = conn_id
        ^ version.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ ((module as u64) << 56 | (len as u64) << 40).rotate_left(17);
    xxhash_rust::xxh3::xxh3_64_with_seed(&payload[..len], seed) as u32
}

/// One module's portion in the store.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortionSlot<const N: usize> {
    pub version: u64,
    pub checksum: u32,
    pub len: u16,
    pub module: u8,
    /// 1 when the slot holds a portion.
    pub present: u8,
    pub payload: [u8; N],
}

impl<const N: usize> PortionSlot<N> {
    /// No portion.
    pub const EMPTY: Self =
        PortionSlot { version: 0, checksum: 0, len: 0, module: 0, present: 0, payload: [0; N] };

    /// A present portion with its checksum sealed.
    pub fn seal(
        conn_id: u64,
        module: u8,
        version: u64,
        payload: &[u8],
    ) -> Result<Self, LayoutError> {
        if payload.len() > N {
            return Err(LayoutError::PortionTooLarge { module, len: payload.len(), max: N });
        }
        let mut s = PortionSlot {
            version,
            checksum: 0,
            len: payload.len() as u16,
            module,
            present: 1,
            payload: [0; N],
        };
        s.payload[..payload.len()].copy_from_slice(payload);
        s.checksum = portion_checksum(conn_id, version, module, payload);
        Ok(s)
    }

    /// Whether the slot holds a portion (checksum not checked).
    pub fn is_present(&self) -> bool {
        self.present != 0
    }

    /// Whether a present portion's length and checksum hold for `conn_id`.
    pub fn verify(&self, conn_id: u64) -> bool {
        let len = self.len as usize;
        len <= N
            && self.checksum
                == portion_checksum(conn_id, self.version, self.module, &self.payload[..len])
    }

    /// The payload (length clamped to the slot).
    pub fn payload(&self) -> &[u8] {
        &self.payload[..(self.len as usize).min(N)]
    }
}

/// One connection in the store.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRecord {
    pub conn_id: u64,
    /// The dataplane worker that owns the connection.
    pub worker: u16,
    /// 1 when the record holds a connection.
    pub used: u8,
    pub _pad: u8,
    /// Index of the connection's FTP record, or [`NO_FTP`].
    pub ftp: u32,
    pub ip: PortionSlot<IP_PORTION_MAX>,
    /// The tcp, udp or icmp portion; `module` says which.
    pub l4: PortionSlot<L4_PORTION_MAX>,
}
const _: () = assert!(std::mem::size_of::<ConnRecord>() == 192);

impl ConnRecord {
    /// An unused record.
    pub const EMPTY: Self = ConnRecord {
        conn_id: 0,
        worker: 0,
        used: 0,
        _pad: 0,
        ftp: NO_FTP,
        ip: PortionSlot::EMPTY,
        l4: PortionSlot::EMPTY,
    };
}

/// One FTP portion, in a pool of its own (few connections are FTP control
/// channels, and their portion is the largest).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FtpRecord {
    pub conn_id: u64,
    pub used: u8,
    pub _pad: [u8; 7],
    pub portion: PortionSlot<FTP_PORTION_MAX>,
}
const _: () = assert!(std::mem::size_of::<FtpRecord>() == 256);

impl FtpRecord {
    /// An unused record.
    pub const EMPTY: Self =
        FtpRecord { conn_id: 0, used: 0, _pad: [0; 7], portion: PortionSlot::EMPTY };
}

/// How many records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreGeometry {
    /// Connection records.
    pub conn_capacity: u32,
    /// FTP records.
    pub ftp_capacity: u32,
}

impl StoreGeometry {
    fn conns_offset(&self) -> u64 {
        HEADER_BYTES as u64
    }
    fn ftp_offset(&self) -> u64 {
        self.conns_offset()
            + u64::from(self.conn_capacity) * std::mem::size_of::<ConnRecord>() as u64
    }

    /// Bytes of the segment: header page, connection records, FTP records.
    pub fn segment_bytes(&self) -> u64 {
        self.ftp_offset() + u64::from(self.ftp_capacity) * std::mem::size_of::<FtpRecord>() as u64
    }

    /// Checks the limits: 1..=2^28 connections, 0..=2^24 FTP records.
    pub fn validate(&self) -> Result<(), LayoutError> {
        if self.conn_capacity == 0 || self.conn_capacity > MAX_CONNS {
            return Err(LayoutError::BadGeometry(format!(
                "store capacity {}: need 1..={MAX_CONNS} connections (checkpoint.store_capacity)",
                self.conn_capacity
            )));
        }
        if self.ftp_capacity > MAX_FTP {
            return Err(LayoutError::BadGeometry(format!(
                "ftp capacity {}: need 0..={MAX_FTP} (checkpoint.ftp_capacity)",
                self.ftp_capacity
            )));
        }
        Ok(())
    }
}

/// A verified portion copied out of the store: the bytes are this process's
/// own, so nothing another process writes to the segment later changes them.
pub type StoredPortion<const N: usize> = PortionSlot<N>;

/// A present, intact portion moved to version 0.
trait Rebase {
    fn rebase(&mut self, conn_id: u64) -> bool;
}

impl<const N: usize> Rebase for PortionSlot<N> {
    fn rebase(&mut self, conn_id: u64) -> bool {
        if !self.is_present() || !self.verify(conn_id) {
            return false;
        }
        self.version = 0;
        self.checksum = portion_checksum(conn_id, 0, self.module, self.payload());
        true
    }
}

/// A stored connection, copied out; a portion that failed its checksum reads
/// as `None` (and is counted by the iterator). The FTP portion, rare and
/// large, is boxed so that the item stays small to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredConn {
    pub conn_id: u64,
    pub worker: u16,
    record: ConnRecord,
    ip_ok: bool,
    l4_ok: bool,
    ftp: Option<Box<StoredPortion<FTP_PORTION_MAX>>>,
}

impl StoredConn {
    const EMPTY: Self = StoredConn {
        conn_id: 0,
        worker: 0,
        record: ConnRecord::EMPTY,
        ip_ok: false,
        l4_ok: false,
        ftp: None,
    };

    pub fn ip(&self) -> Option<&StoredPortion<IP_PORTION_MAX>> {
        self.ip_ok.then_some(&self.record.ip)
    }
    /// The tcp, udp or icmp portion.
    pub fn l4(&self) -> Option<&StoredPortion<L4_PORTION_MAX>> {
        self.l4_ok.then_some(&self.record.l4)
    }
    pub fn ftp(&self) -> Option<&StoredPortion<FTP_PORTION_MAX>> {
        self.ftp.as_deref()
    }
}

/// The widest word one plain load copies.
#[cfg(target_arch = "x86_64")]
type CopyWord = std::arch::x86_64::__m128i;
#[cfg(not(target_arch = "x86_64"))]
type CopyWord = u64;

/// Copies a record another process may be writing into `to`: word by word,
/// each word read once (volatile), so no later use of the copy goes back to
/// the segment. A whole-struct `read_volatile` compiles to byte loads, and
/// a copy returned by value is copied again: both cost a large restore
/// dearly.
///
/// # Safety
/// `src` is valid for reads and 16-aligned; `T` is plain integers (any
/// bytes are a value) with no implicit padding and a size that is a
/// multiple of 16.
#[inline(always)]
unsafe fn copy_out<T: Copy>(src: *const T, to: &mut T) {
    const {
        assert!(std::mem::size_of::<T>().is_multiple_of(std::mem::size_of::<CopyWord>()));
    };
    let from = src.cast::<CopyWord>();
    let dst = (to as *mut T).cast::<CopyWord>();
    for k in 0..std::mem::size_of::<T>() / std::mem::size_of::<CopyWord>() {
        // SAFETY: k stays inside both structs; the caller vouches for `src`
        // and its alignment, `to` is ours; any bytes are a `T` (caller).
        unsafe { dst.add(k).write_unaligned(from.add(k).read_volatile()) };
    }
}

/// The store segment.
pub struct StoreSegment {
    map: Mapping<StoreGeometry>,
}

// SAFETY: all access goes through volatile copies; writes need `&mut self`,
// so within this process there is one writer and no reader during a write.
unsafe impl Send for StoreSegment {}
// SAFETY: `&self` methods only read (volatile copies, verified by checksum).
unsafe impl Sync for StoreSegment {}

impl std::fmt::Debug for StoreSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.map.debug("StoreSegment", f)
    }
}

impl Geometry for StoreGeometry {
    const KIND: SegmentKind = SegmentKind::Store;
    const SIZES: (usize, usize) =
        (std::mem::size_of::<ConnRecord>(), std::mem::size_of::<FtpRecord>());
    const SIZES_NAME: &'static str = "records of";

    fn from_header(conn_capacity: u32, ftp_capacity: u32) -> Self {
        StoreGeometry { conn_capacity, ftp_capacity }
    }
    fn to_header(&self) -> (u32, u32) {
        (self.conn_capacity, self.ftp_capacity)
    }
    fn validate(&self) -> Result<(), LayoutError> {
        StoreGeometry::validate(self)
    }
    fn segment_bytes(&self) -> u64 {
        StoreGeometry::segment_bytes(self)
    }
}

impl StoreSegment {
    /// A freshly formatted mapping made an empty store: zeroed memory is not
    /// an empty record (ftp must be NO_FTP).
    fn empty(map: Mapping<StoreGeometry>) -> Self {
        let mut seg = StoreSegment { map };
        for i in 0..seg.map.geom.conn_capacity {
            seg.write_record(i, &ConnRecord::EMPTY);
        }
        seg
    }

    /// Formats `base..base+len` as an empty store.
    ///
    /// # Safety
    /// `base..base+len` is mapped memory, valid for reads and writes, that
    /// outlives the returned value, and nobody else uses it during the call.
    pub unsafe fn format(
        base: *mut u8,
        len: usize,
        geom: StoreGeometry,
    ) -> Result<Self, LayoutError> {
        // SAFETY: the caller's contract, passed on.
        Ok(Self::empty(unsafe { Mapping::format(base, len, geom) }?))
    }

    /// Attaches to a formatted store: checks magic, version, kind, header
    /// checksum, record sizes, and that `len` covers the layout.
    ///
    /// # Safety
    /// `base..base+len` is mapped memory, valid for reads and writes, that
    /// outlives the returned value.
    pub unsafe fn attach(base: *mut u8, len: usize) -> Result<Self, LayoutError> {
        // SAFETY: the caller's contract, passed on.
        Ok(StoreSegment { map: unsafe { Mapping::attach(base, len) }? })
    }

    /// Creates `path` afresh (a stale file or link there is unlinked, never
    /// followed), private to the daemon's user, sized for `geom`, and
    /// formats it. The value keeps the mapping alive.
    pub fn create_file(path: &Path, geom: StoreGeometry) -> Result<Self, LayoutError> {
        Self::create_file_for(path, geom, SegmentAccess::PRIVATE)
    }

    /// [`Self::create_file`] readable by `access`'s group as well.
    pub fn create_file_for(
        path: &Path,
        geom: StoreGeometry,
        access: SegmentAccess,
    ) -> Result<Self, LayoutError> {
        Ok(Self::empty(Mapping::create_file(path, geom, access)?))
    }

    /// Maps and attaches to an existing store file.
    pub fn open_file(path: &Path) -> Result<Self, LayoutError> {
        Ok(StoreSegment { map: Mapping::open_file(path)? })
    }

    /// The mapped file, when the segment came from `create_file`/`open_file`.
    pub fn file(&self) -> Option<&MappedFile> {
        self.map.file.as_ref()
    }

    pub fn geometry(&self) -> StoreGeometry {
        self.map.geom
    }

    /// Chosen at format: a new value means the store was recreated.
    pub fn generation(&self) -> u64 {
        self.map.generation
    }

    /// The boot and TSC rate the stored versions and deadlines belong to.
    pub fn origin(&self) -> SegmentOrigin {
        self.map.origin()
    }

    /// Makes a store from another boot or machine safe to continue: every
    /// portion that verifies gets version 0 (resealed), so any version the
    /// dataplane writes now is newer, and a restore knows (version 0) that
    /// the deadlines inside were another clock's. Then records `now` as the
    /// origin. Portions that fail their checksum are left for the scan that
    /// clears them. Returns how many portions were rebased.
    pub fn rebase(&mut self, now: &SegmentOrigin) -> u64 {
        let geom = self.map.geom;
        let mut rebased = 0;
        for i in 0..geom.conn_capacity {
            let mut rec = self.record(i);
            if rec.used == 0 {
                continue;
            }
            for slot in [&mut rec.ip as &mut dyn Rebase, &mut rec.l4] {
                rebased += u64::from(slot.rebase(rec.conn_id));
            }
            self.write_record(i, &rec);
        }
        for fi in 0..geom.ftp_capacity {
            let mut f = self.ftp_record(fi);
            if f.used != 0 && f.portion.rebase(f.conn_id) {
                rebased += 1;
                self.write_ftp(fi, &f);
            }
        }
        fence(Ordering::Release);
        self.map.set_origin(now);
        rebased
    }

    /// Bytes of the layout (the mapping may be longer).
    pub fn segment_bytes(&self) -> u64 {
        self.map.geom.segment_bytes()
    }

    fn record_ptr(&self, i: u32) -> *mut ConnRecord {
        assert!(
            i < self.map.geom.conn_capacity,
            "conn record {i} of {}",
            self.map.geom.conn_capacity
        );
        // SAFETY: i < conn_capacity, so the record lies inside the layout that
        // attach checked against len; offsets are multiples of 64.
        unsafe {
            self.map
                .base
                .as_ptr()
                .add(
                    self.map.geom.conns_offset() as usize
                        + i as usize * std::mem::size_of::<ConnRecord>(),
                )
                .cast()
        }
    }

    fn ftp_ptr(&self, i: u32) -> *mut FtpRecord {
        assert!(i < self.map.geom.ftp_capacity, "ftp record {i} of {}", self.map.geom.ftp_capacity);
        // SAFETY: i < ftp_capacity: inside the validated layout.
        unsafe {
            self.map
                .base
                .as_ptr()
                .add(
                    self.map.geom.ftp_offset() as usize
                        + i as usize * std::mem::size_of::<FtpRecord>(),
                )
                .cast()
        }
    }

    /// A copy of connection record `i`. Panics if `i >= conn_capacity`.
    pub fn record(&self, i: u32) -> ConnRecord {
        let mut rec = ConnRecord::EMPTY;
        self.record_into(i, &mut rec);
        rec
    }

    /// Copies connection record `i` into `to` (no intermediate copy).
    pub fn record_into(&self, i: u32, to: &mut ConnRecord) {
        // SAFETY: record_ptr is in bounds; records are 192 bytes from a
        // page-aligned base, so 16-aligned; ConnRecord is plain integers
        // with no implicit padding.
        unsafe { copy_out(self.record_ptr(i), to) }
    }

    /// A copy of FTP record `i`. Panics if `i >= ftp_capacity`.
    pub fn ftp_record(&self, i: u32) -> FtpRecord {
        let mut rec = FtpRecord::EMPTY;
        // SAFETY: as in `record_into` (256-byte records).
        unsafe { copy_out(self.ftp_ptr(i), &mut rec) };
        rec
    }

    /// Overwrites connection record `i`. A record written with `used = 0` is
    /// cleared. Panics if `i >= conn_capacity`.
    pub fn write_record(&mut self, i: u32, rec: &ConnRecord) {
        let p = self.record_ptr(i);
        // SAFETY: in bounds, aligned; &mut self: this process's only writer.
        unsafe { std::ptr::write_volatile(p, *rec) };
    }

    /// Overwrites FTP record `i`. Panics if `i >= ftp_capacity`.
    pub fn write_ftp(&mut self, i: u32, rec: &FtpRecord) {
        let p = self.ftp_ptr(i);
        // SAFETY: in bounds, aligned; &mut self: this process's only writer.
        unsafe { std::ptr::write_volatile(p, *rec) };
    }

    /// Starts a connection in record `i`: no portions yet, `used` stored last.
    pub fn init_record(&mut self, i: u32, conn_id: u64, worker: u16) {
        let rec = ConnRecord { conn_id, worker, used: 0, ..ConnRecord::EMPTY };
        self.write_record(i, &rec);
        fence(Ordering::Release);
        self.set_used(i, 1);
    }

    fn set_used(&mut self, i: u32, used: u8) {
        let p = self.record_ptr(i);
        // SAFETY: in bounds; `used` is a u8 field of the record.
        unsafe { std::ptr::write_volatile(std::ptr::addr_of_mut!((*p).used), used) };
    }

    /// Writes the ip (module 0) or layer-4 (tcp/udp/icmp) portion of record
    /// `i`, sealed for the record's conn_id. FTP portions go to the FTP pool
    /// ([`StoreSegment::put_ftp`]).
    pub fn put_portion(
        &mut self,
        i: u32,
        module_id: u8,
        version: u64,
        payload: &[u8],
    ) -> Result<(), LayoutError> {
        let p = self.record_ptr(i);
        // SAFETY: in bounds; conn_id is a plain u64 field.
        let conn_id = unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*p).conn_id)) };
        match module_id {
            module::IP => {
                let slot =
                    PortionSlot::<IP_PORTION_MAX>::seal(conn_id, module_id, version, payload)?;
                // SAFETY: in bounds; &mut self: this process's only writer.
                unsafe { std::ptr::write_volatile(std::ptr::addr_of_mut!((*p).ip), slot) };
            }
            module::TCP | module::UDP | module::ICMP => {
                let slot =
                    PortionSlot::<L4_PORTION_MAX>::seal(conn_id, module_id, version, payload)?;
                // SAFETY: as above.
                unsafe { std::ptr::write_volatile(std::ptr::addr_of_mut!((*p).l4), slot) };
            }
            other => return Err(LayoutError::UnknownModule(other)),
        }
        Ok(())
    }

    /// Removes the ip or layer-4 portion of record `i` (module says which).
    pub fn clear_portion(&mut self, i: u32, module_id: u8) {
        let p = self.record_ptr(i);
        match module_id {
            // SAFETY: in bounds; &mut self: this process's only writer.
            module::IP => unsafe {
                std::ptr::write_volatile(std::ptr::addr_of_mut!((*p).ip), PortionSlot::EMPTY)
            },
            // SAFETY: as above.
            _ => unsafe {
                std::ptr::write_volatile(std::ptr::addr_of_mut!((*p).l4), PortionSlot::EMPTY)
            },
        }
    }

    /// Writes FTP record `fi` for `conn_id` and links it from record `i`.
    pub fn put_ftp(
        &mut self,
        i: u32,
        fi: u32,
        conn_id: u64,
        version: u64,
        payload: &[u8],
    ) -> Result<(), LayoutError> {
        let portion = PortionSlot::<FTP_PORTION_MAX>::seal(conn_id, module::FTP, version, payload)?;
        self.write_ftp(fi, &FtpRecord { conn_id, used: 1, _pad: [0; 7], portion });
        let p = self.record_ptr(i);
        // SAFETY: in bounds; &mut self: this process's only writer.
        unsafe { std::ptr::write_volatile(std::ptr::addr_of_mut!((*p).ftp), fi) };
        Ok(())
    }

    /// Frees record `i` (and nothing else): `used` is cleared first.
    pub fn clear_record(&mut self, i: u32) {
        self.set_used(i, 0);
        fence(Ordering::Release);
        self.write_record(i, &ConnRecord::EMPTY);
    }

    /// Frees FTP record `fi`.
    pub fn clear_ftp(&mut self, fi: u32) {
        self.write_ftp(fi, &FtpRecord::EMPTY);
    }

    /// Every used record of `worker`, copied out, each portion verified; a
    /// portion that fails its checksum is `None` and counted in
    /// [`RestoreIter::corrupt_portions`]. A copy can still be torn if
    /// checkpointd writes the record meanwhile; its checksum then fails.
    pub fn restore_iter(&self, worker: u16) -> RestoreIter<'_> {
        self.scan(Some((worker, None)))
    }

    /// [`StoreSegment::restore_iter`] for a dataplane of `workers` workers:
    /// also every record whose worker is not one of them (copied from an
    /// appliance with another worker count, [`UNPLACED_WORKER`], or stored
    /// when this one ran more workers). Every worker sees those; each keeps
    /// the ones its ports' RSS sends it.
    pub fn restore_iter_placed(&self, worker: u16, workers: u16) -> RestoreIter<'_> {
        self.scan(Some((worker, Some(workers))))
    }

    /// Every used record, whatever its worker, copied out and verified as
    /// in [`StoreSegment::restore_iter`]: a snapshot a reader may take while
    /// checkpointd writes (a record torn by a write reads as failed portions).
    pub fn snapshot_iter(&self) -> RestoreIter<'_> {
        self.scan(None)
    }

    fn scan(&self, worker: Option<(u16, Option<u16>)>) -> RestoreIter<'_> {
        RestoreIter {
            store: self,
            worker,
            next: 0,
            corrupt: 0,
            seen: 0,
            batch: std::array::from_fn(|_| StoredConn::EMPTY),
            batch_len: 0,
            batch_at: 0,
        }
    }
}

/// Whether a slot holds a portion that verifies; counts one that does not.
fn verified<const N: usize>(slot: &PortionSlot<N>, conn_id: u64, bad: &mut u32) -> bool {
    if !slot.is_present() {
        return false;
    }
    let ok = slot.verify(conn_id);
    *bad += u32::from(!ok);
    ok
}

/// Iterator of [`StoreSegment::restore_iter`]. It copies records out a batch
/// at a time, so the hash of one does not read words the copy is still
/// storing; [`RestoreIter::for_each_stored`] lends them from the batch
/// without moving them again (restore's path).
#[derive(Debug)]
pub struct RestoreIter<'a> {
    store: &'a StoreSegment,
    /// None: every worker's; else this worker's, and with a worker count
    /// those at or past it.
    worker: Option<(u16, Option<u16>)>,
    next: u32,
    corrupt: u32,
    seen: u32,
    batch: [StoredConn; RESTORE_BATCH],
    batch_len: usize,
    batch_at: usize,
}

const RESTORE_BATCH: usize = 16;

impl RestoreIter<'_> {
    /// Portions skipped so far because their checksum failed.
    pub fn corrupt_portions(&self) -> u32 {
        self.corrupt
    }
    /// Connections returned so far.
    pub fn conns(&self) -> u32 {
        self.seen
    }

    /// Hands each remaining connection to `f`, borrowed from the batch,
    /// until `f` breaks or none is left.
    pub fn for_each_stored(&mut self, mut f: impl FnMut(&StoredConn) -> ControlFlow<()>) {
        loop {
            if self.batch_at == self.batch_len && !self.fill() {
                return;
            }
            let flow = f(&self.batch[self.batch_at]);
            self.batch_at += 1;
            if flow.is_break() {
                return;
            }
        }
    }

    /// Copies out and verifies the next batch of this worker's records;
    /// false when none is left.
    fn fill(&mut self) -> bool {
        let store = self.store;
        let geom = store.map.geom;
        self.batch_len = 0;
        self.batch_at = 0;
        while self.batch_len < RESTORE_BATCH && self.next < geom.conn_capacity {
            let i = self.next;
            self.next += 1;
            let out = &mut self.batch[self.batch_len];
            store.record_into(i, &mut out.record);
            let rec = &out.record;
            if rec.used != 0
                && self.worker.is_none_or(|(w, workers)| {
                    w == rec.worker || workers.is_some_and(|n| rec.worker >= n)
                })
            {
                out.conn_id = rec.conn_id;
                out.worker = rec.worker;
                self.batch_len += 1;
            }
        }
        for out in &mut self.batch[..self.batch_len] {
            let rec = &out.record;
            let mut bad = 0;
            out.ip_ok = verified(&rec.ip, rec.conn_id, &mut bad);
            out.l4_ok = verified(&rec.l4, rec.conn_id, &mut bad);
            out.ftp = if rec.ftp == NO_FTP {
                None
            } else if rec.ftp < geom.ftp_capacity {
                let f = store.ftp_record(rec.ftp);
                let ok = f.used != 0 && f.conn_id == rec.conn_id;
                bad += u32::from(!ok);
                (ok && verified(&f.portion, rec.conn_id, &mut bad)).then(|| Box::new(f.portion))
            } else {
                bad += 1;
                None
            };
            self.corrupt += bad;
        }
        self.seen += self.batch_len as u32;
        self.batch_len > 0
    }
}

impl Iterator for RestoreIter<'_> {
    type Item = StoredConn;

    fn next(&mut self) -> Option<StoredConn> {
        if self.batch_at == self.batch_len && !self.fill() {
            return None;
        }
        let out = std::mem::replace(&mut self.batch[self.batch_at], StoredConn::EMPTY);
        self.batch_at += 1;
        Some(out)
    }
}
