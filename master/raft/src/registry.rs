//! [`ReplicatedRegistry`]: the facade the master daemon uses.

use crate::election::{Contact, Timing};
use crate::log_store::{LogStore, StoreError};
use crate::network::Network;
use crate::state_machine::{SnapshotError, StateMachine, Subscription};
use crate::{MasterNode, NodeId, Proposal, Raft, RaftMetrics, Registry, RegistryOp};
use openraft::error::{ClientWriteError, InitializeError, RaftError as OrRaftError};
use openraft::{ServerState, SnapshotPolicy};
use proto::Role;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::AbortHandle;

/// Ops submitted and not yet in an entry; [`ReplicatedRegistry::submit`] waits when full.
pub const PROPOSE_QUEUE: usize = 4096;
/// Most weight ([`RegistryOp::weight`]: a task launched or one other op, a few hundred bytes
/// each) batched into one entry. An op heavier than this alone makes an entry of its own.
pub const MAX_BATCH_WEIGHT: usize = 256;
/// Entries per append-entries RPC. With [`MAX_BATCH_WEIGHT`] this bounds an RPC to a few
/// hundred KiB, which must reach a follower, be logged and fsynced there and be answered
/// within one heartbeat (openraft's deadline for it) even on a loaded host: a late answer is
/// a failed RPC, sent again, and the followers, hearing nothing accepted, elect.
pub const MAX_PAYLOAD_ENTRIES: u64 = 8;
/// Entries proposed and not yet applied at once. While all are in flight, new ops wait and
/// then go into the next entry together: under load one entry carries many ops, while a lone
/// op is proposed at once.
pub const MAX_INFLIGHT_BATCHES: usize = 4;

/// The default heartbeat interval (see [`RaftConfig::new`]).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(150);
/// The default election timeout range (see [`RaftConfig::new`]).
pub const DEFAULT_ELECTION_TIMEOUT: (Duration, Duration) =
    (Duration::from_millis(300), Duration::from_millis(600));
/// The shortest election timeout minimum, in heartbeats. A follower must miss several
/// heartbeats in a row before it stands, or one late heartbeat (a busy host, a lost packet)
/// deposes a healthy leader. A follower that has seen a leader waits the leader lease (the
/// election timeout maximum) plus its timeout (at least the minimum), so with the minimum at
/// two heartbeats it stands only after more than four missed heartbeats (the defaults: 0.9 s
/// or more, six heartbeats).
pub const MIN_ELECTION_HEARTBEATS: u32 = 2;
/// No raft timer may be longer than this: beyond it a dead leader would go unnoticed for hours,
/// which is a typo rather than a choice.
pub const MAX_RAFT_TIMER: Duration = Duration::from_secs(3600);

/// How a master takes part in raft.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    /// This master's raft id: distinct within the cluster and never reused for another master.
    pub node_id: NodeId,
    /// Where the log (`log/`) and the snapshot (`snapshot/`) live.
    pub data_dir: PathBuf,
    /// How often the leader sends heartbeats (and how long an append-entries RPC may take).
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time in `[election_min, election_max)`
    /// starts an election.
    pub election_min: Duration,
    pub election_max: Duration,
    /// Build a snapshot (and purge the log) every this many applied entries.
    pub snapshot_every: u64,
    /// Entries kept in the log after a snapshot, so a briefly lagging follower catches up from
    /// the log rather than a whole snapshot.
    pub keep_after_snapshot: u64,
    /// How long a master being added (`add_master`) has to acknowledge the log as a learner
    /// before it would become a voter. One that does not is not added: a voter that cannot be
    /// reached would leave the cluster without a majority (a single master could then commit
    /// nothing at all).
    pub add_master_catch_up: Duration,
}

