//! The core's records as checkpoint files: the glue adds what is I/O (the sandbox path, the
//! container's record from its handle, an executor's socket and user). Sandbox paths:
//! `WORK_DIR/sandboxes/FRAMEWORK/TASK` for a command task,
//! `WORK_DIR/sandboxes/FRAMEWORK/executors/EXECUTOR` for an executor and `<that>/tasks/TASK`
//! for each of its tasks.

use super::*;
use crate::checkpoint::{ExecutorCheckpoint, TaskCheckpoint, CHECKPOINT_VERSION};
use agent_core::{valid_id, ExecutorRecord, TaskRecord};
use proto::{ExecutorId, FrameworkId};

pub(super) fn task_key(framework_id: &FrameworkId, task_id: &TaskId) -> String {
    format!("{framework_id}.{task_id}")
}

pub(super) fn executor_key_str(key: &ExecKey) -> String {
    format!("{}.{}", key.0, key.1)
}

pub(super) fn executor_sandbox(work_dir: &Path, key: &ExecKey) -> PathBuf {
    work_dir
        .join("sandboxes")
        .join(key.0.as_str())
        .join("executors")
        .join(key.1.as_str())
}

pub(super) fn sandbox(
    work_dir: &Path,
    framework_id: &FrameworkId,
    task_id: &TaskId,
    executor: Option<&ExecutorId>,
) -> PathBuf {
    match executor {
        Some(e) => executor_sandbox(work_dir, &(framework_id.clone(), e.clone()))
            .join("tasks")
            .join(task_id.as_str()),
        None => work_dir
            .join("sandboxes")
            .join(framework_id.as_str())
            .join(task_id.as_str()),
    }
}

impl Agent {
    /// Writes the task's checkpoint (its state, container and unacknowledged updates).
    pub(super) fn checkpoint_task(&self, r: &TaskRecord) {
        let task_id = &r.info.task_id;
        if !valid_id(task_id.as_str()) || !valid_id(r.framework.id.as_str()) {
            return;
        }
        let cp = TaskCheckpoint {
            version: CHECKPOINT_VERSION,
            framework: r.framework.clone(),
            info: r.info.clone(),
            state: r.state,
            sandbox: sandbox(
                &self.config.work_dir,
                &r.framework.id,
                task_id,
                r.executor_id.as_ref(),
            ),
            container: r
                .running
                .then(|| self.handles.get(task_id).and_then(|h| h.record()))
                .flatten(),
            kill_requested: r.kill_requested,
            next_seq: r.next_seq,
            pending_updates: r.pending_updates.clone(),
            executor_id: r.executor_id.clone(),
        };
        let key = task_key(&r.framework.id, task_id);
        let started = std::time::Instant::now();
        let saved = self.checkpoints.save(&key, &cp);
        self.metrics.checkpointed(started.elapsed());
        if let Err(e) = saved {
            tracing::error!(task = %task_id, error = %e, "cannot checkpoint a task; it may be lost if the agent restarts");
        }
        if let Some(last) = r.pending_updates.last().filter(|_| r.changed) {
            // Logged once durable: what the log says survives an agent crash.
            let message = last.message.clone().unwrap_or_default();
            tracing::info!(task = %task_id, state = %last.state, %message, "task state");
        }
    }

    pub(super) fn checkpoint_executor(&self, r: &ExecutorRecord) {
        let key: ExecKey = (r.framework.id.clone(), r.info.executor_id.clone());
        let Some(e) = self.executors.get(&key) else {
            return;
        };
        let cp = ExecutorCheckpoint {
            version: CHECKPOINT_VERSION,
            framework: r.framework.clone(),
            info: r.info.clone(),
            sandbox: e.sandbox.clone(),
            socket: e.socket.clone(),
            uid: e.uid,
            gid: e.gid,
            container: r
                .running
                .then(|| e.handle.as_ref().and_then(|h| h.record()))
                .flatten(),
            shutting_down: r.shutting_down,
        };
        if let Err(err) = self.executor_checkpoints.save(&executor_key_str(&key), &cp) {
            tracing::error!(executor = %key.1, error = %err, "cannot checkpoint an executor; it may be lost if the agent restarts");
        }
    }
}
