//! Agents: registration and re-registration, reconciling an agent's task reports with the registry,
//! status updates from agents, silence and unreachability.

use super::*;

/// The longest heartbeat interval an agent is told, however large the cluster.
const MAX_AGENT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(600);

impl Master {
    pub(super) fn agent_message(&mut self, session: SessionId, msg: AgentToMaster) {
        let bound = match self.sessions.get(&session).map(|s| &s.kind) {
            Some(SessionKind::Agent(id)) => Some(id.clone()),
            _ => None,
        };
        if let AgentToMaster::Register {
            agent_id,
            info,
            tasks,
        } = msg
        {
            if bound.is_some() {
                self.bad_request(session, "agent session is already registered");
                return;
            }
            self.agent_register(session, agent_id, info, tasks);
            return;
        }
        let Some(agent_id) = bound else {
            self.bad_request(
                session,
                format!(
                    "{} before Register on this session",
                    call_name(&ClientFrame::Agent(msg))
                ),
            );
            return;
        };
        if let Some(a) = self.agents.get_mut(&agent_id) {
            a.last_seen = self.now;
        }
        match msg {
            AgentToMaster::Register { .. } => {}
            AgentToMaster::Heartbeat => self.stretch_heartbeat(session, &agent_id),
            AgentToMaster::StatusUpdate {
                framework_id,
                status,
            } => self.agent_status_update(&agent_id, framework_id, status),
            AgentToMaster::Usage { tasks, pressure } => {
                let Some(entry) = self.registry.agents().get(&agent_id) else {
                    return;
                };
                let mut usage = BTreeMap::new();
                for t in tasks {
                    let key = TaskKey {
                        framework_id: t.framework_id,
                        task_id: t.task_id,
                    };
                    if entry.tasks.contains(&key) {
                        usage.insert(key, t.usage);
                    }
                }
                let pressure = pressure.map(NodePressure::clamped);
                let changed = self.agents.get_mut(&agent_id).is_some_and(|a| {
                    let changed = a.usage != usage || a.pressure != pressure;
                    a.usage = usage;
                    a.pressure = pressure;
                    changed
                });
                if changed {
                    self.touch();
                }
            }
            AgentToMaster::LogChunk { request_id, result } => {
                let belongs = self
                    .log_requests
                    .get(&request_id)
                    .is_some_and(|r| r.agent_id == agent_id);
                if !belongs {
                    return;
                }
                if let Some(req) = self.log_requests.remove(&request_id) {
                    self.timers.cancel(&TimerKey::LogRequest(request_id));
                    let frame = match result {
                        Ok(data) => ServerFrame::Operator(OperatorReply::Log(data)),
                        Err(e) => err(ErrorCode::NotFound, e, false),
                    };
                    self.send(req.session, frame);
                }
            }
            AgentToMaster::ExecutorMessage {
                framework_id,
                executor_id,
                data,
            } => {
                if let Some(s) = self.frameworks.get(&framework_id).and_then(|f| f.session) {
                    self.send(
                        s,
                        ServerFrame::Framework(FrameworkEvent::Message {
                            agent_id,
                            executor_id,
                            data,
                        }),
                    );
                }
            }
        }
    }