impl RaftConfig {
    /// The defaults, chosen for failover well under 3 s on a LAN:
    /// - heartbeat 150 ms: openraft also uses it as the append-entries deadline, so it must
    ///   cover a QUIC round trip plus the follower's fsync (a few ms on SSDs) with room to spare.
    ///   openraft ticks every 1.5 heartbeats (225 ms) and sends a heartbeat on each tick;
    /// - election timeout 300 to 600 ms. openraft 0.9 picks each master's timeout once in that
    ///   range for its vote lease; our election driver ([`crate::election`]) picks a fresh
    ///   time in it for each candidacy and waits the leader lease (the maximum, 600 ms) on top,
    ///   so a follower stands after 0.9 to 1.2 s without a heartbeat: four missed heartbeats in
    ///   a row, so a busy host (2 cores running builds and tests) does not depose a healthy
    ///   leader, yet a dead leader is replaced about 1 to 1.4 s after it died (timeout, one
    ///   pre-vote and one vote round trip, the new leader's first commit).
    ///
    /// openraft 0.9 has no pre-vote. Its leader lease (a master that heard from a leader within
    /// the election timeout rejects vote requests) keeps a rejoining master from winning, but
    /// not from raising its term, which the leader then sees as "higher vote" and steps down
    /// for; so openraft's election timer is off and [`crate::election`] stands only after a
    /// pre-vote that a majority granted, and the leader re-dials a peer that was down promptly
    /// (`network`).
    ///
    /// Sysadmins change the timers with `corral master --raft-heartbeat-secs` and
    /// `--raft-election-timeout-secs MIN-MAX` (WAN links, busy hosts); [`Self::check_timing`]
    /// says what is allowed.
    pub fn new(node_id: NodeId, data_dir: impl Into<PathBuf>) -> RaftConfig {
        RaftConfig {
            node_id,
            data_dir: data_dir.into(),
            heartbeat: DEFAULT_HEARTBEAT,
            election_min: DEFAULT_ELECTION_TIMEOUT.0,
            election_max: DEFAULT_ELECTION_TIMEOUT.1,
            snapshot_every: 10_000,
            keep_after_snapshot: 1_000,
            add_master_catch_up: Duration::from_secs(10),
        }
    }

    /// Checks the timers (openraft counts whole milliseconds): the heartbeat at least 1 ms, the
    /// election timeout at least [`MIN_ELECTION_HEARTBEATS`] heartbeats, its minimum below its
    /// maximum, and none beyond [`MAX_RAFT_TIMER`]. The daemon checks its flags the same way
    /// first, naming them; this guards every other caller (openraft would panic on a zero tick).
    pub fn check_timing(&self) -> Result<(), RaftError> {
        let bad = |why: String| Err(RaftError::Config(why));
        let (hb, min, max) = (self.heartbeat, self.election_min, self.election_max);
        if hb < Duration::from_millis(1) {
            return bad(format!("heartbeat {hb:?}: must be at least 1 ms"));
        }
        if max > MAX_RAFT_TIMER {
            return bad(format!(
                "election timeout {max:?}: at most {MAX_RAFT_TIMER:?}"
            ));
        }
        if min >= max || min.as_millis() >= max.as_millis() {
            return bad(format!(
                "election timeout {min:?}-{max:?}: the minimum must be below the maximum"
            ));
        }
        if min < hb.saturating_mul(MIN_ELECTION_HEARTBEATS) {
            return bad(format!(
                "election timeout minimum {min:?} is under {MIN_ELECTION_HEARTBEATS} heartbeats \
                 ({hb:?} each): a follower must miss several heartbeats before it stands"
            ));
        }
        Ok(())
    }

