//! Input the real master never sends, sent to a real agent by a test that plays the master:
//! real QUIC with mutual TLS, a master certificate made by `corral certs issue`, and the wire
//! protocol of `proto`. The agent must answer with a clear status, keep running and leave its
//! other tasks alone.

use integration::{Certs, Daemon};
use proto::{
    AgentId, AgentToMaster, ClientFrame, CommandInfo, ExecutorId, ExecutorInfo, FrameworkId,
    FrameworkSummary, MasterToAgent, Resources, Role, ServerFrame, StatusReason, TaskId, TaskInfo,
    TaskState, TaskStatus,
};
use std::time::Duration;
use tokio::time::Instant;
use transport::{FramedRecv, FramedSend};

/// The master's side of one agent session.
struct FakeMaster {
    tx: FramedSend<ServerFrame>,
    rx: FramedRecv<ClientFrame>,
    framework: FrameworkSummary,
    agent_id: AgentId,
    _conn: transport::Connection,
}

impl FakeMaster {
    async fn send(&mut self, msg: MasterToAgent) {
        self.tx.send(&ServerFrame::Agent(msg)).await.expect("send");
    }

    /// Kills task `id` with a grace period of 500 ms.
    async fn kill(&mut self, id: &str) {
        let framework_id = self.framework.id.clone();
        self.send(MasterToAgent::KillTask {
            framework_id,
            task_id: TaskId::new(id),
            grace_ms: Some(500),
        })
        .await;
    }

    async fn run(&mut self, executor: Option<ExecutorInfo>, tasks: Vec<TaskInfo>) {
        let framework = self.framework.clone();
        self.send(MasterToAgent::RunTasks {
            framework,
            executor,
            tasks,
        })
        .await;
    }

    fn task(&self, id: &str, resources: &str, cmd: &str) -> TaskInfo {
        TaskInfo {
            task_id: TaskId::new(id),
            name: id.into(),
            agent_id: self.agent_id.clone(),
            resources: resources.parse::<Resources>().expect("resources"),
            command: CommandInfo::shell(cmd),
            container: Default::default(),
            kill_grace_ms: Some(500),
            labels: Default::default(),
        }
    }

    /// The next status update (acknowledged, as the master relays a framework's ack), or None
    /// when `deadline` passes first. Heartbeats and usage reports are skipped.
    async fn next_update(&mut self, deadline: Instant) -> Option<TaskStatus> {
        loop {
            let frame = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .ok()?;
            match frame
                .expect("the agent's stream")
                .expect("the agent hung up")
            {
                ClientFrame::Agent(AgentToMaster::StatusUpdate {
                    framework_id,
                    status,
                }) => {
                    let uuid = status.uuid.clone().expect("updates carry a uuid");
                    self.send(MasterToAgent::AcknowledgeUpdate {
                        framework_id,
                        task_id: status.task_id.clone(),
                        uuid,
                    })
                    .await;
                    return Some(status);
                }
                _ => continue,
            }
        }
    }

    /// Updates until task `id` reaches `state`; panics on a deadline or a terminal update of
    /// `id` that is not `state`.
    async fn until(&mut self, id: &str, state: TaskState, deadline: Instant) -> TaskStatus {
        loop {
            let st = self
                .next_update(deadline)
                .await
                .unwrap_or_else(|| panic!("no {state} for {id} in time"));
            if st.task_id.as_str() != id {
                continue;
            }
            if st.state == state {
                return st;
            }
            assert!(!st.state.is_terminal(), "{id} ended as {st:?}");
        }
    }
}

/// A fake master's endpoint and a real agent `a1` (cpus:1;mem:256MiB) aimed at it. `prepare`
/// runs on the agent's work directory path before the agent starts (e.g. to mount it).
struct Setup {
    // Drops in order: the agent first, the directory last.
    agent: Daemon,
    endpoint: transport::Endpoint,
    rt: tokio::runtime::Runtime,
    work: std::path::PathBuf,
    mount: Option<integration::Tmpfs>,
    _dir: tempfile::TempDir,
}

