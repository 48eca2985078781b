//! Command tasks' containers: the launch (spec, then the isolation crate off the loop), the
//! watcher that reports the exit, kills and destruction.

use super::*;
use agent_core::{container_id, Exit};
use proto::FrameworkSummary;

/// The core's view of a container's end (the isolation crate's `ExitInfo`, field by field).
pub(super) fn exit_of(e: ExitInfo) -> Exit {
    Exit {
        code: e.code,
        signal: e.signal,
        oom_killed: e.oom_killed,
        oom_kills: e.oom_kills,
        oom_policy: e.oom_policy,
        limitation: e.limitation,
    }
}

impl Agent {
    /// Waits for a container's end on a blocking thread until the agent stops (`Handle::watch`)
    /// and sends the event `exited` makes of it.
    pub(super) fn watch(
        &self,
        handle: Arc<Handle>,
        exited: impl FnOnce(Result<ExitInfo, RuntimeError>) -> Event + Send + 'static,
    ) {
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(result) = handle.watch(&events) {
                let _ = events.blocking_send(exited(result));
            }
        });
    }

    pub(super) fn watch_exit(&self, task_id: TaskId, handle: Arc<Handle>) {
        self.watch(handle, |result| Event::Exited { task_id, result });
    }

    /// `Action::Launch`: the sandbox and spec here, the container off the loop.
    pub(super) fn launch(&mut self, framework: &FrameworkSummary, info: proto::TaskInfo) {
        let task_id = info.task_id.clone();
        let sandbox = records::sandbox(&self.config.work_dir, &framework.id, &task_id, None);
        let spec = match self.container_spec(framework, &info, &sandbox) {
            Ok(spec) => spec,
            Err(e) => {
                return self
                    .core
                    .handle_launch_refused(now(), &task_id, e.to_string())
            }
        };
        let runtime = self.runtime.clone();
        let events = self.events.clone();
        let id = container_id(&framework.id, &task_id);
        let metrics = self.metrics.clone();
        self.launching += 1;
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let result = runtime.launch(&id, &spec);
            if result.is_ok() {
                metrics.launched(started.elapsed());
            }
            let _ = events.blocking_send(Event::Launched { task_id, result });
        });
    }

    pub(super) fn on_launched(
        &mut self,
        task_id: TaskId,
        result: Result<Arc<Handle>, RuntimeError>,
    ) {
        self.launching = self.launching.saturating_sub(1);
        match result {
            Ok(handle) => {
                let pid = handle.pid().max(0) as u32;
                // Held before the core checkpoints the task with its container's record.
                self.handles.insert(task_id.clone(), handle.clone());
                self.core.handle_launch_result(now(), &task_id, Ok(pid));
                self.watch_exit(task_id, handle);
            }
            Err(message) => {
                self.core
                    .handle_launch_result(now(), &task_id, Err(RuntimeFailure::of(&message)))
            }
        }
    }

    pub(super) fn on_exited(&mut self, task_id: TaskId, result: Result<ExitInfo, RuntimeError>) {
        if let Some(asked) = self.kills.remove(&task_id) {
            self.metrics.killed(asked.elapsed());
        }
        if let Err(e) = self.core.handle_task_exited(
            now(),
            &task_id,
            result.map(exit_of).map_err(|e| RuntimeFailure::of(&e)),
        ) {
            tracing::debug!(error = %e, "a container ended that no task holds");
        }
    }

    /// SIGTERM, then SIGKILL after `grace`, off the loop.
    pub(super) fn kill(&mut self, task_id: &TaskId, grace: Duration) {
        let Some(handle) = self.handles.get(task_id).cloned() else {
            return;
        };
        self.kills
            .entry(task_id.clone())
            .or_insert_with(Instant::now);
        tracing::info!(task = %task_id, ?grace, "killing task");
        tokio::task::spawn_blocking(move || {
            if let Err(e) = handle.kill(grace) {
                tracing::warn!(error = %e, "kill failed");
            }
        });
    }

    /// Kills and removes every container (for `cleanup_on_exit`).
    pub(super) async fn destroy_all(&mut self) {
        let ids: Vec<(proto::FrameworkId, TaskId)> = self
            .core
            .tasks()
            .map(|t| (t.framework_id.clone(), t.task_id.clone()))
            .collect();
        for (framework_id, task_id) in &ids {
            self.checkpoints
                .remove(&records::task_key(framework_id, task_id));
        }
        let mut handles: Vec<Arc<Handle>> =
            std::mem::take(&mut self.handles).into_values().collect();
        handles.extend(std::mem::take(&mut self.ended_executors).into_values());
        let keys: Vec<ExecKey> = self.executors.keys().cloned().collect();
        for key in keys {
            if let Some(h) = self.executors.get_mut(&key).and_then(|e| e.handle.take()) {
                handles.push(h);
            }
            self.forget_executor(&key);
        }
        self.ended_executors.clear();
        let grace = Duration::from_millis(500);
        for handle in handles {
            let _ = tokio::task::spawn_blocking(move || {
                let _ = handle.kill(grace);
                destroy(handle);
            })
            .await;
        }
    }
}

/// Removes a container's cgroups once nothing else holds its handle.
pub(super) fn destroy(mut handle: Arc<Handle>) {
    for _ in 0..100 {
        match Arc::try_unwrap(handle) {
            Ok(Handle::Isolated(c)) => {
                if let Err(e) = c.destroy() {
                    tracing::warn!(error = %e, "cannot remove a container");
                }
                return;
            }
            Ok(Handle::Plain(_)) => return,
            Err(h) => {
                handle = h;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    tracing::warn!("a container handle is still in use; its cgroup is left for the next cleanup");
}
