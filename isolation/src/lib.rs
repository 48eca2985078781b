//! Per-task isolation for the Corral agent. This crate owns everything the agent does to the
//! kernel for a task: the per-task cgroup (cgroup v2 on unified hosts, v1 on hybrid/legacy hosts,
//! behind one [`CgroupManager`] trait) with cpu/memory/pids limits, the task's namespaces (pid,
//! mount, uts, ipc, optionally network), the in-container init ([`init_main`], PID 1: private
//! /proc and /tmp, hostname, privilege drop, signal forwarding, reaping, status file), observing
//! (exit, OOM kill as a memory limitation, usage), killing every process of a task, re-attaching
//! after an agent restart, cleanup, and the node resources the agent may offer and the node's
//! pressure (PSI, [`read_node_pressure`]).
//!
//! **Architecture invariant:** only this crate writes under the cgroup filesystem, and only inside
//! the agent's own cgroup (nested under the process's own cgroup in each hierarchy; never a
//! hierarchy's root files except the v2 root's `subtree_control` when the agent itself runs in the
//! root cgroup, e.g. in a VM). Every cgroup constructor takes the cgroup root path. A task's first
//! process is in its cgroup before it execs (`clone3(CLONE_INTO_CGROUP)` on v2, else a write of
//! "0" to pre-opened `cgroup.procs` files in the cloned child).
//!
//! Entry points: [`Isolator::new`], [`Isolator::launch`] → [`Container`], [`Isolator::recover`],
//! [`init_main`] (called by `corral __init SPEC` before any runtime starts).

pub mod cgroup;
mod container;
mod error;
mod init;
mod isolator;
mod launch;
mod node;
mod pressure;
mod spec;
mod view;

pub use cgroup::{CgroupManager, CgroupSetup, CgroupVersion, Limits, MemoryReport};
pub use container::{Container, ContainerRecord, ExitInfo, LimitDrift, KILL_TIMEOUT, WAIT_RECHECK};
pub use error::{IsolationError, Result};
pub use init::{init_main, DEFAULT_PATH};
pub use isolator::{
    validate_id, validate_limits, validate_spec, Backend, Isolator, IsolatorConfig,
    MIN_MEMORY_BYTES, MIN_PIDS, START_TIMEOUT,
};
pub use node::{parse_cpu_max_milli, NodeResources, Reservation};
pub use pressure::{
    parse_pressure, read_node_pressure, Pressure, PressureLine, PressureParseError, PROC_PRESSURE,
};
pub use proto::OomPolicy;
pub use spec::{ContainerSpec, ExitStatus, FsView, InitSpec, Namespaces, NetworkNs};

/// Resource usage of a container (the wire type the agent reports).
pub type Usage = proto::ResourceUsage;