fn setup(prepare: impl FnOnce(&std::path::Path) -> Option<integration::Tmpfs>) -> Setup {
    transport::install_crypto_provider();
    let dir = tempfile::Builder::new()
        .prefix("corral-it-input-")
        .tempdir_in(integration::scratch_dir())
        .expect("tempdir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    let certs = Certs::new(&dir.path().join("certs"));
    certs.issue("master", "m1");
    certs.issue("agent", "a1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let identity = transport::Identity::load(&transport::TlsFiles {
        ca: certs.ca(),
        cert: certs.cert("m1"),
        key: certs.key("m1"),
    })
    .expect("the master identity");
    let endpoint = transport::server_endpoint("127.0.0.1:0".parse().expect("addr"), &identity)
        .expect("listen");
    let addr = endpoint.local_addr().expect("local addr");
    let work = dir.path().join("agent-a1");
    let mount = prepare(&work);
    let mut args: Vec<String> = [
        "agent",
        "--master",
        &addr.to_string(),
        "--work-dir",
        &work.display().to_string(),
        "--hostname",
        "a1",
        "--resources",
        "cpus:1;mem:256MiB",
        "--cleanup-on-exit",
        "--cgroup-parent",
        dir.path()
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(certs.flags("a1"));
    let agent = Daemon::spawn("agent-a1", &args, dir.path());
    drop(_guard);
    Setup {
        agent,
        endpoint,
        rt,
        work,
        mount,
        _dir: dir,
    }
}

/// Accepts the agent's connection and registers it, as a master would.
async fn accept_agent(endpoint: &transport::Endpoint, deadline: Instant) -> FakeMaster {
    let incoming = tokio::time::timeout_at(deadline, endpoint.accept())
        .await
        .expect("the agent connects in time")
        .expect("an incoming connection");
    let (conn, peer) = transport::accept(incoming).await.expect("handshake");
    assert_eq!(peer.role, Role::Agent, "{peer}");
    let (mut tx, mut rx) =
        transport::accept_framed::<ServerFrame, ClientFrame>(&conn, proto::MAX_FRAME_LEN)
            .await
            .expect("the agent's stream");
    let Some(ClientFrame::Agent(AgentToMaster::Register { info, .. })) =
        rx.recv().await.expect("register")
    else {
        panic!("the agent's first frame is not Register");
    };
    assert_eq!(info.resources.cpus_milli, 1000, "{}", info.resources);
    let agent_id = AgentId::new("fake-agent-1");
    tx.send(&ServerFrame::Agent(MasterToAgent::Registered {
        agent_id: agent_id.clone(),
        heartbeat_interval_ms: 500,
    }))
    .await
    .expect("registered");
    FakeMaster {
        tx,
        rx,
        framework: FrameworkSummary {
            id: FrameworkId::new("fw-input"),
            name: "input".into(),
            principal: "fw".into(),
        },
        agent_id,
        _conn: conn,
    }
}

#[test]
fn a_launch_larger_than_the_agents_free_resources_is_refused_and_nothing_else_changes() {
    let mut s = setup(|_| None);
    s.rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut m = accept_agent(&s.endpoint, deadline).await;

        let small = m.task("small", "cpus:0.5;mem:64MiB", "sleep 60");
        m.run(None, vec![small]).await;
        m.until("small", TaskState::Running, deadline).await;

        // Far beyond the whole agent.
        let huge = m.task("huge", "cpus:8;mem:64GiB", "echo never");
        m.run(None, vec![huge]).await;
        let st = m.until("huge", TaskState::Error, deadline).await;
        assert_eq!(
            st.reason,
            Some(StatusReason::ResourcesUnavailable),
            "{st:?}"
        );
        let msg = st.message.clone().unwrap_or_default();
        assert!(
            msg.contains("asks for") && msg.contains("free"),
            "the message says what was asked and what is free: {msg}"
        );
        // Within the agent's total, but not with the running task's share taken.
        let tight = m.task("tight", "cpus:0.75;mem:128MiB", "echo never");
        m.run(None, vec![tight]).await;
        let st = m.until("tight", TaskState::Error, deadline).await;
        assert_eq!(
            st.reason,
            Some(StatusReason::ResourcesUnavailable),
            "{st:?}"
        );
        // A launch group whose executor and task together do not fit.
        let exec = ExecutorInfo {
            executor_id: ExecutorId::new("ex-big"),
            command: CommandInfo::shell("sleep 60"),
            resources: "cpus:0.25;mem:32MiB".parse().expect("resources"),
            container: Default::default(),
        };
        let grouped = m.task("grouped", "cpus:0.5;mem:64MiB", "echo never");
        m.run(Some(exec), vec![grouped]).await;
        let st = m.until("grouped", TaskState::Error, deadline).await;
        assert_eq!(
            st.reason,
            Some(StatusReason::ResourcesUnavailable),
            "{st:?}"
        );
        assert!(
            st.message
                .clone()
                .unwrap_or_default()
                .contains("launch group"),
            "{st:?}"
        );

        // The running task is untouched: no update of it, and it still answers a kill.
        let quiet = Instant::now() + Duration::from_secs(2);
        while let Some(st) = m.next_update(quiet).await {
            assert_ne!(
                st.task_id.as_str(),
                "small",
                "the running task changed: {st:?}"
            );
        }
        m.kill("small").await;
        let st = m.until("small", TaskState::Killed, deadline).await;
        assert_eq!(st.reason, Some(StatusReason::KilledByFramework), "{st:?}");
    });
    assert!(s.agent.is_running(), "the agent survived the bad launches");
    let log = s.agent.log_text();
    assert!(
        !log.contains("launching executor"),
        "nothing of the refused group was started:\n{log}"
    );
}

