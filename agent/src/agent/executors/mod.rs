//! Custom executors: a framework's program that the agent launches in ONE container (limits =
//! the executor's resources + those of the tasks launched with it) and hands tasks to over a
//! unix socket.
//!
//! Layout: sandbox `WORK_DIR/sandboxes/FRAMEWORK/executors/EXECUTOR/` (owned by the executor's
//! user), each task's directory `<sandbox>/tasks/TASK/` (its stdout/stderr, read by `corral
//! logs`), and the socket `<sandbox>/executor.sock` (or `WORK_DIR/executor-sockets/<hash>/sock`
//! when that path would not fit a unix socket address; that directory is bound into the
//! executor's container, where the rest of the work directory is hidden). The socket is owned by the executor's
//! user with mode 0755 & ~umask, so only that user (and root) may connect; the agent also checks
//! the peer's credentials (SO_PEERCRED): its uid must be the executor's, and its pid must be in
//! the executor's container (its cgroup; plain mode: a descendant of the executor's process).
//!
//! Protocol (`proto::AgentToExecutor` / `proto::ExecutorToAgent`, proto's codec): the executor
//! subscribes (again after every reconnection, listing the tasks it knows and its
//! unacknowledged updates); the agent answers `Subscribed`, sends `LaunchTask` for tasks it has
//! not, `KillTask` for kills (killing the container if no terminal update comes within the
//! grace period), `Message` for framework messages, and `Shutdown` when the framework shuts down
//! or the executor has no live task left (its resources are freed by the master then). Each
//! executor update becomes an agent status update (uuid, seq, checkpointed, resent until
//! acknowledged) and is acknowledged to the executor once checkpointed.
//!
//! When the container ends, every task still live ends too: `TASK_FAILED` with reason
//! `MemoryLimit` and the limitation if the OOM killer ended the container (under the executor's
//! OOM policy `KillTask`, the default, the container is one OOM unit: on cgroup v1, where the
//! kernel kills only one process, the agent kills the rest; under `KillProcess` only the
//! executor's own death of an OOM kill counts, and a task the kernel killed is reported by the
//! executor), else `TASK_KILLED` if a kill was asked, else `TASK_FAILED` with
//! `ExecutorTerminated`.