    fn openraft_config(&self) -> Result<openraft::Config, RaftError> {
        self.check_timing()?;
        let ms = |d: Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
        let cfg = openraft::Config {
            cluster_name: "corral-masters".into(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_min),
            election_timeout_max: ms(self.election_max),
            // A whole registry snapshot in one frame: allow seconds, not openraft's 200 ms.
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: self.keep_after_snapshot,
            // A follower further behind than this gets a snapshot.
            replication_lag_threshold: self
                .snapshot_every
                .saturating_add(self.keep_after_snapshot)
                .max(1),
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            // Purge whatever the snapshot policy allows: it happens once per snapshot and
            // costs one record and one fsync here.
            purge_batch_size: 1,
            // Elections are ours: a pre-vote first (crate::election).
            enable_elect: false,
            ..Default::default()
        };
        cfg.validate().map_err(|e| RaftError::Config(e.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("raft log: {0}")]
    Log(#[from] StoreError),
    #[error("raft snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("invalid raft configuration: {0}")]
    Config(String),
    #[error("this master is configured as '{configured}' but its certificate says it is {actual}")]
    Identity { configured: String, actual: String },
    #[error("cannot initialize the master cluster: {0}")]
    Initialize(String),
    #[error("raft stopped: {0}")]
    Stopped(String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    /// This master does not lead; `leader` is the one it knows of, if any.
    #[error("this master is not the leader{}", leader_hint(leader))]
    NotLeader {
        leader: Option<(NodeId, MasterNode)>,
    },
    #[error("raft stopped: {0}")]
    Stopped(String),
}

fn leader_hint(leader: &Option<(NodeId, MasterNode)>) -> String {
    match leader {
        Some((id, node)) => format!("; the leader is raft node {id}, {node}"),
        None => "; no leader is known".into(),
    }
}

type ProposeResult = Result<u64, ProposeError>;

/// An op waiting for the batcher.
struct Submitted {
    op: RegistryOp,
    id: Option<u64>,
    tx: oneshot::Sender<ProposeResult>,
}

/// The outcome of a submitted op: its log index once committed and applied here, or why not.
#[derive(Debug)]
pub struct Pending {
    rx: oneshot::Receiver<ProposeResult>,
}

impl Future for Pending {
    type Output = ProposeResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ProposeResult> {
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                Err(ProposeError::Stopped(
                    "raft stopped before answering".into(),
                ))
            })
        })
    }
}

fn client_write_error(e: ClientWriteError<NodeId, MasterNode>) -> ProposeError {
    match e {
        ClientWriteError::ForwardToLeader(f) => ProposeError::NotLeader {
            leader: f.leader_id.zip(f.leader_node),
        },
        ClientWriteError::ChangeMembershipError(c) => ProposeError::Stopped(c.to_string()),
    }
}

/// The ops of one entry, their proposal ids and who waits for each.
struct Batch {
    ops: Vec<RegistryOp>,
    ids: Vec<Option<u64>>,
    txs: Vec<oneshot::Sender<ProposeResult>>,
}

/// Starts an entry with `first` and adds what `next` has waiting, in order, up to
/// [`MAX_BATCH_WEIGHT`]. The op that would go over it is returned, to start the next entry.
fn fill_batch(
    first: Submitted,
    mut next: impl FnMut() -> Option<Submitted>,
) -> (Batch, Option<Submitted>) {
    let mut weight = first.op.weight();
    let mut batch = Batch {
        ops: vec![first.op],
        ids: vec![first.id],
        txs: vec![first.tx],
    };
    while weight < MAX_BATCH_WEIGHT {
        let Some(s) = next() else { break };
        let w = s.op.weight();
        if weight + w > MAX_BATCH_WEIGHT {
            return (batch, Some(s));
        }
        weight += w;
        batch.ops.push(s.op);
        batch.ids.push(s.id);
        batch.txs.push(s.tx);
    }
    (batch, None)
}

