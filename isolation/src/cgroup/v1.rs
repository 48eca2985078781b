//! The cgroup v1 backend for legacy and hybrid hosts: one directory per controller hierarchy
//! (cpu, cpuacct, memory, pids and, when mounted, freezer), each nested under the agent's own
//! cgroup in that hierarchy (`<mount>/<own path>/<parent>/<id>`). v1 has no no-internal-processes
//! rule, so the agent does not move itself.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{
    join_cgroup, mkdir_new, open_procs_for_join, parse_flat_keyed, procs_in_subtree, read_file,
    read_u64, remove_subtree, write_file, CgroupManager, CgroupVersion, Limits, MemoryReport,
    OwnCgroups,
};
use crate::error::{IsolationError, Result};

/// Hierarchies every task joins.
pub const REQUIRED: [&str; 4] = ["cpu", "cpuacct", "memory", "pids"];
/// Joined when mounted: kill uses it to stop forks while killing.
pub const OPTIONAL: [&str; 1] = ["freezer"];

/// v1 memory limits at or above this mean "unlimited" (the kernel reports PAGE_COUNTER_MAX pages).
pub const V1_UNLIMITED: u64 = 1 << 62;

/// Where the agent keeps its cgroups on a v1 host.
#[derive(Clone, Debug, PartialEq)]
pub struct V1Layout {
    pub root: PathBuf,
    /// controller → the agent's cgroup in that hierarchy (`<mount>/<own path>`).
    pub own: BTreeMap<String, PathBuf>,
    /// controller → `<own>/<parent>`, the parent of the task cgroups.
    pub tasks: BTreeMap<String, PathBuf>,
}

impl V1Layout {
    /// Creates `<root>/<ctrl>/<own path>/<parent>` for each controller. Controllers are mounted at
    /// `<root>/<ctrl>` (co-mounted `cpu,cpuacct` works through the usual symlinks: both names map
    /// to the same directory, and the manager deduplicates).
    pub fn prepare(root: &Path, own: &OwnCgroups, parent: &str) -> Result<V1Layout> {
        let mut own_dirs = BTreeMap::new();
        let mut tasks = BTreeMap::new();
        for (ctrl, required) in REQUIRED
            .iter()
            .map(|c| (*c, true))
            .chain(OPTIONAL.iter().map(|c| (*c, false)))
        {
            let mount = root.join(ctrl);
            if !mount.join("cgroup.procs").exists() {
                if required {
                    return Err(IsolationError::MissingController {
                        controller: ctrl.to_string(),
                        path: mount,
                    });
                }
                continue;
            }
            let Some(own_path) = own.v1.get(ctrl) else {
                if required {
                    return Err(IsolationError::OwnCgroupUnknown {
                        controller: ctrl.to_string(),
                    });
                }
                continue;
            };
            let own_dir = join_cgroup(&mount, own_path);
            let own_dir = own_dir.canonicalize().unwrap_or(own_dir);
            let dir = own_dir.join(parent);
            std::fs::create_dir_all(&dir)
                .map_err(|e| IsolationError::io("create cgroup", &dir, e))?;
            own_dirs.insert(ctrl.to_string(), own_dir);
            tasks.insert(ctrl.to_string(), dir);
        }
        Ok(V1Layout {
            root: root.to_path_buf(),
            own: own_dirs,
            tasks,
        })
    }

    pub fn manager(&self, id: &str) -> V1Manager {
        V1Manager::new(
            self.tasks
                .iter()
                .map(|(c, d)| (c.clone(), d.join(id)))
                .collect(),
        )
    }
}

/// One container's cgroups, one directory per controller.
#[derive(Clone, Debug)]
pub struct V1Manager {
    dirs: BTreeMap<String, PathBuf>,
}

impl V1Manager {
    pub fn new(dirs: BTreeMap<String, PathBuf>) -> V1Manager {
        V1Manager { dirs }
    }

