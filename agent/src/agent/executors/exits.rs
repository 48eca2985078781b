//! An executor's exit: every task still live ends with it (see the module doc above for the
//! mapping).

use super::*;

impl Agent {
    pub(in crate::agent) fn watch_executor(&self, key: ExecKey, handle: Arc<Handle>) {
        self.watch(handle, |result| Event::ExecutorExited { key, result });
    }

    /// Stops listening, removes the socket and the checkpoint.
    pub(in crate::agent) fn forget_executor(&mut self, key: &ExecKey) -> Option<Executor> {
        let e = self.executors.remove(key)?;
        e.listener.abort();
        let _ = std::fs::remove_file(&e.socket);
        self.executor_checkpoints.remove(&key_str(key));
        Some(e)
    }

    pub(in crate::agent) async fn on_executor_exited(
        &mut self,
        key: ExecKey,
        result: Result<ExitInfo, String>,
    ) {
        let Some(mut e) = self.forget_executor(&key) else {
            return;
        };
        let ids = self.live_executor_tasks(&key);
        match &result {
            Ok(exit) => {
                tracing::info!(executor = %key.1, code = ?exit.code, signal = ?exit.signal,
                    oom_killed = exit.oom_killed, live_tasks = ids.len(), "executor exited")
            }
            Err(err) => {
                tracing::warn!(executor = %key.1, error = %err, "lost track of an executor")
            }
        }
        // The limit in force, if the kernel's counters do not say.
        let limit = e
            .handle
            .as_ref()
            .and_then(|h| h.record())
            .and_then(|r| r.limits.memory_bytes)
            .unwrap_or(0);
        for id in ids {
            let killed = self.tasks.get(&id).is_some_and(|t| t.kill_requested);
            let end = task_end(&key.1, &result, killed, limit);
            let exec = Some(key.1.clone());
            self.update(&id, end.state, |s| {
                s.reason = Some(end.reason);
                s.message = Some(end.message);
                s.limitation = end.limitation;
                s.signal = end.signal;
                s.executor_id = exec;
            })
            .await;
        }
        if let Some(handle) = e.handle.take() {
            tokio::task::spawn_blocking(move || destroy(handle));
        }
    }
}

/// How a live task of an executor ends when the executor's container ends.
#[derive(Debug, PartialEq)]
pub(in crate::agent) struct TaskEnd {
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
pub(in crate::agent) fn task_end(
    executor: &ExecutorId,
    result: &Result<ExitInfo, String>,
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

/// Whether the kernel's OOM killer has killed a process of the container since its launch.
pub(in crate::agent) fn oom_killed_now(handle: &Handle) -> bool {
    let Handle::Isolated(c) = handle else {
        return false;
    };
    let record = c.record();
    let report = match record.version {
        isolation::CgroupVersion::V2 => match record.cgroups.get("unified") {
            Some(p) => isolation::cgroup::v2::V2Manager::new(p.clone()).memory_report(),
            None => return false,
        },
        isolation::CgroupVersion::V1 => {
            isolation::cgroup::v1::V1Manager::new(record.cgroups.clone()).memory_report()
        }
    };
    report
        .ok()
        .and_then(|r| r.oom_kill)
        .is_some_and(|k| k > record.oom_kill_baseline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: Option<i32>, signal: Option<i32>, oom: Option<u64>) -> Result<ExitInfo, String> {
        Ok(ExitInfo {
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
        let lost = task_end(&ex, &Err("gone".to_owned()), true, 0);
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
                Err("no such container".to_owned()),
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
