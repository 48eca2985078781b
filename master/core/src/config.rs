//! Configuration of the master core and the named limits that bound every map it keeps.

use proto::Resources;
use std::collections::BTreeMap;
use std::time::Duration;

/// Which allocation policy the master runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AllocatorKind {
    /// Weighted DRF across roles, then DRF across the frameworks of a role (Mesos's hierarchical
    /// allocator).
    #[default]
    Drf,
    /// Roles strictly ordered by weight (highest first); DRF among the frameworks of a role.
    StrictPriority,
}

#[derive(Clone, Debug)]
pub struct MasterConfig {
    /// Unique per leader term; prefixes every generated id (`<prefix>-A1`, `<prefix>-F1`, ...).
    pub id_prefix: String,
    /// Outstanding offers are rescinded after this long. `None` disables the timeout (Mesos's
    /// default, which invites hoarding; ours is on).
    pub offer_timeout: Option<Duration>,
    /// Sent to agents in `Registered`: how often they should heartbeat, at least (see
    /// `max_agent_heartbeats_per_second`).
    pub agent_heartbeat_interval: Duration,
    /// The heartbeats per second all agents together may send: a registering agent's interval
    /// is stretched to `agents / this` when that is longer (Nomad's `max_heartbeats_per_second`,
    /// 50 there too), up to 10 minutes.
    pub max_agent_heartbeats_per_second: f64,
    /// An agent that sends no frame for this long is unreachable.
    pub agent_unreachable_timeout: Duration,
    /// After a leader failover, how long a known agent has to re-register before it is marked
    /// unreachable.
    pub agent_reregister_timeout: Duration,
    /// Coalescing window: after a change, allocation runs once this much later, so a burst of
    /// events costs one allocation pass.
    pub allocation_batch: Duration,
    /// Decline/accept filter when the framework gives none (Mesos: 5 s).
    pub default_refuse: Duration,
    /// How often frameworks get `FrameworkEvent::Heartbeat`.
    pub framework_heartbeat_interval: Duration,
    pub allocator: AllocatorKind,
    /// Fair-share weight per role; roles not listed weigh 1.0.
    pub role_weights: BTreeMap<String, f64>,
    /// An agent's free resources are offered only when at least one non-zero quantity here is
    /// met (Mesos `--min_allocatable_resources=cpus:0.01|mem:32`).
    pub min_allocatable: Resources,
    /// Wall-clock milliseconds at `start`, to stamp master-generated statuses.
    pub wall_clock_at_start_ms: u64,
    /// The authorization policy from the master's config file: in force while the registry has
    /// none, and proposed (`RegistryOp::PolicySeeded`) so that it is replicated. Once the
    /// cluster has a policy, operator calls change it and this is ignored.
    pub policy_seed: crate::policy::Rules,
    /// Calls per second (with a burst) each framework principal may make; `None`: unlimited.
    pub framework_rate_limit: Option<crate::RateLimit>,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            id_prefix: "m".to_owned(),
            offer_timeout: Some(Duration::from_secs(30)),
            agent_heartbeat_interval: Duration::from_secs(2),
            max_agent_heartbeats_per_second: 50.0,
            agent_unreachable_timeout: Duration::from_secs(15),
            agent_reregister_timeout: Duration::from_secs(30),
            allocation_batch: Duration::from_millis(10),
            default_refuse: Duration::from_secs(5),
            framework_heartbeat_interval: Duration::from_secs(15),
            allocator: AllocatorKind::Drf,
            role_weights: BTreeMap::new(),
            min_allocatable: Resources::new(10, 32 << 20),
            wall_clock_at_start_ms: 0,
            policy_seed: BTreeMap::new(),
            framework_rate_limit: None,
        }
    }
}

impl MasterConfig {
    /// The weight of a role (1.0 unless configured; non-positive or non-finite weights count
    /// as 1.0).
    pub fn weight(&self, role: &str) -> f64 {
        match self.role_weights.get(role) {
            Some(w) if w.is_finite() && *w > 0.0 => *w,
            _ => 1.0,
        }
    }
}

