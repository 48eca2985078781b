mod executors;

use crate::checkpoint::{Checkpoints, Loaded, TaskCheckpoint, CHECKPOINT_VERSION};
use crate::resources;
use crate::runtime::{Handle, Runtime};
use crate::updates::{RetryPolicy, StatusUpdates};
use crate::workdir;
use crate::AgentError;
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

/// Reads the node's pressure (PSI) for each usage report. The kernel's support is probed once at
/// start (and logged); a read that fails later is logged once until reads work again.
struct PressureReader {
    available: bool,
    failing: bool,
}

impl PressureReader {
    fn probe() -> PressureReader {
        let dir = std::path::Path::new(isolation::PROC_PRESSURE);
        let available = match isolation::read_node_pressure(dir) {
            Ok(Some(_)) => true,
            Ok(None) => {
                tracing::info!(
                    "the kernel reports no pressure stall information ({} missing or PSI off, \
                     e.g. psi=0): offers carry no node pressure",
                    dir.display()
                );
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read node pressure; will retry with each usage report");
                true
            }
        };
        PressureReader {
            available,
            failing: false,
        }
    }

    fn read(&mut self) -> Option<proto::NodePressure> {
        if !self.available {
            return None;
        }
        match isolation::read_node_pressure(std::path::Path::new(isolation::PROC_PRESSURE)) {
            Ok(p) => {
                self.failing = false;
                p
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(error = %e, "cannot read node pressure; usage reports go without it");
                }
                self.failing = true;
                None
            }
        }
    }
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

fn make_runtime(config: &Config) -> Result<Runtime, AgentError> {
    let backend = match config.isolation {
        IsolationMode::None => return Ok(Runtime::Plain),
        IsolationMode::Auto => isolation::Backend::Auto,
        IsolationMode::Cgroup2 => isolation::Backend::Cgroup2,
        IsolationMode::Cgroup1 => isolation::Backend::Cgroup1,
    };
    let cgroup_root = PathBuf::from("/sys/fs/cgroup");
    let v2 = backend != isolation::Backend::Cgroup1;
    let (cgroup_base, why) = crate::cgroup_driver::resolve(config.cgroup_driver, &cgroup_root, v2)
        .map_err(AgentError::Isolation)?;
    let iso_config = isolation::IsolatorConfig {
        backend,
        cgroup_root,
        cgroup_parent: config.cgroup_parent.clone(),
        cgroup_base: cgroup_base.clone(),
        run_root: config.work_dir.join("containers"),
        sandbox_root: Some(config.work_dir.join("sandboxes")),
        init_program: config.init_program.clone(),
        init_args: config.init_args.clone(),
        default_user: config.default_user.clone(),
        allowed_users: config.allowed_users.clone(),
        allow_root: config.allow_root,
        default_pids_limit: config.default_pids_limit,
    };
    match isolation::Isolator::new(iso_config) {
        Ok(iso) => {
            crate::cgroup_driver::log_layout(cgroup_base.as_deref(), &why, &iso.task_parents());
            // Tasks run as the default user: refuse to start if it cannot reach its sandboxes.
            if let Some(user) = &config.default_user {
                let sandboxes = config.work_dir.join("sandboxes");
                if let Err(e) = workdir::check_reachable(&sandboxes, user) {
                    let _ = iso.remove_task_parents();
                    return Err(AgentError::Unreachable(e));
                }
            }
            Ok(Runtime::Isolated(Box::new(iso)))
        }
        Err(e) if config.isolation == IsolationMode::Auto => {
            tracing::warn!(error = %e, "cgroups cannot be managed here (run as root for isolation); \
                running tasks as plain processes WITHOUT resource limits");
            Ok(Runtime::Plain)
        }
        Err(e) => Err(AgentError::Isolation(e.to_string())),
    }
}

fn load_agent_id(work_dir: &Path) -> Option<AgentId> {
    let raw = std::fs::read_to_string(work_dir.join("agent_id")).ok()?;
    let id = raw.trim();
    (!id.is_empty()).then(|| AgentId::new(id))
}

