//! The cgroup v2 backend: one leaf per container under `<base>/<parent>/`, where `<base>` is the
//! agent's own (delegated) cgroup and the agent itself lives in `<base>/supervisor` to respect the
//! no-internal-processes rule.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use proto::OomPolicy;

use super::{
    join_cgroup, mkdir_new, open_procs_for_join, parse_flat_keyed, parse_pids, procs_in_subtree,
    read_file, read_u64, remove_subtree, write_file, CgroupManager, CgroupVersion, Limits,
    MemoryReport,
};
use crate::error::{IsolationError, Result};

/// Controllers every task cgroup gets.
pub const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// Where the agent keeps its cgroups on a v2 host.
#[derive(Clone, Debug, PartialEq)]
pub struct V2Layout {
    /// The cgroup2 mount (normally `/sys/fs/cgroup`).
    pub root: PathBuf,
    /// The agent's delegated cgroup.
    pub base: PathBuf,
    /// `<base>/<parent>`: the parent of every task leaf; holds no process.
    pub tasks: PathBuf,
    /// Where the agent itself now runs.
    pub supervisor: PathBuf,
}

impl V2Layout {
    /// Builds the layout for a process whose unified cgroup is `own` (the `0::` line), moving the
    /// process (`self_pid`, all threads) into `<own>/supervisor` when `own` is an inner node that
    /// must hold no processes. If `own` is already named `supervisor` (systemd
    /// `DelegateSubgroup=supervisor`) its parent is the base. In the root cgroup (a VM or a
    /// container without systemd) the root is the base: it is exempt from the rule, and the agent
    /// stays there.
    ///
    /// Writes only inside `<base>`: `+cpu +memory +pids` into `<base>/cgroup.subtree_control`
    /// (only the missing ones) and `<tasks>/cgroup.subtree_control`. Never writes ancestors.
    pub fn prepare(root: &Path, own: &str, parent: &str, self_pid: i32) -> Result<V2Layout> {
        let own_dir = join_cgroup(root, own);
        let (base, supervisor, must_move) = if own_dir == root {
            (root.to_path_buf(), root.to_path_buf(), false)
        } else if own_dir.file_name().is_some_and(|n| n == "supervisor") {
            let base = own_dir.parent().unwrap_or(root).to_path_buf();
            (base, own_dir.clone(), false)
        } else {
            (own_dir.clone(), own_dir.join("supervisor"), true)
        };
        let to_move: &[i32] = if must_move { &[self_pid] } else { &[] };
        Self::build(root, base, supervisor, to_move, parent)
    }

    /// Builds the layout under `base`, a cgroup (path as in `/proc/self/cgroup`) that the caller
    /// had delegated to it, such as a systemd scope made with `Delegate=yes`, instead of under
    /// the process's own cgroup. Every process in `base` itself (a holder that keeps the scope
    /// alive) moves into `<base>/supervisor`; the calling process stays where it is. Used again
    /// on an existing base (an agent restart) it moves nothing more and reuses what is there.
    pub fn prepare_delegated(root: &Path, base: &str, parent: &str) -> Result<V2Layout> {
        let base_dir = join_cgroup(root, base);
        if base_dir == root {
            return Err(IsolationError::InvalidSpec(format!(
                "the delegated cgroup {base:?} is the root of {}",
                root.display()
            )));
        }
        let holders = parse_pids(&read_file(&base_dir.join("cgroup.procs"))?);
        let supervisor = base_dir.join("supervisor");
        Self::build(root, base_dir, supervisor, &holders, parent)
    }

    fn build(
        root: &Path,
        base: PathBuf,
        supervisor: PathBuf,
        to_move: &[i32],
        parent: &str,
    ) -> Result<V2Layout> {
        // Check before touching anything (no move into a useless hierarchy).
        let available = read_file(&base.join("cgroup.controllers"))?;
        for c in CONTROLLERS {
            if !available.split_whitespace().any(|a| a == c) {
                return Err(IsolationError::MissingController {
                    controller: c.to_string(),
                    path: base.clone(),
                });
            }
        }
        if !to_move.is_empty() {
            if let Err(e) = std::fs::create_dir(&supervisor) {
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(IsolationError::io("create cgroup", &supervisor, e));
                }
            }
            for pid in to_move {
                match write_file(&supervisor.join("cgroup.procs"), &pid.to_string()) {
                    Ok(()) => {}
                    // It exited meanwhile: nothing to move.
                    Err(IsolationError::Io { source, .. })
                        if source.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        enable_controllers(&base, base != root)?;
        let tasks = base.join(parent);
        if let Err(e) = std::fs::create_dir(&tasks) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(IsolationError::io("create cgroup", &tasks, e));
            }
        }
        enable_controllers(&tasks, true)?;
        Ok(V2Layout {
            root: root.to_path_buf(),
            base,
            tasks,
            supervisor,
        })
    }

    pub fn manager(&self, id: &str) -> V2Manager {
        V2Manager {
            path: self.tasks.join(id),
        }
    }
}