    pub(super) fn agent_register(
        &mut self,
        session: SessionId,
        agent_id: Option<AgentId>,
        info: proto::AgentInfo,
        tasks: Vec<TaskReport>,
    ) {
        let Some(principal) = self.sessions.get(&session).map(|s| s.peer.name.clone()) else {
            return;
        };
        if tasks.len() > limits::MAX_TASK_REPORTS {
            self.refuse(
                session,
                ErrorCode::BadRequest,
                format!(
                    "agent reported {} tasks (limit {})",
                    tasks.len(),
                    limits::MAX_TASK_REPORTS
                ),
            );
            return;
        }
        if info.hostname.len() > limits::MAX_NAME_LEN {
            self.refuse(
                session,
                ErrorCode::BadRequest,
                "agent hostname too long".into(),
            );
            return;
        }
        let Some(id) = self.admit(session, &principal, agent_id) else {
            return;
        };
        // A newer session for the same agent replaces the old one.
        if let Some(old) = self.agent_session(&id) {
            if old != session {
                self.outputs.push_back(Output::Close {
                    session: old,
                    reason: format!("agent {id} registered on a newer session"),
                });
                self.drop_session(old);
            }
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.kind = SessionKind::Agent(id.clone());
        }
        if !self.readmission_is_news(&id, &info, &principal) {
            // After a failover every agent re-registers with the new leader: that is no news
            // to the registry (Mesos writes a re-registration only for an agent it does not
            // know or had marked unreachable), so 10,000 agents cost no raft write.
            self.admission_committed(&id, session, tasks);
            return;
        }
        self.propose(
            RegistryOp::AgentAdmitted {
                agent_id: id,
                info,
                principal,
            },
            Then::AgentRegistered {
                session,
                reports: tasks,
            },
        );
    }

    /// Whether admitting agent `id` as `info` changes the registry: it does unless the registry
    /// has the agent reachable with this same description and principal, and no change to its
    /// admission (an unreachable mark, say) is in flight, which the re-registration must follow.
    fn readmission_is_news(&self, id: &AgentId, info: &proto::AgentInfo, principal: &str) -> bool {
        let Some(entry) = self.registry.agents().get(id) else {
            return true;
        };
        let in_flight = self
            .agent_ops_in_flight
            .get(id)
            .is_some_and(|p| self.in_flight.binary_search_by_key(p, |(q, ..)| *q).is_ok());
        let mut described = info.clone();
        described.resources = described.resources.normalized();
        let same_info = entry.info == described;
        in_flight || !entry.reachable || entry.principal != principal || !same_info
    }

