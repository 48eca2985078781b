//! Custom executors: a framework's program that the agent launches in ONE container (limits =
//! the executor's resources + those of the tasks launched with it) and hands tasks to over a
//! unix socket.
//!
//! Layout: sandbox `WORK_DIR/sandboxes/FRAMEWORK/executors/EXECUTOR/` (owned by the executor's
//! user), each task's directory `<sandbox>/tasks/TASK/` (its stdout/stderr, read by `corral
//! logs`), and the socket `<sandbox>/executor.sock` (or `WORK_DIR/executor-sockets/<hash>/sock`
//! when that path would not fit a unix socket address; that directory is bound into the
//! executor's container, where the rest of the work directory is hidden). The socket is owned by the executor's
//! user with mode 0755 & ~umask, so only that user (and root) may connect; the agent also checks
//! the peer's credentials (SO_PEERCRED): its uid must be the executor's, and its pid must be in
//! the executor's container (its cgroup; plain mode: a descendant of the executor's process).
//!
//! Protocol (`proto::AgentToExecutor` / `proto::ExecutorToAgent`, proto's codec): the executor
//! subscribes (again after every reconnection, listing the tasks it knows and its
//! unacknowledged updates); the agent answers `Subscribed`, sends `LaunchTask` for tasks it has
//! not, `KillTask` for kills (killing the container if no terminal update comes within the
//! grace period), `Message` for framework messages, and `Shutdown` when the framework shuts down
//! or the executor has no live task left (its resources are freed by the master then). Each
//! executor update becomes an agent status update (uuid, seq, checkpointed, resent until
//! acknowledged) and is acknowledged to the executor once checkpointed.
//!
//! When the container ends, every task still live ends too: `TASK_FAILED` with reason
//! `MemoryLimit` and the limitation if the OOM killer ended the container (under the executor's
//! OOM policy `KillTask`, the default, the container is one OOM unit: on cgroup v1, where the
//! kernel kills only one process, the agent kills the rest; under `KillProcess` only the
//! executor's own death of an OOM kill counts, and a task the kernel killed is reported by the
//! executor), else `TASK_KILLED` if a kill was asked, else `TASK_FAILED` with
//! `ExecutorTerminated`.
//!
//! Files: this one holds the types, the sizing of an executor's container and its checkpoint;
//! `launch.rs` launches executors and hands them tasks, `conn.rs` serves the socket and the
//! protocol, `exits.rs` ends the tasks of an executor that exited, `kill.rs` kills tasks and
//! shuts executors down, `recovery.rs` re-attaches executors at start.

