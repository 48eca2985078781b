//! Custom executors: one container sized to the executor plus its live tasks, grown before a
//! task is handed over and shrunk after one ended; the protocol; kills and shutdowns with
//! timeouts; the end of every task when the container ends.

use agent_core::testing::{executor, task, Harness};
use agent_core::{Action, Exit, Limits};
use proto::{
    AgentToExecutor, AgentToMaster, ExecutorId, ExecutorToAgent, ExecutorUpdate, FrameworkId,
    MasterToAgent, StatusReason, StatusSource, TaskId, TaskState,
};
use std::time::Duration;

type Key = (FrameworkId, ExecutorId);

fn key() -> Key {
    (FrameworkId::new("f"), ExecutorId::new("ex"))
}

fn subscribe(known: &[&str]) -> ExecutorToAgent {
    ExecutorToAgent::Subscribe {
        framework_id: key().0,
        executor_id: key().1,
        tasks: known.iter().map(|t| TaskId::new(*t)).collect(),
        unacknowledged: Vec::new(),
    }
}

fn update(id: &str, state: TaskState) -> ExecutorToAgent {
    ExecutorToAgent::Update(ExecutorUpdate {
        task_id: TaskId::new(id),
        state,
        reason: None,
        message: None,
        exit_code: None,
        signal: None,
    })
}

fn mem(h: &Harness) -> u64 {
    h.core
        .executor_limits(&key())
        .map(|l| l.resources.mem_bytes)
        .expect("limits")
}

/// An executor (32 MiB) subscribed, running task `t1` (64 MiB).
fn with_executor() -> Harness {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.run_in(
        "f",
        executor("ex", "cpus:0.1;mem:32MiB"),
        vec![task("t1", "cpus:1;mem:64MiB")],
    );
    h.from_executor(&key(), subscribe(&[]));
    h.from_executor(&key(), update("t1", TaskState::Running));
    h.ack_until_quiet();
    h
}

fn resizes(h: &Harness) -> Vec<u64> {
    h.log
        .iter()
        .filter_map(|a| match a {
            Action::ResizeExecutor { limits, .. } => Some(limits.resources.mem_bytes),
            _ => None,
        })
        .collect()
}

#[test]
fn an_executor_is_launched_with_its_tasks_and_hands_them_over_at_subscription() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    let mut t = task("t1", "cpus:1;mem:64MiB");
    t.container.pids_limit = Some(50);
    h.run_in("f", executor("ex", "cpus:0.1;mem:32MiB"), vec![t]);
    let launch = h.log.iter().find_map(|a| match a {
        Action::LaunchExecutor { limits, .. } => Some(limits.clone()),
        _ => None,
    });
    let Limits { resources, pids } = launch.expect("executor launched");
    assert_eq!(resources.mem_bytes, 96 << 20);
    assert_eq!(pids, 1050);
    assert_eq!(h.states("t1"), [TaskState::Starting]);
    assert!(
        h.handed.is_empty(),
        "handed to an executor that has not subscribed"
    );
    h.from_executor(&key(), subscribe(&[]));
    assert_eq!(h.handed, [(key(), TaskId::new("t1"))]);
    assert!(matches!(
        h.to_executors[0].1,
        AgentToExecutor::Subscribed { .. }
    ));
}

#[test]
fn an_executor_grows_before_a_new_task_is_handed_over() {
    let mut h = with_executor();
    h.auto_resize = false;
    h.run_in(
        "f",
        executor("ex", "cpus:0.1;mem:32MiB"),
        vec![task("t2", "cpus:1;mem:128MiB")],
    );
    assert_eq!(resizes(&h), [224 << 20]);
    assert!(
        !h.handed.iter().any(|(_, t)| t.as_str() == "t2"),
        "handed before the container grew"
    );
    assert!(
        h.states("t2").is_empty(),
        "Starting before the container grew"
    );
    h.complete_resizes();
    h.drain();
    assert!(h.handed.iter().any(|(_, t)| t.as_str() == "t2"));
    assert_eq!(h.states("t2"), [TaskState::Starting]);
    assert_eq!(mem(&h), 224 << 20);
    let resize = h
        .log
        .iter()
        .position(|a| matches!(a, Action::ResizeExecutor { .. }));
    let hand = h
        .log
        .iter()
        .position(|a| matches!(a, Action::HandTask { task, .. } if task.task_id.as_str() == "t2"));
    assert!(resize < hand);
}

