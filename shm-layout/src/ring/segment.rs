//! The rings segment: the header page (with checkpointd's heartbeat), then
//! per worker a control block and the slots; hands out one producer and one
//! consumer per ring.

use super::{
    DeltaConsumer, DeltaProducer, RingCtrl, RingStatus, RingsGeometry, DELTA_SLOT_BYTES,
    RECORD_SLOTS_MAX, RING_CTRL_BYTES,
};
use crate::header::{SegmentKind, HEADER_BYTES};
use crate::mapped::MappedFile;
use crate::segment::{Geometry, Mapping};
use crate::sync::SlotCells;
use crate::trust::SegmentAccess;
use crate::LayoutError;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

pub(crate) const HEARTBEAT_OFFSET: usize = 128;

/// checkpointd's liveness, in the header page.
#[repr(C)]
pub(crate) struct HeartbeatShm {
    pub(crate) monotonic_ns: AtomicU64,
    pub(crate) pid: AtomicU32,
    pub(crate) _pad0: [u8; 4],
    /// Chosen by each checkpointd at its start (layout 6).
    pub(crate) incarnation: AtomicU64,
    pub(crate) _pad: [u8; 104],
}
const _: () = assert!(HEARTBEAT_OFFSET + std::mem::size_of::<HeartbeatShm>() <= HEADER_BYTES);
/// checkpointd's last beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat {
    /// 0 when checkpointd never beat.
    pub pid: u32,
    /// CLOCK_MONOTONIC nanoseconds of the last beat.
    pub monotonic_ns: u64,
    /// Which start of checkpointd beats: a new one holds nothing of what
    /// lives only in a checkpointd's memory (protected connections), and
    /// its pid may be the old one's (a PID namespace). 0: never set.
    pub incarnation: u64,
}

/// The rings segment. Holds the mapping alive when created by
/// `create_file`/`open_file`.
pub struct RingsSegment {
    map: Mapping<RingsGeometry>,
    producers: Box<[AtomicBool]>,
    consumers: Box<[AtomicBool]>,
    /// Per ring, the control block and slot cells loom checks (see sync.rs).
    #[cfg(loom)]
    loom: Box<[(RingCtrl, Box<[loom::cell::UnsafeCell<()>]>)]>,
}

// SAFETY: the segment is shared memory accessed only through atomics and
// through producer/consumer handles whose exclusivity (one each per ring in
// this process) is enforced by the `producers`/`consumers` flags; the raw
// base pointer is never exposed for unsynchronised writes.
unsafe impl Send for RingsSegment {}
// SAFETY: as for Send: every &self method either touches atomics only or
// hands out a handle that takes its ring's exclusivity flag.
unsafe impl Sync for RingsSegment {}

impl std::fmt::Debug for RingsSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.map.debug("RingsSegment", f)
    }
}

impl Geometry for RingsGeometry {
    const KIND: SegmentKind = SegmentKind::Rings;
    const SIZES: (usize, usize) = (DELTA_SLOT_BYTES, RING_CTRL_BYTES);
    const SIZES_NAME: &'static str = "slot / control";

    fn from_header(workers: u32, slots_per_ring: u32) -> Self {
        RingsGeometry { workers, slots_per_ring }
    }
    fn to_header(&self) -> (u32, u32) {
        (self.workers, self.slots_per_ring)
    }
    fn validate(&self) -> Result<(), LayoutError> {
        RingsGeometry::validate(self)
    }
    fn segment_bytes(&self) -> u64 {
        RingsGeometry::segment_bytes(self)
    }
}

impl RingsSegment {
    fn new(map: Mapping<RingsGeometry>) -> Self {
        let flags = |n: u32| (0..n).map(|_| AtomicBool::new(false)).collect::<Box<[_]>>();
        let workers = map.geom.workers;
        #[cfg(loom)]
        let loom = (0..workers)
            .map(|_| {
                let cells = (0..map.geom.slots_per_ring).map(|_| Default::default()).collect();
                (RingCtrl::new(), cells)
            })
            .collect();
        RingsSegment {
            map,
            producers: flags(workers),
            consumers: flags(workers),
            #[cfg(loom)]
            loom,
        }
    }

    /// Formats `base..base+len` as an empty rings segment.
    ///
    /// # Safety
    /// `base..base+len` is mapped memory, valid for reads and writes, that
    /// outlives the returned value, and nobody else uses it during the call.
    pub unsafe fn format(
        base: *mut u8,
        len: usize,
        geom: RingsGeometry,
    ) -> Result<Self, LayoutError> {
        // SAFETY: the caller's contract, passed on.
        Ok(Self::new(unsafe { Mapping::format(base, len, geom) }?))
    }

