//! A one-shot scheduler: runs one task to its end, as `corral run` does.
//!
//! [`OneShotScheduler`] is the framework itself, a sans-IO state machine in the style of
//! master-core: it takes the session's events ([`OneShotScheduler::handle_event`]), the
//! placement timer ([`OneShotScheduler::handle_timeout`], when
//! [`OneShotScheduler::poll_timeout`] is reached), an interrupt and the result of reading the
//! task's output, each with `now` where time matters, and emits [`Action`]s through
//! [`OneShotScheduler::poll`]: calls to the master, [`Progress`] to show, a request to read the
//! output, and at last the [`Outcome`]. It reads no clock, does no I/O and makes no ids at
//! random, so master-core's `Sim` drives it in tests (`framework/tests/oneshot.rs`). [`run`]
//! is the thin async driver over [`crate::Scheduler`].
//!
//! What it does:
//! - It accepts the first offer that holds the task's resources (then suppresses offers) and
//!   declines every other (for 1 s while it still looks for a place, for an hour after). If no
//!   offer fits within the placement timeout, the outcome is [`Outcome::NotPlaced`], naming
//!   the largest offer seen.
//! - It acknowledges every update of the task, except the first of a final state that has
//!   output (FINISHED, FAILED, KILLED): the output is read first ([`Action::ReadOutput`]),
//!   since the agent keeps the task, and its sandbox, until that acknowledgement.
//! - A task the cluster reports never reached an agent (TASK_DROPPED, TASK_GONE or
//!   TASK_UNKNOWN before any state past STAGING: say a leader changed between committing the
//!   launch and sending it) did not run, so it is launched again under a new id
//!   (`<first id>-r<n>`), at most `max_relaunches` times (Mesos's TASK_DROPPED contract);
//!   then the outcome is [`Outcome::NeverStarted`].
//! - After a re-subscription it reconciles the task it launched (or revives offers while it
//!   still looks for a place): an update lost with the old leader comes back that way.
//! - Every outcome is preceded by a `Teardown`: the framework ends with its task.

mod driver;
mod machine;

pub use driver::{run, OneShotError, OneShotSink};
pub use machine::OneShotScheduler;

use proto::TaskStatus;
use proto::{AgentId, FrameworkCall, Resources, StatusReason, TaskId, TaskInfo, TaskState};
use std::time::Duration;

/// How often a task the cluster reports never started is launched again, by default.
pub const MAX_RELAUNCHES: u32 = 3;
/// Exit status when the task could not be run (or its output not shown).
pub const EXIT_NOT_RUN: u8 = 125;
/// Exit status when interrupted before the task was launched.
pub const EXIT_INTERRUPTED: u8 = 130;
/// How long a killed task gets between SIGTERM and SIGKILL when the run is interrupted.
pub const INTERRUPT_KILL_GRACE_MS: u64 = 2_000;
/// `refuse_seconds` on offers declined while still looking for a place.
pub const REFUSE_WHILE_PLACING_SECS: f64 = 1.0;
/// `refuse_seconds` on offers declined (and on the rest of the accepted one) once launched.
pub const REFUSE_WHEN_LAUNCHED_SECS: f64 = 3_600.0;

/// What to run, and how patiently.
#[derive(Clone, Debug)]
pub struct OneShotSpec {
    /// The task. Its `task_id` is the first launch's; its `agent_id` is set from the offer at
    /// each launch.
    pub task: TaskInfo,
    /// How long to wait for an offer that fits, from the start and from each relaunch.
    pub placement_timeout: Duration,
    /// Launches again after the first when the cluster reports the task never started.
    pub max_relaunches: u32,
}

/// What the scheduler asks its driver to do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send this call to the master (`Teardown` ends the session).
    Call(FrameworkCall),
    /// Tell the user.
    Progress(Progress),
    /// The task ended: read its whole output (stdout, then stderr), then hand the result to
    /// [`OneShotScheduler::handle_output_read`]. Its last update stays unacknowledged until
    /// then, so the agent keeps its sandbox.
    ReadOutput { task_id: TaskId },
    /// Done; nothing more follows.
    Finish(Outcome),
}

/// A step worth showing.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    Launched {
        task_id: TaskId,
        agent_id: AgentId,
        hostname: String,
        resources: Resources,
    },
    /// The task's state changed (repeated states are not shown again).
    StateChanged(TaskStatus),
    /// The task never started; it is launched again as `next`.
    Relaunching { task_id: TaskId, next: TaskId },
    /// Interrupted after the launch: the task is being killed.
    Killing { task_id: TaskId },
    /// The master reported an error that did not end the session.
    MasterError { message: String },
    /// The session was lost; the library is re-subscribing.
    Disconnected { reason: String },
    /// Re-subscribed through `master`.
    Resubscribed { master: String },
}

