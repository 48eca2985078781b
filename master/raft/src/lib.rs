//! master-raft owns the masters' replicated registry: an openraft 0.9 cluster of masters whose
//! log entries are [`RegistryOp`]s, a durable log store of our own on disk ([`LogStore`]), the
//! state machine that applies each committed op with the pure [`Registry::apply`]
//! ([`StateMachine`]), snapshots and log compaction, and raft RPCs between masters over
//! mutually-authenticated QUIC ([`network`]). The master daemon uses it through one facade,
//! [`ReplicatedRegistry`]. It knows nothing of agents, frameworks or offers: master-core decides,
//! this crate only makes the decisions durable and identical on every master.
//!
//! # The contract with the daemon
//!
//! **Write path.** The core emits `Output::Propose { id, op }`; the daemon calls
//! [`ReplicatedRegistry::submit_tagged`] with the id (or [`ReplicatedRegistry::submit`]: both
//! only wait for queue space and return a [`Pending`] result), or
//! [`ReplicatedRegistry::propose`] (submit, then wait). The id rides in the entry beside the
//! op ([`Proposal::ids`]) and comes back in its [`CommitEvent::Op`]. Ops enter the log in the
//! order they were submitted; ops submitted while earlier ones are in flight are batched into
//! one entry ([`Proposal`]). A proposal succeeds only on the leader, once committed (on a
//! majority of masters, each fsynced) and applied locally; elsewhere it fails with
//! [`ProposeError::NotLeader`] naming the leader when known. A failed proposal may still commit
//! later (the old leader may have replicated it before losing office), so the truth is the
//! committed stream, never the propose result.
//!
//! **Committed ops.** The state machine's `apply` runs on every master, in log order. The daemon
//! sees them through a [`Subscription`]: [`ReplicatedRegistry::subscribe`] atomically returns the
//! registry as of the last applied index *and* a bounded stream of every op applied after it, in
//! order, exactly once ([`CommitEvent::Op`]; ops batched in one entry share its index).
//! Together they are the whole history: nothing is missed or repeated between the copy and the
//! stream. A new subscription replaces the previous
//! one (whose stream then ends). A follower that is sent a snapshot instead of entries gets
//! [`CommitEvent::Reset`] with the registry installed; it replaces everything before it.
//!
//! - On the leader the daemon feeds each `Op` to `Master::handle_proposal_committed` with its
//!   id (`Master::handle_committed` without one), and the core acts on it (`RunTasks` after
//!   `TasksAdded`, ...).
//! - A master that becomes leader calls [`ReplicatedRegistry::subscribe_as_leader`]: it first
//!   waits until every entry committed by earlier leaders is applied here (openraft's read-index:
//!   a heartbeat round to a quorum, then applied ≥ the new term's first entry), then subscribes, so
//!   the daemon rebuilds its core with `Master::with_registry(registry)` from a complete registry.
//! - On followers the daemon may ignore the ops, but it must keep draining the stream (or drop
//!   the subscription).
//!
//! **Backpressure, and the one way to deadlock.** The stream holds
//! [`COMMIT_CHANNEL_CAPACITY`] events. When it is full, `apply` waits, so raft stops applying and
//! proposals stop completing until the daemon receives again. The daemon must therefore never
//! wait for a [`Pending`] result (or for `submit` when [`PROPOSE_QUEUE`] ops are queued) while
//! not receiving from its subscription: keep the `Pending` futures in the same `select!` as the
//! subscription (or in tasks) and feed their results back as events.
//!
//! **Observers.** [`ReplicatedRegistry::observe`] installs an [`ApplyObserver`] that sees
//! every op applied from then on with the registry just before it, under the state machine's
//! lock, on every master (leader or not); it must never block. The daemon's operator event
//! journal is one.
//!
//! **Peers.** Raft RPCs travel on QUIC streams between masters. The client side checks that the
//! peer's certificate names the master it meant to reach (`corral://master/NAME` with `NAME`
//! from [`MasterNode::name`]); the server side accepts raft streams only from peers whose
//! certificate role is `master` ([`network::serve_raft_connection`] and
//! [`network::serve_raft_stream`] check it; the daemon should route every bidirectional stream of
//! a connection whose peer role is `master` to them).
//!
//! **Elections.** openraft's own election timer is off; [`election`] stands for this master only
//! after a pre-vote that a majority of voters granted, so a master cut off or restarted under a
//! healthy leader never raises the term and cannot depose that leader when it comes back.
//!
//! **Durability.** An entry is reported appended only after `fdatasync` of the log file; votes
//! are synced before `save_vote` returns. See [`log_store`] for the on-disk format and why it is
//! our own.

pub mod election;
pub mod log_store;
pub mod network;
mod registry;
pub mod state_machine;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Cursor;
use std::sync::Arc;

pub use log_store::{LogReader, LogStore, StoreError};
pub use master_core::{Registry, RegistryOp};
pub use registry::{
    ClusterStatus, MembershipError, Pending, ProposeError, RaftConfig, RaftError,
    ReplicatedRegistry, DEFAULT_ELECTION_TIMEOUT, DEFAULT_HEARTBEAT, MAX_BATCH_WEIGHT,
    MAX_INFLIGHT_BATCHES, MAX_RAFT_TIMER, MIN_ELECTION_HEARTBEATS, PROPOSE_QUEUE,
};
pub use state_machine::{
    ApplyObserver, CommitEvent, StateMachine, Subscription, COMMIT_CHANNEL_CAPACITY,
};

/// A master as a raft member: where to reach it and who it must prove to be.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MasterNode {
    /// `host:port` of the master's QUIC endpoint.
    pub addr: String,
    /// The name in the master's certificate (`corral://master/NAME`). A peer at `addr` whose
    /// certificate names another master is refused.
    pub name: String,
}

impl MasterNode {
    pub fn new(addr: impl Into<String>, name: impl Into<String>) -> Self {
        MasterNode {
            addr: addr.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for MasterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "master '{}' at {}", self.name, self.addr)
    }
}

/// One raft entry's payload: ops proposed together, applied in this order. Concurrent
/// proposals are batched into one entry (see [`ReplicatedRegistry::submit`]): one append, one
/// replication round and one fsync per master for many ops. Cheap to clone (openraft clones an
/// entry for every follower it replicates to and for the state machine): the ops are shared,
/// and serialized as a plain list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub ops: Arc<Vec<RegistryOp>>,
    /// The proposer's tag of each op (same positions; empty when none has one): the core's
    /// `ProposalId`, handed back with the committed op ([`CommitEvent::Op`]) so that the core
    /// finds what the proposal waits for. Absent from entries written before it existed, and
    /// ignored by masters that predate it.
    #[serde(default, skip_serializing_if = "no_ids")]
    pub ids: Arc<Vec<Option<u64>>>,
}

impl Proposal {
    /// `ops` tagged with `ids` (the same positions, or empty for none).
    pub fn new(ops: Vec<RegistryOp>, ids: Vec<Option<u64>>) -> Proposal {
        Proposal {
            ops: Arc::new(ops),
            ids: Arc::new(ids),
        }
    }
}

fn no_ids(ids: &Arc<Vec<Option<u64>>>) -> bool {
    ids.is_empty()
}

/// What applying one entry answers to the proposer. The log index is in the
/// `ClientWriteResponse`, so nothing else is needed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied;

openraft::declare_raft_types!(
    /// The openraft type configuration of the masters' registry.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = u64,
        Node = MasterNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A raft node of the registry.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A raft node id (each master has a distinct one, fixed for its life).
pub type NodeId = u64;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, MasterNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, MasterNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, MasterNode>;

#[cfg(test)]
mod tests;
