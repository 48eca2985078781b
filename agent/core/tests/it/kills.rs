//! Kills: of a running task, during its launch, before it started, of an ended task, and of
//! a framework's tasks.

use crate::running;
use agent_core::testing::{task, Harness};
use agent_core::{Action, Exit};
use proto::{FrameworkId, MasterToAgent, StatusReason, TaskId, TaskState};
use std::time::Duration;

fn kills(h: &Harness) -> Vec<(String, Duration)> {
    h.log
        .iter()
        .filter_map(|a| match a {
            Action::Kill { task_id, grace } => Some((task_id.to_string(), *grace)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_killed_running_task_ends_killed_by_the_framework() {
    let mut h = running("cpus:4;mem:1GiB");
    h.kill("f", "t1");
    assert_eq!(kills(&h), [("t1".to_owned(), Duration::from_secs(3))]);
    assert!(h.store.tasks[&TaskId::new("t1")].kill_requested);
    h.exit("t1", Exit::signal(15));
    let last = h.last("t1").expect("status");
    assert_eq!(
        (last.state, last.reason),
        (TaskState::Killed, Some(StatusReason::KilledByFramework))
    );
}

#[test]
fn a_kill_during_launch_is_sent_once_the_container_runs() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.auto_launch = false;
    h.run("f", vec![task("t1", "cpus:1")]);
    h.kill("f", "t1");
    assert!(
        kills(&h).is_empty(),
        "killed a container that does not exist yet"
    );
    assert!(
        h.store.tasks[&TaskId::new("t1")].kill_requested,
        "the kill is not durable"
    );
    h.complete_launches();
    h.drain();
    assert_eq!(kills(&h).len(), 1);
    h.exit("t1", Exit::signal(15));
    h.ack_until_quiet();
    assert_eq!(
        h.states("t1"),
        [TaskState::Starting, TaskState::Running, TaskState::Killed]
    );
}

#[test]
fn a_kill_during_a_launch_that_fails_ends_the_task_once() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.auto_launch = false;
    h.run("f", vec![task("t1", "cpus:1")]);
    h.kill("f", "t1");
    h.fail_launch("t1", "exec failed");
    h.ack_until_quiet();
    assert_eq!(h.states("t1"), [TaskState::Starting, TaskState::Failed]);
    assert!(kills(&h).is_empty());
}

#[test]
fn the_masters_grace_overrides_the_tasks_which_overrides_the_agents() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    let mut t = task("own", "cpus:1");
    t.kill_grace_ms = Some(7000);
    h.run("f", vec![t, task("plain", "cpus:1")]);
    h.kill("f", "own");
    h.kill("f", "plain");
    h.master(MasterToAgent::KillTask {
        framework_id: FrameworkId::new("f"),
        task_id: TaskId::new("own"),
        grace_ms: Some(1),
    });
    assert_eq!(
        kills(&h),
        [
            ("own".to_owned(), Duration::from_secs(7)),
            ("plain".to_owned(), Duration::from_secs(3)),
            ("own".to_owned(), Duration::from_millis(1)),
        ]
    );
}

#[test]
fn a_kill_of_an_ended_or_unknown_task_does_nothing() {
    let mut h = running("cpus:4;mem:1GiB");
    h.exit("t1", Exit::code(0));
    let before = h.log.len();
    h.kill("f", "t1");
    h.kill("f", "nope");
    assert!(h.log[before..].is_empty(), "{:?}", &h.log[before..]);
}

#[test]
fn an_exit_after_a_kill_is_killed_even_with_code_zero() {
    let mut h = running("cpus:4;mem:1GiB");
    h.kill("f", "t1");
    h.exit("t1", Exit::code(0));
    assert_eq!(h.last("t1").map(|s| s.state), Some(TaskState::Killed));
}

#[test]
fn shutting_a_framework_down_kills_its_tasks_only() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.run("f", vec![task("a", "cpus:1")]);
    h.run("g", vec![task("b", "cpus:1")]);
    h.master(MasterToAgent::ShutdownFramework {
        framework_id: FrameworkId::new("f"),
    });
    assert_eq!(kills(&h), [("a".to_owned(), Duration::from_secs(3))]);
}