/// The agent's work directory fills up mid-run: a checkpoint that cannot be written leaves the
/// previous one intact and no partial file behind, says so in the log, and the agent keeps
/// running and reporting; with space again it checkpoints as before.
#[test]
fn a_full_work_dir_keeps_the_previous_checkpoints_and_the_agent_running() {
    if !integration::is_root() {
        eprintln!(
            "skipping a_full_work_dir_keeps_the_previous_checkpoints: mounting a tmpfs needs root"
        );
        return;
    }
    let mut s = setup(|work| Some(integration::Tmpfs::mount(work, "8m")));
    let tasks_dir = s.work.join("meta").join("tasks");
    let checkpoint = tasks_dir.join("fw-input.keep.json");
    let files = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    s.rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut m = accept_agent(&s.endpoint, deadline).await;
        let keep = m.task("keep", "cpus:0.25;mem:32MiB", "sleep 60");
        m.run(None, vec![keep]).await;
        m.until("keep", TaskState::Running, deadline).await;
        assert!(checkpoint.exists(), "the running task is checkpointed");

        let filler = s.mount.as_ref().expect("mounted").fill();
        m.kill("keep").await;
        // Nothing is lost: the update still comes (it is in memory and resent until acked).
        let st = m.until("keep", TaskState::Killed, deadline).await;
        assert_eq!(st.reason, Some(StatusReason::KilledByFramework), "{st:?}");
        let log = s.agent.log_text();
        assert!(
            log.contains("cannot checkpoint a task") && log.contains("No space left on device"),
            "the agent says it could not checkpoint and why:\n{log}"
        );
        // Atomic replace: the previous checkpoint is whole (or the task, acknowledged, is
        // forgotten), and no partial temporary file holds on to the full disk.
        let after = std::fs::read_to_string(&checkpoint).unwrap_or_default();
        assert!(
            after.is_empty()
                || serde_json::from_str::<serde_json::Value>(&after)
                    .is_ok_and(|v| v["info"]["task_id"] == "keep"),
            "the checkpoint was damaged: {after}"
        );
        let leftovers: Vec<String> = files(&tasks_dir)
            .into_iter()
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "partial checkpoints left behind: {leftovers:?}"
        );

        // Space again: the next task is checkpointed as usual.
        std::fs::remove_file(&filler).expect("remove the filler");
        let next = m.task("next", "cpus:0.25;mem:32MiB", "sleep 60");
        m.run(None, vec![next]).await;
        m.until("next", TaskState::Running, deadline).await;
        let cp = std::fs::read_to_string(tasks_dir.join("fw-input.next.json"))
            .expect("the next task's checkpoint");
        assert!(cp.contains("\"next\""), "{cp}");
    });
    assert!(s.agent.is_running(), "the agent survived the full disk");
}
