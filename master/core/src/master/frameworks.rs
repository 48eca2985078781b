//! Frameworks: subscribe, the calls other than Accept (decline, revive, suppress, kill,
//! acknowledge, reconcile, message, teardown), heartbeats, failover timeouts and removal, status
//! forwarding.

use super::*;

impl Master {
    /// Every connected framework gets a heartbeat, every `framework_heartbeat_interval`.
    pub(super) fn send_heartbeats(&mut self) {
        let sessions: Vec<SessionId> = self.frameworks.values().filter_map(|f| f.session).collect();
        for s in sessions {
            self.send(s, ServerFrame::Framework(FrameworkEvent::Heartbeat));
        }
        self.timers.set(
            TimerKey::Heartbeat,
            self.now + self.config.framework_heartbeat_interval,
        );
    }

    pub(super) fn framework_call(&mut self, session: SessionId, call: FrameworkCall) {
        let bound = match self.sessions.get(&session).map(|s| &s.kind) {
            Some(SessionKind::Framework(id)) => Some(id.clone()),
            _ => None,
        };
        if let FrameworkCall::Subscribe { info } = call {
            if bound.is_some() {
                self.bad_request(session, "framework session is already subscribed");
                return;
            }
            self.subscribe(session, info);
            return;
        }
        let Some(fw) = bound else {
            self.bad_request(
                session,
                format!(
                    "{} before Subscribe on this session",
                    call_name(&ClientFrame::Framework(call))
                ),
            );
            return;
        };
        if self.frameworks.get(&fw).and_then(|f| f.session) != Some(session) {
            // Subscribed on this session but not committed yet, or replaced.
            self.bad_request(session, "framework subscription is not complete");
            return;
        }
        match call {
            FrameworkCall::Subscribe { .. } | FrameworkCall::Heartbeat => {}
            FrameworkCall::Accept {
                offer_ids,
                operations,
                filters,
            } => self.accept(&fw, offer_ids, operations, filters),
            FrameworkCall::Decline { offer_ids, filters } => {
                self.decline(session, &fw, offer_ids, filters)
            }
            FrameworkCall::Revive { roles } => self.revive(&fw, roles),
            FrameworkCall::Suppress { roles } => self.suppress(&fw, roles),
            FrameworkCall::Kill {
                task_id,
                agent_id: _,
                grace_ms,
            } => self.kill_task(
                &fw,
                task_id,
                grace_ms,
                StatusReason::KilledByFramework,
                None,
            ),
            FrameworkCall::Acknowledge {
                agent_id,
                task_id,
                uuid,
            } => self.acknowledge(session, fw, agent_id, task_id, uuid),
            FrameworkCall::Reconcile { tasks } => {
                if tasks.len() > limits::MAX_RECONCILE_TASKS {
                    self.bad_request(
                        session,
                        format!(
                            "too many tasks in one reconcile (limit {})",
                            limits::MAX_RECONCILE_TASKS
                        ),
                    );
                    return;
                }
                self.reconcile(&fw, session, tasks);
            }
            FrameworkCall::Message {
                agent_id,
                executor_id,
                data,
            } => {
                self.send_agent(
                    &agent_id,
                    MasterToAgent::FrameworkMessage {
                        framework_id: fw,
                        executor_id,
                        data,
                    },
                );
            }
            FrameworkCall::Teardown => {
                let at_ms = self.wall_ms();
                self.propose(
                    RegistryOp::FrameworkRemoved {
                        framework_id: fw,
                        at_ms,
                    },
                    Then::Nothing,
                );
            }
        }
    }

    /// Declined offers return to the pool, filtered for the refusal duration.
    fn decline(
        &mut self,
        session: SessionId,
        fw: &FrameworkId,
        offer_ids: Vec<OfferId>,
        filters: Option<proto::Filters>,
    ) {
        if offer_ids.len() > limits::MAX_OFFERS_PER_CALL {
            self.bad_request(session, "too many offer ids in one decline");
            return;
        }
        let d = self.refuse_duration(filters.as_ref());
        let fix = self.frameworks.ix(fw);
        for id in offer_ids {
            let Some(key) = self.offer_key(&id) else {
                continue;
            };
            let mine = self
                .offers
                .get(&key)
                .is_some_and(|o| Some(o.framework) == fix);
            if !mine {
                continue;
            }
            if let Some(o) = self.remove_offer(key, false) {
                self.offers_declined += 1;
                self.add_filter(o.framework, o.agent, o.resources, d);
            }
        }
    }

