use allocator_api2::alloc::{AllocError, Allocator, Layout};
use std::ptr::NonNull;

/// Allocates from DPDK's heap (`rte_zmalloc_socket`): hugepage memory on the
/// given NUMA socket, zeroed. Used for the connection tables, which are sized
/// once at start; nothing on the packet path allocates through it.
#[derive(Debug, Clone, Copy)]
pub struct HugepageAlloc {
    pub socket: i32,
}

// SAFETY: rte_zmalloc_socket returns zeroed, suitably aligned blocks that stay
// valid until rte_free; rte_free accepts exactly those pointers. DPDK's heap is
// thread-safe, so the allocator may be shared and sent.
unsafe impl Allocator for HugepageAlloc {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            // SAFETY: a dangling, aligned pointer is the standard zero-size allocation.
            let p = unsafe { NonNull::new_unchecked(layout.align() as *mut u8) };
            return Ok(NonNull::slice_from_raw_parts(p, 0));
        }
        // SAFETY: EAL is initialised before any table is built; the name may be NULL.
        let p = unsafe { dpdk_sys::rte_zmalloc_socket(std::ptr::null(), layout.size(), layout.align().max(64) as u32, self.socket) };
        NonNull::new(p as *mut u8).map(|p| NonNull::slice_from_raw_parts(p, layout.size())).ok_or(AllocError)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: ptr came from rte_zmalloc_socket in allocate (the caller's contract).
            unsafe { dpdk_sys::rte_free(ptr.as_ptr() as *mut std::ffi::c_void) };
        }
    }
}
