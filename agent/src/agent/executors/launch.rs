//! Launching an executor: its sandbox, socket and user are prepared when the core first
//! checkpoints it (the intent), the container is started at `Action::LaunchExecutor`.

use super::*;
use crate::error::{ExecutorError, SandboxError, SocketError, SpecError};

impl Agent {
    /// Creates the executor's sandbox and socket (listening) for `key`; the glue's entry.
    pub(in crate::agent) fn prepare_executor(
        &mut self,
        key: &ExecKey,
        info: &ExecutorInfo,
    ) -> Result<(), ExecutorError> {
        let user = info
            .command
            .user
            .clone()
            .or_else(|| self.config.default_user.clone());
        // Plain processes run as the agent's own user; containers as the task user.
        let isolated = matches!(self.runtime.as_ref(), Runtime::Isolated(_));
        let root = nix::unistd::geteuid().is_root();
        let (uid, gid) = match (&user, isolated && root) {
            (Some(name), true) => match nix::unistd::User::from_name(name) {
                Ok(Some(u)) => (u.uid.as_raw(), u.gid.as_raw()),
                _ => return Err(ExecutorError::UnknownUser(name.clone())),
            },
            _ => (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
        };
        // The sandbox is the executor's (its user's, 0750); its tasks' directories live below.
        let sandbox = records::executor_sandbox(&self.config.work_dir, key);
        let owner = (isolated && root).then_some((uid, gid));
        crate::workdir::create_sandbox(&sandbox, owner)?;
        let tasks = sandbox.join("tasks");
        std::fs::create_dir_all(&tasks).map_err(|source| SandboxError::Create {
            path: tasks,
            source,
        })?;
        let mut socket = sandbox.join("executor.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            // A directory of its own, which its container sees (the rest of the work directory
            // is hidden from it); the same length as the sandbox-free `<hash>.sock`.
            socket = self
                .config
                .work_dir
                .join("executor-sockets")
                .join(short_hash(&records::executor_key_str(key)))
                .join("sock");
        }
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(SocketError::TooLong(socket).into());
        }
        let listener = bind_socket(&socket, uid, gid)?;
        let listener = spawn_listener(listener, key.clone(), self.events.clone());
        self.executors.insert(
            key.clone(),
            Executor {
                sandbox,
                socket,
                uid,
                gid,
                handle: None,
                conn: None,
                pending: Vec::new(),
                next_conn: 0,
                listener,
                launch_limits: None,
            },
        );
        Ok(())
    }

    /// `Action::LaunchExecutor`: the container with `limits`, off the loop.
    pub(in crate::agent) fn launch_executor(
        &mut self,
        framework: FrameworkSummary,
        info: ExecutorInfo,
        limits: Limits,
    ) {
        let key: ExecKey = (framework.id.clone(), info.executor_id.clone());
        let Some(e) = self.executors.get_mut(&key) else {
            // Its preparation failed: the core knows.
            return;
        };
        e.launch_limits = Some(limits.clone());
        let (sandbox, socket) = (e.sandbox.clone(), e.socket.clone());
        let user = info
            .command
            .user
            .clone()
            .or_else(|| self.config.default_user.clone());
        let spec = self.executor_spec(
            &framework,
            &info,
            &sandbox,
            &socket,
            user,
            &limits.resources,
        );
        let mut spec = match spec {
            Ok(s) => s,
            Err(e) => {
                let msg = RuntimeFailure::of(&e);
                return self
                    .core
                    .handle_executor_launched(now(), &key, limits, Err(msg));
            }
        };
        spec.pids_limit = Some(limits.pids);
        tracing::info!(executor = %info.executor_id, framework = %framework.id, resources = %limits.resources, "launching executor");
        let runtime = self.runtime.clone();
        let events = self.events.clone();
        let id = format!("{}.executor.{}", framework.id, info.executor_id);
        tokio::task::spawn_blocking(move || {
            let result = runtime.launch(&id, &spec);
            let _ = events.blocking_send(Event::Executor(ExecutorEvent::Launched { key, result }));
        });
    }

    pub(in crate::agent) fn executor_spec(
        &self,
        framework: &FrameworkSummary,
        info: &ExecutorInfo,
        sandbox: &Path,
        socket: &Path,
        user: Option<String>,
        r: &Resources,
    ) -> Result<ContainerSpec, SpecError> {
        let c = &info.command;
        let argv = if c.shell {
            vec!["/bin/sh".to_owned(), "-c".to_owned(), c.value.clone()]
        } else if c.arguments.is_empty() {
            vec![c.value.clone()]
        } else {
            c.arguments.clone()
        };
        if argv.first().is_none_or(|a| a.is_empty()) {
            return Err(SpecError::EmptyCommand("executor"));
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
        if let Some(a) = self.core.agent_id() {
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
        result: Result<Arc<Handle>, RuntimeError>,
    ) {
        let Some(e) = self.executors.get_mut(&key) else {
            if let Ok(handle) = result {
                tokio::task::spawn_blocking(move || destroy(handle));
            }
            return;
        };
        let limits = e.launch_limits.clone().unwrap_or(Limits {
            resources: Resources::default(),
            pids: 0,
        });
        match result {
            Ok(handle) => {
                tracing::info!(executor = %key.1, pid = handle.pid(), "executor running");
                e.handle = Some(handle.clone());
                let pending = std::mem::take(&mut e.pending);
                let pid = handle.pid().max(0) as u32;
                self.core
                    .handle_executor_launched(now(), &key, limits, Ok(pid));
                self.watch_executor(key.clone(), handle);
                for stream in pending {
                    self.on_executor_connection(key.clone(), stream).await;
                }
            }
            Err(message) => {
                tracing::warn!(executor = %key.1, error = %message, "cannot launch executor");
                self.core.handle_executor_launched(
                    now(),
                    &key,
                    limits,
                    Err(RuntimeFailure::of(&message)),
                );
            }
        }
    }
}
