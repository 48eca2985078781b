//! An executor's exit: the core ends every task still live with it (`agent_core::task_end`).

use super::*;
use isolation::CgroupManager;

impl Agent {
    pub(in crate::agent) fn watch_executor(&self, key: ExecKey, handle: Arc<Handle>) {
        self.watch(handle, |result| {
            Event::Executor(ExecutorEvent::Exited { key, result })
        });
    }

    pub(in crate::agent) fn on_executor_exited(
        &mut self,
        key: ExecKey,
        result: Result<ExitInfo, RuntimeError>,
    ) {
        match &result {
            Ok(exit) => {
                tracing::info!(executor = %key.1, code = ?exit.code, signal = ?exit.signal,
                    oom_killed = exit.oom_killed, "executor exited")
            }
            Err(err) => {
                tracing::warn!(executor = %key.1, error = %err, "lost track of an executor")
            }
        }
        self.core.handle_executor_exited(
            now(),
            &key,
            result
                .map(crate::agent::launch::exit_of)
                .map_err(|e| RuntimeFailure::of(&e)),
        );
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
