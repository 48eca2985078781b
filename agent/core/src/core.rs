//! `AgentCore`: the state, the driving API (`poll_action`, `poll_timeout`, `handle_timer`), the
//! session with the master and the status updates. Tasks are in `tasks.rs`, executors in
//! `executors.rs`, recovery in `recovery.rs`.

use crate::updates::{RetryPolicy, StatusUpdates};
use proto::{
    AgentId, AgentInfo, AgentToExecutor, AgentToMaster, ExecutorId, ExecutorInfo, FrameworkId,
    FrameworkSummary, MasterToAgent, Resources, StatusSource, StatusUuid, TaskId, TaskInfo,
    TaskReport, TaskState, TaskStatus,
};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Actions queued before the glue drains them (it drains after every call, so one call's
/// actions are what the queue holds: a few per task the call touches). Beyond this the glue
/// stopped polling (a bug): heartbeats and usage reports are dropped, oldest first; other
/// actions carry state the core already changed and are kept.
pub const MAX_ACTIONS: usize = 1 << 16;
/// Ended tasks remembered for `corral logs` after their records are gone.
pub const MAX_FINISHED_TASKS: usize = 1000;
/// How often every container's limits are read back (systemd's daemon-reload resets limits in
/// delegated subtrees) and executors' containers brought to their tasks' size.
pub const LIMIT_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// How often old sandboxes are collected.
pub const GC_INTERVAL: Duration = Duration::from_secs(60);
/// First reconnection backoff, doubled up to `MAX_BACKOFF`.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
pub const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// Time given to an executor beyond the kill grace period before its container is killed.
pub const KILL_MARGIN: Duration = Duration::from_secs(2);

/// The time of an event: the monotonic instant (timers) and the wall clock in milliseconds
/// since the epoch (status timestamps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub at: Instant,
    pub unix_ms: u64,
}

pub type ExecKey = (FrameworkId, ExecutorId);

/// A container's limits: resources (cpus, memory) and the pids limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub resources: Resources,
    pub pids: u64,
}

/// A container the agent runs: a command task's own, or an executor's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ContainerRef {
    Task(TaskId),
    Executor(ExecKey),
}

/// What a task's checkpoint holds of the core's state; the glue adds the sandbox and the
/// container's record (its handle) when `running`.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRecord {
    pub framework: FrameworkSummary,
    pub info: TaskInfo,
    pub state: TaskState,
    pub kill_requested: bool,
    pub executor_id: Option<ExecutorId>,
    /// The task's own container runs (its record belongs in the checkpoint).
    pub running: bool,
    pub next_seq: u64,
    pub pending_updates: Vec<TaskStatus>,
    /// This checkpoint records a new state change (the last of `pending_updates`).
    pub changed: bool,
}

/// What an executor's checkpoint holds of the core's state; the glue adds sandbox, socket,
/// user and the container's record.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutorRecord {
    pub framework: FrameworkSummary,
    pub info: ExecutorInfo,
    pub shutting_down: bool,
    /// The container runs (its record belongs in the checkpoint).
    pub running: bool,
}

