//! Custom executors through real processes: a framework launches a launch group under the
//! `test-executor` program (integration/src/bin/test-executor.rs), which the agent runs in one
//! container with the group's limits and hands the tasks to over its unix socket.

use framework::{ClientOptions, Scheduler, SchedulerEvent};
use integration::{is_root, stderr, stdout, Cluster};
use proto::{
    CommandInfo, ExecutorId, ExecutorInfo, Filters, FrameworkCall, FrameworkEvent, Offer,
    OfferOperation, Resources, StatusReason, StatusSource, TaskId, TaskInfo, TaskState, TaskStatus,
};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

fn skip_unless_root(test: &str) -> bool {
    if !is_root() {
        eprintln!(
            "skipping {test}: an executor's container needs cgroups, and its socket a user \
             switch, which need root"
        );
        return true;
    }
    false
}

/// The test executor, built with this package's binaries, copied once to a place every task
/// can see: containers get a private /tmp and /var/tmp, and the build may live under /tmp (or
/// under a directory the unprivileged task user cannot enter).
fn test_executor() -> String {
    static COPY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            integration::scratch_dir().join(format!("corral-test-executor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir for the test executor");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let dst = dir.join("test-executor");
        std::fs::copy(env!("CARGO_BIN_EXE_test-executor"), &dst).expect("copy the test executor");
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        dst.display().to_string()
    })
    .clone()
}

/// A master and one agent `a1` with `resources`, for a test that needs root (else None, with
/// the reason printed).
fn root_cluster(test: &str, resources: &str) -> Option<(Cluster, usize)> {
    if skip_unless_root(test) {
        return None;
    }
    transport::install_crypto_provider();
    let mut c = Cluster::start_master(&[]);
    let a = c.start_agent("a1", &["--resources", resources]);
    Some((c, a))
}

fn options(c: &Cluster, name: &str) -> ClientOptions {
    c.client_options(name)
}

fn res(s: &str) -> Resources {
    s.parse().expect("resources")
}

fn task(id: &str, offer: &Offer, cmd: &str) -> TaskInfo {
    TaskInfo {
        task_id: TaskId::new(id),
        name: id.into(),
        agent_id: offer.agent_id.clone(),
        resources: res("cpus:0.1;mem:32MiB"),
        command: CommandInfo::shell(cmd),
        container: Default::default(),
        kill_grace_ms: Some(1000),
        labels: Default::default(),
    }
}

fn executor(id: &str, program: &str) -> ExecutorInfo {
    ExecutorInfo {
        executor_id: ExecutorId::new(id),
        command: CommandInfo::argv(vec![program.to_owned()]),
        resources: res("cpus:0.1;mem:32MiB"),
        container: Default::default(),
    }
}

/// The first `*.sock` file under `dir`.
fn find_socket(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let ft = entry.file_type().ok()?;
        if ft.is_dir() {
            if let Some(p) = find_socket(&path) {
                return Some(p);
            }
        } else if path.extension().is_some_and(|e| e == "sock") {
            return Some(path);
        }
    }
    None
}

/// Runs the test executor outside the executor's container as `uid`, aimed at its socket.
fn impostor(socket: &std::path::Path, uid: u32, offer: &Offer) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(test_executor())
        .env_clear()
        .env("CORRAL_EXECUTOR_SOCKET", socket)
        .env("CORRAL_EXECUTOR_ID", "ex-talk")
        .env("CORRAL_FRAMEWORK_ID", offer.framework_id.as_str())
        .uid(uid)
        .gid(65534)
        .output()
        .expect("run the impostor")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

enum Got {
    Offers(Vec<Offer>),
    Update(TaskStatus),
    Message(Vec<u8>),
}