/// Writes the missing controllers of [`CONTROLLERS`] into `dir/cgroup.subtree_control`, retrying
/// EBUSY briefly (a process that just moved out can keep it busy; crun does the same).
fn enable_controllers(dir: &Path, check_empty: bool) -> Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = read_file(&file)?;
    let missing: Vec<String> = CONTROLLERS
        .iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let value = missing.join(" ");
    let start = Instant::now();
    loop {
        match write_file(&file, &value) {
            Ok(()) => return Ok(()),
            Err(IsolationError::Io { source, .. })
                if source.raw_os_error() == Some(libc::EBUSY)
                    && start.elapsed() < Duration::from_millis(500) =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e @ IsolationError::Io { .. }) => {
                let busy = check_empty
                    && read_file(&dir.join("cgroup.procs"))
                        .map(|t| !t.trim().is_empty())
                        .unwrap_or(false);
                if busy {
                    return Err(IsolationError::SharedCgroup {
                        path: dir.to_path_buf(),
                    });
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    }
}

/// One container's v2 leaf cgroup.
#[derive(Clone, Debug)]
pub struct V2Manager {
    pub path: PathBuf,
}

impl V2Manager {
    pub fn new(path: PathBuf) -> V2Manager {
        V2Manager { path }
    }

    fn f(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn freeze(&self, frozen: bool) -> Result<()> {
        write_file(&self.f("cgroup.freeze"), if frozen { "1" } else { "0" })?;
        if frozen {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(2) {
                let ev = parse_flat_keyed(&read_file(&self.f("cgroup.events"))?);
                if ev.get("frozen") == Some(&1) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    }
}

impl CgroupManager for V2Manager {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn paths(&self) -> BTreeMap<String, PathBuf> {
        BTreeMap::from([("unified".to_string(), self.path.clone())])
    }

    fn create(&self, id: &str) -> Result<()> {
        mkdir_new(&self.path, id)
    }

    fn limit_files(&self, l: &Limits) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        if let Some(c) = l.cpus {
            let weight = ((c * 100.0).round() as u64).clamp(1, 10_000);
            out.push((self.f("cpu.weight"), weight.to_string()));
            let max = match l.cpu_quota_us() {
                Some(q) => format!("{q} {}", super::CPU_PERIOD_US),
                None => format!("max {}", super::CPU_PERIOD_US),
            };
            out.push((self.f("cpu.max"), max));
        }
        if let Some(m) = l.memory_bytes {
            out.push((self.f("memory.max"), m.to_string()));
            // Swap accounting may be compiled out or disabled: then there is no file (and no swap
            // charged to the cgroup either).
            if self.f("memory.swap.max").exists() {
                out.push((self.f("memory.swap.max"), "0".into()));
            }
        }
        // KillTask: the whole task is one OOM unit, a kill takes every process (and the init
        // with it). KillProcess: only the process the kernel picks.
        let group = match l.oom_policy {
            OomPolicy::KillTask => "1",
            OomPolicy::KillProcess => "0",
        };
        out.push((self.f("memory.oom.group"), group.into()));
        out.push((self.f("pids.max"), l.pids_max.to_string()));
        out
    }

    fn join_files(&self) -> Result<Vec<File>> {
        Ok(vec![open_procs_for_join(&self.path)?])
    }

    fn clone_into_fd(&self) -> Option<OwnedFd> {
        use nix::fcntl::{open, OFlag};
        use nix::sys::stat::Mode;
        open(
            &self.path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()
    }

    fn procs(&self) -> Result<Vec<i32>> {
        procs_in_subtree(&self.path)
    }

    fn kill_all(&self) -> Result<()> {
        let kill = self.f("cgroup.kill");
        if kill.exists() {
            return write_file(&kill, "1");
        }
        // Linux < 5.14: freeze so nothing can fork, kill every pid, thaw so the kills land.
        self.freeze(true)?;
        let res = self.signal_all(Signal::SIGKILL);
        self.freeze(false)?;
        res
    }

    fn usage(&self) -> Result<proto::ResourceUsage> {
        let cpu = parse_flat_keyed(&read_file(&self.f("cpu.stat"))?);
        let peak = self.f("memory.peak");
        Ok(proto::ResourceUsage {
            cpu_user_us: cpu.get("user_usec").copied().unwrap_or(0),
            cpu_system_us: cpu.get("system_usec").copied().unwrap_or(0),
            cpu_throttled_us: cpu.get("throttled_usec").copied().unwrap_or(0),
            mem_current_bytes: read_u64(&self.f("memory.current"))?,
            mem_peak_bytes: if peak.exists() {
                Some(read_u64(&peak)?)
            } else {
                None
            },
            pids_current: read_u64(&self.f("pids.current"))?,
        })
    }

    fn memory_working_set(&self) -> Result<u64> {
        let usage = read_u64(&self.f("memory.current"))?;
        let stat = parse_flat_keyed(&read_file(&self.f("memory.stat"))?);
        let inactive = stat.get("inactive_file").copied().unwrap_or(0);
        Ok(usage.saturating_sub(inactive))
    }

    fn memory_report(&self) -> Result<MemoryReport> {
        let events = parse_flat_keyed(&read_file(&self.f("memory.events"))?);
        let limit = read_file(&self.f("memory.max"))?.trim().parse::<u64>().ok();
        let peak_file = self.f("memory.peak");
        let peak = if peak_file.exists() {
            read_u64(&peak_file).ok()
        } else {
            None
        };
        Ok(MemoryReport {
            oom_kill: events.get("oom_kill").copied(),
            limit,
            peak,
            events,
        })
    }

    fn remove(&self) -> Result<()> {
        remove_subtree(&self.path)
    }
}
