//! What a killed secondary process leaves in DPDK's shared heap. EAL's start
//! in a secondary allocates there (the service cores' tables, a PMD's
//! per-process data), and only its own `rte_eal_cleanup` frees that: after a
//! SIGKILL nothing does, and each restart would keep ~150 KiB for good. DPDK
//! 22.11 records no owner for an allocation, so the port owner diffs the
//! heap's busy elements (as `rte_malloc_dump_heaps` lists them) around a
//! worker process's start, and frees exactly those when the process is
//! killed.

use std::collections::HashSet;

/// One busy element of DPDK's heap, as the heap dump names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeapElement {
    pub addr: usize,
    pub len: usize,
    pub pad: usize,
}

/// The busy elements of every heap now (empty if the dump cannot be read).
pub fn busy_elements() -> HashSet<HeapElement> {
    parse_dump(&dump())
}

fn dump() -> String {
    let mut buf: *mut libc::c_char = std::ptr::null_mut();
    let mut size: libc::size_t = 0;
    // SAFETY: open_memstream writes the buffer's address and size into the
    // two locals, which outlive the stream (closed below).
    let f = unsafe { libc::open_memstream(&mut buf, &mut size) };
    if f.is_null() {
        return String::new();
    }
    // SAFETY: f is an open stdio stream; DPDK writes text to it under the
    // heaps' locks. Then the stream is closed once, which finalises buf.
    unsafe {
        dpdk_sys::rte_malloc_dump_heaps(f.cast());
        libc::fclose(f);
    }
    if buf.is_null() {
        return String::new();
    }
    // SAFETY: after fclose, buf holds `size` bytes and a NUL, allocated by
    // libc's malloc, freed here once.
    unsafe {
        let text = String::from_utf8_lossy(std::slice::from_raw_parts(buf as *const u8, size))
            .into_owned();
        libc::free(buf.cast());
        text
    }
}

/// Elements of a `rte_malloc_dump_heaps` text that are BUSY.
pub fn parse_dump(text: &str) -> HashSet<HeapElement> {
    let hex = |s: &str| usize::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok();
    let mut out = HashSet::new();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        let Some(rest) = l.strip_prefix("Malloc element at ") else { continue };
        let Some((addr, state)) = rest.split_once(' ') else { continue };
        if state.trim() != "(BUSY)" {
            continue;
        }
        // "  len: 0x480 pad: 0x0"
        let Some(next) = lines.next() else { break };
        let mut f = next.split_whitespace();
        let (Some("len:"), Some(len), Some("pad:"), Some(pad)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if let (Some(addr), Some(len), Some(pad)) = (hex(addr), hex(len), hex(pad)) {
            out.insert(HeapElement { addr, len, pad });
        }
    }
    out
}

/// The distance from an element's header to the data `rte_malloc` returns
/// (the header's size in this build of DPDK), measured with a probe.
pub fn header_len() -> Option<usize> {
    let before = busy_elements();
    // SAFETY: EAL is up; a NULL type name is allowed; freed just below.
    let p = unsafe { dpdk_sys::rte_malloc(std::ptr::null(), 64, 0) } as usize;
    if p == 0 {
        return None;
    }
    let found = busy_elements()
        .difference(&before)
        .find(|e| e.addr + e.pad < p && p < e.addr + e.len)
        .map(|e| p - e.addr - e.pad);
    // SAFETY: p came from rte_malloc above and is freed once.
    unsafe { dpdk_sys::rte_free(p as *mut std::ffi::c_void) };
    found
}

/// Frees `elements`, which a process that can no longer free them allocated
/// (see the module's comment); `header` from [`header_len`].
///
/// # Safety
/// Every element must be busy now and belong to no live process.
pub unsafe fn free_elements(elements: &[HeapElement], header: usize) {
    for e in elements {
        // SAFETY: the caller's contract: a busy element nobody else uses;
        // its data starts `pad + header` bytes in, as rte_free expects.
        unsafe { dpdk_sys::rte_free((e.addr + e.pad + header) as *mut std::ffi::c_void) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_busy_elements_are_read_from_the_dump() {
        let text = "Heap id: 0\nHeap size: 0x4000000\nHeap alloc count: 3\n\
            Malloc element at 0x100200000 (FREE)\n  len: 0x3fd8f80 pad: 0x0\n  prev: (nil) next: 0x1041d8f80\n\
            Malloc element at 0x1041d8f80 (BUSY)\n  len: 0x480 pad: 0x0\n  prev: 0x100200000 next: 0x1041d9400\n\
            Malloc element at 0x1041d9f00 (BUSY)\n  len: 0x24080 pad: 0x40\n  prev: 0x1041d9400 next: (nil)\n\
            Heap id: 1\nHeap size: 0x0\n";
        let got = parse_dump(text);
        assert_eq!(got.len(), 2);
        assert!(got.contains(&HeapElement { addr: 0x1041d8f80, len: 0x480, pad: 0 }));
        assert!(got.contains(&HeapElement { addr: 0x1041d9f00, len: 0x24080, pad: 0x40 }));
        assert!(parse_dump("Malloc element at 0x10 (BUSY)\n  garbage\n").is_empty());
    }
}