/// The next offers, task update (acknowledged) or executor message; None at the deadline.
async fn next(s: &mut Scheduler, deadline: Instant) -> Option<Got> {
    loop {
        let ev = tokio::time::timeout_at(deadline, s.next_event())
            .await
            .ok()??;
        match ev {
            SchedulerEvent::Framework(FrameworkEvent::Offers { offers }) => {
                return Some(Got::Offers(offers))
            }
            SchedulerEvent::Framework(FrameworkEvent::Update { status }) => {
                if let (Some(a), Some(u)) = (status.agent_id.clone(), status.uuid.clone()) {
                    s.call(FrameworkCall::Acknowledge {
                        agent_id: a,
                        task_id: status.task_id.clone(),
                        uuid: u,
                    })
                    .await
                    .ok()?;
                }
                return Some(Got::Update(status));
            }
            SchedulerEvent::Framework(FrameworkEvent::Message { data, .. }) => {
                return Some(Got::Message(data))
            }
            _ => {}
        }
    }
}

async fn decline_all(s: &mut Scheduler, offers: Vec<Offer>) {
    for o in offers {
        s.call(FrameworkCall::Decline {
            offer_ids: vec![o.id],
            filters: Some(Filters {
                refuse_seconds: Some(60.0),
            }),
        })
        .await
        .expect("decline");
    }
}

/// Subscribes, takes the first offer and launches `tasks` under `exec` with it.
async fn launch_group(
    c: &Cluster,
    name: &str,
    exec: ExecutorInfo,
    tasks: impl FnOnce(&Offer) -> Vec<TaskInfo>,
    deadline: Instant,
) -> (Scheduler, Offer) {
    let mut s = Scheduler::subscribe(options(c, "fw"), framework::framework_info(name))
        .await
        .expect("subscribe");
    let offer = accept_group(&mut s, exec, tasks, deadline).await;
    (s, offer)
}

/// Subscribes, launches task `id` running `cmd` under `exec` and waits until it runs.
async fn launch_running(
    c: &Cluster,
    name: &str,
    exec: ExecutorInfo,
    id: &str,
    cmd: &str,
    deadline: Instant,
) -> (Scheduler, Offer) {
    let (mut s, offer) = launch_group(c, name, exec, |o| vec![task(id, o, cmd)], deadline).await;
    until_running(&mut s, id, deadline).await;
    (s, offer)
}

/// Takes the next offer and launches `tasks` under `exec` with it (to a running executor, if
/// `exec` runs already).
async fn accept_group(
    s: &mut Scheduler,
    exec: ExecutorInfo,
    tasks: impl FnOnce(&Offer) -> Vec<TaskInfo>,
    deadline: Instant,
) -> Offer {
    let offer = loop {
        match next(s, deadline).await {
            Some(Got::Offers(mut o)) => break o.remove(0),
            Some(_) => {}
            None => panic!("no offer in time"),
        }
    };
    s.call(FrameworkCall::Accept {
        offer_ids: vec![offer.id.clone()],
        operations: vec![OfferOperation::LaunchGroup {
            executor: exec,
            tasks: tasks(&offer),
        }],
        filters: Some(Filters {
            refuse_seconds: Some(60.0),
        }),
    })
    .await
    .expect("accept");
    offer
}

/// Sends `data` to executor `executor_id` on the offer's agent.
async fn message(s: &mut Scheduler, offer: &Offer, executor_id: &str, data: &[u8]) {
    s.call(FrameworkCall::Message {
        agent_id: offer.agent_id.clone(),
        executor_id: ExecutorId::new(executor_id),
        data: data.to_vec(),
    })
    .await
    .expect("message");
}

/// Waits until task `id` is reported running (declining offers meanwhile); panics if a task
/// ends first.
async fn until_running(s: &mut Scheduler, id: &str, deadline: Instant) {
    loop {
        match next(s, deadline).await {
            Some(Got::Update(st))
                if st.task_id.as_str() == id && st.state == TaskState::Running =>
            {
                return
            }
            Some(Got::Update(st)) if st.state.is_terminal() => panic!("ended early: {st:?}"),
            Some(Got::Offers(o)) => decline_all(s, o).await,
            Some(_) => {}
            None => panic!("task {id} did not start in time"),
        }
    }
}

/// Kills task `id` and returns its terminal update.
async fn kill_and_wait(
    s: &mut Scheduler,
    offer: &Offer,
    id: &str,
    deadline: Instant,
) -> TaskStatus {
    s.call(FrameworkCall::Kill {
        task_id: TaskId::new(id),
        agent_id: Some(offer.agent_id.clone()),
        grace_ms: Some(1000),
    })
    .await
    .expect("kill");
    let updates = until_terminal(s, &[id], deadline).await;
    terminal(&updates, id)
}