/// Takes queued ops in order, batches whatever is waiting into one entry, and keeps at most
/// [`MAX_INFLIGHT_BATCHES`] entries in flight. Entries reach raft in submit order, so the log
/// holds the ops in submit order.
async fn batcher(raft: Raft, mut rx: mpsc::Receiver<Submitted>) {
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_BATCHES));
    // An op that would have made the last entry too heavy: it starts the next one.
    let mut carried: Option<Submitted> = None;
    loop {
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(s) => s,
            None => match rx.recv().await {
                Some(s) => s,
                None => return,
            },
        };
        let (batch, rest) = fill_batch(first, || rx.try_recv().ok());
        carried = rest;
        let Batch { ops, mut ids, txs } = batch;
        if ids.iter().all(Option::is_none) {
            ids.clear();
        }
        match raft.client_write_ff(Proposal::new(ops, ids)).await {
            Ok(resp) => {
                tokio::spawn(async move {
                    let r = match resp.await {
                        Ok(Ok(w)) => Ok(w.log_id.index),
                        Ok(Err(e)) => Err(client_write_error(e)),
                        Err(_) => Err(ProposeError::Stopped(
                            "raft stopped before the entry was applied".into(),
                        )),
                    };
                    for tx in txs {
                        let _ = tx.send(r.clone());
                    }
                    drop(permit);
                });
            }
            Err(fatal) => {
                let r = Err(ProposeError::Stopped(fatal.to_string()));
                for tx in txs {
                    let _ = tx.send(r.clone());
                }
            }
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum MembershipError {
    #[error("this master is not the leader{}", leader_hint(leader))]
    NotLeader {
        leader: Option<(NodeId, MasterNode)>,
    },
    #[error("membership change refused: {0}")]
    Refused(String),
    #[error("raft stopped: {0}")]
    Stopped(String),
}

/// What `corral state` shows about the masters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub id: NodeId,
    /// "leader", "follower", "candidate", "learner" or "shutdown".
    pub role: String,
    pub term: u64,
    pub leader: Option<(NodeId, MasterNode)>,
    pub voters: BTreeMap<NodeId, MasterNode>,
    pub learners: BTreeMap<NodeId, MasterNode>,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    /// On the leader: entries each other member is behind our last log index.
    pub lag: BTreeMap<NodeId, u64>,
}

/// The replicated registry of one master. See the crate doc for the contract. Clones share
/// the same raft node (for running proposals as tasks).
#[derive(Clone)]
pub struct ReplicatedRegistry {
    id: NodeId,
    me: MasterNode,
    raft: Raft,
    sm: StateMachine,
    network: Network,
    proposals: mpsc::Sender<Submitted>,
    batcher: AbortHandle,
    add_master_catch_up: Duration,
    /// What the raft server heard, for the election driver (see [`Self::raft_server`]).
    contact: Arc<Contact>,
    timing: Timing,
    /// The election driver ([`crate::election::drive`]).
    elections: AbortHandle,
}

impl std::fmt::Debug for ReplicatedRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedRegistry")
            .field("id", &self.id)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

fn leader_of(raft: &Raft, leader: Option<NodeId>) -> Option<(NodeId, MasterNode)> {
    let id = leader?;
    let m = raft.metrics();
    let m = m.borrow();
    let node = m.membership_config.membership().get_node(&id)?.clone();
    Some((id, node))
}

