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
use crate::segment::{Geometry, Mapping};
use crate::trust::SegmentAccess;
use crate::{module, LayoutError};
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

/// A verified portion read back from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredPortion<'a> {
    pub module: u8,
    pub version: u64,
    pub payload: &'a [u8],
}

/// A stored connection; a portion that failed its checksum is `None` (and
/// counted by the iterator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredConn<'a> {
    pub conn_id: u64,
    pub worker: u16,
    pub ip: Option<StoredPortion<'a>>,
    pub l4: Option<StoredPortion<'a>>,
    pub ftp: Option<StoredPortion<'a>>,
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
    /// Record `i` where it lies, for readers of a quiescent store (restore).
    fn record_in_place(&self, i: u32) -> &ConnRecord {
        // SAFETY: record_ptr is in bounds and aligned; ConnRecord is plain
        // integers, so any bytes are a valid value; restore_iter's contract is
        // that nobody writes the segment while it runs.
        unsafe { &*self.record_ptr(i) }
    }

    fn ftp_in_place(&self, i: u32) -> &FtpRecord {
        // SAFETY: as for record_in_place.
        unsafe { &*self.ftp_ptr(i) }
    }

    pub fn record(&self, i: u32) -> ConnRecord {
        // SAFETY: record_ptr is in bounds and aligned; ConnRecord is plain
        // integers, any bytes are a valid value; a volatile copy never
        // assumes the bytes stay put.
        unsafe { std::ptr::read_volatile(self.record_ptr(i)) }
    }

    /// A copy of FTP record `i`. Panics if `i >= ftp_capacity`.
    pub fn ftp_record(&self, i: u32) -> FtpRecord {
        // SAFETY: as in `record`.
        unsafe { std::ptr::read_volatile(self.ftp_ptr(i)) }
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

    /// Reads a record's portions, verified. Returns the conn and how many
    /// portions failed their checksum.
    pub fn load(&self, i: u32) -> Option<(StoredConn<'_>, u32)> {
        let rec = self.record(i);
        if rec.used == 0 {
            return None;
        }
        let mut bad = 0;
        let p = self.record_ptr(i);
        // SAFETY: in bounds; the slices cover the payload arrays of this
        // record, which live as long as the segment. See `restore_iter` for
        // why they may be borrowed: the store is quiescent at restore.
        let (ip_payload, l4_payload) = unsafe {
            (
                &*std::ptr::addr_of!((*p).ip.payload).cast::<[u8; IP_PORTION_MAX]>(),
                &*std::ptr::addr_of!((*p).l4.payload).cast::<[u8; L4_PORTION_MAX]>(),
            )
        };
        let ip = portion(&rec.ip, rec.conn_id, ip_payload, &mut bad);
        let l4 = portion(&rec.l4, rec.conn_id, l4_payload, &mut bad);
        let ftp = if rec.ftp != NO_FTP && rec.ftp < self.map.geom.ftp_capacity {
            let f = self.ftp_record(rec.ftp);
            let fp = self.ftp_ptr(rec.ftp);
            // SAFETY: in bounds; as for the record's payloads.
            let payload = unsafe {
                &*std::ptr::addr_of!((*fp).portion.payload).cast::<[u8; FTP_PORTION_MAX]>()
            };
            if f.used != 0 && f.conn_id == rec.conn_id {
                portion(&f.portion, rec.conn_id, payload, &mut bad)
            } else {
                bad += 1;
                None
            }
        } else {
            None
        };
        Some((StoredConn { conn_id: rec.conn_id, worker: rec.worker, ip, l4, ftp }, bad))
    }

    /// Every used record of `worker`, each portion verified; a portion that
    /// fails its checksum is `None` and counted in
    /// [`RestoreIter::corrupt_portions`].
    ///
    /// The payload slices point into the segment: read them while the store
    /// is quiescent, i.e. after checkpointd reported every ring drained and
    /// before this worker produces again (the dataplane's restore order).
    pub fn restore_iter(&self, worker: u16) -> RestoreIter<'_> {
        RestoreIter { store: self, worker, next: 0, corrupt: 0, seen: 0 }
    }
}

fn portion_in_place<'a, const N: usize>(
    slot: &'a PortionSlot<N>,
    conn_id: u64,
    bad: &mut u32,
) -> Option<StoredPortion<'a>> {
    if !slot.is_present() {
        return None;
    }
    if !slot.verify(conn_id) {
        *bad += 1;
        return None;
    }
    Some(StoredPortion { module: slot.module, version: slot.version, payload: slot.payload() })
}

fn portion<'a, const N: usize>(
    slot: &PortionSlot<N>,
    conn_id: u64,
    live: &'a [u8; N],
    bad: &mut u32,
) -> Option<StoredPortion<'a>> {
    if !slot.is_present() {
        return None;
    }
    let len = slot.len as usize;
    if !slot.verify(conn_id) || live[..len] != slot.payload[..len] {
        *bad += 1;
        return None;
    }
    Some(StoredPortion { module: slot.module, version: slot.version, payload: &live[..len] })
}

/// Iterator of [`StoreSegment::restore_iter`].
#[derive(Debug)]
pub struct RestoreIter<'a> {
    store: &'a StoreSegment,
    worker: u16,
    next: u32,
    corrupt: u32,
    seen: u32,
}

impl RestoreIter<'_> {
    /// Portions skipped so far because their checksum failed.
    pub fn corrupt_portions(&self) -> u32 {
        self.corrupt
    }
    /// Connections returned so far.
    pub fn conns(&self) -> u32 {
        self.seen
    }
}

impl<'a> Iterator for RestoreIter<'a> {
    type Item = StoredConn<'a>;

    fn next(&mut self) -> Option<StoredConn<'a>> {
        let store = self.store;
        while self.next < store.map.geom.conn_capacity {
            let i = self.next;
            self.next += 1;
            // In place, no copy: the store is quiescent during a restore.
            let rec = store.record_in_place(i);
            if rec.used == 0 || rec.worker != self.worker {
                continue;
            }
            let mut bad = 0;
            let ip = portion_in_place(&rec.ip, rec.conn_id, &mut bad);
            let l4 = portion_in_place(&rec.l4, rec.conn_id, &mut bad);
            let ftp = if rec.ftp == NO_FTP {
                None
            } else if rec.ftp < store.map.geom.ftp_capacity {
                let f = store.ftp_in_place(rec.ftp);
                if f.used != 0 && f.conn_id == rec.conn_id {
                    portion_in_place(&f.portion, rec.conn_id, &mut bad)
                } else {
                    bad += 1;
                    None
                }
            } else {
                bad += 1;
                None
            };
            self.corrupt += bad;
            self.seen += 1;
            return Some(StoredConn { conn_id: rec.conn_id, worker: rec.worker, ip, l4, ftp });
        }
        None
    }
}
