//! The agent's brain, sans-IO: `AgentCore` owns what the agent knows (its tasks and their
//! checkpointed state, custom executors and the size of their containers, the reliable
//! status-update queue, the session with the master, kills in flight, timers) and does no I/O.
//!
//! The glue (`agent/`) feeds it events with the time (`Now`) passed in — `handle_master`,
//! `handle_registered`/`handle_connect_failed`/`handle_disconnected`, `handle_launch_result`,
//! `handle_task_exited`, the executor events, `handle_timer` — and drains what it must do with
//! `poll_action` until `None`, executing each `Action` **in order**; `poll_timeout` says when to
//! call `handle_timer` next. This is quinn-proto's `Connection` and raft-rs's `Ready` shape.
//!
//! Invariants (the harness in `testing` and the property tests check them):
//! - **Checkpoint before send.** A status update is recorded in its task's checkpoint
//!   (`Action::CheckpointTask`, which carries the unacknowledged updates) before the
//!   `Action::Send` that reports it; the glue completes a checkpoint (fsync) before it executes
//!   the next action. A kill is checkpointed (`kill_requested`) before the `Kill` goes out.
//! - **One update in flight per task**, in order, each with a uuid and a sequence number,
//!   resent with backoff until acknowledged and never after (`updates::StatusUpdates`).
//! - **Exactly one terminal state per task**: once terminal, a task's state never changes.
//! - No clock, RNG or UUID reads: time comes in `Now`, status uuids are a random UUID the
//!   glue picks per run with a counter mixed into its low bits, and reconnection jitter comes from a seeded generator.
//!
//! What stays in the glue: building container specs, sandboxes and their permissions, the
//! cgroup driver, reading pressure and usage, sockets, the checkpoint files themselves.

mod admission;
mod core;
mod executors;
mod exits;
mod plan;
mod recovery;
mod tasks;
pub mod testing;
mod updates;
mod usage;

pub use crate::core::{
    Action, AgentCore, ContainerRef, CoreConfig, ExecKey, ExecutorRecord, Limits, Now, TaskRecord,
    TaskView, MIN_HEARTBEAT_MS, USAGE_CHECK_INTERVAL,
};
pub use admission::{admit, container_id, progress, valid_id};
pub use exits::{exit_status, oom_note, peak_note, size, task_end, Exit, TaskEnd};
pub use plan::{orphans, plan_task_recovery, TaskRecovery};
pub use recovery::{Found, RecoveredTask};
pub use updates::{RetryPolicy, StatusUpdates, MAX_UPDATES_PER_TASK};
pub use usage::{UsageReport, MAX_REPORT_AGE};

/// What the glue reports when an operation on the host failed (a launch, a wait, a resize): the
/// core only records its message in the task's status, so it keeps the text of the glue's typed
/// error (`agent::error::RuntimeError` and friends).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuntimeFailure(pub String);

impl RuntimeFailure {
    /// The failure of a typed error from the glue.
    pub fn of(error: &impl std::fmt::Display) -> RuntimeFailure {
        RuntimeFailure(error.to_string())
    }
}

impl From<String> for RuntimeFailure {
    fn from(message: String) -> RuntimeFailure {
        RuntimeFailure(message)
    }
}

impl From<&str> for RuntimeFailure {
    fn from(message: &str) -> RuntimeFailure {
        RuntimeFailure(message.to_owned())
    }
}

/// Errors the core reports to its caller (inputs it cannot use).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoreError {
    #[error("task {0} is not known to the agent")]
    UnknownTask(proto::TaskId),
    #[error("executor {0} is not known to the agent")]
    UnknownExecutor(proto::ExecutorId),
}
