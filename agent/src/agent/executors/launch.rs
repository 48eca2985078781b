//! Launching an executor's tasks: the executor's container is launched (or resized) with the
//! first task, and tasks are handed to it once it subscribes.

use super::*;

impl Agent {
    /// Fails a group of tasks without starting anything.
    pub(in crate::agent) async fn fail_tasks(
        &mut self,
        ids: &[TaskId],
        state: TaskState,
        reason: StatusReason,
        message: &str,
    ) {
        for id in ids {
            let exec = self.tasks.get(id).and_then(|t| t.executor.clone());
            self.update(id, state, |s| {
                s.reason = Some(reason);
                s.message = Some(message.to_owned());
                s.executor_id = exec;
            })
            .await;
        }
    }

    /// Fails tasks whose executor could not be started or made room for.
    pub(in crate::agent) async fn fail_launch(&mut self, ids: &[TaskId], message: &str) {
        let (state, reason) = (TaskState::Failed, StatusReason::ContainerLaunchFailed);
        self.fail_tasks(ids, state, reason, message).await;
    }

    /// RunTasks with an executor: launch it (if not running) with the tasks, or hand the tasks
    /// to the running one.
    pub(in crate::agent) async fn run_executor_tasks(
        &mut self,
        framework: FrameworkSummary,
        info: ExecutorInfo,
        tasks: Vec<TaskInfo>,
    ) {
        let key: ExecKey = (framework.id.clone(), info.executor_id.clone());
        let exec_sandbox = self
            .config
            .work_dir
            .join("sandboxes")
            .join(framework.id.as_str())
            .join("executors")
            .join(info.executor_id.as_str());
        let free = self.free_resources();
        let mut ids = Vec::new();
        for t in tasks {
            let task_id = t.task_id.clone();
            if self.tasks.contains_key(&task_id) {
                tracing::warn!(task = %task_id, "ignoring a launch of a task that is already known");
                continue;
            }
            let sandbox = exec_sandbox.join("tasks").join(task_id.as_str());
            self.tasks.insert(
                task_id.clone(),
                Task {
                    framework: framework.clone(),
                    framework_id: framework.id.clone(),
                    info: t,
                    state: TaskState::Staging,
                    sandbox,
                    handle: None,
                    kill_requested: false,
                    executor: Some(info.executor_id.clone()),
                },
            );
            ids.push(task_id);
        }
        if ids.is_empty() {
            return;
        }
        let ids_ok = ids.iter().all(|id| valid_id(id.as_str()))
            && valid_id(framework.id.as_str())
            && valid_id(info.executor_id.as_str());
        if !ids_ok {
            let msg =
                "task, framework and executor ids may use only letters, digits, '.', '_' and '-'";
            self.fail_tasks(&ids, TaskState::Error, StatusReason::TaskInvalid, msg)
                .await;
            return;
        }
        let mut need = ids
            .iter()
            .filter_map(|id| self.tasks.get(id))
            .fold(Resources::default(), |acc, t| acc.add(&t.info.resources));
        let running = self.executors.get(&key).map(|e| e.shutting_down);
        match running {
            Some(true) => {
                let msg = format!(
                    "executor {} is shutting down (it had no task left); launch again once it has exited",
                    info.executor_id
                );
                self.fail_tasks(
                    &ids,
                    TaskState::Failed,
                    StatusReason::ExecutorTerminated,
                    &msg,
                )
                .await;
                return;
            }
            Some(false) => {}
            None => need = need.add(&info.resources),
        }
        if !free.contains(&need) {
            let msg =
                format!("the launch group asks for {need} but this agent has only {free} free");
            self.fail_tasks(
                &ids,
                TaskState::Error,
                StatusReason::ResourcesUnavailable,
                &msg,
            )
            .await;
            return;
        }
        let ready = if running.is_none() {
            self.launch_executor(&key, &framework, &info, &exec_sandbox, &need)
                .await
                .map_err(|msg| format!("cannot launch executor {}: {msg}", info.executor_id))
        } else {
            // The container grows before the executor hears of the new tasks.
            self.resize_executor(&key).await.map_err(|err| {
                format!(
                    "cannot raise the limits of executor {}'s container for the new tasks: {err}",
                    info.executor_id
                )
            })
        };
        if let Err(msg) = ready {
            tracing::warn!(executor = %info.executor_id, error = %msg, "cannot start tasks on an executor");
            self.fail_launch(&ids, &msg).await;
            return;
        }
        for id in &ids {
            let exec = Some(info.executor_id.clone());
            self.update(id, TaskState::Starting, |s| s.executor_id = exec)
                .await;
        }
        if running.is_some() {
            // Given to the executor now if it is subscribed, else when it subscribes.
            for id in &ids {
                self.send_launch(&key, id);
            }
        }
    }

