//! The safe layer over DPDK: EAL, mempool, ports, mbufs, lcores. Every `unsafe`
//! block of the dataplane lives under this module, each with a SAFETY comment.
#![allow(unsafe_code)]

mod eal;
pub mod heap;
mod hugepages;
mod lcore;
mod log_memory;
mod mbuf;
mod memory;
mod mempool;
mod memzone;
mod port;
pub mod telemetry;

pub use eal::{Eal, EalArgs};
pub use hugepages::{check_hugepages, HugepageStatus};
pub use lcore::{launch_on_lcore, main_lcore, rdtsc, tsc_hz, wait_all_lcores, LcoreTask};
pub use log_memory::{ReserveError, ReservedLogs};
pub use mbuf::{Mbuf, MbufBurst, MAX_BURST};
pub use memory::{prefetch, HugepageAlloc, KernelHugepageAlloc};

pub use mempool::{pool_counts, Mempool, SharedPool, POOL_NAME};
pub use memzone::{lookup_shared, reserve_shared, runtime_dir};
pub use port::{placement, port_id, port_stats, EthStats, Port, PortSetup};

use std::ffi::CStr;

/// Errors from the DPDK layer. Each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("EAL initialisation failed: {reason} (rte_errno {errno}); {hint}")]
    EalInit { errno: i32, reason: String, hint: &'static str },
    #[error("EAL argument {0:?} contains a NUL byte")]
    BadEalArg(String),
    #[error("{0}")]
    Hugepages(String),
    #[error("no DPDK device named {name:?} (ports found: {available}); add it with --vdev or -a before `--`, or bind the NIC with dpdk-devbind.py")]
    NoSuchDevice { name: String, available: String },
    #[error("port {port} ({name}): {what} failed: {reason} (code {code})")]
    Port { port: u16, name: String, what: &'static str, code: i32, reason: String },
    #[error("port {port} ({name}): asks for {asked} {what} but the device supports at most {max}")]
    PortLimit { port: u16, name: String, what: &'static str, asked: u32, max: u32 },
    #[error("port {port} ({name}): {queues} RX queues need RSS, which this device does not offer; use one RX queue")]
    NoRss { port: u16, name: String, queues: u16 },
    #[error("cannot create mbuf pool {name:?} of {count} mbufs: {reason}; reserve more hugepages or give EAL more memory with -m")]
    Mempool { name: String, count: u32, reason: String },
    #[error("telemetry command {cmd}: {reason}")]
    Telemetry { cmd: String, reason: String },
    #[error("shared memory {name:?}: {reason}")]
    Shared { name: String, reason: String },
    #[error("lcore {lcore}: {reason}")]
    Lcore { lcore: u32, reason: String },
}

/// What to do about an rte_eal_init failure, by rte_errno.
fn eal_hint(errno: i32) -> &'static str {
    match errno {
        libc_errno::ENODEV => "a --vdev or -a device could not be created: check its driver name (net_tap0, net_pcap0, net_null0, ...) and arguments",
        libc_errno::ENOMEM => "not enough hugepage memory for -m/--socket-mem: reserve more with `sudo scripts/setup.sh` (LAZARUS_HUGEPAGES) or ask for less",
        libc_errno::EACCES | libc_errno::EPERM => "permission denied: DPDK needs root (or the capabilities for hugepages and devices)",
        libc_errno::EALREADY => "EAL was already initialised in this process",
        _ => "check the EAL arguments before `--`, that hugepages are reserved and mounted (`sudo scripts/setup.sh`), and that no other DPDK process uses the same --file-prefix",
    }
}

/// The errno values EAL reports (Linux numbering).
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const ENOMEM: i32 = 12;
    pub const EACCES: i32 = 13;
    pub const ENODEV: i32 = 19;
    pub const EALREADY: i32 = 114;
}

/// rte_errno of the calling thread and its text.
fn last_error() -> (i32, String) {
    // SAFETY: lz_rte_errno reads the calling thread's per-lcore errno.
    let errno = unsafe { dpdk_sys::lz_rte_errno() };
    (errno, strerror(errno))
}

fn strerror(code: i32) -> String {
    let code = code.abs();
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string.
    let p = unsafe { dpdk_sys::rte_strerror(code) };
    if p.is_null() {
        return format!("error {code}");
    }
    // SAFETY: checked non-null above; DPDK guarantees NUL termination.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// DPDK's version string, e.g. "DPDK 22.11.11".
pub fn version() -> String {
    // SAFETY: rte_version returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(dpdk_sys::rte_version()) }.to_string_lossy().into_owned()
}
