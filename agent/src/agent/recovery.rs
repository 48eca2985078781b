//! Recovery at start: tasks and executors from the checkpoints, matched with the containers
//! found; containers nobody checkpointed are destroyed (the orphan sweep).

use super::*;

impl Agent {
    /// Re-attaches to the tasks of the checkpoints on disk (after a restart or upgrade).
    pub(super) async fn recover(&mut self) {
        self.recover_executors().await;
        self.recover_tasks().await;
        self.destroy_orphans().await;
        self.after_recovery().await;
        let total = &self.info.resources;
        let used = self.used_resources();
        if !total.contains(&used) {
            // --resources shrank below what runs: the tasks keep running (kubelet and Mesos do
            // the same), the master sees the new total and offers nothing that is not free.
            tracing::warn!(total = %total, running = %used,
                "the running tasks use more than this agent now offers (its resources shrank); \
                 they keep running, and nothing new fits until enough of them end");
        }
    }

    /// Destroys every container under the agent's cgroup subtree (and run dir) that no
    /// recovered task or executor holds: one cloned before its first checkpoint when the agent
    /// died, or one whose re-attach failed. Nothing may run that the agent cannot account for.
    pub(super) async fn destroy_orphans(&mut self) {
        let runtime = self.runtime.clone();
        if !matches!(runtime.as_ref(), Runtime::Isolated(_)) {
            return;
        }
        let held: std::collections::BTreeSet<String> = self
            .tasks
            .values()
            .filter_map(|t| t.handle.as_ref()?.record())
            .chain(
                self.executors
                    .values()
                    .filter_map(|e| e.handle.as_ref()?.record()),
            )
            .map(|r| r.id)
            .collect();
        let result = tokio::task::spawn_blocking(move || {
            let Runtime::Isolated(iso) = runtime.as_ref() else {
                return Ok(Vec::new());
            };
            let mut done = Vec::new();
            for id in iso.container_ids().map_err(|e| e.to_string())? {
                if held.contains(&id) {
                    continue;
                }
                let r = iso.destroy_by_id(&id).map_err(|e| e.to_string());
                done.push((id, r));
            }
            Ok::<_, String>(done)
        })
        .await;
        match result {
            Ok(Ok(done)) => {
                for (id, r) in done {
                    match r {
                        Ok(()) => tracing::warn!(container = %id,
                            "destroyed a container that no checkpoint names (left by an agent crash)"),
                        Err(e) => tracing::error!(container = %id, error = %e,
                            "cannot destroy a container that no checkpoint names"),
                    }
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "cannot list the agent's containers"),
            Err(e) => tracing::error!(error = %e, "the orphan sweep did not complete"),
        }
    }

    pub(super) async fn recover_tasks(&mut self) {
        let loaded = match self.checkpoints.load_all::<TaskCheckpoint>() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot read checkpoints; no task recovered");
                return;
            }
        };
        for Loaded { key, result } in loaded {
            let cp = match result {
                Ok(cp) => cp,
                Err(e) => {
                    tracing::error!(checkpoint = %key, error = %e, "skipping a corrupt checkpoint (moved aside to .corrupt)");
                    continue;
                }
            };
            let task_id = cp.info.task_id.clone();
            let framework_id = cp.framework.id.clone();
            self.updates.restore(
                &cp.framework.id,
                &task_id,
                cp.next_seq,
                cp.pending_updates.clone(),
            );
            let container = cp.container.clone();
            self.tasks.insert(
                task_id.clone(),
                Task {
                    framework_id: cp.framework.id.clone(),
                    framework: cp.framework,
                    info: cp.info,
                    state: cp.state,
                    sandbox: cp.sandbox,
                    handle: None,
                    kill_requested: cp.kill_requested,
                    executor: cp.executor_id.clone(),
                },
            );
            if cp.state.is_terminal() {
                tracing::info!(task = %task_id, state = %cp.state, "recovered an ended task with unacknowledged updates");
                continue;
            }
            if let Some(executor_id) = cp.executor_id {
                // The executor's container was re-attached (or not) by recover_executors; the
                // executor reconnects and reports this task.
                let key = (framework_id.clone(), executor_id.clone());
                if !self.executors.contains_key(&key) {
                    self.update(&task_id, TaskState::Failed, |s| {
                        s.reason = Some(StatusReason::AgentRestarted);
                        s.executor_id = Some(executor_id.clone());
                        s.message = Some(format!(
                            "the agent restarted and could not re-attach to executor {executor_id}"
                        ));
                    })
                    .await;
                }
                continue;
            }
            let Some(record) = container else {
                self.update(&task_id, TaskState::Failed, |s| {
                    s.reason = Some(StatusReason::AgentRestarted);
                    s.message = Some(
                        "the agent restarted while launching the task; it was not started"
                            .to_owned(),
                    );
                })
                .await;
                continue;
            };
            match self.runtime.recover(&record) {
                Ok(handle) => {
                    tracing::info!(task = %task_id, pid = handle.pid(), "re-attached to a running task");
                    if let Some(task) = self.tasks.get_mut(&task_id) {
                        task.handle = Some(handle.clone());
                    }
                    self.checkpoint(&task_id);
                    self.watch_exit(task_id, handle);
                }
                Err(e) => {
                    self.update(&task_id, TaskState::Failed, |s| {
                        s.reason = Some(StatusReason::AgentRestarted);
                        s.message = Some(format!(
                            "cannot re-attach to the task after an agent restart: {e}"
                        ));
                    })
                    .await;
                }
            }
        }
    }

    /// Kills and removes every container (for `cleanup_on_exit`).
    pub(super) async fn destroy_all(&mut self) {
        let handles: Vec<(TaskId, Arc<Handle>)> = self
            .tasks
            .iter_mut()
            .filter_map(|(id, t)| t.handle.take().map(|h| (id.clone(), h)))
            .collect();
        self.destroy_executors().await;
        let grace = Duration::from_millis(500);
        for (id, handle) in handles {
            self.checkpoints
                .remove(&Self::task_key(&self.tasks[&id].framework_id, &id));
            let _ = tokio::task::spawn_blocking(move || {
                let _ = handle.kill(grace);
                destroy(handle);
            })
            .await;
        }
    }
}
