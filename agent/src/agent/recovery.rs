//! Recovery at start: executors re-attached from their checkpoints, each task checkpoint
//! matched with its container (by its record, or by its id when the agent died before saving
//! the record), containers nobody holds destroyed (the orphan sweep), and everything handed to
//! the core, which decides what each task's state is.

use super::*;
use crate::checkpoint::{Loaded, TaskCheckpoint};
use agent_core::{
    container_id, orphans, plan_task_recovery, Found, RecoveredTask, TaskRecord, TaskRecovery,
};

impl Agent {
    /// Re-attaches to what the checkpoints on disk name (after a restart or upgrade).
    pub(super) async fn recover(&mut self) {
        let executors = self.recover_executors();
        let tasks = self.recover_tasks();
        self.destroy_orphans().await;
        self.core.recover(now(), executors, tasks);
        // The checkpoints (with the containers' records) are written before anyone reads that
        // a task was re-attached.
        self.drive().await;
        let watched: Vec<(TaskId, Arc<Handle>)> = self
            .handles
            .iter()
            .map(|(id, h)| (id.clone(), h.clone()))
            .collect();
        for (task_id, handle) in watched {
            tracing::info!(task = %task_id, pid = handle.pid(), "re-attached to a running task");
            self.watch_exit(task_id, handle);
        }
        let total = self.core.total_resources();
        let used = self.core.used_resources();
        if !total.contains(&used) {
            // --resources shrank below what runs: the tasks keep running (kubelet and Mesos do
            // the same), the master sees the new total and offers nothing that is not free.
            tracing::warn!(total = %total, running = %used,
                "the running tasks use more than this agent now offers (its resources shrank); \
                 they keep running, and nothing new fits until enough of them end");
        }
    }

    /// Each task checkpoint, with what was found of its container.
    fn recover_tasks(&mut self) -> Vec<RecoveredTask> {
        let loaded = match self.checkpoints.load_all::<TaskCheckpoint>() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot read checkpoints; no task recovered");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for Loaded { key, result } in loaded {
            let cp = match result {
                Ok(cp) => cp,
                Err(e) => {
                    tracing::error!(checkpoint = %key, error = %e, "skipping a corrupt checkpoint (moved aside to .corrupt)");
                    continue;
                }
            };
            let task_id = cp.info.task_id.clone();
            let executor_recovered = cp.executor_id.as_ref().is_some_and(|x| {
                self.executors
                    .contains_key(&(cp.framework.id.clone(), x.clone()))
            });
            let plan = plan_task_recovery(
                cp.state,
                cp.executor_id.as_ref(),
                executor_recovered,
                cp.container.clone(),
            );
            let found = match plan {
                TaskRecovery::Reattach(record) => self.runtime.recover(&record).map(Some),
                TaskRecovery::FindById => {
                    let id = container_id(&cp.framework.id, &task_id);
                    let found = self.runtime.recover_by_id(&id);
                    if let Ok(Some(_)) = &found {
                        tracing::info!(task = %task_id, container = %id,
                            "found the container of a task whose record the agent never saved");
                    }
                    found
                }
                TaskRecovery::Ended => {
                    tracing::info!(task = %task_id, state = %cp.state, "recovered an ended task with unacknowledged updates");
                    Ok(None)
                }
                TaskRecovery::InExecutor | TaskRecovery::Fail { .. } => Ok(None),
            };
            let found = match found {
                Ok(Some(handle)) => {
                    self.handles.insert(task_id.clone(), handle);
                    Found::Reattached
                }
                Ok(None) => Found::NotFound,
                Err(e) => Found::Failed(e.to_string()),
            };
            let record = TaskRecord {
                running: cp.container.is_some(),
                framework: cp.framework,
                info: cp.info,
                state: cp.state,
                kill_requested: cp.kill_requested,
                executor_id: cp.executor_id,
                next_seq: cp.next_seq,
                pending_updates: cp.pending_updates,
                changed: false,
            };
            out.push(RecoveredTask { record, found });
        }
        out
    }

    /// Destroys every container under the agent's cgroup subtree (and run dir) that no
    /// recovered task or executor holds: one cloned before its first checkpoint when the agent
    /// died, or one whose re-attach failed. Nothing may run that the agent cannot account for.
    async fn destroy_orphans(&mut self) {
        let runtime = self.runtime.clone();
        if !matches!(runtime.as_ref(), Runtime::Isolated(_)) {
            return;
        }
        let held: std::collections::BTreeSet<String> = self
            .handles
            .values()
            .filter_map(|h| h.record())
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
            let found = iso.container_ids()?;
            let done: Vec<_> = orphans(found, &held)
                .into_iter()
                .map(|id| {
                    let r = iso.destroy_by_id(&id);
                    (id, r)
                })
                .collect();
            Ok::<_, isolation::IsolationError>(done)
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
}
