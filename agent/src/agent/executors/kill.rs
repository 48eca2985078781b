//! Killing an executor's tasks and shutting executors down, each with a timeout after which the
//! container is killed.

use super::*;

impl Agent {
    /// An executor without a live task is shut down: the master has freed its resources.
    pub(in crate::agent) fn shutdown_if_idle(&mut self, key: &ExecKey) {
        if self.live_executor_tasks(key).is_empty() {
            self.shutdown_executor(key, "it has no task left");
        }
    }

    /// Asks the executor to exit; its container is killed after the grace period.
    pub(in crate::agent) fn shutdown_executor(&mut self, key: &ExecKey, why: &str) {
        let grace = self.config.kill_grace;
        let Some(e) = self.executors.get_mut(key) else {
            return;
        };
        if e.shutting_down {
            return;
        }
        e.shutting_down = true;
        let instance = e.instance;
        tracing::info!(executor = %key.1, why, "shutting down executor");
        for id in self.live_executor_tasks(key) {
            if let Some(t) = self.tasks.get_mut(&id) {
                t.kill_requested = true;
            }
            self.checkpoint(&id);
        }
        self.checkpoint_executor(key);
        let sent = self.send_executor(
            key,
            AgentToExecutor::Shutdown {
                grace_ms: grace.as_millis() as u64,
            },
        );
        let wait = if sent { grace + KILL_MARGIN } else { grace };
        let events = self.events.clone();
        let key = key.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = events
                .send(Event::ExecutorShutdownTimeout { key, instance })
                .await;
        });
    }

    pub(in crate::agent) fn on_executor_shutdown_timeout(&mut self, key: ExecKey, instance: u64) {
        if self
            .executors
            .get(&key)
            .is_some_and(|e| e.instance == instance)
        {
            tracing::info!(executor = %key.1, "executor did not exit within its grace period; killing its container");
            self.kill_executor_container(&key, Duration::ZERO);
        }
    }

    /// SIGTERM then SIGKILL to every process of the executor's container (off the loop).
    pub(in crate::agent) fn kill_executor_container(&self, key: &ExecKey, grace: Duration) {
        let Some(handle) = self.executors.get(key).and_then(|e| e.handle.clone()) else {
            return;
        };
        tokio::task::spawn_blocking(move || {
            if let Err(e) = handle.kill(grace) {
                tracing::warn!(error = %e, "cannot kill an executor's container");
            }
        });
    }

    /// Kill of an executor's task: the executor kills it; the container if it does not in time.
    pub(in crate::agent) async fn kill_executor_task(
        &mut self,
        key: ExecKey,
        task_id: &TaskId,
        grace: Duration,
    ) {
        let subscribed = self
            .executors
            .get(&key)
            .and_then(|e| e.conn.as_ref())
            .is_some_and(|c| c.subscribed);
        if !self.executors.contains_key(&key) {
            let exec = Some(key.1.clone());
            self.update(task_id, TaskState::Killed, |s| {
                s.reason = Some(StatusReason::KilledByFramework);
                s.message = Some("killed; its executor is gone".to_owned());
                s.executor_id = exec;
            })
            .await;
            return;
        }
        tracing::info!(task = %task_id, executor = %key.1, ?grace, "asking the executor to kill a task");
        if subscribed {
            self.send_executor(
                &key,
                AgentToExecutor::KillTask {
                    task_id: task_id.clone(),
                    grace_ms: Some(grace.as_millis() as u64),
                },
            );
        }
        let events = self.events.clone();
        let task_id = task_id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace + KILL_MARGIN).await;
            let _ = events
                .send(Event::ExecutorKillTimeout { key, task_id })
                .await;
        });
    }

    pub(in crate::agent) fn on_executor_kill_timeout(&mut self, key: ExecKey, task_id: TaskId) {
        let live = self
            .tasks
            .get(&task_id)
            .is_some_and(|t| !t.state.is_terminal());
        if live && self.executors.contains_key(&key) {
            tracing::warn!(task = %task_id, executor = %key.1, "the executor did not kill its task in time; killing the executor's container");
            self.kill_executor_container(&key, Duration::ZERO);
        }
    }
}
