//! How a container's end becomes a task's terminal status: a command task's own container
//! (`exit_status`) and a task of an executor whose container ended (`task_end`).

use crate::RuntimeFailure;
use proto::{ExecutorId, Limitation, OomPolicy, StatusReason, TaskState};

/// How a container ended, as the glue's runtime reports it (the isolation crate's `ExitInfo`,
/// field by field: the core does not depend on isolation, which does I/O).
#[derive(Clone, Debug, PartialEq)]
pub struct Exit {
    /// The task's exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that killed the task, if one did.
    pub signal: Option<i32>,
    /// The OOM killer ended the task.
    pub oom_killed: bool,
    /// Processes of the container the OOM killer killed since launch.
    pub oom_kills: u64,
    /// The policy the container ran under.
    pub oom_policy: OomPolicy,
    /// Set when the OOM killer ran in the container: the limit, peak and counters.
    pub limitation: Option<Limitation>,
}

impl Exit {
    /// A plain exit with `code` (tests, plain processes).
    pub fn code(code: i32) -> Exit {
        Exit {
            code: Some(code),
            signal: None,
            oom_killed: false,
            oom_kills: 0,
            oom_policy: OomPolicy::default(),
            limitation: None,
        }
    }

    /// Killed by `signal`.
    pub fn signal(signal: i32) -> Exit {
        Exit {
            code: None,
            signal: Some(signal),
            ..Exit::code(0)
        }
    }
}

/// A command task's terminal status from its container's exit: the OOM killer's kill first,
/// then a requested kill, then the exit code or signal. Under kill-process the task may end
/// well (or fail on its own) after the OOM killer took some of its processes: the outcome is
/// the main process's, and the message adds what the kernel killed (`limitation` carries the
/// counters).
pub fn exit_status(
    exit: &Exit,
    kill_requested: bool,
    memory_limit: u64,
) -> (TaskState, StatusReason, String) {
    let (state, reason, message) = if exit.oom_killed {
        let peak = peak_note(exit);
        (
            TaskState::Failed,
            StatusReason::MemoryLimit,
            format!(
                "killed by the kernel: memory limit of {} reached{peak}",
                size(memory_limit)
            ),
        )
    } else if kill_requested {
        (
            TaskState::Killed,
            StatusReason::KilledByFramework,
            "killed on request".to_owned(),
        )
    } else if exit.code == Some(0) {
        (
            TaskState::Finished,
            StatusReason::CommandExited,
            "exited with code 0".to_owned(),
        )
    } else if let Some(code) = exit.code {
        (
            TaskState::Failed,
            StatusReason::CommandExited,
            format!("exited with code {code}"),
        )
    } else {
        let sig = exit.signal.unwrap_or(0);
        (
            TaskState::Failed,
            StatusReason::CommandExited,
            format!("killed by signal {sig}"),
        )
    };
    let message = match oom_note(exit, memory_limit) {
        Some(note) if !exit.oom_killed => format!("{message}; {note}"),
        _ => message,
    };
    (state, reason, message)
}

/// For a task that outlived OOM kills (policy kill-process): how many of its processes the
/// kernel's OOM killer killed at which limit.
pub fn oom_note(exit: &Exit, memory_limit: u64) -> Option<String> {
    let lim = exit.limitation.as_ref()?;
    if exit.oom_kills == 0 && !exit.oom_killed {
        return None;
    }
    let limit = if lim.limit > 0 {
        lim.limit
    } else {
        memory_limit
    };
    let peak = lim
        .peak
        .map(|p| format!(", peak {}", size(p)))
        .unwrap_or_default();
    let n = exit.oom_kills;
    Some(format!(
        "the OOM killer killed {n} process{} of the task at its memory limit of {}{peak} \
         (OOM policy {})",
        if n == 1 { "" } else { "es" },
        size(limit),
        exit.oom_policy.as_str()
    ))
}

/// " (peak N)" when the kernel reported the peak memory use of an OOM-killed container.
pub fn peak_note(exit: &Exit) -> String {
    exit.limitation
        .as_ref()
        .and_then(|l| l.peak)
        .map(|p| format!(" (peak {})", size(p)))
        .unwrap_or_default()
}

