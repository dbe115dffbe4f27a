//! Where a protected service's client logs live: address space reserved at
//! start, one slot of the log bound per connection the service may hold,
//! so a log grows in place (no copy as it doubles) and nothing is
//! allocated on the packet path. Pages are the kernel's on first touch, and
//! stay: a slot freed by one connection is taken warm by the next (the
//! lowest free first). Past a slot's first 2 MiB the pages are transparent
//! hugepages (for the process's first 8192 slots), so a bulk log faults
//! once per 2 MiB, not per 4 KiB, while a short request/response log costs
//! a 4 KiB page.

use allocator_api2::alloc::{AllocError, Allocator, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const HUGEPAGE: usize = 2 << 20;
const PAGE: usize = 4096;
/// Slots of all reservations in the process whose tails are hinted to
/// transparent hugepages (two mappings each).
const HINTED_SLOTS_MAX: usize = 8192;
static HINTED_SLOTS: AtomicUsize = AtomicUsize::new(0);

fn take_hint_budget() -> bool {
    HINTED_SLOTS
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < HINTED_SLOTS_MAX).then_some(n + 1)
        })
        .is_ok()
}

/// The reserved slots of one service's logs on one worker.
pub struct ReservedLogs {
    base: NonNull<u8>,
    slot: usize,
    slots: usize,
    /// A set bit is a free slot.
    free: Box<[AtomicU64]>,
}

// SAFETY: the mapping is owned by this value for the life of the process
// (it is leaked, never unmapped); slots are handed out through atomic
// claims, so two threads never get the same one.
unsafe impl Send for ReservedLogs {}
// SAFETY: as above: every shared access goes through the atomics.
unsafe impl Sync for ReservedLogs {}

/// Why the address space could not be reserved; the service's logs then
/// use the heap.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("{slots} logs of {slot} bytes is more address space than this machine has")]
    TooLarge { slot: usize, slots: usize },
    #[error("reserving {bytes} bytes of address space for logs: {source} (vm.overcommit_memory = 2 refuses it; lower log_bound or connections)")]
    Map { bytes: usize, source: std::io::Error },
}

impl ReservedLogs {
    /// Reserves `slots` logs of up to `bound` bytes each, for the life of
    /// the process (memory is committed only as logs touch it).
    pub fn reserve(bound: usize, slots: usize) -> Result<&'static ReservedLogs, ReserveError> {
        let slot = bound.max(1).div_ceil(HUGEPAGE) * HUGEPAGE;
        let bytes = slot
            .checked_mul(slots.max(1))
            .filter(|&b| b <= 1 << 46)
            .ok_or(ReserveError::TooLarge { slot, slots })?;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        // SAFETY: an anonymous mapping at an address of the kernel's choosing
        // touches no existing memory.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), bytes + HUGEPAGE, prot, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(ReserveError::Map { bytes, source: std::io::Error::last_os_error() });
        }
        // Slots start on a hugepage boundary (the mapping is one longer).
        let base = (p as usize).div_ceil(HUGEPAGE) * HUGEPAGE;
        if slot > HUGEPAGE {
            // Each slot's hint splits the mapping in two: the process's
            // budget of split slots keeps them far below vm.max_map_count
            // (65530 mappings by default), which DPDK, threads and malloc
            // need too. Slots past it get 4 KiB pages all through.
            let mut hinted = 0;
            while hinted < slots && take_hint_budget() {
                let from = base + hinted * slot + HUGEPAGE;
                // SAFETY: from..from + slot - HUGEPAGE lies inside the mapping
                // just made; a refused hint (no THP) only leaves 4 KiB pages.
                if unsafe { libc::madvise(from as *mut _, slot - HUGEPAGE, libc::MADV_HUGEPAGE) }
                    != 0
                {
                    break;
                }
                hinted += 1;
            }
            if hinted < slots {
                tracing::info!(
                    hinted,
                    slots,
                    "log slots past the process's budget of {HINTED_SLOTS_MAX} take 4 KiB pages all through"
                );
            }
        }
        let words = slots.div_ceil(64);
        let free = (0..words)
            .map(|w| {
                let n = (slots - w * 64).min(64);
                AtomicU64::new(if n == 64 { u64::MAX } else { (1u64 << n) - 1 })
            })
            .collect();
        let base = NonNull::new(base as *mut u8).expect("mmap returned a null mapping");
        Ok(Box::leak(Box::new(ReservedLogs { base, slot, slots, free })))
    }

    /// Bytes one log may take.
    pub fn slot_bytes(&self) -> usize {
        self.slot
    }

    fn claim(&self) -> Option<usize> {
        for (w, word) in self.free.iter().enumerate() {
            let mut v = word.load(Ordering::Relaxed);
            while v != 0 {
                let bit = 1u64 << v.trailing_zeros();
                let was = word.fetch_and(!bit, Ordering::AcqRel);
                if was & bit != 0 {
                    return Some(w * 64 + bit.trailing_zeros() as usize);
                }
                v = was & !bit;
            }
        }
        None
    }

    fn slot_of(&self, ptr: NonNull<u8>) -> usize {
        (ptr.as_ptr() as usize - self.base.as_ptr() as usize) / self.slot
    }

    fn whole(&self, ptr: NonNull<u8>) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(ptr, self.slot)
    }
}

