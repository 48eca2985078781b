//! The replicated registry: admitted agents, frameworks and tasks, changed only by
//! [`RegistryOp`]s through [`Registry::apply`]. `apply` is pure and total: the same ops in the same
//! order give the same registry on every master, and an op naming an unknown id is a no-op (never
//! a panic), so a follower can replay any log.

use crate::config::limits;
use crate::join_tokens::JoinTokens;
use crate::policy::Rules;
use proto::{
    AccessRule, AgentId, AgentInfo, ExecutorId, ExecutorInfo, FrameworkId, FrameworkInfo, Quota,
    Resources, StatusReason, StatusSource, TaskId, TaskInfo, TaskState, TaskStatus,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The operator's mark on an agent. Reachability is tracked apart from it: a draining agent that
/// goes unreachable and comes back is still draining.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentMark {
    Active,
    /// No new offers; running tasks run to completion.
    Draining,
    /// No new offers.
    Deactivated,
}

/// A task's identity: task ids are unique within a framework.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskKey {
    pub framework_id: FrameworkId,
    pub task_id: TaskId,
}

/// Every change to the registry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RegistryOp {
    /// An agent registered or re-registered (upsert; marks it reachable, keeps its mark).
    AgentAdmitted {
        agent_id: AgentId,
        info: AgentInfo,
        /// The name in the agent's certificate; re-registration must present the same one.
        principal: String,
    },
    /// The agent went silent past its timeout.
    AgentUnreachable {
        agent_id: AgentId,
        at_ms: u64,
    },
    AgentMarked {
        agent_id: AgentId,
        mark: AgentMark,
    },
    /// Forget the agent; its live tasks become TASK_GONE_BY_OPERATOR.
    AgentRemoved {
        agent_id: AgentId,
    },
    /// A framework subscribed or re-subscribed (upsert).
    FrameworkAdded {
        framework_id: FrameworkId,
        info: FrameworkInfo,
        /// The certificate name of the framework; `None` for a framework recovered from an
        /// agent's task report, which the first subscriber with that id claims.
        principal: Option<String>,
    },
    /// The framework is gone: its live tasks become TASK_KILLED (reason FrameworkRemoved), and
    /// it moves with its terminal tasks to the bounded `completed_frameworks`.
    FrameworkRemoved {
        framework_id: FrameworkId,
        at_ms: u64,
    },
    /// One launch operation: tasks (and their executor, for a launch group) on one agent.
    TasksAdded {
        framework_id: FrameworkId,
        agent_id: AgentId,
        role: String,
        executor: Option<ExecutorInfo>,
        tasks: Vec<TaskInfo>,
        at_ms: u64,
    },
    TaskStateChanged {
        framework_id: FrameworkId,
        status: TaskStatus,
    },
    /// An operator set (`Some`) or cleared (`None`: back to the default rule) the authorization
    /// rule of one framework principal. The cluster has a policy from then on.
    PolicySet {
        principal: String,
        rule: Option<AccessRule>,
    },
    /// The policy from a master's config file, for a cluster that has none yet; a no-op once
    /// the cluster has a policy (an operator's changes are not undone by a restart).
    PolicySeeded {
        rules: Rules,
    },
    /// An operator set (`Some`) or removed (`None`) a role's quota.
    QuotaSet {
        role: String,
        quota: Option<Quota>,
    },
    /// An operator reserved resources of an agent for a role (added to what the role has
    /// reserved there dynamically); the core checked that they were unreserved.
    Reserved {
        agent_id: AgentId,
        role: String,
        resources: Resources,
    },
    /// An operator returned dynamically reserved resources to the unreserved pool (floored at
    /// what is reserved).
    Unreserved {
        agent_id: AgentId,
        role: String,
        resources: Resources,
    },
    /// A node joined with a join token (proposed by the daemon, `master/src/join.rs`, after it
    /// checked the token's MAC): recorded if the token has a use left, is not revoked and has
    /// not expired at `at_ms`; the daemon signs only if `key_fingerprint` was recorded.
    JoinTokenUsed {
        token_id: String,
        max_uses: u32,
        expires_ms: u64,
        at_ms: u64,
        key_fingerprint: String,
    },
    /// An operator revoked a join token (`expires_ms` 0: unknown).
    JoinTokenRevoked {
        token_id: String,
        expires_ms: u64,
        at_ms: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentEntry {
    pub info: AgentInfo,
    pub principal: String,
    pub mark: AgentMark,
    pub reachable: bool,
    pub unreachable_since_ms: Option<u64>,
    /// Resources of live tasks and their executors.
    pub used: Resources,
    pub tasks: BTreeSet<TaskKey>,
    pub executors: Vec<ExecutorEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutorEntry {
    pub framework_id: FrameworkId,
    pub executor_id: ExecutorId,
    pub role: String,
    pub resources: Resources,
    pub live_tasks: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameworkEntry {
    pub info: FrameworkInfo,
    pub principal: Option<String>,
    /// Resources of live tasks and executors, per role.
    pub used: BTreeMap<String, Resources>,
    pub tasks: BTreeMap<TaskId, TaskEntry>,
    /// Terminal tasks, oldest first, at most `MAX_COMPLETED_TASKS_PER_FRAMEWORK`.
    pub completed: VecDeque<TaskEntry>,
}

impl FrameworkEntry {
    /// Roles as the framework gave them, `["*"]` when empty.
    pub fn roles(&self) -> Vec<String> {
        roles_or_default(&self.info)
    }

    pub fn partition_aware(&self) -> bool {
        self.info
            .capabilities
            .contains(&proto::FrameworkCapability::PartitionAware)
    }

    pub fn used_total(&self) -> Resources {
        let mut r = Resources::default();
        for u in self.used.values() {
            r.add_assign(u);
        }
        r
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskEntry {
    pub agent_id: AgentId,
    pub role: String,
    pub info: TaskInfo,
    pub executor_id: Option<ExecutorId>,
    pub state: TaskState,
    /// The latest status recorded (a synthesized TASK_STAGING one at launch).
    pub status: TaskStatus,
}

/// A removed framework kept for post-mortems (`corral state`, Mesos's `completed_frameworks`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletedFramework {
    pub framework_id: FrameworkId,
    pub info: FrameworkInfo,
    pub principal: Option<String>,
    /// When the `FrameworkRemoved` op was proposed (wall-clock ms).
    pub removed_at_ms: u64,
    /// Its terminal tasks, oldest first, at most `MAX_COMPLETED_TASKS_PER_FRAMEWORK`; the tasks
    /// the removal killed come last.
    pub tasks: VecDeque<TaskEntry>,
}

impl CompletedFramework {
    /// Roles as the framework gave them, `["*"]` when empty.
    pub fn roles(&self) -> Vec<String> {
        roles_or_default(&self.info)
    }
}

fn roles_or_default(info: &FrameworkInfo) -> Vec<String> {
    if info.roles.is_empty() {
        vec!["*".to_owned()]
    } else {
        info.roles.clone()
    }
}

/// The replicated state. Its fields are private: it changes only through [`Registry::apply`]
/// of a [`RegistryOp`] (the compiler holds everyone else to the accessors below, which lend
/// it out read-only).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    agents: BTreeMap<AgentId, AgentEntry>,
    frameworks: BTreeMap<FrameworkId, FrameworkEntry>,
    /// Removed framework ids, oldest first (bounded).
    removed_frameworks: VecDeque<FrameworkId>,
    /// Removed agent ids, oldest first (bounded).
    removed_agents: VecDeque<AgentId>,
    live_tasks: usize,
    /// Removed frameworks with their terminal tasks, oldest first, at most
    /// `MAX_COMPLETED_FRAMEWORKS`. Absent from snapshots written before it existed.
    #[serde(default)]
    completed_frameworks: VecDeque<CompletedFramework>,
    /// Authorization rules by framework principal (`policy.rs`). Absent from older snapshots.
    #[serde(default)]
    policy: Rules,
    /// Whether the cluster has a policy (set by an operator or seeded from a config file);
    /// until then a master's `MasterConfig::policy_seed` is in force.
    #[serde(default)]
    policy_configured: bool,
    /// Quotas by role (`quota.rs`). Absent from older snapshots.
    #[serde(default)]
    quotas: BTreeMap<String, Quota>,
    /// Dynamic reservations: per agent, per role. Absent from older snapshots. Kept when an
    /// agent is unreachable; dropped with the agent when it is removed.
    #[serde(default)]
    reservations: BTreeMap<AgentId, BTreeMap<String, Resources>>,
    /// Used and revoked join tokens (`join_tokens.rs`). Absent from older snapshots.
    #[serde(default)]
    join_tokens: JoinTokens,
}

impl RegistryOp {
    /// The agent whose admission this op changes (admitted, unreachable, marked or removed).
    pub fn admission_of(&self) -> Option<&AgentId> {
        match self {
            RegistryOp::AgentAdmitted { agent_id, .. }
            | RegistryOp::AgentUnreachable { agent_id, .. }
            | RegistryOp::AgentMarked { agent_id, .. }
            | RegistryOp::AgentRemoved { agent_id } => Some(agent_id),
            _ => None,
        }
    }

    /// The op's share of a raft entry: the tasks it launches, else 1. Entries are bounded in
    /// weight, not in ops, so that an entry of launches of many tasks each stays as small as
    /// one of status updates (a few hundred bytes a unit).
    pub fn weight(&self) -> usize {
        match self {
            RegistryOp::TasksAdded { tasks, .. } => tasks.len().max(1),
            _ => 1,
        }
    }
}

impl Registry {
    /// Used and revoked join tokens.
    pub fn join_tokens(&self) -> &JoinTokens {
        &self.join_tokens
    }

    /// Admitted agents (reachable or not), by id.
    pub fn agents(&self) -> &BTreeMap<AgentId, AgentEntry> {
        &self.agents
    }

    pub fn agent(&self, id: &AgentId) -> Option<&AgentEntry> {
        self.agents.get(id)
    }

    /// Frameworks not removed, by id.
    pub fn frameworks(&self) -> &BTreeMap<FrameworkId, FrameworkEntry> {
        &self.frameworks
    }

    pub fn framework(&self, id: &FrameworkId) -> Option<&FrameworkEntry> {
        self.frameworks.get(id)
    }

    /// Removed framework ids, oldest first (bounded).
    pub fn removed_frameworks(&self) -> &VecDeque<FrameworkId> {
        &self.removed_frameworks
    }

    /// Removed agent ids, oldest first (bounded).
    pub fn removed_agents(&self) -> &VecDeque<AgentId> {
        &self.removed_agents
    }

    /// Tasks not terminal, over all frameworks.
    pub fn live_tasks(&self) -> usize {
        self.live_tasks
    }

    /// Removed frameworks with their terminal tasks, oldest first.
    pub fn completed_frameworks(&self) -> &VecDeque<CompletedFramework> {
        &self.completed_frameworks
    }

    /// Authorization rules by framework principal.
    pub fn policy(&self) -> &Rules {
        &self.policy
    }

    /// Whether the cluster has a policy of its own (else a master's seed is in force).
    pub fn policy_configured(&self) -> bool {
        self.policy_configured
    }

    /// Quotas by role.
    pub fn quotas(&self) -> &BTreeMap<String, Quota> {
        &self.quotas
    }

    /// Dynamic reservations of an agent, by role (empty when it has none).
    pub fn dynamic_reservations(&self, agent: &AgentId) -> Option<&BTreeMap<String, Resources>> {
        self.reservations.get(agent)
    }

    /// Everything reserved on an agent, by role: static (from its `AgentInfo`) and dynamic
    /// together.
    pub fn reservations_of<'a>(
        &'a self,
        id: &AgentId,
        entry: &'a AgentEntry,
    ) -> BTreeMap<&'a str, Resources> {
        let mut out: BTreeMap<&str, Resources> = BTreeMap::new();
        let dynamic = self.reservations.get(id).into_iter().flatten();
        for (role, r) in entry.info.reserved.iter().chain(dynamic) {
            let scalars = Resources::new(r.cpus_milli, r.mem_bytes).with_disk(r.disk_bytes);
            out.entry(role.as_str()).or_default().add_assign(&scalars);
        }
        out
    }

    /// What the live tasks and executors of `role` hold on an agent.
    pub fn used_by_role_on(&self, entry: &AgentEntry, role: &str) -> Resources {
        let mut used = Resources::default();
        for key in &entry.tasks {
            if let Some(t) = self.task(key).filter(|t| t.role == role) {
                used.add_assign(&t.info.resources);
            }
        }
        for x in entry.executors.iter().filter(|x| x.role == role) {
            used.add_assign(&x.resources);
        }
        used
    }

    pub fn task(&self, key: &TaskKey) -> Option<&TaskEntry> {
        self.frameworks
            .get(&key.framework_id)?
            .tasks
            .get(&key.task_id)
    }

    /// A live task, or else the most recent completed one with this id.
    pub fn task_or_completed(&self, key: &TaskKey) -> Option<&TaskEntry> {
        let fw = self.frameworks.get(&key.framework_id)?;
        fw.tasks.get(&key.task_id).or_else(|| {
            fw.completed
                .iter()
                .rev()
                .find(|t| t.info.task_id == key.task_id)
        })
    }

    /// The most recent terminal task with this key of a removed framework (for post-mortems:
    /// `corral state`, `corral logs`).
    pub fn completed_framework_task(&self, key: &TaskKey) -> Option<&TaskEntry> {
        self.completed_frameworks
            .iter()
            .rev()
            .find(|c| c.framework_id == key.framework_id)?
            .tasks
            .iter()
            .rev()
            .find(|t| t.info.task_id == key.task_id)
    }

    pub fn framework_removed(&self, id: &FrameworkId) -> bool {
        self.removed_frameworks.contains(id)
    }

    /// Applies one op. Pure and deterministic; unknown ids make it a no-op.
    pub fn apply(&mut self, op: &RegistryOp) {
        match op {
            RegistryOp::AgentAdmitted {
                agent_id,
                info,
                principal,
            } => self.admit_agent(agent_id, info, principal),
            RegistryOp::AgentUnreachable { agent_id, at_ms } => {
                if let Some(a) = self.agents.get_mut(agent_id) {
                    a.reachable = false;
                    a.unreachable_since_ms = Some(*at_ms);
                }
            }
            RegistryOp::AgentMarked { agent_id, mark } => {
                if let Some(a) = self.agents.get_mut(agent_id) {
                    a.mark = *mark;
                }
            }
            RegistryOp::AgentRemoved { agent_id } => self.remove_agent(agent_id),
            RegistryOp::FrameworkAdded {
                framework_id,
                info,
                principal,
            } => self.add_framework(framework_id, info, principal),
            RegistryOp::FrameworkRemoved {
                framework_id,
                at_ms,
            } => self.remove_framework(framework_id, *at_ms),
            RegistryOp::TasksAdded {
                framework_id,
                agent_id,
                role,
                executor,
                tasks,
                at_ms,
            } => self.add_tasks(
                framework_id,
                agent_id,
                role,
                executor.as_ref(),
                tasks,
                *at_ms,
            ),
            RegistryOp::TaskStateChanged {
                framework_id,
                status,
            } => self.set_task_status(framework_id, status),
            RegistryOp::PolicySet { principal, rule } => {
                self.policy_configured = true;
                match rule {
                    None => {
                        self.policy.remove(principal);
                    }
                    Some(r) => {
                        if self.policy.contains_key(principal)
                            || self.policy.len() < limits::MAX_POLICY_PRINCIPALS
                        {
                            self.policy.insert(principal.clone(), r.clone());
                        }
                    }
                }
            }
            RegistryOp::QuotaSet { role, quota } => match quota {
                None => {
                    self.quotas.remove(role);
                }
                Some(q) => {
                    if self.quotas.contains_key(role) || self.quotas.len() < limits::MAX_QUOTAS {
                        self.quotas.insert(role.clone(), q.clone());
                    }
                }
            },
            RegistryOp::Reserved {
                agent_id,
                role,
                resources,
            } => self.reserve(agent_id, role, resources),
            RegistryOp::Unreserved {
                agent_id,
                role,
                resources,
            } => self.unreserve(agent_id, role, resources),
            RegistryOp::JoinTokenUsed {
                token_id,
                max_uses,
                expires_ms,
                at_ms,
                key_fingerprint,
            } => self.join_tokens.use_token(
                token_id,
                *max_uses,
                *expires_ms,
                *at_ms,
                key_fingerprint,
            ),
            RegistryOp::JoinTokenRevoked {
                token_id,
                expires_ms,
                at_ms,
            } => self.join_tokens.revoke(token_id, *expires_ms, *at_ms),
            RegistryOp::PolicySeeded { rules } => {
                if !self.policy_configured {
                    self.policy_configured = true;
                    self.policy = rules
                        .iter()
                        .take(limits::MAX_POLICY_PRINCIPALS)
                        .map(|(p, r)| (p.clone(), r.clone()))
                        .collect();
                }
            }
        }
    }

    /// An agent admitted anew, or re-admitted with new info: reachable again.
    fn admit_agent(&mut self, agent_id: &AgentId, info: &AgentInfo, principal: &str) {
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.info = info.clone();
            a.info.resources = a.info.resources.clone().normalized();
            a.principal = principal.to_owned();
            a.reachable = true;
            a.unreachable_since_ms = None;
        } else if self.agents.len() < limits::MAX_AGENTS {
            let mut info = info.clone();
            info.resources = info.resources.normalized();
            self.removed_agents.retain(|a| a != agent_id);
            self.agents.insert(
                agent_id.clone(),
                AgentEntry {
                    info,
                    principal: principal.to_owned(),
                    mark: AgentMark::Active,
                    reachable: true,
                    unreachable_since_ms: None,
                    used: Resources::default(),
                    tasks: BTreeSet::new(),
                    executors: Vec::new(),
                },
            );
        }
    }

    fn reserve(&mut self, agent_id: &AgentId, role: &str, resources: &Resources) {
        if !self.agents.contains_key(agent_id) {
            return;
        }
        let roles = self.reservations.entry(agent_id.clone()).or_default();
        if roles.contains_key(role) || roles.len() < limits::MAX_RESERVING_ROLES {
            let scalars = Resources::new(resources.cpus_milli, resources.mem_bytes)
                .with_disk(resources.disk_bytes);
            roles
                .entry(role.to_owned())
                .or_default()
                .add_assign(&scalars);
        }
    }

    fn unreserve(&mut self, agent_id: &AgentId, role: &str, resources: &Resources) {
        let Some(roles) = self.reservations.get_mut(agent_id) else {
            return;
        };
        if let Some(r) = roles.get_mut(role) {
            *r = r.saturating_sub(resources);
            if r.is_empty() {
                roles.remove(role);
            }
        }
        if roles.is_empty() {
            self.reservations.remove(agent_id);
        }
    }

    /// An agent removed for good: its tasks are gone, its id refused from now on.
    fn remove_agent(&mut self, agent_id: &AgentId) {
        let Some(agent) = self.agents.get(agent_id) else {
            return;
        };
        let keys: Vec<TaskKey> = agent.tasks.iter().cloned().collect();
        for key in keys {
            let mut status = TaskStatus::new(
                key.task_id.clone(),
                TaskState::GoneByOperator,
                StatusSource::Master,
            );
            status.agent_id = Some(agent_id.clone());
            status.reason = Some(StatusReason::AgentRemoved);
            self.set_task_status(&key.framework_id, &status);
        }
        self.agents.remove(agent_id);
        self.reservations.remove(agent_id);
        push_bounded(&mut self.removed_agents, agent_id.clone());
    }

    /// A framework added, or re-subscribed with new info (a removed id stays removed).
    fn add_framework(
        &mut self,
        framework_id: &FrameworkId,
        info: &FrameworkInfo,
        principal: &Option<String>,
    ) {
        if self.framework_removed(framework_id) {
            return;
        }
        let mut info = info.clone();
        info.id = Some(framework_id.clone());
        if let Some(f) = self.frameworks.get_mut(framework_id) {
            f.info = info;
            if principal.is_some() {
                f.principal = principal.clone();
            }
        } else if self.frameworks.len() < limits::MAX_FRAMEWORKS {
            self.frameworks.insert(
                framework_id.clone(),
                FrameworkEntry {
                    info,
                    principal: principal.clone(),
                    used: BTreeMap::new(),
                    tasks: BTreeMap::new(),
                    completed: VecDeque::new(),
                },
            );
        }
    }

    /// A framework removed: its live tasks killed, kept among the completed frameworks.
    fn remove_framework(&mut self, framework_id: &FrameworkId, at_ms: u64) {
        let Some(fw) = self.frameworks.get(framework_id) else {
            return;
        };
        let live: Vec<(TaskId, AgentId)> = fw
            .tasks
            .iter()
            .map(|(id, t)| (id.clone(), t.agent_id.clone()))
            .collect();
        for (task_id, agent_id) in live {
            let mut status = TaskStatus::new(task_id, TaskState::Killed, StatusSource::Master);
            status.agent_id = Some(agent_id);
            status.reason = Some(StatusReason::FrameworkRemoved);
            status.timestamp_ms = at_ms;
            self.set_task_status(framework_id, &status);
        }
        if let Some(fw) = self.frameworks.remove(framework_id) {
            if self.completed_frameworks.len() >= limits::MAX_COMPLETED_FRAMEWORKS {
                self.completed_frameworks.pop_front();
            }
            self.completed_frameworks.push_back(CompletedFramework {
                framework_id: framework_id.clone(),
                info: fw.info,
                principal: fw.principal,
                removed_at_ms: at_ms,
                tasks: fw.completed,
            });
        }
        push_bounded(&mut self.removed_frameworks, framework_id.clone());
    }

    fn add_tasks(
        &mut self,
        framework_id: &FrameworkId,
        agent_id: &AgentId,
        role: &str,
        executor: Option<&ExecutorInfo>,
        tasks: &[TaskInfo],
        at_ms: u64,
    ) {
        let (Some(agent), Some(fw)) = (
            self.agents.get_mut(agent_id),
            self.frameworks.get_mut(framework_id),
        ) else {
            return;
        };
        let mut added = 0u64;
        for t in tasks {
            if fw.tasks.contains_key(&t.task_id) || self.live_tasks >= limits::MAX_LIVE_TASKS {
                continue;
            }
            let mut status =
                TaskStatus::new(t.task_id.clone(), TaskState::Staging, StatusSource::Master);
            status.agent_id = Some(agent_id.clone());
            status.executor_id = executor.map(|e| e.executor_id.clone());
            status.timestamp_ms = at_ms;
            let mut info = t.clone();
            info.resources = info.resources.normalized();
            agent.used.add_assign(&info.resources);
            fw.used
                .entry(role.to_owned())
                .or_default()
                .add_assign(&info.resources);
            agent.tasks.insert(TaskKey {
                framework_id: framework_id.clone(),
                task_id: t.task_id.clone(),
            });
            fw.tasks.insert(
                t.task_id.clone(),
                TaskEntry {
                    agent_id: agent_id.clone(),
                    role: role.to_owned(),
                    info,
                    executor_id: executor.map(|e| e.executor_id.clone()),
                    state: TaskState::Staging,
                    status,
                },
            );
            self.live_tasks += 1;
            added += 1;
        }
        if let Some(e) = executor {
            if added == 0 {
                return;
            }
            if let Some(x) = agent
                .executors
                .iter_mut()
                .find(|x| x.framework_id == *framework_id && x.executor_id == e.executor_id)
            {
                x.live_tasks += added;
            } else {
                let resources = e.resources.clone().normalized();
                agent.used.add_assign(&resources);
                fw.used
                    .entry(role.to_owned())
                    .or_default()
                    .add_assign(&resources);
                agent.executors.push(ExecutorEntry {
                    framework_id: framework_id.clone(),
                    executor_id: e.executor_id.clone(),
                    role: role.to_owned(),
                    resources,
                    live_tasks: added,
                });
            }
        }
    }

    fn set_task_status(&mut self, framework_id: &FrameworkId, status: &TaskStatus) {
        let Some(fw) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        let Some(task) = fw.tasks.get_mut(&status.task_id) else {
            return;
        };
        task.state = status.state;
        task.status = status.clone();
        if task.status.agent_id.is_none() {
            task.status.agent_id = Some(task.agent_id.clone());
        }
        if !status.state.is_terminal() {
            return;
        }
        let Some(task) = fw.tasks.remove(&status.task_id) else {
            return;
        };
        self.live_tasks = self.live_tasks.saturating_sub(1);
        if let Some(u) = fw.used.get_mut(&task.role) {
            *u = u.saturating_sub(&task.info.resources);
            if u.is_empty() {
                fw.used.remove(&task.role);
            }
        }
        if let Some(agent) = self.agents.get_mut(&task.agent_id) {
            agent.used = agent.used.saturating_sub(&task.info.resources);
            agent.tasks.remove(&TaskKey {
                framework_id: framework_id.clone(),
                task_id: status.task_id.clone(),
            });
            if let Some(exec_id) = &task.executor_id {
                if let Some(pos) = agent
                    .executors
                    .iter()
                    .position(|x| x.framework_id == *framework_id && x.executor_id == *exec_id)
                {
                    let x = &mut agent.executors[pos];
                    x.live_tasks = x.live_tasks.saturating_sub(1);
                    if x.live_tasks == 0 {
                        let x = agent.executors.remove(pos);
                        agent.used = agent.used.saturating_sub(&x.resources);
                        if let Some(u) = fw.used.get_mut(&x.role) {
                            *u = u.saturating_sub(&x.resources);
                            if u.is_empty() {
                                fw.used.remove(&x.role);
                            }
                        }
                    }
                }
            }
        }
        if fw.completed.len() >= limits::MAX_COMPLETED_TASKS_PER_FRAMEWORK {
            fw.completed.pop_front();
        }
        fw.completed.push_back(task);
    }
}

fn push_bounded<T>(q: &mut VecDeque<T>, v: T) {
    if q.len() >= limits::MAX_REMOVED_FRAMEWORKS {
        q.pop_front();
    }
    q.push_back(v);
}
