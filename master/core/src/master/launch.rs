//! A task's path, in order: `accept` consumes the offers and validates the
//! operations, `propose_launch` reserves the resources as pending and proposes
//! `TasksAdded`, and once that op commits `launch_committed` releases the reservation
//! and sends `RunTasks` to the agent.

use super::*;

impl Master {
    /// A framework's Accept: consume the offers (one agent, one role), validate each operation
    /// against what they hold, and propose the launches that fit; what is left is filtered
    /// for the refusal duration.
    pub(super) fn accept(
        &mut self,
        fw: &FrameworkId,
        offer_ids: Vec<OfferId>,
        operations: Vec<OfferOperation>,
        filters: Option<proto::Filters>,
    ) {
        let refuse = self.refuse_duration(filters.as_ref());
        let all_tasks: Vec<&TaskInfo> = operations
            .iter()
            .flat_map(|op| match op {
                OfferOperation::Launch { tasks } => tasks.iter(),
                OfferOperation::LaunchGroup { tasks, .. } => tasks.iter(),
            })
            .collect();
        if let Some(p) = accept_size_problem(&offer_ids, &operations, all_tasks.len()) {
            let (error, invalid) = (TaskState::Error, StatusReason::TaskInvalid);
            self.reject_tasks(fw, &all_tasks, error, invalid, &p);
            return;
        }
        let Some(mut offers) = self.consume_offers(fw, &offer_ids, &all_tasks, refuse) else {
            return;
        };
        if self.launches_full(all_tasks.len()) {
            // Admission control: the offers' resources go back to the pool unfiltered, to be
            // offered again once the registry has caught up (allocation is held till then).
            let state = if self.partition_aware(fw) {
                TaskState::Dropped
            } else {
                TaskState::Lost
            };
            let message = format!(
                "the master is overloaded ({} registry changes in flight); launch again on a \
                 later offer",
                self.in_flight.len()
            );
            self.reject_tasks(
                fw,
                &all_tasks,
                state,
                StatusReason::MasterOverloaded,
                &message,
            );
            self.request_allocation();
            return;
        }
        let mut ids_here: BTreeSet<TaskId> = BTreeSet::new();
        for op in operations {
            match op {
                OfferOperation::Launch { tasks } => {
                    self.accept_launch(fw, &mut offers, tasks, &mut ids_here)
                }
                OfferOperation::LaunchGroup { executor, tasks } => {
                    self.accept_group(fw, &mut offers, executor, tasks, &mut ids_here)
                }
            }
        }
        self.add_filter(offers.fw_ix, offers.agent_ix, offers.remaining, refuse);
        self.request_allocation();
    }

    /// Removes the framework's offers named by an Accept. `None` (the tasks rejected, the
    /// offers' resources filtered) when none is valid or they span agents or roles.
    fn consume_offers(
        &mut self,
        fw: &FrameworkId,
        offer_ids: &[OfferId],
        all_tasks: &[&TaskInfo],
        refuse: Duration,
    ) -> Option<AcceptedOffers> {
        let invalid_state = if self.partition_aware(fw) {
            TaskState::Dropped
        } else {
            TaskState::Lost
        };
        let fix = self.frameworks.ix(fw);
        let mut seen = BTreeSet::new();
        let mut mine: Vec<u64> = Vec::new();
        let mut problem: Option<String> = None;
        for id in offer_ids {
            if !seen.insert(id.clone()) {
                problem.get_or_insert_with(|| format!("offer {id} is named twice"));
                continue;
            }
            let key = self.offer_key(id);
            match key.and_then(|k| self.offers.get(&k).map(|o| (k, o))) {
                Some((k, o)) if Some(o.framework) == fix => mine.push(k),
                Some(_) => {
                    problem
                        .get_or_insert_with(|| format!("offer {id} belongs to another framework"));
                }
                None => {
                    problem
                        .get_or_insert_with(|| format!("offer {id} is unknown, used or rescinded"));
                }
            }
        }
        let mut removed: Vec<OfferRt> = Vec::new();
        for key in mine {
            if let Some(o) = self.remove_offer(key, false) {
                removed.push(o);
            }
        }
        let first = removed
            .first()
            .and_then(|o| Some((o, self.agents.key(o.agent)?.clone())));
        let Some((first, agent_id)) = first else {
            let p = problem.unwrap_or_else(|| "no valid offers".into());
            self.reject_tasks(
                fw,
                all_tasks,
                invalid_state,
                StatusReason::InvalidOffers,
                &p,
            );
            return None;
        };
        let agent_ix = first.agent;
        let fw_ix = first.framework;
        let role = first.role.clone();
        if removed.iter().any(|o| o.agent != agent_ix) {
            problem.get_or_insert_with(|| "offers span more than one agent".into());
        }
        if removed.iter().any(|o| o.role != role) {
            problem.get_or_insert_with(|| "offers are for different roles".into());
        }
        let mut remaining = Resources::default();
        for o in &removed {
            remaining.add_assign(&o.resources);
        }
        if let Some(p) = problem {
            self.reject_tasks(
                fw,
                all_tasks,
                invalid_state,
                StatusReason::InvalidOffers,
                &p,
            );
            for o in removed {
                self.add_filter(o.framework, o.agent, o.resources, refuse);
            }
            return None;
        }
        Some(AcceptedOffers {
            agent_id,
            agent_ix,
            fw_ix,
            role,
            remaining,
        })
    }

