//! Executors at recovery: re-attached from their checkpoints (listening on their sockets
//! again), or their checkpoints removed (their tasks then fail in the core).

use super::*;
use crate::checkpoint::Loaded;
use crate::error::ExecutorError;
use agent_core::{ExecutorRecord, Limits};

impl Agent {
    /// Re-attaches to the executors of the checkpoints on disk: the ones the core gets, with
    /// the limits their containers have. Runs before task recovery, which needs them.
    pub(in crate::agent) fn recover_executors(&mut self) -> Vec<(ExecutorRecord, Limits)> {
        let loaded = match self.executor_checkpoints.load_all::<ExecutorCheckpoint>() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot read executor checkpoints; no executor recovered");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for Loaded { key: file, result } in loaded {
            let cp = match result {
                Ok(cp) => cp,
                Err(e) => {
                    tracing::error!(checkpoint = %file, error = %e, "skipping a corrupt executor checkpoint (moved aside to .corrupt)");
                    continue;
                }
            };
            match self.reattach_executor(&cp) {
                Ok(limits) => out.push((
                    ExecutorRecord {
                        framework: cp.framework,
                        info: cp.info,
                        shutting_down: cp.shutting_down,
                        running: true,
                    },
                    limits,
                )),
                Err(why) => {
                    tracing::warn!(executor = %cp.info.executor_id, error = %why, "cannot recover an executor; its tasks fail");
                    self.executor_checkpoints.remove(&file);
                }
            }
        }
        out
    }

    /// Re-attaches one executor's container and socket; the limits its container has.
    fn reattach_executor(&mut self, cp: &ExecutorCheckpoint) -> Result<Limits, ExecutorError> {
        let key: ExecKey = (cp.framework.id.clone(), cp.info.executor_id.clone());
        let Some(record) = cp.container.clone() else {
            return Err(ExecutorError::NotLaunched);
        };
        let handle = self
            .runtime
            .recover(&record)
            .map_err(ExecutorError::Reattach)?;
        let listener = match bind_socket(&cp.socket, cp.uid, cp.gid) {
            Ok(l) => l,
            Err(e) => {
                let h = handle.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = h.kill(Duration::ZERO);
                });
                return Err(ExecutorError::Relisten(e));
            }
        };
        let listener = spawn_listener(listener, key.clone(), self.events.clone());
        tracing::info!(executor = %key.1, pid = handle.pid(), "re-attached to a running executor");
        let limits = Limits {
            resources: Resources::new(
                record
                    .limits
                    .cpus
                    .map(|c| (c * 1000.0).round() as u64)
                    .unwrap_or(0),
                record.limits.memory_bytes.unwrap_or(0),
            ),
            pids: record.limits.pids_max,
        };
        self.executors.insert(
            key.clone(),
            Executor {
                sandbox: cp.sandbox.clone(),
                socket: cp.socket.clone(),
                uid: cp.uid,
                gid: cp.gid,
                handle: Some(handle.clone()),
                conn: None,
                pending: Vec::new(),
                next_conn: 0,
                listener,
                launch_limits: None,
            },
        );
        self.watch_executor(key, handle);
        Ok(limits)
    }
}