/// Collects updates until every task in `ids` is terminal; returns each task's updates.
async fn until_terminal(
    s: &mut Scheduler,
    ids: &[&str],
    deadline: Instant,
) -> BTreeMap<String, Vec<TaskStatus>> {
    let mut seen: BTreeMap<String, Vec<TaskStatus>> = BTreeMap::new();
    loop {
        let done = ids.iter().all(|id| {
            seen.get(*id)
                .is_some_and(|v| v.iter().any(|st| st.state.is_terminal()))
        });
        if done {
            return seen;
        }
        match next(s, deadline).await {
            Some(Got::Update(st)) => seen.entry(st.task_id.to_string()).or_default().push(st),
            Some(Got::Offers(o)) => decline_all(s, o).await,
            Some(Got::Message(_)) => {}
            None => panic!("tasks {ids:?} did not all end in time; updates so far: {seen:#?}"),
        }
    }
}

fn terminal(updates: &BTreeMap<String, Vec<TaskStatus>>, id: &str) -> TaskStatus {
    updates[id]
        .iter()
        .find(|s| s.state.is_terminal())
        .cloned()
        .expect("a terminal update")
}

#[test]
fn a_custom_executor_runs_two_tasks_in_one_container() {
    let Some((c, a)) = root_cluster(
        "a_custom_executor_runs_two_tasks_in_one_container",
        "cpus:2;mem:1GiB",
    ) else {
        return;
    };
    runtime().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        let exec = executor("ex-echo", &test_executor());
        let (mut s, _) = launch_group(
            &c,
            "executors",
            exec,
            |o| vec![task("one", o, "echo one"), task("two", o, "echo two")],
            deadline,
        )
        .await;
        let updates = until_terminal(&mut s, &["one", "two"], deadline).await;
        for id in ["one", "two"] {
            let end = terminal(&updates, id);
            assert_eq!(end.state, TaskState::Finished, "{id}: {end:?}");
            assert_eq!(end.source, StatusSource::Executor, "{id}: {end:?}");
            assert_eq!(end.exit_code, Some(0), "{id}: {end:?}");
            assert_eq!(end.executor_id, Some(ExecutorId::new("ex-echo")));
            let states: Vec<TaskState> = updates[id].iter().map(|s| s.state).collect();
            assert!(
                states.contains(&TaskState::Running),
                "{id} was reported running by its executor: {states:?}"
            );
        }
    });
    // Each task wrote to its own sandbox inside the executor's, which `corral logs` reads.
    let out = c.client("fw", &["logs", "two"], Duration::from_secs(30));
    assert!(out.status.success(), "logs: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "two");
    // With no task left, the agent shuts the executor down and removes its container.
    c.agents[a].wait_for_log("executor exited", Duration::from_secs(30));
}

#[test]
fn an_executor_whose_socket_lives_outside_its_sandbox_still_reaches_it() {
    let Some((c, _)) = root_cluster(
        "an_executor_whose_socket_lives_outside_its_sandbox_still_reaches_it",
        "cpus:2;mem:1GiB",
    ) else {
        return;
    };
    // A sandbox path this long leaves no room for a unix socket address in it: the socket goes
    // to a directory of its own under the work directory, which the container (where the work
    // directory is hidden) gets bound in.
    let id = format!("ex-{}", "l".repeat(48));
    runtime().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        let exec = executor(&id, &test_executor());
        let (mut s, _) = launch_group(
            &c,
            "executor-long",
            exec,
            |o| vec![task("far", o, "echo far")],
            deadline,
        )
        .await;
        let updates = until_terminal(&mut s, &["far"], deadline).await;
        let end = terminal(&updates, "far");
        assert_eq!(end.state, TaskState::Finished, "{end:?}");
        assert_eq!(end.source, StatusSource::Executor, "{end:?}");
    });
    let work = c.dir.path().join("agent-a1");
    assert!(
        work.join("executor-sockets").is_dir(),
        "the socket was not moved out of the sandbox"
    );
}

