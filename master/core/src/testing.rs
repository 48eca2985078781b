//! `Sim`: a deterministic harness for the master core. A virtual clock jumps from deadline to
//! deadline ([`Master::poll_timeout`]); agents and frameworks are sessions driven in memory, with
//! optional scripted behaviour (agents run what they are told and report it; frameworks launch a
//! workload from their offers); every `Propose` is committed at once, in order, as the
//! single-master daemon does, unless `auto_commit` is off. No threads, no sleeps.
//!
//! Failover ([`Sim::leader_change`], in `testing/failover.rs`): the harness keeps the registry
//! as the replicated log has it (`replicated`), so a leader change can drop the proposals not
//! yet committed, commit some the deposed leader never saw committed, rebuild the core with
//! [`Master::with_registry`] and reconnect every session, as the daemon and its clients do.

mod failover;

use crate::{Master, MasterConfig, Output, ProposalId, Registry, RegistryOp, SessionId, TaskKey};
use proto::{
    AgentId, AgentInfo, AgentToMaster, ClientFrame, CommandInfo, Filters, FrameworkCall,
    FrameworkEvent, FrameworkId, FrameworkInfo, MasterToAgent, Offer, OfferId, OfferOperation,
    PeerIdentity, Resources, Role, ServerFrame, StatusSource, StatusUuid, TaskId, TaskInfo,
    TaskReport, TaskState, TaskStatus,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// What a scripted framework runs.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Resources of each task.
    pub task: Resources,
    /// Tasks to launch in total.
    pub tasks: u64,
    /// At most this many tasks from one offer (1 lets DRF interleave frameworks).
    pub per_offer: usize,
    /// `refuse_seconds` on accepts (the unused remainder); 0 = no filter.
    pub accept_refuse: f64,
    /// `refuse_seconds` when an offer fits nothing.
    pub decline_refuse: f64,
    /// Never answer offers (to test the offer timeout).
    pub hoard: bool,
}

impl Workload {
    pub fn new(task: &str, tasks: u64) -> Workload {
        Workload {
            task: task.parse().unwrap_or_default(),
            tasks,
            per_offer: 1,
            accept_refuse: 0.0,
            decline_refuse: 5.0,
            hoard: false,
        }
    }
}

/// A framework session as the harness sees it.
#[derive(Debug, Default)]
pub struct SimFramework {
    pub name: String,
    pub framework_id: Option<FrameworkId>,
    pub workload: Option<Workload>,
    /// Offers received and neither used, declined nor rescinded.
    pub offers: BTreeMap<OfferId, Offer>,
    pub offers_received: u64,
    pub rescinds: u64,
    pub launched: u64,
    /// Latest state per task.
    pub tasks: BTreeMap<TaskId, TaskState>,
    /// Every distinct terminal state seen per task (must never exceed one).
    pub terminal: BTreeMap<TaskId, BTreeSet<TaskState>>,
    /// Non-terminal updates received after a terminal one for the same task id (must stay
    /// empty unless the test reuses the id of a task refused at launch).
    pub after_terminal: Vec<TaskStatus>,
    /// Every update received, in order.
    pub updates: Vec<TaskStatus>,
    pub auto_ack: bool,
    /// Acknowledgements not sent yet (updates received while `auto_ack` was off), for
    /// [`Sim::acknowledge_all`].
    pub unacked: Vec<FrameworkCall>,
    pub errors: Vec<String>,
    /// What it subscribes with (its id is added when it re-subscribes).
    pub info: Option<FrameworkInfo>,
    /// Ids of the tasks it asked to launch.
    pub accepted: BTreeSet<TaskId>,
    /// On a re-subscription, reconcile every task it launched and has no terminal state for
    /// (as `corral run` and Mesos frameworks do after a lost connection).
    pub reconcile_on_resubscribe: bool,
}

impl SimFramework {
    pub fn running(&self) -> usize {
        self.tasks
            .values()
            .filter(|s| {
                matches!(
                    s,
                    TaskState::Running | TaskState::Staging | TaskState::Starting
                )
            })
            .count()
    }
}