#[test]
fn an_executor_shrinks_after_a_task_ended() {
    let mut h = with_executor();
    h.run_in(
        "f",
        executor("ex", "cpus:0.1;mem:32MiB"),
        vec![task("t2", "cpus:1;mem:128MiB")],
    );
    assert_eq!(mem(&h), 224 << 20);
    h.from_executor(&key(), update("t2", TaskState::Finished));
    assert_eq!(mem(&h), 96 << 20);
    assert_eq!(resizes(&h), [224 << 20, 96 << 20]);
    // The new size is checkpointed.
    let last_cp = h
        .log
        .iter()
        .rposition(|a| matches!(a, Action::CheckpointExecutor(_)));
    let last_resize = h
        .log
        .iter()
        .rposition(|a| matches!(a, Action::ResizeExecutor { .. }));
    assert!(last_cp > last_resize);
}

#[test]
fn a_refused_shrink_is_retried_at_the_next_limit_check() {
    let mut h = with_executor();
    h.run_in(
        "f",
        executor("ex", "cpus:0.1;mem:32MiB"),
        vec![task("t2", "cpus:1;mem:128MiB")],
    );
    h.refuse_shrink = true;
    h.from_executor(&key(), update("t2", TaskState::Finished));
    assert_eq!(mem(&h), 224 << 20, "the refused cut was taken as done");
    h.refuse_shrink = false;
    h.advance(Duration::from_secs(30));
    assert_eq!(mem(&h), 96 << 20);
}

#[test]
fn a_failed_growth_fails_the_new_tasks_only() {
    let mut h = with_executor();
    h.auto_resize = false;
    h.run_in(
        "f",
        executor("ex", "cpus:0.1;mem:32MiB"),
        vec![task("t2", "cpus:1;mem:128MiB")],
    );
    let pending = std::mem::take(&mut h.pending_resizes);
    assert_eq!(pending.len(), 1);
    h.core
        .handle_executor_resized(h.now, &key(), Err("EBUSY".into()));
    h.drain();
    let last = h.last("t2").expect("status");
    assert_eq!(
        (last.state, last.reason),
        (TaskState::Failed, Some(StatusReason::ContainerLaunchFailed))
    );
    assert!(last
        .message
        .as_deref()
        .unwrap_or("")
        .contains("cannot raise the limits"));
    assert_eq!(h.states("t1").last(), Some(&TaskState::Running));
}

#[test]
fn an_executor_moves_a_task_only_forward_and_is_acknowledged_after_the_checkpoint() {
    let mut h = with_executor();
    let from = h.log.len();
    h.from_executor(&key(), update("t1", TaskState::Starting));
    assert_eq!(h.states("t1"), [TaskState::Starting, TaskState::Running]);
    h.from_executor(&key(), update("t1", TaskState::Finished));
    let last = h.last("t1").expect("status");
    assert_eq!(
        (last.state, last.source),
        (TaskState::Finished, StatusSource::Executor)
    );
    let cp = h.log[from..]
        .iter()
        .rposition(|a| matches!(a, Action::CheckpointTask(r) if r.state == TaskState::Finished));
    let ack = h.log[from..].iter().rposition(|a| {
        matches!(
            a,
            Action::ToExecutor {
                msg: AgentToExecutor::Acknowledged {
                    state: TaskState::Finished,
                    ..
                },
                ..
            }
        )
    });
    assert!(
        cp.is_some() && cp < ack,
        "acknowledged to the executor before the checkpoint"
    );
}

