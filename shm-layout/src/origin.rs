//! Where a segment's times come from: the boot (and so the machine) and the
//! TSC rate. Versions and deadlines in the store are TSC readings of the
//! dataplane that wrote them; after a reboot, or on another machine, the TSC
//! starts again, so a store from elsewhere must be rebased before its
//! versions are compared with new ones (checkpointd does it at start).

use crate::header::HEADER_BYTES;
use crate::LayoutError;

/// Offset of the [`SegmentOrigin`] in every segment's header page.
pub const ORIGIN_OFFSET: usize = 64;

/// The boot and TSC rate a segment's times belong to.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentOrigin {
    /// `/proc/sys/kernel/random/boot_id` as 16 bytes; all zero: unknown (a
    /// segment translated from a layout that did not record it).
    pub boot_id: [u8; 16],
    /// TSC ticks a second, to the nearest MHz; 0: unknown.
    pub tsc_hz: u64,
    /// xxh3-64 of the two fields above.
    pub checksum: u64,
}
const _: () = assert!(std::mem::size_of::<SegmentOrigin>() == 32);
const _: () = assert!(ORIGIN_OFFSET + 32 <= 128 && 128 <= HEADER_BYTES);

/// TSC rates closer than this are the same clock measured twice.
const TSC_TOLERANCE_PPM: u64 = 10_000;

impl SegmentOrigin {
    pub fn new(boot_id: [u8; 16], tsc_hz: u64) -> Self {
        let mut o = SegmentOrigin { boot_id, tsc_hz, checksum: 0 };
        o.checksum = o.compute_checksum();
        o
    }

    /// This boot and this machine's TSC rate.
    pub fn this_host() -> Result<Self, LayoutError> {
        Ok(SegmentOrigin::new(boot_id()?, tsc_hz()))
    }

    fn compute_checksum(&self) -> u64 {
        let mut b = [0u8; 24];
        b[..16].copy_from_slice(&self.boot_id);
        b[16..].copy_from_slice(&self.tsc_hz.to_le_bytes());
        xxhash_rust::xxh3::xxh3_64(&b)
    }

    /// Whether the fields are what was written (a damaged origin is foreign).
    pub fn is_intact(&self) -> bool {
        self.checksum == self.compute_checksum()
    }

    /// Whether times recorded under `self` may be compared with times taken
    /// under `now`: the same boot, and TSC rates within 1 %.
    pub fn same_clock_as(&self, now: &SegmentOrigin) -> bool {
        let close = |a: u64, b: u64| a.abs_diff(b) <= a.max(b) / (1_000_000 / TSC_TOLERANCE_PPM);
        self.is_intact()
            && self.boot_id != [0; 16]
            && self.boot_id == now.boot_id
            && (self.tsc_hz == 0 || now.tsc_hz == 0 || close(self.tsc_hz, now.tsc_hz))
    }

    /// The boot id as the kernel prints it.
    pub fn boot_id_text(&self) -> String {
        let h: String = self.boot_id.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
    }
}

/// This boot's id, from `/proc/sys/kernel/random/boot_id`.
pub fn boot_id() -> Result<[u8; 16], LayoutError> {
    const PATH: &str = "/proc/sys/kernel/random/boot_id";
    let text = std::fs::read_to_string(PATH)
        .map_err(|e| LayoutError::Io { path: PATH.into(), source: e })?;
    parse_boot_id(&text).ok_or_else(|| LayoutError::Io {
        path: PATH.into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a UUID"),
    })
}

fn parse_boot_id(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.trim().bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        id[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(id)
}

/// The TSC rate, measured once a process against CLOCK_MONOTONIC over 20 ms
/// and rounded to the MHz (as DPDK's own estimate is); 0 where there is no
/// TSC.
pub fn tsc_hz() -> u64 {
    static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HZ.get_or_init(measure_tsc_hz)
}

fn measure_tsc_hz() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let read = || {
            // SAFETY: rdtsc reads a counter; it touches no memory.
            unsafe { std::arch::x86_64::_rdtsc() }
        };
        let (t0, n0) = (read(), crate::monotonic_ns());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (t1, n1) = (read(), crate::monotonic_ns());
        let hz = u128::from(t1.wrapping_sub(t0)) * 1_000_000_000 / u128::from((n1 - n0).max(1));
        (hz as u64 + 500_000) / 1_000_000 * 1_000_000
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_is_its_own_clock_and_another_boot_is_not() {
        let here = SegmentOrigin::this_host().unwrap();
        assert_ne!(here.boot_id, [0; 16]);
        assert!(here.same_clock_as(&here));
        let again = SegmentOrigin::new(here.boot_id, here.tsc_hz + here.tsc_hz / 1000);
        assert!(again.same_clock_as(&here), "a rate measured twice differs a little");
        let mut other = here.boot_id;
        other[0] ^= 1;
        assert!(!SegmentOrigin::new(other, here.tsc_hz).same_clock_as(&here));
        assert!(!SegmentOrigin::new(here.boot_id, here.tsc_hz * 2).same_clock_as(&here));
        assert!(!SegmentOrigin::default().same_clock_as(&here), "unknown is foreign");
        let mut torn = here;
        torn.tsc_hz += 1;
        assert!(!torn.same_clock_as(&here));
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        assert_eq!(here.boot_id_text(), text.trim());
    }
}