fn save_agent_id(work_dir: &Path, id: &AgentId) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = work_dir.join("agent_id.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(id.as_str().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, work_dir.join("agent_id"))
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Task ids become directory names: only a safe alphabet is accepted.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// For a task that outlived OOM kills (policy kill-process): how many of its processes the
/// kernel's OOM killer killed at which limit.
pub(crate) fn oom_note(exit: &ExitInfo, memory_limit: u64) -> Option<String> {
    let lim = exit.limitation.as_ref()?;
    if exit.oom_kills == 0 && !exit.oom_killed {
        return None;
    }
    let limit = if lim.limit > 0 {
        lim.limit
    } else {
        memory_limit
    };
    let peak = lim
        .peak
        .map(|p| format!(", peak {}", size(p)))
        .unwrap_or_default();
    let n = exit.oom_kills;
    Some(format!(
        "the OOM killer killed {n} process{} of the task at its memory limit of {}{peak} \
         (OOM policy {})",
        if n == 1 { "" } else { "es" },
        size(limit),
        exit.oom_policy.as_str()
    ))
}

fn size(bytes: u64) -> String {
    proto::format_size(bytes)
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

    fn schedule_reconnect(&mut self) {
        // Backoff with jitter so that a fleet of agents does not reconnect in lockstep.
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        self.reconnect_at = Some(Instant::now() + self.backoff.mul_f64(jitter));
        self.backoff = (self.backoff * 2).min(Duration::from_secs(15));
    }

    fn start_connect(&mut self) {
        self.generation += 1;
        let generation = self.generation;
        let tasks = self
            .tasks
            .values()
            .map(|t| TaskReport {
                framework_id: t.framework_id.clone(),
                task: t.info.clone(),
                state: t.state,
            })
            .collect();
        let register = ClientFrame::Agent(AgentToMaster::Register {
            agent_id: self.agent_id.clone(),
            info: self.info.clone(),
            tasks,
        });
        let opts = self.opts.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let event = match open_session(&opts, &register).await {
                Ok((
                    session,
                    ServerFrame::Agent(MasterToAgent::Registered {
                        agent_id,
                        heartbeat_interval_ms,
                    }),
                )) => Event::Registered {
                    generation,
                    session,
                    agent_id,
                    heartbeat: Duration::from_millis(heartbeat_interval_ms.max(100)),
                },
                Ok((_, other)) => Event::ConnectFailed {
                    generation,
                    error: format!("unexpected answer to registration: {other:?}"),
                },
                Err(e) => Event::ConnectFailed {
                    generation,
                    error: e.to_string(),
                },
            };
            let _ = events.send(event).await;
        });
    }

    async fn on_registered(&mut self, session: Session, agent_id: AgentId, heartbeat: Duration) {
        if self.agent_id.as_ref() != Some(&agent_id) {
            if let Err(e) = save_agent_id(&self.config.work_dir, &agent_id) {
                tracing::error!(error = %e, path = %self.config.work_dir.join("agent_id").display(),
                    "cannot save the agent id; a restart will register as a new agent");
            }
        }
        tracing::info!(%agent_id, master = %session.master, "registered with master");
        self.agent_id = Some(agent_id);
        self.backoff = Duration::from_millis(200);
        let Session {
            _endpoint,
            connection,
            send,
            mut recv,
            master,
        } = session;
        let generation = self.generation;
        let events = self.events.clone();
        tokio::spawn(async move {
            let reason = loop {
                match recv.recv().await {
                    Ok(Some(frame)) => {
                        if events
                            .send(Event::Frame { generation, frame })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) => break "the master closed the session".to_owned(),
                    Err(e) => break e.to_string(),
                }
            };
            let _ = events.send(Event::Lost { generation, reason }).await;
        });
        self.conn = Some(Connected {
            master,
            send,
            connection,
            _endpoint,
            heartbeat,
            last_heartbeat: Instant::now(),
        });
        self.updates.reset_timers();
        self.flush_updates().await;
    }

    async fn send(&mut self, msg: AgentToMaster) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Err(e) = conn.send.send(&ClientFrame::Agent(msg)).await {
            tracing::warn!(error = %e, "cannot write to the master");
            let generation = self.generation;
            let _ = self.events.try_send(Event::Lost {
                generation,
                reason: e.to_string(),
            });
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

    /// Each command task's container usage, and for an executor's live tasks the usage of the
    /// executor's container, which they share (Mesos reports usage per executor too); with the
    /// node's pressure, sent even when no task runs.
    async fn send_usage(&mut self) {
        let mut per_executor: BTreeMap<ExecKey, Option<proto::ResourceUsage>> = BTreeMap::new();
        for (key, e) in &self.executors {
            per_executor.insert(key.clone(), e.handle.as_ref().and_then(|h| h.usage()));
        }
        let tasks: Vec<proto::TaskUsage> = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.state.is_terminal())
            .filter_map(|(id, t)| {
                let usage = match Self::executor_key(t) {
                    Some(key) => per_executor.get(&key).cloned().flatten()?,
                    None => t.handle.as_ref()?.usage()?,
                };
                Some(proto::TaskUsage {
                    framework_id: t.framework_id.clone(),
                    task_id: id.clone(),
                    usage,
                })
            })
            .collect();
        let pressure = self.pressure.read();
        if !tasks.is_empty() || pressure.is_some() {
            self.send(AgentToMaster::Usage { tasks, pressure }).await;
        }
    }

    async fn flush_updates(&mut self) {
        if self.conn.is_none() {
            return;
        }
        for (framework_id, status) in self.updates.due(Instant::now()) {
            self.send(AgentToMaster::StatusUpdate {
                framework_id,
                status,
            })
            .await;
        }
    }

    /// Records a state change and sends it if nothing of its task is in flight.
    async fn update(
        &mut self,
        task_id: &TaskId,
        state: TaskState,
        f: impl FnOnce(&mut TaskStatus),
    ) {
        let Some(task) = self.tasks.get_mut(task_id) else {
            return;
        };
        task.state = state;
        let mut status = TaskStatus::new(task_id.clone(), state, StatusSource::Agent);
        status.agent_id = self.agent_id.clone();
        status.timestamp_ms = wall_ms();
        f(&mut status);
        let message = status.message.clone().unwrap_or_default();
        let framework_id = task.framework_id.clone();
        self.updates.record(
            &framework_id,
            status,
            StatusUuid::new(uuid::Uuid::new_v4().to_string()),
        );
        self.checkpoint(task_id);
        // Logged once durable: what the log says survives an agent crash.
        tracing::info!(task = %task_id, state = %state, %message, "task state");
        self.flush_updates().await;
        if state.is_terminal() {
            // An executor's container shrinks once a task of it has ended.
            let key = self.tasks.get(task_id).and_then(Self::executor_key);
            if let Some(key) = key {
                if let Err(err) = self.resize_executor(&key).await {
                    tracing::warn!(executor = %key.1, error = %err,
                        "cannot lower an executor's limits after its task ended; retried at the next limit check");
                }
            }
        }
    }

    fn task_key(framework_id: &FrameworkId, task_id: &TaskId) -> String {
        format!("{framework_id}.{task_id}")
    }

    /// Writes the task's checkpoint (its state, container and unacknowledged updates).
    fn checkpoint(&self, task_id: &TaskId) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        if !valid_id(task_id.as_str()) || !valid_id(task.framework_id.as_str()) {
            return;
        }
        let (next_seq, pending_updates) = self.updates.pending(task_id);
        let cp = TaskCheckpoint {
            version: CHECKPOINT_VERSION,
            framework: task.framework.clone(),
            info: task.info.clone(),
            state: task.state,
            sandbox: task.sandbox.clone(),
            container: task.handle.as_ref().and_then(|h| h.record()),
            kill_requested: task.kill_requested,
            next_seq,
            pending_updates,
            executor_id: task.executor.clone(),
        };
        if let Err(e) = self
            .checkpoints
            .save(&Self::task_key(&task.framework_id, task_id), &cp)
        {
            tracing::error!(task = %task_id, error = %e, "cannot checkpoint a task; it may be lost if the agent restarts");
        }
    }

    /// Re-attaches to the tasks of the checkpoints on disk (after a restart or upgrade).
    async fn recover(&mut self) {
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
    async fn destroy_orphans(&mut self) {
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

    async fn recover_tasks(&mut self) {
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
    async fn destroy_all(&mut self) {
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

    /// Reads back every container's limits off the event loop; drift is restored and logged.
    fn check_limits(&self) {
        let handles: Vec<(String, Arc<Handle>)> =
            self.tasks
                .iter()
                .filter_map(|(id, t)| t.handle.clone().map(|h| (id.to_string(), h)))
                .chain(self.executors.iter().filter_map(|((_, id), e)| {
                    e.handle.clone().map(|h| (format!("executor {id}"), h))
                }))
                .collect();
        if handles.is_empty() {
            return;
        }
        tokio::task::spawn_blocking(move || {
            for (task_id, handle) in handles {
                match handle.check_limits() {
                    Ok(drifts) => {
                        for d in drifts {
                            tracing::warn!(task = %task_id, file = %d.file.display(), expected = %d.expected,
                                found = %d.found, "a task's limit was changed from outside; restored it");
                        }
                    }
                    Err(e) => tracing::debug!(task = %task_id, error = %e, "cannot check limits"),
                }
            }
        });
    }

    /// Waits for a container's end on a blocking thread until the agent stops (`Handle::watch`)
    /// and sends the event `exited` makes of it.
    pub(crate) fn watch(
        &self,
        handle: Arc<Handle>,
        exited: impl FnOnce(Result<ExitInfo, String>) -> Event + Send + 'static,
    ) {
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(result) = handle.watch(&events) {
                let _ = events.blocking_send(exited(result));
            }
        });
    }

    fn watch_exit(&self, task_id: TaskId, handle: Arc<Handle>) {
        self.watch(handle, |result| Event::Exited { task_id, result });
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

    /// What live tasks and executors hold. It can exceed the total after `--resources` shrank
    /// under running tasks; every use of it saturates.
    fn used_resources(&self) -> Resources {
        let used = self
            .tasks
            .values()
            .filter(|t| !t.state.is_terminal())
            .fold(Resources::default(), |acc, t| acc.add(&t.info.resources));
        self.executors
            .values()
            .fold(used, |acc, e| acc.add(&e.info.resources))
    }

    fn free_resources(&self) -> Resources {
        self.info.resources.saturating_sub(&self.used_resources())
    }

    async fn run_tasks(
        &mut self,
        framework: FrameworkSummary,
        executor: Option<proto::ExecutorInfo>,
        tasks: Vec<TaskInfo>,
    ) {
        if let Some(executor) = executor {
            return self.run_executor_tasks(framework, executor, tasks).await;
        }
        for info in tasks {
            let task_id = info.task_id.clone();
            if self.tasks.contains_key(&task_id) {
                tracing::warn!(task = %task_id, "ignoring a launch of a task that is already known");
                continue;
            }
            let sandbox = self
                .config
                .work_dir
                .join("sandboxes")
                .join(framework.id.as_str())
                .join(task_id.as_str());
            let free = self.free_resources();
            self.tasks.insert(
                task_id.clone(),
                Task {
                    framework: framework.clone(),
                    framework_id: framework.id.clone(),
                    info: info.clone(),
                    state: TaskState::Staging,
                    sandbox: sandbox.clone(),
                    handle: None,
                    kill_requested: false,
                    executor: None,
                },
            );
            let refuse = |reason: StatusReason, message: String| {
                move |s: &mut TaskStatus| {
                    s.reason = Some(reason);
                    s.message = Some(message);
                }
            };
            if !valid_id(task_id.as_str()) || !valid_id(framework.id.as_str()) {
                let msg = "task and framework ids may use only letters, digits, '.', '_' and '-'"
                    .to_owned();
                self.update(
                    &task_id,
                    TaskState::Error,
                    refuse(StatusReason::TaskInvalid, msg),
                )
                .await;
                continue;
            }
            if !free.contains(&info.resources) {
                let msg = format!(
                    "the task asks for {} but this agent has only {} free",
                    info.resources, free
                );
                self.update(
                    &task_id,
                    TaskState::Error,
                    refuse(StatusReason::ResourcesUnavailable, msg),
                )
                .await;
                continue;
            }
            let spec = match self.container_spec(&framework, &info, &sandbox) {
                Ok(spec) => spec,
                Err(msg) => {
                    self.update(
                        &task_id,
                        TaskState::Failed,
                        refuse(StatusReason::ContainerLaunchFailed, msg),
                    )
                    .await;
                    continue;
                }
            };
            self.update(&task_id, TaskState::Starting, |_| {}).await;
            let runtime = self.runtime.clone();
            let events = self.events.clone();
            let id = format!("{}.{}", framework.id, task_id);
            tokio::task::spawn_blocking(move || {
                let result = runtime.launch(&id, &spec);
                let _ = events.blocking_send(Event::Launched { task_id, result });
            });
        }
    }

    fn container_spec(
        &self,
        framework: &FrameworkSummary,
        info: &TaskInfo,
        sandbox: &Path,
    ) -> Result<ContainerSpec, String> {
        let user = info
            .command
            .user
            .clone()
            .or_else(|| self.config.default_user.clone());
        let owner = match (&user, nix::unistd::geteuid().is_root()) {
            (Some(name), true) => nix::unistd::User::from_name(name)
                .ok()
                .flatten()
                .map(|u| (u.uid.as_raw(), u.gid.as_raw())),
            _ => None,
        };
        workdir::create_sandbox(sandbox, owner)?;
        if let (Some(name), Some(_)) = (&user, owner) {
            if let Err(e) = workdir::check_reachable(sandbox, name) {
                tracing::warn!(task = %info.task_id, "{e}");
            }
        }
        let argv = if info.command.shell {
            vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                info.command.value.clone(),
            ]
        } else if info.command.arguments.is_empty() {
            vec![info.command.value.clone()]
        } else {
            info.command.arguments.clone()
        };
        if argv.first().is_none_or(|a| a.is_empty()) {
            return Err("the task has an empty command".to_owned());
        }
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into());
        env.insert("HOME".into(), sandbox.display().to_string());
        env.insert("CORRAL_SANDBOX".into(), sandbox.display().to_string());
        env.insert("CORRAL_TASK_ID".into(), info.task_id.to_string());
        env.insert("CORRAL_FRAMEWORK_ID".into(), framework.id.to_string());
        if let Some(a) = &self.agent_id {
            env.insert("CORRAL_AGENT_ID".into(), a.to_string());
        }
        env.insert("MESOS_SANDBOX".into(), sandbox.display().to_string());
        env.insert("MESOS_TASK_ID".into(), info.task_id.to_string());
        for (k, v) in &info.command.environment {
            env.insert(k.clone(), v.clone());
        }
        Ok(container_spec(
            argv,
            env,
            sandbox,
            user,
            &info.resources,
            &info.container,
            &self.config,
        ))
    }

    async fn on_launched(&mut self, task_id: TaskId, result: Result<Arc<Handle>, String>) {
        match result {
            Ok(handle) => {
                let kill_now = {
                    let Some(task) = self.tasks.get_mut(&task_id) else {
                        return;
                    };
                    task.handle = Some(handle.clone());
                    task.kill_requested
                };
                // The container record is durable before anyone hears the task runs: an agent
                // killed from here on re-attaches to it.
                self.checkpoint(&task_id);
                let pid = handle.pid();
                self.update(&task_id, TaskState::Running, |s| {
                    s.message = Some(format!("running as pid {pid}"));
                })
                .await;
                self.watch_exit(task_id.clone(), handle);
                if kill_now {
                    self.kill_task(&task_id, None).await;
                }
            }
            Err(message) => {
                self.update(&task_id, TaskState::Failed, |s| {
                    s.reason = Some(StatusReason::ContainerLaunchFailed);
                    s.message = Some(message);
                })
                .await;
            }
        }
    }

    async fn on_exited(&mut self, task_id: TaskId, result: Result<ExitInfo, String>) {
        let Some(task) = self.tasks.get_mut(&task_id) else {
            return;
        };
        let handle = task.handle.take();
        let killed = task.kill_requested;
        let memory_limit = task.info.resources.mem_bytes;
        match result {
            Ok(exit) => {
                let (state, reason, message) = if exit.oom_killed {
                    let peak = exit
                        .limitation
                        .as_ref()
                        .and_then(|l| l.peak)
                        .map(|p| format!(" (peak {})", size(p)))
                        .unwrap_or_default();
                    (
                        TaskState::Failed,
                        StatusReason::MemoryLimit,
                        format!(
                            "killed by the kernel: memory limit of {} reached{peak}",
                            size(memory_limit)
                        ),
                    )
                } else if killed {
                    (
                        TaskState::Killed,
                        StatusReason::KilledByFramework,
                        "killed on request".to_owned(),
                    )
                } else if exit.code == Some(0) {
                    (
                        TaskState::Finished,
                        StatusReason::CommandExited,
                        "exited with code 0".to_owned(),
                    )
                } else if let Some(code) = exit.code {
                    (
                        TaskState::Failed,
                        StatusReason::CommandExited,
                        format!("exited with code {code}"),
                    )
                } else {
                    let sig = exit.signal.unwrap_or(0);
                    (
                        TaskState::Failed,
                        StatusReason::CommandExited,
                        format!("killed by signal {sig}"),
                    )
                };
                // Under kill-process the task may end well (or fail on its own) after the OOM
                // killer took some of its processes: the outcome is the main process's, and the
                // status says what the kernel killed (`limitation` carries the counters).
                let message = match oom_note(&exit, memory_limit) {
                    Some(note) if !exit.oom_killed => format!("{message}; {note}"),
                    _ => message,
                };
                self.update(&task_id, state, |s| {
                    s.reason = Some(reason);
                    s.message = Some(message);
                    s.exit_code = exit.code;
                    s.signal = exit.signal;
                    s.limitation = exit.limitation.clone();
                })
                .await;
            }
            Err(message) => {
                self.update(&task_id, TaskState::Failed, |s| {
                    s.reason = Some(StatusReason::ExecutorTerminated);
                    s.message = Some(format!("lost track of the task: {message}"));
                })
                .await;
            }
        }
        if let Some(handle) = handle {
            tokio::task::spawn_blocking(move || destroy(handle));
        }
    }

    async fn kill_task(&mut self, task_id: &TaskId, grace: Option<Duration>) {
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

    fn read_log(
        &self,
        task_id: &TaskId,
        stream: LogStream,
        offset: u64,
        max_len: u32,
    ) -> Result<LogData, String> {
        let (sandbox, ended) = match self.tasks.get(task_id) {
            Some(t) => (t.sandbox.clone(), t.state.is_terminal()),
            None => match self.finished.iter().rev().find(|(id, _)| id == task_id) {
                Some((_, sandbox)) => (sandbox.clone(), true),
                None => return Err(format!("task {task_id} is not known to this agent")),
            },
        };
        let path = sandbox.join(match stream {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        });
        use std::io::{Read, Seek, SeekFrom};
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(LogData {
                    offset,
                    data: Vec::new(),
                    eof: ended,
                });
            }
            Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = offset.min(len);
        file.seek(SeekFrom::Start(start))
            .map_err(|e| format!("cannot seek {}: {e}", path.display()))?;
        let want = u64::from(max_len.min(MAX_LOG_CHUNK)).min(len - start);
        let mut data = Vec::with_capacity(want as usize);
        file.take(want)
            .read_to_end(&mut data)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let eof = ended && start + data.len() as u64 >= len;
        Ok(LogData {
            offset: start,
            data,
            eof,
        })
    }
}

