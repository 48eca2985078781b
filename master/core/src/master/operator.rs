//! Operator calls: drain, deactivate, reactivate, teardown, kill, read log (membership calls are
//! the daemon's).

use super::*;
use proto::AccessRule;

impl Master {
    /// The agent did not answer a log request in time: the caller is told.
    pub(super) fn log_request_timed_out(&mut self, id: u64) {
        if let Some(req) = self.log_requests.remove(&id) {
            let msg = format!("agent {} did not answer the log request", req.agent_id);
            self.send(req.session, err(ErrorCode::Unavailable, msg, false));
        }
    }

    pub(super) fn operator_call(&mut self, session: SessionId, call: OperatorCall) {
        let Some(peer) = self.sessions.get(&session).map(|s| s.peer.clone()) else {
            return;
        };
        if self.in_flight_full() {
            self.send(
                session,
                err(ErrorCode::Unavailable, "master is overloaded", false),
            );
            return;
        }
        match call {
            // Membership is the replicated log's business, and the event stream is read from
            // it: the daemon answers these before they reach the core.
            OperatorCall::AddMaster { .. }
            | OperatorCall::RemoveMaster { .. }
            | OperatorCall::SubscribeEvents { .. } => {
                self.send(
                    session,
                    err(
                        ErrorCode::BadRequest,
                        "master membership and the event stream are served by the daemon, not the core",
                        true,
                    ),
                );
            }
            OperatorCall::GetPolicy => {
                let view = proto::PolicyView {
                    rules: self.policy().clone(),
                    configured: self.registry.policy_configured(),
                };
                self.send(session, ServerFrame::Operator(OperatorReply::Policy(view)));
            }
            OperatorCall::SetPolicy { principal, rule } => {
                self.set_policy(session, principal, rule)
            }
            OperatorCall::SetQuota { role, quota } => self.set_quota(session, role, quota),
            OperatorCall::Reserve {
                agent_id,
                role,
                resources,
            } => self.change_reservation(session, agent_id, role, resources, true),
            OperatorCall::Unreserve {
                agent_id,
                role,
                resources,
            } => self.change_reservation(session, agent_id, role, resources, false),
            OperatorCall::GetState => {
                let state = self.snapshot();
                self.send(
                    session,
                    ServerFrame::Operator(OperatorReply::State(Box::new(state))),
                );
            }
            OperatorCall::DrainAgent { agent_id } => {
                self.propose_agent_mark(session, agent_id, AgentMark::Draining)
            }
            OperatorCall::DeactivateAgent { agent_id } => {
                self.propose_agent_mark(session, agent_id, AgentMark::Deactivated)
            }
            OperatorCall::ReactivateAgent { agent_id } => {
                self.propose_agent_mark(session, agent_id, AgentMark::Active)
            }
            OperatorCall::TeardownFramework { framework_id } => {
                self.teardown_framework(session, framework_id)
            }
            OperatorCall::KillTask { task_id } => self.operator_kill(session, &peer, task_id),
            OperatorCall::ReadLog {
                task_id,
                stream,
                offset,
                max_len,
            } => {
                let Some(agent_id) = self.log_agent(session, &peer, &task_id) else {
                    return;
                };
                self.next_log_request += 1;
                let request_id = self.next_log_request;
                self.log_requests.insert(
                    request_id,
                    LogRequest {
                        session,
                        agent_id: agent_id.clone(),
                    },
                );
                self.timers.set(
                    TimerKey::LogRequest(request_id),
                    self.now + limits::LOG_REQUEST_TIMEOUT,
                );
                self.send_agent(
                    &agent_id,
                    MasterToAgent::ReadLog {
                        request_id,
                        task_id,
                        stream,
                        offset,
                        max_len,
                    },
                );
            }
        }
    }

    /// SetPolicy: the rule is checked and proposed; `Done` once it commits. A cluster still on
    /// this master's seed gets the seed first, so one change does not drop the others.
    fn set_policy(&mut self, session: SessionId, principal: String, rule: Option<AccessRule>) {
        if let Err(msg) = crate::policy::check_rule(&principal, rule.as_ref()) {
            self.send(session, err(ErrorCode::BadRequest, msg, false));
            return;
        }
        let known = self.policy().contains_key(&principal);
        if rule.is_some() && !known && self.policy().len() >= limits::MAX_POLICY_PRINCIPALS {
            let msg = format!(
                "the policy has rules for {} principals already",
                limits::MAX_POLICY_PRINCIPALS
            );
            self.send(session, err(ErrorCode::Unavailable, msg, false));
            return;
        }
        if !self.registry.policy_configured() && !self.config.policy_seed.is_empty() {
            let rules = self.config.policy_seed.clone();
            self.propose(RegistryOp::PolicySeeded { rules }, Then::Nothing);
        }
        self.propose(
            RegistryOp::PolicySet { principal, rule },
            Then::ReplyDone { session },
        );
    }