/// An agent session as the harness sees it.
#[derive(Debug)]
pub struct SimAgent {
    pub name: String,
    pub agent_id: Option<AgentId>,
    pub resources: Resources,
    /// Its static reservations, by role (part of `resources`).
    pub reserved: BTreeMap<String, Resources>,
    /// Answers RunTasks/KillTask itself when true.
    pub auto: bool,
    /// Sends heartbeats when true (false simulates a partition).
    pub heartbeats: bool,
    pub tasks: BTreeMap<TaskKey, (TaskInfo, TaskState)>,
    /// The update of each task sent and not acknowledged, resent on re-registration.
    pub unacked: BTreeMap<TaskKey, TaskStatus>,
    /// Later updates of a task waiting for the acknowledgement of its `unacked` one: a task's
    /// updates leave one at a time, in order, as from a real agent.
    pub queued: BTreeMap<TaskKey, VecDeque<TaskStatus>>,
    pub seq: u64,
    pub received: Vec<MasterToAgent>,
}

impl SimAgent {
    /// The tasks it reports when it (re-)registers: every task it received a `RunTasks` for.
    fn reports(&self) -> Vec<TaskReport> {
        self.tasks
            .iter()
            .map(|(k, (t, st))| TaskReport {
                framework_id: k.framework_id.clone(),
                task: t.clone(),
                state: *st,
            })
            .collect()
    }
}

pub struct Sim {
    pub master: Master,
    pub now: Instant,
    next_session: SessionId,
    /// Frames received per session, not yet taken by the test.
    pub inbox: BTreeMap<SessionId, Vec<ServerFrame>>,
    pub closed: BTreeMap<SessionId, String>,
    pub open: BTreeSet<SessionId>,
    pub agents: BTreeMap<SessionId, SimAgent>,
    pub frameworks: BTreeMap<SessionId, SimFramework>,
    /// Every op committed, in order (those a deposed leader never saw included).
    pub committed: Vec<RegistryOp>,
    /// The registry as the replicated log has it: `committed` applied in order. A new leader
    /// starts from it.
    pub replicated: Registry,
    /// Every task a committed `TasksAdded` added, with its agent.
    pub launches: BTreeMap<TaskKey, AgentId>,
    /// `RunTasks` received per task, by any agent (more than one is a task run twice).
    pub runs: BTreeMap<TaskKey, u32>,
    /// Leader changes so far (each new leader gets its own id prefix, as in the daemon).
    pub leader_changes: u64,
    /// Proposals lost with a deposed leader.
    pub dropped: Vec<RegistryOp>,
    /// When false, proposals wait in `held` until [`Sim::commit_held`].
    pub auto_commit: bool,
    pub held: VecDeque<RegistryOp>,
    /// The id the core gave each op of `held` (same positions).
    held_ids: VecDeque<ProposalId>,
    inputs: VecDeque<(SessionId, ClientFrame)>,
    next_uuid: u64,
    heartbeat_every: Duration,
    next_heartbeat: Instant,
    /// Keep at most this many frames per inbox (oldest dropped): long runs stay bounded.
    pub inbox_cap: usize,
    /// Agents resend their unacknowledged updates this often (at their heartbeats), as real
    /// agents do with backoff; `None`: only when they re-register.
    pub resend_unacked: Option<Duration>,
    last_resend: Instant,
    /// Who connected each session (to reconnect it after a leader change).
    peers: BTreeMap<SessionId, PeerIdentity>,
    /// The first leader's configuration; later leaders differ in id prefix and wall clock.
    config: MasterConfig,
    start: Instant,
}

