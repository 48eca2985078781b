//! An executor's socket and connection: binding and listening, checking the peer, the
//! subscription, and the frames both ways (updates become agent status updates).

use super::*;

impl Agent {
    /// A connection on an executor's socket: checked against the executor's user and
    /// container before anything is read from it.
    pub(in crate::agent) async fn on_executor_connection(
        &mut self,
        key: ExecKey,
        stream: UnixStream,
    ) {
        let Some(e) = self.executors.get_mut(&key) else {
            return;
        };
        let cred = match stream.peer_cred() {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(executor = %key.1, error = %err, "cannot read an executor connection's credentials; closing it");
                return;
            }
        };
        if cred.uid() != e.uid {
            tracing::warn!(executor = %key.1, uid = cred.uid(), expected = e.uid,
                "refused a connection on an executor socket from another user");
            return;
        }
        let Some(handle) = e.handle.clone() else {
            if e.pending.len() < MAX_PENDING_CONNECTIONS {
                e.pending.push(stream);
            }
            return;
        };
        let Some(pid) = cred.pid() else {
            tracing::warn!(executor = %key.1, "an executor connection has no peer pid; closing it");
            return;
        };
        let inside = match handle.as_ref() {
            Handle::Isolated(_) => handle.procs().is_ok_and(|p| p.contains(&pid)),
            Handle::Plain(_) => descends_from(pid, handle.pid()),
        };
        if !inside {
            tracing::warn!(executor = %key.1, pid, "refused a connection on an executor socket from a process outside the executor's container");
            return;
        }
        e.next_conn += 1;
        let id = e.next_conn;
        let (outbox, mut rx) = mpsc::channel::<AgentToExecutor>(EXECUTOR_OUTBOX);
        let (mut read, mut write) = stream.into_split();
        let writer = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                let frame = match proto::codec::encode_to_vec(&msg, MAX_EXECUTOR_FRAME) {
                    Ok(f) => f,
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot encode a frame for an executor");
                        continue;
                    }
                };
                if write.write_all(&frame).await.is_err() {
                    return;
                }
            }
        });
        let events = self.events.clone();
        let reader = tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            let reason = 'read: loop {
                loop {
                    match proto::decode::<ExecutorToAgent>(&buf, MAX_EXECUTOR_FRAME) {
                        Ok(Some((msg, used))) => {
                            buf.drain(..used);
                            let ev = Event::ExecutorFrame {
                                key: key.clone(),
                                conn: id,
                                msg,
                            };
                            if events.send(ev).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(err) => break 'read format!("bad frame: {err}"),
                    }
                }
                match read.read(&mut chunk).await {
                    Ok(0) => break "the executor closed the connection".to_owned(),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(err) => break err.to_string(),
                }
            };
            let _ = events
                .send(Event::ExecutorClosed {
                    key,
                    conn: id,
                    reason,
                })
                .await;
        });
        // Replacing the previous connection aborts its tasks (ExecConn's Drop).
        e.conn = Some(ExecConn {
            id,
            outbox,
            subscribed: false,
            io: [reader.abort_handle(), writer.abort_handle()],
        });
    }

    pub(in crate::agent) fn on_executor_closed(&mut self, key: ExecKey, conn: u64, reason: String) {
        if let Some(e) = self.executors.get_mut(&key) {
            if e.conn.as_ref().is_some_and(|c| c.id == conn) {
                tracing::info!(executor = %key.1, %reason, "executor disconnected");
                e.conn = None;
            }
        }
    }

    /// Queues a frame to the executor's subscribed connection; false if there is none.
    pub(in crate::agent) fn send_executor(&mut self, key: &ExecKey, msg: AgentToExecutor) -> bool {
        let Some(e) = self.executors.get_mut(key) else {
            return false;
        };
        let Some(conn) = e.conn.as_ref().filter(|c| c.subscribed) else {
            return false;
        };
        if conn.outbox.try_send(msg).is_err() {
            tracing::warn!(executor = %key.1, "an executor does not read its connection; dropping it");
            e.conn = None;
            return false;
        }
        true
    }

    /// Gives a task to its executor (now if subscribed; else at the next subscription).
    pub(in crate::agent) fn send_launch(&mut self, key: &ExecKey, task_id: &TaskId) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        if task.state.is_terminal() {
            return;
        }
        let sandbox = task.sandbox.clone();
        let info = task.info.clone();
        if let Err(err) = std::fs::create_dir_all(&sandbox) {
            tracing::warn!(task = %task_id, error = %err, "cannot create a task sandbox");
        }
        if let Some(e) = self.executors.get(key) {
            if nix::unistd::geteuid().is_root() {
                let _ = std::os::unix::fs::lchown(&sandbox, Some(e.uid), Some(e.gid));
            }
        }
        self.send_executor(
            key,
            AgentToExecutor::LaunchTask {
                task: info,
                sandbox: sandbox.display().to_string(),
            },
        );
    }

    pub(in crate::agent) async fn on_executor_frame(
        &mut self,
        key: ExecKey,
        conn: u64,
        msg: ExecutorToAgent,
    ) {
        let Some(e) = self.executors.get_mut(&key) else {
            return;
        };
        let Some(c) = e.conn.as_mut().filter(|c| c.id == conn) else {
            return;
        };
        match msg {
            ExecutorToAgent::Subscribe {
                framework_id,
                executor_id,
                tasks,
                unacknowledged,
            } => {
                if framework_id != key.0 || executor_id != key.1 {
                    tracing::warn!(executor = %key.1, claimed = %executor_id, "an executor subscribed under another id; closing its connection");
                    e.conn = None;
                    return;
                }
                c.subscribed = true;
                let shutting_down = e.shutting_down;
                tracing::info!(executor = %key.1, known_tasks = tasks.len(), "executor subscribed");
                self.send_executor(
                    &key,
                    AgentToExecutor::Subscribed {
                        agent_id: self.agent_id.clone(),
                        framework_id,
                        executor_id,
                    },
                );
                for u in unacknowledged {
                    self.apply_executor_update(&key, u).await;
                }
                if !self.executors.contains_key(&key) {
                    return;
                }
                let known: std::collections::BTreeSet<TaskId> = tasks.into_iter().collect();
                for id in self.live_executor_tasks(&key) {
                    let killed = self.tasks.get(&id).is_some_and(|t| t.kill_requested);
                    match (known.contains(&id), killed) {
                        (true, true) => {
                            self.send_executor(
                                &key,
                                AgentToExecutor::KillTask {
                                    task_id: id.clone(),
                                    grace_ms: None,
                                },
                            );
                        }
                        (true, false) => {}
                        (false, true) => {
                            let exec = Some(key.1.clone());
                            self.update(&id, TaskState::Killed, |s| {
                                s.reason = Some(StatusReason::KilledByFramework);
                                s.message = Some("killed before the executor started it".into());
                                s.executor_id = exec;
                            })
                            .await;
                        }
                        (false, false) => self.send_launch(&key, &id),
                    }
                }
                for id in known {
                    if !self.tasks.contains_key(&id) {
                        self.send_executor(
                            &key,
                            AgentToExecutor::KillTask {
                                task_id: id,
                                grace_ms: None,
                            },
                        );
                    }
                }
                if shutting_down {
                    let grace = self.config.kill_grace.as_millis() as u64;
                    self.send_executor(&key, AgentToExecutor::Shutdown { grace_ms: grace });
                } else {
                    self.shutdown_if_idle(&key);
                }
            }
            _ if !c.subscribed => {
                tracing::warn!(executor = %key.1, "an executor sent a frame before subscribing; closing its connection");
                e.conn = None;
            }
            ExecutorToAgent::Update(u) => self.apply_executor_update(&key, u).await,
            ExecutorToAgent::Message { data } => {
                self.send(AgentToMaster::ExecutorMessage {
                    framework_id: key.0.clone(),
                    executor_id: key.1.clone(),
                    data,
                })
                .await;
            }
        }
    }

    /// An executor's task update: recorded as a status update, then acknowledged to it.
    pub(in crate::agent) async fn apply_executor_update(
        &mut self,
        key: &ExecKey,
        u: ExecutorUpdate,
    ) {
        let ack = AgentToExecutor::Acknowledged {
            task_id: u.task_id.clone(),
            state: u.state,
        };
        let Some(task) = self.tasks.get(&u.task_id) else {
            // Already acknowledged by the framework and forgotten, or never ours: nothing to do.
            self.send_executor(key, ack);
            return;
        };
        if Self::executor_key(task).as_ref() != Some(key) {
            tracing::warn!(executor = %key.1, task = %u.task_id, "an executor reported a task that is not its own; ignored");
            return;
        }
        if task.state.is_terminal() || task.state == u.state {
            self.send_executor(key, ack);
            return;
        }
        if progress(u.state) <= progress(task.state) {
            // Back and forth (RUNNING, STARTING, RUNNING...) would make every update a
            // checkpoint (an fsync on the agent's loop) and a status update for the framework:
            // a task's state only moves forward.
            tracing::warn!(executor = %key.1, task = %u.task_id, from = %task.state, to = %u.state,
                "an executor moved a task's state backwards; ignored");
            self.send_executor(key, ack);
            return;
        }
        let allowed = matches!(
            u.state,
            TaskState::Starting
                | TaskState::Running
                | TaskState::Killing
                | TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Error
        );
        if !allowed {
            tracing::warn!(executor = %key.1, task = %u.task_id, state = %u.state, "an executor reported a state only the agent or master may set; ignored");
            self.send_executor(key, ack);
            return;
        }
        let kill_requested = task.kill_requested;
        let whole_unit = self.executors.get(key).is_some_and(|e| {
            e.info.container.oom_policy.unwrap_or_default() == OomPolicy::KillTask
        });
        if u.state.is_terminal() && u.state != TaskState::Finished && whole_unit {
            // A task killed by the OOM killer: under kill-task the container is one OOM unit
            // (as v2's memory.oom.group makes it); the exit path reports the limit for every
            // task. Under kill-process the executor's report stands.
            let handle = self.executors.get(key).and_then(|e| e.handle.clone());
            if let Some(h) = handle {
                let oom = tokio::task::spawn_blocking(move || oom_killed_now(&h))
                    .await
                    .unwrap_or(false);
                if oom {
                    tracing::warn!(executor = %key.1, task = %u.task_id, "the executor's container hit its memory limit; killing it");
                    self.kill_executor_container(key, Duration::ZERO);
                    return;
                }
            }
        }
        let reason = u.reason.or(match u.state {
            TaskState::Finished | TaskState::Failed => Some(StatusReason::CommandExited),
            TaskState::Killed if kill_requested => Some(StatusReason::KilledByFramework),
            _ => None,
        });
        let exec = Some(key.1.clone());
        self.update(&u.task_id, u.state, |s| {
            s.source = StatusSource::Executor;
            s.executor_id = exec;
            s.reason = reason;
            s.message = u.message.clone();
            s.exit_code = u.exit_code;
            s.signal = u.signal;
        })
        .await;
        self.send_executor(key, ack);
        if u.state.is_terminal() {
            self.shutdown_if_idle(key);
        }
    }

    pub(in crate::agent) fn on_framework_message(&mut self, key: ExecKey, data: Vec<u8>) {
        if !self.send_executor(&key, AgentToExecutor::Message { data }) {
            tracing::debug!(executor = %key.1, "dropping a framework message for an executor that is not connected");
        }
    }
}