    /// A Launch operation: each valid task that fits what is left is launched, each other one
    /// rejected alone.
    fn accept_launch(
        &mut self,
        fw: &FrameworkId,
        offers: &mut AcceptedOffers,
        tasks: Vec<TaskInfo>,
        ids_here: &mut BTreeSet<TaskId>,
    ) {
        let mut accepted: Vec<TaskInfo> = Vec::new();
        for t in tasks {
            if let Err(msg) = self.authorize_user(fw, t.command.user.as_deref()) {
                let (error, why) = (TaskState::Error, StatusReason::TaskUnauthorized);
                self.reject_tasks(fw, &[&t], error, why, &format!("task {}: {msg}", t.task_id));
                continue;
            }
            let problem = match self.validate_task(fw, &t, &offers.agent_id, ids_here) {
                Err(msg) => Some(msg),
                Ok(()) => {
                    let res = t.resources.clone().normalized();
                    match offers.remaining.checked_sub(&res) {
                        Some(r) => {
                            offers.remaining = r;
                            None
                        }
                        None => Some(format!(
                            "task {} needs {} but the offers have {} left",
                            t.task_id, res, offers.remaining
                        )),
                    }
                }
            };
            match problem {
                Some(msg) => {
                    let (error, invalid) = (TaskState::Error, StatusReason::TaskInvalid);
                    self.reject_tasks(fw, &[&t], error, invalid, &msg);
                }
                None => {
                    ids_here.insert(t.task_id.clone());
                    accepted.push(t);
                }
            }
        }
        if !accepted.is_empty() {
            let (agent_id, role) = (offers.agent_id.clone(), offers.role.clone());
            self.propose_launch(fw, &agent_id, &role, None, accepted, Resources::default());
        }
    }

    /// A LaunchGroup operation: all its tasks (and the executor, unless it already runs on
    /// the agent) are launched together, or all are rejected.
    fn accept_group(
        &mut self,
        fw: &FrameworkId,
        offers: &mut AcceptedOffers,
        executor: ExecutorInfo,
        tasks: Vec<TaskInfo>,
        ids_here: &mut BTreeSet<TaskId>,
    ) {
        let mut accepted: Vec<TaskInfo> = Vec::new();
        let mut need = Resources::default();
        let e = &executor;
        let mut group_error: Option<String> = None;
        let unauthorized = std::iter::once(e.command.user.as_deref())
            .chain(tasks.iter().map(|t| t.command.user.as_deref()))
            .find_map(|user| self.authorize_user(fw, user).err());
        if let Some(msg) = unauthorized {
            let refs: Vec<&TaskInfo> = tasks.iter().collect();
            let why = StatusReason::TaskUnauthorized;
            let msg = format!("launch group of executor {}: {msg}", e.executor_id);
            self.reject_tasks(fw, &refs, TaskState::Error, why, &msg);
            return;
        }
        if e.executor_id.0.is_empty() || e.executor_id.0.len() > limits::MAX_NAME_LEN {
            group_error = Some("executor id is empty or too long".into());
        } else if e.command.value.is_empty() && e.command.arguments.is_empty() {
            group_error = Some(format!("executor {} has an empty command", e.executor_id));
        } else if tasks.is_empty() {
            group_error = Some("launch group has no tasks".into());
        } else {
            let running = self
                .registry
                .agents()
                .get(&offers.agent_id)
                .is_some_and(|a| {
                    a.executors
                        .iter()
                        .any(|x| x.framework_id == *fw && x.executor_id == e.executor_id)
                });
            if !running {
                need.add_assign(&e.resources.clone().normalized());
            }
        }
        for t in tasks {
            match self.validate_task(fw, &t, &offers.agent_id, ids_here) {
                Err(msg) => {
                    group_error.get_or_insert(msg);
                }
                Ok(()) => {
                    need.add_assign(&t.resources.clone().normalized());
                    ids_here.insert(t.task_id.clone());
                }
            }
            accepted.push(t);
        }
        if group_error.is_none() {
            match offers.remaining.checked_sub(&need) {
                Some(r) => offers.remaining = r,
                None => {
                    group_error = Some(format!(
                        "launch group needs {need} but the offers have {} left",
                        offers.remaining
                    ));
                }
            }
        }
        if let Some(msg) = group_error {
            let refs: Vec<&TaskInfo> = accepted.iter().collect();
            self.reject_tasks(fw, &refs, TaskState::Error, StatusReason::TaskInvalid, &msg);
            for t in &accepted {
                ids_here.remove(&t.task_id);
            }
            return;
        }
        let (agent_id, role) = (offers.agent_id.clone(), offers.role.clone());
        self.propose_launch(fw, &agent_id, &role, Some(executor), accepted, need);
    }