#[test]
fn an_executor_relays_messages_and_kills_its_tasks() {
    let Some((c, _)) = root_cluster(
        "an_executor_relays_messages_and_kills_its_tasks",
        "cpus:2;mem:1GiB",
    ) else {
        return;
    };
    runtime().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        let exec = executor("ex-talk", &test_executor());
        let (mut s, offer) =
            launch_running(&c, "executor-talk", exec, "sleeper", "sleep 120", deadline).await;
        message(&mut s, &offer, "ex-talk", b"ping").await;
        loop {
            match next(&mut s, deadline).await {
                Some(Got::Message(data)) => {
                    assert_eq!(data, b"echo: ping".to_vec());
                    break;
                }
                Some(Got::Offers(o)) => decline_all(&mut s, o).await,
                Some(_) => {}
                None => panic!("no answer from the executor in time"),
            }
        }
        // Only the executor's own container may use its socket: the same program as the same
        // user, but outside the container, is refused. The work directory (0700) keeps any
        // other user's process from even reaching the socket's path...
        let work = c.dir.path().join("agent-a1");
        let socket = find_socket(&work).expect("the executor's socket");
        let out = impostor(&socket, 65534, &offer);
        assert!(
            !out.status.success(),
            "reached the socket: {}",
            stderr(&out)
        );
        // ...and were the path reachable, the agent's peer checks refuse it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        for uid in [0u32, 65534] {
            let out = impostor(&socket, uid, &offer);
            assert!(
                !out.status.success(),
                "uid {uid} was let in: {}",
                stderr(&out)
            );
        }
        std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        c.agents[0].wait_for_log("from another user", Duration::from_secs(10));
        c.agents[0].wait_for_log(
            "from a process outside the executor's container",
            Duration::from_secs(10),
        );
        let end = kill_and_wait(&mut s, &offer, "sleeper", deadline).await;
        assert_eq!(end.state, TaskState::Killed, "{end:?}");
        assert_eq!(
            end.source,
            StatusSource::Executor,
            "the executor killed it: {end:?}"
        );
    });
}

#[test]
fn a_memory_hog_in_an_executor_container_is_killed_and_reported() {
    let Some((c, _)) = root_cluster(
        "a_memory_hog_in_an_executor_container_is_killed_and_reported",
        "cpus:2;mem:2GiB",
    ) else {
        return;
    };
    runtime().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        let exec = executor("ex-hog", &test_executor());
        let (mut s, _) = launch_group(
            &c,
            "executor-hog",
            exec,
            |o| {
                vec![
                    task("idle", o, "sleep 120"),
                    // 512 MiB in one buffer: far beyond the container's 96 MiB.
                    task(
                        "hog",
                        o,
                        "sleep 1; dd if=/dev/zero of=/dev/null bs=512M count=1",
                    ),
                ]
            },
            deadline,
        )
        .await;
        let updates = until_terminal(&mut s, &["hog", "idle"], deadline).await;
        for id in ["hog", "idle"] {
            let end = terminal(&updates, id);
            assert_eq!(end.state, TaskState::Failed, "{id}: {end:?}");
            assert_eq!(end.reason, Some(StatusReason::MemoryLimit), "{id}: {end:?}");
            let lim = end.limitation.clone().expect("a memory limitation");
            // The executor's 32 MiB plus 32 MiB for each of the two tasks.
            assert_eq!(lim.limit, 96 << 20, "{id}: {lim:?}");
            let msg = end.message.clone().unwrap_or_default();
            assert!(
                msg.contains("memory limit") && msg.contains("ex-hog"),
                "{id}: the message names the executor's container and its limit: {msg}"
            );
        }
    });
}

