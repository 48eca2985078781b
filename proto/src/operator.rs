//! Operator calls and their answers: what `corral state`, the web page, the Mesos gateway
//! and the other operator commands ask the master, one call per stream, and the cluster state
//! it answers with. Part of the protocol of [`crate::messages`], re-exported there.

use crate::ids::*;
use crate::messages::*;
use crate::resources::Resources;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OperatorCall {
    GetState,
    /// Stop offering the agent's resources and let its tasks finish.
    DrainAgent {
        agent_id: AgentId,
    },
    /// Stop offering the agent's resources.
    DeactivateAgent {
        agent_id: AgentId,
    },
    ReactivateAgent {
        agent_id: AgentId,
    },
    TeardownFramework {
        framework_id: FrameworkId,
    },
    /// Allowed to operators and to the framework that owns the task.
    KillTask {
        task_id: TaskId,
    },
    /// Allowed to operators and to the framework that owns the task.
    ReadLog {
        task_id: TaskId,
        stream: LogStream,
        offset: u64,
        max_len: u32,
    },
    /// Add a master to the replicated registry (it catches up as a learner, then votes).
    /// Handled by the leading master's daemon, not its core.
    AddMaster {
        id: u64,
        /// The name in the new master's certificate.
        name: String,
        /// `host:port` it listens on.
        address: String,
    },
    /// Remove a master from the replicated registry.
    RemoveMaster {
        id: u64,
    },
    /// The authorization policy in force (`OperatorReply::Policy`).
    GetPolicy,
    /// Sets the rule of one framework principal; `None` puts it back on the default rule.
    /// Replicated; `Done` once committed.
    SetPolicy {
        principal: String,
        rule: Option<crate::AccessRule>,
    },
    /// Sets (`Some`) or removes (`None`) a role's quota. Replicated; `Done` once committed.
    SetQuota {
        role: String,
        quota: Option<crate::Quota>,
    },
    /// Reserves unreserved resources of an agent for a role (a dynamic reservation).
    /// Replicated; `Done` once committed.
    Reserve {
        agent_id: AgentId,
        role: String,
        resources: Resources,
    },
    /// Returns dynamically reserved resources of an agent to the unreserved pool.
    Unreserve {
        agent_id: AgentId,
        role: String,
        resources: Resources,
    },
    /// Follow agent, framework and task changes (`crate::events`): answered with
    /// `OperatorReply::EventsSubscribed`, then `OperatorReply::Events` batches on the same
    /// stream. `after`: resume after this cursor (the last event processed) instead of starting
    /// from the current state.
    SubscribeEvents {
        #[serde(default)]
        after: Option<crate::EventCursor>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OperatorReply {
    State(Box<ClusterState>),
    Done,
    Log(LogData),
    Policy(crate::PolicyView),
    EventsSubscribed(Box<crate::EventsSubscribed>),
    /// Events in stream order, each after the previous one's cursor.
    Events(Vec<crate::StampedEvent>),
}

/// The cluster as `corral state` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub agents: Vec<AgentState>,
    pub frameworks: Vec<FrameworkState>,
    pub tasks: Vec<TaskSummary>,
    pub masters: MastersState,
    #[serde(default)]
    pub roles: Vec<RoleState>,
    /// Removed frameworks kept for post-mortems, oldest first (a bounded number, as Mesos's
    /// `completed_frameworks`); their terminal tasks are in `tasks`.
    #[serde(default)]
    pub completed_frameworks: Vec<CompletedFrameworkState>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentStatus {
    Active,
    Draining,
    Deactivated,
    Unreachable,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    pub id: AgentId,
    pub hostname: String,
    pub status: AgentStatus,
    pub total: Resources,
    pub used: Resources,
    pub offered: Resources,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub version: String,
    /// The agent's latest reported pressure (see [`Offer::pressure`]).
    #[serde(default)]
    pub pressure: Option<NodePressure>,
    /// Reserved resources per role, static and dynamic together (part of `total`).
    #[serde(default)]
    pub reserved: BTreeMap<String, Resources>,
    /// The dynamic part of `reserved` (an operator's `corral reserve`).
    #[serde(default)]
    pub reserved_dynamic: BTreeMap<String, Resources>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameworkState {
    pub id: FrameworkId,
    pub name: String,
    pub principal: String,
    pub roles: Vec<String>,
    pub connected: bool,
    /// The framework's dominant share of the cluster (allocated + offered).
    pub dominant_share: f64,
    pub used: Resources,
    pub offered: Resources,
    #[serde(default)]
    pub suppressed: bool,
}

/// A framework that was removed (torn down, past its failover timeout, or a finished
/// `corral run`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletedFrameworkState {
    pub id: FrameworkId,
    pub name: String,
    pub principal: String,
    pub roles: Vec<String>,
    /// Wall-clock milliseconds when it was removed.
    pub removed_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoleState {
    pub name: String,
    pub weight: f64,
    pub dominant_share: f64,
    /// Longest time a framework of this role with pending work has gone without an offer.
    pub starved_ms: u64,
    /// The role's quota, if it has one.
    #[serde(default)]
    pub quota: Option<crate::Quota>,
    /// Resources of the role's live tasks and executors (every framework of the role).
    #[serde(default)]
    pub used: Resources,
    /// Offered to the role and not yet answered, plus launches not yet committed: with `used`,
    /// what counts against its quota.
    #[serde(default)]
    pub offered: Resources,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    pub id: TaskId,
    pub name: String,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub state: TaskState,
    pub resources: Resources,
    #[serde(default)]
    pub reason: Option<StatusReason>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub limitation: Option<Limitation>,
    #[serde(default)]
    pub usage: Option<ResourceUsage>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MastersState {
    /// The leading master's address, if known.
    pub leader: Option<String>,
    pub term: u64,
    pub members: Vec<MasterMember>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MasterMember {
    pub id: u64,
    pub address: String,
    pub is_leader: bool,
    /// Log entries behind the leader, when known.
    #[serde(default)]
    pub lag: Option<u64>,
}
