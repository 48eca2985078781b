//! The master state machine: sessions, offers, filters, timers and the reactions to committed
//! registry operations. See the crate documentation for the event loop contract.
//!
//! This file holds the state (`Master` and its soft-state types) and the driving API
//! (`handle_*`, `poll_*`); each concern is one `impl Master` block in its own file:
//! - `sessions.rs`: the role matrix, admitting agents and frameworks by id, refusing and
//!   dropping sessions;
//! - `agents.rs`: registration, reconciliation of an agent's reports, status updates from
//!   agents, silence and unreachability;
//! - `frameworks.rs`: subscribe and the framework calls other than Accept, failover timeouts
//!   and removal, status forwarding, kills and reconciliation;
//! - `offers.rs`: allocation passes, offers, refusal filters;
//! - `launch.rs`: a task's path, Accept → `propose_launch` → `launch_committed` (`RunTasks`);
//! - `operator.rs`: operator calls;
//! - `commits.rs`: proposal ids and the continuation of each committed op;
//! - `snapshot.rs`: the `ClusterState` that `corral state` shows.

use crate::allocator::{self, AgentFilters, Allocator, ClusterView, Filter, FrameworkRole};
use crate::config::{limits, MasterConfig};
use crate::fastmap::FastMap;
use crate::registry::{AgentMark, Registry, RegistryOp, TaskKey};
use crate::table::Table;
use crate::timers::{TimerKey, Timers};
use crate::unanswered::{UnansweredOffers, ANSWER_GRACE};
use proto::{
    AgentId, AgentToMaster, ClientFrame, ClusterState, ErrorCode, ErrorReply, ExecutorInfo,
    FrameworkCall, FrameworkEvent, FrameworkId, FrameworkInfo, FrameworkSummary, MasterToAgent,
    MastersState, NodePressure, Offer, OfferId, OfferOperation, OperatorCall, OperatorReply,
    PeerIdentity, ReconcileTask, ResourceUsage, Resources, Role, ServerFrame, StatusReason,
    StatusSource, StatusUuid, TaskId, TaskInfo, TaskReport, TaskState, TaskStatus,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

mod sessions;
pub use sessions::authorized;
use sessions::{call_name, required_role};
mod agents;
mod commits;
mod frameworks;
mod launch;
mod offers;
mod operator;
mod quotas;
mod snapshot;

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
    /// Replicate this op; once committed, hand it back with its id to
    /// [`Master::handle_proposal_committed`], in log order. Nothing that depends on it is sent
    /// before that.
    Propose {
        id: ProposalId,
        op: RegistryOp,
    },
}

