//! Every message of the protocol.
//!
//! A client (agent, framework, operator) opens a bidirectional QUIC stream to the master and sends
//! [`ClientFrame`]s; the master answers on the same stream with [`ServerFrame`]s. Agents and
//! frameworks keep one long-lived stream (a session); operators open one stream per call. The
//! master checks every frame against the role in the peer's certificate.
//!
//! Compatibility rule: fields added within a major version are `Option` or `#[serde(default)]`,
//! and decoders ignore fields they do not know. Never reorder or rename fields or variants.

use crate::ids::*;
use crate::resources::Resources;
use crate::ProtocolVersion;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

// Operator calls and the cluster state live in `operator.rs`; they are part of the same protocol.
pub use crate::operator::*;

// ---------------------------------------------------------------------------------------------
// Envelopes
// ---------------------------------------------------------------------------------------------

/// Every frame a client sends to a master.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientFrame {
    Agent(AgentToMaster),
    Framework(FrameworkCall),
    Operator(OperatorCall),
    /// Opens a stream on which the master says which master leads, at once and again at every
    /// change ([`ServerFrame::Leader`]), until the client closes it. Any role may watch. Clients
    /// watch every master but the one their session is with, so a failover reaches them as
    /// soon as a new leader is elected instead of after an idle timeout.
    WatchLeader,
    /// Join tokens and certificates: answered by the master daemon (which holds the CA key),
    /// not its core. One call per stream.
    Certificates(CertificateCall),
}

/// Every frame a master sends to a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServerFrame {
    Agent(MasterToAgent),
    Framework(FrameworkEvent),
    Operator(OperatorReply),
    /// This master does not lead; the client should reconnect to `leader` (host:port) if known.
    NotLeader {
        leader: Option<String>,
    },
    /// The request was refused; the stream is closed after this frame when `fatal`.
    Error(ErrorReply),
    /// On a [`ClientFrame::WatchLeader`] stream: the master this one believes leads (itself once
    /// it serves as the leader), `host:port` as clients dial it, and the raft term of that
    /// belief; `None` while no leader is known.
    Leader {
        leader: Option<String>,
        term: u64,
    },
    /// The answer to a join or a renewal.
    Certificate(IssuedCertificate),
}

/// Calls about certificates (see `certs::join` for the design).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CertificateCall {
    /// From a node without a certificate (the only call such a connection may make): sign a
    /// certificate for the key of `csr_pem` with the role (and name, if it binds one) of
    /// `token`; `name` is the node's choice otherwise.
    Join {
        token: String,
        name: String,
        csr_pem: String,
    },
    /// From an agent, framework or operator: sign a new certificate for the key of `csr_pem`
    /// with the role and name of the certificate this connection presented.
    Renew { csr_pem: String },
    /// From an operator: refuse every later join with the token whose id is `token_id`.
    RevokeJoinToken { token_id: String },
}

/// A certificate the master signed, and the CA certificate that signed it (PEM).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IssuedCertificate {
    pub cert_pem: String,
    pub ca_pem: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default)]
    pub fatal: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The peer's certificate role does not allow this call.
    Forbidden,
    /// The frame decoded but the request is invalid.
    BadRequest,
    /// The frame did not decode, was truncated, or exceeded the maximum size.
    MalformedFrame,
    /// An id in the request is unknown to the master.
    NotFound,
    /// The master is overloaded or shutting down; retry later.
    Unavailable,
    /// The peer speaks a protocol version the master cannot serve.
    UnsupportedVersion,
    /// The client read an event stream more slowly than the cluster changed and fell behind
    /// what the master keeps; it was cut off rather than buffered without end.
    TooSlow,
}

// ---------------------------------------------------------------------------------------------
// Agents
// ---------------------------------------------------------------------------------------------

/// What an agent tells the master about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub hostname: String,
    /// Resources the agent offers to frameworks (after its reservation for the system).
    pub resources: Resources,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub version: ProtocolVersion,
    /// Software version of the agent binary, for display.
    #[serde(default)]
    pub software_version: String,
    /// Static reservations (`--resources 'cpus(batch):2'`): the part of `resources` set aside
    /// for each role.
    #[serde(default)]
    pub reserved: BTreeMap<String, Resources>,
}

