//! The Corral agent: the daemon on every node. It owns the node's registration with the master
//! (re-registering with its running tasks after any disconnection), the launch of tasks into
//! containers through the isolation crate, each task's sandbox directory, and reliable status
//! updates (resent until the framework acknowledges them, in order per task).
//!
//! Architecture invariant: the agent never decides what runs where; it runs what the master
//! sends, checks that it fits, and reports what happened.
//!
//! Custom executors (`agent/executors/`): a launch group's executor runs in ONE container whose
//! limits are the executor's resources plus those of the tasks launched with it; the agent hands
//! it tasks over a unix socket (proto's `AgentToExecutor`/`ExecutorToAgent`, proto's codec) that
//! only the executor's own container may use, and turns its updates into status updates. The
//! executor's environment (nothing else is inherited; the executor's `CommandInfo.environment`
//! is added last):
//!
//! | variable | value |
//! |---|---|
//! | `CORRAL_EXECUTOR_SOCKET` | the agent's unix socket for this executor (connect, then `Subscribe`) |
//! | `CORRAL_EXECUTOR_ID`, `MESOS_EXECUTOR_ID` | the executor's id |
//! | `CORRAL_FRAMEWORK_ID`, `MESOS_FRAMEWORK_ID` | its framework's id |
//! | `CORRAL_AGENT_ID`, `MESOS_AGENT_ID` | the agent's id (once registered) |
//! | `CORRAL_SANDBOX`, `MESOS_SANDBOX`, `HOME` | `WORK_DIR/sandboxes/FRAMEWORK/executors/EXECUTOR` (also the working directory) |
//! | `PATH` | `/usr/local/bin:/usr/bin:/bin` |
//!
//! Each task gets `<sandbox>/tasks/TASK/` for its stdout/stderr (what `corral logs TASK` reads).
//! `framework::executor` is the client library for executors.
//!
//! Stopping: SIGTERM ends the agent within a few seconds whatever its tasks do; they keep running
//! and the next agent re-attaches them. Container watchers wait on blocking threads
//! (`Container::wait_while`) only until the event loop drops its receiver, and `corral` shuts its
//! runtime down with a 2 s grace, so no blocking call holds the process.
//!
//! Recovery: after a restart the agent re-attaches to each checkpointed container
//! (`Isolator::recover`), reports tasks that ended meanwhile (the init wrote their exit status),
//! never relaunches, and re-reads every container's limits, restoring drift (also every 30 s). A
//! task checkpointed before its launch but without a container record (the agent died between
//! the clone and that checkpoint) is looked for by its container id (`Isolator::recover_by_id`,
//! from the cgroups, the run dir's `limits.json` written before the clone, and the init); only if
//! there is none is it failed as "not started". A corrupt checkpoint is moved aside to
//! `*.corrupt`. Then every container under the agent's cgroup subtree or run root that no
//! recovered task or executor holds is destroyed: nothing runs that the agent cannot account for
//! (agents sharing a cgroup need distinct `--cgroup-parent`s).
//!
//! Resources shrunk under running tasks (`--resources` smaller at a restart): the tasks keep
//! running (as with Mesos and the kubelet), the agent re-registers with its new total and warns;
//! used may exceed the total, every subtraction saturates, and the master offers nothing from the
//! agent until the free part reaches its minimum allocatable again.
//!
//! Executors' OOM policy is the executor's (`ExecutorInfo.container.oom_policy`): under
//! `KillTask` (default) the container is one OOM unit (an OOM kill fails every task of it with
//! `MemoryLimit`); under `KillProcess` only the executor's own death by an OOM kill does, and a
//! task whose process the kernel killed is reported by the executor.

mod agent;
mod cgroup_driver;
mod checkpoint;
pub mod error;
mod gc;
mod resources;
mod runtime;
mod workdir;

pub use agent::{run, Config, IsolationMode};
pub use agent_core::{RetryPolicy, StatusUpdates};
pub use cgroup_driver::CgroupDriver;
pub use gc::GcPolicy;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot use work directory {path}: {source}")]
    WorkDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the certificate {0} is not an agent certificate; issue one with `corral certs issue --role agent`")]
    NotAnAgentCertificate(String),
    #[error("cannot set up isolation: {0}")]
    Isolation(#[from] isolation::IsolationError),
    #[error(transparent)]
    Metrics(#[from] telemetry::MetricsError),
    #[error(transparent)]
    CgroupDriver(#[from] error::CgroupDriverError),
    #[error("--resources '{spec}': {reason}")]
    Resources { spec: String, reason: String },
    #[error("cannot use the checkpoint directory: {0}")]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// The default task user cannot reach the work directory's sandboxes.
    #[error(transparent)]
    Unreachable(#[from] error::ReachError),
    #[error("no master address given: pass --master HOST:PORT")]
    NoMasters,
}
