//! An executor's socket and connection: binding and listening, checking the peer, and the
//! frames both ways (the core decides what they mean).

use super::*;
use crate::error::SocketError;

impl Agent {
    /// A connection on an executor's socket: checked against the executor's user and
    /// container before anything is read from it.
    pub(in crate::agent) async fn on_executor_connection(
        &mut self,
        key: ExecKey,
        stream: UnixStream,
    ) {
        let exec_key = key.clone();
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
                            let ev = Event::Executor(ExecutorEvent::Frame {
                                key: key.clone(),
                                conn: id,
                                msg,
                            });
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
            let closed = ExecutorEvent::Closed {
                key,
                conn: id,
                reason,
            };
            let _ = events.send(Event::Executor(closed)).await;
        });
        // Replacing the previous connection aborts its tasks (ExecConn's Drop); the new one
        // must subscribe.
        e.conn = Some(ExecConn {
            id,
            outbox,
            io: [reader.abort_handle(), writer.abort_handle()],
        });
        self.core.handle_executor_disconnected(&exec_key);
    }

    pub(in crate::agent) fn on_executor_closed(&mut self, key: ExecKey, conn: u64, reason: String) {
        if let Some(e) = self.executors.get_mut(&key) {
            if e.conn.as_ref().is_some_and(|c| c.id == conn) {
                tracing::info!(executor = %key.1, %reason, "executor disconnected");
                e.conn = None;
                self.core.handle_executor_disconnected(&key);
            }
        }
    }

    /// `Action::CloseExecutorConnection`: the executor broke the protocol.
    pub(in crate::agent) fn close_executor_connection(&mut self, key: &ExecKey) {
        if let Some(e) = self.executors.get_mut(key) {
            if e.conn.take().is_some() {
                tracing::warn!(executor = %key.1, "an executor broke the protocol (another id, or a frame before subscribing); closed its connection");
            }
        }
    }

    /// `Action::ToExecutor`: queues a frame to the executor's connection.
    pub(in crate::agent) fn send_executor(&mut self, key: &ExecKey, msg: AgentToExecutor) {
        let Some(e) = self.executors.get_mut(key) else {
            return;
        };
        let Some(conn) = e.conn.as_ref() else {
            return;
        };
        if conn.outbox.try_send(msg).is_err() {
            tracing::warn!(executor = %key.1, "an executor does not read its connection; dropping it");
            e.conn = None;
            self.core.handle_executor_disconnected(key);
        }
    }

    /// `Action::HandTask`: the task's directory in the executor's sandbox (its user's), then
    /// `LaunchTask`.
    pub(in crate::agent) fn hand_task(&mut self, key: &ExecKey, task: proto::TaskInfo) {
        let sandbox = records::sandbox(&self.config.work_dir, &key.0, &task.task_id, Some(&key.1));
        if let Err(err) = std::fs::create_dir_all(&sandbox) {
            tracing::warn!(task = %task.task_id, error = %err, "cannot create a task sandbox");
        }
        if let Some(e) = self.executors.get(key) {
            if nix::unistd::geteuid().is_root() {
                let _ = std::os::unix::fs::lchown(&sandbox, Some(e.uid), Some(e.gid));
            }
        }
        let sandbox = sandbox.display().to_string();
        self.send_executor(key, AgentToExecutor::LaunchTask { task, sandbox });
    }

    /// A frame of the executor's current connection. A task that ended badly under the
    /// `KillTask` OOM policy may be the OOM killer's work: then the whole container is killed
    /// and its exit reports the limit for every task.
    pub(in crate::agent) async fn on_executor_frame(
        &mut self,
        key: ExecKey,
        conn: u64,
        msg: ExecutorToAgent,
    ) {
        let Some(e) = self.executors.get(&key) else {
            return;
        };
        if e.conn.as_ref().is_none_or(|c| c.id != conn) {
            return;
        }
        if let ExecutorToAgent::Update(u) = &msg {
            let handle = e.handle.clone();
            if let (true, Some(h)) = (self.core.update_needs_oom_check(&key, u), handle) {
                let oom = tokio::task::spawn_blocking(move || oom_killed_now(&h))
                    .await
                    .unwrap_or(false);
                if oom {
                    tracing::warn!(executor = %key.1, task = %u.task_id, "the executor's container hit its memory limit; killing it");
                    return self.core.handle_executor_oom(&key);
                }
            }
        }
        self.core.handle_executor(now(), &key, msg);
    }
}

/// Binds the executor's socket at `path` (replacing a stale one) and gives it to `uid`.
pub(in crate::agent) fn bind_socket(
    path: &Path,
    uid: u32,
    gid: u32,
) -> Result<tokio::net::UnixListener, SocketError> {
    let at = |p: &Path| p.to_path_buf();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| SocketError::CreateDir {
            path: at(dir),
            source,
        })?;
    }
    // remove_file does not follow a symlink; lchown below does not either, so a link planted by
    // the executor's user cannot redirect either call.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SocketError::RemoveStale {
                path: at(path),
                source,
            })
        }
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(|source| SocketError::Listen {
        path: at(path),
        source,
    })?;
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|source| {
            SocketError::Chown {
                path: at(path),
                uid,
                source,
            }
        })?;
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
                        .send(Event::Executor(ExecutorEvent::Connection { key, stream }))
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