/// A task the agent is running (or ran and has not had acknowledged), sent on re-registration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    pub framework_id: FrameworkId,
    pub task: TaskInfo,
    pub state: TaskState,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AgentToMaster {
    /// First frame of an agent session. `agent_id` is `None` on the very first registration and
    /// the id the master gave otherwise (re-registration keeps the id and the running tasks).
    Register {
        agent_id: Option<AgentId>,
        info: AgentInfo,
        #[serde(default)]
        tasks: Vec<TaskReport>,
    },
    Heartbeat,
    /// A task status change, to be forwarded to the framework. Resent until acknowledged.
    StatusUpdate {
        framework_id: FrameworkId,
        status: TaskStatus,
    },
    /// Periodic resource usage of the agent's tasks, and the node's pressure (PSI) when the
    /// kernel reports it.
    Usage {
        tasks: Vec<TaskUsage>,
        #[serde(default)]
        pressure: Option<NodePressure>,
    },
    /// An answer to [`MasterToAgent::ReadLog`].
    LogChunk {
        request_id: u64,
        result: Result<LogData, String>,
    },
    /// A message from an executor to its framework (best effort).
    ExecutorMessage {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    },
}

// RunTasks is large and the others small; messages are built once and encoded at once, so the
// size difference costs nothing worth a Box on the wire types.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MasterToAgent {
    Registered {
        agent_id: AgentId,
        heartbeat_interval_ms: u64,
    },
    /// Run tasks. With `executor` set, the tasks are handed to that custom executor (launched
    /// first if not running) and share its container; otherwise each task runs under the
    /// built-in command executor.
    RunTasks {
        framework: FrameworkSummary,
        executor: Option<ExecutorInfo>,
        tasks: Vec<TaskInfo>,
    },
    KillTask {
        framework_id: FrameworkId,
        task_id: TaskId,
        /// Overrides the task's own kill grace period.
        grace_ms: Option<u64>,
    },
    /// The framework acknowledged this status update; the agent stops resending it.
    AcknowledgeUpdate {
        framework_id: FrameworkId,
        task_id: TaskId,
        uuid: StatusUuid,
    },
    ShutdownFramework {
        framework_id: FrameworkId,
    },
    FrameworkMessage {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    },
    ReadLog {
        request_id: u64,
        task_id: TaskId,
        stream: LogStream,
        offset: u64,
        max_len: u32,
    },
}

/// What the agent needs to know about a framework to run its tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameworkSummary {
    pub id: FrameworkId,
    pub name: String,
    #[serde(default)]
    pub principal: String,
}

// ---------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandInfo {
    /// With `shell`, `value` runs under `/bin/sh -c`; otherwise `value` is the program and
    /// `arguments` its argv (argv\[0\] included).
    pub shell: bool,
    pub value: String,
    #[serde(default)]
    pub arguments: Vec<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// The user to run as; the agent's default user when `None`.
    #[serde(default)]
    pub user: Option<String>,
}

impl CommandInfo {
    pub fn shell(cmd: impl Into<String>) -> Self {
        CommandInfo {
            shell: true,
            value: cmd.into(),
            arguments: Vec::new(),
            environment: BTreeMap::new(),
            user: None,
        }
    }

