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
/// can see: containers get a private /tmp, and the build may live under /tmp (or under a
/// directory the unprivileged task user cannot enter).
fn test_executor() -> String {
    static COPY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::path::PathBuf::from(format!(
            "/var/tmp/corral-test-executor-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("mkdir for the test executor");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let dst = dir.join("test-executor");
        std::fs::copy(env!("CARGO_BIN_EXE_test-executor"), &dst).expect("copy the test executor");
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        dst.display().to_string()
    })
    .clone()
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
    let offer = loop {
        match next(&mut s, deadline).await {
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
    (s, offer)
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
    if skip_unless_root("a_custom_executor_runs_two_tasks_in_one_container") {
        return;
    }
    transport::install_crypto_provider();
    let mut c = Cluster::start_master(&[]);
    let a = c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
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
fn an_executor_relays_messages_and_kills_its_tasks() {
    if skip_unless_root("an_executor_relays_messages_and_kills_its_tasks") {
        return;
    }
    transport::install_crypto_provider();
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    runtime().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        let exec = executor("ex-talk", &test_executor());
        let (mut s, offer) = launch_group(
            &c,
            "executor-talk",
            exec,
            |o| vec![task("sleeper", o, "sleep 120")],
            deadline,
        )
        .await;
        loop {
            match next(&mut s, deadline).await {
                Some(Got::Update(st)) if st.state == TaskState::Running => break,
                Some(Got::Update(st)) if st.state.is_terminal() => panic!("ended early: {st:?}"),
                Some(Got::Offers(o)) => decline_all(&mut s, o).await,
                Some(_) => {}
                None => panic!("the sleeper did not start in time"),
            }
        }
        s.call(FrameworkCall::Message {
            agent_id: offer.agent_id.clone(),
            executor_id: ExecutorId::new("ex-talk"),
            data: b"ping".to_vec(),
        })
        .await
        .expect("message");
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
        // user, but outside the container, is refused.
        let socket = find_socket(&c.dir.path().join("agent-a1")).expect("the executor's socket");
        for uid in [0u32, 65534] {
            let out = impostor(&socket, uid, &offer);
            assert!(
                !out.status.success(),
                "uid {uid} was let in: {}",
                stderr(&out)
            );
        }
        c.agents[0].wait_for_log("from another user", Duration::from_secs(10));
        c.agents[0].wait_for_log(
            "from a process outside the executor's container",
            Duration::from_secs(10),
        );
        s.call(FrameworkCall::Kill {
            task_id: TaskId::new("sleeper"),
            agent_id: Some(offer.agent_id.clone()),
            grace_ms: Some(1000),
        })
        .await
        .expect("kill");
        let updates = until_terminal(&mut s, &["sleeper"], deadline).await;
        let end = terminal(&updates, "sleeper");
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
    if skip_unless_root("a_memory_hog_in_an_executor_container_is_killed_and_reported") {
        return;
    }
    transport::install_crypto_provider();
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:2;mem:2GiB"]);
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
    if skip_unless_root("a_missing_executor_program_fails_its_tasks_and_the_agent_keeps_serving") {
        return;
    }
    transport::install_crypto_provider();
    let mut c = Cluster::start_master(&[]);
    let a = c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
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
    if skip_unless_root("an_executor_and_its_task_survive_a_kill_9_of_the_agent") {
        return;
    }
    transport::install_crypto_provider();
    let mut c = Cluster::start_master(&[]);
    let a = c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let rt = runtime();
    let (mut s, deadline) = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        let exec = executor("ex-restart", &test_executor());
        let (mut s, _) = launch_group(
            &c,
            "executor-restart",
            exec,
            |o| vec![task("survivor", o, "sleep 5; echo done")],
            deadline,
        )
        .await;
        loop {
            match next(&mut s, deadline).await {
                Some(Got::Update(st)) if st.state == TaskState::Running => break,
                Some(Got::Update(st)) if st.state.is_terminal() => panic!("ended early: {st:?}"),
                Some(Got::Offers(o)) => decline_all(&mut s, o).await,
                Some(_) => {}
                None => panic!("the task did not start in time"),
            }
        }
        (s, deadline)
    });
    c.agents[a].kill();
    std::thread::sleep(Duration::from_millis(500));
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
fn a_running_executor_takes_more_tasks_over_its_socket() {
    if skip_unless_root("a_running_executor_takes_more_tasks_over_its_socket") {
        return;
    }
    transport::install_crypto_provider();
    let mut c = Cluster::start_master(&[]);
    let a = c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    runtime().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        let exec = executor("ex-more", &test_executor());
        let (mut s, _) = launch_group(
            &c,
            "executor-more",
            exec.clone(),
            |o| vec![task("first", o, "sleep 120")],
            deadline,
        )
        .await;
        loop {
            match next(&mut s, deadline).await {
                Some(Got::Update(st)) if st.state == TaskState::Running => break,
                Some(Got::Update(st)) if st.state.is_terminal() => panic!("ended early: {st:?}"),
                Some(Got::Offers(o)) => decline_all(&mut s, o).await,
                Some(_) => {}
                None => panic!("the first task did not start in time"),
            }
        }
        s.call(FrameworkCall::Revive { roles: vec![] })
            .await
            .expect("revive");
        let offer = loop {
            match next(&mut s, deadline).await {
                Some(Got::Offers(mut o)) => break o.remove(0),
                Some(_) => {}
                None => panic!("no second offer in time"),
            }
        };
        s.call(FrameworkCall::Accept {
            offer_ids: vec![offer.id.clone()],
            operations: vec![OfferOperation::LaunchGroup {
                executor: exec,
                tasks: vec![task("later", &offer, "echo later")],
            }],
            filters: Some(Filters {
                refuse_seconds: Some(60.0),
            }),
        })
        .await
        .expect("accept");
        let updates = until_terminal(&mut s, &["later"], deadline).await;
        let end = terminal(&updates, "later");
        assert_eq!(end.state, TaskState::Finished, "{end:?}");
        assert_eq!(end.source, StatusSource::Executor, "{end:?}");
        s.call(FrameworkCall::Kill {
            task_id: TaskId::new("first"),
            agent_id: Some(offer.agent_id.clone()),
            grace_ms: Some(1000),
        })
        .await
        .expect("kill");
        let updates = until_terminal(&mut s, &["first"], deadline).await;
        assert_eq!(terminal(&updates, "first").state, TaskState::Killed);
    });
    let log = c.agents[a].log_text();
    assert_eq!(
        log.matches("launching executor").count(),
        1,
        "the second task went to the running executor:\n{log}"
    );
}

#[test]
fn tearing_down_a_framework_shuts_its_executor_down() {
    if skip_unless_root("tearing_down_a_framework_shuts_its_executor_down") {
        return;
    }
    transport::install_crypto_provider();
    let mut c = Cluster::start_master(&[]);
    let a = c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    runtime().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        let exec = executor("ex-down", &test_executor());
        let (mut s, _) = launch_group(
            &c,
            "executor-down",
            exec,
            |o| vec![task("long", o, "sleep 300")],
            deadline,
        )
        .await;
        loop {
            match next(&mut s, deadline).await {
                Some(Got::Update(st)) if st.state == TaskState::Running => break,
                Some(Got::Update(st)) if st.state.is_terminal() => panic!("ended early: {st:?}"),
                Some(Got::Offers(o)) => decline_all(&mut s, o).await,
                Some(_) => {}
                None => panic!("the task did not start in time"),
            }
        }
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