/// Names one proposal of one core, so that its commit finds its continuation. The daemon
/// carries it through the replicated log beside the op (raft's `Proposal::ids`) and hands it
/// back with the committed op; ops another leader proposed come back with its ids, which this
/// core does not know. The high 24 bits hash the core's `id_prefix` (unique per leadership),
/// the low 40 count its proposals, so a deposed leader that still applies its successor's
/// commits does not mistake them for its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProposalId(pub u64);

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
    /// The heartbeat interval the agent was last told (zero before it registered).
    heartbeat: Duration,
    /// Cpus, memory and disk offered (the ports offered are read from `offers`).
    offered: Resources,
    /// Launches proposed and not yet committed.
    pending: Resources,
    /// The same, by role (what a role's reservation on this agent holds).
    pending_roles: BTreeMap<String, Resources>,
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
    /// Resources of the role's reservation on the agent.
    reserved: bool,
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
    /// Proposals not committed yet, in proposal order (so by increasing id), with what to do
    /// once each commits, its weight and when it was proposed.
    in_flight: VecDeque<(ProposalId, Then, usize, Instant)>,
    /// The weight ([`RegistryOp::weight`]: tasks launched, else 1) of `in_flight`.
    in_flight_weight: usize,
    /// The last proposal that changes each agent's admission (admitted, unreachable, marked,
    /// removed); while it is in flight a re-registration is written to the registry again
    /// rather than taken as no news (see `Master::readmission_is_news`). Cleared whenever
    /// nothing is in flight.
    agent_ops_in_flight: BTreeMap<AgentId, ProposalId>,
    /// The id of the next proposal.
    next_proposal: ProposalId,
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
    /// A pass was due while too much was in flight (`limits::ALLOCATION_HOLD_WEIGHT`);
    /// it runs when they commit.
    allocation_held: bool,
    /// Passes held back so, since this core started.
    allocations_held: u64,
    /// Offers made within `unanswered::ANSWER_GRACE` and not answered: launches about to
    /// be proposed, counted by admission control.
    unanswered: UnansweredOffers,
    /// Where the next pass's window of agents starts (`limits::MAX_AGENTS_PER_PASS`).
    allocation_cursor: usize,
    /// Agents the current sweep of windowed passes has still to look at (0: no sweep).
    sweep_left: usize,
    /// Token buckets of framework principals (`config.framework_rate_limit`).
    rate_limiter: crate::ratelimit::RateLimiter,
    /// Offers declined by their framework and rescinded by the master (for metrics).
    offers_declined: u64,
    offers_rescinded: u64,
    /// When each launch committed, until its task reports TASK_RUNNING (or anything else).
    launch_committed_at: BTreeMap<TaskKey, Instant>,
    /// Commit → TASK_RUNNING of launches since the daemon last took them (metrics).
    launch_latencies: Vec<Duration>,
}

/// Operator-visible counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub allocation_passes: u64,
    /// Allocation passes held back by admission control (too many proposals in flight).
    pub allocations_held: u64,
    pub outstanding_offers: usize,
    pub in_flight_proposals: usize,
    pub sessions: usize,
    /// Offers made, declined by their framework, and rescinded by the master since this core
    /// started (a new leader starts from 0).
    pub offers_made: u64,
    pub offers_declined: u64,
    pub offers_rescinded: u64,
}

