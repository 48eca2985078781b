//! Launching command tasks: admission (ids, resources free), the container's launch and the
//! watcher that reports its exit.

use super::*;

impl Agent {
    /// Waits for a container's end on a blocking thread until the agent stops (`Handle::watch`)
    /// and sends the event `exited` makes of it.
    pub(super) fn watch(
        &self,
        handle: Arc<Handle>,
        exited: impl FnOnce(Result<ExitInfo, String>) -> Event + Send + 'static,
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

    /// What live tasks and executors hold. It can exceed the total after `--resources` shrank
    /// under running tasks; every use of it saturates.
    pub(super) fn used_resources(&self) -> Resources {
        let used = self
            .tasks
            .values()
            .filter(|t| !t.state.is_terminal())
            .fold(Resources::default(), |acc, t| acc.add(&t.info.resources));
        self.executors
            .values()
            .fold(used, |acc, e| acc.add(&e.info.resources))
    }

    pub(super) fn free_resources(&self) -> Resources {
        self.info.resources.saturating_sub(&self.used_resources())
    }

    pub(super) async fn run_tasks(
        &mut self,
        framework: FrameworkSummary,
        executor: Option<proto::ExecutorInfo>,
        tasks: Vec<TaskInfo>,
    ) {
        if let Some(executor) = executor {
            return self.run_executor_tasks(framework, executor, tasks).await;
        }
        for info in tasks {
            let task_id = info.task_id.clone();
            if self.tasks.contains_key(&task_id) {
                tracing::warn!(task = %task_id, "ignoring a launch of a task that is already known");
                continue;
            }
            let sandbox = self
                .config
                .work_dir
                .join("sandboxes")
                .join(framework.id.as_str())
                .join(task_id.as_str());
            let free = self.free_resources();
            self.tasks.insert(
                task_id.clone(),
                Task {
                    framework: framework.clone(),
                    framework_id: framework.id.clone(),
                    info: info.clone(),
                    state: TaskState::Staging,
                    sandbox: sandbox.clone(),
                    handle: None,
                    kill_requested: false,
                    executor: None,
                },
            );
            let refuse = |reason: StatusReason, message: String| {
                move |s: &mut TaskStatus| {
                    s.reason = Some(reason);
                    s.message = Some(message);
                }
            };
            if let Err((reason, msg)) = admit(&task_id, &framework.id, &info.resources, &free) {
                self.update(&task_id, TaskState::Error, refuse(reason, msg))
                    .await;
                continue;
            }
            let spec = match self.container_spec(&framework, &info, &sandbox) {
                Ok(spec) => spec,
                Err(msg) => {
                    self.update(
                        &task_id,
                        TaskState::Failed,
                        refuse(StatusReason::ContainerLaunchFailed, msg),
                    )
                    .await;
                    continue;
                }
            };
            self.update(&task_id, TaskState::Starting, |_| {}).await;
            let runtime = self.runtime.clone();
            let events = self.events.clone();
            let id = container_id(&framework.id, &task_id);
            tokio::task::spawn_blocking(move || {
                let result = runtime.launch(&id, &spec);
                let _ = events.blocking_send(Event::Launched { task_id, result });
            });
        }
    }

    pub(super) async fn on_launched(
        &mut self,
        task_id: TaskId,
        result: Result<Arc<Handle>, String>,
    ) {
        match result {
            Ok(handle) => {
                let kill_now = {
                    let Some(task) = self.tasks.get_mut(&task_id) else {
                        return;
                    };
                    task.handle = Some(handle.clone());
                    task.kill_requested
                };
                // The container record is durable before anyone hears the task runs: an agent
                // killed from here on re-attaches to it.
                self.checkpoint(&task_id);
                let pid = handle.pid();
                self.update(&task_id, TaskState::Running, |s| {
                    s.message = Some(format!("running as pid {pid}"));
                })
                .await;
                self.watch_exit(task_id.clone(), handle);
                if kill_now {
                    self.kill_task(&task_id, None).await;
                }
            }
            Err(message) => {
                self.update(&task_id, TaskState::Failed, |s| {
                    s.reason = Some(StatusReason::ContainerLaunchFailed);
                    s.message = Some(message);
                })
                .await;
            }
        }
    }
}

/// Whether a command task may launch: its ids must be safe directory names and what it asks
/// for must fit in what is `free`. A refusal is the reason and message of its `TASK_ERROR`.
pub(super) fn admit(
    task_id: &TaskId,
    framework_id: &FrameworkId,
    wants: &Resources,
    free: &Resources,
) -> Result<(), (StatusReason, String)> {
    if !valid_id(task_id.as_str()) || !valid_id(framework_id.as_str()) {
        return Err((
            StatusReason::TaskInvalid,
            "task and framework ids may use only letters, digits, '.', '_' and '-'".to_owned(),
        ));
    }
    if !free.contains(wants) {
        return Err((
            StatusReason::ResourcesUnavailable,
            format!("the task asks for {wants} but this agent has only {free} free"),
        ));
    }
    Ok(())
}

/// Task ids become directory names: only a safe alphabet is accepted.
pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The id of a command task's container: recovery finds a container by it when the agent died
/// before checkpointing the container's record.
pub(super) fn container_id(framework: &FrameworkId, task: &TaskId) -> String {
    format!("{framework}.{task}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(s: &str) -> Resources {
        s.parse().expect("resources")
    }

    #[test]
    fn a_task_that_fits_with_safe_ids_is_admitted() {
        let (t, f) = (TaskId::new("web-1.a_b"), FrameworkId::new("fw-1"));
        assert_eq!(
            admit(&t, &f, &res("cpus:1;mem:64MiB"), &res("cpus:1;mem:64MiB")),
            Ok(())
        );
    }

    #[test]
    fn unsafe_ids_are_refused_before_resources_are_looked_at() {
        let free = res("cpus:4;mem:1GiB");
        for (task, fw) in [
            ("../x", "fw"),
            (".hidden", "fw"),
            ("", "fw"),
            ("t", "a/b"),
            ("t", "a b"),
        ] {
            let refused = admit(
                &TaskId::new(task),
                &FrameworkId::new(fw),
                &res("cpus:8"),
                &free,
            );
            let (reason, msg) = refused.expect_err(task);
            assert_eq!(reason, StatusReason::TaskInvalid, "{task:?} {fw:?}");
            assert!(msg.contains("letters, digits"), "{msg}");
        }
        let long = "a".repeat(201);
        assert!(admit(
            &TaskId::new(&long),
            &FrameworkId::new("fw"),
            &res("cpus:1"),
            &free
        )
        .is_err());
    }

    #[test]
    fn a_task_larger_than_what_is_free_is_refused_naming_both() {
        let (t, f) = (TaskId::new("t"), FrameworkId::new("fw"));
        let (reason, msg) = admit(&t, &f, &res("cpus:1;mem:128MiB"), &res("cpus:2;mem:64MiB"))
            .expect_err("too big");
        assert_eq!(reason, StatusReason::ResourcesUnavailable);
        assert!(
            msg.contains("asks for") && msg.contains("64MiB free"),
            "{msg}"
        );
    }
}
