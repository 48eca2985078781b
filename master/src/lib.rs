//! The Corral master daemon: the network edge around `master-core`. It owns the QUIC endpoint,
//! one task per client stream that translates frames into core events, the single event loop
//! that drives the core (with the real clock), and the published cluster snapshot that operator
//! reads are served from without touching the core.
//!
//! Architecture invariant: all decisions are made in `master-core`; this crate only moves frames,
//! timers and committed registry operations between the core and the outside world.

mod metrics;
mod reads;
mod server;

pub use master_raft::{
    MasterNode, DEFAULT_ELECTION_TIMEOUT, DEFAULT_HEARTBEAT, MAX_RAFT_TIMER,
    MIN_ELECTION_HEARTBEATS,
};
pub use metrics::MasterMetrics;
pub use server::{Config, MasterError, MasterServer, RaftSetup};
