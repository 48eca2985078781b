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