/// What the glue must do, in the order given.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Open a session with the masters with this `Register` frame; answer with
    /// `handle_registered` or `handle_connect_failed` for the same `attempt`.
    Connect {
        attempt: u64,
        register: AgentToMaster,
    },
    /// Queue a frame to the master (never awaited by the caller: a bounded outbox).
    Send(AgentToMaster),
    /// Persist the agent id the master gave.
    SaveAgentId(AgentId),
    /// Write the task's checkpoint durably before the next action.
    CheckpointTask(TaskRecord),
    /// Remove the task's checkpoint (everything about it is acknowledged).
    RemoveTask {
        framework_id: FrameworkId,
        task_id: TaskId,
    },
    CheckpointExecutor(ExecutorRecord),
    RemoveExecutor(ExecKey),
    /// Launch a command task's container; answer with `handle_launch_result`.
    Launch {
        framework: FrameworkSummary,
        task: TaskInfo,
    },
    /// SIGTERM, then SIGKILL after `grace`, to a command task's container.
    Kill {
        task_id: TaskId,
        grace: Duration,
    },
    /// Remove an ended command task's container.
    Destroy {
        task_id: TaskId,
    },
    /// Launch an executor's container with `limits`; answer with `handle_executor_launched`.
    LaunchExecutor {
        framework: FrameworkSummary,
        info: ExecutorInfo,
        limits: Limits,
    },
    /// Set an executor's container limits; answer with `handle_executor_resized`.
    ResizeExecutor {
        key: ExecKey,
        limits: Limits,
    },
    /// Give a task to its subscribed executor: the glue makes the task's sandbox in the
    /// executor's and sends `AgentToExecutor::LaunchTask`.
    HandTask {
        key: ExecKey,
        task: TaskInfo,
    },
    /// A frame to the executor's subscribed connection.
    ToExecutor {
        key: ExecKey,
        msg: AgentToExecutor,
    },
    /// Close the executor's current connection (it broke the protocol).
    CloseExecutorConnection {
        key: ExecKey,
    },
    /// Kill every process of the executor's container.
    KillExecutor {
        key: ExecKey,
        grace: Duration,
    },
    /// Remove an ended executor's container, stop listening on its socket.
    DestroyExecutor {
        key: ExecKey,
    },
    /// Read back these containers' limits and restore what drifted (`handle_limits_checked`).
    CheckLimits {
        containers: Vec<ContainerRef>,
    },
    /// Measure the tasks' usage and the node's pressure and send them to the master: `always`
    /// at a heartbeat; otherwise (a check between heartbeats) only when
    /// `UsageReport::worth_sending` says the report is news.
    ReportUsage {
        always: bool,
    },
    /// Remove old sandboxes of ended tasks.
    CollectGarbage,
}

/// A task as the glue may read it (serving logs, usage, sandboxes).
#[derive(Clone, Debug, PartialEq)]
pub struct TaskView<'a> {
    pub framework_id: &'a FrameworkId,
    pub task_id: &'a TaskId,
    pub state: TaskState,
    pub executor: Option<&'a ExecutorId>,
    pub kill_requested: bool,
    pub running: bool,
    /// What the task asked for (its own container's limits; a share of its executor's).
    pub resources: &'a Resources,
    /// Its pids limit: its own, else the agent's default.
    pub pids_limit: u64,
}

/// Fixed settings of the core.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub info: AgentInfo,
    /// The id saved by an earlier run, if any.
    pub agent_id: Option<AgentId>,
    pub retry: RetryPolicy,
    pub kill_grace: Duration,
    pub default_pids_limit: u64,
    /// Unique per agent run (the glue passes a random UUID's 32 hex digits): each status uuid is
    /// that UUID with a counter mixed into its low bits, so it is a UUID too (what Mesos clients
    /// expect: 16 bytes), and `<prefix>-<counter>` for any other prefix.
    pub uuid_prefix: String,
    /// Seeds the reconnection jitter.
    pub seed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Container {
    /// Not launched (or an executor's task: the executor's container is the one).
    None,
    Launching,
    Running,
    /// Ended; destroyed.
    Exited,
}

pub(crate) struct Task {
    pub framework: FrameworkSummary,
    pub info: TaskInfo,
    pub state: TaskState,
    pub kill_requested: bool,
    pub executor: Option<ExecutorId>,
    pub container: Container,
}

impl Task {
    pub fn executor_key(&self) -> Option<ExecKey> {
        self.executor
            .as_ref()
            .map(|e| (self.framework.id.clone(), e.clone()))
    }
}

pub(crate) enum Session {
    /// Not connected; a connection starts at `reconnect_at` (`None`: none scheduled).
    Down {
        reconnect_at: Option<Instant>,
    },
    Connecting,
    Up {
        heartbeat: Duration,
        next_heartbeat: Instant,
        /// When to measure usage next between heartbeats ([`USAGE_CHECK_INTERVAL`]).
        next_usage_check: Instant,
    },
}

/// The shortest heartbeat interval the agent accepts from a master, in milliseconds.
pub const MIN_HEARTBEAT_MS: u64 = 100;

/// Between heartbeats (whose interval the master stretches as the cluster grows), usage and
/// pressure are measured this often and sent when they changed (see `usage`).
pub const USAGE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// An executor did not end a task it was asked to kill in time.
    ExecutorKill { key: ExecKey, task_id: TaskId },
    /// An executor did not exit in time after `Shutdown`.
    ExecutorShutdown { key: ExecKey, instance: u64 },
}

