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
//! The core decides all of this (`agent_core`, its `executors.rs`); these files are the I/O:
//! `launch.rs` prepares the sandbox and socket and starts the container, `conn.rs` serves the
//! socket (peer checks, frames both ways), `exits.rs` watches the container, `recovery.rs`
//! re-attaches executors at start; this one holds the types and the container's end.

use super::*;
use crate::error::RuntimeError;
mod conn;
mod exits;
mod launch;
mod recovery;
use crate::checkpoint::ExecutorCheckpoint;
use agent_core::Limits;
use conn::{bind_socket, spawn_listener};
use exits::oom_killed_now;
use proto::{AgentToExecutor, ExecutorInfo, ExecutorToAgent, FrameworkSummary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Frames queued to one executor connection before it counts as stuck and is dropped.
const EXECUTOR_OUTBOX: usize = 256;
/// Largest frame accepted from an executor.
pub(super) const MAX_EXECUTOR_FRAME: usize = 16 << 20;
/// Connections held while the executor's launch completes (its pid cannot be checked before).
const MAX_PENDING_CONNECTIONS: usize = 4;
use crate::error::MAX_SOCKET_PATH;

pub(super) enum ExecutorEvent {
    Launched {
        key: ExecKey,
        result: Result<Arc<Handle>, RuntimeError>,
    },
    Exited {
        key: ExecKey,
        result: Result<ExitInfo, RuntimeError>,
    },
    /// A connection on an executor's socket, not yet checked.
    Connection { key: ExecKey, stream: UnixStream },
    Frame {
        key: ExecKey,
        conn: u64,
        msg: ExecutorToAgent,
    },
    Closed {
        key: ExecKey,
        conn: u64,
        reason: String,
    },
}

/// What the glue holds of an executor: its sandbox, socket, user, container and connection.
pub(super) struct Executor {
    pub sandbox: PathBuf,
    pub socket: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub handle: Option<Arc<Handle>>,
    /// The current connection; frames of older connections are ignored.
    pub conn: Option<ExecConn>,
    pub pending: Vec<UnixStream>,
    pub next_conn: u64,
    pub listener: tokio::task::AbortHandle,
    /// The limits the container is being launched with.
    pub launch_limits: Option<Limits>,
}

pub(super) struct ExecConn {
    id: u64,
    outbox: mpsc::Sender<AgentToExecutor>,
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
    pub(super) async fn on_executor_event(&mut self, event: ExecutorEvent) {
        match event {
            ExecutorEvent::Launched { key, result } => self.on_executor_launched(key, result).await,
            ExecutorEvent::Exited { key, result } => self.on_executor_exited(key, result),
            ExecutorEvent::Connection { key, stream } => {
                self.on_executor_connection(key, stream).await
            }
            ExecutorEvent::Frame { key, conn, msg } => self.on_executor_frame(key, conn, msg).await,
            ExecutorEvent::Closed { key, conn, reason } => {
                self.on_executor_closed(key, conn, reason)
            }
        }
    }

    /// `Action::CheckpointExecutor` for an executor the glue has not prepared yet (the
    /// launch's intent) prepares it first; a preparation that fails fails the launch.
    pub(super) fn checkpoint_executor_record(&mut self, record: &agent_core::ExecutorRecord) {
        let key: ExecKey = (record.framework.id.clone(), record.info.executor_id.clone());
        if !self.executors.contains_key(&key) {
            if let Err(e) = self.prepare_executor(&key, &record.info) {
                let msg = RuntimeFailure::of(&e);
                let limits = Limits {
                    resources: Resources::default(),
                    pids: 0,
                };
                return self
                    .core
                    .handle_executor_launched(now(), &key, limits, Err(msg));
            }
        }
        self.checkpoint_executor(record);
    }

    /// `Action::RemoveExecutor`: stops listening, removes the socket and the checkpoint; the
    /// container, if any, waits for `DestroyExecutor`.
    pub(super) fn forget_executor(&mut self, key: &ExecKey) {
        self.executor_checkpoints
            .remove(&records::executor_key_str(key));
        let Some(e) = self.executors.remove(key) else {
            return;
        };
        e.listener.abort();
        let _ = std::fs::remove_file(&e.socket);
        if let Some(h) = e.handle {
            self.ended_executors.insert(key.clone(), h);
        }
    }

    /// `Action::DestroyExecutor`: removes the ended container.
    pub(super) fn destroy_executor(&mut self, key: &ExecKey) {
        self.forget_executor(key);
        if let Some(handle) = self.ended_executors.remove(key) {
            tokio::task::spawn_blocking(move || destroy(handle));
        }
    }

    /// `Action::KillExecutor`: SIGTERM then SIGKILL to every process of the executor's
    /// container (off the loop).
    pub(super) fn kill_executor_container(&self, key: &ExecKey, grace: Duration) {
        let Some(handle) = self.executors.get(key).and_then(|e| e.handle.clone()) else {
            return;
        };
        tracing::info!(executor = %key.1, "killing an executor's container");
        tokio::task::spawn_blocking(move || {
            if let Err(e) = handle.kill(grace) {
                tracing::warn!(error = %e, "cannot kill an executor's container");
            }
        });
    }
}
