//! Cgroup backends behind one small trait (youki's `CgroupManager` shape): [`v2::V2Manager`] for
//! the unified hierarchy and [`v1::V1Manager`] for legacy/hybrid hosts, plus detection and the
//! per-agent layout (`v2::V2Layout`, `v1::V1Layout`). Every constructor takes the cgroup root path
//! so tests can point at a fixture directory.
//!
//! Why not cgroups-rs (0.5.1): the crate was evaluated and is not used. Its `V2::new()` hard-codes
//! `/sys/fs/cgroup` and its V1 discovers mounts only from /proc/self/mountinfo, so a backend cannot
//! be pointed at another root; `create_v2_cgroup` writes `+controller` into the *root*
//! `cgroup.subtree_control` and every intermediate cgroup with errors ignored (violating systemd's
//! single-writer rule and hiding EBUSY from the no-internal-processes rule); generic attributes
//! (`memory.oom.group`) go through a map whose write errors are ignored; its v2 OOM helpers read
//! v1-only files (issue #136) and `memory_stat().oom_control` is always 0 on v2; it cannot place a
//! child in a cgroup before exec; and it pulls in a second nix (0.25), thiserror 1 and zbus
//! unconditionally. What we need is a few dozen files with well-known formats, so this module
//! writes them directly and reports every failure with the path.

pub mod v1;
pub mod v2;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proto::OomPolicy;
use serde::{Deserialize, Serialize};

use crate::error::{IsolationError, Result};

/// Which cgroup hierarchy a backend drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// How cgroups are mounted under the root (systemd's terms, `CGROUP_DELEGATION.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupSetup {
    /// The root itself is a cgroup2 mount.
    Unified,
    /// v1 controller mounts plus a cgroup2 mount at `<root>/unified` (controllers stay on v1).
    Hybrid,
    /// Only v1 controller mounts.
    Legacy,
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;

fn fs_magic(path: &Path) -> Result<i64> {
    let st = nix::sys::statfs::statfs(path).map_err(|e| IsolationError::NoCgroups {
        root: path.to_path_buf(),
        reason: format!("statfs: {e}"),
    })?;
    #[allow(clippy::unnecessary_cast)]
    Ok(st.filesystem_type().0 as i64)
}

/// Detects the cgroup setup under `root` (normally `/sys/fs/cgroup`) the way systemd and youki do:
/// `statfs(root)` is cgroup2 → unified; otherwise a cgroup2 `<root>/unified` → hybrid; otherwise
/// v1 controller directories → legacy.
pub fn detect(root: &Path) -> Result<CgroupSetup> {
    if fs_magic(root)? == CGROUP2_SUPER_MAGIC {
        return Ok(CgroupSetup::Unified);
    }
    let unified = root.join("unified");
    if unified.is_dir() && fs_magic(&unified).ok() == Some(CGROUP2_SUPER_MAGIC) {
        return Ok(CgroupSetup::Hybrid);
    }
    let any_v1 = ["memory", "cpu", "pids"]
        .iter()
        .any(|c| fs_magic(&root.join(c)).ok() == Some(CGROUP_SUPER_MAGIC));
    if any_v1 {
        Ok(CgroupSetup::Legacy)
    } else {
        Err(IsolationError::NoCgroups {
            root: root.to_path_buf(),
            reason: "neither a cgroup2 mount nor v1 controller mounts".into(),
        })
    }
}

/// Resource limits of one container, backend-neutral. Backends turn them into files
/// ([`CgroupManager::limit_files`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// CPU share (fractional CPUs); sets the weight/shares and, with `cpu_hard_limit`, the quota.
    pub cpus: Option<f64>,
    pub cpu_hard_limit: bool,
    /// Hard memory limit in bytes, rounded up to whole pages. Swap is disabled when set.
    pub memory_bytes: Option<u64>,
    /// Maximum number of processes (threads count too), the init included.
    pub pids_max: u64,
    /// Whole-container or single-process OOM kills (v2 `memory.oom.group`; v1: whether
    /// [`crate::Container::wait`] kills the rest of the container on an OOM event). Records
    /// written before the field existed read as the old behaviour, `KillTask`.
    #[serde(default)]
    pub oom_policy: OomPolicy,
}

/// CFS period used for hard CPU caps (Mesos' 100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The kernel's minimum CFS quota (1 ms).
pub const CPU_MIN_QUOTA_US: u64 = 1_000;

impl Limits {
    /// `cpu.max`/`cfs_quota_us` quota for the hard cap, if one applies.
    pub fn cpu_quota_us(&self) -> Option<u64> {
        match (self.cpus, self.cpu_hard_limit) {
            (Some(c), true) => {
                Some(((c * CPU_PERIOD_US as f64).round() as u64).max(CPU_MIN_QUOTA_US))
            }
            _ => None,
        }
    }
}

