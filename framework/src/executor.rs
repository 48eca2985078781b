//! A small library for custom executors: the programs an agent launches in one container to run
//! a framework's tasks (see `proto::AgentToExecutor`). It is blocking std code over the unix
//! socket the agent listens on, so an executor needs no async runtime.
//!
//! The agent gives the executor its environment (documented in the agent crate):
//! `CORRAL_EXECUTOR_SOCKET`, `CORRAL_EXECUTOR_ID`, `CORRAL_FRAMEWORK_ID`, `CORRAL_AGENT_ID`,
//! `CORRAL_SANDBOX`. [`Executor::connect_from_env`] reads them, connects and subscribes.
//!
//! Reliability: the library remembers the tasks it was given and the latest update of each task
//! until the agent acknowledges it. When the connection breaks (the agent restarted) it
//! reconnects with backoff for up to [`RECONNECT_TIMEOUT`] and subscribes again with both, so no
//! update is lost and no task is launched twice.
//!
//! ```no_run
//! use framework::executor::{Executor, ExecutorEvent};
//! use proto::TaskState;
//! let mut exec = Executor::connect_from_env().expect("executor environment");
//! while let Some(event) = exec.next() {
//!     match event {
//!         ExecutorEvent::LaunchTask { task, .. } => {
//!             let _ = exec.update(&task.task_id, TaskState::Running, None);
//!             let _ = exec.update(&task.task_id, TaskState::Finished, None);
//!         }
//!         ExecutorEvent::Shutdown { .. } => break,
//!         _ => {}
//!     }
//! }
//! ```