    pub(super) fn reject_tasks(
        &mut self,
        fw: &FrameworkId,
        tasks: &[&TaskInfo],
        state: TaskState,
        reason: StatusReason,
        message: &str,
    ) {
        for t in tasks {
            let s = self.master_status(
                t.task_id.clone(),
                state,
                Some(t.agent_id.clone()),
                reason,
                Some(message.to_owned()),
            );
            self.forward_status(fw, s);
        }
    }

    /// Whether the framework's principal may run a task or executor as `user` (`None`: the
    /// agent's default user), by the policy in force.
    fn authorize_user(&self, fw: &FrameworkId, user: Option<&str>) -> Result<(), String> {
        let principal = self
            .registry
            .framework(fw)
            .and_then(|f| f.principal.as_deref())
            .unwrap_or_default();
        crate::policy::check_user(self.policy(), principal, user)
    }

    pub(super) fn validate_task(
        &self,
        fw: &FrameworkId,
        t: &TaskInfo,
        agent_id: &AgentId,
        ids_here: &BTreeSet<TaskId>,
    ) -> Result<(), String> {
        let id = &t.task_id;
        if id.0.is_empty() || id.0.len() > limits::MAX_NAME_LEN {
            return Err("task id is empty or too long".into());
        }
        let key = TaskKey {
            framework_id: fw.clone(),
            task_id: id.clone(),
        };
        if ids_here.contains(id)
            || self.registry.task(&key).is_some()
            || self.pending_launches.contains_key(&key)
        {
            return Err(format!("task id {id} is already in use"));
        }
        if t.agent_id != *agent_id {
            return Err(format!(
                "task {id} names agent {} but the offers are for {agent_id}",
                t.agent_id
            ));
        }
        if t.command.value.is_empty() && t.command.arguments.is_empty() {
            return Err(format!("task {id} has an empty command"));
        }
        if t.resources.cpus_milli == 0 && t.resources.mem_bytes == 0 {
            return Err(format!("task {id} asks for neither cpus nor memory"));
        }
        if self.registry.live_tasks() + self.pending_launches.len() >= limits::MAX_LIVE_TASKS {
            return Err("the cluster has too many tasks".into());
        }
        Ok(())
    }

    /// Reserves the tasks' resources as pending and proposes `TasksAdded`; nothing reaches the
    /// agent before it commits (`launch_committed`).
    pub(super) fn propose_launch(
        &mut self,
        fw: &FrameworkId,
        agent_id: &AgentId,
        role: &str,
        executor: Option<ExecutorInfo>,
        tasks: Vec<TaskInfo>,
        executor_need: Resources,
    ) {
        let exec_res = if executor.is_some() {
            let mut tasks_sum = Resources::default();
            for t in &tasks {
                tasks_sum.add_assign(&t.resources.clone().normalized());
            }
            executor_need.saturating_sub(&tasks_sum)
        } else {
            Resources::default()
        };
        for (i, t) in tasks.iter().enumerate() {
            let mut res = t.resources.clone().normalized();
            if i == 0 {
                res.add_assign(&exec_res);
            }
            if let Some(a) = self.agents.get_mut(agent_id) {
                a.pending.add_assign(&res);
                a.pending_roles
                    .entry(role.to_owned())
                    .or_default()
                    .add_assign(&res);
            }
            if let Some(f) = self.frameworks.get_mut(fw) {
                f.pending
                    .entry(role.to_owned())
                    .or_default()
                    .add_assign(&res);
            }
            self.pending_launches.insert(
                TaskKey {
                    framework_id: fw.clone(),
                    task_id: t.task_id.clone(),
                },
                PendingLaunch {
                    agent_id: agent_id.clone(),
                    role: role.to_owned(),
                    resources: res,
                },
            );
        }
        let at_ms = self.wall_ms();
        self.propose(
            RegistryOp::TasksAdded {
                framework_id: fw.clone(),
                agent_id: agent_id.clone(),
                role: role.to_owned(),
                executor,
                tasks,
                at_ms,
            },
            Then::Nothing,
        );
    }