pub struct AgentCore {
    pub(crate) config: CoreConfig,
    pub(crate) agent_id: Option<AgentId>,
    pub(crate) tasks: BTreeMap<TaskId, Task>,
    pub(crate) executors: BTreeMap<ExecKey, crate::executors::Executor>,
    pub(crate) updates: StatusUpdates,
    pub(crate) finished: VecDeque<(FrameworkId, TaskId, Option<ExecutorId>)>,
    pub(crate) actions: VecDeque<Action>,
    pub(crate) session: Session,
    pub(crate) attempt: u64,
    pub(crate) backoff: Duration,
    pub(crate) rng: u64,
    pub(crate) next_uuid: u64,
    pub(crate) next_instance: u64,
    pub(crate) next_limit_check: Instant,
    pub(crate) next_gc: Instant,
    pub(crate) timers: BTreeMap<(Instant, u64), Timer>,
    pub(crate) next_timer: u64,
    pub(crate) drifts: u64,
    /// Tasks this core ended with reason `MemoryLimit` (OOM-killed at their limit).
    pub(crate) oom_kills: u64,
}

impl AgentCore {
    /// A core with no task; call `recover` next (with whatever the checkpoints hold).
    pub fn new(config: CoreConfig, now: Now) -> AgentCore {
        AgentCore {
            agent_id: config.agent_id.clone(),
            updates: StatusUpdates::new(config.retry.clone()),
            rng: config.seed | 1,
            config,
            tasks: BTreeMap::new(),
            executors: BTreeMap::new(),
            finished: VecDeque::new(),
            actions: VecDeque::new(),
            session: Session::Down { reconnect_at: None },
            attempt: 0,
            backoff: INITIAL_BACKOFF,
            next_uuid: 0,
            next_instance: 0,
            // Right after recovery: limits may have drifted while the agent was down.
            next_limit_check: now.at,
            next_gc: now.at + GC_INTERVAL,
            timers: BTreeMap::new(),
            next_timer: 0,
            drifts: 0,
            oom_kills: 0,
        }
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `handle_timer` must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = vec![self.next_limit_check, self.next_gc];
        match &self.session {
            Session::Down { reconnect_at } => t.extend(*reconnect_at),
            Session::Connecting => {}
            Session::Up {
                next_heartbeat,
                next_usage_check,
                ..
            } => {
                t.push(*next_heartbeat);
                t.push(*next_usage_check);
                t.extend(self.updates.next_resend());
            }
        }
        t.extend(self.timers.keys().next().map(|(at, _)| *at));
        t.into_iter().min()
    }

