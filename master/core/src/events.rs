//! The operator event stream's events, derived from the replicated registry: [`op_events`] says
//! what one committed [`RegistryOp`] changes, given the registry just before it is applied, and
//! [`state_events`] describes a whole registry as `*Added` events (a subscription's starting
//! state). Both are pure: every master applies the same log to the same registry, so every
//! master derives the same events in the same order, which is what lets an event cursor (the
//! log index and the event's place among that entry's events) mean the same event at any master.
//!
//! Invariant (checked by the tests): a client that starts from `state_events(before)` and
//! applies `op_events(before, op)` holds what `state_events(after)` describes. `op_events`
//! therefore mirrors [`Registry::apply`] exactly, including the limits and unknown ids that make
//! an op a no-op (no event), and the tasks an agent's or a framework's removal ends.

use crate::config::limits;
use crate::registry::{AgentEntry, AgentMark, FrameworkEntry, Registry, RegistryOp, TaskEntry};
use proto::{
    AgentId, AgentStatus, ClusterEvent, EventAgent, EventFramework, FrameworkId, FrameworkInfo,
    ResourceUsage, StatusReason, TaskId, TaskState, TaskSummary,
};
use std::collections::BTreeSet;

/// An agent's status as operators see it: unreachable first, else its mark.
pub fn agent_status(reachable: bool, mark: AgentMark) -> AgentStatus {
    if !reachable {
        return AgentStatus::Unreachable;
    }
    match mark {
        AgentMark::Active => AgentStatus::Active,
        AgentMark::Draining => AgentStatus::Draining,
        AgentMark::Deactivated => AgentStatus::Deactivated,
    }
}

/// A task as `corral state` and the event stream show it.
pub fn task_summary(
    framework_id: &FrameworkId,
    t: &TaskEntry,
    usage: Option<ResourceUsage>,
) -> TaskSummary {
    TaskSummary {
        id: t.info.task_id.clone(),
        name: t.info.name.clone(),
        framework_id: framework_id.clone(),
        agent_id: t.agent_id.clone(),
        state: t.state,
        resources: t.info.resources.clone(),
        reason: t.status.reason,
        message: t.status.message.clone(),
        exit_code: t.status.exit_code,
        limitation: t.status.limitation.clone(),
        usage,
    }
}

fn agent_summary(id: &AgentId, a: &AgentEntry) -> EventAgent {
    EventAgent {
        id: id.clone(),
        hostname: a.info.hostname.clone(),
        status: agent_status(a.reachable, a.mark),
        total: a.info.resources.clone(),
        attributes: a.info.attributes.clone(),
        version: a.info.software_version.clone(),
    }
}

fn framework_summary(
    id: &FrameworkId,
    info: &FrameworkInfo,
    principal: Option<&String>,
) -> EventFramework {
    EventFramework {
        id: id.clone(),
        name: info.name.clone(),
        principal: principal.cloned().unwrap_or_default(),
        roles: if info.roles.is_empty() {
            vec!["*".to_owned()]
        } else {
            info.roles.clone()
        },
    }
}

/// The registry as `*Added` events: agents, frameworks, then every task the registry keeps
/// (live ones and the recent terminal ones of live frameworks) in its current state.
pub fn state_events(registry: &Registry) -> Vec<ClusterEvent> {
    let mut events = Vec::new();
    for (id, a) in registry.agents() {
        events.push(ClusterEvent::AgentAdded(agent_summary(id, a)));
    }
    for (id, f) in registry.frameworks() {
        events.push(ClusterEvent::FrameworkAdded(framework_summary(
            id,
            &f.info,
            f.principal.as_ref(),
        )));
    }
    for (id, f) in registry.frameworks() {
        for t in f.completed.iter().chain(f.tasks.values()) {
            events.push(ClusterEvent::TaskAdded(task_summary(id, t, None)));
        }
    }
    events
}

