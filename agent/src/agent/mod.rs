//! The agent daemon's glue around `agent_core::AgentCore`, which decides everything: this
//! module turns real events (the master's frames, container launches and exits, executor
//! connections, timers) into core calls and executes the core's actions **in order** (a
//! checkpoint is written and fsynced before the next action, so a status update is durable
//! before it is sent). The loop (`run`) selects over one closed `Event` enum, the core's next
//! deadline and shutdown. What is I/O stays here, one concern per file:
//! - `session.rs`: the connection to the masters (dialling, the reader, a bounded outbox whose
//!   writer task sends, so no handler awaits the network);
//! - `records.rs`: the core's task/executor records as checkpoint files (sandbox, container);
//! - `recovery.rs`: checkpoints and found containers handed to the core, the orphan sweep;
//! - `launch.rs`: command tasks' containers (spec, launch, exit watchers, kills, destroy);
//! - `spec.rs`: command tasks' container specs (what the task sees of the host);
//! - `limits.rs`: limit drift checks and executor resizes off the loop;
//! - `logs.rs`: `ReadLog` serving; `config.rs`: runtime, agent id, node pressure;
//! - `metrics.rs`: Prometheus metrics (`--metrics-listen`);
//! - `executors/`: custom executors' containers, sockets and connections (see its doc).

mod config;
mod executors;
mod launch;
mod limits;
mod logs;
mod metrics;
mod records;
mod recovery;
mod session;
mod spec;

use crate::checkpoint::Checkpoints;
use crate::error::RuntimeError;
use crate::resources;
use crate::runtime::{Handle, Runtime};
use crate::workdir;
use crate::AgentError;
use agent_core::{Action, AgentCore, CoreConfig, ExecKey, Now, RetryPolicy, RuntimeFailure};
use executors::Executor;
use isolation::{ContainerSpec, ExitInfo};
use proto::{AgentId, AgentInfo, FrameworkSummary, Resources, Role, ServerFrame, TaskId, TaskInfo};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use transport::Identity;

use config::{load_agent_id, make_runtime, save_agent_id, PressureReader};
use launch::destroy;
use metrics::AgentMetrics;
use session::{client_options, ClientOptions, Connected};
use spec::{container_spec, warn_about_shared_dirs};

/// Events from connection, reader and task-watcher tasks to the agent loop.
const EVENT_QUEUE: usize = 4096;
/// Largest log chunk served per request.
const MAX_LOG_CHUNK: u32 = 1 << 20;
/// The longest the loop sleeps when the core wants no timer.
const IDLE_WAKE: Duration = Duration::from_secs(3600);

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
    /// Serve Prometheus metrics at `/metrics` on this address (`--metrics-listen`).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

enum Event {
    /// Boxed: a new session carries its streams, far larger than the other events.
    Session(Box<session::SessionEvent>),
    Launched {
        task_id: TaskId,
        result: Result<Arc<Handle>, RuntimeError>,
    },
    Exited {
        task_id: TaskId,
        result: Result<ExitInfo, RuntimeError>,
    },
    Executor(executors::ExecutorEvent),
    LimitsChecked {
        restored: u64,
    },
}

struct Agent {
    config: Config,
    opts: ClientOptions,
    runtime: Arc<Runtime>,
    core: AgentCore,
    /// Command tasks' containers.
    handles: BTreeMap<TaskId, Arc<Handle>>,
    executors: BTreeMap<ExecKey, Executor>,
    /// Containers of executors the core forgot, until `DestroyExecutor`.
    ended_executors: BTreeMap<ExecKey, Arc<Handle>>,
    checkpoints: Checkpoints,
    executor_checkpoints: Checkpoints,
    events: mpsc::Sender<Event>,
    conn: Option<Connected>,
    /// A registration to log once its agent id is saved (`drive`).
    registered: Option<(AgentId, String)>,
    pressure: PressureReader,
    metrics: AgentMetrics,
    /// When each kill in flight was asked for (the kill latency ends at the exit).
    kills: BTreeMap<TaskId, Instant>,
    /// Task launches handed to a blocking thread and not yet answered (`Event::Launched`).
    launching: usize,
}

/// How long a stopping agent with `cleanup_on_exit` waits for launches in flight, so that it
/// can destroy their containers too.
const LAUNCHES_AT_STOP: Duration = Duration::from_secs(10);

