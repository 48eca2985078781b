use crate::event_stream::EventSource;
use crate::join::{JoinSetup, Joins, LeaderView};
use crate::journal::{Journal, JOURNAL_EVENTS};
use crate::leadership::Leadership;
use crate::metrics::MasterMetrics;
use crate::parked::{refuse, Parked};
use crate::reads::ReadGate;
use crate::streams::accept_loop;
use master_core::{Master, Output, ProposalId, SessionId, Stats};
use master_raft::{
    CommitEvent, MasterNode, ProposeError, RaftConfig, RegistryOp, ReplicatedRegistry,
};
use proto::{
    ClientFrame, ClusterState, MasterMember, MastersState, PeerIdentity, Role, ServerFrame,
};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};
use transport::{Identity, RecvBudget, TransportError};

/// Events from stream tasks to the core loop.
const EVENT_QUEUE: usize = 8192;
/// Frames waiting to be written to one client. A client that lets this fill up is too slow to
/// follow the cluster and is disconnected (it re-subscribes and reconciles).
pub(crate) const SESSION_OUTBOX: usize = 4096;

/// A session's queue of frames to send. Boxed: a channel keeps blocks of 32 slots, one from
/// its creation on, and a `ServerFrame` is about 300 bytes, so unboxed every idle session held
/// about 9 KiB of empty slots.
pub(crate) type Outbox = mpsc::Sender<Box<ServerFrame>>;
/// How often, at most, the operator snapshot is rebuilt while the cluster changes, in a small
/// cluster. A linearizable read (`GetState`) republishes it anyway (see `reads`); the periodic
/// rebuild keeps the metrics and unconfirmed reads fresh.
const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(100);
/// The periodic rebuild's interval grows by this much per client session, so its cost stays
/// flat as the cluster grows: a rebuild costs about 2 us per agent, so at most about 1 % of a
/// core (10,000 agents: a rebuild every 2 s). Without it, 5,000 idle agents cost the master 11 %
/// of a core in snapshots alone (every heartbeat marks the state changed).
const SNAPSHOT_INTERVAL_PER_SESSION: Duration = Duration::from_micros(200);

/// The periodic rebuild waits at least this many times as long as the last rebuild took, so it
/// never takes more than about 2 % of a core however many tasks the snapshot lists (a rebuild
/// is a copy of every task: under 2,500 launches/s, tens of ms each, half of the leader's CPU
/// when it ran every 200 ms).
const SNAPSHOT_COST_FACTOR: u32 = 50;

/// When to rebuild the operator snapshot next: after [`SNAPSHOT_INTERVAL`], stretched by the
/// sessions (see [`SNAPSHOT_INTERVAL_PER_SESSION`]) and by what the last rebuild cost (`took`;
/// see [`SNAPSHOT_COST_FACTOR`]).
fn next_snapshot_after(sessions: usize, took: Duration) -> Duration {
    let per_session =
        SNAPSHOT_INTERVAL_PER_SESSION.saturating_mul(u32::try_from(sessions).unwrap_or(u32::MAX));
    SNAPSHOT_INTERVAL
        .max(per_session)
        .max(took.saturating_mul(SNAPSHOT_COST_FACTOR))
}
/// How long a one-shot operator call may wait for its answer.
pub(crate) const OPERATOR_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How soon a master that raft made leader, but whose leadership a majority did not confirm,
/// asks again.
const LEAD_RETRY: Duration = Duration::from_millis(100);
/// Concurrent client connections accepted; more are refused until some close.
pub(crate) const MAX_CONNECTIONS: usize = 65_536;
/// Failed proposals reported back to the core loop (only their count and kind matter).
const PROPOSE_FAILURES: usize = 1024;
/// Bytes of partly received large frames (over 64 KiB) that all clients together may hold.
/// Each connection may also hold at most one maximal frame's worth: without these, one client
/// announcing a maximal frame on each of its 256 streams and never finishing them would make
/// the master hold 16 GiB. A client that waits for budget is held by QUIC flow control; small
/// frames (heartbeats, status updates, most calls) never wait.
const INBOUND_FRAME_BUDGET: usize = 1 << 30;