#[test]
fn a_missing_executor_program_fails_its_tasks_and_the_agent_keeps_serving() {
    let Some((mut c, a)) = root_cluster(
        "a_missing_executor_program_fails_its_tasks_and_the_agent_keeps_serving",
        "cpus:2;mem:1GiB",
    ) else {
        return;
    };
    runtime().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        let exec = executor("ex-missing", "/nonexistent/corral-test-executor");
        let (mut s, _) = launch_group(
            &c,
            "executor-missing",
            exec,
            |o| vec![task("m1", o, "echo one"), task("m2", o, "echo two")],
            deadline,
        )
        .await;
        let updates = until_terminal(&mut s, &["m1", "m2"], deadline).await;
        for id in ["m1", "m2"] {
            let end = terminal(&updates, id);
            assert_eq!(end.state, TaskState::Failed, "{id}: {end:?}");
            assert_eq!(
                end.reason,
                Some(StatusReason::ContainerLaunchFailed),
                "{id}: {end:?}"
            );
            let msg = end.message.clone().unwrap_or_default();
            assert!(
                msg.contains("ex-missing") && msg.contains("/nonexistent/corral-test-executor"),
                "{id}: the message names the executor and its command: {msg}"
            );
        }
        s.teardown().await.expect("teardown");
    });
    assert!(c.agents[a].is_running(), "the agent survived");
    let out = c.client(
        "fw2",
        &["run", "--", "echo still serving"],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "run: {}", stderr(&out));
    assert!(stdout(&out).contains("still serving"), "{}", stdout(&out));
}

#[test]
fn an_executor_and_its_task_survive_a_kill_9_of_the_agent() {
    let Some((mut c, a)) = root_cluster(
        "an_executor_and_its_task_survive_a_kill_9_of_the_agent",
        "cpus:2;mem:1GiB",
    ) else {
        return;
    };
    let rt = runtime();
    let (mut s, deadline) = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        let exec = executor("ex-restart", &test_executor());
        let (s, _) = launch_running(
            &c,
            "executor-restart",
            exec,
            "survivor",
            "sleep 5; echo done",
            deadline,
        )
        .await;
        (s, deadline)
    });
    c.agents[a].kill();
    c.restart_agent(a);
    c.agents[a].wait_for_log("re-attached to a running executor", Duration::from_secs(10));
    // The executor reconnects to the socket the restarted agent listens on again.
    c.agents[a].wait_for_log("executor subscribed", Duration::from_secs(30));
    rt.block_on(async {
        let updates = until_terminal(&mut s, &["survivor"], deadline).await;
        let end = terminal(&updates, "survivor");
        assert_eq!(end.state, TaskState::Finished, "{end:?}");
        let finished = updates["survivor"]
            .iter()
            .filter(|st| st.state == TaskState::Finished)
            .count();
        assert_eq!(finished, 1, "reported once: {updates:#?}");
    });
    let out = c.client("fw", &["logs", "survivor"], Duration::from_secs(30));
    assert_eq!(stdout(&out).trim(), "done", "the task ran once, to its end");
}

#[test]
fn a_custom_executor_runs_as_a_plain_process_without_isolation() {
    // No cgroups and no user switch: runs as any user.
    transport::install_crypto_provider();
    let mut c = Cluster::start_master(&[]);
    c.start_agent(
        "a1",
        &["--resources", "cpus:2;mem:1GiB", "--isolation", "none"],
    );
    runtime().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        let exec = executor("ex-plain", &test_executor());
        let (mut s, _) = launch_group(
            &c,
            "executor-plain",
            exec,
            |o| vec![task("p1", o, "echo one"), task("p2", o, "exit 3")],
            deadline,
        )
        .await;
        let updates = until_terminal(&mut s, &["p1", "p2"], deadline).await;
        let p1 = terminal(&updates, "p1");
        assert_eq!(p1.state, TaskState::Finished, "{p1:?}");
        let p2 = terminal(&updates, "p2");
        assert_eq!(p2.state, TaskState::Failed, "{p2:?}");
        assert_eq!(p2.exit_code, Some(3), "{p2:?}");
        assert_eq!(p2.reason, Some(StatusReason::CommandExited), "{p2:?}");
    });
}

