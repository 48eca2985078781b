//! Stopping an agent: SIGTERM ends it within seconds whatever its tasks do (they keep running and
//! a new agent re-attaches them), and an agent whose work directory the task user cannot reach
//! refuses to start.

use integration::{corral, is_root, scratch_dir, stderr, wait_child, Certs, Cluster};
use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::{Duration, Instant};

fn skip_unless_root(test: &str, why: &str) -> bool {
    if !is_root() {
        eprintln!("skipping {test}: {why}, which needs root");
        return true;
    }
    false
}

/// Host pids of processes whose command line contains `needle` (as one argument).
fn pids_with_arg(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|b| *b == 0).any(|a| a == needle.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// Starts agent "a1" as in production: its tasks outlive it (no `--cleanup-on-exit`).
fn production_agent(c: &mut Cluster, extra: &[&str]) -> usize {
    let mut args = vec!["--resources", "cpus:2;mem:1GiB"];
    args.extend_from_slice(extra);
    let a = c.start_agent("a1", &args);
    c.keep_tasks_on_stop(a);
    c.restart_agent(a);
    a
}

/// SIGTERMs agent `a` and waits until it exited, failing after 5 s; returns how long it took.
fn sigterm_and_wait(c: &mut Cluster, a: usize) -> Duration {
    let stopped_at = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.agents[a].pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the agent");
    while c.agents[a].is_running() {
        assert!(
            stopped_at.elapsed() < Duration::from_secs(5),
            "the agent still runs 5 s after SIGTERM; its log:\n{}",
            c.agents[a].log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stopped_at.elapsed()
}

#[test]
fn sigterm_ends_the_agent_within_seconds_and_a_new_agent_reports_the_task_once() {
    let test = "sigterm_ends_the_agent_within_seconds_and_a_new_agent_reports_the_task_once";
    if skip_unless_root(test, "tasks that outlive their agent run in cgroups") {
        return;
    }
    let mut c = Cluster::start_master(&[]);
    let a = production_agent(&mut c, &[]);
    let marker = crate::agent_recovery::marker_dir(&c).join("starts");
    // A sleep length no other process uses, to find the task's process on the host.
    let nap = format!("14.{}", std::process::id());
    let cmd = format!(
        "echo started >> {}; sleep {nap}; echo done",
        marker.display()
    );
    let run = c.spawn_client("fw", &["run", "--", &cmd]);
    c.agents[a].wait_for_log("state=TASK_RUNNING", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids_with_arg(&nap).is_empty() {
        assert!(Instant::now() < deadline, "the task's sleep never appeared");
        std::thread::sleep(Duration::from_millis(50));
    }

    let took = sigterm_and_wait(&mut c, a);
    eprintln!("the agent exited {took:?} after SIGTERM");
    assert!(
        c.agents[a]
            .log_text()
            .contains("agent stopping; tasks keep running"),
        "{}",
        c.agents[a].log_text()
    );
    assert!(
        !pids_with_arg(&nap).is_empty(),
        "the task's process died with its agent"
    );

    c.restart_agent(a);
    crate::agent_recovery::reattached_and_finished_once(&c, a, run, &marker);
}

/// A temporary directory under `scratch_dir` that the task user may enter.
fn traversable_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("corral-it-")
        .tempdir_in(scratch_dir())
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// `corral agent` with certificates and a master address (nothing listens there: these agents
/// must not get that far), run to its end.
fn agent_exit(
    dir: &std::path::Path,
    work_dir: &std::path::Path,
    extra: &[&str],
) -> (Output, Duration) {
    let certs = Certs::new(&dir.join("certs"));
    certs.issue("agent", "a1");
    let mut args: Vec<String> = vec![
        "agent".into(),
        "--master".into(),
        format!("127.0.0.1:{}", integration::free_port()),
        "--work-dir".into(),
        work_dir.display().to_string(),
        "--cgroup-parent".into(),
        format!("corral-it-stop-{}", std::process::id()),
    ];
    args.extend(certs.flags("a1"));
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let out = corral(&refs, &[], Duration::from_secs(30));
    (out, started.elapsed())
}

#[test]
fn an_agent_whose_work_dir_the_task_user_cannot_reach_refuses_to_start() {
    let test = "an_agent_whose_work_dir_the_task_user_cannot_reach_refuses_to_start";
    if skip_unless_root(test, "tasks run as nobody only under an agent") {
        return;
    }
    let dir = traversable_dir();
    // What `mktemp -d` makes.
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).expect("mkdir");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let (out, took) = agent_exit(dir.path(), &locked.join("work"), &[]);
    let err = stderr(&out);
    eprintln!("the agent exited {took:?} after its start: {err}");
    assert!(!out.status.success(), "the agent started:\n{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let locked = locked.canonicalize().expect("canonical");
    assert!(
        err.contains(&format!("{} (mode 0700", locked.display())),
        "{err}"
    );
    assert!(err.contains("task user nobody"), "{err}");
}

#[test]
fn the_systemd_cgroup_driver_is_refused_where_systemd_cannot_hold_the_tasks() {
    let test = "the_systemd_cgroup_driver_is_refused_where_systemd_cannot_hold_the_tasks";
    if skip_unless_root(test, "the agent manages cgroups") {
        return;
    }
    if std::path::Path::new("/run/systemd/system").is_dir() {
        eprintln!("skipping {test}: systemd is the init here, and may hold the tasks");
        return;
    }
    let dir = traversable_dir();
    let (out, _) = agent_exit(
        dir.path(),
        &dir.path().join("work"),
        &["--cgroup-driver", "systemd"],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "the agent started:\n{err}");
    assert!(err.contains("--cgroup-driver systemd: "), "{err}");
}

#[test]
fn a_kill_cut_short_by_the_agents_stop_is_finished_by_the_next_agent() {
    let test = "a_kill_cut_short_by_the_agents_stop_is_finished_by_the_next_agent";
    if skip_unless_root(test, "tasks that outlive their agent run in cgroups") {
        return;
    }
    let mut c = Cluster::start_master(&[]);
    let slow = c.dir.path().join("slow-kill.toml");
    std::fs::write(&slow, "kill_grace_secs = 60\n").expect("write");
    let a = production_agent(&mut c, &["--config", slow.to_str().expect("utf-8")]);
    // The task ignores SIGTERM: only the SIGKILL after the grace period ends it.
    let nap = format!("90.{}", std::process::id());
    let cmd = format!("trap '' TERM; sleep {nap}");
    let run = c.spawn_client("fw", &["run", "--name", "stubborn", "--", &cmd]);
    let s = c.wait_state("a running task", |s| s["tasks"][0]["state"] == "Running");
    let id = s["tasks"][0]["id"].as_str().expect("task id").to_owned();
    let out = c.client("op", &["kill", &id], Duration::from_secs(30));
    assert!(out.status.success(), "{}", stderr(&out));
    c.agents[a].wait_for_log("killing task", Duration::from_secs(10));

    // The agent stops within its 60 s grace period: the kill is cut short.
    sigterm_and_wait(&mut c, a);
    assert!(!pids_with_arg(&nap).is_empty(), "the task is already gone");

    // The next agent (with a short grace) finishes the kill, which the master sends again when
    // the agent re-registers with the task.
    let quick = c.dir.path().join("quick-kill.toml");
    std::fs::write(&quick, "kill_grace_secs = 1\n").expect("write");
    c.restart_agent_with(a, &[("--config", quick.to_str().expect("utf-8"))]);
    let out = wait_child(run, Duration::from_secs(40));
    let err = stderr(&out);
    assert!(err.contains("TASK_KILLED"), "stderr:\n{err}");
    assert!(pids_with_arg(&nap).is_empty(), "the task still runs");
}
