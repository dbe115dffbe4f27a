use allocator_api2::alloc::{AllocError, Allocator, Layout};
use std::ptr::NonNull;

/// Allocates from DPDK's heap (`rte_zmalloc_socket`): hugepage memory on the
/// given NUMA socket, zeroed. Used for the connection tables, which are sized
/// once at start; nothing on the packet path allocates through it.
///
/// A worker process of a supervised dataplane allocates `private`ly instead
/// (kernel hugepages of its own, as [`KernelHugepageAlloc`]): DPDK's heap is
/// shared by the processes of an EAL, so what a killed process allocated there
/// would stay allocated, table after table, restart after restart.
#[derive(Debug, Clone, Copy)]
pub struct HugepageAlloc {
    pub socket: i32,
    pub private: bool,
}

// SAFETY: rte_zmalloc_socket returns zeroed, suitably aligned blocks that stay
// valid until rte_free; rte_free accepts exactly those pointers. DPDK's heap is
// thread-safe, so the allocator may be shared and sent.
unsafe impl Allocator for HugepageAlloc {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if self.private {
            return KernelHugepageAlloc.allocate(layout);
        }
        if layout.size() == 0 {
            // SAFETY: a dangling, aligned pointer is the standard zero-size allocation.
            let p = unsafe { NonNull::new_unchecked(layout.align() as *mut u8) };
            return Ok(NonNull::slice_from_raw_parts(p, 0));
        }
        // SAFETY: EAL is initialised before any table is built; the name may be NULL.
        let p = unsafe {
            dpdk_sys::rte_zmalloc_socket(
                std::ptr::null(),
                layout.size(),
                layout.align().max(64) as u32,
                self.socket,
            )
        };
        NonNull::new(p as *mut u8)
            .map(|p| NonNull::slice_from_raw_parts(p, layout.size()))
            .ok_or(AllocError)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if self.private {
            // SAFETY: ptr came from KernelHugepageAlloc::allocate (the caller's contract).
            return unsafe { KernelHugepageAlloc.deallocate(ptr, layout) };
        }
        if layout.size() != 0 {
            // SAFETY: ptr came from rte_zmalloc_socket in allocate (the caller's contract).
            unsafe { dpdk_sys::rte_free(ptr.as_ptr() as *mut std::ffi::c_void) };
        }
    }
}

/// Allocates whole 2 MiB hugepages straight from the kernel (anonymous
/// `MAP_HUGETLB`), falling back to transparent hugepages when the pool is
/// empty. For tables built without EAL (benchmarks, tools) that must see the
/// TLB behaviour of the dataplane's [`HugepageAlloc`], not 4 KiB pages.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelHugepageAlloc;

const HUGEPAGE: usize = 2 << 20;
/// What every mapping is aligned to, hugepage or not (the THP fallback's
/// mapping is only page-aligned).
const PAGE: usize = 4096;

// SAFETY: every block is its own fresh, zero-filled mapping of whole 2 MiB
// units, page-aligned at least (larger alignments are refused), valid until
// the munmap in deallocate; mmap and munmap are thread-safe.
unsafe impl Allocator for KernelHugepageAlloc {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 || layout.align() > PAGE {
            return Err(AllocError);
        }
        let len = layout.size().div_ceil(HUGEPAGE) * HUGEPAGE;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        // SAFETY: an anonymous mapping at an address of the kernel's choosing
        // touches no existing memory.
        let mut p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, prot, flags | libc::MAP_HUGETLB, -1, 0)
        };
        if p == libc::MAP_FAILED {
            // No populate here: faulting the pages in before the madvise
            // would fault them as 4 KiB pages.
            // SAFETY: as above, without MAP_HUGETLB.
            p = unsafe {
                libc::mmap(std::ptr::null_mut(), len, prot, flags & !libc::MAP_POPULATE, -1, 0)
            };
            if p == libc::MAP_FAILED {
                return Err(AllocError);
            }
            // SAFETY: p..p+len is the mapping just made; a refused hint is harmless.
            unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
        }
        NonNull::new(p as *mut u8)
            .map(|p| NonNull::slice_from_raw_parts(p, layout.size()))
            .ok_or(AllocError)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        let len = layout.size().div_ceil(HUGEPAGE) * HUGEPAGE;
        // SAFETY: ptr and len are those of a mapping made in allocate (the caller's contract).
        unsafe { libc::munmap(ptr.as_ptr() as *mut libc::c_void, len) };
    }
}

/// Starts fetching the cache lines of `*r` into the caches, as DPDK's
/// `rte_prefetch0` does for each of them; returns at once. For a record the
/// packet path will touch a little later, so its misses overlap.
///
/// A `T` that is not aligned to its lines spans one line more than its size
/// suggests (a 168-byte record: 3 lines or 4, by where it starts), so the
/// line of its last byte is fetched too. Unconditionally: a branch on the
/// alignment is one the predictor cannot learn; fetching a line twice
/// costs one instruction.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = (r as *const T).cast::<i8>();
        let size = std::mem::size_of::<T>();
        let mut off = 0;
        while off < size {
            // SAFETY: a prefetch is a hint that neither reads nor writes
            // memory as far as the program is concerned and cannot fault;
            // the address is inside `*r` anyway (off < size_of::<T>()).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off)) };
            off += 64;
        }
        if size > 64 {
            // SAFETY: as above; size - 1 is `*r`'s last byte.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(size - 1)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

impl lazarus_core::conn::table::TableMemory for HugepageAlloc {
    #[inline(always)]
    fn prefetch<R>(record: &R) {
        prefetch(record);
    }
}

impl lazarus_core::conn::table::TableMemory for KernelHugepageAlloc {
    #[inline(always)]
    fn prefetch<R>(record: &R) {
        prefetch(record);
    }
}
