//! The master state machine: sessions, offers, filters, timers and the reactions to committed
//! registry operations. See the crate documentation for the event loop contract.

use crate::allocator::{self, AgentFilters, Allocator, ClusterView, Filter, FrameworkRole};
use crate::config::{limits, MasterConfig};
use crate::fastmap::FastMap;
use crate::registry::{AgentMark, Registry, RegistryOp, TaskEntry, TaskKey};
use crate::table::Table;
use crate::timers::{TimerKey, Timers};
use proto::{
    AgentId, AgentStatus, AgentToMaster, ClientFrame, ClusterState, ErrorCode, ErrorReply,
    ExecutorInfo, FrameworkCall, FrameworkEvent, FrameworkId, FrameworkInfo, FrameworkSummary,
    MasterToAgent, MastersState, NodePressure, Offer, OfferId, OfferOperation, OperatorCall,
    OperatorReply, PeerIdentity, ReconcileTask, ResourceUsage, Resources, Role, ServerFrame,
    StatusReason, StatusSource, StatusUuid, TaskId, TaskInfo, TaskReport, TaskState, TaskStatus,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// One client stream: an agent or framework session, or one operator call.
pub type SessionId = u64;

/// What the core asks the daemon to do, drained with [`Master::poll_output`] in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Send {
        to: SessionId,
        frame: ServerFrame,
    },
    /// Close the stream (after the frames sent before it).
    Close {
        session: SessionId,
        reason: String,
    },
    /// Replicate this op; call [`Master::handle_committed`] with it once committed, in the order
    /// proposed. Nothing that depends on it is sent before that.
    Propose(RegistryOp),
}

#[derive(Clone, Debug, PartialEq)]
enum SessionKind {
    /// Connected, no first frame yet (or an operator call).
    New,
    Agent(AgentId),
    Framework(FrameworkId),
}

struct Session {
    peer: PeerIdentity,
    kind: SessionKind,
}

/// Soft (unreplicated) state of an agent.
struct AgentRt {
    session: Option<SessionId>,
    last_seen: Instant,
    /// How long the agent may be silent before it is unreachable (longer right after failover).
    silence_limit: Duration,
    /// Cpus, memory and disk offered (the ports offered are read from `offers`).
    offered: Resources,
    /// Launches proposed and not yet committed.
    pending: Resources,
    /// Outstanding offers of this agent (numeric offer keys).
    offers: BTreeSet<u64>,
    /// Refusal filters on this agent, by framework index.
    filters: AgentFilters,
    usage: BTreeMap<TaskKey, ResourceUsage>,
    /// The node's pressure from the agent's latest usage report (never replicated: a new
    /// leader knows it from the next report).
    pressure: Option<NodePressure>,
}

/// Soft state of a framework.
struct FrameworkRt {
    session: Option<SessionId>,
    disconnected_at: Option<Instant>,
    suppressed: BTreeSet<String>,
    /// The agents (indexes) on which this framework has a refusal filter; the filters
    /// themselves live with the agents.
    filtered: BTreeSet<u32>,
    /// Cpus, memory and disk offered, per role (the ports offered are read from `offers`).
    offered: BTreeMap<String, Resources>,
    pending: BTreeMap<String, Resources>,
    /// Outstanding offers of this framework (numeric offer keys).
    offers: BTreeSet<u64>,
    /// Since when the framework has wanted offers without getting one.
    wanting_since: Instant,
}

impl FrameworkRt {
    fn new(now: Instant) -> Self {
        FrameworkRt {
            session: None,
            disconnected_at: Some(now),
            suppressed: BTreeSet::new(),
            filtered: BTreeSet::new(),
            offered: BTreeMap::new(),
            pending: BTreeMap::new(),
            offers: BTreeSet::new(),
            wanting_since: now,
        }
    }
}

/// An outstanding offer. Keyed by the number in its id (`<prefix>-O<n>`); it names its framework
/// and agent by their dense indexes, which stay valid while it exists (both rescind their
/// offers before they go).
struct OfferRt {
    framework: u32,
    agent: u32,
    role: String,
    resources: Resources,
}

/// `a -= b` for cpus, memory and disk, floored at zero.
fn sub_scalars(a: &mut Resources, b: &Resources) {
    a.cpus_milli = a.cpus_milli.saturating_sub(b.cpus_milli);
    a.mem_bytes = a.mem_bytes.saturating_sub(b.mem_bytes);
    a.disk_bytes = a.disk_bytes.saturating_sub(b.disk_bytes);
}

/// `prefix-<kind><n>`, the form of every generated id, written without `format!`.
fn make_id(prefix: &str, kind: char, n: u64) -> String {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut id = String::with_capacity(prefix.len() + 2 + digits.len() - i);
    id.push_str(prefix);
    id.push('-');
    id.push(kind);
    for d in &digits[i..] {
        id.push(char::from(*d));
    }
    id
}

/// The ports of `keys`' offers, normalized. Offers of one agent never overlap, so this is what
/// the agent has offered; for a framework it is the union over its agents.
fn offered_ports(offers: &FastMap<u64, OfferRt>, keys: &BTreeSet<u64>) -> Vec<proto::PortRange> {
    let ports: Vec<proto::PortRange> = keys
        .iter()
        .filter_map(|k| offers.get(k))
        .flat_map(|o| o.resources.ports.iter().copied())
        .collect();
    if ports.is_empty() {
        return ports;
    }
    Resources::default().with_ports(ports).ports
}

/// What an agent has free: `total - used - offered - pending`, each quantity floored at zero.
/// When nothing holds ports, the free ports are the agent's (the registry keeps them
/// normalized), copied once instead of subtracted.
fn free_resources(
    total: &Resources,
    used: &Resources,
    offered: &Resources,
    pending: &Resources,
) -> Resources {
    if used.ports.is_empty() && offered.ports.is_empty() && pending.ports.is_empty() {
        return Resources {
            cpus_milli: total
                .cpus_milli
                .saturating_sub(used.cpus_milli)
                .saturating_sub(offered.cpus_milli)
                .saturating_sub(pending.cpus_milli),
            mem_bytes: total
                .mem_bytes
                .saturating_sub(used.mem_bytes)
                .saturating_sub(offered.mem_bytes)
                .saturating_sub(pending.mem_bytes),
            disk_bytes: total
                .disk_bytes
                .saturating_sub(used.disk_bytes)
                .saturating_sub(offered.disk_bytes)
                .saturating_sub(pending.disk_bytes),
            ports: total.ports.clone(),
        };
    }
    let mut free = total.saturating_sub(used);
    if !offered.is_empty() {
        free = free.saturating_sub(offered);
    }
    if !pending.is_empty() {
        free = free.saturating_sub(pending);
    }
    free
}

/// Agents and frameworks are admitted alike ([`Master::admit`]): a client may name the id it
/// had, which must be well-formed, not removed, and its own (same certificate name); without
/// one it gets a fresh id; a new id must fit the kind's named limit. What differs per kind:
trait Admitted: Clone + std::fmt::Display {
    /// For messages: "agent", "framework".
    const KIND: &'static str;
    /// The letter of generated ids (`<prefix>-A1`, `<prefix>-F1`).
    const LETTER: char;
    const LIMIT: usize;
    /// What a client whose id was removed is told (after "KIND ID").
    const REMOVED: &'static str;
    fn generated(id: String) -> Self;
    fn valid(id: &Self) -> bool;
    fn known(registry: &Registry, id: &Self) -> bool;
    fn removed(registry: &Registry, id: &Self) -> bool;
    /// The certificate name a known id belongs to (`None`: unknown, or anyone may claim it).
    fn owner<'r>(registry: &'r Registry, id: &Self) -> Option<&'r str>;
    fn count(registry: &Registry) -> usize;
}

