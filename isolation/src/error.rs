//! The crate's one error type.

use std::io;
use std::path::PathBuf;

use crate::Backend;

/// Everything that can go wrong while isolating a task. Messages name the failing path, flag or
/// value; nothing here panics on bad input.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    #[error("no usable cgroup hierarchy under {root}: {reason}")]
    NoCgroups { root: PathBuf, reason: String },
    #[error("cgroup backend {requested:?} is not available under {root}: {reason}")]
    BackendUnavailable {
        requested: Backend,
        root: PathBuf,
        reason: String,
    },
    #[error("cgroup controller {controller:?} is not available in {path}")]
    MissingController { controller: String, path: PathBuf },
    #[error("cannot find the agent's own cgroup for {controller:?} in /proc/self/cgroup")]
    OwnCgroupUnknown { controller: String },
    #[error(
        "cgroup {path} still holds other processes after the agent moved itself to supervisor/; \
         run the agent in a delegated cgroup of its own (systemd Delegate=yes)"
    )]
    SharedCgroup { path: PathBuf },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{call} failed: {source}")]
    Sys {
        call: &'static str,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("invalid container id {0:?}: use 1 to 128 characters of [A-Za-z0-9._-], not starting with '.'")]
    InvalidId(String),
    #[error("invalid container spec: {0}")]
    InvalidSpec(String),
    #[error("invalid limit {name}: {reason}")]
    InvalidLimit { name: &'static str, reason: String },
    #[error("memory limit {requested} bytes is below the minimum of {minimum} bytes")]
    MemoryTooSmall { requested: u64, minimum: u64 },
    #[error("working directory {0} does not exist or is not a directory")]
    MissingWorkdir(PathBuf),
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("user {0:?} is not in the agent's allowed users")]
    UserNotAllowed(String),
    #[error("user {0:?} is root (uid 0) and the agent does not allow root tasks")]
    RootNotAllowed(String),
    #[error("no user given and the agent has no default user")]
    NoUser,
    #[error("command {command:?} not found (PATH={path})")]
    CommandNotFound { command: String, path: String },
    #[error("cannot execute {command:?}: {reason}")]
    ExecFailed { command: String, reason: String },
    #[error("container init {program} failed: {reason}")]
    InitFailed { program: PathBuf, reason: String },
    #[error("container {0} already exists (its cgroup is present)")]
    AlreadyExists(String),
    #[error("container record for {id} is invalid: {reason}")]
    BadRecord { id: String, reason: String },
    #[error(
        "cannot lower the memory limit of container {id} to {limit} bytes: it uses {usage} bytes \
         now (lower it once the task that used them has ended)"
    )]
    LimitBelowUsage { id: String, limit: u64, usage: u64 },
    #[error("cannot change the limits of container {id}: {reason}")]
    LimitChange { id: String, reason: String },
    #[error("cannot parse {path}: {source}")]
    Pressure {
        path: PathBuf,
        #[source]
        source: crate::pressure::PressureParseError,
    },
    #[error("timed out after {seconds:.1} s waiting for {what}")]
    Timeout { what: String, seconds: f64 },
}

impl IsolationError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        IsolationError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sys(call: &'static str, source: nix::errno::Errno) -> Self {
        IsolationError::Sys { call, source }
    }
}

pub type Result<T, E = IsolationError> = std::result::Result<T, E>;
