//! A task's exit: the container's `ExitInfo` mapped to a terminal status, the sandbox
//! remembered for `corral logs`.

use super::*;

impl Agent {
    pub(super) async fn on_exited(&mut self, task_id: TaskId, result: Result<ExitInfo, String>) {
        let Some(task) = self.tasks.get_mut(&task_id) else {
            return;
        };
        let handle = task.handle.take();
        let killed = task.kill_requested;
        let memory_limit = task.info.resources.mem_bytes;
        match result {
            Ok(exit) => {
                let (state, reason, message) = exit_status(&exit, killed, memory_limit);
                self.update(&task_id, state, |s| {
                    s.reason = Some(reason);
                    s.message = Some(message);
                    s.exit_code = exit.code;
                    s.signal = exit.signal;
                    s.limitation = exit.limitation.clone();
                })
                .await;
            }
            Err(message) => {
                self.update(&task_id, TaskState::Failed, |s| {
                    s.reason = Some(StatusReason::ExecutorTerminated);
                    s.message = Some(format!("lost track of the task: {message}"));
                })
                .await;
            }
        }
        if let Some(handle) = handle {
            tokio::task::spawn_blocking(move || destroy(handle));
        }
    }
}

/// A command task's terminal status from its container's exit: the OOM killer's kill first,
/// then a requested kill, then the exit code or signal. Under kill-process the task may end
/// well (or fail on its own) after the OOM killer took some of its processes: the outcome is
/// the main process's, and the message adds what the kernel killed (`limitation` carries the
/// counters).
pub(super) fn exit_status(
    exit: &ExitInfo,
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
pub(super) fn oom_note(exit: &ExitInfo, memory_limit: u64) -> Option<String> {
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
pub(super) fn peak_note(exit: &ExitInfo) -> String {
    exit.limitation
        .as_ref()
        .and_then(|l| l.peak)
        .map(|p| format!(" (peak {})", size(p)))
        .unwrap_or_default()
}

pub(super) fn size(bytes: u64) -> String {
    proto::format_size(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: Option<i32>, oom_killed: bool, kills: u64) -> ExitInfo {
        ExitInfo {
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