pub fn size(bytes: u64) -> String {
    proto::format_size(bytes)
}

/// How a live task of an executor ends when the executor's container ends.
#[derive(Debug, PartialEq)]
pub struct TaskEnd {
    pub state: TaskState,
    pub reason: StatusReason,
    pub message: String,
    /// Set when the OOM killer ended the container.
    pub limitation: Option<proto::Limitation>,
    pub signal: Option<i32>,
}

/// The end of a live task of `executor` whose container ended with `result`: the OOM killer
/// first (the container is one OOM unit), then a requested kill, else `ExecutorTerminated`.
/// `memory_limit` is the container's limit, used when the exit's limitation has none.
pub fn task_end(
    executor: &ExecutorId,
    result: &Result<Exit, RuntimeFailure>,
    kill_requested: bool,
    memory_limit: u64,
) -> TaskEnd {
    let failed = |message: String| TaskEnd {
        state: TaskState::Failed,
        reason: StatusReason::ExecutorTerminated,
        message,
        limitation: None,
        signal: None,
    };
    match result {
        Ok(exit) if exit.oom_killed => {
            let limit = exit
                .limitation
                .as_ref()
                .map(|l| l.limit)
                .filter(|l| *l > 0)
                .unwrap_or(memory_limit);
            let peak = peak_note(exit);
            TaskEnd {
                state: TaskState::Failed,
                reason: StatusReason::MemoryLimit,
                message: format!(
                    "the container of executor {executor} hit its memory limit of {}{peak}: the \
                     kernel's OOM killer ran and every task in the container was killed",
                    size(limit)
                ),
                limitation: exit.limitation.clone(),
                signal: exit.signal,
            }
        }
        _ if kill_requested => TaskEnd {
            state: TaskState::Killed,
            reason: StatusReason::KilledByFramework,
            message: "killed with its executor".to_owned(),
            limitation: None,
            signal: None,
        },
        Ok(exit) => {
            let how = match (exit.code, exit.signal) {
                (Some(c), _) => format!("exited with code {c}"),
                (None, Some(s)) => format!("was killed by signal {s}"),
                (None, None) => "ended".to_owned(),
            };
            failed(format!("executor {executor} {how} before the task ended"))
        }
        Err(err) => failed(format!("lost track of executor {executor}: {err}")),
    }
}

#[cfg(test)]
mod exit_status_tests {
    use super::*;

    fn exit(code: Option<i32>, oom_killed: bool, kills: u64) -> Exit {
        Exit {
            code,
            signal: code.is_none().then_some(9),
            oom_killed,
            oom_kills: kills,
            oom_policy: proto::OomPolicy::KillProcess,
            limitation: (kills > 0).then(|| proto::Limitation {
                resource: proto::LimitedResource::Memory,
                limit: 64 << 20,
                peak: Some(64 << 20),
                events: [("oom_kill".to_owned(), kills)].into_iter().collect(),
            }),
        }
    }

    #[test]
    fn the_note_names_the_kills_the_limit_and_the_policy() {
        let note = oom_note(&exit(Some(0), false, 2), 1).expect("a note");
        assert!(note.contains("killed 2 processes"), "{note}");
        assert!(note.contains("64MiB"), "{note}");
        assert!(note.contains("kill-process"), "{note}");
        assert!(oom_note(&exit(Some(0), false, 1), 1)
            .unwrap()
            .contains("killed 1 process of"));
        assert_eq!(oom_note(&exit(Some(0), false, 0), 1), None);
    }

    #[test]
    fn an_oom_kill_fails_the_task_with_the_limit_even_if_a_kill_was_asked() {
        let mut e = exit(None, true, 1);
        e.oom_policy = proto::OomPolicy::KillTask;
        let (state, reason, message) = exit_status(&e, true, 128 << 20);
        assert_eq!(
            (state, reason),
            (TaskState::Failed, StatusReason::MemoryLimit)
        );
        assert!(message.contains("memory limit of 128MiB"), "{message}");
        assert!(message.contains("peak 64MiB"), "{message}");
        assert!(!message.contains("OOM killer killed"), "{message}");
    }

