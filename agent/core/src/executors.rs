//! Custom executors: one container per executor whose limits are the executor's resources plus
//! those of its live tasks (grown before a new task is handed over, shrunk after one ended),
//! the subscription protocol, executor updates (a task's state only moves forward), kills with
//! a timeout after which the container is killed, shutdown when no task is left, and the end
//! of every live task when the container ends.

use crate::admission::{progress, valid_id};
use crate::core::{
    Action, AgentCore, Container, ExecKey, ExecutorRecord, Limits, Now, Task, Timer, KILL_MARGIN,
};
use crate::exits::{task_end, Exit};
use crate::RuntimeFailure;
use proto::{
    AgentToExecutor, ExecutorInfo, ExecutorToAgent, ExecutorUpdate, FrameworkSummary, OomPolicy,
    Resources, StatusReason, StatusSource, TaskId, TaskInfo, TaskState,
};
use std::time::Duration;

pub(crate) struct Executor {
    pub framework: FrameworkSummary,
    pub info: ExecutorInfo,
    /// The container runs (launched, or re-attached at recovery).
    pub running: bool,
    pub subscribed: bool,
    pub shutting_down: bool,
    /// Distinguishes this run of the executor from a later one with the same id (timers).
    pub instance: u64,
    /// The limits the container has; `None` until known.
    pub applied: Option<Limits>,
    /// A resize in flight, and whether another is needed when it completes.
    pub resizing: bool,
    pub resize_again: bool,
    /// Tasks admitted while the container must first grow for them: handed over (and
    /// reported `Starting`) once the resize succeeded, failed if it did not.
    pub waiting: Vec<TaskId>,
}