    /// Revive: clears the framework's filters and un-suppresses `roles` (all when empty).
    fn revive(&mut self, fw: &FrameworkId, roles: Vec<String>) {
        let now = self.now;
        self.clear_filters(fw);
        if let Some(rt) = self.frameworks.get_mut(fw) {
            let was_suppressed = !rt.suppressed.is_empty();
            if roles.is_empty() {
                rt.suppressed.clear();
            } else {
                for r in &roles {
                    rt.suppressed.remove(r);
                }
            }
            if was_suppressed && rt.offers.is_empty() {
                rt.wanting_since = now;
            }
        }
        self.request_allocation();
    }

    /// Suppress: no more offers for `roles` (all the framework's when empty).
    fn suppress(&mut self, fw: &FrameworkId, roles: Vec<String>) {
        let all = self
            .registry
            .frameworks()
            .get(fw)
            .map(|f| f.roles())
            .unwrap_or_default();
        if let Some(rt) = self.frameworks.get_mut(fw) {
            for r in all {
                if roles.is_empty() || roles.contains(&r) {
                    rt.suppressed.insert(r);
                }
            }
        }
    }

    /// The framework acknowledged an update: remembered (bounded), and passed to the agent.
    fn acknowledge(
        &mut self,
        session: SessionId,
        fw: FrameworkId,
        agent_id: AgentId,
        task_id: TaskId,
        uuid: StatusUuid,
    ) {
        let key = TaskKey {
            framework_id: fw,
            task_id,
        };
        let owner_ok = match self.registry.task_or_completed(&key) {
            Some(t) => t.agent_id == agent_id,
            None => true,
        };
        if !owner_ok {
            self.bad_request(
                session,
                format!("task {} is not on agent {agent_id}", key.task_id),
            );
            return;
        }
        if self.registry.task(&key).is_none()
            && self.forwarded.get(&key).is_some_and(|(u, _)| *u == uuid)
        {
            self.forwarded.remove(&key);
        }
        if self.acked.len() >= limits::MAX_ACKED_REMEMBERED && !self.acked.contains_key(&key) {
            self.acked.pop_first();
        }
        self.acked.insert(key.clone(), uuid.clone());
        self.ack_on_agent(&agent_id, &key, Some(uuid));
    }

    pub(super) fn subscribe(&mut self, session: SessionId, info: FrameworkInfo) {
        let Some(principal) = self.sessions.get(&session).map(|s| s.peer.name.clone()) else {
            return;
        };
        if info.roles.len() > limits::MAX_ROLES_PER_FRAMEWORK
            || info.name.len() > limits::MAX_NAME_LEN
            || info
                .roles
                .iter()
                .any(|r| r.is_empty() || r.len() > limits::MAX_NAME_LEN)
        {
            self.refuse(
                session,
                ErrorCode::BadRequest,
                format!(
                    "invalid FrameworkInfo: at most {} roles, names of 1..={} bytes",
                    limits::MAX_ROLES_PER_FRAMEWORK,
                    limits::MAX_NAME_LEN
                ),
            );
            return;
        }
        let roles = if info.roles.is_empty() {
            vec![crate::policy::DEFAULT_ROLE.to_owned()]
        } else {
            info.roles.clone()
        };
        for role in &roles {
            if let Err(msg) = crate::policy::check_role(self.policy(), &principal, role) {
                self.refuse(session, ErrorCode::Forbidden, msg);
                return;
            }
        }
        let Some(id) = self.admit(session, &principal, info.id.clone()) else {
            return;
        };
        if let Some(old) = self.frameworks.get(&id).and_then(|f| f.session) {
            if old != session {
                self.send(
                    old,
                    ServerFrame::Framework(FrameworkEvent::Error {
                        message: format!("framework {id} subscribed on a newer connection"),
                    }),
                );
                self.outputs.push_back(Output::Close {
                    session: old,
                    reason: "framework failed over to a newer connection".into(),
                });
                self.drop_session(old);
            }
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.kind = SessionKind::Framework(id.clone());
        }
        self.propose(
            RegistryOp::FrameworkAdded {
                framework_id: id,
                info,
                principal: Some(principal),
            },
            Then::FrameworkSubscribed { session },
        );
    }