/// How this master takes part in the replicated registry.
#[derive(Clone, Debug, Default)]
pub struct RaftSetup {
    /// This master's raft id (1 for a single master).
    pub id: u64,
    /// The other masters: id → the name in its certificate and its address. Empty for a
    /// single master (a one-voter cluster).
    pub peers: BTreeMap<u64, MasterNode>,
    /// The address others reach this master at (redirects, raft); the listen address if unset.
    pub advertise: Option<String>,
    /// Join an existing cluster (added by `corral masters add` on its leader) instead of
    /// bootstrapping one from `peers`.
    pub join: bool,
    /// The leader's heartbeat interval; `None`: [`master_raft::DEFAULT_HEARTBEAT`].
    pub heartbeat: Option<Duration>,
    /// A follower that hears no leader for a random time in this range stands for election;
    /// `None`: [`master_raft::DEFAULT_ELECTION_TIMEOUT`].
    pub election_timeout: Option<(Duration, Duration)>,
}

impl RaftSetup {
    /// The raft configuration of master `id` keeping its raft state in `dir`.
    pub fn raft_config(&self, id: u64, dir: PathBuf) -> RaftConfig {
        let mut cfg = RaftConfig::new(id, dir);
        if let Some(hb) = self.heartbeat {
            cfg.heartbeat = hb;
        }
        if let Some((min, max)) = self.election_timeout {
            cfg.election_min = min;
            cfg.election_max = max;
        }
        cfg
    }
}

/// Everything the master daemon needs to run.
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub identity: Arc<Identity>,
    pub core: master_core::MasterConfig,
    pub max_frame_len: usize,
    pub raft: RaftSetup,
    /// Serve Prometheus metrics at `/metrics` on this address (`--metrics-listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// Sign certificates for joins and renewals (`--ca-key`; `join.rs`); `None`: refuse them.
    pub join: Option<JoinSetup>,
}

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: TransportError,
    },
    #[error("the certificate {0} is not a master certificate; issue one with `corral certs issue --role master`")]
    NotAMasterCertificate(String),
    #[error(transparent)]
    Metrics(#[from] telemetry::MetricsError),
    #[error("replicated registry: {0}")]
    Raft(#[from] master_raft::RaftError),
    #[error("the replicated registry stopped: {reason} (check that {data_dir} has free space and is writable, then restart this master)")]
    Stopped { data_dir: PathBuf, reason: String },
}

pub(crate) enum Event {
    Connected {
        session: SessionId,
        peer: PeerIdentity,
        outbox: Outbox,
    },
    Frame {
        session: SessionId,
        frame: ClientFrame,
    },
    Disconnected {
        session: SessionId,
    },
    /// From the read gate, once leadership is confirmed: take in every committed op already
    /// queued for the core and republish the state, then say whether this master still leads.
    ReadBarrier {
        done: oneshot::Sender<bool>,
    },
}

/// Shared by all connection and stream tasks.
pub(crate) struct Edge {
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) snapshot: watch::Receiver<Arc<ClusterState>>,
    pub(crate) next_session: AtomicU64,
    pub(crate) max_frame_len: usize,
    pub(crate) leadership: Arc<Leadership>,
    pub(crate) registry: ReplicatedRegistry,
    /// Confirms leadership before a read is answered (see `reads`).
    pub(crate) reads: ReadGate,
    /// Shared by every client stream (see [`INBOUND_FRAME_BUDGET`]).
    pub(crate) frame_budget: RecvBudget,
    pub(crate) metrics: MasterMetrics,
    /// Join tokens and renewals (`join.rs`).
    pub(crate) joins: Joins,
    /// The operator event stream (`event_stream.rs`).
    pub(crate) event_source: EventSource,
}

impl Edge {
    pub(crate) fn leader_view(&self) -> LeaderView {
        LeaderView {
            is_leader: self.leadership.is_leader.load(Ordering::Acquire),
            leader: self.leadership.leader(),
        }
    }
}

