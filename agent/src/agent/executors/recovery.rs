//! Executors at recovery: re-attached from their checkpoints, or destroyed.

use super::*;

impl Agent {
    /// Re-attaches to the executors of the checkpoints on disk and listens on their sockets
    /// again. Runs before task recovery, which needs them.
    pub(in crate::agent) async fn recover_executors(&mut self) {
        let loaded = match self.executor_checkpoints.load_all::<ExecutorCheckpoint>() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot read executor checkpoints; no executor recovered");
                return;
            }
        };
        for Loaded { key: file, result } in loaded {
            let cp = match result {
                Ok(cp) => cp,
                Err(e) => {
                    tracing::error!(checkpoint = %file, error = %e, "skipping a corrupt executor checkpoint (moved aside to .corrupt)");
                    continue;
                }
            };
            let key: ExecKey = (cp.framework.id.clone(), cp.info.executor_id.clone());
            let Some(record) = cp.container.clone() else {
                tracing::warn!(executor = %key.1, "the agent restarted while launching an executor; its tasks fail");
                self.executor_checkpoints.remove(&file);
                continue;
            };
            let handle = match self.runtime.recover(&record) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(executor = %key.1, error = %e, "cannot re-attach to an executor");
                    self.executor_checkpoints.remove(&file);
                    continue;
                }
            };
            let listener = match bind_socket(&cp.socket, cp.uid, cp.gid) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(executor = %key.1, error = %e, "cannot listen for a recovered executor; killing it");
                    let h = handle.clone();
                    tokio::task::spawn_blocking(move || {
                        let _ = h.kill(Duration::ZERO);
                    });
                    self.executor_checkpoints.remove(&file);
                    continue;
                }
            };
            let abort = spawn_listener(listener, key.clone(), self.events.clone());
            tracing::info!(executor = %key.1, pid = handle.pid(), "re-attached to a running executor");
            let instance = self.next_instance();
            self.executors.insert(
                key.clone(),
                Executor {
                    framework: cp.framework,
                    info: cp.info,
                    sandbox: cp.sandbox,
                    socket: cp.socket,
                    uid: cp.uid,
                    gid: cp.gid,
                    handle: Some(handle.clone()),
                    conn: None,
                    pending: Vec::new(),
                    next_conn: 0,
                    shutting_down: cp.shutting_down,
                    listener: abort,
                    instance,
                },
            );
            self.watch_executor(key, handle);
        }
    }

    /// After task recovery: executors left without a live task (or already shutting down)
    /// are shut down again.
    pub(in crate::agent) async fn after_recovery(&mut self) {
        let keys: Vec<ExecKey> = self.executors.keys().cloned().collect();
        for key in keys {
            // The agent may have died between a limit change and its checkpoint.
            if let Err(err) = self.resize_executor(&key).await {
                tracing::warn!(executor = %key.1, error = %err, "cannot set a recovered executor's limits to its tasks");
            }
            let shutting = self.executors.get(&key).is_some_and(|e| e.shutting_down);
            if shutting {
                if let Some(e) = self.executors.get_mut(&key) {
                    e.shutting_down = false;
                }
                self.shutdown_executor(&key, "it was shutting down when the agent restarted");
            } else {
                self.shutdown_if_idle(&key);
            }
        }
    }

    /// Kills and removes every executor's container (for `cleanup_on_exit`).
    pub(in crate::agent) async fn destroy_executors(&mut self) {
        let keys: Vec<ExecKey> = self.executors.keys().cloned().collect();
        for key in keys {
            let Some(mut e) = self.forget_executor(&key) else {
                continue;
            };
            if let Some(handle) = e.handle.take() {
                let _ = tokio::task::spawn_blocking(move || {
                    let _ = handle.kill(Duration::from_millis(500));
                    destroy(handle);
                })
                .await;
            }
        }
    }
}