/// Counters used to tell an OOM kill apart and to fill a memory `proto::Limitation`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryReport {
    /// Processes killed by the OOM killer in this cgroup (v2 `memory.events oom_kill`, v1
    /// `memory.oom_control oom_kill`), if the kernel reports it.
    pub oom_kill: Option<u64>,
    /// The limit in force, if any.
    pub limit: Option<u64>,
    /// Peak usage (v2 `memory.peak`, v1 `memory.max_usage_in_bytes`), if reported.
    pub peak: Option<u64>,
    /// Raw counters (v2: memory.events; v1: failcnt, under_oom, oom_kill).
    pub events: BTreeMap<String, u64>,
}

/// One cgroup backend for one container's cgroup(s).
pub trait CgroupManager: Send + Sync + Debug {
    fn version(&self) -> CgroupVersion;
    /// The container's cgroup directories: `{"unified": path}` on v2, one per controller on v1.
    fn paths(&self) -> BTreeMap<String, PathBuf>;
    /// Creates the cgroup directories; [`IsolationError::AlreadyExists`] if one exists.
    fn create(&self, id: &str) -> Result<()>;
    /// The limit files and values `apply` writes, in write order.
    fn limit_files(&self, limits: &Limits) -> Vec<(PathBuf, String)>;
    /// Writes the limit files. Optional files (swap) are skipped when absent.
    fn apply(&self, limits: &Limits) -> Result<()> {
        for (path, value) in self.limit_files(limits) {
            write_file(&path, &value)?;
        }
        Ok(())
    }
    /// The files [`CgroupManager::update`] writes to move a live cgroup from `old` to `new`, in
    /// an order the kernel accepts at every step (v1: `memory.memsw.limit_in_bytes` must stay
    /// at or above `memory.limit_in_bytes`, so a raise writes memsw first, a cut the limit first).
    fn update_files(&self, old: &Limits, new: &Limits) -> Vec<(PathBuf, String)> {
        let _ = old;
        self.limit_files(new)
    }
    /// Changes the limits of a live cgroup from `old` to `new` ([`CgroupManager::update_files`]).
    /// Stops at the first failed write and returns its error (naming the file).
    fn update(&self, old: &Limits, new: &Limits) -> Result<()> {
        for (path, value) in self.update_files(old, new) {
            write_file(&path, &value)?;
        }
        Ok(())
    }
    /// `cgroup.procs` of every hierarchy, opened for writing (O_CLOEXEC), so a forked child can
    /// join by writing "0" before exec.
    fn join_files(&self) -> Result<Vec<File>>;
    /// An `O_PATH|O_DIRECTORY` fd of the cgroup for `clone3(CLONE_INTO_CGROUP)` (v2 only).
    fn clone_into_fd(&self) -> Option<OwnedFd>;
    /// Every process in the container's cgroup(s), deduplicated.
    fn procs(&self) -> Result<Vec<i32>>;
    /// Sends `signal` to every process (ESRCH ignored).
    fn signal_all(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        for pid in self.procs()? {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
        Ok(())
    }
    /// SIGKILLs every process, safe against concurrent forks (v2 `cgroup.kill`; v1 and old v2
    /// kernels: freeze, kill each pid, thaw).
    fn kill_all(&self) -> Result<()>;
    /// cpu user/system/throttled, memory current/peak, pids current.
    fn usage(&self) -> Result<proto::ResourceUsage>;
    /// Memory in use that reclaim cannot drop (usage minus inactive file cache, kubelet's
    /// "working set"): a memory limit below it would make the kernel OOM-kill (v2) or refuse
    /// (v1).
    fn memory_working_set(&self) -> Result<u64>;
    fn memory_report(&self) -> Result<MemoryReport>;
    /// An eventfd that becomes readable when the kernel's OOM killer runs in the cgroup (v1:
    /// registered through `cgroup.event_control` on `memory.oom_control`). `None` where the
    /// backend has no such event or needs none (v2 kills the group itself).
    fn oom_eventfd(&self) -> Result<Option<OwnedFd>> {
        Ok(None)
    }
    /// Removes the cgroup directories, retrying EBUSY; missing directories are fine.
    fn remove(&self) -> Result<()>;
}

// ------------------------------------------------------------------------------------------
// /proc/self/cgroup

/// The process's own cgroups as listed in `/proc/<pid>/cgroup`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OwnCgroups {
    /// v1: controller name → path relative to the hierarchy's root (e.g. `/process_api/ab12`).
    pub v1: BTreeMap<String, String>,
    /// The `0::/path` line (v2 or the hybrid unified hierarchy).
    pub unified: Option<String>,
}

