//! The example frameworks of `examples/` (written with the Rust SDK, the `framework` crate)
//! against a real cluster: the batch framework runs each of its N tasks exactly once, holds no
//! offers while nothing is pending, and retries a failed task after reviving offers; the
//! service framework keeps K instances running when an instance's process is killed and when
//! its agent is lost, and kills the stale copy when the agent comes back.

use integration::{shared_dir, Cluster, Daemon};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const EXIT: Duration = Duration::from_secs(90);
const WAIT: Duration = Duration::from_secs(45);

/// An example framework as the framework certificate `fw`, logging to the cluster's directory.
fn spawn_example(c: &Cluster, program: &str, args: &[&str]) -> Daemon {
    let mut full = vec!["--master".to_owned(), c.masters_flag()];
    full.extend(c.certs.flags("fw"));
    full.extend(args.iter().map(|s| s.to_string()));
    Daemon::spawn_program(program, program, &full, c.dir.path())
}

/// Polls until `pred` holds for the daemon's log; fails with the log after `WAIT`.
fn wait_log(d: &Daemon, what: &str, pred: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = d.log_text();
        if pred(&text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never showed {what}; its log:\n{text}",
            d.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lines of a file tasks append to, sorted (none if it does not exist yet).
fn lines(path: &Path) -> Vec<String> {
    let mut l: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    l.sort();
    l
}

/// The framework named `name` in a state, if registered.
fn framework<'a>(state: &'a Value, name: &str) -> Option<&'a Value> {
    state["frameworks"]
        .as_array()?
        .iter()
        .find(|f| f["name"] == name)
}