#[test]
fn tearing_down_a_framework_shuts_its_executor_down() {
    let Some((c, a)) = root_cluster(
        "tearing_down_a_framework_shuts_its_executor_down",
        "cpus:2;mem:1GiB",
    ) else {
        return;
    };
    runtime().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        let exec = executor("ex-down", &test_executor());
        let (s, _) = launch_running(&c, "executor-down", exec, "long", "sleep 300", deadline).await;
        s.teardown().await.expect("teardown");
    });
    c.agents[a].wait_for_log("its framework is shutting down", Duration::from_secs(20));
    c.agents[a].wait_for_log("executor exited", Duration::from_secs(20));
    let log = c.agents[a].log_text();
    assert!(
        log.contains("task=long state=TASK_KILLED"),
        "the task was killed with its executor:\n{log}"
    );
}

/// The memory limit file of the (one) executor container of agent `agent` (found through the
/// executor's checkpoint) and the limit that checkpoint records.
fn executor_memory_limit_file(c: &Cluster, agent: &str) -> (std::path::PathBuf, u64) {
    let dir = c
        .dir
        .path()
        .join(format!("agent-{agent}"))
        .join("meta/executors");
    let file = std::fs::read_dir(&dir)
        .expect("executor checkpoints")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("an executor checkpoint");
    let cp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("read checkpoint")).expect("JSON");
    let cgroups = &cp["container"]["cgroups"];
    let limit_file = match cgroups["unified"].as_str() {
        Some(d) => std::path::Path::new(d).join("memory.max"),
        None => std::path::Path::new(cgroups["memory"].as_str().expect("memory cgroup"))
            .join("memory.limit_in_bytes"),
    };
    let recorded = cp["container"]["limits"]["memory_bytes"]
        .as_u64()
        .expect("recorded limit");
    (limit_file, recorded)
}

/// The executor container's memory limit read from its cgroup file, and the checkpointed one.
fn executor_memory_limit(c: &Cluster, agent: &str) -> (u64, u64) {
    let (file, recorded) = executor_memory_limit_file(c, agent);
    let limit = std::fs::read_to_string(&file)
        .expect("read the memory limit")
        .trim()
        .parse()
        .expect("a number");
    (limit, recorded)
}

/// Polls until the executor container's limit (file and checkpoint) is `want`.
fn wait_memory_limit(c: &Cluster, agent: &str, want: u64, why: &str) {
    let start = std::time::Instant::now();
    loop {
        let got = executor_memory_limit(c, agent);
        if got == (want, want) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{why}: (cgroup file, checkpoint) = {got:?}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_running_executor_takes_more_tasks_and_its_container_grows_and_shrinks_with_them() {
    let Some((c, a)) = root_cluster(
        "a_running_executor_takes_more_tasks_and_its_container_grows_and_shrinks_with_them",
        "cpus:2;mem:1GiB",
    ) else {
        return;
    };
    runtime().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        let exec = executor("ex-grow", &test_executor());
        let (mut s, _) = launch_running(
            &c,
            "executor-grow",
            exec.clone(),
            "first",
            "sleep 120",
            deadline,
        )
        .await;
        // The executor's 32 MiB and the first task's 32 MiB.
        wait_memory_limit(&c, "a1", 64 << 20, "executor + first task");
        s.call(FrameworkCall::Revive { roles: vec![] })
            .await
            .expect("revive");
        let offer = accept_group(
            &mut s,
            exec,
            |o| {
                let mut hog = task(
                    "hog",
                    o,
                    "sleep 1; dd if=/dev/zero of=/dev/null bs=80M count=1",
                );
                hog.resources = res("cpus:0.1;mem:96MiB");
                vec![hog]
            },
            deadline,
        )
        .await;
        until_running(&mut s, "hog", deadline).await;
        // Raised before the executor was handed the task.
        assert_eq!(
            executor_memory_limit(&c, "a1"),
            (160 << 20, 160 << 20),
            "executor + first + hog"
        );
        // 80 MiB: over the 64 MiB the container had, within the raised 160 MiB.
        let updates = until_terminal(&mut s, &["hog"], deadline).await;
        let end = terminal(&updates, "hog");
        assert_eq!(
            end.state,
            TaskState::Finished,
            "the hog got its room: {end:?}"
        );
        assert_eq!(end.source, StatusSource::Executor, "{end:?}");
        assert_eq!(end.exit_code, Some(0), "{end:?}");
        // Lowered once the hog ended.
        wait_memory_limit(&c, "a1", 64 << 20, "after the hog ended");
        let end = kill_and_wait(&mut s, &offer, "first", deadline).await;
        assert_eq!(end.state, TaskState::Killed, "{end:?}");
    });
    let log = c.agents[a].log_text();
    assert_eq!(
        log.matches("launching executor").count(),
        1,
        "the second task went to the running executor:\n{log}"
    );
}

