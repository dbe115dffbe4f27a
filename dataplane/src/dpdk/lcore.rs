use super::DpdkError;
use std::ffi::{c_int, c_void};

/// Work that runs on one worker lcore until it returns.
pub trait LcoreTask: Sync {
    fn run(&self);
}

extern "C" fn trampoline<T: LcoreTask>(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `&T` given to launch_on_lcore, which the caller keeps
    // alive and unmoved until wait_all_lcores returns.
    let task = unsafe { &*(arg as *const T) };
    task.run();
    0
}

/// Starts `task` on worker `lcore`.
///
/// # Safety
/// `task` must stay alive and unmoved until [`wait_all_lcores`] has returned.
pub unsafe fn launch_on_lcore<T: LcoreTask>(task: &T, lcore: u32) -> Result<(), DpdkError> {
    // SAFETY: the caller guarantees the lifetime of `task`; the trampoline matches
    // lcore_function_t.
    let rc = unsafe {
        dpdk_sys::rte_eal_remote_launch(
            Some(trampoline::<T>),
            task as *const T as *mut c_void,
            lcore,
        )
    };
    if rc != 0 {
        return Err(DpdkError::Lcore {
            lcore,
            reason: format!(
                "cannot launch a worker there (code {rc}): it is busy or is the main lcore"
            ),
        });
    }
    Ok(())
}

/// Waits until every worker lcore has returned from its task.
pub fn wait_all_lcores() {
    // SAFETY: only called from the main lcore.
    unsafe { dpdk_sys::rte_eal_mp_wait_lcore() };
}

pub fn main_lcore() -> u32 {
    // SAFETY: reads EAL configuration; valid after rte_eal_init.
    unsafe { dpdk_sys::rte_get_main_lcore() }
}

pub fn tsc_hz() -> u64 {
    // SAFETY: valid after rte_eal_init.
    unsafe { dpdk_sys::rte_get_tsc_hz() }
}

/// The time-stamp counter: the packet path's clock (no system call).
#[inline(always)]
pub fn rdtsc() -> u64 {
    // rte_rdtsc is this one instruction; a call into C for it showed in
    // the worker's profile.
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads the TSC; no memory is touched.
    return unsafe { std::arch::x86_64::_rdtsc() };
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: reads the TSC; no memory is touched.
    unsafe {
        dpdk_sys::lz_rte_rdtsc()
    }
}