use super::*;
mod conn;
mod exits;
mod kill;
mod launch;
mod recovery;
use crate::checkpoint::ExecutorCheckpoint;
use conn::{bind_socket, spawn_listener};
use exits::oom_killed_now;
use isolation::CgroupManager;
use proto::{
    AgentToExecutor, ExecutorId, ExecutorInfo, ExecutorToAgent, ExecutorUpdate, OomPolicy,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Frames queued to one executor connection before it counts as stuck and is dropped.
const EXECUTOR_OUTBOX: usize = 256;
/// Largest frame accepted from an executor.
pub(super) const MAX_EXECUTOR_FRAME: usize = 16 << 20;
/// Connections held while the executor's launch completes (its pid cannot be checked before).
const MAX_PENDING_CONNECTIONS: usize = 4;
/// Time given to the executor beyond the kill grace period before the container is killed.
const KILL_MARGIN: Duration = Duration::from_secs(2);
/// Longest unix socket path (`sun_path` is 108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

pub(super) type ExecKey = (FrameworkId, ExecutorId);

pub(super) struct Executor {
    pub framework: FrameworkSummary,
    pub info: ExecutorInfo,
    pub sandbox: PathBuf,
    pub socket: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub handle: Option<Arc<Handle>>,
    /// The current connection; frames of older connections are ignored.
    pub conn: Option<ExecConn>,
    pub pending: Vec<UnixStream>,
    pub next_conn: u64,
    pub shutting_down: bool,
    pub listener: tokio::task::AbortHandle,
    /// Distinguishes this run of the executor from a later one with the same id (timers).
    pub instance: u64,
}

pub(super) struct ExecConn {
    id: u64,
    outbox: mpsc::Sender<AgentToExecutor>,
    subscribed: bool,
    /// The connection's reader and writer tasks: aborted (closing the socket) when the
    /// connection is replaced or dropped, so a connection the agent no longer listens to holds
    /// no task, buffer or file descriptor.
    io: [tokio::task::AbortHandle; 2],
}

impl Drop for ExecConn {
    fn drop(&mut self) {
        for task in &self.io {
            task.abort();
        }
    }
}

fn key_str(key: &ExecKey) -> String {
    format!("{}.{}", key.0, key.1)
}

/// FNV-1a: a short stable name for a socket whose sandbox path is too long.
fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Agent {
    fn next_instance(&mut self) -> u64 {
        self.executor_instances += 1;
        self.executor_instances
    }

    pub(super) fn executor_key(task: &Task) -> Option<ExecKey> {
        task.executor
            .as_ref()
            .map(|e| (task.framework_id.clone(), e.clone()))
    }

    fn executor_tasks(&self, key: &ExecKey) -> Vec<TaskId> {
        self.tasks
            .iter()
            .filter(|(_, t)| Self::executor_key(t).as_ref() == Some(key))
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn live_executor_tasks(&self, key: &ExecKey) -> Vec<TaskId> {
        self.executor_tasks(key)
            .into_iter()
            .filter(|id| self.tasks.get(id).is_some_and(|t| !t.state.is_terminal()))
            .collect()
    }

    /// What the executor's container should have: its own resources plus those of its live
    /// tasks, and its pids limit (its own, or the agent's default) plus each live task's
    /// explicit one.
    fn executor_wanted(&self, key: &ExecKey) -> Option<(Resources, u64)> {
        let e = self.executors.get(key)?;
        let live = self.live_executor_tasks(key);
        let tasks = live.iter().filter_map(|id| self.tasks.get(id));
        let mut r = e.info.resources.clone();
        let mut pids = e
            .info
            .container
            .pids_limit
            .unwrap_or(self.config.default_pids_limit);
        for t in tasks {
            r = r.add(&t.info.resources);
            pids = pids.saturating_add(t.info.container.pids_limit.unwrap_or(0));
        }
        Some((r, pids))
    }

    /// Brings the executor's container limits to [`Self::executor_wanted`]: raised before a new
    /// task is handed over, lowered after a task ended. Checkpoints the executor when they
    /// changed, so a restarted agent restores (and drift-checks) the right values. A container
    /// still launching is resized once it runs; plain processes have no limits.
    pub(super) async fn resize_executor(&mut self, key: &ExecKey) -> Result<(), String> {
        let Some((want, pids)) = self.executor_wanted(key) else {
            return Ok(());
        };
        let Some(handle) = self.executors.get(key).and_then(|e| e.handle.clone()) else {
            return Ok(());
        };
        let Handle::Isolated(c) = handle.as_ref() else {
            return Ok(());
        };
        let old = c.limits();
        let mut new = old.clone();
        if want.cpus_milli > 0 {
            new.cpus = Some(want.cpus());
        }
        if want.mem_bytes > 0 {
            new.memory_bytes = Some(want.mem_bytes);
        }
        new.pids_max = pids;
        let h = handle.clone();
        let result = tokio::task::spawn_blocking(move || match h.as_ref() {
            Handle::Isolated(c) => c.update_limits(&new).map_err(|e| e.to_string()),
            Handle::Plain(_) => Ok(new),
        })
        .await
        .map_err(|e| format!("the limit update did not complete: {e}"))?;
        let applied = result?;
        if applied != old {
            tracing::info!(executor = %key.1, cpus = ?applied.cpus,
                memory = %applied.memory_bytes.map(size).unwrap_or_else(|| "none".into()),
                pids = applied.pids_max, "executor container limits changed");
            self.checkpoint_executor(key);
        }
        Ok(())
    }

    pub(super) fn checkpoint_executor(&self, key: &ExecKey) {
        let Some(e) = self.executors.get(key) else {
            return;
        };
        let cp = ExecutorCheckpoint {
            version: CHECKPOINT_VERSION,
            framework: e.framework.clone(),
            info: e.info.clone(),
            sandbox: e.sandbox.clone(),
            socket: e.socket.clone(),
            uid: e.uid,
            gid: e.gid,
            container: e.handle.as_ref().and_then(|h| h.record()),
            shutting_down: e.shutting_down,
        };
        if let Err(err) = self.executor_checkpoints.save(&key_str(key), &cp) {
            tracing::error!(executor = %key.1, error = %err, "cannot checkpoint an executor; it may be lost if the agent restarts");
        }
    }
}