#[test]
fn an_executors_tasks_report_the_usage_of_its_container() {
    let Some((c, _)) = root_cluster(
        "an_executors_tasks_report_the_usage_of_its_container",
        "cpus:2;mem:1GiB",
    ) else {
        return;
    };
    let rt = runtime();
    let (mut s, offer, deadline) = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        let exec = executor("ex-usage", &test_executor());
        let (s, offer) =
            launch_running(&c, "executor-usage", exec, "busy", "sleep 120", deadline).await;
        (s, offer, deadline)
    });
    // The usage is the executor container's: its init, the executor and the task's process.
    let start = std::time::Instant::now();
    let usage = loop {
        let out = c.client("op", &["state", "--json"], Duration::from_secs(30));
        assert!(out.status.success(), "state: {}", stderr(&out));
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let usage = state["tasks"].as_array().and_then(|ts| {
            ts.iter()
                .find(|t| t["id"].as_str() == Some("busy"))
                .map(|t| t["usage"].clone())
        });
        if let Some(u) = usage.filter(|u| !u.is_null()) {
            break u;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no usage for the executor's task:\n{state:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        usage["pids_current"].as_u64().unwrap_or(0) >= 3,
        "init, executor and task: {usage}"
    );
    assert!(
        usage["mem_current_bytes"].as_u64().unwrap_or(0) > 1 << 20,
        "{usage}"
    );
    let out = c.client("op", &["state"], Duration::from_secs(30));
    let line = stdout(&out)
        .lines()
        .find(|l| l.trim_start().starts_with("busy"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(line.contains("mem ") && line.contains("pids "), "{line}");
    rt.block_on(async {
        let end = kill_and_wait(&mut s, &offer, "busy", deadline).await;
        assert_eq!(end.state, TaskState::Killed, "{end:?}");
    });
}

#[test]
fn a_restarted_agent_restores_the_raised_limits_of_an_executors_container() {
    let Some((mut c, a)) = root_cluster(
        "a_restarted_agent_restores_the_raised_limits_of_an_executors_container",
        "cpus:2;mem:1GiB",
    ) else {
        return;
    };
    let rt = runtime();
    let (mut s, offer, deadline) = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        let exec = executor("ex-keep", &test_executor());
        let (mut s, _) = launch_running(
            &c,
            "executor-keep",
            exec.clone(),
            "one",
            "sleep 120",
            deadline,
        )
        .await;
        s.call(FrameworkCall::Revive { roles: vec![] })
            .await
            .expect("revive");
        let offer = accept_group(
            &mut s,
            exec,
            |o| vec![task("two", o, "sleep 120")],
            deadline,
        )
        .await;
        until_running(&mut s, "two", deadline).await;
        (s, offer, deadline)
    });
    // Launched with 64 MiB (executor + one), raised to 96 MiB for two.
    wait_memory_limit(&c, "a1", 96 << 20, "executor + two tasks");
    c.agents[a].kill();
    // Something changes the limit while the agent is down.
    let (file, _) = executor_memory_limit_file(&c, "a1");
    std::fs::write(&file, (80u64 << 20).to_string()).expect("change the limit");
    c.restart_agent(a);
    c.agents[a].wait_for_log("re-attached to a running executor", Duration::from_secs(10));
    // Restored to the raised value, not the launch value nor the changed one.
    wait_memory_limit(&c, "a1", 96 << 20, "after the restart");
    rt.block_on(async {
        for id in ["one", "two"] {
            let end = kill_and_wait(&mut s, &offer, id, deadline).await;
            assert_eq!(end.state, TaskState::Killed, "{id}: {end:?}");
        }
    });
}

