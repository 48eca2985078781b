//! The work directory on disk: its modes, sandboxes, and whether a task's user can reach them.

use crate::error::{ReachError, SandboxError};
use std::path::{Path, PathBuf};

/// Modes of the work directory: others may traverse the way to a sandbox (the work dir,
/// `sandboxes/` and `sandboxes/FRAMEWORK` are 0711: a task started by an older agent, which has
/// no view, still reaches its sandbox by its path) but list nothing; the agent's state
/// (`meta/`, `containers/`) is 0700 and `agent_id` 0600. Each sandbox is 0750, its task user's.
/// Tasks of this agent see none of it: the work directory is hidden in their mount namespace
/// and only their sandbox is bound back (`container_spec`). Applied at every start, so a work
/// directory an older agent made is tightened.
pub(crate) fn restrict_work_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let set = |p: &Path, mode: u32| -> std::io::Result<()> {
        match std::fs::symlink_metadata(p) {
            Ok(md) if md.file_type().is_symlink() => Err(std::io::Error::other(format!(
                "{} is a symbolic link",
                p.display()
            ))),
            Ok(_) => std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    };
    set(dir, 0o711)?;
    set(&dir.join("meta"), 0o700)?;
    set(&dir.join("containers"), 0o700)?;
    set(&dir.join("agent_id"), 0o600)?;
    let sockets = dir.join("executor-sockets");
    set(&sockets, 0o711)?;
    let sandboxes = dir.join("sandboxes");
    set(&sandboxes, 0o711)?;
    for fw in std::fs::read_dir(&sandboxes)?.flatten() {
        if !fw.file_type()?.is_dir() {
            continue;
        }
        set(&fw.path(), 0o711)?;
        // Sandboxes of tasks an older agent started (0755 then): no access for others. The
        // task's user owns each, so this keeps every task reaching its own.
        for sb in std::fs::read_dir(fw.path())?.flatten() {
            if sb.file_type()?.is_dir() {
                tighten_sandbox(&sb.path());
            }
        }
    }
    Ok(())
}

/// Clears a sandbox's access for others, through an `O_NOFOLLOW` directory fd.
fn tighten_sandbox(sandbox: &Path) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(sandbox)
    else {
        return;
    };
    if let Ok(md) = f.metadata() {
        let mode = md.permissions().mode() & 0o7777;
        if mode & 0o007 != 0 {
            let _ = f.set_permissions(std::fs::Permissions::from_mode(mode & !0o007));
        }
    }
}

/// Creates a sandbox (and its parents, root's 0711 below the work directory: traversable,
/// not listable) owned by `owner` with mode 0750: the task's user and group only.
pub(crate) fn create_sandbox(
    sandbox: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(), SandboxError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |source| SandboxError::Create {
        path: sandbox.to_path_buf(),
        source,
    };
    if let Some(parent) = sandbox.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(parent)
            .map_err(err)?;
    }
    match std::fs::DirBuilder::new().mode(0o750).create(sandbox) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(e)),
    }
    // Never follow a link: only a directory the agent made is chowned and chmodded.
    let md = std::fs::symlink_metadata(sandbox).map_err(err)?;
    if !md.is_dir() {
        return Err(SandboxError::NotADirectory(sandbox.to_path_buf()));
    }
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(sandbox, Some(uid), Some(gid)).map_err(err)?;
    }
    std::fs::set_permissions(sandbox, std::fs::Permissions::from_mode(0o750)).map_err(err)
}

pub(crate) fn check_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok")?;
    std::fs::remove_file(&probe)
}

/// A task user's identity as the kernel checks file access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TaskUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary one included or not).
    pub groups: Vec<u32>,
}

impl TaskUser {
    pub fn lookup(name: &str) -> Result<TaskUser, ReachError> {
        let user = nix::unistd::User::from_name(name)
            .map_err(|source| ReachError::Lookup {
                name: name.to_owned(),
                source,
            })?
            .ok_or_else(|| ReachError::NoSuchUser(name.to_owned()))?;
        let groups = std::ffi::CString::new(name)
            .ok()
            .and_then(|c| nix::unistd::getgrouplist(&c, user.gid).ok())
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default();
        Ok(TaskUser {
            name: name.to_owned(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
        })
    }

    /// Whether this user may search (enter) a directory with `mode` owned by `owner`:
    /// root always may (it bypasses DAC); the owner's bits count for the owner only, the
    /// group's for members, the others' for everyone else (POSIX ACLs are not read).
    pub fn can_search(&self, mode: u32, owner: (u32, u32)) -> bool {
        let bit = if self.uid == 0 {
            return true;
        } else if owner.0 == self.uid {
            0o100
        } else if owner.1 == self.gid || self.groups.contains(&owner.1) {
            0o010
        } else {
            0o001
        };
        mode & bit != 0
    }
}

/// A directory on the way that a task user cannot enter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Blocked {
    pub dir: PathBuf,
    pub mode: u32,
    pub owner: (u32, u32),
}

