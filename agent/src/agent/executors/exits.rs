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
        for id in ids {
            let killed = self.tasks.get(&id).is_some_and(|t| t.kill_requested);
            let exec = Some(key.1.clone());
            match &result {
                Ok(exit) if exit.oom_killed => {
                    let limit = exit
                        .limitation
                        .as_ref()
                        .map(|l| l.limit)
                        .filter(|l| *l > 0)
                        .or_else(|| {
                            e.handle
                                .as_ref()
                                .and_then(|h| h.record())
                                .and_then(|r| r.limits.memory_bytes)
                        })
                        .unwrap_or(0);
                    let peak = exit
                        .limitation
                        .as_ref()
                        .and_then(|l| l.peak)
                        .map(|p| format!(" (peak {})", size(p)))
                        .unwrap_or_default();
                    let msg = format!(
                        "the container of executor {} hit its memory limit of {}{peak}: the \
                         kernel's OOM killer ran and every task in the container was killed",
                        key.1,
                        size(limit)
                    );
                    let limitation = exit.limitation.clone();
                    self.update(&id, TaskState::Failed, |s| {
                        s.reason = Some(StatusReason::MemoryLimit);
                        s.message = Some(msg);
                        s.limitation = limitation;
                        s.signal = exit.signal;
                        s.executor_id = exec;
                    })
                    .await;
                }
                _ if killed => {
                    self.update(&id, TaskState::Killed, |s| {
                        s.reason = Some(StatusReason::KilledByFramework);
                        s.message = Some("killed with its executor".to_owned());
                        s.executor_id = exec;
                    })
                    .await;
                }
                Ok(exit) => {
                    let how = match (exit.code, exit.signal) {
                        (Some(c), _) => format!("exited with code {c}"),
                        (None, Some(s)) => format!("was killed by signal {s}"),
                        (None, None) => "ended".to_owned(),
                    };
                    let msg = format!("executor {} {how} before the task ended", key.1);
                    self.update(&id, TaskState::Failed, |s| {
                        s.reason = Some(StatusReason::ExecutorTerminated);
                        s.message = Some(msg);
                        s.executor_id = exec;
                    })
                    .await;
                }
                Err(err) => {
                    let msg = format!("lost track of executor {}: {err}", key.1);
                    self.update(&id, TaskState::Failed, |s| {
                        s.reason = Some(StatusReason::ExecutorTerminated);
                        s.message = Some(msg);
                        s.executor_id = exec;
                    })
                    .await;
                }
            }
        }
        if let Some(handle) = e.handle.take() {
            tokio::task::spawn_blocking(move || destroy(handle));
        }
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