    /// `TasksAdded` committed: each task it recorded on this agent (still staging) goes to the
    /// agent in one `RunTasks`.
    pub(super) fn launch_committed(
        &mut self,
        framework_id: &FrameworkId,
        agent_id: &AgentId,
        executor: Option<ExecutorInfo>,
        tasks: Vec<TaskInfo>,
    ) {
        let mut launched = Vec::new();
        for t in tasks {
            let key = TaskKey {
                framework_id: framework_id.clone(),
                task_id: t.task_id.clone(),
            };
            self.release_pending(&key);
            let here = self
                .registry
                .task(&key)
                .is_some_and(|e| e.agent_id == *agent_id && e.state == TaskState::Staging);
            if here {
                self.time_launch(key);
                launched.push(t);
            }
        }
        let summary = self
            .registry
            .frameworks()
            .get(framework_id)
            .map(|f| FrameworkSummary {
                id: framework_id.clone(),
                name: f.info.name.clone(),
                principal: f.principal.clone().unwrap_or_default(),
            });
        if let (Some(framework), false) = (summary, launched.is_empty()) {
            self.send_agent(
                agent_id,
                MasterToAgent::RunTasks {
                    framework,
                    executor,
                    tasks: launched,
                },
            );
        }
        self.request_allocation();
    }

    /// Returns a launch's pending reservation (its commit made the resources used, or it was
    /// dropped).
    pub(super) fn release_pending(&mut self, key: &TaskKey) {
        let Some(p) = self.pending_launches.remove(key) else {
            return;
        };
        if let Some(a) = self.agents.get_mut(&p.agent_id) {
            a.pending = a.pending.saturating_sub(&p.resources);
            if let Some(r) = a.pending_roles.get_mut(&p.role) {
                *r = r.saturating_sub(&p.resources);
                if r.is_empty() {
                    a.pending_roles.remove(&p.role);
                }
            }
        }
        if let Some(f) = self.frameworks.get_mut(&key.framework_id) {
            if let Some(r) = f.pending.get_mut(&p.role) {
                *r = r.saturating_sub(&p.resources);
                if r.is_empty() {
                    f.pending.remove(&p.role);
                }
            }
        }
    }
}

/// The offers an Accept consumed: one agent, one role, and what is left of them.
struct AcceptedOffers {
    agent_id: AgentId,
    agent_ix: u32,
    fw_ix: u32,
    role: String,
    remaining: Resources,
}

/// Why an Accept is too large to look at, if it is.
fn accept_size_problem(
    offer_ids: &[OfferId],
    operations: &[OfferOperation],
    tasks: usize,
) -> Option<String> {
    if offer_ids.is_empty() {
        Some("accept names no offers".into())
    } else if offer_ids.len() > limits::MAX_OFFERS_PER_CALL {
        Some(format!(
            "accept names more than {} offers",
            limits::MAX_OFFERS_PER_CALL
        ))
    } else if operations.len() > limits::MAX_OPERATIONS_PER_ACCEPT {
        Some(format!(
            "accept has more than {} operations",
            limits::MAX_OPERATIONS_PER_ACCEPT
        ))
    } else if tasks > limits::MAX_TASKS_PER_ACCEPT {
        Some(format!(
            "accept has more than {} tasks",
            limits::MAX_TASKS_PER_ACCEPT
        ))
    } else {
        None
    }
}

/// Launch latency (commit → TASK_RUNNING), for the daemon's metrics.
impl Master {
    /// Starts timing a launch whose `TasksAdded` just committed.
    fn time_launch(&mut self, key: TaskKey) {
        if self.launch_committed_at.len() >= limits::MAX_TIMED_LAUNCHES {
            // Tasks lost without a word from their agent leave entries: drop the ones no
            // longer staging before giving up on timing this one.
            let registry = &self.registry;
            self.launch_committed_at.retain(|k, _| {
                registry
                    .task(k)
                    .is_some_and(|t| t.state == TaskState::Staging)
            });
            if self.launch_committed_at.len() >= limits::MAX_TIMED_LAUNCHES {
                return;
            }
        }
        self.launch_committed_at.insert(key, self.now);
    }

    /// An agent reported `state` for the task: the first report past staging ends its timing,
    /// and a TASK_RUNNING one is kept as a launch latency.
    pub(super) fn launch_reported(&mut self, key: &TaskKey, state: TaskState) {
        if matches!(state, TaskState::Staging | TaskState::Starting) {
            return;
        }
        let Some(committed) = self.launch_committed_at.remove(key) else {
            return;
        };
        if state == TaskState::Running && self.launch_latencies.len() < limits::MAX_LAUNCH_LATENCIES
        {
            self.launch_latencies
                .push(self.now.saturating_duration_since(committed));
        }
    }
}
