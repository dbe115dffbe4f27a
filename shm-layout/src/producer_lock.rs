//! One producer a ring across processes. Within a process `RingsSegment`
//! hands out one producer a ring; two dataplanes (say, two EAL prefixes on
//! one config) would still both write every ring. Each producer therefore
//! holds an open-file-description lock on byte `w` of the rings file: the
//! kernel drops it when the holder's descriptor closes, its death included,
//! so a dead dataplane never blocks the next one.

use crate::mapped::io_err;
use crate::trust::open_trusted;
use crate::LayoutError;
use std::fs::File;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::Path;

/// The locks on a range of rings; dropping it releases them.
#[derive(Debug)]
pub struct ProducerLock {
    _file: File,
    rings: Range<u32>,
}

impl ProducerLock {
    /// The rings this lock covers.
    pub fn rings(&self) -> Range<u32> {
        self.rings.clone()
    }
}

/// Takes the producer lock of every ring in `rings` of the rings file at
/// `path`, or none of them: `ProducerLocked` names the first ring another
/// process holds.
pub fn lock_producers(path: &Path, rings: Range<u32>) -> Result<ProducerLock, LayoutError> {
    let file = open_trusted(path)?;
    for w in rings.clone() {
        match set_lock(&file, w) {
            Ok(true) => {}
            // Closing `file` on return drops the locks taken so far.
            Ok(false) => {
                return Err(LayoutError::ProducerLocked { path: path.to_path_buf(), worker: w })
            }
            Err(e) => return Err(io_err(path, e)),
        }
    }
    Ok(ProducerLock { _file: file, rings })
}

/// A write lock on byte `w`; false when another open file description holds it.
fn set_lock(file: &File, w: u32) -> std::io::Result<bool> {
    // SAFETY: flock is plain old data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = libc::off_t::from(w);
    fl.l_len = 1;
    // SAFETY: the fd is open for the call (owned by `file`); `fl` is a valid
    // flock the kernel only reads; l_pid stays 0 as F_OFD_SETLK requires.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RingsGeometry, RingsSegment};

    #[test]
    fn a_ring_has_one_producer_until_its_holder_lets_go() {
        let dir = std::env::temp_dir().join(format!("shm-plock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rings");
        let geom = RingsGeometry { workers: 3, slots_per_ring: 64 };
        let _seg = RingsSegment::create_file(&path, geom).unwrap();
        let first = lock_producers(&path, 0..2).unwrap();
        // Another open file description conflicts even within one process.
        match lock_producers(&path, 1..3) {
            Err(LayoutError::ProducerLocked { worker: 1, .. }) => {}
            other => panic!("ring 1 is held, got {other:?}"),
        }
        // All or nothing: the failed attempt kept no lock on ring 2.
        let third = lock_producers(&path, 2..3).unwrap();
        drop(first);
        let again = lock_producers(&path, 0..2).unwrap();
        assert_eq!((again.rings(), third.rings()), (0..2, 2..3));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
