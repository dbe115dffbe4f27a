//! DPDK telemetry: Lazarus's own commands on EAL's telemetry socket
//! (`/var/run/dpdk/<file-prefix>/dpdk_telemetry.v2`), beside DPDK's
//! `/ethdev/stats,N` and friends.
//!
//! A handler is a plain Rust function that builds a [`TelValue`] from state it
//! can read from any thread (atomics); this module writes that value into the
//! `rte_tel_data` DPDK hands the callback. Callbacks run on DPDK's telemetry
//! thread, never on a worker lcore.
//!
//! DPDK 22.11 nests one level only: the reply (a dict or an array) may hold
//! containers, and a container holds scalars. A container inside a container
//! is left out (and logged once), never sent half-written. An array of dicts
//! is refused by 22.11 (`rte_tel_data_add_array_container` takes arrays
//! only), so replies with one entry per worker are dicts keyed `worker<N>`.

use super::DpdkError;
use dpdk_sys::rte_tel_data;
use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::Mutex;

/// One telemetry value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TelValue {
    U64(u64),
    Str(String),
    /// Name → value, in order. Names may hold only letters, digits, `_` and
    /// `/` (DPDK's rule); other characters are written as `_`.
    Dict(Vec<(String, TelValue)>),
    /// An array of integers.
    U64s(Vec<u64>),
    /// An array of strings.
    Strs(Vec<String>),
}

