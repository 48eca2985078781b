//! A command task's life: admission, launch, exit, acknowledgement, forgetting.

use crate::running;
use agent_core::testing::{task, Harness};
use agent_core::{Action, Exit};
use proto::{StatusReason, TaskId, TaskState};

#[test]
fn a_task_starts_runs_and_finishes() {
    let mut h = running("cpus:4;mem:1GiB");
    h.exit("t1", Exit::code(0));
    assert_eq!(h.states("t1").last(), Some(&TaskState::Finished));
    let last = h.last("t1").expect("status");
    assert_eq!(last.reason, Some(StatusReason::CommandExited));
    assert_eq!(last.exit_code, Some(0));
    assert!(h
        .log
        .iter()
        .any(|a| matches!(a, Action::Destroy { task_id } if task_id.as_str() == "t1")));
}

#[test]
fn a_failing_exit_code_fails_the_task() {
    let mut h = running("cpus:4;mem:1GiB");
    h.exit("t1", Exit::code(3));
    let last = h.last("t1").expect("status");
    assert_eq!(last.state, TaskState::Failed);
    assert_eq!(last.message.as_deref(), Some("exited with code 3"));
}

#[test]
fn a_task_killed_by_a_signal_fails_naming_it() {
    let mut h = running("cpus:4;mem:1GiB");
    h.exit("t1", Exit::signal(11));
    let last = h.last("t1").expect("status");
    assert_eq!((last.state, last.signal), (TaskState::Failed, Some(11)));
}

#[test]
fn the_running_update_says_the_pid_and_carries_the_agent_id() {
    let h = running("cpus:4;mem:1GiB");
    let running = &h.received[&TaskId::new("t1")][1];
    assert_eq!(running.message.as_deref(), Some("running as pid 100"));
    assert_eq!(running.agent_id.as_ref().map(|a| a.as_str()), Some("a1"));
    assert!(running.timestamp_ms >= 1_700_000_000_000);
}

#[test]
fn a_task_larger_than_what_is_free_is_refused_with_task_error() {
    let mut h = Harness::new("cpus:1;mem:128MiB");
    h.run("f", vec![task("big", "cpus:2;mem:64MiB")]);
    let last = h.last("big").expect("status");
    assert_eq!(last.state, TaskState::Error);
    assert_eq!(last.reason, Some(StatusReason::ResourcesUnavailable));
    assert!(h.actions(|a| matches!(a, Action::Launch { .. })).is_empty());
}

#[test]
fn running_tasks_hold_resources_until_they_end() {
    let mut h = Harness::new("cpus:2;mem:1GiB");
    h.run("f", vec![task("a", "cpus:1"), task("b", "cpus:1")]);
    h.run("f", vec![task("c", "cpus:1")]);
    assert_eq!(h.states("c"), [TaskState::Error]);
    h.exit("a", Exit::code(0));
    h.run("f", vec![task("d", "cpus:1")]);
    assert_eq!(h.states("d")[0], TaskState::Starting);
}

#[test]
fn unsafe_ids_are_refused_as_invalid() {
    let mut h = Harness::new("cpus:2;mem:1GiB");
    h.run("f", vec![task("../etc", "cpus:1")]);
    let last = h.last("../etc").expect("status");
    assert_eq!(
        (last.state, last.reason),
        (TaskState::Error, Some(StatusReason::TaskInvalid))
    );
}

#[test]
fn a_launch_that_fails_fails_the_task() {
    let mut h = Harness::new("cpus:2;mem:1GiB");
    h.auto_launch = false;
    h.run("f", vec![task("t1", "cpus:1")]);
    h.fail_launch("t1", "no such user nobodyx");
    h.ack_until_quiet();
    let last = h.last("t1").expect("status");
    assert_eq!(last.state, TaskState::Failed);
    assert_eq!(last.reason, Some(StatusReason::ContainerLaunchFailed));
    assert_eq!(last.message.as_deref(), Some("no such user nobodyx"));
}

#[test]
fn a_launch_the_master_resends_is_ignored() {
    let mut h = running("cpus:4;mem:1GiB");
    let launches = h.actions(|a| matches!(a, Action::Launch { .. })).len();
    h.run("f", vec![task("t1", "cpus:1;mem:64MiB")]);
    assert_eq!(
        h.actions(|a| matches!(a, Action::Launch { .. })).len(),
        launches
    );
}

#[test]
fn an_acknowledged_ended_task_is_forgotten_and_remembered_for_logs() {
    let mut h = running("cpus:4;mem:1GiB");
    h.exit("t1", Exit::code(0));
    h.ack_until_quiet();
    assert!(h.core.task(&TaskId::new("t1")).is_none());
    assert!(!h.store.tasks.contains_key(&TaskId::new("t1")));
    assert!(h.core.finished().any(|(_, t, _)| t.as_str() == "t1"));
    assert_eq!(h.core.unacknowledged(), 0);
}

#[test]
fn an_ended_task_is_kept_until_its_last_update_is_acknowledged() {
    let mut h = running("cpus:4;mem:1GiB");
    h.exit("t1", Exit::code(0));
    assert!(h.core.task(&TaskId::new("t1")).is_some());
    assert!(h.store.tasks.contains_key(&TaskId::new("t1")));
}

#[test]
fn an_oom_killed_task_fails_with_the_memory_limit() {
    let mut h = running("cpus:4;mem:1GiB");
    let mut exit = Exit::signal(9);
    exit.oom_killed = true;
    h.exit("t1", exit);
    let last = h.last("t1").expect("status");
    assert_eq!(
        (last.state, last.reason),
        (TaskState::Failed, Some(StatusReason::MemoryLimit))
    );
    assert!(last
        .message
        .as_deref()
        .unwrap_or("")
        .contains("memory limit of 64MiB"));
}

#[test]
fn oom_kills_count_tasks_failed_at_their_memory_limit_only() {
    let mut h = running("cpus:4;mem:1GiB");
    assert_eq!(h.core.oom_kills(), 0);
    let mut exit = Exit::signal(9);
    exit.oom_killed = true;
    h.exit("t1", exit);
    assert_eq!(h.core.oom_kills(), 1);
    h.ack_until_quiet();
    h.run("f", vec![task("t2", "cpus:1;mem:64MiB")]);
    h.exit("t2", Exit::code(1));
    h.ack_until_quiet();
    assert_eq!(h.core.oom_kills(), 1, "a plain failure is no OOM kill");
}
