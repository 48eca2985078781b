//! master-core owns the master's decisions and nothing else: agents and frameworks and their
//! sessions, resource offers, the allocator (weighted DRF or strict priority), filters,
//! suppress/revive, offer and failover timeouts, agent health, task states, reconciliation and
//! the authorization of every call by the caller's certificate role. It is a sans-IO state
//! machine in the style of `quinn-proto`: no sockets, no async runtime, no clock, no randomness.
//!
//! The daemon drives it with a loop:
//! - feed inputs: [`Master::handle_connected`], [`Master::handle_message`],
//!   [`Master::handle_disconnected`], [`Master::handle_proposal_committed`], and
//!   [`Master::handle_timeout`] when [`Master::poll_timeout`] is reached, each with `now`;
//! - drain [`Master::poll_output`]: send frames, close streams, and replicate every
//!   [`Output::Propose`]` { id, op }`, then hand each committed op back, in log order, to
//!   [`Master::handle_proposal_committed`] with the [`ProposalId`] it was proposed with (the id,
//!   not the op, finds what the proposal waits for), or to [`Master::handle_committed`] when
//!   it carries none.
//!
//! **Durability order.** Every change to the registry (agents admitted, marked, unreachable,
//! removed; frameworks added or removed; tasks added or their state changed) is a
//! [`RegistryOp`] and goes through the propose/commit round trip; that round trip is the only
//! write path. Whatever depends on an op is sent only once it has committed: `Registered` and
//! `Subscribed` replies, `RunTasks` to an agent (after its `TasksAdded`), status updates to a
//! framework (after their `TaskStateChanged`). [`Registry::apply`] is pure, so every master
//! applies the same log to the same registry. Offers, filters, sessions and timers are soft state
//! and are rebuilt after a failover ([`Master::with_registry`]).
//!
//! **Reads** ([`Master::snapshot`]) build a `proto::ClusterState`; the daemon publishes it when
//! [`Master::snapshot_dirty`] and answers `GetState` from the published copy once it has
//! confirmed it still leads and handed the core every op committed before the read (the
//! daemon's read barrier), so reads wait for one heartbeat round, never for an allocation pass.
//!
//! The [`testing`] module holds `Sim`, a harness with a virtual clock and simulated leader
//! changes (`Sim::leader_change`), used by the tests.

pub mod allocator;
pub mod config;
pub mod events;
pub mod fastmap;
pub mod join_tokens;
mod master;
pub mod policy;
mod quota;
pub mod ratelimit;
pub mod registry;
mod table;
pub mod testing;
mod timers;
mod unanswered;

pub use allocator::{
    AgentFilters, Allocation, Allocator, ClusterView, DrfAllocator, Filter, StrictPriorityAllocator,
};
pub use config::{limits, AllocatorKind, MasterConfig};
pub use master::{authorized, Master, Output, ProposalId, SessionId, Stats};
pub use ratelimit::RateLimit;
pub use registry::{AgentMark, CompletedFramework, Registry, RegistryOp, TaskKey};

#[cfg(test)]
mod tests;