    pub fn argv(argv: Vec<String>) -> Self {
        CommandInfo {
            shell: false,
            value: argv.first().cloned().unwrap_or_default(),
            arguments: argv,
            environment: BTreeMap::new(),
            user: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkMode {
    /// The host's network namespace.
    #[default]
    Host,
    /// A new network namespace with only loopback.
    Isolated,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerSettings {
    #[serde(default)]
    pub network: NetworkMode,
    /// Maximum number of processes; the agent's default when `None`.
    #[serde(default)]
    pub pids_limit: Option<u64>,
    /// Hard-cap the cpu at the task's cpus (cpu.max) in addition to the weight. Default true.
    #[serde(default)]
    pub cpu_hard_limit: Option<bool>,
    /// What the kernel's OOM killer takes when the container hits its memory limit;
    /// [`OomPolicy::KillTask`] when `None`. For an executor's container, the executor's setting
    /// applies (its tasks' settings do not change the shared container).
    #[serde(default)]
    pub oom_policy: Option<OomPolicy>,
}

/// What an OOM kill at a container's memory limit ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OomPolicy {
    /// The container is one OOM unit: any OOM kill ends every process of it and the task
    /// fails with `MemoryLimit` (cgroup v2 `memory.oom.group = 1`; on v1 the agent kills the
    /// rest of the container when the kernel reports an OOM).
    #[default]
    KillTask,
    /// Only the process the kernel chose dies (`memory.oom.group = 0`). The task goes on while
    /// its main process lives; its terminal status still carries the OOM counters
    /// (`limitation`) when any process was OOM-killed. Fits multi-process servers (php-fpm,
    /// nginx workers) whose master replaces a lost worker.
    KillProcess,
}

impl OomPolicy {
    /// `kill-task` / `kill-process`, as `corral run --oom-policy` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            OomPolicy::KillTask => "kill-task",
            OomPolicy::KillProcess => "kill-process",
        }
    }
}

impl std::str::FromStr for OomPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kill-task" => Ok(OomPolicy::KillTask),
            "kill-process" => Ok(OomPolicy::KillProcess),
            other => Err(format!(
                "unknown OOM policy {other:?}: expected kill-task or kill-process"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub task_id: TaskId,
    pub name: String,
    pub agent_id: AgentId,
    pub resources: Resources,
    pub command: CommandInfo,
    #[serde(default)]
    pub container: ContainerSettings,
    /// SIGTERM to SIGKILL grace period on kill; the agent's default when `None`.
    #[serde(default)]
    pub kill_grace_ms: Option<u64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A custom executor: a program the agent launches under its own limits and hands tasks to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutorInfo {
    pub executor_id: ExecutorId,
    pub command: CommandInfo,
    pub resources: Resources,
    #[serde(default)]
    pub container: ContainerSettings,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskState {
    Staging,
    Starting,
    Running,
    Killing,
    Finished,
    Failed,
    Killed,
    Error,
    Lost,
    Dropped,
    Unreachable,
    Gone,
    GoneByOperator,
    Unknown,
}

impl TaskState {
    /// Terminal states never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Error
                | TaskState::Lost
                | TaskState::Dropped
                | TaskState::Gone
                | TaskState::GoneByOperator
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Killing => "TASK_KILLING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Error => "TASK_ERROR",
            TaskState::Lost => "TASK_LOST",
            TaskState::Dropped => "TASK_DROPPED",
            TaskState::Unreachable => "TASK_UNREACHABLE",
            TaskState::Gone => "TASK_GONE",
            TaskState::GoneByOperator => "TASK_GONE_BY_OPERATOR",
            TaskState::Unknown => "TASK_UNKNOWN",
        }
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusSource {
    Master,
    Agent,
    Executor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusReason {
    CommandExited,
    /// Killed by the kernel's OOM killer at the memory limit.
    MemoryLimit,
    /// Could not fork: the pids limit was reached.
    PidsLimit,
    KilledByFramework,
    KilledByOperator,
    Reconciliation,
    AgentUnreachable,
    AgentRemoved,
    AgentRestarted,
    FrameworkRemoved,
    InvalidOffers,
    TaskInvalid,
    TaskUnauthorized,
    ExecutorTerminated,
    ContainerLaunchFailed,
    /// No agent in the cluster could ever fit the task.
    ResourcesUnavailable,
    AgentDraining,
    /// The master refused a launch for want of capacity (too many registry changes in
    /// flight); the framework may launch again on a later offer.
    MasterOverloaded,
}

/// Why a limit stopped a task: the OOM forensics that users of Mesos and Nomad asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Limitation {
    pub resource: LimitedResource,
    /// The limit in force (bytes for memory, a count for pids).
    pub limit: u64,
    /// Peak usage seen (bytes for memory), when the kernel reports it.
    #[serde(default)]
    pub peak: Option<u64>,
    /// Raw kernel counters, e.g. memory.events (`oom`, `oom_kill`, `max`, `high`) on v2 or
    /// `failcnt`/`under_oom` on v1.
    #[serde(default)]
    pub events: BTreeMap<String, u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitedResource {
    Memory,
    Pids,
    Cpu,
    Disk,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub task_id: TaskId,
    pub state: TaskState,
    pub source: StatusSource,
    #[serde(default)]
    pub agent_id: Option<AgentId>,
    #[serde(default)]
    pub executor_id: Option<ExecutorId>,
    #[serde(default)]
    pub reason: Option<StatusReason>,
    #[serde(default)]
    pub message: Option<String>,
    /// The exit code, for a process that exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The signal that killed the process, if one did.
    #[serde(default)]
    pub signal: Option<i32>,
    #[serde(default)]
    pub limitation: Option<Limitation>,
    /// Set on updates that must be acknowledged (from agents); `None` on master-generated
    /// reconciliation answers.
    #[serde(default)]
    pub uuid: Option<StatusUuid>,
    /// Per-task sequence number assigned by the agent, increasing with each update.
    #[serde(default)]
    pub seq: u64,
    /// Wall-clock milliseconds since the epoch when the state changed.
    #[serde(default)]
    pub timestamp_ms: u64,
}

impl TaskStatus {
    pub fn new(task_id: TaskId, state: TaskState, source: StatusSource) -> Self {
        TaskStatus {
            task_id,
            state,
            source,
            agent_id: None,
            executor_id: None,
            reason: None,
            message: None,
            exit_code: None,
            signal: None,
            limitation: None,
            uuid: None,
            seq: 0,
            timestamp_ms: 0,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceUsage {
    pub cpu_user_us: u64,
    pub cpu_system_us: u64,
    #[serde(default)]
    pub cpu_throttled_us: u64,
    pub mem_current_bytes: u64,
    #[serde(default)]
    pub mem_peak_bytes: Option<u64>,
    pub pids_current: u64,
}

/// How much the node's work stalls for lack of CPU, memory or IO (Linux pressure stall
/// information, `/proc/pressure/{cpu,memory,io}`), averaged over the last 10 seconds.
///
/// Fixed-point like [`Resources`]: each value is hundredths of a percent of wall-clock time
/// (`41` = 0.41 %, `10000` = 100 %), exactly the kernel's two decimals. `some` is the share of
/// time at least one runnable task was stalled, `full` the share all non-idle tasks were
/// (throughput lost). System-wide CPU `full` is not reported: the kernel sets it to zero or
/// leaves it out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePressure {
    #[serde(default)]
    pub cpu_some_avg10: u32,
    #[serde(default)]
    pub memory_some_avg10: u32,
    #[serde(default)]
    pub memory_full_avg10: u32,
    #[serde(default)]
    pub io_some_avg10: u32,
    #[serde(default)]
    pub io_full_avg10: u32,
}

impl NodePressure {
    /// The largest value any field can have: 100 %.
    pub const MAX: u32 = 10_000;

    /// Every value clamped to [`NodePressure::MAX`] (a peer's message is not trusted).
    pub fn clamped(self) -> NodePressure {
        let c = |v: u32| v.min(Self::MAX);
        NodePressure {
            cpu_some_avg10: c(self.cpu_some_avg10),
            memory_some_avg10: c(self.memory_some_avg10),
            memory_full_avg10: c(self.memory_full_avg10),
            io_some_avg10: c(self.io_some_avg10),
            io_full_avg10: c(self.io_full_avg10),
        }
    }

    /// A value as a percentage, `"0.41"`.
    pub fn percent(v: u32) -> String {
        format!("{}.{:02}", v / 100, v % 100)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskUsage {
    pub framework_id: FrameworkId,
    pub task_id: TaskId,
    pub usage: ResourceUsage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogStream {
    Stdout,
    Stderr,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogData {
    pub offset: u64,
    pub data: Vec<u8>,
    /// The task has ended and `offset + data.len()` is the end of the file.
    pub eof: bool,
}

// ---------------------------------------------------------------------------------------------
// Frameworks
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrameworkCapability {
    /// Receives TASK_UNREACHABLE / TASK_GONE / TASK_UNKNOWN instead of TASK_LOST.
    PartitionAware,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameworkInfo {
    /// Set when re-subscribing after a failover.
    pub id: Option<FrameworkId>,
    pub name: String,
    /// Roles the framework consumes resources as; `["*"]` when empty.
    #[serde(default)]
    pub roles: Vec<String>,
    /// How long the master keeps the framework's tasks after its connection drops.
    #[serde(default)]
    pub failover_timeout_ms: u64,
    #[serde(default)]
    pub capabilities: Vec<FrameworkCapability>,
    #[serde(default)]
    pub version: ProtocolVersion,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Filters {
    /// Do not re-offer the declined resources of that agent to this framework for this long.
    /// Default 5 s (Mesos's default); capped at a year.
    #[serde(default)]
    pub refuse_seconds: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OfferOperation {
    Launch {
        tasks: Vec<TaskInfo>,
    },
    /// Launch tasks atomically under one (custom) executor, sharing its container.
    LaunchGroup {
        executor: ExecutorInfo,
        tasks: Vec<TaskInfo>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReconcileTask {
    pub task_id: TaskId,
    #[serde(default)]
    pub agent_id: Option<AgentId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FrameworkCall {
    /// First frame of a framework session.
    Subscribe {
        info: FrameworkInfo,
    },
    Accept {
        offer_ids: Vec<OfferId>,
        operations: Vec<OfferOperation>,
        #[serde(default)]
        filters: Option<Filters>,
    },
    Decline {
        offer_ids: Vec<OfferId>,
        #[serde(default)]
        filters: Option<Filters>,
    },
    /// Resume offers (for the given roles, or all) and clear filters.
    Revive {
        #[serde(default)]
        roles: Vec<String>,
    },
    /// Stop offers (for the given roles, or all).
    Suppress {
        #[serde(default)]
        roles: Vec<String>,
    },
    Kill {
        task_id: TaskId,
        #[serde(default)]
        agent_id: Option<AgentId>,
        #[serde(default)]
        grace_ms: Option<u64>,
    },
    Acknowledge {
        agent_id: AgentId,
        task_id: TaskId,
        uuid: StatusUuid,
    },
    /// Explicit with task ids, implicit (all of the framework's tasks) when empty.
    Reconcile {
        tasks: Vec<ReconcileTask>,
    },
    Message {
        agent_id: AgentId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    },
    /// The framework is done: kill its tasks and forget it.
    Teardown,
    Heartbeat,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub id: OfferId,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub hostname: String,
    pub resources: Resources,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The role the resources are allocated to.
    #[serde(default)]
    pub role: String,
    /// The agent's latest reported pressure (soft state: `None` when the kernel has no PSI, the
    /// agent has not reported yet, or the master took office since).
    #[serde(default)]
    pub pressure: Option<NodePressure>,
    /// True when the resources are reserved for `role` on this agent (static or dynamic): only
    /// frameworks of that role are offered them.
    #[serde(default)]
    pub reserved: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FrameworkEvent {
    Subscribed {
        framework_id: FrameworkId,
        heartbeat_interval_ms: u64,
    },
    Offers {
        offers: Vec<Offer>,
    },
    Rescind {
        offer_id: OfferId,
    },
    Update {
        status: TaskStatus,
    },
    Message {
        agent_id: AgentId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    },
    /// An agent was lost (its tasks get their own updates).
    AgentLost {
        agent_id: AgentId,
    },
    /// A call failed; when `fatal` the framework has been removed.
    Error {
        message: String,
    },
    Heartbeat,
}

// ---------------------------------------------------------------------------------------------
// Custom executors (the local channel between an agent and the executors it launched)
// ---------------------------------------------------------------------------------------------
//
// An agent listens on one unix socket per custom executor (path in the executor's environment,
// `CORRAL_EXECUTOR_SOCKET`) and accepts only the executor's own container on it. Frames use the
// same codec as the network protocol. The executor sends `Subscribe` first (again after every
// reconnection, e.g. when the agent restarted), then task updates; the agent answers
// `Subscribed`, hands it tasks, and acknowledges each update once it is checkpointed.

/// What an agent sends to one of its custom executors.
// LaunchTask is large and the others small; see MasterToAgent.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AgentToExecutor {
    /// The answer to [`ExecutorToAgent::Subscribe`].
    Subscribed {
        agent_id: Option<AgentId>,
        framework_id: FrameworkId,
        executor_id: ExecutorId,
    },
    /// Run this task. `sandbox` is the task's own directory inside the executor's sandbox
    /// (owned by the executor's user), where its stdout and stderr files belong.
    LaunchTask { task: TaskInfo, sandbox: String },
    /// Kill this task: SIGTERM, then SIGKILL after the grace period. The agent kills the whole
    /// container if no terminal update arrives in time.
    KillTask {
        task_id: TaskId,
        #[serde(default)]
        grace_ms: Option<u64>,
    },
    /// The agent has recorded the executor's update of `task_id` to `state`; the executor need
    /// not resend it after a reconnection.
    Acknowledged { task_id: TaskId, state: TaskState },
    /// A framework's message to the executor (best effort).
    Message { data: Vec<u8> },
    /// Kill every task and exit within `grace_ms`; the agent kills the container after that.
    Shutdown { grace_ms: u64 },
}

/// A task state change reported by a custom executor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutorUpdate {
    pub task_id: TaskId,
    pub state: TaskState,
    #[serde(default)]
    pub reason: Option<StatusReason>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
}

/// What a custom executor sends to its agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ExecutorToAgent {
    /// First frame of every connection. After a reconnection `tasks` lists the tasks the
    /// executor was given and still runs (or has not had a terminal update acknowledged for),
    /// and `unacknowledged` the updates the agent may not have recorded.
    Subscribe {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        #[serde(default)]
        tasks: Vec<TaskId>,
        #[serde(default)]
        unacknowledged: Vec<ExecutorUpdate>,
    },
    Update(ExecutorUpdate),
    /// A message to the executor's framework (best effort).
    Message {
        data: Vec<u8>,
    },
}