use super::*;
use crate::checkpoint::ExecutorCheckpoint;
use isolation::CgroupManager;
use proto::{
    AgentToExecutor, ExecutorId, ExecutorInfo, ExecutorToAgent, ExecutorUpdate, OomPolicy,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Frames queued to one executor connection before it counts as stuck and is dropped.
const EXECUTOR_OUTBOX: usize = 256;
/// Largest frame accepted from an executor.
pub(super) const MAX_EXECUTOR_FRAME: usize = 16 << 20;
/// Connections held while the executor's launch completes (its pid cannot be checked before).
const MAX_PENDING_CONNECTIONS: usize = 4;
/// Time given to the executor beyond the kill grace period before the container is killed.
const KILL_MARGIN: Duration = Duration::from_secs(2);
/// Longest unix socket path (`sun_path` is 108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

pub(super) type ExecKey = (FrameworkId, ExecutorId);

pub(super) struct Executor {
    pub framework: FrameworkSummary,
    pub info: ExecutorInfo,
    pub sandbox: PathBuf,
    pub socket: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub handle: Option<Arc<Handle>>,
    /// The current connection; frames of older connections are ignored.
    pub conn: Option<ExecConn>,
    pub pending: Vec<UnixStream>,
    pub next_conn: u64,
    pub shutting_down: bool,
    pub listener: tokio::task::AbortHandle,
    /// Distinguishes this run of the executor from a later one with the same id (timers).
    pub instance: u64,
}

pub(super) struct ExecConn {
    id: u64,
    outbox: mpsc::Sender<AgentToExecutor>,
    subscribed: bool,
    /// The connection's reader and writer tasks: aborted (closing the socket) when the
    /// connection is replaced or dropped, so a connection the agent no longer listens to holds
    /// no task, buffer or file descriptor.
    io: [tokio::task::AbortHandle; 2],
}

impl Drop for ExecConn {
    fn drop(&mut self) {
        for task in &self.io {
            task.abort();
        }
    }
}

fn key_str(key: &ExecKey) -> String {
    format!("{}.{}", key.0, key.1)
}

/// FNV-1a: a short stable name for a socket whose sandbox path is too long.
fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Binds the executor's socket at `path` (replacing a stale one) and gives it to `uid`.
fn bind_socket(path: &Path, uid: u32, gid: u32) -> Result<tokio::net::UnixListener, String> {
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

fn spawn_listener(
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
fn progress(state: TaskState) -> u8 {
    match state {
        TaskState::Staging => 0,
        TaskState::Starting => 1,
        TaskState::Running => 2,
        TaskState::Killing => 3,
        _ => 4,
    }
}

/// Whether `pid` is `ancestor` or one of its descendants (plain mode has no cgroup to check).
fn descends_from(pid: i32, ancestor: i32) -> bool {
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

/// Whether the kernel's OOM killer has killed a process of the container since its launch.
fn oom_killed_now(handle: &Handle) -> bool {
    let Handle::Isolated(c) = handle else {
        return false;
    };
    let record = c.record();
    let report = match record.version {
        isolation::CgroupVersion::V2 => match record.cgroups.get("unified") {
            Some(p) => isolation::cgroup::v2::V2Manager::new(p.clone()).memory_report(),
            None => return false,
        },
        isolation::CgroupVersion::V1 => {
            isolation::cgroup::v1::V1Manager::new(record.cgroups.clone()).memory_report()
        }
    };
    report
        .ok()
        .and_then(|r| r.oom_kill)
        .is_some_and(|k| k > record.oom_kill_baseline)
}

impl Agent {
    fn next_instance(&mut self) -> u64 {
        self.executor_instances += 1;
        self.executor_instances
    }

    pub(super) fn executor_key(task: &Task) -> Option<ExecKey> {
        task.executor
            .as_ref()
            .map(|e| (task.framework_id.clone(), e.clone()))
    }

    fn executor_tasks(&self, key: &ExecKey) -> Vec<TaskId> {
        self.tasks
            .iter()
            .filter(|(_, t)| Self::executor_key(t).as_ref() == Some(key))
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn live_executor_tasks(&self, key: &ExecKey) -> Vec<TaskId> {
        self.executor_tasks(key)
            .into_iter()
            .filter(|id| self.tasks.get(id).is_some_and(|t| !t.state.is_terminal()))
            .collect()
    }

    /// What the executor's container should have: its own resources plus those of its live
    /// tasks, and its pids limit (its own, or the agent's default) plus each live task's
    /// explicit one.
    fn executor_wanted(&self, key: &ExecKey) -> Option<(Resources, u64)> {
        let e = self.executors.get(key)?;
        let live = self.live_executor_tasks(key);
        let tasks = live.iter().filter_map(|id| self.tasks.get(id));
        let mut r = e.info.resources.clone();
        let mut pids = e
            .info
            .container
            .pids_limit
            .unwrap_or(self.config.default_pids_limit);
        for t in tasks {
            r = r.add(&t.info.resources);
            pids = pids.saturating_add(t.info.container.pids_limit.unwrap_or(0));
        }
        Some((r, pids))
    }

    /// Brings the executor's container limits to [`Self::executor_wanted`]: raised before a new
    /// task is handed over, lowered after a task ended. Checkpoints the executor when they
    /// changed, so a restarted agent restores (and drift-checks) the right values. A container
    /// still launching is resized once it runs; plain processes have no limits.
    pub(super) async fn resize_executor(&mut self, key: &ExecKey) -> Result<(), String> {
        let Some((want, pids)) = self.executor_wanted(key) else {
            return Ok(());
        };
        let Some(handle) = self.executors.get(key).and_then(|e| e.handle.clone()) else {
            return Ok(());
        };
        let Handle::Isolated(c) = handle.as_ref() else {
            return Ok(());
        };
        let old = c.limits();
        let mut new = old.clone();
        if want.cpus_milli > 0 {
            new.cpus = Some(want.cpus());
        }
        if want.mem_bytes > 0 {
            new.memory_bytes = Some(want.mem_bytes);
        }
        new.pids_max = pids;
        let h = handle.clone();
        let result = tokio::task::spawn_blocking(move || match h.as_ref() {
            Handle::Isolated(c) => c.update_limits(&new).map_err(|e| e.to_string()),
            Handle::Plain(_) => Ok(new),
        })
        .await
        .map_err(|e| format!("the limit update did not complete: {e}"))?;
        let applied = result?;
        if applied != old {
            tracing::info!(executor = %key.1, cpus = ?applied.cpus,
                memory = %applied.memory_bytes.map(size).unwrap_or_else(|| "none".into()),
                pids = applied.pids_max, "executor container limits changed");
            self.checkpoint_executor(key);
        }
        Ok(())
    }

    pub(super) fn checkpoint_executor(&self, key: &ExecKey) {
        let Some(e) = self.executors.get(key) else {
            return;
        };
        let cp = ExecutorCheckpoint {
            version: CHECKPOINT_VERSION,
            framework: e.framework.clone(),
            info: e.info.clone(),
            sandbox: e.sandbox.clone(),
            socket: e.socket.clone(),
            uid: e.uid,
            gid: e.gid,
            container: e.handle.as_ref().and_then(|h| h.record()),
            shutting_down: e.shutting_down,
        };
        if let Err(err) = self.executor_checkpoints.save(&key_str(key), &cp) {
            tracing::error!(executor = %key.1, error = %err, "cannot checkpoint an executor; it may be lost if the agent restarts");
        }
    }

    /// Fails a group of tasks without starting anything.
    async fn fail_tasks(
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
    async fn fail_launch(&mut self, ids: &[TaskId], message: &str) {
        let (state, reason) = (TaskState::Failed, StatusReason::ContainerLaunchFailed);
        self.fail_tasks(ids, state, reason, message).await;
    }

    /// RunTasks with an executor: launch it (if not running) with the tasks, or hand the tasks
    /// to the running one.
    pub(super) async fn run_executor_tasks(
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
    async fn launch_executor(
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

    fn executor_spec(
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

    pub(super) async fn on_executor_launched(
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

    fn watch_executor(&self, key: ExecKey, handle: Arc<Handle>) {
        self.watch(handle, |result| Event::ExecutorExited { key, result });
    }

    /// Stops listening, removes the socket and the checkpoint.
    fn forget_executor(&mut self, key: &ExecKey) -> Option<Executor> {
        let e = self.executors.remove(key)?;
        e.listener.abort();
        let _ = std::fs::remove_file(&e.socket);
        self.executor_checkpoints.remove(&key_str(key));
        Some(e)
    }

    pub(super) async fn on_executor_exited(
        &mut self,
        key: ExecKey,
        result: Result<ExitInfo, String>,
    ) {
        let Some(mut e) = self.forget_executor(&key) else {
            return;
        };
        let ids = self.live_executor_tasks(&key);
        match &result {
            Ok(exit) => {
                tracing::info!(executor = %key.1, code = ?exit.code, signal = ?exit.signal,
                    oom_killed = exit.oom_killed, live_tasks = ids.len(), "executor exited")
            }
            Err(err) => {
                tracing::warn!(executor = %key.1, error = %err, "lost track of an executor")
            }
        }
        for id in ids {
            let killed = self.tasks.get(&id).is_some_and(|t| t.kill_requested);
            let exec = Some(key.1.clone());
            match &result {
                Ok(exit) if exit.oom_killed => {
                    let limit = exit
                        .limitation
                        .as_ref()
                        .map(|l| l.limit)
                        .filter(|l| *l > 0)
                        .or_else(|| {
                            e.handle
                                .as_ref()
                                .and_then(|h| h.record())
                                .and_then(|r| r.limits.memory_bytes)
                        })
                        .unwrap_or(0);
                    let peak = exit
                        .limitation
                        .as_ref()
                        .and_then(|l| l.peak)
                        .map(|p| format!(" (peak {})", size(p)))
                        .unwrap_or_default();
                    let msg = format!(
                        "the container of executor {} hit its memory limit of {}{peak}: the \
                         kernel's OOM killer ran and every task in the container was killed",
                        key.1,
                        size(limit)
                    );
                    let limitation = exit.limitation.clone();
                    self.update(&id, TaskState::Failed, |s| {
                        s.reason = Some(StatusReason::MemoryLimit);
                        s.message = Some(msg);
                        s.limitation = limitation;
                        s.signal = exit.signal;
                        s.executor_id = exec;
                    })
                    .await;
                }
                _ if killed => {
                    self.update(&id, TaskState::Killed, |s| {
                        s.reason = Some(StatusReason::KilledByFramework);
                        s.message = Some("killed with its executor".to_owned());
                        s.executor_id = exec;
                    })
                    .await;
                }
                Ok(exit) => {
                    let how = match (exit.code, exit.signal) {
                        (Some(c), _) => format!("exited with code {c}"),
                        (None, Some(s)) => format!("was killed by signal {s}"),
                        (None, None) => "ended".to_owned(),
                    };
                    let msg = format!("executor {} {how} before the task ended", key.1);
                    self.update(&id, TaskState::Failed, |s| {
                        s.reason = Some(StatusReason::ExecutorTerminated);
                        s.message = Some(msg);
                        s.executor_id = exec;
                    })
                    .await;
                }
                Err(err) => {
                    let msg = format!("lost track of executor {}: {err}", key.1);
                    self.update(&id, TaskState::Failed, |s| {
                        s.reason = Some(StatusReason::ExecutorTerminated);
                        s.message = Some(msg);
                        s.executor_id = exec;
                    })
                    .await;
                }
            }
        }
        if let Some(handle) = e.handle.take() {
            tokio::task::spawn_blocking(move || destroy(handle));
        }
    }

    /// A connection on an executor's socket: checked against the executor's user and
    /// container before anything is read from it.
    pub(super) async fn on_executor_connection(&mut self, key: ExecKey, stream: UnixStream) {
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

    pub(super) fn on_executor_closed(&mut self, key: ExecKey, conn: u64, reason: String) {
        if let Some(e) = self.executors.get_mut(&key) {
            if e.conn.as_ref().is_some_and(|c| c.id == conn) {
                tracing::info!(executor = %key.1, %reason, "executor disconnected");
                e.conn = None;
            }
        }
    }

    /// Queues a frame to the executor's subscribed connection; false if there is none.
    fn send_executor(&mut self, key: &ExecKey, msg: AgentToExecutor) -> bool {
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
    fn send_launch(&mut self, key: &ExecKey, task_id: &TaskId) {
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

    pub(super) async fn on_executor_frame(
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
    async fn apply_executor_update(&mut self, key: &ExecKey, u: ExecutorUpdate) {
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

    /// An executor without a live task is shut down: the master has freed its resources.
    fn shutdown_if_idle(&mut self, key: &ExecKey) {
        if self.live_executor_tasks(key).is_empty() {
            self.shutdown_executor(key, "it has no task left");
        }
    }

    /// Asks the executor to exit; its container is killed after the grace period.
    pub(super) fn shutdown_executor(&mut self, key: &ExecKey, why: &str) {
        let grace = self.config.kill_grace;
        let Some(e) = self.executors.get_mut(key) else {
            return;
        };
        if e.shutting_down {
            return;
        }
        e.shutting_down = true;
        let instance = e.instance;
        tracing::info!(executor = %key.1, why, "shutting down executor");
        for id in self.live_executor_tasks(key) {
            if let Some(t) = self.tasks.get_mut(&id) {
                t.kill_requested = true;
            }
            self.checkpoint(&id);
        }
        self.checkpoint_executor(key);
        let sent = self.send_executor(
            key,
            AgentToExecutor::Shutdown {
                grace_ms: grace.as_millis() as u64,
            },
        );
        let wait = if sent { grace + KILL_MARGIN } else { grace };
        let events = self.events.clone();
        let key = key.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = events
                .send(Event::ExecutorShutdownTimeout { key, instance })
                .await;
        });
    }

    pub(super) fn on_executor_shutdown_timeout(&mut self, key: ExecKey, instance: u64) {
        if self
            .executors
            .get(&key)
            .is_some_and(|e| e.instance == instance)
        {
            tracing::info!(executor = %key.1, "executor did not exit within its grace period; killing its container");
            self.kill_executor_container(&key, Duration::ZERO);
        }
    }

    /// SIGTERM then SIGKILL to every process of the executor's container (off the loop).
    fn kill_executor_container(&self, key: &ExecKey, grace: Duration) {
        let Some(handle) = self.executors.get(key).and_then(|e| e.handle.clone()) else {
            return;
        };
        tokio::task::spawn_blocking(move || {
            if let Err(e) = handle.kill(grace) {
                tracing::warn!(error = %e, "cannot kill an executor's container");
            }
        });
    }

    /// Kill of an executor's task: the executor kills it; the container if it does not in time.
    pub(super) async fn kill_executor_task(
        &mut self,
        key: ExecKey,
        task_id: &TaskId,
        grace: Duration,
    ) {
        let subscribed = self
            .executors
            .get(&key)
            .and_then(|e| e.conn.as_ref())
            .is_some_and(|c| c.subscribed);
        if !self.executors.contains_key(&key) {
            let exec = Some(key.1.clone());
            self.update(task_id, TaskState::Killed, |s| {
                s.reason = Some(StatusReason::KilledByFramework);
                s.message = Some("killed; its executor is gone".to_owned());
                s.executor_id = exec;
            })
            .await;
            return;
        }
        tracing::info!(task = %task_id, executor = %key.1, ?grace, "asking the executor to kill a task");
        if subscribed {
            self.send_executor(
                &key,
                AgentToExecutor::KillTask {
                    task_id: task_id.clone(),
                    grace_ms: Some(grace.as_millis() as u64),
                },
            );
        }
        let events = self.events.clone();
        let task_id = task_id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace + KILL_MARGIN).await;
            let _ = events
                .send(Event::ExecutorKillTimeout { key, task_id })
                .await;
        });
    }

    pub(super) fn on_executor_kill_timeout(&mut self, key: ExecKey, task_id: TaskId) {
        let live = self
            .tasks
            .get(&task_id)
            .is_some_and(|t| !t.state.is_terminal());
        if live && self.executors.contains_key(&key) {
            tracing::warn!(task = %task_id, executor = %key.1, "the executor did not kill its task in time; killing the executor's container");
            self.kill_executor_container(&key, Duration::ZERO);
        }
    }

    pub(super) fn on_framework_message(&mut self, key: ExecKey, data: Vec<u8>) {
        if !self.send_executor(&key, AgentToExecutor::Message { data }) {
            tracing::debug!(executor = %key.1, "dropping a framework message for an executor that is not connected");
        }
    }

    /// Re-attaches to the executors of the checkpoints on disk and listens on their sockets
    /// again. Runs before task recovery, which needs them.
    pub(super) async fn recover_executors(&mut self) {
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
    pub(super) async fn after_recovery(&mut self) {
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
    pub(super) async fn destroy_executors(&mut self) {
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