/// The time for the core: the monotonic clock for timers, the wall clock for timestamps.
fn now() -> Now {
    let unix_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Now {
        at: Instant::now(),
        unix_ms,
    }
}

/// What the node offers: measured (isolation's view or procfs), with `--resources` overrides
/// and the system's reservation taken off; and the part of it `--resources` reserves for
/// roles (`cpus(batch):2`).
fn measure(
    config: &Config,
    runtime: &Runtime,
) -> Result<(Resources, BTreeMap<String, Resources>), AgentError> {
    let (cpus, mem) = match runtime {
        Runtime::Isolated(iso) => match iso.node_resources(&Default::default()) {
            Ok(n) => (n.cpus_milli, n.mem_bytes),
            Err(e) => {
                tracing::warn!(error = %e, "cannot measure node via the isolation layer; using procfs");
                resources::procfs_cpus_and_memory()
            }
        },
        Runtime::Plain => resources::procfs_cpus_and_memory(),
    };
    let (overrides, reserved) = match &config.resources {
        Some(spec) => {
            let (total, reserved) =
                proto::parse_reserved_resources(spec).map_err(|e| AgentError::Resources {
                    spec: spec.clone(),
                    reason: e.to_string(),
                })?;
            (Some((total, resources::named_resources(spec))), reserved)
        }
        None => (None, BTreeMap::new()),
    };
    let total = resources::node_resources(
        cpus,
        mem,
        &config.work_dir,
        overrides.as_ref().map(|(r, _)| r),
        overrides.as_ref().map(|(_, n)| n.as_slice()).unwrap_or(&[]),
        config.reserved.as_ref(),
    );
    Ok((total, reserved))
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
    let metrics_listener = config.metrics_listen.map(telemetry::bind).transpose()?;
    let runtime = make_runtime(&config)?;
    if matches!(runtime, Runtime::Isolated(_)) {
        warn_about_shared_dirs(&config.work_dir);
    }
    let (total, reserved) = measure(&config, &runtime)?;
    let agent_id = load_agent_id(&config.work_dir);
    tracing::info!(resources = %total, runtime = %runtime.describe(), agent_id = ?agent_id.as_ref().map(|a| a.to_string()),
        work_dir = %config.work_dir.display(), "agent starting");
    let info = AgentInfo {
        hostname: config.hostname.clone(),
        resources: total,
        attributes: config.attributes.clone(),
        version: proto::ProtocolVersion::CURRENT,
        software_version: env!("CARGO_PKG_VERSION").to_owned(),
        reserved,
    };
    let opts = client_options(&config);
    let checkpoints = Checkpoints::open(&config.work_dir)?;
    let executor_checkpoints = Checkpoints::open_executors(&config.work_dir)?;
    let (events_tx, mut events_rx) = mpsc::channel(EVENT_QUEUE);
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let core_config = CoreConfig {
        info,
        agent_id,
        retry: config.retry.clone(),
        kill_grace: config.kill_grace,
        default_pids_limit: config.default_pids_limit,
        uuid_prefix: run_id,
        seed: rand::random(),
    };
    let mut agent = Agent {
        core: AgentCore::new(core_config, now()),
        handles: BTreeMap::new(),
        executors: BTreeMap::new(),
        ended_executors: BTreeMap::new(),
        checkpoints,
        executor_checkpoints,
        config,
        opts,
        runtime: Arc::new(runtime),
        events: events_tx,
        conn: None,
        registered: None,
        pressure: PressureReader::probe(),
        metrics: AgentMetrics::new(),
        kills: BTreeMap::new(),
        launching: 0,
    };
    let metrics_server =
        metrics_listener.map(|l| tokio::spawn(telemetry::serve(l, agent.metrics.served())));
    agent.recover().await;
    tokio::pin!(shutdown);
    loop {
        let wake = agent
            .core
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + IDLE_WAKE);
        tokio::select! {
            event = events_rx.recv() => {
                let Some(event) = event else { break };
                agent.handle_event(event).await;
            }
            _ = tokio::time::sleep_until(wake) => agent.core.handle_timer(now()),
            _ = &mut shutdown => break,
        }
        agent.drive().await;
    }
    if agent.config.cleanup_on_exit {
        agent.finish_launches(&mut events_rx).await;
    }
    agent.stop().await;
    if let Some(m) = metrics_server {
        m.abort();
    }
    Ok(())
}

