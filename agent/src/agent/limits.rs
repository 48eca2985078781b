//! Limits off the loop: drift checks of every container (systemd's daemon-reload resets
//! limits in delegated subtrees; drift is restored and logged) and executors' resizes.

use super::*;
use agent_core::{size, ContainerRef, Limits};

impl Agent {
    fn container_handle(&self, r: &ContainerRef) -> Option<(String, Arc<Handle>)> {
        match r {
            ContainerRef::Task(id) => self.handles.get(id).map(|h| (id.to_string(), h.clone())),
            ContainerRef::Executor(key) => {
                let h = self.executors.get(key)?.handle.clone()?;
                Some((format!("executor {}", key.1), h))
            }
        }
    }

    /// `Action::CheckLimits`: reads back the containers' limits on a blocking thread.
    pub(super) fn check_limits(&self, containers: Vec<ContainerRef>) {
        let handles: Vec<(String, Arc<Handle>)> = containers
            .iter()
            .filter_map(|r| self.container_handle(r))
            .collect();
        if handles.is_empty() {
            return;
        }
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            let mut restored = 0;
            for (name, handle) in handles {
                match handle.check_limits() {
                    Ok(drifts) => {
                        for d in drifts {
                            restored += 1;
                            tracing::warn!(task = %name, file = %d.file.display(), expected = %d.expected,
                                found = %d.found, "a task's limit was changed from outside; restored it");
                        }
                    }
                    Err(e) => tracing::debug!(task = %name, error = %e, "cannot check limits"),
                }
            }
            let _ = events.blocking_send(Event::LimitsChecked { restored });
        });
    }

    /// `Action::ResizeExecutor`: the executor's container gets `limits` (raised before a new
    /// task is handed over, lowered after one ended); plain processes have none to set.
    pub(super) async fn resize_executor(&mut self, key: ExecKey, limits: Limits) {
        let handle = self.executors.get(&key).and_then(|e| e.handle.clone());
        let result = match handle {
            Some(h) if matches!(h.as_ref(), Handle::Isolated(_)) => {
                let want = limits.clone();
                tokio::task::spawn_blocking(move || {
                    let Handle::Isolated(c) = h.as_ref() else {
                        return Ok(());
                    };
                    let mut new = c.limits();
                    if want.resources.cpus_milli > 0 {
                        new.cpus = Some(want.resources.cpus());
                    }
                    if want.resources.mem_bytes > 0 {
                        new.memory_bytes = Some(want.resources.mem_bytes);
                    }
                    new.pids_max = want.pids;
                    c.update_limits(&new)
                        .map(|_| ())
                        .map_err(|e| RuntimeFailure::of(&e))
                })
                .await
                .unwrap_or_else(|e| {
                    Err(RuntimeFailure(format!(
                        "the limit update did not complete: {e}"
                    )))
                })
            }
            _ => Ok(()),
        };
        match &result {
            Ok(()) => tracing::info!(executor = %key.1, cpus = limits.resources.cpus(),
                memory = %size(limits.resources.mem_bytes), pids = limits.pids,
                "executor container limits set"),
            Err(err) => tracing::warn!(executor = %key.1, error = %err,
                "cannot set an executor's limits to its tasks; retried at the next limit check"),
        }
        self.core
            .handle_executor_resized(now(), &key, result.map(|()| limits));
    }
}