impl ReplicatedRegistry {
    /// Opens the log and snapshot in `cfg.data_dir` and starts raft. RPCs go out through
    /// `endpoint` (the master's own endpoint, presenting `identity`); inbound raft streams must
    /// be handed to [`crate::network::serve_raft_connection`] with [`Self::raft_server`]. A master
    /// with data rejoins its cluster by itself; a new cluster needs [`Self::initialize`].
    pub async fn start(
        cfg: RaftConfig,
        me: MasterNode,
        identity: Arc<transport::Identity>,
        endpoint: transport::Endpoint,
    ) -> Result<Self, RaftError> {
        let ours = identity.peer();
        if ours.role != Role::Master || ours.name != me.name {
            return Err(RaftError::Identity {
                configured: me.name.clone(),
                actual: ours.to_string(),
            });
        }
        let config = Arc::new(cfg.openraft_config()?);
        tracing::info!(
            heartbeat_ms = config.heartbeat_interval,
            election_timeout_min_ms = config.election_timeout_min,
            election_timeout_max_ms = config.election_timeout_max,
            "raft timing"
        );
        let log_dir = cfg.data_dir.join("log");
        let snap_dir = cfg.data_dir.join("snapshot");
        let (log, sm) = tokio::task::spawn_blocking(move || {
            let log = LogStore::open(&log_dir)?;
            let sm = StateMachine::open(&snap_dir)?;
            Ok::<_, RaftError>((log, sm))
        })
        .await
        .map_err(|e| RaftError::Stopped(e.to_string()))??;
        // Raft RPCs go out from an endpoint of their own, on the server's address with any
        // port (see transport::peer_client_endpoint for why not the server's own socket).
        let local = endpoint
            .local_addr()
            .map(|a| SocketAddr::new(a.ip(), 0))
            .map_err(|e| {
                RaftError::Stopped(format!("the master's endpoint has no address: {e}"))
            })?;
        let client = transport::peer_client_endpoint(local, &identity)
            .map_err(|e| RaftError::Stopped(e.to_string()))?;
        let network = Network::new(cfg.node_id, client);
        let raft = Raft::new(cfg.node_id, config, network.clone(), log, sm.clone())
            .await
            .map_err(|e| RaftError::Stopped(e.to_string()))?;
        let (proposals, rx) = mpsc::channel(PROPOSE_QUEUE);
        let batcher = tokio::spawn(batcher(raft.clone(), rx)).abort_handle();
        // Off in the config already; said again so that nothing turns openraft's timer on.
        raft.runtime_config().elect(false);
        let contact = Arc::new(Contact::default());
        let timing = Timing {
            election_min: cfg.election_min,
            election_max: cfg.election_max,
        };
        let elections = tokio::spawn(crate::election::drive(
            cfg.node_id,
            raft.clone(),
            network.clone(),
            contact.clone(),
            timing,
        ))
        .abort_handle();
        Ok(ReplicatedRegistry {
            contact,
            timing,
            elections,
            id: cfg.node_id,
            me,
            raft,
            sm,
            network,
            proposals,
            batcher,
            add_master_catch_up: cfg.add_master_catch_up,
        })
    }

