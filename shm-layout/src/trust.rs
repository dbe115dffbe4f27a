//! The segment directory and its files are a trust boundary: whoever can
//! write them decides which connections a restarted dataplane admits, and
//! whoever can read them sees live TCP sequence edges. So only the
//! configured directory is used, only when the daemon's user owns it and
//! nobody else may write it, and files are created exclusively, never
//! through a symlink, with modes set explicitly rather than by umask.

use crate::mapped::{io_err, parent_dir};
use crate::LayoutError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Who besides the daemon's user may use the segments and the control
/// socket: nobody, or the members of one group (read only, for
/// `lazarusctl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentAccess {
    group: Option<u32>,
}

impl SegmentAccess {
    /// The daemon's user only.
    pub const PRIVATE: SegmentAccess = SegmentAccess { group: None };

    /// Read access for the group `name` as well ("" is [`Self::PRIVATE`]).
    pub fn for_group(name: &str) -> Result<Self, LayoutError> {
        if name.is_empty() {
            return Ok(Self::PRIVATE);
        }
        match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Ok(SegmentAccess { group: Some(g.gid.as_raw()) }),
            Ok(None) => Err(LayoutError::Untrusted {
                path: PathBuf::from(name),
                reason: "no such group".into(),
                fix: "create it (groupadd), or leave checkpoint.group empty".into(),
            }),
            Err(e) => Err(LayoutError::Untrusted {
                path: PathBuf::from(name),
                reason: format!("cannot look the group up: {e}"),
                fix: "check /etc/group and nsswitch.conf".into(),
            }),
        }
    }

    /// Mode of a segment file or the lock.
    pub fn file_mode(&self) -> u32 {
        if self.group.is_some() {
            0o640
        } else {
            0o600
        }
    }

    /// Mode of the segment directory.
    pub fn dir_mode(&self) -> u32 {
        if self.group.is_some() {
            0o750
        } else {
            0o700
        }
    }

    /// Mode of the control socket (connecting needs write permission).
    pub fn socket_mode(&self) -> u32 {
        if self.group.is_some() {
            0o660
        } else {
            0o600
        }
    }

    /// Gives `path` (not following a symlink) the group and `mode`.
    pub fn apply(&self, path: &Path, mode: u32) -> Result<(), LayoutError> {
        if let Some(gid) = self.group {
            std::os::unix::fs::lchown(path, None, Some(gid)).map_err(|e| io_err(path, e))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_err(path, e))
    }
}

/// The effective user id: the user whose files are trusted.
pub fn daemon_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Whether `meta` (from lstat or fstat) may be trusted as a directory
/// (`want_dir`) or regular file owned by `uid`: of that kind, owned by `uid`, and writable by nobody else.
pub(crate) fn check_owned(
    path: &Path,
    meta: &std::fs::Metadata,
    want_dir: bool,
    uid: u32,
) -> Result<(), LayoutError> {
    let untrusted = |reason: String, fix: String| LayoutError::Untrusted {
        path: path.to_path_buf(),
        reason,
        fix,
    };
    let kind = if want_dir { "directory" } else { "file" };
    if meta.file_type().is_symlink() {
        return Err(untrusted(
            "is a symbolic link".into(),
            format!("point the config at the real {kind} instead"),
        ));
    }
    if want_dir && !meta.is_dir() || !want_dir && !meta.is_file() {
        return Err(untrusted(
            format!("is not a regular {kind}"),
            format!("remove it, or point checkpoint.dir at a {kind} of its own"),
        ));
    }
    if meta.uid() != uid {
        return Err(untrusted(
            format!("is owned by uid {}, not by the daemon's uid {uid}", meta.uid()),
            format!("chown {uid} it if it is yours, or remove it"),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(untrusted(
            format!("is writable by its group or by everyone (mode {mode:o})"),
            format!("chmod go-w {}", path.display()),
        ));
    }
    Ok(())
}

/// checkpointd's segment directory: created with the access's mode when it
/// is missing and its parent exists; refused unless it is a directory of the
/// daemon's user that nobody else may write. Never another directory.
pub fn prepare_segment_dir(dir: &Path, access: SegmentAccess) -> Result<(), LayoutError> {
    match std::fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = parent_dir(dir);
            if !parent.is_dir() {
                return Err(LayoutError::Untrusted {
                    path: dir.to_path_buf(),
                    reason: format!("does not exist, nor does its parent {}", parent.display()),
                    fix: "create it (mode 0700, owned by the daemon's user), mount hugetlbfs \
                          there, or set checkpoint.dir"
                        .into(),
                });
            }
            // An existing path (someone else's, made between the two calls)
            // fails here and is judged below like any other.
            match std::fs::DirBuilder::new().mode(access.dir_mode()).create(dir) {
                Ok(()) => access.apply(dir, access.dir_mode())?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(dir, e)),
            }
        }
        Err(e) => return Err(io_err(dir, e)),
    }
    check_segment_dir(dir)
}