impl Admitted for AgentId {
    const KIND: &'static str = "agent";
    const LETTER: char = 'A';
    const LIMIT: usize = limits::MAX_AGENTS;
    const REMOVED: &'static str = "was removed from the cluster; start it afresh";
    fn generated(id: String) -> Self {
        AgentId(id)
    }
    fn valid(_: &Self) -> bool {
        true
    }
    fn known(registry: &Registry, id: &Self) -> bool {
        registry.agents.contains_key(id)
    }
    fn removed(registry: &Registry, id: &Self) -> bool {
        registry.removed_agents.contains(id)
    }
    fn owner<'r>(registry: &'r Registry, id: &Self) -> Option<&'r str> {
        registry.agents.get(id).map(|a| a.principal.as_str())
    }
    fn count(registry: &Registry) -> usize {
        registry.agents.len()
    }
}

impl Admitted for FrameworkId {
    const KIND: &'static str = "framework";
    const LETTER: char = 'F';
    const LIMIT: usize = limits::MAX_FRAMEWORKS;
    const REMOVED: &'static str = "was removed; subscribe without an id";
    fn generated(id: String) -> Self {
        FrameworkId(id)
    }
    fn valid(id: &Self) -> bool {
        !id.0.is_empty() && id.0.len() <= limits::MAX_NAME_LEN
    }
    fn known(registry: &Registry, id: &Self) -> bool {
        registry.frameworks.contains_key(id)
    }
    fn removed(registry: &Registry, id: &Self) -> bool {
        registry.framework_removed(id)
    }
    fn owner<'r>(registry: &'r Registry, id: &Self) -> Option<&'r str> {
        registry.frameworks.get(id)?.principal.as_deref()
    }
    fn count(registry: &Registry) -> usize {
        registry.frameworks.len()
    }
}

struct PendingLaunch {
    agent_id: AgentId,
    role: String,
    resources: Resources,
}

struct LogRequest {
    session: SessionId,
    agent_id: AgentId,
}

/// What to do once a proposed op commits, beyond what the op itself implies.
enum Then {
    Nothing,
    AgentRegistered {
        session: SessionId,
        reports: Vec<TaskReport>,
    },
    FrameworkSubscribed {
        session: SessionId,
    },
    ReplyDone {
        session: SessionId,
    },
}

/// The master. Plain data: every input is a `handle_*` call with the time passed in, every
/// effect an [`Output`].
pub struct Master {
    config: MasterConfig,
    start: Instant,
    now: Instant,
    registry: Registry,
    sessions: BTreeMap<SessionId, Session>,
    agents: Table<AgentId, AgentRt>,
    frameworks: Table<FrameworkId, FrameworkRt>,
    offers: FastMap<u64, OfferRt>,
    pending_launches: BTreeMap<TaskKey, PendingLaunch>,
    /// Kills asked for while the agent was away; re-sent when it re-registers.
    kill_requested: BTreeMap<TaskKey, Option<u64>>,
    /// The last status (by uuid) forwarded per task, and to which session.
    forwarded: BTreeMap<TaskKey, (StatusUuid, SessionId)>,
    /// The last update uuid each framework acknowledged per task. An agent that lost the
    /// acknowledgement (it restarted) resends that update; the master acknowledges it on the
    /// framework's behalf instead of delivering it twice. Bounded by `limits::MAX_ACKED_REMEMBERED`.
    acked: BTreeMap<TaskKey, StatusUuid>,
    log_requests: BTreeMap<u64, LogRequest>,
    in_flight: VecDeque<(RegistryOp, Then)>,
    timers: Timers,
    outputs: VecDeque<Output>,
    allocator: Box<dyn Allocator>,
    next_agent: u64,
    next_framework: u64,
    next_offer: u64,
    next_log_request: u64,
    masters: MastersState,
    generation: u64,
    published_generation: u64,
    allocation_passes: u64,
}

/// Operator-visible counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub allocation_passes: u64,
    pub outstanding_offers: usize,
    pub in_flight_proposals: usize,
    pub sessions: usize,
}

fn err(code: ErrorCode, message: impl Into<String>, fatal: bool) -> ServerFrame {
    ServerFrame::Error(ErrorReply {
        code,
        message: message.into(),
        fatal,
    })
}

fn call_name(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Agent(m) => match m {
            AgentToMaster::Register { .. } => "agent Register",
            AgentToMaster::Heartbeat => "agent Heartbeat",
            AgentToMaster::StatusUpdate { .. } => "agent StatusUpdate",
            AgentToMaster::Usage { .. } => "agent Usage",
            AgentToMaster::LogChunk { .. } => "agent LogChunk",
            AgentToMaster::ExecutorMessage { .. } => "agent ExecutorMessage",
        },
        ClientFrame::Framework(c) => match c {
            FrameworkCall::Subscribe { .. } => "framework Subscribe",
            FrameworkCall::Accept { .. } => "framework Accept",
            FrameworkCall::Decline { .. } => "framework Decline",
            FrameworkCall::Revive { .. } => "framework Revive",
            FrameworkCall::Suppress { .. } => "framework Suppress",
            FrameworkCall::Kill { .. } => "framework Kill",
            FrameworkCall::Acknowledge { .. } => "framework Acknowledge",
            FrameworkCall::Reconcile { .. } => "framework Reconcile",
            FrameworkCall::Message { .. } => "framework Message",
            FrameworkCall::Teardown => "framework Teardown",
            FrameworkCall::Heartbeat => "framework Heartbeat",
        },
        ClientFrame::Operator(c) => match c {
            OperatorCall::GetState => "operator GetState",
            OperatorCall::DrainAgent { .. } => "operator DrainAgent",
            OperatorCall::DeactivateAgent { .. } => "operator DeactivateAgent",
            OperatorCall::ReactivateAgent { .. } => "operator ReactivateAgent",
            OperatorCall::TeardownFramework { .. } => "operator TeardownFramework",
            OperatorCall::KillTask { .. } => "operator KillTask",
            OperatorCall::ReadLog { .. } => "operator ReadLog",
            OperatorCall::AddMaster { .. } => "operator AddMaster",
            OperatorCall::RemoveMaster { .. } => "operator RemoveMaster",
        },
    }
}

/// The role a frame's kind belongs to, for refusal messages.
fn required_role(frame: &ClientFrame) -> Role {
    match frame {
        ClientFrame::Agent(_) => Role::Agent,
        ClientFrame::Framework(_) => Role::Framework,
        ClientFrame::Operator(_) => Role::Operator,
    }
}