/// How the run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The task reached a final state. `output` is the result of reading its output, for
    /// the states that have one (FINISHED, FAILED, KILLED).
    Ended {
        status: TaskStatus,
        output: Option<Result<(), String>>,
    },
    /// No offer held what the task asks for within the placement timeout.
    NotPlaced {
        task_id: TaskId,
        wants: Resources,
        waited: Duration,
        /// The most cpus and memory any declined offer had (each on its own).
        largest: Option<Resources>,
    },
    /// The task never reached an agent, `launches` times: no launch is left.
    NeverStarted {
        task_id: TaskId,
        launches: u32,
        status: TaskStatus,
    },
    /// Interrupted before the task was launched (or while it waited to be launched again).
    Interrupted,
}

impl Outcome {
    /// The exit status of `corral run`: the task's own ([`exit_code`]), [`EXIT_NOT_RUN`] when
    /// it could not run or its output could not be read, [`EXIT_INTERRUPTED`].
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Ended {
                output: Some(Err(_)),
                ..
            } => EXIT_NOT_RUN,
            Outcome::Ended { status, .. } => exit_code(status),
            Outcome::NotPlaced { .. } | Outcome::NeverStarted { .. } => EXIT_NOT_RUN,
            Outcome::Interrupted => EXIT_INTERRUPTED,
        }
    }
}

/// A final status as a process exit status: 0 for FINISHED; the exit code (low 8 bits) or
/// 128+N for signal N of a FAILED or KILLED task (137 for a memory-limit kill without either,
/// 143 for a kill without either); [`EXIT_NOT_RUN`] for any other state.
pub fn exit_code(status: &TaskStatus) -> u8 {
    match status.state {
        TaskState::Finished => 0,
        TaskState::Failed | TaskState::Killed => {
            if let Some(code) = status.exit_code {
                (code & 0xff) as u8
            } else if let Some(sig) = status.signal {
                128u8.saturating_add(sig.clamp(0, 127) as u8)
            } else if status.reason == Some(StatusReason::MemoryLimit) {
                137
            } else if status.state == TaskState::Killed {
                143
            } else {
                EXIT_NOT_RUN
            }
        }
        _ => EXIT_NOT_RUN,
    }
}

/// A status as one line for people: state, exit code or signal, reason, message, limitation
/// (`TASK_FAILED (exit code 3) reason=CommandExited`).
pub fn status_line(status: &TaskStatus) -> String {
    let mut line = format!("{}", status.state);
    if let Some(code) = status.exit_code {
        line.push_str(&format!(" (exit code {code})"));
    } else if let Some(sig) = status.signal {
        line.push_str(&format!(" (signal {sig})"));
    }
    if let Some(reason) = status.reason {
        line.push_str(&format!(" reason={reason:?}"));
    }
    if let Some(msg) = &status.message {
        line.push_str(&format!(": {msg}"));
    }
    if let Some(l) = &status.limitation {
        let size = proto::format_size;
        line.push_str(&format!(" [limit {:?} {}", l.resource, size(l.limit)));
        if let Some(p) = l.peak {
            line.push_str(&format!(", peak {}", size(p)));
        }
        for (k, v) in &l.events {
            line.push_str(&format!(", {k}={v}"));
        }
        line.push(']');
    }
    line
}

#[cfg(test)]
mod tests {
    /// The scheduler does no I/O and reads no clock or randomness: only the driver may.
    #[test]
    fn the_state_machine_is_sans_io() {
        let banned = [
            ["tok", "io"].concat(),
            ["qui", "nn"].concat(),
            ["Instant", "::now"].concat(),
            ["SystemTime", "::now"].concat(),
            ["ra", "nd::"].concat(),
            ["uu", "id::"].concat(),
            ["read_", "output("].concat(),
            [".aw", "ait"].concat(),
            ["async ", "fn"].concat(),
        ];
        for (file, text) in [
            ("mod.rs", include_str!("mod.rs")),
            ("machine.rs", include_str!("machine.rs")),
        ] {
            for b in &banned {
                assert!(!text.contains(b.as_str()), "oneshot/{file} uses {b}");
            }
        }
    }
}
