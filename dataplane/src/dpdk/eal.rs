use super::{eal_hint, last_error, DpdkError};
use std::ffi::{c_char, c_int, CString};

/// EAL arguments as given before `--` (argv[0] first).
#[derive(Debug, Clone)]
pub struct EalArgs(pub Vec<String>);

/// The initialised Environment Abstraction Layer. Dropping it runs
/// `rte_eal_cleanup`, so it must outlive every port and pool (declare it first).
pub struct Eal {
    // EAL may keep pointers into argv for its lifetime.
    _argv: Vec<CString>,
}

impl Eal {
    pub fn init(args: &EalArgs) -> Result<Eal, DpdkError> {
        let argv: Vec<CString> = args
            .0
            .iter()
            .map(|a| CString::new(a.as_str()).map_err(|_| DpdkError::BadEalArg(a.clone())))
            .collect::<Result<_, _>>()?;
        let mut ptrs: Vec<*mut c_char> = argv.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        ptrs.push(std::ptr::null_mut());
        // SAFETY: ptrs is a NULL-terminated argv whose strings (owned by `argv`) live
        // as long as the returned Eal; rte_eal_init is called once per process.
        let n = unsafe { dpdk_sys::rte_eal_init((ptrs.len() - 1) as c_int, ptrs.as_mut_ptr()) };
        if n < 0 {
            let (errno, reason) = last_error();
            return Err(DpdkError::EalInit { errno, reason, hint: eal_hint(errno) });
        }
        Ok(Eal { _argv: argv })
    }

    /// Number of ethernet ports EAL probed.
    pub fn port_count(&self) -> u16 {
        // SAFETY: EAL is initialised (self exists).
        unsafe { dpdk_sys::rte_eth_dev_count_avail() }
    }

    /// Names of every probed port, for error messages.
    pub fn port_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for id in 0..dpdk_sys::RTE_MAX_ETHPORTS as u16 {
            // SAFETY: any port id may be asked about once EAL is up.
            if unsafe { dpdk_sys::rte_eth_dev_is_valid_port(id) } == 1 {
                names.push(super::port::port_name(id));
            }
        }
        names
    }

    /// Whether `lcore` was enabled by the EAL core list.
    pub fn lcore_enabled(&self, lcore: u32) -> bool {
        // SAFETY: EAL is initialised; out-of-range ids return 0.
        lcore < dpdk_sys::RTE_MAX_LCORE && unsafe { dpdk_sys::rte_lcore_is_enabled(lcore) } != 0
    }

    /// The CPU an enabled lcore runs on (the first of its set), None when
    /// DPDK does not say.
    pub fn lcore_cpu(&self, lcore: u32) -> Option<u32> {
        if !self.lcore_enabled(lcore) {
            return None;
        }
        // SAFETY: an enabled lcore id below RTE_MAX_LCORE, EAL initialised
        // (this guard exists); the call only reads EAL's configuration.
        let cpu = unsafe { dpdk_sys::rte_lcore_to_cpu_id(lcore as i32) };
        u32::try_from(cpu).ok()
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: called once, after every port, pool and lcore task this Eal
        // started has been stopped (their owners are dropped first).
        unsafe { dpdk_sys::rte_eal_cleanup() };
    }
}
