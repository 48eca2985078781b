//! What the task sees of the host's filesystem, set up by the init in the task's (rprivate)
//! mount namespace: hidden directories covered by an empty read-only tmpfs with the visible
//! paths below them bound back at their own paths, and read-only subtrees.
//!
//! Order: every visible source is opened first (`O_PATH`), since the tmpfs hides it; then each
//! hidden directory gets its tmpfs; each visible path below a hidden one gets a mount point
//! created in the tmpfs and is bind-mounted (recursively) from its fd through
//! `/proc/self/fd/N`; then the tmpfs is remounted read-only. Read-only paths are bound onto
//! themselves (so they are mount points of their own, never their parent's mount) and made
//! read-only with every mount below (`mount_setattr(AT_RECURSIVE)`, else one remount per
//! mount listed in `/proc/self/mountinfo`).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use crate::spec::FsView;

/// Options of the tmpfs over a hidden directory: root-owned 0755 and tiny (it only holds mount
/// points, and is read-only once they exist).
const HIDDEN_TMPFS_OPTS: &str = "mode=0755,size=64k,nr_inodes=1024";

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_uint = 0x8000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Hides `hidden`, binds back the `visible` paths below them, then makes `read_only` read-only.
pub(crate) fn apply(view: &FsView) -> Result<(), String> {
    hide(&view.hidden, &view.visible)?;
    for p in &view.read_only {
        make_read_only(p)?;
    }
    Ok(())
}

fn hide(hidden: &[PathBuf], visible: &[PathBuf]) -> Result<(), String> {
    let covered: Vec<&PathBuf> = hidden.iter().filter(|h| h.is_dir()).collect();
    if covered.is_empty() {
        if let Some(h) = hidden.iter().find(|h| h.exists()) {
            return Err(format!("hidden path {} is not a directory", h.display()));
        }
        return Ok(());
    }
    // Visible paths under a hidden one, opened before the tmpfs covers them.
    let mut sources = Vec::new();
    for v in visible {
        if !covered.iter().any(|h| v.starts_with(h)) {
            continue;
        }
        let (fd, is_dir) = open_path(v)?;
        sources.push((v, fd, is_dir));
    }
    for h in &covered {
        mount(
            Some("corral-hidden"),
            h.as_path(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(HIDDEN_TMPFS_OPTS),
        )
        .map_err(|e| format!("mount a tmpfs over {}: {e}", h.display()))?;
    }
    for (v, fd, is_dir) in &sources {
        mount_point(v, *is_dir)?;
        mount(
            Some(proc_fd(fd).as_path()),
            v.as_path(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| format!("bind {} back: {e}", v.display()))?;
    }
    for h in &covered {
        mount(
            None::<&str>,
            h.as_path(),
            None::<&str>,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            Some(HIDDEN_TMPFS_OPTS),
        )
        .map_err(|e| format!("remount the tmpfs over {} read-only: {e}", h.display()))?;
    }
    Ok(())
}

/// An `O_PATH` fd of `path` and whether it is a directory; a symlink as the last component is
/// refused (a task may own the directory that holds it).
fn open_path(path: &Path) -> Result<(OwnedFd, bool), String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("open visible path {}: {e}", path.display()))?;
    let fd = OwnedFd::from(f);
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat on a valid fd into a properly sized, writable stat buffer.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(format!("fstat {}: {}", path.display(), Errno::last()));
    }
    // SAFETY: fstat succeeded, so the buffer is initialised.
    let kind = unsafe { st.assume_init() }.st_mode & libc::S_IFMT;
    match kind {
        libc::S_IFDIR => Ok((fd, true)),
        libc::S_IFREG | libc::S_IFSOCK => Ok((fd, false)),
        _ => Err(format!(
            "visible path {} is not a directory, file or socket (a symlink?)",
            path.display()
        )),
    }
}

fn proc_fd(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Creates the mount point for `path` inside a hidden tmpfs (root's, 0755; a file for a file).
fn mount_point(path: &Path, is_dir: bool) -> Result<(), String> {
    let err = |e: std::io::Error| format!("create mount point {}: {e}", path.display());
    if is_dir {
        return std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(err);
    }
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(err)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map(drop)
        .map_err(err)
}

/// Makes `path` and every mount below it read-only; nothing to do where it does not exist.
fn make_read_only(path: &Path) -> Result<(), String> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind {} onto itself: {e}", path.display()))?;
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", path.display()))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr with a NUL-terminated path and a valid mount_attr of the size given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            cpath.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    match Errno::last() {
        // Kernels before 5.12: one remount per mount.
        Errno::ENOSYS => remount_each_read_only(path),
        e => Err(format!("make {} read-only: {e}", path.display())),
    }
}

fn remount_each_read_only(path: &Path) -> Result<(), String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("read /proc/self/mountinfo: {e}"))?;
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(path))
        .collect();
    points.dedup();
    for p in points {
        // The remount keeps the mount's other flags (a bind remount may not clear them).
        let st =
            nix::sys::statvfs::statvfs(&p).map_err(|e| format!("statvfs {}: {e}", p.display()))?;
        let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
        use nix::sys::statvfs::FsFlags;
        for (have, set) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if st.flags().contains(have) {
                flags |= set;
            }
        }
        mount(None::<&str>, p.as_path(), None::<&str>, flags, None::<&str>)
            .map_err(|e| format!("remount {} read-only: {e}", p.display()))?;
    }
    Ok(())
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(s: &str) -> std::ffi::OsString {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    std::os::unix::ffi::OsStringExt::from_vec(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(super::unescape(r"/a\040b"), "/a b");
        assert_eq!(super::unescape(r"/plain"), "/plain");
        assert_eq!(super::unescape(r"/end\04"), r"/end\04");
    }
}