/// The dataplane's check of the directory checkpointd prepared.
pub fn check_segment_dir(dir: &Path) -> Result<(), LayoutError> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| io_err(dir, e))?;
    check_owned(dir, &meta, true, daemon_uid())
}

/// Creates `path` exclusively with the access's mode, never through a
/// symlink. A stale file or link under the name is unlinked first (unlink
/// never follows a link); one that reappears in between makes this fail.
pub(crate) fn create_exclusive(path: &Path, access: SegmentAccess) -> Result<File, LayoutError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path, e)),
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(access.file_mode())
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    access.apply(path, access.file_mode())?;
    Ok(file)
}

/// Opens an existing segment file read-write, refusing a symlink and a file
/// the daemon's user does not own or others may write (checked on the open
/// descriptor, so a swap after the check changes nothing).
pub(crate) fn open_trusted(path: &Path) -> Result<File, LayoutError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => LayoutError::Untrusted {
                path: path.to_path_buf(),
                reason: "is a symbolic link".into(),
                fix: "remove it; segments are never opened through a link".into(),
            },
            _ => io_err(path, e),
        })?;
    let meta = file.metadata().map_err(|e| io_err(path, e))?;
    check_owned(path, &meta, false, daemon_uid())?;
    Ok(file)
}

/// Opens (creating if needed) a lock file that only the daemon's user can
/// open, so nobody else can hold its flock.
pub fn open_lock_file(path: &Path, access: SegmentAccess) -> Result<File, LayoutError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(access.file_mode())
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    let meta = file.metadata().map_err(|e| io_err(path, e))?;
    check_owned(path, &meta, false, daemon_uid())?;
    if meta.mode() & 0o7777 != access.file_mode() {
        access.apply(path, access.file_mode())?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("shm-trust-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    fn reason(e: LayoutError) -> String {
        match e {
            LayoutError::Untrusted { reason, .. } => reason,
            other => panic!("expected Untrusted, got {other}"),
        }
    }

    #[test]
    fn another_users_file_is_refused() {
        let d = tmp("owner");
        let f = d.join("f");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let meta = std::fs::symlink_metadata(&f).unwrap();
        let other = daemon_uid().wrapping_add(1);
        assert!(reason(check_owned(&f, &meta, false, other).unwrap_err()).contains("owned by"));
        check_owned(&f, &meta, false, daemon_uid()).unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_file_where_a_directory_belongs_is_refused() {
        let d = tmp("kind");
        let f = d.join("f");
        std::fs::write(&f, b"x").unwrap();
        let meta = std::fs::symlink_metadata(&f).unwrap();
        assert!(reason(check_owned(&f, &meta, true, daemon_uid()).unwrap_err())
            .contains("not a regular directory"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn exclusive_creation_replaces_a_link_not_its_target() {
        let d = tmp("link");
        let victim = d.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let name = d.join("rings.new");
        std::os::unix::fs::symlink(&victim, &name).unwrap();
        let f = create_exclusive(&name, SegmentAccess::PRIVATE).unwrap();
        f.set_len(4096).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let meta = std::fs::symlink_metadata(&name).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.mode() & 0o7777, 0o600);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_link_is_never_opened() {
        let d = tmp("open-link");
        let real = d.join("real");
        std::fs::write(&real, b"x").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = d.join("rings");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(reason(open_trusted(&link).unwrap_err()).contains("symbolic link"));
        open_trusted(&real).unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_lock_is_private_even_when_it_existed_open_to_all() {
        let d = tmp("lock");
        let lock = d.join("checkpointd.lock");
        std::fs::write(&lock, b"").unwrap();
        std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();
        open_lock_file(&lock, SegmentAccess::PRIVATE).unwrap();
        assert_eq!(std::fs::metadata(&lock).unwrap().mode() & 0o7777, 0o600);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_group_gets_read_access_only() {
        let gid = nix::unistd::getegid().as_raw();
        let access = SegmentAccess { group: Some(gid) };
        assert_eq!(
            (access.file_mode(), access.dir_mode(), access.socket_mode()),
            (0o640, 0o750, 0o660)
        );
        assert!(SegmentAccess::for_group("no-such-group-lazarus").is_err());
        assert_eq!(SegmentAccess::for_group("").unwrap(), SegmentAccess::PRIVATE);
    }
}