// SAFETY: each block is a slot of the reservation, given to one holder at a
// time (claimed atomically, returned in deallocate); it is `slot` bytes,
// page-aligned (larger alignments are refused), valid for the life of the
// process. grow and shrink keep the block where it is: the whole slot is
// the holder's already.
unsafe impl Allocator for ReservedLogs {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() > self.slot || layout.align() > PAGE {
            return Err(AllocError);
        }
        let i = self.claim().ok_or(AllocError)?;
        // SAFETY: i < slots, so the slot lies inside the reservation.
        let p = unsafe { self.base.add(i * self.slot) };
        Ok(self.whole(p))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, _layout: Layout) {
        let i = self.slot_of(ptr);
        if i < self.slots {
            self.free[i / 64].fetch_or(1 << (i % 64), Ordering::AcqRel);
        }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        _old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if new.size() > self.slot || new.align() > PAGE {
            return Err(AllocError);
        }
        Ok(self.whole(ptr))
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        _old: Layout,
        _new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        Ok(self.whole(ptr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_api2::vec::Vec;

    #[test]
    fn a_log_grows_in_place_and_its_slot_is_taken_again() {
        let logs = ReservedLogs::reserve(3 << 20, 3).unwrap();
        let mut a: Vec<u8, &ReservedLogs> = Vec::new_in(logs);
        a.extend_from_slice(&[1; 100]);
        let at = a.as_ptr();
        a.extend_from_slice(&vec![2; 3 << 20][..(3 << 20) - 100]);
        assert_eq!(a.as_ptr(), at, "grown in place");
        assert_eq!(a.len(), 3 << 20);
        assert!(a.try_reserve(logs.slot_bytes()).is_err(), "never past its slot");
        let b: Vec<u8, &ReservedLogs> = allocator_api2::vec![in logs; 7u8; 10];
        let c: Vec<u8, &ReservedLogs> = allocator_api2::vec![in logs; 8u8; 10];
        let mut d: Vec<u8, &ReservedLogs> = Vec::new_in(logs);
        assert!(d.try_reserve(1).is_err(), "three slots, three logs");
        let freed = b.as_ptr();
        drop(b);
        d.extend_from_slice(b"again");
        assert_eq!(d.as_ptr(), freed, "the freed slot is taken again");
        assert_eq!((a[0], a[(3 << 20) - 1], c[9], &d[..]), (1, 2, 8, &b"again"[..]));
    }

    #[test]
    fn many_large_slots_do_not_use_up_the_process_mappings() {
        let maps = || std::fs::read_to_string("/proc/self/maps").unwrap().lines().count();
        let before = maps();
        ReservedLogs::reserve(4 << 20, 40_000).unwrap();
        assert!(maps() < before + 2 * HINTED_SLOTS_MAX + 16, "{} mappings", maps());
        ReservedLogs::reserve(4 << 20, 16).expect("room for more mappings");
        assert!(std::thread::spawn(|| 1).join().is_ok());
    }

    #[test]
    fn slots_past_a_word_of_bits_are_handed_out_once_each() {
        let logs = ReservedLogs::reserve(4096, 130).unwrap();
        let held: std::vec::Vec<_> = (0..130)
            .map(|_| logs.allocate(Layout::from_size_align(64, 1).unwrap()).unwrap())
            .collect();
        let mut at: std::vec::Vec<usize> =
            held.iter().map(|p| p.as_ptr() as *mut u8 as usize).collect();
        at.sort_unstable();
        at.dedup();
        assert_eq!(at.len(), 130);
        assert!(logs.allocate(Layout::from_size_align(64, 1).unwrap()).is_err());
    }
}
