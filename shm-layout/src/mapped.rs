//! A file mapped read-write and shared: how segments are held.

use crate::trust::{create_exclusive, open_trusted, SegmentAccess};
use crate::LayoutError;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Size of the hugepages a hugetlbfs mount serves (x86_64 default).
pub const HUGEPAGE_BYTES: u64 = 2 << 20;
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// A shared read-write mapping of a whole file. The mapping stays valid and
/// at the same address for as long as the value lives (moving the value does
/// not move the mapping).
pub struct MappedFile {
    map: memmap2::MmapMut,
    path: PathBuf,
    hugetlbfs: bool,
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile")
            .field("path", &self.path)
            .field("len", &self.map.len())
            .field("hugetlbfs", &self.hugetlbfs)
            .finish()
    }
}

/// Whether `dir` is on a hugetlbfs mount (statfs magic 0x958458f6).
pub fn is_hugetlbfs(dir: &Path) -> bool {
    fs_magic(dir) == Some(HUGETLBFS_MAGIC)
}

/// The statfs magic of the filesystem `dir` is on (None: statfs failed).
pub(crate) fn fs_magic(dir: &Path) -> Option<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs is plain old data; all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a valid out pointer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    #[allow(clippy::unnecessary_cast)]
    (rc == 0).then_some(st.f_type as i64)
}

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> LayoutError {
    LayoutError::Io { path: path.to_path_buf(), source }
}

/// The directory `path` lives in ("." for a bare name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

impl MappedFile {
    /// Creates `path` afresh (a stale file or link under the name is
    /// unlinked, never followed) with the access's mode and at least `bytes`
    /// bytes, rounded up to a 2 MiB hugepage when the directory is on
    /// hugetlbfs, reserves the memory (fallocate, so a shortage is an error
    /// now rather than a SIGBUS later) and maps it.
    pub fn create(path: &Path, bytes: u64, access: SegmentAccess) -> Result<Self, LayoutError> {
        let hugetlbfs = is_hugetlbfs(parent_dir(path));
        let len = if hugetlbfs { bytes.div_ceil(HUGEPAGE_BYTES) * HUGEPAGE_BYTES } else { bytes };
        let file = create_exclusive(path, access)?;
        file.set_len(len).map_err(|e| io_err(path, e))?;
        reserve(&file, len).map_err(|e| {
            io_err(
                path,
                std::io::Error::new(
                    e.kind(),
                    format!("cannot reserve {len} bytes ({e}); free memory or hugepages, or lower the capacities"),
                ),
            )
        })?;
        Self::map(file, path, hugetlbfs)
    }

    /// Maps an existing file read-write, shared; refused unless it is a
    /// regular file of the daemon's user that nobody else may write.
    pub fn open(path: &Path) -> Result<Self, LayoutError> {
        let file = open_trusted(path)?;
        Self::map(file, path, is_hugetlbfs(parent_dir(path)))
    }

    fn map(file: File, path: &Path, hugetlbfs: bool) -> Result<Self, LayoutError> {
        // SAFETY: the file is a segment shared on purpose with one other
        // process; every access to the mapping goes through shm-layout's
        // atomics and volatile copies, never through references that assume
        // nobody else writes. Truncation by a third party is the operator's
        // error (documented), as for any shared mapping.
        let map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(|e| io_err(path, e))?;
        Ok(MappedFile { map, path: path.to_path_buf(), hugetlbfs })
    }

    /// Base of the mapping (page-aligned).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the mapping is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file is on hugetlbfs.
    pub fn hugetlbfs(&self) -> bool {
        self.hugetlbfs
    }

    /// Writes dirty pages back when the file is on a disk-backed filesystem
    /// (a no-op in effect on tmpfs and hugetlbfs).
    pub fn flush(&self) -> Result<(), LayoutError> {
        self.map.flush().map_err(|e| io_err(&self.path, e))
    }
}

fn reserve(file: &File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let Ok(len) = libc::off_t::try_from(len) else {
        return Err(std::io::Error::other("segment size overflows off_t"));
    };
    // SAFETY: fd is an open file descriptor owned by `file` for the call.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        // Filesystems without fallocate: the pages come on first touch.
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(()),
        _ => Err(e),
    }
}

/// Takes a non-blocking exclusive `flock` on `file`: Ok(true) when taken,
/// Ok(false) when another process holds it. Released when the file closes.
pub fn try_lock_exclusive(file: &File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is owned by `file`, open for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}
