//! Commits: proposal ids, and the continuation of each committed op (what it implies, and the reply
//! its proposer waits for).

use super::*;

impl ProposalId {
    /// The first id of a core whose ids are made under `id_prefix`: the prefix's FNV-1a hash
    /// in the high 24 bits, 1 in the low 40.
    pub(super) fn first(id_prefix: &str) -> ProposalId {
        let mut h: u32 = 0x811c_9dc5;
        for b in id_prefix.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        ProposalId(((u64::from(h) & 0xff_ffff) << 40) | 1)
    }
}

impl Master {
    /// What to do now that proposal `id` committed. Proposals commit in the order proposed, so
    /// those in flight before it never will (the daemon lost them): they are forgotten. An id
    /// this core did not issue (another leader's) has no continuation.
    pub(super) fn take_continuation(&mut self, id: ProposalId) -> Then {
        let Ok(pos) = self.in_flight.binary_search_by_key(&id, |(p, ..)| *p) else {
            return Then::Nothing;
        };
        let mut then = Then::Nothing;
        for (_, t, weight, _) in self.in_flight.drain(..=pos) {
            self.in_flight_weight = self.in_flight_weight.saturating_sub(weight);
            then = t;
        }
        if self.in_flight.is_empty() {
            self.agent_ops_in_flight.clear();
        }
        then
    }

    /// After `op` was applied: its effects, then the operator's `Done` if one waits for it.
    pub(super) fn run_continuation(
        &mut self,
        op: RegistryOp,
        then: Then,
        affected: BTreeSet<AgentId>,
    ) {
        let reply = match &then {
            Then::ReplyDone { session } => Some(*session),
            _ => None,
        };
        self.commit_effects(op, then, affected);
        if let Some(s) = reply {
            self.send(s, ServerFrame::Operator(OperatorReply::Done));
        }
    }

    /// What a committed op means for the soft state and for whom it is news; `then` is its
    /// proposal's continuation (a registration or subscription to finish), `affected` the agents
    /// of a removed framework's tasks.
    pub(super) fn commit_effects(
        &mut self,
        op: RegistryOp,
        then: Then,
        affected: BTreeSet<AgentId>,
    ) {
        match op {
            RegistryOp::AgentAdmitted { agent_id, .. } => {
                if let Then::AgentRegistered { session, reports } = then {
                    self.admission_committed(&agent_id, session, reports);
                } else {
                    self.adopt_agent(&agent_id);
                }
            }
            RegistryOp::AgentUnreachable { agent_id, .. } => {
                self.rescind_agent_offers(&agent_id);
            }
            RegistryOp::AgentMarked { agent_id, mark } => {
                if mark != AgentMark::Active {
                    self.rescind_agent_offers(&agent_id);
                }
                self.request_allocation();
            }
            RegistryOp::AgentRemoved { agent_id } => {
                self.rescind_agent_offers(&agent_id);
                if let Some(s) = self.agent_session(&agent_id) {
                    self.outputs.push_back(Output::Close {
                        session: s,
                        reason: format!("agent {agent_id} was removed"),
                    });
                    self.drop_session(s);
                }
                if let Some((ix, rt)) = self.agents.remove(&agent_id) {
                    self.clear_agent_filters(ix, rt.filters);
                }
                self.timers.cancel(&TimerKey::AgentSilence(agent_id));
            }
            RegistryOp::FrameworkAdded { framework_id, .. } => {
                if let Then::FrameworkSubscribed { session } = then {
                    self.subscription_committed(&framework_id, session);
                } else if self.registry.frameworks().contains_key(&framework_id) {
                    self.adopt_framework(&framework_id);
                }
            }
            RegistryOp::FrameworkRemoved { framework_id, .. } => {
                self.framework_removal_committed(&framework_id, affected);
            }
            RegistryOp::TasksAdded {
                framework_id,
                agent_id,
                executor,
                tasks,
                ..
            } => self.launch_committed(&framework_id, &agent_id, executor, tasks),
            // Checked at the next subscribe or launch; nothing running is affected.
            RegistryOp::PolicySet { .. }
            | RegistryOp::PolicySeeded { .. }
            | RegistryOp::JoinTokenUsed { .. }
            | RegistryOp::JoinTokenRevoked { .. } => {}
            RegistryOp::QuotaSet { .. }
            | RegistryOp::Reserved { .. }
            | RegistryOp::Unreserved { .. } => self.tenancy_committed(&op),
            RegistryOp::TaskStateChanged {
                framework_id,
                status,
            } => {
                let key = TaskKey {
                    framework_id: framework_id.clone(),
                    task_id: status.task_id.clone(),
                };
                if status.state.is_terminal() {
                    self.kill_requested.remove(&key);
                    if let Some(a) = status
                        .agent_id
                        .as_ref()
                        .and_then(|a| self.agents.get_mut(a))
                    {
                        a.usage.remove(&key);
                    }
                    self.request_allocation();
                }
                // Forward what was recorded (apply ignores a change to a task already terminal).
                let recorded = self.registry.task_or_completed(&key).is_some_and(|t| {
                    t.status == status || (t.status.uuid.is_some() && t.status.uuid == status.uuid)
                });
                if recorded {
                    self.forward_status(&framework_id, status);
                }
            }
        }
    }
}