    /// Bootstraps a new cluster of `members` (which must include this master). Idempotent: a
    /// master that already has a log (initialized before, or joined) answers `Ok`. Call it on
    /// one master only, or on all with the same members; different member sets on different
    /// masters would make two clusters.
    pub async fn initialize(&self, members: BTreeMap<NodeId, MasterNode>) -> Result<(), RaftError> {
        // A restarted master has a log: asking openraft anyway would only make it log an error.
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| RaftError::Initialize(e.to_string()))?
        {
            return Ok(());
        }
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(OrRaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(RaftError::Initialize(e.to_string())),
        }
    }

    /// Queues `op` for the log (waiting only while [`PROPOSE_QUEUE`] ops are queued) and
    /// returns its outcome to await. Ops enter the log in submit order. See the crate doc for
    /// why the daemon should not await the result while not draining its subscription.
    pub async fn submit(&self, op: RegistryOp) -> Result<Pending, ProposeError> {
        self.submit_tagged(op, None).await
    }

    /// [`Self::submit`] with the proposer's tag, which comes back with the committed op
    /// ([`CommitEvent::Op`]'s `id`).
    pub async fn submit_tagged(
        &self,
        op: RegistryOp,
        id: Option<u64>,
    ) -> Result<Pending, ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.proposals
            .send(Submitted { op, id, tx })
            .await
            .map_err(|_| ProposeError::Stopped("the proposal queue is closed".into()))?;
        Ok(Pending { rx })
    }

    /// [`Self::submit`], then waits: the op's log index once it is committed and applied here.
    pub async fn propose(&self, op: RegistryOp) -> Result<u64, ProposeError> {
        self.submit(op).await?.await
    }

    /// The registry as of the last applied entry, and a stream of every later committed op.
    pub fn subscribe(&self) -> Subscription {
        self.sm.subscribe()
    }

    /// For a master that just became leader: waits until every entry committed before its
    /// term is applied here (a quorum round trip, then the apply), then subscribes. Fails with
    /// `NotLeader` if leadership was lost meanwhile.
    pub async fn subscribe_as_leader(&self) -> Result<Subscription, ProposeError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(self.sm.subscribe()),
            Err(OrRaftError::APIError(e)) => {
                let leader = self.leader();
                tracing::debug!(error = %e, "not the leader after all");
                Err(ProposeError::NotLeader { leader })
            }
            Err(OrRaftError::Fatal(e)) => Err(ProposeError::Stopped(e.to_string())),
        }
    }

    /// Confirms that this master leads *now* and returns the read index: openraft's
    /// `ensure_linearizable`, a heartbeat round that a majority of voters must answer without
    /// a higher vote (each RPC bounded by the heartbeat interval), then a wait until this
    /// master has applied every entry committed before the round began (the read index). A
    /// read answered after this reflects every op committed before the read arrived, so a
    /// deposed leader that has not heard of its successor yet (cut off, or just healed) cannot
    /// answer from its stale registry. Fails with `NotLeader` when another master leads, a
    /// majority did not answer, or `timeout` passed first. The daemon coalesces reads, so
    /// one round serves every read that arrived before it began.
    pub async fn confirm_leadership(&self, timeout: Duration) -> Result<u64, ProposeError> {
        let not_leader = || {
            let leader = self.leader().filter(|(id, _)| *id != self.id);
            ProposeError::NotLeader { leader }
        };
        match tokio::time::timeout(timeout, self.raft.ensure_linearizable()).await {
            Ok(Ok(read)) => Ok(read.map_or(0, |l| l.index)),
            Ok(Err(OrRaftError::APIError(e))) => {
                tracing::debug!(error = %e, "leadership not confirmed for a read");
                Err(not_leader())
            }
            Ok(Err(OrRaftError::Fatal(e))) => Err(ProposeError::Stopped(e.to_string())),
            Err(_) => {
                tracing::debug!(?timeout, "leadership not confirmed for a read in time");
                Err(not_leader())
            }
        }
    }

    /// Installs the observer of every op applied from now on; returns the last applied index
    /// (see [`crate::ApplyObserver`]).
    pub fn observe(&self, observer: Box<dyn crate::ApplyObserver>) -> u64 {
        self.sm.observe(observer)
    }

    /// Runs `f` on the registry and its last applied index, with no op applied meanwhile.
    pub fn read_registry<R>(&self, f: impl FnOnce(&Registry, u64) -> R) -> R {
        self.sm.read_registry(f)
    }

    /// A copy of the registry as of the last applied entry.
    pub fn registry_snapshot(&self) -> Registry {
        self.sm.registry().0
    }

    /// The last applied log index (0 before any entry).
    pub fn applied_index(&self) -> u64 {
        self.sm.registry().1
    }

    /// openraft's metrics (leader, term, membership, replication progress), updated live.
    pub fn metrics(&self) -> watch::Receiver<RaftMetrics> {
        self.raft.metrics()
    }

    /// Completes when raft has stopped on a fatal error (the log or the snapshot store could
    /// not be written: a full or failing disk), with the reason. Raft then serves nothing
    /// more: the daemon must stop, or it would keep clients waiting on proposals that can
    /// never commit. Never completes while raft runs.
    pub async fn fatal(&self) -> String {
        let mut rx = self.raft.metrics();
        loop {
            if let Err(fatal) = &rx.borrow_and_update().running_state {
                return fatal.to_string();
            }
            if rx.changed().await.is_err() {
                return "raft stopped".into();
            }
        }
    }

    /// The leader as this master knows it.
    pub fn leader(&self) -> Option<(NodeId, MasterNode)> {
        let leader = self.raft.metrics().borrow().current_leader;
        leader_of(&self.raft, leader)
    }

    /// The raft term this master is in.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Whether this master currently leads.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// A summary for `corral state`.
    pub fn status(&self) -> ClusterStatus {
        let rx = self.raft.metrics();
        let m = rx.borrow();
        let membership = m.membership_config.membership();
        let voter_ids: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut voters = BTreeMap::new();
        let mut learners = BTreeMap::new();
        for (id, node) in membership.nodes() {
            if voter_ids.contains(id) {
                voters.insert(*id, node.clone());
            } else {
                learners.insert(*id, node.clone());
            }
        }
        let last = m.last_log_index.unwrap_or(0);
        let lag = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != self.id)
                    .map(|(id, matched)| (*id, last.saturating_sub(matched.map_or(0, |l| l.index))))
                    .collect()
            })
            .unwrap_or_default();
        let leader = m
            .current_leader
            .and_then(|id| membership.get_node(&id).map(|n| (id, n.clone())));
        ClusterStatus {
            id: self.id,
            role: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            }
            .into(),
            term: m.current_term,
            leader,
            voters,
            learners,
            last_log_index: m.last_log_index,
            last_applied_index: m.last_applied.map(|l| l.index),
            lag,
        }
    }

    /// Adds a master as a voter: first as a learner, waiting until it has caught up, then
    /// through a joint configuration to the new voter set. Leader only.
    pub async fn add_master(&self, id: NodeId, node: MasterNode) -> Result<(), MembershipError> {
        // Not `blocking`: openraft 0.9 may answer at once for a learner that never answered
        // (seen with an unreachable address), and the voter change below would then take the
        // majority away. Wait here for the learner's own acknowledgement instead.
        self.raft
            .add_learner(id, node.clone(), false)
            .await
            .map_err(|e| self.membership_error(e))?;
        if !self.learner_caught_up(id).await {
            let learner = BTreeSet::from([id]);
            if let Err(e) = self
                .raft
                .change_membership(openraft::ChangeMembers::RemoveNodes(learner), false)
                .await
            {
                tracing::warn!(id, error = %e, "cannot remove a master that did not catch up");
            }
            return Err(MembershipError::Refused(format!(
                "raft node {id} ({node}) did not catch up with the log within {:?}; it was not \
                 added. Start it first (`corral master --join`) and check that this master \
                 reaches it at {}",
                self.add_master_catch_up, node.addr
            )));
        }
        let mut voters: BTreeSet<NodeId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        voters.insert(id);
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|e| self.membership_error(e))?;
        Ok(())
    }

    /// Whether learner `id` acknowledges the log as of now within the catch-up time.
    async fn learner_caught_up(&self, id: NodeId) -> bool {
        let mut rx = self.raft.metrics();
        let target = rx.borrow().last_log_index;
        let acked = async {
            loop {
                let matched = rx
                    .borrow_and_update()
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).copied().flatten())
                    .map(|l| l.index);
                if matched.is_some() && matched >= target {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(self.add_master_catch_up, acked)
            .await
            .unwrap_or(false)
    }

    /// Removes a master from the voters (and the cluster). Leader only. Removing the leader
    /// itself is allowed: it steps down once the new configuration commits.
    pub async fn remove_master(&self, id: NodeId) -> Result<(), MembershipError> {
        let mut voters: BTreeSet<NodeId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if !voters.remove(&id) {
            return Err(MembershipError::Refused(format!(
                "raft node {id} is not a voting master"
            )));
        }
        if voters.is_empty() {
            return Err(MembershipError::Refused(
                "cannot remove the last master".into(),
            ));
        }
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|e| self.membership_error(e))?;
        Ok(())
    }

    fn membership_error(
        &self,
        e: OrRaftError<NodeId, ClientWriteError<NodeId, MasterNode>>,
    ) -> MembershipError {
        match e {
            OrRaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                MembershipError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node),
                }
            }
            OrRaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
                MembershipError::Refused(c.to_string())
            }
            OrRaftError::Fatal(f) => MembershipError::Stopped(f.to_string()),
        }
    }

    /// What inbound raft connections are served with
    /// ([`crate::network::serve_raft_connection`]).
    pub fn raft_server(&self) -> crate::network::RaftServer {
        crate::network::RaftServer::with_contact(
            self.raft.clone(),
            self.contact.clone(),
            self.timing,
        )
    }

    /// The raft node.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// This master's raft id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This master as a raft member.
    pub fn me(&self) -> &MasterNode {
        &self.me
    }

    /// Stops raft (a leader simply stops sending heartbeats; the others elect a new one) and
    /// closes the connections to the other masters. The data stays on disk. Clones of this
    /// handle then answer every call with a `Stopped` error.
    pub async fn shutdown(self) {
        self.batcher.abort();
        self.elections.abort();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not stop cleanly");
        }
        self.sm.unsubscribe();
        self.network.close_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(hb: u64, min: u64, max: u64) -> RaftConfig {
        let mut c = RaftConfig::new(1, "/nonexistent");
        c.heartbeat = Duration::from_millis(hb);
        c.election_min = Duration::from_millis(min);
        c.election_max = Duration::from_millis(max);
        c
    }

    fn submitted(op: RegistryOp) -> Submitted {
        Submitted {
            op,
            id: None,
            tx: oneshot::channel().0,
        }
    }

    fn launch(tasks: usize) -> Submitted {
        let agent = proto::AgentId::new("A1");
        submitted(RegistryOp::TasksAdded {
            framework_id: proto::FrameworkId::new("F1"),
            agent_id: agent.clone(),
            role: "*".into(),
            executor: None,
            tasks: (0..tasks)
                .map(|i| master_core::testing::task(&format!("t{i}"), &agent, "cpus:0.1"))
                .collect(),
            at_ms: 0,
        })
    }

    fn removal(n: usize) -> Submitted {
        submitted(RegistryOp::AgentRemoved {
            agent_id: proto::AgentId::new(format!("A{n}")),
        })
    }

    #[test]
    fn an_entry_is_bounded_by_the_tasks_it_launches_not_by_its_ops() {
        // Launches of 50 tasks: five fit (250), the sixth starts the next entry.
        let mut queue: std::collections::VecDeque<Submitted> =
            (0..10).map(|_| launch(50)).collect();
        let first = queue.pop_front().expect("queued");
        let (batch, carried) = fill_batch(first, || queue.pop_front());
        assert_eq!(batch.ops.len(), 5);
        assert_eq!(carried.map(|s| s.op.weight()), Some(50));
        assert_eq!(queue.len(), 4, "nothing taken past the carried op");

        // Light ops fill an entry up to the bound exactly.
        let mut queue: std::collections::VecDeque<Submitted> = (0..1000).map(removal).collect();
        let first = queue.pop_front().expect("queued");
        let (batch, carried) = fill_batch(first, || queue.pop_front());
        assert_eq!(batch.ops.len(), MAX_BATCH_WEIGHT);
        assert!(carried.is_none());

        // An op heavier than the bound makes an entry alone; what is queued waits.
        let mut queue: std::collections::VecDeque<Submitted> = [removal(1)].into();
        let (batch, carried) = fill_batch(launch(MAX_BATCH_WEIGHT + 1), || queue.pop_front());
        assert_eq!(batch.ops.len(), 1);
        assert!(carried.is_none());
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn the_timers_reach_openraft() {
        let d = RaftConfig::new(1, "/nonexistent")
            .openraft_config()
            .expect("defaults");
        assert_eq!(
            (
                d.heartbeat_interval,
                d.election_timeout_min,
                d.election_timeout_max
            ),
            (150, 300, 600)
        );
        let c = cfg(1000, 5000, 10_000)
            .openraft_config()
            .expect("WAN timing");
        assert_eq!(
            (
                c.heartbeat_interval,
                c.election_timeout_min,
                c.election_timeout_max
            ),
            (1000, 5000, 10_000)
        );
    }

    #[test]
    fn bad_timers_are_errors_not_panics() {
        for (hb, min, max, says) in [
            (0, 300, 600, "at least 1 ms"),
            (150, 600, 600, "below the maximum"),
            (150, 700, 600, "below the maximum"),
            (150, 299, 600, "2 heartbeats"),
            (150, 300, 3_600_001, "at most"),
        ] {
            let e = cfg(hb, min, max).openraft_config().unwrap_err().to_string();
            assert!(e.contains(says), "{hb} {min}-{max}: {e}");
        }
        // Sub-millisecond differences vanish in openraft's whole milliseconds.
        let mut c = cfg(100, 300, 300);
        c.election_max += Duration::from_micros(500);
        assert!(c.openraft_config().is_err());
        assert!(cfg(100, 300, 3_600_000).openraft_config().is_ok());
    }
}
