use super::{last_error, DpdkError};
use std::ffi::CString;

/// A pktmbuf pool. Must be dropped after every port that uses it and before EAL.
pub struct Mempool {
    raw: *mut dpdk_sys::rte_mempool,
}

// SAFETY: DPDK mempools are thread-safe (per-lcore caches + lock-free ring).
unsafe impl Send for Mempool {}
// SAFETY: as above.
unsafe impl Sync for Mempool {}

impl Mempool {
    pub fn new(
        name: &str,
        count: u32,
        cache: u32,
        data_room: u16,
        socket: i32,
    ) -> Result<Mempool, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::Mempool {
            name: name.into(),
            count,
            reason: "name contains NUL".into(),
        })?;
        // SAFETY: EAL is initialised (a Mempool is only made after Eal::init); the
        // name is a valid C string; sizes are checked by DPDK.
        let raw = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(cname.as_ptr(), count, cache, 0, data_room, socket)
        };
        if raw.is_null() {
            let (errno, reason) = last_error();
            return Err(DpdkError::Mempool {
                name: name.into(),
                count,
                reason: format!("{reason} (rte_errno {errno})"),
            });
        }
        Ok(Mempool { raw })
    }

    pub(crate) fn raw(&self) -> *mut dpdk_sys::rte_mempool {
        self.raw
    }

    /// Mbufs currently free in the pool (including per-lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: raw is a live mempool.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.raw) }
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: every port using this pool was stopped and closed before (ports
        // are declared after the pool and dropped first).
        unsafe { dpdk_sys::rte_mempool_free(self.raw) };
    }
}

/// The pool the dataplane makes, by the name a secondary or telemetry finds it.
pub const POOL_NAME: &str = "lazarus_pkts";

/// (available, in use) of the pool named `name`, looked up now: None when no
/// such pool exists (not made yet, or freed at shutdown).
pub fn pool_counts(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    // SAFETY: EAL is up; cname is a valid C string.
    let mp = unsafe { dpdk_sys::rte_mempool_lookup(cname.as_ptr()) };
    if mp.is_null() {
        return None;
    }
    // SAFETY: mp is a live mempool (lookup found it).
    unsafe { Some((dpdk_sys::rte_mempool_avail_count(mp), dpdk_sys::rte_mempool_in_use_count(mp))) }
}

/// A pool found by name (this process's, or the port owner's in a worker
/// process): not freed when dropped.
#[derive(Debug, Clone, Copy)]
pub struct SharedPool(*mut dpdk_sys::rte_mempool);

// SAFETY: DPDK mempools are thread-safe, and a pool outlives the workers.
unsafe impl Send for SharedPool {}

impl SharedPool {
    pub fn lookup(name: &str) -> Option<SharedPool> {
        let cname = CString::new(name).ok()?;
        // SAFETY: EAL is initialised; lookup returns NULL when there is no such pool.
        let mp = unsafe { dpdk_sys::rte_mempool_lookup(cname.as_ptr()) };
        (!mp.is_null()).then_some(SharedPool(mp))
    }

    pub(crate) fn raw(&self) -> *mut dpdk_sys::rte_mempool {
        self.0
    }
}