impl OwnCgroups {
    /// Parses the text of `/proc/<pid>/cgroup`. Controllers are matched by list membership
    /// (`4:cpu,cpuacct:/x` gives both), never by substring.
    pub fn parse(text: &str) -> OwnCgroups {
        let mut own = OwnCgroups::default();
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if id == "0" && ctrls.is_empty() {
                own.unified = Some(path.to_string());
                continue;
            }
            for c in ctrls.split(',').filter(|c| !c.is_empty()) {
                own.v1.insert(c.to_string(), path.to_string());
            }
        }
        own
    }

    pub fn read_self() -> Result<OwnCgroups> {
        let p = Path::new("/proc/self/cgroup");
        let text = std::fs::read_to_string(p).map_err(|e| IsolationError::io("read", p, e))?;
        Ok(OwnCgroups::parse(&text))
    }
}

/// `root` joined with a cgroup path like `/a/b` (the leading slash is dropped).
pub(crate) fn join_cgroup(root: &Path, cgpath: &str) -> PathBuf {
    let rel = cgpath.trim_start_matches('/');
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

// ------------------------------------------------------------------------------------------
// file helpers

pub(crate) fn read_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| IsolationError::io("read", path, e))
}

/// Writes `value` in a single write(2) (cgroup files act on each write).
pub(crate) fn write_file(path: &Path, value: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| IsolationError::io("open for writing", path, e))?;
    f.write_all(value.as_bytes())
        .map_err(|e| IsolationError::io("write", path, e))
}

pub(crate) fn read_u64(path: &Path) -> Result<u64> {
    let text = read_file(path)?;
    text.trim().parse::<u64>().map_err(|e| {
        IsolationError::io(
            "parse",
            path,
            std::io::Error::new(ErrorKind::InvalidData, format!("{:?}: {e}", text.trim())),
        )
    })
}

/// `"key value"` lines (cpu.stat, memory.events, memory.oom_control, cpuacct.stat).
pub fn parse_flat_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse::<u64>().ok()?;
            Some((k.to_string(), v))
        })
        .collect()
}

/// Parses a cgroup process list (one pid per line).
pub(crate) fn parse_pids(text: &str) -> Vec<i32> {
    text.lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .collect()
}

/// Parses a cpu list like `0-3,6,8-9` into a count.
pub fn cpu_list_count(text: &str) -> Option<u64> {
    let mut n = 0u64;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: u64 = a.trim().parse().ok()?;
                let b: u64 = b.trim().parse().ok()?;
                if b < a {
                    return None;
                }
                n += b - a + 1;
            }
            None => {
                part.trim().parse::<u64>().ok()?;
                n += 1;
            }
        }
    }
    Some(n)
}

/// `rmdir` with retries on EBUSY (processes that just died can keep a cgroup busy briefly; Mesos
/// and crun retry the same way). A missing directory counts as removed.
pub(crate) fn rmdir_retry(path: &Path, deadline: Duration) -> Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(IsolationError::io("remove cgroup", path, e)),
        }
    }
}

/// `mkdir` that reports an existing cgroup as [`IsolationError::AlreadyExists`].
pub(crate) fn mkdir_new(path: &Path, id: &str) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            Err(IsolationError::AlreadyExists(id.to_string()))
        }
        Err(e) => Err(IsolationError::io("create cgroup", path, e)),
    }
}

pub(crate) fn open_procs_for_join(dir: &Path) -> Result<File> {
    let p = dir.join("cgroup.procs");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .map_err(|e| IsolationError::io("open for writing", &p, e))
}

#[cfg(test)]
mod tests;

/// `dir` and its descendant cgroups, deepest first (the order `rmdir` needs).
pub(crate) fn subtree_post_order(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn walk(d: &Path, out: &mut Vec<PathBuf>, depth: usize) {
        if depth > 32 {
            return;
        }
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    walk(&e.path(), out, depth + 1);
                }
            }
        }
        out.push(d.to_path_buf());
    }
    if dir.is_dir() {
        walk(dir, &mut out, 0);
    }
    out
}

/// Every pid in `cgroup.procs` of `dir` and its descendants (missing cgroups count as empty).
pub(crate) fn procs_in_subtree(dir: &Path) -> Result<Vec<i32>> {
    let mut pids = Vec::new();
    for d in subtree_post_order(dir) {
        let p = d.join("cgroup.procs");
        match std::fs::read_to_string(&p) {
            Ok(t) => pids.extend(parse_pids(&t)),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(IsolationError::io("read", &p, e)),
        }
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// Removes `dir` and any child cgroups a (root) task created, deepest first.
pub(crate) fn remove_subtree(dir: &Path) -> Result<()> {
    for d in subtree_post_order(dir) {
        rmdir_retry(&d, Duration::from_secs(5))?;
    }
    Ok(())
}
