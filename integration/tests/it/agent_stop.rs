//! Stopping an agent: SIGTERM ends it within seconds whatever its tasks do (they keep running and
//! a new agent re-attaches them), and an agent whose work directory the task user cannot reach
//! refuses to start.

use integration::{is_root, Cluster};
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

#[test]
fn sigterm_ends_the_agent_within_seconds_and_a_new_agent_reports_the_task_once() {
    let test = "sigterm_ends_the_agent_within_seconds_and_a_new_agent_reports_the_task_once";
    if skip_unless_root(test, "tasks that outlive their agent run in cgroups") {
        return;
    }
    let mut c = Cluster::start_master(&[]);
    let a = c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    // A production agent: its tasks outlive it.
    c.keep_tasks_on_stop(a);
    c.restart_agent(a);
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
    let took = stopped_at.elapsed();
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
