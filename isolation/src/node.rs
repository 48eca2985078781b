//! Node resources the agent may offer: procfs totals capped by the CPU affinity, the cpuset and the
//! agent's own cgroup limits (its cgroup and every ancestor), minus a reservation.

use std::path::{Path, PathBuf};

use procfs::Current;
use serde::{Deserialize, Serialize};

use crate::cgroup::v1::V1_UNLIMITED;
use crate::cgroup::{cpu_list_count, join_cgroup, OwnCgroups};
use crate::error::{IsolationError, Result};

/// Resources kept back for the system and the agent (kubelet's "reserved").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub cpus_milli: u64,
    pub mem_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeResources {
    pub cpus_milli: u64,
    pub mem_bytes: u64,
}

fn host_cpus_milli() -> Result<u64> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map_err(|e| IsolationError::sys("sched_getaffinity", e))?;
    let n = (0..nix::sched::CpuSet::count())
        .filter(|i| set.is_set(*i).unwrap_or(false))
        .count();
    Ok(n.max(1) as u64 * 1000)
}

fn host_mem() -> Result<u64> {
    procfs::Meminfo::current()
        .map(|m| m.mem_total)
        .map_err(|e| {
            IsolationError::io(
                "read",
                "/proc/meminfo",
                std::io::Error::other(e.to_string()),
            )
        })
}

/// `dir` and its ancestors up to and including `root`.
fn ancestors(root: &Path, dir: &Path) -> Vec<PathBuf> {
    dir.ancestors()
        .take_while(|p| p.starts_with(root))
        .map(Path::to_path_buf)
        .collect()
}

/// Parses v2 `cpu.max` ("max 100000" or "50000 100000") into milli-CPUs.
pub fn parse_cpu_max_milli(text: &str) -> Option<u64> {
    let mut it = text.split_whitespace();
    let quota: u64 = it.next()?.parse().ok()?;
    let period: u64 = it.next()?.parse().ok()?;
    (period > 0).then(|| quota * 1000 / period)
}

pub(crate) fn measure_v2(root: &Path, own: &OwnCgroups) -> Result<crate::NodeResources> {
    let mut cpus = host_cpus_milli()?;
    let mut mem = host_mem()?;
    let own_dir = join_cgroup(root, own.unified.as_deref().unwrap_or("/"));
    if let Some(n) = std::fs::read_to_string(own_dir.join("cpuset.cpus.effective"))
        .ok()
        .and_then(|t| cpu_list_count(&t))
        .filter(|n| *n > 0)
    {
        cpus = cpus.min(n * 1000);
    }
    for d in ancestors(root, &own_dir) {
        if let Some(q) = std::fs::read_to_string(d.join("cpu.max"))
            .ok()
            .and_then(|t| parse_cpu_max_milli(&t))
        {
            cpus = cpus.min(q);
        }
        if let Some(m) = std::fs::read_to_string(d.join("memory.max"))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
        {
            mem = mem.min(m);
        }
    }
    Ok(crate::NodeResources {
        cpus_milli: cpus,
        mem_bytes: mem,
    })
}

pub(crate) fn measure_v1(root: &Path, own: &OwnCgroups) -> Result<crate::NodeResources> {
    let mut cpus = host_cpus_milli()?;
    let mut mem = host_mem()?;
    let read_u = |p: PathBuf| {
        std::fs::read_to_string(p)
            .ok()
            .map(|t| t.trim().to_string())
    };
    if let Some(path) = own.v1.get("cpuset") {
        let dir = join_cgroup(&root.join("cpuset"), path);
        if let Some(n) = read_u(dir.join("cpuset.effective_cpus"))
            .and_then(|t| cpu_list_count(&t))
            .filter(|n| *n > 0)
        {
            cpus = cpus.min(n * 1000);
        }
    }
    if let Some(path) = own.v1.get("cpu") {
        let mount = root.join("cpu");
        for d in ancestors(&mount, &join_cgroup(&mount, path)) {
            let quota = read_u(d.join("cpu.cfs_quota_us")).and_then(|t| t.parse::<i64>().ok());
            let period = read_u(d.join("cpu.cfs_period_us")).and_then(|t| t.parse::<u64>().ok());
            if let (Some(q), Some(p)) = (quota, period) {
                if q > 0 && p > 0 {
                    cpus = cpus.min(q as u64 * 1000 / p);
                }
            }
        }
    }
    if let Some(path) = own.v1.get("memory") {
        let mount = root.join("memory");
        for d in ancestors(&mount, &join_cgroup(&mount, path)) {
            if let Some(m) =
                read_u(d.join("memory.limit_in_bytes")).and_then(|t| t.parse::<u64>().ok())
            {
                if m < V1_UNLIMITED {
                    mem = mem.min(m);
                }
            }
        }
    }
    Ok(crate::NodeResources {
        cpus_milli: cpus,
        mem_bytes: mem,
    })
}
