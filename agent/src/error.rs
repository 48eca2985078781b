//! The agent's typed errors below `AgentError`: each names the path, user or command it is
//! about. Messages that end up in a task's status (a launch that failed) are their `Display`.

use std::path::PathBuf;

/// A sandbox directory could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot create sandbox {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sandbox {0} is not a directory")]
    NotADirectory(PathBuf),
}

/// A task user cannot reach a directory (or cannot be checked).
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    #[error("cannot look up the task user {name}: {source}")]
    Lookup { name: String, source: nix::Error },
    #[error("the task user {0} does not exist on this host")]
    NoSuchUser(String),
    #[error("cannot resolve {path}: {source}")]
    Resolve {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the task user {user} (uid {uid}, gid {gid}) cannot reach {target}: {dir} (mode \
         {mode:04o}, owner uid {owner_uid}, group {owner_gid}) gives that user no search (x) \
         permission, so every task would fail with \"Permission denied\"; make it traversable \
         (e.g. chmod o+x {dir}) or use a work directory the task user can reach"
    )]
    Blocked {
        user: String,
        uid: u32,
        gid: u32,
        target: PathBuf,
        dir: PathBuf,
        mode: u32,
        owner_uid: u32,
        owner_gid: u32,
    },
    #[error("cannot check the way to {path}: {source}")]
    Check {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Launching, watching or signalling a container or plain process failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Isolation(#[from] isolation::IsolationError),
    #[error("this agent runs without isolation and cannot re-attach to containers")]
    NotIsolated,
    #[error("empty command")]
    EmptyCommand,
    #[error("cannot open {path}: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start '{program}': {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("the process's state is poisoned (a thread panicked while waiting for it)")]
    Poisoned,
    #[error("the process was already waited for")]
    AlreadyWaited,
    #[error("cannot wait for process {pid}: {source}")]
    Wait { pid: i32, source: std::io::Error },
}

/// A container spec (a command task's or an executor's) could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("the {0} has an empty command")]
    EmptyCommand(&'static str),
}

/// An executor's socket could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove the stale socket {path}: {source}")]
    RemoveStale {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot give {path} to uid {uid}: {source}")]
    Chown {
        path: PathBuf,
        uid: u32,
        source: std::io::Error,
    },
    #[error(
        "the executor socket path {0} is longer than {max} bytes; use a shorter work directory",
        max = crate::error::MAX_SOCKET_PATH
    )]
    TooLong(PathBuf),
}

/// Longest unix socket path (`sun_path` is 108 bytes with the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// An executor could not be prepared or re-attached.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("the agent restarted while launching the executor")]
    NotLaunched,
    #[error("cannot re-attach to the executor: {0}")]
    Reattach(RuntimeError),
    #[error("cannot listen for the recovered executor ({0}); killed it")]
    Relisten(SocketError),
}

/// `--cgroup-driver` cannot be honoured, or the systemd scope cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum CgroupDriverError {
    #[error("--cgroup-driver systemd: {0}")]
    SystemdUnavailable(&'static str),
    #[error("cannot run `{command}`: {source}")]
    Run {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` exited ({status}): {stderr}")]
    Exited {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("`{command}` did not put its process into {cgroup} within {timeout:?}")]
    Timeout {
        command: String,
        cgroup: PathBuf,
        timeout: std::time::Duration,
    },
}
