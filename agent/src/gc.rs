//! Sandbox garbage collection: the sandboxes of ended tasks are removed once they are older than
//! a configured age, and sooner, oldest first, while the work directory's filesystem is fuller
//! than a high-water mark (sandboxes filling disks was a long-standing Mesos complaint).
//! Sandboxes of tasks the agent still tracks are never touched.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

#[derive(Clone, Debug)]
pub struct GcPolicy {
    /// Remove an ended task's sandbox this long after it last changed (Mesos: one week).
    pub max_age: Duration,
    /// While the filesystem is fuller than this (percent of blocks), remove ended sandboxes
    /// oldest first regardless of age.
    pub disk_high_percent: u8,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            max_age: Duration::from_secs(7 * 24 * 3600),
            disk_high_percent: 90,
        }
    }
}

/// A sandbox directory and when it last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub path: PathBuf,
    pub modified: SystemTime,
}

/// Every task and executor sandbox under `root` (`root/FRAMEWORK/TASK` and
/// `root/FRAMEWORK/executors/EXECUTOR`).
pub fn list_sandboxes(root: &Path) -> Vec<Sandbox> {
    let mut out = Vec::new();
    let Ok(frameworks) = std::fs::read_dir(root) else {
        return out;
    };
    for fw in frameworks.flatten() {
        let fw_path = fw.path();
        if !fw_path.is_dir() {
            continue;
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&fw_path) {
            for e in entries.flatten() {
                let p = e.path();
                if !p.is_dir() {
                    continue;
                }
                if e.file_name() == "executors" {
                    if let Ok(ex) = std::fs::read_dir(&p) {
                        dirs.extend(ex.flatten().map(|x| x.path()).filter(|x| x.is_dir()));
                    }
                } else {
                    dirs.push(p);
                }
            }
        }
        for d in dirs {
            if let Ok(modified) = d.metadata().and_then(|m| m.modified()) {
                out.push(Sandbox { path: d, modified });
            }
        }
    }
    out
}

/// The sandboxes to remove: not live, and either older than the policy's age or (when
/// `disk_pressure`) any, oldest first.
pub fn select(
    sandboxes: Vec<Sandbox>,
    live: &HashSet<PathBuf>,
    now: SystemTime,
    policy: &GcPolicy,
    disk_pressure: bool,
) -> Vec<PathBuf> {
    let mut ended: Vec<Sandbox> = sandboxes
        .into_iter()
        .filter(|s| {
            !live
                .iter()
                .any(|l| l.starts_with(&s.path) || s.path.starts_with(l))
        })
        .collect();
    ended.sort_by_key(|s| s.modified);
    ended
        .into_iter()
        .filter(|s| {
            disk_pressure
                || now
                    .duration_since(s.modified)
                    .is_ok_and(|age| age >= policy.max_age)
        })
        .map(|s| s.path)
        .collect()
}

/// Percent of the filesystem's blocks in use under `path`.
pub fn disk_used_percent(path: &Path) -> Option<u8> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let total = s.blocks();
    if total == 0 {
        return None;
    }
    let used = total.saturating_sub(s.blocks_available());
    Some(((used * 100) / total).min(100) as u8)
}

/// One collection pass; returns what was removed. Under disk pressure it stops as soon as usage
/// is back under the mark.
pub fn collect(root: &Path, live: &HashSet<PathBuf>, policy: &GcPolicy) -> Vec<PathBuf> {
    let pressure = |p: &Path| disk_used_percent(p).is_some_and(|u| u > policy.disk_high_percent);
    let under_pressure = pressure(root);
    let victims = select(
        list_sandboxes(root),
        live,
        SystemTime::now(),
        policy,
        under_pressure,
    );
    let mut removed = Vec::new();
    for v in victims {
        match std::fs::remove_dir_all(&v) {
            Ok(()) => removed.push(v),
            Err(e) => {
                tracing::warn!(sandbox = %v.display(), error = %e, "cannot remove an old sandbox")
            }
        }
        if under_pressure && !pressure(root) {
            break;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(root: &Path, rel: &str, age: Duration) -> PathBuf {
        let p = root.join(rel);
        std::fs::create_dir_all(&p).expect("mkdir");
        std::fs::write(p.join("stdout"), b"x").expect("write");
        let when = SystemTime::now() - age;
        std::fs::File::open(&p)
            .and_then(|f| f.set_modified(when))
            .expect("set mtime");
        p
    }

    #[test]
    fn old_ended_sandboxes_go_live_and_young_ones_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let day = Duration::from_secs(24 * 3600);
        let old = make(root, "f1/t-old", 8 * day);
        let young = make(root, "f1/t-young", day);
        let live_old = make(root, "f1/t-live", 30 * day);
        let old_exec = make(root, "f2/executors/e1", 9 * day);
        let live: HashSet<PathBuf> = [live_old.clone()].into_iter().collect();
        let policy = GcPolicy::default();
        let picked = select(
            list_sandboxes(root),
            &live,
            SystemTime::now(),
            &policy,
            false,
        );
        assert_eq!(
            picked,
            vec![old_exec.clone(), old.clone()],
            "oldest first, only old and ended"
        );
        // Under disk pressure every ended sandbox may go, oldest first; the live one never.
        let picked = select(
            list_sandboxes(root),
            &live,
            SystemTime::now(),
            &policy,
            true,
        );
        assert_eq!(picked, vec![old_exec, old, young]);
        // A live task inside an executor keeps the executor's sandbox.
        let exec_task = root.join("f2/executors/e1/tasks/t9");
        let live: HashSet<PathBuf> = [exec_task].into_iter().collect();
        let picked = select(
            list_sandboxes(root),
            &live,
            SystemTime::now(),
            &policy,
            true,
        );
        assert!(!picked.iter().any(|p| p.ends_with("e1")), "{picked:?}");
    }

    #[test]
    fn collect_removes_what_it_selects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let old = make(root, "f1/t-old", Duration::from_secs(3600));
        let keep = make(root, "f1/t-new", Duration::from_secs(0));
        let policy = GcPolicy {
            max_age: Duration::from_secs(60),
            disk_high_percent: 100,
        };
        let removed = collect(root, &HashSet::new(), &policy);
        assert_eq!(removed, vec![old.clone()]);
        assert!(!old.exists());
        assert!(keep.exists());
    }
}