    /// Creates the sandbox and socket, checkpoints the intent and starts the container.
    pub(in crate::agent) async fn launch_executor(
        &mut self,
        key: &ExecKey,
        framework: &FrameworkSummary,
        info: &ExecutorInfo,
        sandbox: &Path,
        limits: &Resources,
    ) -> Result<(), String> {
        let user = info
            .command
            .user
            .clone()
            .or_else(|| self.config.default_user.clone());
        // Plain processes run as the agent's own user; containers as the task user.
        let isolated = matches!(self.runtime.as_ref(), Runtime::Isolated(_));
        let (uid, gid) = match (&user, isolated && nix::unistd::geteuid().is_root()) {
            (Some(name), true) => match nix::unistd::User::from_name(name) {
                Ok(Some(u)) => (u.uid.as_raw(), u.gid.as_raw()),
                _ => return Err(format!("unknown user {name:?}")),
            },
            _ => (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
        };
        // The sandbox is the executor's (its user's, 0750); its tasks' directories live below.
        let owner = (isolated && nix::unistd::geteuid().is_root()).then_some((uid, gid));
        crate::workdir::create_sandbox(sandbox, owner)?;
        std::fs::create_dir_all(sandbox.join("tasks"))
            .map_err(|e| format!("cannot create sandbox {}: {e}", sandbox.display()))?;
        let mut socket = sandbox.join("executor.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            // A directory of its own, which its container sees (the rest of the work directory
            // is hidden from it); the same length as the sandbox-free `<hash>.sock`.
            socket = self
                .config
                .work_dir
                .join("executor-sockets")
                .join(short_hash(&key_str(key)))
                .join("sock");
        }
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(format!(
                "the executor socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter work directory",
                socket.display()
            ));
        }
        let listener = bind_socket(&socket, uid, gid)?;
        let abort = spawn_listener(listener, key.clone(), self.events.clone());
        let spec = match self.executor_spec(framework, info, sandbox, &socket, user, limits) {
            Ok(mut s) => {
                let task_pids: u64 = self
                    .tasks
                    .values()
                    .filter(|t| Self::executor_key(t).as_ref() == Some(key))
                    .filter(|t| !t.state.is_terminal())
                    .map(|t| t.info.container.pids_limit.unwrap_or(0))
                    .fold(0u64, |a, b| a.saturating_add(b));
                let own = info
                    .container
                    .pids_limit
                    .unwrap_or(self.config.default_pids_limit);
                s.pids_limit = Some(own.saturating_add(task_pids));
                s
            }
            Err(e) => {
                abort.abort();
                let _ = std::fs::remove_file(&socket);
                return Err(e);
            }
        };
        let instance = self.next_instance();
        self.executors.insert(
            key.clone(),
            Executor {
                framework: framework.clone(),
                info: info.clone(),
                sandbox: sandbox.to_owned(),
                socket,
                uid,
                gid,
                handle: None,
                conn: None,
                pending: Vec::new(),
                next_conn: 0,
                shutting_down: false,
                listener: abort,
                instance,
            },
        );
        self.checkpoint_executor(key);
        tracing::info!(executor = %info.executor_id, framework = %framework.id, resources = %limits, "launching executor");
        let runtime = self.runtime.clone();
        let events = self.events.clone();
        let id = format!("{}.executor.{}", framework.id, info.executor_id);
        let key = key.clone();
        tokio::task::spawn_blocking(move || {
            let result = runtime.launch(&id, &spec);
            let _ = events.blocking_send(Event::ExecutorLaunched { key, result });
        });
        Ok(())
    }

