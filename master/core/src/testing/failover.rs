//! Leader changes in the `Sim`: what a raft failover does to the master core and its clients.
//!
//! A deposed leader's proposals that were not committed may be lost; some may have committed
//! without the old leader ever learning it (the new leader had them in its log). Either way the
//! old leader sent nothing that depended on them. The daemon on the new leader rebuilds its core
//! from the complete replicated registry ([`Master::with_registry`], with a fresh id prefix) and
//! every client reconnects: agents re-register with the tasks they really run and resend their
//! unacknowledged updates, frameworks re-subscribe with their id (and, if they reconcile,
//! reconcile their open tasks).

use super::{framework_info, Sim};
use crate::{limits, Master, RegistryOp, SessionId};
use proto::{ClientFrame, FrameworkCall, ReconcileTask, TaskId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

impl Sim {
    /// A leader change, all at once: [`Sim::depose_leader`] (`committed_unseen` of the pending
    /// proposals commit unseen, the rest are lost), the new leader commits again
    /// (`auto_commit`), then every session reconnects to it, agents first unless
    /// `frameworks_first` ([`Sim::reconnect_after_failover`]). Returns the new session of
    /// every session that reconnected.
    pub fn leader_change(
        &mut self,
        committed_unseen: usize,
        frameworks_first: bool,
    ) -> BTreeMap<SessionId, SessionId> {
        let sessions = self.depose_leader(committed_unseen);
        self.auto_commit = true;
        self.reconnect_after_failover(&sessions, frameworks_first)
    }

    /// Deposes the leader. Of the proposals not yet committed, the first `committed_unseen`
    /// commit but the old leader never learns it (nothing that depends on them goes out: no
    /// `RunTasks`, `Registered`, `Subscribed` or status update); the rest are lost
    /// (`dropped`). Every session of the old leader ends without a word, frames in flight to it
    /// are lost, and a new core takes over the replicated registry with its own id prefix and
    /// wall clock. Returns the sessions that were open, for
    /// [`Sim::reconnect_after_failover`].
    pub fn depose_leader(&mut self, committed_unseen: usize) -> Vec<SessionId> {
        let mut held = std::mem::take(&mut self.held).into_iter();
        for op in held.by_ref().take(committed_unseen) {
            self.commit(op, false);
        }
        self.dropped.extend(held);
        self.held_ids.clear();
        self.inputs.clear();
        let open = std::mem::take(&mut self.open);
        self.peers.retain(|s, _| open.contains(s));
        self.leader_changes += 1;
        let mut config = self.config.clone();
        config.id_prefix = format!("{}L{}", config.id_prefix, self.leader_changes);
        let elapsed = self.now.saturating_duration_since(self.start).as_millis();
        config.wall_clock_at_start_ms = config
            .wall_clock_at_start_ms
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX));
        self.master = Master::with_registry(config, self.now, self.replicated.clone());
        open.into_iter().collect()
    }

    /// Reconnects `sessions` (of a deposed leader) to the new one: agents that are not
    /// partitioned (`heartbeats`) re-register with their tasks and resend their unacknowledged
    /// updates ([`Sim::reconnect_agent`]), frameworks re-subscribe ([`Sim::resubscribe`]),
    /// operators open a new session. Agents first unless `frameworks_first`. A partitioned
    /// agent stays away until the test reconnects it. Returns old session → new session.
    pub fn reconnect_after_failover(
        &mut self,
        sessions: &[SessionId],
        frameworks_first: bool,
    ) -> BTreeMap<SessionId, SessionId> {
        let agents: Vec<SessionId> = sessions
            .iter()
            .copied()
            .filter(|s| self.agents.get(s).is_some_and(|a| a.heartbeats))
            .collect();
        let frameworks: Vec<SessionId> = sessions
            .iter()
            .copied()
            .filter(|s| self.frameworks.contains_key(s))
            .collect();
        let others: Vec<SessionId> = sessions
            .iter()
            .copied()
            .filter(|s| !self.agents.contains_key(s) && !self.frameworks.contains_key(s))
            .collect();
        let mut map = BTreeMap::new();
        let reconnect_agents = |sim: &mut Sim, map: &mut BTreeMap<_, _>| {
            for s in &agents {
                map.insert(*s, sim.reconnect_agent(*s));
            }
        };
        if !frameworks_first {
            reconnect_agents(self, &mut map);
        }
        for s in &frameworks {
            map.insert(*s, self.resubscribe(*s));
        }
        if frameworks_first {
            reconnect_agents(self, &mut map);
        }
        for s in others {
            if let Some(peer) = self.peers.remove(&s) {
                let new = self.connect(peer.role, &peer.name);
                map.insert(s, new);
            }
        }
        map
    }

    /// Re-subscribes a framework on a new session with the `FrameworkInfo` it last subscribed
    /// with and its framework id (a fresh subscription if it never learnt one).
    pub fn resubscribe(&mut self, old: SessionId) -> SessionId {
        let info = match self.frameworks.get(&old) {
            Some(f) => f
                .info
                .clone()
                .unwrap_or_else(|| framework_info(&f.name, &[])),
            None => return old,
        };
        self.reconnect_framework(old, info)
    }

    /// A framework asks for the state of every task it launched and has no terminal state for.
    pub(super) fn reconcile_open_tasks(&mut self, session: SessionId) {
        let Some(fw) = self.frameworks.get(&session) else {
            return;
        };
        let open: BTreeSet<&TaskId> = fw
            .accepted
            .iter()
            .chain(fw.tasks.keys())
            .filter(|t| !fw.terminal.contains_key(*t))
            .collect();
        let open: Vec<ReconcileTask> = open
            .into_iter()
            .map(|t| ReconcileTask {
                task_id: t.clone(),
                agent_id: None,
            })
            .collect();
        for chunk in open.chunks(limits::MAX_RECONCILE_TASKS) {
            let call = FrameworkCall::Reconcile {
                tasks: chunk.to_vec(),
            };
            self.inputs
                .push_back((session, ClientFrame::Framework(call)));
        }
    }

    /// Lets the cluster settle: every pending proposal commits, then virtual time runs past
    /// `agent_reregister_timeout` and `agent_unreachable_timeout`, firing every timer on the
    /// way.
    pub fn quiesce(&mut self) {
        self.auto_commit = true;
        self.pump();
        let c = self.master.config();
        let settle = c.agent_reregister_timeout.max(c.agent_unreachable_timeout)
            + c.allocation_batch
            + Duration::from_secs(1);
        self.advance(settle);
    }

    /// Every committed launch reached an agent (`RunTasks`) or a terminal status for it reached
    /// its framework, unless that framework was removed (then nobody is left to tell). Holds
    /// once the simulation has quiesced ([`Sim::quiesce`]) with every agent and framework back.
    pub fn check_launches_resolved(&self) -> Result<(), String> {
        for (key, agent_id) in &self.launches {
            let ran = self.runs.contains_key(key);
            let told = self.frameworks.values().any(|f| {
                f.framework_id.as_ref() == Some(&key.framework_id)
                    && f.terminal.contains_key(&key.task_id)
            });
            if ran || told || self.replicated.framework_removed(&key.framework_id) {
                continue;
            }
            let state = self
                .replicated
                .task_or_completed(key)
                .map(|t| t.state.name());
            return Err(format!(
                "the committed launch of task {} of framework {} on agent {agent_id} reached no \
                 agent and its framework has no terminal status for it (registry: {state:?})",
                key.task_id, key.framework_id
            ));
        }
        Ok(())
    }

    /// The agents and the registry agree: every task a registered agent runs is live on it in
    /// the registry, and every live task of the registry runs on its agent. Holds once every
    /// agent is back and the cluster has quiesced.
    pub fn check_agents_agree(&self) -> Result<(), String> {
        let registry = self.master.registry();
        let mut running: BTreeSet<(&crate::TaskKey, &proto::AgentId)> = BTreeSet::new();
        for a in self.agents.values() {
            let Some(id) = &a.agent_id else {
                continue;
            };
            for (key, (_, state)) in &a.tasks {
                if state.is_terminal() {
                    continue;
                }
                if registry.task(key).is_none_or(|t| t.agent_id != *id) {
                    return Err(format!(
                        "agent {} runs task {} of framework {}, which the registry does not have \
                         live there ({:?})",
                        a.name,
                        key.task_id,
                        key.framework_id,
                        registry.task_or_completed(key).map(|t| t.state.name())
                    ));
                }
                running.insert((key, id));
            }
        }
        for (framework_id, f) in registry.frameworks() {
            for (task_id, t) in &f.tasks {
                let key = crate::TaskKey {
                    framework_id: framework_id.clone(),
                    task_id: task_id.clone(),
                };
                if !running.contains(&(&key, &t.agent_id)) {
                    return Err(format!(
                        "the registry has task {task_id} of framework {framework_id} {} on agent \
                         {}, which does not run it",
                        t.state.name(),
                        t.agent_id
                    ));
                }
            }
        }
        Ok(())
    }

    /// No task was sent to an agent (`RunTasks`) more than once.
    pub fn check_no_double_run(&self) -> Result<(), String> {
        match self.runs.iter().find(|(_, n)| **n > 1) {
            Some((key, n)) => Err(format!(
                "task {} of framework {} was sent to agents {n} times",
                key.task_id, key.framework_id
            )),
            None => Ok(()),
        }
    }

    /// Proposals lost with deposed leaders that were launches (`TasksAdded`).
    pub fn dropped_launches(&self) -> usize {
        self.dropped
            .iter()
            .filter(|op| matches!(op, RegistryOp::TasksAdded { .. }))
            .count()
    }
}