impl Sim {
    pub fn new(config: MasterConfig, start: Instant) -> Sim {
        let heartbeat_every = config.agent_heartbeat_interval;
        Sim {
            master: Master::new(config.clone(), start),
            now: start,
            next_session: 0,
            inbox: BTreeMap::new(),
            closed: BTreeMap::new(),
            open: BTreeSet::new(),
            agents: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            committed: Vec::new(),
            replicated: Registry::default(),
            launches: BTreeMap::new(),
            runs: BTreeMap::new(),
            leader_changes: 0,
            dropped: Vec::new(),
            auto_commit: true,
            held: VecDeque::new(),
            held_ids: VecDeque::new(),
            inputs: VecDeque::new(),
            next_uuid: 0,
            heartbeat_every,
            next_heartbeat: start + heartbeat_every,
            inbox_cap: 10_000,
            resend_unacked: None,
            last_resend: start,
            peers: BTreeMap::new(),
            config,
            start,
        }
    }

    pub fn connect(&mut self, role: Role, name: &str) -> SessionId {
        self.next_session += 1;
        let s = self.next_session;
        self.open.insert(s);
        let peer = PeerIdentity {
            role,
            name: name.to_owned(),
        };
        self.peers.insert(s, peer.clone());
        self.master.handle_connected(self.now, s, peer);
        self.pump();
        s
    }

    pub fn send(&mut self, session: SessionId, frame: ClientFrame) {
        self.inputs.push_back((session, frame));
        self.pump();
    }

    pub fn disconnect(&mut self, session: SessionId) {
        if self.open.remove(&session) {
            self.master.handle_disconnected(self.now, session);
        }
        self.pump();
    }

    /// Frames received by `session` since the last call.
    pub fn take(&mut self, session: SessionId) -> Vec<ServerFrame> {
        self.inbox.remove(&session).unwrap_or_default()
    }

    /// Connects an agent and registers it; it runs tasks itself when `auto`. `resources` may
    /// reserve for roles (`cpus(batch):2;cpus:2`).
    pub fn add_agent(&mut self, name: &str, resources: &str, auto: bool) -> SessionId {
        let (resources, reserved) = proto::parse_reserved_resources(resources).unwrap_or_default();
        let s = self.connect(Role::Agent, name);
        self.agents.insert(
            s,
            SimAgent {
                name: name.to_owned(),
                agent_id: None,
                resources: resources.clone(),
                reserved: reserved.clone(),
                auto,
                heartbeats: true,
                tasks: BTreeMap::new(),
                unacked: BTreeMap::new(),
                queued: BTreeMap::new(),
                seq: 0,
                received: Vec::new(),
            },
        );
        self.send(
            s,
            ClientFrame::Agent(AgentToMaster::Register {
                agent_id: None,
                info: AgentInfo {
                    reserved,
                    ..agent_info(name, resources)
                },
                tasks: Vec::new(),
            }),
        );
        s
    }

    pub fn agent_id(&self, session: SessionId) -> AgentId {
        self.agents
            .get(&session)
            .and_then(|a| a.agent_id.clone())
            .unwrap_or_else(|| AgentId::new("?"))
    }

    /// Re-registers an agent on a new session with its task reports, then resends its unacked
    /// updates (what a real agent does after a partition or a master failover).
    pub fn reconnect_agent(&mut self, old: SessionId) -> SessionId {
        self.disconnect(old);
        let Some(mut agent) = self.agents.remove(&old) else {
            return old;
        };
        agent.heartbeats = true;
        let name = agent.name.clone();
        let reports = agent.reports();
        let info = AgentInfo {
            reserved: agent.reserved.clone(),
            ..agent_info(&name, agent.resources.clone())
        };
        let id = agent.agent_id.clone();
        let s = self.connect(Role::Agent, &name);
        self.agents.insert(s, agent);
        self.send(
            s,
            ClientFrame::Agent(AgentToMaster::Register {
                agent_id: id,
                info,
                tasks: reports,
            }),
        );
        self.resend_updates(s);
        self.pump();
        s
    }

    /// Queues a resend of every update the agent on `session` sent and has no
    /// acknowledgement for.
    fn resend_updates(&mut self, session: SessionId) {
        let Some(agent) = self.agents.get(&session) else {
            return;
        };
        for (k, status) in &agent.unacked {
            let frame = ClientFrame::Agent(AgentToMaster::StatusUpdate {
                framework_id: k.framework_id.clone(),
                status: status.clone(),
            });
            self.inputs.push_back((session, frame));
        }
    }