use proto::{
    AgentId, AgentToExecutor, ExecutorId, ExecutorToAgent, ExecutorUpdate, FrameworkId, TaskId,
    TaskInfo, TaskState,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the library keeps trying to reconnect after losing the agent.
pub const RECONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest frame accepted from the agent.
pub const MAX_EXECUTOR_FRAME: usize = 16 << 20;
/// How long to wait for the agent's `Subscribed`.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("environment variable {0} is not set: is this program running as a corral executor?")]
    MissingEnv(&'static str),
    #[error("cannot connect to the agent at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("lost the agent at {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("the agent at {path} sent a bad frame: {reason}")]
    Protocol { path: PathBuf, reason: String },
    #[error("the agent at {path} did not come back within {seconds} s")]
    AgentGone { path: PathBuf, seconds: u64 },
}

/// What the agent asks of the executor.
#[derive(Clone, Debug, PartialEq)]
pub enum ExecutorEvent {
    /// Run this task; its stdout and stderr belong in `sandbox` (created by the agent).
    LaunchTask {
        task: Box<TaskInfo>,
        sandbox: PathBuf,
    },
    /// Kill this task (SIGTERM, SIGKILL after `grace`), then report `TASK_KILLED`.
    KillTask {
        task_id: TaskId,
        grace: Option<Duration>,
    },
    /// A message from the framework.
    Message { data: Vec<u8> },
    /// Kill every task and exit within `grace`.
    Shutdown { grace: Duration },
}

/// A connection to the agent that launched this executor. See the module docs.
pub struct Executor {
    socket: PathBuf,
    framework_id: FrameworkId,
    executor_id: ExecutorId,
    agent_id: Option<AgentId>,
    stream: Option<UnixStream>,
    buf: Vec<u8>,
    /// Tasks given to this executor whose terminal update is not yet acknowledged.
    launched: BTreeSet<TaskId>,
    /// The latest update of each task that the agent has not acknowledged.
    unacked: BTreeMap<TaskId, ExecutorUpdate>,
    disconnected_since: Option<Instant>,
    next_attempt: Instant,
    backoff: Duration,
    shutdown: bool,
}

fn env(name: &'static str) -> Result<String, ExecutorError> {
    std::env::var(name).map_err(|_| ExecutorError::MissingEnv(name))
}

impl Executor {
    /// Connects to the agent named by `CORRAL_EXECUTOR_SOCKET` and subscribes as
    /// `CORRAL_EXECUTOR_ID` of `CORRAL_FRAMEWORK_ID`.
    pub fn connect_from_env() -> Result<Executor, ExecutorError> {
        let socket = PathBuf::from(env("CORRAL_EXECUTOR_SOCKET")?);
        let framework_id = FrameworkId::new(env("CORRAL_FRAMEWORK_ID")?);
        let executor_id = ExecutorId::new(env("CORRAL_EXECUTOR_ID")?);
        Executor::connect(&socket, framework_id, executor_id)
    }

    /// Connects to the agent's executor socket and subscribes.
    pub fn connect(
        socket: &Path,
        framework_id: FrameworkId,
        executor_id: ExecutorId,
    ) -> Result<Executor, ExecutorError> {
        let mut exec = Executor {
            socket: socket.to_owned(),
            framework_id,
            executor_id,
            agent_id: None,
            stream: None,
            buf: Vec::new(),
            launched: BTreeSet::new(),
            unacked: BTreeMap::new(),
            disconnected_since: None,
            next_attempt: Instant::now(),
            backoff: BACKOFF_MIN,
            shutdown: false,
        };
        exec.subscribe()?;
        Ok(exec)
    }

    pub fn framework_id(&self) -> &FrameworkId {
        &self.framework_id
    }

    pub fn executor_id(&self) -> &ExecutorId {
        &self.executor_id
    }

    /// The agent's id, as its last `Subscribed` said.
    pub fn agent_id(&self) -> Option<&AgentId> {
        self.agent_id.as_ref()
    }

    fn io_err(&self, e: impl std::fmt::Display) -> ExecutorError {
        ExecutorError::Io {
            path: self.socket.clone(),
            reason: e.to_string(),
        }
    }

    fn subscribe(&mut self) -> Result<(), ExecutorError> {
        let stream =
            UnixStream::connect(&self.socket).map_err(|source| ExecutorError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        stream
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(|e| self.io_err(e))?;
        self.stream = Some(stream);
        self.buf.clear();
        let hello = ExecutorToAgent::Subscribe {
            framework_id: self.framework_id.clone(),
            executor_id: self.executor_id.clone(),
            tasks: self.launched.iter().cloned().collect(),
            unacknowledged: self.unacked.values().cloned().collect(),
        };
        self.write(&hello)?;
        let deadline = Instant::now() + SUBSCRIBE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.stream = None;
                return Err(self.io_err("no Subscribed answer in time"));
            }
            // Nothing else comes before Subscribed; anything else is ignored.
            if let Some(AgentToExecutor::Subscribed { agent_id, .. }) = self.read_frame(left)? {
                self.agent_id = agent_id;
                self.disconnected_since = None;
                self.backoff = BACKOFF_MIN;
                return Ok(());
            }
        }
    }

    fn write(&mut self, msg: &ExecutorToAgent) -> Result<(), ExecutorError> {
        let frame = proto::codec::encode_to_vec(msg, MAX_EXECUTOR_FRAME).map_err(|e| {
            ExecutorError::Protocol {
                path: self.socket.clone(),
                reason: e.to_string(),
            }
        })?;
        let Some(stream) = self.stream.as_mut() else {
            return Err(self.io_err("not connected"));
        };
        if let Err(e) = stream.write_all(&frame) {
            let err = self.io_err(e);
            self.lost();
            return Err(err);
        }
        Ok(())
    }

    fn lost(&mut self) {
        self.stream = None;
        self.buf.clear();
        if self.disconnected_since.is_none() {
            self.disconnected_since = Some(Instant::now());
            self.next_attempt = Instant::now();
            self.backoff = BACKOFF_MIN;
        }
    }

    /// Reads one frame, waiting at most `timeout`. `Ok(None)`: nothing complete in time.
    fn read_frame(&mut self, timeout: Duration) -> Result<Option<AgentToExecutor>, ExecutorError> {
        let deadline = Instant::now() + timeout;
        loop {
            match proto::decode::<AgentToExecutor>(&self.buf, MAX_EXECUTOR_FRAME) {
                Ok(Some((msg, used))) => {
                    self.buf.drain(..used);
                    return Ok(Some(msg));
                }
                Ok(None) => {}
                Err(e) => {
                    self.lost();
                    return Err(ExecutorError::Protocol {
                        path: self.socket.clone(),
                        reason: e.to_string(),
                    });
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let Some(stream) = self.stream.as_mut() else {
                return Err(self.io_err("not connected"));
            };
            // A zero timeout means "block forever" to std; the check above rules it out.
            if let Err(e) = stream.set_read_timeout(Some(left)) {
                let err = self.io_err(e);
                self.lost();
                return Err(err);
            }
            let mut chunk = [0u8; 64 * 1024];
            match stream.read(&mut chunk) {
                Ok(0) => {
                    let err = self.io_err("the agent closed the connection");
                    self.lost();
                    return Err(err);
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(None)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    let err = self.io_err(e);
                    self.lost();
                    return Err(err);
                }
            }
        }
    }

    /// Waits at most `timeout` (roughly) for the agent's next request: `Ok(None)` when none
    /// came, an error once the agent is gone for good. While the agent is away (restarting) it
    /// reconnects with backoff and returns `Ok(None)` meanwhile, so an executor can keep
    /// watching its tasks between calls.
    pub fn next_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<ExecutorEvent>, ExecutorError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stream.is_none() {
                if self.shutdown {
                    return Ok(None);
                }
                self.reconnect(deadline)?;
                if self.stream.is_none() {
                    return Ok(None);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.read_frame(left) {
                Ok(Some(msg)) => {
                    if let Some(ev) = self.on_frame(msg) {
                        return Ok(Some(ev));
                    }
                }
                Ok(None) => return Ok(None),
                // Lost the agent: reconnect on the next round.
                Err(_) => {}
            }
        }
    }

    /// One reconnection attempt if it is due (sleeping until then, within `deadline`).
    fn reconnect(&mut self, deadline: Instant) -> Result<(), ExecutorError> {
        let since = *self.disconnected_since.get_or_insert_with(Instant::now);
        if since.elapsed() > RECONNECT_TIMEOUT {
            return Err(ExecutorError::AgentGone {
                path: self.socket.clone(),
                seconds: RECONNECT_TIMEOUT.as_secs(),
            });
        }
        let now = Instant::now();
        if self.next_attempt > now {
            std::thread::sleep(
                self.next_attempt
                    .min(deadline)
                    .saturating_duration_since(now),
            );
            if self.next_attempt > Instant::now() {
                return Ok(());
            }
        }
        if self.subscribe().is_err() {
            self.stream = None;
            self.next_attempt = Instant::now() + self.backoff;
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
        Ok(())
    }

    fn on_frame(&mut self, msg: AgentToExecutor) -> Option<ExecutorEvent> {
        match msg {
            AgentToExecutor::Subscribed { agent_id, .. } => {
                self.agent_id = agent_id;
                None
            }
            AgentToExecutor::LaunchTask { task, sandbox } => {
                if !self.launched.insert(task.task_id.clone()) {
                    // Already given (a resend after reconnecting): do not run it twice.
                    return None;
                }
                Some(ExecutorEvent::LaunchTask {
                    task: Box::new(task),
                    sandbox: PathBuf::from(sandbox),
                })
            }
            AgentToExecutor::KillTask { task_id, grace_ms } => Some(ExecutorEvent::KillTask {
                task_id,
                grace: grace_ms.map(Duration::from_millis),
            }),
            AgentToExecutor::Acknowledged { task_id, state } => {
                if self.unacked.get(&task_id).is_some_and(|u| u.state == state) {
                    self.unacked.remove(&task_id);
                }
                if state.is_terminal() {
                    self.launched.remove(&task_id);
                }
                None
            }
            AgentToExecutor::Message { data } => Some(ExecutorEvent::Message { data }),
            AgentToExecutor::Shutdown { grace_ms } => {
                self.shutdown = true;
                Some(ExecutorEvent::Shutdown {
                    grace: Duration::from_millis(grace_ms),
                })
            }
        }
    }

    /// Reports a task's new state. Kept until the agent acknowledges it and resent after a
    /// reconnection, so an error here (the agent is restarting) loses nothing.
    pub fn update(
        &mut self,
        task_id: &TaskId,
        state: TaskState,
        message: Option<String>,
    ) -> Result<(), ExecutorError> {
        self.send_update(ExecutorUpdate {
            task_id: task_id.clone(),
            state,
            reason: None,
            message,
            exit_code: None,
            signal: None,
        })
    }

    /// Reports a task's new state with every detail (exit code, signal, reason).
    pub fn send_update(&mut self, update: ExecutorUpdate) -> Result<(), ExecutorError> {
        self.unacked.insert(update.task_id.clone(), update.clone());
        if self.stream.is_none() {
            return Err(self.io_err("not connected; the update is sent after reconnecting"));
        }
        self.write(&ExecutorToAgent::Update(update))
    }

    /// Sends a message to the framework (best effort: lost if the agent is away).
    pub fn send_message(&mut self, data: Vec<u8>) -> Result<(), ExecutorError> {
        self.write(&ExecutorToAgent::Message { data })
    }
}

/// `next()` blocks until the agent asks something; `None` once the agent is gone for good (it
/// did not come back within [`RECONNECT_TIMEOUT`]) or after `Shutdown` was returned.
impl Iterator for Executor {
    type Item = ExecutorEvent;

    fn next(&mut self) -> Option<ExecutorEvent> {
        loop {
            match self.next_timeout(Duration::from_secs(3600)) {
                Ok(Some(ev)) => return Some(ev),
                Ok(None) if self.shutdown => return None,
                Ok(None) => {}
                Err(_) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests;
