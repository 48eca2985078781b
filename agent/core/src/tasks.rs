//! Command tasks (the built-in executor): admission, launch, exit and the kill state machine.
//!
//! A task's path: `RunTasks` → admitted (ids, free resources) → `Checkpoint(Starting)`, `Send`,
//! `Launch` → `handle_launch_result` → `Checkpoint(Running, running)`, `Send` →
//! `handle_task_exited` → `Checkpoint(terminal)`, `Send`, `Destroy` → acknowledged →
//! `RemoveTask`. A kill while the launch is in flight is remembered (checkpointed
//! `kill_requested`) and sent as soon as the container runs.

use crate::admission::admit;
use crate::core::{Action, AgentCore, Container, Now, Task};
use crate::exits::{exit_status, Exit};
use crate::CoreError;
use crate::RuntimeFailure;
use proto::{FrameworkId, FrameworkSummary, StatusReason, TaskId, TaskInfo, TaskState};
use std::time::Duration;

impl AgentCore {
    pub(crate) fn run_tasks(
        &mut self,
        now: Now,
        framework: FrameworkSummary,
        tasks: Vec<TaskInfo>,
    ) {
        for info in tasks {
            let task_id = info.task_id.clone();
            if self.tasks.contains_key(&task_id) {
                // A launch the master resent (failover): the task is already ours.
                tracing::warn!(task = %task_id, "ignoring a launch of a task that is already known");
                continue;
            }
            let free = self.free_resources();
            let admitted = admit(&task_id, &framework.id, &info.resources, &free);
            self.tasks.insert(
                task_id.clone(),
                Task {
                    framework: framework.clone(),
                    info: info.clone(),
                    state: TaskState::Staging,
                    kill_requested: false,
                    executor: None,
                    container: Container::None,
                },
            );
            if let Err((reason, message)) = admitted {
                self.update(now, &task_id, TaskState::Error, |s| {
                    s.reason = Some(reason);
                    s.message = Some(message);
                });
                continue;
            }
            if let Some(t) = self.tasks.get_mut(&task_id) {
                t.container = Container::Launching;
            }
            // The intent is durable (Starting) before the container exists: an agent that dies
            // during the launch finds the container by its id.
            self.update(now, &task_id, TaskState::Starting, |_| {});
            self.push(Action::Launch {
                framework: framework.clone(),
                task: info,
            });
        }
    }

    /// The glue could not even prepare a task's launch (its container spec): the task fails.
    pub fn handle_launch_refused(&mut self, now: Now, task_id: &TaskId, message: String) {
        self.handle_launch_result(now, task_id, Err(RuntimeFailure(message)));
    }

    /// A command task's container was launched (`Ok(pid)`) or could not be.
    pub fn handle_launch_result(
        &mut self,
        now: Now,
        task_id: &TaskId,
        result: Result<u32, RuntimeFailure>,
    ) {
        let Some(task) = self.tasks.get_mut(task_id) else {
            return;
        };
        if task.container != Container::Launching {
            return;
        }
        match result {
            Ok(pid) => {
                task.container = Container::Running;
                let kill_now = task.kill_requested;
                // The update's checkpoint carries `running`: the container record is durable
                // before anyone hears the task runs, and an agent killed from here on
                // re-attaches to it.
                self.update(now, task_id, TaskState::Running, |s| {
                    s.message = Some(format!("running as pid {pid}"));
                });
                if kill_now {
                    let grace = self.grace(task_id, None);
                    self.push(Action::Kill {
                        task_id: task_id.clone(),
                        grace,
                    });
                }
            }
            Err(message) => {
                task.container = Container::None;
                self.update(now, task_id, TaskState::Failed, |s| {
                    s.reason = Some(StatusReason::ContainerLaunchFailed);
                    s.message = Some(message.0);
                });
            }
        }
    }

    /// A command task's container ended (`Err`: the agent lost track of it).
    pub fn handle_task_exited(
        &mut self,
        now: Now,
        task_id: &TaskId,
        result: Result<Exit, RuntimeFailure>,
    ) -> Result<(), CoreError> {
        let task = self
            .tasks
            .get_mut(task_id)
            .ok_or_else(|| CoreError::UnknownTask(task_id.clone()))?;
        if task.container != Container::Running {
            return Ok(());
        }
        task.container = Container::Exited;
        let killed = task.kill_requested;
        let memory_limit = task.info.resources.mem_bytes;
        match result {
            Ok(exit) => {
                let (state, reason, message) = exit_status(&exit, killed, memory_limit);
                self.update(now, task_id, state, |s| {
                    s.reason = Some(reason);
                    s.message = Some(message);
                    s.exit_code = exit.code;
                    s.signal = exit.signal;
                    s.limitation = exit.limitation.clone();
                });
            }
            Err(message) => {
                self.update(now, task_id, TaskState::Failed, |s| {
                    s.reason = Some(StatusReason::ExecutorTerminated);
                    s.message = Some(format!("lost track of the task: {message}"));
                });
            }
        }
        self.push(Action::Destroy {
            task_id: task_id.clone(),
        });
        Ok(())
    }

    /// The grace period of a kill: the master's, else the task's own, else the agent's.
    pub(crate) fn grace(&self, task_id: &TaskId, asked: Option<Duration>) -> Duration {
        let own = self
            .tasks
            .get(task_id)
            .and_then(|t| t.info.kill_grace_ms)
            .map(Duration::from_millis);
        asked.or(own).unwrap_or(self.config.kill_grace)
    }

    /// A kill from the master: remembered (checkpointed) first, then sent to the container,
    /// the executor, or, for a task not launched yet, it ends the task at once.
    pub(crate) fn kill_task(&mut self, now: Now, task_id: &TaskId, asked: Option<Duration>) {
        let Some(task) = self.tasks.get_mut(task_id) else {
            return;
        };
        if task.state.is_terminal() {
            return;
        }
        task.kill_requested = true;
        let container = task.container;
        let key = task.executor_key();
        self.checkpoint(task_id);
        let grace = self.grace(task_id, asked);
        if let Some(key) = key {
            return self.kill_executor_task(now, key, task_id, grace);
        }
        match container {
            Container::Running => self.push(Action::Kill {
                task_id: task_id.clone(),
                grace,
            }),
            Container::None => self.update(now, task_id, TaskState::Killed, |s| {
                s.reason = Some(StatusReason::KilledByFramework);
                s.message = Some("killed before it started".to_owned());
            }),
            // Launching: killed as soon as the launch completes (`handle_launch_result`);
            // Exited: its end is already reported.
            Container::Launching | Container::Exited => {}
        }
    }

    pub(crate) fn shutdown_framework(&mut self, now: Now, framework_id: &FrameworkId) {
        let keys: Vec<_> = self
            .executors
            .keys()
            .filter(|k| &k.0 == framework_id)
            .cloned()
            .collect();
        for key in keys {
            self.shutdown_executor(now, &key, "its framework is shutting down");
        }
        let ids: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| &t.framework.id == framework_id && t.executor.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.kill_task(now, &id, None);
        }
    }
}