/// Socket descriptors the process `pid` holds.
fn socket_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// The first file under `dir` whose path ends with `suffix`.
fn find_file(dir: &std::path::Path, suffix: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if entry.file_type().ok()?.is_dir() {
            if let Some(p) = find_file(&path, suffix) {
                return Some(p);
            }
        } else if path.to_string_lossy().ends_with(suffix) {
            return Some(path);
        }
    }
    None
}

/// A process in an executor's container that opens connection after connection to its socket
/// (each replacing the last) costs the agent nothing per connection: a replaced connection's
/// reader and writer end and its descriptor closes, and the executor reconnects and goes on.
#[test]
fn connections_an_executor_replaces_are_closed_by_the_agent() {
    let Some((c, a)) = root_cluster(
        "connections_an_executor_replaces_are_closed_by_the_agent",
        "cpus:2;mem:1GiB",
    ) else {
        return;
    };
    const HOARD: usize = 200;
    let agent_pid = c.agents[a].pid();
    runtime().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        let exec = executor("ex-hoard", &test_executor());
        let before = socket_fds(agent_pid);
        let cmd = format!("{} hoard {HOARD}", test_executor());
        let (mut s, offer) = launch_running(&c, "hoard", exec, "hoard", &cmd, deadline).await;
        // Wait until the hoarder holds its connections.
        let out = loop {
            let text = find_file(c.dir.path(), "tasks/hoard/stdout")
                .and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default();
            if text.contains("hoarded") {
                break text;
            }
            assert!(Instant::now() < deadline, "the hoarder did not connect");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(out.contains(&format!("hoarded {HOARD}")), "{out}");
        // The agent catches up with the connections (they queue behind one another): within
        // 10 s it must hold no more than a few sockets beyond what it held before.
        let settle = Instant::now() + Duration::from_secs(10);
        loop {
            let held = socket_fds(agent_pid);
            if held < before + 20 {
                break;
            }
            assert!(
                Instant::now() < settle,
                "the agent holds {held} sockets (before: {before}) while a task holds {HOARD} \
                 connections to its executor's socket"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The executor reconnected and still works: its task is killed and reported.
        let end = kill_and_wait(&mut s, &offer, "hoard", deadline).await;
        assert_eq!(end.state, TaskState::Killed, "{end:?}");
    });
    assert!(c.agents[a].log_text().contains("executor subscribed"));
}

/// An executor that sends a task's states back and forth (STARTING, RUNNING, STARTING...) is
/// not followed: the task's state only moves forward, so the framework sees no update of it
/// and the agent writes no checkpoint per flip.
#[test]
fn an_executor_cannot_move_a_task_backwards() {
    let Some((c, _)) = root_cluster(
        "an_executor_cannot_move_a_task_backwards",
        "cpus:2;mem:1GiB",
    ) else {
        return;
    };
    runtime().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        let exec = executor("ex-flap", &test_executor());
        let (mut s, offer) =
            launch_running(&c, "executor-flap", exec, "flapper", "sleep 120", deadline).await;
        message(&mut s, &offer, "ex-flap", b"flap flapper 40").await;
        let mut seen = Vec::new();
        // Updates for a while after the executor's answer (each is acknowledged).
        let quiet = loop {
            match next(&mut s, deadline).await {
                Some(Got::Message(data)) if data == b"flapped" => {
                    break Instant::now() + Duration::from_secs(2);
                }
                Some(Got::Update(st)) => seen.push(st.state),
                Some(Got::Offers(o)) => decline_all(&mut s, o).await,
                Some(_) => {}
                None => panic!("no answer from the executor in time"),
            }
        };
        while let Some(got) = next(&mut s, quiet).await {
            match got {
                Got::Update(st) => seen.push(st.state),
                Got::Offers(o) => decline_all(&mut s, o).await,
                Got::Message(_) => {}
            }
        }
        assert!(
            seen.is_empty(),
            "the framework was sent the executor's flips: {seen:?}"
        );
        let end = kill_and_wait(&mut s, &offer, "flapper", deadline).await;
        assert_eq!(end.state, TaskState::Killed, "{end:?}");
    });
    c.agents[0].wait_for_log("moved a task's state backwards", Duration::from_secs(10));
}
