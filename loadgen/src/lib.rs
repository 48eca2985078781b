//! Load generation for Corral's scale work (issue 11): many simulated agents in one process, and
//! the scenarios `corral bench` runs against a real `corral master` process.
//!
//! A simulated agent ([`Fleet`]) is what a master sees of a real one, minus the processes: its
//! own certificate (`corral://agent/NAME`, issued in-process by the `certs` crate,
//! [`issue_agent_identities`]), its own QUIC + mTLS connection made by `session::open_session`,
//! the same `Register` (re-registering with its tasks after a lost session, with backoff), the
//! same periodic frames at the master's cadence (`Heartbeat` and `Usage` with node pressure every
//! `heartbeat_interval_ms`, as `agent/src/agent/mod.rs` sends them), and the same reliable status
//! updates (`agent_core::StatusUpdates`: one in flight per task, resent until acknowledged). A launch
//! (`RunTasks`) is answered with `STARTING` and `RUNNING` at once and `FINISHED` after the
//! configured task duration; nothing is executed. Kills answer `KILLED`, log reads an error.
//!
//! Each agent is one tokio task (quinn drives each connection's endpoint in a task of its own);
//! they share the runtime's few worker threads. Every queue is bounded: an agent's only queue is
//! its QUIC stream, and status updates are bounded per task by `agent_core::StatusUpdates`.
//! Registration is jittered over a ramp and admitted through a semaphore (at most
//! `max_connecting` handshakes at once); a storm is `ramp = 0` with a large admission.
//!
//! A task's run time is the fleet's, or its `loadgen.task_ms` label ([`launch_book::TASK_MS_LABEL`]).
//!
//! Scenarios: [`idle`] (the master idle with N agents: CPU per agent per second, RSS per agent,
//! packets per second), [`failover`] (B3), [`churn`] (B7: a steady launch rate, submit →
//! `RUNNING` latency), [`paper`] (B1: the Mesos paper's test), [`launches`] (B2: sustained
//! launches per second), [`storm`] (every agent registering at once, then after a failover). Frameworks that launch are [`launcher::Launcher`]s (the `framework`
//! library driven by a [`launch_book::LaunchBook`]).

pub mod churn;
pub mod cluster;
pub mod failover;
mod fleet;
mod identities;
pub mod idle;
pub mod launch_book;
pub mod launcher;
pub mod launches;
pub mod masters;
pub mod paper;
mod probe;
mod procstat;
mod sim;
pub mod stats;
pub mod storm;

pub use fleet::{Fleet, FleetConfig, FleetStats};
pub use identities::{issue_agent_identities, AGENT_CERT_DAYS};
pub use procstat::{ProcSample, CLOCK_TICK};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("cannot issue the certificate of simulated agent '{name}' in {dir}: {source}")]
    Issue {
        name: String,
        dir: PathBuf,
        source: certs::CertsError,
    },
    #[error("cannot load the certificate of simulated agent '{name}' from {dir}: {source}")]
    Identity {
        name: String,
        dir: PathBuf,
        source: transport::TransportError,
    },
    #[error("cannot read {path}: {source}")]
    Proc {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unexpected content in {path}: {what}")]
    ProcFormat { path: PathBuf, what: String },
    #[error("only {registered} of {wanted} simulated agents registered within {timeout:?} ({failures} failed attempts; last error: {last})")]
    NotRegistered {
        registered: usize,
        wanted: usize,
        timeout: std::time::Duration,
        failures: u64,
        last: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("certificates in {dir}: {source}")]
    Certs {
        dir: PathBuf,
        source: certs::CertsError,
    },
    #[error("the master: {0}")]
    Master(String),
}