    pub(in crate::agent) fn executor_spec(
        &self,
        framework: &FrameworkSummary,
        info: &ExecutorInfo,
        sandbox: &Path,
        socket: &Path,
        user: Option<String>,
        r: &Resources,
    ) -> Result<ContainerSpec, String> {
        let c = &info.command;
        let argv = if c.shell {
            vec!["/bin/sh".to_owned(), "-c".to_owned(), c.value.clone()]
        } else if c.arguments.is_empty() {
            vec![c.value.clone()]
        } else {
            c.arguments.clone()
        };
        if argv.first().is_none_or(|a| a.is_empty()) {
            return Err("the executor has an empty command".to_owned());
        }
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let sb = sandbox.display().to_string();
        env.insert("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into());
        env.insert("HOME".into(), sb.clone());
        env.insert("CORRAL_SANDBOX".into(), sb.clone());
        env.insert(
            "CORRAL_EXECUTOR_SOCKET".into(),
            socket.display().to_string(),
        );
        env.insert("CORRAL_EXECUTOR_ID".into(), info.executor_id.to_string());
        env.insert("CORRAL_FRAMEWORK_ID".into(), framework.id.to_string());
        env.insert("MESOS_SANDBOX".into(), sb);
        env.insert("MESOS_EXECUTOR_ID".into(), info.executor_id.to_string());
        env.insert("MESOS_FRAMEWORK_ID".into(), framework.id.to_string());
        if let Some(a) = &self.agent_id {
            env.insert("CORRAL_AGENT_ID".into(), a.to_string());
            env.insert("MESOS_AGENT_ID".into(), a.to_string());
        }
        for (k, v) in &c.environment {
            env.insert(k.clone(), v.clone());
        }
        let mut spec =
            super::container_spec(argv, env, sandbox, user, r, &info.container, &self.config);
        // A socket outside the sandbox: its own directory is bound back into the container.
        if let Some(dir) = socket.parent().filter(|d| !d.starts_with(sandbox)) {
            spec.view.visible.push(dir.to_owned());
        }
        Ok(spec)
    }

    pub(in crate::agent) async fn on_executor_launched(
        &mut self,
        key: ExecKey,
        result: Result<Arc<Handle>, String>,
    ) {
        match result {
            Ok(handle) => {
                let Some(e) = self.executors.get_mut(&key) else {
                    tokio::task::spawn_blocking(move || destroy(handle));
                    return;
                };
                e.handle = Some(handle.clone());
                let pending = std::mem::take(&mut e.pending);
                let shutting_down = e.shutting_down;
                tracing::info!(executor = %key.1, pid = handle.pid(), "executor running");
                self.checkpoint_executor(&key);
                // Tasks given to it while it launched: the container grows before they are
                // handed over (at its subscription).
                if let Err(err) = self.resize_executor(&key).await {
                    tracing::warn!(executor = %key.1, error = %err, "cannot set an executor's limits to its tasks");
                }
                self.watch_executor(key.clone(), handle.clone());
                for stream in pending {
                    self.on_executor_connection(key.clone(), stream).await;
                }
                if shutting_down {
                    self.kill_executor_container(&key, Duration::ZERO);
                }
            }
            Err(message) => {
                tracing::warn!(executor = %key.1, error = %message, "cannot launch executor");
                let ids = self.live_executor_tasks(&key);
                let msg = format!("cannot launch executor {}: {message}", key.1);
                self.fail_launch(&ids, &msg).await;
                self.forget_executor(&key);
            }
        }
    }
}
