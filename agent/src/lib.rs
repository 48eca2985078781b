//! The Corral agent: the daemon on every node. It owns the node's registration with the master
//! (re-registering with its running tasks after any disconnection), the launch of tasks into
//! containers through the isolation crate, each task's sandbox directory, and reliable status
//! updates (resent until the framework acknowledges them, in order per task).
//!
//! Architecture invariant: the agent never decides what runs where; it runs what the master
//! sends, checks that it fits, and reports what happened.

mod agent;
mod checkpoint;
mod resources;
mod runtime;
mod updates;

pub use agent::{run, Config, IsolationMode};
pub use updates::{RetryPolicy, StatusUpdates};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot use work directory {path}: {source}")]
    WorkDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the certificate {0} is not an agent certificate; issue one with `corral certs issue --role agent`")]
    NotAnAgentCertificate(String),
    #[error("cannot set up isolation: {0}")]
    Isolation(String),
    #[error("cannot use the checkpoint directory: {0}")]
    Checkpoint(String),
    #[error("no master address given: pass --master HOST:PORT")]
    NoMasters,
}