    /// Subscribes a framework; with a workload it launches tasks from its offers by itself.
    pub fn add_framework(
        &mut self,
        name: &str,
        roles: &[&str],
        workload: Option<Workload>,
    ) -> SessionId {
        let info = framework_info(name, roles);
        self.add_framework_with(name, info, workload)
    }

    pub fn add_framework_with(
        &mut self,
        name: &str,
        info: FrameworkInfo,
        workload: Option<Workload>,
    ) -> SessionId {
        let s = self.connect(Role::Framework, name);
        self.frameworks.insert(
            s,
            SimFramework {
                name: name.to_owned(),
                workload,
                auto_ack: true,
                info: Some(info.clone()),
                ..Default::default()
            },
        );
        self.send(s, ClientFrame::Framework(FrameworkCall::Subscribe { info }));
        s
    }

    /// Re-subscribes a framework on a new session with its id (a scheduler failover).
    pub fn reconnect_framework(&mut self, old: SessionId, info: FrameworkInfo) -> SessionId {
        self.disconnect(old);
        let Some(mut fw) = self.frameworks.remove(&old) else {
            return old;
        };
        fw.offers.clear();
        // Acknowledgements it had not sent are lost with the connection.
        fw.unacked.clear();
        let name = fw.name.clone();
        let mut info = info;
        info.id = fw.framework_id.clone();
        fw.info = Some(info.clone());
        let s = self.connect(Role::Framework, &name);
        self.frameworks.insert(s, fw);
        self.send(s, ClientFrame::Framework(FrameworkCall::Subscribe { info }));
        s
    }

    pub fn framework_id(&self, session: SessionId) -> FrameworkId {
        self.frameworks
            .get(&session)
            .and_then(|f| f.framework_id.clone())
            .unwrap_or_else(|| FrameworkId::new("?"))
    }

    pub fn framework(&self, session: SessionId) -> &SimFramework {
        static EMPTY: std::sync::OnceLock<SimFramework> = std::sync::OnceLock::new();
        self.frameworks
            .get(&session)
            .unwrap_or_else(|| EMPTY.get_or_init(SimFramework::default))
    }

    /// The framework on `session` acknowledges every update it holds an acknowledgement for.
    pub fn acknowledge_all(&mut self, session: SessionId) {
        let acks = match self.frameworks.get_mut(&session) {
            Some(f) => std::mem::take(&mut f.unacked),
            None => return,
        };
        for ack in acks {
            self.inputs
                .push_back((session, ClientFrame::Framework(ack)));
        }
        self.pump();
    }