/// The role-based call matrix.
pub fn authorized(role: Role, frame: &ClientFrame) -> bool {
    matches!(
        (role, frame),
        (Role::Agent, ClientFrame::Agent(_))
            | (Role::Framework, ClientFrame::Framework(_))
            | (Role::Operator, ClientFrame::Operator(_))
            | (
                Role::Framework,
                ClientFrame::Operator(OperatorCall::KillTask { .. } | OperatorCall::ReadLog { .. })
            )
    )
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

impl Master {
    pub fn new(config: MasterConfig, start: Instant) -> Master {
        Self::with_registry(config, start, Registry::default())
    }

    /// A master taking over `registry` (e.g. a new leader after failover): known frameworks start
    /// disconnected (their failover timeouts run from `start`), known agents have
    /// `agent_reregister_timeout` to re-register.
    pub fn with_registry(config: MasterConfig, start: Instant, registry: Registry) -> Master {
        let allocator = allocator::from_kind(config.allocator);
        let mut m = Master {
            allocator,
            start,
            now: start,
            registry: Registry::default(),
            sessions: BTreeMap::new(),
            agents: Table::default(),
            frameworks: Table::default(),
            offers: FastMap::default(),
            pending_launches: BTreeMap::new(),
            kill_requested: BTreeMap::new(),
            forwarded: BTreeMap::new(),
            acked: BTreeMap::new(),
            log_requests: BTreeMap::new(),
            in_flight: VecDeque::new(),
            timers: Timers::default(),
            outputs: VecDeque::new(),
            next_agent: 0,
            next_framework: 0,
            next_offer: 0,
            next_log_request: 0,
            masters: MastersState::default(),
            generation: 1,
            published_generation: 0,
            allocation_passes: 0,
            config,
        };
        m.timers.set(
            TimerKey::Heartbeat,
            start + m.config.framework_heartbeat_interval,
        );
        m.registry = registry;
        let agent_ids: Vec<AgentId> = m.registry.agents.keys().cloned().collect();
        for id in agent_ids {
            m.adopt_agent(&id);
        }
        let fw_ids: Vec<FrameworkId> = m.registry.frameworks.keys().cloned().collect();
        for id in fw_ids {
            m.adopt_framework(&id);
        }
        m
    }

    pub fn config(&self) -> &MasterConfig {
        &self.config
    }

    /// The replicated state as this master has applied it.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn stats(&self) -> Stats {
        Stats {
            allocation_passes: self.allocation_passes,
            outstanding_offers: self.offers.len(),
            in_flight_proposals: self.in_flight.len(),
            sessions: self.sessions.len(),
        }
    }

    pub fn set_masters_state(&mut self, m: MastersState) {
        self.masters = m;
        self.touch();
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// True when the state changed since [`Master::clear_snapshot_dirty`].
    pub fn snapshot_dirty(&self) -> bool {
        self.generation != self.published_generation
    }

    pub fn clear_snapshot_dirty(&mut self) {
        self.published_generation = self.generation;
    }

    /// Increases on every change; an alternative to the dirty flag.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    // -----------------------------------------------------------------------------------------
    // Inputs
    // -----------------------------------------------------------------------------------------

    pub fn handle_connected(&mut self, now: Instant, session: SessionId, peer: PeerIdentity) {
        self.tick(now);
        if self.sessions.len() >= limits::MAX_SESSIONS {
            self.send(
                session,
                err(ErrorCode::Unavailable, "master has too many sessions", true),
            );
            self.outputs.push_back(Output::Close {
                session,
                reason: "too many sessions".into(),
            });
            return;
        }
        self.sessions.insert(
            session,
            Session {
                peer,
                kind: SessionKind::New,
            },
        );
    }

    pub fn handle_disconnected(&mut self, now: Instant, session: SessionId) {
        self.tick(now);
        self.drop_session(session);
    }

    pub fn handle_message(&mut self, now: Instant, session: SessionId, frame: ClientFrame) {
        self.tick(now);
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let role = s.peer.role;
        if !authorized(role, &frame) {
            let msg = format!(
                "{} may not make the {} call: it needs a {} certificate",
                s.peer,
                call_name(&frame),
                required_role(&frame)
            );
            self.refuse(session, ErrorCode::Forbidden, msg);
            return;
        }
        match frame {
            ClientFrame::Agent(m) => self.agent_message(session, m),
            ClientFrame::Framework(c) => self.framework_call(session, c),
            ClientFrame::Operator(c) => self.operator_call(session, c),
        }
    }

    pub fn handle_committed(&mut self, now: Instant, op: RegistryOp) {
        self.tick(now);
        let then = match self.in_flight.front() {
            Some((front, _)) if *front == op => self
                .in_flight
                .pop_front()
                .map(|(_, t)| t)
                .unwrap_or(Then::Nothing),
            _ => Then::Nothing,
        };
        // Agents that run the tasks of a framework about to be removed (the registry forgets).
        let affected: BTreeSet<AgentId> = match &op {
            RegistryOp::FrameworkRemoved { framework_id, .. } => self
                .registry
                .frameworks
                .get(framework_id)
                .map(|f| f.tasks.values().map(|t| t.agent_id.clone()).collect())
                .unwrap_or_default(),
            _ => BTreeSet::new(),
        };
        self.registry.apply(&op);
        self.after_commit(op, then, affected);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        while let Some(key) = self.timers.pop_due(self.now) {
            match key {
                TimerKey::Offer(key) => self.offer_timed_out(key),
                TimerKey::AgentSilence(id) => self.check_agent_silence(&id),
                TimerKey::FrameworkFailover(id) => self.framework_failover_expired(&id),
                TimerKey::LogRequest(id) => {
                    if let Some(req) = self.log_requests.remove(&id) {
                        let msg = format!("agent {} did not answer the log request", req.agent_id);
                        self.send(req.session, err(ErrorCode::Unavailable, msg, false));
                    }
                }
                TimerKey::Heartbeat => {
                    let sessions: Vec<SessionId> =
                        self.frameworks.values().filter_map(|f| f.session).collect();
                    for s in sessions {
                        self.send(s, ServerFrame::Framework(FrameworkEvent::Heartbeat));
                    }
                    self.timers.set(
                        TimerKey::Heartbeat,
                        self.now + self.config.framework_heartbeat_interval,
                    );
                }
                TimerKey::FilterExpiry(fw, agent) => {
                    let now = self.now;
                    let expired =
                        self.agents
                            .at_mut(agent)
                            .is_some_and(|a| match a.filters.get(fw) {
                                Some(f) if f.until <= now => a.filters.remove(fw).is_some(),
                                _ => false,
                            });
                    if expired {
                        if let Some(rt) = self.frameworks.at_mut(fw) {
                            rt.filtered.remove(&agent);
                        }
                    }
                    self.request_allocation();
                }
                TimerKey::Allocate => self.allocate(),
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Helpers
    // -----------------------------------------------------------------------------------------

    fn tick(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
        self.touch();
    }

    fn touch(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    fn wall_ms(&self) -> u64 {
        let since = self.now.saturating_duration_since(self.start).as_millis();
        self.config
            .wall_clock_at_start_ms
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    fn send(&mut self, to: SessionId, frame: ServerFrame) {
        self.outputs.push_back(Output::Send { to, frame });
    }

    fn propose(&mut self, op: RegistryOp, then: Then) {
        self.in_flight.push_back((op.clone(), then));
        self.outputs.push_back(Output::Propose(op));
    }

    fn in_flight_full(&self) -> bool {
        self.in_flight.len() >= limits::MAX_IN_FLIGHT_PROPOSALS
    }

    /// Refuses a call: a fatal error, then the stream is closed.
    fn refuse(&mut self, session: SessionId, code: ErrorCode, msg: String) {
        self.send(session, err(code, msg.clone(), true));
        self.outputs.push_back(Output::Close {
            session,
            reason: msg,
        });
        self.drop_session(session);
    }

    fn bad_request(&mut self, session: SessionId, msg: impl Into<String>) {
        self.send(session, err(ErrorCode::BadRequest, msg, false));
    }

    fn request_allocation(&mut self) {
        self.timers
            .set_if_unset(TimerKey::Allocate, self.now + self.config.allocation_batch);
    }

    fn master_status(
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

    fn partition_aware(&self, fw: &FrameworkId) -> bool {
        self.registry
            .frameworks
            .get(fw)
            .is_some_and(|f| f.partition_aware())
    }

    /// Sends a status to the framework, mapping partition-aware states to TASK_LOST for
    /// frameworks without the capability. Records uuid-carrying updates so that a resend from the
    /// agent reaches each framework session once.
    fn forward_status(&mut self, framework_id: &FrameworkId, mut status: TaskStatus) {
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

    fn agent_session(&self, agent_id: &AgentId) -> Option<SessionId> {
        self.agents.get(agent_id).and_then(|a| a.session)
    }

    fn send_agent(&mut self, agent_id: &AgentId, msg: MasterToAgent) -> bool {
        match self.agent_session(agent_id) {
            Some(s) => {
                self.send(s, ServerFrame::Agent(msg));
                true
            }
            None => false,
        }
    }

    fn drop_session(&mut self, session: SessionId) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        self.log_requests.retain(|_, r| r.session != session);
        match s.kind {
            SessionKind::New => {}
            SessionKind::Agent(id) => {
                let is_current = self
                    .agents
                    .get(&id)
                    .is_some_and(|a| a.session == Some(session));
                if is_current {
                    if let Some(a) = self.agents.get_mut(&id) {
                        a.session = None;
                    }
                    self.rescind_agent_offers(&id);
                }
            }
            SessionKind::Framework(id) => {
                let is_current = self
                    .frameworks
                    .get(&id)
                    .is_some_and(|f| f.session == Some(session));
                if is_current {
                    self.framework_disconnected(&id);
                }
            }
        }
    }

    fn adopt_agent(&mut self, id: &AgentId) {
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
                    offered: Resources::default(),
                    pending: Resources::default(),
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

    fn adopt_framework(&mut self, id: &FrameworkId) {
        if !self.frameworks.contains_key(id) {
            self.frameworks
                .insert(id.clone(), FrameworkRt::new(self.now));
            self.arm_failover(id);
        }
    }

    fn arm_failover(&mut self, id: &FrameworkId) {
        let timeout = self
            .registry
            .frameworks
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

    fn next_id(&mut self, kind: char) -> String {
        let counter = match kind {
            'A' => &mut self.next_agent,
            _ => &mut self.next_framework,
        };
        *counter += 1;
        make_id(&self.config.id_prefix, kind, *counter)
    }

    fn refuse_duration(&self, filters: Option<&proto::Filters>) -> Duration {
        match filters.and_then(|f| f.refuse_seconds) {
            Some(s) if s.is_finite() && s >= 0.0 => {
                Duration::from_secs_f64(s.min(limits::MAX_REFUSE_SECONDS))
            }
            _ => self.config.default_refuse,
        }
    }

    /// Filters `refused` of agent `agent` (index) for framework `fw` (index) for `d`.
    fn add_filter(&mut self, fw: u32, agent: u32, refused: Resources, d: Duration) {
        if d.is_zero() || refused.is_empty() {
            return;
        }
        let now = self.now;
        // One filter per (framework, agent); each is removed when its expiry fires.
        let (Some(rt), Some(a)) = (self.frameworks.at_mut(fw), self.agents.at_mut(agent)) else {
            return;
        };
        rt.filtered.insert(agent);
        a.filters.insert(fw, Filter::new(now + d, refused));
        // Allocation is event-driven: the end of a filter is an event.
        self.timers.set(TimerKey::FilterExpiry(fw, agent), now + d);
    }

    fn clear_filters(&mut self, fw: &FrameworkId) {
        let Some(fix) = self.frameworks.ix(fw) else {
            return;
        };
        let agents = self
            .frameworks
            .at_mut(fix)
            .map(|rt| std::mem::take(&mut rt.filtered))
            .unwrap_or_default();
        for a in agents {
            if let Some(rt) = self.agents.at_mut(a) {
                rt.filters.remove(fix);
            }
            self.timers.cancel(&TimerKey::FilterExpiry(fix, a));
        }
    }

    /// Forgets every filter on a removed agent (`filters`, by framework index) before its
    /// index is reused.
    fn clear_agent_filters(&mut self, agent: u32, filters: AgentFilters) {
        for (fix, _) in filters.iter() {
            if let Some(rt) = self.frameworks.at_mut(fix) {
                rt.filtered.remove(&agent);
            }
            self.timers.cancel(&TimerKey::FilterExpiry(fix, agent));
        }
    }

    /// The numeric key of an offer id this master generated (`<prefix>-O<n>`), else `None`
    /// (such an offer is unknown).
    fn offer_key(&self, id: &OfferId) -> Option<u64> {
        let digits =
            id.0.strip_prefix(self.config.id_prefix.as_str())?
                .strip_prefix("-O")?;
        if digits.is_empty()
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        digits.parse().ok()
    }

    fn offer_id(&self, key: u64) -> OfferId {
        OfferId(make_id(&self.config.id_prefix, 'O', key))
    }

    // -----------------------------------------------------------------------------------------
    // Offers
    // -----------------------------------------------------------------------------------------

    /// Removes an offer and returns its resources to the pool. Sends a Rescind when `notify`.
    fn remove_offer(&mut self, key: u64, notify: bool) -> Option<OfferRt> {
        let offer = self.offers.remove(&key)?;
        self.timers.cancel(&TimerKey::Offer(key));
        if let Some(a) = self.agents.at_mut(offer.agent) {
            sub_scalars(&mut a.offered, &offer.resources);
            a.offers.remove(&key);
        }
        let mut session = None;
        let now = self.now;
        if let Some(f) = self.frameworks.at_mut(offer.framework) {
            if let Some(r) = f.offered.get_mut(&offer.role) {
                sub_scalars(r, &offer.resources);
                if r.is_empty() {
                    f.offered.remove(&offer.role);
                }
            }
            f.offers.remove(&key);
            if f.offers.is_empty() {
                f.wanting_since = now;
            }
            session = f.session;
        }
        if notify {
            if let Some(s) = session {
                let offer_id = self.offer_id(key);
                self.send(
                    s,
                    ServerFrame::Framework(FrameworkEvent::Rescind { offer_id }),
                );
            }
        }
        self.request_allocation();
        Some(offer)
    }

    fn rescind_agent_offers(&mut self, agent: &AgentId) {
        let keys: Vec<u64> = self
            .agents
            .get(agent)
            .map(|a| a.offers.iter().copied().collect())
            .unwrap_or_default();
        for key in keys {
            self.remove_offer(key, true);
        }
    }

    fn rescind_framework_offers(&mut self, fw: &FrameworkId, notify: bool) {
        let keys: Vec<u64> = self
            .frameworks
            .get(fw)
            .map(|f| f.offers.iter().copied().collect())
            .unwrap_or_default();
        for key in keys {
            self.remove_offer(key, notify);
        }
    }

    fn offer_timed_out(&mut self, key: u64) {
        // Rescind, and keep the hoarder away from these resources for the default refusal so
        // that another framework gets them first.
        if let Some(o) = self.remove_offer(key, true) {
            let d = self.config.default_refuse;
            self.add_filter(o.framework, o.agent, o.resources, d);
        }
    }

    /// One allocation pass: build the view, ask the allocator, send the offers.
    ///
    /// The view lists agents in id order (the registry's, joined with the agent table's, which
    /// shares that order) and frameworks in id order; each carries its dense index, so the
    /// allocator checks filters and the bookkeeping below updates offers without touching a
    /// string id. The only strings made per offer are the ones the `Offer` frame carries.
    fn allocate(&mut self) {
        self.allocation_passes += 1;
        let now = self.now;
        // Offers per framework of the view (by position). `made` holds (agent index, offer key)
        // of each, grouped by framework: those of position `p` start at `starts[p]`, in the
        // order of `by_framework[p]`, so the bookkeeping below visits each framework once.
        let mut by_framework: Vec<Vec<Offer>>;
        let mut made: Vec<(u32, u64)>;
        let mut starts: Vec<usize>;
        // The dense index of each framework in the view, by position.
        let view_frameworks: Vec<u32>;
        {
            let mut total = Resources::default();
            let mut agents = Vec::with_capacity(self.agents.len());
            let mut entries = Vec::with_capacity(self.agents.len());
            let mut table = self.agents.iter().peekable();
            for (id, entry) in &self.registry.agents {
                if !entry.reachable {
                    continue;
                }
                let r = &entry.info.resources;
                total.cpus_milli = total.cpus_milli.saturating_add(r.cpus_milli);
                total.mem_bytes = total.mem_bytes.saturating_add(r.mem_bytes);
                total.disk_bytes = total.disk_bytes.saturating_add(r.disk_bytes);
                // Both are in id order: advance the table to this id.
                while table.next_if(|(_, k, _)| *k < id).is_some() {}
                let Some((ix, _, rt)) = table.next_if(|(_, k, _)| *k == id) else {
                    continue;
                };
                if entry.mark != AgentMark::Active || rt.session.is_none() {
                    continue;
                }
                let available = if rt.offers.is_empty() {
                    free_resources(r, &entry.used, &rt.offered, &rt.pending)
                } else {
                    let offered = Resources {
                        ports: offered_ports(&self.offers, &rt.offers),
                        ..rt.offered.clone()
                    };
                    free_resources(r, &entry.used, &offered, &rt.pending)
                };
                if available.is_empty() {
                    continue;
                }
                agents.push(allocator::AgentView {
                    ix,
                    available,
                    filters: rt.filters.as_slice(),
                });
                entries.push(entry);
            }
            let mut frameworks = Vec::with_capacity(self.frameworks.len());
            for (ix, id, rt) in self.frameworks.iter() {
                if rt.session.is_none() {
                    continue;
                }
                let Some(entry) = self.registry.frameworks.get(id) else {
                    continue;
                };
                // Roles as given, `["*"]` when none.
                let n = entry.info.roles.len().max(1);
                let mut roles = Vec::with_capacity(n);
                let mut any_wants = false;
                for i in 0..n {
                    let role = entry.info.roles.get(i).map_or("*", String::as_str);
                    let mut allocated = Resources::default();
                    for part in [
                        entry.used.get(role),
                        rt.offered.get(role),
                        rt.pending.get(role),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        allocated.cpus_milli += part.cpus_milli;
                        allocated.mem_bytes += part.mem_bytes;
                        allocated.disk_bytes += part.disk_bytes;
                    }
                    let wants_offers = !rt.suppressed.contains(role);
                    any_wants |= wants_offers;
                    roles.push(FrameworkRole {
                        role,
                        allocated,
                        wants_offers,
                    });
                }
                if any_wants {
                    frameworks.push(allocator::FrameworkView { id, ix, roles });
                }
            }
            if agents.is_empty() || frameworks.is_empty() {
                return;
            }
            let view = ClusterView {
                total,
                agents,
                frameworks,
                role_weights: &self.config.role_weights,
                min_allocatable: &self.config.min_allocatable,
            };
            let allocations = self.allocator.allocate(now, &view);
            let ClusterView {
                mut agents,
                frameworks,
                ..
            } = view;
            let mut counts = vec![0usize; frameworks.len()];
            for a in &allocations {
                if let Some(c) = counts.get_mut(a.framework) {
                    *c += 1;
                }
            }
            starts = Vec::with_capacity(counts.len());
            let mut sum = 0;
            for c in &counts {
                starts.push(sum);
                sum += c;
            }
            made = vec![(0, 0); sum];
            by_framework = counts.into_iter().map(Vec::with_capacity).collect();
            for a in allocations {
                let (Some(fw), Some(entry)) = (frameworks.get(a.framework), entries.get(a.agent))
                else {
                    continue;
                };
                let (Some(role), Some(agent)) = (fw.roles.get(a.role), agents.get_mut(a.agent))
                else {
                    continue;
                };
                // Each agent is offered whole, once per pass: move its free resources out.
                let resources = std::mem::take(&mut agent.available);
                if resources.is_empty() {
                    continue;
                }
                let (Some(agent_id), Some(list)) =
                    (self.agents.key(agent.ix), by_framework.get_mut(a.framework))
                else {
                    continue;
                };
                let Some(slot) = starts
                    .get(a.framework)
                    .and_then(|s| made.get_mut(s + list.len()))
                else {
                    continue;
                };
                self.next_offer += 1;
                let key = self.next_offer;
                *slot = (agent.ix, key);
                list.push(Offer {
                    id: OfferId(make_id(&self.config.id_prefix, 'O', key)),
                    framework_id: fw.id.clone(),
                    agent_id: agent_id.clone(),
                    hostname: entry.info.hostname.clone(),
                    resources,
                    attributes: entry.info.attributes.clone(),
                    role: role.role.to_owned(),
                    pressure: self.agents.at(agent.ix).and_then(|a| a.pressure),
                });
            }
            view_frameworks = frameworks.iter().map(|f| f.ix).collect();
        }
        for ((&fix, list), &start) in view_frameworks.iter().zip(&by_framework).zip(&starts) {
            let Some(f) = self.frameworks.at_mut(fix) else {
                continue;
            };
            let keys = made.get(start..).unwrap_or_default();
            for (offer, &(aix, key)) in list.iter().zip(keys) {
                if let Some(a) = self.agents.at_mut(aix) {
                    allocator::add_scalars(&mut a.offered, &offer.resources);
                    a.offers.insert(key);
                }
                match f.offered.get_mut(&offer.role) {
                    Some(r) => allocator::add_scalars(r, &offer.resources),
                    None => {
                        let mut r = Resources::default();
                        allocator::add_scalars(&mut r, &offer.resources);
                        f.offered.insert(offer.role.clone(), r);
                    }
                }
                f.offers.insert(key);
                f.wanting_since = now;
                self.offers.insert(
                    key,
                    OfferRt {
                        framework: fix,
                        agent: aix,
                        role: offer.role.clone(),
                        resources: offer.resources.clone(),
                    },
                );
                if let Some(t) = self.config.offer_timeout {
                    self.timers.set(TimerKey::Offer(key), now + t);
                }
            }
        }
        for (fix, mut offers) in view_frameworks.into_iter().zip(by_framework) {
            if offers.is_empty() {
                continue;
            }
            let Some(session) = self.frameworks.at(fix).and_then(|f| f.session) else {
                continue;
            };
            while !offers.is_empty() {
                let rest = if offers.len() > limits::MAX_OFFERS_PER_EVENT {
                    offers.split_off(limits::MAX_OFFERS_PER_EVENT)
                } else {
                    Vec::new()
                };
                self.send(
                    session,
                    ServerFrame::Framework(FrameworkEvent::Offers { offers }),
                );
                offers = rest;
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Agents
    // -----------------------------------------------------------------------------------------

    /// Admits an agent or a framework (see [`Admitted`]): the id it asked for, checked, or a
    /// fresh one. `None` when refused; the session is closed then.
    fn admit<I: Admitted>(
        &mut self,
        session: SessionId,
        principal: &str,
        requested: Option<I>,
    ) -> Option<I> {
        if self.in_flight_full() {
            self.refuse(
                session,
                ErrorCode::Unavailable,
                "master is overloaded".into(),
            );
            return None;
        }
        let kind = I::KIND;
        let id = match requested {
            Some(id) => {
                if !I::valid(&id) {
                    self.refuse(session, ErrorCode::BadRequest, format!("invalid {kind} id"));
                    return None;
                }
                if I::removed(&self.registry, &id) {
                    let msg = format!("{kind} {id} {}", I::REMOVED);
                    self.refuse(session, ErrorCode::NotFound, msg);
                    return None;
                }
                if let Some(owner) = I::owner(&self.registry, &id) {
                    if owner != principal {
                        let msg = format!(
                            "{kind} {id} belongs to '{owner}', not to {kind} '{principal}'"
                        );
                        self.refuse(session, ErrorCode::Forbidden, msg);
                        return None;
                    }
                }
                id
            }
            None => loop {
                let id = I::generated(self.next_id(I::LETTER));
                if !I::known(&self.registry, &id) && !I::removed(&self.registry, &id) {
                    break id;
                }
            },
        };
        if !I::known(&self.registry, &id) && I::count(&self.registry) >= I::LIMIT {
            let msg = format!("cluster has too many {kind}s");
            self.refuse(session, ErrorCode::Unavailable, msg);
            return None;
        }
        Some(id)
    }

    fn agent_message(&mut self, session: SessionId, msg: AgentToMaster) {
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
            AgentToMaster::Register { .. } | AgentToMaster::Heartbeat => {}
            AgentToMaster::StatusUpdate {
                framework_id,
                status,
            } => self.agent_status_update(&agent_id, framework_id, status),
            AgentToMaster::Usage { tasks, pressure } => {
                let Some(entry) = self.registry.agents.get(&agent_id) else {
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
                if let Some(a) = self.agents.get_mut(&agent_id) {
                    a.usage = usage;
                    a.pressure = pressure.map(NodePressure::clamped);
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

    fn agent_register(
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

    fn agent_registered(
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
        let limit = self.config.agent_unreachable_timeout;
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.session = Some(session);
            a.last_seen = now;
            a.silence_limit = limit;
        }
        self.timers
            .set(TimerKey::AgentSilence(agent_id.clone()), now + limit);
        self.send(
            session,
            ServerFrame::Agent(MasterToAgent::Registered {
                agent_id: agent_id.clone(),
                heartbeat_interval_ms: u64::try_from(
                    self.config.agent_heartbeat_interval.as_millis(),
                )
                .unwrap_or(u64::MAX),
            }),
        );
        self.reconcile_agent(agent_id, reports);
        self.request_allocation();
    }

    /// Compares an agent's task reports with the registry after (re-)registration.
    fn reconcile_agent(&mut self, agent_id: &AgentId, reports: Vec<TaskReport>) {
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
            if !self.registry.frameworks.contains_key(&key.framework_id) {
                if report.state.is_terminal() {
                    continue;
                }
                if self.registry.frameworks.len() >= limits::MAX_FRAMEWORKS {
                    shutdown.insert(key.framework_id.clone());
                    continue;
                }
                // A framework this registry does not know (e.g. the master restarted without
                // its registry): keep its tasks; the first framework that subscribes with this
                // id claims it, or it is torn down after the re-register timeout.
                let info = FrameworkInfo {
                    id: Some(key.framework_id.clone()),
                    name: "(recovered from agent report)".into(),
                    roles: Vec::new(),
                    failover_timeout_ms: u64::try_from(
                        self.config.agent_reregister_timeout.as_millis(),
                    )
                    .unwrap_or(u64::MAX),
                    capabilities: Vec::new(),
                    version: Default::default(),
                };
                self.propose(
                    RegistryOp::FrameworkAdded {
                        framework_id: key.framework_id.clone(),
                        info,
                        principal: None,
                    },
                    Then::Nothing,
                );
            }
            let live = self
                .registry
                .task(&key)
                .map(|t| (t.agent_id.clone(), t.state));
            match live {
                Some((a, state)) if a == *agent_id => {
                    if !report.state.is_terminal() && report.state != state {
                        let mut s = self.master_status(
                            key.task_id.clone(),
                            report.state,
                            Some(agent_id.clone()),
                            StatusReason::Reconciliation,
                            Some("task state reported by the re-registered agent".into()),
                        );
                        s.executor_id =
                            self.registry.task(&key).and_then(|t| t.executor_id.clone());
                        self.propose(
                            RegistryOp::TaskStateChanged {
                                framework_id: key.framework_id.clone(),
                                status: s,
                            },
                            Then::Nothing,
                        );
                    }
                    // A terminal report: the agent resends its own update with the details.
                    if let Some(grace) = self.kill_requested.get(&key).copied() {
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
                    // Unknown task of a live framework: adopt it.
                    let role = self
                        .registry
                        .frameworks
                        .get(&key.framework_id)
                        .and_then(|f| f.info.roles.first().cloned())
                        .unwrap_or_else(|| "*".to_owned());
                    let mut task = report.task.clone();
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
            }
        }
        for fw in shutdown {
            self.send_agent(
                agent_id,
                MasterToAgent::ShutdownFramework { framework_id: fw },
            );
        }
        // Tasks the registry has on this agent that it did not report are gone.
        let missing: Vec<TaskKey> = self
            .registry
            .agents
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

    fn kill_on_agent(&mut self, agent_id: &AgentId, key: &TaskKey, grace_ms: Option<u64>) {
        self.send_agent(
            agent_id,
            MasterToAgent::KillTask {
                framework_id: key.framework_id.clone(),
                task_id: key.task_id.clone(),
                grace_ms,
            },
        );
    }

    fn ack_on_agent(&mut self, agent_id: &AgentId, key: &TaskKey, uuid: Option<StatusUuid>) {
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

    fn agent_status_update(
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
        if !self.registry.frameworks.contains_key(&framework_id) {
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

    fn check_agent_silence(&mut self, id: &AgentId) {
        let Some(rt) = self.agents.get(id) else {
            return;
        };
        let deadline = rt.last_seen + rt.silence_limit;
        let reachable = self.registry.agents.get(id).is_some_and(|a| a.reachable);
        if !reachable {
            return;
        }
        if deadline > self.now {
            self.timers
                .set(TimerKey::AgentSilence(id.clone()), deadline);
            return;
        }
        self.mark_unreachable(id);
    }

    fn mark_unreachable(&mut self, id: &AgentId) {
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
            .agents
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

    // -----------------------------------------------------------------------------------------
    // Frameworks
    // -----------------------------------------------------------------------------------------

    fn framework_call(&mut self, session: SessionId, call: FrameworkCall) {
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
                if offer_ids.len() > limits::MAX_OFFERS_PER_CALL {
                    self.bad_request(session, "too many offer ids in one decline");
                    return;
                }
                let d = self.refuse_duration(filters.as_ref());
                let fix = self.frameworks.ix(&fw);
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
                        self.add_filter(o.framework, o.agent, o.resources, d);
                    }
                }
            }
            FrameworkCall::Revive { roles } => {
                let now = self.now;
                self.clear_filters(&fw);
                if let Some(rt) = self.frameworks.get_mut(&fw) {
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
            FrameworkCall::Suppress { roles } => {
                let all = self
                    .registry
                    .frameworks
                    .get(&fw)
                    .map(|f| f.roles())
                    .unwrap_or_default();
                if let Some(rt) = self.frameworks.get_mut(&fw) {
                    for r in all {
                        if roles.is_empty() || roles.contains(&r) {
                            rt.suppressed.insert(r);
                        }
                    }
                }
            }
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
            } => {
                let key = TaskKey {
                    framework_id: fw.clone(),
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
                if self.acked.len() >= limits::MAX_ACKED_REMEMBERED
                    && !self.acked.contains_key(&key)
                {
                    self.acked.pop_first();
                }
                self.acked.insert(key.clone(), uuid.clone());
                self.ack_on_agent(&agent_id, &key, Some(uuid));
            }
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

    fn subscribe(&mut self, session: SessionId, info: FrameworkInfo) {
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

    fn framework_subscribed(&mut self, id: &FrameworkId, session: SessionId) {
        let still_here = self
            .sessions
            .get(&session)
            .is_some_and(|s| s.kind == SessionKind::Framework(id.clone()));
        if !still_here || !self.registry.frameworks.contains_key(id) {
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

    fn framework_disconnected(&mut self, id: &FrameworkId) {
        let now = self.now;
        if let Some(rt) = self.frameworks.get_mut(id) {
            rt.session = None;
            rt.disconnected_at = Some(now);
        }
        // Offers do not survive the connection (as in Mesos).
        self.rescind_framework_offers(id, false);
        self.arm_failover(id);
    }

    fn framework_failover_expired(&mut self, id: &FrameworkId) {
        let disconnected = self.frameworks.get(id).is_some_and(|f| f.session.is_none());
        if disconnected && self.registry.frameworks.contains_key(id) {
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
    fn framework_removed(&mut self, id: &FrameworkId, agents: BTreeSet<AgentId>) {
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
            self.finish_pending(&k);
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

    fn kill_task(
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

    fn reconcile(&mut self, fw: &FrameworkId, _session: SessionId, tasks: Vec<ReconcileTask>) {
        if tasks.is_empty() {
            let statuses: Vec<TaskStatus> = self
                .registry
                .frameworks
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
    fn reconcile_one(&mut self, fw: &FrameworkId, t: &ReconcileTask) {
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
            Some(a) => match self.registry.agents.get(a) {
                Some(entry) if !entry.reachable => TaskState::Unreachable,
                Some(_) if self.agent_session(a).is_none() => return, // still re-registering
                Some(_) => TaskState::Gone,
                None if self.registry.removed_agents.contains(a) => TaskState::GoneByOperator,
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

    // -----------------------------------------------------------------------------------------
    // Accept
    // -----------------------------------------------------------------------------------------

    fn reject_tasks(
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

    fn accept(
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
        let invalid_state = if self.partition_aware(fw) {
            TaskState::Dropped
        } else {
            TaskState::Lost
        };
        let mut problem: Option<String> = None;
        if offer_ids.is_empty() {
            problem = Some("accept names no offers".into());
        } else if offer_ids.len() > limits::MAX_OFFERS_PER_CALL {
            problem = Some(format!(
                "accept names more than {} offers",
                limits::MAX_OFFERS_PER_CALL
            ));
        } else if operations.len() > limits::MAX_OPERATIONS_PER_ACCEPT {
            problem = Some(format!(
                "accept has more than {} operations",
                limits::MAX_OPERATIONS_PER_ACCEPT
            ));
        } else if all_tasks.len() > limits::MAX_TASKS_PER_ACCEPT {
            problem = Some(format!(
                "accept has more than {} tasks",
                limits::MAX_TASKS_PER_ACCEPT
            ));
        }
        if let Some(p) = problem {
            self.reject_tasks(
                fw,
                &all_tasks,
                TaskState::Error,
                StatusReason::TaskInvalid,
                &p,
            );
            return;
        }
        // Collect the offers: consume the valid ones of this framework.
        let fix = self.frameworks.ix(fw);
        let mut seen = BTreeSet::new();
        let mut mine: Vec<u64> = Vec::new();
        let mut problem: Option<String> = None;
        for id in &offer_ids {
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
                &all_tasks,
                invalid_state,
                StatusReason::InvalidOffers,
                &p,
            );
            return;
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
                &all_tasks,
                invalid_state,
                StatusReason::InvalidOffers,
                &p,
            );
            for o in removed {
                self.add_filter(o.framework, o.agent, o.resources, refuse);
            }
            return;
        }
        let mut ids_here: BTreeSet<TaskId> = BTreeSet::new();
        for op in operations {
            let (executor, tasks) = match op {
                OfferOperation::Launch { tasks } => (None, tasks),
                OfferOperation::LaunchGroup { executor, tasks } => (Some(executor), tasks),
            };
            let mut accepted: Vec<TaskInfo> = Vec::new();
            let mut need = Resources::default();
            let mut group_error: Option<String> = None;
            if let Some(e) = &executor {
                if e.executor_id.0.is_empty() || e.executor_id.0.len() > limits::MAX_NAME_LEN {
                    group_error = Some("executor id is empty or too long".into());
                } else if e.command.value.is_empty() && e.command.arguments.is_empty() {
                    group_error = Some(format!("executor {} has an empty command", e.executor_id));
                } else if tasks.is_empty() {
                    group_error = Some("launch group has no tasks".into());
                } else {
                    let running = self.registry.agents.get(&agent_id).is_some_and(|a| {
                        a.executors
                            .iter()
                            .any(|x| x.framework_id == *fw && x.executor_id == e.executor_id)
                    });
                    if !running {
                        need.add_assign(&e.resources.clone().normalized());
                    }
                }
            }
            for t in tasks {
                let check = self.validate_task(fw, &t, &agent_id, &ids_here);
                match check {
                    Err(msg) if executor.is_some() => {
                        group_error.get_or_insert(msg);
                        accepted.push(t);
                    }
                    Err(msg) => {
                        self.reject_tasks(
                            fw,
                            &[&t],
                            TaskState::Error,
                            StatusReason::TaskInvalid,
                            &msg,
                        );
                    }
                    Ok(()) => {
                        let res = t.resources.clone().normalized();
                        if executor.is_none() {
                            match remaining.checked_sub(&res) {
                                Some(r) => {
                                    remaining = r;
                                    ids_here.insert(t.task_id.clone());
                                    accepted.push(t);
                                }
                                None => {
                                    let msg = format!(
                                        "task {} needs {} but the offers have {} left",
                                        t.task_id, res, remaining
                                    );
                                    self.reject_tasks(
                                        fw,
                                        &[&t],
                                        TaskState::Error,
                                        StatusReason::TaskInvalid,
                                        &msg,
                                    );
                                }
                            }
                        } else {
                            need.add_assign(&res);
                            ids_here.insert(t.task_id.clone());
                            accepted.push(t);
                        }
                    }
                }
            }
            if executor.is_some() {
                if group_error.is_none() {
                    match remaining.checked_sub(&need) {
                        Some(r) => remaining = r,
                        None => {
                            group_error = Some(format!(
                                "launch group needs {need} but the offers have {remaining} left"
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
                    continue;
                }
            }
            if accepted.is_empty() {
                continue;
            }
            self.launch(fw, &agent_id, &role, executor, accepted, need);
        }
        self.add_filter(fw_ix, agent_ix, remaining, refuse);
        self.request_allocation();
    }

    fn validate_task(
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
        if self.registry.live_tasks + self.pending_launches.len() >= limits::MAX_LIVE_TASKS {
            return Err("the cluster has too many tasks".into());
        }
        Ok(())
    }

    /// Records the launch as pending and proposes it; RunTasks goes out after the commit.
    fn launch(
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

    fn finish_pending(&mut self, key: &TaskKey) {
        let Some(p) = self.pending_launches.remove(key) else {
            return;
        };
        if let Some(a) = self.agents.get_mut(&p.agent_id) {
            a.pending = a.pending.saturating_sub(&p.resources);
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

    // -----------------------------------------------------------------------------------------
    // Operators
    // -----------------------------------------------------------------------------------------

    /// Finds the live (or completed) tasks with this id that `peer` may act on, those of
    /// removed frameworks last.
    fn find_tasks(&self, peer: &PeerIdentity, task_id: &TaskId) -> Vec<TaskKey> {
        let may = |principal: &Option<String>| {
            peer.role != Role::Framework || principal.as_deref() == Some(peer.name.as_str())
        };
        let mut out = Vec::new();
        for (fw_id, fw) in &self.registry.frameworks {
            let key = TaskKey {
                framework_id: fw_id.clone(),
                task_id: task_id.clone(),
            };
            if may(&fw.principal) && self.registry.task_or_completed(&key).is_some() {
                out.push(key);
            }
        }
        for c in self.registry.completed_frameworks.iter().rev() {
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

    fn operator_call(&mut self, session: SessionId, call: OperatorCall) {
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
            // Membership is the replicated log's business: the daemon answers these before
            // they reach the core.
            OperatorCall::AddMaster { .. } | OperatorCall::RemoveMaster { .. } => {
                self.send(
                    session,
                    err(
                        ErrorCode::BadRequest,
                        "master membership is changed by the daemon, not the core",
                        true,
                    ),
                );
            }
            OperatorCall::GetState => {
                let state = self.snapshot();
                self.send(
                    session,
                    ServerFrame::Operator(OperatorReply::State(Box::new(state))),
                );
            }
            OperatorCall::DrainAgent { agent_id } => {
                self.mark_agent(session, agent_id, AgentMark::Draining)
            }
            OperatorCall::DeactivateAgent { agent_id } => {
                self.mark_agent(session, agent_id, AgentMark::Deactivated)
            }
            OperatorCall::ReactivateAgent { agent_id } => {
                self.mark_agent(session, agent_id, AgentMark::Active)
            }
            OperatorCall::TeardownFramework { framework_id } => {
                if !self.registry.frameworks.contains_key(&framework_id) {
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
            OperatorCall::KillTask { task_id } => {
                let keys: Vec<TaskKey> = self
                    .find_tasks(&peer, &task_id)
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
            OperatorCall::ReadLog {
                task_id,
                stream,
                offset,
                max_len,
            } => {
                let found = self.find_tasks(&peer, &task_id).into_iter().find_map(|k| {
                    self.registry
                        .task_or_completed(&k)
                        .or_else(|| self.registry.completed_framework_task(&k))
                        .map(|t| t.agent_id.clone())
                });
                let Some(agent_id) = found else {
                    self.send(
                        session,
                        err(
                            ErrorCode::NotFound,
                            format!("no task {task_id} you may read"),
                            false,
                        ),
                    );
                    return;
                };
                if self.agent_session(&agent_id).is_none() {
                    self.send(
                        session,
                        err(
                            ErrorCode::Unavailable,
                            format!("agent {agent_id} is not connected"),
                            false,
                        ),
                    );
                    return;
                }
                if self.log_requests.len() >= limits::MAX_PENDING_LOG_REQUESTS {
                    self.send(
                        session,
                        err(
                            ErrorCode::Unavailable,
                            "too many log requests in flight; retry",
                            false,
                        ),
                    );
                    return;
                }
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

    fn mark_agent(&mut self, session: SessionId, agent_id: AgentId, mark: AgentMark) {
        if !self.registry.agents.contains_key(&agent_id) {
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

    // -----------------------------------------------------------------------------------------
    // Commits
    // -----------------------------------------------------------------------------------------

    fn after_commit(&mut self, op: RegistryOp, then: Then, affected: BTreeSet<AgentId>) {
        let reply = match &then {
            Then::ReplyDone { session } => Some(*session),
            _ => None,
        };
        self.react_to_commit(op, then, affected);
        if let Some(s) = reply {
            self.send(s, ServerFrame::Operator(OperatorReply::Done));
        }
    }

    fn react_to_commit(&mut self, op: RegistryOp, then: Then, affected: BTreeSet<AgentId>) {
        match op {
            RegistryOp::AgentAdmitted { agent_id, .. } => {
                if let Then::AgentRegistered { session, reports } = then {
                    self.agent_registered(&agent_id, session, reports);
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
                    self.framework_subscribed(&framework_id, session);
                } else if self.registry.frameworks.contains_key(&framework_id) {
                    self.adopt_framework(&framework_id);
                }
            }
            RegistryOp::FrameworkRemoved { framework_id, .. } => {
                self.framework_removed(&framework_id, affected);
            }
            RegistryOp::TasksAdded {
                framework_id,
                agent_id,
                executor,
                tasks,
                ..
            } => {
                let mut launched = Vec::new();
                for t in tasks {
                    let key = TaskKey {
                        framework_id: framework_id.clone(),
                        task_id: t.task_id.clone(),
                    };
                    self.finish_pending(&key);
                    let here = self
                        .registry
                        .task(&key)
                        .is_some_and(|e| e.agent_id == agent_id && e.state == TaskState::Staging);
                    if here {
                        launched.push(t);
                    }
                }
                let summary =
                    self.registry
                        .frameworks
                        .get(&framework_id)
                        .map(|f| FrameworkSummary {
                            id: framework_id.clone(),
                            name: f.info.name.clone(),
                            principal: f.principal.clone().unwrap_or_default(),
                        });
                if let (Some(framework), false) = (summary, launched.is_empty()) {
                    self.send_agent(
                        &agent_id,
                        MasterToAgent::RunTasks {
                            framework,
                            executor,
                            tasks: launched,
                        },
                    );
                }
                self.request_allocation();
            }
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

    // -----------------------------------------------------------------------------------------
    // Snapshot
    // -----------------------------------------------------------------------------------------

    /// The cluster as `corral state` shows it. O(cluster); the daemon publishes it periodically
    /// so that reads never wait on the core.
    pub fn snapshot(&self) -> ClusterState {
        let mut total = Resources::default();
        for a in self.registry.agents.values().filter(|a| a.reachable) {
            total.cpus_milli += a.info.resources.cpus_milli;
            total.mem_bytes += a.info.resources.mem_bytes;
            total.disk_bytes += a.info.resources.disk_bytes;
        }
        let mut agents = Vec::with_capacity(self.registry.agents.len());
        for (id, a) in &self.registry.agents {
            let rt = self.agents.get(id);
            let status = if !a.reachable {
                AgentStatus::Unreachable
            } else {
                match a.mark {
                    AgentMark::Active => AgentStatus::Active,
                    AgentMark::Draining => AgentStatus::Draining,
                    AgentMark::Deactivated => AgentStatus::Deactivated,
                }
            };
            let mut used = a.used.clone();
            if let Some(rt) = rt {
                used.add_assign(&rt.pending);
            }
            agents.push(proto::AgentState {
                id: id.clone(),
                hostname: a.info.hostname.clone(),
                status,
                total: a.info.resources.clone(),
                used,
                offered: rt
                    .map(|r| Resources {
                        ports: offered_ports(&self.offers, &r.offers),
                        ..r.offered.clone()
                    })
                    .unwrap_or_default(),
                attributes: a.info.attributes.clone(),
                version: a.info.software_version.clone(),
                pressure: rt.and_then(|r| r.pressure),
            });
        }
        let mut frameworks = Vec::new();
        let mut role_alloc: BTreeMap<String, Resources> = BTreeMap::new();
        let mut role_starved: BTreeMap<String, u64> = BTreeMap::new();
        for (id, f) in &self.registry.frameworks {
            let rt = self.frameworks.get(id);
            let mut used = f.used_total();
            let mut offered = Resources::default();
            for role in f.roles() {
                let ra = role_alloc.entry(role.clone()).or_default();
                for part in [
                    f.used.get(&role),
                    rt.and_then(|r| r.offered.get(&role)),
                    rt.and_then(|r| r.pending.get(&role)),
                ]
                .into_iter()
                .flatten()
                {
                    ra.add_assign(part);
                }
                let starved = match rt {
                    Some(r)
                        if r.session.is_some()
                            && !r.suppressed.contains(&role)
                            && r.offers.is_empty() =>
                    {
                        u64::try_from(
                            self.now
                                .saturating_duration_since(r.wanting_since)
                                .as_millis(),
                        )
                        .unwrap_or(u64::MAX)
                    }
                    _ => 0,
                };
                let e = role_starved.entry(role).or_default();
                *e = (*e).max(starved);
            }
            if let Some(r) = rt {
                for p in r.pending.values() {
                    used.add_assign(p);
                }
                for o in r.offered.values() {
                    allocator::add_scalars(&mut offered, o);
                }
                offered.ports = offered_ports(&self.offers, &r.offers);
            }
            let roles = f.roles();
            frameworks.push(proto::FrameworkState {
                id: id.clone(),
                name: f.info.name.clone(),
                principal: f.principal.clone().unwrap_or_default(),
                dominant_share: allocator::dominant_share(&used.add(&offered), &total),
                used,
                offered,
                connected: rt.is_some_and(|r| r.session.is_some()),
                suppressed: rt.is_some_and(|r| roles.iter().all(|x| r.suppressed.contains(x))),
                roles,
            });
        }
        for w in self.config.role_weights.keys() {
            role_alloc.entry(w.clone()).or_default();
        }
        let roles = role_alloc
            .iter()
            .map(|(name, alloc)| proto::RoleState {
                name: name.clone(),
                weight: self.config.weight(name),
                dominant_share: allocator::dominant_share(alloc, &total),
                starved_ms: role_starved.get(name).copied().unwrap_or(0),
            })
            .collect();
        let mut tasks = Vec::new();
        for (fw_id, f) in &self.registry.frameworks {
            for t in f.completed.iter().chain(f.tasks.values()) {
                let key = TaskKey {
                    framework_id: fw_id.clone(),
                    task_id: t.info.task_id.clone(),
                };
                let usage = self
                    .agents
                    .get(&t.agent_id)
                    .and_then(|a| a.usage.get(&key).cloned());
                tasks.push(task_summary(fw_id, t, usage));
            }
        }
        let mut completed_frameworks = Vec::with_capacity(self.registry.completed_frameworks.len());
        for c in &self.registry.completed_frameworks {
            completed_frameworks.push(proto::CompletedFrameworkState {
                id: c.framework_id.clone(),
                name: c.info.name.clone(),
                principal: c.principal.clone().unwrap_or_default(),
                roles: c.roles(),
                removed_at_ms: c.removed_at_ms,
            });
            for t in &c.tasks {
                tasks.push(task_summary(&c.framework_id, t, None));
            }
        }
        ClusterState {
            agents,
            frameworks,
            tasks,
            masters: self.masters.clone(),
            roles,
            completed_frameworks,
        }
    }
}

fn task_summary(
    framework_id: &FrameworkId,
    t: &TaskEntry,
    usage: Option<ResourceUsage>,
) -> proto::TaskSummary {
    proto::TaskSummary {
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
