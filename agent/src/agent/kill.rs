//! Killing tasks: a kill from the master (SIGTERM, then SIGKILL after the grace period) and the
//! destruction of a container.

use super::*;

impl Agent {
    pub(super) async fn kill_task(&mut self, task_id: &TaskId, grace: Option<Duration>) {
        let Some(task) = self.tasks.get_mut(task_id) else {
            return;
        };
        if task.state.is_terminal() {
            return;
        }
        task.kill_requested = true;
        self.checkpoint(task_id);
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        let grace = grace
            .or(task.info.kill_grace_ms.map(Duration::from_millis))
            .unwrap_or(self.config.kill_grace);
        if let Some(key) = Self::executor_key(task) {
            return self.kill_executor_task(key, task_id, grace).await;
        }
        match task.handle.clone() {
            Some(handle) => {
                tracing::info!(task = %task_id, ?grace, "killing task");
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = handle.kill(grace) {
                        tracing::warn!(error = %e, "kill failed");
                    }
                });
            }
            None if task.state == TaskState::Staging => {
                self.update(task_id, TaskState::Killed, |s| {
                    s.reason = Some(StatusReason::KilledByFramework);
                    s.message = Some("killed before it started".to_owned());
                })
                .await;
            }
            // Starting: killed as soon as the launch completes (on_launched).
            None => {}
        }
    }
}

/// Removes a container's cgroups once nothing else holds its handle.
pub(super) fn destroy(mut handle: Arc<Handle>) {
    for _ in 0..100 {
        match Arc::try_unwrap(handle) {
            Ok(Handle::Isolated(c)) => {
                if let Err(e) = c.destroy() {
                    tracing::warn!(error = %e, "cannot remove a container");
                }
                return;
            }
            Ok(Handle::Plain(_)) => return,
            Err(h) => {
                handle = h;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    tracing::warn!("a container handle is still in use; its cgroup is left for the next cleanup");
}