    /// Advances virtual time by `d`, firing every deadline on the way (and agent heartbeats).
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        loop {
            let mut next = self.next_heartbeat;
            if let Some(t) = self.master.poll_timeout() {
                next = next.min(t);
            }
            if next > target {
                break;
            }
            self.now = self.now.max(next);
            if self.next_heartbeat <= self.now {
                self.next_heartbeat = self.now + self.heartbeat_every;
                let resend = self
                    .resend_unacked
                    .is_some_and(|d| self.now >= self.last_resend + d);
                if resend {
                    self.last_resend = self.now;
                }
                let beating: Vec<SessionId> = self
                    .agents
                    .iter()
                    .filter(|(s, a)| a.heartbeats && self.open.contains(s))
                    .map(|(s, _)| *s)
                    .collect();
                for s in beating {
                    self.inputs
                        .push_back((s, ClientFrame::Agent(AgentToMaster::Heartbeat)));
                    if resend {
                        self.resend_updates(s);
                    }
                }
            }
            self.master.handle_timeout(self.now);
            self.pump();
        }
        self.now = target;
        self.master.handle_timeout(self.now);
        self.pump();
    }

    /// Commits `n` held proposals (with `auto_commit` off).
    pub fn commit_held(&mut self, n: usize) {
        for _ in 0..n {
            let Some(op) = self.held.pop_front() else {
                break;
            };
            self.commit(op, true);
            self.pump();
        }
    }

    /// Commits `op`, the first held proposal, to the replicated log; the leader learns of it
    /// (with its proposal id) when `leader_sees`.
    fn commit(&mut self, op: RegistryOp, leader_sees: bool) {
        let id = self.held_ids.pop_front();
        let mut added = Vec::new();
        if let RegistryOp::TasksAdded {
            framework_id,
            agent_id,
            tasks,
            ..
        } = &op
        {
            for t in tasks {
                let key = TaskKey {
                    framework_id: framework_id.clone(),
                    task_id: t.task_id.clone(),
                };
                if self.replicated.task(&key).is_none() {
                    added.push((key, agent_id.clone()));
                }
            }
        }
        self.replicated.apply(&op);
        for (key, agent_id) in added {
            if self
                .replicated
                .task(&key)
                .is_some_and(|t| t.agent_id == agent_id)
            {
                self.launches.insert(key, agent_id);
            }
        }
        self.committed.push(op.clone());
        if leader_sees {
            match id {
                Some(id) => self.master.handle_proposal_committed(self.now, id, op),
                None => self.master.handle_committed(self.now, op),
            }
        }
    }

    /// Delivers outputs and queued inputs until nothing is left.
    pub fn pump(&mut self) {
        loop {
            while let Some(out) = self.master.poll_output() {
                match out {
                    Output::Propose { id, op } => {
                        self.held.push_back(op);
                        self.held_ids.push_back(id);
                    }
                    Output::Send { to, frame } => self.deliver(to, frame),
                    Output::Close { session, reason } => {
                        self.closed.insert(session, reason);
                        if self.open.remove(&session) {
                            self.master.handle_disconnected(self.now, session);
                        }
                    }
                }
            }
            if self.auto_commit {
                if let Some(op) = self.held.pop_front() {
                    self.commit(op, true);
                    continue;
                }
            }
            if let Some((s, f)) = self.inputs.pop_front() {
                if self.open.contains(&s) {
                    self.master.handle_message(self.now, s, f);
                }
                continue;
            }
            break;
        }
    }

    fn deliver(&mut self, to: SessionId, frame: ServerFrame) {
        if !self.open.contains(&to) {
            return;
        }
        match &frame {
            ServerFrame::Agent(m) => self.agent_reacts(to, m.clone()),
            ServerFrame::Framework(e) => self.framework_reacts(to, e.clone()),
            ServerFrame::Error(e) => {
                if let Some(f) = self.frameworks.get_mut(&to) {
                    f.errors.push(e.message.clone());
                }
            }
            _ => {}
        }
        let inbox = self.inbox.entry(to).or_default();
        if inbox.len() >= self.inbox_cap {
            inbox.remove(0);
        }
        inbox.push(frame);
    }

    fn uuid(&mut self) -> StatusUuid {
        self.next_uuid += 1;
        StatusUuid(format!("u{}", self.next_uuid))
    }

    /// Makes an agent report a state change of one of its tasks (as its executor would).
    pub fn agent_update(&mut self, session: SessionId, key: &TaskKey, state: TaskState) {
        let uuid = self.uuid();
        let Some(agent) = self.agents.get_mut(&session) else {
            return;
        };
        let Some((info, st)) = agent.tasks.get_mut(key) else {
            return;
        };
        if st.is_terminal() {
            return;
        }
        *st = state;
        agent.seq += 1;
        let mut status = TaskStatus::new(key.task_id.clone(), state, StatusSource::Executor);
        status.agent_id = agent.agent_id.clone();
        status.uuid = Some(uuid);
        status.seq = agent.seq;
        let _ = info;
        if agent.unacked.contains_key(key) {
            agent
                .queued
                .entry(key.clone())
                .or_default()
                .push_back(status);
            return;
        }
        agent.unacked.insert(key.clone(), status.clone());
        self.inputs.push_back((
            session,
            ClientFrame::Agent(AgentToMaster::StatusUpdate {
                framework_id: key.framework_id.clone(),
                status,
            }),
        ));
    }

    fn agent_reacts(&mut self, session: SessionId, msg: MasterToAgent) {
        let Some(agent) = self.agents.get_mut(&session) else {
            return;
        };
        agent.received.push(msg.clone());
        if agent.received.len() > 1_000 {
            agent.received.remove(0);
        }
        match msg {
            MasterToAgent::Registered { agent_id, .. } => agent.agent_id = Some(agent_id),
            MasterToAgent::AcknowledgeUpdate {
                framework_id,
                task_id,
                uuid,
            } => {
                let key = TaskKey {
                    framework_id,
                    task_id,
                };
                if agent.unacked.get(&key).and_then(|s| s.uuid.as_ref()) == Some(&uuid) {
                    agent.unacked.remove(&key);
                    let next = agent.queued.get_mut(&key).and_then(VecDeque::pop_front);
                    if agent.queued.get(&key).is_some_and(VecDeque::is_empty) {
                        agent.queued.remove(&key);
                    }
                    if let Some(status) = next {
                        agent.unacked.insert(key.clone(), status.clone());
                        let frame = ClientFrame::Agent(AgentToMaster::StatusUpdate {
                            framework_id: key.framework_id,
                            status,
                        });
                        self.inputs.push_back((session, frame));
                    }
                }
            }
            MasterToAgent::RunTasks {
                framework, tasks, ..
            } => {
                let auto = agent.auto;
                let mut keys = Vec::new();
                for t in tasks {
                    let key = TaskKey {
                        framework_id: framework.id.clone(),
                        task_id: t.task_id.clone(),
                    };
                    *self.runs.entry(key.clone()).or_default() += 1;
                    // A real agent refuses a task id it already runs; keep the first.
                    let Some(agent) = self.agents.get_mut(&session) else {
                        return;
                    };
                    if agent.tasks.contains_key(&key) {
                        continue;
                    }
                    agent.tasks.insert(key.clone(), (t, TaskState::Staging));
                    keys.push(key);
                }
                if auto {
                    for k in keys {
                        self.agent_update(session, &k, TaskState::Running);
                    }
                }
            }
            MasterToAgent::KillTask {
                framework_id,
                task_id,
                ..
            } => {
                let key = TaskKey {
                    framework_id,
                    task_id,
                };
                if agent.auto {
                    self.agent_update(session, &key, TaskState::Killed);
                }
            }
            MasterToAgent::ShutdownFramework { framework_id } if agent.auto => {
                let keys: Vec<TaskKey> = agent
                    .tasks
                    .keys()
                    .filter(|k| k.framework_id == framework_id)
                    .cloned()
                    .collect();
                for k in keys {
                    self.agent_update(session, &k, TaskState::Killed);
                }
            }
            _ => {}
        }
    }

    fn framework_reacts(&mut self, session: SessionId, ev: FrameworkEvent) {
        let Some(fw) = self.frameworks.get_mut(&session) else {
            return;
        };
        match ev {
            FrameworkEvent::Subscribed { framework_id, .. } => {
                let again = fw.framework_id.as_ref() == Some(&framework_id);
                fw.framework_id = Some(framework_id);
                if again && fw.reconcile_on_resubscribe {
                    self.reconcile_open_tasks(session);
                }
            }
            FrameworkEvent::Offers { offers } => {
                fw.offers_received += offers.len() as u64;
                for o in offers {
                    fw.offers.insert(o.id.clone(), o);
                }
                self.run_workload(session);
            }
            FrameworkEvent::Rescind { offer_id } => {
                fw.rescinds += 1;
                fw.offers.remove(&offer_id);
            }
            FrameworkEvent::Update { status } => {
                if !status.state.is_terminal() && fw.terminal.contains_key(&status.task_id) {
                    fw.after_terminal.push(status.clone());
                }
                fw.tasks.insert(status.task_id.clone(), status.state);
                if status.state.is_terminal() {
                    fw.terminal
                        .entry(status.task_id.clone())
                        .or_default()
                        .insert(status.state);
                }
                if let (Some(uuid), Some(agent_id)) = (&status.uuid, &status.agent_id) {
                    let ack = FrameworkCall::Acknowledge {
                        agent_id: agent_id.clone(),
                        task_id: status.task_id.clone(),
                        uuid: uuid.clone(),
                    };
                    if fw.auto_ack {
                        self.inputs
                            .push_back((session, ClientFrame::Framework(ack)));
                    } else if fw.unacked.len() < 10_000 {
                        fw.unacked.push(ack);
                    }
                }
                if let Some(fw) = self.frameworks.get_mut(&session) {
                    fw.updates.push(status);
                    if fw.updates.len() > 10_000 {
                        fw.updates.remove(0);
                    }
                }
            }
            FrameworkEvent::Error { message } => fw.errors.push(message),
            _ => {}
        }
    }

    fn run_workload(&mut self, session: SessionId) {
        let Some(fw) = self.frameworks.get_mut(&session) else {
            return;
        };
        let Some(w) = fw.workload.clone() else {
            return;
        };
        if w.hoard {
            return;
        }
        let offers: Vec<Offer> = std::mem::take(&mut fw.offers).into_values().collect();
        for offer in offers {
            let mut left = offer.resources.clone();
            let mut tasks = Vec::new();
            while fw.launched < w.tasks && tasks.len() < w.per_offer.max(1) {
                let Some(rest) = left.checked_sub(&w.task) else {
                    break;
                };
                left = rest;
                fw.launched += 1;
                fw.accepted
                    .insert(TaskId(format!("{}-t{}", fw.name, fw.launched)));
                tasks.push(TaskInfo {
                    task_id: TaskId(format!("{}-t{}", fw.name, fw.launched)),
                    name: format!("{} task {}", fw.name, fw.launched),
                    agent_id: offer.agent_id.clone(),
                    resources: w.task.clone(),
                    command: CommandInfo::shell("sleep 1000"),
                    container: Default::default(),
                    kill_grace_ms: None,
                    labels: Default::default(),
                });
            }
            let call = if tasks.is_empty() {
                FrameworkCall::Decline {
                    offer_ids: vec![offer.id],
                    filters: Some(Filters {
                        refuse_seconds: Some(w.decline_refuse),
                    }),
                }
            } else {
                FrameworkCall::Accept {
                    offer_ids: vec![offer.id],
                    operations: vec![OfferOperation::Launch { tasks }],
                    filters: Some(Filters {
                        refuse_seconds: Some(w.accept_refuse),
                    }),
                }
            };
            self.inputs
                .push_back((session, ClientFrame::Framework(call)));
        }
    }

    /// Checks the master's bookkeeping: no agent has more used + offered than its total.
    pub fn check_no_overcommit(&self) -> Result<(), String> {
        for a in self.master.snapshot().agents {
            let committed = a.used.add(&a.offered);
            if committed.cpus_milli > a.total.cpus_milli
                || committed.mem_bytes > a.total.mem_bytes
                || committed.disk_bytes > a.total.disk_bytes
            {
                return Err(format!(
                    "agent {} over-committed: used {} + offered {} > total {}",
                    a.id, a.used, a.offered, a.total
                ));
            }
        }
        Ok(())
    }
}

pub fn agent_info(name: &str, resources: Resources) -> AgentInfo {
    AgentInfo {
        hostname: name.to_owned(),
        resources,
        attributes: BTreeMap::new(),
        version: Default::default(),
        software_version: "sim".into(),
        reserved: BTreeMap::new(),
    }
}

pub fn framework_info(name: &str, roles: &[&str]) -> FrameworkInfo {
    FrameworkInfo {
        id: None,
        name: name.to_owned(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        failover_timeout_ms: 60_000,
        capabilities: Vec::new(),
        version: Default::default(),
    }
}

/// A task for manual launches in tests.
pub fn task(id: &str, agent: &AgentId, resources: &str) -> TaskInfo {
    TaskInfo {
        task_id: TaskId::new(id),
        name: id.to_owned(),
        agent_id: agent.clone(),
        resources: resources.parse().unwrap_or_default(),
        command: CommandInfo::shell("true"),
        container: Default::default(),
        kill_grace_ms: None,
        labels: Default::default(),
    }
}