/// Gives (mode, uid, gid) of a directory.
pub(crate) type StatFn = dyn Fn(&Path) -> std::io::Result<(u32, u32, u32)>;

/// The first directory from `/` down to `target` (itself included) that `user` cannot search,
/// as `stat` describes each.
pub(crate) fn first_blocked(
    target: &Path,
    user: &TaskUser,
    stat: &StatFn,
) -> std::io::Result<Option<Blocked>> {
    for dir in target.ancestors().collect::<Vec<_>>().into_iter().rev() {
        let (mode, uid, gid) = stat(dir)?;
        if !user.can_search(mode, (uid, gid)) {
            return Ok(Some(Blocked {
                dir: dir.to_path_buf(),
                mode: mode & 0o7777,
                owner: (uid, gid),
            }));
        }
    }
    Ok(None)
}

fn stat_dir(dir: &Path) -> std::io::Result<(u32, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(dir)?;
    Ok((md.mode(), md.uid(), md.gid()))
}

/// Checks that the task user `name` can reach `target` (a directory the agent made, e.g. the
/// work directory's `sandboxes/`); the error names the blocking directory, its mode and owner,
/// and the user.
pub(crate) fn check_reachable(target: &Path, name: &str) -> Result<(), ReachError> {
    let user = TaskUser::lookup(name)?;
    let path = target
        .canonicalize()
        .map_err(|source| ReachError::Resolve {
            path: target.to_path_buf(),
            source,
        })?;
    match first_blocked(&path, &user, &stat_dir) {
        Ok(None) => Ok(()),
        Ok(Some(b)) => Err(ReachError::Blocked {
            user: user.name,
            uid: user.uid,
            gid: user.gid,
            target: target.to_path_buf(),
            dir: b.dir,
            mode: b.mode,
            owner_uid: b.owner.0,
            owner_gid: b.owner.1,
        }),
        Err(source) => Err(ReachError::Check {
            path: target.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nobody() -> TaskUser {
        TaskUser {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534, 100],
        }
    }

    #[test]
    fn search_permission_follows_owner_then_group_then_others() {
        let u = nobody();
        assert!(!u.can_search(0o700, (0, 0)));
        assert!(u.can_search(0o711, (0, 0)));
        assert!(u.can_search(0o100, (65534, 0)));
        // The owner's bits alone count for the owner, even where others may enter.
        assert!(!u.can_search(0o071, (65534, 0)));
        assert!(u.can_search(0o710, (0, 100)));
        assert!(!u.can_search(0o701, (0, 100)));
        let root = TaskUser { uid: 0, ..nobody() };
        assert!(root.can_search(0o000, (1, 1)));
    }

    #[test]
    fn the_first_directory_the_user_cannot_enter_is_named() {
        let modes = |p: &Path| -> std::io::Result<(u32, u32, u32)> {
            Ok(match p.to_str().unwrap() {
                "/var/lib/x" => (0o40700, 0, 0),
                "/var/lib/x/work/sandboxes" => (0o40700, 0, 0),
                _ => (0o40755, 0, 0),
            })
        };
        let b = first_blocked(Path::new("/var/lib/x/work/sandboxes"), &nobody(), &modes)
            .unwrap()
            .unwrap();
        assert_eq!(b.dir, Path::new("/var/lib/x"));
        assert_eq!(b.mode, 0o700);
        assert_eq!(
            first_blocked(Path::new("/var/lib/y/work"), &nobody(), &modes).unwrap(),
            None
        );
    }

    #[test]
    fn a_real_0700_directory_blocks_nobody_and_the_message_says_so() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        if nix::unistd::User::from_name("nobody")
            .ok()
            .flatten()
            .is_none()
        {
            panic!("the test needs the user nobody");
        }
        let err = check_reachable(&work, "nobody").unwrap_err().to_string();
        let canonical = dir.path().canonicalize().unwrap();
        assert!(
            err.contains(&format!("{} (mode 0700", canonical.display())),
            "{err}"
        );
        assert!(err.contains("task user nobody"), "{err}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        // Whatever lies above the temp dir: only it changed, so it is no longer the one named.
        if let Err(e) = check_reachable(&work, "nobody") {
            assert!(
                !e.to_string()
                    .contains(&format!("{} (mode", canonical.display())),
                "{e}"
            );
        }
    }
}
