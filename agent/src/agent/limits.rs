//! Limit drift: every container's limits are read back now and then and restored if something
//! changed them (systemd's daemon-reload resets limits in delegated subtrees).

use super::*;

impl Agent {
    /// Reads back every container's limits off the event loop; drift is restored and logged.
    pub(super) fn check_limits(&self) {
        let handles: Vec<(String, Arc<Handle>)> =
            self.tasks
                .iter()
                .filter_map(|(id, t)| t.handle.clone().map(|h| (id.to_string(), h)))
                .chain(self.executors.iter().filter_map(|((_, id), e)| {
                    e.handle.clone().map(|h| (format!("executor {id}"), h))
                }))
                .collect();
        if handles.is_empty() {
            return;
        }
        tokio::task::spawn_blocking(move || {
            for (task_id, handle) in handles {
                match handle.check_limits() {
                    Ok(drifts) => {
                        for d in drifts {
                            tracing::warn!(task = %task_id, file = %d.file.display(), expected = %d.expected,
                                found = %d.found, "a task's limit was changed from outside; restored it");
                        }
                    }
                    Err(e) => tracing::debug!(task = %task_id, error = %e, "cannot check limits"),
                }
            }
        });
    }
}