    /// Time passed: heartbeats, update retries, reconnection, limit checks, GC, executor
    /// timeouts.
    pub fn handle_timer(&mut self, now: Now) {
        if now.at >= self.next_limit_check {
            self.next_limit_check = now.at + LIMIT_CHECK_INTERVAL;
            // A cut refused earlier (memory still in use) is retried here.
            let keys: Vec<ExecKey> = self.executors.keys().cloned().collect();
            for key in keys {
                self.settle_executor(now, &key);
            }
            let containers = self.containers();
            if !containers.is_empty() {
                self.push(Action::CheckLimits { containers });
            }
        }
        if now.at >= self.next_gc {
            self.next_gc = now.at + GC_INTERVAL;
            self.push(Action::CollectGarbage);
        }
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now.at {
                break;
            }
            let timer = entry.remove();
            self.fire(timer);
        }
        match &mut self.session {
            Session::Down { reconnect_at } => {
                if reconnect_at.is_some_and(|t| t <= now.at) {
                    self.connect();
                }
            }
            Session::Connecting => {}
            Session::Up {
                heartbeat,
                next_heartbeat,
                next_usage_check,
            } => {
                if now.at >= *next_heartbeat {
                    *next_heartbeat = now.at + *heartbeat;
                    *next_usage_check = now.at + USAGE_CHECK_INTERVAL;
                    self.push(Action::Send(AgentToMaster::Heartbeat));
                    self.push(Action::ReportUsage { always: true });
                } else if now.at >= *next_usage_check {
                    *next_usage_check = now.at + USAGE_CHECK_INTERVAL;
                    self.push(Action::ReportUsage { always: false });
                }
                self.flush_updates(now);
            }
        }
    }

    // ---- the session -----------------------------------------------------------------------

    /// Starts a connection now (at start, after recovery).
    pub fn start(&mut self) {
        if matches!(self.session, Session::Down { .. }) {
            self.connect();
        }
    }

    fn connect(&mut self) {
        self.attempt += 1;
        self.session = Session::Connecting;
        let tasks = self
            .tasks
            .values()
            .map(|t| TaskReport {
                framework_id: t.framework.id.clone(),
                task: t.info.clone(),
                state: t.state,
            })
            .collect();
        let register = AgentToMaster::Register {
            agent_id: self.agent_id.clone(),
            info: self.config.info.clone(),
            tasks,
        };
        self.push(Action::Connect {
            attempt: self.attempt,
            register,
        });
    }

    /// The current connection attempt: frames and events of older ones are stale.
    pub fn attempt(&self) -> u64 {
        self.attempt
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.session, Session::Up { .. })
    }

    pub fn agent_id(&self) -> Option<&AgentId> {
        self.agent_id.as_ref()
    }

    /// The master accepted the registration of `attempt`.
    pub fn handle_registered(
        &mut self,
        now: Now,
        attempt: u64,
        agent_id: AgentId,
        heartbeat: Duration,
    ) {
        if attempt != self.attempt || !matches!(self.session, Session::Connecting) {
            return;
        }
        if self.agent_id.as_ref() != Some(&agent_id) {
            self.push(Action::SaveAgentId(agent_id.clone()));
        }
        self.agent_id = Some(agent_id);
        self.backoff = INITIAL_BACKOFF;
        let heartbeat = heartbeat.max(Duration::from_millis(100));
        self.session = Session::Up {
            heartbeat,
            next_heartbeat: now.at + heartbeat,
            next_usage_check: now.at + USAGE_CHECK_INTERVAL,
        };
        self.updates.reset_timers();
        self.flush_updates(now);
    }

    /// Registration of `attempt` failed: retried after a jittered, growing backoff.
    pub fn handle_connect_failed(&mut self, now: Now, attempt: u64) {
        if attempt != self.attempt || !matches!(self.session, Session::Connecting) {
            return;
        }
        // Jitter in [0.75, 1.25) so that a fleet of agents does not reconnect in lockstep.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let jitter = 0.75 + (self.rng % 1000) as f64 / 2000.0;
        self.session = Session::Down {
            reconnect_at: Some(now.at + self.backoff.mul_f64(jitter)),
        };
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// The session of `attempt` ended: re-register at once (this is master failover time).
    pub fn handle_disconnected(&mut self, _now: Now, attempt: u64) {
        if attempt != self.attempt || !matches!(self.session, Session::Up { .. }) {
            return;
        }
        self.backoff = INITIAL_BACKOFF;
        self.connect();
    }

    /// The master told a new heartbeat interval: the next heartbeat is one interval from now.
    fn heartbeat_changed(&mut self, now: Now, interval_ms: u64) {
        if let Session::Up {
            heartbeat,
            next_heartbeat,
            ..
        } = &mut self.session
        {
            *heartbeat = Duration::from_millis(interval_ms.max(MIN_HEARTBEAT_MS));
            *next_heartbeat = now.at + *heartbeat;
        }
    }

    /// A frame from the master of the current session.
    pub fn handle_master(&mut self, now: Now, msg: MasterToAgent) {
        match msg {
            // Mid-session, `Registered` carries a new heartbeat interval (the cluster grew).
            MasterToAgent::Registered {
                heartbeat_interval_ms,
                ..
            } => self.heartbeat_changed(now, heartbeat_interval_ms),
            MasterToAgent::ReadLog { .. } => {}
            MasterToAgent::RunTasks {
                framework,
                executor: Some(executor),
                tasks,
            } => self.run_executor_tasks(now, framework, executor, tasks),
            MasterToAgent::RunTasks {
                framework,
                executor: None,
                tasks,
            } => self.run_tasks(now, framework, tasks),
            MasterToAgent::KillTask {
                task_id, grace_ms, ..
            } => self.kill_task(now, &task_id, grace_ms.map(Duration::from_millis)),
            MasterToAgent::AcknowledgeUpdate { task_id, uuid, .. } => {
                self.acknowledge(now, &task_id, &uuid)
            }
            MasterToAgent::ShutdownFramework { framework_id } => {
                self.shutdown_framework(now, &framework_id)
            }
            MasterToAgent::FrameworkMessage {
                framework_id,
                executor_id,
                data,
            } => self.framework_message((framework_id, executor_id), data),
        }
    }

    fn acknowledge(&mut self, now: Now, task_id: &TaskId, uuid: &StatusUuid) {
        if !self.updates.acknowledge(task_id, uuid) {
            return;
        }
        let ended = self
            .tasks
            .get(task_id)
            .is_some_and(|t| t.state.is_terminal());
        if ended && self.updates.forget_if_done(task_id) {
            if let Some(task) = self.tasks.remove(task_id) {
                self.push(Action::RemoveTask {
                    framework_id: task.framework.id.clone(),
                    task_id: task_id.clone(),
                });
                self.finished
                    .push_back((task.framework.id, task_id.clone(), task.executor));
                if self.finished.len() > MAX_FINISHED_TASKS {
                    self.finished.pop_front();
                }
            }
        } else {
            self.checkpoint(task_id);
        }
        self.flush_updates(now);
    }

    // ---- status updates ----------------------------------------------------------------------

    /// Sends the updates that are due, if connected.
    pub(crate) fn flush_updates(&mut self, now: Now) {
        if !self.is_connected() {
            return;
        }
        for (framework_id, status) in self.updates.due(now.at) {
            self.push(Action::Send(AgentToMaster::StatusUpdate {
                framework_id,
                status,
            }));
        }
    }

    /// Records a state change: checkpointed with the task, then sent if nothing of its task is
    /// in flight. A terminal task's state never changes again.
    pub(crate) fn update(
        &mut self,
        now: Now,
        task_id: &TaskId,
        state: TaskState,
        f: impl FnOnce(&mut TaskStatus),
    ) {
        let Some(task) = self.tasks.get_mut(task_id) else {
            return;
        };
        if task.state.is_terminal() {
            return;
        }
        task.state = state;
        let mut status = TaskStatus::new(task_id.clone(), state, StatusSource::Agent);
        status.agent_id = self.agent_id.clone();
        status.timestamp_ms = now.unix_ms;
        f(&mut status);
        if state.is_terminal() && status.reason == Some(proto::StatusReason::MemoryLimit) {
            self.oom_kills += 1;
        }
        let framework_id = task.framework.id.clone();
        let key = task.executor_key();
        self.next_uuid += 1;
        let uuid = status_uuid(&self.config.uuid_prefix, self.next_uuid);
        self.updates.record(&framework_id, status, uuid);
        self.checkpoint_change(task_id, true);
        self.flush_updates(now);
        if state.is_terminal() {
            // An executor's container shrinks once a task of it has ended.
            if let Some(key) = key {
                self.resize_executor(&key);
            }
        }
    }

    /// Queues the task's checkpoint (its state and unacknowledged updates).
    pub(crate) fn checkpoint(&mut self, task_id: &TaskId) {
        self.checkpoint_change(task_id, false);
    }

    fn checkpoint_change(&mut self, task_id: &TaskId, changed: bool) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        let (next_seq, pending_updates) = self.updates.pending(task_id);
        let record = TaskRecord {
            framework: task.framework.clone(),
            info: task.info.clone(),
            state: task.state,
            kill_requested: task.kill_requested,
            executor_id: task.executor.clone(),
            running: task.container == Container::Running,
            next_seq,
            pending_updates,
            changed,
        };
        self.push(Action::CheckpointTask(record));
    }

    pub(crate) fn push(&mut self, action: Action) {
        if self.actions.len() >= MAX_ACTIONS {
            // The glue stopped draining: heartbeats and usage reports are the ones to lose.
            if let Some(pos) = self.actions.iter().position(|a| {
                matches!(
                    a,
                    Action::Send(AgentToMaster::Heartbeat) | Action::ReportUsage { .. }
                )
            }) {
                self.actions.remove(pos);
            }
        }
        self.actions.push_back(action);
    }

    pub(crate) fn schedule(&mut self, at: Instant, timer: Timer) {
        self.next_timer += 1;
        self.timers.insert((at, self.next_timer), timer);
    }

    // ---- reading the state -----------------------------------------------------------------

    pub fn task(&self, task_id: &TaskId) -> Option<TaskView<'_>> {
        self.tasks.get_key_value(task_id).map(|(id, t)| TaskView {
            framework_id: &t.framework.id,
            task_id: id,
            state: t.state,
            executor: t.executor.as_ref(),
            kill_requested: t.kill_requested,
            running: t.container == Container::Running,
            resources: &t.info.resources,
            pids_limit: t
                .info
                .container
                .pids_limit
                .unwrap_or(self.config.default_pids_limit),
        })
    }

    pub fn tasks(&self) -> impl Iterator<Item = TaskView<'_>> {
        self.tasks.keys().filter_map(|id| self.task(id))
    }

    /// Ended tasks whose records are gone, oldest first (their sandboxes serve `corral logs`).
    pub fn finished(
        &self,
    ) -> impl DoubleEndedIterator<Item = &(FrameworkId, TaskId, Option<ExecutorId>)> {
        self.finished.iter()
    }

    pub fn executors(&self) -> impl Iterator<Item = &ExecKey> {
        self.executors.keys()
    }

    /// Status updates not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.updates.len()
    }

    /// Tasks ended as OOM-killed at their memory limit (`MemoryLimit`) since start.
    pub fn oom_kills(&self) -> u64 {
        self.oom_kills
    }

    /// Status updates sent again because no acknowledgement came, since start.
    pub fn status_resends(&self) -> u64 {
        self.updates.resends()
    }

    /// Limit changes found and restored from outside since start.
    pub fn drifts_restored(&self) -> u64 {
        self.drifts
    }

    /// The containers that run: command tasks' and executors'.
    pub fn containers(&self) -> Vec<ContainerRef> {
        let tasks = self
            .tasks
            .iter()
            .filter(|(_, t)| t.container == Container::Running)
            .map(|(id, _)| ContainerRef::Task(id.clone()));
        let executors = self
            .executors
            .iter()
            .filter(|(_, e)| e.running)
            .map(|(k, _)| ContainerRef::Executor(k.clone()));
        tasks.chain(executors).collect()
    }

    /// The glue read back the limits of `CheckLimits` and restored `restored` drifted values.
    pub fn handle_limits_checked(&mut self, restored: u64) {
        self.drifts += restored;
    }

    /// What live tasks and executors hold. It can exceed the total after `--resources` shrank
    /// under running tasks; every use of it saturates.
    pub fn used_resources(&self) -> Resources {
        let used = self
            .tasks
            .values()
            .filter(|t| !t.state.is_terminal())
            .fold(Resources::default(), |acc, t| acc.add(&t.info.resources));
        self.executors
            .values()
            .fold(used, |acc, e| acc.add(&e.info.resources))
    }

    /// What the agent offers (after the system's reservation).
    pub fn total_resources(&self) -> &Resources {
        &self.config.info.resources
    }

    pub fn free_resources(&self) -> Resources {
        self.config
            .info
            .resources
            .saturating_sub(&self.used_resources())
    }
}

/// The `counter`-th status uuid of an agent run whose prefix is `prefix`: a UUID (hyphenated)
/// when the prefix is one's 32 hex digits, else `<prefix>-<counter>`.
fn status_uuid(prefix: &str, counter: u64) -> StatusUuid {
    match u128::from_str_radix(prefix, 16) {
        Ok(base) if prefix.len() == 32 => {
            let h = format!("{:032x}", base ^ u128::from(counter));
            StatusUuid::new(format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            ))
        }
        _ => StatusUuid::new(format!("{prefix}-{counter}")),
    }
}

#[cfg(test)]
mod status_uuid_tests {
    use super::status_uuid;

    #[test]
    fn a_uuid_prefix_gives_distinct_uuids_and_any_other_prefix_a_counter() {
        let p = "0123456789abcdef0123456789abcdef";
        let a = status_uuid(p, 1);
        let b = status_uuid(p, 2);
        assert_ne!(a, b);
        assert_eq!(a.as_str(), "01234567-89ab-cdef-0123-456789abcdee");
        assert_eq!(status_uuid("run", 7).as_str(), "run-7");
    }
}