/// Named limits. A client that exceeds one gets an error; no map grows past these.
pub mod limits {
    /// Registered agents (reachable or not).
    pub const MAX_AGENTS: usize = 100_000;
    /// Registered frameworks (connected or failing over).
    pub const MAX_FRAMEWORKS: usize = 10_000;
    /// Open sessions the core tracks (the daemon caps connections lower).
    pub const MAX_SESSIONS: usize = 200_000;
    /// Non-terminal tasks in the cluster.
    pub const MAX_LIVE_TASKS: usize = 2_000_000;
    /// Terminal tasks kept per framework (live or completed) for reconciliation and `corral state`
    /// (Mesos `--max_completed_tasks_per_framework`).
    pub const MAX_COMPLETED_TASKS_PER_FRAMEWORK: usize = 1_000;
    /// Removed frameworks kept, with their completed tasks, for `corral state` (Mesos
    /// `--max_completed_frameworks`).
    pub const MAX_COMPLETED_FRAMEWORKS: usize = 50;
    /// Removed framework ids remembered (re-subscribing with one is refused).
    pub const MAX_REMOVED_FRAMEWORKS: usize = 1_000;
    /// Offer ids in one accept or decline.
    pub const MAX_OFFERS_PER_CALL: usize = 1_000;
    /// Operations in one accept.
    pub const MAX_OPERATIONS_PER_ACCEPT: usize = 100;
    /// Tasks in one accept (all operations together).
    pub const MAX_TASKS_PER_ACCEPT: usize = 1_000;
    /// Tasks named in one explicit reconcile call.
    pub const MAX_RECONCILE_TASKS: usize = 10_000;
    /// Task reports in one agent registration.
    pub const MAX_TASK_REPORTS: usize = 100_000;
    /// Roles per framework.
    pub const MAX_ROLES_PER_FRAMEWORK: usize = 64;
    /// Framework principals with a policy rule.
    pub const MAX_POLICY_PRINCIPALS: usize = 10_000;
    /// Roles with a quota.
    pub const MAX_QUOTAS: usize = 10_000;
    /// Roles with a dynamic reservation on one agent.
    pub const MAX_RESERVING_ROLES: usize = 64;
    /// Roles, and users, in one policy rule.
    pub const MAX_POLICY_NAMES: usize = 1_000;
    /// Length of role names, framework names, ids chosen by clients.
    pub const MAX_NAME_LEN: usize = 256;
    /// Acknowledged update uuids remembered (one per task) to answer an agent's resend of an
    /// update whose acknowledgement it lost.
    pub const MAX_ACKED_REMEMBERED: usize = 1_000_000;
    /// Launches timed from commit to TASK_RUNNING at once; more go untimed.
    pub const MAX_TIMED_LAUNCHES: usize = 100_000;
    /// Launch latencies kept for the daemon to take (`Master::take_launch_latencies`); more
    /// are dropped until it takes them.
    pub const MAX_LAUNCH_LATENCIES: usize = 4_096;
    /// Outstanding `ReadLog` requests awaiting an agent's `LogChunk`.
    pub const MAX_PENDING_LOG_REQUESTS: usize = 1_024;
    /// Registry operations proposed and not yet committed. Past it, registrations and
    /// operator changes are refused as overloaded and status updates wait for the agent's
    /// resend. Allocation stops well before (`ALLOCATION_HOLD_WEIGHT`), so only a burst of
    /// status updates from many running tasks at once comes near it.
    pub const MAX_IN_FLIGHT_PROPOSALS: usize = 65_536;
    /// Admission control for launches: an Accept whose tasks would take the registry changes
    /// in flight, weighed by the tasks they launch (`RegistryOp::weight`), past this is
    /// refused (its tasks TASK_DROPPED or TASK_LOST, reason `MasterOverloaded`; the framework
    /// launches again on a later offer). Three quarters of `MAX_IN_FLIGHT_PROPOSALS`: the
    /// status updates of what was launched (one in flight per task) always find room, and
    /// are never dropped for overload while launches are queued ahead of them.
    pub const MAX_LAUNCH_WEIGHT_IN_FLIGHT: usize = MAX_IN_FLIGHT_PROPOSALS / 4 * 3;
    /// Admission control: while registry changes of this weight are in flight (tasks
    /// launched, else one per change), counting offers made and not answered yet (for at
    /// most `ANSWER_GRACE`) as launches about to be, allocation passes wait and no new
    /// offers are made (offers already out may still be accepted). Launches come only from offers, so a
    /// master whose registry pipeline falls behind stops taking new work and drains the
    /// status updates of the work it has, instead of queueing launches without bound ahead
    /// of them. Passes resume when half of this is left.
    pub const ALLOCATION_HOLD_WEIGHT: usize = 4_096;
    /// Admission control: while the oldest registry change in flight has waited this long
    /// for its commit, allocation passes wait too (until it is half that). A launch waits
    /// for three commits in a row (the launch, `STARTING`, `RUNNING`), so this bounds the
    /// queueing each adds when the master is saturated, whatever the pipeline's depth;
    /// the weight above bounds its size.
    pub const ALLOCATION_HOLD_LAG: std::time::Duration = std::time::Duration::from_millis(200);
    /// Agents one allocation pass offers, at most; the next pass starts where this one
    /// stopped, so every agent with free resources is offered within a few passes. With the
    /// hold above, this bounds the launches a burst of accepts can put in flight: without
    /// it, one pass at 50,000 agents made 50,000 offers, 200 frameworks accepted them at
    /// once, and the status updates that followed found the registry pipeline full.
    pub const MAX_AGENTS_PER_PASS: usize = 4_096;
    /// Admission control counts an offer toward `ALLOCATION_HOLD_WEIGHT` until its framework
    /// answers it, for at most this long (`unanswered.rs`).
    pub use crate::unanswered::ANSWER_GRACE;
    /// Offers per `FrameworkEvent::Offers` frame.
    pub const MAX_OFFERS_PER_EVENT: usize = 1_000;
    /// A `ReadLog` unanswered for this long is failed.
    pub const LOG_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
    /// `refuse_seconds` is capped at a year, as in Mesos.
    pub const MAX_REFUSE_SECONDS: f64 = 31_536_000.0;
}