/// Ids of the tasks of framework `fw` in state `Running`.
fn running(state: &Value, fw: &Value) -> Vec<String> {
    let mut ids: Vec<String> = state["tasks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter(|t| t["framework_id"] == fw["id"] && t["state"] == "Running")
                .filter_map(|t| t["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Suppressed and holding no offers: what a framework with nothing pending should be.
fn idle(fw: &Value) -> bool {
    fw["suppressed"] == true && fw["offered"]["cpus_milli"] == 0 && fw["offered"]["mem_bytes"] == 0
}

#[test]
fn the_batch_framework_runs_each_task_exactly_once_and_suppresses_when_nothing_is_pending() {
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:1;mem:1GiB"]);
    c.start_agent("a2", &["--resources", "cpus:1;mem:1GiB"]);
    let shared = shared_dir("batch-");
    let d = shared.path().display().to_string();
    // Each task waits for the go file, so the test sees all of them running at once.
    let command =
        format!("while [ ! -e {d}/go ]; do sleep 0.05; done; echo $BATCH_TASK_INDEX >> {d}/ran");
    let mut batch = spawn_example(
        &c,
        "batch-framework",
        &[
            "--tasks",
            "12",
            "--cpus",
            "0.1",
            "--command",
            &command,
            "--name",
            "etl",
        ],
    );
    // 12 tasks of 0.1 cpu: more than one agent's offer holds, so both agents' offers are used.
    let state = c.wait_state("12 etl tasks running and the framework suppressed", |s| {
        framework(s, "etl").is_some_and(|f| running(s, f).len() == 12 && idle(f))
    });
    let fw = framework(&state, "etl").expect("the framework");
    let agents: std::collections::BTreeSet<&str> = state["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["framework_id"] == fw["id"])
        .filter_map(|t| t["agent_id"].as_str())
        .collect();
    assert_eq!(agents.len(), 2, "the tasks used both agents: {state:#}");
    assert!(batch
        .log_text()
        .contains("nothing pending: suppressing offers"));

    std::fs::write(shared.path().join("go"), b"").expect("write the go file");
    let status = batch.wait_exit(EXIT);
    let log = batch.log_text();
    assert!(status.success(), "the batch failed: {status}\n{log}");
    assert!(log.contains("all 12 tasks finished"), "{log}");
    let mut want: Vec<String> = (0..12).map(|i| i.to_string()).collect();
    want.sort();
    assert_eq!(
        lines(&shared.path().join("ran")),
        want,
        "every task ran exactly once"
    );
    // It tore itself down: no longer a registered framework.
    c.wait_state("the batch framework removed", |s| {
        framework(s, "etl").is_none()
    });
}

#[test]
fn the_batch_framework_retries_a_failed_task_after_reviving_and_reports_the_failure() {
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:1;mem:1GiB"]);
    let shared = shared_dir("batch-fail-");
    let d = shared.path().display().to_string();
    // Task 2 fails every time; the others succeed.
    let command = format!(
        "echo $BATCH_TASK_INDEX-$BATCH_ATTEMPT >> {d}/runs; [ $BATCH_TASK_INDEX != 2 ] || exit 3"
    );
    let mut batch = spawn_example(
        &c,
        "batch-framework",
        &["--tasks", "4", "--attempts", "2", "--command", &command],
    );
    let status = batch.wait_exit(EXIT);
    let log = batch.log_text();
    assert_eq!(
        status.code(),
        Some(1),
        "a failed task fails the batch: {log}"
    );
    assert!(
        log.contains("task 2 failed: failed (exit code 3)"),
        "the failure is reported with its exit code: {log}"
    );
    assert!(log.contains("3 of 4 tasks finished, 1 failed"), "{log}");
    // All four fit in the first offer: it suppressed, and the retry had to revive.
    let suppressed = log.find("nothing pending: suppressing offers");
    let revived = log.find("work appeared: reviving offers");
    assert!(
        suppressed.is_some() && revived.is_some() && suppressed < revived,
        "suppressed, then revived for the retry: {log}"
    );
    assert_eq!(
        lines(&shared.path().join("runs")),
        ["0-1", "1-1", "2-1", "2-2", "3-1"],
        "each task once, the failing one twice (its two attempts)"
    );
}

/// The host pid of the process of task `task_id` that runs `comm` (found by the
/// `SERVICE_TASK_ID` the service framework puts in its tasks' environment).
fn task_process(task_id: &str, comm: &str) -> Option<i32> {
    let marker = format!("SERVICE_TASK_ID={task_id}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let environ = std::fs::read(e.path().join("environ")).ok()?;
        let has = environ.split(|&b| b == 0).any(|v| v == marker.as_bytes());
        let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (has && name.trim() == comm).then_some(pid)
    })
}

/// Waits until framework `name` has `k` running tasks, holds no offers and is suppressed, and
/// returns them.
fn wait_instances(c: &Cluster, name: &str, k: usize, what: &str) -> Vec<String> {
    let state = c.wait_state(what, |s| {
        framework(s, name).is_some_and(|f| running(s, f).len() == k && idle(f))
    });
    running(&state, framework(&state, name).expect("the framework"))
}

/// A master (with `master_args`), two agents of one cpu each, and the service framework
/// keeping `instances` instances of a sleeper named `name`; each start appends the task id to
/// `starts` in the returned shared directory.
fn start_service(
    master_args: &[&str],
    instances: usize,
    name: &str,
) -> (Cluster, tempfile::TempDir, Daemon) {
    let mut c = Cluster::start_master(master_args);
    c.start_agent("a1", &["--resources", "cpus:1;mem:1GiB"]);
    c.start_agent("a2", &["--resources", "cpus:1;mem:1GiB"]);
    let shared = shared_dir(&format!("service-{name}-"));
    let d = shared.path().display().to_string();
    let command = format!("echo $SERVICE_TASK_ID >> {d}/starts; exec sleep 600");
    let k = instances.to_string();
    let service = spawn_example(
        &c,
        "service-framework",
        &["--instances", &k, "--command", &command, "--name", name],
    );
    (c, shared, service)
}

#[test]
fn the_service_framework_relaunches_an_instance_whose_process_was_killed() {
    let (c, shared, mut service) = start_service(&[], 3, "web");
    let first = wait_instances(&c, "web", 3, "3 web instances running");
    assert_eq!(first, ["web-0-0", "web-1-0", "web-2-0"]);

    // Kill instance 1's process from outside (as a crash or the OOM killer would).
    let deadline = Instant::now() + WAIT;
    let pid = loop {
        if let Some(pid) = task_process("web-1-0", "sleep") {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "no process of web-1-0 found in /proc"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the instance's process");

    wait_log(&service, "instance 1 relaunched", |l| {
        l.lines()
            .any(|x| x.starts_with("instance 1: web-1-0 failed") && x.ends_with("relaunching"))
            && l.contains("instance 1: web-1-1 running")
    });
    let again = wait_instances(&c, "web", 3, "3 web instances running again");
    assert_eq!(again, ["web-0-0", "web-1-1", "web-2-0"]);
    assert_eq!(
        lines(&shared.path().join("starts")),
        ["web-0-0", "web-1-0", "web-1-1", "web-2-0"],
        "only the killed instance started again, once"
    );

    // SIGTERM: the framework tears itself down and its tasks are killed.
    service.stop();
    c.wait_state("the service's tasks gone", |s| {
        framework(s, "web").is_none()
            && s["tasks"]
                .as_array()
                .is_some_and(|ts| !ts.iter().any(|t| t["state"] == "Running"))
    });
}

#[test]
fn the_service_framework_relaunches_the_instances_of_a_lost_agent_and_kills_their_stale_copies() {
    let (mut c, _shared, mut service) = start_service(&["--agent-timeout-secs", "2"], 2, "api");
    let first = wait_instances(&c, "api", 2, "2 api instances running");
    assert_eq!(first, ["api-0-0", "api-1-0"]);
    // Spread over the agents: one instance each.
    let state = c.state_json();
    let agent_of = |task: &str| -> String {
        state["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == task)
            .and_then(|t| t["agent_id"].as_str())
            .expect("the task's agent")
            .to_owned()
    };
    assert_ne!(agent_of("api-0-0"), agent_of("api-1-0"), "{state:#}");
    let lost = state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .position(|a| a["id"].as_str() == Some(agent_of("api-0-0").as_str()))
        .expect("the agent of api-0-0");
    let lost_index = if state["agents"][lost]["hostname"] == "a1" {
        0
    } else {
        1
    };

    // SIGKILL: the agent vanishes and its task goes on running, as on a partitioned node.
    c.agents[lost_index].kill();
    wait_log(
        &service,
        "instance 0 relaunched after its agent was lost",
        |l| {
            l.contains("instance 0: api-0-0 unreachable")
                && l.contains("instance 0: api-0-1 running")
        },
    );
    let moved = wait_instances(&c, "api", 2, "2 api instances running on the other agent");
    assert_eq!(moved, ["api-0-1", "api-1-0"]);

    // The agent comes back with api-0-0 still running: the framework kills the stale copy.
    c.restart_agent(lost_index);
    wait_log(&service, "the stale copy killed", |l| {
        l.contains("api-0-0 is stale: killing it")
    });
    let state = c.wait_state("api-0-0 killed and 2 instances running", |s| {
        let stale_gone = s["tasks"].as_array().is_some_and(|ts| {
            !ts.iter()
                .any(|t| t["id"] == "api-0-0" && t["state"] == "Running")
        });
        stale_gone && framework(s, "api").is_some_and(|f| running(s, f).len() == 2)
    });
    let fw = framework(&state, "api").expect("the framework");
    assert_eq!(running(&state, fw), ["api-0-1", "api-1-0"]);
    service.stop();
    c.wait_state("the service's tasks gone", |s| {
        s["tasks"]
            .as_array()
            .is_some_and(|ts| !ts.iter().any(|t| t["state"] == "Running"))
    });
}