    /// Attaches to a formatted rings segment: checks magic, version, kind,
    /// header checksum, that `len` covers the layout, and the geometry.
    ///
    /// # Safety
    /// `base..base+len` is mapped memory, valid for reads and writes, that
    /// outlives the returned value.
    pub unsafe fn attach(base: *mut u8, len: usize) -> Result<Self, LayoutError> {
        // SAFETY: the caller's contract, passed on.
        Ok(Self::new(unsafe { Mapping::attach(base, len) }?))
    }

    /// Creates `path` afresh (a stale file or link there is unlinked, never
    /// followed), private to the daemon's user, sized for `geom`, and
    /// formats it. The value keeps the mapping alive.
    pub fn create_file(path: &Path, geom: RingsGeometry) -> Result<Self, LayoutError> {
        Self::create_file_for(path, geom, SegmentAccess::PRIVATE)
    }

    /// [`Self::create_file`] readable by `access`'s group as well.
    pub fn create_file_for(
        path: &Path,
        geom: RingsGeometry,
        access: SegmentAccess,
    ) -> Result<Self, LayoutError> {
        Ok(Self::new(Mapping::create_file(path, geom, access)?))
    }

    /// Maps and attaches to an existing rings file.
    pub fn open_file(path: &Path) -> Result<Self, LayoutError> {
        Ok(Self::new(Mapping::open_file(path)?))
    }

    /// The mapped file, when the segment came from `create_file`/`open_file`.
    pub fn file(&self) -> Option<&MappedFile> {
        self.map.file.as_ref()
    }

    pub fn geometry(&self) -> RingsGeometry {
        self.map.geom
    }

    /// Identifies this formatting of the segment.
    pub fn generation(&self) -> u64 {
        self.map.generation
    }

    /// The boot and TSC rate the versions in the rings belong to.
    pub fn origin(&self) -> crate::SegmentOrigin {
        self.map.origin()
    }

    /// checkpointd, at start, once what the rings held is in the store:
    /// their deltas now belong to `now`'s clock.
    pub fn set_origin(&self, now: &crate::SegmentOrigin) {
        self.map.set_origin(now)
    }

    /// Bytes of the layout (the mapping may be longer).
    pub fn segment_bytes(&self) -> u64 {
        self.map.geom.segment_bytes()
    }

    fn check_worker(&self, worker: u32) -> Result<(), LayoutError> {
        if worker >= self.map.geom.workers {
            return Err(LayoutError::NoSuchRing { worker, workers: self.map.geom.workers });
        }
        Ok(())
    }

    fn ring_offset(&self, worker: u32) -> usize {
        HEADER_BYTES + worker as usize * self.map.geom.ring_bytes() as usize
    }

    fn ctrl(&self, worker: u32) -> &RingCtrl {
        assert!(worker < self.map.geom.workers, "ring {worker} of {}", self.map.geom.workers);
        #[cfg(loom)]
        return &self.loom[worker as usize].0;
        #[cfg(not(loom))]
        // SAFETY: the offset is inside the validated layout (attach checked
        // len >= segment_bytes), 64-byte aligned (HEADER_BYTES, ring_bytes are
        // multiples of 256), and RingCtrl is atomics plus padding nobody
        // writes, so a shared reference is sound for the segment's lifetime.
        unsafe {
            &*self.map.base.as_ptr().add(self.ring_offset(worker)).cast::<RingCtrl>()
        }
    }

    fn slots(&self, worker: u32) -> NonNull<u8> {
        // SAFETY: inside the validated layout, as in ctrl().
        unsafe {
            NonNull::new_unchecked(
                self.map.base.as_ptr().add(self.ring_offset(worker) + RING_CTRL_BYTES),
            )
        }
    }