/// Every task gets a private tmpfs here (`FsView::private_shm`).
const SHM: &str = "/dev/shm";
/// Shared directories every task gets a private one of, from its sandbox
/// (`FsView::private_dirs`: `<sandbox>/var-tmp`), like `/tmp`.
const PRIVATE_DIRS: [&str; 1] = ["/var/tmp"];

/// Warns about a work directory whose tasks would share what should be private: a sandbox
/// below /tmp, /var/tmp or /dev/shm is hidden by that private mount, which is then skipped.
fn warn_about_shared_dirs(work_dir: &Path) {
    for d in ["/tmp", SHM].iter().chain(PRIVATE_DIRS.iter()) {
        if work_dir.starts_with(d) {
            tracing::warn!(work_dir = %work_dir.display(), dir = d,
                "the work directory is below {d}: tasks share {d} with the host; use another work directory");
        }
    }
    for d in [SHM].iter().chain(PRIVATE_DIRS.iter()) {
        if !Path::new(d).is_dir() {
            tracing::warn!(dir = d, "{d} is missing: tasks get no private {d}");
        }
    }
}

/// The container for a command: its argv and complete environment, the sandbox with its
/// stdout and stderr files, the user, and limits from the resources (cpu weight and cap,
/// memory, pids) in pid/mount/uts/ipc namespaces (and a network one when asked for). In its
/// mount namespace the agent's work directory is hidden (other tenants' sandboxes, the
/// checkpoints under `meta/`, the init specs) except the sandbox itself, at its own path,
/// `/sys/fs/cgroup` is read-only, and `/dev/shm` (a tmpfs) and `/var/tmp`
/// (`<sandbox>/var-tmp`) are the task's own, like `/tmp`.
pub(crate) fn container_spec(
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    sandbox: &Path,
    user: Option<String>,
    r: &Resources,
    container: &proto::ContainerSettings,
    config: &Config,
) -> ContainerSpec {
    ContainerSpec {
        argv,
        env: env.into_iter().collect(),
        cwd: sandbox.to_path_buf(),
        stdout: sandbox.join("stdout"),
        stderr: sandbox.join("stderr"),
        user,
        cpus: (r.cpus_milli > 0).then(|| r.cpus()),
        cpu_hard_limit: container.cpu_hard_limit.unwrap_or(true),
        memory_bytes: (r.mem_bytes > 0).then_some(r.mem_bytes),
        oom_policy: container.oom_policy.unwrap_or_default(),
        pids_limit: container.pids_limit,
        namespaces: isolation::Namespaces {
            pid: true,
            mount: true,
            uts: true,
            ipc: true,
            network: match container.network {
                proto::NetworkMode::Host => isolation::NetworkNs::Host,
                proto::NetworkMode::Isolated => isolation::NetworkNs::Isolated,
            },
        },
        hostname: Some(config.hostname.clone()),
        view: isolation::FsView {
            hidden: vec![config.work_dir.clone()],
            visible: Vec::new(),
            read_only: vec![PathBuf::from("/sys/fs/cgroup")],
            private_shm: Path::new(SHM).is_dir(),
            private_dirs: PRIVATE_DIRS
                .iter()
                .map(PathBuf::from)
                .filter(|d| d.is_dir())
                .collect(),
        },
    }
}