fn err(code: ErrorCode, message: impl Into<String>, fatal: bool) -> ServerFrame {
    ServerFrame::Error(ErrorReply {
        code,
        message: message.into(),
        fatal,
    })
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
            in_flight_weight: 0,
            agent_ops_in_flight: BTreeMap::new(),
            next_proposal: ProposalId::first(&config.id_prefix),
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
            allocation_held: false,
            allocations_held: 0,
            unanswered: UnansweredOffers::default(),
            allocation_cursor: 0,
            sweep_left: 0,
            rate_limiter: crate::ratelimit::RateLimiter::default(),
            offers_declined: 0,
            offers_rescinded: 0,
            launch_committed_at: BTreeMap::new(),
            launch_latencies: Vec::new(),
            config,
        };
        m.timers.set(
            TimerKey::Heartbeat,
            start + m.config.framework_heartbeat_interval,
        );
        m.registry = registry;
        let agent_ids: Vec<AgentId> = m.registry.agents().keys().cloned().collect();
        for id in agent_ids {
            m.adopt_agent(&id);
        }
        let fw_ids: Vec<FrameworkId> = m.registry.frameworks().keys().cloned().collect();
        for id in fw_ids {
            m.adopt_framework(&id);
        }
        if !m.registry.policy_configured() && !m.config.policy_seed.is_empty() {
            let rules = m.config.policy_seed.clone();
            m.propose(RegistryOp::PolicySeeded { rules }, Then::Nothing);
        }
        m
    }

    /// Whether a framework principal's call is within its rate limit; if not, it is answered
    /// "rate limited" (a Subscribe fatally: the client sees why it could not subscribe).
    fn within_rate_limit(&mut self, session: SessionId, frame: &ClientFrame) -> bool {
        let (Some(limit), Some(s)) = (
            self.config.framework_rate_limit,
            self.sessions.get(&session),
        ) else {
            return true;
        };
        let principal = s.peer.name.clone();
        if self.rate_limiter.admit(limit, &principal, self.now) {
            return true;
        }
        let msg = format!(
            "rate limited: framework principal '{principal}' made more than {} calls per second \
             (burst {}); the {} call was not done, retry later",
            limit.per_second,
            limit.burst,
            call_name(frame)
        );
        if matches!(
            frame,
            ClientFrame::Framework(FrameworkCall::Subscribe { .. })
        ) {
            self.refuse(session, ErrorCode::Unavailable, msg);
        } else {
            self.send(session, err(ErrorCode::Unavailable, msg, false));
        }
        false
    }

    /// The authorization rules in force: the cluster's, or this master's seed while the
    /// cluster has none.
    pub fn policy(&self) -> &crate::policy::Rules {
        if self.registry.policy_configured() {
            self.registry.policy()
        } else {
            &self.config.policy_seed
        }
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
            allocations_held: self.allocations_held,
            outstanding_offers: self.offers.len(),
            in_flight_proposals: self.in_flight.len(),
            sessions: self.sessions.len(),
            offers_made: self.next_offer,
            offers_declined: self.offers_declined,
            offers_rescinded: self.offers_rescinded,
        }
    }

    /// Commit → TASK_RUNNING of the launches whose tasks reported running since the last call
    /// (at most `limits::MAX_LAUNCH_LATENCIES`), for the daemon's metrics.
    pub fn take_launch_latencies(&mut self) -> Vec<Duration> {
        std::mem::take(&mut self.launch_latencies)
    }

    /// The masters' raft status for the snapshot; the snapshot is rebuilt only if it changed.
    pub fn set_masters_state(&mut self, m: MastersState) {
        if self.masters != m {
            self.masters = m;
            self.touch();
        }
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
        if matches!(
            frame,
            ClientFrame::Agent(AgentToMaster::Heartbeat | AgentToMaster::Usage { .. })
        ) {
            // A heartbeat changes nothing an operator sees (when an agent was last heard from
            // is not in the snapshot), and the usage report that comes with it changes the
            // state only when it differs (`agent_message` says so then): with thousands of
            // agents beating, counting each as a change had the snapshot rebuilt at every
            // chance while the cluster was idle.
            self.advance_clock(now);
        } else {
            self.tick(now);
        }
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let role = s.peer.role;
        if let ClientFrame::Certificates(_) = frame {
            // The daemon answers these itself (it holds the CA key); none reaches the core.
            let msg = "certificate calls are answered by the master daemon".to_owned();
            self.refuse(session, ErrorCode::BadRequest, msg);
            return;
        }
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
        // Scheduler calls only: a framework's log reads and kills (operator calls) are bounded
        // by their own limits, and `corral run` reads its output in many chunks.
        let scheduler_call = matches!(frame, ClientFrame::Framework(_));
        if scheduler_call && !self.within_rate_limit(session, &frame) {
            return;
        }
        match frame {
            ClientFrame::Agent(m) => self.agent_message(session, m),
            ClientFrame::Framework(c) => self.framework_call(session, c),
            ClientFrame::Operator(c) => self.operator_call(session, c),
            // The master's edge serves leader watches on streams of their own.
            ClientFrame::WatchLeader => self.bad_request(
                session,
                "WatchLeader opens a stream of its own; it is not a call within a session",
            ),
            ClientFrame::Certificates(_) => {}
        }
    }

    /// `op`, proposed as `id` (the log carries the id beside the op), committed. When this
    /// core made that proposal, what it waits for happens now.
    pub fn handle_proposal_committed(&mut self, now: Instant, id: ProposalId, op: RegistryOp) {
        self.tick(now);
        let then = self.take_continuation(id);
        self.apply_committed(op, then);
        self.resume_held_allocation();
    }

    /// `op` committed without a proposal id (proposed by no core, or logged without one): it
    /// is applied, and no proposal's continuation runs.
    pub fn handle_committed(&mut self, now: Instant, op: RegistryOp) {
        self.tick(now);
        self.apply_committed(op, Then::Nothing);
    }

    fn apply_committed(&mut self, op: RegistryOp, then: Then) {
        // Agents that run the tasks of a framework about to be removed (the registry forgets).
        let affected: BTreeSet<AgentId> = match &op {
            RegistryOp::FrameworkRemoved { framework_id, .. } => self
                .registry
                .frameworks()
                .get(framework_id)
                .map(|f| f.tasks.values().map(|t| t.agent_id.clone()).collect())
                .unwrap_or_default(),
            _ => BTreeSet::new(),
        };
        self.registry.apply(&op);
        self.run_continuation(op, then, affected);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance_clock(now);
        // Most timers that fire in a large idle cluster are agents' silence checks that find
        // the agent heard from and set themselves again: no change to the state.
        let mut changed = false;
        while let Some(key) = self.timers.pop_due(self.now) {
            if let TimerKey::AgentSilence(id) = &key {
                changed |= self.check_agent_silence(id);
                continue;
            }
            changed = true;
            match key {
                TimerKey::Offer(key) => self.offer_timed_out(key),
                TimerKey::AgentSilence(_) => {}
                TimerKey::FrameworkFailover(id) => self.framework_failover_expired(&id),
                TimerKey::LogRequest(id) => self.log_request_timed_out(id),
                TimerKey::Heartbeat => self.send_heartbeats(),
                TimerKey::FilterExpiry(fw, agent) => self.filter_expired(fw, agent),
                TimerKey::Allocate => self.allocate(),
            }
        }
        if changed {
            self.touch();
        }
    }

    // -----------------------------------------------------------------------------------------
    // Helpers
    // -----------------------------------------------------------------------------------------

    fn tick(&mut self, now: Instant) {
        self.advance_clock(now);
        self.touch();
    }

    fn advance_clock(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
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

    /// Proposes `op`; `then` runs when it commits (`take_continuation`).
    fn propose(&mut self, op: RegistryOp, then: Then) {
        let id = self.next_proposal;
        self.next_proposal = ProposalId(id.0.wrapping_add(1));
        let weight = op.weight();
        self.in_flight_weight = self.in_flight_weight.saturating_add(weight);
        self.in_flight.push_back((id, then, weight, self.now));
        if let Some(agent) = op.admission_of() {
            self.agent_ops_in_flight.insert(agent.clone(), id);
        }
        self.outputs.push_back(Output::Propose { id, op });
    }

    /// How long the oldest proposal in flight has waited for its commit.
    fn commit_lag(&self) -> Duration {
        self.in_flight.front().map_or(Duration::ZERO, |(.., at)| {
            self.now.saturating_duration_since(*at)
        })
    }

    fn in_flight_full(&self) -> bool {
        self.in_flight.len() >= limits::MAX_IN_FLIGHT_PROPOSALS
    }

    /// Admission control for launches: `tasks` more would take the registry changes in flight
    /// (weighed by tasks launched) past `limits::MAX_LAUNCH_WEIGHT_IN_FLIGHT`.
    fn launches_full(&self, tasks: usize) -> bool {
        self.in_flight_weight.saturating_add(tasks) > limits::MAX_LAUNCH_WEIGHT_IN_FLIGHT
    }

    fn bad_request(&mut self, session: SessionId, msg: impl Into<String>) {
        self.send(session, err(ErrorCode::BadRequest, msg, false));
    }

    fn next_id(&mut self, kind: char) -> String {
        let counter = match kind {
            'A' => &mut self.next_agent,
            _ => &mut self.next_framework,
        };
        *counter += 1;
        make_id(&self.config.id_prefix, kind, *counter)
    }
}