#[test]
fn a_killed_executor_task_is_killed_by_the_executor_or_with_its_container() {
    let mut h = with_executor();
    h.kill("f", "t1");
    assert!(h.to_executors.iter().any(|(_, m)| matches!(
        m,
        AgentToExecutor::KillTask {
            grace_ms: Some(3000),
            ..
        }
    )));
    h.advance(Duration::from_secs(4));
    assert!(
        h.actions(|a| matches!(a, Action::KillExecutor { .. }))
            .is_empty(),
        "killed before grace + margin"
    );
    h.advance(Duration::from_secs(2));
    assert_eq!(
        h.actions(|a| matches!(a, Action::KillExecutor { .. }))
            .len(),
        1
    );
    h.executor_exit(&key(), Exit::signal(9));
    h.ack_until_quiet();
    let last = h.last("t1").expect("status");
    assert_eq!(
        (last.state, last.reason),
        (TaskState::Killed, Some(StatusReason::KilledByFramework))
    );
}

#[test]
fn an_executor_that_kills_its_task_in_time_keeps_its_container() {
    let mut h = with_executor();
    h.run_in(
        "f",
        executor("ex", "cpus:0.1;mem:32MiB"),
        vec![task("t2", "cpus:1")],
    );
    h.kill("f", "t1");
    h.from_executor(&key(), update("t1", TaskState::Killed));
    h.advance(Duration::from_secs(60));
    assert!(h
        .actions(|a| matches!(a, Action::KillExecutor { .. }))
        .is_empty());
    assert_eq!(
        h.last("t1").map(|s| s.reason),
        Some(Some(StatusReason::KilledByFramework))
    );
}

#[test]
fn an_idle_executor_is_shut_down_then_killed_after_its_grace() {
    let mut h = with_executor();
    h.from_executor(&key(), update("t1", TaskState::Finished));
    assert!(h
        .to_executors
        .iter()
        .any(|(_, m)| matches!(m, AgentToExecutor::Shutdown { grace_ms: 3000 })));
    assert!(h.store.executors[&key()].shutting_down);
    h.advance(Duration::from_secs(5));
    assert_eq!(
        h.actions(|a| matches!(a, Action::KillExecutor { .. }))
            .len(),
        1
    );
    h.executor_exit(&key(), Exit::code(0));
    assert!(h.core.executors().next().is_none());
    assert!(h.store.executors.is_empty());
}

#[test]
fn tasks_for_a_shutting_down_executor_fail() {
    let mut h = with_executor();
    h.from_executor(&key(), update("t1", TaskState::Finished));
    h.run_in(
        "f",
        executor("ex", "cpus:0.1;mem:32MiB"),
        vec![task("t2", "cpus:1")],
    );
    let last = h.last("t2").expect("status");
    assert_eq!(
        (last.state, last.reason),
        (TaskState::Failed, Some(StatusReason::ExecutorTerminated))
    );
}

#[test]
fn an_executors_exit_ends_every_live_task() {
    let mut h = with_executor();
    h.run_in(
        "f",
        executor("ex", "cpus:0.1;mem:32MiB"),
        vec![task("t2", "cpus:1")],
    );
    h.executor_exit(&key(), Exit::code(1));
    h.ack_until_quiet();
    for t in ["t1", "t2"] {
        let last = h.last(t).expect("status");
        assert_eq!(
            (last.state, last.reason),
            (TaskState::Failed, Some(StatusReason::ExecutorTerminated)),
            "{t}"
        );
    }
    assert!(h
        .log
        .iter()
        .any(|a| matches!(a, Action::DestroyExecutor { .. })));
}

#[test]
fn an_oom_killed_executor_fails_its_tasks_with_the_limit() {
    let mut h = with_executor();
    let u = ExecutorUpdate {
        task_id: TaskId::new("t1"),
        state: TaskState::Failed,
        reason: None,
        message: None,
        exit_code: None,
        signal: Some(9),
    };
    assert!(h.core.update_needs_oom_check(&key(), &u));
    h.core.handle_executor_oom(&key());
    h.drain();
    let mut exit = Exit::signal(9);
    exit.oom_killed = true;
    h.executor_exit(&key(), exit);
    h.ack_until_quiet();
    let last = h.last("t1").expect("status");
    assert_eq!(
        (last.state, last.reason),
        (TaskState::Failed, Some(StatusReason::MemoryLimit))
    );
    assert!(
        last.message
            .as_deref()
            .unwrap_or("")
            .contains("limit of 96MiB"),
        "{last:?}"
    );
}

