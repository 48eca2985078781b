//! The Corral master daemon: the network edge around `master-core`. It owns the QUIC endpoint,
//! one task per client stream that translates frames into core events, the single event loop
//! that drives the core (with the real clock), and the published cluster snapshot that operator
//! reads are served from without touching the core.
//!
//! `server.rs`: every master runs `ReplicatedRegistry` (a single master is a one-voter cluster,
//! so there is one write path). `streams.rs`: connections whose certificate role is master
//! carry raft; all others the client protocol, one task per stream, whose first frame says what
//! it is for (a session with the core, a leader watch, a certificate call, a state read, a
//! change of masters, the event stream). A session's task turns frames into `Event`s on one
//! bounded queue; the core loop runs a `Master` only while this master leads (built with
//! `Master::with_registry` from `subscribe_as_leader`, which waits until every earlier commit is
//! applied), sends its `Propose { id, op }` outputs to raft through one ordered proposer task,
//! and feeds committed ops back with their id. A follower, or a leader that lost office (it steps
//! down and keeps running, never exits), answers every client `NotLeader { leader }`. The core
//! loop owns the real clock, writes outputs to per-session bounded outboxes (a client that lets
//! its outbox fill is disconnected, not buffered without end) and republishes the
//! `ClusterState` snapshot when it changed, at most every max(100 ms, 200 us per session). A malformed, truncated or oversized frame gets
//! `MalformedFrame` and closes that stream only. Join tokens and certificate renewal
//! (`join.rs`, with `--ca-key`) are answered by the daemon, which holds the CA key. If raft
//! stops on a storage error (a full or failing data dir) the master logs why and exits
//! non-zero, so clients fail over and systemd restarts it once the disk is fixed. Reads:
//! `reads.rs`.
//!
//! The operator event stream: `journal.rs` derives events from every committed op as the state
//! machine applies it (on every master, so a new leader holds the events an old one served),
//! numbered by log position; `event_stream.rs` serves `SubscribeEvents` from it on the leader.
//!
//! Architecture invariant: all decisions are made in `master-core`; this crate only moves frames,
//! timers and committed registry operations between the core and the outside world.

mod event_stream;
mod join;
mod journal;
mod leadership;
mod metrics;
mod parked;
mod reads;
mod server;
mod streams;

pub use join::JoinSetup;
pub use master_raft::{
    MasterNode, DEFAULT_ELECTION_TIMEOUT, DEFAULT_HEARTBEAT, MAX_RAFT_TIMER,
    MIN_ELECTION_HEARTBEATS,
};
pub use metrics::MasterMetrics;
pub use server::{Config, MasterError, MasterServer, RaftSetup};