/// What applying `op` to `before` changes, as events in the order they happen.
pub fn op_events(before: &Registry, op: &RegistryOp) -> Vec<ClusterEvent> {
    match op {
        RegistryOp::AgentAdmitted { agent_id, info, .. } => {
            let known = before.agent(agent_id);
            if known.is_none() && before.agents().len() >= limits::MAX_AGENTS {
                return Vec::new();
            }
            let mark = known.map_or(AgentMark::Active, |a| a.mark);
            let summary = EventAgent {
                id: agent_id.clone(),
                hostname: info.hostname.clone(),
                status: agent_status(true, mark),
                total: info.resources.clone().normalized(),
                attributes: info.attributes.clone(),
                version: info.software_version.clone(),
            };
            vec![match known {
                Some(_) => ClusterEvent::AgentUpdated(summary),
                None => ClusterEvent::AgentAdded(summary),
            }]
        }
        RegistryOp::AgentUnreachable { agent_id, .. } => match before.agent(agent_id) {
            Some(a) if a.reachable => {
                let mut s = agent_summary(agent_id, a);
                s.status = AgentStatus::Unreachable;
                vec![ClusterEvent::AgentUpdated(s)]
            }
            _ => Vec::new(),
        },
        RegistryOp::AgentMarked { agent_id, mark } => match before.agent(agent_id) {
            Some(a) if a.mark != *mark => {
                let mut s = agent_summary(agent_id, a);
                s.status = agent_status(a.reachable, *mark);
                vec![ClusterEvent::AgentUpdated(s)]
            }
            _ => Vec::new(),
        },
        RegistryOp::AgentRemoved { agent_id } => agent_removed(before, agent_id),
        RegistryOp::FrameworkAdded {
            framework_id,
            info,
            principal,
        } => {
            if before.framework_removed(framework_id) {
                return Vec::new();
            }
            match before.framework(framework_id) {
                Some(f) => {
                    let principal = principal.as_ref().or(f.principal.as_ref());
                    vec![ClusterEvent::FrameworkUpdated(framework_summary(
                        framework_id,
                        info,
                        principal,
                    ))]
                }
                None if before.frameworks().len() < limits::MAX_FRAMEWORKS => {
                    vec![ClusterEvent::FrameworkAdded(framework_summary(
                        framework_id,
                        info,
                        principal.as_ref(),
                    ))]
                }
                None => Vec::new(),
            }
        }
        RegistryOp::FrameworkRemoved { framework_id, .. } => {
            let Some(f) = before.framework(framework_id) else {
                return Vec::new();
            };
            let mut events = ended_tasks(
                framework_id,
                f,
                f.tasks.keys(),
                TaskState::Killed,
                StatusReason::FrameworkRemoved,
            );
            events.push(ClusterEvent::FrameworkRemoved {
                framework_id: framework_id.clone(),
            });
            events
        }
        RegistryOp::TasksAdded { .. } => tasks_added(before, op),
        RegistryOp::TaskStateChanged {
            framework_id,
            status,
        } => {
            let Some(t) = before
                .framework(framework_id)
                .and_then(|f| f.tasks.get(&status.task_id))
            else {
                return Vec::new();
            };
            let mut summary = task_summary(framework_id, t, None);
            summary.state = status.state;
            summary.reason = status.reason;
            summary.message = status.message.clone();
            summary.exit_code = status.exit_code;
            summary.limitation = status.limitation.clone();
            vec![ClusterEvent::TaskUpdated(summary)]
        }
        // Policy, quotas, reservations and join tokens are not agent, framework or task changes.
        RegistryOp::PolicySet { .. }
        | RegistryOp::PolicySeeded { .. }
        | RegistryOp::QuotaSet { .. }
        | RegistryOp::Reserved { .. }
        | RegistryOp::Unreserved { .. }
        | RegistryOp::JoinTokenUsed { .. }
        | RegistryOp::JoinTokenRevoked { .. } => Vec::new(),
    }
}

/// The agent's tasks end as gone (by operator), then the agent goes.
fn agent_removed(before: &Registry, agent_id: &AgentId) -> Vec<ClusterEvent> {
    let Some(agent) = before.agent(agent_id) else {
        return Vec::new();
    };
    let mut events = Vec::new();
    for key in &agent.tasks {
        if let Some(f) = before.framework(&key.framework_id) {
            events.extend(ended_tasks(
                &key.framework_id,
                f,
                std::iter::once(&key.task_id),
                TaskState::GoneByOperator,
                StatusReason::AgentRemoved,
            ));
        }
    }
    events.push(ClusterEvent::AgentRemoved {
        agent_id: agent_id.clone(),
    });
    events
}

/// `TaskUpdated` to `state` for each of `tasks` the framework holds live.
fn ended_tasks<'a>(
    framework_id: &FrameworkId,
    f: &FrameworkEntry,
    tasks: impl Iterator<Item = &'a TaskId>,
    state: TaskState,
    reason: StatusReason,
) -> Vec<ClusterEvent> {
    tasks
        .filter_map(|id| f.tasks.get(id))
        .map(|t| {
            let mut s = task_summary(framework_id, t, None);
            s.state = state;
            s.reason = Some(reason);
            s.message = None;
            s.exit_code = None;
            s.limitation = None;
            ClusterEvent::TaskUpdated(s)
        })
        .collect()
}

/// The tasks `Registry::apply` adds: on a known agent, for a known framework, new ids only,
/// within the live-task limit.
fn tasks_added(before: &Registry, op: &RegistryOp) -> Vec<ClusterEvent> {
    let RegistryOp::TasksAdded {
        framework_id,
        agent_id,
        tasks,
        ..
    } = op
    else {
        return Vec::new();
    };
    let (Some(_), Some(f)) = (before.agent(agent_id), before.framework(framework_id)) else {
        return Vec::new();
    };
    let mut live = before.live_tasks();
    let mut added: BTreeSet<&TaskId> = BTreeSet::new();
    let mut events = Vec::new();
    for t in tasks {
        if f.tasks.contains_key(&t.task_id)
            || added.contains(&t.task_id)
            || live >= limits::MAX_LIVE_TASKS
        {
            continue;
        }
        added.insert(&t.task_id);
        live += 1;
        events.push(ClusterEvent::TaskAdded(TaskSummary {
            id: t.task_id.clone(),
            name: t.name.clone(),
            framework_id: framework_id.clone(),
            agent_id: agent_id.clone(),
            state: TaskState::Staging,
            resources: t.resources.clone().normalized(),
            reason: None,
            message: None,
            exit_code: None,
            limitation: None,
            usage: None,
        }));
    }
    events
}
