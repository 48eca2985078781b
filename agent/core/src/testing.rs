//! The harness: drives an `AgentCore` with a virtual clock, a fake runtime that records
//! launches, kills, resizes and destroys (and lets the test complete them), an in-memory
//! checkpoint store, a master that records what it is sent, and crash injection: `crash_after`
//! stops executing actions right after the N-th checkpoint completes, as `kill -9` would, and
//! `restart` rebuilds the core from the store and the containers that survived.
//!
//! Every action is checked as it executes: a `StatusUpdate` must already be in its task's
//! stored checkpoint, a `Kill` must find `kill_requested` stored, and a task's updates (as the
//! master receives them, deduplicated by uuid) never go on after a terminal one.

use crate::core::{
    Action, AgentCore, ContainerRef, CoreConfig, ExecKey, ExecutorRecord, Limits, Now, TaskRecord,
};
use crate::exits::Exit;
use crate::plan::{plan_task_recovery, TaskRecovery};
use crate::recovery::{Found, RecoveredTask};
use crate::updates::RetryPolicy;
use proto::{
    AgentId, AgentInfo, AgentToExecutor, AgentToMaster, ExecutorId, FrameworkId, FrameworkSummary,
    MasterToAgent, ProtocolVersion, Resources, StatusUuid, TaskId, TaskInfo, TaskState, TaskStatus,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The fake runtime's view of one container.
#[derive(Clone, Debug, PartialEq)]
pub enum FakeContainer {
    Running { limits: Option<Limits> },
    Exited(Exit),
}

/// What the checkpoint files would hold.
#[derive(Clone, Debug, Default)]
pub struct Store {
    pub tasks: BTreeMap<TaskId, TaskRecord>,
    pub executors: BTreeMap<ExecKey, ExecutorRecord>,
    pub agent_id: Option<AgentId>,
    /// Checkpoint writes so far (tasks and executors).
    pub writes: usize,
}

pub struct Harness {
    pub core: AgentCore,
    pub config: CoreConfig,
    pub now: Now,
    pub store: Store,
    /// Containers by their ref (they survive a restart of the core).
    pub containers: BTreeMap<ContainerRef, FakeContainer>,
    /// Every action executed, in order (kept across restarts).
    pub log: Vec<Action>,
    /// Launches waiting for `complete_launch` (when `auto_launch` is off).
    pub pending_launches: Vec<TaskId>,
    pub pending_executor_launches: Vec<(ExecKey, Limits)>,
    pub pending_resizes: Vec<(ExecKey, Limits)>,
    /// Complete launches and resizes as soon as they are asked for.
    pub auto_launch: bool,
    pub auto_resize: bool,
    /// Refuse resizes that lower memory (memory still in use).
    pub refuse_shrink: bool,
    /// Accept registrations at once.
    pub auto_register: bool,
    /// The connection attempt waiting for an answer.
    pub pending_connect: Option<u64>,
    /// Stop after this many more checkpoint writes (the crash point).
    pub crash_after: Option<usize>,
    pub crashed: bool,
    /// Frames the master received while connected.
    pub sent: Vec<AgentToMaster>,
    /// Status updates as the master saw them, deduplicated by uuid, per task in order.
    pub received: BTreeMap<TaskId, Vec<TaskStatus>>,
    seen: BTreeSet<StatusUuid>,
    pub acked: BTreeSet<StatusUuid>,
    /// Frames to executors, and tasks handed to them.
    pub to_executors: Vec<(ExecKey, AgentToExecutor)>,
    pub handed: Vec<(ExecKey, TaskId)>,
    /// Drifted limits the next `CheckLimits` finds and restores.
    pub drift: u64,
    runs: u64,
}

pub fn framework(id: &str) -> FrameworkSummary {
    FrameworkSummary {
        id: FrameworkId::new(id),
        name: id.to_owned(),
        principal: String::new(),
    }
}

pub fn task(id: &str, resources: &str) -> TaskInfo {
    TaskInfo {
        task_id: TaskId::new(id),
        name: id.to_owned(),
        agent_id: AgentId::new("a1"),
        resources: resources.parse().expect("resources"),
        command: proto::CommandInfo {
            shell: true,
            value: "true".into(),
            arguments: Vec::new(),
            environment: BTreeMap::new(),
            user: None,
        },
        container: Default::default(),
        kill_grace_ms: None,
        labels: BTreeMap::new(),
    }
}

pub fn executor(id: &str, resources: &str) -> proto::ExecutorInfo {
    proto::ExecutorInfo {
        executor_id: ExecutorId::new(id),
        command: task(id, resources).command,
        resources: resources.parse().expect("resources"),
        container: Default::default(),
    }
}

pub fn config(resources: &str) -> CoreConfig {
    CoreConfig {
        info: AgentInfo {
            hostname: "h1".into(),
            resources: resources.parse::<Resources>().expect("resources"),
            attributes: BTreeMap::new(),
            version: ProtocolVersion::CURRENT,
            software_version: "test".into(),
            reserved: BTreeMap::new(),
        },
        agent_id: None,
        retry: RetryPolicy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(600),
        },
        kill_grace: Duration::from_secs(3),
        default_pids_limit: 1000,
        uuid_prefix: "run1".into(),
        seed: 7,
    }
}