    fn cells(&self, worker: u32) -> SlotCells<'_> {
        #[cfg(loom)]
        return SlotCells::new(&self.loom[worker as usize].1);
        #[cfg(not(loom))]
        {
            let _ = worker;
            SlotCells::new()
        }
    }

    fn heartbeat_shm(&self) -> &HeartbeatShm {
        // SAFETY: the header page is HEADER_BYTES long and HEARTBEAT_OFFSET +
        // size_of::<HeartbeatShm>() fits in it (compile-time assert); only
        // atomics and untouched padding.
        unsafe { &*self.map.base.as_ptr().add(HEARTBEAT_OFFSET).cast::<HeartbeatShm>() }
    }

    /// The producer handle of ring `worker`, resuming at its published head.
    /// One per ring per process at a time.
    pub fn producer(&self, worker: u32) -> Result<DeltaProducer<'_>, LayoutError> {
        self.check_worker(worker)?;
        let taken = &self.producers[worker as usize];
        if taken.swap(true, Ordering::Acquire) {
            return Err(LayoutError::RingInUse { worker, role: "producer" });
        }
        let ctrl = self.ctrl(worker);
        let head = ctrl.head.load(Ordering::Acquire);
        Ok(DeltaProducer {
            ctrl,
            slots: self.slots(worker),
            mask: u64::from(self.map.geom.slots_per_ring) - 1,
            size: u64::from(self.map.geom.slots_per_ring),
            head,
            unsealed: head,
            cached_tail: ctrl.tail.load(Ordering::Acquire),
            streamed: false,
            taken,
            cells: self.cells(worker),
        })
    }

    /// The consumer handle of ring `worker`, resuming at its published tail.
    /// One per ring per process at a time.
    pub fn consumer(&self, worker: u32) -> Result<DeltaConsumer<'_>, LayoutError> {
        self.check_worker(worker)?;
        let taken = &self.consumers[worker as usize];
        if taken.swap(true, Ordering::Acquire) {
            return Err(LayoutError::RingInUse { worker, role: "consumer" });
        }
        let ctrl = self.ctrl(worker);
        Ok(DeltaConsumer {
            ctrl,
            slots: self.slots(worker),
            mask: u64::from(self.map.geom.slots_per_ring) - 1,
            size: u64::from(self.map.geom.slots_per_ring),
            tail: ctrl.tail.load(Ordering::Acquire),
            skipping: false,
            scratch: Box::new([0; RECORD_SLOTS_MAX as usize * DELTA_SLOT_BYTES]),
            taken,
            cells: self.cells(worker),
        })
    }

    /// Ring `worker`'s shared counters. Panics if `worker >= workers`.
    pub fn status(&self, worker: u32) -> RingStatus {
        let c = self.ctrl(worker);
        RingStatus {
            head: c.head.load(Ordering::Acquire),
            tail: c.tail.load(Ordering::Acquire),
            resync_epoch: c.resync_epoch.load(Ordering::Acquire),
            torn: c.torn.load(Ordering::Relaxed),
            applied: c.applied.load(Ordering::Relaxed),
        }
    }

    /// checkpointd's last beat (pid 0: never).
    pub fn heartbeat(&self) -> Heartbeat {
        let hb = self.heartbeat_shm();
        // H1 (Acquire) pairs with H2 in `beat`: the pid read belongs to a beat
        // at least as new as the timestamp.
        let monotonic_ns = hb.monotonic_ns.load(Ordering::Acquire);
        Heartbeat {
            pid: hb.pid.load(Ordering::Relaxed),
            monotonic_ns,
            incarnation: hb.incarnation.load(Ordering::Relaxed),
        }
    }

    /// checkpointd, at its start: a value no earlier start chose.
    pub fn set_incarnation(&self, incarnation: u64) {
        self.heartbeat_shm().incarnation.store(incarnation, Ordering::Release);
    }

    /// checkpointd: records a beat (CLOCK_MONOTONIC ns, see [`crate::monotonic_ns`]).
    pub fn beat(&self, pid: u32, monotonic_ns: u64) {
        let hb = self.heartbeat_shm();
        hb.pid.store(pid, Ordering::Relaxed);
        // H2 (Release) pairs with H1.
        hb.monotonic_ns.store(monotonic_ns, Ordering::Release);
    }

    /// checkpointd: every protected connection's record below `position`
    /// of ring `worker` is in the remote store. Never moves back. Panics if
    /// `worker >= workers`.
    pub fn set_remote_committed(&self, worker: u32, position: u64) {
        self.ctrl(worker).remote_committed.fetch_max(position, Ordering::AcqRel);
    }

    /// checkpointd: asks the producer of ring `worker` to re-emit every
    /// connection (the store was lost). Panics if `worker >= workers`.
    pub fn request_resync(&self, worker: u32) {
        self.ctrl(worker).resync_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Test support: overwrite ring `worker`'s published head, as a producer
    /// bug or a stale segment could. Not for production use.
    #[doc(hidden)]
    pub fn test_force_head(&self, worker: u32, head: u64) {
        self.ctrl(worker).head.store(head, Ordering::Release);
    }
}
