//! The agent daemon: its state (`Agent`), the events that drive it and the loop (`run`,
//! `handle_event`, `housekeeping`, the master's messages in `on_master`). Each concern is one
//! `impl Agent` block or a few free functions in its own file:
//! - `config.rs`: the runtime chosen from the `Config`, the persisted agent id, node pressure;
//! - `session.rs`: connecting to the masters, registering, sending, usage reports;
//! - `status.rs`: status updates, checkpointed with the task before they are sent;
//! - `recovery.rs`: recovery from checkpoints and found containers, the orphan sweep;
//! - `launch.rs`: command tasks' admission and launch, exit watchers;
//! - `exits.rs`: a container's exit mapped to the task's terminal status;
//! - `kill.rs`: kills and container destruction;
//! - `spec.rs`: command tasks' container specs (what the task sees of the host);
//! - `limits.rs`: limit drift checks;
//! - `logs.rs`: `ReadLog` serving;
//! - `executors/`: custom executors (see its module doc).

mod config;
mod executors;
mod exits;
mod kill;
mod launch;
mod limits;
mod logs;
mod recovery;
mod session;
mod spec;
mod status;

use crate::checkpoint::{Checkpoints, Loaded, TaskCheckpoint, CHECKPOINT_VERSION};
use crate::resources;
use crate::runtime::{Handle, Runtime};
use crate::workdir;
use crate::AgentError;
use agent_core::{RetryPolicy, StatusUpdates};
use executors::{ExecKey, Executor};
use framework::{open_session, ClientOptions, Session};
use isolation::{ContainerSpec, ExitInfo};
use proto::{
    AgentId, AgentInfo, AgentToMaster, ClientFrame, ExecutorId, FrameworkId, FrameworkSummary,
    LogData, LogStream, MasterToAgent, Resources, Role, ServerFrame, StatusReason, StatusSource,
    StatusUuid, TaskId, TaskInfo, TaskReport, TaskState, TaskStatus,
};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use transport::{FramedSend, Identity};

use config::{load_agent_id, make_runtime, save_agent_id, PressureReader};
use exits::{peak_note, size};
use kill::destroy;
use launch::valid_id;
use spec::{container_spec, warn_about_shared_dirs};

/// Events from connection, reader and task-watcher tasks to the agent loop.
const EVENT_QUEUE: usize = 4096;
/// Sandboxes of ended tasks remembered for `corral logs`.
const MAX_FINISHED_TASKS: usize = 1000;
/// Largest log chunk served per request.
const MAX_LOG_CHUNK: u32 = 1 << 20;
/// Housekeeping tick: heartbeats and status-update retries are checked this often.
const TICK: Duration = Duration::from_millis(500);
/// How often every container's limits are read back and restored if something changed them
/// (systemd's daemon-reload is known to reset limits in delegated subtrees).
const LIMIT_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// How often old sandboxes are collected.
const GC_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsolationMode {
    /// cgroup v2 if the host has it, else v1; plain processes if neither can be managed.
    Auto,
    Cgroup2,
    Cgroup1,
    /// Plain processes: no limits are enforced.
    None,
}

/// Everything the agent daemon needs to run.
pub struct Config {
    pub masters: Vec<String>,
    pub work_dir: PathBuf,
    pub identity: Arc<Identity>,
    /// `--resources`: overrides the measured quantities it names.
    pub resources: Option<String>,
    /// `--reserved`: kept for the system out of what is measured (default: Mesos's 1 GiB of
    /// memory and 5 GiB of disk, or half on small nodes).
    pub reserved: Option<Resources>,
    pub attributes: BTreeMap<String, String>,
    pub isolation: IsolationMode,
    /// Name of the agent's cgroup subtree for tasks (under its own cgroup); `corral` if unset.
    pub cgroup_parent: Option<String>,
    /// Whose cgroup the task cgroups live under (`cgroup_driver.rs`).
    pub cgroup_driver: crate::CgroupDriver,
    pub default_user: Option<String>,
    pub allowed_users: Vec<String>,
    pub allow_root: bool,
    pub default_pids_limit: u64,
    pub hostname: String,
    /// The program that becomes each container's init (the corral binary) and its arguments.
    pub init_program: PathBuf,
    pub init_args: Vec<String>,
    pub retry: RetryPolicy,
    pub kill_grace: Duration,
    /// Kill every task and remove its container when the agent stops (throw-away clusters:
    /// `corral run --local`, tests). Off for real agents, whose tasks outlive them.
    pub cleanup_on_exit: bool,
    /// When sandboxes of ended tasks are removed.
    pub gc: crate::gc::GcPolicy,
}