/// A bound, not yet running, master.
pub struct MasterServer {
    endpoint: transport::Endpoint,
    config: Config,
    metrics_listener: Option<std::net::TcpListener>,
}

impl MasterServer {
    /// Checks the configuration and binds the QUIC endpoint.
    pub fn bind(config: Config) -> Result<MasterServer, MasterError> {
        if config.identity.peer().role != Role::Master {
            return Err(MasterError::NotAMasterCertificate(
                config.identity.peer().to_string(),
            ));
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|source| MasterError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let endpoint =
            crate::join::endpoint(config.listen, &config.identity, config.join.is_some()).map_err(
                |source| MasterError::Listen {
                    addr: config.listen,
                    source,
                },
            )?;
        let metrics_listener = config.metrics_listen.map(telemetry::bind).transpose()?;
        Ok(MasterServer {
            endpoint,
            config,
            metrics_listener,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().unwrap_or(self.config.listen)
    }

    /// Where `/metrics` is served, if `metrics_listen` was set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), MasterError> {
        let local = self.local_addr();
        let MasterServer {
            endpoint,
            mut config,
            metrics_listener,
        } = self;
        let raft_id = config.raft.id.max(1);
        let me = MasterNode::new(
            config
                .raft
                .advertise
                .clone()
                .unwrap_or_else(|| local.to_string()),
            config.identity.peer().name.clone(),
        );
        let mut members = config.raft.peers.clone();
        members.insert(raft_id, me.clone());
        let registry = ReplicatedRegistry::start(
            config
                .raft
                .raft_config(raft_id, config.data_dir.join("raft")),
            me,
            config.identity.clone(),
            endpoint.clone(),
        )
        .await?;
        // Before anything is proposed: the journal sees every op applied from here on.
        let journal = Journal::new(JOURNAL_EVENTS);
        journal.attach(&registry);
        // Idempotent: a master with a log (a restart, or a member that joined) keeps its cluster.
        // A joining master waits to be added by the leader instead.
        if !config.raft.join {
            registry.initialize(members.clone()).await?;
        }
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(ClusterState::default()));
        let leadership = Arc::new(Leadership::default());
        let reads = ReadGate::start(registry.clone(), events_tx.clone());
        let edge = Arc::new(Edge {
            events: events_tx,
            reads,
            snapshot: snapshot_rx,
            next_session: AtomicU64::new(1),
            max_frame_len: config.max_frame_len,
            leadership: leadership.clone(),
            registry: registry.clone(),
            frame_budget: RecvBudget::new(INBOUND_FRAME_BUDGET.max(config.max_frame_len)),
            metrics: MasterMetrics::new(),
            joins: Joins::new(config.join.take(), registry.clone()),
            event_source: EventSource {
                journal,
                registry: registry.clone(),
                slots: Arc::new(tokio::sync::Semaphore::new(
                    crate::event_stream::MAX_SUBSCRIBERS,
                )),
            },
        });
        let metrics_server = metrics_listener.map(|listener| {
            let leads = leadership.clone();
            let served = edge.metrics.served(
                edge.snapshot.clone(),
                registry.clone(),
                Arc::new(move || leads.is_leader.load(Ordering::Acquire)),
            );
            tokio::spawn(telemetry::serve(listener, served))
        });
        tracing::info!(listen = %local, name = %config.identity.peer().name, raft_id,
            masters = members.len(), "master serving");
        let core = tokio::spawn(core_loop(
            config.core,
            events_rx,
            snapshot_tx,
            registry.clone(),
            leadership,
            edge.metrics.clone(),
        ));
        let accept = accept_loop(endpoint.clone(), edge);
        let data_dir = config.data_dir.clone();
        let failed = tokio::select! {
            _ = accept => None,
            _ = shutdown => None,
            reason = registry.fatal() => Some(reason),
        };
        match &failed {
            // Raft stops for good on a storage error (a full or failing disk). Serving on
            // would keep every client waiting on changes that can never commit, and keep
            // them from the other masters: stop instead, so clients fail over, and systemd
            // restarts this master once the disk is fixed (the log drops a torn tail on open).
            Some(reason) => tracing::error!(data_dir = %data_dir.display(), %reason,
                "the replicated registry stopped (is the data directory full or failing?); this master stops"),
            None => tracing::info!("master shutting down"),
        }
        core.abort();
        if let Some(m) = metrics_server {
            m.abort();
        }
        endpoint.close(
            0,
            if failed.is_some() {
                b"master stopped: its registry cannot be written"
            } else {
                b"master shutting down"
            },
        );
        registry.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        match failed {
            Some(reason) => Err(MasterError::Stopped { data_dir, reason }),
            None => Ok(()),
        }
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Submits proposals to raft in the order the core made them, without ever blocking the core
/// loop (which must keep receiving commits, or raft stops applying). Only failures come back:
/// success is seen as the committed op itself.
async fn proposer(
    registry: ReplicatedRegistry,
    mut ops: mpsc::Receiver<(ProposalId, RegistryOp)>,
    failures: mpsc::Sender<ProposeError>,
) {
    while let Some((id, op)) = ops.recv().await {
        match registry.submit_tagged(op, Some(id.0)).await {
            Ok(pending) => {
                let failures = failures.clone();
                tokio::spawn(async move {
                    if let Err(e) = pending.await {
                        let _ = failures.try_send(e);
                    }
                });
            }
            Err(e) => {
                let _ = failures.try_send(e);
            }
        }
    }
}

/// The core while this master leads.
struct Leading {
    master: Master,
    commits: mpsc::Receiver<CommitEvent>,
    /// The core's counters as last given to the metrics.
    stats: Stats,
}

/// The one task that owns the core. Everything the core does happens here, in event order. It
/// runs a core only while this master leads; a follower answers clients with the leader's
/// address.
async fn core_loop(
    config: master_core::MasterConfig,
    mut events: mpsc::Receiver<Event>,
    snapshot: watch::Sender<Arc<ClusterState>>,
    registry: ReplicatedRegistry,
    leadership: Arc<Leadership>,
    exported: MasterMetrics,
) {
    let mut metrics = registry.metrics();
    let (ops_tx, ops_rx) = mpsc::channel(master_core::limits::MAX_IN_FLIGHT_PROPOSALS);
    let (fail_tx, mut failures) = mpsc::channel(PROPOSE_FAILURES);
    tokio::spawn(proposer(registry.clone(), ops_rx, fail_tx));
    let mut leading: Option<Leading> = None;
    // On a follower the commit stream is drained (raft waits when it is full).
    let mut following = Some(registry.subscribe().events);
    let mut outboxes: HashMap<SessionId, Outbox> = HashMap::new();
    // When to ask again whether this master may serve as the leader.
    let mut lead_retry: Option<tokio::time::Instant> = None;
    let mut next_publish = tokio::time::Instant::now() + SNAPSHOT_INTERVAL;
    // Sessions that arrived while raft said this master leads but it did not serve yet.
    let mut parked = Parked::default();
    loop {
        // Leadership changes first.
        let leader_addr = registry.leader().map(|(_, node)| node.addr);
        if let Ok(mut l) = leadership.leader.write() {
            *l = leader_addr.clone();
        }
        if registry.is_leader() && leading.is_none() {
            match registry.subscribe_as_leader().await {
                Ok(sub) => {
                    let mut cfg = config.clone();
                    cfg.id_prefix = format!(
                        "{}{}",
                        config.id_prefix,
                        &uuid::Uuid::new_v4().simple().to_string()[..4]
                    );
                    cfg.wall_clock_at_start_ms = wall_ms();
                    tracing::info!(
                        agents = sub.registry.agents().len(),
                        frameworks = sub.registry.frameworks().len(),
                        "this master is the leader; serving from the replicated registry"
                    );
                    let master = Master::with_registry(cfg, Instant::now(), sub.registry);
                    leading = Some(Leading {
                        master,
                        commits: sub.events,
                        stats: Stats::default(),
                    });
                    following = None;
                    leadership.is_leader.store(true, Ordering::Release);
                }
                // Raft says this master leads but a majority did not confirm it: a restarted
                // former leader (openraft restores a stored leader vote as leadership at
                // start) before it hears of its successor, or a leader whose first heartbeat
                // round failed. Not serving; ask again shortly (metrics may not change).
                Err(e) => {
                    tracing::info!(error = %e, "leadership not confirmed by a majority; not serving yet");
                    lead_retry = Some(tokio::time::Instant::now() + LEAD_RETRY);
                }
            }
        } else if !registry.is_leader() && leading.is_some() {
            tracing::warn!(leader = ?leader_addr, "this master lost its leadership; following");
            step_down(
                &mut leading,
                &mut outboxes,
                &leadership,
                leader_addr.clone(),
            );
            following = Some(registry.subscribe().events);
        }
        leadership.publish(
            leader_addr.clone(),
            registry.is_leader(),
            leading.is_some(),
            registry.term(),
        );
        if !parked.is_empty() {
            match leading.as_mut() {
                Some(l) => {
                    let now = Instant::now();
                    for event in parked.release() {
                        session_event(l, &mut outboxes, now, event);
                    }
                    drain_outputs(&mut l.master, &mut outboxes, &ops_tx);
                }
                None if !registry.is_leader() => parked.refuse_all(leader_addr.clone()),
                None => {}
            }
        }

        let deadline = leading
            .as_ref()
            .and_then(|l| l.master.poll_timeout())
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            event = events.recv() => {
                let Some(event) = event else { return };
                let now = Instant::now();
                match (&mut leading, event) {
                    (_, Event::ReadBarrier { done }) => {
                        let had_core = leading.is_some();
                        let leads = take_queued_commits(&mut leading, now);
                        if had_core && !leads {
                            tracing::warn!(leader = ?leader_addr, "this master lost its leadership; following");
                            step_down(&mut leading, &mut outboxes, &leadership, leader_addr.clone());
                            following = Some(registry.subscribe().events);
                        } else if let Some(l) = leading.as_mut() {
                            publish(l, &registry, &snapshot, &exported);
                        }
                        let _ = done.send(leads && registry.is_leader());
                    }
                    (Some(l), event) => session_event(l, &mut outboxes, now, event),
                    // Elected, not serving yet: hold the session until it does (`parked.rs`).
                    (None, event) if registry.is_leader() => {
                        if let Some(event) = parked.hold(event) {
                            refuse(event, leader_addr.clone());
                        }
                    }
                    // Not the leader: say who is; dropping the outbox ends the stream.
                    (None, event) => refuse(event, leader_addr.clone()),
                }
            }
            commit = recv_commit(&mut leading) => {
                let now = Instant::now();
                match commit {
                    Some(CommitEvent::Op { op, id, .. }) => {
                        if let Some(l) = leading.as_mut() {
                            feed_commit(&mut l.master, now, op, id);
                        }
                    }
                    Some(CommitEvent::Reset { registry: reg, .. }) => {
                        // Only a follower installs snapshots; a leader that sees one steps down.
                        tracing::warn!(agents = reg.agents().len(), "the leader's registry was replaced; stepping down");
                        step_down(&mut leading, &mut outboxes, &leadership, leader_addr.clone());
                        following = Some(registry.subscribe().events);
                    }
                    None => {
                        step_down(&mut leading, &mut outboxes, &leadership, leader_addr.clone());
                        following = Some(registry.subscribe().events);
                    }
                }
            }
            _ = async {
                match following.as_mut() {
                    Some(rx) => { let _ = rx.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
            failure = failures.recv() => {
                if let Some(e) = failure {
                    tracing::warn!(error = %e, "a registry change was not committed");
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                if let Some(l) = leading.as_mut() {
                    let passes = l.master.stats().allocation_passes;
                    let started = Instant::now();
                    l.master.handle_timeout(started);
                    if l.master.stats().allocation_passes != passes {
                        exported.allocation_pass(started.elapsed());
                    }
                }
            }
            _ = tokio::time::sleep_until(lead_retry.unwrap_or_else(tokio::time::Instant::now)), if lead_retry.is_some() => {
                lead_retry = None;
            }
            _ = tokio::time::sleep_until(next_publish) => {
                let started = tokio::time::Instant::now();
                let sessions = match leading.as_mut() {
                    Some(l) => {
                        publish(l, &registry, &snapshot, &exported);
                        l.master.stats().sessions
                    }
                    None => {
                        exported.core_stopped();
                        0
                    }
                };
                let now = tokio::time::Instant::now();
                next_publish = now + next_snapshot_after(sessions, now - started);
            }
        }
        if let Some(l) = leading.as_mut() {
            drain_outputs(&mut l.master, &mut outboxes, &ops_tx);
        }
    }
}

/// Hands the serving core a session's start, frame or end.
fn session_event(
    l: &mut Leading,
    outboxes: &mut HashMap<SessionId, Outbox>,
    now: Instant,
    event: Event,
) {
    match event {
        Event::Connected {
            session,
            peer,
            outbox,
        } => {
            outboxes.insert(session, outbox);
            l.master.handle_connected(now, session, peer);
        }
        Event::Frame { session, frame } => l.master.handle_message(now, session, frame),
        Event::Disconnected { session } => {
            if outboxes.remove(&session).is_some() {
                l.master.handle_disconnected(now, session);
            }
        }
        // Answered by the core loop itself.
        Event::ReadBarrier { done } => {
            let _ = done.send(false);
        }
    }
}

/// Republishes the state snapshot if it changed (with the masters' current raft status).
fn publish(
    l: &mut Leading,
    registry: &ReplicatedRegistry,
    snapshot: &watch::Sender<Arc<ClusterState>>,
    metrics: &MasterMetrics,
) {
    metrics.observe_core(&mut l.stats, l.master.stats());
    metrics.launches(l.master.take_launch_latencies());
    l.master.set_masters_state(masters_state(registry));
    if l.master.snapshot_dirty() {
        l.master.clear_snapshot_dirty();
        let _ = snapshot.send(Arc::new(l.master.snapshot()));
    }
}

/// Hands the core one committed op with the id it was proposed under, so that the core runs
/// that proposal's continuation (a subscription's reply, a registration's), or without one for
/// an op this core did not propose.
fn feed_commit(master: &mut Master, now: Instant, op: RegistryOp, id: Option<u64>) {
    match id {
        Some(id) => master.handle_proposal_committed(now, ProposalId(id), op),
        None => master.handle_committed(now, op),
    }
}

/// For a read barrier: hands the core every committed op already queued for it. False when
/// this master does not lead (no core, or the registry was replaced or the stream ended: the
/// caller steps down).
fn take_queued_commits(leading: &mut Option<Leading>, now: Instant) -> bool {
    let Some(l) = leading.as_mut() else {
        return false;
    };
    loop {
        match l.commits.try_recv() {
            Ok(CommitEvent::Op { op, id, .. }) => feed_commit(&mut l.master, now, op, id),
            Ok(CommitEvent::Reset { .. }) | Err(mpsc::error::TryRecvError::Disconnected) => {
                return false
            }
            Err(mpsc::error::TryRecvError::Empty) => return true,
        }
    }
}

async fn recv_commit(leading: &mut Option<Leading>) -> Option<CommitEvent> {
    match leading.as_mut() {
        Some(l) => l.commits.recv().await,
        None => std::future::pending().await,
    }
}

fn step_down(
    leading: &mut Option<Leading>,
    outboxes: &mut HashMap<SessionId, Outbox>,
    leadership: &Leadership,
    leader: Option<String>,
) {
    leadership.is_leader.store(false, Ordering::Release);
    *leading = None;
    // Every client is told where the leader is and disconnected; they reconnect there.
    for (_, outbox) in outboxes.drain() {
        let _ = outbox.try_send(Box::new(ServerFrame::NotLeader {
            leader: leader.clone(),
        }));
    }
}

/// Leader, term, members and lag, for `corral state`.
fn masters_state(registry: &ReplicatedRegistry) -> MastersState {
    let status = registry.status();
    MastersState {
        leader: status.leader.as_ref().map(|(_, n)| n.addr.clone()),
        term: status.term,
        members: status
            .voters
            .iter()
            .map(|(id, node)| MasterMember {
                id: *id,
                address: node.addr.clone(),
                is_leader: status.leader.as_ref().is_some_and(|(l, _)| l == id),
                lag: status.lag.get(id).copied(),
            })
            .collect(),
    }
}

fn drain_outputs(
    master: &mut Master,
    outboxes: &mut HashMap<SessionId, Outbox>,
    proposals: &mpsc::Sender<(ProposalId, RegistryOp)>,
) {
    let mut slow = Vec::new();
    while let Some(output) = master.poll_output() {
        match output {
            Output::Send { to, frame } => {
                if let Some(outbox) = outboxes.get(&to) {
                    if let Err(mpsc::error::TrySendError::Full(_)) =
                        outbox.try_send(Box::new(frame))
                    {
                        if !slow.contains(&to) {
                            tracing::warn!(
                                session = to,
                                queued = SESSION_OUTBOX,
                                "closing a session that does not keep up"
                            );
                            slow.push(to);
                        }
                    }
                }
            }
            Output::Close { session, reason } => {
                tracing::info!(session, %reason, "closing session");
                // Dropping the outbox lets the stream task flush what is queued, then finish.
                if outboxes.remove(&session).is_some() {
                    master.handle_disconnected(Instant::now(), session);
                }
            }
            // Replicated through raft; the core acts when the op comes back committed. The
            // channel holds as many ops as the core may have in flight, so this cannot fail
            // while the proposer runs.
            Output::Propose { id, op } => {
                if proposals.try_send((id, op)).is_err() {
                    tracing::error!(
                        "the proposal queue is full or closed; a registry change was dropped"
                    );
                }
            }
        }
    }
    for session in slow {
        if outboxes.remove(&session).is_some() {
            master.handle_disconnected(Instant::now(), session);
        }
    }
}

#[cfg(test)]
mod raft_setup_tests {
    use super::*;

    #[test]
    fn the_snapshot_is_rebuilt_less_often_as_sessions_or_its_cost_grow() {
        let ms = Duration::from_millis;
        assert_eq!(next_snapshot_after(0, Duration::ZERO), SNAPSHOT_INTERVAL);
        assert_eq!(next_snapshot_after(10_000, ms(1)), ms(2_000));
        assert_eq!(
            next_snapshot_after(10, ms(20)),
            ms(1_000),
            "50 times its cost"
        );
        assert_eq!(next_snapshot_after(10_000, ms(60)), ms(3_000));
    }

    #[test]
    fn the_timers_set_override_the_defaults_and_only_those() {
        let dir = PathBuf::from("/nonexistent");
        let d = RaftSetup::default().raft_config(1, dir.clone());
        assert_eq!(d.heartbeat, master_raft::DEFAULT_HEARTBEAT);
        let setup = RaftSetup {
            heartbeat: Some(Duration::from_millis(500)),
            election_timeout: Some((Duration::from_secs(2), Duration::from_secs(4))),
            ..Default::default()
        };
        let c = setup.raft_config(2, dir.clone());
        assert_eq!(
            (c.node_id, c.heartbeat, c.election_min, c.election_max),
            (
                2,
                Duration::from_millis(500),
                Duration::from_secs(2),
                Duration::from_secs(4)
            )
        );
        let only_hb = RaftSetup {
            heartbeat: Some(Duration::from_millis(50)),
            ..Default::default()
        }
        .raft_config(1, dir);
        assert_eq!(
            (only_hb.election_min, only_hb.election_max),
            master_raft::DEFAULT_ELECTION_TIMEOUT
        );
    }
}