impl Agent {
    async fn handle_event(&mut self, event: Event) {
        match event {
            Event::Session(e) => self.on_session(*e),
            Event::Launched { task_id, result } => self.on_launched(task_id, result),
            Event::Exited { task_id, result } => self.on_exited(task_id, result),
            Event::Executor(e) => self.on_executor_event(e).await,
            Event::LimitsChecked { restored } => self.core.handle_limits_checked(restored),
        }
    }

    /// Executes the core's actions in order until it has none.
    async fn drive(&mut self) {
        while let Some(action) = self.core.poll_action() {
            self.execute(action).await;
        }
        self.metrics.observe_core(&self.core);
        if let Some((agent_id, master)) = self.registered.take() {
            // Logged once the agent id is durable: whoever reads this line may kill the agent
            // and expect its successor to come back under the same id.
            tracing::info!(%agent_id, %master, "registered with master");
        }
    }

    async fn execute(&mut self, action: Action) {
        match action {
            Action::Connect { attempt, register } => self.start_connect(attempt, register),
            Action::Send(msg) => self.send(msg),
            Action::SaveAgentId(id) => {
                if let Err(e) = save_agent_id(&self.config.work_dir, &id) {
                    tracing::error!(error = %e, path = %self.config.work_dir.join("agent_id").display(),
                        "cannot save the agent id; a restart will register as a new agent");
                }
            }
            Action::CheckpointTask(record) => self.checkpoint_task(&record),
            Action::RemoveTask {
                framework_id,
                task_id,
            } => self
                .checkpoints
                .remove(&records::task_key(&framework_id, &task_id)),
            Action::CheckpointExecutor(record) => self.checkpoint_executor_record(&record),
            Action::RemoveExecutor(key) => self.forget_executor(&key),
            Action::Launch { framework, task } => self.launch(&framework, task),
            Action::Kill { task_id, grace } => self.kill(&task_id, grace),
            Action::Destroy { task_id } => {
                if let Some(handle) = self.handles.remove(&task_id) {
                    tokio::task::spawn_blocking(move || destroy(handle));
                }
            }
            Action::LaunchExecutor {
                framework,
                info,
                limits,
            } => self.launch_executor(framework, info, limits),
            Action::ResizeExecutor { key, limits } => self.resize_executor(key, limits).await,
            Action::HandTask { key, task } => self.hand_task(&key, task),
            Action::ToExecutor { key, msg } => self.send_executor(&key, msg),
            Action::CloseExecutorConnection { key } => self.close_executor_connection(&key),
            Action::KillExecutor { key, grace } => self.kill_executor_container(&key, grace),
            Action::DestroyExecutor { key } => self.destroy_executor(&key),
            Action::CheckLimits { containers } => self.check_limits(containers),
            Action::ReportUsage { always } => self.send_usage(always),
            Action::CollectGarbage => self.collect_sandboxes(),
        }
    }

    /// Removes old sandboxes of ended tasks off the event loop (see `gc.rs`).
    fn collect_sandboxes(&self) {
        let live: std::collections::HashSet<PathBuf> = self
            .core
            .tasks()
            .map(|t| records::sandbox(&self.config.work_dir, t.framework_id, t.task_id, t.executor))
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

    /// Before a stop with `cleanup_on_exit`: takes in the answers of launches in flight, so that
    /// their containers are destroyed with the others (a task launched just before the stop
    /// would otherwise outlive the agent). Other events are dropped: the agent is stopping.
    async fn finish_launches(&mut self, events: &mut mpsc::Receiver<Event>) {
        let deadline = tokio::time::Instant::now() + LAUNCHES_AT_STOP;
        while self.launching > 0 {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(Event::Launched { task_id, result })) => self.on_launched(task_id, result),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    tracing::warn!(
                        launching = self.launching,
                        "stopping with launches unanswered"
                    );
                    return;
                }
            }
        }
    }

    /// The agent stops: the session closes; tasks keep running unless `cleanup_on_exit`.
    async fn stop(&mut self) {
        self.close_session();
        if self.config.cleanup_on_exit {
            self.destroy_all().await;
        } else {
            tracing::info!(
                running = self.core.tasks().count(),
                "agent stopping; tasks keep running"
            );
        }
        if let Runtime::Isolated(iso) = self.runtime.as_ref() {
            if self.handles.is_empty() && self.executors.is_empty() {
                // Nothing runs: leave no empty cgroup behind. Fails harmlessly while containers exist.
                let _ = iso.remove_task_parents();
            }
        }
    }
}