impl TelValue {
    /// A dict from `(name, value)` pairs.
    pub fn dict<K: Into<String>>(entries: impl IntoIterator<Item = (K, TelValue)>) -> TelValue {
        TelValue::Dict(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

/// Builds the reply to one command; `params` is what followed the comma
/// (`/lazarus/workers,1` → "1"), empty when nothing did.
pub type TelHandler = fn(params: &str) -> TelValue;

/// Registered commands, looked up by the shared C callback.
static HANDLERS: Mutex<Vec<(String, TelHandler)>> = Mutex::new(Vec::new());

/// Registers `cmd` (e.g. "/lazarus/stats") with DPDK's telemetry; `help`
/// is what `/help,<cmd>` prints. Call after `Eal::init`.
pub fn register(cmd: &str, help: &str, handler: TelHandler) -> Result<(), DpdkError> {
    let c_cmd = CString::new(cmd).map_err(|_| DpdkError::Telemetry {
        cmd: cmd.into(),
        reason: "NUL in the command name".into(),
    })?;
    let c_help = CString::new(help).map_err(|_| DpdkError::Telemetry {
        cmd: cmd.into(),
        reason: "NUL in the help text".into(),
    })?;
    HANDLERS.lock().unwrap_or_else(|e| e.into_inner()).push((cmd.to_string(), handler));
    // SAFETY: both strings are valid NUL-terminated C strings for the call;
    // DPDK copies them (strlcpy into its own table). `callback` has the
    // telemetry_cb signature and stays valid for the life of the process.
    let rc = unsafe {
        dpdk_sys::rte_telemetry_register_cmd(c_cmd.as_ptr(), Some(callback), c_help.as_ptr())
    };
    if rc != 0 {
        return Err(DpdkError::Telemetry { cmd: cmd.into(), reason: super::strerror(rc) });
    }
    Ok(())
}

/// The one C callback every Lazarus command shares: finds the handler by
/// name and writes its reply.
unsafe extern "C" fn callback(
    cmd: *const c_char,
    params: *const c_char,
    d: *mut rte_tel_data,
) -> c_int {
    if cmd.is_null() || d.is_null() {
        return -22; // -EINVAL
    }
    // SAFETY: DPDK passes the NUL-terminated command it matched.
    let cmd = unsafe { CStr::from_ptr(cmd) }.to_string_lossy();
    let params = if params.is_null() {
        String::new()
    } else {
        // SAFETY: non-null; DPDK passes a NUL-terminated parameter string.
        unsafe { CStr::from_ptr(params) }.to_string_lossy().into_owned()
    };
    let handler = HANDLERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(c, _)| *c == cmd)
        .map(|(_, h)| *h);
    let Some(handler) = handler else { return -22 };
    // A panic must not unwind into DPDK's telemetry thread (with
    // panic = "abort" in release this is moot; in debug builds it is UB).
    let Ok(value) = std::panic::catch_unwind(|| handler(&params)) else { return -22 };
    // SAFETY: `d` is the reply DPDK handed this callback, valid for its duration.
    unsafe { write_reply(d, &value) }
}

/// DPDK's name rule: letters, digits, `_`, `/`; shorter than
/// RTE_TEL_MAX_STRING_LEN (128) so that DPDK never cuts one.
fn name(s: &str) -> CString {
    let clean: String = s
        .chars()
        .take(127)
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '/' { c } else { '_' })
        .collect();
    CString::new(clean).unwrap_or_default()
}

fn text(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// Writes `v` as the whole reply (a scalar is wrapped in a dict `{"value": v}`).
///
/// # Safety
/// `d` must be a valid, not yet started `rte_tel_data`.
unsafe fn write_reply(d: *mut rte_tel_data, v: &TelValue) -> c_int {
    match v {
        TelValue::U64(_) | TelValue::Str(_) => {
            let wrapped = TelValue::Dict(vec![("value".into(), v.clone())]);
            // SAFETY: forwarded contract.
            unsafe { write(d, &wrapped, true) }
        }
        // SAFETY: forwarded contract.
        _ => unsafe { write(d, v, true) },
    }
}

/// Writes a dict or array into `d`; containers only when `top`.
///
/// # Safety
/// `d` must be a valid, not yet started `rte_tel_data`.
unsafe fn write(d: *mut rte_tel_data, v: &TelValue, top: bool) -> c_int {
    use dpdk_sys::*;
    // SAFETY: (the whole block) `d` is valid (contract); every string passed is a
    // CString alive for the call (DPDK copies it); a child container comes
    // from rte_tel_data_alloc, and DPDK owns it once added (keep = 0), or it
    // is freed here when adding failed.
    unsafe {
        match v {
            TelValue::Dict(entries) => {
                let rc = rte_tel_data_start_dict(d);
                if rc != 0 {
                    return rc;
                }
                for (k, val) in entries {
                    let k = name(k);
                    match val {
                        TelValue::U64(x) => {
                            rte_tel_data_add_dict_u64(d, k.as_ptr(), *x);
                        }
                        TelValue::Str(s) => {
                            let s = text(s);
                            rte_tel_data_add_dict_string(d, k.as_ptr(), s.as_ptr());
                        }
                        container if top => {
                            let child = rte_tel_data_alloc();
                            if child.is_null() {
                                continue;
                            }
                            if write(child, container, false) != 0 {
                                rte_tel_data_free(child);
                                continue;
                            }
                            // Negative: refused, still ours to free. Positive
                            // (E2BIG, a name cut short): DPDK has linked the
                            // child and owns it; freeing it would be a double
                            // free. `name` keeps names short enough anyway.
                            if rte_tel_data_add_dict_container(d, k.as_ptr(), child, 0) < 0 {
                                rte_tel_data_free(child);
                            }
                        }
                        _ => nested_dropped(),
                    }
                }
                0
            }
            TelValue::U64s(xs) => {
                let rc = rte_tel_data_start_array(d, rte_tel_value_type_RTE_TEL_U64_VAL);
                if rc != 0 {
                    return rc;
                }
                for x in xs {
                    rte_tel_data_add_array_u64(d, *x);
                }
                0
            }
            TelValue::Strs(ss) => {
                let rc = rte_tel_data_start_array(d, rte_tel_value_type_RTE_TEL_STRING_VAL);
                if rc != 0 {
                    return rc;
                }
                for s in ss {
                    let s = text(s);
                    rte_tel_data_add_array_string(d, s.as_ptr());
                }
                0
            }
            TelValue::U64(_) | TelValue::Str(_) => -22,
        }
    }
}

fn nested_dropped() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            "telemetry: a container inside a container was left out (DPDK 22.11 nests one level)"
        )
    });
}
