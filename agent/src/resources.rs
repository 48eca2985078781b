//! What this node offers: measured via procfs and the agent's own cgroup limits (through the
//! isolation crate), the work directory's filesystem for disk, and a port range, minus a
//! reservation for the system. An operator's `--resources` overrides each quantity it names.

use proto::{PortRange, Resources};
use std::path::Path;

/// Mesos's defaults: keep 1 GiB of memory (or half, on a small node) and 5 GiB of disk (or half)
/// for the system.
fn reserve(total: u64, fixed: u64, small_below: u64) -> u64 {
    if total < small_below {
        total / 2
    } else {
        total - fixed
    }
}

/// The default port range offered to tasks.
pub const DEFAULT_PORTS: PortRange = PortRange {
    begin: 31000,
    end: 32000,
};

/// Measures the node. `measured` comes from the isolation layer (cpus and memory the agent may
/// use); `overrides` are the operator's `--resources`.
pub fn node_resources(
    measured_cpus_milli: u64,
    measured_mem_bytes: u64,
    work_dir: &Path,
    overrides: Option<&Resources>,
    override_names: &[&str],
    reserved: Option<&Resources>,
) -> Resources {
    let disk_total = nix::sys::statvfs::statvfs(work_dir)
        .map(|s| s.blocks().saturating_mul(s.fragment_size()))
        .unwrap_or(0);
    let mut r = match reserved {
        // The operator's reservation for the system (kubelet's capacity - reserved).
        Some(keep) => Resources {
            cpus_milli: measured_cpus_milli.saturating_sub(keep.cpus_milli),
            mem_bytes: measured_mem_bytes.saturating_sub(keep.mem_bytes),
            disk_bytes: disk_total.saturating_sub(keep.disk_bytes),
            ports: vec![DEFAULT_PORTS],
        },
        None => Resources {
            cpus_milli: measured_cpus_milli,
            mem_bytes: reserve(measured_mem_bytes, 1 << 30, 2 << 30),
            disk_bytes: reserve(disk_total, 5 << 30, 10 << 30),
            ports: vec![DEFAULT_PORTS],
        },
    };
    if let Some(o) = overrides {
        for name in override_names {
            match *name {
                "cpus" => r.cpus_milli = o.cpus_milli,
                "mem" => r.mem_bytes = o.mem_bytes,
                "disk" => r.disk_bytes = o.disk_bytes,
                "ports" => r.ports = o.ports.clone(),
                _ => {}
            }
        }
    }
    r
}

/// The names a `--resources` string sets, so that unnamed quantities stay measured. A
/// reserved quantity (`cpus(batch):2`) sets its kind: the total is what the string names,
/// reserved and unreserved together.
pub fn named_resources(spec: &str) -> Vec<&str> {
    spec.split(';')
        .filter_map(|p| p.split_once(':').map(|(n, _)| n.trim()))
        .map(|n| n.split_once('(').map_or(n, |(kind, _)| kind))
        .collect()
}

/// CPUs and memory from procfs alone, for when no isolation layer is available.
pub fn procfs_cpus_and_memory() -> (u64, u64) {
    use procfs::Current;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let mem = procfs::Meminfo::current().map(|m| m.mem_total).unwrap_or(0);
    (cpus * 1000, mem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservation_overrides_and_defaults() {
        let dir = std::env::temp_dir();
        let gib = 1u64 << 30;
        // Mesos's defaults: 1 GiB of memory kept (half on a small node).
        let r = node_resources(4000, 8 * gib, &dir, None, &[], None);
        assert_eq!((r.cpus_milli, r.mem_bytes), (4000, 7 * gib));
        assert_eq!(
            node_resources(1000, gib, &dir, None, &[], None).mem_bytes,
            gib / 2
        );
        // An explicit reservation replaces them.
        let keep: Resources = "cpus:0.5;mem:2GiB".parse().expect("resources");
        let r = node_resources(4000, 8 * gib, &dir, None, &[], Some(&keep));
        assert_eq!((r.cpus_milli, r.mem_bytes), (3500, 6 * gib));
        // --resources sets only what it names; the rest stays measured.
        let spec = "cpus:2";
        let o: Resources = spec.parse().expect("resources");
        let r = node_resources(4000, 8 * gib, &dir, Some(&o), &named_resources(spec), None);
        assert_eq!((r.cpus_milli, r.mem_bytes), (2000, 7 * gib));
        assert_eq!(r.ports, vec![DEFAULT_PORTS]);
        // A reserved quantity names its kind: the total is the string's, reserved included.
        let spec = "cpus(batch):2;mem(batch):1GiB;cpus:2";
        assert_eq!(named_resources(spec), ["cpus", "mem", "cpus"]);
        let (o, reserved) = proto::parse_reserved_resources(spec).expect("resources");
        let r = node_resources(4000, 8 * gib, &dir, Some(&o), &named_resources(spec), None);
        assert_eq!((r.cpus_milli, r.mem_bytes), (4000, gib));
        assert_eq!(reserved["batch"], Resources::new(2000, gib));
    }
}
