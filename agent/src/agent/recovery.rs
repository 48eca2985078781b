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
            let found = iso.container_ids().map_err(|e| e.to_string())?;
            for id in orphans(found, &held) {
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
            let executor_recovered = cp.executor_id.as_ref().is_some_and(|x| {
                self.executors
                    .contains_key(&(framework_id.clone(), x.clone()))
            });
            let handle = match plan_task_recovery(
                cp.state,
                cp.executor_id.as_ref(),
                executor_recovered,
                container,
            ) {
                TaskRecovery::Ended => {
                    tracing::info!(task = %task_id, state = %cp.state, "recovered an ended task with unacknowledged updates");
                    continue;
                }
                TaskRecovery::InExecutor => continue,
                TaskRecovery::Fail {
                    message,
                    executor_id,
                } => {
                    self.update(&task_id, TaskState::Failed, |s| {
                        s.reason = Some(StatusReason::AgentRestarted);
                        s.executor_id = executor_id;
                        s.message = Some(message);
                    })
                    .await;
                    continue;
                }
                TaskRecovery::Reattach(record) => self.runtime.recover(&record),
                TaskRecovery::FindById => {
                    let id = super::launch::container_id(&framework_id, &task_id);
                    match self.runtime.recover_by_id(&id) {
                        Ok(Some(handle)) => {
                            tracing::info!(task = %task_id, container = %id,
                                "found the container of a task whose record the agent never saved");
                            Ok(handle)
                        }
                        Ok(None) => {
                            self.update(&task_id, TaskState::Failed, |s| {
                                s.reason = Some(StatusReason::AgentRestarted);
                                s.message = Some(NOT_STARTED.to_owned());
                            })
                            .await;
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            match handle {
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

/// What recovery does with one task's checkpoint.
#[derive(Debug, PartialEq)]
pub(super) enum TaskRecovery<C> {
    /// The task ended before the agent stopped: kept for its unacknowledged updates.
    Ended,
    /// The task runs in an executor that was re-attached: the executor reconnects and reports it.
    InExecutor,
    /// The task cannot be recovered: it fails with `AgentRestarted` and this message.
    Fail {
        message: String,
        executor_id: Option<ExecutorId>,
    },
    /// The task's container is re-attached.
    Reattach(C),
    /// The agent stopped between the task's checkpoint and its container's record: the
    /// container may have started, and even ended; it is looked for by its id, and the task
    /// fails as not started only if there is none.
    FindById,
}

/// Why a task whose container was never created fails after an agent restart.
const NOT_STARTED: &str = "the agent restarted while launching the task; it was not started";

/// Recovery's plan for a task checkpointed in `state`, run by `executor` (re-attached or not
/// by the executors' recovery, which runs first) or in its own `container` (`None`: the agent
/// stopped between the checkpoint and saving the container's record, before or after the
/// launch).
pub(super) fn plan_task_recovery<C>(
    state: TaskState,
    executor: Option<&ExecutorId>,
    executor_recovered: bool,
    container: Option<C>,
) -> TaskRecovery<C> {
    if state.is_terminal() {
        return TaskRecovery::Ended;
    }
    match (executor, container) {
        (Some(_), _) if executor_recovered => TaskRecovery::InExecutor,
        (Some(executor_id), _) => TaskRecovery::Fail {
            message: format!(
                "the agent restarted and could not re-attach to executor {executor_id}"
            ),
            executor_id: Some(executor_id.clone()),
        },
        (None, None) => TaskRecovery::FindById,
        (None, Some(container)) => TaskRecovery::Reattach(container),
    }
}

/// The containers `found` under the agent's subtree that no recovered task or executor holds.
pub(super) fn orphans(
    found: Vec<String>,
    held: &std::collections::BTreeSet<String>,
) -> Vec<String> {
    found.into_iter().filter(|id| !held.contains(id)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_task_is_kept_whatever_else_the_checkpoint_says() {
        for state in [TaskState::Finished, TaskState::Failed, TaskState::Killed] {
            let ex = ExecutorId::new("ex");
            assert_eq!(
                plan_task_recovery(state, Some(&ex), false, Some(1)),
                TaskRecovery::Ended
            );
            assert_eq!(
                plan_task_recovery::<u8>(state, None, false, None),
                TaskRecovery::Ended
            );
        }
    }

    #[test]
    fn a_crash_before_the_container_record_looks_for_the_container_by_id() {
        for state in [TaskState::Staging, TaskState::Starting] {
            let plan = plan_task_recovery::<u8>(state, None, false, None);
            assert_eq!(plan, TaskRecovery::FindById);
        }
    }

    #[test]
    fn a_launched_task_is_reattached_to_its_container() {
        for state in [TaskState::Starting, TaskState::Running, TaskState::Killing] {
            assert_eq!(
                plan_task_recovery(state, None, false, Some("c1")),
                TaskRecovery::Reattach("c1")
            );
        }
    }

    #[test]
    fn an_executors_task_follows_its_executor() {
        let ex = ExecutorId::new("ex");
        assert_eq!(
            plan_task_recovery::<u8>(TaskState::Running, Some(&ex), true, None),
            TaskRecovery::InExecutor
        );
        match plan_task_recovery::<u8>(TaskState::Running, Some(&ex), false, None) {
            TaskRecovery::Fail {
                message,
                executor_id,
            } => {
                assert_eq!(executor_id, Some(ex));
                assert!(
                    message.contains("could not re-attach to executor ex"),
                    "{message}"
                );
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn orphans_are_the_containers_nobody_holds_in_found_order() {
        let held = ["b", "d"].map(str::to_owned).into_iter().collect();
        let found = ["a", "b", "c", "d"].map(str::to_owned).to_vec();
        assert_eq!(orphans(found, &held), vec!["a".to_owned(), "c".to_owned()]);
        assert!(orphans(Vec::new(), &held).is_empty());
    }
}