impl Harness {
    /// A registered agent with `resources`, launches and resizes completed automatically.
    pub fn new(resources: &str) -> Harness {
        Harness::with_config(config(resources))
    }

    pub fn with_config(config: CoreConfig) -> Harness {
        let now = Now {
            at: Instant::now(),
            unix_ms: 1_700_000_000_000,
        };
        let mut core = AgentCore::new(config.clone(), now);
        core.recover(now, Vec::new(), Vec::new());
        let mut h = Harness {
            core,
            config,
            now,
            store: Store::default(),
            containers: BTreeMap::new(),
            log: Vec::new(),
            pending_launches: Vec::new(),
            pending_executor_launches: Vec::new(),
            pending_resizes: Vec::new(),
            auto_launch: true,
            auto_resize: true,
            refuse_shrink: false,
            auto_register: true,
            pending_connect: None,
            crash_after: None,
            crashed: false,
            sent: Vec::new(),
            received: BTreeMap::new(),
            seen: BTreeSet::new(),
            acked: BTreeSet::new(),
            to_executors: Vec::new(),
            handed: Vec::new(),
            drift: 0,
            runs: 1,
        };
        h.drain();
        // What is due at start (the first limit check) is done before the test begins.
        h.core.handle_timer(now);
        h.drain();
        h
    }

