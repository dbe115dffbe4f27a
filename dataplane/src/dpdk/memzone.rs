//! State shared by the processes of one EAL instance (one `--file-prefix`):
//! a named memzone, which DPDK maps at the same address in the primary and in
//! every secondary, so plain references into it are valid in each.

use super::{last_error, DpdkError};
use std::ffi::{CStr, CString};
use std::path::PathBuf;

/// Reserves the memzone `name` and writes `T::default()` into it. Primary
/// only; the memzone lives as long as the primary.
pub fn reserve_shared<T: Default + Sync + 'static>(name: &str) -> Result<&'static T, DpdkError> {
    let cname = zone_name(name)?;
    let size = std::mem::size_of::<T>();
    let align = std::mem::align_of::<T>().max(64) as u32;
    // SAFETY: EAL is up; cname is a valid C string; DPDK checks the size.
    let mz = unsafe {
        dpdk_sys::rte_memzone_reserve_aligned(
            cname.as_ptr(),
            size,
            dpdk_sys::SOCKET_ID_ANY,
            0,
            align,
        )
    };
    if mz.is_null() {
        let (errno, reason) = last_error();
        return Err(DpdkError::Shared {
            name: name.into(),
            reason: format!("cannot reserve {size} bytes: {reason} (rte_errno {errno}); give EAL more memory with -m"),
        });
    }
    // SAFETY: mz is a live memzone of at least `size` bytes aligned to
    // `align` (DPDK's contract); nothing else refers to it yet, so writing a
    // fresh T there is the initialisation. It is never freed, hence 'static.
    unsafe {
        let p = (*mz).__bindgen_anon_1.addr as *mut T;
        std::ptr::write(p, T::default());
        Ok(&*p)
    }
}

/// The memzone `name` a primary of the same build reserved with
/// [`reserve_shared`]. The caller checks the build identity inside `T`.
pub fn lookup_shared<T: Sync + 'static>(name: &str) -> Result<&'static T, DpdkError> {
    let cname = zone_name(name)?;
    // SAFETY: EAL is up; cname is a valid C string.
    let mz = unsafe { dpdk_sys::rte_memzone_lookup(cname.as_ptr()) };
    if mz.is_null() {
        return Err(DpdkError::Shared {
            name: name.into(),
            reason: "no such memzone: this process must be started by `lazarus-dataplane --supervise` (the port owner), not by hand".into(),
        });
    }
    // SAFETY: mz is a live memzone (lookup succeeded); its fields are plain data.
    let (addr, len) = unsafe { ((*mz).__bindgen_anon_1.addr as *const T, (*mz).len) };
    if len < std::mem::size_of::<T>() || !(addr as usize).is_multiple_of(std::mem::align_of::<T>())
    {
        return Err(DpdkError::Shared {
            name: name.into(),
            reason: format!("holds {len} bytes, this build needs {}: the port owner runs another build; restart it", std::mem::size_of::<T>()),
        });
    }
    // SAFETY: the primary of this build wrote a T there (reserve_shared) that
    // lives as long as the primary, whose death ends this process too.
    Ok(unsafe { &*addr })
}

fn zone_name(name: &str) -> Result<CString, DpdkError> {
    CString::new(name)
        .map_err(|_| DpdkError::Shared { name: name.into(), reason: "NUL in the name".into() })
}

/// EAL's runtime directory (`/var/run/dpdk/<file-prefix>`).
pub fn runtime_dir() -> PathBuf {
    // SAFETY: EAL is up; the string is static and NUL-terminated.
    let p = unsafe { CStr::from_ptr(dpdk_sys::rte_eal_get_runtime_dir()) };
    PathBuf::from(p.to_string_lossy().into_owned())
}