    fn dir(&self, ctrl: &str) -> Result<&Path> {
        self.dirs
            .get(ctrl)
            .map(|p| p.as_path())
            .ok_or_else(|| IsolationError::MissingController {
                controller: ctrl.to_string(),
                path: self.dirs.values().next().cloned().unwrap_or_default(),
            })
    }

    fn f(&self, ctrl: &str, name: &str) -> Result<PathBuf> {
        Ok(self.dir(ctrl)?.join(name))
    }

    /// The distinct directories (co-mounted controllers share one).
    fn unique_dirs(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = self.dirs.values().map(|p| p.as_path()).collect();
        v.sort();
        v.dedup();
        v
    }

    fn freezer_state(&self, state: &str) -> Result<bool> {
        let Some(dir) = self.dirs.get("freezer") else {
            return Ok(false);
        };
        write_file(&dir.join("freezer.state"), state)?;
        if state == "FROZEN" {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(2) {
                if read_file(&dir.join("freezer.state"))?.trim() == "FROZEN" {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(true)
    }
}

impl CgroupManager for V1Manager {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn paths(&self) -> BTreeMap<String, PathBuf> {
        self.dirs.clone()
    }

    fn create(&self, id: &str) -> Result<()> {
        let dirs = self.unique_dirs();
        for (i, d) in dirs.iter().enumerate() {
            if let Err(e) = mkdir_new(d, id) {
                for made in &dirs[..i] {
                    let _ = std::fs::remove_dir(made);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn limit_files(&self, l: &Limits) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        let Ok(cpu) = self.dir("cpu") else { return out };
        if let Some(c) = l.cpus {
            let shares = ((c * 1024.0).round() as u64).clamp(2, 262_144);
            out.push((cpu.join("cpu.shares"), shares.to_string()));
            out.push((
                cpu.join("cpu.cfs_period_us"),
                super::CPU_PERIOD_US.to_string(),
            ));
            let quota = l
                .cpu_quota_us()
                .map(|q| q.to_string())
                .unwrap_or_else(|| "-1".into());
            out.push((cpu.join("cpu.cfs_quota_us"), quota));
        }
        if let (Some(m), Ok(mem)) = (l.memory_bytes, self.dir("memory")) {
            // limit first: memsw must stay >= limit.
            out.push((mem.join("memory.limit_in_bytes"), m.to_string()));
            let memsw = mem.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                out.push((memsw, m.to_string()));
            } else {
                // No swap accounting: keep the cgroup from swapping at all.
                out.push((mem.join("memory.swappiness"), "0".into()));
            }
        }
        if let Ok(pids) = self.dir("pids") {
            out.push((pids.join("pids.max"), l.pids_max.to_string()));
        }
        out
    }

    fn update_files(&self, old: &Limits, new: &Limits) -> Vec<(PathBuf, String)> {
        let mut files = self.limit_files(new);
        // limit_files writes limit_in_bytes before memsw (right for a cut, and for a new cgroup,
        // where both start unlimited). A raise must lift memsw first: the kernel refuses a
        // limit above the current memsw with EINVAL.
        let raise = matches!((old.memory_bytes, new.memory_bytes), (Some(o), Some(n)) if n > o);
        if raise {
            let limit = files
                .iter()
                .position(|(p, _)| p.ends_with("memory.limit_in_bytes"));
            let memsw = files
                .iter()
                .position(|(p, _)| p.ends_with("memory.memsw.limit_in_bytes"));
            if let (Some(l), Some(m)) = (limit, memsw) {
                files.swap(l, m);
            }
        }
        files
    }

    fn join_files(&self) -> Result<Vec<File>> {
        self.unique_dirs()
            .into_iter()
            .map(open_procs_for_join)
            .collect()
    }

    fn clone_into_fd(&self) -> Option<OwnedFd> {
        None
    }

    fn procs(&self) -> Result<Vec<i32>> {
        let mut all = Vec::new();
        for d in self.unique_dirs() {
            all.extend(procs_in_subtree(d)?);
        }
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    fn kill_all(&self) -> Result<()> {
        // Freeze (when the freezer is mounted) so nothing forks between reading the pid list and
        // killing it, SIGKILL every pid, thaw so the pending SIGKILLs are delivered. Repeat while
        // anything is left (a process that was mid-fork without a freezer).
        let start = Instant::now();
        loop {
            let frozen = self.freezer_state("FROZEN")?;
            let res = self.signal_all(Signal::SIGKILL);
            if frozen {
                self.freezer_state("THAWED")?;
            }
            res?;
            if self.procs()?.is_empty() || start.elapsed() > Duration::from_secs(1) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn usage(&self) -> Result<proto::ResourceUsage> {
        let acct = self.dir("cpuacct")?;
        let (user_us, sys_us) = match (
            read_u64(&acct.join("cpuacct.usage_user")),
            read_u64(&acct.join("cpuacct.usage_sys")),
        ) {
            (Ok(u), Ok(s)) => (u / 1000, s / 1000),
            _ => {
                // Older kernels: USER_HZ ticks.
                let st = parse_flat_keyed(&read_file(&acct.join("cpuacct.stat"))?);
                let tick_us = 1_000_000 / procfs::ticks_per_second().max(1);
                (
                    st.get("user").copied().unwrap_or(0) * tick_us,
                    st.get("system").copied().unwrap_or(0) * tick_us,
                )
            }
        };
        let cpu_stat = parse_flat_keyed(&read_file(&self.f("cpu", "cpu.stat")?)?);
        Ok(proto::ResourceUsage {
            cpu_user_us: user_us,
            cpu_system_us: sys_us,
            cpu_throttled_us: cpu_stat.get("throttled_time").copied().unwrap_or(0) / 1000,
            mem_current_bytes: read_u64(&self.f("memory", "memory.usage_in_bytes")?)?,
            mem_peak_bytes: read_u64(&self.f("memory", "memory.max_usage_in_bytes")?).ok(),
            pids_current: read_u64(&self.f("pids", "pids.current")?)?,
        })
    }

    fn memory_working_set(&self) -> Result<u64> {
        let usage = read_u64(&self.f("memory", "memory.usage_in_bytes")?)?;
        let stat = parse_flat_keyed(&read_file(&self.f("memory", "memory.stat")?)?);
        let inactive = stat.get("total_inactive_file").copied().unwrap_or(0);
        Ok(usage.saturating_sub(inactive))
    }

    fn memory_report(&self) -> Result<MemoryReport> {
        let mem = self.dir("memory")?;
        let mut events = parse_flat_keyed(&read_file(&mem.join("memory.oom_control"))?);
        events.remove("oom_kill_disable");
        if let Ok(f) = read_u64(&mem.join("memory.failcnt")) {
            events.insert("failcnt".into(), f);
        }
        let limit = read_u64(&mem.join("memory.limit_in_bytes"))
            .ok()
            .filter(|l| *l < V1_UNLIMITED);
        let peak = read_u64(&mem.join("memory.max_usage_in_bytes")).ok();
        Ok(MemoryReport {
            oom_kill: events.get("oom_kill").copied(),
            limit,
            peak,
            events,
        })
    }

    fn oom_eventfd(&self) -> Result<Option<OwnedFd>> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let mem = self.dir("memory")?;
        let control = mem.join("memory.oom_control");
        let oom_control =
            File::open(&control).map_err(|e| IsolationError::io("open", &control, e))?;
        // SAFETY: eventfd(2) with integer arguments; a non-negative result is a new fd we own.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(IsolationError::sys("eventfd", nix::errno::Errno::last()));
        }
        // SAFETY: see above; `raw` is ours and not owned elsewhere.
        let efd = unsafe { OwnedFd::from_raw_fd(raw) };
        // The kernel takes its own references: memory.oom_control may be closed afterwards, and
        // closing the eventfd unregisters the event.
        write_file(
            &mem.join("cgroup.event_control"),
            &format!("{} {}", efd.as_raw_fd(), oom_control.as_raw_fd()),
        )?;
        Ok(Some(efd))
    }

    fn remove(&self) -> Result<()> {
        let mut first_err = None;
        for d in self.unique_dirs() {
            if let Err(e) = remove_subtree(d) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}
