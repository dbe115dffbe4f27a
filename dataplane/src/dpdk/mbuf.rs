use super::Mempool;
use dpdk_sys::rte_mbuf;
use std::ptr::NonNull;

/// Largest burst a worker moves at once.
pub const MAX_BURST: usize = 64;

/// One packet buffer, owned: dropping it returns it to its pool.
#[repr(transparent)]
pub struct Mbuf(NonNull<rte_mbuf>);

// SAFETY: an mbuf is owned by exactly one Mbuf at a time; moving it to another
// thread moves that ownership, as DPDK's run-to-completion model allows.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// A new, empty mbuf from `pool`, or None when the pool is exhausted.
    pub fn alloc(pool: &Mempool) -> Option<Mbuf> {
        // SAFETY: pool.raw() is a live pktmbuf pool.
        NonNull::new(unsafe { dpdk_sys::lz_rte_pktmbuf_alloc(pool.raw()) }).map(Mbuf)
    }

    /// A new, empty mbuf from a pool found by name.
    pub fn alloc_shared(pool: super::SharedPool) -> Option<Mbuf> {
        // SAFETY: pool.raw() is a live pktmbuf pool (found by lookup).
        NonNull::new(unsafe { dpdk_sys::lz_rte_pktmbuf_alloc(pool.raw()) }).map(Mbuf)
    }

    /// Appends `bytes` to the packet; false when the tailroom is too small.
    pub fn append(&mut self, bytes: &[u8]) -> bool {
        let Ok(len) = u16::try_from(bytes.len()) else { return false };
        // SAFETY: self owns a valid mbuf; append returns NULL when there is no room.
        let dst = unsafe { dpdk_sys::lz_rte_pktmbuf_append(self.0.as_ptr(), len) };
        if dst.is_null() {
            return false;
        }
        // SAFETY: append reserved `len` writable bytes at dst, disjoint from `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst as *mut u8, bytes.len()) };
        true
    }

    /// The first segment's bytes.
    pub fn data(&self) -> &[u8] {
        // SAFETY: mtod/data_len describe the initialised bytes of the first segment,
        // which self owns for the lifetime of the borrow.
        unsafe {
            std::slice::from_raw_parts(
                dpdk_sys::lz_rte_pktmbuf_mtod(self.0.as_ptr()) as *const u8,
                dpdk_sys::lz_rte_pktmbuf_data_len(self.0.as_ptr()) as usize,
            )
        }
    }

    /// The first segment's bytes, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in data(), and &mut self makes the borrow exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(
                dpdk_sys::lz_rte_pktmbuf_mtod(self.0.as_ptr()) as *mut u8,
                dpdk_sys::lz_rte_pktmbuf_data_len(self.0.as_ptr()) as usize,
            )
        }
    }

    /// Length of the whole packet (all segments).
    pub fn pkt_len(&self) -> u32 {
        // SAFETY: self owns a valid mbuf.
        unsafe { dpdk_sys::lz_rte_pktmbuf_pkt_len(self.0.as_ptr()) }
    }

    fn into_raw(self) -> *mut rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: self owns the mbuf and nobody else refers to it.
        unsafe { dpdk_sys::lz_rte_pktmbuf_free(self.0.as_ptr()) };
    }
}

/// What a transmit did with a burst: every packet is either sent or freed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TxOutcome {
    pub sent: u16,
    /// Packets the TX ring had no room for; they were freed.
    pub unsent: u16,
}

/// A burst of owned mbufs. Whatever it still holds when dropped, or when a
/// transmit could not take it, is freed in one bulk call: no path leaks an mbuf.
pub struct MbufBurst {
    pkts: [*mut rte_mbuf; MAX_BURST],
    /// Each packet's first segment (`rte_pktmbuf_mtod`, `data_len`), read
    /// once when it joins the burst: the packet path reads it twice per
    /// packet, and two calls into C for each read showed in its profile.
    data: [*const u8; MAX_BURST],
    data_len: [u16; MAX_BURST],
    /// The NIC's word on each packet's checksums (`RxChecksums::from_bits`).
    csum: [u8; MAX_BURST],
    len: usize,
}

// SAFETY: the burst owns its mbufs, as Mbuf does.
unsafe impl Send for MbufBurst {}

impl Default for MbufBurst {
    fn default() -> Self {
        Self::new()
    }
}