    /// The `FrameworkAdded` of a subscribing framework committed: it is told `Subscribed` on
    /// that session, if still open.
    pub(super) fn subscription_committed(&mut self, id: &FrameworkId, session: SessionId) {
        let still_here = self
            .sessions
            .get(&session)
            .is_some_and(|s| s.kind == SessionKind::Framework(id.clone()));
        if !still_here || !self.registry.frameworks().contains_key(id) {
            if still_here {
                self.refuse(
                    session,
                    ErrorCode::NotFound,
                    format!("framework {id} was removed"),
                );
            }
            return;
        }
        self.adopt_framework(id);
        let now = self.now;
        self.clear_filters(id);
        if let Some(rt) = self.frameworks.get_mut(id) {
            rt.session = Some(session);
            rt.disconnected_at = None;
            rt.suppressed.clear();
            rt.wanting_since = now;
        }
        self.timers.cancel(&TimerKey::FrameworkFailover(id.clone()));
        self.send(
            session,
            ServerFrame::Framework(FrameworkEvent::Subscribed {
                framework_id: id.clone(),
                heartbeat_interval_ms: u64::try_from(
                    self.config.framework_heartbeat_interval.as_millis(),
                )
                .unwrap_or(u64::MAX),
            }),
        );
        self.request_allocation();
    }

    pub(super) fn adopt_framework(&mut self, id: &FrameworkId) {
        if !self.frameworks.contains_key(id) {
            self.frameworks
                .insert(id.clone(), FrameworkRt::new(self.now));
            self.arm_failover(id);
        }
    }

    pub(super) fn arm_failover(&mut self, id: &FrameworkId) {
        let timeout = self
            .registry
            .frameworks()
            .get(id)
            .map(|f| f.info.failover_timeout_ms)
            .unwrap_or(0);
        let since = self
            .frameworks
            .get(id)
            .and_then(|f| f.disconnected_at)
            .unwrap_or(self.now);
        self.timers.set(
            TimerKey::FrameworkFailover(id.clone()),
            since + Duration::from_millis(timeout),
        );
    }

    pub(super) fn framework_disconnected(&mut self, id: &FrameworkId) {
        let now = self.now;
        if let Some(rt) = self.frameworks.get_mut(id) {
            rt.session = None;
            rt.disconnected_at = Some(now);
        }
        // Offers do not survive the connection (as in Mesos).
        self.rescind_framework_offers(id, false);
        self.arm_failover(id);
    }

    pub(super) fn framework_failover_expired(&mut self, id: &FrameworkId) {
        let disconnected = self.frameworks.get(id).is_some_and(|f| f.session.is_none());
        if disconnected && self.registry.frameworks().contains_key(id) {
            let at_ms = self.wall_ms();
            self.propose(
                RegistryOp::FrameworkRemoved {
                    framework_id: id.clone(),
                    at_ms,
                },
                Then::Nothing,
            );
        }
    }

    /// Soft-state cleanup after a FrameworkRemoved commit. `killed` are the tasks that were live.
    pub(super) fn framework_removal_committed(
        &mut self,
        id: &FrameworkId,
        agents: BTreeSet<AgentId>,
    ) {
        self.clear_filters(id);
        self.rescind_framework_offers(id, false);
        self.timers.cancel(&TimerKey::FrameworkFailover(id.clone()));
        let pending: Vec<TaskKey> = self
            .pending_launches
            .keys()
            .filter(|k| k.framework_id == *id)
            .cloned()
            .collect();
        for k in pending {
            self.release_pending(&k);
        }
        self.kill_requested.retain(|k, _| k.framework_id != *id);
        self.forwarded.retain(|k, _| k.framework_id != *id);
        self.acked.retain(|k, _| k.framework_id != *id);
        for a in agents {
            self.send_agent(
                &a,
                MasterToAgent::ShutdownFramework {
                    framework_id: id.clone(),
                },
            );
        }
        if let Some((_, rt)) = self.frameworks.remove(id) {
            if let Some(s) = rt.session {
                self.send(
                    s,
                    ServerFrame::Framework(FrameworkEvent::Error {
                        message: format!("framework {id} was removed"),
                    }),
                );
                self.outputs.push_back(Output::Close {
                    session: s,
                    reason: format!("framework {id} was removed"),
                });
                self.sessions.remove(&s);
            }
        }
        self.request_allocation();
    }

    pub(super) fn kill_task(
        &mut self,
        fw: &FrameworkId,
        task_id: TaskId,
        grace_ms: Option<u64>,
        _reason: StatusReason,
        reply_to: Option<SessionId>,
    ) {
        let key = TaskKey {
            framework_id: fw.clone(),
            task_id,
        };
        if let Some(agent_id) = self.registry.task(&key).map(|t| t.agent_id.clone()) {
            if self.kill_requested.len() < limits::MAX_LIVE_TASKS {
                self.kill_requested.insert(key.clone(), grace_ms);
            }
            self.kill_on_agent(&agent_id, &key, grace_ms);
            if let Some(s) = reply_to {
                self.send(s, ServerFrame::Operator(OperatorReply::Done));
            }
            return;
        }
        if let Some(s) = reply_to {
            self.send(
                s,
                err(
                    ErrorCode::NotFound,
                    format!("task {} is not running", key.task_id),
                    false,
                ),
            );
            return;
        }
        // Unknown to the master: answer as reconciliation would.
        self.reconcile_one(
            fw,
            &ReconcileTask {
                task_id: key.task_id,
                agent_id: None,
            },
        );
    }