    /// TeardownFramework: the removal is proposed; `Done` once it commits.
    fn teardown_framework(&mut self, session: SessionId, framework_id: FrameworkId) {
        if !self.registry.frameworks().contains_key(&framework_id) {
            self.send(
                session,
                err(
                    ErrorCode::NotFound,
                    format!("framework {framework_id} is unknown"),
                    false,
                ),
            );
            return;
        }
        let at_ms = self.wall_ms();
        self.propose(
            RegistryOp::FrameworkRemoved {
                framework_id,
                at_ms,
            },
            Then::ReplyDone { session },
        );
    }

    /// KillTask: every running task of that id the caller may kill.
    fn operator_kill(&mut self, session: SessionId, peer: &PeerIdentity, task_id: TaskId) {
        let keys: Vec<TaskKey> = self
            .find_tasks(peer, &task_id)
            .into_iter()
            .filter(|k| self.registry.task(k).is_some())
            .collect();
        if keys.is_empty() {
            self.send(
                session,
                err(
                    ErrorCode::NotFound,
                    format!("no running task {task_id} you may kill"),
                    false,
                ),
            );
            return;
        }
        for k in keys {
            let reason = if peer.role == Role::Operator {
                StatusReason::KilledByOperator
            } else {
                StatusReason::KilledByFramework
            };
            self.kill_task(&k.framework_id, k.task_id, None, reason, None);
        }
        self.send(session, ServerFrame::Operator(OperatorReply::Done));
    }

    /// ReadLog: the connected agent that runs (or ran) the task the caller may read, if a log
    /// request may go out now; else the caller is told why not.
    fn log_agent(
        &mut self,
        session: SessionId,
        peer: &PeerIdentity,
        task_id: &TaskId,
    ) -> Option<AgentId> {
        let found = self.find_tasks(peer, task_id).into_iter().find_map(|k| {
            self.registry
                .task_or_completed(&k)
                .or_else(|| self.registry.completed_framework_task(&k))
                .map(|t| t.agent_id.clone())
        });
        let problem = match &found {
            None => Some((
                ErrorCode::NotFound,
                format!("no task {task_id} you may read"),
            )),
            Some(a) if self.agent_session(a).is_none() => Some((
                ErrorCode::Unavailable,
                format!("agent {a} is not connected"),
            )),
            Some(_) if self.log_requests.len() >= limits::MAX_PENDING_LOG_REQUESTS => Some((
                ErrorCode::Unavailable,
                "too many log requests in flight; retry".to_owned(),
            )),
            Some(_) => None,
        };
        if let Some((code, msg)) = problem {
            self.send(session, err(code, msg, false));
            return None;
        }
        found
    }

    /// Drain, deactivate, reactivate: proposes the mark; `Done` once it commits.
    pub(super) fn propose_agent_mark(
        &mut self,
        session: SessionId,
        agent_id: AgentId,
        mark: AgentMark,
    ) {
        if !self.registry.agents().contains_key(&agent_id) {
            self.send(
                session,
                err(
                    ErrorCode::NotFound,
                    format!("agent {agent_id} is unknown"),
                    false,
                ),
            );
            return;
        }
        self.propose(
            RegistryOp::AgentMarked { agent_id, mark },
            Then::ReplyDone { session },
        );
    }

    /// Finds the live (or completed) tasks with this id that `peer` may act on, those of
    /// removed frameworks last.
    pub(super) fn find_tasks(&self, peer: &PeerIdentity, task_id: &TaskId) -> Vec<TaskKey> {
        let may = |principal: &Option<String>| {
            peer.role != Role::Framework || principal.as_deref() == Some(peer.name.as_str())
        };
        let mut out = Vec::new();
        for (fw_id, fw) in self.registry.frameworks() {
            let key = TaskKey {
                framework_id: fw_id.clone(),
                task_id: task_id.clone(),
            };
            if may(&fw.principal) && self.registry.task_or_completed(&key).is_some() {
                out.push(key);
            }
        }
        for c in self.registry.completed_frameworks().iter().rev() {
            let key = TaskKey {
                framework_id: c.framework_id.clone(),
                task_id: task_id.clone(),
            };
            if may(&c.principal)
                && !out.contains(&key)
                && self.registry.completed_framework_task(&key).is_some()
            {
                out.push(key);
            }
        }
        out
    }
}