enum Event {
    Registered {
        generation: u64,
        session: Session,
        agent_id: AgentId,
        heartbeat: Duration,
    },
    ConnectFailed {
        generation: u64,
        error: String,
    },
    Frame {
        generation: u64,
        frame: ServerFrame,
    },
    Lost {
        generation: u64,
        reason: String,
    },
    Launched {
        task_id: TaskId,
        result: Result<Arc<Handle>, String>,
    },
    Exited {
        task_id: TaskId,
        result: Result<ExitInfo, String>,
    },
    ExecutorLaunched {
        key: ExecKey,
        result: Result<Arc<Handle>, String>,
    },
    ExecutorExited {
        key: ExecKey,
        result: Result<ExitInfo, String>,
    },
    /// A connection on an executor's socket, not yet checked.
    ExecutorConnection {
        key: ExecKey,
        stream: tokio::net::UnixStream,
    },
    ExecutorFrame {
        key: ExecKey,
        conn: u64,
        msg: proto::ExecutorToAgent,
    },
    ExecutorClosed {
        key: ExecKey,
        conn: u64,
        reason: String,
    },
    ExecutorKillTimeout {
        key: ExecKey,
        task_id: TaskId,
    },
    ExecutorShutdownTimeout {
        key: ExecKey,
        instance: u64,
    },
}

struct Task {
    framework: FrameworkSummary,
    framework_id: FrameworkId,
    info: TaskInfo,
    state: TaskState,
    sandbox: PathBuf,
    /// Command tasks only: an executor's tasks share the executor's container.
    handle: Option<Arc<Handle>>,
    kill_requested: bool,
    /// The custom executor running the task; `None` for the command executor.
    executor: Option<ExecutorId>,
}

struct Connected {
    /// The master this session is with.
    master: String,
    send: FramedSend<ClientFrame>,
    connection: quinn::Connection,
    _endpoint: quinn::Endpoint,
    heartbeat: Duration,
    last_heartbeat: Instant,
}

struct Agent {
    config: Config,
    opts: ClientOptions,
    runtime: Arc<Runtime>,
    info: AgentInfo,
    agent_id: Option<AgentId>,
    tasks: BTreeMap<TaskId, Task>,
    finished: VecDeque<(TaskId, PathBuf)>,
    updates: StatusUpdates,
    checkpoints: Checkpoints,
    executors: BTreeMap<ExecKey, Executor>,
    executor_checkpoints: Checkpoints,
    executor_instances: u64,
    events: mpsc::Sender<Event>,
    conn: Option<Connected>,
    generation: u64,
    reconnect_at: Option<Instant>,
    backoff: Duration,
    next_limit_check: Instant,
    next_gc: Instant,
    pressure: PressureReader,
}