impl AgentCore {
    fn live_executor_tasks(&self, key: &ExecKey) -> Vec<TaskId> {
        self.tasks
            .iter()
            .filter(|(_, t)| !t.state.is_terminal() && t.executor_key().as_ref() == Some(key))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// What the executor's container should have: its own resources plus those of its live
    /// tasks; its pids limit (its own, or the agent's default) plus each live task's own.
    pub fn executor_wanted(&self, key: &ExecKey) -> Option<Limits> {
        let e = self.executors.get(key)?;
        let mut resources = e.info.resources.clone();
        let mut pids = e
            .info
            .container
            .pids_limit
            .unwrap_or(self.config.default_pids_limit);
        for id in self.live_executor_tasks(key) {
            if let Some(t) = self.tasks.get(&id) {
                resources = resources.add(&t.info.resources);
                pids = pids.saturating_add(t.info.container.pids_limit.unwrap_or(0));
            }
        }
        Some(Limits { resources, pids })
    }

    /// The limits the executor's container has now, as last reported.
    pub fn executor_limits(&self, key: &ExecKey) -> Option<&Limits> {
        self.executors.get(key)?.applied.as_ref()
    }

    pub(crate) fn checkpoint_executor(&mut self, key: &ExecKey) {
        let Some(e) = self.executors.get(key) else {
            return;
        };
        let record = ExecutorRecord {
            framework: e.framework.clone(),
            info: e.info.clone(),
            shutting_down: e.shutting_down,
            running: e.running,
        };
        self.push(Action::CheckpointExecutor(record));
    }

    /// Brings the executor's container to `executor_wanted` (one resize in flight at a time).
    /// True while a resize is in flight.
    pub(crate) fn resize_executor(&mut self, key: &ExecKey) -> bool {
        let Some(wanted) = self.executor_wanted(key) else {
            return false;
        };
        let Some(e) = self.executors.get_mut(key) else {
            return false;
        };
        if !e.running {
            return false;
        }
        if e.resizing {
            e.resize_again = true;
            return true;
        }
        if e.applied.as_ref() == Some(&wanted) {
            return false;
        }
        e.resizing = true;
        self.push(Action::ResizeExecutor {
            key: key.clone(),
            limits: wanted,
        });
        true
    }

    /// Resizes the running executor's container if its tasks need it; with nothing to wait
    /// for, the tasks waiting for room start now.
    pub(crate) fn settle_executor(&mut self, now: Now, key: &ExecKey) {
        if self.resize_executor(key) {
            return;
        }
        let waiting = match self.executors.get_mut(key) {
            Some(e) if e.running => std::mem::take(&mut e.waiting),
            _ => return,
        };
        self.start_waiting(now, key, waiting);
    }

    /// A `ResizeExecutor` completed with the limits now in force, or failed (a cut refused
    /// while memory is in use: retried at the next limit check).
    pub fn handle_executor_resized(
        &mut self,
        now: Now,
        key: &ExecKey,
        result: Result<Limits, RuntimeFailure>,
    ) {
        let Some(e) = self.executors.get_mut(key) else {
            return;
        };
        e.resizing = false;
        let again = std::mem::take(&mut e.resize_again);
        let waiting = std::mem::take(&mut e.waiting);
        match result {
            Ok(applied) => {
                let changed = e.applied.as_ref() != Some(&applied);
                e.applied = Some(applied);
                if changed {
                    // The checkpoint's container record carries the limits: a restarted agent
                    // restores and drift-checks the right values.
                    self.checkpoint_executor(key);
                }
                self.start_waiting(now, key, waiting);
            }
            Err(err) => {
                let msg = format!(
                    "cannot raise the limits of executor {}'s container for the new tasks: {err}",
                    key.1
                );
                self.fail_tasks(
                    now,
                    &waiting,
                    TaskState::Failed,
                    StatusReason::ContainerLaunchFailed,
                    &msg,
                );
            }
        }
        if again {
            self.settle_executor(now, key);
        }
    }

    fn start_waiting(&mut self, now: Now, key: &ExecKey, ids: Vec<TaskId>) {
        for id in ids {
            let exec = Some(key.1.clone());
            self.update(now, &id, TaskState::Starting, |s| s.executor_id = exec);
            self.hand_task(key, &id);
        }
    }

    fn fail_tasks(
        &mut self,
        now: Now,
        ids: &[TaskId],
        state: TaskState,
        reason: StatusReason,
        message: &str,
    ) {
        for id in ids {
            let exec = self.tasks.get(id).and_then(|t| t.executor.clone());
            self.update(now, id, state, |s| {
                s.reason = Some(reason);
                s.message = Some(message.to_owned());
                s.executor_id = exec;
            });
        }
    }

    /// RunTasks with an executor: launch it (if not running) with the tasks, or grow the
    /// running one and hand the tasks over.
    pub(crate) fn run_executor_tasks(
        &mut self,
        now: Now,
        framework: FrameworkSummary,
        info: ExecutorInfo,
        tasks: Vec<TaskInfo>,
    ) {
        let key: ExecKey = (framework.id.clone(), info.executor_id.clone());
        let free = self.free_resources();
        let mut ids = Vec::new();
        for t in tasks {
            let task_id = t.task_id.clone();
            if self.tasks.contains_key(&task_id) {
                continue;
            }
            self.tasks.insert(
                task_id.clone(),
                Task {
                    framework: framework.clone(),
                    info: t,
                    state: TaskState::Staging,
                    kill_requested: false,
                    executor: Some(info.executor_id.clone()),
                    container: Container::None,
                },
            );
            ids.push(task_id);
        }
        if ids.is_empty() {
            return;
        }
        let ids_ok = ids.iter().all(|id| valid_id(id.as_str()))
            && valid_id(framework.id.as_str())
            && valid_id(info.executor_id.as_str());
        if !ids_ok {
            let msg =
                "task, framework and executor ids may use only letters, digits, '.', '_' and '-'";
            return self.fail_tasks(now, &ids, TaskState::Error, StatusReason::TaskInvalid, msg);
        }
        let mut need = ids
            .iter()
            .filter_map(|id| self.tasks.get(id))
            .fold(Resources::default(), |acc, t| acc.add(&t.info.resources));
        let running = self.executors.get(&key).map(|e| e.shutting_down);
        match running {
            Some(true) => {
                let msg = format!(
                    "executor {} is shutting down (it had no task left); launch again once it has exited",
                    info.executor_id
                );
                let (state, reason) = (TaskState::Failed, StatusReason::ExecutorTerminated);
                return self.fail_tasks(now, &ids, state, reason, &msg);
            }
            Some(false) => {}
            None => need = need.add(&info.resources),
        }
        if !free.contains(&need) {
            let msg =
                format!("the launch group asks for {need} but this agent has only {free} free");
            let (state, reason) = (TaskState::Error, StatusReason::ResourcesUnavailable);
            return self.fail_tasks(now, &ids, state, reason, &msg);
        }
        if running.is_none() {
            return self.launch_executor(now, key, framework, info, ids);
        }
        // The container grows before the executor hears of the new tasks.
        let Some(e) = self.executors.get_mut(&key) else {
            return;
        };
        e.waiting.extend(ids.iter().cloned());
        // A container still launching grows for them once it runs.
        self.settle_executor(now, &key);
    }

    fn launch_executor(
        &mut self,
        now: Now,
        key: ExecKey,
        framework: FrameworkSummary,
        info: ExecutorInfo,
        ids: Vec<TaskId>,
    ) {
        self.next_instance += 1;
        self.executors.insert(
            key.clone(),
            Executor {
                framework: framework.clone(),
                info: info.clone(),
                running: false,
                subscribed: false,
                shutting_down: false,
                instance: self.next_instance,
                applied: None,
                resizing: false,
                resize_again: false,
                waiting: Vec::new(),
            },
        );
        let Some(limits) = self.executor_wanted(&key) else {
            return;
        };
        // The intent is durable before the container exists.
        self.checkpoint_executor(&key);
        for id in &ids {
            let exec = Some(info.executor_id.clone());
            self.update(now, id, TaskState::Starting, |s| s.executor_id = exec);
        }
        self.push(Action::LaunchExecutor {
            framework,
            info,
            limits,
        });
    }

    /// The executor's container was launched with the limits of `LaunchExecutor` (`Ok(pid)`),
    /// or could not be (its sandbox, socket or spec included).
    pub fn handle_executor_launched(
        &mut self,
        now: Now,
        key: &ExecKey,
        limits: Limits,
        result: Result<u32, RuntimeFailure>,
    ) {
        let Some(e) = self.executors.get_mut(key) else {
            if result.is_ok() {
                self.push(Action::DestroyExecutor { key: key.clone() });
            }
            return;
        };
        if e.running {
            return;
        }
        match result {
            Ok(_pid) => {
                e.running = true;
                e.applied = Some(limits);
                let shutting_down = e.shutting_down;
                self.checkpoint_executor(key);
                // Tasks given to it while it launched: the container grows before they are
                // handed over.
                self.settle_executor(now, key);
                if shutting_down {
                    self.push(Action::KillExecutor {
                        key: key.clone(),
                        grace: Duration::ZERO,
                    });
                }
            }
            Err(message) => {
                let ids = self.live_executor_tasks(key);
                let msg = format!("cannot launch executor {}: {message}", key.1);
                let (state, reason) = (TaskState::Failed, StatusReason::ContainerLaunchFailed);
                self.fail_tasks(now, &ids, state, reason, &msg);
                self.executors.remove(key);
                self.push(Action::RemoveExecutor(key.clone()));
            }
        }
    }

    /// Gives a task to its executor now if it is subscribed (else at its subscription).
    fn hand_task(&mut self, key: &ExecKey, task_id: &TaskId) {
        let subscribed = self.executors.get(key).is_some_and(|e| e.subscribed);
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        if subscribed && !task.state.is_terminal() {
            let task = task.info.clone();
            self.push(Action::HandTask {
                key: key.clone(),
                task,
            });
        }
    }

    fn send_executor(&mut self, key: &ExecKey, msg: AgentToExecutor) -> bool {
        if !self.executors.get(key).is_some_and(|e| e.subscribed) {
            return false;
        }
        self.push(Action::ToExecutor {
            key: key.clone(),
            msg,
        });
        true
    }

    /// The executor's connection closed (or was replaced): it must subscribe again.
    pub fn handle_executor_disconnected(&mut self, key: &ExecKey) {
        if let Some(e) = self.executors.get_mut(key) {
            e.subscribed = false;
        }
    }

    /// A frame from the executor's current connection (the glue checked its peer).
    pub fn handle_executor(&mut self, now: Now, key: &ExecKey, msg: ExecutorToAgent) {
        let Some(e) = self.executors.get_mut(key) else {
            return;
        };
        match msg {
            ExecutorToAgent::Subscribe {
                framework_id,
                executor_id,
                tasks,
                unacknowledged,
            } => {
                if framework_id != key.0 || executor_id != key.1 {
                    tracing::warn!(executor = %key.1, claimed = %executor_id, "an executor subscribed under another id; closing its connection");
                    e.subscribed = false;
                    self.push(Action::CloseExecutorConnection { key: key.clone() });
                    return;
                }
                e.subscribed = true;
                self.subscribed(now, key, tasks, unacknowledged);
            }
            _ if !e.subscribed => {
                tracing::warn!(executor = %key.1, "an executor sent a frame before subscribing; closing its connection");
                self.push(Action::CloseExecutorConnection { key: key.clone() });
            }
            ExecutorToAgent::Update(u) => self.executor_update(now, key, u),
            ExecutorToAgent::Message { data } => {
                self.push(Action::Send(proto::AgentToMaster::ExecutorMessage {
                    framework_id: key.0.clone(),
                    executor_id: key.1.clone(),
                    data,
                }))
            }
        }
    }

    fn subscribed(
        &mut self,
        now: Now,
        key: &ExecKey,
        known: Vec<TaskId>,
        unacknowledged: Vec<ExecutorUpdate>,
    ) {
        self.send_executor(
            key,
            AgentToExecutor::Subscribed {
                agent_id: self.agent_id.clone(),
                framework_id: key.0.clone(),
                executor_id: key.1.clone(),
            },
        );
        for u in unacknowledged {
            self.executor_update(now, key, u);
        }
        let Some(e) = self.executors.get(key) else {
            return;
        };
        let shutting_down = e.shutting_down;
        let waiting = e.waiting.clone();
        let known: std::collections::BTreeSet<TaskId> = known.into_iter().collect();
        tracing::info!(executor = %key.1, known_tasks = known.len(), "executor subscribed");
        for id in self.live_executor_tasks(key) {
            let killed = self.tasks.get(&id).is_some_and(|t| t.kill_requested);
            match (known.contains(&id), killed) {
                (true, true) => {
                    let msg = AgentToExecutor::KillTask {
                        task_id: id.clone(),
                        grace_ms: None,
                    };
                    self.send_executor(key, msg);
                }
                (true, false) => {}
                (false, true) => {
                    let exec = Some(key.1.clone());
                    self.update(now, &id, TaskState::Killed, |s| {
                        s.reason = Some(StatusReason::KilledByFramework);
                        s.message = Some("killed before the executor started it".into());
                        s.executor_id = exec;
                    });
                }
                (false, false) if waiting.contains(&id) => {}
                (false, false) => self.hand_task(key, &id),
            }
        }
        for id in known {
            if !self.tasks.contains_key(&id) {
                let msg = AgentToExecutor::KillTask {
                    task_id: id,
                    grace_ms: None,
                };
                self.send_executor(key, msg);
            }
        }
        if shutting_down {
            let grace_ms = self.config.kill_grace.as_millis() as u64;
            self.send_executor(key, AgentToExecutor::Shutdown { grace_ms });
        } else {
            self.shutdown_if_idle(now, key);
        }
    }

    /// Whether the glue must look at the executor's OOM counter before handing this update
    /// in: a task that ended badly under `KillTask` may be the OOM killer's work, which ends
    /// the whole container (`handle_executor_oom`).
    pub fn update_needs_oom_check(&self, key: &ExecKey, u: &ExecutorUpdate) -> bool {
        let whole_unit = self.executors.get(key).is_some_and(|e| {
            e.info.container.oom_policy.unwrap_or_default() == OomPolicy::KillTask
        });
        let live = self
            .tasks
            .get(&u.task_id)
            .is_some_and(|t| !t.state.is_terminal());
        whole_unit && live && u.state.is_terminal() && u.state != TaskState::Finished
    }

    /// The executor's container hit its memory limit: it is killed, and its exit ends every
    /// task with the limit.
    pub fn handle_executor_oom(&mut self, key: &ExecKey) {
        if self.executors.contains_key(key) {
            self.push(Action::KillExecutor {
                key: key.clone(),
                grace: Duration::ZERO,
            });
        }
    }

    /// An executor's task update: recorded as a status update, then acknowledged to it.
    fn executor_update(&mut self, now: Now, key: &ExecKey, u: ExecutorUpdate) {
        let ack = AgentToExecutor::Acknowledged {
            task_id: u.task_id.clone(),
            state: u.state,
        };
        let Some(task) = self.tasks.get(&u.task_id) else {
            // Already acknowledged by the framework and forgotten, or never ours.
            self.send_executor(key, ack);
            return;
        };
        if task.executor_key().as_ref() != Some(key) {
            tracing::warn!(executor = %key.1, task = %u.task_id, "an executor reported a task that is not its own; ignored");
            return;
        }
        let allowed = matches!(
            u.state,
            TaskState::Starting
                | TaskState::Running
                | TaskState::Killing
                | TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Error
        );
        // A task's state only moves forward: back and forth would make every update a
        // checkpoint and a status update for the framework.
        let forward = !task.state.is_terminal() && progress(u.state) > progress(task.state);
        if !task.state.is_terminal() && task.state != u.state && !forward {
            tracing::warn!(executor = %key.1, task = %u.task_id, from = %task.state, to = %u.state,
                "an executor moved a task's state backwards; ignored");
        } else if forward && !allowed {
            tracing::warn!(executor = %key.1, task = %u.task_id, state = %u.state,
                "an executor reported a state only the agent or master may set; ignored");
        }
        if !forward || !allowed {
            self.send_executor(key, ack);
            return;
        }
        let reason = u.reason.or(match u.state {
            TaskState::Finished | TaskState::Failed => Some(StatusReason::CommandExited),
            TaskState::Killed if task.kill_requested => Some(StatusReason::KilledByFramework),
            _ => None,
        });
        let exec = Some(key.1.clone());
        let terminal = u.state.is_terminal();
        self.update(now, &u.task_id, u.state, |s| {
            s.source = StatusSource::Executor;
            s.executor_id = exec;
            s.reason = reason;
            s.message = u.message;
            s.exit_code = u.exit_code;
            s.signal = u.signal;
        });
        self.send_executor(key, ack);
        if terminal {
            self.shutdown_if_idle(now, key);
        }
    }

    pub(crate) fn framework_message(&mut self, key: ExecKey, data: Vec<u8>) {
        // Best effort: dropped when the executor is not connected.
        self.send_executor(&key, AgentToExecutor::Message { data });
    }

    /// Kill of an executor's task: the executor kills it; the container if it does not in time.
    pub(crate) fn kill_executor_task(
        &mut self,
        now: Now,
        key: ExecKey,
        task_id: &TaskId,
        grace: Duration,
    ) {
        if !self.executors.contains_key(&key) {
            let exec = Some(key.1.clone());
            self.update(now, task_id, TaskState::Killed, |s| {
                s.reason = Some(StatusReason::KilledByFramework);
                s.message = Some("killed; its executor is gone".to_owned());
                s.executor_id = exec;
            });
            return;
        }
        tracing::info!(task = %task_id, executor = %key.1, ?grace, "asking the executor to kill a task");
        let msg = AgentToExecutor::KillTask {
            task_id: task_id.clone(),
            grace_ms: Some(grace.as_millis() as u64),
        };
        self.send_executor(&key, msg);
        let timer = Timer::ExecutorKill {
            key,
            task_id: task_id.clone(),
        };
        self.schedule(now.at + grace + KILL_MARGIN, timer);
    }

    /// An executor without a live task is shut down: the master has freed its resources.
    pub(crate) fn shutdown_if_idle(&mut self, now: Now, key: &ExecKey) {
        let waiting = self
            .executors
            .get(key)
            .is_some_and(|e| !e.waiting.is_empty());
        if !waiting && self.live_executor_tasks(key).is_empty() {
            self.shutdown_executor(now, key, "it has no task left");
        }
    }

    /// Asks the executor to exit; its container is killed after the grace period. Its live
    /// tasks count as killed on request.
    pub(crate) fn shutdown_executor(&mut self, now: Now, key: &ExecKey, why: &str) {
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
        let grace_ms = grace.as_millis() as u64;
        let sent = self.send_executor(key, AgentToExecutor::Shutdown { grace_ms });
        let wait = if sent { grace + KILL_MARGIN } else { grace };
        let timer = Timer::ExecutorShutdown {
            key: key.clone(),
            instance,
        };
        self.schedule(now.at + wait, timer);
    }

    /// An executor timer fired.
    pub(crate) fn fire(&mut self, timer: Timer) {
        match timer {
            Timer::ExecutorKill { key, task_id } => {
                let live = self
                    .tasks
                    .get(&task_id)
                    .is_some_and(|t| !t.state.is_terminal());
                if live && self.executors.contains_key(&key) {
                    tracing::warn!(task = %task_id, executor = %key.1, "the executor did not kill its task in time; killing the executor's container");
                    self.push(Action::KillExecutor {
                        key,
                        grace: Duration::ZERO,
                    });
                }
            }
            Timer::ExecutorShutdown { key, instance } => {
                if self
                    .executors
                    .get(&key)
                    .is_some_and(|e| e.instance == instance)
                {
                    tracing::info!(executor = %key.1, "executor did not exit within its grace period; killing its container");
                    self.push(Action::KillExecutor {
                        key,
                        grace: Duration::ZERO,
                    });
                }
            }
        }
    }

    /// The executor's container ended: every live task ends with it.
    pub fn handle_executor_exited(
        &mut self,
        now: Now,
        key: &ExecKey,
        result: Result<Exit, RuntimeFailure>,
    ) {
        let Some(e) = self.executors.remove(key) else {
            return;
        };
        self.push(Action::RemoveExecutor(key.clone()));
        // The limit in force, if the kernel's counters do not say.
        let limit = e
            .applied
            .as_ref()
            .map(|l| l.resources.mem_bytes)
            .unwrap_or(0);
        for id in self.live_executor_tasks(key) {
            let killed = self.tasks.get(&id).is_some_and(|t| t.kill_requested);
            let end = task_end(&key.1, &result, killed, limit);
            let exec = Some(key.1.clone());
            self.update(now, &id, end.state, |s| {
                s.reason = Some(end.reason);
                s.message = Some(end.message);
                s.limitation = end.limitation;
                s.signal = end.signal;
                s.executor_id = exec;
            });
        }
        if e.running {
            self.push(Action::DestroyExecutor { key: key.clone() });
        }
    }
}
