//! Status updates: each is checkpointed with the task before it is sent, and resent until the
//! master acknowledges it (`crate::updates`).

use super::*;

impl Agent {
    pub(super) async fn flush_updates(&mut self) {
        if self.conn.is_none() {
            return;
        }
        for (framework_id, status) in self.updates.due(Instant::now()) {
            self.send(AgentToMaster::StatusUpdate {
                framework_id,
                status,
            })
            .await;
        }
    }

    /// Records a state change and sends it if nothing of its task is in flight.
    pub(super) async fn update(
        &mut self,
        task_id: &TaskId,
        state: TaskState,
        f: impl FnOnce(&mut TaskStatus),
    ) {
        let Some(task) = self.tasks.get_mut(task_id) else {
            return;
        };
        task.state = state;
        let mut status = TaskStatus::new(task_id.clone(), state, StatusSource::Agent);
        status.agent_id = self.agent_id.clone();
        status.timestamp_ms = wall_ms();
        f(&mut status);
        let message = status.message.clone().unwrap_or_default();
        let framework_id = task.framework_id.clone();
        self.updates.record(
            &framework_id,
            status,
            StatusUuid::new(uuid::Uuid::new_v4().to_string()),
        );
        self.checkpoint(task_id);
        // Logged once durable: what the log says survives an agent crash.
        tracing::info!(task = %task_id, state = %state, %message, "task state");
        self.flush_updates().await;
        if state.is_terminal() {
            // An executor's container shrinks once a task of it has ended.
            let key = self.tasks.get(task_id).and_then(Self::executor_key);
            if let Some(key) = key {
                if let Err(err) = self.resize_executor(&key).await {
                    tracing::warn!(executor = %key.1, error = %err,
                        "cannot lower an executor's limits after its task ended; retried at the next limit check");
                }
            }
        }
    }

    pub(super) fn task_key(framework_id: &FrameworkId, task_id: &TaskId) -> String {
        format!("{framework_id}.{task_id}")
    }

    /// Writes the task's checkpoint (its state, container and unacknowledged updates).
    pub(super) fn checkpoint(&self, task_id: &TaskId) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        if !valid_id(task_id.as_str()) || !valid_id(task.framework_id.as_str()) {
            return;
        }
        let (next_seq, pending_updates) = self.updates.pending(task_id);
        let cp = TaskCheckpoint {
            version: CHECKPOINT_VERSION,
            framework: task.framework.clone(),
            info: task.info.clone(),
            state: task.state,
            sandbox: task.sandbox.clone(),
            container: task.handle.as_ref().and_then(|h| h.record()),
            kill_requested: task.kill_requested,
            next_seq,
            pending_updates,
            executor_id: task.executor.clone(),
        };
        if let Err(e) = self
            .checkpoints
            .save(&Self::task_key(&task.framework_id, task_id), &cp)
        {
            tracing::error!(task = %task_id, error = %e, "cannot checkpoint a task; it may be lost if the agent restarts");
        }
    }
}