impl MbufBurst {
    pub const fn new() -> Self {
        MbufBurst {
            pkts: [std::ptr::null_mut(); MAX_BURST],
            data: [std::ptr::null(); MAX_BURST],
            data_len: [0; MAX_BURST],
            csum: [0; MAX_BURST],
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Receives up to `max` packets (capped at MAX_BURST) from `port`/`queue`
    /// into an empty burst and returns how many arrived.
    ///
    /// The caller must be the only lcore polling that queue; the worker layout
    /// (config validation) guarantees it.
    #[inline]
    pub fn rx(&mut self, port: u16, queue: u16, max: usize) -> usize {
        debug_assert!(self.is_empty());
        let max = max.min(MAX_BURST) as u16;
        // SAFETY: pkts has room for `max` pointers; the queue is polled by this
        // lcore only; received mbufs become owned by the burst.
        let n = unsafe { dpdk_sys::lz_rte_eth_rx_burst(port, queue, self.pkts.as_mut_ptr(), max) };
        if n != 0 {
            // SAFETY: pkts[..n] are valid mbufs just received; data,
            // data_len and csum have room for MAX_BURST >= n entries.
            unsafe {
                dpdk_sys::lz_rte_pktmbuf_views(
                    self.pkts.as_ptr(),
                    n,
                    self.data.as_mut_ptr(),
                    self.data_len.as_mut_ptr(),
                    self.csum.as_mut_ptr(),
                )
            };
        }
        self.len = n as usize;
        self.len
    }

    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == MAX_BURST {
            return Err(m);
        }
        let view = m.data();
        (self.data[self.len], self.data_len[self.len]) = (view.as_ptr(), view.len() as u16);
        // Made here, not received: its checksums are for software to check.
        self.csum[self.len] = 0;
        self.pkts[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }

    /// Bytes of packet `i` (first segment).
    #[inline]
    pub fn data(&self, i: usize) -> &[u8] {
        let (p, n) = (self.data[..self.len][i], self.data_len[i]);
        // SAFETY: packet i (< len, checked above) is a valid mbuf owned by the
        // burst, and (p, n) its first segment's data, read when it joined; an
        // mbuf's data does not move while we own it.
        unsafe { std::slice::from_raw_parts(p, usize::from(n)) }
    }

    /// Keeps the packets for which `keep` returns true, in order; frees the
    /// others in one bulk call and returns how many were freed.
    #[inline]
    pub fn retain(&mut self, mut keep: impl FnMut(usize, &[u8]) -> bool) -> usize {
        let mut dropped = [std::ptr::null_mut(); MAX_BURST];
        let (mut kept, mut nd) = (0, 0);
        for i in 0..self.len {
            let m = self.pkts[i];
            if keep(i, self.data(i)) {
                self.pkts[kept] = m;
                self.data[kept] = self.data[i];
                self.data_len[kept] = self.data_len[i];
                self.csum[kept] = self.csum[i];
                kept += 1;
            } else {
                dropped[nd] = m;
                nd += 1;
            }
        }
        self.len = kept;
        free_bulk(&mut dropped[..nd]);
        nd
    }

    /// Sends the whole burst on `port`/`queue`. What the TX ring cannot take is
    /// freed (in bulk) and reported; the burst is empty afterwards.
    ///
    /// The caller must be the only lcore using that TX queue.
    #[inline]
    pub fn tx(&mut self, port: u16, queue: u16) -> TxOutcome {
        if self.len == 0 {
            return TxOutcome::default();
        }
        // SAFETY: pkts[..len] are valid mbufs owned by the burst; the PMD takes
        // ownership of the first `sent` of them; the queue is used by this lcore only.
        let sent = unsafe {
            dpdk_sys::lz_rte_eth_tx_burst(port, queue, self.pkts.as_mut_ptr(), self.len as u16)
        } as usize;
        let unsent = self.len - sent;
        let len = self.len;
        self.len = 0;
        free_bulk(&mut self.pkts[sent..len]);
        TxOutcome { sent: sent as u16, unsent: unsent as u16 }
    }
}

fn free_bulk(pkts: &mut [*mut rte_mbuf]) {
    if !pkts.is_empty() {
        // SAFETY: every pointer is a valid mbuf whose ownership the caller gives up.
        unsafe { dpdk_sys::rte_pktmbuf_free_bulk(pkts.as_mut_ptr(), pkts.len() as u32) };
    }
}

impl Drop for MbufBurst {
    fn drop(&mut self) {
        let len = self.len;
        self.len = 0;
        free_bulk(&mut self.pkts[..len]);
    }
}

impl lazarus_core::firewall::Burst for MbufBurst {
    #[inline(always)]
    fn len(&self) -> usize {
        MbufBurst::len(self)
    }
    #[inline(always)]
    fn frame(&self, i: usize) -> &[u8] {
        self.data(i)
    }
    #[inline(always)]
    fn rx_checksums(&self, i: usize) -> lazarus_core::parse::checksum::RxChecksums {
        lazarus_core::parse::checksum::RxChecksums::from_bits(self.csum[i])
    }
    #[inline(always)]
    fn retain(&mut self, keep: impl FnMut(usize, &[u8]) -> bool) -> usize {
        MbufBurst::retain(self, keep)
    }
}