    pub(super) fn reconcile(
        &mut self,
        fw: &FrameworkId,
        _session: SessionId,
        tasks: Vec<ReconcileTask>,
    ) {
        if tasks.is_empty() {
            let statuses: Vec<TaskStatus> = self
                .registry
                .frameworks()
                .get(fw)
                .map(|f| f.tasks.values().map(|t| t.status.clone()).collect())
                .unwrap_or_default();
            for mut s in statuses {
                s.uuid = None;
                s.source = StatusSource::Master;
                s.reason = Some(StatusReason::Reconciliation);
                self.forward_status(fw, s);
            }
            return;
        }
        for t in &tasks {
            self.reconcile_one(fw, t);
        }
    }

    /// Mesos reconciliation semantics (mesos.md §5).
    pub(super) fn reconcile_one(&mut self, fw: &FrameworkId, t: &ReconcileTask) {
        let key = TaskKey {
            framework_id: fw.clone(),
            task_id: t.task_id.clone(),
        };
        if let Some(task) = self.registry.task_or_completed(&key) {
            let mut s = task.status.clone();
            s.uuid = None;
            s.source = StatusSource::Master;
            s.reason = Some(StatusReason::Reconciliation);
            self.forward_status(fw, s);
            return;
        }
        if self.pending_launches.contains_key(&key) {
            return; // launching: the commit is about to say TASK_STAGING
        }
        let state = match &t.agent_id {
            None => TaskState::Unknown,
            Some(a) => match self.registry.agents().get(a) {
                Some(entry) if !entry.reachable => TaskState::Unreachable,
                Some(_) if self.agent_session(a).is_none() => return, // still re-registering
                Some(_) => TaskState::Gone,
                None if self.registry.removed_agents().contains(a) => TaskState::GoneByOperator,
                None => TaskState::Unknown,
            },
        };
        let s = self.master_status(
            t.task_id.clone(),
            state,
            t.agent_id.clone(),
            StatusReason::Reconciliation,
            Some("reconciliation: task unknown to the master".into()),
        );
        self.forward_status(fw, s);
    }

    pub(super) fn master_status(
        &self,
        task_id: TaskId,
        state: TaskState,
        agent_id: Option<AgentId>,
        reason: StatusReason,
        message: Option<String>,
    ) -> TaskStatus {
        let mut s = TaskStatus::new(task_id, state, StatusSource::Master);
        s.agent_id = agent_id;
        s.reason = Some(reason);
        s.message = message;
        s.timestamp_ms = self.wall_ms();
        s
    }

    pub(super) fn partition_aware(&self, fw: &FrameworkId) -> bool {
        self.registry
            .frameworks()
            .get(fw)
            .is_some_and(|f| f.partition_aware())
    }

    /// Sends a status to the framework, mapping partition-aware states to TASK_LOST for
    /// frameworks without the capability. Records uuid-carrying updates so that a resend from the
    /// agent reaches each framework session once.
    pub(super) fn forward_status(&mut self, framework_id: &FrameworkId, mut status: TaskStatus) {
        let Some(session) = self.frameworks.get(framework_id).and_then(|f| f.session) else {
            return;
        };
        if !self.partition_aware(framework_id) {
            status.state = non_pa_state(status.state);
        }
        if let Some(uuid) = &status.uuid {
            let key = TaskKey {
                framework_id: framework_id.clone(),
                task_id: status.task_id.clone(),
            };
            if self.forwarded.get(&key) == Some(&(uuid.clone(), session)) {
                return;
            }
            self.forwarded.insert(key, (uuid.clone(), session));
        }
        self.send(
            session,
            ServerFrame::Framework(FrameworkEvent::Update { status }),
        );
    }
}

fn non_pa_state(state: TaskState) -> TaskState {
    match state {
        TaskState::Unreachable
        | TaskState::Gone
        | TaskState::GoneByOperator
        | TaskState::Unknown
        | TaskState::Dropped => TaskState::Lost,
        s => s,
    }
}