/// Removes a container's cgroups once nothing else holds its handle.
fn destroy(mut handle: Arc<Handle>) {
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

#[cfg(test)]
mod oom_policy_tests {
    use super::*;

    fn exit(code: Option<i32>, oom_killed: bool, kills: u64) -> ExitInfo {
        ExitInfo {
            code,
            signal: code.is_none().then_some(9),
            oom_killed,
            oom_kills: kills,
            oom_policy: proto::OomPolicy::KillProcess,
            limitation: (kills > 0).then(|| proto::Limitation {
                resource: proto::LimitedResource::Memory,
                limit: 64 << 20,
                peak: Some(64 << 20),
                events: [("oom_kill".to_owned(), kills)].into_iter().collect(),
            }),
        }
    }

    #[test]
    fn the_note_names_the_kills_the_limit_and_the_policy() {
        let note = oom_note(&exit(Some(0), false, 2), 1).expect("a note");
        assert!(note.contains("killed 2 processes"), "{note}");
        assert!(note.contains("64MiB"), "{note}");
        assert!(note.contains("kill-process"), "{note}");
        assert!(oom_note(&exit(Some(0), false, 1), 1)
            .unwrap()
            .contains("killed 1 process of"));
        assert_eq!(oom_note(&exit(Some(0), false, 0), 1), None);
    }
}
