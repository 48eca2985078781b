//! Recovery at start: the core is rebuilt from the checkpoints, each matched by the glue with
//! the container it found (or not). The glue re-attaches executors first (those it could not
//! are left out), asks `plan_task_recovery` what to look for per task, looks, and hands the
//! results to `AgentCore::recover`; containers nobody holds are the glue's to destroy
//! (`orphans`).

use crate::core::{AgentCore, Container, ExecKey, ExecutorRecord, Limits, Now, Task, TaskRecord};
use crate::executors::Executor;
use crate::plan::{plan_task_recovery, TaskRecovery, NOT_STARTED};
use proto::{StatusReason, TaskState};

/// What the glue found of a task's container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// Re-attached (by its record, or found by its id).
    Reattached,
    /// There is none: the launch never created it.
    NotFound,
    /// It could not be re-attached.
    Failed(String),
}

/// A task checkpoint and what the glue found of its container (`NotFound` when the plan did
/// not look: ended tasks, executors' tasks).
#[derive(Clone, Debug, PartialEq)]
pub struct RecoveredTask {
    pub record: TaskRecord,
    pub found: Found,
}

impl AgentCore {
    /// Rebuilds the state from the checkpoints: `executors` are the ones re-attached, with the
    /// limits their containers have; then connects to the masters.
    pub fn recover(
        &mut self,
        now: Now,
        executors: Vec<(ExecutorRecord, Limits)>,
        tasks: Vec<RecoveredTask>,
    ) {
        for (record, limits) in executors {
            let key: ExecKey = (record.framework.id.clone(), record.info.executor_id.clone());
            self.next_instance += 1;
            let executor = Executor {
                framework: record.framework,
                info: record.info,
                running: true,
                subscribed: false,
                shutting_down: record.shutting_down,
                instance: self.next_instance,
                applied: Some(limits),
                resizing: false,
                resize_again: false,
                waiting: Vec::new(),
            };
            self.executors.insert(key, executor);
        }
        for t in tasks {
            self.recover_task(now, t);
        }
        let keys: Vec<ExecKey> = self.executors.keys().cloned().collect();
        for key in keys {
            // The agent may have died between a limit change and its checkpoint.
            self.settle_executor(now, &key);
            let shutting = self.executors.get(&key).is_some_and(|e| e.shutting_down);
            if shutting {
                if let Some(e) = self.executors.get_mut(&key) {
                    e.shutting_down = false;
                }
                self.shutdown_executor(now, &key, "it was shutting down when the agent restarted");
            } else {
                self.shutdown_if_idle(now, &key);
            }
        }
        self.start();
    }

    fn recover_task(&mut self, now: Now, t: RecoveredTask) {
        let RecoveredTask { record, found } = t;
        let task_id = record.info.task_id.clone();
        let framework_id = record.framework.id.clone();
        self.updates.restore(
            &framework_id,
            &task_id,
            record.next_seq,
            record.pending_updates.clone(),
        );
        let executor_recovered = record.executor_id.as_ref().is_some_and(|x| {
            self.executors
                .contains_key(&(framework_id.clone(), x.clone()))
        });
        let plan = plan_task_recovery(
            record.state,
            record.executor_id.as_ref(),
            executor_recovered,
            record.running.then_some(()),
        );
        self.tasks.insert(
            task_id.clone(),
            Task {
                framework: record.framework,
                info: record.info,
                state: record.state,
                kill_requested: record.kill_requested,
                executor: record.executor_id,
                container: Container::None,
            },
        );
        let fail = |core: &mut AgentCore, message: String, executor_id| {
            core.update(now, &task_id, TaskState::Failed, |s| {
                s.reason = Some(StatusReason::AgentRestarted);
                s.executor_id = executor_id;
                s.message = Some(message);
            });
        };
        match (plan, found) {
            (TaskRecovery::Ended | TaskRecovery::InExecutor, _) => {}
            (
                TaskRecovery::Fail {
                    message,
                    executor_id,
                },
                _,
            ) => fail(self, message, executor_id),
            (TaskRecovery::Reattach(()) | TaskRecovery::FindById, Found::Reattached) => {
                if let Some(task) = self.tasks.get_mut(&task_id) {
                    task.container = Container::Running;
                }
                // The checkpoint gets the container's record (found by id: for the first time).
                self.checkpoint(&task_id);
            }
            (TaskRecovery::FindById, Found::NotFound) => fail(self, NOT_STARTED.to_owned(), None),
            (TaskRecovery::Reattach(()), Found::NotFound) => fail(
                self,
                "cannot re-attach to the task after an agent restart: its container is gone"
                    .to_owned(),
                None,
            ),
            (_, Found::Failed(e)) => fail(
                self,
                format!("cannot re-attach to the task after an agent restart: {e}"),
                None,
            ),
        }
    }
}