    /// Executes every action the core has, in order, answering what is automatic.
    pub fn drain(&mut self) {
        while !self.crashed {
            let Some(action) = self.core.poll_action() else {
                break;
            };
            self.log.push(action.clone());
            self.execute(action);
        }
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::Connect { attempt, .. } => {
                self.pending_connect = Some(attempt);
                if self.auto_register {
                    self.register();
                }
            }
            Action::Send(msg) => self.master_receives(msg),
            Action::SaveAgentId(id) => self.store.agent_id = Some(id),
            Action::CheckpointTask(record) => {
                self.store.tasks.insert(record.info.task_id.clone(), record);
                self.wrote_checkpoint();
            }
            Action::RemoveTask { task_id, .. } => {
                self.store.tasks.remove(&task_id);
            }
            Action::CheckpointExecutor(record) => {
                let key = (record.framework.id.clone(), record.info.executor_id.clone());
                self.store.executors.insert(key, record);
                self.wrote_checkpoint();
            }
            Action::RemoveExecutor(key) => {
                self.store.executors.remove(&key);
            }
            Action::Launch { task, .. } => {
                // The container exists from here on, whatever the agent learns of it.
                let r = ContainerRef::Task(task.task_id.clone());
                self.containers
                    .insert(r, FakeContainer::Running { limits: None });
                self.pending_launches.push(task.task_id);
                if self.auto_launch {
                    self.complete_launches();
                }
            }
            Action::Kill { task_id, .. } => {
                let stored = self
                    .store
                    .tasks
                    .get(&task_id)
                    .is_some_and(|r| r.kill_requested);
                assert!(
                    stored,
                    "Kill of {task_id} before its kill_requested was checkpointed"
                );
            }
            Action::Destroy { task_id } => {
                self.containers.remove(&ContainerRef::Task(task_id));
            }
            Action::LaunchExecutor {
                framework,
                info,
                limits,
            } => {
                let key = (framework.id, info.executor_id);
                let c = FakeContainer::Running {
                    limits: Some(limits.clone()),
                };
                self.containers
                    .insert(ContainerRef::Executor(key.clone()), c);
                self.pending_executor_launches.push((key, limits));
                if self.auto_launch {
                    self.complete_executor_launches();
                }
            }
            Action::ResizeExecutor { key, limits } => {
                self.pending_resizes.push((key, limits));
                if self.auto_resize {
                    self.complete_resizes();
                }
            }
            Action::HandTask { key, task } => self.handed.push((key, task.task_id)),
            Action::ToExecutor { key, msg } => self.to_executors.push((key, msg)),
            Action::CloseExecutorConnection { key } => self.core.handle_executor_disconnected(&key),
            Action::KillExecutor { .. } | Action::ReportUsage { .. } | Action::CollectGarbage => {}
            Action::DestroyExecutor { key } => {
                self.containers.remove(&ContainerRef::Executor(key));
            }
            Action::CheckLimits { .. } => {
                let restored = std::mem::take(&mut self.drift);
                self.core.handle_limits_checked(restored);
            }
        }
    }

    fn wrote_checkpoint(&mut self) {
        self.store.writes += 1;
        if let Some(n) = self.crash_after.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.crashed = true;
            }
        }
    }

    fn master_receives(&mut self, msg: AgentToMaster) {
        if let AgentToMaster::StatusUpdate { status, .. } = &msg {
            let uuid = status.uuid.clone().expect("agent updates carry a uuid");
            let stored = self.store.tasks.get(&status.task_id).is_some_and(|r| {
                r.pending_updates
                    .iter()
                    .any(|p| p.uuid.as_ref() == Some(&uuid))
            });
            assert!(
                stored,
                "update {uuid:?} of {} sent before it was checkpointed",
                status.task_id
            );
            // Sent again (a resend, or after a restart that lost the acknowledgement's
            // checkpoint): the framework acknowledges it again.
            self.acked.remove(&uuid);
            if self.seen.insert(uuid) {
                let list = self.received.entry(status.task_id.clone()).or_default();
                assert!(
                    !list.last().is_some_and(|s| s.state.is_terminal()),
                    "{} changed state after a terminal one: {:?}",
                    status.task_id,
                    status.state
                );
                list.push(status.clone());
            }
        }
        self.sent.push(msg);
    }

    /// Answers the pending registration.
    pub fn register(&mut self) {
        if let Some(attempt) = self.pending_connect.take() {
            let id = AgentId::new("a1");
            self.core
                .handle_registered(self.now, attempt, id, Duration::from_secs(5));
        }
    }

    pub fn complete_launches(&mut self) {
        for id in std::mem::take(&mut self.pending_launches) {
            self.core.handle_launch_result(self.now, &id, Ok(100));
            // The glue watches a container once launched: an end before that is seen now.
            if let Some(FakeContainer::Exited(e)) =
                self.containers.get(&ContainerRef::Task(id.clone()))
            {
                let _ = self.core.handle_task_exited(self.now, &id, Ok(e.clone()));
            }
        }
    }

    pub fn fail_launch(&mut self, id: &str, message: &str) {
        let id = TaskId::new(id);
        self.pending_launches.retain(|t| t != &id);
        self.containers.remove(&ContainerRef::Task(id.clone()));
        self.core
            .handle_launch_result(self.now, &id, Err(message.into()));
        self.drain();
    }

    pub fn complete_executor_launches(&mut self) {
        for (key, limits) in std::mem::take(&mut self.pending_executor_launches) {
            self.core
                .handle_executor_launched(self.now, &key, limits, Ok(200));
        }
    }

    pub fn complete_resizes(&mut self) {
        for (key, limits) in std::mem::take(&mut self.pending_resizes) {
            let r = ContainerRef::Executor(key.clone());
            let Some(FakeContainer::Running { limits: current }) = self.containers.get_mut(&r)
            else {
                self.core
                    .handle_executor_resized(self.now, &key, Err("no container".into()));
                continue;
            };
            let shrinks = current
                .as_ref()
                .is_some_and(|c| c.resources.mem_bytes > limits.resources.mem_bytes);
            if shrinks && self.refuse_shrink {
                self.core
                    .handle_executor_resized(self.now, &key, Err("memory in use".into()));
                continue;
            }
            *current = Some(limits.clone());
            self.core
                .handle_executor_resized(self.now, &key, Ok(limits));
        }
    }

    /// A frame from the master.
    pub fn master(&mut self, msg: MasterToAgent) {
        self.core.handle_master(self.now, msg);
        self.drain();
    }

    pub fn run(&mut self, fw: &str, tasks: Vec<TaskInfo>) {
        self.master(MasterToAgent::RunTasks {
            framework: framework(fw),
            executor: None,
            tasks,
        });
    }

    pub fn run_in(&mut self, fw: &str, ex: proto::ExecutorInfo, tasks: Vec<TaskInfo>) {
        self.master(MasterToAgent::RunTasks {
            framework: framework(fw),
            executor: Some(ex),
            tasks,
        });
    }

    pub fn kill(&mut self, fw: &str, id: &str) {
        self.master(MasterToAgent::KillTask {
            framework_id: FrameworkId::new(fw),
            task_id: TaskId::new(id),
            grace_ms: None,
        });
    }

    /// The task's container exits with `exit`.
    pub fn exit(&mut self, id: &str, exit: Exit) {
        let id = TaskId::new(id);
        let r = ContainerRef::Task(id.clone());
        self.containers
            .insert(r, FakeContainer::Exited(exit.clone()));
        let _ = self.core.handle_task_exited(self.now, &id, Ok(exit));
        self.drain();
    }

    /// The executor's container exits.
    pub fn executor_exit(&mut self, key: &ExecKey, exit: Exit) {
        self.containers.insert(
            ContainerRef::Executor(key.clone()),
            FakeContainer::Exited(exit.clone()),
        );
        self.core.handle_executor_exited(self.now, key, Ok(exit));
        self.drain();
    }

    /// A frame from an executor's connection.
    pub fn from_executor(&mut self, key: &ExecKey, msg: proto::ExecutorToAgent) {
        self.core.handle_executor(self.now, key, msg);
        self.drain();
    }

    /// The framework acknowledges every update the master received.
    pub fn ack_all(&mut self) {
        let all: Vec<(TaskId, StatusUuid)> = self
            .received
            .iter()
            .flat_map(|(t, l)| {
                l.iter()
                    .map(move |s| (t.clone(), s.uuid.clone().expect("uuid")))
            })
            .filter(|(_, u)| !self.acked.contains(u))
            .collect();
        for (task_id, uuid) in all {
            self.acked.insert(uuid.clone());
            self.master(MasterToAgent::AcknowledgeUpdate {
                framework_id: FrameworkId::new("f"),
                task_id,
                uuid,
            });
        }
    }

    /// Acknowledges until no update is left (each ack lets the next update of a task out).
    pub fn ack_until_quiet(&mut self) {
        for _ in 0..100 {
            let before = self.acked.len();
            self.ack_all();
            if self.acked.len() == before {
                return;
            }
        }
    }

    /// Moves the clock by `d` (firing timers on the way, in order).
    pub fn advance(&mut self, d: Duration) {
        let end = self.now.at + d;
        loop {
            let next = self.core.poll_timeout().filter(|t| *t <= end);
            let at = next.unwrap_or(end).max(self.now.at);
            self.set_time(at);
            self.core.handle_timer(self.now);
            self.drain();
            if next.is_none() || at >= end {
                break;
            }
        }
    }

    fn set_time(&mut self, at: Instant) {
        let ms = at.duration_since(self.now.at).as_millis() as u64;
        self.now = Now {
            at,
            unix_ms: self.now.unix_ms + ms,
        };
    }

    /// The master session drops.
    pub fn disconnect(&mut self) {
        let attempt = self.core.attempt();
        self.core.handle_disconnected(self.now, attempt);
        self.drain();
    }

    /// The agent process dies (unexecuted actions are lost) and restarts: a new core recovers
    /// from the store and the containers that still exist, as the glue does.
    pub fn restart(&mut self) {
        self.runs += 1;
        self.crashed = false;
        self.crash_after = None;
        self.pending_launches.clear();
        self.pending_executor_launches.clear();
        self.pending_resizes.clear();
        self.pending_connect = None;
        let mut config = self.config.clone();
        config.uuid_prefix = format!("run{}", self.runs);
        config.agent_id = self.store.agent_id.clone();
        let mut core = AgentCore::new(config, self.now);
        let mut executors = Vec::new();
        for (key, record) in &self.store.executors {
            let r = ContainerRef::Executor(key.clone());
            if let (true, Some(FakeContainer::Running { limits: Some(l) })) =
                (record.running, self.containers.get(&r))
            {
                executors.push((record.clone(), l.clone()));
            }
        }
        let recovered: BTreeSet<ExecKey> = executors
            .iter()
            .map(|(r, _)| (r.framework.id.clone(), r.info.executor_id.clone()))
            .collect();
        let mut tasks = Vec::new();
        let mut exited = Vec::new();
        for (id, record) in &self.store.tasks {
            let key = record
                .executor_id
                .as_ref()
                .map(|e| (record.framework.id.clone(), e.clone()));
            let in_recovered = key.as_ref().is_some_and(|k| recovered.contains(k));
            let plan = plan_task_recovery(
                record.state,
                record.executor_id.as_ref(),
                in_recovered,
                record.running.then_some(()),
            );
            let found = match plan {
                TaskRecovery::Reattach(()) | TaskRecovery::FindById => {
                    match self.containers.get(&ContainerRef::Task(id.clone())) {
                        Some(FakeContainer::Exited(e)) => {
                            exited.push((id.clone(), e.clone()));
                            Found::Reattached
                        }
                        Some(_) => Found::Reattached,
                        None => Found::NotFound,
                    }
                }
                _ => Found::NotFound,
            };
            tasks.push(RecoveredTask {
                record: record.clone(),
                found,
            });
        }
        // The glue removes the checkpoints of executors it could not re-attach.
        self.store.executors.retain(|k, _| recovered.contains(k));
        core.recover(self.now, executors, tasks);
        self.core = core;
        self.drain();
        // The orphan sweep: containers no recovered task or executor holds are destroyed.
        let held = self.core.containers();
        self.containers.retain(|r, _| {
            held.contains(r)
                || exited
                    .iter()
                    .any(|(id, _)| r == &ContainerRef::Task(id.clone()))
        });
        // The glue's watchers report containers that ended while the agent was down.
        for (id, e) in exited {
            let _ = self.core.handle_task_exited(self.now, &id, Ok(e));
            self.drain();
        }
    }

    /// States the master received for `id`, in order.
    pub fn states(&self, id: &str) -> Vec<TaskState> {
        self.received
            .get(&TaskId::new(id))
            .map(|l| l.iter().map(|s| s.state).collect())
            .unwrap_or_default()
    }

    pub fn last(&self, id: &str) -> Option<&TaskStatus> {
        self.received.get(&TaskId::new(id)).and_then(|l| l.last())
    }

    /// How many times the update `uuid` was sent to the master.
    pub fn sends_of(&self, uuid: &StatusUuid) -> usize {
        self.sent
            .iter()
            .filter(|m| matches!(m, AgentToMaster::StatusUpdate { status, .. } if status.uuid.as_ref() == Some(uuid)))
            .count()
    }

    pub fn actions<F: Fn(&Action) -> bool>(&self, f: F) -> Vec<&Action> {
        self.log.iter().filter(|a| f(a)).collect()
    }
}