    #[test]
    fn a_requested_kill_is_killed_whatever_the_exit() {
        for e in [
            exit(Some(0), false, 0),
            exit(Some(3), false, 0),
            exit(None, false, 0),
        ] {
            let (state, reason, message) = exit_status(&e, true, 1);
            assert_eq!(state, TaskState::Killed);
            assert_eq!(reason, StatusReason::KilledByFramework);
            assert_eq!(message, "killed on request");
        }
    }

    #[test]
    fn the_exit_code_or_signal_decides_otherwise() {
        let done = exit_status(&exit(Some(0), false, 0), false, 1);
        assert_eq!(
            done,
            (
                TaskState::Finished,
                StatusReason::CommandExited,
                "exited with code 0".to_owned()
            )
        );
        let failed = exit_status(&exit(Some(3), false, 0), false, 1);
        assert_eq!(
            (failed.0, failed.2.as_str()),
            (TaskState::Failed, "exited with code 3")
        );
        let signalled = exit_status(&exit(None, false, 0), false, 1);
        assert_eq!(
            (signalled.0, signalled.2.as_str()),
            (TaskState::Failed, "killed by signal 9")
        );
    }

    #[test]
    fn a_task_that_outlived_oom_kills_keeps_its_outcome_and_names_the_kills() {
        let (state, reason, message) = exit_status(&exit(Some(0), false, 2), false, 1);
        assert_eq!(
            (state, reason),
            (TaskState::Finished, StatusReason::CommandExited)
        );
        assert!(
            message.starts_with("exited with code 0; the OOM killer killed 2 processes"),
            "{message}"
        );
    }
}

#[cfg(test)]
mod task_end_tests {
    use super::*;

    fn exit(
        code: Option<i32>,
        signal: Option<i32>,
        oom: Option<u64>,
    ) -> Result<Exit, RuntimeFailure> {
        Ok(Exit {
            code,
            signal,
            oom_killed: oom.is_some(),
            oom_kills: u64::from(oom.is_some()),
            oom_policy: proto::OomPolicy::KillTask,
            limitation: oom.map(|limit| proto::Limitation {
                resource: proto::LimitedResource::Memory,
                limit,
                peak: Some(32 << 20),
                events: Default::default(),
            }),
        })
    }

    #[test]
    fn an_oom_killed_container_fails_every_task_with_the_limit() {
        let ex = ExecutorId::new("ex");
        let end = task_end(&ex, &exit(None, Some(9), Some(64 << 20)), true, 1 << 30);
        assert_eq!(
            (end.state, end.reason, end.signal),
            (TaskState::Failed, StatusReason::MemoryLimit, Some(9))
        );
        assert!(
            end.message
                .contains("executor ex hit its memory limit of 64MiB (peak 32MiB)"),
            "{}",
            end.message
        );
        assert!(end.limitation.is_some());
        // The kernel gave no limit: the container's is named.
        let end = task_end(&ex, &exit(None, Some(9), Some(0)), false, 128 << 20);
        assert!(end.message.contains("limit of 128MiB"), "{}", end.message);
    }

    #[test]
    fn a_kill_asked_for_ends_killed_else_the_executor_terminated() {
        let ex = ExecutorId::new("ex");
        let killed = task_end(&ex, &exit(Some(0), None, None), true, 0);
        assert_eq!(
            (killed.state, killed.reason, killed.message.as_str()),
            (
                TaskState::Killed,
                StatusReason::KilledByFramework,
                "killed with its executor"
            )
        );
        let lost = task_end(&ex, &Err("gone".into()), true, 0);
        assert_eq!(lost.state, TaskState::Killed);
        for (result, message) in [
            (
                exit(Some(2), None, None),
                "executor ex exited with code 2 before the task ended",
            ),
            (
                exit(None, Some(15), None),
                "executor ex was killed by signal 15 before the task ended",
            ),
            (
                exit(None, None, None),
                "executor ex ended before the task ended",
            ),
            (
                Err("no such container".into()),
                "lost track of executor ex: no such container",
            ),
        ] {
            let end = task_end(&ex, &result, false, 0);
            assert_eq!(
                end,
                TaskEnd {
                    state: TaskState::Failed,
                    reason: StatusReason::ExecutorTerminated,
                    message: message.to_owned(),
                    limitation: None,
                    signal: None,
                }
            );
        }
    }
}