/// Runs the agent until `shutdown` completes. Tasks keep running when the agent stops.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    if config.identity.peer().role != Role::Agent {
        return Err(AgentError::NotAnAgentCertificate(
            config.identity.peer().to_string(),
        ));
    }
    if config.masters.is_empty() {
        return Err(AgentError::NoMasters);
    }
    let work_dir_err = |source| AgentError::WorkDir {
        path: config.work_dir.clone(),
        source,
    };
    std::fs::create_dir_all(config.work_dir.join("sandboxes")).map_err(work_dir_err)?;
    workdir::restrict_work_dir(&config.work_dir).map_err(work_dir_err)?;
    workdir::check_writable(&config.work_dir).map_err(work_dir_err)?;
    let runtime = make_runtime(&config)?;
    if matches!(runtime, Runtime::Isolated(_)) {
        warn_about_shared_dirs(&config.work_dir);
    }
    let (cpus, mem) = match &runtime {
        Runtime::Isolated(iso) => match iso.node_resources(&Default::default()) {
            Ok(n) => (n.cpus_milli, n.mem_bytes),
            Err(e) => {
                tracing::warn!(error = %e, "cannot measure node via the isolation layer; using procfs");
                resources::procfs_cpus_and_memory()
            }
        },
        Runtime::Plain => resources::procfs_cpus_and_memory(),
    };
    let overrides = match &config.resources {
        Some(spec) => Some((
            spec.parse::<Resources>()
                .map_err(|e| AgentError::Isolation(format!("--resources '{spec}': {e}")))?,
            resources::named_resources(spec),
        )),
        None => None,
    };
    let total = resources::node_resources(
        cpus,
        mem,
        &config.work_dir,
        overrides.as_ref().map(|(r, _)| r),
        overrides.as_ref().map(|(_, n)| n.as_slice()).unwrap_or(&[]),
        config.reserved.as_ref(),
    );
    let agent_id = load_agent_id(&config.work_dir);
    tracing::info!(resources = %total, runtime = %runtime.describe(), agent_id = ?agent_id.as_ref().map(|a| a.to_string()),
        work_dir = %config.work_dir.display(), "agent starting");
    let info = AgentInfo {
        hostname: config.hostname.clone(),
        resources: total,
        attributes: config.attributes.clone(),
        version: proto::ProtocolVersion::CURRENT,
        software_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let mut opts = ClientOptions::new(config.masters.clone(), config.identity.clone());
    opts.connect_timeout = Duration::from_secs(10);
    let checkpoints =
        Checkpoints::open(&config.work_dir).map_err(|e| AgentError::Checkpoint(e.to_string()))?;
    let executor_checkpoints = Checkpoints::open_executors(&config.work_dir)
        .map_err(|e| AgentError::Checkpoint(e.to_string()))?;
    let (events_tx, mut events_rx) = mpsc::channel(EVENT_QUEUE);
    let mut agent = Agent {
        updates: StatusUpdates::new(config.retry.clone()),
        checkpoints,
        executors: BTreeMap::new(),
        executor_checkpoints,
        executor_instances: 0,
        config,
        opts,
        runtime: Arc::new(runtime),
        info,
        agent_id,
        tasks: BTreeMap::new(),
        finished: VecDeque::new(),
        events: events_tx,
        conn: None,
        generation: 0,
        reconnect_at: Some(Instant::now()),
        backoff: Duration::from_millis(200),
        // Right after recovery: limits may have drifted while the agent was down.
        next_limit_check: Instant::now(),
        next_gc: Instant::now() + GC_INTERVAL,
        pressure: PressureReader::probe(),
    };
    agent.recover().await;
    let mut tick = tokio::time::interval(TICK);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            event = events_rx.recv() => {
                let Some(event) = event else { break };
                agent.handle_event(event).await;
            }
            _ = tick.tick() => agent.housekeeping().await,
            _ = &mut shutdown => break,
        }
    }
    if let Some(conn) = agent.conn.take() {
        conn.connection.close(0u32.into(), b"agent stopping");
    }
    if agent.config.cleanup_on_exit {
        agent.destroy_all().await;
    } else {
        tracing::info!(
            running = agent.tasks.len(),
            "agent stopping; tasks keep running"
        );
    }
    if let Runtime::Isolated(iso) = agent.runtime.as_ref() {
        let live = agent.tasks.values().any(|t| t.handle.is_some()) || !agent.executors.is_empty();
        if !live {
            // Nothing runs: leave no empty cgroup behind. Fails harmlessly while containers exist.
            let _ = iso.remove_task_parents();
        }
    }
    Ok(())
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Agent {
    async fn handle_event(&mut self, event: Event) {
        match event {
            Event::Registered {
                generation,
                session,
                agent_id,
                heartbeat,
            } => {
                if generation != self.generation {
                    return;
                }
                self.on_registered(session, agent_id, heartbeat).await;
            }
            Event::ConnectFailed { generation, error } => {
                if generation != self.generation {
                    return;
                }
                tracing::warn!(%error, retry_in = ?self.backoff, "cannot register with a master");
                self.schedule_reconnect();
            }
            Event::Frame { generation, frame } => {
                if generation == self.generation {
                    self.on_frame(frame).await;
                }
            }
            Event::Lost { generation, reason } => {
                if generation == self.generation && self.conn.is_some() {
                    tracing::warn!(%reason, "lost the master; re-registering");
                    if let Some(conn) = self.conn.take() {
                        self.opts.try_last(&conn.master);
                    }
                    self.backoff = Duration::from_millis(200);
                    // At once, not at the next tick: this is master failover time. Agents
                    // notice a dead master spread over a keep-alive interval, and
                    // `open_session` retries with backoff, so a fleet does not come in lockstep.
                    self.reconnect_at = None;
                    self.start_connect();
                }
            }
            Event::Launched { task_id, result } => self.on_launched(task_id, result).await,
            Event::Exited { task_id, result } => self.on_exited(task_id, result).await,
            Event::ExecutorLaunched { key, result } => self.on_executor_launched(key, result).await,
            Event::ExecutorExited { key, result } => self.on_executor_exited(key, result).await,
            Event::ExecutorConnection { key, stream } => {
                self.on_executor_connection(key, stream).await
            }
            Event::ExecutorFrame { key, conn, msg } => self.on_executor_frame(key, conn, msg).await,
            Event::ExecutorClosed { key, conn, reason } => {
                self.on_executor_closed(key, conn, reason)
            }
            Event::ExecutorKillTimeout { key, task_id } => {
                self.on_executor_kill_timeout(key, task_id)
            }
            Event::ExecutorShutdownTimeout { key, instance } => {
                self.on_executor_shutdown_timeout(key, instance)
            }
        }
    }

    async fn housekeeping(&mut self) {
        let now = Instant::now();
        if now >= self.next_limit_check {
            self.next_limit_check = now + LIMIT_CHECK_INTERVAL;
            // A cut refused earlier (memory still in use) is retried here.
            let keys: Vec<ExecKey> = self.executors.keys().cloned().collect();
            for key in keys {
                if let Err(err) = self.resize_executor(&key).await {
                    tracing::debug!(executor = %key.1, error = %err, "cannot set an executor's limits to its tasks");
                }
            }
            self.check_limits();
        }
        if now >= self.next_gc {
            self.next_gc = now + GC_INTERVAL;
            self.collect_sandboxes();
        }
        if self.conn.is_none() {
            if self.reconnect_at.is_some_and(|t| t <= now) {
                self.reconnect_at = None;
                self.start_connect();
            }
            return;
        }
        let due = self
            .conn
            .as_ref()
            .is_some_and(|c| now.duration_since(c.last_heartbeat) >= c.heartbeat);
        if due {
            if let Some(c) = self.conn.as_mut() {
                c.last_heartbeat = now;
            }
            self.send(AgentToMaster::Heartbeat).await;
            self.send_usage().await;
        }
        self.flush_updates().await;
    }

    /// Removes old sandboxes of ended tasks off the event loop (see `gc.rs`).
    fn collect_sandboxes(&self) {
        let live: std::collections::HashSet<PathBuf> = self
            .tasks
            .values()
            .map(|t| t.sandbox.clone())
            .chain(self.executors.values().map(|e| e.sandbox.clone()))
            .collect();
        let root = self.config.work_dir.join("sandboxes");
        let policy = self.config.gc.clone();
        tokio::task::spawn_blocking(move || {
            let removed = crate::gc::collect(&root, &live, &policy);
            if !removed.is_empty() {
                tracing::info!(count = removed.len(), "removed old sandboxes");
            }
        });
    }

    async fn on_frame(&mut self, frame: ServerFrame) {
        match frame {
            ServerFrame::Agent(msg) => self.on_master(msg).await,
            ServerFrame::NotLeader { leader } => {
                let generation = self.generation;
                let reason = format!("the master is no longer the leader (leader: {leader:?})");
                let _ = self.events.try_send(Event::Lost { generation, reason });
            }
            ServerFrame::Error(e) => {
                tracing::error!(code = ?e.code, message = %e.message, "the master reported an error");
                if e.fatal {
                    let generation = self.generation;
                    let _ = self.events.try_send(Event::Lost {
                        generation,
                        reason: e.message,
                    });
                }
            }
            other => tracing::warn!(frame = ?other, "ignoring a frame not meant for an agent"),
        }
    }

    async fn on_master(&mut self, msg: MasterToAgent) {
        match msg {
            MasterToAgent::Registered { .. } => {}
            MasterToAgent::RunTasks {
                framework,
                executor,
                tasks,
            } => self.run_tasks(framework, executor, tasks).await,
            MasterToAgent::KillTask {
                task_id, grace_ms, ..
            } => {
                self.kill_task(&task_id, grace_ms.map(Duration::from_millis))
                    .await
            }
            MasterToAgent::AcknowledgeUpdate { task_id, uuid, .. } => {
                if self.updates.acknowledge(&task_id, &uuid) {
                    let ended = self
                        .tasks
                        .get(&task_id)
                        .is_some_and(|t| t.state.is_terminal());
                    if ended && self.updates.forget_if_done(&task_id) {
                        if let Some(task) = self.tasks.remove(&task_id) {
                            self.checkpoints
                                .remove(&Self::task_key(&task.framework_id, &task_id));
                            self.finished.push_back((task_id, task.sandbox));
                            if self.finished.len() > MAX_FINISHED_TASKS {
                                self.finished.pop_front();
                            }
                        }
                    } else {
                        self.checkpoint(&task_id);
                    }
                    self.flush_updates().await;
                }
            }
            MasterToAgent::ShutdownFramework { framework_id } => {
                let keys: Vec<ExecKey> = self
                    .executors
                    .keys()
                    .filter(|k| k.0 == framework_id)
                    .cloned()
                    .collect();
                for key in keys {
                    self.shutdown_executor(&key, "its framework is shutting down");
                }
                let ids: Vec<TaskId> = self
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.framework_id == framework_id && t.executor.is_none())
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in ids {
                    self.kill_task(&id, None).await;
                }
            }
            MasterToAgent::FrameworkMessage {
                framework_id,
                executor_id,
                data,
            } => self.on_framework_message((framework_id, executor_id), data),
            MasterToAgent::ReadLog {
                request_id,
                task_id,
                stream,
                offset,
                max_len,
            } => {
                let result = self.read_log(&task_id, stream, offset, max_len);
                self.send(AgentToMaster::LogChunk { request_id, result })
                    .await;
            }
        }
    }
}