/// Binds the executor's socket at `path` (replacing a stale one) and gives it to `uid`.
pub(in crate::agent) fn bind_socket(
    path: &Path,
    uid: u32,
    gid: u32,
) -> Result<tokio::net::UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // remove_file does not follow a symlink; lchown below does not either, so a link planted by
    // the executor's user cannot redirect either call.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "cannot remove the stale socket {}: {e}",
                path.display()
            ))
        }
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(|e| format!("cannot give {} to uid {uid}: {e}", path.display()))?;
    }
    Ok(listener)
}

pub(in crate::agent) fn spawn_listener(
    listener: tokio::net::UnixListener,
    key: ExecKey,
    events: mpsc::Sender<Event>,
) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let key = key.clone();
                    if events
                        .send(Event::ExecutorConnection { key, stream })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(executor = %key.1, error = %e, "cannot accept an executor connection");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    })
    .abort_handle()
}

/// How far along a task's life a state is: an executor may only move a task forward.
pub(in crate::agent) fn progress(state: TaskState) -> u8 {
    match state {
        TaskState::Staging => 0,
        TaskState::Starting => 1,
        TaskState::Running => 2,
        TaskState::Killing => 3,
        _ => 4,
    }
}

/// Whether `pid` is `ancestor` or one of its descendants (plain mode has no cgroup to check).
pub(in crate::agent) fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut p = pid;
    for _ in 0..64 {
        if p == ancestor {
            return true;
        }
        if p <= 1 {
            return false;
        }
        match procfs::process::Process::new(p).and_then(|pr| pr.stat()) {
            Ok(st) => p = st.ppid,
            Err(_) => return false,
        }
    }
    false
}