    /// The `AgentAdmitted` of a registering agent committed: it is told `Registered`, and its
    /// task reports are reconciled with the registry.
    pub(super) fn admission_committed(
        &mut self,
        agent_id: &AgentId,
        session: SessionId,
        reports: Vec<TaskReport>,
    ) {
        let still_here = self
            .sessions
            .get(&session)
            .is_some_and(|s| s.kind == SessionKind::Agent(agent_id.clone()));
        if !still_here {
            return;
        }
        self.adopt_agent(agent_id);
        let now = self.now;
        let heartbeat = self.agent_heartbeat_interval();
        // A connected agent is silent too long after three missed heartbeats (at least the
        // configured timeout); one whose connection ends has the timeout from then (see
        // `agent_session_ended`).
        let limit = self.config.agent_unreachable_timeout.max(heartbeat * 3);
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.session = Some(session);
            a.last_seen = now;
            a.silence_limit = limit;
            a.heartbeat = heartbeat;
        }
        self.timers
            .set(TimerKey::AgentSilence(agent_id.clone()), now + limit);
        self.send(
            session,
            ServerFrame::Agent(MasterToAgent::Registered {
                agent_id: agent_id.clone(),
                heartbeat_interval_ms: u64::try_from(heartbeat.as_millis()).unwrap_or(u64::MAX),
            }),
        );
        self.reconcile_agent(agent_id, reports);
        self.request_allocation();
    }

    /// How often a registering agent is told to heartbeat: the configured interval, stretched
    /// so that all agents together send at most `max_agent_heartbeats_per_second` (Nomad's
    /// rule: the master's heartbeat load stays flat as the cluster grows). An agent's liveness
    /// between heartbeats is its connection, which QUIC keeps alive at a cost of a packet
    /// every few seconds, far below a heartbeat frame's.
    pub(super) fn agent_heartbeat_interval(&self) -> Duration {
        let rate = self.config.max_agent_heartbeats_per_second;
        // Every agent the registry knows counts, connected or not: after a failover each agent
        // re-registering is told the interval of the whole cluster. While a cluster grows,
        // agents that registered early keep their shorter interval until they re-register.
        let agents = self.agents.len().max(self.registry.agents().len());
        let spread = if rate.is_finite() && rate > 0.0 {
            Duration::try_from_secs_f64(agents as f64 / rate).unwrap_or(Duration::MAX)
        } else {
            Duration::ZERO
        };
        self.config
            .agent_heartbeat_interval
            .max(spread)
            .min(MAX_AGENT_HEARTBEAT_INTERVAL)
    }

    /// Once the cluster has grown to twice the heartbeat interval an agent was told, tells it the
    /// new one (`Registered` again: agents take it mid-session as the new interval; agents
    /// from before this ignore it), so that agents that registered while the cluster was small
    /// do not keep its short interval.
    fn stretch_heartbeat(&mut self, session: SessionId, agent_id: &AgentId) {
        let wanted = self.agent_heartbeat_interval();
        let limit = self.config.agent_unreachable_timeout.max(wanted * 3);
        let Some(a) = self.agents.get_mut(agent_id) else {
            return;
        };
        if wanted < a.heartbeat.saturating_mul(2) {
            return;
        }
        a.heartbeat = wanted;
        a.silence_limit = limit;
        self.send(
            session,
            ServerFrame::Agent(MasterToAgent::Registered {
                agent_id: agent_id.clone(),
                heartbeat_interval_ms: u64::try_from(wanted.as_millis()).unwrap_or(u64::MAX),
            }),
        );
    }

    /// An agent's session ended (its connection closed or timed out, or it re-registers
    /// elsewhere): from now it has `agent_unreachable_timeout` to come back, however long its
    /// heartbeat interval was.
    pub(super) fn agent_session_ended(&mut self, id: &AgentId) {
        let now = self.now;
        let limit = self.config.agent_unreachable_timeout;
        if let Some(a) = self.agents.get_mut(id) {
            a.session = None;
            a.last_seen = now;
            a.silence_limit = limit;
            self.timers
                .set(TimerKey::AgentSilence(id.clone()), now + limit);
        }
    }

    pub(super) fn adopt_agent(&mut self, id: &AgentId) {
        if !self.agents.contains_key(id) {
            self.agents.insert(
                id.clone(),
                AgentRt {
                    session: None,
                    last_seen: self.now,
                    silence_limit: self
                        .config
                        .agent_reregister_timeout
                        .max(self.config.agent_unreachable_timeout),
                    heartbeat: Duration::ZERO,
                    offered: Resources::default(),
                    pending: Resources::default(),
                    pending_roles: BTreeMap::new(),
                    offers: BTreeSet::new(),
                    filters: AgentFilters::default(),
                    usage: BTreeMap::new(),
                    pressure: None,
                },
            );
            let at = self.now
                + self
                    .config
                    .agent_reregister_timeout
                    .max(self.config.agent_unreachable_timeout);
            self.timers.set(TimerKey::AgentSilence(id.clone()), at);
        }
    }

    /// Compares an agent's task reports with the registry after (re-)registration.
    pub(super) fn reconcile_agent(&mut self, agent_id: &AgentId, reports: Vec<TaskReport>) {
        let mut reported: BTreeSet<TaskKey> = BTreeSet::new();
        let mut shutdown: BTreeSet<FrameworkId> = BTreeSet::new();
        for report in reports {
            let key = TaskKey {
                framework_id: report.framework_id.clone(),
                task_id: report.task.task_id.clone(),
            };
            if !reported.insert(key.clone()) {
                continue;
            }
            if self.registry.framework_removed(&key.framework_id) {
                shutdown.insert(key.framework_id.clone());
                continue;
            }
            if !self.registry.frameworks().contains_key(&key.framework_id) {
                if report.state.is_terminal() {
                    continue;
                }
                if self.registry.frameworks().len() >= limits::MAX_FRAMEWORKS {
                    shutdown.insert(key.framework_id.clone());
                    continue;
                }
                self.recover_framework(&key.framework_id);
            }
            let live = self
                .registry
                .task(&key)
                .map(|t| (t.agent_id.clone(), t.state));
            match live {
                Some((a, state)) if a == *agent_id => {
                    self.reconcile_reported_task(agent_id, &key, report.state, state)
                }
                Some(_) => {
                    // Registered on another agent: this copy must go.
                    if !report.state.is_terminal() {
                        self.kill_on_agent(agent_id, &key, None);
                    }
                }
                None => {
                    let known_terminal = self.registry.task_or_completed(&key).is_some();
                    if known_terminal || self.pending_launches.contains_key(&key) {
                        if !report.state.is_terminal() && known_terminal {
                            self.kill_on_agent(agent_id, &key, None);
                        }
                        continue;
                    }
                    if report.state.is_terminal() {
                        continue;
                    }
                    self.adopt_reported_task(agent_id, &key, report);
                }
            }
        }
        for fw in shutdown {
            self.send_agent(
                agent_id,
                MasterToAgent::ShutdownFramework { framework_id: fw },
            );
        }
        self.reconcile_unreported_tasks(agent_id, &reported);
    }

    /// A framework this registry does not know has tasks on an agent (e.g. the master restarted
    /// without its registry): keep its tasks; the first framework that subscribes with this id
    /// claims it, or it is torn down after the re-register timeout.
    fn recover_framework(&mut self, framework_id: &FrameworkId) {
        let info = FrameworkInfo {
            id: Some(framework_id.clone()),
            name: "(recovered from agent report)".into(),
            roles: Vec::new(),
            failover_timeout_ms: u64::try_from(self.config.agent_reregister_timeout.as_millis())
                .unwrap_or(u64::MAX),
            capabilities: Vec::new(),
            version: Default::default(),
        };
        self.propose(
            RegistryOp::FrameworkAdded {
                framework_id: framework_id.clone(),
                info,
                principal: None,
            },
            Then::Nothing,
        );
    }

    /// A reported task the registry has on this agent in `state`: a different live state is
    /// recorded, and a kill asked for while the agent was away is sent again.
    fn reconcile_reported_task(
        &mut self,
        agent_id: &AgentId,
        key: &TaskKey,
        reported: TaskState,
        state: TaskState,
    ) {
        if !reported.is_terminal() && reported != state {
            let mut s = self.master_status(
                key.task_id.clone(),
                reported,
                Some(agent_id.clone()),
                StatusReason::Reconciliation,
                Some("task state reported by the re-registered agent".into()),
            );
            s.executor_id = self.registry.task(key).and_then(|t| t.executor_id.clone());
            self.propose(
                RegistryOp::TaskStateChanged {
                    framework_id: key.framework_id.clone(),
                    status: s,
                },
                Then::Nothing,
            );
        }
        // A terminal report: the agent resends its own update with the details.
        if let Some(grace) = self.kill_requested.get(key).copied() {
            self.send_agent(
                agent_id,
                MasterToAgent::KillTask {
                    framework_id: key.framework_id.clone(),
                    task_id: key.task_id.clone(),
                    grace_ms: grace,
                },
            );
        }
    }

    /// A live task of a live framework that the registry does not know: adopt it (and its
    /// reported state).
    fn adopt_reported_task(&mut self, agent_id: &AgentId, key: &TaskKey, report: TaskReport) {
        let role = self
            .registry
            .frameworks()
            .get(&key.framework_id)
            .and_then(|f| f.info.roles.first().cloned())
            .unwrap_or_else(|| "*".to_owned());
        let mut task = report.task;
        task.agent_id = agent_id.clone();
        let at_ms = self.wall_ms();
        self.propose(
            RegistryOp::TasksAdded {
                framework_id: key.framework_id.clone(),
                agent_id: agent_id.clone(),
                role,
                executor: None,
                tasks: vec![task],
                at_ms,
            },
            Then::Nothing,
        );
        if report.state != TaskState::Staging {
            let s = self.master_status(
                key.task_id.clone(),
                report.state,
                Some(agent_id.clone()),
                StatusReason::Reconciliation,
                Some("task adopted from the re-registered agent".into()),
            );
            self.propose(
                RegistryOp::TaskStateChanged {
                    framework_id: key.framework_id.clone(),
                    status: s,
                },
                Then::Nothing,
            );
        }
    }

    /// Tasks the registry has on this agent that it did not report are gone.
    fn reconcile_unreported_tasks(&mut self, agent_id: &AgentId, reported: &BTreeSet<TaskKey>) {
        let missing: Vec<TaskKey> = self
            .registry
            .agents()
            .get(agent_id)
            .map(|a| {
                a.tasks
                    .iter()
                    .filter(|k| !reported.contains(k))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for key in missing {
            let state = if self.partition_aware(&key.framework_id) {
                TaskState::Gone
            } else {
                TaskState::Lost
            };
            let s = self.master_status(
                key.task_id.clone(),
                state,
                Some(agent_id.clone()),
                StatusReason::AgentRestarted,
                Some("task not reported by the re-registered agent".into()),
            );
            self.propose(
                RegistryOp::TaskStateChanged {
                    framework_id: key.framework_id,
                    status: s,
                },
                Then::Nothing,
            );
        }
    }

    pub(super) fn agent_status_update(
        &mut self,
        agent_id: &AgentId,
        framework_id: FrameworkId,
        mut status: TaskStatus,
    ) {
        status.agent_id = Some(agent_id.clone());
        let key = TaskKey {
            framework_id: framework_id.clone(),
            task_id: status.task_id.clone(),
        };
        self.launch_reported(&key, status.state);
        if !self.registry.frameworks().contains_key(&framework_id) {
            // The framework is gone: acknowledge on its behalf and stop the task.
            self.ack_on_agent(agent_id, &key, status.uuid.clone());
            if !status.state.is_terminal() {
                self.kill_on_agent(agent_id, &key, None);
            }
            return;
        }
        let live = self.registry.task(&key).map(|t| {
            (
                t.agent_id.clone(),
                t.status.uuid.clone(),
                t.status.seq,
                t.status.source,
            )
        });
        match live {
            Some((owner, last_uuid, last_seq, last_source)) if owner == *agent_id => {
                if status.uuid.is_some() && status.uuid == last_uuid {
                    if status.uuid.as_ref() == self.acked.get(&key) {
                        // The framework acknowledged it; the agent lost that acknowledgement.
                        self.ack_on_agent(agent_id, &key, status.uuid);
                        return;
                    }
                    // A resend: the framework has not acknowledged yet.
                    self.forward_status(&framework_id, status);
                    return;
                }
                if last_source != StatusSource::Master && status.seq != 0 && status.seq < last_seq {
                    // Older than what was recorded: already superseded.
                    self.ack_on_agent(agent_id, &key, status.uuid);
                    return;
                }
                if self.in_flight_full() {
                    return; // the agent resends
                }
                self.propose(
                    RegistryOp::TaskStateChanged {
                        framework_id,
                        status,
                    },
                    Then::Nothing,
                );
            }
            _ => {
                // Unknown here, terminal already, or on another agent.
                let completed = self
                    .registry
                    .task_or_completed(&key)
                    .filter(|t| t.agent_id == *agent_id)
                    .map(|t| t.status.uuid.clone());
                if let Some(last_uuid) = completed {
                    if status.uuid.is_some() && status.uuid == last_uuid {
                        if status.uuid.as_ref() == self.acked.get(&key) {
                            self.ack_on_agent(agent_id, &key, status.uuid);
                            return;
                        }
                        self.forward_status(&framework_id, status);
                        return;
                    }
                }
                self.ack_on_agent(agent_id, &key, status.uuid.clone());
                if !status.state.is_terminal() {
                    self.kill_on_agent(agent_id, &key, None);
                }
            }
        }
    }

    /// An agent's silence timer fired: it is marked unreachable if it was silent past its
    /// limit (true), else the timer is set for when it would be (false: nothing changed).
    pub(super) fn check_agent_silence(&mut self, id: &AgentId) -> bool {
        let Some(rt) = self.agents.get(id) else {
            return false;
        };
        let deadline = rt.last_seen + rt.silence_limit;
        let reachable = self.registry.agents().get(id).is_some_and(|a| a.reachable);
        if !reachable {
            return false;
        }
        if deadline > self.now {
            self.timers
                .set(TimerKey::AgentSilence(id.clone()), deadline);
            return false;
        }
        self.mark_unreachable(id);
        true
    }

    pub(super) fn mark_unreachable(&mut self, id: &AgentId) {
        if let Some(s) = self.agent_session(id) {
            self.outputs.push_back(Output::Close {
                session: s,
                reason: format!("agent {id} was silent too long and is unreachable"),
            });
            self.drop_session(s);
        }
        self.rescind_agent_offers(id);
        let at_ms = self.wall_ms();
        self.propose(
            RegistryOp::AgentUnreachable {
                agent_id: id.clone(),
                at_ms,
            },
            Then::Nothing,
        );
        let tasks: Vec<TaskKey> = self
            .registry
            .agents()
            .get(id)
            .map(|a| a.tasks.iter().cloned().collect())
            .unwrap_or_default();
        for key in tasks {
            let state = if self.partition_aware(&key.framework_id) {
                TaskState::Unreachable
            } else {
                TaskState::Lost
            };
            let mut s = self.master_status(
                key.task_id.clone(),
                state,
                Some(id.clone()),
                StatusReason::AgentUnreachable,
                Some(format!("agent {id} is unreachable")),
            );
            s.executor_id = self.registry.task(&key).and_then(|t| t.executor_id.clone());
            self.propose(
                RegistryOp::TaskStateChanged {
                    framework_id: key.framework_id,
                    status: s,
                },
                Then::Nothing,
            );
        }
        let sessions: Vec<SessionId> = self.frameworks.values().filter_map(|f| f.session).collect();
        for s in sessions {
            self.send(
                s,
                ServerFrame::Framework(FrameworkEvent::AgentLost {
                    agent_id: id.clone(),
                }),
            );
        }
    }

    pub(super) fn agent_session(&self, agent_id: &AgentId) -> Option<SessionId> {
        self.agents.get(agent_id).and_then(|a| a.session)
    }

    pub(super) fn send_agent(&mut self, agent_id: &AgentId, msg: MasterToAgent) -> bool {
        match self.agent_session(agent_id) {
            Some(s) => {
                self.send(s, ServerFrame::Agent(msg));
                true
            }
            None => false,
        }
    }

    pub(super) fn kill_on_agent(
        &mut self,
        agent_id: &AgentId,
        key: &TaskKey,
        grace_ms: Option<u64>,
    ) {
        self.send_agent(
            agent_id,
            MasterToAgent::KillTask {
                framework_id: key.framework_id.clone(),
                task_id: key.task_id.clone(),
                grace_ms,
            },
        );
    }

    pub(super) fn ack_on_agent(
        &mut self,
        agent_id: &AgentId,
        key: &TaskKey,
        uuid: Option<StatusUuid>,
    ) {
        if let Some(uuid) = uuid {
            self.send_agent(
                agent_id,
                MasterToAgent::AcknowledgeUpdate {
                    framework_id: key.framework_id.clone(),
                    task_id: key.task_id.clone(),
                    uuid,
                },
            );
        }
    }
}