#[test]
fn a_failed_executor_launch_fails_its_tasks_and_forgets_it() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.auto_launch = false;
    h.run_in(
        "f",
        executor("ex", "cpus:0.1;mem:32MiB"),
        vec![task("t1", "cpus:1")],
    );
    let (k, limits) = h.pending_executor_launches.pop().expect("a launch");
    h.core
        .handle_executor_launched(h.now, &k, limits, Err("no such file".into()));
    h.drain();
    h.ack_until_quiet();
    let last = h.last("t1").expect("status");
    assert_eq!(last.state, TaskState::Failed);
    assert!(last
        .message
        .as_deref()
        .unwrap_or("")
        .contains("cannot launch executor ex: no such file"));
    assert!(h.store.executors.is_empty());
}

#[test]
fn an_executor_under_another_id_or_talking_before_subscribing_is_cut_off() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.run_in(
        "f",
        executor("ex", "cpus:0.1;mem:32MiB"),
        vec![task("t1", "cpus:1")],
    );
    h.from_executor(&key(), update("t1", TaskState::Running));
    let wrong = ExecutorToAgent::Subscribe {
        framework_id: key().0,
        executor_id: ExecutorId::new("other"),
        tasks: Vec::new(),
        unacknowledged: Vec::new(),
    };
    h.from_executor(&key(), wrong);
    assert_eq!(
        h.actions(|a| matches!(a, Action::CloseExecutorConnection { .. }))
            .len(),
        2
    );
    assert_eq!(h.states("t1"), [TaskState::Starting]);
}

#[test]
fn messages_pass_between_framework_and_subscribed_executor() {
    let mut h = with_executor();
    h.master(MasterToAgent::FrameworkMessage {
        framework_id: key().0,
        executor_id: key().1,
        data: b"hi".to_vec(),
    });
    assert!(h
        .to_executors
        .iter()
        .any(|(_, m)| matches!(m, AgentToExecutor::Message { data } if data == b"hi")));
    h.from_executor(
        &key(),
        ExecutorToAgent::Message {
            data: b"yo".to_vec(),
        },
    );
    assert!(h
        .sent
        .iter()
        .any(|m| matches!(m, AgentToMaster::ExecutorMessage { data, .. } if data == b"yo")));
    h.core.handle_executor_disconnected(&key());
    let before = h.to_executors.len();
    h.master(MasterToAgent::FrameworkMessage {
        framework_id: key().0,
        executor_id: key().1,
        data: b"lost".to_vec(),
    });
    assert_eq!(
        h.to_executors.len(),
        before,
        "sent to a disconnected executor"
    );
}

#[test]
fn a_resubscribing_executor_is_told_to_kill_what_the_agent_no_longer_has() {
    let mut h = with_executor();
    h.core.handle_executor_disconnected(&key());
    h.from_executor(&key(), subscribe(&["t1", "ghost"]));
    assert!(h.to_executors.iter().any(|(_, m)| matches!(m, AgentToExecutor::KillTask { task_id, .. } if task_id.as_str() == "ghost")));
    assert!(!h.to_executors.iter().any(
        |(_, m)| matches!(m, AgentToExecutor::KillTask { task_id, .. } if task_id.as_str() == "t1")
    ));
}

#[test]
fn a_launch_group_larger_than_what_is_free_is_refused() {
    let mut h = Harness::new("cpus:1;mem:128MiB");
    h.run_in(
        "f",
        executor("ex", "cpus:0.5;mem:64MiB"),
        vec![task("t1", "cpus:0.5;mem:96MiB")],
    );
    let last = h.last("t1").expect("status");
    assert_eq!(
        (last.state, last.reason),
        (TaskState::Error, Some(StatusReason::ResourcesUnavailable))
    );
    assert!(h
        .actions(|a| matches!(a, Action::LaunchExecutor { .. }))
        .is_empty());
}
